/* Admin listener; see admin.h. Small and boring on purpose: it must answer
 * while the workers are saturated, so it runs on the main loop. */
#include "admin/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "admin/board_page.h"
#include "admin/endpoints.h"
#include "core/addr.h"
#include "core/errors.h"
#include "core/json.h"
#include "core/log.h"
#include "http/parser.h"
#include "http/response.h"
#include "net/stream.h"

#define ADMIN_MAX_REQUEST 16384
#define ADMIN_TIMEOUT_MS 10000

struct admin {
    uv_tcp_t tcp;
    admin_hooks_t hooks;
    pbuf_pool_t pool;
    struct admin_conn *conns;
    int closing;
};

typedef struct admin_conn {
    stream_t s;
    uv_timer_t timer;
    admin_t *a;
    struct admin_conn *next, *prev;
    http_head_t head;
    char in[ADMIN_MAX_REQUEST];
    size_t in_len;
    int n_handles;
    int done;
} admin_conn_t;

static int path_is(const char *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(p, lit, l) == 0;
}

static const char *const endpoints[] = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /config",
    "GET /config/history",
    "GET /target_groups",
    "GET /routes/NAME/weights",
    "PUT /routes/NAME/weights",
    "GET /routes/NAME/shadow",
    "GET /routes/NAME/rollout",
    "POST /routes/NAME/rollout/pause|resume|promote|rollback|restart",
    "GET /migration",
    "GET /ui/",
};

static int reply(admin_response_t *resp, buf_t *body, int status, const char *code, const char *msg)
{
    resp->content_type = "application/json";
    buf_printf(body, "{\"error\":\"%s\",\"message\":\"%s\"}\n", code, msg);
    return resp->status = status;
}

static int not_allowed(admin_response_t *resp, buf_t *body, const char *allow)
{
    snprintf(resp->header_buf, sizeof resp->header_buf, "Allow: %s\r\n", allow);
    resp->header = resp->header_buf;
    return reply(resp, body, 405, "method_not_allowed", "method not allowed on this endpoint");
}

/* Authorization: Bearer <token>, compared in constant time. */
static bool bearer_ok(const admin_request_t *r, const char *token)
{
    const char *a = r->authorization;
    size_t n = r->authorization_len;
    if (!a || n < 7 || strncasecmp(a, "Bearer ", 7) != 0)
        return false;
    a += 7;
    n -= 7;
    while (n && *a == ' ') {
        a++;
        n--;
    }
    size_t tl = strlen(token);
    return n == tl && CRYPTO_memcmp(a, token, tl) == 0;
}

int admin_handle(const admin_hooks_t *h, const admin_request_t *r, buf_t *body,
                 admin_response_t *resp)
{
    const char *path = r->path;
    size_t plen = r->path_len;
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    resp->content_type = "text/plain; charset=utf-8";
    resp->header = NULL;
    bool get = (r->method_len == 3 && memcmp(r->method, "GET", 3) == 0) ||
               (r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0);
    if (path_is(path, plen, "/healthz") || path_is(path, plen, "/readyz") ||
        path_is(path, plen, "/metrics")) {
        if (!get)
            return not_allowed(resp, body, "GET, HEAD");
    }
    if (path_is(path, plen, "/healthz")) {
        buf_append_str(body, "ok\n");
        return resp->status = 200;
    }
    if (path_is(path, plen, "/readyz")) {
        char reason[256] = "";
        if (endpoints_ready(h, reason, sizeof reason)) {
            buf_append_str(body, "ready\n");
            return resp->status = 200;
        }
        char esc[512];
        size_t used, n = json_escape(esc, sizeof esc, reason, strlen(reason), &used);
        resp->content_type = "application/json";
        buf_printf(body, "{\"ready\":false,\"reason\":\"%.*s\"}\n", (int)n, esc);
        return resp->status = 503;
    }
    if (path_is(path, plen, "/metrics")) {
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        endpoints_metrics(h, body);
        return resp->status = 200;
    }
    if (path_is(path, plen, "/ui") || path_is(path, plen, "/ui/")) {
        /* The board's page holds no data (it fetches /migration, which needs
         * the token when there is one): served to anyone. */
        if (!get)
            return not_allowed(resp, body, "GET, HEAD");
        if (plen == 3) {
            resp->header = "Location: /ui/\r\n";
            return resp->status = 301;
        }
        resp->content_type = "text/html; charset=utf-8";
        resp->header = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
                       "style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\n";
        buf_append(body, board_page_html, board_page_html_len);
        return resp->status = 200;
    }
    /* Everything else may change or reveal the configuration. */
    const char *token = h->token ? h->token(h->ctx) : NULL;
    if (token && !bearer_ok(r, token)) {
        resp->header = "WWW-Authenticate: Bearer realm=\"ficus admin\"\r\n";
        return reply(resp, body, 401, "unauthorized",
                     "this endpoint needs Authorization: Bearer <admin token>");
    }
    resp->content_type = "application/json";
    if (path_is(path, plen, "/")) {
        if (!get)
            return not_allowed(resp, body, "GET, HEAD");
        buf_append_str(body, "{\"endpoints\":[");
        for (size_t i = 0; i < sizeof endpoints / sizeof endpoints[0]; i++)
            buf_printf(body, "%s\"%s\"", i ? "," : "", endpoints[i]);
        buf_append_str(body, "]}\n");
        return resp->status = 200;
    }
    const char *allow = NULL;
    int status = endpoints_handle(h, r->method, r->method_len, path, plen, r->body, r->body_len,
                                  body, &allow);
    if (status == 405 && allow) {
        snprintf(resp->header_buf, sizeof resp->header_buf, "Allow: %s\r\n", allow);
        resp->header = resp->header_buf;
    }
    if (status)
        return resp->status = status;
    return reply(resp, body, 404, "not_found", "no such admin endpoint (GET / lists them)");
}

