/* The request path: a client connection (client_conn.c) reads requests and
 * hands each to the proxy (proxy.c: route -> policies -> pick -> attempt ->
 * relay or fail), which talks to targets over pooled upstream connections
 * (upstream.c). All of it runs on one worker's loop; nothing here locks.
 * Memory: a connection owns its structs; a request lives inside its client
 * connection (one at a time: responses go out in order); buffers come from
 * the worker's pool and go back when the request ends. */
#ifndef FICUS_PROXY_PROXY_H
#define FICUS_PROXY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "http/parser.h"
#include "net/stream.h"
#include "net/worker.h"
#include "observe/access_log.h"
#include "observe/metrics.h"
#include "observe/trace.h"
#include "policy/health.h"
#include "policy/retry.h"
#include "routing/balancer.h"
#include "routing/router.h"
#include "routing/set.h"
#include "routing/weights.h"

typedef struct proxy_worker proxy_worker_t;
typedef struct proxy_gen proxy_gen_t;
typedef struct client_conn client_conn_t;
typedef struct upstream_conn upstream_conn_t;
typedef struct request request_t;

/* Why a request ended the way it did: feeds the access log's error field,
 * the metrics and the trace. */
typedef enum {
    END_OK = 0,
    END_BAD_REQUEST,
    END_NO_ROUTE,
    END_FORBIDDEN,
    END_BODY_TOO_LARGE,
    END_HEADER_TOO_LARGE,
    END_HEADER_TIMEOUT,
    END_CLIENT_CLOSED,
    END_UPSTREAM_CONNECT_FAILURE,
    END_UPSTREAM_TIMEOUT,
    END_UPSTREAM_RESET,
    END_UPSTREAM_INVALID,
    END_NO_TARGET,
    END_CIRCUIT_OPEN,
    END_INTERNAL,
    END_TUNNEL_IDLE
} end_reason_t;

const char *proxy_end_reason_name(end_reason_t r); /* "upstream_timeout", NULL for END_OK */

/* --- upstream connections and pools (upstream.c) --- */

typedef struct upstream_pool {
    upstream_conn_t *idle; /* LIFO: the warmest connection first */
    uint32_t n_idle;
    uint32_t n_open;
} upstream_pool_t;

struct upstream_conn {
    stream_t s; /* first: stream callbacks cast back */
    uv_connect_t creq;
    uv_timer_t timer; /* connect timeout, then idle timeout */
    proxy_worker_t *pw;
    proxy_gen_t *gen; /* one reference: its pool lives there */
    upstream_pool_t *pool;
    request_t *req; /* bound request, NULL when idle */
    upstream_conn_t *next_idle;
    upstream_conn_t *prev_idle;
    http_parser_t parser;
    uint32_t group;
    uint32_t target;
    uint32_t n_handles; /* open libuv handles; freed at 0 */
    uint8_t connected;
    uint8_t idle;
    uint8_t reused; /* has served a request before */
    pbuf_t *in;     /* a response head that came in pieces */
    uint8_t closing;
    uint8_t counted; /* holds one unit of the group's max_connections */
};

/* --- the request --- */

typedef enum {
    REQ_NONE = 0,   /* no request on the connection */
    REQ_BACKOFF,    /* waiting before the next try */
    REQ_CONNECTING, /* waiting for an upstream connection */
    REQ_SENT,       /* head (and body so far) written upstream, waiting for the response */
    REQ_RESPONDING, /* response head sent to the client, relaying the body */
    REQ_DONE,       /* response complete, waiting for the request body or the write queue */
    REQ_TUNNEL      /* after a 101: bytes relayed both ways (tunnel.c) */
} req_phase_t;

