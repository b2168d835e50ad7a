/* config/lint: each rule fires where the danger is written, and a clean
 * configuration (and the shipped example) gives no warning. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "config/lint.h"
#include "config/yaml_pos.h"

typedef struct seen {
    size_t n;
    char lines[16][600];
} seen_t;

static void collect(void *ctx, lint_rule_t rule, size_t line, size_t col, const char *msg)
{
    seen_t *s = ctx;
    if (s->n < 16)
        snprintf(s->lines[s->n], sizeof s->lines[0], "%zu:%zu [%s] %s", line, col,
                 lint_rule_name(rule), msg);
    s->n++;
}

/* text in a fresh temporary file (mkstemp under /tmp, as the other config
 * tests do); the caller unlinks path. */
static void write_temp(char path[static 32], const char *text)
{
    snprintf(path, 32, "/tmp/ficus-lint-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    if (n != (ssize_t)strlen(text)) {
        unlink(path);
        fail_msg("cannot write %s", path);
    }
}

/* Loads yaml (written to a file, as ficus check reads one) and lints it. */
static seen_t lint_yaml(const char *yaml)
{
    char path[32];
    write_temp(path, yaml);
    config_errors_t errs;
    config_errors_init(&errs);
    config_t *cfg = config_load_file(path, &errs);
    if (!cfg) {
        unlink(path);
        fail_msg("does not load: %s", errs.n ? errs.items[0] : "?");
    }
    config_errors_deinit(&errs);
    char err[256];
    yaml_pos_t *pos = yaml_pos_load(path, err, sizeof err);
    assert_non_null(pos);
    seen_t s = {0};
    size_t n = lint_config(cfg, pos, collect, &s);
    assert_int_equal(n, s.n);
    yaml_pos_free(pos);
    config_unref(cfg);
    unlink(path);
    return s;
}

static void expect_one(const seen_t *s, const char *want)
{
    if (s->n != 1 || !strstr(s->lines[0], want))
        fail_msg("want one warning with \"%s\", got %zu: %s", want, s->n, s->n ? s->lines[0] : "");
}

#define GROUPS                                                                                     \
    "target_groups:\n"                                                                             \
    "  old: {targets: [\"127.0.0.1:9000\"]}\n"                                                     \
    "  new: {targets: [\"127.0.0.1:9001\"]}\n"

static void test_clean_config_is_silent(void **st)
{
    (void)st;
    seen_t s = lint_yaml(GROUPS "routes:\n"
                                "  - name: a\n"
                                "    match: {path_prefix: /a, methods: [GET, HEAD]}\n"
                                "    backends: [{target_group: old}, {target_group: new, weight: "
                                "10, fallback: old}]\n"
                                "    timeout: 2s\n"
                                "    retries: {attempts: 1, per_try_timeout: 500ms, retry_on: "
                                "[5xx]}\n"
                                "  - name: b\n"
                                "    match: {path_prefix: /b, methods: [GET]}\n"
                                "    backends: [{target_group: old}]\n"
                                "    timeout: 1s\n");
    assert_int_equal(s.n, 0);
}

/* A route with a 1s timeout, `retries` options and a hedge after `after`. */
static seen_t lint_hedge(const char *retries, const char *after)
{
    char y[1024];
    snprintf(y, sizeof y,
             GROUPS "routes:\n"
                    "  - name: a\n"
                    "    match: {path_prefix: /a}\n"
                    "    backends: [{target_group: old}]\n"
                    "    timeout: 1s\n"
                    "    retries: {attempts: 0, retry_on: [5xx], %shedge: {after: %s}}\n",
             retries, after);
    return lint_yaml(y);
}

