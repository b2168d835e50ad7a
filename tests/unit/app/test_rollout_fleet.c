/* app/rollout_fleet.h against a real redis-server: two members share a
 * rollout (the leader starts and promotes it on the evidence of both, the
 * other follows with the same causes and reasons, a manual move on the
 * follower reaches the leader), a member cut off from redis holds its step
 * and still rolls back, and transitions written by someone else that do not
 * fit are skipped and counted, never followed. The loop ends empty. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <string.h>

#include "app/rollout_fleet.h"
#include "client/redis_server.h"
#include "core/time.h"

#define SETTLE_MS 150 /* a local redis answers well within this */

typedef struct fx {
    redis_server_t srv;
    uv_loop_t loop;
} fx_t;

static rollout_config_t cfg(void)
{
    return (rollout_config_t){.canary_backend = 1,
                              .steps = {50},
                              .n_steps = 1,
                              .interval_ms = 1000,
                              .min_requests = 5,
                              .max_error_rate = 0.01,
                              .max_mismatch_rate = -1};
}

static void on_changed(void *ctx) { (*(int *)ctx)++; }

static void tick(uv_loop_t *loop, rollout_fleet_route_t *fr)
{
    rollout_fleet_tick(fr, time_now_ms());
    redis_test_run_for(loop, SETTLE_MS);
}

static rollout_transition_t last_of(rollout_t *r, rollout_snapshot_t *s)
{
    rollout_snapshot(r, time_now_ms(), s);
    assert_true(s->n_history > 0);
    return s->history[s->n_history - 1];
}

static void traffic(rollout_t *r, uint32_t ok, uint32_t failed)
{
    uint64_t now = time_now_ms();
    for (uint32_t i = 0; i < ok + failed; i++) {
        rollout_record_canary(r, now, i < ok, false, 2000);
        rollout_record_primary(r, now, 2000);
    }
}

static void end_loop(uv_loop_t *loop)
{
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_encode_and_fingerprint(void **state)
{
    (void)state;
    rollout_counts_t c;
    memset(&c, 0, sizeof c);
    c.canary_tries = 3;
    c.canary_failures = 1;
    c.primary_tries = 2;
    c.canary_hist[7] = 3;
    c.primary_hist[0] = 1;
    c.primary_hist[231] = 1;
    char buf[ROLLOUT_FLEET_COUNTS_BYTES];
    size_t n = rollout_fleet_encode_counts(4, &c, buf, sizeof buf);
    assert_string_equal(buf, "4 3 1 0 2 0 0 1 7 3 2 0 1 231 1");
    assert_int_equal(n, strlen(buf));
    assert_int_equal(rollout_fleet_encode_counts(4, &c, buf, 10), 0); /* does not fit */
    /* Every slot at its largest still fits. */
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++)
        c.canary_hist[i] = c.primary_hist[i] = UINT64_MAX;
    c.canary_tries = UINT64_MAX;
    assert_true(rollout_fleet_encode_counts(UINT64_MAX, &c, buf, sizeof buf) > 0);

    rollout_config_t a = cfg(), b = cfg();
    assert_true(rollout_fleet_fingerprint(&a, "v2") == rollout_fleet_fingerprint(&b, "v2"));
    assert_true(rollout_fleet_fingerprint(&a, "v2") != rollout_fleet_fingerprint(&a, "v3"));
    b.steps[0] = 40;
    assert_true(rollout_fleet_fingerprint(&a, "v2") != rollout_fleet_fingerprint(&b, "v2"));
    b = cfg();
    b.interval_ms = 2000;
    assert_true(rollout_fleet_fingerprint(&a, "v2") != rollout_fleet_fingerprint(&b, "v2"));
}

