/* admin/admin.h and admin/endpoints.h: admin_handle with fake hooks (every
 * endpoint, methods, the bearer token, unknown paths), and the admin
 * listener on a real loop (127.0.0.1 port 0) with a client thread: a
 * request answered, a broken head answered 400, a client that goes away;
 * each loop ends with no handle left. */
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
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include "admin/admin.h"
#include "admin/endpoints.h"
#include "core/errors.h"

/* ---------------------------------------------------------- fake gateway */

typedef struct fake {
    bool draining;
    bool api_down; /* the required group has no usable target */
    int panic;
    const char *token;
    uint32_t weights[2];
    int set_calls;
    bool config_fails;
    bool rollout; /* route "main" has one */
    int actions;  /* rollout actions run */
} fake_t;

static bool fake_draining(void *ctx) { return ((fake_t *)ctx)->draining; }
static size_t fake_n_groups(void *ctx) { return (void)ctx, 2; }

static void fake_group(void *ctx, size_t g, admin_group_info_t *out)
{
    fake_t *f = ctx;
    if (g == 0)
        *out = (admin_group_info_t){.name = "api",
                                    .n_targets = 2,
                                    .required = true,
                                    .panic = f->panic,
                                    .usable_targets = f->api_down ? 0 : 2,
                                    .connections = 4,
                                    .pending = 1,
                                    .requests = 3,
                                    .max_connections = 100,
                                    .max_pending = 10,
                                    .max_requests = 50};
    else
        *out = (admin_group_info_t){.name = "spare", .n_targets = 1, .usable_targets = 0};
}

static void fake_target(void *ctx, size_t g, size_t t, admin_target_info_t *out)
{
    fake_t *f = ctx;
    static const char *const names[2][2] = {{"a1", "a2"}, {"s1", NULL}};
    out->name = names[g][t];
    out->usable = g == 0 && !f->api_down;
    out->health_check_ok = true;
    if (g == 0 && t == 1) {
        out->ejected = true;
        out->ejected_for_ms = 1500;
        out->ejections = 2;
        out->consecutive_errors = 5;
    }
    if (g == 0) {
        snprintf(out->address_buf, sizeof out->address_buf, "10.0.0.%zu:80", t + 1);
        out->address = out->address_buf;
    }
    out->inflight = (uint32_t)t;
}

static size_t fake_n_routes(void *ctx) { return (void)ctx, 2; }

static void fake_route(void *ctx, size_t r, admin_route_info_t *out)
{
    fake_t *f = ctx;
    if (r == 0) {
        out->name = "unnamed-first";
        out->n_backends = 1;
        out->backends[0] = "spare";
        out->weights[0] = 9;
        return;
    }
    out->name = "main";
    out->n_backends = 2;
    out->backends[0] = "api";
    out->backends[1] = "spare";
    out->weights[0] = f->weights[0];
    out->weights[1] = f->weights[1];
    out->has_rollout = f->rollout;
}

static void fake_set_weights(void *ctx, size_t r, const uint32_t *w)
{
    fake_t *f = ctx;
    assert_int_equal(r, 1);
    f->weights[0] = w[0];
    f->weights[1] = w[1];
    f->set_calls++;
}

static json_t *fake_config(void *ctx)
{
    fake_t *f = ctx;
    return f->config_fails ? NULL : json_pack("{s:s}", "admin", "yes");
}

static const char *fake_token(void *ctx) { return ((fake_t *)ctx)->token; }

/* Route 1 ("main") has a shadow, route 0 none. */
static json_t *fake_route_shadow(void *ctx, size_t r)
{
    (void)ctx;
    return r == 1 ? json_pack("{s:s,s:i}", "route", "main", "compared", 0) : NULL;
}

static void fake_shadow_metrics(void *ctx, buf_t *out)
{
    (void)ctx;
    buf_append_str(out, "ficus_shadow_requests_total{route=\"main\",result=\"match\"} 0\n");
}

static json_t *fake_rollout(void *ctx, size_t r)
{
    fake_t *f = ctx;
    assert_int_equal(r, 1);
    return json_pack("{s:s,s:i,s:i}", "state", "step", "canary_percent", 5, "actions", f->actions);
}

/* promote works, resume makes no sense now, anything else is unknown. */
static int fake_rollout_action(void *ctx, size_t r, const char *action, size_t len)
{
    fake_t *f = ctx;
    assert_int_equal(r, 1);
    if (len == 7 && memcmp(action, "promote", 7) == 0) {
        f->actions++;
        return 0;
    }
    return len == 6 && memcmp(action, "resume", 6) == 0 ? FE_INVAL : FE_NOTFOUND;
}

