/* Address and CIDR parsing (core/addr.h): the host:port forms of the config
 * file and their errors, and CIDR matching as ip_allow/ip_deny and
 * trusted_proxies use it, v4-mapped v6 included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "core/addr.h"
#include "core/errors.h"

static void expect_split(const char *s, const char *host, uint16_t port)
{
    addr_hostport_t hp;
    const char *why = "unset";
    int rc = addr_split(s, &hp, &why);
    if (rc != 0)
        fail_msg("%s: %s", s, why ? why : "(no reason)");
    assert_null(why);
    assert_string_equal(hp.host, host);
    assert_int_equal(hp.port, port);
}

static void expect_split_error(const char *s)
{
    addr_hostport_t hp;
    const char *why = NULL;
    if (addr_split(s, &hp, &why) != FE_INVAL)
        fail_msg("accepted: \"%s\"", s ? s : "(null)");
    assert_non_null(why);
    assert_true(why[0] != '\0');
}

static void test_split_forms(void **state)
{
    (void)state;
    expect_split("127.0.0.1:80", "127.0.0.1", 80);
    expect_split("legacy.internal:8080", "legacy.internal", 8080);
    expect_split("[::1]:443", "::1", 443);
    expect_split("[2001:db8::1]:65535", "2001:db8::1", 65535);
    expect_split(":9901", "", 9901);
    expect_split("0.0.0.0:1", "0.0.0.0", 1);
}

static void test_split_errors(void **state)
{
    (void)state;
    expect_split_error(NULL);
    expect_split_error("");
    expect_split_error("localhost");
    expect_split_error("localhost:");
    expect_split_error("localhost:http");
    expect_split_error("localhost:0");
    expect_split_error("localhost:65536");
    expect_split_error("localhost:99999999999999999999");
    expect_split_error("localhost:-1");
    expect_split_error("localhost:+80");
    expect_split_error("localhost:80 ");
    expect_split_error("::1:80");
    expect_split_error("[::1]80");
    expect_split_error("[::1");
    expect_split_error("[::1]:");
    expect_split_error("[::1]:x");
}

static void test_split_host_length(void **state)
{
    (void)state;
    char s[300];
    memset(s, 'h', 255);
    strcpy(s + 255, ":80");
    addr_hostport_t hp;
    const char *why;
    assert_int_equal(addr_split(s, &hp, &why), 0);
    assert_int_equal(strlen(hp.host), 255);
    memset(s, 'h', 256);
    strcpy(s + 256, ":80");
    expect_split_error(s);
}

static void test_numeric(void **state)
{
    (void)state;
    addr_hostport_t hp = {"10.1.2.3", 8080};
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(addr_numeric(&hp, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)&ss;
    assert_int_equal(ntohs(v4->sin_port), 8080);
    assert_int_equal(ntohl(v4->sin_addr.s_addr), 0x0a010203);

    char text[64];
    assert_int_equal(addr_format((struct sockaddr *)&ss, text, sizeof text), 13);
    assert_string_equal(text, "10.1.2.3:8080");
    assert_int_equal(addr_format_ip((struct sockaddr *)&ss, text, sizeof text), 8);
    assert_string_equal(text, "10.1.2.3");

    addr_hostport_t any = {"", 9901};
    assert_int_equal(addr_numeric(&any, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(((struct sockaddr_in *)&ss)->sin_addr.s_addr, htonl(INADDR_ANY));

    addr_hostport_t v6 = {"::1", 443};
    assert_int_equal(addr_numeric(&v6, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    addr_format((struct sockaddr *)&ss, text, sizeof text);
    assert_string_equal(text, "[::1]:443");

    addr_hostport_t name = {"legacy.internal", 80};
    assert_int_equal(addr_numeric(&name, &ss, &len), FE_INVAL);
}

/* --------------------------------------------------------------- CIDR */

static cidr_t cidr(const char *s)
{
    cidr_t c;
    if (cidr_parse(s, &c) != 0)
        fail_msg("refused: %s", s);
    return c;
}

static bool match(const cidr_t *c, const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr), 1);
        ss.ss_family = AF_INET6;
    }
    bool m = cidr_match(c, (struct sockaddr *)&ss);
    /* The textual form agrees with the sockaddr form. */
    assert_int_equal(cidr_match_text(c, ip, strlen(ip)), m);
    return m;
}

static void test_cidr_parse(void **state)
{
    (void)state;
    cidr_t c = cidr("10.0.0.0/8");
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 8);
    c = cidr("192.0.2.1");
    assert_int_equal(c.prefix, 32);
    c = cidr("::1");
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 128);
    c = cidr("2001:db8::/32");
    assert_int_equal(c.prefix, 32);
    c = cidr("0.0.0.0/0");
    assert_int_equal(c.prefix, 0);
    c = cidr("::/0");
    assert_int_equal(c.prefix, 0);
}

