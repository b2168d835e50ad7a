/* Upstream connections and their keep-alive pools, one pool per target of a
 * group, per worker. A connection serves one owner at a time (an exchange)
 * and tells it what happens through a callback table; when the owner lets it
 * go cleanly it returns to its pool (LIFO, bounded by keepalive.max_idle and
 * idle_timeout) and keeps reading, so a close by the target is noticed while
 * it is idle rather than when the next request is written to it. The
 * group's max_connections breaker is held by every open connection.
 *
 * A group with `tls` speaks TLS to its targets: a connection is still
 * connecting (connect_timeout) until its handshake is done, and a handshake
 * that fails (a certificate not verified, no protocol in common) is a
 * connect failure. Each pool keeps the last TLS session its target gave and
 * offers it on the next connection, so reconnects are resumed; the pool is
 * the worker's, so the slot needs no lock.
 *
 * A group with `protocol: h2` speaks HTTP/2 to its targets (proxy/
 * h2_upstream): the owner still writes and reads HTTP/1.1; the connection
 * carries one request at a time, each on a new stream of its session. */
#ifndef FICUS_PROXY_UPSTREAM_CONN_H
#define FICUS_PROXY_UPSTREAM_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "http/parser.h"
#include "net/stream.h"
#include "net/tls.h"
#include "policy/health.h"

typedef struct upstream_conn upstream_conn_t;

/* What a connection tells its owner. */
typedef struct upstream_conn_ops {
    /* Connected (0), or failed (< 0: the connection is closed already). */
    void (*on_connected)(void *owner, int status);
    void (*on_data)(void *owner, const char *data, size_t len);
    /* UV_EOF or an error. */
    void (*on_eof)(void *owner, int status);
    /* The write queue emptied (0) or writing failed. */
    void (*on_drained)(void *owner, int status);
} upstream_conn_ops_t;

/* What a worker's upstream connections share. */
typedef struct upstream_env {
    uv_loop_t *loop;
    pbuf_pool_t *pool;
    char *rbuf;    /* IO_BUF_BYTES, shared by every read */
    bool draining; /* nothing goes back to a pool */
} upstream_env_t;

typedef struct upstream_pool upstream_pool_t;

/* One target group's pools, as one generation of the config sees it. While a
 * connection of the group is open, hold(+1) keeps its owner (the
 * generation) alive; hold(-1) lets it go. */
typedef struct upstream_group {
    upstream_env_t *env;
    const config_target_group_t *tg;
    health_group_t *hg;
    upstream_pool_t *pools; /* per target */
    tls_client_t *tls;      /* the group's TLS to its targets (not held), NULL: cleartext */
    bool retired;           /* replaced by a reload: connections are not pooled */
    void (*hold)(void *ctx, int delta);
    void *hold_ctx;
} upstream_group_t;

struct upstream_pool {
    upstream_group_t *group;
    uint32_t target;
    upstream_conn_t *idle; /* LIFO: the warmest connection first */
    uint32_t n_idle;
    uint32_t n_open;
    tls_session_slot_t tls_session; /* the target's last session, resumed by the next */
};

typedef enum {
    UC_CONNECTING = 0, /* connect under way (connect_timeout) */
    UC_BUSY,           /* connected, serving its owner */
    UC_IDLE,           /* in its pool (keepalive.idle_timeout) */
    UC_CLOSING
} uc_state_t;

struct upstream_conn {
    stream_t s; /* first: stream callbacks cast back */
    uv_connect_t creq;
    uv_timer_t timer; /* armed by set_state(): connect timeout, then idle timeout */
    uc_state_t state;
    upstream_pool_t *pool;
    const upstream_conn_ops_t *ops;
    void *owner; /* NULL when idle */
    upstream_conn_t *next_idle;
    upstream_conn_t *prev_idle;
    http_parser_t parser; /* the owner's: responses on this connection */
    pbuf_t *in;           /* the owner's: a response head that came in pieces */
    uint32_t n_handles;   /* open libuv handles; freed at 0 */
    uint8_t ever_connected;
    uint8_t reused;         /* has served an owner before */
    uint8_t counted;        /* holds one unit of the group's max_connections */
    uint8_t paused;         /* the owner does not take response bytes now */
    struct h2_upstream *h2; /* protocol: h2: the session (proxy/h2_upstream), else NULL */
};

/* Connected and not closing: bytes can be written. */
static inline bool upstream_conn_connected(const upstream_conn_t *uc)
{
    return uc->state == UC_BUSY || uc->state == UC_IDLE;
}

/* Sets up a group's per-target pools (calloc'ed; upstream_group_deinit frees). */
int upstream_group_init(upstream_group_t *g, upstream_env_t *env, const config_target_group_t *tg,
                        health_group_t *hg, void (*hold)(void *ctx, int delta), void *hold_ctx);
void upstream_group_deinit(upstream_group_t *g);
/* Closes the group's idle connections. */
void upstream_group_close_idle(upstream_group_t *g);
/* The group's generation was replaced: idle connections close, busy ones
 * close when their owner lets them go. */
void upstream_group_retire(upstream_group_t *g);

/* A pooled connection (reused = 1), or a new one connecting (on_connected
 * follows); NULL with *err: FE_NOTFOUND (no address), FE_TOOBIG (the
 * max_connections breaker), FE_NOMEM, or a libuv error. */
upstream_conn_t *upstream_conn_acquire(upstream_pool_t *pool, const upstream_conn_ops_t *ops,
                                       void *owner, int *err);
/* The owner lets go: back to the pool (reusable, and the pool takes it) or
 * closed. */
void upstream_conn_release(upstream_conn_t *uc, bool reusable);
/* As stream_write. */
int upstream_conn_write(upstream_conn_t *uc, const uv_buf_t *bufs, unsigned n);
void upstream_conn_pause(upstream_conn_t *uc);
void upstream_conn_resume(upstream_conn_t *uc);

#endif
