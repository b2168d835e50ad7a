/* http/method: tokens to methods (exact, case-sensitive), names back, and
 * which are idempotent; config's method bits follow the same table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "http/method.h"

static void test_parse_and_name(void **state)
{
    (void)state;
    for (int m = 0; m < HTTP_METHOD_OTHER; m++) {
        const char *name = http_method_name((http_method_t)m);
        assert_int_equal(http_method_parse(name, strlen(name)), m);
    }
    assert_int_equal(http_method_parse("GET", 3), HTTP_METHOD_GET);
    assert_int_equal(http_method_parse("get", 3), HTTP_METHOD_OTHER);
    assert_int_equal(http_method_parse("GETX", 4), HTTP_METHOD_OTHER);
    assert_int_equal(http_method_parse("GE", 2), HTTP_METHOD_OTHER);
    assert_int_equal(http_method_parse("PROPFIND", 8), HTTP_METHOD_OTHER);
    assert_string_equal(http_method_name(HTTP_METHOD_OTHER), "OTHER");
}

static void test_idempotent(void **state)
{
    (void)state;
    assert_true(http_method_idempotent(HTTP_METHOD_GET));
    assert_true(http_method_idempotent(HTTP_METHOD_HEAD));
    assert_true(http_method_idempotent(HTTP_METHOD_OPTIONS));
    assert_true(http_method_idempotent(HTTP_METHOD_TRACE));
    assert_true(http_method_idempotent(HTTP_METHOD_PUT));
    assert_true(http_method_idempotent(HTTP_METHOD_DELETE));
    assert_false(http_method_idempotent(HTTP_METHOD_POST));
    assert_false(http_method_idempotent(HTTP_METHOD_PATCH));
    assert_false(http_method_idempotent(HTTP_METHOD_CONNECT));
    assert_false(http_method_idempotent(HTTP_METHOD_OTHER));
    assert_false(http_method_idempotent(http_method_parse("GE", 2)));
}

static void test_config_bits(void **state)
{
    (void)state;
    assert_int_equal(config_method_bit("GET", 3), METHOD_GET);
    assert_int_equal(config_method_bit("CONNECT", 7), METHOD_CONNECT);
    assert_int_equal(config_method_bit("BREW", 4), METHOD_OTHER);
    assert_int_equal(METHOD_OTHER, 1u << 9); /* the bit layout configs were built with */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_name),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_config_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
