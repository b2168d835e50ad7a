#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "policy/json_diff.h"

static json_diff_side_t side(const char *ct, const char *body)
{
    json_diff_side_t s = {.status = 200,
                          .content_type = ct,
                          .body = (const uint8_t *)body,
                          .body_len = body ? strlen(body) : 0};
    return s;
}

static json_diff_spec_t *spec_make(const char *const *ign, size_t ni, const char *const *uno,
                                   size_t nu)
{
    char err[128];
    static const char *const hdrs[] = {"Content-Type", "X-Version"};
    json_diff_spec_t *s = json_diff_spec_new(ign, ni, uno, nu, hdrs, 2, 1 << 20, err, sizeof err);
    assert_non_null(s);
    return s;
}

/* Runs a JSON diff of a and b; returns the result (caller frees). */
static json_diff_result_t run_spec(const json_diff_spec_t *spec, const char *a, const char *b)
{
    json_diff_side_t x = side("application/json", a), y = side("application/json", b);
    json_diff_result_t r;
    assert_int_equal(json_diff_run(spec, &x, &y, &r), FE_OK);
    return r;
}

static json_diff_result_t run(const char *a, const char *b)
{
    json_diff_spec_t *s = spec_make(NULL, 0, NULL, 0);
    json_diff_result_t r = run_spec(s, a, b);
    json_diff_spec_free(s);
    return r;
}

static void expect_one(json_diff_result_t *r, const char *ptr, const char *o, const char *n)
{
    assert_false(r->match);
    assert_int_equal(r->n_total, 1);
    assert_string_equal(r->differences[0].pointer, ptr);
    if (o)
        assert_string_equal(r->differences[0].old_value, o);
    else
        assert_null(r->differences[0].old_value);
    if (n)
        assert_string_equal(r->differences[0].new_value, n);
    else
        assert_null(r->differences[0].new_value);
    json_diff_result_free(r);
}

static void expect_match(json_diff_result_t *r)
{
    assert_true(r->match);
    assert_int_equal(r->n_total, 0);
    json_diff_result_free(r);
}

static void test_reordered_keys_and_numbers(void **st)
{
    json_diff_result_t r =
        run("{\"a\":1,\"b\":[1,2.5],\"c\":null}", "{\"c\":null,\"b\":[1.0,25e-1],\"a\":1e0}");
    expect_match(&r);
    r = run("{\"a\":9007199254740993}", "{\"a\":9007199254740992}");
    expect_one(&r, "/a", "9007199254740993", "9007199254740992");
}

static void test_nested_arrays_generalised(void **st)
{
    json_diff_result_t r = run("{\"items\":[{\"price\":1},{\"price\":2}]}",
                               "{\"items\":[{\"price\":1},{\"price\":3}]}");
    expect_one(&r, "/items/*/price", "2", "3");
    r = run("[[1,2],[3]]", "[[1,2],[3,4]]");
    expect_one(&r, "/*/*", NULL, "4");
}

static void test_ignore_wildcards(void **st)
{
    static const char *const ign[] = {"/meta/ts", "/items/*/id", "/*/x/*/y"};
    json_diff_spec_t *s = spec_make(ign, 3, NULL, 0);
    json_diff_result_t r = run_spec(s,
                                    "{\"meta\":{\"ts\":1},\"items\":[{\"id\":1,\"v\":1}],"
                                    "\"q\":{\"x\":[{\"y\":1,\"z\":1}]}}",
                                    "{\"meta\":{\"ts\":2},\"items\":[{\"id\":2,\"v\":1}],"
                                    "\"q\":{\"x\":[{\"y\":2,\"z\":1}]}}");
    expect_match(&r);
    r = run_spec(s, "{\"items\":[{\"id\":1,\"v\":1}]}", "{\"items\":[{\"v\":2}]}");
    expect_one(&r, "/items/*/v", "1", "2");
    json_diff_spec_free(s);
}

