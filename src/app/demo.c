/* The embedded demo; see demo.h. The mocks run on their own thread and loop
 * so the gateway's workers proxy to them over real sockets. */
#include "app/demo.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/gateway.h"
#include "core/log.h"
#include "tools/mock.h"

/* The mocks: the monolith (which also serves orders, as JSON), the search
 * service and its flaky canary, and orders-v2, the new orders service that
 * answers like the monolith in another key order and number format. */
#define DEMO_MOCKS 4
static const char *const mock_names[DEMO_MOCKS] = {"monolith", "search-v1", "search-v2",
                                                   "orders-v2"};
#define MONOLITH_ORDER                                                                             \
    "{\"service\": \"monolith\", \"order\": {\"id\": 1001, \"total\": 1200, \"currency\": "        \
    "\"JPY\"}}\n"
static const char *const mock_bodies[DEMO_MOCKS] = {
    MONOLITH_ORDER, "hello from search-v1\n", "hello from search-v2\n",
    "{\"order\":{\"currency\":\"JPY\",\"total\":1200.0,\"id\":1001},\"service\":\"orders-v2\"}\n"};

typedef struct demo_mocks {
    uv_loop_t loop;
    uv_async_t stop;
    mock_server_t *servers[DEMO_MOCKS];
    unsigned ports[DEMO_MOCKS];
    uv_thread_t thread;
} demo_mocks_t;

/* A free loopback port: bind :0, read it back, release it. */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    unsigned port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void on_stop(uv_async_t *a)
{
    demo_mocks_t *d = a->data;
    for (int i = 0; i < DEMO_MOCKS; i++)
        mock_server_stop(d->servers[i]);
    uv_close((uv_handle_t *)&d->stop, NULL);
}

static void mocks_main(void *arg)
{
    demo_mocks_t *d = arg;
    uv_run(&d->loop, UV_RUN_DEFAULT);
}

static const char demo_yaml[] =
    "server:\n"
    "  listen: [\"127.0.0.1:8080\"]\n"
    "  workers: 1\n"
    "admin:\n"
    "  listen: \"127.0.0.1:9901\"\n"
    "access_log:\n"
    "  path: stdout\n"
    "target_groups:\n"
    "  monolith: {targets: [\"127.0.0.1:%u\"]}\n"
    "  search-v1: {targets: [\"127.0.0.1:%u\"]}\n"
    "  search-v2: {targets: [\"127.0.0.1:%u\"]}\n"
    "  orders-v2: {targets: [\"127.0.0.1:%u\"]}\n"
    "clients:\n"
    "  - id: partner\n" /* its key is demo-partner-key */
    "    api_keys_sha256: "
    "[\"5f7b2ed74a9736a538a6fb5a5a1a76afdcdd0d177d7fc6e79c6b6843527d848d\"]\n"
    "routes:\n"
    "  - name: partner\n"
    "    match: {path_prefix: /partner}\n"
    "    backends: [{target_group: monolith, weight: 100}]\n"
    "    auth: {client: required}\n"
    "    rate_limit: {requests_per_second: 5, burst: 5, by: client}\n"
    "  - name: search\n"
    "    match: {path_prefix: /search}\n"
    "    backends:\n"
    "      - {target_group: search-v1, weight: 90}\n"
    "      - {target_group: search-v2, weight: 10, fallback: search-v1}\n"
    "    timeout: 5s\n"
    "  - name: orders\n" /* migrating off the monolith: shadowed, then rolled out */
    "    match: {path_prefix: /orders}\n"
    "    backends:\n"
    "      - {target_group: monolith, weight: 100}\n"
    "      - {target_group: orders-v2, weight: 0, fallback: monolith}\n"
    "    timeout: 5s\n"
    "    shadow: {target_group: orders-v2, percent: 100, compare: {ignore: [/service]}}\n"
    "    rollout: {canary: orders-v2, steps: [10, 50, 100], interval: 20s, min_requests: 10,\n"
    "              max_error_rate: 1%%, max_mismatch_rate: 1%%}\n"
    "  - name: home\n" /* a BFF: three calls, one JSON answer */
    "    match: {path: /home}\n"
    "    aggregate:\n"
    "      timeout: 1s\n"
    "      calls:\n"
    "        - {name: order, target_group: monolith, path: /orders/1001, extract: /order}\n"
    "        - {name: orders_v2, target_group: orders-v2, path: /orders/1001, cache_ttl: 10s}\n"
    "        - {name: search, target_group: search-v1, path: /search, required: false}\n"
    "  - name: default\n"
    "    match: {path_prefix: /}\n"
    "    backends: [{target_group: monolith, weight: 100}]\n";

