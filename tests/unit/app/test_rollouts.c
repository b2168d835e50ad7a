/* app/rollouts.h: the canary percent turned into weights, a rollout adopted
 * across a reload only when its block and its backends did not change, its
 * transitions counted across reloads, actions applied to the weights at
 * once, and what the admin API and /metrics show. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "app/rollouts.h"
#include "app_test.h"
#include "core/errors.h"

/* --------------------------------------------------------------- weights */

static config_route_t route_of(config_backend_t *b, size_t n)
{
    return (config_route_t){.name = "r", .backends = b, .n_backends = n};
}

static uint32_t sum(const uint32_t *v, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

static void test_weights_canary_gets_its_percent(void **state)
{
    (void)state;
    config_backend_t b[] = {{.weight = 3}, {.weight = 1}, {.weight = 0}};
    config_route_t rt = route_of(b, 3);
    uint32_t v[3];
    rollouts_weights(&rt, 2, 0, v);
    assert_int_equal(v[0], 7500);
    assert_int_equal(v[1], 2500);
    assert_int_equal(v[2], 0);
    rollouts_weights(&rt, 2, 1, v);
    assert_int_equal(v[0], 7425);
    assert_int_equal(v[1], 2475);
    assert_int_equal(v[2], 100);
    rollouts_weights(&rt, 2, 100, v);
    assert_int_equal(v[0], 0);
    assert_int_equal(v[1], 0);
    assert_int_equal(v[2], ROLLOUTS_WEIGHT_TOTAL);
    rollouts_weights(&rt, 2, 250, v); /* clamped */
    assert_int_equal(v[2], ROLLOUTS_WEIGHT_TOTAL);
}

static void test_weights_shares_stay_exact(void **state)
{
    (void)state;
    /* Every percent, uneven weights: the total is always exact, the canary
     * exact, and the others within one unit of their exact share. */
    config_backend_t b[] = {
        {.weight = 7}, {.weight = 0}, {.weight = 5}, {.weight = 11}, {.weight = 2}};
    config_route_t rt = route_of(b, 5);
    for (uint32_t p = 0; p <= 100; p++) {
        uint32_t v[5];
        rollouts_weights(&rt, 4, p, v);
        assert_int_equal(sum(v, 5), ROLLOUTS_WEIGHT_TOTAL);
        assert_int_equal(v[4], p * 100);
        assert_int_equal(v[1], 0); /* configured 0: stays 0 */
        double rest = ROLLOUTS_WEIGHT_TOTAL - p * 100.0;
        const uint32_t cw[] = {7, 0, 5, 11};
        for (int i = 0; i < 4; i++) {
            double exact = rest * cw[i] / 23.0;
            assert_true(v[i] + 1.0 > exact && v[i] < exact + 1.0);
        }
    }
    /* Three equal others and a remainder: the first ones get the units. */
    config_backend_t e[] = {{.weight = 1}, {.weight = 1}, {.weight = 1}, {.weight = 0}};
    rt = route_of(e, 4);
    uint32_t v[4];
    rollouts_weights(&rt, 3, 0, v);
    assert_int_equal(v[0], 3334);
    assert_int_equal(v[1], 3333);
    assert_int_equal(v[2], 3333);
}

static void test_weights_others_all_zero_split_evenly(void **state)
{
    (void)state;
    /* Only the canary had weight: the rest still has to go somewhere. */
    config_backend_t b[] = {{.weight = 0}, {.weight = 4}, {.weight = 0}};
    config_route_t rt = route_of(b, 3);
    uint32_t v[3];
    rollouts_weights(&rt, 1, 20, v);
    assert_int_equal(v[1], 2000);
    assert_int_equal(v[0], 4000);
    assert_int_equal(v[2], 4000);
}

/* ---------------------------------------------------------------- configs */

#define ROLLOUT_BLOCK                                                                              \
    "    rollout: {canary: v2, steps: [1, 5, 50], interval: %s, min_requests: 5}\n"

/* A config with route "a" (v1 3, v3 1, canary v2) that has a rollout, and
 * route "plain" without. */
static config_t *make(const char *interval, int v1_weight, const char *fallback, bool swap_groups)
{
    char yaml[2048];
    const char *groups = swap_groups ? "  v3: {targets: [\"10.0.0.3:80\"]}\n"
                                       "  v2: {targets: [\"10.0.0.2:80\"]}\n"
                                       "  v1: {targets: [\"10.0.0.1:80\"]}\n"
                                     : "  v1: {targets: [\"10.0.0.1:80\"]}\n"
                                       "  v2: {targets: [\"10.0.0.2:80\"]}\n"
                                       "  v3: {targets: [\"10.0.0.3:80\"]}\n";
    char block[256];
    snprintf(block, sizeof block, ROLLOUT_BLOCK, interval);
    snprintf(yaml, sizeof yaml,
             "server: {listen: [\"127.0.0.1:8080\"]}\n"
             "admin: {listen: \"127.0.0.1:9901\"}\n"
             "target_groups:\n%s"
             "routes:\n"
             "  - name: plain\n"
             "    match: {path_prefix: /plain}\n"
             "    backends: [{target_group: v1}]\n"
             "  - name: a\n"
             "    match: {path_prefix: /}\n"
             "    backends:\n"
             "      - {target_group: v1, weight: %d}\n"
             "      - {target_group: v3, weight: 1}\n"
             "      - {target_group: v2, weight: 0, fallback: %s}\n"
             "%s",
             groups, v1_weight, fallback, block);
    return app_test_config(yaml);
}

typedef struct gen {
    config_t *cfg;
    weights_t *w;
    rollouts_t *rs;
} gen_t;

static gen_t gen_start(config_t *cfg, gen_t *prev, uint64_t now)
{
    gen_t g = {.cfg = cfg, .w = weights_new(cfg)};
    assert_non_null(g.w);
    g.rs = rollouts_new(cfg, prev ? prev->rs : NULL, now);
    assert_non_null(g.rs);
    rollouts_attach(g.rs, g.w);
    return g;
}

static void gen_end(gen_t *g)
{
    rollouts_free(g->rs);
    weights_free(g->w);
    config_unref(g->cfg);
}

static uint32_t canary_weight(const gen_t *g) { return weights_get(g->w, 1, 2); }

static bool metrics_have(const rollouts_t *rs, const char *needle)
{
    buf_t b;
    buf_init(&b, 1 << 16);
    rollouts_metrics(rs, &b);
    buf_append(&b, "", 1);
    bool found = strstr(b.data, needle) != NULL;
    buf_deinit(&b);
    return found;
}

/* --------------------------------------------------------- one generation */

static void test_activation_gives_the_canary_nothing_yet(void **state)
{
    (void)state;
    gen_t g = gen_start(make("2s", 3, "v1", false), NULL, 1000);
    assert_null(rollouts_table(g.rs)[0]);
    assert_non_null(rollouts_table(g.rs)[1]);
    assert_ptr_equal(rollouts_get(g.rs, 1), rollouts_table(g.rs)[1]);
    assert_null(rollouts_get(g.rs, 99));
    /* Pending: 0, whatever the file said; the others share all of it. */
    assert_int_equal(canary_weight(&g), 0);
    assert_int_equal(weights_get(g.w, 1, 0), 7500);
    assert_int_equal(weights_get(g.w, 1, 1), 2500);
    assert_int_equal(weights_get(g.w, 0, 0), 1); /* the other route untouched */
    /* The first tick starts step 1 (no mismatch limit to wait for). */
    rollouts_tick(g.rs, 2000);
    assert_int_equal(canary_weight(&g), 100);
    /* Without evidence the step is extended, never promoted. */
    for (uint64_t t = 3000; t < 20000; t += 1000)
        rollouts_tick(g.rs, t);
    assert_int_equal(canary_weight(&g), 100);
    gen_end(&g);
}

static void test_actions_apply_at_once(void **state)
{
    (void)state;
    gen_t g = gen_start(make("2s", 3, "v1", false), NULL, 1000);
    rollouts_tick(g.rs, 2000);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PROMOTE, 2100), 0);
    assert_int_equal(canary_weight(&g), 500);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PAUSE, 2200), 0);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PAUSE, 2300), FE_INVAL);
    assert_int_equal(canary_weight(&g), 500);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_RESUME, 2400), 0);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PROMOTE, 2500), 0);
    assert_int_equal(canary_weight(&g), 5000);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PROMOTE, 2600), 0);
    assert_int_equal(canary_weight(&g), ROLLOUTS_WEIGHT_TOTAL);
    assert_int_equal(weights_get(g.w, 1, 0), 0);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PROMOTE, 2700), FE_INVAL);
    assert_true(metrics_have(g.rs, "ficus_rollout_state{route=\"a\",state=\"promoted\"} 1\n"));
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_ROLLBACK, 2800), 0);
    assert_int_equal(canary_weight(&g), 0);
    assert_int_equal(weights_get(g.w, 1, 0), 7500);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_RESTART, 2900), 0);
    assert_true(metrics_have(g.rs, "ficus_rollout_state{route=\"a\",state=\"pending\"} 1\n"));
    rollouts_tick(g.rs, 3900);
    assert_int_equal(canary_weight(&g), 100);
    assert_int_equal(rollouts_action(g.rs, 0, ROLLOUT_ACTION_PAUSE, 4000), FE_NOTFOUND);
    gen_end(&g);
}

