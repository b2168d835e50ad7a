/* Tracing: trace-context headers, ids and sampling (sans-I/O), the OTLP/JSON
 * encoder, and the exporter: per-worker single-producer/single-consumer rings
 * drained by one thread that POSTs batches over a kept-alive HTTP/1.1
 * connection (client/fetch: blocking, time-bounded). */
#include "observe/trace.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "client/fetch.h"
#include "config/config.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/fmt.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/time.h"
#include "core/url.h"

#ifndef FICUS_VERSION
#define FICUS_VERSION "0.0.0"
#endif

#define RING_MASK (TRACE_RING_SPANS - 1)
_Static_assert((TRACE_RING_SPANS & RING_MASK) == 0, "TRACE_RING_SPANS must be a power of two");

/* ------------------------------------------------------------ hex, headers */

static const char hex_digits[] = "0123456789abcdef";

void trace_hex(char *out, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[b[i] >> 4];
        out[2 * i + 1] = hex_digits[b[i] & 15];
    }
}

/* Lower-case hex only: W3C forbids upper case so ids compare as strings. */
static int lhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* n bytes from 2n lower-case hex chars: 0, or -1 on a bad char. */
static int unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = lhex(s[2 * i]), lo = lhex(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static void trim_ows(const char **v, size_t *n)
{
    while (*n && ((*v)[0] == ' ' || (*v)[0] == '\t')) {
        (*v)++;
        (*n)--;
    }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
        (*n)--;
}

int trace_parse_traceparent(const char *v, size_t n, uint8_t trace_id[16], uint8_t parent_id[8],
                            uint8_t *flags)
{
    if (!v)
        return -1;
    trim_ows(&v, &n);
    if (n < TRACEPARENT_LEN)
        return -1;
    uint8_t version, tid[16], pid[8], fl;
    if (unhex(v, &version, 1) || version == 0xff)
        return -1;
    /* Version 00 has exactly this layout; a later one may only append
     * "-..." fields, which a level-1 parser skips. */
    if (version == 0 ? n != TRACEPARENT_LEN : n > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != '-')
        return -1;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return -1;
    if (unhex(v + 3, tid, 16) || unhex(v + 36, pid, 8) || unhex(v + 53, &fl, 1))
        return -1;
    if (all_zero(tid, 16) || all_zero(pid, 8))
        return -1;
    memcpy(trace_id, tid, 16);
    memcpy(parent_id, pid, 8);
    *flags = fl;
    return 0;
}

void trace_format_traceparent(char out[TRACEPARENT_LEN], const uint8_t trace_id[16],
                              const uint8_t span_id[8], bool sampled)
{
    memcpy(out, "00-", 3);
    trace_hex(out + 3, trace_id, 16);
    out[35] = '-';
    trace_hex(out + 36, span_id, 8);
    out[52] = '-';
    out[53] = '0';
    out[54] = sampled ? '1' : '0';
}

void trace_patch_span_id(char tp[TRACEPARENT_LEN], const uint8_t span_id[8])
{
    trace_hex(tp + 36, span_id, 8);
}

int trace_parse_datadog_id(const char *v, size_t n, uint64_t *out)
{
    if (!v)
        return -1;
    trim_ows(&v, &n);
    if (n == 0 || n > 20)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    if (x == 0)
        return -1;
    *out = x;
    return 0;
}

void trace_dd_format_id(char out[TRACE_DD_ID_DIGITS], uint64_t id)
{
    for (int i = TRACE_DD_ID_DIGITS - 1; i >= 0; i--) {
        out[i] = (char)('0' + id % 10);
        id /= 10;
    }
}

/* ------------------------------------------------------- ids and sampling */

uint64_t trace_span_id_u64(const uint8_t id[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | id[i];
    return v;
}

void trace_span_id_from_u64(uint64_t v, uint8_t out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)v;
        v >>= 8;
    }
}

void trace_new_trace_id(uint64_t *rng, uint8_t out[16])
{
    uint64_t hi, lo;
    do {
        hi = rand_next(rng);
        lo = rand_next(rng);
    } while ((hi | lo) == 0);
    trace_span_id_from_u64(hi, out);
    trace_span_id_from_u64(lo, out + 8);
}

