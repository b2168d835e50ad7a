/* The rows of migration safety (config_migration.h): a route's shadow
 * (10.1) and rollout (10.2). */
#include "config/config_migration.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "config/config_rows.h"
#include "config/names.h"
#include "config/units.h"
#include "core/defaults.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED __attribute__((unused))

/* Defaults where the contract names none (docs/configuration.md). */
#define SHADOW_DEFAULT_PERCENT 100       /* Diffy and Istio mirroring copy everything */
#define SHADOW_DEFAULT_MAX_IN_FLIGHT 100 /* copies in flight on the route */
#define SHADOW_MAX_IN_FLIGHT 100000
#define SHADOW_DEFAULT_METHODS (METHOD_GET | METHOD_HEAD | METHOD_OPTIONS)
#define SHADOW_DEFAULT_MAX_BODY (1024 * 1024)
#define SHADOW_MAX_BODY (64 * 1024 * 1024)
#define SHADOW_MAX_POINTER 1024             /* bytes of one JSON pointer */
#define ROLLOUT_DEFAULT_INTERVAL_MS 60000   /* Flagger's analysis.interval: 1m */
#define ROLLOUT_DEFAULT_MIN_REQUESTS 100    /* Flagger's request-success-rate needs traffic */
#define ROLLOUT_DEFAULT_MAX_ERROR_RATE 0.01 /* Flagger's request-success-rate threshold 99% */
#define ROLLOUT_MAX_LATENCY_RATIO 1000.0
#define HEDGE_DEFAULT_MAX_PERCENT 5 /* the contract's example */
#define DEADLINE_DEFAULT_MIN_REMAINING_MS 5
/* reload: the contract's example values */
#define RELOAD_DEFAULT_CANARY_PERCENT 10
#define RELOAD_DEFAULT_BAKE_MS 30000
#define RELOAD_DEFAULT_ERROR_INCREASE 2.0
#define RELOAD_DEFAULT_LATENCY_INCREASE 1.5
#define RELOAD_DEFAULT_MIN_REQUESTS 100
#define RELOAD_MAX_FACTOR 1000.0

static config_rows_state_t *state(schema_ctx_t *c) { return c->user; }

/* A route's block (shadow, rollout): the rows tab applied to mapping v
 * into obj, *has set when it was written. */
static void read_block(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                       const schema_row_t *tab, size_t n, void *obj, bool *has)
{
    schema_seen_t seen;
    *has = false;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    *has = true;
    schema_apply(c, v, v, path, tab, n, obj, &seen);
}

/* The target group named by v (an error and CONFIG_NONE when none is). */
static size_t read_group(schema_ctx_t *c, const yaml_node_t *v, const char *path)
{
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return CONFIG_NONE;
    size_t g = names_find(&state(c)->groups, s);
    if (g == CONFIG_NONE)
        schema_err(c, v, "%s: unknown target group %s", path, schema_qnode(&q, v));
    return g;
}

static json_t *group_json(const void *root, size_t g)
{
    const config_t *cfg = root;
    return g == CONFIG_NONE ? NULL : json_string(cfg->target_groups[g].name);
}

/* ---------------------------------------------------------------- shadow */

static void f_shadow_group(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    config_shadow_t *sh = obj;
    const config_route_t *r = state(c)->route;
    schema_quote_t q;
    sh->target_group = CONFIG_NONE;
    size_t g = read_group(c, v, path);
    if (g == CONFIG_NONE)
        return;
    /* A group that already serves the route's traffic would get its
     * requests twice; comparing the old system with itself is what
     * compare.noise does. A weight-0 backend (a rollout's canary before
     * step 1) may be shadowed. */
    for (size_t i = 0; i < r->n_backends; i++) {
        if (r->backends[i].target_group == g && r->backends[i].weight > 0) {
            schema_err(c, v,
                       "%s: %s already serves the route (backends[%zu] has weight %u); "
                       "shadow a group that does not, or use compare.noise",
                       path, schema_qnode(&q, v), i, r->backends[i].weight);
            return;
        }
    }
    sh->target_group = g;
}

