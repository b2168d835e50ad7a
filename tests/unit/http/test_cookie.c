/* Cookie pairs (http/cookie.h): split at ';', trimmed, quotes taken off the
 * value, empty pairs skipped, a pair without '=' a name alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/cookie.h"

static void expect(const char **p, const char *end, const char *pair, const char *name,
                   const char *value)
{
    http_cookie_t c;
    assert_true(http_cookie_next(p, end, &c));
    assert_int_equal(c.pair_len, strlen(pair));
    assert_memory_equal(c.pair, pair, c.pair_len);
    assert_int_equal(c.name_len, strlen(name));
    assert_memory_equal(c.name, name, c.name_len);
    assert_int_equal(c.value_len, strlen(value));
    if (c.value_len)
        assert_memory_equal(c.value, value, c.value_len);
}

static void test_pairs(void **state)
{
    (void)state;
    const char *v = " a=1;sid = x y ;; flag; q=\"quoted\"\t; e= ;";
    const char *p = v, *end = v + strlen(v);
    expect(&p, end, "a=1", "a", "1");
    expect(&p, end, "sid = x y", "sid", "x y");
    expect(&p, end, "flag", "flag", "");
    expect(&p, end, "q=\"quoted\"", "q", "quoted");
    expect(&p, end, "e=", "e", "");
    http_cookie_t c;
    assert_false(http_cookie_next(&p, end, &c));
    assert_ptr_equal(p, end);
    const char *empty = " ; ;";
    p = empty;
    assert_false(http_cookie_next(&p, empty + 4, &c));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
