/* The answer to a request ficus sent itself, read from bytes as they come
 * (sans-I/O): the head through http/parser (llhttp, strict), interim 1xx
 * answers skipped, the body by Content-Length, chunked (http/chunked) or up
 * to the end of the stream, kept de-chunked up to a bound. */
#ifndef FICUS_CLIENT_REPLY_H
#define FICUS_CLIENT_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "http/parser.h"

/* Which bodies are read. An answer whose body is not read ends at its head,
 * and its connection cannot carry another request. */
typedef enum {
    REPLY_BODY_ALL = 0, /* every body */
    REPLY_BODY_2XX,     /* a 2xx answer's body only */
    REPLY_BODY_NONE     /* none: the status and headers are all that matter */
} reply_body_t;

enum { REPLY_HEAD = 0, REPLY_BODY, REPLY_DONE };

typedef struct reply {
    http_parser_t parser;
    http_head_t head; /* the final answer's head once past REPLY_HEAD; spans into raw */
    buf_t raw;        /* the head's bytes */
    buf_t body;       /* the body, de-chunked; bounded by max_body_bytes */
    size_t max_head_bytes;
    uint64_t bytes_in; /* fed so far: 0 = nothing of an answer yet */
    reply_body_t body_mode;
    uint8_t state;     /* REPLY_HEAD, REPLY_BODY, REPLY_DONE */
    bool keep_alive;   /* once done: the connection may carry another request */
    const char *error; /* why the last call failed (a static string) */
} reply_t;

/* max_body_bytes 0: no body is kept (a body that is read is too large). */
void reply_init(reply_t *r, size_t max_head_bytes, size_t max_body_bytes, reply_body_t mode);
void reply_deinit(reply_t *r);
/* Forgets the answer, for the next one on the same connection. */
void reply_reset(reply_t *r);
/* Reads bytes of the answer. Returns the bytes used (fewer than len once it
 * is complete: the rest is not part of it), or FE_PARSE (malformed),
 * FE_TOOBIG (the head or the body crossed its bound; the head, and so the
 * status, is known when state is past REPLY_HEAD) or FE_NOMEM, with error
 * set. */
long reply_feed(reply_t *r, const char *data, size_t len);
/* The end of the stream: completes a body that runs to it. 0, or FE_PARSE
 * when the answer was cut short (or never began). */
int reply_finish(reply_t *r);
static inline bool reply_done(const reply_t *r) { return r->state == REPLY_DONE; }
/* The final answer's status, 0 before its head. */
static inline int reply_status(const reply_t *r)
{
    return r->state == REPLY_HEAD ? 0 : r->head.status;
}
/* The first header named lname (lower case), or NULL. */
const http_header_t *reply_header(const reply_t *r, const char *lname);

#endif