static json_t *j_shadow_group(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_shadow_t *sh = obj;
    return group_json(root, sh->target_group);
}

/* The copy's path, a template as backends[].path. */
static void f_shadow_path(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_shadow_t *sh = obj;
    sh->path = config_rows_path_template(c, v, path);
}

static void method_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                        const char *s, void *obj)
{
    uint32_t *methods = obj;
    schema_quote_t q;
    uint32_t bit = config_method_bit(s, strlen(s));
    if (bit == METHOD_OTHER) {
        schema_err(c, it,
                   "%s: unknown method %s (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE or "
                   "CONNECT; upper case)",
                   p, schema_qnode(&q, it));
        return;
    }
    if (bit == METHOD_CONNECT) {
        schema_err(c, it, "%s: CONNECT opens a tunnel and cannot be copied", p);
        return;
    }
    *methods |= bit;
}

static void f_shadow_methods(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_shadow_t *sh = obj;
    sh->methods = SHADOW_DEFAULT_METHODS;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    sh->methods = 0;
    if (schema_list_len(v) == 0)
        schema_err(c, v, "%s: must not be empty (omit the shadow block to copy nothing)", path);
    else
        schema_each_str(c, v, path, method_item, &sh->methods);
}

static json_t *j_shadow_methods(const schema_row_t *f UNUSED, const void *obj,
                                const void *root UNUSED)
{
    const config_shadow_t *sh = obj;
    json_t *a = json_array();
    for (unsigned i = 0; a && i < HTTP_METHOD_OTHER; i++)
        if (sh->methods & (1u << i))
            json_array_append_new(a, json_string(http_method_name((http_method_t)i)));
    return a;
}

/* The strings of a list read so far (its items checked and copied). */
typedef struct str_list {
    char **items;
    size_t n;
} str_list_t;

/* The strings of list v into (*out, *n), each checked and copied by fn
 * (its obj is the str_list_t); none when v is absent or empty. */
static void read_list(schema_ctx_t *c, const yaml_node_t *v, const char *path, schema_item_fn fn,
                      char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path) || schema_list_len(v) == 0)
        return;
    str_list_t l = {schema_alloc_array(c, schema_list_len(v), sizeof(char *)), 0};
    if (!l.items)
        return;
    schema_each_str(c, v, path, fn, &l);
    *out = l.items;
    *n = l.n;
}

/* A JSON pointer (RFC 6901) where a "*" segment is any key or index: ""
 * (the whole body) or '/' first; '~' only as ~0 or ~1. */
static void pointer_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                         const char *s, void *obj)
{
    str_list_t *l = obj;
    schema_quote_t q;
    size_t len = strlen(s);
    if (len > SHADOW_MAX_POINTER) {
        schema_err(c, it, "%s: a JSON pointer of at most %d bytes, got %zu", p, SHADOW_MAX_POINTER,
                   len);
        return;
    }
    if (len > 0 && s[0] != '/') {
        schema_err(c, it, "%s: %s is not a JSON pointer (empty or starting with '/')", p,
                   schema_qnode(&q, it));
        return;
    }
    for (size_t j = 0; j < len; j++) {
        if (s[j] == '~' && s[j + 1] != '0' && s[j + 1] != '1') {
            schema_err(c, it, "%s: %s: '~' must be written ~0 ('~') or ~1 ('/') in a JSON pointer",
                       p, schema_qnode(&q, it));
            return;
        }
    }
    for (size_t j = 0; j < l->n; j++) {
        if (strcmp(l->items[j], s) == 0) {
            schema_err(c, it, "%s: %s is listed twice", p, schema_qnode(&q, it));
            return;
        }
    }
    l->items[l->n++] = schema_strdup(c, s);
}

