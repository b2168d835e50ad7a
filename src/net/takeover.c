/* Listener takeover over a Unix control socket; see takeover.h. The old side
 * is a small state machine on the main loop (uv_poll on raw sockets); the new
 * side is plain blocking code with one deadline, run before its loop starts.
 *
 * Protocol, version 1, on an AF_UNIX SOCK_SEQPACKET socket: every message is
 * one record holding one line, so descriptors arrive with the record that
 * announces them and nothing needs framing.
 *   new -> old  "FICUS-TAKEOVER 1\n"
 *   old -> new  "FICUS-TAKEOVER 1 FDS <n>\n"           (n <= TAKEOVER_MAX_FDS)
 *               then records "FD <k>\n", each carrying exactly k descriptors in
 *               one SCM_RIGHTS message (1 <= k <= 253, the kernel's SCM_MAX_FD),
 *               until all n are sent, in the old side's order
 *   new -> old  "SERVING\n"   the new process accepts on them now
 *   old -> new  "DRAINING\n"  the old one has closed its control socket and
 *                             stops accepting; both close the connection
 * Instead of the "FDS" answer the old side may send "BUSY\n" (another takeover
 * is in progress) or "ERROR <text>\n", then close. A connection that ends
 * before "SERVING" leaves the old side serving as before. */
#include "net/takeover.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/time.h"

#define HELLO "FICUS-TAKEOVER 1\n"
#define HELLO_PREFIX "FICUS-TAKEOVER "
#define SERVING "SERVING\n"
#define DRAINING "DRAINING\n"
#define BUSY "BUSY\n"
#define CHUNK_FDS 253        /* SCM_MAX_FD: the kernel refuses more in one message */
#define RECORD_MAX_BYTES 128 /* every record is one short line */

typedef union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * CHUNK_FDS)];
} chunk_control_t;

/* ---- old side ---------------------------------------------------------- */

typedef enum {
    CONN_WAIT_HELLO,   /* timer armed: a silent connection must not block takeovers */
    CONN_SENDING,      /* answer and chunks going out; next_fd says how far */
    CONN_WAIT_SERVING, /* no time limit: the new process starts up, its exit closes the socket */
} conn_state_t;

typedef struct takeover_conn {
    takeover_server_t *s;
    uv_poll_t poll;
    uv_timer_t timer;
    int fd;
    int handles; /* open handles; the conn is freed when the last one closed */
    conn_state_t state;
    bool header_sent;
    size_t next_fd;
    long pid; /* of the peer, for the log */
} takeover_conn_t;

struct takeover_server {
    uv_loop_t *loop;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int fd; /* the listening control socket; -1 once closed */
    uv_poll_t poll;
    uv_timer_t backoff; /* accepting paused after EMFILE and the like */
    struct stat st;     /* the socket file this server bound */
    int *fds;
    size_t n;
    void (*on_handover)(void *ctx);
    void *ctx;
    takeover_conn_t *conn; /* the client being served, or NULL */
    int handles;           /* open handles, the conn's included */
    bool handed_over;
    bool stopped;
};

static void server_release(takeover_server_t *s)
{
    if (--s->handles == 0 && s->stopped) {
        free(s->fds);
        free(s);
    }
}

static void conn_on_close(uv_handle_t *h)
{
    takeover_conn_t *c = h->data;
    takeover_server_t *s = c->s;
    if (--c->handles == 0)
        free(c);
    server_release(s);
}

static void conn_close(takeover_conn_t *c)
{
    if (c->s->conn == c)
        c->s->conn = NULL;
    if (c->fd < 0)
        return;
    /* Stopped first: the descriptor may be closed at once, before the close callbacks. */
    uv_poll_stop(&c->poll);
    close(c->fd);
    c->fd = -1;
    uv_close((uv_handle_t *)&c->poll, conn_on_close);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void server_on_close(uv_handle_t *h) { server_release(h->data); }

static void server_close_listener(takeover_server_t *s)
{
    if (s->fd < 0)
        return;
    uv_poll_stop(&s->poll);
    close(s->fd);
    s->fd = -1;
    uv_close((uv_handle_t *)&s->poll, server_on_close);
    uv_close((uv_handle_t *)&s->backoff, server_on_close);
}

/* One small record on a non-blocking socket; 0, FE_AGAIN or FE_IO. */
static int send_line(int fd, const char *line)
{
    ssize_t r;
    do
        r = send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r >= 0)
        return 0;
    return errno == EAGAIN || errno == EWOULDBLOCK ? FE_AGAIN : FE_IO;
}

