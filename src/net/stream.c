/* Stream over uv_tcp_t; see stream.h. Writes go out with uv_try_write (one
 * writev for head + body); only the unwritten tail is ever copied. */
#include "net/stream.h"

#include <string.h>
#include <sys/socket.h>

#include "core/errors.h"
#include "net/tls.h"

/* TLS: ciphertext is read here (one per thread: it goes into the engine at
 * once), then the owner's buffers are filled with plaintext. */
#define TLS_RX_BYTES (64 * 1024)
static __thread char tls_rx[TLS_RX_BYTES];
/* Small pieces written together are gathered here into one record. */
#define TLS_RECORD_BYTES (16 * 1024)
static __thread char tls_tx[TLS_RECORD_BYTES];

static void tls_pump(stream_t *s);
static int tls_flush(stream_t *s);

#define STREAM_OF(h) ((stream_t *)(h))

static void on_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    stream_t *s = STREAM_OF(h);
    if (s->tls) {
        *buf = uv_buf_init(tls_rx, sizeof tls_rx);
        return;
    }
    s->ops->on_alloc(s, buf);
}

static void on_read_cb(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    stream_t *s = STREAM_OF(h);
    if (n == 0 || s->closing)
        return; /* EAGAIN, or a read after close was requested */
    if (s->tls) {
        if (n < 0) {
            if (!tls_conn_handshake_done(s->tls) && s->ops->on_handshake)
                s->ops->on_handshake(s, TLS_HS_CLOSED);
            uv_buf_t none = uv_buf_init(NULL, 0);
            s->ops->on_read(s, n, &none);
            return;
        }
        if (tls_conn_feed(s->tls, buf->base, (size_t)n) != 0) {
            uv_buf_t none = uv_buf_init(NULL, 0);
            s->ops->on_read(s, UV_ENOMEM, &none);
            return;
        }
        tls_pump(s);
        return;
    }
    s->ops->on_read(s, n, buf);
}

static void on_close_cb(uv_handle_t *h)
{
    stream_t *s = STREAM_OF(h);
    pbuf_put(s->pool, s->wq);
    s->wq = NULL;
    tls_conn_free(s->tls);
    s->tls = NULL;
    s->ops->on_close(s);
}

int stream_init(uv_loop_t *loop, stream_t *s, const stream_ops_t *ops, pbuf_pool_t *pool)
{
    s->ops = ops;
    s->pool = pool;
    s->wq = NULL;
    s->inflight = 0;
    s->reading = 0;
    s->closing = 0;
    s->tls = NULL;
    return uv_tcp_init(loop, &s->tcp);
}

int stream_open(stream_t *s, int fd)
{
    int rc = uv_tcp_open(&s->tcp, fd);
    if (rc == 0)
        uv_tcp_nodelay(&s->tcp, 1);
    return rc;
}

int stream_connect(stream_t *s, uv_connect_t *req, const struct sockaddr *sa, uv_connect_cb cb)
{
    uv_tcp_nodelay(&s->tcp, 1);
    return uv_tcp_connect(req, &s->tcp, sa, cb);
}

int stream_read_start(stream_t *s)
{
    if (s->reading || s->closing)
        return 0;
    int rc = uv_read_start((uv_stream_t *)&s->tcp, on_alloc_cb, on_read_cb);
    if (rc == 0)
        s->reading = 1;
    if (rc == 0 && s->tls && tls_conn_handshake_done(s->tls) && tls_conn_read_pending(s->tls))
        tls_pump(s); /* plaintext that came while the owner did not read */
    return rc;
}

void stream_read_stop(stream_t *s)
{
    if (!s->reading)
        return;
    uv_read_stop((uv_stream_t *)&s->tcp);
    s->reading = 0;
}

static void on_write_cb(uv_write_t *req, int status);

static int flush_queue(stream_t *s)
{
    uv_buf_t b = uv_buf_init(pbuf_head(s->wq), s->wq->len);
    s->inflight = s->wq->len;
    return uv_write(&s->wreq, (uv_stream_t *)&s->tcp, &b, 1, on_write_cb);
}

