/* app/listeners.h: the listening sockets a configuration gets. One socket
 * per worker for each listener, a busy address refused, and a takeover from
 * a server on a real loop: received sockets are used (and the admin's), the
 * ones the new config lacks are closed, the rest are opened here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "app/listeners.h"
#include "app_test.h"
#include "net/listener.h"

static uint16_t port_of_fd(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    return ntohs(sa.sin_port);
}

/* A port nothing listens on (right now). */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    uint16_t p = port_of_fd(fd);
    close(fd);
    return p;
}

static int open_on(uint16_t port)
{
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    char err[256];
    int fd = listener_open((struct sockaddr *)&sa, sizeof sa, 16, err, sizeof err);
    assert_true(fd >= 0);
    return fd;
}

static bool is_listening(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

static bool is_closed(int fd) { return fcntl(fd, F_GETFD) == -1 && errno == EBADF; }

static config_t *config_with(uint16_t p1, uint16_t p2, unsigned workers, uint16_t admin,
                             const char *control_socket)
{
    char yaml[1024], cs[300] = "";
    if (control_socket)
        snprintf(cs, sizeof cs, "  control_socket: %s\n", control_socket);
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: [\"127.0.0.1:%u\", \"127.0.0.1:%u\"]\n"
             "  workers: %u\n"
             "%s"
             "admin: {listen: \"127.0.0.1:%u\"}\n"
             "target_groups:\n"
             "  g: {targets: [\"10.0.0.1:80\"]}\n"
             "routes:\n"
             "  - {name: r, match: {path_prefix: /}, backends: [{target_group: g}]}\n",
             p1, p2, workers, cs, admin);
    return app_test_config(yaml);
}

/* The plan's sockets of listener l, one per worker, on port. */
static void expect_listener(const listeners_plan_t *p, uint32_t l, unsigned workers, uint16_t port)
{
    unsigned seen = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->fds[i].listener != l)
            continue;
        assert_true(p->fds[i].worker < workers);
        assert_false(seen & (1u << p->fds[i].worker)); /* one per worker */
        seen |= 1u << p->fds[i].worker;
        assert_true(is_listening(p->fds[i].fd));
        assert_int_equal(port_of_fd(p->fds[i].fd), port);
    }
    assert_int_equal(seen, (1u << workers) - 1);
}

static void test_one_socket_per_worker_and_listener(void **state)
{
    (void)state;
    uint16_t p1 = free_port(), p2 = free_port();
    config_t *cfg = config_with(p1, p2, 3, free_port(), NULL);
    listeners_plan_t p = {0};
    char err[256] = "";
    assert_int_equal(listeners_plan(cfg, &p, err, sizeof err), 0);
    assert_int_equal(p.n, 6);
    assert_int_equal(p.admin_fd, -1);
    assert_false(p.took_over);
    expect_listener(&p, 0, 3, p1);
    expect_listener(&p, 1, 3, p2);
    int first = p.fds[0].fd;
    /* Not the workers' yet: released, they are closed. */
    listeners_plan_deinit(&p, false);
    assert_true(is_closed(first));
    config_unref(cfg);
}

static void test_busy_address_refused(void **state)
{
    (void)state;
    uint16_t p1 = free_port(), p2 = free_port();
    int other = open_on(p2); /* another process, as SO_REUSEPORT would let it share */
    config_t *cfg = config_with(p1, p2, 2, free_port(), NULL);
    listeners_plan_t p = {0};
    char err[256] = "";
    assert_int_equal(listeners_plan(cfg, &p, err, sizeof err), -1);
    assert_true(err[0] != '\0');
    print_message("err: %s\n", err);
    assert_int_equal(p.n, 2); /* the first listener's, closed by deinit */
    int first = p.fds[0].fd;
    listeners_plan_deinit(&p, false);
    assert_true(is_closed(first));
    assert_true(is_listening(other));
    close(other);
    config_unref(cfg);
}

static void test_control_socket_nobody_listens(void **state)
{
    (void)state;
    config_t *cfg = config_with(free_port(), free_port(), 1, free_port(),
                                "/tmp/ficus-test-listeners-none.sock");
    listeners_plan_t p = {0};
    char err[256] = "";
    assert_int_equal(listeners_plan(cfg, &p, err, sizeof err), 0);
    assert_false(p.took_over);
    assert_int_equal(p.n, 2);
    listeners_plan_deinit(&p, false);
    config_unref(cfg);
}

/* --- takeover: the old side's server on this thread's loop --- */

