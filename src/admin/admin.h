/* The admin listener (main thread): liveness, readiness, metrics and the
 * admin API. One request per connection; the gateway supplies the data
 * through hooks (admin/ never sees its internals). */
#ifndef FICUS_ADMIN_ADMIN_H
#define FICUS_ADMIN_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/defaults.h"
#include "observe/access_log.h"
#include "observe/metrics.h"

typedef struct admin admin_t;

/* Target group g as the gateway sees it now (plain data for the endpoints). */
typedef struct admin_group_info {
    const char *name;
    size_t n_targets;
    bool required;
    int panic;                               /* 1 while fewer than panic_threshold % are usable */
    size_t usable_targets;                   /* healthy, resolved and not ejected */
    uint32_t connections, pending, requests; /* circuit breaker counts */
    uint32_t max_connections, max_pending, max_requests;
} admin_group_info_t;

/* One target of a group. */
typedef struct admin_target_info {
    const char *name;
    const char *address; /* NULL while unresolved, else address_buf */
    char address_buf[80];
    bool usable, health_check_ok, ejected;
    uint64_t ejected_for_ms;
    uint32_t ejections, consecutive_errors, inflight;
} admin_target_info_t;

/* One route's backends (target group names) and their weights now. */
typedef struct admin_route_info {
    const char *name;
    size_t n_backends;
    const char *backends[MAX_ROUTE_BACKENDS];
    uint32_t weights[MAX_ROUTE_BACKENDS];
    bool has_rollout; /* its rollout owns the weights: PUT weights is refused */
} admin_route_info_t;

/* What the endpoints learn from the gateway, all on the main thread. Any
 * callback may be NULL (nothing to say: no groups, no routes, no token). */
typedef struct admin_hooks {
    void *ctx;
    /* True while draining or stopping: /readyz answers 503. */
    bool (*draining)(void *ctx);
    size_t (*n_groups)(void *ctx);
    void (*group)(void *ctx, size_t g, admin_group_info_t *out);
    void (*target)(void *ctx, size_t g, size_t t, admin_target_info_t *out);
    size_t (*n_routes)(void *ctx);
    void (*route)(void *ctx, size_t r, admin_route_info_t *out);
    /* Installs route r's weights (one per backend, validated, not all 0). */
    void (*set_weights)(void *ctx, size_t r, const uint32_t *weights);
    /* The configuration as /config shows it (a new reference), NULL on failure. */
    json_t *(*config)(void *ctx);
    /* The bearer token every endpoint but /healthz, /readyz and /metrics
     * needs, or NULL for none (admin.token_env). */
    const char *(*token)(void *ctx);
    /* Rate-limit buckets evicted so far to make room for new keys (the
     * table is fixed in size); may be NULL. */
    uint64_t (*rate_limit_evictions)(void *ctx);
    /* Route r's shadow figures as GET /routes/NAME/shadow shows them (a new
     * reference), or NULL when the route has no shadow. */
    json_t *(*route_shadow)(void *ctx, size_t route);
    /* Appends the shadow metric families to the /metrics text. */
    void (*shadow_metrics)(void *ctx, buf_t *out);
    /* Route r's rollout as GET /routes/NAME/rollout shows it (a new
     * reference), or NULL when r has none (or out of memory). */
    json_t *(*rollout)(void *ctx, size_t r);
    /* Runs the rollout action named action (len bytes) on route r, weights
     * applied at once: 0; FE_NOTFOUND when r has no rollout or there is no
     * such action; FE_INVAL when the action makes no sense in its state. */
    int (*rollout_action)(void *ctx, size_t r, const char *action, size_t len);
    /* Appends the rollout metric families to /metrics. */
    void (*rollout_metrics)(void *ctx, buf_t *out);
    /* GET /migration's document (a new reference), NULL on failure. */
    json_t *(*migration)(void *ctx);
    /* GET /config/history's document (a new reference), NULL on failure. */
    json_t *(*config_history)(void *ctx);
    metrics_registry_t *metrics; /* rendered at /metrics; may be NULL */
    access_log_t *access_log;    /* its dropped lines are counted; may be NULL */
} admin_hooks_t;

/* One admin request, and what admin_handle answers. */
typedef struct admin_request {
    const char *method, *path, *body, *authorization;
    size_t method_len, path_len, body_len, authorization_len;
} admin_request_t;

typedef struct admin_response {
    int status;
    const char *content_type;
    const char *header; /* one extra header line ("Allow: GET\r\n"), or NULL */
    char header_buf[96];
} admin_response_t;

/* Listens on sa, or, when fd >= 0, on that listening socket (taken over from
 * another ficus; the admin owns it from now on). */
admin_t *admin_start(uv_loop_t *loop, const struct sockaddr *sa, socklen_t len, int fd,
                     const admin_hooks_t *hooks, char *err, size_t errlen);
/* The listening socket, to hand over to a new process. */
int admin_fd(const admin_t *a);
/* Closes the listener and its connections. NULL is a no-op. */
void admin_stop(admin_t *a);

/* Routes one admin request (sans-I/O, for tests): fills the response and
 * body; returns the status. */
int admin_handle(const admin_hooks_t *hooks, const admin_request_t *req, buf_t *body,
                 admin_response_t *resp);

#endif
