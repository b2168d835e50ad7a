/* The rows of migration safety (spec 10.1-10.3, 10.5): a route's shadow,
 * rollout, deadline and retries.hedge keys, and the top-level reload block (config_rows.c places
 * them in the route table, after rate_limit, so the route's match and backends are read first;
 * rollout after shadow, so max_mismatch_rate can see shadow.compare). They run on the thread that
 * loads the configuration; what they produce is config_route_t.shadow / .rollout, read-only
 * afterwards, which the request path reads from any worker through its config_t reference. /config
 * shows both blocks with their defaults. */
#ifndef FICUS_CONFIG_CONFIG_MIGRATION_H
#define FICUS_CONFIG_CONFIG_MIGRATION_H

#include <jansson.h>

#include "config/schema.h"

/* route.shadow (obj is the config_route_t): has_shadow and shadow. */
void config_migration_f_route_shadow(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                                     const char *path, void *obj);
json_t *config_migration_j_route_shadow(const schema_row_t *f, const void *obj, const void *root);

/* route.rollout (obj is the config_route_t): has_rollout and rollout. */
void config_migration_f_route_rollout(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                                      const char *path, void *obj);
json_t *config_migration_j_route_rollout(const schema_row_t *f, const void *obj, const void *root);

/* route.retries.hedge (obj is the config_retries_t): has_hedge and hedge. */
void config_migration_f_hedge(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                              const char *path, void *obj);
json_t *config_migration_j_hedge(const schema_row_t *f, const void *obj, const void *root);

/* route.deadline (obj is the config_route_t), its defaults when absent. */
void config_migration_f_route_deadline(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                                       const char *path, void *obj);
json_t *config_migration_j_route_deadline(const schema_row_t *f, const void *obj, const void *root);

/* reload (obj is the config_t): has_reload and reload. */
void config_migration_f_reload(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                               const char *path, void *obj);
json_t *config_migration_j_reload(const schema_row_t *f, const void *obj, const void *root);

#endif