static void test_two_members_share_a_rollout(void **state)
{
    fx_t *f = *state;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    rollout_config_t c = cfg();
    uint64_t fp = rollout_fleet_fingerprint(&c, "v2");
    rollout_fleet_t *fa = rollout_fleet_new(&f->loop, f->srv.address, 1000, "a", NULL);
    rollout_fleet_t *fb = rollout_fleet_new(&f->loop, f->srv.address, 1000, "b", NULL);
    assert_non_null(fa);
    assert_non_null(fb);
    redis_test_run_for(&f->loop, SETTLE_MS);
    rollout_t *ra = rollout_new(&c, time_now_ms()), *rb = rollout_new(&c, time_now_ms());
    int changed_a = 0, changed_b = 0;
    rollout_fleet_route_t *a = rollout_fleet_bind(fa, "r", fp, ra, on_changed, &changed_a);
    rollout_fleet_route_t *b = rollout_fleet_bind(fb, "r", fp, rb, on_changed, &changed_b);
    assert_non_null(a);
    assert_non_null(b);
    rollout_snapshot_t *s = calloc(1, sizeof *s);

    /* a syncs first: the lease is a's, it starts the rollout and writes it. */
    tick(&f->loop, a);
    rollout_fleet_status_t st;
    rollout_fleet_status(a, time_now_ms(), &st);
    assert_true(st.leader && st.connected && !st.unpublished);
    assert_int_equal(st.seq, 1);
    assert_int_equal(changed_a, 1);
    assert_int_equal(rollout_weight_percent(ra), 50);
    /* b follows, with a's cause and reason. */
    tick(&f->loop, b);
    rollout_fleet_status(b, time_now_ms(), &st);
    assert_true(!st.leader && st.connected);
    assert_int_equal(st.seq, 1);
    assert_int_equal(changed_b, 1);
    assert_int_equal(rollout_weight_percent(rb), 50);
    rollout_transition_t t = last_of(rb, s);
    assert_int_equal(t.cause, ROLLOUT_CAUSE_START);
    assert_string_equal(t.reason, "started: step 1 (50%)");

    /* 3 tries each, 5 needed: promoted on the sum, over the same window. */
    traffic(ra, 3, 0);
    traffic(rb, 3, 0);
    for (int i = 0; i < 20 && rollout_weight_percent(ra) != 100; i++) {
        tick(&f->loop, b);
        tick(&f->loop, a);
    }
    rollout_snapshot(ra, time_now_ms(), s);
    assert_int_equal(s->state, ROLLOUT_PROMOTED);
    t = last_of(ra, s);
    assert_int_equal(t.cause, ROLLOUT_CAUSE_PROMOTED);
    if (!strstr(t.reason, "promoted: 6 requests"))
        fail_msg("reason: %s", t.reason);
    char reason[ROLLOUT_REASON_BYTES];
    memcpy(reason, t.reason, sizeof reason);
    tick(&f->loop, b);
    t = last_of(rb, s);
    assert_int_equal(s->state, ROLLOUT_PROMOTED);
    assert_string_equal(t.reason, reason);

    /* A manual restart on b is written and a follows it. */
    assert_int_equal(rollout_action(rb, ROLLOUT_ACTION_RESTART, time_now_ms()), 0);
    rollout_fleet_publish(b, time_now_ms());
    redis_test_run_for(&f->loop, SETTLE_MS);
    rollout_fleet_status(b, time_now_ms(), &st);
    assert_false(st.unpublished);
    assert_int_equal(st.seq, 3);
    tick(&f->loop, a);
    t = last_of(ra, s);
    /* a followed the restart, then (leader, no mismatch limit) started again. */
    assert_true(s->n_history >= 2);
    assert_int_equal(s->history[s->n_history - 2].to, ROLLOUT_PENDING);
    assert_string_equal(s->history[s->n_history - 2].reason, "manual restart");
    assert_int_equal(t.cause, ROLLOUT_CAUSE_START);
    assert_int_equal(rollout_fleet_errors(fa) + rollout_fleet_errors(fb), 0);

    /* A reload's binding of the same block takes the same place. */
    rollout_t *ra2 = rollout_new(&c, time_now_ms());
    assert_int_equal(rollout_adopt(ra2, ra), 0);
    assert_ptr_equal(rollout_fleet_bind(fa, "r", fp, ra2, on_changed, &changed_a), a);
    rollout_fleet_unbind(a, ra); /* the old generation goes: a stays */
    tick(&f->loop, a);
    rollout_fleet_status(a, time_now_ms(), &st);
    assert_true(st.leader);

    rollout_fleet_unbind(a, ra2);
    rollout_fleet_unbind(b, rb);
    rollout_fleet_close(fa);
    rollout_fleet_close(fb);
    end_loop(&f->loop);
    rollout_free(ra);
    rollout_free(ra2);
    rollout_free(rb);
    free(s);
}

