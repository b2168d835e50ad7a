/* The configuration snapshot: validated, immutable, reference-counted.
 * Built by config_load_*() from YAML; runtime code never sees YAML. Every
 * string and array lives in the snapshot's arena and dies with it.
 * Cross references (route -> target group, in_set -> set) are indexes. */
#ifndef FICUS_CONFIG_CONFIG_H
#define FICUS_CONFIG_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/addr.h"
#include "core/arena.h"
#include "http/method.h"

#define CONFIG_NONE ((size_t)-1)

#define CONFIG_TLS_MAX_CERTS 16 /* a listener's certificates (net/tls.h's TLS_MAX_CERTS) */
#define CONFIG_TLS_MAX_ALPN 2   /* h2, http/1.1 */

/* A listener's tls.client_auth: whether client certificates are asked. */
typedef enum {
    CONFIG_CLIENT_CERT_NONE = 0,
    CONFIG_CLIENT_CERT_OPTIONAL, /* asked; the handshake goes on without a valid one */
    CONFIG_CLIENT_CERT_REQUIRED  /* no verified certificate, no connection */
} config_client_cert_t;

/* A certificate (chain) and its key: PEM files, absolute once loaded. */
typedef struct config_tls_cert {
    char *cert;
    char *key;
} config_tls_cert_t;

/* A listener's tls block (contract 3.3). */
typedef struct config_listener_tls {
    config_tls_cert_t *certs; /* chosen by SNI; the first is the default */
    size_t n_certs;
    bool min_tls13; /* min_version "1.3"; else "1.2" */
    /* alpn as configured, in preference order ("h2", "http/1.1"): what the
     * listener may offer once ficus speaks it (app/generation.c filters). */
    const char *alpn[CONFIG_TLS_MAX_ALPN];
    size_t n_alpn;
    char *client_ca; /* NULL: no client certificates */
    config_client_cert_t client_auth;
} config_listener_tls_t;

typedef struct config_listener {
    char *address; /* as written */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    config_listener_tls_t *tls; /* NULL: plain TCP */
} config_listener_t;

/* server.http2 (contract 3.2): downstream HTTP/2. */
typedef struct config_http2 {
    bool enabled;                    /* ALPN h2 and cleartext prior knowledge */
    uint32_t max_concurrent_streams; /* per connection */
    uint64_t initial_window_size;    /* per stream, request bodies: bytes held at most */
    uint64_t max_header_list_size;   /* decoded; 0 = server.max_header_size */
} config_http2_t;

typedef struct config_server {
    config_listener_t *listeners;
    size_t n_listeners;
    uint32_t workers; /* "auto" is resolved to the CPU count at load */
    uint32_t max_connections;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t tunnel_idle_timeout_ms; /* a tunnel with no bytes either way this long closes */
    uint64_t max_header_bytes;
    uint64_t max_body_bytes;
    uint64_t retry_buffer_bytes;
    uint64_t drain_delay_ms;
    uint64_t drain_timeout_ms;
    char *control_socket; /* NULL when unset or "" */
    cidr_t *trusted_proxies;
    size_t n_trusted_proxies;
    config_http2_t http2;
} config_server_t;

typedef struct config_tracing {
    char *otlp_endpoint; /* NULL = off */
    char *service_name;
    double sample_ratio;
    bool propagate_w3c;
    bool propagate_datadog;
} config_tracing_t;

typedef struct config_target {
    char *name; /* "host:port" as written: the metrics/log label */
    char *host;
    uint16_t port;
    bool numeric;                 /* host is an IP literal: addr is final */
    struct sockaddr_storage addr; /* filled for numeric hosts at load; by DNS otherwise */
    socklen_t addrlen;
} config_target_t;

typedef enum { BALANCE_ROUND_ROBIN = 0, BALANCE_LEAST_REQUEST, BALANCE_RANDOM } config_balance_t;

typedef struct config_health_check {
    char *path;
    uint64_t interval_ms;
    uint64_t timeout_ms;
    uint32_t healthy_threshold;
    uint32_t unhealthy_threshold;
} config_health_check_t;

typedef struct config_outlier {
    uint32_t consecutive_errors;
    uint64_t base_ejection_ms;
    uint32_t max_ejection_percent;
} config_outlier_t;

/* A target group's `tls` (contract 3.3): TLS to its targets. */
typedef struct config_target_tls {
    char *sni;   /* sent and checked; NULL: the target's host name (an IP is checked only) */
    char *ca;    /* PEM CA file; NULL: the system's store */
    bool verify; /* false only when written out */
    char *cert;  /* client certificate for mutual TLS (with key), or NULL */
    char *key;
} config_target_tls_t;

