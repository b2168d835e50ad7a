/* The request path (proxy.c) with an admission step that makes the request
 * wait, on a real loop (proxy_test.h): a worker set up as the gateway sets one
 * up, a backend listening on 127.0.0.1, a client over TCP. While the step waits
 * nothing reaches the backend and the body is not read; on resume the kept
 * head is parsed and routed again and the request goes out whole; a step
 * that denies after waiting answers with its reason; a client that leaves
 * while the request waits cancels the step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy_test.h"

/* --- a step that waits, then lets on (or denies) --- */

static request_t *waiting; /* the request the step holds */
static int runs, cancels;
static bool deny_after_wait;
static int ready_at; /* with wait_until_ready: the run that lets on */

static admit_t wait_run(void *subject, admission_deny_t *deny)
{
    /* The step reads the client's head, on its first run and when resumed
     * (then parsed again from the kept copy). */
    const request_t *req = subject;
    assert_non_null(req->head);
    const http_header_t *host =
        http_header_find(req->head->headers, req->head->n_headers, "host", 4);
    assert_non_null(host);
    assert_int_equal(host->value_len, 4);
    assert_memory_equal(host->value, "shop", 4);
    runs++;
    if (runs == 1) {
        waiting = subject;
        return ADMIT_WAIT;
    }
    waiting = NULL;
    if (deny_after_wait) {
        deny->why = END_FORBIDDEN;
        deny->message = "denied after waiting";
        return ADMIT_DENY;
    }
    return ADMIT_NEXT;
}

static void wait_cancel(void *subject)
{
    assert_ptr_equal(subject, waiting);
    waiting = NULL;
    cancels++;
}

static const admission_step_t steps[] = {{"wait", wait_run, wait_cancel}};

/* A step that waits for something another thread makes ready: run again
 * on every wake, it lets the request on once runs reaches ready_at. */
static admit_t wait_until_ready(void *subject, admission_deny_t *deny)
{
    (void)subject;
    (void)deny;
    return ++runs >= ready_at ? ADMIT_NEXT : ADMIT_WAIT;
}

static const admission_step_t wake_steps[] = {{"ready", wait_until_ready, NULL}};

static void wake_from_thread(void *arg) { proxy_worker_wake(arg); }

/* --- one worker, as the gateway sets it up, with the step --- */

typedef struct fixture {
    pt_fixture_t *pt;
    int client; /* the test's end of the client connection */
} fixture_t;

/* The route's keys come last: a test may add some. */
#define ONE_ROUTE                                                                                  \
    "server:\n"                                                                                    \
    "  listen: [\"127.0.0.1:8080\"]\n"                                                             \
    "  workers: 1\n"                                                                               \
    "target_groups:\n"                                                                             \
    "  g: {targets: [\"127.0.0.1:%u\"]}\n"                                                         \
    "routes:\n"                                                                                    \
    "  - name: r\n"                                                                                \
    "    match: {path_prefix: /}\n"                                                                \
    "    backends: [{target_group: g}]\n"

static fixture_t setup_fixture_with(const char *yaml)
{
    fixture_t f = {.pt = pt_setup(yaml)};
    f.pt->pw->steps = steps;
    f.pt->pw->n_steps = 1;
    f.client = pt_client(f.pt);
    runs = cancels = 0;
    waiting = NULL;
    deny_after_wait = false;
    return f;
}

static fixture_t setup_fixture(void) { return setup_fixture_with(ONE_ROUTE); }

static void teardown_fixture(fixture_t *f)
{
    close(f->client);
    pt_teardown(f->pt);
}

static void test_resumed_request_goes_out_whole(void **state)
{
    (void)state;
    fixture_t fx = setup_fixture(), *f = &fx;
    pt_send(f->client, "POST /orders?id=7 HTTP/1.1\r\nHost: shop\r\nX-Test: kept\r\n"
                       "Content-Length: 5\r\n\r\nhello");
    pt_spin(f->pt, 50);
    assert_non_null(waiting);
    assert_null(waiting->head); /* only while the steps run */
    assert_int_equal(runs, 1);
    assert_int_equal(f->pt->be[0].accepted, 0); /* nothing went out while it waits */
    proxy_request_resume(waiting);
    char buf[4096];
    pt_answer_ending(f->pt, f->client, buf, sizeof buf, "one /orders?id=7");
    assert_int_equal(runs, 2);
    /* The kept head, parsed again: its target, its headers, then the body. */
    const char *got = f->pt->be[0].conns[0]->got;
    assert_non_null(strstr(got, "POST /orders?id=7 HTTP/1.1\r\n"));
    assert_non_null(strstr(got, "X-Test: kept\r\n"));
    assert_non_null(strstr(got, "\r\n\r\nhello"));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(cancels, 0);
    teardown_fixture(f);
}

