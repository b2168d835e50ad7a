/* Shadow copies; see shadow.h.
 *
 * A copy (shadow_t) holds up to two parts: the copy to the shadow group and,
 * for the noise share, a second copy to the old system. Each part is a
 * request of its own (only what an exchange reads is set: generation, route,
 * group, trace, its upstream head) with one exchange, read by this file's
 * upstream callbacks. The client's request points at the copy until it is
 * released; the copy ends when its parts and the client's answer are in:
 * compared (maybe in the thread pool), counted, its deferred log line
 * written, its timers closed, freed. */
#include "proxy/shadow.h"

#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/hash.h"
#include "core/rand.h"
#include "core/time.h"
#include "http/deadline.h"
#include "policy/json_diff.h"
#include "policy/shadow_stats.h"
#include "proxy/exchange.h"
#include "proxy/proxy_worker.h"
#include "proxy/rewrite.h"
#include "proxy/subrequest.h"

/* Bodies up to this (all parts together) are compared on the loop; larger
 * ones in the thread pool (json_diff.h: a 1 MiB diff takes ~100 ms). */
#define SHADOW_INLINE_COMPARE_BYTES (64 * 1024)
#define SHADOW_HEADER "X-Ficus-Shadow: 1\r\n"

/* The access-log line of the client's request, kept with copies of what
 * pointed into the request (config strings stay valid: the copy holds the
 * generation). */
typedef struct deferred_log {
    access_log_entry_t e;
    char store[2 * REQUEST_ID_MAX_BYTES + 46 + 16 + 256 + 160 + 256 + 64];
} deferred_log_t;

struct shadow {
    proxy_worker_t *pw;
    proxy_gen_t *gen; /* one reference */
    const config_route_t *route;
    request_t *req; /* the client's request until it lets go */
    shadow_t *next, **pprev;
    bool compare;
    bool sent;
    bool primary_done; /* the client's answer ended (primary.complete: whole) */
    bool comparing;    /* in the thread pool */
    bool finished;     /* result known */
    bool closing;
    bool held; /* being stopped: not closed under the stopper's feet */
    unsigned open_timers;
    const char *result; /* access log name, NULL: not compared */
    deferred_log_t *log;
    char *target;
    size_t target_len;
    capture_t primary;
    subreq_t parts[2]; /* [0] the copy, [1] the noise copy (state SUBREQ_IDLE: none) */
    json_diff_result_t diff, noise_diff;
    int diff_rc, noise_rc;
    uv_work_t work;
    char request_id[REQUEST_ID_MAX_BYTES + 1];
    uint8_t request_id_len;
};

static void maybe_finish(shadow_t *sh);

/* The route's shadow figures (policy/shadow_stats). */
static shadow_route_t *figures(const proxy_gen_t *g, const config_route_t *r)
{
    return g->shadow_routes ? g->shadow_routes[r->index] : NULL;
}

/* A copy that was not compared: dropped, skipped or failed. */
static void count(const proxy_gen_t *g, const config_route_t *r, shadow_result_t why)
{
    shadow_route_count(figures(g, r), why);
}

/* ------------------------------------------------------------- capture */

static json_diff_side_t capture_side(const capture_t *c)
{
    return (json_diff_side_t){
        .status = c->status,
        .headers = c->headers,
        .n_headers = c->n_headers,
        .content_type = c->ctype != UINT32_MAX ? c->headers[c->ctype].value : NULL,
        .body = (const uint8_t *)c->body,
        .body_len = c->len,
        .body_truncated = c->truncated || !c->complete,
    };
}

/* --------------------------------------------------------------- begin */

static atomic_uint *inflight(const shadow_t *sh)
{
    return &sh->gen->shadow_inflight[sh->route->index];
}

