/* Helpers shared by the request-path unit tests (header only: tests link the
 * library, never each other). One worker set up as the gateway sets one up,
 * on a real loop in the test's thread; backends listening on 127.0.0.1 on
 * the same loop, each answering every request it reads in one of a few
 * ways; clients connected over TCP to 127.0.0.1 (so the peer address is
 * 127.0.0.1) whose accepted end is handed to proxy_on_accept. */
#ifndef FICUS_TESTS_UNIT_PROXY_TEST_H
#define FICUS_TESTS_UNIT_PROXY_TEST_H

#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "../app/app_test.h"
#include "core/defaults.h"
#include "proxy/proxy.h"

#define PT_BACKENDS 2
#define PT_CONNS 8
#define PT_GOT 16384

typedef enum {
    PT_OK,     /* 200, body "<name> <request line's target>" */
    PT_503,    /* 503, body "busy" */
    PT_SILENT, /* reads, never answers */
} pt_mode_t;

typedef struct pt_backend pt_backend_t;

typedef struct pt_conn {
    uv_tcp_t tcp;
    pt_backend_t *be;
    char got[PT_GOT];
    size_t len;
    size_t done; /* bytes of got answered (whole requests) */
    int requests;
    int closed; /* the connection ended (a close of either side) */
} pt_conn_t;

struct pt_backend {
    uv_tcp_t listener;
    unsigned port;
    const char *name;
    pt_mode_t mode;
    pt_conn_t *conns[PT_CONNS];
    int accepted;
    int requests;
};

typedef struct pt_fixture {
    worker_t w;
    config_t *cfg;
    health_t *health;
    weights_t *weights;
    metrics_registry_t *reg;
    proxy_worker_t *pw;
    pt_backend_t be[PT_BACKENDS];
    unsigned dead_port; /* nobody listens there */
    int lfd;            /* where the test's clients connect */
} pt_fixture_t;

static inline void pt_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static inline void pt_conn_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)n;
    pt_conn_t *c = h->data;
    *b = uv_buf_init(c->got + c->len, (unsigned)(sizeof c->got - c->len - 1));
}

static inline void pt_conn_closed(uv_handle_t *h)
{
    pt_conn_t *c = h->data;
    c->closed = 1;
}

/* The length of the whole request at the start of s, 0 if not all there. */
static inline size_t pt_request_len(const char *s)
{
    const char *end = strstr(s, "\r\n\r\n");
    if (!end)
        return 0;
    size_t head = (size_t)(end + 4 - s);
    const char *cl = strcasestr(s, "content-length: ");
    if (cl && cl < end) {
        size_t n = head + strtoul(cl + 16, NULL, 10);
        return strlen(s) >= n ? n : 0;
    }
    const char *te = strcasestr(s, "transfer-encoding: chunked");
    if (te && te < end) {
        const char *last = strstr(end + 2, "\r\n0\r\n\r\n");
        return last ? (size_t)(last + 7 - s) : 0;
    }
    return head;
}

/* Writes s on a backend's connection (the test answering by hand). */
static inline void pt_write(pt_conn_t *c, const char *s)
{
    size_t n = strlen(s);
    uv_write_t *w = malloc(sizeof *w + n);
    memcpy(w + 1, s, n);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, pt_written);
}

static inline void pt_answer(pt_conn_t *c, const char *req)
{
    pt_backend_t *be = c->be;
    char body[512], target[256] = "";
    if (be->mode == PT_SILENT)
        return;
    sscanf(req, "%*s %255s", target);
    if (be->mode == PT_503)
        snprintf(body, sizeof body, "busy");
    else
        snprintf(body, sizeof body, "%s %s", be->name, target);
    char out[1024];
    snprintf(out, sizeof out, "HTTP/1.1 %s\r\nContent-Length: %zu\r\nX-Backend: %s\r\n\r\n%s",
             be->mode == PT_503 ? "503 Service Unavailable" : "200 OK", strlen(body), be->name,
             body);
    pt_write(c, out);
}

static inline void pt_conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    pt_conn_t *c = s->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, pt_conn_closed);
        return;
    }
    c->len += (size_t)n;
    c->got[c->len] = '\0';
    size_t k;
    while ((k = pt_request_len(c->got + c->done)) > 0) {
        c->requests++;
        c->be->requests++;
        pt_answer(c, c->got + c->done);
        c->done += k;
    }
}