static void test_action_names(void **state)
{
    (void)state;
    rollout_action_t a = ROLLOUT_ACTION_PAUSE;
    assert_int_equal(rollouts_action_parse("rollback", 8, &a), 0);
    assert_int_equal(a, ROLLOUT_ACTION_ROLLBACK);
    assert_int_equal(rollouts_action_parse("restart", 7, &a), 0);
    assert_int_equal(a, ROLLOUT_ACTION_RESTART);
    assert_int_equal(rollouts_action_parse("rollbackx", 9, &a), FE_NOTFOUND);
    assert_int_equal(rollouts_action_parse("roll", 4, &a), FE_NOTFOUND);
    assert_int_equal(rollouts_action_parse("", 0, &a), FE_NOTFOUND);
}

static void test_metrics_families_once(void **state)
{
    (void)state;
    gen_t g = gen_start(make("2s", 3, "v1", false), NULL, 1000);
    rollouts_tick(g.rs, 2000);
    buf_t b;
    buf_init(&b, 1 << 16);
    rollouts_metrics(g.rs, &b);
    buf_append(&b, "", 1);
    const char *families[] = {"# TYPE ficus_rollout_step gauge\n",
                              "# TYPE ficus_rollout_state gauge\n",
                              "# TYPE ficus_rollout_transitions_total counter\n"};
    for (size_t i = 0; i < 3; i++) {
        const char *at = strstr(b.data, families[i]);
        assert_non_null(at);
        assert_null(strstr(at + 1, families[i]));
    }
    assert_non_null(strstr(b.data, "ficus_rollout_step{route=\"a\"} 1\n"));
    assert_non_null(strstr(b.data, "ficus_rollout_state{route=\"a\",state=\"step\"} 1\n"));
    assert_non_null(strstr(b.data, "ficus_rollout_state{route=\"a\",state=\"rolled_back\"} 0\n"));
    assert_non_null(
        strstr(b.data, "ficus_rollout_transitions_total{route=\"a\",to=\"step\",reason=\"start\"} "
                       "1\n"));
    assert_null(strstr(b.data, "route=\"plain\""));
    buf_deinit(&b);
    gen_end(&g);
}

