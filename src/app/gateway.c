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
#include "net/takeover.h"
#include "net/worker.h"
#include "observe/access_log.h"
#include "observe/metrics.h"
#include "observe/trace.h"
#include "policy/health.h"
#include "policy/health_check.h"
#include "proxy/proxy.h"
#include "routing/set.h"
#include "routing/weights.h"

typedef struct gw_gen gw_gen_t;
typedef struct gateway gateway_t;

typedef struct set_refresh {
    uv_timer_t timer;
    uv_work_t work;
    gw_gen_t *gen;
    size_t index;
    set_members_t *fetched;
    int busy;
    int rc;
    char err[256];
} set_refresh_t;

typedef struct dns_target {
    uv_getaddrinfo_t req;
    gw_gen_t *gen;
    size_t group;
    size_t target;
    int busy;
} dns_target_t;

typedef struct dns_group {
    uv_timer_t timer;
    gw_gen_t *gen;
    size_t group;
    dns_target_t *targets; /* named targets only have a use for it */
} dns_group_t;

/* What the gateway builds from one config snapshot and shares with the
 * workers. A reload makes a new one; the old one stops its timers at once
 * and is freed once every worker let go of its part (its last request on
 * the old snapshot finished) and its callbacks have run. */
struct gw_gen {
    gateway_t *gw;
    uint64_t id; /* 1 for the config at start, then one more per reload */
    config_t *cfg;
    set_t **sets;
    set_refresh_t *refresh;
    bool *set_failed; /* the first read failed (counted on activation) */
    health_t *health;
    weights_t *weights;
    health_checker_t *checker;
    dns_group_t *dns;
    atomic_uint workers_holding;
    unsigned busy; /* callbacks still to come: set reads, lookups, handle closes */
    bool retired;
    gw_gen_t *next_retired;
};

struct gateway {
    uv_loop_t *loop;
    gw_gen_t *cur;
    gw_gen_t *retired;
    uv_timer_t reclaim; /* frees retired generations */
    worker_group_t workers;
    proxy_worker_t **pws;
    metrics_registry_t *metrics;
    access_log_t *access_log;
    tracer_t *tracer;
    admin_t *admin;
    takeover_server_t *takeover;
    worker_fd_t *fds; /* every listening socket of the workers */
    size_t n_fds;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
    uv_timer_t drain_timer;
    uv_async_t drained;
    atomic_int n_drained;
    int draining;
    int stopping;
    /* reload */
    uv_work_t reload_work;
    bool reloading;
    bool reload_again;
    config_t *reload_cfg; /* built by the work, NULL when invalid */
    gw_gen_t *reload_gen; /* its sets, read by the work */
    config_errors_t reload_errs;
    uint64_t generations; /* made so far */
    uint64_t loaded_hash; /* of the file the current snapshot came from */
    uint64_t failed_hash; /* of the last file that failed to load (0: none) */
    uint64_t reload_hash;
    uv_fs_event_t watch;
    uv_timer_t watch_debounce;
    uint64_t watch_first_ms; /* first event of the pending debounce */
    bool watching;
};

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

/* --- sets: re-read off the loop, installed on it --- */

/* A successful read: ficus_set_members and the last success time. */
static void set_loaded(gw_gen_t *gen, size_t i)
{
    metrics_registry_t *m = gen->gw->metrics;
    metrics_set_loaded(m, metrics_set_slot(m, gen->cfg->sets[i].name), set_count(gen->sets[i]),
                       time_now_realtime_ms());
}

static void set_work(uv_work_t *w)
{
    set_refresh_t *r = w->data;
    r->rc = set_fetch(r->gen->sets[r->index], &r->fetched, r->err, sizeof r->err);
}

static void set_work_done(uv_work_t *w, int status)
{
    set_refresh_t *r = w->data;
    gw_gen_t *gen = r->gen;
    r->busy = 0;
    gen->busy--;
    if (r->fetched) {
        if (!gen->retired) {
            set_t *set = gen->sets[r->index];
            size_t added, removed;
            set_members_diff(set_current(set), r->fetched, &added, &removed);
            if (added || removed)
                log_info("set %s: %zu member%s (%zu added, %zu removed)", set_name(set),
                         set_members_count(r->fetched),
                         set_members_count(r->fetched) == 1 ? "" : "s", added, removed);
            set_swap(set, r->fetched);
            set_loaded(gen, r->index);
        } else {
            set_members_free(r->fetched);
        }
        r->fetched = NULL;
    }
    if (status == 0 && r->rc != 0 && !gen->retired) {
        log_limited(LOG_ERROR, "%s (keeping %zu members)", r->err, set_count(gen->sets[r->index]));
        metrics_set_reload_failure(
            gen->gw->metrics, metrics_set_slot(gen->gw->metrics, gen->cfg->sets[r->index].name));
    }
}

