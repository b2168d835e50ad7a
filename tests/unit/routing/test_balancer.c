/* Backend and target choice (routing/balancer.h): exact smooth weighted
 * round robin windows, sticky hashing, and the target policies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/hash.h"
#include "routing/balancer.h"

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Every window of sum/gcd consecutive picks, over several periods, gives
 * each index exactly weight/gcd picks; weight 0 is never picked. */
static void check_swrr_windows(const uint32_t *w, size_t n)
{
    uint64_t sum = 0, g = 0;
    for (size_t i = 0; i < n; i++) {
        sum += w[i];
        g = gcd(g, w[i]);
    }
    size_t period = (size_t)(sum / g);
    size_t total = period * 4 + 7;
    int64_t cur[8] = {0};
    size_t picks[4096];
    assert_true(total <= sizeof picks / sizeof picks[0]);
    for (size_t k = 0; k < total; k++) {
        picks[k] = balancer_swrr_pick(cur, w, n);
        assert_true(picks[k] < n);
        assert_int_not_equal(w[picks[k]], 0);
    }
    for (size_t start = 0; start + period <= total; start++) {
        size_t count[8] = {0};
        for (size_t k = start; k < start + period; k++)
            count[picks[k]]++;
        for (size_t i = 0; i < n; i++)
            assert_int_equal(count[i], w[i] / g);
    }
}

static void test_swrr_windows(void **state)
{
    (void)state;
    static const uint32_t t1[] = {90, 10}, t2[] = {50, 50}, t3[] = {1, 2, 3}, t4[] = {0, 5},
                          t5[] = {100, 0, 0}, t6[] = {7, 3}, t7[] = {5, 0, 1, 3},
                          t8[] = {1, 1, 1, 1, 1, 1, 1, 1};
    check_swrr_windows(t1, 2);
    check_swrr_windows(t2, 2);
    check_swrr_windows(t3, 3);
    check_swrr_windows(t4, 2);
    check_swrr_windows(t5, 3);
    check_swrr_windows(t6, 2);
    check_swrr_windows(t7, 4);
    check_swrr_windows(t8, 8);
}

static void test_swrr_90_10_interleaved(void **state)
{
    (void)state;
    /* Nine then one, not ninety then ten: the canary appears once in every
     * ten picks, and never twice in a row. */
    const uint32_t w[] = {90, 10};
    int64_t cur[2] = {0};
    size_t last_canary = SIZE_MAX;
    for (size_t k = 0; k < 1000; k++) {
        if (balancer_swrr_pick(cur, w, 2) == 1) {
            if (last_canary != SIZE_MAX)
                assert_int_equal(k - last_canary, 10);
            last_canary = k;
        }
    }
    assert_true(last_canary != SIZE_MAX);
}

static void test_swrr_ties_lowest_index(void **state)
{
    (void)state;
    const uint32_t w[] = {1, 1, 1};
    int64_t cur[3] = {0};
    assert_int_equal(balancer_swrr_pick(cur, w, 3), 0);
    assert_int_equal(balancer_swrr_pick(cur, w, 3), 1);
    assert_int_equal(balancer_swrr_pick(cur, w, 3), 2);
    assert_int_equal(balancer_swrr_pick(cur, w, 3), 0);
}

static void test_swrr_all_zero(void **state)
{
    (void)state;
    const uint32_t w[] = {0, 0};
    int64_t cur[2] = {0};
    assert_int_equal(balancer_swrr_pick(cur, w, 2), SIZE_MAX);
    assert_int_equal(balancer_swrr_pick(cur, w, 0), SIZE_MAX);
    assert_int_equal(cur[0], 0);
    assert_int_equal(cur[1], 0);
}

static void test_hash_pick_ranges(void **state)
{
    (void)state;
    const uint32_t w[] = {90, 0, 10};
    /* hash % 100: [0,90) -> 0, [90,100) -> 2; index 1 owns no range. */
    assert_int_equal(balancer_hash_pick(w, 3, 0), 0);
    assert_int_equal(balancer_hash_pick(w, 3, 89), 0);
    assert_int_equal(balancer_hash_pick(w, 3, 90), 2);
    assert_int_equal(balancer_hash_pick(w, 3, 99), 2);
    assert_int_equal(balancer_hash_pick(w, 3, 100), 0);
    assert_int_equal(balancer_hash_pick(w, 3, 190), 2);
    const uint32_t z[] = {0, 0};
    assert_int_equal(balancer_hash_pick(z, 2, 12345), SIZE_MAX);
}

static void test_hash_pick_sticky_and_spread(void **state)
{
    (void)state;
    const uint32_t w[] = {90, 10};
    size_t count[2] = {0};
    char key[32];
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof key, "user-%d", i);
        uint64_t h = hash_bytes(key, (size_t)n);
        size_t a = balancer_hash_pick(w, 2, h);
        assert_int_equal(balancer_hash_pick(w, 2, hash_bytes(key, (size_t)n)), a);
        count[a]++;
    }
    /* Loose bounds: a good hash spreads sequential ids close to 90/10. */
    assert_in_range(count[1], 800, 1200);
}

