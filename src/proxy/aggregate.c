/* Aggregation routes; see aggregate.h.
 *
 * An aggregation (one allocation: it and its calls) belongs to its request
 * until the answer is written or the request lets go, then lives on only
 * until its calls' timers are closed. A call goes:
 *
 *   begin -> [cache: hit -> done | wait for another's fetch -> done/send]
 *         -> send -> end -> decide: retry (backoff) -> send ... | done
 *
 * and the answer is composed when no call is pending, or when the
 * aggregation's timer ends those still pending as timed out. A call that
 * fetches for the cache (single flight) always ends its fetch, with the
 * body or as failed, so that the requests waiting for it go on. */
#include "proxy/aggregate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/time.h"
#include "http/deadline.h"
#include "policy/agg_cache.h"
#include "policy/agg_compose.h"
#include "policy/agg_store.h"
#include "policy/retry.h"
#include "proxy/decide.h"
#include "proxy/proxy.h"
#include "proxy/proxy_worker.h"
#include "proxy/rewrite.h"
#include "proxy/subrequest.h"

typedef enum {
    CALL_IDLE = 0,
    CALL_WAITING, /* for another request's fetch of the same path */
    CALL_FLEET,   /* for the fleet's store: a body, or the lock to fetch it */
    CALL_RUNNING, /* a try under way */
    CALL_BACKOFF, /* before the next try */
    CALL_DONE
} call_phase_t;

typedef struct agg_call agg_call_t;

/* A wait for another request's fetch (agg_cache's waiter). Its own memory:
 * the fetch ends on any worker's thread, which posts it to the call's
 * worker; a call that gave up meanwhile only leaves `call` NULL. */
typedef struct agg_ticket {
    agg_waiter_t w;
    worker_t *worker;
    agg_call_t *call; /* NULL: the call no longer waits */
    agg_body_t *body; /* what the fetch gave (NULL: it failed) */
} agg_ticket_t;

struct agg_call {
    subreq_t sr;
    aggregation_t *agg;
    const config_agg_call_t *cfg;
    call_phase_t phase;
    bool inited;   /* sr's timer is open */
    bool fetching; /* holds the cache's fetch of key: put or fail it */
    bool timed_out;
    char *target; /* the resolved request target */
    size_t target_len;
    char *key; /* the cache key (group, target, extract), NULL: not cached */
    size_t key_len;
    agg_ticket_t *ticket;
    agg_store_op_t *store_op; /* a lookup in the fleet's store under way */
    bool fleet_lock;          /* holds the fleet's lock on key: put or release it */
    uint32_t retries;
    /* The result: the value (in sr's capture, owned, or body) or why not. */
    const char *value;
    size_t value_len;
    char *owned;      /* an extract's value */
    agg_body_t *body; /* a cached value (one reference) */
    const char *error;
    end_reason_t why; /* a failure's: 504 for a timeout, else 502 */
    char error_buf[48];
};

struct aggregation {
    request_t *req; /* NULL once the request let go */
    proxy_worker_t *pw;
    proxy_gen_t *gen; /* one reference */
    const config_route_t *route;
    uv_timer_t timer; /* aggregate.timeout */
    unsigned open;    /* handles still to close: the timer, inited calls */
    size_t pending;   /* calls not done */
    bool starting;    /* the calls are being started: no answer yet */
    bool answered;
    bool gone;       /* the request let go: calls only end */
    uint64_t end_ms; /* loop time at which everything ends */
    /* The answer being written: its pieces, and how far. */
    agg_piece_t *pieces;
    size_t n_pieces, at_piece, at_off;
    char *glue;
    char *mem; /* targets and keys */
    size_t n;
    agg_call_t calls[];
};

static void call_send(agg_call_t *c);
static void call_done(agg_call_t *c);
static void maybe_answer(aggregation_t *ag);
static void agg_close(aggregation_t *ag);

/* ---------------------------------------------------------------- calls */

static uint64_t left_ms(const aggregation_t *ag)
{
    uint64_t now = uv_now(ag->pw->loop);
    return ag->end_ms > now ? ag->end_ms - now : 0;
}

/* The call failed: why, in _errors. */
static void fleet_end(agg_call_t *c, const char *value, size_t len);

