/* JWKS reads; see jwks_refresh.h. Reads run in the thread pool; a new set
 * is swapped in on the main loop, where retiring the old one through the
 * workers is allowed. */
#include "app/jwks_refresh.h"

#include <stdlib.h>
#include <string.h>

#include "client/fetch.h"
#include "core/buf.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/file.h"
#include "core/log.h"
#include "core/time.h"

typedef struct jwks_entry {
    uv_timer_t timer;
    uv_work_t work;
    jwks_refresh_t *owner;
    size_t index;
    jwks_t *fetched; /* the work's result */
    bool busy;
    bool timer_open;
    char err[512];
} jwks_entry_t;

struct jwks_refresh {
    const config_t *cfg;
    worker_group_t *workers;
    uv_loop_t *loop;
    jwks_slot_t *slots;
    jwks_entry_t *entries;
    uv_async_t asked; /* a worker wants a read now */
    uv_mutex_t lock;  /* guards sending on `asked` against its close */
    bool async_open;
    bool stopped;
    unsigned pending;
    void (*wake)(void *ctx);
    void *wake_ctx;
};

/* A provider's keys, read (blocking). NULL with err. */
static jwks_t *read_keys(const config_jwt_provider_t *p, char *err, size_t errlen)
{
    buf_t b;
    buf_init(&b, JWKS_MAX_BYTES + 1);
    char why[256] = "";
    int rc = p->jwks_file ? file_read(p->jwks_file, JWKS_MAX_BYTES, &b, why, sizeof why)
                          : fetch_get(p->jwks_url, JWKS_FETCH_HEAD_BYTES, JWKS_MAX_BYTES,
                                      JWKS_FETCH_TIMEOUT_MS, &b, why, sizeof why);
    jwks_t *k = NULL;
    if (rc == 0) {
        k = jwks_parse(b.data ? b.data : "", b.len, why, sizeof why);
        if (k && jwks_count(k) == 0) {
            snprintf(why, sizeof why, "no usable key (%zu skipped)", jwks_skipped(k));
            jwks_unref(k);
            k = NULL;
        }
    }
    buf_deinit(&b);
    if (!k)
        snprintf(err, errlen, "jwt_providers.%s: %s: %s", p->name,
                 p->jwks_file ? p->jwks_file : p->jwks_url, why);
    return k;
}

int jwks_refresh_check_file(const config_jwt_provider_t *p, char *err, size_t errlen)
{
    jwks_t *k = read_keys(p, err, errlen);
    if (!k)
        return FE_INVAL;
    /* A key it skipped: worth a warning, not a failure. */
    if (jwks_skipped(k))
        snprintf(err, errlen, "jwt_providers.%s: %s: %zu key%s skipped, %zu usable", p->name,
                 p->jwks_file, jwks_skipped(k), jwks_skipped(k) == 1 ? "" : "s", jwks_count(k));
    else if (errlen)
        err[0] = '\0';
    jwks_unref(k);
    return 0;
}

static void unref_keys(void *k) { jwks_unref(k); }

static bool want(void *ctx, jwks_slot_t *slot, uint64_t now_ms);

/* Main thread: keys become the provider's; the old set is retired. */
static void install(jwks_refresh_t *r, size_t i, jwks_t *keys)
{
    jwks_t *old = atomic_exchange(&r->slots[i].keys, keys);
    if (old)
        worker_group_retire(r->workers, old, unref_keys);
}

static bool same_source(const config_jwt_provider_t *a, const config_jwt_provider_t *b)
{
    if (strcmp(a->name, b->name) != 0)
        return false;
    if (a->jwks_file)
        return b->jwks_file && strcmp(a->jwks_file, b->jwks_file) == 0;
    return b->jwks_url && strcmp(a->jwks_url, b->jwks_url) == 0;
}

jwks_refresh_t *jwks_refresh_new(const config_t *cfg, worker_group_t *workers)
{
    jwks_refresh_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = cfg;
    r->workers = workers;
    if (uv_mutex_init(&r->lock) != 0) {
        free(r);
        return NULL;
    }
    size_t n = cfg->n_jwt_providers;
    if (n == 0)
        return r;
    r->slots = calloc(n, sizeof *r->slots);
    r->entries = calloc(n, sizeof *r->entries);
    if (!r->slots || !r->entries) {
        jwks_refresh_free(r);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const config_jwt_provider_t *p = &cfg->jwt_providers[i];
        char err[512];
        jwks_t *k = read_keys(p, err, sizeof err);
        if (!k)
            snprintf(r->entries[i].err, sizeof r->entries[i].err, "%s", err);
        atomic_init(&r->slots[i].keys, k);
        r->slots[i].want = want;
        r->slots[i].want_ctx = r;
        r->entries[i].owner = r;
        r->entries[i].index = i;
    }
    return r;
}

jwks_slot_t *jwks_refresh_slots(jwks_refresh_t *r) { return r->slots; }

static void work_read(uv_work_t *w)
{
    jwks_entry_t *e = w->data;
    e->fetched = read_keys(&e->owner->cfg->jwt_providers[e->index], e->err, sizeof e->err);
}

