/* net/takeover.h: a server on a real loop in the test thread, clients in a
 * second thread (they block), descriptors compared by socket address and
 * inode. Every test ends with the loop closed and no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "net/listener.h"
#include "net/takeover.h"

typedef struct fx {
    char dir[64];
    char path[100];
    uv_loop_t loop;
    uv_async_t wake; /* the client thread is done */
    bool client_done;
    atomic_int handovers;
    takeover_server_t *server;
} fx_t;

typedef void (*client_fn)(void *arg);

typedef struct client_run {
    fx_t *fx;
    client_fn fn;
    void *arg;
} client_run_t;

static void on_handover(void *ctx) { atomic_fetch_add(&((fx_t *)ctx)->handovers, 1); }

static void on_wake(uv_async_t *a) { ((fx_t *)a->data)->client_done = true; }

static void *client_main(void *arg)
{
    client_run_t *r = arg;
    r->fn(r->arg);
    uv_async_send(&r->fx->wake);
    return NULL;
}

/* Runs fn in a thread while this thread drives the loop, until fn returns;
 * then the events already pending (a client's EOF) are handled too. */
static void run_client(fx_t *fx, client_fn fn, void *arg)
{
    client_run_t r = {fx, fn, arg};
    pthread_t t;
    fx->client_done = false;
    assert_int_equal(pthread_create(&t, NULL, client_main, &r), 0);
    while (!fx->client_done)
        uv_run(&fx->loop, UV_RUN_ONCE);
    pthread_join(t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/ficus-takeover-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof fx->path, "%s/ctl.sock", fx->dir);
    uv_loop_init(&fx->loop);
    uv_async_init(&fx->loop, &fx->wake, on_wake);
    fx->wake.data = fx;
    atomic_init(&fx->handovers, 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    takeover_server_stop(fx->server);
    uv_close((uv_handle_t *)&fx->wake, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&fx->loop);
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
    return rc == 0 ? 0 : -1; /* a handle left open fails the test */
}

static void start_server(fx_t *fx, const int *fds, size_t n)
{
    char err[256] = "";
    fx->server =
        takeover_server_start(&fx->loop, fx->path, fds, n, on_handover, fx, err, sizeof err);
    if (!fx->server)
        fail_msg("takeover_server_start: %s", err);
}

static int tcp_listener(struct sockaddr_in *addr)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char err[256];
    int fd = listener_open((struct sockaddr *)&sin, sizeof sin, 16, err, sizeof err);
    if (fd < 0)
        fail_msg("listener_open: %s", err);
    socklen_t len = sizeof *addr;
    getsockname(fd, (struct sockaddr *)addr, &len);
    return fd;
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino &&
           (fcntl(a, F_GETFL) & O_ACCMODE) == (fcntl(b, F_GETFL) & O_ACCMODE);
}

static bool is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

typedef struct fetch_job {
    const char *path;
    takeover_client_t c;
    int rc;
    char err[256];
} fetch_job_t;

static void do_fetch(void *arg)
{
    fetch_job_t *j = arg;
    j->rc = takeover_client_fetch(j->path, &j->c, j->err, sizeof j->err);
}

typedef struct finish_job {
    takeover_client_t *c;
    bool serving;
    int rc;
    char err[256];
} finish_job_t;

static void do_finish(void *arg)
{
    finish_job_t *j = arg;
    j->rc = takeover_client_finish(j->c, j->serving, j->err, sizeof j->err);
}

/* The new side gets the very sockets (a connection made to the old port is
 * accepted on the received copy), "serving" hands over once, and the old
 * side stops listening without removing the path. */
