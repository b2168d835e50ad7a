/* TLS for streams (contract 3.3), with OpenSSL 3 over memory BIOs: the
 * stream reads ciphertext from the socket into the engine and hands its
 * owner plaintext; what the owner writes is encrypted into the engine and
 * the ciphertext goes out through the stream's write path. Nothing above
 * net/ sees TLS.
 *
 * A tls_server is what one listener's `tls` block makes: one SSL_CTX per
 * certificate (chosen by SNI against the certificate's names; the first is
 * the default), TLS 1.2 or 1.3 at least, forward-secret AEAD ciphers only,
 * ALPN, optional or required client certificates, and session tickets
 * whose keys come from a tls_keys ring shared by every listener and worker
 * and rotated. It is immutable once made and shared by the workers (an
 * SSL_CTX is safe for concurrent SSL_new); connections hold a reference to
 * the context they started with, so a reload's new certificates reach new
 * connections only.
 *
 * A tls_client is what one target group's `tls` block makes: one client
 * SSL_CTX (the same versions and ciphers), the target's certificate
 * verified against a CA file or the system's store and its name checked,
 * an optional client certificate for mutual TLS. Shared by the workers and
 * reference-counted the same way. Sessions are resumed through a
 * tls_session_slot_t the caller owns: the last session a target gave (a
 * TLS 1.3 ticket, a TLS 1.2 session) is kept there and offered by the next
 * connection made with the same slot (a connection that ends without
 * its close_notify spoils it: OpenSSL marks the session not resumable). A
 * slot belongs to one thread (a worker's pool of connections to one
 * target), so nothing locks. */
#ifndef FICUS_NET_TLS_H
#define FICUS_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS_MAX_CERTS 16
#define TLS_MAX_ALPN 4

/* Session ticket keys: a current key and the previous one (tickets it made
 * still resume until the next rotation). Thread-safe; one per process. */
typedef struct tls_keys tls_keys_t;
tls_keys_t *tls_keys_new(void);
void tls_keys_free(tls_keys_t *k);
/* A new current key; the current becomes the previous. Any thread. */
int tls_keys_rotate(tls_keys_t *k);

typedef enum {
    TLS_CLIENT_AUTH_NONE = 0,
    TLS_CLIENT_AUTH_OPTIONAL,
    TLS_CLIENT_AUTH_REQUIRED
} tls_client_auth_t;

typedef struct tls_server_opts {
    const char *certs[TLS_MAX_CERTS]; /* PEM files: certificate (chain) and key */
    const char *keys[TLS_MAX_CERTS];
    size_t n_certs;
    bool min_tls13;                 /* else TLS 1.2 */
    const char *alpn[TLS_MAX_ALPN]; /* in preference order: "h2", "http/1.1" */
    size_t n_alpn;
    const char *client_ca; /* NULL: no client certificates asked */
    tls_client_auth_t client_auth;
    tls_keys_t *keys_ring; /* session tickets; NULL: stateless tickets off */
} tls_server_opts_t;

typedef struct tls_server tls_server_t;

/* Reads the files and makes the contexts; NULL with err set (the file and
 * OpenSSL's reason). */
tls_server_t *tls_server_new(const tls_server_opts_t *o, char *err, size_t errlen);
tls_server_t *tls_server_ref(tls_server_t *s);
void tls_server_unref(tls_server_t *s); /* NULL: no-op */
/* Certificate i's notAfter (unix seconds) and its first name (for
 * ficus_tls_certificate_expiry_timestamp_seconds). */
size_t tls_server_n_certs(const tls_server_t *s);
int64_t tls_server_cert_expiry(const tls_server_t *s, size_t i);
const char *tls_server_cert_name(const tls_server_t *s, size_t i);

typedef struct tls_client_opts {
    const char *ca;   /* PEM CA file the target's certificate is verified against; NULL: the
                         system's store */
    bool verify;      /* false: any certificate, any name (tls.verify: false) */
    const char *cert; /* client certificate (chain) and key for mutual TLS; NULL: none */
    const char *key;
    bool h2; /* ALPN offers h2 (protocol: h2), else http/1.1 */
} tls_client_opts_t;

