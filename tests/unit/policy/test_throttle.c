/* Client concurrency throttles (policy/throttle.h): one counter per client id
 * for the process's life, and acquire never passing max under races. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>

#include "policy/throttle.h"

static void test_counter_per_id(void **state)
{
    (void)state;
    throttle_t *t = throttle_new();
    assert_non_null(t);
    atomic_uint *ios = throttle_counter(t, "ios-app");
    atomic_uint *web = throttle_counter(t, "web");
    assert_non_null(ios);
    assert_non_null(web);
    assert_ptr_not_equal(ios, web);
    assert_ptr_equal(throttle_counter(t, "ios-app"), ios);
    assert_int_equal(atomic_load(ios), 0);
    /* Many more ids (the table grows): the first counters stay put and keep
     * their counts, as a reload needs. */
    assert_true(throttle_acquire(ios, 10));
    atomic_uint *more[2000];
    for (int i = 0; i < 2000; i++) {
        char id[32];
        snprintf(id, sizeof id, "client-%d", i);
        more[i] = throttle_counter(t, id);
        assert_non_null(more[i]);
        assert_ptr_not_equal(more[i], ios);
        assert_ptr_not_equal(more[i], web);
    }
    for (int i = 0; i < 2000; i++) {
        char id[32];
        snprintf(id, sizeof id, "client-%d", i);
        assert_ptr_equal(throttle_counter(t, id), more[i]);
    }
    assert_ptr_equal(throttle_counter(t, "ios-app"), ios);
    assert_ptr_equal(throttle_counter(t, "web"), web);
    assert_int_equal(atomic_load(ios), 1);
    /* Ids are compared whole: a prefix or the empty id is another client. */
    atomic_uint *empty = throttle_counter(t, "");
    assert_non_null(empty);
    assert_ptr_not_equal(empty, ios);
    assert_ptr_not_equal(throttle_counter(t, "ios"), ios);
    assert_null(throttle_counter(t, NULL));
    throttle_free(t);
    throttle_free(NULL);
}

static void test_acquire_release(void **state)
{
    (void)state;
    atomic_uint c = 0;
    assert_true(throttle_acquire(&c, 2));
    assert_true(throttle_acquire(&c, 2));
    assert_false(throttle_acquire(&c, 2));
    assert_int_equal(atomic_load(&c), 2);
    throttle_release(&c);
    assert_true(throttle_acquire(&c, 2));
    /* A lower max after a reload: nothing more until enough are done. */
    assert_false(throttle_acquire(&c, 1));
    throttle_release(&c);
    assert_false(throttle_acquire(&c, 1));
    throttle_release(&c);
    assert_true(throttle_acquire(&c, 1));
    throttle_release(&c);
    /* A release too many does not wrap to a counter that refuses all. */
    throttle_release(&c);
    assert_int_equal(atomic_load(&c), 0);
    assert_false(throttle_acquire(&c, 0));
    assert_int_equal(atomic_load(&c), 0);
}

/* Threads racing acquire and release on one counter. */
typedef struct racer {
    atomic_uint *c;
    uint32_t max;
    atomic_uint *inside; /* requests between acquire and release */
    atomic_uint *high;   /* the most seen: in the counter and inside */
    pthread_barrier_t *start;
    unsigned acquired;
} racer_t;

static void raise_to(atomic_uint *high, unsigned v)
{
    unsigned h = atomic_load(high);
    while (v > h && !atomic_compare_exchange_weak(high, &h, v))
        ;
}

static void *racer_run(void *arg)
{
    racer_t *r = arg;
    pthread_barrier_wait(r->start);
    for (int i = 0; i < 1000000; i++) {
        /* Read the counter as another worker would, between operations: a
         * transient overshoot shows here. */
        raise_to(r->high, atomic_load(r->c));
        if (!throttle_acquire(r->c, r->max))
            continue;
        r->acquired++;
        raise_to(r->high, atomic_fetch_add(r->inside, 1) + 1);
        raise_to(r->high, atomic_load(r->c));
        atomic_fetch_sub(r->inside, 1);
        throttle_release(r->c);
    }
    return NULL;
}

static void test_no_overshoot_under_races(void **state)
{
    (void)state;
    for (unsigned n = 2; n <= 4; n++) {
        atomic_uint c = 0, inside = 0, high = 0;
        uint32_t max = n - 1;
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, n);
        racer_t r[4];
        pthread_t th[4];
        for (unsigned i = 0; i < n; i++) {
            r[i] = (racer_t){&c, max, &inside, &high, &start, 0};
            assert_int_equal(pthread_create(&th[i], NULL, racer_run, &r[i]), 0);
        }
        unsigned acquired = 0;
        for (unsigned i = 0; i < n; i++) {
            pthread_join(th[i], NULL);
            acquired += r[i].acquired;
        }
        pthread_barrier_destroy(&start);
        assert_true(atomic_load(&high) <= max);
        assert_int_equal(atomic_load(&c), 0);
        assert_true(acquired > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_per_id),
        cmocka_unit_test(test_acquire_release),
        cmocka_unit_test(test_no_overshoot_under_races),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
