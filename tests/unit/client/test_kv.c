/* client/kv against a real redis-server on 127.0.0.1: scripts answering an
 * integer or an array, the EVAL fallback after SCRIPT FLUSH, replies of the
 * wrong shape, a deadline passing (CLIENT PAUSE) with the late reply ignored,
 * cancel, close with calls pending, the bound on calls in flight, a name
 * resolved, a connection silent for too long dropped and made again, and
 * redis killed mid-test and restarted: calls fail fast while it is down,
 * errors are counted, kv reconnects by itself; and string replies
 * (kv_eval_bulk): binary bytes, empty, nil, integers, the reply's bound and
 * the arguments' larger bound, a deadline, cancel. Every test ends with
 * the loop closed and no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client/kv.h"
#include "client/redis_server.h"
#include "core/errors.h"
#include "core/rand.h"

#define WAIT_MS 5000 /* the longest any step may take before the test fails */

typedef struct got {
    int calls; /* callbacks seen */
    int status;
    long long ints[16]; /* the first ones */
    size_t n;
    bool counting; /* ints were 1, 2, ... n */
} got_t;

static void on_done(void *ctx, int status, const long long *ints, size_t n)
{
    got_t *g = ctx;
    g->calls++;
    g->status = status;
    g->n = n;
    if (n)
        memcpy(g->ints, ints, (n < 16 ? n : 16) * sizeof *ints);
    g->counting = true;
    for (size_t i = 0; i < n; i++)
        g->counting = g->counting && ints[i] == (long long)i + 1;
}

static bool got_one(void *arg) { return ((got_t *)arg)->calls > 0; }
static bool is_up(void *arg) { return kv_connected(arg); }
static bool is_down(void *arg) { return !kv_connected(arg); }

typedef struct fx {
    redis_server_t srv;
    uv_loop_t loop;
    kv_t *kv;
} fx_t;

static const kv_opts_t OPTS = {.timeout_ms = 1000, .backoff_min_ms = 20, .backoff_max_ms = 200};

static kv_script_t add_one = {.source = "return {tonumber(ARGV[1]) + 1, #KEYS, #ARGV}"};

static void fx_start(fx_t *f, const char *address)
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->kv = kv_new(&f->loop, address ? address : f->srv.address, &OPTS);
    assert_non_null(f->kv);
    assert_true(redis_test_run_until(&f->loop, is_up, f->kv, WAIT_MS));
}

/* Closes the kv; the loop must end empty. */
static void fx_end(fx_t *f)
{
    kv_close(f->kv);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static int setup(void **state) { return redis_server_group_setup(state, sizeof(fx_t)); }

/* Sends add_one(key, x); NULL if refused. */
static kv_call_t *send_add(fx_t *f, const char *x, uint64_t timeout_ms, got_t *g)
{
    const char *args[] = {"k", x};
    size_t lens[] = {1, strlen(x)};
    return kv_eval(f->kv, &add_one, 1, args, lens, 2, timeout_ms, on_done, g);
}

/* CLIENT PAUSE ms ALL: redis holds every client's commands that long. */
static void pause_redis(const redis_server_t *s, int ms)
{
    redisReply *r = redis_server_cmd(s, "CLIENT PAUSE %d ALL", ms);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

/* Sends add_one(key, x) and waits for its end. */
static got_t eval_add(fx_t *f, const char *x)
{
    got_t g = {0};
    assert_non_null(send_add(f, x, 0, &g));
    assert_int_equal(g.calls, 0); /* never from inside kv_eval */
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    return g;
}

/* How many of this process's sockets connected to port are close-on-exec,
 * and how many there are. */
static void sockets_to(int port, int *cloexec, int *all)
{
    *cloexec = *all = 0;
    for (int fd = 3; fd < 1024; fd++) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0 || sa.sin_family != AF_INET ||
            ntohs(sa.sin_port) != port)
            continue;
        (*all)++;
        *cloexec += (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
    }
}

static void test_eval_array_and_integer(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    got_t g = eval_add(f, "41");
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.ints[0], 42);
    assert_int_equal(g.ints[1], 1); /* one key */
    assert_int_equal(g.ints[2], 1); /* one argument */
    static kv_script_t seven = {.source = "return 7"};
    got_t h = {0};
    assert_non_null(kv_eval(f->kv, &seven, 0, NULL, NULL, 0, 0, on_done, &h));
    assert_true(redis_test_run_until(&f->loop, got_one, &h, WAIT_MS));
    assert_int_equal(h.status, 0);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.ints[0], 7);
    assert_int_equal(kv_errors(f->kv), 0);
    int cloexec, all;
    sockets_to(f->srv.port, &cloexec, &all); /* the process ficus execs must not inherit it */
    assert_int_equal(all, 1);
    assert_int_equal(cloexec, 1);
    fx_end(f);
}

