/* Requests ficus makes itself; see subrequest.h. */
#include "proxy/subrequest.h"

#include <stdlib.h>
#include <string.h>

#include "core/time.h"
#include "proxy/exchange.h"
#include "proxy/proxy_worker.h"

static const upstream_conn_ops_t subreq_ops;

/* ------------------------------------------------------------- capture */

void capture_init(capture_t *c, size_t limit)
{
    memset(c, 0, offsetof(capture_t, values));
    c->limit = limit;
    c->ctype = UINT32_MAX;
}

void capture_free(capture_t *c)
{
    free(c->body);
    c->body = NULL;
    c->len = c->cap = 0;
}

static void capture_keep(capture_t *c, const char *data, size_t len)
{
    c->total += len;
    if (c->truncated || len == 0)
        return;
    if (c->len + len > c->limit) {
        c->truncated = true;
        return;
    }
    if (c->len + len > c->cap) {
        size_t n = c->cap ? c->cap : 4096;
        while (n < c->len + len)
            n *= 2;
        if (n > c->limit)
            n = c->limit;
        char *b = realloc(c->body, n);
        if (!b) {
            c->truncated = true;
            return;
        }
        c->body = b;
        c->cap = n;
    }
    memcpy(c->body + c->len, data, len);
    c->len += len;
}

void capture_body(capture_t *c, const char *data, size_t len)
{
    if (!c->framed) {
        capture_keep(c, data, len);
        return;
    }
    char out[4096];
    while (len > 0) {
        size_t n = 0;
        bool done = false;
        long k =
            http_chunked_feed(&c->chunked, data, len, CHUNKED_OUT_DATA, out, &n, sizeof out, &done);
        if (k < 0) {
            c->truncated = true;
            return;
        }
        capture_keep(c, out, n);
        data += k;
        len -= (size_t)k;
        if (done || (k == 0 && n == 0))
            return;
    }
}

void capture_head(capture_t *c, const char *const *names, size_t n_names, const http_head_t *h,
                  bool head_method)
{
    c->status = h->status;
    c->framed = h->chunked && !head_method;
    http_chunked_init(&c->chunked, UINT32_MAX);
    size_t n = n_names < CAPTURE_MAX_HEADERS ? n_names : CAPTURE_MAX_HEADERS;
    for (size_t i = 0; i <= n; i++) {
        const char *name = i < n ? names[i] : "content-type";
        if (i == n && c->ctype != UINT32_MAX)
            break; /* listed already */
        const http_header_t *hd = http_header_find(h->headers, h->n_headers, name, strlen(name));
        if (!hd)
            continue;
        size_t vl = hd->value_len < CAPTURE_HEADER_VALUE_BYTES - 1 ? hd->value_len
                                                                   : CAPTURE_HEADER_VALUE_BYTES - 1;
        char *v = c->values[c->n_headers];
        memcpy(v, hd->value, vl);
        v[vl] = '\0';
        if (strcmp(name, "content-type") == 0)
            c->ctype = c->n_headers;
        c->headers[c->n_headers++] = (json_diff_header_t){.name = name, .value = v};
    }
}

/* ----------------------------------------------------------- the try */

static void part_end(subreq_t *p, subreq_state_t st, end_reason_t why, bool reusable)
{
    request_t *s = &p->req;
    upstream_conn_t *uc = s->ex->uc;
    if (uc && uc->in) {
        pbuf_put(&p->req.pw->w->pool, uc->in);
        uc->in = NULL;
    }
    reusable = reusable && uc && !upstream_conn_write_pending(uc);
    /* A pooled connection the target had closed says nothing of its health. */
    p->stale = st == SUBREQ_FAILED && why == END_UPSTREAM_RESET && uc && uc->reused &&
               upstream_conn_connected(uc) && s->phase != REQ_RESPONDING;
    exchange_end(p->req.pw, s->ex, st == SUBREQ_FAILED ? end_reasons[why].try_code : 0, reusable,
                 (st == SUBREQ_FAILED && !p->stale) || p->cap.status >= 500);
    p->state = st;
    p->cap.complete = st == SUBREQ_DONE;
    uv_timer_stop(&s->ex->timer);
    p->on_end(p, why);
}

static void part_connected(void *owner, int status)
{
    exchange_t *ex = owner;
    subreq_t *p = (subreq_t *)ex->req;
    if (ex->holds_pending) {
        ex->holds_pending = 0;
        health_release(&p->req.gen->health->groups[ex->group].pending);
    }
    if (status < 0) {
        ex->uc = NULL; /* closed already */
        const char *message;
        end_reason_t why = exchange_connect_failed(p->req.pw, ex, status, &message);
        part_end(p, SUBREQ_FAILED, why, false);
        return;
    }
    http_parser_expect_no_body(&ex->uc->parser, p->req.head_method);
    uv_buf_t b = uv_buf_init(p->req.out->data, p->req.out->len);
    ex->out_sent = p->req.out->len;
    if (upstream_conn_write(ex->uc, &b, 1) < 0)
        part_end(p, SUBREQ_FAILED, END_UPSTREAM_RESET, false);
}

