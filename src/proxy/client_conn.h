/* A client (downstream) connection: reads request heads and bodies and hands
 * each request to its owner through a callback table, keeps the connection
 * alive between requests, holds pipelined requests until the previous
 * response is out, switches to a raw byte relay after an upgrade, and
 * enforces the header, idle and request timeouts with one timer armed by
 * set_state(). Reads land in the worker's shared buffer; only a partial head
 * or pipelined bytes are copied into a pooled buffer of the connection's own.
 * The owner embeds the struct and frees it in on_close. */
#ifndef FICUS_PROXY_CLIENT_CONN_H
#define FICUS_PROXY_CLIENT_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config/config.h"
#include "http/parser.h"
#include "net/stream.h"
#include "proxy/end_reason.h"

typedef struct client_conn client_conn_t;

/* A carried connection (an HTTP/2 stream, proxy/h2_server) has no socket of
 * its own: its carrier takes its writes and its close. */
typedef struct client_carrier_ops {
    /* Response bytes, HTTP/1.1 as ficus writes them: 0 taken, 1 queued
     * (client_conn_carried_drained follows), < 0 error. */
    int (*write)(void *ctx, const uv_buf_t *bufs, unsigned n);
    bool (*write_pending)(const void *ctx);
    /* The request takes body bytes again (after a pause). */
    void (*resume)(void *ctx);
    /* The response is complete. */
    void (*done)(void *ctx);
    /* The request is over on this side (reset: the response was cut);
     * client_conn_carried_closed follows, maybe at once. */
    void (*close)(void *ctx, bool reset);
} client_carrier_ops_t;

/* What a connection tells its owner, in the order a request goes. */
typedef struct client_conn_ops {
    /* A request head arrived: raw[0..head_bytes) holds it, h its spans (both
     * valid during the call only). */
    void (*on_request)(client_conn_t *cc, const http_head_t *h, const char *raw, size_t head_bytes);
    /* How many body bytes the owner can take now (0: reading pauses until
     * client_conn_resume). */
    size_t (*body_room)(client_conn_t *cc);
    /* Body bytes (chunked ones re-framed by ficus); end: the message is whole. */
    void (*on_body)(client_conn_t *cc, const char *data, size_t len, bool end);
    /* Before any request began (a bad head, the header timeout): answer why
     * (with message) and call client_conn_response_done. */
    void (*on_reject)(client_conn_t *cc, end_reason_t why, const char *message);
    /* During a request: the client went away (END_CLIENT_CLOSED) or broke the
     * protocol (END_BAD_REQUEST, END_BODY_TOO_LARGE). */
    void (*on_gone)(client_conn_t *cc, end_reason_t why);
    /* The write queue emptied while the response is still going. */
    void (*on_drained)(client_conn_t *cc);
    /* The deadline set by client_conn_arm_deadline passed. */
    void (*on_timeout)(client_conn_t *cc);
    /* After client_conn_tunnel: bytes from the client, and its close. */
    void (*on_raw_data)(client_conn_t *cc, const char *data, size_t len);
    void (*on_raw_eof)(client_conn_t *cc, ssize_t status);
    /* Every handle is closed: the owner may free the memory. */
    void (*on_close)(client_conn_t *cc);
    /* A TLS connection's handshake ended (tls_hs_result_t). May be NULL. */
    void (*on_handshake)(client_conn_t *cc, int result);
    /* The client began with the HTTP/2 preface: true when the owner switched
     * the connection to HTTP/2 (client_conn_h2), false to refuse it (505). */
    bool (*on_preface)(client_conn_t *cc);
    /* The worker drains and the connection is HTTP/2: say goodbye. */
    void (*on_drain)(client_conn_t *cc);
} client_conn_ops_t;

/* What a worker's client connections share (the worker owns it). */
typedef struct client_conn_env {
    uv_loop_t *loop;
    pbuf_pool_t *pool;
    char *rbuf;        /* IO_BUF_BYTES, shared by every read */
    http_head_t *head; /* scratch: the head being parsed */
    char *scratch;     /* scratch: re-framed request chunks */
    size_t scratch_bytes;
    const config_server_t *server; /* limits and timeouts for new requests */
    struct client_conn *conns;     /* every open connection */
    bool draining;                 /* no keep-alive: connections close after their request */
    void (*on_drained)(void *ctx); /* once, when draining and no connection is left */
    void *drained_ctx;
} client_conn_env_t;

typedef enum {
    CC_IDLE = 0, /* keep-alive, waiting for a request */
    CC_HEAD,     /* part of a head received */
    CC_ACTIVE,   /* a request is in progress */
    CC_DONE,     /* the response is complete, waiting for its bytes to leave */
    CC_TUNNEL,   /* bytes relayed as they come (client_conn_tunnel) */
    CC_LINGER,   /* final answer sent: draining input before the close */
    CC_H2,       /* an HTTP/2 connection: bytes go to the owner raw (client_conn_h2) */
    CC_CLOSING
} cc_state_t;

