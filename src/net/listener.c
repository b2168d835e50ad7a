/* Listening sockets; see listener.h. */
#include "net/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/addr.h"

int listener_open(const struct sockaddr *sa, socklen_t len, int backlog, char *err, size_t errlen)
{
    char name[80];
    addr_format(sa, name, sizeof name);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "%s: socket: %s", name, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        snprintf(err, errlen, "%s: SO_REUSEPORT: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, sa, len) != 0) {
        snprintf(err, errlen, "%s: bind: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) != 0) {
        snprintf(err, errlen, "%s: listen: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int listener_check_free(const struct sockaddr *sa, socklen_t len, char *err, size_t errlen)
{
    /* SO_REUSEPORT would let a second bind succeed and the kernel split the
     * traffic; a probe without it fails while anything listens there
     * (SO_REUSEADDR keeps TIME_WAIT connections from counting). */
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0; /* listener_open will say why */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int rc = bind(fd, sa, len);
    int e = errno;
    close(fd);
    if (rc != 0 && e == EADDRINUSE) {
        char name[80];
        addr_format(sa, name, sizeof name);
        snprintf(err, errlen,
                 "%s: another process already listens there (a second gateway on the same port "
                 "would split its traffic): stop it, or take its listeners over with "
                 "server.control_socket",
                 name);
        return -1;
    }
    return 0;
}

unsigned listener_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}
