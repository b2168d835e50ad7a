/* A generation's route rollouts; see rollouts.h. The rollout itself
 * (policy/rollout) decides; this file turns its decisions into weights, log
 * lines, metrics and admin answers, and carries rollouts across reloads. */
#include "app/rollouts.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_migration.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/time.h"

#define N_STATES (ROLLOUT_PAUSED + 1)
#define N_CAUSES (ROLLOUT_CAUSE_MANUAL + 1)
#define NOT_APPLIED UINT32_MAX

typedef struct route_rollout {
    rollout_t *r;   /* NULL: the route has no rollout */
    rollouts_t *rs; /* its owner, and its index there (the fleet's callback) */
    size_t index;
    rollout_fleet_route_t *shared; /* state: redis: its place in the fleet, else NULL */
    size_t canary;                 /* index of the canary in the route's backends */
    uint32_t applied;      /* canary percent in the weights now, NOT_APPLIED before attach */
    uint64_t seen;         /* seq of the newest transition logged and counted */
    rollout_state_t state; /* as of that transition (every move is one) */
    uint64_t counts[N_STATES][N_CAUSES]; /* transitions by (to, cause), across reloads */
} route_rollout_t;

struct rollouts {
    const config_t *cfg;
    weights_t *weights; /* NULL until attached */
    route_rollout_t *routes;
    rollout_t **table;
    size_t n_with;           /* routes with a rollout */
    rollout_snapshot_t snap; /* scratch (5 KiB: not on the stack) */
};

/* ---- weights ---- */

void rollouts_weights(const config_route_t *rt, size_t canary, uint32_t percent, uint32_t *out)
{
    size_t n = rt->n_backends;
    if (percent > 100)
        percent = 100;
    uint64_t canary_w = (uint64_t)percent * ROLLOUTS_WEIGHT_TOTAL / 100;
    uint64_t rest = ROLLOUTS_WEIGHT_TOTAL - canary_w, sum = 0, given = 0;
    for (size_t b = 0; b < n; b++)
        if (b != canary)
            sum += rt->backends[b].weight;
    /* Floors first, then what rounding left over, one unit each, to the
     * largest remainders (the lowest index first on a tie). */
    uint64_t frac[MAX_ROUTE_BACKENDS];
    for (size_t b = 0; b < n; b++) {
        uint64_t share = sum ? rt->backends[b].weight : 1;
        uint64_t whole = sum ? sum : n - 1;
        if (b == canary || whole == 0) {
            out[b] = b == canary ? (uint32_t)canary_w : 0;
            frac[b] = 0;
            continue;
        }
        out[b] = (uint32_t)(rest * share / whole);
        frac[b] = share ? rest * share % whole + 1 : 0; /* +1: 0 means "never" */
        given += out[b];
    }
    for (uint64_t left = rest - given; left > 0 && n > 1; left--) {
        size_t best = SIZE_MAX;
        for (size_t b = 0; b < n; b++)
            if (frac[b] && (best == SIZE_MAX || frac[b] > frac[best]))
                best = b;
        if (best == SIZE_MAX)
            break;
        out[best]++;
        frac[best] = 0;
    }
}

/* Route r's weights for its rollout's percent now, when it moved. */
static void apply(rollouts_t *rs, size_t r)
{
    route_rollout_t *rr = &rs->routes[r];
    uint32_t p = rollout_weight_percent(rr->r);
    if (!rs->weights || p == rr->applied)
        return;
    uint32_t v[MAX_ROUTE_BACKENDS];
    rollouts_weights(&rs->cfg->routes[r], rr->canary, p, v);
    weights_set(rs->weights, r, v);
    rr->applied = p;
}

/* ---- transitions: logged and counted once each ---- */

/* The canary percent a transition set (what weight_of() gave then). */
static uint32_t transition_percent(const rollout_config_t *rc, const rollout_transition_t *t)
{
    bool at_step = t->to == ROLLOUT_STEP || (t->to == ROLLOUT_PAUSED && t->from == ROLLOUT_STEP);
    if (t->to == ROLLOUT_PROMOTED)
        return 100;
    return at_step && t->step < rc->n_steps ? rc->steps[t->step] : 0;
}

