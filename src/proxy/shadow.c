/* Shadow copies; see shadow.h.
 *
 * A copy (shadow_t) holds up to two parts: the copy to the shadow group and,
 * for the noise share, a second copy to the old system. Each part is a
 * request of its own (only what an exchange reads is set: generation, route,
 * group, trace, its upstream head) with one exchange, read by this file's
 * upstream callbacks. The client's request points at the copy until it is
 * released; the copy ends when its parts and the client's answer are in:
 * compared (maybe in the thread pool), counted, its deferred log line
 * written, its timers closed, freed. */
#include "proxy/shadow.h"

#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/hash.h"
#include "core/rand.h"
#include "core/time.h"
#include "http/deadline.h"
#include "policy/json_diff.h"
#include "policy/shadow_stats.h"
#include "proxy/exchange.h"
#include "proxy/proxy_worker.h"
#include "proxy/rewrite.h"

/* Bodies up to this (all parts together) are compared on the loop; larger
 * ones in the thread pool (json_diff.h: a 1 MiB diff takes ~100 ms). */
#define SHADOW_INLINE_COMPARE_BYTES (64 * 1024)
/* Bytes kept of each compared response header (shadow.compare.headers,
 * then content-type). */
#define SHADOW_HEADER_VALUE_BYTES 256
#define SHADOW_HEADER "X-Ficus-Shadow: 1\r\n"

typedef enum { PART_IDLE = 0, PART_RUNNING, PART_DONE, PART_FAILED } part_state_t;

/* One answer as captured: status, the compared headers, the body (decoded
 * when it came chunked) up to a limit, its whole length. */
typedef struct capture {
    int status; /* 0: none */
    bool complete;
    bool truncated;
    bool framed; /* the body comes ficus-chunked: decoded as it is kept */
    http_chunked_t chunked;
    size_t limit; /* body bytes kept */
    char *body;
    size_t len, cap;
    uint64_t total;
    uint32_t n_headers;
    uint32_t ctype; /* index of content-type in headers, UINT32_MAX: none */
    json_diff_header_t headers[SHADOW_MAX_COMPARE_HEADERS + 1];
    char values[SHADOW_MAX_COMPARE_HEADERS + 1][SHADOW_HEADER_VALUE_BYTES];
} capture_t;

typedef struct part {
    request_t req; /* what the exchange reads; req.ex (slots[0]) is the part's try */
    shadow_t *sh;
    part_state_t state;
    capture_t cap;
} part_t;

/* The access-log line of the client's request, kept with copies of what
 * pointed into the request (config strings stay valid: the copy holds the
 * generation). */
typedef struct deferred_log {
    access_log_entry_t e;
    char store[2 * REQUEST_ID_MAX_BYTES + 46 + 16 + 256 + 160 + 256 + 64];
} deferred_log_t;

struct shadow {
    proxy_worker_t *pw;
    proxy_gen_t *gen; /* one reference */
    const config_route_t *route;
    request_t *req; /* the client's request until it lets go */
    shadow_t *next, **pprev;
    bool compare;
    bool sent;
    bool primary_done; /* the client's answer ended (primary.complete: whole) */
    bool comparing;    /* in the thread pool */
    bool finished;     /* result known */
    bool closing;
    bool held; /* being stopped: not closed under the stopper's feet */
    unsigned open_timers;
    const char *result; /* access log name, NULL: not compared */
    deferred_log_t *log;
    char *target;
    size_t target_len;
    capture_t primary;
    part_t parts[2]; /* [0] the copy, [1] the noise copy (state PART_IDLE: none) */
    json_diff_result_t diff, noise_diff;
    int diff_rc, noise_rc;
    uv_work_t work;
    char request_id[REQUEST_ID_MAX_BYTES + 1];
    uint8_t request_id_len;
};

static const upstream_conn_ops_t shadow_ops;
static void part_end(part_t *p, part_state_t st, end_reason_t why, bool reusable);
static void maybe_finish(shadow_t *sh);

