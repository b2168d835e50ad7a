/* The request's spans; see request_trace.h. */
#include "proxy/request_trace.h"

#include <string.h>

#include "core/fmt.h"
#include "core/time.h"

static const http_header_t *find_header(const http_head_t *h, const char *name, size_t len)
{
    return http_header_find(h->headers, h->n_headers, name, len);
}

/* The request's trace: the caller's (traceparent; Datadog headers when that
 * propagation is on), else a new one. Spans are exported when the caller
 * sampled it, else at sample_ratio. With no exporter only an incoming
 * traceparent's id is kept, for the access log, and the headers pass as
 * they are. */
void request_trace_begin(proxy_worker_t *pw, request_t *req, const http_head_t *h,
                         const config_tracing_t *tc)
{
    uint8_t flags = 0;
    const http_header_t *tp =
        !pw->tracer || tc->propagate_w3c ? find_header(h, "traceparent", 11) : NULL;
    if (tp && trace_parse_traceparent(tp->value, tp->value_len, req->trace_id, req->trace_parent,
                                      &flags) == 0)
        req->has_trace = 1;
    if (!pw->tracer)
        return;
    bool sampled = flags & TRACE_FLAG_SAMPLED;
    if (!req->has_trace && tc->propagate_datadog) {
        const http_header_t *t = find_header(h, "x-datadog-trace-id", 18);
        const http_header_t *p = find_header(h, "x-datadog-parent-id", 19);
        uint64_t tid, pid;
        if (t && p && trace_parse_datadog_id(t->value, t->value_len, &tid) == 0 &&
            trace_parse_datadog_id(p->value, p->value_len, &pid) == 0) {
            memset(req->trace_id, 0, 8);
            trace_span_id_from_u64(tid, req->trace_id + 8);
            trace_span_id_from_u64(pid, req->trace_parent);
            req->has_trace = 1;
            const http_header_t *sp = find_header(h, "x-datadog-sampling-priority", 27);
            sampled = sp && sp->value_len && sp->value[0] >= '1' && sp->value[0] <= '9';
        }
    }
    if (!req->has_trace) {
        trace_new_trace_id(&pw->rng, req->trace_id);
        req->has_trace = 1;
    }
    req->trace_sampled = sampled || trace_sample(&pw->rng, tc->sample_ratio);
    req->trace_export = 1;
    trace_new_span_id(&pw->rng, req->trace_span, tc->propagate_datadog);
}

/* The trace headers of the upstream head, before the first try's span. */
void request_trace_headers(const request_t *req, const config_tracing_t *tc, rewrite_trace_t *rt)
{
    rt->w3c = tc->propagate_w3c;
    rt->datadog = tc->propagate_datadog;
    rt->sampled = req->trace_sampled;
    if (rt->w3c)
        trace_format_traceparent(rt->traceparent, req->trace_id, req->trace_span,
                                 req->trace_sampled);
    if (rt->datadog) {
        rt->dd_trace_id_len =
            (uint8_t)fmt_u64(rt->dd_trace_id, trace_span_id_u64(req->trace_id + 8));
        trace_dd_format_id(rt->dd_parent_id, trace_span_id_u64(req->trace_span));
    }
}

/* A new client span for a try, written into the head before it is sent. */
void request_trace_try_begin(proxy_worker_t *pw, request_t *req, exchange_t *ex)
{
    bool dd = req->dd_off != 0;
    trace_new_span_id(&pw->rng, ex->span, dd);
    /* A hedge patches its own copy of the head. */
    char *head = ex->out ? ex->out->data + ex->out_shift : req->out->data;
    if (req->tp_off)
        trace_patch_span_id(head + req->tp_off, ex->span);
    if (dd)
        trace_dd_format_id(head + req->dd_off, trace_span_id_u64(ex->span));
}

static void span_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (!src)
        n = 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

static void span_cstr(char *dst, size_t cap, const char *src)
{
    span_str(dst, cap, src, src ? strlen(src) : 0);
}

#define SPAN_STR(field, src, n) span_str(s->field, sizeof s->field, (src), (n))
#define SPAN_CSTR(field, src) span_cstr(s->field, sizeof s->field, (src))

