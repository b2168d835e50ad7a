/* The one copy of a head a request makes: the upstream request head built from
 * the client's (hop-by-hop headers out, X-Forwarded-* and X-Request-Id in,
 * route header rules applied), and the client response head built from the
 * upstream's. Sans-I/O. */
#ifndef FICUS_PROXY_REWRITE_H
#define FICUS_PROXY_REWRITE_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "http/parser.h"
#include "observe/trace.h"

/* Trace headers to send instead of the client's. The span id part is patched
 * per try at the offsets the rewrite reports. */
typedef struct rewrite_trace {
    bool w3c;     /* send traceparent (drop the client's) */
    bool datadog; /* send x-datadog-* (drop the client's) */
    bool sampled; /* x-datadog-sampling-priority 1 or 0 */
    char traceparent[TRACEPARENT_LEN];
    char dd_trace_id[20]; /* decimal */
    uint8_t dd_trace_id_len;
    char dd_parent_id[TRACE_DD_ID_DIGITS];
    /* out: where the values start in the head */
    uint32_t traceparent_off;
    uint32_t dd_parent_off;
} rewrite_trace_t;

/* Deadline headers to send instead of the client's (contract 10.3): each
 * try writes its time left at the offsets the rewrite reports. */
typedef struct rewrite_deadline {
    /* out: where the fixed-width values start in the head; grpc_off only
     * for a gRPC request (Content-Type application/grpc...), else 0 */
    uint32_t ms_off;
    uint32_t grpc_off;
} rewrite_deadline_t;

typedef struct rewrite_name {
    const char *name; /* lower-case */
    size_t len;
} rewrite_name_t;

typedef struct rewrite_request {
    const http_head_t *head;
    const char *target; /* upstream request target (path?query) */
    size_t target_len;
    const char *host; /* Host to send (client's, or absolute-form authority); NULL = keep */
    size_t host_len;
    const char *peer_ip; /* appended to X-Forwarded-For */
    size_t peer_ip_len;
    bool peer_trusted; /* keep the client's X-Forwarded-Proto/-Host */
    const char *proto; /* "http" or "https" */
    const char *request_id;
    size_t request_id_len;
    const config_route_t *route;  /* request_headers set/remove; may be NULL */
    rewrite_trace_t *trace;       /* NULL: the client's trace headers pass as they are */
    rewrite_deadline_t *deadline; /* NULL: the client's deadline headers pass as they are */
    const char *upgrade; /* Upgrade token to forward (with Connection: upgrade); NULL = none */
    size_t upgrade_len;
    /* Identity: headers a client must not send (lower-case; the forwarded
     * claims' headers, and Authorization and the session header when ficus
     * writes its own), a cookie taken out of Cookie (the session's), and
     * header lines ficus adds (X-Client-Id, claims, Authorization), each
     * ending in CRLF. X-Api-Key and X-Client-Id are always dropped. */
    const rewrite_name_t *drop;
    size_t n_drop;
    const char *drop_cookie; /* NULL = none */
    size_t drop_cookie_len;
    const char *add;
    size_t add_len;
    const char *client_id; /* X-Client-Id to send; NULL = none */
    /* The head of an aggregation's calls (GET, no body): the client's body
     * framing (Content-Length, Transfer-Encoding, Expect) and Accept-Encoding
     * are left out (their bodies are read as JSON). */
    bool calls;
} rewrite_request_t;

/* Writes the upstream head; returns its length or FE_TOOBIG. */
long rewrite_request_head(const rewrite_request_t *in, char *out, size_t cap);

typedef enum {
    REWRITE_BODY_AS_IS = 0,  /* Content-Length or chunked, forwarded verbatim */
    REWRITE_BODY_DECHUNK,    /* chunked upstream, HTTP/1.0 client: decoded, ends at close */
    REWRITE_BODY_UNTIL_CLOSE /* no framing: ends at close */
} rewrite_body_t;

typedef struct rewrite_response {
    const http_head_t *head;
    const char *request_id;
    size_t request_id_len;
    bool keep_alive;    /* the client connection stays open after this response */
    bool client_http10; /* answer as HTTP/1.1 but say keep-alive explicitly */
    rewrite_body_t body;
    const char *upgrade; /* a 101: the Upgrade token, sent with Connection: upgrade */
    size_t upgrade_len;
} rewrite_response_t;

long rewrite_response_head(const rewrite_response_t *in, char *out, size_t cap);

/* True for hop-by-hop header names (and any listed in the Connection value,
 * except Content-Length, Transfer-Encoding and Host, which always stay). */
bool rewrite_is_hop_by_hop(const char *name, size_t len, const http_header_t *connection);

/* An upstream request (head_len head bytes, then its body) written again
 * into dst with another request line, `METHOD target HTTP/1.1`, followed by
 * the `extra` header lines (each ending in CRLF; may be empty). Returns the
 * new length and sets *shift to how far what followed the old request line
 * moved; FE_PARSE without a request line, FE_TOOBIG if it does not fit. */
long rewrite_retarget(const char *src, size_t len, size_t head_len, const char *method,
                      size_t method_len, const char *target, size_t target_len, const char *extra,
                      size_t extra_len, char *dst, size_t cap, long *shift);

/* True when v is a sane X-Request-Id: 1-128 chars of [A-Za-z0-9._:-]. */
bool rewrite_request_id_sane(const char *v, size_t len);

#endif
