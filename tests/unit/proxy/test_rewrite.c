/* Head rewriting (proxy/rewrite.h). Input heads come from real bytes through
 * the request/response parser; every output is parsed back, so the tests see
 * the headers an upstream (or client) would see, and that the message framing
 * it reads is the one ficus forwards the body with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "http/parser.h"
#include "proxy/rewrite.h"

#define LIT(s) (s), (sizeof(s) - 1)

static http_head_t in_head;  /* the client's (or upstream's) head */
static http_head_t out_head; /* the rewritten head, parsed back */
static char out[8192];

static void parse_into(http_head_t *h, bool response, const char *data, size_t len)
{
    http_parser_t p;
    if (response)
        http_parser_init_response(&p);
    else
        http_parser_init_request(&p);
    int ev;
    long k = http_parser_feed(&p, h, data, len, &ev);
    if (k < 0 || !(ev & HTTP_EV_HEAD))
        fail_msg("not one valid head (%s): %.*s", k < 0 ? http_parser_error_reason(&p) : "short",
                 (int)len, data);
    assert_int_equal(k, (long)len);
}

static rewrite_request_t request(const char *raw)
{
    parse_into(&in_head, false, raw, strlen(raw));
    rewrite_request_t rw = {
        .head = &in_head,
        .target = "/up?x=1",
        .target_len = 7,
        .peer_ip = "192.0.2.7",
        .peer_ip_len = 9,
        .proto = "http",
        .request_id = "rid-1",
        .request_id_len = 5,
    };
    return rw;
}

static long rewrite_req(const rewrite_request_t *rw)
{
    long n = rewrite_request_head(rw, out, sizeof out);
    assert_true(n > 0);
    parse_into(&out_head, false, out, (size_t)n);
    return n;
}

static long rewrite_resp(const char *raw, rewrite_response_t *rw)
{
    parse_into(&in_head, true, raw, strlen(raw));
    rw->head = &in_head;
    long n = rewrite_response_head(rw, out, sizeof out);
    assert_true(n > 0);
    parse_into(&out_head, true, out, (size_t)n);
    return n;
}

static size_t count(const char *lname)
{
    size_t n = 0;
    for (uint32_t i = 0; i < out_head.n_headers; i++)
        n += (size_t)http_header_name_is(out_head.headers[i].name, out_head.headers[i].name_len,
                                         lname, strlen(lname));
    return n;
}

/* The one header named lname has value want. */
static void assert_one(const char *lname, const char *want)
{
    assert_int_equal(count(lname), 1);
    const http_header_t *h =
        http_header_find(out_head.headers, out_head.n_headers, lname, strlen(lname));
    if (h->value_len != strlen(want) || memcmp(h->value, want, h->value_len) != 0)
        fail_msg("%s: got \"%.*s\", want \"%s\"", lname, (int)h->value_len, h->value, want);
}

static void assert_absent(const char *lname)
{
    if (count(lname))
        fail_msg("%s should be gone:\n%s", lname, out);
}

/* ------------------------------------------------------------- requests */

static void test_request_line_and_basics(void **state)
{
    (void)state;
    rewrite_request_t rw = request("GET /orig HTTP/1.0\r\nHost: a.example\r\nAccept: */*\r\n\r\n");
    long n = rewrite_req(&rw);
    assert_memory_equal(out, "GET /up?x=1 HTTP/1.1\r\n", 22);
    assert_int_equal(out_head.http_minor, 1);
    assert_one("host", "a.example");
    assert_one("accept", "*/*");
    assert_one("x-forwarded-for", "192.0.2.7");
    assert_one("x-forwarded-proto", "http");
    assert_one("x-forwarded-host", "a.example");
    assert_one("x-request-id", "rid-1");
    assert_memory_equal(out + n - 4, "\r\n\r\n", 4);
}

