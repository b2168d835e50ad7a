/* Listening sockets: one per worker per address, bound with SO_REUSEPORT so
 * the kernel spreads connections over the workers' own accept queues. */
#ifndef FICUS_NET_LISTENER_H
#define FICUS_NET_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

/* A non-blocking listening socket, or -1 with err set. */
int listener_open(const struct sockaddr *sa, socklen_t len, int backlog, char *err, size_t errlen);
/* The port a socket is bound to (for ":0" in tests), 0 on error. */
/* 0 when nothing listens on the address yet; -1 (and err) when another
 * socket already does, which SO_REUSEPORT would otherwise share silently. */
int listener_check_free(const struct sockaddr *sa, socklen_t len, char *err, size_t errlen);
unsigned listener_port(int fd);

#endif
