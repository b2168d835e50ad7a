/* A blocking HTTP/1.1 client for threads that may block (the thread pool's
 * set reads, the trace exporter, `ficus probe`): one request at a time to
 * one host over net/blocking_conn, its answer read by client/reply, all of
 * it before one deadline. A connection the server keeps alive is reused by
 * the next request; one that turns out closed meanwhile is replaced and the
 * request sent again. */
#ifndef FICUS_CLIENT_FETCH_H
#define FICUS_CLIENT_FETCH_H

#include <stdint.h>

#include "client/reply.h"
#include "client/request.h"
#include "net/blocking_conn.h"

/* Where a request failed. */
typedef enum {
    FETCH_OK = 0,
    FETCH_REQUEST, /* the head could not be written (too long, CR or LF in a field) */
    FETCH_OPEN,    /* resolving, connecting or the TLS handshake: conn.step says which */
    FETCH_SEND,    /* conn.err */
    FETCH_RECV,    /* conn.err (ETIMEDOUT at the deadline) */
    FETCH_CLOSED,  /* closed before any byte of an answer */
    FETCH_CUT,     /* closed in the middle of the answer */
    FETCH_INVALID, /* a malformed answer: reply.error */
    FETCH_TOOBIG   /* the head or body crossed its bound: reply.error; the status may be known */
} fetch_fail_t;

typedef struct fetch {
    blocking_conn_t conn;
    const char *host; /* not owned */
    const char *port;
    blocking_conn_opts_t opts;
    uint64_t answers; /* read on conn: a reused connection may have been closed meanwhile */
    reply_t reply;    /* the last answer */
    fetch_fail_t fail;
    char why[256]; /* the failure in words: "connect: timed out", "receive: ..." */
} fetch_t;

/* A client for host:port (kept by pointer), not yet connected; o may be NULL. */
void fetch_init(fetch_t *f, const char *host, const char *port, const blocking_conn_opts_t *o,
                size_t max_head_bytes, size_t max_body_bytes, reply_body_t mode);
/* Closes the connection and frees the answer. */
void fetch_deinit(fetch_t *f);
/* Sends rq and reads its answer (any status) into f->reply before
 * deadline_ms. 0, or a negative FE_* code with f->fail and f->why set; the
 * connection is closed after a failure and after an answer that does not
 * keep it alive. */
int fetch_do(fetch_t *f, const request_t *rq, uint64_t deadline_ms);

/* The body of a 2xx answer to GET url (http://) into body, within
 * timeout_ms: 0, or FE_IO ("HTTP 503", connect or read errors), FE_TOOBIG
 * (a body over max_body_bytes, a head over max_head_bytes), FE_PARSE (an
 * answer cut short) or FE_INVAL (a bad URL), with the reason in err. For
 * threads that may block. */
int fetch_get(const char *url, size_t max_head_bytes, size_t max_body_bytes, uint64_t timeout_ms,
              buf_t *body, char *err, size_t errlen);

#endif
