/* Rollout state machine (policy/rollout.h), on a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "policy/rollout.h"

#define T0 1000000ull
#define SEC 1000ull

static rollout_config_t base_config(void)
{
    rollout_config_t c = {
        .canary_backend = 1,
        .steps = {10, 50, 100},
        .n_steps = 3,
        .interval_ms = 10 * SEC,
        .min_requests = 20,
        .max_error_rate = 0.01,
        .max_latency_ratio = 1.5,
        .max_mismatch_rate = -1,
        .on_failure = ROLLOUT_ON_FAILURE_ROLLBACK,
    };
    return c;
}

typedef struct {
    uint32_t ok, failed, masked; /* canary tries per second */
    uint64_t canary_us;
    uint32_t primary;
    uint64_t primary_us;
    uint32_t match, mismatch;
} traffic_t;

static const traffic_t healthy = {.ok = 5, .canary_us = 10000, .primary = 5, .primary_us = 10000};

/* One second of traffic at t, then a tick in mode at its end; returns what
 * the tick returned. */
static int second_mode(rollout_t *r, uint64_t *t, const traffic_t *tr, rollout_tick_mode_t mode)
{
    for (uint32_t i = 0; i < tr->ok; i++)
        rollout_record_canary(r, *t, true, false, tr->canary_us);
    for (uint32_t i = 0; i < tr->failed; i++)
        rollout_record_canary(r, *t, false, false, tr->canary_us);
    for (uint32_t i = 0; i < tr->masked; i++)
        rollout_record_canary(r, *t, false, true, tr->canary_us);
    for (uint32_t i = 0; i < tr->primary; i++)
        rollout_record_primary(r, *t, tr->primary_us);
    for (uint32_t i = 0; i < tr->match; i++)
        rollout_record_shadow(r, *t, true);
    for (uint32_t i = 0; i < tr->mismatch; i++)
        rollout_record_shadow(r, *t, false);
    *t += SEC;
    return rollout_tick_mode(r, *t, NULL, mode);
}

static int second(rollout_t *r, uint64_t *t, const traffic_t *tr)
{
    return second_mode(r, t, tr, ROLLOUT_TICK_ALL);
}

static void run_seconds(rollout_t *r, uint64_t *t, const traffic_t *tr, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        second(r, t, tr);
}

static rollout_snapshot_t snap_of(rollout_t *r, uint64_t t)
{
    static rollout_snapshot_t s;
    rollout_snapshot(r, t, &s);
    return s;
}

static const rollout_transition_t *last_transition(rollout_t *r, uint64_t t)
{
    static rollout_snapshot_t s;
    rollout_snapshot(r, t, &s);
    assert_true(s.n_history > 0);
    static rollout_transition_t last;
    last = s.history[s.n_history - 1];
    return &last;
}

/* n quiet seconds of tr (the step holds: too few tries to judge), then one
 * more that breaks a limit: the rollout moves to `to` for `cause`. */
static void expect_breach(rollout_t *r, uint64_t *t, const traffic_t *tr, uint32_t n,
                          rollout_state_t to, rollout_cause_t cause, const char *reason)
{
    run_seconds(r, t, tr, n);
    assert_int_equal(snap_of(r, *t).state, ROLLOUT_STEP);
    assert_int_equal(second(r, t, tr), 1);
    assert_int_equal(snap_of(r, *t).state, to);
    const rollout_transition_t *last = last_transition(r, *t);
    assert_int_equal(last->cause, cause);
    if (!strstr(last->reason, reason))
        fail_msg("reason \"%s\" lacks \"%s\"", last->reason, reason);
}

