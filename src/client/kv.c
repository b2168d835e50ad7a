/* One redis connection on one loop; see kv.h. hiredis owns the socket and
 * holds each call until a reply or its own free; kv adds what hiredis 0.14
 * lacks: deadlines (a heap under one timer), a connect timeout, asynchronous
 * name resolution, reconnection, and a libuv poller that passes socket errors
 * on (the one in hiredis/adapters/libuv.h drops them: libuv stops polling on
 * POLLERR, so a refused connect or a reset would go unseen). */
#include "client/kv.h"

#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/addr.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/rand.h"

typedef enum {
    KV_DOWN,       /* waiting before the next attempt */
    KV_RESOLVING,  /* uv_getaddrinfo in flight */
    KV_CONNECTING, /* hiredis connecting */
    KV_UP,         /* accepting calls */
    KV_CLOSING
} kv_state_t;

typedef enum { CALL_WAITING, CALL_ENDED } call_state_t;

struct kv_call {
    kv_t *kv;
    kv_done_fn done;
    kv_bulk_fn bulk; /* instead of done: a bulk-string reply */
    void *ctx;
    kv_script_t *script;
    uint64_t deadline_ms;
    uint64_t replies_at_send; /* kv->replies when sent: none since means silence */
    size_t heap_idx;
    call_state_t state;
    bool tried_eval; /* NOSCRIPT already answered: EVAL was sent */
    size_t bytes;    /* of the arguments */
    size_t argc;
    const char **argv; /* "EVALSHA", sha1, numkeys, keys and args (copied after the struct) */
    size_t *lens;
    char numkeys[24];
};

struct kv {
    uv_loop_t *loop;
    kv_opts_t opts;
    addr_hostport_t hp;
    char address[300]; /* for the log */
    bool numeric;      /* hp.host is an IP literal: no resolution */
    kv_state_t state;
    redisAsyncContext *ac; /* non-NULL until hiredis has freed it */
    uv_timer_t conn_timer; /* connect timeout, then the backoff wait */
    uv_timer_t call_timer; /* the earliest deadline in heap */
    uv_getaddrinfo_t gai;
    bool resolving;
    int handles_open;
    uint64_t backoff_ms; /* the next wait */
    uint64_t rng;
    uint64_t errors;
    uint64_t replies;       /* replies received, ever */
    uint64_t last_reply_ms; /* or the time the connection was made */
    size_t inflight;        /* calls hiredis holds, timed out or cancelled ones included */
    size_t inflight_bytes;  /* their arguments' bytes */
    size_t heap_len;
    kv_call_t **heap; /* waiting calls, earliest deadline first */
};

static void kv_connect(kv_t *kv);
static void kv_maybe_free(kv_t *kv);
static void kv_drop(kv_t *kv);
static void kv_schedule_reconnect(kv_t *kv);

/* ---- the poller: hiredis's event hooks on a uv_poll_t of the context's socket ---- */

typedef struct kv_poll {
    kv_t *kv;
    redisAsyncContext *ac; /* NULL once hiredis let go */
    uv_poll_t handle;
    int events;
    bool closed;
} kv_poll_t;

