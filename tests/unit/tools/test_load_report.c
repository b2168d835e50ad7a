/* `ficus load`'s figures (tools/load_report.h): percentiles, the knee, the
 * capacity plan and its file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tools/load_report.h"

static load_run_t run;

static void test_quantiles_within_three_percent(void **state)
{
    (void)state;
    load_hist_t *h = calloc(1, sizeof *h);
    for (uint64_t v = 1; v <= 100000; v++)
        load_hist_record(h, v); /* 1 us .. 100 ms, uniform */
    const double qs[] = {0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < 4; i++) {
        double want = qs[i] * 100000, got = (double)load_hist_quantile(h, qs[i]);
        assert_true(got >= want * 0.999 && got <= want * 1.035);
    }
    assert_int_equal(load_hist_quantile(h, 1.0), 100000);
    assert_int_equal(h->max_us, 100000);
    load_hist_t empty = {0};
    assert_int_equal(load_hist_quantile(&empty, 0.99), 0);
    free(h);
}

static void fill(load_run_t *r, double rate, uint64_t us, uint64_t n, uint64_t errors)
{
    memset(r, 0, sizeof *r);
    r->rate = rate;
    r->seconds = 1;
    r->scheduled = n;
    r->completed = n;
    r->errors = errors;
    for (uint64_t i = 0; i < n; i++)
        load_hist_record(&r->latency, us);
}

/* The highest rate meeting the goal, even when the search went up and down. */
static void test_knee(void **state)
{
    (void)state;
    load_run_t *steps = calloc(5, sizeof *steps);
    fill(&steps[0], 100, 5000, 1000, 0);
    fill(&steps[1], 150, 6000, 1000, 0);
    fill(&steps[2], 225, 90000, 1000, 0); /* p99 over 50 ms */
    fill(&steps[3], 187, 7000, 1000, 1);  /* 0.1% errors: not under */
    fill(&steps[4], 168, 8000, 10000, 5); /* 0.05% */
    assert_int_equal(load_knee(steps, 5, 50000), 4);
    assert_int_equal(load_knee(steps, 2, 1000), -1);
    assert_true(load_run_ok(&steps[0], 0)); /* no goal: only errors count */
    free(steps);
}

static void test_achieved_and_errors(void **state)
{
    (void)state;
    fill(&run, 1000, 100, 2000, 0);
    run.seconds = 2.0;
    run.unsent = 10;
    run.scheduled = 2010;
    assert_true(load_run_achieved(&run) == 1000.0);
    assert_true(load_run_error_ratio(&run) > 0.0049 && load_run_error_ratio(&run) < 0.005);
}

/* Seed 001's table: 1000/2000/4000/8000 req/s at 100 per instance. */
static void test_plan_arithmetic(void **state)
{
    (void)state;
    assert_int_equal(load_plan_instances(1000, 100, 0), 10);
    assert_int_equal(load_plan_instances(8000, 100, 0), 80);
    assert_int_equal(load_plan_instances(1000, 140, 0.3), 11); /* 1000 / 98 = 10.2 */
    assert_int_equal(load_plan_instances(980, 140, 0.3), 10);  /* exactly 10 */
    assert_int_equal(load_plan_instances(1, 140, 0.3), 1);
    assert_int_equal(load_plan_instances(1000, 0, 0.3), 0);
}

static char *write_temp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_load_plan_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_plan_file(void **state)
{
    (void)state;
    load_event_t *ev;
    size_t n;
    char err[256];
    char *p = write_temp("- {name: normal, peak: 1000}\n- name: new year\n  peak: 8000.5\n");
    assert_int_equal(load_plan_read(p, &ev, &n, err, sizeof err), 0);
    unlink(p);
    assert_int_equal(n, 2);
    assert_string_equal(ev[1].name, "new year");
    assert_true(ev[1].peak == 8000.5);
    free(ev);
    static const struct {
        const char *text, *want;
    } bad[] = {{"- {name: x, peak: 0}\n", ":1:19: peak"},
               {"- {name: x}\n", ":1:3: an event needs"},
               {"- {name: x, peak: 1, when: now}\n", ":1:22: unknown key"},
               {"{name: x}\n", ":1:1: expected a list"},
               {"- [1, 2]\n", ":1:3: expected a mapping"},
               {"- {name: x, peak: 1\n", "did not find expected"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = write_temp(bad[i].text);
        assert_int_equal(load_plan_read(p, &ev, &n, err, sizeof err), -1);
        unlink(p);
        if (!strstr(err, bad[i].want))
            fail_msg("%s: got %s", bad[i].text, err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles_within_three_percent),
        cmocka_unit_test(test_knee),
        cmocka_unit_test(test_achieved_and_errors),
        cmocka_unit_test(test_plan_arithmetic),
        cmocka_unit_test(test_plan_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
