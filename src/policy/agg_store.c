/* The aggregation cache's fleet-wide store in redis; see agg_store.h. Two
 * scripts are the whole protocol: get_or_lock answers a body, takes the
 * entry's lock or says it is taken; put_unlock stores a body (or not) and
 * deletes the lock only when its value is this store's token. Lookups that
 * wait for another instance sit in one list, ordered by when they look
 * again, under one timer. */
#include "policy/agg_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/rand.h"

#define PREFIX_LEN (sizeof AGG_STORE_PREFIX - 1)
#define SUFFIX_LEN (sizeof AGG_STORE_LOCK_SUFFIX - 1)
#define TOKEN_BYTES 48
#define NUM_BYTES 24 /* a uint64_t in decimal, with its NUL */

_Static_assert(2 * (PREFIX_LEN + AGG_STORE_MAX_KEY_BYTES) + SUFFIX_LEN + TOKEN_BYTES + NUM_BYTES +
                       AGG_STORE_MAX_BODY_BYTES <=
                   KV_MAX_BULK_BYTES,
               "a put's arguments fit in one kv call");

/* KEYS: value, lock; ARGV: token, lock_ms, max bytes -> the body; 1: the
 * lock taken; 0: held by another; -1: a value over the bound (not read). */
static kv_script_t get_or_lock = {
    .source = "if redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[3]) then return -1 end\n"
              "local v = redis.call('GET', KEYS[1])\n"
              "if v then return v end\n"
              "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end\n"
              "return 0\n"};

/* KEYS: value, lock; ARGV: token, body, ttl_ms (0: nothing stored) -> 1
 * when the lock was ours and is gone, 0 when it was not ours. */
static kv_script_t put_unlock = {.source = "if tonumber(ARGV[3]) > 0 then\n"
                                           "  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
                                           "end\n"
                                           "if redis.call('GET', KEYS[2]) == ARGV[1] then\n"
                                           "  redis.call('DEL', KEYS[2])\n"
                                           "  return 1\n"
                                           "end\n"
                                           "return 0\n"};

typedef enum {
    OP_ASKING, /* a get_or_lock call in flight */
    OP_WAITING /* in the store's list until due_ms */
} op_state_t;

struct agg_store_op {
    agg_store_t *s;
    agg_store_done_fn done; /* NULL once cancelled */
    void *ctx;
    op_state_t state;
    uint64_t due_ms;                  /* OP_WAITING: the next look */
    uint64_t deadline_ms;             /* no look starts after this */
    bool waited;                      /* counted in waits */
    struct agg_store_op *prev, *next; /* OP_WAITING: the list */
    char lock_text[NUM_BYTES];
    size_t key_len; /* of AGG_STORE_PREFIX key; the lock's key adds the suffix */
    char key[];     /* AGG_STORE_PREFIX key AGG_STORE_LOCK_SUFFIX */
};

struct agg_store {
    uv_loop_t *loop;
    kv_t *kv;
    uv_timer_t timer; /* the first waiting lookup's next look */
    bool closing;
    uint64_t timeout_ms;
    uint64_t rng;
    char token[TOKEN_BYTES]; /* this store's lock value */
    size_t token_len;
    char max_text[NUM_BYTES]; /* AGG_STORE_MAX_BODY_BYTES, for get_or_lock */
    size_t max_text_len;
    size_t lookups;               /* in flight, cancelled ones until answered */
    agg_store_op_t *first, *last; /* waiting, earliest due first */
    agg_store_stats_t stats;
    uint64_t errors; /* on top of the kv's */
};

/* ---- keys ---- */

/* AGG_STORE_PREFIX key AGG_STORE_LOCK_SUFFIX into out: the value key's length. */
static size_t keys_make(char *out, const char *key, size_t key_len)
{
    memcpy(out, AGG_STORE_PREFIX, PREFIX_LEN);
    memcpy(out + PREFIX_LEN, key, key_len);
    memcpy(out + PREFIX_LEN + key_len, AGG_STORE_LOCK_SUFFIX, SUFFIX_LEN);
    return PREFIX_LEN + key_len;
}

