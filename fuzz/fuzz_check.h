/* What every libFuzzer target here shares: CHECK aborts (a finding) when a
 * property of the code under test does not hold. */
#ifndef FICUS_FUZZ_CHECK_H
#define FICUS_FUZZ_CHECK_H

#include <stdlib.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

#endif