static inline void pt_accept(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    pt_backend_t *be = l->data;
    assert_true(be->accepted < PT_CONNS);
    pt_conn_t *c = calloc(1, sizeof *c);
    c->be = be;
    uv_tcp_init(l->loop, &c->tcp);
    c->tcp.data = c;
    be->conns[be->accepted++] = c;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
    uv_read_start((uv_stream_t *)&c->tcp, pt_conn_alloc, pt_conn_read);
}

static inline unsigned pt_listen(uv_loop_t *loop, uv_tcp_t *t, void *data)
{
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(loop, t);
    t->data = data;
    assert_int_equal(uv_tcp_bind(t, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)t, 16, pt_accept), 0);
    struct sockaddr_in bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(t, (struct sockaddr *)&bound, &blen);
    return ntohs(bound.sin_port);
}

/* A plain socket bound to 127.0.0.1:0 (listening when `backlog` > 0). */
static inline int pt_socket(int backlog, unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *port = ntohs(sa.sin_port);
    if (backlog)
        assert_int_equal(listen(fd, backlog), 0);
    return fd;
}

static inline config_t *pt_config(const pt_fixture_t *f, const char *yaml_fmt)
{
    char yaml[4096];
    /* The format takes the ports of be[0], be[1] and the dead port, in order. */
    snprintf(yaml, sizeof yaml, yaml_fmt, f->be[0].port, f->be[1].port, f->dead_port);
    return app_test_config(yaml);
}

/* A generation of cfg for the fixture's worker (nobody's reference yet). */
static inline proxy_gen_t *pt_gen(pt_fixture_t *f, config_t *cfg, uint64_t id,
                                  void (*on_free)(void *), void *ctx)
{
    proxy_shared_t shared = {.cfg = cfg,
                             .id = id,
                             .metrics = f->reg,
                             .health = f->health,
                             .weights = f->weights,
                             .gen_freed = on_free,
                             .gen_ctx = ctx};
    proxy_gen_t *gen = proxy_gen_new(&shared, 0);
    assert_non_null(gen);
    return gen;
}

/* yaml_fmt: a config whose "%u"s are be[0]'s port, be[1]'s, the dead port. */
static inline pt_fixture_t *pt_setup(const char *yaml_fmt)
{
    pt_fixture_t *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->w.loop), 0);
    f->w.rbuf = malloc(IO_BUF_BYTES);
    f->w.max_connections = 64;
    pbuf_pool_init(&f->w.pool, IO_BUF_BYTES + DEFAULT_MAX_HEADER_BYTES + 8192, 16);
    static const char *names[PT_BACKENDS] = {"one", "two"};
    for (int i = 0; i < PT_BACKENDS; i++) {
        f->be[i].name = names[i];
        f->be[i].port = pt_listen(&f->w.loop, &f->be[i].listener, &f->be[i]);
    }
    int dead = pt_socket(0, &f->dead_port);
    close(dead);
    unsigned lport;
    f->lfd = pt_socket(16, &lport);

    f->cfg = pt_config(f, yaml_fmt);
    f->health = health_new(f->cfg);
    f->weights = weights_new(f->cfg);
    f->reg = metrics_registry_new(1, "test");
    assert_non_null(f->health);
    assert_non_null(f->weights);
    assert_non_null(f->reg);
    f->pw = proxy_worker_new(&f->w, f->reg, NULL, pt_gen(f, f->cfg, 1, NULL, NULL));
    assert_non_null(f->pw);
    f->w.app = f->pw;
    return f;
}

/* A client connected to the worker: returns the test's end (non-blocking). */
static inline int pt_client(pt_fixture_t *f)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &len), 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c >= 0);
    assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    int s = accept(f->lfd, NULL, NULL);
    assert_true(s >= 0);
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    f->w.n_connections++;
    proxy_on_accept(&f->w, s, 0);
    return c;
}