/* ms in decimal into out (NUM_BYTES), cut to AGG_STORE_MAX_TTL_MS: its length. */
static size_t ms_text(char *out, uint64_t ms)
{
    if (ms > AGG_STORE_MAX_TTL_MS)
        ms = AGG_STORE_MAX_TTL_MS;
    return (size_t)snprintf(out, NUM_BYTES, "%llu", (unsigned long long)ms);
}

static bool key_ok(const char *key, size_t key_len)
{
    return key && key_len > 0 && key_len <= AGG_STORE_MAX_KEY_BYTES;
}

/* ---- the waiting list ---- */

static void on_timer(uv_timer_t *t);

static void timer_arm(agg_store_t *s)
{
    if (s->closing)
        return;
    if (!s->first) {
        uv_timer_stop(&s->timer);
        return;
    }
    uint64_t now = uv_now(s->loop), at = s->first->due_ms;
    uv_timer_start(&s->timer, on_timer, at > now ? at - now : 0, 0);
}

/* Into the list by due_ms (from the end: new looks are mostly the latest). */
static void wait_insert(agg_store_t *s, agg_store_op_t *op)
{
    agg_store_op_t *after = s->last;
    while (after && after->due_ms > op->due_ms)
        after = after->prev;
    op->prev = after;
    op->next = after ? after->next : s->first;
    if (op->next)
        op->next->prev = op;
    else
        s->last = op;
    if (after)
        after->next = op;
    else
        s->first = op;
    op->state = OP_WAITING;
    if (s->first == op)
        timer_arm(s);
}

static void wait_remove(agg_store_t *s, agg_store_op_t *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        s->first = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        s->last = op->prev;
    op->prev = op->next = NULL;
}

/* ---- lookups ---- */

/* Ends op: its memory goes before done runs, so done may start another. */
static void op_end(agg_store_op_t *op, agg_store_result_t r, agg_body_t *body)
{
    agg_store_t *s = op->s;
    agg_store_done_fn done = op->done;
    void *ctx = op->ctx;
    s->lookups--;
    free(op);
    if (done)
        done(ctx, r, body);
    else
        agg_body_unref(body);
}

static int unlock_send(agg_store_t *s, const char *keys, size_t key_len, const char *body,
                       size_t len, uint64_t ttl_ms);

static void on_reply(void *ctx, int status, const char *str, size_t len, long long i)
{
    agg_store_op_t *op = ctx;
    agg_store_t *s = op->s;
    if (status != 0 || s->closing) { /* failures are counted by the kv */
        op_end(op, AGG_STORE_ERROR, NULL);
        return;
    }
    if (!op->done) { /* cancelled: a lock it took is let go for the others */
        if (!str && i == 1)
            unlock_send(s, op->key, op->key_len, NULL, 0, 0);
        op_end(op, AGG_STORE_ERROR, NULL);
        return;
    }
    if (str) {
        agg_body_t *body = agg_body_new(str, len);
        if (!body) {
            s->errors++;
            op_end(op, AGG_STORE_ERROR, NULL);
            return;
        }
        s->stats.hits++;
        op_end(op, AGG_STORE_HIT, body);
        return;
    }
    if (i == 1) {
        s->stats.fetches++;
        op_end(op, AGG_STORE_FETCH, NULL);
        return;
    }
    if (i != 0) { /* -1: a value over the bound; else not our script's answer */
        int shown = op->key_len < 200 ? (int)op->key_len : 200;
        if (i == -1)
            log_limited(LOG_WARN, "aggregation store: %.*s is over %d bytes, not read", shown,
                        op->key, AGG_STORE_MAX_BODY_BYTES);
        else
            log_limited(LOG_WARN, "aggregation store: %.*s: unexpected answer %lld", shown, op->key,
                        i);
        s->errors++;
        op_end(op, AGG_STORE_ERROR, NULL);
        return;
    }
    if (!op->waited) {
        op->waited = true;
        s->stats.waits++;
    }
    uint64_t now = uv_now(s->loop);
    if (now >= op->deadline_ms) {
        s->stats.lates++;
        op_end(op, AGG_STORE_LATE, NULL);
        return;
    }
    uint64_t span = AGG_STORE_POLL_MAX_MS - AGG_STORE_POLL_MIN_MS + 1;
    op->due_ms = now + AGG_STORE_POLL_MIN_MS + rand_next(&s->rng) % span;
    if (op->due_ms > op->deadline_ms)
        op->due_ms = op->deadline_ms; /* one last look at the deadline */
    wait_insert(s, op);
}

