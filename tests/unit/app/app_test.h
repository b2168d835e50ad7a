/* Helpers shared by the app/ unit tests (header only: tests link the
 * library, never each other). */
#ifndef FICUS_TESTS_UNIT_APP_TEST_H
#define FICUS_TESTS_UNIT_APP_TEST_H

#include <string.h>

#include "config/config.h"

/* A valid config from yaml; the test fails (printing why) otherwise. */
static inline config_t *app_test_config(const char *yaml)
{
    config_errors_t e;
    config_errors_init(&e);
    config_t *c = config_load_string(yaml, strlen(yaml), "t.yaml", &e);
    for (size_t i = 0; i < e.n; i++)
        print_message("unexpected: %s\n", e.items[i]);
    config_errors_deinit(&e);
    assert_non_null(c);
    return c;
}

#endif
