/* client/http_client on a real loop against a scripted server thread on
 * 127.0.0.1: the request as sent, headers and bodies (Content-Length and
 * chunked), the body bound, a cut answer, the timeout, a refused connection,
 * an answer that ends at its head, and a cancel. Every test ends with the
 * loop closed and no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <uv.h>

#include "client/http_client.h"
#include "client/script_server.h"

#define OK_HEAD "HTTP/1.1 200 OK\r\n"

typedef struct outcome {
    int calls;
    int status;
    char error[128];
    char header[64]; /* X-Answer */
    char body[128];
    size_t body_len;
} outcome_t;

static void on_done(void *ctx, const reply_t *reply, const char *error)
{
    outcome_t *o = ctx;
    o->calls++;
    o->status = reply_status(reply);
    snprintf(o->error, sizeof o->error, "%s", error ? error : "");
    const http_header_t *h = reply_header(reply, "x-answer");
    if (h)
        snprintf(o->header, sizeof o->header, "%.*s", (int)h->value_len, h->value);
    o->body_len = reply->body.len < sizeof o->body ? reply->body.len : sizeof o->body;
    if (o->body_len)
        memcpy(o->body, reply->body.data, o->body_len);
}

static const http_client_opts_t all_bodies = {
    .timeout_ms = 5000, .max_head_bytes = 1024, .max_body_bytes = 64, .body_mode = REPLY_BODY_ALL};

/* One request to port on a fresh loop, run until nothing is left; when
 * cancel, the request is cancelled at once. */
static void run_one(uint16_t port, const request_t *rq, const http_client_opts_t *opts,
                    outcome_t *o, bool cancel)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    memset(o, 0, sizeof *o);
    http_client_t *c = http_client_start(&loop, (const struct sockaddr *)&a, rq, opts, on_done, o);
    assert_non_null(c);
    if (cancel)
        http_client_cancel(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void run_script(const step_t *steps, size_t n, const http_client_opts_t *opts, outcome_t *o,
                       script_server_t *sv)
{
    request_t rq = {.method = "GET", .target = "/healthz", .host = "svc:8080"};
    script_server_start(sv, steps, n);
    for (size_t i = 0; i < n; i++)
        run_one(sv->port, &rq, opts, &o[i], false);
    script_server_stop(sv);
}

static void test_request_headers_and_body(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {OK_HEAD "X-Answer: yes\r\nContent-Length: 5\r\n\r\nhello", AFTER_KEEP}};
    script_server_t sv;
    script_server_start(&sv, steps, 1);
    request_t rq = {.method = "PUT",
                    .target = "/s?id=1",
                    .host = "svc",
                    .headers = "User-Agent: t\r\n",
                    .body = "abc",
                    .body_len = 3,
                    .close = true};
    outcome_t o;
    run_one(sv.port, &rq, &all_bodies, &o, false);
    script_server_stop(&sv);
    assert_int_equal(o.calls, 1);
    assert_string_equal(o.error, "");
    assert_int_equal(o.status, 200);
    assert_string_equal(o.header, "yes");
    assert_int_equal(o.body_len, 5);
    assert_memory_equal(o.body, "hello", 5);
    assert_string_equal(sv.request, "PUT /s?id=1 HTTP/1.1\r\nHost: svc\r\nUser-Agent: t\r\n"
                                    "Content-Length: 3\r\nConnection: close\r\n\r\nabc");
}

static void test_chunked_bound_and_cut(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {OK_HEAD "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", AFTER_CLOSE},
        {OK_HEAD "Content-Length: 70\r\n\r\n"
                 "0123456789012345678901234567890123456789012345678901234567890123456789",
         AFTER_CLOSE},
        {OK_HEAD "Content-Length: 10\r\n\r\nshort", AFTER_CLOSE},
        {NULL, AFTER_CLOSE},
        {"HTTP/1.1 2x0 Bad\r\n\r\n", AFTER_CLOSE}};
    outcome_t o[5];
    script_server_t sv;
    run_script(steps, 5, &all_bodies, o, &sv);
    for (int i = 0; i < 5; i++)
        assert_int_equal(o[i].calls, 1);
    assert_string_equal(o[0].error, "");
    assert_int_equal(o[0].body_len, 5);
    assert_memory_equal(o[0].body, "abcde", 5);
    assert_string_equal(o[1].error, "response body too large");
    assert_int_equal(o[1].status, 200);
    assert_int_equal(o[1].body_len, 64);
    assert_string_equal(o[2].error, "connection closed before the response was complete");
    assert_string_equal(o[3].error, "connection closed before the response");
    assert_int_equal(o[3].status, 0);
    assert_true(o[4].error[0] != '\0');
    assert_int_equal(o[4].status, 0);
}

static void test_head_only(void **state)
{
    (void)state;
    /* As health checks read: the status decides, the body never comes. */
    static const step_t steps[] = {
        {"HTTP/1.1 503 Unavailable\r\nContent-Length: 1000\r\n\r\n", AFTER_WAIT}};
    http_client_opts_t opts = {
        .timeout_ms = 5000, .max_head_bytes = 1024, .body_mode = REPLY_BODY_NONE};
    outcome_t o;
    script_server_t sv;
    run_script(steps, 1, &opts, &o, &sv);
    assert_int_equal(o.calls, 1);
    assert_string_equal(o.error, "");
    assert_int_equal(o.status, 503);
}

static void test_timeout(void **state)
{
    (void)state;
    static const step_t steps[] = {{NULL, AFTER_WAIT}};
    http_client_opts_t opts = all_bodies;
    opts.timeout_ms = 100;
    outcome_t o;
    script_server_t sv;
    uint64_t t0 = uv_hrtime();
    run_script(steps, 1, &opts, &o, &sv);
    uint64_t elapsed_ms = (uv_hrtime() - t0) / 1000000u;
    if (elapsed_ms < 99) /* the loop clock counts whole milliseconds */
        fail_msg("timed out after %llu ms", (unsigned long long)elapsed_ms);
    assert_int_equal(o.calls, 1);
    assert_string_equal(o.error, "timeout");
}

static void test_refused(void **state)
{
    (void)state;
    uint16_t port;
    int fd = script_closed_port(&port);
    request_t rq = {.method = "GET", .target = "/", .host = "h"};
    outcome_t o;
    run_one(port, &rq, &all_bodies, &o, false);
    close(fd);
    assert_int_equal(o.calls, 1);
    assert_string_equal(o.error, uv_strerror(UV_ECONNREFUSED));
}

static void test_cancel(void **state)
{
    (void)state;
    static const step_t steps[] = {{OK_HEAD "Content-Length: 0\r\n\r\n", AFTER_CLOSE}};
    script_server_t sv;
    script_server_start(&sv, steps, 1);
    request_t rq = {.method = "GET", .target = "/", .host = "h"};
    outcome_t o;
    run_one(sv.port, &rq, &all_bodies, &o, true);
    assert_int_equal(o.calls, 0);
    /* The server's step still wants a request: send it one. */
    run_one(sv.port, &rq, &all_bodies, &o, false);
    script_server_stop(&sv);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 200);
}

static void test_bad_request_is_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 1, &a);
    request_t rq = {.method = "GET", .target = "/\r\n", .host = "h"};
    outcome_t o = {0};
    assert_null(
        http_client_start(&loop, (const struct sockaddr *)&a, &rq, &all_bodies, on_done, &o));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(o.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_headers_and_body),
        cmocka_unit_test(test_chunked_bound_and_cut),
        cmocka_unit_test(test_head_only),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_bad_request_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
