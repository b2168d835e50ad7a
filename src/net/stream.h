/* A TCP connection as the layers above see it: read into a buffer the owner
 * chooses, write iovecs (tried at once; what the socket does not take is
 * copied into one bounded queue buffer and flushed later), close.
 * The only module that calls uv_read_start / uv_write, so the I/O path can
 * change without touching HTTP. */
#ifndef FICUS_NET_STREAM_H
#define FICUS_NET_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"

typedef struct stream stream_t;
struct tls_server;
struct tls_conn;

typedef struct stream_ops {
    /* Where the next read goes. */
    void (*on_alloc)(stream_t *s, uv_buf_t *buf);
    /* n > 0 bytes at buf->base; n < 0: UV_EOF or an error. */
    void (*on_read)(stream_t *s, ssize_t n, const uv_buf_t *buf);
    /* The write queue is empty again (status 0) or writing failed. */
    void (*on_drain)(stream_t *s, int status);
    /* After stream_close: the memory may be freed now. */
    void (*on_close)(stream_t *s);
    /* A TLS stream's handshake ended (result: tls_hs_result_t); on failure
     * on_read(UV_EPROTO) follows. May be NULL. */
    void (*on_handshake)(stream_t *s, int result);
} stream_ops_t;

struct stream {
    uv_tcp_t tcp;
    uv_write_t wreq;
    const stream_ops_t *ops;
    pbuf_pool_t *pool;
    pbuf_t *wq;        /* queued bytes, NULL when empty */
    uint32_t inflight; /* bytes of wq handed to uv_write */
    uint8_t reading;
    uint8_t closing;
    struct tls_conn *tls; /* NULL: cleartext */
};

/* Initialises the handle on loop; 0 or a libuv error. */
int stream_init(uv_loop_t *loop, stream_t *s, const stream_ops_t *ops, pbuf_pool_t *pool);
/* Adopts a connected socket (accepted). */
int stream_open(stream_t *s, int fd);
/* The stream speaks TLS as the server with srv's contexts (a struct
 * tls_server, net/tls.h): reads hand the owner plaintext once the
 * handshake is done, writes are encrypted. Right after stream_open. */
int stream_tls_server(stream_t *s, struct tls_server *srv);
int stream_connect(stream_t *s, uv_connect_t *req, const struct sockaddr *sa, uv_connect_cb cb);
/* The stream speaks TLS as the client through c (a struct tls_conn made by
 * tls_conn_new_client; the stream owns it from now on, even on error):
 * once connected, the ClientHello goes out now; on_handshake reports the
 * result before the owner writes (on failure on_read(UV_EPROTO) follows).
 * The owner reads (stream_read_start) for the handshake to go on. 0 or < 0
 * (the ClientHello could not be sent). */
int stream_tls_client(stream_t *s, struct tls_conn *c);
int stream_read_start(stream_t *s);
void stream_read_stop(stream_t *s);
/* Writes bufs in order: 0 when the socket took everything, 1 when the rest was
 * queued (on_drain follows), negative on error (FE_TOOBIG if the queue buffer
 * cannot hold the rest: callers stop producing while a queue exists, and
 * close the stream after any error). */
int stream_write(stream_t *s, const uv_buf_t *bufs, unsigned n);
static inline bool stream_write_pending(const stream_t *s) { return s->wq != NULL; }
/* No more writes: TLS's close_notify (when the socket takes it now), then
 * the socket's write side shut (FIN). 0 or -1 (errno). */
int stream_shutdown_write(stream_t *s);
/* Closes; on_close follows. reset=true sends an RST (abortive close). */
void stream_close(stream_t *s, bool reset);
static inline bool stream_closing(const stream_t *s) { return s->closing; }
int stream_fd(const stream_t *s);

#endif
