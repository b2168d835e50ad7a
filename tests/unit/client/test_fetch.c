/* client/fetch (and client/reply, net/blocking_conn under it) against a
 * scripted server thread on 127.0.0.1: the request as sent, Content-Length,
 * chunked and close-delimited bodies, 1xx skipped, the body bound, a cut or
 * malformed answer, a timeout, a refused connection, keep-alive reuse and
 * the replacement of a connection the server closed while idle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <errno.h>

#include "client/fetch.h"
#include "client/script_server.h"
#include "core/errors.h"
#include "core/time.h"

#define OK_HEAD "HTTP/1.1 200 OK\r\n"

typedef struct run {
    script_server_t sv;
    fetch_t f;
    char port[8];
    int rc;
} run_t;

/* Starts the server and a client to it (bounds: 1 KiB head, 64 bytes body). */
static void run_start(run_t *r, const step_t *steps, size_t n, reply_body_t mode)
{
    script_server_start(&r->sv, steps, n);
    snprintf(r->port, sizeof r->port, "%u", r->sv.port);
    fetch_init(&r->f, "127.0.0.1", r->port, NULL, 1024, 64, mode);
}

static int run_get(run_t *r, const char *target, uint64_t timeout_ms)
{
    request_t rq = {.method = "GET", .target = target, .host = "example.test"};
    return r->rc = fetch_do(&r->f, &rq, time_now_ms() + timeout_ms);
}

static void run_end(run_t *r)
{
    fetch_deinit(&r->f);
    script_server_stop(&r->sv);
}

static void assert_body(const fetch_t *f, const char *want)
{
    assert_int_equal(f->reply.body.len, strlen(want));
    assert_memory_equal(f->reply.body.data, want, strlen(want));
}

static void test_request_and_content_length(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {OK_HEAD "X-Answer: forty-two \r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
         AFTER_CLOSE}};
    run_t r;
    run_start(&r, steps, 1, REPLY_BODY_ALL);
    request_t rq = {.method = "POST",
                    .target = "/v1/x?y=1",
                    .host = "collector:4318",
                    .headers = "User-Agent: t\r\n",
                    .body = "{}",
                    .body_len = 2};
    assert_int_equal(fetch_do(&r.f, &rq, time_now_ms() + 5000), 0);
    assert_int_equal(reply_status(&r.f.reply), 200);
    const http_header_t *h = reply_header(&r.f.reply, "x-answer");
    assert_non_null(h);
    assert_int_equal(h->value_len, 9); /* trailing whitespace is not part of it */
    assert_memory_equal(h->value, "forty-two", 9);
    assert_null(reply_header(&r.f.reply, "x-missing"));
    assert_body(&r.f, "hello");
    assert_false(blocking_conn_is_open(&r.f.conn)); /* Connection: close */
    run_end(&r);
    assert_string_equal(r.sv.request, "POST /v1/x?y=1 HTTP/1.1\r\nHost: collector:4318\r\n"
                                      "User-Agent: t\r\nContent-Length: 2\r\n\r\n{}");
}

static void test_chunked_and_interim(void **state)
{
    (void)state;
    static const step_t steps[] = {{"HTTP/1.1 100 Continue\r\n\r\n" OK_HEAD
                                    "Transfer-Encoding: chunked\r\n\r\n"
                                    "5;ext=1\r\nhello\r\n006\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
                                    AFTER_CLOSE}};
    run_t r;
    run_start(&r, steps, 1, REPLY_BODY_ALL);
    assert_int_equal(run_get(&r, "/", 5000), 0);
    assert_int_equal(reply_status(&r.f.reply), 200);
    assert_body(&r.f, "hello world");
    run_end(&r);
}

static void test_close_delimited(void **state)
{
    (void)state;
    static const step_t steps[] = {{"HTTP/1.0 200 OK\r\n\r\nuntil the end", AFTER_CLOSE}};
    run_t r;
    run_start(&r, steps, 1, REPLY_BODY_ALL);
    assert_int_equal(run_get(&r, "/", 5000), 0);
    assert_body(&r.f, "until the end");
    assert_false(r.f.reply.keep_alive);
    run_end(&r);
}

static void test_body_over_the_bound(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {OK_HEAD "Content-Length: 65\r\n\r\n"
                 "0123456789012345678901234567890123456789012345678901234567890123X",
         AFTER_CLOSE},
        {OK_HEAD
         "Transfer-Encoding: chunked\r\n\r\n"
         "41\r\n0123456789012345678901234567890123456789012345678901234567890123X\r\n0\r\n\r\n",
         AFTER_CLOSE}};
    run_t r;
    run_start(&r, steps, 2, REPLY_BODY_ALL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(run_get(&r, "/", 5000), FE_TOOBIG);
        assert_int_equal(r.f.fail, FETCH_TOOBIG);
        assert_int_equal(reply_status(&r.f.reply), 200); /* known all the same */
        assert_int_equal(r.f.reply.body.len, 64);        /* what fits is kept */
        assert_non_null(strstr(r.f.why, "too large"));
        assert_false(blocking_conn_is_open(&r.f.conn));
    }
    run_end(&r);
}

static void test_head_over_the_bound(void **state)
{
    (void)state;
    static char answer[2048];
    snprintf(answer, sizeof answer, OK_HEAD "X-Long: %01100d\r\n\r\n", 0);
    const step_t steps[] = {{answer, AFTER_CLOSE}};
    run_t r;
    run_start(&r, steps, 1, REPLY_BODY_ALL);
    assert_int_equal(run_get(&r, "/", 5000), FE_TOOBIG);
    assert_int_equal(reply_status(&r.f.reply), 0);
    run_end(&r);
}