static void kv_poll_on_event(uv_poll_t *h, int status, int events)
{
    kv_poll_t *p = h->data;
    if (status < 0) {
        /* libuv stopped polling: hiredis reads the socket's error and lets
         * go of the context; if it does not, kv does. */
        if (p->ac)
            redisAsyncHandleRead(p->ac);
        if (p->ac) {
            kv_t *kv = p->kv;
            bool connected = (p->ac->c.flags & REDIS_CONNECTED) != 0;
            log_limited(LOG_WARN, "redis %s: socket error: %s", kv->address, uv_strerror(status));
            kv->errors++;
            kv_drop(kv);
            if (!connected) /* else onDisconnect does */
                kv_schedule_reconnect(kv);
        }
        return;
    }
    if (p->ac && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void kv_poll_set(kv_poll_t *p, int events)
{
    if (p->closed)
        return;
    p->events = events;
    if (events)
        uv_poll_start(&p->handle, events, kv_poll_on_event);
    else
        uv_poll_stop(&p->handle);
}

static void kv_poll_add_read(void *d) { kv_poll_set(d, ((kv_poll_t *)d)->events | UV_READABLE); }
static void kv_poll_del_read(void *d) { kv_poll_set(d, ((kv_poll_t *)d)->events & ~UV_READABLE); }
static void kv_poll_add_write(void *d) { kv_poll_set(d, ((kv_poll_t *)d)->events | UV_WRITABLE); }
static void kv_poll_del_write(void *d) { kv_poll_set(d, ((kv_poll_t *)d)->events & ~UV_WRITABLE); }

static void kv_poll_on_close(uv_handle_t *h)
{
    kv_poll_t *p = h->data;
    kv_t *kv = p->kv;
    free(p);
    kv->handles_open--;
    kv_maybe_free(kv);
}

/* hiredis is freeing the context (it closes the socket right after). */
static void kv_poll_cleanup(void *d)
{
    kv_poll_t *p = d;
    if (p->closed)
        return;
    p->closed = true;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->handle, kv_poll_on_close);
}

static int kv_poll_attach(kv_t *kv, redisAsyncContext *ac)
{
    kv_poll_t *p = calloc(1, sizeof *p);
    if (!p)
        return FE_NOMEM;
    if (uv_poll_init(kv->loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return FE_IO;
    }
    p->kv = kv;
    p->ac = ac;
    p->handle.data = p;
    kv->handles_open++;
    ac->ev.data = p;
    ac->ev.addRead = kv_poll_add_read;
    ac->ev.delRead = kv_poll_del_read;
    ac->ev.addWrite = kv_poll_add_write;
    ac->ev.delWrite = kv_poll_del_write;
    ac->ev.cleanup = kv_poll_cleanup;
    return 0;
}

/* ---- deadlines: a binary min-heap of waiting calls ---- */

static void heap_set(kv_t *kv, size_t i, kv_call_t *c)
{
    kv->heap[i] = c;
    c->heap_idx = i;
}

static void heap_up(kv_t *kv, size_t i)
{
    kv_call_t *c = kv->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (kv->heap[p]->deadline_ms <= c->deadline_ms)
            break;
        heap_set(kv, i, kv->heap[p]);
        i = p;
    }
    heap_set(kv, i, c);
}

static void heap_down(kv_t *kv, size_t i)
{
    kv_call_t *c = kv->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint64_t best = c->deadline_ms;
        if (l < kv->heap_len && kv->heap[l]->deadline_ms < best) {
            m = l;
            best = kv->heap[l]->deadline_ms;
        }
        if (l + 1 < kv->heap_len && kv->heap[l + 1]->deadline_ms < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(kv, i, kv->heap[m]);
        i = m;
    }
    heap_set(kv, i, c);
}

static void heap_remove(kv_t *kv, kv_call_t *c)
{
    size_t i = c->heap_idx;
    kv_call_t *last = kv->heap[--kv->heap_len];
    if (last != c) {
        heap_set(kv, i, last);
        heap_up(kv, i);
        heap_down(kv, last->heap_idx);
    }
}

static void kv_on_call_timer(uv_timer_t *t);

/* Arms the timer for the earliest deadline (or stops it). */
static void kv_arm_call_timer(kv_t *kv)
{
    if (kv->state == KV_CLOSING)
        return;
    if (kv->heap_len == 0) {
        uv_timer_stop(&kv->call_timer);
        return;
    }
    uint64_t now = uv_now(kv->loop), at = kv->heap[0]->deadline_ms;
    uv_timer_start(&kv->call_timer, kv_on_call_timer, at > now ? at - now : 0, 0);
}

/* Takes a waiting call out of the heap: nothing else ends it. The memory
 * stays with hiredis until it lets go of the call (kv_on_reply). */
static void call_finish(kv_call_t *c)
{
    heap_remove(c->kv, c);
    c->state = CALL_ENDED;
}

/* Ends a waiting call without a reply to hand over: done (or bulk) told. */
static void call_end(kv_call_t *c, int status, const long long *ints, size_t n)
{
    call_finish(c);
    if (status != 0)
        c->kv->errors++;
    if (c->bulk)
        c->bulk(c->ctx, status, NULL, 0, 0);
    else
        c->done(c->ctx, status, ints, n);
}

/* A bulk caller's reply: a string of at most KV_MAX_BULK_BYTES, nil or an
 * integer (else FE_PARSE). */
static void call_end_bulk(kv_call_t *c, const redisReply *r)
{
    bool str = r->type == REDIS_REPLY_STRING;
    if (str ? r->len > KV_MAX_BULK_BYTES
            : r->type != REDIS_REPLY_NIL && r->type != REDIS_REPLY_INTEGER) {
        call_end(c, FE_PARSE, NULL, 0);
        return;
    }
    call_finish(c);
    c->bulk(c->ctx, 0, str ? r->str : NULL, str ? r->len : 0,
            r->type == REDIS_REPLY_INTEGER ? r->integer : 0);
}

/* ---- the connection ---- */

/* Lets go of the hiredis context: calls still waiting end with FE_IO (inside
 * this call, or right after the hiredis callback running now). Never from
 * onConnect: hiredis frees the context itself after a failed connect and
 * still uses it after a successful one. */
static void kv_drop(kv_t *kv)
{
    redisAsyncContext *ac = kv->ac;
    if (!ac)
        return;
    bool deferred = (ac->c.flags & REDIS_IN_CALLBACK) != 0;
    redisAsyncFree(ac);
    if (!deferred) /* freed; onDisconnect may have said so already */
        kv->ac = NULL;
}

static void kv_on_conn_timer(uv_timer_t *t);

/* After a failure or a drop: waits backoff (jittered in [d/2, d]), then tries again. */
static void kv_schedule_reconnect(kv_t *kv)
{
    if (kv->state == KV_CLOSING)
        return;
    kv->state = KV_DOWN;
    uint64_t d = kv->backoff_ms;
    uint64_t wait = d / 2 + (uint64_t)(rand_unit(&kv->rng) * (double)(d - d / 2));
    kv->backoff_ms = d >= kv->opts.backoff_max_ms / 2 ? kv->opts.backoff_max_ms : d * 2;
    uv_timer_start(&kv->conn_timer, kv_on_conn_timer, wait, 0);
}

static void kv_on_conn_timer(uv_timer_t *t)
{
    kv_t *kv = t->data;
    if (kv->state == KV_DOWN) {
        kv_connect(kv);
    } else if (kv->state == KV_CONNECTING) {
        log_limited(LOG_WARN, "redis %s: connect timed out", kv->address);
        kv->errors++;
        kv_drop(kv); /* not connected yet: no onDisconnect follows */
        kv_schedule_reconnect(kv);
    }
}

static void kv_on_connect(const redisAsyncContext *ac, int status)
{
    kv_t *kv = ac->data;
    if (status != REDIS_OK) { /* hiredis frees the context after this */
        log_limited(LOG_WARN, "redis %s: cannot connect: %s", kv->address,
                    ac->errstr[0] ? ac->errstr : "error");
        kv->ac = NULL;
        kv->errors++;
        kv_schedule_reconnect(kv);
        return;
    }
    uv_timer_stop(&kv->conn_timer);
    redisEnableKeepAlive((redisContext *)&ac->c); /* a peer that vanished is noticed */
    kv->state = KV_UP;
    kv->backoff_ms = kv->opts.backoff_min_ms;
    kv->last_reply_ms = uv_now(kv->loop);
    log_info("redis %s: connected", kv->address);
}

static void kv_on_disconnect(const redisAsyncContext *ac, int status)
{
    kv_t *kv = ac->data;
    kv->ac = NULL;
    if (kv->state == KV_CLOSING) {
        kv_maybe_free(kv);
        return;
    }
    if (status != REDIS_OK) {
        log_limited(LOG_WARN, "redis %s: connection lost: %s", kv->address,
                    ac->errstr[0] ? ac->errstr : "error");
        kv->errors++;
    }
    kv_schedule_reconnect(kv);
}

/* Opens the hiredis context to ip (a literal). */
static void kv_connect_ip(kv_t *kv, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, kv->hp.port);
    if (!ac || ac->err) {
        log_limited(LOG_WARN, "redis %s: cannot connect: %s", kv->address,
                    ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        goto fail;
    }
    ac->data = kv;
    /* hiredis 0.14 opens it without: a process ficus execs must not inherit it */
    int fl = fcntl(ac->c.fd, F_GETFD);
    if (fl >= 0)
        fcntl(ac->c.fd, F_SETFD, fl | FD_CLOEXEC);
    if (kv_poll_attach(kv, ac) != 0) {
        log_limited(LOG_WARN, "redis %s: cannot poll its socket", kv->address);
        redisAsyncFree(ac);
        goto fail;
    }
    redisAsyncSetDisconnectCallback(ac, kv_on_disconnect);
    redisAsyncSetConnectCallback(ac, kv_on_connect); /* also waits for writability */
    kv->ac = ac;
    kv->state = KV_CONNECTING;
    uint64_t t = kv->opts.timeout_ms > KV_CONNECT_TIMEOUT_MIN_MS ? kv->opts.timeout_ms
                                                                 : KV_CONNECT_TIMEOUT_MIN_MS;
    uv_timer_start(&kv->conn_timer, kv_on_conn_timer, t, 0);
    return;
fail:
    kv->errors++;
    kv_schedule_reconnect(kv);
}

static void kv_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    kv_t *kv = req->data;
    kv->resolving = false;
    char ip[INET6_ADDRSTRLEN] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
        else
            uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    }
    if (res)
        uv_freeaddrinfo(res);
    if (kv->state == KV_CLOSING) {
        kv_maybe_free(kv);
        return;
    }
    if (!ip[0]) {
        log_limited(LOG_WARN, "redis %s: cannot resolve: %s", kv->address,
                    status ? uv_strerror(status) : "no address");
        kv->errors++;
        kv_schedule_reconnect(kv);
        return;
    }
    kv_connect_ip(kv, ip);
}

