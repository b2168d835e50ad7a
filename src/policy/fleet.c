/* Fleet-wide throttles and token buckets in redis; see fleet.h. The scripts
 * are the whole protocol: each decision is one EVALSHA on the member's kv
 * connection, and calls on one connection run in the order sent, which is
 * what lets a heartbeat re-write counts while acquires are in flight (right
 * after redis lost its script cache, a call re-sent as EVAL can run after a
 * heartbeat sent later: a count off by one until the next heartbeat). */
#include "policy/fleet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/kv.h"
#include "core/errors.h"
#include "core/hash.h"
#include "core/log.h"

#define MEMBERS_KEY "ficus:members"
#define THROTTLE_PREFIX "ficus:throttle:"
#define RATE_PREFIX "ficus:rate:"
#define THROTTLE_PREFIX_LEN (sizeof THROTTLE_PREFIX - 1)
#define RATE_PREFIX_LEN (sizeof RATE_PREFIX - 1)
#define FLEET_BUCKETS 1024 /* client map chains; a power of two */

_Static_assert(FLEET_HEARTBEAT_CHUNK *(THROTTLE_PREFIX_LEN + FLEET_MAX_KEY_BYTES + 20) +
                       FLEET_MAX_MEMBER_BYTES + 64 <=
                   KV_MAX_ARG_BYTES,
               "a heartbeat call fits in one kv call");
_Static_assert(2 * FLEET_HEARTBEAT_CHUNK + 3 <= KV_MAX_ARGS, "a heartbeat's arguments");

/* Time in ms from redis; lease expiries are scores in MEMBERS_KEY. */
#define LUA_NOW                                                                                    \
    "if redis.replicate_commands then redis.replicate_commands() end\n"                            \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* KEYS: throttle hash, members; ARGV: member, max, lease_ms -> {allowed, total}.
 * Fields of members whose lease ran out are not counted and are removed. */
static kv_script_t acquire_script = {
    .source = LUA_NOW "local m, max, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
                      "local own = redis.call('ZSCORE', KEYS[2], m)\n"
                      "if not own or tonumber(own) <= now then\n"
                      "  redis.call('ZADD', KEYS[2], now + lease, m)\n"
                      "  redis.call('PEXPIRE', KEYS[2], lease * 3)\n"
                      "end\n"
                      "local h = redis.call('HGETALL', KEYS[1])\n"
                      "local total = 0\n"
                      "for i = 1, #h, 2 do\n"
                      "  local c = math.max(tonumber(h[i + 1]) or 0, 0)\n"
                      "  local s = h[i] ~= m and redis.call('ZSCORE', KEYS[2], h[i])\n"
                      "  if h[i] == m or (s and tonumber(s) > now) then total = total + c\n"
                      "  else redis.call('HDEL', KEYS[1], h[i]) end\n"
                      "end\n"
                      "if total + 1 > max then return {0, total} end\n"
                      "redis.call('HINCRBY', KEYS[1], m, 1)\n"
                      "redis.call('PEXPIRE', KEYS[1], lease * 3)\n"
                      "return {1, total + 1}\n"};

/* KEYS: throttle hash; ARGV: member -> the member's count after it. */
static kv_script_t release_script = {.source =
                                         "local v = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)\n"
                                         "if v <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end\n"
                                         "return v\n"};

/* KEYS: members, then throttle hashes; ARGV: member, lease_ms, then each
 * hash's count for this member (0: none) -> the number of hashes. */
static kv_script_t heartbeat_script = {.source = LUA_NOW
                                       "local m, lease = ARGV[1], tonumber(ARGV[2])\n"
                                       "redis.call('ZADD', KEYS[1], now + lease, m)\n"
                                       "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
                                       "redis.call('PEXPIRE', KEYS[1], lease * 3)\n"
                                       "for i = 2, #KEYS do\n"
                                       "  local n = tonumber(ARGV[i + 1])\n"
                                       "  if n > 0 then\n"
                                       "    redis.call('HSET', KEYS[i], m, n)\n"
                                       "    redis.call('PEXPIRE', KEYS[i], lease * 3)\n"
                                       "  else redis.call('HDEL', KEYS[i], m) end\n"
                                       "end\n"
                                       "return #KEYS - 1\n"};

