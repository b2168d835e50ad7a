/* Shadow comparison figures (policy/shadow_stats.h): counts, Diffy's noise
 * rule at its edges, status handling, the bounded field series and
 * examples, the JSON and the Prometheus text (checked by promtool). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "policy/shadow_stats.h"

/* A diff result differing at the given pointers (borrowed strings; never
 * passed to json_diff_result_free). */
typedef struct {
    json_diff_result_t r;
} diff_t;

static const json_diff_result_t *diff_at(diff_t *d, const char *const *ptrs, size_t n)
{
    memset(d, 0, sizeof *d);
    d->r.match = n == 0;
    d->r.n_total = n;
    d->r.n_differences = n;
    for (size_t i = 0; i < n; i++) {
        d->r.differences[i].pointer = (char *)ptrs[i];
        d->r.differences[i].old_value = (char *)"1";
        d->r.differences[i].new_value = (char *)"2";
    }
    return &d->r;
}

static const json_diff_result_t *diff1(diff_t *d, const char *ptr)
{
    return diff_at(d, &ptr, ptr ? 1 : 0);
}

/* One comparison: diff at ptr (NULL: none); noise_ptr as the noise copy's
 * difference ("" for a noise copy that matched, NULL for no noise copy). */
static shadow_result_t cmp(shadow_route_t *sr, const char *ptr, const char *noise_ptr)
{
    diff_t d, n;
    const json_diff_result_t *noise = NULL;
    if (noise_ptr)
        noise = diff1(&n, noise_ptr[0] ? noise_ptr : NULL);
    return shadow_route_compared(sr, diff1(&d, ptr), noise, "rid", 3);
}

static json_t *field_of(json_t *j, const char *name)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(j, "fields"), i,
                       f) if (strcmp(json_string_value(json_object_get(f, "field")), name) ==
                              0) return f;
    return NULL;
}

static json_int_t count_in(json_t *j, const char *result)
{
    return json_integer_value(json_object_get(json_object_get(j, "requests"), result));
}

static char *render(shadow_stats_t *s)
{
    buf_t b;
    buf_init(&b, 0);
    shadow_stats_render(s, &b);
    buf_append(&b, "", 1);
    return b.data;
}

/* Each test gets a registry with the route "orders" in it. */
typedef struct {
    shadow_stats_t *s;
    shadow_route_t *sr;
} fixture_t;

static int setup(void **state)
{
    static fixture_t fx;
    fx.s = shadow_stats_new();
    fx.sr = fx.s ? shadow_stats_route(fx.s, "orders") : NULL;
    *state = &fx;
    return fx.sr ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    shadow_stats_free(fx->s);
    return 0;
}

static void test_registry(void **state)
{
    shadow_stats_t *s = ((fixture_t *)*state)->s;
    assert_non_null(s);
    shadow_route_t *a = shadow_stats_route(s, "orders");
    assert_non_null(a);
    assert_ptr_equal(shadow_stats_route(s, "orders"), a);
    assert_ptr_not_equal(shadow_stats_route(s, "users"), a);
    char name[32];
    for (int i = 2; i < SHADOW_STATS_MAX_ROUTES; i++) {
        snprintf(name, sizeof name, "r%d", i);
        assert_non_null(shadow_stats_route(s, name));
    }
    assert_null(shadow_stats_route(s, "one-too-many"));
    assert_ptr_equal(shadow_stats_route(s, "orders"), a); /* known names still found */
    shadow_stats_free(NULL);
}

