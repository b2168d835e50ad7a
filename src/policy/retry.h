/* Retry and fallback rules, sans-I/O: does a failed try qualify, may this
 * request be sent again, how long to wait, and does the route's budget allow
 * one more retry in flight. proxy/decide.c asks; this answers. */
#ifndef FICUS_POLICY_RETRY_H
#define FICUS_POLICY_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef enum {
    RETRY_OUTCOME_NONE = 0, /* not how a try ends (a bad request, ...): never sent again */
    RETRY_OUTCOME_CONNECT_FAILURE,
    RETRY_OUTCOME_RESET,      /* closed or reset before a response, or an invalid response */
    RETRY_OUTCOME_TIMEOUT,    /* per-try timeout */
    RETRY_OUTCOME_STATUS,     /* a response with this status */
    RETRY_OUTCOME_UNAVAILABLE /* the group could not take it (no target, breaker): only a
                                 fallback may, the request reached no target */
} retry_outcome_t;

/* Does the outcome qualify for a retry under `r` (NULL: the route has no
 * retries block, and only a fallback can qualify: connect failure, reset,
 * per-try timeout or 5xx)? */
bool retry_qualifies(const config_retries_t *r, retry_outcome_t o, int status);

/* Does a response's gRPC status (a trailers-only answer; -1: none) qualify
 * under `r` (retry_on: cancelled, deadline-exceeded, resource-exhausted,
 * unavailable)? */
bool retry_qualifies_grpc(const config_retries_t *r, int grpc_status);

/* May a request be sent again after this outcome? Idempotent ones always; the
 * others with retry_non_idempotent, or after a connect failure (they never
 * reached the target). */
bool retry_resend_allowed(bool idempotent, bool retry_non_idempotent, retry_outcome_t o);

/* Full-jitter exponential backoff for retry number n (1 = first retry): a
 * uniform value in [0, min(base * 2^(n-1), 10 * base)]. rng: xorshift state. */
uint64_t retry_backoff_ms(uint64_t base_ms, uint32_t n, uint64_t *rng);

/* Budget: retries in flight may not exceed budget_percent of the route's
 * requests in flight, but RETRY_BUDGET_MIN_CONCURRENT always may (Envoy). */
bool retry_budget_allows(uint32_t retries_in_flight, uint32_t requests_in_flight,
                         uint32_t budget_percent);

#endif
