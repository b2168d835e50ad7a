/* The llhttp wrapper (http/parser.h): head spans, the HEAD/END events and the
 * bytes each feed consumes (what client_conn and proxy.c rely on to forward
 * bodies verbatim and to find pipelined requests), strict-mode refusals, the
 * de-chunk sink and http_head_end. */
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

#define LIT(s) (s), (sizeof(s) - 1)

/* http_head_t holds MAX_REQUEST_HEADERS spans: keep it off the stack. */
static http_head_t head;

typedef struct fed {
    long k;
    int ev;
} fed_t;

static fed_t feed(http_parser_t *p, const char *data, size_t len)
{
    fed_t f = {0, -1};
    f.k = http_parser_feed(p, &head, data, len, &f.ev);
    return f;
}

static void assert_span(const char *p, size_t len, const char *want)
{
    assert_non_null(p);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(p, want, len);
}

static const http_header_t *find(const char *lname)
{
    return http_header_find(head.headers, head.n_headers, lname, strlen(lname));
}

static void assert_header(const char *lname, const char *want)
{
    const http_header_t *h = find(lname);
    assert_non_null(h);
    assert_span(h->value, h->value_len, want);
}

/* Feeds a whole request head in one call; returns the bytes consumed. */
static long parse_request(http_parser_t *p, const char *data, size_t len)
{
    http_parser_init_request(p);
    fed_t f = feed(p, data, len);
    assert_true(f.k >= 0);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    return f.k;
}

/* Expects data to be refused with `err`. */
static void assert_refused(const char *data, size_t len, http_err_t err)
{
    http_parser_t p;
    http_parser_init_request(&p);
    size_t off = 0;
    /* A refusal may come with the head or in the body: feed until it does. */
    for (int i = 0; i < 8 && off <= len; i++) {
        fed_t f = feed(&p, data + off, len - off);
        if (f.k < 0) {
            assert_int_equal(f.k, FE_PARSE);
            assert_int_equal(http_parser_error(&p), err);
            assert_non_null(http_parser_error_reason(&p));
            return;
        }
        off += (size_t)f.k;
        if (f.k == 0 && f.ev == 0)
            break;
    }
    fail_msg("accepted: %.*s", (int)len, data);
}

/* ---------------------------------------------------------------- heads */

static void test_get_spans(void **state)
{
    (void)state;
    static const char req[] = "GET /search?q=a%20b HTTP/1.1\r\n"
                              "Host: api.example.com\r\n"
                              "X-Trail: v v  \t \r\n"
                              "Accept:   */*\r\n"
                              "X-Empty:\r\n"
                              "X-Empty-Ws: \t \r\n"
                              "\r\n";
    http_parser_t p;
    long k = parse_request(&p, LIT(req));
    assert_int_equal(k, sizeof req - 1);
    assert_span(head.method, head.method_len, "GET");
    assert_span(head.target, head.target_len, "/search?q=a%20b");
    assert_int_equal(head.http_major, 1);
    assert_int_equal(head.http_minor, 1);
    assert_true(head.keep_alive);
    assert_false(head.chunked);
    assert_false(head.has_content_length);
    assert_false(head.upgrade);
    assert_int_equal(head.n_headers, 5);
    assert_span(head.headers[0].name, head.headers[0].name_len, "Host");
    assert_header("host", "api.example.com");
    /* Trailing OWS is trimmed; inner spaces stay. */
    assert_header("x-trail", "v v");
    assert_header("accept", "*/*");
    assert_header("x-empty", "");
    assert_header("x-empty-ws", "");
    /* Spans point into the fed bytes, not into a copy. */
    for (uint32_t i = 0; i < head.n_headers; i++) {
        const http_header_t *h = &head.headers[i];
        assert_true(h->name >= req && h->name + h->name_len <= req + sizeof req - 1);
        assert_true(h->value >= req && h->value + h->value_len <= req + sizeof req - 1);
    }
    assert_false(http_parser_in_head(&p));
}