static void kv_connect(kv_t *kv)
{
    if (kv->numeric) {
        kv_connect_ip(kv, kv->hp.host);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    kv->gai.data = kv;
    int rc = uv_getaddrinfo(kv->loop, &kv->gai, kv_on_resolved, kv->hp.host, NULL, &hints);
    if (rc != 0) {
        log_limited(LOG_WARN, "redis %s: cannot resolve: %s", kv->address, uv_strerror(rc));
        kv->errors++;
        kv_schedule_reconnect(kv);
        return;
    }
    kv->resolving = true;
    kv->state = KV_RESOLVING;
}

/* ---- calls ---- */

/* The integers of a reply into ints[]: their count, or FE_PARSE. */
static int reply_ints(const redisReply *r, long long *ints)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        ints[0] = r->integer;
        return 1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements > KV_MAX_INTS)
        return FE_PARSE;
    for (size_t i = 0; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return FE_PARSE;
        ints[i] = r->element[i]->integer;
    }
    return (int)r->elements;
}

static void kv_on_reply(redisAsyncContext *ac, void *r, void *priv);

static int call_send(kv_call_t *c)
{
    return redisAsyncCommandArgv(c->kv->ac, kv_on_reply, c, (int)c->argc, c->argv, c->lens) ==
                   REDIS_OK
               ? 0
               : FE_IO;
}