static void fake_rollout_metrics(void *ctx, buf_t *out)
{
    (void)ctx;
    buf_append_str(out, "ficus_rollout_step{route=\"main\"} 5\n");
}

static admin_hooks_t hooks_for(fake_t *f)
{
    memset(f, 0, sizeof *f);
    f->weights[0] = 3;
    f->weights[1] = 1;
    return (admin_hooks_t){.ctx = f,
                           .draining = fake_draining,
                           .n_groups = fake_n_groups,
                           .group = fake_group,
                           .target = fake_target,
                           .n_routes = fake_n_routes,
                           .route = fake_route,
                           .set_weights = fake_set_weights,
                           .config = fake_config,
                           .token = fake_token,
                           .route_shadow = fake_route_shadow,
                           .shadow_metrics = fake_shadow_metrics,
                           .rollout = fake_rollout,
                           .rollout_action = fake_rollout_action,
                           .rollout_metrics = fake_rollout_metrics};
}

/* One request through admin_handle; the body is left in out (NUL-ended). */
typedef struct reply {
    int status;
    admin_response_t resp;
    buf_t body;
} reply_t;

static void call(const admin_hooks_t *h, const char *method, const char *path, const char *body,
                 const char *authz, reply_t *out)
{
    admin_request_t r = {.method = method,
                         .method_len = strlen(method),
                         .path = path,
                         .path_len = strlen(path),
                         .body = body,
                         .body_len = body ? strlen(body) : 0,
                         .authorization = authz,
                         .authorization_len = authz ? strlen(authz) : 0};
    buf_init(&out->body, 0);
    memset(&out->resp, 0, sizeof out->resp);
    out->status = admin_handle(h, &r, &out->body, &out->resp);
    assert_int_equal(out->status, out->resp.status);
    buf_append(&out->body, "", 1);
}

static const char *text(const reply_t *r) { return r->body.data; }

static void done(reply_t *r) { buf_deinit(&r->body); }

/* ------------------------------------------------------- admin_handle */

