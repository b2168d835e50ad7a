/* Request heads; see request.h. */
#include "client/request.h"

#include <stdio.h>
#include <string.h>

#include "core/errors.h"

static bool one_line(const char *s) { return s && *s && !strpbrk(s, "\r\n"); }

int request_head(const request_t *rq, char *out, size_t cap)
{
    if (!one_line(rq->method) || !one_line(rq->target) || !rq->host || strpbrk(rq->host, "\r\n"))
        return FE_INVAL;
    char length[48] = "";
    if (rq->body)
        snprintf(length, sizeof length, "Content-Length: %zu\r\n", rq->body_len);
    int n = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n", rq->method, rq->target,
                     rq->host, rq->headers ? rq->headers : "", length,
                     rq->close ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= cap)
        return FE_TOOBIG;
    return n;
}
