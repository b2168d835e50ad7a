/* One route's rollout state machine (contract 10.2): lock-free evidence in
 * time buckets written by workers, a ticker that judges the last interval and
 * moves the canary's weight, manual actions and a bounded history. */
#include "policy/rollout.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

#define SLOT_SUB_BITS 3
#define SLOT_MAX_MSB 30
#define BUCKET_UNSET INT64_MIN
#define PREPARE_AHEAD 2

typedef struct {
    _Atomic int64_t number; /* bucket number it holds (now_ms / width), or BUCKET_UNSET */
    _Atomic uint32_t canary_tries, canary_failures, canary_masked, primary_tries;
    _Atomic uint32_t shadow_matches, shadow_mismatches;
    _Atomic uint32_t canary_hist[ROLLOUT_HIST_SLOTS];
    _Atomic uint32_t primary_hist[ROLLOUT_HIST_SLOTS];
} bucket_t;

struct rollout {
    rollout_config_t cfg;
    uint64_t width_ms;       /* bucket width */
    uint32_t window_buckets; /* buckets in one interval */
    bucket_t ring[ROLLOUT_RING];
    _Atomic uint64_t dropped;
    _Atomic uint32_t weight; /* what workers read */
    int64_t prepared_until;  /* highest bucket number prepared */

    pthread_mutex_t lock; /* decision state below; never taken by workers */
    rollout_state_t state, paused_from;
    uint32_t step;
    uint64_t step_started_ms;
    uint64_t evidence_since_ms;   /* this instance's evidence of the step starts here */
    uint64_t interval_started_ms; /* start of the interval being judged for promotion */
    int64_t baseline_bucket;      /* bucket the step started in */
    rollout_counts_t baseline;    /* its counts then: not the step's evidence */
    uint32_t extensions;
    rollout_figures_t step_figures[ROLLOUT_MAX_STEPS];
    rollout_transition_t history[ROLLOUT_HISTORY];
    uint32_t history_next, history_len;
    uint64_t transitions; /* ever made: the seq of the next one is transitions + 1 */
};

/* ---- latency slots ---- */

uint32_t rollout_latency_slot(uint64_t us)
{
    if (us < (1u << SLOT_SUB_BITS))
        return (uint32_t)us;
    if (us >= (1ull << (SLOT_MAX_MSB + 1)))
        us = (1ull << (SLOT_MAX_MSB + 1)) - 1;
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(us);
    uint32_t sub = (uint32_t)(us >> (msb - SLOT_SUB_BITS)) & ((1u << SLOT_SUB_BITS) - 1);
    return (msb - SLOT_SUB_BITS + 1) * (1u << SLOT_SUB_BITS) + sub;
}

static uint64_t slot_lower_us(uint32_t slot)
{
    const uint32_t per = 1u << SLOT_SUB_BITS;
    if (slot < per)
        return slot;
    uint32_t msb = slot / per + SLOT_SUB_BITS - 1;
    return (uint64_t)(per + slot % per) << (msb - SLOT_SUB_BITS);
}

uint64_t rollout_slot_upper_us(uint32_t slot)
{
    if (slot >= ROLLOUT_HIST_SLOTS - 1)
        return (1ull << (SLOT_MAX_MSB + 1)) - 1;
    return slot_lower_us(slot + 1) - 1;
}

/* p99 as the middle of the slot holding the rank, in ms; 0 without samples. */
static double hist_p99_ms(const uint64_t *hist, uint64_t total)
{
    if (total == 0)
        return 0;
    uint64_t rank = total - total / 100; /* ceil(0.99 * total) for the usual sizes */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++) {
        seen += hist[i];
        if (seen >= rank)
            return ((double)slot_lower_us(i) + (double)rollout_slot_upper_us(i)) / 2000.0;
    }
    return (double)rollout_slot_upper_us(ROLLOUT_HIST_SLOTS - 1) / 1000.0;
}

/* ---- names ---- */