static int send_chunk(int fd, const int *fds, size_t k)
{
    char line[32];
    int len = snprintf(line, sizeof line, "FD %zu\n", k);
    struct iovec iov = {line, (size_t)len};
    chunk_control_t control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * k)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * k);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * k);
    ssize_t r;
    do
        r = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r >= 0)
        return 0;
    return errno == EAGAIN || errno == EWOULDBLOCK ? FE_AGAIN : FE_IO;
}

static void conn_on_io(uv_poll_t *p, int status, int events);

/* Sends what is left of the answer; on a full socket waits for writability. */
static void conn_send(takeover_conn_t *c)
{
    takeover_server_t *s = c->s;
    while (c->state == CONN_SENDING) {
        int rc;
        if (!c->header_sent) {
            char line[64];
            snprintf(line, sizeof line, HELLO_PREFIX "1 FDS %zu\n", s->n);
            rc = send_line(c->fd, line);
        } else {
            size_t k = s->n - c->next_fd < CHUNK_FDS ? s->n - c->next_fd : CHUNK_FDS;
            rc = send_chunk(c->fd, s->fds + c->next_fd, k);
            if (rc == 0)
                c->next_fd += k;
        }
        if (rc == FE_AGAIN) {
            uv_poll_start(&c->poll, UV_READABLE | UV_WRITABLE | UV_DISCONNECT, conn_on_io);
            return;
        }
        if (rc != 0) {
            log_warn("takeover: sending listening sockets to pid %ld: %s", c->pid, strerror(errno));
            conn_close(c);
            return;
        }
        c->header_sent = true;
        if (c->next_fd == s->n) {
            c->state = CONN_WAIT_SERVING;
            uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, conn_on_io);
        }
    }
}

/* The new process serves: from now on the sockets are its. The control socket
 * closes before "DRAINING" so that the new process, told, can bind the path. */
static void conn_handover(takeover_conn_t *c)
{
    takeover_server_t *s = c->s;
    log_info("takeover: pid %ld serves on the listening sockets; draining", c->pid);
    s->handed_over = true;
    server_close_listener(s);
    if (send_line(c->fd, DRAINING) != 0)
        log_debug("takeover: telling pid %ld we drain: %s", c->pid, strerror(errno));
    conn_close(c);
    /* Last: the callback may stop the server; the handles above keep it allocated. */
    if (s->on_handover)
        s->on_handover(s->ctx);
}

static void conn_refuse(takeover_conn_t *c, const char *line)
{
    (void)send_line(c->fd, line);
    conn_close(c);
}

static void conn_on_record(takeover_conn_t *c, const char *rec, size_t len)
{
    switch (c->state) {
    case CONN_WAIT_HELLO:
        if (len == strlen(HELLO) && memcmp(rec, HELLO, len) == 0) {
            uv_timer_stop(&c->timer);
            log_info("takeover: pid %ld asks for the %zu listening sockets", c->pid, c->s->n);
            c->state = CONN_SENDING;
            conn_send(c);
            return;
        }
        log_warn("takeover: pid %ld sent an unknown hello (%.*s)", c->pid, (int)strcspn(rec, "\n"),
                 rec);
        if (len > strlen(HELLO_PREFIX) && memcmp(rec, HELLO_PREFIX, strlen(HELLO_PREFIX)) == 0)
            conn_refuse(c, "ERROR unsupported protocol version (this ficus speaks 1)\n");
        else
            conn_refuse(c, "ERROR bad hello\n");
        return;
    case CONN_WAIT_SERVING:
        if (len == strlen(SERVING) && memcmp(rec, SERVING, len) == 0) {
            conn_handover(c);
            return;
        }
        break;
    case CONN_SENDING:
        break;
    }
    log_warn("takeover: pid %ld broke the protocol; it does not take over", c->pid);
    conn_refuse(c, "ERROR unexpected message\n");
}