static void test_each_rule_fires_where_it_is_written(void **st)
{
    (void)st;
    seen_t s = lint_yaml(GROUPS "routes:\n"
                                "  - name: a\n"
                                "    match: {path_prefix: /a, methods: [GET]}\n"
                                "    backends: [{target_group: old}]\n"
                                "    timeout: 1s\n"
                                "    retries: {attempts: 3, per_try_timeout: 500ms, retry_on: "
                                "[5xx]}\n");
    expect_one(&s, "9:28 [try-exceeds-timeout]");
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_prefix: /a, methods: [GET]}\n"
                         "    backends: [{target_group: old}]\n"
                         "    timeout: 1s\n"
                         "    retries: {attempts: 1, per_try_timeout: 1s, retry_on: [reset]}\n");
    expect_one(&s, "[try-exceeds-timeout] route a: per_try_timeout 1s is not shorter");
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_prefix: /a, methods: [GET, POST]}\n"
                         "    backends: [{target_group: old}]\n"
                         "    timeout: 1s\n"
                         "    retries: {attempts: 1, retry_on: [5xx]}\n"
                         "    retry_non_idempotent: true\n"
                         "server:\n"
                         "  retry_buffer_size: 8MiB\n"
                         "  max_body_size: 8MiB\n");
    expect_one(&s, "10:5 [retry-non-idempotent]");
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_prefix: /a}\n"
                         "    backends: [{target_group: old}]\n"
                         "    timeout: 1s\n"
                         "    retries: {attempts: 1, retry_on: [connect-failure]}\n");
    expect_one(&s, "5:5 [retry-buffer-below-body]");
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_prefix: /a, methods: [GET]}\n"
                         "    backends: [{target_group: old, fallback: new}, {target_group: new, "
                         "fallback: old}]\n"
                         "    timeout: 1s\n");
    assert_int_equal(s.n, 2);
    assert_non_null(strstr(s.lines[0], "[fallback-is-canary] route a: the fallback new"));
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_prefix: /a, methods: [GET]}\n"
                         "    backends: [{target_group: old}]\n"
                         "    timeout: 1s\n"
                         "    shadow: {target_group: new, methods: [GET, PUT]}\n");
    expect_one(&s, "9:33 [shadow-side-effects]");
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_prefix: /a}\n"
                         "    backends: [{target_group: old}]\n");
    expect_one(&s, "5:5 [no-timeout] route a sets no timeout");
    /* A hedge after the try's own timeout, or with no deadline left for it;
     * a learned delay, or an early enough one, is fine. */
    s = lint_hedge("per_try_timeout: 200ms, ", "250ms");
    expect_one(&s, "[hedge-after-timeout] route a: hedge.after 250ms is not shorter than "
                   "per_try_timeout 200ms");
    s = lint_hedge("", "997ms");
    expect_one(&s, "[hedge-after-timeout] route a: hedge.after 997ms leaves less than");
    s = lint_hedge("per_try_timeout: 200ms, ", "p99");
    assert_int_equal(s.n, 0);
    s = lint_hedge("", "100ms");
    assert_int_equal(s.n, 0);
    /* Aggregation routes: aggregate.timeout is their timeout, and bounds
     * their calls' tries; longer than the route's, the request's deadline
     * ends it first; a route without a body has no body to retry. */
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path: /a}\n"
                         "    aggregate: {timeout: 300ms, calls: [{name: x, target_group: old, "
                         "path: /x}]}\n");
    assert_int_equal(s.n, 0);
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path: /a}\n"
                         "    timeout: 500ms\n"
                         "    aggregate: {timeout: 800ms, calls: [{name: x, target_group: old, "
                         "path: /x}]}\n");
    expect_one(&s, "8:17 [try-exceeds-timeout] route a: aggregate.timeout 800ms is longer than "
                   "the route's timeout 500ms");
    s = lint_yaml(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path: /a}\n"
                         "    retries: {attempts: 1, retry_on: [5xx], per_try_timeout: 200ms}\n"
                         "    aggregate: {timeout: 300ms, calls: [{name: x, target_group: old, "
                         "path: /x}]}\n");
    expect_one(&s, "[try-exceeds-timeout] route a: 2 tries of per_try_timeout 200ms plus backoff "
                   "need 425ms, more than the aggregate.timeout 300ms");
}