static void observe(rollouts_t *rs, size_t r, uint64_t now_ms)
{
    route_rollout_t *rr = &rs->routes[r];
    rollout_snapshot_t *s = &rs->snap;
    rollout_snapshot(rr->r, now_ms, s);
    for (uint32_t i = 0; i < s->n_history; i++) {
        const rollout_transition_t *t = &s->history[i];
        if (t->seq <= rr->seen)
            continue;
        rr->seen = t->seq;
        rr->state = t->to;
        if ((unsigned)t->to < N_STATES && (unsigned)t->cause < N_CAUSES)
            rr->counts[t->to][t->cause]++;
        log_info("route %s: rollout %s -> %s (step %u, %u%%), cause %s: %s",
                 rs->cfg->routes[r].name, rollout_state_name(t->from), rollout_state_name(t->to),
                 t->step + 1, transition_percent(rollout_config(rr->r), t),
                 rollout_cause_name(t->cause), t->reason);
    }
    rr->seen = s->transitions > rr->seen ? s->transitions : rr->seen;
    rr->state = s->state;
    apply(rs, r);
}

/* ---- set-up and reloads ---- */

static void to_rollout_config(const config_route_t *rt, rollout_config_t *rc)
{
    const config_rollout_t *ro = &rt->rollout;
    memset(rc, 0, sizeof *rc);
    for (size_t b = 0; b < rt->n_backends; b++)
        if (rt->backends[b].target_group == ro->canary)
            rc->canary_backend = (uint32_t)b;
    _Static_assert(CONFIG_ROLLOUT_MAX_STEPS <= ROLLOUT_MAX_STEPS,
                   "a rollout block's steps must fit policy/rollout");
    rc->n_steps = (uint32_t)ro->n_steps;
    for (uint32_t i = 0; i < rc->n_steps; i++)
        rc->steps[i] = (uint8_t)ro->steps[i];
    rc->interval_ms = ro->interval_ms;
    rc->min_requests = ro->min_requests;
    rc->max_error_rate = ro->max_error_rate;
    rc->max_latency_ratio = ro->max_latency_ratio;
    rc->max_mismatch_rate = ro->has_max_mismatch_rate ? ro->max_mismatch_rate : -1;
    rc->on_failure = ro->on_failure == CONFIG_ON_FAILURE_PAUSE ? ROLLOUT_ON_FAILURE_PAUSE
                                                               : ROLLOUT_ON_FAILURE_ROLLBACK;
}

static const char *group_name(const config_t *cfg, size_t g)
{
    return g < cfg->n_target_groups ? cfg->target_groups[g].name : "";
}

static bool str_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Did the route's backends (groups, weights, fallbacks, paths) stay as they
 * were? Groups are compared by name: their indexes may move. */
static bool backends_same(const config_t *ca, const config_route_t *a, const config_t *cb,
                          const config_route_t *b)
{
    if (a->n_backends != b->n_backends)
        return false;
    for (size_t i = 0; i < a->n_backends; i++) {
        const config_backend_t *x = &a->backends[i], *y = &b->backends[i];
        bool xf = x->fallback != CONFIG_NONE, yf = y->fallback != CONFIG_NONE;
        if (strcmp(group_name(ca, x->target_group), group_name(cb, y->target_group)) != 0 ||
            x->weight != y->weight || xf != yf || !str_same(x->path, y->path) ||
            (xf && strcmp(group_name(ca, x->fallback), group_name(cb, y->fallback)) != 0))
            return false;
    }
    return true;
}

static bool block_same(const config_t *ca, const config_rollout_t *a, const config_t *cb,
                       const config_rollout_t *b)
{
    return strcmp(group_name(ca, a->canary), group_name(cb, b->canary)) == 0 &&
           a->n_steps == b->n_steps &&
           memcmp(a->steps, b->steps, a->n_steps * sizeof *a->steps) == 0 &&
           a->interval_ms == b->interval_ms && a->min_requests == b->min_requests &&
           a->max_error_rate == b->max_error_rate && a->max_latency_ratio == b->max_latency_ratio &&
           a->has_max_mismatch_rate == b->has_max_mismatch_rate &&
           (!a->has_max_mismatch_rate || a->max_mismatch_rate == b->max_mismatch_rate) &&
           a->on_failure == b->on_failure && a->state == b->state;
}