static void test_noscript_falls_back_to_eval(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    assert_int_equal(eval_add(f, "1").ints[0], 2);
    assert_string_not_equal(add_one.sha1, "");
    /* The first call loaded it (EVALSHA -> NOSCRIPT -> EVAL). */
    redisReply *r = redis_server_cmd(&f->srv, "SCRIPT EXISTS %s", add_one.sha1);
    assert_non_null(r);
    assert_int_equal(r->element[0]->integer, 1);
    freeReplyObject(r);
    r = redis_server_cmd(&f->srv, "SCRIPT FLUSH");
    assert_non_null(r);
    freeReplyObject(r);
    got_t g = eval_add(f, "9");
    assert_int_equal(g.status, 0);
    assert_int_equal(g.ints[0], 10);
    r = redis_server_cmd(&f->srv, "SCRIPT EXISTS %s", add_one.sha1);
    assert_int_equal(r->element[0]->integer, 1); /* loaded again by EVAL */
    freeReplyObject(r);
    assert_int_equal(kv_errors(f->kv), 0);
    fx_end(f);
}

static void test_wrong_shapes_and_script_errors(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    static kv_script_t text = {.source = "return 'text'"};
    static kv_script_t mixed = {.source = "return {1, 'two'}"};
    static kv_script_t many = {.source = "local t = {} for i = 1, 2049 do t[i] = i end return t"};
    static kv_script_t broken = {.source = "return redis.call('NOSUCHCOMMAND')"};
    kv_script_t *scripts[] = {&text, &mixed, &many, &broken};
    int want[] = {FE_PARSE, FE_PARSE, FE_PARSE, FE_IO};
    for (size_t i = 0; i < 4; i++) {
        got_t g = {0};
        assert_non_null(kv_eval(f->kv, scripts[i], 0, NULL, NULL, 0, 0, on_done, &g));
        assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
        assert_int_equal(g.status, want[i]);
        assert_int_equal(g.n, 0);
    }
    assert_int_equal(kv_errors(f->kv), 4);
    assert_true(kv_connected(f->kv)); /* errors of a call are not errors of the connection */
    assert_int_equal(eval_add(f, "1").status, 0);
    /* Bad arguments: refused at once. */
    const char *args[] = {"a"};
    size_t lens[] = {1};
    got_t g = {0};
    assert_null(kv_eval(f->kv, &add_one, 2, args, lens, 1, 0, on_done, &g)); /* nkeys > nargs */
    assert_null(kv_eval(f->kv, &add_one, 0, NULL, NULL, KV_MAX_ARGS + 1, 0, on_done, &g));
    fx_end(f);
}

static void test_long_integer_array(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    static kv_script_t most = {.source = "local t = {} for i = 1, 2048 do t[i] = i end return t"};
    static kv_script_t few = {.source = "return {7, 8, 9}"};
    _Static_assert(KV_MAX_INTS == 2048, "the script answers KV_MAX_INTS integers");
    got_t g = {0};
    assert_non_null(kv_eval(f->kv, &most, 0, NULL, NULL, 0, 0, on_done, &g));
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    assert_int_equal(g.status, 0);
    assert_int_equal(g.n, KV_MAX_INTS);
    assert_true(g.counting);
    memset(&g, 0, sizeof g);
    assert_non_null(kv_eval(f->kv, &few, 0, NULL, NULL, 0, 0, on_done, &g));
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    assert_int_equal(g.n, 3);
    assert_int_equal(g.ints[2], 9);
    assert_int_equal(kv_errors(f->kv), 0);
    fx_end(f);
}

