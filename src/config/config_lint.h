/* The `lint` keys (contract 10.4): `lint: {ignore: [rule, ...]}` at the top
 * level silences rules for the whole file, on a route for that route. The
 * rule names are config/lint's; an unknown one is an error at the name. */
#ifndef FICUS_CONFIG_CONFIG_LINT_H
#define FICUS_CONFIG_CONFIG_LINT_H

#include <jansson.h>

#include "config/schema.h"

/* Top-level lint (obj is the config_t): config_t.lint_ignore. */
void config_lint_f_top(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                       const char *path, void *obj);
json_t *config_lint_j_top(const schema_row_t *f, const void *obj, const void *root);

/* route.lint (obj is the config_route_t): config_route_t.lint_ignore. */
void config_lint_f_route(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                         const char *path, void *obj);
json_t *config_lint_j_route(const schema_row_t *f, const void *obj, const void *root);

#endif
