/* Route matching and request target rewriting (routing/router.h), over
 * config snapshots built by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "routing/router.h"

#define MAX_TEST_ROUTES 8

typedef struct fixture {
    config_t cfg;
    config_route_t routes[MAX_TEST_ROUTES];
    pcre2_match_data *md;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->cfg.routes = f->routes;
    f->md = router_match_data_new();
    assert_non_null(f->md);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    for (size_t i = 0; i < f->cfg.n_routes; i++)
        pcre2_code_free(f->routes[i].match.regex);
    pcre2_match_data_free(f->md);
    free(f);
    return 0;
}

static config_route_t *add_route(fixture_t *f, const char *name, config_match_kind_t kind,
                                 const char *path)
{
    assert_true(f->cfg.n_routes < MAX_TEST_ROUTES);
    config_route_t *r = &f->routes[f->cfg.n_routes];
    memset(r, 0, sizeof *r);
    r->name = (char *)name;
    r->index = f->cfg.n_routes++;
    r->match.kind = kind;
    r->match.path = (char *)path;
    r->match.path_len = strlen(path);
    r->match.in_set = CONFIG_NONE;
    if (kind == MATCH_REGEX) {
        int errcode;
        PCRE2_SIZE erroff;
        r->match.regex = pcre2_compile((PCRE2_SPTR)path, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED,
                                       &errcode, &erroff, NULL);
        assert_non_null(r->match.regex);
        pcre2_jit_compile(r->match.regex, PCRE2_JIT_COMPLETE); /* may be unavailable */
        pcre2_pattern_info(r->match.regex, PCRE2_INFO_CAPTURECOUNT, &r->match.n_captures);
    }
    return r;
}

static router_request_t req_of(const char *path)
{
    router_request_t q;
    memset(&q, 0, sizeof q);
    q.method_bit = METHOD_GET;
    q.path = path;
    q.path_len = strlen(path);
    const char *qm = strchr(path, '?');
    if (qm) { /* the caller's parser splits the query; tests may pass it whole */
        q.path_len = (size_t)(qm - path);
        q.query = qm + 1;
        q.query_len = strlen(qm + 1);
    }
    return q;
}

static const char *match_name(fixture_t *f, const router_request_t *q)
{
    router_match_t m;
    int rc = router_match(&f->cfg, NULL, f->md, q, &m);
    if (rc == FE_NOTFOUND) {
        assert_null(m.route);
        return NULL;
    }
    assert_int_equal(rc, 0);
    return m.route->name;
}

static const char *match_path(fixture_t *f, const char *path)
{
    router_request_t q = req_of(path);
    return match_name(f, &q);
}

static void assert_route(const char *got, const char *want)
{
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
}

static void test_first_match_in_order(void **state)
{
    fixture_t *f = *state;
    add_route(f, "search", MATCH_PREFIX, "/search");
    add_route(f, "search2", MATCH_PREFIX, "/search/v2"); /* shadowed */
    add_route(f, "default", MATCH_PREFIX, "/");
    assert_route(match_path(f, "/search/v2/x"), "search");
    assert_route(match_path(f, "/home"), "default");
}

static void test_no_match(void **state)
{
    fixture_t *f = *state;
    add_route(f, "search", MATCH_PREFIX, "/search");
    assert_route(match_path(f, "/sear"), NULL);
    assert_route(match_path(f, "/"), NULL);
    f->cfg.n_routes = 0;
    assert_route(match_path(f, "/search"), NULL);
}

static void test_exact_path(void **state)
{
    fixture_t *f = *state;
    add_route(f, "home", MATCH_PATH, "/home");
    assert_route(match_path(f, "/home"), "home");
    assert_route(match_path(f, "/home/"), NULL);
    assert_route(match_path(f, "/hom"), NULL);
    assert_route(match_path(f, "/Home"), NULL);
    /* The query is not part of the path. */
    assert_route(match_path(f, "/home?x=1"), "home");
}

static void test_prefix_plain_string(void **state)
{
    fixture_t *f = *state;
    add_route(f, "search", MATCH_PREFIX, "/search");
    /* As Envoy: a plain string prefix, not a path segment. */
    assert_route(match_path(f, "/searchx"), "search");
    assert_route(match_path(f, "/search"), "search");
    assert_route(match_path(f, "/search/a/b"), "search");
    assert_route(match_path(f, "/Search"), NULL);
}

