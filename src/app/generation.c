/* Generations and their lifetimes; see generation.h. A retired generation
 * is checked every 100 ms until the workers and the main loop are done
 * with it. */
#include "app/generation.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/dns_refresh.h"
#include "app/jwks_refresh.h"
#include "app/migration.h"
#include "app/rollouts.h"
#include "app/set_refresh.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/time.h"
#include "net/tls.h"
#include "policy/health_check.h"
#include "policy/agg_cache.h"
#include "policy/json_diff.h"
#include "policy/rate_limit.h"
#include "proxy/h2_server.h"
#include "policy/reload_judge.h"
#include "policy/session_store.h"
#include "policy/throttle.h"

/* Session ticket keys: a new one twice a day (tickets made with the
 * previous one still resume). */
#define TLS_KEYS_ROTATE_MS (12ull * 3600 * 1000)

struct generation {
    uint64_t id;
    config_t *cfg;
    set_refresh_t *sets;
    health_t *health;
    weights_t *weights;
    health_checker_t *checker;
    dns_refresh_t *dns;
    api_key_index_t *api_keys;
    atomic_uint **client_inflight; /* per client: its throttle counter (the instance's) */
    jwks_refresh_t *jwks;
    atomic_uint *shadow_inflight;   /* per route: shadow copies in flight */
    agg_cache_t *agg_cache;         /* aggregation calls' bodies (contract 8), or NULL */
    tls_server_t **listener_tls;    /* per listener: its TLS contexts, NULL: cleartext */
    tls_client_t **target_tls;      /* per target group: TLS to its targets, NULL: cleartext */
    json_diff_spec_t **diff_specs;  /* per route: its shadow.compare, NULL: none */
    shadow_route_t **shadow_routes; /* per route: its shadow figures (the instance's), or NULL */
    rollouts_t *rollouts;           /* drives weights; workers record into its rollouts */
    migration_map_t board_map;      /* routes and their groups on the migration board */
    reload_figures_t *figures;      /* its requests counted for a reversible reload, or NULL */
    atomic_uint workers_holding;
    bool retired;
    generation_t *next_retired;
};

struct generations {
    uv_loop_t *loop;
    worker_group_t *workers;
    metrics_registry_t *metrics;
    generation_t *cur;
    generation_t *trial; /* a new configuration serving a share beside cur (10.5), or NULL */
    generation_t *retired;
    /* What outlives configurations: in-flight counts per client and the
     * rate-limit buckets (a reload neither resets nor doubles them). */
    throttle_t *throttle;
    rate_limit_t *rates;
    session_store_t *sessions; /* session tokens exchanged or being exchanged */
    shadow_stats_t *shadow;    /* shadow comparison figures per route name */
    board_t *board;            /* the migration board's figures per route name */
    rollout_fleet_t *rfleet;   /* rollouts with state: redis share through it, or NULL */
    uint64_t made;             /* activated so far */
    uv_timer_t reclaim;        /* frees retired generations */
    uv_timer_t rollout_tick;   /* the current generation's rollouts, once a second */
    /* Session ticket keys of every TLS listener, in every configuration
     * (a reload keeps tickets resumable), rotated twice a day. */
    tls_keys_t *tls_keys;
    uv_timer_t tls_rotate;
    bool closed;
};

config_t *generation_config(const generation_t *gen) { return gen->cfg; }
uint64_t generations_rate_limit_evictions(const generations_t *gs)
{
    return rate_limit_evictions(gs->rates);
}
health_t *generation_health(const generation_t *gen) { return gen->health; }
weights_t *generation_weights(const generation_t *gen) { return gen->weights; }
shadow_stats_t *generations_shadow(const generations_t *gs) { return gs->shadow; }
shadow_route_t *generation_shadow_route(const generation_t *gen, size_t r)
{
    return gen->shadow_routes ? gen->shadow_routes[r] : NULL;
}
uint64_t generation_id(const generation_t *gen) { return gen->id; }
reload_figures_t *generation_figures(const generation_t *gen) { return gen->figures; }
generation_t *generations_trial(const generations_t *gs) { return gs->trial; }
rollouts_t *generation_rollouts(const generation_t *gen) { return gen->rollouts; }
json_t *generation_migration(const generation_t *gen, uint64_t now_ms, uint64_t realtime_ms)
{
    return migration_json(gen->cfg, &gen->board_map, gen->shadow_routes, gen->rollouts, now_ms,
                          realtime_ms);
}