static void conn_read(takeover_conn_t *c)
{
    char rec[RECORD_MAX_BYTES + 1];
    struct iovec iov = {rec, RECORD_MAX_BYTES};
    /* No control buffer: descriptors a client might send are dropped by the kernel. */
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t r;
    do
        r = recvmsg(c->fd, &msg, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (r <= 0) {
        if (c->state != CONN_WAIT_HELLO)
            log_info("takeover: pid %ld went away before serving; we keep serving", c->pid);
        conn_close(c);
        return;
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        log_warn("takeover: pid %ld sent an oversized message", c->pid);
        conn_refuse(c, "ERROR message too large\n");
        return;
    }
    rec[r] = '\0';
    conn_on_record(c, rec, (size_t)r);
}

static void conn_on_io(uv_poll_t *p, int status, int events)
{
    takeover_conn_t *c = p->data;
    if (status < 0) {
        log_warn("takeover: connection from pid %ld: %s", c->pid, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (events & (UV_READABLE | UV_DISCONNECT)) {
        conn_read(c);
        if (c->fd < 0)
            return;
    }
    if ((events & UV_WRITABLE) && c->state == CONN_SENDING) {
        /* Back to reading only until a send meets a full socket again. */
        uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, conn_on_io);
        conn_send(c);
    }
}

static void conn_on_hello_timeout(uv_timer_t *t)
{
    takeover_conn_t *c = t->data;
    log_warn("takeover: pid %ld sent no hello within %d ms", c->pid, TAKEOVER_TIMEOUT_MS);
    conn_close(c);
}

/* Only the user this ficus runs as (or root) may take its sockets: the file
 * mode says so too, but a mode can be changed by hand. */
static bool peer_allowed(int fd, long *pid)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return false;
    *pid = (long)cred.pid;
    return cred.uid == geteuid() || cred.uid == 0;
}

static bool conn_gone(const takeover_conn_t *c)
{
    char b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void server_on_client(takeover_server_t *s, int fd)
{
    long pid = 0;
    if (!peer_allowed(fd, &pid)) {
        log_warn("takeover: refused pid %ld: another user", pid);
        (void)send_line(fd, "ERROR permission denied\n");
        close(fd);
        return;
    }
    /* A client that closed is not "in progress", though its EOF may still wait
     * in this same loop iteration: a retry right after a failure must not be told busy. */
    if (s->conn && conn_gone(s->conn)) {
        log_info("takeover: pid %ld went away before serving; we keep serving", s->conn->pid);
        conn_close(s->conn);
    }
    if (s->conn) {
        log_warn("takeover: pid %ld told busy: pid %ld is taking over", pid, s->conn->pid);
        (void)send_line(fd, BUSY);
        close(fd);
        return;
    }
    takeover_conn_t *c = calloc(1, sizeof *c);
    int rc = c ? uv_poll_init(s->loop, &c->poll, fd) : UV_ENOMEM;
    if (rc != 0) {
        log_error("takeover: cannot serve pid %ld: %s", pid, uv_strerror(rc));
        free(c);
        close(fd);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->s = s;
    c->fd = fd;
    c->pid = pid;
    c->handles = 2;
    s->handles += 2;
    c->poll.data = c;
    c->timer.data = c;
    c->state = CONN_WAIT_HELLO;
    s->conn = c;
    uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, conn_on_io);
    uv_timer_start(&c->timer, conn_on_hello_timeout, TAKEOVER_TIMEOUT_MS, 0);
}

static void server_on_readable(uv_poll_t *p, int status, int events);

static void server_on_backoff(uv_timer_t *t)
{
    takeover_server_t *s = t->data;
    if (s->fd >= 0)
        uv_poll_start(&s->poll, UV_READABLE, server_on_readable);
}

static void server_on_readable(uv_poll_t *p, int status, int events)
{
    takeover_server_t *s = p->data;
    (void)status; /* an error shows in accept4 below */
    (void)events;
    while (s->fd >= 0) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            server_on_client(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        /* Out of descriptors or memory: a level-triggered poll would spin, so pause. */
        log_warn("takeover: accept on %s: %s", s->path, strerror(errno));
        uv_poll_stop(&s->poll);
        uv_timer_start(&s->backoff, server_on_backoff, EMFILE_BACKOFF_MS, 0);
        return;
    }
}

/* 0 with *fd connected; otherwise -errno of socket() or connect(). */
static int unix_connect(const char *path, int *fd)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    *fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (*fd < 0)
        return -errno;
    /* Non-blocking on AF_UNIX: never EINPROGRESS, EAGAIN when the backlog is full. */
    if (connect(*fd, (struct sockaddr *)&sun, sizeof sun) == 0)
        return 0;
    int e = errno;
    close(*fd);
    *fd = -1;
    return -e;
}

static bool path_fits(const char *path, char *err, size_t errlen)
{
    size_t len = strlen(path);
    if (len > 0 && len < sizeof(((struct sockaddr_un *)0)->sun_path))
        return true;
    snprintf(err, errlen, "control socket path must be 1 to %zu bytes: \"%s\"",
             sizeof(((struct sockaddr_un *)0)->sun_path) - 1, path);
    return false;
}

/* Makes path free to bind: nothing there, or a socket file nobody answers on
 * (a ficus that died), which is removed. Anything else is someone's: refused. */
static int claim_path(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return FE_IO;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket", path);
        return FE_INVAL;
    }
    int fd;
    int r = unix_connect(path, &fd);
    if (r == 0 || r == -EAGAIN) {
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "another ficus owns %s", path);
        return FE_INVAL;
    }
    if (r == -EPROTOTYPE) {
        snprintf(err, errlen, "another process (not a ficus control socket) listens on %s", path);
        return FE_INVAL;
    }
    if (r != -ECONNREFUSED) {
        snprintf(err, errlen, "%s: connect: %s", path, strerror(-r));
        return FE_IO;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "%s: removing the stale socket: %s", path, strerror(errno));
        return FE_IO;
    }
    return 0;
}