static void test_regex_anchored_and_captures(void **state)
{
    fixture_t *f = *state;
    add_route(f, "shop", MATCH_REGEX, "/shops/(\\d+)/items/(\\w+)");
    router_request_t q = req_of("/shops/42/items/abc/more?q=/shops/1/items/z");
    router_match_t m;
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "shop");
    assert_int_equal(m.n_captures, 3);
    assert_int_equal(m.ovector[0], 0);
    assert_int_equal(m.ovector[1], strlen("/shops/42/items/abc"));
    assert_int_equal(m.ovector[2], 7);
    assert_int_equal(m.ovector[3], 9);
    assert_memory_equal(q.path + m.ovector[4], "abc", 3);
    assert_true(m.ovector[6] == PCRE2_UNSET);
    /* Anchored at the start: no match in the middle of the path. */
    assert_route(match_path(f, "/x/shops/42/items/abc"), NULL);
    /* Never against the query. */
    assert_route(match_path(f, "/other?/shops/1/items/a"), NULL);
}

static void test_regex_unset_capture(void **state)
{
    fixture_t *f = *state;
    add_route(f, "opt", MATCH_REGEX, "/a(/(x))?(/(y))?$");
    router_request_t q = req_of("/a/y");
    router_match_t m;
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    assert_true(m.ovector[2] == PCRE2_UNSET);
    assert_true(m.ovector[4] == PCRE2_UNSET);
    assert_memory_equal(q.path + m.ovector[8], "y", 1);
    /* A later regex match with fewer groups leaves no stale pairs behind. */
    q = req_of("/a");
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    for (int i = 1; i < MAX_PATH_CAPTURES; i++)
        assert_true(m.ovector[2 * i] == PCRE2_UNSET);
}

static void test_methods(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "read", MATCH_PREFIX, "/api");
    r->match.methods = METHOD_GET | METHOD_HEAD;
    add_route(f, "any", MATCH_PREFIX, "/api");
    router_request_t q = req_of("/api/x");
    assert_route(match_name(f, &q), "read");
    q.method_bit = METHOD_HEAD;
    assert_route(match_name(f, &q), "read");
    q.method_bit = METHOD_POST;
    assert_route(match_name(f, &q), "any");
    q.method_bit = METHOD_OTHER;
    assert_route(match_name(f, &q), "any");
}

static void test_host_exact(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "api", MATCH_PREFIX, "/");
    r->match.host = "api.example.com";
    router_request_t q = req_of("/x");
    const char *hosts_ok[] = {"api.example.com", "API.Example.COM", "API.example.com:8080",
                              "api.example.com.", " api.example.com "};
    for (size_t i = 0; i < sizeof hosts_ok / sizeof hosts_ok[0]; i++) {
        q.host = hosts_ok[i];
        q.host_len = strlen(hosts_ok[i]);
        assert_route(match_name(f, &q), "api");
    }
    const char *hosts_bad[] = {"xapi.example.com", "api.example.co", "api.example.com.x", ""};
    for (size_t i = 0; i < sizeof hosts_bad / sizeof hosts_bad[0]; i++) {
        q.host = hosts_bad[i];
        q.host_len = strlen(hosts_bad[i]);
        assert_route(match_name(f, &q), NULL);
    }
    q.host = NULL;
    q.host_len = 0;
    assert_route(match_name(f, &q), NULL);
}

static void test_host_span_not_terminated(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "api", MATCH_PREFIX, "/");
    r->match.host = "a.b";
    router_request_t q = req_of("/x");
    q.host = "a.bcdef"; /* host_len bounds the value inside a request head */
    q.host_len = 3;
    assert_route(match_name(f, &q), "api");
}

static void test_host_wildcard(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "wild", MATCH_PREFIX, "/");
    r->match.host = ".example.com";
    r->match.host_wildcard = true;
    router_request_t q = req_of("/");
    const struct {
        const char *host;
        bool ok;
    } cases[] = {
        {"a.example.com", true},       {"A.B.Example.com:443", true}, {"example.com", false},
        {".example.com", false},       {"aexample.com", false},       {"a.example.org", false},
        {"a.example.com.evil", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        q.host = cases[i].host;
        q.host_len = strlen(cases[i].host);
        assert_route(match_name(f, &q), cases[i].ok ? "wild" : NULL);
    }
}