static void test_json_shows_state_steps_history_config(void **state)
{
    (void)state;
    gen_t g = gen_start(make("2s", 3, "v1", false), NULL, 1000);
    rollouts_tick(g.rs, 2000);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PAUSE, 2500), 0);
    assert_null(rollouts_json(g.rs, 0, 3000, 1700000000000));
    json_t *j = rollouts_json(g.rs, 1, 3000, 1700000000000);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "paused");
    assert_string_equal(json_string_value(json_object_get(j, "paused_from")), "step");
    assert_string_equal(json_string_value(json_object_get(j, "canary")), "v2");
    assert_int_equal(json_integer_value(json_object_get(j, "step")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "canary_percent")), 1);
    json_t *w = json_object_get(j, "weights");
    assert_int_equal(json_integer_value(json_object_get(w, "v2")), 100);
    assert_int_equal(json_array_size(json_object_get(j, "steps")), 3);
    json_t *h = json_object_get(j, "history");
    assert_int_equal(json_array_size(h), 2);
    json_t *last = json_array_get(h, 1);
    assert_string_equal(json_string_value(json_object_get(last, "to")), "paused");
    assert_string_equal(json_string_value(json_object_get(last, "cause")), "manual");
    /* 500 ms ago on the wall clock. */
    assert_string_equal(json_string_value(json_object_get(last, "at")), "2023-11-14T22:13:19.500Z");
    json_t *cfg = json_object_get(j, "config");
    assert_string_equal(json_string_value(json_object_get(cfg, "canary")), "v2");
    assert_non_null(json_object_get(j, "current"));
    json_decref(j);
    gen_end(&g);
}

