/* An exchange: one try of a request to one target of a group. Starting one
 * picks a target (healthy, not tried yet where possible, panic mode spreads
 * over all), takes the group's breaker units (max_requests, max_pending while
 * it waits for a new connection; the connection holds max_connections) and
 * an upstream connection; ending one counts it (metrics, span, outlier
 * detection), gives the units back and lets the connection go. What to do
 * next is not the exchange's business: decide() says. */
#ifndef FICUS_PROXY_EXCHANGE_H
#define FICUS_PROXY_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "proxy/proxy_worker.h"
#include "proxy/request.h"

/* Per connection: the exchange's timer on loop. */
void exchange_init(exchange_t *ex, request_t *req, uv_loop_t *loop);
/* Per request: no try yet. */
void exchange_reset(exchange_t *ex);

/* Starts a try of req to group (the request's, or the fallback's for a
 * hedge), preferring targets not in *tried (and marking the one picked):
 * END_OK when under way (ex->uc set;
 * ops->on_connected follows, at once if the connection is pooled), else why
 * not (END_NO_TARGET, END_CIRCUIT_OPEN with *message naming the limit,
 * END_UPSTREAM_CONNECT_FAILURE with the try counted and to be ended).
 * on_timer fires after the route's per_try_timeout. */
end_reason_t exchange_start(proxy_worker_t *pw, exchange_t *ex, uint32_t group, uint64_t *tried,
                            const upstream_conn_ops_t *ops, uv_timer_cb on_timer,
                            const char **message);
/* A connection the try waited for failed (status < 0): END_CIRCUIT_OPEN
 * with *message when the max_connections breaker refused it (an HTTP/2
 * stream the first connection could not take, with no room for another:
 * the try is ended and not counted), else END_UPSTREAM_CONNECT_FAILURE. */
end_reason_t exchange_connect_failed(proxy_worker_t *pw, exchange_t *ex, int status,
                                     const char **message);
/* Ends the try under way (no-op if none): try_code as
 * ficus_upstream_requests_total counts it (0: counted at its head already,
 * or not a try), the connection back to its pool when reusable, failure for
 * outlier detection. */
void exchange_end(proxy_worker_t *pw, exchange_t *ex, int try_code, bool reusable, bool failure);

#endif
