/* Worker threads and their accept loops; see worker.h. Accepting is done by
 * hand on a uv_poll so that it can pause at max_connections (new connections
 * wait in the kernel backlog) and shed on EMFILE with a reserve descriptor. */
#include "net/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"

struct worker_msg {
    worker_msg_t *next;
    worker_fn fn;
    void *arg;
};

typedef struct worker_retired {
    struct worker_retired *next;
    void *ptr;
    void (*free_fn)(void *);
    uint64_t epoch;
} worker_retired_t;

#define ACCEPT_BATCH 64

static void accept_pause(worker_t *w)
{
    if (w->accept_paused || w->accept_closed)
        return;
    for (size_t i = 0; i < w->n_listeners; i++)
        uv_poll_stop(&w->listeners[i].poll);
    w->accept_paused = true;
}

static void on_listener_readable(uv_poll_t *p, int status, int events);

static void accept_resume(worker_t *w)
{
    if (!w->accept_paused || w->accept_closed)
        return;
    for (size_t i = 0; i < w->n_listeners; i++)
        uv_poll_start(&w->listeners[i].poll, UV_READABLE, on_listener_readable);
    w->accept_paused = false;
}

static void on_accept_backoff(uv_timer_t *t)
{
    worker_t *w = t->data;
    if (w->n_connections < w->max_connections)
        accept_resume(w);
}

/* Out of descriptors: free the reserve, accept and close one connection so
 * the client is told at once instead of waiting, then take the reserve back. */
static void shed_one(worker_t *w, int lfd)
{
    if (w->reserve_fd >= 0) {
        close(w->reserve_fd);
        w->reserve_fd = -1;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            close(fd);
            if (w->on_shed)
                w->on_shed(w);
        }
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    /* Back off instead of spinning on a readable listener we cannot serve. */
    accept_pause(w);
    uv_timer_start(&w->accept_backoff, on_accept_backoff, EMFILE_BACKOFF_MS, 0);
}

static void on_listener_readable(uv_poll_t *p, int status, int events)
{
    (void)events;
    worker_listener_t *l = p->data;
    worker_t *w = l->w;
    if (status < 0)
        return;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (w->n_connections >= w->max_connections) {
            accept_pause(w);
            return;
        }
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_limited(LOG_WARN, "worker %zu: accept: %s: shedding connections", w->index,
                            strerror(errno));
                shed_one(w, l->fd);
            }
            return; /* EAGAIN or a transient error */
        }
        w->n_connections++;
        w->on_accept(w, fd, l->index);
    }
}

void worker_connection_closed(worker_t *w)
{
    w->n_connections--;
    if (w->accept_paused && w->n_connections < w->max_connections &&
        !uv_is_active((uv_handle_t *)&w->accept_backoff))
        accept_resume(w);
}

void worker_close_listeners(worker_t *w)
{
    if (w->accept_closed)
        return;
    for (size_t i = 0; i < w->n_listeners; i++) {
        uv_poll_stop(&w->listeners[i].poll);
        uv_close((uv_handle_t *)&w->listeners[i].poll, NULL);
        close(w->listeners[i].fd);
        w->listeners[i].fd = -1;
    }
    uv_timer_stop(&w->accept_backoff);
    w->accept_closed = true;
}

static void drain_messages(worker_t *w)
{
    uv_mutex_lock(&w->mq_lock);
    worker_msg_t *m = w->mq_head;
    w->mq_head = w->mq_tail = NULL;
    uv_mutex_unlock(&w->mq_lock);
    while (m) {
        worker_msg_t *next = m->next;
        m->fn(w, m->arg);
        free(m);
        m = next;
    }
}

static void on_async(uv_async_t *a) { drain_messages(a->data); }

static void on_quiescent(uv_prepare_t *p)
{
    worker_t *w = p->data;
    atomic_store_explicit(&w->seen_epoch, atomic_load(&w->group->epoch), memory_order_release);
}

int worker_post(worker_t *w, worker_fn fn, void *arg)
{
    worker_msg_t *m = malloc(sizeof *m);
    if (!m)
        return FE_NOMEM;
    m->next = NULL;
    m->fn = fn;
    m->arg = arg;
    uv_mutex_lock(&w->mq_lock);
    if (w->mq_tail)
        w->mq_tail->next = m;
    else
        w->mq_head = m;
    w->mq_tail = m;
    uv_mutex_unlock(&w->mq_lock);
    uv_async_send(&w->async);
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void worker_stop_loop(worker_t *w)
{
    worker_close_listeners(w);
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->quiescent, NULL);
    uv_close((uv_handle_t *)&w->accept_backoff, NULL);
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    for (size_t i = 0; i < w->n_listeners; i++)
        uv_poll_start(&w->listeners[i].poll, UV_READABLE, on_listener_readable);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    drain_messages(w); /* messages posted while stopping */
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    atomic_store(&w->running, false);
}