static void test_cut_off_holds_the_step_and_still_rolls_back(void **state)
{
    fx_t *f = *state;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    char dead[32];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", redis_server_free_port());
    rollout_fleet_t *fl = rollout_fleet_new(&f->loop, dead, 200, "m", NULL);
    assert_non_null(fl);
    rollout_config_t c = cfg();
    c.steps[1] = 100;
    c.n_steps = 2;
    rollout_t *healthy = rollout_new(&c, time_now_ms()), *failing = rollout_new(&c, time_now_ms());
    assert_int_equal(rollout_tick(healthy, time_now_ms()), 1); /* started before the outage */
    assert_int_equal(rollout_tick(failing, time_now_ms()), 1);
    rollout_fleet_route_t *h = rollout_fleet_bind(fl, "h", 1, healthy, NULL, NULL);
    rollout_fleet_route_t *x = rollout_fleet_bind(fl, "x", 1, failing, NULL, NULL);
    assert_non_null(h);
    assert_non_null(x);
    /* Two intervals of good evidence: held at step 1. */
    for (int i = 0; i < 8; i++) {
        traffic(healthy, 5, 0);
        tick(&f->loop, h);
        tick(&f->loop, x); /* no evidence yet: holds */
    }
    assert_int_equal(rollout_weight_percent(healthy), 50);
    /* A failing canary: rolled back at once, on this member's evidence. */
    traffic(failing, 5, 5);
    assert_int_equal(rollout_fleet_tick(x, time_now_ms()), 1);
    assert_int_equal(rollout_weight_percent(failing), 0);
    rollout_fleet_status_t st;
    rollout_fleet_status(x, time_now_ms(), &st);
    assert_true(st.unpublished && !st.connected && !st.leader);
    assert_true(rollout_fleet_errors(fl) > 0);
    rollout_fleet_unbind(h, healthy);
    rollout_fleet_close(fl); /* x still bound: the memory waits for it */
    rollout_fleet_unbind(x, failing);
    end_loop(&f->loop);
    rollout_free(healthy);
    rollout_free(failing);
}

static void test_a_history_that_does_not_fit_is_refused(void **state)
{
    fx_t *f = *state;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    rollout_config_t c = cfg();
    uint64_t fp = rollout_fleet_fingerprint(&c, "hostile");
    char key[128];
    snprintf(key, sizeof key, "ficus:rollout:h:%016" PRIx64 ":history", fp);
    freeReplyObject(redis_server_cmd(&f->srv, "DEL %s", key));
    /* Another member leads: this one only follows. */
    char lease[128];
    snprintf(lease, sizeof lease, "ficus:rollout:h:%016" PRIx64 ":leader", fp);
    freeReplyObject(redis_server_cmd(&f->srv, "SET %s other PX 60000", lease));
    /* State 9, step 99: no such thing. */
    freeReplyObject(redis_server_cmd(&f->srv, "LPUSH %s %s", key, "1 1 9 0 99 0 bad"));
    rollout_fleet_t *fl = rollout_fleet_new(&f->loop, f->srv.address, 1000, "m", NULL);
    redis_test_run_for(&f->loop, SETTLE_MS);
    rollout_t *r = rollout_new(&c, time_now_ms());
    rollout_fleet_route_t *fr = rollout_fleet_bind(fl, "h", fp, r, NULL, NULL);
    tick(&f->loop, fr);
    assert_int_equal(rollout_fleet_errors(fl), 1); /* skipped, once */
    rollout_snapshot_t *s = calloc(1, sizeof *s);
    rollout_snapshot(r, time_now_ms(), s);
    assert_int_equal(s->state, ROLLOUT_PENDING);
    /* A step past the block's: refused by the rollout, skipped, counted. */
    freeReplyObject(redis_server_cmd(&f->srv, "LPUSH %s %s", key, "2 1 1 0 7 1 far"));
    uint64_t errors = rollout_fleet_errors(fl);
    tick(&f->loop, fr);
    assert_int_equal(rollout_fleet_errors(fl), errors + 1);
    rollout_snapshot(r, time_now_ms(), s);
    assert_int_equal(s->transitions, 0);
    /* A fitting one with an over-long reason: followed, the reason cut. */
    char entry[512];
    int n = snprintf(entry, sizeof entry, "3 1 2 0 0 1 ");
    memset(entry + n, 'x', 300);
    entry[n + 300] = '\0';
    freeReplyObject(redis_server_cmd(&f->srv, "LPUSH %s %s", key, entry));
    tick(&f->loop, fr);
    rollout_transition_t t = last_of(r, s);
    assert_int_equal(s->state, ROLLOUT_PROMOTED);
    assert_int_equal(strlen(t.reason), ROLLOUT_REASON_BYTES - 1);
    rollout_fleet_unbind(fr, r);
    rollout_fleet_close(fl);
    end_loop(&f->loop);
    rollout_free(r);
    free(s);
}

