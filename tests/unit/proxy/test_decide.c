/* decide(): the one decision after a try, over the rules that used to live
 * in four places (a failed try, a 5xx head, a group that could not take the
 * request, a response already under way), and the end reasons table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/decide.h"

static config_route_t route_with(bool retries, uint32_t attempts, uint32_t retry_on)
{
    config_route_t r;
    memset(&r, 0, sizeof r);
    r.has_retries = retries;
    r.retries.attempts = attempts;
    r.retries.retry_on = retry_on;
    r.retries.budget_percent = 20;
    return r;
}

/* A GET's first try to a route with `r`, nothing sent to the client yet. */
static decide_in_t first_try(const config_route_t *r, end_reason_t why, int status)
{
    return (decide_in_t){
        .why = why,
        .status = status,
        .idempotent = true,
        .route = r,
        .attempts = 1,
        .route_requests_in_flight = 1,
    };
}

static void test_no_retries_no_fallback_answers(void **state)
{
    (void)state;
    config_route_t r = route_with(false, 0, 0);
    decide_in_t in = first_try(&r, END_UPSTREAM_CONNECT_FAILURE, 0);
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in = first_try(&r, END_OK, 503);
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

static void test_retry_on_connect_failure(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 2, RETRY_ON_CONNECT_FAILURE);
    decide_in_t in = first_try(&r, END_UPSTREAM_CONNECT_FAILURE, 0);
    assert_int_equal(decide(&in), DECIDE_RETRY);
    /* Not for what retry_on does not list. */
    in = first_try(&r, END_UPSTREAM_TIMEOUT, 0);
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in = first_try(&r, END_OK, 503);
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    /* Up to the number of tries. */
    in = first_try(&r, END_UPSTREAM_CONNECT_FAILURE, 0);
    in.retries = 2;
    in.attempts = 3;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

static void test_5xx_head_retried_or_relayed(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 1, RETRY_ON_5XX);
    decide_in_t in = first_try(&r, END_OK, 503);
    assert_int_equal(decide(&in), DECIDE_RETRY);
    in = first_try(&r, END_OK, 404);
    assert_int_equal(decide(&in), DECIDE_ANSWER); /* relayed */
    in = first_try(&r, END_OK, 200);
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

static void test_nothing_again_once_the_client_got_bytes(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 3, RETRY_ON_5XX | RETRY_ON_RESET);
    decide_in_t in = first_try(&r, END_UPSTREAM_RESET, 0);
    in.resp_started = true;
    assert_int_equal(decide(&in), DECIDE_CUT);
    in.stale = true;
    assert_int_equal(decide(&in), DECIDE_CUT);
}

static void test_body_not_kept_is_not_sent_again(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 3, RETRY_ON_RESET);
    decide_in_t in = first_try(&r, END_UPSTREAM_RESET, 0);
    in.body_streamed = true;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

static void test_idempotency_gate(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 2, RETRY_ON_RESET | RETRY_ON_CONNECT_FAILURE);
    decide_in_t in = first_try(&r, END_UPSTREAM_RESET, 0);
    in.idempotent = false;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    /* It never reached the target: safe for any method. */
    in.why = END_UPSTREAM_CONNECT_FAILURE;
    assert_int_equal(decide(&in), DECIDE_RETRY);
    r.retry_non_idempotent = true;
    in.why = END_UPSTREAM_RESET;
    assert_int_equal(decide(&in), DECIDE_RETRY);
}

static void test_stale_pooled_connection_is_resent(void **state)
{
    (void)state;
    config_route_t r = route_with(false, 0, 0);
    decide_in_t in = first_try(&r, END_UPSTREAM_RESET, 0);
    in.stale = true;
    assert_int_equal(decide(&in), DECIDE_RESEND);
    in.attempts = DECIDE_STALE_TRIES;
    assert_int_equal(decide(&in), DECIDE_ANSWER); /* bounded */
    in.stopping = true;
    in.attempts = 1;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

/* Contract 10.3: with less than deadline.min_remaining left, no retry and
 * no fallback starts (a stale connection is still re-sent: not a retry). */
static void test_short_deadline_stops_retries_and_fallbacks(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 2, RETRY_ON_5XX);
    decide_in_t in = first_try(&r, END_OK, 503);
    assert_int_equal(decide(&in), DECIDE_RETRY);
    in.deadline_short = true;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in = first_try(&r, END_NO_TARGET, 0);
    in.fallback_ready = true;
    in.deadline_short = true;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in = first_try(&r, END_UPSTREAM_RESET, 0);
    in.stale = true;
    in.deadline_short = true;
    assert_int_equal(decide(&in), DECIDE_RESEND);
}

