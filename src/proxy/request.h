/* A request and its exchanges. The request lives beside its client
 * connection (one at a time: responses go out in order) and is reused for
 * the connection's next one. An exchange is one try to one target: its
 * upstream connection, its timer (per-try timeout, or the backoff before the
 * next try), its counted flags and its span. A retry, a fallback and a
 * resend on a fresh connection are successive exchanges of the request; the
 * upstream head (`out`) is built once and shared by them, its trace ids
 * patched per try. A hedge (contract 10.3) is a second exchange racing the
 * first, with its own copy of the upstream head. */
#ifndef FICUS_PROXY_REQUEST_H
#define FICUS_PROXY_REQUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "core/buf.h"
#include "proxy/client_conn.h"
#include "proxy/end_reason.h"
#include "proxy/upstream_conn.h"

typedef struct proxy_worker proxy_worker_t;
typedef struct proxy_gen proxy_gen_t;
typedef struct request request_t;

typedef enum {
    REQ_NONE = 0,   /* no request on the connection */
    REQ_ADMISSION,  /* an admission step suspended it */
    REQ_BACKOFF,    /* waiting before the next try */
    REQ_CONNECTING, /* waiting for an upstream connection */
    REQ_SENT,       /* head (and body so far) written upstream, waiting for the response */
    REQ_RESPONDING, /* response head sent to the client, relaying the body */
    REQ_AGGREGATE,  /* an aggregation's calls are under way, or its answer is written (aggregate.c)
                     */
    REQ_DONE,       /* answered */
    REQ_TUNNEL      /* after a 101: bytes relayed both ways (tunnel.c) */
} req_phase_t;

enum { FLEET_STATE_NONE = 0, FLEET_STATE_ASKED, FLEET_STATE_ANSWERED };

/* A request's hedge (at most one): none yet, sent, refused by the cap, or
 * not possible when it was due (no target, a breaker, no buffer). */
enum { HEDGE_NONE = 0, HEDGE_SENT, HEDGE_CAPPED, HEDGE_UNABLE };

typedef struct exchange {
    request_t *req;
    upstream_conn_t *uc;
    uv_timer_t timer;  /* per-try timeout, and the backoff before the next try */
    uint32_t group;    /* target group index, UINT32_MAX before the first try */
    uint32_t target;   /* target index in the group, UINT32_MAX before the pick */
    uint32_t out_sent; /* bytes of the request's out written to this connection */
    uint32_t attempt;  /* 1-based: the request's how-manieth try this is */
    uint64_t start_us;
    pbuf_t *out;           /* a hedge's own copy of the request's out; NULL: req->out */
    int32_t out_shift;     /* where out's head moved against req->out's (a retargeted copy) */
    uint8_t active;        /* under way: counted in inflight and the breakers */
    uint8_t counted;       /* in ficus_upstream_requests_total already */
    uint8_t holds_pending; /* counted in the group's max_pending */
    uint8_t is_hedge;      /* the hedge of its request (10.3) */
    uint8_t span[8];       /* this try's client span */
} exchange_t;

