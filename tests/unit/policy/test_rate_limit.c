/* Token buckets shared by workers (policy/rate_limit.h): the arithmetic on a
 * fake clock, the bounded table and what it evicts, and workers racing on one
 * key. Prints the cost of a take on one and two threads (not asserted). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "policy/rate_limit.h"

/* Takes from key until refused; returns how many were taken (at most cap). */
static unsigned drain(rate_limit_t *rl, uint64_t key, double rate, double burst, uint64_t now,
                      unsigned cap)
{
    unsigned n = 0;
    while (n < cap && rate_limit_take(rl, key, rate, burst, now, NULL))
        n++;
    return n;
}

/* Refused at now, with this retry_after. */
static void assert_refused(rate_limit_t *rl, uint64_t key, double rate, double burst, uint64_t now,
                           uint64_t retry_after_ms)
{
    uint64_t after = 0;
    assert_false(rate_limit_take(rl, key, rate, burst, now, &after));
    assert_int_equal(after, retry_after_ms);
}

static void test_burst_then_refill(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(64);
    assert_non_null(rl);
    /* 10/s, bucket of 2: two at once, then one every 100 ms. */
    assert_int_equal(drain(rl, 7, 10, 2, 1000, 10), 2);
    assert_refused(rl, 7, 10, 2, 1000, 100);
    assert_refused(rl, 7, 10, 2, 1099, 1);
    assert_true(rate_limit_take(rl, 7, 10, 2, 1100, NULL));
    assert_refused(rl, 7, 10, 2, 1100, 100);
    /* Half a token by 1150 is not a token. */
    assert_refused(rl, 7, 10, 2, 1150, 50);
    /* A long idle time fills the bucket, never more than burst. */
    assert_int_equal(drain(rl, 7, 10, 2, 60000, 10), 2);
    assert_refused(rl, 7, 10, 2, 60000, 100);
    /* Another key has its own bucket; key 0 is a key like any other. */
    assert_int_equal(drain(rl, 8, 10, 2, 60000, 10), 2);
    assert_int_equal(drain(rl, 0, 10, 2, 60000, 10), 2);
    assert_refused(rl, 0, 10, 2, 60000, 100);
    assert_int_equal(rate_limit_buckets(rl), 3);
    assert_int_equal(rate_limit_evictions(rl), 0);
    rate_limit_free(rl);
}

static void test_fractional_rates(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(64);
    assert_non_null(rl);
    /* 0.5/s: one token every 2 s. */
    assert_true(rate_limit_take(rl, 1, 0.5, 1, 0, NULL));
    assert_refused(rl, 1, 0.5, 1, 0, 2000);
    assert_refused(rl, 1, 0.5, 1, 1999, 1);
    assert_true(rate_limit_take(rl, 1, 0.5, 1, 2000, NULL));
    /* 3/s: 333.33 ms a token, rounded up to whole ms for the client. */
    assert_true(rate_limit_take(rl, 2, 3, 1, 0, NULL));
    assert_refused(rl, 2, 3, 1, 0, 334);
    assert_refused(rl, 2, 3, 1, 333, 1);
    assert_true(rate_limit_take(rl, 2, 3, 1, 334, NULL));
    /* A bucket of 1.5 at 1/s: one now, the next when it holds 1 again. */
    assert_true(rate_limit_take(rl, 3, 1, 1.5, 0, NULL));
    assert_refused(rl, 3, 1, 1.5, 0, 500);
    assert_true(rate_limit_take(rl, 3, 1, 1.5, 500, NULL));
    assert_refused(rl, 3, 1, 1.5, 500, 1000);
    /* 0.001/s: a token every 1000 s. */
    assert_true(rate_limit_take(rl, 4, 0.001, 1, 0, NULL));
    assert_refused(rl, 4, 0.001, 1, 0, 1000000);
    rate_limit_free(rl);
}

