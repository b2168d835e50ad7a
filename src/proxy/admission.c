/* Admission steps and their runner; see admission.h. */
#include "proxy/admission.h"

#include <stdio.h>
#include <string.h>

#include "core/addr.h"
#include "core/hash.h"
#include "net/tls.h"
#include "policy/api_key.h"
#include "proxy/proxy.h"
#include "proxy/proxy_worker.h"
#include "proxy/user_auth.h"

admit_t admission_run(const admission_step_t *steps, size_t n, uint32_t *at, void *subject,
                      admission_deny_t *deny)
{
    while (*at < n) {
        deny->why = END_OK;
        deny->message = NULL;
        admit_t a = steps[*at].run(subject, deny);
        if (a != ADMIT_NEXT)
            return a;
        (*at)++;
    }
    return ADMIT_NEXT;
}

/* The route's ip_deny, then ip_allow (when it has one), on the client's
 * address as the request resolved it (X-Forwarded-For behind a trusted proxy). */
static admit_t ip_rules(void *subject, admission_deny_t *deny)
{
    const request_t *req = subject;
    const config_route_t *r = req->route;
    const char *ip = req->client_ip_len ? req->client_ip : req->cc->client_ip;
    size_t len = req->client_ip_len ? req->client_ip_len : req->cc->client_ip_len;
    bool ok = r->n_ip_allow == 0;
    for (size_t i = 0; i < r->n_ip_deny; i++)
        if (cidr_match_text(&r->ip_deny[i], ip, len))
            goto denied;
    for (size_t i = 0; i < r->n_ip_allow && !ok; i++)
        ok = cidr_match_text(&r->ip_allow[i], ip, len);
    if (ok)
        return ADMIT_NEXT;
denied:
    deny->why = END_FORBIDDEN;
    return ADMIT_DENY;
}

/* A declared body over server.max_body_size is refused before it is read
 * (a chunked one is counted as it comes, by the client connection). */
static admit_t body_limit(void *subject, admission_deny_t *deny)
{
    const request_t *req = subject;
    if (req->has_content_length && req->content_length > req->gen->cfg->server.max_body_bytes) {
        client_conn_close_after(req->cc);
        deny->why = END_BODY_TOO_LARGE;
        return ADMIT_DENY;
    }
    return ADMIT_NEXT;
}

/* A refusal for want of credentials, counted by reason. */
static admit_t unauthorized(const request_t *req, admission_deny_t *deny, const char *reason,
                            const char *message)
{
    metrics_auth_failure(req->pw->registry, req->gen->metrics_route[req->route->index], reason);
    deny->why = END_UNAUTHORIZED;
    deny->message = message;
    return ADMIT_DENY;
}

/* The client a verified client certificate names (its subject CN in a
 * client's certificate_cn), or CONFIG_NONE: not TLS, no certificate, one
 * that was not verified, or a CN no client has. */
static size_t cert_client(const request_t *req)
{
    const tls_conn_t *t = req->cc->s.tls;
    const config_t *cfg = req->gen->cfg;
    if (!t || cfg->n_cert_cns == 0)
        return CONFIG_NONE;
    char cn[256]; /* a longer CN comes cut, and no certificate_cn (64 at most) matches it */
    size_t n = tls_conn_peer_cn(t, cn, sizeof cn);
    return n ? config_client_by_cn(cfg, cn, n) : CONFIG_NONE;
}

/* The API client (route auth.client), by its X-Api-Key or its verified
 * client certificate: required -> 401 without either; optional ->
 * anonymous without either, 401 with a wrong key. Two X-Api-Key fields are
 * no key. A key, when sent, must be valid even with a certificate, and
 * when both name a client they must name the same one (else 401: two
 * identities on one request is no identity). */
