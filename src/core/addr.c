/* Address and CIDR parsing; see addr.h. */
#include "core/addr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

int addr_split(const char *s, addr_hostport_t *out, const char **why)
{
    const char *colon;
    size_t hlen;
    const char *host = s;
    *why = NULL;
    if (!s || !*s) {
        *why = "empty address";
        return FE_INVAL;
    }
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') {
            *why = "expected [v6]:port";
            return FE_INVAL;
        }
        host = s + 1;
        hlen = (size_t)(rb - host);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            *why = "missing :port";
            return FE_INVAL;
        }
        hlen = (size_t)(colon - s);
        if (strstr(s, "://")) {
            *why = "an address is host:port, not a URL (drop the scheme and any path)";
            return FE_INVAL;
        }
        if (memchr(s, ':', hlen)) {
            *why = "IPv6 addresses need brackets: [v6]:port";
            return FE_INVAL;
        }
    }
    if (hlen >= sizeof out->host) {
        *why = "host name too long";
        return FE_INVAL;
    }
    const char *p = colon + 1;
    if (!*p) {
        *why = "missing port";
        return FE_INVAL;
    }
    unsigned long port = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') {
            *why = "port is not a number";
            return FE_INVAL;
        }
        port = port * 10 + (unsigned long)(*p - '0');
        if (port > 65535) {
            *why = "port out of range (1-65535)";
            return FE_INVAL;
        }
    }
    if (port == 0) {
        *why = "port out of range (1-65535)";
        return FE_INVAL;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->port = (uint16_t)port;
    return 0;
}

int addr_numeric(const addr_hostport_t *hp, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (hp->host[0] == '\0' || inet_pton(AF_INET, hp->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(hp->port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, hp->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(hp->port);
        *len = sizeof *v6;
        return 0;
    }
    return FE_INVAL;
}

size_t addr_format_ip(const struct sockaddr *sa, char *buf, size_t n)
{
    const void *src = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (!inet_ntop(sa->sa_family, src, buf, (socklen_t)n)) {
        if (n)
            buf[0] = '\0';
        return 0;
    }
    return strlen(buf);
}

size_t addr_format(const struct sockaddr *sa, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    addr_format_ip(sa, ip, sizeof ip);
    int w;
    if (sa->sa_family == AF_INET6)
        w = snprintf(buf, n, "[%s]:%u", ip, ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    else
        w = snprintf(buf, n, "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    return w < 0 ? 0 : (size_t)w;
}

int cidr_parse(const char *s, cidr_t *out)
{
    char tmp[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof tmp)
        return FE_INVAL;
    memcpy(tmp, s, alen);
    tmp[alen] = '\0';
    memset(out, 0, sizeof *out);
    unsigned maxp;
    if (inet_pton(AF_INET, tmp, out->bytes) == 1) {
        out->family = AF_INET;
        maxp = 32;
    } else if (inet_pton(AF_INET6, tmp, out->bytes) == 1) {
        out->family = AF_INET6;
        maxp = 128;
    } else {
        return FE_INVAL;
    }
    unsigned prefix = maxp;
    if (slash) {
        const char *p = slash + 1;
        if (!*p)
            return FE_INVAL;
        prefix = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return FE_INVAL;
            prefix = prefix * 10 + (unsigned)(*p - '0');
            if (prefix > maxp)
                return FE_INVAL;
        }
    }
    out->prefix = (uint8_t)prefix;
    /* Clear host bits so matching is a plain prefix compare. */
    for (unsigned i = prefix; i < maxp; i++)
        out->bytes[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    return 0;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned full = prefix / 8, rem = prefix % 8;
    if (memcmp(a, net, full) != 0)
        return false;
    if (rem == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rem));
    return (a[full] & mask) == net[full];
}

bool cidr_match(const cidr_t *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const uint8_t *b = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (c->family == AF_INET)
            return prefix_eq(b, c->bytes, c->prefix);
        /* An IPv4 client against a v4-mapped IPv6 rule. */
        uint8_t m[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(m + 12, b, 4);
        return prefix_eq(m, c->bytes, c->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (c->family == AF_INET6)
            return prefix_eq(b, c->bytes, c->prefix);
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b, mapped, 12) == 0)
            return prefix_eq(b + 12, c->bytes, c->prefix);
    }
    return false;
}

bool cidr_match_text(const cidr_t *c, const char *ip, size_t len)
{
    char tmp[64];
    if (len == 0 || len >= sizeof tmp)
        return false;
    memcpy(tmp, ip, len);
    tmp[len] = '\0';
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, tmp, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, tmp, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return false;
    return cidr_match(c, (struct sockaddr *)&ss);
}
