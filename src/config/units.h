/* The value syntaxes of the configuration file: durations ("250ms", "1.5s",
 * "1h30m"), sizes (bytes, "16KiB", "8MiB"), booleans and bounded integers.
 * Sans-I/O and strict: anything ambiguous is an error, and every error comes
 * with a short static hint that the config loader puts in its message. */
#ifndef FICUS_CONFIG_UNITS_H
#define FICUS_CONFIG_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "250ms", "5s", "2m", "1h", "1.5s", "1h30m" -> milliseconds. 0, or FE_PARSE
 * (bad syntax, bare number, negative, finer than 1ms) / FE_TOOBIG (overflow)
 * with *why set to a static hint. */
int units_parse_duration_ms(const char *s, uint64_t *out, const char **why);

/* "16384", "16KiB", "8MiB", "1GiB", "1.5KiB" (whole bytes only) -> bytes.
 * 0, or FE_PARSE / FE_TOOBIG with *why set to a static hint. */
int units_parse_size(const char *s, uint64_t *out, const char **why);

/* true|True|TRUE|false|False|FALSE (YAML 1.2; no yes/no/on/off). 0 or FE_PARSE. */
int units_parse_bool(const char *s, bool *out);

/* Unsigned decimal integer in [min, max]. 0, or FE_PARSE (not a plain
 * integer) / FE_TOOBIG (outside the range) with *why set. */
int units_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why);

/* Unsigned decimal number ("0", "0.25", "1.0", ".5"); no sign, exponent,
 * inf or nan. 0 or FE_PARSE. */
int units_parse_decimal(const char *s, double *out);

/* Shortest exact spelling: 1500 -> "1500ms", 90000 -> "90s", 3600000 -> "1h".
 * Returns the length written (snprintf semantics). */
size_t units_format_duration(uint64_t ms, char *buf, size_t n);

/* Largest exact binary unit: 16384 -> "16KiB", 1000 -> "1000". */
size_t units_format_size(uint64_t bytes, char *buf, size_t n);

#endif
