/* The worker's token cache (policy/token_cache.h): hits, expiry, replacing,
 * both bounds with least-recently-used eviction, tokens that share their
 * last bytes, and the errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "core/errors.h"
#include "policy/token_cache.h"

static void put_str(token_cache_t *c, const char *token, const char *value, uint64_t expires_ms)
{
    assert_int_equal(token_cache_put(c, token, strlen(token), value, strlen(value) + 1, expires_ms),
                     0);
}

/* The cached value of token at now_ms, or NULL. */
static const char *get_str(token_cache_t *c, const char *token, uint64_t now_ms)
{
    size_t len = 0;
    const char *v = token_cache_get(c, token, strlen(token), now_ms, &len);
    if (v)
        assert_int_equal(len, strlen(v) + 1);
    return v;
}

static void test_hit_miss_expiry(void **state)
{
    (void)state;
    token_cache_t *c = token_cache_new(8, 4096);
    assert_non_null(c);
    assert_null(get_str(c, "a.b.c", 0));
    put_str(c, "a.b.c", "user-1", 1000);
    assert_string_equal(get_str(c, "a.b.c", 999), "user-1");
    assert_null(get_str(c, "a.b.", 0));
    assert_null(get_str(c, "a.b.cd", 0));
    assert_null(get_str(c, "x.b.c", 0));
    assert_int_equal(token_cache_entries(c), 1);
    /* Expired at expires_ms: dropped, not an eviction. */
    assert_null(get_str(c, "a.b.c", 1000));
    assert_int_equal(token_cache_entries(c), 0);
    assert_null(get_str(c, "a.b.c", 0));
    assert_int_equal(token_cache_evictions(c), 0);
    token_cache_free(c);
    token_cache_free(NULL);
}

static void test_replace_and_empty(void **state)
{
    (void)state;
    token_cache_t *c = token_cache_new(4, 4096);
    put_str(c, "t", "one", 100);
    put_str(c, "t", "second", 200);
    assert_int_equal(token_cache_entries(c), 1);
    assert_string_equal(get_str(c, "t", 150), "second");
    /* An empty value, and an empty token, are values like others. */
    assert_int_equal(token_cache_put(c, "e", 1, NULL, 0, 100), 0);
    size_t len = 99;
    assert_non_null(token_cache_get(c, "e", 1, 0, &len));
    assert_int_equal(len, 0);
    assert_int_equal(token_cache_put(c, "", 0, "v", 2, 100), 0);
    assert_string_equal(token_cache_get(c, "", 0, 0, NULL), "v");
    assert_int_equal(token_cache_evictions(c), 0);
    token_cache_free(c);
}

static void test_entry_bound_lru(void **state)
{
    (void)state;
    token_cache_t *c = token_cache_new(3, 1 << 20);
    put_str(c, "t1", "1", 100);
    put_str(c, "t2", "2", 100);
    put_str(c, "t3", "3", 100);
    assert_non_null(get_str(c, "t1", 0)); /* t2 is now the least recent */
    put_str(c, "t4", "4", 100);
    assert_int_equal(token_cache_entries(c), 3);
    assert_int_equal(token_cache_evictions(c), 1);
    assert_null(get_str(c, "t2", 0));
    assert_non_null(get_str(c, "t1", 0));
    assert_non_null(get_str(c, "t3", 0));
    assert_non_null(get_str(c, "t4", 0));
    /* Replacing is not evicting. */
    put_str(c, "t3", "33", 100);
    assert_int_equal(token_cache_entries(c), 3);
    assert_int_equal(token_cache_evictions(c), 1);
    token_cache_free(c);
}

