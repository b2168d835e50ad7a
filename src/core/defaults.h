/* Every default and limit of ficus, one line each, unit in the name.
 * The config loader and the runtime read them from here only. */
#ifndef FICUS_CORE_DEFAULTS_H
#define FICUS_CORE_DEFAULTS_H

/* server */
#define DEFAULT_LISTEN "0.0.0.0:8080"
#define DEFAULT_MAX_CONNECTIONS 10000
#define DEFAULT_HEADER_TIMEOUT_MS 10000
#define DEFAULT_PANIC_THRESHOLD 50                      /* percent, as Envoy */
#define DEFAULT_TUNNEL_IDLE_TIMEOUT_MS (60 * 60 * 1000) /* server.tunnel_idle_timeout */
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_MAX_HEADER_BYTES (16 * 1024)
#define DEFAULT_MAX_BODY_BYTES (8 * 1024 * 1024)
#define DEFAULT_RETRY_BUFFER_BYTES (64 * 1024)
#define DEFAULT_DRAIN_DELAY_MS 5000
#define DEFAULT_DRAIN_TIMEOUT_MS 30000
#define MAX_WORKERS 256
/* server.http2 (contract 3.2) */
#define DEFAULT_H2_MAX_CONCURRENT_STREAMS 100
#define H2_MAX_CONCURRENT_STREAMS 10000
#define DEFAULT_H2_INITIAL_WINDOW_BYTES (64 * 1024)
#define H2_MIN_WINDOW_BYTES 1024
#define H2_MAX_WINDOW_BYTES ((1u << 31) - 1)
#define MAX_LISTENERS 64
#define LISTEN_BACKLOG 4096

/* admin */
#define DEFAULT_ADMIN_LISTEN "127.0.0.1:9901"

/* takeover (server.control_socket) */
#define TAKEOVER_TIMEOUT_MS 5000 /* new side: fetch; SERVING to DRAINING. old: the hello */
#define TAKEOVER_MAX_FDS (MAX_WORKERS * (MAX_LISTENERS + 1)) /* descriptors in one handover */
#define TAKEOVER_IDLE_GRACE_MS 1000 /* old side: idle keep-alives close after this long idle */
#define TAKEOVER_BACKLOG 8          /* control socket; one client is served at a time */

/* target groups */
#define DEFAULT_DNS_REFRESH_MS 30000
#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_GROUP_MAX_CONNECTIONS 1024
#define DEFAULT_GROUP_MAX_PENDING 1024
#define DEFAULT_GROUP_MAX_REQUESTS 1024
#define DEFAULT_KEEPALIVE_MAX_IDLE 64
#define DEFAULT_KEEPALIVE_IDLE_TIMEOUT_MS 60000
#define DEFAULT_HC_PATH "/healthz"
#define DEFAULT_HC_INTERVAL_MS 5000
#define DEFAULT_HC_TIMEOUT_MS 1000
#define DEFAULT_HC_HEALTHY_THRESHOLD 2
#define DEFAULT_HC_UNHEALTHY_THRESHOLD 3
#define DEFAULT_OUTLIER_CONSECUTIVE_ERRORS 5
#define DEFAULT_OUTLIER_BASE_EJECTION_MS 30000
#define DEFAULT_OUTLIER_MAX_EJECTION_PERCENT 50

/* routes */
#define DEFAULT_ROUTE_TIMEOUT_MS 15000
#define DEFAULT_RETRY_BUDGET_PERCENT 20
#define DEFAULT_RETRY_BACKOFF_MS 25
#define RETRY_BUDGET_MIN_CONCURRENT 3
#define MAX_ROUTE_BACKENDS 64
#define MAX_PATH_CAPTURES 10       /* $0..$9 */
#define ROUTER_MATCH_DATA_PAIRS 64 /* per-worker PCRE2 ovector; groups beyond it read as unset */

/* sets */
#define DEFAULT_SET_REFRESH_MS 30000
#define MAX_SET_LINE_BYTES 1024
#define MAX_SET_BYTES (64 * 1024 * 1024) /* a larger set file or URL body is an error */
#define SET_FETCH_TIMEOUT_MS 10000       /* set URL: connect and the whole response */
#define SET_FETCH_HEAD_BYTES (64 * 1024) /* set URL: response head allowed on top of the body */

/* tracing */
#define DEFAULT_SERVICE_NAME "ficus"
#define DEFAULT_OTLP_PATH "/v1/traces"  /* when otlp_endpoint has no path */
#define TRACE_RING_SPANS 4096           /* per worker, a power of two; full: dropped */
#define TRACE_BATCH_SPANS 512           /* spans per export request */
#define TRACE_EXPORT_BUSY_INTERVAL_MS 5 /* ... while full batches go out */
#define TRACE_EXPORT_INTERVAL_MS 200    /* the exporter wakes this often */
#define TRACE_EXPORT_TIMEOUT_MS 2000    /* per batch: connect, send and response */
#define TRACE_EXPORT_BACKOFF_MS 1000    /* after a failed export: spans dropped meanwhile */
#define TRACE_EXPORT_MAX_BYTES (8 * 1024 * 1024) /* one encoded batch (a span is < 6 KiB) */
#define TRACE_RESPONSE_MAX_BYTES (64 * 1024)     /* collector answer read, at most */

