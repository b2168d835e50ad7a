/* One request, from its head to its log line. Top to bottom:
 *   proxy_request_begin: target -> route -> policies -> backend -> upstream head
 *   attempt:             target of the group -> pooled or new connection
 *   send / body:         head and body upstream, buffered while connecting
 *   response:            head rewritten, body relayed with backpressure
 *   fail_attempt:        the one place that decides: retry, fall back, or answer
 *   finish:              connection back to the pool, log, metrics, next request */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"
#include "core/fmt.h"
#include "core/log.h"
#include "core/time.h"
#include "http/response.h"
#include "proxy/proxy.h"
#include "proxy/rewrite.h"
#include "proxy/tunnel.h"

/* A request re-sent on a fresh connection after a pooled one turned out to be
 * closed by the target: at most this many tries in all. */
#define STALE_CONNECTION_TRIES 3

/* FAIL_SWITCH: a 101 to a request that asked for no upgrade, or for another
 * protocol (an invalid response, with its own message). */
typedef enum { FAIL_CONNECT, FAIL_RESET, FAIL_TIMEOUT, FAIL_INVALID, FAIL_SWITCH } fail_t;

static void attempt(request_t *req);
static void fail_attempt(request_t *req, fail_t why);
static bool try_again(request_t *req, retry_outcome_t o, int status);
static void retry(request_t *req);
static void end_attempt(request_t *req, int metrics_code, bool reusable, bool failure);
static void finish(request_t *req);

const char *proxy_end_reason_name(end_reason_t r)
{
    switch (r) {
    case END_OK:
        return NULL;
    case END_BAD_REQUEST:
        return "bad_request";
    case END_NO_ROUTE:
        return "no_route";
    case END_FORBIDDEN:
        return "forbidden";
    case END_BODY_TOO_LARGE:
        return "body_too_large";
    case END_HEADER_TOO_LARGE:
        return "header_too_large";
    case END_HEADER_TIMEOUT:
        return "header_timeout";
    case END_CLIENT_CLOSED:
        return "client_closed";
    case END_UPSTREAM_CONNECT_FAILURE:
        return "upstream_connect_failure";
    case END_UPSTREAM_TIMEOUT:
        return "upstream_timeout";
    case END_UPSTREAM_RESET:
        return "upstream_reset";
    case END_UPSTREAM_INVALID:
        return "upstream_invalid_response";
    case END_NO_TARGET:
        return "no_healthy_target";
    case END_CIRCUIT_OPEN:
        return "circuit_open";
    case END_INTERNAL:
        return "internal_error";
    case END_TUNNEL_IDLE:
        return "tunnel_idle_timeout";
    }
    return "error";
}

static uint64_t now_us(void) { return uv_hrtime() / 1000; }

static void copy_trunc(char *dst, size_t cap, const char *src, size_t n, size_t *out_len)
{
    if (n > cap)
        n = cap;
    memcpy(dst, src, n);
    *out_len = n;
}

static void new_request_id(proxy_worker_t *pw, request_t *req)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = balancer_random(&pw->rng), b = ++pw->request_seq ^ balancer_random(&pw->rng);
    for (int i = 0; i < 16; i++) {
        req->request_id[i] = hex[(a >> (i * 4)) & 15];
        req->request_id[16 + i] = hex[(b >> (i * 4)) & 15];
    }
    req->request_id[32] = '\0';
    req->request_id_len = 32;
}

/* The client's address for policies and logs: the peer, or, when the peer is
 * a trusted proxy, the rightmost X-Forwarded-For entry that is not trusted. */
static void client_ip(const client_conn_t *cc, const http_head_t *h, const char **ip, size_t *len)
{
    *ip = cc->client_ip;
    *len = cc->client_ip_len;
    if (!cc->peer_trusted)
        return;
    const http_header_t *xff = http_header_find(h->headers, h->n_headers, "x-forwarded-for", 15);
    if (!xff)
        return;
    const config_server_t *srv = &cc->req.gen->cfg->server;
    const char *end = xff->value + xff->value_len;
    while (end > xff->value) {
        const char *p = end;
        while (p > xff->value && p[-1] != ',')
            p--;
        const char *s = p, *e = end;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > s) {
            bool trusted = false;
            for (size_t i = 0; i < srv->n_trusted_proxies && !trusted; i++)
                trusted = cidr_match_text(&srv->trusted_proxies[i], s, (size_t)(e - s));
            *ip = s;
            *len = (size_t)(e - s);
            if (!trusted)
                return;
        }
        end = p > xff->value ? p - 1 : p;
    }
}

static bool ip_rules_allow(const config_route_t *r, const char *ip, size_t len)
{
    for (size_t i = 0; i < r->n_ip_deny; i++)
        if (cidr_match_text(&r->ip_deny[i], ip, len))
            return false;
    if (r->n_ip_allow == 0)
        return true;
    for (size_t i = 0; i < r->n_ip_allow; i++)
        if (cidr_match_text(&r->ip_allow[i], ip, len))
            return true;
    return false;
}

/* Backend of the route: sticky hash when the key is there, else smooth WRR. */
static size_t pick_backend(proxy_gen_t *g, const config_route_t *r, const http_head_t *h,
                           const char *ip, size_t ip_len)
{
    uint32_t v = weights_version(g->shared_weights, r->index);
    if (v != g->weights_version[r->index]) {
        /* Weights changed through the admin API: start the round afresh. */
        weights_load(g->shared_weights, r->index, g->weights[r->index]);
        memset(g->swrr[r->index], 0, r->n_backends * sizeof *g->swrr[r->index]);
        g->weights_version[r->index] = v;
    }
    const uint32_t *weights = g->weights[r->index];
    const char *key = NULL;
    size_t key_len = 0;
    if (r->sticky == STICKY_CLIENT_IP) {
        key = ip;
        key_len = ip_len;
    } else if (r->sticky == STICKY_HEADER) {
        const http_header_t *hd =
            http_header_find(h->headers, h->n_headers, r->sticky_name, strlen(r->sticky_name));
        if (hd && hd->value_len) {
            key = hd->value;
            key_len = hd->value_len;
        }
    } else if (r->sticky == STICKY_COOKIE) {
        for (uint32_t i = 0; i < h->n_headers && !key; i++)
            if (http_header_name_is(h->headers[i].name, h->headers[i].name_len, "cookie", 6))
                if (http_cookie_get(h->headers[i].value, h->headers[i].value_len, r->sticky_name,
                                    strlen(r->sticky_name), &key, &key_len) != 0)
                    key = NULL;
    }
    if (key)
        return balancer_hash_pick(weights, r->n_backends, balancer_hash(key, key_len));
    return balancer_swrr_pick(g->swrr[r->index], weights, r->n_backends);
}

/* Splits the request target into path and query, and the authority of an
 * absolute-form target. 0, or FE_PARSE for targets a proxy cannot route. */
