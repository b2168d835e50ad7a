/* The rows of aggregation (contract 8): a route's `aggregate` block (its
 * calls instead of backends) and the top-level `aggregate_cache`. They run
 * on the thread that loads the configuration; what they produce is
 * config_route_t.aggregate and config_t.aggregate_cache_*, read-only
 * afterwards. */
#ifndef FICUS_CONFIG_CONFIG_AGGREGATE_H
#define FICUS_CONFIG_CONFIG_AGGREGATE_H

#include <jansson.h>

#include "config/schema.h"

/* route.aggregate (obj is the config_route_t): has_aggregate and aggregate. */
void config_aggregate_f_route(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                              const char *path, void *obj);
json_t *config_aggregate_j_route(const schema_row_t *f, const void *obj, const void *root);

/* aggregate_cache (obj is the config_t), its defaults when absent. */
void config_aggregate_f_cache(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                              const char *path, void *obj);
json_t *config_aggregate_j_cache(const schema_row_t *f, const void *obj, const void *root);

#endif
