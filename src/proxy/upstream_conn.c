/* Upstream connections and their pools; see upstream_conn.h. */
#include "proxy/upstream_conn.h"

#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "core/log.h"
#include "http/h2_upstream.h"

static inline upstream_link_t *link_of(stream_t *s) { return (upstream_link_t *)s; }

static void link_unref(upstream_link_t *l)
{
    if (--l->refs)
        return;
    upstream_group_t *g = l->pool->group;
    h2_upstream_free(l->h2);
    free(l);
    g->hold(g->hold_ctx, -1);
}

static void link_on_timer_closed(uv_handle_t *h) { link_unref(h->data); }
static void link_on_close(stream_t *s) { link_unref(link_of(s)); }

static void link_on_timer(uv_timer_t *t);

/* Moves the state and arms the timer for it. */
static void set_state(upstream_link_t *l, uc_state_t st)
{
    const config_target_group_t *tg = l->pool->group->tg;
    if (l->state == UC_IDLE && st != UC_IDLE)
        l->pool->n_idle--;
    else if (l->state != UC_IDLE && st == UC_IDLE)
        l->pool->n_idle++;
    l->state = st;
    switch (st) {
    case UC_CONNECTING:
        uv_timer_start(&l->timer, link_on_timer, tg->connect_timeout_ms, 0);
        break;
    case UC_IDLE:
        uv_timer_start(&l->timer, link_on_timer, tg->keepalive_idle_timeout_ms, 0);
        break;
    case UC_BUSY:
    case UC_CLOSING:
        uv_timer_stop(&l->timer);
        break;
    }
}