/* The route's shadow figures (policy/shadow_stats). */
static shadow_route_t *figures(const proxy_gen_t *g, const config_route_t *r)
{
    return g->shadow_routes ? g->shadow_routes[r->index] : NULL;
}

/* A copy that was not compared: dropped, skipped or failed. */
static void count(const proxy_gen_t *g, const config_route_t *r, shadow_result_t why)
{
    shadow_route_count(figures(g, r), why);
}

/* ------------------------------------------------------------- capture */

static void capture_init(capture_t *c, size_t limit)
{
    memset(c, 0, offsetof(capture_t, values));
    c->limit = limit;
    c->ctype = UINT32_MAX;
}

static void capture_free(capture_t *c)
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

/* Body bytes as they came; ficus-chunked ones decoded first. */
static void capture_body(capture_t *c, const char *data, size_t len)
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

/* The status and the headers a comparison looks at. */
static void capture_head(capture_t *c, const config_shadow_compare_t *cc, const http_head_t *h,
                         bool head_method)
{
    c->status = h->status;
    c->framed = h->chunked && !head_method;
    http_chunked_init(&c->chunked, UINT32_MAX);
    size_t n =
        cc->n_headers < SHADOW_MAX_COMPARE_HEADERS ? cc->n_headers : SHADOW_MAX_COMPARE_HEADERS;
    for (size_t i = 0; i <= n; i++) {
        const char *name = i < n ? cc->headers[i] : "content-type";
        if (i == n && c->ctype != UINT32_MAX)
            break; /* listed already */
        const http_header_t *hd = http_header_find(h->headers, h->n_headers, name, strlen(name));
        if (!hd)
            continue;
        size_t vl = hd->value_len < SHADOW_HEADER_VALUE_BYTES - 1 ? hd->value_len
                                                                  : SHADOW_HEADER_VALUE_BYTES - 1;
        char *v = c->values[c->n_headers];
        memcpy(v, hd->value, vl);
        v[vl] = '\0';
        if (strcmp(name, "content-type") == 0)
            c->ctype = c->n_headers;
        c->headers[c->n_headers++] = (json_diff_header_t){.name = name, .value = v};
    }
}

static json_diff_side_t capture_side(const capture_t *c)
{
    return (json_diff_side_t){
        .status = c->status,
        .headers = c->headers,
        .n_headers = c->n_headers,
        .content_type = c->ctype != UINT32_MAX ? c->headers[c->ctype].value : NULL,
        .body = (const uint8_t *)c->body,
        .body_len = c->len,
        .body_truncated = c->truncated || !c->complete,
    };
}

/* --------------------------------------------------------------- begin */

static atomic_uint *inflight(const shadow_t *sh)
{
    return &sh->gen->shadow_inflight[sh->route->index];
}

void shadow_begin(request_t *req, const router_request_t *rr, const router_match_t *m)
{
    const config_route_t *r = req->route;
    proxy_worker_t *pw = req->pw;
    if (!r->has_shadow || req->upgrade_len)
        return;
    const config_shadow_t *sc = &r->shadow;
    if (!(sc->methods & (1u << req->method_id)))
        return;
    if (req->backend->target_group == sc->target_group)
        return; /* the new service answers this one itself (a rollout's step) */
    if (hash_bytes(req->request_id, req->request_id_len) % 100 >= sc->percent)
        return;
    proxy_gen_t *g = req->gen;
    atomic_uint *n = &g->shadow_inflight[r->index];
    if (atomic_fetch_add_explicit(n, 1, memory_order_relaxed) >= sc->max_in_flight) {
        atomic_fetch_sub_explicit(n, 1, memory_order_relaxed);
        count(g, r, SHADOW_DROPPED);
        return;
    }
    config_backend_t b = {.path = sc->path, .target_group = sc->target_group};
    char *target = pw->scratch;
    long tl = router_rewrite_target(r, &b, rr, m, target, pw->scratch_bytes);
    shadow_t *sh = tl >= 0 ? calloc(1, sizeof *sh) : NULL;
    if (sh)
        sh->target = malloc((size_t)tl);
    if (!sh || !sh->target) {
        free(sh);
        atomic_fetch_sub_explicit(n, 1, memory_order_relaxed);
        count(g, r, SHADOW_SKIPPED);
        return;
    }
    memcpy(sh->target, target, (size_t)tl);
    sh->target_len = (size_t)tl;
    sh->pw = pw;
    sh->gen = proxy_gen_ref(g);
    sh->route = r;
    sh->req = req;
    sh->compare = sc->has_compare;
    memcpy(sh->request_id, req->request_id, req->request_id_len);
    sh->request_id_len = req->request_id_len;
    capture_init(&sh->primary, sc->compare.max_body_size);
    sh->next = pw->shadows;
    if (sh->next)
        sh->next->pprev = &sh->next;
    sh->pprev = &pw->shadows;
    pw->shadows = sh;
    req->shadow = sh;
}

