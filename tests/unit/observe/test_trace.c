/* Tracing (observe/trace.h): traceparent and Datadog parsing/formatting, ids,
 * sampling, the OTLP/JSON encoding read back with jansson, and the exporter
 * against an in-test HTTP collector that answers 200, 500, closes or hangs
 * as each test scripts it. Counters are read from the metrics exposition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/defaults.h"
#include "observe/metrics.h"
#include "observe/trace.h"

#ifndef FICUS_VERSION
#define FICUS_VERSION "0.0.0"
#endif

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse_tp(const char *s, uint8_t tid[16], uint8_t pid[8], uint8_t *flags)
{
    return trace_parse_traceparent(s, strlen(s), tid, pid, flags);
}

static void test_traceparent_valid(void **state)
{
    (void)state;
    uint8_t tid[16], pid[8], flags = 0xee;
    static const uint8_t want_tid[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                         0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    static const uint8_t want_pid[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    assert_int_equal(parse_tp(TP_OK, tid, pid, &flags), 0);
    assert_memory_equal(tid, want_tid, 16);
    assert_memory_equal(pid, want_pid, 8);
    assert_int_equal(flags, 1);

    assert_int_equal(
        parse_tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", tid, pid, &flags), 0);
    assert_int_equal(flags, 0);
    /* Unknown flag bits are handed over as they are. */
    assert_int_equal(
        parse_tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", tid, pid, &flags), 0);
    assert_int_equal(flags, 3);
    /* OWS around the value. */
    assert_int_equal(parse_tp(" \t" TP_OK "\t ", tid, pid, &flags), 0);
    assert_memory_equal(tid, want_tid, 16);
    /* The length is what counts, not a NUL. */
    char buf[80];
    memcpy(buf, TP_OK "xyz", 59);
    assert_int_equal(trace_parse_traceparent(buf, TRACEPARENT_LEN, tid, pid, &flags), 0);
}

static void test_traceparent_future_version(void **state)
{
    (void)state;
    uint8_t tid[16], pid[8], flags;
    assert_int_equal(
        parse_tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tid, pid, &flags), 0);
    assert_int_equal(flags, 1);
    assert_int_equal(parse_tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-"
                              "the-future-holds",
                              tid, pid, &flags),
                     0);
    assert_int_equal(pid[7], 0xb7);
    /* Longer, but not a '-' right after the flags. */
    assert_int_equal(
        parse_tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", tid, pid, &flags), -1);
    /* Shorter than the 00 layout. */
    assert_int_equal(
        parse_tp("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", tid, pid, &flags), -1);
}

static void test_traceparent_invalid(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "   ",
        "00",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper-case trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",  /* upper-case parent id */
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* upper-case version */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",  /* upper-case flags */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 is exactly 55 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", /* short trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* separators */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-g1", /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9 2b7-01",   /* inner space */
        "\v00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* not OWS */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t tid[16], pid[8], flags = 0x5a;
        memset(tid, 0xaa, sizeof tid);
        memset(pid, 0xbb, sizeof pid);
        if (parse_tp(bad[i], tid, pid, &flags) != -1)
            fail_msg("accepted: \"%s\"", bad[i]);
        /* A refused header leaves the outputs alone. */
        assert_int_equal(flags, 0x5a);
        assert_int_equal(tid[0], 0xaa);
        assert_int_equal(pid[7], 0xbb);
    }
    uint8_t tid[16], pid[8], flags;
    assert_int_equal(trace_parse_traceparent(NULL, 0, tid, pid, &flags), -1);
    /* A NUL inside the value is not hex. */
    char nul[TRACEPARENT_LEN];
    memcpy(nul, TP_OK, TRACEPARENT_LEN);
    nul[10] = '\0';
    assert_int_equal(trace_parse_traceparent(nul, TRACEPARENT_LEN, tid, pid, &flags), -1);
}

