/* Shared target state; see health.h. */
#include "policy/health.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#define MAX_EJECTION_MS (300u * 1000u)

health_t *health_new(const config_t *cfg)
{
    health_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->n_groups = cfg->n_target_groups;
    h->groups = calloc(h->n_groups ? h->n_groups : 1, sizeof *h->groups);
    if (!h->groups)
        goto fail;
    for (size_t g = 0; g < h->n_groups; g++) {
        health_group_t *hg = &h->groups[g];
        const config_target_group_t *tg = &cfg->target_groups[g];
        hg->cfg = tg;
        hg->n = tg->n_targets;
        atomic_flag_clear(&hg->eject_lock);
        hg->targets = calloc(hg->n ? hg->n : 1, sizeof *hg->targets);
        if (!hg->targets)
            goto fail;
        for (size_t t = 0; t < hg->n; t++) {
            health_target_t *ht = &hg->targets[t];
            atomic_init(&ht->checked_healthy, 1);
            if (tg->targets[t].addrlen)
                health_set_addr(ht, (const struct sockaddr *)&tg->targets[t].addr,
                                tg->targets[t].addrlen, NULL, NULL);
        }
    }
    return h;
fail:
    health_free(h);
    return NULL;
}

void health_inherit(health_t *h, const health_t *old)
{
    for (size_t g = 0; g < h->n_groups; g++) {
        health_group_t *hg = &h->groups[g];
        const health_group_t *og = NULL;
        for (size_t i = 0; i < old->n_groups && !og; i++)
            if (strcmp(old->groups[i].cfg->name, hg->cfg->name) == 0)
                og = &old->groups[i];
        for (size_t t = 0; og && t < hg->n; t++) {
            const health_target_t *ot = NULL;
            for (size_t i = 0; i < og->n && !ot; i++)
                if (strcmp(og->cfg->targets[i].name, hg->cfg->targets[t].name) == 0)
                    ot = &og->targets[i];
            if (!ot)
                continue;
            health_target_t *ht = &hg->targets[t];
            atomic_store(&ht->checked_healthy, atomic_load(&ot->checked_healthy));
            atomic_store(&ht->consecutive_errors, atomic_load(&ot->consecutive_errors));
            atomic_store(&ht->ejected_until_ms, atomic_load(&ot->ejected_until_ms));
            atomic_store(&ht->ejections, atomic_load(&ot->ejections));
            ht->hc_successes = ot->hc_successes;
            ht->hc_failures = ot->hc_failures;
            const health_addr_t *a = atomic_load(&ot->addr);
            if (!atomic_load(&ht->addr) && a)
                health_set_addr(ht, (const struct sockaddr *)&a->ss, a->len, NULL, NULL);
        }
    }
}

void health_free(health_t *h)
{
    if (!h)
        return;
    for (size_t g = 0; h->groups && g < h->n_groups; g++) {
        health_group_t *hg = &h->groups[g];
        for (size_t t = 0; hg->targets && t < hg->n; t++)
            free(atomic_load(&hg->targets[t].addr));
        free(hg->targets);
    }
    free(h->groups);
    free(h);
}

bool health_target_ejected(const health_target_t *t, uint64_t now_ms)
{
    return atomic_load_explicit(&t->ejected_until_ms, memory_order_relaxed) > now_ms;
}

bool health_target_usable(const health_target_t *t, uint64_t now_ms)
{
    return atomic_load_explicit(&t->checked_healthy, memory_order_relaxed) &&
           !health_target_ejected(t, now_ms) &&
           atomic_load_explicit(&t->addr, memory_order_relaxed) != NULL;
}

bool health_group_panic(health_group_t *g, size_t usable)
{
    uint32_t th = g->cfg->panic_threshold;
    bool panic = th && usable * 100 < (size_t)th * g->n;
    if (panic != (atomic_load_explicit(&g->panic, memory_order_relaxed) != 0) &&
        atomic_exchange_explicit(&g->panic, panic, memory_order_relaxed) != panic) {
        if (panic)
            log_warn("target group %s: %zu of %zu targets healthy, below panic_threshold %u%%: "
                     "spreading requests over all of them",
                     g->cfg->name, usable, g->n, th);
        else
            log_info("target group %s: %zu of %zu targets healthy again: panic mode over",
                     g->cfg->name, usable, g->n);
    }
    return panic;
}

