/* Admission: the runner (steps in order, a step that waits is run again on
 * resume, a denial stops the rest) and the request path's first two steps,
 * the route's IP rules and the body size limit, on a request built by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/addr.h"
#include "proxy/admission.h"
#include "proxy/proxy_worker.h"

#include <openssl/evp.h>

/* --- the runner, over steps of the test's own --- */

typedef struct subject {
    char trail[16]; /* which steps ran, in order */
    size_t n;
    int wait_left; /* step b waits this many times */
    bool deny_c;
} subject_t;

static admit_t step(subject_t *s, char name)
{
    s->trail[s->n++] = name;
    return ADMIT_NEXT;
}
static admit_t run_a(void *p, admission_deny_t *d)
{
    (void)d;
    return step(p, 'a');
}
static admit_t run_b(void *p, admission_deny_t *d)
{
    (void)d;
    subject_t *s = p;
    step(s, 'b');
    if (s->wait_left > 0) {
        s->wait_left--;
        return ADMIT_WAIT;
    }
    return ADMIT_NEXT;
}
static admit_t run_c(void *p, admission_deny_t *d)
{
    subject_t *s = p;
    step(s, 'c');
    if (s->deny_c) {
        d->why = END_FORBIDDEN;
        d->message = "no";
        return ADMIT_DENY;
    }
    return ADMIT_NEXT;
}
static admit_t run_d(void *p, admission_deny_t *d)
{
    (void)d;
    return step(p, 'd');
}

static const admission_step_t steps[] = {
    {"a", run_a, NULL}, {"b", run_b, NULL}, {"c", run_c, NULL}, {"d", run_d, NULL}};

static void test_runs_every_step_in_order(void **state)
{
    (void)state;
    subject_t s = {0};
    uint32_t at = 0;
    admission_deny_t d;
    assert_int_equal(admission_run(steps, 4, &at, &s, &d), ADMIT_NEXT);
    assert_string_equal(s.trail, "abcd");
    assert_int_equal(at, 4);
    /* Run again once passed: nothing left to do. */
    assert_int_equal(admission_run(steps, 4, &at, &s, &d), ADMIT_NEXT);
    assert_string_equal(s.trail, "abcd");
}

static void test_a_waiting_step_runs_again_on_resume(void **state)
{
    (void)state;
    subject_t s = {.wait_left = 2};
    uint32_t at = 0;
    admission_deny_t d;
    assert_int_equal(admission_run(steps, 4, &at, &s, &d), ADMIT_WAIT);
    assert_int_equal(at, 1);
    assert_int_equal(admission_run(steps, 4, &at, &s, &d), ADMIT_WAIT);
    assert_int_equal(admission_run(steps, 4, &at, &s, &d), ADMIT_NEXT);
    /* a once; b three times (waited twice); then the rest. */
    assert_string_equal(s.trail, "abbbcd");
}

static void test_a_denial_stops_the_rest(void **state)
{
    (void)state;
    subject_t s = {.deny_c = true};
    uint32_t at = 0;
    admission_deny_t d;
    assert_int_equal(admission_run(steps, 4, &at, &s, &d), ADMIT_DENY);
    assert_string_equal(s.trail, "abc");
    assert_int_equal(d.why, END_FORBIDDEN);
    assert_string_equal(d.message, "no");
}

/* --- the request path's steps --- */

typedef struct fixture {
    config_t cfg;
    proxy_gen_t gen;
    config_route_t route;
    cidr_t allow[1];
    cidr_t deny[1];
    client_conn_t cc;
    request_t req;
    proxy_worker_t pw;
    /* API clients: a (key "key-a") and b (key "key-b"), a throttled at 1 */
    config_client_t clients[2];
    uint8_t keys[2][32];
    size_t route_clients[1];
    atomic_uint inflight[2];
    atomic_uint *inflight_of[2];
    uint32_t metrics_slots[2];
    uint64_t route_key[1];
    http_head_t head;
} fixture_t;

static metrics_registry_t *registry;

static fixture_t the_fixture;

static void fixture_free(fixture_t *f)
{
    api_key_hasher_deinit(&f->pw.hasher);
    api_key_index_free((api_key_index_t *)f->gen.api_keys);
    rate_limit_free(f->gen.rates);
    f->gen.api_keys = NULL;
    f->gen.rates = NULL;
}