/* A rollout started (pending -> step 1) at T0. */
static rollout_t *started(const rollout_config_t *c, uint64_t *t)
{
    *t = T0;
    rollout_t *r = rollout_new(c, *t);
    assert_non_null(r);
    assert_int_equal(rollout_weight_percent(r), 0);
    assert_int_equal(snap_of(r, *t).state, ROLLOUT_PENDING);
    assert_int_equal(rollout_tick(r, *t), 1);
    assert_int_equal(snap_of(r, *t).state, ROLLOUT_STEP);
    assert_int_equal(rollout_weight_percent(r), 10);
    return r;
}

static void test_config_check(void **state)
{
    (void)state;
    char err[128];
    rollout_config_t c = base_config();
    assert_int_equal(rollout_config_check(&c, err, sizeof err), 0);
    c.steps[1] = 5;
    assert_int_equal(rollout_config_check(&c, err, sizeof err), FE_INVAL);
    assert_non_null(strstr(err, "ascending"));
    c = base_config();
    c.n_steps = 0;
    assert_int_equal(rollout_config_check(&c, err, sizeof err), FE_INVAL);
    assert_null(rollout_new(&c, T0));
    c = base_config();
    c.interval_ms = 0;
    assert_int_equal(rollout_config_check(&c, NULL, 0), FE_INVAL);
    c = base_config();
    c.max_error_rate = 2;
    assert_int_equal(rollout_config_check(&c, err, sizeof err), FE_INVAL);
    c = base_config();
    c.steps[2] = 101;
    assert_int_equal(rollout_config_check(&c, err, sizeof err), FE_INVAL);
    rollout_free(NULL);
}

static void test_latency_slots(void **state)
{
    (void)state;
    for (uint64_t us = 0; us < 8; us++)
        assert_int_equal(rollout_latency_slot(us), us);
    uint32_t prev = 0;
    for (uint64_t us = 1; us < (1ull << 33); us = us * 3 / 2 + 1) {
        uint32_t s = rollout_latency_slot(us);
        assert_true(s >= prev);
        assert_true(s < ROLLOUT_HIST_SLOTS);
        assert_true(rollout_slot_upper_us(s) >= us || s == ROLLOUT_HIST_SLOTS - 1);
        /* Relative error of a slot is at most 1/8. */
        if (us >= 8 && s < ROLLOUT_HIST_SLOTS - 1)
            assert_true(rollout_slot_upper_us(s) - us <= us / 8);
        prev = s;
    }
    assert_int_equal(rollout_latency_slot(UINT64_MAX), ROLLOUT_HIST_SLOTS - 1);
}

static void test_promotion_through_all_steps(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    run_seconds(r, &t, &healthy, 9);
    assert_int_equal(rollout_weight_percent(r), 10);
    assert_int_equal(second(r, &t, &healthy), 1);
    assert_int_equal(rollout_weight_percent(r), 50);
    assert_int_equal(last_transition(r, t)->cause, ROLLOUT_CAUSE_PROMOTED);
    assert_non_null(strstr(last_transition(r, t)->reason, "promoted: 50 requests"));
    run_seconds(r, &t, &healthy, 10);
    /* The last step is 100: reaching it is the promotion. */
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_PROMOTED);
    assert_int_equal(s.weight_percent, 100);
    assert_int_equal(rollout_weight_percent(r), 100);
    assert_int_equal(s.steps[0].requests, 50);
    assert_int_equal(s.steps[1].requests, 50);
    assert_true(s.steps[0].canary_p99_ms > 9 && s.steps[0].canary_p99_ms < 11.5);
    assert_true(s.steps[0].latency_ratio > 0.99 && s.steps[0].latency_ratio < 1.01);
    assert_int_equal(s.n_history, 3);
    /* Promoted is final: nothing moves any more. */
    assert_int_equal(second(r, &t, &(traffic_t){.failed = 50}), 0);
    assert_int_equal(rollout_weight_percent(r), 100);
    rollout_free(r);
}

