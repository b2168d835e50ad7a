/* libFuzzer target: a target's HTTP/2 bytes fed to an upstream connection's
 * session (proxy/h2_upstream) after a request was written through it (with
 * or without a body, chunked or not, as input byte 0 says), in pieces. What
 * the session hands back must read as one well-framed HTTP/1.1 response (or
 * interim ones first) by ficus's own strict parser, never more than one
 * final response; the owner pausing and resuming in between changes nothing;
 * nothing leaks when the session ends at any point. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "http/parser.h"
#include "proxy/h2_upstream.h"

#include "fuzz_check.h"

typedef struct owner {
    http_parser_t p;
    http_head_t head;
    int finals; /* final heads read */
    bool ended; /* the response ended */
    bool failed;
    bool broken; /* the bytes did not parse: the session must have failed too */
    pbuf_t *held;
    pbuf_pool_t *pool;
} owner_t;

static int o_send(void *ctx, const uv_buf_t *bufs, unsigned n)
{
    (void)ctx;
    (void)bufs;
    (void)n;
    return 0; /* the target takes everything */
}
static bool o_pending(void *ctx)
{
    (void)ctx;
    return false;
}

static void o_deliver(void *ctx, const char *data, size_t len)
{
    owner_t *o = ctx;
    CHECK(!o->failed);
    while (len && !o->broken) {
        if (o->ended) {
            o->broken = true; /* bytes after the end: never expected */
            CHECK(0);
        }
        int ev = 0;
        long k = http_parser_feed(&o->p, &o->head, data, len, &ev);
        if (k < 0) {
            o->broken = true;
            CHECK(0); /* ficus wrote something its own parser refuses */
        }
        if ((ev & HTTP_EV_HEAD) && o->head.status >= 200)
            o->finals++;
        if ((ev & HTTP_EV_END) && o->head.status >= 200)
            o->ended = true;
        else if ((ev & HTTP_EV_END))
            http_parser_init_response(&o->p); /* an interim head: the final one follows */
        CHECK(k > 0 || ev);
        data += k;
        len -= (size_t)k;
    }
    CHECK(o->finals <= 1);
}
static void o_drained(void *ctx) { (void)ctx; }
static void o_failed(void *ctx, int status)
{
    owner_t *o = ctx;
    CHECK(status < 0);
    o->failed = true;
}

static const h2_upstream_io_t io = {
    .send = o_send,
    .send_pending = o_pending,
    .deliver = o_deliver,
    .drained = o_drained,
    .failed = o_failed,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pbuf_pool_t pool;
    static bool ready;
    if (!ready) {
        pbuf_pool_init(&pool, IO_BUF_BYTES + 16 * 1024 + 8192, 16);
        ready = true;
    }
    if (size < 1)
        return 0;
    owner_t o;
    memset(&o, 0, sizeof o);
    o.pool = &pool;
    http_parser_init_response(&o.p);
    h2_upstream_t *u = h2_upstream_new(&pool, &io, &o, data[0] & 1);
    CHECK(u);
#define REQ(s)                                                                                     \
    {                                                                                              \
        s, sizeof s - 1                                                                            \
    }
    static const struct {
        const char *s;
        size_t n;
    } reqs[] = {
        REQ("GET /a HTTP/1.1\r\nHost: t\r\n\r\n"),
        REQ("POST /b HTTP/1.1\r\nHost: t\r\ncontent-type: application/grpc\r\n"
            "content-length: 5\r\n\r\n\x00\x00\x00\x00\x00"),
        REQ("PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
            "chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        REQ("HEAD /d HTTP/1.1\r\nHost: t\r\n\r\n"),
    };
    unsigned which = (data[0] >> 1) & 3;
    if (which == 3)
        http_parser_expect_no_body(&o.p, true);
    uv_buf_t b = uv_buf_init((char *)reqs[which].s, (unsigned)reqs[which].n);
    CHECK(h2_upstream_write(u, &b, 1) >= 0);
    uint32_t seed = data[0] * 2654435761u;
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    while (left) {
        seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
        size_t piece = 1 + seed % 97;
        if (piece > left)
            piece = left;
        if (seed & 64)
            h2_upstream_pause(u, (seed & 128) != 0);
        if (h2_upstream_feed(u, (const char *)p, piece) != 0)
            break;
        p += piece;
        left -= piece;
    }
    h2_upstream_pause(u, false);
    h2_upstream_free(u);
    return 0;
}