const char *rollout_state_name(rollout_state_t s)
{
    static const char *names[] = {"pending", "step", "promoted", "rolled_back", "paused"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

const char *rollout_cause_name(rollout_cause_t c)
{
    static const char *names[] = {"start",         "promoted",      "error_rate",
                                  "latency_ratio", "mismatch_rate", "manual"};
    return (unsigned)c < sizeof names / sizeof names[0] ? names[c] : "unknown";
}

const char *rollout_action_name(rollout_action_t a)
{
    static const char *names[] = {"pause", "resume", "promote", "rollback", "restart"};
    return (unsigned)a < sizeof names / sizeof names[0] ? names[a] : "unknown";
}

/* ---- config ---- */

static int check_fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return FE_INVAL;
}

int rollout_config_check(const rollout_config_t *cfg, char *err, size_t err_len)
{
    if (!cfg)
        return check_fail(err, err_len, "no rollout config");
    if (cfg->n_steps == 0 || cfg->n_steps > ROLLOUT_MAX_STEPS)
        return check_fail(err, err_len, "steps: 1 to %d steps", ROLLOUT_MAX_STEPS);
    for (uint32_t i = 0; i < cfg->n_steps; i++) {
        if (cfg->steps[i] < 1 || cfg->steps[i] > 100)
            return check_fail(err, err_len, "steps[%u]: percent must be 1..100", i);
        if (i > 0 && cfg->steps[i] <= cfg->steps[i - 1])
            return check_fail(err, err_len, "steps[%u]: steps must be ascending", i);
    }
    if (cfg->interval_ms == 0 || cfg->interval_ms > UINT64_MAX / 4)
        return check_fail(err, err_len, "interval must be > 0");
    if (!(cfg->max_error_rate >= 0 && cfg->max_error_rate <= 1))
        return check_fail(err, err_len, "max_error_rate must be 0..100%%");
    if (!(cfg->max_latency_ratio >= 0 && isfinite(cfg->max_latency_ratio)))
        return check_fail(err, err_len, "max_latency_ratio must be >= 0");
    if (isnan(cfg->max_mismatch_rate) || cfg->max_mismatch_rate > 1)
        return check_fail(err, err_len, "max_mismatch_rate must be 0..100%%");
    if (cfg->on_failure != ROLLOUT_ON_FAILURE_ROLLBACK &&
        cfg->on_failure != ROLLOUT_ON_FAILURE_PAUSE)
        return check_fail(err, err_len, "on_failure must be rollback or pause");
    return 0;
}

static bool has_mismatch_limit(const rollout_config_t *cfg) { return cfg->max_mismatch_rate >= 0; }

/* ---- evidence ---- */

static void bucket_prepare(bucket_t *b, int64_t number)
{
    atomic_store_explicit(&b->number, BUCKET_UNSET, memory_order_release);
    atomic_store_explicit(&b->canary_tries, 0, memory_order_relaxed);
    atomic_store_explicit(&b->canary_failures, 0, memory_order_relaxed);
    atomic_store_explicit(&b->canary_masked, 0, memory_order_relaxed);
    atomic_store_explicit(&b->primary_tries, 0, memory_order_relaxed);
    atomic_store_explicit(&b->shadow_matches, 0, memory_order_relaxed);
    atomic_store_explicit(&b->shadow_mismatches, 0, memory_order_relaxed);
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++) {
        atomic_store_explicit(&b->canary_hist[i], 0, memory_order_relaxed);
        atomic_store_explicit(&b->primary_hist[i], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&b->number, number, memory_order_release);
}

/* Prepares buckets up to PREPARE_AHEAD past now's; the caller holds the lock. */
static void prepare_ahead(rollout_t *r, uint64_t now_ms)
{
    int64_t cur = (int64_t)(now_ms / r->width_ms);
    int64_t from = r->prepared_until + 1;
    if (from < cur)
        from = cur;
    /* A jump beyond the ring means every bucket is stale: prepare the ring once. */
    if (cur + PREPARE_AHEAD - from >= ROLLOUT_RING)
        from = cur + PREPARE_AHEAD - ROLLOUT_RING + 1;
    for (int64_t n = from; n <= cur + PREPARE_AHEAD; n++)
        bucket_prepare(&r->ring[(uint64_t)n % ROLLOUT_RING], n);
    if (cur + PREPARE_AHEAD > r->prepared_until)
        r->prepared_until = cur + PREPARE_AHEAD;
}

/* The bucket for now_ms if prepared, else NULL (the record is dropped). */
static bucket_t *bucket_for(rollout_t *r, uint64_t now_ms)
{
    int64_t n = (int64_t)(now_ms / r->width_ms);
    bucket_t *b = &r->ring[(uint64_t)n % ROLLOUT_RING];
    if (atomic_load_explicit(&b->number, memory_order_acquire) != n) {
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return NULL;
    }
    return b;
}

static void bump(_Atomic uint32_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

void rollout_record_canary(rollout_t *r, uint64_t now_ms, bool ok, bool masked, uint64_t latency_us)
{
    bucket_t *b = bucket_for(r, now_ms);
    if (!b)
        return;
    bump(&b->canary_tries);
    if (!ok) {
        bump(&b->canary_failures);
        if (masked)
            bump(&b->canary_masked);
    }
    bump(&b->canary_hist[rollout_latency_slot(latency_us)]);
}

void rollout_record_primary(rollout_t *r, uint64_t now_ms, uint64_t latency_us)
{
    bucket_t *b = bucket_for(r, now_ms);
    if (!b)
        return;
    bump(&b->primary_tries);
    bump(&b->primary_hist[rollout_latency_slot(latency_us)]);
}

void rollout_record_shadow(rollout_t *r, uint64_t now_ms, bool match)
{
    bucket_t *b = bucket_for(r, now_ms);
    if (b)
        bump(match ? &b->shadow_matches : &b->shadow_mismatches);
}

uint32_t rollout_weight_percent(const rollout_t *r)
{
    return atomic_load_explicit(&r->weight, memory_order_relaxed);
}

static uint64_t get(const _Atomic uint32_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void bucket_add(const bucket_t *b, int64_t n, rollout_counts_t *out)
{
    if (atomic_load_explicit(&b->number, memory_order_acquire) != n)
        return;
    out->canary_tries += get(&b->canary_tries);
    out->canary_failures += get(&b->canary_failures);
    out->canary_masked += get(&b->canary_masked);
    out->primary_tries += get(&b->primary_tries);
    out->shadow_matches += get(&b->shadow_matches);
    out->shadow_mismatches += get(&b->shadow_mismatches);
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++) {
        out->canary_hist[i] += get(&b->canary_hist[i]);
        out->primary_hist[i] += get(&b->primary_hist[i]);
    }
}

/* a -= b, floored at 0 (counts only grow, but a bucket may be recycled). */
static void counts_sub(rollout_counts_t *a, const rollout_counts_t *b)
{
    uint64_t *x = (uint64_t *)a;
    const uint64_t *y = (const uint64_t *)b;
    for (size_t i = 0; i < sizeof *a / sizeof(uint64_t); i++)
        x[i] = x[i] > y[i] ? x[i] - y[i] : 0;
}

/* Remembers what the bucket of now_ms holds: evidence from before the step. */
static void take_baseline(rollout_t *r, uint64_t now_ms)
{
    int64_t n = (int64_t)(now_ms / r->width_ms);
    memset(&r->baseline, 0, sizeof r->baseline);
    r->baseline_bucket = n;
    bucket_add(&r->ring[(uint64_t)n % ROLLOUT_RING], n, &r->baseline);
}

/* Sums buckets of the last interval, not before since_ms; lock held. */
static void window_sum(rollout_t *r, uint64_t now_ms, uint64_t since_ms, rollout_counts_t *out)
{
    memset(out, 0, sizeof *out);
    int64_t cur = (int64_t)(now_ms / r->width_ms);
    /* [now - interval, now]: the oldest bucket is partly outside, the current partial. */
    int64_t first = cur - (int64_t)r->window_buckets;
    int64_t since = (int64_t)(since_ms / r->width_ms);
    if (first < since)
        first = since;
    for (int64_t n = first; n <= cur; n++)
        bucket_add(&r->ring[(uint64_t)n % ROLLOUT_RING], n, out);
    if (first == r->baseline_bucket)
        counts_sub(out, &r->baseline);
}

void rollout_counts_add(rollout_counts_t *a, const rollout_counts_t *b)
{
    a->canary_tries += b->canary_tries;
    a->canary_failures += b->canary_failures;
    a->canary_masked += b->canary_masked;
    a->primary_tries += b->primary_tries;
    a->shadow_matches += b->shadow_matches;
    a->shadow_mismatches += b->shadow_mismatches;
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++) {
        a->canary_hist[i] += b->canary_hist[i];
        a->primary_hist[i] += b->primary_hist[i];
    }
}

void rollout_figures(const rollout_counts_t *c, rollout_figures_t *out)
{
    memset(out, 0, sizeof *out);
    out->requests = c->canary_tries;
    out->errors = c->canary_failures;
    out->masked = c->canary_masked;
    out->primary_requests = c->primary_tries;
    if (c->canary_tries)
        out->error_rate = (double)c->canary_failures / (double)c->canary_tries;
    uint64_t ct = 0, pt = 0;
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++) {
        ct += c->canary_hist[i];
        pt += c->primary_hist[i];
    }
    out->canary_p99_ms = hist_p99_ms(c->canary_hist, ct);
    out->primary_p99_ms = hist_p99_ms(c->primary_hist, pt);
    if (out->canary_p99_ms > 0 && out->primary_p99_ms > 0)
        out->latency_ratio = out->canary_p99_ms / out->primary_p99_ms;
    out->compared = c->shadow_matches + c->shadow_mismatches;
    if (out->compared)
        out->mismatch_rate = (double)c->shadow_mismatches / (double)out->compared;
}

