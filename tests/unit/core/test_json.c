/* core/json: the one JSON string escaper. Escapes, UTF-8 kept or replaced,
 * whole escapes only at the end of the room, and `used` saying how far the
 * input got. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/json.h"

static size_t esc(const char *in, size_t n, char *out, size_t cap, size_t *used)
{
    return json_escape(out, cap, in, n, used);
}

static void test_escapes(void **state)
{
    (void)state;
    char out[64];
    size_t used;
    assert_int_equal(esc("a\"b\\c\n", 6, out, sizeof out, &used), 13);
    assert_memory_equal(out, "a\\\"b\\\\c\\u000a", 13);
    assert_int_equal(used, 6);
    assert_int_equal(esc("\x7f", 1, out, sizeof out, &used), 6); /* DEL too */
    assert_memory_equal(out, "\\u007f", 6);
}

static void test_utf8_kept_or_replaced(void **state)
{
    (void)state;
    char out[64];
    size_t used;
    /* Well-formed UTF-8 (2, 3 and 4 bytes) is copied as is. */
    const char *ok = "\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80";
    assert_int_equal(esc(ok, 9, out, sizeof out, &used), 9);
    assert_memory_equal(out, ok, 9);
    /* A lone continuation byte, an overlong, a surrogate, a cut sequence. */
    assert_int_equal(esc("\x80", 1, out, sizeof out, &used), 6);
    assert_memory_equal(out, "\\ufffd", 6);
    assert_int_equal(esc("\xc0\xaf", 2, out, sizeof out, &used), 12);
    assert_int_equal(esc("\xed\xa0\x80", 3, out, sizeof out, &used), 18);
    assert_int_equal(esc("a\xe6\x97", 3, out, sizeof out, &used), 13);
    assert_memory_equal(out, "a\\ufffd\\ufffd", 13);
}

static void test_room(void **state)
{
    (void)state;
    char out[64];
    size_t used;
    /* Exact fit. */
    assert_int_equal(esc("ab", 2, out, 2, &used), 2);
    assert_int_equal(used, 2);
    assert_int_equal(esc("\x01", 1, out, 6, &used), 6);
    /* No escape is split; nothing lands past cap; used says where it stopped. */
    memset(out, '#', sizeof out);
    assert_int_equal(esc("ab\x01", 3, out, 7, &used), 2);
    assert_int_equal(used, 2);
    assert_int_equal(out[2], '#');
    assert_int_equal(esc("abc", 3, out, 2, &used), 2);
    assert_int_equal(used, 2);
    assert_int_equal(esc("\xe6\x97\xa5", 3, out, 2, &used), 0); /* not half a character */
    assert_int_equal(used, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_utf8_kept_or_replaced),
        cmocka_unit_test(test_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
