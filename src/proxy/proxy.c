/* One request, from its head to its log line. Top to bottom:
 *   on_request:  head checks -> route -> admission steps (which may make it
 *                wait) -> backend -> upstream head
 *   try_next:    an exchange to the request's group; after a delay with no
 *                response head, a hedge races it (hedge_start: the first
 *                head wins, race_over keeps the try that goes on)
 *   send / body: head and body upstream, buffered while connecting
 *   response:    head rewritten, body relayed with backpressure
 *   try_failed / act: an ended try goes through decide(), and its verdict
 *                (resend, retry, fallback, answer, cut) is carried out here
 *   answer:      ficus's own error, or the end of a relayed response; log */
#include "proxy/proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/hash.h"
#include "core/time.h"
#include "http/deadline.h"
#include "http/method.h"
#include "http/response.h"
#include "net/tls.h"
#include "policy/hedge.h"
#include "policy/retry.h"
#include "proxy/admission.h"
#include "proxy/aggregate.h"
#include "proxy/decide.h"
#include "proxy/exchange.h"
#include "proxy/h2_server.h"
#include "proxy/request_trace.h"
#include "proxy/shadow.h"
#include "proxy/rewrite.h"
#include "proxy/tunnel.h"

/* A client connection and the request slot it reuses; or, on an HTTP/2
 * connection, the connection (h2 set, its slot unused) and each stream
 * (is_stream: carried by it, one request). */
typedef struct proxy_conn {
    client_conn_t cc; /* first: client_conn callbacks cast back */
    request_t req;
    uint32_t listener; /* the configured listener it came in on */
    h2_server_t *h2;   /* the connection speaks HTTP/2 */
    uint8_t is_stream; /* an HTTP/2 stream's request */
} proxy_conn_t;

static inline h2_server_t *h2_of(client_conn_t *cc) { return ((proxy_conn_t *)cc)->h2; }

static inline request_t *req_of(client_conn_t *cc) { return &((proxy_conn_t *)cc)->req; }

static void try_next(request_t *req);
static void try_failed(request_t *req, end_reason_t why, const char *message);
static void act(request_t *req, decision_t d, end_reason_t why, const char *message);
static void answer_error(request_t *req, end_reason_t why, const char *message);
static void client_gone(request_t *req, end_reason_t why);
static void finish(request_t *req);
static void end_tries(request_t *req, int try_code, bool failure);
static const upstream_conn_ops_t exchange_ops;

static void copy_trunc(char *dst, size_t cap, const char *src, size_t n, size_t *out_len)
{
    if (n > cap)
        n = cap;
    memcpy(dst, src, n);
    *out_len = n;
}

/* ---------------------------------------------------------- head checks */

/* The client's address for policies and logs: the peer, or, when the peer is
 * a trusted proxy, the rightmost X-Forwarded-For entry that is not trusted. */
static void client_ip(const request_t *req, const http_head_t *h, const char **ip, size_t *len)
{
    const client_conn_t *cc = req->cc;
    *ip = cc->client_ip;
    *len = cc->client_ip_len;
    if (!req->peer_trusted)
        return;
    const http_header_t *xff = http_header_find(h->headers, h->n_headers, "x-forwarded-for", 15);
    if (!xff)
        return;
    const config_server_t *srv = &req->gen->cfg->server;
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
        return balancer_hash_pick(weights, r->n_backends, hash_bytes(key, key_len));
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

/* An authority as RFC 3986 3.2 has it, without userinfo: a reg-name or a
 * bracketed IP literal, then an optional ":" and a port of at most five
 * digits. Anything else in Host or an absolute-form target is a 400: a
 * backend must not read a host ficus did not. */
static bool host_valid(const char *h, size_t n)
{
    if (n == 0 || n > 255)
        return false;
    size_t i = 0;
    if (h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (!close || close == h + 1)
            return false;
        for (const char *p = h + 1; p < close; p++)
            if (!isalnum((unsigned char)*p) && !strchr(":._~%-", *p))
                return false;
        i = (size_t)(close - h) + 1;
    } else {
        for (; i < n && h[i] != ':'; i++) {
            unsigned char c = (unsigned char)h[i];
            if (!isalnum(c) && !strchr("-._~!$&'()*+,;=%", c))
                return false;
        }
        if (i == 0)
            return false;
    }
    if (i == n)
        return true;
    if (h[i] != ':' || n - i - 1 > 5)
        return false;
    unsigned port = 0;
    for (i++; i < n; i++) {
        if (!isdigit((unsigned char)h[i]))
            return false;
        port = port * 10 + (unsigned)(h[i] - '0');
    }
    return port <= 65535;
}

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

/* What routing made of a head: the target split, the host, the match. */
typedef struct routed {
    router_request_t rr;
    router_match_t m;
    const char *authority; /* of an absolute-form target */
    size_t authority_len;
    const char *ip; /* the client's address (the peer's, or from X-Forwarded-For) */
    size_t ip_len;
} routed_t;

/* Target, Host and route of a head: END_OK with rt filled, else why not
 * (END_BAD_REQUEST with *message, END_NO_ROUTE). Has no side effects, so a
 * request resumed after admission routes its kept head again. */
static end_reason_t route_head(request_t *req, const http_head_t *h, routed_t *rt,
                               const char **message)
{
    memset(&rt->rr, 0, sizeof rt->rr);
    if (split_target(h->target, h->target_len, &rt->rr, &rt->authority, &rt->authority_len) != 0) {
        *message = "invalid request target";
        return END_BAD_REQUEST;
    }
    const http_header_t *host = NULL;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        if (http_header_name_is(h->headers[i].name, h->headers[i].name_len, "host", 4)) {
            if (host) {
                *message = "more than one Host header";
                return END_BAD_REQUEST;
            }
            host = &h->headers[i];
        }
    }
    if (!host && !rt->authority && !req->client_http10) {
        *message = "missing Host header";
        return END_BAD_REQUEST;
    }
    router_request_t *rr = &rt->rr;
    rr->host = rt->authority ? rt->authority : host ? host->value : NULL;
    rr->host_len = rt->authority ? rt->authority_len : host ? host->value_len : 0;
    if (((rr->host || host) && !host_valid(rr->host, rr->host_len)) ||
        (rt->authority && host && !host_valid(host->value, host->value_len))) {
        *message = "invalid Host";
        return END_BAD_REQUEST;
    }
    rr->method_bit = 1u << req->method_id;
    rr->headers = h->headers;
    rr->n_headers = h->n_headers;
    client_ip(req, h, &rt->ip, &rt->ip_len);
    proxy_gen_t *g = req->gen;
    if (router_match(g->cfg, g->sets, req->pw->md, rr, &rt->m) != 0)
        return END_NO_ROUTE;
    return END_OK;
}

/* Keeps what the log and the spans need of the head. */
static void note_head(request_t *req, const http_head_t *h)
{
    size_t n;
    req->client_http10 = h->http_major == 1 && h->http_minor == 0;
    http_method_t method = http_method_parse(h->method, h->method_len);
    req->method_id = (uint8_t)method;
    req->head_method = method == HTTP_METHOD_HEAD;
    req->idempotent = http_method_idempotent(method);
    const http_header_t *ct = http_header_find(h->headers, h->n_headers, "content-type", 12);
    req->grpc = ct && http_content_type_is_grpc(ct->value, ct->value_len);
    req->has_content_length = h->has_content_length;
    req->content_length = h->has_content_length ? h->content_length : 0;
    copy_trunc(req->method, sizeof req->method, h->method, h->method_len, &n);
    req->method_len = (uint8_t)n;
    copy_trunc(req->path, sizeof req->path, h->target, h->target_len, &n);
    req->path_len = (uint16_t)n;
    req->has_head = 1;
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
        request_new_id(req);
    }
}

