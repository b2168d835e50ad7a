/* HTTP/2 to a target; see h2_upstream.h. */
#include "http/h2_upstream.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/defaults.h"
#include "http/h2_head.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/h2_frames.h"

struct h2_ustream {
    h2_upstream_t *u;
    void *owner;
    h2_ustream_t *next; /* the session's streams, or its spare ones */
    h2_ustream_t *prev;
    /* The request being written: its head (gathered when it comes in
     * pieces), its body to frame, read by req. */
    http_parser_t req;
    pbuf_t *head;
    pbuf_chain_t body;
    int32_t id;
    uint8_t head_request;
    uint8_t submitted; /* its HEADERS are submitted */
    uint8_t req_end;   /* its last body byte is queued */
    uint8_t deferred;  /* the data source waits for bytes */
    uint8_t queued;    /* a write returned 1: drained is owed */
    /* The response: head written as HTTP/1.1, then its body framing. */
    pbuf_chain_t resp;   /* bytes for the owner */
    pbuf_t *hbuf;        /* a head or a trailer section being written */
    uint32_t fields;     /* in the header block coming */
    uint32_t unconsumed; /* DATA bytes not yet taken by the owner (its window) */
    int status;
    int fail; /* a failure to tell once the bytes before it are taken */
    uint8_t refused;
    uint8_t told;       /* failed was called */
    uint8_t head_sent;  /* the final head went to the owner */
    uint8_t chunked;    /* the body goes chunked (no content-length) */
    uint8_t has_length; /* the head had a content-length */
    uint8_t in_trailers;
    uint8_t resp_done;
    uint8_t paused;
    uint8_t closed;   /* nghttp2 closed it */
    uint8_t released; /* its owner let go: unlinked once out of callbacks */
};

struct h2_upstream {
    nghttp2_session *ng;
    pbuf_pool_t *pool;
    const h2_upstream_io_t *io;
    void *conn;
    bool tls;
    h2_ustream_t *streams; /* the owners' */
    h2_ustream_t *spare;   /* to open the next ones with */
    uint8_t broken;
    uint8_t in_recv;
    uint8_t in_flush;
    uint8_t flush_again;
    uint8_t dead;    /* freed while in use: freed on the way out */
    uint8_t sweep;   /* streams were released while in use */
    uint8_t settled; /* the target's first SETTINGS came */
    int depth;       /* calls under way */
    h2_frames_out_t frames;
};

static __thread http_head_t req_head;
static __thread nghttp2_nv req_nv[MAX_REQUEST_HEADERS + 4];
static __thread char req_lower[DEFAULT_MAX_HEADER_BYTES * 4];

static h2_ustream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(ng, id) : NULL;
}

/* ------------------------------------------------- bytes for the owner */

static int out_put(h2_ustream_t *s, const void *p, size_t n)
{
    return pbuf_chain_append(s->u->pool, &s->resp, p, n);
}

static int out_str(h2_ustream_t *s, const char *str) { return out_put(s, str, strlen(str)); }

/* A head or trailer section is written apart and goes out whole. */
static int hput(h2_ustream_t *s, const void *p, size_t n)
{
    if (!s->hbuf) {
        s->hbuf = pbuf_get(s->u->pool);
        if (!s->hbuf)
            return -1;
        s->hbuf->off = s->hbuf->len = 0;
        s->hbuf->next = NULL;
    }
    if (pbuf_room(s->hbuf) < n)
        return -1;
    memcpy(pbuf_tail(s->hbuf), p, n);
    s->hbuf->len += (uint32_t)n;
    return 0;
}

static int hstr(h2_ustream_t *s, const char *str) { return hput(s, str, strlen(str)); }

/* The head or trailer section written goes after the body bytes before it. */
static int hdone(h2_ustream_t *s)
{
    if (!s->hbuf)
        return 0;
    int rc = out_put(s, pbuf_head(s->hbuf), s->hbuf->len);
    pbuf_put(s->u->pool, s->hbuf);
    s->hbuf = NULL;
    return rc;
}

