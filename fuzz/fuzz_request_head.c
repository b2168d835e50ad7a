/* libFuzzer target: client bytes fed as client_conn feeds them (first read
 * as it came, a partial head again whole once http_head_end finds its end,
 * bodies in pieces, pipelined requests after), each head then rewritten.
 * Input byte 0 seeds the read sizes; the rest is what the client sent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "http/parser.h"
#include "proxy/rewrite.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

#define MAX_MESSAGES 64

static http_head_t head;
static http_head_t reparsed;
static char big[64 * 1024];
static char small[128 + 1];

static size_t next_size(uint32_t *s, size_t n)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    /* Mostly small reads, now and then everything at once. */
    size_t r = (*s & 7) == 0 ? n : 1 + (*s >> 4) % 16;
    return r < n ? r : n;
}

static bool in_span(const char *p, size_t len, const char *base, size_t n)
{
    return p >= base && p + len <= base + n;
}

/* The head's spans lie in the consumed bytes, and the strict grammar held:
 * no CR, LF or NUL inside a value, no whitespace around one, no folded or
 * bare-LF line anywhere in the head. */
static void check_head(const char *m, size_t k)
{
    CHECK(head.method_len > 0 && in_span(head.method, head.method_len, m, k));
    CHECK(head.target_len > 0 && in_span(head.target, head.target_len, m, k));
    CHECK(head.http_major == 1 && head.http_minor <= 1);
    CHECK(head.n_headers <= MAX_REQUEST_HEADERS);
    CHECK(!(head.chunked && head.has_content_length));
    for (uint32_t i = 0; i < head.n_headers; i++) {
        const http_header_t *h = &head.headers[i];
        CHECK(h->name_len > 0 && in_span(h->name, h->name_len, m, k));
        CHECK(in_span(h->value, h->value_len, m, k));
        for (uint32_t j = 0; j < h->name_len; j++)
            CHECK(h->name[j] > ' ' && h->name[j] != ':' && h->name[j] != 0x7f);
        for (uint32_t j = 0; j < h->value_len; j++)
            CHECK(h->value[j] != '\r' && h->value[j] != '\n' && h->value[j] != '\0');
        if (h->value_len) {
            CHECK(h->value[0] != ' ' && h->value[0] != '\t');
            CHECK(h->value[h->value_len - 1] != ' ' && h->value[h->value_len - 1] != '\t');
        }
    }
    size_t end = http_head_end(m, k, 0);
    CHECK(end > 0 && end <= k);
    /* From the request line on: empty lines before it are skipped. */
    for (size_t i = (size_t)(head.method - m); i < k; i++) {
        if (m[i] != '\n')
            continue;
        CHECK(i > 0 && m[i - 1] == '\r');                           /* bare LF */
        CHECK(i + 1 >= k || (m[i + 1] != ' ' && m[i + 1] != '\t')); /* obs-fold */
    }
}

/* The upstream head: bounded by cap, and read back by a parser it frames
 * the body exactly as the client's head did (no smuggling through rewrite). */
static void check_rewrite(uint32_t seed)
{
    const http_header_t *host = http_header_find(head.headers, head.n_headers, "host", 4);
    rewrite_request_t rw = {
        .head = &head,
        .target = head.target,
        .target_len = head.target_len,
        .host = (seed & 1) && host ? host->value : NULL,
        .host_len = (seed & 1) && host ? host->value_len : 0,
        .peer_ip = "203.0.113.9",
        .peer_ip_len = 11,
        .peer_trusted = (seed & 2) != 0,
        .proto = "http",
        .request_id = "fuzz-req-1",
        .request_id_len = 10,
    };
    long n = rewrite_request_head(&rw, big, sizeof big);
    CHECK(n == FE_TOOBIG || (n > 0 && (size_t)n <= sizeof big));

    size_t cap = seed % (sizeof small - 1);
    small[cap] = '#';
    long s = rewrite_request_head(&rw, small, cap);
    CHECK(small[cap] == '#');
    CHECK(s == FE_TOOBIG || (s > 0 && (size_t)s <= cap));
    if (s > 0)
        CHECK(s == n && memcmp(small, big, (size_t)s) == 0);
    if (n <= 0)
        return;

    http_parser_t p;
    http_parser_init_request(&p);
    int ev;
    long k = http_parser_feed(&p, &reparsed, big, (size_t)n, &ev);
    if (k < 0 && http_parser_error(&p) == HTTP_ERR_TOO_MANY)
        return; /* ficus's own limit, plus the headers it adds */
    CHECK(k == n && (ev & HTTP_EV_HEAD));
    CHECK(reparsed.chunked == head.chunked);
    CHECK(reparsed.has_content_length == head.has_content_length);
    CHECK(reparsed.content_length == head.content_length);
    CHECK(reparsed.method_len == head.method_len &&
          memcmp(reparsed.method, head.method, head.method_len) == 0);
}

