/* Sets (routing/set.h): parsing member lists, lock-free swap with the
 * retire hook, and reloads from a file and from a one-shot HTTP server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "routing/set.h"

static set_members_t *parse_str(const char *s, char *err, size_t errlen)
{
    return set_members_parse(s, strlen(s), err, errlen);
}

static bool has(const set_members_t *m, const char *k)
{
    return set_members_contains(m, k, strlen(k));
}

static void test_parse_basic(void **state)
{
    (void)state;
    char err[128] = "";
    set_members_t *m = parse_str("# shops on the new service\n"
                                 "shop-1\n"
                                 "  shop-2\t\r\n"
                                 "\n"
                                 "   \t \n"
                                 "  # indented comment\n"
                                 "shop-3\r\n"
                                 "shop-1\n"
                                 "a#b\n"
                                 "last-without-newline",
                                 err, sizeof err);
    assert_non_null(m);
    assert_int_equal(set_members_count(m), 5); /* the duplicate is kept once */
    assert_true(has(m, "shop-1"));
    assert_true(has(m, "shop-2"));
    assert_true(has(m, "shop-3"));
    assert_true(has(m, "a#b")); /* only full-line comments */
    assert_true(has(m, "last-without-newline"));
    assert_false(has(m, "shop-"));
    assert_false(has(m, "shop-10"));
    assert_false(has(m, "Shop-1"));
    assert_false(has(m, "# shops on the new service"));
    assert_false(has(m, ""));
    set_members_free(m);
}

static void test_parse_empty(void **state)
{
    (void)state;
    char err[128] = "";
    set_members_t *m = set_members_parse("", 0, err, sizeof err);
    assert_non_null(m);
    assert_int_equal(set_members_count(m), 0);
    assert_false(has(m, "x"));
    set_members_free(m);
    m = parse_str("# only comments\n\n", err, sizeof err);
    assert_non_null(m);
    assert_int_equal(set_members_count(m), 0);
    set_members_free(m);
    set_members_free(NULL);
    assert_false(has(NULL, "x"));
    assert_int_equal(set_members_count(NULL), 0);
}

static void test_parse_bom(void **state)
{
    (void)state;
    set_members_t *m = parse_str("\xef\xbb\xbf"
                                 "first\nsecond\n",
                                 NULL, 0);
    assert_non_null(m);
    assert_true(has(m, "first"));
    set_members_free(m);
}

static void test_parse_whitespace_inside(void **state)
{
    (void)state;
    char err[128] = "";
    assert_null(parse_str("a\nb\nshop 3\n", err, sizeof err));
    assert_string_equal(err, "line 3: member contains whitespace");
    assert_null(parse_str("x\ty\n", err, sizeof err));
    assert_string_equal(err, "line 1: member contains whitespace");
    /* '#' after whitespace starts a comment; inside a member it does not. */
    set_members_t *m = parse_str("shop-1 # pilot\nshop-2\t#x\na#b\n", err, sizeof err);
    assert_non_null(m);
    assert_int_equal(set_members_count(m), 3);
    assert_true(set_members_contains(m, "shop-1", 6));
    assert_true(set_members_contains(m, "a#b", 3));
    set_members_free(m);
    assert_null(parse_str("shop 1 # two words\n", err, sizeof err));
    assert_string_equal(err, "line 1: member contains whitespace");
    /* A CR inside a line (not the one of a CRLF) is whitespace too. */
    assert_null(parse_str("a\rb\n", err, sizeof err));
}

static void test_parse_nul(void **state)
{
    (void)state;
    char err[128] = "";
    const char data[] = "a\nb\0c\n";
    assert_null(set_members_parse(data, sizeof data - 1, err, sizeof err));
    assert_string_equal(err, "line 2: NUL byte");
}

static void test_parse_long_line(void **state)
{
    (void)state;
    char err[128] = "";
    static char data[MAX_SET_LINE_BYTES + 16];
    memset(data, 'x', MAX_SET_LINE_BYTES);
    memcpy(data + MAX_SET_LINE_BYTES, "\r\nok\n", 5);
    set_members_t *m = set_members_parse(data, MAX_SET_LINE_BYTES + 5, err, sizeof err);
    assert_non_null(m); /* exactly the limit, CRLF not counted */
    assert_int_equal(set_members_count(m), 2);
    set_members_free(m);
    memcpy(data, "ok\n", 3);
    memset(data + 3, 'x', MAX_SET_LINE_BYTES + 1);
    assert_null(set_members_parse(data, MAX_SET_LINE_BYTES + 4, err, sizeof err));
    char want[64];
    snprintf(want, sizeof want, "line 2: longer than %d bytes", MAX_SET_LINE_BYTES);
    assert_string_equal(err, want);
    /* err may be absent, or too short for the whole message. */
    assert_null(set_members_parse(data, MAX_SET_LINE_BYTES + 4, NULL, 0));
    char tiny[5];
    assert_null(set_members_parse(data, MAX_SET_LINE_BYTES + 4, tiny, sizeof tiny));
    assert_string_equal(tiny, "line");
}

