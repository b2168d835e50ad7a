/* libFuzzer target for set_members_parse: never crashes, and on success
 * every member line of the input is found in the table. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "routing/set.h"

static int is_trim(char c) { return c == ' ' || c == '\t' || c == '\r'; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[128];
    const char *p = (const char *)data;
    set_members_t *m = set_members_parse(p, size, err, sizeof err);
    if (!m)
        return 0;
    if (size >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) {
        p += 3;
        size -= 3;
    }
    /* An independent reading of the format: a '#' at the start or after
     * whitespace starts a comment; then trimmed, non-blank. */
    const char *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        const char *s = p;
        for (const char *c = p; c < e; c++)
            if (*c == '#' && (c == p || c[-1] == ' ' || c[-1] == '\t' || c[-1] == '\r' ||
                              c[-1] == '\v' || c[-1] == '\f')) {
                e = c;
                break;
            }
        while (s < e && is_trim(*s))
            s++;
        while (e > s && is_trim(e[-1]))
            e--;
        if (e > s && *s != '#' && !set_members_contains(m, s, (size_t)(e - s)))
            abort();
        if (!nl)
            break;
        p = nl + 1;
    }
    set_members_free(m);
    return 0;
}