static void test_extreme_parameters(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(64);
    assert_non_null(rl);
    /* Huge rates: still no more than burst while the clock stands still,
     * and full again a millisecond later. */
    const double huge[] = {1e8, 1e12, 1e300, INFINITY};
    for (unsigned i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        assert_int_equal(drain(rl, 10 + i, huge[i], 5, 100, 100), 5);
        assert_refused(rl, 10 + i, huge[i], 5, 100, 1);
        assert_int_equal(drain(rl, 10 + i, huge[i], 5, 101, 100), 5);
    }
    /* A rate that is not > 0 refills the bucket of 3 once in 35 years: a
     * token in 11.9 years. */
    const double none[] = {0, -5, NAN};
    const uint64_t year_ms = UINT64_C(1000) * 3600 * 24 * 365;
    for (unsigned i = 0; i < sizeof none / sizeof none[0]; i++) {
        assert_int_equal(drain(rl, 20 + i, none[i], 3, 100, 100), 3);
        uint64_t after = 0;
        assert_false(rate_limit_take(rl, 20 + i, none[i], 3, 100 + year_ms, &after));
        assert_true(after > 10 * year_ms && after < 11 * year_ms);
    }
    /* A burst below 1 (or not a number) counts as 1. */
    assert_int_equal(drain(rl, 30, 1, 0, 100, 100), 1);
    assert_int_equal(drain(rl, 31, 1, NAN, 100, 100), 1);
    assert_int_equal(drain(rl, 32, 1, -1, 100, 100), 1);
    /* A huge burst and a clock at its end do not wrap. */
    assert_int_equal(drain(rl, 33, 1, 1e300, UINT64_MAX, 1000), 1000);
    assert_true(rate_limit_take(rl, 34, 1, 1, UINT64_MAX, NULL));
    assert_refused(rl, 34, 1, 1, UINT64_MAX, 1000);
    rate_limit_free(rl);
}

static void test_sizes(void **state)
{
    (void)state;
    assert_null(rate_limit_new(0));
    assert_null(rate_limit_new(RATE_LIMIT_MAX_BUCKETS + 1));
    rate_limit_t *rl = rate_limit_new(1);
    assert_non_null(rl);
    assert_int_equal(rate_limit_capacity(rl), RATE_LIMIT_GROUP);
    rate_limit_free(rl);
    rl = rate_limit_new(1000);
    assert_non_null(rl);
    assert_int_equal(rate_limit_capacity(rl), 1024);
    rate_limit_free(rl);
    rate_limit_free(NULL);
}

static void test_many_keys_bounded(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(50);
    assert_non_null(rl);
    assert_int_equal(rate_limit_capacity(rl), 64);
    /* A million source addresses: every new key past the first 64 slots
     * evicts one, and the table stays at its size. */
    const uint64_t keys = 1000000;
    for (uint64_t k = 1; k <= keys; k++) {
        assert_true(rate_limit_take(rl, k, 1, 1, 0, NULL));
        assert_true(rate_limit_buckets(rl) <= 64);
    }
    assert_int_equal(rate_limit_buckets(rl), 64);
    assert_int_equal(rate_limit_evictions(rl) + rate_limit_buckets(rl), keys);
    rate_limit_free(rl);
}

static void test_evicts_full_buckets_first(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(RATE_LIMIT_GROUP); /* one group */
    assert_non_null(rl);
    /* Seven drained slow buckets (full again at 1000 s) and one fast bucket,
     * full again after 1 ms. */
    for (uint64_t k = 1; k <= 7; k++)
        assert_true(rate_limit_take(rl, k, 0.001, 1, 0, NULL));
    assert_true(rate_limit_take(rl, 8, 1000, 1, 0, NULL));
    assert_int_equal(rate_limit_evictions(rl), 0);
    /* A new key at 10 ms takes the full bucket's slot... */
    assert_true(rate_limit_take(rl, 9, 0.001, 1, 10, NULL));
    assert_int_equal(rate_limit_evictions(rl), 1);
    /* ...and the drained ones are all still there, still drained. */
    for (uint64_t k = 1; k <= 7; k++)
        assert_refused(rl, k, 0.001, 1, 10, 999990);
    assert_int_equal(rate_limit_evictions(rl), 1);
    assert_int_equal(rate_limit_buckets(rl), RATE_LIMIT_GROUP);
    rate_limit_free(rl);
}

static void test_evicts_nearest_full(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(RATE_LIMIT_GROUP);
    assert_non_null(rl);
    /* Seven buckets of 10 at 1/s drained at 0: full again at 10 s. One more
     * used last, at 500 ms, for one token: full again at 1.5 s. */
    for (uint64_t k = 1; k <= 7; k++)
        assert_int_equal(drain(rl, k, 1, 10, 0, 100), 10);
    assert_true(rate_limit_take(rl, 8, 1, 10, 500, NULL));
    /* A new key evicts the one with the least debt, though the most
     * recently used: forgetting it grants the least. */
    assert_true(rate_limit_take(rl, 9, 1, 10, 600, NULL));
    assert_int_equal(rate_limit_evictions(rl), 1);
    for (uint64_t k = 1; k <= 7; k++)
        assert_refused(rl, k, 1, 10, 600, 400);
    assert_int_equal(rate_limit_evictions(rl), 1);
    /* Key 8 comes back with a full bucket (the documented worst case),
     * evicting the bucket nearest to full: 9's (full at 1.6 s). */
    assert_int_equal(drain(rl, 8, 1, 10, 600, 100), 10);
    assert_int_equal(rate_limit_evictions(rl), 2);
    assert_int_equal(drain(rl, 9, 1, 10, 600, 100), 10);
    assert_int_equal(rate_limit_evictions(rl), 3);
    rate_limit_free(rl);
}

