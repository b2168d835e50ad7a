/* Prometheus metrics. Counters and histograms live per worker (written by that
 * worker only, no atomics beyond relaxed loads/stores) and are summed when
 * /metrics is scraped. Label values come from names in the config (routes,
 * groups, targets), never from requests, so cardinality is bounded. Slots are
 * keyed by name and survive reloads: a counter never goes backwards. */
#ifndef FICUS_OBSERVE_METRICS_H
#define FICUS_OBSERVE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define METRICS_MAX_ROUTES 4096
#define METRICS_MAX_GROUPS 4096
#define METRICS_MAX_TARGETS 16384
#define METRICS_MAX_CLIENTS 4096
#define METRICS_MAX_SETS 1024
#define METRICS_NO_ROUTE 0 /* slot 0 is route="-": requests that matched no route */
#define METRICS_SLOT_NONE UINT32_MAX

/* Upstream outcome codes that are not an HTTP status (label code=...). */
enum {
    METRICS_UPSTREAM_CONNECT_ERROR = -1, /* "connect_error" */
    METRICS_UPSTREAM_TIMEOUT = -2,       /* "timeout" */
    METRICS_UPSTREAM_RESET = -3          /* "reset" */
};

/* The label of a METRICS_UPSTREAM_* code ("connect_error", ...); NULL for a
 * status. */
const char *metrics_upstream_failure_name(int code);

/* Circuit-breaker limits (label limit=...). */
typedef enum {
    METRICS_LIMIT_MAX_CONNECTIONS = 0,
    METRICS_LIMIT_MAX_PENDING,
    METRICS_LIMIT_MAX_REQUESTS
} metrics_limit_t;

typedef struct metrics_registry metrics_registry_t;
typedef struct metrics_worker metrics_worker_t;

/* Histogram bucket upper bounds in seconds, 100 us to 30 s. */
extern const double metrics_buckets_s[];
extern const size_t metrics_n_buckets;

/* --- set-up (main thread) --- */
metrics_registry_t *metrics_registry_new(size_t n_workers, const char *version);
void metrics_registry_free(metrics_registry_t *r);
metrics_worker_t *metrics_worker_get(metrics_registry_t *r, size_t worker);
/* Slot for a label value; the same name always gives the same slot.
 * METRICS_SLOT_NONE when the table is full. Main thread only. */
uint32_t metrics_route_slot(metrics_registry_t *r, const char *route);
uint32_t metrics_group_slot(metrics_registry_t *r, const char *group);
uint32_t metrics_target_slot(metrics_registry_t *r, const char *group, const char *target);
uint32_t metrics_client_slot(metrics_registry_t *r, const char *client);
uint32_t metrics_set_slot(metrics_registry_t *r, const char *set);

/* --- hot path (the owning worker's thread) --- */
/* Gauges by route (worker-local, summed at scrape): requests in flight, open tunnels. */
void metrics_route_in_flight(metrics_worker_t *w, uint32_t route, int delta);
void metrics_tunnel(metrics_worker_t *w, uint32_t route, int delta);
void metrics_request(metrics_worker_t *w, uint32_t route, int status, uint64_t duration_us);
/* code: HTTP status, or METRICS_UPSTREAM_*. */
void metrics_upstream(metrics_worker_t *w, uint32_t group, uint32_t target, int code,
                      uint64_t duration_us);
void metrics_retry(metrics_worker_t *w, uint32_t route, uint32_t group);
void metrics_fallback(metrics_worker_t *w, uint32_t route, uint32_t from_group, uint32_t to_group);
/* A try to group failed and the fallback answered the client (contract 10.2). */
void metrics_canary_masked(metrics_worker_t *w, uint32_t route, uint32_t group);
/* A hedge (contract 10.3): its try answered the client (won), the first did
 * (lost), or the cap refused it (capped). */
typedef enum { METRICS_HEDGE_WON = 0, METRICS_HEDGE_LOST, METRICS_HEDGE_CAPPED } metrics_hedge_t;
void metrics_hedge(metrics_worker_t *w, uint32_t route, metrics_hedge_t result);
void metrics_circuit_breaker_rejection(metrics_worker_t *w, uint32_t group, metrics_limit_t l);
void metrics_rate_limited(metrics_worker_t *w, uint32_t route);
void metrics_throttled(metrics_worker_t *w, uint32_t client);
void metrics_downstream_connection(metrics_worker_t *w, int delta); /* gauge */
void metrics_downstream_rejected(metrics_worker_t *w);