static void header_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                        const char *s, void *obj)
{
    str_list_t *l = obj;
    schema_quote_t q;
    size_t len = strlen(s);
    if (!names_valid_token(s, len)) {
        schema_err(c, it, "%s: invalid header name %s", p, schema_qnode(&q, it));
        return;
    }
    char *lower = schema_strdup_lower(c, s, len);
    if (!lower)
        return;
    for (size_t j = 0; j < l->n; j++) {
        if (strcmp(l->items[j], lower) == 0) {
            schema_err(c, it, "%s: %s is listed twice", p, schema_qnode(&q, it));
            return;
        }
    }
    l->items[l->n++] = lower;
}

static void f_ignore(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                     const char *path, void *obj)
{
    config_shadow_compare_t *cmp = obj;
    read_list(c, v, path, pointer_item, &cmp->ignore, &cmp->n_ignore);
}

static void f_unordered(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_shadow_compare_t *cmp = obj;
    read_list(c, v, path, pointer_item, &cmp->unordered, &cmp->n_unordered);
}

static void f_headers(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    config_shadow_compare_t *cmp = obj;
    if (v && v->type == YAML_SEQUENCE_NODE && schema_list_len(v) > SHADOW_MAX_COMPARE_HEADERS) {
        schema_err(c, v, "%s: at most %d headers are compared, got %zu", path,
                   SHADOW_MAX_COMPARE_HEADERS, schema_list_len(v));
        return;
    }
    read_list(c, v, path, header_item, &cmp->headers, &cmp->n_headers);
}

static json_t *j_ignore(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_shadow_compare_t *cmp = obj;
    return schema_json_strings(cmp->ignore, sizeof(char *), cmp->n_ignore, 0);
}

static json_t *j_unordered(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_shadow_compare_t *cmp = obj;
    return schema_json_strings(cmp->unordered, sizeof(char *), cmp->n_unordered, 0);
}

static json_t *j_headers(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_shadow_compare_t *cmp = obj;
    return schema_json_strings(cmp->headers, sizeof(char *), cmp->n_headers, 0);
}

static const schema_row_t noise_fields[] = {
    ROW_UINT_REQ("percent", config_shadow_compare_t, noise_percent, 0, 100),
};

static const schema_row_t compare_fields[] = {
    ROW_CUSTOM("ignore", f_ignore, ROW_JSON(j_ignore)),
    ROW_CUSTOM("unordered", f_unordered, ROW_JSON(j_unordered)),
    ROW_CUSTOM("headers", f_headers, ROW_JSON(j_headers)),
    ROW_TABLE_SELF("noise", noise_fields, ROW_HAS(config_shadow_compare_t, has_noise)),
    ROW_SIZE("max_body_size", config_shadow_compare_t, max_body_size, SHADOW_DEFAULT_MAX_BODY, 0,
             SHADOW_MAX_BODY),
};

static const schema_row_t shadow_fields[] = {
    ROW_CUSTOM_REQ("target_group", f_shadow_group, ROW_JSON(j_shadow_group)),
    ROW_UINT("percent", config_shadow_t, percent, SHADOW_DEFAULT_PERCENT, 0, 100),
    ROW_CUSTOM("path", f_shadow_path, ROW_AS(SCHEMA_STRING, config_shadow_t, path), ROW_OMIT_NULL),
    ROW_CUSTOM("methods", f_shadow_methods, ROW_JSON(j_shadow_methods)),
    ROW_UINT("max_in_flight", config_shadow_t, max_in_flight, SHADOW_DEFAULT_MAX_IN_FLIGHT, 1,
             SHADOW_MAX_IN_FLIGHT),
    ROW_TABLE("compare", config_shadow_t, compare, compare_fields,
              ROW_HAS(config_shadow_t, has_compare)),
};

void config_migration_f_route_shadow(schema_ctx_t *c, const yaml_node_t *k UNUSED,
                                     const yaml_node_t *v, const char *path, void *obj)
{
    config_route_t *r = obj;
    memset(&r->shadow, 0, sizeof r->shadow);
    r->shadow.target_group = CONFIG_NONE;
    read_block(c, v, path, shadow_fields, ARRAY_LEN(shadow_fields), &r->shadow, &r->has_shadow);
}