static void test_traceparent_format_patch(void **state)
{
    (void)state;
    uint64_t rng = 7;
    uint8_t tid[16], sid[8], sid2[8];
    trace_new_trace_id(&rng, tid);
    trace_new_span_id(&rng, sid, false);
    char tp[TRACEPARENT_LEN + 1];
    tp[TRACEPARENT_LEN] = '#';
    trace_format_traceparent(tp, tid, sid, true);
    assert_int_equal(tp[TRACEPARENT_LEN], '#'); /* exactly 55 chars written */
    assert_memory_equal(tp, "00-", 3);
    for (size_t i = 0; i < TRACEPARENT_LEN; i++)
        assert_false(tp[i] >= 'A' && tp[i] <= 'Z');

    uint8_t ptid[16], psid[8], flags;
    assert_int_equal(trace_parse_traceparent(tp, TRACEPARENT_LEN, ptid, psid, &flags), 0);
    assert_memory_equal(ptid, tid, 16);
    assert_memory_equal(psid, sid, 8);
    assert_int_equal(flags, 1);

    trace_new_span_id(&rng, sid2, false);
    assert_memory_not_equal(sid, sid2, 8);
    trace_patch_span_id(tp, sid2);
    assert_int_equal(trace_parse_traceparent(tp, TRACEPARENT_LEN, ptid, psid, &flags), 0);
    assert_memory_equal(ptid, tid, 16);
    assert_memory_equal(psid, sid2, 8);
    assert_int_equal(flags, 1);

    trace_format_traceparent(tp, tid, sid, false);
    assert_memory_equal(tp + 52, "-00", 3);
    assert_int_equal(trace_parse_traceparent(tp, TRACEPARENT_LEN, ptid, psid, &flags), 0);
    assert_int_equal(flags, 0);

    static const uint8_t known_tid[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                          0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    static const uint8_t known_sid[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    trace_format_traceparent(tp, known_tid, known_sid, true);
    assert_memory_equal(tp, TP_OK, TRACEPARENT_LEN);
}

static int parse_dd(const char *s, uint64_t *out)
{
    return trace_parse_datadog_id(s, strlen(s), out);
}

static void test_datadog_id(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(parse_dd("1", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(parse_dd("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(parse_dd("00000000000000000042", &v), 0); /* 20 digits */
    assert_int_equal(v, 42);
    assert_int_equal(parse_dd(" \t1234567890123456789 ", &v), 0); /* OWS */
    assert_true(v == 1234567890123456789ull);

    static const char *bad[] = {
        "0",
        "00000000000000000000",
        "18446744073709551616", /* 2^64 */
        "99999999999999999999",
        "000000000000000000001", /* 21 digits */
        "184467440737095516150",
        "+1",
        "-1",
        "1 2",
        "12a",
        "0x10",
        "",
        "  ",
        "1.0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 77;
        if (parse_dd(bad[i], &v) != -1)
            fail_msg("accepted: \"%s\"", bad[i]);
        assert_int_equal(v, 77);
    }
    assert_int_equal(trace_parse_datadog_id(NULL, 0, &v), -1);
    /* Length-bounded: the digits after n are not read. */
    assert_int_equal(trace_parse_datadog_id("123456", 3, &v), 0);
    assert_int_equal(v, 123);
}

static void test_dd_span_ids(void **state)
{
    (void)state;
    char out[TRACE_DD_ID_DIGITS + 1];
    out[TRACE_DD_ID_DIGITS] = '#';
    trace_dd_format_id(out, TRACE_DD_ID_MIN);
    assert_memory_equal(out, "1000000000000000000#", TRACE_DD_ID_DIGITS + 1);
    trace_dd_format_id(out, TRACE_DD_ID_END - 1);
    assert_memory_equal(out, "9223372036854775807", TRACE_DD_ID_DIGITS);

    uint64_t rng = 12345;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < 200000; i++) {
        uint8_t sid[8];
        trace_new_span_id(&rng, sid, true);
        uint64_t v = trace_span_id_u64(sid);
        assert_true(v >= TRACE_DD_ID_MIN);
        assert_true(v < TRACE_DD_ID_END);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        if (i < 1000) {
            uint64_t back;
            trace_dd_format_id(out, v);
            assert_int_equal(trace_parse_datadog_id(out, TRACE_DD_ID_DIGITS, &back), 0);
            assert_true(back == v);
        }
    }
    /* The draws cover the range, not a corner of it. */
    assert_true(lo < TRACE_DD_ID_MIN + 100000000000000000ull);
    assert_true(hi > TRACE_DD_ID_END - 100000000000000000ull);
}

static void test_ids(void **state)
{
    (void)state;
    static const uint8_t be[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_true(trace_span_id_u64(be) == 0x0102030405060708ull);
    uint8_t out[8];
    trace_span_id_from_u64(0x0102030405060708ull, out);
    assert_memory_equal(out, be, 8);

    uint64_t a = 99, b = 99, c = 0;
    uint8_t t1[16], t2[16], t3[16];
    trace_new_trace_id(&a, t1);
    trace_new_trace_id(&b, t2);
    assert_memory_equal(t1, t2, 16); /* same seed, same id */
    trace_new_trace_id(&a, t3);
    assert_memory_not_equal(t1, t3, 16);
    static const uint8_t zero[16];
    for (int i = 0; i < 10000; i++) {
        trace_new_trace_id(&c, t1); /* a zero seed works too */
        assert_memory_not_equal(t1, zero, 16);
        trace_new_span_id(&c, out, false);
        assert_memory_not_equal(out, zero, 8);
    }

    char hex[17];
    static const uint8_t bytes[8] = {0x00, 0x0f, 0xa0, 0xff, 0x12, 0xab, 0xcd, 0xef};
    hex[16] = '#';
    trace_hex(hex, bytes, 8);
    assert_memory_equal(hex, "000fa0ff12abcdef#", 17);
}

static void test_sampling(void **state)
{
    (void)state;
    uint64_t rng = 42;
    int yes0 = 0, yes1 = 0, yes_half = 0, yes_tenth = 0;
    for (int i = 0; i < 20000; i++) {
        yes0 += trace_sample(&rng, 0.0);
        yes1 += trace_sample(&rng, 1.0);
        yes_half += trace_sample(&rng, 0.5);
        yes_tenth += trace_sample(&rng, 0.1);
    }
    assert_int_equal(yes0, 0);
    assert_int_equal(yes1, 20000);
    assert_in_range(yes_half, 9000, 11000);
    assert_in_range(yes_tenth, 1500, 2500);
    assert_false(trace_sample(&rng, -1.0));
    assert_false(trace_sample(&rng, 0.0 / 0.0));
    assert_true(trace_sample(&rng, 2.0));
    /* Ratio 0 and 1 consume no randomness: the decision is not random. */
    uint64_t before = rng;
    trace_sample(&rng, 0.0);
    trace_sample(&rng, 1.0);
    assert_true(rng == before);
}

/* ---------------------------------------------------------------- OTLP */

static json_t *load(const buf_t *b)
{
    json_error_t e;
    json_t *j = json_loadb(b->data, b->len, 0, &e);
    if (!j)
        fail_msg("invalid JSON (%s at %d): %.*s", e.text, e.position, (int)b->len, b->data);
    return j;
}

static json_t *spans_of(json_t *doc)
{
    json_t *rs = json_object_get(doc, "resourceSpans");
    assert_true(json_is_array(rs));
    assert_int_equal(json_array_size(rs), 1);
    json_t *ss = json_object_get(json_array_get(rs, 0), "scopeSpans");
    assert_true(json_is_array(ss));
    assert_int_equal(json_array_size(ss), 1);
    json_t *spans = json_object_get(json_array_get(ss, 0), "spans");
    assert_true(json_is_array(spans));
    return spans;
}

/* The value object of attribute key, or NULL; fails on a duplicate. */
static json_t *attr(json_t *span, const char *key)
{
    json_t *attrs = json_object_get(span, "attributes");
    assert_true(json_is_array(attrs));
    json_t *found = NULL;
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a)
    {
        assert_int_equal(json_object_size(a), 2);
        json_t *k = json_object_get(a, "key");
        json_t *v = json_object_get(a, "value");
        assert_true(json_is_string(k));
        assert_true(json_is_object(v));
        assert_int_equal(json_object_size(v), 1);
        if (strcmp(json_string_value(k), key) == 0) {
            assert_null(found);
            found = v;
        }
    }
    return found;
}

static const char *attr_s(json_t *span, const char *key)
{
    json_t *v = attr(span, key);
    if (!v)
        return NULL;
    json_t *s = json_object_get(v, "stringValue");
    assert_true(json_is_string(s));
    return json_string_value(s);
}

static const char *attr_i(json_t *span, const char *key)
{
    json_t *v = attr(span, key);
    if (!v)
        return NULL;
    json_t *s = json_object_get(v, "intValue");
    assert_true(json_is_string(s)); /* int64 is a string in proto3 JSON */
    return json_string_value(s);
}

static int attr_b(json_t *span, const char *key)
{
    json_t *v = attr(span, key);
    if (!v)
        return -1;
    json_t *b = json_object_get(v, "boolValue");
    assert_true(json_is_boolean(b));
    return json_is_true(b);
}

static void assert_lower_hex(const char *s, size_t n)
{
    assert_non_null(s);
    assert_int_equal(strlen(s), n);
    for (size_t i = 0; i < n; i++)
        assert_true((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'));
}

static void fill_server(trace_span_t *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 16; i++)
        s->trace_id[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 8; i++)
        s->span_id[i] = (uint8_t)(0xb0 + i);
    s->kind = TRACE_SPAN_SERVER;
    s->status = 200;
    s->attempt = 2;
    s->fallback = 1;
    s->start_unix_ns = 1700000000123456789ull;
    s->end_unix_ns = 1700000000223456789ull;
    strcpy(s->name, "GET search");
    strcpy(s->method, "GET");
    strcpy(s->route, "search");
    strcpy(s->target_group, "search-v1");
    strcpy(s->target, "10.0.0.5:8080");
    strcpy(s->path, "/search");
    strcpy(s->client_ip, "192.0.2.7");
    strcpy(s->request_id, "req-1");
}

static void test_otlp_encoding(void **state)
{
    (void)state;
    trace_span_t sp[3];
    fill_server(&sp[0]);

    /* A failed client try: child of the server span, odd bytes in the path. */
    trace_span_t *c = &sp[1];
    fill_server(c);
    c->kind = TRACE_SPAN_CLIENT;
    memcpy(c->parent_id, sp[0].span_id, 8);
    c->span_id[7] = 0x01;
    c->status = 503;
    c->error = 1;
    c->retry = 1;
    c->fallback = 0;
    c->attempt = 1;
    strcpy(c->name, "GET search-v2");
    strcpy(c->target, "[2001:db8::1]:9000");
    strcpy(c->path, "/a\"b\\c\n\x01\x7f\xff\xc3\xa9/\xe2\x82");
    strcpy(c->error_type, "upstream_5xx");
    c->client_ip[0] = '\0';
    c->request_id[0] = '\0';

    /* A span whose clock stepped back, whose name fills the field to the
     * last byte (no NUL) and ends inside a UTF-8 sequence. */
    trace_span_t *o = &sp[2];
    memset(o, 0, sizeof *o);
    o->trace_id[15] = 1;
    o->span_id[0] = 0xff;
    o->kind = TRACE_SPAN_CLIENT;
    o->error = 1;
    o->start_unix_ns = 5000;
    o->end_unix_ns = 4000;
    memset(o->name, 'n', sizeof o->name);
    o->name[sizeof o->name - 1] = (char)0xc3;
    strcpy(o->target, "backend.internal");

    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(buf_append_str(&b, "prefix:"), 0);
    assert_int_equal(trace_encode_otlp_json(sp, 3, "shop \"gw\"", &b), 0);
    assert_memory_equal(b.data, "prefix:", 7); /* appended, not replaced */
    buf_consume(&b, 7);
    json_t *doc = load(&b);

    json_t *rs0 = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *rattrs = json_object_get(json_object_get(rs0, "resource"), "attributes");
    assert_int_equal(json_array_size(rattrs), 1);
    json_t *ra = json_array_get(rattrs, 0);
    assert_string_equal(json_string_value(json_object_get(ra, "key")), "service.name");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ra, "value"), "stringValue")),
        "shop \"gw\"");
    json_t *scope = json_object_get(json_array_get(json_object_get(rs0, "scopeSpans"), 0), "scope");
    assert_string_equal(json_string_value(json_object_get(scope, "name")), "ficus");
    assert_string_equal(json_string_value(json_object_get(scope, "version")), FICUS_VERSION);

    json_t *spans = spans_of(doc);
    assert_int_equal(json_array_size(spans), 3);

    /* The server span. */
    json_t *s0 = json_array_get(spans, 0);
    const char *tid = json_string_value(json_object_get(s0, "traceId"));
    assert_lower_hex(tid, 32);
    assert_string_equal(tid, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    assert_string_equal(json_string_value(json_object_get(s0, "spanId")), "b0b1b2b3b4b5b6b7");
    assert_null(json_object_get(s0, "parentSpanId")); /* root */
    assert_string_equal(json_string_value(json_object_get(s0, "name")), "GET search");
    assert_true(json_is_integer(json_object_get(s0, "kind")));
    assert_int_equal(json_integer_value(json_object_get(s0, "kind")), 2);
    assert_true(json_is_string(json_object_get(s0, "startTimeUnixNano")));
    assert_string_equal(json_string_value(json_object_get(s0, "startTimeUnixNano")),
                        "1700000000123456789");
    assert_string_equal(json_string_value(json_object_get(s0, "endTimeUnixNano")),
                        "1700000000223456789");
    assert_null(json_object_get(s0, "status")); /* unset is left out */
    assert_string_equal(attr_s(s0, "http.request.method"), "GET");
    assert_string_equal(attr_s(s0, "url.path"), "/search");
    assert_string_equal(attr_s(s0, "client.address"), "192.0.2.7");
    assert_null(attr(s0, "server.address"));
    /* http.route means a path template in the conventions; a route's name is not one. */
    assert_null(attr(s0, "http.route"));
    assert_string_equal(attr_i(s0, "http.response.status_code"), "200");
    assert_string_equal(attr_s(s0, "ficus.route"), "search");
    assert_string_equal(attr_s(s0, "ficus.target_group"), "search-v1");
    assert_string_equal(attr_s(s0, "ficus.target"), "10.0.0.5:8080");
    assert_string_equal(attr_i(s0, "ficus.attempt"), "2");
    assert_int_equal(attr_b(s0, "ficus.fallback"), 1);
    assert_null(attr(s0, "ficus.retry")); /* a client-span attribute */
    assert_string_equal(attr_s(s0, "ficus.request_id"), "req-1");
    assert_null(attr(s0, "error.type")); /* empty strings are left out */

    /* The client span. */
    json_t *s1 = json_array_get(spans, 1);
    assert_string_equal(json_string_value(json_object_get(s1, "traceId")), tid);
    assert_string_equal(json_string_value(json_object_get(s1, "spanId")), "b0b1b2b3b4b5b601");
    assert_string_equal(json_string_value(json_object_get(s1, "parentSpanId")), "b0b1b2b3b4b5b6b7");
    assert_int_equal(json_integer_value(json_object_get(s1, "kind")), 3);
    json_t *st = json_object_get(s1, "status");
    assert_true(json_is_object(st));
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(st, "message")), "upstream_5xx");
    assert_string_equal(attr_s(s1, "url.path"),
                        "/a\"b\\c\n\x01\x7f\xef\xbf\xbd\xc3\xa9/\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(attr_s(s1, "server.address"), "2001:db8::1");
    assert_string_equal(attr_i(s1, "server.port"), "9000");
    assert_string_equal(attr_s(s1, "ficus.target"), "[2001:db8::1]:9000");
    assert_null(attr(s1, "client.address"));
    assert_null(attr(s1, "ficus.request_id"));
    assert_string_equal(attr_i(s1, "http.response.status_code"), "503");
    assert_int_equal(attr_b(s1, "ficus.retry"), 1);
    assert_int_equal(attr_b(s1, "ficus.fallback"), 0);
    assert_string_equal(attr_s(s1, "error.type"), "upstream_5xx");

    /* The odd one. */
    json_t *s2 = json_array_get(spans, 2);
    assert_string_equal(json_string_value(json_object_get(s2, "startTimeUnixNano")), "5000");
    assert_string_equal(json_string_value(json_object_get(s2, "endTimeUnixNano")), "5000");
    const char *name = json_string_value(json_object_get(s2, "name"));
    assert_int_equal(strlen(name), 47 + 3);
    assert_memory_equal(name + 47, "\xef\xbf\xbd", 3);
    assert_string_equal(attr_s(s2, "server.address"), "backend.internal");
    assert_null(attr(s2, "server.port"));
    assert_null(attr(s2, "http.response.status_code"));
    assert_null(attr(s2, "ficus.attempt"));
    assert_null(attr(s2, "http.request.method"));
    json_t *st2 = json_object_get(s2, "status");
    assert_int_equal(json_integer_value(json_object_get(st2, "code")), 2);
    assert_true(json_is_string(json_object_get(st2, "message")));
    json_decref(doc);

    /* No span: still a valid document. */
    buf_reset(&b);
    assert_int_equal(trace_encode_otlp_json(NULL, 0, NULL, &b), 0);
    doc = load(&b);
    assert_int_equal(json_array_size(spans_of(doc)), 0);
    json_t *ra2 = json_array_get(
        json_object_get(
            json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "resource"),
            "attributes"),
        0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ra2, "value"), "stringValue")),
        DEFAULT_SERVICE_NAME);
    json_decref(doc);
    buf_deinit(&b);

    /* Too small a buffer: -1 and nothing appended. */
    buf_t small;
    buf_init(&small, 300);
    assert_int_equal(buf_append_str(&small, "keep"), 0);
    assert_int_equal(trace_encode_otlp_json(sp, 3, "ficus", &small), -1);
    assert_int_equal(small.len, 4);
    buf_deinit(&small);
}

