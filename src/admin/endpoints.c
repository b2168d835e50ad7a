/* Admin endpoints over the gateway's state; see endpoints.h. The data comes
 * through admin_hooks_t as plain structs, so this file knows nothing of
 * configs, health records or weights tables. */
#include "admin/endpoints.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"

static size_t n_groups(const admin_hooks_t *h) { return h->n_groups ? h->n_groups(h->ctx) : 0; }
static size_t n_routes(const admin_hooks_t *h) { return h->n_routes ? h->n_routes(h->ctx) : 0; }

static void group_info(const admin_hooks_t *h, size_t g, admin_group_info_t *gi)
{
    memset(gi, 0, sizeof *gi);
    if (h->group)
        h->group(h->ctx, g, gi);
}

static void target_info(const admin_hooks_t *h, size_t g, size_t t, admin_target_info_t *ti)
{
    memset(ti, 0, sizeof *ti);
    if (h->target)
        h->target(h->ctx, g, t, ti);
}

static void route_info(const admin_hooks_t *h, size_t r, admin_route_info_t *ri)
{
    memset(ri, 0, sizeof *ri);
    if (h->route)
        h->route(h->ctx, r, ri);
}

int endpoints_ready(const admin_hooks_t *h, char *reason, size_t n)
{
    if (h->draining && h->draining(h->ctx)) {
        snprintf(reason, n, "draining");
        return 0;
    }
    for (size_t g = 0; g < n_groups(h); g++) {
        admin_group_info_t gi;
        group_info(h, g, &gi);
        if (gi.required && gi.usable_targets == 0) {
            snprintf(reason, n, "required target group %s has no healthy target", gi.name);
            return 0;
        }
    }
    return 1;
}

/* --- /metrics: the registry, plus the gauges whose values live elsewhere --- */

static void each_weight(void *ctx, void (*emit)(void *, const char *, const char *, uint32_t),
                        void *ctx2)
{
    const admin_hooks_t *h = ctx;
    for (size_t r = 0; r < n_routes(h); r++) {
        admin_route_info_t ri;
        route_info(h, r, &ri);
        for (size_t b = 0; b < ri.n_backends; b++)
            emit(ctx2, ri.name, ri.backends[b], ri.weights[b]);
    }
}

static void each_health(void *ctx, void (*emit)(void *, const char *, const char *, int, int),
                        void *ctx2)
{
    const admin_hooks_t *h = ctx;
    for (size_t g = 0; g < n_groups(h); g++) {
        admin_group_info_t gi;
        group_info(h, g, &gi);
        for (size_t t = 0; t < gi.n_targets; t++) {
            admin_target_info_t ti;
            target_info(h, g, t, &ti);
            emit(ctx2, gi.name, ti.name, ti.usable, ti.ejected);
        }
    }
}

static void each_panic(void *ctx, void (*emit)(void *, const char *, int), void *ctx2)
{
    const admin_hooks_t *h = ctx;
    for (size_t g = 0; g < n_groups(h); g++) {
        admin_group_info_t gi;
        group_info(h, g, &gi);
        emit(ctx2, gi.name, gi.panic);
    }
}

void endpoints_metrics(const admin_hooks_t *h, buf_t *out)
{
    metrics_gauges_t g = {.ctx = (void *)h,
                          .each_backend_weight = each_weight,
                          .each_target_health = each_health,
                          .each_group_panic = each_panic};
    if (h->metrics)
        metrics_render(h->metrics, &g, out);
    /* Lines the access-log writer dropped rather than block a worker. */
    buf_printf(out,
               "# HELP ficus_access_log_dropped_lines_total Access-log lines dropped because the "
               "writer fell behind.\n"
               "# TYPE ficus_access_log_dropped_lines_total counter\n"
               "ficus_access_log_dropped_lines_total %llu\n",
               (unsigned long long)(h->access_log ? access_log_dropped_lines(h->access_log) : 0));
    if (h->rate_limit_evictions)
        buf_printf(
            out,
            "# HELP ficus_rate_limit_evictions_total Rate-limit buckets evicted to make room "
            "for new keys (the table is fixed in size).\n"
            "# TYPE ficus_rate_limit_evictions_total counter\n"
            "ficus_rate_limit_evictions_total %llu\n",
            (unsigned long long)h->rate_limit_evictions(h->ctx));
    if (h->shadow_metrics)
        h->shadow_metrics(h->ctx, out);
    if (h->rollout_metrics)
        h->rollout_metrics(h->ctx, out);
}

