/* Response comparison for shadow traffic (contract 10.1, "Comparison").
 *
 * Who calls what: json_diff_spec_new/free are called once per configuration
 * snapshot (config load/reload thread); the spec is immutable afterwards and
 * may be shared by every worker.  json_diff_run is called by a worker on its
 * own loop, off the request path, once both answers of a shadowed request
 * are captured; it is pure (no I/O, no globals) and reentrant.
 *
 * Result: differences are generalised JSON pointers (array indices become
 * "*", keys escaped per RFC 6901), or "status", "header:<lowercase name>".
 * old_value/new_value are compact JSON text (ASCII, cut at 256 bytes); NULL
 * means absent on that side (missing key, missing header, extra multiset
 * element).  At most JSON_DIFF_MAX_REPORTED are kept; n_total counts all.
 *
 * Bodies: JSON (application/json or any +json on both sides) compared as
 * values up to JSON_DIFF_MAX_DEPTH (deeper subtrees compared strictly with
 * jansson's json_equal); other bodies byte for byte (one difference at ""
 * whose values are the two lengths).  A body that does not parse although
 * declared JSON sets old_invalid/new_invalid and the bodies are compared
 * byte for byte.  Bodies that are the same bytes match without a parse (and
 * without their invalid flags set).  A body over max_body_size or truncated sets
 * compared_by_length: status, headers and lengths only.  Work is bounded by
 * JSON_DIFF_WORK_BUDGET node visits; past it, incomplete is set and match
 * is false.  Integers beyond 64 bits are rejected by jansson (invalid).
 *
 * Cost (shared 2-core dev box, -O2, jansson parse of both sides included):
 * a 1 MiB JSON body (16k objects) against itself takes ~90 ms, against a
 * copy differing in every leaf ~110 ms; unordered arrays cost up to
 * n*m element comparisons, stopped by the work budget (4M node visits,
 * roughly 0.5-1 s at worst).  Big bodies belong on a thread, not the loop.
 */
#ifndef FICUS_POLICY_JSON_DIFF_H
#define FICUS_POLICY_JSON_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_DIFF_MAX_DEPTH 64
#define JSON_DIFF_MAX_REPORTED 64
#define JSON_DIFF_VALUE_MAX_BYTES 256
#define JSON_DIFF_WORK_BUDGET 4000000u

typedef struct json_diff_spec json_diff_spec_t;

typedef struct {
    const char *name;
    const char *value;
} json_diff_header_t;

typedef struct {
    int status;
    const json_diff_header_t *headers; /* borrowed */
    size_t n_headers;
    const char *content_type; /* NULL: none */
    const uint8_t *body;      /* borrowed */
    size_t body_len;
    bool body_truncated;
} json_diff_side_t;

typedef struct {
    char *pointer;
    char *old_value; /* NULL: absent */
    char *new_value; /* NULL: absent */
} json_diff_difference_t;

typedef struct {
    bool match;
    bool compared_by_length;
    bool old_invalid, new_invalid;
    bool incomplete;
    size_t n_total;
    size_t n_differences; /* entries in differences[] */
    json_diff_difference_t differences[JSON_DIFF_MAX_REPORTED];
} json_diff_result_t;

/* ignore/unordered: JSON pointers, "*" matches any key or index; headers:
 * names compared case-insensitively.  Copies everything.  NULL on error with
 * a message in err. */
json_diff_spec_t *json_diff_spec_new(const char *const *ignore, size_t n_ignore,
                                     const char *const *unordered, size_t n_unordered,
                                     const char *const *headers, size_t n_headers,
                                     size_t max_body_size, char *err, size_t errlen);
void json_diff_spec_free(json_diff_spec_t *spec);

/* Fills out (caller owns, free with json_diff_result_free).  FE_OK or
 * FE_NOMEM / FE_INVAL; on error out holds nothing to free. */
int json_diff_run(const json_diff_spec_t *spec, const json_diff_side_t *old_side,
                  const json_diff_side_t *new_side, json_diff_result_t *out);
void json_diff_result_free(json_diff_result_t *r);

#endif
