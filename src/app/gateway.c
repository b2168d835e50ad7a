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

#include <jansson.h>

#include "admin/admin.h"
#include "config/config_json.h"
#include "core/log.h"
#include "core/time.h"
#include "net/listener.h"
#include "net/worker.h"
#include "observe/access_log.h"
#include "observe/metrics.h"
#include "policy/health.h"
#include "policy/health_check.h"
#include "proxy/proxy.h"
#include "routing/set.h"
#include "routing/weights.h"

typedef struct set_refresh {
    uv_timer_t timer;
    uv_work_t work;
    struct gateway *gw;
    size_t index;
    int busy;
    int rc;
    char err[256];
} set_refresh_t;

typedef struct dns_target {
    uv_getaddrinfo_t req;
    struct gateway *gw;
    size_t group;
    size_t target;
    int busy;
} dns_target_t;

typedef struct dns_group {
    uv_timer_t timer;
    struct gateway *gw;
    size_t group;
    dns_target_t *targets; /* named targets only have a use for it */
} dns_group_t;

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
    health_t *health;
    weights_t *weights;
    health_checker_t *checker;
    dns_group_t *dns;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
    uv_timer_t drain_timer;
    uv_async_t drained;
    atomic_int n_drained;
    int draining;
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
    if (gw->draining || gw->stopping) {
        snprintf(reason, n, "draining");
        return 0;
    }
    uint64_t now = uv_now(gw->loop);
    for (size_t g = 0; g < gw->cfg->n_target_groups; g++)
        if (gw->cfg->target_groups[g].required &&
            health_group_usable(&gw->health->groups[g], now) == 0) {
            snprintf(reason, n, "required target group %s has no healthy target",
                     gw->cfg->target_groups[g].name);
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
            emit(ctx2, cfg->routes[r].name, cfg->target_groups[be->target_group].name,
                 weights_get(gw->weights, r, b));
        }
}

static void each_health(void *ctx, void (*emit)(void *, const char *, const char *, int),
                        void *ctx2)
{
    gateway_t *gw = ctx;
    const config_t *cfg = gw->cfg;
    uint64_t now = uv_now(gw->loop);
    for (size_t g = 0; g < cfg->n_target_groups; g++)
        for (size_t t = 0; t < cfg->target_groups[g].n_targets; t++)
            emit(ctx2, cfg->target_groups[g].name, cfg->target_groups[g].targets[t].name,
                 health_target_usable(&gw->health->groups[g].targets[t], now));
}

static void gw_metrics(void *ctx, buf_t *out)
{
    gateway_t *gw = ctx;
    metrics_gauges_t g = {
        .ctx = gw, .each_backend_weight = each_weight, .each_target_health = each_health};
    metrics_render(gw->metrics, &g, out);
    /* Lines the access-log writer dropped rather than block a worker. */
    buf_printf(out,
               "# HELP ficus_access_log_dropped_lines_total Access-log lines dropped because the "
               "writer fell behind.\n"
               "# TYPE ficus_access_log_dropped_lines_total counter\n"
               "ficus_access_log_dropped_lines_total %llu\n",
               (unsigned long long)(gw->access_log ? access_log_dropped_lines(gw->access_log) : 0));
}

/* --- DNS: named targets are re-resolved every dns_refresh; a failed lookup
 * keeps the last good address --- */

static void on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    dns_target_t *d = req->data;
    gateway_t *gw = d->gw;
    d->busy = 0;
    const config_target_group_t *tg = &gw->cfg->target_groups[d->group];
    const config_target_t *t = &tg->targets[d->target];
    if (status != 0 || !res) {
        if (status != UV_ECANCELED)
            log_limited(LOG_WARN,
                        "target group %s: cannot resolve %s: %s (keeping the last address)",
                        tg->name, t->name, uv_strerror(status));
    } else if (!gw->stopping) {
        health_target_t *ht = &gw->health->groups[d->group].targets[d->target];
        const health_addr_t *cur = atomic_load(&ht->addr);
        if (!cur || cur->len != res->ai_addrlen || memcmp(&cur->ss, res->ai_addr, cur->len) != 0) {
            char name[80];
            addr_format(res->ai_addr, name, sizeof name);
            log_info("target group %s: %s now resolves to %s", tg->name, t->name, name);
            health_set_addr(ht, res->ai_addr, res->ai_addrlen, worker_group_retire_cb,
                            &gw->workers);
        }
    }
    uv_freeaddrinfo(res);
}