/* ---- judging ---- */

int rollout_judge(const rollout_config_t *cfg, bool pending, const rollout_counts_t *c,
                  rollout_cause_t *cause, char *reason, size_t reason_len)
{
    rollout_figures_t f;
    rollout_figures(c, &f);
    bool limit = has_mismatch_limit(cfg);
    if (limit && f.compared >= cfg->min_requests && f.compared > 0 &&
        f.mismatch_rate > cfg->max_mismatch_rate) {
        *cause = ROLLOUT_CAUSE_MISMATCH_RATE;
        snprintf(reason, reason_len, "mismatch_rate %.2f%% > %.2f%% (%llu compared)",
                 f.mismatch_rate * 100, cfg->max_mismatch_rate * 100,
                 (unsigned long long)f.compared);
        return -1;
    }
    if (pending)
        return !limit || (f.compared >= cfg->min_requests && f.compared > 0) ? 1 : 0;
    if (limit && (f.compared < cfg->min_requests || f.compared == 0))
        return 0;
    if (f.requests < cfg->min_requests || f.requests == 0)
        return 0;
    if (f.error_rate > cfg->max_error_rate) {
        *cause = ROLLOUT_CAUSE_ERROR_RATE;
        snprintf(reason, reason_len, "error_rate %.2f%% > %.2f%% (%llu of %llu, %llu masked)",
                 f.error_rate * 100, cfg->max_error_rate * 100, (unsigned long long)f.errors,
                 (unsigned long long)f.requests, (unsigned long long)f.masked);
        return -1;
    }
    if (cfg->max_latency_ratio > 0 && f.latency_ratio > cfg->max_latency_ratio) {
        *cause = ROLLOUT_CAUSE_LATENCY_RATIO;
        snprintf(reason, reason_len, "latency_ratio %.2f > %.2f (p99 %.1fms / %.1fms)",
                 f.latency_ratio, cfg->max_latency_ratio, f.canary_p99_ms, f.primary_p99_ms);
        return -1;
    }
    return 1;
}