static admit_t client_key(void *subject, admission_deny_t *deny)
{
    request_t *req = subject;
    const config_route_t *r = req->route;
    if (r->auth_client == AUTH_CLIENT_NONE)
        return ADMIT_NEXT;
    const http_head_t *h = req->head;
    const http_header_t *k = NULL;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        if (!http_header_name_is(h->headers[i].name, h->headers[i].name_len, "x-api-key", 9))
            continue;
        if (k)
            return unauthorized(req, deny, "invalid_api_key", "more than one X-Api-Key");
        k = &h->headers[i];
    }
    size_t by_cert = cert_client(req);
    if (!k) {
        if (by_cert != CONFIG_NONE) {
            req->client = (uint32_t)by_cert;
            return ADMIT_NEXT;
        }
        if (r->auth_client == AUTH_CLIENT_OPTIONAL)
            return ADMIT_NEXT;
        return unauthorized(req, deny, "missing_api_key", "missing X-Api-Key");
    }
    size_t c = api_key_lookup(req->gen->api_keys, &req->pw->hasher, k->value, k->value_len);
    if (c == CONFIG_NONE)
        return unauthorized(req, deny, "invalid_api_key", "unknown API key");
    if (by_cert != CONFIG_NONE && by_cert != c)
        return unauthorized(req, deny, "client_mismatch",
                            "the API key and the client certificate name different clients");
    req->client = (uint32_t)c;
    return ADMIT_NEXT;
}

/* The route's clients list: a known client not on it gets 403. */
static admit_t route_clients(void *subject, admission_deny_t *deny)
{
    const request_t *req = subject;
    const config_route_t *r = req->route;
    if (r->n_clients == 0)
        return ADMIT_NEXT;
    for (size_t i = 0; i < r->n_clients; i++)
        if (r->clients[i] == req->client)
            return ADMIT_NEXT;
    metrics_auth_failure(req->pw->registry, req->gen->metrics_route[r->index],
                         "client_not_allowed");
    deny->why = END_CLIENT_FORBIDDEN;
    return ADMIT_DENY;
}

/* ---- fleet-wide counts: one redis call the request waits for ---- */

static void on_fleet_answer(void *ctx, fleet_verdict_t v, uint64_t retry_after_ms)
{
    request_t *req = ctx;
    req->fleet_op = NULL;
    req->fleet_state = FLEET_STATE_ANSWERED;
    req->fleet_verdict = (uint8_t)v;
    req->fleet_retry_ms = retry_after_ms;
    proxy_request_resume(req);
}

/* The redis call's timeout: redis.timeout, and never past the request's
 * deadline. */
static uint64_t fleet_timeout(const request_t *req)
{
    uint64_t t = req->gen->cfg->redis_timeout_ms;
    uint64_t left = client_conn_deadline_left_ms(req->cc);
    return left && left < t ? left : t;
}

/* The answer a step waited for, consumed (FLEET_ERROR counted: redis did
 * not answer in time, or was not there). */
static fleet_verdict_t fleet_take(request_t *req, uint64_t *retry_ms)
{
    req->fleet_state = FLEET_STATE_NONE;
    *retry_ms = req->fleet_retry_ms;
    if (req->fleet_verdict == FLEET_ERROR)
        metrics_redis_error(req->pw->registry);
    return (fleet_verdict_t)req->fleet_verdict;
}

/* A call could not even be asked: the same as an error answer. */
static fleet_verdict_t fleet_unasked(request_t *req)
{
    metrics_redis_error(req->pw->registry);
    return FLEET_ERROR;
}

/* How a step asks redis (the fleet is there). */
typedef fleet_op_t *(*fleet_ask_fn)(request_t *req, const void *arg);

/* The fleet's verdict for the step under way: false while the request
 * waits for it (asked now, or earlier); true with *v once it came, or when
 * it could not be asked (FLEET_ERROR). */