/* ------------------------------------------------- the in-test collector */

/* 200 with Content-Length, chunked, or a body ended by closing; 500; close
 * without an answer; no answer until the test stops the collector. */
typedef enum { ACT_200 = 0, ACT_200_CHUNKED, ACT_200_EOF, ACT_500, ACT_CLOSE, ACT_HANG } act_t;

typedef struct collector {
    int lfd;
    uint16_t port;
    pthread_t thread;
    pthread_mutex_t mu;
    act_t script[8]; /* answer to request i; later ones get 200 */
    size_t n_script;
    bool stop;
    /* under mu */
    size_t accepts;
    size_t requests;
    size_t spans;
    uint8_t seen[256]; /* how many times a span whose id ends in byte b arrived */
    char last_head[1024];
    char last_service[256];
} collector_t;

static bool coll_stopping(collector_t *c)
{
    pthread_mutex_lock(&c->mu);
    bool s = c->stop;
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* Waits for fd to be readable while checking for stop: 1 readable, 0 stop. */
static int coll_wait(collector_t *c, int fd)
{
    while (!coll_stopping(c)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 20) > 0)
            return 1;
    }
    return 0;
}

static void coll_record(collector_t *c, const char *head, const char *body, size_t len)
{
    json_error_t e;
    json_t *doc = json_loadb(body, len, 0, &e);
    pthread_mutex_lock(&c->mu);
    snprintf(c->last_head, sizeof c->last_head, "%s", head);
    if (doc) {
        json_t *rs0 = json_array_get(json_object_get(doc, "resourceSpans"), 0);
        json_t *ra =
            json_array_get(json_object_get(json_object_get(rs0, "resource"), "attributes"), 0);
        const char *svc =
            json_string_value(json_object_get(json_object_get(ra, "value"), "stringValue"));
        snprintf(c->last_service, sizeof c->last_service, "%s", svc ? svc : "");
        json_t *spans =
            json_object_get(json_array_get(json_object_get(rs0, "scopeSpans"), 0), "spans");
        size_t i;
        json_t *s;
        json_array_foreach(spans, i, s)
        {
            const char *sid = json_string_value(json_object_get(s, "spanId"));
            unsigned last = 0;
            if (sid && strlen(sid) == 16 && sscanf(sid + 14, "%2x", &last) == 1)
                c->seen[last & 0xff]++;
            c->spans++;
        }
        json_decref(doc);
    } else
        snprintf(c->last_service, sizeof c->last_service, "<invalid JSON: %s>", e.text);
    pthread_mutex_unlock(&c->mu);
}

