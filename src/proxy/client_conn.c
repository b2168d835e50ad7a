/* A client (downstream) connection: reads request heads and bodies, hands
 * each request to the proxy, keeps the connection alive between requests,
 * holds pipelined requests until the previous response is out, and enforces
 * the header, idle and request timeouts with one timer armed by set_state().
 * Reads land in the worker's shared buffer; only a partial head or pipelined
 * bytes are copied into a pooled buffer of the connection's own. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/time.h"
#include "http/response.h"
#include "proxy/proxy.h"
#include "proxy/tunnel.h"

#define LINGER_MS 2000

static void cc_close(client_conn_t *cc);
static void cc_process_input(client_conn_t *cc);

static inline client_conn_t *cc_of(stream_t *s) { return (client_conn_t *)s; }

static void cc_on_timer(uv_timer_t *t);

static void set_state(client_conn_t *cc, cc_state_t st)
{
    const config_server_t *srv = &cc->pw->gen->cfg->server;
    cc_state_t prev = cc->state;
    cc->state = st;
    switch (st) {
    case CC_IDLE:
        uv_timer_start(&cc->timer, cc_on_timer,
                       cc->requests ? srv->idle_timeout_ms : srv->header_timeout_ms, 0);
        break;
    case CC_HEAD:
        if (prev != CC_HEAD)
            uv_timer_start(&cc->timer, cc_on_timer, srv->header_timeout_ms, 0);
        break;
    case CC_ACTIVE:
        uv_timer_stop(&cc->timer); /* the proxy arms the request deadline */
        break;
    case CC_LINGER:
        uv_timer_start(&cc->timer, cc_on_timer, LINGER_MS, 0);
        break;
    case CC_CLOSING:
        uv_timer_stop(&cc->timer);
        break;
    }
}

void client_conn_arm_deadline(client_conn_t *cc, uint64_t timeout_ms)
{
    uv_timer_start(&cc->timer, cc_on_timer, timeout_ms, 0);
}

/* --- teardown --- */

static void cc_on_handle_closed(client_conn_t *cc)
{
    if (--cc->n_handles)
        return;
    proxy_worker_t *pw = cc->pw;
    proxy_request_unbind(&cc->req);
    pbuf_put(&pw->w->pool, cc->in);
    worker_connection_closed(pw->w);
    free(cc);
}

static void cc_on_timer_closed(uv_handle_t *h) { cc_on_handle_closed(h->data); }

static void cc_on_close(stream_t *s) { cc_on_handle_closed(cc_of(s)); }

static void cc_close(client_conn_t *cc)
{
    if (cc->state == CC_CLOSING)
        return;
    set_state(cc, CC_CLOSING);
    proxy_worker_t *pw = cc->pw;
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        pw->clients = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    cc->next = cc->prev = NULL;
    metrics_downstream_connection(pw->metrics, -1);
    if (pw->draining && !pw->clients && pw->on_drained) {
        void (*done)(void *) = pw->on_drained;
        pw->on_drained = NULL; /* once */
        done(pw->drained_ctx);
    }
    uv_close((uv_handle_t *)&cc->timer, cc_on_timer_closed);
    uv_close((uv_handle_t *)&cc->try_timer, cc_on_timer_closed);
    stream_close(&cc->s, false);
}

/* After a final answer: stop sending, read and drop what the client still
 * sends for a moment, so that closing with unread input does not turn into a
 * reset that destroys the answer before the client reads it. */
static void cc_linger(client_conn_t *cc)
{
    if (cc->state == CC_CLOSING || cc->state == CC_LINGER)
        return;
    if (shutdown(stream_fd(&cc->s), SHUT_WR) != 0) {
        cc_close(cc);
        return;
    }
    set_state(cc, CC_LINGER);
    cc->reading_paused = 0;
    stream_read_start(&cc->s);
}

void client_conn_abort(client_conn_t *cc)
{
    cc->req.phase = REQ_NONE;
    cc_close(cc);
}

/* --- writing --- */

int client_conn_write(client_conn_t *cc, const uv_buf_t *bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        cc->req.bytes_out += bufs[i].len;
    return stream_write(&cc->s, bufs, n);
}

/* The request is over and its answer written (or queued): next request,
 * linger-close, or close. */
static void cc_finish_request(client_conn_t *cc)
{
    request_t *req = &cc->req;
    if (stream_write_pending(&cc->s))
        return; /* cc_on_drain comes back here */
    bool keep = req->client_keep_alive && req->body_done && !cc->close_after && !cc->pw->draining;
    bool had_body_left = !req->body_done;
    req->phase = REQ_NONE;
    proxy_request_unbind(req); /* a replaced generation may go now */
    cc->requests++;
    if (!keep) {
        if (had_body_left || cc->close_after)
            cc_linger(cc);
        else
            cc_close(cc);
        return;
    }
    set_state(cc, CC_IDLE);
    if (cc->in_process)
        return; /* the parse loop goes on with the next request itself */
    if (cc->in && cc->in->len) {
        cc_process_input(cc);
        if (cc->state == CC_CLOSING || cc->state == CC_LINGER)
            return;
    }
    if (cc->state != CC_ACTIVE || !cc->reading_paused) {
        cc->reading_paused = 0;
        stream_read_start(&cc->s);
    }
}