typedef struct config_target_group {
    char *name;
    size_t index;
    config_target_t *targets;
    size_t n_targets;
    uint64_t dns_refresh_ms;
    config_balance_t balance;
    bool h2; /* protocol: h2 (HTTP/2 to the targets), else http1 */
    uint64_t connect_timeout_ms;
    uint32_t max_connections;
    uint32_t max_pending;
    uint32_t max_requests;
    uint32_t panic_threshold; /* percent healthy below which health is ignored; 0 = off */
    uint32_t keepalive_max_idle;
    uint64_t keepalive_idle_timeout_ms;
    bool has_health_check;
    config_health_check_t health_check;
    bool has_outlier;
    config_outlier_t outlier;
    bool required;
    bool has_tls;
    config_target_tls_t tls;
} config_target_group_t;

typedef struct config_set {
    char *name;
    size_t index;
    char *file; /* exactly one of file | url; a relative file is made relative to the config's
                   directory */
    char *url;
    uint64_t refresh_ms;
    size_t file_line, file_col; /* where `file` is written, for `ficus check` */
} config_set_t;

typedef enum { MATCH_PATH = 0, MATCH_PREFIX, MATCH_REGEX } config_match_kind_t;

/* Method bits for config_match_t.methods (0 = any method): bit
 * http_method_t, METHOD_OTHER for any method http/method.h does not list. */
enum {
#define CONFIG_METHOD_BIT(id, token, idempotent) METHOD_##id = 1u << HTTP_METHOD_##id,
    HTTP_METHODS(CONFIG_METHOD_BIT)
#undef CONFIG_METHOD_BIT
        METHOD_OTHER = 1u << HTTP_METHOD_OTHER
};
/* Bit for a method token ("GET" -> 1 << HTTP_METHOD_GET); METHOD_OTHER if unknown. */
static inline uint32_t config_method_bit(const char *m, size_t len)
{
    return 1u << http_method_parse(m, len);
}

/* A header name and value: what a route matches (the name lower-cased at
 * load) or sets on the request (as written). */
typedef struct config_header {
    char *name;
    char *value;
} config_header_t;
typedef config_header_t config_header_match_t;
typedef config_header_t config_header_set_t;

typedef struct config_match {
    config_match_kind_t kind;
    char *path; /* path | path_prefix | path_regex source */
    size_t path_len;
    pcre2_code *regex;   /* MATCH_REGEX: compiled anchored, JIT'd when available */
    uint32_t n_captures; /* capture groups in regex */
    uint32_t methods;    /* METHOD_* bits, 0 = any */
    char *host;          /* lower-cased; NULL = any */
    bool host_wildcard;  /* host was "*.suffix": host holds ".suffix" */
    config_header_match_t *headers;
    size_t n_headers;
    size_t in_set;           /* set index or CONFIG_NONE */
    uint32_t in_set_capture; /* capture group number of in_set.capture */
    char *in_set_capture_name;
} config_match_t;

typedef struct config_backend {
    size_t target_group;
    uint32_t weight;
    size_t fallback; /* target group index or CONFIG_NONE */
    char *path;      /* rewrite template with $0..$9, NULL = none */
} config_backend_t;

typedef enum { STICKY_NONE = 0, STICKY_CLIENT_IP, STICKY_HEADER, STICKY_COOKIE } config_sticky_t;

/* retry_on bits */
enum {
    RETRY_ON_5XX = 1u << 0,
    RETRY_ON_GATEWAY_ERROR = 1u << 1,
    RETRY_ON_CONNECT_FAILURE = 1u << 2,
    RETRY_ON_RESET = 1u << 3,
    RETRY_ON_TIMEOUT = 1u << 4,
    /* gRPC status codes in a trailers-only answer (contract 3.2) */
    RETRY_ON_GRPC_CANCELLED = 1u << 5,
    RETRY_ON_GRPC_DEADLINE_EXCEEDED = 1u << 6,
    RETRY_ON_GRPC_RESOURCE_EXHAUSTED = 1u << 7,
    RETRY_ON_GRPC_UNAVAILABLE = 1u << 8
};

/* route.retries.hedge (10.3): a second try of an idempotent request whose
 * first has no response head after `after`. */
