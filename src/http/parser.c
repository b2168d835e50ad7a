/* llhttp wrapper: collects head spans, refuses what llhttp's strict mode lets
 * through but a proxy must not (obs-fold), and pauses at head and message
 * boundaries. */
#include "http/parser.h"

#include <string.h>
#include <strings.h>

#include "core/errors.h"

static http_parser_t *self(llhttp_t *ll) { return (http_parser_t *)ll->data; }

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
        llhttp_set_error_reason(ll, "obsolete line folding is not allowed");
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

/* Every Transfer-Encoding line together must name chunked exactly once, as
 * the last coding, once surrounding whitespace is ignored: the next hop reads
 * the values as ficus forwards them, trimmed. */
static bool te_chunked_once(const http_head_t *h)
{
    unsigned chunked = 0, tokens = 0;
    bool last_chunked = false;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const http_header_t *hd = &h->headers[i];
        if (!http_header_name_is(hd->name, hd->name_len, "transfer-encoding", 17))
            continue;
        const char *p = hd->value, *end = hd->value + hd->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *t = p;
            while (p < end && *p != ',')
                p++;
            const char *e = p;
            while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e == t)
                continue;
            tokens++;
            last_chunked = (size_t)(e - t) == 7 && strncasecmp(t, "chunked", 7) == 0;
            chunked += last_chunked;
        }
    }
    return tokens == 0 || (chunked == 1 && last_chunked);
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
        llhttp_set_error_reason(ll, "only HTTP/1.0 and HTTP/1.1 are served");
        return HPE_USER;
    }
    if (ll->type == HTTP_REQUEST && h && !te_chunked_once(h)) {
        p->err = HTTP_ERR_BAD;
        llhttp_set_error_reason(ll, "chunked must be the last transfer coding, applied once");
        return HPE_USER;
    }
    if (ll->type == HTTP_REQUEST && (ll->flags & F_TRANSFER_ENCODING) && !(ll->flags & F_CHUNKED)) {
        /* Only chunked as the final coding frames a request body (RFC 9112
         * 6.3); refuse it with the head, before anything is routed. */
        p->err = HTTP_ERR_BAD;
        llhttp_set_error_reason(ll, "invalid Transfer-Encoding");
        return HPE_USER;
    }
    if (p->skip_body ||
        (ll->type == HTTP_RESPONSE &&
         (ll->status_code < 200 || ll->status_code == 204 || ll->status_code == 304))) {
        /* No body, whatever Content-Length says. */
        /* The message ends here; on_message_complete follows at once. */
        return 1;
    }
    return HPE_PAUSED;
}

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    http_parser_t *p = self(ll);
    p->body_bytes += n;
    if (p->sink) {
        if (p->sink_len + n > p->sink_cap)
            return HPE_USER;
        memcpy(p->sink + p->sink_len, at, n);
        p->sink_len += n;
    }
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

static void init(http_parser_t *p, llhttp_type_t type)
{
    memset(p, 0, sizeof *p);
    llhttp_init(&p->ll, type, &settings);
    p->ll.data = p;
}

void http_parser_init_request(http_parser_t *p) { init(p, HTTP_REQUEST); }
void http_parser_init_response(http_parser_t *p) { init(p, HTTP_RESPONSE); }

void http_parser_reset(http_parser_t *p)
{
    llhttp_type_t type = (llhttp_type_t)p->ll.type;
    init(p, type);
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
    llhttp_errno_t e = llhttp_finish(&p->ll);
    if (e == HPE_OK || e == HPE_PAUSED)
        return 0;
    return FE_PARSE;
}

http_err_t http_parser_error(const http_parser_t *p) { return (http_err_t)p->err; }

const char *http_parser_error_reason(const http_parser_t *p)
{
    const char *r = llhttp_get_error_reason(&p->ll);
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
