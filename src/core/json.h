/* Bytes as the inside of a JSON string, one escaper for every writer of
 * JSON by hand (the access log, ficus's error bodies, the JSON error log,
 * admin answers). Whatever the input holds (request bytes are hostile), the
 * output is valid JSON and valid UTF-8. */
#ifndef FICUS_CORE_JSON_H
#define FICUS_CORE_JSON_H

#include <stddef.h>

/* Escapes s[0..n) into out: '"' and '\' escaped, control bytes (and DEL) as
 * \u00XX, well-formed UTF-8 copied as is, any other byte as \ufffd. Writes
 * whole escapes only, at most cap bytes; returns the bytes written and sets
 * *used to the input bytes they stand for (n when everything fit). */
size_t json_escape(char *out, size_t cap, const char *s, size_t n, size_t *used);

#endif