static void test_handover(void **state)
{
    fx_t *fx = *state;
    struct sockaddr_in addr;
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    int fds[3] = {tcp_listener(&addr), pipefd[0], pipefd[1]};
    start_server(fx, fds, 3);
    struct stat st;
    assert_int_equal(stat(fx->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    fetch_job_t f = {.path = fx->path};
    run_client(fx, do_fetch, &f);
    assert_int_equal(f.rc, 1);
    assert_int_equal(f.c.n, 3);
    assert_true(f.c.sock >= 0);
    for (size_t i = 0; i < 3; i++) {
        assert_int_not_equal(f.c.fds[i], fds[i]);
        assert_true(same_file(f.c.fds[i], fds[i]));
        assert_true(fcntl(f.c.fds[i], F_GETFD) & FD_CLOEXEC);
    }
    assert_true(takeover_fd_matches(f.c.fds[0], (struct sockaddr *)&addr, sizeof addr));
    int cl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(cl, (struct sockaddr *)&addr, sizeof addr), 0);
    int ac = accept4(f.c.fds[0], NULL, NULL, SOCK_CLOEXEC);
    assert_true(ac >= 0);
    close(ac);
    close(cl);
    assert_int_equal(atomic_load(&fx->handovers), 0);

    int kept[3];
    memcpy(kept, f.c.fds, sizeof kept);
    finish_job_t fin = {.c = &f.c, .serving = true};
    run_client(fx, do_finish, &fin);
    assert_int_equal(fin.rc, 0);
    assert_int_equal(f.c.sock, -1);
    assert_null(f.c.fds);
    assert_int_equal(atomic_load(&fx->handovers), 1);
    for (size_t i = 0; i < 3; i++) {
        assert_true(is_open(kept[i])); /* the caller's now */
        close(kept[i]);
    }

    /* Nobody answers any more, but the file stays: the new process owns it. */
    takeover_client_t c;
    char err[256];
    assert_int_equal(takeover_client_fetch(fx->path, &c, err, sizeof err), 0);
    assert_int_equal(c.sock, -1);
    takeover_server_stop(fx->server);
    fx->server = NULL;
    assert_int_equal(stat(fx->path, &st), 0);

    /* The new process binds the path; its own stop removes it. */
    start_server(fx, NULL, 0);
    takeover_server_stop(fx->server);
    fx->server = NULL;
    assert_int_equal(stat(fx->path, &st), -1);
    assert_int_equal(atomic_load(&fx->handovers), 1);
    for (size_t i = 0; i < 3; i++)
        close(fds[i]);
}

typedef struct two_clients {
    const char *path;
    takeover_client_t a, b;
    int rc_a, rc_b, rc_fin_a, rc_fin_b;
    bool a_fds_closed;
    char err[256];
} two_clients_t;

/* A declines (its descriptors closed), then B takes over at once. */
static void do_decline_then_take(void *arg)
{
    two_clients_t *j = arg;
    j->rc_a = takeover_client_fetch(j->path, &j->a, j->err, sizeof j->err);
    if (j->rc_a != 1)
        return;
    int got[8];
    size_t n = j->a.n < 8 ? j->a.n : 8;
    memcpy(got, j->a.fds, n * sizeof *got);
    j->rc_fin_a = takeover_client_finish(&j->a, false, j->err, sizeof j->err);
    j->a_fds_closed = true;
    for (size_t i = 0; i < n; i++)
        j->a_fds_closed = j->a_fds_closed && !is_open(got[i]);
    j->rc_b = takeover_client_fetch(j->path, &j->b, j->err, sizeof j->err);
}

static void test_decline_keeps_serving(void **state)
{
    fx_t *fx = *state;
    struct sockaddr_in addr;
    int fds[2] = {tcp_listener(&addr), tcp_listener(&addr)};
    start_server(fx, fds, 2);

    two_clients_t j = {.path = fx->path};
    run_client(fx, do_decline_then_take, &j);
    assert_int_equal(j.rc_a, 1);
    assert_int_equal(j.rc_fin_a, 0);
    assert_true(j.a_fds_closed);
    assert_int_equal(j.a.sock, -1);
    assert_int_equal(j.rc_b, 1);
    assert_int_equal(j.b.n, 2);
    assert_int_equal(atomic_load(&fx->handovers), 0);
    assert_true(is_open(fds[0]) && is_open(fds[1])); /* the old side's copies */

    finish_job_t fin = {.c = &j.b, .serving = true};
    int kept[2] = {j.b.fds[0], j.b.fds[1]};
    run_client(fx, do_finish, &fin);
    assert_int_equal(fin.rc, 0);
    assert_int_equal(atomic_load(&fx->handovers), 1);
    for (size_t i = 0; i < 2; i++) {
        assert_true(same_file(kept[i], fds[i]));
        close(kept[i]);
        close(fds[i]);
    }
}

/* While one client holds the descriptors, a second is told "busy". */
static void do_busy(void *arg)
{
    two_clients_t *j = arg;
    j->rc_a = takeover_client_fetch(j->path, &j->a, j->err, sizeof j->err);
    if (j->rc_a != 1)
        return;
    j->rc_b = takeover_client_fetch(j->path, &j->b, j->err, sizeof j->err);
    char err[256];
    j->rc_fin_a = takeover_client_finish(&j->a, false, err, sizeof err);
}

static void test_busy(void **state)
{
    fx_t *fx = *state;
    struct sockaddr_in addr;
    int fd = tcp_listener(&addr);
    start_server(fx, &fd, 1);
    two_clients_t j = {.path = fx->path};
    run_client(fx, do_busy, &j);
    assert_int_equal(j.rc_a, 1);
    assert_true(j.rc_b < 0);
    if (!strstr(j.err, "in progress"))
        fail_msg("%s", j.err);
    assert_int_equal(j.b.sock, -1);
    assert_int_equal(j.rc_fin_a, 0);
    assert_int_equal(atomic_load(&fx->handovers), 0);
    close(fd);
}

static void bind_and_close(const char *path, int type)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    int fd = socket(AF_UNIX, type, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
}

/* No file, or a socket file nobody listens on: start normally. */
static void test_fetch_nobody(void **state)
{
    fx_t *fx = *state;
    takeover_client_t c = {.sock = 7};
    char err[256] = "";
    assert_int_equal(takeover_client_fetch(fx->path, &c, err, sizeof err), 0);
    assert_int_equal(c.sock, -1);
    assert_null(c.fds);

    bind_and_close(fx->path, SOCK_SEQPACKET);
    assert_int_equal(takeover_client_fetch(fx->path, &c, err, sizeof err), 0);
    unlink(fx->path);
    bind_and_close(fx->path, SOCK_STREAM);
    assert_int_equal(takeover_client_fetch(fx->path, &c, err, sizeof err), 0);

    /* The stale file is replaced by a server. */
    start_server(fx, NULL, 0);
    fetch_job_t f = {.path = fx->path};
    run_client(fx, do_fetch, &f);
    assert_int_equal(f.rc, 1);
    assert_int_equal(f.c.n, 0);
    finish_job_t fin = {.c = &f.c, .serving = false};
    run_client(fx, do_finish, &fin);
    assert_int_equal(fin.rc, 0);
}

static void test_start_refuses_owned_path(void **state)
{
    fx_t *fx = *state;
    int fd = tcp_listener(&(struct sockaddr_in){0});
    start_server(fx, &fd, 1);
    char err[256] = "";
    takeover_server_t *second =
        takeover_server_start(&fx->loop, fx->path, &fd, 1, on_handover, fx, err, sizeof err);
    assert_null(second);
    assert_non_null(strstr(err, "another ficus owns"));
    assert_non_null(strstr(err, fx->path));

    /* The first one still answers on its path. */
    fetch_job_t f = {.path = fx->path};
    run_client(fx, do_fetch, &f);
    assert_int_equal(f.rc, 1);
    assert_int_equal(f.c.n, 1);
    finish_job_t fin = {.c = &f.c, .serving = false};
    run_client(fx, do_finish, &fin);
    close(fd);
}

static void test_start_refuses_other_files(void **state)
{
    fx_t *fx = *state;
    char err[256] = "";
    int fd = open(fx->path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    close(fd);
    assert_null(
        takeover_server_start(&fx->loop, fx->path, NULL, 0, on_handover, fx, err, sizeof err));
    assert_non_null(strstr(err, "not a socket"));
    struct stat st;
    assert_int_equal(stat(fx->path, &st), 0); /* left alone */
    unlink(fx->path);

    char long_path[200];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    assert_null(
        takeover_server_start(&fx->loop, long_path, NULL, 0, on_handover, fx, err, sizeof err));
    assert_non_null(strstr(err, "107"));
}

/* stop removes the path only while it is the file this server bound. */
static void test_stop_unlinks_only_its_own(void **state)
{
    fx_t *fx = *state;
    struct stat st;
    start_server(fx, NULL, 0);
    takeover_server_stop(fx->server);
    fx->server = NULL;
    assert_int_equal(stat(fx->path, &st), -1);

    start_server(fx, NULL, 0);
    unlink(fx->path);
    bind_and_close(fx->path, SOCK_STREAM); /* someone else's file now */
    takeover_server_stop(fx->server);
    fx->server = NULL;
    assert_int_equal(stat(fx->path, &st), 0);
}

/* More than SCM_MAX_FD (253) descriptors arrive complete and in order. */
static void test_many_fds(void **state)
{
    fx_t *fx = *state;
    enum { PIPES = 150, N = 2 * PIPES };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4 * N) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 4 * N)
            skip();
        rl.rlim_cur = 4 * N;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    int fds[N];
    for (size_t i = 0; i < PIPES; i++)
        assert_int_equal(pipe2(fds + 2 * i, O_CLOEXEC), 0);
    start_server(fx, fds, N);

    fetch_job_t f = {.path = fx->path};
    run_client(fx, do_fetch, &f);
    assert_int_equal(f.rc, 1);
    assert_int_equal(f.c.n, N);
    for (size_t i = 0; i < N; i++)
        assert_true(same_file(f.c.fds[i], fds[i]));
    int first = f.c.fds[0], last = f.c.fds[N - 1];
    finish_job_t fin = {.c = &f.c, .serving = false};
    run_client(fx, do_finish, &fin);
    assert_int_equal(fin.rc, 0);
    assert_false(is_open(first));
    assert_false(is_open(last));
    assert_int_equal(atomic_load(&fx->handovers), 0);
    for (size_t i = 0; i < N; i++)
        close(fds[i]);
}

