/* Run-time weights (routing/weights.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "routing/weights.h"

static void test_load_set_version(void **state)
{
    (void)state;
    config_backend_t b[2] = {{.weight = 90}, {.weight = 10}};
    config_route_t r = {.name = "search", .backends = b, .n_backends = 2};
    config_t cfg = {.routes = &r, .n_routes = 1};
    weights_t *w = weights_new(&cfg);
    assert_non_null(w);
    uint32_t v[2];
    weights_load(w, 0, v);
    assert_int_equal(v[0], 90);
    assert_int_equal(v[1], 10);
    uint32_t ver = weights_version(w, 0);
    uint32_t nv[2] = {50, 50};
    weights_set(w, 0, nv);
    assert_int_not_equal(weights_version(w, 0), ver);
    assert_int_equal(weights_get(w, 0, 0), 50);
    assert_int_equal(weights_get(w, 0, 1), 50);
    /* The config itself is untouched: a reload starts from it again. */
    assert_int_equal(b[0].weight, 90);
    weights_free(w);
    weights_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_load_set_version)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
