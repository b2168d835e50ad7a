/* Listener takeover over a Unix control socket (server.control_socket): the
 * running ficus (old side, a server on its loop) hands its listening sockets
 * to a starting one (new side, a blocking client), which then tells it to
 * drain. The wire protocol is described at the top of takeover.c. */
#ifndef FICUS_NET_TAKEOVER_H
#define FICUS_NET_TAKEOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct takeover_server takeover_server_t;

/* Old side. Listens on path (unlinks a stale socket file first only if nothing answers on it;
 * refuses with err when another process is listening there: "another ficus owns PATH").
 * Mode 0600. On a client's request it sends fds[0..n) (the descriptors stay open here) and waits
 * for the client's "serving" message; then it calls on_handover(ctx) once on the loop and stops
 * listening (it does not unlink the path then: the new process owns it). A client that goes away
 * before "serving" changes nothing; the server keeps listening for the next one. fds is copied.
 * The server serves one client at a time (a second one is told "busy"); requests are answered
 * within the loop, never blocking. NULL with err set on failure. */
takeover_server_t *takeover_server_start(uv_loop_t *loop, const char *path, const int *fds,
                                         size_t n, void (*on_handover)(void *ctx), void *ctx,
                                         char *err, size_t errlen);
/* Stops listening; unlinks path if it is still the socket this server created (same inode) and
 * no handover happened. Memory is released once the loop has run the close callbacks; safe to
 * call from on_handover. NULL is a no-op. */
void takeover_server_stop(takeover_server_t *s);

typedef struct takeover_client {
    int sock; /* the connection to the old process, kept until takeover_client_finish */
    int *fds; /* received descriptors (owned: closed by takeover_client_finish(…, false)) */
    size_t n;
} takeover_client_t;

/* New side, blocking (called before the loop runs), bounded by TAKEOVER_TIMEOUT_MS:
 * returns 1 with the old process's descriptors in c (in the old side's order, FD_CLOEXEC set);
 * 0 when nobody listens on path (no file, ECONNREFUSED: a stale file): start normally; < 0 on a
 * protocol error or timeout (err filled). On 0 and < 0, c holds nothing (sock -1, no fds). */
int takeover_client_fetch(const char *path, takeover_client_t *c, char *err, size_t errlen);
/* serving=true: tells the old process to drain and waits (bounded) for its "draining" answer,
 * then closes the connection; the caller keeps the fds it uses and must close the ones it does not
 * (finish does not touch c->fds in that case, only frees the array). serving=false: closes the
 * connection and every received fd (the old one keeps serving). Returns 0 / < 0; either way c is
 * left empty (sock -1, no fds). After a failed serving=true the old process may or may not drain;
 * the sockets work in both processes alike, so the new one can go on serving. */
int takeover_client_finish(takeover_client_t *c, bool serving, char *err, size_t errlen);

/* The local address of a listening socket (getsockname) equals addr (family, port, address;
 * for IPv6 also scope). False for a socket that is not listening. */
bool takeover_fd_matches(int fd, const struct sockaddr *addr, socklen_t len);

#endif
