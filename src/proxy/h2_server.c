/* A downstream HTTP/2 connection; see h2_server.h. */
#include "proxy/h2_server.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "http/h2_head.h"
#include "http/parser.h"
#include "http/h2_frames.h"

#define TICK_MS 1000
#define CONN_WINDOW_BYTES (1u << 20) /* given back at once: only in-flight bytes */
#define HEADER_BOMB_FACTOR 4         /* decoded past limit x this: the connection is cut */

/* A token bucket in thousandths (take() below). */
typedef struct bucket {
    int64_t milli;
    uint64_t ms; /* loop time of the last refill */
} bucket_t;

struct h2_stream {
    h2_server_t *srv;
    int32_t id;
    client_conn_t *cc; /* the request's; NULL once it let go */
    h2_stream_t *next;
    h2_stream_t *prev;
    pbuf_t *head;       /* the request head being written, then a partial response head */
    pbuf_chain_t in;    /* DATA the request has not taken yet */
    pbuf_chain_t out;   /* response body not framed yet */
    pbuf_t *trailers;   /* a chunked response's trailer section, sent as trailers */
    http_parser_t resp; /* reads back the HTTP/1.1 response written for the stream */
    h2_req_head_t rh;
    uint64_t stalled_ms;    /* loop time its response stopped for want of window; 0: moving */
    uint32_t continuations; /* in the header block coming */
    uint8_t req_end;        /* END_STREAM received */
    uint8_t req_end_given;  /* ... and handed to the request */
    uint8_t submitted;      /* response HEADERS submitted */
    uint8_t resp_end;       /* the response's last byte is queued */
    uint8_t eof_sent;       /* ... and framed */
    uint8_t deferred;       /* the data source waits for bytes */
    uint8_t queued;         /* a write returned 1: drained is owed */
    uint8_t notify;         /* ... and is due */
    uint8_t rst_after;      /* reset (NO_ERROR) once the response's end is sent */
    uint8_t head_method;
    uint8_t closed; /* nghttp2 is done with it (it goes when the request lets go too) */
};

struct h2_server {
    client_conn_t *carrier;
    nghttp2_session *ng;
    const h2_server_ops_t *ops;
    void *ctx;
    pbuf_pool_t *pool;
    uv_loop_t *loop;
    h2_stream_t *streams;
    size_t n_streams;
    pbuf_t *side; /* pseudo-header values of the header block coming */
    uint32_t max_streams;
    uint64_t header_limit;
    uint64_t idle_timeout_ms;
    uint64_t last_ms;                 /* loop time of the last byte received */
    bucket_t resets, settings, pings; /* what the client sends, against its rates */
    uint8_t in_recv;
    uint8_t in_flush;
    uint8_t flush_again;
    uint8_t draining;
    uint8_t goaway_final;
    uint8_t cut;  /* a defence fired: close once GOAWAY is out */
    uint8_t gone; /* the client went: nghttp2 is not called again */
    uint8_t closing;
    h2_frames_out_t frames; /* where nghttp2's frames go: the carrier */
    h2_server_env_t *env;
    h2_server_t *dirty_next; /* in env's list of connections to flush */
    uint8_t scheduled;
};

static const char *const err_names[H2_ERR_REASONS] = {
    [H2_ERR_PROTOCOL] = "protocol",
    [H2_ERR_RAPID_RESET] = "rapid_reset",
    [H2_ERR_CONTINUATION_FLOOD] = "continuation_flood",
    [H2_ERR_HPACK_BOMB] = "hpack_bomb",
    [H2_ERR_SETTINGS_FLOOD] = "settings_flood",
    [H2_ERR_PING_FLOOD] = "ping_flood",
    [H2_ERR_ZERO_WINDOW] = "zero_window",
    [H2_ERR_FLOOD] = "flood",
    [H2_ERR_REFUSED] = "refused_stream",
};

const char *h2_err_name(h2_err_t e) { return e < H2_ERR_REASONS ? err_names[e] : "unknown"; }