static void test_counts(void **state)
{
    fixture_t *fx = *state;
    shadow_stats_t *s = fx->s;
    shadow_route_t *sr = fx->sr;
    shadow_route_count(sr, SHADOW_DROPPED);
    shadow_route_count(sr, SHADOW_DROPPED);
    shadow_route_count(sr, SHADOW_SKIPPED);
    shadow_route_count(sr, SHADOW_ERROR);
    shadow_route_count(sr, SHADOW_RESULTS);      /* out of range: ignored */
    shadow_route_count(sr, (shadow_result_t)-1); /* likewise */
    shadow_route_count(NULL, SHADOW_DROPPED);    /* no figures: no-op */
    json_t *j = shadow_route_json(sr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "route")), "orders");
    assert_int_equal(count_in(j, "dropped"), 2);
    assert_int_equal(count_in(j, "skipped"), 1);
    assert_int_equal(count_in(j, "shadow_error"), 1);
    assert_int_equal(count_in(j, "match"), 0);
    assert_int_equal(count_in(j, "mismatch"), 0);
    assert_true(json_is_null(json_object_get(j, "match_rate")));
    assert_int_equal(json_array_size(json_object_get(j, "fields")), 0);
    json_decref(j);

    assert_int_equal(cmp(sr, NULL, NULL), SHADOW_MATCH);
    assert_int_equal(cmp(sr, NULL, NULL), SHADOW_MATCH);
    assert_int_equal(cmp(sr, NULL, NULL), SHADOW_MATCH);
    assert_int_equal(cmp(sr, "/price", NULL), SHADOW_MISMATCH);
    j = shadow_route_json(sr);
    assert_int_equal(count_in(j, "match"), 3);
    assert_int_equal(count_in(j, "mismatch"), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "compared")), 4);
    assert_float_equal(json_real_value(json_object_get(j, "match_rate")), 0.75, 1e-9);
    json_decref(j);

    shadow_summary_t sum;
    shadow_route_summary(sr, &sum);
    assert_int_equal(sum.compared, 4);
    assert_float_equal(sum.match_rate, 0.75, 1e-9);
    assert_int_equal(sum.n_fields, 1);
    assert_string_equal(sum.fields[0], "/price");
    assert_float_equal(sum.field_rates[0], 0.25, 1e-9);
    shadow_route_summary(shadow_stats_route(s, "idle"), &sum);
    assert_float_equal(sum.match_rate, -1, 0);
    assert_int_equal(sum.n_fields, 0);

    /* No figures: the verdict of the diff alone; no diff: an error. */
    diff_t d;
    assert_int_equal(shadow_route_compared(NULL, diff1(&d, "/a"), NULL, "x", 1), SHADOW_MISMATCH);
    assert_int_equal(shadow_route_compared(sr, NULL, NULL, "x", 1), SHADOW_ERROR);
}

static void test_noise_learned(void **state)
{
    fixture_t *fx = *state;
    shadow_stats_t *s = fx->s;
    shadow_route_t *sr = fx->sr;
    /* /meta/ts differs between two answers of the old system as often as
     * between old and new: noise, never counted. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(cmp(sr, "/meta/ts", "/meta/ts"), SHADOW_MATCH);
    /* A real difference next to it still is. */
    const char *both[] = {"/meta/ts", "/items/*/price"};
    diff_t d, n;
    assert_int_equal(
        shadow_route_compared(sr, diff_at(&d, both, 2), diff1(&n, "/meta/ts"), "r-real", 6),
        SHADOW_MISMATCH);
    json_t *j = shadow_route_json(sr);
    json_t *ts = field_of(j, "/meta/ts"), *price = field_of(j, "/items/*/price");
    assert_non_null(ts);
    assert_non_null(price);
    assert_false(json_is_true(json_object_get(ts, "counted")));
    assert_int_equal(json_integer_value(json_object_get(ts, "counted_mismatches")), 0);
    assert_int_equal(json_integer_value(json_object_get(ts, "noise")), 51);
    assert_float_equal(json_real_value(json_object_get(ts, "noise_rate")), 1.0, 1e-9);
    assert_true(json_is_true(json_object_get(price, "counted")));
    assert_int_equal(json_integer_value(json_object_get(price, "counted_mismatches")), 1);
    /* The example is the counted field's, not the noisy one listed first. */
    json_t *ex = json_array_get(json_object_get(j, "recent_mismatches"), 0);
    assert_string_equal(json_string_value(json_object_get(ex, "pointer")), "/items/*/price");
    assert_string_equal(json_string_value(json_object_get(ex, "request_id")), "r-real");
    assert_int_equal(json_integer_value(json_object_get(j, "noise_compared")), 51);
    json_decref(j);
    /* Without noise learned at all, every difference counts. */
    shadow_route_t *plain = shadow_stats_route(s, "plain");
    assert_int_equal(cmp(plain, "/meta/ts", NULL), SHADOW_MISMATCH);
}

/* 1000 comparisons, each with a noise copy: the field differed in noise
 * copies noise_n times and in comparisons mism_n times, the last one being
 * the comparison whose verdict is returned. */
