/* http:// URL parsing (core/url.h): the parts set fetches and the trace
 * exporter use, and every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "core/url.h"

static void expect(const char *s, const char *host, bool v6, uint16_t port, const char *path,
                   const char *host_header)
{
    url_http_t u;
    char err[128] = "", hh[300];
    if (url_parse_http(s, &u, err, sizeof err) != 0)
        fail_msg("%s: refused (%s)", s, err);
    assert_string_equal(u.host, host);
    assert_int_equal(u.v6, v6);
    assert_int_equal(u.port_num, port);
    char want_port[8];
    snprintf(want_port, sizeof want_port, "%u", port);
    assert_string_equal(u.port, want_port);
    assert_int_equal(u.path_len, strlen(path));
    assert_memory_equal(u.path, path, u.path_len);
    url_host_header(&u, hh, sizeof hh);
    assert_string_equal(hh, host_header);
}

static void test_parts(void **state)
{
    (void)state;
    expect("http://example.com", "example.com", false, 80, "", "example.com");
    expect("http://10.0.0.1:4318/v1/traces", "10.0.0.1", false, 4318, "/v1/traces",
           "10.0.0.1:4318");
    expect("HTTP://h:80/a?b=1#frag", "h", false, 80, "/a?b=1", "h");
    expect("http://h?x", "h", false, 80, "?x", "h");
    expect("http://[::1]:9000/list", "::1", true, 9000, "/list", "[::1]:9000");
    expect("http://[fe80::1]/", "fe80::1", true, 80, "/", "[fe80::1]");
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"https://h/x", "https is not"}, {"ftp://h/x", "only http://"},
        {"h:80/x", "only http://"},      {"http:///x", "bad host"},
        {"http://:80/x", "bad host"},    {"http://[::1/x", "bad host"},
        {"http://[::1]x/", "bad host"},  {"http://h:99999/x", "bad port"},
        {"http://h:0/x", "bad port"},    {"http://h:/x", "bad port"},
        {"http://h:8a/x", "bad port"},   {"http://u:p@h/x", "credentials"},
        {"http://h/a b", "whitespace"},  {"http://h/a\r\nX-Injected: 1", "control character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        url_http_t u;
        char err[128] = "";
        if (url_parse_http(bad[i].url, &u, err, sizeof err) != FE_INVAL)
            fail_msg("accepted %s", bad[i].url);
        if (!strstr(err, bad[i].why))
            fail_msg("%s: \"%s\" does not say %s", bad[i].url, err, bad[i].why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
