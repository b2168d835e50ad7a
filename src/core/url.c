/* http:// URL parsing; see url.h. */
#include "core/url.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"

static int fail(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return FE_INVAL;
}

int url_parse_http(const char *u, url_http_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strncasecmp(u, "https://", 8) == 0)
        return fail(err, errlen, "only http:// URLs are supported (https is not)");
    if (strncasecmp(u, "http://", 7) != 0)
        return fail(err, errlen, "only http:// URLs are supported");
    /* The target goes into a request head as is: no byte may end a line. */
    for (const char *c = u; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return fail(err, errlen, "URL contains whitespace or a control character");
    const char *a = u + 7;
    size_t alen = strcspn(a, "/?#");
    out->path = a + alen;
    out->path_len = strcspn(out->path, "#"); /* a fragment is never sent */
    if (memchr(a, '@', alen))
        return fail(err, errlen, "credentials in the URL are not supported");
    const char *host = a, *port = NULL;
    size_t hlen = alen;
    if (alen && a[0] == '[') {
        const char *rb = memchr(a, ']', alen);
        if (!rb || (rb + 1 < a + alen && rb[1] != ':'))
            return fail(err, errlen, "bad host in URL");
        host = a + 1;
        hlen = (size_t)(rb - a) - 1;
        out->v6 = true;
        if (rb + 1 < a + alen)
            port = rb + 2;
    } else {
        const char *colon = memchr(a, ':', alen);
        if (colon) {
            hlen = (size_t)(colon - a);
            port = colon + 1;
        }
    }
    if (hlen == 0 || hlen >= sizeof out->host)
        return fail(err, errlen, "bad host in URL");
    memcpy(out->host, host, hlen);
    unsigned long v = 80;
    if (port) {
        size_t plen = (size_t)(a + alen - port);
        v = 0;
        for (size_t i = 0; i < plen && v <= 65535; i++)
            v = port[i] < '0' || port[i] > '9' ? 65536 : v * 10 + (unsigned long)(port[i] - '0');
        if (plen == 0 || v == 0 || v > 65535)
            return fail(err, errlen, "bad port in URL");
    }
    out->port_num = (uint16_t)v;
    snprintf(out->port, sizeof out->port, "%lu", v);
    return 0;
}

size_t url_host_header(const url_http_t *u, char *out, size_t n)
{
    bool port = u->port_num != 80;
    int w = snprintf(out, n, "%s%s%s%s%s", u->v6 ? "[" : "", u->host, u->v6 ? "]" : "",
                     port ? ":" : "", port ? u->port : "");
    if (w < 0)
        return 0;
    return (size_t)w < n ? (size_t)w : n - 1;
}
