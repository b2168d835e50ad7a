/* Prometheus metrics (observe/metrics.h): slots, per-worker counters summed at
 * render, histograms, process-wide events, label escaping, and an exposition
 * that promtool accepts. Values are read back from the rendered text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/defaults.h"
#include "observe/metrics.h"

static char *render(metrics_registry_t *r, const metrics_gauges_t *g)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(metrics_render(r, g, &b), 0);
    assert_int_equal(buf_append(&b, "", 1), 0);
    return b.data;
}

/* The value of the sample line "series value", or -1 when absent. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

static size_t count_lines_starting(const char *text, const char *prefix)
{
    size_t n = 0, k = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        n += strncmp(p, prefix, k) == 0;
    return n;
}

static void test_slots(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(1, "1.2.3");
    assert_non_null(r);
    assert_int_equal(metrics_route_slot(r, "-"), METRICS_NO_ROUTE);
    uint32_t a = metrics_route_slot(r, "search");
    uint32_t b = metrics_route_slot(r, "default");
    assert_int_not_equal(a, METRICS_NO_ROUTE);
    assert_int_not_equal(a, b);
    assert_int_equal(metrics_route_slot(r, "search"), a);

    /* The same target name in two groups is two series. */
    uint32_t t1 = metrics_target_slot(r, "g1", "10.0.0.1:80");
    uint32_t t2 = metrics_target_slot(r, "g2", "10.0.0.1:80");
    assert_int_not_equal(t1, t2);
    assert_int_equal(metrics_target_slot(r, "g1", "10.0.0.1:80"), t1);
    assert_int_not_equal(metrics_group_slot(r, "g1"), METRICS_SLOT_NONE);

    char name[32];
    for (unsigned i = 0; i < METRICS_MAX_SETS; i++) {
        snprintf(name, sizeof name, "set%u", i);
        assert_int_equal(metrics_set_slot(r, name), i);
    }
    assert_int_equal(metrics_set_slot(r, "one-too-many"), METRICS_SLOT_NONE);
    assert_int_equal(metrics_set_slot(r, "set7"), 7);
    assert_null(metrics_worker_get(r, 1));
    metrics_registry_free(r);
    metrics_registry_free(NULL);
}

static void test_requests_two_workers(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(2, "1.2.3");
    uint32_t route = metrics_route_slot(r, "search");
    metrics_worker_t *w0 = metrics_worker_get(r, 0), *w1 = metrics_worker_get(r, 1);
    for (int i = 0; i < 10; i++)
        metrics_request(w0, route, 200, 1500);
    for (int i = 0; i < 5; i++)
        metrics_request(w1, route, 200, 3000);
    metrics_request(w1, route, 503, 40000000); /* beyond the last bound: +Inf only */
    metrics_request(w1, route, 503, 40000000);
    metrics_request(w0, METRICS_NO_ROUTE, 404, 100);
    metrics_request(w0, route, 42, 100); /* no such status: duration only */

    char *t = render(r, NULL);
    assert_true(value_of(t, "ficus_requests_total{route=\"search\",code=\"200\"}") == 15);
    assert_true(value_of(t, "ficus_requests_total{route=\"search\",code=\"503\"}") == 2);
    assert_true(value_of(t, "ficus_requests_total{route=\"-\",code=\"404\"}") == 1);
    assert_true(value_of(t, "ficus_requests_total{route=\"search\",code=\"42\"}") == -1);

    const char *h = "ficus_request_duration_seconds";
    char series[128];
    snprintf(series, sizeof series, "%s_bucket{route=\"search\",le=\"0.001\"}", h);
    assert_true(value_of(t, series) == 1);
    snprintf(series, sizeof series, "%s_bucket{route=\"search\",le=\"0.0025\"}", h);
    assert_true(value_of(t, series) == 11);
    snprintf(series, sizeof series, "%s_bucket{route=\"search\",le=\"0.005\"}", h);
    assert_true(value_of(t, series) == 16);
    snprintf(series, sizeof series, "%s_bucket{route=\"search\",le=\"30\"}", h);
    assert_true(value_of(t, series) == 16);
    snprintf(series, sizeof series, "%s_bucket{route=\"search\",le=\"+Inf\"}", h);
    assert_true(value_of(t, series) == 18);
    snprintf(series, sizeof series, "%s_count{route=\"search\"}", h);
    assert_true(value_of(t, series) == 18);
    assert_non_null(strstr(t, "ficus_request_duration_seconds_sum{route=\"search\"} 80.030100\n"));

    /* Every bound of metrics_buckets_s appears, in order, then +Inf. */
    const char *prefix = "ficus_request_duration_seconds_bucket{route=\"search\",le=\"";
    const char *p = t;
    for (size_t i = 0; i <= metrics_n_buckets; i++) {
        p = strstr(p, prefix);
        assert_non_null(p);
        p += strlen(prefix);
        if (i < metrics_n_buckets)
            assert_true(strtod(p, NULL) == metrics_buckets_s[i]);
        else
            assert_memory_equal(p, "+Inf\"", 5);
    }
    free(t);
    metrics_registry_free(r);
}

