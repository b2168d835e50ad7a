/* policy/agg_store against a real redis-server on 127.0.0.1, with two
 * stores on one loop standing for two instances: a miss takes the lock
 * (FETCH) and a put makes it a HIT for the other, binary and empty bodies;
 * lookups at once from both make one FETCH, the rest wait for its body;
 * a lookup that finds the lock held waits, then gets the body, or takes the
 * lock once it was released or expired, or gives up after wait_ms (LATE);
 * entries expire with their ttl; a put never lets go of another store's
 * lock; cancel (waiting, or asking: a lock granted after it is let go);
 * bounds (keys, bodies, lookups in flight, a value in redis over the
 * bound, locks and ttls cut to what redis takes); close with lookups pending; redis down or killed:
 * ERROR at once and counted. Every test ends with the loop closed and no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client/redis_server.h"
#include "core/errors.h"
#include "policy/agg_store.h"

#define WAIT_MS 5000  /* the longest any step may take before the test fails */
#define LOCK_MS 60000 /* longer than any wait here: a lock gone was let go */

typedef struct got {
    int calls;
    agg_store_result_t r;
    agg_body_t *body;
} got_t;

static void on_done(void *ctx, agg_store_result_t r, agg_body_t *body)
{
    got_t *g = ctx;
    g->calls++;
    g->r = r;
    agg_body_unref(g->body);
    g->body = body;
}

static bool got_one(void *arg) { return ((got_t *)arg)->calls > 0; }
static bool is_up(void *arg) { return agg_store_connected(arg); }
static bool is_down(void *arg) { return !agg_store_connected(arg); }

typedef struct fx {
    redis_server_t srv;
    uv_loop_t loop;
    agg_store_t *a, *b;
} fx_t;

static agg_store_t *store_new(fx_t *f)
{
    agg_store_t *s = agg_store_new(&f->loop, f->srv.address, 1000);
    assert_non_null(s);
    assert_true(redis_test_run_until(&f->loop, is_up, s, WAIT_MS));
    return s;
}

static int setup(void **state) { return redis_server_group_setup(state, sizeof(fx_t)); }

static int start(void **state)
{
    fx_t *f = *state;
    if (redis_test_begin(&f->srv, &f->loop) != 0)
        return -1;
    f->a = store_new(f);
    f->b = store_new(f);
    return 0;
}

/* Closes what is left; the loop must end empty. */
static int end(void **state)
{
    fx_t *f = *state;
    agg_store_close(f->a);
    agg_store_close(f->b);
    redis_test_finish(&f->loop);
    return 0;
}

/* A lookup of key by s, waited for. */
static got_t get(fx_t *f, agg_store_t *s, const char *key, uint64_t lock_ms, uint64_t wait_ms)
{
    got_t g = {0};
    assert_non_null(agg_store_get(s, key, strlen(key), lock_ms, wait_ms, on_done, &g));
    assert_int_equal(g.calls, 0); /* never from inside agg_store_get */
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    assert_int_equal(g.calls, 1);
    return g;
}

typedef struct key_wait {
    const fx_t *f;
    const char *key;
    long long exists; /* the wanted EXISTS answer */
} key_wait_t;

static bool key_exists_is(void *arg)
{
    key_wait_t *w = arg;
    return redis_server_int(&w->f->srv, "EXISTS %s", w->key) == w->exists;
}

static void wait_key(fx_t *f, const char *key, long long exists)
{
    key_wait_t w = {f, key, exists};
    assert_true(redis_test_run_until(&f->loop, key_exists_is, &w, WAIT_MS));
}