typedef struct tls_client tls_client_t;

/* Reads the files and makes the context; NULL with err set. */
tls_client_t *tls_client_new(const tls_client_opts_t *o, char *err, size_t errlen);
tls_client_t *tls_client_ref(tls_client_t *c);
void tls_client_unref(tls_client_t *c); /* NULL: no-op */

/* The last session of one target, for one thread's connections to it. */
typedef struct tls_session_slot {
    void *session; /* an SSL_SESSION, or NULL */
} tls_session_slot_t;
void tls_session_slot_clear(tls_session_slot_t *slot);

/* How a handshake ended, for ficus_tls_handshakes_total{result}. */
typedef enum {
    TLS_HS_OK = 0,
    TLS_HS_RESUMED,
    TLS_HS_PROTOCOL,    /* a TLS version or cipher refused, or garbage */
    TLS_HS_NO_ALPN,     /* no protocol in common */
    TLS_HS_CERTIFICATE, /* a client certificate missing or not verified */
    TLS_HS_CLOSED,      /* the peer went away during the handshake */
    TLS_HS_RESULTS
} tls_hs_result_t;
const char *tls_hs_result_name(tls_hs_result_t r);

/* One connection's engine. */
typedef struct tls_conn tls_conn_t;

tls_conn_t *tls_conn_new_server(tls_server_t *s);
/* A client connection: sni is sent (NULL: none, e.g. for an IP address),
 * name is what the certificate must be issued to (a DNS name, or an IP
 * address checked against the certificate's IP addresses; NULL: not
 * checked). slot (NULL: none) offers its session and keeps the new ones;
 * it must outlive the connection. The handshake starts with the first
 * tls_conn_handshake (the ClientHello goes into the output). */
tls_conn_t *tls_conn_new_client(tls_client_t *cl, const char *sni, const char *name,
                                tls_session_slot_t *slot);
void tls_conn_free(tls_conn_t *c);

/* Ciphertext in from the socket (copied). */
int tls_conn_feed(tls_conn_t *c, const char *data, size_t len);
/* Advances the handshake: 1 done (now or before), 0 wants more input, <0
 * failed (*why says how). Output to send may be waiting (tls_conn_out). */
int tls_conn_handshake(tls_conn_t *c, tls_hs_result_t *why);
bool tls_conn_handshake_done(const tls_conn_t *c);
/* Plaintext into buf: > 0 bytes, 0 wants more input, TLS_EOF the peer
 * closed (close_notify), < 0 another error. */
#define TLS_EOF (-4095)
long tls_conn_read(tls_conn_t *c, char *buf, size_t cap);
/* Plaintext still inside the engine (decrypted or not yet). */
bool tls_conn_read_pending(const tls_conn_t *c);
/* Plaintext out: encrypted into the engine's output (never partial). 0 or
 * < 0. */
int tls_conn_write(tls_conn_t *c, const char *data, size_t len);
/* Ciphertext waiting to be sent, and up to cap bytes of it moved into buf
 * (their count). */
size_t tls_conn_out_pending(const tls_conn_t *c);
size_t tls_conn_out(tls_conn_t *c, char *buf, size_t cap);
/* A close_notify into the output. */
void tls_conn_shutdown(tls_conn_t *c);

/* After the handshake: the protocol ALPN chose ("h2", "http/1.1"; NULL:
 * none), whether the session was resumed, and the verified client
 * certificate's subject CN (copied into cn, NUL-terminated; 0 when there is
 * none or it was not verified). */
const char *tls_conn_alpn(const tls_conn_t *c, size_t *len);
bool tls_conn_resumed(const tls_conn_t *c);
size_t tls_conn_peer_cn(const tls_conn_t *c, char *cn, size_t cap);
/* Why the peer's certificate was not verified ("certificate has expired",
 * "hostname mismatch", ...), or NULL when it was (or was not asked). */
const char *tls_conn_verify_error(const tls_conn_t *c);

#endif
