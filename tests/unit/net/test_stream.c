/* net/stream.h on a real loop: a listener, a server stream and a client
 * stream on 127.0.0.1 in one thread. Writes arrive whole and in order, the
 * part the socket does not take is queued and drained, close callbacks fire,
 * and every test leaves the loop with no handle open. */
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

#include "core/errors.h"
#include "net/stream.h"

typedef struct ctx ctx_t;

typedef struct peer {
    stream_t s; /* first: the ops get the stream_t */
    ctx_t *ctx;
    char *rbuf;
    size_t rlen;
    size_t rcap;
    int closed;
    int drains;
    int drain_status;
    ssize_t read_error; /* UV_EOF, UV_ECONNRESET, ... */
} peer_t;

struct ctx {
    uv_loop_t loop;
    uv_tcp_t listener;
    struct sockaddr_in addr;
    pbuf_pool_t pool;
    peer_t client;
    peer_t server;
    uv_connect_t connect;
    bool accepted;
    size_t expect;      /* bytes the server waits for */
    int want_drains;    /* client drains before the test may end */
    bool reset_on_done; /* the client ends with an RST */
    void (*on_connected)(ctx_t *c);
};

static peer_t *peer_of(stream_t *s) { return (peer_t *)s; }

static void on_alloc(stream_t *s, uv_buf_t *buf)
{
    peer_t *p = peer_of(s);
    static char scratch[4096]; /* reads past what a test expects */
    if (p->rlen < p->rcap)
        *buf = uv_buf_init(p->rbuf + p->rlen, (unsigned)(p->rcap - p->rlen));
    else
        *buf = uv_buf_init(scratch, sizeof scratch);
}

static void close_listener(ctx_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->listener))
        uv_close((uv_handle_t *)&c->listener, NULL);
}

/* Ends the test once the server has all it waits for and the client has
 * drained: the client closes, and the server closes on its EOF (or RST). */
static void maybe_done(ctx_t *c)
{
    if (c->server.rlen < c->expect || c->client.drains < c->want_drains)
        return;
    close_listener(c);
    if (!stream_closing(&c->client.s))
        stream_close(&c->client.s, c->reset_on_done);
}

static void on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    peer_t *p = peer_of(s);
    if (n < 0) {
        p->read_error = n;
        stream_close(s, false);
        return;
    }
    if (buf->base == p->rbuf + p->rlen)
        p->rlen += (size_t)n;
    else
        p->rlen = p->rcap + 1; /* more than expected */
    maybe_done(p->ctx);
}

static void on_drain(stream_t *s, int status)
{
    peer_t *p = peer_of(s);
    p->drains++;
    p->drain_status = status;
    maybe_done(p->ctx);
}

static void on_close(stream_t *s) { peer_of(s)->closed++; }

static const stream_ops_t ops = {
    .on_alloc = on_alloc,
    .on_read = on_read,
    .on_drain = on_drain,
    .on_close = on_close,
};

/* The server side is accepted into the stream's own handle; the client side
 * of some tests goes through stream_open() instead, as the workers do. */
static void on_connection(uv_stream_t *l, int status)
{
    ctx_t *c = l->data;
    assert_int_equal(status, 0);
    c->server.ctx = c;
    assert_int_equal(stream_init(&c->loop, &c->server.s, &ops, &c->pool), 0);
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->server.s.tcp), 0);
    assert_true(stream_fd(&c->server.s) >= 0);
    assert_int_equal(stream_read_start(&c->server.s), 0);
    assert_int_equal(stream_read_start(&c->server.s), 0); /* twice is harmless */
    c->accepted = true;
    close_listener(c);
}

