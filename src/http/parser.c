/* llhttp wrapper: collects head spans, refuses what llhttp's strict mode lets
 * through but a proxy must not (obs-fold), and pauses at head and message
 * boundaries. */
#include "http/parser.h"

#include <string.h>
#include <strings.h>

#include "core/errors.h"

static http_parser_t *self(llhttp_t *ll) { return (http_parser_t *)ll->data; }

/* llhttp replaces a callback's reason with its own: keep ficus's. */
static void set_reason(http_parser_t *p, const char *why)
{
    p->reason = why;
    llhttp_set_error_reason(&p->ll, why);
}

static int on_message_begin(llhttp_t *ll)
{
    http_parser_t *p = self(ll);
    p->in_head = 1;
    p->body_bytes = 0;
    p->field_open = p->value_open = 0;
    p->last_value_end = NULL;
    if (p->head) {
        p->head->n_headers = 0;
        p->head->method = p->head->target = NULL;
        p->head->method_len = p->head->target_len = 0;
    }
    return 0;
}

static int on_method(llhttp_t *ll, const char *at, size_t n)
{
    http_parser_t *p = self(ll);
    if (p->head) {
        if (!p->head->method)
            p->head->method = at;
        p->head->method_len += (uint32_t)n;
    }
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    http_parser_t *p = self(ll);
    if (p->head) {
        if (!p->head->target)
            p->head->target = at;
        p->head->target_len += (uint32_t)n;
    }
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    http_parser_t *p = self(ll);
    http_head_t *h = p->head;
    if (!h || !p->in_head)
        return 0; /* trailers are not part of the head */
    if (!p->field_open) {
        if (h->n_headers >= MAX_REQUEST_HEADERS) {
            p->err = HTTP_ERR_TOO_MANY;
            return HPE_USER;
        }
        http_header_t *hd = &h->headers[h->n_headers++];
        hd->name = at;
        hd->name_len = 0;
        hd->value = at + n; /* empty value until one arrives */
        hd->value_len = 0;
        p->field_open = 1;
        p->value_open = 0;
        p->last_value_end = NULL;
    }
    h->headers[h->n_headers - 1].name_len += (uint32_t)n;
    return 0;
}

static int on_header_field_complete(llhttp_t *ll)
{
    self(ll)->field_open = 0;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    http_parser_t *p = self(ll);
    http_head_t *h = p->head;
    if (!h || h->n_headers == 0 || !p->in_head)
        return 0;
    http_header_t *hd = &h->headers[h->n_headers - 1];
    if (p->value_open && p->last_value_end != at) {
        /* A second, non-contiguous piece of one value: obs-fold. */
        p->err = HTTP_ERR_BAD;
        set_reason(p, "obsolete line folding is not allowed");
        return HPE_USER;
    }
    if (!p->value_open) {
        hd->value = at;
        hd->value_len = 0;
        p->value_open = 1;
    }
    hd->value_len += (uint32_t)n;
    p->last_value_end = at + n;
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    http_parser_t *p = self(ll);
    http_head_t *h = p->head;
    p->value_open = 0;
    if (h && h->n_headers) {
        http_header_t *hd = &h->headers[h->n_headers - 1];
        while (hd->value_len &&
               (hd->value[hd->value_len - 1] == ' ' || hd->value[hd->value_len - 1] == '\t'))
            hd->value_len--;
    }
    return 0;
}

/* Transfer-Encoding as ficus relays it: one field whose value is exactly
 * "chunked". Anything else is refused rather than guessed at (the next hop
 * might read it otherwise): malformed values (empty, empty list elements,
 * several fields) are HTTP_ERR_BAD, well-formed lists of other codings
 * HTTP_ERR_NOT_IMPLEMENTED (RFC 9112 6.1). */
static http_err_t te_check(const http_head_t *h, const char **why)
{
    const http_header_t *te = NULL;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const http_header_t *hd = &h->headers[i];
        if (!http_header_name_is(hd->name, hd->name_len, "transfer-encoding", 17))
            continue;
        if (te) {
            *why = "more than one Transfer-Encoding field";
            return HTTP_ERR_BAD;
        }
        te = hd;
    }
    if (!te)
        return HTTP_ERR_NONE;
    const char *v = te->value, *end = te->value + te->value_len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    if ((size_t)(end - v) == 7 && strncasecmp(v, "chunked", 7) == 0)
        return HTTP_ERR_NONE;
    if (v == end) {
        *why = "empty Transfer-Encoding";
        return HTTP_ERR_BAD;
    }
    for (const char *p = v; p <= end;) {
        const char *t = p;
        while (p < end && *p != ',')
            p++;
        const char *e = p;
        while (t < e && (*t == ' ' || *t == '\t'))
            t++;
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == t) {
            *why = "empty element in Transfer-Encoding";
            return HTTP_ERR_BAD;
        }
        p++;
    }
    *why = "only the chunked transfer coding, alone, is supported";
    return HTTP_ERR_NOT_IMPLEMENTED;
}

