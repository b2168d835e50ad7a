/* `ficus load`; see load.h. One libuv loop: a timerfd (polled) wakes the
 * loop at the next scheduled send with microsecond precision, keep-alive
 * connections over net/stream take the requests due in order, responses are
 * framed by http/parser. The schedule is implicit: request i is due at
 * t0 + i / rate; a request that finds no free connection waits, and its
 * wait counts in its latency. */
#include "tools/load.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "config/units.h"
#include "core/buf.h"
#include "core/errors.h"
#include "core/time.h"
#include "core/url.h"
#include "http/parser.h"
#include "net/stream.h"
#include "tools/load_report.h"

#define LOAD_MAX_CONNECTIONS 10000
#define LOAD_MAX_RATE 10000000.0
#define LOAD_MAX_HEADERS 64
#define LOAD_MAX_BODY (16 * 1024 * 1024)
#define LOAD_HEAD_BYTES 16384  /* a response head larger than this is a failure */
#define LOAD_GRACE_MS 5000     /* after the schedule, answers are awaited this long */
#define LOAD_RECONNECT_MS 50   /* a failed connection is made again after this */
#define LOAD_KNEE_MAX_STEPS 24 /* steps of a knee search (x1.5 from 1 req/s: 1M in 35) */
#define LOAD_KNEE_GROWTH 1.5   /* each step's rate over the last good one's, until one fails */
#define LOAD_KNEE_BISECTIONS 3 /* then halvings of the gap between good and bad */
/* Wake-ups are on a 100 us grid: at high rates several sends share one
 * (and one timer system call); a send is never early, and up to this late
 * counts in its latency, which is measured from its schedule. */
#define LOAD_TIMER_GRID_US 100

static const char USAGE[] =
    "usage: ficus load URL [--rate 500] [--duration 30s] [--connections 64]\n"
    "                      [--method M] [--header 'K: V']... [--body-file F] [--p99 250ms]\n"
    "                      [--find-knee] [--plan FILE] [--headroom 30%] [--json] [--svg FILE]\n"
    "\n"
    "Open-loop load: requests are sent on a fixed schedule (--rate per second)\n"
    "over keep-alive connections, and each one's latency counts from its\n"
    "scheduled send time, so a server that slows down cannot hide it.\n"
    "--find-knee raises the rate from --rate (x1.5 per step, then bisects) and\n"
    "reports the highest rate whose p99 stays under --p99 with under 0.1%\n"
    "errors: the per-instance capacity at the latency knee. --plan FILE (a YAML\n"
    "list of {name, peak} events, peak in req/s) prints the instances each event\n"
    "needs at that capacity, keeping --headroom spare. --svg FILE draws p50/p99\n"
    "against the rate. Exit 1 when --p99 is given and missed; 2 on bad usage or\n"
    "an unreachable target.\n";

typedef struct load load_t;

typedef struct conn {
    stream_t s; /* first: stream callbacks cast back */
    uv_connect_t creq;
    uv_timer_t retry; /* reconnects after a failure */
    load_t *ld;
    http_parser_t parser;
    uint64_t sched_us; /* the request in flight's scheduled send time */
    int status;        /* its status, once the head came */
    bool open;         /* the stream handle exists (until its close callback) */
    bool ready;        /* connected and not busy */
    bool busy;         /* a request in flight */
    char *part;        /* a response head that came in pieces */
    size_t part_len;
    struct conn *next_free;
} conn_t;

typedef struct load_opts {
    const char *url;
    double rate;
    uint64_t duration_ms;
    size_t connections;
    const char *method;
    char *headers[LOAD_MAX_HEADERS];
    size_t n_headers;
    const char *body_file;
    uint64_t p99_us;
    bool find_knee;
    const char *plan;
    double headroom;
    bool json;
    const char *svg;
} load_opts_t;

