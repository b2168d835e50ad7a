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
     * out (JSON). body is the request body (may be empty). */
    int (*handle)(void *ctx, const char *method, size_t method_len, const char *path,
                  size_t path_len, const char *body, size_t body_len, buf_t *out);
} admin_hooks_t;

/* Listens on sa, or, when fd >= 0, on that listening socket (taken over from
 * another ficus; the admin owns it from now on). */
admin_t *admin_start(uv_loop_t *loop, const struct sockaddr *sa, socklen_t len, int fd,
                     const admin_hooks_t *hooks, char *err, size_t errlen);
/* The listening socket, to hand over to a new process. */
int admin_fd(const admin_t *a);
/* Closes the listener and its connections. NULL is a no-op. */
void admin_stop(admin_t *a);

/* Routes one admin request (sans-I/O, for tests): fills status, content type
 * and body. */
int admin_handle(const admin_hooks_t *hooks, const char *method, size_t method_len,
                 const char *path, size_t path_len, const char *req_body, size_t req_body_len,
                 buf_t *body, const char **content_type);

#endif
