/* A worker's proxy state: the generation built from each config snapshot
 * (per-route balancer state, per-group target state and connection pools,
 * metric slots), and what outlives generations (the access-log writer,
 * scratch buffers, the random state). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/time.h"
#include "policy/agg_store.h"
#include "policy/hedge.h"
#include "proxy/proxy.h"
#include "proxy/proxy_worker.h"
#include "proxy/shadow.h"
#include "proxy/user_auth.h"

static void gen_free(proxy_gen_t *g)
{
    const config_t *cfg = g->cfg;
    for (size_t i = 0; g->swrr && i < cfg->n_routes; i++)
        free(g->swrr[i]);
    for (size_t i = 0; g->weights && i < cfg->n_routes; i++)
        free(g->weights[i]);
    for (size_t i = 0; g->hedges && i < cfg->n_routes; i++)
        hedge_free(g->hedges[i]);
    free(g->hedges);
    for (size_t i = 0; g->groups && i < cfg->n_target_groups; i++) {
        free(g->groups[i].inflight);
        free(g->groups[i].eligible);
        upstream_group_deinit(&g->groups[i].up);
        free(g->groups[i].metrics_target);
    }
    free(g->swrr);
    free(g->weights);
    free(g->metrics_route);
    free(g->weights_version);
    free(g->route_inflight);
    free(g->route_retries);
    free(g->groups);
    free(g->identity);
    free(g->route_key);
    free(g->metrics_client);
    config_unref(g->cfg);
    free(g);
}

/* An upstream connection keeps its generation (its pools live there). */
static void gen_hold(void *ctx, int delta)
{
    proxy_gen_t *g = ctx;
    if (delta > 0)
        g->refs++;
    else
        proxy_gen_unref(g);
}

/* The headers of cfg a client must not send (rewrite_request_t.drop):
 * each provider's forwarded-claim headers once, then Authorization and the
 * session header, which only requests given a bearer token by ficus drop. */
static int identity_headers(proxy_gen_t *g, const config_t *cfg)
{
    size_t n = 2;
    for (size_t i = 0; i < cfg->n_jwt_providers; i++)
        n += cfg->jwt_providers[i].n_forward_claims;
    g->identity = calloc(n, sizeof *g->identity);
    if (!g->identity)
        return FE_NOMEM;
    for (size_t i = 0; i < cfg->n_jwt_providers; i++) {
        const config_jwt_provider_t *jp = &cfg->jwt_providers[i];
        for (size_t c = 0; c < jp->n_forward_claims; c++) {
            const char *h = jp->forward_claims[c].header_lc;
            bool seen = false;
            for (size_t j = 0; j < g->n_identity && !seen; j++)
                seen = strcmp(g->identity[j].name, h) == 0;
            if (!seen)
                g->identity[g->n_identity++] = (rewrite_name_t){h, strlen(h)};
        }
    }
    g->n_identity_session = g->n_identity;
    g->identity[g->n_identity_session++] = (rewrite_name_t){"authorization", 13};
    if (cfg->has_session_exchange && cfg->session_exchange.header)
        g->identity[g->n_identity_session++] =
            (rewrite_name_t){cfg->session_exchange.header, strlen(cfg->session_exchange.header)};
    return 0;
}