static void ctx_init(ctx_t *c, size_t pool_buf_bytes, size_t expect)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    pbuf_pool_init(&c->pool, pool_buf_bytes, 4);
    c->expect = expect;
    c->server.rcap = expect;
    c->server.rbuf = malloc(expect ? expect : 1);
    assert_non_null(c->server.rbuf);
    c->client.ctx = c;
    c->server.ctx = c;

    assert_int_equal(uv_tcp_init(&c->loop, &c->listener), 0);
    c->listener.data = c;
    uv_ip4_addr("127.0.0.1", 0, &c->addr);
    assert_int_equal(uv_tcp_bind(&c->listener, (struct sockaddr *)&c->addr, 0), 0);
    int len = sizeof c->addr;
    assert_int_equal(uv_tcp_getsockname(&c->listener, (struct sockaddr *)&c->addr, &len), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&c->listener, 16, on_connection), 0);
}

/* Runs the loop to its end and checks nothing is left behind. */
static void ctx_run_and_close(ctx_t *c)
{
    assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(c->client.closed, 1);
    assert_int_equal(c->server.closed, c->accepted ? 1 : 0);
    assert_int_equal(c->pool.n_out, 0);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    pbuf_pool_deinit(&c->pool);
}

static void ctx_free(ctx_t *c) { free(c->server.rbuf); }

static void on_connect(uv_connect_t *req, int status)
{
    ctx_t *c = req->data;
    assert_int_equal(status, 0);
    c->on_connected(c);
}

static void connect_client(ctx_t *c, void (*on_connected)(ctx_t *c))
{
    c->on_connected = on_connected;
    c->connect.data = c;
    assert_int_equal(stream_init(&c->loop, &c->client.s, &ops, &c->pool), 0);
    assert_int_equal(
        stream_connect(&c->client.s, &c->connect, (struct sockaddr *)&c->addr, on_connect), 0);
}

/* A client socket connected before the loop runs (the kernel completes the
 * handshake into the backlog), with a small send buffer so that a large
 * write cannot go out at once. */
static void open_client(ctx_t *c, int sndbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (sndbuf)
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&c->addr, sizeof c->addr), 0);
    assert_int_equal(stream_init(&c->loop, &c->client.s, &ops, &c->pool), 0);
    assert_int_equal(stream_open(&c->client.s, fd), 0);
}

/* ---------------------------------------------------------------- tests */

static void write_iovecs(ctx_t *c)
{
    uv_buf_t bufs[] = {
        uv_buf_init("alpha-", 6),
        uv_buf_init("beta-", 5),
        uv_buf_init("", 0),
        uv_buf_init("gamma", 5),
    };
    assert_int_equal(stream_write(&c->client.s, bufs, 4), 0);
    assert_false(stream_write_pending(&c->client.s));
    uv_buf_t more = uv_buf_init("!", 1);
    assert_int_equal(stream_write(&c->client.s, &more, 1), 0);
    assert_int_equal(stream_write(&c->client.s, NULL, 0), 0);
}

static void test_iovecs_in_order(void **state)
{
    (void)state;
    static const char want[] = "alpha-beta-gamma!";
    ctx_t c;
    ctx_init(&c, 4096, sizeof want - 1);
    connect_client(&c, write_iovecs);
    ctx_run_and_close(&c);
    assert_int_equal(c.server.rlen, sizeof want - 1);
    assert_memory_equal(c.server.rbuf, want, sizeof want - 1);
    /* Nothing was queued, so no drain; the server saw the client's FIN. */
    assert_int_equal(c.client.drains, 0);
    assert_int_equal(c.server.read_error, UV_EOF);
    ctx_free(&c);
}

#define BIG_BYTES (8u << 20)
#define POOL_BIG (16u << 20)
static const char tail[] = "<tail written while queued>";

static void fill_pattern(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((i * 131u) ^ (i >> 12));
}

/* More than the socket buffers hold, less than one pool buffer: the tail is
 * queued (1), a write while queued appends in order (1), on_drain follows
 * once, and the bytes arrive intact. */
