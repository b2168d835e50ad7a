/* A tunnel: after a 101 Switching Protocols (WebSocket and other upgrades,
 * contract section 3.1) the request's client and upstream connections relay
 * bytes both ways, unchanged, with backpressure each way, until both sides
 * have closed (a half-close is passed on), either side fails, or nothing
 * moved for server.tunnel_idle_timeout. The request stays the connection's
 * current one (phase REQ_TUNNEL) and is logged when the tunnel closes. */
#ifndef FICUS_PROXY_TUNNEL_H
#define FICUS_PROXY_TUNNEL_H

#include <stddef.h>
#include <sys/types.h>

#include "proxy/proxy_worker.h"
#include "proxy/request.h"

/* The 101 went to the client: relay from now on (bytes the client sent after
 * its request head go upstream first). */
void tunnel_start(request_t *req);
void tunnel_client_data(request_t *req, const char *data, size_t len);
void tunnel_client_eof(request_t *req, ssize_t status);
void tunnel_client_drained(request_t *req);
void tunnel_upstream_data(request_t *req, const char *data, size_t len);
void tunnel_upstream_eof(request_t *req, int status);
void tunnel_upstream_drained(request_t *req, int status);
/* The connection timer fired: closes an idle tunnel, or waits for the rest. */
void tunnel_timeout(request_t *req);
/* Ends the tunnel: both connections close, the request is logged. */
void tunnel_end(request_t *req, end_reason_t why);

#endif