void client_conn_response_done(client_conn_t *cc)
{
    cc->req.phase = REQ_DONE;
    cc_finish_request(cc);
}

/* ficus's own answer to a request that never reached the proxy (bad head,
 * header timeout): written, then the connection closes. */
static void cc_reject(client_conn_t *cc, int status, end_reason_t why, const char *msg)
{
    request_t *req = &cc->req;
    cc->close_after = 1;
    if (cc->state != CC_ACTIVE) {
        proxy_request_unbind(req);
        memset(req, 0, sizeof *req);
        req->cc = cc;
        proxy_request_bind(req, cc->pw->gen);
        req->group = req->target = UINT32_MAX;
        req->upstream_us = -1;
        req->start_us = uv_hrtime() / 1000;
        req->start_unix_ns = time_now_realtime_ns();
        set_state(cc, CC_ACTIVE);
    }
    proxy_send_error(req, status, why, msg);
}

/* --- reading --- */

static void cc_on_alloc(stream_t *s, uv_buf_t *buf)
{
    client_conn_t *cc = cc_of(s);
    if (cc->in && cc->state != CC_LINGER) {
        pbuf_compact(cc->in);
        *buf = uv_buf_init(pbuf_tail(cc->in), (unsigned)pbuf_room(cc->in));
    } else {
        *buf = uv_buf_init(cc->pw->w->rbuf, IO_BUF_BYTES);
    }
}

/* Parses and dispatches as much of data as the request state allows; returns
 * the bytes consumed. What is left is kept by the caller. */
static size_t cc_process(client_conn_t *cc, const char *data, size_t len)
{
    proxy_worker_t *pw = cc->pw;
    const config_server_t *srv = &pw->gen->cfg->server;
    size_t used = 0;
    int ev;
    while (cc->state == CC_IDLE || cc->state == CC_HEAD || cc->state == CC_ACTIVE) {
        const char *p = data + used;
        size_t n = len - used;
        if (cc->state != CC_ACTIVE) {
            if (n == 0)
                break;
            if (cc->state == CC_HEAD) {
                /* A head that came in pieces is parsed once, whole. */
                size_t end = http_head_end(p, n, cc->head_scan);
                if (!end) {
                    cc->head_scan = (uint32_t)n;
                    if (n > srv->max_header_bytes)
                        cc_reject(cc, 431, END_HEADER_TOO_LARGE, "request head too large");
                    break;
                }
            }
            long k = http_parser_feed(&cc->parser, &pw->head, p, n, &ev);
            if (k < 0) {
                http_err_t e = http_parser_error(&cc->parser);
                if (e == HTTP_ERR_TOO_MANY)
                    cc_reject(cc, 431, END_HEADER_TOO_LARGE, "too many header fields");
                else if (e == HTTP_ERR_NOT_IMPLEMENTED)
                    cc_reject(cc, 501, END_BAD_REQUEST, http_parser_error_reason(&cc->parser));
                else if (n >= 14 && memcmp(p, "PRI * HTTP/2.0", 14) == 0)
                    cc_reject(cc, 505, END_BAD_REQUEST,
                              "HTTP/2 is not enabled on this listener: use HTTP/1.1");
                else
                    cc_reject(cc, 400, END_BAD_REQUEST, http_parser_error_reason(&cc->parser));
                return len;
            }
            if (!(ev & HTTP_EV_HEAD)) {
                if (n > srv->max_header_bytes) {
                    cc_reject(cc, 431, END_HEADER_TOO_LARGE, "request head too large");
                    return len;
                }
                /* Keep the partial head; parse it again once it is whole. */
                http_parser_reset(&cc->parser);
                cc->head_scan = (uint32_t)n;
                set_state(cc, CC_HEAD);
                break;
            }
            if ((size_t)k > srv->max_header_bytes) {
                cc_reject(cc, 431, END_HEADER_TOO_LARGE, "request head too large");
                return len;
            }
            used += (size_t)k;
            cc->head_scan = 0;
            set_state(cc, CC_ACTIVE);
            /* A message without a body ends right here: know it before routing. */
            int ev2;
            long z = http_parser_feed(&cc->parser, &pw->head, data + used, 0, &ev2);
            if (z < 0) {
                cc_reject(cc, 400, END_BAD_REQUEST, http_parser_error_reason(&cc->parser));
                return len;
            }
            cc->req.body_done = (ev2 & HTTP_EV_END) != 0;
            proxy_request_begin(cc, &pw->head, (size_t)k);
            continue;
        }
        /* CC_ACTIVE: the request body. */
        request_t *req = &cc->req;
        if (req->body_done)
            break; /* pipelined bytes wait for the response */
        size_t room = proxy_body_room(req);
        if (room == 0) {
            client_conn_pause(cc);
            break;
        }
        if (n > room)
            n = room;
        bool chunked = http_parser_chunked_body(&cc->parser);
        if (chunked) {
            /* Re-framed by ficus into the scratch buffer, never as received. */
            size_t cap = room < pw->scratch_bytes ? room : pw->scratch_bytes;
            http_parser_set_sink(&cc->parser, pw->scratch, cap);
            http_parser_set_reframe(&cc->parser, true);
        }
        long k = http_parser_feed(&cc->parser, &pw->head, p, n, &ev);
        size_t framed = cc->parser.sink_len;
        if (chunked)
            http_parser_set_sink(&cc->parser, NULL, 0);
        if (k < 0) {
            proxy_client_gone(req, END_BAD_REQUEST);
            return len;
        }
        if (cc->parser.body_bytes > srv->max_body_bytes) {
            proxy_client_gone(req, END_BODY_TOO_LARGE);
            return len;
        }
        used += (size_t)k;
        req->bytes_in += (uint64_t)k;
        bool end = (ev & HTTP_EV_END) != 0;
        if (end)
            req->body_done = 1;
        if (chunked) {
            if (framed || end)
                proxy_request_body(req, pw->scratch, framed, end);
        } else if (k > 0 || end) {
            proxy_request_body(req, p, (size_t)k, end);
        }
        if (!end && (size_t)k == 0)
            break;
    }
    return used;
}