/* --- JSON endpoints: /config, /target_groups, /routes/NAME/weights,
 * /routes/NAME/shadow and /routes/NAME/rollout[/ACTION] --- */

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

static json_t *target_json(const admin_target_info_t *ti)
{
    return json_pack("{s:s,s:s?,s:b,s:b,s:b,s:I,s:i,s:i,s:i}", "target", ti->name, "address",
                     ti->address, "healthy", ti->usable, "health_check_ok", ti->health_check_ok,
                     "ejected", ti->ejected, "ejected_for_ms", (json_int_t)ti->ejected_for_ms,
                     "ejections", (int)ti->ejections, "consecutive_errors",
                     (int)ti->consecutive_errors, "inflight", (int)ti->inflight);
}

static int target_groups_json(const admin_hooks_t *h, buf_t *out)
{
    json_t *root = json_object();
    for (size_t g = 0; g < n_groups(h); g++) {
        admin_group_info_t gi;
        group_info(h, g, &gi);
        json_t *targets = json_array();
        for (size_t t = 0; t < gi.n_targets; t++) {
            admin_target_info_t ti;
            target_info(h, g, t, &ti);
            json_array_append_new(targets, target_json(&ti));
        }
        json_object_set_new(root, gi.name,
                            json_pack("{s:o,s:i,s:b,s:{s:i,s:i,s:i},s:{s:i,s:i,s:i}}", "targets",
                                      targets, "healthy_targets", (int)gi.usable_targets,
                                      "required", gi.required, "circuit_breaker", "connections",
                                      (int)gi.connections, "pending", (int)gi.pending, "requests",
                                      (int)gi.requests, "limits", "max_connections",
                                      (int)gi.max_connections, "max_pending", (int)gi.max_pending,
                                      "max_requests", (int)gi.max_requests));
    }
    return reply_json(out, root, 200);
}

static json_t *route_weights_json(const admin_route_info_t *ri)
{
    json_t *w = json_object();
    for (size_t b = 0; b < ri->n_backends; b++)
        json_object_set_new(w, ri->backends[b], json_integer(ri->weights[b]));
    return json_pack("{s:s,s:o}", "route", ri->name, "weights", w);
}

