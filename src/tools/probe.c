/* `ficus probe`: loads the endpoint file (libyaml, every error as
 * FILE:LINE:COL), checks each endpoint on its own thread with client/fetch
 * (blocking, bounded by a deadline, OpenSSL for https), and reports in
 * file order. The main thread schedules and gives up on a stuck DNS lookup. */
#include "tools/probe.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <yaml.h>

#include "client/fetch.h"
#include "config/units.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/time.h"

typedef struct probe_result {
    int status; /* 0 = no status line */
    uint64_t latency_ms;
    bool ok;
    char reason[128];
} probe_result_t;

typedef struct probe_endpoint {
    const char *env; /* owned by the list */
    char *name;
    char *url;
    bool https;
    char host[256]; /* without brackets */
    char port[8];
    char *target;      /* path and query */
    char *host_header; /* host[:port] as sent */
    int expect[PROBE_MAX_EXPECT];
    int n_expect;
    uint64_t timeout_ms;
    /* scheduling, under the list's lock */
    uint64_t started_ms;
    pthread_t thread;
    bool has_thread, running, finished, abandoned;
    probe_result_t result;
} probe_endpoint_t;

typedef struct probe_error {
    size_t line, col, seq;
    char *msg;
} probe_error_t;

typedef struct probe_list {
    char **envs;
    size_t n_envs;
    probe_endpoint_t *eps;
    size_t n_eps, cap_eps;
    /* loading: errors are printed in file order once all are known */
    const char *file;
    int errors;
    struct probe_error *errs;
    size_t n_errs;
    /* running */
    SSL_CTX *tls;
    pthread_mutex_t lock;
    pthread_cond_t done;
    size_t running;
} probe_list_t;

typedef struct probe_job {
    probe_list_t *list;
    probe_endpoint_t *ep;
} probe_job_t;

/* ---- loading the file --------------------------------------------------- */