static void test_last_step_below_100(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    c.steps[2] = 75;
    uint64_t t;
    rollout_t *r = started(&c, &t);
    run_seconds(r, &t, &healthy, 20);
    assert_int_equal(rollout_weight_percent(r), 75);
    run_seconds(r, &t, &healthy, 10);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_PROMOTED);
    assert_int_equal(rollout_weight_percent(r), 100);
    rollout_free(r);
}

static void test_extension_without_min_requests(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    traffic_t thin = healthy;
    thin.ok = 1; /* 10 per interval < 20 */
    run_seconds(r, &t, &thin, 10);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_STEP);
    assert_int_equal(s.step, 0);
    assert_int_equal(s.extensions, 1);
    run_seconds(r, &t, &thin, 10);
    assert_int_equal(snap_of(r, t).extensions, 2);
    assert_int_equal(rollout_weight_percent(r), 10);
    /* Enough traffic: promoted at the end of the extended interval. */
    run_seconds(r, &t, &healthy, 10);
    assert_int_equal(rollout_weight_percent(r), 50);
    rollout_free(r);
}

static void test_rollback_on_error_rate(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    run_seconds(r, &t, &healthy, 2);
    traffic_t bad = healthy;
    bad.failed = 1; /* 1 in 6: the first failure breaks the limit once judged */
    bad.ok = 4;
    expect_breach(r, &t, &bad, 1, ROLLOUT_ROLLED_BACK, ROLLOUT_CAUSE_ERROR_RATE,
                  "error_rate 10.00% > 1.00% (2 of 20, 0 masked)");
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.weight_percent, 0);
    assert_int_equal(rollout_weight_percent(r), 0);
    assert_int_equal(s.steps[0].errors, 2);
    rollout_free(r);
}

static void test_rollback_on_masked_failures_only(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    traffic_t masked = healthy;
    masked.masked = 1;
    expect_breach(r, &t, &masked, 3, ROLLOUT_ROLLED_BACK, ROLLOUT_CAUSE_ERROR_RATE,
                  "(4 of 24, 4 masked)");
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.steps[0].masked, 4);
    assert_int_equal(s.steps[0].errors, 4);
    rollout_free(r);
}

static void test_pause_on_failure(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    c.on_failure = ROLLOUT_ON_FAILURE_PAUSE;
    uint64_t t;
    rollout_t *r = started(&c, &t);
    run_seconds(r, &t, &healthy, 10);
    assert_int_equal(rollout_weight_percent(r), 50);
    traffic_t bad = healthy;
    bad.failed = 5;
    run_seconds(r, &t, &bad, 2);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_PAUSED);
    assert_int_equal(s.paused_from, ROLLOUT_STEP);
    assert_int_equal(s.step, 1);
    assert_int_equal(rollout_weight_percent(r), 50); /* held, not rolled back */
    assert_non_null(strstr(last_transition(r, t)->reason, "paused: error_rate"));
    /* Paused: no automatic move whatever the evidence. */
    run_seconds(r, &t, &healthy, 30);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_PAUSED);
    rollout_free(r);
}

static void test_latency_ratio_breach(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    traffic_t slow = healthy;
    slow.canary_us = 23000; /* 2.3x the primary */
    expect_breach(r, &t, &slow, 3, ROLLOUT_ROLLED_BACK, ROLLOUT_CAUSE_LATENCY_RATIO,
                  "latency_ratio 2.");
    assert_non_null(strstr(last_transition(r, t)->reason, "> 1.50"));
    rollout_free(r);
}

