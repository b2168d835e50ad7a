/* The listening sockets of the workers and the admin: opened here, or
 * taken over from the ficus that runs on server.control_socket; and the
 * control socket through which a later ficus takes them over in turn. */
#ifndef FICUS_APP_LISTENERS_H
#define FICUS_APP_LISTENERS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "net/takeover.h"
#include "net/worker.h"

typedef struct listeners_plan {
    worker_fd_t *fds; /* every listening socket, with its worker and listener */
    size_t n;
    int admin_fd; /* a taken-over admin socket, or -1: bind admin.listen */
    takeover_client_t tc;
    bool took_over;
} listeners_plan_t;

/* Blocking, before the loop runs. Every received socket serves: closing
 * one would drop the connections queued on it. Each configured listener
 * gets one socket per worker at least; a received socket the config no
 * longer has is closed (logged). 0, or -1 with err (p still needs
 * listeners_plan_deinit). */
int listeners_plan(const config_t *cfg, listeners_plan_t *p, char *err, size_t errlen);
/* The workers serve p's sockets: the previous ficus, if any, may drain. */
void listeners_plan_serving(listeners_plan_t *p);
/* Releases p: received sockets go back to the previous ficus if it was not
 * told to drain; else the sockets are closed unless workers_own them. */
void listeners_plan_deinit(listeners_plan_t *p, bool workers_own);
/* Lets a later ficus take fds and admin_fd (if >= 0) over on path; NULL
 * (logged) when it cannot. */
takeover_server_t *listeners_serve_takeover(uv_loop_t *loop, const char *path,
                                            const worker_fd_t *fds, size_t n, int admin_fd,
                                            void (*on_handover)(void *ctx), void *ctx);

#endif