void trace_new_span_id(uint64_t *rng, uint8_t out[8], bool dd_compatible)
{
    uint64_t v;
    if (dd_compatible) {
        /* Rejection keeps the draw uniform (a modulo would favour the low
         * ids); 89% of 63-bit draws are in range. */
        do
            v = rand_next(rng) >> 1;
        while (v < TRACE_DD_ID_MIN);
    } else {
        do
            v = rand_next(rng);
        while (v == 0);
    }
    trace_span_id_from_u64(v, out);
}

bool trace_sample(uint64_t *rng, double ratio)
{
    if (!(ratio > 0)) /* NaN too */
        return false;
    if (ratio >= 1)
        return true;
    return rand_unit(rng) < ratio;
}

/* ------------------------------------------------------------- OTLP/JSON */

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* The encoder writes through a raw pointer into room reserved up front (a
 * span has a bounded size: its strings are fixed arrays), so the inner loop
 * has no bounds checks and no calls per fragment: at full sampling it runs
 * for every request. */
#define PUT(w, lit) (memcpy((w), (lit), sizeof(lit) - 1), (w) += sizeof(lit) - 1)

/* A JSON string literal; bytes that are not UTF-8 become U+FFFD so the
 * collector never rejects a whole batch for one odd request path. Writes at
 * most 6 * n + 2 bytes. */
static char *put_jstr(char *w, const char *s, size_t n)
{
    *w++ = '"';
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* The common case: a run of plain printable ASCII. */
        size_t run = i;
        while (run < n && p[run] >= 0x20 && p[run] < 0x7f && p[run] != '"' && p[run] != '\\')
            run++;
        memcpy(w, p + i, run - i);
        w += run - i;
        i = run;
        if (i == n)
            break;
        unsigned char c = p[i];
        if (c >= 0x80) {
            size_t len = utf8_len(p + i, n - i);
            if (len) {
                memcpy(w, p + i, len);
                w += len;
                i += len;
            } else {
                PUT(w, "\\ufffd");
                i++;
            }
            continue;
        }
        i++;
        if (c == '"' || c == '\\') {
            *w++ = '\\';
            *w++ = (char)c;
        } else if (c == '\n') {
            PUT(w, "\\n");
        } else if (c == '\r') {
            PUT(w, "\\r");
        } else if (c == '\t') {
            PUT(w, "\\t");
        } else {
            PUT(w, "\\u00");
            w[0] = hex_digits[c >> 4];
            w[1] = hex_digits[c & 15];
            w += 2;
        }
    }
    *w++ = '"';
    return w;
}

static int json_str(buf_t *o, const char *s, size_t n)
{
    if (buf_reserve(o, n * 6 + 2))
        return -1;
    o->len = (size_t)(put_jstr(o->data + o->len, s, n) - o->data);
    return 0;
}

/* A fixed-size span field: up to its first NUL, never past its end. */
#define FIELD(f) (f), strnlen((f), sizeof(f))

/* Attributes: KEY is a literal; the first one has no comma before it. */
#define ATTR_OPEN(w, first, key)                                                                   \
    do {                                                                                           \
        if (!(first))                                                                              \
            *(w)++ = ',';                                                                          \
        (first) = false;                                                                           \
        PUT(w, "{\"key\":\"" key "\",\"value\":{");                                                \
    } while (0)

static char *attr_str(char *w, bool *first, const char *key_open, size_t key_len, const char *s,
                      size_t n)
{
    if (n == 0)
        return w;
    if (!*first)
        *w++ = ',';
    *first = false;
    memcpy(w, key_open, key_len);
    w += key_len;
    PUT(w, "\"stringValue\":");
    w = put_jstr(w, s, n);
    PUT(w, "}}");
    return w;
}

/* ATTR_STR(w, first, "key", s, n) */
#define ATTR_STR(w, first, key, ...)                                                               \
    ((w) = attr_str((w), &(first), "{\"key\":\"" key "\",\"value\":{",                             \
                    sizeof("{\"key\":\"" key "\",\"value\":{") - 1, __VA_ARGS__))

