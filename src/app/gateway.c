/* The gateway process; see gateway.h. Owns everything shared by the workers:
 * the config snapshot, sets, the metrics registry and the access log. */
#include "app/gateway.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "admin/admin.h"
#include "core/log.h"
#include "core/time.h"
#include "net/listener.h"
#include "net/worker.h"
#include "observe/access_log.h"
#include "observe/metrics.h"
#include "proxy/proxy.h"
#include "routing/set.h"

typedef struct set_refresh {
    uv_timer_t timer;
    uv_work_t work;
    struct gateway *gw;
    size_t index;
    int busy;
    int rc;
    char err[256];
} set_refresh_t;

typedef struct gateway {
    uv_loop_t *loop;
    config_t *cfg;
    worker_group_t workers;
    proxy_worker_t **pws;
    set_t **sets;
    set_refresh_t *refresh;
    metrics_registry_t *metrics;
    access_log_t *access_log;
    admin_t *admin;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
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

/* Named targets are resolved before the workers start; a name that does not
 * resolve leaves the target unusable (502) and is logged. */
static void resolve_targets(config_t *cfg)
{
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        config_target_group_t *tg = &cfg->target_groups[g];
        for (size_t i = 0; i < tg->n_targets; i++) {
            config_target_t *t = &tg->targets[i];
            if (t->numeric)
                continue;
            struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
            char port[8];
            snprintf(port, sizeof port, "%u", t->port);
            int rc = getaddrinfo(t->host, port, &hints, &res);
            if (rc != 0 || !res) {
                log_error("target group %s: cannot resolve %s: %s", tg->name, t->name,
                          gai_strerror(rc));
                continue;
            }
            memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
            t->addrlen = res->ai_addrlen;
            freeaddrinfo(res);
        }
    }
}

/* --- sets: re-read off the loop, swapped in by set_reload itself --- */

static void set_work(uv_work_t *w)
{
    set_refresh_t *r = w->data;
    r->rc = set_reload(r->gw->sets[r->index], r->err, sizeof r->err);
}

static void set_work_done(uv_work_t *w, int status)
{
    set_refresh_t *r = w->data;
    r->busy = 0;
    if (status == 0 && r->rc != 0) {
        log_limited(LOG_ERROR, "set %s: %s (keeping %zu members)", r->gw->cfg->sets[r->index].name,
                    r->err, set_count(r->gw->sets[r->index]));
        metrics_set_reload_failure(
            r->gw->metrics, metrics_set_slot(r->gw->metrics, r->gw->cfg->sets[r->index].name));
    }
}

static void on_set_timer(uv_timer_t *t)
{
    set_refresh_t *r = t->data;
    if (r->busy || r->gw->stopping)
        return;
    r->busy = 1;
    r->work.data = r;
    uv_queue_work(r->gw->loop, &r->work, set_work, set_work_done);
}

static int sets_start(gateway_t *gw)
{
    config_t *cfg = gw->cfg;
    if (!cfg->n_sets)
        return 0;
    gw->sets = calloc(cfg->n_sets, sizeof *gw->sets);
    gw->refresh = calloc(cfg->n_sets, sizeof *gw->refresh);
    if (!gw->sets || !gw->refresh)
        return -1;
    for (size_t i = 0; i < cfg->n_sets; i++) {
        gw->sets[i] = set_new(&cfg->sets[i], worker_group_retire_cb, &gw->workers);
        if (!gw->sets[i])
            return -1;
        char err[256];
        if (set_reload(gw->sets[i], err, sizeof err) != 0) {
            log_error("set %s: %s (starting empty)", cfg->sets[i].name, err);
            metrics_set_reload_failure(gw->metrics,
                                       metrics_set_slot(gw->metrics, cfg->sets[i].name));
        } else {
            log_info("set %s: %zu members", cfg->sets[i].name, set_count(gw->sets[i]));
        }
        set_refresh_t *r = &gw->refresh[i];
        r->gw = gw;
        r->index = i;
        uv_timer_init(gw->loop, &r->timer);
        r->timer.data = r;
        uv_timer_start(&r->timer, on_set_timer, cfg->sets[i].refresh_ms, cfg->sets[i].refresh_ms);
    }
    return 0;
}

/* --- admin hooks --- */

static int gw_ready(void *ctx, char *reason, size_t n)
{
    gateway_t *gw = ctx;
    if (gw->stopping) {
        snprintf(reason, n, "draining");
        return 0;
    }
    return 1;
}

static void each_weight(void *ctx, void (*emit)(void *, const char *, const char *, uint32_t),
                        void *ctx2)
{
    gateway_t *gw = ctx;
    const config_t *cfg = gw->cfg;
    for (size_t r = 0; r < cfg->n_routes; r++)
        for (size_t b = 0; b < cfg->routes[r].n_backends; b++) {
            const config_backend_t *be = &cfg->routes[r].backends[b];
            emit(ctx2, cfg->routes[r].name, cfg->target_groups[be->target_group].name, be->weight);
        }
}

static void gw_metrics(void *ctx, buf_t *out)
{
    gateway_t *gw = ctx;
    metrics_gauges_t g = {.ctx = gw, .each_backend_weight = each_weight};
    metrics_render(gw->metrics, &g, out);
}

/* --- signals and stop --- */

static void gateway_stop(gateway_t *gw)
{
    if (gw->stopping)
        return;
    gw->stopping = 1;
    log_info("stopping");
    admin_stop(gw->admin);
    gw->admin = NULL;
    for (size_t i = 0; gw->refresh && i < gw->cfg->n_sets; i++)
        uv_close((uv_handle_t *)&gw->refresh[i].timer, NULL);
    uv_close((uv_handle_t *)&gw->sig_term, NULL);
    uv_close((uv_handle_t *)&gw->sig_int, NULL);
    uv_close((uv_handle_t *)&gw->sig_hup, NULL);
    uv_close((uv_handle_t *)&gw->sig_usr1, NULL);
    worker_group_stop(&gw->workers);
}

