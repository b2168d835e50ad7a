/* The embedded mock (tools/mock.h) on a loop shared with its clients, as the
 * demo runs it: answers in order with its own name, stops with connections
 * still open, fails cleanly, and leaves the loop with no handle behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "tools/mock.h"

/* A port nobody listens on right now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

typedef struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    const char *request;
    char got[8192];
    size_t got_len;
    size_t want_responses; /* stop the mock(s) after this many */
    int eof;
    mock_server_t **servers;
    size_t n_servers;
} client_t;

static size_t count_responses(const client_t *c)
{
    size_t n = 0;
    const char *p = c->got, *end = c->got + c->got_len;
    while ((p = memmem(p, (size_t)(end - p), "HTTP/1.1 ", 9)) != NULL) {
        n++;
        p += 9;
    }
    return n;
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    client_t *c = h->data;
    *buf = uv_buf_init(c->got + c->got_len, (unsigned)(sizeof c->got - c->got_len - 1));
}

static void stop_servers(client_t *c)
{
    for (size_t i = 0; i < c->n_servers; i++)
        mock_server_stop(c->servers[i]);
    c->n_servers = 0;
}

static void client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    client_t *c = s->data;
    if (nread < 0) {
        c->eof = 1;
        uv_close((uv_handle_t *)&c->tcp, NULL);
        return;
    }
    c->got_len += (size_t)nread;
    c->got[c->got_len] = '\0';
    if (c->want_responses && count_responses(c) >= c->want_responses &&
        (!strstr(c->got, "application/json") || strstr(c->got, "\"by_method\"")))
        stop_servers(c); /* the mock's close of this connection ends the read */
}

static void client_written(uv_write_t *w, int status)
{
    (void)w;
    assert_int_equal(status, 0);
}

static void client_connected(uv_connect_t *req, int status)
{
    client_t *c = req->data;
    assert_int_equal(status, 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read), 0);
    if (c->request) {
        uv_buf_t b = uv_buf_init((char *)c->request, (unsigned)strlen(c->request));
        assert_int_equal(uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, client_written), 0);
    } else {
        stop_servers(c); /* an idle connection must not keep the loop alive */
    }
}

static void client_start(uv_loop_t *loop, client_t *c, int port)
{
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    assert_int_equal(uv_tcp_init(loop, &c->tcp), 0);
    c->tcp.data = c;
    c->connect.data = c;
    assert_int_equal(uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&sa, client_connected),
                     0);
}

