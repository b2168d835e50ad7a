/* One route's rollout (contract 10.2), sans-I/O: evidence recorded by the
 * request path, a clock in through rollout_tick(), decisions out (the canary
 * weight, the state, a bounded history of transitions with their reasons).
 * Evidence (rollout_counts_t) and decision (rollout_judge) are separable: a
 * fleet's leader decides on counts summed across instances
 * (rollout_tick_counts), the other instances follow its transitions
 * (rollout_follow), and one cut off from the fleet only acts on failures
 * (rollout_tick_mode); app/rollout_fleet does that through redis.
 *
 * Threads:
 *  - rollout_record_*() and rollout_weight_percent(): any worker thread, no
 *    lock (relaxed atomics in the current time bucket).
 *  - rollout_tick(), rollout_tick_counts(), rollout_tick_mode(),
 *    rollout_follow(), rollout_action(),
 *    rollout_snapshot(), rollout_window_counts(), rollout_adopt(): any
 *    thread; they serialise on the rollout's own mutex (never taken by
 *    record calls). The integrator calls rollout_tick() once a second from
 *    the main loop and the actions/snapshot from the admin endpoints.
 *  - rollout_new()/rollout_free(): the owner of the config snapshot; free
 *    only when no worker can still record (the snapshot is retired).
 *
 * Evidence lives in a ring of ROLLOUT_RING time buckets of width
 * max(1 s, interval / ROLLOUT_WINDOW_BUCKETS); the ticker clears the next
 * buckets ahead of time. A record lands in the bucket of its now_ms; if that
 * bucket was not prepared (the ticker stalled more than two buckets, or the
 * worker's clock is far off) the record is dropped and counted in
 * rollout_snapshot_t.dropped_records. Nothing else is lost. A step's
 * evidence starts at its transition: what the bucket held then is set aside. */
#ifndef FICUS_POLICY_ROLLOUT_H
#define FICUS_POLICY_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROLLOUT_MAX_STEPS 16        /* steps in a rollout block */
#define ROLLOUT_HISTORY 32          /* transitions kept */
#define ROLLOUT_REASON_BYTES 96     /* a transition's reason, NUL included */
#define ROLLOUT_WINDOW_BUCKETS 60   /* buckets in one interval */
#define ROLLOUT_RING 64             /* buckets kept: a window, the current, two ahead */
#define ROLLOUT_HIST_SLOTS 232      /* log-scale latency slots: 8 per power of two, 1 us..~36 min */
#define ROLLOUT_MIN_BUCKET_MS 1000u /* narrowest time bucket */

typedef enum { ROLLOUT_ON_FAILURE_ROLLBACK = 0, ROLLOUT_ON_FAILURE_PAUSE } rollout_on_failure_t;

typedef struct {
    uint32_t canary_backend;          /* index of the canary in the route's backends */
    uint8_t steps[ROLLOUT_MAX_STEPS]; /* canary percents, strictly ascending, 1..100 */
    uint32_t n_steps;                 /* 1..ROLLOUT_MAX_STEPS */
    uint64_t interval_ms;             /* time at a step before the next one, > 0 */
    uint32_t min_requests;            /* canary tries (or comparisons) needed to judge */
    double max_error_rate;            /* fraction 0..1: failures (masked included) / tries */
    double max_latency_ratio;         /* canary p99 / primary p99; 0 = no limit */
    double max_mismatch_rate;         /* fraction 0..1; < 0 = no limit (no shadow compare) */
    rollout_on_failure_t on_failure;
} rollout_config_t;

typedef enum {
    ROLLOUT_PENDING = 0, /* canary at 0; waits for shadow evidence when a mismatch limit is set */
    ROLLOUT_STEP,        /* canary at steps[step] */
    ROLLOUT_PROMOTED,    /* canary at 100 */
    ROLLOUT_ROLLED_BACK, /* canary at 0 */
    ROLLOUT_PAUSED       /* canary held where it was; no automatic move */
} rollout_state_t;

typedef enum {
    ROLLOUT_ACTION_PAUSE = 0,
    ROLLOUT_ACTION_RESUME,
    ROLLOUT_ACTION_PROMOTE, /* next step now */
    ROLLOUT_ACTION_ROLLBACK,
    ROLLOUT_ACTION_RESTART /* back to the start, counters reset */
} rollout_action_t;