json_t *config_migration_j_route_shadow(const schema_row_t *f UNUSED, const void *obj,
                                        const void *root)
{
    const config_route_t *r = obj;
    return r->has_shadow ? schema_json(shadow_fields, ARRAY_LEN(shadow_fields), &r->shadow, root)
                         : NULL;
}

/* --------------------------------------------------------------- rollout */

static void f_canary(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                     const char *path, void *obj)
{
    config_rollout_t *ro = obj;
    const config_route_t *r = state(c)->route;
    schema_quote_t q;
    ro->canary = CONFIG_NONE;
    size_t g = read_group(c, v, path);
    if (g == CONFIG_NONE)
        return;
    bool among = false;
    for (size_t i = 0; i < r->n_backends && !among; i++)
        among = r->backends[i].target_group == g;
    if (!among) {
        schema_err(c, v, "%s: %s is not one of the route's backends (add it with weight: 0)", path,
                   schema_qnode(&q, v));
        return;
    }
    if (r->n_backends < 2) {
        schema_err(c, v, "%s: %s is the route's only backend: a rollout moves traffic between two",
                   path, schema_qnode(&q, v));
        return;
    }
    ro->canary = g;
}

static json_t *j_canary(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_rollout_t *ro = obj;
    return group_json(root, ro->canary);
}

static void step_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                      const char *s, void *obj)
{
    config_rollout_t *ro = obj;
    uint64_t pct;
    const char *why = NULL;
    if (units_parse_uint(s, 1, 100, &pct, &why) != 0) {
        schema_err(c, it, "%s: expected a canary percent from 1 to 100 (%s)", p, why);
        return;
    }
    if (ro->n_steps > 0 && pct <= ro->steps[ro->n_steps - 1]) {
        schema_err(c, it, "%s: %u after %u: steps must ascend", p, (unsigned)pct,
                   ro->steps[ro->n_steps - 1]);
        return;
    }
    ro->steps[ro->n_steps++] = (uint32_t)pct;
}

static void f_steps(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                    const char *path, void *obj)
{
    config_rollout_t *ro = obj;
    ro->steps = NULL;
    ro->n_steps = 0;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = schema_list_len(v);
    if (n == 0 || n > CONFIG_ROLLOUT_MAX_STEPS) {
        schema_err(c, v, "%s: needs 1 to %d steps, got %zu", path, CONFIG_ROLLOUT_MAX_STEPS, n);
        return;
    }
    ro->steps = schema_alloc_array(c, n, sizeof *ro->steps);
    if (ro->steps)
        schema_each_str(c, v, path, step_item, ro);
}

static json_t *j_steps(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_rollout_t *ro = obj;
    json_t *a = json_array();
    for (size_t i = 0; a && i < ro->n_steps; i++)
        json_array_append_new(a, json_integer(ro->steps[i]));
    return a;
}

/* A rate written as a percentage: "1%", "0.5%", "100%", ".25%" (a decimal
 * number from 0 to 100, no sign or exponent, then '%'), into a fraction. */
static bool read_rate(schema_ctx_t *c, const yaml_node_t *v, const char *path, double *out)
{
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return false;
    size_t len = strlen(s);
    char num[32];
    double pct;
    if (len < 2 || len > sizeof num || s[len - 1] != '%') {
        schema_err(c, v, "%s: expected a percentage such as \"1%%\" or \"0.5%%\", got %s", path,
                   schema_qnode(&q, v));
        return false;
    }
    memcpy(num, s, len - 1);
    num[len - 1] = '\0';
    if (units_parse_decimal(num, &pct) != 0 || !(pct <= 100.0)) {
        schema_err(c, v, "%s: expected a percentage from 0%% to 100%%, got %s", path,
                   schema_qnode(&q, v));
        return false;
    }
    *out = pct / 100.0;
    return true;
}

static json_t *rate_json(double fraction)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.10g%%", fraction * 100.0);
    return json_string(buf);
}

static void f_max_error_rate(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_rollout_t *ro = obj;
    ro->max_error_rate = ROLLOUT_DEFAULT_MAX_ERROR_RATE;
    if (v)
        read_rate(c, v, path, &ro->max_error_rate);
}