struct request {
    client_conn_t *cc;
    req_phase_t phase;
    end_reason_t end;
    proxy_gen_t *gen; /* one reference from begin to the end of the exchange */
    const config_route_t *route;
    const config_backend_t *backend;
    uint32_t group;      /* target group index, UINT32_MAX before the pick */
    uint32_t target;     /* target index in the group, UINT32_MAX before the pick */
    upstream_conn_t *uc; /* bound upstream connection */
    pbuf_t *out;         /* upstream head + buffered body prefix */
    pbuf_t *alt;         /* the fallback backend's request target, when it has one */
    uint32_t out_sent;   /* bytes of out written to the current upstream */
    uint32_t head_len;   /* upstream head length in out */
    int status;          /* status sent to the client */
    int upstream_status; /* 0 = none */
    uint32_t attempts;
    uint8_t body_done;     /* the request body has been read whole */
    uint8_t body_streamed; /* body bytes went upstream without a copy in out */
    uint8_t resp_started;  /* a byte of the response reached the client stream */
    uint8_t head_method;   /* HEAD request */
    uint8_t client_keep_alive;
    uint8_t client_http10;
    uint8_t resp_body; /* rewrite_body_t of the response */
    uint8_t upstream_reusable;
    uint8_t fallback;        /* went to the fallback group */
    uint8_t in_attempt;      /* a try is under way (counted in inflight) */
    uint8_t attempt_counted; /* the try is in ficus_upstream_requests_total already */
    uint8_t idempotent;
    uint8_t holds_pending; /* counted in the group's max_pending */
    uint8_t retry_counted; /* counted in the route's retries in flight */
    uint32_t retries;      /* tries after the first */
    uint64_t tried;        /* targets of the current group tried (first 64) */
    uint64_t start_us;
    uint64_t upstream_start_us;
    int64_t upstream_us; /* -1 = none */
    uint64_t bytes_in;
    uint64_t bytes_out;
    /* Tracing: the trace the request belongs to (continued or started) and
     * ficus's spans in it; the head's trace headers are patched per try. */
    uint8_t has_trace;     /* trace_id is set (also when not exporting) */
    uint8_t trace_sampled; /* spans are exported */
    uint8_t trace_export;  /* tracing is on: ficus sends its own trace headers */
    uint8_t trace_id[16];
    uint8_t trace_parent[8]; /* the caller's span; zero = ficus's span is the root */
    uint8_t trace_span[8];   /* ficus's server span */
    uint8_t try_span[8];     /* the current try's client span */
    uint32_t tp_off;         /* traceparent value in out; 0 = none */
    uint32_t dd_off;         /* x-datadog-parent-id value in out; 0 = none */
    uint64_t start_unix_ns;
    /* An upgrade the route allows (contract 3.1): the token asked for, and
     * the tunnel's state after the 101. */
    uint8_t upgrade_len;
    char upgrade[32];
    uint8_t tun_client_eof;    /* the client half-closed */
    uint8_t tun_upstream_eof;  /* the upstream half-closed */
    uint8_t tun_shut_client;   /* pass the upstream's half-close on once written */
    uint8_t tun_shut_upstream; /* pass the client's half-close on once written */
    uint64_t tun_last_ms;      /* loop time of the last byte either way */
    /* Kept for the access log: copies, since the head they came from is gone. */
    char request_id[REQUEST_ID_MAX_BYTES + 1];
    uint8_t request_id_len;
    char method[16];
    uint8_t method_len;
    char path[256];
    uint16_t path_len;
    char upstream_path[256]; /* the target as sent upstream (access log on) */
    uint16_t upstream_path_len;
    uint8_t has_head;   /* method, path and version were read */
    char client_ip[46]; /* the address the IP rules used (X-Forwarded-For behind a trusted proxy) */
    uint8_t client_ip_len;
    char user_agent[160];
    uint8_t user_agent_len;
    uint8_t has_user_agent;
};

/* --- client connections (client_conn.c) --- */

typedef enum {
    CC_IDLE = 0, /* keep-alive, waiting for a request */
    CC_HEAD,     /* part of a head received */
    CC_ACTIVE,   /* a request is in progress */
    CC_LINGER,   /* final answer sent: draining input before the close */
    CC_CLOSING
} cc_state_t;

