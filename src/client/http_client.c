/* On-loop requests; see http_client.h. Two handles (the stream and the
 * timer), counted: the memory goes with the last close callback. */
#include "client/http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "http/h2_upstream.h"
#include "net/stream.h"
#include "net/tls.h"

/* The request head, on the stack while it is copied. */
#define HTTP_CLIENT_HEAD_BYTES 8192
/* Bytes read per callback. */
#define HTTP_CLIENT_READ_BYTES 4096

struct http_client {
    stream_t s; /* first: stream callbacks cast back */
    uv_connect_t creq;
    uv_timer_t timer;
    pbuf_pool_t pool; /* the stream's write queue */
    reply_t reply;
    http_client_done_fn on_done; /* NULL once called or cancelled */
    void *ctx;
    char *out; /* the request: head and body */
    size_t out_len;
    tls_conn_t *tls;   /* TLS: the engine until the stream takes it at connect */
    h2_upstream_t *h2; /* HTTP/2: the session, once connected */
    int open_handles;
    bool want_h2;
    bool finished;
    char in[HTTP_CLIENT_READ_BYTES];
};

static void on_handle_closed(http_client_t *c)
{
    if (--c->open_handles > 0)
        return;
    h2_upstream_free(c->h2);
    reply_deinit(&c->reply);
    pbuf_pool_deinit(&c->pool);
    tls_conn_free(c->tls);
    free(c->out);
    free(c);
}

static void on_timer_closed(uv_handle_t *h) { on_handle_closed(h->data); }
static void on_stream_closed(stream_t *s) { on_handle_closed((http_client_t *)s); }

/* The one way out: the callback (unless cancelled), then both handles close. */
static void finish(http_client_t *c, const char *error)
{
    if (c->finished)
        return;
    c->finished = true;
    http_client_done_fn cb = c->on_done;
    c->on_done = NULL;
    if (cb)
        cb(c->ctx, &c->reply, error);
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    stream_close(&c->s, error != NULL);
}

static void on_alloc(stream_t *s, uv_buf_t *buf)
{
    http_client_t *c = (http_client_t *)s;
    *buf = uv_buf_init(c->in, sizeof c->in);
}

/* Answer bytes, HTTP/1.1 (from the socket, or from the HTTP/2 stream). */
static void take(http_client_t *c, const char *data, size_t len)
{
    if (c->finished)
        return;
    if (reply_feed(&c->reply, data, len) < 0)
        finish(c, c->reply.error);
    else if (reply_done(&c->reply))
        finish(c, NULL);
}

static void on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    http_client_t *c = (http_client_t *)s;
    if (c->h2) {
        if (n < 0)
            finish(c, n == UV_EOF ? "connection closed before the response" : uv_strerror((int)n));
        else if (h2_upstream_feed(c->h2, buf->base, (size_t)n) != 0)
            finish(c, "HTTP/2 session ended before the response");
        return;
    }
    if (n == UV_EOF && c->reply.bytes_in == 0)
        finish(c, "connection closed before the response");
    else if (n == UV_EOF)
        finish(c, reply_finish(&c->reply) == 0 ? NULL : c->reply.error);
    else if (n < 0)
        finish(c, uv_strerror((int)n));
    else
        take(c, buf->base, (size_t)n);
}

static void on_drain(stream_t *s, int status)
{
    http_client_t *c = (http_client_t *)s;
    if (status < 0)
        finish(c, uv_strerror(status));
    else if (c->h2)
        h2_upstream_on_drain(c->h2);
}

/* --- HTTP/2: the session's side --- */

static int h2_send(void *conn, const uv_buf_t *bufs, unsigned n)
{
    return stream_write(&((http_client_t *)conn)->s, bufs, n);
}
static bool h2_send_pending(void *conn)
{
    return stream_write_pending(&((http_client_t *)conn)->s);
}
static void h2_deliver(void *owner, const char *data, size_t len) { take(owner, data, len); }
static void h2_drained(void *owner) { (void)owner; }
static void h2_failed(void *owner, int status, bool refused)
{
    (void)refused;
    finish(owner, status == UV_EPROTO ? "HTTP/2 protocol error" : "stream reset by the target");
}

static const h2_upstream_io_t h2_io = {
    .send = h2_send,
    .send_pending = h2_send_pending,
    .deliver = h2_deliver,
    .drained = h2_drained,
    .failed = h2_failed,
};