/* request path */
#define MAX_REQUEST_HEADERS 128  /* more -> 431 */
#define IO_BUF_BYTES (64 * 1024) /* per-worker read buffer, pool buffers */
#define POOL_BUF_FREE_MAX 256    /* free pool buffers kept per worker */
#define REQUEST_ID_MAX_BYTES 128
#define SHADOW_MAX_COMPARE_HEADERS 16 /* shadow.compare.headers: response headers compared */
#define ACCESS_LOG_BUF_BYTES (256 * 1024)
#define ACCESS_LOG_FLUSH_MS 100
/* A change of the config file reloads after this quiet time. */
#define CONFIG_WATCH_DEBOUNCE_MS 200
#define CONFIG_WATCH_MAX_DELAY_MS 1000 /* a change is checked within this of its first event */
#define EMFILE_BACKOFF_MS 100

/* observability */
#define ACCESS_LOG_MAX_QUEUED_BUFS 8 /* waiting for the writer; more: dropped and counted */
#define ACCESS_LOG_FREE_BUFS_MAX 8   /* written buffers kept for reuse */
#define METRICS_PAIR_SLOTS 4096      /* per worker: (route,group) and (route,from,to) counters */
#define METRICS_PAIR_MAX_PROBES 64   /* a full neighbourhood drops the sample */
#define METRICS_MAX_REASONS 64       /* distinct auth / session-exchange failure reasons */
#define METRICS_REASON_MAX_BYTES 48  /* longer reason codes are truncated */

/* tools: mock, probe */
#define MOCK_MAX_PATHS 10000     /* distinct paths in /__mock/stats; beyond: "_other" */
#define MOCK_MAX_PATH_BYTES 1024 /* longer request paths count under "_other" */
#define MOCK_MAX_PIPELINE 1024   /* answers queued per connection before reading pauses */
#define MOCK_LINGER_MS 1000      /* after "Connection: close": wait for the client's FIN */
#define MOCK_MAX_BODY_BYTES (16 * 1024 * 1024) /* --body / --body-file */
#define PROBE_MAX_PARALLEL 64                  /* endpoint checks (threads) at once */
#define PROBE_DEFAULT_TIMEOUT_MS 5000    /* per endpoint: DNS, connect, TLS and the status line */
#define PROBE_MAX_HEAD_BYTES (16 * 1024) /* a longer response head is "bad status line" */
#define PROBE_MAX_EXPECT 8               /* statuses in one endpoint's expect list */
#define PROBE_DNS_GRACE_MS 1000          /* past its deadline, a check stuck in DNS is given up */

/* edge security: API clients, JWT users, sessions, limits */
#define DEFAULT_JWKS_REFRESH_MS (10 * 60 * 1000) /* jwks_url re-read */
#define DEFAULT_JWT_LEEWAY_MS 30000              /* clock skew allowed on exp and nbf */
#define DEFAULT_SESSION_CACHE_TTL_MS 30000
#define DEFAULT_SESSION_TIMEOUT_MS 1000   /* one exchange with the session service */
#define DEFAULT_REDIS_TIMEOUT_MS 100      /* one redis call; the request's deadline bounds it too */
#define JWKS_FETCH_TIMEOUT_MS 5000        /* jwks_url: connect and the whole answer */
#define JWKS_FETCH_HEAD_BYTES (64 * 1024) /* jwks_url: response head allowed */
#define JWKS_REFETCH_MIN_MS 5000          /* an unknown kid re-reads jwks_url at most this often */
#define SESSION_STORE_MAX_ENTRIES 16384   /* session tokens one instance remembers */
#define SESSION_STORE_MAX_BYTES (64 * 1024 * 1024) /* ... and their bytes (tokens and JWTs) */
#define TOKEN_CACHE_MAX_ENTRIES 8192               /* per worker: verified tokens */
#define TOKEN_CACHE_MAX_BYTES (16 * 1024 * 1024)   /* per worker, each of its two caches */
#define JWT_CACHE_MAX_MS (10 * 60 * 1000)          /* a token without exp is verified again after */
#define RATE_LIMIT_MAX_RETRY_AFTER_MS (24 * 3600 * 1000) /* a 429's Retry-After, at most a day */
#define RATE_LIMIT_BUCKETS 65536 /* per instance, 16 bytes each: rate-limit keys tracked */

/* config file: defaults without a line above, and the bounds beyond which
 * a value is a typo rather than a choice */
#define DEFAULT_ACCESS_LOG "stdout"
#define DEFAULT_SAMPLE_RATIO 1.0
#define DEFAULT_BACKEND_WEIGHT 1
#define MAX_BACKEND_WEIGHT 1000000
#define MAX_RETRY_ATTEMPTS 10
#define CONFIG_MAX_FILE_BYTES (16 * 1024 * 1024)
#define CONFIG_MAX_DURATION_MS (365ull * 24 * 60 * 60 * 1000) /* 8760h */
#define CONFIG_MAX_NAME_BYTES 128             /* route, target group and set names */
#define CONFIG_MIN_HEADER_BYTES 1024          /* max_header_size floor */
#define CONFIG_MAX_HEADER_BYTES (1024 * 1024) /* max_header_size ceiling */
#define CONFIG_MAX_RETRY_BUFFER_BYTES (1024ull * 1024 * 1024)
#define CONFIG_MAX_COUNT 10000000       /* connection, pending, request and idle limits */
#define CONFIG_MAX_THRESHOLD 1000       /* health check thresholds, outlier errors */
#define CONFIG_MAX_ALIAS_VALUES 1000000 /* values YAML aliases may add ("billion laughs") */

#endif
