/* Run-time weights; see weights.h. */
#include "routing/weights.h"

#include <stdlib.h>

typedef struct route_weights {
    atomic_uint version;
    size_t n;
    atomic_uint *w;
} route_weights_t;

struct weights {
    route_weights_t *routes;
    size_t n;
};

weights_t *weights_new(const config_t *cfg)
{
    weights_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->n = cfg->n_routes;
    w->routes = calloc(w->n ? w->n : 1, sizeof *w->routes);
    if (!w->routes) {
        free(w);
        return NULL;
    }
    for (size_t r = 0; r < w->n; r++) {
        route_weights_t *rw = &w->routes[r];
        rw->n = cfg->routes[r].n_backends;
        rw->w = calloc(rw->n ? rw->n : 1, sizeof *rw->w);
        if (!rw->w) {
            weights_free(w);
            return NULL;
        }
        for (size_t b = 0; b < rw->n; b++)
            atomic_init(&rw->w[b], cfg->routes[r].backends[b].weight);
        atomic_init(&rw->version, 0);
    }
    return w;
}

void weights_free(weights_t *w)
{
    if (!w)
        return;
    for (size_t r = 0; r < w->n; r++)
        free(w->routes[r].w);
    free(w->routes);
    free(w);
}

uint32_t weights_version(const weights_t *w, size_t route)
{
    return atomic_load_explicit(&w->routes[route].version, memory_order_acquire);
}

void weights_load(const weights_t *w, size_t route, uint32_t *out)
{
    const route_weights_t *rw = &w->routes[route];
    for (size_t b = 0; b < rw->n; b++)
        out[b] = atomic_load_explicit(&rw->w[b], memory_order_relaxed);
}

uint32_t weights_get(const weights_t *w, size_t route, size_t backend)
{
    return atomic_load_explicit(&w->routes[route].w[backend], memory_order_relaxed);
}

void weights_set(weights_t *w, size_t route, const uint32_t *v)
{
    route_weights_t *rw = &w->routes[route];
    for (size_t b = 0; b < rw->n; b++)
        atomic_store_explicit(&rw->w[b], v[b], memory_order_relaxed);
    atomic_fetch_add_explicit(&rw->version, 1, memory_order_release);
}
