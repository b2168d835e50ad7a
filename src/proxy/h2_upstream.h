/* HTTP/2 to a target (contract 3.2, target group `protocol: h2`), with
 * libnghttp2: an upstream connection's client session. The request path
 * speaks HTTP/1.1 to every upstream connection; on an HTTP/2 one, the
 * request it writes is read (http/parser) and sent as a stream (HEADERS,
 * DATA under the target's flow control, END_STREAM), and the stream's
 * answer is handed back as the HTTP/1.1 response the request path reads:
 * its head, its body chunked (or as it is, with a content-length), its
 * trailers as the chunked body's trailer section (gRPC's status), so
 * trailers reach the client unchanged.
 *
 * One request at a time per connection: a connection goes back to its pool
 * once its stream is done and serves the next request on a new stream of
 * the same session. A target's GOAWAY makes the connection finish its
 * stream and leave the pool (drained, not failed). */
#ifndef FICUS_PROXY_H2_UPSTREAM_H
#define FICUS_PROXY_H2_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/buf.h"

typedef struct h2_upstream h2_upstream_t;

/* What the session needs of its connection. */
typedef struct h2_upstream_io {
    /* Frames for the socket: as stream_write. */
    int (*send)(void *ctx, const uv_buf_t *bufs, unsigned n);
    bool (*send_pending)(void *ctx);
    /* Response bytes (HTTP/1.1) for the connection's owner. */
    void (*deliver)(void *ctx, const char *data, size_t len);
    /* Every request byte written was framed (the owner's on_drained). */
    void (*drained)(void *ctx);
    /* The stream or the session failed before the response was whole
     * (UV_ECONNRESET, UV_EPROTO). */
    void (*failed)(void *ctx, int status);
} h2_upstream_io_t;

/* A client session on a connected socket (tls: the scheme is https). NULL
 * when out of memory. */
h2_upstream_t *h2_upstream_new(pbuf_pool_t *pool, const h2_upstream_io_t *io, void *ctx, bool tls);
void h2_upstream_free(h2_upstream_t *u); /* NULL: no-op */
/* Request bytes, HTTP/1.1 as the request path writes them: 0 framed, 1
 * queued (drained follows), < 0 an error (the request cannot be sent). */
int h2_upstream_write(h2_upstream_t *u, const uv_buf_t *bufs, unsigned n);
/* Bytes from the target: 0, or < 0 when the session is over (then failed
 * was called for a stream under way). */
int h2_upstream_feed(h2_upstream_t *u, const char *data, size_t len);
/* The socket's write queue emptied. */
void h2_upstream_on_drain(h2_upstream_t *u);
/* Stop / go on handing response bytes over (the owner's backpressure). */
void h2_upstream_pause(h2_upstream_t *u, bool paused);
/* May it serve another request (no GOAWAY, no error, no stream under way)? */
bool h2_upstream_reusable(const h2_upstream_t *u);
/* A new owner begins: the next request starts a new stream. */
void h2_upstream_begin(h2_upstream_t *u, bool head_request);

#endif
