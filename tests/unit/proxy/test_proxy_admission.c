/* The request path (proxy.c) with an admission step that makes the request
 * wait, on a real loop: a worker set up as the gateway sets one up, a backend
 * listening on 127.0.0.1, the client on a socketpair. While the step waits
 * nothing reaches the backend and the body is not read; on resume the kept
 * head is parsed and routed again and the request goes out whole; a step
 * that denies after waiting answers with its reason; a client that leaves
 * while the request waits cancels the step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "../app/app_test.h"
#include "core/defaults.h"
#include "proxy/proxy.h"

/* --- a step that waits, then lets on (or denies) --- */

static request_t *waiting; /* the request the step holds */
static int runs, cancels;
static bool deny_after_wait;

static admit_t wait_run(void *subject, admission_deny_t *deny)
{
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

/* --- the backend: reads a request, answers 200 "ok" --- */

typedef struct backend {
    uv_tcp_t listener;
    uv_tcp_t conn;
    int accepted;
    char got[8192];
    size_t len;
    int answered;
} backend_t;

static void be_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)n;
    backend_t *be = h->data;
    *b = uv_buf_init(be->got + be->len, (unsigned)(sizeof be->got - be->len - 1));
}

static void be_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void be_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    backend_t *be = s->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)&be->conn))
            uv_close((uv_handle_t *)&be->conn, NULL);
        return;
    }
    be->len += (size_t)n;
    be->got[be->len] = '\0';
    char *end = strstr(be->got, "\r\n\r\n");
    const char *cl = strstr(be->got, "content-length: ");
    size_t want =
        end ? (size_t)(end + 4 - be->got) + (cl ? strtoul(cl + 16, NULL, 10) : 0) : SIZE_MAX;
    if (be->len >= want && !be->answered) {
        be->answered = 1;
        static char resp[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        uv_write_t *w = malloc(sizeof *w);
        uv_buf_t r = uv_buf_init(resp, sizeof resp - 1);
        uv_write(w, s, &r, 1, be_written);
    }
}

static void be_accept(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    backend_t *be = l->data;
    uv_tcp_init(l->loop, &be->conn);
    be->conn.data = be;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&be->conn), 0);
    be->accepted++;
    uv_read_start((uv_stream_t *)&be->conn, be_alloc, be_read);
}

/* --- one worker, as the gateway sets it up --- */

typedef struct fixture {
    worker_t w;
    config_t *cfg;
    health_t *health;
    weights_t *weights;
    metrics_registry_t *reg;
    proxy_worker_t *pw;
    backend_t be;
    int client; /* the test's end of the socketpair */
} fixture_t;

static fixture_t *setup_fixture(void)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->w.loop), 0);
    f->w.rbuf = malloc(IO_BUF_BYTES);
    pbuf_pool_init(&f->w.pool, IO_BUF_BYTES + 16 * 1024 + 8192, 16);

    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&f->w.loop, &f->be.listener);
    f->be.listener.data = &f->be;
    assert_int_equal(uv_tcp_bind(&f->be.listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->be.listener, 8, be_accept), 0);
    struct sockaddr_in bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&f->be.listener, (struct sockaddr *)&bound, &blen);

    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [\"127.0.0.1:8080\"]\n"
             "  workers: 1\n"
             "target_groups:\n"
             "  g: {targets: [\"127.0.0.1:%u\"]}\n"
             "routes:\n"
             "  - name: r\n"
             "    match: {path_prefix: /}\n"
             "    backends: [{target_group: g}]\n",
             ntohs(bound.sin_port));
    f->cfg = app_test_config(yaml);
    f->health = health_new(f->cfg);
    f->weights = weights_new(f->cfg);
    f->reg = metrics_registry_new(1, "test");
    assert_non_null(f->health);
    assert_non_null(f->weights);
    assert_non_null(f->reg);
    proxy_shared_t shared = {
        .cfg = f->cfg, .id = 1, .metrics = f->reg, .health = f->health, .weights = f->weights};
    proxy_gen_t *gen = proxy_gen_new(&shared, 0);
    assert_non_null(gen);
    f->pw = proxy_worker_new(&f->w, f->reg, NULL, gen);
    assert_non_null(f->pw);
    f->w.app = f->pw;
    f->pw->steps = steps;
    f->pw->n_steps = 1;

    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    f->w.n_connections = 1;
    proxy_on_accept(&f->w, sv[0], 0);
    f->client = sv[1];
    runs = cancels = 0;
    waiting = NULL;
    deny_after_wait = false;
    return f;
}

