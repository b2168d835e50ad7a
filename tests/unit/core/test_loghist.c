/* Log-linear histogram slots (core/loghist.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/loghist.h"

/* Slots grow with values, a value lies below its slot's upper bound, and
 * that bound is at most 1/2^bits above it; the last slot takes the rest. */
static void test_slots_bound_their_values(void **state)
{
    (void)state;
    const unsigned bits[] = {2, 3, 5};
    for (size_t b = 0; b < 3; b++) {
        size_t n = 4096, prev = 0;
        for (uint64_t v = 0; v < (1ull << 40); v = v + v / 7 + 1) {
            size_t s = loghist_slot(v, bits[b], n);
            assert_true(s >= prev);
            prev = s;
            if (s == n - 1)
                continue;
            uint64_t up = loghist_upper(s, bits[b]);
            assert_true(v < up);
            assert_true(up <= v + (v >> bits[b]) + 1);
            if (s > 0)
                assert_true(loghist_upper(s - 1, bits[b]) <= v);
        }
    }
    assert_int_equal(loghist_slot(UINT64_MAX, 3, 192), 191);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_slots_bound_their_values)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