static void test_timeout_then_late_reply_ignored(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    pause_redis(&f->srv, 600);
    got_t slow = {0};
    assert_non_null(send_add(f, "1", 100, &slow));
    assert_true(redis_test_run_until(&f->loop, got_one, &slow, WAIT_MS));
    assert_int_equal(slow.status, FE_AGAIN);
    assert_int_equal(kv_errors(f->kv), 1);
    /* After the pause: the late reply comes and is dropped, the next call works. */
    got_t g = eval_add(f, "5");
    assert_int_equal(g.status, 0);
    assert_int_equal(g.ints[0], 6);
    assert_int_equal(slow.calls, 1);
    assert_true(kv_connected(f->kv));
    fx_end(f);
}

static void test_cancel(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    got_t cancelled = {0};
    kv_call_t *c = send_add(f, "1", 0, &cancelled);
    assert_non_null(c);
    kv_cancel(c);
    got_t g = eval_add(f, "2"); /* answered after the cancelled one */
    assert_int_equal(g.status, 0);
    assert_int_equal(cancelled.calls, 0);
    /* Cancelled while redis is paused: no callback at the deadline either. */
    pause_redis(&f->srv, 300);
    c = send_add(f, "1", 50, &cancelled);
    kv_cancel(c);
    redis_test_run_for(&f->loop, 150);
    assert_int_equal(cancelled.calls, 0);
    assert_int_equal(eval_add(f, "3").status, 0);
    assert_int_equal(cancelled.calls, 0);
    assert_int_equal(kv_errors(f->kv), 0);
    fx_end(f);
}

/* Many deadlines, some cancelled out of the middle: each call ends at its
 * own deadline, never before, in deadline order. */
typedef struct timed {
    uv_loop_t *loop;
    uint64_t deadline_ms, ended_ms;
    int index, status, calls, *order, *next;
} timed_t;

static void on_timed(void *ctx, int status, const long long *ints, size_t n)
{
    timed_t *t = ctx;
    t->calls++;
    t->status = status;
    t->ended_ms = uv_now(t->loop);
    t->order[(*t->next)++] = t->index;
}

static void test_deadlines_in_order(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    pause_redis(&f->srv, 1000);
    enum { N = 60 };
    static timed_t t[N];
    int order[N], next = 0;
    uint64_t rng = 12345;
    const char *args[] = {"k", "1"};
    size_t lens[] = {1, 1};
    kv_call_t *calls[N];
    for (int i = 0; i < N; i++) {
        uint64_t timeout = 20 + rand_next(&rng) % 280;
        t[i] = (timed_t){.loop = &f->loop, .index = i, .order = order, .next = &next};
        t[i].deadline_ms = uv_now(&f->loop) + timeout;
        calls[i] = kv_eval(f->kv, &add_one, 1, args, lens, 2, timeout, on_timed, &t[i]);
        assert_non_null(calls[i]);
    }
    for (int i = 0; i < N; i += 7)
        kv_cancel(calls[i]);
    redis_test_run_for(&f->loop, 400);
    uint64_t last = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(t[i].calls, i % 7 == 0 ? 0 : 1);
        if (i % 7 == 0)
            continue;
        assert_int_equal(t[i].status, FE_AGAIN);
        assert_true(t[i].ended_ms >= t[i].deadline_ms);
    }
    assert_int_equal(next, N - (N + 6) / 7);
    for (int k = 0; k < next; k++) { /* ended in deadline order */
        assert_true(t[order[k]].deadline_ms >= last);
        last = t[order[k]].deadline_ms;
    }
    fx_end(f);
}

static void test_close_with_calls_pending(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    pause_redis(&f->srv, 1000); /* long enough for a slow machine */
    got_t g[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_non_null(send_add(f, "1", 0, &g[i]));
    redis_test_run_for(&f->loop, 20); /* sent, waiting */
    kv_close(f->kv);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].status, FE_IO);
    }
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(g[i].calls, 1);
}

/* Callbacks that close the kv from inside a reply. */
typedef struct closer {
    kv_t *kv;
    int calls;
    int status[2];
} closer_t;

static void on_done_close(void *ctx, int status, const long long *ints, size_t n)
{
    closer_t *c = ctx;
    if (c->calls < 2)
        c->status[c->calls] = status;
    c->calls++;
    kv_close(c->kv);
}