/* proto3 JSON writes int64 as a decimal string. */
#define ATTR_INT(w, first, key, v)                                                                 \
    do {                                                                                           \
        ATTR_OPEN(w, first, key);                                                                  \
        PUT(w, "\"intValue\":\"");                                                                 \
        (w) += fmt_u64((w), (v));                                                                  \
        PUT(w, "\"}}");                                                                            \
    } while (0)

#define ATTR_BOOL(w, first, key, v)                                                                \
    do {                                                                                           \
        ATTR_OPEN(w, first, key);                                                                  \
        if (v)                                                                                     \
            PUT(w, "\"boolValue\":true}}");                                                        \
        else                                                                                       \
            PUT(w, "\"boolValue\":false}}");                                                       \
    } while (0)

/* server.address and server.port from a "host:port" or "[v6]:port" target,
 * as the semantic conventions split them. */
static char *attr_server(char *w, bool *first, const char *target, size_t n)
{
    const char *host = target, *colon = NULL;
    size_t hlen = n;
    if (n && target[0] == '[') {
        const char *rb = memchr(target, ']', n);
        if (rb) {
            host = target + 1;
            hlen = (size_t)(rb - target) - 1;
            colon = rb + 1 < target + n && rb[1] == ':' ? rb + 1 : NULL;
        }
    } else {
        colon = memrchr(target, ':', n);
        if (colon && memchr(target, ':', (size_t)(colon - target)))
            colon = NULL; /* a bare v6 literal */
        if (colon)
            hlen = (size_t)(colon - target);
    }
    ATTR_STR(w, *first, "server.address", host, hlen);
    if (!colon)
        return w;
    uint64_t port = 0;
    const char *p = colon + 1, *end = target + n;
    if (p == end || end - p > 5)
        return w;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return w;
        port = port * 10 + (uint64_t)(*p - '0');
    }
    if (port && port <= 65535)
        ATTR_INT(w, *first, "server.port", port);
    return w;
}

static char *put_hex_q(char *w, const uint8_t *b, size_t n)
{
    *w++ = '"';
    trace_hex(w, b, n);
    w += 2 * n;
    *w++ = '"';
    return w;
}

static char *put_u64_q(char *w, uint64_t v)
{
    *w++ = '"';
    w += fmt_u64(w, v);
    *w++ = '"';
    return w;
}

/* Room one span can take: the fixed text plus every string field escaped at
 * 6 bytes per byte (the target appears twice). */
#define SPAN_JSON_MAX                                                                              \
    (2048 +                                                                                        \
     6 * (sizeof(((trace_span_t *)0)->name) + sizeof(((trace_span_t *)0)->method) +                \
          sizeof(((trace_span_t *)0)->route) + sizeof(((trace_span_t *)0)->target_group) +         \
          2 * sizeof(((trace_span_t *)0)->target) + sizeof(((trace_span_t *)0)->path) +            \
          sizeof(((trace_span_t *)0)->client_ip) + sizeof(((trace_span_t *)0)->request_id) +       \
          sizeof(((trace_span_t *)0)->client_id) + 2 * sizeof(((trace_span_t *)0)->error_type)))