static void on_set_timer(uv_timer_t *t)
{
    set_refresh_t *r = t->data;
    gw_gen_t *gen = r->gen;
    if (r->busy || gen->gw->stopping || gen->retired)
        return;
    r->busy = 1;
    r->work.data = r;
    if (uv_queue_work(gen->gw->loop, &r->work, set_work, set_work_done) == 0)
        gen->busy++;
    else
        r->busy = 0;
}

/* Blocking first read of every set (start: main thread; reload: the reload
 * work). The members are installed at once: no worker reads these sets yet. */
static int sets_create(gateway_t *gw, gw_gen_t *gen)
{
    config_t *cfg = gen->cfg;
    if (!cfg->n_sets)
        return 0;
    gen->sets = calloc(cfg->n_sets, sizeof *gen->sets);
    gen->refresh = calloc(cfg->n_sets, sizeof *gen->refresh);
    gen->set_failed = calloc(cfg->n_sets, sizeof *gen->set_failed);
    if (!gen->sets || !gen->refresh || !gen->set_failed)
        return -1;
    for (size_t i = 0; i < cfg->n_sets; i++) {
        gen->sets[i] = set_new(&cfg->sets[i], worker_group_retire_cb, &gw->workers);
        if (!gen->sets[i])
            return -1;
        char err[256];
        set_members_t *m;
        if (set_fetch(gen->sets[i], &m, err, sizeof err) != 0) {
            log_error("%s (starting empty)", err);
            gen->set_failed[i] = true;
        } else {
            set_swap(gen->sets[i], m); /* no old members: nothing retired */
            set_loaded(gen, i);
        }
    }
    return 0;
}

/* A set whose first read failed at a reload keeps the members the previous
 * configuration's set of that name had, rather than starting empty. */
static void sets_start(gw_gen_t *gen, const gw_gen_t *old)
{
    config_t *cfg = gen->cfg;
    for (size_t i = 0; i < cfg->n_sets; i++) {
        if (gen->set_failed[i]) {
            metrics_set_reload_failure(gen->gw->metrics,
                                       metrics_set_slot(gen->gw->metrics, cfg->sets[i].name));
            size_t o = old ? config_find_set(old->cfg, cfg->sets[i].name) : CONFIG_NONE;
            if (o != CONFIG_NONE && set_adopt(gen->sets[i], old->sets[o]))
                log_warn("set %s: keeping the %zu members it had before the reload",
                         cfg->sets[i].name, set_count(gen->sets[i]));
        } else
            log_info("set %s: %zu members", cfg->sets[i].name, set_count(gen->sets[i]));
        set_refresh_t *r = &gen->refresh[i];
        r->gen = gen;
        r->index = i;
        uv_timer_init(gen->gw->loop, &r->timer);
        r->timer.data = r;
        uv_timer_start(&r->timer, on_set_timer, cfg->sets[i].refresh_ms, cfg->sets[i].refresh_ms);
    }
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
    const config_t *cfg = gw->cur->cfg;
    for (size_t g = 0; g < cfg->n_target_groups; g++)
        if (cfg->target_groups[g].required &&
            health_group_usable(&gw->cur->health->groups[g], now) == 0) {
            snprintf(reason, n, "required target group %s has no healthy target",
                     cfg->target_groups[g].name);
            return 0;
        }
    return 1;
}

static void each_weight(void *ctx, void (*emit)(void *, const char *, const char *, uint32_t),
                        void *ctx2)
{
    gateway_t *gw = ctx;
    const config_t *cfg = gw->cur->cfg;
    for (size_t r = 0; r < cfg->n_routes; r++)
        for (size_t b = 0; b < cfg->routes[r].n_backends; b++) {
            const config_backend_t *be = &cfg->routes[r].backends[b];
            emit(ctx2, cfg->routes[r].name, cfg->target_groups[be->target_group].name,
                 weights_get(gw->cur->weights, r, b));
        }
}

static void each_health(void *ctx, void (*emit)(void *, const char *, const char *, int, int),
                        void *ctx2)
{
    gateway_t *gw = ctx;
    const config_t *cfg = gw->cur->cfg;
    uint64_t now = uv_now(gw->loop);
    for (size_t g = 0; g < cfg->n_target_groups; g++)
        for (size_t t = 0; t < cfg->target_groups[g].n_targets; t++) {
            const health_target_t *ht = &gw->cur->health->groups[g].targets[t];
            emit(ctx2, cfg->target_groups[g].name, cfg->target_groups[g].targets[t].name,
                 health_target_usable(ht, now), health_target_ejected(ht, now));
        }
}

static void each_panic(void *ctx, void (*emit)(void *, const char *, int), void *ctx2)
{
    gateway_t *gw = ctx;
    const config_t *cfg = gw->cur->cfg;
    for (size_t g = 0; g < cfg->n_target_groups; g++)
        emit(ctx2, cfg->target_groups[g].name,
             (int)atomic_load_explicit(&gw->cur->health->groups[g].panic, memory_order_relaxed));
}