static void call_fail(agg_call_t *c, end_reason_t why, const char *reason)
{
    c->why = why;
    c->error = reason;
    fleet_end(c, NULL, 0);
    if (c->fetching) {
        c->fetching = false;
        agg_cache_fail(c->agg->gen->agg_cache, c->key, c->key_len);
    }
    call_done(c);
}

static void call_done(agg_call_t *c)
{
    if (c->phase == CALL_DONE)
        return;
    c->phase = CALL_DONE;
    c->agg->pending--;
    maybe_answer(c->agg);
}

static const char *reason_of(end_reason_t why)
{
    return why == END_UPSTREAM_TIMEOUT ? "timeout" : end_reasons[why].name;
}

/* A 2xx body: checked (JSON, bounded, extracted), kept, cached. */
static void call_answered(agg_call_t *c)
{
    aggregation_t *ag = c->agg;
    const config_aggregate_t *a = &ag->route->aggregate;
    capture_t *cap = &c->sr.cap;
    const char *reason = NULL;
    if (cap->truncated || cap->total > a->max_body_bytes) {
        snprintf(c->error_buf, sizeof c->error_buf, "the body is larger than %llu bytes",
                 (unsigned long long)a->max_body_bytes);
        call_fail(c, END_UPSTREAM_INVALID, c->error_buf);
        return;
    }
    if (agg_compose_check(cap->body ? cap->body : "", cap->len, a->max_body_bytes, c->cfg->extract,
                          &c->value, &c->value_len, &c->owned, &reason) != 0) {
        call_fail(c, END_UPSTREAM_INVALID, reason);
        return;
    }
    fleet_end(c, cap->status == 200 ? c->value : NULL, c->value_len);
    if (c->fetching) {
        c->fetching = false;
        agg_cache_t *cache = ag->gen->agg_cache;
        agg_body_t *b = cap->status == 200 ? agg_body_new(c->value, c->value_len) : NULL;
        if (b) {
            agg_cache_put(cache, c->key, c->key_len, b, c->cfg->cache_ttl_ms, time_now_ms());
            agg_body_unref(b);
        } else {
            agg_cache_fail(cache, c->key, c->key_len);
        }
    }
    call_done(c);
}

static void on_backoff(uv_timer_t *t)
{
    exchange_t *ex = t->data;
    agg_call_t *c = ((subreq_t *)ex->req)->owner;
    if (c->phase == CALL_BACKOFF)
        call_send(c);
}

/* A try ended: decide() says whether another one goes (the route's
 * retries), else the call is done. */
static void on_call_end(subreq_t *s, end_reason_t why)
{
    agg_call_t *c = s->owner;
    aggregation_t *ag = c->agg;
    pbuf_put(&ag->pw->w->pool, s->req.out);
    s->req.out = NULL;
    int status = s->state == SUBREQ_DONE ? s->cap.status : 0;
    if (s->state == SUBREQ_DONE)
        why = END_OK;
    if (ag->gone || c->timed_out) {
        call_fail(c, END_UPSTREAM_TIMEOUT, "timeout");
        return;
    }
    uint64_t left = left_ms(ag);
    const config_route_t *r = ag->route;
    decide_in_t in = {
        .why = why,
        .status = status,
        .stale = s->stale,
        .stopping = ag->pw->stopping,
        .idempotent = true,
        .deadline_short = left < r->deadline.min_remaining_ms || left == 0,
        .route = r,
        .attempts = s->req.attempts,
        .retries = c->retries,
    };
    decision_t d = decide(&in);
    if (d == DECIDE_RESEND || d == DECIDE_RETRY) {
        uint64_t delay = 0;
        if (d == DECIDE_RETRY) {
            c->retries++;
            metrics_retry(ag->pw->metrics, ag->gen->metrics_route[r->index],
                          ag->gen->groups[s->req.group].metrics_group);
            if (r->has_retries)
                delay = retry_backoff_ms(r->retries.backoff_ms, c->retries, &ag->pw->rng);
        }
        if (delay == 0) {
            call_send(c);
            return;
        }
        if (delay < left) {
            c->phase = CALL_BACKOFF;
            uv_timer_start(&s->req.ex->timer, on_backoff, delay, 0);
            return;
        }
    }
    if (why != END_OK) {
        call_fail(c, why, reason_of(why));
        return;
    }
    if (status < 200 || status > 299) {
        snprintf(c->error_buf, sizeof c->error_buf, "status %d", status);
        call_fail(c, END_CALL_FAILED, c->error_buf);
        return;
    }
    call_answered(c);
}

