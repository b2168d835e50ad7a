/* An aggregation's answer (contract 8), sans-I/O: each call's body checked
 * (JSON, bounded, and with `extract` the value at a JSON pointer), then the
 * one object `{"name": body, ..., "_errors": {"name": "reason"}}` laid out as
 * pieces: the glue (keys, commas, braces, null, the errors) written into a
 * small buffer, the call bodies referenced where they are, so the response
 * is written out with one writev and without copying a body again. */
#ifndef FICUS_POLICY_AGG_COMPOSE_H
#define FICUS_POLICY_AGG_COMPOSE_H

#include <stdbool.h>
#include <stddef.h>

/* One call's outcome. */
typedef struct agg_result {
    const char *name; /* the call's name: the key */
    const char *body; /* the JSON text of its value (checked); NULL: null */
    size_t len;
    const char *error; /* NULL: it succeeded; else the reason in _errors */
} agg_result_t;

/* A piece of the answer (the layout of struct iovec and uv_buf_t alike). */
typedef struct agg_piece {
    const char *p;
    size_t n;
} agg_piece_t;

/* Checks a call's body: JSON (any value) of at most max bytes. With
 * extract (a JSON pointer, RFC 6901), the value there, written compact
 * into *owned (malloc'd; the caller frees it) and pointed to by *out;
 * without it, *out is body itself. 0, or -1 with *reason ("the body is not
 * JSON", "the body is larger than ...", "no value at the extract
 * pointer"). */
int agg_compose_check(const char *body, size_t len, size_t max, const char *extract,
                      const char **out, size_t *out_len, char **owned, const char **reason);

/* The composed object of n results as pieces into pieces (max of them),
 * glue written into glue (cap bytes). *partial: a call failed. Returns the
 * number of pieces, or -1 when pieces or glue are too small. */
long agg_compose(const agg_result_t *r, size_t n, agg_piece_t *pieces, size_t max, char *glue,
                 size_t cap, bool *partial);

#endif
