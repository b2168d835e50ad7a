/* The effective configuration as JSON, for GET /config: every value after
 * defaults were applied, under the file's key names, durations and sizes as
 * a file writes them. Secrets (none in this version's keys; API keys and
 * JWT keys later) are "<redacted>". */
#ifndef FICUS_CONFIG_CONFIG_JSON_H
#define FICUS_CONFIG_CONFIG_JSON_H

#include <jansson.h>

#include "config/config.h"

/* A new reference, or NULL when out of memory. */
json_t *config_json(const config_t *cfg);

#endif