static void test_hop_by_hop_removed(void **state)
{
    (void)state;
    rewrite_request_t rw = request("GET / HTTP/1.1\r\n"
                                   "Host: a\r\n"
                                   "Connection: keep-alive, X-Listed,x-other\r\n"
                                   "Keep-Alive: timeout=5\r\n"
                                   "Proxy-Connection: keep-alive\r\n"
                                   "TE: trailers\r\n"
                                   "Trailer: X-T\r\n"
                                   "Upgrade: websocket\r\n"
                                   "X-Listed: 1\r\n"
                                   "X-OTHER: 2\r\n"
                                   "X-Kept: 3\r\n"
                                   "\r\n");
    rewrite_req(&rw);
    assert_absent("connection");
    assert_absent("keep-alive");
    assert_absent("proxy-connection");
    assert_absent("te");
    assert_absent("trailer");
    assert_absent("upgrade");
    assert_absent("x-listed");
    assert_absent("x-other");
    assert_one("x-kept", "3");
    assert_one("host", "a");
}

static void test_is_hop_by_hop(void **state)
{
    (void)state;
    http_header_t conn = {"Connection", "close, X-Foo", 10, 12};
    assert_true(rewrite_is_hop_by_hop(LIT("Connection"), NULL));
    assert_true(rewrite_is_hop_by_hop(LIT("KEEP-ALIVE"), NULL));
    assert_true(rewrite_is_hop_by_hop(LIT("te"), NULL));
    assert_true(rewrite_is_hop_by_hop(LIT("x-foo"), &conn));
    assert_false(rewrite_is_hop_by_hop(LIT("x-foo"), NULL));
    assert_false(rewrite_is_hop_by_hop(LIT("x-fo"), &conn));
    assert_false(rewrite_is_hop_by_hop(LIT("tex"), NULL));
    assert_false(rewrite_is_hop_by_hop(LIT("content-type"), &conn));
}

/* A Connection header may not take the message framing away: the upstream
 * would read the forwarded body as a new request (request smuggling). The
 * request keeps its framing or is refused; it never loses it silently. */
static void test_connection_cannot_drop_framing(void **state)
{
    (void)state;
    rewrite_request_t rw = request("POST / HTTP/1.1\r\nHost: a\r\n"
                                   "Connection: content-length\r\nContent-Length: 5\r\n\r\n");
    long n = rewrite_request_head(&rw, out, sizeof out);
    if (n >= 0) {
        parse_into(&out_head, false, out, (size_t)n);
        assert_true(out_head.has_content_length);
        assert_int_equal(out_head.content_length, 5);
    }
    rw = request("POST / HTTP/1.1\r\nHost: a\r\n"
                 "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n");
    n = rewrite_request_head(&rw, out, sizeof out);
    if (n >= 0) {
        parse_into(&out_head, false, out, (size_t)n);
        assert_true(out_head.chunked);
    }
    /* Nor the Host the upstream routes on. */
    rw = request("GET / HTTP/1.1\r\nHost: a.example\r\nConnection: host\r\n\r\n");
    rewrite_req(&rw);
    assert_one("host", "a.example");
}

