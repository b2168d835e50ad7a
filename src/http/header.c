/* Header lookups over parsed spans, and the Cookie header reader.
 * Sans-I/O and allocation-free: callers use them on the hot path. */
#include "http/header.h"

#include <string.h>

#include "core/errors.h"

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

int http_header_name_is(const char *name, size_t len, const char *lname, size_t lname_len)
{
    if (len != lname_len)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (lower((unsigned char)name[i]) != (unsigned char)lname[i])
            return 0;
    }
    return 1;
}

const http_header_t *http_header_find(const http_header_t *h, size_t n, const char *lname,
                                      size_t lname_len)
{
    for (size_t i = 0; i < n; i++) {
        if (http_header_name_is(h[i].name, h[i].name_len, lname, lname_len))
            return &h[i];
    }
    return NULL;
}

static inline int is_ows(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **p, size_t *len)
{
    while (*len && is_ows(**p)) {
        (*p)++;
        (*len)--;
    }
    while (*len && is_ows((*p)[*len - 1]))
        (*len)--;
}

int http_cookie_get(const char *cookie, size_t len, const char *name, size_t name_len,
                    const char **val, size_t *val_len)
{
    const char *end = cookie + len;
    const char *p = cookie;
    if (name_len == 0)
        return FE_NOTFOUND;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pair_end = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        /* A pair without '=' has no name (RFC 6265 5.2): skip it. */
        if (eq) {
            const char *n = p;
            size_t nl = (size_t)(eq - p);
            trim(&n, &nl);
            if (nl == name_len && memcmp(n, name, nl) == 0) {
                const char *v = eq + 1;
                size_t vl = (size_t)(pair_end - v);
                trim(&v, &vl);
                /* The quotes of a quoted value are not part of it (as Envoy and Go). */
                if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                    v++;
                    vl -= 2;
                }
                *val = v;
                *val_len = vl;
                return 0;
            }
        }
        if (!semi)
            break;
        p = semi + 1;
    }
    return FE_NOTFOUND;
}
