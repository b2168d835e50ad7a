/* HTTP/2 heads to HTTP/1.1 text and back; see h2_head.h. */
#include "http/h2_head.h"

#include <string.h>

#include "http/header.h"

#define FIELD_OVERHEAD 32 /* RFC 9113 6.5.2 */

void h2_req_head_init(h2_req_head_t *h, char *buf, size_t cap, char *side, size_t side_cap,
                      size_t limit)
{
    memset(h, 0, sizeof *h);
    h->buf = buf;
    h->cap = cap;
    h->side = side;
    h->side_cap = side_cap;
    h->limit = limit;
}

static h2_head_err_t fail(h2_req_head_t *h, h2_head_err_t e)
{
    if (!h->err)
        h->err = e;
    return h->err;
}

static bool is(const uint8_t *n, size_t len, const char *lit)
{
    size_t l = strlen(lit);
    return len == l && memcmp(n, lit, l) == 0;
}

/* Keeps a pseudo-header value in side; false when side is full. */
static bool keep(h2_req_head_t *h, const uint8_t *v, size_t len, uint32_t *off, uint32_t *out_len)
{
    if (len > h->side_cap - h->side_len)
        return false;
    memcpy(h->side + h->side_len, v, len);
    *off = (uint32_t)h->side_len;
    *out_len = (uint32_t)len;
    h->side_len += len;
    return true;
}

static bool put(h2_req_head_t *h, const void *p, size_t n)
{
    if (n > h->cap - h->len)
        return false;
    memcpy(h->buf + h->len, p, n);
    h->len += n;
    return true;
}

static h2_head_err_t pseudo(h2_req_head_t *h, const uint8_t *name, size_t name_len,
                            const uint8_t *value, size_t value_len)
{
    uint32_t *off, *len;
    uint8_t *has;
    if (is(name, name_len, ":method")) {
        off = &h->method_off, len = &h->method_len, has = &h->has_method;
        h->head_method = value_len == 4 && memcmp(value, "HEAD", 4) == 0;
        h->connect = value_len == 7 && memcmp(value, "CONNECT", 7) == 0;
    } else if (is(name, name_len, ":path")) {
        off = &h->path_off, len = &h->path_len, has = &h->has_path;
    } else if (is(name, name_len, ":authority")) {
        off = &h->authority_off, len = &h->authority_len, has = &h->has_authority;
    } else if (is(name, name_len, ":scheme")) {
        return H2_HEAD_OK; /* the listener says whether it is https */
    } else {
        return fail(h, H2_HEAD_BAD); /* :status, :protocol: not in a request ficus serves */
    }
    if (*has)
        return fail(h, H2_HEAD_BAD);
    if (!keep(h, value, value_len, off, len))
        return fail(h, H2_HEAD_TOO_LARGE);
    *has = 1;
    return H2_HEAD_OK;
}

h2_head_err_t h2_req_head_add(h2_req_head_t *h, const uint8_t *name, size_t name_len,
                              const uint8_t *value, size_t value_len)
{
    h->decoded += name_len + value_len + FIELD_OVERHEAD; /* counted on after an error too */
    if (h->err)
        return h->err;
    if (h->decoded > h->limit)
        return fail(h, H2_HEAD_TOO_LARGE);
    if (name_len && name[0] == ':')
        return pseudo(h, name, name_len, value, value_len);
    if (is(name, name_len, "cookie")) {
        /* Crumbs are joined at the end of side: "a=1; b=2". */
        size_t need = value_len + (h->has_cookie ? 2 : 0);
        if (need > h->side_cap - h->side_len)
            return fail(h, H2_HEAD_TOO_LARGE);
        if (!h->has_cookie) {
            h->cookie_off = (uint32_t)h->side_len;
        } else {
            /* Only crumbs follow the first one in side: pseudo-headers come first. */
            memcpy(h->side + h->side_len, "; ", 2);
            h->side_len += 2;
        }
        memcpy(h->side + h->side_len, value, value_len);
        h->side_len += value_len;
        h->cookie_len = (uint32_t)(h->side_len - h->cookie_off);
        h->has_cookie = 1;
        return H2_HEAD_OK;
    }
    if (is(name, name_len, "host")) {
        if (h->has_host)
            return fail(h, H2_HEAD_BAD);
        h->has_host = 1;
        h->host_off = (uint32_t)(h->len + name_len + 2);
        h->host_len = (uint32_t)value_len;
    }
    if (is(name, name_len, "content-length"))
        h->has_content_length = 1;
    if (!put(h, name, name_len) || !put(h, ": ", 2) || !put(h, value, value_len) ||
        !put(h, "\r\n", 2))
        return fail(h, H2_HEAD_TOO_LARGE);
    return H2_HEAD_OK;
}

