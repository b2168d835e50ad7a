/* A request's place in a trace (contract 6.3): the caller's trace continued
 * (traceparent, or Datadog headers when that propagation is on) or a new one
 * started and sampled; the trace headers of the upstream head; one CLIENT
 * span per exchange (its span id patched into the already-built head) and
 * the SERVER span of the whole request, handed to the worker's tracer ring. */
#ifndef FICUS_PROXY_REQUEST_TRACE_H
#define FICUS_PROXY_REQUEST_TRACE_H

#include <stdbool.h>
#include <stdint.h>

#include "http/parser.h"
#include "proxy/proxy_worker.h"
#include "proxy/request.h"
#include "proxy/rewrite.h"

/* The request's trace from its head (with no exporter only an incoming
 * traceparent's id is kept, for the access log). */
void request_trace_begin(proxy_worker_t *pw, request_t *req, const http_head_t *h,
                         const config_tracing_t *tc);
/* The trace headers of the upstream head, before the first try's span. */
void request_trace_headers(const request_t *req, const config_tracing_t *tc, rewrite_trace_t *rt);
/* A new client span for the exchange, written into the head before it goes. */
void request_trace_try_begin(proxy_worker_t *pw, request_t *req, exchange_t *ex);
/* The exchange's span, ended now; metrics_code as ficus_upstream_requests_total counts it. */
void request_trace_try_end(proxy_worker_t *pw, const request_t *req, const exchange_t *ex,
                           int metrics_code, bool failure);
/* The server span: the whole request as the client saw it. */
void request_trace_end(proxy_worker_t *pw, const request_t *req, uint64_t end_us);

#endif