/* Reads the head of the part's answer from *data (whole heads only):
 * counted, and a 1xx skipped. 0 when the body follows, 1 when the answer
 * ended with its head, 2 when a final head is still to come, -1 when the
 * answer is invalid. */
static int part_head(subreq_t *p, const char **data, size_t *len)
{
    exchange_t *ex = p->req.ex;
    upstream_conn_t *uc = ex->uc;
    proxy_worker_t *pw = p->req.pw;
    for (;;) {
        if (*len == 0 || !http_head_end(*data, *len, 0))
            return 2;
        int ev = 0;
        long k = http_parser_feed(&uc->parser, &pw->head, *data, *len, &ev);
        const http_head_t *h = &pw->head;
        if (k < 0 || !(ev & HTTP_EV_HEAD) || h->status < 100 || h->status == 101 ||
            (size_t)k > p->req.gen->cfg->server.max_header_bytes)
            return -1;
        *data += k;
        *len -= (size_t)k;
        if (h->status < 200) {
            int ev2;
            http_parser_feed(&uc->parser, &pw->head, *data, 0, &ev2); /* ends the 1xx */
            continue;
        }
        proxy_group_state_t *gs = &p->req.gen->groups[ex->group];
        p->req.upstream_us = (int64_t)(time_now_us() - ex->start_us);
        metrics_upstream(pw->metrics, gs->metrics_group, gs->metrics_target[ex->target], h->status,
                         (uint64_t)p->req.upstream_us);
        ex->counted = 1;
        capture_head(&p->cap, p->names, p->n_names, h, p->req.head_method);
        p->cap.framed = false; /* the parser's sink decodes a chunked body */
        p->req.upstream_status = h->status;
        p->req.upstream_reusable = h->keep_alive;
        p->req.phase = REQ_RESPONDING;
        http_parser_set_reframe(&uc->parser, false);
        http_parser_set_sink(&uc->parser, h->chunked ? pw->scratch : NULL,
                             h->chunked ? pw->scratch_bytes : 0);
        return (ev & HTTP_EV_END) ? 1 : 0;
    }
}

/* Keeps the start of a head that is not all in yet in the connection's
 * buffer (moved to its front). False when it cannot be kept. */
static bool part_keep_head(subreq_t *p, const char *data, size_t len)
{
    upstream_conn_t *uc = p->req.ex->uc;
    if (!uc->in && !(uc->in = pbuf_get(&p->req.pw->w->pool)))
        return false;
    if (data >= uc->in->data && data <= uc->in->data + uc->in->cap) {
        memmove(uc->in->data, data, len);
        uc->in->off = 0;
        uc->in->len = (uint32_t)len;
        return true;
    }
    if (pbuf_room(uc->in) < len)
        return false;
    memcpy(pbuf_tail(uc->in), data, len);
    uc->in->len += (uint32_t)len;
    return true;
}

static void part_data(void *owner, const char *data, size_t len)
{
    exchange_t *ex = owner;
    subreq_t *p = (subreq_t *)ex->req;
    upstream_conn_t *uc = ex->uc;
    proxy_worker_t *pw = p->req.pw;
    if (p->state != SUBREQ_RUNNING)
        return;
    if (p->req.phase != REQ_RESPONDING) {
        if (uc->in) {
            if (!part_keep_head(p, data, len)) {
                part_end(p, SUBREQ_FAILED, END_UPSTREAM_INVALID, false);
                return;
            }
            data = pbuf_head(uc->in);
            len = uc->in->len;
        }
        int rc = part_head(p, &data, &len);
        if (rc == 2) {
            if (len == 0 && uc->in)
                uc->in->off = uc->in->len = 0; /* a 1xx was all of it */
            else if (len && !part_keep_head(p, data, len))
                part_end(p, SUBREQ_FAILED, END_UPSTREAM_INVALID, false);
            return;
        }
        if (rc < 0) {
            part_end(p, SUBREQ_FAILED, END_UPSTREAM_INVALID, false);
            return;
        }
        if (rc == 1) {
            part_end(p, SUBREQ_DONE, END_OK, p->req.upstream_reusable && len == 0);
            return;
        }
    }
    while (len > 0) {
        int ev = 0;
        long k = http_parser_feed(&uc->parser, &pw->head, data, len, &ev);
        if (k < 0) {
            part_end(p, SUBREQ_FAILED, END_UPSTREAM_INVALID, false);
            return;
        }
        if (uc->parser.sink) {
            capture_body(&p->cap, uc->parser.sink, uc->parser.sink_len);
            uc->parser.sink_len = 0;
        } else {
            capture_body(&p->cap, data, (size_t)k);
        }
        data += k;
        len -= (size_t)k;
        if (ev & HTTP_EV_END) {
            part_end(p, SUBREQ_DONE, END_OK, p->req.upstream_reusable && len == 0);
            return;
        }
        if (k == 0)
            break;
    }
    if (uc->in) {
        pbuf_put(&pw->w->pool, uc->in); /* the head is through */
        uc->in = NULL;
    }
}

