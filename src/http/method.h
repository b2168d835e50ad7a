/* The HTTP methods ficus knows by name, listed once: their tokens, and
 * whether a request with one may be sent again (RFC 9110 9.2.2: idempotent;
 * the retry rules' default). Anything else is HTTP_METHOD_OTHER. */
#ifndef FICUS_HTTP_METHOD_H
#define FICUS_HTTP_METHOD_H

#include <stdbool.h>
#include <stddef.h>

/* X(ID, token, idempotent) */
#define HTTP_METHODS(X)                                                                            \
    X(GET, "GET", true)                                                                            \
    X(HEAD, "HEAD", true)                                                                          \
    X(POST, "POST", false)                                                                         \
    X(PUT, "PUT", true)                                                                            \
    X(DELETE, "DELETE", true)                                                                      \
    X(PATCH, "PATCH", false)                                                                       \
    X(OPTIONS, "OPTIONS", true)                                                                    \
    X(TRACE, "TRACE", true)                                                                        \
    X(CONNECT, "CONNECT", false)

typedef enum {
#define HTTP_METHOD_ENUM(id, token, idempotent) HTTP_METHOD_##id,
    HTTP_METHODS(HTTP_METHOD_ENUM)
#undef HTTP_METHOD_ENUM
        HTTP_METHOD_OTHER, /* any method not listed */
    HTTP_METHOD_COUNT
} http_method_t;

/* The method of a token (case-sensitive, as RFC 9110 says). */
http_method_t http_method_parse(const char *token, size_t len);
/* "GET", ...; "OTHER" for HTTP_METHOD_OTHER. */
const char *http_method_name(http_method_t m);
bool http_method_idempotent(http_method_t m);

#endif
