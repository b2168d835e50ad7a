/* Bounded buffers and the fixed-size buffer pool (core/buf.h): a bound is
 * never crossed and a refused append leaves the buffer as it was; pooled
 * buffers are reused, counted and come back clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/errors.h"

static void test_append_within_limit(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 16);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    assert_int_equal(buf_append_str(&b, " world"), 0);
    assert_int_equal(b.len, 11);
    assert_memory_equal(b.data, "hello world", 11);
    assert_true(b.cap <= 16);
    assert_int_equal(buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 11);
    buf_deinit(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_limit_exact_and_over(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "0123456789", 10), 0); /* exactly the limit */
    assert_int_equal(b.cap, 10);
    assert_int_equal(buf_append(&b, "x", 1), FE_TOOBIG);
    assert_int_equal(buf_reserve(&b, 1), FE_TOOBIG);
    /* The refused append changed nothing. */
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "0123456789", 10);
    assert_int_equal(b.cap, 10);
    buf_deinit(&b);

    buf_init(&b, 10);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_int_equal(buf_append(&b, "0123456789", 10), FE_TOOBIG);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "abc", 3);
    assert_int_equal(buf_reserve(&b, 7), 0);
    assert_int_equal(buf_reserve(&b, 8), FE_TOOBIG);
    buf_deinit(&b);
}

static void test_unbounded_grows(void **state)
{
    (void)state;
    static char chunk[4096];
    memset(chunk, 'z', sizeof chunk);
    buf_t b;
    buf_init(&b, 0);
    for (int i = 0; i < 256; i++)
        assert_int_equal(buf_append(&b, chunk, sizeof chunk), 0);
    assert_int_equal(b.len, 256 * sizeof chunk);
    assert_true(b.cap >= b.len);
    assert_int_equal(b.data[b.len - 1], 'z');
    buf_deinit(&b);
}

static void test_printf(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 1024);
    assert_int_equal(buf_printf(&b, "%s=%d;", "a", 42), 0);
    assert_int_equal(buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "a=42;", 5);
    /* Longer than the internal scratch: the second path. */
    char big[600];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 5 + 601);
    assert_int_equal(b.data[5], '[');
    assert_int_equal(b.data[5 + 600], ']');
    /* Over the limit: refused, nothing appended. */
    assert_int_equal(buf_printf(&b, "%s", big), FE_TOOBIG);
    assert_int_equal(buf_printf(&b, "%0500d", 1), FE_TOOBIG);
    assert_int_equal(b.len, 606);
    buf_deinit(&b);
}

/* A formatted string exactly as long as the room left fits: the bound is on
 * the bytes kept, not on printf's terminating NUL. */
static void test_printf_exact_fit(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 300);
    assert_int_equal(buf_printf(&b, "%0300d", 7), 0);
    assert_int_equal(b.len, 300);
    assert_int_equal(b.data[299], '7');
    buf_deinit(&b);

    buf_init(&b, 100);
    assert_int_equal(buf_printf(&b, "%0100d", 7), 0); /* short path */
    assert_int_equal(b.len, 100);
    buf_deinit(&b);
}

static void test_consume_and_reset(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, 64);
    assert_int_equal(buf_append_str(&b, "abcdef"), 0);
    buf_consume(&b, 2);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "cdef", 4);
    buf_consume(&b, 0);
    assert_int_equal(b.len, 4);
    buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_append_str(&b, "xy"), 0);
    buf_consume(&b, 2);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_append_str(&b, "again"), 0);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_non_null(b.data); /* the memory stays for reuse */
    buf_deinit(&b);
    buf_deinit(&b); /* twice is harmless */
}

/* ----------------------------------------------------------------- pool */