static int split_target(const char *t, size_t n, router_request_t *rr, const char **authority,
                        size_t *authority_len)
{
    *authority = NULL;
    *authority_len = 0;
    if (n >= 7 &&
        (strncasecmp(t, "http://", 7) == 0 || (n >= 8 && strncasecmp(t, "https://", 8) == 0))) {
        size_t skip = (t[4] == ':') ? 7 : 8;
        const char *a = t + skip, *end = t + n, *p = a;
        while (p < end && *p != '/' && *p != '?')
            p++;
        if (p == a)
            return FE_PARSE;
        *authority = a;
        *authority_len = (size_t)(p - a);
        t = p;
        n = (size_t)(end - p);
        if (n == 0) {
            t = "/";
            n = 1;
        } else if (*t == '?') {
            return FE_PARSE; /* "http://host?q": no path to route */
        }
    }
    if (n == 0 || t[0] != '/')
        return FE_PARSE;
    const char *frag = memchr(t, '#', n);
    if (frag)
        n = (size_t)(frag - t); /* a fragment is the client's own business */
    const char *q = memchr(t, '?', n);
    rr->path = t;
    rr->path_len = q ? (size_t)(q - t) : n;
    rr->query = q ? q + 1 : NULL;
    rr->query_len = q ? n - rr->path_len - 1 : 0;
    return 0;
}

