/* libFuzzer target for trace_parse_traceparent and trace_parse_datadog_id:
 * never crashes, never reads past n, and whatever is accepted satisfies the
 * format: ids not zero, a version-00 header formats back to itself, a
 * Datadog id prints back to its digits. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "observe/trace.h"

#include "fuzz_check.h"

static void trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

static void check_traceparent(const char *p, size_t n)
{
    uint8_t tid[16], pid[8], flags;
    if (trace_parse_traceparent(p, n, tid, pid, &flags) != 0)
        return;
    static const uint8_t zero[16];
    CHECK(memcmp(tid, zero, 16) != 0 && memcmp(pid, zero, 8) != 0);
    trim(&p, &n);
    CHECK(n >= TRACEPARENT_LEN);
    CHECK(memcmp(p, "ff", 2) != 0);
    /* The 00 layout re-formatted gives the same bytes, whatever the version. */
    char tp[TRACEPARENT_LEN];
    trace_format_traceparent(tp, tid, pid, flags & TRACE_FLAG_SAMPLED);
    CHECK(memcmp(tp + 2, p + 2, 51) == 0);
    if (memcmp(p, "00", 2) == 0) {
        CHECK(n == TRACEPARENT_LEN);
        if (flags <= 1)
            CHECK(memcmp(tp, p, TRACEPARENT_LEN) == 0);
    } else if (n > TRACEPARENT_LEN) {
        CHECK(p[TRACEPARENT_LEN] == '-');
    }
}

static void check_datadog(const char *p, size_t n)
{
    uint64_t v;
    if (trace_parse_datadog_id(p, n, &v) != 0)
        return;
    CHECK(v != 0);
    trim(&p, &n);
    CHECK(n >= 1 && n <= 20);
    while (n > 1 && *p == '0') {
        p++;
        n--;
    }
    char back[24];
    int w = snprintf(back, sizeof back, "%llu", (unsigned long long)v);
    CHECK(w > 0 && (size_t)w == n && memcmp(back, p, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A heap copy of exactly size bytes, so ASan sees any read past the end. */
    char *p = malloc(size ? size : 1);
    if (!p)
        return 0;
    if (size)
        memcpy(p, data, size);
    check_traceparent(p, size);
    check_datadog(p, size);
    free(p);
    return 0;
}