/* One Span object. */
static int span_json(buf_t *o, const trace_span_t *s)
{
    if (buf_reserve(o, SPAN_JSON_MAX))
        return -1;
    char *w = o->data + o->len;
    bool client = s->kind == TRACE_SPAN_CLIENT;
    PUT(w, "{\"traceId\":");
    w = put_hex_q(w, s->trace_id, 16);
    PUT(w, ",\"spanId\":");
    w = put_hex_q(w, s->span_id, 8);
    if (!all_zero(s->parent_id, 8)) {
        PUT(w, ",\"parentSpanId\":");
        w = put_hex_q(w, s->parent_id, 8);
    }
    /* The proto calls a name "semantically required". */
    size_t name_len = strnlen(s->name, sizeof s->name);
    const char *name = s->name;
    if (name_len == 0) {
        name = client ? "upstream" : "request";
        name_len = strlen(name);
    }
    PUT(w, ",\"name\":");
    w = put_jstr(w, name, name_len);
    if (client)
        PUT(w, ",\"kind\":3,\"startTimeUnixNano\":");
    else
        PUT(w, ",\"kind\":2,\"startTimeUnixNano\":");
    w = put_u64_q(w, s->start_unix_ns);
    PUT(w, ",\"endTimeUnixNano\":");
    w = put_u64_q(w, s->end_unix_ns < s->start_unix_ns ? s->start_unix_ns : s->end_unix_ns);
    PUT(w, ",\"attributes\":[");

    bool first = true;
    ATTR_STR(w, first, "http.request.method", FIELD(s->method));
    ATTR_STR(w, first, "url.path", FIELD(s->path));
    if (client)
        w = attr_server(w, &first, FIELD(s->target));
    else
        ATTR_STR(w, first, "client.address", FIELD(s->client_ip));
    if (s->status)
        ATTR_INT(w, first, "http.response.status_code", s->status);
    ATTR_STR(w, first, "ficus.route", FIELD(s->route));
    ATTR_STR(w, first, "ficus.target_group", FIELD(s->target_group));
    ATTR_STR(w, first, "ficus.target", FIELD(s->target));
    if (s->attempt)
        ATTR_INT(w, first, "ficus.attempt", s->attempt);
    if (client)
        ATTR_BOOL(w, first, "ficus.retry", s->retry);
    ATTR_BOOL(w, first, "ficus.fallback", s->fallback);
    if (s->hedge)
        ATTR_BOOL(w, first, "ficus.hedge", s->hedge);
    ATTR_STR(w, first, "ficus.request_id", FIELD(s->request_id));
    ATTR_STR(w, first, "ficus.client_id", FIELD(s->client_id));
    ATTR_STR(w, first, "error.type", FIELD(s->error_type));
    *w++ = ']';

    if (s->error) {
        /* Status code 2 = STATUS_CODE_ERROR; unset (0) is left out. */
        char msg[32];
        const char *m = s->error_type;
        size_t mlen = strnlen(s->error_type, sizeof s->error_type);
        if (mlen == 0) {
            int n = s->status ? snprintf(msg, sizeof msg, "HTTP %u", (unsigned)s->status)
                              : snprintf(msg, sizeof msg, "error");
            m = msg;
            mlen = (size_t)n;
        }
        PUT(w, ",\"status\":{\"code\":2,\"message\":");
        w = put_jstr(w, m, mlen);
        *w++ = '}';
    }
    *w++ = '}';
    o->len = (size_t)(w - o->data);
    return 0;
}

static int doc_begin(buf_t *o, const char *service_name)
{
    if (!service_name || !*service_name)
        service_name = DEFAULT_SERVICE_NAME;
    if (buf_append_str(o, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service."
                          "name\",\"value\":{\"stringValue\":") ||
        json_str(o, service_name, strlen(service_name)) ||
        buf_append_str(o, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"ficus\",\"version\":") ||
        json_str(o, FICUS_VERSION, strlen(FICUS_VERSION)) || buf_append_str(o, "},\"spans\":["))
        return -1;
    return 0;
}

static int doc_end(buf_t *o) { return buf_append_str(o, "]}]}]}") ? -1 : 0; }

int trace_encode_otlp_json(const trace_span_t *spans, size_t n, const char *service_name,
                           buf_t *out)
{
    size_t start = out->len;
    int rc = doc_begin(out, service_name);
    for (size_t i = 0; i < n && !rc; i++)
        rc = (i && buf_append_str(out, ",")) || span_json(out, &spans[i]) ? -1 : 0;
    if (!rc)
        rc = doc_end(out);
    if (rc)
        out->len = start;
    return rc;
}

/* ------------------------------------------------------- the exporter */

/* One worker's ring. head is written by the worker only, tail by the
 * exporter only; each reads the other's with acquire so that slot contents
 * cross threads with the index. Separate cache lines keep the two sides from
 * invalidating each other on every span. */
typedef struct ring {
    _Alignas(64) uint64_t head; /* next slot the worker publishes */
    bool reserved;              /* worker-only: a slot is handed out */
    _Alignas(64) uint64_t tail; /* next slot the exporter reads */
    trace_span_t *slots;
} ring_t;

