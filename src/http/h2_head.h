/* HTTP/2 heads and the HTTP/1.1 text the request path reads (contract 3.2),
 * sans-I/O. A downstream HTTP/2 stream is one request through the same
 * parser, routing and policies as an HTTP/1.1 one: its header fields, as
 * nghttp2 decodes them (checked against RFC 9113 8.2: names lower-case, no
 * CR, LF or NUL, no connection-specific fields, pseudo-header fields first),
 * are written as an HTTP/1.1 request head, and the response head ficus
 * writes back is turned into the header list of a HEADERS frame.
 *
 * Request: `:method :path HTTP/1.1`, then `host` from `:authority` (a Host
 * field naming another authority makes the request malformed), the fields
 * in order, the Cookie crumbs joined into one field (RFC 9113 8.2.3), and
 * `transfer-encoding: chunked` when a body follows without a Content-Length
 * (the body's DATA is then framed as chunks). Fields are measured as RFC
 * 9113 6.5.2 does (name + value + 32 each) against the limit the connection
 * announced in SETTINGS_MAX_HEADER_LIST_SIZE. */
#ifndef FICUS_HTTP_H2_HEAD_H
#define FICUS_HTTP_H2_HEAD_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/parser.h"

/* Why a request head cannot be built: the status to answer with. */
typedef enum {
    H2_HEAD_OK = 0,
    H2_HEAD_BAD = 400,      /* malformed (a missing pseudo-header, a Host mismatch) */
    H2_HEAD_TOO_LARGE = 431 /* over the header list limit, or the buffer */
} h2_head_err_t;

typedef struct h2_req_head {
    char *buf; /* the HTTP/1.1 head being written: regular fields first */
    size_t len;
    size_t cap;
    char *side; /* pseudo-header values and cookie crumbs, until finish */
    size_t side_len;
    size_t side_cap;
    size_t limit;   /* decoded bytes allowed */
    size_t decoded; /* decoded so far (RFC 9113 6.5.2's measure) */
    uint32_t method_off, method_len;
    uint32_t path_off, path_len;
    uint32_t authority_off, authority_len;
    uint32_t host_off, host_len; /* a Host field's value, when there was one */
    uint32_t cookie_len;         /* joined crumbs at the end of side */
    uint32_t cookie_off;
    uint8_t has_method, has_path, has_authority, has_host, has_cookie;
    uint8_t has_content_length;
    uint8_t head_method; /* HEAD: the response has no body */
    uint8_t connect;
    h2_head_err_t err; /* the first error; later fields are ignored */
} h2_req_head_t;

/* Starts a head in buf (cap bytes) with side (side_cap bytes) for the
 * pseudo-header values; limit: decoded bytes allowed. */
void h2_req_head_init(h2_req_head_t *h, char *buf, size_t cap, char *side, size_t side_cap,
                      size_t limit);
/* One decoded field. Returns h->err (H2_HEAD_OK while the head is fine). */
h2_head_err_t h2_req_head_add(h2_req_head_t *h, const uint8_t *name, size_t name_len,
                              const uint8_t *value, size_t value_len);
/* Completes the head: the request line goes in front, the blank line at the
 * end. body: DATA follows the HEADERS (no END_STREAM on them). Returns the
 * head's length in buf (> 0), or -(h2_head_err_t). */
long h2_req_head_finish(h2_req_head_t *h, bool body);
/* The body is chunked by the stream (no Content-Length, body follows). */
static inline bool h2_req_head_chunked(const h2_req_head_t *h, bool body)
{
    return body && !h->has_content_length;
}

/* Response fields that do not exist in HTTP/2 (RFC 9113 8.2.2). */
bool h2_head_connection_specific(const char *name, size_t len);

/* The header list of a response head (status first, then its fields but
 * the connection-specific ones), names lower-cased into lower (lower_cap
 * bytes) and status written into status3 (3 bytes). Returns the fields set
 * in nva (at most max), or -1 when lower or nva is too small. */
long h2_head_response_nv(const http_head_t *h, nghttp2_nv *nva, size_t max, char *status3,
                         char *lower, size_t lower_cap);

#endif