int worker_group_init(worker_group_t *g, uv_loop_t *main_loop, size_t n, const worker_fd_t *fds,
                      size_t n_fds, uint32_t max_connections, size_t pool_buf_bytes)
{
    memset(g, 0, sizeof *g);
    g->workers = calloc(n, sizeof *g->workers);
    if (!g->workers)
        return FE_NOMEM;
    g->n = n;
    atomic_init(&g->epoch, 1);
    uv_timer_init(main_loop, &g->reclaim);
    g->reclaim.data = g;
    uint32_t per_worker = (max_connections + (uint32_t)n - 1) / (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        worker_t *w = &g->workers[i];
        w->index = i;
        w->group = g;
        if (uv_loop_init(&w->loop) != 0)
            return FE_IO;
        uv_async_init(&w->loop, &w->async, on_async);
        w->async.data = w;
        uv_prepare_init(&w->loop, &w->quiescent);
        w->quiescent.data = w;
        uv_prepare_start(&w->quiescent, on_quiescent);
        uv_unref((uv_handle_t *)&w->quiescent);
        uv_timer_init(&w->loop, &w->accept_backoff);
        w->accept_backoff.data = w;
        uv_mutex_init(&w->mq_lock);
        atomic_init(&w->seen_epoch, 0);
        atomic_init(&w->running, false);
        w->max_connections = per_worker ? per_worker : 1;
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        size_t mine = 0;
        for (size_t j = 0; j < n_fds; j++)
            mine += fds[j].worker == i;
        w->listeners = calloc(mine ? mine : 1, sizeof *w->listeners);
        if (!w->listeners)
            return FE_NOMEM;
        for (size_t j = 0; j < n_fds; j++) {
            if (fds[j].worker != i)
                continue;
            worker_listener_t *l = &w->listeners[w->n_listeners++];
            l->fd = fds[j].fd;
            l->w = w;
            l->index = fds[j].listener;
            uv_poll_init(&w->loop, &l->poll, l->fd);
            l->poll.data = l;
        }
        w->rbuf = malloc(IO_BUF_BYTES);
        if (!w->rbuf)
            return FE_NOMEM;
        pbuf_pool_init(&w->pool, pool_buf_bytes, POOL_BUF_FREE_MAX);
    }
    return 0;
}

int worker_group_start(worker_group_t *g)
{
    for (size_t i = 0; i < g->n; i++) {
        worker_t *w = &g->workers[i];
        atomic_store(&w->running, true);
        if (uv_thread_create(&w->thread, worker_main, w) != 0) {
            atomic_store(&w->running, false);
            return FE_IO;
        }
    }
    return 0;
}

static void reclaim(worker_group_t *g, bool all)
{
    worker_retired_t **pp = &g->retired;
    while (*pp) {
        worker_retired_t *r = *pp;
        bool safe = true;
        for (size_t i = 0; i < g->n && !all; i++) {
            worker_t *w = &g->workers[i];
            if (atomic_load(&w->running) &&
                atomic_load_explicit(&w->seen_epoch, memory_order_acquire) < r->epoch)
                safe = false;
        }
        if (safe) {
            *pp = r->next;
            r->free_fn(r->ptr);
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

static void on_reclaim(uv_timer_t *t)
{
    worker_group_t *g = t->data;
    reclaim(g, false);
    if (!g->retired)
        uv_timer_stop(t);
    else
        for (size_t i = 0; i < g->n; i++)
            uv_async_send(&g->workers[i].async);
}

void worker_group_retire(worker_group_t *g, void *ptr, void (*free_fn)(void *))
{
    worker_retired_t *r = malloc(sizeof *r);
    if (!r) {
        /* Leaking beats freeing under a reader. */
        log_error("out of memory retiring %p", ptr);
        return;
    }
    r->ptr = ptr;
    r->free_fn = free_fn;
    r->epoch = atomic_fetch_add(&g->epoch, 1) + 1;
    r->next = g->retired;
    g->retired = r;
    for (size_t i = 0; i < g->n; i++)
        if (atomic_load(&g->workers[i].running))
            uv_async_send(&g->workers[i].async); /* a loop turn passes the quiescent point */
    if (!uv_is_active((uv_handle_t *)&g->reclaim))
        uv_timer_start(&g->reclaim, on_reclaim, 50, 50);
}

void worker_group_retire_cb(void *g, void *ptr, void (*free_fn)(void *))
{
    worker_group_retire(g, ptr, free_fn);
}

static void post_stop(worker_t *w, void *arg)
{
    (void)arg;
    if (w->on_stop)
        w->on_stop(w);
    worker_stop_loop(w);
}

void worker_group_stop(worker_group_t *g)
{
    if (!g->workers)
        return;
    for (size_t i = 0; i < g->n; i++)
        if (atomic_load(&g->workers[i].running))
            worker_post(&g->workers[i], post_stop, NULL);
    for (size_t i = 0; i < g->n; i++) {
        worker_t *w = &g->workers[i];
        if (w->thread)
            uv_thread_join(&w->thread);
        uv_loop_close(&w->loop);
        uv_mutex_destroy(&w->mq_lock);
        free(w->rbuf);
        free(w->listeners);
        pbuf_pool_deinit(&w->pool);
        if (w->reserve_fd >= 0)
            close(w->reserve_fd);
    }
    reclaim(g, true);
    uv_timer_stop(&g->reclaim);
    uv_close((uv_handle_t *)&g->reclaim, NULL);
    free(g->workers);
    g->workers = NULL;
}
