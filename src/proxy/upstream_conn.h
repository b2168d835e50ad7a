/* Upstream connections and their keep-alive pools, one pool per target of a
 * group, per worker. An owner (an exchange) holds an upstream_conn_t: its
 * channel to a target, which tells it what happens through a callback
 * table. A channel rides on a link, the socket to the target; the group's
 * max_connections breaker is held by every open link.
 *
 * HTTP/1.1: a link carries one channel at a time (the one it embeds). When
 * the owner lets it go cleanly the link returns to its pool (LIFO, bounded
 * by keepalive.max_idle and idle_timeout) and keeps reading, so a close by
 * the target is noticed while it is idle rather than when the next request
 * is written to it.
 *
 * HTTP/2 (`protocol: h2`, http/h2_upstream): a link is a session and each
 * channel one of its streams, so many requests share a link: a channel
 * goes to the first link of the pool with room (the target's
 * SETTINGS_MAX_CONCURRENT_STREAMS, at most UPSTREAM_H2_MAX_STREAMS), and a
 * new link opens only when every one is full. Channels taken while a link
 * connects wait for it. A link without streams is idle (idle_timeout,
 * max_idle). After a target's GOAWAY a link takes no new streams and closes
 * once its streams are done (drained, not failed); streams the target
 * refused are failed with the channel marked reused, so they are sent
 * again. The owner still writes and reads HTTP/1.1.
 *
 * A group with `tls` speaks TLS to its targets: a link is still connecting
 * (connect_timeout) until its handshake is done, and a handshake that fails
 * (a certificate not verified, no protocol in common) is a connect failure.
 * Each pool keeps the last TLS session its target gave and offers it on the
 * next link, so reconnects are resumed; the pool is the worker's, so the
 * slot needs no lock. */
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
typedef struct upstream_link upstream_link_t;

/* Streams one HTTP/2 link carries at most (fewer if the target says so). */
#define UPSTREAM_H2_MAX_STREAMS 100

/* What a channel tells its owner. */
typedef struct upstream_conn_ops {
    /* Connected (0), or failed (< 0: the channel is gone already). */
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
 * link of the group is open, hold(+1) keeps its owner (the generation)
 * alive; hold(-1) lets it go. */
typedef struct upstream_group {
    upstream_env_t *env;
    const config_target_group_t *tg;
    health_group_t *hg;
    upstream_pool_t *pools; /* per target */
    tls_client_t *tls;      /* the group's TLS to its targets (not held), NULL: cleartext */
    bool retired;           /* replaced by a reload: links are not pooled */
    void (*hold)(void *ctx, int delta);
    void *hold_ctx;
} upstream_group_t;

struct upstream_pool {
    upstream_group_t *group;
    uint32_t target;
    upstream_link_t *idle;  /* HTTP/1.1: LIFO, the warmest link first */
    upstream_link_t *h2;    /* HTTP/2: every open link */
    upstream_conn_t *spare; /* HTTP/2: channels to take again */
    uint32_t n_idle;        /* links without a request */
    uint32_t n_open;
    tls_session_slot_t tls_session; /* the target's last session, resumed by the next */
};

typedef enum {
    UC_CONNECTING = 0, /* connect under way (connect_timeout) */
    UC_BUSY,           /* connected, serving */
    UC_IDLE,           /* serving nobody (keepalive.idle_timeout) */
    UC_CLOSING
} uc_state_t;

/* An owner's channel to a target. */
struct upstream_conn {
    upstream_link_t *link;
    const upstream_conn_ops_t *ops;
    void *owner;            /* NULL when nobody holds it */
    http_parser_t parser;   /* the owner's: its response */
    pbuf_t *in;             /* the owner's: a response head that came in pieces */
    struct h2_ustream *h2s; /* HTTP/2: its stream, NULL while the link connects */
    upstream_conn_t *next;  /* HTTP/2: the link's waiting channels, the pool's spare ones */
    uint8_t reused; /* HTTP/1.1: its link served before; HTTP/2: the target refused its stream */
};

/* A socket to a target. */
struct upstream_link {
    stream_t s; /* first: stream callbacks cast back */
    uv_connect_t creq;
    uv_timer_t timer; /* armed by set_state(): connect timeout, then idle timeout */
    uc_state_t state;
    upstream_pool_t *pool;
    upstream_link_t *next; /* HTTP/1.1: in the pool's idle list; HTTP/2: its list */
    upstream_link_t *prev;
    upstream_conn_t conn;     /* HTTP/1.1: the one channel */
    struct h2_upstream *h2;   /* HTTP/2: the session, once connected */
    upstream_conn_t *waiting; /* HTTP/2: channels waiting for it to connect */
    uint32_t n_streams;       /* HTTP/2: channels on it */
    uint32_t refs;            /* open libuv handles and HTTP/2 channels; freed at 0 */
    uint8_t ever_connected;
    uint8_t counted;     /* holds one unit of the group's max_connections */
    uint8_t multiplexed; /* HTTP/2: channels are streams of h2 */
};

/* Connected and not closing: bytes can be written. */
static inline bool upstream_conn_connected(const upstream_conn_t *uc)
{
    return uc->link->state == UC_BUSY || uc->link->state == UC_IDLE;
}

/* Sets up a group's per-target pools (calloc'ed; upstream_group_deinit frees). */
int upstream_group_init(upstream_group_t *g, upstream_env_t *env, const config_target_group_t *tg,
                        health_group_t *hg, void (*hold)(void *ctx, int delta), void *hold_ctx);
void upstream_group_deinit(upstream_group_t *g);
/* Closes the group's idle links. */
void upstream_group_close_idle(upstream_group_t *g);
/* The group's generation was replaced: idle links close, busy ones close
 * when their owners let them go. */
void upstream_group_retire(upstream_group_t *g);

/* Would a channel taken now be connected at once (no new link to wait
 * for)? */
bool upstream_pool_ready(const upstream_pool_t *pool);
/* A channel on a pooled link (reused = 1, connected), or on a link still
 * connecting (on_connected follows); NULL with *err: FE_NOTFOUND (no
 * address), FE_TOOBIG (the max_connections breaker), FE_NOMEM, or a libuv
 * error. */
upstream_conn_t *upstream_conn_acquire(upstream_pool_t *pool, const upstream_conn_ops_t *ops,
                                       void *owner, int *err);
/* The owner lets go: HTTP/1.1, the link goes back to the pool (reusable,
 * and the pool takes it) or is closed; HTTP/2, a stream not done is reset. */
void upstream_conn_release(upstream_conn_t *uc, bool reusable);
/* As stream_write. */
int upstream_conn_write(upstream_conn_t *uc, const uv_buf_t *bufs, unsigned n);
/* Bytes written and not yet taken by the socket (or the target's window). */
bool upstream_conn_write_pending(const upstream_conn_t *uc);
void upstream_conn_pause(upstream_conn_t *uc);
void upstream_conn_resume(upstream_conn_t *uc);
/* The socket under an HTTP/1.1 channel (a tunnel's, after a 101). */
static inline stream_t *upstream_conn_socket(upstream_conn_t *uc) { return &uc->link->s; }

#endif
