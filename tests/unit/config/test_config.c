/* The configuration loader (config/config.h): the contract's example loads
 * with every field in place, defaults apply, and every kind of error is
 * reported with its exact FILE:LINE:COL and key path, all of them at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <unistd.h>

#include "config/config.h"
#include "config/config_json.h"
#include "core/defaults.h"

/* ---------------------------------------------------------------- helpers */

static config_t *load_ok(const char *yaml)
{
    config_errors_t e;
    config_errors_init(&e);
    config_t *c = config_load_string(yaml, strlen(yaml), "t.yaml", &e);
    for (size_t i = 0; i < e.n; i++)
        print_message("unexpected: %s\n", e.items[i]);
    assert_int_equal(e.n, 0);
    config_errors_deinit(&e);
    assert_non_null(c);
    return c;
}

/* The load fails with exactly these errors, in this order. */
static void expect_errors_(const char *yaml, const char *const *want, size_t n)
{
    config_errors_t e;
    config_errors_init(&e);
    config_t *c = config_load_string(yaml, strlen(yaml), "t.yaml", &e);
    bool same = c == NULL && e.n == n;
    for (size_t i = 0; same && i < n; i++)
        same = strcmp(e.items[i], want[i]) == 0;
    if (!same) {
        print_message("expected %zu error(s):\n", n);
        for (size_t i = 0; i < n; i++)
            print_message("  %s\n", want[i]);
        print_message("got %zu%s:\n", e.n, c ? " and a config" : "");
        for (size_t i = 0; i < e.n; i++)
            print_message("  %s\n", e.items[i]);
    }
    config_unref(c);
    config_errors_deinit(&e);
    assert_true(same);
}

#define expect_errors(yaml, ...)                                                                   \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        expect_errors_(yaml, want_, sizeof want_ / sizeof want_[0]);                               \
    } while (0)

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static bool ip_is(const struct sockaddr_storage *ss, const char *ip)
{
    char buf[64];
    const void *a = ss->ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    return inet_ntop(ss->ss_family, a, buf, sizeof buf) && strcmp(buf, ip) == 0;
}

/* Two target groups (lines 1-3); tests append "routes:" at line 4. */
#define GROUPS                                                                                     \
    "target_groups:\n"                                                                             \
    "  g: {targets: [\"10.0.0.1:80\"]}\n"                                                          \
    "  h: {targets: [\"10.0.0.2:80\"]}\n"

/* A valid route (lines 5-7 after "routes:" at line 4). */
#define ROUTE_OK                                                                                   \
    "  - name: ok\n"                                                                               \
    "    match: {path_prefix: /}\n"                                                                \
    "    backends: [{target_group: g}]\n"

/* ------------------------------------------------------- valid configs */

/* The contract's section 2 example without the keys of features this
 * version lacks; search-v1/v2 are defined, and in_set moved to a regex route
 * (the contract requires a named group of path_regex for it). */
static const char full_example[] =
    "server:\n"
    "  listen: [\"0.0.0.0:8080\", {address: \"[::1]:8081\"}]\n"
    "  workers: 3\n"
    "  max_connections: 10000\n"
    "  header_timeout: 10s\n"
    "  idle_timeout: 60s\n"
    "  max_header_size: 16KiB\n"
    "  max_body_size: 8MiB\n"
    "  retry_buffer_size: 64KiB\n"
    "  drain_delay: 5s\n"
    "  drain_timeout: 30s\n"
    "  control_socket: /run/ficus/ficus.sock\n"
    "  trusted_proxies: [10.0.0.0/8, \"::1\"]\n"
    "admin:\n"
    "  listen: \"127.0.0.1:9901\"\n"
    "access_log:\n"
    "  path: /var/log/ficus/access.log\n"
    "tracing:\n"
    "  otlp_endpoint: http://127.0.0.1:4318/v1/traces\n"
    "  service_name: gateway\n"
    "  sample_ratio: 0.25\n"
    "  propagation: [w3c, datadog]\n"
    "redis:\n"
    "  address: \"127.0.0.1:6379\"\n"
    "target_groups:\n"
    "  monolith:\n"
    "    targets: [\"10.0.0.5:80\", \"legacy.internal:80\"]\n"
    "    dns_refresh: 30s\n"
    "    balance: least_request\n"
    "    connect_timeout: 1s\n"
    "    max_connections: 1000\n"
    "    max_pending: 900\n"
    "    max_requests: 800\n"
    "    keepalive: {max_idle: 64, idle_timeout: 60s}\n"
    "    health_check: {path: /healthz, interval: 5s, timeout: 1s,\n"
    "                   healthy_threshold: 2, unhealthy_threshold: 3}\n"
    "    outlier_detection: {consecutive_errors: 5, base_ejection_time: 30s,\n"
    "                        max_ejection_percent: 50}\n"
    "    required: true\n"
    "  search-v1: {targets: [\"10.0.1.1:8080\"]}\n"
    "  search-v2: {targets: [\"10.0.1.2:8080\"], balance: random}\n"
    "sets:\n"
    "  migrated_shops: {file: /etc/ficus/shops.txt, refresh: 30s}\n"
    "  beta: {url: \"http://lists.internal/beta.txt\"}\n"
    "routes:\n"
    "  - name: search\n"
    "    match:\n"
    "      path_prefix: /search\n"
    "      methods: [GET, HEAD]\n"
    "      host: API.example.com\n"
    "      headers: {X-Debug: \"1\"}\n"
    "    rewrite_prefix: /v2/search\n"
    "    backends:\n"
    "      - {target_group: search-v1, weight: 90}\n"
    "      - {target_group: search-v2, weight: 10, fallback: search-v1}\n"
    "    sticky: header:X-User\n"
    "    timeout: 5s\n"
    "    retries: {attempts: 2, per_try_timeout: 4s, retry_on: [5xx, connect-failure, 429],\n"
    "              backoff: 25ms, budget_percent: 20}\n"
    "    retry_non_idempotent: false\n"
    "    ip_allow: [10.0.0.0/8]\n"
    "    ip_deny: [10.1.0.0/16, 10.2.0.1]\n"
    "    request_headers: {set: {X-From: ficus}, remove: [X-Internal]}\n"
    "  - name: shops\n"
    "    match:\n"
    "      path_regex: \"/shops/(?<shop>[0-9]+)/(.*)\"\n"
    "      in_set: {capture: shop, set: migrated_shops}\n"
    "    backends: [{target_group: search-v2, path: \"/api/shops/$1/$2\"}]\n"
    "  - name: default\n"
    "    match: {path_prefix: /}\n"
    "    backends: [{target_group: monolith, weight: 100}]\n";

