/* policy/session_exchange: the answer judged (sans-I/O), sane tokens, and
 * exchanges on a real loop against a scripted server on 127.0.0.1: a JWT,
 * 401, 404, 500, garbage, no answer in time, a refused connection, a name
 * to resolve, and cancels. Every loop test ends with the loop closed and no
 * handle left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <uv.h>

#include "client/script_server.h"
#include "policy/session_exchange.h"

#define JWT "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"
#define OK_HEAD "HTTP/1.1 200 OK\r\n"
/* The answers below say Content-Length: 50 for JWT, 51 with a newline. */
_Static_assert(sizeof JWT - 1 == 50, "JWT's length");

/* ---- the answer ---- */

static session_state_t judge(int status, const char *body, const char **jwt, size_t *jwt_len,
                             const char **failure)
{
    return session_exchange_answer(status, body, body ? strlen(body) : 0, jwt, jwt_len, failure);
}

static void expect_user(const char *body, const char *want)
{
    const char *jwt, *failure;
    size_t len;
    if (judge(200, body, &jwt, &len, &failure) != SESSION_USER)
        fail_msg("not a user: \"%s\" (%s)", body, failure ? failure : "");
    assert_null(failure);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(jwt, want, len);
}

static void expect_invalid(const char *body)
{
    const char *jwt, *failure;
    size_t len;
    if (judge(200, body, &jwt, &len, &failure) != SESSION_UNAVAILABLE)
        fail_msg("taken as a JWT: \"%s\"", body);
    assert_string_equal(failure, "invalid_answer");
    assert_null(jwt);
}

static void test_answer(void **state)
{
    (void)state;
    expect_user(JWT, JWT);
    expect_user(" \t\r\n" JWT "\r\n", JWT);
    expect_user("a-_b.cc.dddd", "a-_b.cc.dddd");
    static const char *invalid[] = {
        "",
        "  \r\n",
        "aa.bb",       /* two segments */
        "aaaa",        /* one */
        "aa.bb.cc.dd", /* four */
        "aa..cc",      /* an empty one */
        ".bb.cc",
        "aa.bb.",                 /* no signature: alg none */
        "aa.bb.c",                /* 4k+1 characters: not base64 */
        "aa.bb.cc=",              /* padding */
        "aa.b+.cc",               /* base64, not base64url */
        "aa.bb.cc dd",            /* a space inside */
        "aa.bb.cc\n\"more\"",     /* two lines */
        "{\"jwt\":\"aa.bb.cc\"}", /* JSON around it */
        "aa.bb.cc\x00",           /* strlen stops at the NUL: checked below */
    };
    for (size_t i = 0; i + 1 < sizeof invalid / sizeof *invalid; i++)
        expect_invalid(invalid[i]);
    const char *jwt, *failure;
    size_t len;
    assert_int_equal(session_exchange_answer(200, "aa.bb.cc\0", 9, &jwt, &len, &failure),
                     SESSION_UNAVAILABLE);
    /* The size bound: SESSION_JWT_MAX_BYTES, whitespace aside. */
    static char big[SESSION_JWT_MAX_BYTES + 8];
    memset(big, 'a', sizeof big - 1);
    big[0] = ' ';
    big[3] = '.';
    big[6] = '.';
    big[SESSION_JWT_MAX_BYTES + 1] = '\n';
    big[SESSION_JWT_MAX_BYTES + 2] = '\0';
    /* 8192 characters between the space and the newline. */
    assert_int_equal(session_exchange_answer(200, big, strlen(big), &jwt, &len, &failure),
                     (SESSION_JWT_MAX_BYTES - 6) % 4 == 1 ? SESSION_UNAVAILABLE : SESSION_USER);
    big[SESSION_JWT_MAX_BYTES + 1] = 'a';
    big[SESSION_JWT_MAX_BYTES + 2] = 'a';
    assert_int_equal(session_exchange_answer(200, big, strlen(big), &jwt, &len, &failure),
                     SESSION_UNAVAILABLE);
    assert_string_equal(failure, "invalid_answer");
    /* Statuses. */
    assert_int_equal(judge(401, JWT, &jwt, &len, &failure), SESSION_NO_USER);
    assert_null(failure);
    assert_int_equal(judge(404, NULL, &jwt, &len, &failure), SESSION_NO_USER);
    assert_null(failure);
    static const int others[] = {201, 204, 301, 400, 403, 429, 500, 502, 503, 0, -1, 99999};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        assert_int_equal(judge(others[i], JWT, &jwt, &len, &failure), SESSION_UNAVAILABLE);
        assert_string_equal(failure, "status");
        assert_null(jwt);
    }
}