/* A request head refused: 400 (or the reason's own status) and the
 * connection closes after it. */
static void refuse_head(request_t *req, end_reason_t why, const char *message)
{
    client_conn_close_after(req->cc);
    answer_error(req, why, message);
}

/* The request's timeout (contract 10.3): the route's, shortened by an
 * incoming deadline, X-Request-Timeout-Ms from a trusted proxy or any
 * grpc-timeout (a malformed one is ignored). At least 1 ms. */
static uint64_t request_timeout_ms(const request_t *req, const http_head_t *h,
                                   const config_route_t *r)
{
    uint64_t t = r->timeout_ms, in;
    const http_header_t *x =
        req->peer_trusted ? http_header_find(h->headers, h->n_headers, "x-request-timeout-ms", 20)
                          : NULL;
    if (x && http_deadline_parse_ms(x->value, x->value_len, &in) == 0 && in < t)
        t = in;
    x = http_header_find(h->headers, h->n_headers, "grpc-timeout", 12);
    if (x && http_deadline_parse_grpc(x->value, x->value_len, &in) == 0 && in < t)
        t = in;
    return t ? t : 1;
}

/* The time the request has left, in ms (0: none). */
static uint64_t deadline_left_ms(const request_t *req, uint64_t now_us)
{
    return req->deadline_us > now_us ? (req->deadline_us - now_us) / 1000 : 0;
}

/* ---------------------------------------------------------------- begin */

static void forward(request_t *req, const http_head_t *h, routed_t *rt);
static void aggregate(request_t *req, const http_head_t *h, const routed_t *rt);
static void admit(request_t *req, const http_head_t *h, routed_t *rt, const char *raw,
                  size_t head_bytes);

static void on_request(client_conn_t *cc, const http_head_t *h, const char *raw, size_t head_bytes)
{
    request_t *req = req_of(cc);
    proxy_worker_t *pw = req->pw;
    request_reset(req);
    note_head(req, h);
    request_choose_gen(req);
    request_trace_begin(pw, req, h, &req->gen->cfg->tracing);

    /* The target, the host, the route. */
    routed_t rt;
    const char *message = NULL;
    end_reason_t why = route_head(req, h, &rt, &message);
    if (rt.ip != cc->client_ip && why != END_BAD_REQUEST) {
        /* The address the IP rules use, as the access log shows it. */
        size_t n;
        copy_trunc(req->client_ip, sizeof req->client_ip, rt.ip, rt.ip_len, &n);
        req->client_ip_len = (uint8_t)n;
    }
    if (why == END_BAD_REQUEST) {
        refuse_head(req, why, message);
        return;
    }
    if (why != END_OK) {
        answer_error(req, why, NULL);
        return;
    }
    const config_route_t *r = rt.m.route;
    proxy_gen_t *g = req->gen;
    req->route = r;
    g->route_inflight[r->index]++; /* until request_log */
    metrics_route_in_flight(pw->metrics, g->metrics_route[r->index], +1);
    /* The deadline covers admission steps that wait, and every try. */
    uint64_t timeout_ms = request_timeout_ms(req, h, r);
    req->deadline_us = req->start_us + timeout_ms * 1000;
    client_conn_arm_deadline(cc, timeout_ms);
    admit(req, h, &rt, raw, head_bytes);
}

/* Runs the admission steps; a request that waits keeps its head (routed
 * again when it resumes: the spans point into it). */
static void admit(request_t *req, const http_head_t *h, routed_t *rt, const char *raw,
                  size_t head_bytes)
{
    admission_deny_t deny;
    req->head = h;
    admit_t a = admission_run(req->pw->steps, req->pw->n_steps, &req->admitted, req, &deny);
    req->head = NULL;
    switch (a) {
    case ADMIT_NEXT:
        forward(req, h, rt);
        return;
    case ADMIT_DENY:
        answer_error(req, deny.why, deny.message);
        return;
    case ADMIT_WAIT:
        break;
    }
    req->phase = REQ_ADMISSION;
    proxy_worker_wait_add(req->pw, req);
    if (req->held)
        return; /* kept at the first wait */
    req->held = pbuf_get(&req->pw->w->pool);
    if (!req->held || head_bytes > req->held->cap) {
        answer_error(req, !req->held ? END_INTERNAL : END_HEADER_TOO_LARGE, NULL);
        return;
    }
    memcpy(req->held->data, raw, head_bytes);
    req->held->len = (uint32_t)head_bytes;
}

void proxy_request_resume(request_t *req)
{
    if (req->phase != REQ_ADMISSION)
        return;
    proxy_worker_wait_remove(req);
    /* The kept head, parsed again: the steps read it, then the rest of the way. */
    proxy_worker_t *pw = req->pw;
    http_parser_t p;
    int ev = 0;
    http_parser_init_request(&p);
    long k = http_parser_feed(&p, &pw->head, pbuf_head(req->held), req->held->len, &ev);
    if (k < 0 || !(ev & HTTP_EV_HEAD)) {
        answer_error(req, END_INTERNAL, "request head lost while admission waited");
        return;
    }
    admission_deny_t deny;
    req->head = &pw->head;
    admit_t a = admission_run(pw->steps, pw->n_steps, &req->admitted, req, &deny);
    req->head = NULL;
    if (a == ADMIT_WAIT) {
        proxy_worker_wait_add(pw, req);
        return;
    }
    req->phase = REQ_NONE;
    if (a == ADMIT_DENY) {
        answer_error(req, deny.why, deny.message);
        return;
    }
    routed_t rt;
    const char *message;
    if (route_head(req, &pw->head, &rt, &message) != END_OK || rt.m.route != req->route) {
        /* A set the route matched on changed while the request waited. */
        answer_error(req, END_NO_ROUTE, "the route no longer matches the request");
        return;
    }
    forward(req, &pw->head, &rt);
    pbuf_put(&pw->w->pool, req->held);
    req->held = NULL;
}

/* An upgrade (contract 3.1): kept when the route allows its token (it is
 * forwarded then); false when the request was answered. */
static bool accept_upgrade(request_t *req, const http_head_t *h)
{
    const config_route_t *r = req->route;
    client_conn_close_after(req->cc); /* a connection that asked to switch serves no more HTTP */
    const http_header_t *up = http_header_find(h->headers, h->n_headers, "upgrade", 7);
    size_t tl = 0;
    const char *tok = up ? first_token(up->value, up->value_len, &tl) : NULL;
    if (tok && r->n_upgrades == 0) {
        answer_error(req, END_BAD_REQUEST, "upgrades are not allowed on this route");
        return false;
    }
    for (size_t i = 0; tok && i < r->n_upgrades; i++)
        if (strlen(r->upgrades[i]) == tl && strncasecmp(r->upgrades[i], tok, tl) == 0 &&
            tl < sizeof req->upgrade) {
            memcpy(req->upgrade, tok, tl);
            req->upgrade_len = (uint8_t)tl;
        }
    return true;
}

/* The fallback backend's own request target, made now while the path is
 * here; none (req->alt NULL) when it cannot be built. */
static void build_fallback_target(request_t *req, const routed_t *rt)
{
    const config_route_t *r = req->route;
    pbuf_pool_t *pool = &req->pw->w->pool;
    const config_backend_t *fb = NULL;
    for (size_t i = 0; i < r->n_backends && !fb; i++)
        if (r->backends[i].target_group == req->backend->fallback)
            fb = &r->backends[i];
    req->alt = pbuf_get(pool);
    long alen = req->alt && fb
                    ? router_rewrite_target(r, fb, &rt->rr, &rt->m, req->alt->data, req->alt->cap)
                    : -1;
    if (alen < 0) {
        pbuf_put(pool, req->alt);
        req->alt = NULL;
    } else {
        req->alt->len = (uint32_t)alen;
    }
}