static void gw_metrics(void *ctx, buf_t *out)
{
    gateway_t *gw = ctx;
    metrics_gauges_t g = {.ctx = gw,
                          .each_backend_weight = each_weight,
                          .each_target_health = each_health,
                          .each_group_panic = each_panic};
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
    gw_gen_t *gen = d->gen;
    gateway_t *gw = gen->gw;
    d->busy = 0;
    gen->busy--;
    const config_target_group_t *tg = &gen->cfg->target_groups[d->group];
    const config_target_t *t = &tg->targets[d->target];
    if (status != 0 || !res) {
        if (status != UV_ECANCELED && !gen->retired)
            log_limited(LOG_WARN,
                        "target group %s: cannot resolve %s: %s (keeping the last address)",
                        tg->name, t->name, uv_strerror(status));
    } else if (!gw->stopping && !gen->retired) {
        health_target_t *ht = &gen->health->groups[d->group].targets[d->target];
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
    gw_gen_t *gen = dg->gen;
    const config_target_group_t *tg = &gen->cfg->target_groups[dg->group];
    for (size_t i = 0; i < tg->n_targets; i++) {
        const config_target_t *t = &tg->targets[i];
        dns_target_t *d = &dg->targets[i];
        if (t->numeric || d->busy || gen->gw->stopping || gen->retired)
            continue;
        char port[8];
        snprintf(port, sizeof port, "%u", t->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        d->req.data = d;
        if (uv_getaddrinfo(gen->gw->loop, &d->req, on_dns, t->host, port, &hints) == 0) {
            d->busy = 1;
            gen->busy++;
        }
    }
}

static int dns_start(gw_gen_t *gen)
{
    const config_t *cfg = gen->cfg;
    gen->dns = calloc(cfg->n_target_groups ? cfg->n_target_groups : 1, sizeof *gen->dns);
    if (!gen->dns)
        return -1;
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        dns_group_t *dg = &gen->dns[g];
        dg->gen = gen;
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
            dg->targets[t].gen = gen;
            dg->targets[t].group = g;
            dg->targets[t].target = t;
        }
        uv_timer_init(gen->gw->loop, &dg->timer);
        dg->timer.data = dg;
        uv_timer_start(&dg->timer, on_dns_timer, tg->dns_refresh_ms, tg->dns_refresh_ms);
    }
    return 0;
}

/* --- generations --- */

static void gen_handle_closed(uv_handle_t *h)
{
    gw_gen_t *gen = h->data;
    gen->busy--;
}

static void gen_close_timer(gw_gen_t *gen, uv_timer_t *t)
{
    if (uv_is_closing((uv_handle_t *)t))
        return;
    t->data = gen;
    gen->busy++;
    uv_close((uv_handle_t *)t, gen_handle_closed);
}

/* Stops everything of gen that runs on the main loop: set refreshes, DNS,
 * health checks. Its callbacks still to come find gen->retired set. */
static void gen_stop(gw_gen_t *gen)
{
    if (gen->retired)
        return;
    gen->retired = true;
    health_checker_stop(gen->checker);
    gen->checker = NULL;
    for (size_t i = 0; gen->refresh && i < gen->cfg->n_sets; i++) {
        if (gen->refresh[i].busy)
            uv_cancel((uv_req_t *)&gen->refresh[i].work);
        if (gen->refresh[i].gen)
            gen_close_timer(gen, &gen->refresh[i].timer);
    }
    for (size_t g = 0; gen->dns && g < gen->cfg->n_target_groups; g++) {
        dns_group_t *dg = &gen->dns[g];
        if (!dg->targets)
            continue;
        gen_close_timer(gen, &dg->timer);
        for (size_t t = 0; t < gen->cfg->target_groups[g].n_targets; t++)
            if (dg->targets[t].busy)
                uv_cancel((uv_req_t *)&dg->targets[t].req);
    }
}

static void gen_free(gw_gen_t *gen)
{
    if (!gen)
        return;
    for (size_t g = 0; gen->dns && g < gen->cfg->n_target_groups; g++)
        free(gen->dns[g].targets);
    free(gen->dns);
    health_free(gen->health);
    weights_free(gen->weights);
    for (size_t i = 0; gen->sets && i < gen->cfg->n_sets; i++)
        set_free(gen->sets[i]);
    free(gen->sets);
    free(gen->refresh);
    free(gen->set_failed);
    config_unref(gen->cfg);
    free(gen);
}

/* Worker thread: a worker freed its part of gen. */
static void gen_worker_let_go(void *ctx)
{
    gw_gen_t *gen = ctx;
    atomic_fetch_sub(&gen->workers_holding, 1);
}

