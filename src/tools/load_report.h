/* `ficus load`'s figures, sans-I/O: the latency histogram (log-linear, 32
 * slots per doubling: a percentile is at most 3% above the truth, from 1 us
 * to hours), a run's summary, the latency knee across the steps of a
 * --find-knee search, the capacity plan (--plan) and the SVG chart
 * (--svg). */
#ifndef FICUS_TOOLS_LOAD_REPORT_H
#define FICUS_TOOLS_LOAD_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LOAD_HIST_SLOTS 1056 /* 32 per doubling up to 2^37 us; the last takes the rest */
#define LOAD_MAX_STATUS 600
#define LOAD_KNEE_MAX_ERRORS 0.001 /* a knee step has under 0.1% errors */

typedef struct load_hist {
    uint64_t n;
    uint64_t max_us;
    uint64_t slots[LOAD_HIST_SLOTS];
} load_hist_t;

void load_hist_record(load_hist_t *h, uint64_t us);
/* The q-quantile (0 < q <= 1) in us: its slot's upper bound, never above
 * the maximum seen; 0 without samples. */
uint64_t load_hist_quantile(const load_hist_t *h, double q);

/* One run at one rate. */
typedef struct load_run {
    double rate;        /* asked, req/s */
    double seconds;     /* from the first scheduled send to the last answer or give-up */
    uint64_t scheduled; /* requests due within the run */
    uint64_t completed; /* answered (any status) */
    uint64_t errors;    /* connect/read failures, timeouts, and statuses >= 500 */
    uint64_t unsent;    /* still waiting for a connection when the run ended */
    uint64_t status[LOAD_MAX_STATUS];
    uint64_t failures;   /* without a status: connect, reset, timeout */
    load_hist_t latency; /* from each request's scheduled time */
} load_run_t;

/* The achieved rate: answers per second over the run. */
double load_run_achieved(const load_run_t *r);
/* errors / scheduled (unsent ones count as errors). */
double load_run_error_ratio(const load_run_t *r);
/* The run met the goal: p99 under p99_us (0: no goal) and under 0.1% errors. */
bool load_run_ok(const load_run_t *r, uint64_t p99_us);

/* The final table, as `ficus load` prints it. */
void load_run_print(FILE *f, const load_run_t *r);

/* The knee: the index of the highest-rate step that met the goal, or -1. */
int load_knee(const load_run_t *steps, size_t n, uint64_t p99_us);

/* One event of a capacity plan: name and expected peak req/s. */
typedef struct load_event {
    char name[64];
    double peak;
} load_event_t;

/* Reads a plan file: a YAML list of {name, peak}. 0, or -1 with the
 * reason as FILE:LINE:COL: message in err. *events is malloc'd. */
int load_plan_read(const char *path, load_event_t **events, size_t *n, char *err, size_t errlen);
/* Instances an event needs: ceil(peak / (capacity x (1 - headroom))),
 * at least 1; 0 when capacity is 0. */
uint64_t load_plan_instances(double peak, double capacity, double headroom);
/* The plan as a table. */
void load_plan_print(FILE *f, const load_event_t *ev, size_t n, double capacity, double headroom);

/* p50 and p99 (ms) against the rate, the knee marked (knee -1: none), the
 * --p99 goal as a line (0: none). 0, or -1 when the file cannot be
 * written. */
int load_svg_write(const char *path, const load_run_t *steps, size_t n, int knee, uint64_t p99_us);

#endif