struct load {
    uv_loop_t loop;
    const load_opts_t *o;
    struct sockaddr_storage addr;
    char *req; /* the request's bytes, head and body */
    size_t req_len;
    bool head_method;
    conn_t *conns;
    size_t n_conns;
    conn_t *free_list;
    pbuf_pool_t pool;
    char rbuf[65536];
    http_head_t head;
    int tfd;
    uint64_t armed_us; /* when the timerfd fires next (0: not armed) */
    uv_poll_t tpoll;
    uv_timer_t tick;
    /* the run under way */
    load_run_t *run;
    uint64_t t0_us, end_us, give_up_us, last_done_us, next_print_us;
    uint64_t total; /* requests in the run */
    uint64_t next;  /* the next one to send */
    uint64_t inflight;
    bool running;
    bool tty;
    bool stopping; /* closing every connection */
    bool opened;   /* the loop and its handles are set up */
};

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ficus load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    fputs(USAGE, stderr);
    return 2;
}

static uint64_t due_us(const load_t *ld, uint64_t i)
{
    return ld->t0_us + (uint64_t)((double)i * 1e6 / ld->run->rate);
}

/* ----------------------------------------------------------- connections */

static void conn_connect(conn_t *c);
static void send_due(load_t *ld);

static void conn_free_push(conn_t *c)
{
    c->ready = true;
    c->next_free = c->ld->free_list;
    c->ld->free_list = c;
}

/* The request in flight on c ended: answered with c->status, or failed. */
static void request_done(conn_t *c, bool answered)
{
    load_t *ld = c->ld;
    load_run_t *r = ld->run;
    c->busy = false;
    ld->inflight--;
    uint64_t now = time_now_us();
    ld->last_done_us = now;
    if (!r)
        return;
    if (answered) {
        r->completed++;
        if (c->status > 0 && c->status < LOAD_MAX_STATUS)
            r->status[c->status]++;
        if (c->status >= 500)
            r->errors++;
        load_hist_record(&r->latency, now > c->sched_us ? now - c->sched_us : 0);
    } else {
        r->failures++;
        r->errors++;
    }
}

static void on_retry(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (!c->ld->stopping)
        conn_connect(c);
}

static void on_conn_closed(stream_t *s)
{
    conn_t *c = (conn_t *)s;
    c->open = false;
    c->part_len = 0;
    if (!c->ld->stopping)
        uv_timer_start(&c->retry, on_retry, LOAD_RECONNECT_MS, 0);
}

/* The connection failed or the server closed it: the request in flight (if
 * any) failed, and another connection is made soon. */
static void conn_fail(conn_t *c)
{
    if (c->busy)
        request_done(c, false);
    if (c->ready) { /* take it off the free list */
        for (conn_t **pp = &c->ld->free_list; *pp; pp = &(*pp)->next_free)
            if (*pp == c) {
                *pp = c->next_free;
                break;
            }
        c->ready = false;
    }
    if (c->open && !stream_closing(&c->s))
        stream_close(&c->s, false);
}

static void on_connected(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0) {
        conn_fail(c);
        return;
    }
    if (stream_read_start(&c->s) != 0) {
        conn_fail(c);
        return;
    }
    conn_free_push(c);
    send_due(c->ld);
}

static void conn_on_alloc(stream_t *s, uv_buf_t *buf)
{
    load_t *ld = ((conn_t *)s)->ld;
    *buf = uv_buf_init(ld->rbuf, sizeof ld->rbuf);
}

/* A complete message read: the connection is free again (or closed when
 * the server said so). */
static void response_end(conn_t *c)
{
    load_t *ld = c->ld;
    bool keep = ld->head.keep_alive;
    request_done(c, true);
    if (!keep) {
        conn_fail(c);
        return;
    }
    conn_free_push(c);
}

