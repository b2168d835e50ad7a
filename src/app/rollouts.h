/* The instance's route rollouts (contract 10.2) for one generation, on the
 * main loop: one policy/rollout per route with a `rollout` block (adopted
 * from the previous generation when the block and the backends did not
 * change), ticked once a second, and their canary percent turned into the
 * generation's run-time weights. Also what the admin API and /metrics show
 * of them. The request path records into rollouts_table()'s entries.
 *
 * Time: every now_ms here and in the request path's rollout_record_*()
 * calls is core/time's time_now_ms() (monotonic); history times are shown
 * as wall-clock times by rollouts_json(). */
#ifndef FICUS_APP_ROLLOUTS_H
#define FICUS_APP_ROLLOUTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "app/rollout_fleet.h"
#include "config/config.h"
#include "core/buf.h"
#include "policy/rollout.h"
#include "routing/weights.h"

typedef struct rollouts rollouts_t;

/* Weight given to the canary at 100 % (the other backends share the rest
 * in proportion to their configured weights). */
#define ROLLOUTS_WEIGHT_TOTAL 10000u
/* How often the current generation's rollouts are ticked (contract: a broken
 * limit acts within 2 s). */
#define ROLLOUTS_TICK_MS 1000

/* The rollouts of cfg (borrowed: it must outlive them), adopting prev's
 * (the generation being replaced, may be NULL) where the route's rollout
 * block and backends did not change, and carrying its transition counts.
 * Logs what it did per route. NULL when out of memory. */
rollouts_t *rollouts_new(const config_t *cfg, rollouts_t *prev, uint64_t now_ms);
/* Frees rs and its rollouts: only once no worker can record into them.
 * NULL is a no-op. */
void rollouts_free(rollouts_t *rs);

/* Per route index: its rollout, or NULL where none (n_routes entries). */
rollout_t *const *rollouts_table(const rollouts_t *rs);
/* Route r's rollout, or NULL. */
rollout_t *rollouts_get(const rollouts_t *rs, size_t r);

/* Routes with `state: redis` share their rollout through fleet (the
 * instance's, may be NULL: they then run on this instance alone, logged):
 * bound to the same place in the fleet as the previous generation's when the
 * block did not change (which then leaves the previous generation: call it
 * only once rs is sure to be activated). */
void rollouts_share(rollouts_t *rs, rollout_fleet_t *fleet);

/* From now on rs drives w (the generation's weights): every route with a
 * rollout gets its current canary percent at once (0 while pending). */
void rollouts_attach(rollouts_t *rs, weights_t *w);

/* Once a second: ticks every rollout (a shared one through its fleet), logs and counts its
 * transitions, and applies a changed canary percent to the attached weights. */
void rollouts_tick(rollouts_t *rs, uint64_t now_ms);

/* A manual action on route r's rollout, applied to the weights at once.
 * 0; FE_NOTFOUND when r has no rollout; FE_INVAL when the action makes no
 * sense in the rollout's state. */
int rollouts_action(rollouts_t *rs, size_t r, rollout_action_t a, uint64_t now_ms);

/* GET /routes/NAME/rollout for route r: state, step, weights now, the
 * current step's and each step's figures, history, config. NULL when r has
 * no rollout or out of memory. now_realtime_ms turns history times into
 * wall-clock times. */
json_t *rollouts_json(rollouts_t *rs, size_t r, uint64_t now_ms, uint64_t now_realtime_ms);

/* Appends ficus_rollout_step, ficus_rollout_state and
 * ficus_rollout_transitions_total (HELP/TYPE once each, nothing without a
 * rollout). */
void rollouts_metrics(const rollouts_t *rs, buf_t *out);

/* The weights of route rt with its backend `canary` at percent (0..100):
 * canary = percent * ROLLOUTS_WEIGHT_TOTAL / 100, the others share the rest
 * in proportion to their configured weights (evenly when those are all 0);
 * out has rt->n_backends entries. */
void rollouts_weights(const config_route_t *rt, size_t canary, uint32_t percent, uint32_t *out);

/* The action named name ("pause", ...) in *a: 0, or FE_NOTFOUND. */
int rollouts_action_parse(const char *name, size_t len, rollout_action_t *a);

#endif