/* ---------------------------------------------------------------- send */

/* The part's upstream head: the client request's as the primary got it
 * (body included), with `target` in its request line and the shadow
 * header after it. */
static int part_build(part_t *p, const request_t *req, const char *target, size_t target_len)
{
    proxy_worker_t *pw = req->pw;
    pbuf_t *o = pbuf_get(&pw->w->pool);
    if (!o)
        return FE_NOMEM;
    long shift;
    long len = rewrite_retarget(req->out->data, req->out->len, req->head_len, req->method,
                                req->method_len, target, target_len, SHADOW_HEADER,
                                sizeof SHADOW_HEADER - 1, o->data, o->cap, &shift);
    if (len < 0) {
        pbuf_put(&pw->w->pool, o);
        return (int)len;
    }
    o->len = (uint32_t)len;
    request_t *s = &p->req;
    s->out = o;
    s->head_len = (uint32_t)((long)req->head_len + shift);
    s->tp_off = req->tp_off ? (uint32_t)((long)req->tp_off + shift) : 0;
    s->dd_off = req->dd_off ? (uint32_t)((long)req->dd_off + shift) : 0;
    if (req->rto_off) {
        /* The copy's own time left: it runs under the route's timeout (and
         * its per-try timeout), not the client's request. */
        const config_route_t *r = req->route;
        uint64_t left = r->timeout_ms;
        if (r->has_retries && r->retries.per_try_timeout_ms && r->retries.per_try_timeout_ms < left)
            left = r->retries.per_try_timeout_ms;
        http_deadline_write_ms(o->data + req->rto_off + shift, left);
        if (req->gto_off)
            http_deadline_write_grpc(o->data + req->gto_off + shift, left);
    }
    return 0;
}

static void on_part_timer(uv_timer_t *t)
{
    exchange_t *ex = t->data;
    part_t *p = (part_t *)ex->req;
    if (p->state == PART_RUNNING)
        part_end(p, PART_FAILED, END_UPSTREAM_TIMEOUT, false);
}

