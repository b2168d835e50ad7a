/* Number formatting for the hot paths (access log, metrics, head rewriting):
 * no locale, no snprintf. */
#ifndef FICUS_CORE_FMT_H
#define FICUS_CORE_FMT_H

#include <stddef.h>
#include <stdint.h>

#define FMT_U64_MAX_BYTES 20

/* Writes v in decimal to out (at least FMT_U64_MAX_BYTES); returns the length. */
size_t fmt_u64(char *out, uint64_t v);

#endif