static void kv_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    kv_call_t *c = priv;
    kv_t *kv = c->kv;
    redisReply *reply = r;
    if (!reply) { /* the context is going away */
        if (kv->state == KV_UP)
            kv->state = KV_DOWN;
    } else {
        kv->replies++;
        kv->last_reply_ms = uv_now(kv->loop);
    }
    if (c->state == CALL_WAITING) {
        if (!reply) {
            call_end(c, FE_IO, NULL, 0);
        } else if (reply->type == REDIS_REPLY_ERROR && !c->tried_eval &&
                   strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            c->tried_eval = true;
            c->argv[0] = "EVAL";
            c->lens[0] = 4;
            c->argv[1] = c->script->source;
            c->lens[1] = strlen(c->script->source);
            if (kv->state == KV_UP && call_send(c) == 0)
                return; /* hiredis holds it again */
            call_end(c, FE_IO, NULL, 0);
        } else if (reply->type == REDIS_REPLY_ERROR) {
            log_limited(LOG_WARN, "redis %s: %.200s", kv->address, reply->str);
            call_end(c, FE_IO, NULL, 0);
        } else if (c->bulk) {
            call_end_bulk(c, reply);
        } else {
            /* Most replies are a few integers: the heap only for long arrays. */
            long long small[16], *ints = small;
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 16 &&
                reply->elements <= KV_MAX_INTS)
                ints = malloc(reply->elements * sizeof *ints);
            int n = ints ? reply_ints(reply, ints) : FE_NOMEM;
            if (n < 0)
                call_end(c, n == FE_NOMEM ? FE_IO : n, NULL, 0);
            else
                call_end(c, 0, ints, (size_t)n);
            if (ints != small)
                free(ints);
        }
    }
    kv->inflight--;
    kv->inflight_bytes -= c->bytes;
    free(c);
}