static void test_close_from_a_callback(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    closer_t c = {.kv = f->kv};
    const char *args[] = {"k", "1"};
    size_t lens[] = {1, 1};
    assert_non_null(kv_eval(f->kv, &add_one, 1, args, lens, 2, 0, on_done_close, &c));
    assert_non_null(kv_eval(f->kv, &add_one, 1, args, lens, 2, 0, on_done_close, &c));
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.status[0], 0);
    assert_true(c.status[1] == 0 || c.status[1] == FE_IO); /* closed while pending: an error */
}

static void test_bound_on_calls_in_flight(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    pause_redis(&f->srv, 200);
    static got_t g[KV_MAX_INFLIGHT];
    memset(g, 0, sizeof g);
    for (int i = 0; i < KV_MAX_INFLIGHT; i++)
        assert_non_null(send_add(f, "1", 0, &g[i]));
    got_t over = {0};
    assert_null(send_add(f, "1", 0, &over));
    assert_int_equal(kv_errors(f->kv), 1);
    assert_true(redis_test_run_until(&f->loop, got_one, &g[KV_MAX_INFLIGHT - 1], WAIT_MS));
    for (int i = 0; i < KV_MAX_INFLIGHT; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].status, 0);
    }
    assert_int_equal(eval_add(f, "1").status, 0); /* room again */
    fx_end(f);
}

/* Argument bytes: one call's and all calls' in flight are bounded. */
static void test_bound_on_bytes_in_flight(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    static char big[KV_MAX_ARG_BYTES];
    memset(big, '7', sizeof big);
    const char *args[] = {"k", big};
    size_t lens[] = {1, KV_MAX_ARG_BYTES - 1};
    got_t g[KV_MAX_INFLIGHT_BYTES / KV_MAX_ARG_BYTES] = {{0}}, over = {0};
    pause_redis(&f->srv, 300);
    for (size_t i = 0; i < KV_MAX_INFLIGHT_BYTES / KV_MAX_ARG_BYTES; i++)
        assert_non_null(kv_eval(f->kv, &add_one, 1, args, lens, 2, 0, on_done, &g[i]));
    assert_null(kv_eval(f->kv, &add_one, 1, args, lens, 2, 0, on_done, &over));
    assert_int_equal(kv_errors(f->kv), 1);
    lens[1] = KV_MAX_ARG_BYTES; /* with the key: one byte too many for one call */
    assert_null(kv_eval(f->kv, &add_one, 1, args, lens, 2, 0, on_done, &over));
    size_t last = KV_MAX_INFLIGHT_BYTES / KV_MAX_ARG_BYTES - 1;
    assert_true(redis_test_run_until(&f->loop, got_one, &g[last], WAIT_MS));
    for (size_t i = 0; i <= last; i++)
        assert_int_equal(g[i].calls, 1);
    assert_int_equal(eval_add(f, "1").status, 0); /* room again */
    fx_end(f);
    assert_int_equal(over.calls, 0);
}

static void test_name_resolved(void **state)
{
    fx_t *f = *state;
    char address[64];
    snprintf(address, sizeof address, "localhost:%d", f->srv.port);
    fx_start(f, address);
    assert_int_equal(eval_add(f, "1").ints[0], 2);
    fx_end(f);
}

