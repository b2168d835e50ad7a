/* Upstream connections and their per-worker, per-target keep-alive pools.
 * A connection is bound to one request at a time; when the response ends
 * cleanly it goes back to its pool (LIFO, bounded by keepalive.max_idle and
 * idle_timeout) and keeps reading, so a close by the target is noticed while
 * it is idle rather than when the next request is written to it. */
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "proxy/proxy.h"

static inline upstream_conn_t *uc_of(stream_t *s) { return (upstream_conn_t *)s; }

static void uc_on_handle_closed(upstream_conn_t *uc)
{
    if (--uc->n_handles)
        return;
    proxy_gen_unref(uc->gen);
    free(uc);
}

static void uc_on_timer_closed(uv_handle_t *h) { uc_on_handle_closed(h->data); }
static void uc_on_close(stream_t *s) { uc_on_handle_closed(uc_of(s)); }

static void idle_unlink(upstream_conn_t *uc)
{
    upstream_pool_t *pool = uc->pool;
    if (!uc->idle)
        return;
    if (uc->prev_idle)
        uc->prev_idle->next_idle = uc->next_idle;
    else
        pool->idle = uc->next_idle;
    if (uc->next_idle)
        uc->next_idle->prev_idle = uc->prev_idle;
    uc->next_idle = uc->prev_idle = NULL;
    uc->idle = 0;
    pool->n_idle--;
}

static void uc_close(upstream_conn_t *uc)
{
    if (uc->closing)
        return;
    uc->closing = 1;
    idle_unlink(uc);
    uc->pool->n_open--;
    if (uc->counted)
        health_release(&uc->gen->health->groups[uc->group].connections);
    uc->req = NULL;
    uv_timer_stop(&uc->timer);
    uv_close((uv_handle_t *)&uc->timer, uc_on_timer_closed);
    stream_close(&uc->s, !uc->connected);
}

static void uc_on_alloc(stream_t *s, uv_buf_t *buf)
{
    *buf = uv_buf_init(uc_of(s)->pw->w->rbuf, IO_BUF_BYTES);
}

static void uc_on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    upstream_conn_t *uc = uc_of(s);
    request_t *req = uc->req;
    if (!req) {
        /* Idle: the target closed it, or sent bytes nobody asked for. */
        uc_close(uc);
        return;
    }
    if (n < 0)
        proxy_upstream_eof(req, (int)n);
    else
        proxy_upstream_data(req, buf->base, (size_t)n);
}

static void uc_on_drain(stream_t *s, int status)
{
    upstream_conn_t *uc = uc_of(s);
    if (uc->req)
        proxy_upstream_drained(uc->req, status);
    else if (status < 0)
        uc_close(uc);
}

static const stream_ops_t upstream_ops = {
    .on_alloc = uc_on_alloc,
    .on_read = uc_on_read,
    .on_drain = uc_on_drain,
    .on_close = uc_on_close,
};

static void uc_on_timer(uv_timer_t *t)
{
    upstream_conn_t *uc = t->data;
    request_t *req = uc->req;
    if (uc->connected || !req) {
        uc_close(uc); /* idle timeout */
        return;
    }
    uc_close(uc);
    proxy_upstream_connected(req, UV_ETIMEDOUT);
}

static void uc_on_connect(uv_connect_t *creq, int status)
{
    upstream_conn_t *uc = creq->data;
    if (uc->closing)
        return;
    uv_timer_stop(&uc->timer);
    request_t *req = uc->req;
    if (status < 0) {
        uc_close(uc);
        if (req)
            proxy_upstream_connected(req, status);
        return;
    }
    uc->connected = 1;
    if (stream_read_start(&uc->s) != 0) {
        uc_close(uc);
        if (req)
            proxy_upstream_connected(req, UV_ECONNRESET);
        return;
    }
    if (req)
        proxy_upstream_connected(req, 0);
    else
        upstream_release(uc, true);
}

