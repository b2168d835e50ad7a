/* policy/session_store: one owner per token and the waiters woken once,
 * answers cached until they expire, a failure seen by the waiters and then
 * tried again, the bounds with their evictions, and threads racing on one
 * token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "policy/session_store.h"

#define JWT "aaaa.bbbb.cccc"
#define BIG (1024 * 1024)

static atomic_int wakes[4];

static void on_wake(void *ctx) { atomic_fetch_add(&wakes[(intptr_t)ctx], 1); }

static session_store_t *make(size_t max_entries, size_t max_bytes, unsigned n_workers)
{
    session_store_t *s = session_store_new(max_entries, max_bytes, n_workers);
    assert_non_null(s);
    for (unsigned w = 0; w < n_workers && w < 4; w++) {
        atomic_store(&wakes[w], 0);
        session_store_set_wake(s, w, on_wake, (void *)(intptr_t)w);
    }
    return s;
}

/* get with a JWT buffer, for the state only. */
static session_state_t get(session_store_t *s, const char *token, uint64_t now, unsigned worker)
{
    char jwt[SESSION_JWT_MAX_BYTES];
    size_t len;
    uint64_t exp;
    return session_store_get(s, token, strlen(token), now, worker, jwt, sizeof jwt, &len, &exp);
}

static void done(session_store_t *s, const char *token, session_state_t r, const char *jwt,
                 uint64_t expires)
{
    session_store_done(s, token, strlen(token), r, jwt, jwt ? strlen(jwt) : 0, expires);
}

static void test_one_owner_waiters_woken_once(void **state)
{
    (void)state;
    session_store_t *s = make(16, BIG, 2);
    assert_int_equal(get(s, "tok", 100, 0), SESSION_MINE);
    assert_int_equal(get(s, "tok", 101, 1), SESSION_PENDING);
    assert_int_equal(get(s, "tok", 102, 1), SESSION_PENDING); /* same worker, marked once */
    assert_int_equal(get(s, "tok", 102, 0), SESSION_PENDING); /* another request of the owner's */
    assert_int_equal(atomic_load(&wakes[0]) + atomic_load(&wakes[1]), 0);
    done(s, "tok", SESSION_USER, JWT, 30100);
    assert_int_equal(atomic_load(&wakes[0]), 1);
    assert_int_equal(atomic_load(&wakes[1]), 1);
    for (unsigned w = 0; w < 2; w++) {
        char jwt[64];
        size_t len = 0;
        uint64_t exp = 0;
        assert_int_equal(session_store_get(s, "tok", 3, 200, w, jwt, sizeof jwt, &len, &exp),
                         SESSION_USER);
        assert_int_equal(len, strlen(JWT));
        assert_memory_equal(jwt, JWT, len);
        assert_int_equal(exp, 30100);
    }
    /* Nobody waits now: another answer wakes no one. */
    assert_int_equal(get(s, "other", 200, 0), SESSION_MINE);
    done(s, "other", SESSION_NO_USER, NULL, 30200);
    assert_int_equal(atomic_load(&wakes[0]), 1);
    /* A buffer too small for the JWT is not a user. */
    char small[4];
    size_t len = 0;
    assert_int_equal(session_store_get(s, "tok", 3, 200, 0, small, sizeof small, &len, NULL),
                     SESSION_UNAVAILABLE);
    assert_int_equal(len, strlen(JWT));
    session_store_free(s);
}

static void test_no_user_cached_until_expiry(void **state)
{
    (void)state;
    session_store_t *s = make(16, BIG, 1);
    assert_int_equal(get(s, "anon", 0, 0), SESSION_MINE);
    done(s, "anon", SESSION_NO_USER, NULL, 1000);
    assert_int_equal(get(s, "anon", 999, 0), SESSION_NO_USER);
    assert_int_equal(get(s, "anon", 1000, 0), SESSION_MINE);
    assert_int_equal(get(s, "anon", 1000, 0), SESSION_PENDING);
    /* A user expires at its expires_ms too. */
    done(s, "anon", SESSION_USER, JWT, 5000);
    assert_int_equal(get(s, "anon", 4999, 0), SESSION_USER);
    assert_int_equal(get(s, "anon", 5000, 0), SESSION_MINE);
    assert_int_equal(session_store_entries(s), 1);
    session_store_free(s);
}