void shadow_begin(request_t *req, const router_request_t *rr, const router_match_t *m)
{
    const config_route_t *r = req->route;
    proxy_worker_t *pw = req->pw;
    if (!r->has_shadow || req->upgrade_len)
        return;
    const config_shadow_t *sc = &r->shadow;
    if (!(sc->methods & (1u << req->method_id)))
        return;
    if (req->backend->target_group == sc->target_group)
        return; /* the new service answers this one itself (a rollout's step) */
    if (hash_bytes(req->request_id, req->request_id_len) % 100 >= sc->percent)
        return;
    proxy_gen_t *g = req->gen;
    atomic_uint *n = &g->shadow_inflight[r->index];
    if (atomic_fetch_add_explicit(n, 1, memory_order_relaxed) >= sc->max_in_flight) {
        atomic_fetch_sub_explicit(n, 1, memory_order_relaxed);
        count(g, r, SHADOW_DROPPED);
        return;
    }
    config_backend_t b = {.path = sc->path, .target_group = sc->target_group};
    char *target = pw->scratch;
    long tl = router_rewrite_target(r, &b, rr, m, target, pw->scratch_bytes);
    shadow_t *sh = tl >= 0 ? calloc(1, sizeof *sh) : NULL;
    if (sh)
        sh->target = malloc((size_t)tl);
    if (!sh || !sh->target) {
        free(sh);
        atomic_fetch_sub_explicit(n, 1, memory_order_relaxed);
        count(g, r, SHADOW_SKIPPED);
        return;
    }
    memcpy(sh->target, target, (size_t)tl);
    sh->target_len = (size_t)tl;
    sh->pw = pw;
    sh->gen = proxy_gen_ref(g);
    sh->route = r;
    sh->req = req;
    sh->compare = sc->has_compare;
    memcpy(sh->request_id, req->request_id, req->request_id_len);
    sh->request_id_len = req->request_id_len;
    capture_init(&sh->primary, sc->compare.max_body_size);
    sh->next = pw->shadows;
    if (sh->next)
        sh->next->pprev = &sh->next;
    sh->pprev = &pw->shadows;
    pw->shadows = sh;
    req->shadow = sh;
}

/* ---------------------------------------------------------------- send */

/* The part's upstream head: the client request's as the primary got it
 * (body included), with `target` in its request line and the shadow
 * header after it. */
static int part_build(subreq_t *p, const request_t *req, const char *target, size_t target_len)
{
    proxy_worker_t *pw = req->pw;
    pbuf_t *o = pbuf_get(&pw->w->pool);
    if (!o)
        return FE_NOMEM;
    long shift;
    long len = rewrite_retarget(req->out->data, req->out->len, req->head_len, req->method,
                                req->method_len, target, target_len, SHADOW_HEADER,
                                sizeof SHADOW_HEADER - 1, o->data, o->cap, &shift);
    if (len < 0) {
        pbuf_put(&pw->w->pool, o);
        return (int)len;
    }
    o->len = (uint32_t)len;
    request_t *s = &p->req;
    s->out = o;
    s->head_len = (uint32_t)((long)req->head_len + shift);
    s->tp_off = req->tp_off ? (uint32_t)((long)req->tp_off + shift) : 0;
    s->dd_off = req->dd_off ? (uint32_t)((long)req->dd_off + shift) : 0;
    if (req->rto_off) {
        /* The copy's own time left: it runs under the route's timeout (and
         * its per-try timeout), not the client's request. */
        const config_route_t *r = req->route;
        uint64_t left = r->timeout_ms;
        if (r->has_retries && r->retries.per_try_timeout_ms && r->retries.per_try_timeout_ms < left)
            left = r->retries.per_try_timeout_ms;
        http_deadline_write_ms(o->data + req->rto_off + shift, left);
        if (req->gto_off)
            http_deadline_write_grpc(o->data + req->gto_off + shift, left);
    }
    return 0;
}

/* A part ended: its head back to the pool; the copy may be over. */
static void part_ended(subreq_t *p, end_reason_t why)
{
    (void)why;
    shadow_t *sh = p->owner;
    pbuf_put(&sh->pw->w->pool, p->req.out);
    p->req.out = NULL;
    maybe_finish(sh);
}

/* Starts part p of the copy to `group` with the request's head retargeted. */
static void part_start(shadow_t *sh, subreq_t *p, const request_t *req, uint32_t group,
                       const char *target, size_t target_len)
{
    subreq_init(p, req, sh->gen, sh->route, group, part_ended, sh);
    if (sh->compare) {
        const config_shadow_compare_t *cc = &sh->route->shadow.compare;
        p->names = (const char *const *)cc->headers;
        p->n_names = cc->n_headers;
    }
    sh->open_timers++;
    p->state = SUBREQ_RUNNING;
    if (part_build(p, req, target, target_len) != 0) {
        p->state = SUBREQ_FAILED;
        return;
    }
    size_t limit = sh->compare ? sh->route->shadow.compare.max_body_size : 0;
    if (subreq_send(p, limit, sh->route->timeout_ms) != END_OK)
        part_ended(p, END_OK);
}

/* The copy is over before it went: nothing was sent, nothing holds it. */
static void shadow_drop(shadow_t *sh, shadow_result_t why)
{
    if (sh->req)
        sh->req->shadow = NULL;
    sh->req = NULL;
    count(sh->gen, sh->route, why);
    sh->finished = true;
    sh->primary_done = true;
    maybe_finish(sh);
}