takeover_server_t *takeover_server_start(uv_loop_t *loop, const char *path, const int *fds,
                                         size_t n, void (*on_handover)(void *ctx), void *ctx,
                                         char *err, size_t errlen)
{
    if (!path_fits(path, err, errlen))
        return NULL;
    if (n > TAKEOVER_MAX_FDS) {
        snprintf(err, errlen, "takeover: %zu listening sockets, at most %d", n, TAKEOVER_MAX_FDS);
        return NULL;
    }
    if (claim_path(path, err, errlen) != 0)
        return NULL;
    takeover_server_t *s = calloc(1, sizeof *s);
    if (!s || (n && !(s->fds = malloc(n * sizeof *fds)))) {
        snprintf(err, errlen, "takeover: out of memory");
        goto fail_free;
    }
    if (n)
        memcpy(s->fds, fds, n * sizeof *fds);
    s->n = n;
    s->loop = loop;
    s->on_handover = on_handover;
    s->ctx = ctx;
    memcpy(s->path, path, strlen(path) + 1);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    s->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        snprintf(err, errlen, "%s: socket: %s", path, strerror(errno));
        goto fail_free;
    }
    if (bind(s->fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        snprintf(err, errlen, "%s: bind: %s", path,
                 errno == EADDRINUSE ? "another process took it meanwhile" : strerror(errno));
        goto fail_close;
    }
    /* Before listen(): until then every connect is refused, so there is no
     * moment at which the umask's mode lets another user in. */
    if (chmod(path, 0600) != 0 || lstat(path, &s->st) != 0) {
        snprintf(err, errlen, "%s: chmod: %s", path, strerror(errno));
        goto fail_unlink;
    }
    if (listen(s->fd, TAKEOVER_BACKLOG) != 0) {
        snprintf(err, errlen, "%s: listen: %s", path, strerror(errno));
        goto fail_unlink;
    }
    if (uv_poll_init(loop, &s->poll, s->fd) != 0) {
        snprintf(err, errlen, "%s: cannot poll the control socket", path);
        goto fail_unlink;
    }
    uv_timer_init(loop, &s->backoff);
    s->poll.data = s;
    s->backoff.data = s;
    s->handles = 2;
    uv_poll_start(&s->poll, UV_READABLE, server_on_readable);
    return s;

fail_unlink:
    unlink(path);
fail_close:
    close(s->fd);
fail_free:
    if (s)
        free(s->fds);
    free(s);
    return NULL;
}