typedef struct endpoint {
    char host[256]; /* v6 without brackets */
    char port[6];
    char *path;        /* request target, malloc'd */
    char *host_header; /* "host[:port]", malloc'd */
    char *url;         /* for log lines, malloc'd */
} endpoint_t;

struct tracer {
    ring_t *rings;
    size_t n_workers;
    trace_span_t *slots;
    metrics_registry_t *metrics;
    char *service_name;
    endpoint_t ep;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;        /* under mu */
    uint64_t stop_ms; /* set with stop: the final flush's clock starts here */

    /* exporter thread only */
    fetch_t http; /* the kept-alive connection to the collector */
    uint64_t backoff_until_ms;
    size_t next_ring; /* batches start at a rotating ring so no worker starves */
    buf_t body;

    uint64_t exported; /* atomic */
};

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void endpoint_deinit(endpoint_t *ep)
{
    free(ep->path);
    free(ep->host_header);
    free(ep->url);
}

/* "http://host[:port][/path]" -> ep. The path goes into the request line as
 * is, so no byte may end a line. */
static int endpoint_parse(const char *url, endpoint_t *ep, char *err, size_t errlen)
{
    memset(ep, 0, sizeof *ep);
    if (!url || !*url) {
        errf(err, errlen, "tracing.otlp_endpoint is empty");
        return FE_INVAL;
    }
    url_http_t u;
    char why[128];
    if (url_parse_http(url, &u, why, sizeof why) != 0) {
        errf(err, errlen, "tracing.otlp_endpoint: %s", why);
        return FE_INVAL;
    }
    char host[sizeof u.host + 8];
    url_host_header(&u, host, sizeof host);
    memcpy(ep->host, u.host, sizeof ep->host);
    memcpy(ep->port, u.port, sizeof ep->port);
    ep->host_header = strdup(host);
    const char *rest = u.path;
    size_t rest_len = u.path_len;
    if (rest_len == 0 || rest[0] == '?') {
        if (asprintf(&ep->path, "%s%.*s", DEFAULT_OTLP_PATH, (int)rest_len, rest) < 0)
            ep->path = NULL;
    } else
        ep->path = strndup(rest, rest_len);
    ep->url = strdup(url);
    if (!ep->host_header || !ep->path || !ep->url) {
        endpoint_deinit(ep);
        memset(ep, 0, sizeof *ep);
        errf(err, errlen, "out of memory");
        return FE_NOMEM;
    }
    return 0;
}

/* POSTs body (one JSON document) on the kept-alive connection. 0 on a 2xx
 * answer, else FE_* with why. */
static int post(tracer_t *t, const char *body, size_t len, uint64_t deadline_ms, char *why,
                size_t whylen)
{
    request_t rq = {.method = "POST",
                    .target = t->ep.path,
                    .host = t->ep.host_header,
                    .headers =
                        "User-Agent: ficus/" FICUS_VERSION "\r\nContent-Type: application/json\r\n",
                    .body = body,
                    .body_len = len};
    int rc = fetch_do(&t->http, &rq, deadline_ms);
    int status = reply_status(&t->http.reply);
    /* The status is all that matters: an answer too long to read still has one. */
    if (rc != 0 && !(t->http.fail == FETCH_TOOBIG && status)) {
        errf(why, whylen, "%s", t->http.why);
        return rc;
    }
    if (status < 200 || status > 299) {
        errf(why, whylen, "HTTP %d", status);
        return FE_IO;
    }
    return 0;
}

/* Moves up to max committed spans into the body as one document; returns
 * how many. Spans that cannot be encoded are dropped and counted. */
static size_t drain_into_body(tracer_t *t, size_t max)
{
    buf_reset(&t->body);
    if (doc_begin(&t->body, t->service_name))
        return 0;
    size_t n = 0, bad = 0;
    for (size_t k = 0; k < t->n_workers && n < max; k++) {
        ring_t *r = &t->rings[(t->next_ring + k) % t->n_workers];
        uint64_t tail = r->tail;
        uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        for (; tail != head && n < max; tail++) {
            size_t mark = t->body.len;
            const trace_span_t *s = &r->slots[tail & RING_MASK];
            if ((n && buf_append_str(&t->body, ",")) || span_json(&t->body, s) ||
                buf_reserve(&t->body, 8)) { /* room for the closing brackets */
                t->body.len = mark;
                bad++;
                continue;
            }
            n++;
        }
        __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    }
    t->next_ring = (t->next_ring + 1) % t->n_workers;
    if (bad && t->metrics)
        metrics_trace_dropped(t->metrics, bad);
    doc_end(&t->body);
    return n;
}