static void test_cidr_parse_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/8x",
        "10.0.0.0/-1",
        "10.0.0.0/ 8",
        "10.0.0/8",
        "::/129",
        "abc",
        "10.0.0.0/8/8",
        "1.2.3.4.5",
        "[::1]/128",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cidr_t c;
        if (cidr_parse(bad[i], &c) != FE_INVAL)
            fail_msg("accepted: \"%s\"", bad[i]);
    }
}

static void test_cidr_host_bits_cleared(void **state)
{
    (void)state;
    cidr_t c = cidr("10.255.7.9/12");
    static const uint8_t want4[4] = {10, 240, 0, 0};
    assert_memory_equal(c.bytes, want4, 4);
    c = cidr("2001:db8:ffff::1/36");
    static const uint8_t want6[16] = {0x20, 0x01, 0x0d, 0xb8, 0xf0};
    assert_memory_equal(c.bytes, want6, 16);
    /* And matching works against the cleared network. */
    assert_true(match(&c, "2001:db8:f000::5"));
    assert_false(match(&c, "2001:db8:e000::5"));
}

static void test_cidr_match_v4(void **state)
{
    (void)state;
    cidr_t c = cidr("10.0.0.0/8");
    assert_true(match(&c, "10.0.0.0"));
    assert_true(match(&c, "10.255.255.255"));
    assert_false(match(&c, "11.0.0.0"));
    assert_false(match(&c, "9.255.255.255"));
    c = cidr("172.16.0.0/12");
    assert_true(match(&c, "172.31.255.1"));
    assert_false(match(&c, "172.32.0.1"));
    c = cidr("192.0.2.7");
    assert_true(match(&c, "192.0.2.7"));
    assert_false(match(&c, "192.0.2.6"));
    c = cidr("0.0.0.0/0");
    assert_true(match(&c, "1.2.3.4"));
    assert_true(match(&c, "255.255.255.255"));
    /* A v4 rule never matches a plain v6 address. */
    assert_false(match(&c, "2001:db8::1"));
}

static void test_cidr_match_v6(void **state)
{
    (void)state;
    cidr_t c = cidr("2001:db8::/32");
    assert_true(match(&c, "2001:db8::1"));
    assert_true(match(&c, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert_false(match(&c, "2001:db9::1"));
    assert_false(match(&c, "10.0.0.1"));
    c = cidr("::1");
    assert_true(match(&c, "::1"));
    assert_false(match(&c, "::2"));
    c = cidr("::/0");
    assert_true(match(&c, "fe80::1"));
}

/* A dual-stack listener sees v4 clients as ::ffff:a.b.c.d: v4 rules apply. */
static void test_cidr_v4_mapped(void **state)
{
    (void)state;
    cidr_t v4 = cidr("10.0.0.0/8");
    assert_true(match(&v4, "::ffff:10.1.2.3"));
    assert_false(match(&v4, "::ffff:11.1.2.3"));
    assert_false(match(&v4, "::10.1.2.3")); /* v4-compatible is not v4-mapped */
    cidr_t single = cidr("192.0.2.7");
    assert_true(match(&single, "::ffff:192.0.2.7"));
    /* And a v4-mapped rule applies to a v4 client. */
    cidr_t mapped = cidr("::ffff:10.0.0.0/104");
    assert_true(match(&mapped, "10.9.9.9"));
    assert_false(match(&mapped, "11.9.9.9"));
}

static void test_cidr_match_text_edges(void **state)
{
    (void)state;
    cidr_t c = cidr("10.0.0.0/8");
    /* Only len bytes count: an X-Forwarded-For element inside a list. */
    static const char list[] = "10.1.2.3, 203.0.113.9";
    assert_true(cidr_match_text(&c, list, 8));
    assert_false(cidr_match_text(&c, list + 10, 11));
    assert_false(cidr_match_text(&c, "", 0));
    assert_false(cidr_match_text(&c, " 10.1.2.3", 9));
    assert_false(cidr_match_text(&c, "10.1.2.3 ", 9));
    assert_false(cidr_match_text(&c, "unknown", 7));
    assert_false(cidr_match_text(&c, "10.1.2.3:80", 11));
    char longtext[100];
    memset(longtext, '1', sizeof longtext);
    assert_false(cidr_match_text(&c, longtext, sizeof longtext));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_forms),
        cmocka_unit_test(test_split_errors),
        cmocka_unit_test(test_split_host_length),
        cmocka_unit_test(test_numeric),
        cmocka_unit_test(test_cidr_parse),
        cmocka_unit_test(test_cidr_parse_errors),
        cmocka_unit_test(test_cidr_host_bits_cleared),
        cmocka_unit_test(test_cidr_match_v4),
        cmocka_unit_test(test_cidr_match_v6),
        cmocka_unit_test(test_cidr_v4_mapped),
        cmocka_unit_test(test_cidr_match_text_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
