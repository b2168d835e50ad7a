/* The user admission step; see user_auth.h. */
#include "proxy/user_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "core/hash.h"
#include "core/time.h"
#include "http/cookie.h"
#include "policy/jwt.h"
#include "policy/session_exchange.h"
#include "proxy/proxy_worker.h"

/* What a token gave, as a worker's caches keep it: for whom (configuration
 * and provider; a bearer token also the key set's read), the user's
 * subject (rate limits by user) and the header lines it adds upstream. */
typedef struct user_entry {
    uint64_t gen_id;
    uint64_t keys_seq;
    uint32_t provider;
    uint8_t has_user; /* 0: the session service said there is none */
    uint8_t user_len;
    uint16_t lines_len; /* header lines following the entry */
    char user[64];
} user_entry_t;

#define ENTRY_ROOM (32 * 1024) /* an entry and its lines, built in the worker's scratch */
#define JWT_ROOM SESSION_JWT_MAX_BYTES
#define MIN_STORE_MS 100 /* a session answer stays long enough for its waiters to see it */

/* A session exchange under way, owned by the worker (not by the request
 * that started it: others may wait for it, here and on other workers). */
typedef struct user_exchange {
    struct user_exchange *next, **pprev;
    proxy_worker_t *pw;
    proxy_gen_t *gen; /* one reference: its configuration and keys */
    session_exchange_t *x;
    uint32_t provider;
    size_t len;
    char token[];
} user_exchange_t;

/* ------------------------------------------------------------ worker */

static void on_store_wake(void *ctx) { proxy_worker_wake(ctx); }

int user_auth_worker_init(proxy_worker_t *pw)
{
    pw->jwt_cache = token_cache_new(TOKEN_CACHE_MAX_ENTRIES, TOKEN_CACHE_MAX_BYTES);
    pw->session_cache = token_cache_new(TOKEN_CACHE_MAX_ENTRIES, TOKEN_CACHE_MAX_BYTES);
    if (!pw->jwt_cache || !pw->session_cache)
        return FE_NOMEM;
    if (pw->gen->sessions)
        session_store_set_wake(pw->gen->sessions, (unsigned)pw->w->index, on_store_wake, pw);
    return 0;
}

static void exchange_unlink(user_exchange_t *ux)
{
    *ux->pprev = ux->next;
    if (ux->next)
        ux->next->pprev = ux->pprev;
}

void user_auth_worker_stop(proxy_worker_t *pw)
{
    if (pw->gen->sessions)
        session_store_set_wake(pw->gen->sessions, (unsigned)pw->w->index, NULL, NULL);
    while (pw->exchanges) {
        user_exchange_t *ux = pw->exchanges;
        exchange_unlink(ux);
        session_exchange_cancel(ux->x);
        /* Abandoned: a request waiting elsewhere exchanges it again. */
        session_store_done(ux->gen->sessions, ux->token, ux->len, SESSION_PENDING, NULL, 0, 0);
        proxy_gen_unref(ux->gen);
        free(ux);
    }
}

void user_auth_worker_deinit(proxy_worker_t *pw)
{
    token_cache_free(pw->jwt_cache);
    token_cache_free(pw->session_cache);
    pw->jwt_cache = pw->session_cache = NULL;
}

/* ----------------------------------------------------- building entries */

/* The entry for verified claims, with the provider's forwarded claims as
 * header lines, into out (ENTRY_ROOM). Returns its whole length. A claim
 * that is absent, too long or holds bytes a header must not is not sent. */
