/* libFuzzer target for json_diff_run.  Input: a spec, a NUL, document A, a
 * NUL, document B.  The spec is lines "i<pointer>" (ignore) or
 * "u<pointer>" (unordered).  Never crashes; comparing a document with
 * itself never reports a difference. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "policy/json_diff.h"

#define MAX_POINTERS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_self(const json_diff_spec_t *spec, const json_diff_side_t *s)
{
    json_diff_result_t r;
    if (json_diff_run(spec, s, s, &r) != FE_OK)
        return;
    if (r.n_total != 0 || r.n_differences != 0 || (!r.match && !r.incomplete))
        abort();
    json_diff_result_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *doc_a = memchr(copy, '\0', size);
    size_t spec_len = doc_a ? (size_t)(doc_a - copy) : 0;
    const char *a = doc_a ? doc_a + 1 : copy;
    size_t a_len = doc_a ? size - spec_len - 1 : size;
    const char *b = memchr(a, '\0', a_len);
    size_t b_len = 0;
    if (b) {
        b_len = a_len - (size_t)(b - a) - 1;
        a_len = (size_t)(b - a);
        b++;
    } else {
        b = a;
        b_len = a_len;
    }

    const char *ign[MAX_POINTERS], *uno[MAX_POINTERS];
    size_t n_ign = 0, n_uno = 0;
    for (char *line = copy; doc_a && line < copy + spec_len;) {
        char *nl = memchr(line, '\n', (size_t)(copy + spec_len - line));
        if (nl)
            *nl = '\0';
        if (line[0] == 'i' && n_ign < MAX_POINTERS)
            ign[n_ign++] = line + 1;
        else if (line[0] == 'u' && n_uno < MAX_POINTERS)
            uno[n_uno++] = line + 1;
        line = nl ? nl + 1 : copy + spec_len;
    }
    char err[128];
    static const char *const hdrs[] = {"content-type"};
    json_diff_spec_t *spec =
        json_diff_spec_new(ign, n_ign, uno, n_uno, hdrs, 1, 1 << 16, err, sizeof err);
    if (spec) {
        json_diff_side_t sa = {.status = 200,
                               .content_type = "application/json",
                               .body = (const uint8_t *)a,
                               .body_len = a_len};
        json_diff_side_t sb = sa;
        sb.body = (const uint8_t *)b;
        sb.body_len = b_len;
        json_diff_result_t r;
        if (json_diff_run(spec, &sa, &sb, &r) == FE_OK) {
            if (r.n_differences > JSON_DIFF_MAX_REPORTED || r.n_differences > r.n_total ||
                r.match != (r.n_total == 0 && !r.incomplete))
                abort();
            json_diff_result_free(&r);
        }
        check_self(spec, &sa);
        check_self(spec, &sb);
        json_diff_spec_free(spec);
    }
    free(copy);
    return 0;
}
