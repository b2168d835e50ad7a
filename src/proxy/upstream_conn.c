/* Upstream connections and their pools; see upstream_conn.h. */
#include "proxy/upstream_conn.h"

#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "core/log.h"
#include "proxy/h2_upstream.h"

static inline upstream_conn_t *uc_of(stream_t *s) { return (upstream_conn_t *)s; }

static void uc_on_handle_closed(upstream_conn_t *uc)
{
    if (--uc->n_handles)
        return;
    upstream_group_t *g = uc->pool->group;
    free(uc);
    g->hold(g->hold_ctx, -1);
}

static void uc_on_timer_closed(uv_handle_t *h) { uc_on_handle_closed(h->data); }
static void uc_on_close(stream_t *s) { uc_on_handle_closed(uc_of(s)); }

static void uc_on_timer(uv_timer_t *t);

/* Moves the state and arms the timer for it. */
static void set_state(upstream_conn_t *uc, uc_state_t st)
{
    const config_target_group_t *tg = uc->pool->group->tg;
    uc->state = st;
    switch (st) {
    case UC_CONNECTING:
        uv_timer_start(&uc->timer, uc_on_timer, tg->connect_timeout_ms, 0);
        break;
    case UC_IDLE:
        uv_timer_start(&uc->timer, uc_on_timer, tg->keepalive_idle_timeout_ms, 0);
        break;
    case UC_BUSY:
    case UC_CLOSING:
        uv_timer_stop(&uc->timer);
        break;
    }
}

static void idle_unlink(upstream_conn_t *uc)
{
    upstream_pool_t *pool = uc->pool;
    if (uc->state != UC_IDLE)
        return;
    if (uc->prev_idle)
        uc->prev_idle->next_idle = uc->next_idle;
    else
        pool->idle = uc->next_idle;
    if (uc->next_idle)
        uc->next_idle->prev_idle = uc->prev_idle;
    uc->next_idle = uc->prev_idle = NULL;
    pool->n_idle--;
}

static void uc_close(upstream_conn_t *uc)
{
    if (uc->state == UC_CLOSING)
        return;
    idle_unlink(uc);
    set_state(uc, UC_CLOSING);
    uc->pool->n_open--;
    if (uc->counted)
        health_release(&uc->pool->group->hg->connections);
    uc->owner = NULL;
    if (uc->in) {
        pbuf_put(uc->pool->group->env->pool, uc->in);
        uc->in = NULL;
    }
    h2_upstream_free(uc->h2);
    uc->h2 = NULL;
    uv_close((uv_handle_t *)&uc->timer, uc_on_timer_closed);
    stream_close(&uc->s, !uc->ever_connected);
}

static void uc_on_alloc(stream_t *s, uv_buf_t *buf)
{
    *buf = uv_buf_init(uc_of(s)->pool->group->env->rbuf, IO_BUF_BYTES);
}

static void uc_on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    upstream_conn_t *uc = uc_of(s);
    if (uc->h2 && n > 0) {
        /* Frames: for the stream under way, or the session's own (PING,
         * SETTINGS, GOAWAY) while idle. */
        if (h2_upstream_feed(uc->h2, buf->base, (size_t)n) != 0 && !uc->owner)
            uc_close(uc);
        return;
    }
    if (!uc->owner) {
        /* Idle: the target closed it, or sent bytes nobody asked for. */
        uc_close(uc);
        return;
    }
    if (n < 0)
        uc->ops->on_eof(uc->owner, (int)n);
    else
        uc->ops->on_data(uc->owner, buf->base, (size_t)n);
}

static void uc_on_drain(stream_t *s, int status)
{
    upstream_conn_t *uc = uc_of(s);
    if (uc->h2 && status == 0) {
        h2_upstream_on_drain(uc->h2); /* more frames; drained comes from the session */
        return;
    }
    if (uc->owner)
        uc->ops->on_drained(uc->owner, status);
    else if (status < 0)
        uc_close(uc);
}

/* --- the HTTP/2 session's side --- */

static int h2_send(void *ctx, const uv_buf_t *bufs, unsigned n)
{
    return stream_write(&((upstream_conn_t *)ctx)->s, bufs, n);
}
static bool h2_send_pending(void *ctx)
{
    return stream_write_pending(&((upstream_conn_t *)ctx)->s);
}
static void h2_deliver(void *ctx, const char *data, size_t len)
{
    upstream_conn_t *uc = ctx;
    if (uc->owner)
        uc->ops->on_data(uc->owner, data, len);
}
static void h2_drained(void *ctx)
{
    upstream_conn_t *uc = ctx;
    if (uc->owner)
        uc->ops->on_drained(uc->owner, 0);
}
static void h2_failed(void *ctx, int status)
{
    upstream_conn_t *uc = ctx;
    if (uc->owner)
        uc->ops->on_eof(uc->owner, status);
}

static const h2_upstream_io_t h2_io = {
    .send = h2_send,
    .send_pending = h2_send_pending,
    .deliver = h2_deliver,
    .drained = h2_drained,
    .failed = h2_failed,
};