static int on_headers_complete(llhttp_t *ll)
{
    http_parser_t *p = self(ll);
    http_head_t *h = p->head;
    p->in_head = 0;
    if (h) {
        h->status = ll->status_code;
        h->http_major = ll->http_major;
        h->http_minor = ll->http_minor;
        h->keep_alive = llhttp_should_keep_alive(ll);
        h->chunked = (ll->flags & F_CHUNKED) != 0;
        h->has_content_length = (ll->flags & F_CONTENT_LENGTH) != 0;
        h->content_length = ll->content_length;
        h->upgrade = ll->upgrade;
    }
    p->events |= HTTP_EV_HEAD;
    if (ll->type == HTTP_REQUEST && !(ll->http_major == 1 && ll->http_minor <= 1)) {
        p->err = HTTP_ERR_BAD;
        set_reason(p, "only HTTP/1.0 and HTTP/1.1 are served");
        return HPE_USER;
    }
    if (h) {
        const char *why = NULL;
        http_err_t te = te_check(h, &why);
        if (te == HTTP_ERR_NONE && ll->type == HTTP_REQUEST && (ll->flags & F_TRANSFER_ENCODING) &&
            ll->http_minor == 0) {
            /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding is faulty. */
            te = HTTP_ERR_BAD;
            why = "Transfer-Encoding in an HTTP/1.0 request";
        }
        if (te != HTTP_ERR_NONE) {
            p->err = (uint16_t)te;
            set_reason(p, why);
            return HPE_USER;
        }
    }
    if (ll->type == HTTP_REQUEST && ll->method == HTTP_CONNECT) {
        p->err = HTTP_ERR_NOT_IMPLEMENTED;
        set_reason(p, "CONNECT is not supported: ficus is a reverse proxy");
        return HPE_USER;
    }
    if (ll->type == HTTP_REQUEST && (ll->flags & F_TRANSFER_ENCODING) && !(ll->flags & F_CHUNKED)) {
        p->err = HTTP_ERR_BAD;
        set_reason(p, "invalid Transfer-Encoding");
        return HPE_USER;
    }
    if (p->skip_body ||
        (ll->type == HTTP_RESPONSE &&
         (ll->status_code < 200 || ll->status_code == 204 || ll->status_code == 304))) {
        /* No body, whatever Content-Length says. */
        /* The message ends here; on_message_complete follows at once. */
        return 1;
    }
    if (ll->flags & F_CHUNKED) {
        /* The body is read by http/chunked, not by llhttp (see feed). */
        p->in_chunked = 1;
        http_chunked_init(&p->chunked, p->max_trailer_bytes);
        if (p->trailers)
            http_chunked_keep_trailers(&p->chunked, p->trailers, p->trailers_cap);
    }
    return HPE_PAUSED;
}

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    http_parser_t *p = self(ll);
    (void)at;
    p->body_bytes += n;
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    http_parser_t *p = self(ll);
    p->events |= HTTP_EV_END;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void init(http_parser_t *p, llhttp_type_t type, uint32_t max_trailer_bytes)
{
    memset(p, 0, sizeof *p);
    llhttp_init(&p->ll, type, &settings);
    p->ll.data = p;
    p->max_trailer_bytes = max_trailer_bytes;
}

void http_parser_init_request(http_parser_t *p) { init(p, HTTP_REQUEST, DEFAULT_MAX_HEADER_BYTES); }
void http_parser_init_response(http_parser_t *p)
{
    init(p, HTTP_RESPONSE, DEFAULT_MAX_HEADER_BYTES);
}

void http_parser_reset(http_parser_t *p)
{
    llhttp_type_t type = (llhttp_type_t)p->ll.type;
    init(p, type, p->max_trailer_bytes);
}

/* A chunked body: the strict reader instead of llhttp; at its end llhttp is
 * set back to the start of the next message. */
