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
} fixture_t;

static fixture_t *fixture(const char *peer)
{
    static fixture_t f;
    memset(&f, 0, sizeof f);
    f.cfg.server.max_body_bytes = 1000;
    f.gen.cfg = &f.cfg;
    f.req.gen = &f.gen;
    f.req.route = &f.route;
    f.req.cc = &f.cc;
    f.cc.client_ip_len = (uint8_t)strlen(peer);
    memcpy(f.cc.client_ip, peer, f.cc.client_ip_len);
    return &f;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_every_step_in_order),
        cmocka_unit_test(test_a_waiting_step_runs_again_on_resume),
        cmocka_unit_test(test_a_denial_stops_the_rest),
        cmocka_unit_test(test_ip_rules),
        cmocka_unit_test(test_body_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