/* A Host value: reg-name or IP literal, optional port (RFC 9112 3.2). */
static bool host_valid(const char *h, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-._~!$&'()*+,;=:[]%", c)))
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------- trace */

static const http_header_t *find_header(const http_head_t *h, const char *name, size_t len)
{
    return http_header_find(h->headers, h->n_headers, name, len);
}

/* The request's trace: the caller's (traceparent; Datadog headers when that
 * propagation is on), else a new one. Spans are exported when the caller
 * sampled it, else at sample_ratio. With no exporter only an incoming
 * traceparent's id is kept, for the access log, and the headers pass as
 * they are. */
static void trace_begin(proxy_worker_t *pw, request_t *req, const http_head_t *h,
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
static void trace_headers(const request_t *req, const config_tracing_t *tc, rewrite_trace_t *rt)
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
static void trace_try_begin(proxy_worker_t *pw, request_t *req)
{
    bool dd = req->dd_off != 0;
    trace_new_span_id(&pw->rng, req->try_span, dd);
    if (req->tp_off)
        trace_patch_span_id(req->out->data + req->tp_off, req->try_span);
    if (dd)
        trace_dd_format_id(req->out->data + req->dd_off, trace_span_id_u64(req->try_span));
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
static trace_span_t *span_start(proxy_worker_t *pw, request_t *req, uint8_t kind, const char *what,
                                uint64_t start_us, uint64_t end_us)
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
    SPAN_STR(client_ip, req->cc->client_ip, req->cc->client_ip_len);
    SPAN_STR(request_id, req->request_id, req->request_id_len);
    const config_t *cfg = req->gen->cfg;
    const config_target_group_t *tg =
        req->group != UINT32_MAX ? &cfg->target_groups[req->group] : NULL;
    SPAN_CSTR(target_group, tg ? tg->name : NULL);
    SPAN_CSTR(target, tg && req->target != UINT32_MAX ? tg->targets[req->target].name : NULL);
    return s;
}

/* The client span of the try that just ended. */
static void trace_try_end(proxy_worker_t *pw, request_t *req, int metrics_code, bool failure)
{
    const config_target_group_t *tg = &req->gen->cfg->target_groups[req->group];
    trace_span_t *s =
        span_start(pw, req, TRACE_SPAN_CLIENT, tg->name, req->upstream_start_us, now_us());
    if (!s)
        return;
    memcpy(s->span_id, req->try_span, sizeof s->span_id);
    memcpy(s->parent_id, req->trace_span, sizeof s->parent_id);
    s->status = req->attempt_counted ? (uint16_t)req->upstream_status : 0;
    /* A try whose 5xx head was counted (and then retried or fallen back
     * from) ends with code 0: its status says what went wrong. */
    if (!metrics_code && s->status >= 500)
        metrics_code = s->status;
    s->error = failure || s->status >= 500 || metrics_code < 0;
    s->retry = req->attempts > 1;
    s->attempt = (uint16_t)req->attempts;
    SPAN_CSTR(error_type, metrics_code < 0      ? metrics_upstream_failure_name(metrics_code)
                          : metrics_code >= 500 ? "http_5xx"
                                                : NULL);
    tracer_commit(pw->tracer, pw->w->index);
}

/* The server span: the whole request as the client saw it. */
static void trace_request_end(proxy_worker_t *pw, request_t *req, uint64_t end_us)
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
    s->attempt = (uint16_t)req->attempts;
    SPAN_CSTR(error_type, proxy_end_reason_name(req->end));
    tracer_commit(pw->tracer, pw->w->index);
}

#undef SPAN_STR
#undef SPAN_CSTR

/* ---------------------------------------------------------------- begin */

/* The first element of a comma-separated header value, trimmed; NULL if none. */
static const char *first_token(const char *v, size_t n, size_t *len)
{
    const char *end = v + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    const char *e = v;
    while (e < end && *e != ',' && *e != ' ' && *e != '\t')
        e++;
    *len = (size_t)(e - v);
    return *len ? v : NULL;
}

void proxy_request_bind(request_t *req, proxy_gen_t *gen) { req->gen = proxy_gen_ref(gen); }

void proxy_request_unbind(request_t *req)
{
    if (!req->gen)
        return;
    proxy_gen_t *g = req->gen;
    req->gen = NULL;
    proxy_gen_unref(g);
}

void proxy_request_begin(client_conn_t *cc, const http_head_t *h, size_t head_bytes)
{
    proxy_worker_t *pw = cc->pw;
    request_t *req = &cc->req;
    uint8_t body_done = req->body_done;
    proxy_request_unbind(req);
    memset(req, 0, offsetof(request_t, request_id));
    req->cc = cc;
    proxy_request_bind(req, pw->gen);
    req->body_done = body_done;
    req->bytes_in = head_bytes;
    req->group = req->target = UINT32_MAX;
    req->upstream_us = -1;
    req->start_us = now_us();
    req->start_unix_ns = time_now_realtime_ns();
    req->client_keep_alive = h->keep_alive;
    req->client_http10 = h->http_major == 1 && h->http_minor == 0;
    req->head_method = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
    req->idempotent = retry_method_idempotent(h->method, h->method_len);
    size_t n;
    copy_trunc(req->method, sizeof req->method, h->method, h->method_len, &n);
    req->method_len = (uint8_t)n;
    copy_trunc(req->path, sizeof req->path, h->target, h->target_len, &n);
    req->path_len = (uint16_t)n;
    req->has_head = 1;
    req->upstream_path_len = 0;
    req->client_ip_len = 0;
    const http_header_t *ua = http_header_find(h->headers, h->n_headers, "user-agent", 10);
    req->has_user_agent = ua != NULL;
    if (ua) {
        copy_trunc(req->user_agent, sizeof req->user_agent, ua->value, ua->value_len, &n);
        req->user_agent_len = (uint8_t)n;
    }
    const http_header_t *rid = http_header_find(h->headers, h->n_headers, "x-request-id", 12);
    if (rid && rewrite_request_id_sane(rid->value, rid->value_len)) {
        memcpy(req->request_id, rid->value, rid->value_len);
        req->request_id_len = (uint8_t)rid->value_len;
        req->request_id[rid->value_len] = '\0';
    } else {
        new_request_id(pw, req);
    }
    if (!req->body_done)
        cc->close_after = 0;
    trace_begin(pw, req, h, &req->gen->cfg->tracing);

    /* The target and the host. */
    router_request_t rr = {0};
    const char *authority;
    size_t authority_len;
    if (split_target(h->target, h->target_len, &rr, &authority, &authority_len) != 0) {
        cc->close_after = 1;
        proxy_send_error(req, 400, END_BAD_REQUEST, "invalid request target");
        return;
    }
    const http_header_t *host = NULL;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        if (http_header_name_is(h->headers[i].name, h->headers[i].name_len, "host", 4)) {
            if (host) {
                cc->close_after = 1;
                proxy_send_error(req, 400, END_BAD_REQUEST, "more than one Host header");
                return;
            }
            host = &h->headers[i];
        }
    }
    if (!host && !authority && !req->client_http10) {
        cc->close_after = 1;
        proxy_send_error(req, 400, END_BAD_REQUEST, "missing Host header");
        return;
    }
    rr.host = authority ? authority : host ? host->value : NULL;
    rr.host_len = authority ? authority_len : host ? host->value_len : 0;
    if ((rr.host || host) && !host_valid(rr.host, rr.host_len)) {
        cc->close_after = 1;
        proxy_send_error(req, 400, END_BAD_REQUEST, "invalid Host");
        return;
    }
    if (authority && host && !host_valid(host->value, host->value_len)) {
        cc->close_after = 1;
        proxy_send_error(req, 400, END_BAD_REQUEST, "invalid Host");
        return;
    }
    rr.method_bit = config_method_bit(h->method, h->method_len);
    rr.headers = h->headers;
    rr.n_headers = h->n_headers;

    /* The client's address, as the IP rules and the access log see it. */
    const char *ip;
    size_t ip_len;
    client_ip(cc, h, &ip, &ip_len);
    if (ip != cc->client_ip) {
        copy_trunc(req->client_ip, sizeof req->client_ip, ip, ip_len, &n);
        req->client_ip_len = (uint8_t)n;
    }

    /* The route. */
    router_match_t m;
    proxy_gen_t *g = req->gen;
    if (router_match(g->cfg, g->sets, pw->md, &rr, &m) != 0) {
        proxy_send_error(req, 404, END_NO_ROUTE, "no route matches the request");
        return;
    }
    const config_route_t *r = m.route;
    req->route = r;
    g->route_inflight[r->index]++; /* until proxy_request_log */
    metrics_route_in_flight(pw->metrics, g->metrics_route[r->index], +1);

    /* Policies. */
    if (!ip_rules_allow(r, ip, ip_len)) {
        proxy_send_error(req, 403, END_FORBIDDEN, "client address not allowed on this route");
        return;
    }
    if (h->has_content_length && h->content_length > g->cfg->server.max_body_bytes) {
        cc->close_after = 1;
        proxy_send_error(req, 413, END_BODY_TOO_LARGE, "request body too large");
        return;
    }

    /* An upgrade (contract 3.1): forwarded when the route allows its token. */
    if (h->upgrade) {
        cc->close_after = 1; /* a connection that asked to switch serves no more HTTP */
        const http_header_t *up = http_header_find(h->headers, h->n_headers, "upgrade", 7);
        size_t tl = 0;
        const char *tok = up ? first_token(up->value, up->value_len, &tl) : NULL;
        if (tok && r->n_upgrades == 0) {
            proxy_send_error(req, 400, END_BAD_REQUEST, "upgrades are not allowed on this route");
            return;
        }
        for (size_t i = 0; tok && i < r->n_upgrades; i++)
            if (strlen(r->upgrades[i]) == tl && strncasecmp(r->upgrades[i], tok, tl) == 0 &&
                tl < sizeof req->upgrade) {
                memcpy(req->upgrade, tok, tl);
                req->upgrade_len = (uint8_t)tl;
            }
    }

    /* The backend, and the head it gets. */
    size_t b = pick_backend(g, r, h, ip, ip_len);
    if (b == SIZE_MAX) {
        proxy_send_error(req, 503, END_NO_TARGET, "every backend of the route has weight 0");
        return;
    }
    req->backend = &r->backends[b];
    req->group = (uint32_t)req->backend->target_group;
    char *target = pw->scratch;
    long tlen = router_rewrite_target(r, req->backend, &rr, &m, target, pw->scratch_bytes);
    if (tlen >= 0 && pw->alog) {
        copy_trunc(req->upstream_path, sizeof req->upstream_path, target, (size_t)tlen, &n);
        req->upstream_path_len = (uint16_t)n;
    }
    req->out = pbuf_get(&pw->w->pool);
    if (tlen < 0 || !req->out) {
        proxy_send_error(req, tlen < 0 ? 414 : 500, END_INTERNAL,
                         tlen < 0 ? "rewritten request target too long" : "out of memory");
        return;
    }
    rewrite_request_t rw = {
        .head = h,
        .target = target,
        .target_len = (size_t)tlen,
        .host = authority,
        .host_len = authority_len,
        .peer_ip = cc->client_ip,
        .peer_ip_len = cc->client_ip_len,
        .peer_trusted = cc->peer_trusted,
        .proto = "http",
        .request_id = req->request_id,
        .request_id_len = req->request_id_len,
        .route = r,
        .upgrade = req->upgrade_len ? req->upgrade : NULL,
        .upgrade_len = req->upgrade_len,
    };
    rewrite_trace_t rt = {0};
    if (req->trace_export) {
        trace_headers(req, &g->cfg->tracing, &rt);
        rw.trace = &rt;
    }
    long hl = rewrite_request_head(&rw, req->out->data, req->out->cap);
    if (hl < 0) {
        cc->close_after = 1;
        proxy_send_error(req, 431, END_HEADER_TOO_LARGE, "request head too large to forward");
        return;
    }
    req->out->len = (uint32_t)hl;
    req->head_len = (uint32_t)hl;
    req->tp_off = rt.w3c ? rt.traceparent_off : 0;
    req->dd_off = rt.datadog ? rt.dd_parent_off : 0;
    if (req->backend->fallback != CONFIG_NONE) {
        /* The fallback backend's own rewrite, made now while the path is here. */
        const config_backend_t *fb = NULL;
        for (size_t i = 0; i < r->n_backends && !fb; i++)
            if (r->backends[i].target_group == req->backend->fallback)
                fb = &r->backends[i];
        req->alt = pbuf_get(&pw->w->pool);
        long alen = req->alt && fb
                        ? router_rewrite_target(r, fb, &rr, &m, req->alt->data, req->alt->cap)
                        : -1;
        if (alen < 0) {
            pbuf_put(&pw->w->pool, req->alt);
            req->alt = NULL;
        } else {
            req->alt->len = (uint32_t)alen;
        }
    }
    client_conn_arm_deadline(cc, r->timeout_ms);
    attempt(req);
}