/* Tells the owner what is ready for it, never from inside nghttp2's
 * callbacks (the owner may close the stream, or the session): the bytes a
 * buffer at a time while it takes them, then its window back, then a
 * failure, or that its request is framed. */
static void stream_notify(h2_upstream_t *u, h2_ustream_t *s)
{
    while (s->resp.first && !s->paused && !s->released && !u->dead) {
        pbuf_t *b = s->resp.first;
        s->resp.first = b->next;
        if (!s->resp.first)
            s->resp.last = NULL;
        b->next = NULL;
        if (b->len)
            u->io->deliver(s->owner, pbuf_head(b), b->len);
        pbuf_put(u->pool, b);
    }
    if (s->released || u->dead || s->resp.first)
        return;
    if (s->unconsumed && !s->closed)
        nghttp2_session_consume_stream(u->ng, s->id, s->unconsumed);
    s->unconsumed = 0;
    if (s->fail && !s->told) {
        s->told = 1;
        u->io->failed(s->owner, s->fail, s->refused);
        return;
    }
    if (s->queued && !s->body.first && !s->told) {
        s->queued = 0;
        u->io->drained(s->owner);
    }
}

static void notify(h2_upstream_t *u)
{
    for (h2_ustream_t *s = u->streams; s && !u->dead; s = s->next)
        if (!s->released)
            stream_notify(u, s);
}

/* The stream did not get its whole answer: told once its bytes are taken. */
static void stream_fail(h2_ustream_t *s, int status, bool refused)
{
    if (s->resp_done || s->fail || s->told || s->released)
        return;
    s->fail = status;
    s->refused = refused;
}

/* -------------------------------------------------------- the response */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    (void)ud;
    h2_ustream_t *s = stream_of(ng, frame->hd.stream_id);
    if (!s)
        return 0;
    s->fields = 0;
    if (s->head_sent)
        s->in_trailers = 1;
    else
        s->status = 0; /* this block's :status writes the status line */
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    h2_ustream_t *s = stream_of(ng, frame->hd.stream_id);
    if (!s)
        return 0;
    /* Within what the request path reads from a target (fields, bytes):
     * a block beyond it resets the stream, a failed try. */
    if (++s->fields > MAX_REQUEST_HEADERS - 4 ||
        (s->hbuf ? s->hbuf->len : 0) + namelen + valuelen + 4 > DEFAULT_MAX_HEADER_BYTES)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen; i++)
            st = value[i] >= '0' && value[i] <= '9' ? st * 10 + (value[i] - '0') : 0;
        if (valuelen != 3 || st < 100 || st > 599)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* not a status: the stream is reset */
        s->status = st;
        char line[64];
        snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", st, http_status_reason(st));
        return hstr(s, line) == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (namelen && name[0] == ':')
        return 0;
    if (!s->in_trailers && h2_head_connection_specific((const char *)name, namelen))
        return 0;
    if (!s->in_trailers && namelen == 14 && memcmp(name, "content-length", 14) == 0)
        s->has_length = 1;
    if (s->in_trailers && !s->chunked)
        return 0; /* a body with a length has no trailer section to carry them */
    if (hput(s, name, namelen) || hput(s, ": ", 2) || hput(s, value, valuelen) ||
        hput(s, "\r\n", 2))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* The final head is whole: its framing line, and it goes to the owner. */