static void assert_loop_empty(uv_loop_t *loop)
{
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_pipelined_answers_then_stop(void **state)
{
    (void)state;
    uv_loop_t loop;
    char err[128] = "";
    char addr[32];
    int port = free_port();
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(uv_loop_init(&loop), 0);
    mock_options_t o = {.listen = addr, .status = 202, .body = "hi", .body_len = 2, .name = "unit"};
    mock_server_t *m = mock_server_start(&loop, &o, err, sizeof err);
    assert_non_null(m);
    client_t c = {.request = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                             "HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET /__mock/stats HTTP/1.1\r\nHost: x\r\n\r\n",
                  .want_responses = 3,
                  .servers = &m,
                  .n_servers = 1};
    client_start(&loop, &c, port);
    assert_loop_empty(&loop);
    assert_true(c.eof);
    /* In order: GET (with body), HEAD (none), then stats counting both. */
    const char *first = strstr(c.got, "HTTP/1.1 202 ");
    assert_ptr_equal(first, c.got);
    assert_non_null(strstr(c.got, "X-Mock-Name: unit\r\n"));
    const char *body1 = strstr(c.got, "\r\n\r\nhi");
    const char *second = strstr(first + 1, "HTTP/1.1 202 ");
    const char *third = strstr(c.got, "HTTP/1.1 200 ");
    assert_non_null(body1);
    assert_non_null(second);
    assert_non_null(third);
    assert_true(body1 < second && second < third);
    assert_memory_equal(strstr(second, "\r\n\r\n"), "\r\n\r\nHTTP/1.1 200 ", 17);
    /* by_path order is the mock's hash order: check the entries one by one. */
    assert_non_null(strstr(third, "{\"total\":2,\"by_path\":{"));
    assert_non_null(strstr(third, "\"/a\":1"));
    assert_non_null(strstr(third, "\"/b\":1"));
    assert_non_null(strstr(third, "\"by_method\":{\"GET\":1,\"HEAD\":1}}"));
}

static void test_stop_with_idle_connection(void **state)
{
    (void)state;
    uv_loop_t loop;
    char err[128] = "";
    char addr[32];
    int port = free_port();
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(uv_loop_init(&loop), 0);
    mock_options_t o = {.listen = addr, .latency_ms = 60000};
    mock_server_t *m = mock_server_start(&loop, &o, err, sizeof err);
    assert_non_null(m);
    client_t c = {.request = NULL, .servers = &m, .n_servers = 1};
    client_start(&loop, &c, port);
    assert_loop_empty(&loop);
    assert_true(c.eof);
}

static void test_stop_with_a_delayed_answer_pending(void **state)
{
    (void)state;
    uv_loop_t loop;
    char err[128] = "";
    char addr[32];
    int port = free_port();
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(uv_loop_init(&loop), 0);
    /* The answer waits a minute; the stats answer (not delayed) triggers the
     * stop, which must cancel the latency timer too. */
    mock_options_t o = {.listen = addr, .latency_ms = 60000};
    mock_server_t *m = mock_server_start(&loop, &o, err, sizeof err);
    assert_non_null(m);
    client_t c1 = {.request = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"};
    client_t c2 = {.request = "GET /__mock/stats HTTP/1.1\r\nHost: x\r\n\r\n",
                   .want_responses = 1,
                   .servers = &m,
                   .n_servers = 1};
    client_start(&loop, &c1, port);
    client_start(&loop, &c2, port);
    assert_loop_empty(&loop);
    assert_int_equal(c1.got_len, 0);
    assert_true(c1.eof && c2.eof);
}

static void test_three_mocks_on_one_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    char err[128] = "";
    char addrs[3][32];
    int ports[3];
    mock_server_t *ms[3];
    static const char *names[3] = {"monolith", "search-v1", "search-v2"};
    assert_int_equal(uv_loop_init(&loop), 0);
    for (int i = 0; i < 3; i++) {
        ports[i] = free_port();
        snprintf(addrs[i], sizeof addrs[i], "127.0.0.1:%d", ports[i]);
        mock_options_t o = {.listen = addrs[i], .name = names[i]};
        ms[i] = mock_server_start(&loop, &o, err, sizeof err);
        assert_non_null(ms[i]);
    }
    client_t c[3];
    memset(c, 0, sizeof c);
    for (int i = 0; i < 3; i++) {
        c[i].request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        c[i].want_responses = 1;
        c[i].servers = &ms[i];
        c[i].n_servers = 1;
        client_start(&loop, &c[i], ports[i]);
    }
    assert_loop_empty(&loop);
    for (int i = 0; i < 3; i++) {
        char want[64];
        snprintf(want, sizeof want, "X-Mock-Name: %s\r\n", names[i]);
        assert_non_null(strstr(c[i].got, want));
        assert_non_null(strstr(c[i].got, "\r\n\r\nok\n"));
    }
}

static void test_start_failures(void **state)
{
    (void)state;
    uv_loop_t loop;
    char err[128] = "";
    assert_int_equal(uv_loop_init(&loop), 0);
    mock_options_t bad = {.listen = "127.0.0.1"};
    assert_null(mock_server_start(&loop, &bad, err, sizeof err));
    assert_non_null(strstr(err, "invalid listen address"));

    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port());
    mock_options_t o = {.listen = addr};
    mock_server_t *m = mock_server_start(&loop, &o, err, sizeof err);
    assert_non_null(m);
    err[0] = '\0';
    assert_null(mock_server_start(&loop, &o, err, sizeof err)); /* port taken */
    assert_non_null(strstr(err, "cannot listen"));
    mock_server_stop(m);
    mock_server_stop(NULL);
    assert_loop_empty(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_answers_then_stop),
        cmocka_unit_test(test_stop_with_idle_connection),
        cmocka_unit_test(test_stop_with_a_delayed_answer_pending),
        cmocka_unit_test(test_three_mocks_on_one_loop),
        cmocka_unit_test(test_start_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