static void test_fallback_takes_failures_without_a_retries_block(void **state)
{
    (void)state;
    config_route_t r = route_with(false, 0, 0);
    decide_in_t in = first_try(&r, END_UPSTREAM_CONNECT_FAILURE, 0);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_FALLBACK);
    in = first_try(&r, END_OK, 500);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_FALLBACK);
    in = first_try(&r, END_OK, 404);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    /* One fallback try only. */
    in = first_try(&r, END_UPSTREAM_RESET, 0);
    in.fallback_ready = true;
    in.retries = 1;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

/* The bug this table fixed: with retries and a fallback whose request could
 * not be built, a retry stays in its group. */
static void test_retry_without_a_ready_fallback_stays_in_the_group(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 1, RETRY_ON_CONNECT_FAILURE);
    decide_in_t in = first_try(&r, END_UPSTREAM_CONNECT_FAILURE, 0);
    in.fallback_ready = false;
    assert_int_equal(decide(&in), DECIDE_RETRY);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_FALLBACK);
}

static void test_unavailable_group_goes_to_the_fallback_only(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 3, RETRY_ON_5XX | RETRY_ON_CONNECT_FAILURE);
    decide_in_t in = first_try(&r, END_NO_TARGET, 0);
    in.attempts = 0; /* no try was made */
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_FALLBACK);
    in.why = END_CIRCUIT_OPEN;
    in.idempotent = false; /* it reached no target */
    assert_int_equal(decide(&in), DECIDE_FALLBACK);
    in.fallback_ready = false;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

static void test_budget_caps_retries_not_the_fallback(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 2, RETRY_ON_CONNECT_FAILURE);
    decide_in_t in = first_try(&r, END_UPSTREAM_CONNECT_FAILURE, 0);
    in.route_retries_in_flight = 100;
    in.route_requests_in_flight = 100;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in.retry_counted = true; /* already counted: its own retry may go on */
    assert_int_equal(decide(&in), DECIDE_RETRY);
    in.retry_counted = false;
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_FALLBACK);
}

static void test_reasons_that_are_not_a_try_are_answered(void **state)
{
    (void)state;
    config_route_t r = route_with(true, 3, ~0u);
    decide_in_t in = first_try(&r, END_BAD_REQUEST, 0);
    in.fallback_ready = true;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
    in.why = END_INTERNAL;
    assert_int_equal(decide(&in), DECIDE_ANSWER);
}

static void test_end_reason_table(void **state)
{
    (void)state;
    assert_null(end_reason_name(END_OK));
    for (int i = 1; i < END_REASON_COUNT; i++) {
        const end_reason_info_t *e = &end_reasons[i];
        assert_non_null(e->name);
        for (int j = 1; j < i; j++)
            assert_string_not_equal(e->name, end_reasons[j].name);
        /* An answer of ficus's own has a JSON code and a message. */
        if (e->status && e->status != 499) {
            assert_true(e->status >= 400 && e->status <= 599);
            assert_non_null(e->code);
            assert_non_null(e->message);
        }
        /* A reason a try ends with is counted and judged. */
        if (e->try_code)
            assert_int_not_equal(e->outcome, RETRY_OUTCOME_NONE);
    }
    assert_string_equal(end_reason_name(END_UPSTREAM_TIMEOUT), "upstream_timeout");
    assert_int_equal(end_reasons[END_UPSTREAM_TIMEOUT].status, 504);
    assert_int_equal(end_reasons[END_UPSTREAM_TIMEOUT].try_code, METRICS_UPSTREAM_TIMEOUT);
    assert_string_equal(end_reasons[END_CIRCUIT_OPEN].code, "circuit_open");
    assert_string_equal(end_reasons[END_NO_TARGET].code, "no_healthy_target");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_retries_no_fallback_answers),
        cmocka_unit_test(test_retry_on_connect_failure),
        cmocka_unit_test(test_5xx_head_retried_or_relayed),
        cmocka_unit_test(test_nothing_again_once_the_client_got_bytes),
        cmocka_unit_test(test_body_not_kept_is_not_sent_again),
        cmocka_unit_test(test_idempotency_gate),
        cmocka_unit_test(test_stale_pooled_connection_is_resent),
        cmocka_unit_test(test_short_deadline_stops_retries_and_fallbacks),
        cmocka_unit_test(test_fallback_takes_failures_without_a_retries_block),
        cmocka_unit_test(test_retry_without_a_ready_fallback_stays_in_the_group),
        cmocka_unit_test(test_unavailable_group_goes_to_the_fallback_only),
        cmocka_unit_test(test_budget_caps_retries_not_the_fallback),
        cmocka_unit_test(test_reasons_that_are_not_a_try_are_answered),
        cmocka_unit_test(test_end_reason_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
