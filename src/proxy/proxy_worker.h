/* A worker's proxy state: the generation built from each config snapshot
 * (per-route balancer state, per-group target state and connection pools,
 * metric slots), and what outlives generations (client connections, the
 * access-log writer, scratch buffers, the random state). All of it runs on
 * the worker's loop; nothing here locks. */
#ifndef FICUS_PROXY_PROXY_WORKER_H
#define FICUS_PROXY_PROXY_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "http/parser.h"
#include "net/worker.h"
#include "observe/access_log.h"
#include "observe/board.h"
#include "observe/metrics.h"
#include "proxy/h2_server.h"
#include "observe/trace.h"
#include "policy/agg_cache.h"
#include "policy/api_key.h"
#include "policy/fleet.h"
#include "policy/health.h"
#include "policy/json_diff.h"
#include "policy/jwks_slot.h"
#include "policy/rate_limit.h"
#include "policy/rollout.h"
#include "policy/session_store.h"
#include "policy/shadow_stats.h"
#include "policy/token_cache.h"
#include "policy/throttle.h"
#include "proxy/admission.h"
#include "proxy/client_conn.h"
#include "proxy/rewrite.h"
#include "proxy/upstream_conn.h"
#include "routing/balancer.h"
#include "routing/router.h"
#include "routing/set.h"
#include "routing/weights.h"

typedef struct proxy_worker proxy_worker_t;
typedef struct proxy_gen proxy_gen_t;
typedef struct request request_t;

typedef struct proxy_group_state {
    upstream_group_t up; /* connection pools, per target */
    balancer_targets_t bal;
    uint32_t *inflight; /* per target */
    uint8_t *eligible;  /* per target, scratch */
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
    const api_key_index_t *api_keys;
    atomic_uint *const *client_inflight;
    rate_limit_t *rates;
    session_store_t *sessions;
    jwks_slot_t *jwks;
    atomic_uint *shadow_inflight; /* per route: shadow copies in flight (the instance's) */
    agg_cache_t *agg_cache;       /* aggregation calls' bodies (the instance's), or NULL */
    struct tls_server *const *listener_tls; /* per listener: its TLS contexts, NULL: cleartext */
    json_diff_spec_t *const *diff_specs;    /* per route: its shadow comparison, NULL: none */
    shadow_route_t *const *shadow_routes;   /* per route: its shadow figures, or NULL */
    rollout_t *const *rollouts; /* per route: its rollout (records go here), NULL where none */
    /* The migration board: per route its figures (NULL: none), and per route
     * per target group the route's board group (UINT32_MAX: unused). */
    board_route_t *const *board_routes;
    const uint32_t *const *board_groups;
    uint64_t *route_key; /* per route: its name hashed (rate-limit keys survive reloads) */
    /* Headers a client must not send: every provider's forwarded-claim
     * headers; with_session adds Authorization and the session header, for
     * requests whose bearer token ficus writes itself. */
    rewrite_name_t *identity;
    size_t n_identity, n_identity_session;
    uint32_t *metrics_client; /* per client: ficus_throttled_total slot */
    int64_t **swrr;           /* per route: smooth WRR current weights */
    uint32_t **weights;       /* per route: backend weights (copied from shared_weights) */
    uint32_t *weights_version;
    uint32_t *route_inflight;       /* per route: requests in flight (retry budget) */
    uint32_t *route_retries;        /* per route: requests on a retry (retry budget) */
    struct hedge **hedges;          /* per route: its hedging delay and cap, NULL where none */
    struct reload_figures *figures; /* what a reversible reload judges (10.5), or NULL */
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
    const api_key_index_t *api_keys;        /* the clients' keys */
    atomic_uint *const *client_inflight;    /* per client: in flight on this instance */
    rate_limit_t *rates;                    /* this instance's token buckets */
    session_store_t *sessions;              /* this instance's session tokens */
    jwks_slot_t *jwks;                      /* per JWT provider: its keys */
    atomic_uint *shadow_inflight;           /* per route: shadow copies in flight */
    agg_cache_t *agg_cache;                 /* aggregation calls' bodies, or NULL */
    struct tls_server *const *listener_tls; /* per listener: its TLS contexts, NULL: cleartext */
    struct tls_client *const *target_tls;   /* per target group: TLS to its targets, or NULL */
    json_diff_spec_t *const *diff_specs;    /* per route: its shadow comparison, NULL: none */
    rollout_t *const *rollouts;             /* per route: its rollout, NULL where none */
    board_route_t *const *board_routes;     /* per route: its board figures, NULL where none */
    const uint32_t *const *board_groups;    /* per route, per group: its board group */
    void (*gen_freed)(void *ctx);           /* a worker let go of this generation (any thread) */
    void *gen_ctx;
    /* per route: its shadow figures (the instance's), or NULL */
    shadow_route_t *const *shadow_routes;
    /* The generation's requests, 5xx and latencies, counted for a reversible
     * reload's judgement (10.5); NULL: not counted. */
    struct reload_figures *figures;
} proxy_shared_t;