/* Feeds response bytes; false when the connection was given up. */
static bool conn_feed(conn_t *c, const char *data, size_t len)
{
    load_t *ld = c->ld;
    while (len > 0) {
        if (!c->busy)
            return false; /* bytes nobody asked for */
        if (http_parser_in_head(&c->parser) || c->status == 0) {
            /* A head is parsed whole: keep its start until its end came. */
            if (c->part_len || !http_head_end(data, len, 0)) {
                if (!c->part && !(c->part = malloc(LOAD_HEAD_BYTES)))
                    return false;
                size_t take = len < LOAD_HEAD_BYTES - c->part_len ? len : 0;
                if (!take)
                    return false;
                memcpy(c->part + c->part_len, data, take);
                size_t from = c->part_len;
                c->part_len += take;
                size_t end = http_head_end(c->part, c->part_len, from);
                if (!end)
                    return true;
                int ev = 0;
                long k = http_parser_feed(&c->parser, &ld->head, c->part, end, &ev);
                if (k < 0 || !(ev & HTTP_EV_HEAD))
                    return false;
                size_t rest_from = (size_t)k - from;
                c->part_len = 0;
                c->status = ld->head.status;
                if (ev & HTTP_EV_END) {
                    if (c->status < 200) {
                        http_parser_init_response(&c->parser);
                        http_parser_expect_no_body(&c->parser, ld->head_method);
                        c->status = 0;
                    } else {
                        response_end(c);
                    }
                }
                data += rest_from;
                len -= rest_from;
                continue;
            }
        }
        int ev = 0;
        long k = http_parser_feed(&c->parser, &ld->head, data, len, &ev);
        if (k < 0)
            return false;
        if (ev & HTTP_EV_HEAD)
            c->status = ld->head.status;
        if (ev & HTTP_EV_END) {
            if (c->status < 200) { /* an interim answer: the final one follows */
                http_parser_init_response(&c->parser);
                http_parser_expect_no_body(&c->parser, ld->head_method);
                c->status = 0;
            } else {
                response_end(c);
            }
        }
        if (k == 0 && !(ev & (HTTP_EV_HEAD | HTTP_EV_END)))
            return false; /* no progress: cannot happen on valid input */
        data += k;
        len -= (size_t)k;
    }
    return true;
}

static void conn_on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = (conn_t *)s;
    if (n < 0) {
        if (c->busy && n == UV_EOF && http_parser_body_until_eof(&c->parser) &&
            http_parser_finish(&c->parser) == 0) {
            request_done(c, true);
        }
        conn_fail(c);
        return;
    }
    if (!conn_feed(c, buf->base, (size_t)n)) {
        conn_fail(c);
        return;
    }
    send_due(c->ld);
}

static void conn_on_drain(stream_t *s, int status)
{
    if (status < 0)
        conn_fail((conn_t *)s);
}

static const stream_ops_t conn_ops = {
    .on_alloc = conn_on_alloc,
    .on_read = conn_on_read,
    .on_drain = conn_on_drain,
    .on_close = on_conn_closed,
};

static void conn_connect(conn_t *c)
{
    load_t *ld = c->ld;
    if (stream_init(&ld->loop, &c->s, &conn_ops, &ld->pool) != 0) {
        uv_timer_start(&c->retry, on_retry, LOAD_RECONNECT_MS, 0);
        return;
    }
    c->open = true;
    c->creq.data = c;
    if (stream_connect(&c->s, &c->creq, (const struct sockaddr *)&ld->addr, on_connected) != 0)
        conn_fail(c);
}

/* Sends the next request on c, due at sched. */
static void conn_send(conn_t *c, uint64_t sched)
{
    load_t *ld = c->ld;
    c->ready = false;
    c->busy = true;
    c->sched_us = sched;
    c->status = 0;
    c->part_len = 0;
    ld->inflight++;
    http_parser_init_response(&c->parser);
    http_parser_expect_no_body(&c->parser, ld->head_method);
    uv_buf_t b = uv_buf_init(ld->req, (unsigned)ld->req_len);
    if (stream_write(&c->s, &b, 1) < 0)
        conn_fail(c);
}

/* ------------------------------------------------------------ schedule */