static void send_request(http_client_t *c)
{
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
    if (c->want_h2) {
        /* The same request, read and framed as one stream. */
        c->h2 = h2_upstream_new(&c->pool, &h2_io, c, c->s.tls != NULL);
        h2_ustream_t *st = c->h2 ? h2_ustream_open(c->h2, c) : NULL;
        if (!st || h2_ustream_write(st, &b, 1) < 0 || stream_read_start(&c->s) != 0)
            finish(c, "write failed");
        return;
    }
    if (stream_write(&c->s, &b, 1) < 0 || stream_read_start(&c->s) != 0)
        finish(c, "write failed");
}

static void on_handshake(stream_t *s, int result)
{
    http_client_t *c = (http_client_t *)s;
    if (c->finished)
        return;
    if (result == TLS_HS_OK || result == TLS_HS_RESUMED) {
        size_t n = 0;
        const char *alpn = tls_conn_alpn(s->tls, &n);
        if (c->want_h2 && !(alpn && n == 2 && memcmp(alpn, "h2", 2) == 0)) {
            finish(c, "the target did not agree to h2 by ALPN");
            return;
        }
        send_request(c);
        return;
    }
    const char *why = s->tls ? tls_conn_verify_error(s->tls) : NULL;
    char msg[160];
    snprintf(msg, sizeof msg, "TLS handshake failed: %s",
             why ? why : tls_hs_result_name((tls_hs_result_t)result));
    finish(c, msg);
}

static const stream_ops_t client_ops = {
    .on_alloc = on_alloc,
    .on_read = on_read,
    .on_drain = on_drain,
    .on_close = on_stream_closed,
    .on_handshake = on_handshake,
};

static void on_connect(uv_connect_t *req, int status)
{
    http_client_t *c = req->data;
    if (c->finished)
        return;
    if (status < 0) {
        finish(c, uv_strerror(status));
        return;
    }
    if (c->tls) {
        /* The request goes once the handshake is done (on_handshake). */
        tls_conn_t *t = c->tls;
        c->tls = NULL;
        if (stream_read_start(&c->s) != 0 || stream_tls_client(&c->s, t) != 0)
            finish(c, "TLS handshake failed: cannot send");
        return;
    }
    send_request(c);
}

static void on_timeout(uv_timer_t *t) { finish(t->data, "timeout"); }

http_client_t *http_client_start(uv_loop_t *loop, const struct sockaddr *sa, const request_t *rq,
                                 const http_client_opts_t *o, http_client_done_fn on_done,
                                 void *ctx)
{
    char head[HTTP_CLIENT_HEAD_BYTES];
    int n = request_head(rq, head, sizeof head);
    if (n < 0)
        return NULL;
    size_t body_len = rq->body ? rq->body_len : 0;
    http_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->out = malloc((size_t)n + body_len);
    if (!c->out)
        goto fail_free;
    memcpy(c->out, head, (size_t)n);
    if (body_len)
        memcpy(c->out + n, rq->body, body_len);
    c->out_len = (size_t)n + body_len;
    c->on_done = on_done;
    c->ctx = ctx;
    c->want_h2 = o->h2;
    c->creq.data = c;
    c->timer.data = c;
    if (o->tls && !(c->tls = tls_conn_new_client(o->tls, o->tls_sni, o->tls_name, NULL)))
        goto fail_out;
    reply_init(&c->reply, o->max_head_bytes, o->max_body_bytes, o->body_mode);
    /* Whatever part of the request the socket does not take at once fits;
     * HTTP/2 also gathers a head (its own, and the answer's) in one. */
    size_t buf_bytes = o->h2 ? DEFAULT_MAX_HEADER_BYTES + 1024 : HTTP_CLIENT_READ_BYTES;
    pbuf_pool_init(&c->pool, c->out_len > buf_bytes ? c->out_len : buf_bytes, 0);
    if (uv_timer_init(loop, &c->timer) != 0)
        goto fail_deinit;
    c->open_handles = 1;
    if (stream_init(loop, &c->s, &client_ops, &c->pool) != 0)
        goto fail_close_timer;
    c->open_handles = 2;
    uv_timer_start(&c->timer, on_timeout, o->timeout_ms, 0);
    if (stream_connect(&c->s, &c->creq, sa, on_connect) != 0)
        goto fail_close_all;
    return c;

fail_close_all:
    http_client_cancel(c);
    return NULL;
fail_close_timer:
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    return NULL;
fail_deinit:
    reply_deinit(&c->reply);
    pbuf_pool_deinit(&c->pool);
    tls_conn_free(c->tls);
fail_out:
    free(c->out);
fail_free:
    free(c);
    return NULL;
}

void http_client_cancel(http_client_t *c)
{
    if (!c)
        return;
    c->on_done = NULL;
    finish(c, "cancelled");
}
