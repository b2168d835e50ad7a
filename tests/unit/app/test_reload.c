/* app/reload.h, its pure parts: which settings a reload refuses (they are
 * bound at start), the file hash that tells a real change from a touch, and
 * which watch events concern the configuration file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <unistd.h>

#include "app/reload.h"
#include "app_test.h"

/* ------------------------------------------------ restart-only settings */

typedef struct knobs {
    const char *listen, *workers, *max_connections, *max_header_size, *control_socket, *admin,
        *access_log, *otlp, *service, *drain_timeout, *prefix, *log_level;
} knobs_t;

static const knobs_t base = {.listen = "[\"127.0.0.1:8080\"]",
                             .workers = "2",
                             .max_connections = "1000",
                             .max_header_size = "16KiB",
                             .admin = "127.0.0.1:9901",
                             .access_log = "/tmp/ficus-access.log",
                             .otlp = "http://127.0.0.1:4318/v1/traces",
                             .service = "gateway",
                             .drain_timeout = "30s",
                             .prefix = "/",
                             .log_level = "info"};

static config_t *build(const knobs_t *k)
{
    char yaml[2048], cs[256] = "", tracing[512] = "";
    if (k->control_socket)
        snprintf(cs, sizeof cs, "  control_socket: %s\n", k->control_socket);
    if (k->otlp)
        snprintf(tracing, sizeof tracing, "tracing:\n  otlp_endpoint: %s\n  service_name: %s\n",
                 k->otlp, k->service);
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: %s\n"
             "  workers: %s\n"
             "  max_connections: %s\n"
             "  max_header_size: %s\n"
             "  drain_timeout: %s\n"
             "%s"
             "admin:\n"
             "  listen: \"%s\"\n"
             "access_log:\n"
             "  path: %s\n"
             "%s"
             "log:\n"
             "  level: %s\n"
             "target_groups:\n"
             "  g: {targets: [\"10.0.0.1:80\"]}\n"
             "routes:\n"
             "  - name: ok\n"
             "    match: {path_prefix: %s}\n"
             "    backends: [{target_group: g}]\n",
             k->listen, k->workers, k->max_connections, k->max_header_size, k->drain_timeout, cs,
             k->admin, k->access_log, tracing, k->log_level, k->prefix);
    return app_test_config(yaml);
}

/* What reload_restart_only_change says from base to k. */
static void expect_change(const knobs_t *k, const char *want)
{
    config_t *a = build(&base), *b = build(k);
    const char *got = reload_restart_only_change(a, b);
    if (want)
        assert_string_equal(got ? got : "(none)", want);
    else if (got)
        fail_msg("expected no restart-only change, got %s", got);
    config_unref(a);
    config_unref(b);
}

static void test_same_config_reloads(void **state)
{
    (void)state;
    expect_change(&base, NULL);
}

static void test_runtime_settings_reload(void **state)
{
    (void)state;
    knobs_t k = base;
    k.drain_timeout = "5s";
    k.prefix = "/api";
    k.log_level = "debug";
    expect_change(&k, NULL);
}

