/* policy/fleet against a real redis-server on 127.0.0.1, with two members on
 * one loop standing for two instances: a throttle's total across both,
 * release, a member that dies without releasing (closed: as kill -9) stops
 * counting once its lease ran out, a count left wrong in redis (or by an
 * acquire whose reply came too late, or lost with all of redis's data) is
 * healed by the heartbeat, cancel
 * releases what redis allowed, a token bucket shared by both with DENY's
 * retry_after, calls refused while redis is unreachable, and a member that
 * finds its count again after redis restarted empty. Every test
 * ends with the loop closed and no handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "client/redis_server.h"
#include "core/errors.h"
#include "policy/fleet.h"

#define WAIT_MS 5000 /* the longest any step may take before the test fails */
#define LEASE_MS 600

typedef struct got {
    int calls;
    fleet_verdict_t v;
    uint64_t retry_after_ms;
} got_t;

static void on_done(void *ctx, fleet_verdict_t v, uint64_t retry_after_ms)
{
    got_t *g = ctx;
    g->calls++;
    g->v = v;
    g->retry_after_ms = retry_after_ms;
}

static bool got_one(void *arg) { return ((got_t *)arg)->calls > 0; }

typedef struct fx {
    redis_server_t srv;
    uv_loop_t loop;
    fleet_t *a, *b;
} fx_t;

/* Redis answers this member's scripts (its first heartbeat went through). */
static bool member_live(void *arg)
{
    const char **m = arg;
    const redis_server_t *srv = (const redis_server_t *)m[1];
    redisReply *r = redis_server_cmd(srv, "ZSCORE ficus:members %s", m[0]);
    bool ok = r && r->type == REDIS_REPLY_STRING;
    if (r)
        freeReplyObject(r);
    return ok;
}

static fleet_t *member_new(fx_t *f, const char *name)
{
    fleet_opts_t o = {.address = f->srv.address, .member = name, .lease_ms = LEASE_MS};
    fleet_t *m = fleet_new(&f->loop, &o);
    assert_non_null(m);
    const void *arg[] = {name, &f->srv};
    assert_true(redis_test_run_until(&f->loop, member_live, arg, WAIT_MS));
    return m;
}

static int setup(void **state) { return redis_server_group_setup(state, sizeof(fx_t)); }

static int start(void **state)
{
    fx_t *f = *state;
    if (redis_test_begin(&f->srv, &f->loop) != 0)
        return -1;
    f->a = member_new(f, "host-a:1:1:0");
    f->b = member_new(f, "host-b:2:1:0");
    return 0;
}

/* Closes what is left; the loop must end empty. */
static int end(void **state)
{
    fx_t *f = *state;
    fleet_close(f->a);
    fleet_close(f->b);
    redis_test_finish(&f->loop);
    return 0;
}

static fleet_verdict_t acquire(fx_t *f, fleet_t *m, const char *client, uint32_t max)
{
    got_t g = {0};
    assert_non_null(fleet_throttle_acquire(m, client, max, 0, on_done, &g));
    assert_int_equal(g.calls, 0);
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    return g.v;
}

static got_t take(fx_t *f, fleet_t *m, const char *key, double rate, double burst)
{
    got_t g = {0};
    assert_non_null(fleet_rate_take(m, key, rate, burst, 0, on_done, &g));
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    return g;
}

/* This member's count in the client's hash; -1 when it has none. */
static long long field(const fx_t *f, const char *client, const char *member)
{
    redisReply *r = redis_server_cmd(&f->srv, "HGET ficus:throttle:%s %s", client, member);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    freeReplyObject(r);
    return v;
}

typedef struct field_wait {
    const fx_t *f;
    const char *client, *member;
    long long want;
} field_wait_t;

static bool field_is(void *arg)
{
    field_wait_t *w = arg;
    return field(w->f, w->client, w->member) == w->want;
}

