/* Hedging's delay and cap; see hedge.h. */
#include "policy/hedge.h"

#include <stdlib.h>
#include <string.h>

#include "core/loghist.h"

typedef struct hedge_window {
    uint64_t epoch; /* now_ms / HEDGE_WINDOW_MS of its samples */
    uint32_t n;
    uint32_t slots[HEDGE_SLOTS];
} hedge_window_t;

typedef struct hedge_backend {
    hedge_window_t win[HEDGE_WINDOWS];
    uint64_t computed_s; /* second of the cached delay; 0 = never */
    uint64_t delay_ms;
} hedge_backend_t;

struct hedge {
    config_hedge_t cfg;
    int32_t tokens; /* hundredths of a hedge */
    size_t n_backends;
    hedge_backend_t *backends; /* NULL with a fixed delay */
};

hedge_t *hedge_new(const config_hedge_t *cfg, size_t n_backends)
{
    hedge_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->cfg = *cfg;
    h->tokens = 100 + (int32_t)cfg->max_percent;
    h->n_backends = n_backends;
    if (cfg->after_percentile && n_backends) {
        h->backends = calloc(n_backends, sizeof *h->backends);
        if (!h->backends) {
            free(h);
            return NULL;
        }
    }
    return h;
}

void hedge_free(hedge_t *h)
{
    if (!h)
        return;
    free(h->backends);
    free(h);
}

void hedge_note_request(hedge_t *h)
{
    int32_t cap = 100 + (int32_t)h->cfg.max_percent;
    h->tokens += (int32_t)h->cfg.max_percent;
    if (h->tokens > cap)
        h->tokens = cap;
}

bool hedge_take(hedge_t *h)
{
    if (h->tokens < 100)
        return false;
    h->tokens -= 100;
    return true;
}

size_t hedge_slot(uint64_t v) { return loghist_slot(v, 3, HEDGE_SLOTS); }

uint64_t hedge_slot_upper_us(size_t slot) { return loghist_upper(slot, 3); }

void hedge_record(hedge_t *h, size_t backend, uint64_t now_ms, uint64_t latency_us)
{
    if (!h->backends || backend >= h->n_backends)
        return;
    uint64_t epoch = now_ms / HEDGE_WINDOW_MS;
    hedge_window_t *w = &h->backends[backend].win[epoch % HEDGE_WINDOWS];
    if (w->epoch != epoch) {
        memset(w->slots, 0, sizeof w->slots);
        w->n = 0;
        w->epoch = epoch;
    }
    w->n++;
    w->slots[hedge_slot(latency_us)]++;
    if (!h->backends[backend].delay_ms)
        h->backends[backend].computed_s = 0; /* nothing known yet: look again at once */
}

/* The percentile of the windows of the last minute, in ms; 0 with too few
 * samples. */
static uint64_t learned_ms(const hedge_backend_t *b, uint32_t percentile, uint64_t epoch)
{
    uint64_t n = 0;
    bool live[HEDGE_WINDOWS];
    for (size_t i = 0; i < HEDGE_WINDOWS; i++) {
        const hedge_window_t *w = &b->win[i];
        live[i] = w->n && w->epoch + HEDGE_WINDOWS > epoch && w->epoch <= epoch;
        n += live[i] ? w->n : 0;
    }
    if (n < HEDGE_MIN_SAMPLES)
        return 0;
    uint64_t rank = (n * percentile + 99) / 100, seen = 0;
    for (size_t s = 0; s < HEDGE_SLOTS; s++) {
        for (size_t i = 0; i < HEDGE_WINDOWS; i++)
            seen += live[i] ? b->win[i].slots[s] : 0;
        if (seen >= rank) {
            uint64_t ms = (hedge_slot_upper_us(s) + 999) / 1000;
            return ms ? ms : 1;
        }
    }
    return (hedge_slot_upper_us(HEDGE_SLOTS - 1) + 999) / 1000;
}

uint64_t hedge_delay_ms(hedge_t *h, size_t backend, uint64_t now_ms)
{
    if (!h->cfg.after_percentile)
        return h->cfg.after_ms;
    if (!h->backends || backend >= h->n_backends)
        return 0;
    hedge_backend_t *b = &h->backends[backend];
    uint64_t second = now_ms / 1000 + 1;
    if (b->computed_s != second) {
        b->delay_ms = learned_ms(b, h->cfg.after_percentile, now_ms / HEDGE_WINDOW_MS);
        b->computed_s = second;
    }
    return b->delay_ms;
}