/* One get_or_lock call for op: 0, or FE_IO when the kv refused it. */
static int op_ask(agg_store_op_t *op)
{
    agg_store_t *s = op->s;
    const char *args[] = {op->key, op->key, s->token, op->lock_text, s->max_text};
    size_t lens[] = {op->key_len, op->key_len + SUFFIX_LEN, s->token_len, strlen(op->lock_text),
                     s->max_text_len};
    if (!kv_eval_bulk(s->kv, &get_or_lock, 2, args, lens, 5, s->timeout_ms, on_reply, op))
        return FE_IO;
    op->state = OP_ASKING;
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    agg_store_t *s = t->data;
    uint64_t now = uv_now(s->loop);
    while (!s->closing && s->first && s->first->due_ms <= now) {
        agg_store_op_t *op = s->first;
        wait_remove(s, op);
        if (op_ask(op) != 0) /* counted by the kv */
            op_end(op, AGG_STORE_ERROR, NULL);
    }
    timer_arm(s);
}

agg_store_op_t *agg_store_get(agg_store_t *s, const char *key, size_t key_len, uint64_t lock_ms,
                              uint64_t wait_ms, agg_store_done_fn done, void *ctx)
{
    if (!s || s->closing || !done || !key_ok(key, key_len) || lock_ms == 0)
        return NULL;
    if (!kv_connected(s->kv) || s->lookups >= AGG_STORE_MAX_LOOKUPS) {
        s->errors++;
        return NULL;
    }
    agg_store_op_t *op = malloc(sizeof *op + PREFIX_LEN + key_len + SUFFIX_LEN);
    if (!op) {
        s->errors++;
        return NULL;
    }
    *op = (agg_store_op_t){.s = s, .done = done, .ctx = ctx};
    op->key_len = keys_make(op->key, key, key_len);
    uint64_t now = uv_now(s->loop);
    op->deadline_ms = wait_ms > UINT64_MAX - now ? UINT64_MAX : now + wait_ms;
    ms_text(op->lock_text, lock_ms);
    if (op_ask(op) != 0) {
        free(op);
        return NULL;
    }
    s->lookups++;
    return op;
}

void agg_store_cancel(agg_store_op_t *op)
{
    if (!op || !op->done)
        return;
    op->done = NULL;
    if (op->state == OP_WAITING) { /* nothing in flight */
        wait_remove(op->s, op);
        op_end(op, AGG_STORE_ERROR, NULL);
    }
    /* Asking: the reply frees it (and lets go of a lock it brings). */
}

/* ---- put and release ---- */

static void on_unlock_done(void *ctx, int status, const char *str, size_t len, long long i)
{
    /* Nothing to do: a failure is counted by the kv, the lock expires. */
}

/* put_unlock on keys (the value key of key_len, then the lock's suffix):
 * body stored for ttl_ms when there is one, the lock let go if ours. */