/* Stops everything of gen that runs on the main loop: set refreshes, DNS,
 * health checks. Its callbacks still to come find it stopped. */
static void gen_stop(generation_t *gen)
{
    if (gen->retired)
        return;
    gen->retired = true;
    health_checker_stop(gen->checker);
    gen->checker = NULL;
    if (gen->sets)
        set_refresh_stop(gen->sets);
    if (gen->dns)
        dns_refresh_stop(gen->dns);
    if (gen->jwks)
        jwks_refresh_stop(gen->jwks);
}

static bool gen_released(const generation_t *gen)
{
    return atomic_load(&gen->workers_holding) == 0 &&
           (!gen->sets || set_refresh_pending(gen->sets) == 0) &&
           (!gen->dns || dns_refresh_pending(gen->dns) == 0) &&
           (!gen->jwks || jwks_refresh_pending(gen->jwks) == 0);
}

static void gen_free(generation_t *gen)
{
    if (!gen)
        return;
    dns_refresh_free(gen->dns);
    health_free(gen->health);
    weights_free(gen->weights);
    set_refresh_free(gen->sets);
    api_key_index_free(gen->api_keys);
    free(gen->client_inflight);
    free(gen->shadow_inflight);
    agg_cache_free(gen->agg_cache);
    for (size_t i = 0; gen->listener_tls && i < gen->cfg->server.n_listeners; i++)
        tls_server_unref(gen->listener_tls[i]);
    free(gen->listener_tls);
    for (size_t i = 0; gen->target_tls && i < gen->cfg->n_target_groups; i++)
        tls_client_unref(gen->target_tls[i]);
    free(gen->target_tls);
    for (size_t i = 0; gen->diff_specs && i < gen->cfg->n_routes; i++)
        json_diff_spec_free(gen->diff_specs[i]);
    free(gen->diff_specs);
    free(gen->shadow_routes);
    migration_map_free(&gen->board_map);
    jwks_refresh_free(gen->jwks);
    rollouts_free(gen->rollouts);
    reload_figures_free(gen->figures);
    config_unref(gen->cfg);
    free(gen);
}

/* Worker thread: a worker freed its part of gen. */
static void gen_worker_let_go(void *ctx)
{
    generation_t *gen = ctx;
    atomic_fetch_sub(&gen->workers_holding, 1);
}

static void on_reclaim(uv_timer_t *t)
{
    generations_t *gs = t->data;
    generation_t **pp = &gs->retired;
    while (*pp) {
        generation_t *gen = *pp;
        if (gen_released(gen)) {
            *pp = gen->next_retired;
            if (gen->id)
                log_info("configuration #%llu released: its last request is done",
                         (unsigned long long)gen->id);
            gen_free(gen);
        } else {
            pp = &gen->next_retired;
        }
    }
    if (!gs->retired)
        uv_timer_stop(&gs->reclaim);
}

static void retire(generations_t *gs, generation_t *gen)
{
    gen_stop(gen);
    gen->next_retired = gs->retired; /* its handles may be closing */
    gs->retired = gen;
    if (!gs->closed && !uv_is_active((uv_handle_t *)&gs->reclaim))
        uv_timer_start(&gs->reclaim, on_reclaim, 100, 100);
}

static void on_tls_rotate(uv_timer_t *t)
{
    generations_t *gs = t->data;
    if (tls_keys_rotate(gs->tls_keys) != 0)
        log_limited(LOG_ERROR, "tls: session ticket keys not rotated (no randomness)");
}

static void on_rollout_tick(uv_timer_t *t)
{
    generations_t *gs = t->data;
    if (gs->cur && !gs->cur->retired)
        rollouts_tick(gs->cur->rollouts, time_now_ms());
    /* A trial configuration's rollouts judge the requests it serves. */
    if (gs->trial && !gs->trial->retired)
        rollouts_tick(gs->trial->rollouts, time_now_ms());
}