long h2_req_head_finish(h2_req_head_t *h, bool body)
{
    if (h->err)
        return -(long)h->err;
    if (!h->has_method || (h->connect ? !h->has_authority : !h->has_path))
        return -(long)fail(h, H2_HEAD_BAD);
    const char *auth = h->side + h->authority_off;
    if (h->has_authority && h->has_host &&
        (h->host_len != h->authority_len ||
         memcmp(h->buf + h->host_off, auth, h->authority_len) != 0))
        return -(long)fail(h, H2_HEAD_BAD); /* RFC 9113 8.3.1 */
    /* The request line (and Host from :authority) go in front. */
    const char *target = h->connect ? auth : h->side + h->path_off;
    size_t target_len = h->connect ? h->authority_len : h->path_len;
    size_t line = h->method_len + 1 + target_len + sizeof " HTTP/1.1\r\n" - 1;
    bool add_host = h->has_authority && !h->has_host;
    if (add_host)
        line += sizeof "host: \r\n" - 1 + h->authority_len;
    if (line > h->cap - h->len)
        return -(long)fail(h, H2_HEAD_TOO_LARGE);
    memmove(h->buf + line, h->buf, h->len);
    char *p = h->buf;
    memcpy(p, h->side + h->method_off, h->method_len);
    p += h->method_len;
    *p++ = ' ';
    memcpy(p, target, target_len);
    p += target_len;
    memcpy(p, " HTTP/1.1\r\n", 11);
    p += 11;
    if (add_host) {
        memcpy(p, "host: ", 6);
        p += 6;
        memcpy(p, auth, h->authority_len);
        p += h->authority_len;
        memcpy(p, "\r\n", 2);
    }
    h->len += line;
    if (h->has_cookie && (!put(h, "cookie: ", 8) ||
                          !put(h, h->side + h->cookie_off, h->cookie_len) || !put(h, "\r\n", 2)))
        return -(long)fail(h, H2_HEAD_TOO_LARGE);
    if (h2_req_head_chunked(h, body) && !put(h, "transfer-encoding: chunked\r\n", 28))
        return -(long)fail(h, H2_HEAD_TOO_LARGE);
    if (!put(h, "\r\n", 2))
        return -(long)fail(h, H2_HEAD_TOO_LARGE);
    return (long)h->len;
}

bool h2_head_connection_specific(const char *name, size_t len)
{
    static const struct {
        const char *s;
        size_t n;
    } hop[] = {
        {"connection", 10},        {"keep-alive", 10}, {"proxy-connection", 16},
        {"transfer-encoding", 17}, {"upgrade", 7},
    };
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (http_header_name_is(name, len, hop[i].s, hop[i].n))
            return true;
    return false;
}

long h2_head_response_nv(const http_head_t *h, nghttp2_nv *nva, size_t max, char *status3,
                         char *lower, size_t lower_cap)
{
    if (max < 1 || h->status < 100 || h->status > 999)
        return -1;
    status3[0] = (char)('0' + h->status / 100);
    status3[1] = (char)('0' + h->status / 10 % 10);
    status3[2] = (char)('0' + h->status % 10);
    nva[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status3, 7, 3, NGHTTP2_NV_FLAG_NONE};
    size_t n = 1, used = 0;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const http_header_t *f = &h->headers[i];
        if (h2_head_connection_specific(f->name, f->name_len))
            continue;
        if (n == max || f->name_len > lower_cap - used)
            return -1;
        char *ln = lower + used;
        for (uint32_t k = 0; k < f->name_len; k++) {
            char c = f->name[k];
            ln[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        used += f->name_len;
        nva[n++] = (nghttp2_nv){(uint8_t *)ln, (uint8_t *)f->value, f->name_len, f->value_len,
                                NGHTTP2_NV_FLAG_NONE};
    }
    return (long)n;
}
