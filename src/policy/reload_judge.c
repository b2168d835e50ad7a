/* The reversible reload's figures and judgement; see reload_judge.h. */
#include "policy/reload_judge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/loghist.h"

typedef struct shard {
    _Alignas(64) uint64_t requests;
    uint64_t errors;
    uint64_t slots[RELOAD_LAT_SLOTS];
} shard_t;

struct reload_figures {
    int armed; /* 0: record() returns at once (no trial under way) */
    size_t n;
    shard_t *shards;
};

reload_figures_t *reload_figures_new(size_t n_workers)
{
    reload_figures_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->n = n_workers ? n_workers : 1;
    f->shards = aligned_alloc(64, f->n * sizeof *f->shards);
    if (!f->shards) {
        free(f);
        return NULL;
    }
    memset(f->shards, 0, f->n * sizeof *f->shards);
    return f;
}

void reload_figures_free(reload_figures_t *f)
{
    if (!f)
        return;
    free(f->shards);
    free(f);
}

/* 4 slots per doubling: slot of v us, and the upper bound of a slot. */
static size_t slot_of(uint64_t v) { return loghist_slot(v, 2, RELOAD_LAT_SLOTS); }

static uint64_t slot_upper(size_t s) { return loghist_upper(s, 2); }

void reload_figures_arm(reload_figures_t *f, bool on)
{
    __atomic_store_n(&f->armed, on ? 1 : 0, __ATOMIC_RELAXED);
}

static void bump(uint64_t *c) { __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED); }

void reload_figures_record(reload_figures_t *f, unsigned worker, int status, uint64_t dur_us)
{
    /* Without a trial this load and compare is all a request pays. */
    if (!__atomic_load_n(&f->armed, __ATOMIC_RELAXED))
        return;
    shard_t *s = &f->shards[worker < f->n ? worker : 0];
    bump(&s->requests);
    if (status >= 500)
        bump(&s->errors);
    bump(&s->slots[slot_of(dur_us)]);
}

void reload_figures_sum(const reload_figures_t *f, reload_side_t *out)
{
    memset(out, 0, sizeof *out);
    for (size_t w = 0; w < f->n; w++) {
        const shard_t *s = &f->shards[w];
        out->requests += __atomic_load_n(&s->requests, __ATOMIC_RELAXED);
        out->errors += __atomic_load_n(&s->errors, __ATOMIC_RELAXED);
        for (size_t i = 0; i < RELOAD_LAT_SLOTS; i++)
            out->slots[i] += __atomic_load_n(&s->slots[i], __ATOMIC_RELAXED);
    }
}

static uint64_t minus(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

void reload_side_since(const reload_side_t *now, const reload_side_t *then, reload_side_t *out)
{
    out->requests = minus(now->requests, then->requests);
    out->errors = minus(now->errors, then->errors);
    for (size_t i = 0; i < RELOAD_LAT_SLOTS; i++)
        out->slots[i] = minus(now->slots[i], then->slots[i]);
}

uint64_t reload_side_p99_us(const reload_side_t *s)
{
    uint64_t n = 0, seen = 0;
    for (size_t i = 0; i < RELOAD_LAT_SLOTS; i++)
        n += s->slots[i];
    if (!n)
        return 0;
    uint64_t rank = (n * 99 + 99) / 100;
    for (size_t i = 0; i < RELOAD_LAT_SLOTS; i++) {
        seen += s->slots[i];
        if (seen >= rank)
            return slot_upper(i);
    }
    return slot_upper(RELOAD_LAT_SLOTS - 1);
}

void reload_judge(const config_reload_t *cfg, const reload_side_t *old_side,
                  const reload_side_t *new_side, bool bake_over, reload_judgement_t *j)
{
    memset(j, 0, sizeof *j);
    j->old_requests = old_side->requests;
    j->new_requests = new_side->requests;
    j->old_error_rate = old_side->requests ? (double)old_side->errors / old_side->requests : 0;
    j->new_error_rate = new_side->requests ? (double)new_side->errors / new_side->requests : 0;
    j->old_p99_us = reload_side_p99_us(old_side);
    j->new_p99_us = reload_side_p99_us(new_side);
    bool enough = old_side->requests >= cfg->min_requests &&
                  new_side->requests >= cfg->min_requests && new_side->requests > 0;
    if (enough && j->new_error_rate > RELOAD_ERROR_FLOOR &&
        j->new_error_rate > cfg->max_error_rate_increase * j->old_error_rate) {
        j->verdict = RELOAD_REVERT;
        snprintf(j->reason, sizeof j->reason,
                 "5xx rate %.2f%% on the new configuration against %.2f%% on the old (limit %gx "
                 "and above 1%%)",
                 100 * j->new_error_rate, 100 * j->old_error_rate, cfg->max_error_rate_increase);
        return;
    }
    if (enough && j->new_p99_us > j->old_p99_us + RELOAD_LATENCY_FLOOR_US &&
        (double)j->new_p99_us > cfg->max_latency_increase * (double)j->old_p99_us) {
        j->verdict = RELOAD_REVERT;
        snprintf(j->reason, sizeof j->reason,
                 "p99 %.1f ms on the new configuration against %.1f ms on the old (limit %gx)",
                 j->new_p99_us / 1000.0, j->old_p99_us / 1000.0, cfg->max_latency_increase);
        return;
    }
    if (!bake_over) {
        j->verdict = RELOAD_WAIT;
        snprintf(j->reason, sizeof j->reason, "baking");
        return;
    }
    j->verdict = RELOAD_PROMOTE;
    if (enough)
        snprintf(j->reason, sizeof j->reason,
                 "within limits: 5xx %.2f%% against %.2f%%, p99 %.1f ms against %.1f ms",
                 100 * j->new_error_rate, 100 * j->old_error_rate, j->new_p99_us / 1000.0,
                 j->old_p99_us / 1000.0);
    else
        snprintf(j->reason, sizeof j->reason,
                 "too few requests to judge (%llu new, %llu old; min_requests %u): nothing "
                 "speaks against it",
                 (unsigned long long)new_side->requests, (unsigned long long)old_side->requests,
                 cfg->min_requests);
}