static void test_byte_bound(void **state)
{
    (void)state;
    char value[200];
    memset(value, 'v', sizeof value);
    /* Room for two entries of 10 + 200 + overhead bytes, not three. */
    size_t one = 10 + sizeof value + TOKEN_CACHE_ENTRY_OVERHEAD;
    token_cache_t *c = token_cache_new(100, 2 * one + one / 2);
    assert_int_equal(token_cache_put(c, "token-0001", 10, value, sizeof value, 100), 0);
    assert_int_equal(token_cache_put(c, "token-0002", 10, value, sizeof value, 100), 0);
    assert_int_equal(token_cache_put(c, "token-0003", 10, value, sizeof value, 100), 0);
    assert_int_equal(token_cache_entries(c), 2);
    assert_int_equal(token_cache_evictions(c), 1);
    assert_null(token_cache_get(c, "token-0001", 10, 0, NULL));
    assert_non_null(token_cache_get(c, "token-0003", 10, 0, NULL));
    /* An entry larger than the whole bound is refused and evicts nothing. */
    char big[1024] = {0};
    assert_int_equal(token_cache_put(c, "big", 3, big, sizeof big, 100), FE_TOOBIG);
    assert_int_equal(token_cache_put(c, big, sizeof big, "v", 1, 100), FE_TOOBIG);
    assert_int_equal(token_cache_put(c, "x", 1, big, SIZE_MAX, 100), FE_TOOBIG);
    assert_int_equal(token_cache_entries(c), 2);
    /* One that takes the whole bound pushes out everything else. */
    size_t all = 2 * one + one / 2 - TOKEN_CACHE_ENTRY_OVERHEAD - 3;
    assert_true(all <= sizeof big);
    assert_int_equal(token_cache_put(c, "big", 3, big, all, 100), 0);
    assert_int_equal(token_cache_entries(c), 1);
    assert_int_equal(token_cache_evictions(c), 3);
    token_cache_free(c);
}

/* Writes i as the first 7 bytes of t (i < 10^7). */
static void mark(char *t, int i)
{
    for (int k = 6; k >= 0; k--, i /= 10)
        t[k] = (char)('0' + i % 10);
}

/* JWT-sized tokens that differ only before their last 64 bytes, or only in
 * their length: each finds its own entry. */
static void test_shared_tails(void **state)
{
    (void)state;
    enum { N = 200, LEN = 1024 };
    token_cache_t *c = token_cache_new(N * 2, (size_t)N * 2 * (LEN + 128));
    char t[LEN + 1];
    memset(t, 'A', LEN);
    t[LEN] = '\0';
    for (int i = 0; i < N; i++) {
        mark(t, i);
        assert_int_equal(token_cache_put(c, t, LEN, &i, sizeof i, 100), 0);
        int j = -i; /* a suffix of it: same last bytes, another length */
        assert_int_equal(token_cache_put(c, t + 1, LEN - 1, &j, sizeof j, 100), 0);
    }
    for (int i = 0; i < N; i++) {
        mark(t, i);
        size_t len = 0;
        const int *v = token_cache_get(c, t, LEN, 0, &len);
        assert_non_null(v);
        assert_int_equal(len, sizeof(int));
        assert_int_equal(*v, i);
        v = token_cache_get(c, t + 1, LEN - 1, 0, NULL);
        assert_non_null(v);
        assert_int_equal(*v, -i);
    }
    t[0] = 'Z';
    assert_null(token_cache_get(c, t, LEN, 0, NULL));
    token_cache_free(c);
}

static void test_bounds_given(void **state)
{
    (void)state;
    assert_null(token_cache_new(0, 100));
    assert_null(token_cache_new(10, 0));
    token_cache_t *c = token_cache_new(SIZE_MAX, SIZE_MAX);
    assert_non_null(c);
    put_str(c, "t", "v", 10);
    assert_string_equal(get_str(c, "t", 0), "v");
    token_cache_free(c);
    assert_int_equal(token_cache_entries(NULL), 0);
    assert_int_equal(token_cache_evictions(NULL), 0);
}

/* Many puts through a small cache: the bounds always hold. */
static void test_churn(void **state)
{
    (void)state;
    token_cache_t *c = token_cache_new(16, 16 * (TOKEN_CACHE_ENTRY_OVERHEAD + 40));
    char t[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(t, sizeof t, "tok-%d-%d", i % 97, i);
        assert_int_equal(token_cache_put(c, t, (size_t)n, t, (size_t)(i % 20), (uint64_t)(i % 7)),
                         0);
        assert_true(token_cache_entries(c) <= 16);
        snprintf(t, sizeof t, "tok-%d-%d", (i - 3) % 97, i - 3);
        (void)token_cache_get(c, t, strlen(t), 3, NULL);
    }
    assert_true(token_cache_evictions(c) > 0);
    token_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_expiry), cmocka_unit_test(test_replace_and_empty),
        cmocka_unit_test(test_entry_bound_lru), cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_shared_tails),    cmocka_unit_test(test_bounds_given),
        cmocka_unit_test(test_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