static void test_parse_many(void **state)
{
    (void)state;
    enum { N = 20000 };
    char *data = malloc(N * 16);
    size_t len = 0;
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(data + len, "id-%d\n", i * 2);
    set_members_t *m = set_members_parse(data, len, NULL, 0);
    assert_non_null(m);
    assert_int_equal(set_members_count(m), N);
    char k[32];
    for (int i = 0; i < 2 * N; i++) {
        snprintf(k, sizeof k, "id-%d", i);
        assert_int_equal(has(m, k), i % 2 == 0);
    }
    set_members_free(m);
    free(data);
}

/* ---- set_t ---- */

static int n_retired;
static void *last_retired;
static void retire_record(void *ctx, void *ptr, void (*free_fn)(void *))
{
    assert_ptr_equal(ctx, &n_retired);
    assert_true(free_fn == set_members_free);
    n_retired++;
    last_retired = ptr;
    free_fn(ptr);
}

static void test_set_swap_retires_old(void **state)
{
    (void)state;
    config_set_t cfg = {.name = "migrated", .file = "/nonexistent"};
    set_t *s = set_new(&cfg, retire_record, &n_retired);
    assert_non_null(s);
    assert_string_equal(set_name(s), "migrated");
    assert_int_equal(set_count(s), 0);
    assert_false(set_contains(s, "a", 1));

    n_retired = 0;
    set_members_t *m1 = parse_str("a\nb\n", NULL, 0);
    set_swap(s, m1);
    assert_int_equal(n_retired, 0); /* nothing to retire the first time */
    assert_int_equal(set_count(s), 2);
    assert_true(set_contains(s, "a", 1));

    set_swap(s, parse_str("c\n", NULL, 0));
    assert_int_equal(n_retired, 1);
    assert_ptr_equal(last_retired, m1);
    assert_false(set_contains(s, "a", 1));
    assert_true(set_contains(s, "c", 1));
    set_free(s);
}

static void test_set_copies_config_strings(void **state)
{
    (void)state;
    char name[] = "shops";
    config_set_t cfg = {.name = name, .file = "/nonexistent"};
    set_t *s = set_new(&cfg, NULL, NULL);
    name[0] = 'X'; /* the snapshot may be freed while the set lives on */
    assert_string_equal(set_name(s), "shops");
    set_free(s);
    set_free(NULL);
}

/* ---- sharing members across a reload ---- */

/* The new set shares the old one's members: each set frees its reference,
 * and the members live until the last one goes (ASan checks both ways). */
static void test_adopt_shares_members(void **state)
{
    (void)state;
    config_set_t cfg = {.name = "shops", .file = "/nonexistent"};
    set_t *old = set_new(&cfg, NULL, NULL), *fresh = set_new(&cfg, NULL, NULL);
    set_t *empty = set_new(&cfg, NULL, NULL);
    char err[128];
    set_swap(old, set_members_parse("1\n2\n", 4, err, sizeof err));
    assert_false(set_adopt(fresh, empty)); /* nothing to share */
    assert_true(set_adopt(fresh, old));
    assert_int_equal(set_count(fresh), 2);
    set_free(old);
    assert_true(set_contains(fresh, "2", 1));
    assert_false(set_contains(fresh, "3", 1));
    set_free(fresh);
    set_free(empty);
}

/* ---- reload from a file ---- */

static char *temp_file(const char *content, size_t len)
{
    char *path = strdup("/tmp/ficus-test-set-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

static void rewrite_file(const char *path, const char *content)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(content, fp);
    fclose(fp);
}

static void test_reload_file(void **state)
{
    (void)state;
    char *path = temp_file("s1\ns2\n", 6);
    config_set_t cfg = {.name = "shops", .file = path};
    set_t *s = set_new(&cfg, NULL, NULL);
    char err[512] = "";
    assert_int_equal(set_reload(s, err, sizeof err), 0);
    assert_int_equal(set_count(s), 2);
    assert_true(set_contains(s, "s2", 2));
    assert_int_equal(set_reload_failures(s), 0);

    rewrite_file(path, "s1\ns2\ns3\n");
    assert_int_equal(set_reload(s, err, sizeof err), 0);
    assert_int_equal(set_count(s), 3);

    /* A broken file keeps the previous members and is counted. */
    rewrite_file(path, "s1\nbad member\n");
    assert_int_equal(set_reload(s, err, sizeof err), FE_PARSE);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "shops"));
    assert_non_null(strstr(err, "line 2: member contains whitespace"));
    assert_int_equal(set_reload_failures(s), 1);
    assert_int_equal(set_count(s), 3);
    assert_true(set_contains(s, "s3", 2));

    unlink(path);
    assert_int_equal(set_reload(s, err, sizeof err), FE_IO);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));
    assert_int_equal(set_reload_failures(s), 2);
    assert_int_equal(set_count(s), 3);
    set_free(s);
    free(path);
}

