/* Log-linear histogram slots, as HdrHistogram lays them out: values below
 * 2^bits have a slot each, and every doubling above is split into 2^bits
 * slots, so a value's slot is at most 1/2^bits above it. The slot of a value
 * and a slot's (exclusive) upper bound; the last of n slots takes the rest.
 * Used by the hedging delay (policy/hedge), the reversible reload's judge
 * (policy/reload_judge) and `ficus load` (tools/load_report). */
#ifndef FICUS_CORE_LOGHIST_H
#define FICUS_CORE_LOGHIST_H

#include <stddef.h>
#include <stdint.h>

static inline size_t loghist_slot(uint64_t v, unsigned bits, size_t n)
{
    if (v < (1ull << bits))
        return (size_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    size_t s = ((size_t)(msb - bits + 1) << bits) + ((v >> (msb - bits)) & ((1ull << bits) - 1));
    return s < n ? s : n - 1;
}

static inline uint64_t loghist_upper(size_t s, unsigned bits)
{
    if (s < (1ull << bits))
        return s + 1;
    unsigned msb = (unsigned)(s >> bits) + bits - 1;
    return ((1ull << bits) + 1 + (s & ((1ull << bits) - 1))) << (msb - bits);
}

#endif