/* ---- state ---- */

static uint32_t weight_of(const rollout_t *r)
{
    switch (r->state) {
    case ROLLOUT_STEP:
        return r->cfg.steps[r->step];
    case ROLLOUT_PROMOTED:
        return 100;
    case ROLLOUT_PAUSED:
        return r->paused_from == ROLLOUT_STEP ? r->cfg.steps[r->step] : 0;
    default:
        return 0;
    }
}

/* The one place the state moves: sets it, the weight, the step clock, and
 * appends the transition to the history. Lock held. */
static void set_state(rollout_t *r, rollout_state_t to, uint32_t step, uint64_t now_ms,
                      rollout_cause_t cause, const char *fmt, ...)
{
    rollout_transition_t *t = &r->history[r->history_next];
    t->at_ms = now_ms;
    t->from = r->state;
    t->to = to;
    t->step = step;
    t->cause = cause;
    t->seq = ++r->transitions;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->reason, sizeof t->reason, fmt, ap);
    va_end(ap);
    r->history_next = (r->history_next + 1) % ROLLOUT_HISTORY;
    if (r->history_len < ROLLOUT_HISTORY)
        r->history_len++;

    if (to == ROLLOUT_PAUSED)
        r->paused_from = r->state;
    if (to != r->state || step != r->step || to == ROLLOUT_PENDING) {
        r->step_started_ms = now_ms;
        r->evidence_since_ms = now_ms;
        r->interval_started_ms = now_ms;
        r->extensions = 0;
        take_baseline(r, now_ms);
    }
    r->state = to;
    r->step = step;
    atomic_store_explicit(&r->weight, weight_of(r), memory_order_relaxed);
}