struct client_conn {
    stream_t s; /* first: stream callbacks cast back */
    uv_timer_t timer;
    uv_timer_t try_timer; /* per-try timeout, and the backoff before a retry */
    proxy_worker_t *pw;
    client_conn_t *next;
    client_conn_t *prev;
    http_parser_t parser;
    pbuf_t *in;         /* unparsed input: a partial head, pipelined requests */
    uint32_t head_scan; /* bytes of a partial head already scanned for its end */
    cc_state_t state;
    uint8_t n_handles;
    uint8_t reading_paused;
    uint8_t in_process;  /* inside the parse loop: do not re-enter it */
    uint8_t close_after; /* close once the current response is out */
    uint8_t peer_trusted;
    uint8_t client_ip_len;
    uint32_t requests;
    char client_ip[46];
    struct sockaddr_storage peer;
    request_t req;
};

/* --- per-worker state --- */

typedef struct proxy_group_state {
    balancer_targets_t bal;
    uint32_t *inflight;     /* per target */
    uint8_t *eligible;      /* per target, scratch */
    upstream_pool_t *pools; /* per target */
    uint32_t metrics_group;
    uint32_t *metrics_target; /* per target */
} proxy_group_state_t;

/* What one worker derives from one config snapshot: a generation. A reload
 * installs a new one for new requests; a request and an upstream connection
 * keep the generation they started with (a reference each), so indexes into
 * the config stay valid for them. Worker-local: the count needs no atomics. */
struct proxy_gen {
    config_t *cfg; /* one reference */
    uint64_t id;   /* configuration number */
    set_t *const *sets;
    health_t *health;
    weights_t *shared_weights;
    int64_t **swrr;     /* per route: smooth WRR current weights */
    uint32_t **weights; /* per route: backend weights (copied from shared_weights) */
    uint32_t *weights_version;
    uint32_t *route_inflight; /* per route: requests in flight (retry budget) */
    uint32_t *route_retries;  /* per route: requests on a retry (retry budget) */
    uint32_t *metrics_route;
    proxy_group_state_t *groups;
    uint32_t refs;
    void (*on_free)(void *ctx); /* in the worker thread, when the last reference goes */
    void *free_ctx;
};

/* Everything shared by the workers for one generation (built by the gateway). */
typedef struct proxy_shared {
    config_t *cfg;
    uint64_t id; /* configuration number (#N in logs and the access log) */
    set_t **sets;
    metrics_registry_t *metrics; /* for the generation's metric slots */
    health_t *health;
    weights_t *weights;
    void (*gen_freed)(void *ctx); /* a worker let go of this generation (any thread) */
    void *gen_ctx;
} proxy_shared_t;

struct proxy_worker {
    worker_t *w;
    uv_loop_t *loop;
    proxy_gen_t *gen; /* the current generation (one reference) */
    pcre2_match_data *md;
    metrics_registry_t *registry;
    metrics_worker_t *metrics;
    access_log_writer_t *alog;
    tracer_t *tracer; /* NULL: no export (trace headers pass through) */
    uv_timer_t log_flush;
    client_conn_t *clients; /* every open client connection */
    http_head_t head;       /* scratch: the head being parsed */
    char *scratch;          /* scratch: a head being written */
    size_t scratch_bytes;
    uint64_t rng;
    uint64_t request_seq;
    uint32_t pool_buf_bytes;
    bool draining;                 /* no keep-alive: connections close after their request */
    bool stopping;                 /* closing everything now */
    void (*on_drained)(void *ctx); /* called once when draining and no client is left */
    void *drained_ctx;
};

/* A generation for worker `index` (main thread: it takes metric slots). */
proxy_gen_t *proxy_gen_new(const proxy_shared_t *shared, size_t index);
/* Drops a generation nobody installed (main thread, set-up failures). */
void proxy_gen_discard(proxy_gen_t *gen);
static inline proxy_gen_t *proxy_gen_ref(proxy_gen_t *g)
{
    g->refs++;
    return g;
}
/* Worker thread: frees the generation with its last reference. */
void proxy_gen_unref(proxy_gen_t *g);
/* Worker thread: new requests use gen from now on (the worker takes the
 * caller's reference); the previous one closes its idle upstream
 * connections and goes when its last request does. */
void proxy_worker_install(proxy_worker_t *pw, proxy_gen_t *gen);