static void on_reclaim(uv_timer_t *t)
{
    gateway_t *gw = t->data;
    gw_gen_t **pp = &gw->retired;
    while (*pp) {
        gw_gen_t *gen = *pp;
        if (atomic_load(&gen->workers_holding) == 0 && gen->busy == 0) {
            *pp = gen->next_retired;
            if (gen->id)
                log_info("configuration #%llu released: its last request is done",
                         (unsigned long long)gen->id);
            gen_free(gen);
        } else {
            pp = &gen->next_retired;
        }
    }
    if (!gw->retired)
        uv_timer_stop(&gw->reclaim);
}

/* Blocking part (any thread): resolves named targets and reads the sets. */
static gw_gen_t *gen_prepare(gateway_t *gw, config_t *cfg)
{
    gw_gen_t *gen = calloc(1, sizeof *gen);
    if (!gen)
        return NULL;
    gen->gw = gw;
    gen->cfg = config_ref(cfg);
    resolve_targets(cfg);
    if (sets_create(gw, gen) != 0) {
        gen_free(gen);
        return NULL;
    }
    return gen;
}

/* Main thread: the state shared by the workers, the main-loop timers, and
 * one worker generation per worker (in pgens). old, when there is one, lends
 * its target verdicts. */
static int gen_activate(gateway_t *gw, gw_gen_t *gen, const gw_gen_t *old, proxy_gen_t **pgens)
{
    config_t *cfg = gen->cfg;
    gen->health = health_new(cfg);
    gen->weights = weights_new(cfg);
    if (!gen->health || !gen->weights)
        return -1;
    if (old)
        health_inherit(gen->health, old->health);
    proxy_shared_t shared = {.cfg = cfg,
                             .id = gen->id ? gen->id : gw->generations + 1,
                             .sets = gen->sets,
                             .metrics = gw->metrics,
                             .health = gen->health,
                             .weights = gen->weights,
                             .gen_freed = gen_worker_let_go,
                             .gen_ctx = gen};
    for (size_t i = 0; i < gw->workers.n; i++) {
        pgens[i] = proxy_gen_new(&shared, i);
        if (!pgens[i])
            return -1;
    }
    if (dns_start(gen) != 0)
        return -1;
    sets_start(gen, old);
    gen->checker = health_checker_start(gw->loop, cfg, gen->health, NULL, NULL);
    atomic_store(&gen->workers_holding, (unsigned)gw->workers.n);
    return 0;
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
    const config_t *cfg = gw->cur->cfg;
    uint64_t now = uv_now(gw->loop);
    json_t *root = json_object();
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        health_group_t *hg = &gw->cur->health->groups[g];
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
    const config_route_t *rt = &gw->cur->cfg->routes[r];
    json_t *w = json_object();
    for (size_t b = 0; b < rt->n_backends; b++)
        json_object_set_new(w, gw->cur->cfg->target_groups[rt->backends[b].target_group].name,
                            json_integer(weights_get(gw->cur->weights, r, b)));
    return json_pack("{s:s,s:o}", "route", rt->name, "weights", w);
}

static int put_weights(gateway_t *gw, size_t r, const char *body, size_t len, buf_t *out)
{
    const config_route_t *rt = &gw->cur->cfg->routes[r];
    json_error_t jerr;
    json_t *j = json_loadb(body, len, 0, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return reply_error(out, 400, "bad_request",
                           "body must be a JSON object of target group name to weight");
    }
    uint32_t v[MAX_ROUTE_BACKENDS];
    weights_load(gw->cur->weights, r, v);
    const char *key;
    json_t *val;
    char msg[300];
    json_object_foreach(j, key, val)
    {
        size_t b = SIZE_MAX;
        for (size_t i = 0; i < rt->n_backends; i++)
            if (strcmp(gw->cur->cfg->target_groups[rt->backends[i].target_group].name, key) == 0)
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
    weights_set(gw->cur->weights, r, v);
    log_info("route %s: weights changed through the admin API", rt->name);
    return reply_json(out, route_weights_json(gw, r), 200);
}

static const char *gw_token(void *ctx)
{
    const gateway_t *gw = ctx;
    return gw->cur->cfg->admin_token;
}

static int gw_handle(void *ctx, const char *method, size_t mlen, const char *path, size_t plen,
                     const char *body, size_t blen, buf_t *out, const char **allow)
{
    gateway_t *gw = ctx;
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    bool get = mlen == 3 && memcmp(method, "GET", 3) == 0;
    bool put = mlen == 3 && memcmp(method, "PUT", 3) == 0;
    if (plen == 7 && memcmp(path, "/config", 7) == 0) {
        if (!get) {
            *allow = "GET";
            return reply_error(out, 405, "method_not_allowed", "use GET");
        }
        json_t *j = config_json(gw->cur->cfg);
        return j ? reply_json(out, j, 200) : 500;
    }
    if (plen == 14 && memcmp(path, "/target_groups", 14) == 0) {
        if (!get) {
            *allow = "GET";
            return reply_error(out, 405, "method_not_allowed", "use GET");
        }
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
        size_t r = config_find_route(gw->cur->cfg, name);
        if (r == CONFIG_NONE)
            return reply_error(out, 404, "not_found", "no such route");
        if (get)
            return reply_json(out, route_weights_json(gw, r), 200);
        if (put)
            return put_weights(gw, r, body, blen, out);
        *allow = "GET, PUT";
        return reply_error(out, 405, "method_not_allowed", "use GET or PUT");
    }
    return 0;
}

/* --- reload: SIGHUP or a change of the file. The new file is read,
 * validated, resolved and its sets read off the loop; if valid, a new
 * generation goes to every worker for new requests while requests in flight
 * finish on the old one. Otherwise the old one keeps serving, every error is
 * logged and the failure counted. --- */

/* FNV-1a of the file, to tell a real change from an editor's touch. */
static uint64_t file_hash(const char *path, bool *ok)
{
    uint64_t h = 0xcbf29ce484222325ull;
    *ok = false;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++)
            h = (h ^ (uint8_t)buf[i]) * 0x100000001b3ull;
    *ok = !ferror(f);
    fclose(f);
    return h;
}