static void test_healthz_and_methods(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    call(&h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(text(&r), "ok\n");
    assert_null(r.resp.header);
    done(&r);
    call(&h, "HEAD", "/healthz?probe=1", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    done(&r);
    call(&h, "POST", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.resp.header, "Allow: GET, HEAD\r\n");
    assert_non_null(strstr(text(&r), "\"method_not_allowed\""));
    done(&r);
}

static void test_readyz(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    call(&h, "GET", "/readyz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(text(&r), "ready\n");
    done(&r);
    /* A group that is not required may be empty; a required one may not. */
    f.api_down = true;
    call(&h, "GET", "/readyz", NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.resp.content_type, "application/json");
    assert_string_equal(
        text(&r),
        "{\"ready\":false,\"reason\":\"required target group api has no healthy target\"}\n");
    done(&r);
    f.draining = true;
    call(&h, "GET", "/readyz", NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(text(&r), "{\"ready\":false,\"reason\":\"draining\"}\n");
    done(&r);
    /* No hooks at all: ready. */
    admin_hooks_t none = {0};
    call(&none, "GET", "/readyz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    done(&r);
}

static void test_metrics(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    h.metrics = metrics_registry_new(1, "test");
    assert_non_null(h.metrics);
    f.panic = 1;
    reply_t r;
    call(&h, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.resp.content_type, "text/plain; version=0.0.4; charset=utf-8");
    const char *want[] = {
        "ficus_backend_weight{route=\"main\",target_group=\"api\"} 3\n",
        "ficus_backend_weight{route=\"main\",target_group=\"spare\"} 1\n",
        "ficus_backend_weight{route=\"unnamed-first\",target_group=\"spare\"} 9\n",
        "ficus_target_healthy{target_group=\"api\",target=\"a1\"} 1\n",
        "ficus_target_healthy{target_group=\"spare\",target=\"s1\"} 0\n",
        "ficus_target_ejected{target_group=\"api\",target=\"a2\"} 1\n",
        "ficus_target_ejected{target_group=\"api\",target=\"a1\"} 0\n",
        "ficus_panic_mode{target_group=\"api\"} 1\n",
        "ficus_panic_mode{target_group=\"spare\"} 0\n",
        "ficus_access_log_dropped_lines_total 0\n",
        "ficus_shadow_requests_total{route=\"main\",result=\"match\"} 0\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text(&r), want[i]))
            fail_msg("missing from /metrics: %s", want[i]);
    done(&r);
    metrics_registry_free(h.metrics);
    /* Without a registry only the access-log line is left. */
    h.metrics = NULL;
    call(&h, "GET", "/metrics", NULL, NULL, &r);
    assert_null(strstr(text(&r), "ficus_backend_weight"));
    assert_non_null(strstr(text(&r), "ficus_access_log_dropped_lines_total 0\n"));
    done(&r);
}

static void test_config(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    call(&h, "GET", "/config?x=1", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.resp.content_type, "application/json");
    assert_string_equal(text(&r), "{\"admin\":\"yes\"}\n");
    done(&r);
    call(&h, "PUT", "/config", "{}", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.resp.header, "Allow: GET\r\n");
    done(&r);
    f.config_fails = true;
    call(&h, "GET", "/config", NULL, NULL, &r);
    assert_int_equal(r.status, 500);
    done(&r);
}

static void test_target_groups(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    call(&h, "GET", "/target_groups", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_error_t jerr;
    json_t *j = json_loads(text(&r), 0, &jerr);
    assert_non_null(j);
    json_t *api = json_object_get(j, "api");
    assert_non_null(api);
    assert_int_equal(json_integer_value(json_object_get(api, "healthy_targets")), 2);
    assert_true(json_is_true(json_object_get(api, "required")));
    json_t *cb = json_object_get(api, "circuit_breaker");
    assert_int_equal(json_integer_value(json_object_get(cb, "connections")), 4);
    assert_int_equal(json_integer_value(json_object_get(cb, "pending")), 1);
    assert_int_equal(json_integer_value(json_object_get(cb, "requests")), 3);
    json_t *lim = json_object_get(api, "limits");
    assert_int_equal(json_integer_value(json_object_get(lim, "max_connections")), 100);
    assert_int_equal(json_integer_value(json_object_get(lim, "max_pending")), 10);
    assert_int_equal(json_integer_value(json_object_get(lim, "max_requests")), 50);
    json_t *targets = json_object_get(api, "targets");
    assert_int_equal(json_array_size(targets), 2);
    json_t *a2 = json_array_get(targets, 1);
    assert_string_equal(json_string_value(json_object_get(a2, "target")), "a2");
    assert_string_equal(json_string_value(json_object_get(a2, "address")), "10.0.0.2:80");
    assert_true(json_is_true(json_object_get(a2, "ejected")));
    assert_int_equal(json_integer_value(json_object_get(a2, "ejected_for_ms")), 1500);
    assert_int_equal(json_integer_value(json_object_get(a2, "ejections")), 2);
    assert_int_equal(json_integer_value(json_object_get(a2, "consecutive_errors")), 5);
    assert_int_equal(json_integer_value(json_object_get(a2, "inflight")), 1);
    /* An unresolved target's address is null. */
    json_t *s1 = json_array_get(json_object_get(json_object_get(j, "spare"), "targets"), 0);
    assert_true(json_is_null(json_object_get(s1, "address")));
    assert_true(json_is_false(json_object_get(s1, "healthy")));
    json_decref(j);
    done(&r);
    call(&h, "DELETE", "/target_groups", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.resp.header, "Allow: GET\r\n");
    done(&r);
}

static void test_weights_get_put(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    call(&h, "GET", "/routes/main/weights", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(text(&r), "{\"route\":\"main\",\"weights\":{\"api\":3,\"spare\":1}}\n");
    done(&r);
    call(&h, "PUT", "/routes/main/weights", "{\"spare\":5}", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(f.set_calls, 1);
    assert_int_equal(f.weights[0], 3); /* untouched: not in the body */
    assert_int_equal(f.weights[1], 5);
    assert_string_equal(text(&r), "{\"route\":\"main\",\"weights\":{\"api\":3,\"spare\":5}}\n");
    done(&r);
    call(&h, "DELETE", "/routes/main/weights", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.resp.header, "Allow: GET, PUT\r\n");
    done(&r);
    call(&h, "GET", "/routes/nope/weights", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    done(&r);
    char long_path[400] = "/routes/";
    memset(long_path + 8, 'x', 300);
    strcpy(long_path + 308, "/weights");
    call(&h, "GET", long_path, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    done(&r);
}

/* One request that must answer status; its body is dropped. */
static void expect_status(const admin_hooks_t *h, const char *method, const char *path, int status)
{
    reply_t r;
    call(h, method, path, NULL, NULL, &r);
    if (r.status != status)
        fail_msg("%s %.60s: %d, not %d: %s", method, path, r.status, status, text(&r));
    done(&r);
}

static void test_route_shadow(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    call(&h, "GET", "/routes/main/shadow", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(text(&r), "{\"route\":\"main\",\"compared\":0}\n");
    done(&r);
    call(&h, "POST", "/routes/main/shadow", "{}", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.resp.header, "Allow: GET\r\n");
    done(&r);
    /* A route without shadow, an unknown route, names empty or too long. */
    char long_path[400] = "/routes/";
    memset(long_path + 8, 'x', 300);
    strcpy(long_path + 308, "/shadow");
    const char *missing[] = {"/routes/unnamed-first/shadow", "/routes/nope/shadow",
                             "/routes//shadow", "/routes/main/shadow/", long_path};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++)
        expect_status(&h, "GET", missing[i], 404);
    /* No hook: no route has a shadow. */
    h.route_shadow = NULL;
    expect_status(&h, "GET", "/routes/main/shadow", 404);
}

static void test_weights_put_refused(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    static const struct {
        const char *body, *message;
    } bad[] = {
        {"[1,2]", "body must be a JSON object of target group name to weight"},
        {"not json", "body must be a JSON object of target group name to weight"},
        {"{\"other\":1}", "\\\"other\\\" is not a backend of route main"},
        {"{\"api\":-1}", "weight of \\\"api\\\" must be an integer from 0 to 1000000"},
        {"{\"api\":1000001}", "weight of \\\"api\\\" must be an integer from 0 to 1000000"},
        {"{\"api\":\"2\"}", "weight of \\\"api\\\" must be an integer from 0 to 1000000"},
        {"{\"api\":0,\"spare\":0}", "at least one weight must be above 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reply_t r;
        call(&h, "PUT", "/routes/main/weights", bad[i].body, NULL, &r);
        assert_int_equal(r.status, 400);
        if (!strstr(text(&r), bad[i].message))
            fail_msg("%s: got %s", bad[i].body, text(&r));
        done(&r);
    }
    assert_int_equal(f.set_calls, 0);
    assert_int_equal(f.weights[0], 3);
    assert_int_equal(f.weights[1], 1);
}

static void test_rollout_endpoints(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    /* No rollout on the route: 404 for both. */
    call(&h, "GET", "/routes/main/rollout", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(text(&r), "this route has no rollout"));
    done(&r);
    call(&h, "POST", "/routes/main/rollout/promote", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    done(&r);
    assert_int_equal(f.actions, 0);
    f.rollout = true;
    call(&h, "GET", "/routes/main/rollout", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(text(&r), "{\"state\":\"step\",\"canary_percent\":5,\"actions\":0}\n");
    done(&r);
    call(&h, "POST", "/routes/main/rollout/promote", "", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(f.actions, 1);
    assert_non_null(strstr(text(&r), "\"actions\":1"));
    done(&r);
    call(&h, "POST", "/routes/main/rollout/resume", NULL, NULL, &r);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(text(&r), "resume makes no sense while the rollout is step"));
    done(&r);
    static const struct {
        const char *method, *path;
        int status;
        const char *allow;
    } cases[] = {
        {"POST", "/routes/main/rollout/explode", 404, NULL},
        {"POST", "/routes/nope/rollout/promote", 404, NULL},
        {"GET", "/routes/nope/rollout", 404, NULL},
        {"POST", "/routes//rollout/promote", 404, NULL},
        {"POST", "/routes/main/rollout/", 404, NULL},
        {"POST", "/routes/main/rollout/promote/x", 404, NULL},
        {"GET", "/routes/main/rollouts", 404, NULL},
        {"GET", "/routes/main/rollout/promote", 405, "Allow: POST\r\n"},
        {"PUT", "/routes/main/rollout/promote", 405, "Allow: POST\r\n"},
        {"POST", "/routes/main/rollout", 405, "Allow: GET\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        call(&h, cases[i].method, cases[i].path, NULL, NULL, &r);
        if (r.status != cases[i].status)
            fail_msg("%s %s: %d %s", cases[i].method, cases[i].path, r.status, text(&r));
        if (cases[i].allow)
            assert_string_equal(r.resp.header, cases[i].allow);
        done(&r);
    }
    char long_path[400] = "/routes/";
    memset(long_path + 8, 'x', 300);
    strcpy(long_path + 308, "/rollout/promote");
    call(&h, "POST", long_path, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    done(&r);
    assert_int_equal(f.actions, 1);
    /* The rollout owns the weights. */
    call(&h, "PUT", "/routes/main/weights", "{\"spare\":5}", NULL, &r);
    assert_int_equal(r.status, 409);
    assert_non_null(strstr(text(&r), "rollout owns its weights"));
    done(&r);
    assert_int_equal(f.set_calls, 0);
    /* The token applies as everywhere. */
    f.token = "t0ken";
    call(&h, "POST", "/routes/main/rollout/promote", NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    done(&r);
    call(&h, "POST", "/routes/main/rollout/promote", NULL, "Bearer t0ken", &r);
    assert_int_equal(r.status, 200);
    done(&r);
    assert_int_equal(f.actions, 2);
    /* Metrics: the hook's lines are part of /metrics. */
    f.token = NULL;
    call(&h, "GET", "/metrics", NULL, NULL, &r);
    assert_non_null(strstr(text(&r), "ficus_rollout_step{route=\"main\"} 5\n"));
    done(&r);
}

static void test_token(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    f.token = "s3cret";
    reply_t r;
    /* Probes and scrapes never need it. */
    call(&h, "GET", "/healthz", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    done(&r);
    call(&h, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    done(&r);
    const char *refused[] = {
        NULL, "", "Bearer", "Bearer ", "Bearer s3cre", "Bearer s3cretx", "Basic s3cret", "s3cret"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        call(&h, "GET", "/target_groups", NULL, refused[i], &r);
        assert_int_equal(r.status, 401);
        assert_string_equal(r.resp.header, "WWW-Authenticate: Bearer realm=\"ficus admin\"\r\n");
        done(&r);
    }
    call(&h, "PUT", "/routes/main/weights", "{\"api\":7}", "Bearer wrong", &r);
    assert_int_equal(r.status, 401);
    done(&r);
    assert_int_equal(f.set_calls, 0);
    const char *accepted[] = {"Bearer s3cret", "bearer s3cret", "BEARER   s3cret"};
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        call(&h, "GET", "/target_groups", NULL, accepted[i], &r);
        assert_int_equal(r.status, 200);
        done(&r);
    }
    call(&h, "PUT", "/routes/main/weights", "{\"api\":7}", "Bearer s3cret", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(f.weights[0], 7);
    done(&r);
}

static void test_index_unknown_and_garbage(void **state)
{
    (void)state;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    reply_t r;
    call(&h, "GET", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(text(&r), "\"PUT /routes/NAME/weights\""));
    assert_non_null(strstr(text(&r), "\"GET /routes/NAME/shadow\""));
    done(&r);
    call(&h, "POST", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    done(&r);
    const char *paths[] = {"/nope", "/routes/main", "/routes//weights", "/healthz/x",
                           "",      "\x01\xff",     "/target_groups/x"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        call(&h, "GET", paths[i], NULL, NULL, &r);
        assert_int_equal(r.status, 404);
        assert_non_null(strstr(text(&r), "\"not_found\""));
        done(&r);
    }
    call(&h, "BREW", "/config", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    done(&r);
    /* No hooks: the JSON endpoints have nothing to show. */
    admin_hooks_t none = {0};
    call(&none, "GET", "/target_groups", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(text(&r), "{}\n");
    done(&r);
    call(&none, "GET", "/routes/main/weights", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    done(&r);
}

/* ------------------------------------------------- the listener on a loop */

typedef struct client {
    uv_thread_t thread;
    uint16_t port;
    const char *send; /* written at once */
    bool hang_up;     /* close right after sending, without reading */
    char got[65536];
    size_t got_len;
    uv_async_t *done;
} client_t;

static void client_main(void *arg)
{
    client_t *c = arg;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(c->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        (void)!write(fd, c->send, strlen(c->send));
        while (!c->hang_up && c->got_len < sizeof c->got - 1) {
            ssize_t n = read(fd, c->got + c->got_len, sizeof c->got - 1 - c->got_len);
            if (n <= 0)
                break;
            c->got_len += (size_t)n;
        }
    }
    close(fd);
    uv_async_send(c->done);
}

typedef struct served {
    uv_loop_t loop;
    uv_async_t done;
    admin_t *admin;
} served_t;

static void on_client_done(uv_async_t *a)
{
    served_t *s = a->data;
    admin_stop(s->admin);
    uv_close((uv_handle_t *)a, NULL);
}

/* Serves one client with the fake hooks; the loop must end with no handle
 * left. What the client read is in c->got. */
static void serve_one(client_t *c)
{
    served_t s;
    fake_t f;
    admin_hooks_t h = hooks_for(&f);
    assert_int_equal(uv_loop_init(&s.loop), 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    char err[256];
    s.admin = admin_start(&s.loop, (struct sockaddr *)&sa, sizeof sa, -1, &h, err, sizeof err);
    assert_non_null(s.admin);
    struct sockaddr_in bound;
    socklen_t len = sizeof bound;
    assert_int_equal(getsockname(admin_fd(s.admin), (struct sockaddr *)&bound, &len), 0);
    c->port = ntohs(bound.sin_port);
    assert_int_equal(uv_async_init(&s.loop, &s.done, on_client_done), 0);
    s.done.data = &s;
    c->done = &s.done;
    assert_int_equal(uv_thread_create(&c->thread, client_main, c), 0);
    assert_int_equal(uv_run(&s.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_thread_join(&c->thread), 0);
    assert_int_equal(uv_loop_close(&s.loop), 0);
    c->got[c->got_len] = '\0';
}

static void test_loop_request_answered(void **state)
{
    (void)state;
    client_t c = {.send = "GET /routes/main/weights HTTP/1.1\r\nHost: x\r\n\r\n"};
    serve_one(&c);
    assert_non_null(strstr(c.got, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(c.got, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(c.got, "Connection: close\r\n"));
    assert_non_null(
        strstr(c.got, "\r\n\r\n{\"route\":\"main\",\"weights\":{\"api\":3,\"spare\":1}}\n"));
}

static void test_loop_put_with_body(void **state)
{
    (void)state;
    client_t c = {.send = "PUT /routes/main/weights HTTP/1.1\r\nHost: x\r\n"
                          "Content-Length: 11\r\n\r\n{\"spare\":4}"};
    serve_one(&c);
    assert_non_null(strstr(c.got, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(c.got, "\"spare\":4"));
}

static void test_loop_head_has_no_body(void **state)
{
    (void)state;
    client_t c = {.send = "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"};
    serve_one(&c);
    assert_non_null(strstr(c.got, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(c.got, "Content-Length: 3\r\n"));
    assert_true(c.got_len >= 4 && memcmp(c.got + c.got_len - 4, "\r\n\r\n", 4) == 0);
}

static void test_loop_405_has_allow(void **state)
{
    (void)state;
    client_t c = {.send = "DELETE /routes/main/weights HTTP/1.1\r\nHost: x\r\n\r\n"};
    serve_one(&c);
    assert_non_null(strstr(c.got, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(c.got, "Allow: GET, PUT\r\n"));
}

static void test_loop_broken_head_400(void **state)
{
    (void)state;
    /* A broken header line before the head ends: answered at once, not
     * after the timeout (the client would give up after 5 s). */
    client_t c = {.send = "GET /healthz HTTP/1.1\r\nBad Header Line\r\n"};
    serve_one(&c);
    assert_non_null(strstr(c.got, "HTTP/1.1 400 Bad Request\r\n"));
    assert_non_null(strstr(c.got, "\"bad_request\""));
}

static void test_loop_garbage_400(void **state)
{
    (void)state;
    client_t c = {.send = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"};
    serve_one(&c);
    assert_non_null(strstr(c.got, "HTTP/1.1 400 Bad Request\r\n"));
    assert_non_null(strstr(c.got, "plain HTTP"));
}

static void test_loop_client_hangs_up(void **state)
{
    (void)state;
    /* A partial head, then the client goes: nothing is left open. */
    client_t c = {.send = "GET /healthz HTTP/1.1\r\nHost:", .hang_up = true};
    serve_one(&c);
    assert_int_equal(c.got_len, 0);
}

int main(void)
{
    alarm(120); /* a hung loop fails the run instead of blocking it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_and_methods),
        cmocka_unit_test(test_readyz),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_target_groups),
        cmocka_unit_test(test_weights_get_put),
        cmocka_unit_test(test_route_shadow),
        cmocka_unit_test(test_weights_put_refused),
        cmocka_unit_test(test_rollout_endpoints),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_index_unknown_and_garbage),
        cmocka_unit_test(test_loop_request_answered),
        cmocka_unit_test(test_loop_put_with_body),
        cmocka_unit_test(test_loop_head_has_no_body),
        cmocka_unit_test(test_loop_405_has_allow),
        cmocka_unit_test(test_loop_broken_head_400),
        cmocka_unit_test(test_loop_garbage_400),
        cmocka_unit_test(test_loop_client_hangs_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