/* The upstream head (the one copy of the client's): into req->out, with
 * where each try patches its trace ids and time left. False when the
 * request was answered instead. calls: an aggregation's (rewrite.h). */
static bool build_out(request_t *req, const http_head_t *h, const routed_t *rt, const char *target,
                      size_t tlen, bool calls)
{
    proxy_worker_t *pw = req->pw;
    proxy_gen_t *g = req->gen;
    const config_route_t *r = req->route;
    req->out = pbuf_get(&pw->w->pool);
    if (!req->out) {
        answer_error(req, END_INTERNAL, NULL);
        return false;
    }
    rewrite_request_t rw = {
        .head = h,
        .target = target,
        .target_len = tlen,
        .host = rt->authority,
        .host_len = rt->authority_len,
        .peer_ip = req->cc->client_ip,
        .peer_ip_len = req->cc->client_ip_len,
        .peer_trusted = req->peer_trusted,
        .proto = req->cc->tls ? "https" : "http",
        .request_id = req->request_id,
        .request_id_len = req->request_id_len,
        .route = r,
        .upgrade = req->upgrade_len ? req->upgrade : NULL,
        .upgrade_len = req->upgrade_len,
        .drop = g->identity,
        .n_drop = req->ident_session ? g->n_identity_session : g->n_identity,
        .drop_cookie = req->ident_session ? g->cfg->session_exchange.cookie : NULL,
        .drop_cookie_len = req->ident_session && g->cfg->session_exchange.cookie
                               ? strlen(g->cfg->session_exchange.cookie)
                               : 0,
        .add = req->ident ? req->ident->data : NULL,
        .add_len = req->ident ? req->ident->len : 0,
        .client_id = req->client != UINT32_MAX ? g->cfg->clients[req->client].id : NULL,
        .calls = calls,
    };
    rewrite_trace_t trace = {0};
    if (req->trace_export) {
        request_trace_headers(req, &g->cfg->tracing, &trace);
        rw.trace = &trace;
    }
    rewrite_deadline_t deadline = {0};
    if (r->deadline.propagate)
        rw.deadline = &deadline;
    long hl = rewrite_request_head(&rw, req->out->data, req->out->cap);
    if (hl < 0) {
        refuse_head(req, END_HEADER_TOO_LARGE, "request head too large to forward");
        return false;
    }
    req->out->len = (uint32_t)hl;
    req->head_len = (uint32_t)hl;
    req->tp_off = trace.w3c ? trace.traceparent_off : 0;
    req->dd_off = trace.datadog ? trace.dd_parent_off : 0;
    req->rto_off = rw.deadline ? deadline.ms_off : 0;
    req->gto_off = rw.deadline ? deadline.grpc_off : 0;
    return true;
}

/* An aggregation route (contract 8): no backend; its calls are made from
 * the head a backend would get, with the client's own target. */
static void aggregate(request_t *req, const http_head_t *h, const routed_t *rt)
{
    if (req->method_id != HTTP_METHOD_GET && req->method_id != HTTP_METHOD_HEAD) {
        client_conn_close_after(req->cc);
        answer_error(req, END_METHOD_NOT_ALLOWED, NULL);
        return;
    }
    if ((h->has_content_length && h->content_length > 0) || h->chunked) {
        client_conn_close_after(req->cc);
        answer_error(req, END_BAD_REQUEST, "an aggregation route takes no request body");
        return;
    }
    if (!build_out(req, h, rt, h->target, h->target_len, true))
        return;
    aggregate_start(req);
}

/* The backend, and the head it gets; then the first try. */
static void forward(request_t *req, const http_head_t *h, routed_t *rt)
{
    proxy_worker_t *pw = req->pw;
    proxy_gen_t *g = req->gen;
    const config_route_t *r = req->route;

    if (h->upgrade && !accept_upgrade(req, h))
        return;
    if (r->has_aggregate) {
        aggregate(req, h, rt);
        return;
    }

    size_t b = pick_backend(g, r, h, rt->ip, rt->ip_len);
    if (b == SIZE_MAX) {
        answer_error(req, END_NO_TARGET, "every backend of the route has weight 0");
        return;
    }
    req->backend = &r->backends[b];
    req->group = (uint32_t)req->backend->target_group;
    char *target = pw->scratch;
    long tlen = router_rewrite_target(r, req->backend, &rt->rr, &rt->m, target, pw->scratch_bytes);
    if (tlen >= 0 && pw->alog) {
        size_t n;
        copy_trunc(req->upstream_path, sizeof req->upstream_path, target, (size_t)tlen, &n);
        req->upstream_path_len = (uint16_t)n;
    }
    if (tlen < 0) {
        answer_error(req, END_URI_TOO_LONG, NULL);
        return;
    }
    if (!build_out(req, h, rt, target, (size_t)tlen, false))
        return;
    if (g->hedges[r->index])
        hedge_note_request(g->hedges[r->index]);
    if (req->backend->fallback != CONFIG_NONE)
        build_fallback_target(req, rt);
    shadow_begin(req, &rt->rr, &rt->m);
    if (req->cc->body_done)
        shadow_send(req); /* no body: the copy goes beside the first try */
    try_next(req);
}

/* The head moved by shift bytes in out (a new request line): so did what
 * is patched per try. */
static void shift_head(request_t *req, long shift)
{
    req->head_len = (uint32_t)((long)req->head_len + shift);
    uint32_t *offs[] = {&req->tp_off, &req->dd_off, &req->rto_off, &req->gto_off};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++)
        if (*offs[i])
            *offs[i] = (uint32_t)((long)*offs[i] + shift);
}

/* The fallback backend's request target in the access log. */
static void note_fallback_path(request_t *req)
{
    if (req->pw->alog) {
        size_t k;
        copy_trunc(req->upstream_path, sizeof req->upstream_path, req->alt->data, req->alt->len,
                   &k);
        req->upstream_path_len = (uint16_t)k;
    }
}

/* Rewrites the request line of `out` for the fallback backend. */
static int switch_to_fallback(request_t *req)
{
    proxy_worker_t *pw = req->pw;
    pbuf_t *n = pbuf_get(&pw->w->pool);
    if (!n)
        return FE_NOMEM;
    long shift;
    long len =
        rewrite_retarget(req->out->data, req->out->len, req->head_len, req->method, req->method_len,
                         req->alt->data, req->alt->len, "", 0, n->data, n->cap, &shift);
    if (len < 0) {
        pbuf_put(&pw->w->pool, n);
        return (int)len;
    }
    shift_head(req, shift);
    n->len = (uint32_t)len;
    pbuf_put(&pw->w->pool, req->out);
    req->out = n;
    note_fallback_path(req);
    return 0;
}

/* ------------------------------------------------------------ exchanges */

/* An exchange calls back: while a hedge races, it becomes the request's
 * `ex` (and the phase its own), so the request path reads one try at a
 * time. */
static request_t *focus(exchange_t *ex)
{
    request_t *req = ex->req;
    if (req->race == ex) {
        req->race = req->ex;
        req->ex = ex;
        req->phase = ex->uc && upstream_conn_connected(ex->uc) ? REQ_SENT : REQ_CONNECTING;
    }
    return req;
}

/* The race is over: `keep` carries the request on alone, the other try
 * having ended (its connection closed, so nothing reads its copy of the
 * head any more). A hedge's copy of the head becomes the request's, and a
 * hedge to the fallback group makes the request a fallback one. */