/* Settings bound to sockets, threads and files opened at start: a reload
 * that changes one is refused (a takeover restart applies it). */
static const char *restart_only_change(const config_t *a, const config_t *b)
{
    return config_restart_only_change(a, b);
}

static void reload_work(uv_work_t *w)
{
    gateway_t *gw = w->data;
    const config_t *cur = gw->cur->cfg;
    bool ok;
    gw->reload_hash = file_hash(cur->path, &ok);
    gw->reload_cfg = config_load_file(cur->path, &gw->reload_errs);
    if (!gw->reload_cfg)
        return;
    const char *key = restart_only_change(cur, gw->reload_cfg);
    if (key) {
        size_t line, col;
        config_key_position(gw->reload_cfg, key, &line, &col);
        if (!line) /* removed from the new file: the old one says where it was */
            config_key_position(cur, key, &line, &col);
        config_errors_add(&gw->reload_errs, cur->path, line, col,
                          "%s changed: it takes effect only at a restart (use a takeover restart, "
                          "see docs/operations.md); nothing was applied",
                          key);
        config_unref(gw->reload_cfg);
        gw->reload_cfg = NULL;
        return;
    }
    gw->reload_gen = gen_prepare(gw, gw->reload_cfg);
    if (!gw->reload_gen) {
        config_errors_add(&gw->reload_errs, cur->path, 0, 0, "out of memory");
        config_unref(gw->reload_cfg);
        gw->reload_cfg = NULL;
    }
}

static void worker_install(worker_t *w, void *arg)
{
    proxy_gen_t *g = arg;
    proxy_gen_ref(g);
    proxy_worker_install(w->app, g);
}

static void reload_start(gateway_t *gw, const char *why);

static void reload_done(uv_work_t *w, int status)
{
    gateway_t *gw = w->data;
    gw->reloading = false;
    config_t *cfg = gw->reload_cfg;
    gw_gen_t *gen = gw->reload_gen;
    gw->reload_cfg = NULL;
    gw->reload_gen = NULL;
    bool ok = status == 0 && cfg && gen && !gw->draining && !gw->stopping;
    proxy_gen_t **pgens = NULL;
    if (ok) {
        pgens = calloc(gw->workers.n, sizeof *pgens);
        ok = pgens && gen_activate(gw, gen, gw->cur, pgens) == 0;
        if (!ok)
            config_errors_add(&gw->reload_errs, cfg->path, 0, 0, "out of memory");
    }
    if (ok) {
        gw_gen_t *old = gw->cur;
        gw->cur = gen;
        gen->id = ++gw->generations;
        for (size_t i = 0; i < gw->workers.n; i++)
            worker_post(&gw->workers.workers[i], worker_install, pgens[i]);
        gen_stop(old);
        old->next_retired = gw->retired;
        gw->retired = old;
        if (!uv_is_active((uv_handle_t *)&gw->reclaim))
            uv_timer_start(&gw->reclaim, on_reclaim, 100, 100);
        gw->loaded_hash = gw->reload_hash;
        gw->failed_hash = 0;
        metrics_config_reload(gw->metrics, true, time_now_realtime_ms());
        log_info("configuration #%llu loaded from %s: %zu route%s, %zu target group%s; requests "
                 "in flight finish on #%llu",
                 (unsigned long long)gen->id, cfg->path, cfg->n_routes,
                 cfg->n_routes == 1 ? "" : "s", cfg->n_target_groups,
                 cfg->n_target_groups == 1 ? "" : "s", (unsigned long long)old->id);
        log_set_level((log_level_t)cfg->log_level);
        log_set_json(cfg->log_json);
    } else {
        if (pgens)
            for (size_t i = 0; i < gw->workers.n; i++)
                proxy_gen_discard(pgens[i]);
        if (gen) {
            gen_stop(gen);
            gen->next_retired = gw->retired; /* its handles may be closing */
            gw->retired = gen;
            atomic_store(&gen->workers_holding, 0);
            if (!gw->stopping && !uv_is_active((uv_handle_t *)&gw->reclaim))
                uv_timer_start(&gw->reclaim, on_reclaim, 100, 100);
        }
        if (!gw->draining && !gw->stopping) {
            for (size_t i = 0; i < gw->reload_errs.n; i++)
                log_error("reload: %s", gw->reload_errs.items[i]);
            log_error("reload failed: the previous configuration keeps serving");
            gw->failed_hash = gw->reload_hash; /* the watch waits for another change */
            metrics_config_reload(gw->metrics, false, time_now_realtime_ms());
        }
    }
    free(pgens);
    config_unref(cfg);
    config_errors_deinit(&gw->reload_errs);
    if (gw->reload_again) {
        gw->reload_again = false;
        reload_start(gw, "the file changed again");
    }
}