/* The same file we bound: device, inode and change time, since a freed inode
 * number is soon handed to the next file created in the directory. */
static bool path_is_ours(const takeover_server_t *s)
{
    struct stat st;
    return lstat(s->path, &st) == 0 && st.st_dev == s->st.st_dev && st.st_ino == s->st.st_ino &&
           st.st_ctim.tv_sec == s->st.st_ctim.tv_sec && st.st_ctim.tv_nsec == s->st.st_ctim.tv_nsec;
}

void takeover_server_stop(takeover_server_t *s)
{
    if (!s || s->stopped)
        return;
    s->stopped = true;
    if (!s->handed_over && path_is_ours(s))
        unlink(s->path);
    server_close_listener(s);
    if (s->conn)
        conn_close(s->conn);
    if (s->handles == 0) {
        free(s->fds);
        free(s);
    }
}

/* ---- new side ---------------------------------------------------------- */

/* Waits until fd is ready for events or the deadline passes: 1, 0 (timeout) or FE_IO. */
static int wait_fd(int fd, short events, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = time_now_ms();
        if (now >= deadline_ms)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)(deadline_ms - now));
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return FE_IO;
    }
}

static void close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

/* Sends one record, waiting for room until the deadline; err without a prefix. */
static int client_send(int fd, const char *line, uint64_t deadline_ms, char *err, size_t errlen)
{
    for (;;) {
        int rc = send_line(fd, line);
        if (rc == 0)
            return 0;
        if (rc != FE_AGAIN) {
            snprintf(err, errlen, "send: %s", strerror(errno));
            return FE_IO;
        }
        rc = wait_fd(fd, POLLOUT, deadline_ms);
        if (rc <= 0) {
            snprintf(err, errlen, "the running ficus did not read within %d ms",
                     TAKEOVER_TIMEOUT_MS);
            return rc == 0 ? FE_AGAIN : FE_IO;
        }
    }
}

/* Receives one record into rec (NUL-terminated) and the descriptors it
 * carries into fds[0..*nfds), at most max_fds of them. Returns the record's
 * length, 0 when the peer closed, or < 0 with err set; on error no
 * descriptor of this record stays open. */
static ssize_t client_recv(int fd, uint64_t deadline_ms, char *rec, int *fds, size_t max_fds,
                           size_t *nfds, char *err, size_t errlen)
{
    bool reset_seen = false;
    *nfds = 0;
    for (;;) {
        int w = wait_fd(fd, POLLIN, deadline_ms);
        if (w <= 0) {
            snprintf(err, errlen, "takeover: no answer from the running ficus within %d ms",
                     TAKEOVER_TIMEOUT_MS);
            return w == 0 ? FE_AGAIN : FE_IO;
        }
        struct iovec iov = {rec, RECORD_MAX_BYTES};
        chunk_control_t control;
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control.buf,
                             .msg_controllen = sizeof control.buf};
        ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        /* A peer that closes with our data unread leaves a reset, reported once
         * ahead of the records it sent before ("BUSY"): read those next. */
        if (r < 0 && errno == ECONNRESET && !reset_seen) {
            reset_seen = true;
            continue;
        }
        if (r < 0) {
            snprintf(err, errlen, "takeover: recvmsg: %s", strerror(errno));
            return FE_IO;
        }
        /* Whatever arrived is collected first, so that every error path can close it. */
        size_t got = 0;
        bool overflow = false;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int rfd;
                memcpy(&rfd, CMSG_DATA(cm) + i * sizeof(int), sizeof rfd);
                if (got < max_fds)
                    fds[got++] = rfd;
                else {
                    close(rfd);
                    overflow = true;
                }
            }
        }
        const char *why = NULL;
        if (r == 0 && got) /* no record carries descriptors without a line */
            why = "descriptors without a message";
        else if (msg.msg_flags & MSG_CTRUNC)
            why = "descriptors were cut off (out of descriptors here?)";
        else if (msg.msg_flags & MSG_TRUNC)
            why = "an oversized message";
        else if (overflow)
            why = "more descriptors than announced";
        if (why) {
            close_fds(fds, got);
            snprintf(err, errlen, "takeover: %s", why);
            return FE_PARSE;
        }
        rec[r] = '\0';
        *nfds = got;
        return r;
    }
}