/* Route r of rs takes over what prev had for the same route name. */
static void carry(rollouts_t *rs, size_t r, rollouts_t *prev, uint64_t now_ms)
{
    const config_route_t *rt = &rs->cfg->routes[r];
    route_rollout_t *rr = &rs->routes[r];
    size_t pr = prev ? config_find_route(prev->cfg, rt->name) : CONFIG_NONE;
    if (pr == CONFIG_NONE || !prev->routes[pr].r) {
        log_info("route %s: rollout of %s starts (pending, canary weight 0)", rt->name,
                 group_name(rs->cfg, rt->rollout.canary));
        return;
    }
    route_rollout_t *old = &prev->routes[pr];
    const config_route_t *ort = &prev->cfg->routes[pr];
    memcpy(rr->counts, old->counts, sizeof rr->counts); /* counters never go back */
    const char *changed = !block_same(prev->cfg, &ort->rollout, rs->cfg, &rt->rollout)
                              ? "its rollout block changed"
                          : !backends_same(prev->cfg, ort, rs->cfg, rt) ? "its backends changed"
                          : rollout_adopt(rr->r, old->r) != 0 ? "its rollout could not be kept"
                                                              : NULL;
    if (changed) {
        log_info("route %s: rollout starts afresh (pending, canary weight 0): %s", rt->name,
                 changed);
        return;
    }
    rollout_snapshot(rr->r, now_ms, &rs->snap);
    rr->seen = old->seen;
    rr->state = rs->snap.state;
    log_info("route %s: rollout kept across the reload (%s, step %u, canary at %u%%)", rt->name,
             rollout_state_name(rr->state), rs->snap.step + 1, rs->snap.weight_percent);
}

rollouts_t *rollouts_new(const config_t *cfg, rollouts_t *prev, uint64_t now_ms)
{
    rollouts_t *rs = calloc(1, sizeof *rs);
    if (!rs)
        return NULL;
    size_t n = cfg->n_routes ? cfg->n_routes : 1;
    rs->cfg = cfg;
    rs->routes = calloc(n, sizeof *rs->routes);
    rs->table = calloc(n, sizeof *rs->table);
    if (!rs->routes || !rs->table)
        goto fail;
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const config_route_t *rt = &cfg->routes[r];
        route_rollout_t *rr = &rs->routes[r];
        rr->applied = NOT_APPLIED;
        rr->rs = rs;
        rr->index = r;
        if (!rt->has_rollout)
            continue;
        rollout_config_t rc;
        to_rollout_config(rt, &rc);
        char err[160];
        if (rollout_config_check(&rc, err, sizeof err) != 0) {
            /* The config loader checked the same: a mismatch is a bug. */
            log_error("route %s: rollout not started: %s", rt->name, err);
            goto fail;
        }
        rr->r = rollout_new(&rc, now_ms);
        if (!rr->r)
            goto fail;
        rr->canary = rc.canary_backend;
        rs->table[r] = rr->r;
        rs->n_with++;
    }
    for (size_t r = 0; r < cfg->n_routes; r++)
        if (rs->routes[r].r)
            carry(rs, r, prev, now_ms);
    return rs;

fail:
    rollouts_free(rs);
    return NULL;
}

void rollouts_free(rollouts_t *rs)
{
    if (!rs)
        return;
    for (size_t r = 0; rs->routes && r < rs->cfg->n_routes; r++) {
        rollout_fleet_unbind(rs->routes[r].shared, rs->routes[r].r);
        rollout_free(rs->routes[r].r);
    }
    free(rs->routes);
    free(rs->table);
    free(rs);
}

rollout_t *const *rollouts_table(const rollouts_t *rs) { return rs->table; }

rollout_t *rollouts_get(const rollouts_t *rs, size_t r)
{
    return r < rs->cfg->n_routes ? rs->routes[r].r : NULL;
}

void rollouts_attach(rollouts_t *rs, weights_t *w)
{
    rs->weights = w;
    for (size_t r = 0; r < rs->cfg->n_routes; r++)
        if (rs->routes[r].r)
            apply(rs, r);
}

/* The fleet moved route rr's rollout (a reply on the main loop). */
static void on_fleet_changed(void *ctx)
{
    route_rollout_t *rr = ctx;
    observe(rr->rs, rr->index, time_now_ms());
}