static shadow_result_t relative_edge(shadow_stats_t *s, const char *name, int noise_n, int mism_n)
{
    shadow_route_t *sr = shadow_stats_route(s, name);
    int calls = 0;
    for (int i = 0; i < noise_n; i++, calls++)
        cmp(sr, NULL, "/x");
    for (int i = 0; i < mism_n - 1; i++, calls++)
        cmp(sr, "/x", "");
    while (calls < 999)
        calls++, cmp(sr, NULL, "");
    return cmp(sr, "/x", "");
}

static void test_relative_threshold(void **state)
{
    shadow_stats_t *s = ((fixture_t *)*state)->s;
    /* Noise 10%: a mismatch rate of 12% is exactly 20% above, not over. */
    assert_int_equal(relative_edge(s, "at", 100, 120), SHADOW_MATCH);
    assert_int_equal(relative_edge(s, "over", 100, 121), SHADOW_MISMATCH);
    json_t *j = shadow_route_json(shadow_stats_route(s, "at"));
    assert_false(json_is_true(json_object_get(field_of(j, "/x"), "counted")));
    assert_float_equal(json_real_value(json_object_get(field_of(j, "/x"), "mismatch_rate")), 0.12,
                       1e-9);
    assert_float_equal(json_real_value(json_object_get(field_of(j, "/x"), "noise_rate")), 0.10,
                       1e-9);
    json_decref(j);
    j = shadow_route_json(shadow_stats_route(s, "over"));
    assert_true(json_is_true(json_object_get(field_of(j, "/x"), "counted")));
    json_decref(j);
}

/* 10000 comparisons (noise learned from the first one, which matched):
 * the field differed mism_n times, last in the final comparison. */
static shadow_result_t absolute_edge(shadow_stats_t *s, const char *name, int mism_n)
{
    shadow_route_t *sr = shadow_stats_route(s, name);
    cmp(sr, NULL, "");
    for (int i = 1; i < 10000 - mism_n; i++)
        cmp(sr, NULL, NULL);
    for (int i = 0; i < mism_n - 1; i++)
        cmp(sr, "/x", NULL);
    return cmp(sr, "/x", NULL);
}

static void test_absolute_threshold(void **state)
{
    shadow_stats_t *s = ((fixture_t *)*state)->s;
    /* Never noisy, but 3 in 10000 is 0.03%: not over the absolute floor. */
    assert_int_equal(absolute_edge(s, "at", 3), SHADOW_MATCH);
    assert_int_equal(absolute_edge(s, "over", 4), SHADOW_MISMATCH);
}

static void test_status(void **state)
{
    fixture_t *fx = *state;
    shadow_route_t *sr = fx->sr;
    /* The old system's own status flips in every noise copy... */
    for (int i = 0; i < 20; i++)
        assert_int_equal(cmp(sr, "status", "status"), SHADOW_MATCH);
    /* ...so only a status difference the noise copy did not share counts,
     * whatever the rates say. */
    assert_int_equal(cmp(sr, "status", ""), SHADOW_MISMATCH);
    assert_int_equal(cmp(sr, "status", NULL), SHADOW_MISMATCH);
    assert_int_equal(cmp(sr, "status", "/other"), SHADOW_MISMATCH);
    /* A header is an ordinary field. */
    assert_int_equal(cmp(sr, "header:content-type", NULL), SHADOW_MISMATCH);
    for (int i = 0; i < 20; i++)
        cmp(sr, NULL, "header:content-type");
    assert_int_equal(cmp(sr, "header:content-type", "header:content-type"), SHADOW_MATCH);
    /* A diff that failed without reporting where (work budget) is one at
     * the body as a whole. */
    diff_t d;
    diff1(&d, NULL);
    d.r.match = false;
    d.r.incomplete = true;
    assert_int_equal(shadow_route_compared(sr, &d.r, NULL, "r", 1), SHADOW_MISMATCH);
    json_t *j = shadow_route_json(sr);
    assert_non_null(field_of(j, ""));
    json_decref(j);
}

