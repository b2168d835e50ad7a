/* An HTTP request from an event loop (health checks, session exchanges,
 * JWKS): one request to one address over net/stream, a timeout covering
 * connect to the end of the answer, the answer read by client/reply within
 * its bounds, and one completion callback. HTTP/1.1, or HTTP/2 (h2: prior
 * knowledge, or ALPN h2 over TLS) through http/h2_upstream, which frames the
 * same request and hands the answer back as HTTP/1.1. The client owns its
 * handles and memory, frees them from its close callbacks, and closes itself
 * after the callback or a cancel. */
#ifndef FICUS_CLIENT_HTTP_CLIENT_H
#define FICUS_CLIENT_HTTP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "client/reply.h"
#include "client/request.h"

typedef struct http_client http_client_t;

typedef struct http_client_opts {
    uint64_t timeout_ms; /* connect, send and the whole answer */
    size_t max_head_bytes;
    size_t max_body_bytes; /* the body kept; more is an error ("response body too large") */
    reply_body_t body_mode;
    /* TLS to the address (net/tls; NULL: cleartext): the name sent by SNI
     * (NULL: none) and the name the certificate must be issued to (a DNS
     * name or an IP address; NULL: not checked). The request is written
     * once the handshake is done; a failed one is the error. */
    struct tls_client *tls;
    const char *tls_sni;
    const char *tls_name;
    /* HTTP/2: cleartext prior knowledge, or with tls a handshake that chose
     * h2 by ALPN (tls must offer it); the request is one stream. */
    bool h2;
} http_client_opts_t;

/* Called once, on the loop, unless cancelled first. error is NULL when the
 * answer is complete (reply_status, reply_header, reply->body), else why it
 * failed ("timeout", "connection refused", "connection closed before the
 * response", ...), with reply's head known if its state is past REPLY_HEAD.
 * reply is valid during the call only; the client is gone once it returns. */
typedef void (*http_client_done_fn)(void *ctx, const reply_t *reply, const char *error);

/* Connects to sa and sends rq (copied). NULL when it cannot start (out of
 * memory, or libuv refused the connect at once): no callback follows. */
http_client_t *http_client_start(uv_loop_t *loop, const struct sockaddr *sa, const request_t *rq,
                                 const http_client_opts_t *o, http_client_done_fn on_done,
                                 void *ctx);
/* Stops a request whose callback has not run: no callback follows and the
 * client frees itself once its handles have closed. */
void http_client_cancel(http_client_t *c);

#endif
