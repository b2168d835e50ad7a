/* Head rewriting; see rewrite.h. Output is written once, front to back, with
 * bounds checked per append: no allocation, no second pass. */
#include "proxy/rewrite.h"

#include <string.h>
#include <strings.h>

#include "core/errors.h"
#include "core/fmt.h"
#include "http/cookie.h"
#include "http/deadline.h"
#include "http/response.h"

typedef struct out {
    char *p;
    size_t len;
    size_t cap;
    bool overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->overflow || o->len + n > o->cap) {
        o->overflow = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define PUT_LIT(o, s) put((o), (s), sizeof(s) - 1)

static void put_header(out_t *o, const char *n, size_t nl, const char *v, size_t vl)
{
    put(o, n, nl);
    PUT_LIT(o, ": ");
    put(o, v, vl);
    PUT_LIT(o, "\r\n");
}

static void put_uint(out_t *o, unsigned v)
{
    char tmp[FMT_U64_MAX_BYTES];
    put(o, tmp, fmt_u64(tmp, v));
}

static bool name_is(const http_header_t *h, const char *lname, size_t n)
{
    return http_header_name_is(h->name, h->name_len, lname, n);
}
#define NAME_IS(h, lit) name_is((h), (lit), sizeof(lit) - 1)

/* Is `name` one of the comma-separated tokens of a Connection header? */
static bool listed_in_connection(const char *name, size_t len, const http_header_t *conn)
{
    if (!conn)
        return false;
    const char *p = conn->value, *end = conn->value + conn->value_len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - tok) == len && strncasecmp(tok, name, len) == 0)
            return true;
    }
    return false;
}

bool rewrite_is_hop_by_hop(const char *name, size_t len, const http_header_t *connection)
{
    /* Framing and routing headers stay whatever Connection lists: dropping
     * them would change how the next hop reads the message. */
    if (http_header_name_is(name, len, "content-length", 14) ||
        http_header_name_is(name, len, "transfer-encoding", 17) ||
        http_header_name_is(name, len, "host", 4))
        return false;
    static const struct {
        const char *n;
        size_t l;
    } hop[] = {
        {"connection", 10}, {"keep-alive", 10}, {"proxy-connection", 16},
        {"te", 2},          {"trailer", 7},     {"upgrade", 7},
    };
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (http_header_name_is(name, len, hop[i].n, hop[i].l))
            return true;
    return listed_in_connection(name, len, connection);
}

