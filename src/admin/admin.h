/* The admin listener (main thread): liveness, readiness and metrics. One
 * request per connection; answers are built by hooks the gateway provides. */
#ifndef FICUS_ADMIN_ADMIN_H
#define FICUS_ADMIN_ADMIN_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/buf.h"

typedef struct admin admin_t;

typedef struct admin_hooks {
    void *ctx;
    /* 1 when ready; else 0 with a short reason written into reason. */
    int (*ready)(void *ctx, char *reason, size_t n);
    /* Appends the Prometheus exposition. */
    void (*metrics)(void *ctx, buf_t *out);
    /* Any other endpoint: returns the status (0 = no such endpoint) and fills
     * out (JSON). body is the request body (may be empty). A 405 sets *allow
     * to the methods the endpoint takes ("GET, PUT"). */
    int (*handle)(void *ctx, const char *method, size_t method_len, const char *path,
                  size_t path_len, const char *body, size_t body_len, buf_t *out,
                  const char **allow);
    /* The bearer token every endpoint but /healthz, /readyz and /metrics
     * needs, or NULL for none (admin.token_env). May be NULL. */
    const char *(*token)(void *ctx);
} admin_hooks_t;

/* One admin request, and what admin_handle answers. */
typedef struct admin_request {
    const char *method, *path, *body, *authorization;
    size_t method_len, path_len, body_len, authorization_len;
} admin_request_t;

typedef struct admin_response {
    int status;
    const char *content_type;
    const char *header; /* one extra header line ("Allow: GET\r\n"), or NULL */
    char header_buf[96];
} admin_response_t;

/* Listens on sa, or, when fd >= 0, on that listening socket (taken over from
 * another ficus; the admin owns it from now on). */
admin_t *admin_start(uv_loop_t *loop, const struct sockaddr *sa, socklen_t len, int fd,
                     const admin_hooks_t *hooks, char *err, size_t errlen);
/* The listening socket, to hand over to a new process. */
int admin_fd(const admin_t *a);
/* Closes the listener and its connections. NULL is a no-op. */
void admin_stop(admin_t *a);

/* Routes one admin request (sans-I/O, for tests): fills the response and
 * body; returns the status. */
int admin_handle(const admin_hooks_t *hooks, const admin_request_t *req, buf_t *body,
                 admin_response_t *resp);

#endif