static void on_dns_timer(uv_timer_t *timer)
{
    dns_group_t *dg = timer->data;
    gateway_t *gw = dg->gw;
    const config_target_group_t *tg = &gw->cfg->target_groups[dg->group];
    for (size_t i = 0; i < tg->n_targets; i++) {
        const config_target_t *t = &tg->targets[i];
        dns_target_t *d = &dg->targets[i];
        if (t->numeric || d->busy || gw->stopping)
            continue;
        char port[8];
        snprintf(port, sizeof port, "%u", t->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        d->req.data = d;
        if (uv_getaddrinfo(gw->loop, &d->req, on_dns, t->host, port, &hints) == 0)
            d->busy = 1;
    }
}

static int dns_start(gateway_t *gw)
{
    const config_t *cfg = gw->cfg;
    gw->dns = calloc(cfg->n_target_groups ? cfg->n_target_groups : 1, sizeof *gw->dns);
    if (!gw->dns)
        return -1;
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        dns_group_t *dg = &gw->dns[g];
        dg->gw = gw;
        dg->group = g;
        bool named = false;
        for (size_t t = 0; t < tg->n_targets; t++)
            named |= !tg->targets[t].numeric;
        if (!named)
            continue;
        dg->targets = calloc(tg->n_targets, sizeof *dg->targets);
        if (!dg->targets)
            return -1;
        for (size_t t = 0; t < tg->n_targets; t++) {
            dg->targets[t].gw = gw;
            dg->targets[t].group = g;
            dg->targets[t].target = t;
        }
        uv_timer_init(gw->loop, &dg->timer);
        dg->timer.data = dg;
        uv_timer_start(&dg->timer, on_dns_timer, tg->dns_refresh_ms, tg->dns_refresh_ms);
    }
    return 0;
}

static void dns_stop(gateway_t *gw)
{
    for (size_t g = 0; gw->dns && g < gw->cfg->n_target_groups; g++) {
        dns_group_t *dg = &gw->dns[g];
        if (!dg->targets)
            continue;
        uv_close((uv_handle_t *)&dg->timer, NULL);
        for (size_t t = 0; t < gw->cfg->target_groups[g].n_targets; t++)
            if (dg->targets[t].busy)
                uv_cancel((uv_req_t *)&dg->targets[t].req);
    }
}

static void dns_free(gateway_t *gw)
{
    for (size_t g = 0; gw->dns && g < gw->cfg->n_target_groups; g++)
        free(gw->dns[g].targets);
    free(gw->dns);
    gw->dns = NULL;
}

/* --- admin: /target_groups and /routes/NAME/weights --- */

static int reply_json(buf_t *out, json_t *j, int status)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return 500;
    buf_append_str(out, s);
    buf_append_str(out, "\n");
    free(s);
    return status;
}

static int reply_error(buf_t *out, int status, const char *code, const char *msg)
{
    return reply_json(out, json_pack("{s:s,s:s}", "error", code, "message", msg), status);
}

static int target_groups_json(gateway_t *gw, buf_t *out)
{
    const config_t *cfg = gw->cfg;
    uint64_t now = uv_now(gw->loop);
    json_t *root = json_object();
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        health_group_t *hg = &gw->health->groups[g];
        json_t *targets = json_array();
        for (size_t t = 0; t < tg->n_targets; t++) {
            health_target_t *ht = &hg->targets[t];
            const health_addr_t *a = atomic_load(&ht->addr);
            char addr[80] = "";
            if (a)
                addr_format((const struct sockaddr *)&a->ss, addr, sizeof addr);
            uint64_t until = atomic_load(&ht->ejected_until_ms);
            json_array_append_new(
                targets, json_pack("{s:s,s:s?,s:b,s:b,s:b,s:I,s:i,s:i,s:i}", "target",
                                   tg->targets[t].name, "address", a ? addr : NULL, "healthy",
                                   health_target_usable(ht, now), "health_check_ok",
                                   atomic_load(&ht->checked_healthy) != 0, "ejected", until > now,
                                   "ejected_for_ms", (json_int_t)(until > now ? until - now : 0),
                                   "ejections", (int)atomic_load(&ht->ejections),
                                   "consecutive_errors", (int)atomic_load(&ht->consecutive_errors),
                                   "inflight", (int)atomic_load(&ht->inflight)));
        }
        json_object_set_new(root, tg->name,
                            json_pack("{s:o,s:i,s:b,s:{s:i,s:i,s:i},s:{s:i,s:i,s:i}}", "targets",
                                      targets, "healthy_targets", (int)health_group_usable(hg, now),
                                      "required", tg->required, "circuit_breaker", "connections",
                                      (int)atomic_load(&hg->connections), "pending",
                                      (int)atomic_load(&hg->pending), "requests",
                                      (int)atomic_load(&hg->requests), "limits", "max_connections",
                                      (int)tg->max_connections, "max_pending", (int)tg->max_pending,
                                      "max_requests", (int)tg->max_requests));
    }
    return reply_json(out, root, 200);
}