static void uc_on_handshake(stream_t *s, int result);

static const stream_ops_t upstream_ops = {
    .on_alloc = uc_on_alloc,
    .on_read = uc_on_read,
    .on_drain = uc_on_drain,
    .on_close = uc_on_close,
    .on_handshake = uc_on_handshake,
};

/* Tells the owner the connection failed, after closing it. */
static void uc_fail(upstream_conn_t *uc, int status)
{
    void *owner = uc->owner;
    const upstream_conn_ops_t *ops = uc->ops;
    uc_close(uc);
    if (owner)
        ops->on_connected(owner, status);
}

/* Connected (and the TLS handshake done): the owner may write. */
static void uc_ready(upstream_conn_t *uc)
{
    upstream_group_t *g = uc->pool->group;
    if (g->tg->h2) {
        uc->h2 = h2_upstream_new(g->env->pool, &h2_io, uc, g->tls != NULL);
        if (!uc->h2) {
            uc_fail(uc, UV_ENOMEM);
            return;
        }
    }
    set_state(uc, UC_BUSY);
    if (uc->owner)
        uc->ops->on_connected(uc->owner, 0);
    else
        upstream_conn_release(uc, true);
}

static void uc_on_handshake(stream_t *s, int result)
{
    upstream_conn_t *uc = uc_of(s);
    if (uc->state != UC_CONNECTING)
        return;
    if (result == TLS_HS_OK || result == TLS_HS_RESUMED) {
        size_t n = 0;
        const char *alpn = s->tls ? tls_conn_alpn(s->tls, &n) : NULL;
        if (uc->pool->group->tg->h2 && !(alpn && n == 2 && memcmp(alpn, "h2", 2) == 0)) {
            log_limited(LOG_WARN, "target group %s: %s did not agree to h2 by ALPN",
                        uc->pool->group->tg->name,
                        uc->pool->group->tg->targets[uc->pool->target].name);
            uc_fail(uc, UV_EPROTO);
            return;
        }
        uc_ready(uc);
        return;
    }
    const config_target_group_t *tg = uc->pool->group->tg;
    const char *why = s->tls ? tls_conn_verify_error(s->tls) : NULL;
    log_limited(LOG_WARN, "target group %s: TLS to %s failed: %s", tg->name,
                tg->targets[uc->pool->target].name,
                why ? why : tls_hs_result_name((tls_hs_result_t)result));
    uc_fail(uc, UV_EPROTO);
}

/* TLS to the target: the ClientHello goes out; uc_on_handshake goes on.
 * The name sent and checked is tls.sni, else the target's host name (an
 * IP address is checked, not sent). */
static int uc_start_tls(upstream_conn_t *uc)
{
    upstream_pool_t *pool = uc->pool;
    const config_target_group_t *tg = pool->group->tg;
    const config_target_t *t = &tg->targets[pool->target];
    const char *name = tg->tls.sni ? tg->tls.sni : t->host;
    tls_conn_t *c = tls_conn_new_client(pool->group->tls, t->numeric && !tg->tls.sni ? NULL : name,
                                        name, &pool->tls_session);
    return stream_tls_client(&uc->s, c);
}

static void uc_on_timer(uv_timer_t *t)
{
    upstream_conn_t *uc = t->data;
    if (uc->state == UC_CONNECTING && uc->owner)
        uc_fail(uc, UV_ETIMEDOUT);
    else
        uc_close(uc); /* idle timeout */
}

static void uc_on_connect(uv_connect_t *creq, int status)
{
    upstream_conn_t *uc = creq->data;
    if (uc->state == UC_CLOSING)
        return;
    if (status < 0) {
        uc_fail(uc, status);
        return;
    }
    uc->ever_connected = 1;
    if (stream_read_start(&uc->s) != 0) {
        uc_fail(uc, UV_ECONNRESET);
        return;
    }
    if (uc->pool->group->tls) {
        /* Still connecting (connect_timeout) until the handshake ends. */
        if (uc_start_tls(uc) != 0)
            uc_fail(uc, UV_EPROTO);
        return;
    }
    uc_ready(uc);
}

int upstream_group_init(upstream_group_t *g, upstream_env_t *env, const config_target_group_t *tg,
                        health_group_t *hg, void (*hold)(void *ctx, int delta), void *hold_ctx)
{
    memset(g, 0, sizeof *g);
    g->env = env;
    g->tg = tg;
    g->hg = hg;
    g->hold = hold;
    g->hold_ctx = hold_ctx;
    g->pools = calloc(tg->n_targets ? tg->n_targets : 1, sizeof *g->pools);
    if (!g->pools)
        return FE_NOMEM;
    for (size_t t = 0; t < tg->n_targets; t++) {
        g->pools[t].group = g;
        g->pools[t].target = (uint32_t)t;
    }
    return 0;
}