struct proxy_worker {
    worker_t *w;
    uv_loop_t *loop;
    proxy_gen_t *gen; /* the current generation (one reference) */
    /* A new configuration on trial (contract 10.5): it serves canary_percent
     * of new requests, by a hash of the request id (one reference; NULL:
     * none). */
    proxy_gen_t *canary;
    uint32_t canary_percent;
    client_conn_env_t clients;
    h2_server_env_t h2;
    upstream_env_t upstreams;
    pcre2_match_data *md;
    metrics_registry_t *registry;
    metrics_worker_t *metrics;
    access_log_writer_t *alog;
    tracer_t *tracer;              /* NULL: no export (trace headers pass through) */
    const admission_step_t *steps; /* admission, in order (admission_steps; tests swap them) */
    size_t n_steps;
    uv_timer_t log_flush;
    api_key_hasher_t hasher;         /* SHA-256 of presented API keys */
    token_cache_t *jwt_cache;        /* bearer token -> what verifying it gave (user_auth.c) */
    token_cache_t *session_cache;    /* session token -> what its exchange gave */
    struct user_exchange *exchanges; /* session exchanges this worker runs */
    fleet_t *fleet;                  /* fleet-wide counts in redis (redis.address set), else NULL */
    char *fleet_address;             /* the address it talks to */
    /* The aggregation cache's fleet-wide store (aggregate_cache {scope:
     * redis}), else NULL, and the address it talks to. */
    struct agg_store *agg_store;
    char *agg_store_address;
    uint64_t started_ms; /* names this worker's redis member */
    unsigned fleet_made; /* ... with how many members it made */
    http_head_t head;    /* scratch: the head being parsed */
    char *scratch;       /* scratch: a head being written */
    size_t scratch_bytes;
    uint64_t rng;
    uint64_t request_seq;
    request_t *waiting;     /* requests an admission step suspended */
    struct shadow *shadows; /* shadow copies in flight (shadow.c) */
    uv_async_t wake;        /* runs them again (proxy_worker_wake) */
    uv_mutex_t wake_lock;
    bool wake_closed; /* under wake_lock: the handle is closing */
    bool wake_lock_ready;
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
/* Worker thread: gen (the worker takes the caller's reference; NULL: none)
 * serves percent of new requests beside the current generation; a previous
 * trial generation is let go as an installed one would be. */
void proxy_worker_trial(proxy_worker_t *pw, proxy_gen_t *gen, uint32_t percent);
/* Worker thread: the trial generation becomes the current one (no-op
 * without one). */
void proxy_worker_promote(proxy_worker_t *pw);

/* Any thread: the requests waiting in an admission step are run again on
 * the worker's loop soon (each step looks again for what it waited for and
 * waits on if it is not there yet). Wakes while one is pending are one. */
void proxy_worker_wake(proxy_worker_t *pw);
/* Worker thread: request req waits / no longer waits. */
void proxy_worker_wait_add(proxy_worker_t *pw, request_t *req);
void proxy_worker_wait_remove(request_t *req);

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

#endif