generations_t *generations_new(uv_loop_t *loop, worker_group_t *workers,
                               metrics_registry_t *metrics)
{
    generations_t *gs = malloc(sizeof *gs);
    if (!gs)
        return NULL;
    *gs = (generations_t){.loop = loop, .workers = workers, .metrics = metrics};
    gs->throttle = throttle_new();
    gs->rates = rate_limit_new(RATE_LIMIT_BUCKETS);
    gs->sessions =
        session_store_new(SESSION_STORE_MAX_ENTRIES, SESSION_STORE_MAX_BYTES, (unsigned)workers->n);
    gs->shadow = shadow_stats_new();
    gs->board = board_new(workers->n, time_now_ms());
    gs->tls_keys = tls_keys_new();
    if (!gs->throttle || !gs->rates || !gs->sessions || !gs->shadow || !gs->board ||
        !gs->tls_keys) {
        tls_keys_free(gs->tls_keys);
        board_free(gs->board);
        throttle_free(gs->throttle);
        rate_limit_free(gs->rates);
        session_store_free(gs->sessions);
        shadow_stats_free(gs->shadow);
        free(gs);
        return NULL;
    }
    uv_timer_init(loop, &gs->reclaim);
    gs->reclaim.data = gs;
    uv_timer_init(loop, &gs->rollout_tick);
    gs->rollout_tick.data = gs;
    uv_timer_start(&gs->rollout_tick, on_rollout_tick, ROLLOUTS_TICK_MS, ROLLOUTS_TICK_MS);
    uv_timer_init(loop, &gs->tls_rotate);
    gs->tls_rotate.data = gs;
    uv_timer_start(&gs->tls_rotate, on_tls_rotate, TLS_KEYS_ROTATE_MS, TLS_KEYS_ROTATE_MS);
    return gs;
}

/* What shadow copies share: their count per route, and each route's
 * comparison, compiled once. */
static int diff_specs(generation_t *gen)
{
    const config_t *cfg = gen->cfg;
    size_t nr = cfg->n_routes ? cfg->n_routes : 1;
    gen->shadow_inflight = calloc(nr, sizeof *gen->shadow_inflight);
    gen->diff_specs = calloc(nr, sizeof *gen->diff_specs);
    if (!gen->shadow_inflight || !gen->diff_specs)
        return FE_NOMEM;
    for (size_t i = 0; i < cfg->n_routes && !gen->agg_cache; i++)
        if (cfg->routes[i].has_aggregate &&
            !(gen->agg_cache =
                  agg_cache_new(cfg->aggregate_cache_entries, cfg->aggregate_cache_bytes)))
            return FE_NOMEM;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const config_route_t *r = &cfg->routes[i];
        if (!r->has_shadow || !r->shadow.has_compare)
            continue;
        const config_shadow_compare_t *c = &r->shadow.compare;
        char err[256];
        gen->diff_specs[i] = json_diff_spec_new((const char *const *)c->ignore, c->n_ignore,
                                                (const char *const *)c->unordered, c->n_unordered,
                                                (const char *const *)c->headers, c->n_headers,
                                                c->max_body_size, err, sizeof err);
        if (!gen->diff_specs[i]) {
            log_error("route %s: shadow.compare: %s", r->name, err);
            return FE_INVAL;
        }
    }
    return 0;
}

/* The instance's connection for shared rollouts follows the configuration:
 * made when a route has `state: redis`, replaced when redis.address changes
 * (a new redis: the routes join its fleet afresh), its timeout updated,
 * closed when none needs it (routes still bound to it keep it until their
 * generation goes). */