/* ----------------------------------------------------------------- reloads */

/* Moves route a's rollout to step 2, paused; returns the generation. */
static gen_t advanced(void)
{
    gen_t g = gen_start(make("2s", 3, "v1", false), NULL, 1000);
    rollouts_tick(g.rs, 2000);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PROMOTE, 2100), 0);
    assert_int_equal(rollouts_action(g.rs, 1, ROLLOUT_ACTION_PAUSE, 2200), 0);
    assert_int_equal(canary_weight(&g), 500);
    return g;
}

static void test_reload_keeps_an_unchanged_rollout(void **state)
{
    (void)state;
    gen_t a = advanced();
    /* Same block and backends; the target groups listed in another order
     * (their indexes move, their names do not). */
    gen_t b = gen_start(make("2s", 3, "v1", true), &a, 3000);
    assert_int_equal(canary_weight(&b), 500);
    assert_true(metrics_have(b.rs, "ficus_rollout_state{route=\"a\",state=\"paused\"} 1\n"));
    /* Counted across the reload, and the adopted history not counted twice. */
    assert_true(metrics_have(b.rs, "{route=\"a\",to=\"step\",reason=\"manual\"} 1\n"));
    assert_true(metrics_have(b.rs, "{route=\"a\",to=\"paused\",reason=\"manual\"} 1\n"));
    assert_int_equal(rollouts_action(b.rs, 1, ROLLOUT_ACTION_RESUME, 3100), 0);
    assert_true(metrics_have(b.rs, "{route=\"a\",to=\"step\",reason=\"manual\"} 2\n"));
    gen_end(&a);
    gen_end(&b);
}

static void test_reload_restarts_a_changed_rollout(void **state)
{
    (void)state;
    struct {
        const char *interval;
        int v1_weight;
        const char *fallback;
    } changes[] = {{"3s", 3, "v1"}, {"2s", 4, "v1"}, {"2s", 3, "v3"}};
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        gen_t a = advanced();
        gen_t b = gen_start(
            make(changes[i].interval, changes[i].v1_weight, changes[i].fallback, false), &a, 3000);
        assert_int_equal(canary_weight(&b), 0);
        assert_true(metrics_have(b.rs, "ficus_rollout_state{route=\"a\",state=\"pending\"} 1\n"));
        /* The counters still do not go back. */
        assert_true(metrics_have(b.rs, "{route=\"a\",to=\"paused\",reason=\"manual\"} 1\n"));
        gen_end(&a);
        gen_end(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_canary_gets_its_percent),
        cmocka_unit_test(test_weights_shares_stay_exact),
        cmocka_unit_test(test_weights_others_all_zero_split_evenly),
        cmocka_unit_test(test_activation_gives_the_canary_nothing_yet),
        cmocka_unit_test(test_actions_apply_at_once),
        cmocka_unit_test(test_action_names),
        cmocka_unit_test(test_metrics_families_once),
        cmocka_unit_test(test_json_shows_state_steps_history_config),
        cmocka_unit_test(test_reload_keeps_an_unchanged_rollout),
        cmocka_unit_test(test_reload_restarts_a_changed_rollout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