static void test_mismatch_rate(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    c.max_mismatch_rate = 0.05;
    uint64_t t = T0;
    rollout_t *r = rollout_new(&c, t);
    assert_non_null(r);
    /* Required before step 1: pending waits for comparisons. */
    assert_int_equal(rollout_tick(r, t), 0);
    traffic_t shadow = {.match = 5};
    run_seconds(r, &t, &shadow, 9);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_PENDING);
    assert_int_equal(rollout_weight_percent(r), 0);
    second(r, &t, &shadow);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_STEP);
    assert_int_equal(rollout_weight_percent(r), 10);
    assert_int_equal(last_transition(r, t)->cause, ROLLOUT_CAUSE_START);
    /* At each step: canary fine but the copies disagree. */
    traffic_t both = healthy;
    both.match = 4;
    both.mismatch = 1;
    expect_breach(r, &t, &both, 3, ROLLOUT_ROLLED_BACK, ROLLOUT_CAUSE_MISMATCH_RATE,
                  "mismatch_rate 20.00% > 5.00%");
    rollout_free(r);
}

static void test_mismatch_in_pending(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    c.max_mismatch_rate = 0.05;
    c.on_failure = ROLLOUT_ON_FAILURE_PAUSE;
    uint64_t t = T0;
    rollout_t *r = rollout_new(&c, t);
    run_seconds(r, &t, &(traffic_t){.match = 3, .mismatch = 3}, 4);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_PAUSED);
    assert_int_equal(s.paused_from, ROLLOUT_PENDING);
    assert_int_equal(rollout_weight_percent(r), 0);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESUME, t), 0);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_PENDING);
    rollout_free(r);
}

static void test_manual_actions(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t = T0;
    rollout_t *r = rollout_new(&c, t);
    /* pending */
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESUME, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PAUSE, t), 0);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_PAUSED);
    /* paused */
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PAUSE, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PROMOTE, t), 0);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_STEP);
    assert_int_equal(rollout_weight_percent(r), 10);
    /* step */
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESUME, t), FE_INVAL);
    rollout_record_canary(r, t, true, false, 500);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PROMOTE, t), 0);
    assert_int_equal(rollout_weight_percent(r), 50);
    assert_int_equal(snap_of(r, t).steps[0].requests, 1);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PAUSE, t), 0);
    assert_int_equal(rollout_weight_percent(r), 50);
    t += 5 * SEC;
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESUME, t), 0);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_STEP);
    assert_int_equal(s.step, 1);
    assert_int_equal(s.step_started_ms, t); /* judged afresh */
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PROMOTE, t), 0);
    /* promoted */
    assert_int_equal(snap_of(r, t).state, ROLLOUT_PROMOTED);
    assert_int_equal(rollout_weight_percent(r), 100);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PROMOTE, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PAUSE, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESUME, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_ROLLBACK, t), 0);
    /* rolled back */
    assert_int_equal(rollout_weight_percent(r), 0);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_ROLLBACK, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PROMOTE, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PAUSE, t), FE_INVAL);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESUME, t), FE_INVAL);
    assert_int_equal(rollout_action(r, (rollout_action_t)99, t), FE_INVAL);
    const rollout_transition_t *tr = last_transition(r, t);
    assert_int_equal(tr->cause, ROLLOUT_CAUSE_MANUAL);
    assert_string_equal(tr->reason, "manual rollback");
    assert_int_equal(tr->from, ROLLOUT_PROMOTED);
    assert_int_equal(tr->to, ROLLOUT_ROLLED_BACK);
    rollout_free(r);
}

static void test_restart(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    run_seconds(r, &t, &healthy, 10);
    traffic_t bad = healthy;
    bad.failed = 5;
    run_seconds(r, &t, &bad, 3);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_ROLLED_BACK);
    /* Restart in the same second as more failures: they are not the new run's. */
    rollout_record_canary(r, t, false, false, 1000);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESTART, t), 0);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_PENDING);
    assert_int_equal(s.current.requests, 0);
    assert_int_equal(s.steps[0].requests, 0);
    assert_int_equal(rollout_tick(r, t), 1);
    assert_int_equal(rollout_weight_percent(r), 10);
    run_seconds(r, &t, &healthy, 10);
    assert_int_equal(rollout_weight_percent(r), 50);
    /* Restart from any state, also promoted. */
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PROMOTE, t), 0);
    assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESTART, t), 0);
    assert_int_equal(rollout_weight_percent(r), 0);
    rollout_free(r);
}