static const char *const families[] = {
    "ficus_requests_total counter",
    "ficus_request_duration_seconds histogram",
    "ficus_upstream_requests_total counter",
    "ficus_upstream_duration_seconds histogram",
    "ficus_retries_total counter",
    "ficus_fallbacks_total counter",
    "ficus_circuit_breaker_rejections_total counter",
    "ficus_outlier_ejections_total counter",
    "ficus_target_healthy gauge",
    "ficus_backend_weight gauge",
    "ficus_rate_limited_total counter",
    "ficus_auth_failures_total counter",
    "ficus_throttled_total counter",
    "ficus_downstream_connections gauge",
    "ficus_downstream_connections_rejected_total counter",
    "ficus_config_reloads_total counter",
    "ficus_config_last_reload_success_timestamp_seconds gauge",
    "ficus_build_info gauge",
    "ficus_set_reload_failures_total counter",
    "ficus_redis_errors_total counter",
    "ficus_trace_spans_dropped_total counter",
    "ficus_trace_export_failures_total counter",
    "ficus_session_exchange_failures_total counter",
    "ficus_config_last_reload_successful gauge",
    "ficus_requests_in_flight gauge",
    "ficus_tunnels gauge",
    "ficus_target_ejected gauge",
    "ficus_panic_mode gauge",
    "process_cpu_seconds_total counter",
    "process_resident_memory_bytes gauge",
    "process_open_fds gauge",
    "process_max_fds gauge",
    "process_start_time_seconds gauge",
};

static void test_empty_registry_has_every_family(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(2, "0.1.0");
    char *t = render(r, NULL);
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char line[160];
        snprintf(line, sizeof line, "# TYPE %s\n", families[i]);
        assert_non_null(strstr(t, line));
        snprintf(line, sizeof line, "# HELP %.*s ", (int)strcspn(families[i], " "), families[i]);
        assert_non_null(strstr(t, line));
    }
    assert_int_equal(count_lines_starting(t, "ficus_requests_total"), 0);
    assert_int_equal(count_lines_starting(t, "ficus_request_duration_seconds"), 0);
    assert_true(value_of(t, "ficus_build_info{version=\"0.1.0\"}") == 1);
    assert_true(value_of(t, "ficus_config_reloads_total{result=\"success\"}") == 0);
    assert_true(value_of(t, "ficus_config_reloads_total{result=\"failure\"}") == 0);
    assert_true(value_of(t, "ficus_downstream_connections") == 0);
    assert_true(value_of(t, "ficus_redis_errors_total") == 0);
    free(t);
    metrics_registry_free(r);
}

