/* Bounded file reads; see file.h. */
#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"

int file_read(const char *path, size_t max_bytes, buf_t *out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        return FE_IO;
    }
    int rc = 0;
    size_t start = out->len;
    for (;;) {
        if (out->len - start > max_bytes) {
            snprintf(err, errlen, "larger than %zu bytes", max_bytes);
            rc = FE_TOOBIG;
            break;
        }
        /* One byte past the cap is read to tell "exactly the cap" from "more". */
        size_t want = max_bytes + 1 - (out->len - start);
        if (want > 64 * 1024)
            want = 64 * 1024;
        if ((rc = buf_reserve(out, want)) != 0) {
            snprintf(err, errlen, "out of memory");
            break;
        }
        ssize_t n = read(fd, out->data + out->len, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            rc = FE_IO;
            break;
        }
        if (n == 0)
            break;
        out->len += (size_t)n;
    }
    close(fd);
    return rc;
}
