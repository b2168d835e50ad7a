/* libFuzzer target: a client's HTTP/2 bytes (after the preface, which the
 * target sends) fed through the real client connection and HTTP/2 server
 * (proxy/client_conn, proxy/h2_server with libnghttp2) over a socketpair,
 * in pieces whose sizes input byte 0 seeds. Each stream's request is
 * checked as the request path would read it (the head written for it
 * parses, its spans lie in it, a Content-Length body comes exactly) and
 * answered in one of several ways (a body with a length, a chunked one, no
 * body, an interim answer first), so that responses, flow control and
 * resets run too. Nothing may leak: every stream and the connection close. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/defaults.h"
#include "http/parser.h"
#include "proxy/client_conn.h"
#include "proxy/h2_server.h"

#include "fuzz_check.h"

static http_head_t head;
static int live_streams;

static size_t next_size(uint32_t *s, size_t n)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    size_t r = (*s & 7) == 0 ? n : 1 + (*s >> 4) % 64;
    return r < n ? r : n;
}

/* --- a stream's request --- */

typedef struct stream_owner {
    client_conn_t cc;
    uint32_t seed;
    bool has_cl;
    uint64_t content_length;
    uint64_t body;
    bool answered;
} stream_owner_t;

static void answer(stream_owner_t *o)
{
    static const char *const resp[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
         "3\r\nabc\r\n0\r\n\r\n"),
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
    };
    if (o->answered)
        return;
    o->answered = true;
    const char *r = resp[o->seed % 4];
    size_t n = strlen(r);
    /* In two writes, split where the seed says. */
    size_t cut = (o->seed >> 3) % (n + 1);
    uv_buf_t b[2] = {uv_buf_init((char *)r, (unsigned)cut),
                     uv_buf_init((char *)r + cut, (unsigned)(n - cut))};
    if (client_conn_write(&o->cc, b, 2) < 0) {
        client_conn_abort(&o->cc);
        return;
    }
    client_conn_response_done(&o->cc);
}

static void s_on_request(client_conn_t *cc, const http_head_t *h, const char *raw, size_t n)
{
    stream_owner_t *o = (stream_owner_t *)cc;
    CHECK(h->method_len > 0 && h->method >= raw && h->method + h->method_len <= raw + n);
    CHECK(h->target >= raw && h->target + h->target_len <= raw + n);
    CHECK(h->http_major == 1 && h->http_minor == 1);
    CHECK(!(h->chunked && h->has_content_length));
    for (uint32_t i = 0; i < h->n_headers; i++)
        for (uint32_t j = 0; j < h->headers[i].value_len; j++)
            CHECK(h->headers[i].value[j] != '\r' && h->headers[i].value[j] != '\n');
    o->has_cl = h->has_content_length;
    o->content_length = h->content_length;
    if (cc->body_done || (o->seed & 16))
        answer(o); /* at once, or once the body is in */
}

static size_t s_body_room(client_conn_t *cc)
{
    stream_owner_t *o = (stream_owner_t *)cc;
    o->seed = o->seed * 1103515245u + 12345u;
    return (o->seed >> 8) % 5 == 0 ? 0 : 24 + (o->seed >> 12) % 4096;
}

static void s_on_body(client_conn_t *cc, const char *data, size_t len, bool end)
{
    stream_owner_t *o = (stream_owner_t *)cc;
    (void)data;
    o->body += len;
    if (o->has_cl)
        CHECK(o->body <= o->content_length && (!end || o->body == o->content_length));
    if (end)
        answer(o);
    else if ((o->seed & 0x300) == 0)
        client_conn_pause(cc); /* a slow upstream: resumed below */
}

static void s_on_reject(client_conn_t *cc, end_reason_t why, const char *message)
{
    (void)message;
    CHECK(why != END_OK);
    answer((stream_owner_t *)cc);
}

static void s_on_gone(client_conn_t *cc, end_reason_t why)
{
    CHECK(why == END_CLIENT_CLOSED || why == END_BAD_REQUEST || why == END_BODY_TOO_LARGE);
    client_conn_abort(cc);
}

static void s_on_drained(client_conn_t *cc) { client_conn_resume(cc); }
static void s_on_timeout(client_conn_t *cc) { client_conn_abort(cc); }
static void s_on_raw_data(client_conn_t *cc, const char *data, size_t len)
{
    (void)cc;
    (void)data;
    (void)len;
    CHECK(0); /* a stream never switches protocols */
}
static void s_on_raw_eof(client_conn_t *cc, ssize_t status)
{
    (void)cc;
    (void)status;
    CHECK(0);
}
static void s_on_close(client_conn_t *cc)
{
    live_streams--;
    free(cc);
}

static const client_conn_ops_t stream_ops = {
    .on_request = s_on_request,
    .body_room = s_body_room,
    .on_body = s_on_body,
    .on_reject = s_on_reject,
    .on_gone = s_on_gone,
    .on_drained = s_on_drained,
    .on_timeout = s_on_timeout,
    .on_raw_data = s_on_raw_data,
    .on_raw_eof = s_on_raw_eof,
    .on_close = s_on_close,
};

/* --- the connection --- */

typedef struct carrier {
    client_conn_t cc;
    h2_server_t *h2;
    uint32_t seed;
    int closed;
} carrier_t;

static config_server_t server;
static client_conn_env_t env;
static h2_server_env_t h2env;
static unsigned protocol_errors;

