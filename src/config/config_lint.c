/* The `lint` keys; see config_lint.h. */
#include "config/config_lint.h"

#include <string.h>

#include "config/config.h"
#include "config/lint.h"

#define UNUSED __attribute__((unused))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void rule_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                      const char *s, void *obj)
{
    uint32_t *bits = obj;
    int r = lint_rule_find(s, strlen(s));
    if (r >= 0) {
        *bits |= 1u << r;
        return;
    }
    char names[512] = "";
    for (int k = 0; k < LINT_N_RULES; k++) {
        strncat(names, k ? ", " : "", sizeof names - strlen(names) - 1);
        strncat(names, lint_rule_name((lint_rule_t)k), sizeof names - strlen(names) - 1);
    }
    schema_quote_t q;
    schema_err(c, it, "%s: unknown lint rule %s (the rules: %s)", p, schema_qnode(&q, it), names);
}

static void f_ignore(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                     const char *path, void *obj)
{
    uint32_t *bits = obj;
    *bits = 0;
    if (v && schema_want(c, v, YAML_SEQUENCE_NODE, path))
        schema_each_str(c, v, path, rule_item, bits);
}

static json_t *j_ignore(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const uint32_t *bits = obj;
    json_t *a = json_array();
    for (int k = 0; a && k < LINT_N_RULES; k++)
        if (*bits & (1u << k))
            json_array_append_new(a, json_string(lint_rule_name((lint_rule_t)k)));
    return a;
}

static const schema_row_t lint_fields[] = {
    ROW_CUSTOM("ignore", f_ignore, ROW_JSON(j_ignore)),
};

static void read_lint(schema_ctx_t *c, const yaml_node_t *v, const char *path, uint32_t *bits)
{
    schema_seen_t seen;
    *bits = 0;
    if (v && schema_want(c, v, YAML_MAPPING_NODE, path))
        schema_apply(c, v, v, path, lint_fields, ARRAY_LEN(lint_fields), bits, &seen);
}

void config_lint_f_top(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    read_lint(c, v, path, &((config_t *)obj)->lint_ignore);
}

json_t *config_lint_j_top(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    return json_pack("{s:o}", "ignore",
                     j_ignore(NULL, &((const config_t *)obj)->lint_ignore, root));
}

void config_lint_f_route(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    read_lint(c, v, path, &((config_route_t *)obj)->lint_ignore);
}

json_t *config_lint_j_route(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    return json_pack("{s:o}", "ignore",
                     j_ignore(NULL, &((const config_route_t *)obj)->lint_ignore, root));
}
