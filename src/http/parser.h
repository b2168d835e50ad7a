/* HTTP/1.x message framing over llhttp (strict mode), sans-I/O.
 * Feed bytes; the parser stops at the end of a head (HTTP_EV_HEAD, with the
 * head's spans in the caller's http_head_t) and at the end of a message
 * (HTTP_EV_END), so the caller knows exactly where the next pipelined message
 * starts. Content-Length bodies are forwarded as they came; a chunked body is
 * read by http/chunked and written into the caller's sink as ficus frames it
 * (or decoded), never forwarded as received. */
#ifndef FICUS_HTTP_PARSER_H
#define FICUS_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/defaults.h"
#include "http/chunked.h"
#include "http/header.h"
#include "llhttp.h"

typedef struct http_head {
    const char *method;
    uint32_t method_len;
    const char *target; /* request target as sent */
    uint32_t target_len;
    int status; /* responses */
    uint8_t http_major;
    uint8_t http_minor;
    bool keep_alive; /* per version and Connection */
    bool chunked;
    bool has_content_length;
    bool upgrade;
    uint64_t content_length;
    uint32_t n_headers;
    http_header_t headers[MAX_REQUEST_HEADERS];
} http_head_t;

enum { HTTP_EV_HEAD = 1, HTTP_EV_END = 2 };

/* Why parsing failed: the status to answer with. */
typedef enum {
    HTTP_ERR_NONE = 0,
    HTTP_ERR_BAD = 400,            /* malformed */
    HTTP_ERR_TOO_MANY = 431,       /* more than MAX_REQUEST_HEADERS */
    HTTP_ERR_NOT_IMPLEMENTED = 501 /* a transfer coding or method ficus does not relay */
} http_err_t;

typedef struct http_parser {
    llhttp_t ll;
    http_head_t *head; /* filled while a head is parsed; NULL otherwise */
    const char *last_value_end;
    uint8_t events;     /* HTTP_EV_* seen by the current feed */
    uint8_t in_head;    /* between message begin and headers complete */
    uint8_t skip_body;  /* response to HEAD, or 1xx/204/304 */
    uint16_t err;       /* http_err_t */
    uint8_t field_open; /* a header field span is being received */
    uint8_t value_open;
    const char *reason; /* ficus's own reason for a refusal */
    uint8_t in_chunked; /* the current message's chunked body is being read */
    uint8_t reframe;    /* sink mode: chunked again (1) or decoded data (0) */
    uint32_t max_trailer_bytes;
    uint64_t body_bytes; /* decoded body bytes of the current message */
    http_chunked_t chunked;
    char *trailers; /* chunked bodies: their trailer section is kept here (NULL: dropped) */
    uint32_t trailers_cap;
    char *sink; /* chunked bodies: output goes here */
    size_t sink_len;
    size_t sink_cap;
} http_parser_t;

void http_parser_init_request(http_parser_t *p);
void http_parser_init_response(http_parser_t *p);
/* Forget the current message (keep-alive reuse, or after an error). */
void http_parser_reset(http_parser_t *p);
/* Responses: the next message answers a HEAD request (no body follows). */
static inline void http_parser_expect_no_body(http_parser_t *p, bool yes) { p->skip_body = yes; }

/* Parses from data. head receives the spans of a head completed by this call
 * (pointers into data). Returns bytes consumed (>= 0) and sets *events; stops
 * right after the head or right after the message end. Negative on error
 * (then http_parser_error() says which answer is due). A head must be fed
 * whole, from its first byte, in one call: a head that arrives in pieces is
 * kept and fed again once http_head_end() finds its end. For HEAD, 1xx, 204
 * and 304 responses, HTTP_EV_END comes in the same call as HTTP_EV_HEAD. */
long http_parser_feed(http_parser_t *p, http_head_t *head, const char *data, size_t len,
                      int *events);
/* The output of a chunked body in the next feeds goes to sink: its data
 * (de-chunked, the default) or, after http_parser_set_reframe(p, true), the
 * body chunked again as ficus frames it. A feed stops early rather than
 * overflow the sink; a sink CHUNKED_OUT_SLACK bytes larger than the fed
 * length is never the reason. NULL: chunked bodies are only checked. */
static inline void http_parser_set_sink(http_parser_t *p, char *sink, size_t cap)
{
    p->sink = sink;
    p->sink_cap = cap;
    p->sink_len = 0;
}
static inline void http_parser_set_reframe(http_parser_t *p, bool yes) { p->reframe = yes; }
/* Largest trailer section accepted (kept across resets). */
static inline void http_parser_set_max_trailer(http_parser_t *p, uint32_t bytes)
{
    p->max_trailer_bytes = bytes;
}
/* A chunked body's trailer section is kept in buf (cap bytes, at least
 * the max trailer size) rather than dropped: a re-framed body carries it
 * on, a decoded one leaves it for http_parser_trailers. NULL: dropped. */
static inline void http_parser_keep_trailers(http_parser_t *p, char *buf, uint32_t cap)
{
    p->trailers = buf;
    p->trailers_cap = cap;
    if (p->in_chunked)
        http_chunked_keep_trailers(&p->chunked, buf, cap);
}
/* The trailer section's field lines kept so far (each ending in CRLF). */
static inline const char *http_parser_trailers(const http_parser_t *p, size_t *len)
{
    *len = p->trailers ? p->chunked.trailers_len : 0;
    return p->trailers;
}
/* True while the current message's body is chunked. */
static inline bool http_parser_chunked_body(const http_parser_t *p) { return p->in_chunked; }

/* At EOF: completes a close-delimited body. 0, or negative if the message was
 * cut short. */
int http_parser_finish(http_parser_t *p);
http_err_t http_parser_error(const http_parser_t *p);
const char *http_parser_error_reason(const http_parser_t *p);
/* True when the message being parsed ends only at EOF (close-delimited). */
bool http_parser_body_until_eof(const http_parser_t *p);
bool http_parser_in_head(const http_parser_t *p);

/* Offset just past the blank line ending a head in data, searching from
 * `from`; 0 if none yet. Bare-LF ends count (so they are parsed and refused). */
size_t http_head_end(const char *data, size_t len, size_t from);

/* A head written in pieces, gathered: with the piece p[0..n), the whole
 * head is at *h (*hn bytes: the head and what followed it in the piece),
 * either the piece itself or the pooled buffer *held that keeps the pieces
 * so far. Returns the head's end offset in *h (> 0), 0 while it is not
 * whole (the piece is kept in *held), or -1 when it cannot be kept. The
 * caller puts *held back once the head is read. */
long http_head_gather(pbuf_pool_t *pool, pbuf_t **held, const char *p, size_t n, const char **h,
                      size_t *hn);

#endif