/* Empties every ring, counting the spans as dropped (collector backing off,
 * or shutting down). */
static void drop_all(tracer_t *t)
{
    uint64_t dropped = 0;
    for (size_t i = 0; i < t->n_workers; i++) {
        ring_t *r = &t->rings[i];
        uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        dropped += head - r->tail;
        __atomic_store_n(&r->tail, head, __ATOMIC_RELEASE);
    }
    if (dropped && t->metrics)
        metrics_trace_dropped(t->metrics, dropped);
}

/* Exports what the rings hold, batch by batch, until they are empty, a batch
 * fails, or (final) the deadline passes. Returns the spans it sent. */
static size_t export_round(tracer_t *t, bool final, uint64_t final_deadline_ms)
{
    size_t sent = 0;
    if (!final && time_now_ms() < t->backoff_until_ms) {
        drop_all(t);
        return 0;
    }
    /* Bounded so that workers producing as fast as we send cannot keep the
     * exporter from noticing a stop. */
    size_t max_batches = t->n_workers * (TRACE_RING_SPANS / TRACE_BATCH_SPANS + 1);
    for (size_t b = 0; b < max_batches; b++) {
        uint64_t deadline_ms = time_now_ms() + TRACE_EXPORT_TIMEOUT_MS;
        if (final && deadline_ms > final_deadline_ms)
            deadline_ms = final_deadline_ms;
        if (final && time_now_ms() >= deadline_ms)
            return sent; /* the rest is counted by tracer_free */
        size_t n = drain_into_body(t, TRACE_BATCH_SPANS);
        if (n == 0)
            return sent;
        char why[256] = "";
        int rc = post(t, t->body.data, t->body.len, deadline_ms, why, sizeof why);
        if (rc == 0) {
            __atomic_fetch_add(&t->exported, n, __ATOMIC_RELAXED);
            sent += n;
        } else {
            if (t->metrics) {
                metrics_trace_export_failure(t->metrics);
                metrics_trace_dropped(t->metrics, n);
            }
            log_limited(LOG_WARN, "tracing: export of %zu spans to %s failed: %s", n, t->ep.url,
                        why);
            t->backoff_until_ms = time_now_ms() + TRACE_EXPORT_BACKOFF_MS;
            return sent;
        }
        if (n < TRACE_BATCH_SPANS)
            return sent;
        if (!final) {
            pthread_mutex_lock(&t->mu);
            bool stop = t->stop;
            pthread_mutex_unlock(&t->mu);
            if (stop)
                return sent;
        }
    }
    return sent;
}

static void *exporter_main(void *arg)
{
    tracer_t *t = arg;
    size_t sent = 0;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        /* Under load (a full batch went out) come back soon, before the
         * rings fill; otherwise wake rarely. */
        uint64_t wait_ms =
            sent >= TRACE_BATCH_SPANS ? TRACE_EXPORT_BUSY_INTERVAL_MS : TRACE_EXPORT_INTERVAL_MS;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(wait_ms / 1000);
        ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        if (t->stop)
            break;
        pthread_mutex_unlock(&t->mu);
        sent = export_round(t, false, 0);
        pthread_mutex_lock(&t->mu);
    }
    uint64_t final_deadline_ms = t->stop_ms + TRACE_EXPORT_TIMEOUT_MS;
    pthread_mutex_unlock(&t->mu);
    export_round(t, true, final_deadline_ms);
    return NULL;
}

