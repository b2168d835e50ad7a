/* The one decision a request makes when a try ends, sans-I/O: what ended it
 * (a response head with its status, or an end reason) and where the request
 * stands go in; resend, retry, fall back, answer or cut comes out. The
 * request path (proxy.c) only carries the decision out. */
#ifndef FICUS_PROXY_DECIDE_H
#define FICUS_PROXY_DECIDE_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "proxy/end_reason.h"

/* A request re-sent on a fresh connection after a pooled one turned out to be
 * closed by the target: at most this many tries in all (besides retries). */
#define DECIDE_STALE_TRIES 3

typedef enum {
    DECIDE_ANSWER,   /* relay the response, or answer with the reason's error */
    DECIDE_RESEND,   /* the same group again now, on a fresh connection; not a retry */
    DECIDE_RETRY,    /* the same group again after the backoff */
    DECIDE_FALLBACK, /* the fallback group, now */
    DECIDE_CUT       /* a response byte reached the client: cut the connection */
} decision_t;

typedef struct decide_in {
    end_reason_t why; /* END_OK: a response head came with `status` */
    int status;
    int grpc_status;    /* the response head's grpc-status (trailers-only), -1: none */
    bool stale;         /* the try failed on a pooled connection the target had closed */
    bool resp_started;  /* a byte of the response reached the client */
    bool body_streamed; /* part of the body went upstream without a copy kept */
    bool stopping;      /* the worker is closing everything */
    bool idempotent;
    bool fallback_ready; /* a fallback backend, not used yet, its request target built */
    bool retry_counted;  /* the request already counts in the route's retries in flight */
    bool deadline_short; /* less than the route's deadline.min_remaining is left */
    const config_route_t *route;
    uint32_t attempts; /* tries made, the one that just ended included */
    uint32_t retries;  /* tries after the first so far */
    uint32_t route_retries_in_flight;
    uint32_t route_requests_in_flight;
} decide_in_t;

/* The decision for a try that ended as `in` says. */
decision_t decide(const decide_in_t *in);

#endif
