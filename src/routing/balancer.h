/* Choosing a backend of a route and a target of a group. Sans-I/O; the state
 * (current weights, cursors) is the caller's (one per worker). */
#ifndef FICUS_ROUTING_BALANCER_H
#define FICUS_ROUTING_BALANCER_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/* Smooth weighted round robin (as nginx): every window of sum/gcd picks gives
 * each index exactly its share, interleaved. current[] starts zeroed, one per
 * weight. Returns the index, or SIZE_MAX when every weight is 0. */
size_t balancer_swrr_pick(int64_t *current, const uint32_t *weights, size_t n);

/* Consistent weighted choice for sticky sessions: the same hash always gives
 * the same index for a given weight table. SIZE_MAX when every weight is 0. */
size_t balancer_hash_pick(const uint32_t *weights, size_t n, uint64_t hash);

/* Per-worker state for choosing among a group's targets. */
typedef struct balancer_targets {
    uint32_t rr_cursor;
    uint64_t rng; /* xorshift state, seeded non-zero */
} balancer_targets_t;

/* Picks among targets whose eligible[i] != 0 using the group's policy:
 * round_robin (cursor), least_request (power of two choices on inflight[],
 * ties to the cursor), random. SIZE_MAX when none is eligible. */
size_t balancer_pick_target(config_balance_t kind, balancer_targets_t *st, const uint8_t *eligible,
                            const uint32_t *inflight, size_t n);

#endif
