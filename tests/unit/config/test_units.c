/* The value syntaxes of the configuration file (config/units.h): durations,
 * sizes, booleans, bounded integers, decimals and their formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config/units.h"
#include "core/errors.h"

static uint64_t duration_ok(const char *s)
{
    uint64_t ms = 12345;
    const char *why = "unset";
    assert_int_equal(units_parse_duration_ms(s, &ms, &why), 0);
    assert_null(why);
    return ms;
}

static int duration_err(const char *s, const char **why)
{
    uint64_t ms = 12345;
    int rc = units_parse_duration_ms(s, &ms, why);
    assert_int_not_equal(rc, 0);
    assert_int_equal(ms, 12345); /* untouched on error */
    assert_non_null(*why);
    return rc;
}

static void test_duration_units(void **state)
{
    (void)state;
    assert_int_equal(duration_ok("250ms"), 250);
    assert_int_equal(duration_ok("5s"), 5000);
    assert_int_equal(duration_ok("2m"), 120000);
    assert_int_equal(duration_ok("1h"), 3600000);
    assert_int_equal(duration_ok("0s"), 0);
    assert_int_equal(duration_ok("0ms"), 0);
}

static void test_duration_fractions_and_sums(void **state)
{
    (void)state;
    assert_int_equal(duration_ok("1.5s"), 1500);
    assert_int_equal(duration_ok("0.25s"), 250);
    assert_int_equal(duration_ok(".5s"), 500);
    assert_int_equal(duration_ok("1.5h"), 5400000);
    assert_int_equal(duration_ok("1h30m"), 5400000);
    assert_int_equal(duration_ok("1s500ms"), 1500);
    const char *why;
    /* Half a millisecond cannot be represented: refused, not rounded. */
    assert_int_equal(duration_err("1.5ms", &why), FE_PARSE);
    assert_string_equal(why, "finer than 1ms");
    assert_int_equal(duration_err("0.0001s", &why), FE_PARSE);
    assert_int_equal(duration_err("1.s", &why), FE_PARSE);
    assert_int_equal(duration_err("1.0000000001s", &why), FE_PARSE);
    assert_string_equal(why, "at most 9 decimals");
}

static void test_duration_rejects(void **state)
{
    (void)state;
    const char *why;
    /* A bare number is ambiguous (seconds? milliseconds?). */
    assert_int_equal(duration_err("10", &why), FE_PARSE);
    assert_string_equal(why, "use a unit: 250ms, 5s, 2m, 1h");
    assert_int_equal(duration_err("0", &why), FE_PARSE);
    assert_int_equal(duration_err("4x", &why), FE_PARSE);
    assert_string_equal(why, "use a unit: 250ms, 5s, 2m, 1h");
    assert_int_equal(duration_err("-1s", &why), FE_PARSE);
    assert_string_equal(why, "durations cannot be negative");
    assert_int_equal(duration_err("", &why), FE_PARSE);
    assert_int_equal(duration_err("5 s", &why), FE_PARSE);
    assert_int_equal(duration_err("5S", &why), FE_PARSE);
    assert_int_equal(duration_err("5sec", &why), FE_PARSE);
    assert_int_equal(duration_err("1d", &why), FE_PARSE);
    assert_int_equal(duration_err("s", &why), FE_PARSE);
    assert_int_equal(duration_err("+5s", &why), FE_PARSE);
    assert_int_equal(duration_err("5s ", &why), FE_PARSE);
}

static void test_duration_overflow(void **state)
{
    (void)state;
    const char *why;
    assert_int_equal(duration_ok("18446744073709551615ms"), UINT64_MAX);
    assert_int_equal(duration_err("18446744073709551616ms", &why), FE_TOOBIG);
    assert_string_equal(why, "too large");
    assert_int_equal(duration_err("18446744073709552s", &why), FE_TOOBIG);
    assert_int_equal(duration_err("99999999999999999999999h", &why), FE_TOOBIG);
    assert_int_equal(duration_ok("5124095576030h"), 5124095576030ull * 3600000);
    assert_int_equal(duration_err("5124095576031h", &why), FE_TOOBIG);
    /* Each part fits, the sum does not. */
    assert_int_equal(duration_err("18446744073709551615ms1ms", &why), FE_TOOBIG);
}