static void test_unreachable_routes_without_false_alarms(void **st)
{
    (void)st;
    /* Wider prefix first: the later route is dead. */
    seen_t s = lint_yaml(GROUPS "routes:\n"
                                "  - {name: api, match: {path_prefix: /api}, backends: "
                                "[{target_group: old}], timeout: 1s}\n"
                                "  - {name: orders, match: {path: /api/orders}, backends: "
                                "[{target_group: new}], timeout: 1s}\n");
    expect_one(&s, "[unreachable-route] route orders is never used: route api");
    /* A regex first, an exact path it matches: decidable. */
    s = lint_yaml(GROUPS "routes:\n"
                         "  - {name: re, match: {path_regex: \"/o/[0-9]+\"}, backends: "
                         "[{target_group: old}], timeout: 1s}\n"
                         "  - {name: one, match: {path: /o/7}, backends: [{target_group: new}], "
                         "timeout: 1s}\n");
    expect_one(&s, "[unreachable-route] route one");
    /* Narrower conditions on the earlier route: reachable; a regex later: undecided. */
    s = lint_yaml(GROUPS "routes:\n"
                         "  - {name: get, match: {path_prefix: /api, methods: [GET]}, backends: "
                         "[{target_group: old}], timeout: 1s}\n"
                         "  - {name: host, match: {path_prefix: /api, host: a.example}, backends: "
                         "[{target_group: old}], timeout: 1s}\n"
                         "  - {name: hdr, match: {path_prefix: /api, headers: {x-beta: \"1\"}}, "
                         "backends: [{target_group: old}], timeout: 1s}\n"
                         "  - {name: all, match: {path_prefix: /api}, backends: [{target_group: "
                         "new}], timeout: 1s}\n"
                         "  - {name: re, match: {path_regex: \"/api/.*\"}, backends: "
                         "[{target_group: new}], timeout: 1s}\n");
    /* re's paths all start with /api, but a regex is not decided against a
     * prefix other than "/": silence rather than a false alarm. */
    assert_int_equal(s.n, 0);
    s = lint_yaml(GROUPS "routes:\n"
                         "  - {name: all, match: {path_prefix: /}, backends: [{target_group: "
                         "old}], timeout: 1s}\n"
                         "  - {name: re, match: {path_regex: \"/x/.*\"}, backends: "
                         "[{target_group: new}], timeout: 1s}\n");
    expect_one(&s, "6:16 [unreachable-route] route re is never used: route all");
}

static void test_fleet_wide_rules(void **st)
{
    (void)st;
    seen_t s = lint_yaml("server:\n"
                         "  trusted_proxies: [\"10.0.0.0/8\", \"0.0.0.0/0\"]\n" GROUPS "routes:\n"
                         "  - {name: a, match: {path_prefix: /, methods: [GET]}, backends: "
                         "[{target_group: old}], timeout: 1s}\n");
    expect_one(&s, "2:35 [untrusted-forwarded-for] every address");
    s = lint_yaml("server:\n"
                  "  listen: [\"127.0.0.1:8080\"]\n" GROUPS "routes:\n"
                  "  - name: a\n"
                  "    match: {path_prefix: /, methods: [GET]}\n"
                  "    backends: [{target_group: old}]\n"
                  "    timeout: 1s\n"
                  "    rate_limit: {requests_per_second: 5, burst: 5, by: ip}\n");
    expect_one(&s, "[untrusted-forwarded-for] route a limits by client address");
    s = lint_yaml("target_groups:\n"
                  "  mono: {targets: [\"127.0.0.1:9000\"], required: true}\n"
                  "routes:\n"
                  "  - {name: a, match: {path_prefix: /a, methods: [GET]}, backends: "
                  "[{target_group: mono}], timeout: 1s}\n"
                  "  - {name: b, match: {path_prefix: /b, methods: [GET]}, backends: "
                  "[{target_group: mono}], timeout: 1s}\n");
    expect_one(&s, "2:39 [required-shared-group] mono is required");
    const char *tls_routes = "routes:\n"
                             "  - {name: a, match: {path_prefix: /, methods: [GET]}, backends: "
                             "[{target_group: pay}], timeout: 1s}\n";
    char y[512];
    snprintf(y, sizeof y,
             "target_groups:\n  pay: {targets: [\"10.0.0.1:443\"], tls: {verify: false}}\n%s",
             tls_routes);
    s = lint_yaml(y);
    expect_one(&s, "2:42 [tls-verify-off] pay does not verify");
    /* verified (tls: {} is verify: true), or no TLS at all: nothing */
    snprintf(y, sizeof y, "target_groups:\n  pay: {targets: [\"10.0.0.1:443\"], tls: {}}\n%s",
             tls_routes);
    s = lint_yaml(y);
    assert_int_equal(s.n, 0);
}

