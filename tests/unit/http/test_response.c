/* ficus's own error answers (http/response.h): each one is read back with the
 * response parser and its body with jansson, so what a client sees is a valid
 * HTTP message with the JSON the spec promises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "http/parser.h"
#include "http/response.h"

static http_head_t head;

typedef struct parsed {
    size_t head_len;
    const char *body;
    size_t body_len;
    json_t *json; /* NULL for head_only */
} parsed_t;

static const http_header_t *find(const char *lname)
{
    return http_header_find(head.headers, head.n_headers, lname, strlen(lname));
}

static void assert_header(const char *lname, const char *want)
{
    const http_header_t *h = find(lname);
    assert_non_null(h);
    assert_int_equal(h->value_len, strlen(want));
    assert_memory_equal(h->value, want, h->value_len);
}

static size_t header_count(const char *lname)
{
    size_t n = 0;
    for (uint32_t i = 0; i < head.n_headers; i++)
        n += (size_t)http_header_name_is(head.headers[i].name, head.headers[i].name_len, lname,
                                         strlen(lname));
    return n;
}

/* Formats e, parses the result as one complete HTTP response (with no byte
 * left over) and its body as JSON. */
static parsed_t format_and_parse(const http_error_t *e, char *out, size_t cap)
{
    parsed_t r = {0};
    size_t n = http_error_format(e, out, cap);
    assert_true(n > 0 && n <= cap);
    http_parser_t p;
    http_parser_init_response(&p);
    http_parser_expect_no_body(&p, e->head_only);
    int ev;
    long k = http_parser_feed(&p, &head, out, n, &ev);
    assert_true(k > 0);
    assert_true(ev & HTTP_EV_HEAD);
    r.head_len = (size_t)k;
    assert_int_equal(head.status, e->status);
    assert_int_equal(head.http_major, 1);
    assert_int_equal(head.http_minor, 1);
    assert_true(head.has_content_length);
    assert_false(head.chunked);
    if (e->head_only) {
        assert_int_equal(r.head_len, n);
        assert_true(ev & HTTP_EV_END);
        return r;
    }
    r.body = out + r.head_len;
    r.body_len = n - r.head_len;
    assert_int_equal(head.content_length, r.body_len);
    long b = http_parser_feed(&p, &head, r.body, r.body_len, &ev);
    assert_int_equal(b, (long)r.body_len);
    assert_int_equal(ev, HTTP_EV_END);
    json_error_t jerr;
    r.json = json_loadb(r.body, r.body_len, 0, &jerr);
    if (!r.json)
        fail_msg("body is not JSON (%s): %.*s", jerr.text, (int)r.body_len, r.body);
    assert_true(json_is_object(r.json));
    return r;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_not_found(void **state)
{
    (void)state;
    char out[1024];
    http_error_t e = {
        .status = 404, .message = "no route for /x", .request_id = "req-1", .request_id_len = 5};
    parsed_t r = format_and_parse(&e, out, sizeof out);
    assert_memory_equal(out, "HTTP/1.1 404 Not Found\r\n", 24);
    assert_header("x-request-id", "req-1");
    assert_header("content-type", "application/json");
    assert_int_equal(header_count("connection"), 0);
    assert_int_equal(header_count("retry-after"), 0);
    assert_string_equal(jstr(r.json, "error"), "no_route");
    assert_string_equal(jstr(r.json, "message"), "no route for /x");
    assert_string_equal(jstr(r.json, "request_id"), "req-1");
    assert_int_equal(json_object_size(r.json), 3);
    json_decref(r.json);
}

static void test_close_and_custom_code(void **state)
{
    (void)state;
    char out[1024];
    http_error_t e = {.status = 400,
                      .code = "bad_header",
                      .message = "m",
                      .request_id = "r",
                      .request_id_len = 1,
                      .close = true};
    parsed_t r = format_and_parse(&e, out, sizeof out);
    assert_header("connection", "close");
    assert_int_equal(header_count("connection"), 1);
    assert_false(head.keep_alive);
    assert_string_equal(jstr(r.json, "error"), "bad_header");
    json_decref(r.json);
}

static void test_retry_after(void **state)
{
    (void)state;
    char out[1024];
    http_error_t e = {.status = 429,
                      .message = "slow down",
                      .request_id = "r",
                      .request_id_len = 1,
                      .retry_after_s = 7};
    parsed_t r = format_and_parse(&e, out, sizeof out);
    assert_memory_equal(out, "HTTP/1.1 429 Too Many Requests\r\n", 32);
    assert_header("retry-after", "7");
    assert_string_equal(jstr(r.json, "error"), "too_many_requests");
    json_decref(r.json);
}

static void test_head_only(void **state)
{
    (void)state;
    char full[1024], only[1024];
    http_error_t e = {
        .status = 503, .message = "no healthy target", .request_id = "abc", .request_id_len = 3};
    parsed_t rf = format_and_parse(&e, full, sizeof full);
    uint64_t body_len = head.content_length;
    e.head_only = true;
    size_t n = http_error_format(&e, only, sizeof only);
    format_and_parse(&e, only, sizeof only);
    /* The same head, announcing the body a GET would have had. */
    assert_int_equal(n, rf.head_len);
    assert_memory_equal(only, full, n);
    assert_int_equal(head.content_length, body_len);
    assert_header("x-request-id", "abc");
    json_decref(rf.json);
}

static void test_defaults_without_message_or_id(void **state)
{
    (void)state;
    char out[1024];
    http_error_t e = {.status = 502};
    parsed_t r = format_and_parse(&e, out, sizeof out);
    assert_string_equal(jstr(r.json, "error"), "bad_gateway");
    assert_string_equal(jstr(r.json, "message"), "Bad Gateway");
    assert_string_equal(jstr(r.json, "request_id"), "");
    /* The header is there even when empty: every answer carries it. */
    assert_int_equal(header_count("x-request-id"), 1);
    json_decref(r.json);
}

static void test_message_escaping(void **state)
{
    (void)state;
    char out[1024];
    static const char msg[] = "say \"hi\" \\ tab\there\r\nnew\x01\x1f end </script>";
    http_error_t e = {.status = 400, .message = msg, .request_id = "r\"1", .request_id_len = 3};
    parsed_t r = format_and_parse(&e, out, sizeof out);
    /* Control bytes never reach the wire raw. */
    for (size_t i = 0; i < r.body_len - 1; i++)
        assert_true((unsigned char)r.body[i] >= 0x20);
    assert_string_equal(jstr(r.json, "message"), msg);
    assert_string_equal(jstr(r.json, "request_id"), "r\"1");
    json_decref(r.json);

    /* Non-ASCII bytes (even invalid UTF-8) still give valid JSON. */
    e.message = "caf\xc3\xa9 \xff";
    r = format_and_parse(&e, out, sizeof out);
    assert_non_null(jstr(r.json, "message"));
    json_decref(r.json);
}

static void test_long_message_fits_1k(void **state)
{
    (void)state;
    char msg[256];
    memset(msg, 'm', sizeof msg - 1);
    memset(msg, '"', 40); /* escaped: twice as long */
    msg[sizeof msg - 1] = '\0';
    char rid[REQUEST_ID_MAX_BYTES + 1];
    memset(rid, 'r', REQUEST_ID_MAX_BYTES);
    rid[REQUEST_ID_MAX_BYTES] = '\0';
    char out[1024];
    http_error_t e = {.status = 431,
                      .message = msg,
                      .request_id = rid,
                      .request_id_len = REQUEST_ID_MAX_BYTES,
                      .close = true};
    parsed_t r = format_and_parse(&e, out, sizeof out);
    assert_string_equal(jstr(r.json, "message"), msg);
    assert_string_equal(jstr(r.json, "request_id"), rid);
    json_decref(r.json);
}

/* Every cap below the full length gives 0 and writes nothing past cap. */
static void check_caps(const http_error_t *e)
{
    char ref[1024];
    size_t full = http_error_format(e, ref, sizeof ref);
    assert_true(full > 0);
    static char out[1024 + 16];
    for (size_t cap = 0; cap <= full + 1; cap++) {
        memset(out, '#', full + 16);
        size_t n = http_error_format(e, out, cap);
        for (size_t i = cap; i < full + 16; i++)
            assert_int_equal(out[i], '#');
        if (cap < full) {
            assert_int_equal(n, 0);
        } else {
            assert_int_equal(n, full);
            assert_memory_equal(out, ref, full);
        }
    }
}

static void test_cap_bounds(void **state)
{
    (void)state;
    http_error_t e = {.status = 429,
                      .message = "m",
                      .request_id = "id",
                      .request_id_len = 2,
                      .retry_after_s = 1,
                      .close = true};
    check_caps(&e);
}

/* A head-only answer fits in exactly its length too: snprintf's NUL is not
 * part of the answer. */
static void test_cap_bounds_head_only(void **state)
{
    (void)state;
    http_error_t e = {.status = 404, .request_id = "id", .request_id_len = 2, .head_only = true};
    check_caps(&e);
}

static void test_reason_phrases(void **state)
{
    (void)state;
    assert_string_equal(http_status_reason(200), "OK");
    assert_string_equal(http_status_reason(204), "No Content");
    assert_string_equal(http_status_reason(400), "Bad Request");
    assert_string_equal(http_status_reason(404), "Not Found");
    assert_string_equal(http_status_reason(413), "Content Too Large");
    assert_string_equal(http_status_reason(429), "Too Many Requests");
    assert_string_equal(http_status_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_reason(502), "Bad Gateway");
    assert_string_equal(http_status_reason(503), "Service Unavailable");
    assert_string_equal(http_status_reason(504), "Gateway Timeout");
    /* Unknown codes get their class's phrase, never NULL or "". */
    assert_string_equal(http_status_reason(299), "Success");
    assert_string_equal(http_status_reason(399), "Redirection");
    assert_string_equal(http_status_reason(499), "Client Error");
    assert_string_equal(http_status_reason(599), "Server Error");
    assert_string_equal(http_status_reason(199), "Informational");
}

static void test_code_names(void **state)
{
    (void)state;
    assert_string_equal(http_status_code_name(400), "bad_request");
    assert_string_equal(http_status_code_name(401), "unauthorized");
    assert_string_equal(http_status_code_name(403), "forbidden");
    assert_string_equal(http_status_code_name(404), "no_route");
    assert_string_equal(http_status_code_name(413), "body_too_large");
    assert_string_equal(http_status_code_name(429), "too_many_requests");
    assert_string_equal(http_status_code_name(431), "header_too_large");
    assert_string_equal(http_status_code_name(502), "bad_gateway");
    assert_string_equal(http_status_code_name(503), "unavailable");
    assert_string_equal(http_status_code_name(504), "gateway_timeout");
    assert_string_equal(http_status_code_name(418), "error");
}

static void test_grpc_trailers_only(void **state)
{
    (void)state;
    char out[1024];
    http_error_t e = {.status = 503,
                      .message = "no healthy target 100% \n",
                      .request_id = "abc",
                      .request_id_len = 3,
                      .grpc = true};
    size_t n = http_error_format(&e, out, sizeof out);
    assert_true(n > 0);
    out[n] = 0;
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "Content-Type: application/grpc\r\n"));
    assert_non_null(strstr(out, "grpc-status: 14\r\n"));
    assert_non_null(strstr(out, "grpc-message: no healthy target 100%25 %0A\r\n"));
    assert_non_null(strstr(out, "Content-Length: 0\r\n"));
    assert_int_equal(http_grpc_status(404), 12);
    assert_int_equal(http_grpc_status(401), 16);
    assert_int_equal(http_grpc_status(403), 7);
    assert_int_equal(http_grpc_status(429), 8);
    assert_int_equal(http_grpc_status(502), 14);
    assert_int_equal(http_grpc_status(504), 4);
    assert_int_equal(http_grpc_status(400), 13);
    assert_int_equal(http_grpc_status(418), 2);
    assert_int_equal(http_error_format(&e, out, 40), 0); /* too small */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_trailers_only),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_close_and_custom_code),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_head_only),
        cmocka_unit_test(test_defaults_without_message_or_id),
        cmocka_unit_test(test_message_escaping),
        cmocka_unit_test(test_long_message_fits_1k),
        cmocka_unit_test(test_cap_bounds),
        cmocka_unit_test(test_cap_bounds_head_only),
        cmocka_unit_test(test_reason_phrases),
        cmocka_unit_test(test_code_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