/* A count followed by exactly "\n" and nothing else; 0 or FE_PARSE. The
 * digit bound keeps any accepted count far from overflow. */
static int parse_count(const char *s, size_t *n)
{
    size_t digits = strspn(s, "0123456789");
    if (digits == 0 || digits > 9 || strcmp(s + digits, "\n") != 0)
        return FE_PARSE;
    *n = (size_t)strtoul(s, NULL, 10);
    return 0;
}

/* The old side's answer to the hello: the count, or why there is none. */
static int parse_answer(const char *path, const char *rec, size_t *n, char *err, size_t errlen)
{
    static const char fds_prefix[] = HELLO_PREFIX "1 FDS ";
    if (strcmp(rec, BUSY) == 0) {
        snprintf(err, errlen, "%s: another takeover is in progress", path);
        return FE_AGAIN;
    }
    if (strncmp(rec, "ERROR ", 6) == 0) {
        snprintf(err, errlen, "%s: the running ficus refused: %.*s", path,
                 (int)strcspn(rec + 6, "\n"), rec + 6);
        return FE_INVAL;
    }
    if (strncmp(rec, fds_prefix, strlen(fds_prefix)) != 0 ||
        parse_count(rec + strlen(fds_prefix), n) != 0) {
        snprintf(err, errlen, "%s: not a ficus control socket (answer \"%.*s\")", path,
                 (int)strcspn(rec, "\n"), rec);
        return FE_PARSE;
    }
    if (*n > TAKEOVER_MAX_FDS) {
        snprintf(err, errlen, "%s: %zu descriptors announced, at most %d", path, *n,
                 TAKEOVER_MAX_FDS);
        return FE_TOOBIG;
    }
    return 0;
}

/* Receives the n descriptors that follow the answer, in chunks. */
static int receive_fds(const char *path, int sock, uint64_t deadline_ms, int *fds, size_t n,
                       char *err, size_t errlen)
{
    size_t have = 0;
    while (have < n) {
        char rec[RECORD_MAX_BYTES + 1] = "";
        size_t got;
        ssize_t r = client_recv(sock, deadline_ms, rec, fds + have, n - have, &got, err, errlen);
        if (r == 0)
            snprintf(err, errlen,
                     "%s: the running ficus closed the connection after %zu of %zu "
                     "descriptors",
                     path, have, n);
        if (r <= 0) {
            close_fds(fds, have);
            return r == 0 ? FE_IO : (int)r;
        }
        size_t k;
        if (strncmp(rec, "FD ", 3) != 0 || parse_count(rec + 3, &k) != 0 || k != got || got == 0) {
            snprintf(err, errlen, "%s: a chunk of %zu descriptors announced as \"%.*s\"", path, got,
                     (int)strcspn(rec, "\n"), rec);
            close_fds(fds, have + got);
            return FE_PARSE;
        }
        have += got;
    }
    return 0;
}