/* The call's head: the base head retargeted to its path, GET; its time
 * left written in. */
static int call_head(agg_call_t *c)
{
    aggregation_t *ag = c->agg;
    const request_t *req = ag->req;
    request_t *s = &c->sr.req;
    pbuf_t *o = pbuf_get(&ag->pw->w->pool);
    if (!o)
        return -1;
    long shift;
    long len = rewrite_retarget(req->out->data, req->out->len, req->head_len, "GET", 3, c->target,
                                c->target_len, "", 0, o->data, o->cap, &shift);
    if (len < 0) {
        pbuf_put(&ag->pw->w->pool, o);
        return -1;
    }
    o->len = (uint32_t)len;
    s->out = o;
    s->head_len = (uint32_t)((long)req->head_len + shift);
    s->tp_off = req->tp_off ? (uint32_t)((long)req->tp_off + shift) : 0;
    s->dd_off = req->dd_off ? (uint32_t)((long)req->dd_off + shift) : 0;
    return 0;
}

/* The call's sub-request (and its timer) before its first use. */
static void call_init(agg_call_t *c)
{
    aggregation_t *ag = c->agg;
    if (c->inited)
        return;
    subreq_init(&c->sr, ag->req, ag->gen, ag->route, (uint32_t)c->cfg->target_group, on_call_end,
                c);
    c->sr.req.head_method = 0; /* the calls are GETs */
    c->sr.req.method_id = HTTP_METHOD_GET;
    c->sr.req.idempotent = 1;
    c->inited = true;
    ag->open++;
}

/* A try of the call, bounded by its per_try_timeout and what is left. */
static void call_send(agg_call_t *c)
{
    aggregation_t *ag = c->agg;
    const config_route_t *r = ag->route;
    call_init(c);
    uint64_t left = left_ms(ag);
    uint64_t t = left;
    if (r->has_retries && r->retries.per_try_timeout_ms && r->retries.per_try_timeout_ms < t)
        t = r->retries.per_try_timeout_ms;
    if (t == 0) {
        call_fail(c, END_UPSTREAM_TIMEOUT, "timeout");
        return;
    }
    if (ag->req == NULL || call_head(c) != 0) {
        call_fail(c, END_INTERNAL, "the call's head does not fit");
        return;
    }
    const request_t *req = ag->req;
    if (req->rto_off) {
        /* The base head's offsets, moved as its request line was. */
        long shift = (long)c->sr.req.head_len - (long)req->head_len;
        char *out = c->sr.req.out->data;
        http_deadline_write_ms(out + (long)req->rto_off + shift, t);
        if (req->gto_off)
            http_deadline_write_grpc(out + (long)req->gto_off + shift, t);
    }
    c->phase = CALL_RUNNING;
    end_reason_t why = subreq_send(&c->sr, ag->route->aggregate.max_body_bytes, t);
    if (why != END_OK) {
        pbuf_put(&ag->pw->w->pool, c->sr.req.out);
        c->sr.req.out = NULL;
        call_fail(c, why, reason_of(why));
    }
}

/* ------------------------------------------------------ waiting a fetch */

static void on_ticket(worker_t *w, void *arg)
{
    (void)w;
    agg_ticket_t *t = arg;
    agg_call_t *c = t->call;
    agg_body_t *body = t->body;
    free(t);
    if (!c) {
        agg_body_unref(body);
        return;
    }
    c->ticket = NULL;
    if (!body) {
        /* The fetch it waited for failed: its own call, not cached. */
        call_send(c);
        return;
    }
    c->body = body;
    c->value = body->data;
    c->value_len = body->len;
    call_done(c);
}

/* On the thread that ended the fetch. */
static void ticket_fn(agg_waiter_t *w, agg_body_t *body)
{
    agg_ticket_t *t = w->ctx;
    t->body = body;
    if (worker_post(t->worker, on_ticket, t) != 0)
        agg_body_unref(body); /* no memory: the aggregation's timer ends the call */
}