void shadow_send(request_t *req)
{
    shadow_t *sh = req->shadow;
    if (!sh || sh->sent)
        return;
    if (req->body_streamed || !req->out) {
        shadow_drop(sh, SHADOW_SKIPPED);
        return;
    }
    sh->sent = true;
    const config_shadow_t *sc = &sh->route->shadow;
    part_start(sh, &sh->parts[0], req, (uint32_t)sc->target_group, sh->target, sh->target_len);
    if (sh->compare && sc->compare.has_noise &&
        rand_next(&sh->pw->rng) % 100 < sc->compare.noise_percent) {
        /* The old system's own target: the primary's request line. */
        const char *sp = memchr(req->out->data, ' ', req->head_len);
        const char *ep =
            sp ? memchr(sp + 1, ' ', req->head_len - (size_t)(sp + 1 - req->out->data)) : NULL;
        if (ep)
            part_start(sh, &sh->parts[1], req, req->group, sp + 1, (size_t)(ep - sp - 1));
    }
    /* A part that failed at once is judged when the client's answer ends. */
}

/* ------------------------------------------------ the client's answer */

void shadow_primary_head(request_t *req, const http_head_t *h)
{
    shadow_t *sh = req->shadow;
    if (!sh || !sh->compare)
        return;
    const config_shadow_compare_t *cc = &sh->route->shadow.compare;
    capture_head(&sh->primary, (const char *const *)cc->headers, cc->n_headers, h,
                 req->head_method);
}

void shadow_primary_body(request_t *req, const char *data, size_t len, bool framed)
{
    shadow_t *sh = req->shadow;
    if (!sh || !sh->compare || !sh->primary.status)
        return;
    sh->primary.framed = framed;
    capture_body(&sh->primary, data, len);
}

const char *shadow_request_done(request_t *req, const access_log_entry_t *e, bool *deferred)
{
    shadow_t *sh = req->shadow;
    *deferred = false;
    if (!sh)
        return NULL;
    if (!sh->primary_done) {
        sh->primary_done = true;
        sh->primary.complete = req->end == END_OK && sh->primary.status != 0;
        if (!sh->sent) {
            /* Answered before its body was whole: the copy never went. */
            shadow_drop(sh, SHADOW_SKIPPED);
            return NULL;
        }
        maybe_finish(sh);
    }
    if (sh->finished)
        return sh->result;
    if (!e)
        return NULL;
    /* The copy goes on: the line waits for its result. */
    deferred_log_t *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    d->e = *e;
    char *w = d->store;
    access_log_str_t *own[] = {&d->e.request_id, &d->e.trace_id,   &d->e.client_ip,    &d->e.method,
                               &d->e.path,       &d->e.user_agent, &d->e.upstream_path};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
        access_log_str_t *s = own[i];
        if (!s->p)
            continue;
        size_t room = (size_t)(d->store + sizeof d->store - w);
        if (s->n > room)
            s->n = room;
        memcpy(w, s->p, s->n);
        s->p = w;
        w += s->n;
    }
    free(sh->log);
    sh->log = d;
    *deferred = true;
    return NULL;
}

void shadow_detach(request_t *req)
{
    shadow_t *sh = req->shadow;
    if (!sh)
        return;
    req->shadow = NULL;
    sh->req = NULL;
    if (!sh->primary_done) {
        /* Released without its line (a stop): nothing to compare with. */
        sh->primary_done = true;
        sh->primary.complete = false;
        if (!sh->sent) {
            sh->finished = true;
        }
    }
    maybe_finish(sh);
}

/* ----------------------------------------------------------- the result */

static void compare_parts(shadow_t *sh)
{
    const json_diff_spec_t *spec = sh->gen->diff_specs[sh->route->index];
    json_diff_side_t old_side = capture_side(&sh->primary);
    json_diff_side_t new_side = capture_side(&sh->parts[0].cap);
    sh->diff_rc = json_diff_run(spec, &old_side, &new_side, &sh->diff);
    sh->noise_rc = FE_INVAL;
    if (sh->parts[1].state == SUBREQ_DONE) {
        json_diff_side_t noise_side = capture_side(&sh->parts[1].cap);
        sh->noise_rc = json_diff_run(spec, &old_side, &noise_side, &sh->noise_diff);
    }
}

static void on_compare_work(uv_work_t *w) { compare_parts(w->data); }

static void on_part_closed(subreq_t *p)
{
    shadow_t *sh = p->owner;
    if (--sh->open_timers == 0) {
        proxy_gen_unref(sh->gen);
        free(sh);
    }
}