static void load_error(probe_list_t *l, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void load_error(probe_list_t *l, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;
    l->errors++;
    va_start(ap, fmt);
    int rc = vasprintf(&msg, fmt, ap);
    va_end(ap);
    probe_error_t *errs = realloc(l->errs, (l->n_errs + 1) * sizeof *errs);
    if (rc < 0 || !errs) {
        free(rc < 0 ? NULL : msg);
        if (errs)
            l->errs = errs;
        fprintf(stderr, "%s: out of memory\n", l->file);
        return;
    }
    l->errs = errs;
    errs[l->n_errs] = (probe_error_t){.line = n ? n->start_mark.line + 1 : 1,
                                      .col = n ? n->start_mark.column + 1 : 1,
                                      .seq = l->n_errs,
                                      .msg = msg};
    l->n_errs++;
}

static int error_cmp(const void *a, const void *b)
{
    const probe_error_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void print_errors(probe_list_t *l)
{
    if (!l->n_errs)
        return;
    qsort(l->errs, l->n_errs, sizeof *l->errs, error_cmp);
    for (size_t i = 0; i < l->n_errs; i++) {
        fprintf(stderr, "%s:%zu:%zu: %s\n", l->file, l->errs[i].line, l->errs[i].col,
                l->errs[i].msg);
        free(l->errs[i].msg);
    }
    free(l->errs);
    l->errs = NULL;
    l->n_errs = 0;
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static bool key_seen(yaml_document_t *doc, yaml_node_pair_t *first, yaml_node_pair_t *p)
{
    for (yaml_node_pair_t *q = first; q < p; q++) {
        const char *a = scalar(yaml_document_get_node(doc, q->key));
        const char *b = scalar(yaml_document_get_node(doc, p->key));
        if (a && b && strcmp(a, b) == 0)
            return true;
    }
    return false;
}

/* Splits an http(s) URL into ep; NULL, or a static reason. */
static const char *url_parse(probe_endpoint_t *ep, const char *url)
{
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return "URL has spaces or control characters (percent-encode them)";
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        ep->https = false;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        ep->https = true;
    } else {
        return "URL must start with http:// or https://";
    }
    size_t alen = strcspn(p, "/?#");
    const char *rest = p + alen;
    if (memchr(p, '@', alen))
        return "user information in URLs is not supported";
    const char *host = p, *port = NULL;
    size_t hlen;
    if (*p == '[') {
        const char *rb = memchr(p, ']', alen);
        if (!rb)
            return "unclosed [ in URL host";
        host = p + 1;
        hlen = (size_t)(rb - host);
        if (rb + 1 < rest) {
            if (rb[1] != ':')
                return "bad URL host";
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        hlen = colon ? (size_t)(colon - p) : alen;
        port = colon ? colon + 1 : NULL;
    }
    if (hlen == 0 || hlen >= sizeof ep->host)
        return "URL has no host, or one too long";
    memcpy(ep->host, host, hlen);
    ep->host[hlen] = '\0';
    unsigned long portnum = ep->https ? 443 : 80;
    if (port) {
        size_t plen = (size_t)(rest - port);
        if (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen)
            return "bad port in URL";
        portnum = strtoul(port, NULL, 10);
        if (portnum == 0 || portnum > 65535)
            return "bad port in URL";
    }
    snprintf(ep->port, sizeof ep->port, "%lu", portnum);
    /* The fragment never goes on the wire. */
    size_t tlen = strcspn(rest, "#");
    if (asprintf(&ep->target, "%s%.*s", *rest == '/' ? "" : "/", (int)tlen, rest) < 0)
        return "out of memory";
    bool v6 = strchr(ep->host, ':') != NULL;
    bool default_port = portnum == (ep->https ? 443u : 80u);
    int n;
    if (default_port)
        n = asprintf(&ep->host_header, v6 ? "[%s]" : "%s", ep->host);
    else
        n = asprintf(&ep->host_header, v6 ? "[%s]:%lu" : "%s:%lu", ep->host, portnum);
    if (n < 0)
        return "out of memory";
    return NULL;
}

static bool parse_status(const char *s, int *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return false;
    long v = strtol(s, &end, 10);
    if (*end || v < 100 || v > 599)
        return false;
    *out = (int)v;
    return true;
}

static void load_expect(probe_list_t *l, yaml_document_t *doc, yaml_node_t *v, probe_endpoint_t *ep,
                        const char *where)
{
    ep->n_expect = 0;
    if (v->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            yaml_node_t *s = yaml_document_get_node(doc, *it);
            if (ep->n_expect == PROBE_MAX_EXPECT) {
                load_error(l, s, "%s.expect: at most %d statuses", where, PROBE_MAX_EXPECT);
                return;
            }
            if (!parse_status(scalar(s), &ep->expect[ep->n_expect])) {
                load_error(l, s, "%s.expect: a status must be a number from 100 to 599", where);
                return;
            }
            ep->n_expect++;
        }
        if (ep->n_expect == 0)
            load_error(l, v, "%s.expect: the list is empty", where);
        return;
    }
    if (!parse_status(scalar(v), &ep->expect[0])) {
        load_error(l, v, "%s.expect: a status (100-599) or a list of them", where);
        return;
    }
    ep->n_expect = 1;
}

static probe_endpoint_t *list_add(probe_list_t *l)
{
    if (l->n_eps == l->cap_eps) {
        size_t cap = l->cap_eps ? l->cap_eps * 2 : 16;
        probe_endpoint_t *e = realloc(l->eps, cap * sizeof *e);
        if (!e)
            return NULL;
        l->eps = e;
        l->cap_eps = cap;
    }
    probe_endpoint_t *ep = &l->eps[l->n_eps++];
    memset(ep, 0, sizeof *ep);
    return ep;
}

static void load_endpoint(probe_list_t *l, yaml_document_t *doc, yaml_node_t *n, const char *env,
                          const char *where)
{
    if (n->type != YAML_MAPPING_NODE) {
        load_error(l, n, "%s: expected a mapping {name, url, expect, timeout}", where);
        return;
    }
    probe_endpoint_t *ep = list_add(l);
    if (!ep) {
        load_error(l, n, "out of memory");
        return;
    }
    ep->env = env;
    ep->expect[0] = 200;
    ep->n_expect = 1;
    ep->timeout_ms = PROBE_DEFAULT_TIMEOUT_MS;
    yaml_node_t *url_node = NULL;
    yaml_node_pair_t *first = n->data.mapping.pairs.start;
    for (yaml_node_pair_t *p = first; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        const char *key = scalar(k), *val = scalar(v);
        if (!key) {
            load_error(l, k, "%s: keys must be plain strings", where);
            continue;
        }
        if (key_seen(doc, first, p)) {
            load_error(l, k, "%s: duplicate key '%s'", where, key);
            continue;
        }
        if (strcmp(key, "name") == 0) {
            if (!val || !*val)
                load_error(l, v, "%s.name: expected a non-empty string", where);
            else
                ep->name = strdup(val);
        } else if (strcmp(key, "url") == 0) {
            url_node = v;
            const char *why = val ? url_parse(ep, val) : "expected a string";
            if (why)
                load_error(l, v, "%s.url: %s", where, why);
            else
                ep->url = strdup(val);
        } else if (strcmp(key, "expect") == 0) {
            load_expect(l, doc, v, ep, where);
        } else if (strcmp(key, "timeout") == 0) {
            const char *why = "expected a duration such as 2s";
            if (!val || units_parse_duration_ms(val, &ep->timeout_ms, &why) != 0)
                load_error(l, v, "%s.timeout: %s", where, why);
            else if (ep->timeout_ms == 0)
                load_error(l, v, "%s.timeout: must be more than 0", where);
        } else {
            load_error(l, k, "%s: unknown key '%s' (expected name, url, expect, timeout)", where,
                       key);
        }
    }
    if (!ep->name && !url_node)
        load_error(l, n, "%s: 'name' and 'url' are required", where);
    else if (!ep->name)
        load_error(l, n, "%s: 'name' is required", where);
    else if (!url_node)
        load_error(l, n, "%s: 'url' is required", where);
}

static void load_environment(probe_list_t *l, yaml_document_t *doc, const char *env, yaml_node_t *n)
{
    char where[300];
    snprintf(where, sizeof where, "environments.%s", env);
    if (n->type != YAML_MAPPING_NODE) {
        load_error(l, n, "%s: expected a mapping with 'endpoints'", where);
        return;
    }
    yaml_node_t *eps = NULL;
    yaml_node_pair_t *first = n->data.mapping.pairs.start;
    for (yaml_node_pair_t *p = first; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        const char *key = scalar(k);
        if (key && strcmp(key, "endpoints") == 0 && !key_seen(doc, first, p))
            eps = yaml_document_get_node(doc, p->value);
        else if (key && strcmp(key, "endpoints") == 0)
            load_error(l, k, "%s: duplicate key 'endpoints'", where);
        else
            load_error(l, k, "%s: unknown key '%s' (expected endpoints)", where, key ? key : "?");
    }
    if (!eps) {
        load_error(l, n, "%s: 'endpoints' is required", where);
        return;
    }
    if (eps->type != YAML_SEQUENCE_NODE) {
        load_error(l, eps, "%s.endpoints: expected a list", where);
        return;
    }
    size_t i = 0;
    for (yaml_node_item_t *it = eps->data.sequence.items.start; it < eps->data.sequence.items.top;
         it++, i++) {
        char ewhere[340];
        snprintf(ewhere, sizeof ewhere, "%s.endpoints[%zu]", where, i);
        load_endpoint(l, doc, yaml_document_get_node(doc, *it), env, ewhere);
    }
}

/* Fills l from the file; 0, or FE_PARSE / FE_IO after printing every error. */
static int load_file(probe_list_t *l, const char *path, const char *only_env)
{
    l->file = path;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s:1:1: cannot open: %s\n", path, strerror(errno));
        return FE_IO;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_mark_t m = parser.problem_mark;
        fprintf(stderr, "%s:%zu:%zu: %s%s%s\n", path, m.line + 1, m.column + 1,
                parser.problem ? parser.problem : "YAML error", parser.context ? " " : "",
                parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        fclose(f);
        return FE_PARSE;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    yaml_node_t *envs = NULL;
    bool env_found = false;
    if (!root || root->type != YAML_MAPPING_NODE) {
        load_error(l, root, "expected a mapping with 'environments'");
        goto done;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        const char *key = scalar(k);
        if (key && strcmp(key, "environments") == 0 && !envs)
            envs = yaml_document_get_node(&doc, p->value);
        else
            load_error(l, k, "unknown or repeated key '%s' (expected environments)",
                       key ? key : "?");
    }
    if (!envs) {
        load_error(l, root, "'environments' is required");
        goto done;
    }
    if (envs->type != YAML_MAPPING_NODE) {
        load_error(l, envs, "environments: expected a mapping of environment names");
        goto done;
    }
    yaml_node_pair_t *first = envs->data.mapping.pairs.start;
    for (yaml_node_pair_t *p = first; p < envs->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        const char *env = scalar(k);
        if (!env || !*env) {
            load_error(l, k, "environments: names must be non-empty strings");
            continue;
        }
        if (key_seen(&doc, first, p)) {
            load_error(l, k, "environments: duplicate environment '%s'", env);
            continue;
        }
        env_found |= only_env && strcmp(env, only_env) == 0;
        char **envs_new = realloc(l->envs, (l->n_envs + 1) * sizeof *l->envs);
        char *copy = strdup(env);
        if (!envs_new || !copy) {
            free(copy);
            if (envs_new)
                l->envs = envs_new;
            load_error(l, k, "out of memory");
            break;
        }
        l->envs = envs_new;
        l->envs[l->n_envs++] = copy;
        load_environment(l, &doc, copy, yaml_document_get_node(&doc, p->value));
    }
    if (only_env && !env_found)
        load_error(l, envs, "environments: no environment '%s'", only_env);
    /* The whole file is validated; --env only narrows what is checked. */
    if (only_env) {
        size_t kept = 0;
        for (size_t i = 0; i < l->n_eps; i++) {
            if (strcmp(l->eps[i].env, only_env) == 0) {
                l->eps[kept++] = l->eps[i];
            } else {
                free(l->eps[i].name);
                free(l->eps[i].url);
                free(l->eps[i].target);
                free(l->eps[i].host_header);
            }
        }
        l->n_eps = kept;
    }
done:
    print_errors(l);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return l->errors ? FE_PARSE : 0;
}

static void list_free(probe_list_t *l)
{
    for (size_t i = 0; i < l->n_eps; i++) {
        free(l->eps[i].name);
        free(l->eps[i].url);
        free(l->eps[i].target);
        free(l->eps[i].host_header);
    }
    free(l->eps);
    for (size_t i = 0; i < l->n_envs; i++)
        free(l->envs[i]);
    free(l->envs);
    free(l);
}

/* ---- one check ---------------------------------------------------------- */

static void fail(probe_result_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(probe_result_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
    r->ok = false;
}

static const char *connect_reason(int err)
{
    switch (err) {
    case ETIMEDOUT:
        return "connect timeout";
    case ECONNREFUSED:
        return "connect refused";
    case ENETUNREACH:
        return "network unreachable";
    case EHOSTUNREACH:
        return "host unreachable";
    default:
        return NULL;
    }
}

/* Why the connection could not be opened, in the table's words. */
static void fail_open(probe_result_t *r, const blocking_conn_t *c)
{
    const char *why = connect_reason(c->err);
    if (c->step == BLOCKING_CONN_RESOLVE)
        fail(r, "dns: %s", c->gai_err == EAI_SYSTEM ? strerror(c->err) : gai_strerror(c->gai_err));
    else if (c->step == BLOCKING_CONN_CONNECT && why)
        fail(r, "%s", why);
    else if (c->step == BLOCKING_CONN_CONNECT)
        fail(r, "connect: %s", strerror(c->err));
    else if (c->err == ETIMEDOUT)
        fail(r, "tls timeout");
    else
        fail(r, "tls: %s", c->tls_why);
}

/* Why a check got no status, in the table's words. */
static void fail_fetch(probe_result_t *r, const fetch_t *f)
{
    int err = f->conn.err;
    switch (f->fail) {
    case FETCH_OPEN:
        fail_open(r, &f->conn);
        break;
    case FETCH_REQUEST:
        fail(r, "%s", f->why);
        break;
    case FETCH_SEND:
        fail(r, "%s",
             err == ETIMEDOUT                    ? "timeout"
             : err == ECONNRESET || err == EPIPE ? "reset"
                                                 : "send failed");
        break;
    case FETCH_RECV:
        if (err == ETIMEDOUT || err == ECONNRESET)
            fail(r, "%s", err == ETIMEDOUT ? "timeout" : "reset");
        else
            fail(r, "recv: %s", strerror(err));
        break;
    case FETCH_CLOSED:
        fail(r, "closed without a response");
        break;
    default: /* cut short, malformed or too long before its status was known */
        fail(r, "bad status line");
        break;
    }
}

static void expect_text(const probe_endpoint_t *ep, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < ep->n_expect && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%d", i ? "|" : "", ep->expect[i]);
}

static void check(const probe_endpoint_t *ep, SSL_CTX *ctx, probe_result_t *r)
{
    uint64_t t0 = time_now_ms();
    memset(r, 0, sizeof *r);
    blocking_conn_opts_t o = {.tls = ep->https ? ctx : NULL, .addrconfig = true};
    request_t rq = {.method = "GET",
                    .target = ep->target,
                    .host = ep->host_header,
                    .headers = "User-Agent: ficus-probe\r\nAccept: */*\r\n",
                    .close = true};
    /* The status is the answer: the body is never read. */
    fetch_t f;
    fetch_init(&f, ep->host, ep->port, &o, PROBE_MAX_HEAD_BYTES, 0, REPLY_BODY_NONE);
    if (fetch_do(&f, &rq, t0 + ep->timeout_ms) != 0) {
        fail_fetch(r, &f);
    } else {
        r->status = reply_status(&f.reply);
        for (int i = 0; i < ep->n_expect; i++)
            if (ep->expect[i] == r->status)
                r->ok = true;
        if (!r->ok) {
            char want[64];
            expect_text(ep, want, sizeof want);
            fail(r, "expected %s", want);
        }
    }
    fetch_deinit(&f);
    r->latency_ms = time_now_ms() - t0;
}

/* ---- scheduling --------------------------------------------------------- */

static void *check_thread(void *arg)
{
    probe_job_t *job = arg;
    probe_result_t r;
    check(job->ep, job->list->tls, &r);
    ERR_clear_error();
    pthread_mutex_lock(&job->list->lock);
    /* An abandoned check already counts as a timeout; its late word is dropped. */
    if (!job->ep->abandoned) {
        job->ep->result = r;
        job->ep->finished = true;
        job->ep->running = false;
        job->list->running--;
        pthread_cond_signal(&job->list->done);
    }
    pthread_mutex_unlock(&job->list->lock);
    free(job);
    return NULL;
}

/* Checks every endpoint, PROBE_MAX_PARALLEL at once. Returns true when no
 * check was abandoned (so the list may be freed). */
static bool run_all(probe_list_t *l)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->done, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&l->lock, NULL);
    pthread_attr_t ta;
    pthread_attr_init(&ta);
    pthread_attr_setstacksize(&ta, 512 * 1024);
    size_t next = 0, finished = 0;
    bool abandoned_any = false;
    pthread_mutex_lock(&l->lock);
    while (finished < l->n_eps) {
        while (l->running < PROBE_MAX_PARALLEL && next < l->n_eps) {
            probe_endpoint_t *ep = &l->eps[next++];
            probe_job_t *job = malloc(sizeof *job);
            ep->started_ms = time_now_ms();
            ep->running = true;
            l->running++;
            if (job) {
                job->list = l;
                job->ep = ep;
            }
            if (job && pthread_create(&ep->thread, &ta, check_thread, job) == 0) {
                ep->has_thread = true;
            } else {
                free(job);
                ep->running = false;
                ep->finished = true;
                l->running--;
                fail(&ep->result, "cannot start a thread");
            }
        }
        /* Count what finished; give up on checks stuck past their deadline. */
        finished = 0;
        uint64_t now = time_now_ms(), wake = UINT64_MAX;
        for (size_t i = 0; i < next; i++) {
            probe_endpoint_t *ep = &l->eps[i];
            if (ep->running) {
                uint64_t limit = ep->started_ms + ep->timeout_ms + PROBE_DNS_GRACE_MS;
                if (now >= limit) {
                    ep->running = false;
                    ep->abandoned = ep->finished = true;
                    l->running--;
                    abandoned_any = true;
                    ep->result.latency_ms = now - ep->started_ms;
                    fail(&ep->result, "dns timeout"); /* the only step without a deadline */
                } else if (limit < wake) {
                    wake = limit;
                }
            }
            if (!ep->finished)
                continue;
            finished++;
            /* Reaped at once: a finished thread keeps its stack until joined.
             * It no longer takes the lock, so joining under it is safe. */
            if (ep->has_thread) {
                if (ep->abandoned)
                    pthread_detach(ep->thread);
                else
                    pthread_join(ep->thread, NULL);
                ep->has_thread = false;
            }
        }
        if (finished == l->n_eps || (l->running < PROBE_MAX_PARALLEL && next < l->n_eps))
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t wait_ms = wake == UINT64_MAX ? 1000 : wake - now;
        ts.tv_sec += (time_t)(wait_ms / 1000);
        ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&l->done, &l->lock, &ts);
    }
    pthread_mutex_unlock(&l->lock);
    pthread_attr_destroy(&ta);
    if (abandoned_any)
        return false;
    pthread_cond_destroy(&l->done);
    pthread_mutex_destroy(&l->lock);
    return true;
}

/* ---- output ------------------------------------------------------------- */

static void print_table(const probe_list_t *l)
{
    int we = (int)strlen("ENVIRONMENT"), wn = (int)strlen("ENDPOINT");
    for (size_t i = 0; i < l->n_eps; i++) {
        int a = (int)strlen(l->eps[i].env), b = (int)strlen(l->eps[i].name);
        we = a > we ? a : we;
        wn = b > wn ? b : wn;
    }
    printf("%-*s  %-*s  %6s  %10s  %s\n", we, "ENVIRONMENT", wn, "ENDPOINT", "STATUS", "LATENCY_MS",
           "RESULT");
    for (size_t i = 0; i < l->n_eps; i++) {
        const probe_endpoint_t *ep = &l->eps[i];
        char status[8] = "-";
        if (ep->result.status)
            snprintf(status, sizeof status, "%d", ep->result.status);
        printf("%-*s  %-*s  %6s  %10llu  %s%s%s\n", we, ep->env, wn, ep->name, status,
               (unsigned long long)ep->result.latency_ms, ep->result.ok ? "ok" : "FAIL",
               ep->result.ok ? "" : " ", ep->result.ok ? "" : ep->result.reason);
    }
}

static int print_json(const probe_list_t *l)
{
    json_t *arr = json_array();
    if (!arr)
        return FE_NOMEM;
    for (size_t i = 0; i < l->n_eps; i++) {
        const probe_endpoint_t *ep = &l->eps[i];
        json_t *expect = json_array();
        for (int k = 0; k < ep->n_expect; k++)
            json_array_append_new(expect, json_integer(ep->expect[k]));
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:o, s:o, s:I, s:b, s:o}", "environment", ep->env,
                      "endpoint", ep->name, "url", ep->url, "expect", expect, "status",
                      ep->result.status ? json_integer(ep->result.status) : json_null(),
                      "latency_ms", (json_int_t)ep->result.latency_ms, "ok", ep->result.ok,
                      "reason", ep->result.ok ? json_null() : json_string(ep->result.reason));
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return FE_NOMEM;
        }
    }
    char *s = json_dumps(arr, JSON_INDENT(2));
    json_decref(arr);
    if (!s)
        return FE_NOMEM;
    puts(s);
    free(s);
    return 0;
}