static int unlock_send(agg_store_t *s, const char *keys, size_t key_len, const char *body,
                       size_t len, uint64_t ttl_ms)
{
    char ttl_text[NUM_BYTES];
    const char *args[] = {keys, keys, s->token, body ? body : "", ttl_text};
    size_t lens[] = {key_len, key_len + SUFFIX_LEN, s->token_len, body ? len : 0,
                     ms_text(ttl_text, body ? ttl_ms : 0)};
    if (!kv_eval_bulk(s->kv, &put_unlock, 2, args, lens, 5, s->timeout_ms, on_unlock_done, NULL))
        return FE_IO; /* counted by the kv */
    return 0;
}

/* The keys of key on the stack, then put_unlock. */
static int unlock_key(agg_store_t *s, const char *key, size_t key_len, const char *body, size_t len,
                      uint64_t ttl_ms)
{
    if (!s || s->closing || !key_ok(key, key_len))
        return FE_INVAL;
    char keys[PREFIX_LEN + AGG_STORE_MAX_KEY_BYTES + SUFFIX_LEN];
    size_t n = keys_make(keys, key, key_len);
    return unlock_send(s, keys, n, body, len, ttl_ms);
}

int agg_store_put(agg_store_t *s, const char *key, size_t key_len, const char *body, size_t len,
                  uint64_t ttl_ms)
{
    if (!body && len)
        return FE_INVAL;
    if (len > AGG_STORE_MAX_BODY_BYTES) {
        int rc = unlock_key(s, key, key_len, NULL, 0, 0);
        return rc == FE_INVAL ? rc : FE_TOOBIG;
    }
    return unlock_key(s, key, key_len, body ? body : "", len, ttl_ms);
}

int agg_store_release(agg_store_t *s, const char *key, size_t key_len)
{
    return unlock_key(s, key, key_len, NULL, 0, 0);
}

/* ---- counters and lifecycle ---- */

void agg_store_stats(const agg_store_t *s, agg_store_stats_t *out)
{
    *out = s ? s->stats : (agg_store_stats_t){0};
}

uint64_t agg_store_errors(const agg_store_t *s) { return s ? s->errors + kv_errors(s->kv) : 0; }

bool agg_store_connected(const agg_store_t *s) { return s && !s->closing && kv_connected(s->kv); }

agg_store_t *agg_store_new(uv_loop_t *loop, const char *address, uint64_t timeout_ms)
{
    if (!loop || !address)
        return NULL;
    agg_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->timeout_ms = timeout_ms ? timeout_ms : DEFAULT_REDIS_TIMEOUT_MS;
    s->rng = rand_seed((uint64_t)(uintptr_t)s);
    /* Unique across the fleet's stores: the pid and 64 random bits. */
    s->token_len = (size_t)snprintf(s->token, sizeof s->token, "%ld:%016llx", (long)getpid(),
                                    (unsigned long long)rand_next(&s->rng));
    s->max_text_len =
        (size_t)snprintf(s->max_text, sizeof s->max_text, "%d", AGG_STORE_MAX_BODY_BYTES);
    kv_opts_t ko = {.timeout_ms = s->timeout_ms,
                    .backoff_min_ms = AGG_STORE_BACKOFF_MIN_MS,
                    .backoff_max_ms = AGG_STORE_BACKOFF_MAX_MS};
    s->kv = kv_new(loop, address, &ko);
    if (!s->kv)
        goto fail_free;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    return s;
fail_free:
    free(s);
    return NULL;
}

static void on_close(uv_handle_t *h) { free(h->data); }

void agg_store_close(agg_store_t *s)
{
    if (!s || s->closing)
        return;
    s->closing = true;
    while (s->first) {
        agg_store_op_t *op = s->first;
        wait_remove(s, op);
        op_end(op, AGG_STORE_ERROR, NULL);
    }
    kv_close(s->kv); /* lookups asking end here, with AGG_STORE_ERROR */
    uv_close((uv_handle_t *)&s->timer, on_close);
}