static json_t *route_weights_json(gateway_t *gw, size_t r)
{
    const config_route_t *rt = &gw->cfg->routes[r];
    json_t *w = json_object();
    for (size_t b = 0; b < rt->n_backends; b++)
        json_object_set_new(w, gw->cfg->target_groups[rt->backends[b].target_group].name,
                            json_integer(weights_get(gw->weights, r, b)));
    return json_pack("{s:s,s:o}", "route", rt->name, "weights", w);
}

static int put_weights(gateway_t *gw, size_t r, const char *body, size_t len, buf_t *out)
{
    const config_route_t *rt = &gw->cfg->routes[r];
    json_error_t jerr;
    json_t *j = json_loadb(body, len, 0, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return reply_error(out, 400, "bad_request",
                           "body must be a JSON object of target group name to weight");
    }
    uint32_t v[MAX_ROUTE_BACKENDS];
    weights_load(gw->weights, r, v);
    const char *key;
    json_t *val;
    char msg[300];
    json_object_foreach(j, key, val)
    {
        size_t b = SIZE_MAX;
        for (size_t i = 0; i < rt->n_backends; i++)
            if (strcmp(gw->cfg->target_groups[rt->backends[i].target_group].name, key) == 0)
                b = i;
        if (b == SIZE_MAX) {
            snprintf(msg, sizeof msg, "\"%s\" is not a backend of route %s", key, rt->name);
            json_decref(j);
            return reply_error(out, 400, "bad_request", msg);
        }
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) > MAX_BACKEND_WEIGHT) {
            snprintf(msg, sizeof msg, "weight of \"%s\" must be an integer from 0 to %d", key,
                     MAX_BACKEND_WEIGHT);
            json_decref(j);
            return reply_error(out, 400, "bad_request", msg);
        }
        v[b] = (uint32_t)json_integer_value(val);
    }
    json_decref(j);
    uint64_t total = 0;
    for (size_t i = 0; i < rt->n_backends; i++)
        total += v[i];
    if (total == 0)
        return reply_error(out, 400, "bad_request", "at least one weight must be above 0");
    weights_set(gw->weights, r, v);
    log_info("route %s: weights changed through the admin API", rt->name);
    return reply_json(out, route_weights_json(gw, r), 200);
}

static int gw_handle(void *ctx, const char *method, size_t mlen, const char *path, size_t plen,
                     const char *body, size_t blen, buf_t *out)
{
    gateway_t *gw = ctx;
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    bool get = mlen == 3 && memcmp(method, "GET", 3) == 0;
    bool put = mlen == 3 && memcmp(method, "PUT", 3) == 0;
    if (plen == 7 && memcmp(path, "/config", 7) == 0) {
        if (!get)
            return reply_error(out, 405, "method_not_allowed", "use GET");
        json_t *j = config_json(gw->cfg);
        return j ? reply_json(out, j, 200) : 500;
    }
    if (plen == 14 && memcmp(path, "/target_groups", 14) == 0) {
        if (!get)
            return reply_error(out, 405, "method_not_allowed", "use GET");
        return target_groups_json(gw, out);
    }
    static const char pre[] = "/routes/", suf[] = "/weights";
    size_t lp = sizeof pre - 1, ls = sizeof suf - 1;
    if (plen > lp + ls && memcmp(path, pre, lp) == 0 && memcmp(path + plen - ls, suf, ls) == 0) {
        char name[256];
        size_t nlen = plen - lp - ls;
        if (nlen >= sizeof name)
            return reply_error(out, 404, "not_found", "no such route");
        memcpy(name, path + lp, nlen);
        name[nlen] = '\0';
        size_t r = config_find_route(gw->cfg, name);
        if (r == CONFIG_NONE)
            return reply_error(out, 404, "not_found", "no such route");
        if (get)
            return reply_json(out, route_weights_json(gw, r), 200);
        if (put)
            return put_weights(gw, r, body, blen, out);
        return reply_error(out, 405, "method_not_allowed", "use GET or PUT");
    }
    return 0;
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
    health_checker_stop(gw->checker);
    gw->checker = NULL;
    dns_stop(gw);
    for (size_t i = 0; gw->refresh && i < gw->cfg->n_sets; i++)
        uv_close((uv_handle_t *)&gw->refresh[i].timer, NULL);
    uv_close((uv_handle_t *)&gw->sig_term, NULL);
    uv_close((uv_handle_t *)&gw->sig_int, NULL);
    uv_close((uv_handle_t *)&gw->sig_hup, NULL);
    uv_close((uv_handle_t *)&gw->sig_usr1, NULL);
    uv_close((uv_handle_t *)&gw->drain_timer, NULL);
    uv_close((uv_handle_t *)&gw->drained, NULL);
    worker_group_stop(&gw->workers);
}

