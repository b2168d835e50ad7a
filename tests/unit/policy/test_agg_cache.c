/* The aggregation cache (policy/agg_cache.h): hits until expiry, single
 * flight (one fetch, the others wait and get its body or its failure),
 * cancelled waits, bounds with least-recently-used eviction, and two threads
 * at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/agg_cache.h"

typedef struct seen {
    agg_waiter_t w;
    int calls;
    agg_body_t *body;
} seen_t;

static void on_wake(agg_waiter_t *w, agg_body_t *body)
{
    seen_t *s = (seen_t *)w;
    s->calls++;
    s->body = body;
}

#define K(s) s, strlen(s)

static void put_text(agg_cache_t *c, const char *key, const char *text, uint64_t ttl, uint64_t now)
{
    agg_body_t *b = agg_body_new(text, strlen(text));
    agg_cache_put(c, K(key), b, ttl, now);
    agg_body_unref(b);
}

static void test_hit_until_expiry(void **state)
{
    (void)state;
    agg_cache_t *c = agg_cache_new(16, 1 << 20);
    agg_body_t *hit;
    seen_t s = {.w.fn = on_wake};
    assert_int_equal(agg_cache_get(c, K("/a"), 1000, &hit, &s.w), AGG_FETCH);
    put_text(c, "/a", "{\"a\":1}", 500, 1000);
    assert_int_equal(agg_cache_get(c, K("/a"), 1499, &hit, &s.w), AGG_HIT);
    assert_memory_equal(hit->data, "{\"a\":1}", hit->len);
    agg_body_unref(hit);
    /* expired: the next one fetches again */
    assert_int_equal(agg_cache_get(c, K("/a"), 1500, &hit, &s.w), AGG_FETCH);
    agg_cache_fail(c, K("/a"));
    assert_int_equal(agg_cache_get(c, K("/a"), 1500, &hit, &s.w), AGG_FETCH);
    agg_cache_stats_t st;
    agg_cache_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 3);
    agg_cache_free(c);
}

static void test_single_flight(void **state)
{
    (void)state;
    agg_cache_t *c = agg_cache_new(16, 1 << 20);
    agg_body_t *hit;
    seen_t w[30];
    memset(w, 0, sizeof w);
    assert_int_equal(agg_cache_get(c, K("/reco?u=1"), 0, &hit, &w[0].w), AGG_FETCH);
    for (int i = 1; i < 30; i++) {
        w[i].w.fn = on_wake;
        assert_int_equal(agg_cache_get(c, K("/reco?u=1"), 0, &hit, &w[i].w), AGG_WAIT);
    }
    assert_true(agg_cache_cancel(c, K("/reco?u=1"), &w[7].w));
    assert_false(agg_cache_cancel(c, K("/reco?u=1"), &w[7].w));
    put_text(c, "/reco?u=1", "[1,2]", 10000, 0);
    for (int i = 1; i < 30; i++) {
        assert_int_equal(w[i].calls, i == 7 ? 0 : 1);
        if (i != 7) {
            assert_memory_equal(w[i].body->data, "[1,2]", 5);
            agg_body_unref(w[i].body);
        }
    }
    /* A failed fetch tells its waiters, and keeps nothing. */
    seen_t f = {.w.fn = on_wake};
    assert_int_equal(agg_cache_get(c, K("/x"), 0, &hit, &f.w), AGG_FETCH);
    assert_int_equal(agg_cache_get(c, K("/x"), 0, &hit, &f.w), AGG_WAIT);
    agg_cache_fail(c, K("/x"));
    assert_int_equal(f.calls, 1);
    assert_null(f.body);
    /* ttl 0 (not cacheable): waiters get it, nothing is kept */
    assert_int_equal(agg_cache_get(c, K("/y"), 0, &hit, &f.w), AGG_FETCH);
    put_text(c, "/y", "1", 0, 0);
    assert_int_equal(agg_cache_get(c, K("/y"), 0, &hit, &f.w), AGG_FETCH);
    agg_cache_fail(c, K("/y"));
    agg_cache_free(c);
}

static void test_bounds_evict_least_recent(void **state)
{
    (void)state;
    agg_cache_t *c = agg_cache_new(3, 1 << 20);
    agg_body_t *hit;
    seen_t s = {.w.fn = on_wake};
    const char *keys[] = {"/1", "/2", "/3", "/4"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(agg_cache_get(c, K(keys[i]), 0, &hit, &s.w), AGG_FETCH);
        put_text(c, keys[i], "x", 10000, 0);
    }
    assert_int_equal(agg_cache_get(c, K("/1"), 1, &hit, &s.w), AGG_HIT); /* /1 recent */
    agg_body_unref(hit);
    assert_int_equal(agg_cache_get(c, K("/4"), 1, &hit, &s.w), AGG_FETCH);
    put_text(c, "/4", "x", 10000, 1);
    assert_int_equal(agg_cache_get(c, K("/2"), 2, &hit, &s.w), AGG_FETCH); /* evicted */
    agg_cache_fail(c, K("/2"));
    assert_int_equal(agg_cache_get(c, K("/1"), 2, &hit, &s.w), AGG_HIT);
    agg_body_unref(hit);
    agg_cache_stats_t st;
    agg_cache_stats(c, &st);
    assert_true(st.entries <= 3 && st.evictions >= 1);
    agg_cache_free(c);
    /* bytes: a body larger than the whole cache is handed out, never kept */
    c = agg_cache_new(100, 200);
    assert_int_equal(agg_cache_get(c, K("/big"), 0, &hit, &s.w), AGG_FETCH);
    char big[512];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    put_text(c, "/big", big, 10000, 0);
    assert_int_equal(agg_cache_get(c, K("/big"), 0, &hit, &s.w), AGG_FETCH);
    agg_cache_fail(c, K("/big"));
    agg_cache_stats(c, &st);
    assert_true(st.bytes <= 200);
    agg_cache_free(c);
}

static agg_cache_t *shared;

/* A waiter another thread may wake: done says the call is over. */
typedef struct racer {
    agg_waiter_t w;
    agg_body_t *body;
    atomic_int done;
} racer_t;

static void on_race_wake(agg_waiter_t *w, agg_body_t *body)
{
    racer_t *r = (racer_t *)w;
    r->body = body;
    atomic_store(&r->done, 1);
}

static void *hammer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 20000; i++) {
        char key[16];
        seed = seed * 1103515245u + 12345u;
        snprintf(key, sizeof key, "/k%u", (seed >> 16) % 50);
        agg_body_t *hit;
        racer_t s = {.w.fn = on_race_wake};
        agg_lookup_t r = agg_cache_get(shared, K(key), (uint64_t)i, &hit, &s.w);
        if (r == AGG_HIT) {
            agg_body_unref(hit);
        } else if (r == AGG_FETCH) {
            put_text(shared, key, "body", 5, (uint64_t)i);
        } else if (!agg_cache_cancel(shared, K(key), &s.w)) {
            /* Being woken: the waiter's memory stays until the call is over. */
            while (!atomic_load(&s.done))
                ;
            agg_body_unref(s.body);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    shared = agg_cache_new(20, 4096);
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, hammer, (void *)(i + 1));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    agg_cache_stats_t st;
    agg_cache_stats(shared, &st);
    assert_true(st.entries <= 20 && st.bytes <= 4096);
    agg_cache_free(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_until_expiry),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_bounds_evict_least_recent),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
