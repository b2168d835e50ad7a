/* observe/board: the window's buckets, sums over workers, rates and
 * percentiles, verdicts, bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "observe/board.h"

#define T0 (1000u * BOARD_BUCKET_MS) /* a bucket boundary, far from 0 */
#define WINDOW_MS ((uint64_t)BOARD_BUCKETS * BOARD_BUCKET_MS)

static json_t *group(json_t *route, const char *name)
{
    json_t *gs = json_object_get(route, "groups"), *g;
    size_t i;
    json_array_foreach(gs, i, g) if (strcmp(json_string_value(json_object_get(g, "name")), name) ==
                                     0) return g;
    fail_msg("no group %s", name);
    return NULL;
}

static long long num(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }
static double real(json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }
static const char *verdict(json_t *r) { return json_string_value(json_object_get(r, "verdict")); }

static void test_shares_rates_and_worker_sums(void **st)
{
    (void)st;
    board_t *b = board_new(2, T0);
    board_route_t *br = board_route(b, "orders", T0);
    assert_non_null(br);
    assert_ptr_equal(board_route(b, "orders", T0 + 5), br); /* found by name */
    uint32_t old = board_route_group(br, "monolith", BOARD_OLD);
    uint32_t neu = board_route_group(br, "orders-v2", BOARD_NEW);
    assert_int_equal(board_route_group(br, "monolith", BOARD_OLD), old);
    for (int i = 0; i < 60; i++) /* 1 ms each, on two workers */
        board_record(br, (unsigned)(i % 2), T0 + 100, old, 200, false, BOARD_NO_GROUP, 1000);
    for (int i = 0; i < 40; i++)
        board_record(br, 1, T0 + 200, neu, i < 4 ? 503 : 200, false, BOARD_NO_GROUP, 8000);
    /* A canary failure the old system answered: a fallback there, masked on the canary. */
    board_record(br, 0, T0 + 300, old, 200, true, neu, 2000);
    board_record_shadow(br, 0, T0 + 300, true);
    board_record_shadow(br, 1, T0 + 300, false);
    json_t *r = board_route_json(br, T0 + 500, 1700000000000ull);
    assert_string_equal(verdict(r), "migrating");
    json_t *t = json_object_get(r, "totals");
    assert_int_equal(num(t, "requests"), 101);
    assert_int_equal(num(t, "errors"), 4);
    assert_int_equal(num(t, "fallbacks"), 1);
    assert_int_equal(num(t, "masked"), 1);
    assert_true(real(t, "new_share") > 0.396 && real(t, "new_share") < 0.397);
    json_t *g = group(r, "orders-v2");
    assert_string_equal(json_string_value(json_object_get(g, "role")), "new");
    assert_int_equal(num(g, "requests"), 40);
    assert_int_equal(num(g, "masked"), 1);
    assert_true(real(g, "error_rate") == 0.1);
    /* A percentile is its slot's upper bound: 8 ms is below 16 ms, 1 ms below 2 ms. */
    assert_true(real(g, "p99_ms") == 16.0);
    assert_true(real(group(r, "monolith"), "p50_ms") == 2.0);
    /* The series: the last bucket holds it all. */
    json_t *series = json_object_get(json_object_get(g, "series"), "requests");
    assert_int_equal(json_array_size(series), BOARD_BUCKETS);
    assert_int_equal(json_integer_value(json_array_get(series, BOARD_BUCKETS - 1)), 40);
    assert_int_equal(json_integer_value(json_array_get(series, 0)), 0);
    json_t *sw = json_object_get(r, "shadow_window");
    assert_int_equal(num(sw, "compared"), 2);
    assert_true(real(sw, "match_rate") == 0.5);
    /* Bucket times: the last bucket starts at the current one's boundary. */
    assert_int_equal(num(r, "first_bucket_ms") + (BOARD_BUCKETS - 1) * BOARD_BUCKET_MS,
                     1700000000000ll - 500);
    json_decref(r);
    board_free(b);
}