struct client_conn {
    stream_t s; /* first: stream callbacks cast back */
    uv_timer_t timer;
    client_conn_env_t *env;
    const client_conn_ops_t *ops;
    client_conn_t *next;
    client_conn_t *prev;
    http_parser_t parser;
    pbuf_t *in;         /* unparsed input: a partial head, pipelined requests */
    uint32_t head_scan; /* bytes of a partial head already scanned for its end */
    cc_state_t state;
    uint8_t n_handles;
    uint8_t reading_paused;
    uint8_t in_process;  /* inside the parse loop: do not re-enter it */
    uint8_t close_after; /* close once the current response is out */
    uint8_t keep_alive;  /* the current request allows keep-alive */
    uint8_t body_done;   /* the current request's body was read whole */
    uint8_t client_ip_len;
    uint8_t tls;   /* came over TLS (a carried one: its carrier did) */
    uint8_t http2; /* a carried HTTP/2 stream */
    uint32_t requests;
    uint64_t bytes_in;  /* the current request's, head included */
    uint64_t bytes_out; /* the current request's */
    char client_ip[46];
    struct sockaddr_storage peer;
    const client_carrier_ops_t *carrier; /* NULL: the connection's own socket */
    void *carrier_ctx;
};

/* Adopts an accepted socket, speaking TLS with tls's contexts when it is
 * not NULL (net/tls.h): 0, or an error (fd closed, nothing to free). */
int client_conn_open(client_conn_t *cc, client_conn_env_t *env, const client_conn_ops_t *ops,
                     int fd, struct tls_server *tls);
/* Writes response bytes: 0 written, 1 queued (on_drained follows), < 0 error. */
int client_conn_write(client_conn_t *cc, const uv_buf_t *bufs, unsigned n);
/* Stop / resume reading (upstream backpressure). */
void client_conn_pause(client_conn_t *cc);
void client_conn_resume(client_conn_t *cc);
/* The response is complete; the connection goes on (keep-alive) or closes. */
void client_conn_response_done(client_conn_t *cc);
/* Ends the connection now (after an aborted response). */
void client_conn_abort(client_conn_t *cc);
/* Re-arms the connection timer for the request deadline (on_timeout). */
void client_conn_arm_deadline(client_conn_t *cc, uint64_t timeout_ms);
/* Milliseconds until that deadline (at least 1 while armed), 0 when none. */
uint64_t client_conn_deadline_left_ms(const client_conn_t *cc);
/* The connection closes once the current response is out. */
static inline void client_conn_close_after(client_conn_t *cc) { cc->close_after = 1; }
/* May the connection serve another request after this response? */
bool client_conn_keeps_alive(const client_conn_t *cc);
/* Why the request's bytes were refused (after on_gone(END_BAD_REQUEST)). */
const char *client_conn_error_reason(const client_conn_t *cc);
/* From now on bytes are relayed raw: what the client sent after the head is
 * handed to on_raw_data first. */
void client_conn_tunnel(client_conn_t *cc);

/* Bytes of the response still waiting to go out. */
bool client_conn_write_pending(const client_conn_t *cc);

/* HTTP/2 (proxy/h2_server). The connection speaks HTTP/2 from now on: what
 * the client sends (already read bytes first) goes to on_raw_data, its EOF
 * to on_raw_eof, and the owner writes frames with client_conn_write. */
void client_conn_h2(client_conn_t *cc);

/* A carried connection: one HTTP/2 stream's request, with from's client
 * address and TLS. Not in env's list (its carrier is). 0 or an error. */
int client_conn_open_carried(client_conn_t *cc, client_conn_env_t *env,
                             const client_conn_ops_t *ops, const client_carrier_ops_t *carrier,
                             void *ctx, const client_conn_t *from);
/* Its head, HTTP/1.1 text as http/h2_head writes it, whole. */
void client_conn_carried_head(client_conn_t *cc, const char *head, size_t len);
/* A head that could not be written: answered for why. */
void client_conn_carried_reject(client_conn_t *cc, end_reason_t why);
/* Body bytes (chunked: framed here when the head said so); end: the last.
 * Returns the bytes taken (the rest waits for the carrier's resume), or -1
 * when the request ended. */
long client_conn_carried_body(client_conn_t *cc, const char *data, size_t len, bool end);
/* The client cancelled the stream or the connection went. */
void client_conn_carried_gone(client_conn_t *cc);
/* The carrier framed every byte written. */
void client_conn_carried_drained(client_conn_t *cc);
/* The carrier let go of the connection (after its close). */
void client_conn_carried_closed(client_conn_t *cc);

/* Graceful: idle connections close now (or once idle for idle_grace_ms, if
 * not 0), the others after their response; env->on_drained when none is left. */
void client_conn_env_drain(client_conn_env_t *env, uint64_t idle_grace_ms);
/* Closes every connection now (requests in progress end as client_closed). */
void client_conn_env_stop(client_conn_env_t *env);

#endif
