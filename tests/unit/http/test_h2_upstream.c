/* HTTP/2 to a target (http/h2_upstream.h): several streams of one session
 * against an nghttp2 server session playing the target, bytes pumped both
 * ways in memory. Answers come back as HTTP/1.1 per stream, in any order; a
 * GOAWAY refuses the streams beyond its last one; a reset fails one stream
 * alone; a paused owner holds its stream's window and no other. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "core/defaults.h"
#include "http/h2_upstream.h"

/* ------------------------------------------------------------ the owner */

typedef struct owner {
    char text[4096]; /* the first bytes handed over */
    size_t len;
    size_t total;
    int failed;
    bool refused;
    int drained;
} owner_t;

static char wire[1 << 20]; /* client -> target, not yet read */
static size_t wire_len;

static int o_send(void *conn, const uv_buf_t *bufs, unsigned n)
{
    (void)conn;
    for (unsigned i = 0; i < n; i++) {
        assert_true(wire_len + bufs[i].len <= sizeof wire);
        memcpy(wire + wire_len, bufs[i].base, bufs[i].len);
        wire_len += bufs[i].len;
    }
    return 0;
}
static bool o_pending(void *conn)
{
    (void)conn;
    return false;
}
static void o_deliver(void *p, const char *data, size_t len)
{
    owner_t *o = p;
    size_t room = sizeof o->text - 1 - o->len;
    size_t k = len < room ? len : room;
    memcpy(o->text + o->len, data, k);
    o->len += k;
    o->text[o->len] = 0;
    o->total += len;
}
static void o_drained(void *p) { ((owner_t *)p)->drained++; }
static void o_failed(void *p, int status, bool refused)
{
    owner_t *o = p;
    o->failed = status;
    o->refused = refused;
}

static const h2_upstream_io_t io = {
    .send = o_send,
    .send_pending = o_pending,
    .deliver = o_deliver,
    .drained = o_drained,
    .failed = o_failed,
};

/* ----------------------------------------------------------- the target */

static nghttp2_session *target;
static char paths[16][32]; /* by stream id */
static int requests_ended;
static int32_t reset_stream; /* the last RST_STREAM the target got */
static int goaways;          /* GOAWAY frames the target got */
static uint32_t goaway_code;
static uint32_t reset_code;
static size_t big_sent; /* of the big answer */

static int t_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                       size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                       void *ud)
{
    (void)ng;
    (void)flags;
    (void)ud;
    int32_t id = frame->hd.stream_id;
    if (id < 16 && namelen == 5 && memcmp(name, ":path", 5) == 0)
        snprintf(paths[id], sizeof paths[id], "%.*s", (int)valuelen, (const char *)value);
    return 0;
}

static int t_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    (void)ng;
    (void)ud;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        requests_ended++;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        goaways++;
        goaway_code = frame->goaway.error_code;
    }
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        reset_stream = frame->hd.stream_id;
        reset_code = frame->rst_stream.error_code;
    }
    return 0;
}

static ssize_t t_small(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)ud;
    const char *body = src->ptr;
    size_t n = strlen(body);
    assert_true(n <= length);
    memcpy(buf, body, n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define BIG_BYTES (1024 * 1024)

static ssize_t t_big(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                     nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)src;
    (void)ud;
    size_t n = BIG_BYTES - big_sent < length ? BIG_BYTES - big_sent : length;
    memset(buf, 'x', n);
    big_sent += n;
    if (big_sent == BIG_BYTES)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void answer(int32_t id, const char *body)
{
    nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0}};
    nghttp2_data_provider dp = {.source.ptr = (void *)body, .read_callback = t_small};
    assert_int_equal(nghttp2_submit_response(target, id, nv, 1, &dp), 0);
}

static void answer_big(int32_t id)
{
    nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0}};
    nghttp2_data_provider dp = {.read_callback = t_big};
    assert_int_equal(nghttp2_submit_response(target, id, nv, 1, &dp), 0);
}

/* Bytes both ways until neither side has any. */
static void pump(h2_upstream_t *u)
{
    for (int rounds = 0; rounds < 1000; rounds++) {
        bool moved = false;
        if (wire_len) {
            assert_int_equal(nghttp2_session_mem_recv(target, (uint8_t *)wire, wire_len),
                             (ssize_t)wire_len);
            wire_len = 0;
            moved = true;
        }
        const uint8_t *data;
        ssize_t k;
        while ((k = nghttp2_session_mem_send(target, &data)) > 0) {
            h2_upstream_feed(u, (const char *)data, (size_t)k);
            moved = true;
        }
        if (!moved)
            return;
    }
    fail_msg("the sessions never went quiet");
}