/* Rewrites the request line of `out` for the fallback backend. */
static int switch_to_fallback(request_t *req)
{
    proxy_worker_t *pw = req->cc->pw;
    if (!req->alt)
        return FE_INVAL;
    const char *eol = memchr(req->out->data, '\n', req->head_len);
    pbuf_t *n = pbuf_get(&pw->w->pool);
    if (!eol || !n) {
        pbuf_put(&pw->w->pool, n);
        return FE_NOMEM;
    }
    size_t rest = req->out->len - (size_t)(eol + 1 - req->out->data);
    size_t line = req->method_len + 1 + req->alt->len + sizeof(" HTTP/1.1\r\n") - 1;
    if (line + rest > n->cap) {
        pbuf_put(&pw->w->pool, n);
        return FE_TOOBIG;
    }
    char *o = n->data;
    memcpy(o, req->method, req->method_len);
    o += req->method_len;
    *o++ = ' ';
    memcpy(o, req->alt->data, req->alt->len);
    o += req->alt->len;
    memcpy(o, " HTTP/1.1\r\n", 11);
    o += 11;
    memcpy(o, eol + 1, rest);
    size_t old_line = (size_t)(eol + 1 - req->out->data);
    req->head_len = (uint32_t)(req->head_len - old_line + line);
    if (req->tp_off) /* the trace headers moved with the rest of the head */
        req->tp_off = (uint32_t)(req->tp_off - old_line + line);
    if (req->dd_off)
        req->dd_off = (uint32_t)(req->dd_off - old_line + line);
    n->len = (uint32_t)(line + rest);
    pbuf_put(&pw->w->pool, req->out);
    req->out = n;
    if (pw->alog) {
        size_t k;
        copy_trunc(req->upstream_path, sizeof req->upstream_path, req->alt->data, req->alt->len,
                   &k);
        req->upstream_path_len = (uint16_t)k;
    }
    return 0;
}

/* -------------------------------------------------------------- attempt */

static void on_try_timer(uv_timer_t *t);

/* The group cannot take the request (no healthy target, circuit open): the
 * canary's fallback takes it if there is one, else 503. The request never
 * reached a target, so any method may go. */
static void unavailable(request_t *req, end_reason_t why, const char *message)
{
    if (req->backend && req->backend->fallback != CONFIG_NONE && !req->fallback && req->alt &&
        !req->resp_started && !req->body_streamed) {
        retry(req);
        return;
    }
    proxy_send_error(req, 503, why, message);
}

static void attempt(request_t *req)
{
    proxy_worker_t *pw = req->cc->pw;
    proxy_gen_t *g = req->gen;
    const config_target_group_t *tg = &g->cfg->target_groups[req->group];
    proxy_group_state_t *gs = &g->groups[req->group];
    health_group_t *hg = &g->health->groups[req->group];
    uint64_t now = uv_now(pw->loop);
    /* Usable targets not tried yet; if every usable one was tried, any usable. */
    size_t usable = 0, fresh = 0;
    for (size_t i = 0; i < tg->n_targets; i++) {
        uint8_t u = health_target_usable(&hg->targets[i], now);
        bool tried = i < 64 && (req->tried >> i) & 1;
        gs->eligible[i] = u && !tried;
        usable += u;
        fresh += gs->eligible[i];
    }
    if (health_group_panic(hg, usable)) {
        /* Too few healthy targets to trust the checks: spread over all the
         * resolved ones (not tried yet, where possible). */
        usable = fresh = 0;
        for (size_t i = 0; i < tg->n_targets; i++) {
            uint8_t u = atomic_load_explicit(&hg->targets[i].addr, memory_order_relaxed) != NULL;
            bool tried = i < 64 && (req->tried >> i) & 1;
            gs->eligible[i] = u && !tried;
            usable += u;
            fresh += gs->eligible[i];
        }
        if (!fresh)
            for (size_t i = 0; i < tg->n_targets; i++)
                gs->eligible[i] =
                    atomic_load_explicit(&hg->targets[i].addr, memory_order_relaxed) != NULL;
    } else if (!fresh && usable) {
        for (size_t i = 0; i < tg->n_targets; i++)
            gs->eligible[i] = health_target_usable(&hg->targets[i], now);
    }
    size_t t = usable ? balancer_pick_target(tg->balance, &gs->bal, gs->eligible, gs->inflight,
                                             tg->n_targets)
                      : SIZE_MAX;
    if (t == SIZE_MAX) {
        unavailable(req, END_NO_TARGET, "no healthy target");
        return;
    }
    if (!health_acquire(&hg->requests, tg->max_requests)) {
        metrics_circuit_breaker_rejection(pw->metrics, gs->metrics_group,
                                          METRICS_LIMIT_MAX_REQUESTS);
        unavailable(req, END_CIRCUIT_OPEN, "circuit breaker open: max_requests");
        return;
    }
    req->target = (uint32_t)t;
    if (t < 64)
        req->tried |= 1ull << t;
    req->in_attempt = 1;
    req->attempt_counted = 0;
    req->attempts++;
    req->upstream_start_us = now_us();
    req->out_sent = 0;
    if (req->trace_export)
        trace_try_begin(pw, req);
    gs->inflight[t]++;
    atomic_fetch_add_explicit(&hg->targets[t].inflight, 1, memory_order_relaxed);
    if (!gs->pools[t].idle) {
        /* A new connection: the request waits for it (max_pending). */
        if (!health_acquire(&hg->pending, tg->max_pending)) {
            metrics_circuit_breaker_rejection(pw->metrics, gs->metrics_group,
                                              METRICS_LIMIT_MAX_PENDING);
            end_attempt(req, 0, false, false);
            req->attempts--; /* no try was made */
            unavailable(req, END_CIRCUIT_OPEN, "circuit breaker open: max_pending");
            return;
        }
        req->holds_pending = 1;
    }
    const config_route_t *r = req->route;
    if (r->has_retries && r->retries.per_try_timeout_ms)
        uv_timer_start(&req->cc->try_timer, on_try_timer, r->retries.per_try_timeout_ms, 0);
    int err;
    upstream_conn_t *uc = upstream_acquire(pw, req->group, req->target, req, &err);
    if (!uc) {
        if (err == FE_TOOBIG) {
            metrics_circuit_breaker_rejection(pw->metrics, gs->metrics_group,
                                              METRICS_LIMIT_MAX_CONNECTIONS);
            end_attempt(req, 0, false, false);
            req->attempts--; /* no try was made */
            unavailable(req, END_CIRCUIT_OPEN, "circuit breaker open: max_connections");
            return;
        }
        fail_attempt(req, FAIL_CONNECT);
        return;
    }
    req->uc = uc;
    req->phase = REQ_CONNECTING;
    if (uc->connected)
        proxy_upstream_connected(req, 0);
}

static void on_try_timer(uv_timer_t *t)
{
    client_conn_t *cc = t->data;
    request_t *req = &cc->req;
    if (req->phase == REQ_BACKOFF) {
        attempt(req);
        return;
    }
    if (req->phase == REQ_CONNECTING || req->phase == REQ_SENT)
        fail_attempt(req, FAIL_TIMEOUT);
}

/* ----------------------------------------------------------------- send */

/* Writes what of `out` the upstream has not had yet. */
static int send_buffered(request_t *req)
{
    if (req->out_sent >= req->out->len)
        return 0;
    uv_buf_t b = uv_buf_init(req->out->data + req->out_sent, req->out->len - req->out_sent);
    req->out_sent = req->out->len;
    return upstream_write(req->uc, &b, 1);
}