/* Serves one connection until the peer closes, the script says close, or stop. */
static void coll_serve(collector_t *c, int fd)
{
    static char in[1 << 20];
    size_t have = 0;
    for (;;) {
        char *end = NULL;
        while (!(end = memmem(in, have, "\r\n\r\n", 4))) {
            if (have == sizeof in || !coll_wait(c, fd))
                return;
            ssize_t n = recv(fd, in + have, sizeof in - have, 0);
            if (n <= 0)
                return;
            have += (size_t)n;
        }
        size_t head_len = (size_t)(end - in) + 4;
        char head[1024];
        snprintf(head, sizeof head, "%.*s", (int)head_len, in);
        size_t clen = 0;
        for (char *l = head; l && *l; l = strstr(l, "\r\n"), l = l ? l + 2 : NULL)
            if (strncasecmp(l, "Content-Length:", 15) == 0)
                clen = strtoul(l + 15, NULL, 10);
        if (head_len + clen > sizeof in)
            return;
        while (have < head_len + clen) {
            if (!coll_wait(c, fd))
                return;
            ssize_t n = recv(fd, in + have, sizeof in - have, 0);
            if (n <= 0)
                return;
            have += (size_t)n;
        }
        coll_record(c, head, in + head_len, clen);
        pthread_mutex_lock(&c->mu);
        size_t k = c->requests++;
        act_t act = k < c->n_script ? c->script[k] : ACT_200;
        pthread_mutex_unlock(&c->mu);
        memmove(in, in + head_len + clen, have - head_len - clen);
        have -= head_len + clen;

        const char *answer = NULL;
        if (act == ACT_200)
            answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: 2\r\n\r\n{}";
        else if (act == ACT_200_CHUNKED)
            answer =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1;ext=1\r\n}\r\n0\r\nX-T: 1\r\n\r\n";
        else if (act == ACT_200_EOF) {
            static const char eof[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}";
            send(fd, eof, sizeof eof - 1, MSG_NOSIGNAL);
            return;
        } else if (act == ACT_500)
            answer = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!";
        else if (act == ACT_CLOSE)
            return;
        else {
            while (!coll_stopping(c)) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            return;
        }
        if (send(fd, answer, strlen(answer), MSG_NOSIGNAL) < 0)
            return;
    }
}