static bool fleet_answer(request_t *req, fleet_ask_fn ask, const void *arg, fleet_verdict_t *v,
                         uint64_t *retry_ms)
{
    *retry_ms = 0;
    switch (req->fleet_state) {
    case FLEET_STATE_ASKED:
        return false;
    case FLEET_STATE_ANSWERED:
        *v = fleet_take(req, retry_ms);
        return true;
    default:
        req->fleet_op = req->pw->fleet ? ask(req, arg) : NULL;
        if (req->fleet_op) {
            req->fleet_state = FLEET_STATE_ASKED;
            return false;
        }
        *v = fleet_unasked(req);
        return true;
    }
}

static void fleet_step_cancel(void *subject)
{
    request_t *req = subject;
    if (req->fleet_op)
        fleet_cancel(req->fleet_op);
    req->fleet_op = NULL;
    req->fleet_state = FLEET_STATE_NONE;
}

/* ---- throttle ---- */

static admit_t throttled(request_t *req, admission_deny_t *deny)
{
    metrics_throttled(req->pw->metrics, req->gen->metrics_client[req->client]);
    deny->why = END_THROTTLED;
    return ADMIT_DENY;
}

static fleet_op_t *ask_throttle(request_t *req, const void *arg)
{
    const config_client_t *cl = arg;
    return fleet_throttle_acquire(req->pw->fleet, cl->id, cl->max_concurrent_requests,
                                  fleet_timeout(req), on_fleet_answer, req);
}

/* The client's max_concurrent_requests: one more than that in flight gets
 * 429 at once. local: this instance's count; global: the fleet's, in redis
 * (redis down or late: the request goes on, counted). */
static admit_t throttle(void *subject, admission_deny_t *deny)
{
    request_t *req = subject;
    if (req->client == UINT32_MAX || req->throttle_held || req->throttle_global)
        return ADMIT_NEXT;
    const config_client_t *cl = &req->gen->cfg->clients[req->client];
    if (cl->max_concurrent_requests == 0)
        return ADMIT_NEXT;
    if (cl->concurrency_scope == SCOPE_LOCAL) {
        if (!throttle_acquire(req->gen->client_inflight[req->client], cl->max_concurrent_requests))
            return throttled(req, deny);
        req->throttle_held = 1;
        return ADMIT_NEXT;
    }
    fleet_verdict_t v;
    uint64_t retry_ms;
    if (!fleet_answer(req, ask_throttle, cl, &v, &retry_ms))
        return ADMIT_WAIT;
    if (v == FLEET_DENY)
        return throttled(req, deny);
    req->throttle_global = v == FLEET_ALLOW;
    return ADMIT_NEXT; /* allowed, or redis failed: fail open */
}

/* What a request's bucket is by: the client's id, the user, or the
 * address (an anonymous request on a by-client or by-user limit counts
 * under its address); nothing for by route. */
static config_rate_by_t rate_by(const request_t *req, const config_rate_limit_t *rl, const char **v,
                                size_t *n)
{
    const proxy_gen_t *g = req->gen;
    *v = NULL;
    *n = 0;
    if (rl->by == RATE_BY_ROUTE)
        return RATE_BY_ROUTE;
    if (rl->by == RATE_BY_CLIENT && req->client != UINT32_MAX) {
        *v = g->cfg->clients[req->client].id;
        *n = strlen(*v);
        return RATE_BY_CLIENT;
    }
    if (rl->by == RATE_BY_USER && req->user_len) {
        *v = req->user;
        *n = req->user_len;
        return RATE_BY_USER;
    }
    *v = req->client_ip_len ? req->client_ip : req->cc->client_ip;
    *n = req->client_ip_len ? req->client_ip_len : req->cc->client_ip_len;
    return RATE_BY_IP;
}

/* The local bucket: the route's name hashed, with what it is by. */
static uint64_t rate_key(const request_t *req, const config_rate_limit_t *rl)
{
    const char *v;
    size_t n;
    config_rate_by_t by = rate_by(req, rl, &v, &n);
    uint64_t k = req->gen->route_key[req->route->index] * UINT64_C(0x9e3779b97f4a7c15);
    return hash_mix(k ^ (uint64_t)by ^ (n ? hash_bytes(v, n) : 0));
}