/* Starts part p of the copy to `group` with the request's head retargeted. */
static void part_start(shadow_t *sh, part_t *p, const request_t *req, uint32_t group,
                       const char *target, size_t target_len)
{
    proxy_worker_t *pw = sh->pw;
    request_t *s = &p->req;
    p->sh = sh;
    s->pw = pw;
    s->cc = NULL; /* the client may be gone before the copy ends */
    memcpy(s->request_id, req->request_id, req->request_id_len);
    s->request_id_len = req->request_id_len;
    memcpy(s->method, req->method, req->method_len);
    s->method_len = req->method_len;
    memcpy(s->path, req->path, req->path_len);
    s->path_len = req->path_len;
    memcpy(s->client_ip, req->cc->client_ip, req->cc->client_ip_len);
    s->client_ip_len = req->cc->client_ip_len;
    s->gen = sh->gen;
    s->route = sh->route;
    s->group = group;
    s->client = UINT32_MAX;
    s->upstream_us = -1;
    s->head_method = req->head_method;
    s->method_id = req->method_id;
    s->has_trace = req->has_trace;
    s->trace_sampled = req->trace_sampled;
    s->trace_export = req->trace_export;
    memcpy(s->trace_id, req->trace_id, sizeof s->trace_id);
    memcpy(s->trace_parent, req->trace_parent, sizeof s->trace_parent);
    memcpy(s->trace_span, req->trace_span, sizeof s->trace_span);
    s->start_us = time_now_us();
    s->start_unix_ns = req->start_unix_ns;
    s->ex = &s->slots[0];
    exchange_init(s->ex, s, pw->loop);
    sh->open_timers++;
    capture_init(&p->cap, sh->compare ? sh->route->shadow.compare.max_body_size : 0);
    p->state = PART_RUNNING;
    if (part_build(p, req, target, target_len) != 0) {
        p->state = PART_FAILED;
        return;
    }
    const char *message;
    end_reason_t why =
        exchange_start(pw, s->ex, s->group, &s->tried, &shadow_ops, on_part_timer, &message);
    if (why == END_UPSTREAM_CONNECT_FAILURE) {
        part_end(p, PART_FAILED, why, false);
        return;
    }
    if (why != END_OK) {
        p->state = PART_FAILED;
        return;
    }
    uv_timer_start(&s->ex->timer, on_part_timer, sh->route->timeout_ms, 0); /* at least 1ms */
    if (upstream_conn_connected(s->ex->uc))
        shadow_ops.on_connected(s->ex, 0);
}

/* The copy is over before it went: nothing was sent, nothing holds it. */
static void shadow_drop(shadow_t *sh, shadow_result_t why)
{
    if (sh->req)
        sh->req->shadow = NULL;
    sh->req = NULL;
    count(sh->gen, sh->route, why);
    sh->finished = true;
    sh->primary_done = true;
    maybe_finish(sh);
}

void shadow_send(request_t *req)
{
    shadow_t *sh = req->shadow;
    if (!sh || sh->sent)
        return;
    if (req->body_streamed || !req->out) {
        shadow_drop(sh, SHADOW_SKIPPED);
        return;
    }
    sh->sent = true;
    const config_shadow_t *sc = &sh->route->shadow;
    part_start(sh, &sh->parts[0], req, (uint32_t)sc->target_group, sh->target, sh->target_len);
    if (sh->compare && sc->compare.has_noise &&
        rand_next(&sh->pw->rng) % 100 < sc->compare.noise_percent) {
        /* The old system's own target: the primary's request line. */
        const char *sp = memchr(req->out->data, ' ', req->head_len);
        const char *ep =
            sp ? memchr(sp + 1, ' ', req->head_len - (size_t)(sp + 1 - req->out->data)) : NULL;
        if (ep)
            part_start(sh, &sh->parts[1], req, req->group, sp + 1, (size_t)(ep - sp - 1));
    }
    /* A part that failed at once is judged when the client's answer ends. */
}

/* ------------------------------------------------------- a part's answer */

static void part_end(part_t *p, part_state_t st, end_reason_t why, bool reusable)
{
    request_t *s = &p->req;
    shadow_t *sh = p->sh;
    upstream_conn_t *uc = s->ex->uc;
    if (uc && uc->in) {
        pbuf_put(&sh->pw->w->pool, uc->in);
        uc->in = NULL;
    }
    reusable = reusable && uc && !stream_write_pending(&uc->s);
    exchange_end(sh->pw, s->ex, st == PART_FAILED ? end_reasons[why].try_code : 0, reusable,
                 st == PART_FAILED || p->cap.status >= 500);
    p->state = st;
    p->cap.complete = st == PART_DONE;
    pbuf_put(&sh->pw->w->pool, s->out);
    s->out = NULL;
    maybe_finish(sh);
}

