/* Deadline header values (http/deadline.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "http/deadline.h"

static int ms_of(const char *s, uint64_t *ms) { return http_deadline_parse_ms(s, strlen(s), ms); }
static int grpc_of(const char *s, uint64_t *ms)
{
    return http_deadline_parse_grpc(s, strlen(s), ms);
}

static void test_parse_ms(void **state)
{
    (void)state;
    uint64_t ms;
    assert_int_equal(ms_of("1500", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(ms_of("  0 ", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(ms_of("9999999999", &ms), 0);
    assert_int_equal(ms, 9999999999ull);
    const char *bad[] = {"", " ", "-1", "+1", "1e3", "1.5", "12345678901", "0x10", "1 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ms_of(bad[i], &ms), FE_PARSE);
}

static void test_parse_grpc(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t ms;
    } ok[] = {{"300m", 300}, {"2S", 2000}, {"3M", 180000}, {"1H", 3600000},         {"1500u", 2},
              {"1000u", 1},  {"1n", 1},    {"0m", 0},      {"99999999m", 99999999}, {" 5S ", 5000}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t ms = 0;
        assert_int_equal(grpc_of(ok[i].in, &ms), 0);
        assert_int_equal(ms, ok[i].ms);
    }
    const char *bad[] = {"", "m", "300", "300x", "123456789m", "-1m", "1.5S", "S1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms;
        assert_int_equal(grpc_of(bad[i], &ms), FE_PARSE);
    }
}

/* Fixed width, right-aligned: the spaces before are the header's optional
 * whitespace. */
static void test_write(void **state)
{
    (void)state;
    char out[DEADLINE_MS_WIDTH + 1] = {0};
    http_deadline_write_ms(out, 4000);
    assert_string_equal(out, "      4000");
    http_deadline_write_ms(out, 0);
    assert_string_equal(out, "         0");
    http_deadline_write_ms(out, UINT64_MAX);
    assert_string_equal(out, "9999999999");
    char g[DEADLINE_GRPC_WIDTH + 1] = {0};
    http_deadline_write_grpc(g, 4000);
    assert_string_equal(g, "    4000m");
    http_deadline_write_grpc(g, 99999999);
    assert_string_equal(g, "99999999m");
    http_deadline_write_grpc(g, 100000000); /* too many ms: seconds, rounded down */
    assert_string_equal(g, "  100000S");
    uint64_t back;
    assert_int_equal(http_deadline_parse_grpc(g, DEADLINE_GRPC_WIDTH, &back), 0);
    assert_int_equal(back, 100000000);
    http_deadline_write_grpc(g, UINT64_MAX);
    assert_int_equal(g[DEADLINE_GRPC_WIDTH - 1], 'H');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ms),
        cmocka_unit_test(test_parse_grpc),
        cmocka_unit_test(test_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