/* The call no longer waits (its aggregation ended). */
static void ticket_drop(agg_call_t *c)
{
    agg_ticket_t *t = c->ticket;
    if (!t)
        return;
    c->ticket = NULL;
    if (agg_cache_cancel(c->agg->gen->agg_cache, c->key, c->key_len, &t->w))
        free(t);
    else
        t->call = NULL; /* on its way: on_ticket frees it */
}

/* ---------------------------------------------------------------- begin */

static size_t pct_encoded_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        k += keep ? 1 : 3;
    }
    return k;
}

static char *pct_encode(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (pct_encoded_len(s + i, 1) == 1) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    return o;
}

/* Bytes of a call's target with {user} replaced by u (percent-encoded). */
static size_t target_len(const char *path, const char *u, size_t ulen)
{
    size_t n = 0, enc = pct_encoded_len(u, ulen);
    for (const char *p = path; *p;) {
        if (strncmp(p, "{user}", 6) == 0) {
            n += enc;
            p += 6;
        } else {
            n++;
            p++;
        }
    }
    return n;
}

static char *target_write(char *o, const char *path, const char *u, size_t ulen)
{
    for (const char *p = path; *p;) {
        if (strncmp(p, "{user}", 6) == 0) {
            o = pct_encode(o, u, ulen);
            p += 6;
        } else {
            *o++ = *p++;
        }
    }
    return o;
}

/* The call's target and cache key, in ag->mem from *w. */
static void call_resolve(agg_call_t *c, char **w)
{
    const request_t *req = c->agg->req;
    const config_t *cfg = c->agg->gen->cfg;
    c->target = *w;
    *w = target_write(*w, c->cfg->path, req->user, req->user_len);
    c->target_len = (size_t)(*w - c->target);
    if (!c->cfg->cache_ttl_ms)
        return;
    /* group SP target [SP extract]: the same path of two groups, or two
     * parts of one body, are not one entry. */
    const char *g = cfg->target_groups[c->cfg->target_group].name;
    c->key = *w;
    size_t gl = strlen(g);
    memcpy(*w, g, gl);
    *w += gl;
    *(*w)++ = ' ';
    memcpy(*w, c->target, c->target_len);
    *w += c->target_len;
    if (c->cfg->extract) {
        size_t el = strlen(c->cfg->extract);
        *(*w)++ = ' ';
        memcpy(*w, c->cfg->extract, el);
        *w += el;
    }
    c->key_len = (size_t)(*w - c->key);
}

static size_t call_mem(const config_t *cfg, const config_agg_call_t *cc, const request_t *req)
{
    size_t t = target_len(cc->path, req->user, req->user_len);
    if (!cc->cache_ttl_ms)
        return t;
    return t * 2 + strlen(cfg->target_groups[cc->target_group].name) + 2 +
           (cc->extract ? strlen(cc->extract) : 0);
}

/* -------------------------------------------------- the fleet's cache */

/* With aggregate_cache {scope: redis}, the call that fetches for the
 * instance (agg_cache's AGG_FETCH: one per entry and instance) asks the
 * fleet's store first (policy/agg_store): the body another instance kept,
 * or the entry's lock to fetch it for the fleet, or, while another instance
 * fetches, its body once there. The instance's waiters get what it gets. */

static void on_store(void *ctx, agg_store_result_t r, agg_body_t *body)
{
    agg_call_t *c = ctx;
    aggregation_t *ag = c->agg;
    metrics_registry_t *m = ag->pw->registry;
    c->store_op = NULL;
    switch (r) {
    case AGG_STORE_HIT:
        metrics_aggregate_cache(m, METRICS_AGG_HIT);
        c->fetching = false;
        agg_cache_put(ag->gen->agg_cache, c->key, c->key_len, body, c->cfg->cache_ttl_ms,
                      time_now_ms());
        c->body = body;
        c->value = body->data;
        c->value_len = body->len;
        call_done(c);
        return;
    case AGG_STORE_FETCH:
        c->fleet_lock = true;
        metrics_aggregate_cache(m, METRICS_AGG_MISS);
        break;
    case AGG_STORE_LATE: /* another instance's fetch took all our time: our own */
        metrics_aggregate_cache(m, METRICS_AGG_MISS);
        break;
    case AGG_STORE_ERROR:
        metrics_redis_error(m);
        metrics_aggregate_cache(m, METRICS_AGG_REDIS_DOWN);
        break;
    }
    call_send(c);
}