static size_t build_entry(const proxy_gen_t *g, uint32_t provider, uint64_t seq,
                          const json_t *claims, char *out)
{
    const config_jwt_provider_t *p = &g->cfg->jwt_providers[provider];
    user_entry_t e = {.gen_id = g->id, .keys_seq = seq, .provider = provider, .has_user = 1};
    char val[1024];
    int n = jwt_claim_text(claims, "sub", val, sizeof val);
    if (n > 0 && (size_t)n < sizeof e.user) {
        memcpy(e.user, val, (size_t)n);
        e.user_len = (uint8_t)n;
    } else if (n > 0) {
        e.user_len = (uint8_t)snprintf(e.user, sizeof e.user, "#%016llx",
                                       (unsigned long long)hash_bytes(val, (size_t)n));
    }
    size_t len = sizeof e;
    for (size_t i = 0; i < p->n_forward_claims; i++) {
        const config_claim_header_t *fc = &p->forward_claims[i];
        n = jwt_claim_text(claims, fc->claim, val, sizeof val);
        size_t hl = strlen(fc->header);
        if (n < 0 || len + hl + 4 + (size_t)n > ENTRY_ROOM - JWT_ROOM - 32)
            continue;
        memcpy(out + len, fc->header, hl);
        memcpy(out + len + hl, ": ", 2);
        memcpy(out + len + hl + 2, val, (size_t)n);
        memcpy(out + len + hl + 2 + (size_t)n, "\r\n", 2);
        len += hl + 4 + (size_t)n;
    }
    e.lines_len = (uint16_t)(len - sizeof e);
    memcpy(out, &e, sizeof e);
    return len;
}

/* The request goes on as the entry's user: its subject, and its lines in a
 * pool buffer for the upstream head. */
static admit_t apply(request_t *req, const char *entry, size_t len, admission_deny_t *deny)
{
    user_entry_t e;
    memcpy(&e, entry, sizeof e);
    memcpy(req->user, e.user, e.user_len);
    req->user_len = e.user_len;
    if (e.lines_len == 0)
        return ADMIT_NEXT;
    pbuf_pool_t *pool = &req->pw->w->pool;
    if (!req->ident)
        req->ident = pbuf_get(pool);
    if (!req->ident || (size_t)e.lines_len > req->ident->cap || sizeof e + e.lines_len > len) {
        deny->why = END_INTERNAL;
        return ADMIT_DENY;
    }
    memcpy(req->ident->data, entry + sizeof e, e.lines_len);
    req->ident->len = e.lines_len;
    return ADMIT_NEXT;
}

/* -------------------------------------------------------------- refusals */

static admit_t refuse(request_t *req, admission_deny_t *deny, end_reason_t why, const char *reason,
                      const char *message)
{
    metrics_auth_failure(req->pw->registry, req->gen->metrics_route[req->route->index], reason);
    deny->why = why;
    deny->message = message;
    return ADMIT_DENY;
}

/* No user: fine unless the route requires one. */
static admit_t no_user(request_t *req, admission_deny_t *deny, const char *reason,
                       const char *message)
{
    if (!req->route->auth_user_required)
        return ADMIT_NEXT;
    return refuse(req, deny, END_UNAUTHORIZED, reason, message);
}

/* ------------------------------------------------------------ bearer JWTs */

/* The bearer token of Authorization: 1 (found), 0 (none: no header, or
 * another scheme), -1 (two Authorization fields, or Bearer without a token). */
static int bearer(const http_head_t *h, const char **tok, size_t *len)
{
    const http_header_t *a = NULL;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        if (!http_header_name_is(h->headers[i].name, h->headers[i].name_len, "authorization", 13))
            continue;
        if (a)
            return -1;
        a = &h->headers[i];
    }
    if (!a || a->value_len < 6 || strncasecmp(a->value, "bearer", 6) != 0)
        return 0;
    if (a->value_len > 6 && a->value[6] != ' ')
        return 0; /* "Bearerx ..." is another scheme */
    const char *p = a->value + 6, *end = a->value + a->value_len;
    while (p < end && *p == ' ')
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (p == end)
        return -1;
    *tok = p;
    *len = (size_t)(end - p);
    return 1;
}

/* Verifies tok with provider's keys into an entry in out; JWT_OK or why
 * not. The claims' exp, in ms, goes to *exp_ms (0: none). */