static void test_field_series_cap(void **state)
{
    fixture_t *fx = *state;
    shadow_stats_t *s = fx->s;
    shadow_route_t *sr = fx->sr;
    char p[32];
    for (int i = 0; i < 60; i++) {
        snprintf(p, sizeof p, "/f%02d", i);
        assert_int_equal(cmp(sr, p, NULL), SHADOW_MISMATCH);
    }
    assert_int_equal(cmp(sr, "/f00", NULL), SHADOW_MISMATCH); /* its own series grows */
    assert_int_equal(cmp(sr, "/f59", NULL), SHADOW_MISMATCH); /* "other" grows */
    char *text = render(s);
    size_t series = 0;
    for (const char *q = text; (q = strstr(q, "ficus_shadow_field_mismatches_total{")); q++)
        series++;
    assert_int_equal(series, SHADOW_FIELD_SERIES_MAX + 1);
    assert_non_null(strstr(text, "field=\"/f00\"} 2\n"));
    assert_non_null(strstr(text, "field=\"/f49\"} 1\n"));
    assert_null(strstr(text, "field=\"/f50\""));
    assert_non_null(strstr(text, "ficus_shadow_field_mismatches_total{route=\"orders\","
                                 "field=\"other\"} 11\n"));
    free(text);
    /* The field table: past SHADOW_MAX_FIELDS, new fields pool as "other". */
    for (int i = 60; i < SHADOW_MAX_FIELDS + 10; i++) {
        snprintf(p, sizeof p, "/f%03d", i);
        cmp(sr, p, NULL);
    }
    json_t *j = shadow_route_json(sr);
    assert_int_equal(json_array_size(json_object_get(j, "fields")), SHADOW_MAX_FIELDS + 1);
    json_t *other = field_of(j, SHADOW_OTHER_FIELD);
    assert_non_null(other);
    assert_int_equal(json_integer_value(json_object_get(other, "mismatches")), 10);
    json_decref(j);
}

static void test_examples_ring_and_cuts(void **state)
{
    fixture_t *fx = *state;
    shadow_route_t *sr = fx->sr;
    diff_t d;
    char rid[16];
    for (int i = 0; i < 25; i++) {
        snprintf(rid, sizeof rid, "r%d", i);
        shadow_route_compared(sr, diff1(&d, "/a"), NULL, rid, strlen(rid));
    }
    json_t *j = shadow_route_json(sr);
    json_t *ex = json_object_get(j, "recent_mismatches");
    assert_int_equal(json_array_size(ex), SHADOW_EXAMPLES);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ex, 0), "request_id")),
                        "r24");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ex, 19), "request_id")),
                        "r5");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ex, 0), "old_value")),
                        "1");
    json_decref(j);

    /* Long request id, pointer and values: 256 bytes each; the field name
     * 127, not splitting a UTF-8 sequence; hostile bytes made harmless. */
    char big[400], ptr[400], rid2[300];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ptr[0] = '/';
    memset(ptr + 1, 'p', 125);
    strcpy(ptr + 126, "\xc3\xa9");
    memset(ptr + 128, 'q', 200);
    ptr[328] = '\0';
    memset(rid2, 'i', sizeof rid2);
    rid2[0] = '\n';
    diff1(&d, ptr);
    d.r.differences[0].old_value = big;
    d.r.differences[0].new_value = NULL; /* absent on the shadow's side */
    assert_int_equal(shadow_route_compared(sr, &d.r, NULL, rid2, sizeof rid2), SHADOW_MISMATCH);
    j = shadow_route_json(sr);
    ex = json_array_get(json_object_get(j, "recent_mismatches"), 0);
    const char *got_rid = json_string_value(json_object_get(ex, "request_id"));
    assert_int_equal(strlen(got_rid), SHADOW_EXAMPLE_MAX_BYTES);
    assert_int_equal(got_rid[0], '?');
    assert_int_equal(strlen(json_string_value(json_object_get(ex, "pointer"))),
                     SHADOW_EXAMPLE_MAX_BYTES);
    assert_int_equal(strlen(json_string_value(json_object_get(ex, "old_value"))),
                     SHADOW_EXAMPLE_MAX_BYTES);
    assert_true(json_is_null(json_object_get(ex, "new_value")));
    char want[SHADOW_FIELD_MAX_BYTES + 1];
    memcpy(want, ptr, 126); /* é would end at byte 128: cut before it */
    want[126] = '\0';
    assert_non_null(field_of(j, want));
    json_decref(j);

    /* Bytes that are not UTF-8 in a pointer: '?' in the JSON and metrics. */
    assert_int_equal(cmp(sr, "/bad\xff\xfe", NULL), SHADOW_MISMATCH);
    assert_int_equal(cmp(sr, "/bad\xff\xfe", NULL), SHADOW_MISMATCH);
    j = shadow_route_json(sr);
    json_t *bad = field_of(j, "/bad??");
    assert_non_null(bad);
    assert_int_equal(json_integer_value(json_object_get(bad, "mismatches")), 2);
    json_decref(j);
}

