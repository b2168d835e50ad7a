/* Non-cryptographic hashing, one of each: FNV-1a (stable across runs and
 * machines: set members, file contents, metric names) and the murmur3
 * finaliser that spreads its last bytes over every bit (for `% n` and
 * power-of-two tables). Not for anything an attacker must not predict. */
#ifndef FICUS_CORE_HASH_H
#define FICUS_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV1A_INIT UINT64_C(0xcbf29ce484222325)

/* FNV-1a of p[0..n) continuing from h (HASH_FNV1A_INIT to start). */
static inline uint64_t hash_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

/* murmur3's fmix64: every input bit moves every output bit. */
static inline uint64_t hash_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* FNV-1a, then mixed: the hash of a key for tables and `% n`. */
static inline uint64_t hash_bytes(const void *p, size_t n)
{
    return hash_mix(hash_fnv1a(HASH_FNV1A_INIT, p, n));
}

#endif