tracer_t *tracer_new(const config_tracing_t *cfg, size_t n_workers, metrics_registry_t *metrics,
                     char *err, size_t errlen)
{
    if (!cfg) {
        errf(err, errlen, "no tracing configuration");
        return NULL;
    }
    if (n_workers == 0 || n_workers > MAX_WORKERS) {
        errf(err, errlen, "tracer: %zu workers (1 to %d)", n_workers, MAX_WORKERS);
        return NULL;
    }
    tracer_t *t = calloc(1, sizeof *t);
    if (!t) {
        errf(err, errlen, "out of memory");
        return NULL;
    }
    t->n_workers = n_workers;
    t->metrics = metrics;
    buf_init(&t->body, TRACE_EXPORT_MAX_BYTES);
    if (endpoint_parse(cfg->otlp_endpoint, &t->ep, err, errlen) != 0)
        goto fail_free;
    fetch_init(&t->http, t->ep.host, t->ep.port, NULL, TRACE_RESPONSE_MAX_BYTES,
               TRACE_RESPONSE_MAX_BYTES, REPLY_BODY_ALL);
    t->service_name =
        strdup(cfg->service_name && *cfg->service_name ? cfg->service_name : DEFAULT_SERVICE_NAME);
    size_t rings_bytes = (n_workers * sizeof(ring_t) + 63) / 64 * 64;
    t->rings = aligned_alloc(64, rings_bytes);
    /* Untouched slots stay unbacked pages: a quiet worker costs no memory. */
    t->slots = calloc(n_workers * TRACE_RING_SPANS, sizeof(trace_span_t));
    if (!t->service_name || !t->rings || !t->slots) {
        errf(err, errlen, "out of memory");
        goto fail_free_parts;
    }
    memset(t->rings, 0, rings_bytes);
    for (size_t i = 0; i < n_workers; i++)
        t->rings[i].slots = t->slots + i * TRACE_RING_SPANS;

    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        errf(err, errlen, "tracer: condition attributes");
        goto fail_free_parts;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        errf(err, errlen, "tracer: condition variable: %s", strerror(rc));
        goto fail_free_parts;
    }
    if ((rc = pthread_mutex_init(&t->mu, NULL)) != 0) {
        errf(err, errlen, "tracer: mutex: %s", strerror(rc));
        goto fail_destroy_cv;
    }
    /* Signals belong to the event loops: the thread starts with all blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&t->thread, NULL, exporter_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        errf(err, errlen, "tracer: starting the exporter thread: %s", strerror(rc));
        goto fail_destroy_mutex;
    }
    return t;

fail_destroy_mutex:
    pthread_mutex_destroy(&t->mu);
fail_destroy_cv:
    pthread_cond_destroy(&t->cv);
fail_free_parts:
    free(t->slots);
    free(t->rings);
    free(t->service_name);
    fetch_deinit(&t->http);
    endpoint_deinit(&t->ep);
fail_free:
    buf_deinit(&t->body);
    free(t);
    return NULL;
}

void tracer_free(tracer_t *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    t->stop_ms = time_now_ms();
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    drop_all(t); /* what the final export had no time for */
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->slots);
    free(t->rings);
    free(t->service_name);
    fetch_deinit(&t->http);
    endpoint_deinit(&t->ep);
    buf_deinit(&t->body);
    free(t);
}

trace_span_t *tracer_reserve(tracer_t *t, size_t worker)
{
    if (!t)
        return NULL;
    if (worker >= t->n_workers) {
        if (t->metrics)
            metrics_trace_dropped(t->metrics, 1);
        return NULL;
    }
    ring_t *r = &t->rings[worker];
    uint64_t head = r->head;
    if (head - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) >= TRACE_RING_SPANS) {
        r->reserved = false;
        if (t->metrics)
            metrics_trace_dropped(t->metrics, 1);
        return NULL;
    }
    r->reserved = true;
    trace_span_t *s = &r->slots[head & RING_MASK];
    memset(s, 0, sizeof *s);
    return s;
}

void tracer_commit(tracer_t *t, size_t worker)
{
    if (!t || worker >= t->n_workers || !t->rings[worker].reserved)
        return;
    ring_t *r = &t->rings[worker];
    r->reserved = false;
    __atomic_store_n(&r->head, r->head + 1, __ATOMIC_RELEASE);
}

uint64_t tracer_exported(const tracer_t *t)
{
    return t ? __atomic_load_n(&t->exported, __ATOMIC_RELAXED) : 0;
}
