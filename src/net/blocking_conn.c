/* Blocking-style connections; see blocking_conn.h. The socket stays
 * non-blocking: every wait is a poll() bounded by what is left of the
 * deadline, so no step can outlive it. */
#include "net/blocking_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/time.h"

void blocking_conn_init(blocking_conn_t *c)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* Waits for events on fd until the deadline: 0, FE_AGAIN (err = ETIMEDOUT)
 * or FE_IO (err set). */
static int wait_fd(blocking_conn_t *c, short events, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = time_now_ms();
        if (now >= deadline_ms)
            break;
        struct pollfd p = {.fd = c->fd, .events = events};
        int r = poll(&p, 1, (int)(deadline_ms - now));
        if (r > 0)
            return 0;
        if (r == 0)
            break;
        if (errno != EINTR) {
            c->err = errno;
            return FE_IO;
        }
    }
    c->err = ETIMEDOUT;
    return FE_AGAIN;
}

/* Connects c->fd to one of the addresses: 0, FE_AGAIN or FE_IO. The
 * deadline covers every address: a timeout ends the attempt. */
static int connect_any(blocking_conn_t *c, const struct addrinfo *ai, uint64_t deadline_ms)
{
    c->err = ECONNREFUSED; /* no address at all */
    for (; ai; ai = ai->ai_next) {
        c->fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (c->fd < 0) {
            c->err = errno;
            continue;
        }
        int err = 0;
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                int w = wait_fd(c, POLLOUT, deadline_ms);
                if (w == FE_AGAIN) {
                    blocking_conn_close(c);
                    c->err = ETIMEDOUT;
                    return FE_AGAIN;
                }
                socklen_t len = sizeof err;
                if (w != 0)
                    err = c->err;
                else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                    err = errno;
            }
        }
        if (err == 0) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return 0;
        }
        blocking_conn_close(c);
        c->err = err;
    }
    return FE_IO;
}

enum { TLS_EOF = 0, TLS_RETRY = 1 };

/* After a TLS call returned rc: TLS_RETRY once the socket is ready again,
 * TLS_EOF on the peer's close_notify, FE_AGAIN at the deadline, else FE_IO. */
static int tls_wait(blocking_conn_t *c, int rc, uint64_t deadline_ms)
{
    int e = SSL_get_error(c->ssl, rc);
    short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (!ev) {
        c->err = errno;
        return e == SSL_ERROR_ZERO_RETURN ? TLS_EOF : FE_IO;
    }
    int w = wait_fd(c, ev, deadline_ms);
    return w == 0 ? TLS_RETRY : w;
}

static int tls_handshake(blocking_conn_t *c, SSL_CTX *ctx, const char *host, uint64_t deadline_ms)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        snprintf(c->tls_why, sizeof c->tls_why, "cannot set up");
        return FE_NOMEM;
    }
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    /* SNI carries names only; the peer check matches the name or the IP. */
    if (!is_ip)
        SSL_set_tlsext_host_name(c->ssl, host);
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(param, host);
    else
        SSL_set1_host(c->ssl, host);
    for (;;) {
        ERR_clear_error();
        int rc = SSL_connect(c->ssl);
        if (rc == 1)
            return 0;
        int w = tls_wait(c, rc, deadline_ms);
        if (w == TLS_RETRY)
            continue;
        if (w == FE_AGAIN)
            return FE_AGAIN;
        long v = SSL_get_verify_result(c->ssl);
        unsigned long e = ERR_peek_last_error();
        const char *why = v != X509_V_OK ? X509_verify_cert_error_string(v)
                          : e            ? ERR_reason_error_string(e)
                                         : NULL;
        snprintf(c->tls_why, sizeof c->tls_why, "%s", why ? why : "handshake failed");
        return FE_IO;
    }
}

int blocking_conn_open(blocking_conn_t *c, const char *host, const char *port,
                       const blocking_conn_opts_t *o, uint64_t deadline_ms)
{
    blocking_conn_init(c);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = o && o->addrconfig ? AI_ADDRCONFIG : 0};
    struct addrinfo *res = NULL;
    c->step = BLOCKING_CONN_RESOLVE;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        c->gai_err = g;
        c->err = errno;
        return FE_NOTFOUND;
    }
    c->step = BLOCKING_CONN_CONNECT;
    int rc = connect_any(c, res, deadline_ms);
    freeaddrinfo(res);
    if (rc != 0 || !o || !o->tls)
        return rc;
    c->step = BLOCKING_CONN_TLS;
    rc = tls_handshake(c, o->tls, host, deadline_ms);
    if (rc != 0) {
        int err = c->err;
        blocking_conn_close(c);
        c->err = err;
    }
    return rc;
}

/* Drops n sent bytes from the front of iov. */
static void iov_advance(struct iovec **iov, int *iovcnt, size_t n)
{
    while (*iovcnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*iovcnt)--;
    }
    if (*iovcnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* One send of (part of) iov: bytes sent, or a negative FE_* code. */
/* After a plain send or recv failed: 0 to try again (interrupted, or the
 * socket is ready now), else the error (FE_AGAIN past the deadline). */
static int io_again(blocking_conn_t *c, short events, uint64_t deadline_ms)
{
    if (errno == EINTR)
        return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
        c->err = errno;
        return FE_IO;
    }
    return wait_fd(c, events, deadline_ms);
}

static ssize_t send_some(blocking_conn_t *c, struct iovec *iov, int iovcnt, uint64_t deadline_ms)
{
    for (;;) {
        if (c->ssl) {
            if (iov->iov_len == 0)
                return 0;
            ERR_clear_error();
            int rc = SSL_write(c->ssl, iov->iov_base, (int)iov->iov_len);
            if (rc > 0)
                return rc;
            int w = tls_wait(c, rc, deadline_ms);
            if (w == TLS_RETRY)
                continue;
            return w == FE_AGAIN ? FE_AGAIN : FE_IO;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        int r = io_again(c, POLLOUT, deadline_ms);
        if (r != 0)
            return r;
    }
}

int blocking_conn_writev(blocking_conn_t *c, struct iovec *iov, int iovcnt, uint64_t deadline_ms)
{
    iov_advance(&iov, &iovcnt, 0); /* skips empty leading parts */
    while (iovcnt > 0) {
        ssize_t n = send_some(c, iov, iovcnt, deadline_ms);
        if (n < 0)
            return (int)n;
        iov_advance(&iov, &iovcnt, (size_t)n);
    }
    return 0;
}

ssize_t blocking_conn_read(blocking_conn_t *c, char *buf, size_t len, uint64_t deadline_ms)
{
    for (;;) {
        if (c->ssl) {
            ERR_clear_error();
            int rc = SSL_read(c->ssl, buf, (int)len);
            if (rc > 0)
                return rc;
            int w = tls_wait(c, rc, deadline_ms);
            if (w == TLS_RETRY)
                continue;
            if (w == FE_AGAIN || (w == FE_IO && c->err == ECONNRESET))
                return w;
            return 0;
        }
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0)
            return n;
        int r = io_again(c, POLLIN, deadline_ms);
        if (r != 0)
            return r;
    }
}

void blocking_conn_close(blocking_conn_t *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}