/* --- graceful shutdown: /readyz 503 at once; serve for drain_delay; close
 * the listeners and idle connections; answer in-flight requests with
 * Connection: close; exit when none is left or at drain_timeout --- */

static void on_worker_drained(void *ctx)
{
    gateway_t *gw = ctx; /* a worker thread: only atomics and async here */
    atomic_fetch_add(&gw->n_drained, 1);
    uv_async_send(&gw->drained);
}

static void on_drained_async(uv_async_t *a)
{
    gateway_t *gw = a->data;
    if (gw->draining && (size_t)atomic_load(&gw->n_drained) == gw->workers.n) {
        log_info("drained: every connection closed");
        gateway_stop(gw);
    }
}

static void worker_begin_drain(worker_t *w, void *arg)
{
    proxy_worker_t *pw = w->app;
    worker_close_listeners(w);
    pw->on_drained = on_worker_drained;
    pw->drained_ctx = arg;
    proxy_worker_drain(pw);
}

static void on_drain_timeout(uv_timer_t *t)
{
    gateway_t *gw = t->data;
    log_warn("drain_timeout reached with connections still open: closing them");
    gateway_stop(gw);
}

static void on_drain_delay(uv_timer_t *t)
{
    gateway_t *gw = t->data;
    log_info("closing listeners; in-flight requests get up to %llu ms",
             (unsigned long long)gw->cfg->server.drain_timeout_ms);
    for (size_t i = 0; i < gw->workers.n; i++)
        worker_post(&gw->workers.workers[i], worker_begin_drain, gw);
    uv_timer_start(&gw->drain_timer, on_drain_timeout, gw->cfg->server.drain_timeout_ms, 0);
}

static void gateway_drain(gateway_t *gw)
{
    if (gw->draining) {
        log_info("second signal: stopping now");
        gateway_stop(gw);
        return;
    }
    gw->draining = 1;
    log_info("draining: /readyz answers 503; serving for %llu ms more",
             (unsigned long long)gw->cfg->server.drain_delay_ms);
    uv_timer_start(&gw->drain_timer, on_drain_delay, gw->cfg->server.drain_delay_ms, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    gateway_t *gw = s->data;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
        gateway_drain(gw);
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
    gw.health = health_new(cfg);
    gw.weights = weights_new(cfg);
    if (!gw.health || !gw.weights || dns_start(&gw) != 0) {
        log_error("out of memory");
        goto out_workers;
    }
    proxy_shared_t shared = {cfg, gw.sets, gw.metrics, gw.access_log, gw.health, gw.weights};
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
    gw.checker = health_checker_start(gw.loop, cfg, gw.health, NULL, NULL);
    admin_hooks_t hooks = {
        .ctx = &gw, .ready = gw_ready, .metrics = gw_metrics, .handle = gw_handle};
    gw.admin = admin_start(gw.loop, (const struct sockaddr *)&cfg->admin_addr, cfg->admin_addrlen,
                           &hooks, err, sizeof err);
    if (!gw.admin) {
        log_error("%s", err);
        goto out_workers;
    }
    uv_timer_init(gw.loop, &gw.drain_timer);
    gw.drain_timer.data = &gw;
    uv_async_init(gw.loop, &gw.drained, on_drained_async);
    gw.drained.data = &gw;
    atomic_init(&gw.n_drained, 0);
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
    /* Keys this version validates but does not act on yet: say so. */
    if (cfg->server.control_socket)
        log_warn("server.control_socket is set, but takeover is not supported by this version");
    if (cfg->tracing.otlp_endpoint)
        log_warn("tracing.otlp_endpoint is set, but trace export is not supported by this version");
    if (cfg->redis_address)
        log_warn("redis.address is set, but nothing in this version uses Redis");
    for (size_t l = 0; l < nl; l++)
        log_info("listening on %s (%zu workers)", cfg->server.listeners[l].address, nw);
    log_info("admin on %s", cfg->admin_listen);
    uv_run(gw.loop, UV_RUN_DEFAULT);
    code = 0;

out_workers:
    if (!gw.stopping) {
        admin_stop(gw.admin);
        health_checker_stop(gw.checker);
        dns_stop(&gw);
        worker_group_stop(&gw.workers);
        for (size_t i = 0; gw.refresh && i < cfg->n_sets; i++)
            if (!uv_is_closing((uv_handle_t *)&gw.refresh[i].timer))
                uv_close((uv_handle_t *)&gw.refresh[i].timer, NULL);
        uv_run(gw.loop, UV_RUN_DEFAULT);
    }
    for (size_t i = 0; gw.pws && i < nw; i++)
        proxy_worker_free(gw.pws[i]);
    free(gw.pws);
    dns_free(&gw);
    health_free(gw.health);
    weights_free(gw.weights);
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