proxy_gen_t *proxy_gen_new(const proxy_shared_t *sh, size_t index)
{
    proxy_gen_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    config_t *cfg = sh->cfg;
    size_t nr = cfg->n_routes ? cfg->n_routes : 1;
    g->cfg = config_ref(cfg);
    g->id = sh->id;
    g->figures = sh->figures;
    g->sets = sh->sets;
    g->health = sh->health;
    g->shared_weights = sh->weights;
    g->on_free = sh->gen_freed;
    g->free_ctx = sh->gen_ctx;
    g->swrr = calloc(nr, sizeof *g->swrr);
    g->weights = calloc(nr, sizeof *g->weights);
    g->metrics_route = calloc(nr, sizeof *g->metrics_route);
    g->weights_version = calloc(nr, sizeof *g->weights_version);
    g->route_inflight = calloc(nr, sizeof *g->route_inflight);
    g->route_retries = calloc(nr, sizeof *g->route_retries);
    g->hedges = calloc(nr, sizeof *g->hedges);
    g->groups = calloc(cfg->n_target_groups ? cfg->n_target_groups : 1, sizeof *g->groups);
    g->api_keys = sh->api_keys;
    g->client_inflight = sh->client_inflight;
    g->rates = sh->rates;
    g->sessions = sh->sessions;
    g->jwks = sh->jwks;
    g->shadow_inflight = sh->shadow_inflight;
    g->agg_cache = sh->agg_cache;
    g->listener_tls = sh->listener_tls;
    g->diff_specs = sh->diff_specs;
    g->shadow_routes = sh->shadow_routes;
    g->board_routes = sh->board_routes;
    g->board_groups = sh->board_groups;
    g->rollouts = sh->rollouts;
    g->route_key = calloc(nr, sizeof *g->route_key);
    g->metrics_client = calloc(cfg->n_clients ? cfg->n_clients : 1, sizeof *g->metrics_client);
    if (!g->swrr || !g->weights || !g->metrics_route || !g->groups || !g->weights_version ||
        !g->route_inflight || !g->route_retries || !g->hedges || !g->metrics_client ||
        !g->route_key || identity_headers(g, cfg) != 0)
        goto fail;
    for (size_t i = 0; i < cfg->n_clients; i++)
        g->metrics_client[i] = metrics_client_slot(sh->metrics, cfg->clients[i].id);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const config_route_t *r = &cfg->routes[i];
        g->swrr[i] = calloc(r->n_backends ? r->n_backends : 1, sizeof **g->swrr);
        g->weights[i] = calloc(r->n_backends ? r->n_backends : 1, sizeof **g->weights);
        if (r->has_retries && r->retries.has_hedge)
            g->hedges[i] = hedge_new(&r->retries.hedge, r->n_backends);
        if (!g->swrr[i] || !g->weights[i] ||
            (r->has_retries && r->retries.has_hedge && !g->hedges[i]))
            goto fail;
        weights_load(sh->weights, i, g->weights[i]);
        g->weights_version[i] = weights_version(sh->weights, i);
        g->metrics_route[i] = metrics_route_slot(sh->metrics, r->name);
        g->route_key[i] = hash_bytes(r->name, strlen(r->name));
    }
    uint64_t rng = rand_seed(index);
    for (size_t i = 0; i < cfg->n_target_groups; i++) {
        const config_target_group_t *tg = &cfg->target_groups[i];
        proxy_group_state_t *gs = &g->groups[i];
        size_t n = tg->n_targets ? tg->n_targets : 1;
        gs->inflight = calloc(n, sizeof *gs->inflight);
        gs->eligible = calloc(n, sizeof *gs->eligible);
        gs->metrics_target = calloc(n, sizeof *gs->metrics_target);
        if (!gs->inflight || !gs->eligible || !gs->metrics_target ||
            upstream_group_init(&gs->up, NULL, tg, &sh->health->groups[i], gen_hold, g) != 0)
            goto fail;
        gs->up.tls = sh->target_tls ? sh->target_tls[i] : NULL;
        gs->bal.rng = rand_next(&rng) | 1;
        gs->bal.rr_cursor = (uint32_t)(index % n);
        gs->metrics_group = metrics_group_slot(sh->metrics, tg->name);
        for (size_t t = 0; t < tg->n_targets; t++)
            gs->metrics_target[t] = metrics_target_slot(sh->metrics, tg->name, tg->targets[t].name);
    }
    return g;
fail:
    gen_free(g);
    return NULL;
}

void proxy_gen_discard(proxy_gen_t *gen)
{
    if (gen)
        gen_free(gen);
}

void proxy_gen_unref(proxy_gen_t *g)
{
    if (--g->refs)
        return;
    void (*done)(void *) = g->on_free;
    void *ctx = g->free_ctx;
    gen_free(g);
    if (done)
        done(ctx);
}

/* The generation's pools on this worker's connections. */
/* The worker's redis member follows the configuration's redis.address: made
 * when one is set, replaced when it changes (counts held through the old one
 * expire with its lease), closed when it goes. */
static void fleet_follow(proxy_worker_t *pw, const config_t *cfg)
{
    const char *want = cfg->redis_address;
    if (pw->fleet_address && want && strcmp(pw->fleet_address, want) == 0)
        return;
    fleet_close(pw->fleet);
    free(pw->fleet_address);
    pw->fleet = NULL;
    pw->fleet_address = NULL;
    if (!want)
        return;
    char host[128] = "ficus", member[256];
    gethostname(host, sizeof host - 1);
    /* Unique per worker and per connection made: a member's heartbeat
     * rewrites its counts, so a new member must not take an old one's name. */
    snprintf(member, sizeof member, "%s:%ld:%llu:%zu:%u", host, (long)getpid(),
             (unsigned long long)pw->started_ms, pw->w->index, ++pw->fleet_made);
    fleet_opts_t o = {.address = want, .member = member, .timeout_ms = cfg->redis_timeout_ms};
    pw->fleet = fleet_new(pw->loop, &o);
    if (pw->fleet)
        pw->fleet_address = strdup(want);
    if (!pw->fleet || !pw->fleet_address)
        log_limited(LOG_ERROR, "redis %s: cannot set up the connection (global limits fail open)",
                    want);
}

/* The aggregation cache's store follows aggregate_cache.scope and
 * redis.address: made when the scope is redis, replaced when the address
 * changes, closed when it goes (lookups in flight end as failed). */