/* Asks the store; with redis down, the call fetches for the instance alone. */
static void fleet_ask(agg_call_t *c)
{
    aggregation_t *ag = c->agg;
    agg_store_t *st = ag->pw->agg_store;
    uint64_t left = left_ms(ag);
    /* The lock lasts as long as the fetch may; the wait as long as the call. */
    c->store_op = st && agg_store_connected(st) && left
                      ? agg_store_get(st, c->key, c->key_len, left, left, on_store, c)
                      : NULL;
    if (c->store_op) {
        c->phase = CALL_FLEET;
        return;
    }
    metrics_redis_error(ag->pw->registry);
    metrics_aggregate_cache(ag->pw->registry, METRICS_AGG_REDIS_DOWN);
    call_send(c);
}

/* The fetch under the fleet's lock ended: its body kept for the fleet (a
 * 200's: value), or the lock let go for another instance to fetch. */
static void fleet_end(agg_call_t *c, const char *value, size_t len)
{
    if (!c->fleet_lock)
        return;
    c->fleet_lock = false;
    agg_store_t *st = c->agg->pw->agg_store;
    int rc = !st     ? FE_IO
             : value ? agg_store_put(st, c->key, c->key_len, value, len, c->cfg->cache_ttl_ms)
                     : agg_store_release(st, c->key, c->key_len);
    if (rc == FE_IO) /* the lock expires on its own */
        metrics_redis_error(c->agg->pw->registry);
}

static void call_local(agg_call_t *c);

/* The cache first, when the call has one. */
static void call_begin(agg_call_t *c)
{
    aggregation_t *ag = c->agg;
    if (c->cfg->uses_user && ag->req->user_len == 0) {
        call_fail(c, END_CALL_FAILED, "no authenticated user for {user}");
        return;
    }
    if (!c->key || !ag->gen->agg_cache) {
        call_send(c);
        return;
    }
    call_local(c);
}

/* The instance's cache (with single flight across its workers). */
static void call_local(agg_call_t *c)
{
    aggregation_t *ag = c->agg;
    agg_cache_t *cache = ag->gen->agg_cache;
    agg_ticket_t *t = malloc(sizeof *t);
    if (!t) {
        call_send(c);
        return;
    }
    *t = (agg_ticket_t){.w = {.fn = ticket_fn, .ctx = t}, .worker = ag->pw->w, .call = c};
    agg_body_t *hit = NULL;
    switch (agg_cache_get(cache, c->key, c->key_len, time_now_ms(), &hit, &t->w)) {
    case AGG_HIT:
        metrics_aggregate_cache(ag->pw->registry, METRICS_AGG_HIT);
        free(t);
        c->body = hit;
        c->value = hit->data;
        c->value_len = hit->len;
        call_done(c);
        return;
    case AGG_FETCH:
        free(t);
        c->fetching = true;
        if (ag->gen->cfg->aggregate_cache_scope == SCOPE_GLOBAL) {
            fleet_ask(c);
            return;
        }
        metrics_aggregate_cache(ag->pw->registry, METRICS_AGG_MISS);
        call_send(c);
        return;
    case AGG_WAIT:
        metrics_aggregate_cache(ag->pw->registry, METRICS_AGG_SHARED);
        c->ticket = t;
        c->phase = CALL_WAITING;
        return;
    }
}

/* The call ends now, as timed out, whatever it was doing. */
static void call_stop(agg_call_t *c)
{
    c->timed_out = true;
    switch (c->phase) {
    case CALL_RUNNING:
        subreq_abort(&c->sr, END_UPSTREAM_TIMEOUT); /* on_call_end fails it */
        return;
    case CALL_WAITING:
        ticket_drop(c);
        break;
    case CALL_FLEET:
        agg_store_cancel(c->store_op); /* a lock granted meanwhile is let go by the store */
        c->store_op = NULL;
        break;
    case CALL_BACKOFF:
        uv_timer_stop(&c->sr.req.ex->timer);
        break;
    case CALL_IDLE:
    case CALL_DONE:
        return;
    }
    call_fail(c, END_UPSTREAM_TIMEOUT, "timeout");
}