static void part_connected(void *owner, int status)
{
    exchange_t *ex = owner;
    part_t *p = (part_t *)ex->req;
    if (ex->holds_pending) {
        ex->holds_pending = 0;
        health_release(&p->req.gen->health->groups[ex->group].pending);
    }
    if (status < 0) {
        ex->uc = NULL; /* closed already */
        part_end(p, PART_FAILED, END_UPSTREAM_CONNECT_FAILURE, false);
        return;
    }
    http_parser_expect_no_body(&ex->uc->parser, p->req.head_method);
    uv_buf_t b = uv_buf_init(p->req.out->data, p->req.out->len);
    ex->out_sent = p->req.out->len;
    if (upstream_conn_write(ex->uc, &b, 1) < 0)
        part_end(p, PART_FAILED, END_UPSTREAM_RESET, false);
}

/* Reads the head of the part's answer from *data (whole heads only):
 * counted, and a 1xx skipped. 0 when the body follows, 1 when the answer
 * ended with its head, 2 when a final head is still to come, -1 when the
 * answer is invalid. */
static int part_head(part_t *p, const char **data, size_t *len)
{
    exchange_t *ex = p->req.ex;
    upstream_conn_t *uc = ex->uc;
    proxy_worker_t *pw = p->sh->pw;
    const config_route_t *r = p->sh->route;
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
        capture_head(&p->cap, &r->shadow.compare, h, p->req.head_method);
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
static bool part_keep_head(part_t *p, const char *data, size_t len)
{
    upstream_conn_t *uc = p->req.ex->uc;
    if (!uc->in && !(uc->in = pbuf_get(&p->sh->pw->w->pool)))
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
    part_t *p = (part_t *)ex->req;
    upstream_conn_t *uc = ex->uc;
    proxy_worker_t *pw = p->sh->pw;
    if (p->state != PART_RUNNING)
        return;
    if (p->req.phase != REQ_RESPONDING) {
        if (uc->in) {
            if (!part_keep_head(p, data, len)) {
                part_end(p, PART_FAILED, END_UPSTREAM_INVALID, false);
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
                part_end(p, PART_FAILED, END_UPSTREAM_INVALID, false);
            return;
        }
        if (rc < 0) {
            part_end(p, PART_FAILED, END_UPSTREAM_INVALID, false);
            return;
        }
        if (rc == 1) {
            part_end(p, PART_DONE, END_OK, p->req.upstream_reusable && len == 0);
            return;
        }
    }
    while (len > 0) {
        int ev = 0;
        long k = http_parser_feed(&uc->parser, &pw->head, data, len, &ev);
        if (k < 0) {
            part_end(p, PART_FAILED, END_UPSTREAM_INVALID, false);
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
            part_end(p, PART_DONE, END_OK, p->req.upstream_reusable && len == 0);
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
    part_t *p = (part_t *)ex->req;
    if (p->state != PART_RUNNING)
        return;
    if (p->req.phase == REQ_RESPONDING && http_parser_body_until_eof(&ex->uc->parser) &&
        http_parser_finish(&ex->uc->parser) == 0) {
        part_end(p, PART_DONE, END_OK, false);
        return;
    }
    part_end(p, PART_FAILED, END_UPSTREAM_RESET, false);
}

static void part_drained(void *owner, int status)
{
    exchange_t *ex = owner;
    part_t *p = (part_t *)ex->req;
    if (status < 0 && p->state == PART_RUNNING)
        part_end(p, PART_FAILED, END_UPSTREAM_RESET, false);
}

static const upstream_conn_ops_t shadow_ops = {
    .on_connected = part_connected,
    .on_data = part_data,
    .on_eof = part_eof,
    .on_drained = part_drained,
};

/* ------------------------------------------------ the client's answer */

void shadow_primary_head(request_t *req, const http_head_t *h)
{
    shadow_t *sh = req->shadow;
    if (!sh || !sh->compare)
        return;
    capture_head(&sh->primary, &sh->route->shadow.compare, h, req->head_method);
}

void shadow_primary_body(request_t *req, const char *data, size_t len, bool framed)
{
    shadow_t *sh = req->shadow;
    if (!sh || !sh->compare || !sh->primary.status)
        return;
    sh->primary.framed = framed;
    capture_body(&sh->primary, data, len);
}

const char *shadow_request_done(request_t *req, const access_log_entry_t *e, bool *deferred)
{
    shadow_t *sh = req->shadow;
    *deferred = false;
    if (!sh)
        return NULL;
    if (!sh->primary_done) {
        sh->primary_done = true;
        sh->primary.complete = req->end == END_OK && sh->primary.status != 0;
        if (!sh->sent) {
            /* Answered before its body was whole: the copy never went. */
            shadow_drop(sh, SHADOW_SKIPPED);
            return NULL;
        }
        maybe_finish(sh);
    }
    if (sh->finished)
        return sh->result;
    if (!e)
        return NULL;
    /* The copy goes on: the line waits for its result. */
    deferred_log_t *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    d->e = *e;
    char *w = d->store;
    access_log_str_t *own[] = {&d->e.request_id, &d->e.trace_id,   &d->e.client_ip,    &d->e.method,
                               &d->e.path,       &d->e.user_agent, &d->e.upstream_path};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        access_log_str_t *s = own[i];
        if (!s->p)
            continue;
        size_t room = (size_t)(d->store + sizeof d->store - w);
        if (s->n > room)
            s->n = room;
        memcpy(w, s->p, s->n);
        s->p = w;
        w += s->n;
    }
    free(sh->log);
    sh->log = d;
    *deferred = true;
    return NULL;
}

void shadow_detach(request_t *req)
{
    shadow_t *sh = req->shadow;
    if (!sh)
        return;
    req->shadow = NULL;
    sh->req = NULL;
    if (!sh->primary_done) {
        /* Released without its line (a stop): nothing to compare with. */
        sh->primary_done = true;
        sh->primary.complete = false;
        if (!sh->sent) {
            sh->finished = true;
        }
    }
    maybe_finish(sh);
}

/* ----------------------------------------------------------- the result */

static void compare_parts(shadow_t *sh)
{
    const json_diff_spec_t *spec = sh->gen->diff_specs[sh->route->index];
    json_diff_side_t old_side = capture_side(&sh->primary);
    json_diff_side_t new_side = capture_side(&sh->parts[0].cap);
    sh->diff_rc = json_diff_run(spec, &old_side, &new_side, &sh->diff);
    sh->noise_rc = FE_INVAL;
    if (sh->parts[1].state == PART_DONE) {
        json_diff_side_t noise_side = capture_side(&sh->parts[1].cap);
        sh->noise_rc = json_diff_run(spec, &old_side, &noise_side, &sh->noise_diff);
    }
}

static void on_compare_work(uv_work_t *w) { compare_parts(w->data); }

static void on_part_closed(uv_handle_t *h)
{
    exchange_t *ex = h->data;
    part_t *p = (part_t *)ex->req;
    shadow_t *sh = p->sh;
    if (--sh->open_timers == 0) {
        proxy_gen_unref(sh->gen);
        free(sh);
    }
}

/* The copy is over: its log line written, its memory and timers let go. */
static void shadow_close(shadow_t *sh)
{
    proxy_worker_t *pw = sh->pw;
    if (sh->log) {
        sh->log->e.shadow = sh->result;
        if (pw->alog)
            access_log_append(pw->alog, &sh->log->e);
        free(sh->log);
        sh->log = NULL;
    }
    atomic_fetch_sub_explicit(inflight(sh), 1, memory_order_relaxed);
    sh->closing = true;
    *sh->pprev = sh->next;
    if (sh->next)
        sh->next->pprev = sh->pprev;
    capture_free(&sh->primary);
    free(sh->target);
    sh->target = NULL;
    unsigned timers = sh->open_timers;
    for (size_t i = 0; i < 2; i++) {
        part_t *p = &sh->parts[i];
        capture_free(&p->cap);
        pbuf_put(&pw->w->pool, p->req.out);
        p->req.out = NULL;
        if (p->state != PART_IDLE)
            uv_close((uv_handle_t *)&p->req.slots[0].timer, on_part_closed);
    }
    if (timers == 0) {
        proxy_gen_unref(sh->gen);
        free(sh);
    }
}

/* The comparison's verdict, counted. */
static void judge(shadow_t *sh)
{
    if (sh->diff_rc != 0) {
        sh->result = "error"; /* no memory to compare with */
        count(sh->gen, sh->route, SHADOW_ERROR);
    } else {
        shadow_result_t res = shadow_route_compared(figures(sh->gen, sh->route), &sh->diff,
                                                    sh->noise_rc == 0 ? &sh->noise_diff : NULL,
                                                    sh->request_id, sh->request_id_len);
        sh->result = res == SHADOW_MATCH ? "match" : "mismatch";
        json_diff_result_free(&sh->diff);
        rollout_t *ro = sh->gen->rollouts ? sh->gen->rollouts[sh->route->index] : NULL;
        if (ro) /* the rollout's max_mismatch_rate */
            rollout_record_shadow(ro, time_now_ms(), res == SHADOW_MATCH);
        board_route_t *br = sh->gen->board_routes ? sh->gen->board_routes[sh->route->index] : NULL;
        board_record_shadow(br, (unsigned)sh->pw->w->index, time_now_ms(), res == SHADOW_MATCH);
    }
    if (sh->noise_rc == 0)
        json_diff_result_free(&sh->noise_diff);
}

static void after_compare_work(uv_work_t *w, int status)
{
    shadow_t *sh = w->data;
    sh->comparing = false;
    if (status != 0) {
        /* Cancelled at stop: nothing ran. */
        sh->diff_rc = sh->noise_rc = FE_INVAL;
    }
    judge(sh);
    sh->finished = true;
    maybe_finish(sh);
}

static void maybe_finish(shadow_t *sh)
{
    if (sh->comparing || sh->closing || sh->held)
        return;
    if (!sh->finished) {
        for (size_t i = 0; i < 2; i++)
            if (sh->parts[i].state == PART_RUNNING)
                return;
        if (!sh->primary_done)
            return;
        if (sh->parts[0].state == PART_FAILED) {
            sh->result = "error";
            count(sh->gen, sh->route, SHADOW_ERROR);
        } else if (!sh->compare) {
            sh->result = NULL;
        } else if (!sh->primary.complete) {
            /* The client got no whole answer: nothing to compare with. */
            count(sh->gen, sh->route, SHADOW_SKIPPED);
        } else {
            size_t bytes = sh->primary.len + sh->parts[0].cap.len + sh->parts[1].cap.len;
            if (bytes > SHADOW_INLINE_COMPARE_BYTES) {
                sh->work.data = sh;
                if (uv_queue_work(sh->pw->loop, &sh->work, on_compare_work, after_compare_work) ==
                    0) {
                    sh->comparing = true;
                    return;
                }
            }
            compare_parts(sh);
            judge(sh);
        }
        sh->finished = true;
    }
    if (sh->req)
        return; /* the request still reads it (its log line) */
    shadow_close(sh);
}

void shadow_worker_stop(proxy_worker_t *pw)
{
    shadow_t *sh = pw->shadows;
    while (sh) {
        shadow_t *next = sh->next;
        sh->held = true;
        for (size_t i = 0; i < 2; i++)
            if (sh->parts[i].state == PART_RUNNING)
                part_end(&sh->parts[i], PART_FAILED, END_UPSTREAM_RESET, false);
        sh->held = false;
        if (sh->req)
            shadow_detach(sh->req); /* closes it, unless it compares in the thread pool */
        else
            maybe_finish(sh);
        sh = next;
    }
}