static void agg_store_follow(proxy_worker_t *pw, const config_t *cfg)
{
    const char *want = cfg->aggregate_cache_scope == SCOPE_GLOBAL ? cfg->redis_address : NULL;
    if (pw->agg_store_address && want && strcmp(pw->agg_store_address, want) == 0)
        return;
    agg_store_close(pw->agg_store);
    free(pw->agg_store_address);
    pw->agg_store = NULL;
    pw->agg_store_address = NULL;
    if (!want)
        return;
    pw->agg_store = agg_store_new(pw->loop, want, cfg->redis_timeout_ms);
    if (pw->agg_store)
        pw->agg_store_address = strdup(want);
    if (!pw->agg_store || !pw->agg_store_address)
        log_limited(LOG_ERROR,
                    "redis %s: cannot set up the aggregation cache's connection (the instance's "
                    "cache serves)",
                    want);
}

static void gen_attach(proxy_worker_t *pw, proxy_gen_t *g)
{
    for (size_t i = 0; i < g->cfg->n_target_groups; i++)
        g->groups[i].up.env = &pw->upstreams;
    pw->clients.server = &g->cfg->server;
    if (!pw->stopping) {
        fleet_follow(pw, g->cfg);
        agg_store_follow(pw, g->cfg);
    }
}

/* A generation no new request gets: its idle connections close, the rest
 * are not pooled again; it goes with its last request. */
static void gen_retire(proxy_gen_t *old)
{
    if (!old)
        return;
    for (size_t i = 0; i < old->cfg->n_target_groups; i++)
        upstream_group_retire(&old->groups[i].up);
    proxy_gen_unref(old);
}

void proxy_worker_install(proxy_worker_t *pw, proxy_gen_t *gen)
{
    proxy_gen_t *old = pw->gen;
    pw->gen = gen;
    gen_attach(pw, gen);
    gen_retire(old);
}

void proxy_worker_trial(proxy_worker_t *pw, proxy_gen_t *gen, uint32_t percent)
{
    proxy_gen_t *old = pw->canary;
    pw->canary = gen;
    pw->canary_percent = gen ? percent : 0;
    if (gen) /* its pools on this worker; the listener settings stay the current one's */
        for (size_t i = 0; i < gen->cfg->n_target_groups; i++)
            gen->groups[i].up.env = &pw->upstreams;
    gen_retire(old);
}

void proxy_worker_promote(proxy_worker_t *pw)
{
    proxy_gen_t *gen = pw->canary;
    if (!gen)
        return;
    pw->canary = NULL;
    pw->canary_percent = 0;
    proxy_worker_install(pw, gen);
}

static void on_clients_drained(void *ctx)
{
    proxy_worker_t *pw = ctx;
    void (*done)(void *) = pw->on_drained;
    pw->on_drained = NULL; /* once */
    if (done)
        done(pw->drained_ctx);
}

static void on_log_flush(uv_timer_t *t)
{
    proxy_worker_t *pw = t->data;
    access_log_writer_flush(pw->alog);
}

void proxy_worker_wait_add(proxy_worker_t *pw, request_t *req)
{
    if (req->wait_pprev)
        return;
    req->wait_next = pw->waiting;
    if (pw->waiting)
        pw->waiting->wait_pprev = &req->wait_next;
    req->wait_pprev = &pw->waiting;
    pw->waiting = req;
}

void proxy_worker_wait_remove(request_t *req)
{
    if (!req->wait_pprev)
        return;
    *req->wait_pprev = req->wait_next;
    if (req->wait_next)
        req->wait_next->wait_pprev = req->wait_pprev;
    req->wait_next = NULL;
    req->wait_pprev = NULL;
}

/* In the worker: every waiting request runs its step again. The list is
 * taken whole first: a request that waits on joins the new one. */
static void on_wake(uv_async_t *a)
{
    proxy_worker_t *pw = a->data;
    request_t *list = pw->waiting;
    pw->waiting = NULL;
    if (list)
        list->wait_pprev = &list;
    while (list) {
        request_t *req = list;
        proxy_worker_wait_remove(req);
        proxy_request_resume(req);
    }
}

void proxy_worker_wake(proxy_worker_t *pw)
{
    uv_mutex_lock(&pw->wake_lock);
    if (!pw->wake_closed)
        uv_async_send(&pw->wake); /* sends while one is pending are one */
    uv_mutex_unlock(&pw->wake_lock);
}

static void close_wake(proxy_worker_t *pw)
{
    uv_mutex_lock(&pw->wake_lock);
    bool was = pw->wake_closed;
    pw->wake_closed = true;
    uv_mutex_unlock(&pw->wake_lock);
    if (!was && !uv_is_closing((uv_handle_t *)&pw->wake))
        uv_close((uv_handle_t *)&pw->wake, NULL);
}