typedef struct config_hedge {
    uint64_t after_ms;         /* a fixed delay (after_percentile 0) */
    uint32_t after_percentile; /* 95 or 99: the backend's own latency over the last minute */
    uint32_t max_percent;      /* hedges at most this share of the route's requests */
} config_hedge_t;

/* route.deadline (10.3) */
typedef struct config_deadline {
    bool propagate;            /* each try carries the time it has left */
    uint64_t min_remaining_ms; /* no retry, fallback or hedge starts with less left */
} config_deadline_t;

typedef struct config_retries {
    uint32_t attempts;           /* retries, not tries */
    uint64_t per_try_timeout_ms; /* 0 = none (the route timeout bounds it) */
    uint32_t retry_on;           /* RETRY_ON_* bits */
    uint16_t *retry_statuses;    /* explicit status codes in retry_on */
    size_t n_retry_statuses;
    uint64_t backoff_ms;
    uint32_t budget_percent;
    bool has_hedge;
    config_hedge_t hedge;
} config_retries_t;

/* Where a limit or a throttle counts: this instance (shared by its
 * workers) or every instance (through redis). */
typedef enum { SCOPE_LOCAL = 0, SCOPE_GLOBAL } config_scope_t;

/* route.auth.client */
typedef enum {
    AUTH_CLIENT_NONE = 0,
    AUTH_CLIENT_OPTIONAL,
    AUTH_CLIENT_REQUIRED
} config_auth_client_t;

/* route.rate_limit.by */
typedef enum { RATE_BY_CLIENT = 0, RATE_BY_IP, RATE_BY_USER, RATE_BY_ROUTE } config_rate_by_t;

typedef struct config_rate_limit {
    double requests_per_second; /* refill rate */
    double burst;               /* bucket size */
    config_rate_by_t by;
    config_scope_t scope;
} config_rate_limit_t;

/* route.shadow.compare (10.1): what the copy's answer is diffed on. */
typedef struct config_shadow_compare {
    char *
        *ignore; /* JSON pointers: "" or starting with a slash; a "*" segment = any key or index */
    size_t n_ignore;
    char **unordered; /* JSON pointers of arrays compared as multisets */
    size_t n_unordered;
    char **headers; /* response headers compared besides the status (lower-cased) */
    size_t n_headers;
    bool has_noise;
    uint32_t noise_percent; /* noise.percent: share also sent twice to the route's own group */
    uint64_t max_body_size; /* bytes; larger bodies: status and length only */
} config_shadow_compare_t;

/* route.shadow (10.1): a copy of a share of the route's requests. */
typedef struct config_shadow {
    size_t target_group;    /* index of the group the copy goes to */
    uint32_t percent;       /* 0-100, by request id hash */
    char *path;             /* rewrite template as backends[].path, NULL = the request's path */
    uint32_t methods;       /* METHOD_* bits copied */
    uint32_t max_in_flight; /* copies in flight beyond which new ones are dropped */
    bool has_compare;
    config_shadow_compare_t compare;
} config_shadow_t;

/* route.rollout (10.2) */
typedef enum { CONFIG_ON_FAILURE_ROLLBACK = 0, CONFIG_ON_FAILURE_PAUSE } config_on_failure_t;
typedef enum { CONFIG_ROLLOUT_LOCAL = 0, CONFIG_ROLLOUT_REDIS } config_rollout_state_t;

#define CONFIG_ROLLOUT_MAX_STEPS 16 /* steps in a rollout block (policy/rollout keeps as many) */

typedef struct config_rollout {
    size_t canary;   /* target group index: one of the route's backends, not the only one */
    uint32_t *steps; /* canary percents, strictly ascending, 1..100 */
    size_t n_steps;
    uint64_t interval_ms;
    uint32_t min_requests;
    double max_error_rate;    /* fraction in [0, 1] */
    double max_latency_ratio; /* > 1; 0 = not checked */
    bool has_max_mismatch_rate;
    double max_mismatch_rate; /* fraction in [0, 1]; only with shadow.compare */
    config_on_failure_t on_failure;
    config_rollout_state_t state;
} config_rollout_t;

/* route.aggregate (contract 8): calls made concurrently, one JSON answer. */
#define CONFIG_MAX_AGGREGATE_CALLS 16
typedef struct config_agg_call {
    char *name;            /* the answer's key */
    size_t target_group;   /* index */
    char *path;            /* request target; {user} is the user's id, percent-encoded */
    bool uses_user;        /* path has {user} */
    bool required;         /* its failure fails the answer (502/504) */
    uint64_t cache_ttl_ms; /* 200 answers kept this long per resolved path; 0: not */
    char *extract;         /* JSON pointer of the part kept; NULL: the whole body */
} config_agg_call_t;

