/* A request that ficus sends itself (set lists, trace export, probes, health
 * checks, and later session, JWKS and BFF calls), and its HTTP/1.1 head.
 * Sans-I/O. */
#ifndef FICUS_CLIENT_REQUEST_H
#define FICUS_CLIENT_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct request {
    const char *method;  /* "GET", "POST", ... */
    const char *target;  /* path and query, as it goes into the request line */
    const char *host;    /* the Host header's value */
    const char *headers; /* more header lines, each ending in CRLF; NULL: none */
    const char *body;    /* NULL: no body and no Content-Length */
    size_t body_len;
    bool close; /* send Connection: close */
} request_t;

/* Writes the head (request line, Host, the caller's headers, Content-Length
 * when there is a body, Connection: close when asked, the blank line) into
 * out. Returns its length, or FE_TOOBIG when it does not fit in cap, or
 * FE_INVAL when a field would break the head (CR or LF in method, target or
 * host). */
int request_head(const request_t *rq, char *out, size_t cap);

#endif