static int head_end(h2_ustream_t *s, bool end_stream)
{
    if (s->status == 0)
        return -1; /* a head without :status: nothing to hand over */
    if (s->status < 200) {
        /* Interim: passed on as it is; the final head follows. */
        s->has_length = 0;
        return hput(s, "\r\n", 2) || hdone(s) ? -1 : 0;
    }
    bool bodyless = s->head_request || s->status == 204 || s->status == 304;
    if (end_stream) {
        if (!s->has_length && !bodyless && hstr(s, "content-length: 0\r\n"))
            return -1;
        s->resp_done = 1;
    } else if (!s->has_length && !bodyless) {
        s->chunked = 1;
        if (hstr(s, "transfer-encoding: chunked\r\n"))
            return -1;
    }
    if (hput(s, "\r\n", 2) || hdone(s))
        return -1;
    s->head_sent = 1;
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
        ((h2_upstream_t *)ud)->settled = 1;
    /* A GOAWAY: nghttp2 closes the streams beyond its last stream as
     * refused, and opens no more (nghttp2_session_check_request_allowed). */
    h2_ustream_t *s = stream_of(ng, frame->hd.stream_id);
    if (!s)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (!s->in_trailers) {
            if (head_end(s, end) != 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            if (end && !s->head_sent) {
                /* Ended on an interim head: no answer will come. */
                stream_fail(s, UV_EPROTO, false);
                nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
                return 0;
            }
        } else if (s->chunked) {
            /* Trailers end the chunked body: "0", the fields, the blank line. */
            if (hput(s, "\r\n", 2) || hdone(s))
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            s->resp_done = 1;
        }
        if (end)
            s->resp_done = 1;
    } else if (frame->hd.type == NGHTTP2_DATA && end && !s->resp_done) {
        if (!s->head_sent) {
            /* A body with no final head before it: no answer to hand over. */
            stream_fail(s, UV_EPROTO, false);
            return 0;
        }
        if (s->chunked && out_str(s, "0\r\n\r\n"))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        s->resp_done = 1;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    /* The connection's window comes back at once, a stream's as its owner
     * takes the bytes. */
    nghttp2_session_consume_connection(ng, len);
    h2_ustream_t *s = stream_of(ng, id);
    if (!s || !s->head_sent) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    if (len == 0)
        return 0;
    s->unconsumed += (uint32_t)len;
    if (s->chunked) {
        char line[24];
        snprintf(line, sizeof line, "%zx\r\n", len);
        if (out_str(s, line) || out_put(s, data, len) || out_put(s, "\r\n", 2))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    } else if (out_put(s, data, len)) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    (void)ud;
    if (hd->type != NGHTTP2_HEADERS)
        return 0;
    h2_ustream_t *s = stream_of(ng, hd->stream_id);
    /* The trailer section starts with the last chunk's size line. */
    if (s && s->head_sent && s->chunked && !s->resp_done && !s->in_trailers) {
        if (hstr(s, "0\r\n"))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    (void)ud;
    h2_ustream_t *s = stream_of(ng, id);
    if (!s)
        return 0;
    s->closed = 1;
    s->unconsumed = 0;
    /* Reset or refused: told once out of nghttp2. */
    stream_fail(s, UV_ECONNRESET, code == NGHTTP2_REFUSED_STREAM);
    return 0;
}

/* A request's HEADERS that never went out (a GOAWAY came first): the
 * target never saw it. */
static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *frame, int error, void *ud)
{
    (void)error;
    (void)ud;
    h2_ustream_t *s = frame->hd.type == NGHTTP2_HEADERS ? stream_of(ng, frame->hd.stream_id) : NULL;
    if (s)
        stream_fail(s, UV_ECONNRESET, true);
    return 0;
}

/* --------------------------------------------------------- the request */

static ssize_t on_body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    h2_ustream_t *s = source->ptr;
    size_t n = pbuf_chain_read(s->u->pool, &s->body, buf, length);
    if (!s->body.first) {
        if (s->req_end)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0) {
            s->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static int body_put(h2_ustream_t *s, const char *p, size_t n)
{
    return pbuf_chain_append(s->u->pool, &s->body, p, n);
}

/* The request head as a HEADERS frame. */
static int submit(h2_ustream_t *s, bool end)
{
    h2_upstream_t *u = s->u;
    const http_head_t *h = &req_head;
    const http_header_t *host = http_header_find(h->headers, h->n_headers, "host", 4);
    size_t n = 0, used = 0;
    req_nv[n++] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)h->method, 7, h->method_len, 0};
    req_nv[n++] = (nghttp2_nv){(uint8_t *)":scheme", (uint8_t *)(u->tls ? "https" : "http"), 7,
                               u->tls ? 5 : 4, 0};
    req_nv[n++] =
        (nghttp2_nv){(uint8_t *)":authority", (uint8_t *)(host ? host->value : "localhost"), 10,
                     host ? host->value_len : 9, 0};
    req_nv[n++] = (nghttp2_nv){(uint8_t *)":path", (uint8_t *)h->target, 5, h->target_len, 0};
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const http_header_t *f = &h->headers[i];
        if (h2_head_connection_specific(f->name, f->name_len) ||
            http_header_name_is(f->name, f->name_len, "host", 4))
            continue;
        if (http_header_name_is(f->name, f->name_len, "te", 2) &&
            !(f->value_len == 8 && strncasecmp(f->value, "trailers", 8) == 0))
            continue; /* TE: only "trailers" in HTTP/2 (RFC 9113 8.2.2) */
        if (f->name_len > sizeof req_lower - used)
            return -1;
        char *ln = req_lower + used;
        for (uint32_t k = 0; k < f->name_len; k++)
            ln[k] = (char)(f->name[k] >= 'A' && f->name[k] <= 'Z' ? f->name[k] + 32 : f->name[k]);
        used += f->name_len;
        req_nv[n++] =
            (nghttp2_nv){(uint8_t *)ln, (uint8_t *)f->value, f->name_len, f->value_len, 0};
    }
    /* HTTP/1.1 hops drop TE; gRPC servers want "te: trailers" (it says the
     * client takes trailers, which this connection carries on). */
    const http_header_t *ct = http_header_find(h->headers, h->n_headers, "content-type", 12);
    if (ct && http_content_type_is_grpc(ct->value, ct->value_len) &&
        !http_header_find(h->headers, h->n_headers, "te", 2))
        req_nv[n++] = (nghttp2_nv){(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0};
    s->head_request = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = on_body_read};
    int32_t id = nghttp2_submit_request(u->ng, NULL, req_nv, n, end ? NULL : &dp, s);
    if (id < 0)
        return -1;
    s->id = id;
    s->submitted = 1;
    return 0;
}

