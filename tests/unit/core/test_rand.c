/* core/rand: xorshift64* (deterministic for a state, never stuck at zero)
 * and seeds (non-zero, different each time). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/rand.h"

static void test_xorshift(void **state)
{
    (void)state;
    uint64_t a = 1, b = 1, z = 0;
    for (int i = 0; i < 100; i++)
        assert_true(rand_next(&a) == rand_next(&b));
    assert_true(rand_next(&z) != 0);
    assert_true(z != 0);
    /* The first output of xorshift64* from state 1. */
    uint64_t s = 1;
    assert_true(rand_next(&s) == 0x47e4ce4b896cdd1dULL);
}

static void test_unit_interval(void **state)
{
    (void)state;
    uint64_t s = 7;
    double lo = 1, hi = 0;
    for (int i = 0; i < 10000; i++) {
        double u = rand_unit(&s);
        assert_true(u >= 0 && u < 1);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    assert_true(lo < 0.01 && hi > 0.99);
}

static void test_seeds_differ(void **state)
{
    (void)state;
    uint64_t a = rand_seed(0), b = rand_seed(0), c = rand_seed(1);
    assert_true(a != 0 && b != 0 && c != 0);
    assert_true(a != b && a != c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xorshift),
        cmocka_unit_test(test_unit_interval),
        cmocka_unit_test(test_seeds_differ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