static void test_framing_kept(void **state)
{
    (void)state;
    rewrite_request_t rw =
        request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    rewrite_req(&rw);
    assert_one("transfer-encoding", "chunked");
    assert_true(out_head.chunked);
    rw = request("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
    rewrite_req(&rw);
    assert_one("content-length", "42");
    assert_int_equal(out_head.content_length, 42);
    assert_memory_equal(out, "PUT ", 4);
}

static void test_forwarded_for_appended(void **state)
{
    (void)state;
    rewrite_request_t rw =
        request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.1, 10.0.0.1\r\n\r\n");
    rewrite_req(&rw);
    assert_one("x-forwarded-for", "203.0.113.1, 10.0.0.1, 192.0.2.7");
    /* An empty one is not kept as a leading ", ". */
    rw = request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For:\r\n\r\n");
    rewrite_req(&rw);
    assert_one("x-forwarded-for", "192.0.2.7");
}

/* Several X-Forwarded-For lines are one comma-separated list (RFC 9110
 * 5.3): appending keeps every hop, in order. */
static void test_forwarded_for_several_lines(void **state)
{
    (void)state;
    rewrite_request_t rw = request("GET / HTTP/1.1\r\nHost: a\r\n"
                                   "X-Forwarded-For: 203.0.113.1\r\n"
                                   "X-Forwarded-For: 10.0.0.1\r\n\r\n");
    rewrite_req(&rw);
    assert_one("x-forwarded-for", "203.0.113.1, 10.0.0.1, 192.0.2.7");
}

static void test_forwarded_proto_host(void **state)
{
    (void)state;
    static const char raw[] = "GET / HTTP/1.1\r\nHost: a.example\r\n"
                              "X-Forwarded-Proto: https\r\nX-Forwarded-Host: spoof.example\r\n\r\n";
    /* Untrusted peer: ours replace the client's. */
    rewrite_request_t rw = request(raw);
    rewrite_req(&rw);
    assert_one("x-forwarded-proto", "http");
    assert_one("x-forwarded-host", "a.example");
    /* Trusted peer: the client's are kept, and not doubled. */
    rw = request(raw);
    rw.peer_trusted = true;
    rewrite_req(&rw);
    assert_one("x-forwarded-proto", "https");
    assert_one("x-forwarded-host", "spoof.example");
    /* Trusted peer that sent none: ours are added. */
    rw = request("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");
    rw.peer_trusted = true;
    rw.proto = "https";
    rewrite_req(&rw);
    assert_one("x-forwarded-proto", "https");
    assert_one("x-forwarded-host", "a.example");
}

static void test_identity_headers(void **state)
{
    (void)state;
    rewrite_request_t rw = request("GET / HTTP/1.1\r\nHost: a\r\n"
                                   "X-Request-Id: from-client\r\n"
                                   "x-api-key: secret\r\n"
                                   "X-Client-ID: spoofed\r\n"
                                   "X-REQUEST-ID: again\r\n\r\n");
    rw.request_id = "abc.DEF:123";
    rw.request_id_len = 11;
    rewrite_req(&rw);
    assert_one("x-request-id", "abc.DEF:123");
    assert_absent("x-api-key");
    assert_absent("x-client-id");
}

/* With a trace: the client's trace headers are replaced by ficus's, at
 * offsets where a later try can patch its span id in place; without one
 * they pass as they are. tracestate always passes. */
static void test_trace_headers(void **state)
{
    (void)state;
    static const char raw[] =
        "GET / HTTP/1.1\r\nHost: a\r\n"
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
        "tracestate: v=1\r\n"
        "x-datadog-trace-id: 11\r\nX-Datadog-Parent-Id: 22\r\n"
        "x-datadog-sampling-priority: 0\r\n\r\n";
    rewrite_request_t rw = request(raw);
    rewrite_req(&rw);
    assert_one("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_one("x-datadog-parent-id", "22");

    rw = request(raw);
    rewrite_trace_t t = {.w3c = true, .datadog = true, .sampled = true};
    uint8_t trace_id[16] = {[15] = 11}, span[8] = {[7] = 1};
    trace_format_traceparent(t.traceparent, trace_id, span, true);
    memcpy(t.dd_trace_id, "11", 2);
    t.dd_trace_id_len = 2;
    trace_dd_format_id(t.dd_parent_id, TRACE_DD_ID_MIN);
    rw.trace = &t;
    long n = rewrite_req(&rw);
    assert_one("traceparent", "00-0000000000000000000000000000000b-0000000000000001-01");
    assert_one("x-datadog-trace-id", "11");
    assert_one("x-datadog-parent-id", "1000000000000000000");
    assert_one("x-datadog-sampling-priority", "1");
    assert_one("tracestate", "v=1");
    /* The next try patches its span id where the rewrite said. */
    uint8_t next[8] = {0xab, 0xcd, 0, 0, 0, 0, 0, 0xef};
    trace_patch_span_id(out + t.traceparent_off, next);
    trace_dd_format_id(out + t.dd_parent_off, TRACE_DD_ID_MIN + 7);
    parse_into(&out_head, false, out, (size_t)n);
    assert_one("traceparent", "00-0000000000000000000000000000000b-abcd0000000000ef-01");
    assert_one("x-datadog-parent-id", "1000000000000000007");
}

/* Identity: the client's copies of what ficus vouches for never pass
 * (X-Api-Key, X-Client-Id, claim headers, Authorization when replaced),
 * the session cookie leaves Cookie with the others kept, and ficus's own
 * lines are added once. */
static void test_identity_vouched_for(void **state)
{
    (void)state;
    static const rewrite_name_t drop[] = {{"x-user-id", 9}, {"authorization", 13}};
    rewrite_request_t rw = request("GET / HTTP/1.1\r\nHost: a\r\n"
                                   "X-Api-Key: secret\r\n"
                                   "x-client-id: forged\r\n"
                                   "X-User-Id: admin\r\n"
                                   "X-User-Id-Not: 1\r\n"
                                   "Authorization: Bearer forged\r\n"
                                   "Cookie: a=1; sid=opaque; b=2\r\n"
                                   "Cookie: sid=again\r\n"
                                   "Cookie: sidx=3;  c = 4 \r\n\r\n");
    rw.drop = drop;
    rw.n_drop = 2;
    rw.drop_cookie = "sid";
    rw.drop_cookie_len = 3;
    rw.add = "X-Client-Id: ios-app\r\nX-User-Id: u-7\r\nAuthorization: Bearer a.b.c\r\n";
    rw.add_len = strlen(rw.add);
    rewrite_req(&rw);
    assert_absent("x-api-key");
    assert_one("x-client-id", "ios-app");
    assert_one("x-user-id", "u-7");
    assert_one("x-user-id-not", "1");
    assert_one("authorization", "Bearer a.b.c");
    assert_int_equal(count("cookie"), 2);
    assert_non_null(strstr(out, "Cookie: a=1; b=2\r\n"));
    assert_non_null(strstr(out, "Cookie: sidx=3; c = 4\r\n"));
    assert_null(strstr(out, "opaque"));
    assert_null(strstr(out, "again"));
}

static void test_route_headers(void **state)
{
    (void)state;
    char n1[] = "X-From", v1[] = "ficus";
    char n2[] = "X-Route", v2[] = "search v2";
    char r1[] = "x-internal", r2[] = "cookie";
    config_header_set_t set[] = {{n1, v1}, {n2, v2}};
    char *remove[] = {r1, r2};
    config_route_t route;
    memset(&route, 0, sizeof route);
    route.set_headers = set;
    route.n_set_headers = 2;
    route.remove_headers = remove;
    route.n_remove_headers = 2;

    rewrite_request_t rw = request("GET / HTTP/1.1\r\nHost: a\r\n"
                                   "X-Internal: 1\r\n"
                                   "x-from: client\r\n"
                                   "Cookie: a=b\r\n"
                                   "X-Internal-Not: 2\r\n\r\n");
    rw.route = &route;
    rewrite_req(&rw);
    assert_absent("x-internal");
    assert_absent("cookie");
    assert_one("x-internal-not", "2");
    assert_one("x-from", "ficus");
    assert_one("x-route", "search v2");
}

static void test_host(void **state)
{
    (void)state;
    /* Replaced when given. */
    rewrite_request_t rw = request("GET / HTTP/1.1\r\nHost: client.example\r\nX-A: 1\r\n\r\n");
    rw.host = "authority.example:8080";
    rw.host_len = strlen(rw.host);
    rewrite_req(&rw);
    assert_one("host", "authority.example:8080");
    /* Added when the client sent none (HTTP/1.0). */
    rw = request("GET / HTTP/1.0\r\n\r\n");
    rw.host = "h.example";
    rw.host_len = 9;
    rewrite_req(&rw);
    assert_one("host", "h.example");
    /* Kept when not given. */
    rw = request("GET / HTTP/1.1\r\nHost: keep.example\r\n\r\n");
    rewrite_req(&rw);
    assert_one("host", "keep.example");
}

/* Every cap short of the full length is FE_TOOBIG and writes nothing past
 * cap; the full length writes the same bytes as a large buffer. */
static void test_request_cap(void **state)
{
    (void)state;
    char n1[] = "X-From", v1[] = "ficus";
    config_header_set_t set[] = {{n1, v1}};
    config_route_t route;
    memset(&route, 0, sizeof route);
    route.set_headers = set;
    route.n_set_headers = 1;
    rewrite_request_t rw = request("POST /p HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n"
                                   "X-Forwarded-For: 1.1.1.1\r\nContent-Length: 3\r\n\r\n");
    rw.route = &route;
    char ref[1024];
    long full = rewrite_request_head(&rw, ref, sizeof ref);
    assert_true(full > 0);
    char *buf = malloc((size_t)full + 16);
    assert_non_null(buf);
    for (size_t cap = 0; cap <= (size_t)full; cap++) {
        memset(buf, '#', (size_t)full + 16);
        long n = rewrite_request_head(&rw, buf, cap);
        for (size_t i = cap; i < (size_t)full + 16; i++)
            assert_int_equal(buf[i], '#');
        if (cap < (size_t)full) {
            assert_int_equal(n, FE_TOOBIG);
        } else {
            assert_int_equal(n, full);
            assert_memory_equal(buf, ref, (size_t)full);
        }
    }
    free(buf);
}

static void test_request_id_sane(void **state)
{
    (void)state;
    char max[REQUEST_ID_MAX_BYTES + 1];
    memset(max, 'a', sizeof max);
    assert_true(rewrite_request_id_sane(LIT("a")));
    assert_true(rewrite_request_id_sane(LIT("Az09._:-")));
    assert_true(rewrite_request_id_sane(LIT("4bf92f3577b34da6a3ce929d0e0e4736")));
    assert_true(rewrite_request_id_sane(max, REQUEST_ID_MAX_BYTES));
    assert_false(rewrite_request_id_sane(max, REQUEST_ID_MAX_BYTES + 1));
    assert_false(rewrite_request_id_sane("", 0));
    assert_false(rewrite_request_id_sane(LIT("a b")));
    assert_false(rewrite_request_id_sane(LIT("a/b")));
    assert_false(rewrite_request_id_sane(LIT("a\"b")));
    assert_false(rewrite_request_id_sane(LIT("a\r\nX-Evil: 1")));
    assert_false(rewrite_request_id_sane(LIT("a\0b")));
    assert_false(rewrite_request_id_sane(LIT("caf\xc3\xa9")));
    assert_false(rewrite_request_id_sane(LIT("a,b")));
    /* Only len bytes are looked at. */
    assert_true(rewrite_request_id_sane("ab cd", 2));
}

/* ------------------------------------------------------------ responses */

static const rewrite_response_t resp_defaults = {
    .request_id = "rid-9",
    .request_id_len = 5,
    .keep_alive = true,
};

static void test_response_status_line(void **state)
{
    (void)state;
    rewrite_response_t rw = resp_defaults;
    long n = rewrite_resp("HTTP/1.0 404 Nothing Here At All\r\nContent-Length: 0\r\n\r\n", &rw);
    assert_memory_equal(out, "HTTP/1.1 404 Not Found\r\n", 24);
    assert_int_equal(out_head.status, 404);
    assert_one("content-length", "0");
    assert_memory_equal(out + n - 4, "\r\n\r\n", 4);
    rw = resp_defaults;
    rewrite_resp("HTTP/1.1 299 Whatever\r\nContent-Length: 0\r\n\r\n", &rw);
    assert_memory_equal(out, "HTTP/1.1 299 Success\r\n", 22);
}

static void test_response_hop_by_hop_and_id(void **state)
{
    (void)state;
    rewrite_response_t rw = resp_defaults;
    rewrite_resp("HTTP/1.1 200 OK\r\n"
                 "Connection: keep-alive, X-Secret\r\n"
                 "Keep-Alive: timeout=5\r\n"
                 "Proxy-Connection: close\r\n"
                 "Trailer: X-T\r\n"
                 "Upgrade: h2c\r\n"
                 "X-Secret: s\r\n"
                 "X-Request-Id: upstream-id\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: 3\r\n\r\n",
                 &rw);
    assert_absent("connection");
    assert_absent("keep-alive");
    assert_absent("proxy-connection");
    assert_absent("trailer");
    assert_absent("upgrade");
    assert_absent("x-secret");
    assert_one("x-request-id", "rid-9");
    assert_one("content-type", "text/plain");
    assert_one("content-length", "3");
}

static void test_response_body_modes(void **state)
{
    (void)state;
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    rewrite_response_t rw = resp_defaults;
    rw.body = REWRITE_BODY_AS_IS;
    rewrite_resp(chunked, &rw);
    assert_one("transfer-encoding", "chunked");
    assert_true(out_head.chunked);

    rw = resp_defaults;
    rw.body = REWRITE_BODY_DECHUNK;
    rw.keep_alive = false;
    rewrite_resp(chunked, &rw);
    assert_absent("transfer-encoding");
    assert_one("connection", "close");

    rw = resp_defaults;
    rw.body = REWRITE_BODY_UNTIL_CLOSE;
    rw.keep_alive = false;
    rewrite_resp("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", &rw);
    assert_absent("transfer-encoding");
    assert_one("connection", "close");
}

static void test_response_connection(void **state)
{
    (void)state;
    static const char raw[] = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    rewrite_response_t rw = resp_defaults;
    rewrite_resp(raw, &rw);
    /* The upstream's close is its own business: the client stays. */
    assert_absent("connection");
    assert_true(out_head.keep_alive);

    rw = resp_defaults;
    rw.keep_alive = false;
    rewrite_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &rw);
    assert_one("connection", "close");
    assert_false(out_head.keep_alive);

    rw = resp_defaults;
    rw.client_http10 = true;
    rewrite_resp(raw, &rw);
    assert_one("connection", "keep-alive");

    /* Closing wins over keep-alive for an HTTP/1.0 client. */
    rw = resp_defaults;
    rw.client_http10 = true;
    rw.keep_alive = false;
    rewrite_resp(raw, &rw);
    assert_one("connection", "close");
}

static void test_response_cap(void **state)
{
    (void)state;
    rewrite_response_t rw = resp_defaults;
    rewrite_resp("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
                 &rw);
    rw.keep_alive = false;
    char ref[512];
    long full = rewrite_response_head(&rw, ref, sizeof ref);
    assert_true(full > 0);
    char *buf = malloc((size_t)full + 16);
    assert_non_null(buf);
    for (size_t cap = 0; cap <= (size_t)full; cap++) {
        memset(buf, '#', (size_t)full + 16);
        long n = rewrite_response_head(&rw, buf, cap);
        for (size_t i = cap; i < (size_t)full + 16; i++)
            assert_int_equal(buf[i], '#');
        assert_int_equal(n, cap < (size_t)full ? FE_TOOBIG : full);
    }
    assert_memory_equal(buf, ref, (size_t)full);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_and_basics),
        cmocka_unit_test(test_hop_by_hop_removed),
        cmocka_unit_test(test_trace_headers),
        cmocka_unit_test(test_is_hop_by_hop),
        cmocka_unit_test(test_connection_cannot_drop_framing),
        cmocka_unit_test(test_identity_vouched_for),
        cmocka_unit_test(test_framing_kept),
        cmocka_unit_test(test_forwarded_for_appended),
        cmocka_unit_test(test_forwarded_for_several_lines),
        cmocka_unit_test(test_forwarded_proto_host),
        cmocka_unit_test(test_identity_headers),
        cmocka_unit_test(test_route_headers),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_request_cap),
        cmocka_unit_test(test_request_id_sane),
        cmocka_unit_test(test_response_status_line),
        cmocka_unit_test(test_response_hop_by_hop_and_id),
        cmocka_unit_test(test_response_body_modes),
        cmocka_unit_test(test_response_connection),
        cmocka_unit_test(test_response_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