static void test_each_restart_only_setting(void **state)
{
    (void)state;
    static const struct {
        size_t field; /* offset in knobs_t */
        const char *value, *key;
    } rows[] = {
        {offsetof(knobs_t, listen), "[\"127.0.0.1:8081\"]", "server.listen"},
        {offsetof(knobs_t, listen), "[\"127.0.0.2:8080\"]", "server.listen"},
        {offsetof(knobs_t, listen), "[\"127.0.0.1:8080\", \"127.0.0.1:8081\"]", "server.listen"},
        {offsetof(knobs_t, workers), "3", "server.workers"},
        {offsetof(knobs_t, max_connections), "1001", "server.max_connections"},
        {offsetof(knobs_t, max_header_size), "32KiB", "server.max_header_size"},
        {offsetof(knobs_t, control_socket), "/tmp/ficus-t.sock", "server.control_socket"},
        {offsetof(knobs_t, admin), "127.0.0.1:9902", "admin.listen"},
        {offsetof(knobs_t, access_log), "/tmp/other.log", "access_log.path"},
        {offsetof(knobs_t, access_log), "stdout", "access_log.path"},
        {offsetof(knobs_t, otlp), "http://127.0.0.1:4319/v1/traces", "tracing.otlp_endpoint"},
        {offsetof(knobs_t, service), "other", "tracing.service_name"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        knobs_t k = base;
        *(const char **)((char *)&k + rows[i].field) = rows[i].value;
        print_message("%s -> %s\n", rows[i].value, rows[i].key);
        expect_change(&k, rows[i].key);
    }
    /* Tracing removed altogether. */
    knobs_t k = base;
    k.otlp = NULL;
    expect_change(&k, "tracing.otlp_endpoint");
    /* Two at once: the first in the order the settings are checked. */
    k = base;
    k.admin = "127.0.0.1:9902";
    k.workers = "4";
    expect_change(&k, "server.workers");
}

static void test_listener_order_matters(void **state)
{
    (void)state;
    knobs_t a = base, b = base;
    a.listen = "[\"127.0.0.1:8080\", \"127.0.0.1:8081\"]";
    b.listen = "[\"127.0.0.1:8081\", \"127.0.0.1:8080\"]";
    config_t *ca = build(&a), *cb = build(&b), *ca2 = build(&a);
    assert_string_equal(reload_restart_only_change(ca, cb), "server.listen");
    assert_null(reload_restart_only_change(ca, ca2));
    config_unref(ca);
    config_unref(cb);
    config_unref(ca2);
}

/* ------------------------------------------------------------ file hash */

/* The hash of a file holding content. */
static uint64_t hash_of(const char *content, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/ficus-test-reload-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    bool ok = false;
    uint64_t h = reload_file_hash(path, &ok);
    unlink(path);
    assert_true(ok);
    return h;
}

static void test_file_hash_is_fnv1a(void **state)
{
    (void)state;
    /* FNV-1a 64-bit test vectors. */
    assert_true(hash_of("", 0) == 0xcbf29ce484222325ull);
    assert_true(hash_of("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(hash_of("foobar", 6) == 0x85944171f73967e8ull);
}

static void test_file_hash_sees_every_byte(void **state)
{
    (void)state;
    /* Longer than one read (8 KiB): a change past the first read counts. */
    size_t n = 20000;
    char *a = malloc(n), *b = malloc(n);
    memset(a, 'x', n);
    memcpy(b, a, n);
    b[n - 1] = 'y';
    uint64_t ha = hash_of(a, n);
    assert_true(ha == hash_of(a, n)); /* the same content: the same hash */
    assert_true(ha != hash_of(b, n));
    assert_true(ha != hash_of(a, n - 1));
    b[n - 1] = 'x';
    b[8192] = 'z'; /* the first byte of the second read */
    assert_true(ha != hash_of(b, n));
    free(a);
    free(b);
}

static void test_file_hash_missing_file(void **state)
{
    (void)state;
    bool ok = true;
    assert_true(reload_file_hash("/nonexistent/ficus/gateway.yaml", &ok) == 0);
    assert_false(ok);
    /* A directory opens but cannot be read. */
    ok = true;
    reload_file_hash("/tmp", &ok);
    assert_false(ok);
}

/* --------------------------------------------------------- watch filter */

static void test_watch_concerns(void **state)
{
    (void)state;
    const char *path = "/etc/ficus/gateway.yaml";
    assert_true(reload_watch_concerns(path, "gateway.yaml"));
    assert_true(reload_watch_concerns(path, NULL)); /* the platform does not say */
    /* Kubernetes ConfigMaps: the ..data symlink and timestamped dirs. */
    assert_true(reload_watch_concerns(path, "..data"));
    assert_true(reload_watch_concerns(path, "..2024_05_01_10_00_00.123456789"));
    /* Not the file: an editor's swap file, a log beside it, another yaml. */
    assert_false(reload_watch_concerns(path, ".gateway.yaml.swp"));
    assert_false(reload_watch_concerns(path, "gateway.yaml~"));
    assert_false(reload_watch_concerns(path, "gateway.yam"));
    assert_false(reload_watch_concerns(path, "access.log"));
    assert_false(reload_watch_concerns(path, "ficus"));
    assert_false(reload_watch_concerns(path, "."));
    /* A path without a directory. */
    assert_true(reload_watch_concerns("gateway.yaml", "gateway.yaml"));
    assert_false(reload_watch_concerns("gateway.yaml", "other.yaml"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_config_reloads),
        cmocka_unit_test(test_runtime_settings_reload),
        cmocka_unit_test(test_each_restart_only_setting),
        cmocka_unit_test(test_listener_order_matters),
        cmocka_unit_test(test_file_hash_is_fnv1a),
        cmocka_unit_test(test_file_hash_sees_every_byte),
        cmocka_unit_test(test_file_hash_missing_file),
        cmocka_unit_test(test_watch_concerns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
