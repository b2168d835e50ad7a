/* Shadow copies (contract 10.1): a share of a route's requests is sent a
 * second time, to the route's shadow group, once the client's body is
 * complete; the copy's answer never reaches the client. With `compare`, the
 * answer the client got is captured as it is relayed (up to max_body_size),
 * and when both are in, the two are diffed (policy/json_diff) off the
 * request path: in the worker for small bodies, in the thread pool for big
 * ones. A `noise` share also sends the request a second time to the old
 * system, so differences between two answers of the same system are learned
 * and not blamed on the new one.
 *
 * A copy is an exchange of its own (pools, breakers, outlier detection,
 * ficus_upstream_requests_total, a sibling span in the trace) driven by a
 * request of its own that lives past the client's: the client's request
 * hands over its captured answer and its access-log line, which is written
 * once the copy's result (match, mismatch, error) is known. Copies in
 * flight are bounded by shadow.max_in_flight per route; everything they
 * hold is freed when they end. */
#ifndef FICUS_PROXY_SHADOW_H
#define FICUS_PROXY_SHADOW_H

#include <stdbool.h>

#include "http/parser.h"
#include "observe/access_log.h"
#include "proxy/request.h"
#include "routing/router.h"

typedef struct shadow shadow_t;

/* After the upstream head was built: whether the request is copied (route,
 * method, percent by request id, max_in_flight); the copy's target is made
 * from the same match. */
void shadow_begin(request_t *req, const router_request_t *rr, const router_match_t *m);
/* The client's body is complete (or there was none): the copy goes, unless
 * the body was streamed (larger than retry_buffer_size): skipped. */
void shadow_send(request_t *req);

/* The answer the client gets, as it is relayed: its head, then its body
 * (framed: as ficus re-chunked it). */
void shadow_primary_head(request_t *req, const http_head_t *h);
void shadow_primary_body(request_t *req, const char *data, size_t len, bool framed);

/* request_log: the client's request is over. Returns the copy's result
 * name for the access log ("match", "mismatch", "error"; NULL when not
 * compared) when it is known now; otherwise the entry is kept by the copy
 * and written when its result is known, and *deferred is set. */
const char *shadow_request_done(request_t *req, const access_log_entry_t *e, bool *deferred);
/* request_release: the request lets go of its copy (which goes on). */
void shadow_detach(request_t *req);

/* Worker stop: copies in flight are abandoned (their log lines written). */
void shadow_worker_stop(proxy_worker_t *pw);

#endif