static void kv_on_call_timer(uv_timer_t *t)
{
    kv_t *kv = t->data;
    uint64_t now = uv_now(kv->loop);
    bool stalled = false;
    while (kv->heap_len > 0 && kv->heap[0]->deadline_ms <= now) {
        kv_call_t *c = kv->heap[0];
        /* Nothing at all came back since it was sent, for long enough: the
         * connection (or redis) is stuck; another one may not be. */
        uint64_t stall_ms = 4 * kv->opts.timeout_ms;
        if (stall_ms < KV_STALL_MIN_MS)
            stall_ms = KV_STALL_MIN_MS;
        if (c->replies_at_send == kv->replies && now - kv->last_reply_ms >= stall_ms)
            stalled = true;
        call_end(c, FE_AGAIN, NULL, 0);
    }
    if (stalled && kv->state == KV_UP) {
        log_limited(LOG_WARN, "redis %s: no reply for %llu ms, reconnecting", kv->address,
                    (unsigned long long)(now - kv->last_reply_ms));
        kv->errors++;
        kv->state = KV_DOWN;
        kv->backoff_ms = kv->opts.backoff_min_ms;
        kv_drop(kv); /* connected: onDisconnect schedules the next attempt */
    }
    kv_arm_call_timer(kv);
}

static void sha1_hex(const char *s, char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(s, strlen(s), md, &len, EVP_sha1(), NULL) != 1 || len != 20) {
        out[0] = '\0';
        return;
    }
    for (unsigned i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A call of either kind: done for integer replies, or bulk; the arguments'
 * bytes together at most max_bytes. */
static kv_call_t *eval(kv_t *kv, kv_script_t *script, size_t nkeys, const char *const *args,
                       const size_t *arg_lens, size_t nargs, uint64_t timeout_ms, kv_done_fn done,
                       kv_bulk_fn bulk, size_t max_bytes, void *ctx)
{
    if (!kv || !script || !script->source || !(done || bulk) || nkeys > nargs ||
        nargs > KV_MAX_ARGS || (nargs && (!args || !arg_lens)))
        return NULL;
    size_t bytes = 0;
    for (size_t i = 0; i < nargs; i++) {
        if (!args[i] || arg_lens[i] > max_bytes - bytes)
            return NULL;
        bytes += arg_lens[i];
    }
    if (kv->state != KV_UP || kv->inflight >= KV_MAX_INFLIGHT ||
        bytes > KV_MAX_INFLIGHT_BYTES - kv->inflight_bytes) {
        kv->errors++;
        return NULL;
    }
    if (!script->sha1[0])
        sha1_hex(script->source, script->sha1);
    size_t argc = nargs + 3;
    kv_call_t *c = malloc(sizeof *c + argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (!c) {
        kv->errors++;
        return NULL;
    }
    *c = (kv_call_t){.kv = kv,
                     .done = done,
                     .bulk = bulk,
                     .ctx = ctx,
                     .script = script,
                     .bytes = bytes,
                     .argc = argc};
    c->lens = (size_t *)(c + 1);
    c->argv = (const char **)(c->lens + argc);
    char *p = (char *)(c->argv + argc);
    snprintf(c->numkeys, sizeof c->numkeys, "%zu", nkeys);
    c->argv[0] = "EVALSHA";
    c->lens[0] = 7;
    c->argv[1] = script->sha1;
    c->lens[1] = strlen(script->sha1);
    if (c->lens[1] == 0) { /* no digest: EVAL straight away */
        c->tried_eval = true;
        c->argv[0] = "EVAL";
        c->lens[0] = 4;
        c->argv[1] = script->source;
        c->lens[1] = strlen(script->source);
    }
    c->argv[2] = c->numkeys;
    c->lens[2] = strlen(c->numkeys);
    for (size_t i = 0; i < nargs; i++) {
        memcpy(p, args[i], arg_lens[i]);
        c->argv[3 + i] = p;
        c->lens[3 + i] = arg_lens[i];
        p += arg_lens[i];
    }
    if (call_send(c) != 0) {
        free(c);
        kv->errors++;
        return NULL;
    }
    kv->inflight++;
    kv->inflight_bytes += bytes;
    c->replies_at_send = kv->replies;
    c->deadline_ms = uv_now(kv->loop) + (timeout_ms ? timeout_ms : kv->opts.timeout_ms);
    c->heap_idx = kv->heap_len;
    kv->heap[kv->heap_len++] = c;
    heap_up(kv, c->heap_idx);
    if (kv->heap[0] == c)
        kv_arm_call_timer(kv);
    return c;
}

void kv_cancel(kv_call_t *call)
{
    if (!call || call->state != CALL_WAITING)
        return;
    call_finish(call);
}

uint64_t kv_errors(const kv_t *kv) { return kv ? kv->errors : 0; }

bool kv_connected(const kv_t *kv) { return kv && kv->state == KV_UP; }

/* ---- lifecycle ---- */

static void kv_maybe_free(kv_t *kv)
{
    if (kv->state != KV_CLOSING || kv->handles_open > 0 || kv->resolving || kv->ac)
        return;
    free(kv->heap);
    free(kv);
}

static void kv_on_handle_close(uv_handle_t *h)
{
    kv_t *kv = h->data;
    kv->handles_open--;
    kv_maybe_free(kv);
}

kv_t *kv_new(uv_loop_t *loop, const char *address, const kv_opts_t *o)
{
    const char *why;
    if (!loop || !address || !o || o->timeout_ms == 0 || strlen(address) >= 300)
        return NULL;
    kv_t *kv = calloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    if (addr_split(address, &kv->hp, &why) != 0 || kv->hp.host[0] == '\0' || kv->hp.port == 0) {
        log_error("redis %s: %s", address, why ? why : "a host and a port are needed");
        goto fail_free;
    }
    kv->heap = calloc(KV_MAX_INFLIGHT, sizeof *kv->heap);
    if (!kv->heap)
        goto fail_free;
    struct sockaddr_storage ss;
    socklen_t sl;
    kv->numeric = addr_numeric(&kv->hp, &ss, &sl) == 0;
    snprintf(kv->address, sizeof kv->address, "%s", address);
    kv->loop = loop;
    kv->opts = *o;
    if (kv->opts.backoff_min_ms == 0)
        kv->opts.backoff_min_ms = 1;
    if (kv->opts.backoff_max_ms < kv->opts.backoff_min_ms)
        kv->opts.backoff_max_ms = kv->opts.backoff_min_ms;
    kv->backoff_ms = kv->opts.backoff_min_ms;
    kv->rng = rand_seed((uint64_t)(uintptr_t)kv);
    uv_timer_init(loop, &kv->conn_timer);
    uv_timer_init(loop, &kv->call_timer);
    kv->conn_timer.data = kv;
    kv->call_timer.data = kv;
    kv->handles_open = 2;
    kv_connect(kv);
    return kv;
fail_free:
    free(kv->heap);
    free(kv);
    return NULL;
}

void kv_close(kv_t *kv)
{
    if (!kv || kv->state == KV_CLOSING)
        return;
    kv->state = KV_CLOSING;
    uv_close((uv_handle_t *)&kv->conn_timer, kv_on_handle_close);
    uv_close((uv_handle_t *)&kv->call_timer, kv_on_handle_close);
    if (kv->resolving)
        uv_cancel((uv_req_t *)&kv->gai); /* kv_on_resolved runs either way */
    kv_drop(kv);
}

kv_call_t *kv_eval(kv_t *kv, kv_script_t *script, size_t nkeys, const char *const *args,
                   const size_t *arg_lens, size_t nargs, uint64_t timeout_ms, kv_done_fn done,
                   void *ctx)
{
    return eval(kv, script, nkeys, args, arg_lens, nargs, timeout_ms, done, NULL, KV_MAX_ARG_BYTES,
                ctx);
}

kv_call_t *kv_eval_bulk(kv_t *kv, kv_script_t *script, size_t nkeys, const char *const *args,
                        const size_t *arg_lens, size_t nargs, uint64_t timeout_ms, kv_bulk_fn done,
                        void *ctx)
{
    return eval(kv, script, nkeys, args, arg_lens, nargs, timeout_ms, NULL, done, KV_MAX_BULK_BYTES,
                ctx);
}
