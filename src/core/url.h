/* http:// URLs of the things ficus fetches or posts to (set lists, the OTLP
 * collector): split into host, port and request target, checked so that the
 * target can go into a request line as is. Sans-I/O. */
#ifndef FICUS_CORE_URL_H
#define FICUS_CORE_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct url_http {
    char host[256]; /* an IPv6 literal without its brackets */
    bool v6;
    char port[6];
    uint16_t port_num; /* 80 when the URL has none */
    const char *path;  /* into the URL, up to a '#': "" or starting with '/' or '?' */
    size_t path_len;
} url_http_t;

/* Parses "http://host[:port][/path][?query][#fragment]". 0, or FE_INVAL with
 * a reason in err ("only http:// URLs are supported", "bad port", ...): no
 * https, no credentials, no whitespace or control characters anywhere. */
int url_parse_http(const char *u, url_http_t *out, char *err, size_t errlen);

/* "host[:port]" for a Host header: brackets around IPv6, no ":80". Returns
 * its length (cut to n - 1). */
size_t url_host_header(const url_http_t *u, char *out, size_t n);

#endif