void proxy_upstream_connected(request_t *req, int status)
{
    if (req->holds_pending) {
        req->holds_pending = 0;
        health_release(&req->gen->health->groups[req->group].pending);
    }
    if (status < 0) {
        req->uc = NULL; /* upstream.c closed it */
        fail_attempt(req, FAIL_CONNECT);
        return;
    }
    req->phase = REQ_SENT;
    http_parser_expect_no_body(&req->uc->parser, req->head_method);
    int rc = send_buffered(req);
    if (rc < 0) {
        fail_attempt(req, FAIL_RESET);
        return;
    }
    if (rc == 0 && !req->body_done)
        client_conn_resume(req->cc);
}

size_t proxy_body_room(request_t *req)
{
    if (req->phase == REQ_DONE || req->phase == REQ_NONE)
        return SIZE_MAX; /* answered already: the rest is read and dropped */
    if (!req->body_streamed) {
        /* Keep the body for a resend while it is within retry_buffer_size. */
        size_t kept = req->out->len - req->head_len;
        size_t limit = req->gen->cfg->server.retry_buffer_bytes;
        size_t room = pbuf_room(req->out);
        size_t can = kept < limit ? (room < limit - kept ? room : limit - kept) : 0;
        /* Less than a re-framed chunk step needs is no room: stream instead. */
        if (can >= CHUNKED_OUT_SLACK)
            return can;
    }
    bool writable = req->uc && req->phase >= REQ_SENT && req->out_sent == req->out->len &&
                    !stream_write_pending(&req->uc->s);
    return writable ? SIZE_MAX : 0;
}

void proxy_request_body(request_t *req, const char *data, size_t len, bool end)
{
    (void)end;
    if (req->phase == REQ_DONE || req->phase == REQ_NONE || len == 0)
        return;
    int rc = 0;
    if (!req->body_streamed && len <= pbuf_room(req->out) &&
        req->out->len - req->head_len + len <= req->gen->cfg->server.retry_buffer_bytes) {
        /* Kept in `out` so the request can be sent again on a fresh connection. */
        memcpy(pbuf_tail(req->out), data, len);
        req->out->len += (uint32_t)len;
        if (req->phase >= REQ_SENT)
            rc = send_buffered(req);
    } else {
        if (!req->uc || req->phase < REQ_SENT)
            return; /* cannot happen: proxy_body_room said 0 */
        req->body_streamed = 1;
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        rc = upstream_write(req->uc, &b, 1);
    }
    if (rc < 0) {
        fail_attempt(req, FAIL_RESET);
        return;
    }
    if (rc == 1)
        client_conn_pause(req->cc); /* until the upstream drains */
}

void proxy_upstream_drained(request_t *req, int status)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_upstream_drained(req, status);
        return;
    }
    if (status < 0) {
        if (req->resp_started)
            proxy_client_gone(req, END_UPSTREAM_RESET);
        else
            fail_attempt(req, FAIL_RESET);
        return;
    }
    if (!req->body_done && req->phase != REQ_DONE)
        client_conn_resume(req->cc);
}

/* ------------------------------------------------------------- response */

/* A 101 to the upgrade the request asked for: the 101 (and whatever the
 * upstream sent after it) goes to the client and the tunnel begins. A 101
 * nobody asked for, or to another protocol, is an invalid response: 502. */
static void start_tunnel(request_t *req, const http_head_t *h, const char *rest, size_t rest_len)
{
    proxy_worker_t *pw = req->cc->pw;
    const http_header_t *up = http_header_find(h->headers, h->n_headers, "upgrade", 7);
    size_t tl = 0;
    const char *tok = up ? first_token(up->value, up->value_len, &tl) : NULL;
    if (!req->upgrade_len || !tok || tl != req->upgrade_len ||
        strncasecmp(tok, req->upgrade, tl) != 0) {
        fail_attempt(req, FAIL_SWITCH);
        return;
    }
    uv_timer_stop(&req->cc->try_timer);
    req->upstream_us = (int64_t)(now_us() - req->upstream_start_us);
    metrics_upstream(pw->metrics, req->gen->groups[req->group].metrics_group,
                     req->gen->groups[req->group].metrics_target[req->target], 101,
                     (uint64_t)req->upstream_us);
    req->attempt_counted = 1;
    req->upstream_status = req->status = 101;
    rewrite_response_t rw = {
        .head = h,
        .request_id = req->request_id,
        .request_id_len = req->request_id_len,
        .keep_alive = true,
        .upgrade = req->upgrade,
        .upgrade_len = req->upgrade_len,
    };
    long hl = rewrite_response_head(&rw, pw->scratch, pw->scratch_bytes);
    if (hl < 0) {
        fail_attempt(req, FAIL_INVALID);
        return;
    }
    uv_buf_t iov[2] = {uv_buf_init(pw->scratch, (unsigned)hl),
                       uv_buf_init((char *)rest, (unsigned)rest_len)};
    req->resp_started = 1;
    int rc = client_conn_write(req->cc, iov, rest_len ? 2 : 1);
    if (rc < 0) {
        proxy_client_gone(req, END_CLIENT_CLOSED);
        return;
    }
    if (rc == 1)
        upstream_pause(req->uc);
    tunnel_start(req);
}

void proxy_tunnel_end(request_t *req, end_reason_t why)
{
    proxy_worker_t *pw = req->cc->pw;
    metrics_tunnel(pw->metrics, req->gen->metrics_route[req->route->index], -1);
    req->phase = REQ_DONE;
    req->end = why;
    end_attempt(req, 0, false, false);
    proxy_request_log(req);
    pbuf_put(&pw->w->pool, req->out);
    req->out = NULL;
    client_conn_abort(req->cc);
}

/* Relays response bytes: the rewritten head first (once), then the body as
 * it came (or decoded, for an HTTP/1.0 client of a chunked response). */