static void reload_start(gateway_t *gw, const char *why)
{
    if (gw->draining || gw->stopping)
        return;
    if (strcmp(gw->cur->cfg->path, "<demo>") == 0) {
        log_warn("%s: the embedded demo configuration cannot be reloaded", why);
        return;
    }
    if (gw->reloading) {
        gw->reload_again = true; /* once the current one is done */
        return;
    }
    log_info("%s: reloading %s", why, gw->cur->cfg->path);
    gw->reloading = true;
    config_errors_init(&gw->reload_errs);
    gw->reload_work.data = gw;
    if (uv_queue_work(gw->loop, &gw->reload_work, reload_work, reload_done) != 0) {
        gw->reloading = false;
        config_errors_deinit(&gw->reload_errs);
        log_error("reload: cannot queue the work");
        metrics_config_reload(gw->metrics, false, time_now_realtime_ms());
    }
}

/* The directory is watched, not the file: editors and Kubernetes ConfigMaps
 * replace the file (rename, symlink swap) rather than write into it. Events
 * are debounced, and only a change of content reloads. */
static void on_watch_debounced(uv_timer_t *t)
{
    gateway_t *gw = t->data;
    bool ok;
    uint64_t h = file_hash(gw->cur->cfg->path, &ok);
    if (ok && h != gw->loaded_hash && h != gw->failed_hash)
        reload_start(gw, "configuration file changed");
}

/* Events about the file itself, or about Kubernetes' `..data` symlink and
 * its timestamped `..2024_...` directories, are the file's; others (a log
 * written beside it, an editor's swap file) are not. */
static bool watch_concerns(const gateway_t *gw, const char *filename)
{
    if (!filename)
        return true; /* the platform does not say: check */
    const char *path = gw->cur->cfg->path;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strcmp(filename, base) == 0 || strncmp(filename, "..", 2) == 0;
}

static void on_watch(uv_fs_event_t *e, const char *filename, int events, int status)
{
    (void)events;
    gateway_t *gw = e->data;
    if (status < 0 || gw->stopping || !watch_concerns(gw, filename))
        return;
    /* Debounced, but never past CONFIG_WATCH_MAX_DELAY_MS after the first
     * event: a file written again and again is still checked. */
    uint64_t now = uv_now(gw->loop);
    if (!uv_is_active((uv_handle_t *)&gw->watch_debounce))
        gw->watch_first_ms = now;
    else if (now - gw->watch_first_ms + CONFIG_WATCH_DEBOUNCE_MS > CONFIG_WATCH_MAX_DELAY_MS)
        return;
    uv_timer_start(&gw->watch_debounce, on_watch_debounced, CONFIG_WATCH_DEBOUNCE_MS, 0);
}

static void watch_start(gateway_t *gw)
{
    const char *path = gw->cur->cfg->path;
    if (strcmp(path, "<demo>") == 0)
        return;
    bool ok;
    gw->loaded_hash = file_hash(path, &ok);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    uv_timer_init(gw->loop, &gw->watch_debounce);
    gw->watch_debounce.data = gw;
    uv_fs_event_init(gw->loop, &gw->watch);
    gw->watch.data = gw;
    int rc = uv_fs_event_start(&gw->watch, on_watch, dir, 0);
    if (rc != 0)
        log_warn("cannot watch %s for changes (%s): reload with SIGHUP", dir, uv_strerror(rc));
    gw->watching = true;
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
    takeover_server_stop(gw->takeover);
    gw->takeover = NULL;
    gen_stop(gw->cur);
    if (gw->watching) {
        uv_close((uv_handle_t *)&gw->watch, NULL);
        uv_close((uv_handle_t *)&gw->watch_debounce, NULL);
        gw->watching = false;
    }
    uv_close((uv_handle_t *)&gw->sig_term, NULL);
    uv_close((uv_handle_t *)&gw->sig_int, NULL);
    uv_close((uv_handle_t *)&gw->sig_hup, NULL);
    uv_close((uv_handle_t *)&gw->sig_usr1, NULL);
    uv_close((uv_handle_t *)&gw->drain_timer, NULL);
    uv_close((uv_handle_t *)&gw->drained, NULL);
    uv_close((uv_handle_t *)&gw->reclaim, NULL);
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
    proxy_worker_drain(pw, 0);
}

