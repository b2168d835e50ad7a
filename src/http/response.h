/* ficus's own answers: JSON errors {"error","message","request_id"} with the
 * status line and headers around them, and reason phrases. Sans-I/O. */
#ifndef FICUS_HTTP_RESPONSE_H
#define FICUS_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>

const char *http_status_reason(int status);
/* The error code for a status ("bad_request", "not_found", ...). */
const char *http_status_code_name(int status);

typedef struct http_error {
    int status;
    const char *code; /* NULL: from the status */
    const char *message;
    const char *request_id;
    size_t request_id_len;
    bool close;             /* Connection: close */
    bool head_only;         /* answer to HEAD: headers only */
    bool grpc;              /* a gRPC request: 200, grpc-status and grpc-message, no body */
    unsigned retry_after_s; /* 0 = no Retry-After */
} http_error_t;

/* The gRPC status for one of ficus's error statuses (contract 3.2: 404 ->
 * 12 UNIMPLEMENTED, 401 -> 16, 403 -> 7, 429 -> 8, 502/503 -> 14, 504 -> 4,
 * 400 -> 13; the others as gRPC's HTTP mapping has them, else 2 UNKNOWN). */
int http_grpc_status(int status);

/* Writes the whole response into out; returns its length, or 0 if cap is too
 * small (1 KiB always suffices for messages under 256 bytes). */
size_t http_error_format(const http_error_t *e, char *out, size_t cap);

#endif
