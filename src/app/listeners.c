/* Listening sockets and their takeover; see listeners.h. */
#include "app/listeners.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/addr.h"
#include "core/defaults.h"
#include "core/log.h"
#include "net/listener.h"

int listeners_plan(const config_t *cfg, listeners_plan_t *p, char *err, size_t errlen)
{
    size_t nw = cfg->server.workers, nl = cfg->server.n_listeners;
    p->admin_fd = -1;
    p->tc.sock = -1;
    if (cfg->server.control_socket) {
        int rc = takeover_client_fetch(cfg->server.control_socket, &p->tc, err, errlen);
        if (rc < 0)
            return -1;
        p->took_over = rc == 1;
    }
    size_t nr = p->took_over ? p->tc.n : 0;
    bool *used = calloc(nr ? nr : 1, sizeof *used);
    p->fds = calloc(nr + nw * nl + 1, sizeof *p->fds);
    if (!used || !p->fds) {
        free(used);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t l = 0; l < nl && rc == 0; l++) {
        const config_listener_t *li = &cfg->server.listeners[l];
        size_t k = 0;
        for (size_t j = 0; j < nr; j++)
            if (!used[j] && takeover_fd_matches(p->tc.fds[j], (const struct sockaddr *)&li->addr,
                                                li->addrlen)) {
                used[j] = true;
                p->fds[p->n++] = (worker_fd_t){p->tc.fds[j], (uint32_t)(k++ % nw), (uint32_t)l};
            }
        if (k)
            log_info("takeover: %zu listening sockets for %s", k, li->address);
        else if (listener_check_free((const struct sockaddr *)&li->addr, li->addrlen, err,
                                     errlen) != 0) {
            rc = -1;
            break;
        }
        for (size_t w = k; w < nw; w++) {
            int fd = listener_open((const struct sockaddr *)&li->addr, li->addrlen, LISTEN_BACKLOG,
                                   err, errlen);
            if (fd < 0) {
                rc = -1;
                break;
            }
            p->fds[p->n++] = (worker_fd_t){fd, (uint32_t)w, (uint32_t)l};
        }
    }
    for (size_t j = 0; j < nr && rc == 0; j++) {
        if (used[j])
            continue;
        if (p->admin_fd < 0 &&
            takeover_fd_matches(p->tc.fds[j], (const struct sockaddr *)&cfg->admin_addr,
                                cfg->admin_addrlen)) {
            p->admin_fd = p->tc.fds[j];
            continue;
        }
        char name[80] = "?";
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(p->tc.fds[j], (struct sockaddr *)&ss, &len) == 0)
            addr_format((const struct sockaddr *)&ss, name, sizeof name);
        log_warn("takeover: %s is not in the new configuration: closing it", name);
        close(p->tc.fds[j]);
        p->tc.fds[j] = -1;
    }
    free(used);
    return rc;
}

void listeners_plan_serving(listeners_plan_t *p)
{
    if (!p->took_over)
        return;
    char err[512];
    if (takeover_client_finish(&p->tc, true, err, sizeof err) != 0)
        log_warn("%s (serving anyway: the sockets work in both processes)", err);
    else
        log_info("takeover: the previous ficus is draining");
    p->took_over = false;
}

void listeners_plan_deinit(listeners_plan_t *p, bool workers_own)
{
    char err[512];
    if (p->took_over) /* failed before serving: the old process keeps its sockets */
        takeover_client_finish(&p->tc, false, err, sizeof err);
    else if (!workers_own)
        for (size_t i = 0; i < p->n; i++)
            close(p->fds[i].fd);
    free(p->fds);
}

takeover_server_t *listeners_serve_takeover(uv_loop_t *loop, const char *path,
                                            const worker_fd_t *wfds, size_t n, int admin_fd,
                                            void (*on_handover)(void *ctx), void *ctx)
{
    int *fds = calloc(n + 1, sizeof *fds);
    if (!fds)
        return NULL;
    for (size_t i = 0; i < n; i++)
        fds[i] = wfds[i].fd;
    if (admin_fd >= 0)
        fds[n++] = admin_fd;
    char err[512];
    takeover_server_t *s =
        takeover_server_start(loop, path, fds, n, on_handover, ctx, err, sizeof err);
    free(fds);
    if (!s)
        log_error("%s: a restart cannot take this process's sockets over", err);
    else
        log_info("control socket %s: a new ficus run can take over the listeners", path);
    return s;
}
