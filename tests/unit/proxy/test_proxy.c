/* The request path (proxy.c) through its entry points, on a real loop: a
 * worker set up as the gateway sets one up, backends on 127.0.0.1, clients
 * over TCP. The rewritten head the backend receives and the answer the
 * client gets; keep-alive and the pooled upstream connection; pipelining;
 * bodies (Content-Length, chunked re-framed); retries on a 5xx and on a
 * connect failure; the canary's fallback; ficus's own 503s (no healthy
 * target, circuit open), 403 and 413 from admission, 504 on a per-try and a
 * route timeout; a client leaving mid-request and mid-response. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy_test.h"

/* Group g on be[0] unless `g` says otherwise, h on be[1], dead on the
 * dead port; route r matches everything, with `route` (its backends and
 * options; "" = all to g). Ports are %1$u, %2$u, %3$u. */
static pt_fixture_t *setup(const char *server, const char *g, const char *route)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "server: {listen: [\"127.0.0.1:8080\"], workers: 1%s}\n"
             "target_groups:\n"
             "  g: %s\n"
             "  h: {targets: [\"127.0.0.1:%%2$u\"]}\n"
             "  dead: {targets: [\"127.0.0.1:%%3$u\"]}\n"
             "routes:\n"
             "  - name: r\n"
             "    match: {path_prefix: /}\n"
             "%s",
             server, g ? g : "{targets: [\"127.0.0.1:%1$u\"]}",
             *route ? route : "    backends: [{target_group: g}]\n");
    return pt_setup(yaml);
}

static pt_fixture_t *setup_basic(void) { return setup("", NULL, ""); }

static char buf[32768];
static const char *const ok_line = "HTTP/1.1 200 OK\r\n";