/* Threads hammering keys of one table. */
typedef struct hammer {
    rate_limit_t *rl;
    pthread_barrier_t *start;
    _Atomic uint64_t *clock_ms; /* advanced by the thread with advance set */
    bool advance;
    uint64_t key;
    double rate, burst;
    unsigned tries;
    unsigned taken;
} hammer_t;

static void *hammer_run(void *arg)
{
    hammer_t *h = arg;
    pthread_barrier_wait(h->start);
    for (unsigned i = 0; i < h->tries; i++) {
        if (h->advance && i % 64 == 0)
            atomic_fetch_add(h->clock_ms, 1);
        if (rate_limit_take(h->rl, h->key, h->rate, h->burst, atomic_load(h->clock_ms), NULL))
            h->taken++;
    }
    return NULL;
}

/* Runs n threads on one key (thread 0 moving the clock when advance is set);
 * returns the tokens taken by all. */
static unsigned hammer(rate_limit_t *rl, unsigned n, _Atomic uint64_t *clock_ms, bool advance,
                       double rate, double burst, unsigned tries)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, n);
    hammer_t h[4];
    pthread_t th[4];
    unsigned taken = 0;
    for (unsigned i = 0; i < n; i++) {
        h[i] = (hammer_t){rl, &start, clock_ms, advance && i == 0, 77, rate, burst, tries, 0};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h[i]), 0);
    }
    for (unsigned i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        taken += h[i].taken;
    }
    pthread_barrier_destroy(&start);
    return taken;
}

static void test_threads_one_key_frozen_clock(void **state)
{
    (void)state;
    for (unsigned n = 2; n <= 4; n += 2) {
        rate_limit_t *rl = rate_limit_new(64);
        assert_non_null(rl);
        /* Clock standing still: exactly the bucket, whoever takes it. */
        _Atomic uint64_t clock_ms = 5000;
        unsigned taken = hammer(rl, n, &clock_ms, false, 1, 1500000, 1000000);
        assert_int_equal(taken, 1500000);
        assert_int_equal(rate_limit_buckets(rl), 1);
        rate_limit_free(rl);
    }
}

static void test_threads_one_key_moving_clock(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(64);
    assert_non_null(rl);
    /* 2000/s, bucket of 10, the clock moving 1 ms every 64 tries of thread
     * 0: never more than burst + rate * elapsed. */
    _Atomic uint64_t clock_ms = 1000;
    unsigned taken = hammer(rl, 2, &clock_ms, true, 2000, 10, 200000);
    uint64_t elapsed_ms = atomic_load(&clock_ms) - 1000;
    assert_true(taken <= 10 + 2 * elapsed_ms);
    /* And the bucket did refill: far more than the burst went through. */
    assert_true(taken > 10 + elapsed_ms);
    rate_limit_free(rl);
}

/* Two threads taking from the same new key, round after round. */
typedef struct inserter {
    rate_limit_t *rl;
    _Atomic unsigned *arrived; /* rendezvous: 2 per round */
    unsigned rounds;
    _Atomic unsigned *taken; /* per round */
} inserter_t;

/* Both threads start each round together: spinning (yielding when the other
 * thread is not running) keeps the rounds short and their starts close. */
static void rendezvous(_Atomic unsigned *arrived, unsigned target)
{
    atomic_fetch_add(arrived, 1);
    for (unsigned spins = 0; atomic_load(arrived) < target; spins++)
        if (spins > 1000)
            sched_yield();
}

static void *inserter_run(void *arg)
{
    inserter_t *in = arg;
    for (unsigned r = 0; r < in->rounds; r++) {
        rendezvous(in->arrived, 2 * (r + 1));
        if (rate_limit_take(in->rl, 1 + r, 0.001, 1, 0, NULL))
            atomic_fetch_add(&in->taken[r], 1);
    }
    return NULL;
}

#define INSERT_ROUNDS 100000

