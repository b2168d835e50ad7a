/* Shadow comparison figures (contract 10.1: "Noise", "Metrics",
 * GET /routes/NAME/shadow): one registry per process, one figure set per
 * route name, so a reload keeps a route's figures. Workers count copies that
 * were dropped, skipped or failed (atomics); comparisons go through Diffy's
 * noise rule under the route's mutex; the main thread reads it all as JSON,
 * as a summary for the migration board and as Prometheus text.
 *
 * Threads: shadow_stats_new/free, shadow_stats_route, shadow_stats_show_only,
 * shadow_route_json, shadow_route_summary and shadow_stats_render on the main
 * thread; shadow_route_count on any thread, lock-free; shadow_route_compared
 * on any thread (worker loops, the thread pool), under the route's mutex.
 *
 * Memory, bounded: at most SHADOW_STATS_MAX_ROUTES route names per process
 * (a route's figures are about 62 KiB: SHADOW_MAX_FIELDS fields of
 * SHADOW_FIELD_MAX_BYTES, SHADOW_EXAMPLES examples of 4 x 257 bytes), so
 * 16 MiB at most. Fields past SHADOW_MAX_FIELDS are pooled as "other".
 *
 * Cost (2-core dev box, -O2): a comparison differing at 5 fields holds the
 * route's mutex for about 140 ns; shadow_route_count is one atomic add. */
#ifndef FICUS_POLICY_SHADOW_STATS_H
#define FICUS_POLICY_SHADOW_STATS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "policy/json_diff.h"

#define SHADOW_STATS_MAX_ROUTES 256  /* distinct route names with figures, per process */
#define SHADOW_MAX_FIELDS 256        /* fields tracked per route; the rest pooled as "other" */
#define SHADOW_FIELD_SERIES_MAX 50   /* field series per route in /metrics; the rest "other" */
#define SHADOW_FIELD_MAX_BYTES 127   /* a longer field name is cut (at a UTF-8 boundary) */
#define SHADOW_EXAMPLES 20           /* recent mismatches kept per route */
#define SHADOW_EXAMPLE_MAX_BYTES 256 /* request id, pointer, old and new value, each */
#define SHADOW_NOISE_RELATIVE_PCT 20 /* Diffy: mismatch rate > noise rate * 1.2 ... */
#define SHADOW_NOISE_ABSOLUTE_BP 3   /* ... and > noise rate + 3 per 10000 (0.03%) */
#define SHADOW_SUMMARY_FIELDS 5      /* worst fields in shadow_summary_t */
#define SHADOW_OTHER_FIELD "other"   /* the pooled field (no pointer can be spelt so) */

typedef struct shadow_stats shadow_stats_t; /* the instance's registry */
typedef struct shadow_route shadow_route_t; /* one route's figures; address stable until
                                               shadow_stats_free */

typedef enum {
    SHADOW_MATCH = 0,
    SHADOW_MISMATCH,
    SHADOW_ERROR,   /* the shadow's try failed: connect error, reset, timeout, invalid answer */
    SHADOW_DROPPED, /* max_in_flight copies were in flight already */
    SHADOW_SKIPPED, /* not copyable: body over retry_buffer_size, ... (a method not listed is
                       not counted at all) */
    SHADOW_RESULTS
} shadow_result_t;

/* For the migration board. */
typedef struct {
    double match_rate; /* matches / comparisons, 0..1; -1 without comparisons */
    uint64_t compared;
    size_t n_fields; /* worst fields by counted mismatch rate, at most SHADOW_SUMMARY_FIELDS */
    char fields[SHADOW_SUMMARY_FIELDS][SHADOW_FIELD_MAX_BYTES + 1];
    double field_rates[SHADOW_SUMMARY_FIELDS]; /* counted mismatches / comparisons */
} shadow_summary_t;

/* An empty registry; NULL on no memory. */
shadow_stats_t *shadow_stats_new(void);
/* Frees s and every route's figures; NULL is a no-op. No thread may still
 * record into them. */
void shadow_stats_free(shadow_stats_t *s);

/* Main thread: the figures of the route named route, made on first use and
 * shown in /metrics from then on. NULL on no memory, or once
 * SHADOW_STATS_MAX_ROUTES names have figures (logged once). */
shadow_route_t *shadow_stats_route(shadow_stats_t *s, const char *route);

/* Main thread: only these routes (NULL entries skipped) are rendered in
 * /metrics from now on (a reload removed the others or their shadow); the
 * others keep their figures should they come back. */
void shadow_stats_show_only(shadow_stats_t *s, shadow_route_t *const *routes, size_t n);

/* Any thread, lock-free: one copy that ended as result (SHADOW_ERROR,
 * SHADOW_DROPPED or SHADOW_SKIPPED; the comparison results are counted by
 * shadow_route_compared). sr NULL or result out of range: nothing. */
void shadow_route_count(shadow_route_t *sr, shadow_result_t result);

/* Any thread: one comparison of the old system's answer (the client's) with
 * the shadow's (diff), and, when this request also had a noise copy, of two
 * answers of the old system (noise, else NULL), learned first. A field's
 * mismatch counts when its mismatch rate exceeds its noise rate by
 * SHADOW_NOISE_RELATIVE_PCT relative and SHADOW_NOISE_ABSOLUTE_BP absolute
 * (rates over the comparisons so far; before any noise comparison every
 * difference counts); a status difference always counts unless the noise
 * copy also differed in status. Returns SHADOW_MISMATCH when at least one
 * difference counted (kept as an example), else SHADOW_MATCH; counts it.
 * sr NULL: only the verdict of the rule-less diff. */
shadow_result_t shadow_route_compared(shadow_route_t *sr, const json_diff_result_t *diff,
                                      const json_diff_result_t *noise, const char *request_id,
                                      size_t request_id_len);

/* Main thread: GET /routes/NAME/shadow's body (a new reference; NULL on no
 * memory): counts per result, match rate, per field its mismatch and noise
 * rates and counts and whether the rule counts it, the recent mismatches. */
json_t *shadow_route_json(shadow_route_t *sr);

/* Main thread: match rate and the worst fields for the migration board. */
void shadow_route_summary(shadow_route_t *sr, shadow_summary_t *out);

/* Main thread: appends the Prometheus exposition of every shown route:
 * ficus_shadow_requests_total{route,result} and
 * ficus_shadow_field_mismatches_total{route,field} (counted mismatches, at
 * most SHADOW_FIELD_SERIES_MAX fields per route, the rest as field="other"). */
void shadow_stats_render(shadow_stats_t *s, buf_t *out);

#endif