static void test_throttle_total_across_members(void **state)
{
    fx_t *f = *state;
    assert_int_equal(acquire(f, f->a, "ios", 3), FLEET_ALLOW);
    assert_int_equal(acquire(f, f->a, "ios", 3), FLEET_ALLOW);
    assert_int_equal(acquire(f, f->b, "ios", 3), FLEET_ALLOW);
    assert_int_equal(acquire(f, f->b, "ios", 3), FLEET_DENY); /* 3 in flight across both */
    assert_int_equal(acquire(f, f->a, "ios", 3), FLEET_DENY);
    assert_int_equal(acquire(f, f->a, "web", 1), FLEET_ALLOW); /* clients count apart */
    assert_int_equal(field(f, "ios", "host-a:1:1:0"), 2);
    assert_int_equal(field(f, "ios", "host-b:2:1:0"), 1);
    fleet_throttle_release(f->a, "ios");
    field_wait_t w = {f, "ios", "host-a:1:1:0", 1};
    assert_true(redis_test_run_until(&f->loop, field_is, &w, WAIT_MS));
    assert_int_equal(acquire(f, f->b, "ios", 3), FLEET_ALLOW);
    assert_int_equal(acquire(f, f->b, "ios", 3), FLEET_DENY);
    /* Releasing what a member does not hold changes nothing. */
    fleet_throttle_release(f->a, "nobody");
    fleet_throttle_release(f->b, "web");
    /* Heartbeats keep the counts as they are. */
    redis_test_run_for(&f->loop, LEASE_MS);
    assert_int_equal(field(f, "ios", "host-a:1:1:0"), 1);
    assert_int_equal(field(f, "ios", "host-b:2:1:0"), 2);
    assert_int_equal(field(f, "web", "host-a:1:1:0"), 1);
    /* Everything released: nothing left in redis after a heartbeat. */
    fleet_throttle_release(f->a, "ios");
    fleet_throttle_release(f->b, "ios");
    fleet_throttle_release(f->b, "ios");
    fleet_throttle_release(f->a, "web");
    redis_test_run_for(&f->loop, LEASE_MS / 2);
    assert_int_equal(redis_server_int(&f->srv, "EXISTS ficus:throttle:ios"), 0);
    assert_int_equal(redis_server_int(&f->srv, "EXISTS ficus:throttle:web"), 0);
    assert_int_equal(fleet_errors(f->a), 0);
    assert_int_equal(fleet_errors(f->b), 0);
}

/* B dies holding two (closed without releasing, as kill -9 would): A is
 * still denied within B's lease, allowed once it ran out. */
static void test_dead_member_stops_counting_after_its_lease(void **state)
{
    fx_t *f = *state;
    assert_int_equal(acquire(f, f->b, "ios", 2), FLEET_ALLOW);
    assert_int_equal(acquire(f, f->b, "ios", 2), FLEET_ALLOW);
    assert_int_equal(acquire(f, f->a, "ios", 2), FLEET_DENY);
    fleet_close(f->b);
    f->b = NULL;
    assert_int_equal(acquire(f, f->a, "ios", 2), FLEET_DENY);
    redis_test_run_for(&f->loop, LEASE_MS + 100); /* its last heartbeat was before the close */
    assert_int_equal(acquire(f, f->a, "ios", 2), FLEET_ALLOW);
    assert_int_equal(field(f, "ios", "host-b:2:1:0"), -1); /* its field was cleaned */
    assert_int_equal(acquire(f, f->a, "ios", 2), FLEET_ALLOW);
    assert_int_equal(acquire(f, f->a, "ios", 2), FLEET_DENY);
}

/* A count redis holds wrongly (a lost reply, a bug) is re-written by the
 * member's next heartbeat. */
static void test_heartbeat_heals_a_wrong_count(void **state)
{
    fx_t *f = *state;
    assert_int_equal(acquire(f, f->a, "ios", 5), FLEET_ALLOW);
    assert_int_equal(redis_server_int(&f->srv, "HSET ficus:throttle:ios host-a:1:1:0 5"), 0);
    assert_int_equal(acquire(f, f->b, "ios", 5), FLEET_DENY); /* 5 (wrong) + 1 > 5 */
    field_wait_t w = {f, "ios", "host-a:1:1:0", 1};
    assert_true(redis_test_run_until(&f->loop, field_is, &w, WAIT_MS));
    assert_int_equal(acquire(f, f->b, "ios", 5), FLEET_ALLOW);
    fleet_throttle_release(f->b, "ios");
    w = (field_wait_t){f, "ios", "host-b:2:1:0", -1};
    assert_true(redis_test_run_until(&f->loop, field_is, &w, WAIT_MS));
}

typedef struct all_fields {
    const fx_t *f;
    int n;
} all_fields_t;

/* Every client c0..c(n-1) has A's count 1 in redis. */
static bool all_fields_one(void *arg)
{
    all_fields_t *w = arg;
    for (int i = 0; i < w->n; i++) {
        char client[16];
        snprintf(client, sizeof client, "c%d", i);
        if (field(w->f, client, "host-a:1:1:0") != 1)
            return false;
    }
    return true;
}

/* Redis lost everything (a restart without persistence): the heartbeat
 * brings back the lease and every count, more clients than one call takes. */