static void test_bad_addresses(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_null(kv_new(&loop, "no-port", &OPTS));
    assert_null(kv_new(&loop, "127.0.0.1:0", &OPTS));
    assert_null(kv_new(&loop, ":6379", &OPTS));
    kv_opts_t zero = {0};
    assert_null(kv_new(&loop, "127.0.0.1:6379", &zero));
    kv_close(NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct errors_wait {
    kv_t *kv;
    uint64_t want;
} errors_wait_t;

static bool errors_reached(void *arg)
{
    errors_wait_t *w = arg;
    return kv_errors(w->kv) >= w->want;
}

/* Killed mid-test: the call in flight fails, calls fail fast while it is
 * down, attempts are counted; restarted on the same port: kv comes back. */
static void test_redis_killed_and_restarted(void **state)
{
    fx_t f = {0};
    assert_true(redis_server_start(&f.srv));
    fx_start(&f, NULL);
    assert_int_equal(eval_add(&f, "1").status, 0);
    pause_redis(&f.srv, 2000);
    got_t lost = {0};
    assert_non_null(send_add(&f, "1", 3000, &lost));
    redis_test_run_for(&f.loop, 20);
    redis_server_stop(&f.srv);
    assert_true(redis_test_run_until(&f.loop, got_one, &lost, WAIT_MS));
    assert_int_equal(lost.status, FE_IO); /* the connection was reset, long before its deadline */
    assert_true(redis_test_run_until(&f.loop, is_down, f.kv, WAIT_MS));
    uint64_t before = kv_errors(f.kv);
    got_t g = {0};
    assert_null(send_add(&f, "1", 0, &g)); /* fails fast */
    assert_int_equal(kv_errors(f.kv), before + 1);
    /* Reconnection attempts are refused and counted, with backoff. */
    errors_wait_t w = {f.kv, before + 4};
    assert_true(redis_test_run_until(&f.loop, errors_reached, &w, WAIT_MS));
    assert_false(kv_connected(f.kv));
    assert_true(redis_server_start(&f.srv));
    assert_true(redis_test_run_until(&f.loop, is_up, f.kv, WAIT_MS));
    g = eval_add(&f, "7"); /* the script cache was lost with the restart: EVAL again */
    assert_int_equal(g.status, 0);
    assert_int_equal(g.ints[0], 8);
    assert_int_equal(g.calls, 1);
    fx_end(&f);
    redis_server_stop(&f.srv);
}

/* Keeps two calls in flight (100 ms deadlines) and records how they end. */
typedef struct pump {
    kv_t *kv;
    int timeouts, resets, oks;
} pump_t;

static void pump_send(pump_t *p);

static void on_pumped(void *ctx, int status, const long long *ints, size_t n)
{
    pump_t *p = ctx;
    p->timeouts += status == FE_AGAIN;
    p->resets += status == FE_IO;
    p->oks += status == 0;
    if (!p->resets)
        pump_send(p);
}

static void pump_send(pump_t *p)
{
    const char *args[] = {"k", "1"};
    size_t lens[] = {1, 1};
    kv_eval(p->kv, &add_one, 1, args, lens, 2, 100, on_pumped, p);
}

static bool pump_reset(void *arg) { return ((pump_t *)arg)->resets > 0; }

/* Redis holds every reply (CLIENT PAUSE) while calls keep timing out: after
 * KV_STALL_MIN_MS of silence the connection is dropped (the call still
 * waiting fails) and made again, and calls work once redis answers. */
static void test_silent_connection_is_replaced(void **state)
{
    fx_t *f = *state;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    kv_opts_t o = {.timeout_ms = 100, .backoff_min_ms = 20, .backoff_max_ms = 200};
    f->kv = kv_new(&f->loop, f->srv.address, &o);
    assert_true(redis_test_run_until(&f->loop, is_up, f->kv, WAIT_MS));
    pause_redis(&f->srv, KV_STALL_MIN_MS + 700);
    pump_t p = {.kv = f->kv};
    pump_send(&p);
    pump_send(&p);
    assert_true(redis_test_run_until(&f->loop, pump_reset, &p, WAIT_MS));
    assert_true(p.timeouts >= KV_STALL_MIN_MS / 100 - 1); /* not before the silence lasted */
    assert_int_equal(p.oks, 0);
    assert_int_equal(kv_errors(f->kv), (uint64_t)(p.timeouts + p.resets + 1)); /* + the drop */
    assert_true(redis_test_run_until(&f->loop, is_up, f->kv, WAIT_MS));
    got_t g = {0};
    assert_non_null(send_add(f, "1", 3000, &g)); /* waits out the pause */
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    assert_int_equal(g.status, 0);
    fx_end(f);
}

/* Nothing listens there: never connected, calls refused, attempts counted. */
static void test_never_up(void **state)
{
    uv_loop_t loop;
    char address[32];
    snprintf(address, sizeof address, "127.0.0.1:%d", redis_server_free_port());
    assert_int_equal(uv_loop_init(&loop), 0);
    kv_t *kv = kv_new(&loop, address, &OPTS);
    assert_non_null(kv);
    assert_false(kv_connected(kv));
    got_t g = {0};
    assert_null(kv_eval(kv, &add_one, 0, NULL, NULL, 0, 0, on_done, &g));
    errors_wait_t w = {kv, 3};
    assert_true(redis_test_run_until(&loop, errors_reached, &w, WAIT_MS));
    assert_false(kv_connected(kv));
    assert_int_equal(g.calls, 0);
    kv_close(kv);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* What a kv_eval_bulk call ended with (the string copied). */
typedef struct got_bulk {
    int calls;
    int status;
    bool is_string;
    char *s;
    size_t len;
    long long i;
} got_bulk_t;

static void on_bulk(void *ctx, int status, const char *s, size_t len, long long i)
{
    got_bulk_t *g = ctx;
    g->calls++;
    g->status = status;
    g->is_string = s != NULL;
    g->len = len;
    g->i = i;
    free(g->s);
    g->s = NULL;
    if (s) {
        g->s = malloc(len ? len : 1);
        assert_non_null(g->s);
        memcpy(g->s, s, len);
    }
}

static bool got_bulk_one(void *arg) { return ((got_bulk_t *)arg)->calls > 0; }

/* Runs script(args...) as a bulk call and waits for its end. */
static got_bulk_t eval_bulk(fx_t *f, kv_script_t *script, const char *const *args,
                            const size_t *lens, size_t nargs)
{
    got_bulk_t g = {0};
    assert_non_null(kv_eval_bulk(f->kv, script, 0, args, lens, nargs, 0, on_bulk, &g));
    assert_int_equal(g.calls, 0); /* never from inside kv_eval_bulk */
    assert_true(redis_test_run_until(&f->loop, got_bulk_one, &g, WAIT_MS));
    assert_int_equal(g.calls, 1);
    return g;
}

static kv_script_t echo = {.source = "return ARGV[1]"};

static void test_bulk_strings_nil_and_integers(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    /* Binary bytes come back as they went: NUL, 0xff, CR LF. */
    static const char bin[] = {'a', '\0', (char)0xff, '\r', '\n', 'z'};
    const char *args[] = {bin};
    size_t lens[] = {sizeof bin};
    got_bulk_t g = eval_bulk(f, &echo, args, lens, 1);
    assert_int_equal(g.status, 0);
    assert_true(g.is_string);
    assert_int_equal(g.len, sizeof bin);
    assert_memory_equal(g.s, bin, sizeof bin);
    free(g.s);
    /* An empty string is a string, not nil. */
    lens[0] = 0;
    g = eval_bulk(f, &echo, args, lens, 1);
    assert_int_equal(g.status, 0);
    assert_true(g.is_string);
    assert_int_equal(g.len, 0);
    free(g.s);
    /* Nil: no string, 0. */
    static kv_script_t missing = {.source = "return redis.call('GET', 'ficus:test:missing')"};
    g = eval_bulk(f, &missing, NULL, NULL, 0);
    assert_int_equal(g.status, 0);
    assert_false(g.is_string);
    assert_int_equal(g.i, 0);
    /* An integer: no string, its value. */
    static kv_script_t minus = {.source = "return -42"};
    g = eval_bulk(f, &minus, NULL, NULL, 0);
    assert_int_equal(g.status, 0);
    assert_false(g.is_string);
    assert_int_equal(g.i, -42);
    /* Other shapes: FE_PARSE; a script error: FE_IO; both counted. */
    static kv_script_t array = {.source = "return {'a', 'b'}"};
    static kv_script_t status = {.source = "return redis.status_reply('OK')"};
    static kv_script_t broken = {.source = "return redis.call('NOSUCHCOMMAND')"};
    assert_int_equal(eval_bulk(f, &array, NULL, NULL, 0).status, FE_PARSE);
    assert_int_equal(eval_bulk(f, &status, NULL, NULL, 0).status, FE_PARSE);
    g = eval_bulk(f, &broken, NULL, NULL, 0);
    assert_int_equal(g.status, FE_IO);
    assert_false(g.is_string);
    assert_int_equal(kv_errors(f->kv), 3);
    assert_true(kv_connected(f->kv));
    /* kv_eval's integer calls are unchanged beside them. */
    assert_int_equal(eval_add(f, "1").ints[0], 2);
    fx_end(f);
}

/* A reply of KV_MAX_BULK_BYTES is handed over; one byte more is FE_PARSE.
 * The arguments of a bulk call may reach KV_MAX_BULK_BYTES together (a
 * value to store), kv_eval's stay at KV_MAX_ARG_BYTES. */
static void test_bulk_bounds(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    static kv_script_t rep = {.source = "return string.rep('x', tonumber(ARGV[1]))"};
    char n[24];
    snprintf(n, sizeof n, "%d", KV_MAX_BULK_BYTES);
    const char *args[] = {n};
    size_t lens[] = {strlen(n)};
    got_bulk_t g = eval_bulk(f, &rep, args, lens, 1);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.len, KV_MAX_BULK_BYTES);
    assert_true(g.s[0] == 'x' && g.s[g.len - 1] == 'x');
    free(g.s);
    snprintf(n, sizeof n, "%d", KV_MAX_BULK_BYTES + 1);
    lens[0] = strlen(n);
    g = eval_bulk(f, &rep, args, lens, 1);
    assert_int_equal(g.status, FE_PARSE);
    assert_false(g.is_string);
    assert_int_equal(kv_errors(f->kv), 1);
    /* Arguments: a value at the bound goes through and comes back whole. */
    char *big = malloc(KV_MAX_BULK_BYTES + 1);
    assert_non_null(big);
    for (size_t i = 0; i <= KV_MAX_BULK_BYTES; i++)
        big[i] = (char)(i * 7);
    const char *bargs[] = {big};
    size_t blens[] = {KV_MAX_BULK_BYTES};
    g = eval_bulk(f, &echo, bargs, blens, 1);
    assert_int_equal(g.status, 0);
    assert_int_equal(g.len, KV_MAX_BULK_BYTES);
    assert_memory_equal(g.s, big, KV_MAX_BULK_BYTES);
    free(g.s);
    got_bulk_t none = {0};
    blens[0] = KV_MAX_BULK_BYTES + 1;
    assert_null(kv_eval_bulk(f->kv, &echo, 0, bargs, blens, 1, 0, on_bulk, &none));
    got_t ints = {0};
    blens[0] = KV_MAX_ARG_BYTES + 1;
    assert_null(kv_eval(f->kv, &add_one, 0, bargs, blens, 1, 0, on_done, &ints));
    free(big);
    assert_int_equal(kv_errors(f->kv), 1); /* bad arguments are not redis errors */
    fx_end(f);
    assert_int_equal(none.calls + ints.calls, 0);
}

/* A bulk call's deadline and cancel follow kv_eval's: FE_AGAIN at the
 * deadline with the late reply dropped; no callback after a cancel. */
static void test_bulk_deadline_and_cancel(void **state)
{
    fx_t *f = *state;
    fx_start(f, NULL);
    const char *args[] = {"v"};
    size_t lens[] = {1};
    pause_redis(&f->srv, 400);
    got_bulk_t slow = {0}, cancelled = {0};
    assert_non_null(kv_eval_bulk(f->kv, &echo, 0, args, lens, 1, 100, on_bulk, &slow));
    kv_call_t *c = kv_eval_bulk(f->kv, &echo, 0, args, lens, 1, 0, on_bulk, &cancelled);
    assert_non_null(c);
    kv_cancel(c);
    assert_true(redis_test_run_until(&f->loop, got_bulk_one, &slow, WAIT_MS));
    assert_int_equal(slow.status, FE_AGAIN);
    assert_false(slow.is_string);
    got_bulk_t g = eval_bulk(f, &echo, args, lens, 1); /* after the pause */
    assert_int_equal(g.status, 0);
    assert_int_equal(g.len, 1);
    free(g.s);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(cancelled.calls, 0);
    assert_int_equal(kv_errors(f->kv), 1);
    fx_end(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_array_and_integer),
        cmocka_unit_test(test_noscript_falls_back_to_eval),
        cmocka_unit_test(test_wrong_shapes_and_script_errors),
        cmocka_unit_test(test_long_integer_array),
        cmocka_unit_test(test_timeout_then_late_reply_ignored),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_deadlines_in_order),
        cmocka_unit_test(test_close_with_calls_pending),
        cmocka_unit_test(test_close_from_a_callback),
        cmocka_unit_test(test_bound_on_calls_in_flight),
        cmocka_unit_test(test_bound_on_bytes_in_flight),
        cmocka_unit_test(test_name_resolved),
        cmocka_unit_test(test_silent_connection_is_replaced),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_redis_killed_and_restarted),
        cmocka_unit_test(test_never_up),
        cmocka_unit_test(test_bulk_strings_nil_and_integers),
        cmocka_unit_test(test_bulk_bounds),
        cmocka_unit_test(test_bulk_deadline_and_cancel),
    };
    return cmocka_run_group_tests(tests, setup, redis_server_group_teardown);
}