/* After a takeover: the listeners live on in the new process. */
static void worker_begin_handover_drain(worker_t *w, void *arg)
{
    proxy_worker_t *pw = w->app;
    worker_close_listeners(w);
    pw->on_drained = on_worker_drained;
    pw->drained_ctx = arg;
    proxy_worker_drain(pw, TAKEOVER_IDLE_GRACE_MS);
}

/* A new ficus took the listening sockets over and serves them: drain as on
 * SIGTERM, without drain_delay (nothing needs to notice readiness: the
 * sockets never stopped accepting). */
static void on_drain_timeout(uv_timer_t *t);

static void on_handover(void *ctx)
{
    gateway_t *gw = ctx;
    if (gw->stopping)
        return;
    log_info("takeover: a new ficus serves the listeners now; draining (up to %llu ms)",
             (unsigned long long)gw->cur->cfg->server.drain_timeout_ms);
    takeover_server_stop(gw->takeover);
    gw->takeover = NULL;
    admin_stop(gw->admin); /* its socket is the new process's now */
    gw->admin = NULL;
    gw->draining = 1;
    uv_timer_stop(&gw->drain_timer);
    for (size_t i = 0; i < gw->workers.n; i++)
        worker_post(&gw->workers.workers[i], worker_begin_handover_drain, gw);
    uv_timer_start(&gw->drain_timer, on_drain_timeout, gw->cur->cfg->server.drain_timeout_ms, 0);
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
             (unsigned long long)gw->cur->cfg->server.drain_timeout_ms);
    for (size_t i = 0; i < gw->workers.n; i++)
        worker_post(&gw->workers.workers[i], worker_begin_drain, gw);
    uv_timer_start(&gw->drain_timer, on_drain_timeout, gw->cur->cfg->server.drain_timeout_ms, 0);
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
             (unsigned long long)gw->cur->cfg->server.drain_delay_ms);
    uv_timer_start(&gw->drain_timer, on_drain_delay, gw->cur->cfg->server.drain_delay_ms, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    gateway_t *gw = s->data;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
        log_info("%s received: %s", signum == SIGTERM ? "SIGTERM" : "SIGINT",
                 gw->draining ? "stopping now" : "draining");
        gateway_drain(gw);
        break;
    case SIGHUP:
        log_info("SIGHUP received: reloading %s", gw->cur->cfg->path);
        reload_start(gw, "SIGHUP");
        break;
    case SIGUSR1:
        log_info("SIGUSR1 received: reopening the access log");
        if (gw->access_log && access_log_reopen(gw->access_log) != 0)
            log_error("access log: reopen failed");
        break;
    }
}

static void worker_on_stop(worker_t *w) { proxy_worker_stop(w->app); }

/* --- listening sockets: opened here, or taken over from the ficus that
 * runs on server.control_socket --- */

typedef struct listen_plan {
    worker_fd_t *fds;
    size_t n;
    int admin_fd; /* -1: bind admin.listen */
    takeover_client_t tc;
    bool took_over;
} listen_plan_t;

/* Every received socket serves: closing one would drop the connections
 * queued on it. Each configured listener gets one socket per worker at
 * least; a listener the new config no longer has is closed (logged). */
static int listeners_plan(const config_t *cfg, listen_plan_t *p, char *err, size_t errlen)
{
    size_t nw = cfg->server.workers, nl = cfg->server.n_listeners;
    p->admin_fd = -1;
    p->tc.sock = -1;
    if (cfg->server.control_socket) {
        int rc = takeover_client_fetch(cfg->server.control_socket, &p->tc, err, errlen);
        if (rc < 0)
            return -1;
        p->took_over = rc == 1;
    }
    size_t nr = p->took_over ? p->tc.n : 0;
    bool *used = calloc(nr ? nr : 1, sizeof *used);
    p->fds = calloc(nr + nw * nl + 1, sizeof *p->fds);
    if (!used || !p->fds) {
        free(used);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t l = 0; l < nl && rc == 0; l++) {
        const config_listener_t *li = &cfg->server.listeners[l];
        size_t k = 0;
        for (size_t j = 0; j < nr; j++)
            if (!used[j] && takeover_fd_matches(p->tc.fds[j], (const struct sockaddr *)&li->addr,
                                                li->addrlen)) {
                used[j] = true;
                p->fds[p->n++] = (worker_fd_t){p->tc.fds[j], (uint32_t)(k++ % nw), (uint32_t)l};
            }
        if (k)
            log_info("takeover: %zu listening sockets for %s", k, li->address);
        else if (listener_check_free((const struct sockaddr *)&li->addr, li->addrlen, err,
                                     errlen) != 0) {
            rc = -1;
            break;
        }
        for (size_t w = k; w < nw; w++) {
            int fd = listener_open((const struct sockaddr *)&li->addr, li->addrlen, LISTEN_BACKLOG,
                                   err, errlen);
            if (fd < 0) {
                rc = -1;
                break;
            }
            p->fds[p->n++] = (worker_fd_t){fd, (uint32_t)w, (uint32_t)l};
        }
    }
    for (size_t j = 0; j < nr && rc == 0; j++) {
        if (used[j])
            continue;
        if (p->admin_fd < 0 &&
            takeover_fd_matches(p->tc.fds[j], (const struct sockaddr *)&cfg->admin_addr,
                                cfg->admin_addrlen)) {
            p->admin_fd = p->tc.fds[j];
            continue;
        }
        char name[80] = "?";
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(p->tc.fds[j], (struct sockaddr *)&ss, &len) == 0)
            addr_format((const struct sockaddr *)&ss, name, sizeof name);
        log_warn("takeover: %s is not in the new configuration: closing it", name);
        close(p->tc.fds[j]);
        p->tc.fds[j] = -1;
    }
    free(used);
    return rc;
}

