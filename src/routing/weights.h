/* Route weights that the admin API can change at run time: one atomic weight
 * per backend plus a version per route. Workers copy a route's weights when
 * its version moves (and restart their smooth round robin from zero), so the
 * hot path reads one relaxed counter. Lasts until the next reload. */
#ifndef FICUS_ROUTING_WEIGHTS_H
#define FICUS_ROUTING_WEIGHTS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct weights weights_t;

weights_t *weights_new(const config_t *cfg); /* the config's weights */
void weights_free(weights_t *w);
uint32_t weights_version(const weights_t *w, size_t route);
/* Copies route's current weights into out (n_backends of them). */
void weights_load(const weights_t *w, size_t route, uint32_t *out);
uint32_t weights_get(const weights_t *w, size_t route, size_t backend);
/* Main thread: replaces the route's weights (validated by the caller). */
void weights_set(weights_t *w, size_t route, const uint32_t *v);

#endif