static void test_host_ipv6(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "v6", MATCH_PREFIX, "/");
    r->match.host = "[::1]";
    router_request_t q = req_of("/");
    q.host = "[::1]:8080";
    q.host_len = strlen(q.host);
    assert_route(match_name(f, &q), "v6");
    q.host = "[::1]";
    q.host_len = strlen(q.host);
    assert_route(match_name(f, &q), "v6");
    q.host = "[::2]:8080";
    q.host_len = strlen(q.host);
    assert_route(match_name(f, &q), NULL);
}

static void test_headers(void **state)
{
    fixture_t *f = *state;
    static config_header_match_t want[] = {{"x-debug", "1"}, {"x-env", "canary"}};
    config_route_t *r = add_route(f, "debug", MATCH_PREFIX, "/");
    r->match.headers = want;
    r->match.n_headers = 2;
    add_route(f, "default", MATCH_PREFIX, "/");
    router_request_t q = req_of("/");
    http_header_t h[] = {{"Host", "a", 4, 1}, {"X-Debug", "1", 7, 1}, {"X-ENV", "canary", 5, 6}};
    q.headers = h;
    q.n_headers = 3;
    assert_route(match_name(f, &q), "debug");
    /* Value is exact: case and extra bytes matter. */
    h[2].value = "Canary";
    assert_route(match_name(f, &q), "default");
    h[2].value = "canary2";
    h[2].value_len = 7;
    assert_route(match_name(f, &q), "default");
    h[2].value = "canary";
    h[2].value_len = 6;
    /* Every listed header must be present. */
    q.n_headers = 2;
    assert_route(match_name(f, &q), "default");
    /* Repeated header: any occurrence may carry the value. */
    http_header_t h2[] = {
        {"x-debug", "0", 7, 1}, {"x-debug", "1", 7, 1}, {"x-env", "canary", 5, 6}};
    q.headers = h2;
    q.n_headers = 3;
    assert_route(match_name(f, &q), "debug");
}

static int n_retired;
static void retire_now(void *ctx, void *ptr, void (*free_fn)(void *))
{
    (void)ctx;
    n_retired++;
    free_fn(ptr);
}