static int count_open_fds(int *max_fd)
{
    int n = 0;
    *max_fd = -1;
    for (int fd = 0; fd < 4096; fd++)
        if (is_open(fd)) {
            n++;
            *max_fd = fd;
        }
    return n;
}

/* A client out of descriptors gets the chunk cut short (MSG_CTRUNC): an
 * error, and the part that did arrive is closed again. */
static void test_truncated_fds_closed(void **state)
{
    fx_t *fx = *state;
    int fds[5];
    for (size_t i = 0; i < 5; i++)
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    start_server(fx, fds, 5);

    /* A soft limit just past the fifth free descriptor number leaves four to
     * make: the client's socket, the server's accepted one and two of the five. */
    int max_fd;
    int before = count_open_fds(&max_fd);
    rlim_t limit = 0;
    for (int fd = 0, free_seen = 0; !limit; fd++)
        if (!is_open(fd) && ++free_seen == 5)
            limit = (rlim_t)fd;
    struct rlimit saved, rl;
    getrlimit(RLIMIT_NOFILE, &saved);
    rl = saved;
    rl.rlim_cur = limit;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    fetch_job_t f = {.path = fx->path};
    run_client(fx, do_fetch, &f);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    assert_true(f.rc < 0);
    assert_non_null(strstr(f.err, "cut off"));
    assert_int_equal(f.c.sock, -1);
    assert_int_equal(count_open_fds(&max_fd), before); /* nothing leaked */

    /* The old side noticed nothing but a client that went away. */
    f = (fetch_job_t){.path = fx->path};
    run_client(fx, do_fetch, &f);
    assert_int_equal(f.rc, 1);
    assert_int_equal(f.c.n, 5);
    finish_job_t fin = {.c = &f.c, .serving = false};
    run_client(fx, do_finish, &fin);
    assert_int_equal(atomic_load(&fx->handovers), 0);
    for (size_t i = 0; i < 5; i++)
        close(fds[i]);
}

