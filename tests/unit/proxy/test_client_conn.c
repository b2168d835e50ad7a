/* proxy/client_conn over a socketpair, with an owner of the test's own
 * behind the callback table: heads and bodies handed over in order,
 * pipelined requests held until the response is done, keep-alive, chunked
 * bodies re-framed, refused heads, the header timeout, a client that goes
 * away, the raw relay after an upgrade; the loop ends with no handle open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/defaults.h"
#include "proxy/client_conn.h"

typedef struct owner {
    client_conn_t cc; /* first: the ops get the client_conn_t */
    char log[2048];   /* what the owner was told, in order */
    size_t log_len;
    int requests;
    int closed;
    bool answer_at_once; /* respond as soon as a request is whole */
    bool tunnel;         /* switch to raw after the head */
    end_reason_t rejected;
    end_reason_t gone;
} owner_t;

static uv_loop_t loop;
static pbuf_pool_t pool;
static char rbuf[IO_BUF_BYTES];
static char scratch[2 * IO_BUF_BYTES];
static http_head_t head;
static config_server_t server;
static client_conn_env_t env;

static void note(owner_t *o, const char *fmt, size_t n, const char *data)
{
    int k = snprintf(o->log + o->log_len, sizeof o->log - o->log_len, fmt, (int)n, data);
    o->log_len += (size_t)k;
}

static void answer(owner_t *o)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    uv_buf_t b = uv_buf_init((char *)resp, sizeof resp - 1);
    assert_true(client_conn_write(&o->cc, &b, 1) >= 0);
    client_conn_response_done(&o->cc);
}

static void on_request(client_conn_t *cc, const http_head_t *h, const char *raw, size_t n)
{
    owner_t *o = (owner_t *)cc;
    o->requests++;
    assert_memory_equal(raw, h->method, h->method_len); /* raw starts with the head */
    note(o, "[req %.*s]", h->target_len, h->target);
    if (o->tunnel) {
        client_conn_tunnel(cc);
        return;
    }
    if (o->answer_at_once && cc->body_done)
        answer(o);
}
static size_t body_room(client_conn_t *cc)
{
    (void)cc;
    return SIZE_MAX;
}
static void on_body(client_conn_t *cc, const char *data, size_t len, bool end)
{
    owner_t *o = (owner_t *)cc;
    note(o, "[body %.*s]", len, data);
    if (end) {
        note(o, "%.*s[end]", 0, "");
        if (o->answer_at_once)
            answer(o);
    }
}
static void on_reject(client_conn_t *cc, end_reason_t why, const char *message)
{
    owner_t *o = (owner_t *)cc;
    (void)message;
    o->rejected = why;
    answer(o);
}
static void on_gone(client_conn_t *cc, end_reason_t why)
{
    owner_t *o = (owner_t *)cc;
    o->gone = why;
    client_conn_abort(cc);
}
static void on_drained(client_conn_t *cc) { (void)cc; }
static void on_timeout(client_conn_t *cc) { client_conn_abort(cc); }
static void on_raw_data(client_conn_t *cc, const char *data, size_t len)
{
    note((owner_t *)cc, "[raw %.*s]", len, data);
}
static void on_raw_eof(client_conn_t *cc, ssize_t status)
{
    (void)status;
    note((owner_t *)cc, "[raw eof]%.*s", 0, "");
    client_conn_abort(cc);
}
static void on_close(client_conn_t *cc) { ((owner_t *)cc)->closed = 1; }

static const client_conn_ops_t ops = {
    .on_request = on_request,
    .body_room = body_room,
    .on_body = on_body,
    .on_reject = on_reject,
    .on_gone = on_gone,
    .on_drained = on_drained,
    .on_timeout = on_timeout,
    .on_raw_data = on_raw_data,
    .on_raw_eof = on_raw_eof,
    .on_close = on_close,
};

static int setup(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    pbuf_pool_init(&pool, IO_BUF_BYTES, 8);
    memset(&server, 0, sizeof server);
    server.header_timeout_ms = 5000;
    server.idle_timeout_ms = 5000;
    server.max_header_bytes = 16 * 1024;
    server.max_body_bytes = 1000;
    env = (client_conn_env_t){.loop = &loop,
                              .pool = &pool,
                              .rbuf = rbuf,
                              .head = &head,
                              .scratch = scratch,
                              .scratch_bytes = sizeof scratch,
                              .server = &server};
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    client_conn_env_stop(&env);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* no handle left */
    pbuf_pool_deinit(&pool);
    return 0;
}

/* An owner on one end of a socketpair; *peer gets the test's end. */
static owner_t *open_conn(int *peer)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    owner_t *o = calloc(1, sizeof *o);
    o->answer_at_once = true;
    assert_int_equal(client_conn_open(&o->cc, &env, &ops, sv[0], NULL), 0);
    *peer = sv[1];
    return o;
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Runs the loop until cond holds (bounded). */
#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        for (int i_ = 0; i_ < 1000 && !(cond); i_++)                                               \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
        assert_true(cond);                                                                         \
    } while (0)