static uint64_t size_ok(const char *s)
{
    uint64_t b = 777;
    const char *why = "unset";
    assert_int_equal(units_parse_size(s, &b, &why), 0);
    assert_null(why);
    return b;
}

static int size_err(const char *s, const char **why)
{
    uint64_t b = 777;
    int rc = units_parse_size(s, &b, why);
    assert_int_not_equal(rc, 0);
    assert_int_equal(b, 777);
    assert_non_null(*why);
    return rc;
}

static void test_size_units(void **state)
{
    (void)state;
    assert_int_equal(size_ok("0"), 0);
    assert_int_equal(size_ok("16384"), 16384);
    assert_int_equal(size_ok("16KiB"), 16384);
    assert_int_equal(size_ok("8MiB"), 8 * 1024 * 1024);
    assert_int_equal(size_ok("1GiB"), 1024ull * 1024 * 1024);
    assert_int_equal(size_ok("1.5KiB"), 1536);
    assert_int_equal(size_ok("0.5MiB"), 512 * 1024);
}

static void test_size_rejects(void **state)
{
    (void)state;
    const char *why;
    assert_int_equal(size_err("16kb", &why), FE_PARSE);
    assert_string_equal(why, "KB, MB, GB are ambiguous: use KiB, MiB, GiB (powers of 1024)");
    assert_int_equal(size_err("16KB", &why), FE_PARSE);
    assert_string_equal(why, "KB, MB, GB are ambiguous: use KiB, MiB, GiB (powers of 1024)");
    assert_int_equal(size_err("8M", &why), FE_PARSE);
    assert_string_equal(why, "KB, MB, GB are ambiguous: use KiB, MiB, GiB (powers of 1024)");
    assert_int_equal(size_err("16kib", &why), FE_PARSE);
    assert_string_equal(why, "units are case-sensitive: KiB, MiB, GiB");
    assert_int_equal(size_err("16TiB", &why), FE_PARSE);
    assert_string_equal(why, "use bytes or a binary unit: 16KiB, 8MiB, 1GiB");
    assert_int_equal(size_err("1.5", &why), FE_PARSE);
    assert_string_equal(why, "not a whole number of bytes");
    assert_int_equal(size_err("0.1KiB", &why), FE_PARSE);
    assert_int_equal(size_err("-1", &why), FE_PARSE);
    assert_string_equal(why, "sizes cannot be negative");
    assert_int_equal(size_err("", &why), FE_PARSE);
    assert_int_equal(size_err("KiB", &why), FE_PARSE);
    assert_int_equal(size_err("1KiB1KiB", &why), FE_PARSE);
    assert_int_equal(size_err("16 KiB", &why), FE_PARSE);
}

static void test_size_overflow(void **state)
{
    (void)state;
    const char *why;
    assert_int_equal(size_ok("18446744073709551615"), UINT64_MAX);
    assert_int_equal(size_err("18446744073709551616", &why), FE_TOOBIG);
    assert_int_equal(size_err("17179869184GiB", &why), FE_TOOBIG);
    assert_string_equal(why, "too large");
}

static void test_bool(void **state)
{
    (void)state;
    bool b = false;
    assert_int_equal(units_parse_bool("true", &b), 0);
    assert_true(b);
    assert_int_equal(units_parse_bool("False", &b), 0);
    assert_false(b);
    assert_int_equal(units_parse_bool("TRUE", &b), 0);
    assert_true(b);
    /* YAML 1.1's yes/no/on/off are typos waiting to happen ("NO" country). */
    assert_int_equal(units_parse_bool("yes", &b), FE_PARSE);
    assert_int_equal(units_parse_bool("off", &b), FE_PARSE);
    assert_int_equal(units_parse_bool("1", &b), FE_PARSE);
    assert_int_equal(units_parse_bool("tRUE", &b), FE_PARSE);
    assert_int_equal(units_parse_bool("", &b), FE_PARSE);
}