static void on_signal(uv_signal_t *s, int signum)
{
    gateway_t *gw = s->data;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
        gateway_stop(gw);
        break;
    case SIGHUP:
        log_warn("SIGHUP: configuration reload is not supported by this version; restart to "
                 "apply changes");
        metrics_config_reload(gw->metrics, false, time_now_realtime_ms());
        break;
    case SIGUSR1:
        if (gw->access_log && access_log_reopen(gw->access_log) != 0)
            log_error("access log: reopen failed");
        break;
    }
}

static void worker_on_stop(worker_t *w) { proxy_worker_stop(w->app); }

/* --- run --- */

int gateway_run(config_t *cfg)
{
    gateway_t gw = {0};
    char err[512];
    int code = 1;
    gw.loop = uv_default_loop();
    gw.cfg = cfg;
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    resolve_targets(cfg);

    size_t nw = cfg->server.workers, nl = cfg->server.n_listeners;
    int *fds = calloc(nw * nl, sizeof *fds);
    if (!fds)
        goto out;
    for (size_t i = 0; i < nw * nl; i++)
        fds[i] = -1;
    for (size_t w = 0; w < nw; w++)
        for (size_t l = 0; l < nl; l++) {
            const config_listener_t *li = &cfg->server.listeners[l];
            fds[w * nl + l] = listener_open((const struct sockaddr *)&li->addr, li->addrlen,
                                            LISTEN_BACKLOG, err, sizeof err);
            if (fds[w * nl + l] < 0) {
                log_error("%s", err);
                goto out_fds;
            }
        }

    gw.metrics = metrics_registry_new(nw, FICUS_VERSION);
    if (!gw.metrics)
        goto out_fds;
    for (size_t r = 0; r < cfg->n_routes; r++)
        metrics_route_slot(gw.metrics, cfg->routes[r].name);
    metrics_config_reload(gw.metrics, true, time_now_realtime_ms());
    if (cfg->access_log_path) {
        gw.access_log = access_log_open(cfg->access_log_path, err, sizeof err);
        if (!gw.access_log) {
            log_error("access log: %s", err);
            goto out_metrics;
        }
    }
    size_t pool_bytes = IO_BUF_BYTES + cfg->server.max_header_bytes + 8192;
    if (worker_group_init(&gw.workers, gw.loop, nw, fds, nl, cfg->server.max_connections,
                          pool_bytes) != 0) {
        log_error("cannot set up workers");
        goto out_log;
    }
    if (sets_start(&gw) != 0) {
        log_error("cannot set up sets");
        goto out_workers;
    }
    proxy_shared_t shared = {cfg, gw.sets, gw.metrics, gw.access_log};
    gw.pws = calloc(nw, sizeof *gw.pws);
    for (size_t i = 0; gw.pws && i < nw; i++) {
        worker_t *w = &gw.workers.workers[i];
        gw.pws[i] = proxy_worker_new(w, &shared);
        if (!gw.pws[i]) {
            log_error("cannot set up worker %zu", i);
            goto out_workers;
        }
        w->app = gw.pws[i];
        w->on_accept = proxy_worker_on_accept;
        w->on_shed = proxy_worker_on_shed;
        w->on_stop = worker_on_stop;
    }
    admin_hooks_t hooks = {.ctx = &gw, .ready = gw_ready, .metrics = gw_metrics};
    gw.admin = admin_start(gw.loop, (const struct sockaddr *)&cfg->admin_addr, cfg->admin_addrlen,
                           &hooks, err, sizeof err);
    if (!gw.admin) {
        log_error("%s", err);
        goto out_workers;
    }
    uv_signal_t *sigs[] = {&gw.sig_term, &gw.sig_int, &gw.sig_hup, &gw.sig_usr1};
    int nums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(gw.loop, sigs[i]);
        sigs[i]->data = &gw;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
    if (worker_group_start(&gw.workers) != 0) {
        log_error("cannot start worker threads");
        gateway_stop(&gw);
        goto out_workers;
    }
    for (size_t l = 0; l < nl; l++)
        log_info("listening on %s (%zu workers)", cfg->server.listeners[l].address, nw);
    log_info("admin on %s", cfg->admin_listen);
    uv_run(gw.loop, UV_RUN_DEFAULT);
    code = 0;

out_workers:
    if (!gw.stopping) {
        admin_stop(gw.admin);
        worker_group_stop(&gw.workers);
        for (size_t i = 0; gw.refresh && i < cfg->n_sets; i++)
            if (!uv_is_closing((uv_handle_t *)&gw.refresh[i].timer))
                uv_close((uv_handle_t *)&gw.refresh[i].timer, NULL);
        uv_run(gw.loop, UV_RUN_DEFAULT);
    }
    for (size_t i = 0; gw.pws && i < nw; i++)
        proxy_worker_free(gw.pws[i]);
    free(gw.pws);
    for (size_t i = 0; gw.sets && i < cfg->n_sets; i++)
        set_free(gw.sets[i]);
    free(gw.sets);
    free(gw.refresh);
out_log:
    access_log_close(gw.access_log);
out_metrics:
    metrics_registry_free(gw.metrics);
out_fds:
    if (!gw.workers.workers)
        for (size_t i = 0; i < nw * nl; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    free(fds);
out:
    config_unref(cfg);
    uv_loop_close(gw.loop);
    return code;
}