/* The lock's value (its holder's token) or "" when there is none. */
static void lock_value(const fx_t *f, const char *key, char *out, size_t cap)
{
    redisReply *r = redis_server_cmd(&f->srv, "GET ficus:agg:%s:lock", key);
    assert_non_null(r);
    snprintf(out, cap, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

static void test_miss_fetch_put_then_hit_elsewhere(void **state)
{
    fx_t *f = *state;
    got_t g = get(f, f->a, "reco /reco/7", LOCK_MS, 1000);
    assert_int_equal(g.r, AGG_STORE_FETCH);
    assert_null(g.body);
    long long pttl = redis_server_int(&f->srv, "PTTL %s", "ficus:agg:reco /reco/7:lock");
    assert_true(pttl > 0 && pttl <= LOCK_MS);
    /* Binary bytes, stored with the ttl; the lock goes with the put. */
    static const char body[] = {'{', '\0', (char)0xff, '\r', '\n', '}'};
    assert_int_equal(agg_store_put(f->a, "reco /reco/7", 12, body, sizeof body, 30000), 0);
    wait_key(f, "ficus:agg:reco /reco/7:lock", 0);
    pttl = redis_server_int(&f->srv, "PTTL %s", "ficus:agg:reco /reco/7");
    assert_true(pttl > 0 && pttl <= 30000);
    g = get(f, f->b, "reco /reco/7", LOCK_MS, 1000);
    assert_int_equal(g.r, AGG_STORE_HIT);
    assert_non_null(g.body);
    assert_int_equal(g.body->len, sizeof body);
    assert_memory_equal(g.body->data, body, sizeof body);
    agg_body_unref(g.body);
    /* An empty body is a body. */
    assert_int_equal(get(f, f->b, "empty", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    assert_int_equal(agg_store_put(f->b, "empty", 5, NULL, 0, 30000), 0);
    wait_key(f, "ficus:agg:empty:lock", 0);
    g = get(f, f->a, "empty", LOCK_MS, 1000);
    assert_int_equal(g.r, AGG_STORE_HIT);
    assert_int_equal(g.body->len, 0);
    agg_body_unref(g.body);
    agg_store_stats_t sa, sb;
    agg_store_stats(f->a, &sa);
    agg_store_stats(f->b, &sb);
    assert_int_equal(sa.fetches, 1);
    assert_int_equal(sa.hits, 1);
    assert_int_equal(sb.fetches, 1);
    assert_int_equal(sb.hits, 1);
    assert_int_equal(sa.waits + sb.waits + sa.lates + sb.lates, 0);
    assert_int_equal(agg_store_errors(f->a) + agg_store_errors(f->b), 0);
}

/* A holds the lock: B's lookup waits (no answer yet) and gets A's body. */
static void test_busy_then_hit(void **state)
{
    fx_t *f = *state;
    assert_int_equal(get(f, f->a, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    got_t g = {0};
    assert_non_null(agg_store_get(f->b, "k", 1, LOCK_MS, 10000, on_done, &g));
    redis_test_run_for(&f->loop, 60); /* several looks, all finding the lock */
    assert_int_equal(g.calls, 0);
    assert_int_equal(agg_store_put(f->a, "k", 1, "fresh", 5, 30000), 0);
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    assert_int_equal(g.r, AGG_STORE_HIT);
    assert_int_equal(g.body->len, 5);
    assert_memory_equal(g.body->data, "fresh", 5);
    agg_body_unref(g.body);
    agg_store_stats_t sb;
    agg_store_stats(f->b, &sb);
    assert_int_equal(sb.waits, 1);
    assert_int_equal(sb.hits, 1);
    assert_int_equal(sb.lates, 0);
}

enum { MANY = 40 }; /* lookups per store at once */

typedef struct crowd {
    got_t g[2 * MANY]; /* A's, then B's */
} crowd_t;

static bool crowd_fetched(void *arg)
{
    crowd_t *c = arg;
    for (int i = 0; i < 2 * MANY; i++)
        if (c->g[i].calls && c->g[i].r == AGG_STORE_FETCH)
            return true;
    return false;
}

static bool crowd_done(void *arg)
{
    crowd_t *c = arg;
    for (int i = 0; i < 2 * MANY; i++)
        if (!c->g[i].calls)
            return false;
    return true;
}

/* Cold, at once on both instances: one lookup fetches, fleet-wide; every
 * other one gets its body. */
static void test_concurrent_misses_make_one_fetch(void **state)
{
    fx_t *f = *state;
    static crowd_t c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < MANY; i++) {
        assert_non_null(agg_store_get(f->a, "k", 1, LOCK_MS, 10000, on_done, &c.g[i]));
        assert_non_null(agg_store_get(f->b, "k", 1, LOCK_MS, 10000, on_done, &c.g[MANY + i]));
    }
    assert_true(redis_test_run_until(&f->loop, crowd_fetched, &c, WAIT_MS));
    redis_test_run_for(&f->loop, 30); /* the others keep waiting */
    int fetcher = -1, ended = 0;
    for (int i = 0; i < 2 * MANY; i++) {
        ended += c.g[i].calls;
        if (c.g[i].calls && c.g[i].r == AGG_STORE_FETCH)
            fetcher = i;
    }
    assert_int_equal(ended, 1);
    agg_store_t *holder = fetcher < MANY ? f->a : f->b;
    assert_int_equal(agg_store_put(holder, "k", 1, "body", 4, 30000), 0);
    assert_true(redis_test_run_until(&f->loop, crowd_done, &c, WAIT_MS));
    for (int i = 0; i < 2 * MANY; i++) {
        assert_int_equal(c.g[i].calls, 1);
        if (i == fetcher)
            continue;
        assert_int_equal(c.g[i].r, AGG_STORE_HIT);
        assert_memory_equal(c.g[i].body->data, "body", 4);
        agg_body_unref(c.g[i].body);
    }
    agg_store_stats_t sa, sb;
    agg_store_stats(f->a, &sa);
    agg_store_stats(f->b, &sb);
    assert_int_equal(sa.fetches + sb.fetches, 1);
    assert_int_equal(sa.hits + sb.hits, 2 * MANY - 1);
    assert_int_equal(sa.waits + sb.waits, 2 * MANY - 1);
}

/* The holder's fetch failed (release), or the holder vanished (its lock
 * expired): the one waiting takes the lock and fetches. */
static void test_busy_then_fetch_after_release_or_expiry(void **state)
{
    fx_t *f = *state;
    assert_int_equal(get(f, f->a, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    got_t g = {0};
    assert_non_null(agg_store_get(f->b, "k", 1, LOCK_MS, 10000, on_done, &g));
    redis_test_run_for(&f->loop, 30);
    assert_int_equal(g.calls, 0);
    assert_int_equal(agg_store_release(f->a, "k", 1), 0);
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    assert_int_equal(g.r, AGG_STORE_FETCH);
    char holder[64];
    lock_value(f, "k", holder, sizeof holder);
    assert_string_not_equal(holder, ""); /* B's now */
    /* A takes "e" for 100 ms and never comes back: B fetches after that. */
    assert_int_equal(get(f, f->a, "e", 100, 1000).r, AGG_STORE_FETCH);
    g = get(f, f->b, "e", LOCK_MS, 10000);
    assert_int_equal(g.r, AGG_STORE_FETCH);
    assert_int_equal(redis_server_int(&f->srv, "EXISTS %s", "ficus:agg:e"), 0);
    agg_store_stats_t sb;
    agg_store_stats(f->b, &sb);
    assert_int_equal(sb.waits, 2);
    assert_int_equal(sb.fetches, 2);
}

/* Held longer than the waiter's wait_ms: LATE (the caller fetches alone);
 * not a redis error. wait_ms 0: one look only. */
static void test_wait_is_bounded(void **state)
{
    fx_t *f = *state;
    assert_int_equal(get(f, f->a, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    assert_int_equal(get(f, f->b, "k", LOCK_MS, 50).r, AGG_STORE_LATE);
    assert_int_equal(get(f, f->b, "k", LOCK_MS, 0).r, AGG_STORE_LATE);
    agg_store_stats_t sb;
    agg_store_stats(f->b, &sb);
    assert_int_equal(sb.waits, 2);
    assert_int_equal(sb.lates, 2);
    assert_int_equal(agg_store_errors(f->b), 0);
    char holder[64];
    lock_value(f, "k", holder, sizeof holder);
    assert_string_not_equal(holder, ""); /* still A's */
}

/* An entry lives for its ttl; then the next lookup fetches again. */
static void test_ttl_expiry(void **state)
{
    fx_t *f = *state;
    assert_int_equal(get(f, f->a, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    assert_int_equal(agg_store_put(f->a, "k", 1, "v", 1, 150), 0);
    wait_key(f, "ficus:agg:k:lock", 0);
    long long pttl = redis_server_int(&f->srv, "PTTL %s", "ficus:agg:k");
    assert_true(pttl > 0 && pttl <= 150);
    wait_key(f, "ficus:agg:k", 0); /* expired in redis */
    assert_int_equal(get(f, f->b, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    /* ttl 0: nothing stored, the lock let go. */
    assert_int_equal(agg_store_put(f->b, "k", 1, "v", 1, 0), 0);
    wait_key(f, "ficus:agg:k:lock", 0);
    assert_int_equal(redis_server_int(&f->srv, "EXISTS %s", "ficus:agg:k"), 0);
}

/* A's lock expired and B took it: A's late put stores its (fresh) body
 * but leaves B's lock alone, and so does A's release. */
static void test_put_keeps_another_holders_lock(void **state)
{
    fx_t *f = *state;
    assert_int_equal(get(f, f->a, "k", 50, 1000).r, AGG_STORE_FETCH);
    wait_key(f, "ficus:agg:k:lock", 0);
    assert_int_equal(get(f, f->b, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    char b_token[64];
    lock_value(f, "k", b_token, sizeof b_token);
    assert_string_not_equal(b_token, "");
    assert_int_equal(agg_store_put(f->a, "k", 1, "late", 4, 30000), 0);
    wait_key(f, "ficus:agg:k", 1);
    assert_int_equal(agg_store_release(f->a, "k", 1), 0);
    got_t g = get(f, f->a, "k", LOCK_MS, 0); /* after the release on A's connection */
    assert_int_equal(g.r, AGG_STORE_HIT);
    assert_memory_equal(g.body->data, "late", 4);
    agg_body_unref(g.body);
    char now[64];
    lock_value(f, "k", now, sizeof now);
    assert_string_equal(now, b_token);
    assert_int_equal(agg_store_release(f->b, "k", 1), 0);
    wait_key(f, "ficus:agg:k:lock", 0);
}

/* Cancelled while waiting: no callback, even once the body is there.
 * Cancelled while asking: no callback, and the lock redis granted it is
 * let go, so the next lookup fetches at once. */
static void test_cancel(void **state)
{
    fx_t *f = *state;
    assert_int_equal(get(f, f->a, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    got_t g = {0};
    agg_store_op_t *op = agg_store_get(f->b, "k", 1, LOCK_MS, 10000, on_done, &g);
    assert_non_null(op);
    redis_test_run_for(&f->loop, 30); /* waiting by now */
    agg_store_cancel(op);
    assert_int_equal(agg_store_put(f->a, "k", 1, "v", 1, 30000), 0);
    redis_test_run_for(&f->loop, 50);
    assert_int_equal(g.calls, 0);
    op = agg_store_get(f->b, "fresh", 5, LOCK_MS, 1000, on_done, &g);
    assert_non_null(op);
    agg_store_cancel(op);
    /* B's next lookup runs after the cancelled one took the lock: it gets
     * the lock once the store let go of the first. */
    assert_int_equal(get(f, f->b, "fresh", LOCK_MS, 10000).r, AGG_STORE_FETCH);
    assert_int_equal(agg_store_release(f->b, "fresh", 5), 0);
    wait_key(f, "ficus:agg:fresh:lock", 0);
    assert_int_equal(get(f, f->a, "fresh", LOCK_MS, 0).r, AGG_STORE_FETCH);
    assert_int_equal(g.calls, 0);
    agg_store_cancel(NULL);
    agg_store_stats_t sb;
    agg_store_stats(f->b, &sb);
    assert_int_equal(sb.hits + sb.lates, 0);
    assert_int_equal(sb.fetches, 1); /* the cancelled lookup's lock is not counted */
}

/* Keys, bodies and lookups in flight are bounded; so is a value another
 * writer left in redis. */
static void test_bounds(void **state)
{
    fx_t *f = *state;
    static char big[AGG_STORE_MAX_KEY_BYTES + 2];
    memset(big, 'k', AGG_STORE_MAX_KEY_BYTES + 1);
    got_t none = {0};
    assert_null(agg_store_get(f->a, big, AGG_STORE_MAX_KEY_BYTES + 1, LOCK_MS, 0, on_done, &none));
    assert_null(agg_store_get(f->a, "", 0, LOCK_MS, 0, on_done, &none));
    assert_null(agg_store_get(f->a, "k", 1, 0, 0, on_done, &none));
    assert_int_equal(agg_store_put(f->a, big, AGG_STORE_MAX_KEY_BYTES + 1, "v", 1, 1000), FE_INVAL);
    assert_int_equal(agg_store_release(f->a, NULL, 0), FE_INVAL);
    assert_int_equal(agg_store_errors(f->a), 0); /* bad arguments are not redis errors */
    /* The longest key works. */
    big[AGG_STORE_MAX_KEY_BYTES] = '\0';
    assert_int_equal(get(f, f->a, big, LOCK_MS, 0).r, AGG_STORE_FETCH);
    /* A body at the bound is stored and read back; one byte more is not
     * stored, and the lock is let go all the same. */
    char *body = malloc(AGG_STORE_MAX_BODY_BYTES + 1);
    assert_non_null(body);
    for (size_t i = 0; i <= AGG_STORE_MAX_BODY_BYTES; i++)
        body[i] = (char)(i * 13);
    assert_int_equal(get(f, f->a, "big", LOCK_MS, 0).r, AGG_STORE_FETCH);
    assert_int_equal(agg_store_put(f->a, "big", 3, body, AGG_STORE_MAX_BODY_BYTES, 30000), 0);
    wait_key(f, "ficus:agg:big:lock", 0);
    got_t g = get(f, f->b, "big", LOCK_MS, 0);
    assert_int_equal(g.r, AGG_STORE_HIT);
    assert_int_equal(g.body->len, AGG_STORE_MAX_BODY_BYTES);
    assert_memory_equal(g.body->data, body, AGG_STORE_MAX_BODY_BYTES);
    agg_body_unref(g.body);
    assert_int_equal(get(f, f->a, "over", LOCK_MS, 0).r, AGG_STORE_FETCH);
    assert_int_equal(agg_store_put(f->a, "over", 4, body, AGG_STORE_MAX_BODY_BYTES + 1, 30000),
                     FE_TOOBIG);
    wait_key(f, "ficus:agg:over:lock", 0);
    assert_int_equal(redis_server_int(&f->srv, "EXISTS %s", "ficus:agg:over"), 0);
    /* Locks and ttls longer than redis takes are cut to AGG_STORE_MAX_TTL_MS. */
    assert_int_equal(get(f, f->a, "long", UINT64_MAX, 0).r, AGG_STORE_FETCH);
    long long pttl = redis_server_int(&f->srv, "PTTL %s", "ficus:agg:long:lock");
    assert_true(pttl > 0 && (uint64_t)pttl <= AGG_STORE_MAX_TTL_MS);
    assert_int_equal(agg_store_put(f->a, "long", 4, "v", 1, UINT64_MAX), 0);
    wait_key(f, "ficus:agg:long:lock", 0);
    pttl = redis_server_int(&f->srv, "PTTL %s", "ficus:agg:long");
    assert_true(pttl > 0 && (uint64_t)pttl <= AGG_STORE_MAX_TTL_MS);
    /* A value over the bound in redis is not read: ERROR, counted. */
    redisReply *r = redis_server_cmd(&f->srv, "SET %s %b", "ficus:agg:foreign", body,
                                     (size_t)AGG_STORE_MAX_BODY_BYTES + 1);
    assert_non_null(r);
    freeReplyObject(r);
    free(body);
    assert_int_equal(get(f, f->b, "foreign", LOCK_MS, 0).r, AGG_STORE_ERROR);
    assert_int_equal(agg_store_errors(f->b), 1);
    /* Lookups in flight: AGG_STORE_MAX_LOOKUPS, then refused (counted). */
    redisReply *p = redis_server_cmd(&f->srv, "CLIENT PAUSE 300 ALL");
    assert_non_null(p);
    freeReplyObject(p);
    static got_t many[AGG_STORE_MAX_LOOKUPS];
    memset(many, 0, sizeof many);
    for (int i = 0; i < AGG_STORE_MAX_LOOKUPS; i++)
        assert_non_null(agg_store_get(f->a, "m", 1, LOCK_MS, 0, on_done, &many[i]));
    uint64_t before = agg_store_errors(f->a);
    assert_null(agg_store_get(f->a, "m", 1, LOCK_MS, 0, on_done, &none));
    assert_int_equal(agg_store_errors(f->a), before + 1);
    assert_true(redis_test_run_until(&f->loop, got_one, &many[AGG_STORE_MAX_LOOKUPS - 1], WAIT_MS));
    int fetches = 0;
    for (int i = 0; i < AGG_STORE_MAX_LOOKUPS; i++) {
        assert_int_equal(many[i].calls, 1);
        fetches += many[i].r == AGG_STORE_FETCH;
    }
    assert_int_equal(fetches, 1); /* one lock for all of them */
    assert_non_null(agg_store_get(f->a, "m", 1, LOCK_MS, 0, on_done, &none)); /* room again */
    assert_true(redis_test_run_until(&f->loop, got_one, &none, WAIT_MS));
}

/* Closed with lookups asking and waiting: all end at once with ERROR. */
static void test_close_with_lookups_pending(void **state)
{
    fx_t *f = *state;
    assert_int_equal(get(f, f->a, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    got_t waiting = {0}, asking = {0}, after = {0};
    assert_non_null(agg_store_get(f->b, "k", 1, LOCK_MS, 10000, on_done, &waiting));
    redis_test_run_for(&f->loop, 30);
    assert_non_null(agg_store_get(f->b, "other", 5, LOCK_MS, 0, on_done, &asking));
    agg_store_close(f->b);
    assert_int_equal(waiting.calls, 1);
    assert_int_equal(waiting.r, AGG_STORE_ERROR);
    assert_int_equal(asking.calls, 1);
    assert_int_equal(asking.r, AGG_STORE_ERROR);
    assert_null(agg_store_get(f->b, "k", 1, LOCK_MS, 0, on_done, &after));
    assert_int_equal(agg_store_put(f->b, "k", 1, "v", 1, 1000), FE_INVAL);
    assert_false(agg_store_connected(f->b));
    f->b = NULL;
    agg_store_close(NULL);
}

/* Redis killed while a lookup waits and another asks: both end with ERROR
 * long before their wait_ms; while it is down lookups are refused at once
 * and puts cannot be sent, all counted; once it is back, lookups work. */
static void test_redis_killed(void **state)
{
    fx_t f = {0};
    assert_true(redis_server_start(&f.srv));
    assert_int_equal(uv_loop_init(&f.loop), 0);
    f.a = store_new(&f);
    f.b = store_new(&f);
    assert_int_equal(get(&f, f.a, "k", LOCK_MS, 1000).r, AGG_STORE_FETCH);
    got_t waiting = {0};
    assert_non_null(agg_store_get(f.b, "k", 1, LOCK_MS, 60000, on_done, &waiting));
    redis_test_run_for(&f.loop, 30);
    assert_int_equal(waiting.calls, 0);
    redis_server_stop(&f.srv);
    assert_true(redis_test_run_until(&f.loop, got_one, &waiting, WAIT_MS));
    assert_int_equal(waiting.r, AGG_STORE_ERROR);
    assert_true(agg_store_errors(f.b) >= 1);
    assert_true(redis_test_run_until(&f.loop, is_down, f.a, WAIT_MS));
    uint64_t before = agg_store_errors(f.a);
    got_t none = {0};
    assert_null(agg_store_get(f.a, "k", 1, LOCK_MS, 1000, on_done, &none));
    assert_int_equal(agg_store_put(f.a, "k", 1, "v", 1, 1000), FE_IO);
    assert_int_equal(agg_store_release(f.a, "k", 1), FE_IO);
    assert_int_equal(agg_store_errors(f.a), before + 3);
    assert_true(redis_server_start(&f.srv)); /* same port, empty */
    assert_true(redis_test_run_until(&f.loop, is_up, f.a, WAIT_MS));
    assert_int_equal(get(&f, f.a, "k", LOCK_MS, 0).r, AGG_STORE_FETCH);
    assert_int_equal(none.calls, 0);
    fx_t *fp = &f;
    end((void **)&fp);
    redis_server_stop(&f.srv);
}

/* Nothing listens there: refused at once, counted; bad addresses refused. */
static void test_unreachable(void **state)
{
    uv_loop_t loop;
    char address[32];
    snprintf(address, sizeof address, "127.0.0.1:%d", redis_server_free_port());
    assert_int_equal(uv_loop_init(&loop), 0);
    agg_store_t *s = agg_store_new(&loop, address, 0);
    assert_non_null(s);
    got_t g = {0};
    assert_null(agg_store_get(s, "k", 1, LOCK_MS, 1000, on_done, &g));
    assert_int_equal(agg_store_errors(s), 1);
    redis_test_run_for(&loop, 300);
    assert_true(agg_store_errors(s) > 1); /* connection attempts */
    assert_int_equal(g.calls, 0);
    agg_store_close(s);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_null(agg_store_new(&loop, "nonsense", 0));
    assert_null(agg_store_new(&loop, NULL, 0));
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_miss_fetch_put_then_hit_elsewhere, start, end),
        cmocka_unit_test_setup_teardown(test_busy_then_hit, start, end),
        cmocka_unit_test_setup_teardown(test_concurrent_misses_make_one_fetch, start, end),
        cmocka_unit_test_setup_teardown(test_busy_then_fetch_after_release_or_expiry, start, end),
        cmocka_unit_test_setup_teardown(test_wait_is_bounded, start, end),
        cmocka_unit_test_setup_teardown(test_ttl_expiry, start, end),
        cmocka_unit_test_setup_teardown(test_put_keeps_another_holders_lock, start, end),
        cmocka_unit_test_setup_teardown(test_cancel, start, end),
        cmocka_unit_test_setup_teardown(test_bounds, start, end),
        cmocka_unit_test_setup_teardown(test_close_with_lookups_pending, start, end),
        cmocka_unit_test(test_redis_killed),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, setup, redis_server_group_teardown);
}