/* Per worker thread: a response head read back, its header list. */
static __thread http_head_t resp_head;
static __thread nghttp2_nv resp_nv[MAX_REQUEST_HEADERS + 1];
static __thread char resp_lower[DEFAULT_MAX_HEADER_BYTES * 4];

static void flush(h2_server_t *srv);
static void schedule(h2_server_t *srv);
static void unschedule(h2_server_t *srv);

/* --------------------------------------------------------------- helpers */

/* A token bucket in thousandths, refilled at rate a second and holding a
 * burst of twice that: false when it is empty (the event comes too fast,
 * sustained). */
static void bucket_init(bucket_t *b, int64_t rate, uint64_t now)
{
    b->milli = rate * 2000;
    b->ms = now;
}

static bool take(bucket_t *b, int64_t rate, uint64_t now)
{
    b->milli += rate * (int64_t)(now - b->ms);
    b->ms = now;
    if (b->milli > rate * 2000)
        b->milli = rate * 2000;
    if (b->milli < 1000)
        return false;
    b->milli -= 1000;
    return true;
}

/* A defence fired: counted, GOAWAY, and the connection closes once it is out. */
static void defend(h2_server_t *srv, h2_err_t why, uint32_t code)
{
    if (srv->cut || srv->gone)
        return;
    srv->cut = 1;
    srv->ops->protocol_error(srv, why);
    nghttp2_session_terminate_session(srv->ng, code);
}

static h2_stream_t *stream_of(h2_server_t *srv, int32_t id)
{
    return nghttp2_session_get_stream_user_data(srv->ng, id);
}

/* ------------------------------------------------------- request side */