static void test_unordered_multiset(void **st)
{
    static const char *const uno[] = {"/tags"};
    json_diff_spec_t *s = spec_make(NULL, 0, uno, 1);
    json_diff_result_t r =
        run_spec(s, "{\"tags\":[\"a\",\"b\",1]}", "{\"tags\":[1.0,\"b\",\"a\"]}");
    expect_match(&r);
    r = run_spec(s, "{\"tags\":[\"a\",\"a\",\"b\"]}", "{\"tags\":[\"b\",\"a\"]}");
    expect_one(&r, "/tags/*", "\"a\"", NULL);
    r = run_spec(s, "{\"tags\":[\"a\"]}", "{\"tags\":[\"a\",{\"k\":1}]}");
    expect_one(&r, "/tags/*", NULL, "{\"k\":1}");
    json_diff_spec_free(s);
    r = run("{\"tags\":[\"a\",\"b\"]}", "{\"tags\":[\"b\",\"a\"]}");
    assert_int_equal(r.n_total, 2);
    json_diff_result_free(&r);
}

static void test_type_change_and_missing(void **st)
{
    json_diff_result_t r = run("{\"a\":\"1\"}", "{\"a\":1}");
    expect_one(&r, "/a", "\"1\"", "1");
    r = run("{\"a\":true}", "{\"a\":false}");
    expect_one(&r, "/a", "true", "false");
    r = run("{\"a\":{\"x\":1}}", "{\"a\":null}");
    expect_one(&r, "/a", "{\"x\":1}", "null");
    r = run("{\"a\":1,\"b\":2}", "{\"a\":1}");
    expect_one(&r, "/b", "2", NULL);
    r = run("{\"a\":1}", "{\"a\":1,\"b\":[]}");
    expect_one(&r, "/b", NULL, "[]");
}

static void test_escaping(void **st)
{
    json_diff_result_t r = run("{\"a/b\":{\"c~d\":1}}", "{\"a/b\":{\"c~d\":2}}");
    expect_one(&r, "/a~1b/c~0d", "1", "2");
    static const char *const ign[] = {"/a~1b/c~0d"};
    json_diff_spec_t *s = spec_make(ign, 1, NULL, 0);
    r = run_spec(s, "{\"a/b\":{\"c~d\":1}}", "{\"a/b\":{\"c~d\":2}}");
    expect_match(&r);
    json_diff_spec_free(s);
    char err[64];
    static const char *const bad[] = {"/a~2"};
    assert_null(json_diff_spec_new(bad, 1, NULL, 0, NULL, 0, 10, err, sizeof err));
    static const char *const bad2[] = {"a"};
    assert_null(json_diff_spec_new(NULL, 0, bad2, 1, NULL, 0, 10, err, sizeof err));
}

static void test_non_json_and_plus_json(void **st)
{
    json_diff_spec_t *s = spec_make(NULL, 0, NULL, 0);
    json_diff_side_t a = side("text/plain", "{\"a\":1}"), b = side("text/plain", "{\"a\":1.0}");
    json_diff_result_t r;
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    expect_one(&r, "", "7", "9");
    b = side("text/plain", "{\"a\":1}");
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    expect_match(&r);
    a = side("application/problem+json; charset=utf-8", "{\"a\":1}");
    b = side("Application/JSON", "{\"a\":1.0}");
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    expect_match(&r);
    /* declared JSON but invalid on one side: flagged, compared as bytes */
    b = side("application/json", "{\"a\":");
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    assert_false(r.old_invalid);
    assert_true(r.new_invalid);
    expect_one(&r, "", "7", "5");
    b = side("application/json", "{\"a\":1,\"a\":1}");
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    assert_true(r.new_invalid);
    json_diff_result_free(&r);
    json_diff_spec_free(s);
}

/* The same bytes match without a parse, even when they are not JSON; one
 * byte apart, they are parsed (and found invalid). */
static void test_identical_bytes_need_no_parse(void **st)
{
    (void)st;
    json_diff_result_t r = run("{\"a\":", "{\"a\":");
    expect_match(&r);
    assert_false(r.old_invalid);
    r = run("{\"a\":", "{\"a\":1");
    assert_false(r.match);
    assert_true(r.old_invalid && r.new_invalid);
    json_diff_result_free(&r);
}

