/* The pairs of a Cookie header value (RFC 6265 5.4: "name=value; ..."),
 * read leniently as browsers send them: pairs split at ';', spaces and tabs
 * around names and values trimmed, a pair without '=' a name with an empty
 * value. Sans-I/O. */
#ifndef FICUS_HTTP_COOKIE_H
#define FICUS_HTTP_COOKIE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct http_cookie {
    const char *pair; /* the whole pair, trimmed */
    size_t pair_len;
    const char *name;
    size_t name_len;
    const char *value; /* surrounding double quotes removed */
    size_t value_len;
} http_cookie_t;

/* The next pair from *p (up to end), moving *p past it: false when none
 * is left. Empty pairs are skipped. */
bool http_cookie_next(const char **p, const char *end, http_cookie_t *c);

#endif