static void test_token_ok(void **state)
{
    (void)state;
    assert_true(session_exchange_token_ok("abc", 3));
    assert_true(session_exchange_token_ok("!~\"%=;,", 7));
    assert_false(session_exchange_token_ok("", 0));
    assert_false(session_exchange_token_ok("a b", 3));
    assert_false(session_exchange_token_ok("a\tb", 3));
    assert_false(session_exchange_token_ok("a\r\nX: y", 7));
    assert_false(session_exchange_token_ok("a\x7f", 2));
    assert_false(session_exchange_token_ok("\xc3\xa9", 2));
    assert_false(session_exchange_token_ok("a\0b", 3));
    static char t[SESSION_TOKEN_MAX_BYTES + 1];
    memset(t, 'x', sizeof t);
    assert_true(session_exchange_token_ok(t, SESSION_TOKEN_MAX_BYTES));
    assert_false(session_exchange_token_ok(t, SESSION_TOKEN_MAX_BYTES + 1));
}

/* ---- exchanges on a loop ---- */

typedef struct outcome {
    int calls;
    session_state_t result;
    char failure[32];
    char jwt[128];
    size_t jwt_len;
} outcome_t;

static void on_done(void *ctx, session_state_t result, const char *failure, const char *jwt,
                    size_t jwt_len)
{
    outcome_t *o = ctx;
    o->calls++;
    o->result = result;
    snprintf(o->failure, sizeof o->failure, "%s", failure ? failure : "");
    o->jwt_len = jwt_len < sizeof o->jwt ? jwt_len : sizeof o->jwt;
    if (jwt_len)
        memcpy(o->jwt, jwt, o->jwt_len);
}

static config_session_exchange_t cfg_for(char *url, size_t cap, const char *host, uint16_t port,
                                         uint64_t timeout_ms)
{
    snprintf(url, cap, "http://%s:%u/v1/jwt?x=1", host, port);
    return (config_session_exchange_t){.cookie = "sid", .url = url, .timeout_ms = timeout_ms};
}

static void on_cancel_timer(uv_timer_t *t)
{
    session_exchange_cancel(t->data);
    uv_close((uv_handle_t *)t, NULL);
}

/* One exchange of token on a fresh loop, run until nothing is left;
 * cancelled at once (cancel_ms 0), after cancel_ms, or never (-1). */