static void on_agg_timer(uv_timer_t *t)
{
    aggregation_t *ag = t->data;
    ag->starting = true; /* one answer, after the loop */
    for (size_t i = 0; i < ag->n; i++)
        call_stop(&ag->calls[i]);
    ag->starting = false;
    maybe_answer(ag);
}

void aggregate_start(request_t *req)
{
    const config_route_t *r = req->route;
    const config_aggregate_t *a = &r->aggregate;
    const config_t *cfg = req->gen->cfg;
    size_t mem = 0;
    for (size_t i = 0; i < a->n_calls; i++)
        mem += call_mem(cfg, &a->calls[i], req);
    aggregation_t *ag = calloc(1, sizeof *ag + a->n_calls * sizeof(agg_call_t));
    char *m = ag ? malloc(mem ? mem : 1) : NULL;
    if (!m) {
        free(ag);
        proxy_answer_error(req, END_INTERNAL, NULL);
        return;
    }
    proxy_worker_t *pw = req->pw;
    ag->req = req;
    ag->pw = pw;
    ag->gen = proxy_gen_ref(req->gen);
    ag->route = r;
    ag->mem = m;
    ag->n = a->n_calls;
    ag->pending = a->n_calls;
    uint64_t now = uv_now(pw->loop);
    uint64_t until =
        req->deadline_us > req->start_us ? (req->deadline_us - req->start_us) / 1000 : 0;
    uint64_t t = a->timeout_ms < until || !until ? a->timeout_ms : until;
    ag->end_ms = now + t;
    uv_timer_init(pw->loop, &ag->timer);
    ag->timer.data = ag;
    ag->open = 1;
    uv_timer_start(&ag->timer, on_agg_timer, t ? t : 1, 0);
    req->agg = ag;
    req->phase = REQ_AGGREGATE;
    for (size_t i = 0; i < ag->n; i++) {
        agg_call_t *c = &ag->calls[i];
        c->agg = ag;
        c->cfg = &a->calls[i];
        call_resolve(c, &m);
    }
    ag->starting = true;
    for (size_t i = 0; i < ag->n && !ag->gone; i++)
        call_begin(&ag->calls[i]);
    ag->starting = false;
    maybe_answer(ag);
}

/* --------------------------------------------------------------- answer */

/* Writes the answer's pieces from where it stopped, at most a pool
 * buffer's worth at a time so that what the socket does not take fits the
 * stream's queue; true when everything went (or was queued). */
static bool write_more(aggregation_t *ag)
{
    request_t *req = ag->req;
    client_conn_t *cc = req->cc;
    size_t room = ag->pw->w->pool.buf_bytes;
    for (;;) {
        if (ag->at_piece == ag->n_pieces)
            return true;
        if (client_conn_write_pending(cc))
            return false; /* on_drained brings it back */
        uv_buf_t iov[16];
        unsigned k = 0;
        size_t bytes = 0;
        while (k < 16 && ag->at_piece < ag->n_pieces && bytes < room) {
            const agg_piece_t *p = &ag->pieces[ag->at_piece];
            size_t n = p->n - ag->at_off;
            if (n > room - bytes)
                n = room - bytes;
            iov[k++] = uv_buf_init((char *)p->p + ag->at_off, (unsigned)n);
            bytes += n;
            ag->at_off += n;
            if (ag->at_off == p->n) {
                ag->at_piece++;
                ag->at_off = 0;
            }
        }
        if (client_conn_write(cc, iov, k) < 0) {
            proxy_request_gone(req, END_CLIENT_CLOSED);
            return false;
        }
    }
}

static void answer_done(aggregation_t *ag)
{
    request_t *req = ag->req;
    request_log(req);
    request_over(req); /* lets go of ag */
}

/* Every call is in: a required failure fails the answer, else the object
 * goes out (its head, then the pieces). */