static void race_over(request_t *req, exchange_t *keep)
{
    proxy_worker_t *pw = req->pw;
    pbuf_pool_t *pool = &pw->w->pool;
    exchange_t *lost = keep == req->ex ? req->race : req->ex;
    req->race = NULL;
    req->ex = keep;
    req->phase = keep->uc && upstream_conn_connected(keep->uc) ? REQ_SENT : REQ_CONNECTING;
    if (lost->out) {
        pbuf_put(pool, lost->out);
        lost->out = NULL;
        lost->out_shift = 0;
    }
    if (keep->out) {
        pbuf_put(pool, req->out);
        req->out = keep->out;
        shift_head(req, keep->out_shift);
        keep->out = NULL;
        keep->out_shift = 0;
    }
    if (keep->group != req->group) {
        proxy_gen_t *g = req->gen;
        metrics_fallback(pw->metrics, g->metrics_route[req->route->index],
                         g->groups[req->group].metrics_group, g->groups[keep->group].metrics_group);
        req->fallback = 1;
        req->group = keep->group;
        req->tried = req->hedge_tried;
        note_fallback_path(req);
    }
}

/* Ends the tries under way (the race's too) and the hedge's delay. */
static void end_tries(request_t *req, int try_code, bool failure)
{
    uv_timer_stop(&req->hedge_timer);
    if (req->race) {
        exchange_end(req->pw, req->race, try_code, false, failure);
        race_over(req, req->ex);
    }
    exchange_end(req->pw, req->ex, try_code, false, failure);
}

static void on_try_timer(uv_timer_t *t)
{
    exchange_t *ex = t->data;
    request_t *req = focus(ex);
    if (req->phase == REQ_BACKOFF)
        try_next(req);
    else if (req->phase == REQ_CONNECTING || req->phase == REQ_SENT)
        try_failed(req, END_UPSTREAM_TIMEOUT, NULL);
}

/* ------------------------------------------------------------- hedging */

static void on_hedge_timer(uv_timer_t *t);

/* The try just started gets a hedge after the route's delay (contract
 * 10.3): an idempotent request, one hedge per request, when the delay is
 * known (a learned one needs samples). */
static void hedge_arm(request_t *req)
{
    const config_route_t *r = req->route;
    hedge_t *h = req->gen->hedges[r->index];
    if (!h || req->hedged || !req->idempotent || req->upgrade_len)
        return;
    uint64_t delay = hedge_delay_ms(h, (size_t)(req->backend - r->backends), uv_now(req->pw->loop));
    if (delay)
        uv_timer_start(&req->hedge_timer, on_hedge_timer, delay, 0);
}

/* The try under way has no response head after the delay: a second try
 * races it, to the fallback group when the backend names one (a slow canary
 * raced against the old system), else to another target of the group. It
 * needs the whole request kept (its own copy of the head, with its own
 * trace and deadline values), the cap's leave, and deadline left. */
static void hedge_start(request_t *req)
{
    proxy_worker_t *pw = req->pw;
    proxy_gen_t *g = req->gen;
    const config_route_t *r = req->route;
    if (req->race || req->hedged || (req->phase != REQ_CONNECTING && req->phase != REQ_SENT) ||
        !req->cc->body_done || req->body_streamed || pw->stopping)
        return;
    if (deadline_left_ms(req, time_now_us()) <= r->deadline.min_remaining_ms)
        return;
    if (!hedge_take(g->hedges[r->index])) {
        req->hedged = HEDGE_CAPPED;
        metrics_hedge(pw->metrics, g->metrics_route[r->index], METRICS_HEDGE_CAPPED);
        return;
    }
    bool to_fallback = req->backend->fallback != CONFIG_NONE && !req->fallback && req->alt;
    pbuf_t *copy = pbuf_get(&pw->w->pool);
    long len = -1, shift = 0;
    if (copy && to_fallback)
        len = rewrite_retarget(req->out->data, req->out->len, req->head_len, req->method,
                               req->method_len, req->alt->data, req->alt->len, "", 0, copy->data,
                               copy->cap, &shift);
    else if (copy && req->out->len <= copy->cap)
        len = (long)req->out->len;
    if (len < 0) {
        pbuf_put(&pw->w->pool, copy);
        req->hedged = HEDGE_UNABLE;
        return;
    }
    if (!to_fallback)
        memcpy(copy->data, req->out->data, req->out->len);
    copy->len = (uint32_t)len;
    req->hedged = HEDGE_SENT;
    exchange_t *hx = req->ex == &req->slots[0] ? &req->slots[1] : &req->slots[0];
    hx->out = copy;
    hx->out_shift = (int32_t)shift;
    hx->is_hedge = 1;
    req->hedge_tried = 0;
    uint32_t group = to_fallback ? (uint32_t)req->backend->fallback : req->group;
    const char *message;
    end_reason_t why = exchange_start(pw, hx, group, to_fallback ? &req->hedge_tried : &req->tried,
                                      &exchange_ops, on_try_timer, &message);
    if (why != END_OK) {
        /* No hedge after all (a connect failure still made a try, which
         * lost): the first try goes on alone. */
        if (why != END_UPSTREAM_CONNECT_FAILURE)
            req->hedged = HEDGE_UNABLE;
        exchange_end(pw, hx, end_reasons[why].try_code, false, why == END_UPSTREAM_CONNECT_FAILURE);
        pbuf_put(&pw->w->pool, hx->out);
        hx->out = NULL;
        hx->out_shift = 0;
        return;
    }
    req->race = hx;
    if (upstream_conn_connected(hx->uc))
        exchange_ops.on_connected(hx, 0);
}

static void on_hedge_timer(uv_timer_t *t) { hedge_start(t->data); }

/* A try to the request's group; a group that cannot take it (no target,
 * a breaker) goes to decide() like a failed try. */
static void try_next(request_t *req)
{
    const char *message;
    end_reason_t why = exchange_start(req->pw, req->ex, req->group, &req->tried, &exchange_ops,
                                      on_try_timer, &message);
    if (why == END_UPSTREAM_CONNECT_FAILURE) {
        try_failed(req, why, NULL);
        return;
    }
    if (why != END_OK) {
        try_failed(req, why, message);
        return;
    }
    req->phase = REQ_CONNECTING;
    hedge_arm(req);
    if (upstream_conn_connected(req->ex->uc))
        exchange_ops.on_connected(req->ex, 0);
}

/* Everything decide() looks at, from the request. */
static decision_t decide_request(const request_t *req, end_reason_t why, int status,
                                 int grpc_status, bool stale)
{
    const config_route_t *r = req->route;
    const proxy_gen_t *g = req->gen;
    decide_in_t in = {
        .why = why,
        .status = status,
        .grpc_status = grpc_status,
        .stale = stale,
        .resp_started = req->resp_started,
        .body_streamed = req->body_streamed,
        .stopping = req->pw->stopping,
        .idempotent = req->idempotent,
        .fallback_ready =
            req->backend && req->backend->fallback != CONFIG_NONE && !req->fallback && req->alt,
        .retry_counted = req->retry_counted,
        /* The loop's time (no clock read per answer): min_remaining is in ms. */
        .deadline_short =
            r && deadline_left_ms(req, uv_now(req->pw->loop) * 1000) < r->deadline.min_remaining_ms,
        .route = r,
        .attempts = req->attempts,
        .retries = req->retries,
        .route_retries_in_flight = r ? g->route_retries[r->index] : 0,
        .route_requests_in_flight = r ? g->route_inflight[r->index] : 0,
    };
    return decide(&in);
}

/* The try under way ended without a response the client can have (or never
 * started: no target, a breaker): it is counted, then decided on. */
static void try_failed(request_t *req, end_reason_t why, const char *message)
{
    exchange_t *ex = req->ex;
    /* A stale pooled connection says nothing about the target's health. */
    bool stale = why == END_UPSTREAM_RESET && ex->uc && ex->uc->reused &&
                 upstream_conn_connected(ex->uc) && !req->body_streamed;
    exchange_end(req->pw, ex, end_reasons[why].try_code, false, !stale);
    if (req->race) {
        race_over(req, req->race); /* the other try may still answer */
        return;
    }
    uv_timer_stop(&req->hedge_timer);
    act(req, decide_request(req, why, 0, -1, stale), why, message);
}