static rollout_fleet_t *rollouts_connection(generations_t *gs, const config_t *cfg)
{
    bool needed = false;
    for (size_t r = 0; r < cfg->n_routes && !needed; r++)
        needed = cfg->routes[r].has_rollout && cfg->routes[r].rollout.state == CONFIG_ROLLOUT_REDIS;
    const char *want = needed ? cfg->redis_address : NULL;
    if (gs->rfleet && want && strcmp(rollout_fleet_address(gs->rfleet), want) == 0) {
        rollout_fleet_set_timeout(gs->rfleet, cfg->redis_timeout_ms);
        return gs->rfleet;
    }
    rollout_fleet_close(gs->rfleet);
    gs->rfleet = NULL;
    if (!want)
        return NULL;
    char host[128] = "ficus", member[ROLLOUT_FLEET_MAX_MEMBER_BYTES + 1];
    gethostname(host, sizeof host - 1);
    snprintf(member, sizeof member, "%s:%ld:%llu", host, (long)getpid(),
             (unsigned long long)time_now_realtime_ms());
    gs->rfleet = rollout_fleet_new(gs->loop, want, cfg->redis_timeout_ms, member, gs->metrics);
    if (!gs->rfleet)
        log_error("redis %s: cannot set up the connection for shared rollouts", want);
    return gs->rfleet;
}

_Static_assert(CONFIG_TLS_MAX_CERTS <= TLS_MAX_CERTS, "a listener's certificates fit a tls_server");
_Static_assert(CONFIG_TLS_MAX_ALPN <= TLS_MAX_ALPN, "a listener's alpn fits a tls_server");

/* The protocols of a listener's configured alpn that ALPN offers, in the
 * configured order: h2 only while server.http2.enabled. A list left empty
 * offers nothing by ALPN: clients speak HTTP/1.1 without it. */
static size_t alpn_served(const config_listener_tls_t *t, bool http2, const char **out)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_alpn; i++)
        if (strcmp(t->alpn[i], "http/1.1") == 0 || (http2 && strcmp(t->alpn[i], "h2") == 0))
            out[n++] = t->alpn[i];
    return n;
}

/* Each TLS listener's contexts, its certificates read now (a reload reads
 * them again; connections keep the contexts they began with). */
static int listeners_tls(generations_t *gs, generation_t *gen)
{
    static const tls_client_auth_t client_auth[] = {
        [CONFIG_CLIENT_CERT_NONE] = TLS_CLIENT_AUTH_NONE,
        [CONFIG_CLIENT_CERT_OPTIONAL] = TLS_CLIENT_AUTH_OPTIONAL,
        [CONFIG_CLIENT_CERT_REQUIRED] = TLS_CLIENT_AUTH_REQUIRED,
    };
    const config_server_t *srv = &gen->cfg->server;
    gen->listener_tls = calloc(srv->n_listeners ? srv->n_listeners : 1, sizeof *gen->listener_tls);
    if (!gen->listener_tls)
        return FE_NOMEM;
    for (size_t i = 0; i < srv->n_listeners; i++) {
        const config_listener_t *l = &srv->listeners[i];
        const config_listener_tls_t *t = l->tls;
        if (!t)
            continue;
        tls_server_opts_t o = {.n_certs = t->n_certs,
                               .min_tls13 = t->min_tls13,
                               .client_ca = t->client_ca,
                               .client_auth = client_auth[t->client_auth],
                               .keys_ring = gs->tls_keys};
        for (size_t c = 0; c < t->n_certs; c++) {
            o.certs[c] = t->certs[c].cert;
            o.keys[c] = t->certs[c].key;
        }
        o.n_alpn = alpn_served(t, srv->http2.enabled, o.alpn);
        char err[512];
        if (!(gen->listener_tls[i] = tls_server_new(&o, err, sizeof err))) {
            log_write(LOG_ERROR, "listener %s: %s", l->address, err);
            return FE_INVAL;
        }
    }
    return 0;
}

/* Each TLS target group's client context, its CA and client certificate
 * read now (a reload reads them again; connections keep theirs). */