/* The leader's judgement and a manual move elsewhere race to redis: which
 * ever redis runs first, both members end in the manual move's state (the
 * leader's write on top of a stale transition is refused and it follows). */
static void test_a_racing_move_converges(void **state)
{
    fx_t *f = *state;
    rollout_config_t c = cfg();
    for (int round = 0; round < 6; round++) {
        assert_int_equal(uv_loop_init(&f->loop), 0);
        char canary[16];
        snprintf(canary, sizeof canary, "race%d", round);
        uint64_t fp = rollout_fleet_fingerprint(&c, canary);
        rollout_fleet_t *fa = rollout_fleet_new(&f->loop, f->srv.address, 1000, "a", NULL);
        rollout_fleet_t *fb = rollout_fleet_new(&f->loop, f->srv.address, 1000, "b", NULL);
        redis_test_run_for(&f->loop, SETTLE_MS);
        rollout_t *ra = rollout_new(&c, time_now_ms()), *rb = rollout_new(&c, time_now_ms());
        rollout_fleet_route_t *a = rollout_fleet_bind(fa, "race", fp, ra, NULL, NULL);
        rollout_fleet_route_t *b = rollout_fleet_bind(fb, "race", fp, rb, NULL, NULL);
        /* a's sync (it leads and would start the rollout) and b's pause leave together. */
        rollout_fleet_tick(a, time_now_ms());
        assert_int_equal(rollout_action(rb, ROLLOUT_ACTION_PAUSE, time_now_ms()), 0);
        rollout_fleet_publish(b, time_now_ms());
        redis_test_run_for(&f->loop, SETTLE_MS);
        for (int i = 0; i < 3; i++) {
            tick(&f->loop, a);
            tick(&f->loop, b);
        }
        rollout_fleet_status_t sa, sb;
        rollout_fleet_status(a, time_now_ms(), &sa);
        rollout_fleet_status(b, time_now_ms(), &sb);
        rollout_snapshot_t *s = calloc(1, sizeof *s);
        rollout_snapshot(ra, time_now_ms(), s);
        assert_int_equal(s->state, ROLLOUT_PAUSED);
        rollout_snapshot(rb, time_now_ms(), s);
        assert_int_equal(s->state, ROLLOUT_PAUSED);
        assert_int_equal(rollout_weight_percent(ra), 0);
        assert_int_equal(sa.seq, sb.seq);
        assert_false(sa.unpublished || sb.unpublished);
        rollout_fleet_unbind(a, ra);
        rollout_fleet_unbind(b, rb);
        rollout_fleet_close(fa);
        rollout_fleet_close(fb);
        end_loop(&f->loop);
        rollout_free(ra);
        rollout_free(rb);
        free(s);
    }
}

static int setup(void **state) { return redis_server_group_setup(state, sizeof(fx_t)); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_and_fingerprint),
        cmocka_unit_test(test_two_members_share_a_rollout),
        cmocka_unit_test(test_cut_off_holds_the_step_and_still_rolls_back),
        cmocka_unit_test(test_a_history_that_does_not_fit_is_refused),
        cmocka_unit_test(test_a_racing_move_converges),
    };
    return cmocka_run_group_tests(tests, setup, redis_server_group_teardown);
}