static void test_heartbeat_rewrites_after_data_loss(void **state)
{
    fx_t *f = *state;
    int n = FLEET_HEARTBEAT_CHUNK * 2 + 5;
    for (int i = 0; i < n; i++) {
        char client[16];
        snprintf(client, sizeof client, "c%d", i);
        assert_int_equal(acquire(f, f->a, client, 1), FLEET_ALLOW);
    }
    redisReply *r = redis_server_cmd(&f->srv, "FLUSHALL");
    freeReplyObject(r);
    all_fields_t w = {f, n};
    assert_true(redis_test_run_until(&f->loop, all_fields_one, &w, WAIT_MS));
    assert_int_equal(acquire(f, f->b, "c0", 1), FLEET_DENY);
    assert_true(redis_server_int(&f->srv, "PTTL ficus:members") > 0);
    assert_true(redis_server_int(&f->srv, "PTTL ficus:throttle:c7") > 0);
}

/* An acquire whose reply came after its deadline: the caller got
 * FLEET_ERROR (nothing to release) though redis counted it; the heartbeat
 * takes it back. */
static void test_late_acquire_does_not_leak(void **state)
{
    fx_t *f = *state;
    redisReply *r = redis_server_cmd(&f->srv, "CLIENT PAUSE 300 ALL");
    freeReplyObject(r);
    got_t g = {0};
    assert_non_null(fleet_throttle_acquire(f->a, "ios", 5, 50, on_done, &g));
    assert_true(redis_test_run_until(&f->loop, got_one, &g, WAIT_MS));
    assert_int_equal(g.v, FLEET_ERROR);
    assert_true(fleet_errors(f->a) >= 1);
    field_wait_t w = {f, "ios", "host-a:1:1:0", 1}; /* redis ran it after the pause */
    assert_true(redis_test_run_until(&f->loop, field_is, &w, WAIT_MS));
    w.want = -1;
    assert_true(redis_test_run_until(&f->loop, field_is, &w, WAIT_MS));
}

/* Cancelled: no callback, and what redis allowed is released. */
static void test_cancel_releases_an_allow(void **state)
{
    fx_t *f = *state;
    got_t g = {0};
    fleet_op_t *op = fleet_throttle_acquire(f->a, "ios", 5, 0, on_done, &g);
    assert_non_null(op);
    fleet_cancel(op);
    assert_int_equal(acquire(f, f->a, "ios", 5), FLEET_ALLOW); /* answered after it */
    assert_int_equal(g.calls, 0);
    field_wait_t w = {f, "ios", "host-a:1:1:0", 1};
    assert_true(redis_test_run_until(&f->loop, field_is, &w, WAIT_MS));
    redis_test_run_for(&f->loop, LEASE_MS / 2);
    assert_int_equal(field(f, "ios", "host-a:1:1:0"), 1);
    assert_int_equal(g.calls, 0);
    got_t r = {0};
    op = fleet_rate_take(f->a, "k", 10, 10, 0, on_done, &r);
    fleet_cancel(op);
    redis_test_run_for(&f->loop, 50);
    assert_int_equal(r.calls, 0);
}

static void test_rate_bucket_across_members(void **state)
{
    fx_t *f = *state;
    /* 1 token a second, a bucket of 3: three pass, whoever asks. */
    assert_int_equal(take(f, f->a, "route:x", 1, 3).v, FLEET_ALLOW);
    assert_int_equal(take(f, f->b, "route:x", 1, 3).v, FLEET_ALLOW);
    assert_int_equal(take(f, f->a, "route:x", 1, 3).v, FLEET_ALLOW);
    got_t g = take(f, f->b, "route:x", 1, 3);
    assert_int_equal(g.v, FLEET_DENY);
    assert_true(g.retry_after_ms > 0 && g.retry_after_ms <= 1000);
    assert_int_equal(take(f, f->a, "route:y", 1, 3).v, FLEET_ALLOW); /* keys count apart */
    /* A token comes back after retry_after. */
    redis_test_run_for(&f->loop, g.retry_after_ms + 20);
    assert_int_equal(take(f, f->a, "route:x", 1, 3).v, FLEET_ALLOW);
    assert_int_equal(take(f, f->b, "route:x", 1, 3).v, FLEET_DENY);
    /* The bucket expires from redis once it would be full again. */
    long long ttl = redis_server_int(&f->srv, "PTTL ficus:rate:route:x");
    assert_true(ttl > 0 && ttl <= 3000 + 1000);
    /* Bad arguments: refused. */
    got_t none = {0};
    assert_null(fleet_rate_take(f->a, "k", 0, 3, 0, on_done, &none));
    assert_null(fleet_rate_take(f->a, "k", 1, 0.5, 0, on_done, &none));
    assert_null(fleet_rate_take(f->a, "", 1, 3, 0, on_done, &none));
    assert_null(fleet_throttle_acquire(f->a, "", 1, 0, on_done, &none));
    assert_int_equal(fleet_errors(f->a), 0);
}