struct request {
    /* Reset for every request (everything before request_id). */
    req_phase_t phase;
    end_reason_t end;
    proxy_gen_t *gen; /* one reference from begin to the end of the request */
    const config_route_t *route;
    const config_backend_t *backend;
    uint32_t group;          /* the group tries go to (the fallback's after a fallback) */
    uint32_t admitted;       /* admission steps passed */
    const http_head_t *head; /* the client's head while admission steps run, else NULL */
    pbuf_t *out;             /* upstream head + buffered body prefix */
    pbuf_t *alt;             /* the fallback backend's request target, when it has one */
    pbuf_t *held;            /* the client's head, kept while an admission step waits */
    pbuf_t *trailers;        /* a chunked response's trailer section, relayed (gRPC, HTTP/2) */
    uint32_t head_len;       /* upstream head length in out */
    int status;              /* status sent to the client */
    int upstream_status;     /* 0 = none */
    uint32_t attempts;
    uint32_t retries;      /* tries after the first */
    uint64_t tried;        /* targets of the current group tried (first 64) */
    uint8_t body_streamed; /* body bytes went upstream without a copy in out */
    uint8_t resp_started;  /* a byte of the response reached the client stream */
    uint8_t method_id;     /* http_method_t */
    uint8_t head_method;   /* HEAD request */
    uint8_t client_http10;
    uint8_t resp_body; /* rewrite_body_t of the response */
    uint8_t upstream_reusable;
    uint8_t fallback; /* went to the fallback group */
    uint8_t idempotent;
    uint8_t retry_counted; /* counted in the route's retries in flight */
    uint8_t has_head;      /* method, path and version were read */
    uint8_t grpc;          /* content-type application/grpc*: ficus's errors are gRPC's */
    uint64_t start_us;
    int64_t upstream_us;     /* -1 = none */
    uint64_t content_length; /* declared; 0 when none */
    uint8_t has_content_length;
    /* Who is asking (admission): the API client, the user's forwarded
     * claims and bearer token, and the limits the request holds. */
    uint32_t client;         /* cfg->clients index, UINT32_MAX = none */
    uint32_t retry_after_s;  /* a 429's Retry-After; 0 = 1 s */
    pbuf_t *ident;           /* header lines ficus adds for the user (claims, Authorization) */
    uint8_t ident_session;   /* ident carries a bearer token from the session exchange */
    uint8_t throttle_held;   /* counted in the client's local throttle */
    uint8_t throttle_global; /* counted in the client's fleet-wide throttle (redis) */
    /* A redis call an admission step waits for (fleet-wide throttle or
     * rate limit), and its answer once it came. */
    uint8_t fleet_state; /* FLEET_STATE_* */
    uint8_t fleet_verdict;
    uint64_t fleet_retry_ms;
    struct fleet_op *fleet_op;
    uint8_t kid_waited;      /* waited once for a read of the provider's keys */
    uint64_t kid_seq;        /* ... started after this many reads */
    struct shadow *shadow;   /* the request's shadow copy (shadow.c), NULL: none */
    struct aggregation *agg; /* its aggregation (aggregate.c), NULL: none */
    uint8_t user_len;        /* the user's subject (rate limits by user), 0 = none */
    char user[64];
    /* Tracing: the trace the request belongs to (continued or started) and
     * ficus's spans in it; the head's trace headers are patched per try. */
    uint8_t has_trace;     /* trace_id is set (also when not exporting) */
    uint8_t trace_sampled; /* spans are exported */
    uint8_t trace_export;  /* tracing is on: ficus sends its own trace headers */
    uint8_t trace_id[16];
    uint8_t trace_parent[8]; /* the caller's span; zero = ficus's span is the root */
    uint8_t trace_span[8];   /* ficus's server span */
    uint32_t tp_off;         /* traceparent value in out; 0 = none */
    uint32_t dd_off;         /* x-datadog-parent-id value in out; 0 = none */
    /* Its deadline (contract 10.3): when it ends (the route's timeout, or an
     * incoming deadline's when shorter), and where each try's time left is
     * written in out (fixed-width values; 0 = not sent). */
    uint64_t deadline_us;
    uint32_t rto_off; /* X-Request-Timeout-Ms value */
    uint32_t gto_off; /* grpc-timeout value */
    /* Hedging: whether a hedge was sent (HEDGE_*), whether its try answered
     * the client; tried targets of the group a hedge to the fallback group
     * went to. */
    uint8_t hedged;
    uint8_t hedge_won;
    uint64_t hedge_tried;
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
    uint8_t client_ip_len;
    uint8_t method_len;
    uint8_t request_id_len;
    uint8_t user_agent_len;
    uint8_t has_user_agent;
    uint16_t path_len;
    uint16_t upstream_path_len;
    /* Kept for the access log (copies: the head they came from is gone);
     * written when set, not reset. */
    char request_id[REQUEST_ID_MAX_BYTES + 1];
    char method[16];
    char path[256];
    char upstream_path[256]; /* the target as sent upstream (access log on) */
    char client_ip[46]; /* the address the IP rules used (X-Forwarded-For behind a trusted proxy) */
    char user_agent[160];
    /* While an admission step makes it wait: its place in the worker's
     * list of waiting requests (proxy_worker_wake runs them again). */
    request_t *wait_next;
    request_t **wait_pprev; /* NULL: not in the list */
    /* The connection's, for every request on it. */
    client_conn_t *cc;
    proxy_worker_t *pw;
    /* The try whose answer the client gets (under way, or the last one);
     * while a hedge races it, the other one (else NULL). A callback of
     * either makes it `ex` while it runs: the request path reads one try at
     * a time. Both live in slots, each with its timer (the per-try timeout,
     * and the backoff before the next try). */
    exchange_t *ex;
    exchange_t *race;
    exchange_t slots[2];
    uv_timer_t hedge_timer; /* when the try under way gets its hedge */
    uint8_t peer_trusted;
};

/* Per request: a fresh one on the connection, bound to the worker's
 * current generation (whose reference it holds until request_unbind). */
void request_reset(request_t *req);
void request_bind(request_t *req, proxy_gen_t *gen);
/* Once its id is known: the worker's trial generation takes the request
 * when the id's hash falls in its share (contract 10.5). */
void request_choose_gen(request_t *req);
void request_unbind(request_t *req); /* no-op when unbound */
/* A new X-Request-Id (32 hex digits). */
void request_new_id(request_t *req);
/* Its buffers go back; an admission step it waits in is cancelled. */
void request_release(request_t *req);
/* The answer is written or queued: released, unbound, and the connection
 * goes on to its next request. */
void request_over(request_t *req);
/* Counts the finished request (metrics, retry budget, its server span) and
 * writes its access-log line. */
void request_log(request_t *req);

/* The target of the request's group its latest try went to (UINT32_MAX:
 * none yet in that group). */
static inline uint32_t request_target(const request_t *req)
{
    return req->ex->group == req->group ? req->ex->target : UINT32_MAX;
}

/* Where the offsets into the upstream head (tp_off, rto_off, ...) count
 * from in ex's copy of it: a hedge's own copy, or the request's out. */
static inline char *request_head_base(const request_t *req, const exchange_t *ex)
{
    return ex->out ? ex->out->data + ex->out_shift : req->out->data;
}

#endif
