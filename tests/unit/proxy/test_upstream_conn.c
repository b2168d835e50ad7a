/* proxy/upstream_conn on a real loop: a group of one target served by a
 * listener on 127.0.0.1 in the same thread. Connecting and telling the owner,
 * bytes both ways, the pool (LIFO reuse, a close by the target noticed while
 * idle, a retired group not pooled), the max_connections breaker, a refused
 * connect; every test ends with no handle open and the breaker at zero. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <netinet/in.h>
#include <uv.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "proxy/upstream_conn.h"

typedef struct owner {
    int connected; /* calls */
    int status;
    char got[64];
    size_t got_len;
    int eofs;
} owner_t;

typedef struct server {
    uv_tcp_t listener;
    uv_tcp_t conn;
    int accepted;
    char buf[64];
    size_t len;
    const char *reply; /* written once a request came */
    bool close_after_reply;
} server_t;

typedef struct fixture {
    uv_loop_t loop;
    pbuf_pool_t pool;
    char *rbuf;
    upstream_env_t env;
    config_target_group_t tg;
    config_target_t target;
    health_target_t ht;
    health_group_t hg;
    health_addr_t addr;
    upstream_group_t g;
    int holds;
    server_t srv;
} fixture_t;

static void hold(void *ctx, int delta) { *(int *)ctx += delta; }

static void on_connected(void *o, int status)
{
    owner_t *w = o;
    w->connected++;
    w->status = status;
}
static void on_data(void *o, const char *data, size_t len)
{
    owner_t *w = o;
    memcpy(w->got + w->got_len, data, len);
    w->got_len += len;
}
static void on_eof(void *o, int status)
{
    (void)status;
    ((owner_t *)o)->eofs++;
}
static void on_drained(void *o, int status)
{
    (void)o;
    (void)status;
}
static const upstream_conn_ops_t ops = {on_connected, on_data, on_eof, on_drained};

static void srv_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)n;
    server_t *s = h->data;
    *b = uv_buf_init(s->buf + s->len, (unsigned)(sizeof s->buf - s->len));
}
static void srv_write_done(uv_write_t *w, int status)
{
    (void)status;
    server_t *s = w->data;
    if (s->close_after_reply && !uv_is_closing((uv_handle_t *)&s->conn))
        uv_close((uv_handle_t *)&s->conn, NULL);
    free(w);
}
static void srv_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    server_t *s = st->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)&s->conn))
            uv_close((uv_handle_t *)&s->conn, NULL);
        return;
    }
    s->len += (size_t)n;
    if (s->reply) {
        uv_write_t *w = malloc(sizeof *w);
        w->data = s;
        uv_buf_t r = uv_buf_init((char *)s->reply, (unsigned)strlen(s->reply));
        uv_write(w, st, &r, 1, srv_write_done);
    }
}
static void srv_accept(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    server_t *s = l->data;
    uv_tcp_init(l->loop, &s->conn);
    s->conn.data = s;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
    s->accepted++;
    uv_read_start((uv_stream_t *)&s->conn, srv_alloc, srv_read);
}

static fixture_t *setup_fixture(bool listening)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    pbuf_pool_init(&f->pool, IO_BUF_BYTES, 8);
    f->rbuf = malloc(IO_BUF_BYTES);
    f->env = (upstream_env_t){.loop = &f->loop, .pool = &f->pool, .rbuf = f->rbuf};
    f->target.name = "t";
    f->tg.name = "g";
    f->tg.targets = &f->target;
    f->tg.n_targets = 1;
    f->tg.max_connections = 4;
    f->tg.connect_timeout_ms = 2000;
    f->tg.keepalive_idle_timeout_ms = 60000;
    f->tg.keepalive_max_idle = 4;
    f->hg.cfg = &f->tg;
    f->hg.targets = &f->ht;
    f->hg.n = 1;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&f->loop, &f->srv.listener);
    f->srv.listener.data = &f->srv;
    assert_int_equal(uv_tcp_bind(&f->srv.listener, (struct sockaddr *)&sa, 0), 0);
    int len = sizeof f->addr.ss;
    uv_tcp_getsockname(&f->srv.listener, (struct sockaddr *)&f->addr.ss, &len);
    f->addr.len = (socklen_t)len;
    if (listening)
        assert_int_equal(uv_listen((uv_stream_t *)&f->srv.listener, 8, srv_accept), 0);
    else
        uv_close((uv_handle_t *)&f->srv.listener, NULL); /* the port refuses */
    atomic_store(&f->ht.addr, &f->addr);
    assert_int_equal(upstream_group_init(&f->g, &f->env, &f->tg, &f->hg, hold, &f->holds), 0);
    return f;
}