/* The copy is over: its log line written, its memory and timers let go. */
static void shadow_close(shadow_t *sh)
{
    proxy_worker_t *pw = sh->pw;
    if (sh->log) {
        sh->log->e.shadow = sh->result;
        if (pw->alog)
            access_log_append(pw->alog, &sh->log->e);
        free(sh->log);
        sh->log = NULL;
    }
    atomic_fetch_sub_explicit(inflight(sh), 1, memory_order_relaxed);
    sh->closing = true;
    *sh->pprev = sh->next;
    if (sh->next)
        sh->next->pprev = sh->pprev;
    capture_free(&sh->primary);
    free(sh->target);
    sh->target = NULL;
    unsigned timers = sh->open_timers;
    for (size_t i = 0; i < 2; i++) {
        subreq_t *p = &sh->parts[i];
        pbuf_put(&pw->w->pool, p->req.out);
        p->req.out = NULL;
        if (p->state != SUBREQ_IDLE)
            subreq_close(p, on_part_closed);
        else
            capture_free(&p->cap);
    }
    if (timers == 0) {
        proxy_gen_unref(sh->gen);
        free(sh);
    }
}

/* The comparison's verdict, counted. */
static void judge(shadow_t *sh)
{
    if (sh->diff_rc != 0) {
        sh->result = "error"; /* no memory to compare with */
        count(sh->gen, sh->route, SHADOW_ERROR);
    } else {
        shadow_result_t res = shadow_route_compared(figures(sh->gen, sh->route), &sh->diff,
                                                    sh->noise_rc == 0 ? &sh->noise_diff : NULL,
                                                    sh->request_id, sh->request_id_len);
        sh->result = res == SHADOW_MATCH ? "match" : "mismatch";
        json_diff_result_free(&sh->diff);
        rollout_t *ro = sh->gen->rollouts ? sh->gen->rollouts[sh->route->index] : NULL;
        if (ro) /* the rollout's max_mismatch_rate */
            rollout_record_shadow(ro, time_now_ms(), res == SHADOW_MATCH);
        board_route_t *br = sh->gen->board_routes ? sh->gen->board_routes[sh->route->index] : NULL;
        board_record_shadow(br, (unsigned)sh->pw->w->index, time_now_ms(), res == SHADOW_MATCH);
    }
    if (sh->noise_rc == 0)
        json_diff_result_free(&sh->noise_diff);
}

static void after_compare_work(uv_work_t *w, int status)
{
    shadow_t *sh = w->data;
    sh->comparing = false;
    if (status != 0) {
        /* Cancelled at stop: nothing ran. */
        sh->diff_rc = sh->noise_rc = FE_INVAL;
    }
    judge(sh);
    sh->finished = true;
    maybe_finish(sh);
}

static void maybe_finish(shadow_t *sh)
{
    if (sh->comparing || sh->closing || sh->held)
        return;
    if (!sh->finished) {
        for (size_t i = 0; i < 2; i++)
            if (sh->parts[i].state == SUBREQ_RUNNING)
                return;
        if (!sh->primary_done)
            return;
        if (sh->parts[0].state == SUBREQ_FAILED) {
            sh->result = "error";
            count(sh->gen, sh->route, SHADOW_ERROR);
        } else if (!sh->compare) {
            sh->result = NULL;
        } else if (!sh->primary.complete) {
            /* The client got no whole answer: nothing to compare with. */
            count(sh->gen, sh->route, SHADOW_SKIPPED);
        } else {
            size_t bytes = sh->primary.len + sh->parts[0].cap.len + sh->parts[1].cap.len;
            if (bytes > SHADOW_INLINE_COMPARE_BYTES) {
                sh->work.data = sh;
                if (uv_queue_work(sh->pw->loop, &sh->work, on_compare_work, after_compare_work) ==
                    0) {
                    sh->comparing = true;
                    return;
                }
            }
            compare_parts(sh);
            judge(sh);
        }
        sh->finished = true;
    }
    if (sh->req)
        return; /* the request still reads it (its log line) */
    shadow_close(sh);
}

void shadow_worker_stop(proxy_worker_t *pw)
{
    shadow_t *sh = pw->shadows;
    while (sh) {
        shadow_t *next = sh->next;
        sh->held = true;
        for (size_t i = 0; i < 2; i++)
            subreq_abort(&sh->parts[i], END_UPSTREAM_RESET);
        sh->held = false;
        if (sh->req)
            shadow_detach(sh->req); /* closes it, unless it compares in the thread pool */
        else
            maybe_finish(sh);
        sh = next;
    }
}
