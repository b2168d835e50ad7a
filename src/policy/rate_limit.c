/* Token buckets shared by the workers (policy/rate_limit.h): a power-of-two
 * table of groups, each RATE_LIMIT_GROUP keys then their buckets (two cache
 * lines), every word atomic. Sequentially consistent atomics throughout: on
 * x86 loads cost nothing more, and the duplicate check relies on them. */
#include "policy/rate_limit.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/rand.h"

/* Key 0 marks an empty slot; a caller's key 0 is stored as this one. */
#define KEY_ZERO UINT64_C(0x9e3779b97f4a7c15)

/* A bucket word: the slot's generation (8 bits, +1 each time the slot is
 * given to a key, so that a claim can never reset a bucket that someone else
 * claimed since it looked, whatever its time) and the time it is full again,
 * in ticks of 1/16 us since the caller's clock began. */
#define GEN_SHIFT 56
#define TAT_MASK ((UINT64_C(1) << GEN_SHIFT) - 1)
#define TICKS_PER_MS UINT64_C(16000)
#define TICKS_PER_S 16e6
/* Bounds of the arithmetic so that now + span + interval stays below 2^56: a
 * bucket's span (burst/rate) at most 2^54 ticks (35 years), now at most 2^55
 * (71 years of the caller's clock; it stands still after). */
#define SPAN_MAX_TICKS (UINT64_C(1) << 54)
#define NOW_MAX_TICKS (UINT64_C(1) << 55)

/* Eviction counters, striped by group so that a flood of new keys on many
 * workers does not make them all write one cache line. */
#define STRIPES 16

typedef struct group {
    alignas(64) _Atomic uint64_t key[RATE_LIMIT_GROUP]; /* 0 = empty */
    _Atomic uint64_t bucket[RATE_LIMIT_GROUP];          /* generation | tat */
} group_t;

typedef struct stripe {
    alignas(64) _Atomic uint64_t n;
} stripe_t;

struct rate_limit {
    group_t *groups;
    size_t group_mask;
    uint64_t seed; /* hides which keys share a group */
    atomic_size_t used;
    stripe_t evictions[STRIPES];
};

/* One take's numbers in ticks: the refill interval (1/rate), the span of a
 * full bucket (burst/rate), now. */
typedef struct bucket_params {
    uint64_t interval;
    uint64_t span;
    uint64_t now;
} bucket_params_t;

typedef enum { TAKE_OK, TAKE_EMPTY, TAKE_MOVED } take_result_t;

rate_limit_t *rate_limit_new(size_t max_buckets)
{
    if (max_buckets == 0 || max_buckets > RATE_LIMIT_MAX_BUCKETS)
        return NULL;
    size_t slots = RATE_LIMIT_GROUP;
    while (slots < max_buckets)
        slots <<= 1;
    size_t n_groups = slots / RATE_LIMIT_GROUP;
    rate_limit_t *rl = aligned_alloc(alignof(rate_limit_t), sizeof *rl);
    if (!rl)
        return NULL;
    memset(rl, 0, sizeof *rl);
    rl->groups = aligned_alloc(alignof(group_t), n_groups * sizeof *rl->groups);
    if (!rl->groups)
        goto fail_free;
    memset(rl->groups, 0, n_groups * sizeof *rl->groups);
    rl->group_mask = n_groups - 1;
    rl->seed = rand_seed((uintptr_t)rl);
    return rl;

fail_free:
    free(rl);
    return NULL;
}

void rate_limit_free(rate_limit_t *rl)
{
    if (!rl)
        return;
    free(rl->groups);
    free(rl);
}

static bucket_params_t params_of(double rate_per_s, double burst, uint64_t now_ms)
{
    /* Written so that NaN falls to the safe side of every test. The span is
     * capped, and the interval with it, so that the burst stays whole. */
    double tokens = burst >= 1 ? burst : 1;
    if (tokens > (double)SPAN_MAX_TICKS)
        tokens = (double)SPAN_MAX_TICKS;
    double interval_max = (double)SPAN_MAX_TICKS / tokens;
    double interval = rate_per_s > 0 ? TICKS_PER_S / rate_per_s : interval_max;
    if (interval > interval_max)
        interval = interval_max;
    if (!(interval >= 1))
        interval = 1;
    bucket_params_t p = {.interval = (uint64_t)(interval + 0.5)};
    if ((double)p.interval > interval_max) /* rounded up past the cap */
        p.interval = interval_max >= 1 ? (uint64_t)interval_max : 1;
    double span = tokens * (double)p.interval;
    p.span = span < (double)SPAN_MAX_TICKS ? (uint64_t)(span + 0.5) : SPAN_MAX_TICKS;
    if (p.span < p.interval)
        p.span = p.interval;
    p.now = now_ms < NOW_MAX_TICKS / TICKS_PER_MS ? now_ms * TICKS_PER_MS : NOW_MAX_TICKS;
    return p;
}

static int group_find(group_t *g, uint64_t key)
{
    for (int i = 0; i < RATE_LIMIT_GROUP; i++)
        if (atomic_load(&g->key[i]) == key)
            return i;
    return -1;
}

