/* The reversible reload's judgement (contract 10.5), sans-I/O. While a new
 * configuration serves a share of the requests beside the one it replaces,
 * each generation's workers count its requests, 5xx answers and latencies
 * (reload_figures_*: per-worker shards, relaxed stores, no lock, no shared
 * cache line; armed for the trial only); the main thread sums them (the growth since the trial
 * began on either side) and reload_judge() says wait, promote or revert.
 *
 * The rules, with `cfg` the governing `reload` block:
 *   - figures are judged only once both sides have min_requests;
 *   - revert when the new side's 5xx rate is above max_error_rate_increase
 *     times the old side's and above 1%;
 *   - revert when the new side's p99 is above max_latency_increase times
 *     the old side's and more than 5 ms above it (a difference below that is
 *     loopback noise, not a regression);
 *   - at the end of the bake, promote: within the limits, or without enough
 *     requests to judge (nothing speaks against it; the reason says so).
 * A breach reverts at once, before the bake ends. Latency slots: 4 per
 * doubling (a p99 is at most 19% above the truth). */
#ifndef FICUS_POLICY_RELOAD_JUDGE_H
#define FICUS_POLICY_RELOAD_JUDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define RELOAD_LAT_SLOTS 108          /* 4 per doubling up to ~2^27 us (134 s) */
#define RELOAD_ERROR_FLOOR 0.01       /* a 5xx rate at or below 1% never reverts */
#define RELOAD_LATENCY_FLOOR_US 5000u /* nor a p99 at most 5 ms above the old one */

/* One side's counts (a sum over the workers, or the growth between two). */
typedef struct reload_side {
    uint64_t requests;
    uint64_t errors; /* 5xx answers */
    uint64_t slots[RELOAD_LAT_SLOTS];
} reload_side_t;

typedef struct reload_figures reload_figures_t;

/* One generation's counters for n_workers workers, disarmed (NULL: no
 * memory). */
reload_figures_t *reload_figures_new(size_t n_workers);
void reload_figures_free(reload_figures_t *f); /* NULL: no-op */
/* Any thread: count (on) or not (off) from now on; the counts so far stay.
 * Armed only while a trial is under way, so that a configuration with a
 * reload block and no reload pays one load and compare per request. */
void reload_figures_arm(reload_figures_t *f, bool on);
/* Worker thread `worker`: a request ended with status after dur_us (not
 * counted while disarmed). */
void reload_figures_record(reload_figures_t *f, unsigned worker, int status, uint64_t dur_us);
/* Any thread: the sum over the workers so far. */
void reload_figures_sum(const reload_figures_t *f, reload_side_t *out);
/* out = now - then, slot by slot. */
void reload_side_since(const reload_side_t *now, const reload_side_t *then, reload_side_t *out);
/* The side's p99 in us (a slot's upper bound); 0 without requests. */
uint64_t reload_side_p99_us(const reload_side_t *s);

typedef enum { RELOAD_WAIT = 0, RELOAD_PROMOTE, RELOAD_REVERT } reload_verdict_t;

typedef struct reload_judgement {
    reload_verdict_t verdict;
    uint64_t old_requests, new_requests;
    double old_error_rate, new_error_rate;
    uint64_t old_p99_us, new_p99_us;
    char reason[192]; /* why, with the figures */
} reload_judgement_t;

/* The verdict on the trial so far; bake_over: the bake has ended. */
void reload_judge(const config_reload_t *cfg, const reload_side_t *old_side,
                  const reload_side_t *new_side, bool bake_over, reload_judgement_t *j);

#endif