static void on_write_cb(uv_write_t *req, int status)
{
    stream_t *s = (stream_t *)req->handle;
    if (s->closing)
        return; /* the close callback frees the queue */
    if (status < 0) {
        s->ops->on_drain(s, status);
        return;
    }
    s->wq->off += s->inflight;
    s->wq->len -= s->inflight;
    s->inflight = 0;
    if (s->wq->len) {
        /* Bytes appended while the previous write was in flight. */
        int rc = flush_queue(s);
        if (rc < 0)
            s->ops->on_drain(s, rc);
        return;
    }
    pbuf_put(s->pool, s->wq);
    s->wq = NULL;
    if (s->tls && tls_conn_out_pending(s->tls)) {
        int rc = tls_flush(s);
        if (rc != 0) {
            if (rc < 0)
                s->ops->on_drain(s, rc);
            return; /* 1: on_write_cb again */
        }
    }
    s->ops->on_drain(s, 0);
}

static int queue_append(stream_t *s, const uv_buf_t *bufs, unsigned n, size_t skip)
{
    size_t need = 0;
    for (unsigned i = 0; i < n; i++)
        need += bufs[i].len;
    need -= skip;
    if (!s->wq) {
        s->wq = pbuf_get(s->pool);
        if (!s->wq)
            return FE_NOMEM;
    } else if (s->inflight == 0) {
        pbuf_compact(s->wq);
    }
    if (pbuf_room(s->wq) < need) {
        if (s->wq->len == 0) {
            /* Nothing queued after all: leave no empty queue behind. */
            pbuf_put(s->pool, s->wq);
            s->wq = NULL;
        }
        return FE_TOOBIG;
    }
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        const char *p = bufs[i].base;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        p += skip;
        len -= skip;
        skip = 0;
        memcpy(pbuf_tail(s->wq), p, len);
        s->wq->len += (uint32_t)len;
    }
    return 0;
}

int stream_write(stream_t *s, const uv_buf_t *bufs, unsigned n)
{
    if (s->closing)
        return FE_IO;
    if (s->tls) {
        /* Encrypted into the engine; its output is the queue. Pieces that
         * fit one record together (a head and a small body) go as one. */
        size_t total = 0;
        for (unsigned i = 0; i < n; i++)
            total += bufs[i].len;
        if (n > 1 && total <= sizeof tls_tx) {
            size_t at = 0;
            for (unsigned i = 0; i < n; i++) {
                memcpy(tls_tx + at, bufs[i].base, bufs[i].len);
                at += bufs[i].len;
            }
            if (tls_conn_write(s->tls, tls_tx, at) != 0)
                return FE_IO;
            return tls_flush(s);
        }
        for (unsigned i = 0; i < n; i++)
            if (bufs[i].len && tls_conn_write(s->tls, bufs[i].base, bufs[i].len) != 0)
                return FE_IO;
        return tls_flush(s);
    }
    if (s->wq) {
        int rc = queue_append(s, bufs, n, 0);
        return rc < 0 ? rc : 1;
    }
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    int w = uv_try_write((uv_stream_t *)&s->tcp, bufs, n);
    if (w == UV_EAGAIN || w == UV_ENOSYS)
        w = 0;
    else if (w < 0)
        return w;
    if ((size_t)w == total)
        return 0;
    int rc = queue_append(s, bufs, n, (size_t)w);
    if (rc < 0)
        return rc;
    rc = flush_queue(s);
    return rc < 0 ? rc : 1;
}

/* TLS: close_notify, if nothing is queued before it and the socket takes
 * it now (a peer that misses it sees a truncated stream). */
static void tls_close_notify(stream_t *s)
{
    if (!s->tls || s->wq || !tls_conn_handshake_done(s->tls))
        return;
    tls_conn_shutdown(s->tls);
    char out[256];
    size_t k = tls_conn_out(s->tls, out, sizeof out);
    uv_buf_t b = uv_buf_init(out, (unsigned)k);
    if (k)
        uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
}

