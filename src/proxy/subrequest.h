/* A request ficus makes itself on a client request's behalf: a shadow copy
 * (shadow.c) or an aggregation's call (aggregate.c). It is a request of its
 * own (only what an exchange reads is set: generation, route, group, trace,
 * its upstream head) with one exchange at a time, so it goes through the
 * same pools, breakers, outlier detection, ficus_upstream_requests_total and
 * a client span of its own, a sibling of the client request's tries. Its
 * answer is captured (status, some headers, the body up to a limit), never
 * relayed; its owner hears of the end and decides what follows (another
 * try, a comparison, a composed answer). */
#ifndef FICUS_PROXY_SUBREQUEST_H
#define FICUS_PROXY_SUBREQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/chunked.h"
#include "http/parser.h"
#include "policy/json_diff.h"
#include "proxy/request.h"

/* Headers a capture keeps (content-type besides them), and the bytes kept
 * of each value. */
#define CAPTURE_MAX_HEADERS SHADOW_MAX_COMPARE_HEADERS
#define CAPTURE_HEADER_VALUE_BYTES 256

/* One answer as captured: status, the headers asked for, the body (decoded
 * when it came chunked) up to a limit, its whole length. */
typedef struct capture {
    int status; /* 0: none */
    bool complete;
    bool truncated;
    bool framed; /* the body comes ficus-chunked: decoded as it is kept */
    http_chunked_t chunked;
    size_t limit; /* body bytes kept */
    char *body;
    size_t len, cap;
    uint64_t total;
    uint32_t n_headers;
    uint32_t ctype; /* index of content-type in headers, UINT32_MAX: none */
    json_diff_header_t headers[CAPTURE_MAX_HEADERS + 1];
    char values[CAPTURE_MAX_HEADERS + 1][CAPTURE_HEADER_VALUE_BYTES];
} capture_t;

void capture_init(capture_t *c, size_t limit);
void capture_free(capture_t *c);
/* The status and the named headers (lower-case; content-type is always
 * kept) of a head; the body to come is framed when the head says chunked
 * (and the request was not HEAD). */
void capture_head(capture_t *c, const char *const *names, size_t n_names, const http_head_t *h,
                  bool head_method);
/* Body bytes as they came; ficus-chunked ones decoded first. */
void capture_body(capture_t *c, const char *data, size_t len);

typedef enum { SUBREQ_IDLE = 0, SUBREQ_RUNNING, SUBREQ_DONE, SUBREQ_FAILED } subreq_state_t;

typedef struct subreq subreq_t;
/* A try ended: DONE with cap.status and the body captured, or FAILED with
 * why (an upstream reason). The exchange is over and counted; out is the
 * owner's still. */
typedef void (*subreq_end_fn)(subreq_t *s, end_reason_t why);

struct subreq {
    request_t req; /* what the exchange reads; req.ex (slots[0]) is the try */
    subreq_state_t state;
    bool stale; /* the try failed on a pooled connection the target had closed */
    capture_t cap;
    const char *const *names; /* headers captured */
    size_t n_names;
    subreq_end_fn on_end;
    void *owner;
    void (*close_cb)(subreq_t *s);
};

/* Before the first try, on the client request's loop: the sub-request of
 * parent (its id, method, path, client address and trace) to group under
 * route and gen (the caller holds gen for as long as s lives). Its
 * exchange's timer is initialised: subreq_close closes it. */
void subreq_init(subreq_t *s, const request_t *parent, proxy_gen_t *gen,
                 const config_route_t *route, uint32_t group, subreq_end_fn on_end, void *owner);
/* Starts a try with s->req.out (set by the owner: head and any body),
 * capturing up to limit body bytes, ended as a timeout after timeout_ms.
 * END_OK when it went (on_end follows; from inside this call when a pooled
 * connection fails at once); else why not, with nothing under way, on_end
 * not called (a connect failure counted). */
end_reason_t subreq_send(subreq_t *s, size_t limit, uint64_t timeout_ms);
/* Ends the try under way as failed (no-op when none): on_end follows. */
void subreq_abort(subreq_t *s, end_reason_t why);
/* Closes the exchange's timer (after the last try): cb(s) once closed. */
void subreq_close(subreq_t *s, void (*cb)(subreq_t *s));

#endif
