/* Stream over uv_tcp_t; see stream.h. Writes go out with uv_try_write (one
 * writev for head + body); only the unwritten tail is ever copied. */
#include "net/stream.h"

#include <string.h>

#include "core/errors.h"

#define STREAM_OF(h) ((stream_t *)(h))

static void on_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    stream_t *s = STREAM_OF(h);
    s->ops->on_alloc(s, buf);
}

static void on_read_cb(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    stream_t *s = STREAM_OF(h);
    if (n == 0 || s->closing)
        return; /* EAGAIN, or a read after close was requested */
    s->ops->on_read(s, n, buf);
}

static void on_close_cb(uv_handle_t *h)
{
    stream_t *s = STREAM_OF(h);
    pbuf_put(s->pool, s->wq);
    s->wq = NULL;
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

void stream_close(stream_t *s, bool reset)
{
    if (s->closing)
        return;
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
