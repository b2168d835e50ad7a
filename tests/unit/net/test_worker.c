/* net/worker.h with real threads: messages run on each worker's own thread,
 * accepting pauses at max_connections and resumes when a connection
 * closes, retired pointers are freed once every worker passed a loop turn
 * (or at stop), and stopping closes the listening sockets and every handle
 * of the main loop the group used. */
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

#include "net/listener.h"
#include "net/worker.h"

#define MAX_W 4

static struct {
    atomic_int ran[MAX_W];
    uv_thread_t thread[MAX_W];
    atomic_int stopped;
    atomic_int accepted;
    atomic_int freed;
    int held[8]; /* accepted fds, closed by the test */
} st;

static void reset(void) { memset(&st, 0, sizeof st); }

/* Waits (bounded) for *v to reach want, running loop if given. */
static bool wait_for(atomic_int *v, int want, uv_loop_t *loop)
{
    for (int i = 0; i < 5000; i++) {
        if (atomic_load(v) >= want)
            return true;
        if (loop)
            uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    return atomic_load(v) >= want;
}

/* The main loop ends with no handle left (the group's reclaim timer). */
static void close_main_loop(uv_loop_t *loop)
{
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void on_run(worker_t *w, void *arg)
{
    assert_ptr_equal(arg, &st);
    st.thread[w->index] = uv_thread_self();
    atomic_fetch_add(&st.ran[w->index], 1);
}

static void on_stop(worker_t *w)
{
    (void)w;
    atomic_fetch_add(&st.stopped, 1);
}

static void test_post_runs_on_each_worker(void **state)
{
    (void)state;
    reset();
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    worker_group_t g;
    assert_int_equal(worker_group_init(&g, &loop, 3, NULL, 0, 30, 4096), 0);
    assert_int_equal(g.n, 3);
    for (size_t i = 0; i < g.n; i++) {
        assert_int_equal(g.workers[i].index, i);
        assert_int_equal(g.workers[i].max_connections, 10); /* 30 shared by 3 */
        g.workers[i].on_stop = on_stop;
    }
    assert_int_equal(worker_group_start(&g), 0);
    for (size_t i = 0; i < g.n; i++)
        assert_int_equal(worker_post(&g.workers[i], on_run, &st), 0);
    for (size_t i = 0; i < g.n; i++)
        assert_true(wait_for(&st.ran[i], 1, NULL));
    uv_thread_t self = uv_thread_self();
    for (size_t i = 0; i < g.n; i++) {
        assert_int_equal(atomic_load(&st.ran[i]), 1);
        assert_false(uv_thread_equal(&st.thread[i], &self));
        for (size_t j = 0; j < i; j++)
            assert_false(uv_thread_equal(&st.thread[i], &st.thread[j]));
    }
    worker_group_stop(&g);
    assert_int_equal(atomic_load(&st.stopped), 3);
    assert_null(g.workers);
    worker_group_stop(&g); /* twice is harmless */
    close_main_loop(&loop);
}

/* --- accepting --- */

static void on_accept(worker_t *w, int fd, size_t listener)
{
    (void)w;
    assert_int_equal(listener, 7);
    int n = atomic_load(&st.accepted);
    st.held[n] = fd;
    atomic_fetch_add(&st.accepted, 1);
}

static void close_first(worker_t *w, void *arg)
{
    (void)arg;
    close(st.held[0]);
    st.held[0] = -1;
    worker_connection_closed(w);
}

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void test_accept_pauses_at_max_connections(void **state)
{
    (void)state;
    reset();
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    char err[256];
    int lfd = listener_open((struct sockaddr *)&sa, sizeof sa, 16, err, sizeof err);
    assert_true(lfd >= 0);
    struct sockaddr_in bound;
    socklen_t len = sizeof bound;
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&bound, &len), 0);
    worker_fd_t fds[] = {{lfd, 0, 7}};
    worker_group_t g;
    assert_int_equal(worker_group_init(&g, &loop, 1, fds, 1, 1, 4096), 0);
    assert_int_equal(g.workers[0].n_listeners, 1);
    g.workers[0].on_accept = on_accept;
    assert_int_equal(worker_group_start(&g), 0);

    int c1 = connect_to(ntohs(bound.sin_port));
    assert_true(wait_for(&st.accepted, 1, NULL));
    /* At max_connections (1): the next one waits in the backlog. */
    int c2 = connect_to(ntohs(bound.sin_port));
    usleep(200 * 1000);
    assert_int_equal(atomic_load(&st.accepted), 1);
    /* The first one closes: accepting resumes. */
    assert_int_equal(worker_post(&g.workers[0], close_first, NULL), 0);
    assert_true(wait_for(&st.accepted, 2, NULL));

    worker_group_stop(&g);
    /* Stopping closed the listening socket. */
    errno = 0;
    assert_int_equal(fcntl(lfd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
    close(st.held[1]);
    close(c1);
    close(c2);
    close_main_loop(&loop);
}

/* --- retirement --- */

static void count_free(void *p)
{
    free(p);
    atomic_fetch_add(&st.freed, 1);
}

static void test_retire_frees_after_a_turn_and_at_stop(void **state)
{
    (void)state;
    reset();
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    worker_group_t g;
    assert_int_equal(worker_group_init(&g, &loop, 2, NULL, 0, 10, 4096), 0);
    assert_int_equal(worker_group_start(&g), 0);
    /* Freed on the main loop once both workers passed a loop turn. */
    worker_group_retire(&g, malloc(16), count_free);
    assert_int_equal(atomic_load(&st.freed), 0); /* never at once */
    assert_true(wait_for(&st.freed, 1, &loop));
    /* Still retired when the group stops: freed by the stop. */
    worker_group_retire(&g, malloc(16), count_free);
    worker_group_retire_cb(&g, malloc(16), count_free);
    worker_group_stop(&g);
    assert_int_equal(atomic_load(&st.freed), 3);
    close_main_loop(&loop);
}

int main(void)
{
    alarm(120); /* a hung thread fails the run instead of blocking it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_runs_on_each_worker),
        cmocka_unit_test(test_accept_pauses_at_max_connections),
        cmocka_unit_test(test_retire_frees_after_a_turn_and_at_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