static void test_window_slides_and_buckets_recycle(void **st)
{
    (void)st;
    board_t *b = board_new(1, T0);
    board_route_t *br = board_route(b, "r", T0);
    uint32_t g = board_route_group(br, "a", BOARD_OLD);
    board_record(br, 0, T0, g, 200, false, BOARD_NO_GROUP, 10);
    /* 89 buckets later it is still in the window; 90 later, gone. */
    json_t *r = board_route_json(br, T0 + 89 * BOARD_BUCKET_MS, 0);
    assert_int_equal(num(json_object_get(r, "totals"), "requests"), 1);
    json_decref(r);
    r = board_route_json(br, T0 + 90 * BOARD_BUCKET_MS, 0);
    assert_int_equal(num(json_object_get(r, "totals"), "requests"), 0);
    json_decref(r);
    /* The same slot of the ring, a window later: recycled, not added to. */
    board_record(br, 0, T0 + WINDOW_MS, g, 200, false, BOARD_NO_GROUP, 10);
    r = board_route_json(br, T0 + WINDOW_MS, 0);
    assert_int_equal(num(json_object_get(r, "totals"), "requests"), 1);
    json_decref(r);
    board_free(b);
}

static void test_verdicts(void **st)
{
    (void)st;
    board_t *b = board_new(1, T0);
    board_route_t *br = board_route(b, "r", T0);
    uint32_t old = board_route_group(br, "old", BOARD_OLD);
    uint32_t neu = board_route_group(br, "new", BOARD_NEW);
    json_t *r = board_route_json(br, T0, 0);
    assert_string_equal(verdict(r), "old"); /* no traffic: nothing on the new service */
    assert_false(json_is_true(json_object_get(r, "window_complete")));
    json_decref(r);
    board_record(br, 0, T0 + 10, old, 200, false, BOARD_NO_GROUP, 10);
    r = board_route_json(br, T0 + 10, 0);
    assert_string_equal(verdict(r), "old");
    json_decref(r);
    /* All on the new one, but not watched for the whole window yet. */
    uint64_t later = T0 + WINDOW_MS;
    board_record(br, 0, later, neu, 200, false, BOARD_NO_GROUP, 10);
    r = board_route_json(br, later + 10, 0);
    assert_string_equal(verdict(r), "new");
    assert_true(json_is_true(json_object_get(r, "window_complete")));
    json_decref(r);
    /* A fallback in the window keeps it migrating. */
    board_record(br, 0, later + 20, old, 200, true, neu, 10);
    r = board_route_json(br, later + 30, 0);
    assert_string_equal(verdict(r), "migrating");
    json_decref(r);
    /* Seen for less than the window: never "new". */
    board_route_t *young = board_route(b, "young", later);
    uint32_t yn = board_route_group(young, "new", BOARD_NEW);
    board_record(young, 0, later + 5, yn, 200, false, BOARD_NO_GROUP, 10);
    r = board_route_json(young, later + 10, 0);
    assert_string_equal(verdict(r), "migrating");
    json_decref(r);
    board_free(b);
}

static void test_bounds(void **st)
{
    (void)st;
    board_t *b = board_new(1, T0);
    board_route_t *br = board_route(b, "r", T0);
    char name[32];
    uint32_t last = 0;
    for (int i = 0; i < BOARD_MAX_GROUPS + 3; i++) {
        snprintf(name, sizeof name, "g%d", i);
        last = board_route_group(br, name, BOARD_OLD);
    }
    assert_int_equal(last, BOARD_MAX_GROUPS - 1); /* the rest share "other" */
    json_t *r = board_route_json(br, T0, 0);
    assert_int_equal(json_array_size(json_object_get(r, "groups")), BOARD_MAX_GROUPS);
    assert_non_null(group(r, "other"));
    json_decref(r);
    /* Out-of-range workers and groups are ignored, not written. */
    board_record(br, 7, T0, 0, 200, false, BOARD_NO_GROUP, 10);
    board_record(br, 0, T0, BOARD_MAX_GROUPS, 200, false, BOARD_NO_GROUP, 10);
    board_record(NULL, 0, T0, 0, 200, false, BOARD_NO_GROUP, 10);
    board_record_shadow(NULL, 0, T0, true);
    r = board_route_json(br, T0, 0);
    assert_int_equal(num(json_object_get(r, "totals"), "requests"), 0);
    json_decref(r);
    for (int i = 1; i < BOARD_MAX_ROUTES; i++) {
        snprintf(name, sizeof name, "route-%d", i);
        assert_non_null(board_route(b, name, T0));
    }
    assert_null(board_route(b, "one-too-many", T0));
    assert_non_null(board_route(b, "r", T0)); /* a known one is still found */
    board_free(b);
    board_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shares_rates_and_worker_sums),
        cmocka_unit_test(test_window_slides_and_buckets_recycle),
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