/* Remembers the figures of the step being left. Lock held. */
static void keep_step_figures(rollout_t *r, const rollout_counts_t *window)
{
    if (r->state == ROLLOUT_STEP || (r->state == ROLLOUT_PAUSED && r->paused_from == ROLLOUT_STEP))
        rollout_figures(window, &r->step_figures[r->step]);
}

/* Moves to the next step, or to promoted after the last. Lock held. */
static void advance(rollout_t *r, uint64_t now_ms, rollout_cause_t cause, const char *why)
{
    bool from_pending = r->state == ROLLOUT_PENDING ||
                        (r->state == ROLLOUT_PAUSED && r->paused_from == ROLLOUT_PENDING);
    if (from_pending && r->cfg.steps[0] < 100)
        set_state(r, ROLLOUT_STEP, 0, now_ms, cause, "%s: step 1 (%u%%)", why, r->cfg.steps[0]);
    else if (r->step + 1 < r->cfg.n_steps && r->cfg.steps[r->step + 1] < 100)
        set_state(r, ROLLOUT_STEP, r->step + 1, now_ms, cause, "%s: step %u (%u%%)", why,
                  r->step + 2, r->cfg.steps[r->step + 1]);
    else
        set_state(r, ROLLOUT_PROMOTED, from_pending ? 0 : r->cfg.n_steps - 1, now_ms, cause,
                  "%s: canary at 100%%", why);
}

static void fail(rollout_t *r, uint64_t now_ms, rollout_cause_t cause, const char *reason)
{
    if (r->cfg.on_failure == ROLLOUT_ON_FAILURE_PAUSE)
        set_state(r, ROLLOUT_PAUSED, r->step, now_ms, cause, "paused: %s", reason);
    else
        set_state(r, ROLLOUT_ROLLED_BACK, r->step, now_ms, cause, "rolled back: %s", reason);
}