static void test_unavailable_seen_then_retried(void **state)
{
    (void)state;
    session_store_t *s = make(16, BIG, 3);
    assert_int_equal(get(s, "t", 0, 0), SESSION_MINE);
    assert_int_equal(get(s, "t", 1, 1), SESSION_PENDING);
    assert_int_equal(get(s, "t", 1, 2), SESSION_PENDING);
    done(s, "t", SESSION_UNAVAILABLE, NULL, 10 + SESSION_STORE_UNAVAILABLE_MS);
    assert_int_equal(atomic_load(&wakes[1]), 1);
    assert_int_equal(atomic_load(&wakes[2]), 1);
    assert_int_equal(atomic_load(&wakes[0]), 0);
    assert_int_equal(get(s, "t", 20, 1), SESSION_UNAVAILABLE);
    assert_int_equal(get(s, "t", 20, 2), SESSION_UNAVAILABLE);
    /* After the linger, the next request owns a new exchange. */
    assert_int_equal(get(s, "t", 10 + SESSION_STORE_UNAVAILABLE_MS, 2), SESSION_MINE);
    /* Anything but a user or no user is a failure; so is a user without a JWT. */
    done(s, "t", SESSION_MINE, JWT, 5000);
    assert_int_equal(get(s, "t", 2000, 0), SESSION_UNAVAILABLE);
    assert_int_equal(get(s, "t", 6000, 0), SESSION_MINE);
    done(s, "t", SESSION_USER, NULL, 9000);
    assert_int_equal(get(s, "t", 7000, 0), SESSION_UNAVAILABLE);
    session_store_free(s);
}

static void test_abandoned_exchange_taken_over(void **state)
{
    (void)state;
    session_store_t *s = make(16, BIG, 2);
    assert_int_equal(get(s, "t", 0, 0), SESSION_MINE);
    assert_int_equal(get(s, "t", 0, 1), SESSION_PENDING);
    done(s, "t", SESSION_PENDING, NULL, 0);
    assert_int_equal(atomic_load(&wakes[1]), 1);
    assert_int_equal(session_store_entries(s), 0);
    /* The waiter exchanges it now; nobody else does at the same time. */
    assert_int_equal(get(s, "t", 1, 1), SESSION_MINE);
    assert_int_equal(get(s, "t", 1, 0), SESSION_PENDING);
    done(s, "t", SESSION_USER, JWT, 1000);
    assert_int_equal(atomic_load(&wakes[0]), 1);
    /* Abandoning an answered token changes nothing. */
    done(s, "t", SESSION_PENDING, NULL, 0);
    assert_int_equal(get(s, "t", 2, 0), SESSION_USER);
    session_store_free(s);
}

static void test_token_bounds(void **state)
{
    (void)state;
    session_store_t *s = make(16, BIG, 1);
    static char long_token[SESSION_TOKEN_MAX_BYTES + 2];
    memset(long_token, 'x', sizeof long_token - 1);
    assert_int_equal(get(s, "", 0, 0), SESSION_NO_USER);
    assert_int_equal(get(s, long_token, 0, 0), SESSION_NO_USER);
    long_token[SESSION_TOKEN_MAX_BYTES] = '\0';
    assert_int_equal(get(s, long_token, 0, 0), SESSION_MINE);
    /* Tokens are compared whole: a prefix is another token. */
    long_token[SESSION_TOKEN_MAX_BYTES - 1] = '\0';
    assert_int_equal(get(s, long_token, 0, 0), SESSION_MINE);
    assert_int_equal(session_store_entries(s), 2);
    session_store_free(s);
    /* Bounds that cannot hold one entry are refused. */
    assert_null(session_store_new(0, BIG, 1));
    assert_null(session_store_new(16, session_store_entry_max_bytes(1) - 1, 1));
    assert_null(session_store_new(16, BIG, 0));
}