static jwt_result_t verify(const proxy_gen_t *g, uint32_t provider, const char *tok, size_t len,
                           uint64_t now_ms, char *out, size_t *out_len, uint64_t *exp_ms)
{
    jwks_slot_t *slot = &g->jwks[provider];
    uint64_t seq = atomic_load(&slot->seq);
    const jwks_t *keys = atomic_load(&slot->keys);
    if (!keys)
        return JWT_UNKNOWN_KID;
    jwt_verified_t v;
    jwt_result_t res =
        jwt_verify(tok, len, keys, &g->cfg->jwt_providers[provider], (int64_t)(now_ms / 1000), &v);
    if (res != JWT_OK)
        return res;
    *out_len = build_entry(g, provider, seq, v.claims, out);
    *exp_ms = v.exp_s > 0 ? (uint64_t)v.exp_s * 1000 : 0;
    json_decref(v.claims);
    return JWT_OK;
}

/* A cached entry still stands for this configuration, provider and (for a
 * bearer token) key set. */
static bool entry_current(const char *entry, size_t len, const proxy_gen_t *g, uint32_t provider,
                          uint64_t seq, bool check_seq)
{
    user_entry_t e;
    if (len < sizeof e)
        return false;
    memcpy(&e, entry, sizeof e);
    return e.gen_id == g->id && e.provider == provider && (!check_seq || e.keys_seq == seq) &&
           sizeof e + e.lines_len <= len;
}

static uint64_t cache_until(uint64_t now_ms, uint64_t exp_ms, uint64_t max_ms)
{
    uint64_t until = now_ms + max_ms;
    return exp_ms && exp_ms < until ? exp_ms : until;
}

static admit_t bearer_user(request_t *req, uint32_t provider, const char *tok, size_t len,
                           admission_deny_t *deny)
{
    proxy_worker_t *pw = req->pw;
    proxy_gen_t *g = req->gen;
    jwks_slot_t *slot = &g->jwks[provider];
    uint64_t now = time_now_realtime_ms();
    uint64_t seq = atomic_load(&slot->seq);
    size_t vl;
    const char *hit = token_cache_get(pw->jwt_cache, tok, len, now, &vl);
    if (hit && entry_current(hit, vl, g, provider, seq, true))
        return apply(req, hit, vl, deny);
    char *entry = pw->scratch + JWT_ROOM;
    size_t el = 0;
    uint64_t exp = 0;
    jwt_result_t res = verify(g, provider, tok, len, now, entry, &el, &exp);
    if (res == JWT_UNKNOWN_KID) {
        /* Keys may have rotated: a read of the set, once, and the request
         * waits for it (its deadline bounds the wait). */
        if (!req->kid_waited && slot->want && slot->want(slot->want_ctx, slot, time_now_ms())) {
            req->kid_waited = 1;
            req->kid_seq = seq;
            return ADMIT_WAIT;
        }
        if (req->kid_waited && seq == req->kid_seq && atomic_load(&slot->wanted))
            return ADMIT_WAIT;
    }
    if (res != JWT_OK)
        return refuse(req, deny, END_UNAUTHORIZED, jwt_result_name(res), "invalid token");
    token_cache_put(pw->jwt_cache, tok, len, entry, el, cache_until(now, exp, JWT_CACHE_MAX_MS));
    return apply(req, entry, el, deny);
}

/* ------------------------------------------------------ session exchange */

/* The session token: the cookie's value, or the header's. */
static bool session_token(const http_head_t *h, const config_session_exchange_t *se,
                          const char **tok, size_t *len)
{
    for (uint32_t i = 0; i < h->n_headers; i++) {
        const http_header_t *hd = &h->headers[i];
        if (se->header) {
            if (http_header_name_is(hd->name, hd->name_len, se->header, strlen(se->header))) {
                *tok = hd->value;
                *len = hd->value_len;
                return true;
            }
            continue;
        }
        if (!http_header_name_is(hd->name, hd->name_len, "cookie", 6))
            continue;
        size_t cl = strlen(se->cookie);
        const char *p = hd->value, *end = hd->value + hd->value_len;
        http_cookie_t c;
        while (http_cookie_next(&p, end, &c)) {
            if (c.name_len == cl && memcmp(c.name, se->cookie, cl) == 0) {
                *tok = c.value;
                *len = c.value_len;
                return true;
            }
        }
    }
    return false;
}