static void run_one(const config_session_exchange_t *cfg, const char *token, int cancel_ms,
                    outcome_t *o)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    memset(o, 0, sizeof *o);
    session_exchange_t *x = session_exchange_start(&loop, cfg, token, strlen(token), on_done, o);
    assert_non_null(x);
    uv_timer_t t;
    if (cancel_ms == 0) {
        session_exchange_cancel(x);
    } else if (cancel_ms > 0) {
        uv_timer_init(&loop, &t);
        t.data = x;
        uv_timer_start(&t, on_cancel_timer, (uint64_t)cancel_ms, 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void run_script(const char *answer, after_t after, uint64_t timeout_ms, outcome_t *o,
                       script_server_t *sv)
{
    step_t steps[] = {{answer, after}};
    script_server_start(sv, steps, 1);
    char url[128];
    config_session_exchange_t cfg = cfg_for(url, sizeof url, "127.0.0.1", sv->port, timeout_ms);
    run_one(&cfg, "tok-123", -1, o);
    script_server_stop(sv);
}

static void test_jwt(void **state)
{
    (void)state;
    script_server_t sv;
    outcome_t o;
    run_script(OK_HEAD "Content-Type: application/jwt\r\nContent-Length: 51\r\n\r\n" JWT "\n",
               AFTER_CLOSE, 5000, &o, &sv);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, SESSION_USER);
    assert_string_equal(o.failure, "");
    assert_int_equal(o.jwt_len, strlen(JWT));
    assert_memory_equal(o.jwt, JWT, o.jwt_len);
    char want[256];
    snprintf(want, sizeof want,
             "GET /v1/jwt?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nX-Session-Token: tok-123\r\n"
             "User-Agent: ficus\r\nConnection: close\r\n\r\n",
             sv.port);
    assert_string_equal(sv.request, want);
}

static void test_statuses(void **state)
{
    (void)state;
    static const struct {
        const char *answer;
        session_state_t result;
        const char *failure;
    } cases[] = {
        {"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nnope!", SESSION_NO_USER, ""},
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", SESSION_NO_USER, ""},
        {"HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nbad", SESSION_UNAVAILABLE, "status"},
        {"HTTP/1.1 503 Busy\r\n\r\n", SESSION_UNAVAILABLE, "status"},
        {OK_HEAD "Content-Length: 9\r\n\r\nnot a jwt", SESSION_UNAVAILABLE, "invalid_answer"},
        {OK_HEAD "Content-Length: 100\r\n\r\naa.bb.cc", SESSION_UNAVAILABLE, "invalid_answer"},
        {"garbage, not HTTP at all\r\n\r\n", SESSION_UNAVAILABLE, "invalid_answer"},
        {NULL, SESSION_UNAVAILABLE, "connect_error"}, /* closed before any answer */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        script_server_t sv;
        outcome_t o;
        run_script(cases[i].answer, AFTER_CLOSE, 5000, &o, &sv);
        assert_int_equal(o.calls, 1);
        if (o.result != cases[i].result || strcmp(o.failure, cases[i].failure) != 0)
            fail_msg("case %zu: result %d (%s)", i, o.result, o.failure);
        assert_int_equal(o.jwt_len, 0);
    }
    /* A body larger than the bound is not read whole: invalid. */
    static char big[SESSION_ANSWER_MAX_BYTES + 256];
    int n = snprintf(big, sizeof big, OK_HEAD "Content-Length: %d\r\n\r\n",
                     SESSION_ANSWER_MAX_BYTES + 1);
    memset(big + n, 'a', SESSION_ANSWER_MAX_BYTES + 1);
    script_server_t sv;
    outcome_t o;
    run_script(big, AFTER_CLOSE, 5000, &o, &sv);
    assert_int_equal(o.result, SESSION_UNAVAILABLE);
    assert_string_equal(o.failure, "invalid_answer");
}

static void test_timeout(void **state)
{
    (void)state;
    script_server_t sv;
    outcome_t o;
    uint64_t t0 = uv_hrtime();
    run_script(NULL, AFTER_WAIT, 100, &o, &sv);
    uint64_t elapsed_ms = (uv_hrtime() - t0) / 1000000u;
    if (elapsed_ms < 99)
        fail_msg("timed out after %llu ms", (unsigned long long)elapsed_ms);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, SESSION_UNAVAILABLE);
    assert_string_equal(o.failure, "timeout");
}

static void test_refused(void **state)
{
    (void)state;
    uint16_t port;
    int fd = script_closed_port(&port);
    char url[128];
    config_session_exchange_t cfg = cfg_for(url, sizeof url, "127.0.0.1", port, 5000);
    outcome_t o;
    run_one(&cfg, "tok", -1, &o);
    close(fd);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, SESSION_UNAVAILABLE);
    assert_string_equal(o.failure, "connect_error");
}