static void test_entries_bound_evicts_soonest_expiry(void **state)
{
    (void)state;
    session_store_t *s = make(3, BIG, 1);
    const char *tokens[] = {"a", "b", "c"};
    const uint64_t expiry[] = {3000, 1000, 2000};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(get(s, tokens[i], 0, 0), SESSION_MINE);
        done(s, tokens[i], SESSION_USER, JWT, expiry[i]);
    }
    /* "b" expires first: it goes. */
    assert_int_equal(get(s, "d", 10, 0), SESSION_MINE);
    assert_int_equal(session_store_entries(s), 3);
    assert_int_equal(get(s, "a", 10, 0), SESSION_USER);
    assert_int_equal(get(s, "c", 10, 0), SESSION_USER);
    /* The expired "d" goes first. */
    done(s, "d", SESSION_USER, JWT, 100);
    assert_int_equal(get(s, "b", 2500, 0), SESSION_MINE);
    assert_int_equal(get(s, "a", 2500, 0), SESSION_USER);
    assert_int_equal(get(s, "c", 2500, 0), SESSION_MINE); /* expired: exchanged again */
    assert_int_equal(get(s, "d", 2500, 0), SESSION_MINE); /* it was evicted: evicts "a" */
    assert_int_equal(session_store_entries(s), 3);
    session_store_free(s);
}

