/* Aggregation routes (contract 8): the request is answered by ficus itself
 * with one JSON object made of several calls, all made at once.
 *
 * Each call is a sub-request (subrequest.h) from the head a backend would
 * have got (identity headers, X-Request-Id, the trace with a span per try,
 * its time left), retargeted to the call's path with `{user}` replaced by
 * the authenticated user's id, percent-encoded. A call gets the route's
 * retries (decide.h) within aggregate.timeout, which bounds everything. A
 * call with cache_ttl looks in the instance's cache first (policy/agg_cache:
 * single flight, so concurrent misses share one upstream call, across the
 * workers too); with aggregate_cache {scope: redis} in the fleet's
 * (policy/agg_store) before, with the per-instance cache serving when redis
 * cannot.
 *
 * The answer: 200 with {"call": body, ...}; a failed optional call is null
 * and named in "_errors" with X-Ficus-Partial: true; a failed required call
 * fails it all with 504 (timed out) or 502. The call bodies are written out
 * from where they were captured (or cached), not copied again. */
#ifndef FICUS_PROXY_AGGREGATE_H
#define FICUS_PROXY_AGGREGATE_H

#include "proxy/request.h"

typedef struct aggregation aggregation_t;

/* The route has `aggregate` and req->out holds the calls' base head (built
 * with rewrite's `calls`): the calls start; the request is answered when
 * they are all in, or at aggregate.timeout. */
void aggregate_start(request_t *req);
/* The client's connection took what was queued: more of the answer. */
void aggregate_drained(request_t *req);
/* request_release: the request lets go (answered, or the client went away):
 * calls still under way are abandoned; the memory goes once their timers
 * are closed. */
void aggregate_detach(request_t *req);

#endif