static void answer(aggregation_t *ag)
{
    request_t *req = ag->req;
    ag->answered = true;
    uv_timer_stop(&ag->timer);
    for (size_t i = 0; i < ag->n; i++) {
        agg_call_t *c = &ag->calls[i];
        req->attempts += c->sr.req.attempts;
        req->retries += c->retries;
    }
    for (size_t i = 0; i < ag->n; i++) {
        agg_call_t *c = &ag->calls[i];
        if (c->error && c->cfg->required) {
            char msg[160];
            snprintf(msg, sizeof msg, "required call %s failed: %s", c->cfg->name, c->error);
            end_reason_t why =
                c->why == END_UPSTREAM_TIMEOUT ? END_UPSTREAM_TIMEOUT : END_CALL_FAILED;
            proxy_answer_error(req, why, msg);
            return;
        }
    }
    agg_result_t res[CONFIG_MAX_AGGREGATE_CALLS];
    size_t glue_cap = 64;
    for (size_t i = 0; i < ag->n; i++) {
        agg_call_t *c = &ag->calls[i];
        res[i] = (agg_result_t){
            .name = c->cfg->name, .body = c->value, .len = c->value_len, .error = c->error};
        glue_cap += 6 * strlen(c->cfg->name) * 2 + (c->error ? 6 * strlen(c->error) : 0) + 16;
    }
    size_t max_pieces = 3 * ag->n + 8;
    const size_t head_cap = 512;
    ag->pieces = malloc((max_pieces + 1) * sizeof *ag->pieces);
    ag->glue = malloc(glue_cap + head_cap);
    bool partial = false;
    long np = ag->pieces && ag->glue ? agg_compose(res, ag->n, ag->pieces + 1, max_pieces,
                                                   ag->glue + head_cap, glue_cap, &partial)
                                     : -1;
    if (np < 0) {
        proxy_answer_error(req, END_INTERNAL, NULL);
        return;
    }
    size_t body_len = 0;
    for (long i = 1; i <= np; i++)
        body_len += ag->pieces[i].n;
    client_conn_t *cc = req->cc;
    if (!client_conn_keeps_alive(cc))
        client_conn_close_after(cc);
    bool close = cc->close_after || cc->env->draining;
    int hl = snprintf(ag->glue, head_cap,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nX-Request-Id: %.*s\r\n%s%s\r\n",
                      body_len, (int)req->request_id_len, req->request_id,
                      partial ? "X-Ficus-Partial: true\r\n" : "",
                      close                ? "Connection: close\r\n"
                      : req->client_http10 ? "Connection: keep-alive\r\n"
                                           : "");
    ag->pieces[0] = (agg_piece_t){ag->glue, (size_t)hl};
    ag->n_pieces = req->head_method ? 1 : (size_t)np + 1;
    req->status = 200;
    req->resp_started = 1;
    if (write_more(ag))
        answer_done(ag);
}

static void maybe_answer(aggregation_t *ag)
{
    if (ag->starting || ag->pending || ag->answered || ag->gone)
        return;
    answer(ag);
}

void aggregate_drained(request_t *req)
{
    aggregation_t *ag = req->agg;
    if (ag && ag->answered && !ag->gone && write_more(ag))
        answer_done(ag);
}

/* ------------------------------------------------------------------ end */

static void on_call_closed(subreq_t *s)
{
    agg_call_t *c = s->owner;
    aggregation_t *ag = c->agg;
    if (--ag->open == 0)
        agg_close(ag);
}

static void on_timer_closed(uv_handle_t *h)
{
    aggregation_t *ag = h->data;
    if (--ag->open == 0)
        agg_close(ag);
}

static void agg_close(aggregation_t *ag)
{
    for (size_t i = 0; i < ag->n; i++) {
        agg_call_t *c = &ag->calls[i];
        free(c->owned);
        agg_body_unref(c->body);
    }
    free(ag->pieces);
    free(ag->glue);
    free(ag->mem);
    proxy_gen_unref(ag->gen);
    free(ag);
}

void aggregate_detach(request_t *req)
{
    aggregation_t *ag = req->agg;
    if (!ag)
        return;
    req->agg = NULL;
    ag->gone = true; /* calls only end now: no answer */
    uv_timer_stop(&ag->timer);
    for (size_t i = 0; i < ag->n; i++) {
        agg_call_t *c = &ag->calls[i];
        call_stop(c);
        if (c->inited)
            subreq_close(&c->sr, on_call_closed);
    }
    ag->req = NULL;
    uv_close((uv_handle_t *)&ag->timer, on_timer_closed);
}
