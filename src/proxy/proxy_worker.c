/* A worker's proxy state, built from the config snapshot when the worker
 * starts: per-route balancer state, per-group target state and connection
 * pools, metric slots, the access-log writer and the scratch buffers. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "proxy/proxy.h"

static void on_log_flush(uv_timer_t *t)
{
    proxy_worker_t *pw = t->data;
    access_log_writer_flush(pw->alog);
}

proxy_worker_t *proxy_worker_new(worker_t *w, const proxy_shared_t *sh)
{
    proxy_worker_t *pw = calloc(1, sizeof *pw);
    if (!pw)
        return NULL;
    config_t *cfg = sh->cfg;
    pw->w = w;
    pw->loop = &w->loop;
    pw->cfg = config_ref(cfg);
    pw->sets = sh->sets;
    pw->md = router_match_data_new();
    pw->metrics = metrics_worker_get(sh->metrics, w->index);
    pw->scratch_bytes = w->pool.buf_bytes;
    pw->scratch = malloc(pw->scratch_bytes);
    pw->swrr = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *pw->swrr);
    pw->weights = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *pw->weights);
    pw->metrics_route = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *pw->metrics_route);
    pw->weights_version = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *pw->weights_version);
    pw->route_inflight = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *pw->route_inflight);
    pw->route_retries = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *pw->route_retries);
    pw->health = sh->health;
    pw->shared_weights = sh->weights;
    pw->registry = sh->metrics;
    pw->groups = calloc(cfg->n_target_groups ? cfg->n_target_groups : 1, sizeof *pw->groups);
    if (!pw->md || !pw->scratch || !pw->swrr || !pw->weights || !pw->metrics_route || !pw->groups ||
        !pw->weights_version || !pw->route_inflight || !pw->route_retries)
        goto fail;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const config_route_t *r = &cfg->routes[i];
        pw->swrr[i] = calloc(r->n_backends ? r->n_backends : 1, sizeof **pw->swrr);
        pw->weights[i] = calloc(r->n_backends ? r->n_backends : 1, sizeof **pw->weights);
        if (!pw->swrr[i] || !pw->weights[i])
            goto fail;
        weights_load(sh->weights, i, pw->weights[i]);
        pw->weights_version[i] = weights_version(sh->weights, i);
        pw->metrics_route[i] = metrics_route_slot(sh->metrics, r->name);
    }
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
    pw->rng = seed ^ (w->index + 1) * 0xbf58476d1ce4e5b9ull;
    if (!pw->rng)
        pw->rng = 1;
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        proxy_group_state_t *gs = &pw->groups[g];
        size_t n = tg->n_targets ? tg->n_targets : 1;
        gs->inflight = calloc(n, sizeof *gs->inflight);
        gs->eligible = calloc(n, sizeof *gs->eligible);
        gs->pools = calloc(n, sizeof *gs->pools);
        gs->metrics_target = calloc(n, sizeof *gs->metrics_target);
        if (!gs->inflight || !gs->eligible || !gs->pools || !gs->metrics_target)
            goto fail;
        gs->bal.rng = balancer_random(&pw->rng) | 1;
        gs->bal.rr_cursor = (uint32_t)(w->index % n);
        gs->metrics_group = metrics_group_slot(sh->metrics, tg->name);
        for (size_t t = 0; t < tg->n_targets; t++)
            gs->metrics_target[t] = metrics_target_slot(sh->metrics, tg->name, tg->targets[t].name);
    }
    if (sh->access_log) {
        pw->alog = access_log_writer_new(sh->access_log);
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
    const config_t *cfg = pw->cfg;
    if (pw->alog)
        access_log_writer_free(pw->alog);
    if (pw->md)
        pcre2_match_data_free(pw->md);
    for (size_t i = 0; pw->swrr && i < cfg->n_routes; i++)
        free(pw->swrr[i]);
    for (size_t i = 0; pw->weights && i < cfg->n_routes; i++)
        free(pw->weights[i]);
    for (size_t g = 0; pw->groups && g < cfg->n_target_groups; g++) {
        free(pw->groups[g].inflight);
        free(pw->groups[g].eligible);
        free(pw->groups[g].pools);
        free(pw->groups[g].metrics_target);
    }
    free(pw->swrr);
    free(pw->weights);
    free(pw->metrics_route);
    free(pw->weights_version);
    free(pw->route_inflight);
    free(pw->route_retries);
    free(pw->groups);
    free(pw->scratch);
    config_unref(pw->cfg);
    free(pw);
}

void proxy_worker_on_accept(worker_t *w, int fd, size_t listener)
{
    (void)listener;
    client_conn_accept(w->app, fd);
}

void proxy_worker_on_shed(worker_t *w)
{
    proxy_worker_t *pw = w->app;
    metrics_downstream_rejected(pw->metrics);
}