/* Reads the HTTP/1.1 request written: 0, or -1. */
static int request_bytes(h2_ustream_t *s, const char *p, size_t n)
{
    pbuf_pool_t *pool = s->u->pool;
    while (n && !s->req_end) {
        int ev = 0;
        if (!s->submitted) {
            const char *h;
            size_t hn;
            long end = http_head_gather(pool, &s->head, p, n, &h, &hn);
            if (end <= 0)
                return (int)end; /* kept, or too large */
            long k = http_parser_feed(&s->req, &req_head, h, (size_t)end, &ev);
            if (k < 0 || !(ev & HTTP_EV_HEAD))
                return -1;
            size_t rest = hn - (size_t)k;
            p = p + n - rest;
            n = rest;
            int ev2 = 0;
            if (!(ev & HTTP_EV_END) && http_parser_feed(&s->req, &req_head, h + k, 0, &ev2) < 0)
                return -1;
            bool end_stream = (ev | ev2) & HTTP_EV_END;
            int rc = submit(s, end_stream);
            if (s->head) {
                pbuf_put(pool, s->head);
                s->head = NULL;
            }
            if (rc != 0)
                return -1;
            s->req_end = end_stream;
            continue;
        }
        /* Body bytes: as they are, or de-chunked. */
        char sink[4096 + CHUNKED_OUT_SLACK];
        size_t feed = n;
        if (http_parser_chunked_body(&s->req)) {
            if (feed > 4096)
                feed = 4096;
            http_parser_set_sink(&s->req, sink, sizeof sink);
            http_parser_set_reframe(&s->req, false);
        }
        long k = http_parser_feed(&s->req, &req_head, p, feed, &ev);
        size_t got = s->req.sink_len;
        bool decoded = s->req.sink != NULL;
        http_parser_set_sink(&s->req, NULL, 0);
        if (k < 0 || (k == 0 && !(ev & HTTP_EV_END)))
            return -1;
        if (!s->closed && (decoded ? body_put(s, sink, got) : body_put(s, p, (size_t)k)))
            return -1;
        p += k;
        n -= (size_t)k;
        if (ev & HTTP_EV_END)
            s->req_end = 1;
    }
    return 0;
}