static json_t *j_max_error_rate(const schema_row_t *f UNUSED, const void *obj,
                                const void *root UNUSED)
{
    const config_rollout_t *ro = obj;
    return rate_json(ro->max_error_rate);
}

static void f_max_latency_ratio(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                                const char *path, void *obj)
{
    config_rollout_t *ro = obj;
    schema_quote_t q;
    double x;
    ro->max_latency_ratio = 0;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s)
        return;
    if (units_parse_decimal(s, &x) != 0 || !(x > 1.0) || !(x <= ROLLOUT_MAX_LATENCY_RATIO)) {
        schema_err(c, v,
                   "%s: expected a number above 1 and at most %g (canary p99 / primary p99), "
                   "got %s",
                   path, ROLLOUT_MAX_LATENCY_RATIO, schema_qnode(&q, v));
        return;
    }
    ro->max_latency_ratio = x;
}

static json_t *j_max_latency_ratio(const schema_row_t *f UNUSED, const void *obj,
                                   const void *root UNUSED)
{
    const config_rollout_t *ro = obj;
    return ro->max_latency_ratio > 0 ? json_real(ro->max_latency_ratio) : json_null();
}

static void f_max_mismatch_rate(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                                const char *path, void *obj)
{
    config_rollout_t *ro = obj;
    const config_route_t *r = state(c)->route;
    ro->has_max_mismatch_rate = false;
    ro->max_mismatch_rate = 0;
    if (!v || !read_rate(c, v, path, &ro->max_mismatch_rate))
        return;
    if (!r->has_shadow || !r->shadow.has_compare) {
        schema_err(c, v,
                   "%s: mismatches come from shadow.compare: add a shadow block with compare "
                   "to the route",
                   path);
        return;
    }
    ro->has_max_mismatch_rate = true;
}

static json_t *j_max_mismatch_rate(const schema_row_t *f UNUSED, const void *obj,
                                   const void *root UNUSED)
{
    const config_rollout_t *ro = obj;
    return ro->has_max_mismatch_rate ? rate_json(ro->max_mismatch_rate) : json_null();
}

/* One of two words into *out (0 or 1); the first is the default. */
static void read_choice(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                        const char *const words[2], int *out)
{
    schema_quote_t q;
    *out = 0;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s)
        return;
    for (int i = 0; i < 2; i++) {
        if (strcmp(s, words[i]) == 0) {
            *out = i;
            return;
        }
    }
    schema_err(c, v, "%s: expected %s or %s, got %s", path, words[0], words[1],
               schema_qnode(&q, v));
}

static const char *const on_failure_names[2] = {"rollback", "pause"};
static const char *const state_names[2] = {"local", "redis"};

static void f_on_failure(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_rollout_t *ro = obj;
    int i;
    read_choice(c, v, path, on_failure_names, &i);
    ro->on_failure = i ? CONFIG_ON_FAILURE_PAUSE : CONFIG_ON_FAILURE_ROLLBACK;
}

static json_t *j_on_failure(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_rollout_t *ro = obj;
    return json_string(on_failure_names[ro->on_failure]);
}

static void f_state(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                    const char *path, void *obj)
{
    config_rollout_t *ro = obj;
    int i;
    read_choice(c, v, path, state_names, &i);
    ro->state = i ? CONFIG_ROLLOUT_REDIS : CONFIG_ROLLOUT_LOCAL;
    if (ro->state == CONFIG_ROLLOUT_REDIS && !state(c)->cfg->redis_address)
        schema_err(c, v, "%s: a shared rollout state lives in redis: set redis.address", path);
}

static json_t *j_state(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_rollout_t *ro = obj;
    return json_string(state_names[ro->state]);
}

