/* A scripted HTTP server on 127.0.0.1 (an ephemeral port) for the client
 * tests, served by its own thread: it answers each request it reads with the
 * next step of a script, whatever connection the request came on, and counts
 * the connections it accepted. Test code only (static functions). */
#ifndef FICUS_TESTS_CLIENT_SCRIPT_SERVER_H
#define FICUS_TESTS_CLIENT_SCRIPT_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* What the server does after a step's answer (NULL: no answer). */
typedef enum {
    AFTER_KEEP,  /* read the next request on the same connection */
    AFTER_CLOSE, /* close the connection */
    AFTER_WAIT   /* wait until the client closes, then close */
} after_t;

typedef struct step {
    const char *answer;
    after_t after;
} step_t;

typedef struct script_server {
    int lfd;
    uint16_t port;
    pthread_t thread;
    const step_t *steps;
    size_t n_steps;
    size_t accepts;     /* connections accepted */
    char request[8192]; /* the last request read, head and body */
    size_t request_len;
} script_server_t;

/* Reads one request (head, then a Content-Length body): 1, or 0 at EOF. */
static int script_read_request(script_server_t *sv, int fd)
{
    size_t got = 0, want = 0;
    sv->request[0] = '\0';
    for (;;) {
        char *end = strstr(sv->request, "\r\n\r\n");
        if (end && !want) {
            const char *cl = strcasestr(sv->request, "\r\ncontent-length:");
            want =
                (size_t)(end + 4 - sv->request) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (want && got >= want)
            break;
        ssize_t n = read(fd, sv->request + got, sizeof sv->request - 1 - got);
        if (n <= 0)
            return 0;
        got += (size_t)n;
        sv->request[got] = '\0';
    }
    sv->request_len = got;
    return 1;
}

static void *script_serve(void *arg)
{
    script_server_t *sv = arg;
    size_t next = 0;
    while (next < sv->n_steps) {
        int fd = accept(sv->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        sv->accepts++;
        while (next < sv->n_steps && script_read_request(sv, fd)) {
            const step_t *st = &sv->steps[next++];
            if (st->answer && send(fd, st->answer, strlen(st->answer), MSG_NOSIGNAL) < 0)
                break;
            if (st->after == AFTER_WAIT) {
                char sink[256];
                while (read(fd, sink, sizeof sink) > 0) {
                }
            }
            if (st->after != AFTER_KEEP)
                break;
        }
        close(fd);
    }
    return NULL;
}

/* A socket bound to 127.0.0.1 on a port the kernel picks, listening when
 * backlog > 0 (else a port nothing listens on, while the socket is open). */
static int script_socket(uint16_t *port, int backlog)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, alen) != 0 ||
        (backlog > 0 && listen(fd, backlog) != 0) ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        fail_msg("script server: cannot open a socket on 127.0.0.1");
    *port = ntohs(a.sin_port);
    return fd;
}

static void script_server_start(script_server_t *sv, const step_t *steps, size_t n_steps)
{
    memset(sv, 0, sizeof *sv);
    sv->steps = steps;
    sv->n_steps = n_steps;
    sv->lfd = script_socket(&sv->port, 4);
    assert_int_equal(pthread_create(&sv->thread, NULL, script_serve, sv), 0);
}

/* Waits for the script to run out, then closes the listener. */
static void script_server_stop(script_server_t *sv)
{
    pthread_join(sv->thread, NULL);
    close(sv->lfd);
}

/* A port nothing listens on while the returned socket is open. */
static int script_closed_port(uint16_t *port) { return script_socket(port, 0); }

#endif