/* Why a transition happened: a low-cardinality label for
 * ficus_rollout_transitions_total{reason}; the history has the detail. */
typedef enum {
    ROLLOUT_CAUSE_START = 0, /* pending -> first step */
    ROLLOUT_CAUSE_PROMOTED,  /* limits held over the step */
    ROLLOUT_CAUSE_ERROR_RATE,
    ROLLOUT_CAUSE_LATENCY_RATIO,
    ROLLOUT_CAUSE_MISMATCH_RATE,
    ROLLOUT_CAUSE_MANUAL
} rollout_cause_t;

/* Evidence over a span of time: plain sums, mergeable across workers or
 * instances by adding every field. Latencies are in rollout's slots. */
typedef struct {
    uint64_t canary_tries;
    uint64_t canary_failures; /* masked failures included */
    uint64_t canary_masked;   /* failures the client never saw (a fallback answered) */
    uint64_t primary_tries;
    uint64_t shadow_matches;
    uint64_t shadow_mismatches;
    uint64_t canary_hist[ROLLOUT_HIST_SLOTS];
    uint64_t primary_hist[ROLLOUT_HIST_SLOTS];
} rollout_counts_t;

/* What the admin API and metrics show of one step. */
typedef struct {
    uint64_t requests; /* canary tries */
    uint64_t errors;   /* masked included */
    uint64_t masked;
    uint64_t primary_requests;
    double error_rate;     /* 0..1 */
    double canary_p99_ms;  /* 0 without tries */
    double primary_p99_ms; /* 0 without tries */
    double latency_ratio;  /* 0 when either p99 is unknown */
    uint64_t compared;     /* shadow comparisons */
    double mismatch_rate;  /* 0..1 */
} rollout_figures_t;

typedef struct {
    uint64_t seq; /* 1, 2, ...: entries with a seq above the last seen are new (metrics) */
    uint64_t at_ms;
    rollout_state_t from, to;
    uint32_t step; /* step index after the transition (0-based) */
    rollout_cause_t cause;
    char reason[ROLLOUT_REASON_BYTES];
} rollout_transition_t;

typedef struct {
    rollout_state_t state;
    rollout_state_t paused_from; /* with ROLLOUT_PAUSED: PENDING or STEP */
    uint32_t step;               /* 0-based index into steps[] */
    uint32_t weight_percent;     /* canary weight to apply now */
    uint64_t step_started_ms;
    uint32_t extensions;       /* intervals the current step was extended for lack of requests */
    rollout_figures_t current; /* the current step, over its last interval */
    rollout_figures_t steps[ROLLOUT_MAX_STEPS]; /* as each step was left (zero if never run) */
    uint64_t dropped_records;
    uint64_t transitions; /* ever made (seq of the newest) */
    uint32_t n_history;   /* entries in history, oldest first */
    rollout_transition_t history[ROLLOUT_HISTORY];
} rollout_snapshot_t;

typedef struct rollout rollout_t;

/* Checks a config: 0 or FE_INVAL with a message in err (may be NULL). */
int rollout_config_check(const rollout_config_t *cfg, char *err, size_t err_len);

/* A rollout in PENDING, evidence empty; NULL on an invalid config or no memory. */
rollout_t *rollout_new(const rollout_config_t *cfg, uint64_t now_ms);

/* Frees r; rollout_free(NULL) is a no-op. */
void rollout_free(rollout_t *r);

/* The rollout's config (a copy made by rollout_new). */
const rollout_config_t *rollout_config(const rollout_t *r);

/* Records one canary try: ok, or failed (masked: a fallback answered the
 * client; still a failure here). latency_us of the try. Worker threads. */
void rollout_record_canary(rollout_t *r, uint64_t now_ms, bool ok, bool masked,
                           uint64_t latency_us);

/* Records one primary (non-canary) try's latency. Worker threads. */
void rollout_record_primary(rollout_t *r, uint64_t now_ms, uint64_t latency_us);

/* Records one shadow comparison. Worker threads. */
void rollout_record_shadow(rollout_t *r, uint64_t now_ms, bool match);