static int put_weights(const admin_hooks_t *h, size_t r, const admin_route_info_t *ri,
                       const char *body, size_t len, buf_t *out)
{
    json_error_t jerr;
    json_t *j = json_loadb(body, len, 0, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return reply_error(out, 400, "bad_request",
                           "body must be a JSON object of target group name to weight");
    }
    if (ri->has_rollout) {
        json_decref(j);
        return reply_error(out, 409, "conflict",
                           "this route's rollout owns its weights: use POST "
                           "/routes/NAME/rollout/pause|resume|promote|rollback|restart");
    }
    uint32_t v[MAX_ROUTE_BACKENDS];
    memcpy(v, ri->weights, sizeof v);
    const char *key;
    json_t *val;
    char msg[300];
    json_object_foreach(j, key, val)
    {
        size_t b = SIZE_MAX;
        for (size_t i = 0; i < ri->n_backends; i++)
            if (strcmp(ri->backends[i], key) == 0)
                b = i;
        if (b == SIZE_MAX) {
            snprintf(msg, sizeof msg, "\"%s\" is not a backend of route %s", key, ri->name);
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
    for (size_t i = 0; i < ri->n_backends; i++)
        total += v[i];
    if (total == 0)
        return reply_error(out, 400, "bad_request", "at least one weight must be above 0");
    if (h->set_weights)
        h->set_weights(h->ctx, r, v);
    log_info("route %s: weights changed through the admin API", ri->name);
    admin_route_info_t now;
    route_info(h, r, &now);
    return reply_json(out, route_weights_json(&now), 200);
}

/* The route named name (SIZE_MAX: none), its backends and weights in *ri. */
static size_t find_route(const admin_hooks_t *h, const char *name, admin_route_info_t *ri)
{
    for (size_t r = 0; r < n_routes(h); r++) {
        route_info(h, r, ri);
        if (ri->name && strcmp(ri->name, name) == 0)
            return r;
    }
    return SIZE_MAX;
}

/* path is "/routes/NAME" + suffix: NAME into name ("" when it does not fit:
 * no route has such a name). */
static bool route_endpoint(const char *path, size_t plen, const char *suffix, char *name,
                           size_t cap)
{
    static const char pre[] = "/routes/";
    size_t lp = sizeof pre - 1, ls = strlen(suffix);
    if (plen <= lp + ls || memcmp(path, pre, lp) != 0 || memcmp(path + plen - ls, suffix, ls) != 0)
        return false;
    size_t nlen = plen - lp - ls;
    if (nlen >= cap)
        nlen = 0;
    memcpy(name, path + lp, nlen);
    name[nlen] = '\0';
    return true;
}

static int route_shadow(const admin_hooks_t *h, const char *name, bool get, buf_t *out,
                        const char **allow)
{
    admin_route_info_t ri;
    size_t r = find_route(h, name, &ri);
    if (r == SIZE_MAX)
        return reply_error(out, 404, "not_found", "no such route");
    if (!get) {
        *allow = "GET";
        return reply_error(out, 405, "method_not_allowed", "use GET");
    }
    json_t *j = h->route_shadow ? h->route_shadow(h->ctx, r) : NULL;
    if (!j)
        return reply_error(out, 404, "not_found", "this route has no shadow");
    return reply_json(out, j, 200);
}

static int rollout_json(const admin_hooks_t *h, size_t r, const admin_route_info_t *ri, buf_t *out)
{
    if (!ri->has_rollout || !h->rollout)
        return reply_error(out, 404, "not_found", "this route has no rollout");
    json_t *j = h->rollout(h->ctx, r);
    return j ? reply_json(out, j, 200) : 500;
}

/* /routes/NAME/rollout and /routes/NAME/rollout/ACTION; 0 for other paths. */
static int rollout_endpoint(const admin_hooks_t *h, bool get, bool post, const char *path,
                            size_t plen, buf_t *out, const char **allow)
{
    static const char pre[] = "/routes/", mid[] = "/rollout";
    size_t lp = sizeof pre - 1, lm = sizeof mid - 1;
    if (plen <= lp || memcmp(path, pre, lp) != 0)
        return 0;
    const char *name = path + lp, *end = path + plen;
    const char *slash = memchr(name, '/', (size_t)(end - name));
    if (!slash || (size_t)(end - slash) < lm || memcmp(slash, mid, lm) != 0)
        return 0;
    const char *action = slash + lm;
    size_t alen = (size_t)(end - action);
    if (alen > 0 && (action[0] != '/' || alen == 1 || memchr(action + 1, '/', alen - 1)))
        return 0;
    char buf[256];
    size_t nlen = (size_t)(slash - name);
    admin_route_info_t ri;
    size_t r = SIZE_MAX;
    if (nlen > 0 && nlen < sizeof buf) {
        memcpy(buf, name, nlen);
        buf[nlen] = '\0';
        r = find_route(h, buf, &ri);
    }
    if (alen == 0) {
        if (!get) {
            *allow = "GET";
            return reply_error(out, 405, "method_not_allowed", "use GET");
        }
        return r == SIZE_MAX ? reply_error(out, 404, "not_found", "no such route")
                             : rollout_json(h, r, &ri, out);
    }
    if (!post) {
        *allow = "POST";
        return reply_error(out, 405, "method_not_allowed", "use POST");
    }
    if (r == SIZE_MAX)
        return reply_error(out, 404, "not_found", "no such route");
    if (!ri.has_rollout || !h->rollout_action)
        return reply_error(out, 404, "not_found", "this route has no rollout");
    char msg[200];
    int rc = h->rollout_action(h->ctx, r, action + 1, alen - 1);
    if (rc == FE_NOTFOUND)
        return reply_error(out, 404, "not_found",
                           "no such rollout action: use pause, resume, promote, rollback or "
                           "restart");
    if (rc != 0) {
        json_t *j = h->rollout ? h->rollout(h->ctx, r) : NULL;
        const char *st = j ? json_string_value(json_object_get(j, "state")) : NULL;
        snprintf(msg, sizeof msg, "%.*s makes no sense while the rollout is %s (canary at %d%%)",
                 (int)(alen - 1), action + 1, st ? st : "in this state",
                 j ? (int)json_integer_value(json_object_get(j, "canary_percent")) : 0);
        json_decref(j);
        return reply_error(out, 409, "conflict", msg);
    }
    log_info("route %s: rollout %.*s through the admin API", ri.name, (int)(alen - 1), action + 1);
    return rollout_json(h, r, &ri, out);
}

int endpoints_handle(const admin_hooks_t *h, const char *method, size_t mlen, const char *path,
                     size_t plen, const char *body, size_t blen, buf_t *out, const char **allow)
{
    bool get = mlen == 3 && memcmp(method, "GET", 3) == 0;
    bool put = mlen == 3 && memcmp(method, "PUT", 3) == 0;
    if (plen == 7 && memcmp(path, "/config", 7) == 0) {
        if (!get) {
            *allow = "GET";
            return reply_error(out, 405, "method_not_allowed", "use GET");
        }
        json_t *j = h->config ? h->config(h->ctx) : NULL;
        return j ? reply_json(out, j, 200) : 500;
    }
    if (plen == 14 && memcmp(path, "/target_groups", 14) == 0) {
        if (!get) {
            *allow = "GET";
            return reply_error(out, 405, "method_not_allowed", "use GET");
        }
        return target_groups_json(h, out);
    }
    if (plen == 15 && memcmp(path, "/config/history", 15) == 0) {
        if (!get) {
            *allow = "GET";
            return reply_error(out, 405, "method_not_allowed", "use GET");
        }
        json_t *j = h->config_history ? h->config_history(h->ctx) : NULL;
        return j ? reply_json(out, j, 200) : 500;
    }
    if (plen == 10 && memcmp(path, "/migration", 10) == 0) {
        if (!get) {
            *allow = "GET";
            return reply_error(out, 405, "method_not_allowed", "use GET");
        }
        json_t *j = h->migration ? h->migration(h->ctx) : NULL;
        return j ? reply_json(out, j, 200) : 500;
    }
    bool post = mlen == 4 && memcmp(method, "POST", 4) == 0;
    int rc = rollout_endpoint(h, get, post, path, plen, out, allow);
    if (rc)
        return rc;
    char name[256];
    if (route_endpoint(path, plen, "/weights", name, sizeof name)) {
        admin_route_info_t ri;
        size_t r = find_route(h, name, &ri);
        if (r == SIZE_MAX)
            return reply_error(out, 404, "not_found", "no such route");
        if (get)
            return reply_json(out, route_weights_json(&ri), 200);
        if (put)
            return put_weights(h, r, &ri, body, blen, out);
        *allow = "GET, PUT";
        return reply_error(out, 405, "method_not_allowed", "use GET or PUT");
    }
    if (route_endpoint(path, plen, "/shadow", name, sizeof name))
        return route_shadow(h, name, get, out, allow);
    return 0;
}