static admit_t rate_limited(request_t *req, admission_deny_t *deny, uint64_t wait_ms)
{
    metrics_rate_limited(req->pw->metrics, req->gen->metrics_route[req->route->index]);
    wait_ms = wait_ms < RATE_LIMIT_MAX_RETRY_AFTER_MS ? wait_ms : RATE_LIMIT_MAX_RETRY_AFTER_MS;
    req->retry_after_s = (uint32_t)((wait_ms + 999) / 1000);
    deny->why = END_RATE_LIMITED;
    return ADMIT_DENY;
}

/* The fleet-wide bucket's name in redis: the route, then what it is by. */
static size_t rate_name(const request_t *req, const config_rate_limit_t *rl, char *out, size_t cap)
{
    static const char *const by_names[] = {"client", "ip", "user", "route"};
    const char *v;
    size_t n;
    config_rate_by_t by = rate_by(req, rl, &v, &n);
    int w = snprintf(out, cap, "%s:%s:%.*s", req->route->name, by_names[by], (int)n, v ? v : "");
    return w > 0 && (size_t)w < cap ? (size_t)w : 0;
}

static fleet_op_t *ask_rate(request_t *req, const void *arg)
{
    const config_rate_limit_t *rl = arg;
    char name[FLEET_MAX_KEY_BYTES];
    size_t n = rate_name(req, rl, name, sizeof name);
    return n ? fleet_rate_take(req->pw->fleet, name, rl->requests_per_second, rl->burst,
                               fleet_timeout(req), on_fleet_answer, req)
             : NULL;
}

/* The route's rate_limit: a token from its bucket, or 429 with the wait.
 * global: the fleet's bucket in redis; when redis fails, this instance's
 * bucket decides (counted). */
static admit_t rate_limit(void *subject, admission_deny_t *deny)
{
    request_t *req = subject;
    const config_route_t *r = req->route;
    if (!r->has_rate_limit)
        return ADMIT_NEXT;
    const config_rate_limit_t *rl = &r->rate_limit;
    uint64_t wait_ms = 0;
    if (rl->scope == SCOPE_GLOBAL) {
        fleet_verdict_t v;
        if (!fleet_answer(req, ask_rate, rl, &v, &wait_ms))
            return ADMIT_WAIT;
        if (v == FLEET_ALLOW)
            return ADMIT_NEXT;
        if (v == FLEET_DENY)
            return rate_limited(req, deny, wait_ms);
        /* redis failed: the local bucket stands in */
    }
    if (rate_limit_take(req->gen->rates, rate_key(req, rl), rl->requests_per_second, rl->burst,
                        uv_now(req->pw->loop), &wait_ms))
        return ADMIT_NEXT;
    return rate_limited(req, deny, wait_ms);
}

void admission_release(request_t *req)
{
    if (req->throttle_held) {
        throttle_release(req->gen->client_inflight[req->client]);
        req->throttle_held = 0;
    }
    if (req->throttle_global) {
        if (req->pw->fleet)
            fleet_throttle_release(req->pw->fleet, req->gen->cfg->clients[req->client].id);
        req->throttle_global = 0;
    }
}

/* In the contract's order: who may reach the route at all, then who is
 * asking, then how much they may ask. */
/* clang-format off */
const admission_step_t admission_steps[] = {
    {"ip_rules", ip_rules, NULL},
    {"body_limit", body_limit, NULL},
    {"client_key", client_key, NULL},
    {"route_clients", route_clients, NULL},
    {"user", user_auth_run, NULL},
    {"throttle", throttle, fleet_step_cancel},
    {"rate_limit", rate_limit, fleet_step_cancel},
};
/* clang-format on */
const size_t admission_n_steps = sizeof admission_steps / sizeof admission_steps[0];