static int tick_locked(rollout_t *r, uint64_t now_ms, const rollout_counts_t *w,
                       rollout_tick_mode_t mode)
{
    if (mode == ROLLOUT_TICK_HOLD || (r->state != ROLLOUT_PENDING && r->state != ROLLOUT_STEP))
        return 0;
    bool pending = r->state == ROLLOUT_PENDING;
    rollout_cause_t cause = ROLLOUT_CAUSE_MANUAL;
    char reason[ROLLOUT_REASON_BYTES];
    int verdict = rollout_judge(&r->cfg, pending, w, &cause, reason, sizeof reason);
    if (verdict < 0) {
        keep_step_figures(r, w);
        fail(r, now_ms, cause, reason);
        return 1;
    }
    if (mode == ROLLOUT_TICK_FAILURES)
        return 0; /* no promotion, no extension: the step is held as it is */
    if (pending && !has_mismatch_limit(&r->cfg)) {
        advance(r, now_ms, ROLLOUT_CAUSE_START, "started");
        return 1;
    }
    if (now_ms < r->interval_started_ms || now_ms - r->interval_started_ms < r->cfg.interval_ms)
        return 0;
    if (verdict == 0) {
        /* Not enough evidence: the step gets another interval. */
        r->extensions++;
        r->interval_started_ms = now_ms;
        return 0;
    }
    rollout_figures_t f;
    rollout_figures(w, &f);
    char why[ROLLOUT_REASON_BYTES];
    if (pending)
        snprintf(why, sizeof why, "shadow ok: %llu compared, mismatch %.2f%%",
                 (unsigned long long)f.compared, f.mismatch_rate * 100);
    else
        snprintf(why, sizeof why, "promoted: %llu requests, error %.1f%%, ratio %.2f",
                 (unsigned long long)f.requests, f.error_rate * 100, f.latency_ratio);
    keep_step_figures(r, w);
    advance(r, now_ms, pending ? ROLLOUT_CAUSE_START : ROLLOUT_CAUSE_PROMOTED, why);
    return 1;
}

rollout_t *rollout_new(const rollout_config_t *cfg, uint64_t now_ms)
{
    if (rollout_config_check(cfg, NULL, 0) != 0)
        return NULL;
    rollout_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->lock, NULL) != 0)
        goto fail_free;
    r->cfg = *cfg;
    r->width_ms = (cfg->interval_ms + ROLLOUT_WINDOW_BUCKETS - 1) / ROLLOUT_WINDOW_BUCKETS;
    if (r->width_ms < ROLLOUT_MIN_BUCKET_MS)
        r->width_ms = ROLLOUT_MIN_BUCKET_MS;
    r->window_buckets = (uint32_t)((cfg->interval_ms + r->width_ms - 1) / r->width_ms);
    for (uint32_t i = 0; i < ROLLOUT_RING; i++)
        atomic_init(&r->ring[i].number, BUCKET_UNSET);
    r->prepared_until = INT64_MIN / 2;
    prepare_ahead(r, now_ms);
    r->state = ROLLOUT_PENDING;
    r->step_started_ms = now_ms;
    r->evidence_since_ms = now_ms;
    r->interval_started_ms = now_ms;
    take_baseline(r, now_ms);
    return r;

fail_free:
    free(r);
    return NULL;
}

