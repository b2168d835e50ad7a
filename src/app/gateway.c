/* The gateway process; see gateway.h. Owns everything shared by the workers
 * (the metrics registry, the access log, the tracer) and wires the pieces
 * of app/ together: generations, reload, drain, listeners, the admin
 * listener and the signals. */
#include "app/gateway.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "admin/admin.h"
#include "app/drain.h"
#include "app/generation.h"
#include "app/listeners.h"
#include "app/reload.h"
#include "app/rollouts.h"
#include "config/config_json.h"
#include "core/addr.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/time.h"
#include "net/takeover.h"
#include "net/worker.h"
#include "observe/access_log.h"
#include "observe/metrics.h"
#include "observe/trace.h"
#include "policy/health.h"
#include "proxy/proxy.h"
#include "routing/weights.h"

typedef struct gateway {
    uv_loop_t *loop;
    generations_t *gens;
    reload_t *reload;
    drain_t *drain;
    worker_group_t workers;
    proxy_worker_t **pws;
    metrics_registry_t *metrics;
    access_log_t *access_log;
    tracer_t *tracer;
    admin_t *admin;
    takeover_server_t *takeover;
    worker_fd_t *fds; /* every listening socket of the workers */
    size_t n_fds;
    uv_signal_t sigs[4];
    int stopping;
} gateway_t;

/* Descriptors: raise the soft limit to the hard one (Retty's incident:
 * "too many open files" a month after launch). */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = before;
    }
    log_info("open-file limit %llu (was %llu, hard limit %llu)", (unsigned long long)rl.rlim_cur,
             (unsigned long long)before, (unsigned long long)rl.rlim_max);
}

static const config_t *current_config(const gateway_t *gw)
{
    return generation_config(generations_current(gw->gens));
}

/* --- admin hooks: the current generation's state as plain data --- */

static bool gw_draining(void *ctx)
{
    const gateway_t *gw = ctx;
    return drain_active(gw->drain) || gw->stopping;
}

static size_t gw_n_groups(void *ctx) { return current_config(ctx)->n_target_groups; }

static void gw_group(void *ctx, size_t g, admin_group_info_t *out)
{
    gateway_t *gw = ctx;
    const config_target_group_t *tg = &current_config(gw)->target_groups[g];
    health_group_t *hg = &generation_health(generations_current(gw->gens))->groups[g];
    *out = (admin_group_info_t){
        .name = tg->name,
        .n_targets = tg->n_targets,
        .required = tg->required,
        .panic = (int)atomic_load_explicit(&hg->panic, memory_order_relaxed),
        .usable_targets = health_group_usable(hg, uv_now(gw->loop)),
        .connections = atomic_load(&hg->connections),
        .pending = atomic_load(&hg->pending),
        .requests = atomic_load(&hg->requests),
        .max_connections = tg->max_connections,
        .max_pending = tg->max_pending,
        .max_requests = tg->max_requests,
    };
}

static void gw_target(void *ctx, size_t g, size_t t, admin_target_info_t *out)
{
    gateway_t *gw = ctx;
    uint64_t now = uv_now(gw->loop);
    health_target_t *ht = &generation_health(generations_current(gw->gens))->groups[g].targets[t];
    const health_addr_t *a = atomic_load(&ht->addr);
    uint64_t until = atomic_load(&ht->ejected_until_ms);
    memset(out, 0, sizeof *out);
    out->name = current_config(gw)->target_groups[g].targets[t].name;
    if (a) {
        addr_format((const struct sockaddr *)&a->ss, out->address_buf, sizeof out->address_buf);
        out->address = out->address_buf;
    }
    out->usable = health_target_usable(ht, now);
    out->health_check_ok = atomic_load(&ht->checked_healthy) != 0;
    out->ejected = until > now;
    out->ejected_for_ms = until > now ? until - now : 0;
    out->ejections = atomic_load(&ht->ejections);
    out->consecutive_errors = atomic_load(&ht->consecutive_errors);
    out->inflight = atomic_load(&ht->inflight);
}

static size_t gw_n_routes(void *ctx) { return current_config(ctx)->n_routes; }

