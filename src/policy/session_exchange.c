/* One session exchange; see session_exchange.h. An exchange is a resolve
 * (a name not in this thread's cache: uv_getaddrinfo and a timer bounding
 * it) and then one http_client request. Its memory goes when the callback
 * has run or it was cancelled, and nothing of it is still with libuv: the
 * resolve request and the timer are counted in refs. */
#include "policy/session_exchange.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/http_client.h"
#include "core/addr.h"
#include "core/defaults.h"
#include "core/time.h"
#include "core/url.h"

struct session_exchange {
    uv_loop_t *loop;
    const config_session_exchange_t *cfg;
    session_exchange_done_fn done; /* NULL once called or cancelled */
    void *ctx;
    http_client_t *client; /* the request under way, or NULL */
    uv_getaddrinfo_t gai;
    uv_timer_t resolve_timer;
    int refs;          /* the resolve request and the timer while libuv has them */
    bool timer_open;   /* resolve_timer initialised and not closing */
    bool resolving;    /* gai is with libuv */
    bool finished;     /* called back or cancelled */
    bool named;        /* the url's host is a name: its address is in the cache */
    uint64_t start_ms; /* uv_now when it started: the timeout covers the resolve */
    url_http_t url;
    char *target;  /* into req: the request target */
    char *host;    /* into req: the Host header */
    char *headers; /* into req: X-Session-Token and User-Agent lines */
    char req[];
};

/* This thread's last resolved address of the session service. */
static __thread struct {
    char host[256];
    uint16_t port;
    struct sockaddr_storage ss;
    uint64_t until_ms; /* time_now_ms: 0 = empty */
} dns_cache;

static bool cache_lookup(const url_http_t *u, struct sockaddr_storage *ss)
{
    if (dns_cache.until_ms <= time_now_ms() || dns_cache.port != u->port_num ||
        strcmp(dns_cache.host, u->host) != 0)
        return false;
    *ss = dns_cache.ss;
    return true;
}

static void cache_store(const url_http_t *u, const struct sockaddr *sa, size_t len)
{
    if (len > sizeof dns_cache.ss)
        return;
    snprintf(dns_cache.host, sizeof dns_cache.host, "%s", u->host);
    dns_cache.port = u->port_num;
    memset(&dns_cache.ss, 0, sizeof dns_cache.ss);
    memcpy(&dns_cache.ss, sa, len);
    dns_cache.until_ms = time_now_ms() + DEFAULT_DNS_REFRESH_MS;
}

static void cache_forget(void) { dns_cache.until_ms = 0; }

/* ---- the answer, sans-I/O ---- */

static bool is_b64url(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static bool is_ows(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Three non-empty base64url segments joined by dots; a segment of 4k+1
 * characters cannot be base64 of anything. */
static bool is_compact_jws(const char *p, size_t len)
{
    size_t segments = 1, seg_len = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '.') {
            if (seg_len == 0 || seg_len % 4 == 1 || ++segments > 3)
                return false;
            seg_len = 0;
        } else if (is_b64url((unsigned char)p[i])) {
            seg_len++;
        } else {
            return false;
        }
    }
    return segments == 3 && seg_len > 0 && seg_len % 4 != 1;
}

session_state_t session_exchange_answer(int status, const char *body, size_t len, const char **jwt,
                                        size_t *jwt_len, const char **failure)
{
    *jwt = NULL;
    *jwt_len = 0;
    *failure = NULL;
    if (status == 401 || status == 404)
        return SESSION_NO_USER;
    if (status != 200) {
        *failure = "status";
        return SESSION_UNAVAILABLE;
    }
    while (len > 0 && is_ows(body[0])) {
        body++;
        len--;
    }
    while (len > 0 && is_ows(body[len - 1]))
        len--;
    if (len == 0 || len > SESSION_JWT_MAX_BYTES || !is_compact_jws(body, len)) {
        *failure = "invalid_answer";
        return SESSION_UNAVAILABLE;
    }
    *jwt = body;
    *jwt_len = len;
    return SESSION_USER;
}