/* KEYS: bucket hash; ARGV: rate per second, burst -> {allowed, retry_after_ms}.
 * The bucket expires once it would be full again anyway. */
static kv_script_t rate_script = {
    .source = LUA_NOW
    "local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')\n"
    "local tokens, ts = tonumber(v[1]), tonumber(v[2])\n"
    "if not tokens or not ts then tokens, ts = burst, now end\n"
    "if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end\n"
    "if ts > now then now = ts end\n"
    "local ok, retry = 0, 0\n"
    "if tokens >= 1 then tokens, ok = tokens - 1, 1\n"
    "else retry = math.ceil((1 - tokens) * 1000 / rate) end\n"
    "redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)\n"
    "redis.call('PEXPIRE', KEYS[1], math.min(math.ceil(burst * 1000 / rate) + 1000, 604800000))\n"
    "return {ok, retry}\n"};

/* This member's in-flight count for one client. */
typedef struct fleet_client {
    struct fleet_client *next; /* chain */
    uint32_t held;             /* ALLOWs not released */
    uint32_t pending;          /* acquires sent, not answered */
    uint64_t changed_gen;      /* f->hb_gen at the last change of held or pending */
    size_t key_len;
    char key[]; /* THROTTLE_PREFIX client */
} fleet_client_t;

typedef enum { OP_ACQUIRE, OP_RATE } op_kind_t;

struct fleet_op {
    fleet_t *f;
    fleet_done_fn done; /* NULL once cancelled */
    void *ctx;
    op_kind_t kind;
    fleet_client_t *client; /* acquire: kept alive by its pending count */
    uint64_t gen;           /* f->hb_gen when sent */
};

struct fleet {
    uv_loop_t *loop;
    kv_t *kv;
    char member[FLEET_MAX_MEMBER_BYTES + 1];
    size_t member_len;
    uint64_t lease_ms;
    uint64_t timeout_ms;
    char lease_text[24];
    uv_timer_t hb_timer;
    bool closing;
    uint64_t hb_gen;       /* heartbeats sent */
    size_t hb_outstanding; /* calls of the last heartbeat still in flight */
    bool hb_failed;        /* one of them failed */
    uint64_t errors;       /* refused here (bounds), on top of kv's */
    size_t nclients;
    fleet_client_t *buckets[FLEET_BUCKETS];
};

/* ---- the client map ---- */

static fleet_client_t **client_slot(fleet_t *f, const char *key, size_t len)
{
    fleet_client_t **p = &f->buckets[hash_bytes(key, len) & (FLEET_BUCKETS - 1)];
    while (*p && ((*p)->key_len != len || memcmp((*p)->key, key, len) != 0))
        p = &(*p)->next;
    return p;
}

/* The entry for key, made when missing (NULL: the map is full, or no memory). */
static fleet_client_t *client_get(fleet_t *f, const char *key, size_t len)
{
    fleet_client_t **p = client_slot(f, key, len);
    fleet_client_t *found = *p;
    if (found)
        return found;
    if (f->nclients >= FLEET_MAX_CLIENTS)
        return NULL;
    fleet_client_t *c = calloc(1, sizeof *c + len + 1);
    if (!c)
        return NULL;
    memcpy(c->key, key, len);
    c->key_len = len;
    c->changed_gen = f->hb_gen;
    *p = c;
    f->nclients++;
    return c;
}

static void client_touch(fleet_t *f, fleet_client_t *c) { c->changed_gen = f->hb_gen; }

/* Drops entries with nothing in flight whose zero a heartbeat of generation
 * gen (or later) has written; all of them when gen is UINT64_MAX. */
static void clients_sweep(fleet_t *f, uint64_t gen)
{
    for (size_t b = 0; b < FLEET_BUCKETS; b++) {
        fleet_client_t **p = &f->buckets[b];
        while (*p) {
            fleet_client_t *c = *p;
            if (gen == UINT64_MAX || (c->held == 0 && c->pending == 0 && c->changed_gen < gen)) {
                *p = c->next;
                free(c);
                f->nclients--;
            } else {
                p = &c->next;
            }
        }
    }
}