static void test_upstream(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(2, "x");
    uint32_t g = metrics_group_slot(r, "search-v1");
    uint32_t a = metrics_target_slot(r, "search-v1", "10.0.0.1:80");
    uint32_t b = metrics_target_slot(r, "search-v1", "10.0.0.2:80");
    metrics_worker_t *w0 = metrics_worker_get(r, 0), *w1 = metrics_worker_get(r, 1);
    metrics_upstream(w0, g, a, 200, 2000);
    metrics_upstream(w1, g, a, 200, 2000);
    metrics_upstream(w1, g, a, 502, 2000);
    metrics_upstream(w0, g, b, METRICS_UPSTREAM_CONNECT_ERROR, 1000000);
    metrics_upstream(w0, g, b, METRICS_UPSTREAM_TIMEOUT, 4000000);
    metrics_upstream(w1, g, b, METRICS_UPSTREAM_RESET, 10);
    metrics_circuit_breaker_rejection(w0, g, METRICS_LIMIT_MAX_PENDING);
    metrics_circuit_breaker_rejection(w1, g, METRICS_LIMIT_MAX_PENDING);
    metrics_circuit_breaker_rejection(w1, g, METRICS_LIMIT_MAX_REQUESTS);

    char *t = render(r, NULL);
#define UP "ficus_upstream_requests_total{target_group=\"search-v1\",target="
    assert_true(value_of(t, UP "\"10.0.0.1:80\",code=\"200\"}") == 2);
    assert_true(value_of(t, UP "\"10.0.0.1:80\",code=\"502\"}") == 1);
    assert_true(value_of(t, UP "\"10.0.0.2:80\",code=\"connect_error\"}") == 1);
    assert_true(value_of(t, UP "\"10.0.0.2:80\",code=\"timeout\"}") == 1);
    assert_true(value_of(t, UP "\"10.0.0.2:80\",code=\"reset\"}") == 1);
#undef UP
    assert_true(value_of(t, "ficus_upstream_duration_seconds_count{target_group=\"search-v1\"}") ==
                6);
    assert_non_null(
        strstr(t, "ficus_upstream_duration_seconds_sum{target_group=\"search-v1\"} 5.006010\n"));
    assert_true(value_of(t, "ficus_circuit_breaker_rejections_total{target_group=\"search-v1\","
                            "limit=\"max_pending\"}") == 2);
    assert_true(value_of(t, "ficus_circuit_breaker_rejections_total{target_group=\"search-v1\","
                            "limit=\"max_requests\"}") == 1);
    assert_true(value_of(t, "ficus_circuit_breaker_rejections_total{target_group=\"search-v1\","
                            "limit=\"max_connections\"}") == -1);
    free(t);
    metrics_registry_free(r);
}

static void test_retries_and_fallbacks(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(2, "x");
    uint32_t route = metrics_route_slot(r, "search");
    uint32_t v1 = metrics_group_slot(r, "search-v1"), v2 = metrics_group_slot(r, "search-v2");
    metrics_worker_t *w0 = metrics_worker_get(r, 0), *w1 = metrics_worker_get(r, 1);
    metrics_retry(w0, route, v1);
    metrics_retry(w1, route, v1);
    metrics_retry(w1, route, v2);
    for (int i = 0; i < 3; i++)
        metrics_fallback(w0, route, v2, v1);
    metrics_fallback(w1, route, v2, v1);

    char *t = render(r, NULL);
    assert_true(value_of(t, "ficus_retries_total{route=\"search\",target_group=\"search-v1\"}") ==
                2);
    assert_true(value_of(t, "ficus_retries_total{route=\"search\",target_group=\"search-v2\"}") ==
                1);
    assert_true(value_of(t, "ficus_fallbacks_total{route=\"search\",from=\"search-v2\","
                            "to=\"search-v1\"}") == 4);
    assert_int_equal(count_lines_starting(t, "ficus_fallbacks_total{"), 1);
    free(t);

    /* The per-worker table is bounded: past it samples are dropped, the
     * series already there keep counting. */
    char name[32];
    uint32_t groups[64];
    for (int i = 0; i < 64; i++) {
        snprintf(name, sizeof name, "g%d", i);
        groups[i] = metrics_group_slot(r, name);
    }
    for (int a = 0; a < 64; a++)
        for (int b = 0; b < 64; b++)
            for (int k = 0; k < 2; k++)
                metrics_fallback(w0, (uint32_t)k, groups[a], groups[b]);
    metrics_fallback(w0, route, v2, v1);
    t = render(r, NULL);
    assert_true(count_lines_starting(t, "ficus_fallbacks_total{") <= METRICS_PAIR_SLOTS + 1);
    assert_true(value_of(t, "ficus_fallbacks_total{route=\"search\",from=\"search-v2\","
                            "to=\"search-v1\"}") == 5);
    free(t);
    metrics_registry_free(r);
}