/* Sends the request again: to the fallback group at once, or to the same
 * group after a full-jitter backoff, preferring a target not tried yet. */
static void retry(request_t *req, bool to_fallback)
{
    proxy_worker_t *pw = req->pw;
    proxy_gen_t *g = req->gen;
    const config_route_t *r = req->route;
    uint32_t from = req->group;
    req->retries++;
    if (!req->retry_counted) {
        req->retry_counted = 1;
        g->route_retries[r->index]++;
    }
    if (to_fallback) {
        if (switch_to_fallback(req) != 0) {
            answer_error(req, END_UPSTREAM_RESET, "fallback request too large");
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
        try_next(req);
        return;
    }
    req->phase = REQ_BACKOFF;
    uv_timer_start(&req->ex->timer, on_try_timer, delay, 0);
}

/* Carries out decide()'s verdict on a try that ended as `why`. */
static void act(request_t *req, decision_t d, end_reason_t why, const char *message)
{
    switch (d) {
    case DECIDE_RESEND:
        try_next(req); /* the request never reached the target: not a retry */
        return;
    case DECIDE_RETRY:
        retry(req, false);
        return;
    case DECIDE_FALLBACK:
        retry(req, true);
        return;
    case DECIDE_CUT:
        client_gone(req, END_UPSTREAM_RESET);
        return;
    case DECIDE_ANSWER:
        answer_error(req, why, message);
        return;
    }
}

/* ----------------------------------------------------------------- send */

/* The try's time left into its head, as it goes (contract 10.3): the
 * smaller of the request's and the try's per_try_timeout's. */
static void write_time_left(request_t *req, exchange_t *ex)
{
    const config_route_t *r = req->route;
    uint64_t now = time_now_us();
    uint64_t left = deadline_left_ms(req, now);
    uint64_t per_try = r->has_retries ? r->retries.per_try_timeout_ms : 0;
    if (per_try) {
        uint64_t used = (now - ex->start_us) / 1000;
        uint64_t try_left = per_try > used ? per_try - used : 0;
        if (try_left < left)
            left = try_left;
    }
    char *head = request_head_base(req, ex);
    http_deadline_write_ms(head + req->rto_off, left);
    if (req->gto_off)
        http_deadline_write_grpc(head + req->gto_off, left);
}

/* Writes what of the try's head and body its connection has not had yet. */
static int send_buffered(request_t *req)
{
    exchange_t *ex = req->ex;
    pbuf_t *out = ex->out ? ex->out : req->out;
    if (ex->out_sent >= out->len)
        return 0;
    if (ex->out_sent == 0 && req->rto_off)
        write_time_left(req, ex);
    uv_buf_t b = uv_buf_init(out->data + ex->out_sent, out->len - ex->out_sent);
    ex->out_sent = out->len;
    return upstream_conn_write(ex->uc, &b, 1);
}

static void upstream_connected(request_t *req, int status)
{
    exchange_t *ex = req->ex;
    if (ex->holds_pending) {
        ex->holds_pending = 0;
        health_release(&req->gen->health->groups[ex->group].pending);
    }
    if (status < 0) {
        ex->uc = NULL; /* closed already */
        const char *message;
        end_reason_t why = exchange_connect_failed(req->pw, ex, status, &message);
        try_failed(req, why, message);
        return;
    }
    req->phase = REQ_SENT;
    http_parser_expect_no_body(&ex->uc->parser, req->head_method);
    int rc = send_buffered(req);
    if (rc < 0) {
        try_failed(req, END_UPSTREAM_RESET, NULL);
        return;
    }
    if (rc == 0 && !req->cc->body_done)
        client_conn_resume(req->cc);
}

static size_t body_room(client_conn_t *cc)
{
    request_t *req = req_of(cc);
    if (req->phase == REQ_DONE || req->phase == REQ_NONE)
        return SIZE_MAX; /* answered already: the rest is read and dropped */
    if (req->phase == REQ_ADMISSION)
        return 0; /* nowhere to go yet */
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
    const exchange_t *ex = req->ex;
    bool writable = ex->uc && req->phase >= REQ_SENT && ex->out_sent == req->out->len &&
                    !upstream_conn_write_pending(ex->uc);
    return writable ? SIZE_MAX : 0;
}

static void on_body(client_conn_t *cc, const char *data, size_t len, bool end)
{
    request_t *req = req_of(cc);
    if (req->phase == REQ_DONE || req->phase == REQ_NONE)
        return;
    if (len == 0) {
        if (end)
            shadow_send(req);
        return;
    }
    exchange_t *ex = req->ex;
    int rc = 0;
    if (!req->body_streamed && len <= pbuf_room(req->out) &&
        req->out->len - req->head_len + len <= req->gen->cfg->server.retry_buffer_bytes) {
        /* Kept in `out` so the request can be sent again on a fresh connection. */
        memcpy(pbuf_tail(req->out), data, len);
        req->out->len += (uint32_t)len;
        if (end)
            shadow_send(req); /* the body is whole: its copy goes */
        if (req->phase >= REQ_SENT)
            rc = send_buffered(req);
    } else {
        if (!ex->uc || req->phase < REQ_SENT)
            return; /* cannot happen: body_room said 0 */
        req->body_streamed = 1;
        if (end)
            shadow_send(req); /* skipped: the body was not kept */
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        rc = upstream_conn_write(ex->uc, &b, 1);
    }
    if (rc < 0) {
        try_failed(req, END_UPSTREAM_RESET, NULL);
        return;
    }
    if (rc == 1)
        client_conn_pause(cc); /* until the upstream drains */
}

static void upstream_drained(request_t *req, int status)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_upstream_drained(req, status);
        return;
    }
    if (status < 0) {
        if (req->resp_started)
            client_gone(req, END_UPSTREAM_RESET);
        else
            try_failed(req, END_UPSTREAM_RESET, NULL);
        return;
    }
    if (!req->cc->body_done && req->phase != REQ_DONE)
        client_conn_resume(req->cc);
}

/* ------------------------------------------------------------- response */

/* The exchange's response head arrived: counted, and its time kept. */
static void count_response(request_t *req, int status)
{
    exchange_t *ex = req->ex;
    proxy_group_state_t *gs = &req->gen->groups[ex->group];
    uv_timer_stop(&ex->timer);
    uv_timer_stop(&req->hedge_timer); /* a head came: no hedge */
    req->upstream_us = (int64_t)(time_now_us() - ex->start_us);
    metrics_upstream(req->pw->metrics, gs->metrics_group, gs->metrics_target[ex->target], status,
                     (uint64_t)req->upstream_us);
    ex->counted = 1;
    hedge_t *h = req->gen->hedges[req->route->index];
    if (h && ex->group == req->backend->target_group)
        hedge_record(h, (size_t)(req->backend - req->route->backends), uv_now(req->pw->loop),
                     (uint64_t)req->upstream_us);
}

/* A 101 to the upgrade the request asked for: the 101 (and whatever the
 * upstream sent after it) goes to the client and the tunnel begins. A 101
 * nobody asked for, or to another protocol, is an invalid response: 502. */