typedef struct config_aggregate {
    uint64_t timeout_ms;     /* the whole aggregation */
    uint64_t max_body_bytes; /* a call's body; larger is the call's failure */
    config_agg_call_t *calls;
    size_t n_calls;
} config_aggregate_t;

typedef struct config_route {
    char *name;
    size_t index;
    config_match_t match;
    char *rewrite_prefix; /* NULL = none; only with path_prefix */
    config_backend_t *backends;
    size_t n_backends;
    config_sticky_t sticky;
    char *sticky_name; /* header (lower-cased) or cookie name */
    uint64_t timeout_ms;
    bool has_retries;
    config_retries_t retries;
    bool retry_non_idempotent;
    config_deadline_t deadline;
    cidr_t *ip_allow;
    size_t n_ip_allow;
    cidr_t *ip_deny;
    size_t n_ip_deny;
    config_header_set_t *set_headers;
    size_t n_set_headers;
    char **remove_headers; /* lower-cased */
    size_t n_remove_headers;
    char **upgrades; /* lower-case Upgrade tokens tunnelled after a 101; none = refused (400) */
    size_t n_upgrades;
    config_auth_client_t auth_client;
    size_t auth_provider; /* auth.user.provider: jwt_providers index, CONFIG_NONE = no user auth */
    bool auth_user_required;
    size_t *clients; /* client indexes allowed on the route; none = every client */
    size_t n_clients;
    bool has_rate_limit;
    config_rate_limit_t rate_limit;
    bool has_shadow;
    config_shadow_t shadow;
    bool has_rollout;
    config_rollout_t rollout;
    bool has_aggregate; /* calls instead of backends (n_backends is 0) */
    config_aggregate_t aggregate;
    uint32_t lint_ignore; /* lint.ignore: bits of config/lint's rules silenced on the route */
} config_route_t;

/* An API client: X-Api-Key is checked against the SHA-256 of its keys. */
typedef struct config_client {
    char *id;
    size_t index;
    uint8_t (*key_sha256)[32]; /* api_keys_sha256, then the api_keys_env values hashed at load */
    size_t n_keys;
    char **api_keys_env; /* the variables' names, as written */
    size_t n_api_keys_env;
    uint32_t max_concurrent_requests; /* 0 = no throttle */
    config_scope_t concurrency_scope;
    char **certificate_cn; /* verified client certificates' subject CNs that name it */
    size_t n_certificate_cn;
} config_client_t;

/* certificate_cn -> client, sorted by cn (config_client_by_cn). */
typedef struct config_cert_cn {
    const char *cn;
    size_t client;
} config_cert_cn_t;

/* JWS algorithms a provider accepts (bits). */
enum {
    JWT_ALG_RS256 = 1u << 0,
    JWT_ALG_RS384 = 1u << 1,
    JWT_ALG_RS512 = 1u << 2,
    JWT_ALG_PS256 = 1u << 3,
    JWT_ALG_PS384 = 1u << 4,
    JWT_ALG_PS512 = 1u << 5,
    JWT_ALG_ES256 = 1u << 6,
    JWT_ALG_ES384 = 1u << 7,
    JWT_ALG_HS256 = 1u << 8,
    JWT_ALG_HS384 = 1u << 9,
    JWT_ALG_HS512 = 1u << 10,
    JWT_ALG_EDDSA = 1u << 11
};

/* A forwarded claim: its value goes upstream in header (as written). */
typedef struct config_claim_header {
    char *claim;
    char *header;    /* as written: sent so */
    char *header_lc; /* lower-cased: dropped from what the client sent */
} config_claim_header_t;

typedef struct config_jwt_provider {
    char *name;
    size_t index;
    char *issuer; /* NULL: iss not checked */
    char **audiences;
    size_t n_audiences; /* 0: aud not checked */
    char *jwks_file;    /* exactly one of jwks_file | jwks_url */
    char *jwks_url;
    size_t jwks_line, jwks_col; /* where the one written is, for `ficus check` */
    uint64_t jwks_refresh_ms;
    uint32_t algorithms; /* JWT_ALG_* bits */
    uint64_t leeway_ms;  /* clock skew allowed on exp and nbf */
    config_claim_header_t *forward_claims;
    size_t n_forward_claims;
} config_jwt_provider_t;