static int targets_tls(generation_t *gen)
{
    const config_t *cfg = gen->cfg;
    gen->target_tls =
        calloc(cfg->n_target_groups ? cfg->n_target_groups : 1, sizeof *gen->target_tls);
    if (!gen->target_tls)
        return FE_NOMEM;
    for (size_t i = 0; i < cfg->n_target_groups; i++) {
        const config_target_group_t *tg = &cfg->target_groups[i];
        if (!tg->has_tls)
            continue;
        tls_client_opts_t o = {.ca = tg->tls.ca,
                               .verify = tg->tls.verify,
                               .cert = tg->tls.cert,
                               .key = tg->tls.key,
                               .h2 = tg->h2};
        char err[512];
        if (!(gen->target_tls[i] = tls_client_new(&o, err, sizeof err))) {
            log_write(LOG_ERROR, "target group %s: %s", tg->name, err);
            return FE_INVAL;
        }
    }
    return 0;
}

generation_t *generation_prepare(generations_t *gs, config_t *cfg)
{
    generation_t *gen = calloc(1, sizeof *gen);
    if (!gen)
        return NULL;
    gen->cfg = config_ref(cfg);
    dns_refresh_resolve(cfg);
    gen->sets = set_refresh_new(cfg, gs->metrics, gs->workers);
    gen->api_keys = api_key_index_new(cfg);
    gen->jwks = jwks_refresh_new(cfg, gs->workers);
    gen->client_inflight =
        calloc(cfg->n_clients ? cfg->n_clients : 1, sizeof *gen->client_inflight);
    bool counters = gen->client_inflight != NULL;
    for (size_t i = 0; counters && i < cfg->n_clients; i++)
        counters = (gen->client_inflight[i] = throttle_counter(gs->throttle, cfg->clients[i].id));
    if (!gen->sets || !gen->api_keys || !counters || !gen->jwks || diff_specs(gen) != 0 ||
        listeners_tls(gs, gen) != 0 || targets_tls(gen) != 0) {
        gen_free(gen);
        return NULL;
    }
    return gen;
}

/* Main thread: requests waiting in an admission step look again. */
static void wake_workers(void *ctx)
{
    generations_t *gs = ctx;
    for (size_t i = 0; i < gs->workers->n; i++)
        if (gs->workers->workers[i].app)
            proxy_worker_wake(gs->workers->workers[i].app);
}

/* gen gets its worker state (pgens) and its timers, and a number; it is not
 * yet the current one. figures: count its requests for a reversible
 * reload. */
static int gen_start(generations_t *gs, generation_t *gen, proxy_gen_t **pgens, bool figures)
{
    config_t *cfg = gen->cfg;
    generation_t *old = gs->cur;
    if (figures && !(gen->figures = reload_figures_new(gs->workers->n)))
        return -1;
    gen->health = health_new(cfg);
    gen->weights = weights_new(cfg);
    gen->shadow_routes = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof *gen->shadow_routes);
    if (!gen->health || !gen->weights || !gen->shadow_routes ||
        migration_map_make(gs->board, cfg, time_now_ms(), &gen->board_map) != 0)
        return -1;
    /* A route without figures (registry full) is shadowed uncounted. */
    for (size_t r = 0; r < cfg->n_routes; r++)
        if (cfg->routes[r].has_shadow)
            gen->shadow_routes[r] = shadow_stats_route(gs->shadow, cfg->routes[r].name);
    /* Before the workers copy the weights: a rollout's canary never gets
     * its configured weight first. */
    gen->rollouts = rollouts_new(cfg, old ? old->rollouts : NULL, time_now_ms());
    if (!gen->rollouts)
        return -1;
    rollouts_attach(gen->rollouts, gen->weights);
    if (old)
        health_inherit(gen->health, old->health);
    proxy_shared_t shared = {.cfg = cfg,
                             .id = gs->made + 1,
                             .sets = set_refresh_sets(gen->sets),
                             .metrics = gs->metrics,
                             .health = gen->health,
                             .weights = gen->weights,
                             .api_keys = gen->api_keys,
                             .client_inflight = gen->client_inflight,
                             .rates = gs->rates,
                             .sessions = gs->sessions,
                             .jwks = jwks_refresh_slots(gen->jwks),
                             .shadow_inflight = gen->shadow_inflight,
                             .agg_cache = gen->agg_cache,
                             .listener_tls = gen->listener_tls,
                             .target_tls = gen->target_tls,
                             .diff_specs = gen->diff_specs,
                             .shadow_routes = gen->shadow_routes,
                             .rollouts = rollouts_table(gen->rollouts),
                             .board_routes = gen->board_map.routes,
                             .board_groups = (const uint32_t *const *)gen->board_map.groups,
                             .figures = gen->figures,
                             .gen_freed = gen_worker_let_go,
                             .gen_ctx = gen};
    for (size_t i = 0; i < gs->workers->n; i++) {
        pgens[i] = proxy_gen_new(&shared, i);
        if (!pgens[i])
            return -1;
    }
    gen->dns = dns_refresh_start(gs->loop, cfg, gen->health, gs->workers);
    if (!gen->dns)
        return -1;
    set_refresh_start(gen->sets, gs->loop, old ? old->sets : NULL);
    if (jwks_refresh_start(gen->jwks, gs->loop, old ? old->jwks : NULL, wake_workers, gs) != 0)
        return -1;
    gen->checker = health_checker_start(gs->loop, cfg, gen->health, gen->target_tls, NULL, NULL);
    atomic_store(&gen->workers_holding, (unsigned)gs->workers->n);
    gen->id = ++gs->made;
    return 0;
}

