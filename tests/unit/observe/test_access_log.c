/* The JSON access log (observe/access_log.h): the exact line for an entry,
 * nulls, hostile bytes, the cap contract, and the writer thread (two workers,
 * dropping when the writer is stuck, reopen after logrotate's rename). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/defaults.h"
#include "observe/access_log.h"

#define S(lit) ((access_log_str_t){(lit), sizeof(lit) - 1})

static access_log_entry_t full_entry(void)
{
    access_log_entry_t e = {
        .time_ms = 1700000000123,
        .request_id = S("req-1"),
        .trace_id = S("4bf92f3577b34da6a3ce929d0e0e4736"),
        .client_ip = S("192.0.2.7"),
        .client_id = S("ios-app"),
        .method = S("GET"),
        .path = S("/search?q=a"),
        .route = S("search"),
        .target_group = S("search-v2"),
        .target = S("10.0.0.2:80"),
        .status = 200,
        .upstream_status = 503,
        .attempts = 2,
        .fallback = true,
        .duration_us = 12345,
        .upstream_us = 10001,
        .bytes_in = 0,
        .bytes_out = 1234,
        .user_agent = S("curl/8.0"),
        .error = NULL,
        .upstream_path = S("/v2/search?q=a"),
        .protocol = S("HTTP/1.1"),
        .config = 3,
        .shadow = "mismatch",
    };
    return e;
}

static json_t *parse_line(const char *line, size_t n)
{
    json_error_t err;
    json_t *j = json_loadb(line, n, JSON_ALLOW_NUL, &err);
    if (!j)
        fail_msg("not JSON (%s): %.*s", err.text, (int)n, line);
    assert_true(json_is_object(j));
    return j;
}

static void assert_str_field(json_t *j, const char *key, const char *want)
{
    json_t *v = json_object_get(j, key);
    assert_non_null(v);
    if (!want) {
        assert_true(json_is_null(v));
        return;
    }
    assert_true(json_is_string(v));
    assert_string_equal(json_string_value(v), want);
}

static void test_format_exact(void **state)
{
    (void)state;
    access_log_entry_t e = full_entry();
    char out[2048];
    size_t n = access_log_format(&e, out, sizeof out);
    const char *want =
        "{\"time\":\"2023-11-14T22:13:20.123Z\",\"request_id\":\"req-1\","
        "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"client_ip\":\"192.0.2.7\","
        "\"client_id\":\"ios-app\",\"method\":\"GET\",\"path\":\"/search?q=a\","
        "\"route\":\"search\",\"target_group\":\"search-v2\",\"target\":\"10.0.0.2:80\","
        "\"status\":200,\"upstream_status\":503,\"attempts\":2,\"fallback\":true,"
        "\"duration_ms\":12.345,\"upstream_ms\":10.001,\"bytes_in\":0,\"bytes_out\":1234,"
        "\"user_agent\":\"curl/8.0\",\"error\":null,\"upstream_path\":\"/v2/search?q=a\","
        "\"protocol\":\"HTTP/1.1\",\"config\":\"#3\",\"shadow\":\"mismatch\"}\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);

    json_t *j = parse_line(out, n);
    assert_int_equal(json_object_size(j), 24);
    assert_str_field(j, "shadow", "mismatch");
    assert_str_field(j, "time", "2023-11-14T22:13:20.123Z");
    assert_str_field(j, "request_id", "req-1");
    assert_str_field(j, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_str_field(j, "client_ip", "192.0.2.7");
    assert_str_field(j, "client_id", "ios-app");
    assert_str_field(j, "method", "GET");
    assert_str_field(j, "path", "/search?q=a");
    assert_str_field(j, "route", "search");
    assert_str_field(j, "target_group", "search-v2");
    assert_str_field(j, "target", "10.0.0.2:80");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "upstream_status")), 503);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    assert_true(json_is_true(json_object_get(j, "fallback")));
    assert_true(json_real_value(json_object_get(j, "duration_ms")) == 12.345);
    assert_true(json_real_value(json_object_get(j, "upstream_ms")) == 10.001);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_in")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_out")), 1234);
    assert_str_field(j, "user_agent", "curl/8.0");
    assert_str_field(j, "error", NULL);
    json_decref(j);
}

static void test_format_nulls(void **state)
{
    (void)state;
    access_log_entry_t e = {.time_ms = 0,
                            .status = 499,
                            .upstream_us = -1,
                            .error = "client_closed",
                            .duration_us = 7,
                            .bytes_in = INT64_MAX};
    char out[1024];
    size_t n = access_log_format(&e, out, sizeof out);
    assert_true(n > 0);
    assert_int_equal(out[n - 1], '\n');
    json_t *j = parse_line(out, n);
    assert_str_field(j, "time", "1970-01-01T00:00:00.000Z");
    const char *nulls[] = {
        "request_id", "trace_id",     "client_ip", "client_id",       "method",      "path",
        "route",      "target_group", "target",    "upstream_status", "upstream_ms", "user_agent"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        json_t *v = json_object_get(j, nulls[i]);
        assert_non_null(v);
        if (!json_is_null(v))
            fail_msg("%s is not null", nulls[i]);
    }
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 499);
    assert_true(json_is_false(json_object_get(j, "fallback")));
    assert_str_field(j, "error", "client_closed");
    assert_non_null(strstr(out, "\"duration_ms\":0.007,"));
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_in")), INT64_MAX);
    json_decref(j);

    /* Beyond what jansson reads, but still a JSON number, exactly. */
    e.bytes_out = UINT64_MAX;
    e.upstream_us = 0;
    n = access_log_format(&e, out, sizeof out);
    assert_non_null(strstr(out, "\"upstream_ms\":0.000,"));
    assert_non_null(strstr(out, "\"bytes_out\":18446744073709551615,"));

    /* Empty is not absent. */
    e.path = (access_log_str_t){"", 0};
    n = access_log_format(&e, out, sizeof out);
    assert_non_null(strstr(out, "\"path\":\"\","));
}