bool session_exchange_token_ok(const char *t, size_t len)
{
    if (len == 0 || len > SESSION_TOKEN_MAX_BYTES)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return false;
    return true;
}

/* ---- the exchange ---- */

static void maybe_free(session_exchange_t *x)
{
    if (x->finished && x->refs == 0 && !x->client)
        free(x);
}

/* The one way to the callback. */
static void finish(session_exchange_t *x, session_state_t result, const char *failure,
                   const char *jwt, size_t jwt_len)
{
    session_exchange_done_fn cb = x->done;
    x->done = NULL;
    x->finished = true;
    if (cb)
        cb(x->ctx, result, failure, jwt, jwt_len);
}

static void on_timer_closed(uv_handle_t *h)
{
    session_exchange_t *x = h->data;
    x->refs--;
    maybe_free(x);
}

static void close_timer(session_exchange_t *x)
{
    if (!x->timer_open)
        return;
    x->timer_open = false;
    uv_close((uv_handle_t *)&x->resolve_timer, on_timer_closed);
}

/* The http_client's error, or the answer, as a result and a reason. */
static void on_client_done(void *ctx, const reply_t *reply, const char *error)
{
    session_exchange_t *x = ctx;
    x->client = NULL;
    const char *jwt = NULL, *failure = NULL;
    size_t jwt_len = 0;
    session_state_t r;
    int status = reply_status(reply);
    if (error && strcmp(error, "timeout") == 0) {
        r = SESSION_UNAVAILABLE;
        failure = "timeout";
    } else if (error && status == 200) { /* a body too large or cut short */
        r = SESSION_UNAVAILABLE;
        failure = "invalid_answer";
    } else if (error && status != 0) {
        r = session_exchange_answer(status, NULL, 0, &jwt, &jwt_len, &failure);
    } else if (error) {
        /* Some bytes of an answer came: they were not HTTP. None: the
         * service could not be reached. */
        r = SESSION_UNAVAILABLE;
        failure = reply->bytes_in > 0 ? "invalid_answer" : "connect_error";
    } else {
        r = session_exchange_answer(status, reply->body.data, reply->body.len, &jwt, &jwt_len,
                                    &failure);
    }
    /* The service may have moved: resolve its name again next time. */
    if (x->named && failure &&
        (strcmp(failure, "connect_error") == 0 || strcmp(failure, "timeout") == 0))
        cache_forget();
    finish(x, r, failure, jwt, jwt_len);
    maybe_free(x);
}

/* Sends the request to sa within what is left of the timeout. */
static http_client_t *request(session_exchange_t *x, const struct sockaddr *sa)
{
    uint64_t spent = uv_now(x->loop) - x->start_ms;
    uint64_t left = x->cfg->timeout_ms > spent ? x->cfg->timeout_ms - spent : 1;
    request_t rq = {.method = "GET",
                    .target = x->target,
                    .host = x->host,
                    .headers = x->headers,
                    .close = true};
    /* Only a 2xx answer's body is read: the status says the rest. */
    http_client_opts_t o = {.timeout_ms = left,
                            .max_head_bytes = DEFAULT_MAX_HEADER_BYTES,
                            .max_body_bytes = SESSION_ANSWER_MAX_BYTES,
                            .body_mode = REPLY_BODY_2XX};
    x->client = http_client_start(x->loop, sa, &rq, &o, on_client_done, x);
    return x->client;
}

static void on_resolve_timeout(uv_timer_t *t)
{
    session_exchange_t *x = t->data;
    /* The resolve may be running already: its callback still comes. */
    if (x->resolving)
        uv_cancel((uv_req_t *)&x->gai);
    close_timer(x);
    finish(x, SESSION_UNAVAILABLE, "timeout", NULL, 0);
    maybe_free(x);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    session_exchange_t *x = req->data;
    x->refs--;
    x->resolving = false;
    if (x->finished || status != 0 || !res) {
        if (!x->finished) {
            close_timer(x);
            finish(x, SESSION_UNAVAILABLE, "connect_error", NULL, 0);
        }
        uv_freeaddrinfo(res);
        maybe_free(x);
        return;
    }
    close_timer(x);
    cache_store(&x->url, res->ai_addr, res->ai_addrlen);
    http_client_t *c = request(x, res->ai_addr);
    uv_freeaddrinfo(res);
    if (!c)
        finish(x, SESSION_UNAVAILABLE, "connect_error", NULL, 0);
    maybe_free(x);
}