int takeover_client_fetch(const char *path, takeover_client_t *c, char *err, size_t errlen)
{
    *c = (takeover_client_t){.sock = -1};
    if (!path_fits(path, err, errlen))
        return FE_INVAL;
    uint64_t deadline_ms = time_now_ms() + TAKEOVER_TIMEOUT_MS;
    int sock;
    int r;
    for (;;) {
        r = unix_connect(path, &sock);
        if (r != -EAGAIN || time_now_ms() >= deadline_ms)
            break;
        poll(NULL, 0, 10); /* the backlog is full: the old side accepts soon */
    }
    if (r == -ENOENT || r == -ECONNREFUSED)
        return 0;
    if (r == -EAGAIN) {
        snprintf(err, errlen, "%s: the running ficus did not accept within %d ms", path,
                 TAKEOVER_TIMEOUT_MS);
        return FE_AGAIN;
    }
    if (r != 0) {
        snprintf(err, errlen, "%s: connect: %s", path, strerror(-r));
        return FE_IO;
    }
    char rec[RECORD_MAX_BYTES + 1];
    size_t n = 0;
    size_t got;
    ssize_t rr;
    char send_err[256];
    int sent = client_send(sock, HELLO, deadline_ms, send_err, sizeof send_err);
    /* Read even when the hello could not be sent: a busy old side answers and
     * closes without waiting for it, and its answer says more than EPIPE. */
    rr = client_recv(sock, deadline_ms, rec, NULL, 0, &got, err, errlen);
    if (rr <= 0 && sent != 0) {
        snprintf(err, errlen, "%s: %s", path, send_err);
        r = sent;
        goto fail_close;
    }
    if (rr == 0)
        snprintf(err, errlen, "%s: the running ficus closed the connection", path);
    if (rr <= 0) {
        r = rr == 0 ? FE_IO : (int)rr;
        goto fail_close;
    }
    if ((r = parse_answer(path, rec, &n, err, errlen)) != 0)
        goto fail_close;
    int *fds = NULL;
    if (n && !(fds = malloc(n * sizeof *fds))) {
        snprintf(err, errlen, "takeover: out of memory");
        r = FE_NOMEM;
        goto fail_close;
    }
    if ((r = receive_fds(path, sock, deadline_ms, fds, n, err, errlen)) != 0) {
        free(fds);
        goto fail_close;
    }
    c->sock = sock;
    c->fds = fds;
    c->n = n;
    return 1;

fail_close:
    close(sock);
    return r;
}

int takeover_client_finish(takeover_client_t *c, bool serving, char *err, size_t errlen)
{
    int rc = 0;
    if (serving && c->sock < 0) {
        snprintf(err, errlen, "takeover: no connection to the running ficus");
        rc = FE_INVAL;
    } else if (serving) {
        uint64_t deadline_ms = time_now_ms() + TAKEOVER_TIMEOUT_MS;
        char rec[RECORD_MAX_BYTES + 1] = "";
        size_t got;
        char send_err[256];
        ssize_t r = client_send(c->sock, SERVING, deadline_ms, send_err, sizeof send_err);
        if (r != 0)
            snprintf(err, errlen, "takeover: %s", send_err);
        else
            r = client_recv(c->sock, deadline_ms, rec, NULL, 0, &got, err, errlen);
        if (r == 0) {
            snprintf(err, errlen,
                     "takeover: the running ficus closed the connection instead of "
                     "draining");
            rc = FE_IO;
        } else if (r < 0) {
            rc = (int)r;
        } else if (strcmp(rec, DRAINING) != 0) {
            snprintf(err, errlen, "takeover: \"%.*s\" instead of draining", (int)strcspn(rec, "\n"),
                     rec);
            rc = FE_PARSE;
        }
    } else {
        close_fds(c->fds, c->n);
    }
    if (c->sock >= 0)
        close(c->sock);
    free(c->fds);
    *c = (takeover_client_t){.sock = -1};
    return rc;
}

/* ---- matching received sockets to the configuration -------------------- */

bool takeover_fd_matches(int fd, const struct sockaddr *addr, socklen_t len)
{
    int listening = 0;
    socklen_t olen = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) != 0 || !listening)
        return false;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 || ss.ss_family != addr->sa_family)
        return false;
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        const struct sockaddr_in *b = (const struct sockaddr_in *)&ss;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)&ss;
        return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
               memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
    }
    return false;
}