static const schema_row_t rollout_fields[] = {
    ROW_CUSTOM_REQ("canary", f_canary, ROW_JSON(j_canary)),
    ROW_CUSTOM_REQ("steps", f_steps, ROW_JSON(j_steps)),
    ROW_DURATION("interval", config_rollout_t, interval_ms, ROLLOUT_DEFAULT_INTERVAL_MS, 1000,
                 CONFIG_MAX_DURATION_MS),
    ROW_UINT("min_requests", config_rollout_t, min_requests, ROLLOUT_DEFAULT_MIN_REQUESTS, 0,
             1000000000),
    ROW_CUSTOM("max_error_rate", f_max_error_rate, ROW_JSON(j_max_error_rate)),
    ROW_CUSTOM("max_latency_ratio", f_max_latency_ratio, ROW_JSON(j_max_latency_ratio)),
    ROW_CUSTOM("max_mismatch_rate", f_max_mismatch_rate, ROW_JSON(j_max_mismatch_rate)),
    ROW_CUSTOM("on_failure", f_on_failure, ROW_JSON(j_on_failure)),
    ROW_CUSTOM("state", f_state, ROW_JSON(j_state)),
};

void config_migration_f_route_rollout(schema_ctx_t *c, const yaml_node_t *k UNUSED,
                                      const yaml_node_t *v, const char *path, void *obj)
{
    config_route_t *r = obj;
    memset(&r->rollout, 0, sizeof r->rollout);
    r->rollout.canary = CONFIG_NONE;
    read_block(c, v, path, rollout_fields, ARRAY_LEN(rollout_fields), &r->rollout, &r->has_rollout);
}

json_t *config_migration_j_route_rollout(const schema_row_t *f UNUSED, const void *obj,
                                         const void *root)
{
    const config_route_t *r = obj;
    return r->has_rollout
               ? schema_json(rollout_fields, ARRAY_LEN(rollout_fields), &r->rollout, root)
               : NULL;
}

/* ---------------------------------------------------- deadline and hedge */

static void f_hedge_after(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_hedge_t *h = obj;
    schema_quote_t q;
    const char *why = NULL;
    h->after_ms = 0;
    h->after_percentile = 0;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s)
        return;
    if (strcmp(s, "p95") == 0 || strcmp(s, "p99") == 0) {
        h->after_percentile = s[2] == '5' ? 95 : 99;
        return;
    }
    uint64_t ms;
    if (units_parse_duration_ms(s, &ms, &why) != 0 || ms < 1 || ms > CONFIG_MAX_DURATION_MS) {
        schema_err(c, v,
                   "%s: expected a duration of at least 1ms (such as 250ms), p95 or p99, got %s",
                   path, schema_qnode(&q, v));
        return;
    }
    h->after_ms = ms;
}

static json_t *j_hedge_after(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_hedge_t *h = obj;
    if (h->after_percentile)
        return json_string(h->after_percentile == 95 ? "p95" : "p99");
    char out[32];
    units_format_duration(h->after_ms, out, sizeof out);
    return json_string(out);
}

static const schema_row_t hedge_fields[] = {
    ROW_CUSTOM_REQ("after", f_hedge_after, ROW_JSON(j_hedge_after)),
    ROW_UINT("max_percent", config_hedge_t, max_percent, HEDGE_DEFAULT_MAX_PERCENT, 1, 100),
};

void config_migration_f_hedge(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_retries_t *rt = obj;
    memset(&rt->hedge, 0, sizeof rt->hedge);
    read_block(c, v, path, hedge_fields, ARRAY_LEN(hedge_fields), &rt->hedge, &rt->has_hedge);
}

json_t *config_migration_j_hedge(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_retries_t *rt = obj;
    return rt->has_hedge ? schema_json(hedge_fields, ARRAY_LEN(hedge_fields), &rt->hedge, root)
                         : NULL;
}

static const schema_row_t deadline_fields[] = {
    ROW_BOOL("propagate", config_deadline_t, propagate, true),
    ROW_DURATION("min_remaining", config_deadline_t, min_remaining_ms,
                 DEADLINE_DEFAULT_MIN_REMAINING_MS, 0, CONFIG_MAX_DURATION_MS),
};