static void test_label_escaping(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(1, "1.0\"beta\\");
    uint32_t route = metrics_route_slot(r, "we\"ird\\name\nx");
    metrics_request(metrics_worker_get(r, 0), route, 200, 1);
    char *t = render(r, NULL);
    assert_true(value_of(t, "ficus_requests_total{route=\"we\\\"ird\\\\name\\nx\",code=\"200\"}") ==
                1);
    assert_true(value_of(t, "ficus_build_info{version=\"1.0\\\"beta\\\\\"}") == 1);
    free(t);
    metrics_registry_free(r);
}

static void each_weight(void *ctx, void (*emit)(void *, const char *, const char *, uint32_t),
                        void *ctx2)
{
    (void)ctx;
    emit(ctx2, "search", "search-v1", 90);
    emit(ctx2, "search", "search-v2", 10);
}

static void each_health(void *ctx, void (*emit)(void *, const char *, const char *, int, int),
                        void *ctx2)
{
    (void)ctx;
    emit(ctx2, "search-v1", "10.0.0.1:80", 1, 0);
    emit(ctx2, "search-v1", "10.0.0.2:80", 0, 1);
}

static void each_panic(void *ctx, void (*emit)(void *, const char *, int), void *ctx2)
{
    (void)ctx;
    emit(ctx2, "search-v1", 1);
}

typedef struct auth_thread {
    metrics_registry_t *r;
    uint32_t route;
    int n;
} auth_thread_t;

static void *auth_main(void *arg)
{
    auth_thread_t *a = arg;
    for (int i = 0; i < a->n; i++) {
        metrics_auth_failure(a->r, a->route, "invalid_key");
        metrics_session_exchange_failure(a->r, "timeout");
    }
    return NULL;
}