static void test_pool_get_put_reuse(void **state)
{
    (void)state;
    pbuf_pool_t pool;
    pbuf_pool_init(&pool, 1024, 2);
    pbuf_t *a = pbuf_get(&pool);
    assert_non_null(a);
    assert_int_equal(a->cap, 1024);
    assert_int_equal(a->len, 0);
    assert_int_equal(a->off, 0);
    assert_int_equal(pool.n_out, 1);
    assert_int_equal(pbuf_room(a), 1024);

    memcpy(pbuf_tail(a), "dirty", 5);
    a->len = 5;
    a->off = 2;
    pbuf_put(&pool, a);
    assert_int_equal(pool.n_out, 0);
    assert_int_equal(pool.n_free, 1);

    /* The same memory comes back, clean. */
    pbuf_t *b = pbuf_get(&pool);
    assert_ptr_equal(b, a);
    assert_int_equal(b->len, 0);
    assert_int_equal(b->off, 0);
    assert_int_equal(pool.n_free, 0);
    assert_int_equal(pool.n_out, 1);
    pbuf_put(&pool, b);
    pbuf_put(&pool, NULL);
    assert_int_equal(pool.n_out, 0);
    assert_int_equal(pool.n_free, 1);
    pbuf_pool_deinit(&pool);
    assert_int_equal(pool.n_free, 0);
}

static void test_pool_max_free(void **state)
{
    (void)state;
    pbuf_pool_t pool;
    pbuf_pool_init(&pool, 64, 2);
    pbuf_t *bufs[5];
    for (int i = 0; i < 5; i++) {
        bufs[i] = pbuf_get(&pool);
        assert_non_null(bufs[i]);
        for (int j = 0; j < i; j++)
            assert_ptr_not_equal(bufs[i], bufs[j]);
    }
    assert_int_equal(pool.n_out, 5);
    for (int i = 0; i < 5; i++)
        pbuf_put(&pool, bufs[i]);
    /* Beyond max_free, returned buffers are freed (ASan checks no leak). */
    assert_int_equal(pool.n_free, 2);
    assert_int_equal(pool.n_out, 0);
    pbuf_t *x = pbuf_get(&pool);
    pbuf_t *y = pbuf_get(&pool);
    pbuf_t *z = pbuf_get(&pool);
    assert_int_equal(pool.n_free, 0);
    assert_int_equal(pool.n_out, 3);
    pbuf_put(&pool, x);
    pbuf_put(&pool, y);
    pbuf_put(&pool, z);
    pbuf_pool_deinit(&pool);
}

static void test_pbuf_compact(void **state)
{
    (void)state;
    pbuf_pool_t pool;
    pbuf_pool_init(&pool, 16, 1);
    pbuf_t *b = pbuf_get(&pool);
    memcpy(pbuf_tail(b), "0123456789abcdef", 16);
    b->len = 16;
    assert_int_equal(pbuf_room(b), 0);
    b->off = 10;
    b->len = 6;
    assert_int_equal(pbuf_room(b), 0);
    pbuf_compact(b);
    assert_int_equal(b->off, 0);
    assert_int_equal(b->len, 6);
    assert_memory_equal(pbuf_head(b), "abcdef", 6);
    assert_int_equal(pbuf_room(b), 10);
    assert_ptr_equal(pbuf_tail(b), b->data + 6);
    /* Nothing to move: the offset just goes back to 0. */
    b->off = 6;
    b->len = 0;
    pbuf_compact(b);
    assert_int_equal(b->off, 0);
    assert_int_equal(pbuf_room(b), 16);
    /* Already compact: unchanged. */
    memcpy(pbuf_tail(b), "xyz", 3);
    b->len = 3;
    pbuf_compact(b);
    assert_memory_equal(pbuf_head(b), "xyz", 3);
    pbuf_put(&pool, b);
    pbuf_pool_deinit(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* buf_t */
        cmocka_unit_test(test_append_within_limit),
        cmocka_unit_test(test_limit_exact_and_over),
        cmocka_unit_test(test_unbounded_grows),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_printf_exact_fit),
        cmocka_unit_test(test_consume_and_reset),
        /* pbuf pool */
        cmocka_unit_test(test_pool_get_put_reuse),
        cmocka_unit_test(test_pool_max_free),
        cmocka_unit_test(test_pbuf_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
