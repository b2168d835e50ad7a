/* libFuzzer target for an aggregation call's body (policy/agg_compose.h):
 * the first byte picks an extract pointer, the rest is the body an upstream
 * sent. Never crashes, never reads past the body; whatever is accepted is
 * JSON, and the composed answer around it is one JSON object. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/agg_compose.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const pointers[] = {NULL, "/data/items", "/0", "", "/a~1b/~0c", "/1/x"};
    if (size < 1)
        return 0;
    const char *extract = pointers[data[0] % (sizeof pointers / sizeof pointers[0])];
    char *body = malloc(size - 1 ? size - 1 : 1); /* exactly the body: ASan sees an overread */
    if (!body)
        return 0;
    memcpy(body, data + 1, size - 1);
    const char *out, *why;
    size_t len;
    char *owned;
    if (agg_compose_check(body, size - 1, 1 << 20, extract, &out, &len, &owned, &why) == 0) {
        json_t *v = json_loadb(out, len, JSON_DECODE_ANY, NULL);
        CHECK(v);
        json_decref(v);
        agg_result_t r[] = {{"call", out, len, NULL}, {"other", NULL, 0, "the body is not JSON"}};
        agg_piece_t p[16];
        char g[256];
        bool partial;
        long n = agg_compose(r, 2, p, 16, g, sizeof g, &partial);
        CHECK(n > 0 && partial);
        size_t total = 0;
        for (long i = 0; i < n; i++)
            total += p[i].n;
        char *all = malloc(total);
        CHECK(all);
        size_t at = 0;
        for (long i = 0; i < n; i++) {
            memcpy(all + at, p[i].p, p[i].n);
            at += p[i].n;
        }
        json_t *o = json_loadb(all, total, 0, NULL);
        CHECK(o && json_is_object(o));
        json_decref(o);
        free(all);
        free(owned);
    } else {
        CHECK(!owned && why);
    }
    free(body);
    return 0;
}
