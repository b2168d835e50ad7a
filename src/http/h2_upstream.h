/* HTTP/2 to a target (contract 3.2, target group `protocol: h2`), with
 * libnghttp2: an upstream connection's client session and its streams, one
 * per request. The request path speaks HTTP/1.1 to every upstream
 * connection; on an HTTP/2 one, the request an owner writes to its stream
 * is read (http/parser) and sent as that stream (HEADERS, DATA under the
 * target's flow control, END_STREAM), and the stream's answer is handed
 * back as the HTTP/1.1 response the request path reads: its head, its body
 * chunked (or as it is, with a content-length), its trailers as the chunked
 * body's trailer section (gRPC's status), so trailers reach the client
 * unchanged.
 *
 * Many streams share a session. Each has its own flow control: the
 * connection window is given back as DATA arrives, a stream's window only
 * as its owner takes the bytes, so an owner that pauses (a slow client)
 * holds at most a stream window of answer and stalls nobody else. A
 * target's GOAWAY lets the streams it accepted finish; those it did not
 * are failed as refused (never processed: safe to send again), and the
 * session opens no more. */
#ifndef FICUS_HTTP_H2_UPSTREAM_H
#define FICUS_HTTP_H2_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"

typedef struct h2_upstream h2_upstream_t;
typedef struct h2_ustream h2_ustream_t;

/* The window each stream's answer gets (and so what a paused owner holds
 * at most), and the connection's. */
#define H2_UPSTREAM_STREAM_WINDOW (256u * 1024)
#define H2_UPSTREAM_CONN_WINDOW (16u << 20)

/* What the session needs of its connection (conn) and tells a stream's
 * owner (owner). */
typedef struct h2_upstream_io {
    /* Frames for the socket: as stream_write. */
    int (*send)(void *conn, const uv_buf_t *bufs, unsigned n);
    bool (*send_pending)(void *conn);
    /* Response bytes (HTTP/1.1) for a stream's owner. */
    void (*deliver)(void *owner, const char *data, size_t len);
    /* Every request byte the owner wrote was framed (after a write that
     * returned 1). */
    void (*drained)(void *owner);
    /* The stream failed before its response was whole (UV_ECONNRESET,
     * UV_EPROTO, or the connection's error); refused: the target says it
     * did not process the request (REFUSED_STREAM, or beyond its GOAWAY).
     * Once per stream; nothing more follows. */
    void (*failed)(void *owner, int status, bool refused);
} h2_upstream_io_t;

/* A client session on a connected socket (tls: the scheme is https). NULL
 * when out of memory. */
h2_upstream_t *h2_upstream_new(pbuf_pool_t *pool, const h2_upstream_io_t *io, void *conn, bool tls);
/* Frees the session and every stream on it (their owners must be done
 * with them). From inside a callback it is freed on the way out. NULL:
 * no-op. */
void h2_upstream_free(h2_upstream_t *u);
/* Bytes from the target: 0, or < 0 when the session is over (its streams
 * not whole are failed). */
int h2_upstream_feed(h2_upstream_t *u, const char *data, size_t len);
/* The socket's write queue emptied. */
void h2_upstream_on_drain(h2_upstream_t *u);
/* ficus closes the connection on its own (idle, drain, reload): a GOAWAY
 * (NO_ERROR) goes first, so the target knows it was not a failure. */
void h2_upstream_goaway(h2_upstream_t *u);
/* The socket is gone (status: UV_EOF or an error): streams not whole are
 * failed; whole ones still hand their bytes over to owners that paused. */
void h2_upstream_lost(h2_upstream_t *u, int status);
/* The target's SETTINGS came (the first frame it sends): its limits are
 * known. */
bool h2_upstream_settled(const h2_upstream_t *u);
/* May new streams open (no GOAWAY, no error)? */
bool h2_upstream_open_ok(const h2_upstream_t *u);
/* The target's SETTINGS_MAX_CONCURRENT_STREAMS (100 until it says). */
uint32_t h2_upstream_peer_streams(const h2_upstream_t *u);

/* A new stream for owner; nothing is sent until its request is written.
 * NULL when out of memory. */
h2_ustream_t *h2_ustream_open(h2_upstream_t *u, void *owner);
/* The owner lets go (it hears nothing more): a stream not done both ways
 * is reset (CANCEL). */
void h2_ustream_close(h2_ustream_t *s);
/* Request bytes, HTTP/1.1 as the request path writes them: 0 framed, 1
 * queued (drained follows), < 0 an error (the request cannot be sent). */
int h2_ustream_write(h2_ustream_t *s, const uv_buf_t *bufs, unsigned n);
/* Request bytes queued, not yet framed (the target's window). */
bool h2_ustream_pending(const h2_ustream_t *s);
/* Stop / go on handing response bytes over (the owner's backpressure). */
void h2_ustream_pause(h2_ustream_t *s, bool paused);

#endif
