/* The rows of aggregation; see config_aggregate.h. */
#include "config/config_aggregate.h"

#include <string.h>

#include "config/config_rows.h"
#include "config/names.h"
#include "config/units.h"
#include "core/defaults.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED __attribute__((unused))

/* Defaults where the contract names none (docs/configuration.md). */
#define AGG_DEFAULT_MAX_BODY (1024 * 1024)
#define AGG_MAX_BODY (64 * 1024 * 1024)
#define AGG_MAX_EXTRACT 1024
#define AGG_CACHE_DEFAULT_ENTRIES 10000
#define AGG_CACHE_DEFAULT_BYTES (64 * 1024 * 1024)
#define AGG_CACHE_MAX_BYTES (4ull * 1024 * 1024 * 1024)

static config_rows_state_t *state(schema_ctx_t *c) { return c->user; }

static void f_call_name(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_agg_call_t *call = obj;
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    if (!names_valid(s) || s[0] == '_') {
        schema_err(c, v,
                   "%s: invalid name %s (letters, digits, '-', '_' and '.'; not starting with '_', "
                   "which _errors uses)",
                   path, schema_qnode(&q, v));
        return;
    }
    call->name = schema_strdup(c, s);
}

static void f_call_group(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_agg_call_t *call = obj;
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    call->target_group = CONFIG_NONE;
    if (!s)
        return;
    call->target_group = names_find(&state(c)->groups, s);
    if (call->target_group == CONFIG_NONE)
        schema_err(c, v, "%s: unknown target group %s", path, schema_qnode(&q, v));
}

static json_t *j_call_group(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_agg_call_t *call = obj;
    const config_t *cfg = root;
    return call->target_group == CONFIG_NONE
               ? json_null()
               : json_string(cfg->target_groups[call->target_group].name);
}

/* The call's request target: '/' first, printable ASCII without spaces,
 * and {user} as the only placeholder. */
static void f_call_path(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_agg_call_t *call = obj;
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    bool ok = s[0] == '/';
    for (const char *p = s; ok && *p; p++) {
        if (*p <= ' ' || *p > '~' || *p == '#')
            ok = false;
        else if (*p == '{' && strncmp(p, "{user}", 6) == 0)
            call->uses_user = true, p += 5;
        else if (*p == '{' || *p == '}')
            ok = false;
    }
    if (!ok) {
        schema_err(c, v,
                   "%s: expected a request target starting with '/', without spaces or '#', "
                   "with {user} as its only placeholder, got %s",
                   path, schema_qnode(&q, v));
        return;
    }
    call->path = schema_strdup(c, s);
}

static void f_call_extract(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    config_agg_call_t *call = obj;
    schema_quote_t q;
    call->extract = NULL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s)
        return;
    bool ok = (s[0] == '\0' || s[0] == '/') && strlen(s) <= AGG_MAX_EXTRACT;
    for (const char *p = s; ok && *p; p++)
        if (*p == '~' && p[1] != '0' && p[1] != '1')
            ok = false;
    if (!ok) {
        schema_err(c, v,
                   "%s: expected a JSON pointer (\"\" or starting with '/', '~' only as ~0 or "
                   "~1), got %s",
                   path, schema_qnode(&q, v));
        return;
    }
    call->extract = schema_strdup(c, s);
}

static const schema_row_t call_fields[] = {
    ROW_CUSTOM_REQ("name", f_call_name, ROW_AS(SCHEMA_STRING, config_agg_call_t, name)),
    ROW_CUSTOM_REQ("target_group", f_call_group, ROW_JSON(j_call_group)),
    ROW_CUSTOM_REQ("path", f_call_path, ROW_AS(SCHEMA_STRING, config_agg_call_t, path)),
    ROW_BOOL("required", config_agg_call_t, required, true),
    ROW_DURATION("cache_ttl", config_agg_call_t, cache_ttl_ms, 0, 0, CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("extract", f_call_extract, ROW_AS(SCHEMA_STRING, config_agg_call_t, extract),
               ROW_OMIT_NULL),
};

static void f_calls(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                    const char *path, void *obj)
{
    config_aggregate_t *a = obj;
    a->calls = NULL;
    a->n_calls = 0;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = schema_list_len(v);
    if (n == 0 || n > CONFIG_MAX_AGGREGATE_CALLS) {
        schema_err(c, v, "%s: 1 to %d calls", path, CONFIG_MAX_AGGREGATE_CALLS);
        return;
    }
    a->calls = schema_alloc_array(c, n, sizeof *a->calls);
    if (!a->calls)
        return;
    a->n_calls = n;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = schema_list_item(c, v, i);
        config_agg_call_t *call = &a->calls[i];
        char p[SCHEMA_PATH_BYTES];
        schema_seen_t seen;
        call->target_group = CONFIG_NONE;
        schema_path_index(p, path, i);
        if (!schema_want(c, it, YAML_MAPPING_NODE, p))
            continue;
        schema_apply(c, it, it, p, call_fields, ARRAY_LEN(call_fields), call, &seen);
        const yaml_node_t *nv = SCHEMA_SEEN_VAL(call_fields, seen, "name");
        for (size_t j = 0; j < i && call->name; j++)
            if (a->calls[j].name && strcmp(a->calls[j].name, call->name) == 0) {
                char np[SCHEMA_PATH_BYTES];
                schema_path_key(np, p, "name", 4);
                schema_err(c, nv, "%s: \"%s\" is already %s[%zu]'s name", np, call->name, path, j);
                break;
            }
    }
}

