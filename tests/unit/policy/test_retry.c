/* Retry and fallback rules (policy/retry.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/defaults.h"
#include "policy/retry.h"

static void test_qualifies_5xx(void **state)
{
    (void)state;
    config_retries_t r = {.attempts = 2, .retry_on = RETRY_ON_5XX};
    assert_true(retry_qualifies(&r, RETRY_OUTCOME_STATUS, 500));
    assert_true(retry_qualifies(&r, RETRY_OUTCOME_STATUS, 503));
    assert_false(retry_qualifies(&r, RETRY_OUTCOME_STATUS, 404));
    assert_false(retry_qualifies(&r, RETRY_OUTCOME_STATUS, 429));
    /* As Envoy: 5xx also covers resets, per-try timeouts and connect failures. */
    assert_true(retry_qualifies(&r, RETRY_OUTCOME_RESET, 0));
    assert_true(retry_qualifies(&r, RETRY_OUTCOME_TIMEOUT, 0));
    assert_true(retry_qualifies(&r, RETRY_OUTCOME_CONNECT_FAILURE, 0));
}

static void test_qualifies_each_condition(void **state)
{
    (void)state;
    config_retries_t gw = {.retry_on = RETRY_ON_GATEWAY_ERROR};
    assert_true(retry_qualifies(&gw, RETRY_OUTCOME_STATUS, 502));
    assert_true(retry_qualifies(&gw, RETRY_OUTCOME_STATUS, 504));
    assert_false(retry_qualifies(&gw, RETRY_OUTCOME_STATUS, 500));
    assert_true(retry_qualifies(&gw, RETRY_OUTCOME_TIMEOUT, 0));
    assert_false(retry_qualifies(&gw, RETRY_OUTCOME_RESET, 0));

    config_retries_t cf = {.retry_on = RETRY_ON_CONNECT_FAILURE};
    assert_true(retry_qualifies(&cf, RETRY_OUTCOME_CONNECT_FAILURE, 0));
    assert_false(retry_qualifies(&cf, RETRY_OUTCOME_RESET, 0));
    assert_false(retry_qualifies(&cf, RETRY_OUTCOME_STATUS, 503));

    config_retries_t rs = {.retry_on = RETRY_ON_RESET};
    assert_true(retry_qualifies(&rs, RETRY_OUTCOME_RESET, 0));
    assert_false(retry_qualifies(&rs, RETRY_OUTCOME_TIMEOUT, 0));

    config_retries_t to = {.retry_on = RETRY_ON_TIMEOUT};
    assert_true(retry_qualifies(&to, RETRY_OUTCOME_TIMEOUT, 0));
    assert_false(retry_qualifies(&to, RETRY_OUTCOME_STATUS, 504));

    uint16_t codes[] = {429, 409};
    config_retries_t st = {.retry_statuses = codes, .n_retry_statuses = 2};
    assert_true(retry_qualifies(&st, RETRY_OUTCOME_STATUS, 429));
    assert_true(retry_qualifies(&st, RETRY_OUTCOME_STATUS, 409));
    assert_false(retry_qualifies(&st, RETRY_OUTCOME_STATUS, 503));
    assert_false(retry_qualifies(&st, RETRY_OUTCOME_CONNECT_FAILURE, 0));
}

static void test_fallback_defaults(void **state)
{
    (void)state;
    /* No retries block: a fallback follows connect failure, reset, timeout, 5xx. */
    assert_true(retry_qualifies(NULL, RETRY_OUTCOME_CONNECT_FAILURE, 0));
    assert_true(retry_qualifies(NULL, RETRY_OUTCOME_RESET, 0));
    assert_true(retry_qualifies(NULL, RETRY_OUTCOME_TIMEOUT, 0));
    assert_true(retry_qualifies(NULL, RETRY_OUTCOME_STATUS, 500));
    assert_false(retry_qualifies(NULL, RETRY_OUTCOME_STATUS, 404));
    assert_false(retry_qualifies(NULL, RETRY_OUTCOME_STATUS, 200));
}