/* Keeps the unconsumed tail of a read for later. */
static void cc_keep(client_conn_t *cc, const char *data, size_t len, size_t used, bool from_in)
{
    if (cc->state == CC_CLOSING || cc->state == CC_LINGER)
        return;
    proxy_worker_t *pw = cc->pw;
    if (from_in) {
        cc->in->off += (uint32_t)used;
        cc->in->len -= (uint32_t)used;
        if (cc->in->len == 0) {
            pbuf_put(&pw->w->pool, cc->in);
            cc->in = NULL;
        }
    } else if (used < len) {
        cc->in = pbuf_get(&pw->w->pool);
        if (!cc->in) {
            client_conn_abort(cc);
            return;
        }
        memcpy(cc->in->data, data + used, len - used);
        cc->in->len = (uint32_t)(len - used);
    }
    if (cc->in) {
        pbuf_compact(cc->in);
        if (pbuf_room(cc->in) == 0)
            client_conn_pause(cc); /* resumes when the request ends */
    }
}

static size_t cc_process_guarded(client_conn_t *cc, const char *data, size_t len)
{
    cc->in_process = 1;
    size_t used = cc_process(cc, data, len);
    cc->in_process = 0;
    return used;
}

static void cc_process_input(client_conn_t *cc)
{
    size_t len = cc->in->len;
    size_t used = cc_process_guarded(cc, pbuf_head(cc->in), len);
    cc_keep(cc, NULL, len, used, true);
}

static void cc_on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    client_conn_t *cc = cc_of(s);
    if (cc->state == CC_ACTIVE && cc->req.phase == REQ_TUNNEL) {
        if (n < 0)
            tunnel_client_eof(&cc->req, n);
        else
            tunnel_client_data(&cc->req, buf->base, (size_t)n);
        return;
    }
    if (n < 0) {
        if (cc->state == CC_ACTIVE && cc->req.phase != REQ_DONE)
            proxy_client_gone(&cc->req, END_CLIENT_CLOSED);
        else
            cc_close(cc);
        return;
    }
    if (cc->state == CC_LINGER)
        return; /* dropped */
    if (cc->in && buf->base == pbuf_tail(cc->in)) {
        cc->in->len += (uint32_t)n;
        cc_process_input(cc);
    } else {
        size_t used = cc_process_guarded(cc, buf->base, (size_t)n);
        cc_keep(cc, buf->base, (size_t)n, used, false);
    }
}

void client_conn_pause(client_conn_t *cc)
{
    cc->reading_paused = 1;
    stream_read_stop(&cc->s);
}

void client_conn_resume(client_conn_t *cc)
{
    if (cc->state != CC_ACTIVE)
        return;
    cc->reading_paused = 0;
    if (cc->in_process) {
        /* Called from inside the parse loop: it goes on by itself. */
        stream_read_start(&cc->s);
        return;
    }
    if (cc->in && cc->in->len)
        cc_process_input(cc);
    if (cc->state == CC_ACTIVE && !cc->reading_paused && !(cc->in && pbuf_room(cc->in) == 0))
        stream_read_start(&cc->s);
}