static void *coll_run(void *arg)
{
    collector_t *c = arg;
    while (coll_wait(c, c->lfd)) {
        int fd = accept(c->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&c->mu);
        c->accepts++;
        pthread_mutex_unlock(&c->mu);
        coll_serve(c, fd);
        close(fd);
    }
    return NULL;
}

static void coll_start(collector_t *c, const act_t *script, size_t n)
{
    memset(c, 0, sizeof *c);
    assert_true(n <= sizeof c->script / sizeof c->script[0]);
    if (n)
        memcpy(c->script, script, n * sizeof *script);
    c->n_script = n;
    pthread_mutex_init(&c->mu, NULL);
    c->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(c->lfd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(c->lfd, (struct sockaddr *)&a, &al), 0);
    c->port = ntohs(a.sin_port);
    assert_int_equal(listen(c->lfd, 8), 0);
    assert_int_equal(pthread_create(&c->thread, NULL, coll_run, c), 0);
}

static void coll_stop(collector_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    close(c->lfd);
    pthread_mutex_destroy(&c->mu);
}

static size_t coll_get(collector_t *c, const size_t *field)
{
    pthread_mutex_lock(&c->mu);
    size_t v = *field;
    pthread_mutex_unlock(&c->mu);
    return v;
}

/* ------------------------------------------------- exporter helpers */