/* Many entries expiring in a shuffled order: they go soonest first. */
static void test_eviction_order(void **state)
{
    (void)state;
    enum { N = 64 };
    session_store_t *s = make(N, BIG, 1);
    unsigned order[N];
    for (unsigned i = 0; i < N; i++)
        order[i] = i;
    uint32_t x = 12345;
    for (unsigned i = N - 1; i > 0; i--) {
        x = x * 1103515245u + 12345u;
        unsigned j = (x >> 8) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    char token[16];
    for (unsigned i = 0; i < N; i++) {
        snprintf(token, sizeof token, "old%u", i);
        assert_int_equal(get(s, token, 0, 0), SESSION_MINE);
        done(s, token, SESSION_USER, JWT, 1000 + order[i]);
    }
    for (unsigned i = 0; i < N / 2; i++) {
        snprintf(token, sizeof token, "new%u", i);
        assert_int_equal(get(s, token, 1, 0), SESSION_MINE);
    }
    /* The half that expires last is still there (and nothing else can be). */
    for (unsigned i = 0; i < N; i++) {
        snprintf(token, sizeof token, "old%u", i);
        if (order[i] >= N / 2 && get(s, token, 1, 0) != SESSION_USER)
            fail_msg("%s (expiring %u) was evicted", token, 1000 + order[i]);
    }
    assert_int_equal(session_store_entries(s), N);
    session_store_free(s);
}

static void test_pending_evicted_last_and_its_waiters_woken(void **state)
{
    (void)state;
    session_store_t *s = make(2, BIG, 2);
    assert_int_equal(get(s, "p", 0, 0), SESSION_MINE);
    assert_int_equal(get(s, "p", 0, 1), SESSION_PENDING);
    assert_int_equal(get(s, "q", 0, 0), SESSION_MINE);
    done(s, "q", SESSION_USER, JWT, 5000);
    /* The answered "q" goes before the pending "p". */
    assert_int_equal(get(s, "r", 1, 0), SESSION_MINE);
    assert_int_equal(atomic_load(&wakes[1]), 0);
    assert_int_equal(get(s, "p", 1, 1), SESSION_PENDING);
    /* Only pending entries left: the oldest goes, its waiter woken. */
    assert_int_equal(get(s, "z", 1, 0), SESSION_MINE);
    assert_int_equal(atomic_load(&wakes[1]), 1);
    assert_int_equal(atomic_load(&wakes[0]), 0);
    /* Its owner's answer is not stored again; "r" and "z" are there. */
    done(s, "p", SESSION_USER, JWT, 5000);
    assert_int_equal(session_store_entries(s), 2);
    assert_int_equal(get(s, "r", 1, 1), SESSION_PENDING);
    assert_int_equal(get(s, "z", 1, 1), SESSION_PENDING);
    session_store_free(s);
}

static void test_bytes_bound(void **state)
{
    (void)state;
    size_t one = session_store_entry_max_bytes(1);
    /* Room for two entries with the longest JWT, not three. */
    size_t max_bytes = one + SESSION_JWT_MAX_BYTES + 512;
    session_store_t *s = make(100, max_bytes, 1);
    static char jwt[SESSION_JWT_MAX_BYTES + 2];
    memset(jwt, 'j', SESSION_JWT_MAX_BYTES);
    char token[8];
    for (int i = 0; i < 10; i++) {
        snprintf(token, sizeof token, "t%d", i);
        assert_int_equal(get(s, token, (uint64_t)i, 0), SESSION_MINE);
        done(s, token, SESSION_USER, jwt, 1000 + (uint64_t)i);
        assert_true(session_store_bytes(s) <= max_bytes);
    }
    /* Two big entries fit at most; the latest two are those. */
    assert_int_equal(session_store_entries(s), 2);
    assert_int_equal(get(s, "t9", 20, 0), SESSION_USER);
    assert_int_equal(get(s, "t8", 20, 0), SESSION_USER);
    /* A JWT over the limit is a failure, not stored. */
    jwt[SESSION_JWT_MAX_BYTES] = 'j';
    assert_int_equal(get(s, "huge", 20, 0), SESSION_MINE);
    done(s, "huge", SESSION_USER, jwt, 5000);
    assert_int_equal(get(s, "huge", 21, 0), SESSION_UNAVAILABLE);
    session_store_free(s);
}

/* ---- threads racing ---- */

#define THREADS 4
#define ROUNDS 2000

typedef struct race {
    session_store_t *s;
    pthread_barrier_t barrier;
    sem_t woken[THREADS];
    atomic_int mine[ROUNDS];
    atomic_int users[ROUNDS];
} race_t;

typedef struct racer {
    race_t *r;
    unsigned worker;
} racer_t;

static void on_race_wake(void *ctx)
{
    sem_t *sem = ctx;
    sem_post(sem);
}

static void *race_thread(void *arg)
{
    racer_t *me = arg;
    race_t *r = me->r;
    char token[32], jwt[64];
    for (int round = 0; round < ROUNDS; round++) {
        snprintf(token, sizeof token, "token-%d", round);
        pthread_barrier_wait(&r->barrier);
        size_t len = strlen(token), jwt_len;
        for (;;) {
            session_state_t st =
                session_store_get(r->s, token, len, 0, me->worker, jwt, sizeof jwt, &jwt_len, NULL);
            if (st == SESSION_MINE) {
                atomic_fetch_add(&r->mine[round], 1);
                session_store_done(r->s, token, len, SESSION_USER, JWT, strlen(JWT), 1000);
                continue;
            }
            if (st == SESSION_PENDING) {
                /* A wake that never comes fails the round, not the run. */
                struct timespec deadline;
                clock_gettime(CLOCK_REALTIME, &deadline);
                deadline.tv_sec += 10;
                if (sem_timedwait(&r->woken[me->worker], &deadline) != 0)
                    break;
                continue;
            }
            if (st == SESSION_USER && jwt_len == strlen(JWT) && memcmp(jwt, JWT, jwt_len) == 0)
                atomic_fetch_add(&r->users[round], 1);
            break;
        }
    }
    return NULL;
}

static void test_threads_one_owner_per_round(void **state)
{
    (void)state;
    static race_t r;
    memset(&r, 0, sizeof r);
    r.s = session_store_new(ROUNDS, BIG * 4, THREADS);
    assert_non_null(r.s);
    pthread_barrier_init(&r.barrier, NULL, THREADS);
    pthread_t t[THREADS];
    racer_t racers[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        sem_init(&r.woken[i], 0, 0);
        session_store_set_wake(r.s, i, on_race_wake, &r.woken[i]);
        racers[i] = (racer_t){&r, i};
        assert_int_equal(pthread_create(&t[i], NULL, race_thread, &racers[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int round = 0; round < ROUNDS; round++) {
        if (atomic_load(&r.mine[round]) != 1 || atomic_load(&r.users[round]) != THREADS)
            fail_msg("round %d: %d owners, %d users", round, atomic_load(&r.mine[round]),
                     atomic_load(&r.users[round]));
    }
    /* Every wake was for a waiter: none is left over. */
    for (unsigned i = 0; i < THREADS; i++) {
        int v = -1;
        sem_getvalue(&r.woken[i], &v);
        assert_int_equal(v, 0);
        sem_destroy(&r.woken[i]);
    }
    pthread_barrier_destroy(&r.barrier);
    session_store_free(r.s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_owner_waiters_woken_once),
        cmocka_unit_test(test_no_user_cached_until_expiry),
        cmocka_unit_test(test_unavailable_seen_then_retried),
        cmocka_unit_test(test_abandoned_exchange_taken_over),
        cmocka_unit_test(test_token_bounds),
        cmocka_unit_test(test_entries_bound_evicts_soonest_expiry),
        cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_pending_evicted_last_and_its_waiters_woken),
        cmocka_unit_test(test_bytes_bound),
        cmocka_unit_test(test_threads_one_owner_per_round),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