static inline void pt_send(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static inline void pt_spin(pt_fixture_t *f, int turns)
{
    for (int i = 0; i < turns; i++) {
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
        usleep(100);
    }
}

/* Runs the loop until cond holds (bounded), then asserts it; a macro for
 * the line. */
#define PT_WAIT(f, cond)                                                                           \
    do {                                                                                           \
        for (int i_ = 0; i_ < 20000 && !(cond); i_++)                                              \
            pt_spin(f, 1);                                                                         \
        assert_true(cond);                                                                         \
    } while (0)

/* Runs the loop until `count` answers of ficus's (or backends') whose text
 * holds `want` have all arrived on fd, or the client's end saw EOF; bounded.
 * Returns the bytes read. buf is NUL-terminated. */
static inline size_t pt_read_until(pt_fixture_t *f, int fd, char *buf, size_t cap, const char *want,
                                   int count, int *eof)
{
    size_t len = 0;
    buf[0] = '\0';
    if (eof)
        *eof = 0;
    for (int i = 0; i < 20000; i++) {
        int seen = 0;
        for (const char *p = buf; (p = strstr(p, want)) != NULL; p += strlen(want))
            seen++;
        if (seen >= count)
            break;
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k > 0) {
            len += (size_t)k;
            buf[len] = '\0';
        } else if (k == 0) {
            if (eof)
                *eof = 1;
            break;
        } else {
            usleep(200);
        }
    }
    return len;
}

/* One whole answer ending in `tail` (the end of its body). */
static inline void pt_answer_ending(pt_fixture_t *f, int fd, char *buf, size_t cap,
                                    const char *tail)
{
    pt_read_until(f, fd, buf, cap, tail, 1, NULL);
    assert_non_null(strstr(buf, tail));
}

/* Reads what comes on fd (after the `kept` bytes already in buf) until the
 * end of the connection, which must come. */
static inline void pt_read_to_eof(pt_fixture_t *f, int fd, char *buf, size_t cap, size_t kept)
{
    int eof = 0;
    pt_read_until(f, fd, buf + kept, cap - kept, "\x01never", 1, &eof);
    assert_true(eof);
}

/* Sends request on fd and reads its answer, ending in `tail`, into buf. */
static inline void pt_ask(pt_fixture_t *f, int fd, const char *request, char *buf, size_t cap,
                          const char *tail)
{
    pt_send(fd, request);
    pt_answer_ending(f, fd, buf, cap, tail);
}

/* Nothing is left counted: requests in flight and on a retry per route,
 * per target, and the group's breaker counters. */
static inline void pt_assert_released(const proxy_gen_t *g)
{
    for (size_t r = 0; r < g->cfg->n_routes; r++) {
        assert_int_equal(g->route_inflight[r], 0);
        assert_int_equal(g->route_retries[r], 0);
    }
    for (size_t i = 0; i < g->cfg->n_target_groups; i++) {
        const health_group_t *hg = &g->health->groups[i];
        assert_int_equal(atomic_load(&hg->connections), 0);
        assert_int_equal(atomic_load(&hg->pending), 0);
        assert_int_equal(atomic_load(&hg->requests), 0);
        for (size_t t = 0; t < hg->n; t++) {
            assert_int_equal(g->groups[i].inflight[t], 0);
            assert_int_equal(atomic_load(&hg->targets[t].inflight), 0);
        }
    }
}

static inline void pt_teardown(pt_fixture_t *f)
{
    proxy_worker_stop(f->pw);
    for (int i = 0; i < PT_BACKENDS; i++) {
        uv_close((uv_handle_t *)&f->be[i].listener, NULL);
        for (int k = 0; k < f->be[i].accepted; k++)
            if (!uv_is_closing((uv_handle_t *)&f->be[i].conns[k]->tcp))
                uv_close((uv_handle_t *)&f->be[i].conns[k]->tcp, pt_conn_closed);
    }
    uv_run(&f->w.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->w.loop), 0); /* no handle left */
    assert_int_equal(f->w.n_connections, 0);
    pt_assert_released(f->pw->gen);
    for (int i = 0; i < PT_BACKENDS; i++)
        for (int k = 0; k < f->be[i].accepted; k++)
            free(f->be[i].conns[k]);
    proxy_worker_free(f->pw);
    metrics_registry_free(f->reg);
    weights_free(f->weights);
    health_free(f->health);
    config_unref(f->cfg);
    pbuf_pool_deinit(&f->w.pool);
    free(f->w.rbuf);
    close(f->lfd);
    free(f);
}

#endif