static void start_tunnel(request_t *req, const http_head_t *h, const char *rest, size_t rest_len)
{
    proxy_worker_t *pw = req->pw;
    const http_header_t *up = http_header_find(h->headers, h->n_headers, "upgrade", 7);
    size_t tl = 0;
    const char *tok = up ? first_token(up->value, up->value_len, &tl) : NULL;
    if (!req->upgrade_len || !tok || tl != req->upgrade_len ||
        strncasecmp(tok, req->upgrade, tl) != 0) {
        try_failed(req, END_UPSTREAM_INVALID,
                   req->upgrade_len ? "upstream switched to another protocol than the request "
                                      "asked for (101 Switching Protocols)"
                                    : "upstream answered 101 Switching Protocols to a request "
                                      "that asked for no upgrade");
        return;
    }
    count_response(req, 101);
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
        try_failed(req, END_UPSTREAM_INVALID, NULL);
        return;
    }
    uv_buf_t iov[2] = {uv_buf_init(pw->scratch, (unsigned)hl),
                       uv_buf_init((char *)rest, (unsigned)rest_len)};
    req->resp_started = 1;
    int rc = client_conn_write(req->cc, iov, rest_len ? 2 : 1);
    if (rc < 0) {
        client_gone(req, END_CLIENT_CLOSED);
        return;
    }
    if (rc == 1)
        upstream_conn_pause(req->ex->uc);
    tunnel_start(req);
}

/* The gRPC status a response head carries (a trailers-only answer), or -1. */
static int grpc_status_of(const http_head_t *h)
{
    const http_header_t *g = http_header_find(h->headers, h->n_headers, "grpc-status", 11);
    if (!g || g->value_len == 0 || g->value_len > 2)
        return -1;
    int v = 0;
    for (uint32_t i = 0; i < g->value_len; i++) {
        if (g->value[i] < '0' || g->value[i] > '9')
            return -1;
        v = v * 10 + (g->value[i] - '0');
    }
    return v;
}

/* A final response head: relayed (rewritten), or, when decide() says so, not
 * relayed and the request tried again. Returns false when the request went
 * elsewhere. */
static bool response_head(request_t *req, const http_head_t *h, uv_buf_t *iov, unsigned *n)
{
    proxy_worker_t *pw = req->pw;
    upstream_conn_t *uc = req->ex->uc;
    count_response(req, h->status);
    req->upstream_status = h->status;
    decision_t d = decide_request(req, END_OK, h->status, grpc_status_of(h), false);
    if (d != DECIDE_ANSWER) {
        /* Not relayed: the connection goes, with the body nobody reads. */
        exchange_end(pw, req->ex, 0, false, h->status >= 500);
        if (req->race) {
            race_over(req, req->race); /* the other try may still answer */
            return false;
        }
        act(req, d, END_OK, NULL);
        return false;
    }
    if (req->race) {
        /* The first head wins: the other try is cancelled, its connection
         * closed rather than pooled half-read. */
        exchange_end(pw, req->race, 0, false, false);
        race_over(req, req->ex);
    }
    if (req->ex->is_hedge)
        req->hedge_won = 1;
    req->status = h->status;
    bool bodyless = req->head_method || h->status == 204 || h->status == 304;
    if (h->chunked && !bodyless)
        req->resp_body = req->client_http10 ? REWRITE_BODY_DECHUNK : REWRITE_BODY_AS_IS;
    else if (h->has_content_length || bodyless)
        req->resp_body = REWRITE_BODY_AS_IS;
    else
        req->resp_body = REWRITE_BODY_UNTIL_CLOSE;
    req->upstream_reusable = h->keep_alive;
    bool keep = client_conn_keeps_alive(req->cc) && req->resp_body == REWRITE_BODY_AS_IS;
    if (!keep)
        client_conn_close_after(req->cc);
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
        try_failed(req, END_UPSTREAM_INVALID, NULL);
        return false;
    }
    iov[(*n)++] = uv_buf_init(pw->scratch, (unsigned)hl);
    shadow_primary_head(req, h);
    req->phase = REQ_RESPONDING;
    req->resp_started = 1;
    if (h->chunked && !bodyless) {
        /* Chunked again as ficus frames it, or decoded for HTTP/1.0. */
        http_parser_set_sink(&uc->parser, pw->scratch + hl, pw->scratch_bytes - (size_t)hl);
        http_parser_set_reframe(&uc->parser, req->resp_body != REWRITE_BODY_DECHUNK);
        /* Trailers go on to a client that can have them: an HTTP/2 one, or
         * a gRPC call (its status is in them); others never see them. */
        if (req->resp_body != REWRITE_BODY_DECHUNK && (req->grpc || req->cc->http2)) {
            if (!req->trailers)
                req->trailers = pbuf_get(&pw->w->pool);
            if (req->trailers)
                http_parser_keep_trailers(&uc->parser, req->trailers->data, req->trailers->cap);
        }
    } else {
        http_parser_set_sink(&uc->parser, NULL, 0);
    }
    return true;
}

/* Reads the response head (kept whole in the connection's buffer while it
 * comes in pieces; interim 1xx heads passed on; a 101 starts the tunnel) and
 * puts the rewritten final head in iov. True when the body follows from
 * *data; false when the request waits for more, went elsewhere or ended. */
static bool read_response_head(request_t *req, const char **data, size_t *len, uv_buf_t *iov,
                               unsigned *n, int *ev)
{
    proxy_worker_t *pw = req->pw;
    upstream_conn_t *uc = req->ex->uc;
    while (req->phase == REQ_SENT) {
        long k = http_parser_feed(&uc->parser, &pw->head, *data, *len, ev);
        if (k < 0) {
            try_failed(req, END_UPSTREAM_INVALID, NULL);
            return false;
        }
        if (!(*ev & HTTP_EV_HEAD)) {
            /* Partial head: keep it whole in the connection's buffer. */
            if (!uc->in && !(uc->in = pbuf_get(&pw->w->pool))) {
                try_failed(req, END_UPSTREAM_INVALID, NULL);
                return false;
            }
            if (*data != pbuf_head(uc->in)) {
                if (pbuf_room(uc->in) < *len) {
                    try_failed(req, END_UPSTREAM_INVALID, NULL);
                    return false;
                }
                memcpy(pbuf_tail(uc->in), *data, *len);
                uc->in->len += (uint32_t)*len;
            }
            http_parser_init_response(&uc->parser);
            http_parser_expect_no_body(&uc->parser, req->head_method);
            return false;
        }
        const http_head_t *h = &pw->head;
        if ((size_t)k > req->gen->cfg->server.max_header_bytes) {
            /* Response heads are held to max_header_size too (as HAProxy's bufsize). */
            try_failed(req, END_UPSTREAM_INVALID, NULL);
            return false;
        }
        *data += k;
        *len -= (size_t)k;
        if (h->status == 101) {
            start_tunnel(req, h, *data, *len);
            return false;
        }
        if (h->status < 100) {
            try_failed(req, END_UPSTREAM_INVALID, NULL);
            return false;
        }
        if (h->status < 200) {
            /* Interim (100 Continue, 103): pass it on, wait for the final one. */
            char line[64];
            int ll = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n\r\n", h->status,
                              http_status_reason(h->status));
            uv_buf_t b = uv_buf_init(line, (unsigned)ll);
            if (client_conn_write(req->cc, &b, 1) < 0) {
                client_gone(req, END_CLIENT_CLOSED);
                return false;
            }
            int ev2;
            http_parser_feed(&uc->parser, &pw->head, *data, 0, &ev2); /* ends the 1xx */
            continue;
        }
        if (!response_head(req, h, iov, n))
            return false;
    }
    return req->phase == REQ_RESPONDING;
}

/* Relays response bytes: the rewritten head first (once), then the body as
 * it came (or re-framed, or decoded for an HTTP/1.0 client). */