static void test_process_wide_and_gauges(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(2, "x");
    uint32_t route = metrics_route_slot(r, "search");
    metrics_worker_t *w0 = metrics_worker_get(r, 0), *w1 = metrics_worker_get(r, 1);

    metrics_config_reload(r, true, 1700000000123); /* the start-up load */
    char *t = render(r, NULL);
    assert_true(value_of(t, "ficus_config_reloads_total{result=\"success\"}") == 0);
    assert_non_null(
        strstr(t, "\nficus_config_last_reload_success_timestamp_seconds 1700000000.123\n"));
    free(t);
    metrics_config_reload(r, false, 1700000001000);
    metrics_config_reload(r, true, 1700000002500);

    metrics_downstream_connection(w0, 1);
    metrics_downstream_connection(w0, 1);
    metrics_downstream_connection(w1, 1);
    metrics_downstream_connection(w0, -1);
    metrics_downstream_connection(w1, 1);
    metrics_downstream_rejected(w1);
    metrics_rate_limited(w0, route);
    metrics_rate_limited(w1, route);
    uint32_t c = metrics_client_slot(r, "ios-app");
    metrics_throttled(w0, c);
    metrics_throttled(w1, c);
    metrics_throttled(w1, c);
    uint32_t set = metrics_set_slot(r, "migrated_shops");
    metrics_set_reload_failure(r, set);
    uint32_t tg = metrics_target_slot(r, "search-v1", "10.0.0.2:80");
    metrics_outlier_ejection(r, metrics_group_slot(r, "search-v1"), tg);
    metrics_redis_error(r);
    metrics_trace_dropped(r, 5);
    metrics_trace_dropped(r, 2);
    metrics_trace_export_failure(r);
    metrics_auth_failure(r, route, "missing_key");
    metrics_session_exchange_failure(r, "denied\"by\nservice");

    /* Two threads intern the same reasons at once: still one series each. */
    auth_thread_t args = {r, route, 5000};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, auth_main, &args), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);

    metrics_gauges_t g = {NULL, each_weight, each_health, each_panic};
    t = render(r, &g);
    assert_true(value_of(t, "ficus_target_ejected{target_group=\"search-v1\","
                            "target=\"10.0.0.2:80\"}") == 1);
    assert_true(value_of(t, "ficus_target_ejected{target_group=\"search-v1\","
                            "target=\"10.0.0.1:80\"}") == 0);
    assert_true(value_of(t, "ficus_panic_mode{target_group=\"search-v1\"}") == 1);
    assert_non_null(strstr(t, "\nficus_config_last_reload_successful "));
    assert_true(value_of(t, "ficus_config_reloads_total{result=\"success\"}") == 1);
    assert_true(value_of(t, "ficus_config_reloads_total{result=\"failure\"}") == 1);
    assert_non_null(
        strstr(t, "\nficus_config_last_reload_success_timestamp_seconds 1700000002.500\n"));
    assert_true(value_of(t, "ficus_downstream_connections") == 3);
    assert_true(value_of(t, "ficus_downstream_connections_rejected_total") == 1);
    assert_true(value_of(t, "ficus_rate_limited_total{route=\"search\"}") == 2);
    assert_true(value_of(t, "ficus_throttled_total{client=\"ios-app\"}") == 3);
    assert_true(value_of(t, "ficus_set_reload_failures_total{set=\"migrated_shops\"}") == 1);
    assert_true(value_of(t, "ficus_outlier_ejections_total{target_group=\"search-v1\","
                            "target=\"10.0.0.2:80\"}") == 1);
    assert_true(value_of(t, "ficus_redis_errors_total") == 1);
    assert_true(value_of(t, "ficus_trace_spans_dropped_total") == 7);
    assert_true(value_of(t, "ficus_trace_export_failures_total") == 1);
    assert_true(value_of(t, "ficus_auth_failures_total{route=\"search\",reason=\"invalid_key\"}") ==
                10000);
    assert_true(value_of(t, "ficus_auth_failures_total{route=\"search\",reason=\"missing_key\"}") ==
                1);
    assert_int_equal(count_lines_starting(t, "ficus_auth_failures_total{"), 2);
    assert_true(value_of(t, "ficus_session_exchange_failures_total{reason=\"timeout\"}") == 10000);
    assert_int_equal(count_lines_starting(t, "ficus_session_exchange_failures_total{"), 2);
    assert_true(value_of(t, "ficus_session_exchange_failures_total{reason="
                            "\"denied\\\"by\\nservice\"}") == 1);
    assert_true(value_of(t, "ficus_backend_weight{route=\"search\",target_group=\"search-v1\"}") ==
                90);
    assert_true(value_of(t, "ficus_backend_weight{route=\"search\",target_group=\"search-v2\"}") ==
                10);
    assert_true(
        value_of(t, "ficus_target_healthy{target_group=\"search-v1\",target=\"10.0.0.1:80\"}") ==
        1);
    assert_true(
        value_of(t, "ficus_target_healthy{target_group=\"search-v1\",target=\"10.0.0.2:80\"}") ==
        0);
    free(t);
    metrics_registry_free(r);
}

/* A registry with a sample in every family, hostile label values included. */
static metrics_registry_t *populated(void)
{
    metrics_registry_t *r = metrics_registry_new(2, "0.1.0");
    uint32_t route = metrics_route_slot(r, "search");
    uint32_t odd = metrics_route_slot(r, "quote\"back\\slash\nnewline");
    uint32_t g1 = metrics_group_slot(r, "search-v1"), g2 = metrics_group_slot(r, "search-v2");
    uint32_t t1 = metrics_target_slot(r, "search-v1", "10.0.0.1:80");
    uint32_t t2 = metrics_target_slot(r, "search-v2", "[::1]:8080");
    for (size_t wi = 0; wi < 2; wi++) {
        metrics_worker_t *w = metrics_worker_get(r, wi);
        metrics_request(w, route, 200, 1234);
        metrics_request(w, odd, 503, 99999999);
        metrics_request(w, METRICS_NO_ROUTE, 404, 10);
        metrics_upstream(w, g1, t1, 200, 1000);
        metrics_upstream(w, g2, t2, METRICS_UPSTREAM_RESET, 1000);
        metrics_retry(w, route, g1);
        metrics_fallback(w, route, g2, g1);
        metrics_circuit_breaker_rejection(w, g1, METRICS_LIMIT_MAX_CONNECTIONS);
        metrics_rate_limited(w, odd);
        metrics_throttled(w, metrics_client_slot(r, "ios-app"));
        metrics_downstream_connection(w, 2);
        metrics_downstream_rejected(w);
    }
    metrics_outlier_ejection(r, g2, t2);
    metrics_config_reload(r, true, 1700000000000);
    metrics_config_reload(r, false, 1700000000000);
    metrics_set_reload_failure(r, metrics_set_slot(r, "migrated_shops"));
    metrics_redis_error(r);
    metrics_trace_dropped(r, 3);
    metrics_trace_export_failure(r);
    metrics_auth_failure(r, route, "invalid_token");
    metrics_session_exchange_failure(r, "unavailable");
    return r;
}

