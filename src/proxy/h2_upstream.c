/* HTTP/2 to a target; see h2_upstream.h. */
#include "proxy/h2_upstream.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/defaults.h"
#include "http/h2_head.h"
#include "http/parser.h"
#include "http/response.h"
#include "proxy/h2_frames.h"

struct h2_upstream {
    nghttp2_session *ng;
    pbuf_pool_t *pool;
    const h2_upstream_io_t *io;
    void *ctx;
    bool tls;
    /* The request being written: its head (gathered when it comes in
     * pieces), its body to frame, read by req. */
    http_parser_t req;
    pbuf_t *head;
    pbuf_chain_t body;
    int32_t stream; /* under way; 0: none */
    uint8_t head_request;
    uint8_t submitted; /* the request's HEADERS are submitted */
    uint8_t req_end;   /* its last body byte is queued */
    uint8_t deferred;  /* the data source waits for bytes */
    uint8_t queued;    /* a write returned 1: drained is owed */
    /* The response: head written as HTTP/1.1, then its body framing. */
    pbuf_chain_t resp;  /* bytes for the owner */
    uint8_t head_sent;  /* the final head went to the owner */
    uint8_t chunked;    /* the body goes chunked (no content-length) */
    uint8_t has_length; /* the head had a content-length */
    uint8_t in_trailers;
    uint8_t resp_done;
    uint8_t paused;
    uint8_t goaway;
    uint8_t broken;
    uint8_t in_recv;
    uint8_t in_flush;
    uint8_t flush_again;
    uint8_t dead; /* freed while in use: freed on the way out */
    int depth;    /* calls from the connection under way */
    int fail;     /* a failure to report once out of nghttp2's callbacks */
    int status;
    pbuf_t *hbuf;    /* a head or a trailer section being written */
    uint32_t fields; /* in the header block coming */
    h2_frames_out_t frames;
};

static __thread http_head_t req_head;
static __thread nghttp2_nv req_nv[MAX_REQUEST_HEADERS + 4];
static __thread char req_lower[DEFAULT_MAX_HEADER_BYTES * 4];

static void flush(h2_upstream_t *u);

/* ------------------------------------------------- bytes for the owner */

static int out_put(h2_upstream_t *u, const void *p, size_t n)
{
    return pbuf_chain_append(u->pool, &u->resp, p, n);
}

static int out_str(h2_upstream_t *u, const char *s) { return out_put(u, s, strlen(s)); }

/* A head or trailer section is written apart and goes out whole. */
static int hput(h2_upstream_t *u, const void *p, size_t n)
{
    if (!u->hbuf) {
        u->hbuf = pbuf_get(u->pool);
        if (!u->hbuf)
            return -1;
        u->hbuf->off = u->hbuf->len = 0;
        u->hbuf->next = NULL;
    }
    if (pbuf_room(u->hbuf) < n)
        return -1;
    memcpy(pbuf_tail(u->hbuf), p, n);
    u->hbuf->len += (uint32_t)n;
    return 0;
}

static int hstr(h2_upstream_t *u, const char *s) { return hput(u, s, strlen(s)); }

/* The head or trailer section written goes after the body bytes before it. */
static int hdone(h2_upstream_t *u)
{
    if (!u->hbuf)
        return 0;
    int rc = out_put(u, pbuf_head(u->hbuf), u->hbuf->len);
    pbuf_put(u->pool, u->hbuf);
    u->hbuf = NULL;
    return rc;
}

/* Hands what is ready to the owner, a buffer at a time, while it takes
 * (never from inside nghttp2's callbacks: the owner may end the session). */
static void deliver(h2_upstream_t *u)
{
    while (u->resp.first && !u->paused && !u->dead) {
        pbuf_t *b = u->resp.first;
        u->resp.first = b->next;
        if (!u->resp.first)
            u->resp.last = NULL;
        b->next = NULL;
        if (b->len)
            u->io->deliver(u->ctx, pbuf_head(b), b->len);
        pbuf_put(u->pool, b);
    }
}