static void work_done(uv_work_t *w, int status)
{
    jwks_entry_t *e = w->data;
    jwks_refresh_t *r = e->owner;
    jwks_slot_t *slot = &r->slots[e->index];
    e->busy = false;
    r->pending--;
    if (r->stopped) {
        /* A retired configuration: its keys stay as they were, but requests
         * that waited for this read look again (and give up). */
        jwks_unref(e->fetched);
        e->fetched = NULL;
    } else if (e->fetched) {
        jwks_t *cur = atomic_load(&slot->keys);
        if (!cur || jwks_count(cur) != jwks_count(e->fetched))
            log_info("jwt_providers.%s: %zu keys", r->cfg->jwt_providers[e->index].name,
                     jwks_count(e->fetched));
        install(r, e->index, e->fetched);
        e->fetched = NULL;
    } else if (status == 0) {
        log_limited(LOG_ERROR, "%s (keeping the keys there were)", e->err);
    }
    atomic_store(&slot->next_ms, time_now_ms() + JWKS_REFETCH_MIN_MS);
    atomic_store(&slot->wanted, false);
    atomic_fetch_add(&slot->seq, 1);
    if (r->wake)
        r->wake(r->wake_ctx);
}

static void start_read(jwks_entry_t *e)
{
    jwks_refresh_t *r = e->owner;
    if (e->busy || r->stopped)
        return;
    e->busy = true;
    e->work.data = e;
    if (uv_queue_work(r->loop, &e->work, work_read, work_done) == 0) {
        r->pending++;
        return;
    }
    e->busy = false;
    atomic_store(&r->slots[e->index].wanted, false);
    atomic_fetch_add(&r->slots[e->index].seq, 1);
}

static void on_timer(uv_timer_t *t) { start_read(t->data); }

static void on_asked(uv_async_t *a)
{
    jwks_refresh_t *r = a->data;
    for (size_t i = 0; i < r->cfg->n_jwt_providers; i++)
        if (atomic_load(&r->slots[i].wanted))
            start_read(&r->entries[i]);
}

/* The first read of provider i failed: old's keys of the same provider,
 * when it had some. */
static void adopt(jwks_refresh_t *r, size_t i, const jwks_refresh_t *old)
{
    const config_jwt_provider_t *p = &r->cfg->jwt_providers[i];
    for (size_t o = 0; old && o < old->cfg->n_jwt_providers; o++) {
        jwks_t *ok = atomic_load(&old->slots[o].keys);
        if (!ok || !same_source(p, &old->cfg->jwt_providers[o]))
            continue;
        atomic_store(&r->slots[i].keys, jwks_ref(ok));
        log_warn("%s (keeping the %zu keys it had)", r->entries[i].err, jwks_count(ok));
        return;
    }
    log_error("%s (no keys: its tokens are refused until a read succeeds)", r->entries[i].err);
}

int jwks_refresh_start(jwks_refresh_t *r, uv_loop_t *loop, const jwks_refresh_t *old,
                       void (*wake)(void *ctx), void *ctx)
{
    for (size_t i = 0; i < r->cfg->n_jwt_providers; i++) {
        jwks_t *k = atomic_load(&r->slots[i].keys);
        if (!k)
            adopt(r, i, old);
        else
            log_info("jwt_providers.%s: %zu keys", r->cfg->jwt_providers[i].name, jwks_count(k));
    }
    r->loop = loop;
    r->wake = wake;
    r->wake_ctx = ctx;
    if (r->cfg->n_jwt_providers == 0)
        return 0;
    if (uv_async_init(loop, &r->asked, on_asked) != 0)
        return FE_NOMEM;
    r->asked.data = r;
    r->async_open = true;
    for (size_t i = 0; i < r->cfg->n_jwt_providers; i++) {
        const config_jwt_provider_t *p = &r->cfg->jwt_providers[i];
        if (!p->jwks_url)
            continue;
        jwks_entry_t *e = &r->entries[i];
        uv_timer_init(loop, &e->timer);
        e->timer.data = e;
        e->timer_open = true;
        uv_timer_start(&e->timer, on_timer, p->jwks_refresh_ms, p->jwks_refresh_ms);
    }
    return 0;
}

static bool want(void *ctx, jwks_slot_t *slot, uint64_t now_ms)
{
    jwks_refresh_t *r = ctx;
    size_t i = (size_t)(slot - r->slots);
    if (!r->cfg->jwt_providers[i].jwks_url)
        return false;
    if (atomic_load(&slot->wanted))
        return true;
    if (now_ms < atomic_load(&slot->next_ms))
        return false;
    if (atomic_exchange(&slot->wanted, true))
        return true;
    bool sent = false;
    uv_mutex_lock(&r->lock);
    if (r->async_open && !r->stopped)
        sent = uv_async_send(&r->asked) == 0;
    uv_mutex_unlock(&r->lock);
    if (!sent)
        atomic_store(&slot->wanted, false);
    return sent;
}

static void on_closed(uv_handle_t *h)
{
    jwks_refresh_t *r = h->data;
    r->pending--;
}

void jwks_refresh_stop(jwks_refresh_t *r)
{
    uv_mutex_lock(&r->lock);
    r->stopped = true;
    bool async_open = r->async_open;
    r->async_open = false;
    uv_mutex_unlock(&r->lock);
    if (async_open) {
        r->pending++;
        uv_close((uv_handle_t *)&r->asked, on_closed);
    }
    for (size_t i = 0; r->entries && i < r->cfg->n_jwt_providers; i++) {
        jwks_entry_t *e = &r->entries[i];
        if (e->busy)
            uv_cancel((uv_req_t *)&e->work);
        if (e->timer_open) {
            e->timer_open = false;
            e->timer.data = r;
            r->pending++;
            uv_close((uv_handle_t *)&e->timer, on_closed);
        }
    }
}

unsigned jwks_refresh_pending(const jwks_refresh_t *r) { return r->pending; }

void jwks_refresh_free(jwks_refresh_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->slots && i < r->cfg->n_jwt_providers; i++)
        jwks_unref(atomic_load(&r->slots[i].keys));
    free(r->slots);
    free(r->entries);
    uv_mutex_destroy(&r->lock);
    free(r);
}