/* ------------------------------------------------------------- sending */

/* What nghttp2 has to send goes to the socket while it takes it. */
static void flush(h2_upstream_t *u)
{
    if (u->in_recv || u->in_flush || u->broken) {
        u->flush_again = 1;
        return;
    }
    u->in_flush = 1;
    do {
        u->flush_again = 0;
        if (h2_frames_send(u->ng, &u->frames) < 0)
            u->broken = 1;
    } while (u->flush_again && !u->broken);
    u->in_flush = 0;
}

/* The session cannot go on: streams not whole fail. */
static void session_failed(h2_upstream_t *u, int status)
{
    u->broken = 1;
    for (h2_ustream_t *s = u->streams; s; s = s->next)
        stream_fail(s, status, false);
}

/* ------------------------------------------------------------ lifetime */

static void stream_buffers_free(h2_upstream_t *u, h2_ustream_t *s)
{
    pbuf_chain_free(u->pool, &s->body);
    pbuf_chain_free(u->pool, &s->resp);
    pbuf_put(u->pool, s->head);
    pbuf_put(u->pool, s->hbuf);
    s->head = s->hbuf = NULL;
}

static void stream_unlink(h2_upstream_t *u, h2_ustream_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        u->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = NULL;
    s->next = u->spare;
    u->spare = s;
}