/* -------------------------------------------------------- the response */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    h2_upstream_t *u = ud;
    (void)ng;
    if (frame->hd.stream_id != u->stream)
        return 0;
    u->fields = 0;
    if (u->head_sent)
        u->in_trailers = 1;
    else
        u->status = 0; /* this block's :status writes the status line */
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2_upstream_t *u = ud;
    (void)ng;
    (void)flags;
    if (frame->hd.stream_id != u->stream)
        return 0;
    /* Within what the request path reads from a target (fields, bytes):
     * a block beyond it resets the stream, a failed try. */
    if (++u->fields > MAX_REQUEST_HEADERS - 4 ||
        (u->hbuf ? u->hbuf->len : 0) + namelen + valuelen + 4 > DEFAULT_MAX_HEADER_BYTES)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int s = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            s = s * 10 + (value[i] - '0');
        u->status = s;
        char line[64];
        snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", s, http_status_reason(s));
        return hstr(u, line) == 0 ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (namelen && name[0] == ':')
        return 0;
    if (!u->in_trailers && h2_head_connection_specific((const char *)name, namelen))
        return 0;
    if (!u->in_trailers && namelen == 14 && memcmp(name, "content-length", 14) == 0)
        u->has_length = 1;
    if (u->in_trailers && !u->chunked)
        return 0; /* a body with a length has no trailer section to carry them */
    if (hput(u, name, namelen) || hput(u, ": ", 2) || hput(u, value, valuelen) ||
        hput(u, "\r\n", 2))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/* The final head is whole: its framing line, and it goes to the owner. */