void rollout_free(rollout_t *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

const rollout_config_t *rollout_config(const rollout_t *r) { return &r->cfg; }

void rollout_window_counts(rollout_t *r, uint64_t now_ms, rollout_counts_t *out)
{
    pthread_mutex_lock(&r->lock);
    window_sum(r, now_ms, r->evidence_since_ms, out);
    pthread_mutex_unlock(&r->lock);
}

int rollout_tick_mode(rollout_t *r, uint64_t now_ms, const rollout_counts_t *window,
                      rollout_tick_mode_t mode)
{
    rollout_counts_t own;
    pthread_mutex_lock(&r->lock);
    prepare_ahead(r, now_ms);
    if (!window) {
        window_sum(r, now_ms, r->evidence_since_ms, &own);
        window = &own;
    }
    int changed = tick_locked(r, now_ms, window, mode);
    pthread_mutex_unlock(&r->lock);
    return changed;
}

int rollout_tick_counts(rollout_t *r, uint64_t now_ms, const rollout_counts_t *window)
{
    return rollout_tick_mode(r, now_ms, window, ROLLOUT_TICK_ALL);
}

int rollout_tick(rollout_t *r, uint64_t now_ms)
{
    return rollout_tick_mode(r, now_ms, NULL, ROLLOUT_TICK_ALL);
}

/* Is the move to (to, step, paused_from) one this config can be in? */
static bool follow_valid(const rollout_t *r, const rollout_transition_t *t,
                         rollout_state_t paused_from)
{
    if ((unsigned)t->to > ROLLOUT_PAUSED || (unsigned)t->cause > ROLLOUT_CAUSE_MANUAL ||
        t->step >= r->cfg.n_steps)
        return false;
    return t->to != ROLLOUT_PAUSED || paused_from == ROLLOUT_PENDING || paused_from == ROLLOUT_STEP;
}

int rollout_follow(rollout_t *r, const rollout_transition_t *t, rollout_state_t paused_from,
                   uint64_t now_ms)
{
    if (!follow_valid(r, t, paused_from))
        return FE_INVAL;
    rollout_counts_t w;
    pthread_mutex_lock(&r->lock);
    prepare_ahead(r, now_ms);
    window_sum(r, now_ms, r->evidence_since_ms, &w);
    keep_step_figures(r, &w);
    if (t->to == ROLLOUT_PENDING)
        memset(r->step_figures, 0, sizeof r->step_figures); /* only a restart goes back */
    uint64_t at = t->at_ms <= now_ms ? t->at_ms : now_ms;
    set_state(r, t->to, t->step, at, t->cause, "%s", t->reason);
    /* set_state took the move's time as the step's start; this instance's
     * evidence at the new weight starts only now. */
    r->step_started_ms = at;
    r->interval_started_ms = at;
    r->evidence_since_ms = now_ms;
    r->extensions = 0;
    take_baseline(r, now_ms);
    if (t->to == ROLLOUT_PAUSED)
        r->paused_from = paused_from;
    atomic_store_explicit(&r->weight, weight_of(r), memory_order_relaxed);
    pthread_mutex_unlock(&r->lock);
    return 0;
}

static int action_locked(rollout_t *r, rollout_action_t a, uint64_t now_ms)
{
    const char *name = rollout_action_name(a);
    switch (a) {
    case ROLLOUT_ACTION_PAUSE:
        if (r->state != ROLLOUT_PENDING && r->state != ROLLOUT_STEP)
            return FE_INVAL;
        set_state(r, ROLLOUT_PAUSED, r->step, now_ms, ROLLOUT_CAUSE_MANUAL, "manual %s", name);
        return 0;
    case ROLLOUT_ACTION_RESUME:
        if (r->state != ROLLOUT_PAUSED)
            return FE_INVAL;
        /* The step's clock starts again: its evidence is judged afresh. */
        set_state(r, r->paused_from, r->step, now_ms, ROLLOUT_CAUSE_MANUAL, "manual %s", name);
        return 0;
    case ROLLOUT_ACTION_PROMOTE:
        if (r->state == ROLLOUT_PROMOTED || r->state == ROLLOUT_ROLLED_BACK)
            return FE_INVAL;
        advance(r, now_ms, ROLLOUT_CAUSE_MANUAL, "manual promote");
        return 0;
    case ROLLOUT_ACTION_ROLLBACK:
        if (r->state == ROLLOUT_ROLLED_BACK)
            return FE_INVAL;
        set_state(r, ROLLOUT_ROLLED_BACK, r->step, now_ms, ROLLOUT_CAUSE_MANUAL, "manual %s", name);
        return 0;
    case ROLLOUT_ACTION_RESTART:
        memset(r->step_figures, 0, sizeof r->step_figures);
        set_state(r, ROLLOUT_PENDING, 0, now_ms, ROLLOUT_CAUSE_MANUAL, "manual %s", name);
        return 0;
    }
    return FE_INVAL;
}

int rollout_action(rollout_t *r, rollout_action_t a, uint64_t now_ms)
{
    rollout_counts_t w;
    pthread_mutex_lock(&r->lock);
    prepare_ahead(r, now_ms);
    /* A step left by hand keeps its figures as one left on its own does. */
    if (a == ROLLOUT_ACTION_PROMOTE || a == ROLLOUT_ACTION_ROLLBACK) {
        window_sum(r, now_ms, r->evidence_since_ms, &w);
        keep_step_figures(r, &w);
    }
    int rc = action_locked(r, a, now_ms);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void rollout_snapshot(rollout_t *r, uint64_t now_ms, rollout_snapshot_t *out)
{
    rollout_counts_t w;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->lock);
    out->state = r->state;
    out->paused_from = r->paused_from;
    out->step = r->step;
    out->weight_percent = weight_of(r);
    out->step_started_ms = r->step_started_ms;
    out->extensions = r->extensions;
    window_sum(r, now_ms, r->evidence_since_ms, &w);
    rollout_figures(&w, &out->current);
    memcpy(out->steps, r->step_figures, sizeof out->steps);
    out->n_history = r->history_len;
    out->transitions = r->transitions;
    uint32_t first = (r->history_next + ROLLOUT_HISTORY - r->history_len) % ROLLOUT_HISTORY;
    for (uint32_t i = 0; i < r->history_len; i++)
        out->history[i] = r->history[(first + i) % ROLLOUT_HISTORY];
    pthread_mutex_unlock(&r->lock);
    out->dropped_records = atomic_load_explicit(&r->dropped, memory_order_relaxed);
}

static bool config_equal(const rollout_config_t *a, const rollout_config_t *b)
{
    if (a->canary_backend != b->canary_backend || a->n_steps != b->n_steps ||
        a->interval_ms != b->interval_ms || a->min_requests != b->min_requests ||
        a->max_error_rate != b->max_error_rate || a->max_latency_ratio != b->max_latency_ratio ||
        a->max_mismatch_rate != b->max_mismatch_rate || a->on_failure != b->on_failure)
        return false;
    return memcmp(a->steps, b->steps, a->n_steps) == 0;
}

static void bucket_copy(bucket_t *to, const bucket_t *from)
{
    int64_t n = atomic_load_explicit(&from->number, memory_order_acquire);
    atomic_store_explicit(&to->number, n, memory_order_relaxed);
    atomic_store_explicit(&to->canary_tries, get(&from->canary_tries), memory_order_relaxed);
    atomic_store_explicit(&to->canary_failures, get(&from->canary_failures), memory_order_relaxed);
    atomic_store_explicit(&to->canary_masked, get(&from->canary_masked), memory_order_relaxed);
    atomic_store_explicit(&to->primary_tries, get(&from->primary_tries), memory_order_relaxed);
    atomic_store_explicit(&to->shadow_matches, get(&from->shadow_matches), memory_order_relaxed);
    atomic_store_explicit(&to->shadow_mismatches, get(&from->shadow_mismatches),
                          memory_order_relaxed);
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++) {
        atomic_store_explicit(&to->canary_hist[i], get(&from->canary_hist[i]),
                              memory_order_relaxed);
        atomic_store_explicit(&to->primary_hist[i], get(&from->primary_hist[i]),
                              memory_order_relaxed);
    }
}

