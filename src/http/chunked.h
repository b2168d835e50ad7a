/* The chunked transfer coding (RFC 9112 7.1), sans-I/O: reads a chunked body
 * strictly and writes it again as ficus frames it, so the next hop never
 * reads framing that ficus read differently. Sizes are re-written in plain
 * hex, chunk extensions are dropped, the trailer section is checked and
 * dropped (or, with a trailer buffer, kept: re-framed bodies carry it on),
 * and every line ends in CRLF. Leading zeros in a size are accepted;
 * a bare LF, an over-long size line, an invalid or oversized trailer section
 * are errors. */
#ifndef FICUS_HTTP_CHUNKED_H
#define FICUS_HTTP_CHUNKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CHUNKED_OUT_NONE = 0, /* check only */
    CHUNKED_OUT_DATA,     /* the decoded data (for an HTTP/1.0 peer) */
    CHUNKED_OUT_REFRAME   /* chunked again, framed by ficus */
} chunked_out_t;

typedef struct http_chunked {
    uint8_t state;
    uint8_t size_digits; /* significant hex digits of the size */
    uint32_t line_bytes; /* of the current size line */
    uint32_t trailer_bytes;
    uint32_t max_trailer_bytes;
    uint64_t remaining;  /* data bytes left in the current chunk */
    uint64_t data_bytes; /* decoded bytes so far */
    const char *error;   /* why the body was refused */
    char *trailers;      /* NULL: the trailer section is dropped; else its field lines go here */
    uint32_t trailers_cap;
    uint32_t trailers_len; /* field lines kept, each ending in CRLF */
} http_chunked_t;

/* Size lines longer than this (extensions included) are refused. */
#define CHUNKED_MAX_LINE_BYTES 4096
/* Output a step can need beyond the input it consumed: callers give at least
 * this much room for progress. */
#define CHUNKED_OUT_SLACK 24

void http_chunked_init(http_chunked_t *c, uint32_t max_trailer_bytes);
/* Keeps the trailer section's field lines in buf (cap bytes, at least
 * max_trailer_bytes): CHUNKED_OUT_REFRAME writes them after the last chunk,
 * CHUNKED_OUT_DATA leaves them in buf for the caller. After init. */
static inline void http_chunked_keep_trailers(http_chunked_t *c, char *buf, uint32_t cap)
{
    c->trailers = buf;
    c->trailers_cap = cap;
    c->trailers_len = 0;
}

/* Consumes in[0..len) up to the end of the body and appends the output of
 * `mode` to out (out_len in/out, out_cap its size; stops early rather than
 * overflow). Returns bytes consumed and sets *done at the end of the body,
 * or a negative error (c->error says why). */
long http_chunked_feed(http_chunked_t *c, const char *in, size_t len, chunked_out_t mode, char *out,
                       size_t *out_len, size_t out_cap, bool *done);

#endif