static void release(h2_upstream_t *u)
{
    nghttp2_session_del(u->ng);
    for (h2_ustream_t *s = u->streams, *next; s; s = next) {
        next = s->next;
        stream_buffers_free(u, s);
        free(s);
    }
    for (h2_ustream_t *s = u->spare, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    free(u);
}

/* Every entry from the connection or an owner: the session is freed on
 * the way out if a callback ended it, and streams released meanwhile are
 * put away. Returns false when it is gone. */
static void enter(h2_upstream_t *u) { u->depth++; }
static bool leave(h2_upstream_t *u)
{
    if (--u->depth)
        return true;
    if (u->dead) {
        release(u);
        return false;
    }
    if (u->sweep) {
        u->sweep = 0;
        for (h2_ustream_t *s = u->streams, *next; s; s = next) {
            next = s->next;
            if (s->released)
                stream_unlink(u, s);
        }
    }
    return true;
}

h2_upstream_t *h2_upstream_new(pbuf_pool_t *pool, const h2_upstream_io_t *io, void *conn, bool tls)
{
    h2_upstream_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->pool = pool;
    u->io = io;
    u->conn = conn;
    u->tls = tls;
    u->frames = (h2_frames_out_t){.write = io->send, .pending = io->send_pending, .ctx = conn};
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        free(u);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        free(u);
        return NULL;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int rc = nghttp2_session_client_new2(&u->ng, cb, u, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) {
        free(u);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_UPSTREAM_STREAM_WINDOW}};
    if (nghttp2_submit_settings(u->ng, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(u->ng, NGHTTP2_FLAG_NONE, 0,
                                              H2_UPSTREAM_CONN_WINDOW) != 0) {
        nghttp2_session_del(u->ng);
        free(u);
        return NULL;
    }
    flush(u);
    return u;
}

void h2_upstream_free(h2_upstream_t *u)
{
    if (!u)
        return;
    if (u->depth) {
        u->dead = 1; /* ended from a callback: freed on the way out */
        return;
    }
    release(u);
}

int h2_upstream_feed(h2_upstream_t *u, const char *data, size_t len)
{
    if (u->broken)
        return -1;
    enter(u);
    u->in_recv = 1;
    ssize_t k = nghttp2_session_mem_recv(u->ng, (const uint8_t *)data, len);
    u->in_recv = 0;
    if (k < 0)
        session_failed(u, UV_EPROTO);
    else if (!nghttp2_session_want_read(u->ng) && !nghttp2_session_want_write(u->ng))
        session_failed(u, UV_ECONNRESET); /* the target ended it (GOAWAY, nothing left) */
    flush(u);
    notify(u); /* what came before a failure goes first */
    if (!u->dead)
        flush(u); /* the windows the owners gave back */
    bool broken = u->broken;
    if (!leave(u))
        return -1;
    return broken ? -1 : 0;
}

void h2_upstream_on_drain(h2_upstream_t *u)
{
    enter(u);
    flush(u);
    notify(u); /* streams whose request is framed now */
    if (!u->dead)
        flush(u);
    leave(u);
}

void h2_upstream_goaway(h2_upstream_t *u)
{
    if (u->broken)
        return;
    enter(u);
    nghttp2_submit_goaway(u->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(u->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    flush(u);
    leave(u);
}

void h2_upstream_lost(h2_upstream_t *u, int status)
{
    enter(u);
    session_failed(u, status == UV_EOF ? UV_ECONNRESET : status);
    notify(u);
    leave(u);
}

bool h2_upstream_settled(const h2_upstream_t *u) { return u->settled; }

bool h2_upstream_open_ok(const h2_upstream_t *u)
{
    return !u->broken && nghttp2_session_check_request_allowed(u->ng);
}

uint32_t h2_upstream_peer_streams(const h2_upstream_t *u)
{
    return nghttp2_session_get_remote_settings(u->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

h2_ustream_t *h2_ustream_open(h2_upstream_t *u, void *owner)
{
    h2_ustream_t *s = u->spare;
    if (s)
        u->spare = s->next;
    else if (!(s = malloc(sizeof *s)))
        return NULL;
    memset(s, 0, sizeof *s);
    s->u = u;
    s->owner = owner;
    http_parser_init_request(&s->req);
    s->next = u->streams;
    if (u->streams)
        u->streams->prev = s;
    u->streams = s;
    return s;
}

void h2_ustream_close(h2_ustream_t *s)
{
    h2_upstream_t *u = s->u;
    if (s->submitted && !s->closed) {
        /* Callbacks for it are ignored from now on. */
        nghttp2_session_set_stream_user_data(u->ng, s->id, NULL);
        nghttp2_submit_rst_stream(u->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    }
    stream_buffers_free(u, s);
    s->released = 1;
    s->owner = NULL;
    if (u->depth) {
        u->sweep = 1;
        flush(u); /* deferred to the end of what is under way */
        return;
    }
    stream_unlink(u, s);
    enter(u);
    flush(u);
    leave(u);
}

int h2_ustream_write(h2_ustream_t *s, const uv_buf_t *bufs, unsigned n)
{
    h2_upstream_t *u = s->u;
    if (u->broken || s->told)
        return -1;
    if (!s->submitted && !nghttp2_session_check_request_allowed(u->ng))
        return UV_ECONNREFUSED; /* a GOAWAY came before it went: never seen */
    for (unsigned i = 0; i < n; i++)
        if (request_bytes(s, bufs[i].base, bufs[i].len) != 0)
            return -1;
    if (s->submitted && s->deferred && !s->closed && (s->body.first || s->req_end)) {
        s->deferred = 0;
        nghttp2_session_resume_data(u->ng, s->id);
    }
    enter(u);
    flush(u);
    int rc = u->broken ? -1 : s->body.first && !s->closed ? 1 : 0;
    s->queued = rc == 1;
    if (!leave(u))
        return -1;
    return rc;
}

bool h2_ustream_pending(const h2_ustream_t *s) { return s->body.first != NULL && !s->closed; }

void h2_ustream_pause(h2_ustream_t *s, bool paused)
{
    s->paused = paused;
    if (paused || s->released)
        return;
    h2_upstream_t *u = s->u;
    enter(u);
    stream_notify(u, s); /* what was read already goes first */
    if (!u->dead)
        flush(u);
    leave(u);
}