static void test_uint(void **state)
{
    (void)state;
    uint64_t v = 0;
    const char *why;
    assert_int_equal(units_parse_uint("0", 0, 10, &v, &why), 0);
    assert_int_equal(v, 0);
    assert_int_equal(units_parse_uint("10", 0, 10, &v, &why), 0);
    assert_int_equal(v, 10);
    assert_int_equal(units_parse_uint("007", 0, 10, &v, &why), 0);
    assert_int_equal(v, 7);
    assert_int_equal(units_parse_uint("11", 0, 10, &v, &why), FE_TOOBIG);
    assert_string_equal(why, "out of range");
    assert_int_equal(units_parse_uint("0", 1, 10, &v, &why), FE_TOOBIG);
    assert_int_equal(units_parse_uint("99999999999999999999999", 0, UINT64_MAX, &v, &why),
                     FE_TOOBIG);
    assert_int_equal(units_parse_uint("-1", 0, 10, &v, &why), FE_PARSE);
    assert_string_equal(why, "cannot be negative");
    assert_int_equal(units_parse_uint("1.0", 0, 10, &v, &why), FE_PARSE);
    assert_int_equal(units_parse_uint("0x10", 0, 100, &v, &why), FE_PARSE);
    assert_int_equal(units_parse_uint("+1", 0, 10, &v, &why), FE_PARSE);
    assert_int_equal(units_parse_uint("", 0, 10, &v, &why), FE_PARSE);
    assert_int_equal(v, 7);
}

static void test_decimal(void **state)
{
    (void)state;
    double d = -1;
    assert_int_equal(units_parse_decimal("0", &d), 0);
    assert_true(d == 0.0);
    assert_int_equal(units_parse_decimal("1.0", &d), 0);
    assert_true(d == 1.0);
    assert_int_equal(units_parse_decimal("0.25", &d), 0);
    assert_true(d == 0.25);
    assert_int_equal(units_parse_decimal(".5", &d), 0);
    assert_true(d == 0.5);
    assert_int_equal(units_parse_decimal("-0.5", &d), FE_PARSE);
    assert_int_equal(units_parse_decimal("1e-3", &d), FE_PARSE);
    assert_int_equal(units_parse_decimal("nan", &d), FE_PARSE);
    assert_int_equal(units_parse_decimal("", &d), FE_PARSE);
    assert_int_equal(units_parse_decimal("1.", &d), FE_PARSE);
}

static void test_format(void **state)
{
    (void)state;
    char buf[32];
    units_format_duration(0, buf, sizeof buf);
    assert_string_equal(buf, "0s");
    units_format_duration(1, buf, sizeof buf);
    assert_string_equal(buf, "1ms");
    units_format_duration(1500, buf, sizeof buf);
    assert_string_equal(buf, "1500ms");
    units_format_duration(90000, buf, sizeof buf);
    assert_string_equal(buf, "90s");
    units_format_duration(120000, buf, sizeof buf);
    assert_string_equal(buf, "2m");
    units_format_duration(365ull * 24 * 3600 * 1000, buf, sizeof buf);
    assert_string_equal(buf, "8760h");
    units_format_size(1000, buf, sizeof buf);
    assert_string_equal(buf, "1000");
    units_format_size(16384, buf, sizeof buf);
    assert_string_equal(buf, "16KiB");
    units_format_size(1024 * 1024, buf, sizeof buf);
    assert_string_equal(buf, "1MiB");
    units_format_size(1024ull * 1024 * 1024, buf, sizeof buf);
    assert_string_equal(buf, "1GiB");
    /* Formatting then parsing gives the value back. */
    uint64_t ms;
    const char *why;
    units_format_duration(5400000, buf, sizeof buf);
    assert_int_equal(units_parse_duration_ms(buf, &ms, &why), 0);
    assert_int_equal(ms, 5400000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_fractions_and_sums),
        cmocka_unit_test(test_duration_rejects),
        cmocka_unit_test(test_duration_overflow),
        cmocka_unit_test(test_size_units),
        cmocka_unit_test(test_size_rejects),
        cmocka_unit_test(test_size_overflow),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_uint),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