static void spin(fixture_t *f, int turns)
{
    for (int i = 0; i < turns; i++)
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
}

/* Runs the loop until the client has read a whole answer holding `want`. */
static void read_answer(fixture_t *f, char *buf, size_t cap, const char *want)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < 2000 && !strstr(buf, want); i++) {
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
        ssize_t k = recv(f->client, buf + len, cap - len - 1, 0);
        if (k > 0) {
            len += (size_t)k;
            buf[len] = '\0';
        } else {
            usleep(500);
        }
    }
    assert_non_null(strstr(buf, want));
}

static void teardown_fixture(fixture_t *f)
{
    close(f->client);
    proxy_worker_stop(f->pw);
    uv_close((uv_handle_t *)&f->be.listener, NULL);
    if (f->be.accepted && !uv_is_closing((uv_handle_t *)&f->be.conn))
        uv_close((uv_handle_t *)&f->be.conn, NULL);
    uv_run(&f->w.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->w.loop), 0); /* no handle left */
    proxy_worker_free(f->pw);
    metrics_registry_free(f->reg);
    weights_free(f->weights);
    health_free(f->health);
    config_unref(f->cfg);
    pbuf_pool_deinit(&f->w.pool);
    free(f->w.rbuf);
    free(f);
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static void test_resumed_request_goes_out_whole(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture();
    send_str(f->client, "POST /orders?id=7 HTTP/1.1\r\nHost: shop\r\nX-Test: kept\r\n"
                        "Content-Length: 5\r\n\r\nhello");
    spin(f, 50);
    assert_non_null(waiting);
    assert_int_equal(runs, 1);
    assert_int_equal(f->be.accepted, 0); /* nothing went out while it waits */
    proxy_request_resume(waiting);
    char buf[4096];
    read_answer(f, buf, sizeof buf, "\r\n\r\nok");
    assert_int_equal(runs, 2);
    /* The kept head, parsed again: its target, its headers, then the body. */
    assert_non_null(strstr(f->be.got, "POST /orders?id=7 HTTP/1.1\r\n"));
    assert_non_null(strstr(f->be.got, "X-Test: kept\r\n"));
    assert_non_null(strstr(f->be.got, "\r\n\r\nhello"));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(cancels, 0);
    teardown_fixture(f);
}

static void test_denied_after_waiting(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture();
    deny_after_wait = true;
    send_str(f->client, "GET / HTTP/1.1\r\nHost: shop\r\n\r\n");
    spin(f, 50);
    assert_non_null(waiting);
    proxy_request_resume(waiting);
    char buf[4096];
    read_answer(f, buf, sizeof buf, "denied after waiting");
    assert_non_null(strstr(buf, "HTTP/1.1 403 Forbidden\r\n"));
    assert_non_null(strstr(buf, "\"error\":\"forbidden\""));
    assert_int_equal(f->be.accepted, 0);
    teardown_fixture(f);
}

static void test_client_gone_while_waiting_cancels_the_step(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture();
    send_str(f->client, "GET / HTTP/1.1\r\nHost: shop\r\n\r\n");
    spin(f, 50);
    assert_non_null(waiting);
    shutdown(f->client, SHUT_RDWR);
    for (int i = 0; i < 2000 && !cancels; i++)
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(cancels, 1);
    assert_null(waiting);
    assert_int_equal(f->be.accepted, 0);
    teardown_fixture(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resumed_request_goes_out_whole),
        cmocka_unit_test(test_denied_after_waiting),
        cmocka_unit_test(test_client_gone_while_waiting_cancels_the_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