upstream_conn_t *upstream_acquire(proxy_worker_t *pw, uint32_t group, uint32_t target,
                                  request_t *req, int *err)
{
    proxy_gen_t *gen = req->gen;
    proxy_group_state_t *gs = &gen->groups[group];
    upstream_pool_t *pool = &gs->pools[target];
    upstream_conn_t *uc = pool->idle;
    *err = 0;
    if (uc) {
        idle_unlink(uc);
        uv_timer_stop(&uc->timer);
        uc->req = req;
        uc->reused = 1;
        http_parser_init_response(&uc->parser);
        return uc;
    }
    const config_target_group_t *tg = &gen->cfg->target_groups[group];
    health_group_t *hg = &gen->health->groups[group];
    /* Read once: the address may be re-resolved meanwhile; libuv copies it. */
    const health_addr_t *addr = atomic_load(&hg->targets[target].addr);
    if (!addr) {
        *err = FE_NOTFOUND; /* a name that did not resolve */
        return NULL;
    }
    if (!health_acquire(&hg->connections, tg->max_connections)) {
        /* This worker's idle connections to other targets of the group hold
         * slots: give them back and try once more. */
        bool freed = false;
        for (size_t t = 0; t < tg->n_targets; t++)
            while (gs->pools[t].idle) {
                uc_close(gs->pools[t].idle);
                freed = true;
            }
        if (!freed || !health_acquire(&hg->connections, tg->max_connections)) {
            *err = FE_TOOBIG; /* circuit breaker: max_connections */
            return NULL;
        }
    }
    uc = calloc(1, sizeof *uc);
    if (!uc) {
        health_release(&hg->connections);
        *err = FE_NOMEM;
        return NULL;
    }
    uc->counted = 1;
    uc->pw = pw;
    uc->gen = proxy_gen_ref(gen);
    uc->pool = pool;
    uc->group = group;
    uc->target = target;
    uc->req = req;
    http_parser_init_response(&uc->parser);
    if (stream_init(pw->loop, &uc->s, &upstream_ops, &pw->w->pool) != 0) {
        health_release(&hg->connections);
        proxy_gen_unref(gen);
        free(uc);
        *err = FE_IO;
        return NULL;
    }
    uv_timer_init(pw->loop, &uc->timer);
    uc->timer.data = uc;
    uc->n_handles = 2;
    uc->creq.data = uc;
    pool->n_open++;
    int rc = stream_connect(&uc->s, &uc->creq, (const struct sockaddr *)&addr->ss, uc_on_connect);
    if (rc != 0) {
        uc->req = NULL;
        uc_close(uc);
        *err = rc;
        return NULL;
    }
    uv_timer_start(&uc->timer, uc_on_timer, tg->connect_timeout_ms, 0);
    return uc;
}

void upstream_release(upstream_conn_t *uc, bool reusable)
{
    proxy_worker_t *pw = uc->pw;
    upstream_pool_t *pool = uc->pool;
    const config_target_group_t *tg = &uc->gen->cfg->target_groups[uc->group];
    uc->req = NULL;
    /* At the group's connection limit an idle connection would hold a slot
     * another worker may need: close it instead of pooling it. A connection
     * of a replaced generation is not pooled either. */
    bool at_limit = atomic_load_explicit(&uc->gen->health->groups[uc->group].connections,
                                         memory_order_relaxed) >= tg->max_connections;
    if (!reusable || uc->closing || !uc->connected || pw->draining || at_limit ||
        uc->gen != pw->gen || pool->n_idle >= tg->keepalive_max_idle ||
        stream_write_pending(&uc->s)) {
        uc_close(uc);
        return;
    }
    if (!uc->s.reading)
        stream_read_start(&uc->s);
    uc->idle = 1;
    uc->prev_idle = NULL;
    uc->next_idle = pool->idle;
    if (pool->idle)
        pool->idle->prev_idle = uc;
    pool->idle = uc;
    pool->n_idle++;
    uv_timer_start(&uc->timer, uc_on_timer, tg->keepalive_idle_timeout_ms, 0);
}

int upstream_write(upstream_conn_t *uc, const uv_buf_t *bufs, unsigned n)
{
    return stream_write(&uc->s, bufs, n);
}

void upstream_pause(upstream_conn_t *uc) { stream_read_stop(&uc->s); }

void upstream_resume(upstream_conn_t *uc)
{
    if (!uc->closing)
        stream_read_start(&uc->s);
}

void upstream_close_idle(proxy_gen_t *gen)
{
    for (size_t g = 0; g < gen->cfg->n_target_groups; g++) {
        proxy_group_state_t *gs = &gen->groups[g];
        for (size_t t = 0; t < gen->cfg->target_groups[g].n_targets; t++)
            while (gs->pools[t].idle)
                uc_close(gs->pools[t].idle);
    }
}

void upstream_close_all(proxy_worker_t *pw) { upstream_close_idle(pw->gen); }