/* Bounded waits: generous for sanitizer builds, never a speed assertion. */
#define WAIT_MS 30000

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double metric(metrics_registry_t *m, const char *series)
{
    buf_t b;
    buf_init(&b, 0);
    assert_int_equal(metrics_render(m, NULL, &b), 0);
    assert_int_equal(buf_append(&b, "", 1), 0);
    double v = -1;
    size_t n = strlen(series);
    for (const char *p = b.data; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
    }
    buf_deinit(&b);
    return v;
}

static double dropped(metrics_registry_t *m)
{
    return metric(m, "ficus_trace_spans_dropped_total");
}

static double failures(metrics_registry_t *m)
{
    return metric(m, "ficus_trace_export_failures_total");
}

#define WAIT_FOR(cond)                                                                             \
    do {                                                                                           \
        int waited_ = 0;                                                                           \
        while (!(cond)) {                                                                          \
            if (waited_ >= WAIT_MS)                                                                \
                fail_msg("timed out waiting for %s", #cond);                                       \
            sleep_ms(5);                                                                           \
            waited_ += 5;                                                                          \
        }                                                                                          \
    } while (0)

/* Commits one span on worker w whose span id ends in tag. */
static void commit_span(tracer_t *t, size_t w, uint8_t tag)
{
    trace_span_t *s = tracer_reserve(t, w);
    assert_non_null(s);
    fill_server(s);
    s->span_id[7] = tag;
    tracer_commit(t, w);
}

static tracer_t *start_tracer(config_tracing_t *cfg, char *url, size_t url_len, uint16_t port,
                              const char *path, size_t n_workers, metrics_registry_t *m)
{
    snprintf(url, url_len, "http://127.0.0.1:%u%s", port, path);
    memset(cfg, 0, sizeof *cfg);
    cfg->otlp_endpoint = url;
    cfg->service_name = "svc-test";
    cfg->sample_ratio = 1.0;
    cfg->propagate_w3c = true;
    char err[256] = "";
    tracer_t *t = tracer_new(cfg, n_workers, m, err, sizeof err);
    if (!t)
        fail_msg("tracer_new: %s", err);
    return t;
}

static void test_tracer_new_errors(void **state)
{
    (void)state;
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"https://127.0.0.1:4318/v1/traces", "https"},
        {"ftp://127.0.0.1/", "http://"},
        {"", "empty"},
        {"http://127.0.0.1:99999/v1/traces", "port"},
        {"http://127.0.0.1:/v1/traces", "port"},
        {"http:///v1/traces", "host"},
        {"http://user:pw@127.0.0.1/", "credentials"},
        {"http://[::1/", "host"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config_tracing_t cfg = {.otlp_endpoint = (char *)bad[i].url, .service_name = "x"};
        char err[256] = "";
        tracer_t *t = tracer_new(&cfg, 1, NULL, err, sizeof err);
        if (t)
            fail_msg("accepted %s", bad[i].url);
        if (!strstr(err, bad[i].why))
            fail_msg("%s: error \"%s\" does not mention %s", bad[i].url, err, bad[i].why);
    }
    config_tracing_t ok = {.otlp_endpoint = "http://127.0.0.1:1/v1/traces"};
    char err[256] = "";
    assert_null(tracer_new(&ok, 0, NULL, err, sizeof err));
    assert_null(tracer_new(NULL, 1, NULL, err, sizeof err));
    tracer_free(NULL);
    assert_null(tracer_reserve(NULL, 0));
    tracer_commit(NULL, 0);
    assert_int_equal(tracer_exported(NULL), 0);
}