/* gen (started) becomes the current one; the previous one retires. */
static void make_current(generations_t *gs, generation_t *gen)
{
    generation_t *old = gs->cur;
    /* A shared rollout's place in the fleet passes to this generation (a
     * discarded one would take it away). */
    rollouts_share(gen->rollouts, rollouts_connection(gs, gen->cfg));
    gs->cur = gen;
    shadow_stats_show_only(gs->shadow, gen->shadow_routes, gen->cfg->n_routes);
    /* The serving configuration's certificates: their labels and expiry. */
    const char *hs_names[TLS_HS_RESULTS];
    for (int i = 0; i < TLS_HS_RESULTS; i++)
        hs_names[i] = tls_hs_result_name((tls_hs_result_t)i);
    metrics_tls_results(gs->metrics, hs_names, TLS_HS_RESULTS);
    const char *h2_names[H2_ERR_REASONS];
    for (int i = 0; i < H2_ERR_REASONS; i++)
        h2_names[i] = h2_err_name((h2_err_t)i);
    metrics_http2_reasons(gs->metrics, h2_names, H2_ERR_REASONS);
    metrics_tls_certs_clear(gs->metrics);
    const config_server_t *srv = &gen->cfg->server;
    for (size_t l = 0; l < srv->n_listeners; l++) {
        tls_server_t *t = gen->listener_tls[l];
        if (!t)
            continue;
        metrics_tls_listener(gs->metrics, l, srv->listeners[l].address);
        for (size_t i = 0; i < tls_server_n_certs(t); i++)
            metrics_tls_cert(gs->metrics, l, tls_server_cert_name(t, i),
                             tls_server_cert_expiry(t, i));
    }
    if (old)
        retire(gs, old);
}

int generations_activate(generations_t *gs, generation_t *gen, proxy_gen_t **pgens)
{
    /* Its counters ready (armed during a trial only) when a reload would
     * judge the next configuration against it. */
    if (gen_start(gs, gen, pgens, gen->cfg->has_reload) != 0)
        return -1;
    make_current(gs, gen);
    return 0;
}

static void worker_install(worker_t *w, void *arg)
{
    proxy_gen_t *g = arg;
    proxy_gen_ref(g);
    proxy_worker_install(w->app, g);
}

/* Sends each running worker its part of a generation. */
static void post_each(generations_t *gs, void (*fn)(worker_t *, void *), proxy_gen_t **pgens)
{
    for (size_t i = 0; i < gs->workers->n; i++)
        worker_post(&gs->workers->workers[i], fn, pgens ? pgens[i] : NULL);
}

typedef struct trial_msg {
    proxy_gen_t *gen;
    uint32_t percent;
} trial_msg_t;

static void worker_trial(worker_t *w, void *arg)
{
    trial_msg_t *m = arg;
    if (m->gen)
        proxy_gen_ref(m->gen);
    proxy_worker_trial(w->app, m->gen, m->percent);
    free(m);
}

static void worker_promote(worker_t *w, void *arg)
{
    (void)arg;
    proxy_worker_promote(w->app);
}

