/* A request's own lifetime and its record; see request.h. */
#include "proxy/request.h"

#include <string.h>

#include "core/hash.h"
#include "core/rand.h"
#include "core/time.h"
#include "policy/reload_judge.h"
#include "proxy/admission.h"
#include "proxy/exchange.h"
#include "proxy/proxy_worker.h"
#include "proxy/request_trace.h"
#include "proxy/aggregate.h"
#include "proxy/shadow.h"

void request_new_id(request_t *req)
{
    proxy_worker_t *pw = req->pw;
    static const char hex[] = "0123456789abcdef";
    uint64_t a = rand_next(&pw->rng), b = ++pw->request_seq ^ rand_next(&pw->rng);
    for (int i = 0; i < 16; i++) {
        req->request_id[i] = hex[(a >> (i * 4)) & 15];
        req->request_id[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    req->request_id[32] = '\0';
    req->request_id_len = 32;
}

void request_bind(request_t *req, proxy_gen_t *gen) { req->gen = proxy_gen_ref(gen); }

void request_choose_gen(request_t *req)
{
    proxy_worker_t *pw = req->pw;
    if (!pw->canary || hash_bytes(req->request_id, req->request_id_len) % 100 >= pw->canary_percent)
        return;
    request_unbind(req);
    request_bind(req, pw->canary);
}

void request_unbind(request_t *req)
{
    if (!req->gen)
        return;
    proxy_gen_t *g = req->gen;
    req->gen = NULL;
    proxy_gen_unref(g);
}

void request_reset(request_t *req)
{
    request_unbind(req);
    memset(req, 0, offsetof(request_t, request_id));
    req->group = UINT32_MAX;
    req->client = UINT32_MAX;
    req->upstream_us = -1;
    req->start_us = time_now_us();
    req->start_unix_ns = time_now_realtime_ns();
    exchange_reset(&req->slots[0]);
    exchange_reset(&req->slots[1]);
    req->ex = &req->slots[0];
    req->race = NULL;
    request_bind(req, req->pw->gen);
}

void request_release(request_t *req)
{
    pbuf_pool_t *pool = &req->pw->w->pool;
    if (req->phase == REQ_ADMISSION && req->pw->steps[req->admitted].cancel)
        req->pw->steps[req->admitted].cancel(req);
    proxy_worker_wait_remove(req);
    admission_release(req);
    shadow_detach(req);
    aggregate_detach(req);
    for (size_t i = 0; i < 2; i++) { /* a hedge's copy of the head */
        pbuf_put(pool, req->slots[i].out);
        req->slots[i].out = NULL;
    }
    pbuf_put(pool, req->out);
    pbuf_put(pool, req->alt);
    pbuf_put(pool, req->held);
    pbuf_put(pool, req->ident);
    pbuf_put(pool, req->trailers);
    req->out = req->alt = req->held = req->ident = req->trailers = NULL;
}

void request_over(request_t *req)
{
    request_release(req);
    req->phase = REQ_DONE;
    request_unbind(req);
    client_conn_response_done(req->cc);
}

/* What the migration figures learn from a request that reached a group
 * (contract 10.2, 10.6): a failure the fallback hid from the client, the
 * board's counts for the group that answered, and the route's rollout
 * evidence — a canary try (failed when the client got a 5xx or nothing, or
 * when the fallback answered for it) or a primary one, with its latency (the
 * upstream's answer; for a failure, or a canary its hedge outran, the whole
 * request). A client that left before any answer says nothing to the
 * rollout. now_us is the request's end, on the monotonic clock the rollouts
 * and the board use. */
static void request_migration(request_t *req, uint64_t now_us, uint64_t dur_us)
{
    const config_backend_t *b = req->backend;
    if (!b || !req->attempts)
        return;
    proxy_gen_t *g = req->gen;
    const config_route_t *r = req->route;
    uint64_t now_ms = now_us / 1000;
    bool answered = req->end == END_OK && req->status && req->status < 500;
    /* A canary outrun by its hedge to the fallback was slow, not failed:
     * its latency (at least the request's) is the evidence. */
    bool outrun = req->fallback && req->hedge_won;
    bool masked = req->fallback && answered && !outrun;
    if (masked)
        metrics_canary_masked(req->pw->metrics, g->metrics_route[r->index],
                              g->groups[b->target_group].metrics_group);
    board_route_t *br = g->board_routes ? g->board_routes[r->index] : NULL;
    if (br && req->group != UINT32_MAX)
        board_record(br, (unsigned)req->pw->w->index, now_ms, g->board_groups[r->index][req->group],
                     req->status, req->fallback,
                     masked ? g->board_groups[r->index][b->target_group] : BOARD_NO_GROUP, dur_us);
    rollout_t *ro = g->rollouts ? g->rollouts[r->index] : NULL;
    if (!ro || (req->end == END_CLIENT_CLOSED && !req->upstream_status))
        return;
    bool ok = answered && (!req->fallback || outrun);
    uint64_t lat = ok && !outrun && req->upstream_us >= 0 ? (uint64_t)req->upstream_us : dur_us;
    if (b->target_group == r->rollout.canary)
        rollout_record_canary(ro, now_ms, ok, masked, lat);
    else
        rollout_record_primary(ro, now_ms, lat);
}

void request_log(request_t *req)
{
    client_conn_t *cc = req->cc;
    proxy_worker_t *pw = req->pw;
    uint64_t end_us = time_now_us();
    uint64_t dur = end_us - req->start_us;
    const config_route_t *r = req->route;
    uv_timer_stop(&req->ex->timer);
    uv_timer_stop(&req->hedge_timer);
    proxy_gen_t *g = req->gen;
    if (req->hedged == HEDGE_SENT)
        metrics_hedge(pw->metrics, g->metrics_route[r->index],
                      req->hedge_won ? METRICS_HEDGE_WON : METRICS_HEDGE_LOST);
    if (r) {
        g->route_inflight[r->index]--;
        metrics_route_in_flight(pw->metrics, g->metrics_route[r->index], -1);
        if (req->retry_counted)
            g->route_retries[r->index]--;
        req->retry_counted = 0;
    }
    metrics_request(pw->metrics, r ? g->metrics_route[r->index] : METRICS_NO_ROUTE, req->status,
                    dur);
    if (g->figures)
        reload_figures_record(g->figures, (unsigned)pw->w->index, req->status, dur);
    request_migration(req, end_us, dur);
    if (req->trace_sampled)
        request_trace_end(pw, req, req->start_us + dur);
    if (!pw->alog) {
        bool deferred;
        shadow_request_done(req, NULL, &deferred);
        return;
    }
    const config_target_group_t *tg =
        req->group != UINT32_MAX ? &g->cfg->target_groups[req->group] : NULL;
    uint32_t ti = request_target(req);
    const config_target_t *t = tg && ti != UINT32_MAX ? &tg->targets[ti] : NULL;
    char trace_hex_id[32];
    if (req->has_trace)
        trace_hex(trace_hex_id, req->trace_id, sizeof req->trace_id);
#define S(p, n) ((access_log_str_t){(p), (n)})
#define SZ(p) ((p) ? S((p), strlen(p)) : S(NULL, 0))
    access_log_entry_t e = {
        .time_ms = req->start_unix_ns / 1000000,
        .request_id = S(req->request_id, req->request_id_len),
        .trace_id = req->has_trace ? S(trace_hex_id, sizeof trace_hex_id) : S(NULL, 0),
        .client_ip = req->has_head && req->client_ip_len ? S(req->client_ip, req->client_ip_len)
                                                         : S(cc->client_ip, cc->client_ip_len),
        .client_id = req->client != UINT32_MAX ? SZ(g->cfg->clients[req->client].id) : S(NULL, 0),
        .method = req->has_head ? S(req->method, req->method_len) : S(NULL, 0),
        .path = req->has_head ? S(req->path, req->path_len) : S(NULL, 0),
        .route = r ? SZ(r->name) : S(NULL, 0),
        .target_group = tg ? SZ(tg->name) : S(NULL, 0),
        .target = t ? SZ(t->name) : S(NULL, 0),
        .status = req->status,
        .upstream_status = req->upstream_status,
        .attempts = req->attempts,
        .fallback = req->fallback,
        .duration_us = dur,
        .upstream_us = req->upstream_us,
        .bytes_in = cc->bytes_in,
        .bytes_out = cc->bytes_out,
        .user_agent = req->has_user_agent ? S(req->user_agent, req->user_agent_len) : S(NULL, 0),
        .error = end_reason_name(req->end),
        .upstream_path =
            req->upstream_path_len ? S(req->upstream_path, req->upstream_path_len) : S(NULL, 0),
        .protocol = !req->has_head       ? S(NULL, 0)
                    : req->cc->http2     ? S("HTTP/2", 6)
                    : req->client_http10 ? S("HTTP/1.0", 8)
                                         : S("HTTP/1.1", 8),
        .config = g->id,
    };
#undef S
#undef SZ
    bool deferred = false;
    e.shadow = shadow_request_done(req, &e, &deferred);
    if (!deferred) /* else written with the shadow copy's result */
        access_log_append(pw->alog, &e);
}
