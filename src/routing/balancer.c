/* Backend choice for a route (smooth weighted round robin, sticky hashing)
 * and target choice in a group (round robin, least request, random).
 * Pure functions over the caller's per-worker state: no locks, no clocks. */
#include "routing/balancer.h"

#include <stdbool.h>

#include "core/rand.h"

size_t balancer_swrr_pick(int64_t *current, const uint32_t *weights, size_t n)
{
    int64_t total = 0;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (weights[i] == 0)
            continue; /* never a candidate, even when the others are negative */
        current[i] += weights[i];
        total += weights[i];
        /* Strictly greater: ties go to the lowest index. */
        if (best == SIZE_MAX || current[i] > current[best])
            best = i;
    }
    if (best != SIZE_MAX)
        current[best] -= total;
    return best;
}

size_t balancer_hash_pick(const uint32_t *weights, size_t n, uint64_t hash)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += weights[i];
    if (total == 0)
        return SIZE_MAX;
    uint64_t point = hash % total;
    for (size_t i = 0; i < n; i++) {
        if (point < weights[i])
            return i;
        point -= weights[i];
    }
    return SIZE_MAX; /* not reached: point < total */
}

/* Uniform in [0, k) for 0 < k <= 2^32, without the bias of a modulo. */
static uint32_t random_below(uint64_t *rng, size_t k)
{
    return (uint32_t)(((rand_next(rng) >> 32) * (uint64_t)k) >> 32);
}

/* Index of the k-th (from 0) eligible target. */
static size_t nth_eligible(const uint8_t *eligible, size_t n, size_t k)
{
    for (size_t i = 0; i < n; i++) {
        if (eligible[i] && k-- == 0)
            return i;
    }
    return SIZE_MAX;
}

/* First eligible target at or after the cursor (cyclically); moves the
 * cursor past it. */
static size_t next_after_cursor(balancer_targets_t *st, const uint8_t *eligible, size_t n)
{
    size_t start = st->rr_cursor % n;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (eligible[i]) {
            st->rr_cursor = (uint32_t)((i + 1) % n);
            return i;
        }
    }
    return SIZE_MAX;
}

/* Two distinct random eligible candidates, the one with fewer requests in
 * flight (Envoy's P2C). A tie goes to the one the round-robin cursor reaches
 * first, so an idle group is still spread evenly. */
static size_t pick_least_request(balancer_targets_t *st, const uint8_t *eligible,
                                 const uint32_t *inflight, size_t n, size_t n_eligible)
{
    size_t ka = random_below(&st->rng, n_eligible);
    size_t kb = random_below(&st->rng, n_eligible - 1);
    if (kb >= ka)
        kb++;
    size_t a = nth_eligible(eligible, n, ka);
    size_t b = nth_eligible(eligible, n, kb);
    uint32_t ia = inflight ? inflight[a] : 0;
    uint32_t ib = inflight ? inflight[b] : 0;
    size_t pick;
    if (ia != ib) {
        pick = ia < ib ? a : b;
    } else {
        size_t start = st->rr_cursor % n;
        size_t da = (a + n - start) % n, db = (b + n - start) % n;
        pick = da < db ? a : b;
    }
    st->rr_cursor = (uint32_t)((pick + 1) % n);
    return pick;
}

size_t balancer_pick_target(config_balance_t kind, balancer_targets_t *st, const uint8_t *eligible,
                            const uint32_t *inflight, size_t n)
{
    size_t n_eligible = 0, only = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (eligible[i]) {
            n_eligible++;
            only = i;
        }
    }
    if (n_eligible == 0)
        return SIZE_MAX;
    if (n_eligible == 1) {
        st->rr_cursor = (uint32_t)((only + 1) % n);
        return only;
    }
    switch (kind) {
    case BALANCE_LEAST_REQUEST:
        return pick_least_request(st, eligible, inflight, n, n_eligible);
    case BALANCE_RANDOM:
        return nth_eligible(eligible, n, random_below(&st->rng, n_eligible));
    case BALANCE_ROUND_ROBIN:
    default:
        return next_after_cursor(st, eligible, n);
    }
}