/* An entry for the session's JWT: its claims' lines, then the JWT as the
 * bearer token upstream. JWT_OK or why the JWT failed. */
static jwt_result_t session_entry(const proxy_gen_t *g, uint32_t provider, const char *jwt,
                                  size_t jl, uint64_t now, char *out, size_t *out_len,
                                  uint64_t *exp_ms)
{
    jwt_result_t res = verify(g, provider, jwt, jl, now, out, out_len, exp_ms);
    if (res != JWT_OK)
        return res;
    user_entry_t e;
    memcpy(&e, out, sizeof e);
    static const char auth[] = "Authorization: Bearer ";
    if (*out_len + sizeof auth + jl + 2 > ENTRY_ROOM - JWT_ROOM)
        return JWT_MALFORMED;
    memcpy(out + *out_len, auth, sizeof auth - 1);
    memcpy(out + *out_len + sizeof auth - 1, jwt, jl);
    memcpy(out + *out_len + sizeof auth - 1 + jl, "\r\n", 2);
    *out_len += sizeof auth - 1 + jl + 2;
    e.lines_len = (uint16_t)(*out_len - sizeof e);
    e.keys_seq = 0; /* the session entry stands for its configuration only */
    memcpy(out, &e, sizeof e);
    return JWT_OK;
}

static void on_exchanged(void *ctx, session_state_t result, const char *failure, const char *jwt,
                         size_t jl)
{
    user_exchange_t *ux = ctx;
    proxy_worker_t *pw = ux->pw;
    const config_session_exchange_t *se = &ux->gen->cfg->session_exchange;
    exchange_unlink(ux);
    uint64_t now = time_now_realtime_ms();
    uint64_t ttl = se->cache_ttl_ms > MIN_STORE_MS ? se->cache_ttl_ms : MIN_STORE_MS;
    uint64_t expires = now + ttl;
    if (result == SESSION_USER) {
        /* Verified here once; the JWT's exp bounds how long it is kept. */
        size_t el;
        uint64_t exp = 0;
        jwt_result_t res =
            session_entry(ux->gen, ux->provider, jwt, jl, now, pw->scratch + JWT_ROOM, &el, &exp);
        if (res != JWT_OK) {
            result = SESSION_UNAVAILABLE;
            failure = "invalid_jwt";
        } else if (exp && exp < expires) {
            expires = exp;
        }
    }
    if (result == SESSION_UNAVAILABLE) {
        expires = now + SESSION_STORE_UNAVAILABLE_MS;
        metrics_session_exchange_failure(pw->registry, failure ? failure : "invalid_answer");
    }
    session_store_done(ux->gen->sessions, ux->token, ux->len, result,
                       result == SESSION_USER ? jwt : NULL, result == SESSION_USER ? jl : 0,
                       expires);
    proxy_gen_unref(ux->gen);
    free(ux);
    proxy_worker_wake(pw); /* its own requests waited for it too */
}

/* This worker exchanges the token; false when it could not start (the
 * failure is stored and counted). */
static bool start_exchange(request_t *req, uint32_t provider, const char *tok, size_t len)
{
    proxy_worker_t *pw = req->pw;
    proxy_gen_t *g = req->gen;
    user_exchange_t *ux = malloc(sizeof *ux + len);
    if (ux) {
        ux->pw = pw;
        ux->gen = proxy_gen_ref(g);
        ux->provider = provider;
        ux->len = len;
        memcpy(ux->token, tok, len);
        ux->next = pw->exchanges;
        if (ux->next)
            ux->next->pprev = &ux->next;
        ux->pprev = &pw->exchanges;
        pw->exchanges = ux;
        ux->x = session_exchange_start(pw->loop, &g->cfg->session_exchange, ux->token, len,
                                       on_exchanged, ux);
        if (ux->x)
            return true;
        exchange_unlink(ux);
        proxy_gen_unref(g);
        free(ux);
    }
    metrics_session_exchange_failure(pw->registry, "connect_error");
    session_store_done(g->sessions, tok, len, SESSION_UNAVAILABLE, NULL, 0,
                       time_now_realtime_ms() + SESSION_STORE_UNAVAILABLE_MS);
    return false;
}