static int teardown_all(void **state)
{
    (void)state;
    fixture_free(&the_fixture);
    metrics_registry_free(registry);
    registry = NULL;
    return 0;
}

static fixture_t *fixture(const char *peer)
{
    fixture_t *f = &the_fixture;
    fixture_free(f);
    memset(f, 0, sizeof *f);
    f->cfg.server.max_body_bytes = 1000;
    f->gen.cfg = &f->cfg;
    f->req.gen = &f->gen;
    f->req.route = &f->route;
    f->req.cc = &f->cc;
    f->req.client = UINT32_MAX;
    f->req.pw = &f->pw;
    f->req.head = &f->head;
    f->route.auth_provider = CONFIG_NONE;
    f->cc.client_ip_len = (uint8_t)strlen(peer);
    memcpy(f->cc.client_ip, peer, f->cc.client_ip_len);
    /* the clients, their keys, counters and metric slots */
    static const char *ids[] = {"a", "b"}, *keys[] = {"key-a", "key-b"};
    for (int i = 0; i < 2; i++) {
        unsigned n;
        assert_true(EVP_Digest(keys[i], 5, f->keys[i], &n, EVP_sha256(), NULL));
        f->clients[i] = (config_client_t){
            .id = (char *)ids[i], .index = (size_t)i, .key_sha256 = &f->keys[i], .n_keys = 1};
        f->inflight_of[i] = &f->inflight[i];
    }
    f->clients[0].max_concurrent_requests = 1;
    f->cfg.clients = f->clients;
    f->cfg.n_clients = 2;
    f->gen.api_keys = api_key_index_new(&f->cfg);
    f->gen.client_inflight = f->inflight_of;
    f->gen.metrics_client = f->metrics_slots;
    f->gen.metrics_route = f->metrics_slots;
    f->gen.route_key = f->route_key;
    f->gen.rates = rate_limit_new(64);
    if (!registry)
        registry = metrics_registry_new(1, "test");
    f->pw.registry = registry;
    f->pw.metrics = metrics_worker_get(registry, 0);
    f->pw.loop = uv_default_loop();
    assert_int_equal(api_key_hasher_init(&f->pw.hasher), 0);
    return f;
}

/* The client's head: only its headers matter to the steps. */
static void head_with(fixture_t *f, const char *name, const char *value)
{
    f->head.n_headers = 0;
    if (!name)
        return;
    f->head.headers[0] = (http_header_t){
        .name = name, .name_len = strlen(name), .value = value, .value_len = strlen(value)};
    f->head.n_headers = 1;
}

static admit_t run_all(fixture_t *f, admission_deny_t *d)
{
    uint32_t at = 0;
    return admission_run(admission_steps, admission_n_steps, &at, &f->req, d);
}

static void test_ip_rules(void **state)
{
    (void)state;
    admission_deny_t d;
    fixture_t *f = fixture("10.1.2.3");
    assert_int_equal(run_all(f, &d), ADMIT_NEXT); /* no rules: anyone */

    assert_int_equal(cidr_parse("10.0.0.0/8", &f->allow[0]), 0);
    f->route.ip_allow = f->allow;
    f->route.n_ip_allow = 1;
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);

    assert_int_equal(cidr_parse("10.1.0.0/16", &f->deny[0]), 0);
    f->route.ip_deny = f->deny;
    f->route.n_ip_deny = 1;
    assert_int_equal(run_all(f, &d), ADMIT_DENY); /* deny wins over allow */
    assert_int_equal(d.why, END_FORBIDDEN);

    fixture_t *g = fixture("192.168.0.1");
    assert_int_equal(cidr_parse("10.0.0.0/8", &g->allow[0]), 0);
    g->route.ip_allow = g->allow;
    g->route.n_ip_allow = 1;
    assert_int_equal(run_all(g, &d), ADMIT_DENY); /* not in the allow list */
    /* The address the request resolved (X-Forwarded-For) is the one judged. */
    strcpy(g->req.client_ip, "10.9.9.9");
    g->req.client_ip_len = 8;
    assert_int_equal(run_all(g, &d), ADMIT_NEXT);
}