bool rewrite_request_id_sane(const char *v, size_t len)
{
    if (len == 0 || len > 128)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

static bool route_removes(const config_route_t *r, const http_header_t *h)
{
    if (!r)
        return false;
    for (size_t i = 0; i < r->n_remove_headers; i++)
        if (name_is(h, r->remove_headers[i], strlen(r->remove_headers[i])))
            return true;
    for (size_t i = 0; i < r->n_set_headers; i++)
        if (strlen(r->set_headers[i].name) == h->name_len &&
            strncasecmp(r->set_headers[i].name, h->name, h->name_len) == 0)
            return true;
    return false;
}

static bool dropped(const rewrite_request_t *in, const http_header_t *h)
{
    for (size_t i = 0; i < in->n_drop; i++)
        if (name_is(h, in->drop[i].name, in->drop[i].len))
            return true;
    return false;
}

/* A Cookie line without the cookie named in->drop_cookie; nothing when no
 * cookie is left. */
static void put_cookie_without(out_t *o, const rewrite_request_t *in, const http_header_t *h)
{
    const char *p = h->value, *end = h->value + h->value_len;
    bool first = true;
    http_cookie_t c;
    while (http_cookie_next(&p, end, &c)) {
        if (c.name_len == in->drop_cookie_len &&
            memcmp(c.name, in->drop_cookie, in->drop_cookie_len) == 0)
            continue;
        if (first) {
            put(o, h->name, h->name_len);
            PUT_LIT(o, ": ");
        } else {
            PUT_LIT(o, "; ");
        }
        put(o, c.pair, c.pair_len);
        first = false;
    }
    if (!first)
        PUT_LIT(o, "\r\n");
}

long rewrite_request_head(const rewrite_request_t *in, char *buf, size_t cap)
{
    const http_head_t *h = in->head;
    out_t o = {buf, 0, cap, false};
    const http_header_t *conn = http_header_find(h->headers, h->n_headers, "connection", 10);
    const http_header_t *xff = NULL;
    bool host_sent = false, grpc = false;

    put(&o, h->method, h->method_len);
    PUT_LIT(&o, " ");
    put(&o, in->target, in->target_len);
    PUT_LIT(&o, " HTTP/1.1\r\n");

    for (uint32_t i = 0; i < h->n_headers; i++) {
        const http_header_t *hd = &h->headers[i];
        if (rewrite_is_hop_by_hop(hd->name, hd->name_len, conn))
            continue;
        if (NAME_IS(hd, "host")) {
            if (host_sent)
                continue;
            host_sent = true;
            if (in->host) {
                put_header(&o, "Host", 4, in->host, in->host_len);
                continue;
            }
        } else if (NAME_IS(hd, "x-forwarded-for")) {
            if (!xff)
                xff = hd; /* merged below with the peer appended */
            continue;
        } else if (NAME_IS(hd, "x-request-id") || NAME_IS(hd, "x-api-key") ||
                   NAME_IS(hd, "x-client-id")) {
            continue;
        } else if ((NAME_IS(hd, "x-forwarded-proto") || NAME_IS(hd, "x-forwarded-host")) &&
                   !in->peer_trusted) {
            continue;
        }
        if (route_removes(in->route, hd) || dropped(in, hd))
            continue;
        if (in->calls && (NAME_IS(hd, "content-length") || NAME_IS(hd, "transfer-encoding") ||
                          NAME_IS(hd, "expect") || NAME_IS(hd, "accept-encoding")))
            continue;
        if (in->drop_cookie && NAME_IS(hd, "cookie")) {
            put_cookie_without(&o, in, hd);
            continue;
        }
        if (in->trace && ((in->trace->w3c && NAME_IS(hd, "traceparent")) ||
                          (in->trace->datadog && (NAME_IS(hd, "x-datadog-trace-id") ||
                                                  NAME_IS(hd, "x-datadog-parent-id") ||
                                                  NAME_IS(hd, "x-datadog-sampling-priority")))))
            continue;
        if (in->deadline && (NAME_IS(hd, "x-request-timeout-ms") || NAME_IS(hd, "grpc-timeout")))
            continue;
        if (in->deadline && NAME_IS(hd, "content-type") &&
            http_content_type_is_grpc(hd->value, hd->value_len))
            grpc = true; /* its deadline goes as grpc-timeout too */
        put_header(&o, hd->name, hd->name_len, hd->value, hd->value_len);
    }
    if (!host_sent && in->host)
        put_header(&o, "Host", 4, in->host, in->host_len);

    PUT_LIT(&o, "X-Forwarded-For: ");
    if (xff) {
        /* Several X-Forwarded-For lines are one list, in order. */
        for (uint32_t i = (uint32_t)(xff - h->headers); i < h->n_headers; i++) {
            const http_header_t *x = &h->headers[i];
            if (x->value_len && NAME_IS(x, "x-forwarded-for")) {
                put(&o, x->value, x->value_len);
                PUT_LIT(&o, ", ");
            }
        }
    }
    put(&o, in->peer_ip, in->peer_ip_len);
    PUT_LIT(&o, "\r\n");
    bool have_xfp =
        in->peer_trusted && http_header_find(h->headers, h->n_headers, "x-forwarded-proto", 17);
    bool have_xfh =
        in->peer_trusted && http_header_find(h->headers, h->n_headers, "x-forwarded-host", 16);
    if (!have_xfp) {
        PUT_LIT(&o, "X-Forwarded-Proto: ");
        put(&o, in->proto, strlen(in->proto));
        PUT_LIT(&o, "\r\n");
    }
    if (!have_xfh) {
        const http_header_t *host = http_header_find(h->headers, h->n_headers, "host", 4);
        const char *hv = in->host ? in->host : host ? host->value : NULL;
        size_t hl = in->host ? in->host_len : host ? host->value_len : 0;
        if (hv)
            put_header(&o, "X-Forwarded-Host", 16, hv, hl);
    }
    put_header(&o, "X-Request-Id", 12, in->request_id, in->request_id_len);
    if (in->upgrade) {
        PUT_LIT(&o, "Connection: upgrade\r\n");
        put_header(&o, "Upgrade", 7, in->upgrade, in->upgrade_len);
    }
    if (in->trace && in->trace->w3c) {
        PUT_LIT(&o, "traceparent: ");
        in->trace->traceparent_off = (uint32_t)o.len;
        put(&o, in->trace->traceparent, TRACEPARENT_LEN);
        PUT_LIT(&o, "\r\n");
    }
    if (in->trace && in->trace->datadog) {
        put_header(&o, "x-datadog-trace-id", 18, in->trace->dd_trace_id,
                   in->trace->dd_trace_id_len);
        PUT_LIT(&o, "x-datadog-parent-id: ");
        in->trace->dd_parent_off = (uint32_t)o.len;
        put(&o, in->trace->dd_parent_id, TRACE_DD_ID_DIGITS);
        PUT_LIT(&o, "\r\nx-datadog-sampling-priority: ");
        put(&o, in->trace->sampled ? "1" : "0", 1);
        PUT_LIT(&o, "\r\n");
    }
    if (in->route)
        for (size_t i = 0; i < in->route->n_set_headers; i++)
            put_header(&o, in->route->set_headers[i].name, strlen(in->route->set_headers[i].name),
                       in->route->set_headers[i].value, strlen(in->route->set_headers[i].value));
    if (in->client_id)
        put_header(&o, "X-Client-Id", 11, in->client_id, strlen(in->client_id));
    if (in->add_len)
        put(&o, in->add, in->add_len);
    if (in->deadline) {
        static const char blank[DEADLINE_MS_WIDTH] = "         0";
        in->deadline->grpc_off = 0;
        if (grpc) {
            PUT_LIT(&o, "grpc-timeout:");
            in->deadline->grpc_off = (uint32_t)o.len;
            put(&o, blank + DEADLINE_MS_WIDTH - DEADLINE_GRPC_WIDTH, DEADLINE_GRPC_WIDTH);
            PUT_LIT(&o, "\r\n");
        }
        PUT_LIT(&o, "X-Request-Timeout-Ms:");
        in->deadline->ms_off = (uint32_t)o.len;
        put(&o, blank, DEADLINE_MS_WIDTH);
        PUT_LIT(&o, "\r\n");
    }
    PUT_LIT(&o, "\r\n");
    return o.overflow ? FE_TOOBIG : (long)o.len;
}

long rewrite_response_head(const rewrite_response_t *in, char *buf, size_t cap)
{
    const http_head_t *h = in->head;
    out_t o = {buf, 0, cap, false};
    const http_header_t *conn = http_header_find(h->headers, h->n_headers, "connection", 10);

    PUT_LIT(&o, "HTTP/1.1 ");
    put_uint(&o, (unsigned)h->status);
    PUT_LIT(&o, " ");
    const char *reason = http_status_reason(h->status);
    put(&o, reason, strlen(reason));
    PUT_LIT(&o, "\r\n");
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const http_header_t *hd = &h->headers[i];
        if (rewrite_is_hop_by_hop(hd->name, hd->name_len, conn) || NAME_IS(hd, "x-request-id"))
            continue;
        if (NAME_IS(hd, "transfer-encoding") && in->body != REWRITE_BODY_AS_IS)
            continue;
        put_header(&o, hd->name, hd->name_len, hd->value, hd->value_len);
    }
    put_header(&o, "X-Request-Id", 12, in->request_id, in->request_id_len);
    if (in->upgrade) {
        PUT_LIT(&o, "Connection: upgrade\r\n");
        put_header(&o, "Upgrade", 7, in->upgrade, in->upgrade_len);
    } else if (!in->keep_alive)
        PUT_LIT(&o, "Connection: close\r\n");
    else if (in->client_http10)
        PUT_LIT(&o, "Connection: keep-alive\r\n");
    PUT_LIT(&o, "\r\n");
    return o.overflow ? FE_TOOBIG : (long)o.len;
}

long rewrite_retarget(const char *src, size_t len, size_t head_len, const char *method,
                      size_t method_len, const char *target, size_t target_len, const char *extra,
                      size_t extra_len, char *dst, size_t cap, long *shift)
{
    const char *eol = memchr(src, '\n', head_len);
    if (!eol)
        return FE_PARSE;
    size_t old_line = (size_t)(eol + 1 - src);
    size_t rest = len - old_line;
    size_t line = method_len + 1 + target_len + sizeof(" HTTP/1.1\r\n") - 1 + extra_len;
    if (line + rest > cap)
        return FE_TOOBIG;
    char *w = dst;
    memcpy(w, method, method_len);
    w += method_len;
    *w++ = ' ';
    memcpy(w, target, target_len);
    w += target_len;
    memcpy(w, " HTTP/1.1\r\n", 11);
    w += 11;
    memcpy(w, extra, extra_len);
    w += extra_len;
    memcpy(w, eol + 1, rest);
    *shift = (long)line - (long)old_line;
    return (long)(line + rest);
}