/* Posts each worker its trial generation (pgens NULL: none): to all of
 * them, or (out of memory) to none. */
static int post_trial(generations_t *gs, proxy_gen_t **pgens, uint32_t percent)
{
    size_t n = gs->workers->n;
    trial_msg_t *msgs[MAX_WORKERS] = {0};
    if (n > MAX_WORKERS)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!(msgs[i] = malloc(sizeof *msgs[i]))) {
            for (size_t k = 0; k < i; k++)
                free(msgs[k]);
            return -1;
        }
        *msgs[i] = (trial_msg_t){pgens ? pgens[i] : NULL, percent};
    }
    for (size_t i = 0; i < n; i++)
        worker_post(&gs->workers->workers[i], worker_trial, msgs[i]);
    return 0;
}

int generations_start_trial(generations_t *gs, generation_t *gen, uint32_t percent)
{
    size_t n = gs->workers->n;
    if (gs->trial)
        generations_drop_trial(gs);
    proxy_gen_t **pgens = calloc(n, sizeof *pgens);
    int rc = pgens ? gen_start(gs, gen, pgens, true) : -1;
    /* gen is judged against the current one, which counts its requests
     * since it came (its configuration has the reload block). */
    if (rc == 0 && !gs->cur->figures)
        rc = -1;
    if (rc == 0)
        rc = post_trial(gs, pgens, percent);
    if (rc != 0) {
        for (size_t i = 0; pgens && i < n; i++)
            proxy_gen_discard(pgens[i]);
        free(pgens);
        return -1;
    }
    free(pgens);
    gs->trial = gen;
    return 0;
}

void generations_promote(generations_t *gs)
{
    generation_t *gen = gs->trial;
    if (!gen)
        return;
    gs->trial = NULL;
    post_each(gs, worker_promote, NULL);
    make_current(gs, gen);
}

void generations_drop_trial(generations_t *gs)
{
    generation_t *gen = gs->trial;
    if (!gen)
        return;
    gs->trial = NULL;
    if (post_trial(gs, NULL, 0) != 0) /* the workers keep serving it: cannot happen but for OOM */
        log_error("reload: out of memory while dropping configuration #%llu",
                  (unsigned long long)gen->id);
    retire(gs, gen);
}

int generations_install(generations_t *gs, generation_t *gen)
{
    size_t n = gs->workers->n;
    proxy_gen_t **pgens = calloc(n, sizeof *pgens);
    int rc = pgens ? generations_activate(gs, gen, pgens) : -1;
    for (size_t i = 0; pgens && i < n; i++) {
        if (rc == 0)
            worker_post(&gs->workers->workers[i], worker_install, pgens[i]);
        else
            proxy_gen_discard(pgens[i]);
    }
    free(pgens);
    return rc;
}

void generations_discard(generations_t *gs, generation_t *gen)
{
    atomic_store(&gen->workers_holding, 0);
    retire(gs, gen);
}

generation_t *generations_current(const generations_t *gs) { return gs->cur; }

void generations_close(generations_t *gs)
{
    if (gs->cur)
        gen_stop(gs->cur);
    if (gs->trial)
        gen_stop(gs->trial);
    rollout_fleet_close(gs->rfleet);
    gs->rfleet = NULL;
    if (!gs->closed) {
        gs->closed = true;
        uv_close((uv_handle_t *)&gs->reclaim, NULL);
        uv_close((uv_handle_t *)&gs->rollout_tick, NULL);
        uv_close((uv_handle_t *)&gs->tls_rotate, NULL);
    }
}

void generations_free(generations_t *gs)
{
    if (!gs)
        return;
    gen_free(gs->cur);
    gen_free(gs->trial);
    while (gs->retired) {
        generation_t *g = gs->retired;
        gs->retired = g->next_retired;
        gen_free(g);
    }
    throttle_free(gs->throttle);
    rate_limit_free(gs->rates);
    session_store_free(gs->sessions);
    shadow_stats_free(gs->shadow);
    board_free(gs->board);
    tls_keys_free(gs->tls_keys);
    free(gs);
}