/* Closed with operations in flight: they end with FLEET_ERROR at once. */
static void test_close_with_operations_pending(void **state)
{
    fx_t *f = *state;
    redisReply *r = redis_server_cmd(&f->srv, "CLIENT PAUSE 200 ALL");
    freeReplyObject(r);
    got_t g1 = {0}, g2 = {0};
    assert_non_null(fleet_throttle_acquire(f->a, "ios", 5, 0, on_done, &g1));
    assert_non_null(fleet_rate_take(f->a, "k", 1, 1, 0, on_done, &g2));
    fleet_close(f->a);
    f->a = NULL;
    assert_int_equal(g1.calls, 1);
    assert_int_equal(g1.v, FLEET_ERROR);
    assert_int_equal(g2.calls, 1);
    assert_int_equal(g2.v, FLEET_ERROR);
}

/* One acquire of "ios" (max 2) by A: did redis allow it? */
static bool acquire_allowed(void *arg)
{
    fx_t *f = arg;
    got_t g = {0};
    if (!fleet_throttle_acquire(f->a, "ios", 2, 0, on_done, &g))
        return false;
    return redis_test_run_until(&f->loop, got_one, &g, WAIT_MS) && g.v == FLEET_ALLOW;
}

/* Redis killed and restarted empty: asking fails fast while it is down (and
 * is counted), then the member reconnects, its heartbeat puts its count
 * back, and the throttle counts from there. */
static void test_redis_restarted(void **state)
{
    fx_t f = {0};
    assert_true(redis_server_start(&f.srv));
    assert_int_equal(uv_loop_init(&f.loop), 0);
    f.a = member_new(&f, "host-a:1:1:0");
    assert_int_equal(acquire(&f, f.a, "ios", 2), FLEET_ALLOW);
    redis_server_stop(&f.srv);
    redis_test_run_for(&f.loop, 100); /* the connection's end is seen */
    uint64_t before = fleet_errors(f.a);
    got_t g = {0};
    assert_null(fleet_throttle_acquire(f.a, "ios", 2, 0, on_done, &g));
    assert_null(fleet_rate_take(f.a, "k", 1, 1, 0, on_done, &g));
    assert_true(fleet_errors(f.a) >= before + 2);
    assert_true(redis_server_start(&f.srv));
    const void *arg[] = {"host-a:1:1:0", &f.srv};
    assert_true(redis_test_run_until(&f.loop, member_live, arg, WAIT_MS));
    field_wait_t w = {&f, "ios", "host-a:1:1:0", 1};
    assert_true(redis_test_run_until(&f.loop, field_is, &w, WAIT_MS));
    assert_true(redis_test_run_until(&f.loop, acquire_allowed, &f, WAIT_MS)); /* 1 + 1 <= 2 */
    assert_int_equal(acquire(&f, f.a, "ios", 2), FLEET_DENY);
    assert_int_equal(g.calls, 0);
    fx_t *fp = &f;
    end((void **)&fp);
    redis_server_stop(&f.srv);
}

/* No redis there: nothing can be asked, and it is counted. */
static void test_unreachable(void **state)
{
    uv_loop_t loop;
    char address[32];
    snprintf(address, sizeof address, "127.0.0.1:%d", redis_server_free_port());
    assert_int_equal(uv_loop_init(&loop), 0);
    fleet_opts_t o = {.address = address, .member = "m", .lease_ms = LEASE_MS};
    fleet_t *m = fleet_new(&loop, &o);
    assert_non_null(m);
    got_t g = {0};
    assert_null(fleet_throttle_acquire(m, "ios", 1, 0, on_done, &g));
    assert_null(fleet_rate_take(m, "k", 1, 1, 0, on_done, &g));
    assert_int_equal(fleet_errors(m), 2);
    redis_test_run_for(&loop, 300);
    assert_true(fleet_errors(m) > 2); /* connection attempts */
    assert_int_equal(g.calls, 0);
    fleet_close(m);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    o.member = "";
    assert_null(fleet_new(&loop, &o));
    o = (fleet_opts_t){.address = "nonsense", .member = "m"};
    assert_null(fleet_new(&loop, &o));
    fleet_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_throttle_total_across_members, start, end),
        cmocka_unit_test_setup_teardown(test_dead_member_stops_counting_after_its_lease, start,
                                        end),
        cmocka_unit_test_setup_teardown(test_heartbeat_heals_a_wrong_count, start, end),
        cmocka_unit_test_setup_teardown(test_heartbeat_rewrites_after_data_loss, start, end),
        cmocka_unit_test_setup_teardown(test_late_acquire_does_not_leak, start, end),
        cmocka_unit_test_setup_teardown(test_cancel_releases_an_allow, start, end),
        cmocka_unit_test_setup_teardown(test_rate_bucket_across_members, start, end),
        cmocka_unit_test_setup_teardown(test_close_with_operations_pending, start, end),
        cmocka_unit_test(test_redis_restarted),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, setup, redis_server_group_teardown);
}
