/* On-loop requests; see http_client.h. Two handles (the stream and the
 * timer), counted: the memory goes with the last close callback. */
#include "client/http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
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
    tls_conn_t *tls; /* TLS: the engine until the stream takes it at connect */
    int open_handles;
    bool finished;
    char in[HTTP_CLIENT_READ_BYTES];
};

static void on_handle_closed(http_client_t *c)
{
    if (--c->open_handles > 0)
        return;
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

static void on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    http_client_t *c = (http_client_t *)s;
    if (n == UV_EOF && c->reply.bytes_in == 0)
        finish(c, "connection closed before the response");
    else if (n == UV_EOF)
        finish(c, reply_finish(&c->reply) == 0 ? NULL : c->reply.error);
    else if (n < 0)
        finish(c, uv_strerror((int)n));
    else if (reply_feed(&c->reply, buf->base, (size_t)n) < 0)
        finish(c, c->reply.error);
    else if (reply_done(&c->reply))
        finish(c, NULL);
}

static void on_drain(stream_t *s, int status)
{
    if (status < 0)
        finish((http_client_t *)s, uv_strerror(status));
}

static void send_request(http_client_t *c)
{
    uv_buf_t b = uv_buf_init(c->out, (unsigned)c->out_len);
    if (stream_write(&c->s, &b, 1) < 0 || stream_read_start(&c->s) != 0)
        finish(c, "write failed");
}

static void on_handshake(stream_t *s, int result)
{
    http_client_t *c = (http_client_t *)s;
    if (c->finished)
        return;
    if (result == TLS_HS_OK || result == TLS_HS_RESUMED) {
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
    c->creq.data = c;
    c->timer.data = c;
    if (o->tls && !(c->tls = tls_conn_new_client(o->tls, o->tls_sni, o->tls_name, NULL)))
        goto fail_out;
    reply_init(&c->reply, o->max_head_bytes, o->max_body_bytes, o->body_mode);
    /* Whatever part of the request the socket does not take at once fits. */
    pbuf_pool_init(&c->pool,
                   c->out_len > HTTP_CLIENT_READ_BYTES ? c->out_len : HTTP_CLIENT_READ_BYTES, 0);
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
