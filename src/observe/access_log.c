/* The JSON access log: a hand-written, sans-I/O line formatter, and one writer
 * thread fed whole buffers by the workers. The mutex is taken once per buffer
 * handed over, never per line, and a worker never waits on write(2). */
#include "observe/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fmt.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/json.h"
#include "core/time.h"

/* A buffer of lines, or (reopen_fd >= 0) a marker telling the writer thread
 * to switch files at this point of the queue, so lines handed over before a
 * reopen land in the old file and lines after it in the new one. */
typedef struct chunk {
    struct chunk *next;
    size_t len;
    size_t lines;
    int reopen_fd;
    char data[];
} chunk_t;

struct access_log {
    pthread_mutex_t mu; /* guards the queue, the free list and stopping */
    pthread_cond_t cond;
    chunk_t *head, *tail;
    size_t n_queued; /* buffers in the queue (markers not counted) */
    chunk_t *free_list;
    size_t n_free;
    bool stopping;
    int fd; /* the writer thread's alone once it runs */
    bool owns_fd;
    char *path; /* NULL for stdout */
    pthread_t thread;
    uint64_t dropped_lines; /* atomic */
};

struct access_log_writer {
    access_log_t *log;
    chunk_t *cur; /* NULL after an allocation failure; retried on append */
};

/* ---- formatting ---- */

typedef struct out {
    char *p;
    char *end;
    bool full;
} out_t;

