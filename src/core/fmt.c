/* Number formatting; see fmt.h. */
#include "core/fmt.h"

size_t fmt_u64(char *out, uint64_t v)
{
    char tmp[FMT_U64_MAX_BYTES];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}