void rollouts_share(rollouts_t *rs, rollout_fleet_t *fleet)
{
    const config_t *cfg = rs->cfg;
    for (size_t r = 0; r < cfg->n_routes; r++) {
        route_rollout_t *rr = &rs->routes[r];
        const config_route_t *rt = &cfg->routes[r];
        if (!rr->r || rt->rollout.state != CONFIG_ROLLOUT_REDIS)
            continue;
        uint64_t fp =
            rollout_fleet_fingerprint(rollout_config(rr->r), group_name(cfg, rt->rollout.canary));
        rr->shared = rollout_fleet_bind(fleet, rt->name, fp, rr->r, on_fleet_changed, rr);
        if (!rr->shared)
            log_error("route %s: rollout state: redis cannot be shared (no redis connection or "
                      "no memory); it runs on this instance's evidence alone",
                      rt->name);
    }
}

void rollouts_tick(rollouts_t *rs, uint64_t now_ms)
{
    for (size_t r = 0; r < rs->cfg->n_routes; r++) {
        route_rollout_t *rr = &rs->routes[r];
        if (!rr->r)
            continue;
        int moved =
            rr->shared ? rollout_fleet_tick(rr->shared, now_ms) : rollout_tick(rr->r, now_ms);
        if (moved != 0)
            observe(rs, r, now_ms);
        else
            apply(rs, r);
    }
}

int rollouts_action(rollouts_t *rs, size_t r, rollout_action_t a, uint64_t now_ms)
{
    rollout_t *ro = rollouts_get(rs, r);
    if (!ro)
        return FE_NOTFOUND;
    int rc = rollout_action(ro, a, now_ms);
    if (rc == 0) {
        observe(rs, r, now_ms);
        rollout_fleet_publish(rs->routes[r].shared, now_ms); /* the fleet follows */
    }
    return rc;
}

int rollouts_action_parse(const char *name, size_t len, rollout_action_t *a)
{
    for (int i = ROLLOUT_ACTION_PAUSE; i <= ROLLOUT_ACTION_RESTART; i++) {
        const char *s = rollout_action_name((rollout_action_t)i);
        if (strlen(s) == len && memcmp(s, name, len) == 0) {
            *a = (rollout_action_t)i;
            return 0;
        }
    }
    return FE_NOTFOUND;
}

/* ---- admin and metrics ---- */

static json_t *figures_json(const rollout_figures_t *f)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:I,s:f}", "requests",
                     (json_int_t)f->requests, "errors", (json_int_t)f->errors, "masked",
                     (json_int_t)f->masked, "primary_requests", (json_int_t)f->primary_requests,
                     "error_rate", f->error_rate, "canary_p99_ms", f->canary_p99_ms,
                     "primary_p99_ms", f->primary_p99_ms, "latency_ratio", f->latency_ratio,
                     "compared", (json_int_t)f->compared, "mismatch_rate", f->mismatch_rate);
}

/* A monotonic time of the past as an RFC 3339 wall-clock time. */
static json_t *time_json(uint64_t at_ms, uint64_t now_ms, uint64_t now_realtime_ms)
{
    uint64_t ago = now_ms > at_ms ? now_ms - at_ms : 0;
    char buf[40];
    time_format_rfc3339_ms(now_realtime_ms > ago ? now_realtime_ms - ago : 0, buf, sizeof buf);
    return json_string(buf);
}

