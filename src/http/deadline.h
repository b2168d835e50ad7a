/* Deadlines carried in request headers (contract 10.3): the time a request
 * has left, as X-Request-Timeout-Ms (milliseconds) or gRPC's grpc-timeout
 * (up to 8 digits and a unit: H, M, S, m, u, n). Sans-I/O: values read from
 * a client's head, and values written in place into an upstream head.
 *
 * Written values have a fixed width, right-aligned after the header's
 * colon with spaces before them (optional whitespace every HTTP parser
 * skips), so that each try patches its own time left into the same head
 * without moving the rest of it. */
#ifndef FICUS_HTTP_DEADLINE_H
#define FICUS_HTTP_DEADLINE_H

#include <stddef.h>
#include <stdint.h>

#define DEADLINE_MS_WIDTH 10  /* X-Request-Timeout-Ms: up to 9999999999 */
#define DEADLINE_GRPC_WIDTH 9 /* grpc-timeout: 8 digits and a unit */

/* A value of X-Request-Timeout-Ms (optional whitespace around 1-10
 * digits): 0 and *ms set, or FE_PARSE. */
int http_deadline_parse_ms(const char *v, size_t n, uint64_t *ms);
/* A value of grpc-timeout (optional whitespace around 1-8 digits and a
 * unit), rounded up to whole milliseconds: 0 and *ms, or FE_PARSE. */
int http_deadline_parse_grpc(const char *v, size_t n, uint64_t *ms);

/* ms into DEADLINE_MS_WIDTH bytes at `at` (no NUL), capped at the widest. */
void http_deadline_write_ms(char *at, uint64_t ms);
/* ms as a grpc-timeout into DEADLINE_GRPC_WIDTH bytes at `at` (no NUL): in
 * milliseconds while 8 digits hold them, then in seconds, minutes, hours
 * (rounded down: a deadline sent is never later than the real one). */
void http_deadline_write_grpc(char *at, uint64_t ms);

#endif