/* THROTTLE_PREFIX client into buf (FLEET_MAX_KEY_BYTES + prefix): its length, or 0. */
static size_t key_make(char *buf, const char *prefix, size_t prefix_len, const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > FLEET_MAX_KEY_BYTES)
        return 0;
    memcpy(buf, prefix, prefix_len);
    memcpy(buf + prefix_len, name, n);
    return prefix_len + n;
}

/* ---- operations ---- */

static void release_send(fleet_t *f, fleet_client_t *c);

static void fleet_on_op_done(void *ctx, int status, const long long *ints, size_t n)
{
    fleet_op_t *op = ctx;
    fleet_t *f = op->f;
    fleet_verdict_t v = FLEET_ERROR;
    uint64_t retry_ms = 0;
    if (status == 0 && n == 2) {
        v = ints[0] == 1 ? FLEET_ALLOW : FLEET_DENY;
        if (op->kind == OP_RATE && v == FLEET_DENY && ints[1] > 0)
            retry_ms = (uint64_t)ints[1];
    } else if (status == 0) {
        f->errors++; /* a reply of another shape: not our script */
    }
    if (op->kind == OP_ACQUIRE) {
        fleet_client_t *c = op->client;
        c->pending--;
        client_touch(f, c);
        if (v == FLEET_ALLOW && op->done) {
            c->held++;
        } else if (v == FLEET_ALLOW) { /* cancelled: nobody will release it */
            if (!f->closing)
                release_send(f, c);
        } else if (v == FLEET_DENY && op->gen != f->hb_gen) {
            /* A heartbeat sent after it counted it as in flight: undo that. */
            release_send(f, c);
        }
    }
    if (op->done)
        op->done(op->ctx, v, retry_ms);
    free(op);
}

static fleet_op_t *op_send(fleet_t *f, op_kind_t kind, kv_script_t *script, size_t nkeys,
                           const char *const *args, const size_t *lens, size_t nargs,
                           uint64_t timeout_ms, fleet_done_fn done, void *ctx)
{
    fleet_op_t *op = malloc(sizeof *op);
    if (!op) {
        f->errors++;
        return NULL;
    }
    *op = (fleet_op_t){.f = f, .done = done, .ctx = ctx, .kind = kind, .gen = f->hb_gen};
    if (!kv_eval(f->kv, script, nkeys, args, lens, nargs, timeout_ms ? timeout_ms : f->timeout_ms,
                 fleet_on_op_done, op)) {
        free(op);
        return NULL;
    }
    return op;
}

fleet_op_t *fleet_throttle_acquire(fleet_t *f, const char *client, uint32_t max,
                                   uint64_t timeout_ms, fleet_done_fn done, void *ctx)
{
    char key[THROTTLE_PREFIX_LEN + FLEET_MAX_KEY_BYTES];
    size_t key_len = key_make(key, THROTTLE_PREFIX, THROTTLE_PREFIX_LEN, client);
    if (!f || f->closing || !done || key_len == 0)
        return NULL;
    if (!kv_connected(f->kv)) {
        f->errors++;
        return NULL;
    }
    fleet_client_t *c = client_get(f, key, key_len);
    if (!c) {
        log_limited(LOG_WARN, "fleet: more than %d clients in flight, not counted",
                    FLEET_MAX_CLIENTS);
        f->errors++;
        return NULL;
    }
    char max_text[16];
    int max_len = snprintf(max_text, sizeof max_text, "%u", max);
    const char *args[] = {key, MEMBERS_KEY, f->member, max_text, f->lease_text};
    size_t lens[] = {key_len, sizeof MEMBERS_KEY - 1, f->member_len, (size_t)max_len,
                     strlen(f->lease_text)};
    fleet_op_t *op =
        op_send(f, OP_ACQUIRE, &acquire_script, 2, args, lens, 5, timeout_ms, done, ctx);
    if (!op)
        return NULL; /* the entry, if new, goes with the next heartbeat */
    op->client = c;
    c->pending++;
    client_touch(f, c);
    return op;
}

static void fleet_on_release_done(void *ctx, int status, const long long *ints, size_t n)
{
    /* Nothing to do: a failure is counted by kv and healed by the heartbeat. */
}

