/* Shared target state: outlier ejection, health-check thresholds, breaker
 * counters (policy/health.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>

#include "policy/health.h"

static config_target_t targets[4];
static config_target_group_t group;
static config_t cfg;

static health_t *make(size_t n, uint32_t consecutive, uint32_t max_pct)
{
    memset(&group, 0, sizeof group);
    memset(&cfg, 0, sizeof cfg);
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_in *a = (struct sockaddr_in *)&targets[i].addr;
        memset(&targets[i], 0, sizeof targets[i]);
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)(9000 + i));
        targets[i].addrlen = sizeof *a;
        targets[i].numeric = true;
    }
    group.name = "g";
    group.targets = targets;
    group.n_targets = n;
    group.has_outlier = true;
    group.outlier = (config_outlier_t){consecutive, 1000, max_pct};
    group.has_health_check = true;
    group.health_check = (config_health_check_t){"/h", 100, 50, 2, 3};
    cfg.target_groups = &group;
    cfg.n_target_groups = 1;
    health_t *h = health_new(&cfg);
    assert_non_null(h);
    return h;
}

static void test_ejection_after_consecutive_errors(void **state)
{
    (void)state;
    health_t *h = make(2, 3, 50);
    health_group_t *g = &h->groups[0];
    assert_true(health_target_usable(&g->targets[0], 0));
    assert_false(health_record(g, 0, true, 10));
    assert_false(health_record(g, 0, true, 10));
    /* A success in between starts the count again. */
    assert_false(health_record(g, 0, false, 10));
    assert_false(health_record(g, 0, true, 10));
    assert_false(health_record(g, 0, true, 10));
    assert_true(health_record(g, 0, true, 10));
    assert_false(health_target_usable(&g->targets[0], 10));
    assert_int_equal(health_group_usable(g, 10), 1);
    /* base_ejection_time x 1, then usable again on its own. */
    assert_false(health_target_usable(&g->targets[0], 1009));
    assert_true(health_target_usable(&g->targets[0], 1010));
    /* The second ejection lasts twice as long. */
    for (int i = 0; i < 2; i++)
        health_record(g, 0, true, 2000);
    assert_true(health_record(g, 0, true, 2000));
    assert_false(health_target_usable(&g->targets[0], 3999));
    assert_true(health_target_usable(&g->targets[0], 4000));
    health_free(h);
}

static void test_max_ejection_percent(void **state)
{
    (void)state;
    health_t *h = make(2, 1, 50);
    health_group_t *g = &h->groups[0];
    assert_true(health_record(g, 0, true, 10));
    /* Ejecting the second would pass 50% of the group. */
    assert_false(health_record(g, 1, true, 10));
    assert_true(health_target_usable(&g->targets[1], 10));
    health_free(h);

    h = make(1, 1, 50);
    assert_false(health_record(&h->groups[0], 0, true, 10));
    health_free(h);

    h = make(1, 1, 100);
    assert_true(health_record(&h->groups[0], 0, true, 10));
    assert_int_equal(health_group_usable(&h->groups[0], 10), 0);
    health_free(h);
}

static void test_health_check_thresholds(void **state)
{
    (void)state;
    health_t *h = make(1, 5, 50);
    health_group_t *g = &h->groups[0];
    /* unhealthy_threshold 3, healthy_threshold 2; healthy to start with. */
    assert_int_equal(health_check_result(g, 0, false), 0);
    assert_int_equal(health_check_result(g, 0, false), 0);
    assert_true(health_target_usable(&g->targets[0], 0));
    assert_int_equal(health_check_result(g, 0, false), -1);
    assert_false(health_target_usable(&g->targets[0], 0));
    assert_int_equal(health_check_result(g, 0, true), 0);
    assert_int_equal(health_check_result(g, 0, false), 0);
    assert_int_equal(health_check_result(g, 0, true), 0);
    assert_int_equal(health_check_result(g, 0, true), +1);
    assert_true(health_target_usable(&g->targets[0], 0));
    health_free(h);
}

static void test_breaker_counters(void **state)
{
    (void)state;
    atomic_uint c;
    atomic_init(&c, 0);
    assert_true(health_acquire(&c, 2));
    assert_true(health_acquire(&c, 2));
    assert_false(health_acquire(&c, 2));
    assert_int_equal(atomic_load(&c), 2);
    health_release(&c);
    assert_true(health_acquire(&c, 2));
}

static void test_address_swap(void **state)
{
    (void)state;
    health_t *h = make(1, 5, 50);
    health_target_t *t = &h->groups[0].targets[0];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1234)};
    health_set_addr(t, (struct sockaddr *)&a, sizeof a, NULL, NULL);
    const health_addr_t *cur = atomic_load(&t->addr);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&cur->ss)->sin_port), 1234);
    health_free(h);
}

/* A reload keeps what the old snapshot knew of targets that are still
 * there (matched by group and target name), and nothing of the others. */
static void test_inherit_by_name(void **state)
{
    (void)state;
    static const char old_yaml[] = "target_groups:\n"
                                   "  g: {targets: ['127.0.0.1:9001', '127.0.0.1:9002']}\n"
                                   "routes: [{name: r, match: {path_prefix: /}, "
                                   "backends: [{target_group: g}]}]\n";
    static const char new_yaml[] = "target_groups:\n"
                                   "  h: {targets: ['127.0.0.1:9001']}\n"
                                   "  g: {targets: ['127.0.0.1:9003', '127.0.0.1:9002']}\n"
                                   "routes: [{name: r, match: {path_prefix: /}, "
                                   "backends: [{target_group: g}, {target_group: h}]}]\n";
    config_errors_t errs;
    config_errors_init(&errs);
    config_t *a = config_load_string(old_yaml, sizeof old_yaml - 1, "old", &errs);
    config_t *b = config_load_string(new_yaml, sizeof new_yaml - 1, "new", &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_error("%s\n", errs.items[i]);
    assert_non_null(a);
    assert_non_null(b);
    config_errors_deinit(&errs);
    health_t *ho = health_new(a), *hn = health_new(b);
    /* Old: 9002 unhealthy and ejected twice, 9001 with errors. */
    atomic_store(&ho->groups[0].targets[1].checked_healthy, 0);
    atomic_store(&ho->groups[0].targets[1].ejections, 2);
    atomic_store(&ho->groups[0].targets[1].ejected_until_ms, 5000);
    atomic_store(&ho->groups[0].targets[0].consecutive_errors, 4);
    health_inherit(hn, ho);
    size_t g = config_find_target_group(b, "g"), h = config_find_target_group(b, "h");
    const health_target_t *t9002 = &hn->groups[g].targets[1];
    assert_int_equal(atomic_load(&t9002->checked_healthy), 0);
    assert_int_equal(atomic_load(&t9002->ejections), 2);
    assert_int_equal(atomic_load(&t9002->ejected_until_ms), 5000);
    /* 9003 is new; 9001 of group h is another group's target. */
    assert_int_equal(atomic_load(&hn->groups[g].targets[0].checked_healthy), 1);
    assert_int_equal(atomic_load(&hn->groups[h].targets[0].consecutive_errors), 0);
    health_free(ho);
    health_free(hn);
    config_unref(a);
    config_unref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ejection_after_consecutive_errors),
        cmocka_unit_test(test_max_ejection_percent),
        cmocka_unit_test(test_health_check_thresholds),
        cmocka_unit_test(test_breaker_counters),
        cmocka_unit_test(test_address_swap),
        cmocka_unit_test(test_inherit_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