static client_conn_t *on_stream_open(h2_server_t *srv, h2_stream_t *st)
{
    carrier_t *c = h2_server_ctx(srv);
    stream_owner_t *o = calloc(1, sizeof *o);
    CHECK(o);
    c->seed = c->seed * 1664525u + 1013904223u;
    o->seed = c->seed;
    live_streams++;
    CHECK(client_conn_open_carried(&o->cc, &env, &stream_ops, &h2_stream_carrier_ops, st, &c->cc) ==
          0);
    return &o->cc;
}

static void on_protocol_error(h2_server_t *srv, h2_err_t why)
{
    (void)srv;
    CHECK(why < H2_ERR_REASONS);
    protocol_errors++;
}

static const h2_server_ops_t h2_ops = {
    .stream_open = on_stream_open,
    .protocol_error = on_protocol_error,
};

static bool c_on_preface(client_conn_t *cc)
{
    carrier_t *c = (carrier_t *)cc;
    client_conn_h2(cc);
    c->h2 = h2_server_new(cc, &server, &h2env, &h2_ops, c);
    CHECK(c->h2);
    return true;
}

static void c_on_request(client_conn_t *cc, const http_head_t *h, const char *raw, size_t n)
{
    (void)h;
    (void)raw;
    (void)n;
    client_conn_abort(cc); /* the target always starts with the preface */
}
static size_t c_body_room(client_conn_t *cc)
{
    (void)cc;
    return 0;
}
static void c_on_body(client_conn_t *cc, const char *data, size_t len, bool end)
{
    (void)cc;
    (void)data;
    (void)len;
    (void)end;
}
static void c_on_reject(client_conn_t *cc, end_reason_t why, const char *message)
{
    (void)why;
    (void)message;
    client_conn_abort(cc);
}
static void c_on_gone(client_conn_t *cc, end_reason_t why)
{
    carrier_t *c = (carrier_t *)cc;
    (void)why;
    if (c->h2)
        h2_server_gone(c->h2);
    else
        client_conn_abort(cc);
}
static void c_on_drained(client_conn_t *cc)
{
    carrier_t *c = (carrier_t *)cc;
    if (c->h2)
        h2_server_on_drained(c->h2);
}
static void c_on_timeout(client_conn_t *cc)
{
    carrier_t *c = (carrier_t *)cc;
    if (c->h2)
        h2_server_on_timer(c->h2);
    else
        client_conn_abort(cc);
}
static void c_on_raw_data(client_conn_t *cc, const char *data, size_t len)
{
    carrier_t *c = (carrier_t *)cc;
    CHECK(c->h2);
    h2_server_feed(c->h2, data, len);
}
static void c_on_raw_eof(client_conn_t *cc, ssize_t status)
{
    carrier_t *c = (carrier_t *)cc;
    (void)status;
    if (c->h2)
        h2_server_gone(c->h2);
    else
        client_conn_abort(cc);
}
static void c_on_drain(client_conn_t *cc)
{
    carrier_t *c = (carrier_t *)cc;
    if (c->h2)
        h2_server_drain(c->h2);
}
static void c_on_close(client_conn_t *cc)
{
    carrier_t *c = (carrier_t *)cc;
    h2_server_free(c->h2);
    c->h2 = NULL;
    c->closed = 1;
}

static const client_conn_ops_t carrier_ops = {
    .on_request = c_on_request,
    .body_room = c_body_room,
    .on_body = c_on_body,
    .on_reject = c_on_reject,
    .on_gone = c_on_gone,
    .on_drained = c_on_drained,
    .on_timeout = c_on_timeout,
    .on_raw_data = c_on_raw_data,
    .on_raw_eof = c_on_raw_eof,
    .on_close = c_on_close,
    .on_preface = c_on_preface,
    .on_drain = c_on_drain,
};

static uv_loop_t loop;
static pbuf_pool_t pool;
static char rbuf[IO_BUF_BYTES];
static char scratch[2 * IO_BUF_BYTES + CHUNKED_OUT_SLACK];

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
        h2_server_env_init(&h2env, &loop);
        server.http2 = (config_http2_t){.enabled = true,
                                        .max_concurrent_streams = 16,
                                        .initial_window_size = 4096,
                                        .max_header_list_size = 0};
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
    carrier_t *c = calloc(1, sizeof *c);
    CHECK(c);
    c->seed = seed;
    CHECK(client_conn_open(&c->cc, &env, &carrier_ops, sv[0], NULL) == 0);
    CHECK(write(sv[1], preface, sizeof preface - 1) == (ssize_t)(sizeof preface - 1));
    char sink[65536];
    for (size_t off = 0; off < len && !c->closed;) {
        size_t piece = next_size(&seed, len - off);
        ssize_t w = write(sv[1], in + off, piece);
        if (w > 0)
            off += (size_t)w;
        uv_run(&loop, UV_RUN_NOWAIT);
        while (read(sv[1], sink, sizeof sink) > 0) /* what ficus sends: read, dropped */
            ;
        if (w <= 0)
            break;
    }
    for (int i = 0; i < 8 && !c->closed; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        while (read(sv[1], sink, sizeof sink) > 0)
            ;
    }
    if (!c->closed && (seed & 1))
        client_conn_env_drain(&env, 0); /* GOAWAY, streams finish */
    for (int i = 0; i < 8 && !c->closed; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        while (read(sv[1], sink, sizeof sink) > 0)
            ;
    }
    close(sv[1]);
    for (int i = 0; i < 100 && !c->closed; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    client_conn_env_stop(&env);
    while (!c->closed || live_streams > 0)
        uv_run(&loop, UV_RUN_ONCE);
    env.draining = false;
    free(c);
    return 0;
}