static void gw_route(void *ctx, size_t r, admin_route_info_t *out)
{
    gateway_t *gw = ctx;
    const config_t *cfg = current_config(gw);
    const config_route_t *rt = &cfg->routes[r];
    weights_t *w = generation_weights(generations_current(gw->gens));
    out->name = rt->name;
    out->n_backends = rt->n_backends < MAX_ROUTE_BACKENDS ? rt->n_backends : MAX_ROUTE_BACKENDS;
    for (size_t b = 0; b < out->n_backends; b++) {
        out->backends[b] = cfg->target_groups[rt->backends[b].target_group].name;
        out->weights[b] = weights_get(w, r, b);
    }
    out->has_rollout = rt->has_rollout;
}

static void gw_set_weights(void *ctx, size_t r, const uint32_t *v)
{
    gateway_t *gw = ctx;
    weights_set(generation_weights(generations_current(gw->gens)), r, v);
}

static rollouts_t *current_rollouts(const gateway_t *gw)
{
    return generation_rollouts(generations_current(gw->gens));
}

static json_t *gw_rollout(void *ctx, size_t r)
{
    return rollouts_json(current_rollouts(ctx), r, time_now_ms(), time_now_realtime_ms());
}

static int gw_rollout_action(void *ctx, size_t r, const char *action, size_t len)
{
    rollout_action_t a;
    if (rollouts_action_parse(action, len, &a) != 0)
        return FE_NOTFOUND;
    return rollouts_action(current_rollouts(ctx), r, a, time_now_ms());
}

static void gw_rollout_metrics(void *ctx, buf_t *out)
{
    rollouts_metrics(current_rollouts(ctx), out);
}

static json_t *gw_config(void *ctx)
{
    gateway_t *gw = ctx;
    return gw->reload ? reload_config_json(gw->reload) : config_json(current_config(ctx));
}

static const char *gw_token(void *ctx) { return current_config(ctx)->admin_token; }

static uint64_t gw_rate_limit_evictions(void *ctx)
{
    gateway_t *gw = ctx;
    return generations_rate_limit_evictions(gw->gens);
}

static json_t *gw_migration(void *ctx)
{
    gateway_t *gw = ctx;
    generation_t *gen = generations_current(gw->gens);
    return gen ? generation_migration(gen, time_now_ms(), time_now_realtime_ms()) : NULL;
}

static json_t *gw_config_history(void *ctx)
{
    gateway_t *gw = ctx;
    return gw->reload ? reload_history_json(gw->reload) : NULL;
}

static json_t *gw_route_shadow(void *ctx, size_t r)
{
    gateway_t *gw = ctx;
    shadow_route_t *sr = generation_shadow_route(generations_current(gw->gens), r);
    return sr ? shadow_route_json(sr) : NULL;
}

static void gw_shadow_metrics(void *ctx, buf_t *out)
{
    gateway_t *gw = ctx;
    shadow_stats_render(generations_shadow(gw->gens), out);
}

/* --- stop, handover and signals --- */

static void gateway_stop(gateway_t *gw)
{
    if (gw->stopping)
        return;
    gw->stopping = 1;
    log_info("stopping");
    admin_stop(gw->admin);
    gw->admin = NULL;
    takeover_server_stop(gw->takeover);
    gw->takeover = NULL;
    generations_close(gw->gens);
    reload_close(gw->reload);
    for (size_t i = 0; i < sizeof gw->sigs / sizeof gw->sigs[0]; i++)
        uv_close((uv_handle_t *)&gw->sigs[i], NULL);
    drain_close(gw->drain);
    worker_group_stop(&gw->workers);
}

static void on_drain_done(void *ctx) { gateway_stop(ctx); }

/* A new ficus took the listening sockets over and serves them: drain as on
 * SIGTERM, without drain_delay (nothing needs to notice readiness: the
 * sockets never stopped accepting). */