/* HTTP/1.1: out of the pool's idle list (a link in it is idle). */
static void idle_unlink(upstream_link_t *l)
{
    upstream_pool_t *pool = l->pool;
    if (l->state != UC_IDLE || l->multiplexed)
        return;
    if (l->prev)
        l->prev->next = l->next;
    else
        pool->idle = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

/* HTTP/2: out of the pool's list of links. */
static void h2_unlink(upstream_link_t *l)
{
    upstream_pool_t *pool = l->pool;
    if (l->prev)
        l->prev->next = l->next;
    else if (pool->h2 == l)
        pool->h2 = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

/* --- HTTP/2 channels --- */

static upstream_conn_t *channel_get(upstream_pool_t *pool)
{
    upstream_conn_t *uc = pool->spare;
    if (uc)
        pool->spare = uc->next;
    else if (!(uc = malloc(sizeof *uc)))
        return NULL;
    memset(uc, 0, sizeof *uc);
    return uc;
}

/* A channel leaves its link (and the link's reference goes). */
static void channel_put(upstream_conn_t *uc)
{
    upstream_link_t *l = uc->link;
    upstream_pool_t *pool = l->pool;
    if (uc->in)
        pbuf_put(pool->group->env->pool, uc->in);
    uc->owner = NULL;
    uc->in = NULL;
    uc->next = pool->spare;
    pool->spare = uc;
    l->n_streams--;
    link_unref(l);
}

/* Tells a link's waiting channels it failed; they are gone first. */
static void waiting_fail(upstream_link_t *l, int status)
{
    upstream_conn_t *w = l->waiting;
    l->waiting = NULL;
    while (w) {
        upstream_conn_t *next = w->next;
        const upstream_conn_ops_t *ops = w->ops;
        void *owner = w->owner;
        channel_put(w);
        ops->on_connected(owner, status);
        w = next;
    }
}

static void link_close(upstream_link_t *l, int status)
{
    if (l->state == UC_CLOSING)
        return;
    upstream_pool_t *pool = l->pool;
    bool h2 = l->multiplexed;
    idle_unlink(l);
    if (h2)
        h2_unlink(l);
    set_state(l, UC_CLOSING);
    pool->n_open--;
    if (l->counted)
        health_release(&pool->group->hg->connections);
    if (!h2) {
        l->conn.owner = NULL;
        if (l->conn.in) {
            pbuf_put(pool->group->env->pool, l->conn.in);
            l->conn.in = NULL;
        }
    }
    /* The libuv handles close later: the link outlives what follows. */
    uv_close((uv_handle_t *)&l->timer, link_on_timer_closed);
    stream_close(&l->s, !l->ever_connected);
    if (h2) {
        waiting_fail(l, status);
        if (l->h2)
            h2_upstream_lost(l->h2, status); /* its streams not whole fail */
    }
}

static void h2_ready(upstream_link_t *l);

/* ficus lets a working link go (idle, drain, reload, the pool's limits):
 * an HTTP/2 target hears it from a GOAWAY before the FIN. */
static void link_end(upstream_link_t *l)
{
    if (l->h2 && l->state != UC_CONNECTING && l->state != UC_CLOSING)
        h2_upstream_goaway(l->h2);
    link_close(l, UV_ECONNRESET);
}

static void link_on_alloc(stream_t *s, uv_buf_t *buf)
{
    *buf = uv_buf_init(link_of(s)->pool->group->env->rbuf, IO_BUF_BYTES);
}

static void link_on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    upstream_link_t *l = link_of(s);
    if (l->h2) {
        /* Frames for its streams, or the session's own (PING, SETTINGS,
         * GOAWAY) while idle. */
        if (n < 0)
            link_close(l, (int)n);
        else if (h2_upstream_feed(l->h2, buf->base, (size_t)n) != 0)
            link_close(l, UV_EPROTO);
        else if (l->state == UC_CONNECTING && h2_upstream_settled(l->h2))
            h2_ready(l);
        return;
    }
    upstream_conn_t *uc = &l->conn;
    if (!uc->owner) {
        /* Idle: the target closed it, or sent bytes nobody asked for. */
        link_close(l, UV_ECONNRESET);
        return;
    }
    if (n < 0)
        uc->ops->on_eof(uc->owner, (int)n);
    else
        uc->ops->on_data(uc->owner, buf->base, (size_t)n);
}

static void link_on_drain(stream_t *s, int status)
{
    upstream_link_t *l = link_of(s);
    if (l->h2) {
        if (status == 0)
            h2_upstream_on_drain(l->h2); /* more frames; streams framed are told */
        else
            link_close(l, status);
        return;
    }
    if (l->conn.owner)
        l->conn.ops->on_drained(l->conn.owner, status);
    else if (status < 0)
        link_close(l, status);
}

/* --- the HTTP/2 session's side --- */

static int h2_send(void *ctx, const uv_buf_t *bufs, unsigned n)
{
    return stream_write(&((upstream_link_t *)ctx)->s, bufs, n);
}
static bool h2_send_pending(void *ctx)
{
    return stream_write_pending(&((upstream_link_t *)ctx)->s);
}
static void h2_deliver(void *owner, const char *data, size_t len)
{
    upstream_conn_t *uc = owner;
    uc->ops->on_data(uc->owner, data, len);
}
static void h2_drained(void *owner)
{
    upstream_conn_t *uc = owner;
    uc->ops->on_drained(uc->owner, 0);
}
static void h2_failed(void *owner, int status, bool refused)
{
    upstream_conn_t *uc = owner;
    if (refused)
        uc->reused = 1; /* never processed: sent again, as on a stale connection */
    uc->ops->on_eof(uc->owner, status);
}

static const h2_upstream_io_t h2_io = {
    .send = h2_send,
    .send_pending = h2_send_pending,
    .deliver = h2_deliver,
    .drained = h2_drained,
    .failed = h2_failed,
};

static void link_on_handshake(stream_t *s, int result);

static const stream_ops_t upstream_ops = {
    .on_alloc = link_on_alloc,
    .on_read = link_on_read,
    .on_drain = link_on_drain,
    .on_close = link_on_close,
    .on_handshake = link_on_handshake,
};

/* The link failed to connect: closed, and its owners told. */
static void link_fail(upstream_link_t *l, int status)
{
    void *owner = l->conn.owner;
    const upstream_conn_ops_t *ops = l->conn.ops;
    link_close(l, status);
    if (owner)
        ops->on_connected(owner, status);
}

/* A link with no request: pooled, or closed when it may not be kept. */
static void link_idle(upstream_link_t *l)
{
    upstream_pool_t *pool = l->pool;
    upstream_group_t *g = pool->group;
    const config_target_group_t *tg = g->tg;
    /* At the group's connection limit an idle link would hold a slot another
     * worker may need: close it instead of pooling it. A link of a replaced
     * generation is not pooled either. */
    bool at_limit =
        atomic_load_explicit(&g->hg->connections, memory_order_relaxed) >= tg->max_connections;
    if (g->env->draining || at_limit || g->retired || pool->n_idle >= tg->keepalive_max_idle ||
        (l->h2 && !h2_upstream_open_ok(l->h2))) {
        link_end(l);
        return;
    }
    if (!l->s.reading)
        stream_read_start(&l->s);
    if (!l->h2) {
        l->prev = NULL;
        l->next = pool->idle;
        if (pool->idle)
            pool->idle->prev = l;
        pool->idle = l;
    }
    set_state(l, UC_IDLE);
}

static upstream_link_t *link_open(upstream_pool_t *pool, int *err);
static bool h2_room(const upstream_link_t *l);

/* The streams an HTTP/2 link may carry at once. */
static uint32_t h2_limit(const upstream_link_t *l)
{
    uint32_t peer = h2_upstream_peer_streams(l->h2);
    return peer < UPSTREAM_H2_MAX_STREAMS ? peer : UPSTREAM_H2_MAX_STREAMS;
}

/* A channel gets a stream of its (connected) link and may write. */
static void h2_start(upstream_conn_t *uc)
{
    upstream_link_t *l = uc->link;
    const upstream_conn_ops_t *ops = uc->ops;
    void *owner = uc->owner;
    if (l->state == UC_IDLE)
        set_state(l, UC_BUSY);
    uc->h2s = h2_ustream_open(l->h2, uc);
    if (!uc->h2s) {
        channel_put(uc);
        ops->on_connected(owner, UV_ENOMEM);
        return;
    }
    ops->on_connected(owner, 0);
}

/* A channel that waited on a link the target allows fewer streams than
 * waited goes to another link with room, or a new one; without one (the
 * max_connections breaker) its owner hears why. */
static void h2_move(upstream_conn_t *uc)
{
    upstream_link_t *from = uc->link;
    upstream_pool_t *pool = from->pool;
    upstream_link_t *to = pool->h2;
    while (to && (to == from || !h2_room(to)))
        to = to->next;
    int err = 0;
    if (!to && !(to = link_open(pool, &err))) {
        const upstream_conn_ops_t *ops = uc->ops;
        void *owner = uc->owner;
        channel_put(uc);
        ops->on_connected(owner, err);
        return;
    }
    from->n_streams--;
    link_unref(from); /* its libuv handles hold it meanwhile */
    uc->link = to;
    to->refs++;
    to->n_streams++;
    if (to->state == UC_CONNECTING) {
        uc->next = to->waiting;
        to->waiting = uc;
        return;
    }
    h2_start(uc);
}

/* HTTP/2: the target's SETTINGS came. The channels that waited get their
 * streams, as many as it allows; the others go elsewhere. */
static void h2_ready(upstream_link_t *l)
{
    upstream_conn_t *w = l->waiting;
    l->waiting = NULL;
    set_state(l, UC_BUSY);
    uint32_t room = h2_limit(l);
    while (w) {
        upstream_conn_t *next = w->next;
        w->next = NULL;
        if (room && l->state == UC_BUSY && h2_upstream_open_ok(l->h2)) {
            room--;
            h2_start(w);
        } else {
            h2_move(w);
        }
        w = next;
    }
    if (l->state == UC_BUSY && l->n_streams == 0)
        link_idle(l);
}

/* Connected (and the TLS handshake done): the owners may write. */
static void link_ready(upstream_link_t *l)
{
    upstream_group_t *g = l->pool->group;
    if (g->tg->h2) {
        /* Still connecting until the target's SETTINGS say how many
         * streams it takes (link_on_read). */
        l->h2 = h2_upstream_new(g->env->pool, &h2_io, l, g->tls != NULL);
        if (!l->h2)
            link_fail(l, UV_ENOMEM);
        return;
    }
    set_state(l, UC_BUSY);
    if (l->conn.owner)
        l->conn.ops->on_connected(l->conn.owner, 0);
    else
        upstream_conn_release(&l->conn, true);
}

static void link_on_handshake(stream_t *s, int result)
{
    upstream_link_t *l = link_of(s);
    if (l->state != UC_CONNECTING)
        return;
    const config_target_group_t *tg = l->pool->group->tg;
    if (result == TLS_HS_OK || result == TLS_HS_RESUMED) {
        size_t n = 0;
        const char *alpn = s->tls ? tls_conn_alpn(s->tls, &n) : NULL;
        if (tg->h2 && !(alpn && n == 2 && memcmp(alpn, "h2", 2) == 0)) {
            log_limited(LOG_WARN, "target group %s: %s did not agree to h2 by ALPN", tg->name,
                        tg->targets[l->pool->target].name);
            link_fail(l, UV_EPROTO);
            return;
        }
        link_ready(l);
        return;
    }
    const char *why = s->tls ? tls_conn_verify_error(s->tls) : NULL;
    log_limited(LOG_WARN, "target group %s: TLS to %s failed: %s", tg->name,
                tg->targets[l->pool->target].name,
                why ? why : tls_hs_result_name((tls_hs_result_t)result));
    link_fail(l, UV_EPROTO);
}

/* TLS to the target: the ClientHello goes out; link_on_handshake goes on.
 * The name sent and checked is tls.sni, else the target's host name (an
 * IP address is checked, not sent). */
static int link_start_tls(upstream_link_t *l)
{
    upstream_pool_t *pool = l->pool;
    const config_target_group_t *tg = pool->group->tg;
    const config_target_t *t = &tg->targets[pool->target];
    const char *name = tg->tls.sni ? tg->tls.sni : t->host;
    tls_conn_t *c = tls_conn_new_client(pool->group->tls, t->numeric && !tg->tls.sni ? NULL : name,
                                        name, &pool->tls_session);
    return stream_tls_client(&l->s, c);
}

static void link_on_timer(uv_timer_t *t)
{
    upstream_link_t *l = t->data;
    if (l->state == UC_CONNECTING)
        link_fail(l, UV_ETIMEDOUT);
    else
        link_end(l); /* idle timeout */
}

static void link_on_connect(uv_connect_t *creq, int status)
{
    upstream_link_t *l = creq->data;
    if (l->state == UC_CLOSING)
        return;
    if (status < 0) {
        link_fail(l, status);
        return;
    }
    l->ever_connected = 1;
    if (stream_read_start(&l->s) != 0) {
        link_fail(l, UV_ECONNRESET);
        return;
    }
    if (l->pool->group->tls) {
        /* Still connecting (connect_timeout) until the handshake ends. */
        if (link_start_tls(l) != 0)
            link_fail(l, UV_EPROTO);
        return;
    }
    link_ready(l);
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
    for (size_t t = 0; g->pools && t < g->tg->n_targets; t++) {
        tls_session_slot_clear(&g->pools[t].tls_session);
        while (g->pools[t].spare) {
            upstream_conn_t *uc = g->pools[t].spare;
            g->pools[t].spare = uc->next;
            free(uc);
        }
    }
    free(g->pools);
    g->pools = NULL;
}

/* Closes a pool's idle links; true if there were any. */
static bool pool_close_idle(upstream_pool_t *pool)
{
    bool closed = false;
    while (pool->idle) {
        link_close(pool->idle, UV_ECONNRESET);
        closed = true;
    }
    for (upstream_link_t *l = pool->h2, *next; l; l = next) {
        next = l->next;
        if (l->state == UC_IDLE) {
            link_end(l);
            closed = true;
        }
    }
    return closed;
}

void upstream_group_close_idle(upstream_group_t *g)
{
    for (size_t t = 0; g->pools && t < g->tg->n_targets; t++)
        pool_close_idle(&g->pools[t]);
}

void upstream_group_retire(upstream_group_t *g)
{
    g->retired = true;
    upstream_group_close_idle(g);
}

/* May one more stream go on this HTTP/2 link? */
static bool h2_room(const upstream_link_t *l)
{
    if (l->state == UC_CONNECTING)
        return l->n_streams < UPSTREAM_H2_MAX_STREAMS;
    if (l->state == UC_CLOSING || !l->h2 || !h2_upstream_open_ok(l->h2))
        return false;
    return l->n_streams < h2_limit(l);
}

bool upstream_pool_ready(const upstream_pool_t *pool)
{
    if (!pool->group->tg->h2)
        return pool->idle != NULL;
    for (const upstream_link_t *l = pool->h2; l; l = l->next)
        if (l->state != UC_CONNECTING && h2_room(l))
            return true;
    return false;
}

/* A new link to the pool's target, connecting. */
static upstream_link_t *link_open(upstream_pool_t *pool, int *err)
{
    upstream_group_t *g = pool->group;
    const config_target_group_t *tg = g->tg;
    health_group_t *hg = g->hg;
    /* Read once: the address may be re-resolved meanwhile; libuv copies it. */
    const health_addr_t *addr = atomic_load(&hg->targets[pool->target].addr);
    if (!addr) {
        *err = FE_NOTFOUND; /* a name that did not resolve */
        return NULL;
    }
    if (!health_acquire(&hg->connections, tg->max_connections)) {
        /* This worker's idle links to other targets of the group hold
         * slots: give them back and try once more. */
        bool freed = false;
        for (size_t t = 0; t < tg->n_targets; t++)
            freed |= pool_close_idle(&g->pools[t]);
        if (!freed || !health_acquire(&hg->connections, tg->max_connections)) {
            *err = FE_TOOBIG; /* circuit breaker: max_connections */
            return NULL;
        }
    }
    upstream_link_t *l = calloc(1, sizeof *l);
    if (!l) {
        health_release(&hg->connections);
        *err = FE_NOMEM;
        return NULL;
    }
    l->counted = 1;
    l->multiplexed = tg->h2;
    l->pool = pool;
    l->conn.link = l;
    if (stream_init(g->env->loop, &l->s, &upstream_ops, g->env->pool) != 0) {
        health_release(&hg->connections);
        free(l);
        *err = FE_IO;
        return NULL;
    }
    g->hold(g->hold_ctx, +1);
    uv_timer_init(g->env->loop, &l->timer);
    l->timer.data = l;
    l->refs = 2;
    l->creq.data = l;
    l->state = UC_CONNECTING;
    pool->n_open++;
    if (tg->h2) {
        l->next = pool->h2;
        if (pool->h2)
            pool->h2->prev = l;
        pool->h2 = l;
    }
    int rc = stream_connect(&l->s, &l->creq, (const struct sockaddr *)&addr->ss, link_on_connect);
    if (rc != 0) {
        link_close(l, rc);
        *err = rc;
        return NULL;
    }
    set_state(l, UC_CONNECTING);
    return l;
}

/* HTTP/2: a stream of the first link with room, or of a new link. */
static upstream_conn_t *h2_acquire(upstream_pool_t *pool, const upstream_conn_ops_t *ops,
                                   void *owner, int *err)
{
    upstream_link_t *l = pool->h2;
    while (l && !h2_room(l))
        l = l->next;
    if (!l && !(l = link_open(pool, err)))
        return NULL;
    upstream_conn_t *uc = channel_get(pool);
    if (!uc) {
        *err = FE_NOMEM;
        return NULL;
    }
    uc->link = l;
    uc->ops = ops;
    uc->owner = owner;
    http_parser_init_response(&uc->parser);
    l->refs++;
    l->n_streams++;
    if (l->state == UC_CONNECTING) {
        uc->next = l->waiting;
        l->waiting = uc;
        return uc;
    }
    if (l->state == UC_IDLE)
        set_state(l, UC_BUSY);
    uc->h2s = h2_ustream_open(l->h2, uc);
    if (!uc->h2s) {
        upstream_conn_release(uc, false);
        *err = FE_NOMEM;
        return NULL;
    }
    /* Not reused: a stream the target resets failed on its own, not on a
     * stale connection; only a refused one is sent again (h2_failed). */
    return uc;
}

upstream_conn_t *upstream_conn_acquire(upstream_pool_t *pool, const upstream_conn_ops_t *ops,
                                       void *owner, int *err)
{
    *err = 0;
    if (pool->group->tg->h2)
        return h2_acquire(pool, ops, owner, err);
    upstream_link_t *l = pool->idle;
    if (l) {
        idle_unlink(l);
        set_state(l, UC_BUSY);
        l->conn.reused = 1;
    } else if (!(l = link_open(pool, err))) {
        return NULL;
    }
    l->conn.ops = ops;
    l->conn.owner = owner;
    http_parser_init_response(&l->conn.parser);
    return &l->conn;
}

/* HTTP/2: the stream goes (reset if not done); the link idles without any. */
static void h2_release(upstream_conn_t *uc)
{
    upstream_link_t *l = uc->link;
    if (uc->h2s) {
        h2_ustream_close(uc->h2s);
        uc->h2s = NULL;
    } else if (l->state == UC_CONNECTING) {
        upstream_conn_t **p = &l->waiting;
        while (*p && *p != uc)
            p = &(*p)->next;
        if (*p)
            *p = uc->next;
    }
    bool idle = l->n_streams == 1 && l->state == UC_BUSY;
    if (idle)
        link_idle(l); /* the link holds a reference of its own meanwhile */
    channel_put(uc);
}

void upstream_conn_release(upstream_conn_t *uc, bool reusable)
{
    upstream_link_t *l = uc->link;
    if (l->multiplexed) {
        h2_release(uc);
        return;
    }
    uc->owner = NULL;
    if (uc->in) {
        pbuf_put(l->pool->group->env->pool, uc->in);
        uc->in = NULL;
    }
    if (!reusable || l->state != UC_BUSY || stream_write_pending(&l->s)) {
        link_close(l, UV_ECONNRESET);
        return;
    }
    link_idle(l);
}

int upstream_conn_write(upstream_conn_t *uc, const uv_buf_t *bufs, unsigned n)
{
    if (!uc->link->multiplexed)
        return stream_write(&uc->link->s, bufs, n);
    if (!uc->h2s)
        return UV_ECONNRESET;
    int rc = h2_ustream_write(uc->h2s, bufs, n);
    if (rc == UV_ECONNREFUSED)
        uc->reused = 1; /* a GOAWAY came first: never seen, sent again */
    return rc;
}

bool upstream_conn_write_pending(const upstream_conn_t *uc)
{
    if (uc->h2s)
        return h2_ustream_pending(uc->h2s);
    return !uc->link->multiplexed && stream_write_pending(&uc->link->s);
}

void upstream_conn_pause(upstream_conn_t *uc)
{
    if (uc->h2s)
        h2_ustream_pause(uc->h2s, true);
    else if (!uc->link->multiplexed)
        stream_read_stop(&uc->link->s);
}

void upstream_conn_resume(upstream_conn_t *uc)
{
    if (uc->link->state == UC_CLOSING && !uc->h2s)
        return;
    if (uc->h2s)
        h2_ustream_pause(uc->h2s, false); /* what was read already goes first */
    else if (!uc->link->multiplexed)
        stream_read_start(&uc->link->s);
}