static void conn_handle_closed(admin_conn_t *c)
{
    if (--c->n_handles == 0)
        free(c);
}

static void conn_on_timer_closed(uv_handle_t *h) { conn_handle_closed(h->data); }
static void conn_on_close(stream_t *s) { conn_handle_closed((admin_conn_t *)s); }

static void conn_close(admin_conn_t *c)
{
    if (c->done == 2)
        return;
    c->done = 2;
    admin_t *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->timer, conn_on_timer_closed);
    stream_close(&c->s, false);
}

static void conn_on_alloc(stream_t *s, uv_buf_t *buf)
{
    admin_conn_t *c = (admin_conn_t *)s;
    *buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof c->in - c->in_len));
}

static void respond(admin_conn_t *c, int status, const char *ctype, const char *extra,
                    const buf_t *body, bool head_only)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     status, http_status_reason(status), ctype, body->len, extra ? extra : "");
    uv_buf_t b[2] = {uv_buf_init(head, (unsigned)n),
                     uv_buf_init(body->data, head_only ? 0 : (unsigned)body->len)};
    c->done = 1;
    int rc = stream_write(&c->s, b, 2);
    if (rc == FE_TOOBIG) /* larger than the queue buffer (8 MiB): cannot be sent */
        log_warn("admin: response of %zu bytes too large to send", body->len);
    if (rc != 1)
        conn_close(c);
}

/* Could these bytes start an HTTP/1.x request? A method token, a space, then
 * printable bytes up to the first line end. */
static bool plausible_request_line(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] >= 'A' && p[i] <= 'Z')
        i++;
    if (i == n)
        return i <= 16;
    if (i == 0 || i > 16 || p[i] != ' ')
        return false;
    for (; i < n && p[i] != '\r' && p[i] != '\n'; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] == 0x7f)
            return false;
    return true;
}

/* Does the part of the head received so far parse? A broken header line
 * is as final as a broken request line. */
static bool partial_head_ok(admin_conn_t *c)
{
    int ev = 0;
    http_parser_t parser;
    http_parser_init_request(&parser);
    return http_parser_feed(&parser, &c->head, c->in, c->in_len, &ev) >= 0;
}