static void on_handover(void *ctx)
{
    gateway_t *gw = ctx;
    if (gw->stopping)
        return;
    uint64_t timeout_ms = current_config(gw)->server.drain_timeout_ms;
    log_info("takeover: a new ficus serves the listeners now; draining (up to %llu ms)",
             (unsigned long long)timeout_ms);
    takeover_server_stop(gw->takeover);
    gw->takeover = NULL;
    admin_stop(gw->admin); /* its socket is the new process's now */
    gw->admin = NULL;
    drain_handover(gw->drain, timeout_ms);
}

static void on_signal(uv_signal_t *s, int signum)
{
    gateway_t *gw = s->data;
    const config_t *cfg = current_config(gw);
    switch (signum) {
    case SIGTERM:
    case SIGINT:
        log_info("%s received: %s", signum == SIGTERM ? "SIGTERM" : "SIGINT",
                 drain_active(gw->drain) ? "stopping now" : "draining");
        drain_begin(gw->drain, cfg->server.drain_delay_ms, cfg->server.drain_timeout_ms);
        break;
    case SIGHUP:
        log_info("SIGHUP received: reloading %s", cfg->path);
        reload_start(gw->reload, "SIGHUP");
        break;
    case SIGUSR1:
        log_info("SIGUSR1 received: reopening the access log");
        if (gw->access_log && access_log_reopen(gw->access_log) != 0)
            log_error("access log: reopen failed");
        break;
    }
}

static void signals_start(gateway_t *gw)
{
    int nums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < sizeof gw->sigs / sizeof gw->sigs[0]; i++) {
        uv_signal_init(gw->loop, &gw->sigs[i]);
        gw->sigs[i].data = gw;
        uv_signal_start(&gw->sigs[i], on_signal, nums[i]);
    }
}

static void worker_on_stop(worker_t *w) { proxy_worker_stop(w->app); }

/* --- run --- */