static inline void put(out_t *o, const void *s, size_t n)
{
    if ((size_t)(o->end - o->p) < n) {
        o->full = true;
        o->end = o->p; /* nothing after a failed put may land */
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static void put_u64(out_t *o, uint64_t v)
{
    char b[20];
    put(o, b, fmt_u64(b, v));
}

static void put_int(out_t *o, int v)
{
    if (v < 0) {
        PUT_LIT(o, "-");
        put_u64(o, (uint64_t)0 - (uint64_t)(int64_t)v);
    } else {
        put_u64(o, (uint64_t)v);
    }
}

/* Microseconds as milliseconds with three decimals, exactly. */
static void put_ms(out_t *o, uint64_t us)
{
    char b[24];
    size_t n = fmt_u64(b, us / 1000);
    unsigned f = (unsigned)(us % 1000);
    b[n++] = '.';
    b[n++] = (char)('0' + f / 100);
    b[n++] = (char)('0' + f / 10 % 10);
    b[n++] = (char)('0' + f % 10);
    put(o, b, n);
}

/* Request bytes are hostile: core/json keeps the line valid JSON and valid
 * UTF-8 whatever they hold. */
static void put_escaped(out_t *o, const unsigned char *s, size_t n)
{
    size_t used, w = json_escape(o->p, (size_t)(o->end - o->p), (const char *)s, n, &used);
    if (used < n) {
        o->full = true;
        o->end = o->p; /* nothing after a failed put may land */
        return;
    }
    o->p += w;
}

/* ,"key": then the string or null. */
static void put_str_field(out_t *o, const char *key, size_t key_n, access_log_str_t v)
{
    put(o, key, key_n);
    if (!v.p) {
        PUT_LIT(o, "null");
        return;
    }
    PUT_LIT(o, "\"");
    put_escaped(o, (const unsigned char *)v.p, v.n);
    PUT_LIT(o, "\"");
}

#define STR_FIELD(o, lit, v) put_str_field((o), (lit), sizeof(lit) - 1, (v))

/* One JSON line with '\n'; its length, or 0 when it does not fit in cap. */
size_t access_log_format(const access_log_entry_t *e, char *out, size_t cap)
{
    out_t o = {out, out + cap, false};
    char ts[40];
    size_t ts_n = time_format_rfc3339_ms(e->time_ms, ts, sizeof ts);

    PUT_LIT(&o, "{\"time\":\"");
    put(&o, ts, ts_n);
    PUT_LIT(&o, "\"");
    STR_FIELD(&o, ",\"request_id\":", e->request_id);
    STR_FIELD(&o, ",\"trace_id\":", e->trace_id);
    STR_FIELD(&o, ",\"client_ip\":", e->client_ip);
    STR_FIELD(&o, ",\"client_id\":", e->client_id);
    STR_FIELD(&o, ",\"method\":", e->method);
    STR_FIELD(&o, ",\"path\":", e->path);
    STR_FIELD(&o, ",\"route\":", e->route);
    STR_FIELD(&o, ",\"target_group\":", e->target_group);
    STR_FIELD(&o, ",\"target\":", e->target);
    PUT_LIT(&o, ",\"status\":");
    put_int(&o, e->status);
    PUT_LIT(&o, ",\"upstream_status\":");
    if (e->upstream_status)
        put_int(&o, e->upstream_status);
    else
        PUT_LIT(&o, "null");
    PUT_LIT(&o, ",\"attempts\":");
    put_u64(&o, e->attempts);
    if (e->fallback)
        PUT_LIT(&o, ",\"fallback\":true");
    else
        PUT_LIT(&o, ",\"fallback\":false");
    PUT_LIT(&o, ",\"duration_ms\":");
    put_ms(&o, e->duration_us);
    PUT_LIT(&o, ",\"upstream_ms\":");
    if (e->upstream_us >= 0)
        put_ms(&o, (uint64_t)e->upstream_us);
    else
        PUT_LIT(&o, "null");
    PUT_LIT(&o, ",\"bytes_in\":");
    put_u64(&o, e->bytes_in);
    PUT_LIT(&o, ",\"bytes_out\":");
    put_u64(&o, e->bytes_out);
    STR_FIELD(&o, ",\"user_agent\":", e->user_agent);
    access_log_str_t err = {e->error, e->error ? strlen(e->error) : 0};
    STR_FIELD(&o, ",\"error\":", err);
    STR_FIELD(&o, ",\"upstream_path\":", e->upstream_path);
    STR_FIELD(&o, ",\"protocol\":", e->protocol);
    if (e->config) {
        PUT_LIT(&o, ",\"config\":\"#");
        put_u64(&o, e->config);
        PUT_LIT(&o, "\"");
    } else {
        PUT_LIT(&o, ",\"config\":null");
    }
    access_log_str_t sh = {e->shadow, e->shadow ? strlen(e->shadow) : 0};
    STR_FIELD(&o, ",\"shadow\":", sh);
    PUT_LIT(&o, "}\n");
    return o.full ? 0 : (size_t)(o.p - out);
}

/* ---- buffers and the hand-over ---- */

static void count_dropped(access_log_t *log, size_t lines)
{
    if (!lines)
        return;
    __atomic_fetch_add(&log->dropped_lines, (uint64_t)lines, __ATOMIC_RELAXED);
    log_limited(LOG_WARN, "access log: %zu lines dropped (writer behind or failing)", lines);
}

static chunk_t *chunk_new(void)
{
    chunk_t *c = malloc(sizeof *c + ACCESS_LOG_BUF_BYTES);
    if (!c)
        return NULL;
    c->next = NULL;
    c->len = c->lines = 0;
    c->reopen_fd = -1;
    return c;
}

/* Caller holds log->mu. */
static void enqueue_locked(access_log_t *log, chunk_t *c)
{
    c->next = NULL;
    if (log->tail)
        log->tail->next = c;
    else
        log->head = c;
    log->tail = c;
    pthread_cond_signal(&log->cond);
}

/* Caller holds log->mu. */
static void recycle_locked(access_log_t *log, chunk_t *c)
{
    if (log->n_free >= ACCESS_LOG_FREE_BUFS_MAX) {
        free(c);
        return;
    }
    c->len = c->lines = 0;
    c->next = log->free_list;
    log->free_list = c;
    log->n_free++;
}

/* Caller holds log->mu. NULL when the free list is empty. */
static chunk_t *take_free_locked(access_log_t *log)
{
    chunk_t *c = log->free_list;
    if (c) {
        log->free_list = c->next;
        log->n_free--;
        c->next = NULL;
    }
    return c;
}

static chunk_t *take_chunk(access_log_t *log)
{
    pthread_mutex_lock(&log->mu);
    chunk_t *c = take_free_locked(log);
    pthread_mutex_unlock(&log->mu);
    return c ? c : chunk_new();
}

/* ---- the writer thread ---- */

/* 0, or -1 with errno set. Waits out a non-blocking fd (stdout may be one
 * when a pipe or tty was set up by someone else). */
static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                return -1;
        } else {
            if (w == 0)
                errno = EIO;
            return -1;
        }
    }
    return 0;
}

