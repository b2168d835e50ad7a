/* Fast non-cryptographic randomness for load balancing, jitter, sampling and
 * ids: xorshift64* on a state each thread owns (never shared, no locks),
 * seeded from the kernel's random source. */
#ifndef FICUS_CORE_RAND_H
#define FICUS_CORE_RAND_H

#include <stdint.h>

/* The next value of the generator at *state (any state, zero included). */
static inline uint64_t rand_next(uint64_t *state)
{
    uint64_t x = *state;
    if (x == 0) /* xorshift's one fixed point: never stay there */
        x = UINT64_C(0x9e3779b97f4a7c15);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(0x2545f4914f6cdd1d);
}

/* A uniform double in [0, 1). */
static inline double rand_unit(uint64_t *state)
{
    return (double)(rand_next(state) >> 11) * 0x1p-53;
}

/* A fresh non-zero seed from getrandom (the pid and clock if it fails),
 * mixed with salt so that seeds taken together differ. */
uint64_t rand_seed(uint64_t salt);

#endif