static admit_t session_unavailable(request_t *req, admission_deny_t *deny)
{
    if (!req->route->auth_user_required)
        return ADMIT_NEXT; /* on without a user (the session cookie is still dropped) */
    return refuse(req, deny, END_AUTH_UNAVAILABLE, "session_unavailable", NULL);
}

static admit_t session_user(request_t *req, uint32_t provider, const char *tok, size_t len,
                            admission_deny_t *deny)
{
    proxy_worker_t *pw = req->pw;
    proxy_gen_t *g = req->gen;
    const config_session_exchange_t *se = &g->cfg->session_exchange;
    req->ident_session = 1; /* the session cookie or header never goes upstream */
    if (!session_exchange_token_ok(tok, len))
        return no_user(req, deny, "invalid_session", "invalid session token");
    uint64_t now = time_now_realtime_ms();
    size_t vl;
    const char *hit = token_cache_get(pw->session_cache, tok, len, now, &vl);
    if (hit && entry_current(hit, vl, g, provider, 0, false)) {
        if (hit[offsetof(user_entry_t, has_user)])
            return apply(req, hit, vl, deny);
        return no_user(req, deny, "no_session", "no user for this session");
    }
    char *jwt = pw->scratch;
    size_t jl = 0;
    uint64_t expires = 0;
    session_state_t st = session_store_get(g->sessions, tok, len, now, (unsigned)pw->w->index, jwt,
                                           JWT_ROOM, &jl, &expires);
    char *entry = pw->scratch + JWT_ROOM;
    size_t el = 0;
    uint64_t exp = 0;
    uint64_t worker_until = se->cache_ttl_ms ? now + se->cache_ttl_ms : 0;
    if (expires && expires < worker_until)
        worker_until = expires;
    switch (st) {
    case SESSION_USER:
        if (session_entry(g, provider, jwt, jl, now, entry, &el, &exp) != JWT_OK)
            return session_unavailable(req, deny);
        if (worker_until > now)
            token_cache_put(pw->session_cache, tok, len, entry, el,
                            exp && exp < worker_until ? exp : worker_until);
        return apply(req, entry, el, deny);
    case SESSION_NO_USER: {
        user_entry_t e = {.gen_id = g->id, .provider = provider};
        if (worker_until > now)
            token_cache_put(pw->session_cache, tok, len, &e, sizeof e, worker_until);
        return no_user(req, deny, "no_session", "no user for this session");
    }
    case SESSION_PENDING:
        return ADMIT_WAIT;
    case SESSION_MINE:
        if (start_exchange(req, provider, tok, len))
            return ADMIT_WAIT;
        return session_unavailable(req, deny);
    case SESSION_UNAVAILABLE:
        break;
    }
    return session_unavailable(req, deny);
}

/* ------------------------------------------------------------- the step */

admit_t user_auth_run(void *subject, admission_deny_t *deny)
{
    request_t *req = subject;
    const config_route_t *r = req->route;
    if (r->auth_provider == CONFIG_NONE)
        return ADMIT_NEXT;
    const config_t *cfg = req->gen->cfg;
    uint32_t provider = (uint32_t)r->auth_provider;
    const char *tok = NULL;
    size_t len = 0;
    if (cfg->has_session_exchange && cfg->session_exchange.provider == r->auth_provider &&
        session_token(req->head, &cfg->session_exchange, &tok, &len))
        return session_user(req, provider, tok, len, deny);
    int b = bearer(req->head, &tok, &len);
    if (b < 0)
        return refuse(req, deny, END_UNAUTHORIZED, "malformed", "malformed Authorization");
    if (b == 0)
        return no_user(req, deny, "missing_token", "missing bearer token");
    return bearer_user(req, provider, tok, len, deny);
}