proxy_worker_t *proxy_worker_new(worker_t *w, metrics_registry_t *metrics, access_log_t *access_log,
                                 proxy_gen_t *gen)
{
    proxy_worker_t *pw = calloc(1, sizeof *pw);
    if (!pw)
        return NULL;
    pw->w = w;
    pw->loop = &w->loop;
    pw->gen = gen;
    gen->refs = 1;
    pw->upstreams = (upstream_env_t){.loop = pw->loop, .pool = &w->pool, .rbuf = w->rbuf};
    pw->clients = (client_conn_env_t){
        .loop = pw->loop,
        .pool = &w->pool,
        .rbuf = w->rbuf,
        .head = &pw->head,
        .on_drained = on_clients_drained,
        .drained_ctx = pw,
    };
    pw->started_ms = time_now_realtime_ms();
    gen_attach(pw, gen);
    pw->md = router_match_data_new();
    pw->registry = metrics;
    pw->metrics = metrics_worker_get(metrics, w->index);
    /* Room for a response head and a read's worth of re-framed chunks. */
    pw->scratch_bytes = 2 * (w->pool.buf_bytes > IO_BUF_BYTES ? w->pool.buf_bytes : IO_BUF_BYTES) +
                        CHUNKED_OUT_SLACK;
    pw->scratch = malloc(pw->scratch_bytes);
    pw->clients.scratch = pw->scratch;
    pw->clients.scratch_bytes = pw->scratch_bytes;
    pw->rng = rand_seed(w->index);
    pw->steps = admission_steps;
    pw->n_steps = admission_n_steps;
    if (!pw->md || !pw->scratch || api_key_hasher_init(&pw->hasher) != 0 ||
        uv_mutex_init(&pw->wake_lock) != 0)
        goto fail;
    pw->wake_lock_ready = true;
    if (uv_async_init(pw->loop, &pw->wake, on_wake) != 0) {
        pw->wake_closed = true;
        goto fail;
    }
    pw->wake.data = pw;
    uv_unref((uv_handle_t *)&pw->wake); /* it keeps no loop alive */
    h2_server_env_init(&pw->h2, pw->loop);
    if (user_auth_worker_init(pw) != 0)
        goto fail;
    if (access_log) {
        pw->alog = access_log_writer_new(access_log);
        if (!pw->alog)
            goto fail;
        uv_timer_init(pw->loop, &pw->log_flush);
        pw->log_flush.data = pw;
        uv_timer_start(&pw->log_flush, on_log_flush, ACCESS_LOG_FLUSH_MS, ACCESS_LOG_FLUSH_MS);
        uv_unref((uv_handle_t *)&pw->log_flush);
    }
    return pw;
fail:
    proxy_worker_free(pw);
    return NULL;
}

void proxy_worker_free(proxy_worker_t *pw)
{
    if (!pw)
        return;
    if (pw->alog)
        access_log_writer_free(pw->alog);
    if (pw->md)
        pcre2_match_data_free(pw->md);
    /* The gateway frees the shared parts of the current (and trial)
     * generation itself. */
    gen_free(pw->gen);
    if (pw->canary)
        gen_free(pw->canary);
    api_key_hasher_deinit(&pw->hasher);
    user_auth_worker_deinit(pw);
    free(pw->fleet_address);
    free(pw->agg_store_address);
    if (pw->wake_lock_ready)
        uv_mutex_destroy(&pw->wake_lock);
    free(pw->scratch);
    free(pw);
}

void proxy_worker_on_shed(worker_t *w)
{
    proxy_worker_t *pw = w->app;
    metrics_downstream_rejected(pw->metrics);
}

void proxy_worker_drain(proxy_worker_t *pw, uint64_t idle_grace_ms)
{
    pw->upstreams.draining = true;
    pw->clients.on_drained = on_clients_drained; /* the gateway may have set pw->on_drained since */
    client_conn_env_drain(&pw->clients, idle_grace_ms);
}

void proxy_worker_stop(proxy_worker_t *pw)
{
    pw->upstreams.draining = true;
    pw->stopping = true;
    pw->on_drained = NULL;
    close_wake(pw);
    user_auth_worker_stop(pw);
    fleet_close(pw->fleet);
    pw->fleet = NULL;
    client_conn_env_stop(&pw->clients);
    h2_server_env_close(&pw->h2);
    /* After the clients: their aggregations let go of their lookups first. */
    agg_store_close(pw->agg_store);
    pw->agg_store = NULL;
    shadow_worker_stop(pw);
    proxy_gen_t *gens[] = {pw->gen, pw->canary};
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; gens[k] && i < gens[k]->cfg->n_target_groups; i++)
            upstream_group_close_idle(&gens[k]->groups[i].up);
}