/* After claiming slot mine for key: when a racing insert put key in another
 * slot too, the later of the two is emptied (by whichever of the two racers
 * sees it; one always does). Returns the slot that stays. */
static int group_dedupe(rate_limit_t *rl, group_t *g, uint64_t key, int mine)
{
    for (int i = 0; i < RATE_LIMIT_GROUP; i++) {
        if (i == mine || atomic_load(&g->key[i]) != key)
            continue;
        int later = i > mine ? i : mine;
        uint64_t expect = key;
        if (atomic_compare_exchange_strong(&g->key[later], &expect, 0))
            atomic_fetch_sub(&rl->used, 1);
        if (later == mine)
            return i;
    }
    return mine;
}

/* Gives key a slot in g: the first empty one, else the bucket that will be
 * full soonest. The bucket is reset to full under a new generation first,
 * then the key changes: a bucket word read before the key that showed its
 * owner is still that owner's when the reset's compare-and-swap succeeds.
 * Returns the slot holding key (this call's, or a racing insert's). */
static int group_claim(rate_limit_t *rl, group_t *g, uint64_t key, stripe_t *evictions)
{
    for (;;) {
        int victim = -1, empty = -1;
        uint64_t victim_key = 0, victim_bucket = 0, empty_bucket = 0;
        for (int i = 0; i < RATE_LIMIT_GROUP; i++) {
            uint64_t b = atomic_load(&g->bucket[i]);
            uint64_t k = atomic_load(&g->key[i]);
            if (k == key)
                return i;
            if (k == 0) {
                if (empty < 0) {
                    empty = i;
                    empty_bucket = b;
                }
            } else if (victim < 0 || (b & TAT_MASK) < (victim_bucket & TAT_MASK)) {
                victim = i;
                victim_key = k;
                victim_bucket = b;
            }
        }
        if (empty >= 0) {
            victim = empty;
            victim_key = 0;
            victim_bucket = empty_bucket;
        }
        uint64_t fresh = ((victim_bucket >> GEN_SHIFT) + 1) << GEN_SHIFT;
        /* Each fails only when another worker changed the slot since the scan:
         * scan again. */
        if (!atomic_compare_exchange_strong(&g->bucket[victim], &victim_bucket, fresh))
            continue;
        if (!atomic_compare_exchange_strong(&g->key[victim], &victim_key, key))
            continue;
        if (victim_key == 0)
            atomic_fetch_add(&rl->used, 1);
        else
            atomic_fetch_add_explicit(&evictions->n, 1, memory_order_relaxed);
        return group_dedupe(rl, g, key, victim);
    }
}

/* Takes a token from slot i of g, which held key when found. TAKE_MOVED: the
 * slot changed hands meanwhile (whatever was charged is the new key's). */
static take_result_t slot_take(group_t *g, int i, uint64_t key, const bucket_params_t *p,
                               uint64_t *wait)
{
    uint64_t b = atomic_load(&g->bucket[i]);
    for (;;) {
        uint64_t tat = b & TAT_MASK;
        uint64_t next = (tat > p->now ? tat : p->now) + p->interval;
        if (next - p->now > p->span) {
            *wait = next - p->now - p->span;
            return atomic_load(&g->key[i]) == key ? TAKE_EMPTY : TAKE_MOVED;
        }
        if (atomic_compare_exchange_weak(&g->bucket[i], &b, (b & ~TAT_MASK) | next))
            return atomic_load(&g->key[i]) == key ? TAKE_OK : TAKE_MOVED;
    }
}

bool rate_limit_take(rate_limit_t *rl, uint64_t key, double rate_per_s, double burst,
                     uint64_t now_ms, uint64_t *retry_after_ms)
{
    bucket_params_t p = params_of(rate_per_s, burst, now_ms);
    if (key == 0)
        key = KEY_ZERO;
    size_t gi = (size_t)hash_mix(key ^ rl->seed) & rl->group_mask;
    group_t *g = &rl->groups[gi];
    for (;;) {
        int i = group_find(g, key);
        if (i < 0)
            i = group_claim(rl, g, key, &rl->evictions[gi % STRIPES]);
        uint64_t wait = 0;
        switch (slot_take(g, i, key, &p, &wait)) {
        case TAKE_OK:
            return true;
        case TAKE_EMPTY:
            if (retry_after_ms) {
                uint64_t ms = (wait + TICKS_PER_MS - 1) / TICKS_PER_MS;
                *retry_after_ms = ms ? ms : 1;
            }
            return false;
        case TAKE_MOVED:
            break;
        }
    }
}

uint64_t rate_limit_evictions(const rate_limit_t *rl)
{
    uint64_t n = 0;
    for (int i = 0; i < STRIPES; i++)
        n += atomic_load_explicit(&rl->evictions[i].n, memory_order_relaxed);
    return n;
}

size_t rate_limit_buckets(const rate_limit_t *rl) { return atomic_load(&rl->used); }

size_t rate_limit_capacity(const rate_limit_t *rl)
{
    return (rl->group_mask + 1) * RATE_LIMIT_GROUP;
}
