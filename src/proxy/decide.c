/* What a request does after a try; see decide.h. The rules, in order:
 *   - nothing is sent again once a response byte reached the client, or
 *     while the worker stops;
 *   - a stale pooled connection: sent again on a fresh one (not a retry);
 *   - no retry or fallback starts with less than the route's
 *     deadline.min_remaining left (contract 10.3);
 *   - a group that could not take the request (no target, breaker) hands it
 *     to the fallback, whatever the method: it reached no target;
 *   - else retries and the canary fallback share the rules: the body was
 *     kept, the idempotency gate, retry_on (or, with no retries block,
 *     connect failure / reset / timeout / 5xx for a fallback), the number of
 *     tries, and the route's budget (which caps retries, not the fallback). */
#include "proxy/decide.h"

#include "policy/retry.h"

static bool may_try_again(const decide_in_t *in, retry_outcome_t o)
{
    const config_route_t *r = in->route;
    if (!r || in->body_streamed)
        return false;
    const config_retries_t *rt = r->has_retries ? &r->retries : NULL;
    bool fb = in->fallback_ready;
    if (!rt && !fb)
        return false;
    if (!retry_resend_allowed(in->idempotent, r->retry_non_idempotent, o))
        return false;
    if (!retry_qualifies(rt, o, in->status) &&
        !(o == RETRY_OUTCOME_STATUS && retry_qualifies_grpc(rt, in->grpc_status)))
        return false;
    /* A fallback is a retry pinned to the fallback group; it is always
     * allowed one try, even where retries are off (attempts: 0). */
    uint32_t allowed = rt ? rt->attempts : 0;
    if (fb && allowed == 0)
        allowed = 1;
    if (in->retries >= allowed)
        return false;
    /* The canary's failure must still reach the old system when many fail
     * at once: the budget is for retries alone. */
    if (!fb && rt && !in->retry_counted &&
        !retry_budget_allows(in->route_retries_in_flight, in->route_requests_in_flight,
                             rt->budget_percent))
        return false;
    return true;
}

decision_t decide(const decide_in_t *in)
{
    if (in->resp_started)
        return in->why == END_OK ? DECIDE_ANSWER : DECIDE_CUT;
    if (in->stopping)
        return DECIDE_ANSWER;
    retry_outcome_t o = in->why == END_OK ? RETRY_OUTCOME_STATUS : end_reasons[in->why].outcome;
    if (o == RETRY_OUTCOME_NONE)
        return DECIDE_ANSWER;
    if (in->stale && in->attempts < DECIDE_STALE_TRIES + in->retries)
        return DECIDE_RESEND;
    if (in->deadline_short)
        return DECIDE_ANSWER;
    if (o == RETRY_OUTCOME_UNAVAILABLE)
        return in->fallback_ready && !in->body_streamed ? DECIDE_FALLBACK : DECIDE_ANSWER;
    if (!may_try_again(in, o))
        return DECIDE_ANSWER;
    return in->fallback_ready ? DECIDE_FALLBACK : DECIDE_RETRY;
}
