/* Hedging's delay and cap (policy/hedge.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "policy/hedge.h"

static void test_fixed_delay(void **state)
{
    (void)state;
    config_hedge_t c = {.after_ms = 250, .max_percent = 5};
    hedge_t *h = hedge_new(&c, 2);
    assert_non_null(h);
    assert_int_equal(hedge_delay_ms(h, 0, 1000), 250);
    assert_int_equal(hedge_delay_ms(h, 1, 1000), 250);
    hedge_free(h);
}

/* Over many requests, hedges stay at max_percent of them; the bucket
 * starts full so the first slow request may hedge. */
static void test_cap_share(void **state)
{
    (void)state;
    config_hedge_t c = {.after_ms = 10, .max_percent = 5};
    hedge_t *h = hedge_new(&c, 1);
    unsigned taken = 0;
    for (int i = 0; i < 1000; i++) {
        hedge_note_request(h);
        taken += hedge_take(h);
    }
    /* 1000 x 5% = 50, plus the full bucket at the start. */
    assert_in_range(taken, 50, 51);
    hedge_t *g = hedge_new(&c, 1);
    hedge_note_request(g);
    assert_true(hedge_take(g));
    hedge_note_request(g);
    assert_false(hedge_take(g)); /* no burst beyond one */
    hedge_free(g);
    hedge_free(h);
}

static void test_cap_hundred_percent(void **state)
{
    (void)state;
    config_hedge_t c = {.after_ms = 10, .max_percent = 100};
    hedge_t *h = hedge_new(&c, 1);
    for (int i = 0; i < 50; i++) {
        hedge_note_request(h);
        assert_true(hedge_take(h));
    }
    hedge_free(h);
}

static void test_slots(void **state)
{
    (void)state;
    size_t prev = 0;
    for (uint64_t v = 0; v < 70000000; v = v * 9 / 8 + 1) {
        size_t s = hedge_slot(v);
        assert_true(s >= prev);
        assert_true(s < HEDGE_SLOTS);
        if (s < HEDGE_SLOTS - 1) {
            assert_true(v < hedge_slot_upper_us(s));
            /* at most an eighth above */
            assert_true(hedge_slot_upper_us(s) <= v + v / 8 + 1);
        }
        prev = s;
    }
}

/* p95 of 100 samples 1..100 ms is about 95 ms (within a slot's eighth). */
static void test_learned_p95(void **state)
{
    (void)state;
    config_hedge_t c = {.after_percentile = 95, .max_percent = 5};
    hedge_t *h = hedge_new(&c, 2);
    uint64_t now = 100000;
    assert_int_equal(hedge_delay_ms(h, 0, now), 0); /* nothing learned yet */
    for (uint64_t i = 1; i <= 100; i++)
        hedge_record(h, 0, now, i * 1000);
    uint64_t d = hedge_delay_ms(h, 0, now + 1000);
    assert_in_range(d, 95, 108);
    assert_int_equal(hedge_delay_ms(h, 1, now + 1000), 0); /* the other backend's own */
    hedge_free(h);
}

static void test_learned_too_few_then_forgotten(void **state)
{
    (void)state;
    config_hedge_t c = {.after_percentile = 99, .max_percent = 5};
    hedge_t *h = hedge_new(&c, 1);
    uint64_t now = 1000000;
    for (int i = 0; i < HEDGE_MIN_SAMPLES - 1; i++)
        hedge_record(h, 0, now, 5000);
    assert_int_equal(hedge_delay_ms(h, 0, now), 0);
    hedge_record(h, 0, now, 5000);
    assert_int_equal(hedge_delay_ms(h, 0, now + 1000), 6); /* 5 ms's slot, rounded up */
    /* cached within the second */
    for (int i = 0; i < 100; i++)
        hedge_record(h, 0, now + 1000, 200000);
    assert_int_equal(hedge_delay_ms(h, 0, now + 1500), 6);
    assert_in_range(hedge_delay_ms(h, 0, now + 2000), 200, 225);
    /* a minute later the windows are stale: nothing to go by */
    assert_int_equal(hedge_delay_ms(h, 0, now + 2000 + 61000), 0);
    hedge_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_delay),
        cmocka_unit_test(test_cap_share),
        cmocka_unit_test(test_cap_hundred_percent),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_learned_p95),
        cmocka_unit_test(test_learned_too_few_then_forgotten),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
