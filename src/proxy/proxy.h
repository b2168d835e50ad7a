/* The request path. A client connection (client_conn.c) reads requests and
 * drives each through proxy_client_ops (proxy.c): head checks -> route ->
 * admission steps (admission.c) -> backend -> upstream head -> exchanges
 * (exchange.c) over pooled upstream connections (upstream_conn.c) -> one
 * decision per ended try (decide.c) -> response relayed -> log. After a 101
 * the request becomes a tunnel (tunnel.c). All of it runs on one worker's
 * loop (proxy_worker.c); nothing here locks. */
#ifndef FICUS_PROXY_PROXY_H
#define FICUS_PROXY_PROXY_H

#include <stddef.h>

#include "net/worker.h"
#include "proxy/client_conn.h"
#include "proxy/proxy_worker.h"
#include "proxy/request.h"

/* A worker accepted a connection (the worker hook; the callee owns fd). */
void proxy_on_accept(worker_t *w, int fd, size_t listener);

/* A suspended admission step is done: the request goes on (or is answered). */
void proxy_request_resume(request_t *req);

/* For an aggregation (aggregate.c), which answers the request itself:
 * ficus's own error answer; the client cannot be written to (the request
 * ends, the connection is cut). */
void proxy_answer_error(request_t *req, end_reason_t why, const char *message);
void proxy_request_gone(request_t *req, end_reason_t why);

#endif