typedef struct fx {
    uv_loop_t loop;
    uv_async_t wake;
    atomic_bool client_done;
    atomic_int handovers;
    const config_t *cfg;
    listeners_plan_t plan;
    int rc;
    bool serve; /* tell the old side to drain */
    char err[256];
} fx_t;

static void on_handover(void *ctx) { atomic_fetch_add(&((fx_t *)ctx)->handovers, 1); }
static void on_wake(uv_async_t *a) { (void)a; }

static void new_side(void *arg)
{
    fx_t *fx = arg;
    fx->rc = listeners_plan(fx->cfg, &fx->plan, fx->err, sizeof fx->err);
    if (fx->rc == 0 && fx->serve)
        listeners_plan_serving(&fx->plan);
    atomic_store(&fx->client_done, true);
    uv_async_send(&fx->wake);
}

static void run_takeover(bool serve)
{
    fx_t fx = {.serve = serve};
    assert_int_equal(uv_loop_init(&fx.loop), 0);
    assert_int_equal(uv_async_init(&fx.loop, &fx.wake, on_wake), 0);
    uint16_t p1 = free_port(), p2 = free_port(), pa = free_port(), px = free_port();
    int old[] = {open_on(p1), open_on(pa), open_on(px)};
    char path[] = "/tmp/ficus-test-listeners-XXXXXX";
    int tmp = mkstemp(path);
    close(tmp);
    unlink(path);
    char err[256];
    takeover_server_t *s =
        takeover_server_start(&fx.loop, path, old, 3, on_handover, &fx, err, sizeof err);
    assert_non_null(s);
    /* The new config: p1 (received) and p2 (new), two workers, admin on pa;
     * px is no longer configured. */
    config_t *cfg = config_with(p1, p2, 2, pa, path);
    fx.cfg = cfg;
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, new_side, &fx), 0);
    while (!atomic_load(&fx.client_done))
        uv_run(&fx.loop, UV_RUN_ONCE);
    assert_int_equal(uv_thread_join(&t), 0);
    uv_run(&fx.loop, UV_RUN_NOWAIT);

    assert_int_equal(fx.rc, 0);
    assert_int_equal(fx.plan.n, 4);
    expect_listener(&fx.plan, 0, 2, p1);
    expect_listener(&fx.plan, 1, 2, p2);
    assert_true(fx.plan.admin_fd >= 0);
    assert_int_equal(port_of_fd(fx.plan.admin_fd), pa);
    /* The received socket serves listener 0 on worker 0; the others were
     * opened here. */
    assert_int_equal(fx.plan.fds[0].listener, 0);
    assert_int_equal(fx.plan.fds[0].worker, 0);
    int received = fx.plan.fds[0].fd, opened[3];
    for (size_t i = 1; i < 4; i++)
        opened[i - 1] = fx.plan.fds[i].fd;
    /* px was received and closed: nothing in the plan listens on it. */
    for (size_t i = 0; i < fx.plan.n; i++)
        assert_int_not_equal(port_of_fd(fx.plan.fds[i].fd), px);
    int admin = fx.plan.admin_fd;
    if (serve) {
        assert_false(fx.plan.took_over);
        assert_int_equal(atomic_load(&fx.handovers), 1);
        listeners_plan_deinit(&fx.plan, false); /* closes the plan's sockets */
        assert_true(is_closed(received));
        assert_true(is_listening(admin)); /* the admin's to close */
        close(admin);
    } else {
        assert_true(fx.plan.took_over);
        assert_int_equal(atomic_load(&fx.handovers), 0);
        /* Not serving: every received socket is given back (closed here);
         * the old process keeps its own. */
        listeners_plan_deinit(&fx.plan, false);
        assert_true(is_closed(received));
        assert_true(is_closed(admin));
        assert_true(is_listening(old[0]));
        for (size_t i = 0; i < 3; i++)
            close(opened[i]);
    }
    takeover_server_stop(s);
    uv_close((uv_handle_t *)&fx.wake, NULL);
    assert_int_equal(uv_run(&fx.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx.loop), 0);
    for (size_t i = 0; i < 3; i++)
        close(old[i]);
    unlink(path);
    config_unref(cfg);
}

static void test_takeover_then_serving(void **state)
{
    (void)state;
    run_takeover(true);
}

static void test_takeover_given_back(void **state)
{
    (void)state;
    run_takeover(false);
}

int main(void)
{
    alarm(120); /* a hung loop fails the run instead of blocking it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_socket_per_worker_and_listener),
        cmocka_unit_test(test_busy_address_refused),
        cmocka_unit_test(test_control_socket_nobody_listens),
        cmocka_unit_test(test_takeover_then_serving),
        cmocka_unit_test(test_takeover_given_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
