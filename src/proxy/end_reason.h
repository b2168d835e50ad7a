/* Why a request, or one try of it, ended: one row per reason, named once.
 * A row gives the access log's `error` field and the span's error type (its
 * name), the status and JSON error code of ficus's own answer with a default
 * message, and, for the ways a try can fail, the code it is counted under in
 * ficus_upstream_requests_total and the outcome the retry rules judge. */
#ifndef FICUS_PROXY_END_REASON_H
#define FICUS_PROXY_END_REASON_H

#include "observe/metrics.h"
#include "policy/retry.h"

/* X(ID, name, status, code, message, try_code, outcome)
 *   name:     access log `error`, span error.type; NULL for END_OK
 *   status:   what the client is answered (0: not an answer of ficus's own)
 *   code:     the JSON body's "error"
 *   try_code: a try that failed this way counts under this code (0: none)
 *   outcome:  what the retry rules see (RETRY_OUTCOME_NONE: not a try's end) */
#define END_REASONS(X)                                                                             \
    X(OK, NULL, 0, NULL, NULL, 0, RETRY_OUTCOME_NONE)                                              \
    X(BAD_REQUEST, "bad_request", 400, "bad_request", "bad request", 0, RETRY_OUTCOME_NONE)        \
    X(NOT_IMPLEMENTED, "not_implemented", 501, "not_implemented", "not implemented", 0,            \
      RETRY_OUTCOME_NONE)                                                                          \
    X(VERSION_NOT_SUPPORTED, "http_version_not_supported", 505, "http_version_not_supported",      \
      "HTTP/2 is not enabled on this listener: use HTTP/1.1", 0, RETRY_OUTCOME_NONE)               \
    X(NO_ROUTE, "no_route", 404, "no_route", "no route matches the request", 0,                    \
      RETRY_OUTCOME_NONE)                                                                          \
    X(FORBIDDEN, "forbidden", 403, "forbidden", "client address not allowed on this route", 0,     \
      RETRY_OUTCOME_NONE)                                                                          \
    X(UNAUTHORIZED, "unauthorized", 401, "unauthorized", "missing or invalid credentials", 0,      \
      RETRY_OUTCOME_NONE)                                                                          \
    X(CLIENT_FORBIDDEN, "client_forbidden", 403, "forbidden",                                      \
      "this client may not use this route", 0, RETRY_OUTCOME_NONE)                                 \
    X(THROTTLED, "throttled", 429, "too_many_requests",                                            \
      "too many requests in flight for this client", 0, RETRY_OUTCOME_NONE)                        \
    X(RATE_LIMITED, "rate_limited", 429, "too_many_requests", "rate limit exceeded", 0,            \
      RETRY_OUTCOME_NONE)                                                                          \
    X(ADMISSION_TIMEOUT, "admission_timeout", 504, "gateway_timeout",                              \
      "timed out waiting for authentication or a limit", 0, RETRY_OUTCOME_NONE)                    \
    X(AUTH_UNAVAILABLE, "auth_unavailable", 503, "auth_unavailable",                               \
      "the session service is unavailable", 0, RETRY_OUTCOME_NONE)                                 \
    X(BODY_TOO_LARGE, "body_too_large", 413, "body_too_large", "request body too large", 0,        \
      RETRY_OUTCOME_NONE)                                                                          \
    X(HEADER_TOO_LARGE, "header_too_large", 431, "header_too_large", "request head too large", 0,  \
      RETRY_OUTCOME_NONE)                                                                          \
    X(URI_TOO_LONG, "uri_too_long", 414, "uri_too_long", "rewritten request target too long", 0,   \
      RETRY_OUTCOME_NONE)                                                                          \
    X(HEADER_TIMEOUT, "header_timeout", 408, "request_timeout",                                    \
      "request head not received in time", 0, RETRY_OUTCOME_NONE)                                  \
    X(BODY_TIMEOUT, "body_timeout", 408, "request_timeout", "request body not received in time",   \
      0, RETRY_OUTCOME_NONE)                                                                       \
    X(CLIENT_CLOSED, "client_closed", 499, NULL, NULL, 0, RETRY_OUTCOME_NONE)                      \
    X(UPSTREAM_CONNECT_FAILURE, "upstream_connect_failure", 502, "bad_gateway",                    \
      "upstream connect failure", METRICS_UPSTREAM_CONNECT_ERROR, RETRY_OUTCOME_CONNECT_FAILURE)   \
    X(UPSTREAM_TIMEOUT, "upstream_timeout", 504, "gateway_timeout", "upstream timeout",            \
      METRICS_UPSTREAM_TIMEOUT, RETRY_OUTCOME_TIMEOUT)                                             \
    X(UPSTREAM_RESET, "upstream_reset", 502, "bad_gateway",                                        \
      "upstream closed the connection before responding", METRICS_UPSTREAM_RESET,                  \
      RETRY_OUTCOME_RESET)                                                                         \
    X(UPSTREAM_INVALID, "upstream_invalid_response", 502, "bad_gateway",                           \
      "invalid upstream response", 502, RETRY_OUTCOME_RESET)                                       \
    X(NO_TARGET, "no_healthy_target", 503, "no_healthy_target", "no healthy target", 0,            \
      RETRY_OUTCOME_UNAVAILABLE)                                                                   \
    X(CIRCUIT_OPEN, "circuit_open", 503, "circuit_open", "circuit breaker open", 0,                \
      RETRY_OUTCOME_UNAVAILABLE)                                                                   \
    X(CALL_FAILED, "call_failed", 502, "bad_gateway", "a required call failed", 0,                 \
      RETRY_OUTCOME_NONE)                                                                          \
    X(METHOD_NOT_ALLOWED, "method_not_allowed", 405, "method_not_allowed",                         \
      "an aggregation route answers GET and HEAD", 0, RETRY_OUTCOME_NONE)                          \
    X(INTERNAL, "internal_error", 500, "internal_error", "out of memory", 0, RETRY_OUTCOME_NONE)   \
    X(TUNNEL_IDLE, "tunnel_idle_timeout", 0, NULL, NULL, 0, RETRY_OUTCOME_NONE)

typedef enum {
#define END_REASON_ENUM(id, ...) END_##id,
    END_REASONS(END_REASON_ENUM)
#undef END_REASON_ENUM
        END_REASON_COUNT
} end_reason_t;

typedef struct end_reason_info {
    const char *name;
    int status;
    const char *code;
    const char *message;
    int try_code;
    retry_outcome_t outcome;
} end_reason_info_t;

extern const end_reason_info_t end_reasons[END_REASON_COUNT];

/* "upstream_timeout"; NULL for END_OK. */
static inline const char *end_reason_name(end_reason_t r) { return end_reasons[r].name; }

#endif