static void conn_on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    admin_conn_t *c = (admin_conn_t *)s;
    if (n < 0 || c->done) {
        if (n < 0)
            conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    size_t head_end = http_head_end(c->in, c->in_len, 0);
    if (!head_end) {
        if (c->in_len >= sizeof c->in || !plausible_request_line(c->in, c->in_len) ||
            !partial_head_ok(c)) {
            /* Garbage, or TLS on a plain-HTTP port: say so now rather than
             * after the timeout. */
            buf_t body;
            buf_init(&body, 0);
            buf_append_str(&body, "{\"error\":\"bad_request\",\"message\":\"not an HTTP/1.x "
                                  "request (the admin listener speaks plain HTTP)\"}\n");
            respond(c, 400, "application/json", NULL, &body, false);
            buf_deinit(&body);
        }
        return;
    }
    /* The whole request (head and body) is read before it is handled. */
    int ev = 0;
    http_parser_t parser;
    http_parser_init_request(&parser);
    long k = http_parser_feed(&parser, &c->head, c->in, c->in_len, &ev);
    if (k >= 0 && (ev & HTTP_EV_HEAD) && !c->head.chunked &&
        head_end + c->head.content_length > c->in_len) {
        if (head_end + c->head.content_length > sizeof c->in)
            k = -1; /* too large for the admin API */
        else
            return; /* wait for the rest of the body */
    }
    buf_t body;
    buf_init(&body, 0);
    if (k < 0 || !(ev & HTTP_EV_HEAD) || c->head.chunked) {
        buf_append_str(&body, "{\"error\":\"bad_request\",\"message\":\"malformed request\"}\n");
        respond(c, 400, "application/json", NULL, &body, false);
    } else {
        const http_header_t *authz =
            http_header_find(c->head.headers, c->head.n_headers, "authorization", 13);
        admin_request_t r = {
            .method = c->head.method,
            .method_len = c->head.method_len,
            .path = c->head.target,
            .path_len = c->head.target_len,
            .body = c->in + head_end,
            .body_len = (size_t)c->head.content_length,
            .authorization = authz ? authz->value : NULL,
            .authorization_len = authz ? authz->value_len : 0,
        };
        admin_response_t resp;
        admin_handle(&c->a->hooks, &r, &body, &resp);
        bool head_only = c->head.method_len == 4 && memcmp(c->head.method, "HEAD", 4) == 0;
        respond(c, resp.status, resp.content_type, resp.header, &body, head_only);
    }
    buf_deinit(&body);
}

static void conn_on_drain(stream_t *s, int status)
{
    (void)status;
    conn_close((admin_conn_t *)s);
}

static void conn_on_timer(uv_timer_t *t) { conn_close(t->data); }

static const stream_ops_t admin_ops = {
    .on_alloc = conn_on_alloc,
    .on_read = conn_on_read,
    .on_drain = conn_on_drain,
    .on_close = conn_on_close,
};

static void on_connection(uv_stream_t *server, int status)
{
    admin_t *a = server->data;
    if (status < 0)
        return;
    admin_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->a = a;
    if (stream_init(server->loop, &c->s, &admin_ops, &a->pool) != 0) {
        free(c);
        return;
    }
    c->n_handles = 2;
    uv_timer_init(server->loop, &c->timer);
    c->timer.data = c;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->s.tcp) != 0 || stream_read_start(&c->s) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, conn_on_timer, ADMIN_TIMEOUT_MS, 0);
}

admin_t *admin_start(uv_loop_t *loop, const struct sockaddr *sa, socklen_t len, int fd,
                     const admin_hooks_t *hooks, char *err, size_t errlen)
{
    (void)len;
    admin_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->hooks = *hooks;
    /* Big enough for a whole exposition to queue behind a slow scraper. */
    pbuf_pool_init(&a->pool, 8u << 20, 2);
    uv_tcp_init(loop, &a->tcp);
    a->tcp.data = a;
    int rc = fd >= 0 ? uv_tcp_open(&a->tcp, fd) : uv_tcp_bind(&a->tcp, sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->tcp, 128, on_connection);
    if (rc != 0) {
        char name[80];
        addr_format(sa, name, sizeof name);
        snprintf(err, errlen, "admin listener %s: %s", name, uv_strerror(rc));
        uv_close((uv_handle_t *)&a->tcp, (uv_close_cb)free);
        return NULL;
    }
    return a;
}

int admin_fd(const admin_t *a)
{
    uv_os_fd_t fd = -1;
    return uv_fileno((const uv_handle_t *)&a->tcp, &fd) == 0 ? fd : -1;
}

static void on_admin_closed(uv_handle_t *h)
{
    admin_t *a = h->data;
    pbuf_pool_deinit(&a->pool);
    free(a);
}

void admin_stop(admin_t *a)
{
    if (!a)
        return;
    while (a->conns)
        conn_close(a->conns);
    uv_close((uv_handle_t *)&a->tcp, on_admin_closed);
}