static void test_body_limit(void **state)
{
    (void)state;
    admission_deny_t d;
    fixture_t *f = fixture("127.0.0.1");
    f->req.has_content_length = 1;
    f->req.content_length = 1000;
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
    assert_int_equal(f->cc.close_after, 0);
    f->req.content_length = 1001;
    assert_int_equal(run_all(f, &d), ADMIT_DENY);
    assert_int_equal(d.why, END_BODY_TOO_LARGE);
    assert_int_equal(f->cc.close_after, 1); /* the body is not read */
}

/* The API client by X-Api-Key: required, optional, unknown; the route's
 * clients list. */
static void test_client_key_and_route_clients(void **state)
{
    (void)state;
    admission_deny_t d;
    fixture_t *f = fixture("10.0.0.1");
    f->route.auth_client = AUTH_CLIENT_REQUIRED;
    head_with(f, NULL, NULL);
    assert_int_equal(run_all(f, &d), ADMIT_DENY);
    assert_int_equal(d.why, END_UNAUTHORIZED);
    head_with(f, "X-API-KEY", "key-x");
    assert_int_equal(run_all(f, &d), ADMIT_DENY);
    assert_int_equal(d.why, END_UNAUTHORIZED);
    head_with(f, "x-api-key", "key-b");
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
    assert_int_equal(f->req.client, 1);

    f = fixture("10.0.0.1");
    f->route.auth_client = AUTH_CLIENT_OPTIONAL;
    head_with(f, NULL, NULL);
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
    assert_int_equal(f->req.client, UINT32_MAX);
    head_with(f, "X-Api-Key", "wrong");
    assert_int_equal(run_all(f, &d), ADMIT_DENY);

    f = fixture("10.0.0.1");
    f->route.auth_client = AUTH_CLIENT_REQUIRED;
    f->route_clients[0] = 0; /* only a */
    f->route.clients = f->route_clients;
    f->route.n_clients = 1;
    head_with(f, "X-Api-Key", "key-b");
    assert_int_equal(run_all(f, &d), ADMIT_DENY);
    assert_int_equal(d.why, END_CLIENT_FORBIDDEN);
    head_with(f, "X-Api-Key", "key-a");
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
    admission_release(&f->req);
}

/* A local throttle holds one count until the request is released. */
static void test_local_throttle(void **state)
{
    (void)state;
    admission_deny_t d;
    fixture_t *f = fixture("10.0.0.1");
    f->route.auth_client = AUTH_CLIENT_REQUIRED;
    head_with(f, "X-Api-Key", "key-a");
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
    assert_int_equal(atomic_load(&f->inflight[0]), 1);
    request_t second = f->req; /* another request of client a */
    second.throttle_held = 0;
    second.client = UINT32_MAX;
    uint32_t at = 0;
    assert_int_equal(admission_run(admission_steps, admission_n_steps, &at, &second, &d),
                     ADMIT_DENY);
    assert_int_equal(d.why, END_THROTTLED);
    admission_release(&f->req);
    admission_release(&f->req); /* twice is once */
    assert_int_equal(atomic_load(&f->inflight[0]), 0);
    at = 0;
    second.client = UINT32_MAX;
    assert_int_equal(admission_run(admission_steps, admission_n_steps, &at, &second, &d),
                     ADMIT_NEXT);
    admission_release(&second);
    assert_int_equal(atomic_load(&f->inflight[0]), 0);
}

/* The route's bucket by ip: burst, then 429 with the wait, apart per
 * address. */
static void test_local_rate_limit(void **state)
{
    (void)state;
    admission_deny_t d;
    fixture_t *f = fixture("10.0.0.1");
    f->route.has_rate_limit = true;
    f->route.rate_limit =
        (config_rate_limit_t){.requests_per_second = 0.5, .burst = 2, .by = RATE_BY_IP};
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
    assert_int_equal(run_all(f, &d), ADMIT_DENY);
    assert_int_equal(d.why, END_RATE_LIMITED);
    assert_in_range(f->req.retry_after_s, 1, 2);
    f->cc.client_ip_len = 8;
    memcpy(f->cc.client_ip, "10.0.0.2", 8); /* another address: its own bucket */
    assert_int_equal(run_all(f, &d), ADMIT_NEXT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_every_step_in_order),
        cmocka_unit_test(test_a_waiting_step_runs_again_on_resume),
        cmocka_unit_test(test_a_denial_stops_the_rest),
        cmocka_unit_test(test_ip_rules),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_client_key_and_route_clients),
        cmocka_unit_test(test_local_throttle),
        cmocka_unit_test(test_local_rate_limit),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
