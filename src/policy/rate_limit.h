/* This instance's rate-limit token buckets, shared by all its workers without
 * locks: a fixed table of per-key buckets (key = the caller's hash of route,
 * `by` and its value) in groups of RATE_LIMIT_GROUP slots, each bucket one
 * 64-bit word updated by compare-and-swap. Memory is fixed at creation. */
#ifndef FICUS_POLICY_RATE_LIMIT_H
#define FICUS_POLICY_RATE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A key may live in one group of this many slots (its probe window). */
#define RATE_LIMIT_GROUP 8

/* Above this many buckets rate_limit_new refuses (2^28: 4 GiB). */
#define RATE_LIMIT_MAX_BUCKETS ((size_t)1 << 28)

/* A bucket is the GCRA form of a token bucket: one word holding the time (in
 * 1/16 us of the caller's clock) at which it will be full again, 0 or a time
 * past being a full bucket, and the slot's 8-bit generation. Taking a token
 * moves that time 1/rate later, allowed while it stays within burst/rate of
 * now. Exactly the token bucket of the contract: burst = bucket size,
 * refilled at rate per second, fractions of tokens included.
 *
 * Bounded table. A key hashes (with a per-table random seed, so that an
 * attacker who cannot see the table cannot aim at one group; not a
 * cryptographic guarantee) to one group. A new key that finds its group full
 * evicts the bucket that will be full soonest: a full bucket first (it carries
 * no information), else the one with the least debt left in time, which is
 * usually but not always the least recently used. An evicted key that comes
 * back starts again with a full bucket: the worst an attacker can cause by
 * flooding with new keys is one extra burst for a key whose bucket was the
 * nearest to full in its group; to have a drained bucket evicted, the seven
 * others of its group must all be further from full than it. A group can fill
 * while the table is far from full: sized at twice the keys active at once,
 * under 1% of new keys evict (5% at three quarters, 14% when as many).
 *
 * Races. A worker that gives a slot to a new key first resets its bucket
 * under the next generation, then writes the key; a compare-and-swap on the
 * bucket word read before the key means it can never reset a bucket that
 * someone else has claimed and charged since it looked, even one whose time
 * reads the same. Two workers inserting the same key choose the same slot
 * unless the group changed between their two scans; then the one that sees
 * the other removes the duplicate at the later slot (one of them always
 * sees it), so two buckets for a key live only for that moment and can hand
 * out at most one token more each. A worker charging a key at the moment that
 * key is evicted may charge its token to the new key's fresh bucket
 * (conservative: never lets more through), then charges its own key again. */
typedef struct rate_limit rate_limit_t;

/* Room for max_buckets (rounded up to a power of two, at least
 * RATE_LIMIT_GROUP) buckets of 16 bytes each, plus 1 KiB of eviction
 * counters. NULL when max_buckets is 0 or above RATE_LIMIT_MAX_BUCKETS, or
 * out of memory. */
rate_limit_t *rate_limit_new(size_t max_buckets);
void rate_limit_free(rate_limit_t *rl);

/* Takes a token from key's bucket (burst tokens, refilled at rate_per_s) at
 * now_ms (a monotonic clock; workers may lag each other a little). true:
 * taken. false: empty, and *retry_after_ms (when not NULL) is the wait in
 * whole milliseconds, >= 1, until a token is there. A burst below 1 counts
 * as 1; rates above 16 million/s count as that; a rate that is not > 0, or so
 * low that burst/rate passes 35 years, refills the bucket once in 35 years.
 * Any thread; no lock, no allocation. */
bool rate_limit_take(rate_limit_t *rl, uint64_t key, double rate_per_s, double burst,
                     uint64_t now_ms, uint64_t *retry_after_ms);

/* Buckets evicted so far to make room for new keys (full ones included). */
uint64_t rate_limit_evictions(const rate_limit_t *rl);
/* Slots holding a key now (approximate while workers insert). */
size_t rate_limit_buckets(const rate_limit_t *rl);
/* Slots in the table: max_buckets as rounded up at creation. */
size_t rate_limit_capacity(const rate_limit_t *rl);

#endif