static void relay(request_t *req, const char *data, size_t len)
{
    proxy_worker_t *pw = req->pw;
    upstream_conn_t *uc = req->ex->uc;
    uv_buf_t iov[2];
    unsigned n = 0;
    int ev = 0;
    if (req->phase == REQ_SENT && !read_response_head(req, &data, &len, iov, &n, &ev))
        return;
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
            try_failed(req, END_UPSTREAM_INVALID, NULL);
            return;
        }
        /* The body broke its own framing mid-way: the client cannot be told
         * cleanly; the connection is cut. */
        req->end = END_UPSTREAM_INVALID;
        client_gone(req, END_UPSTREAM_INVALID);
        return;
    }
    if (uc->parser.sink) {
        if (uc->parser.sink_len) {
            iov[n++] = uv_buf_init(uc->parser.sink, (unsigned)uc->parser.sink_len);
            if (req->shadow)
                shadow_primary_body(req, uc->parser.sink, uc->parser.sink_len, uc->parser.reframe);
        }
        uc->parser.sink_len = 0;
        if (!(ev & HTTP_EV_END) && (size_t)k < len) {
            /* The sink holds a read's worth: cannot happen; never drop bytes. */
            req->end = END_UPSTREAM_INVALID;
            client_gone(req, END_UPSTREAM_INVALID);
            return;
        }
    } else if (k > 0) {
        iov[n++] = uv_buf_init((char *)data, (unsigned)k);
        if (req->shadow)
            shadow_primary_body(req, data, (size_t)k, false);
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
        bool reusable =
            req->upstream_reusable && req->cc->body_done && !upstream_conn_write_pending(uc);
        exchange_end(pw, req->ex, 0, reusable, req->upstream_status >= 500);
    }
    int rc = n ? client_conn_write(req->cc, iov, n) : 0;
    pbuf_put(&pw->w->pool, held);
    if (rc < 0) {
        client_gone(req, END_CLIENT_CLOSED);
        return;
    }
    if (ev & HTTP_EV_END) {
        finish(req);
        return;
    }
    if (rc == 1)
        upstream_conn_pause(uc); /* until the client drains */
}

