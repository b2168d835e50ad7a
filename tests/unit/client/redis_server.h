/* A real redis-server for the kv and fleet tests: started on 127.0.0.1 at a
 * free port (no persistence), stopped (SIGKILL, as a crash) and restarted on
 * the same port, asked commands through hiredis's blocking API; and a loop
 * runner bounded in time. Test code only (static functions). */
#ifndef FICUS_TESTS_CLIENT_REDIS_SERVER_H
#define FICUS_TESTS_CLIENT_REDIS_SERVER_H

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

typedef struct redis_server {
    pid_t pid; /* 0: not running */
    int port;
    char address[32]; /* "127.0.0.1:port" */
} redis_server_t;

static int redis_server_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* A blocking connection to it, or NULL. */
static redisContext *redis_server_connect(const redis_server_t *s)
{
    struct timeval tv = {.tv_sec = 1};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, tv);
    return c;
}

/* One command's reply (the caller frees it with freeReplyObject), or NULL. */
static redisReply *redis_server_cmd(const redis_server_t *s, const char *fmt, ...)
{
    redisContext *c = redis_server_connect(s);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* The integer reply of a command, or -1000000 (anything else). */
__attribute__((unused)) static long long redis_server_int(const redis_server_t *s, const char *fmt,
                                                          ...)
{
    redisContext *c = redis_server_connect(s);
    if (!c)
        return -1000000;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1000000;
    if (r)
        freeReplyObject(r);
    return v;
}

/* Starts redis-server on s->port (a free one when 0); true once it answers PING. */
static bool redis_server_start(redis_server_t *s)
{
    if (s->port == 0)
        s->port = redis_server_free_port();
    if (s->port <= 0)
        return false;
    snprintf(s->address, sizeof s->address, "127.0.0.1:%d", s->port);
    char port[8];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that fails half-way leaves none behind */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
              "--save", "", "--appendonly", "no", "--loglevel", "warning", "--dir", "/tmp",
              (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 500; i++) { /* 5 s at most */
        redisReply *r = redis_server_cmd(s, "PING");
        bool up = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (up)
            return true;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            s->pid = 0;
            return false;
        }
        usleep(10000);
    }
    return false;
}

/* Kills it (SIGKILL: no goodbye to its clients) and reaps it. */
static void redis_server_stop(redis_server_t *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

/* cmocka group setup: *state = a zeroed fixture of size bytes whose first
 * member is the redis_server_t, started. */
__attribute__((unused)) static int redis_server_group_setup(void **state, size_t size)
{
    redis_server_t *s = calloc(1, size);
    if (!s || !redis_server_start(s)) {
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

__attribute__((unused)) static int redis_server_group_teardown(void **state)
{
    redis_server_stop(*state);
    free(*state);
    return 0;
}

static void redis_test_on_tick(uv_timer_t *t) { (void)t; }

/* Runs loop until pred(arg) holds or ms pass; returns pred's last answer. */
static bool redis_test_run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg, uint64_t ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, redis_test_on_tick, 5, 5); /* the loop wakes to look again */
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + ms;
    bool ok = pred ? pred(arg) : false;
    while (!ok && uv_now(loop) < end) {
        uv_run(loop, UV_RUN_ONCE);
        ok = pred ? pred(arg) : false;
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

/* A test's start: redis emptied, then loop made; 0, or -1 when redis
 * did not answer. */
__attribute__((unused)) static int redis_test_begin(const redis_server_t *s, uv_loop_t *loop)
{
    redisReply *r = redis_server_cmd(s, "FLUSHALL");
    if (!r)
        return -1;
    freeReplyObject(r);
    assert_int_equal(uv_loop_init(loop), 0);
    return 0;
}

/* A test's end, once its users of loop are closed: the loop runs until it
 * is empty (nothing may be left behind), then closes. */
__attribute__((unused)) static void redis_test_finish(uv_loop_t *loop)
{
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Runs loop for ms. */
__attribute__((unused)) static void redis_test_run_for(uv_loop_t *loop, uint64_t ms)
{
    redis_test_run_until(loop, NULL, NULL, ms);
}

#endif