int demo_main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: ficus demo\n\nRuns the gateway on 127.0.0.1:8080 (admin 127.0.0.1:9901) "
               "in front of\nin-process mock backends. Ctrl-C stops it.\n");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "ficus demo: unexpected argument '%s'\nusage: ficus demo\n", argv[1]);
        return 2;
    }
    static demo_mocks_t d;
    uv_loop_init(&d.loop);
    uv_async_init(&d.loop, &d.stop, on_stop);
    d.stop.data = &d;
    for (int i = 0; i < DEMO_MOCKS; i++) {
        char addr[32], err[256];
        d.ports[i] = free_port();
        snprintf(addr, sizeof addr, "127.0.0.1:%u", d.ports[i]);
        bool json = mock_bodies[i][0] == '{';
        mock_options_t o = {
            .listen = addr,
            .status = 200,
            .body = mock_bodies[i],
            .body_len = strlen(mock_bodies[i]),
            .content_type = json ? "application/json" : NULL,
            .fail_rate = i == 2 ? 0.2 : 0.0,
            .fail_status = 503,
            .name = mock_names[i],
            .workers = 1,
        };
        d.servers[i] = mock_server_start(&d.loop, &o, err, sizeof err);
        if (!d.servers[i]) {
            fprintf(stderr, "ficus demo: mock %s: %s\n", mock_names[i], err);
            return 1;
        }
    }
    uv_thread_create(&d.thread, mocks_main, &d);

    char yaml[sizeof demo_yaml + 64];
    int n = snprintf(yaml, sizeof yaml, demo_yaml, d.ports[0], d.ports[1], d.ports[2], d.ports[3]);
    config_errors_t errs;
    config_errors_init(&errs);
    config_t *cfg = config_load_string(yaml, (size_t)n, "<demo>", &errs);
    if (!cfg) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "%s\n", errs.items[i]);
        config_errors_deinit(&errs);
        return 1;
    }
    config_errors_deinit(&errs);
    fprintf(stderr,
            "\nficus demo: gateway http://127.0.0.1:8080  admin http://127.0.0.1:9901\n"
            "  curl -i 'http://127.0.0.1:8080/search?q=shoes'   # 90%% search-v1, 10%% search-v2 "
            "(flaky canary)\n"
            "  curl -i http://127.0.0.1:8080/                   # the monolith\n"
            "  for i in $(seq 20); do curl -s http://127.0.0.1:8080/search; done | sort | uniq -c"
            "   # failed canary requests are answered by search-v1\n"
            "  curl -s http://127.0.0.1:9901/metrics | grep -E 'fallbacks_total|code=\"503\"'"
            "   # canary failures fell back\n"
            "  curl -s -X PUT -d '{\"search-v1\":50,\"search-v2\":50}' "
            "http://127.0.0.1:9901/routes/search/weights\n"
            "  curl -s http://127.0.0.1:8080/orders/1001          # the monolith; orders-v2 "
            "gets a shadow copy\n"
            "  curl -s http://127.0.0.1:9901/routes/orders/shadow  # do they answer alike?\n"
            "  curl -s http://127.0.0.1:9901/routes/orders/rollout # steps on its own evidence\n"
            "  curl -i http://127.0.0.1:8080/home                  # three calls, one JSON answer\n"
            "Ctrl-C stops it.\n\n");
    int code = gateway_run(cfg);
    uv_async_send(&d.stop);
    uv_thread_join(&d.thread);
    uv_loop_close(&d.loop);
    return code;
}