static void cc_on_drain(stream_t *s, int status)
{
    client_conn_t *cc = cc_of(s);
    if (status < 0) {
        if (cc->state == CC_ACTIVE && cc->req.phase != REQ_DONE)
            proxy_client_gone(&cc->req, END_CLIENT_CLOSED);
        else
            cc_close(cc);
        return;
    }
    if (cc->state != CC_ACTIVE)
        return;
    if (cc->req.phase == REQ_DONE)
        cc_finish_request(cc);
    else
        proxy_client_drained(&cc->req);
}

static void cc_on_timer(uv_timer_t *t)
{
    client_conn_t *cc = t->data;
    switch (cc->state) {
    case CC_IDLE:
    case CC_LINGER:
        cc_close(cc);
        break;
    case CC_HEAD:
        cc_reject(cc, 408, END_HEADER_TIMEOUT, "request head not received in time");
        break;
    case CC_ACTIVE:
        if (cc->req.phase == REQ_DONE)
            cc_close(cc); /* the client is not reading its answer */
        else
            proxy_request_timeout(&cc->req);
        break;
    case CC_CLOSING:
        break;
    }
}

static const stream_ops_t client_ops = {
    .on_alloc = cc_on_alloc,
    .on_read = cc_on_read,
    .on_drain = cc_on_drain,
    .on_close = cc_on_close,
};

void client_conn_accept(proxy_worker_t *pw, int fd)
{
    client_conn_t *cc = calloc(1, sizeof *cc);
    if (!cc) {
        close(fd);
        worker_connection_closed(pw->w);
        return;
    }
    cc->pw = pw;
    cc->req.cc = cc;
    if (stream_init(pw->loop, &cc->s, &client_ops, &pw->w->pool) != 0) {
        close(fd);
        free(cc);
        worker_connection_closed(pw->w);
        return;
    }
    cc->n_handles = 1;
    if (stream_open(&cc->s, fd) != 0) {
        close(fd);
        cc->state = CC_CLOSING;
        stream_close(&cc->s, false);
        return;
    }
    uv_timer_init(pw->loop, &cc->timer);
    cc->timer.data = cc;
    uv_timer_init(pw->loop, &cc->try_timer);
    cc->try_timer.data = cc;
    cc->n_handles = 3;
    socklen_t plen = sizeof cc->peer;
    if (getpeername(fd, (struct sockaddr *)&cc->peer, &plen) == 0) {
        cc->client_ip_len = (uint8_t)addr_format_ip((struct sockaddr *)&cc->peer, cc->client_ip,
                                                    sizeof cc->client_ip);
        const config_server_t *srv = &pw->gen->cfg->server;
        for (size_t i = 0; i < srv->n_trusted_proxies; i++)
            if (cidr_match(&srv->trusted_proxies[i], (struct sockaddr *)&cc->peer))
                cc->peer_trusted = 1;
    }
    http_parser_init_request(&cc->parser);
    http_parser_set_max_trailer(&cc->parser, (uint32_t)pw->gen->cfg->server.max_header_bytes);
    cc->next = pw->clients;
    if (pw->clients)
        pw->clients->prev = cc;
    pw->clients = cc;
    metrics_downstream_connection(pw->metrics, +1);
    cc->state = CC_IDLE;
    set_state(cc, CC_IDLE);
    if (stream_read_start(&cc->s) != 0)
        cc_close(cc);
}

void proxy_worker_drain(proxy_worker_t *pw, uint64_t idle_grace_ms)
{
    pw->draining = true;
    client_conn_t *cc = pw->clients, *next;
    for (; cc; cc = next) {
        next = cc->next;
        if (cc->state != CC_IDLE)
            continue;
        /* A keep-alive connection between requests: closed now, or, after a
         * takeover, once it stays idle for the grace time, so that a request
         * already on its way is answered rather than cut. */
        if (idle_grace_ms)
            uv_timer_start(&cc->timer, cc_on_timer, idle_grace_ms, 0);
        else
            cc_close(cc);
    }
    if (!pw->clients && pw->on_drained) {
        void (*done)(void *) = pw->on_drained;
        pw->on_drained = NULL;
        done(pw->drained_ctx);
    }
}

void proxy_worker_stop(proxy_worker_t *pw)
{
    pw->draining = true;
    pw->stopping = true;
    pw->on_drained = NULL;
    while (pw->clients) {
        client_conn_t *cc = pw->clients;
        if (cc->state == CC_ACTIVE && cc->req.phase != REQ_DONE)
            proxy_client_gone(&cc->req, END_CLIENT_CLOSED);
        else
            cc_close(cc);
        if (pw->clients == cc)
            cc_close(cc); /* never loop on one that did not unlink */
    }
    upstream_close_all(pw);
}