static void test_adopt(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *old = started(&c, &t);
    run_seconds(old, &t, &healthy, 12); /* step 2 (50%), 2 s in */
    rollout_t *fresh = rollout_new(&c, t);
    assert_int_equal(rollout_adopt(fresh, old), 0);
    rollout_snapshot_t a = snap_of(old, t), b = snap_of(fresh, t);
    assert_int_equal(b.state, ROLLOUT_STEP);
    assert_int_equal(b.step, 1);
    assert_int_equal(rollout_weight_percent(fresh), 50);
    assert_int_equal(b.step_started_ms, a.step_started_ms);
    assert_int_equal(b.current.requests, a.current.requests);
    assert_int_equal(b.n_history, a.n_history);
    /* The step goes on where it was: promoted 8 s later, not 10. */
    run_seconds(fresh, &t, &healthy, 8);
    assert_int_equal(snap_of(fresh, t).state, ROLLOUT_PROMOTED);

    /* A changed rollout block starts over. */
    rollout_config_t d = base_config();
    d.max_error_rate = 0.02;
    rollout_t *other = rollout_new(&d, t);
    assert_int_equal(rollout_adopt(other, old), FE_INVAL);
    assert_int_equal(snap_of(other, t).state, ROLLOUT_PENDING);
    assert_int_equal(rollout_adopt(old, old), FE_INVAL);
    rollout_free(other);
    rollout_free(fresh);
    rollout_free(old);
}

static void test_history_bound(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t = T0;
    rollout_t *r = rollout_new(&c, t);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(rollout_action(r, ROLLOUT_ACTION_PAUSE, t), 0);
        assert_int_equal(rollout_action(r, ROLLOUT_ACTION_RESUME, t), 0);
        t += SEC;
    }
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.n_history, ROLLOUT_HISTORY);
    /* Oldest first, the newest last. */
    for (uint32_t i = 1; i < s.n_history; i++)
        assert_true(s.history[i].at_ms >= s.history[i - 1].at_ms);
    assert_int_equal(s.history[ROLLOUT_HISTORY - 1].to, ROLLOUT_PENDING);
    assert_int_equal(s.history[ROLLOUT_HISTORY - 1].at_ms, t - SEC);
    assert_int_equal(s.history[0].at_ms, t - 16 * SEC);
    /* seq numbers go on past the bound, so metrics can count each once. */
    assert_int_equal(s.transitions, 100);
    assert_int_equal(s.history[ROLLOUT_HISTORY - 1].seq, 100);
    assert_int_equal(s.history[0].seq, 100 - ROLLOUT_HISTORY + 1);
    rollout_free(r);
}

static void test_stale_bucket_dropped(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t = T0;
    rollout_t *r = rollout_new(&c, t);
    /* No tick for a minute: the bucket was never prepared. */
    rollout_record_canary(r, t + 60 * SEC, true, false, 100);
    assert_int_equal(snap_of(r, t).dropped_records, 1);
    rollout_record_canary(r, t + 2 * SEC, true, false, 100); /* prepared ahead */
    assert_int_equal(snap_of(r, t).dropped_records, 1);
    /* A clock that jumps far ahead then ticks does not crash or count stale buckets. */
    assert_int_equal(rollout_tick(r, t + 3600 * SEC), 1);
    assert_int_equal(snap_of(r, t + 3600 * SEC).current.requests, 0);
    rollout_free(r);
}