/* The value of header `name` (as written, "Name: ") in s, up to its CRLF. */
static const char *header_value(const char *s, const char *name, char *out, size_t cap)
{
    const char *p = strstr(s, name);
    if (!p)
        return NULL;
    p += strlen(name);
    size_t n = strcspn(p, "\r");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

static void test_get_rewritten_and_kept_alive(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = pt_client(f);
    pt_ask(f, c,
           "GET /a?x=1 HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, x-hop\r\n"
           "X-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 10.1.1.1\r\n"
           "X-Request-Id: abc-1.2:3\r\nX-Test: kept\r\n\r\n",
           buf, sizeof buf, "one /a?x=1");
    assert_int_equal(f->be[0].accepted, 1);
    /* The head as rewritten, to the byte: hop-by-hop headers (and those
     * Connection names) gone, the peer appended to X-Forwarded-For, the
     * forwarded proto and host added, a sane incoming request id kept, and
     * the time the try has left last (the route's default 15s, less what
     * passed, right-aligned in ten characters). */
    const char *got = f->be[0].conns[0]->got;
    const char *dl = strstr(got, "X-Request-Timeout-Ms:");
    assert_non_null(dl);
    assert_int_equal(strcspn(dl, "\r"), strlen("X-Request-Timeout-Ms:") + 10);
    long left = strtol(dl + strlen("X-Request-Timeout-Ms:"), NULL, 10);
    assert_in_range(left, 10000, 15000);
    assert_string_equal(dl + strcspn(dl, "\r"), "\r\n\r\n");
    assert_memory_equal(got,
                        "GET /a?x=1 HTTP/1.1\r\n"
                        "Host: shop\r\n"
                        "X-Test: kept\r\n"
                        "X-Forwarded-For: 10.1.1.1, 127.0.0.1\r\n"
                        "X-Forwarded-Proto: http\r\n"
                        "X-Forwarded-Host: shop\r\n"
                        "X-Request-Id: abc-1.2:3\r\n",
                        (size_t)(dl - got));
    /* The client gets the backend's answer with the request id (and no
     * Connection: close). */
    assert_string_equal(buf, "HTTP/1.1 200 OK\r\n"
                             "Content-Length: 10\r\n"
                             "X-Backend: one\r\n"
                             "X-Request-Id: abc-1.2:3\r\n"
                             "\r\n"
                             "one /a?x=1");

    /* Kept alive: a second request on the same connection, over the pooled
     * upstream connection. */
    pt_ask(f, c, "GET /b HTTP/1.1\r\nHost: shop\r\n\r\n", buf, sizeof buf, "one /b");
    assert_int_equal(f->be[0].accepted, 1);
    assert_int_equal(f->be[0].conns[0]->requests, 2);
    char id2[64];
    assert_non_null(header_value(buf, "\r\nX-Request-Id: ", id2, sizeof id2));
    assert_int_equal(strlen(id2), 32); /* none came: a fresh one */
    assert_int_equal(strspn(id2, "0123456789abcdef"), 32);
    assert_non_null(strstr(f->be[0].conns[0]->got, id2));
    close(c);
    pt_teardown(f);
}

static void test_pipelined_in_order(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = pt_client(f);
    pt_send(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
               "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    pt_answer_ending(f, c, buf, sizeof buf, "one /3");
    const char *a = strstr(buf, "one /1"), *b = strstr(buf, "one /2"), *d = strstr(buf, "one /3");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(d);
    assert_true(a < b && b < d);
    assert_int_equal(f->be[0].requests, 3);
    assert_int_equal(f->be[0].accepted, 1);
    close(c);
    pt_teardown(f);
}

static void test_bodies(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = pt_client(f);
    pt_ask(f, c, "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", buf, sizeof buf,
           "one /p");
    const char *got = f->be[0].conns[0]->got;
    assert_non_null(strstr(got, "POST /p HTTP/1.1\r\n"));
    assert_non_null(strcasestr(got, "\r\ncontent-length: 5\r\n"));
    assert_non_null(strstr(got, "\r\n\r\nhello"));
    assert_int_equal(f->be[0].conns[0]->requests, 1);

    /* Chunked: ficus re-frames the chunks (one per read), the backend sees
     * the same bytes of body and the last chunk. */
    size_t before = f->be[0].conns[0]->len;
    pt_ask(f, c,
           "POST /q HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
           "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n",
           buf, sizeof buf, "one /q");
    got = f->be[0].conns[0]->got + before;
    assert_non_null(strstr(got, "POST /q HTTP/1.1\r\n"));
    assert_non_null(strcasestr(got, "\r\ntransfer-encoding: chunked\r\n"));
    const char *body = strstr(got, "\r\n\r\n") + 4;
    /* Decode what the backend got: the chunk data must be "abcdefg". */
    char data[64] = "";
    size_t dl = 0;
    const char *p = body;
    for (;;) {
        unsigned long n = strtoul(p, NULL, 16);
        p = strstr(p, "\r\n");
        assert_non_null(p);
        p += 2;
        if (n == 0)
            break;
        assert_true(dl + n < sizeof data);
        memcpy(data + dl, p, n);
        dl += n;
        p += n;
        assert_memory_equal(p, "\r\n", 2);
        p += 2;
    }
    data[dl] = '\0';
    assert_string_equal(data, "abcdefg");
    assert_null(strstr(body, "ext=1")); /* re-framed, not copied */
    assert_int_equal(f->be[0].conns[0]->requests, 2);
    close(c);
    pt_teardown(f);
}

/* ficus's own answer: its status line and JSON error code. */
static void own_error(const char *answer, const char *status_line, const char *code)
{
    char want[64];
    assert_memory_equal(answer, status_line, strlen(status_line));
    snprintf(want, sizeof want, "\"error\":\"%s\"", code);
    assert_non_null(strstr(answer, want));
    assert_non_null(strstr(answer, "\r\nX-Request-Id: "));
}

/* Sends a GET of path on a new client and reads ficus's own answer. */
static void ask_own(pt_fixture_t *f, const char *path)
{
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path);
    int c = pt_client(f);
    pt_ask(f, c, req, buf, sizeof buf, "}");
    close(c);
}

/* Two targets on g (be[0] then be[1]), retries on 5xx. */
#define TWO_TARGETS "{targets: [\"127.0.0.1:%1$u\", \"127.0.0.1:%2$u\"]}"
#define RETRY_5XX                                                                                  \
    "    backends: [{target_group: g}]\n"                                                          \
    "    retries: {attempts: 1, retry_on: [5xx], backoff: 1ms}\n"

static void test_retry_on_5xx(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", TWO_TARGETS, RETRY_5XX);
    f->be[0].mode = PT_503;
    int c = pt_client(f);
    /* Target one always answers 503: a request sent there is retried on
     * two. Round robin sends one of two requests to one first. */
    pt_ask(f, c, "GET /r HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "two /r");
    assert_memory_equal(buf, ok_line, 17);
    pt_ask(f, c, "GET /s HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "two /s");
    assert_memory_equal(buf, ok_line, 17);
    assert_int_equal(f->be[1].requests, 2);
    assert_true(f->be[0].requests >= 1);
    close(c);
    pt_teardown(f);
}

static void test_retry_on_connect_failure(void **state)
{
    (void)state;
    pt_fixture_t *f =
        setup("", "{targets: [\"127.0.0.1:%3$u\", \"127.0.0.1:%1$u\"]}",
              "    backends: [{target_group: g}]\n"
              "    retries: {attempts: 1, retry_on: [connect-failure], backoff: 1ms}\n");
    int c = pt_client(f);
    /* Twice, so that one of them tries the dead target first. */
    pt_ask(f, c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /x");
    assert_memory_equal(buf, ok_line, 17);
    pt_ask(f, c, "GET /y HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /y");
    assert_memory_equal(buf, ok_line, 17);
    close(c);
    pt_teardown(f);
}

static void test_connect_failure_without_retries_is_502(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", NULL, "    backends: [{target_group: dead}]\n");
    ask_own(f, "/x");
    own_error(buf, "HTTP/1.1 502 ", "bad_gateway");
    pt_teardown(f);
}

static void test_canary_falls_back(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", NULL,
                            "    backends:\n"
                            "      - {target_group: dead, weight: 100, fallback: h}\n"
                            "      - {target_group: h, weight: 0}\n");
    int c = pt_client(f);
    pt_ask(f, c, "GET /c HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "two /c");
    assert_memory_equal(buf, ok_line, 17);
    assert_int_equal(f->be[1].requests, 1);
    assert_int_equal(f->be[0].requests, 0);
    close(c);
    pt_teardown(f);
}

static void test_no_healthy_target(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", "{targets: [\"127.0.0.1:%1$u\"], panic_threshold: 0}", "");
    atomic_store(&f->health->groups[0].targets[0].checked_healthy, 0);
    ask_own(f, "/x");
    own_error(buf, "HTTP/1.1 503 ", "no_healthy_target");
    assert_int_equal(f->be[0].accepted, 0);
    pt_teardown(f);
}

/* A request held by a silent backend fills the breaker g_opts sets; the
 * next request is refused at once. */
static void circuit_case(const char *g)
{
    pt_fixture_t *f = setup("", g, "    backends: [{target_group: g}]\n    timeout: 30s\n");
    f->be[0].mode = PT_SILENT;
    int c1 = pt_client(f);
    pt_send(c1, "GET /held HTTP/1.1\r\nHost: a\r\n\r\n");
    PT_WAIT(f, f->be[0].requests == 1);
    ask_own(f, "/x");
    own_error(buf, "HTTP/1.1 503 ", "circuit_open");
    assert_int_equal(f->be[0].requests, 1);
    assert_int_equal(f->be[0].accepted, 1);
    close(c1);
    pt_teardown(f);
}

static void test_circuit_open(void **state)
{
    (void)state;
    circuit_case("{targets: [\"127.0.0.1:%1$u\"], max_requests: 1}");
}

static void test_ip_rule_forbidden(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", NULL,
                            "    backends: [{target_group: g}]\n"
                            "    ip_deny: [\"127.0.0.0/8\"]\n");
    ask_own(f, "/x");
    own_error(buf, "HTTP/1.1 403 Forbidden\r\n", "forbidden");
    assert_int_equal(f->be[0].accepted, 0);
    pt_teardown(f);
}

static void timeout_case(const char *route_timeouts)
{
    char route[512];
    snprintf(route, sizeof route, "    backends: [{target_group: g}]\n%s", route_timeouts);
    pt_fixture_t *f = setup("", NULL, route);
    f->be[0].mode = PT_SILENT;
    ask_own(f, "/slow");
    own_error(buf, "HTTP/1.1 504 ", "gateway_timeout");
    assert_int_equal(f->be[0].requests, 1);
    /* The connection that timed out is not pooled: the backend sees it go. */
    PT_WAIT(f, f->be[0].conns[0]->closed);
    pt_teardown(f);
}

static void test_per_try_timeout(void **state)
{
    (void)state;
    timeout_case("    retries: {attempts: 0, per_try_timeout: 50ms, retry_on: [5xx]}\n");
}

static void test_route_timeout(void **state)
{
    (void)state;
    timeout_case("    timeout: 50ms\n");
}

/* A client whose request reached be[0] (which stays silent). */
static int client_in_flight(pt_fixture_t *f, const char *request, const char *seen)
{
    f->be[0].mode = PT_SILENT;
    int c = pt_client(f);
    pt_send(c, request);
    PT_WAIT(f, f->be[0].accepted && strstr(f->be[0].conns[0]->got, seen));
    return c;
}

/* be[0] answers (by hand) the request in flight; c reads up to tail. */
static void relay(pt_fixture_t *f, int c, const char *response, const char *tail)
{
    pt_write(f->be[0].conns[0], response);
    pt_answer_ending(f, c, buf, sizeof buf, tail);
}

static void test_client_gone_mid_request(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    /* Half the body: the head went upstream with what came of the body. */
    int c = client_in_flight(f, "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhalf",
                             "half");
    close(c);
    PT_WAIT(f, f->be[0].conns[0]->closed); /* not pooled: its request is cut */
    assert_int_equal(f->be[0].requests, 0);
    pt_teardown(f);
}

static void test_client_gone_mid_response(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(f, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
    /* The backend starts a long response: the head and part of the body. */
    relay(f, c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial", "partial");
    close(c);
    PT_WAIT(f, f->be[0].conns[0]->closed); /* not pooled mid-response */
    pt_teardown(f);
}

/* With target one failing: asks until a request went to one first (round
 * robin: within two); each must be answered 200 by two (ending in tail). */
static void ask_until_one_tried(pt_fixture_t *f, int c, const char *request, const char *tail)
{
    for (int i = 0; i < 2 && f->be[0].requests == 0; i++) {
        pt_ask(f, c, request, buf, sizeof buf, tail);
        assert_memory_equal(buf, ok_line, 17);
    }
    assert_int_equal(f->be[0].requests, 1);
}

/* The backend closes the connection of the request in flight; the client
 * reads the rest of its answer and the end of its connection. */
static void backend_closes(pt_fixture_t *f, int c)
{
    uv_close((uv_handle_t *)&f->be[0].conns[0]->tcp, pt_conn_closed);
    pt_read_to_eof(f, c, buf, sizeof buf, strlen(buf));
    assert_memory_equal(buf, ok_line, 17);
}

static void test_retried_body_goes_whole(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", TWO_TARGETS, RETRY_5XX "    retry_non_idempotent: true\n");
    f->be[0].mode = PT_503;
    int c = pt_client(f);
    ask_until_one_tried(f, c, "POST /w HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\npart1part",
                        "two /w");
    /* Both targets got the whole body. */
    assert_non_null(strstr(f->be[0].conns[0]->got, "\r\n\r\npart1part"));
    const char *last = f->be[1].conns[0]->got;
    for (const char *p = last; (p = strstr(p, "POST /w ")) != NULL; p++)
        last = p;
    assert_non_null(strstr(last, "\r\n\r\npart1part"));
    close(c);
    pt_teardown(f);
}

/* Both targets answer 503: a client's request on the fixture's route
 * (retries on 5xx) is answered 503; returns the client. */
static int both_busy(pt_fixture_t *f, const char *request)
{
    f->be[0].mode = PT_503;
    f->be[1].mode = PT_503;
    int c = pt_client(f);
    pt_ask(f, c, request, buf, sizeof buf, "busy");
    assert_memory_equal(buf, "HTTP/1.1 503 Service Unavailable\r\n", 34);
    pt_spin(f, 20);
    return c;
}

static void test_non_idempotent_not_retried(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", TWO_TARGETS, RETRY_5XX);
    int c = both_busy(f, "POST /w HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    assert_int_equal(f->be[0].requests + f->be[1].requests, 1);
    /* A GET on the same route is retried (and answered 503 by the other). */
    pt_ask(f, c, "GET /g HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "busy");
    pt_spin(f, 20);
    assert_int_equal(f->be[0].requests + f->be[1].requests, 3);
    close(c);
    pt_teardown(f);
}

static const char *const chunked_answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";

static void test_chunked_response(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(f, "GET /c HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
    relay(f, c, chunked_answer, "\r\n0\r\n\r\n");
    assert_memory_equal(buf, ok_line, 17);
    assert_non_null(strcasestr(buf, "\r\ntransfer-encoding: chunked\r\n"));
    assert_non_null(strstr(buf, "hello"));
    assert_non_null(strstr(buf, " world"));

    /* An HTTP/1.0 client gets the body decoded, and the connection ends. */
    int c10 = pt_client(f);
    pt_send(c10, "GET /d HTTP/1.0\r\nHost: a\r\n\r\n");
    PT_WAIT(f, f->be[0].requests == 2);
    pt_write(f->be[0].conns[0], chunked_answer);
    pt_read_to_eof(f, c10, buf, sizeof buf, 0);
    assert_memory_equal(buf, ok_line, 17); /* its highest version */
    assert_null(strcasestr(buf, "transfer-encoding"));
    const char *body = strstr(buf, "\r\n\r\n");
    assert_non_null(body);
    assert_string_equal(body + 4, "hello world");
    close(c10);
    close(c);
    pt_teardown(f);
}

static void test_pooled_connection_closed_by_backend(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = pt_client(f);
    pt_ask(f, c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /1");
    /* The backend closes the idle connection ficus pooled. */
    uv_close((uv_handle_t *)&f->be[0].conns[0]->tcp, pt_conn_closed);
    pt_spin(f, 20);
    pt_ask(f, c, "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /2");
    assert_memory_equal(buf, ok_line, 17);
    assert_int_equal(f->be[0].accepted, 2);
    close(c);
    pt_teardown(f);
}

static void test_upstream_gone_mid_body(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(f, "GET /cut HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
    relay(f, c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "short");
    /* The client cannot be told otherwise: its connection is closed, with
     * nothing more after the bytes that came. */
    backend_closes(f, c);
    assert_string_equal(strstr(buf, "\r\n\r\n") + 4, "short");
    close(c);
    pt_teardown(f);
}

static void test_head_then_keep_alive(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(f, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
    /* A HEAD's answer declares a length but carries no body. */
    relay(f, c, "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", "\r\n\r\n");
    assert_memory_equal(buf, ok_line, 17);
    assert_non_null(strstr(buf, "Content-Length: 42\r\n"));
    f->be[0].mode = PT_OK;
    pt_ask(f, c, "GET /next HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /next");
    assert_memory_equal(buf, ok_line, 17); /* nothing was taken for a body */
    assert_int_equal(f->be[0].accepted, 1);
    close(c);
    pt_teardown(f);
}

static void test_body_until_close(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(f, "GET /u HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
    /* No length: the body ends when the backend closes. */
    relay(f, c, "HTTP/1.1 200 OK\r\n\r\nuntil", "until");
    /* The client's answer ends the same way: Connection: close, then EOF. */
    backend_closes(f, c);
    assert_non_null(strstr(buf, "\r\nConnection: close\r\n"));
    assert_string_equal(strstr(buf, "\r\n\r\n") + 4, "until");
    close(c);
    pt_teardown(f);
}

static void test_no_route_404(void **state)
{
    (void)state;
    pt_fixture_t *f = pt_setup("server: {listen: [\"127.0.0.1:8080\"], workers: 1}\n"
                               "target_groups: {g: {targets: [\"127.0.0.1:%u\"]}}\n"
                               "routes: [{name: r, match: {path_prefix: /api},"
                               " backends: [{target_group: g}]}]\n");
    ask_own(f, "/other");
    own_error(buf, "HTTP/1.1 404 ", "no_route");
    assert_int_equal(f->be[0].accepted, 0);
    pt_teardown(f);
}

static void test_insane_request_id_replaced(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = pt_client(f);
    pt_ask(f, c, "GET /i HTTP/1.1\r\nHost: a\r\nX-Request-Id: no spaces/allowed\r\n\r\n", buf,
           sizeof buf, "one /i");
    char id[64];
    assert_non_null(header_value(f->be[0].conns[0]->got, "\r\nX-Request-Id: ", id, sizeof id));
    assert_int_equal(strspn(id, "0123456789abcdef"), 32);
    assert_int_equal(strlen(id), 32);
    assert_null(strstr(f->be[0].conns[0]->got, "no spaces"));
    close(c);
    pt_teardown(f);
}

static void test_retries_exhausted(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", TWO_TARGETS, RETRY_5XX);
    /* Both tries answer 503: the client gets the last one, as it came. */
    int c = both_busy(f, "GET /e HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(f->be[0].requests, 1);
    assert_int_equal(f->be[1].requests, 1);
    /* The connection is still usable. */
    f->be[0].mode = PT_OK;
    f->be[1].mode = PT_OK;
    pt_ask(f, c, "GET /f HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, " /f");
    assert_memory_equal(buf, ok_line, 17);
    close(c);
    pt_teardown(f);
}

static void test_expect_continue(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(
        f, "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        "\r\n\r\n");
    const char *got = f->be[0].conns[0]->got;
    assert_non_null(strstr(got, "\r\nExpect: 100-continue\r\n")); /* forwarded */
    /* The backend's interim answer reaches the client, then the final one. */
    relay(f, c, "HTTP/1.1 100 Continue\r\n\r\n", "100 Continue\r\n\r\n");
    assert_memory_equal(buf, "HTTP/1.1 100 Continue\r\n", 23);
    pt_send(c, "body");
    PT_WAIT(f, strstr(got, "\r\n\r\nbody") != NULL);
    relay(f, c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "\r\n\r\nok");
    assert_memory_equal(buf, ok_line, 17);
    close(c);
    pt_teardown(f);
}

static void test_pipelined_mixed(void **state)
{
    (void)state;
    pt_fixture_t *f = pt_setup("server: {listen: [\"127.0.0.1:8080\"], workers: 1}\n"
                               "target_groups: {g: {targets: [\"127.0.0.1:%u\"]}}\n"
                               "routes: [{name: r, match: {path_prefix: /api},"
                               " backends: [{target_group: g}]}]\n");
    int c = pt_client(f);
    /* A proxied POST with its body, one ficus answers itself, a GET. */
    pt_send(c, "POST /api/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
               "GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"
               "GET /api/3 HTTP/1.1\r\nHost: a\r\n\r\n");
    pt_answer_ending(f, c, buf, sizeof buf, "one /api/3");
    const char *a = strstr(buf, "one /api/1"), *b = strstr(buf, "\"error\":\"no_route\""),
               *d = strstr(buf, "one /api/3");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b && b < d);
    assert_int_equal(f->be[0].requests, 2);
    assert_non_null(strstr(f->be[0].conns[0]->got, "\r\n\r\nabcGET /api/3 "));
    close(c);
    pt_teardown(f);
}

static void test_extra_bytes_after_response_not_pooled(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(f, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
    /* More than the declared length: the connection cannot be reused. */
    relay(f, c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE", "\r\n\r\nok");
    assert_null(strstr(buf, "GARBAGE"));
    f->be[0].mode = PT_OK;
    pt_ask(f, c, "GET /y HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /y");
    assert_memory_equal(buf, ok_line, 17);
    assert_int_equal(f->be[0].accepted, 2);
    assert_true(f->be[0].conns[0]->closed);
    close(c);
    pt_teardown(f);
}

static void test_per_try_timeout_retried(void **state)
{
    (void)state;
    pt_fixture_t *f = setup("", TWO_TARGETS,
                            "    backends: [{target_group: g}]\n"
                            "    retries: {attempts: 1, per_try_timeout: 50ms, retry_on: [timeout],"
                            " backoff: 1ms}\n");
    f->be[0].mode = PT_SILENT;
    int c = pt_client(f);
    ask_until_one_tried(f, c, "GET /t HTTP/1.1\r\nHost: a\r\n\r\n", "two /t");
    /* The late answer of the first try reaches nobody: its connection is
     * closed. */
    PT_WAIT(f, f->be[0].conns[0]->closed);
    close(c);
    pt_teardown(f);
}

static void test_circuit_open_max_connections(void **state)
{
    (void)state;
    circuit_case("{targets: [\"127.0.0.1:%1$u\"], max_connections: 1}");
}

static void test_fallback_uses_its_own_path(void **state)
{
    (void)state;
    pt_fixture_t *f = pt_setup("server: {listen: [\"127.0.0.1:8080\"], workers: 1}\n"
                               "target_groups:\n"
                               "  h: {targets: [\"127.0.0.1:%2$u\"]}\n"
                               "  dead: {targets: [\"127.0.0.1:%3$u\"]}\n"
                               "  g: {targets: [\"127.0.0.1:%1$u\"]}\n"
                               "routes:\n"
                               "  - name: r\n"
                               "    match: {path_regex: \"/s/([a-z]+)\"}\n"
                               "    backends:\n"
                               "      - {target_group: dead, weight: 100, fallback: h,"
                               " path: \"/canary/$1\"}\n"
                               "      - {target_group: h, weight: 0, path: \"/fb/$1\"}\n");
    int c = pt_client(f);
    pt_ask(f, c, "GET /s/abc?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "two /fb/abc?q=1");
    assert_memory_equal(buf, ok_line, 17);
    assert_memory_equal(f->be[1].conns[0]->got, "GET /fb/abc?q=1 HTTP/1.1\r\n", 26);
    close(c);
    pt_teardown(f);
}

static void test_body_beyond_retry_buffer_not_retried(void **state)
{
    (void)state;
    pt_fixture_t *f =
        setup(", retry_buffer_size: 8", TWO_TARGETS, RETRY_5XX "    retry_non_idempotent: true\n");
    /* 9 bytes of body, the buffer keeps 8: the 503 is the answer. */
    int c = both_busy(f, "POST /w HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\npart1part");
    assert_int_equal(f->be[0].requests + f->be[1].requests, 1);
    close(c);
    pt_teardown(f);
}

static void test_large_response_relayed_whole(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = client_in_flight(f, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n");
    /* 8 MiB, more than the buffers and the sockets on the way hold while
     * the client does not read yet: relayed whole and in order. */
    enum { BODY = 8 << 20 };
    char head[64];
    int hl = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BODY);
    char *resp = malloc((size_t)hl + BODY + 1);
    memcpy(resp, head, (size_t)hl);
    for (int i = 0; i < BODY; i++)
        resp[hl + i] = (char)('a' + (i * 7 + i / 4096) % 26);
    resp[hl + BODY] = '\0';
    pt_write(f->be[0].conns[0], resp);
    pt_spin(f, 200); /* the client reads nothing yet */
    char *got = malloc((size_t)hl + BODY + 4096);
    size_t len = 0;
    for (int i = 0; i < 400000 && (len < 4 || !strstr(got, "\r\n\r\n") ||
                                   len < (size_t)(strstr(got, "\r\n\r\n") + 4 - got) + BODY);
         i++) {
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
        ssize_t k = recv(c, got + len, (size_t)hl + BODY + 4095 - len, 0);
        if (k > 0)
            len += (size_t)k;
        else
            usleep(100);
        got[len] = '\0';
    }
    const char *body = strstr(got, "\r\n\r\n");
    assert_non_null(body);
    body += 4;
    assert_int_equal(len - (size_t)(body - got), BODY);
    assert_memory_equal(body, resp + hl, BODY);
    free(got);
    free(resp);
    /* The connection goes on, over the same upstream connection. */
    f->be[0].mode = PT_OK;
    pt_ask(f, c, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /after");
    assert_int_equal(f->be[0].accepted, 1);
    close(c);
    pt_teardown(f);
}

/* A request whose first try was answered 503 and which now waits out a
 * backoff before its retry (route: `extra`). The backoff is jittered (up
 * to 10 s): should the retry go out early, it finds the backend silent. */
static int client_in_backoff(pt_fixture_t **fp, const char *extra)
{
    char route[512];
    snprintf(route, sizeof route,
             "    backends: [{target_group: g}]\n"
             "    retries: {attempts: 1, retry_on: [5xx], backoff: 10s}\n%s",
             extra);
    pt_fixture_t *f = *fp = setup("", NULL, route);
    f->be[0].mode = PT_503;
    int c = pt_client(f);
    pt_send(c, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    PT_WAIT(f, f->be[0].requests == 1);
    f->be[0].mode = PT_SILENT;
    PT_WAIT(f, f->pw->gen->route_retries[0] == 1); /* a retry is decided */
    return c;
}

static void test_client_gone_during_backoff(void **state)
{
    (void)state;
    pt_fixture_t *f;
    int c = client_in_backoff(&f, "");
    close(c);
    pt_spin(f, 50);
    pt_assert_released(f->pw->gen); /* nothing left counted for it */
    pt_teardown(f);
}

static void test_stop_during_backoff(void **state)
{
    (void)state;
    pt_fixture_t *f;
    int c = client_in_backoff(&f, "");
    pt_teardown(f); /* its timer and connections closed: the loop ends */
    close(c);
}

static void test_route_timeout_during_backoff(void **state)
{
    (void)state;
    pt_fixture_t *f;
    int c = client_in_backoff(&f, "    timeout: 100ms\n");
    pt_answer_ending(f, c, buf, sizeof buf, "}");
    own_error(buf, "HTTP/1.1 504 ", "gateway_timeout");
    close(c);
    pt_teardown(f);
}

/* ficus answers itself a request whose body it did not read: the bytes
 * after the head are not taken for a next request (what follows the body
 * would be smuggled past the answer); the connection closes instead. */
static void own_answer_with_body_closes(const char *server, const char *route, const char *req,
                                        const char *status_line, const char *code)
{
    pt_fixture_t *f = setup(server, NULL, route);
    int c = pt_client(f);
    pt_send(c, req);
    pt_read_to_eof(f, c, buf, sizeof buf, 0);
    own_error(buf, status_line, code);
    assert_non_null(strstr(buf, "\r\nConnection: close\r\n"));
    assert_null(strstr(buf + 1, "HTTP/1.1 "));
    assert_int_equal(f->be[0].accepted, 0);
    close(c);
    pt_teardown(f);
}

/* 413 (over max_body_size) and 403 (IP rules) with a body. */
static void test_own_answers_with_body_close(void **state)
{
    (void)state;
    own_answer_with_body_closes(", max_body_size: 10", "",
                                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"
                                "hello worldGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
                                "HTTP/1.1 413 ", "body_too_large");
    own_answer_with_body_closes("",
                                "    backends: [{target_group: g}]\n"
                                "    ip_deny: [\"127.0.0.0/8\"]\n",
                                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
                                "HTTP/1.1 403 Forbidden\r\n", "forbidden");
}

static void test_http10_keep_alive(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_basic();
    int c = pt_client(f);
    pt_ask(f, c, "GET /x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", buf, sizeof buf,
           "one /x");
    assert_non_null(strstr(buf, "\r\nConnection: keep-alive\r\n"));
    pt_ask(f, c, "GET /y HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /y");
    assert_int_equal(f->be[0].accepted, 1);
    close(c);
    pt_teardown(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_rewritten_and_kept_alive),
        cmocka_unit_test(test_pipelined_in_order),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_retry_on_5xx),
        cmocka_unit_test(test_retry_on_connect_failure),
        cmocka_unit_test(test_connect_failure_without_retries_is_502),
        cmocka_unit_test(test_canary_falls_back),
        cmocka_unit_test(test_no_healthy_target),
        cmocka_unit_test(test_circuit_open),
        cmocka_unit_test(test_ip_rule_forbidden),
        cmocka_unit_test(test_per_try_timeout),
        cmocka_unit_test(test_route_timeout),
        cmocka_unit_test(test_client_gone_mid_request),
        cmocka_unit_test(test_client_gone_mid_response),
        cmocka_unit_test(test_retried_body_goes_whole),
        cmocka_unit_test(test_non_idempotent_not_retried),
        cmocka_unit_test(test_chunked_response),
        cmocka_unit_test(test_pooled_connection_closed_by_backend),
        cmocka_unit_test(test_upstream_gone_mid_body),
        cmocka_unit_test(test_head_then_keep_alive),
        cmocka_unit_test(test_body_until_close),
        cmocka_unit_test(test_no_route_404),
        cmocka_unit_test(test_insane_request_id_replaced),
        cmocka_unit_test(test_retries_exhausted),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_pipelined_mixed),
        cmocka_unit_test(test_extra_bytes_after_response_not_pooled),
        cmocka_unit_test(test_per_try_timeout_retried),
        cmocka_unit_test(test_circuit_open_max_connections),
        cmocka_unit_test(test_fallback_uses_its_own_path),
        cmocka_unit_test(test_body_beyond_retry_buffer_not_retried),
        cmocka_unit_test(test_large_response_relayed_whole),
        cmocka_unit_test(test_client_gone_during_backoff),
        cmocka_unit_test(test_stop_during_backoff),
        cmocka_unit_test(test_route_timeout_during_backoff),
        cmocka_unit_test(test_own_answers_with_body_close),
        cmocka_unit_test(test_http10_keep_alive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
