/* Worker threads: one libuv loop each, with its own listening sockets (accept
 * is paused at max_connections, and EMFILE sheds connections without spinning),
 * a read buffer and a buffer pool shared by its connections, and a message
 * queue for control (reload, drain, stop) from the main thread.
 * Also the reclamation of shared read-mostly data (set members): the main
 * thread retires a pointer; it is freed once every worker has passed a
 * quiescent point (a loop turn) after the retirement. */
#ifndef FICUS_NET_WORKER_H
#define FICUS_NET_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"
#include "core/defaults.h"

typedef struct worker worker_t;
typedef struct worker_group worker_group_t;
typedef struct worker_msg worker_msg_t;

typedef void (*worker_fn)(worker_t *w, void *arg);
typedef void (*worker_hook_fn)(worker_t *w);
/* A connection was accepted: the callee owns fd. */
typedef void (*worker_accept_fn)(worker_t *w, int fd, size_t listener);
/* A connection was shed (descriptor exhaustion). */
typedef void (*worker_shed_fn)(worker_t *w);

typedef struct worker_listener {
    uv_poll_t poll;
    int fd;
    worker_t *w;
    size_t index;
} worker_listener_t;

struct worker {
    uv_loop_t loop;
    uv_thread_t thread;
    size_t index;
    worker_group_t *group;
    uv_async_t async;
    uv_prepare_t quiescent;
    uv_timer_t accept_backoff;
    uv_mutex_t mq_lock;
    worker_msg_t *mq_head;
    worker_msg_t *mq_tail;
    atomic_uint_fast64_t seen_epoch;
    atomic_bool running;

    worker_listener_t *listeners; /* usually one per configured listener; more after a takeover */
    size_t n_listeners;
    uint32_t max_connections;
    uint32_t n_connections;
    bool accept_paused;
    bool accept_closed;
    int reserve_fd;

    worker_accept_fn on_accept;
    worker_shed_fn on_shed;
    worker_hook_fn on_stop; /* in the worker thread when told to stop: close everything */
    void *app;              /* the layer above's per-worker state */

    char *rbuf; /* IO_BUF_BYTES, reused by every read of this worker */
    pbuf_pool_t pool;
};

struct worker_group {
    worker_t *workers;
    size_t n;
    atomic_uint_fast64_t epoch;
    uv_timer_t reclaim; /* on the main loop */
    struct worker_retired *retired;
};

/* A listening socket for a worker; listener is the configured listener it
 * serves (passed to on_accept). A worker may get several per listener. */
typedef struct worker_fd {
    int fd;
    uint32_t worker;
    uint32_t listener;
} worker_fd_t;

/* Sets up n workers (not started), each polling its fds (they are the
 * workers' from now on, closed at drain). pool_buf_bytes: size of pool
 * buffers. */
int worker_group_init(worker_group_t *g, uv_loop_t *main_loop, size_t n, const worker_fd_t *fds,
                      size_t n_fds, uint32_t max_connections, size_t pool_buf_bytes);
/* Starts every thread. */
int worker_group_start(worker_group_t *g);
/* Posts worker_group_stop's message, joins the threads, frees. */
void worker_group_stop(worker_group_t *g);
/* Main thread: frees ptr with free_fn once no worker can still hold it. */
void worker_group_retire(worker_group_t *g, void *ptr, void (*free_fn)(void *));
/* The same, shaped as set_retire_fn. */
void worker_group_retire_cb(void *g, void *ptr, void (*free_fn)(void *));

/* Any thread: runs fn(w, arg) in w's thread soon. */
int worker_post(worker_t *w, worker_fn fn, void *arg);
/* In w's thread: a connection it accepted has closed. */
void worker_connection_closed(worker_t *w);
/* In w's thread: closes its listening sockets (drain); accepting stops. */
void worker_close_listeners(worker_t *w);
/* In w's thread: asks the loop to end once every handle is closed. */
void worker_stop_loop(worker_t *w);

#endif
