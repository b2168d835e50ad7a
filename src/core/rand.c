/* Seeds; see rand.h. */
#include "core/rand.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/hash.h"

uint64_t rand_seed(uint64_t salt)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 20;
    }
    s = hash_mix(s ^ (salt + 1) * UINT64_C(0xbf58476d1ce4e5b9));
    return s ? s : 1;
}