/* Fills what server and client spans share. */
static trace_span_t *span_start(proxy_worker_t *pw, const request_t *req, uint8_t kind,
                                const char *what, uint64_t start_us, uint64_t end_us)
{
    trace_span_t *s = tracer_reserve(pw->tracer, pw->w->index);
    if (!s)
        return NULL;
    memcpy(s->trace_id, req->trace_id, sizeof s->trace_id);
    s->kind = kind;
    s->fallback = req->fallback;
    s->start_unix_ns = req->start_unix_ns + (start_us - req->start_us) * 1000;
    s->end_unix_ns = req->start_unix_ns + (end_us - req->start_us) * 1000;
    /* name: "METHOD what", cut to fit */
    size_t ml = req->method_len < sizeof s->name - 2 ? req->method_len : sizeof s->name - 2;
    memcpy(s->name, req->method, ml);
    s->name[ml] = ' ';
    span_cstr(s->name + ml + 1, sizeof s->name - ml - 1, what);
    SPAN_STR(method, req->method, req->method_len);
    SPAN_CSTR(route, req->route ? req->route->name : NULL);
    const char *q = memchr(req->path, '?', req->path_len);
    SPAN_STR(path, req->path, q ? (size_t)(q - req->path) : req->path_len);
    if (req->cc)
        SPAN_STR(client_ip, req->cc->client_ip, req->cc->client_ip_len);
    else /* a shadow copy's try, which outlives its client connection */
        SPAN_STR(client_ip, req->client_ip, req->client_ip_len);
    SPAN_STR(request_id, req->request_id, req->request_id_len);
    const config_t *cfg = req->gen->cfg;
    SPAN_CSTR(client_id, req->client != UINT32_MAX ? cfg->clients[req->client].id : NULL);
    const config_target_group_t *tg =
        req->group != UINT32_MAX ? &cfg->target_groups[req->group] : NULL;
    uint32_t t = request_target(req);
    SPAN_CSTR(target_group, tg ? tg->name : NULL);
    SPAN_CSTR(target, tg && t != UINT32_MAX ? tg->targets[t].name : NULL);
    return s;
}

/* The client span of the try that just ended. */
void request_trace_try_end(proxy_worker_t *pw, const request_t *req, const exchange_t *ex,
                           int metrics_code, bool failure)
{
    const config_target_group_t *tg = &req->gen->cfg->target_groups[ex->group];
    trace_span_t *s = span_start(pw, req, TRACE_SPAN_CLIENT, tg->name, ex->start_us, time_now_us());
    if (!s)
        return;
    memcpy(s->span_id, ex->span, sizeof s->span_id);
    memcpy(s->parent_id, req->trace_span, sizeof s->parent_id);
    /* The try's own group and target: a hedge may race in another group. */
    span_cstr(s->target_group, sizeof s->target_group, tg->name);
    span_cstr(s->target, sizeof s->target,
              ex->target < tg->n_targets ? tg->targets[ex->target].name : NULL);
    s->fallback = req->backend && ex->group == req->backend->fallback;
    s->hedge = ex->is_hedge;
    s->status = ex->counted ? (uint16_t)req->upstream_status : 0;
    /* A try whose 5xx head was counted (and then retried or fallen back
     * from) ends with code 0: its status says what went wrong. */
    if (!metrics_code && s->status >= 500)
        metrics_code = s->status;
    s->error = failure || s->status >= 500 || metrics_code < 0;
    s->retry = ex->attempt > 1 && !ex->is_hedge;
    s->attempt = (uint16_t)ex->attempt;
    SPAN_CSTR(error_type, metrics_code < 0      ? metrics_upstream_failure_name(metrics_code)
                          : metrics_code >= 500 ? "http_5xx"
                                                : NULL);
    tracer_commit(pw->tracer, pw->w->index);
}

/* The server span: the whole request as the client saw it. */
void request_trace_end(proxy_worker_t *pw, const request_t *req, uint64_t end_us)
{
    trace_span_t *s = span_start(pw, req, TRACE_SPAN_SERVER, req->route ? req->route->name : NULL,
                                 req->start_us, end_us);
    if (!s)
        return;
    memcpy(s->span_id, req->trace_span, sizeof s->span_id);
    memcpy(s->parent_id, req->trace_parent, sizeof s->parent_id);
    s->status = (uint16_t)req->status;
    s->error = req->status >= 500;
    s->retry = req->retries > 0;
    s->hedge = req->hedged == HEDGE_SENT;
    s->attempt = (uint16_t)req->attempts;
    SPAN_CSTR(error_type, end_reason_name(req->end));
    tracer_commit(pw->tracer, pw->w->index);
}

#undef SPAN_STR
#undef SPAN_CSTR