static void test_judge_fleet_counts(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    rollout_counts_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.canary_tries = 15;
    a.canary_hist[rollout_latency_slot(1000)] = 15;
    b.canary_tries = 15;
    b.canary_failures = 1;
    b.canary_hist[rollout_latency_slot(1000)] = 15;
    rollout_cause_t cause;
    char why[ROLLOUT_REASON_BYTES];
    assert_int_equal(rollout_judge(&c, false, &a, &cause, why, sizeof why), 0);
    rollout_counts_add(&a, &b);
    assert_int_equal(rollout_judge(&c, false, &a, &cause, why, sizeof why), -1);
    assert_int_equal(cause, ROLLOUT_CAUSE_ERROR_RATE);
    /* The decision can be driven by a summed fleet window. */
    uint64_t t;
    rollout_t *r = started(&c, &t);
    assert_int_equal(rollout_tick_counts(r, t + SEC, &a), 1);
    assert_int_equal(rollout_weight_percent(r), 0);
    rollout_free(r);
}

/* ---- two workers recording while a ticker ticks ---- */

typedef struct {
    rollout_t *r;
    _Atomic uint64_t *clock;
    uint32_t n;
    double ns_per_record;
} worker_arg_t;

static void test_tick_failures_only_holds_the_step(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t = T0;
    rollout_t *r = rollout_new(&c, t);
    assert_non_null(r);
    /* Pending does not start on its own. */
    assert_int_equal(rollout_tick_mode(r, t, NULL, ROLLOUT_TICK_FAILURES), 0);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_PENDING);
    rollout_free(r);

    r = started(&c, &t);
    /* Three intervals of healthy evidence: no promotion, no extension. */
    for (uint32_t i = 0; i < 30; i++)
        assert_int_equal(second_mode(r, &t, &healthy, ROLLOUT_TICK_FAILURES), 0);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_STEP);
    assert_int_equal(s.step, 0);
    assert_int_equal(s.extensions, 0);
    assert_int_equal(rollout_weight_percent(r), 10);
    /* A broken limit still rolls back. */
    traffic_t bad = healthy;
    bad.failed = 2;
    assert_int_equal(second_mode(r, &t, &bad, ROLLOUT_TICK_FAILURES), 1);
    assert_int_equal(snap_of(r, t).state, ROLLOUT_ROLLED_BACK);
    assert_int_equal(last_transition(r, t)->cause, ROLLOUT_CAUSE_ERROR_RATE);
    assert_int_equal(rollout_weight_percent(r), 0);
    rollout_free(r);
}

static void test_tick_failures_only_pauses(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    c.on_failure = ROLLOUT_ON_FAILURE_PAUSE;
    uint64_t t;
    rollout_t *r = started(&c, &t);
    traffic_t bad = healthy;
    bad.failed = 20;
    assert_int_equal(second_mode(r, &t, &bad, ROLLOUT_TICK_FAILURES), 1);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_PAUSED);
    assert_int_equal(s.weight_percent, 10);
    rollout_free(r);
}

static void test_tick_hold_moves_nothing(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    traffic_t bad = healthy;
    bad.failed = 20;
    for (uint32_t i = 0; i < 30; i++)
        assert_int_equal(second_mode(r, &t, &bad, ROLLOUT_TICK_HOLD), 0);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_STEP);
    /* The buckets stayed ready: nothing recorded was dropped. */
    assert_int_equal(s.dropped_records, 0);
    assert_true(s.current.requests > 0);
    rollout_free(r);
}