static void test_idempotency_gate(void **state)
{
    (void)state;
    assert_true(retry_resend_allowed(true, false, RETRY_OUTCOME_STATUS));
    assert_false(retry_resend_allowed(false, false, RETRY_OUTCOME_STATUS));
    assert_false(retry_resend_allowed(false, false, RETRY_OUTCOME_RESET));
    assert_false(retry_resend_allowed(false, false, RETRY_OUTCOME_TIMEOUT));
    /* A POST that never reached the target may go again. */
    assert_true(retry_resend_allowed(false, false, RETRY_OUTCOME_CONNECT_FAILURE));
    assert_true(retry_resend_allowed(false, true, RETRY_OUTCOME_STATUS));
}

static void test_backoff_full_jitter_bounds(void **state)
{
    (void)state;
    uint64_t rng = 42;
    uint64_t max_seen[5] = {0};
    for (int i = 0; i < 20000; i++)
        for (uint32_t n = 1; n <= 4; n++) {
            uint64_t d = retry_backoff_ms(25, n, &rng);
            uint64_t cap = 25u << (n - 1);
            assert_true(d <= cap);
            if (d > max_seen[n])
                max_seen[n] = d;
        }
    /* Full jitter reaches (close to) the top of each interval. */
    for (uint32_t n = 1; n <= 4; n++)
        assert_true(max_seen[n] >= (25u << (n - 1)) * 9 / 10);
    /* Capped at ten times the base. */
    for (int i = 0; i < 1000; i++)
        assert_true(retry_backoff_ms(25, 20, &rng) <= 250);
    assert_int_equal(retry_backoff_ms(0, 3, &rng), 0);
}

static void test_budget(void **state)
{
    (void)state;
    /* Three retries in flight are always allowed (Envoy's floor). */
    assert_true(retry_budget_allows(0, 1, 0));
    assert_true(retry_budget_allows(2, 1, 0));
    assert_false(retry_budget_allows(3, 1, 20));
    /* Beyond the floor: at most budget_percent of requests in flight. */
    assert_true(retry_budget_allows(19, 100, 20));
    assert_false(retry_budget_allows(20, 100, 20));
    assert_true(retry_budget_allows(99, 100, 100));
}

static void test_qualifies_grpc(void **state)
{
    (void)state;
    config_retries_t r = {.attempts = 1, .retry_on = RETRY_ON_GRPC_UNAVAILABLE};
    assert_true(retry_qualifies_grpc(&r, 14));
    assert_false(retry_qualifies_grpc(&r, 4));
    assert_false(retry_qualifies_grpc(&r, -1)); /* no grpc-status */
    assert_false(retry_qualifies_grpc(&r, 0));  /* OK */
    r.retry_on = RETRY_ON_GRPC_CANCELLED | RETRY_ON_GRPC_DEADLINE_EXCEEDED |
                 RETRY_ON_GRPC_RESOURCE_EXHAUSTED;
    assert_true(retry_qualifies_grpc(&r, 1));
    assert_true(retry_qualifies_grpc(&r, 4));
    assert_true(retry_qualifies_grpc(&r, 8));
    assert_false(retry_qualifies_grpc(&r, 14));
    r.retry_on = RETRY_ON_5XX; /* HTTP conditions say nothing of gRPC codes */
    assert_false(retry_qualifies_grpc(&r, 14));
    assert_false(retry_qualifies_grpc(NULL, 14));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qualifies_grpc),
        cmocka_unit_test(test_qualifies_5xx),
        cmocka_unit_test(test_qualifies_each_condition),
        cmocka_unit_test(test_fallback_defaults),
        cmocka_unit_test(test_idempotency_gate),
        cmocka_unit_test(test_backoff_full_jitter_bounds),
        cmocka_unit_test(test_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
