/* The reversible reload's judgement (policy/reload_judge.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/reload_judge.h"

static const config_reload_t rule = {.canary_percent = 10,
                                     .bake_ms = 30000,
                                     .max_error_rate_increase = 2.0,
                                     .max_latency_increase = 1.5,
                                     .min_requests = 100};

/* Counters for n workers, counting (as during a trial). */
static reload_figures_t *armed(size_t n)
{
    reload_figures_t *f = reload_figures_new(n);
    assert_non_null(f);
    reload_figures_arm(f, true);
    return f;
}

/* n requests of which `errors` 5xx, each taking us microseconds, on one
 * worker of f. */
static void feed(reload_figures_t *f, unsigned worker, int n, int errors, uint64_t us)
{
    for (int i = 0; i < n; i++)
        reload_figures_record(f, worker, i < errors ? 503 : 200, us);
}

static void sides(reload_figures_t *old_f, reload_figures_t *new_f, reload_side_t *o,
                  reload_side_t *n)
{
    reload_figures_sum(old_f, o);
    reload_figures_sum(new_f, n);
}

static void test_error_rate_breach_reverts_at_once(void **state)
{
    (void)state;
    reload_figures_t *o = armed(2), *n = armed(2);
    feed(o, 0, 500, 5, 1000);  /* 1% */
    feed(o, 1, 500, 5, 1000);  /* 1% */
    feed(n, 1, 100, 10, 1000); /* 10% */
    reload_side_t a, b;
    sides(o, n, &a, &b);
    reload_judgement_t j;
    reload_judge(&rule, &a, &b, false, &j);
    assert_int_equal(j.verdict, RELOAD_REVERT);
    assert_int_equal(j.new_requests, 100);
    assert_int_equal(j.old_requests, 1000);
    assert_non_null(strstr(j.reason, "5xx rate 10.00%"));
    reload_figures_free(o);
    reload_figures_free(n);
}

/* Above twice the old rate but at most 1%: noise, not a breach; and
 * nothing is judged below min_requests on either side. */
static void test_floors_and_min_requests(void **state)
{
    (void)state;
    reload_figures_t *o = armed(1), *n = armed(1);
    feed(o, 0, 1000, 0, 1000);
    feed(n, 0, 200, 2, 1000); /* 1%: > 2 x 0%, but not above 1% */
    reload_side_t a, b;
    sides(o, n, &a, &b);
    reload_judgement_t j;
    reload_judge(&rule, &a, &b, false, &j);
    assert_int_equal(j.verdict, RELOAD_WAIT);
    reload_figures_t *few = armed(1);
    feed(few, 0, 99, 99, 1000); /* all failing, but 99 < min_requests */
    reload_figures_sum(few, &b);
    reload_judge(&rule, &a, &b, false, &j);
    assert_int_equal(j.verdict, RELOAD_WAIT);
    reload_judge(&rule, &a, &b, true, &j);
    assert_int_equal(j.verdict, RELOAD_PROMOTE);
    assert_non_null(strstr(j.reason, "too few requests"));
    reload_figures_free(few);
    reload_figures_free(o);
    reload_figures_free(n);
}

static void test_latency_breach_needs_factor_and_floor(void **state)
{
    (void)state;
    reload_figures_t *o = armed(1), *n = armed(1);
    feed(o, 0, 1000, 0, 1000); /* 1 ms */
    feed(n, 0, 200, 0, 3000);  /* 3 ms: 3x, but only 2 ms more */
    reload_side_t a, b;
    sides(o, n, &a, &b);
    reload_judgement_t j;
    reload_judge(&rule, &a, &b, false, &j);
    assert_int_equal(j.verdict, RELOAD_WAIT);
    feed(n, 0, 200, 0, 40000); /* half the new side at 40 ms */
    reload_figures_sum(n, &b);
    reload_judge(&rule, &a, &b, false, &j);
    assert_int_equal(j.verdict, RELOAD_REVERT);
    assert_true(j.new_p99_us >= 40000 && j.new_p99_us <= 48000);
    assert_non_null(strstr(j.reason, "p99"));
    reload_figures_free(o);
    reload_figures_free(n);
}

static void test_within_limits_promotes_after_the_bake(void **state)
{
    (void)state;
    reload_figures_t *o = armed(1), *n = armed(1);
    feed(o, 0, 1000, 10, 2000);
    feed(n, 0, 150, 2, 2500);
    reload_side_t a, b;
    sides(o, n, &a, &b);
    reload_judgement_t j;
    reload_judge(&rule, &a, &b, false, &j);
    assert_int_equal(j.verdict, RELOAD_WAIT);
    reload_judge(&rule, &a, &b, true, &j);
    assert_int_equal(j.verdict, RELOAD_PROMOTE);
    assert_non_null(strstr(j.reason, "within limits"));
    reload_figures_free(o);
    reload_figures_free(n);
}

/* Counts since a moment: what came before the trial is not judged. */
static void test_since(void **state)
{
    (void)state;
    reload_figures_t *o = armed(1);
    feed(o, 0, 1000, 1000, 1000); /* a bad past */
    reload_side_t base, now, d;
    reload_figures_sum(o, &base);
    feed(o, 0, 300, 0, 1000);
    reload_figures_sum(o, &now);
    reload_side_since(&now, &base, &d);
    assert_int_equal(d.requests, 300);
    assert_int_equal(d.errors, 0);
    assert_int_equal(reload_side_p99_us(&d) >= 1000, 1);
    reload_figures_free(o);
}

/* Disarmed (no trial), nothing is counted; arming again keeps what was. */
static void test_disarmed_counts_nothing(void **state)
{
    (void)state;
    reload_figures_t *f = reload_figures_new(2);
    assert_non_null(f);
    feed(f, 0, 50, 50, 1000);
    reload_side_t s;
    reload_figures_sum(f, &s);
    assert_int_equal(s.requests, 0);
    assert_int_equal(reload_side_p99_us(&s), 0);
    reload_figures_arm(f, true);
    feed(f, 1, 40, 4, 1000);
    reload_figures_arm(f, false);
    feed(f, 1, 40, 40, 1000);
    reload_figures_sum(f, &s);
    assert_int_equal(s.requests, 40);
    assert_int_equal(s.errors, 4);
    reload_figures_free(f);
    reload_figures_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_rate_breach_reverts_at_once),
        cmocka_unit_test(test_floors_and_min_requests),
        cmocka_unit_test(test_latency_breach_needs_factor_and_floor),
        cmocka_unit_test(test_within_limits_promotes_after_the_bake),
        cmocka_unit_test(test_since),
        cmocka_unit_test(test_disarmed_counts_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