static void test_follow(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    run_seconds(r, &t, &healthy, 3);
    uint64_t before = snap_of(r, t).transitions;
    rollout_transition_t tr = {.to = ROLLOUT_STEP,
                               .step = 1,
                               .cause = ROLLOUT_CAUSE_PROMOTED,
                               .at_ms = t - 400,
                               .seq = 99,
                               .from = ROLLOUT_PROMOTED};
    snprintf(tr.reason, sizeof tr.reason, "promoted: 40 requests, error 0.0%%, ratio 1.00");
    assert_int_equal(rollout_follow(r, &tr, ROLLOUT_PENDING, t), 0);
    rollout_snapshot_t s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_STEP);
    assert_int_equal(s.step, 1);
    assert_int_equal(s.weight_percent, 50);
    assert_int_equal(rollout_weight_percent(r), 50);
    assert_int_equal(s.step_started_ms, t - 400);
    assert_int_equal(s.transitions, before + 1);
    const rollout_transition_t *last = &s.history[s.n_history - 1];
    assert_int_equal(last->seq, before + 1); /* its own numbering */
    assert_int_equal(last->from, ROLLOUT_STEP);
    assert_int_equal(last->to, ROLLOUT_STEP);
    assert_int_equal(last->cause, ROLLOUT_CAUSE_PROMOTED);
    assert_string_equal(last->reason, "promoted: 40 requests, error 0.0%, ratio 1.00");
    /* The step left keeps this instance's figures; the new one's evidence
     * starts at the follow, not at the leader's earlier start. */
    assert_int_equal(s.steps[0].requests, 15);
    assert_int_equal(s.current.requests, 0);
    /* Paused at a step: the weight stays at the step's. */
    tr = (rollout_transition_t){.to = ROLLOUT_PAUSED, .step = 1, .at_ms = t, .cause = 5};
    strcpy(tr.reason, "manual pause");
    assert_int_equal(rollout_follow(r, &tr, ROLLOUT_STEP, t), 0);
    s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_PAUSED);
    assert_int_equal(s.paused_from, ROLLOUT_STEP);
    assert_int_equal(s.weight_percent, 50);
    /* Back to pending (a restart): step figures cleared. */
    tr = (rollout_transition_t){
        .to = ROLLOUT_PENDING, .step = 0, .at_ms = t + 5 * SEC, .cause = ROLLOUT_CAUSE_MANUAL};
    assert_int_equal(rollout_follow(r, &tr, ROLLOUT_PENDING, t), 0);
    s = snap_of(r, t);
    assert_int_equal(s.state, ROLLOUT_PENDING);
    assert_int_equal(s.step_started_ms, t); /* a time ahead of the clock is taken as now */
    assert_int_equal(s.steps[0].requests, 0);
    assert_int_equal(rollout_weight_percent(r), 0);
    rollout_free(r);
}