static void test_format_hostile(void **state)
{
    (void)state;
    /* Quotes, backslash, controls, NUL, DEL, then invalid UTF-8: a lone
     * continuation, a truncated lead, an overlong NUL, a surrogate, a code
     * point above U+10FFFF; and valid 2-, 3- and 4-byte characters. */
    static const char path[] = "/a\"b\\c\n\r\t\x01\x1f\x7f"
                               "\0z"
                               "\x80"
                               "\xc3"
                               "\xc0\x80"
                               "\xed\xa0\x80"
                               "\xf4\x90\x80\x80"
                               "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                               "\xe2\x82";
    static const char want_path[] = "/a\"b\\c\n\r\t\x01\x1f\x7f"
                                    "\0z"
                                    "\xef\xbf\xbd"
                                    "\xef\xbf\xbd"
                                    "\xef\xbf\xbd\xef\xbf\xbd"
                                    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                    "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                                    "\xef\xbf\xbd\xef\xbf\xbd";
    access_log_entry_t e = full_entry();
    e.path = (access_log_str_t){path, sizeof path - 1};
    e.user_agent = S("Mozilla\"/5.0\\\" \x1b[31mred\xff");
    e.error = "bad\"code";
    char out[4096];
    size_t n = access_log_format(&e, out, sizeof out);
    assert_true(n > 0);

    /* Raw: one line, no control byte, no invalid UTF-8 (jansson checks). */
    for (size_t i = 0; i + 1 < n; i++)
        assert_true((unsigned char)out[i] >= 0x20);
    assert_non_null(strstr(out, "\\u0000z"));
    assert_non_null(strstr(out, "\\u007f"));
    assert_non_null(strstr(out, "\\u001b[31mred\\ufffd\""));

    json_t *j = parse_line(out, n);
    json_t *p = json_object_get(j, "path");
    assert_int_equal(json_string_length(p), sizeof want_path - 1);
    assert_memory_equal(json_string_value(p), want_path, sizeof want_path - 1);
    assert_str_field(j, "user_agent", "Mozilla\"/5.0\\\" \x1b[31mred\xef\xbf\xbd");
    assert_str_field(j, "error", "bad\"code");
    json_decref(j);
}

/* 0 for every cap short of the line, never a byte written past cap. */
static void test_format_cap(void **state)
{
    (void)state;
    access_log_entry_t e = full_entry();
    e.path = S("/\"\x01\xc3\xa9\xff");
    char ref[1024];
    size_t len = access_log_format(&e, ref, sizeof ref);
    assert_true(len > 0);
    char out[1024];
    for (size_t cap = 0; cap < len; cap++) {
        memset(out, '#', sizeof out);
        assert_int_equal(access_log_format(&e, out, cap), 0);
        for (size_t i = cap; i < sizeof out; i++)
            assert_int_equal(out[i], '#');
    }
    assert_int_equal(access_log_format(&e, out, len), len);
    assert_memory_equal(out, ref, len);
}

static void make_dir(char *dir) { assert_non_null(mkdtemp(dir)); }

/* Reads a whole file; each line must be a JSON object. Returns the lines. */
static size_t check_file_lines(const char *path, void (*each)(json_t *, void *), void *ctx)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0, lines = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        assert_int_equal(line[n - 1], '\n');
        json_t *j = parse_line(line, (size_t)n);
        if (each)
            each(j, ctx);
        json_decref(j);
        lines++;
    }
    free(line);
    fclose(f);
    return lines;
}

