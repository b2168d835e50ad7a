/* Graceful shutdown; see drain.h. Workers report "drained" from their own
 * threads through an atomic count and an async wake-up. */
#include "app/drain.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "core/defaults.h"
#include "core/log.h"
#include "proxy/proxy.h"

struct drain {
    uv_loop_t *loop;
    worker_group_t *workers;
    void (*on_done)(void *ctx);
    void *ctx;
    uv_timer_t timer; /* drain_delay, then drain_timeout */
    uv_async_t drained;
    atomic_int n_drained;
    uint64_t timeout_ms;
    bool active;
    bool closed;
};

static void on_worker_drained(void *ctx)
{
    drain_t *d = ctx; /* a worker thread: only atomics and async here */
    atomic_fetch_add(&d->n_drained, 1);
    uv_async_send(&d->drained);
}

static void on_drained_async(uv_async_t *a)
{
    drain_t *d = a->data;
    if (d->active && (size_t)atomic_load(&d->n_drained) == d->workers->n) {
        log_info("drained: every connection closed");
        d->on_done(d->ctx);
    }
}

static void worker_begin_drain(worker_t *w, void *arg)
{
    proxy_worker_t *pw = w->app;
    worker_close_listeners(w);
    pw->on_drained = on_worker_drained;
    pw->drained_ctx = arg;
    proxy_worker_drain(pw, 0);
}

/* After a takeover: the listeners live on in the new process. */
static void worker_begin_handover_drain(worker_t *w, void *arg)
{
    proxy_worker_t *pw = w->app;
    worker_close_listeners(w);
    pw->on_drained = on_worker_drained;
    pw->drained_ctx = arg;
    proxy_worker_drain(pw, TAKEOVER_IDLE_GRACE_MS);
}

static void on_drain_timeout(uv_timer_t *t)
{
    drain_t *d = t->data;
    log_warn("drain_timeout reached with connections still open: closing them");
    d->on_done(d->ctx);
}

static void on_drain_delay(uv_timer_t *t)
{
    drain_t *d = t->data;
    log_info("closing listeners; in-flight requests get up to %llu ms",
             (unsigned long long)d->timeout_ms);
    for (size_t i = 0; i < d->workers->n; i++)
        worker_post(&d->workers->workers[i], worker_begin_drain, d);
    uv_timer_start(&d->timer, on_drain_timeout, d->timeout_ms, 0);
}

drain_t *drain_new(uv_loop_t *loop, worker_group_t *workers, void (*on_done)(void *ctx), void *ctx)
{
    drain_t *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    *d = (drain_t){.loop = loop, .workers = workers, .on_done = on_done, .ctx = ctx};
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_async_init(loop, &d->drained, on_drained_async);
    d->drained.data = d;
    atomic_init(&d->n_drained, 0);
    return d;
}

void drain_begin(drain_t *d, uint64_t delay_ms, uint64_t timeout_ms)
{
    if (d->active) {
        log_info("second signal: stopping now");
        d->on_done(d->ctx);
        return;
    }
    d->active = true;
    d->timeout_ms = timeout_ms;
    log_info("draining: /readyz answers 503; serving for %llu ms more",
             (unsigned long long)delay_ms);
    uv_timer_start(&d->timer, on_drain_delay, delay_ms, 0);
}

void drain_handover(drain_t *d, uint64_t timeout_ms)
{
    d->active = true;
    d->timeout_ms = timeout_ms;
    uv_timer_stop(&d->timer);
    for (size_t i = 0; i < d->workers->n; i++)
        worker_post(&d->workers->workers[i], worker_begin_handover_drain, d);
    uv_timer_start(&d->timer, on_drain_timeout, timeout_ms, 0);
}

bool drain_active(const drain_t *d) { return d->active; }

void drain_close(drain_t *d)
{
    if (!d || d->closed)
        return;
    d->closed = true;
    uv_close((uv_handle_t *)&d->timer, NULL);
    uv_close((uv_handle_t *)&d->drained, NULL);
}

void drain_free(drain_t *d) { free(d); }