static void upstream_data(request_t *req, const char *data, size_t len)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_upstream_data(req, data, len);
        return;
    }
    upstream_conn_t *uc = req->ex->uc;
    if (req->phase == REQ_SENT && uc->in) {
        /* The rest of a head that came in pieces. */
        if (pbuf_room(uc->in) < len) {
            try_failed(req, END_UPSTREAM_INVALID, NULL);
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
    if (req->ex->uc == uc && uc->in && req->phase != REQ_SENT) {
        pbuf_put(&req->pw->w->pool, uc->in);
        uc->in = NULL;
    }
}

static void upstream_eof(request_t *req, int status)
{
    if (req->phase == REQ_TUNNEL) {
        tunnel_upstream_eof(req, status);
        return;
    }
    upstream_conn_t *uc = req->ex->uc;
    if (req->phase == REQ_RESPONDING && req->resp_body == REWRITE_BODY_UNTIL_CLOSE &&
        http_parser_finish(&uc->parser) == 0) {
        req->upstream_reusable = 0;
        finish(req); /* a close-delimited body ends here */
        return;
    }
    if (req->resp_started) {
        req->end = END_UPSTREAM_RESET;
        client_gone(req, END_UPSTREAM_RESET);
        return;
    }
    try_failed(req, END_UPSTREAM_RESET, NULL);
}

static void on_exchange_connected(void *owner, int status)
{
    upstream_connected(focus(owner), status);
}
static void on_exchange_data(void *owner, const char *data, size_t len)
{
    upstream_data(focus(owner), data, len);
}
static void on_exchange_eof(void *owner, int status) { upstream_eof(focus(owner), status); }
static void on_exchange_drained(void *owner, int status) { upstream_drained(focus(owner), status); }

static const upstream_conn_ops_t exchange_ops = {
    .on_connected = on_exchange_connected,
    .on_data = on_exchange_data,
    .on_eof = on_exchange_eof,
    .on_drained = on_exchange_drained,
};

/* ----------------------------------------------------- the client's side */

static void on_drained(client_conn_t *cc)
{
    if (h2_of(cc)) {
        h2_server_on_drained(h2_of(cc));
        return;
    }
    request_t *req = req_of(cc);
    if (req->phase == REQ_TUNNEL) {
        tunnel_client_drained(req);
        return;
    }
    if (req->phase == REQ_RESPONDING && req->ex->uc)
        upstream_conn_resume(req->ex->uc);
    else if (req->phase == REQ_AGGREGATE)
        aggregate_drained(req);
}

/* The request deadline passed. */
static void on_timeout(client_conn_t *cc)
{
    if (h2_of(cc)) {
        h2_server_on_timer(h2_of(cc));
        return;
    }
    request_t *req = req_of(cc);
    if (req->phase == REQ_TUNNEL) {
        tunnel_timeout(req);
        return;
    }
    if (req->resp_started) {
        req->end = END_UPSTREAM_TIMEOUT;
        client_gone(req, END_UPSTREAM_TIMEOUT);
        return;
    }
    if (req->phase == REQ_SENT && !cc->body_done &&
        !(req->ex->uc && upstream_conn_write_pending(req->ex->uc))) {
        /* The client, not the target, is late: its body is still coming and
         * everything it sent went upstream. No failure of the target (a
         * slow client must not eject it), and the answer says whose it is. */
        end_tries(req, 0, false);
        client_conn_close_after(cc);
        answer_error(req, END_BODY_TIMEOUT, NULL);
        return;
    }
    if (req->phase == REQ_ADMISSION) {
        /* A step waited past the deadline (a session exchange, a key read,
         * redis): its own reason, not an upstream's. */
        char msg[96];
        snprintf(msg, sizeof msg, "timed out in admission step %s",
                 req->pw->steps[req->admitted].name);
        if (!cc->body_done)
            client_conn_close_after(cc);
        answer_error(req, END_ADMISSION_TIMEOUT, msg);
        return;
    }
    end_tries(req, METRICS_UPSTREAM_TIMEOUT, true);
    if (!cc->body_done)
        client_conn_close_after(cc);
    answer_error(req, END_UPSTREAM_TIMEOUT, NULL);
}

static void on_gone(client_conn_t *cc, end_reason_t why)
{
    if (h2_of(cc))
        h2_server_gone(h2_of(cc));
    else
        client_gone(req_of(cc), why);
}

/* A request that never began (a bad head, the header timeout). */
static void on_reject(client_conn_t *cc, end_reason_t why, const char *message)
{
    request_t *req = req_of(cc);
    request_reset(req);
    answer_error(req, why, message);
}

static void on_raw_data(client_conn_t *cc, const char *data, size_t len)
{
    if (h2_of(cc))
        h2_server_feed(h2_of(cc), data, len);
    else
        tunnel_client_data(req_of(cc), data, len);
}

static void on_raw_eof(client_conn_t *cc, ssize_t status)
{
    if (h2_of(cc))
        h2_server_gone(h2_of(cc));
    else
        tunnel_client_eof(req_of(cc), status);
}

/* The client went away, broke the protocol mid-request, or the response
 * cannot go on: answered if nothing was sent yet and the client can still
 * be told, else the connection is cut. */
static void client_gone(request_t *req, end_reason_t why)
{
    client_conn_t *cc = req->cc;
    if (req->phase == REQ_TUNNEL) {
        tunnel_end(req, why);
        return;
    }
    end_tries(req, 0, false);
    if (!req->resp_started && (why == END_BAD_REQUEST || why == END_BODY_TOO_LARGE)) {
        client_conn_close_after(cc);
        answer_error(req, why, why == END_BAD_REQUEST ? client_conn_error_reason(cc) : NULL);
        return;
    }
    if (!req->end)
        req->end = why;
    if (!req->resp_started)
        req->status = why == END_CLIENT_CLOSED ? 499 : 502;
    if (req->phase != REQ_DONE)
        request_log(req);
    request_release(req);
    req->phase = REQ_DONE;
    client_conn_abort(cc);
}

/* --------------------------------------------------------------- answer */

/* ficus's own answer: the reason's status and JSON error, message (or the
 * reason's own), then the request is over. */
void proxy_answer_error(request_t *req, end_reason_t why, const char *message)
{
    answer_error(req, why, message);
}

void proxy_request_gone(request_t *req, end_reason_t why) { client_gone(req, why); }

static void answer_error(request_t *req, end_reason_t why, const char *message)
{
    client_conn_t *cc = req->cc;
    proxy_worker_t *pw = req->pw;
    const end_reason_info_t *info = &end_reasons[why];
    end_tries(req, 0, false);
    if (!client_conn_keeps_alive(cc))
        client_conn_close_after(cc);
    if (req->request_id_len == 0)
        request_new_id(req);
    http_error_t e = {
        .status = info->status,
        .code = info->code,
        .message = message ? message : info->message,
        .request_id = req->request_id,
        .request_id_len = req->request_id_len,
        .close = cc->close_after || cc->env->draining,
        .head_only = req->head_method,
        .grpc = req->grpc,
        .retry_after_s = info->status != 429  ? 0
                         : req->retry_after_s ? req->retry_after_s
                                              : 1,
    };
    size_t n = http_error_format(&e, pw->scratch, pw->scratch_bytes);
    req->status = info->status;
    req->end = why;
    req->resp_started = 1;
    uv_buf_t b = uv_buf_init(pw->scratch, (unsigned)n);
    if (client_conn_write(cc, &b, 1) < 0) {
        req->status = 499;
        req->end = END_CLIENT_CLOSED;
        request_log(req);
        request_release(req);
        req->phase = REQ_DONE;
        client_conn_abort(cc);
        return;
    }
    request_log(req);
    request_over(req);
}

/* A relayed response ended. */
static void finish(request_t *req)
{
    upstream_conn_t *uc = req->ex->uc;
    bool reusable =
        req->upstream_reusable && req->cc->body_done && uc && !upstream_conn_write_pending(uc);
    exchange_end(req->pw, req->ex, 0, reusable, req->upstream_status >= 500);
    request_log(req);
    request_over(req);
}

/* ---------------------------------------------------------- connections */

/* The connection's request timers close one after the other, then it goes. */
static void on_conn_freed(uv_handle_t *h)
{
    proxy_conn_t *c = h->data;
    proxy_worker_t *pw = c->req.pw;
    if (!c->is_stream) {
        metrics_downstream_connection(pw->metrics, -1);
        worker_connection_closed(pw->w);
    }
    free(c);
}

static void on_slot_closed(uv_handle_t *h)
{
    exchange_t *ex = h->data;
    request_t *req = ex->req;
    if (ex == &req->slots[0]) {
        uv_close((uv_handle_t *)&req->slots[1].timer, on_slot_closed);
        return;
    }
    req->hedge_timer.data = req->cc;
    uv_close((uv_handle_t *)&req->hedge_timer, on_conn_freed);
}

static void close_timers(request_t *req)
{
    uv_close((uv_handle_t *)&req->slots[0].timer, on_slot_closed);
}

static void on_close(client_conn_t *cc)
{
    proxy_conn_t *c = (proxy_conn_t *)cc;
    h2_server_free(c->h2);
    c->h2 = NULL;
    request_t *req = req_of(cc);
    request_release(req);
    request_unbind(req);
    close_timers(req);
}

/* ------------------------------------------------------------ HTTP/2 */

static void h2_on_protocol_error(h2_server_t *srv, h2_err_t why)
{
    proxy_conn_t *c = h2_server_ctx(srv);
    metrics_http2_error(c->req.pw->metrics, (unsigned)why);
}

static proxy_conn_t *conn_new(proxy_worker_t *pw, uint32_t listener);
static const client_conn_ops_t proxy_client_ops;

/* A stream of an HTTP/2 connection: a request of its own, with the
 * connection's client address, listener and trust. */
static client_conn_t *h2_on_stream_open(h2_server_t *srv, h2_stream_t *st)
{
    proxy_conn_t *carrier = h2_server_ctx(srv);
    proxy_worker_t *pw = carrier->req.pw;
    proxy_conn_t *c = conn_new(pw, carrier->listener);
    if (!c)
        return NULL;
    c->is_stream = 1;
    c->req.peer_trusted = carrier->req.peer_trusted;
    client_conn_open_carried(&c->cc, &pw->clients, &proxy_client_ops, &h2_stream_carrier_ops, st,
                             &carrier->cc);
    return &c->cc;
}

static const h2_server_ops_t h2_ops = {
    .stream_open = h2_on_stream_open,
    .protocol_error = h2_on_protocol_error,
};

/* The connection speaks HTTP/2 from now on (ALPN h2, or the preface). */
static bool switch_h2(proxy_conn_t *c)
{
    const config_server_t *srv = &c->req.pw->gen->cfg->server;
    if (!srv->http2.enabled || c->h2)
        return false;
    client_conn_h2(&c->cc);
    c->h2 = h2_server_new(&c->cc, srv, &c->req.pw->h2, &h2_ops, c);
    if (!c->h2) {
        client_conn_abort(&c->cc);
        return true;
    }
    return true;
}

static bool on_preface(client_conn_t *cc) { return switch_h2((proxy_conn_t *)cc); }

static void on_drain(client_conn_t *cc)
{
    if (h2_of(cc))
        h2_server_drain(h2_of(cc));
}

static void on_handshake(client_conn_t *cc, int result)
{
    proxy_conn_t *c = (proxy_conn_t *)cc;
    metrics_tls_handshake(c->req.pw->metrics, c->listener, (unsigned)result);
    size_t n = 0;
    const char *alpn = (result == TLS_HS_OK || result == TLS_HS_RESUMED) && cc->s.tls
                           ? tls_conn_alpn(cc->s.tls, &n)
                           : NULL;
    if (alpn && n == 2 && memcmp(alpn, "h2", 2) == 0)
        switch_h2(c);
}

static const client_conn_ops_t proxy_client_ops = {
    .on_request = on_request,
    .body_room = body_room,
    .on_body = on_body,
    .on_reject = on_reject,
    .on_gone = on_gone,
    .on_drained = on_drained,
    .on_timeout = on_timeout,
    .on_raw_data = on_raw_data,
    .on_raw_eof = on_raw_eof,
    .on_close = on_close,
    .on_handshake = on_handshake,
    .on_preface = on_preface,
    .on_drain = on_drain,
};

/* A connection's memory and its request slot's timers. */
static proxy_conn_t *conn_new(proxy_worker_t *pw, uint32_t listener)
{
    proxy_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    request_t *req = &c->req;
    req->cc = &c->cc;
    req->pw = pw;
    exchange_init(&req->slots[0], req, pw->loop);
    exchange_init(&req->slots[1], req, pw->loop);
    req->ex = &req->slots[0];
    uv_timer_init(pw->loop, &req->hedge_timer);
    req->hedge_timer.data = req;
    c->listener = listener;
    return c;
}

void proxy_on_accept(worker_t *w, int fd, size_t listener)
{
    proxy_worker_t *pw = w->app;
    proxy_conn_t *c = conn_new(pw, (uint32_t)listener);
    if (!c) {
        close(fd);
        worker_connection_closed(w);
        return;
    }
    request_t *req = &c->req;
    metrics_downstream_connection(pw->metrics, +1);
    struct tls_server *tls = listener < pw->gen->cfg->server.n_listeners && pw->gen->listener_tls
                                 ? pw->gen->listener_tls[listener]
                                 : NULL;
    if (client_conn_open(&c->cc, &pw->clients, &proxy_client_ops, fd, tls) != 0) {
        close_timers(req);
        return;
    }
    const config_server_t *srv = &pw->gen->cfg->server;
    for (size_t i = 0; i < srv->n_trusted_proxies; i++)
        if (cidr_match(&srv->trusted_proxies[i], (struct sockaddr *)&c->cc.peer))
            req->peer_trusted = 1;
}
