/* libFuzzer target: a target's HTTP/2 bytes fed to an upstream connection's
 * session (proxy/h2_upstream) after two requests were written through two
 * of its streams (ids 1 and 3; with or without a body, chunked or not, as
 * input byte 0 says), in pieces. What each stream hands its owner must read
 * as one well-framed HTTP/1.1 response (or interim ones first) by ficus's
 * own strict parser, never more than one final response, and nothing after
 * a failure; owners pausing, resuming and letting go in between change
 * nothing for the other stream; nothing leaks when the session ends at any
 * point. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "http/parser.h"
#include "http/h2_upstream.h"

#include "fuzz_check.h"

typedef struct owner {
    http_parser_t p;
    http_head_t head;
    int finals; /* final heads read */
    bool ended; /* the response ended */
    bool failed;
    bool broken; /* the bytes did not parse: the session must have failed too */
    bool gone;   /* let go of its stream: told nothing more */
    bool head_request;
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
    CHECK(!o->failed && !o->gone);
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
        if ((ev & HTTP_EV_HEAD) && !(ev & HTTP_EV_END) && (size_t)k == len) {
            int ev2 = 0; /* an empty body ends on the next feed */
            CHECK(http_parser_feed(&o->p, &o->head, data + k, 0, &ev2) >= 0);
            ev |= ev2;
        }
        if ((ev & HTTP_EV_END) && o->head.status >= 200)
            o->ended = true;
        else if ((ev & HTTP_EV_END)) {
            http_parser_init_response(&o->p); /* an interim head: the final one follows */
            http_parser_expect_no_body(&o->p, o->head_request);
        }
        CHECK(k > 0 || ev);
        data += k;
        len -= (size_t)k;
    }
    CHECK(o->finals <= 1);
}
static void o_drained(void *ctx)
{
    owner_t *o = ctx;
    CHECK(!o->failed && !o->gone);
}
static void o_failed(void *ctx, int status, bool refused)
{
    owner_t *o = ctx;
    (void)refused;
    CHECK(status < 0 && !o->failed && !o->gone);
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
    h2_upstream_t *u = h2_upstream_new(&pool, &io, NULL, data[0] & 1);
    CHECK(u);
    owner_t o[2];
    h2_ustream_t *st[2];
    for (int i = 0; i < 2; i++) {
        memset(&o[i], 0, sizeof o[i]);
        http_parser_init_response(&o[i].p);
        unsigned which = (data[0] >> (1 + 2 * i)) & 3;
        o[i].head_request = which == 3;
        http_parser_expect_no_body(&o[i].p, o[i].head_request);
        st[i] = h2_ustream_open(u, &o[i]);
        CHECK(st[i]);
        uv_buf_t b = uv_buf_init((char *)reqs[which].s, (unsigned)reqs[which].n);
        CHECK(h2_ustream_write(st[i], &b, 1) >= 0);
    }
    uint32_t seed = data[0] * 2654435761u;
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    while (left) {
        seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
        size_t piece = 1 + seed % 97;
        if (piece > left)
            piece = left;
        int i = (seed >> 8) & 1;
        if ((seed & 64) && st[i])
            h2_ustream_pause(st[i], (seed & 128) != 0);
        if ((seed & 0xf000) == 0x5000 && st[i]) {
            h2_ustream_close(st[i]); /* the owner is done with it */
            st[i] = NULL;
            o[i].gone = true;
        }
        if (h2_upstream_feed(u, (const char *)p, piece) != 0) {
            h2_upstream_lost(u, UV_ECONNRESET); /* the connection closes */
            break;
        }
        p += piece;
        left -= piece;
    }
    for (int i = 0; i < 2; i++)
        if (st[i])
            h2_ustream_pause(st[i], false);
    /* When the connection goes, no stream is left waiting. */
    h2_upstream_lost(u, UV_EOF);
    for (int i = 0; i < 2; i++)
        CHECK(!st[i] || o[i].ended || o[i].failed);
    h2_upstream_free(u);
    return 0;
}
