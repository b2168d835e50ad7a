/* Set refresh; see set_refresh.h. The members are read in the thread pool
 * and swapped in on the main loop, where the workers' readers are safe
 * (the old members are retired, not freed). */
#include "app/set_refresh.h"

#include <stdbool.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/time.h"

typedef struct set_entry {
    uv_timer_t timer;
    uv_work_t work;
    set_refresh_t *owner; /* set once the timer runs */
    size_t index;
    set_members_t *fetched;
    int busy;
    int rc;
    char err[256];
} set_entry_t;

struct set_refresh {
    const config_t *cfg;
    metrics_registry_t *metrics;
    worker_group_t *workers;
    uv_loop_t *loop;
    set_t **sets;
    set_entry_t *entries;
    bool *failed; /* the first read failed (counted at start) */
    unsigned pending;
    bool stopped;
};

/* A successful read: ficus_set_members and the last success time. */
static void set_loaded(set_refresh_t *s, size_t i)
{
    metrics_set_loaded(s->metrics, metrics_set_slot(s->metrics, s->cfg->sets[i].name),
                       set_count(s->sets[i]), time_now_realtime_ms());
}

static void set_work(uv_work_t *w)
{
    set_entry_t *e = w->data;
    e->rc = set_fetch(e->owner->sets[e->index], &e->fetched, e->err, sizeof e->err);
}

static void set_work_done(uv_work_t *w, int status)
{
    set_entry_t *e = w->data;
    set_refresh_t *s = e->owner;
    e->busy = 0;
    s->pending--;
    if (e->fetched) {
        if (!s->stopped) {
            set_t *set = s->sets[e->index];
            size_t added, removed;
            set_members_diff(set_current(set), e->fetched, &added, &removed);
            if (added || removed)
                log_info("set %s: %zu member%s (%zu added, %zu removed)", set_name(set),
                         set_members_count(e->fetched),
                         set_members_count(e->fetched) == 1 ? "" : "s", added, removed);
            set_swap(set, e->fetched);
            set_loaded(s, e->index);
        } else {
            set_members_free(e->fetched);
        }
        e->fetched = NULL;
    }
    if (status == 0 && e->rc != 0 && !s->stopped) {
        log_limited(LOG_ERROR, "%s (keeping %zu members)", e->err, set_count(s->sets[e->index]));
        metrics_set_reload_failure(s->metrics,
                                   metrics_set_slot(s->metrics, s->cfg->sets[e->index].name));
    }
}

static void on_set_timer(uv_timer_t *t)
{
    set_entry_t *e = t->data;
    set_refresh_t *s = e->owner;
    if (e->busy || s->stopped)
        return;
    e->busy = 1;
    e->work.data = e;
    if (uv_queue_work(s->loop, &e->work, set_work, set_work_done) == 0)
        s->pending++;
    else
        e->busy = 0;
}

set_refresh_t *set_refresh_new(const config_t *cfg, metrics_registry_t *metrics,
                               worker_group_t *workers)
{
    set_refresh_t *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    *s = (set_refresh_t){.cfg = cfg, .metrics = metrics, .workers = workers};
    if (!cfg->n_sets)
        return s;
    s->sets = calloc(cfg->n_sets, sizeof *s->sets);
    s->entries = calloc(cfg->n_sets, sizeof *s->entries);
    s->failed = calloc(cfg->n_sets, sizeof *s->failed);
    if (!s->sets || !s->entries || !s->failed)
        goto fail_free;
    for (size_t i = 0; i < cfg->n_sets; i++) {
        s->sets[i] = set_new(&cfg->sets[i], worker_group_retire_cb, workers);
        if (!s->sets[i])
            goto fail_free;
        char err[256];
        set_members_t *m;
        if (set_fetch(s->sets[i], &m, err, sizeof err) != 0) {
            log_error("%s (starting empty)", err);
            s->failed[i] = true;
        } else {
            set_swap(s->sets[i], m); /* no old members: nothing retired */
            set_loaded(s, i);
        }
    }
    return s;
fail_free:
    set_refresh_free(s);
    return NULL;
}

set_t **set_refresh_sets(set_refresh_t *s) { return s->sets; }

void set_refresh_start(set_refresh_t *s, uv_loop_t *loop, const set_refresh_t *old)
{
    const config_t *cfg = s->cfg;
    s->loop = loop;
    for (size_t i = 0; i < cfg->n_sets; i++) {
        if (s->failed[i]) {
            metrics_set_reload_failure(s->metrics, metrics_set_slot(s->metrics, cfg->sets[i].name));
            size_t o = old ? config_find_set(old->cfg, cfg->sets[i].name) : CONFIG_NONE;
            if (o != CONFIG_NONE && set_adopt(s->sets[i], old->sets[o]))
                log_warn("set %s: keeping the %zu members it had before the reload",
                         cfg->sets[i].name, set_count(s->sets[i]));
        } else
            log_info("set %s: %zu members", cfg->sets[i].name, set_count(s->sets[i]));
        set_entry_t *e = &s->entries[i];
        e->owner = s;
        e->index = i;
        uv_timer_init(loop, &e->timer);
        e->timer.data = e;
        uv_timer_start(&e->timer, on_set_timer, cfg->sets[i].refresh_ms, cfg->sets[i].refresh_ms);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    set_entry_t *e = h->data;
    e->owner->pending--;
}

void set_refresh_stop(set_refresh_t *s)
{
    s->stopped = true;
    for (size_t i = 0; s->entries && i < s->cfg->n_sets; i++) {
        set_entry_t *e = &s->entries[i];
        if (e->busy)
            uv_cancel((uv_req_t *)&e->work);
        if (e->owner && !uv_is_closing((uv_handle_t *)&e->timer)) {
            s->pending++;
            uv_close((uv_handle_t *)&e->timer, on_timer_closed);
        }
    }
}

unsigned set_refresh_pending(const set_refresh_t *s) { return s->pending; }

void set_refresh_free(set_refresh_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->sets && i < s->cfg->n_sets; i++)
        set_free(s->sets[i]);
    free(s->sets);
    free(s->entries);
    free(s->failed);
    free(s);
}