void config_migration_f_route_deadline(schema_ctx_t *c, const yaml_node_t *k UNUSED,
                                       const yaml_node_t *v, const char *path, void *obj)
{
    config_route_t *r = obj;
    schema_seen_t seen;
    if (v && !schema_want(c, v, YAML_MAPPING_NODE, path))
        v = NULL;
    /* Absent: every row's default (propagation on). */
    schema_apply(c, v, v, path, deadline_fields, ARRAY_LEN(deadline_fields), &r->deadline, &seen);
}

json_t *config_migration_j_route_deadline(const schema_row_t *f UNUSED, const void *obj,
                                          const void *root)
{
    const config_route_t *r = obj;
    return schema_json(deadline_fields, ARRAY_LEN(deadline_fields), &r->deadline, root);
}

/* ---------------------------------------------------------------- reload */

/* A factor such as "2x" or "1.5x" (the x may be left out), at least 1. */
static void read_factor(schema_ctx_t *c, const yaml_node_t *v, const char *path, double *out)
{
    schema_quote_t q;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s)
        return;
    char num[32];
    size_t n = strlen(s);
    if (n && (s[n - 1] == 'x' || s[n - 1] == 'X'))
        n--;
    double x;
    if (n == 0 || n >= sizeof num) {
        schema_err(c, v, "%s: expected a factor such as 2x or 1.5x, got %s", path,
                   schema_qnode(&q, v));
        return;
    }
    memcpy(num, s, n);
    num[n] = '\0';
    if (units_parse_decimal(num, &x) != 0 || !(x >= 1.0) || !(x <= RELOAD_MAX_FACTOR)) {
        schema_err(c, v, "%s: expected a factor from 1x to %gx (such as 2x or 1.5x), got %s", path,
                   RELOAD_MAX_FACTOR, schema_qnode(&q, v));
        return;
    }
    *out = x;
}

static json_t *factor_json(double x)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%gx", x);
    return json_string(buf);
}

static void f_error_increase(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_reload_t *rl = obj;
    rl->max_error_rate_increase = RELOAD_DEFAULT_ERROR_INCREASE;
    read_factor(c, v, path, &rl->max_error_rate_increase);
}

static json_t *j_error_increase(const schema_row_t *f UNUSED, const void *obj,
                                const void *root UNUSED)
{
    return factor_json(((const config_reload_t *)obj)->max_error_rate_increase);
}

static void f_latency_increase(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                               const char *path, void *obj)
{
    config_reload_t *rl = obj;
    rl->max_latency_increase = RELOAD_DEFAULT_LATENCY_INCREASE;
    read_factor(c, v, path, &rl->max_latency_increase);
}

static json_t *j_latency_increase(const schema_row_t *f UNUSED, const void *obj,
                                  const void *root UNUSED)
{
    return factor_json(((const config_reload_t *)obj)->max_latency_increase);
}

static const schema_row_t reload_fields[] = {
    /* At most 99: at 100 the serving configuration would get no new request
     * to be compared with. */
    ROW_UINT("canary_percent", config_reload_t, canary_percent, RELOAD_DEFAULT_CANARY_PERCENT, 1,
             99),
    ROW_DURATION("bake", config_reload_t, bake_ms, RELOAD_DEFAULT_BAKE_MS, 1000,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("max_error_rate_increase", f_error_increase, ROW_JSON(j_error_increase)),
    ROW_CUSTOM("max_latency_increase", f_latency_increase, ROW_JSON(j_latency_increase)),
    ROW_UINT("min_requests", config_reload_t, min_requests, RELOAD_DEFAULT_MIN_REQUESTS, 0,
             1000000000),
};

void config_migration_f_reload(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                               const char *path, void *obj)
{
    config_t *cfg = obj;
    memset(&cfg->reload, 0, sizeof cfg->reload);
    read_block(c, v, path, reload_fields, ARRAY_LEN(reload_fields), &cfg->reload, &cfg->has_reload);
}

json_t *config_migration_j_reload(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_t *cfg = obj;
    return cfg->has_reload
               ? schema_json(reload_fields, ARRAY_LEN(reload_fields), &cfg->reload, root)
               : NULL;
}