static void test_only_2xx_bodies(void **state)
{
    (void)state;
    /* The 404's body never comes: the answer ends at its head all the same. */
    static const step_t steps[] = {
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 100\r\n\r\n", AFTER_WAIT}};
    run_t r;
    run_start(&r, steps, 1, REPLY_BODY_2XX);
    assert_int_equal(run_get(&r, "/", 5000), 0);
    assert_int_equal(reply_status(&r.f.reply), 404);
    assert_int_equal(r.f.reply.body.len, 0);
    assert_false(blocking_conn_is_open(&r.f.conn));
    run_end(&r);
}

static void test_cut_and_malformed(void **state)
{
    (void)state;
    static const step_t steps[] = {
        {OK_HEAD "Content-Length: 100\r\n\r\nshort", AFTER_CLOSE},
        {"HTTP/1.1 200 O", AFTER_CLOSE},
        {NULL, AFTER_CLOSE},
        {"garbage\r\n\r\n", AFTER_CLOSE},
        {OK_HEAD "Transfer-Encoding: chunked\r\n\r\nzz\r\n", AFTER_CLOSE}};
    static const struct {
        fetch_fail_t fail;
        const char *why;
    } want[] = {{FETCH_CUT, "closed before the response was complete"},
                {FETCH_CUT, "closed before the response was complete"},
                {FETCH_CLOSED, "closed before the response"},
                {FETCH_INVALID, "invalid HTTP response"},
                {FETCH_INVALID, "invalid HTTP response"}};
    run_t r;
    run_start(&r, steps, 5, REPLY_BODY_ALL);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(run_get(&r, "/", 5000) < 0, 1);
        assert_int_equal(r.f.fail, want[i].fail);
        if (!strstr(r.f.why, want[i].why))
            fail_msg("step %zu: \"%s\" lacks \"%s\"", i, r.f.why, want[i].why);
    }
    run_end(&r);
}

static void test_timeout(void **state)
{
    (void)state;
    static const step_t steps[] = {{NULL, AFTER_WAIT}};
    run_t r;
    run_start(&r, steps, 1, REPLY_BODY_ALL);
    uint64_t t0 = time_now_ms();
    assert_int_equal(run_get(&r, "/", 200), FE_AGAIN);
    assert_true(time_now_ms() - t0 >= 200);
    assert_int_equal(r.f.fail, FETCH_RECV);
    assert_int_equal(r.f.conn.err, ETIMEDOUT);
    assert_string_equal(r.f.why, "receive: timed out");
    assert_false(blocking_conn_is_open(&r.f.conn)); /* so the server's wait ends */
    run_end(&r);
}

static void test_refused(void **state)
{
    (void)state;
    uint16_t port;
    int fd = script_closed_port(&port);
    char p[8];
    snprintf(p, sizeof p, "%u", port);
    fetch_t f;
    fetch_init(&f, "127.0.0.1", p, NULL, 1024, 64, REPLY_BODY_ALL);
    request_t rq = {.method = "GET", .target = "/", .host = "h"};
    assert_int_equal(fetch_do(&f, &rq, time_now_ms() + 5000), FE_IO);
    assert_int_equal(f.fail, FETCH_OPEN);
    assert_int_equal(f.conn.step, BLOCKING_CONN_CONNECT);
    assert_int_equal(f.conn.err, ECONNREFUSED);
    assert_string_equal(f.why, "connect: Connection refused");
    fetch_deinit(&f);
    close(fd);
}

static void test_bad_request_fields(void **state)
{
    (void)state;
    fetch_t f;
    fetch_init(&f, "127.0.0.1", "1", NULL, 1024, 64, REPLY_BODY_ALL);
    request_t rq = {.method = "GET", .target = "/a\r\nX: y", .host = "h"};
    assert_int_equal(fetch_do(&f, &rq, time_now_ms() + 5000), FE_INVAL);
    assert_int_equal(f.fail, FETCH_REQUEST);
    fetch_deinit(&f);
}

static void test_keep_alive_reuse_and_stale(void **state)
{
    (void)state;
    /* Two answers on one connection, which the server then closes as if
     * idle; the third request finds it closed and goes out again on a new one. */
    static const step_t steps[] = {{OK_HEAD "Content-Length: 1\r\n\r\na", AFTER_KEEP},
                                   {OK_HEAD "Content-Length: 1\r\n\r\nb", AFTER_CLOSE},
                                   {OK_HEAD "Content-Length: 1\r\n\r\nc", AFTER_CLOSE}};
    run_t r;
    run_start(&r, steps, 3, REPLY_BODY_ALL);
    const char *bodies[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        if (i == 2)
            usleep(50 * 1000); /* the server's close has arrived */
        assert_int_equal(run_get(&r, "/", 5000), 0);
        assert_body(&r.f, bodies[i]);
        assert_true(blocking_conn_is_open(&r.f.conn));
    }
    run_end(&r);
    assert_int_equal(r.sv.accepts, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_and_content_length),
        cmocka_unit_test(test_chunked_and_interim),
        cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_body_over_the_bound),
        cmocka_unit_test(test_head_over_the_bound),
        cmocka_unit_test(test_only_2xx_bodies),
        cmocka_unit_test(test_cut_and_malformed),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_bad_request_fields),
        cmocka_unit_test(test_keep_alive_reuse_and_stale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