/* Reads what the connection wrote, until it holds n responses. */
static int read_responses(int fd, int n)
{
    char buf[4096];
    size_t len = 0;
    int got = 0;
    for (int i = 0; i < 1000 && got < n; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t k = recv(fd, buf + len, sizeof buf - len - 1, MSG_DONTWAIT);
        if (k > 0) {
            len += (size_t)k;
            buf[len] = '\0';
            got = 0;
            for (char *p = buf; (p = strstr(p, "HTTP/1.1 200")); p++)
                got++;
        } else if (k == 0) {
            break;
        } else {
            usleep(1000);
        }
    }
    return got;
}

static void free_owner(owner_t *o, int peer)
{
    close(peer);
    RUN_UNTIL(o->closed);
    free(o);
}

static void test_pipelined_requests_in_order(void **state)
{
    (void)state;
    int peer;
    owner_t *o = open_conn(&peer);
    send_str(peer, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                   "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                   "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(o->requests == 3);
    assert_int_equal(read_responses(peer, 3), 3);
    assert_string_equal(o->log, "[req /a][req /b][body hello][end][req /c]");
    assert_int_equal(o->cc.requests, 3); /* kept alive throughout */
    free_owner(o, peer);
}

static void test_held_until_the_response_is_done(void **state)
{
    (void)state;
    int peer;
    owner_t *o = open_conn(&peer);
    o->answer_at_once = false;
    send_str(peer, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(o->requests == 1);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(o->requests, 1); /* the second waits for the first's answer */
    o->answer_at_once = true;
    answer(o);
    RUN_UNTIL(o->requests == 2);
    free_owner(o, peer);
}

static void test_chunked_body_reframed(void **state)
{
    (void)state;
    int peer;
    owner_t *o = open_conn(&peer);
    send_str(peer, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "003;ext=1\r\nabc\r\n0\r\n\r\n");
    RUN_UNTIL(strstr(o->log, "[end]"));
    /* Written again by ficus: plain sizes, no extension, ficus's last chunk. */
    assert_string_equal(o->log, "[req /c][body 3\r\nabc\r\n0\r\n\r\n][end]");
    free_owner(o, peer);
}

static void test_bad_heads_refused(void **state)
{
    (void)state;
    int peer;
    owner_t *o = open_conn(&peer);
    send_str(peer, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    RUN_UNTIL(o->rejected == END_BAD_REQUEST);
    assert_int_equal(o->requests, 0);
    assert_int_equal(read_responses(peer, 1), 1);
    free_owner(o, peer);

    o = open_conn(&peer);
    send_str(peer, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    RUN_UNTIL(o->rejected == END_VERSION_NOT_SUPPORTED);
    free_owner(o, peer);
}

static void test_header_timeout(void **state)
{
    (void)state;
    server.header_timeout_ms = 30;
    int peer;
    owner_t *o = open_conn(&peer);
    send_str(peer, "GET / HTTP/1.1\r\nHo");
    RUN_UNTIL(o->rejected == END_HEADER_TIMEOUT);
    server.header_timeout_ms = 5000;
    free_owner(o, peer);
}

static void test_client_gone_mid_request(void **state)
{
    (void)state;
    int peer;
    owner_t *o = open_conn(&peer);
    o->answer_at_once = false;
    send_str(peer, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    RUN_UNTIL(strstr(o->log, "[body abc]"));
    close(peer);
    RUN_UNTIL(o->gone == END_CLIENT_CLOSED);
    RUN_UNTIL(o->closed);
    free(o);
}

static void test_chunked_body_over_the_limit(void **state)
{
    (void)state;
    int peer;
    owner_t *o = open_conn(&peer);
    o->answer_at_once = false;
    char req[2200];
    int n =
        snprintf(req, sizeof req,
                 "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", 2000);
    memset(req + n, 'z', 2000);
    req[n + 2000] = '\0';
    send_str(peer, req);
    RUN_UNTIL(o->gone == END_BODY_TOO_LARGE);
    free_owner(o, peer);
}

static void test_tunnel_relays_raw_bytes(void **state)
{
    (void)state;
    int peer;
    owner_t *o = open_conn(&peer);
    o->tunnel = true;
    send_str(peer, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
                   "\r\nearly");
    RUN_UNTIL(strstr(o->log, "[raw early]"));
    send_str(peer, "later");
    RUN_UNTIL(strstr(o->log, "[raw later]"));
    assert_int_equal(o->cc.state, CC_TUNNEL);
    shutdown(peer, SHUT_WR);
    RUN_UNTIL(strstr(o->log, "[raw eof]"));
    free_owner(o, peer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pipelined_requests_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_until_the_response_is_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_reframed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_heads_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone_mid_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_over_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tunnel_relays_raw_bytes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
