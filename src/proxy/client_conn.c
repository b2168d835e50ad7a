/* A client connection's state machine; see client_conn.h. */
#include "proxy/client_conn.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/addr.h"
#include "core/defaults.h"

#define LINGER_MS 2000
#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_BYTES 24

static void cc_close(client_conn_t *cc);
static void cc_process_input(client_conn_t *cc);

static inline client_conn_t *cc_of(stream_t *s) { return (client_conn_t *)s; }

static void cc_on_timer(uv_timer_t *t);

static void set_state(client_conn_t *cc, cc_state_t st)
{
    const config_server_t *srv = cc->env->server;
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
    case CC_H2:
        uv_timer_stop(&cc->timer); /* the owner arms the request deadline, or its own */
        break;
    case CC_DONE:
    case CC_TUNNEL:
        break; /* the request deadline goes on */
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

uint64_t client_conn_deadline_left_ms(const client_conn_t *cc)
{
    if (!uv_is_active((const uv_handle_t *)&cc->timer))
        return 0;
    uint64_t left = uv_timer_get_due_in(&cc->timer);
    return left ? left : 1;
}

bool client_conn_keeps_alive(const client_conn_t *cc)
{
    return !cc->carrier && cc->keep_alive && cc->body_done && !cc->close_after &&
           !cc->env->draining;
}

const char *client_conn_error_reason(const client_conn_t *cc)
{
    return http_parser_error_reason(&cc->parser);
}

/* --- teardown --- */

static void cc_on_handle_closed(client_conn_t *cc)
{
    if (--cc->n_handles)
        return;
    pbuf_put(cc->env->pool, cc->in);
    cc->in = NULL;
    cc->ops->on_close(cc);
}

static void cc_on_timer_closed(uv_handle_t *h) { cc_on_handle_closed(h->data); }

static void cc_on_close(stream_t *s) { cc_on_handle_closed(cc_of(s)); }

static void cc_close(client_conn_t *cc)
{
    if (cc->state == CC_CLOSING)
        return;
    bool complete = cc->state == CC_DONE || cc->state == CC_LINGER;
    set_state(cc, CC_CLOSING);
    client_conn_env_t *env = cc->env;
    if (cc->carrier) {
        uv_close((uv_handle_t *)&cc->timer, cc_on_timer_closed);
        if (cc->carrier_ctx)
            cc->carrier->close(cc->carrier_ctx, !complete);
        else
            cc_on_handle_closed(cc); /* the carrier let go first */
        return;
    }
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        env->conns = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    cc->next = cc->prev = NULL;
    if (env->draining && !env->conns && env->on_drained) {
        void (*done)(void *) = env->on_drained;
        env->on_drained = NULL; /* once */
        done(env->drained_ctx);
    }
    uv_close((uv_handle_t *)&cc->timer, cc_on_timer_closed);
    stream_close(&cc->s, false);
}

/* After a final answer: stop sending, read and drop what the client still
 * sends for a moment, so that closing with unread input does not turn into a
 * reset that destroys the answer before the client reads it. */
static void cc_linger(client_conn_t *cc)
{
    if (cc->state == CC_CLOSING || cc->state == CC_LINGER)
        return;
    if (cc->carrier) {
        cc_close(cc); /* the stream ends: its carrier says so (RST_STREAM NO_ERROR) */
        return;
    }
    if (stream_shutdown_write(&cc->s) != 0) {
        cc_close(cc);
        return;
    }
    set_state(cc, CC_LINGER);
    cc->reading_paused = 0;
    stream_read_start(&cc->s);
}

void client_conn_abort(client_conn_t *cc) { cc_close(cc); }

/* --- writing --- */

int client_conn_write(client_conn_t *cc, const uv_buf_t *bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        cc->bytes_out += bufs[i].len;
    if (cc->carrier)
        return cc->carrier->write(cc->carrier_ctx, bufs, n);
    return stream_write(&cc->s, bufs, n);
}

bool client_conn_write_pending(const client_conn_t *cc)
{
    return cc->carrier ? cc->carrier->write_pending(cc->carrier_ctx) : stream_write_pending(&cc->s);
}

/* The response is written (or queued): next request, linger-close, or close. */
static void cc_finish_request(client_conn_t *cc)
{
    if (client_conn_write_pending(cc))
        return; /* cc_on_drain comes back here */
    bool keep = client_conn_keeps_alive(cc);
    bool had_body_left = !cc->body_done;
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
    if (cc->state == CC_CLOSING || cc->state == CC_LINGER)
        return;
    if (cc->carrier)
        cc->carrier->done(cc->carrier_ctx);
    set_state(cc, CC_DONE);
    cc_finish_request(cc);
}

/* ficus's own answer to a request that never began (bad head, header
 * timeout): the owner writes it, then the connection closes. */
static void cc_reject(client_conn_t *cc, end_reason_t why, const char *msg)
{
    cc->close_after = 1;
    if (cc->state != CC_ACTIVE) {
        cc->bytes_in = cc->bytes_out = 0;
        cc->keep_alive = 0;
        set_state(cc, CC_ACTIVE);
    }
    cc->ops->on_reject(cc, why, msg);
}

/* The request ends on the client's side (closed, broken body). */
static void cc_gone(client_conn_t *cc, end_reason_t why)
{
    if (cc->state == CC_ACTIVE || cc->state == CC_H2)
        cc->ops->on_gone(cc, why);
    else
        cc_close(cc);
}

/* --- reading --- */

static void cc_on_alloc(stream_t *s, uv_buf_t *buf)
{
    client_conn_t *cc = cc_of(s);
    if (cc->in && cc->state != CC_LINGER) {
        pbuf_compact(cc->in);
        *buf = uv_buf_init(pbuf_tail(cc->in), (unsigned)pbuf_room(cc->in));
    } else {
        *buf = uv_buf_init(cc->env->rbuf, IO_BUF_BYTES);
    }
}

/* A head the parser refused: the answer its error calls for. */
static void cc_reject_head(client_conn_t *cc, const char *p, size_t n)
{
    http_err_t e = http_parser_error(&cc->parser);
    if (e == HTTP_ERR_TOO_MANY)
        cc_reject(cc, END_HEADER_TOO_LARGE, "too many header fields");
    else if (e == HTTP_ERR_NOT_IMPLEMENTED)
        cc_reject(cc, END_NOT_IMPLEMENTED, http_parser_error_reason(&cc->parser));
    else if (n >= 14 && memcmp(p, "PRI * HTTP/2.0", 14) == 0)
        cc_reject(cc, END_VERSION_NOT_SUPPORTED, NULL);
    else
        cc_reject(cc, END_BAD_REQUEST, http_parser_error_reason(&cc->parser));
}

/* A head: parsed once it is whole, then handed to the owner. Returns the
 * bytes used, 0 to wait for more, -1 when the connection is answered. */
static long cc_head(client_conn_t *cc, const char *p, size_t n)
{
    const config_server_t *srv = cc->env->server;
    int ev;
    if (cc->state == CC_HEAD) {
        /* A head that came in pieces is parsed once, whole. */
        size_t end = http_head_end(p, n, cc->head_scan);
        if (!end) {
            cc->head_scan = (uint32_t)n;
            if (n > srv->max_header_bytes) {
                cc_reject(cc, END_HEADER_TOO_LARGE, NULL);
                return -1;
            }
            return 0;
        }
    }
    long k = http_parser_feed(&cc->parser, cc->env->head, p, n, &ev);
    if (k < 0) {
        cc_reject_head(cc, p, n);
        return -1;
    }
    if (!(ev & HTTP_EV_HEAD)) {
        if (n > srv->max_header_bytes) {
            cc_reject(cc, END_HEADER_TOO_LARGE, NULL);
            return -1;
        }
        /* Keep the partial head; parse it again once it is whole. */
        http_parser_reset(&cc->parser);
        cc->head_scan = (uint32_t)n;
        set_state(cc, CC_HEAD);
        return 0;
    }
    if ((size_t)k > srv->max_header_bytes) {
        cc_reject(cc, END_HEADER_TOO_LARGE, NULL);
        return -1;
    }
    cc->head_scan = 0;
    set_state(cc, CC_ACTIVE);
    /* A message without a body ends right here: know it before routing. */
    int ev2;
    long z = http_parser_feed(&cc->parser, cc->env->head, p + k, 0, &ev2);
    if (z < 0) {
        cc_reject(cc, END_BAD_REQUEST, http_parser_error_reason(&cc->parser));
        return -1;
    }
    const http_head_t *h = cc->env->head;
    cc->body_done = (ev2 & HTTP_EV_END) != 0;
    cc->keep_alive = h->keep_alive;
    cc->bytes_in = (uint64_t)k;
    cc->bytes_out = 0;
    if (!cc->body_done)
        cc->close_after = 0;
    cc->ops->on_request(cc, h, p, (size_t)k);
    return k;
}

/* Body bytes of the current request: as many as the owner takes. Returns the
 * bytes used, or -1 when the request ended. */
static long cc_body(client_conn_t *cc, const char *p, size_t n)
{
    client_conn_env_t *env = cc->env;
    size_t room = cc->state == CC_ACTIVE ? cc->ops->body_room(cc) : SIZE_MAX;
    if (room == 0) {
        client_conn_pause(cc);
        return 0;
    }
    if (n > room)
        n = room;
    bool chunked = http_parser_chunked_body(&cc->parser);
    if (chunked) {
        /* Re-framed by ficus into the scratch buffer, never as received. */
        size_t cap = room < env->scratch_bytes ? room : env->scratch_bytes;
        http_parser_set_sink(&cc->parser, env->scratch, cap);
        http_parser_set_reframe(&cc->parser, true);
    }
    int ev;
    long k = http_parser_feed(&cc->parser, env->head, p, n, &ev);
    size_t framed = cc->parser.sink_len;
    if (chunked)
        http_parser_set_sink(&cc->parser, NULL, 0);
    if (k < 0) {
        cc_gone(cc, END_BAD_REQUEST);
        return -1;
    }
    if (cc->parser.body_bytes > env->server->max_body_bytes) {
        cc_gone(cc, END_BODY_TOO_LARGE);
        return -1;
    }
    cc->bytes_in += (uint64_t)k;
    bool end = (ev & HTTP_EV_END) != 0;
    if (end)
        cc->body_done = 1;
    if (cc->state == CC_ACTIVE) {
        /* Answered already (CC_DONE): the rest is read and dropped. */
        if (chunked) {
            if (framed || end)
                cc->ops->on_body(cc, env->scratch, framed, end);
        } else if (k > 0 || end) {
            cc->ops->on_body(cc, p, (size_t)k, end);
        }
    }
    return k;
}

/* Parses and dispatches as much of data as the request state allows; returns
 * the bytes consumed. What is left is kept by the caller. */
static size_t cc_process(client_conn_t *cc, const char *data, size_t len)
{
    size_t used = 0;
    for (;;) {
        const char *p = data + used;
        size_t n = len - used;
        long k;
        if ((cc->state == CC_IDLE || cc->state == CC_HEAD) && cc->requests == 0 &&
            cc->ops->on_preface && n && p[0] == 'P') {
            /* The HTTP/2 preface (prior knowledge), or a part of it. */
            size_t m = n < H2_PREFACE_BYTES ? n : H2_PREFACE_BYTES;
            if (memcmp(p, H2_PREFACE, m) == 0) {
                if (m < H2_PREFACE_BYTES) {
                    set_state(cc, CC_HEAD);
                    return used;
                }
                if (cc->ops->on_preface(cc))
                    continue; /* CC_H2: the rest goes to the owner, the preface too */
            }
        }
        if (cc->state == CC_IDLE || cc->state == CC_HEAD) {
            if (n == 0)
                break;
            k = cc_head(cc, p, n);
            if (k <= 0)
                return k < 0 ? len : used;
            used += (size_t)k;
            continue;
        }
        if (cc->state == CC_TUNNEL || cc->state == CC_H2) {
            /* Switched while this read was parsed: the rest is the tunnel's. */
            if (n) {
                cc->bytes_in += n;
                cc->ops->on_raw_data(cc, p, n);
            }
            return len;
        }
        if (cc->state != CC_ACTIVE && cc->state != CC_DONE)
            break;
        if (cc->body_done)
            break; /* pipelined bytes wait for the response */
        k = cc_body(cc, p, n);
        if (k < 0)
            return len;
        used += (size_t)k;
        if (!cc->body_done && k == 0)
            break;
    }
    return used;
}

/* Keeps the unconsumed tail of a read for later. */
static void cc_keep(client_conn_t *cc, const char *data, size_t len, size_t used, bool from_in)
{
    if (cc->state == CC_CLOSING || cc->state == CC_LINGER)
        return;
    client_conn_env_t *env = cc->env;
    if (from_in) {
        cc->in->off += (uint32_t)used;
        cc->in->len -= (uint32_t)used;
        if (cc->in->len == 0) {
            pbuf_put(env->pool, cc->in);
            cc->in = NULL;
        }
    } else if (used < len) {
        cc->in = pbuf_get(env->pool);
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
    if (cc->state == CC_TUNNEL || cc->state == CC_H2) {
        if (n < 0) {
            cc->ops->on_raw_eof(cc, n);
        } else {
            cc->bytes_in += (uint64_t)n;
            cc->ops->on_raw_data(cc, buf->base, (size_t)n);
        }
        return;
    }
    if (n < 0) {
        cc_gone(cc, END_CLIENT_CLOSED);
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
    if (!cc->carrier)
        stream_read_stop(&cc->s);
}

void client_conn_resume(client_conn_t *cc)
{
    if (cc->carrier) {
        if (cc->state == CC_ACTIVE && cc->reading_paused) {
            cc->reading_paused = 0;
            cc->carrier->resume(cc->carrier_ctx);
        }
        return;
    }
    if (cc->state == CC_TUNNEL || cc->state == CC_H2) {
        cc->reading_paused = 0;
        stream_read_start(&cc->s);
        return;
    }
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

void client_conn_tunnel(client_conn_t *cc)
{
    set_state(cc, CC_TUNNEL);
    pbuf_t *in = cc->in;
    cc->in = NULL;
    if (in && in->len) {
        /* Sent by the client right after its request head. */
        cc->bytes_in += in->len;
        cc->ops->on_raw_data(cc, pbuf_head(in), in->len);
    }
    pbuf_put(cc->env->pool, in);
}

static void cc_on_drain(stream_t *s, int status)
{
    client_conn_t *cc = cc_of(s);
    if (status < 0) {
        cc_gone(cc, END_CLIENT_CLOSED);
        return;
    }
    if (cc->state == CC_DONE)
        cc_finish_request(cc);
    else if (cc->state == CC_ACTIVE || cc->state == CC_TUNNEL || cc->state == CC_H2)
        cc->ops->on_drained(cc);
}

static void cc_on_timer(uv_timer_t *t)
{
    client_conn_t *cc = t->data;
    switch (cc->state) {
    case CC_IDLE:
    case CC_LINGER:
    case CC_DONE: /* the client is not reading its answer */
        cc_close(cc);
        break;
    case CC_HEAD:
        cc_reject(cc, END_HEADER_TIMEOUT, NULL);
        break;
    case CC_ACTIVE:
    case CC_TUNNEL:
    case CC_H2:
        cc->ops->on_timeout(cc);
        break;
    case CC_CLOSING:
        break;
    }
}

static void cc_on_handshake(stream_t *s, int result)
{
    client_conn_t *cc = cc_of(s);
    if (cc->ops->on_handshake)
        cc->ops->on_handshake(cc, result);
}

static const stream_ops_t client_ops = {
    .on_alloc = cc_on_alloc,
    .on_read = cc_on_read,
    .on_drain = cc_on_drain,
    .on_close = cc_on_close,
    .on_handshake = cc_on_handshake,
};

int client_conn_open(client_conn_t *cc, client_conn_env_t *env, const client_conn_ops_t *ops,
                     int fd, struct tls_server *tls)
{
    cc->env = env;
    cc->ops = ops;
    cc->tls = tls != NULL;
    int rc = stream_init(env->loop, &cc->s, &client_ops, env->pool);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    cc->n_handles = 1;
    if ((rc = stream_open(&cc->s, fd)) != 0) {
        close(fd);
        cc->state = CC_CLOSING;
        stream_close(&cc->s, false); /* on_close follows */
        return 0;
    }
    uv_timer_init(env->loop, &cc->timer);
    cc->timer.data = cc;
    cc->n_handles = 2;
    socklen_t plen = sizeof cc->peer;
    if (getpeername(fd, (struct sockaddr *)&cc->peer, &plen) == 0)
        cc->client_ip_len = (uint8_t)addr_format_ip((struct sockaddr *)&cc->peer, cc->client_ip,
                                                    sizeof cc->client_ip);
    http_parser_init_request(&cc->parser);
    http_parser_set_max_trailer(&cc->parser, (uint32_t)env->server->max_header_bytes);
    cc->next = env->conns;
    if (env->conns)
        env->conns->prev = cc;
    env->conns = cc;
    cc->state = CC_IDLE;
    set_state(cc, CC_IDLE);
    if ((tls && stream_tls_server(&cc->s, tls) != 0) || stream_read_start(&cc->s) != 0)
        cc_close(cc);
    return 0;
}

void client_conn_env_drain(client_conn_env_t *env, uint64_t idle_grace_ms)
{
    env->draining = true;
    client_conn_t *cc = env->conns, *next;
    for (; cc; cc = next) {
        next = cc->next;
        if (cc->state == CC_H2 && cc->ops->on_drain) {
            cc->ops->on_drain(cc); /* GOAWAY; it closes once its streams are done */
            continue;
        }
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
    if (!env->conns && env->on_drained) {
        void (*done)(void *) = env->on_drained;
        env->on_drained = NULL;
        done(env->drained_ctx);
    }
}

void client_conn_env_stop(client_conn_env_t *env)
{
    env->draining = true;
    env->on_drained = NULL;
    while (env->conns) {
        client_conn_t *cc = env->conns;
        if (cc->state == CC_ACTIVE || cc->state == CC_TUNNEL || cc->state == CC_H2)
            cc->ops->on_gone(cc, END_CLIENT_CLOSED);
        else
            cc_close(cc);
        if (env->conns == cc)
            cc_close(cc); /* never loop on one that did not unlink */
    }
}

/* --- HTTP/2: the carrier, and the streams it carries --- */

void client_conn_h2(client_conn_t *cc)
{
    set_state(cc, CC_H2);
    cc->reading_paused = 0;
    cc->head_scan = 0;
    if (!cc->in_process && !cc->in)
        return;
    /* Read already (the preface, maybe more): handed over by the parse loop
     * going on, or now. */
    if (!cc->in_process) {
        pbuf_t *in = cc->in;
        cc->in = NULL;
        if (in->len)
            cc->ops->on_raw_data(cc, pbuf_head(in), in->len);
        pbuf_put(cc->env->pool, in);
    }
}

int client_conn_open_carried(client_conn_t *cc, client_conn_env_t *env,
                             const client_conn_ops_t *ops, const client_carrier_ops_t *carrier,
                             void *ctx, const client_conn_t *from)
{
    cc->env = env;
    cc->ops = ops;
    cc->carrier = carrier;
    cc->carrier_ctx = ctx;
    cc->tls = from->tls;
    cc->http2 = 1;
    cc->peer = from->peer;
    cc->client_ip_len = from->client_ip_len;
    memcpy(cc->client_ip, from->client_ip, sizeof cc->client_ip);
    uv_timer_init(env->loop, &cc->timer);
    cc->timer.data = cc;
    cc->n_handles = 2; /* the timer, and the carrier's hold */
    http_parser_init_request(&cc->parser);
    http_parser_set_max_trailer(&cc->parser, (uint32_t)env->server->max_header_bytes);
    cc->state = CC_IDLE;
    return 0;
}

void client_conn_carried_head(client_conn_t *cc, const char *head, size_t len)
{
    if (cc->state != CC_IDLE)
        return;
    cc->in_process = 1;
    long k = cc_head(cc, head, len);
    cc->in_process = 0;
    if (k == 0 && cc->state != CC_CLOSING)
        cc_reject(cc, END_BAD_REQUEST, "incomplete request head");
}

void client_conn_carried_reject(client_conn_t *cc, end_reason_t why)
{
    if (cc->state == CC_IDLE)
        cc_reject(cc, why, NULL);
}

long client_conn_carried_body(client_conn_t *cc, const char *data, size_t len, bool end)
{
    if (cc->state != CC_ACTIVE && cc->state != CC_DONE)
        return (long)len; /* answered: the rest is dropped */
    if (cc->body_done)
        return (long)len;
    client_conn_env_t *env = cc->env;
    bool chunked = http_parser_chunked_body(&cc->parser);
    size_t room = cc->state == CC_ACTIVE ? cc->ops->body_room(cc) : SIZE_MAX;
    size_t n = len;
    if (chunked) {
        /* The size line, the CRLF after the data and the last chunk fit too. */
        size_t cap = room < env->scratch_bytes ? room : env->scratch_bytes;
        size_t digits = 1;
        for (size_t v = cap; v >= 16; v /= 16)
            digits++;
        size_t frame = digits + 4 + (end ? 5 : 0);
        n = cap > frame ? cap - frame : 0;
        if (n > len)
            n = len;
    } else if (n > room) {
        n = room;
    }
    bool last = end && n == len;
    if (n == 0 && !last) {
        client_conn_pause(cc);
        return 0;
    }
    cc->bytes_in += n;
    cc->parser.body_bytes += n;
    if (cc->parser.body_bytes > env->server->max_body_bytes) {
        cc_gone(cc, END_BODY_TOO_LARGE);
        return -1;
    }
    if (last)
        cc->body_done = 1;
    if (cc->state != CC_ACTIVE)
        return (long)n;
    if (!chunked) {
        cc->ops->on_body(cc, data, n, last);
        return (long)n;
    }
    /* Framed by ficus as chunks, as an HTTP/1.1 body without a length is. */
    char *o = env->scratch;
    size_t w = 0;
    if (n) {
        w += (size_t)snprintf(o, 20, "%zx\r\n", n);
        memcpy(o + w, data, n);
        w += n;
        memcpy(o + w, "\r\n", 2);
        w += 2;
    }
    if (last) {
        memcpy(o + w, "0\r\n\r\n", 5);
        w += 5;
    }
    cc->ops->on_body(cc, o, w, last);
    return (long)n;
}

void client_conn_carried_gone(client_conn_t *cc)
{
    if (cc->state == CC_ACTIVE)
        cc->ops->on_gone(cc, END_CLIENT_CLOSED);
    else
        cc_close(cc);
}

void client_conn_carried_drained(client_conn_t *cc)
{
    if (cc->state == CC_DONE)
        cc_finish_request(cc);
    else if (cc->state == CC_ACTIVE)
        cc->ops->on_drained(cc);
}

void client_conn_carried_closed(client_conn_t *cc) { cc_on_handle_closed(cc); }
