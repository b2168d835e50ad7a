/* The migration board's wiring; see migration.h. */
#include "app/migration.h"

#include <stdlib.h>

#include "core/errors.h"
#include "policy/rollout.h"

/* Whether group g plays the new service on route r. */
static board_role_t role(const config_route_t *r, size_t g)
{
    if (r->has_rollout && r->rollout.canary == g)
        return BOARD_NEW;
    if (r->has_shadow && r->shadow.target_group == g)
        return BOARD_NEW;
    for (size_t i = 0; i < r->n_backends; i++)
        if (r->backends[i].target_group == g && r->backends[i].fallback != CONFIG_NONE)
            return BOARD_NEW;
    return BOARD_OLD;
}

/* Whether route r can send requests to group g (a backend or a fallback). */
static bool uses(const config_route_t *r, size_t g)
{
    for (size_t i = 0; i < r->n_backends; i++)
        if (r->backends[i].target_group == g || r->backends[i].fallback == g)
            return true;
    return false;
}

int migration_map_make(board_t *b, const config_t *cfg, uint64_t now_ms, migration_map_t *out)
{
    size_t nr = cfg->n_routes ? cfg->n_routes : 1;
    size_t ng = cfg->n_target_groups ? cfg->n_target_groups : 1;
    out->routes = calloc(nr, sizeof *out->routes);
    out->groups = calloc(nr, sizeof *out->groups);
    out->store = malloc(nr * ng * sizeof *out->store);
    if (!out->routes || !out->groups || !out->store) {
        migration_map_free(out);
        return FE_NOMEM;
    }
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const config_route_t *rt = &cfg->routes[r];
        uint32_t *map = out->groups[r] = out->store + r * ng;
        board_route_t *br = out->routes[r] = board_route(b, rt->name, now_ms);
        for (size_t g = 0; g < cfg->n_target_groups; g++)
            map[g] = br && uses(rt, g)
                         ? board_route_group(br, cfg->target_groups[g].name, role(rt, g))
                         : UINT32_MAX;
    }
    return 0;
}

void migration_map_free(migration_map_t *m)
{
    free(m->routes);
    free(m->groups);
    free(m->store);
    *m = (migration_map_t){0};
}

static json_t *shadow_json(shadow_route_t *sr)
{
    shadow_summary_t s;
    shadow_route_summary(sr, &s);
    json_t *fields = json_array();
    for (size_t i = 0; i < s.n_fields; i++)
        json_array_append_new(fields, json_pack("{s:s,s:f}", "field", s.fields[i], "mismatch_rate",
                                                s.field_rates[i]));
    return json_pack("{s:I,s:o,s:o}", "compared", (json_int_t)s.compared, "match_rate",
                     s.match_rate < 0 ? json_null() : json_real(s.match_rate), "top_fields",
                     fields);
}

static json_t *rollout_json(rollout_t *ro, const config_route_t *rt, uint64_t now_ms)
{
    rollout_snapshot_t *s = malloc(sizeof *s);
    if (!s)
        return json_null();
    rollout_snapshot(ro, now_ms, s);
    json_t *j =
        json_pack("{s:s,s:I,s:I,s:I}", "state", rollout_state_name(s->state), "step",
                  (json_int_t)(s->state == ROLLOUT_PENDING ? 0 : s->step + 1), "steps",
                  (json_int_t)rt->rollout.n_steps, "percent", (json_int_t)s->weight_percent);
    free(s);
    return j;
}

json_t *migration_json(const config_t *cfg, const migration_map_t *m,
                       shadow_route_t *const *shadow_routes, rollouts_t *rs, uint64_t now_ms,
                       uint64_t realtime_ms)
{
    json_t *routes = json_array();
    for (size_t r = 0; r < cfg->n_routes && m->routes; r++) {
        if (!m->routes[r])
            continue;
        json_t *j = board_route_json(m->routes[r], now_ms, realtime_ms);
        if (!j)
            continue;
        shadow_route_t *sr = shadow_routes ? shadow_routes[r] : NULL;
        json_object_set_new(j, "shadow", sr ? shadow_json(sr) : json_null());
        rollout_t *ro = rs ? rollouts_get(rs, r) : NULL;
        json_object_set_new(j, "rollout",
                            ro ? rollout_json(ro, &cfg->routes[r], now_ms) : json_null());
        json_array_append_new(routes, j);
    }
    return json_pack("{s:I,s:I,s:I,s:o}", "generated_at_ms", (json_int_t)realtime_ms,
                     "window_seconds", (json_int_t)(BOARD_BUCKETS * BOARD_BUCKET_MS / 1000),
                     "bucket_seconds", (json_int_t)(BOARD_BUCKET_MS / 1000), "routes", routes);
}
