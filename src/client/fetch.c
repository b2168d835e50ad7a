/* The blocking client; see fetch.h. */
#include "client/fetch.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/errors.h"
#include "core/time.h"
#include "core/url.h"

/* The request head, on the caller's stack. */
#define FETCH_HEAD_BYTES 8192
/* Answer bytes read per receive. */
#define FETCH_READ_BYTES (16 * 1024)

/* Outcome of reading an answer beyond the FE_* codes: the connection was
 * closed or reset before any byte of it, which on a reused connection means
 * the server had closed it while idle. */
#define READ_STALE 1

void fetch_init(fetch_t *f, const char *host, const char *port, const blocking_conn_opts_t *o,
                size_t max_head_bytes, size_t max_body_bytes, reply_body_t mode)
{
    memset(f, 0, sizeof *f);
    blocking_conn_init(&f->conn);
    f->host = host;
    f->port = port;
    if (o)
        f->opts = *o;
    reply_init(&f->reply, max_head_bytes, max_body_bytes, mode);
}

void fetch_deinit(fetch_t *f)
{
    blocking_conn_close(&f->conn);
    reply_deinit(&f->reply);
}

static int failed(fetch_t *f, fetch_fail_t why, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int failed(fetch_t *f, fetch_fail_t why, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->why, sizeof f->why, fmt, ap);
    va_end(ap);
    f->fail = why;
    blocking_conn_close(&f->conn);
    f->answers = 0;
    return rc;
}

static const char *err_text(int err) { return err == ETIMEDOUT ? "timed out" : strerror(err); }

static int open_conn(fetch_t *f, uint64_t deadline_ms)
{
    blocking_conn_t *c = &f->conn;
    int rc = blocking_conn_open(c, f->host, f->port, &f->opts, deadline_ms);
    f->answers = 0;
    if (rc == 0)
        return 0;
    if (c->step == BLOCKING_CONN_RESOLVE)
        return failed(f, FETCH_OPEN, rc, "resolving %s: %s", f->host,
                      c->gai_err == EAI_SYSTEM ? strerror(c->err) : gai_strerror(c->gai_err));
    if (c->step == BLOCKING_CONN_CONNECT)
        return failed(f, FETCH_OPEN, rc, "connect: %s", err_text(c->err));
    return failed(f, FETCH_OPEN, rc, "tls: %s", rc == FE_AGAIN ? "timed out" : c->tls_why);
}

/* Reads one answer: 0, READ_STALE, or FE_* after failed(). */
static int read_reply(fetch_t *f, bool reused, uint64_t deadline_ms)
{
    reply_t *r = &f->reply;
    char in[FETCH_READ_BYTES];
    reply_reset(r);
    for (;;) {
        ssize_t n = blocking_conn_read(&f->conn, in, sizeof in, deadline_ms);
        if (n < 0 && reused && r->bytes_in == 0 && f->conn.err == ECONNRESET)
            return READ_STALE;
        if (n < 0)
            return failed(f, FETCH_RECV, (int)n, "receive: %s", err_text(f->conn.err));
        if (n == 0 && r->bytes_in == 0)
            return reused ? READ_STALE
                          : failed(f, FETCH_CLOSED, FE_IO, "connection closed before the response");
        if (n == 0) {
            if (reply_finish(r) != 0)
                return failed(f, FETCH_CUT, FE_PARSE, "%s", r->error);
            return 0;
        }
        long k = reply_feed(r, in, (size_t)n);
        if (k < 0)
            return failed(f, k == FE_PARSE ? FETCH_INVALID : FETCH_TOOBIG, (int)k,
                          k == FE_PARSE ? "invalid HTTP response (%s)" : "%s", r->error);
        if (reply_done(r)) {
            /* Bytes past the answer would be read as the next one's start. */
            if (k < n)
                r->keep_alive = false;
            return 0;
        }
    }
}

int fetch_do(fetch_t *f, const request_t *rq, uint64_t deadline_ms)
{
    char head[FETCH_HEAD_BYTES];
    f->fail = FETCH_OK;
    f->why[0] = '\0';
    int n = request_head(rq, head, sizeof head);
    if (n < 0)
        return failed(f, FETCH_REQUEST, n, n == FE_TOOBIG ? "URL too long" : "invalid request");
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!blocking_conn_is_open(&f->conn)) {
            int rc = open_conn(f, deadline_ms);
            if (rc)
                return rc;
        }
        bool reused = f->answers > 0;
        struct iovec iov[2] = {{head, (size_t)n}, {(void *)rq->body, rq->body ? rq->body_len : 0}};
        int rc = blocking_conn_writev(&f->conn, iov, 2, deadline_ms);
        if (rc == FE_IO && reused) { /* EPIPE, ECONNRESET: closed while idle */
            blocking_conn_close(&f->conn);
            continue;
        }
        if (rc)
            return failed(f, FETCH_SEND, rc, "send: %s", err_text(f->conn.err));
        rc = read_reply(f, reused, deadline_ms);
        if (rc == READ_STALE) {
            blocking_conn_close(&f->conn);
            continue;
        }
        if (rc)
            return rc;
        f->answers++;
        if (!f->reply.keep_alive) {
            blocking_conn_close(&f->conn);
            f->answers = 0;
        }
        return 0;
    }
    return failed(f, FETCH_CLOSED, FE_IO, "connection closed before the response");
}

int fetch_get(const char *url, size_t max_head_bytes, size_t max_body_bytes, uint64_t timeout_ms,
              buf_t *body, char *err, size_t errlen)
{
    url_http_t u;
    int rc = url_parse_http(url, &u, err, errlen);
    if (rc)
        return rc;
    char target[2048], host[300];
    const char *path = u.path_len ? u.path : "/";
    int path_len = u.path_len ? (int)u.path_len : 1;
    int n = snprintf(target, sizeof target, "%s%.*s", path[0] == '?' ? "/" : "", path_len, path);
    if (n < 0 || (size_t)n >= sizeof target) {
        snprintf(err, errlen, "URL too long");
        return FE_TOOBIG;
    }
    url_host_header(&u, host, sizeof host);
    request_t rq = {.method = "GET",
                    .target = target,
                    .host = host,
                    .headers = "User-Agent: ficus\r\nAccept: */*\r\n",
                    .close = true};
    /* Only a 2xx body is wanted: any other answer ends at its head. */
    fetch_t f;
    fetch_init(&f, u.host, u.port, NULL, max_head_bytes, max_body_bytes, REPLY_BODY_2XX);
    rc = fetch_do(&f, &rq, time_now_ms() + timeout_ms);
    int status = reply_status(&f.reply);
    if (status && (status < 200 || status > 299)) {
        snprintf(err, errlen, "HTTP %d", status);
        rc = FE_IO;
    } else if (f.fail == FETCH_TOOBIG) {
        snprintf(err, errlen, "larger than %zu bytes", max_body_bytes);
        rc = FE_TOOBIG;
    } else if (rc) {
        snprintf(err, errlen, "%s", f.why);
        rc = f.fail == FETCH_CUT || f.fail == FETCH_CLOSED ? FE_PARSE : rc;
    } else {
        /* The fetched body becomes the caller's. */
        buf_t tmp = *body;
        *body = f.reply.body;
        f.reply.body = tmp;
    }
    fetch_deinit(&f);
    return rc;
}