/* One less for this member in c's hash (not checked against the local count). */
static void release_send(fleet_t *f, fleet_client_t *c)
{
    const char *args[] = {c->key, f->member};
    size_t lens[] = {c->key_len, f->member_len};
    if (kv_connected(f->kv))
        kv_eval(f->kv, &release_script, 1, args, lens, 2, f->timeout_ms, fleet_on_release_done,
                NULL);
}

void fleet_throttle_release(fleet_t *f, const char *client)
{
    char key[THROTTLE_PREFIX_LEN + FLEET_MAX_KEY_BYTES];
    size_t key_len = key_make(key, THROTTLE_PREFIX, THROTTLE_PREFIX_LEN, client);
    if (!f || key_len == 0)
        return;
    fleet_client_t *c = *client_slot(f, key, key_len);
    if (!c || c->held == 0)
        return;
    c->held--;
    client_touch(f, c);
    if (!f->closing)
        release_send(f, c);
}

fleet_op_t *fleet_rate_take(fleet_t *f, const char *key, double rate_per_s, double burst,
                            uint64_t timeout_ms, fleet_done_fn done, void *ctx)
{
    char rkey[RATE_PREFIX_LEN + FLEET_MAX_KEY_BYTES];
    size_t key_len = key_make(rkey, RATE_PREFIX, RATE_PREFIX_LEN, key);
    if (!f || f->closing || !done || key_len == 0 || !(rate_per_s > 0) || !isfinite(rate_per_s) ||
        !(burst >= 1) || !isfinite(burst))
        return NULL;
    if (!kv_connected(f->kv)) {
        f->errors++;
        return NULL;
    }
    char rate_text[32], burst_text[32];
    int rate_len = snprintf(rate_text, sizeof rate_text, "%.17g", rate_per_s);
    int burst_len = snprintf(burst_text, sizeof burst_text, "%.17g", burst);
    const char *args[] = {rkey, rate_text, burst_text};
    size_t lens[] = {key_len, (size_t)rate_len, (size_t)burst_len};
    return op_send(f, OP_RATE, &rate_script, 1, args, lens, 3, timeout_ms, done, ctx);
}

void fleet_cancel(fleet_op_t *op)
{
    if (op)
        op->done = NULL; /* the reply still comes (or fails) and frees it */
}

uint64_t fleet_errors(const fleet_t *f) { return f ? f->errors + kv_errors(f->kv) : 0; }

/* ---- the heartbeat ---- */

static void fleet_heartbeat(fleet_t *f);

static void fleet_on_heartbeat_timer(uv_timer_t *t) { fleet_heartbeat(t->data); }

/* The next heartbeat: in lease/3, or soon when this one did not get through. */
static void fleet_arm_heartbeat(fleet_t *f, bool failed)
{
    if (f->closing)
        return;
    uint64_t wait = f->lease_ms / 3;
    if (failed && wait > FLEET_RETRY_HEARTBEAT_MS)
        wait = FLEET_RETRY_HEARTBEAT_MS;
    uv_timer_start(&f->hb_timer, fleet_on_heartbeat_timer, wait, 0);
}

static void fleet_on_heartbeat_done(void *ctx, int status, const long long *ints, size_t n);

/* Renews the lease and re-writes batch[0..k) in one script call. */
static int heartbeat_send(fleet_t *f, fleet_client_t **batch, size_t k)
{
    const char *args[2 * FLEET_HEARTBEAT_CHUNK + 3];
    size_t lens[2 * FLEET_HEARTBEAT_CHUNK + 3];
    char counts[FLEET_HEARTBEAT_CHUNK][12];
    size_t nkeys = k + 1;
    args[0] = MEMBERS_KEY;
    lens[0] = sizeof MEMBERS_KEY - 1;
    args[nkeys] = f->member;
    lens[nkeys] = f->member_len;
    args[nkeys + 1] = f->lease_text;
    lens[nkeys + 1] = strlen(f->lease_text);
    for (size_t i = 0; i < k; i++) {
        /* Acquires still in flight were sent before this call: redis runs
         * them first, so the count includes them (a DENY among them is
         * undone when it comes back). */
        uint64_t n = (uint64_t)batch[i]->held + batch[i]->pending;
        args[1 + i] = batch[i]->key;
        lens[1 + i] = batch[i]->key_len;
        args[nkeys + 2 + i] = counts[i];
        lens[nkeys + 2 + i] =
            (size_t)snprintf(counts[i], sizeof counts[i], "%llu", (unsigned long long)n);
    }
    if (!kv_eval(f->kv, &heartbeat_script, nkeys, args, lens, nkeys + 2 + k, f->lease_ms / 3,
                 fleet_on_heartbeat_done, f))
        return FE_IO;
    f->hb_outstanding++;
    return 0;
}