/* --- process-wide events (any thread; atomics) --- */
void metrics_outlier_ejection(metrics_registry_t *r, uint32_t group, uint32_t target);
void metrics_config_reload(metrics_registry_t *r, bool success, uint64_t realtime_ms);
/* A new configuration on trial was reverted (contract 10.5);
 * ficus_config_last_reload_successful is 0 until a load succeeds. */
void metrics_config_reverted(metrics_registry_t *r);
/* A new configuration is on trial (1) or not (0): ficus_config_canary. */
void metrics_config_canary(metrics_registry_t *r, bool on);
void metrics_set_reload_failure(metrics_registry_t *r, uint32_t set);
/* A set was read: its member count and when (ms since the epoch). */
void metrics_set_loaded(metrics_registry_t *r, uint32_t set, uint64_t members, uint64_t at_ms);
void metrics_redis_error(metrics_registry_t *r);
/* TLS (contract 3.3). Main thread, before the workers start: listener i's
 * label (its address) and the names of the handshake results (index:
 * result). Worker: a handshake on listener i ended with result:
 * ficus_tls_handshakes_total{listener, result}. Main thread, as a
 * configuration is activated: its certificates' expiry,
 * ficus_tls_certificate_expiry_timestamp_seconds{listener, name}. */
#define METRICS_MAX_LISTENERS 64
#define METRICS_TLS_RESULTS 8
#define METRICS_H2_REASONS 16
#define METRICS_MAX_TLS_CERTS 256
void metrics_tls_listener(metrics_registry_t *r, size_t listener, const char *name);
void metrics_tls_results(metrics_registry_t *r, const char *const *names, size_t n);
void metrics_tls_handshake(metrics_worker_t *w, size_t listener, unsigned result);
/* ficus_http2_protocol_errors_total{reason}: the reasons' names (main
 * thread, before serving), and one more of reason (worker). */
void metrics_http2_reasons(metrics_registry_t *r, const char *const *names, size_t n);
void metrics_http2_error(metrics_worker_t *w, unsigned reason);
void metrics_tls_certs_clear(metrics_registry_t *r);
void metrics_tls_cert(metrics_registry_t *r, size_t listener, const char *name, int64_t not_after);
/* What the cache did for an aggregation call with cache_ttl (contract 8):
 * ficus_aggregate_cache_lookups_total{result}. */
typedef enum {
    METRICS_AGG_HIT,        /* a fresh body was there */
    METRICS_AGG_MISS,       /* this call fetched it */
    METRICS_AGG_SHARED,     /* it waited for another call's fetch */
    METRICS_AGG_REDIS_DOWN, /* the fleet's cache failed: the instance's served */
    METRICS_AGG_RESULTS
} metrics_agg_result_t;
void metrics_aggregate_cache(metrics_registry_t *r, metrics_agg_result_t res);
void metrics_trace_dropped(metrics_registry_t *r, uint64_t n);
void metrics_trace_export_failure(metrics_registry_t *r);
void metrics_auth_failure(metrics_registry_t *r, uint32_t route, const char *reason);
void metrics_session_exchange_failure(metrics_registry_t *r, const char *reason);

/* Gauges whose value lives elsewhere (weights, health): the renderer asks. */
typedef struct metrics_gauges {
    void *ctx;
    /* Calls emit(ctx2, route, target_group, weight) for every backend of
     * every route in the current config. */
    void (*each_backend_weight)(void *ctx,
                                void (*emit)(void *ctx2, const char *route, const char *group,
                                             uint32_t weight),
                                void *ctx2);
    /* Calls emit(ctx2, group, target, healthy, ejected) for every target. May be NULL. */
    void (*each_target_health)(void *ctx,
                               void (*emit)(void *ctx2, const char *group, const char *target,
                                            int healthy, int ejected),
                               void *ctx2);
    /* Calls emit(ctx2, group, panic) for every target group. May be NULL. */
    void (*each_group_panic)(void *ctx, void (*emit)(void *ctx2, const char *group, int panic),
                             void *ctx2);
} metrics_gauges_t;

/* Appends the whole exposition (text format 0.0.4) to out. Main thread. */
int metrics_render(metrics_registry_t *r, const metrics_gauges_t *g, buf_t *out);

#endif