/* Worker hooks (installed on the worker by the gateway). */
/* Main thread, before the worker starts; gen (from proxy_gen_new) becomes
 * the worker's current generation (the worker takes it). */
proxy_worker_t *proxy_worker_new(worker_t *w, metrics_registry_t *metrics, access_log_t *access_log,
                                 proxy_gen_t *gen);
/* After the worker stopped; the current generation's on_free is not called. */
void proxy_worker_free(proxy_worker_t *pw);
void proxy_worker_on_accept(worker_t *w, int fd, size_t listener);
void proxy_worker_on_shed(worker_t *w);
void proxy_worker_stop(proxy_worker_t *pw); /* closes every connection */
/* Graceful: idle connections close now (or when idle for idle_grace_ms, if
 * not 0), the others after their response (with Connection: close);
 * on_drained is called when none is left. */
void proxy_worker_drain(proxy_worker_t *pw, uint64_t idle_grace_ms);

/* client_conn.c, used by proxy.c */
void client_conn_accept(proxy_worker_t *pw, int fd);
/* Writes response bytes: 0 written, 1 queued (the proxy pauses the upstream
 * until client_conn tells it the client drained), < 0 error. */
int client_conn_write(client_conn_t *cc, const uv_buf_t *bufs, unsigned n);
/* Stop / resume reading the request body (upstream backpressure). */
void client_conn_pause(client_conn_t *cc);
void client_conn_resume(client_conn_t *cc);
/* The response is complete; the connection goes on (keep-alive) or closes. */
void client_conn_response_done(client_conn_t *cc);
/* Ends the connection now (after an aborted response). */
void client_conn_abort(client_conn_t *cc);
/* Re-arms the connection timer for the request deadline. */
void client_conn_arm_deadline(client_conn_t *cc, uint64_t timeout_ms);

/* proxy.c, used by client_conn.c */
/* The request holds a reference on gen (its routes, groups and pools) until
 * unbind; unbind without one is a no-op. */
void proxy_request_bind(request_t *req, proxy_gen_t *gen);
void proxy_request_unbind(request_t *req);
/* A request head arrived (spans in pw->head, valid during the call). */
void proxy_request_begin(client_conn_t *cc, const http_head_t *head, size_t head_bytes);
/* How many request body bytes the proxy can take now (0 = pause). */
size_t proxy_body_room(request_t *req);
/* Raw request body bytes (framing included); end = the message is complete. */
void proxy_request_body(request_t *req, const char *data, size_t len, bool end);
/* The client went away or broke the protocol mid-request. */
void proxy_client_gone(request_t *req, end_reason_t why);
/* The client's write queue emptied. */
void proxy_client_drained(request_t *req);
/* The request deadline passed. */
void proxy_request_timeout(request_t *req);
/* Answers with ficus's own JSON error (request ends unless close). */
void proxy_send_error(request_t *req, int status, end_reason_t why, const char *message);
/* Logs and counts a finished request. */
void proxy_request_log(request_t *req);
/* Ends a tunnel: both connections close, the request is logged (tunnel.c). */
void proxy_tunnel_end(request_t *req, end_reason_t why);

/* upstream.c, used by proxy.c */
upstream_conn_t *upstream_acquire(proxy_worker_t *pw, uint32_t group, uint32_t target,
                                  request_t *req, int *err);
/* Returns a connection to its pool (keep-alive) or closes it. */
void upstream_release(upstream_conn_t *uc, bool reusable);
int upstream_write(upstream_conn_t *uc, const uv_buf_t *bufs, unsigned n);
void upstream_pause(upstream_conn_t *uc);
void upstream_resume(upstream_conn_t *uc);
void upstream_close_all(proxy_worker_t *pw);
/* Closes the idle connections of a generation's pools. */
void upstream_close_idle(proxy_gen_t *gen);

/* proxy.c, used by upstream.c */
void proxy_upstream_connected(request_t *req, int status);
void proxy_upstream_data(request_t *req, const char *data, size_t len);
void proxy_upstream_eof(request_t *req, int status);
void proxy_upstream_drained(request_t *req, int status);

#endif
