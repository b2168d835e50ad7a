/* HTTP/2 heads as HTTP/1.1 text and back (http/h2_head.h): the request
 * head each test builds is read back by the HTTP/1.1 parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/h2_head.h"
#include "http/parser.h"

static char buf[4096];
static char side[1024];
static http_head_t head;

static void add(h2_req_head_t *h, const char *n, const char *v)
{
    h2_req_head_add(h, (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v));
}

static void start(h2_req_head_t *h, size_t limit)
{
    h2_req_head_init(h, buf, sizeof buf, side, sizeof side, limit);
}

/* Parses the written head; returns its header count. */
static uint32_t parse(long len, bool *end)
{
    http_parser_t p;
    http_parser_init_request(&p);
    int ev = 0;
    long k = http_parser_feed(&p, &head, buf, (size_t)len, &ev);
    assert_int_equal(k, len);
    assert_true(ev & HTTP_EV_HEAD);
    int ev2 = 0;
    http_parser_feed(&p, &head, buf + len, 0, &ev2);
    *end = (ev | ev2) & HTTP_EV_END;
    return head.n_headers;
}

static const char *field(const char *name)
{
    static char out[512];
    const http_header_t *f = http_header_find(head.headers, head.n_headers, name, strlen(name));
    if (!f)
        return NULL;
    memcpy(out, f->value, f->value_len);
    out[f->value_len] = 0;
    return out;
}

static void test_request_line_host_and_fields_in_order(void **state)
{
    (void)state;
    h2_req_head_t h;
    start(&h, 16384);
    add(&h, ":scheme", "https");
    add(&h, ":path", "/a?b=1");
    add(&h, ":authority", "api.test");
    add(&h, ":method", "GET");
    add(&h, "accept", "*/*");
    add(&h, "x-one", "1");
    long n = h2_req_head_finish(&h, false);
    assert_true(n > 0);
    assert_memory_equal(buf, "GET /a?b=1 HTTP/1.1\r\nhost: api.test\r\naccept: */*\r\n", 49);
    bool end;
    assert_int_equal(parse(n, &end), 3);
    assert_true(end); /* no body: no framing field, the message ends with the head */
    assert_string_equal(field("x-one"), "1");
}

static void test_cookie_crumbs_are_joined(void **state)
{
    (void)state;
    h2_req_head_t h;
    start(&h, 16384);
    add(&h, ":method", "GET");
    add(&h, ":path", "/");
    add(&h, ":authority", "a");
    add(&h, "cookie", "a=1");
    add(&h, "x", "y");
    add(&h, "cookie", "b=2");
    long n = h2_req_head_finish(&h, false);
    bool end;
    parse(n, &end);
    assert_string_equal(field("cookie"), "a=1; b=2");
}

static void test_body_without_length_is_chunked(void **state)
{
    (void)state;
    h2_req_head_t h;
    start(&h, 16384);
    add(&h, ":method", "POST");
    add(&h, ":path", "/up");
    add(&h, ":authority", "a");
    long n = h2_req_head_finish(&h, true);
    assert_true(h2_req_head_chunked(&h, true));
    bool end;
    parse(n, &end);
    assert_false(end);
    assert_true(head.chunked);

    start(&h, 16384);
    add(&h, ":method", "POST");
    add(&h, ":path", "/up");
    add(&h, ":authority", "a");
    add(&h, "content-length", "5");
    n = h2_req_head_finish(&h, true);
    assert_false(h2_req_head_chunked(&h, true));
    parse(n, &end);
    assert_false(head.chunked);
    assert_int_equal(head.content_length, 5);
}

static void test_malformed_heads(void **state)
{
    (void)state;
    h2_req_head_t h;
    start(&h, 16384); /* no :path */
    add(&h, ":method", "GET");
    assert_int_equal(h2_req_head_finish(&h, false), -H2_HEAD_BAD);
    start(&h, 16384); /* Host naming another authority (RFC 9113 8.3.1) */
    add(&h, ":method", "GET");
    add(&h, ":path", "/");
    add(&h, ":authority", "a.test");
    add(&h, "host", "b.test");
    assert_int_equal(h2_req_head_finish(&h, false), -H2_HEAD_BAD);
    start(&h, 16384); /* the same Host is fine, and written once */
    add(&h, ":method", "GET");
    add(&h, ":path", "/");
    add(&h, ":authority", "a.test");
    add(&h, "host", "a.test");
    bool end;
    long n = h2_req_head_finish(&h, false);
    assert_true(n > 0);
    parse(n, &end);
    assert_int_equal(head.n_headers, 1);
    start(&h, 16384); /* a pseudo-header twice, or one a request has not */
    add(&h, ":method", "GET");
    add(&h, ":method", "POST");
    assert_int_equal(h2_req_head_finish(&h, false), -H2_HEAD_BAD);
    start(&h, 16384);
    add(&h, ":status", "200");
    assert_int_equal(h2_req_head_finish(&h, false), -H2_HEAD_BAD);
}

static void test_limits(void **state)
{
    (void)state;
    h2_req_head_t h;
    start(&h, 100); /* RFC 9113 6.5.2's measure: name + value + 32 */
    add(&h, ":method", "GET");
    add(&h, ":path", "/");
    assert_int_equal(h.err, H2_HEAD_OK);
    add(&h, "x-long", "0123456789012345678901234567890123456789");
    assert_int_equal(h.err, H2_HEAD_TOO_LARGE);
    size_t before = h.decoded;
    add(&h, "x", "y"); /* still counted after the error (a bomb keeps growing) */
    assert_int_equal(h.decoded, before + 34);
    assert_int_equal(h2_req_head_finish(&h, false), -H2_HEAD_TOO_LARGE);
    char tiny[40];
    h2_req_head_init(&h, tiny, sizeof tiny, side, sizeof side, 16384); /* the buffer */
    add(&h, ":method", "GET");
    add(&h, ":path", "/");
    add(&h, ":authority", "a");
    add(&h, "x-long", "0123456789012345678901234567890123456789");
    assert_int_equal(h2_req_head_finish(&h, false), -H2_HEAD_TOO_LARGE);
}

static void test_response_header_list(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                               "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                               "Transfer-Encoding: chunked\r\nX-Thing: A\r\nSet-Cookie: a=1\r\n"
                               "Set-Cookie: b=2\r\n\r\n";
    http_parser_t p;
    http_parser_init_response(&p);
    int ev = 0;
    assert_true(http_parser_feed(&p, &head, resp, sizeof resp - 1, &ev) > 0);
    nghttp2_nv nv[16];
    char status[3], lower[256];
    long n = h2_head_response_nv(&head, nv, 16, status, lower, sizeof lower);
    assert_int_equal(n, 5);
    assert_memory_equal(nv[0].name, ":status", 7);
    assert_memory_equal(nv[0].value, "404", 3);
    assert_memory_equal(nv[1].name, "content-type", 12);
    assert_memory_equal(nv[2].name, "x-thing", 7);
    assert_memory_equal(nv[2].value, "A", 1);
    assert_memory_equal(nv[3].name, "set-cookie", 10);
    assert_memory_equal(nv[4].value, "b=2", 3);
    assert_int_equal(h2_head_response_nv(&head, nv, 3, status, lower, sizeof lower), -1);
    assert_int_equal(h2_head_response_nv(&head, nv, 16, status, lower, 10), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_host_and_fields_in_order),
        cmocka_unit_test(test_cookie_crumbs_are_joined),
        cmocka_unit_test(test_body_without_length_is_chunked),
        cmocka_unit_test(test_malformed_heads),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_response_header_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