static json_t *j_calls(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_aggregate_t *a = obj;
    return schema_json_array(call_fields, ARRAY_LEN(call_fields), a->calls, sizeof *a->calls,
                             a->n_calls, root);
}

static const schema_row_t aggregate_fields[] = {
    ROW_DURATION("timeout", config_aggregate_t, timeout_ms, 0, 1, CONFIG_MAX_DURATION_MS),
    ROW_SIZE("max_body_size", config_aggregate_t, max_body_bytes, AGG_DEFAULT_MAX_BODY, 1,
             AGG_MAX_BODY),
    ROW_CUSTOM_REQ("calls", f_calls, ROW_JSON(j_calls)),
};

void config_aggregate_f_route(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_route_t *r = obj;
    schema_seen_t seen;
    memset(&r->aggregate, 0, sizeof r->aggregate);
    r->has_aggregate = false;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    r->has_aggregate = true;
    schema_apply(c, v, v, path, aggregate_fields, ARRAY_LEN(aggregate_fields), &r->aggregate,
                 &seen);
    /* Without its own timeout, the route's bounds the aggregation. */
    if (!r->aggregate.timeout_ms)
        r->aggregate.timeout_ms = r->timeout_ms;
}

json_t *config_aggregate_j_route(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_route_t *r = obj;
    return r->has_aggregate
               ? schema_json(aggregate_fields, ARRAY_LEN(aggregate_fields), &r->aggregate, root)
               : NULL;
}

/* ------------------------------------------------------- aggregate_cache */

static const char *const scope_names[2] = {"local", "redis"};

static void f_scope(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                    const char *path, void *obj)
{
    config_t *cfg = obj;
    schema_quote_t q;
    cfg->aggregate_cache_scope = SCOPE_LOCAL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s || strcmp(s, "local") == 0)
        return;
    if (strcmp(s, "redis") != 0) {
        schema_err(c, v, "%s: expected local or redis, got %s", path, schema_qnode(&q, v));
        return;
    }
    if (!cfg->redis_address) {
        schema_err(c, v, "%s: a cache shared by every instance lives in redis: set redis.address",
                   path);
        return;
    }
    cfg->aggregate_cache_scope = SCOPE_GLOBAL;
}

static json_t *j_scope(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_t *cfg = obj;
    return json_string(scope_names[cfg->aggregate_cache_scope == SCOPE_GLOBAL]);
}

static const schema_row_t cache_fields[] = {
    ROW_CUSTOM("scope", f_scope, ROW_JSON(j_scope)),
    ROW_UINT("max_entries", config_t, aggregate_cache_entries, AGG_CACHE_DEFAULT_ENTRIES, 1,
             10000000),
    ROW_SIZE("max_size", config_t, aggregate_cache_bytes, AGG_CACHE_DEFAULT_BYTES, 4096,
             AGG_CACHE_MAX_BYTES),
};

void config_aggregate_f_cache(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    schema_seen_t seen;
    if (v && !schema_want(c, v, YAML_MAPPING_NODE, path))
        v = NULL;
    schema_apply(c, v, v, path, cache_fields, ARRAY_LEN(cache_fields), obj, &seen);
}

json_t *config_aggregate_j_cache(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    return schema_json(cache_fields, ARRAY_LEN(cache_fields), obj, root);
}