/* Spans from two workers arrive, over one kept-alive connection. */
static void test_export_delivers(void **state)
{
    (void)state;
    collector_t c;
    coll_start(&c, NULL, 0);
    metrics_registry_t *m = metrics_registry_new(2, "test");
    config_tracing_t cfg;
    char url[128];
    tracer_t *t = start_tracer(&cfg, url, sizeof url, c.port, "/v1/traces", 2, m);

    commit_span(t, 0, 1);
    commit_span(t, 0, 2);
    commit_span(t, 0, 3);
    commit_span(t, 1, 4);
    commit_span(t, 1, 5);
    WAIT_FOR(tracer_exported(t) == 5);
    assert_int_equal(coll_get(&c, &c.spans), 5);
    for (int i = 1; i <= 5; i++)
        assert_int_equal(c.seen[i], 1);

    pthread_mutex_lock(&c.mu);
    assert_true(strncmp(c.last_head, "POST /v1/traces HTTP/1.1\r\n", 26) == 0);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%u\r\n", c.port);
    assert_non_null(strstr(c.last_head, host));
    assert_non_null(strcasestr(c.last_head, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strcasestr(c.last_head, "\r\nContent-Length: "));
    assert_string_equal(c.last_service, "svc-test");
    pthread_mutex_unlock(&c.mu);

    /* A second batch reuses the connection. */
    commit_span(t, 1, 6);
    commit_span(t, 0, 7);
    WAIT_FOR(tracer_exported(t) == 7);
    assert_int_equal(coll_get(&c, &c.accepts), 1);
    assert_int_equal(coll_get(&c, &c.spans), 7);

    tracer_free(t);
    assert_true(dropped(m) == 0);
    assert_true(failures(m) == 0);
    metrics_registry_free(m);
    coll_stop(&c);
}

/* Chunked answers keep the connection; a body ended by closing is read to
 * the end and the next batch goes over a new connection. */
static void test_export_response_framings(void **state)
{
    (void)state;
    static const act_t script[] = {ACT_200_CHUNKED, ACT_200_CHUNKED, ACT_200_EOF};
    collector_t c;
    coll_start(&c, script, 3);
    metrics_registry_t *m = metrics_registry_new(1, "test");
    config_tracing_t cfg;
    char url[128];
    tracer_t *t = start_tracer(&cfg, url, sizeof url, c.port, "/v1/traces", 1, m);
    for (uint8_t i = 1; i <= 4; i++) {
        commit_span(t, 0, i);
        WAIT_FOR(tracer_exported(t) == i);
    }
    assert_int_equal(coll_get(&c, &c.requests), 4);
    assert_int_equal(coll_get(&c, &c.accepts), 2);
    tracer_free(t);
    assert_true(failures(m) == 0);
    assert_true(dropped(m) == 0);
    metrics_registry_free(m);
    coll_stop(&c);
}

/* A 500 is one failure and its spans dropped; export resumes afterwards.
 * The endpoint has no path: /v1/traces is used. */
static void test_export_500(void **state)
{
    (void)state;
    static const act_t script[] = {ACT_500};
    collector_t c;
    coll_start(&c, script, 1);
    metrics_registry_t *m = metrics_registry_new(1, "test");
    config_tracing_t cfg;
    char url[128];
    tracer_t *t = start_tracer(&cfg, url, sizeof url, c.port, "", 1, m);

    commit_span(t, 0, 1);
    commit_span(t, 0, 2);
    commit_span(t, 0, 3);
    WAIT_FOR(failures(m) == 1 && dropped(m) == 3);
    assert_int_equal(tracer_exported(t), 0);
    pthread_mutex_lock(&c.mu);
    assert_true(strncmp(c.last_head, "POST /v1/traces HTTP/1.1\r\n", 26) == 0);
    pthread_mutex_unlock(&c.mu);

    /* Spans made while the exporter backs off are dropped; keep making them
     * until one gets through. */
    size_t committed = 3;
    uint8_t tag = 10;
    while (tracer_exported(t) == 0) {
        assert_true(committed < WAIT_MS / 5);
        commit_span(t, 0, tag++);
        committed++;
        sleep_ms(5);
    }
    tracer_free(t);
    /* Every span is either exported (the collector saw it and said 200) or
     * counted as dropped. */
    assert_true(failures(m) == 1);
    assert_true((double)(coll_get(&c, &c.spans) - 3) + dropped(m) == (double)committed);
    metrics_registry_free(m);
    coll_stop(&c);
}

/* The collector closes without answering: on a reused connection that is a
 * stale keep-alive (sent again on a new one), on a new one a failure. */
static void test_export_closed_without_answer(void **state)
{
    (void)state;
    static const act_t script[] = {ACT_200, ACT_CLOSE, ACT_CLOSE};
    collector_t c;
    coll_start(&c, script, 3);
    metrics_registry_t *m = metrics_registry_new(1, "test");
    config_tracing_t cfg;
    char url[128];
    tracer_t *t = start_tracer(&cfg, url, sizeof url, c.port, "/v1/traces", 1, m);

    commit_span(t, 0, 1);
    WAIT_FOR(tracer_exported(t) == 1);
    commit_span(t, 0, 2);
    commit_span(t, 0, 3);
    WAIT_FOR(failures(m) == 1 && dropped(m) == 2);
    assert_int_equal(coll_get(&c, &c.requests), 3); /* the same batch, sent twice */
    assert_int_equal(coll_get(&c, &c.accepts), 2);

    for (int i = 0; tracer_exported(t) == 1; i++) {
        assert_true(i < WAIT_MS / 20);
        commit_span(t, 0, (uint8_t)(10 + i));
        sleep_ms(20);
    }
    assert_int_equal(coll_get(&c, &c.accepts), 3);
    tracer_free(t);
    assert_true(failures(m) == 1);
    metrics_registry_free(m);
    coll_stop(&c);
}

/* Nobody listens: failures are counted, every span is accounted for, and
 * workers keep getting slots (or NULL) without waiting on the exporter. */
static void test_export_refused(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);

    metrics_registry_t *m = metrics_registry_new(1, "test");
    config_tracing_t cfg;
    char url[128];
    tracer_t *t = start_tracer(&cfg, url, sizeof url, ntohs(a.sin_port), "/v1/traces", 1, m);
    for (uint8_t i = 0; i < 5; i++)
        commit_span(t, 0, i);
    WAIT_FOR(failures(m) >= 1 && dropped(m) >= 5);

    size_t committed = 5, refused = 0;
    for (size_t i = 0; i < 3 * TRACE_RING_SPANS; i++) {
        trace_span_t *s = tracer_reserve(t, 0);
        if (!s) {
            refused++;
            continue;
        }
        fill_server(s);
        tracer_commit(t, 0);
        committed++;
    }
    tracer_free(t);
    assert_true(dropped(m) == (double)(committed + refused));
    assert_true(failures(m) >= 1);
    metrics_registry_free(m);
}

