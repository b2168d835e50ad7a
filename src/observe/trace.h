/* Distributed tracing (contract section 6.3): W3C traceparent and Datadog
 * header parsing/formatting (sans-I/O), span ids, sampling, and the exporter
 * that ships finished spans as OTLP/HTTP JSON from its own thread. Workers
 * hand spans over through per-worker lock-free rings and never wait on it. */
#ifndef FICUS_OBSERVE_TRACE_H
#define FICUS_OBSERVE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "observe/metrics.h"

/* Defined in config/config.h; only a pointer passes through this header. */
typedef struct config_tracing config_tracing_t;

#define TRACE_ID_BYTES 16
#define SPAN_ID_BYTES 8
#define TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_FLAG_SAMPLED 0x01

/* --- header parsing and formatting (sans-I/O, any thread) --- */

/* W3C traceparent (Trace Context level 1). Accepts version 00 at exactly 55
 * chars, and a higher version (not ff) with at least the 00 layout and, if
 * longer, a '-' at offset 55 (forward compatibility). Refuses uppercase hex,
 * an all-zero trace id or parent id, version ff, wrong length or separators.
 * Leading/trailing OWS (space/tab) is tolerated. flags gets the raw flags
 * byte (TRACE_FLAG_SAMPLED is bit 0). 0 ok, -1 invalid (outputs untouched). */
int trace_parse_traceparent(const char *v, size_t n, uint8_t trace_id[16], uint8_t parent_id[8],
                            uint8_t *flags);
/* Writes exactly TRACEPARENT_LEN chars (no NUL): version 00, flags 01 when
 * sampled else 00. */
void trace_format_traceparent(char out[TRACEPARENT_LEN], const uint8_t trace_id[16],
                              const uint8_t span_id[8], bool sampled);
/* Overwrites the span-id part (16 hex at offset 36) of a formatted traceparent. */
void trace_patch_span_id(char tp[TRACEPARENT_LEN], const uint8_t span_id[8]);

/* Datadog: x-datadog-trace-id and x-datadog-parent-id are unsigned 64-bit
 * decimals (1-20 digits, no sign, no overflow, not 0); leading/trailing OWS
 * is tolerated, nothing else. A 64-bit trace id maps to the low 8 bytes of
 * the 128-bit trace id (high 8 bytes zero), as Datadog does for W3C interop:
 * trace_span_id_from_u64(v, trace_id + 8). 0 ok, -1 invalid. */
int trace_parse_datadog_id(const char *v, size_t n, uint64_t *out);
/* Span ids for Datadog interop: a random id whose decimal form is exactly 19
 * digits (10^18 <= id < 2^63), so a head can keep a fixed-width slot for
 * x-datadog-parent-id and patch it per attempt. */
#define TRACE_DD_ID_DIGITS 19
#define TRACE_DD_ID_MIN 1000000000000000000ull /* 10^18 */
#define TRACE_DD_ID_END 0x8000000000000000ull  /* 2^63, excluded */
/* Writes id as exactly TRACE_DD_ID_DIGITS decimal digits (no NUL); id must be in range. */
void trace_dd_format_id(char out[TRACE_DD_ID_DIGITS], uint64_t id);

/* --- ids and sampling (caller-owned PRNG state: per worker, no locks, no syscalls) ---
 * The state is a splitmix64 counter: any value works, but seed each worker's
 * from a real random source (getrandom) at start, or two workers (or two
 * ficus instances) hand out the same ids. */

/* A random 128-bit trace id, never all zero. */
void trace_new_trace_id(uint64_t *rng, uint8_t out[16]);
/* A random span id, never zero; dd_compatible: in [10^18, 2^63) (see above). */
void trace_new_span_id(uint64_t *rng, uint8_t out[8], bool dd_compatible);
/* Big-endian bytes -> integer. */
uint64_t trace_span_id_u64(const uint8_t id[8]);
/* Integer -> big-endian bytes. */
void trace_span_id_from_u64(uint64_t v, uint8_t out[8]);
/* Sampling decision for a started trace: true with probability ratio; ratio
 * <= 0 is always false and >= 1 always true (no draw then). */
bool trace_sample(uint64_t *rng, double ratio);
/* Lower-case hex of n bytes into out (2n chars, no NUL). */
void trace_hex(char *out, const uint8_t *b, size_t n);

/* --- spans and the exporter --- */

typedef enum { TRACE_SPAN_SERVER = 2, TRACE_SPAN_CLIENT = 3 } trace_span_kind_t; /* OTLP values */

/* A finished span, self-contained (strings copied, NUL-terminated, truncated
 * to fit), so it outlives the request and the config snapshot. Filled by the
 * worker, read by the exporter thread. Empty strings are not exported. A
 * string cut inside a UTF-8 sequence is exported with U+FFFD there. */
typedef struct trace_span {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8]; /* all zero = root span */
    uint8_t kind;         /* trace_span_kind_t */
    uint8_t error;        /* status ERROR (5xx answer, or a failed try) */
    uint8_t retry;        /* client span: this try is a retry */
    uint8_t fallback;     /* went to / is the fallback group */
    uint8_t hedge;        /* client span: this try is a hedge; server span: one was sent */
    uint16_t status;      /* HTTP status; 0 = none (try failed without a response) */
    uint16_t attempt;     /* client span: 1-based try number; server span: tries made */
    uint64_t start_unix_ns;
    uint64_t end_unix_ns; /* exported as start when earlier (the realtime clock stepped) */
    char name[48];        /* e.g. "GET search" (server) / "GET search-v2" (client) */
    char method[16];
    char route[64];
    char target_group[64];
    char target[64]; /* "host:port" */
    char path[192];
    char client_ip[46];
    char request_id[40];
    char client_id[64];  /* the API client; "" = none */
    char error_type[32]; /* "" or e.g. "upstream_timeout" */
} trace_span_t;

typedef struct tracer tracer_t;

/* Starts the exporter thread. cfg->otlp_endpoint must be
 * "http://host[:port][/path]" (no path = /v1/traces; https:// is refused with
 * a message in err). n_workers rings of TRACE_RING_SPANS slots each. metrics
 * (may be NULL) receives drops (metrics_trace_dropped) and failed exports
 * (metrics_trace_export_failure); it must outlive the tracer. NULL with err
 * filled on failure. Main thread. */
tracer_t *tracer_new(const config_tracing_t *cfg, size_t n_workers, metrics_registry_t *metrics,
                     char *err, size_t errlen);
/* Stops the thread after one last export attempt bounded by
 * TRACE_EXPORT_TIMEOUT_MS (what is left is counted as dropped), frees all.
 * Workers must have stopped producing. NULL is a no-op. Main thread. */
void tracer_free(tracer_t *t);
/* Worker side, no locks, no syscalls, no malloc: a free slot of the worker's
 * ring, or NULL when the ring is full or worker is out of range (the span is
 * then counted as dropped; do not commit). Fill it, then commit. Single
 * producer per worker; reserve/commit strictly alternate. */
trace_span_t *tracer_reserve(tracer_t *t, size_t worker);
/* Publishes the slot the last tracer_reserve returned; a no-op without one. */
void tracer_commit(tracer_t *t, size_t worker);
/* Spans accepted by the collector (2xx) so far. Any thread. */
uint64_t tracer_exported(const tracer_t *t);

/* OTLP/HTTP JSON encoding of spans (exposed for unit tests): appends one
 * ExportTraceServiceRequest JSON document to out. Returns 0, or -1 when out is
 * too small (out->len is then as it was). */
int trace_encode_otlp_json(const trace_span_t *spans, size_t n, const char *service_name,
                           buf_t *out);

#endif
