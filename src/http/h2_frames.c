/* Sending an nghttp2 session's frames; see h2_frames.h. */
#include "http/h2_frames.h"

#include <string.h>

#include "core/defaults.h"

static __thread char gather[IO_BUF_BYTES];

int h2_frames_send(nghttp2_session *ng, const h2_frames_out_t *out)
{
    while (!out->pending(out->ctx)) {
        size_t used = 0;
        for (;;) {
            const uint8_t *data;
            ssize_t k = nghttp2_session_mem_send(ng, &data);
            if (k < 0)
                return (int)k;
            if (k == 0)
                break;
            if ((size_t)k > sizeof gather - used) {
                /* What is gathered first, then the big frame as it is. */
                uv_buf_t b[2] = {uv_buf_init(gather, (unsigned)used),
                                 uv_buf_init((char *)data, (unsigned)k)};
                if (out->write(out->ctx, used ? b : b + 1, used ? 2 : 1) < 0)
                    return -1;
                used = 0;
                if (out->pending(out->ctx))
                    return 0;
                continue;
            }
            memcpy(gather + used, data, (size_t)k);
            used += (size_t)k;
        }
        if (!used)
            break;
        uv_buf_t b = uv_buf_init(gather, (unsigned)used);
        if (out->write(out->ctx, &b, 1) < 0)
            return -1;
    }
    return 0;
}
