/* What an nghttp2 session has to send, written to its connection: the
 * frames nghttp2_session_mem_send hands out one by one are gathered into a
 * buffer so they go in as few writes as they fill, and sending stops when
 * the connection queues (its drain brings the rest). Shared by the
 * downstream (h2_server) and upstream (h2_upstream) sessions. */
#ifndef FICUS_HTTP_H2_FRAMES_H
#define FICUS_HTTP_H2_FRAMES_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct h2_frames_out {
    /* As stream_write: 0 taken, 1 queued, < 0 an error. */
    int (*write)(void *ctx, const uv_buf_t *bufs, unsigned n);
    bool (*pending)(void *ctx);
    void *ctx;
} h2_frames_out_t;

/* Sends while the connection takes it. Returns 0, NGHTTP2_ERR_FLOODED or
 * another nghttp2 error, or -1 when a write failed. */
int h2_frames_send(nghttp2_session *ng, const h2_frames_out_t *out);

#endif