void upstream_group_deinit(upstream_group_t *g)
{
    for (size_t t = 0; g->pools && t < g->tg->n_targets; t++)
        tls_session_slot_clear(&g->pools[t].tls_session);
    free(g->pools);
    g->pools = NULL;
}

void upstream_group_close_idle(upstream_group_t *g)
{
    for (size_t t = 0; g->pools && t < g->tg->n_targets; t++)
        while (g->pools[t].idle)
            uc_close(g->pools[t].idle);
}

void upstream_group_retire(upstream_group_t *g)
{
    g->retired = true;
    upstream_group_close_idle(g);
}

upstream_conn_t *upstream_conn_acquire(upstream_pool_t *pool, const upstream_conn_ops_t *ops,
                                       void *owner, int *err)
{
    upstream_group_t *g = pool->group;
    upstream_conn_t *uc = pool->idle;
    *err = 0;
    if (uc) {
        idle_unlink(uc);
        set_state(uc, UC_BUSY);
        uc->ops = ops;
        uc->owner = owner;
        uc->reused = 1;
        uc->paused = 0;
        http_parser_init_response(&uc->parser);
        if (uc->h2)
            h2_upstream_begin(uc->h2, false);
        return uc;
    }
    const config_target_group_t *tg = g->tg;
    health_group_t *hg = g->hg;
    /* Read once: the address may be re-resolved meanwhile; libuv copies it. */
    const health_addr_t *addr = atomic_load(&hg->targets[pool->target].addr);
    if (!addr) {
        *err = FE_NOTFOUND; /* a name that did not resolve */
        return NULL;
    }
    if (!health_acquire(&hg->connections, tg->max_connections)) {
        /* This worker's idle connections to other targets of the group hold
         * slots: give them back and try once more. */
        bool freed = false;
        for (size_t t = 0; t < tg->n_targets; t++)
            while (g->pools[t].idle) {
                uc_close(g->pools[t].idle);
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
    uc->pool = pool;
    uc->ops = ops;
    uc->owner = owner;
    http_parser_init_response(&uc->parser);
    if (stream_init(g->env->loop, &uc->s, &upstream_ops, g->env->pool) != 0) {
        health_release(&hg->connections);
        free(uc);
        *err = FE_IO;
        return NULL;
    }
    g->hold(g->hold_ctx, +1);
    uv_timer_init(g->env->loop, &uc->timer);
    uc->timer.data = uc;
    uc->n_handles = 2;
    uc->creq.data = uc;
    uc->state = UC_CONNECTING;
    pool->n_open++;
    int rc = stream_connect(&uc->s, &uc->creq, (const struct sockaddr *)&addr->ss, uc_on_connect);
    if (rc != 0) {
        uc->owner = NULL;
        uc_close(uc);
        *err = rc;
        return NULL;
    }
    set_state(uc, UC_CONNECTING);
    return uc;
}

void upstream_conn_release(upstream_conn_t *uc, bool reusable)
{
    upstream_pool_t *pool = uc->pool;
    upstream_group_t *g = pool->group;
    const config_target_group_t *tg = g->tg;
    uc->owner = NULL;
    if (uc->in) {
        pbuf_put(g->env->pool, uc->in);
        uc->in = NULL;
    }
    /* At the group's connection limit an idle connection would hold a slot
     * another worker may need: close it instead of pooling it. A connection
     * of a replaced generation is not pooled either. */
    bool at_limit =
        atomic_load_explicit(&g->hg->connections, memory_order_relaxed) >= tg->max_connections;
    if (uc->h2 && !h2_upstream_reusable(uc->h2))
        reusable = false; /* a stream under way, a GOAWAY, an error */
    if (!reusable || uc->state != UC_BUSY || g->env->draining || at_limit || g->retired ||
        pool->n_idle >= tg->keepalive_max_idle || (!uc->h2 && stream_write_pending(&uc->s))) {
        uc_close(uc);
        return;
    }
    if (!uc->s.reading)
        stream_read_start(&uc->s);
    uc->paused = 0;
    if (uc->h2)
        h2_upstream_pause(uc->h2, false);
    uc->prev_idle = NULL;
    uc->next_idle = pool->idle;
    if (pool->idle)
        pool->idle->prev_idle = uc;
    pool->idle = uc;
    pool->n_idle++;
    set_state(uc, UC_IDLE);
}

int upstream_conn_write(upstream_conn_t *uc, const uv_buf_t *bufs, unsigned n)
{
    if (uc->h2)
        return h2_upstream_write(uc->h2, bufs, n);
    return stream_write(&uc->s, bufs, n);
}

void upstream_conn_pause(upstream_conn_t *uc)
{
    uc->paused = 1;
    stream_read_stop(&uc->s);
    if (uc->h2)
        h2_upstream_pause(uc->h2, true);
}

void upstream_conn_resume(upstream_conn_t *uc)
{
    if (uc->state == UC_CLOSING)
        return;
    uc->paused = 0;
    stream_read_start(&uc->s);
    if (uc->h2)
        h2_upstream_pause(uc->h2, false); /* what was read already goes first */
}
