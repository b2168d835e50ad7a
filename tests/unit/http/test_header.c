/* Header lookup and Cookie parsing (http/header.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "http/header.h"

#define HDR(n, v)                                                                                  \
    {                                                                                              \
        n, v, sizeof(n) - 1, sizeof(v) - 1                                                         \
    }

static void test_name_is(void **state)
{
    (void)state;
    assert_true(http_header_name_is("Content-Type", 12, "content-type", 12));
    assert_true(http_header_name_is("CONTENT-TYPE", 12, "content-type", 12));
    assert_false(http_header_name_is("Content-Typ", 11, "content-type", 12));
    assert_false(http_header_name_is("Content-Tipe", 12, "content-type", 12));
    /* Only ASCII letters fold: '[' is not '{' lower-cased. */
    assert_false(http_header_name_is("[", 1, "{", 1));
    assert_true(http_header_name_is("", 0, "", 0));
}

static void test_find_first(void **state)
{
    (void)state;
    http_header_t h[] = {HDR("Host", "a"), HDR("X-Debug", "1"), HDR("x-debug", "2")};
    const http_header_t *f = http_header_find(h, 3, "x-debug", 7);
    assert_ptr_equal(f, &h[1]);
    assert_ptr_equal(http_header_find(h, 3, "host", 4), &h[0]);
    assert_null(http_header_find(h, 3, "x-deb", 5));
    assert_null(http_header_find(h, 0, "host", 4));
}

static void expect_cookie(const char *hdr, const char *name, const char *want)
{
    const char *v = NULL;
    size_t vl = 0;
    int rc = http_cookie_get(hdr, strlen(hdr), name, strlen(name), &v, &vl);
    if (!want) {
        assert_int_equal(rc, FE_NOTFOUND);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(vl, strlen(want));
    assert_memory_equal(v, want, vl);
}

static void test_cookie_basic(void **state)
{
    (void)state;
    expect_cookie("a=1; b=2", "a", "1");
    expect_cookie("a=1; b=2", "b", "2");
    expect_cookie("a=1; b=2", "c", NULL);
    expect_cookie("sid=abc", "sid", "abc");
    expect_cookie("", "a", NULL);
}

static void test_cookie_whitespace(void **state)
{
    (void)state;
    expect_cookie("  a = 1 ;b=2;   c=3  ", "a", "1");
    expect_cookie("a=1;b=2", "b", "2");
    expect_cookie("a=1;\tb=2\t", "b", "2");
    expect_cookie("a=1;   c=3  ", "c", "3");
}

static void test_cookie_exact_name(void **state)
{
    (void)state;
    expect_cookie("xsid=1; sidx=2; SID=3", "sid", NULL);
    expect_cookie("xsid=1; sid=2", "sid", "2");
    /* The value may hold '='; only the first one splits. */
    expect_cookie("tok=a=b=; x=1", "tok", "a=b=");
    /* A name alone never matches a value-bearing query. */
    expect_cookie("sid; other=1", "sid", NULL);
}

static void test_cookie_edge(void **state)
{
    (void)state;
    expect_cookie("a=; b=2", "a", "");
    expect_cookie("a=\"quoted\"; b=2", "a", "quoted");
    expect_cookie("a=\"", "a", "\"");
    expect_cookie("a=1;;; b=2", "b", "2");
    expect_cookie("a=1; a=2", "a", "1");
    expect_cookie("=x; a=1", "a", "1");
    expect_cookie("a=1;", "a", "1");
    /* An empty name is never found, even next to an empty-named pair. */
    const char *v;
    size_t vl;
    assert_int_equal(http_cookie_get("=x", 2, "", 0, &v, &vl), FE_NOTFOUND);
}

static void test_cookie_not_nul_terminated(void **state)
{
    (void)state;
    /* Spans into a request head are not NUL-terminated: len is the bound. */
    const char buf[] = "a=1; b=22; c=3";
    const char *v;
    size_t vl;
    assert_int_equal(http_cookie_get(buf, 8, "b", 1, &v, &vl), 0);
    assert_int_equal(vl, 1);
    assert_memory_equal(v, "2", 1);
    assert_int_equal(http_cookie_get(buf, 8, "c", 1, &v, &vl), FE_NOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_is),
        cmocka_unit_test(test_find_first),
        cmocka_unit_test(test_cookie_basic),
        cmocka_unit_test(test_cookie_whitespace),
        cmocka_unit_test(test_cookie_exact_name),
        cmocka_unit_test(test_cookie_edge),
        cmocka_unit_test(test_cookie_not_nul_terminated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