static void test_in_set(void **state)
{
    fixture_t *f = *state;
    config_set_t set_cfg[2] = {{.name = "other", .index = 0, .file = "/nonexistent"},
                               {.name = "migrated", .index = 1, .file = "/nonexistent"}};
    f->cfg.sets = set_cfg;
    f->cfg.n_sets = 2;
    config_route_t *r = add_route(f, "new", MATCH_REGEX, "/shops/(?<shop>[^/]+)(/.*)?$");
    r->match.in_set = 1;
    r->match.in_set_capture = 1;
    add_route(f, "old", MATCH_PREFIX, "/");

    set_t *sets[2] = {set_new(&set_cfg[0], NULL, NULL), set_new(&set_cfg[1], retire_now, NULL)};
    assert_non_null(sets[0]);
    assert_non_null(sets[1]);
    router_request_t q = req_of("/shops/s1/items");
    router_match_t m;

    /* No members yet: the condition does not hold. */
    assert_int_equal(router_match(&f->cfg, sets, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "old");

    const char list[] = "s1\ns2\n";
    set_swap(sets[1], set_members_parse(list, sizeof list - 1, NULL, 0));
    const char olist[] = "s3\n";
    set_swap(sets[0], set_members_parse(olist, sizeof olist - 1, NULL, 0));
    assert_int_equal(router_match(&f->cfg, sets, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "new");
    q = req_of("/shops/s2");
    assert_int_equal(router_match(&f->cfg, sets, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "new");
    /* s3 is in the other set only; "s" is a prefix of members, not one. */
    q = req_of("/shops/s3/items");
    assert_int_equal(router_match(&f->cfg, sets, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "old");
    q = req_of("/shops/s/items");
    assert_int_equal(router_match(&f->cfg, sets, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "old");

    /* Members replaced: s1 leaves, s3 joins. */
    n_retired = 0;
    const char list2[] = "s3\n";
    set_swap(sets[1], set_members_parse(list2, sizeof list2 - 1, NULL, 0));
    assert_int_equal(n_retired, 1);
    q = req_of("/shops/s1/items");
    assert_int_equal(router_match(&f->cfg, sets, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "old");
    q = req_of("/shops/s3/items");
    assert_int_equal(router_match(&f->cfg, sets, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "new");

    /* Without the set objects the condition cannot hold. */
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "old");
    set_free(sets[0]);
    set_free(sets[1]);
}

static void test_in_set_unset_capture(void **state)
{
    fixture_t *f = *state;
    config_set_t set_cfg = {.name = "s", .index = 0, .file = "/nonexistent"};
    f->cfg.sets = &set_cfg;
    f->cfg.n_sets = 1;
    config_route_t *r = add_route(f, "new", MATCH_REGEX, "/u(?:/(?<id>\\w+))?$");
    r->match.in_set = 0;
    r->match.in_set_capture = 1;
    set_t *s = set_new(&set_cfg, NULL, NULL);
    const char list[] = "bob\n";
    set_swap(s, set_members_parse(list, sizeof list - 1, NULL, 0));
    router_request_t q = req_of("/u/bob");
    router_match_t m;
    assert_int_equal(router_match(&f->cfg, &s, f->md, &q, &m), 0);
    q = req_of("/u");
    assert_int_equal(router_match(&f->cfg, &s, f->md, &q, &m), FE_NOTFOUND);
    set_free(s);
}

static void test_in_set_capture_past_kept_pairs(void **state)
{
    fixture_t *f = *state;
    config_set_t set_cfg = {.name = "s", .index = 0, .file = "/nonexistent"};
    f->cfg.sets = &set_cfg;
    f->cfg.n_sets = 1;
    /* Group 12 is past the $0..$9 that router_match_t keeps. */
    config_route_t *r =
        add_route(f, "deep", MATCH_REGEX, "/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)/(?<id>\\w+)");
    r->match.in_set = 0;
    r->match.in_set_capture = 12;
    set_t *s = set_new(&set_cfg, NULL, NULL);
    const char list[] = "zed\n";
    set_swap(s, set_members_parse(list, sizeof list - 1, NULL, 0));
    router_request_t q = req_of("/abcdefghijk/zed");
    router_match_t m;
    assert_int_equal(router_match(&f->cfg, &s, f->md, &q, &m), 0);
    assert_int_equal(m.n_captures, MAX_PATH_CAPTURES);
    q = req_of("/abcdefghijk/zod");
    assert_int_equal(router_match(&f->cfg, &s, f->md, &q, &m), FE_NOTFOUND);
    set_free(s);
}

static void test_cheap_conditions_before_regex(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "post-only", MATCH_REGEX, "/x/(\\d+)");
    r->match.methods = METHOD_POST;
    add_route(f, "default", MATCH_PREFIX, "/");
    router_request_t q = req_of("/x/1");
    router_match_t m;
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "default");
    assert_int_equal(m.n_captures, 1);
    q.method_bit = METHOD_POST;
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    assert_string_equal(m.route->name, "post-only");
    assert_int_equal(m.n_captures, 2);
}

/* ---- rewrite ---- */

static void expect_rewrite(fixture_t *f, const config_backend_t *b, const char *path,
                           const char *want)
{
    router_request_t q = req_of(path);
    router_match_t m;
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    char out[256];
    long n = router_rewrite_target(m.route, b, &q, &m, out, sizeof out);
    assert_true(n >= 0);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

static void test_rewrite_prefix(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "search", MATCH_PREFIX, "/search");
    r->rewrite_prefix = "/v2/search";
    config_route_t *r2 = add_route(f, "api", MATCH_PREFIX, "/api/");
    r2->rewrite_prefix = "/";
    config_route_t *r3 = add_route(f, "strip", MATCH_PREFIX, "/strip");
    r3->rewrite_prefix = "";
    config_backend_t b = {.target_group = 0, .weight = 1, .fallback = CONFIG_NONE};
    expect_rewrite(f, &b, "/search/a", "/v2/search/a");
    expect_rewrite(f, &b, "/search", "/v2/search");
    expect_rewrite(f, &b, "/searchx?q=1", "/v2/searchx?q=1");
    expect_rewrite(f, &b, "/api/x", "/x");
    /* Plain replacement: the slash that follows is kept. */
    expect_rewrite(f, &b, "/strip/x", "/x");
    /* An empty result is still a request target. */
    expect_rewrite(f, &b, "/strip", "/");
    expect_rewrite(f, &b, "/strip?a=b", "/?a=b");
}

static void test_rewrite_none_keeps_path_and_query(void **state)
{
    fixture_t *f = *state;
    add_route(f, "all", MATCH_PREFIX, "/");
    expect_rewrite(f, NULL, "/a/b?x=1&y=2", "/a/b?x=1&y=2");
    expect_rewrite(f, NULL, "/a/b", "/a/b");
    /* A bare '?' is kept as the client sent it. */
    expect_rewrite(f, NULL, "/a?", "/a?");
}

static void test_rewrite_template(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "shop", MATCH_REGEX, "/shops/(\\d+)(?:/(\\w+))?");
    r->rewrite_prefix = "/ignored"; /* a backend template wins */
    config_backend_t b = {.fallback = CONFIG_NONE, .path = "/api/v1/shop/$1/$2"};
    expect_rewrite(f, &b, "/shops/7/items?x=1", "/api/v1/shop/7/items?x=1");
    /* An unset capture is empty. */
    expect_rewrite(f, &b, "/shops/7", "/api/v1/shop/7/");
    config_backend_t b0 = {.fallback = CONFIG_NONE, .path = "$0/more"};
    expect_rewrite(f, &b0, "/shops/7/x/y", "/shops/7/x/more");
    config_backend_t bd = {.fallback = CONFIG_NONE, .path = "/price/$$$1/$x/$9/end$"};
    expect_rewrite(f, &bd, "/shops/12", "/price/$12/$x//end$");
    /* A template with its own query: the client's is joined with '&'. */
    config_backend_t bq = {.fallback = CONFIG_NONE, .path = "/s?id=$1"};
    expect_rewrite(f, &bq, "/shops/5?page=2", "/s?id=5&page=2");
    expect_rewrite(f, &bq, "/shops/5", "/s?id=5");
}

static void test_rewrite_toobig(void **state)
{
    fixture_t *f = *state;
    config_route_t *r = add_route(f, "search", MATCH_PREFIX, "/search");
    r->rewrite_prefix = "/v2/search";
    router_request_t q = req_of("/search/abc?q=1");
    router_match_t m;
    assert_int_equal(router_match(&f->cfg, NULL, f->md, &q, &m), 0);
    const char *want = "/v2/search/abc?q=1";
    size_t len = strlen(want);
    char out[64];
    /* It fits with its NUL; one byte less does not, and nothing overflows. */
    memset(out, 'Z', sizeof out);
    assert_int_equal(router_rewrite_target(m.route, NULL, &q, &m, out, len + 1), (long)len);
    assert_string_equal(out, want);
    memset(out, 'Z', sizeof out);
    assert_int_equal(router_rewrite_target(m.route, NULL, &q, &m, out, len), FE_TOOBIG);
    assert_int_equal(out[len], 'Z');
    assert_int_equal(router_rewrite_target(m.route, NULL, &q, &m, out, 0), FE_TOOBIG);
    config_backend_t b = {.fallback = CONFIG_NONE, .path = "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaa/$0"};
    assert_int_equal(router_rewrite_target(m.route, &b, &q, &m, out, 20), FE_TOOBIG);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_first_match_in_order),
        T(test_no_match),
        T(test_exact_path),
        T(test_prefix_plain_string),
        T(test_regex_anchored_and_captures),
        T(test_regex_unset_capture),
        T(test_methods),
        T(test_host_exact),
        T(test_host_span_not_terminated),
        T(test_host_wildcard),
        T(test_host_ipv6),
        T(test_headers),
        T(test_in_set),
        T(test_in_set_unset_capture),
        T(test_in_set_capture_past_kept_pairs),
        T(test_cheap_conditions_before_regex),
        T(test_rewrite_prefix),
        T(test_rewrite_none_keeps_path_and_query),
        T(test_rewrite_template),
        T(test_rewrite_toobig),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