typedef struct config_session_exchange {
    char *cookie; /* exactly one of cookie | header (lower-cased) */
    char *header;
    char *url;
    size_t provider; /* jwt_providers index */
    uint64_t cache_ttl_ms;
    uint64_t timeout_ms; /* one exchange: connect to the end of the answer */
} config_session_exchange_t;

/* Where a restart-only key is written in the file (the rows marked
 * ROW_RESTART in config_rows.c). */
typedef struct config_key_pos {
    const char *key; /* its path: "server.listen" */
    size_t line, col;
    struct config_key_pos *next;
} config_key_pos_t;

/* reload (10.5): a new configuration first serves a share of new requests
 * beside the one it replaces, and is promoted or reverted on the figures. */
typedef struct config_reload {
    uint32_t canary_percent;        /* 1-99, by a hash of the request id */
    uint64_t bake_ms;               /* how long both serve */
    double max_error_rate_increase; /* factor >= 1: new 5xx rate against old */
    double max_latency_increase;    /* factor >= 1: new p99 against old */
    uint32_t min_requests;          /* on each side, before the figures are judged */
} config_reload_t;

typedef struct config {
    atomic_int refs;
    arena_t arena;
    char *path; /* the file it came from ("<demo>" for the embedded one) */

    config_server_t server;
    char *admin_listen;
    char *admin_token_env; /* NULL: the admin API is open (bind it to a private address) */
    char *admin_token;     /* the variable's value at load time; never printed */
    struct sockaddr_storage admin_addr;
    socklen_t admin_addrlen;
    char *access_log_path; /* NULL = off; "stdout"; or a file path */
    int log_level;         /* log_level_t of ficus's own log */
    bool log_json;         /* JSON lines instead of text */
    config_tracing_t tracing;
    char *redis_address; /* NULL = unset */
    uint64_t redis_timeout_ms;

    config_client_t *clients;
    size_t n_clients;
    config_cert_cn_t *cert_cns; /* every client's certificate_cn, sorted */
    size_t n_cert_cns;
    config_jwt_provider_t *jwt_providers;
    size_t n_jwt_providers;
    bool has_session_exchange;
    config_session_exchange_t session_exchange;

    config_target_group_t *target_groups;
    size_t n_target_groups;
    config_set_t *sets;
    size_t n_sets;
    config_route_t *routes;
    size_t n_routes;
    /* Where the restart-only keys written are, so that a reload refusing a
     * change can point at the key. */
    config_key_pos_t *key_pos;
    uint32_t lint_ignore; /* lint.ignore: bits of config/lint's rules silenced everywhere */
    bool has_reload;
    config_reload_t reload;
    /* aggregate_cache: where aggregation calls' bodies are kept (8) */
    config_scope_t aggregate_cache_scope;
    uint32_t aggregate_cache_entries;
    uint64_t aggregate_cache_bytes;
} config_t;

/* Errors collected while loading: every one, in file order, each formatted
 * "FILE:LINE:COL: message". */
typedef struct config_errors {
    char **items;
    size_t n;
    size_t cap;
} config_errors_t;

void config_errors_init(config_errors_t *e);
void config_errors_deinit(config_errors_t *e);
void config_errors_add(config_errors_t *e, const char *file, size_t line, size_t col,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Parses and validates; NULL with errs filled on any error. refs = 1.
 * Numeric targets get their address; named ones are resolved by the caller. */
config_t *config_load_file(const char *path, config_errors_t *errs);
config_t *config_load_string(const char *yaml, size_t len, const char *name, config_errors_t *errs);

static inline config_t *config_ref(config_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}
/* Frees the snapshot with its last reference; NULL is a no-op. */
void config_unref(config_t *c);

/* Lookups by name; CONFIG_NONE when absent. */
size_t config_find_target_group(const config_t *c, const char *name);
size_t config_find_route(const config_t *c, const char *name);
size_t config_find_set(const config_t *c, const char *name);
/* The client a verified client certificate's subject CN names
 * (clients[].certificate_cn, exact), or CONFIG_NONE. */
size_t config_client_by_cn(const config_t *c, const char *cn, size_t len);

/* Line and column of a restart-only key in the file, or 0 when not written. */
void config_key_position(const config_t *cfg, const char *key, size_t *line, size_t *col);

/* The path of the first restart-only key ("server.listen") whose value
 * differs from old to new, or NULL: settings bound to sockets, threads and
 * files opened at start, which a reload cannot change. The string lives
 * until this thread's next call. */
const char *config_restart_only_change(const config_t *old, const config_t *new);

#endif
