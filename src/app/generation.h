/* Generations: what the gateway builds from one config snapshot and shares
 * with the workers (sets, target health, weights, health checks, DNS
 * refresh). A reload makes a new one; the old one stops its timers at once
 * and is freed once every worker let go of it (its last request on the old
 * snapshot finished) and its callbacks have run. */
#ifndef FICUS_APP_GENERATION_H
#define FICUS_APP_GENERATION_H

#include <stdint.h>
#include <uv.h>

#include "app/rollouts.h"
#include "config/config.h"
#include "net/worker.h"
#include "observe/metrics.h"
#include "policy/health.h"
#include "policy/shadow_stats.h"
#include "proxy/proxy.h"
#include "routing/weights.h"

typedef struct generation generation_t;
typedef struct generations generations_t;

/* Main thread: the current generation (none yet) and the retired ones, for
 * workers that run on loop. NULL when out of memory. */
generations_t *generations_new(uv_loop_t *loop, worker_group_t *workers,
                               metrics_registry_t *metrics);
/* Any thread, blocking: resolves cfg's named targets and reads its sets.
 * Takes a reference to cfg. NULL when out of memory. */
generation_t *generation_prepare(generations_t *gs, config_t *cfg);
/* Main thread: gen (prepared) gets its worker state (one proxy generation
 * per worker in pgens) and its timers, and becomes the current one; the
 * previous one lends its target verdicts, then retires. -1 when out of
 * memory: gen is not current (discard it) and pgens may hold some. */
int generations_activate(generations_t *gs, generation_t *gen, proxy_gen_t **pgens);
/* The same for running workers: each is sent its part of gen. */
int generations_install(generations_t *gs, generation_t *gen);
/* Main thread: gen (prepared) goes on trial beside the current one
 * (contract 10.5): the workers serve `percent` of new requests with it, by a
 * hash of the request id, and both count their requests (figures). The
 * current one keeps driving everything shared (its rollouts in the fleet,
 * the shadow figures shown); gen's own timers run too. A previous trial is
 * dropped first. -1 when out of memory: gen is not on trial (discard it). */
int generations_start_trial(generations_t *gs, generation_t *gen, uint32_t percent);
/* Main thread: the trial generation becomes the current one (for the
 * workers too); the previous one retires. No-op without a trial. */
void generations_promote(generations_t *gs);
/* Main thread: the trial generation is dropped: the workers let it go, its
 * requests in flight finish on it, then it is freed. */
void generations_drop_trial(generations_t *gs);
/* The generation on trial, or NULL. */
generation_t *generations_trial(const generations_t *gs);
/* Its request counts for a reversible reload (NULL: not counted). */
struct reload_figures *generation_figures(const generation_t *gen);
/* Main thread: a prepared gen that will not serve: stopped, freed once its
 * callbacks have run. */
void generations_discard(generations_t *gs, generation_t *gen);
/* The generation new requests get (NULL before the first activation). */
generation_t *generations_current(const generations_t *gs);
/* Stops the current generation and closes the reclaim timer. */
void generations_close(generations_t *gs);
/* Once the loop has ended: frees every generation. NULL is a no-op. */
void generations_free(generations_t *gs);

/* Rate-limit buckets evicted so far (the instance's table). */
uint64_t generations_rate_limit_evictions(const generations_t *gs);
/* The instance's shadow figures (they outlive generations). */
shadow_stats_t *generations_shadow(const generations_t *gs);

config_t *generation_config(const generation_t *gen);
health_t *generation_health(const generation_t *gen);
weights_t *generation_weights(const generation_t *gen);
/* Route r's shadow figures, NULL when it has no shadow (or the registry is
 * full). */
shadow_route_t *generation_shadow_route(const generation_t *gen, size_t r);
/* 1 for the config at start, then one more per reload (0: never active). */
uint64_t generation_id(const generation_t *gen);
/* The generation's route rollouts (main thread; NULL before activation). */
rollouts_t *generation_rollouts(const generation_t *gen);
/* Main thread: GET /migration's document (app/migration.h); NULL on no memory. */
json_t *generation_migration(const generation_t *gen, uint64_t now_ms, uint64_t realtime_ms);

#endif
