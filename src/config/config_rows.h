/* The rows of every section of the configuration file (config/schema.h
 * reads them): one place says, for each key, how it is read, its default
 * and bounds, where it goes, whether a reload may change it and how
 * /config shows it. */
#ifndef FICUS_CONFIG_CONFIG_ROWS_H
#define FICUS_CONFIG_CONFIG_ROWS_H

#include "config/config.h"
#include "config/names.h"
#include "config/schema.h"

/* What the rows remember while a file is read (schema_ctx_t.user). */
typedef struct config_rows_state {
    const config_t *cfg; /* the sections read so far */
    name_set_t groups, sets, route_names, clients, providers;
    /* The route being read: some of its keys depend on its match. */
    config_route_t *route;
    bool match_known;    /* route->match.kind is final */
    bool captures_known; /* route->match.n_captures is final */
} config_rows_state_t;

/* An http:// URL (what the runtime can fetch); NULL with an error else. */
const char *config_rows_http_url(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                                 const char *s);

/* name (a file as written at node at), relative to the configuration
 * file's directory when it is relative. */
char *config_rows_relative_path(schema_ctx_t *c, const yaml_node_t *at, char *name);
/* A path template (backends[].path, shadow.path): '/' first, no space or
 * control byte, $0..$9 captures the route's match can produce ("$$" a '$').
 * A copy, or NULL after an error. */
char *config_rows_path_template(schema_ctx_t *c, const yaml_node_t *v, const char *path);

/* The top-level table: a config_t is its object. */
extern const schema_row_t config_rows[];
extern const size_t config_rows_n;

/* Applies the top-level table to the document's root into cfg, with the
 * checks across sections (references to target groups and sets, names). */
void config_rows_load(schema_ctx_t *c, const yaml_node_t *root, config_t *cfg);

#endif