/* --- run --- */
/* --- run --- */

/* Lets a later ficus take the listening sockets over (section 7). */
static void takeover_serve(gateway_t *gw, const char *path)
{
    size_t n = gw->n_fds;
    int *fds = calloc(n + 1, sizeof *fds);
    if (!fds)
        return;
    for (size_t i = 0; i < n; i++)
        fds[i] = gw->fds[i].fd;
    if (gw->admin && admin_fd(gw->admin) >= 0)
        fds[n++] = admin_fd(gw->admin);
    char err[512];
    gw->takeover = takeover_server_start(gw->loop, path, fds, n, on_handover, gw, err, sizeof err);
    free(fds);
    if (!gw->takeover)
        log_error("%s: a restart cannot take this process's sockets over", err);
    else
        log_info("control socket %s: a new ficus run can take over the listeners", path);
}

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
    listen_plan_t plan = {0};
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
    uv_timer_init(gw.loop, &gw.reclaim);
    gw.reclaim.data = &gw;
    gw.cur = gen_prepare(&gw, cfg);
    if (gw.cur)
        gw.cur->id = ++gw.generations;
    if (!gw.cur || gen_activate(&gw, gw.cur, NULL, pgens) != 0) {
        log_error("out of memory");
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
                           .ready = gw_ready,
                           .metrics = gw_metrics,
                           .handle = gw_handle,
                           .token = gw_token};
    gw.admin = admin_start(gw.loop, (const struct sockaddr *)&cfg->admin_addr, cfg->admin_addrlen,
                           plan.admin_fd, &hooks, err, sizeof err);
    if (!gw.admin) {
        log_error("%s", err);
        goto out_workers;
    }
    plan.admin_fd = -1; /* the admin's */
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
    watch_start(&gw);
    if (worker_group_start(&gw.workers) != 0) {
        log_error("cannot start worker threads");
        gateway_stop(&gw);
        goto out_workers;
    }
    if (plan.took_over) {
        /* Serving: the old process may stop accepting and drain. */
        if (takeover_client_finish(&plan.tc, true, err, sizeof err) != 0)
            log_warn("%s (serving anyway: the sockets work in both processes)", err);
        else
            log_info("takeover: the previous ficus is draining");
        plan.took_over = false;
    }
    if (cfg->server.control_socket)
        takeover_serve(&gw, cfg->server.control_socket);
    if (cfg->redis_address)
        log_warn("redis.address is set, but nothing in this version uses Redis");
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
        if (gw.cur)
            gen_stop(gw.cur);
        worker_group_stop(&gw.workers);
        if (!uv_is_closing((uv_handle_t *)&gw.reclaim))
            uv_close((uv_handle_t *)&gw.reclaim, NULL);
        uv_run(gw.loop, UV_RUN_DEFAULT);
    }
    for (size_t i = 0; gw.pws && i < nw; i++)
        proxy_worker_free(gw.pws[i]);
    free(gw.pws);
    for (size_t i = 0; i < nw; i++)
        proxy_gen_discard(pgens[i]);
    gen_free(gw.cur);
    while (gw.retired) {
        gw_gen_t *g = gw.retired;
        gw.retired = g->next_retired;
        gen_free(g);
    }
out_log:
    tracer_free(gw.tracer); /* the workers have stopped producing */
    access_log_close(gw.access_log);
out_metrics:
    metrics_registry_free(gw.metrics);
out_fds:
    if (plan.took_over) /* failed before serving: the old process keeps its sockets */
        takeover_client_finish(&plan.tc, false, err, sizeof err);
    else if (!gw.workers.workers)
        for (size_t i = 0; i < plan.n; i++)
            close(plan.fds[i].fd);
    free(plan.fds);
out:
    free(pgens);
    config_unref(cfg);
    uv_loop_close(gw.loop);
    log_info("exiting with code %d%s", code, code == 0 ? "" : " (see the errors above)");
    return code;
}