static void insert_race(rate_limit_t *rl)
{
    static _Atomic unsigned taken[INSERT_ROUNDS];
    for (unsigned r = 0; r < INSERT_ROUNDS; r++)
        atomic_store(&taken[r], 0);
    _Atomic unsigned arrived = 0;
    inserter_t in = {rl, &arrived, INSERT_ROUNDS, taken};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, inserter_run, &in), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* One bucket of 1 per key: exactly one of the two got it. */
    for (unsigned r = 0; r < INSERT_ROUNDS; r++)
        assert_int_equal(atomic_load(&taken[r]), 1);
}

static void test_threads_insert_same_key(void **state)
{
    (void)state;
    /* Into empty slots (a roomy table: a group fills now and then, and evicts
     * its nearest-full bucket): one bucket per key, never two. */
    rate_limit_t *rl = rate_limit_new(1 << 19);
    assert_non_null(rl);
    insert_race(rl);
    assert_int_equal(rate_limit_buckets(rl) + rate_limit_evictions(rl), INSERT_ROUNDS);
    rate_limit_free(rl);
    /* Into a full group whose buckets all read alike (same rate, same time):
     * both pick the same one to evict, and a claim never resets the bucket
     * the other has just claimed and charged, though its word looks the same
     * but for the generation. */
    rl = rate_limit_new(RATE_LIMIT_GROUP);
    assert_non_null(rl);
    insert_race(rl);
    assert_int_equal(rate_limit_buckets(rl), RATE_LIMIT_GROUP);
    assert_int_equal(rate_limit_evictions(rl), INSERT_ROUNDS - RATE_LIMIT_GROUP);
    rate_limit_free(rl);
}

/* Many threads, many keys, a small table: bounded and consistent. */
typedef struct churn {
    rate_limit_t *rl;
    uint64_t seed;
} churn_t;

static void *churn_run(void *arg)
{
    churn_t *c = arg;
    uint64_t x = c->seed;
    for (unsigned i = 0; i < 300000; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        rate_limit_take(c->rl, (x >> 33) % 200, 100, 5, i / 100, NULL);
    }
    return NULL;
}

static void test_threads_churn_small_table(void **state)
{
    (void)state;
    rate_limit_t *rl = rate_limit_new(16);
    assert_non_null(rl);
    churn_t c[3] = {{rl, 1}, {rl, 2}, {rl, 3}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, churn_run, &c[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_true(rate_limit_buckets(rl) <= 16);
    assert_true(rate_limit_evictions(rl) > 0);
    rate_limit_free(rl);
}

/* Timing, printed for the record, never asserted. */
typedef struct timing {
    rate_limit_t *rl;
    pthread_barrier_t *start;
    uint64_t first_key, n_keys;
    unsigned n;
    double ns;
} timing_t;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void *timing_run(void *arg)
{
    timing_t *t = arg;
    pthread_barrier_wait(t->start);
    double t0 = now_ns();
    for (unsigned i = 0; i < t->n; i++)
        rate_limit_take(t->rl, t->first_key + i % t->n_keys, 1e6, 1e6, i / 1000, NULL);
    t->ns = (now_ns() - t0) / t->n;
    return NULL;
}

static void print_timing(const char *what, unsigned threads, uint64_t n_keys, bool shared_keys)
{
    rate_limit_t *rl = rate_limit_new(65536);
    assert_non_null(rl);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, threads);
    timing_t t[2];
    pthread_t th[2];
    for (unsigned i = 0; i < threads; i++) {
        t[i] = (timing_t){rl, &start, shared_keys ? 1 : 1 + i * n_keys, n_keys, 2000000, 0};
        assert_int_equal(pthread_create(&th[i], NULL, timing_run, &t[i]), 0);
    }
    double sum = 0;
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        sum += t[i].ns;
    }
    pthread_barrier_destroy(&start);
    printf("rate_limit_take: %-28s %u thread(s): %6.1f ns per take\n", what, threads,
           sum / threads);
    rate_limit_free(rl);
}

static void test_timing(void **state)
{
    (void)state;
    print_timing("1000 keys each", 1, 1000, false);
    print_timing("1000 keys each", 2, 1000, false);
    print_timing("one key shared", 2, 1, true);
    print_timing("100000 keys each (evicting)", 1, 100000, false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refill),
        cmocka_unit_test(test_fractional_rates),
        cmocka_unit_test(test_extreme_parameters),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_many_keys_bounded),
        cmocka_unit_test(test_evicts_full_buckets_first),
        cmocka_unit_test(test_evicts_nearest_full),
        cmocka_unit_test(test_threads_one_key_frozen_clock),
        cmocka_unit_test(test_threads_one_key_moving_clock),
        cmocka_unit_test(test_threads_insert_same_key),
        cmocka_unit_test(test_threads_churn_small_table),
        cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