static void test_denied_after_waiting(void **state)
{
    (void)state;
    fixture_t fx = setup_fixture(), *f = &fx;
    deny_after_wait = true;
    pt_send(f->client, "GET / HTTP/1.1\r\nHost: shop\r\n\r\n");
    pt_spin(f->pt, 50);
    assert_non_null(waiting);
    proxy_request_resume(waiting);
    char buf[4096];
    pt_answer_ending(f->pt, f->client, buf, sizeof buf, "denied after waiting");
    assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
    assert_non_null(strstr(buf, "\"error\":\"forbidden\""));
    assert_int_equal(f->pt->be[0].accepted, 0);
    teardown_fixture(f);
}

static void test_client_gone_while_waiting_cancels_the_step(void **state)
{
    (void)state;
    fixture_t fx = setup_fixture(), *f = &fx;
    pt_send(f->client, "GET / HTTP/1.1\r\nHost: shop\r\n\r\n");
    pt_spin(f->pt, 50);
    assert_non_null(waiting);
    shutdown(f->client, SHUT_RDWR);
    PT_WAIT(f->pt, cancels == 1);
    assert_null(waiting);
    assert_int_equal(f->pt->be[0].accepted, 0);
    teardown_fixture(f);
}

/* proxy_worker_wake (from any thread) runs every waiting request's step
 * again: those still waiting wait on, the others go out. */
static void test_wake_runs_waiting_requests_again(void **state)
{
    (void)state;
    fixture_t fx = setup_fixture(), *f = &fx;
    f->pt->pw->steps = wake_steps;
    ready_at = 5; /* two requests: first runs 1, 2; one wake: 3, 4; the next: 5 and 6 */
    int second = pt_client(f->pt);
    pt_send(f->client, "GET /a HTTP/1.1\r\nHost: shop\r\n\r\n");
    pt_send(second, "GET /b HTTP/1.1\r\nHost: shop\r\n\r\n");
    PT_WAIT(f->pt, runs == 2);
    assert_non_null(f->pt->pw->waiting);
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, wake_from_thread, f->pt->pw), 0);
    uv_thread_join(&t);
    PT_WAIT(f->pt, runs == 4);
    assert_int_equal(f->pt->be[0].accepted, 0); /* both wait on */
    assert_non_null(f->pt->pw->waiting);
    proxy_worker_wake(f->pt->pw);
    proxy_worker_wake(f->pt->pw); /* one run for both wakes */
    char buf[4096];
    pt_answer_ending(f->pt, f->client, buf, sizeof buf, "one /a");
    pt_answer_ending(f->pt, second, buf, sizeof buf, "one /b");
    assert_int_equal(runs, 6);
    assert_null(f->pt->pw->waiting);
    close(second);
    teardown_fixture(f);
}

/* A step that waits past the route's deadline: 504 with its own reason and
 * the step named, the step cancelled, nothing sent upstream. */
static void test_deadline_while_waiting(void **state)
{
    (void)state;
    fixture_t fx = setup_fixture_with(ONE_ROUTE "    timeout: 100ms\n"), *f = &fx;
    pt_send(f->client, "GET / HTTP/1.1\r\nHost: shop\r\n\r\n");
    char buf[4096];
    pt_answer_ending(f->pt, f->client, buf, sizeof buf, "timed out in admission step wait");
    assert_non_null(strstr(buf, "HTTP/1.1 504 Gateway Timeout\r\n"));
    assert_non_null(strstr(buf, "\"error\":\"gateway_timeout\""));
    assert_int_equal(cancels, 1);
    assert_null(f->pt->pw->waiting);
    assert_int_equal(f->pt->be[0].accepted, 0);
    teardown_fixture(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resumed_request_goes_out_whole),
        cmocka_unit_test(test_denied_after_waiting),
        cmocka_unit_test(test_client_gone_while_waiting_cancels_the_step),
        cmocka_unit_test(test_wake_runs_waiting_requests_again),
        cmocka_unit_test(test_deadline_while_waiting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
