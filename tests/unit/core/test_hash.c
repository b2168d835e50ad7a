/* core/hash: FNV-1a and the mixer. Fixed values: a sticky user must land on
 * the same backend, and a set member in the same bucket, after an upgrade,
 * so the hashes may never change between builds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/hash.h"

static void test_bytes_stable(void **state)
{
    (void)state;
    assert_true(hash_bytes("", 0) == 0xefd01f60ba992926ULL);
    assert_true(hash_bytes("a", 1) == 0x82a2a958a9bece5bULL);
    assert_true(hash_bytes("user-42", 7) == 0xa39532c7ab051e8dULL);
    assert_true(hash_bytes("shop-1234", 9) == 0xdaaf0007ad67ac5aULL);
    assert_true(hash_bytes("user-43", 7) != hash_bytes("user-42", 7));
}

static void test_fnv1a_reference_and_continuation(void **state)
{
    (void)state;
    /* The published FNV-1a 64 test vectors. */
    assert_true(hash_fnv1a(HASH_FNV1A_INIT, "", 0) == 0xcbf29ce484222325ULL);
    assert_true(hash_fnv1a(HASH_FNV1A_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(hash_fnv1a(HASH_FNV1A_INIT, "foobar", 6) == 0x85944171f73967e8ULL);
    /* In pieces, as a file read in chunks: the same as at once. */
    uint64_t h = hash_fnv1a(HASH_FNV1A_INIT, "foo", 3);
    assert_true(hash_fnv1a(h, "bar", 3) == 0x85944171f73967e8ULL);
}

static void test_mix_spreads(void **state)
{
    (void)state;
    assert_true(hash_mix(0) == 0);
    /* One input bit flips about half of the output bits. */
    int bits = __builtin_popcountll(hash_mix(1) ^ hash_mix(2));
    assert_in_range(bits, 16, 48);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_stable),
        cmocka_unit_test(test_fnv1a_reference_and_continuation),
        cmocka_unit_test(test_mix_spreads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
