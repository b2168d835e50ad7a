/* One try to one target; see exchange.h. */
#include "proxy/exchange.h"

#include "core/errors.h"
#include "core/time.h"
#include "proxy/request_trace.h"

void exchange_init(exchange_t *ex, request_t *req, uv_loop_t *loop)
{
    ex->req = req;
    uv_timer_init(loop, &ex->timer);
    ex->timer.data = ex;
    exchange_reset(ex);
}

void exchange_reset(exchange_t *ex)
{
    ex->uc = NULL;
    ex->group = ex->target = UINT32_MAX;
    ex->out_sent = 0;
    ex->start_us = 0;
    ex->out = NULL;
    ex->out_shift = 0;
    ex->active = ex->counted = ex->holds_pending = ex->is_hedge = 0;
}

/* Marks the targets a try may go to in gs->eligible: usable ones not tried
 * yet; if every usable one was tried, any usable one; in panic mode (too few
 * healthy to trust the checks) every resolved one, untried first. Returns
 * how many are eligible. */
static size_t eligible_targets(uint64_t tried_mask, const config_target_group_t *tg,
                               proxy_group_state_t *gs, health_group_t *hg, uint64_t now)
{
    size_t usable = 0, fresh = 0;
    for (size_t i = 0; i < tg->n_targets; i++) {
        uint8_t u = health_target_usable(&hg->targets[i], now);
        bool tried = i < 64 && (tried_mask >> i) & 1;
        gs->eligible[i] = u && !tried;
        usable += u;
        fresh += gs->eligible[i];
    }
    if (health_group_panic(hg, usable)) {
        usable = fresh = 0;
        for (size_t i = 0; i < tg->n_targets; i++) {
            uint8_t u = atomic_load_explicit(&hg->targets[i].addr, memory_order_relaxed) != NULL;
            bool tried = i < 64 && (tried_mask >> i) & 1;
            gs->eligible[i] = u && !tried;
            usable += u;
            fresh += gs->eligible[i];
        }
        if (!fresh)
            for (size_t i = 0; i < tg->n_targets; i++)
                gs->eligible[i] =
                    atomic_load_explicit(&hg->targets[i].addr, memory_order_relaxed) != NULL;
    } else if (!fresh && usable) {
        for (size_t i = 0; i < tg->n_targets; i++)
            gs->eligible[i] = health_target_usable(&hg->targets[i], now);
    }
    return usable;
}

/* A breaker refused the try before it was made. */
static end_reason_t refused(proxy_worker_t *pw, exchange_t *ex, metrics_limit_t limit,
                            const char **message)
{
    static const char *const why[] = {
        [METRICS_LIMIT_MAX_CONNECTIONS] = "circuit breaker open: max_connections",
        [METRICS_LIMIT_MAX_PENDING] = "circuit breaker open: max_pending",
        [METRICS_LIMIT_MAX_REQUESTS] = "circuit breaker open: max_requests",
    };
    proxy_group_state_t *gs = &ex->req->gen->groups[ex->group];
    metrics_circuit_breaker_rejection(pw->metrics, gs->metrics_group, limit);
    if (ex->active) {
        exchange_end(pw, ex, 0, false, false);
        ex->req->attempts--; /* no try was made */
    }
    *message = why[limit];
    return END_CIRCUIT_OPEN;
}

end_reason_t exchange_start(proxy_worker_t *pw, exchange_t *ex, uint32_t group, uint64_t *tried,
                            const upstream_conn_ops_t *ops, uv_timer_cb on_timer,
                            const char **message)
{
    request_t *req = ex->req;
    proxy_gen_t *g = req->gen;
    if (ex->group != group) {
        ex->group = group;
        ex->target = UINT32_MAX; /* an index into another group's targets */
    }
    const config_target_group_t *tg = &g->cfg->target_groups[ex->group];
    proxy_group_state_t *gs = &g->groups[ex->group];
    health_group_t *hg = &g->health->groups[ex->group];
    size_t usable = eligible_targets(*tried, tg, gs, hg, uv_now(pw->loop));
    size_t t = usable ? balancer_pick_target(tg->balance, &gs->bal, gs->eligible, gs->inflight,
                                             tg->n_targets)
                      : SIZE_MAX;
    *message = NULL;
    if (t == SIZE_MAX)
        return END_NO_TARGET;
    if (!health_acquire(&hg->requests, tg->max_requests))
        return refused(pw, ex, METRICS_LIMIT_MAX_REQUESTS, message);
    ex->target = (uint32_t)t;
    if (t < 64)
        *tried |= 1ull << t;
    ex->active = 1;
    ex->counted = 0;
    ex->out_sent = 0;
    ex->start_us = time_now_us();
    ex->attempt = ++req->attempts;
    if (req->trace_export)
        request_trace_try_begin(pw, req, ex);
    gs->inflight[t]++;
    atomic_fetch_add_explicit(&hg->targets[t].inflight, 1, memory_order_relaxed);
    upstream_pool_t *pool = &gs->up.pools[t];
    if (!upstream_pool_ready(pool)) {
        /* A new connection: the request waits for it (max_pending). */
        if (!health_acquire(&hg->pending, tg->max_pending))
            return refused(pw, ex, METRICS_LIMIT_MAX_PENDING, message);
        ex->holds_pending = 1;
    }
    const config_route_t *r = req->route;
    if (r->has_retries && r->retries.per_try_timeout_ms)
        uv_timer_start(&ex->timer, on_timer, r->retries.per_try_timeout_ms, 0);
    int err;
    ex->uc = upstream_conn_acquire(pool, ops, ex, &err);
    if (!ex->uc)
        return err == FE_TOOBIG ? refused(pw, ex, METRICS_LIMIT_MAX_CONNECTIONS, message)
                                : END_UPSTREAM_CONNECT_FAILURE;
    return END_OK;
}

end_reason_t exchange_connect_failed(proxy_worker_t *pw, exchange_t *ex, int status,
                                     const char **message)
{
    *message = NULL;
    if (status == FE_TOOBIG)
        return refused(pw, ex, METRICS_LIMIT_MAX_CONNECTIONS, message);
    return END_UPSTREAM_CONNECT_FAILURE;
}

void exchange_end(proxy_worker_t *pw, exchange_t *ex, int try_code, bool reusable, bool failure)
{
    if (!ex->active)
        return;
    request_t *req = ex->req;
    ex->active = 0;
    uv_timer_stop(&ex->timer);
    if (req->trace_sampled)
        request_trace_try_end(pw, req, ex, try_code, failure);
    proxy_group_state_t *gs = &req->gen->groups[ex->group];
    health_group_t *hg = &req->gen->health->groups[ex->group];
    gs->inflight[ex->target]--;
    atomic_fetch_sub_explicit(&hg->targets[ex->target].inflight, 1, memory_order_relaxed);
    health_release(&hg->requests);
    if (ex->holds_pending) {
        ex->holds_pending = 0;
        health_release(&hg->pending);
    }
    /* One sample per try: a try whose status was counted at its head is not
     * counted again when its body turns out broken. */
    if (try_code && !ex->counted)
        metrics_upstream(pw->metrics, gs->metrics_group, gs->metrics_target[ex->target], try_code,
                         time_now_us() - ex->start_us);
    if (health_record(hg, ex->target, failure, uv_now(pw->loop)))
        metrics_outlier_ejection(pw->registry, gs->metrics_group, gs->metrics_target[ex->target]);
    if (ex->uc) {
        upstream_conn_t *uc = ex->uc;
        ex->uc = NULL;
        upstream_conn_release(uc, reusable);
    }
}