/* A hello of another protocol version is answered with an error, not fds. */
static void test_other_version_refused(void **state)
{
    fx_t *fx = *state;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    start_server(fx, &fd, 1);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", fx->path);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(s, (struct sockaddr *)&sun, sizeof sun), 0);
    const char hello[] = "FICUS-TAKEOVER 2\n";
    assert_int_equal(send(s, hello, strlen(hello), 0), (ssize_t)strlen(hello));
    char buf[256];
    ssize_t r;
    while ((r = recv(s, buf, sizeof buf - 1, MSG_DONTWAIT)) < 0 && errno == EAGAIN)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(r > 0);
    buf[r] = '\0';
    assert_non_null(strstr(buf, "ERROR unsupported protocol version"));
    while ((r = recv(s, buf, sizeof buf, MSG_DONTWAIT)) < 0 && errno == EAGAIN)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(r, 0); /* closed after the error */
    close(s);
    assert_int_equal(atomic_load(&fx->handovers), 0);
    close(fd);
}

static void test_fd_matches(void **state)
{
    (void)state;
    struct sockaddr_in addr;
    int fd = tcp_listener(&addr);
    assert_true(takeover_fd_matches(fd, (struct sockaddr *)&addr, sizeof addr));
    struct sockaddr_in other = addr;
    other.sin_port =
        htons((uint16_t)(ntohs(addr.sin_port) == 65535 ? 1 : ntohs(addr.sin_port) + 1));
    assert_false(takeover_fd_matches(fd, (struct sockaddr *)&other, sizeof other));
    other = addr;
    other.sin_addr.s_addr = htonl(INADDR_ANY);
    assert_false(takeover_fd_matches(fd, (struct sockaddr *)&other, sizeof other));
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = addr.sin_port};
    assert_false(takeover_fd_matches(fd, (struct sockaddr *)&v6, sizeof v6));

    /* Bound to the same address but not listening: not a listener to reuse. */
    int idle = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(idle, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    assert_int_equal(bind(idle, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_false(takeover_fd_matches(idle, (struct sockaddr *)&addr, sizeof addr));
    close(idle);
    close(fd);

    /* IPv6: the scope is part of the address. */
    struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    char err[256];
    int fd6 = listener_open((struct sockaddr *)&lo6, sizeof lo6, 16, err, sizeof err);
    if (fd6 < 0)
        return; /* no IPv6 here */
    socklen_t len = sizeof lo6;
    getsockname(fd6, (struct sockaddr *)&lo6, &len);
    assert_true(takeover_fd_matches(fd6, (struct sockaddr *)&lo6, sizeof lo6));
    struct sockaddr_in6 scoped = lo6;
    scoped.sin6_scope_id = 1;
    assert_false(takeover_fd_matches(fd6, (struct sockaddr *)&scoped, sizeof scoped));
    close(fd6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decline_keeps_serving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fetch_nobody, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_refuses_owned_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_refuses_other_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_unlinks_only_its_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_fds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_fds_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_version_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fd_matches, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