static int head_end(h2_upstream_t *u, bool end_stream)
{
    if (u->status == 0)
        return -1; /* a head without :status: nothing to hand over */
    if (u->status < 200) {
        /* Interim: passed on as it is; the final head follows. */
        u->has_length = 0;
        return hput(u, "\r\n", 2) || hdone(u) ? -1 : 0;
    }
    bool bodyless = u->head_request || u->status == 204 || u->status == 304;
    if (end_stream) {
        if (!u->has_length && !bodyless && hstr(u, "content-length: 0\r\n"))
            return -1;
        u->resp_done = 1;
    } else if (!u->has_length && !bodyless) {
        u->chunked = 1;
        if (hstr(u, "transfer-encoding: chunked\r\n"))
            return -1;
    }
    if (hput(u, "\r\n", 2) || hdone(u))
        return -1;
    u->head_sent = 1;
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    h2_upstream_t *u = ud;
    (void)ng;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        u->goaway = 1; /* streams up to last_stream_id go on; no new ones */
        return 0;
    }
    if (frame->hd.stream_id != u->stream || u->stream == 0)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        if (!u->in_trailers) {
            if (head_end(u, end) != 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        } else if (u->chunked) {
            /* Trailers end the chunked body: "0", the fields, the blank line. */
            if (hput(u, "\r\n", 2) || hdone(u))
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            u->resp_done = 1;
        }
        if (end)
            u->resp_done = 1;
    } else if (frame->hd.type == NGHTTP2_DATA && end && !u->resp_done) {
        if (u->chunked && out_str(u, "0\r\n\r\n"))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        u->resp_done = 1;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    h2_upstream_t *u = ud;
    (void)ng;
    (void)flags;
    if (id != u->stream || !u->head_sent || len == 0)
        return 0;
    if (u->chunked) {
        char line[24];
        snprintf(line, sizeof line, "%zx\r\n", len);
        if (out_str(u, line) || out_put(u, data, len) || out_put(u, "\r\n", 2))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    } else if (out_put(u, data, len)) {
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    h2_upstream_t *u = ud;
    (void)ng;
    /* The trailer section starts with the last chunk's size line. */
    if (hd->type == NGHTTP2_HEADERS && hd->stream_id == u->stream && u->head_sent && u->chunked &&
        !u->resp_done && !u->in_trailers) {
        if (hstr(u, "0\r\n"))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    h2_upstream_t *u = ud;
    (void)ng;
    if (id != u->stream)
        return 0;
    u->stream = 0;
    if (!u->resp_done)
        u->fail = UV_ECONNRESET; /* reset, or refused: told once out of nghttp2 */
    (void)code;
    return 0;
}

/* --------------------------------------------------------- the request */

static ssize_t on_body_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    h2_upstream_t *u = ud;
    (void)ng;
    (void)id;
    (void)source;
    size_t n = pbuf_chain_read(u->pool, &u->body, buf, length);
    if (!u->body.first) {
        if (u->req_end)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0) {
            u->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static int body_put(h2_upstream_t *u, const char *p, size_t n)
{
    return pbuf_chain_append(u->pool, &u->body, p, n);
}

/* The request head as a HEADERS frame. */
static int submit(h2_upstream_t *u, bool end)
{
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
    u->head_request = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
    nghttp2_data_provider dp = {.source.ptr = u, .read_callback = on_body_read};
    int32_t id = nghttp2_submit_request(u->ng, NULL, req_nv, n, end ? NULL : &dp, NULL);
    if (id < 0)
        return -1;
    u->stream = id;
    u->submitted = 1;
    return 0;
}

/* Reads the HTTP/1.1 request written: 0, or -1. */
static int request_bytes(h2_upstream_t *u, const char *p, size_t n)
{
    while (n && !u->req_end) {
        int ev = 0;
        if (!u->submitted) {
            const char *h;
            size_t hn;
            long end = http_head_gather(u->pool, &u->head, p, n, &h, &hn);
            if (end <= 0)
                return (int)end; /* kept, or too large */
            long k = http_parser_feed(&u->req, &req_head, h, (size_t)end, &ev);
            if (k < 0 || !(ev & HTTP_EV_HEAD))
                return -1;
            size_t rest = hn - (size_t)k;
            p = p + n - rest;
            n = rest;
            int ev2 = 0;
            if (!(ev & HTTP_EV_END) && http_parser_feed(&u->req, &req_head, h + k, 0, &ev2) < 0)
                return -1;
            bool end_stream = (ev | ev2) & HTTP_EV_END;
            int rc = submit(u, end_stream);
            if (u->head) {
                pbuf_put(u->pool, u->head);
                u->head = NULL;
            }
            if (rc != 0)
                return -1;
            u->req_end = end_stream;
            continue;
        }
        /* Body bytes: as they are, or de-chunked. */
        char sink[4096 + CHUNKED_OUT_SLACK];
        size_t feed = n;
        if (http_parser_chunked_body(&u->req)) {
            if (feed > 4096)
                feed = 4096;
            http_parser_set_sink(&u->req, sink, sizeof sink);
            http_parser_set_reframe(&u->req, false);
        }
        long k = http_parser_feed(&u->req, &req_head, p, feed, &ev);
        size_t got = u->req.sink_len;
        bool decoded = u->req.sink != NULL;
        http_parser_set_sink(&u->req, NULL, 0);
        if (k < 0 || (k == 0 && !(ev & HTTP_EV_END)))
            return -1;
        if (decoded ? body_put(u, sink, got) : body_put(u, p, (size_t)k))
            return -1;
        p += k;
        n -= (size_t)k;
        if (ev & HTTP_EV_END)
            u->req_end = 1;
    }
    return 0;
}

/* ------------------------------------------------------------- sending */

/* What nghttp2 has to send goes to the socket while it takes it. */
static void flush(h2_upstream_t *u)
{
    if (u->in_recv || u->in_flush) {
        u->flush_again = 1;
        return;
    }
    u->in_flush = 1;
    do {
        u->flush_again = 0;
        if (h2_frames_send(u->ng, &u->frames) < 0)
            u->broken = 1;
        if (u->queued && !u->body.first) {
            u->queued = 0;
            u->io->drained(u->ctx);
        }
    } while (u->flush_again && !u->broken);
    u->in_flush = 0;
}

h2_upstream_t *h2_upstream_new(pbuf_pool_t *pool, const h2_upstream_io_t *io, void *ctx, bool tls)
{
    h2_upstream_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->pool = pool;
    u->io = io;
    u->ctx = ctx;
    u->tls = tls;
    u->frames = (h2_frames_out_t){.write = io->send, .pending = io->send_pending, .ctx = ctx};
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
    int rc = nghttp2_session_client_new(&u->ng, cb, u);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0) {
        free(u);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20}};
    if (nghttp2_submit_settings(u->ng, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(u->ng, NGHTTP2_FLAG_NONE, 0, 1 << 24) != 0) {
        nghttp2_session_del(u->ng);
        free(u);
        return NULL;
    }
    http_parser_init_request(&u->req);
    flush(u);
    return u;
}

static void release(h2_upstream_t *u)
{
    nghttp2_session_del(u->ng);
    pbuf_chain_free(u->pool, &u->body);
    pbuf_chain_free(u->pool, &u->resp);
    pbuf_put(u->pool, u->head);
    pbuf_put(u->pool, u->hbuf);
    free(u);
}

void h2_upstream_free(h2_upstream_t *u)
{
    if (!u)
        return;
    if (u->depth) {
        u->dead = 1; /* the owner ended it from a callback: freed on the way out */
        return;
    }
    release(u);
}

/* Every entry from the connection: the session is freed on the way out if
 * a callback ended it. Returns false when it is gone. */
static void enter(h2_upstream_t *u) { u->depth++; }
static bool leave(h2_upstream_t *u)
{
    if (--u->depth == 0 && u->dead) {
        release(u);
        return false;
    }
    return true;
}

void h2_upstream_begin(h2_upstream_t *u, bool head_request)
{
    pbuf_chain_free(u->pool, &u->body);
    pbuf_chain_free(u->pool, &u->resp);
    pbuf_put(u->pool, u->head);
    pbuf_put(u->pool, u->hbuf);
    u->head = u->hbuf = NULL;
    u->fail = 0;
    http_parser_init_request(&u->req);
    u->stream = 0;
    u->head_request = head_request;
    u->submitted = u->req_end = u->deferred = u->queued = 0;
    u->head_sent = u->chunked = u->has_length = u->in_trailers = u->resp_done = 0;
    u->paused = 0;
    u->status = 0;
}

int h2_upstream_write(h2_upstream_t *u, const uv_buf_t *bufs, unsigned n)
{
    if (u->broken || (u->goaway && !u->submitted))
        return -1;
    for (unsigned i = 0; i < n; i++)
        if (request_bytes(u, bufs[i].base, bufs[i].len) != 0)
            return -1;
    if (u->submitted && u->deferred && (u->body.first || u->req_end)) {
        u->deferred = 0;
        nghttp2_session_resume_data(u->ng, u->stream);
    }
    if (u->body.first)
        u->queued = 1;
    enter(u);
    flush(u);
    int rc = u->broken ? -1 : u->body.first ? 1 : 0;
    if (!leave(u))
        return -1;
    return rc;
}

int h2_upstream_feed(h2_upstream_t *u, const char *data, size_t len)
{
    if (u->broken)
        return -1;
    enter(u);
    u->in_recv = 1;
    ssize_t k = nghttp2_session_mem_recv(u->ng, (const uint8_t *)data, len);
    u->in_recv = 0;
    if (k < 0) {
        u->broken = 1;
        if (u->stream && !u->resp_done)
            u->fail = UV_EPROTO;
        u->stream = 0;
    }
    if (!u->broken)
        flush(u);
    deliver(u); /* what came before a failure goes first */
    if (!u->dead && u->fail && !u->resp.first) {
        int st = u->fail;
        u->fail = 0;
        u->io->failed(u->ctx, st);
    }
    if (!u->dead && !nghttp2_session_want_read(u->ng) && !nghttp2_session_want_write(u->ng))
        u->broken = 1; /* the target closed the session (GOAWAY, nothing left) */
    bool broken = u->broken;
    if (!leave(u))
        return -1;
    return broken ? -1 : 0;
}

void h2_upstream_on_drain(h2_upstream_t *u)
{
    enter(u);
    flush(u);
    leave(u);
}

void h2_upstream_pause(h2_upstream_t *u, bool paused)
{
    u->paused = paused;
    if (paused)
        return;
    enter(u);
    deliver(u);
    if (!u->dead && u->fail && !u->resp.first) {
        int st = u->fail;
        u->fail = 0;
        u->io->failed(u->ctx, st);
    }
    leave(u);
}

bool h2_upstream_reusable(const h2_upstream_t *u)
{
    return !u->broken && !u->goaway && u->stream == 0 && u->resp_done && !u->resp.first;
}
