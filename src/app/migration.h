/* The migration board's wiring (contract 10.6): which of a route's target
 * groups is the old system and which the new service, the per-generation
 * map the workers record through (route -> board figures, target group ->
 * the route's board group), and GET /migration's document, which puts the
 * board's window beside the route's shadow summary and rollout state.
 *
 * Roles: a group is the new service when it is the route's rollout canary,
 * a backend that names a `fallback` (a canary the old system backs), or the
 * shadow target; every other group of the route is the old system. */
#ifndef FICUS_APP_MIGRATION_H
#define FICUS_APP_MIGRATION_H

#include <stdint.h>

#include <jansson.h>

#include "app/rollouts.h"
#include "config/config.h"
#include "observe/board.h"
#include "policy/shadow_stats.h"

typedef struct migration_map {
    board_route_t **routes; /* per route; NULL when the board is full */
    uint32_t **groups;      /* per route, per target group: board group, UINT32_MAX: unused */
    uint32_t *store;
} migration_map_t;

/* Main thread: the map of cfg's routes onto b (0, or FE_NOMEM with nothing
 * to free). */
int migration_map_make(board_t *b, const config_t *cfg, uint64_t now_ms, migration_map_t *out);
void migration_map_free(migration_map_t *m);

/* Main thread: GET /migration (a new reference; NULL on no memory).
 * shadow_routes: per route its shadow figures or NULL; rs may be NULL. */
json_t *migration_json(const config_t *cfg, const migration_map_t *m,
                       shadow_route_t *const *shadow_routes, rollouts_t *rs, uint64_t now_ms,
                       uint64_t realtime_ms);

#endif