static void test_pick_none_eligible(void **state)
{
    (void)state;
    balancer_targets_t st = {0, 42};
    const uint8_t none[3] = {0, 0, 0};
    for (int k = BALANCE_ROUND_ROBIN; k <= BALANCE_RANDOM; k++)
        assert_int_equal(balancer_pick_target((config_balance_t)k, &st, none, NULL, 3), SIZE_MAX);
    assert_int_equal(balancer_pick_target(BALANCE_ROUND_ROBIN, &st, none, NULL, 0), SIZE_MAX);
}

static void test_pick_round_robin(void **state)
{
    (void)state;
    balancer_targets_t st = {0, 42};
    const uint8_t el[4] = {1, 0, 1, 1};
    size_t seq[8];
    for (int i = 0; i < 8; i++)
        seq[i] = balancer_pick_target(BALANCE_ROUND_ROBIN, &st, el, NULL, 4);
    const size_t want[8] = {0, 2, 3, 0, 2, 3, 0, 2};
    for (int i = 0; i < 8; i++)
        assert_int_equal(seq[i], want[i]);
    /* A target coming back is reached on its turn. */
    const uint8_t all[4] = {1, 1, 1, 1};
    assert_int_equal(balancer_pick_target(BALANCE_ROUND_ROBIN, &st, all, NULL, 4), 3);
    assert_int_equal(balancer_pick_target(BALANCE_ROUND_ROBIN, &st, all, NULL, 4), 0);
    assert_int_equal(balancer_pick_target(BALANCE_ROUND_ROBIN, &st, all, NULL, 4), 1);
}

static void test_pick_single_eligible(void **state)
{
    (void)state;
    balancer_targets_t st = {0, 7};
    const uint8_t el[5] = {0, 0, 0, 1, 0};
    const uint32_t inflight[5] = {0, 0, 0, 1000, 0};
    for (int k = BALANCE_ROUND_ROBIN; k <= BALANCE_RANDOM; k++)
        for (int i = 0; i < 20; i++)
            assert_int_equal(balancer_pick_target((config_balance_t)k, &st, el, inflight, 5), 3);
}

static void test_pick_least_request(void **state)
{
    (void)state;
    balancer_targets_t st = {0, 12345};
    const uint8_t el[4] = {1, 1, 1, 0};
    /* Target 3 (idle but ineligible) is never chosen; target 0 (most
     * loaded) never wins a pair; with two candidates out of three, target
     * 1 (least loaded) wins whenever it is drawn: about 2/3 of the time. */
    const uint32_t inflight[4] = {50, 1, 10, 0};
    size_t count[4] = {0};
    for (int i = 0; i < 3000; i++) {
        size_t p = balancer_pick_target(BALANCE_LEAST_REQUEST, &st, el, inflight, 4);
        assert_true(p < 3);
        count[p]++;
    }
    assert_int_equal(count[0], 0);
    assert_int_equal(count[3], 0);
    assert_in_range(count[1], 1800, 2200);
    assert_int_equal(count[1] + count[2], 3000);
}

static void test_pick_least_request_two_alternate_on_tie(void **state)
{
    (void)state;
    /* Two eligible and idle: both are always the candidates, and the tie
     * goes by the cursor, so the two alternate. */
    balancer_targets_t st = {0, 99};
    const uint8_t el[3] = {1, 0, 1};
    const uint32_t inflight[3] = {0, 0, 0};
    size_t prev = balancer_pick_target(BALANCE_LEAST_REQUEST, &st, el, inflight, 3);
    for (int i = 0; i < 50; i++) {
        size_t p = balancer_pick_target(BALANCE_LEAST_REQUEST, &st, el, inflight, 3);
        assert_true(p == 0 || p == 2);
        assert_int_not_equal(p, prev);
        prev = p;
    }
    /* With two, the less loaded one always wins. */
    const uint32_t busy[3] = {5, 0, 4};
    for (int i = 0; i < 50; i++)
        assert_int_equal(balancer_pick_target(BALANCE_LEAST_REQUEST, &st, el, busy, 3), 2);
}

static void test_pick_random_uniform(void **state)
{
    (void)state;
    balancer_targets_t st = {0, 2024};
    const uint8_t el[5] = {1, 1, 0, 1, 1};
    size_t count[5] = {0};
    for (int i = 0; i < 8000; i++) {
        size_t p = balancer_pick_target(BALANCE_RANDOM, &st, el, NULL, 5);
        assert_true(p < 5);
        count[p]++;
    }
    assert_int_equal(count[2], 0);
    for (int i = 0; i < 5; i++) {
        if (i != 2)
            assert_in_range(count[i], 1700, 2300);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swrr_windows),
        cmocka_unit_test(test_swrr_90_10_interleaved),
        cmocka_unit_test(test_swrr_ties_lowest_index),
        cmocka_unit_test(test_swrr_all_zero),
        cmocka_unit_test(test_hash_pick_ranges),
        cmocka_unit_test(test_hash_pick_sticky_and_spread),
        cmocka_unit_test(test_pick_none_eligible),
        cmocka_unit_test(test_pick_round_robin),
        cmocka_unit_test(test_pick_single_eligible),
        cmocka_unit_test(test_pick_least_request),
        cmocka_unit_test(test_pick_least_request_two_alternate_on_tie),
        cmocka_unit_test(test_pick_random_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
