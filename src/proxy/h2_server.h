/* A downstream HTTP/2 connection (contract 3.2), with libnghttp2: frames,
 * HPACK and the protocol's own checks are nghttp2's; this module carries
 * each stream's request to a client_conn of its own (client_conn.h's
 * carried mode), so a stream goes through the same parser, admission,
 * routing, tries, logging, metrics and tracing as an HTTP/1.1 request.
 *
 * The carrier is the TCP (or TLS) connection's client_conn, switched to
 * HTTP/2 by ALPN h2 or by the client's preface (prior knowledge): its bytes
 * come here (h2_server_feed) and what nghttp2 sends goes out through it.
 *
 * Requests: a stream's header fields become an HTTP/1.1 head (http/h2_head),
 * its DATA the body, handed over as the request can take it; the stream's
 * window is given back only for what was taken, so a stalled request holds
 * at most initial_window_size bytes (the connection's window is given back
 * at once: streams do not block each other).
 * Responses: the HTTP/1.1 response ficus writes for a stream is read back
 * (its head becomes HEADERS, its body, de-chunked, DATA under flow
 * control); the request path writes again once its bytes were framed.
 *
 * Defences, each counted in ficus_http2_protocol_errors_total{reason}:
 * rapid reset (streams the client resets faster than max_concurrent_streams
 * per second, sustained: GOAWAY ENHANCE_YOUR_CALM), CONTINUATION floods
 * (more than H2_MAX_CONTINUATIONS frames in one header block), HPACK bombs
 * (a decoded header list over max_header_list_size: 431 on the stream, or
 * the connection cut when it keeps growing), SETTINGS and PING floods (more
 * than H2_MAX_CONTROL_PER_S a second, sustained), zero-window stalls (a
 * response that cannot move for idle_timeout: the stream is reset, or the
 * connection when its own window is shut), and nghttp2's own verdicts
 * (protocol errors, a peer that reads nothing while control frames pile
 * up). Draining sends GOAWAY: first a notice, then the last stream taken;
 * the connection closes once its streams are done. */
#ifndef FICUS_PROXY_H2_SERVER_H
#define FICUS_PROXY_H2_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "proxy/client_conn.h"

#define H2_MAX_CONTINUATIONS 32  /* CONTINUATION frames in one header block */
#define H2_MAX_CONTROL_PER_S 200 /* SETTINGS + PING frames a second, sustained */

/* Why a connection or stream was ended for the protocol's sake. */
typedef enum {
    H2_ERR_PROTOCOL = 0, /* nghttp2 refused a frame or the preface */
    H2_ERR_RAPID_RESET,
    H2_ERR_CONTINUATION_FLOOD,
    H2_ERR_HPACK_BOMB,
    H2_ERR_SETTINGS_FLOOD,
    H2_ERR_PING_FLOOD,
    H2_ERR_ZERO_WINDOW,
    H2_ERR_FLOOD,   /* nghttp2: control frames queued for a peer that does not read */
    H2_ERR_REFUSED, /* a stream over max_concurrent_streams */
    H2_ERR_REASONS
} h2_err_t;
const char *h2_err_name(h2_err_t e);

typedef struct h2_server h2_server_t;
typedef struct h2_stream h2_stream_t;

/* What a worker's HTTP/2 connections share: the connections with frames
 * to send, flushed together once per turn of the loop (a check handle), so
 * that the frames of many streams go out in one write per connection. */
typedef struct h2_server_env {
    uv_check_t check;
    h2_server_t *dirty;
    void (*on_check)(uv_check_t *c);
} h2_server_env_t;
void h2_server_env_init(h2_server_env_t *env, uv_loop_t *loop);
/* Closes the handle (the worker stops; its connections are gone). */
void h2_server_env_close(h2_server_env_t *env);

/* What the connection asks of its owner. */
typedef struct h2_server_ops {
    /* A new stream: a client_conn opened with client_conn_open_carried
     * (carrier ctx = st), or NULL when none can be made (refused). */
    client_conn_t *(*stream_open)(h2_server_t *srv, h2_stream_t *st);
    /* A defence or a protocol check fired. */
    void (*protocol_error)(h2_server_t *srv, h2_err_t why);
} h2_server_ops_t;

/* Switches carrier (a client_conn just moved to HTTP/2 with client_conn_h2)
 * to an HTTP/2 connection; ctx is the owner's. NULL when out of memory. */
h2_server_t *h2_server_new(client_conn_t *carrier, const config_server_t *srv, h2_server_env_t *env,
                           const h2_server_ops_t *ops, void *ctx);
void *h2_server_ctx(const h2_server_t *srv);
/* Bytes from the client. */
void h2_server_feed(h2_server_t *srv, const char *data, size_t len);
/* The carrier's write queue emptied. */
void h2_server_on_drained(h2_server_t *srv);
/* The carrier's timer fired (client_conn_arm_deadline). */
void h2_server_on_timer(h2_server_t *srv);
/* The client went away (EOF, an error): every stream ends, the carrier
 * closes. */
void h2_server_gone(h2_server_t *srv);
/* The worker drains: GOAWAY, and close once the streams are done. */
void h2_server_drain(h2_server_t *srv);
/* After the carrier closed (its on_close): frees everything left. */
void h2_server_free(h2_server_t *srv);
/* Open streams. */
size_t h2_server_streams(const h2_server_t *srv);

/* What a carried client_conn does through its stream (client_conn.h). */
extern const client_carrier_ops_t h2_stream_carrier_ops;

#endif