static void part_eof(void *owner, int status)
{
    exchange_t *ex = owner;
    subreq_t *p = (subreq_t *)ex->req;
    if (p->state != SUBREQ_RUNNING)
        return;
    if (p->req.phase == REQ_RESPONDING && http_parser_body_until_eof(&ex->uc->parser) &&
        http_parser_finish(&ex->uc->parser) == 0) {
        part_end(p, SUBREQ_DONE, END_OK, false);
        return;
    }
    part_end(p, SUBREQ_FAILED, END_UPSTREAM_RESET, false);
}

static void part_drained(void *owner, int status)
{
    exchange_t *ex = owner;
    subreq_t *p = (subreq_t *)ex->req;
    if (status < 0 && p->state == SUBREQ_RUNNING)
        part_end(p, SUBREQ_FAILED, END_UPSTREAM_RESET, false);
}

static const upstream_conn_ops_t subreq_ops = {
    .on_connected = part_connected,
    .on_data = part_data,
    .on_eof = part_eof,
    .on_drained = part_drained,
};

/* ------------------------------------------------------------- the api */

static void on_subreq_timer(uv_timer_t *t)
{
    exchange_t *ex = t->data;
    subreq_t *p = (subreq_t *)ex->req;
    if (p->state == SUBREQ_RUNNING)
        part_end(p, SUBREQ_FAILED, END_UPSTREAM_TIMEOUT, false);
}

void subreq_init(subreq_t *p, const request_t *parent, proxy_gen_t *gen,
                 const config_route_t *route, uint32_t group, subreq_end_fn on_end, void *owner)
{
    proxy_worker_t *pw = parent->pw;
    request_t *s = &p->req;
    p->on_end = on_end;
    p->owner = owner;
    s->pw = pw;
    s->cc = NULL; /* the client may be gone before the sub-request ends */
    memcpy(s->request_id, parent->request_id, parent->request_id_len);
    s->request_id_len = parent->request_id_len;
    memcpy(s->method, parent->method, parent->method_len);
    s->method_len = parent->method_len;
    memcpy(s->path, parent->path, parent->path_len);
    s->path_len = parent->path_len;
    memcpy(s->client_ip, parent->client_ip, parent->client_ip_len);
    s->client_ip_len = parent->client_ip_len;
    s->gen = gen;
    s->route = route;
    s->group = group;
    s->client = UINT32_MAX;
    s->upstream_us = -1;
    s->head_method = parent->head_method;
    s->method_id = parent->method_id;
    s->has_trace = parent->has_trace;
    s->trace_sampled = parent->trace_sampled;
    s->trace_export = parent->trace_export;
    memcpy(s->trace_id, parent->trace_id, sizeof s->trace_id);
    memcpy(s->trace_parent, parent->trace_parent, sizeof s->trace_parent);
    memcpy(s->trace_span, parent->trace_span, sizeof s->trace_span);
    s->start_us = time_now_us();
    s->start_unix_ns = parent->start_unix_ns;
    s->ex = &s->slots[0];
    exchange_init(s->ex, s, pw->loop);
}

end_reason_t subreq_send(subreq_t *p, size_t limit, uint64_t timeout_ms)
{
    request_t *s = &p->req;
    proxy_worker_t *pw = s->pw;
    capture_free(&p->cap);
    capture_init(&p->cap, limit);
    s->phase = REQ_NONE;
    s->upstream_status = 0;
    s->upstream_reusable = 0;
    exchange_reset(s->ex);
    p->state = SUBREQ_RUNNING;
    const char *message;
    end_reason_t why =
        exchange_start(pw, s->ex, s->group, &s->tried, &subreq_ops, on_subreq_timer, &message);
    if (why == END_UPSTREAM_CONNECT_FAILURE)
        exchange_end(pw, s->ex, end_reasons[why].try_code, false, true);
    if (why != END_OK) {
        p->state = SUBREQ_FAILED;
        return why;
    }
    uv_timer_start(&s->ex->timer, on_subreq_timer, timeout_ms ? timeout_ms : 1, 0);
    if (upstream_conn_connected(s->ex->uc))
        subreq_ops.on_connected(s->ex, 0);
    return END_OK;
}

void subreq_abort(subreq_t *p, end_reason_t why)
{
    if (p->state == SUBREQ_RUNNING)
        part_end(p, SUBREQ_FAILED, why, false);
}

static void on_subreq_closed(uv_handle_t *h)
{
    exchange_t *ex = h->data;
    subreq_t *p = (subreq_t *)ex->req;
    capture_free(&p->cap);
    p->close_cb(p);
}

void subreq_close(subreq_t *p, void (*cb)(subreq_t *p))
{
    p->close_cb = cb;
    uv_close((uv_handle_t *)&p->req.slots[0].timer, on_subreq_closed);
}
