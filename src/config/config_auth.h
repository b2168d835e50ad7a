/* The rows of edge security: the clients, jwt_providers and
 * session_exchange sections, and a route's auth, clients and rate_limit
 * keys (config_rows.c places them in its tables). Keys from the
 * environment are read and hashed at load; /config shows key hashes as
 * "<redacted>". */
#ifndef FICUS_CONFIG_CONFIG_AUTH_H
#define FICUS_CONFIG_CONFIG_AUTH_H

#include <jansson.h>

#include "config/schema.h"

/* Sections (the config_t is obj). */
void config_auth_sec_clients(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                             const char *path, void *obj);
json_t *config_auth_j_clients(const schema_row_t *f, const void *obj, const void *root);
void config_auth_sec_jwt_providers(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                                   const char *path, void *obj);
json_t *config_auth_j_jwt_providers(const schema_row_t *f, const void *obj, const void *root);
void config_auth_sec_session_exchange(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                                      const char *path, void *obj);
json_t *config_auth_j_session_exchange(const schema_row_t *f, const void *obj, const void *root);

/* A route's keys (the config_route_t is obj); auth before the others. */
void config_auth_f_route_auth(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                              const char *path, void *obj);
json_t *config_auth_j_route_auth(const schema_row_t *f, const void *obj, const void *root);
void config_auth_f_route_clients(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                                 const char *path, void *obj);
json_t *config_auth_j_route_clients(const schema_row_t *f, const void *obj, const void *root);
void config_auth_f_route_rate_limit(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                                    const char *path, void *obj);
json_t *config_auth_j_route_rate_limit(const schema_row_t *f, const void *obj, const void *root);

#endif
