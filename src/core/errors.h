/* The one error convention of ficus.
 * Functions return 0 or a negative FE_* code; constructors return NULL on
 * failure; byte consumers return bytes used (>= 0) or a negative FE_* code. */
#ifndef FICUS_CORE_ERRORS_H
#define FICUS_CORE_ERRORS_H

enum {
    FE_OK = 0,
    FE_NOMEM = -1,   /* allocation failed */
    FE_INVAL = -2,   /* invalid argument or input */
    FE_PARSE = -3,   /* malformed input */
    FE_TOOBIG = -4,  /* a bound was crossed */
    FE_IO = -5,      /* system call failed (errno has the detail) */
    FE_AGAIN = -6,   /* try later */
    FE_NOTFOUND = -7 /* no such thing */
};

#endif