static void test_reload_file_too_big(void **state)
{
    (void)state;
    char *path = temp_file("", 0);
    /* Sparse: no disk is used, but the read sees MAX_SET_BYTES + 1 bytes. */
    assert_int_equal(truncate(path, (off_t)MAX_SET_BYTES + 1), 0);
    config_set_t cfg = {.name = "big", .file = path};
    set_t *s = set_new(&cfg, NULL, NULL);
    char err[512] = "";
    assert_int_equal(set_reload(s, err, sizeof err), FE_TOOBIG);
    assert_non_null(strstr(err, "larger than"));
    assert_int_equal(set_reload_failures(s), 1);
    unlink(path);
    set_free(s);
    free(path);
}

/* ---- reload over http ---- */

typedef struct server {
    int lfd;
    uint16_t port;
    const char *response; /* sent whole, then the connection is closed */
    size_t response_len;
    char request[2048];
    pthread_t thread;
} server_t;

static void *server_run(void *arg)
{
    server_t *sv = arg;
    int fd = accept(sv->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    size_t got = 0;
    while (got < sizeof sv->request - 1) {
        ssize_t r = read(fd, sv->request + got, sizeof sv->request - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        sv->request[got] = '\0';
        if (strstr(sv->request, "\r\n\r\n"))
            break;
    }
    size_t off = 0;
    while (off < sv->response_len) {
        ssize_t w = send(fd, sv->response + off, sv->response_len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    return NULL;
}

static void server_start(server_t *sv, const char *response)
{
    memset(sv, 0, sizeof *sv);
    sv->response = response;
    sv->response_len = strlen(response);
    sv->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(sv->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(sv->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(sv->lfd, 1), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(sv->lfd, (struct sockaddr *)&a, &al), 0);
    sv->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&sv->thread, NULL, server_run, sv), 0);
}

static void server_stop(server_t *sv)
{
    pthread_join(sv->thread, NULL);
    close(sv->lfd);
}

/* A new set reloaded once from a one-shot server answering `response`. */
static int reload_from(set_t **sp, const char *response, const char *path, server_t *sv, char *err,
                       size_t errlen)
{
    server_start(sv, response);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", sv->port, path);
    config_set_t cfg = {.name = "remote", .url = url};
    *sp = set_new(&cfg, NULL, NULL);
    assert_non_null(*sp);
    int rc = set_reload(*sp, err, errlen);
    server_stop(sv);
    return rc;
}

static void test_reload_http_content_length(void **state)
{
    (void)state;
    server_t sv;
    set_t *s = NULL;
    char err[512] = "";
    int rc = reload_from(&s,
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\n"
                         "a\nb\n# c\n",
                         "/sets/shops.txt?v=2#frag", &sv, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(set_count(s), 2);
    assert_true(set_contains(s, "b", 1));
    assert_int_equal(set_reload_failures(s), 0);
    /* The request: origin-form target without the fragment, Host with port. */
    assert_true(strncmp(sv.request, "GET /sets/shops.txt?v=2 HTTP/1.1\r\n", 34) == 0);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%u\r\n", sv.port);
    assert_non_null(strstr(sv.request, host));
    assert_non_null(strstr(sv.request, "\r\nConnection: close\r\n"));
    set_free(s);
}

static void test_reload_http_chunked(void **state)
{
    (void)state;
    server_t sv;
    set_t *s = NULL;
    char err[512] = "";
    int rc = reload_from(&s,
                         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "4\r\nx1\nx\r\n3\r\n2\ny\r\n0\r\n\r\n",
                         "", &sv, err, sizeof err);
    assert_int_equal(rc, 0);
    /* Chunks join mid-line: "x1\nx" + "2\ny". */
    assert_int_equal(set_count(s), 3);
    assert_true(set_contains(s, "x1", 2));
    assert_true(set_contains(s, "x2", 2));
    assert_true(set_contains(s, "y", 1));
    assert_true(strncmp(sv.request, "GET / HTTP/1.1\r\n", 16) == 0);
    set_free(s);
}

static void test_reload_http_close_delimited(void **state)
{
    (void)state;
    server_t sv;
    set_t *s = NULL;
    char err[512] = "";
    int rc = reload_from(&s, "HTTP/1.0 200 OK\r\n\r\none\ntwo\nthree", "/l", &sv, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_int_equal(set_count(s), 3);
    assert_true(set_contains(s, "three", 5));
    set_free(s);
}

static void test_reload_http_errors_keep_members(void **state)
{
    (void)state;
    server_t sv;
    char err[512] = "";

    static const struct {
        const char *response;
        const char *want_err;
    } cases[] = {
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", "HTTP 404"},
        {"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP 503"},
        {"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", "HTTP 301"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "closed before"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid HTTP"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nbad one\n", "member contains whitespace"},
        {"", "closed before"},
        {"garbage\r\n\r\n", "invalid HTTP"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        server_start(&sv, cases[i].response);
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%u/set", sv.port);
        config_set_t cfg = {.name = "remote", .url = url};
        set_t *s = set_new(&cfg, NULL, NULL);
        /* Give it members first, as a previous successful load would. */
        set_swap(s, parse_str("keep\n", NULL, 0));
        err[0] = '\0';
        int rc = set_reload(s, err, sizeof err);
        server_stop(&sv);
        assert_true(rc < 0);
        if (!strstr(err, cases[i].want_err) || !strstr(err, url))
            fail_msg("case %zu: err \"%s\"", i, err);
        assert_int_equal(set_reload_failures(s), 1);
        assert_int_equal(set_count(s), 1);
        assert_true(set_contains(s, "keep", 4));
        set_free(s);
    }
}

static void test_reload_http_too_big(void **state)
{
    (void)state;
    /* One byte over the cap, sent whole: refused, not truncated. */
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 67108865\r\n\r\n";
    size_t body = (size_t)MAX_SET_BYTES + 1;
    assert_int_equal(body, 67108865);
    char *resp = malloc(sizeof head - 1 + body + 1);
    assert_non_null(resp);
    memcpy(resp, head, sizeof head - 1);
    memset(resp + sizeof head - 1, 'x', body);
    resp[sizeof head - 1 + body] = '\0';
    server_t sv;
    set_t *s = NULL;
    char err[512] = "";
    assert_int_equal(reload_from(&s, resp, "/big", &sv, err, sizeof err), FE_TOOBIG);
    assert_non_null(strstr(err, "larger than"));
    assert_int_equal(set_reload_failures(s), 1);
    set_free(s);
    free(resp);
}

static void test_reload_bad_urls(void **state)
{
    (void)state;
    char err[512] = "";
    static const struct {
        const char *url;
        const char *want_err;
    } cases[] = {
        {"https://127.0.0.1/x", "only http://"},
        {"ftp://h/x", "only http://"},
        {"http:///x", "bad host"},
        {"http://127.0.0.1:99999/x", "bad port"},
        {"http://127.0.0.1:/x", "bad port"},
        {"http://127.0.0.1:8a/x", "bad port"},
        {"http://user:pw@127.0.0.1/x", "credentials"},
        {"http://[::1/x", "bad host"},
        {"http://127.0.0.1/a b", "whitespace"},
        {"http://127.0.0.1/a\r\nX-Injected: 1", "control character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config_set_t cfg = {.name = "u", .url = (char *)cases[i].url};
        set_t *s = set_new(&cfg, NULL, NULL);
        assert_int_equal(set_reload(s, err, sizeof err), FE_INVAL);
        if (!strstr(err, cases[i].want_err))
            fail_msg("case %zu: err \"%s\"", i, err);
        assert_int_equal(set_reload_failures(s), 1);
        set_free(s);
    }
}

static void test_reload_connection_refused(void **state)
{
    (void)state;
    /* A port that was just free and has no listener. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", ntohs(a.sin_port));
    config_set_t cfg = {.name = "u", .url = url};
    set_t *s = set_new(&cfg, NULL, NULL);
    char err[512] = "";
    assert_int_equal(set_reload(s, err, sizeof err), FE_IO);
    assert_non_null(strstr(err, "connect"));
    assert_non_null(strstr(err, url));
    assert_int_equal(set_reload_failures(s), 1);
    set_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_basic),
        cmocka_unit_test(test_parse_empty),
        cmocka_unit_test(test_parse_bom),
        cmocka_unit_test(test_parse_whitespace_inside),
        cmocka_unit_test(test_parse_nul),
        cmocka_unit_test(test_parse_long_line),
        cmocka_unit_test(test_parse_many),
        cmocka_unit_test(test_set_swap_retires_old),
        cmocka_unit_test(test_set_copies_config_strings),
        cmocka_unit_test(test_reload_file),
        cmocka_unit_test(test_reload_file_too_big),
        cmocka_unit_test(test_reload_http_content_length),
        cmocka_unit_test(test_reload_http_chunked),
        cmocka_unit_test(test_reload_http_close_delimited),
        cmocka_unit_test(test_reload_http_errors_keep_members),
        cmocka_unit_test(test_reload_http_too_big),
        cmocka_unit_test(test_reload_bad_urls),
        cmocka_unit_test(test_reload_connection_refused),
        cmocka_unit_test(test_adopt_shares_members),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