static void test_promtool_accepts(void **state)
{
    (void)state;
    if (access("/usr/bin/promtool", X_OK) != 0 && system("command -v promtool >/dev/null") != 0)
        skip();
    metrics_registry_t *r = populated();
    metrics_gauges_t g = {NULL, each_weight, each_health, each_panic};
    char *t = render(r, &g);
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        int n = (int)strcspn(families[i], " ");
        char sample[96], labelled[96];
        bool hist = strstr(families[i], "histogram") != NULL;
        snprintf(sample, sizeof sample, "%.*s%s ", n, families[i], hist ? "_count" : "");
        snprintf(labelled, sizeof labelled, "%.*s%s{", n, families[i], hist ? "_count" : "");
        assert_true(count_lines_starting(t, sample) + count_lines_starting(t, labelled) > 0);
    }

    char dir[] = "/tmp/ficus-metrics-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], out[160], cmd[512];
    snprintf(path, sizeof path, "%s/metrics.txt", dir);
    snprintf(out, sizeof out, "%s/promtool.out", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(t, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s > %s 2>&1", path, out);
    int rc = system(cmd);
    if (rc != 0) {
        snprintf(cmd, sizeof cmd, "cat %s", out);
        assert_int_equal(system(cmd), 0);
    }
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    /* Not even a lint remark. */
    f = fopen(out, "r");
    assert_non_null(f);
    assert_int_equal(fgetc(f), EOF);
    fclose(f);
    unlink(out);
    unlink(path);
    rmdir(dir);
    free(t);
    metrics_registry_free(r);
}

typedef struct writer_arg {
    metrics_worker_t *w;
    uint32_t route;
    int n;
} writer_arg_t;

static void *writer_main(void *arg)
{
    writer_arg_t *a = arg;
    for (int i = 0; i < a->n; i++)
        metrics_request(a->w, a->route, 200, (uint64_t)i % 50000);
    return NULL;
}

/* Scrapes while a worker writes: counts never go backwards, and the end
 * state is exact. */
static void test_scrape_while_writing(void **state)
{
    (void)state;
    metrics_registry_t *r = metrics_registry_new(1, "x");
    writer_arg_t a = {metrics_worker_get(r, 0), metrics_route_slot(r, "search"), 200000};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &a), 0);
    double last = 0;
    for (int i = 0; i < 50; i++) {
        char *t = render(r, NULL);
        double v = value_of(t, "ficus_requests_total{route=\"search\",code=\"200\"}");
        double c = value_of(t, "ficus_request_duration_seconds_count{route=\"search\"}");
        if (v >= 0) {
            assert_true(v >= last);
            assert_true(c >= 0);
            last = v;
        }
        free(t);
    }
    pthread_join(th, NULL);
    char *t = render(r, NULL);
    assert_true(value_of(t, "ficus_requests_total{route=\"search\",code=\"200\"}") == 200000);
    assert_true(value_of(t, "ficus_request_duration_seconds_count{route=\"search\"}") == 200000);
    free(t);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_requests_two_workers),
        cmocka_unit_test(test_empty_registry_has_every_family),
        cmocka_unit_test(test_upstream),
        cmocka_unit_test(test_retries_and_fallbacks),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_process_wide_and_gauges),
        cmocka_unit_test(test_promtool_accepts),
        cmocka_unit_test(test_scrape_while_writing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
