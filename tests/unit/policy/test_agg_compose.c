/* An aggregation's answer (policy/agg_compose.h): bodies checked and
 * extracted, the object laid out without copying bodies, partial answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "policy/agg_compose.h"

/* The pieces joined (and checked to be one JSON object). */
static char *joined(const agg_piece_t *p, long n)
{
    static char out[4096];
    size_t len = 0;
    for (long i = 0; i < n; i++) {
        memcpy(out + len, p[i].p, p[i].n);
        len += p[i].n;
    }
    out[len] = '\0';
    json_t *v = json_loads(out, 0, NULL);
    assert_non_null(v);
    assert_true(json_is_object(v));
    json_decref(v);
    return out;
}

static void test_check_and_extract(void **state)
{
    (void)state;
    const char *body = "{\"data\":{\"items\":[1,{\"a/b\":\"x\"}],\"n\":2}}";
    const char *out;
    size_t len;
    char *owned;
    const char *why;
    assert_int_equal(agg_compose_check(body, strlen(body), 1024, NULL, &out, &len, &owned, &why),
                     0);
    assert_ptr_equal(out, body); /* no copy without extract */
    assert_null(owned);
    const char *spaced = " \r\n[1, 2]\n ";
    assert_int_equal(
        agg_compose_check(spaced, strlen(spaced), 1024, NULL, &out, &len, &owned, &why), 0);
    assert_ptr_equal(out, spaced + 3); /* the value without the whitespace around it */
    assert_int_equal(len, 6);
    assert_int_equal(
        agg_compose_check(body, strlen(body), 1024, "/data/items", &out, &len, &owned, &why), 0);
    assert_memory_equal(out, "[1,{\"a/b\":\"x\"}]", len);
    free(owned);
    assert_int_equal(
        agg_compose_check(body, strlen(body), 1024, "/data/items/1/a~1b", &out, &len, &owned, &why),
        0);
    assert_memory_equal(out, "\"x\"", len);
    free(owned);
    static const struct {
        const char *body, *extract, *why;
        size_t max;
    } bad[] = {{"<html>", NULL, "not JSON", 100},
               {"{\"a\":1", NULL, "not JSON", 100},
               {"[1,2,3]", NULL, "larger", 3},
               {"{\"a\":[1]}", "/a/1", "no value", 100},
               {"{\"a\":[1]}", "/a/01", "no value", 100},
               {"{\"a\":[1]}", "/b", "no value", 100},
               {"{\"a\":1}", "a", "no value", 100},
               {"{\"a\":1}", "/a/~2", "no value", 100}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(agg_compose_check(bad[i].body, strlen(bad[i].body), bad[i].max,
                                           bad[i].extract, &out, &len, &owned, &why),
                         -1);
        assert_non_null(strstr(why, bad[i].why));
        assert_null(owned);
    }
}

static void test_compose_whole_and_partial(void **state)
{
    (void)state;
    const char *items = "[{\"id\":1}]", *reco = "{\"r\":[]}";
    agg_result_t r[] = {{"items", items, strlen(items), NULL}, {"reco", reco, strlen(reco), NULL}};
    agg_piece_t p[16];
    char g[256];
    bool partial;
    long n = agg_compose(r, 2, p, 16, g, sizeof g, &partial);
    assert_true(n > 0);
    assert_false(partial);
    assert_string_equal(joined(p, n), "{\"items\":[{\"id\":1}],\"reco\":{\"r\":[]}}");
    /* The bodies are referenced, not copied. */
    bool seen_items = false;
    for (long i = 0; i < n; i++)
        seen_items |= p[i].p == items;
    assert_true(seen_items);
    r[1].error = "timeout \"after\" 800ms";
    n = agg_compose(r, 2, p, 16, g, sizeof g, &partial);
    assert_true(partial);
    assert_string_equal(joined(p, n), "{\"items\":[{\"id\":1}],\"reco\":null,"
                                      "\"_errors\":{\"reco\":\"timeout \\\"after\\\" 800ms\"}}");
    /* Too little room: -1, never a cut answer. */
    assert_int_equal(agg_compose(r, 2, p, 2, g, sizeof g, &partial), -1);
    assert_int_equal(agg_compose(r, 2, p, 16, g, 20, &partial), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_and_extract),
        cmocka_unit_test(test_compose_whole_and_partial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