/* promtool's verdict on text (skipped when promtool is not installed). */
static void expect_promtool_ok(const char *text)
{
    if (access("/usr/bin/promtool", X_OK) != 0) {
        fprintf(stderr, "promtool not installed: exposition not checked by it\n");
        return;
    }
    FILE *p = popen("/usr/bin/promtool check metrics >&2", "w");
    assert_non_null(p);
    fputs(text, p);
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_render(void **state)
{
    shadow_stats_t *s = ((fixture_t *)*state)->s;
    shadow_route_t *a = shadow_stats_route(s, "orders");
    shadow_route_t *b = shadow_stats_route(s, "users");
    shadow_route_count(a, SHADOW_DROPPED);
    cmp(a, "/a\"b\\c\nd", NULL);
    cmp(a, "/items/*/price", NULL);
    cmp(a, NULL, NULL);
    char *text = render(s);
    assert_non_null(strstr(text, "ficus_shadow_requests_total{route=\"orders\",result=\"match\"} "
                                 "1\n"));
    assert_non_null(
        strstr(text, "ficus_shadow_requests_total{route=\"orders\",result=\"mismatch\"} 2\n"));
    assert_non_null(
        strstr(text, "ficus_shadow_requests_total{route=\"orders\",result=\"dropped\"} 1\n"));
    assert_non_null(
        strstr(text, "ficus_shadow_requests_total{route=\"users\",result=\"shadow_error\"} 0\n"));
    assert_non_null(strstr(text, "ficus_shadow_requests_total{route=\"users\",result=\"skipped\"} "
                                 "0\n"));
    assert_non_null(strstr(text, "field=\"/a\\\"b\\\\c\\nd\"} 1\n"));
    assert_non_null(strstr(text, "field=\"/items/*/price\"} 1\n"));
    /* HELP and TYPE once per family. */
    const char *first = strstr(text, "# TYPE ficus_shadow_requests_total counter");
    assert_non_null(first);
    assert_null(strstr(first + 1, "# TYPE ficus_shadow_requests_total"));
    expect_promtool_ok(text);
    free(text);

    /* A reload dropped users' shadow: not rendered, figures kept. */
    shadow_stats_show_only(s, &a, 1);
    text = render(s);
    assert_null(strstr(text, "route=\"users\""));
    assert_non_null(strstr(text, "route=\"orders\""));
    free(text);
    assert_ptr_equal(shadow_stats_route(s, "users"), b); /* back: shown again */
    text = render(s);
    assert_non_null(strstr(text, "route=\"users\""));
    expect_promtool_ok(text);
    free(text);
}

typedef struct {
    shadow_route_t *sr;
    int n;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    for (int i = 0; i < a->n; i++) {
        shadow_route_count(a->sr, SHADOW_DROPPED);
        cmp(a->sr, i % 2 ? "/a" : NULL, i % 4 ? NULL : "");
    }
    return NULL;
}

static void test_threads(void **state)
{
    shadow_stats_t *s = ((fixture_t *)*state)->s;
    worker_arg_t arg = {.sr = shadow_stats_route(s, "orders"), .n = 20000};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &arg), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    json_t *j = shadow_route_json(arg.sr);
    assert_int_equal(count_in(j, "dropped"), 80000);
    assert_int_equal(count_in(j, "match") + count_in(j, "mismatch"), 80000);
    assert_int_equal(json_integer_value(json_object_get(j, "compared")), 80000);
    assert_int_equal(json_integer_value(json_object_get(j, "noise_compared")), 20000);
    assert_int_equal(json_integer_value(json_object_get(field_of(j, "/a"), "mismatches")), 40000);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noise_learned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_field_series_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_examples_ring_and_cuts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