static void test_large_write_queues_and_drains(void **state)
{
    (void)state;
    char *payload = malloc(BIG_BYTES);
    assert_non_null(payload);
    fill_pattern(payload, BIG_BYTES);
    const size_t total = BIG_BYTES + sizeof tail - 1;

    ctx_t c;
    ctx_init(&c, POOL_BIG, total);
    c.want_drains = 1;
    open_client(&c, 0);

    uv_buf_t b = uv_buf_init(payload, BIG_BYTES);
    assert_int_equal(stream_write(&c.client.s, &b, 1), 1);
    assert_true(stream_write_pending(&c.client.s));
    assert_int_equal(c.pool.n_out, 1);
    /* The caller's bytes were copied: it may reuse its buffer at once. */
    memset(payload, 0, BIG_BYTES);
    uv_buf_t t = uv_buf_init((char *)tail, sizeof tail - 1);
    assert_int_equal(stream_write(&c.client.s, &t, 1), 1);

    ctx_run_and_close(&c);
    assert_int_equal(c.client.drains, 1);
    assert_int_equal(c.client.drain_status, 0);
    assert_false(stream_write_pending(&c.client.s));
    assert_int_equal(c.server.rlen, total);
    fill_pattern(payload, BIG_BYTES);
    assert_memory_equal(c.server.rbuf, payload, BIG_BYTES);
    assert_memory_equal(c.server.rbuf + BIG_BYTES, tail, sizeof tail - 1);
    ctx_free(&c);
    free(payload);
}

/* What the queue buffer cannot hold is refused, and closing gives the queue
 * buffer back to the pool. */
static void test_write_bigger_than_queue(void **state)
{
    (void)state;
    char *payload = malloc(BIG_BYTES);
    assert_non_null(payload);
    fill_pattern(payload, BIG_BYTES);
    ctx_t c;
    ctx_init(&c, 64 * 1024, 0);
    open_client(&c, 16 * 1024);
    uv_buf_t b = uv_buf_init(payload, BIG_BYTES);
    assert_int_equal(stream_write(&c.client.s, &b, 1), FE_TOOBIG);
    stream_close(&c.client.s, true);
    assert_true(stream_closing(&c.client.s));
    ctx_run_and_close(&c);
    ctx_free(&c);
    free(payload);
}

static void close_with_reset(ctx_t *c)
{
    stream_close(&c->client.s, true);
    /* Closing: writes are refused, a second close is a no-op. */
    uv_buf_t b = uv_buf_init("x", 1);
    assert_int_equal(stream_write(&c->client.s, &b, 1), FE_IO);
    stream_close(&c->client.s, false);
}

static void test_reset_close(void **state)
{
    (void)state;
    ctx_t c;
    ctx_init(&c, 4096, 0);
    c.expect = 1; /* nothing comes: the server ends on the RST */
    connect_client(&c, close_with_reset);
    ctx_run_and_close(&c);
    assert_int_equal(c.server.rlen, 0);
    assert_int_equal(c.server.read_error, UV_ECONNRESET);
    ctx_free(&c);
}

static void write_then_stop(ctx_t *c)
{
    uv_buf_t b = uv_buf_init("ping", 4);
    assert_int_equal(stream_write(&c->client.s, &b, 1), 0);
    /* The client reads too, and stops again: no callback may follow. */
    assert_int_equal(stream_read_start(&c->client.s), 0);
    stream_read_stop(&c->client.s);
    stream_read_stop(&c->client.s);
}

static void test_read_stop_then_close(void **state)
{
    (void)state;
    ctx_t c;
    ctx_init(&c, 4096, 4);
    connect_client(&c, write_then_stop);
    ctx_run_and_close(&c);
    assert_memory_equal(c.server.rbuf, "ping", 4);
    assert_int_equal(c.client.read_error, 0);
    ctx_free(&c);
}

int main(void)
{
    /* A hung loop fails the run instead of blocking it. */
    alarm(300);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iovecs_in_order),
        cmocka_unit_test(test_large_write_queues_and_drains),
        cmocka_unit_test(test_write_bigger_than_queue),
        cmocka_unit_test(test_reset_close),
        cmocka_unit_test(test_read_stop_then_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