/* The canary weight percent to apply now (0..100). Any thread, lock-free. */
uint32_t rollout_weight_percent(const rollout_t *r);

/* Sums this instance's evidence over the current judging window (the last
 * interval, not before the step started) into out. */
void rollout_window_counts(rollout_t *r, uint64_t now_ms, rollout_counts_t *out);

/* Adds b into a (for summing workers or instances). */
void rollout_counts_add(rollout_counts_t *a, const rollout_counts_t *b);

/* Figures (rates, p99s) of a counts sum. */
void rollout_figures(const rollout_counts_t *c, rollout_figures_t *out);

/* Judges counts against cfg's limits. Returns 1 when every limit holds and
 * min_requests is met, 0 when there is not enough evidence yet, and -1 with
 * *cause and reason set when a limit is broken. For pending (no canary
 * traffic) only the mismatch limit is judged, on comparisons. */
int rollout_judge(const rollout_config_t *cfg, bool pending, const rollout_counts_t *c,
                  rollout_cause_t *cause, char *reason, size_t reason_len);

/* What a tick may do: everything (ROLLOUT_TICK_ALL); only on_failure on a
 * broken limit, no promotion and no extension (ROLLOUT_TICK_FAILURES: an
 * instance that lost the fleet's shared state holds its step); nothing but
 * keeping the evidence buckets ready (ROLLOUT_TICK_HOLD: a follower). */
typedef enum { ROLLOUT_TICK_ALL = 0, ROLLOUT_TICK_FAILURES, ROLLOUT_TICK_HOLD } rollout_tick_mode_t;

/* Once a second: judges the window and moves the state (promotion at the end
 * of an interval, on_failure at once on a broken limit). Returns 1 when the
 * state or step changed, else 0. */
int rollout_tick(rollout_t *r, uint64_t now_ms);

/* As rollout_tick, on counts supplied by the caller (a fleet-wide sum). */
int rollout_tick_counts(rollout_t *r, uint64_t now_ms, const rollout_counts_t *window);

/* A tick in the given mode on window (NULL: this instance's own window).
 * Returns 1 when the state or step changed, else 0. */
int rollout_tick_mode(rollout_t *r, uint64_t now_ms, const rollout_counts_t *window,
                      rollout_tick_mode_t mode);

/* Makes r follow a transition another instance made (a fleet's shared
 * state): t->to, t->step (0-based), paused_from (with ROLLOUT_PAUSED) and
 * t->at_ms (the move's time on this clock, also the step's start) are taken
 * as they are, recorded in the history with t->cause and t->reason (t->seq
 * and t->from are ignored: the history numbers its own). This instance's
 * evidence of the step starts at now_ms. The step being left keeps its
 * figures; going back to pending clears them (a restart). 0, or FE_INVAL on
 * a transition this config cannot be in (state, step or cause out of range). */
int rollout_follow(rollout_t *r, const rollout_transition_t *t, rollout_state_t paused_from,
                   uint64_t now_ms);

/* A manual action. 0, or FE_INVAL when it makes no sense in the current
 * state (resume when not paused, promote when promoted or rolled back, ...). */
int rollout_action(rollout_t *r, rollout_action_t a, uint64_t now_ms);

/* Copies the state for the admin API and metrics. */
void rollout_snapshot(rollout_t *r, uint64_t now_ms, rollout_snapshot_t *out);

/* Carries old's state, history and evidence into fresh across a reload.
 * The caller has checked that the route's backends did not change; this
 * checks the rollout config is identical. fresh must not be shared with
 * workers yet; old may still be recorded into, but what it gets after the
 * adoption stays with it (the reload's switch-over is that short). 0, or
 * FE_INVAL. */
int rollout_adopt(rollout_t *fresh, rollout_t *old);

/* Names for the admin API and metrics labels. */
const char *rollout_state_name(rollout_state_t s);
const char *rollout_cause_name(rollout_cause_t c);
const char *rollout_action_name(rollout_action_t a);

/* Latency slot of a try (exposed for tests and a fleet encoding). */
uint32_t rollout_latency_slot(uint64_t latency_us);

/* Upper bound in microseconds of a slot's latencies. */
uint64_t rollout_slot_upper_us(uint32_t slot);

#endif
