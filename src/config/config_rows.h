/* The rows of every section of the configuration file (config/schema.h
 * reads them): one place says, for each key, how it is read, its default
 * and bounds, where it goes, whether a reload may change it and how
 * /config shows it. */
#ifndef FICUS_CONFIG_CONFIG_ROWS_H
#define FICUS_CONFIG_CONFIG_ROWS_H

#include "config/config.h"
#include "config/schema.h"

/* The top-level table: a config_t is its object. */
extern const schema_row_t config_rows[];
extern const size_t config_rows_n;

/* Applies the top-level table to the document's root into cfg, with the
 * checks across sections (references to target groups and sets, names). */
void config_rows_load(schema_ctx_t *c, const yaml_node_t *root, config_t *cfg);

#endif
