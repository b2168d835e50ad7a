/* What the workers read of one JWT provider's keys: the current key set
 * (swapped whole by whoever reads the keys; the old one is retired through
 * the workers, so a worker may use the set it loaded until its next loop
 * turn), how many reads have ended, and how to ask for a read now (a token
 * named a kid the set lacks). */
#ifndef FICUS_POLICY_JWKS_SLOT_H
#define FICUS_POLICY_JWKS_SLOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "policy/jwks.h"

typedef struct jwks_slot jwks_slot_t;

struct jwks_slot {
    _Atomic(jwks_t *) keys;       /* NULL: none yet */
    atomic_uint_fast64_t seq;     /* reads ended (whatever their outcome) */
    atomic_uint_fast64_t next_ms; /* an unknown kid may start a read from then on */
    atomic_bool wanted;           /* a read is asked for or under way */
    /* Any thread: true when a read is asked for or under way (wait for seq
     * to move), false when none will be made (a file, or too soon). */
    bool (*want)(void *ctx, jwks_slot_t *slot, uint64_t now_ms);
    void *want_ctx;
};

#endif
