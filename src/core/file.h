/* Reading a whole file that ficus was told about (a set, a JWKS), bounded:
 * a larger file is an error, not an allocation without end. */
#ifndef FICUS_CORE_FILE_H
#define FICUS_CORE_FILE_H

#include <stddef.h>

#include "core/buf.h"

/* Appends path's bytes to out. 0, or FE_IO (open/read: the reason in err),
 * FE_TOOBIG (more than max_bytes) or FE_NOMEM. */
int file_read(const char *path, size_t max_bytes, buf_t *out, char *err, size_t errlen);

#endif