static void fleet_heartbeat(fleet_t *f)
{
    if (f->hb_outstanding > 0) /* its end arms the next one */
        return;
    if (!kv_connected(f->kv)) {
        fleet_arm_heartbeat(f, true);
        return;
    }
    f->hb_gen++;
    f->hb_failed = false;
    fleet_client_t *batch[FLEET_HEARTBEAT_CHUNK];
    size_t k = 0;
    int rc = 0;
    for (size_t b = 0; b < FLEET_BUCKETS && rc == 0; b++) {
        for (fleet_client_t *c = f->buckets[b]; c && rc == 0; c = c->next) {
            batch[k++] = c;
            if (k == FLEET_HEARTBEAT_CHUNK) {
                rc = heartbeat_send(f, batch, k);
                k = 0;
            }
        }
    }
    if (rc == 0 && (k > 0 || f->hb_outstanding == 0))
        rc = heartbeat_send(f, batch, k);
    if (rc != 0)
        f->hb_failed = true;
    if (f->hb_outstanding == 0) { /* none sent: as if not tried (acquires compare gens) */
        f->hb_gen--;
        fleet_arm_heartbeat(f, true);
    }
}

static void fleet_on_heartbeat_done(void *ctx, int status, const long long *ints, size_t n)
{
    fleet_t *f = ctx;
    if (status != 0)
        f->hb_failed = true;
    if (--f->hb_outstanding > 0)
        return;
    if (!f->hb_failed)
        clients_sweep(f, f->hb_gen);
    fleet_arm_heartbeat(f, f->hb_failed);
}

/* ---- lifecycle ---- */

static void fleet_on_close(uv_handle_t *h)
{
    fleet_t *f = h->data;
    clients_sweep(f, UINT64_MAX);
    free(f);
}

fleet_t *fleet_new(uv_loop_t *loop, const fleet_opts_t *o)
{
    if (!loop || !o || !o->address || !o->member || !o->member[0] ||
        strlen(o->member) > FLEET_MAX_MEMBER_BYTES)
        return NULL;
    fleet_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->loop = loop;
    f->member_len = strlen(o->member);
    memcpy(f->member, o->member, f->member_len + 1);
    f->lease_ms = o->lease_ms ? o->lease_ms : FLEET_DEFAULT_LEASE_MS;
    if (f->lease_ms < FLEET_MIN_LEASE_MS)
        f->lease_ms = FLEET_MIN_LEASE_MS;
    f->timeout_ms = o->timeout_ms ? o->timeout_ms : FLEET_DEFAULT_TIMEOUT_MS;
    snprintf(f->lease_text, sizeof f->lease_text, "%llu", (unsigned long long)f->lease_ms);
    kv_opts_t ko = {.timeout_ms = f->timeout_ms,
                    .backoff_min_ms = FLEET_BACKOFF_MIN_MS,
                    .backoff_max_ms = FLEET_BACKOFF_MAX_MS};
    f->kv = kv_new(loop, o->address, &ko);
    if (!f->kv)
        goto fail_free;
    uv_timer_init(loop, &f->hb_timer);
    f->hb_timer.data = f;
    fleet_arm_heartbeat(f, true); /* the first one as soon as redis answers */
    return f;
fail_free:
    free(f);
    return NULL;
}

void fleet_close(fleet_t *f)
{
    if (!f || f->closing)
        return;
    f->closing = true;
    kv_close(f->kv); /* operations in flight end here, with FLEET_ERROR */
    uv_close((uv_handle_t *)&f->hb_timer, fleet_on_close);
}