static void test_keep_alive_by_version(void **state)
{
    (void)state;
    http_parser_t p;
    parse_request(&p, LIT("GET / HTTP/1.0\r\n\r\n"));
    assert_false(head.keep_alive);
    assert_int_equal(head.http_minor, 0);
    parse_request(&p, LIT("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert_true(head.keep_alive);
    parse_request(&p, LIT("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert_false(head.keep_alive);
}

static void test_framing_fields(void **state)
{
    (void)state;
    http_parser_t p;
    parse_request(&p, LIT("POST / HTTP/1.1\r\nContent-Length: 1234\r\n\r\n"));
    assert_true(head.has_content_length);
    assert_int_equal(head.content_length, 1234);
    assert_false(head.chunked);
    parse_request(&p, LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_true(head.chunked);
    assert_false(head.has_content_length);
}

/* The head arrives in two reads split at every byte: the first piece is fed
 * as client_conn does (no head yet), then http_head_end finds the end from
 * where the last scan stopped and the whole head is fed again. */
static void test_head_split_every_byte(void **state)
{
    (void)state;
    static const char req[] = "POST /a/b?c=d HTTP/1.1\r\n"
                              "Host: x.example\r\n"
                              "Content-Length: 3\r\n"
                              "X-Long: 0123456789abcdef  \r\n"
                              "\r\n";
    const size_t len = sizeof req - 1;
    for (size_t cut = 1; cut < len; cut++) {
        /* Exact-size copies: ASan catches a read past either piece. */
        char *first = malloc(cut);
        char *whole = malloc(len);
        assert_non_null(first);
        assert_non_null(whole);
        memcpy(first, req, cut);
        memcpy(whole, req, len);

        http_parser_t p;
        http_parser_init_request(&p);
        assert_int_equal(http_head_end(first, cut, 0), 0);
        fed_t f = feed(&p, first, cut);
        assert_int_equal(f.k, (long)cut);
        assert_false(f.ev & HTTP_EV_HEAD);
        assert_true(http_parser_in_head(&p));
        http_parser_reset(&p);

        assert_int_equal(http_head_end(whole, len, cut), len);
        f = feed(&p, whole, len);
        assert_int_equal(f.k, (long)len);
        assert_int_equal(f.ev, HTTP_EV_HEAD);
        assert_span(head.method, head.method_len, "POST");
        assert_true(head.method == whole);
        assert_span(head.target, head.target_len, "/a/b?c=d");
        assert_int_equal(head.n_headers, 3);
        assert_header("host", "x.example");
        assert_header("x-long", "0123456789abcdef");
        assert_int_equal(head.content_length, 3);
        free(first);
        free(whole);
    }
}

/* ------------------------------------------------------ events, consumed */

static void test_no_body_events(void **state)
{
    (void)state;
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    http_parser_t p;
    http_parser_init_request(&p);
    fed_t f = feed(&p, LIT(req));
    assert_int_equal(f.k, sizeof req - 1);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    /* The end of a body-less message is known without another byte. */
    f = feed(&p, req + f.k, 0);
    assert_int_equal(f.k, 0);
    assert_int_equal(f.ev, HTTP_EV_END);
    assert_int_equal(p.body_bytes, 0);
}

static void test_content_length_body(void **state)
{
    (void)state;
    static const char msg[] = "POST /u HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /next";
    const size_t head_len = sizeof "POST /u HTTP/1.1\r\nContent-Length: 5\r\n\r\n" - 1;
    http_parser_t p;
    http_parser_init_request(&p);
    fed_t f = feed(&p, LIT(msg));
    assert_int_equal(f.k, head_len);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    f = feed(&p, msg + head_len, 3); /* "hel" */
    assert_int_equal(f.k, 3);
    assert_int_equal(f.ev, 0);
    f = feed(&p, msg + head_len + 3, sizeof msg - 1 - head_len - 3); /* "lo" + next */
    assert_int_equal(f.k, 2);
    assert_int_equal(f.ev, HTTP_EV_END);
    assert_int_equal(p.body_bytes, 5);
}

static void test_chunked_body_counts_framing(void **state)
{
    (void)state;
    static const char hd[] = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char body[] = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    static const char next[] = "GET /next HTTP/1.1\r\n\r\n";
    char msg[256];
    int n = snprintf(msg, sizeof msg, "%s%s%s", hd, body, next);
    assert_true(n > 0 && (size_t)n < sizeof msg);

    /* In one piece: the raw body, framing included, then the message ends. */
    http_parser_t p;
    http_parser_init_request(&p);
    fed_t f = feed(&p, msg, (size_t)n);
    assert_int_equal(f.k, sizeof hd - 1);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_true(head.chunked);
    f = feed(&p, msg + sizeof hd - 1, (size_t)n - (sizeof hd - 1));
    assert_int_equal(f.k, sizeof body - 1);
    assert_int_equal(f.ev, HTTP_EV_END);
    assert_int_equal(p.body_bytes, 11);

    /* Byte by byte: every byte is consumed and END comes with the last one. */
    http_parser_init_request(&p);
    f = feed(&p, hd, sizeof hd - 1);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    for (size_t i = 0; i < sizeof body - 1; i++) {
        f = feed(&p, body + i, 1);
        assert_int_equal(f.k, 1);
        assert_int_equal(f.ev, i == sizeof body - 2 ? HTTP_EV_END : 0);
    }
}

static void test_pipelined_requests(void **state)
{
    (void)state;
    static const char first[] = "POST /1 HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
    static const char second[] = "GET /2 HTTP/1.1\r\nHost: b\r\n\r\n";
    static const char third[] = "GET /3 HTTP/1.1\r\n\r\n";
    char msg[256];
    int n = snprintf(msg, sizeof msg, "%s%s%s", first, second, third);
    assert_true(n > 0);
    const size_t first_head = sizeof first - 1 - 4;

    http_parser_t p;
    http_parser_init_request(&p);
    fed_t f = feed(&p, msg, (size_t)n);
    assert_int_equal(f.k, first_head);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    size_t off = (size_t)f.k;
    f = feed(&p, msg + off, (size_t)n - off);
    assert_int_equal(f.k, 4); /* stops exactly at the first message's end */
    assert_int_equal(f.ev, HTTP_EV_END);
    off += (size_t)f.k;
    assert_int_equal(off, sizeof first - 1);

    /* The same parser goes on with the next message. */
    f = feed(&p, msg + off, (size_t)n - off);
    assert_int_equal(f.k, sizeof second - 1);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_span(head.target, head.target_len, "/2");
    assert_int_equal(head.n_headers, 1);
    off += (size_t)f.k;
    f = feed(&p, msg + off, (size_t)n - off);
    assert_int_equal(f.k, 0);
    assert_int_equal(f.ev, HTTP_EV_END);

    /* And after a reset between messages, too. */
    http_parser_reset(&p);
    f = feed(&p, msg + off, (size_t)n - off);
    assert_int_equal(f.k, sizeof third - 1);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_span(head.target, head.target_len, "/3");
    assert_int_equal(head.n_headers, 0); /* nothing left from /2 */
}

/* ------------------------------------------------------------ responses */

/* A body-less message ends with its head: END comes with HEAD, or from a
 * feed of nothing right after it (what proxy.c does for an interim 1xx). */
static void expect_end_without_body(http_parser_t *p, fed_t head_fed, const char *after)
{
    if (head_fed.ev & HTTP_EV_END)
        return;
    fed_t f = feed(p, after, 0);
    assert_int_equal(f.k, 0);
    assert_int_equal(f.ev, HTTP_EV_END);
}

static void test_response_to_head(void **state)
{
    (void)state;
    static const char r1[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    static const char r2[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
    char msg[160];
    int n = snprintf(msg, sizeof msg, "%s%s", r1, r2);
    http_parser_t p;
    http_parser_init_response(&p);
    http_parser_expect_no_body(&p, true);
    fed_t f = feed(&p, msg, (size_t)n);
    assert_int_equal(f.k, sizeof r1 - 1);
    assert_int_equal(f.ev, HTTP_EV_HEAD | HTTP_EV_END);
    assert_int_equal(head.status, 200);
    assert_int_equal(head.content_length, 10);

    http_parser_reset(&p);
    f = feed(&p, msg + sizeof r1 - 1, (size_t)n - (sizeof r1 - 1));
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_int_equal(head.status, 404);
    f = feed(&p, msg + (size_t)n - 2, 2);
    assert_int_equal(f.k, 2);
    assert_int_equal(f.ev, HTTP_EV_END);
}

static void test_response_204(void **state)
{
    (void)state;
    static const char r[] = "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n";
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT(r));
    assert_int_equal(f.k, sizeof r - 1);
    assert_true(f.ev & HTTP_EV_HEAD);
    assert_int_equal(head.status, 204);
    assert_false(http_parser_body_until_eof(&p));
    expect_end_without_body(&p, f, r + f.k);
}

/* RFC 9112 6.3: a 1xx, 204 or 304 response ends with its head whatever its
 * framing headers say. A 304 carrying the Content-Length of the selected
 * representation is common; reading a body after it desyncs the upstream
 * connection (the next response's bytes are taken as this one's body). */
static void test_response_304_with_content_length(void **state)
{
    (void)state;
    static const char r[] = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"
                            "HTTP/1.1 200 OK\r\n\r\n";
    const size_t head_len = sizeof "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n" - 1;
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT(r));
    assert_int_equal(f.k, head_len);
    assert_true(f.ev & HTTP_EV_HEAD);
    /* No byte of the next response is taken as body. */
    expect_end_without_body(&p, f, r + head_len);
    f = feed(&p, r + head_len, sizeof r - 1 - head_len);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_int_equal(head.status, 200);
}

static void test_response_204_with_content_length(void **state)
{
    (void)state;
    static const char r[] = "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT(r));
    assert_int_equal(f.k, sizeof r - 1);
    assert_true(f.ev & HTTP_EV_HEAD);
    expect_end_without_body(&p, f, r + f.k);
}

static void test_response_interim_then_final(void **state)
{
    (void)state;
    static const char r[] =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    const size_t interim = sizeof "HTTP/1.1 100 Continue\r\n\r\n" - 1;
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT(r));
    assert_int_equal(f.k, interim);
    assert_true(f.ev & HTTP_EV_HEAD);
    assert_int_equal(head.status, 100);
    expect_end_without_body(&p, f, r + interim);
    f = feed(&p, r + interim, sizeof r - 1 - interim);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_int_equal(head.status, 200);
    f = feed(&p, r + sizeof r - 2, 1);
    assert_int_equal(f.k, 1);
    assert_int_equal(f.ev, HTTP_EV_END);
}

static void test_response_close_delimited(void **state)
{
    (void)state;
    static const char r[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT(r));
    assert_int_equal(f.k, sizeof r - 1);
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_true(http_parser_body_until_eof(&p));
    assert_false(head.keep_alive);
    f = feed(&p, LIT("abc"));
    assert_int_equal(f.k, 3);
    assert_int_equal(f.ev, 0);
    f = feed(&p, LIT("defg"));
    assert_int_equal(f.k, 4);
    assert_int_equal(f.ev, 0);
    assert_int_equal(p.body_bytes, 7);
    assert_int_equal(http_parser_finish(&p), 0);
}

static void test_finish_cut_short(void **state)
{
    (void)state;
    http_parser_t p;
    /* Content-Length body cut short. */
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"));
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_false(http_parser_body_until_eof(&p));
    f = feed(&p, LIT("abc"));
    assert_int_equal(f.k, 3);
    assert_true(http_parser_finish(&p) < 0);
    /* Chunked body cut short. */
    http_parser_init_response(&p);
    f = feed(&p, LIT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    f = feed(&p, LIT("5\r\nab"));
    assert_int_equal(f.k, 5);
    assert_true(http_parser_finish(&p) < 0);
    /* A head cut short. */
    http_parser_init_response(&p);
    f = feed(&p, LIT("HTTP/1.1 200 OK\r\nX-A"));
    assert_int_equal(f.ev, 0);
    assert_true(http_parser_finish(&p) < 0);
}

/* ------------------------------------------------------------- refusals */

static void test_refuse_cl_and_te(void **state)
{
    (void)state;
    assert_refused(LIT("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                       "Content-Length: 5\r\n\r\n0\r\n\r\n"),
                   HTTP_ERR_BAD);
}

static void test_refuse_two_content_lengths(void **state)
{
    (void)state;
    assert_refused(LIT("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
                   HTTP_ERR_BAD);
    /* Equal values are refused too: no guessing which one an upstream reads. */
    assert_refused(LIT("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello"), HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello"), HTTP_ERR_BAD);
}

static void test_refuse_bad_transfer_encoding(void **state)
{
    (void)state;
    /* chunked must be the last coding of a request. */
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\nabc"),
                   HTTP_ERR_NOT_IMPLEMENTED);
    /* Only "chunked", alone, in one field: everything else is refused. */
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\n"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding:  \t \r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: identity, chunked\r\n\r\n"),
                   HTTP_ERR_NOT_IMPLEMENTED);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
                   HTTP_ERR_NOT_IMPLEMENTED);
    assert_refused(
        LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n"),
        HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("CONNECT a:80 HTTP/1.1\r\nHost: a:80\r\n\r\n"), HTTP_ERR_NOT_IMPLEMENTED);
}

/* A request whose framing is refused is refused with its head: HTTP_EV_HEAD
 * tells client_conn to route the request. llhttp completes these heads
 * (chunked false, no Content-Length: a body-less request to the eye) and
 * refuses them only on the next feed, after the head went upstream. */
static void test_refuse_framing_before_head(void **state)
{
    (void)state;
    static const char *const heads[] = {
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\t\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        http_parser_t p;
        http_parser_init_request(&p);
        fed_t f = feed(&p, heads[i], strlen(heads[i]));
        if (f.k >= 0) {
            /* Accepted: then as a chunked body, refused nowhere later. */
            assert_int_equal(f.ev, HTTP_EV_HEAD);
            if (!head.chunked)
                fail_msg("HEAD without framing for: %s", heads[i]);
            continue;
        }
        assert_true(http_parser_error(&p) == HTTP_ERR_BAD ||
                    http_parser_error(&p) == HTTP_ERR_NOT_IMPLEMENTED);
    }
}

/* chunked is applied once (RFC 9112 6.1). llhttp misses the first
 * "chunked\t" (the tab) and honours the second; rewrite trims the tab and
 * sends "chunked" twice, which ficus's own parser then refuses. */
static void test_refuse_chunked_twice(void **state)
{
    (void)state;
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\t\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                       "0\r\n\r\n"),
                   HTTP_ERR_BAD);
}

/* ficus speaks HTTP/1.0 and 1.1 to clients (spec section 3). llhttp takes
 * an HTTP/0.9 request line (no version, headers still parsed) and
 * HTTP/2.0; both would go upstream relabelled HTTP/1.1. */
static void test_refuse_versions_other_than_1x(void **state)
{
    (void)state;
    assert_refused(LIT("GET /\r\nHost: a\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("POST /\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), HTTP_ERR_BAD);
}

static void test_refuse_invalid_chunk(void **state)
{
    (void)state;
    static const char hd[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char *const bodies[] = {
        "zz\r\nhello\r\n0\r\n\r\n", /* not hex */
        "5\r\nhelloX\r\n0\r\n\r\n", /* data longer than the size */
        "ffffffffffffffffff\r\n",   /* size overflow */
        "-5\r\nhello\r\n0\r\n\r\n", /* sign */
        "5\nhello\r\n0\r\n\r\n",    /* bare LF after the size */
        "5\r\nhello\n0\r\n\r\n",    /* bare LF after the data */
        " 5\r\nhello\r\n0\r\n\r\n", /* leading space */
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char msg[160];
        int n = snprintf(msg, sizeof msg, "%s%s", hd, bodies[i]);
        assert_refused(msg, (size_t)n, HTTP_ERR_BAD);
    }
}

static void test_refuse_bare_lf_in_header_line(void **state)
{
    (void)state;
    assert_refused(LIT("GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\nHost: x\n\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"), HTTP_ERR_BAD);
}

/* Spec section 3: bare LF is refused. llhttp 8.1 accepts a bare LF after the
 * request line and as the head's final blank line; the wrapper must catch it. */
static void test_refuse_bare_lf_after_request_line(void **state)
{
    (void)state;
    assert_refused(LIT("GET / HTTP/1.1\nHost: x\r\n\r\n"), HTTP_ERR_BAD);
}

static void test_refuse_bare_lf_ending_head(void **state)
{
    (void)state;
    assert_refused(LIT("GET / HTTP/1.1\r\nHost: x\r\n\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\r\n\n"), HTTP_ERR_BAD);
}

static void test_refuse_obs_fold(void **state)
{
    (void)state;
    assert_refused(LIT("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\nHost: x\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\r\nX-A: a  \r\n  b\r\n\r\n"), HTTP_ERR_BAD);
}

/* A fold whose first line has an empty value: the continuation must not
 * become the value (Transfer-Encoding:\r\n chunked would be honoured). */
static void test_refuse_obs_fold_after_empty_value(void **state)
{
    (void)state;
    assert_refused(LIT("GET / HTTP/1.1\r\nX-A:\r\n b\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
                   HTTP_ERR_BAD);
    assert_refused(LIT("POST / HTTP/1.1\r\nContent-Length: \r\n 5\r\n\r\nhello"), HTTP_ERR_BAD);
}

static void test_refuse_nul_and_controls(void **state)
{
    (void)state;
    assert_refused(LIT("GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\r\nX-A: a\x01z\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\r\nX-\0A: a\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET /\0 HTTP/1.1\r\n\r\n"), HTTP_ERR_BAD);
    assert_refused(LIT("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), HTTP_ERR_BAD);
}

/* field-name is a token of at least one character (RFC 9110 5.1); llhttp
 * 8.1 lets an empty one through, and the upstream would get ": a". */
static void test_refuse_empty_header_name(void **state)
{
    (void)state;
    assert_refused(LIT("GET / HTTP/1.1\r\n: a\r\nHost: x\r\n\r\n"), HTTP_ERR_BAD);
}

static size_t build_head(char *out, size_t cap, unsigned n_headers)
{
    size_t len = (size_t)snprintf(out, cap, "GET / HTTP/1.1\r\n");
    for (unsigned i = 0; i < n_headers; i++)
        len += (size_t)snprintf(out + len, cap - len, "X-H%u: %u\r\n", i, i);
    len += (size_t)snprintf(out + len, cap - len, "\r\n");
    assert_true(len < cap);
    return len;
}

static void test_header_count_limit(void **state)
{
    (void)state;
    static char msg[MAX_REQUEST_HEADERS * 32];
    size_t len = build_head(msg, sizeof msg, MAX_REQUEST_HEADERS);
    http_parser_t p;
    parse_request(&p, msg, len);
    assert_int_equal(head.n_headers, MAX_REQUEST_HEADERS);
    const http_header_t *last = &head.headers[MAX_REQUEST_HEADERS - 1];
    char want[16];
    snprintf(want, sizeof want, "%u", MAX_REQUEST_HEADERS - 1);
    assert_span(last->value, last->value_len, want);

    len = build_head(msg, sizeof msg, MAX_REQUEST_HEADERS + 1);
    assert_refused(msg, len, HTTP_ERR_TOO_MANY);
}

static void test_reset_after_error(void **state)
{
    (void)state;
    http_parser_t p;
    http_parser_init_request(&p);
    fed_t f = feed(&p, LIT("GET / HTTP/1.1\r\nX-A: a\0\r\n\r\n"));
    assert_true(f.k < 0);
    assert_int_equal(http_parser_error(&p), HTTP_ERR_BAD);
    http_parser_reset(&p);
    assert_int_equal(http_parser_error(&p), HTTP_ERR_NONE);
    f = feed(&p, LIT("GET /ok HTTP/1.1\r\n\r\n"));
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    assert_span(head.target, head.target_len, "/ok");
}

/* Trailer fields are not the head: the caller's head is left as it was
 * (it may hold another message's head by then, and a full one must not turn
 * a valid body into HTTP_ERR_TOO_MANY). */
static void test_trailers_leave_head_alone(void **state)
{
    (void)state;
    static char msg[MAX_REQUEST_HEADERS * 32];
    size_t len =
        (size_t)snprintf(msg, sizeof msg, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n");
    for (unsigned i = 1; i < MAX_REQUEST_HEADERS; i++)
        len += (size_t)snprintf(msg + len, sizeof msg - len, "X-H%u: %u\r\n", i, i);
    len += (size_t)snprintf(msg + len, sizeof msg - len, "\r\n");
    http_parser_t p;
    parse_request(&p, msg, len);
    assert_int_equal(head.n_headers, MAX_REQUEST_HEADERS);
    fed_t f = feed(&p, LIT("1\r\nx\r\n0\r\nX-Trailer: t\r\n\r\n"));
    assert_true(f.k > 0);
    assert_int_equal(f.ev, HTTP_EV_END);
    assert_int_equal(head.n_headers, MAX_REQUEST_HEADERS);

    parse_request(&p, LIT("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    f = feed(&p, LIT("0\r\nX-Trailer: t\r\n\r\n"));
    assert_int_equal(f.ev, HTTP_EV_END);
    assert_int_equal(head.n_headers, 1);
}

/* ---------------------------------------------------------------- sink */

static void test_sink_dechunks(void **state)
{
    (void)state;
    static const char hd[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char body[] = "3\r\nabc\r\n1;x=\"y\"\r\nd\r\nA\r\n0123456789\r\n0\r\n\r\n";
    /* Whole, and byte by byte: the same decoded bytes. */
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        char sink[sizeof body + 1];
        memset(sink, '#', sizeof sink);
        http_parser_t p;
        http_parser_init_response(&p);
        fed_t f = feed(&p, LIT(hd));
        assert_int_equal(f.ev, HTTP_EV_HEAD);
        http_parser_set_sink(&p, sink, sizeof body - 1);
        size_t step = bytewise ? 1 : sizeof body - 1;
        int ev = 0;
        for (size_t i = 0; i < sizeof body - 1; i += step) {
            f = feed(&p, body + i, step);
            assert_int_equal(f.k, (long)step);
            ev |= f.ev;
        }
        assert_int_equal(ev, HTTP_EV_END);
        assert_int_equal(p.sink_len, 14);
        assert_memory_equal(sink, "abcd0123456789", 14);
        assert_int_equal(p.body_bytes, 14);
        assert_int_equal(sink[sizeof body - 1], '#');
    }
}

/* Kept trailers: decoded bodies leave them for the caller, re-framed ones
 * carry them after the last chunk; whole or a byte at a time, and a section
 * larger than the buffer is refused. */
static void test_trailers_kept(void **state)
{
    (void)state;
    static const char hd[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char body[] = "3\r\nabc\r\n0\r\ngrpc-status: 0\r\nX-B:  two \r\n\r\n";
    static const char fields[] = "grpc-status: 0\r\nX-B:  two \r\n";
    for (int reframe = 0; reframe < 2; reframe++)
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            char sink[128], kept[64];
            http_parser_t p;
            http_parser_init_response(&p);
            fed_t f = feed(&p, LIT(hd));
            assert_int_equal(f.ev, HTTP_EV_HEAD);
            http_parser_keep_trailers(&p, kept, sizeof kept);
            http_parser_set_sink(&p, sink, sizeof sink);
            http_parser_set_reframe(&p, reframe);
            size_t step = bytewise ? 1 : sizeof body - 1;
            int ev = 0;
            for (size_t i = 0; i < sizeof body - 1; i += step)
                ev |= feed(&p, body + i, step).ev;
            assert_int_equal(ev, HTTP_EV_END);
            size_t n;
            const char *t = http_parser_trailers(&p, &n);
            assert_int_equal(n, sizeof fields - 1);
            assert_memory_equal(t, fields, n);
            if (reframe) {
                static const char out[] = "3\r\nabc\r\n0\r\ngrpc-status: 0\r\nX-B:  two \r\n\r\n";
                assert_int_equal(p.sink_len, sizeof out - 1);
                assert_memory_equal(sink, out, sizeof out - 1);
            } else {
                assert_int_equal(p.sink_len, 3);
            }
        }
    char tiny[8], sink[128];
    http_parser_t p;
    http_parser_init_response(&p);
    feed(&p, LIT(hd));
    http_parser_keep_trailers(&p, tiny, sizeof tiny);
    http_parser_set_sink(&p, sink, sizeof sink);
    assert_true(feed(&p, body, sizeof body - 1).k < 0);
}

static void test_sink_reset_and_off(void **state)
{
    (void)state;
    char sink[64];
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    http_parser_set_sink(&p, sink, sizeof sink);
    f = feed(&p, LIT("2\r\nab\r\n"));
    assert_int_equal(p.sink_len, 2);
    /* The caller takes the bytes and starts over at the sink's start. */
    p.sink_len = 0;
    f = feed(&p, LIT("2\r\ncd\r\n"));
    assert_int_equal(p.sink_len, 2);
    assert_memory_equal(sink, "cd", 2);
    http_parser_set_sink(&p, NULL, 0);
    f = feed(&p, LIT("2\r\nef\r\n0\r\n\r\n"));
    assert_int_equal(f.ev, HTTP_EV_END);
    assert_int_equal(p.sink_len, 0);
    assert_int_equal(p.body_bytes, 6);
}

static void test_sink_too_small_never_overflows(void **state)
{
    (void)state;
    char sink[8];
    memset(sink, '#', sizeof sink);
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    http_parser_set_sink(&p, sink, 4);
    /* The feed stops where the sink is full; the rest is fed again. */
    f = feed(&p, LIT("6\r\nabcdef\r\n0\r\n\r\n"));
    assert_int_equal(f.k, 7);
    assert_int_equal(f.ev, 0);
    assert_int_equal(p.sink_len, 4);
    assert_memory_equal(sink, "abcd####", 8);
}

/* Chunked bodies are written again as ficus frames them. */
static void reframes(const char *in, size_t len, const char *want)
{
    char sink[256];
    http_parser_t p;
    http_parser_init_response(&p);
    fed_t f = feed(&p, LIT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_int_equal(f.ev, HTTP_EV_HEAD);
    http_parser_set_reframe(&p, true);
    /* One byte at a time: the state carries across feeds. */
    size_t out = 0;
    for (size_t i = 0; i < len; i++) {
        http_parser_set_sink(&p, sink + out, sizeof sink - out);
        f = feed(&p, in + i, 1);
        assert_int_equal(f.k, 1);
        out += p.sink_len;
        if (f.ev & HTTP_EV_END)
            assert_int_equal(i, len - 1);
    }
    assert_int_equal(f.ev, HTTP_EV_END);
    assert_int_equal(out, strlen(want));
    assert_memory_equal(sink, want, out);
}

static void test_reframe_canonical(void **state)
{
    (void)state;
    reframes(LIT("5\r\nhello\r\n0\r\n\r\n"), "5\r\nhello\r\n0\r\n\r\n");
    /* Zero-padded sizes, upper-case hex, extensions and trailers. */
    reframes(LIT("00000000000000000000000000A;ext=\"v\"\r\n0123456789\r\n"
                 "0;last\r\nX-Sum: 1\r\nY:\r\n\r\n"),
             "a\r\n0123456789\r\n0\r\n\r\n");
}

/* Framing a next hop could read differently is refused. */
static void test_refuse_chunk_framing(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "0\r\n\n",                        /* trailer section ended by a bare LF */
        "0\n\r\n",                        /* size line ended by a bare LF */
        "1\r\na\n0\r\n\r\n",              /* data not followed by CRLF */
        "0\r\nX-A: 1\r\n folded\r\n\r\n", /* obs-fold in a trailer */
        "0\r\n: empty\r\n\r\n",           /* empty trailer name */
        "0\r\nX-A: 1\n\r\n",              /* bare LF in a trailer */
        "10000000000000000\r\n",          /* size past 60 bits */
        "g\r\n",
        "1 x\r\n",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        http_parser_t p;
        http_parser_init_request(&p);
        fed_t f = feed(&p, LIT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert_int_equal(f.ev, HTTP_EV_HEAD);
        f = feed(&p, bodies[i], strlen(bodies[i]));
        if (f.k >= 0)
            fail_msg("accepted: %s", bodies[i]);
        assert_int_equal(http_parser_error(&p), HTTP_ERR_BAD);
    }
}

/* Extensions and trailers are bounded. */
static void test_refuse_oversized_chunk_lines(void **state)
{
    (void)state;
    static char big[CHUNKED_MAX_LINE_BYTES + 64];
    memset(big, 'x', sizeof big);
    big[0] = '1';
    big[1] = ';';
    http_parser_t p;
    http_parser_init_request(&p);
    fed_t f = feed(&p, LIT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
    f = feed(&p, big, sizeof big);
    assert_true(f.k < 0);
    http_parser_init_request(&p);
    http_parser_set_max_trailer(&p, 64);
    f = feed(&p, LIT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
    http_parser_reset(&p); /* the limit survives a reset */
    f = feed(&p, LIT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
    f = feed(&p,
             LIT("0\r\nX-Long: "
                 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\r\n"));
    assert_true(f.k < 0);
    assert_string_equal(http_parser_error_reason(&p), "trailer section too large");
}

/* ------------------------------------------------------------ head_end */

static void test_head_end_forms(void **state)
{
    (void)state;
    assert_int_equal(http_head_end(LIT("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"), 0),
                     sizeof "GET / HTTP/1.1\r\nHost: a\r\n\r\n" - 1);
    assert_int_equal(http_head_end(LIT("GET / HTTP/1.1\nHost: a\n\nBODY"), 0),
                     sizeof "GET / HTTP/1.1\nHost: a\n\n" - 1);
    assert_int_equal(http_head_end(LIT("GET / HTTP/1.1\r\nHost: a\n\r\n"), 0),
                     sizeof "GET / HTTP/1.1\r\nHost: a\n\r\n" - 1);
    assert_int_equal(http_head_end(LIT("GET / HTTP/1.1\r\nHost: a\r\n\n"), 0),
                     sizeof "GET / HTTP/1.1\r\nHost: a\r\n\n" - 1);
    assert_int_equal(http_head_end(LIT("GET / HTTP/1.1\r\nHost: a\r\n"), 0), 0);
    assert_int_equal(http_head_end(LIT("GET / HTTP/1.1\r\nHost: a\r\n\r"), 0), 0);
    /* A lone CR is not a line end. */
    assert_int_equal(http_head_end(LIT("GET / HTTP/1.1\r\r\r\r"), 0), 0);
    assert_int_equal(http_head_end("", 0, 0), 0);
    /* The first end wins. */
    assert_int_equal(http_head_end(LIT("A\r\n\r\nB\r\n\r\n"), 0), 5);
}

/* Scanning again from where the last scan stopped finds an end that
 * straddles the two reads, for every split of the terminator. */
static void test_head_end_from(void **state)
{
    (void)state;
    static const char *const heads[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        size_t len = strlen(heads[i]);
        char *copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, heads[i], len);
        for (size_t scanned = 0; scanned < len; scanned++) {
            assert_int_equal(http_head_end(copy, scanned, 0), 0);
            assert_int_equal(http_head_end(copy, len, scanned), len);
        }
        free(copy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_spans),
        cmocka_unit_test(test_keep_alive_by_version),
        cmocka_unit_test(test_framing_fields),
        cmocka_unit_test(test_head_split_every_byte),
        cmocka_unit_test(test_no_body_events),
        cmocka_unit_test(test_content_length_body),
        cmocka_unit_test(test_chunked_body_counts_framing),
        cmocka_unit_test(test_pipelined_requests),
        cmocka_unit_test(test_response_to_head),
        cmocka_unit_test(test_response_204),
        cmocka_unit_test(test_response_304_with_content_length),
        cmocka_unit_test(test_response_204_with_content_length),
        cmocka_unit_test(test_response_interim_then_final),
        cmocka_unit_test(test_response_close_delimited),
        cmocka_unit_test(test_finish_cut_short),
        cmocka_unit_test(test_refuse_cl_and_te),
        cmocka_unit_test(test_refuse_two_content_lengths),
        cmocka_unit_test(test_refuse_bad_transfer_encoding),
        cmocka_unit_test(test_refuse_framing_before_head),
        cmocka_unit_test(test_refuse_chunked_twice),
        cmocka_unit_test(test_refuse_versions_other_than_1x),
        cmocka_unit_test(test_refuse_invalid_chunk),
        cmocka_unit_test(test_refuse_bare_lf_in_header_line),
        cmocka_unit_test(test_refuse_bare_lf_after_request_line),
        cmocka_unit_test(test_refuse_bare_lf_ending_head),
        cmocka_unit_test(test_refuse_obs_fold),
        cmocka_unit_test(test_refuse_obs_fold_after_empty_value),
        cmocka_unit_test(test_refuse_nul_and_controls),
        cmocka_unit_test(test_refuse_empty_header_name),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_reset_after_error),
        cmocka_unit_test(test_trailers_leave_head_alone),
        cmocka_unit_test(test_sink_dechunks),
        cmocka_unit_test(test_trailers_kept),
        cmocka_unit_test(test_sink_reset_and_off),
        cmocka_unit_test(test_sink_too_small_never_overflows),
        cmocka_unit_test(test_reframe_canonical),
        cmocka_unit_test(test_refuse_chunk_framing),
        cmocka_unit_test(test_refuse_oversized_chunk_lines),
        cmocka_unit_test(test_head_end_forms),
        cmocka_unit_test(test_head_end_from),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
