/* libFuzzer target: client bytes fed through the real client connection
 * (proxy/client_conn) over a socketpair, in pieces whose sizes input byte 0
 * seeds; an owner of the fuzzer's own checks each head the connection hands
 * over (spans inside the raw head, the strict grammar held, the rewritten
 * upstream head read back framing the body the same way) and each body piece
 * (Content-Length bodies counted exactly, chunked ones re-framed by ficus),
 * then answers so that pipelined requests follow. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "http/parser.h"
#include "proxy/client_conn.h"
#include "proxy/rewrite.h"

#include "fuzz_check.h"

static http_head_t head; /* the connection parses into it */
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

/* --- the owner of the connection --- */

typedef struct owner {
    client_conn_t cc; /* first: the ops get the client_conn_t */
    uint32_t seed;
    int closed;
    bool has_cl;
    uint64_t content_length;
    uint64_t body; /* bytes handed over so far */
} owner_t;

static void answer(owner_t *o)
{
    static const char resp[] = "HTTP/1.1 204 No Content\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)resp, sizeof resp - 1);
    if (client_conn_write(&o->cc, &b, 1) < 0) {
        client_conn_abort(&o->cc);
        return;
    }
    client_conn_response_done(&o->cc);
}

static void on_request(client_conn_t *cc, const http_head_t *h, const char *raw, size_t n)
{
    owner_t *o = (owner_t *)cc;
    CHECK(h == &head);
    check_head(raw, n);
    check_rewrite(o->seed++);
    o->has_cl = h->has_content_length;
    o->content_length = h->content_length;
    o->body = 0;
    if (cc->body_done) {
        CHECK(!h->chunked && h->content_length == 0);
        answer(o);
    }
}

static size_t body_room(client_conn_t *cc)
{
    owner_t *o = (owner_t *)cc;
    return 1 + o->seed % 4096; /* the proxy takes what it can keep */
}

static void on_body(client_conn_t *cc, const char *data, size_t len, bool end)
{
    owner_t *o = (owner_t *)cc;
    (void)data;
    o->body += len;
    if (o->has_cl)
        CHECK(o->body <= o->content_length && (!end || o->body == o->content_length));
    if (end)
        answer(o);
}

static void on_reject(client_conn_t *cc, end_reason_t why, const char *message)
{
    (void)message;
    CHECK(why != END_OK);
    answer((owner_t *)cc);
}

static void on_gone(client_conn_t *cc, end_reason_t why)
{
    CHECK(why == END_CLIENT_CLOSED || why == END_BAD_REQUEST || why == END_BODY_TOO_LARGE);
    client_conn_abort(cc);
}

static void on_drained(client_conn_t *cc) { (void)cc; }
static void on_timeout(client_conn_t *cc) { client_conn_abort(cc); }
static void on_raw_data(client_conn_t *cc, const char *data, size_t len)
{
    (void)cc;
    (void)data;
    (void)len;
}
static void on_raw_eof(client_conn_t *cc, ssize_t status)
{
    (void)status;
    client_conn_abort(cc);
}
static void on_close(client_conn_t *cc) { ((owner_t *)cc)->closed = 1; }

static const client_conn_ops_t ops = {
    .on_request = on_request,
    .body_room = body_room,
    .on_body = on_body,
    .on_reject = on_reject,
    .on_gone = on_gone,
    .on_drained = on_drained,
    .on_timeout = on_timeout,
    .on_raw_data = on_raw_data,
    .on_raw_eof = on_raw_eof,
    .on_close = on_close,
};

static uv_loop_t loop;
static pbuf_pool_t pool;
static char rbuf[IO_BUF_BYTES];
static char scratch[2 * IO_BUF_BYTES + CHUNKED_OUT_SLACK];
static config_server_t server;
static client_conn_env_t env;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        CHECK(uv_loop_init(&loop) == 0);
        pbuf_pool_init(&pool, IO_BUF_BYTES + 16 * 1024 + 8192, 64);
        server.header_timeout_ms = 60000;
        server.idle_timeout_ms = 60000;
        server.max_header_bytes = 16 * 1024;
        server.max_body_bytes = 1u << 20;
        env = (client_conn_env_t){.loop = &loop,
                                  .pool = &pool,
                                  .rbuf = rbuf,
                                  .head = &head,
                                  .scratch = scratch,
                                  .scratch_bytes = sizeof scratch,
                                  .server = &server};
        ready = true;
    }
    if (size < 2)
        return 0;
    uint32_t seed = 0x9e3779b9u ^ ((uint32_t)data[0] * 0x01000193u);
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    int sndbuf = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    owner_t *o = calloc(1, sizeof *o);
    CHECK(o);
    o->seed = seed;
    CHECK(client_conn_open(&o->cc, &env, &ops, sv[0], NULL) == 0);
    for (size_t off = 0; off < len && !o->closed;) {
        size_t piece = next_size(&seed, len - off);
        ssize_t w = write(sv[1], in + off, piece);
        if (w > 0)
            off += (size_t)w;
        uv_run(&loop, UV_RUN_NOWAIT);
        if (w <= 0)
            break; /* the connection stopped reading (paused, lingering) */
    }
    for (int i = 0; i < 4 && !o->closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    close(sv[1]);
    for (int i = 0; i < 100 && !o->closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    client_conn_env_stop(&env);
    while (!o->closed)
        uv_run(&loop, UV_RUN_ONCE);
    free(o);
    return 0;
}
