/* libFuzzer target: chunked bodies after a fixed head, de-chunk sink on (as
 * proxy.c relays to an HTTP/1.0 client). Byte 0 picks request or response and
 * seeds the pieces. Whole and in pieces must agree, the sink never holds more
 * than was fed, and it holds the chunk data an independent reading finds.
 * Then the body is re-framed in pieces (as proxy.c forwards it): what ficus
 * writes must parse back, strictly, to the same data, in canonical form. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

#include "fuzz_check.h"

static const char req_head[] = "POST /upload HTTP/1.1\r\nHost: fuzz\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n";
static const char resp_head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

static http_head_t head;

typedef struct result {
    bool error;
    bool end;
    size_t consumed; /* raw body bytes, framing included */
    char *decoded;
    size_t decoded_len;
} result_t;

static void start(http_parser_t *p, bool response)
{
    int ev;
    const char *h = response ? resp_head : req_head;
    size_t hl = response ? sizeof resp_head - 1 : sizeof req_head - 1;
    if (response)
        http_parser_init_response(p);
    else
        http_parser_init_request(p);
    long k = http_parser_feed(p, &head, h, hl, &ev);
    CHECK(k == (long)hl && ev == HTTP_EV_HEAD && head.chunked);
}

static size_t next_size(uint32_t *s, size_t n)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    size_t r = 1 + (*s >> 3) % 24;
    return r < n ? r : n;
}

/* Feeds body in pieces (one piece of everything when seed is NULL). Like
 * proxy.c, the sink is emptied after each feed; a sink as large as the
 * piece must be enough. */
static result_t run(bool response, const char *body, size_t len, uint32_t *seed)
{
    result_t r = {.decoded = malloc(len + 1)};
    CHECK(r.decoded);
    http_parser_t p;
    start(&p, response);
    char *sink = malloc(len + 1);
    CHECK(sink);
    while (r.consumed < len && !r.end) {
        size_t n = len - r.consumed;
        size_t piece = seed ? next_size(seed, n) : n;
        http_parser_set_sink(&p, sink, piece);
        int ev;
        long k = http_parser_feed(&p, &head, body + r.consumed, piece, &ev);
        CHECK(k <= (long)piece);
        if (k < 0) {
            r.error = true;
            break;
        }
        CHECK(!(ev & HTTP_EV_HEAD));
        r.end = (ev & HTTP_EV_END) != 0;
        CHECK(r.end || k == (long)piece);
        /* Never more out of the sink than went in. */
        CHECK(p.sink_len <= (size_t)k);
        memcpy(r.decoded + r.decoded_len, sink, p.sink_len);
        r.decoded_len += p.sink_len;
        r.consumed += (size_t)k;
        CHECK(p.body_bytes == r.decoded_len);
        CHECK(r.decoded_len <= r.consumed);
    }
    free(sink);
    return r;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* An independent reading of a complete chunked body: size line (hex, then
 * anything up to LF), data, CRLF; the last chunk is size 0. */
static void check_reference(const char *b, size_t len, const char *decoded, size_t dlen)
{
    size_t i = 0, out = 0;
    for (;;) {
        uint64_t size = 0;
        size_t digits = 0;
        int v;
        while (i < len && (v = hexval(b[i])) >= 0) {
            size = size * 16 + (uint64_t)v;
            i++;
            digits++;
        }
        CHECK(digits > 0);
        const char *lf = memchr(b + i, '\n', len - i);
        CHECK(lf);
        i = (size_t)(lf - b) + 1;
        if (size == 0)
            break;
        CHECK(size <= len - i && out + size <= dlen);
        CHECK(memcmp(b + i, decoded + out, size) == 0);
        out += size;
        i += size;
        CHECK(i + 2 <= len && b[i] == '\r' && b[i + 1] == '\n');
        i += 2;
    }
    CHECK(out == dlen);
}

/* Re-frames body in pieces; returns the output (NULL when refused). */
static char *reframe(bool response, const char *body, size_t len, uint32_t *seed, size_t *out_len)
{
    http_parser_t p;
    start(&p, response);
    size_t cap = len + 64 + CHUNKED_OUT_SLACK;
    char *out = malloc(cap);
    CHECK(out);
    size_t o = 0, used = 0;
    bool end = false;
    while (used < len && !end) {
        size_t piece = next_size(seed, len - used);
        http_parser_set_reframe(&p, true);
        http_parser_set_sink(&p, out + o, piece + CHUNKED_OUT_SLACK);
        int ev;
        long k = http_parser_feed(&p, &head, body + used, piece, &ev);
        if (k < 0) {
            free(out);
            return NULL;
        }
        CHECK(p.sink_len <= piece + CHUNKED_OUT_SLACK);
        end = (ev & HTTP_EV_END) != 0;
        CHECK(end || k == (long)piece);
        o += p.sink_len;
        used += (size_t)k;
    }
    *out_len = o;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool response = data[0] & 1;
    uint32_t seed = 0x2545f491u ^ ((uint32_t)data[0] << 8);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    result_t whole = run(response, body, len, NULL);
    result_t split = run(response, body, len, &seed);
    /* Piece boundaries change nothing. */
    CHECK(whole.error == split.error);
    CHECK(whole.end == split.end);
    if (!whole.error) {
        CHECK(whole.consumed == split.consumed);
        CHECK(whole.decoded_len == split.decoded_len);
        CHECK(memcmp(whole.decoded, split.decoded, whole.decoded_len) == 0);
    }
    if (whole.end)
        check_reference(body, whole.consumed, whole.decoded, whole.decoded_len);
    size_t rl = 0;
    char *re = reframe(response, body, len, &seed, &rl);
    CHECK((re == NULL) == whole.error);
    if (re && whole.end) {
        /* What ficus writes reads back to the same data, and is canonical:
         * re-framing it again changes nothing. */
        result_t back = run(response, re, rl, NULL);
        CHECK(!back.error && back.end && back.consumed == rl);
        CHECK(back.decoded_len == whole.decoded_len);
        CHECK(memcmp(back.decoded, whole.decoded, whole.decoded_len) == 0);
        size_t rl2 = 0;
        char *re2 = reframe(response, re, rl, &seed, &rl2);
        CHECK(re2 && rl2 == rl && memcmp(re, re2, rl) == 0);
        free(re2);
        free(back.decoded);
    }
    free(re);
    free(whole.decoded);
    free(split.decoded);
    return 0;
}