/* One message from m: returns the bytes it took, or 0 to stop. */
static size_t one_message(http_parser_t *p, const char *m, size_t n, uint32_t *seed)
{
    int ev;
    size_t first = next_size(seed, n);
    long k = http_parser_feed(p, &head, m, first, &ev);
    CHECK(k <= (long)first);
    if (k < 0) {
        CHECK(http_parser_error(p) == HTTP_ERR_BAD || http_parser_error(p) == HTTP_ERR_TOO_MANY ||
              http_parser_error(p) == HTTP_ERR_NOT_IMPLEMENTED);
        return 0;
    }
    CHECK(!(ev & HTTP_EV_END) || (ev & HTTP_EV_HEAD));
    if (!(ev & HTTP_EV_HEAD)) {
        CHECK(k == (long)first);
        /* The rest arrives; the head is parsed again once whole. */
        http_parser_reset(p);
        if (!http_head_end(m, n, first))
            return 0;
        k = http_parser_feed(p, &head, m, n, &ev);
        CHECK(k <= (long)n);
        if (k < 0 || !(ev & HTTP_EV_HEAD))
            return 0;
    }
    CHECK(k > 0);
    check_head(m, (size_t)k);
    size_t used = (size_t)k;
    const char *method = head.method;
    uint32_t n_headers = head.n_headers;
    uint64_t raw = 0;
    /* A message without a body ends right after its head; client_conn asks
     * before routing. A head that was reported is one ficus routes: its
     * framing must not be refused afterwards. */
    long z = http_parser_feed(p, &head, m + used, 0, &ev);
    CHECK(z == 0 && !(ev & HTTP_EV_HEAD));
    check_rewrite(*seed);
    bool end = (ev & HTTP_EV_END) != 0;
    if (end)
        CHECK(!head.chunked && head.content_length == 0);
    while (!end) {
        if (used == n)
            return 0; /* the client stopped sending */
        size_t piece = next_size(seed, n - used);
        k = http_parser_feed(p, &head, m + used, piece, &ev);
        CHECK(k <= (long)piece);
        if (k < 0)
            return 0;
        CHECK(!(ev & HTTP_EV_HEAD));
        /* The head stays valid while its body streams. */
        CHECK(head.method == method && head.n_headers == n_headers);
        end = (ev & HTTP_EV_END) != 0;
        CHECK(end || k == (long)piece);
        used += (size_t)k;
        raw += (uint64_t)k;
        CHECK(p->body_bytes <= raw);
        if (head.has_content_length) {
            CHECK(p->body_bytes == raw && raw <= head.content_length);
            if (end)
                CHECK(raw == head.content_length);
        }
    }
    return used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = 0x9e3779b9u ^ ((uint32_t)data[0] * 0x01000193u);
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    http_parser_t p;
    http_parser_init_request(&p);
    size_t off = 0;
    for (int i = 0; i < MAX_MESSAGES && off < len; i++) {
        size_t used = one_message(&p, in + off, len - off, &seed);
        if (!used)
            break;
        off += used;
        CHECK(off <= len);
    }
    return 0;
}