/* Allocates the exchange with its request strings: NULL when the url is not
 * a valid http:// URL or out of memory. */
static session_exchange_t *exchange_new(const config_session_exchange_t *cfg, const char *token,
                                        size_t len)
{
    url_http_t u;
    char why[128];
    if (!cfg->url || url_parse_http(cfg->url, &u, why, sizeof why) != 0)
        return NULL;
    static const char token_name[] = "X-Session-Token: ", agent[] = "\r\nUser-Agent: ficus\r\n";
    size_t host_cap = sizeof u.host + 16; /* brackets and ":port" */
    size_t target_cap = u.path_len + 2;   /* a '/' before a bare query, the NUL */
    size_t headers_cap = sizeof token_name + len + sizeof agent;
    session_exchange_t *x = calloc(1, sizeof *x + target_cap + host_cap + headers_cap);
    if (!x)
        return NULL;
    x->cfg = cfg;
    x->url = u;
    x->target = x->req;
    x->host = x->target + target_cap;
    x->headers = x->host + host_cap;
    if (u.path_len == 0)
        memcpy(x->target, "/", 2);
    else
        snprintf(x->target, target_cap, "%s%.*s", u.path[0] == '?' ? "/" : "", (int)u.path_len,
                 u.path);
    url_host_header(&u, x->host, host_cap);
    snprintf(x->headers, headers_cap, "%s%.*s%s", token_name, (int)len, token, agent);
    return x;
}

session_exchange_t *session_exchange_start(uv_loop_t *loop, const config_session_exchange_t *cfg,
                                           const char *token, size_t len,
                                           session_exchange_done_fn done, void *ctx)
{
    if (!session_exchange_token_ok(token, len))
        return NULL;
    session_exchange_t *x = exchange_new(cfg, token, len);
    if (!x)
        return NULL;
    x->loop = loop;
    x->done = done;
    x->ctx = ctx;
    x->start_ms = uv_now(loop);
    addr_hostport_t hp = {.port = x->url.port_num};
    snprintf(hp.host, sizeof hp.host, "%s", x->url.host);
    struct sockaddr_storage ss;
    socklen_t sslen;
    x->named = addr_numeric(&hp, &ss, &sslen) != 0;
    if (!x->named || cache_lookup(&x->url, &ss)) {
        if (!request(x, (const struct sockaddr *)&ss))
            goto fail_free;
        return x;
    }
    x->gai.data = x;
    x->resolve_timer.data = x;
    if (uv_timer_init(loop, &x->resolve_timer) != 0)
        goto fail_free;
    x->timer_open = true;
    x->refs = 1;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    if (uv_getaddrinfo(loop, &x->gai, on_resolved, x->url.host, x->url.port, &hints) != 0)
        goto fail_close_timer;
    x->refs++;
    x->resolving = true;
    uv_timer_start(&x->resolve_timer, on_resolve_timeout, cfg->timeout_ms, 0);
    return x;

fail_close_timer:
    x->done = NULL;
    x->finished = true;
    close_timer(x);
    return NULL;
fail_free:
    free(x);
    return NULL;
}

void session_exchange_cancel(session_exchange_t *x)
{
    if (!x)
        return;
    x->done = NULL;
    x->finished = true;
    if (x->client) {
        http_client_t *c = x->client;
        x->client = NULL;
        http_client_cancel(c);
    }
    if (x->resolving)
        uv_cancel((uv_req_t *)&x->gai);
    close_timer(x);
    maybe_free(x);
}
