/* A blocking-style TCP (optionally TLS) connection for threads that may
 * block: the thread pool, the trace exporter, `ficus probe`. Every step
 * (connect, handshake, send, receive) is bounded by poll() and one absolute
 * deadline on the monotonic clock; name resolution is bounded only by the
 * resolver's own timeouts. */
#ifndef FICUS_NET_BLOCKING_CONN_H
#define FICUS_NET_BLOCKING_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* The step at which blocking_conn_open failed. */
typedef enum {
    BLOCKING_CONN_RESOLVE = 1, /* gai_err says why */
    BLOCKING_CONN_CONNECT,     /* err says why (ETIMEDOUT at the deadline) */
    BLOCKING_CONN_TLS          /* err = ETIMEDOUT at the deadline, else tls_why says why */
} blocking_conn_step_t;

typedef struct blocking_conn {
    int fd;   /* -1 when closed */
    SSL *ssl; /* NULL for plain TCP */
    /* Why the last call failed. */
    int err;     /* an errno value; ETIMEDOUT when the deadline passed */
    int gai_err; /* getaddrinfo's code (EAI_SYSTEM: err has the errno) */
    blocking_conn_step_t step;
    char tls_why[128]; /* the certificate check's or OpenSSL's reason */
} blocking_conn_t;

typedef struct blocking_conn_opts {
    SSL_CTX *tls;    /* NULL: plain TCP; else handshake, SNI and peer check against host */
    bool addrconfig; /* resolve with AI_ADDRCONFIG */
} blocking_conn_opts_t;

/* A closed connection (blocking_conn_close is then a no-op). */
void blocking_conn_init(blocking_conn_t *c);
/* Resolves host:port and connects to the first address that answers before
 * deadline_ms, with TCP_NODELAY, then the TLS handshake when o->tls is set.
 * 0, or FE_AGAIN (deadline) / FE_IO / FE_NOTFOUND (resolving) / FE_NOMEM
 * with c->step and the fields it names set. */
int blocking_conn_open(blocking_conn_t *c, const char *host, const char *port,
                       const blocking_conn_opts_t *o, uint64_t deadline_ms);
/* Sends all of iov: 0, FE_AGAIN (deadline) or FE_IO (c->err). iov is used up. */
int blocking_conn_writev(blocking_conn_t *c, struct iovec *iov, int iovcnt, uint64_t deadline_ms);
/* Receives some bytes: > 0, 0 at end of stream, FE_AGAIN (deadline) or
 * FE_IO (c->err). A TLS peer that closes without close_notify reads as the
 * end of the stream unless it reset the connection. */
ssize_t blocking_conn_read(blocking_conn_t *c, char *buf, size_t len, uint64_t deadline_ms);
static inline bool blocking_conn_is_open(const blocking_conn_t *c) { return c->fd >= 0; }
/* Closes (the TLS session without close_notify). */
void blocking_conn_close(blocking_conn_t *c);

#endif