static pbuf_pool_t pool;

static h2_upstream_t *setup_pair(void)
{
    memset(paths, 0, sizeof paths);
    requests_ended = 0;
    reset_stream = 0;
    reset_code = 0;
    goaways = 0;
    goaway_code = 99;
    big_sent = 0;
    wire_len = 0;
    nghttp2_session_callbacks *cb;
    assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session_callbacks_set_on_header_callback(cb, t_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, t_on_frame_recv);
    assert_int_equal(nghttp2_session_server_new(&target, cb, NULL), 0);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 50}};
    assert_int_equal(nghttp2_submit_settings(target, NGHTTP2_FLAG_NONE, iv, 1), 0);
    h2_upstream_t *u = h2_upstream_new(&pool, &io, NULL, false);
    assert_non_null(u);
    return u;
}

static void teardown_pair(h2_upstream_t *u)
{
    h2_upstream_free(u);
    nghttp2_session_del(target);
}

static h2_ustream_t *get(h2_upstream_t *u, owner_t *o, const char *path)
{
    memset(o, 0, sizeof *o);
    h2_ustream_t *s = h2_ustream_open(u, o);
    assert_non_null(s);
    char req[128];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    uv_buf_t b = uv_buf_init(req, (unsigned)n);
    assert_int_equal(h2_ustream_write(s, &b, 1), 0);
    return s;
}

/* ---------------------------------------------------------------- tests */