static void test_truncated_and_too_big(void **st)
{
    char err[64];
    json_diff_spec_t *s = json_diff_spec_new(NULL, 0, NULL, 0, NULL, 0, 4, err, sizeof err);
    json_diff_side_t a = side("application/json", "[1,2]"), b = side("application/json", "[1,3]");
    json_diff_result_t r;
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    assert_true(r.compared_by_length);
    expect_match(&r);
    b = side("application/json", "[1,23]");
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    assert_true(r.compared_by_length);
    expect_one(&r, "", "5", "6");
    json_diff_spec_free(s);
}

static void test_status_and_headers(void **st)
{
    json_diff_spec_t *s = spec_make(NULL, 0, NULL, 0);
    json_diff_header_t ha[] = {{"content-type", "application/json"}, {"X-Other", "1"}};
    json_diff_header_t hb[] = {{"CONTENT-TYPE", "application/json"}, {"x-version", "v\"2"}};
    json_diff_side_t a = side("application/json", "{}"), b = side("application/json", "{}");
    a.headers = ha;
    a.n_headers = 2;
    b.headers = hb;
    b.n_headers = 2;
    b.status = 503;
    json_diff_result_t r;
    assert_int_equal(json_diff_run(s, &a, &b, &r), FE_OK);
    assert_false(r.match);
    assert_int_equal(r.n_total, 2);
    assert_string_equal(r.differences[0].pointer, "status");
    assert_string_equal(r.differences[0].old_value, "200");
    assert_string_equal(r.differences[0].new_value, "503");
    assert_string_equal(r.differences[1].pointer, "header:x-version");
    assert_null(r.differences[1].old_value);
    assert_string_equal(r.differences[1].new_value, "\"v\\\"2\"");
    json_diff_result_free(&r);
    json_diff_spec_free(s);
}

static char *repeat(const char *open, const char *mid, const char *close, size_t n)
{
    size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
    char *p = malloc(n * (lo + lc) + lm + 1), *q = p;
    assert_non_null(p);
    for (size_t i = 0; i < n; i++, q += lo)
        memcpy(q, open, lo);
    memcpy(q, mid, lm);
    q += lm;
    for (size_t i = 0; i < n; i++, q += lc)
        memcpy(q, close, lc);
    *q = '\0';
    return p;
}

static void test_bounds(void **st)
{
    /* deeper than the walk bound: strict comparison below it, still found */
    char *a = repeat("[", "1", "]", 200), *b = repeat("[", "2", "]", 200);
    json_diff_result_t r = run(a, b);
    assert_false(r.match);
    assert_int_equal(r.n_total, 1);
    json_diff_result_free(&r);
    r = run(a, a);
    expect_match(&r);
    free(a);
    free(b);
    /* many differences: 64 kept, all counted */
    a = repeat("[", "", "", 0);
    size_t n = 1000;
    char *x = malloc(n * 2 + 2), *y = malloc(n * 2 + 2);
    x[0] = y[0] = '[';
    for (size_t i = 0; i < n; i++) {
        x[1 + 2 * i] = '1';
        y[1 + 2 * i] = '2';
        x[2 + 2 * i] = y[2 + 2 * i] = i + 1 < n ? ',' : ']';
    }
    x[2 * n + 1] = y[2 * n + 1] = '\0';
    r = run(x, y);
    assert_int_equal(r.n_total, n);
    assert_int_equal(r.n_differences, JSON_DIFF_MAX_REPORTED);
    json_diff_result_free(&r);
    free(a);
    free(x);
    free(y);
    /* long values are cut */
    char *big = malloc(2000);
    memset(big, 'x', 2000);
    big[0] = '[';
    big[1] = '"';
    big[1997] = '"';
    big[1998] = ']';
    big[1999] = '\0';
    r = run(big, "[]");
    assert_int_equal(strlen(r.differences[0].old_value), JSON_DIFF_VALUE_MAX_BYTES);
    json_diff_result_free(&r);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reordered_keys_and_numbers),
        cmocka_unit_test(test_nested_arrays_generalised),
        cmocka_unit_test(test_ignore_wildcards),
        cmocka_unit_test(test_unordered_multiset),
        cmocka_unit_test(test_type_change_and_missing),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_non_json_and_plus_json),
        cmocka_unit_test(test_identical_bytes_need_no_parse),
        cmocka_unit_test(test_truncated_and_too_big),
        cmocka_unit_test(test_status_and_headers),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
