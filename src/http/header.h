/* A parsed header: name and value spans into the request or response head.
 * Valid only while the head they point into is. */
#ifndef FICUS_HTTP_HEADER_H
#define FICUS_HTTP_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_header {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
} http_header_t;

/* First header whose name equals lname (lower-case, compared case-insensitively). */
const http_header_t *http_header_find(const http_header_t *h, size_t n, const char *lname,
                                      size_t lname_len);
/* Case-insensitive comparison of a span with a lower-case literal. */
int http_header_name_is(const char *name, size_t len, const char *lname, size_t lname_len);
/* A Content-Type value naming gRPC (application/grpc, +proto, +json, ...). */
static inline bool http_content_type_is_grpc(const char *v, size_t len)
{
    return len >= 16 && http_header_name_is(v, 16, "application/grpc", 16);
}
/* Finds cookie `name` in a Cookie header value; 0 and the value span, or FE_NOTFOUND. */
int http_cookie_get(const char *cookie, size_t len, const char *name, size_t name_len,
                    const char **val, size_t *val_len);

#endif