static long feed_chunked(http_parser_t *p, const char *data, size_t len, int *events)
{
    chunked_out_t mode = !p->sink     ? CHUNKED_OUT_NONE
                         : p->reframe ? CHUNKED_OUT_REFRAME
                                      : CHUNKED_OUT_DATA;
    bool done = false;
    uint64_t before = p->chunked.data_bytes;
    long k =
        http_chunked_feed(&p->chunked, data, len, mode, p->sink, &p->sink_len, p->sink_cap, &done);
    if (k < 0) {
        p->err = HTTP_ERR_BAD;
        set_reason(p, p->chunked.error);
        return k;
    }
    p->body_bytes += p->chunked.data_bytes - before;
    *events = 0;
    if (done) {
        p->in_chunked = 0;
        llhttp_reset(&p->ll);
        *events = HTTP_EV_END;
    }
    return k;
}

/* Line endings llhttp lets through but a proxy must refuse, since the next
 * hop may read them differently: a bare LF, and a line starting with
 * whitespace (obs-fold, or whitespace before the first header). */
static bool head_ambiguous(const char *h, size_t n)
{
    for (const char *p = memchr(h, '\n', n); p; p = memchr(p + 1, '\n', (size_t)(h + n - p - 1))) {
        if (p == h || p[-1] != '\r')
            return true;
        if (p + 1 < h + n && (p[1] == ' ' || p[1] == '\t' || p[1] == ':'))
            return true; /* folding, or a header with an empty name */
        if (p + 1 >= h + n)
            break;
    }
    return false;
}

long http_parser_feed(http_parser_t *p, http_head_t *head, const char *data, size_t len,
                      int *events)
{
    if (p->in_chunked)
        return feed_chunked(p, data, len, events);
    p->head = head;
    p->events = 0;
    llhttp_errno_t e = llhttp_execute(&p->ll, data, len);
    p->head = NULL;
    *events = p->events;
    long used = (long)len;
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&p->ll);
        llhttp_resume(&p->ll);
        used = (long)(pos - data);
    } else if (e != HPE_OK) {
        if (!p->err)
            p->err = HTTP_ERR_BAD;
        return FE_PARSE;
    }
    if ((p->events & HTTP_EV_HEAD) && head_ambiguous(data, (size_t)used)) {
        /* A head is always fed whole from its first byte (see the header). */
        p->err = HTTP_ERR_BAD;
        llhttp_set_error_reason(&p->ll,
                                "bare LF, line folding or an empty header name in the head");
        return FE_PARSE;
    }
    return used;
}

int http_parser_finish(http_parser_t *p)
{
    p->events = 0;
    if (p->in_chunked)
        return FE_PARSE; /* cut short */
    llhttp_errno_t e = llhttp_finish(&p->ll);
    if (e == HPE_OK || e == HPE_PAUSED)
        return 0;
    return FE_PARSE;
}

http_err_t http_parser_error(const http_parser_t *p) { return (http_err_t)p->err; }

const char *http_parser_error_reason(const http_parser_t *p)
{
    const char *r = p->reason ? p->reason : llhttp_get_error_reason(&p->ll);
    return r ? r : "malformed message";
}

bool http_parser_body_until_eof(const http_parser_t *p)
{
    return llhttp_message_needs_eof(&p->ll) != 0;
}

bool http_parser_in_head(const http_parser_t *p) { return p->in_head != 0; }

size_t http_head_end(const char *data, size_t len, size_t from)
{
    size_t i = from > 2 ? from - 2 : 0;
    for (; i < len; i++) {
        const char *nl = memchr(data + i, '\n', len - i);
        if (!nl)
            return 0;
        i = (size_t)(nl - data);
        if (i + 1 < len && data[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && data[i + 1] == '\r' && data[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

long http_head_gather(pbuf_pool_t *pool, pbuf_t **held, const char *p, size_t n, const char **h,
                      size_t *hn)
{
    *h = p;
    *hn = n;
    if (*held) {
        if (pbuf_room(*held) < n)
            return -1;
        memcpy(pbuf_tail(*held), p, n);
        (*held)->len += (uint32_t)n;
        *h = pbuf_head(*held);
        *hn = (*held)->len;
    }
    size_t end = http_head_end(*h, *hn, 0);
    if (end)
        return (long)end;
    if (!*held) {
        *held = pbuf_get(pool);
        if (!*held || pbuf_room(*held) < n)
            return -1;
        (*held)->off = (*held)->len = 0;
        memcpy((*held)->data, p, n);
        (*held)->len = (uint32_t)n;
    }
    return 0;
}