/* While the collector hangs, a worker's ring fills: reserve returns NULL and
 * counts the drop; other workers are unaffected. */
static void test_ring_full(void **state)
{
    (void)state;
    static const act_t script[] = {ACT_HANG};
    collector_t c;
    coll_start(&c, script, 1);
    metrics_registry_t *m = metrics_registry_new(2, "test");
    config_tracing_t cfg;
    char url[128];
    tracer_t *t = start_tracer(&cfg, url, sizeof url, c.port, "/v1/traces", 2, m);

    commit_span(t, 0, 1);
    WAIT_FOR(coll_get(&c, &c.requests) == 1); /* the exporter now waits for an answer */

    size_t committed = 1, refused = 0;
    for (size_t i = 0; i < 64 * TRACE_RING_SPANS; i++) {
        trace_span_t *s = tracer_reserve(t, 0);
        if (!s) {
            refused = 1;
            break;
        }
        fill_server(s);
        tracer_commit(t, 0);
        committed++;
    }
    assert_int_equal(refused, 1);
    assert_true(dropped(m) >= 1);
    /* A commit without a reservation publishes nothing. */
    tracer_commit(t, 0);
    commit_span(t, 1, 2);
    committed++;
    assert_null(tracer_reserve(t, 2)); /* no such worker: counted too */
    refused++;

    assert_int_equal(tracer_exported(t), 0);
    coll_stop(&c); /* the hung answer ends: a failure */
    tracer_free(t);
    assert_true(dropped(m) == (double)(committed + refused));
    assert_true(failures(m) >= 1);
    metrics_registry_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_valid),
        cmocka_unit_test(test_traceparent_future_version),
        cmocka_unit_test(test_traceparent_invalid),
        cmocka_unit_test(test_traceparent_format_patch),
        cmocka_unit_test(test_datadog_id),
        cmocka_unit_test(test_dd_span_ids),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_otlp_encoding),
        cmocka_unit_test(test_tracer_new_errors),
        cmocka_unit_test(test_export_delivers),
        cmocka_unit_test(test_export_response_framings),
        cmocka_unit_test(test_export_500),
        cmocka_unit_test(test_export_closed_without_answer),
        cmocka_unit_test(test_export_refused),
        cmocka_unit_test(test_ring_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