static void relay(request_t *req, const char *data, size_t len)
{
    proxy_worker_t *pw = req->cc->pw;
    upstream_conn_t *uc = req->uc;
    uv_buf_t iov[2];
    unsigned n = 0;
    int ev = 0;
    while (req->phase == REQ_SENT) {
        long k = http_parser_feed(&uc->parser, &pw->head, data, len, &ev);
        if (k < 0) {
            fail_attempt(req, FAIL_INVALID);
            return;
        }
        if (!(ev & HTTP_EV_HEAD)) {
            /* Partial head: keep it whole in the connection's buffer. */
            if (!uc->in && !(uc->in = pbuf_get(&pw->w->pool))) {
                fail_attempt(req, FAIL_INVALID);
                return;
            }
            if (data != pbuf_head(uc->in)) {
                if (pbuf_room(uc->in) < len) {
                    fail_attempt(req, FAIL_INVALID);
                    return;
                }
                memcpy(pbuf_tail(uc->in), data, len);
                uc->in->len += (uint32_t)len;
            }
            http_parser_init_response(&uc->parser);
            http_parser_expect_no_body(&uc->parser, req->head_method);
            return;
        }
        const http_head_t *h = &pw->head;
        if ((size_t)k > req->gen->cfg->server.max_header_bytes) {
            /* Response heads are held to max_header_size too (as HAProxy's bufsize). */
            fail_attempt(req, FAIL_INVALID);
            return;
        }
        data += k;
        len -= (size_t)k;
        if (h->status == 101) {
            start_tunnel(req, h, data, len);
            return;
        }
        if (h->status < 100) {
            fail_attempt(req, FAIL_INVALID);
            return;
        }
        if (h->status < 200) {
            /* Interim (100 Continue, 103): pass it on, wait for the final one. */
            char line[64];
            int ll = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n\r\n", h->status,
                              http_status_reason(h->status));
            uv_buf_t b = uv_buf_init(line, (unsigned)ll);
            if (client_conn_write(req->cc, &b, 1) < 0) {
                proxy_client_gone(req, END_CLIENT_CLOSED);
                return;
            }
            int ev2;
            http_parser_feed(&uc->parser, &pw->head, data, 0, &ev2); /* ends the 1xx */
            continue;
        }
        uv_timer_stop(&req->cc->try_timer);
        req->upstream_us = (int64_t)(now_us() - req->upstream_start_us);
        metrics_upstream(pw->metrics, req->gen->groups[req->group].metrics_group,
                         req->gen->groups[req->group].metrics_target[req->target], h->status,
                         (uint64_t)req->upstream_us);
        req->attempt_counted = 1;
        if (try_again(req, RETRY_OUTCOME_STATUS, h->status)) {
            /* Not relayed: the connection goes, with the body nobody reads. */
            req->upstream_status = h->status;
            end_attempt(req, 0, false, h->status >= 500);
            retry(req);
            return;
        }
        req->upstream_status = h->status;
        req->status = h->status;
        bool bodyless = req->head_method || h->status == 204 || h->status == 304;
        if (h->chunked && !bodyless)
            req->resp_body = req->client_http10 ? REWRITE_BODY_DECHUNK : REWRITE_BODY_AS_IS;
        else if (h->has_content_length || bodyless)
            req->resp_body = REWRITE_BODY_AS_IS;
        else
            req->resp_body = REWRITE_BODY_UNTIL_CLOSE;
        req->upstream_reusable = h->keep_alive;
        bool keep = req->client_keep_alive && req->body_done && !req->cc->close_after &&
                    req->resp_body == REWRITE_BODY_AS_IS && !pw->draining;
        if (!keep)
            req->cc->close_after = 1;
        rewrite_response_t rw = {
            .head = h,
            .request_id = req->request_id,
            .request_id_len = req->request_id_len,
            .keep_alive = keep,
            .client_http10 = req->client_http10,
            .body = (rewrite_body_t)req->resp_body,
        };
        long hl = rewrite_response_head(&rw, pw->scratch, pw->scratch_bytes);
        if (hl < 0) {
            fail_attempt(req, FAIL_INVALID);
            return;
        }
        iov[n++] = uv_buf_init(pw->scratch, (unsigned)hl);
        req->phase = REQ_RESPONDING;
        req->resp_started = 1;
        if (h->chunked && !bodyless) {
            /* Chunked again as ficus frames it, or decoded for HTTP/1.0. */
            http_parser_set_sink(&uc->parser, pw->scratch + hl, pw->scratch_bytes - (size_t)hl);
            http_parser_set_reframe(&uc->parser, req->resp_body != REWRITE_BODY_DECHUNK);
        } else {
            http_parser_set_sink(&uc->parser, NULL, 0);
        }
    }
    if (req->phase != REQ_RESPONDING)
        return;
    long k = 0;
    if (!(ev & HTTP_EV_END)) { /* a bodyless response ended with its head */
        ev = 0;
        k = http_parser_feed(&uc->parser, &pw->head, data, len, &ev);
    }
    if (k < 0) {
        if (n > 0) {
            /* The head is still unsent: the client can get a clean 502. */
            req->resp_started = 0;
            req->phase = REQ_SENT;
            req->status = 0;
            fail_attempt(req, FAIL_INVALID);
            return;
        }
        /* The body broke its own framing mid-way: the client cannot be told
         * cleanly; the connection is cut. */
        req->end = END_UPSTREAM_INVALID;
        proxy_client_gone(req, END_UPSTREAM_INVALID);
        return;
    }
    if (uc->parser.sink) {
        if (uc->parser.sink_len)
            iov[n++] = uv_buf_init(uc->parser.sink, (unsigned)uc->parser.sink_len);
        uc->parser.sink_len = 0;
        if (!(ev & HTTP_EV_END) && (size_t)k < len) {
            /* The sink holds a read's worth: cannot happen; never drop bytes. */
            req->end = END_UPSTREAM_INVALID;
            proxy_client_gone(req, END_UPSTREAM_INVALID);
            return;
        }
    } else if (k > 0) {
        iov[n++] = uv_buf_init((char *)data, (unsigned)k);
    }
    if ((size_t)k < len)
        req->upstream_reusable = 0; /* bytes after the response: do not trust the connection */
    pbuf_t *held = NULL;
    if (ev & HTTP_EV_END) {
        /* The upstream connection goes back before the client can see the
         * end of the response: the client's next request, maybe on another
         * worker, must find it (and its breaker slot) free. */
        held = uc->in; /* data may point into it: kept until written */
        uc->in = NULL;
        bool reusable = req->upstream_reusable && req->body_done && !stream_write_pending(&uc->s);
        end_attempt(req, 0, reusable, req->upstream_status >= 500);
    }
    int rc = n ? client_conn_write(req->cc, iov, n) : 0;
    pbuf_put(&pw->w->pool, held);
    if (rc < 0) {
        proxy_client_gone(req, END_CLIENT_CLOSED);
        return;
    }
    if (ev & HTTP_EV_END) {
        finish(req);
        return;
    }
    if (rc == 1)
        upstream_pause(uc); /* until the client drains */
}

void proxy_upstream_data(request_t *req, const char *data, size_t len)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_upstream_data(req, data, len);
        return;
    }
    upstream_conn_t *uc = req->uc;
    if (req->phase == REQ_SENT && uc->in) {
        /* The rest of a head that came in pieces. */
        if (pbuf_room(uc->in) < len) {
            fail_attempt(req, FAIL_INVALID);
            return;
        }
        memcpy(pbuf_tail(uc->in), data, len);
        uc->in->len += (uint32_t)len;
        if (!http_head_end(pbuf_head(uc->in), uc->in->len, 0))
            return;
        data = pbuf_head(uc->in);
        len = uc->in->len;
    }
    relay(req, data, len);
    /* The head buffer is not needed once the head is through. */
    if (req->uc == uc && uc->in && req->phase != REQ_SENT) {
        pbuf_put(&req->cc->pw->w->pool, uc->in);
        uc->in = NULL;
    }
}

void proxy_upstream_eof(request_t *req, int status)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_upstream_eof(req, status);
        return;
    }
    upstream_conn_t *uc = req->uc;
    if (req->phase == REQ_RESPONDING && req->resp_body == REWRITE_BODY_UNTIL_CLOSE &&
        http_parser_finish(&uc->parser) == 0) {
        req->upstream_reusable = 0;
        finish(req); /* a close-delimited body ends here */
        return;
    }
    if (req->resp_started) {
        req->end = END_UPSTREAM_RESET;
        proxy_client_gone(req, END_UPSTREAM_RESET);
        return;
    }
    (void)status;
    fail_attempt(req, FAIL_RESET);
}