static void run_until(fixture_t *f, const int *flag, int want)
{
    for (int i = 0; i < 2000 && *flag < want; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(*flag >= want);
}

static void teardown_fixture(fixture_t *f)
{
    upstream_group_close_idle(&f->g);
    if (!uv_is_closing((uv_handle_t *)&f->srv.listener))
        uv_close((uv_handle_t *)&f->srv.listener, NULL);
    if (f->srv.accepted && !uv_is_closing((uv_handle_t *)&f->srv.conn))
        uv_close((uv_handle_t *)&f->srv.conn, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->holds, 0); /* every connection let its generation go */
    assert_int_equal(atomic_load(&f->hg.connections), 0);
    assert_int_equal(f->g.pools[0].n_open, 0);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle left */
    upstream_group_deinit(&f->g);
    pbuf_pool_deinit(&f->pool);
    free(f->rbuf);
    free(f);
}

static void test_connect_exchange_and_reuse(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture(true);
    f->srv.reply = "pong";
    owner_t o = {0};
    int err;
    upstream_conn_t *uc = upstream_conn_acquire(&f->g.pools[0], &ops, &o, &err);
    assert_non_null(uc);
    assert_int_equal(uc->reused, 0);
    assert_int_equal(f->holds, 1);
    assert_int_equal(atomic_load(&f->hg.connections), 1);
    run_until(f, &o.connected, 1);
    assert_int_equal(o.status, 0);
    uv_buf_t b = uv_buf_init("ping", 4);
    assert_true(upstream_conn_write(uc, &b, 1) >= 0);
    while (o.got_len < 4)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_memory_equal(o.got, "pong", 4);
    assert_memory_equal(f->srv.buf, "ping", 4);

    /* Back to the pool, then the same connection again (LIFO). */
    upstream_conn_release(uc, true);
    assert_int_equal(f->g.pools[0].n_idle, 1);
    owner_t o2 = {0};
    upstream_conn_t *again = upstream_conn_acquire(&f->g.pools[0], &ops, &o2, &err);
    assert_ptr_equal(again, uc);
    assert_int_equal(again->reused, 1);
    assert_int_equal(f->g.pools[0].n_idle, 0);
    assert_int_equal(f->srv.accepted, 1);
    /* Not reusable: closed, not pooled. */
    upstream_conn_release(again, false);
    assert_int_equal(f->g.pools[0].n_idle, 0);
    teardown_fixture(f);
}

static void test_close_by_target_while_idle(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture(true);
    f->srv.reply = "x";
    f->srv.close_after_reply = true;
    owner_t o = {0};
    int err;
    upstream_conn_t *uc = upstream_conn_acquire(&f->g.pools[0], &ops, &o, &err);
    run_until(f, &o.connected, 1);
    uv_buf_t b = uv_buf_init("q", 1);
    upstream_conn_write(uc, &b, 1);
    while (o.got_len < 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    upstream_conn_release(uc, true);
    assert_int_equal(f->g.pools[0].n_idle, 1);
    /* The target closes: the idle connection notices and goes. */
    for (int i = 0; i < 2000 && f->g.pools[0].n_open; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->g.pools[0].n_open, 0);
    assert_int_equal(f->g.pools[0].n_idle, 0);
    assert_int_equal(o.eofs, 0); /* nobody owned it */
    teardown_fixture(f);
}

static void test_refused_connect_tells_the_owner(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture(false);
    owner_t o = {0};
    int err;
    upstream_conn_t *uc = upstream_conn_acquire(&f->g.pools[0], &ops, &o, &err);
    assert_non_null(uc);
    run_until(f, &o.connected, 1);
    assert_true(o.status < 0);
    assert_int_equal(f->g.pools[0].n_open, 0);
    teardown_fixture(f);
}

static void test_max_connections_breaker(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture(true);
    f->tg.max_connections = 1;
    owner_t a = {0}, b = {0};
    int err;
    upstream_conn_t *ua = upstream_conn_acquire(&f->g.pools[0], &ops, &a, &err);
    assert_non_null(ua);
    assert_null(upstream_conn_acquire(&f->g.pools[0], &ops, &b, &err));
    assert_int_equal(err, FE_TOOBIG);
    run_until(f, &a.connected, 1);
    /* At the limit an idle connection would hold the slot: closed. */
    upstream_conn_release(ua, true);
    assert_int_equal(f->g.pools[0].n_idle, 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_non_null(ua = upstream_conn_acquire(&f->g.pools[0], &ops, &b, &err));
    upstream_conn_release(ua, false);
    teardown_fixture(f);
}

static void test_no_address_and_retired_group(void **state)
{
    (void)state;
    fixture_t *f = setup_fixture(true);
    owner_t o = {0};
    int err;
    atomic_store(&f->ht.addr, NULL);
    assert_null(upstream_conn_acquire(&f->g.pools[0], &ops, &o, &err));
    assert_int_equal(err, FE_NOTFOUND);
    atomic_store(&f->ht.addr, &f->addr);
    upstream_conn_t *uc = upstream_conn_acquire(&f->g.pools[0], &ops, &o, &err);
    run_until(f, &o.connected, 1);
    upstream_group_retire(&f->g); /* a reload replaced the generation */
    upstream_conn_release(uc, true);
    assert_int_equal(f->g.pools[0].n_idle, 0);
    teardown_fixture(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_exchange_and_reuse),
        cmocka_unit_test(test_close_by_target_while_idle),
        cmocka_unit_test(test_refused_connect_tells_the_owner),
        cmocka_unit_test(test_max_connections_breaker),
        cmocka_unit_test(test_no_address_and_retired_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