static void switch_fd(access_log_t *log, int fd)
{
    if (log->owns_fd)
        close(log->fd);
    log->fd = fd;
}

static void *writer_main(void *arg)
{
    access_log_t *log = arg;
    pthread_mutex_lock(&log->mu);
    for (;;) {
        while (!log->head && !log->stopping)
            pthread_cond_wait(&log->cond, &log->mu);
        chunk_t *c = log->head;
        if (!c)
            break; /* stopping, and everything handed over is written */
        log->head = c->next;
        if (!log->head)
            log->tail = NULL;
        if (c->reopen_fd < 0)
            log->n_queued--;
        pthread_mutex_unlock(&log->mu);

        if (c->reopen_fd >= 0) {
            switch_fd(log, c->reopen_fd);
            free(c);
            c = NULL;
        } else if (write_all(log->fd, c->data, c->len) != 0) {
            char eb[128];
            const char *why = strerror_r(errno, eb, sizeof eb);
            log_limited(LOG_ERROR, "access log: write: %s", why);
            count_dropped(log, c->lines);
        }

        pthread_mutex_lock(&log->mu);
        if (c)
            recycle_locked(log, c);
    }
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

static int open_file(const char *path)
{
    int fd;
    do
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    return fd;
}

/* ---- public ---- */

/* Opens path ("stdout" or a file) and starts the writer thread. */
access_log_t *access_log_open(const char *path, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!path || !*path) {
        if (err && errlen)
            snprintf(err, errlen, "access log: no path");
        return NULL;
    }
    access_log_t *log = calloc(1, sizeof *log);
    if (!log)
        goto fail_nomem;
    if (strcmp(path, "stdout") == 0) {
        log->fd = STDOUT_FILENO;
    } else {
        log->path = strdup(path);
        if (!log->path)
            goto fail_free;
        log->fd = open_file(path);
        if (log->fd < 0) {
            if (err && errlen)
                snprintf(err, errlen, "access log %s: %s", path, strerror(errno));
            goto fail_free_path;
        }
        log->owns_fd = true;
    }
    if (pthread_mutex_init(&log->mu, NULL) != 0)
        goto fail_close_fd;
    if (pthread_cond_init(&log->cond, NULL) != 0)
        goto fail_destroy_mutex;

    /* The writer thread takes no signals: they belong to the main loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&log->thread, NULL, writer_main, log);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        goto fail_destroy_cond;
    return log;

fail_destroy_cond:
    pthread_cond_destroy(&log->cond);
fail_destroy_mutex:
    pthread_mutex_destroy(&log->mu);
fail_close_fd:
    if (log->owns_fd)
        close(log->fd);
fail_free_path:
    free(log->path);
fail_free:
    free(log);
fail_nomem:
    if (err && errlen && !err[0])
        snprintf(err, errlen, "access log %s: out of memory or no thread", path);
    return NULL;
}

/* Every writer must have been freed first; what they handed over is written. */
void access_log_close(access_log_t *log)
{
    if (!log)
        return;
    pthread_mutex_lock(&log->mu);
    log->stopping = true;
    pthread_cond_signal(&log->cond);
    pthread_mutex_unlock(&log->mu);
    pthread_join(log->thread, NULL);

    while (log->free_list) {
        chunk_t *c = log->free_list;
        log->free_list = c->next;
        free(c);
    }
    if (log->owns_fd)
        close(log->fd);
    pthread_cond_destroy(&log->cond);
    pthread_mutex_destroy(&log->mu);
    free(log->path);
    free(log);
}

/* Opens the path again and queues the switch behind what was handed over. */
int access_log_reopen(access_log_t *log)
{
    if (!log->path)
        return 0; /* stdout: nothing to rotate */
    int fd = open_file(log->path);
    if (fd < 0) {
        log_error("access log %s: reopen: %s", log->path, strerror(errno));
        return FE_IO;
    }
    chunk_t *marker = malloc(sizeof *marker);
    if (!marker) {
        close(fd);
        return FE_IO;
    }
    marker->len = marker->lines = 0;
    marker->reopen_fd = fd;
    pthread_mutex_lock(&log->mu);
    enqueue_locked(log, marker);
    pthread_mutex_unlock(&log->mu);
    return 0;
}

/* Lines lost so far: writer too far behind, out of memory, or write errors. */
uint64_t access_log_dropped_lines(const access_log_t *log)
{
    return __atomic_load_n(&log->dropped_lines, __ATOMIC_RELAXED);
}

/* A worker's writer with its first buffer; NULL when out of memory. */
access_log_writer_t *access_log_writer_new(access_log_t *log)
{
    access_log_writer_t *w = malloc(sizeof *w);
    if (!w)
        return NULL;
    w->log = log;
    w->cur = take_chunk(log);
    if (!w->cur) {
        free(w);
        return NULL;
    }
    return w;
}

/* Hands over what is buffered, then frees. NULL is a no-op. */
void access_log_writer_free(access_log_writer_t *w)
{
    if (!w)
        return;
    access_log_writer_flush(w);
    if (w->cur) {
        pthread_mutex_lock(&w->log->mu);
        recycle_locked(w->log, w->cur);
        pthread_mutex_unlock(&w->log->mu);
    }
    free(w);
}

/* Formats e into the worker's buffer, handing the buffer over when full. */
void access_log_append(access_log_writer_t *w, const access_log_entry_t *e)
{
    if (!w->cur && !(w->cur = take_chunk(w->log))) {
        count_dropped(w->log, 1);
        return;
    }
    chunk_t *c = w->cur;
    size_t n = access_log_format(e, c->data + c->len, ACCESS_LOG_BUF_BYTES - c->len);
    if (n == 0 && c->len > 0) {
        access_log_writer_flush(w);
        c = w->cur;
        if (!c) {
            count_dropped(w->log, 1);
            return;
        }
        n = access_log_format(e, c->data, ACCESS_LOG_BUF_BYTES);
    }
    if (n == 0) {
        count_dropped(w->log, 1); /* larger than a whole buffer */
        return;
    }
    c->len += n;
    c->lines++;
}

/* Hands the current buffer to the writer thread and takes a fresh one. A
 * writer already ACCESS_LOG_MAX_QUEUED_BUFS behind gets nothing: the lines
 * are dropped and counted, the worker is never held up. */
void access_log_writer_flush(access_log_writer_t *w)
{
    chunk_t *c = w->cur;
    if (!c || c->len == 0)
        return;
    access_log_t *log = w->log;
    pthread_mutex_lock(&log->mu);
    if (log->n_queued >= ACCESS_LOG_MAX_QUEUED_BUFS) {
        pthread_mutex_unlock(&log->mu);
        count_dropped(log, c->lines);
        c->len = c->lines = 0;
        return;
    }
    enqueue_locked(log, c);
    log->n_queued++;
    w->cur = take_free_locked(log);
    pthread_mutex_unlock(&log->mu);
    if (!w->cur)
        w->cur = chunk_new(); /* may stay NULL: the next append tries again */
}