json_t *rollouts_json(rollouts_t *rs, size_t r, uint64_t now_ms, uint64_t now_realtime_ms)
{
    rollout_t *ro = rollouts_get(rs, r);
    if (!ro)
        return NULL;
    const config_t *cfg = rs->cfg;
    const config_route_t *rt = &cfg->routes[r];
    const rollout_config_t *rc = rollout_config(ro);
    rollout_snapshot_t *s = &rs->snap;
    rollout_snapshot(ro, now_ms, s);
    json_t *weights = json_object(), *steps = json_array(), *history = json_array();
    for (size_t b = 0; weights && b < rt->n_backends; b++)
        json_object_set_new(
            weights, group_name(cfg, rt->backends[b].target_group),
            json_integer(rs->weights ? weights_get(rs->weights, r, b) : rt->backends[b].weight));
    for (uint32_t i = 0; steps && i < rc->n_steps; i++)
        json_array_append_new(steps,
                              json_pack("{s:i,s:i,s:o}", "step", (int)i + 1, "percent",
                                        (int)rc->steps[i], "figures", figures_json(&s->steps[i])));
    for (uint32_t i = 0; history && i < s->n_history; i++) {
        const rollout_transition_t *t = &s->history[i];
        json_array_append_new(
            history, json_pack("{s:I,s:o,s:s,s:s,s:i,s:s,s:s}", "seq", (json_int_t)t->seq, "at",
                               time_json(t->at_ms, now_ms, now_realtime_ms), "from",
                               rollout_state_name(t->from), "to", rollout_state_name(t->to), "step",
                               (int)t->step + 1, "cause", rollout_cause_name(t->cause), "reason",
                               t->reason));
    }
    json_t *block = config_migration_j_route_rollout(NULL, rt, cfg);
    json_t *fleet = json_null();
    if (rs->routes[r].shared) {
        rollout_fleet_status_t fs;
        rollout_fleet_status(rs->routes[r].shared, now_ms, &fs);
        fleet = json_pack(
            "{s:b,s:b,s:b,s:I,s:I}", "leader", fs.leader, "connected", fs.connected, "unpublished",
            fs.unpublished, "seq", (json_int_t)fs.seq, "synced_ms_ago",
            (json_int_t)(fs.synced_ms && now_ms > fs.synced_ms ? now_ms - fs.synced_ms : 0));
    }
    uint64_t elapsed = now_ms > s->step_started_ms ? now_ms - s->step_started_ms : 0;
    return json_pack("{s:s,s:s,s:s,s:s?,s:i,s:i,s:i,s:o,s:o,s:I,s:i,s:o,s:o,s:o,s:I,s:I,s:o,s:o}",
                     "route", rt->name, "canary", group_name(cfg, rt->rollout.canary), "state",
                     rollout_state_name(s->state), "paused_from",
                     s->state == ROLLOUT_PAUSED ? rollout_state_name(s->paused_from) : NULL, "step",
                     (int)s->step + 1, "steps_total", (int)rc->n_steps, "canary_percent",
                     (int)s->weight_percent, "weights", weights, "step_started",
                     time_json(s->step_started_ms, now_ms, now_realtime_ms), "step_elapsed_ms",
                     (json_int_t)elapsed, "extensions", (int)s->extensions, "current",
                     figures_json(&s->current), "steps", steps, "history", history, "transitions",
                     (json_int_t)s->transitions, "dropped_records", (json_int_t)s->dropped_records,
                     "config", block ? block : json_null(), "fleet", fleet ? fleet : json_null());
}

void rollouts_metrics(const rollouts_t *rs, buf_t *out)
{
    if (!rs->n_with)
        return;
    const config_t *cfg = rs->cfg;
    buf_printf(out, "# HELP ficus_rollout_step Canary weight percent the route's rollout applies.\n"
                    "# TYPE ficus_rollout_step gauge\n");
    for (size_t r = 0; r < cfg->n_routes; r++)
        if (rs->routes[r].r)
            buf_printf(out, "ficus_rollout_step{route=\"%s\"} %u\n", cfg->routes[r].name,
                       rollout_weight_percent(rs->routes[r].r));
    buf_printf(out, "# HELP ficus_rollout_state The route's rollout state (1 for the state it is "
                    "in, 0 for the others).\n"
                    "# TYPE ficus_rollout_state gauge\n");
    for (size_t r = 0; r < cfg->n_routes; r++)
        for (int st = 0; rs->routes[r].r && st < N_STATES; st++)
            buf_printf(out, "ficus_rollout_state{route=\"%s\",state=\"%s\"} %d\n",
                       cfg->routes[r].name, rollout_state_name((rollout_state_t)st),
                       rs->routes[r].state == (rollout_state_t)st);
    buf_printf(out, "# HELP ficus_rollout_transitions_total Rollout transitions by the state "
                    "entered and their cause.\n"
                    "# TYPE ficus_rollout_transitions_total counter\n");
    for (size_t r = 0; r < cfg->n_routes; r++)
        for (int to = 0; rs->routes[r].r && to < N_STATES; to++)
            for (int c = 0; c < N_CAUSES; c++)
                if (rs->routes[r].counts[to][c])
                    buf_printf(out,
                               "ficus_rollout_transitions_total{route=\"%s\",to=\"%s\","
                               "reason=\"%s\"} %llu\n",
                               cfg->routes[r].name, rollout_state_name((rollout_state_t)to),
                               rollout_cause_name((rollout_cause_t)c),
                               (unsigned long long)rs->routes[r].counts[to][c]);
}