static void test_ignore_top_and_per_route(void **st)
{
    (void)st;
    const char *routes = "routes:\n"
                         "  - {name: a, match: {path_prefix: /a, methods: [GET]}, backends: "
                         "[{target_group: old}]}\n"
                         "  - name: b\n"
                         "    match: {path_prefix: /b, methods: [GET]}\n"
                         "    backends: [{target_group: old}]\n"
                         "    lint: {ignore: [no-timeout]}\n";
    char y[1024];
    snprintf(y, sizeof y, "%s%s", GROUPS, routes);
    seen_t s = lint_yaml(y); /* b silences it for itself only */
    expect_one(&s, "[no-timeout] route a");
    snprintf(y, sizeof y, "lint: {ignore: [no-timeout, unreachable-route]}\n%s%s", GROUPS, routes);
    s = lint_yaml(y);
    assert_int_equal(s.n, 0);
    /* An unknown rule is an error at its name. */
    config_errors_t errs;
    config_errors_init(&errs);
    const char *bad = "lint: {ignore: [no-timeout, no-timeouts]}\n" GROUPS
                      "routes: [{name: a, match: {path_prefix: /}, backends: [{target_group: "
                      "old}]}]\n";
    config_t *cfg = config_load_string(bad, strlen(bad), "t.yaml", &errs);
    assert_null(cfg);
    assert_int_equal(errs.n, 1);
    assert_non_null(strstr(errs.items[0], "t.yaml:1:29: lint.ignore[1]: unknown lint rule "
                                          "\"no-timeouts\" (the rules: retry-non-idempotent, "));
    config_errors_deinit(&errs);
}

static void test_positions(void **st)
{
    (void)st;
    char path[32];
    write_temp(path, "a:\n  b: [x, {c: 1}]\n  d: 2\n");
    char err[128];
    yaml_pos_t *p = yaml_pos_load(path, err, sizeof err);
    assert_non_null(p);
    size_t line, col;
    assert_true(yaml_pos_find(p, "a.b.1.c", &line, &col));
    assert_int_equal(line, 2);
    assert_int_equal(col, 11);
    assert_true(yaml_pos_find(p, "a.d", &line, &col));
    assert_int_equal(line, 3);
    assert_int_equal(col, 3);
    /* Missing: the deepest part that exists. */
    assert_false(yaml_pos_find(p, "a.b.7", &line, &col));
    assert_int_equal(line, 2);
    assert_false(yaml_pos_find(p, "a.zz.q", &line, &col));
    assert_int_equal(line, 1);
    yaml_pos_free(p);
    unlink(path);
    assert_null(yaml_pos_load("/nonexistent/ficus.yaml", err, sizeof err));
    assert_int_equal(lint_rule_find("no-timeout", 10), LINT_NO_TIMEOUT);
    assert_int_equal(lint_rule_find("nope", 4), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_config_is_silent),
        cmocka_unit_test(test_each_rule_fires_where_it_is_written),
        cmocka_unit_test(test_unreachable_routes_without_false_alarms),
        cmocka_unit_test(test_fleet_wide_rules),
        cmocka_unit_test(test_ignore_top_and_per_route),
        cmocka_unit_test(test_positions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