/* Lines per thread: as many as fill ACCESS_LOG_MAX_QUEUED_BUFS / 2 - 1
 * buffers, measured from the line itself (it grows as fields are added), so
 * that even a writer thread that has not run at all never has more than the
 * drop threshold queued, while each thread still hands over several buffers. */
static int lines_per_thread;
#define LINES_PER_THREAD lines_per_thread

typedef struct worker_arg {
    access_log_t *log;
    int id;
} worker_arg_t;

static void *worker_main(void *arg)
{
    worker_arg_t *a = arg;
    access_log_writer_t *w = access_log_writer_new(a->log);
    if (!w)
        return arg; /* cmocka asserts belong to the main thread */
    char ua[256];
    memset(ua, 'u', sizeof ua);
    for (int i = 0; i < LINES_PER_THREAD; i++) {
        char id[32];
        int n = snprintf(id, sizeof id, "%d-%d", a->id, i);
        access_log_entry_t e = full_entry();
        e.request_id = (access_log_str_t){id, (size_t)n};
        e.user_agent = (access_log_str_t){ua, sizeof ua};
        access_log_append(w, &e);
    }
    access_log_writer_free(w);
    return NULL;
}

static void mark_seen(json_t *j, void *ctx)
{
    char *seen = ctx;
    int t, i;
    assert_int_equal(sscanf(json_string_value(json_object_get(j, "request_id")), "%d-%d", &t, &i),
                     2);
    assert_true(t >= 0 && t < 2 && i >= 0 && i < LINES_PER_THREAD);
    assert_int_equal(seen[t * LINES_PER_THREAD + i], 0);
    seen[t * LINES_PER_THREAD + i] = 1;
}

static void test_two_writer_threads(void **state)
{
    (void)state;
    char dir[] = "/tmp/ficus-alog-XXXXXX", path[128], err[256];
    make_dir(dir);
    snprintf(path, sizeof path, "%s/access.log", dir);
    access_log_t *log = access_log_open(path, err, sizeof err);
    assert_non_null(log);
    static char ua[256], line[ACCESS_LOG_BUF_BYTES];
    memset(ua, 'u', sizeof ua);
    access_log_entry_t e = full_entry();
    e.request_id = (access_log_str_t){"1-99999", 7};
    e.user_agent = (access_log_str_t){ua, sizeof ua};
    size_t len = access_log_format(&e, line, sizeof line);
    assert_true(len > 0);
    assert_true(ACCESS_LOG_MAX_QUEUED_BUFS >= 6);
    lines_per_thread = (int)((ACCESS_LOG_MAX_QUEUED_BUFS / 2 - 1) * ACCESS_LOG_BUF_BYTES / len);
    assert_true((size_t)lines_per_thread * len > 2 * ACCESS_LOG_BUF_BYTES);
    worker_arg_t args[2] = {{log, 0}, {log, 1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &args[i]), 0);
    for (int i = 0; i < 2; i++) {
        void *failed;
        pthread_join(th[i], &failed);
        assert_null(failed);
    }
    assert_int_equal(access_log_dropped_lines(log), 0);
    access_log_close(log);

    char *seen = calloc(2 * LINES_PER_THREAD, 1);
    assert_int_equal(check_file_lines(path, mark_seen, seen), 2 * LINES_PER_THREAD);
    free(seen);
    unlink(path);
    rmdir(dir);
}

static void append_n(access_log_writer_t *w, int n, const char *rid)
{
    access_log_entry_t e = full_entry();
    e.request_id = (access_log_str_t){rid, strlen(rid)};
    for (int i = 0; i < n; i++)
        access_log_append(w, &e);
}

static void expect_rid(json_t *j, void *ctx) { assert_str_field(j, "request_id", ctx); }

static void test_reopen_after_rename(void **state)
{
    (void)state;
    char dir[] = "/tmp/ficus-alog-XXXXXX", path[128], rotated[140], err[256];
    make_dir(dir);
    snprintf(path, sizeof path, "%s/access.log", dir);
    snprintf(rotated, sizeof rotated, "%s.1", path);
    access_log_t *log = access_log_open(path, err, sizeof err);
    assert_non_null(log);
    access_log_writer_t *w = access_log_writer_new(log);
    append_n(w, 10, "before");
    access_log_writer_flush(w);
    assert_int_equal(rename(path, rotated), 0);
    assert_int_equal(access_log_reopen(log), 0);
    append_n(w, 5, "after");
    access_log_writer_free(w);
    access_log_close(log);

    /* Lines handed over before the reopen stay in the renamed file. */
    assert_int_equal(check_file_lines(rotated, expect_rid, "before"), 10);
    assert_int_equal(check_file_lines(path, expect_rid, "after"), 5);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    mode_t mask = umask(0);
    umask(mask);
    assert_int_equal(st.st_mode & 0777, 0644 & ~mask);
    unlink(path);
    unlink(rotated);
    rmdir(dir);
}