size_t health_group_usable(const health_group_t *g, uint64_t now_ms)
{
    size_t n = 0;
    for (size_t t = 0; t < g->n; t++)
        n += health_target_usable(&g->targets[t], now_ms);
    return n;
}

bool health_record(health_group_t *g, size_t target, bool failure, uint64_t now_ms)
{
    health_target_t *t = &g->targets[target];
    if (atomic_load_explicit(&t->ejection_open, memory_order_relaxed) &&
        !health_target_ejected(t, now_ms) &&
        atomic_exchange_explicit(&t->ejection_open, 0, memory_order_relaxed))
        log_info("outlier detection: %s %s back in rotation after its ejection", g->cfg->name,
                 g->cfg->targets[target].name);
    if (!failure) {
        if (atomic_load_explicit(&t->consecutive_errors, memory_order_relaxed))
            atomic_store_explicit(&t->consecutive_errors, 0, memory_order_relaxed);
        return false;
    }
    if (!g->cfg->has_outlier)
        return false;
    const config_outlier_t *o = &g->cfg->outlier;
    uint32_t c = atomic_fetch_add(&t->consecutive_errors, 1) + 1;
    if (c < o->consecutive_errors)
        return false;
    bool ejected = false;
    uint64_t dur = 0;
    uint32_t k = 0;
    while (atomic_flag_test_and_set_explicit(&g->eject_lock, memory_order_acquire))
        ;
    if (!health_target_ejected(t, now_ms)) {
        size_t already = 0;
        for (size_t i = 0; i < g->n; i++)
            already += health_target_ejected(&g->targets[i], now_ms);
        /* Never more than max_ejection_percent of the group. */
        if ((already + 1) * 100 <= g->n * o->max_ejection_percent) {
            k = atomic_fetch_add(&t->ejections, 1) + 1;
            uint64_t cap =
                o->base_ejection_ms > MAX_EJECTION_MS ? o->base_ejection_ms : MAX_EJECTION_MS;
            dur = o->base_ejection_ms * k;
            if (dur > cap)
                dur = cap;
            atomic_store(&t->ejected_until_ms, now_ms + dur);
            atomic_store(&t->consecutive_errors, 0);
            atomic_store_explicit(&t->ejection_open, 1, memory_order_relaxed);
            ejected = true;
        }
    }
    atomic_flag_clear_explicit(&g->eject_lock, memory_order_release);
    /* Logged once the other workers may take the lock again. */
    if (ejected)
        log_warn("outlier detection: %s %s ejected for %llu ms after %u consecutive errors "
                 "(ejection #%u)",
                 g->cfg->name, g->cfg->targets[target].name, (unsigned long long)dur, c, k);
    return ejected;
}

int health_check_result(health_group_t *g, size_t target, bool ok)
{
    health_target_t *t = &g->targets[target];
    const config_health_check_t *hc = &g->cfg->health_check;
    unsigned healthy = atomic_load(&t->checked_healthy);
    if (ok) {
        t->hc_failures = 0;
        if (!healthy && ++t->hc_successes >= hc->healthy_threshold) {
            t->hc_successes = 0;
            atomic_store(&t->checked_healthy, 1);
            return +1;
        }
    } else {
        t->hc_successes = 0;
        if (healthy && ++t->hc_failures >= hc->unhealthy_threshold) {
            t->hc_failures = 0;
            atomic_store(&t->checked_healthy, 0);
            return -1;
        }
    }
    return 0;
}

bool health_acquire(atomic_uint *c, uint32_t max)
{
    unsigned v = atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    if (v >= max) {
        atomic_fetch_sub_explicit(c, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

void health_release(atomic_uint *c) { atomic_fetch_sub_explicit(c, 1, memory_order_relaxed); }

void health_set_addr(health_target_t *t, const struct sockaddr *sa, socklen_t len,
                     void (*retire)(void *ctx, void *ptr, void (*free_fn)(void *)),
                     void *retire_ctx)
{
    health_addr_t *a = malloc(sizeof *a);
    if (!a)
        return;
    memset(a, 0, sizeof *a);
    memcpy(&a->ss, sa, len);
    a->len = len;
    health_addr_t *old = atomic_exchange(&t->addr, a);
    if (!old)
        return;
    if (retire)
        retire(retire_ctx, old, free);
    else
        free(old);
}