static void test_follow_rejects_what_the_config_cannot_be(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    uint64_t t;
    rollout_t *r = started(&c, &t);
    uint64_t before = snap_of(r, t).transitions;
    rollout_transition_t bad[] = {
        {.to = ROLLOUT_STEP, .step = 3},
        {.to = (rollout_state_t)7},
        {.to = ROLLOUT_STEP, .cause = (rollout_cause_t)9},
        {.to = ROLLOUT_PAUSED},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(rollout_follow(r, &bad[i], (rollout_state_t)(i == 3 ? 2 : 0), t),
                         FE_INVAL);
    assert_int_equal(snap_of(r, t).transitions, before);
    assert_int_equal(rollout_weight_percent(r), 10);
    rollout_free(r);
}

static void test_follow_then_lead(void **state)
{
    (void)state;
    /* An instance that followed a step and then leads judges the step from
     * the shared start: promotion one interval after it. */
    rollout_config_t c = base_config();
    uint64_t t = T0;
    rollout_t *r = rollout_new(&c, t);
    rollout_transition_t tr = {
        .to = ROLLOUT_STEP, .step = 0, .at_ms = t, .cause = ROLLOUT_CAUSE_START};
    assert_int_equal(rollout_follow(r, &tr, ROLLOUT_PENDING, t), 0);
    rollout_counts_t sum;
    memset(&sum, 0, sizeof sum);
    sum.canary_tries = 40;
    sum.primary_tries = 40;
    sum.canary_hist[rollout_latency_slot(10000)] = 40;
    sum.primary_hist[rollout_latency_slot(10000)] = 40;
    assert_int_equal(rollout_tick_counts(r, t + 9 * SEC, &sum), 0);
    assert_int_equal(rollout_tick_counts(r, t + 10 * SEC, &sum), 1);
    assert_int_equal(snap_of(r, t + 10 * SEC).step, 1);
    rollout_free(r);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *worker_main(void *p)
{
    worker_arg_t *w = p;
    uint64_t start = mono_ns();
    for (uint32_t i = 0; i < w->n; i++)
        rollout_record_canary(w->r, atomic_load(w->clock), true, false, 1000 + i % 5000);
    w->ns_per_record = (double)(mono_ns() - start) / w->n;
    return NULL;
}

static void test_two_workers_and_ticker(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    c.interval_ms = 3600 * SEC; /* everything stays inside one window */
    c.min_requests = UINT32_MAX;
    _Atomic uint64_t clock = T0;
    rollout_t *r = rollout_new(&c, T0);
    assert_int_equal(rollout_tick(r, T0), 1); /* the step starts before the records */
    const uint32_t n = 200000;
    worker_arg_t w[2] = {{r, &clock, n, 0}, {r, &clock, n, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    /* The ticker advances the clock one bucket at a time and ticks. */
    uint64_t width = c.interval_ms / ROLLOUT_WINDOW_BUCKETS;
    for (int i = 0; i < 40; i++) {
        uint64_t now = atomic_load(&clock) + width;
        rollout_tick(r, now);
        atomic_store(&clock, now);
        rollout_snapshot_t *s = &(rollout_snapshot_t){0};
        rollout_snapshot(r, now, s);
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    rollout_snapshot_t s;
    rollout_snapshot(r, atomic_load(&clock), &s);
    /* The ticker prepares buckets ahead, so nothing is dropped or lost. */
    assert_int_equal(s.dropped_records, 0);
    assert_int_equal(s.current.requests + s.dropped_records, 2ull * n);
    print_message("rollout_record_canary: %.1f ns/record (two threads, shared bucket)\n",
                  (w[0].ns_per_record + w[1].ns_per_record) / 2);
    rollout_free(r);
}

static void test_record_cost(void **state)
{
    (void)state;
    rollout_config_t c = base_config();
    rollout_t *r = rollout_new(&c, T0);
    _Atomic uint64_t clock = T0;
    worker_arg_t w = {r, &clock, 1000000, 0};
    worker_main(&w);
    print_message("rollout_record_canary: %.1f ns/record (one thread)\n", w.ns_per_record);
    rollout_snapshot_t s;
    rollout_snapshot(r, T0, &s);
    assert_int_equal(s.current.requests, 1000000);
    assert_int_equal(s.dropped_records, 0);
    rollout_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_check),
        cmocka_unit_test(test_latency_slots),
        cmocka_unit_test(test_promotion_through_all_steps),
        cmocka_unit_test(test_last_step_below_100),
        cmocka_unit_test(test_extension_without_min_requests),
        cmocka_unit_test(test_rollback_on_error_rate),
        cmocka_unit_test(test_rollback_on_masked_failures_only),
        cmocka_unit_test(test_pause_on_failure),
        cmocka_unit_test(test_latency_ratio_breach),
        cmocka_unit_test(test_mismatch_rate),
        cmocka_unit_test(test_mismatch_in_pending),
        cmocka_unit_test(test_manual_actions),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_adopt),
        cmocka_unit_test(test_history_bound),
        cmocka_unit_test(test_stale_bucket_dropped),
        cmocka_unit_test(test_judge_fleet_counts),
        cmocka_unit_test(test_tick_failures_only_holds_the_step),
        cmocka_unit_test(test_tick_failures_only_pauses),
        cmocka_unit_test(test_tick_hold_moves_nothing),
        cmocka_unit_test(test_follow),
        cmocka_unit_test(test_follow_rejects_what_the_config_cannot_be),
        cmocka_unit_test(test_follow_then_lead),
        cmocka_unit_test(test_two_workers_and_ticker),
        cmocka_unit_test(test_record_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