/* Hands the request what it can take of the DATA held for it. */
static void deliver(h2_stream_t *st)
{
    h2_server_t *srv = st->srv;
    while (st->in.first && st->cc) {
        pbuf_t *b = st->in.first;
        bool last = st->req_end && !b->next;
        long k = client_conn_carried_body(st->cc, pbuf_head(b), b->len, last);
        if (k < 0)
            break;
        if (!srv->gone && k > 0)
            nghttp2_session_consume_stream(srv->ng, st->id, (size_t)k);
        if (last && (size_t)k == b->len)
            st->req_end_given = 1;
        pbuf_chain_consume(srv->pool, &st->in, (size_t)k);
        if (k == 0)
            return; /* paused: the request resumes it */
    }
    if (!st->cc) {
        /* Nobody takes it any more: the window goes back, the bytes go. */
        size_t n = pbuf_chain_len(&st->in);
        if (n && !srv->gone)
            nghttp2_session_consume_stream(srv->ng, st->id, n);
        pbuf_chain_free(srv->pool, &st->in);
        return;
    }
    if (!st->in.first && st->req_end && !st->req_end_given) {
        st->req_end_given = 1;
        client_conn_carried_body(st->cc, NULL, 0, true);
    }
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    h2_server_t *srv = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2_stream_t *st = calloc(1, sizeof *st);
    if (!st)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->srv = srv;
    st->id = frame->hd.stream_id;
    st->head = pbuf_get(srv->pool);
    if (!srv->side)
        srv->side = pbuf_get(srv->pool);
    if (!st->head || !srv->side) {
        pbuf_put(srv->pool, st->head);
        free(st);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    st->head->off = st->head->len = 0;
    st->head->next = NULL;
    size_t side_cap = srv->side->cap < srv->header_limit ? srv->side->cap : srv->header_limit;
    h2_req_head_init(&st->rh, st->head->data, st->head->cap, srv->side->data, side_cap,
                     srv->header_limit);
    http_parser_init_response(&st->resp);
    st->next = srv->streams;
    if (srv->streams)
        srv->streams->prev = st;
    srv->streams = st;
    srv->n_streams++;
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2_server_t *srv = ud;
    (void)ng;
    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers of a request: not relayed */
    h2_stream_t *st = stream_of(srv, frame->hd.stream_id);
    if (!st)
        return 0;
    h2_req_head_add(&st->rh, name, namelen, value, valuelen);
    if (st->rh.decoded > srv->header_limit * HEADER_BOMB_FACTOR) {
        defend(srv, H2_ERR_HPACK_BOMB, NGHTTP2_ENHANCE_YOUR_CALM);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* The header block is whole: the request begins. */
static void request_begin(h2_server_t *srv, h2_stream_t *st, bool end)
{
    pbuf_put(srv->pool, srv->side);
    srv->side = NULL;
    st->head_method = st->rh.head_method;
    http_parser_expect_no_body(&st->resp, st->head_method);
    if (srv->draining && srv->goaway_final) {
        nghttp2_submit_rst_stream(srv->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return;
    }
    client_conn_t *cc = srv->ops->stream_open(srv, st);
    if (!cc) {
        nghttp2_submit_rst_stream(srv->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return;
    }
    st->cc = cc;
    if (end)
        st->req_end = 1;
    long n = h2_req_head_finish(&st->rh, !end);
    if (n < 0) {
        if (st->rh.decoded > srv->header_limit)
            srv->ops->protocol_error(srv, H2_ERR_HPACK_BOMB);
        client_conn_carried_reject(cc, -n == H2_HEAD_TOO_LARGE ? END_HEADER_TOO_LARGE
                                                               : END_BAD_REQUEST);
    } else {
        client_conn_carried_head(cc, st->head->data, (size_t)n);
    }
    pbuf_put(srv->pool, st->head);
    st->head = NULL;
    if (st->cc)
        deliver(st);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    h2_server_t *srv = ud;
    h2_stream_t *st;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        st = stream_of(srv, frame->hd.stream_id);
        if (!st)
            return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            request_begin(srv, st, end);
        } else if (end) {
            st->req_end = 1; /* trailers end the body */
            deliver(st);
        }
        break;
    case NGHTTP2_DATA:
        st = stream_of(srv, frame->hd.stream_id);
        if (st && end) {
            st->req_end = 1;
            deliver(st);
        }
        break;
    case NGHTTP2_RST_STREAM:
        if (!take(&srv->resets, srv->max_streams, uv_now(srv->loop))) {
            defend(srv, H2_ERR_RAPID_RESET, NGHTTP2_ENHANCE_YOUR_CALM);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    default:
        break;
    }
    (void)ng;
    return 0;
}

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    h2_server_t *srv = ud;
    bool ack = hd->flags & NGHTTP2_FLAG_ACK;
    if (hd->type == NGHTTP2_CONTINUATION) {
        h2_stream_t *st = stream_of(srv, hd->stream_id);
        if (st && ++st->continuations > H2_MAX_CONTINUATIONS) {
            defend(srv, H2_ERR_CONTINUATION_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    } else if (hd->type == NGHTTP2_SETTINGS && !ack) {
        if (!take(&srv->settings, H2_MAX_CONTROL_PER_S, uv_now(srv->loop))) {
            defend(srv, H2_ERR_SETTINGS_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    } else if (hd->type == NGHTTP2_PING && !ack) {
        if (!take(&srv->pings, H2_MAX_CONTROL_PER_S, uv_now(srv->loop))) {
            defend(srv, H2_ERR_PING_FLOOD, NGHTTP2_ENHANCE_YOUR_CALM);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    (void)ng;
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    h2_server_t *srv = ud;
    (void)flags;
    nghttp2_session_consume_connection(ng, len);
    h2_stream_t *st = stream_of(srv, id);
    if (!st || !st->cc) {
        nghttp2_session_consume_stream(ng, id, len);
        return 0;
    }
    size_t used = 0;
    while (!st->in.first && st->cc && used < len) {
        long k = client_conn_carried_body(st->cc, (const char *)data + used, len - used, false);
        if (k <= 0) {
            if (k < 0)
                used = len; /* the request ended: dropped */
            break;
        }
        used += (size_t)k;
    }
    if (!st->cc)
        used = len; /* nobody takes the rest */
    nghttp2_session_consume_stream(ng, id, used);
    if (used < len &&
        pbuf_chain_append(srv->pool, &st->in, (const char *)data + used, len - used) != 0) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        client_conn_carried_gone(st->cc);
    }
    return 0;
}

static void stream_free(h2_server_t *srv, h2_stream_t *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        srv->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    srv->n_streams--;
    pbuf_chain_free(srv->pool, &st->in);
    pbuf_chain_free(srv->pool, &st->out);
    pbuf_put(srv->pool, st->head);
    pbuf_put(srv->pool, st->trailers);
    free(st);
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    h2_server_t *srv = ud;
    h2_stream_t *st = stream_of(srv, id);
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    st->closed = 1;
    if (!st->cc) {
        stream_free(srv, st);
        return 0;
    }
    /* Closed with its whole response sent: the request finishes on its own
     * (it is told its bytes are out, then lets go). Else the client reset
     * it, or it was cut: the request ends. Either way the stream goes when
     * the request lets go of it (carrier_close). */
    if (!(st->eof_sent && code == NGHTTP2_NO_ERROR))
        client_conn_carried_gone(st->cc);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    h2_server_t *srv = ud;
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        h2_stream_t *st = stream_of(srv, frame->hd.stream_id);
        if (st && st->rst_after && !st->req_end)
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

/* ------------------------------------------------------ response side */

/* The kept trailer section as a trailing HEADERS frame: 0, or -1 when there
 * is none (the last DATA frame ends the stream). */
static int submit_trailers(h2_server_t *srv, h2_stream_t *st)
{
    size_t len;
    const char *t = http_parser_trailers(&st->resp, &len);
    size_t n = 0, used = 0;
    if (!t)
        return -1;
    while (len && n < MAX_REQUEST_HEADERS) {
        const char *eol = memchr(t, '\n', len);
        const char *colon = memchr(t, ':', len);
        if (!eol || !colon || colon > eol)
            break;
        size_t name_len = (size_t)(colon - t);
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (!h2_head_connection_specific(t, name_len) && name_len <= sizeof resp_lower - used) {
            char *ln = resp_lower + used;
            for (size_t k = 0; k < name_len; k++)
                ln[k] = (char)(t[k] >= 'A' && t[k] <= 'Z' ? t[k] + 32 : t[k]);
            used += name_len;
            resp_nv[n++] = (nghttp2_nv){(uint8_t *)ln, (uint8_t *)v, name_len, (size_t)(ve - v),
                                        NGHTTP2_NV_FLAG_NONE};
        }
        len -= (size_t)(eol + 1 - t);
        t = eol + 1;
    }
    if (n == 0)
        return -1;
    return nghttp2_submit_trailer(srv->ng, st->id, resp_nv, n) == 0 ? 0 : -1;
}

static ssize_t on_data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    h2_server_t *srv = ud;
    h2_stream_t *st = source->ptr;
    (void)ng;
    (void)id;
    size_t n = pbuf_chain_read(srv->pool, &st->out, buf, length);
    st->stalled_ms = 0;
    if (!st->out.first) {
        if (st->queued) {
            st->notify = 1;
            st->queued = 0;
        }
        if (st->resp_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (st->trailers && submit_trailers(srv, st) == 0)
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers end it */
            st->eof_sent = 1;
        } else if (n == 0) {
            st->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* The response head ficus wrote: HEADERS (with END_STREAM when no body follows). */
static int submit_head(h2_server_t *srv, h2_stream_t *st, bool end)
{
    char status[3];
    long n = h2_head_response_nv(&resp_head, resp_nv, MAX_REQUEST_HEADERS + 1, status, resp_lower,
                                 sizeof resp_lower);
    if (n < 0)
        return -1;
    st->submitted = 1;
    if (end) {
        st->resp_end = st->eof_sent = 1;
        return nghttp2_submit_response(srv->ng, st->id, resp_nv, (size_t)n, NULL) == 0 ? 0 : -1;
    }
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = on_data_read};
    return nghttp2_submit_response(srv->ng, st->id, resp_nv, (size_t)n, &dp) == 0 ? 0 : -1;
}

/* Reads back the HTTP/1.1 response written for the stream: 0, or -1. */
static int response_bytes(h2_server_t *srv, h2_stream_t *st, const char *p, size_t n)
{
    while (n && !st->resp_end) {
        int ev = 0;
        if (!st->submitted) {
            /* The head, whole: from this piece, or gathered. */
            const char *h;
            size_t hn;
            long end = http_head_gather(srv->pool, &st->head, p, n, &h, &hn);
            if (end <= 0)
                return (int)end; /* kept, or too large */
            long k = http_parser_feed(&st->resp, &resp_head, h, (size_t)end, &ev);
            if (k < 0 || !(ev & HTTP_EV_HEAD))
                return -1;
            /* What followed the head in this piece. */
            size_t rest = hn - (size_t)k;
            p = p + n - rest;
            n = rest;
            if (st->head) {
                pbuf_put(srv->pool, st->head);
                st->head = NULL;
            }
            if (resp_head.status < 200) {
                http_parser_reset(&st->resp); /* an interim answer: the final one follows */
                http_parser_expect_no_body(&st->resp, st->head_method);
                continue;
            }
            if (!(ev & HTTP_EV_END)) {
                int ev2 = 0;
                if (http_parser_feed(&st->resp, &resp_head, p, 0, &ev2) < 0)
                    return -1;
                ev |= ev2;
            }
            if (submit_head(srv, st, ev & HTTP_EV_END) != 0)
                return -1;
            if (http_parser_chunked_body(&st->resp)) {
                /* Its trailer section (gRPC's status) becomes trailers. */
                if (!st->trailers)
                    st->trailers = pbuf_get(srv->pool);
                if (st->trailers)
                    http_parser_keep_trailers(&st->resp, st->trailers->data, st->trailers->cap);
            }
            continue;
        }
        /* Body bytes: as they are, or de-chunked into the queue. */
        if (http_parser_chunked_body(&st->resp)) {
            pbuf_t *prev_last = st->out.last;
            pbuf_t *b = pbuf_chain_room(srv->pool, &st->out, CHUNKED_OUT_SLACK + 1024);
            if (!b)
                return -1;
            size_t feed =
                n < pbuf_room(b) - CHUNKED_OUT_SLACK ? n : pbuf_room(b) - CHUNKED_OUT_SLACK;
            http_parser_set_sink(&st->resp, pbuf_tail(b), pbuf_room(b));
            http_parser_set_reframe(&st->resp, false);
            long k = http_parser_feed(&st->resp, &resp_head, p, feed, &ev);
            size_t got = st->resp.sink_len;
            http_parser_set_sink(&st->resp, NULL, 0);
            if (k < 0)
                return -1;
            b->len += (uint32_t)got;
            if (b->len == 0) { /* a new buffer nothing went into */
                if (prev_last)
                    prev_last->next = NULL;
                else
                    st->out.first = NULL;
                st->out.last = prev_last;
                pbuf_put(srv->pool, b);
            }
            if (k == 0 && !(ev & HTTP_EV_END))
                return -1;
            p += k;
            n -= (size_t)k;
        } else {
            long k = http_parser_feed(&st->resp, &resp_head, p, n, &ev);
            if (k < 0)
                return -1;
            if (k == 0 && !(ev & HTTP_EV_END))
                return -1;
            if (k && pbuf_chain_append(srv->pool, &st->out, p, (size_t)k) != 0)
                return -1;
            p += k;
            n -= (size_t)k;
        }
        if (ev & HTTP_EV_END)
            st->resp_end = 1;
    }
    return 0;
}

static int carrier_write(void *ctx, const uv_buf_t *bufs, unsigned n)
{
    h2_stream_t *st = ctx;
    if (!st)
        return -1;
    h2_server_t *srv = st->srv;
    if (srv->gone)
        return -1;
    if (st->closed)
        return 0; /* after its end (nothing is left to say) */
    for (unsigned i = 0; i < n; i++)
        if (response_bytes(srv, st, bufs[i].base, bufs[i].len) != 0) {
            nghttp2_submit_rst_stream(srv->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
            schedule(srv);
            return -1;
        }
    if (st->deferred && (st->out.first || st->resp_end)) {
        st->deferred = 0;
        nghttp2_session_resume_data(srv->ng, st->id);
    }
    int rc = 0;
    if (st->out.first) {
        st->queued = 1;
        rc = 1;
    }
    schedule(srv);
    return st->out.first || st->notify ? rc : 0;
}

static bool carrier_write_pending(const void *ctx)
{
    const h2_stream_t *st = ctx;
    return st && st->out.first;
}

static void carrier_resume(void *ctx)
{
    h2_stream_t *st = ctx;
    if (!st || st->srv->gone || st->closed)
        return;
    deliver(st);
    schedule(st->srv);
}

static void carrier_done(void *ctx)
{
    h2_stream_t *st = ctx;
    if (!st || st->srv->gone || st->closed)
        return;
    h2_server_t *srv = st->srv;
    if (!st->submitted) {
        nghttp2_submit_rst_stream(srv->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    } else if (!st->resp_end) {
        st->resp_end = 1; /* a body that ended with the upstream's close */
    }
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(srv->ng, st->id);
    }
    schedule(srv);
}

static void carrier_close(void *ctx, bool reset)
{
    h2_stream_t *st = ctx;
    if (!st)
        return;
    h2_server_t *srv = st->srv;
    client_conn_t *cc = st->cc;
    st->cc = NULL;
    if (st->closed) {
        if (cc) {
            cc->carrier_ctx = NULL;
            client_conn_carried_closed(cc);
        }
        stream_free(srv, st);
        return;
    }
    if (!srv->gone) {
        if (reset || !st->submitted)
            nghttp2_submit_rst_stream(srv->ng, NGHTTP2_FLAG_NONE, st->id,
                                      st->submitted ? NGHTTP2_INTERNAL_ERROR : NGHTTP2_CANCEL);
        else if (!st->req_end)
            st->rst_after = 1;
        deliver(st); /* what the request did not take goes back to the window */
    }
    if (cc) {
        cc->carrier_ctx = NULL;
        client_conn_carried_closed(cc);
    }
    if (!srv->gone)
        schedule(srv);
}

const client_carrier_ops_t h2_stream_carrier_ops = {
    .write = carrier_write,
    .write_pending = carrier_write_pending,
    .resume = carrier_resume,
    .done = carrier_done,
    .close = carrier_close,
};

/* --------------------------------------------------------- the connection */

static int carrier_send(void *ctx, const uv_buf_t *bufs, unsigned n)
{
    return client_conn_write(ctx, bufs, n);
}

static bool carrier_pending(void *ctx) { return client_conn_write_pending(ctx); }

static void arm(h2_server_t *srv)
{
    if (srv->gone || srv->closing)
        return;
    client_conn_arm_deadline(srv->carrier,
                             srv->n_streams || srv->draining ? TICK_MS : srv->idle_timeout_ms);
}

static void close_now(h2_server_t *srv)
{
    if (srv->closing)
        return;
    srv->closing = 1;
    unschedule(srv);
    /* Requests still on it end as the client's going. */
    for (h2_stream_t *st = srv->streams; st; st = st->next)
        if (st->cc)
            client_conn_carried_gone(st->cc);
    srv->gone = 1;
    client_conn_abort(srv->carrier);
}

/* A connection with frames to send is flushed once per turn of the loop,
 * after every read of the turn was handled: the frames of many streams go
 * out in one write. */
static void schedule(h2_server_t *srv)
{
    if (srv->scheduled || srv->gone || srv->closing)
        return;
    srv->scheduled = 1;
    srv->dirty_next = srv->env->dirty;
    srv->env->dirty = srv;
    if (!uv_is_active((uv_handle_t *)&srv->env->check))
        uv_check_start(&srv->env->check, srv->env->on_check);
}

static void unschedule(h2_server_t *srv)
{
    if (!srv->scheduled)
        return;
    for (h2_server_t **p = &srv->env->dirty; *p; p = &(*p)->dirty_next)
        if (*p == srv) {
            *p = srv->dirty_next;
            break;
        }
    srv->scheduled = 0;
}

static void on_check(uv_check_t *c)
{
    h2_server_env_t *env = c->data;
    while (env->dirty) {
        h2_server_t *srv = env->dirty;
        env->dirty = srv->dirty_next;
        srv->scheduled = 0;
        flush(srv); /* may schedule this one or others again */
    }
    uv_check_stop(c);
}

void h2_server_env_init(h2_server_env_t *env, uv_loop_t *loop)
{
    memset(env, 0, sizeof *env);
    uv_check_init(loop, &env->check);
    env->check.data = env;
    env->on_check = on_check;
    uv_unref((uv_handle_t *)&env->check);
}

void h2_server_env_close(h2_server_env_t *env)
{
    env->dirty = NULL;
    if (!uv_is_closing((uv_handle_t *)&env->check))
        uv_close((uv_handle_t *)&env->check, NULL);
}

/* What nghttp2 has to send goes out in as few writes as it fills; streams
 * whose bytes were all framed are told so; the connection closes when
 * nothing is left to say. */
static void flush(h2_server_t *srv)
{
    if (srv->gone || srv->closing)
        return;
    if (srv->in_recv || srv->in_flush) {
        srv->flush_again = 1;
        return;
    }
    srv->in_flush = 1;
    do {
        srv->flush_again = 0;
        int rc = h2_frames_send(srv->ng, &srv->frames);
        if (rc < 0) {
            if (rc != -1)
                srv->ops->protocol_error(srv, rc == NGHTTP2_ERR_FLOODED ? H2_ERR_FLOOD
                                                                        : H2_ERR_PROTOCOL);
            srv->in_flush = 0;
            close_now(srv);
            return;
        }
        for (h2_stream_t *st = srv->streams, *next; st; st = next) {
            next = st->next;
            if (!st->notify)
                continue;
            st->notify = 0;
            if (st->cc)
                client_conn_carried_drained(st->cc);
        }
    } while (srv->flush_again && !srv->gone);
    srv->in_flush = 0;
    if (srv->gone)
        return;
    bool done = (!nghttp2_session_want_read(srv->ng) && !nghttp2_session_want_write(srv->ng)) ||
                srv->cut || (srv->draining && srv->goaway_final && srv->n_streams == 0);
    if (done && !client_conn_write_pending(srv->carrier))
        close_now(srv);
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *frame, int code, void *ud)
{
    h2_server_t *srv = ud;
    (void)ng;
    (void)frame;
    /* A stream over max_concurrent_streams (a client that opened it before
     * it read the SETTINGS) is refused, not a protocol error. */
    srv->ops->protocol_error(srv,
                             code == NGHTTP2_ERR_REFUSED_STREAM ? H2_ERR_REFUSED : H2_ERR_PROTOCOL);
    return 0;
}

h2_server_t *h2_server_new(client_conn_t *carrier, const config_server_t *cfg, h2_server_env_t *env,
                           const h2_server_ops_t *ops, void *ctx)
{
    h2_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->env = env;
    srv->carrier = carrier;
    srv->frames =
        (h2_frames_out_t){.write = carrier_send, .pending = carrier_pending, .ctx = carrier};
    srv->ops = ops;
    srv->ctx = ctx;
    srv->pool = carrier->env->pool;
    srv->loop = carrier->env->loop;
    srv->max_streams = cfg->http2.max_concurrent_streams;
    srv->header_limit =
        cfg->http2.max_header_list_size ? cfg->http2.max_header_list_size : cfg->max_header_bytes;
    srv->idle_timeout_ms = cfg->idle_timeout_ms;
    srv->last_ms = uv_now(srv->loop);
    bucket_init(&srv->resets, srv->max_streams, srv->last_ms);
    bucket_init(&srv->settings, H2_MAX_CONTROL_PER_S, srv->last_ms);
    bucket_init(&srv->pings, H2_MAX_CONTROL_PER_S, srv->last_ms);

    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        goto fail_free;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        goto fail_free;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* ficus's own limits fire first, so that each is counted by its name. */
    nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATIONS * 2);
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)srv->max_streams * 8,
                                               (uint64_t)srv->max_streams * 4);
    int rc = nghttp2_session_server_new2(&srv->ng, cb, srv, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        goto fail_free;
    uint64_t win = cfg->http2.initial_window_size;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)win},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)srv->header_limit},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(srv->ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0 ||
        nghttp2_session_set_local_window_size(
            srv->ng, NGHTTP2_FLAG_NONE, 0,
            (int32_t)(win > CONN_WINDOW_BYTES ? win : CONN_WINDOW_BYTES)) != 0)
        goto fail_session;
    arm(srv);
    return srv;
fail_session:
    nghttp2_session_del(srv->ng);
fail_free:
    free(srv);
    return NULL;
}

void *h2_server_ctx(const h2_server_t *srv) { return srv->ctx; }

size_t h2_server_streams(const h2_server_t *srv) { return srv->n_streams; }

void h2_server_feed(h2_server_t *srv, const char *data, size_t len)
{
    if (srv->gone || srv->closing || srv->cut)
        return;
    srv->last_ms = uv_now(srv->loop);
    srv->in_recv = 1;
    ssize_t k = nghttp2_session_mem_recv(srv->ng, (const uint8_t *)data, len);
    srv->in_recv = 0;
    if (srv->gone)
        return;
    if (k < 0 && !srv->cut) {
        /* A frame nghttp2 refused for the connection: GOAWAY is queued. */
        srv->ops->protocol_error(srv, k == NGHTTP2_ERR_FLOODED ? H2_ERR_FLOOD : H2_ERR_PROTOCOL);
        srv->cut = 1;
        if (k == NGHTTP2_ERR_BAD_CLIENT_MAGIC || k == NGHTTP2_ERR_FLOODED) {
            close_now(srv);
            return;
        }
        nghttp2_session_terminate_session(srv->ng, NGHTTP2_PROTOCOL_ERROR);
    }
    schedule(srv);
    arm(srv);
}

void h2_server_on_drained(h2_server_t *srv) { schedule(srv); }

void h2_server_on_timer(h2_server_t *srv)
{
    if (srv->gone || srv->closing)
        return;
    uint64_t now = uv_now(srv->loop);
    if (srv->draining && !srv->goaway_final) {
        /* A round trip after the notice: the last stream taken. */
        srv->goaway_final = 1;
        nghttp2_submit_goaway(srv->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(srv->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
    }
    if (!srv->n_streams && now - srv->last_ms >= srv->idle_timeout_ms && !srv->draining) {
        srv->draining = srv->goaway_final = 1;
        nghttp2_submit_goaway(srv->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(srv->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
    }
    /* Responses that cannot move for want of window. */
    bool conn_shut = nghttp2_session_get_remote_window_size(srv->ng) <= 0;
    for (h2_stream_t *st = srv->streams, *next; st; st = next) {
        next = st->next;
        if (!st->submitted || st->eof_sent || !(st->out.first || st->resp_end)) {
            st->stalled_ms = 0;
            continue;
        }
        bool shut =
            conn_shut || nghttp2_session_get_stream_remote_window_size(srv->ng, st->id) <= 0;
        if (!shut) {
            st->stalled_ms = 0;
        } else if (!st->stalled_ms) {
            st->stalled_ms = now;
        } else if (now - st->stalled_ms >= srv->idle_timeout_ms) {
            if (conn_shut) {
                defend(srv, H2_ERR_ZERO_WINDOW, NGHTTP2_ENHANCE_YOUR_CALM);
                break;
            }
            srv->ops->protocol_error(srv, H2_ERR_ZERO_WINDOW);
            nghttp2_submit_rst_stream(srv->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
            if (st->cc)
                client_conn_carried_gone(st->cc);
        }
    }
    schedule(srv);
    arm(srv);
}

void h2_server_gone(h2_server_t *srv) { close_now(srv); }

void h2_server_drain(h2_server_t *srv)
{
    if (srv->draining || srv->gone || srv->closing)
        return;
    srv->draining = 1;
    nghttp2_submit_shutdown_notice(srv->ng);
    schedule(srv);
    arm(srv);
}

void h2_server_free(h2_server_t *srv)
{
    if (!srv)
        return;
    unschedule(srv);
    while (srv->streams) {
        h2_stream_t *st = srv->streams;
        if (st->cc) {
            st->cc->carrier_ctx = NULL;
            st->cc = NULL;
        }
        stream_free(srv, st);
    }
    pbuf_put(srv->pool, srv->side);
    nghttp2_session_del(srv->ng);
    free(srv);
}