typedef struct drain_arg {
    int fd;
    size_t lines;
    char *data;
    size_t len;
} drain_arg_t;

static void *drain_main(void *arg)
{
    drain_arg_t *d = arg;
    size_t cap = 1 << 20;
    d->data = malloc(cap);
    for (;;) {
        if (d->len == cap)
            d->data = realloc(d->data, cap *= 2);
        ssize_t n = read(d->fd, d->data + d->len, cap - d->len);
        if (n <= 0)
            break;
        d->len += (size_t)n;
    }
    return NULL;
}

/* A writer stuck on a full pipe: workers never block, the surplus is dropped
 * and counted, and everything not dropped arrives whole. */
static void test_drops_when_writer_stuck(void **state)
{
    (void)state;
    char dir[] = "/tmp/ficus-alog-XXXXXX", path[128], err[256];
    make_dir(dir);
    snprintf(path, sizeof path, "%s/fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    int rfd = open(path, O_RDONLY | O_NONBLOCK);
    assert_true(rfd >= 0);
    access_log_t *log = access_log_open(path, err, sizeof err);
    assert_non_null(log);
    assert_int_equal(fcntl(rfd, F_SETFL, 0), 0);

    /* ~1 KB lines, 16 buffers' worth: one buffer can be in the pipe's write,
     * ACCESS_LOG_MAX_QUEUED_BUFS queued, the rest must be dropped. */
    access_log_writer_t *w = access_log_writer_new(log);
    char ua[1000];
    memset(ua, 'x', sizeof ua);
    access_log_entry_t e = full_entry();
    e.user_agent = (access_log_str_t){ua, sizeof ua};
    size_t total = 16 * (ACCESS_LOG_BUF_BYTES / 1200);
    for (size_t i = 0; i < total; i++)
        access_log_append(w, &e);
    assert_true(access_log_dropped_lines(log) > 0);

    drain_arg_t d = {rfd, 0, NULL, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
    access_log_writer_free(w);
    uint64_t dropped = access_log_dropped_lines(log); /* only workers drop here */
    access_log_close(log); /* closes the pipe's write end: the reader sees EOF */
    pthread_join(th, NULL);

    size_t lines = 0;
    for (char *p = d.data, *end = d.data + d.len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        assert_non_null(nl);
        json_decref(parse_line(p, (size_t)(nl - p + 1)));
        lines++;
        p = nl + 1;
    }
    assert_true(lines > 0);
    assert_int_equal(lines + dropped, total);
    free(d.data);
    close(rfd);
    unlink(path);
    rmdir(dir);
}

static void test_open_errors_and_stdout(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(access_log_open("/nonexistent-ficus-dir/access.log", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent-ficus-dir/access.log"));
    assert_null(access_log_open(NULL, err, sizeof err));

    access_log_t *log = access_log_open("stdout", err, sizeof err);
    assert_non_null(log);
    assert_int_equal(access_log_reopen(log), 0);
    access_log_writer_t *w = access_log_writer_new(log);
    access_log_writer_flush(w); /* nothing buffered: nothing written */
    access_log_writer_free(w);
    access_log_writer_free(NULL);
    access_log_close(log);
    access_log_close(NULL);
}

/* A line longer than a whole buffer is dropped and counted, not truncated. */
static void test_line_larger_than_buffer(void **state)
{
    (void)state;
    char dir[] = "/tmp/ficus-alog-XXXXXX", path[128], err[256];
    make_dir(dir);
    snprintf(path, sizeof path, "%s/access.log", dir);
    access_log_t *log = access_log_open(path, err, sizeof err);
    access_log_writer_t *w = access_log_writer_new(log);
    append_n(w, 1, "small");
    size_t big_n = ACCESS_LOG_BUF_BYTES;
    char *big = malloc(big_n);
    memset(big, '/', big_n);
    access_log_entry_t e = full_entry();
    e.path = (access_log_str_t){big, big_n};
    access_log_append(w, &e);
    append_n(w, 1, "small");
    access_log_writer_free(w);
    assert_int_equal(access_log_dropped_lines(log), 1);
    access_log_close(log);
    assert_int_equal(check_file_lines(path, expect_rid, "small"), 2);
    free(big);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_exact),
        cmocka_unit_test(test_format_nulls),
        cmocka_unit_test(test_format_hostile),
        cmocka_unit_test(test_format_cap),
        cmocka_unit_test(test_two_writer_threads),
        cmocka_unit_test(test_reopen_after_rename),
        cmocka_unit_test(test_drops_when_writer_stuck),
        cmocka_unit_test(test_open_errors_and_stdout),
        cmocka_unit_test(test_line_larger_than_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