/* ---- command line ------------------------------------------------------- */

static const char USAGE[] =
    "usage: ficus probe -f FILE [--env NAME] [--json] [--insecure]\n"
    "  -f, --file FILE   environments and endpoints to check (YAML):\n"
    "                      environments:\n"
    "                        staging:\n"
    "                          endpoints:\n"
    "                            - {name: search, url: \"https://stg.example.com/search?q=a\",\n"
    "                               expect: 200, timeout: 2s}\n"
    "                    expect: a status or a list of them (default 200);\n"
    "                    timeout: the whole check (default 5s)\n"
    "  --env NAME        check only this environment\n"
    "  --json            print a JSON array instead of the table\n"
    "  --insecure        do not verify TLS certificates\n"
    "  --help            this text\n"
    "Exit code: 0 all ok, 1 any failed, 2 bad usage or a bad file.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ficus probe: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", USAGE);
    va_end(ap);
    return 2;
}

static SSL_CTX *tls_context(bool insecure)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (!insecure && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int probe_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'f'}, {"env", required_argument, NULL, 'e'},
        {"json", no_argument, NULL, 'j'},       {"insecure", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0}};
    const char *file = NULL, *env = NULL;
    bool json = false, insecure = false;
    opterr = 0;
    optind = 0; /* glibc: full re-initialisation */
    int ch;
    while ((ch = getopt_long(argc, argv, "+:f:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'f':
            file = optarg;
            break;
        case 'e':
            env = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'k':
            insecure = true;
            break;
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!file)
        return usage_error("-f FILE is required");

    /* On the heap: a check abandoned in DNS may touch it until the process exits. */
    probe_list_t *l = calloc(1, sizeof *l);
    if (!l) {
        fprintf(stderr, "ficus probe: out of memory\n");
        return 2;
    }
    if (load_file(l, file, env) != 0) {
        list_free(l);
        return 2;
    }
    bool any_https = false;
    for (size_t i = 0; i < l->n_eps; i++)
        any_https |= l->eps[i].https;
    if (any_https && !(l->tls = tls_context(insecure))) {
        fprintf(stderr, "ficus probe: cannot set up TLS (CA store)\n");
        list_free(l);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bool clean = run_all(l);
    int rc = 0;
    for (size_t i = 0; i < l->n_eps; i++)
        if (!l->eps[i].result.ok)
            rc = 1;
    if (json) {
        if (print_json(l) != 0)
            rc = 1;
    } else {
        print_table(l);
    }
    fflush(stdout);
    /* A check stuck in DNS still uses the list and the TLS context; the
     * process is about to exit, which ends it. */
    if (clean) {
        SSL_CTX_free(l->tls);
        list_free(l);
    }
    return rc;
}