int gateway_run(config_t *cfg)
{
    gateway_t gw = {0};
    char err[512];
    int code = 1;
    log_set_level((log_level_t)cfg->log_level);
    log_set_json(cfg->log_json);
    gw.loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    size_t nw = cfg->server.workers, nl = cfg->server.n_listeners;
    listeners_plan_t plan = {0};
    proxy_gen_t **pgens = calloc(nw, sizeof *pgens);
    if (!pgens)
        goto out;
    if (listeners_plan(cfg, &plan, err, sizeof err) != 0) {
        log_error("%s", err);
        goto out_fds;
    }
    gw.fds = plan.fds;
    gw.n_fds = plan.n;

    gw.metrics = metrics_registry_new(nw, FICUS_VERSION);
    if (!gw.metrics)
        goto out_fds;
    metrics_config_reload(gw.metrics, true, time_now_realtime_ms());
    if (cfg->access_log_path) {
        gw.access_log = access_log_open(cfg->access_log_path, err, sizeof err);
        if (!gw.access_log) {
            log_error("access log: %s", err);
            goto out_metrics;
        }
    }
    if (cfg->tracing.otlp_endpoint) {
        gw.tracer = tracer_new(&cfg->tracing, nw, gw.metrics, err, sizeof err);
        if (!gw.tracer) {
            log_error("tracing: %s", err);
            goto out_log;
        }
    }
    size_t pool_bytes = IO_BUF_BYTES + cfg->server.max_header_bytes + 8192;
    if (worker_group_init(&gw.workers, gw.loop, nw, plan.fds, plan.n, cfg->server.max_connections,
                          pool_bytes) != 0) {
        log_error("cannot set up workers");
        goto out_log;
    }
    gw.gens = generations_new(gw.loop, &gw.workers, gw.metrics);
    generation_t *first = gw.gens ? generation_prepare(gw.gens, cfg) : NULL;
    if (!first || generations_activate(gw.gens, first, pgens) != 0) {
        if (first)
            generations_discard(gw.gens, first);
        log_error("cannot set up the configuration (see above; else no memory)");
        goto out_workers;
    }
    gw.pws = calloc(nw, sizeof *gw.pws);
    if (!gw.pws) {
        log_error("out of memory");
        goto out_workers;
    }
    for (size_t i = 0; i < nw; i++) {
        worker_t *w = &gw.workers.workers[i];
        gw.pws[i] = proxy_worker_new(w, gw.metrics, gw.access_log, pgens[i]);
        pgens[i] = NULL; /* the worker's now, even when it failed */
        if (!gw.pws[i]) {
            log_error("cannot set up worker %zu", i);
            goto out_workers;
        }
        gw.pws[i]->tracer = gw.tracer;
        w->app = gw.pws[i];
        w->on_accept = proxy_on_accept;
        w->on_shed = proxy_worker_on_shed;
        w->on_stop = worker_on_stop;
    }
    admin_hooks_t hooks = {.ctx = &gw,
                           .draining = gw_draining,
                           .n_groups = gw_n_groups,
                           .group = gw_group,
                           .target = gw_target,
                           .n_routes = gw_n_routes,
                           .route = gw_route,
                           .set_weights = gw_set_weights,
                           .config = gw_config,
                           .token = gw_token,
                           .rate_limit_evictions = gw_rate_limit_evictions,
                           .route_shadow = gw_route_shadow,
                           .shadow_metrics = gw_shadow_metrics,
                           .rollout = gw_rollout,
                           .rollout_action = gw_rollout_action,
                           .rollout_metrics = gw_rollout_metrics,
                           .migration = gw_migration,
                           .config_history = gw_config_history,
                           .metrics = gw.metrics,
                           .access_log = gw.access_log};
    gw.admin = admin_start(gw.loop, (const struct sockaddr *)&cfg->admin_addr, cfg->admin_addrlen,
                           plan.admin_fd, &hooks, err, sizeof err);
    if (!gw.admin) {
        log_error("%s", err);
        goto out_workers;
    }
    plan.admin_fd = -1; /* the admin's */
    gw.drain = drain_new(gw.loop, &gw.workers, on_drain_done, &gw);
    gw.reload = gw.drain ? reload_new(gw.loop, gw.gens, gw.metrics, gw.drain) : NULL;
    if (!gw.reload) {
        log_error("out of memory");
        goto out_workers;
    }
    signals_start(&gw);
    reload_watch(gw.reload);
    if (worker_group_start(&gw.workers) != 0) {
        log_error("cannot start worker threads");
        gateway_stop(&gw);
        goto out_workers;
    }
    listeners_plan_serving(&plan);
    if (cfg->server.control_socket)
        gw.takeover =
            listeners_serve_takeover(gw.loop, cfg->server.control_socket, gw.fds, gw.n_fds,
                                     gw.admin ? admin_fd(gw.admin) : -1, on_handover, &gw);
    if (gw.tracer)
        log_info("tracing: spans go to %s (sample_ratio %g)", cfg->tracing.otlp_endpoint,
                 cfg->tracing.sample_ratio);
    for (size_t l = 0; l < nl; l++)
        log_info("listening on %s (%zu worker%s)", cfg->server.listeners[l].address, nw,
                 nw == 1 ? "" : "s");
    log_info("admin on %s", cfg->admin_listen);
    uv_run(gw.loop, UV_RUN_DEFAULT);
    code = 0;

out_workers:
    if (!gw.stopping) {
        admin_stop(gw.admin);
        if (gw.gens)
            generations_close(gw.gens);
        drain_close(gw.drain);
        worker_group_stop(&gw.workers);
        uv_run(gw.loop, UV_RUN_DEFAULT);
    }
    for (size_t i = 0; gw.pws && i < nw; i++)
        proxy_worker_free(gw.pws[i]);
    free(gw.pws);
    for (size_t i = 0; i < nw; i++)
        proxy_gen_discard(pgens[i]);
    generations_free(gw.gens);
    reload_free(gw.reload);
    drain_free(gw.drain);
out_log:
    tracer_free(gw.tracer); /* the workers have stopped producing */
    access_log_close(gw.access_log);
out_metrics:
    metrics_registry_free(gw.metrics);
out_fds:
    listeners_plan_deinit(&plan, gw.workers.workers != NULL);
out:
    free(pgens);
    config_unref(cfg);
    uv_loop_close(gw.loop);
    log_info("exiting with code %d%s", code, code == 0 ? "" : " (see the errors above)");
    return code;
}