int stream_shutdown_write(stream_t *s)
{
    tls_close_notify(s);
    return shutdown(stream_fd(s), SHUT_WR);
}

void stream_close(stream_t *s, bool reset)
{
    if (s->closing)
        return;
    if (!reset)
        tls_close_notify(s);
    s->closing = 1;
    s->reading = 0;
    if (reset && uv_tcp_close_reset(&s->tcp, on_close_cb) == 0)
        return;
    uv_close((uv_handle_t *)&s->tcp, on_close_cb);
}

int stream_fd(const stream_t *s)
{
    uv_os_fd_t fd = -1;
    uv_fileno((const uv_handle_t *)&s->tcp, &fd);
    return fd;
}

/* ------------------------------------------------------------------ TLS */

int stream_tls_server(stream_t *s, struct tls_server *srv)
{
    s->tls = tls_conn_new_server(srv);
    return s->tls ? 0 : FE_NOMEM;
}

int stream_tls_client(stream_t *s, struct tls_conn *c)
{
    tls_conn_free(s->tls);
    s->tls = c;
    if (!c)
        return FE_NOMEM;
    tls_hs_result_t why = TLS_HS_PROTOCOL;
    if (tls_conn_handshake(c, &why) < 0)
        return FE_IO;
    return tls_flush(s) < 0 ? FE_IO : 0;
}

/* Sends the engine's ciphertext: what the socket takes now, the rest from
 * the queue buffer (as many as it takes). 0 all sent, 1 on_write_cb goes
 * on, < 0 an error. */
static int tls_flush(stream_t *s)
{
    if (s->inflight)
        return 1; /* on_write_cb takes the rest */
    while (tls_conn_out_pending(s->tls)) {
        if (!s->wq && !(s->wq = pbuf_get(s->pool)))
            return FE_NOMEM;
        pbuf_compact(s->wq);
        size_t k = tls_conn_out(s->tls, pbuf_tail(s->wq), pbuf_room(s->wq));
        s->wq->len += (uint32_t)k;
        uv_buf_t b = uv_buf_init(pbuf_head(s->wq), s->wq->len);
        int w = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
        if (w == UV_EAGAIN || w == UV_ENOSYS)
            w = 0;
        else if (w < 0)
            return w;
        s->wq->off += (uint32_t)w;
        s->wq->len -= (uint32_t)w;
        if (s->wq->len) {
            int rc = flush_queue(s);
            return rc < 0 ? rc : 1;
        }
        if (k == 0)
            break;
    }
    pbuf_put(s->pool, s->wq);
    s->wq = NULL;
    return 0;
}

/* The handshake, then plaintext to the owner while it reads. */
static void tls_pump(stream_t *s)
{
    tls_conn_t *c = s->tls;
    uv_buf_t none = uv_buf_init(NULL, 0);
    if (!tls_conn_handshake_done(c)) {
        tls_hs_result_t why = TLS_HS_PROTOCOL;
        int rc = tls_conn_handshake(c, &why);
        int frc = tls_flush(s); /* the handshake's records, an alert */
        if (rc == 0 && frc >= 0)
            return;
        if (s->ops->on_handshake)
            s->ops->on_handshake(s, why);
        if (rc < 0 || frc < 0) {
            s->ops->on_read(s, UV_EPROTO, &none);
            return;
        }
    }
    while (s->reading && !s->closing) {
        uv_buf_t b;
        s->ops->on_alloc(s, &b);
        if (b.len == 0)
            return;
        long k = tls_conn_read(c, b.base, b.len);
        if (k == 0)
            break;
        if (k < 0) {
            s->ops->on_read(s, k == TLS_EOF ? UV_EOF : UV_EPROTO, &none);
            return;
        }
        s->ops->on_read(s, k, &b);
    }
    if (!s->closing && !s->wq && tls_conn_out_pending(c))
        tls_flush(s); /* e.g. TLS 1.3 tickets, a key update */
}