static void test_name_resolved(void **state)
{
    (void)state;
    /* Twice: resolved, then from this thread's cache. */
    static const step_t steps[] = {
        {OK_HEAD "Content-Length: 50\r\n\r\n" JWT, AFTER_CLOSE},
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", AFTER_CLOSE}};
    script_server_t sv;
    script_server_start(&sv, steps, 2);
    char url[128];
    config_session_exchange_t cfg = cfg_for(url, sizeof url, "localhost", sv.port, 5000);
    outcome_t o[2];
    run_one(&cfg, "tok", -1, &o[0]);
    run_one(&cfg, "tok", -1, &o[1]);
    script_server_stop(&sv);
    assert_int_equal(o[0].result, SESSION_USER);
    assert_int_equal(o[1].result, SESSION_NO_USER);
    assert_int_equal(sv.accepts, 2);
    char want[64];
    snprintf(want, sizeof want, "Host: localhost:%u\r\n", sv.port);
    assert_non_null(strstr(sv.request, want));
    /* A name that does not resolve. */
    cfg = cfg_for(url, sizeof url, "no-such-host.invalid", 80, 2000);
    run_one(&cfg, "tok", -1, &o[0]);
    assert_int_equal(o[0].calls, 1);
    assert_int_equal(o[0].result, SESSION_UNAVAILABLE);
    if (strcmp(o[0].failure, "connect_error") != 0 && strcmp(o[0].failure, "timeout") != 0)
        fail_msg("failure %s", o[0].failure);
}

static void test_cancel(void **state)
{
    (void)state;
    /* While the server holds the request: it sees the connection close. */
    static const step_t steps[] = {{NULL, AFTER_WAIT}};
    script_server_t sv;
    script_server_start(&sv, steps, 1);
    char url[128];
    config_session_exchange_t cfg = cfg_for(url, sizeof url, "127.0.0.1", sv.port, 5000);
    outcome_t o;
    run_one(&cfg, "tok", 50, &o);
    script_server_stop(&sv);
    assert_int_equal(o.calls, 0);
    assert_non_null(strstr(sv.request, "X-Session-Token: tok\r\n"));
    /* At once, and while a name is being resolved. */
    uint16_t port;
    int fd = script_closed_port(&port);
    cfg = cfg_for(url, sizeof url, "127.0.0.1", port, 5000);
    run_one(&cfg, "tok", 0, &o);
    assert_int_equal(o.calls, 0);
    cfg = cfg_for(url, sizeof url, "localhost", port, 5000);
    run_one(&cfg, "tok", 0, &o);
    assert_int_equal(o.calls, 0);
    close(fd);
}

static void test_cannot_start(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    outcome_t o = {0};
    char url[128];
    config_session_exchange_t cfg = cfg_for(url, sizeof url, "127.0.0.1", 1, 1000);
    assert_null(session_exchange_start(&loop, &cfg, "a b", 3, on_done, &o));
    assert_null(session_exchange_start(&loop, &cfg, "", 0, on_done, &o));
    assert_null(session_exchange_start(&loop, &cfg, "a\r\nX-Evil: 1", 13, on_done, &o));
    config_session_exchange_t bad = cfg;
    bad.url = "https://session.internal/v1/jwt";
    assert_null(session_exchange_start(&loop, &bad, "tok", 3, on_done, &o));
    bad.url = NULL;
    assert_null(session_exchange_start(&loop, &bad, "tok", 3, on_done, &o));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(o.calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer),        cmocka_unit_test(test_token_ok),
        cmocka_unit_test(test_jwt),           cmocka_unit_test(test_statuses),
        cmocka_unit_test(test_timeout),       cmocka_unit_test(test_refused),
        cmocka_unit_test(test_name_resolved), cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_cannot_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