void proxy_client_drained(request_t *req)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_client_drained(req);
        return;
    }
    if (req->phase == REQ_RESPONDING && req->uc)
        upstream_resume(req->uc);
}

/* ------------------------------------------------------------- failures */

/* Ends the current try: counts it, records it for outlier detection, gives
 * back its breaker units, and returns or closes its connection. */
static void end_attempt(request_t *req, int metrics_code, bool reusable, bool failure)
{
    proxy_worker_t *pw = req->cc->pw;
    if (!req->in_attempt)
        return;
    req->in_attempt = 0;
    uv_timer_stop(&req->cc->try_timer);
    if (req->trace_sampled)
        trace_try_end(pw, req, metrics_code, failure);
    proxy_group_state_t *gs = &req->gen->groups[req->group];
    health_group_t *hg = &req->gen->health->groups[req->group];
    gs->inflight[req->target]--;
    atomic_fetch_sub_explicit(&hg->targets[req->target].inflight, 1, memory_order_relaxed);
    health_release(&hg->requests);
    if (req->holds_pending) {
        req->holds_pending = 0;
        health_release(&hg->pending);
    }
    /* One sample per try: a try whose status was counted at its head is not
     * counted again when its body turns out broken. */
    if (metrics_code && !req->attempt_counted)
        metrics_upstream(pw->metrics, gs->metrics_group, gs->metrics_target[req->target],
                         metrics_code, now_us() - req->upstream_start_us);
    if (health_record(hg, req->target, failure, uv_now(pw->loop)))
        metrics_outlier_ejection(pw->registry, gs->metrics_group, gs->metrics_target[req->target]);
    if (req->uc) {
        upstream_conn_t *uc = req->uc;
        req->uc = NULL;
        if (uc->in) {
            pbuf_put(&pw->w->pool, uc->in);
            uc->in = NULL;
        }
        upstream_release(uc, reusable);
    }
}

/* May this request be tried again after outcome o? Retries and the canary
 * fallback share the rules: nothing after a response byte reached the client,
 * nothing whose body was not kept, the idempotency gate, retry_on (or, with no
 * retries block, connect failure / reset / timeout / 5xx for a fallback), the
 * number of tries, and the route's budget. */
static bool try_again(request_t *req, retry_outcome_t o, int status)
{
    const config_route_t *r = req->route;
    proxy_worker_t *pw = req->cc->pw;
    if (!r || req->resp_started || req->body_streamed || pw->stopping)
        return false;
    const config_retries_t *rt = r->has_retries ? &r->retries : NULL;
    bool fb = req->backend->fallback != CONFIG_NONE && !req->fallback && req->alt;
    if (!rt && !fb)
        return false;
    if (!retry_resend_allowed(req->idempotent, r->retry_non_idempotent, o))
        return false;
    if (!retry_qualifies(rt, o, status))
        return false;
    /* A fallback is a retry pinned to the fallback group; it is always
     * allowed one try, even where retries are off (attempts: 0). */
    uint32_t allowed = rt ? rt->attempts : 0;
    if (fb && allowed == 0)
        allowed = 1;
    if (req->retries >= allowed)
        return false;
    /* The budget caps retries, not the fallback: the canary's failure must
     * still reach the old system when many fail at once. */
    if (!fb && rt && !req->retry_counted &&
        !retry_budget_allows(req->gen->route_retries[r->index], req->gen->route_inflight[r->index],
                             rt->budget_percent))
        return false;
    return true;
}

/* Sends the request again: to the fallback group when the backend has one
 * (at once, and every later try too), else to the same group after a
 * full-jitter backoff, preferring a target not tried yet. */
static void retry(request_t *req)
{
    proxy_worker_t *pw = req->cc->pw;
    proxy_gen_t *g = req->gen;
    const config_route_t *r = req->route;
    uint32_t from = req->group;
    req->retries++;
    if (!req->retry_counted) {
        req->retry_counted = 1;
        g->route_retries[r->index]++;
    }
    bool to_fallback = req->backend->fallback != CONFIG_NONE && !req->fallback;
    if (to_fallback) {
        if (switch_to_fallback(req) != 0) {
            proxy_send_error(req, 502, END_UPSTREAM_RESET, "fallback request too large");
            return;
        }
        req->fallback = 1;
        req->group = (uint32_t)req->backend->fallback;
        req->tried = 0;
        metrics_fallback(pw->metrics, g->metrics_route[r->index], g->groups[from].metrics_group,
                         g->groups[req->group].metrics_group);
    }
    metrics_retry(pw->metrics, g->metrics_route[r->index], g->groups[req->group].metrics_group);
    uint64_t delay = 0;
    if (!to_fallback && r->has_retries)
        delay = retry_backoff_ms(r->retries.backoff_ms, req->retries, &pw->rng);
    if (delay == 0) {
        attempt(req);
        return;
    }
    req->phase = REQ_BACKOFF;
    uv_timer_start(&req->cc->try_timer, on_try_timer, delay, 0);
}

/* The one place that decides what a failed try becomes: sent again on a
 * fresh connection (a pooled one the target had closed), retried, sent to the
 * fallback group, or answered with 502/504. */
static void fail_attempt(request_t *req, fail_t why)
{
    bool was_reused = req->uc && req->uc->reused && req->uc->connected;
    static const int codes[] = {METRICS_UPSTREAM_CONNECT_ERROR, METRICS_UPSTREAM_RESET,
                                METRICS_UPSTREAM_TIMEOUT, 502, 502};
    static const retry_outcome_t outcomes[] = {RETRY_OUTCOME_CONNECT_FAILURE, RETRY_OUTCOME_RESET,
                                               RETRY_OUTCOME_TIMEOUT, RETRY_OUTCOME_RESET,
                                               RETRY_OUTCOME_RESET};
    /* A stale pooled connection says nothing about the target's health. */
    bool stale = why == FAIL_RESET && was_reused && !req->body_streamed;
    end_attempt(req, codes[why], false, !stale);
    if (req->resp_started) {
        proxy_client_gone(req, END_UPSTREAM_RESET);
        return;
    }
    /* The request never reached the target: sending it again on a fresh
     * connection is safe, and is not a retry. */
    if (stale && req->attempts < STALE_CONNECTION_TRIES + req->retries) {
        attempt(req);
        return;
    }
    if (try_again(req, outcomes[why], 0)) {
        retry(req);
        return;
    }
    switch (why) {
    case FAIL_CONNECT:
        proxy_send_error(req, 502, END_UPSTREAM_CONNECT_FAILURE, "upstream connect failure");
        break;
    case FAIL_RESET:
        proxy_send_error(req, 502, END_UPSTREAM_RESET,
                         "upstream closed the connection before responding");
        break;
    case FAIL_TIMEOUT:
        proxy_send_error(req, 504, END_UPSTREAM_TIMEOUT, "upstream timeout");
        break;
    case FAIL_INVALID:
        proxy_send_error(req, 502, END_UPSTREAM_INVALID, "invalid upstream response");
        break;
    case FAIL_SWITCH:
        proxy_send_error(req, 502, END_UPSTREAM_INVALID,
                         req->upgrade_len ? "upstream switched to another protocol than the "
                                            "request asked for (101 Switching Protocols)"
                                          : "upstream answered 101 Switching Protocols to a "
                                            "request that asked for no upgrade");
        break;
    }
}