int rollout_adopt(rollout_t *fresh, rollout_t *old)
{
    if (!fresh || !old || fresh == old || !config_equal(&fresh->cfg, &old->cfg))
        return FE_INVAL;
    pthread_mutex_lock(&old->lock);
    pthread_mutex_lock(&fresh->lock);
    for (uint32_t i = 0; i < ROLLOUT_RING; i++)
        bucket_copy(&fresh->ring[i], &old->ring[i]);
    fresh->prepared_until = old->prepared_until;
    fresh->state = old->state;
    fresh->paused_from = old->paused_from;
    fresh->step = old->step;
    fresh->step_started_ms = old->step_started_ms;
    fresh->evidence_since_ms = old->evidence_since_ms;
    fresh->interval_started_ms = old->interval_started_ms;
    fresh->baseline_bucket = old->baseline_bucket;
    fresh->baseline = old->baseline;
    fresh->extensions = old->extensions;
    memcpy(fresh->step_figures, old->step_figures, sizeof fresh->step_figures);
    memcpy(fresh->history, old->history, sizeof fresh->history);
    fresh->history_next = old->history_next;
    fresh->history_len = old->history_len;
    fresh->transitions = old->transitions;
    atomic_store_explicit(&fresh->weight, weight_of(fresh), memory_order_relaxed);
    atomic_store_explicit(&fresh->dropped, atomic_load(&old->dropped), memory_order_relaxed);
    pthread_mutex_unlock(&fresh->lock);
    pthread_mutex_unlock(&old->lock);
    return 0;
}