static void arm_timer(load_t *ld, uint64_t at_us)
{
    if (ld->armed_us == at_us)
        return; /* already due then: no system call */
    ld->armed_us = at_us;
    struct itimerspec its = {0};
    uint64_t ns = at_us * 1000;
    its.it_value.tv_sec = (time_t)(ns / 1000000000u);
    its.it_value.tv_nsec = (long)(ns % 1000000000u);
    if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
        its.it_value.tv_nsec = 1;
    timerfd_settime(ld->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Sends every request due now that a free connection can take, then arms
 * the timer for the next one (when a connection is free for it). */
static void send_due(load_t *ld)
{
    if (!ld->running)
        return;
    uint64_t now = time_now_us();
    while (ld->next < ld->total && ld->free_list && due_us(ld, ld->next) <= now) {
        conn_t *c = ld->free_list;
        ld->free_list = c->next_free;
        conn_send(c, due_us(ld, ld->next));
        ld->next++;
    }
    if (ld->next < ld->total && ld->free_list) {
        uint64_t at = due_us(ld, ld->next);
        arm_timer(ld, (at + LOAD_TIMER_GRID_US - 1) / LOAD_TIMER_GRID_US * LOAD_TIMER_GRID_US);
    }
}

static void on_tfd(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    load_t *ld = p->data;
    uint64_t expirations;
    if (read(ld->tfd, &expirations, sizeof expirations) < 0) {
        /* EAGAIN: nothing expired after all */
    }
    ld->armed_us = 0;
    send_due(ld);
}

static void progress(load_t *ld, uint64_t now, bool final)
{
    if (!ld->tty || ld->o->json)
        return;
    load_run_t *r = ld->run;
    double el = (double)(now - ld->t0_us) / 1e6;
    fprintf(stderr,
            "\r\033[K%5.1fs  rate %.0f/s  sent %llu  answered %llu  p50 %.2f ms  p99 %.2f ms  "
            "errors %llu",
            el, r->rate, (unsigned long long)ld->next, (unsigned long long)r->completed,
            (double)load_hist_quantile(&r->latency, 0.5) / 1000.0,
            (double)load_hist_quantile(&r->latency, 0.99) / 1000.0, (unsigned long long)r->errors);
    if (final)
        fputs("\r\033[K", stderr);
    fflush(stderr);
}

/* Every 100 ms: the progress line, and the end of the run. */
static void on_tick(uv_timer_t *t)
{
    load_t *ld = t->data;
    uint64_t now = time_now_us();
    if (now >= ld->next_print_us) {
        progress(ld, now, false);
        ld->next_print_us = now + 1000000;
    }
    bool all_sent = ld->next >= ld->total || now >= ld->end_us;
    if (!all_sent || (ld->inflight && now < ld->give_up_us))
        return;
    /* Over: what is still in flight failed (timed out); what was never sent
     * stays unsent. */
    ld->running = false;
    load_run_t *r = ld->run;
    r->unsent = ld->total > ld->next ? ld->total - ld->next : 0;
    for (size_t i = 0; i < ld->n_conns; i++)
        if (ld->conns[i].busy)
            conn_fail(&ld->conns[i]);
    uint64_t end = ld->last_done_us > ld->end_us ? ld->last_done_us : ld->end_us;
    r->seconds = (double)(end - ld->t0_us) / 1e6;
    progress(ld, now, true);
    uv_timer_stop(&ld->tick);
    uv_stop(&ld->loop);
}

/* One run at rate for duration: r is filled. */
static void run_rate(load_t *ld, double rate, load_run_t *r)
{
    memset(r, 0, sizeof *r);
    r->rate = rate;
    ld->run = r;
    ld->t0_us = time_now_us() + 10000; /* connections settle first */
    ld->end_us = ld->t0_us + ld->o->duration_ms * 1000;
    ld->give_up_us = ld->end_us + LOAD_GRACE_MS * 1000;
    ld->total = (uint64_t)floor(rate * (double)ld->o->duration_ms / 1000.0);
    ld->next = 0;
    ld->last_done_us = ld->t0_us;
    ld->next_print_us = ld->t0_us + 1000000;
    ld->running = true;
    r->scheduled = ld->total;
    arm_timer(ld, ld->t0_us);
    uv_timer_start(&ld->tick, on_tick, 100, 100);
    uv_run(&ld->loop, UV_RUN_DEFAULT);
}

/* ------------------------------------------------------------- set-up */

static int build_request(load_t *ld, const url_http_t *u)
{
    const load_opts_t *o = ld->o;
    char *body = NULL;
    size_t body_len = 0;
    if (o->body_file) {
        FILE *f = fopen(o->body_file, "rb");
        if (!f)
            return usage_error("cannot read --body-file %s", o->body_file);
        body = malloc(LOAD_MAX_BODY);
        body_len = body ? fread(body, 1, LOAD_MAX_BODY, f) : 0;
        bool more = body && fgetc(f) != EOF;
        fclose(f);
        if (!body || more) {
            free(body);
            return usage_error("--body-file %s: at most 16 MiB", o->body_file);
        }
    }
    char host[300];
    url_host_header(u, host, sizeof host);
    size_t cap = 512 + u->path_len + body_len;
    for (size_t i = 0; i < o->n_headers; i++)
        cap += strlen(o->headers[i]) + 2;
    ld->req = malloc(cap);
    if (!ld->req) {
        free(body);
        return usage_error("out of memory");
    }
    int n =
        snprintf(ld->req, cap, "%s %.*s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ficus-load\r\n",
                 o->method, u->path_len ? (int)u->path_len : 1, u->path_len ? u->path : "/", host);
    size_t len = (size_t)n;
    for (size_t i = 0; i < o->n_headers; i++)
        len += (size_t)snprintf(ld->req + len, cap - len, "%s\r\n", o->headers[i]);
    if (body || strcmp(o->method, "POST") == 0 || strcmp(o->method, "PUT") == 0 ||
        strcmp(o->method, "PATCH") == 0)
        len += (size_t)snprintf(ld->req + len, cap - len, "Content-Length: %zu\r\n", body_len);
    len += (size_t)snprintf(ld->req + len, cap - len, "\r\n");
    if (body_len)
        memcpy(ld->req + len, body, body_len);
    ld->req_len = len + body_len;
    ld->head_method = strcmp(o->method, "HEAD") == 0;
    free(body);
    return 0;
}

static int resolve(load_t *ld, const url_http_t *u)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(u->host, u->port[0] ? u->port : "80", &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "ficus load: cannot resolve %s: %s\n", u->host, gai_strerror(rc));
        return 2;
    }
    memcpy(&ld->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static int load_open(load_t *ld)
{
    if (uv_loop_init(&ld->loop) != 0)
        return -1;
    pbuf_pool_init(&ld->pool, 65536, 64);
    ld->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ld->tfd < 0 || uv_poll_init(&ld->loop, &ld->tpoll, ld->tfd) != 0)
        return -1;
    ld->tpoll.data = ld;
    uv_poll_start(&ld->tpoll, UV_READABLE, on_tfd);
    uv_timer_init(&ld->loop, &ld->tick);
    ld->tick.data = ld;
    ld->conns = calloc(ld->n_conns, sizeof *ld->conns);
    if (!ld->conns)
        return -1;
    for (size_t i = 0; i < ld->n_conns; i++) {
        conn_t *c = &ld->conns[i];
        c->ld = ld;
        uv_timer_init(&ld->loop, &c->retry);
        c->retry.data = c;
        conn_connect(c);
    }
    ld->opened = true;
    return 0;
}

static void on_handle_closed(uv_handle_t *h) { (void)h; }

static void load_close(load_t *ld)
{
    ld->stopping = true;
    for (size_t i = 0; ld->conns && i < ld->n_conns; i++) {
        conn_t *c = &ld->conns[i];
        if (c->open && !stream_closing(&c->s))
            stream_close(&c->s, false);
        uv_close((uv_handle_t *)&c->retry, on_handle_closed);
    }
    uv_close((uv_handle_t *)&ld->tpoll, on_handle_closed);
    uv_close((uv_handle_t *)&ld->tick, on_handle_closed);
    uv_run(&ld->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ld->loop);
    if (ld->tfd >= 0)
        close(ld->tfd);
    for (size_t i = 0; ld->conns && i < ld->n_conns; i++)
        free(ld->conns[i].part);
    free(ld->conns);
    free(ld->req);
    pbuf_pool_deinit(&ld->pool);
}

/* --------------------------------------------------------------- output */

static json_t *run_json(const load_run_t *r, uint64_t p99_us)
{
    const load_hist_t *h = &r->latency;
    json_t *st = json_object();
    for (int s = 0; s < LOAD_MAX_STATUS; s++)
        if (r->status[s]) {
            char k[8];
            snprintf(k, sizeof k, "%d", s);
            json_object_set_new(st, k, json_integer((json_int_t)r->status[s]));
        }
    return json_pack(
        "{sf sf sf sI sI sI sI sI so s{sf sf sf sf sf} sb}", "rate", r->rate, "achieved_rate",
        load_run_achieved(r), "seconds", r->seconds, "scheduled", (json_int_t)r->scheduled,
        "answered", (json_int_t)r->completed, "errors", (json_int_t)r->errors, "no_answer",
        (json_int_t)r->failures, "unsent", (json_int_t)r->unsent, "status", st, "latency_ms", "p50",
        load_hist_quantile(h, 0.5) / 1000.0, "p90", load_hist_quantile(h, 0.9) / 1000.0, "p99",
        load_hist_quantile(h, 0.99) / 1000.0, "p99.9", load_hist_quantile(h, 0.999) / 1000.0, "max",
        h->max_us / 1000.0, "ok", load_run_ok(r, p99_us));
}

/* --------------------------------------------------------------- main */

static int parse_percent(const char *s, double *out)
{
    char *end;
    double x = strtod(s, &end);
    if (end == s || (*end && strcmp(end, "%") != 0) || !(x >= 0) || !(x < 100))
        return -1;
    *out = x / 100.0;
    return 0;
}

static int parse_args(int argc, char **argv, load_opts_t *o)
{
    static const struct option longopts[] = {{"rate", required_argument, NULL, 'r'},
                                             {"duration", required_argument, NULL, 'd'},
                                             {"connections", required_argument, NULL, 'c'},
                                             {"method", required_argument, NULL, 'm'},
                                             {"header", required_argument, NULL, 'H'},
                                             {"body-file", required_argument, NULL, 'b'},
                                             {"p99", required_argument, NULL, 'p'},
                                             {"find-knee", no_argument, NULL, 'k'},
                                             {"plan", required_argument, NULL, 'P'},
                                             {"headroom", required_argument, NULL, 'R'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"svg", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *o = (load_opts_t){
        .rate = 500, .duration_ms = 30000, .connections = 64, .method = "GET", .headroom = 0.3};
    opterr = 0;
    optind = 0;
    int ch;
    const char *why;
    while ((ch = getopt_long(argc, argv, ":r:d:c:m:H:b:p:h", longopts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'r':
            o->rate = strtod(optarg, &end);
            if (end == optarg || *end || !(o->rate >= 1) || !(o->rate <= LOAD_MAX_RATE))
                return usage_error("--rate: expected req/s from 1 to 10000000, got '%s'", optarg);
            break;
        case 'd':
            if (units_parse_duration_ms(optarg, &o->duration_ms, &why) != 0 || o->duration_ms < 100)
                return usage_error("--duration: expected a duration of at least 100ms (5s, "
                                   "1m), got '%s'",
                                   optarg);
            break;
        case 'c': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (end == optarg || *end || v < 1 || v > LOAD_MAX_CONNECTIONS)
                return usage_error("--connections: expected 1 to %d, got '%s'",
                                   LOAD_MAX_CONNECTIONS, optarg);
            o->connections = v;
            break;
        }
        case 'm':
            for (const char *p = optarg; *p; p++)
                if (*p < 'A' || *p > 'Z')
                    return usage_error("--method: expected an upper-case method, got '%s'", optarg);
            if (!*optarg || strlen(optarg) > 16)
                return usage_error("--method: expected a method, got '%s'", optarg);
            o->method = optarg;
            break;
        case 'H': {
            const char *colon = strchr(optarg, ':');
            if (!colon || colon == optarg || strpbrk(optarg, "\r\n"))
                return usage_error("--header: expected 'Name: value', got '%s'", optarg);
            if (o->n_headers >= LOAD_MAX_HEADERS)
                return usage_error("at most %d --header", LOAD_MAX_HEADERS);
            o->headers[o->n_headers++] = optarg;
            break;
        }
        case 'b':
            o->body_file = optarg;
            break;
        case 'p': {
            uint64_t ms;
            if (units_parse_duration_ms(optarg, &ms, &why) != 0 || ms == 0)
                return usage_error("--p99: expected a duration (250ms), got '%s'", optarg);
            o->p99_us = ms * 1000;
            break;
        }
        case 'k':
            o->find_knee = true;
            break;
        case 'P':
            o->plan = optarg;
            break;
        case 'R':
            if (parse_percent(optarg, &o->headroom) != 0)
                return usage_error("--headroom: expected a percent below 100 (30%%), got '%s'",
                                   optarg);
            break;
        case 'j':
            o->json = true;
            break;
        case 's':
            o->svg = optarg;
            break;
        case 'h':
            fputs(USAGE, stdout);
            return 1;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("URL is required");
    o->url = argv[optind++];
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (o->find_knee && !o->p99_us)
        return usage_error("--find-knee needs --p99 (the latency the knee is judged by)");
    return 0;
}

/* The knee search: up by LOAD_KNEE_GROWTH until a step misses, then
 * bisect. Returns how many steps ran. */
static size_t find_knee(load_t *ld, load_run_t *steps)
{
    const load_opts_t *o = ld->o;
    size_t n = 0;
    int bisections = 0;
    double good = 0, bad = 0, rate = o->rate;
    while (n < LOAD_KNEE_MAX_STEPS) {
        if (!o->json)
            fprintf(stderr, "step %zu: %.0f req/s for %.1f s\n", n + 1, rate,
                    (double)o->duration_ms / 1000.0);
        run_rate(ld, rate, &steps[n]);
        bool ok = load_run_ok(&steps[n], o->p99_us);
        n++;
        if (ok)
            good = rate;
        else
            bad = rate;
        if (!bad) {
            rate *= LOAD_KNEE_GROWTH;
            if (rate > LOAD_MAX_RATE)
                break;
            continue;
        }
        if (!good) /* the first rate misses: halve until one meets the goal */
            rate = bad / 2;
        else
            rate = (good + bad) / 2;
        if (rate < 1 || (good && (bad - good) / bad < 0.04))
            break;
        if (good && ++bisections > LOAD_KNEE_BISECTIONS)
            break;
    }
    return n;
}

int load_main(int argc, char **argv)
{
    load_opts_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    url_http_t u;
    char err[256];
    if (url_parse_http(o.url, &u, err, sizeof err) != 0)
        return usage_error("%s: %s", o.url, err);
    load_event_t *events = NULL;
    size_t n_events = 0;
    if (o.plan && load_plan_read(o.plan, &events, &n_events, err, sizeof err) != 0) {
        fprintf(stderr, "ficus load: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    load_t *ld = calloc(1, sizeof *ld);
    load_run_t *steps = calloc(o.find_knee ? LOAD_KNEE_MAX_STEPS : 1, sizeof *steps);
    if (!ld || !steps) {
        fprintf(stderr, "ficus load: out of memory\n");
        free(ld);
        free(steps);
        free(events);
        return 2;
    }
    ld->o = &o;
    ld->tfd = -1;
    ld->n_conns = o.connections;
    ld->tty = isatty(STDERR_FILENO);
    rc = build_request(ld, &u);
    if (!rc)
        rc = resolve(ld, &u);
    if (!rc && load_open(ld) != 0) {
        fprintf(stderr, "ficus load: cannot set up the event loop\n");
        rc = 2;
    }
    size_t n = 0;
    if (!rc) {
        if (o.find_knee) {
            n = find_knee(ld, steps);
        } else {
            run_rate(ld, o.rate, &steps[0]);
            n = 1;
        }
        uint64_t answered = 0;
        for (size_t i = 0; i < n; i++)
            answered += steps[i].completed;
        if (!answered) {
            fprintf(stderr, "ficus load: %s: no request was answered (is it reachable?)\n", o.url);
            rc = 2;
        }
    }
    int knee = rc ? -1 : o.find_knee ? load_knee(steps, n, o.p99_us) : -1;
    const load_run_t *main_run = o.find_knee && knee >= 0 ? &steps[knee] : &steps[0];
    double capacity = o.find_knee
                          ? (knee >= 0 ? steps[knee].rate : 0)
                          : (load_run_ok(main_run, o.p99_us) ? load_run_achieved(main_run) : 0);
    if (!rc && o.json) {
        json_t *out = json_object(), *arr = json_array();
        for (size_t i = 0; o.find_knee && i < n; i++)
            json_array_append_new(arr, run_json(&steps[i], o.p99_us));
        json_object_set_new(out, "url", json_string(o.url));
        json_object_set_new(out, "p99_goal_ms",
                            o.p99_us ? json_real(o.p99_us / 1000.0) : json_null());
        if (o.find_knee) {
            json_object_set_new(out, "steps", arr);
            json_object_set_new(out, "knee_rate",
                                knee >= 0 ? json_real(steps[knee].rate) : json_null());
        } else {
            json_decref(arr);
            json_object_set_new(out, "run", run_json(&steps[0], o.p99_us));
        }
        if (events) {
            json_t *plan = json_array();
            for (size_t i = 0; i < n_events; i++)
                json_array_append_new(plan, json_pack("{ss sf sI}", "event", events[i].name, "peak",
                                                      events[i].peak, "instances",
                                                      (json_int_t)load_plan_instances(
                                                          events[i].peak, capacity, o.headroom)));
            json_object_set_new(out, "plan", plan);
            json_object_set_new(out, "capacity", json_real(capacity));
            json_object_set_new(out, "headroom", json_real(o.headroom));
        }
        char *s = json_dumps(out, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
        json_decref(out);
    } else if (!rc) {
        if (o.find_knee) {
            printf("%-6s %12s %12s %10s %10s %9s  %s\n", "step", "rate", "achieved", "p50 ms",
                   "p99 ms", "errors", "");
            for (size_t i = 0; i < n; i++)
                printf("%-6zu %12.0f %12.1f %10.2f %10.2f %8.3f%%  %s\n", i + 1, steps[i].rate,
                       load_run_achieved(&steps[i]),
                       load_hist_quantile(&steps[i].latency, 0.5) / 1000.0,
                       load_hist_quantile(&steps[i].latency, 0.99) / 1000.0,
                       100 * load_run_error_ratio(&steps[i]),
                       load_run_ok(&steps[i], o.p99_us) ? "ok" : "missed");
            if (knee >= 0)
                printf("knee: %.0f req/s (p99 under %.1f ms, under 0.1%% errors)\n\n",
                       steps[knee].rate, o.p99_us / 1000.0);
            else
                printf("knee: none (no rate met p99 under %.1f ms with under 0.1%% errors)\n\n",
                       o.p99_us / 1000.0);
        }
        load_run_print(stdout, main_run);
        if (o.p99_us && !o.find_knee)
            printf("goal      p99 under %.1f ms: %s\n", o.p99_us / 1000.0,
                   load_run_ok(main_run, o.p99_us) ? "met" : "MISSED");
        if (events) {
            printf("\n");
            if (capacity > 0)
                load_plan_print(stdout, events, n_events, capacity, o.headroom);
            else
                printf("plan: no capacity to plan with (the run missed its goal)\n");
        }
    }
    if (!rc && o.svg && load_svg_write(o.svg, steps, n, knee, o.p99_us) != 0) {
        fprintf(stderr, "ficus load: cannot write %s\n", o.svg);
        rc = 2;
    }
    if (!rc && o.p99_us && (o.find_knee ? knee < 0 : !load_run_ok(main_run, o.p99_us)))
        rc = 1;
    if (ld->opened)
        load_close(ld);
    free(ld);
    free(steps);
    free(events);
    return rc;
}