static void test_full_example(void **state)
{
    (void)state;
    config_t *c = load_ok(full_example);
    assert_string_equal(c->path, "t.yaml");
    assert_int_equal(atomic_load(&c->refs), 1);

    const config_server_t *s = &c->server;
    assert_int_equal(s->n_listeners, 2);
    assert_string_equal(s->listeners[0].address, "0.0.0.0:8080");
    assert_int_equal(s->listeners[0].addr.ss_family, AF_INET);
    assert_int_equal(s->listeners[0].addrlen, sizeof(struct sockaddr_in));
    assert_true(ip_is(&s->listeners[0].addr, "0.0.0.0"));
    assert_int_equal(port_of(&s->listeners[0].addr), 8080);
    assert_null(s->listeners[0].tls);
    assert_string_equal(s->listeners[1].address, "[::1]:8081");
    assert_int_equal(s->listeners[1].addr.ss_family, AF_INET6);
    assert_true(ip_is(&s->listeners[1].addr, "::1"));
    assert_int_equal(port_of(&s->listeners[1].addr), 8081);
    assert_int_equal(s->workers, 3);
    assert_int_equal(s->max_connections, 10000);
    assert_int_equal(s->header_timeout_ms, 10000);
    assert_int_equal(s->idle_timeout_ms, 60000);
    assert_int_equal(s->max_header_bytes, 16 * 1024);
    assert_int_equal(s->max_body_bytes, 8 * 1024 * 1024);
    assert_int_equal(s->retry_buffer_bytes, 64 * 1024);
    assert_int_equal(s->drain_delay_ms, 5000);
    assert_int_equal(s->drain_timeout_ms, 30000);
    assert_string_equal(s->control_socket, "/run/ficus/ficus.sock");
    assert_int_equal(s->n_trusted_proxies, 2);
    assert_int_equal(s->trusted_proxies[0].family, AF_INET);
    assert_int_equal(s->trusted_proxies[0].prefix, 8);
    assert_int_equal(s->trusted_proxies[1].family, AF_INET6);
    assert_int_equal(s->trusted_proxies[1].prefix, 128);

    assert_string_equal(c->admin_listen, "127.0.0.1:9901");
    assert_true(ip_is(&c->admin_addr, "127.0.0.1"));
    assert_int_equal(port_of(&c->admin_addr), 9901);
    assert_int_equal(c->admin_addrlen, sizeof(struct sockaddr_in));
    assert_string_equal(c->access_log_path, "/var/log/ficus/access.log");
    assert_string_equal(c->tracing.otlp_endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_string_equal(c->tracing.service_name, "gateway");
    assert_true(c->tracing.sample_ratio == 0.25);
    assert_true(c->tracing.propagate_w3c);
    assert_true(c->tracing.propagate_datadog);
    assert_string_equal(c->redis_address, "127.0.0.1:6379");

    assert_int_equal(c->n_target_groups, 3);
    const config_target_group_t *g = &c->target_groups[0];
    assert_string_equal(g->name, "monolith");
    assert_int_equal(g->index, 0);
    assert_int_equal(g->n_targets, 2);
    assert_string_equal(g->targets[0].name, "10.0.0.5:80");
    assert_string_equal(g->targets[0].host, "10.0.0.5");
    assert_int_equal(g->targets[0].port, 80);
    assert_true(g->targets[0].numeric);
    assert_true(ip_is(&g->targets[0].addr, "10.0.0.5"));
    assert_int_equal(port_of(&g->targets[0].addr), 80);
    assert_int_equal(g->targets[0].addrlen, sizeof(struct sockaddr_in));
    assert_string_equal(g->targets[1].name, "legacy.internal:80");
    assert_string_equal(g->targets[1].host, "legacy.internal");
    assert_int_equal(g->targets[1].port, 80);
    assert_false(g->targets[1].numeric);
    assert_int_equal(g->targets[1].addrlen, 0);
    assert_int_equal(g->dns_refresh_ms, 30000);
    assert_int_equal(g->balance, BALANCE_LEAST_REQUEST);
    assert_int_equal(g->connect_timeout_ms, 1000);
    assert_int_equal(g->max_connections, 1000);
    assert_int_equal(g->max_pending, 900);
    assert_int_equal(g->max_requests, 800);
    assert_int_equal(g->keepalive_max_idle, 64);
    assert_int_equal(g->keepalive_idle_timeout_ms, 60000);
    assert_true(g->has_health_check);
    assert_string_equal(g->health_check.path, "/healthz");
    assert_int_equal(g->health_check.interval_ms, 5000);
    assert_int_equal(g->health_check.timeout_ms, 1000);
    assert_int_equal(g->health_check.healthy_threshold, 2);
    assert_int_equal(g->health_check.unhealthy_threshold, 3);
    assert_true(g->has_outlier);
    assert_int_equal(g->outlier.consecutive_errors, 5);
    assert_int_equal(g->outlier.base_ejection_ms, 30000);
    assert_int_equal(g->outlier.max_ejection_percent, 50);
    assert_true(g->required);
    assert_string_equal(c->target_groups[1].name, "search-v1");
    assert_int_equal(c->target_groups[1].index, 1);
    assert_false(c->target_groups[1].has_health_check);
    assert_false(c->target_groups[1].required);
    assert_int_equal(c->target_groups[2].balance, BALANCE_RANDOM);
    assert_int_equal(c->target_groups[2].index, 2);

    assert_int_equal(c->n_sets, 2);
    assert_string_equal(c->sets[0].name, "migrated_shops");
    assert_int_equal(c->sets[0].index, 0);
    assert_string_equal(c->sets[0].file, "/etc/ficus/shops.txt");
    assert_null(c->sets[0].url);
    assert_int_equal(c->sets[0].refresh_ms, 30000);
    assert_string_equal(c->sets[1].url, "http://lists.internal/beta.txt");
    assert_null(c->sets[1].file);
    assert_int_equal(c->sets[1].refresh_ms, DEFAULT_SET_REFRESH_MS);

    assert_int_equal(c->n_routes, 3);
    const config_route_t *r = &c->routes[0];
    assert_string_equal(r->name, "search");
    assert_int_equal(r->index, 0);
    assert_int_equal(r->match.kind, MATCH_PREFIX);
    assert_string_equal(r->match.path, "/search");
    assert_int_equal(r->match.path_len, 7);
    assert_null(r->match.regex);
    assert_int_equal(r->match.methods, METHOD_GET | METHOD_HEAD);
    assert_string_equal(r->match.host, "api.example.com");
    assert_false(r->match.host_wildcard);
    assert_int_equal(r->match.n_headers, 1);
    assert_string_equal(r->match.headers[0].name, "x-debug");
    assert_string_equal(r->match.headers[0].value, "1");
    assert_int_equal(r->match.in_set, CONFIG_NONE);
    assert_string_equal(r->rewrite_prefix, "/v2/search");
    assert_int_equal(r->n_backends, 2);
    assert_int_equal(r->backends[0].target_group, 1);
    assert_int_equal(r->backends[0].weight, 90);
    assert_int_equal(r->backends[0].fallback, CONFIG_NONE);
    assert_null(r->backends[0].path);
    assert_int_equal(r->backends[1].target_group, 2);
    assert_int_equal(r->backends[1].weight, 10);
    assert_int_equal(r->backends[1].fallback, 1);
    assert_int_equal(r->sticky, STICKY_HEADER);
    assert_string_equal(r->sticky_name, "x-user");
    assert_int_equal(r->timeout_ms, 5000);
    assert_true(r->has_retries);
    assert_int_equal(r->retries.attempts, 2);
    assert_int_equal(r->retries.per_try_timeout_ms, 4000);
    assert_int_equal(r->retries.retry_on, RETRY_ON_5XX | RETRY_ON_CONNECT_FAILURE);
    assert_int_equal(r->retries.n_retry_statuses, 1);
    assert_int_equal(r->retries.retry_statuses[0], 429);
    assert_int_equal(r->retries.backoff_ms, 25);
    assert_int_equal(r->retries.budget_percent, 20);
    assert_false(r->retry_non_idempotent);
    assert_int_equal(r->n_ip_allow, 1);
    assert_int_equal(r->ip_allow[0].prefix, 8);
    assert_int_equal(r->n_ip_deny, 2);
    assert_int_equal(r->ip_deny[1].prefix, 32);
    assert_int_equal(r->n_set_headers, 1);
    assert_string_equal(r->set_headers[0].name, "X-From");
    assert_string_equal(r->set_headers[0].value, "ficus");
    assert_int_equal(r->n_remove_headers, 1);
    assert_string_equal(r->remove_headers[0], "x-internal");

    r = &c->routes[1];
    assert_string_equal(r->name, "shops");
    assert_int_equal(r->match.kind, MATCH_REGEX);
    assert_non_null(r->match.regex);
    assert_int_equal(r->match.n_captures, 2);
    assert_int_equal(r->match.in_set, 0);
    assert_int_equal(r->match.in_set_capture, 1);
    assert_string_equal(r->backends[0].path, "/api/shops/$1/$2");
    assert_int_equal(r->backends[0].weight, DEFAULT_BACKEND_WEIGHT);

    r = &c->routes[2];
    assert_string_equal(r->name, "default");
    assert_int_equal(r->index, 2);
    assert_int_equal(r->backends[0].target_group, 0);
    assert_int_equal(r->backends[0].weight, 100);
    config_unref(c);
}

static void test_defaults(void **state)
{
    (void)state;
    config_t *c = load_ok(GROUPS "routes:\n" ROUTE_OK);
    const config_server_t *s = &c->server;
    assert_int_equal(s->n_listeners, 1);
    assert_string_equal(s->listeners[0].address, DEFAULT_LISTEN);
    assert_int_equal(port_of(&s->listeners[0].addr), 8080);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(s->workers, cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : cpus);
    assert_int_equal(s->max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_int_equal(s->header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS);
    assert_int_equal(s->idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS);
    assert_int_equal(s->max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert_int_equal(s->max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_int_equal(s->retry_buffer_bytes, DEFAULT_RETRY_BUFFER_BYTES);
    assert_int_equal(s->drain_delay_ms, DEFAULT_DRAIN_DELAY_MS);
    assert_int_equal(s->drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS);
    assert_null(s->control_socket);
    assert_int_equal(s->n_trusted_proxies, 0);
    assert_string_equal(c->admin_listen, DEFAULT_ADMIN_LISTEN);
    assert_int_equal(port_of(&c->admin_addr), 9901);
    assert_string_equal(c->access_log_path, "stdout");
    assert_null(c->tracing.otlp_endpoint);
    assert_string_equal(c->tracing.service_name, DEFAULT_SERVICE_NAME);
    assert_true(c->tracing.sample_ratio == 1.0);
    assert_true(c->tracing.propagate_w3c);
    assert_false(c->tracing.propagate_datadog);
    assert_null(c->redis_address);
    assert_int_equal(c->n_sets, 0);

    const config_target_group_t *g = &c->target_groups[0];
    assert_int_equal(g->dns_refresh_ms, DEFAULT_DNS_REFRESH_MS);
    assert_int_equal(g->balance, BALANCE_ROUND_ROBIN);
    assert_int_equal(g->connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
    assert_int_equal(g->max_connections, DEFAULT_GROUP_MAX_CONNECTIONS);
    assert_int_equal(g->max_pending, DEFAULT_GROUP_MAX_PENDING);
    assert_int_equal(g->max_requests, DEFAULT_GROUP_MAX_REQUESTS);
    assert_int_equal(g->keepalive_max_idle, DEFAULT_KEEPALIVE_MAX_IDLE);
    assert_int_equal(g->keepalive_idle_timeout_ms, DEFAULT_KEEPALIVE_IDLE_TIMEOUT_MS);
    assert_false(g->has_health_check);
    assert_false(g->has_outlier);
    assert_false(g->required);

    const config_route_t *r = &c->routes[0];
    assert_int_equal(r->match.methods, 0);
    assert_null(r->match.host);
    assert_int_equal(r->match.n_headers, 0);
    assert_int_equal(r->match.in_set, CONFIG_NONE);
    assert_null(r->rewrite_prefix);
    assert_int_equal(r->backends[0].weight, DEFAULT_BACKEND_WEIGHT);
    assert_int_equal(r->backends[0].fallback, CONFIG_NONE);
    assert_int_equal(r->sticky, STICKY_NONE);
    assert_null(r->sticky_name);
    assert_int_equal(r->timeout_ms, DEFAULT_ROUTE_TIMEOUT_MS);
    assert_false(r->has_retries);
    assert_false(r->retry_non_idempotent);
    assert_int_equal(r->n_ip_allow + r->n_ip_deny + r->n_set_headers + r->n_remove_headers, 0);
    config_unref(c);
}

static void test_sub_block_defaults(void **state)
{
    (void)state;
    /* An empty health_check / outlier_detection turns the feature on with
     * its defaults; retries take the defaults of the keys they omit. */
    config_t *c =
        load_ok("target_groups:\n"
                "  g: {targets: [\"10.0.0.1:80\"], health_check: {},\n"
                "      outlier_detection: {}, keepalive: {max_idle: 0}}\n"
                "routes:\n"
                "  - name: r\n"
                "    match: {path: /x}\n"
                "    backends: [{target_group: g}]\n"
                "    retries: {attempts: 0, retry_on: [gateway-error, reset, timeout]}\n");
    const config_target_group_t *g = &c->target_groups[0];
    assert_true(g->has_health_check);
    assert_string_equal(g->health_check.path, DEFAULT_HC_PATH);
    assert_int_equal(g->health_check.interval_ms, DEFAULT_HC_INTERVAL_MS);
    assert_int_equal(g->health_check.timeout_ms, DEFAULT_HC_TIMEOUT_MS);
    assert_int_equal(g->health_check.healthy_threshold, DEFAULT_HC_HEALTHY_THRESHOLD);
    assert_int_equal(g->health_check.unhealthy_threshold, DEFAULT_HC_UNHEALTHY_THRESHOLD);
    assert_true(g->has_outlier);
    assert_int_equal(g->outlier.consecutive_errors, DEFAULT_OUTLIER_CONSECUTIVE_ERRORS);
    assert_int_equal(g->outlier.base_ejection_ms, DEFAULT_OUTLIER_BASE_EJECTION_MS);
    assert_int_equal(g->outlier.max_ejection_percent, DEFAULT_OUTLIER_MAX_EJECTION_PERCENT);
    assert_int_equal(g->keepalive_max_idle, 0);
    assert_int_equal(g->keepalive_idle_timeout_ms, DEFAULT_KEEPALIVE_IDLE_TIMEOUT_MS);
    const config_route_t *r = &c->routes[0];
    assert_int_equal(r->match.kind, MATCH_PATH);
    assert_true(r->has_retries);
    assert_int_equal(r->retries.attempts, 0);
    assert_int_equal(r->retries.per_try_timeout_ms, 0);
    assert_int_equal(r->retries.retry_on,
                     RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET | RETRY_ON_TIMEOUT);
    assert_int_equal(r->retries.n_retry_statuses, 0);
    assert_int_equal(r->retries.backoff_ms, DEFAULT_RETRY_BACKOFF_MS);
    assert_int_equal(r->retries.budget_percent, DEFAULT_RETRY_BUDGET_PERCENT);
    config_unref(c);
}

static void test_null_and_empty_values(void **state)
{
    (void)state;
    /* "key:" with nothing is YAML's null: the default applies. "" turns
     * control_socket and otlp_endpoint off; access_log "off" is NULL. */
    config_t *c = load_ok("server:\n"
                          "  idle_timeout:\n"
                          "  control_socket: \"\"\n"
                          "  trusted_proxies: ~\n"
                          "access_log: {path: off}\n"
                          "tracing: {otlp_endpoint: \"\", propagation: []}\n"
                          "redis:\n"
                          "routes:\n");
    assert_int_equal(c->server.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS);
    assert_null(c->server.control_socket);
    assert_int_equal(c->server.n_trusted_proxies, 0);
    assert_null(c->access_log_path);
    assert_null(c->tracing.otlp_endpoint);
    assert_false(c->tracing.propagate_w3c);
    assert_false(c->tracing.propagate_datadog);
    assert_null(c->redis_address);
    assert_int_equal(c->n_routes, 0);
    config_unref(c);

    c = load_ok("{}");
    assert_int_equal(c->n_routes, 0);
    assert_int_equal(c->server.n_listeners, 1);
    config_unref(c);
}

static void test_workers(void **state)
{
    (void)state;
    config_t *c = load_ok("server: {workers: auto}\n");
    assert_true(c->server.workers >= 1 && c->server.workers <= MAX_WORKERS);
    config_unref(c);
    c = load_ok("server: {workers: 256}\n");
    assert_int_equal(c->server.workers, 256);
    config_unref(c);
    expect_errors(
        "server: {workers: 0}\n",
        "t.yaml:1:19: server.workers: expected auto or a number from 1 to 256, got \"0\"");
    expect_errors("server: {workers: 257}\n",
                  "t.yaml:1:19: server.workers: expected auto or a number from 1 to 256, got "
                  "\"257\"");
    expect_errors("server: {workers: many}\n",
                  "t.yaml:1:19: server.workers: expected auto or a number from 1 to 256, got "
                  "\"many\"");
}

static void test_targets_numeric_and_named(void **state)
{
    (void)state;
    config_t *c =
        load_ok("target_groups:\n"
                "  g: {targets: [\"[::1]:8080\", \"App-1.internal:80\", \"127.0.0.1:1\"]}\n");
    const config_target_group_t *g = &c->target_groups[0];
    assert_int_equal(g->n_targets, 3);
    assert_true(g->targets[0].numeric);
    assert_string_equal(g->targets[0].host, "::1");
    assert_int_equal(g->targets[0].addr.ss_family, AF_INET6);
    assert_int_equal(port_of(&g->targets[0].addr), 8080);
    assert_int_equal(g->targets[0].addrlen, sizeof(struct sockaddr_in6));
    assert_false(g->targets[1].numeric);
    assert_string_equal(g->targets[1].host, "App-1.internal");
    assert_int_equal(g->targets[1].port, 80);
    assert_true(g->targets[2].numeric);
    assert_int_equal(port_of(&g->targets[2].addr), 1);
    config_unref(c);
}

static void test_match_host_headers_methods(void **state)
{
    (void)state;
    config_t *c = load_ok(GROUPS "routes:\n"
                                 "  - name: a\n"
                                 "    match: {path: /a, host: \"*.Example.COM\",\n"
                                 "            methods: [POST, PUT, DELETE, PATCH, OPTIONS]}\n"
                                 "    backends: [{target_group: g}]\n"
                                 "  - name: b\n"
                                 "    match: {path_prefix: /b, host: example.org.,\n"
                                 "            headers: {X-A: \"\", x-b: 2}}\n"
                                 "    backends: [{target_group: g}]\n");
    const config_match_t *m = &c->routes[0].match;
    assert_string_equal(m->host, ".example.com");
    assert_true(m->host_wildcard);
    assert_int_equal(m->methods,
                     METHOD_POST | METHOD_PUT | METHOD_DELETE | METHOD_PATCH | METHOD_OPTIONS);
    m = &c->routes[1].match;
    assert_string_equal(m->host, "example.org");
    assert_false(m->host_wildcard);
    assert_int_equal(m->n_headers, 2);
    assert_string_equal(m->headers[0].name, "x-a");
    assert_string_equal(m->headers[0].value, "");
    assert_string_equal(m->headers[1].name, "x-b");
    assert_string_equal(m->headers[1].value, "2");
    config_unref(c);
}

static void test_sticky_forms(void **state)
{
    (void)state;
    config_t *c = load_ok(GROUPS "routes:\n"
                                 "  - {name: a, match: {path: /a}, backends: [{target_group: g}],\n"
                                 "     sticky: client_ip}\n"
                                 "  - {name: b, match: {path: /b}, backends: [{target_group: g}],\n"
                                 "     sticky: \"cookie:SessionID\"}\n"
                                 "  - {name: c, match: {path: /c}, backends: [{target_group: g}],\n"
                                 "     sticky: none}\n");
    assert_int_equal(c->routes[0].sticky, STICKY_CLIENT_IP);
    assert_int_equal(c->routes[1].sticky, STICKY_COOKIE);
    assert_string_equal(c->routes[1].sticky_name, "SessionID");
    assert_int_equal(c->routes[2].sticky, STICKY_NONE);
    config_unref(c);
    expect_errors(GROUPS "routes:\n"
                         "  - {name: a, match: {path: /a}, backends: [{target_group: g}],\n"
                         "     sticky: \"header:\"}\n",
                  "t.yaml:6:14: routes[0].sticky: invalid sticky \"header:\" (none, client_ip, "
                  "header:NAME or cookie:NAME)");
}

static void test_method_bits(void **state)
{
    (void)state;
    static const struct {
        const char *m;
        uint32_t bit;
    } cases[] = {
        {"GET", METHOD_GET},         {"HEAD", METHOD_HEAD},     {"POST", METHOD_POST},
        {"PUT", METHOD_PUT},         {"DELETE", METHOD_DELETE}, {"PATCH", METHOD_PATCH},
        {"OPTIONS", METHOD_OPTIONS}, {"TRACE", METHOD_TRACE},   {"CONNECT", METHOD_CONNECT},
        {"get", METHOD_OTHER},       {"PURGE", METHOD_OTHER},   {"", METHOD_OTHER},
        {"GETS", METHOD_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(config_method_bit(cases[i].m, strlen(cases[i].m)), cases[i].bit);
    /* The length bounds the token: no NUL terminator is needed. */
    assert_int_equal(config_method_bit("GETX", 3), METHOD_GET);
    assert_int_equal(config_method_bit("GE", 2), METHOD_OTHER);
}

static void test_find(void **state)
{
    (void)state;
    config_t *c = load_ok(full_example);
    assert_int_equal(config_find_target_group(c, "monolith"), 0);
    assert_int_equal(config_find_target_group(c, "search-v2"), 2);
    assert_int_equal(config_find_target_group(c, "search"), CONFIG_NONE);
    assert_int_equal(config_find_route(c, "default"), 2);
    assert_int_equal(config_find_route(c, "Default"), CONFIG_NONE);
    assert_int_equal(config_find_set(c, "beta"), 1);
    assert_int_equal(config_find_set(c, "nope"), CONFIG_NONE);
    config_unref(c);
}

static void test_ref_unref(void **state)
{
    (void)state;
    /* A regex route: its pcre2 code must be freed with the last reference
     * (ASan reports a leak or a double free otherwise). */
    config_t *c = load_ok(full_example);
    assert_ptr_equal(config_ref(c), c);
    config_ref(c);
    assert_int_equal(atomic_load(&c->refs), 3);
    config_unref(c);
    config_unref(c);
    assert_int_equal(atomic_load(&c->refs), 1);
    assert_non_null(c->routes[1].match.regex);
    config_unref(c);
    config_unref(NULL);
}

static void test_regex_is_anchored(void **state)
{
    (void)state;
    config_t *c = load_ok(full_example);
    const config_match_t *m = &c->routes[1].match;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(m->regex, NULL);
    const char *yes = "/shops/42/items", *no = "/x/shops/42/items";
    assert_true(pcre2_match(m->regex, (PCRE2_SPTR)yes, strlen(yes), 0, 0, md, NULL) > 0);
    assert_int_equal(pcre2_match(m->regex, (PCRE2_SPTR)no, strlen(no), 0, 0, md, NULL),
                     PCRE2_ERROR_NOMATCH);
    pcre2_match_data_free(md);
    config_unref(c);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/ficus-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char yaml[] = "server:\n  idle_timeout: 4x\n";
    assert_int_equal(write(fd, yaml, sizeof yaml - 1), sizeof yaml - 1);
    close(fd);

    config_errors_t e;
    config_errors_init(&e);
    assert_null(config_load_file(path, &e));
    assert_int_equal(e.n, 1);
    char want[256];
    snprintf(want, sizeof want,
             "%s:2:17: server.idle_timeout: invalid duration \"4x\" (use a unit: 250ms, 5s, 2m, "
             "1h)",
             path);
    assert_string_equal(e.items[0], want);
    config_errors_deinit(&e);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("server: {idle_timeout: 2m}\n", f);
    fclose(f);
    config_errors_init(&e);
    config_t *c = config_load_file(path, &e);
    assert_non_null(c);
    assert_int_equal(e.n, 0);
    assert_string_equal(c->path, path);
    assert_int_equal(c->server.idle_timeout_ms, 120000);
    config_unref(c);
    config_errors_deinit(&e);
    unlink(path);
}

static void test_unreadable_file(void **state)
{
    (void)state;
    config_errors_t e;
    config_errors_init(&e);
    assert_null(config_load_file("/nonexistent/ficus.yaml", &e));
    assert_int_equal(e.n, 1);
    assert_string_equal(e.items[0],
                        "/nonexistent/ficus.yaml:1:1: cannot read: No such file or directory");
    assert_null(config_load_file("/", &e));
    assert_int_equal(e.n, 2);
    assert_string_equal(e.items[1], "/:1:1: cannot read: Is a directory");

    /* A file that is not a configuration (a log, a disk image) is refused
     * before it is read whole. */
    char path[] = "/tmp/ficus-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, CONFIG_MAX_FILE_BYTES + 1), 0);
    close(fd);
    assert_null(config_load_file(path, &e));
    assert_int_equal(e.n, 3);
    char want[128];
    snprintf(want, sizeof want, "%s:1:1: cannot read: larger than 16MiB", path);
    assert_string_equal(e.items[2], want);
    unlink(path);
    config_errors_deinit(&e);
    assert_int_equal(e.n, 0);
}

static void test_errors_add_format(void **state)
{
    (void)state;
    config_errors_t e;
    config_errors_init(&e);
    for (int i = 0; i < 20; i++)
        config_errors_add(&e, "f.yaml", (size_t)i + 1, 7, "n=%d", i);
    config_errors_add(&e, "f.yaml", 0, 9, "whole file");
    assert_int_equal(e.n, 21);
    assert_string_equal(e.items[0], "f.yaml:1:7: n=0");
    assert_string_equal(e.items[19], "f.yaml:20:7: n=19");
    assert_string_equal(e.items[20], "f.yaml:1:1: whole file");
    config_errors_deinit(&e);
    assert_null(e.items);
}

/* ---------------------------------------------------------------- errors */

static void test_yaml_errors(void **state)
{
    (void)state;
    expect_errors("", "t.yaml:1:1: the configuration is empty");
    expect_errors("# nothing but a comment\n", "t.yaml:1:1: the configuration is empty");
    expect_errors("- server\n", "t.yaml:1:1: the top level must be a mapping of sections "
                                "(server:, routes:, ...), got a list");
    expect_errors("server: {}\n---\nroutes: []\n",
                  "t.yaml:2:1: only one YAML document is allowed; found a second one");
    expect_errors("server:\n  listen: [\"0.0.0.0:80\"\nadmin: {}\n",
                  "t.yaml:3:1: invalid YAML: did not find expected ',' or ']' (while parsing a "
                  "flow sequence at line 2, column 11)");
    expect_errors("server:\n\tworkers: 2\n",
                  "t.yaml:2:1: invalid YAML: a tab cannot indent YAML; use spaces");
    expect_errors("server: *nothing\n", "t.yaml:1:9: invalid YAML: found undefined alias");
    expect_errors("server: {}\n\x01\n",
                  "t.yaml:2:1: invalid YAML: control characters are not allowed (byte 0x01)");
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_errors("server:\n"
                  "  workers: 2\n"
                  "  workers: 3\n"
                  "server: {}\n",
                  "t.yaml:3:3: server.workers: duplicate key (first at line 2)",
                  "t.yaml:4:1: server: duplicate key (first at line 1)");
    /* Header names are case-insensitive, so are their duplicates. */
    expect_errors(GROUPS "routes:\n"
                         "  - name: r\n"
                         "    match: {path: /, headers: {X-A: \"1\", x-a: \"2\"}}\n"
                         "    backends: [{target_group: g}]\n",
                  "t.yaml:6:42: routes[0].match.headers.x-a: duplicate key (first at line 6)");
}

static void test_bad_value_points_at_value(void **state)
{
    (void)state;
    /* The contract's own example of a message. */
    expect_errors(GROUPS "routes:\n" ROUTE_OK ROUTE_OK "  - name: r2\n"
                         "    match: {path_prefix: /}\n"
                         "    backends: [{target_group: g}]\n"
                         "    retries:\n"
                         "      attempts: 1\n"
                         "      retry_on: [5xx]\n"
                         "      per_try_timeout: 4x\n",
                  "t.yaml:8:11: routes[1].name: duplicate route name \"ok\" (also routes[0])",
                  "t.yaml:17:24: routes[2].retries.per_try_timeout: invalid duration \"4x\" "
                  "(use a unit: 250ms, 5s, 2m, 1h)");
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_errors("servers: {}\n"
                  "server:\n"
                  "  listen_on: [\":80\"]\n"
                  "  x: 1\n"
                  "target_groups:\n"
                  "  g: {targets: [\"10.0.0.1:80\"], <<: {}}\n",
                  "t.yaml:1:1: servers: unknown key (did you mean \"server\"?)",
                  "t.yaml:3:3: server.listen_on: unknown key", "t.yaml:4:3: server.x: unknown key",
                  "t.yaml:6:33: target_groups.g.<<: YAML merge keys are not supported; write the "
                  "keys out");
    expect_errors(GROUPS "routes:\n"
                         "  - name: r\n"
                         "    match: {path_prefx: /}\n"
                         "    backends: [{target_group: g, wieght: 2}]\n",
                  "t.yaml:6:12: routes[0].match: needs one of path, path_prefix or path_regex",
                  "t.yaml:6:13: routes[0].match.path_prefx: unknown key (did you mean "
                  "\"path_prefix\"?)",
                  "t.yaml:7:34: routes[0].backends[0].wieght: unknown key (did you mean "
                  "\"weight\"?)");
}

static void test_missing_required_points_at_mapping(void **state)
{
    (void)state;
    expect_errors("target_groups:\n"
                  "  g:\n"
                  "    dns_refresh: 5s\n"
                  "  h:\n"
                  "routes:\n"
                  "  - match: {path: /}\n"
                  "  - name: b\n"
                  "    match: {path: /b}\n"
                  "    backends:\n"
                  "      - weight: 1\n"
                  "    retries: {retry_on: [5xx]}\n"
                  "redis: {}\n",
                  "t.yaml:3:5: target_groups.g.targets: required key is missing",
                  "t.yaml:4:3: target_groups.h: needs a mapping with targets",
                  "t.yaml:6:5: routes[0].name: required key is missing",
                  "t.yaml:6:5: routes[0].backends: required key is missing",
                  "t.yaml:10:9: routes[1].backends[0].target_group: required key is missing",
                  "t.yaml:11:14: routes[1].retries.attempts: required key is missing",
                  "t.yaml:12:8: redis.address: required key is missing");
    /* Present but empty is said at the key. */
    expect_errors(GROUPS "routes:\n"
                         "  - name:\n"
                         "    match: {path: /}\n"
                         "    backends:\n",
                  "t.yaml:5:5: routes[0].name: needs a value",
                  "t.yaml:7:5: routes[0].backends: needs at least one backend");
}

static void test_type_errors(void **state)
{
    (void)state;
    expect_errors("server: [1]\n"
                  "admin: {listen: [\"127.0.0.1:1\"]}\n"
                  "target_groups: [a]\n"
                  "routes: {a: 1}\n"
                  "sets:\n"
                  "  s: [file]\n",
                  "t.yaml:1:9: server: expected a mapping, got a list",
                  "t.yaml:2:17: admin.listen: expected a string, got a list",
                  "t.yaml:3:16: target_groups: expected a mapping, got a list",
                  "t.yaml:4:9: routes: expected a list, got a mapping",
                  "t.yaml:6:6: sets.s: expected a mapping, got a list");
}

static void test_server_values(void **state)
{
    (void)state;
    expect_errors("server:\n"
                  "  max_header_size: 16kb\n"
                  "  max_body_size: 1.5\n"
                  "  retry_buffer_size: 2GiB\n"
                  "  header_timeout: 0s\n"
                  "  drain_delay: -1s\n"
                  "  idle_timeout: 9000h\n"
                  "  max_connections: 0\n"
                  "  trusted_proxies: [10.0.0.0/33, 10.0.0.0/8]\n"
                  "  control_socket: [a]\n",
                  "t.yaml:2:20: server.max_header_size: invalid size \"16kb\" (KB, MB, GB are "
                  "ambiguous: use KiB, MiB, GiB (powers of 1024))",
                  "t.yaml:3:18: server.max_body_size: invalid size \"1.5\" (not a whole number of "
                  "bytes)",
                  "t.yaml:4:22: server.retry_buffer_size: \"2GiB\" is too large (the maximum is "
                  "1GiB)",
                  "t.yaml:5:19: server.header_timeout: \"0s\" is too short (the minimum is 1ms)",
                  "t.yaml:6:16: server.drain_delay: invalid duration \"-1s\" (durations cannot be "
                  "negative)",
                  "t.yaml:7:17: server.idle_timeout: \"9000h\" is too long (the maximum is 8760h)",
                  "t.yaml:8:20: server.max_connections: \"0\" is out of range (1 to 10000000)",
                  "t.yaml:9:21: server.trusted_proxies[0]: invalid CIDR \"10.0.0.0/33\" (e.g. "
                  "10.0.0.0/8, 2001:db8::/32 or one address)",
                  "t.yaml:10:19: server.control_socket: expected a string, got a list");
    expect_errors("server: {max_header_size: 512}\n",
                  "t.yaml:1:27: server.max_header_size: \"512\" is too small (the minimum is "
                  "1KiB)");
}

static void test_listeners(void **state)
{
    (void)state;
    expect_errors("server:\n"
                  "  listen:\n"
                  "    - localhost:8080\n"
                  "    - \":8080\"\n"
                  "    - {address: \"0.0.0.0:8443\", tls: {cert: /c.pem, key: /k.pem}}\n"
                  "    - \"0.0.0.0:8080\"\n"
                  "    - \"[::1]:99999\"\n"
                  "    - {tls: {cert: /c.pem}}\n"
                  "admin: {listen: \"0.0.0.0:8080\"}\n",
                  "t.yaml:3:7: server.listen[0]: \"localhost:8080\" is not a numeric address "
                  "(listen on an IP: 0.0.0.0:8080, [::]:8080, or :8080)",
                  "t.yaml:5:39: server.listen[2].tls.cert: cannot read /c.pem: No such file or "
                  "directory",
                  "t.yaml:5:53: server.listen[2].tls.key: cannot read /k.pem: No such file or "
                  "directory",
                  "t.yaml:6:7: server.listen[3]: \"0.0.0.0:8080\" is already in server.listen[1]",
                  "t.yaml:7:7: server.listen[4]: invalid address \"[::1]:99999\" (port out of "
                  "range (1-65535))",
                  "t.yaml:8:7: server.listen[5].address: required key is missing",
                  "t.yaml:8:13: server.listen[5].tls.key: required key is missing",
                  "t.yaml:8:14: server.listen[5].tls.cert: cannot read /c.pem: No such file or "
                  "directory",
                  "t.yaml:9:17: admin.listen: \"0.0.0.0:8080\" is also server.listen[1]");
    expect_errors("server: {listen: []}\n",
                  "t.yaml:1:18: server.listen: needs at least one address (omit it to listen on "
                  "0.0.0.0:8080)");
}

static void test_target_group_values(void **state)
{
    (void)state;
    expect_errors("target_groups:\n"
                  "  a: {targets: []}\n"
                  "  bad name: {targets: [\"x\"]}\n"
                  "  c:\n"
                  "    targets: [\"10.0.0.1:80\", \"10.0.0.1:80\", \":80\", \"a..b:80\"]\n"
                  "    balance: weighted\n"
                  "    max_pending: 0\n"
                  "    keepalive: {max_idle: -1}\n"
                  "    health_check: {path: healthz, healthy_threshold: 0}\n"
                  "    outlier_detection: {max_ejection_percent: 101}\n"
                  "    required: yes\n",
                  "t.yaml:2:16: target_groups.a.targets: needs at least one target (host:port)",
                  "t.yaml:3:3: target_groups.bad name: invalid name \"bad name\" (use letters, "
                  "digits, '_', '.' and '-', starting with a letter or digit)",
                  "t.yaml:3:24: target_groups.bad name.targets[0]: invalid target \"x\" (missing "
                  ":port)",
                  "t.yaml:5:30: target_groups.c.targets[1]: \"10.0.0.1:80\" is already "
                  "target_groups.c.targets[0]",
                  "t.yaml:5:45: target_groups.c.targets[2]: \":80\" needs a host (e.g. 10.0.0.5:80 "
                  "or app.internal:80)",
                  "t.yaml:5:52: target_groups.c.targets[3]: invalid host name in \"a..b:80\"",
                  "t.yaml:6:14: target_groups.c.balance: unknown balance \"weighted\" "
                  "(round_robin, least_request or random)",
                  "t.yaml:7:18: target_groups.c.max_pending: \"0\" is out of range (1 to "
                  "10000000)",
                  "t.yaml:8:27: target_groups.c.keepalive.max_idle: expected a whole number from "
                  "0 to 10000000, got \"-1\"",
                  "t.yaml:9:26: target_groups.c.health_check.path: must start with '/', got "
                  "\"healthz\"",
                  "t.yaml:9:54: target_groups.c.health_check.healthy_threshold: \"0\" is out of "
                  "range (1 to 1000)",
                  "t.yaml:10:47: target_groups.c.outlier_detection.max_ejection_percent: \"101\" "
                  "is out of range (0 to 100)",
                  "t.yaml:11:15: target_groups.c.required: expected true or false, got \"yes\"");
}

static void test_sets(void **state)
{
    (void)state;
    expect_errors("sets:\n"
                  "  both: {file: /a, url: \"http://x/\"}\n"
                  "  neither: {refresh: 5s}\n"
                  "  nothing:\n"
                  "  tls: {url: \"https://x/list\"}\n"
                  "  ftp: {url: \"ftp://x/list\"}\n"
                  "  empty: {file: \"\"}\n"
                  "  port: {url: \"http://x:99999/list\"}\n"
                  "  creds: {url: \"http://u:p@x/list\"}\n",
                  "t.yaml:2:20: sets.both.url: set file or url, not both",
                  "t.yaml:3:12: sets.neither: needs file or url",
                  "t.yaml:4:3: sets.nothing: needs file or url",
                  "t.yaml:5:14: sets.tls.url: https is not supported yet; use an http:// URL",
                  "t.yaml:6:14: sets.ftp.url: expected an http:// URL, got \"ftp://x/list\"",
                  "t.yaml:7:17: sets.empty.file: must not be empty",
                  "t.yaml:8:15: sets.port.url: bad port in URL, got \"http://x:99999/list\"",
                  "t.yaml:9:16: sets.creds.url: credentials in the URL are not supported, got "
                  "\"http://u:p@x/list\"");
}

static void test_tracing_values(void **state)
{
    (void)state;
    expect_errors("tracing:\n"
                  "  otlp_endpoint: https://collector:4318\n"
                  "  sample_ratio: 1.5\n"
                  "  propagation: [w3c, b3]\n"
                  "  service_name: \"\"\n"
                  "access_log: {path: \"\"}\n"
                  "redis: {address: \":6379\"}\n",
                  "t.yaml:2:18: tracing.otlp_endpoint: https is not supported yet; use an http:// "
                  "URL",
                  "t.yaml:3:17: tracing.sample_ratio: expected a number from 0 to 1, got \"1.5\"",
                  "t.yaml:4:22: tracing.propagation[1]: unknown propagation \"b3\" (w3c or "
                  "datadog)",
                  "t.yaml:5:17: tracing.service_name: must not be empty",
                  "t.yaml:6:20: access_log.path: must not be empty (write off to turn the access "
                  "log off)",
                  "t.yaml:7:18: redis.address: \":6379\" needs a host (e.g. 127.0.0.1:6379)");
}

static void test_all_errors_in_file_order(void **state)
{
    (void)state;
    /* Sections are read in dependency order (routes last), yet the errors
     * come back in file order. */
    expect_errors("routes:\n"
                  "  - name: r\n"
                  "    match: {path: /}\n"
                  "    backends: [{target_group: nope}]\n"
                  "    timeout: soon\n"
                  "server:\n"
                  "  idle_timeout: 10\n"
                  "target_groups:\n"
                  "  g: {targets: [\"10.0.0.1\"]}\n",
                  "t.yaml:4:31: routes[0].backends[0].target_group: unknown target group \"nope\"",
                  "t.yaml:5:14: routes[0].timeout: invalid duration \"soon\" (use a unit: 250ms, "
                  "5s, 2m, 1h)",
                  "t.yaml:7:17: server.idle_timeout: invalid duration \"10\" (use a unit: 250ms, "
                  "5s, 2m, 1h)",
                  "t.yaml:9:17: target_groups.g.targets[0]: invalid target \"10.0.0.1\" (missing "
                  ":port)");
}

/* Aggregation routes (contract 8): each mistake located and named. */
static void test_aggregate_errors(void **state)
{
    (void)state;
    expect_errors(GROUPS "routes:\n"
                         "  - name: home\n"
                         "    match: {path: /home}\n"
                         "    aggregate:\n"
                         "      timeout: 800ms\n"
                         "  - name: both\n"
                         "    match: {path: /both}\n"
                         "    backends: [{target_group: g}]\n"
                         "    aggregate: {calls: [{name: a, target_group: g, path: /a}]}\n"
                         "  - name: u\n"
                         "    match: {path: /u}\n"
                         "    aggregate:\n"
                         "      calls:\n"
                         "        - {name: a, target_group: nope, path: \"/u/{user}\"}\n"
                         "        - {name: a, target_group: g, path: /b, extract: x}\n",
                  "t.yaml:8:7: routes[0].aggregate.calls: required key is missing",
                  "t.yaml:12:5: routes[1].aggregate: a route has backends or aggregate calls, "
                  "not both",
                  "t.yaml:15:5: routes[2].aggregate: calls[0].path uses {user}: the route needs "
                  "auth.user (the user's id comes from the token)",
                  "t.yaml:17:35: routes[2].aggregate.calls[0].target_group: unknown target group "
                  "\"nope\"",
                  "t.yaml:18:18: routes[2].aggregate.calls[1].name: \"a\" is already "
                  "routes[2].aggregate.calls[0]'s name",
                  "t.yaml:18:57: routes[2].aggregate.calls[1].extract: expected a JSON pointer "
                  "(\"\" or starting with '/', '~' only as ~0 or ~1), got \"x\"");
}

/* API clients, JWT providers, the session exchange and a route's auth,
 * clients and rate_limit: each mistake located and named. */
static void test_edge_security_errors(void **state)
{
    (void)state;
    setenv("T_KEY", "foo", 1); /* sha256("foo") = 2c26b4... */
    unsetenv("T_UNSET");
    expect_errors(GROUPS
                  "clients:\n"
                  "  - id: a\n"
                  "    api_keys_sha256: "
                  "[\"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"]\n"
                  "    api_keys_env: [T_KEY, T_UNSET]\n"
                  "  - id: b\n"
                  "    api_keys_sha256: [\"zz\"]\n"
                  "    concurrency_scope: global\n"
                  "  - id: a\n"
                  "jwt_providers:\n"
                  "  main:\n"
                  "    jwks_file: k.json\n"
                  "    jwks_url: http://127.0.0.1:1/k\n"
                  "    algorithms: [RS256, none, XX1]\n"
                  "    forward_claims: {sub: X-User-Id, role: Host, r2: x-user-id}\n"
                  "  other: {issuer: i}\n"
                  "session_exchange: {cookie: sid, header: X-S, url: http://s/x, provider: nope}\n"
                  "routes:\n"
                  "  - name: r\n"
                  "    match: {path_prefix: /}\n"
                  "    backends: [{target_group: g}]\n"
                  "    auth: {client: maybe, user: {provider: mainx}}\n"
                  "    clients: [a]\n"
                  "    rate_limit: {requests_per_second: 0, by: user, scope: global}\n",
                  "t.yaml:7:20: clients[0].api_keys_env[0]: the same key twice",
                  "t.yaml:7:27: clients[0].api_keys_env[1]: the environment variable \"T_UNSET\" "
                  "is not set (or empty)",
                  "t.yaml:9:23: clients[1].api_keys_sha256[0]: expected the SHA-256 of a key as 64 "
                  "hex digits (2 characters)",
                  "t.yaml:10:24: clients[1].concurrency_scope: global counts live in redis: set "
                  "redis.address",
                  "t.yaml:11:5: clients[2]: needs api_keys_sha256, api_keys_env (the keys it "
                  "presents) or certificate_cn (its client certificates)",
                  "t.yaml:11:9: clients[2].id: duplicate client id \"a\" (first at line 5)",
                  "t.yaml:15:5: jwt_providers.main.jwks_url: set jwks_file or jwks_url, not both",
                  "t.yaml:16:25: jwt_providers.main.algorithms[1]: \"none\" (unsigned tokens) is "
                  "never accepted",
                  "t.yaml:16:31: jwt_providers.main.algorithms[2]: unknown algorithm \"XX1\" "
                  "(RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, HS256, HS384, HS512, "
                  "EdDSA)",
                  "t.yaml:17:44: jwt_providers.main.forward_claims.role: \"Host\" is a header "
                  "ficus writes or frames the request with",
                  "t.yaml:17:54: jwt_providers.main.forward_claims.r2: header x-user-id already "
                  "carries claim sub",
                  "t.yaml:18:10: jwt_providers.other: needs jwks_file or jwks_url (where its keys "
                  "are)",
                  "t.yaml:19:33: session_exchange.header: set cookie or header, not both",
                  "t.yaml:19:73: session_exchange.provider: unknown JWT provider \"nope\" (see "
                  "jwt_providers)",
                  "t.yaml:24:20: routes[0].auth.client: unknown value \"maybe\" (none, optional or "
                  "required)",
                  "t.yaml:24:44: routes[0].auth.user.provider: unknown JWT provider \"mainx\" (see "
                  "jwt_providers)",
                  "t.yaml:25:14: routes[0].clients: only a known client can be let in: set "
                  "auth.client: required on the route",
                  "t.yaml:26:39: routes[0].rate_limit.requests_per_second: expected a number from "
                  "0.001 to 1e9, got \"0\"",
                  "t.yaml:26:46: routes[0].rate_limit.by: by user needs auth.user on the route",
                  "t.yaml:26:59: routes[0].rate_limit.scope: global counts live in redis: set "
                  "redis.address");
}

/* Their values: defaults, keys from the environment hashed, indexes. */
/* clients[].certificate_cn: a client may have only certificates; one CN
 * names one client; config_client_by_cn finds it (exact, by length too). */
static void test_certificate_cn(void **state)
{
    (void)state;
    config_t *cfg =
        load_ok(GROUPS "clients:\n"
                       "  - {id: a, certificate_cn: [svc-b, svc-a]}\n"
                       "  - {id: b, certificate_cn: [\"Ops Team\"], api_keys_sha256: "
                       "[\"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"]}\n"
                       "routes:\n"
                       "  - {name: r, match: {path_prefix: /}, backends: [{target_group: "
                       "g}]}\n");
    assert_int_equal(cfg->clients[0].n_certificate_cn, 2);
    assert_int_equal(cfg->clients[0].n_keys, 0);
    assert_int_equal(cfg->n_cert_cns, 3);
    assert_int_equal(config_client_by_cn(cfg, "svc-a", 5), 0);
    assert_int_equal(config_client_by_cn(cfg, "svc-b", 5), 0);
    assert_int_equal(config_client_by_cn(cfg, "Ops Team", 8), 1);
    assert_int_equal(config_client_by_cn(cfg, "ops team", 8), CONFIG_NONE);
    assert_int_equal(config_client_by_cn(cfg, "svc-", 4), CONFIG_NONE);
    assert_int_equal(config_client_by_cn(cfg, "svc-a2", 6), CONFIG_NONE);
    assert_int_equal(config_client_by_cn(cfg, "svc-a\0x", 7), CONFIG_NONE);
    config_unref(cfg);
    expect_errors(
        GROUPS "clients:\n"
               "  - {id: a, certificate_cn: [x, x]}\n"
               "  - {id: b, certificate_cn: [y, x, \"\"]}\n"
               "  - {id: c, certificate_cn: []}\n"
               "routes:\n"
               "  - {name: r, match: {path_prefix: /}, backends: [{target_group: g}]}\n",
        "t.yaml:5:33: clients[0].certificate_cn: \"x\" twice",
        "t.yaml:6:33: clients[1].certificate_cn: \"x\" is also a certificate_cn of client a",
        "t.yaml:6:36: clients[1].certificate_cn[2]: \"\" is not a certificate subject CN "
        "(1 to 64 characters, no control character)",
        "t.yaml:7:5: clients[2]: needs api_keys_sha256, api_keys_env (the keys it presents) "
        "or certificate_cn (its client certificates)");
}

static void test_edge_security_values(void **state)
{
    (void)state;
    setenv("T_KEY", "foo", 1);
    config_t *cfg =
        load_ok("redis: {address: \"127.0.0.1:6379\"}\n" GROUPS "clients:\n"
                "  - {id: a, api_keys_env: [T_KEY], max_concurrent_requests: 3,"
                " concurrency_scope: global}\n"
                "  - {id: b, api_keys_sha256: "
                "[\"2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AF\"]}\n"
                "jwt_providers:\n"
                "  main: {jwks_file: /k.json, forward_claims: {sub: X-User-Id}}\n"
                "session_exchange: {header: X-Session, url: \"http://127.0.0.1:9/j\","
                " provider: main}\n"
                "routes:\n"
                "  - name: r\n"
                "    match: {path_prefix: /}\n"
                "    backends: [{target_group: g}]\n"
                "    auth: {client: required, user: {provider: main, required: true}}\n"
                "    clients: [b]\n"
                "    rate_limit: {requests_per_second: 2.5, by: client, scope: global}\n"
                "  - name: s\n"
                "    match: {path_prefix: /s}\n"
                "    backends: [{target_group: g}]\n"
                "    rate_limit: {requests_per_second: 0.5}\n");
    assert_int_equal(cfg->n_clients, 2);
    assert_string_equal(cfg->clients[0].id, "a");
    assert_int_equal(cfg->clients[0].n_keys, 1);
    assert_int_equal(cfg->clients[0].key_sha256[0][0], 0x2c);
    assert_int_equal(cfg->clients[0].key_sha256[0][31], 0xae);
    assert_int_equal(cfg->clients[1].key_sha256[0][31], 0xaf);
    assert_int_equal(cfg->clients[0].max_concurrent_requests, 3);
    assert_int_equal(cfg->clients[0].concurrency_scope, SCOPE_GLOBAL);
    assert_int_equal(cfg->clients[1].concurrency_scope, SCOPE_LOCAL);
    const config_jwt_provider_t *jp = &cfg->jwt_providers[0];
    assert_int_equal(jp->algorithms, JWT_ALG_RS256 | JWT_ALG_ES256);
    assert_int_equal(jp->leeway_ms, 30000);
    assert_int_equal(jp->jwks_refresh_ms, 600000);
    assert_string_equal(jp->forward_claims[0].header, "X-User-Id");
    assert_string_equal(jp->forward_claims[0].header_lc, "x-user-id");
    assert_true(cfg->has_session_exchange);
    assert_string_equal(cfg->session_exchange.header, "x-session");
    assert_int_equal(cfg->session_exchange.provider, 0);
    assert_int_equal(cfg->session_exchange.cache_ttl_ms, 30000);
    const config_route_t *r = &cfg->routes[0];
    assert_int_equal(r->auth_client, AUTH_CLIENT_REQUIRED);
    assert_int_equal(r->auth_provider, 0);
    assert_true(r->auth_user_required);
    assert_int_equal(r->n_clients, 1);
    assert_int_equal(r->clients[0], 1);
    assert_true(r->has_rate_limit);
    assert_true(r->rate_limit.requests_per_second == 2.5);
    assert_true(r->rate_limit.burst == 3);
    assert_int_equal(r->rate_limit.by, RATE_BY_CLIENT);
    assert_int_equal(r->rate_limit.scope, SCOPE_GLOBAL);
    r = &cfg->routes[1];
    assert_int_equal(r->auth_client, AUTH_CLIENT_NONE);
    assert_int_equal(r->auth_provider, CONFIG_NONE);
    assert_true(r->rate_limit.burst == 1);
    assert_int_equal(r->rate_limit.by, RATE_BY_IP);
    config_unref(cfg);
}

static void test_dangling_references(void **state)
{
    (void)state;
    expect_errors(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path: /a}\n"
                         "    backends:\n"
                         "      - {target_group: nope}\n"
                         "      - {target_group: g, fallback: h}\n"
                         "      - {target_group: h, weight: 0, fallback: gone}\n"
                         "  - name: b\n"
                         "    match: {path: /b}\n"
                         "    backends: [{target_group: g, fallback: g}]\n",
                  "t.yaml:8:24: routes[0].backends[0].target_group: unknown target group \"nope\"",
                  "t.yaml:10:48: routes[0].backends[2].fallback: unknown target group \"gone\"",
                  "t.yaml:13:44: routes[1].backends[0].fallback: a backend cannot fall back to its "
                  "own target group \"g\"");
    expect_errors(GROUPS "routes:\n"
                         "  - name: search\n"
                         "    match: {path_prefix: /search}\n"
                         "    backends:\n"
                         "      - {target_group: g, weight: 90}\n"
                         "      - {target_group: h, weight: 10, fallback: monolith}\n"
                         "  - name: s2\n"
                         "    match: {path_prefix: /s2}\n"
                         "    backends: [{target_group: h, fallback: g}]\n",
                  "t.yaml:9:49: routes[0].backends[1].fallback: unknown target group "
                  "\"monolith\"",
                  "t.yaml:12:44: routes[1].backends[0].fallback: fallback group \"g\" is not one "
                  "of the route's backends (add it with weight: 0)");
}

static void test_in_set(void **state)
{
    (void)state;
    expect_errors("sets: {shops: {file: /s.txt}}\n" GROUPS "routes:\n"
                  "  - name: a\n"
                  "    match: {path_prefix: /a, in_set: {capture: shop, set: shops}}\n"
                  "    backends: [{target_group: g}]\n"
                  "  - name: b\n"
                  "    match: {path_regex: \"/b/([0-9]+)\", in_set: {capture: shop, set: shopz}}\n"
                  "    backends: [{target_group: g}]\n"
                  "  - name: c\n"
                  "    match: {path_regex: \"/c/(?<id>[0-9]+)\", in_set: {set: shops}}\n"
                  "    backends: [{target_group: g}]\n",
                  "t.yaml:7:30: routes[0].match.in_set: needs path_regex (in_set looks up a named "
                  "group of it)",
                  "t.yaml:10:58: routes[1].match.in_set.capture: path_regex has no group named "
                  "\"shop\" (write it as (?<name>...))",
                  "t.yaml:10:69: routes[1].match.in_set.set: unknown set \"shopz\"",
                  "t.yaml:13:53: routes[2].match.in_set.capture: required key is missing");
}

static void test_regex_errors(void **state)
{
    (void)state;
    expect_errors(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_regex: \"/(a\"}\n"
                         "    backends: [{target_group: g, path: \"/x/$1\"}]\n"
                         "  - name: b\n"
                         "    match: {path_regex: \"/b/(\\\\d+)\", path: /b}\n"
                         "    backends: [{target_group: g}]\n",
                  "t.yaml:6:25: routes[0].match.path_regex: invalid regex \"/(a\": missing "
                  "closing parenthesis (at offset 3)",
                  "t.yaml:9:38: routes[1].match.path: only one of path, path_prefix or "
                  "path_regex may be set");
}

static void test_path_templates(void **state)
{
    (void)state;
    config_t *c =
        load_ok(GROUPS "routes:\n"
                       "  - name: a\n"
                       "    match: {path_regex: \"/a/([^/]+)\"}\n"
                       "    backends: [{target_group: g, path: \"/v1/$1?x=$$1&all=$0\"}]\n"
                       "  - name: b\n"
                       "    match: {path_prefix: /b}\n"
                       "    backends: [{target_group: g, path: \"/new$0\"}]\n");
    assert_string_equal(c->routes[0].backends[0].path, "/v1/$1?x=$$1&all=$0");
    assert_int_equal(c->routes[0].match.n_captures, 1);
    assert_string_equal(c->routes[1].backends[0].path, "/new$0");
    config_unref(c);
    expect_errors(GROUPS "routes:\n"
                         "  - name: a\n"
                         "    match: {path_regex: \"/a/([^/]+)\"}\n"
                         "    backends: [{target_group: g, path: \"/v1/$2\"}]\n"
                         "  - name: b\n"
                         "    match: {path_prefix: /b}\n"
                         "    backends: [{target_group: g, path: \"/x/$1\"}]\n"
                         "  - name: c\n"
                         "    match: {path: /c}\n"
                         "    backends: [{target_group: g, path: \"x\"}]\n",
                  "t.yaml:7:40: routes[0].backends[0].path: $2, but match.path_regex has 1 "
                  "capture group",
                  "t.yaml:10:40: routes[1].backends[0].path: $1 needs match.path_regex (without "
                  "it only $0, the matched path, exists)",
                  "t.yaml:13:40: routes[2].backends[0].path: must start with '/', got \"x\"");
}

static void test_route_values(void **state)
{
    (void)state;
    expect_errors(GROUPS
                  "routes:\n"
                  "  - name: -bad\n"
                  "    match: {path: \"/a b\", methods: [get, PURGE], host: \"api.x:80\"}\n"
                  "    rewrite_prefix: /v2\n"
                  "    backends: [{target_group: g, weight: 0}, {target_group: g, weight: 0}]\n"
                  "    retries: {attempts: 11, retry_on: [5xx, 600, teapot]}\n"
                  "    retry_non_idempotent: 1\n"
                  "    ip_deny: [everyone]\n"
                  "    request_headers:\n"
                  "      set: {Content-Length: \"1\", \"X Y\": z}\n"
                  "      remove: [\"a b\"]\n",
                  "t.yaml:5:11: routes[0].name: invalid name \"-bad\" (use letters, digits, '_', "
                  "'.' and '-', starting with a letter or digit)",
                  "t.yaml:6:19: routes[0].match.path: \"/a b\" contains a space or a control "
                  "character",
                  "t.yaml:6:37: routes[0].match.methods[0]: unknown method \"get\" (methods are "
                  "case-sensitive: GET)",
                  "t.yaml:6:42: routes[0].match.methods[1]: unknown method \"PURGE\" (GET, HEAD, "
                  "POST, PUT, DELETE, PATCH, OPTIONS, TRACE or CONNECT)",
                  "t.yaml:6:56: routes[0].match.host: invalid host \"api.x:80\" (no port: the "
                  "port is ignored when matching)",
                  "t.yaml:7:5: routes[0].rewrite_prefix: only works with match.path_prefix",
                  "t.yaml:8:15: routes[0].backends: every weight is 0; at least one backend must "
                  "take traffic",
                  "t.yaml:8:61: routes[0].backends[1].target_group: \"g\" is already "
                  "routes[0].backends[0]",
                  "t.yaml:9:25: routes[0].retries.attempts: \"11\" is out of range (0 to 10)",
                  "t.yaml:9:45: routes[0].retries.retry_on[1]: status \"600\" is out of range "
                  "(100 to 599)",
                  "t.yaml:9:50: routes[0].retries.retry_on[2]: unknown retry condition \"teapot\" "
                  "(5xx, gateway-error, connect-failure, reset, timeout, a status code such as "
                  "429, or a gRPC status: cancelled, deadline-exceeded, resource-exhausted, "
                  "unavailable)",
                  "t.yaml:10:27: routes[0].retry_non_idempotent: expected true or false, got "
                  "\"1\"",
                  "t.yaml:11:15: routes[0].ip_deny[0]: invalid CIDR \"everyone\" (e.g. "
                  "10.0.0.0/8, 2001:db8::/32 or one address)",
                  "t.yaml:13:13: routes[0].request_headers.set.Content-Length: "
                  "\"Content-Length\" cannot be set (ficus manages it)",
                  "t.yaml:13:34: routes[0].request_headers.set.X Y: invalid header name \"X Y\"",
                  "t.yaml:14:16: routes[0].request_headers.remove[0]: invalid header name \"a b\"");
}

static void test_too_many_backends(void **state)
{
    (void)state;
    char yaml[8192];
    size_t o = (size_t)snprintf(yaml, sizeof yaml, "%s",
                                GROUPS "routes:\n"
                                       "  - name: r\n"
                                       "    match: {path: /}\n"
                                       "    backends:\n");
    for (int i = 0; i <= MAX_ROUTE_BACKENDS; i++)
        o += (size_t)snprintf(yaml + o, sizeof yaml - o, "      - {target_group: g}\n");
    assert_true(o < sizeof yaml);
    expect_errors(yaml, "t.yaml:8:7: routes[0].backends: at most 64 backends");
}

static void test_alias_expansion_is_bounded(void **state)
{
    (void)state;
    /* A small file whose aliases expand to millions of values (a "billion
     * laughs") is refused instead of eating the machine. */
    enum { CONDITIONS = 2000, ROUTES = 600 };
    size_t cap = CONDITIONS * 8 + ROUTES * 128 + 1024, o = 0;
    char *yaml = malloc(cap);
    assert_non_null(yaml);
    o += (size_t)snprintf(yaml + o, cap - o, "%s", GROUPS "x-unused: 1\nroutes:\n");
    for (int i = 0; i < ROUTES; i++) {
        o += (size_t)snprintf(yaml + o, cap - o,
                              "  - {name: r%d, match: {path: /%d}, backends: [{target_group: g}],\n"
                              "     retries: {attempts: 1, retry_on: ",
                              i, i);
        if (i == 0) {
            o += (size_t)snprintf(yaml + o, cap - o, "&on [");
            for (int j = 0; j < CONDITIONS; j++)
                o += (size_t)snprintf(yaml + o, cap - o, "%s5xx", j ? ", " : "");
            o += (size_t)snprintf(yaml + o, cap - o, "]}}\n");
        } else {
            o += (size_t)snprintf(yaml + o, cap - o, "*on}}\n");
        }
    }
    assert_true(o < cap);
    config_errors_t e;
    config_errors_init(&e);
    assert_null(config_load_string(yaml, o, "t.yaml", &e));
    free(yaml);
    /* The unknown key before it is still reported; nothing after it. */
    assert_int_equal(e.n, 2);
    assert_string_equal(e.items[0], "t.yaml:4:1: x-unused: unknown key");
    assert_non_null(
        strstr(e.items[1], ".retries.retry_on: the configuration expands to more than "));
    assert_int_equal(strncmp(e.items[1], "t.yaml:7:39: routes[", 20), 0);
    config_errors_deinit(&e);
}

static void test_nul_byte_in_value(void **state)
{
    (void)state;
    expect_errors("server: {control_socket: \"/run/a\\0b\"}\n",
                  "t.yaml:1:26: server.control_socket: contains a NUL byte");
}

/* What a reload may not change, from the rows marked ROW_RESTART: each key
 * by its path, the first in file-section order, addresses compared as
 * bound (not as written), and where each is written. */
static void test_restart_only_change(void **state)
{
    static const char base[] = "server:\n"
                               "  listen: [\"127.0.0.1:8080\"]\n"
                               "  workers: 2\n"
                               "  max_connections: 100\n"
                               "  max_header_size: 16KiB\n"
                               "  idle_timeout: 1m\n"
                               "admin: {listen: \"[::1]:9901\"}\n"
                               "access_log: {path: off}\n"
                               "tracing: {service_name: a, sample_ratio: 0.5}\n";
    static const struct {
        const char *yaml, *key;
    } cases[] = {
        /* Reloadable keys and an address written another way: no change. */
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 100\n"
         "  max_header_size: 16384\n  idle_timeout: 5s\nadmin: {listen: \"[0::1]:9901\"}\n"
         "access_log: {path: off}\ntracing: {service_name: a, sample_ratio: 1}\n",
         NULL},
        {"server:\n  listen: [\"127.0.0.1:8081\"]\n  workers: 3\n", "server.listen"},
        {"server:\n  listen: [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n", "server.listen"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 3\n  max_connections: 1\n",
         "server.workers"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 1\n",
         "server.max_connections"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 100\n"
         "  max_header_size: 32KiB\n",
         "server.max_header_size"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 100\n"
         "  max_header_size: 16KiB\n  control_socket: /tmp/f.sock\n",
         "server.control_socket"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 100\n"
         "  max_header_size: 16KiB\nadmin: {listen: \"[::1]:9902\"}\n",
         "admin.listen"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 100\n"
         "  max_header_size: 16KiB\nadmin: {listen: \"[::1]:9901\"}\n",
         "access_log.path"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 100\n"
         "  max_header_size: 16KiB\nadmin: {listen: \"[::1]:9901\"}\naccess_log: {path: off}\n"
         "tracing: {service_name: a, otlp_endpoint: \"http://127.0.0.1:4318/v1/traces\"}\n",
         "tracing.otlp_endpoint"},
        {"server:\n  listen: [\"127.0.0.1:8080\"]\n  workers: 2\n  max_connections: 100\n"
         "  max_header_size: 16KiB\nadmin: {listen: \"[::1]:9901\"}\naccess_log: {path: off}\n",
         "tracing.service_name"},
    };
    config_t *a = load_ok(base);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config_t *b = load_ok(cases[i].yaml);
        const char *key = config_restart_only_change(a, b);
        if (!cases[i].key && key)
            print_message("case %zu: %s\n", i, key);
        if (cases[i].key)
            assert_string_equal(key, cases[i].key);
        else
            assert_null(key);
        config_unref(b);
    }
    size_t line, col;
    config_key_position(a, "admin.listen", &line, &col);
    assert_int_equal(line, 7);
    assert_int_equal(col, 9);
    config_key_position(a, "server.workers", &line, &col);
    assert_int_equal(line, 3);
    assert_int_equal(col, 3);
    config_key_position(a, "server.control_socket", &line, &col); /* not written */
    assert_int_equal(line, 0);
    config_key_position(a, "server.idle_timeout", &line, &col); /* not restart-only */
    assert_int_equal(line, 0);
    config_unref(a);
}

/* ------------------------------------------------------ migration safety */

#define MIGRATION_GROUPS                                                                           \
    "target_groups:\n"                                                                             \
    "  g: {targets: [\"10.0.0.1:80\"]}\n"                                                          \
    "  h: {targets: [\"10.0.0.2:80\"]}\n"                                                          \
    "  v2: {targets: [\"10.0.0.3:80\"]}\n"

/* shadow and rollout with every key, and with only the required ones:
 * values, defaults and the /config JSON of both blocks. */
static void test_shadow_rollout_values(void **state)
{
    (void)state;
    config_t *c = load_ok("redis:\n"
                          "  address: \"127.0.0.1:6379\"\n" MIGRATION_GROUPS "routes:\n"
                          "  - name: r\n"
                          "    match: {path_regex: \"/orders/([0-9]+)\"}\n"
                          "    backends: [{target_group: g, weight: 100}, {target_group: h, "
                          "weight: 0}]\n"
                          "    shadow:\n"
                          "      target_group: v2\n"
                          "      percent: 10\n"
                          "      path: \"/v2/orders/$1\"\n"
                          "      methods: [GET, POST]\n"
                          "      max_in_flight: 50\n"
                          "      compare:\n"
                          "        ignore: [\"/meta/generated_at\", \"/items/*/etag\", \"\", "
                          "\"/a~1b~0\"]\n"
                          "        unordered: [\"/items\"]\n"
                          "        headers: [Content-Type, x-b]\n"
                          "        noise: {percent: 5}\n"
                          "        max_body_size: 2MiB\n"
                          "    rollout:\n"
                          "      canary: h\n"
                          "      steps: [1, 5, 25, 50, 100]\n"
                          "      interval: 2m\n"
                          "      min_requests: 50\n"
                          "      max_error_rate: 2%\n"
                          "      max_latency_ratio: 1.5\n"
                          "      max_mismatch_rate: 0.5%\n"
                          "      on_failure: pause\n"
                          "      state: redis\n"
                          "  - name: d\n"
                          "    match: {path_prefix: /d}\n"
                          "    backends: [{target_group: g}, {target_group: h, weight: 0}]\n"
                          "    shadow: {target_group: h}\n"
                          "    rollout: {canary: h, steps: [100]}\n"
                          "  - name: none\n"
                          "    match: {path_prefix: /n}\n"
                          "    backends: [{target_group: g}]\n");
    const config_route_t *r = &c->routes[0];
    assert_true(r->has_shadow);
    assert_int_equal(r->shadow.target_group, config_find_target_group(c, "v2"));
    assert_int_equal(r->shadow.percent, 10);
    assert_string_equal(r->shadow.path, "/v2/orders/$1");
    assert_int_equal(r->shadow.methods, METHOD_GET | METHOD_POST);
    assert_int_equal(r->shadow.max_in_flight, 50);
    assert_true(r->shadow.has_compare);
    assert_int_equal(r->shadow.compare.n_ignore, 4);
    assert_string_equal(r->shadow.compare.ignore[1], "/items/*/etag");
    assert_string_equal(r->shadow.compare.ignore[2], "");
    assert_int_equal(r->shadow.compare.n_unordered, 1);
    assert_string_equal(r->shadow.compare.unordered[0], "/items");
    assert_int_equal(r->shadow.compare.n_headers, 2);
    assert_string_equal(r->shadow.compare.headers[0], "content-type");
    assert_true(r->shadow.compare.has_noise);
    assert_int_equal(r->shadow.compare.noise_percent, 5);
    assert_int_equal(r->shadow.compare.max_body_size, 2 * 1024 * 1024);
    assert_true(r->has_rollout);
    assert_int_equal(r->rollout.canary, config_find_target_group(c, "h"));
    assert_int_equal(r->rollout.n_steps, 5);
    assert_int_equal(r->rollout.steps[0], 1);
    assert_int_equal(r->rollout.steps[4], 100);
    assert_int_equal(r->rollout.interval_ms, 120000);
    assert_int_equal(r->rollout.min_requests, 50);
    assert_true(r->rollout.max_error_rate > 0.0199 && r->rollout.max_error_rate < 0.0201);
    assert_true(r->rollout.max_latency_ratio > 1.49 && r->rollout.max_latency_ratio < 1.51);
    assert_true(r->rollout.has_max_mismatch_rate);
    assert_true(r->rollout.max_mismatch_rate > 0.00499 && r->rollout.max_mismatch_rate < 0.00501);
    assert_int_equal(r->rollout.on_failure, CONFIG_ON_FAILURE_PAUSE);
    assert_int_equal(r->rollout.state, CONFIG_ROLLOUT_REDIS);

    /* Defaults: a weight-0 backend may be shadowed. */
    r = &c->routes[1];
    assert_true(r->has_shadow);
    assert_int_equal(r->shadow.target_group, config_find_target_group(c, "h"));
    assert_int_equal(r->shadow.percent, 100);
    assert_null(r->shadow.path);
    assert_int_equal(r->shadow.methods, METHOD_GET | METHOD_HEAD | METHOD_OPTIONS);
    assert_int_equal(r->shadow.max_in_flight, 100);
    assert_false(r->shadow.has_compare);
    assert_int_equal(r->shadow.compare.max_body_size, 1024 * 1024);
    assert_true(r->has_rollout);
    assert_int_equal(r->rollout.n_steps, 1);
    assert_int_equal(r->rollout.interval_ms, 60000);
    assert_int_equal(r->rollout.min_requests, 100);
    assert_true(r->rollout.max_error_rate > 0.0099 && r->rollout.max_error_rate < 0.0101);
    assert_true(r->rollout.max_latency_ratio == 0);
    assert_false(r->rollout.has_max_mismatch_rate);
    assert_int_equal(r->rollout.on_failure, CONFIG_ON_FAILURE_ROLLBACK);
    assert_int_equal(r->rollout.state, CONFIG_ROLLOUT_LOCAL);
    assert_false(c->routes[2].has_shadow);
    assert_false(c->routes[2].has_rollout);

    /* /config shows both blocks, defaults included, and leaves them out
     * of a route without them. */
    json_t *j = config_json(c);
    assert_non_null(j);
    char *routes = json_dumps(json_object_get(j, "routes"), JSON_COMPACT);
    assert_non_null(routes);
    assert_non_null(strstr(routes, "\"shadow\":{\"target_group\":\"v2\",\"percent\":10,\"path\":"
                                   "\"/v2/orders/$1\",\"methods\":[\"GET\",\"POST\"],"
                                   "\"max_in_flight\":50,\"compare\":{\"ignore\":[\"/meta/"
                                   "generated_at\",\"/items/*/etag\",\"\",\"/a~1b~0\"],"
                                   "\"unordered\":[\"/items\"],\"headers\":[\"content-type\","
                                   "\"x-b\"],\"noise\":{\"percent\":5},\"max_body_size\":"
                                   "\"2MiB\"}}"));
    assert_non_null(strstr(routes, "\"rollout\":{\"canary\":\"h\",\"steps\":[1,5,25,50,100],"
                                   "\"interval\":\"2m\",\"min_requests\":50,\"max_error_rate\":"
                                   "\"2%\",\"max_latency_ratio\":1.5,\"max_mismatch_rate\":"
                                   "\"0.5%\",\"on_failure\":\"pause\",\"state\":\"redis\"}"));
    assert_non_null(strstr(routes, "\"shadow\":{\"target_group\":\"h\",\"percent\":100,"
                                   "\"methods\":[\"GET\",\"HEAD\",\"OPTIONS\"],\"max_in_flight\":"
                                   "100}"));
    assert_non_null(strstr(routes, "\"rollout\":{\"canary\":\"h\",\"steps\":[100],\"interval\":"
                                   "\"1m\",\"min_requests\":100,\"max_error_rate\":\"1%\","
                                   "\"max_latency_ratio\":null,\"max_mismatch_rate\":null,"
                                   "\"on_failure\":\"rollback\",\"state\":\"local\"}"));
    assert_null(strstr(strstr(routes, "\"name\":\"none\""), "shadow"));
    free(routes);
    json_decref(j);
    config_unref(c);
}

/* Each mistake in shadow and rollout, located and named. */
static void test_shadow_rollout_errors(void **state)
{
    (void)state;
    expect_errors(
        MIGRATION_GROUPS
        "routes:\n"
        "  - name: a\n"
        "    match: {path_prefix: /a}\n"
        "    backends: [{target_group: g}]\n"
        "    shadow: {target_group: g, percent: 101, path: \"v2/$1\", methods: [get, "
        "CONNECT], max_in_flight: 0}\n"
        "    rollout: {canary: g, steps: [], max_error_rate: \"1\", max_latency_ratio: 1, "
        "on_failure: stop, state: redis}\n"
        "  - name: b\n"
        "    match: {path_prefix: /b}\n"
        "    backends: [{target_group: g}, {target_group: h, weight: 0}]\n"
        "    shadow:\n"
        "      target_group: nope\n"
        "      path: /x/$1\n"
        "      compare: {ignore: [a, \"/x~2\", /y, /y], headers: [\"bad h\", X, x], "
        "noise: {}}\n"
        "    rollout: {canary: v2, steps: [5, 5, 0, 101, x]}\n"
        "  - name: c\n"
        "    match: {path_regex: \"/c/(.*)\"}\n"
        "    backends: [{target_group: g}, {target_group: h, weight: 0}]\n"
        "    shadow: {percent: 5, path: /c/$2, methods: []}\n"
        "    rollout: {steps: [50], max_mismatch_rate: 1%, max_error_rate: 101%, "
        "max_latency_ratio: 1.5x}\n",
        "t.yaml:9:28: routes[0].shadow.target_group: \"g\" already serves the route (backends[0] "
        "has weight 1); shadow a group that does not, or use compare.noise",
        "t.yaml:9:40: routes[0].shadow.percent: \"101\" is out of range (0 to 100)",
        "t.yaml:9:51: routes[0].shadow.path: must start with '/', got \"v2/$1\"",
        "t.yaml:9:70: routes[0].shadow.methods[0]: unknown method \"get\" (GET, HEAD, POST, PUT, "
        "DELETE, PATCH, OPTIONS, TRACE or CONNECT; upper case)",
        "t.yaml:9:75: routes[0].shadow.methods[1]: CONNECT opens a tunnel and cannot be copied",
        "t.yaml:9:100: routes[0].shadow.max_in_flight: \"0\" is out of range (1 to 100000)",
        "t.yaml:10:23: routes[0].rollout.canary: \"g\" is the route's only backend: a rollout "
        "moves traffic between two",
        "t.yaml:10:33: routes[0].rollout.steps: needs 1 to 16 steps, got 0",
        "t.yaml:10:53: routes[0].rollout.max_error_rate: expected a percentage such as \"1%\" or "
        "\"0.5%\", got \"1\"",
        "t.yaml:10:77: routes[0].rollout.max_latency_ratio: expected a number above 1 and at most "
        "1000 (canary p99 / primary p99), got \"1\"",
        "t.yaml:10:92: routes[0].rollout.on_failure: expected rollback or pause, got \"stop\"",
        "t.yaml:10:105: routes[0].rollout.state: a shared rollout state lives in redis: set "
        "redis.address",
        "t.yaml:15:21: routes[1].shadow.target_group: unknown target group \"nope\"",
        "t.yaml:16:13: routes[1].shadow.path: $1 needs match.path_regex (without it only $0, the "
        "matched path, exists)",
        "t.yaml:17:26: routes[1].shadow.compare.ignore[0]: \"a\" is not a JSON pointer (empty or "
        "starting with '/')",
        "t.yaml:17:29: routes[1].shadow.compare.ignore[1]: \"/x~2\": '~' must be written ~0 ('~') "
        "or ~1 ('/') in a JSON pointer",
        "t.yaml:17:41: routes[1].shadow.compare.ignore[3]: \"/y\" is listed twice",
        "t.yaml:17:56: routes[1].shadow.compare.headers[0]: invalid header name \"bad h\"",
        "t.yaml:17:68: routes[1].shadow.compare.headers[2]: \"x\" is listed twice",
        "t.yaml:17:79: routes[1].shadow.compare.noise.percent: required key is missing",
        "t.yaml:18:23: routes[1].rollout.canary: \"v2\" is not one of the route's backends (add it "
        "with weight: 0)",
        "t.yaml:18:38: routes[1].rollout.steps[1]: 5 after 5: steps must ascend",
        "t.yaml:18:41: routes[1].rollout.steps[2]: expected a canary percent from 1 to 100 (out of "
        "range)",
        "t.yaml:18:44: routes[1].rollout.steps[3]: expected a canary percent from 1 to 100 (out of "
        "range)",
        "t.yaml:18:49: routes[1].rollout.steps[4]: expected a canary percent from 1 to 100 (not a "
        "whole number)",
        "t.yaml:22:13: routes[2].shadow.target_group: required key is missing",
        "t.yaml:22:32: routes[2].shadow.path: $2, but match.path_regex has 1 capture group",
        "t.yaml:22:48: routes[2].shadow.methods: must not be empty (omit the shadow block to copy "
        "nothing)",
        "t.yaml:23:14: routes[2].rollout.canary: required key is missing",
        "t.yaml:23:47: routes[2].rollout.max_mismatch_rate: mismatches come from shadow.compare: "
        "add a shadow block with compare to the route",
        "t.yaml:23:67: routes[2].rollout.max_error_rate: expected a percentage from 0% to 100%, "
        "got \"101%\"",
        "t.yaml:23:92: routes[2].rollout.max_latency_ratio: expected a number above 1 and at most "
        "1000 (canary p99 / primary p99), got \"1.5x\"");
}

/* Bounds of shadow and rollout values, and forms they accept. */
static void test_shadow_rollout_bounds(void **state)
{
    (void)state;
    config_t *c = load_ok(MIGRATION_GROUPS
                          "routes:\n"
                          "  - name: r\n"
                          "    match: {path_prefix: /r}\n"
                          "    backends: [{target_group: g}, {target_group: h, weight: 0}]\n"
                          "    shadow: {target_group: v2, path: \"/a$$b?v=2&p=$0\", percent: 0}\n"
                          "    rollout: {canary: h, steps: [100], max_error_rate: \".25%\", "
                          "max_latency_ratio: 1000, interval: 1s, min_requests: 0}\n");
    assert_string_equal(c->routes[0].shadow.path, "/a$$b?v=2&p=$0");
    assert_int_equal(c->routes[0].shadow.percent, 0);
    assert_true(c->routes[0].rollout.max_error_rate > 0.00249 &&
                c->routes[0].rollout.max_error_rate < 0.00251);
    assert_true(c->routes[0].rollout.max_latency_ratio == 1000.0);
    assert_int_equal(c->routes[0].rollout.interval_ms, 1000);
    assert_int_equal(c->routes[0].rollout.min_requests, 0);
    config_unref(c);
    expect_errors(
        MIGRATION_GROUPS
        "routes:\n"
        "  - name: r\n"
        "    match: {path_prefix: /r}\n"
        "    backends: [{target_group: g}, {target_group: h, weight: 0}]\n"
        "    shadow: {target_group: v2, path: \"/a b\", compare: {max_body_size: 65MiB}}\n"
        "    rollout: {canary: h, steps: [100], interval: 999ms, max_error_rate: "
        "\"-1%\", max_latency_ratio: 1000.5, max_mismatch_rate: "
        "\"11111111111111111111111111111111111%\"}\n",
        "t.yaml:9:38: routes[0].shadow.path: \"/a b\" contains a space or a control character",
        "t.yaml:9:71: routes[0].shadow.compare.max_body_size: \"65MiB\" is too large (the maximum "
        "is 64MiB)",
        "t.yaml:10:50: routes[0].rollout.interval: \"999ms\" is too short (the minimum is 1s)",
        "t.yaml:10:73: routes[0].rollout.max_error_rate: expected a percentage from 0% to 100%, "
        "got \"-1%\"",
        "t.yaml:10:99: routes[0].rollout.max_latency_ratio: expected a number above 1 and at most "
        "1000 (canary p99 / primary p99), got \"1000.5\"",
        "t.yaml:10:126: routes[0].rollout.max_mismatch_rate: expected a percentage such as \"1%\" "
        "or \"0.5%\", got \"11111111111111111111111111111111111%\"");
}

/* Lists a migration block keeps are bounded: compared headers
 * (SHADOW_MAX_COMPARE_HEADERS) and rollout steps. */
static void test_migration_list_bounds(void **state)
{
    (void)state;
    expect_errors(MIGRATION_GROUPS "routes:\n"
                                   "  - name: r\n"
                                   "    match: {path_prefix: /r}\n"
                                   "    backends: [{target_group: g}]\n"
                                   "    shadow:\n"
                                   "      target_group: v2\n"
                                   "      compare: {headers: [a, b, c, d, e, f, g, h, i, j, k, l, "
                                   "m, n, o, p, q]}\n",
                  "t.yaml:11:26: routes[0].shadow.compare.headers: at most 16 headers are "
                  "compared, got 17");
    /* As many rollout steps as policy/rollout keeps (CONFIG_ROLLOUT_MAX_STEPS). */
    expect_errors(MIGRATION_GROUPS
                  "routes:\n"
                  "  - name: r\n"
                  "    match: {path_prefix: /r}\n"
                  "    backends: [{target_group: g}, {target_group: h, weight: 0}]\n"
                  "    rollout: {canary: h, steps: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "
                  "11, 12, 13, 14, 15, 16, 17]}\n",
                  "t.yaml:9:33: routes[0].rollout.steps: needs 1 to 16 steps, got 17");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_migration_list_bounds),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_sub_block_defaults),
        cmocka_unit_test(test_null_and_empty_values),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_targets_numeric_and_named),
        cmocka_unit_test(test_match_host_headers_methods),
        cmocka_unit_test(test_sticky_forms),
        cmocka_unit_test(test_method_bits),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_ref_unref),
        cmocka_unit_test(test_regex_is_anchored),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_errors_add_format),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_bad_value_points_at_value),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_missing_required_points_at_mapping),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_server_values),
        cmocka_unit_test(test_listeners),
        cmocka_unit_test(test_target_group_values),
        cmocka_unit_test(test_sets),
        cmocka_unit_test(test_tracing_values),
        cmocka_unit_test(test_all_errors_in_file_order),
        cmocka_unit_test(test_aggregate_errors),
        cmocka_unit_test(test_edge_security_errors),
        cmocka_unit_test(test_edge_security_values),
        cmocka_unit_test(test_certificate_cn),
        cmocka_unit_test(test_dangling_references),
        cmocka_unit_test(test_in_set),
        cmocka_unit_test(test_regex_errors),
        cmocka_unit_test(test_path_templates),
        cmocka_unit_test(test_route_values),
        cmocka_unit_test(test_too_many_backends),
        cmocka_unit_test(test_alias_expansion_is_bounded),
        cmocka_unit_test(test_nul_byte_in_value),
        cmocka_unit_test(test_restart_only_change),
        cmocka_unit_test(test_shadow_rollout_values),
        cmocka_unit_test(test_shadow_rollout_errors),
        cmocka_unit_test(test_shadow_rollout_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