void proxy_request_timeout(request_t *req)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_timeout(req);
        return;
    }
    if (req->resp_started) {
        req->end = END_UPSTREAM_TIMEOUT;
        proxy_client_gone(req, END_UPSTREAM_TIMEOUT);
        return;
    }
    end_attempt(req, METRICS_UPSTREAM_TIMEOUT, false, true);
    req->cc->close_after |= !req->body_done;
    proxy_send_error(req, 504, END_UPSTREAM_TIMEOUT, "upstream timeout");
}

void proxy_client_gone(request_t *req, end_reason_t why)
{
    client_conn_t *cc = req->cc;
    if (req->phase == REQ_TUNNEL) {
        proxy_tunnel_end(req, why);
        return;
    }
    if (!req->resp_started && (why == END_BAD_REQUEST || why == END_BODY_TOO_LARGE)) {
        end_attempt(req, 0, false, false);
        cc->close_after = 1;
        proxy_send_error(req, why == END_BAD_REQUEST ? 400 : 413, why,
                         why == END_BAD_REQUEST ? http_parser_error_reason(&cc->parser)
                                                : "request body too large");
        return;
    }
    end_attempt(req, 0, false, false);
    if (!req->end)
        req->end = why;
    if (!req->resp_started)
        req->status = why == END_CLIENT_CLOSED ? 499 : 502;
    if (req->phase != REQ_DONE)
        proxy_request_log(req);
    if (req->out) {
        pbuf_put(&cc->pw->w->pool, req->out);
        req->out = NULL;
    }
    client_conn_abort(cc);
}

/* --------------------------------------------------------------- answer */

void proxy_send_error(request_t *req, int status, end_reason_t why, const char *message)
{
    client_conn_t *cc = req->cc;
    proxy_worker_t *pw = cc->pw;
    end_attempt(req, 0, false, false);
    if (!req->body_done || !req->client_keep_alive)
        cc->close_after = 1;
    http_error_t e = {
        .status = status,
        .message = message,
        .request_id = req->request_id,
        .request_id_len = req->request_id_len,
        .close = cc->close_after || pw->draining,
        .head_only = req->head_method,
        .retry_after_s = status == 429 ? 1 : 0,
    };
    if (req->request_id_len == 0)
        new_request_id(pw, req);
    e.request_id = req->request_id;
    e.request_id_len = req->request_id_len;
    size_t n = http_error_format(&e, pw->scratch, pw->scratch_bytes);
    req->status = status;
    req->end = why;
    req->resp_started = 1;
    uv_buf_t b = uv_buf_init(pw->scratch, (unsigned)n);
    if (client_conn_write(cc, &b, 1) < 0) {
        req->status = 499;
        req->end = END_CLIENT_CLOSED;
        proxy_request_log(req);
        client_conn_abort(cc);
        return;
    }
    proxy_request_log(req);
    if (req->out) {
        pbuf_put(&pw->w->pool, req->out);
        req->out = NULL;
    }
    client_conn_response_done(cc);
}

/* --------------------------------------------------------------- finish */

static void finish(request_t *req)
{
    client_conn_t *cc = req->cc;
    proxy_worker_t *pw = cc->pw;
    bool reusable =
        req->upstream_reusable && req->body_done && req->uc && !stream_write_pending(&req->uc->s);
    end_attempt(req, 0, reusable, req->upstream_status >= 500);
    proxy_request_log(req);
    if (req->out) {
        pbuf_put(&pw->w->pool, req->out);
        req->out = NULL;
    }
    client_conn_response_done(cc);
}

void proxy_request_log(request_t *req)
{
    client_conn_t *cc = req->cc;
    proxy_worker_t *pw = cc->pw;
    uint64_t dur = now_us() - req->start_us;
    const config_route_t *r = req->route;
    /* The request is over: its share of the retry budget and its buffers go. */
    uv_timer_stop(&cc->try_timer);
    proxy_gen_t *g = req->gen;
    if (r) {
        g->route_inflight[r->index]--;
        metrics_route_in_flight(pw->metrics, g->metrics_route[r->index], -1);
        if (req->retry_counted)
            g->route_retries[r->index]--;
        req->retry_counted = 0;
    }
    pbuf_put(&pw->w->pool, req->alt);
    req->alt = NULL;
    metrics_request(pw->metrics, r ? g->metrics_route[r->index] : METRICS_NO_ROUTE, req->status,
                    dur);
    if (req->trace_sampled)
        trace_request_end(pw, req, req->start_us + dur);
    if (!pw->alog)
        return;
    const config_target_group_t *tg =
        req->group != UINT32_MAX ? &g->cfg->target_groups[req->group] : NULL;
    const config_target_t *t = tg && req->target != UINT32_MAX ? &tg->targets[req->target] : NULL;
    char trace_hex_id[32];
    if (req->has_trace)
        trace_hex(trace_hex_id, req->trace_id, sizeof req->trace_id);
#define S(p, n) ((access_log_str_t){(p), (n)})
#define SZ(p) ((p) ? S((p), strlen(p)) : S(NULL, 0))
    access_log_entry_t e = {
        .time_ms = req->start_unix_ns / 1000000,
        .request_id = S(req->request_id, req->request_id_len),
        .trace_id = req->has_trace ? S(trace_hex_id, sizeof trace_hex_id) : S(NULL, 0),
        .client_ip = req->has_head && req->client_ip_len ? S(req->client_ip, req->client_ip_len)
                                                         : S(cc->client_ip, cc->client_ip_len),
        .client_id = S(NULL, 0),
        .method = req->has_head ? S(req->method, req->method_len) : S(NULL, 0),
        .path = req->has_head ? S(req->path, req->path_len) : S(NULL, 0),
        .route = r ? SZ(r->name) : S(NULL, 0),
        .target_group = tg ? SZ(tg->name) : S(NULL, 0),
        .target = t ? SZ(t->name) : S(NULL, 0),
        .status = req->status,
        .upstream_status = req->upstream_status,
        .attempts = req->attempts,
        .fallback = req->fallback,
        .duration_us = dur,
        .upstream_us = req->upstream_us,
        .bytes_in = req->bytes_in,
        .bytes_out = req->bytes_out,
        .user_agent = req->has_user_agent ? S(req->user_agent, req->user_agent_len) : S(NULL, 0),
        .error = proxy_end_reason_name(req->end),
        .upstream_path =
            req->upstream_path_len ? S(req->upstream_path, req->upstream_path_len) : S(NULL, 0),
        .protocol = !req->has_head       ? S(NULL, 0)
                    : req->client_http10 ? S("HTTP/1.0", 8)
                                         : S("HTTP/1.1", 8),
        .config = g->id,
    };
#undef S
#undef SZ
    access_log_append(pw->alog, &e);
}