static void streams_share_the_session_and_answer_in_any_order(void **state)
{
    (void)state;
    h2_upstream_t *u = setup_pair();
    owner_t a, b;
    h2_ustream_t *sa = get(u, &a, "/a");
    h2_ustream_t *sb = get(u, &b, "/b");
    pump(u);
    /* Both requests are at the target before either is answered. */
    assert_string_equal(paths[1], "/a");
    assert_string_equal(paths[3], "/b");
    assert_int_equal(requests_ended, 2);
    assert_int_equal(h2_upstream_peer_streams(u), 50);
    assert_true(h2_upstream_open_ok(u));
    answer(3, "bee");
    pump(u);
    assert_non_null(strstr(b.text, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(b.text, "\r\n\r\n3\r\nbee\r\n0\r\n\r\n"));
    assert_int_equal(a.len, 0);
    answer(1, "ay");
    pump(u);
    assert_non_null(strstr(a.text, "2\r\nay\r\n0\r\n\r\n"));
    assert_int_equal(a.failed + b.failed, 0);
    h2_ustream_close(sa);
    h2_ustream_close(sb);
    teardown_pair(u);
}

static void goaway_refuses_the_streams_beyond_its_last(void **state)
{
    (void)state;
    h2_upstream_t *u = setup_pair();
    owner_t a, b, c;
    h2_ustream_t *sa = get(u, &a, "/a");
    h2_ustream_t *sb = get(u, &b, "/b");
    pump(u);
    assert_int_equal(nghttp2_submit_goaway(target, NGHTTP2_FLAG_NONE, 1, NGHTTP2_NO_ERROR, NULL, 0),
                     0);
    pump(u);
    assert_int_equal(b.failed, UV_ECONNRESET);
    assert_true(b.refused); /* never processed: safe to send again */
    assert_false(h2_upstream_open_ok(u));
    /* A stream not sent yet is refused at its first write. */
    memset(&c, 0, sizeof c);
    h2_ustream_t *sc = h2_ustream_open(u, &c);
    uv_buf_t req = uv_buf_init((char *)"GET /c HTTP/1.1\r\nHost: t\r\n\r\n", 28);
    assert_int_equal(h2_ustream_write(sc, &req, 1), UV_ECONNREFUSED);
    /* The accepted stream finishes: drained, not failed. */
    answer(1, "ok");
    pump(u);
    assert_int_equal(a.failed, 0);
    assert_non_null(strstr(a.text, "2\r\nok\r\n0\r\n\r\n"));
    h2_ustream_close(sa);
    h2_ustream_close(sb);
    h2_ustream_close(sc);
    teardown_pair(u);
}

static void a_reset_fails_that_stream_alone(void **state)
{
    (void)state;
    h2_upstream_t *u = setup_pair();
    owner_t a, b;
    h2_ustream_t *sa = get(u, &a, "/a");
    h2_ustream_t *sb = get(u, &b, "/b");
    pump(u);
    assert_int_equal(
        nghttp2_submit_rst_stream(target, NGHTTP2_FLAG_NONE, 1, NGHTTP2_INTERNAL_ERROR), 0);
    answer(3, "fine");
    pump(u);
    assert_int_equal(a.failed, UV_ECONNRESET);
    assert_false(a.refused);
    assert_int_equal(b.failed, 0);
    assert_non_null(strstr(b.text, "4\r\nfine\r\n0\r\n\r\n"));
    assert_true(h2_upstream_open_ok(u));
    h2_ustream_close(sa);
    h2_ustream_close(sb);
    teardown_pair(u);
}

static void a_paused_owner_holds_its_window_and_no_other(void **state)
{
    (void)state;
    h2_upstream_t *u = setup_pair();
    owner_t a, b;
    h2_ustream_t *sa = get(u, &a, "/big");
    h2_ustream_t *sb = get(u, &b, "/small");
    pump(u);
    h2_ustream_pause(sa, true);
    answer_big(1);
    answer(3, "small");
    pump(u);
    /* The paused stream got its window's worth from the target, nothing
     * handed over; the other stream is whole. */
    assert_int_equal(a.total, 0);
    assert_int_equal(big_sent, H2_UPSTREAM_STREAM_WINDOW);
    assert_non_null(strstr(b.text, "5\r\nsmall\r\n0\r\n\r\n"));
    /* Taken, the window comes back, and the rest follows. */
    h2_ustream_pause(sa, false);
    pump(u);
    assert_int_equal(big_sent, BIG_BYTES);
    assert_true(a.total > BIG_BYTES); /* the body, chunked */
    assert_non_null(strstr(a.text, "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(a.failed, 0);
    h2_ustream_close(sa);
    h2_ustream_close(sb);
    teardown_pair(u);
}

static void a_stream_let_go_early_is_reset_and_others_go_on(void **state)
{
    (void)state;
    h2_upstream_t *u = setup_pair();
    owner_t a, b;
    h2_ustream_t *sa = get(u, &a, "/a");
    h2_ustream_t *sb = get(u, &b, "/b");
    pump(u);
    h2_ustream_close(sa); /* its client went away */
    pump(u);
    assert_int_equal(reset_stream, 1);
    assert_int_equal(reset_code, NGHTTP2_CANCEL);
    answer(3, "b");
    pump(u);
    assert_non_null(strstr(b.text, "1\r\nb\r\n0\r\n\r\n"));
    assert_int_equal(a.len, 0);
    h2_ustream_close(sb);
    teardown_pair(u);
}

static void a_lost_connection_fails_streams_not_whole(void **state)
{
    (void)state;
    h2_upstream_t *u = setup_pair();
    owner_t a, b;
    h2_ustream_t *sa = get(u, &a, "/a");
    h2_ustream_t *sb = get(u, &b, "/b");
    pump(u);
    h2_ustream_pause(sb, true);
    answer(3, "whole");
    pump(u);
    h2_upstream_lost(u, UV_EOF);
    assert_int_equal(a.failed, UV_ECONNRESET);
    /* The whole answer waits for its paused owner, and is not failed. */
    assert_int_equal(b.failed, 0);
    h2_ustream_pause(sb, false);
    assert_non_null(strstr(b.text, "5\r\nwhole\r\n0\r\n\r\n"));
    assert_int_equal(b.failed, 0);
    h2_ustream_close(sa);
    h2_ustream_close(sb);
    teardown_pair(u);
}

static void ficus_ending_a_connection_says_goaway_no_error(void **state)
{
    (void)state;
    h2_upstream_t *u = setup_pair();
    owner_t a;
    h2_ustream_t *sa = get(u, &a, "/a");
    pump(u);
    answer(1, "a");
    pump(u);
    h2_ustream_close(sa);
    h2_upstream_goaway(u);
    pump(u);
    assert_int_equal(goaways, 1);
    assert_int_equal(goaway_code, NGHTTP2_NO_ERROR);
    teardown_pair(u);
}

int main(void)
{
    pbuf_pool_init(&pool, IO_BUF_BYTES, 64);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(streams_share_the_session_and_answer_in_any_order),
        cmocka_unit_test(goaway_refuses_the_streams_beyond_its_last),
        cmocka_unit_test(a_reset_fails_that_stream_alone),
        cmocka_unit_test(a_paused_owner_holds_its_window_and_no_other),
        cmocka_unit_test(a_stream_let_go_early_is_reset_and_others_go_on),
        cmocka_unit_test(a_lost_connection_fails_streams_not_whole),
        cmocka_unit_test(ficus_ending_a_connection_says_goaway_no_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
