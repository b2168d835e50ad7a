/* `ficus mock`: a fast HTTP/1.1 mock backend on libuv and llhttp.
 * Responses are formatted once at start; each connection queues its parsed
 * requests in order and answers every due one in a single write. Stats are
 * counted per worker thread with relaxed atomics and merged only when asked. */
#include "tools/mock.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/units.h"
#include "core/addr.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/rand.h"
#include "llhttp.h"

#define METHOD_SLOTS 64  /* llhttp numbers its methods below this */
#define PATH_SLOTS 16384 /* open addressing: stays under 2/3 full at MOCK_MAX_PATHS */
#define IOV_BATCH 256    /* buffers per writev; a response takes at most two */
#define QUEUE_INLINE 16  /* answers queued without touching the heap */
/* Reading pauses at MOCK_MAX_PIPELINE, but the read buffer already taken in is
 * parsed whole: at most one buffer of minimal (18-byte) requests more. */
#define QUEUE_MAX (MOCK_MAX_PIPELINE + IO_BUF_BYTES / 16)

_Static_assert(PATH_SLOTS > MOCK_MAX_PATHS + MOCK_MAX_PATHS / 2, "path table too small");
_Static_assert((PATH_SLOTS & (PATH_SLOTS - 1)) == 0, "PATH_SLOTS must be a power of two");

static const char STATS_PATH[] = "/__mock/stats";
static const char RESET_PATH[] = "/__mock/reset";
static const char FAIL_BODY[] = "injected failure\n";
static const char BAD_BODY[] = "bad request\n";

/* ---- stats ------------------------------------------------------------ */

typedef struct mock_path {
    uint32_t hash;
    uint32_t len;
    char s[]; /* NUL-terminated */
} mock_path_t;

typedef struct mock_slot {
    _Atomic(mock_path_t *) key;
    _Atomic uint64_t count;
} mock_slot_t;

/* One worker's counters. Only the owning thread inserts keys; any thread may
 * read them (stats) or zero the counts (reset). A published key never changes
 * until the table is freed, so readers need no lock. */
typedef struct mock_stats {
    _Atomic uint64_t total;
    _Atomic uint64_t other; /* paths past MOCK_MAX_PATHS, too long or not printable */
    _Atomic uint64_t by_method[METHOD_SLOTS];
    uint32_t n_paths; /* owner thread only */
    mock_slot_t slots[PATH_SLOTS];
} mock_stats_t;

/* ---- shared state: options, formatted responses, every worker's stats --- */

enum { HDR_DEFAULT, HDR_KEEPALIVE, HDR_CLOSE, HDR_N }; /* the Connection header sent */

typedef struct mock_resp {
    char *head;
    size_t head_len;
    const char *body;
    size_t body_len;
} mock_resp_t;

typedef struct mock_shared {
    int status, fail_status;
    uint64_t latency_ms;
    double fail_rate, reset_rate;
    char *name;
    char *body;
    size_t body_len;
    mock_resp_t ok[HDR_N];
    mock_resp_t fail[HDR_N];
    mock_resp_t bad; /* 400, then close */
    uint32_t n_workers;
    mock_stats_t **stats;
} mock_shared_t;

/* ---- connections -------------------------------------------------------- */

typedef enum { CONN_READING, CONN_LINGERING, CONN_CLOSING } conn_state_t;

typedef enum { KIND_ANSWER, KIND_STATS, KIND_RESET, KIND_BAD } entry_kind_t;

typedef struct mock_entry {
    uint64_t due_ms; /* 0 = at once */
    uint8_t kind;
    uint8_t hdr;
    bool head;
} mock_entry_t;

typedef struct mock_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* latency while reading, linger while lingering */
    uv_shutdown_t shutdown;
    uv_write_t write_req; /* at most one write in flight */
    char *write_copy;     /* its bytes when they had to be copied */
    llhttp_t parser;
    mock_server_t *server;
    struct mock_conn *prev, *next;
    conn_state_t state;
    uint8_t handles_open;
    bool reading;
    bool write_pending;
    bool close_after; /* the last answer said Connection: close */
    bool peer_closed;
    bool parse_done; /* later bytes are ignored */
    bool overflow;
    /* request being parsed */
    uint8_t hdr;
    bool head;
    bool path_done;
    bool path_long;
    uint16_t path_len;
    char path[MOCK_MAX_PATH_BYTES];
    /* answers waiting, in request order */
    mock_entry_t *q;
    uint32_t q_head, q_len, q_cap;
    mock_entry_t q_inline[QUEUE_INLINE];
} mock_conn_t;

struct mock_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    mock_shared_t *shared;
    bool owns_shared;
    bool stopping;
    mock_stats_t *stats;
    mock_conn_t *conns;
    uint32_t handles_open; /* listener + connections */
    uint64_t rng;
    uint64_t batch_due_ms; /* due time of requests parsed from the current read */
    uv_buf_t iov[IOV_BATCH];
    char rbuf[IO_BUF_BYTES];
};

static llhttp_settings_t parser_settings;
static pthread_once_t parser_settings_once = PTHREAD_ONCE_INIT;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t clock_ms(void) { return uv_hrtime() / 1000000u; }

static const char *reason_phrase(int status)
{
    static const struct {
        int status;
        const char *text;
    } reasons[] = {{200, "OK"},
                   {201, "Created"},
                   {202, "Accepted"},
                   {204, "No Content"},
                   {301, "Moved Permanently"},
                   {302, "Found"},
                   {304, "Not Modified"},
                   {400, "Bad Request"},
                   {401, "Unauthorized"},
                   {403, "Forbidden"},
                   {404, "Not Found"},
                   {408, "Request Timeout"},
                   {429, "Too Many Requests"},
                   {500, "Internal Server Error"},
                   {502, "Bad Gateway"},
                   {503, "Service Unavailable"},
                   {504, "Gateway Timeout"}};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status)
            return reasons[i].text;
    return "Status"; /* clients ignore the phrase; any token will do */
}

/* 204 and 304 cannot carry a body, so they get neither body nor length. */
static bool status_has_body(int status) { return status != 204 && status != 304; }

/* A response head, heap-allocated; NULL on allocation failure. */
static char *format_head(int status, const char *ctype, const char *name, size_t body_len, int hdr,
                         size_t *len_out)
{
    static const char *conn_lines[HDR_N] = {"", "Connection: keep-alive\r\n",
                                            "Connection: close\r\n"};
    char length_line[64] = "";
    if (status_has_body(status))
        snprintf(length_line, sizeof length_line, "Content-Length: %zu\r\n", body_len);
    char *h = NULL;
    int n = asprintf(&h,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sX-Mock-Name: %s\r\n%s"
                     "\r\n",
                     status, reason_phrase(status), ctype, length_line, name, conn_lines[hdr]);
    if (n < 0)
        return NULL;
    *len_out = (size_t)n;
    return h;
}

static int resp_init(mock_resp_t *r, int status, const char *name, const char *ctype,
                     const char *body, size_t body_len, int hdr)
{
    if (!status_has_body(status))
        body_len = 0;
    r->head = format_head(status, ctype, name, body_len, hdr, &r->head_len);
    r->body = body;
    r->body_len = body_len;
    return r->head ? 0 : FE_NOMEM;
}

/* ---- stats -------------------------------------------------------------- */

static bool path_printable(const char *p, size_t n)
{
    /* jansson needs UTF-8 keys; a well-formed request target is ASCII anyway. */
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)p[i] < 0x21 || (uint8_t)p[i] > 0x7e)
            return false;
    return n > 0;
}

static void stats_count(mock_stats_t *st, uint8_t method, const char *path, size_t len, bool bad)
{
    atomic_fetch_add_explicit(&st->total, 1, memory_order_relaxed);
    if (method < METHOD_SLOTS)
        atomic_fetch_add_explicit(&st->by_method[method], 1, memory_order_relaxed);
    if (bad || !path_printable(path, len)) {
        atomic_fetch_add_explicit(&st->other, 1, memory_order_relaxed);
        return;
    }
    uint32_t h = (uint32_t)hash_bytes(path, len);
    for (uint32_t i = h & (PATH_SLOTS - 1);; i = (i + 1) & (PATH_SLOTS - 1)) {
        mock_slot_t *slot = &st->slots[i];
        mock_path_t *k = atomic_load_explicit(&slot->key, memory_order_relaxed);
        if (k && k->hash == h && k->len == len && memcmp(k->s, path, len) == 0) {
            atomic_fetch_add_explicit(&slot->count, 1, memory_order_relaxed);
            return;
        }
        if (k)
            continue;
        if (st->n_paths >= MOCK_MAX_PATHS || !(k = malloc(sizeof *k + len + 1))) {
            atomic_fetch_add_explicit(&st->other, 1, memory_order_relaxed);
            return;
        }
        k->hash = h;
        k->len = (uint32_t)len;
        memcpy(k->s, path, len);
        k->s[len] = '\0';
        atomic_store_explicit(&slot->count, 1, memory_order_relaxed);
        /* Release: a reader that sees the key sees its bytes. */
        atomic_store_explicit(&slot->key, k, memory_order_release);
        st->n_paths++;
        return;
    }
}

/* Keys stay (they are immutable while other threads may read them); only the
 * counts go to zero, and zero counts are not reported. */
static void stats_reset(mock_shared_t *sh)
{
    for (uint32_t w = 0; w < sh->n_workers; w++) {
        mock_stats_t *st = sh->stats[w];
        atomic_store_explicit(&st->total, 0, memory_order_relaxed);
        atomic_store_explicit(&st->other, 0, memory_order_relaxed);
        for (int m = 0; m < METHOD_SLOTS; m++)
            atomic_store_explicit(&st->by_method[m], 0, memory_order_relaxed);
        for (uint32_t i = 0; i < PATH_SLOTS; i++)
            atomic_store_explicit(&st->slots[i].count, 0, memory_order_relaxed);
    }
}

static int json_add_count(json_t *obj, const char *key, uint64_t n)
{
    json_t *v = json_object_get(obj, key);
    if (v)
        return json_integer_set(v, json_integer_value(v) + (json_int_t)n);
    return json_object_set_new(obj, key, json_integer((json_int_t)n));
}

/* {"total":N,"by_path":{...},"by_method":{...}} over all workers, malloc'd. */
static char *stats_json(mock_shared_t *sh)
{
    json_t *root = json_object();
    json_t *by_path = json_object();
    json_t *by_method = json_object();
    uint64_t total = 0, other = 0;
    char *out = NULL;
    if (!root || !by_path || !by_method)
        goto done;
    for (uint32_t w = 0; w < sh->n_workers; w++) {
        mock_stats_t *st = sh->stats[w];
        total += atomic_load_explicit(&st->total, memory_order_relaxed);
        other += atomic_load_explicit(&st->other, memory_order_relaxed);
        for (uint32_t i = 0; i < PATH_SLOTS; i++) {
            mock_path_t *k = atomic_load_explicit(&st->slots[i].key, memory_order_acquire);
            if (!k)
                continue;
            uint64_t n = atomic_load_explicit(&st->slots[i].count, memory_order_relaxed);
            if (n == 0)
                continue;
            /* Workers each keep MOCK_MAX_PATHS; the merged answer keeps the same bound. */
            if (!json_object_get(by_path, k->s) && json_object_size(by_path) >= MOCK_MAX_PATHS)
                other += n;
            else
                json_add_count(by_path, k->s, n);
        }
    }
    if (other)
        json_add_count(by_path, "_other", other);
    for (int m = 0; m < METHOD_SLOTS; m++) {
        uint64_t n = 0;
        for (uint32_t w = 0; w < sh->n_workers; w++)
            n += atomic_load_explicit(&sh->stats[w]->by_method[m], memory_order_relaxed);
        if (n)
            json_add_count(by_method, llhttp_method_name((llhttp_method_t)m), n);
    }
    json_object_set_new(root, "total", json_integer((json_int_t)total));
    json_object_set(root, "by_path", by_path);
    json_object_set(root, "by_method", by_method);
    out = json_dumps(root, JSON_COMPACT);
done:
    json_decref(by_method);
    json_decref(by_path);
    json_decref(root);
    return out;
}

/* ---- shared ------------------------------------------------------------- */

static void shared_free(mock_shared_t *sh)
{
    if (!sh)
        return;
    for (int i = 0; i < HDR_N; i++) {
        free(sh->ok[i].head);
        free(sh->fail[i].head);
    }
    free(sh->bad.head);
    for (uint32_t w = 0; sh->stats && w < sh->n_workers; w++) {
        mock_stats_t *st = sh->stats[w];
        if (!st)
            continue;
        for (uint32_t i = 0; i < PATH_SLOTS; i++)
            free(atomic_load_explicit(&st->slots[i].key, memory_order_relaxed));
        free(st);
    }
    free(sh->stats);
    free(sh->name);
    free(sh->body);
    free(sh);
}

static mock_shared_t *shared_new(const mock_options_t *o, uint32_t n_workers)
{
    mock_shared_t *sh = calloc(1, sizeof *sh);
    if (!sh)
        return NULL;
    sh->status = o->status ? o->status : 200;
    sh->fail_status = o->fail_status ? o->fail_status : 503;
    sh->latency_ms = o->latency_ms;
    sh->fail_rate = o->fail_rate;
    sh->reset_rate = o->reset_rate;
    sh->name = strdup(o->name ? o->name : "mock");
    const char *body = o->body ? o->body : "ok\n";
    sh->body_len = o->body ? o->body_len : 3;
    sh->body = malloc(sh->body_len + 1);
    sh->n_workers = n_workers;
    sh->stats = calloc(n_workers, sizeof *sh->stats);
    if (!sh->name || !sh->body || !sh->stats)
        goto fail;
    memcpy(sh->body, body, sh->body_len);
    for (uint32_t w = 0; w < n_workers; w++)
        if (!(sh->stats[w] = calloc(1, sizeof *sh->stats[w])))
            goto fail;
    for (int i = 0; i < HDR_N; i++) {
        if (resp_init(&sh->ok[i], sh->status, sh->name,
                      o->content_type ? o->content_type : "text/plain", sh->body, sh->body_len,
                      i) != 0 ||
            resp_init(&sh->fail[i], sh->fail_status, sh->name, "text/plain", FAIL_BODY,
                      sizeof FAIL_BODY - 1, i) != 0)
            goto fail;
    }
    if (resp_init(&sh->bad, 400, sh->name, "text/plain", BAD_BODY, sizeof BAD_BODY - 1,
                  HDR_CLOSE) != 0)
        goto fail;
    return sh;
fail:
    shared_free(sh);
    return NULL;
}

/* ---- connection --------------------------------------------------------- */

static void conn_flush(mock_conn_t *c);
static void conn_close(mock_conn_t *c);
static void conn_update_reading(mock_conn_t *c);
static bool conn_queue_grow(mock_conn_t *c);

static void server_handle_closed(mock_server_t *s);

static void conn_on_close(uv_handle_t *h)
{
    mock_conn_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    mock_server_t *s = c->server;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->q != c->q_inline)
        free(c->q);
    free(c);
    server_handle_closed(s);
}

static void conn_on_timer(uv_timer_t *t);

/* The one place the state changes; it also arms or stops the timer. */
static void conn_set_state(mock_conn_t *c, conn_state_t st)
{
    c->state = st;
    switch (st) {
    case CONN_READING:
        break;
    case CONN_LINGERING:
        uv_timer_start(&c->timer, conn_on_timer, MOCK_LINGER_MS, 0);
        break;
    case CONN_CLOSING:
        uv_timer_stop(&c->timer);
        break;
    }
}

static void conn_close(mock_conn_t *c)
{
    if (c->state == CONN_CLOSING)
        return;
    conn_set_state(c, CONN_CLOSING);
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

/* Ends the connection with a RST instead of a FIN, as a crashing backend would. */
static void conn_reset(mock_conn_t *c)
{
    conn_set_state(c, CONN_CLOSING);
    if (uv_tcp_close_reset(&c->tcp, conn_on_close) != 0)
        uv_close((uv_handle_t *)&c->tcp, conn_on_close);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    mock_conn_t *c = req->data;
    if (status == UV_ECANCELED)
        return; /* closing already */
    if (status < 0)
        conn_close(c);
}

/* After the last answer: a peer that closed gets a plain close; otherwise send
 * our FIN and read until the client's, so that a close with unread bytes does
 * not reset away the answer it has not read yet. */
static void conn_finish(mock_conn_t *c)
{
    if (c->peer_closed) {
        conn_close(c);
        return;
    }
    conn_set_state(c, CONN_LINGERING);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_update_reading(c);
}

static void conn_on_timer(uv_timer_t *t)
{
    mock_conn_t *c = t->data;
    if (c->state == CONN_LINGERING)
        conn_close(c);
    else if (c->state == CONN_READING)
        conn_flush(c);
}

static void conn_on_write(uv_write_t *req, int status)
{
    mock_conn_t *c = req->data;
    free(c->write_copy);
    c->write_copy = NULL;
    if (status == UV_ECANCELED)
        return; /* closing already */
    c->write_pending = false;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

/* Writes bufs: 0 when all went out at once, FE_AGAIN when the rest was queued
 * (the caller stops; conn_on_write resumes), FE_IO when the connection failed
 * and is closing. The rest is queued by reference, so the bytes must outlive
 * the connection (the formatted responses do), unless `transient`: then they
 * are copied and the caller may free them at once. */
static int conn_send(mock_conn_t *c, uv_buf_t *bufs, unsigned n, bool transient)
{
    int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (r < 0 && r != UV_EAGAIN) {
        conn_close(c);
        return FE_IO;
    }
    size_t done = r < 0 ? 0 : (size_t)r;
    unsigned i = 0;
    while (i < n && done >= bufs[i].len)
        done -= bufs[i++].len;
    if (i == n)
        return 0;
    bufs[i].base += done;
    bufs[i].len -= done;
    uv_buf_t copy;
    if (transient) {
        size_t rest = 0;
        for (unsigned k = i; k < n; k++)
            rest += bufs[k].len;
        if (!(c->write_copy = malloc(rest))) {
            conn_close(c);
            return FE_IO;
        }
        copy = uv_buf_init(c->write_copy, (unsigned)rest);
        for (size_t off = 0; i < n; off += bufs[i++].len)
            memcpy(c->write_copy + off, bufs[i].base, bufs[i].len);
        bufs = &copy;
        i = 0;
        n = 1;
    }
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs + i, n - i, conn_on_write) != 0) {
        free(c->write_copy);
        c->write_copy = NULL;
        conn_close(c);
        return FE_IO;
    }
    /* One write in flight at most: reading waits, so nothing piles up. */
    c->write_pending = true;
    conn_update_reading(c);
    return FE_AGAIN;
}

static int conn_send_stats(mock_conn_t *c, const mock_entry_t *e)
{
    mock_shared_t *sh = c->server->shared;
    char *body = e->kind == KIND_STATS ? stats_json(sh) : strdup("{\"reset\":true}");
    if (!body) {
        conn_close(c);
        return FE_NOMEM;
    }
    size_t body_len = strlen(body), head_len;
    char *head = format_head(200, "application/json", sh->name, body_len, e->hdr, &head_len);
    if (!head) {
        free(body);
        conn_close(c);
        return FE_NOMEM;
    }
    uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned)head_len),
                        uv_buf_init(body, e->head ? 0 : (unsigned)body_len)};
    int rc = conn_send(c, bufs, 2, true);
    free(head);
    free(body);
    return rc;
}

/* Answers every due request at the head of the queue in one write, then arms
 * the latency timer for the next one or ends the connection. */
static void conn_flush(mock_conn_t *c)
{
    mock_server_t *s = c->server;
    mock_shared_t *sh = s->shared;
    if (c->state != CONN_READING || c->write_pending)
        return;
    uint64_t now = 0;
    unsigned n = 0;
    while (c->q_len) {
        mock_entry_t e = c->q[c->q_head];
        if (e.due_ms) {
            if (!now)
                now = clock_ms();
            if (e.due_ms > now)
                break;
        }
        if (e.kind == KIND_STATS || e.kind == KIND_RESET) {
            /* The answer is built now, so whatever precedes it goes out first. */
            if (n) {
                int rc = conn_send(c, s->iov, n, false);
                n = 0;
                if (rc != 0)
                    return;
            }
        }
        c->q_head = (c->q_head + 1) % c->q_cap;
        c->q_len--;
        if (e.hdr == HDR_CLOSE) {
            c->close_after = true;
            c->q_len = 0; /* parsing stopped at it: nothing follows */
        }
        const mock_resp_t *r = NULL;
        switch ((entry_kind_t)e.kind) {
        case KIND_ANSWER:
            if (sh->reset_rate > 0 && rand_unit(&s->rng) < sh->reset_rate) {
                if (n)
                    (void)uv_try_write((uv_stream_t *)&c->tcp, s->iov, n);
                conn_reset(c);
                return;
            }
            r = sh->fail_rate > 0 && rand_unit(&s->rng) < sh->fail_rate ? &sh->fail[e.hdr]
                                                                        : &sh->ok[e.hdr];
            break;
        case KIND_BAD:
            r = &sh->bad;
            break;
        case KIND_STATS:
        case KIND_RESET:
            if (conn_send_stats(c, &e) != 0)
                return;
            continue;
        }
        s->iov[n++] = uv_buf_init(r->head, (unsigned)r->head_len);
        if (!e.head && r->body_len)
            s->iov[n++] = uv_buf_init((char *)r->body, (unsigned)r->body_len);
        if (n + 2 > IOV_BATCH) {
            int rc = conn_send(c, s->iov, n, false);
            n = 0;
            if (rc != 0)
                return;
        }
    }
    if (n && conn_send(c, s->iov, n, false) != 0)
        return;
    if (c->q_len) {
        mock_entry_t *e = &c->q[c->q_head];
        uv_timer_start(&c->timer, conn_on_timer, e->due_ms - now, 0);
    } else if (c->close_after || c->peer_closed) {
        conn_finish(c);
        return;
    }
    conn_update_reading(c);
}

static void conn_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    mock_conn_t *c = h->data;
    /* Parsing copies what it keeps, so one buffer per thread serves every connection. */
    *buf = uv_buf_init(c->server->rbuf, sizeof c->server->rbuf);
}

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    mock_conn_t *c = st->data;
    mock_server_t *s = c->server;
    if (nread == 0)
        return;
    if (c->state == CONN_LINGERING) {
        if (nread < 0)
            conn_close(c);
        return; /* draining until the client's FIN */
    }
    if (c->state != CONN_READING)
        return;
    if (nread < 0) {
        if (nread != UV_EOF) {
            conn_close(c);
            return;
        }
        /* A half-close still gets its answers, then the close. */
        c->peer_closed = true;
        c->parse_done = true;
        conn_flush(c);
        if (c->state == CONN_READING)
            conn_update_reading(c);
        return;
    }
    if (c->parse_done)
        return;
    s->batch_due_ms =
        s->shared->latency_ms ? (uv_hrtime() + 999999u) / 1000000u + s->shared->latency_ms : 0;
    llhttp_errno_t err = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (c->overflow) {
        conn_close(c);
        return;
    }
    if (err == HPE_PAUSED_UPGRADE) {
        /* Upgrade or CONNECT: answered like any request, and then the end. */
        if (c->q_len)
            c->q[(c->q_head + c->q_len - 1) % c->q_cap].hdr = HDR_CLOSE;
        c->parse_done = true;
    } else if (err != HPE_OK && err != HPE_PAUSED) {
        mock_entry_t e = {.due_ms = 0, .kind = KIND_BAD, .hdr = HDR_CLOSE, .head = false};
        c->parse_done = true;
        if (c->q_len == c->q_cap && !conn_queue_grow(c)) {
            conn_close(c);
            return;
        }
        c->q[(c->q_head + c->q_len) % c->q_cap] = e;
        c->q_len++;
    }
    conn_flush(c);
}

static void conn_update_reading(mock_conn_t *c)
{
    bool want = c->state == CONN_LINGERING || (c->state == CONN_READING && !c->parse_done &&
                                               !c->write_pending && c->q_len < MOCK_MAX_PIPELINE);
    if (want == c->reading)
        return;
    if (want) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) != 0) {
            conn_close(c);
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = want;
}

/* Doubles the queue up to QUEUE_MAX; false when that bound is reached. */
static bool conn_queue_grow(mock_conn_t *c)
{
    if (c->q_cap >= QUEUE_MAX)
        return false;
    uint32_t cap = c->q_cap * 2 > QUEUE_MAX ? QUEUE_MAX : c->q_cap * 2;
    mock_entry_t *q = malloc(cap * sizeof *q);
    if (!q)
        return false;
    for (uint32_t i = 0; i < c->q_len; i++)
        q[i] = c->q[(c->q_head + i) % c->q_cap];
    if (c->q != c->q_inline)
        free(c->q);
    c->q = q;
    c->q_cap = cap;
    c->q_head = 0;
    return true;
}

static int parser_on_message_begin(llhttp_t *p)
{
    mock_conn_t *c = p->data;
    c->path_len = 0;
    c->path_done = false;
    c->path_long = false;
    return 0;
}

static int parser_on_url(llhttp_t *p, const char *at, size_t len)
{
    mock_conn_t *c = p->data;
    if (c->path_done)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (at[i] == '?' || at[i] == '#') {
            len = i;
            c->path_done = true;
            break;
        }
    }
    if (c->path_len + len > sizeof c->path) {
        c->path_long = true;
        c->path_done = true;
        return 0;
    }
    memcpy(c->path + c->path_len, at, len);
    c->path_len = (uint16_t)(c->path_len + len);
    return 0;
}

static int parser_on_headers_complete(llhttp_t *p)
{
    mock_conn_t *c = p->data;
    c->head = llhttp_get_method(p) == HTTP_HEAD;
    if (!llhttp_should_keep_alive(p))
        c->hdr = HDR_CLOSE;
    else
        c->hdr = llhttp_get_http_minor(p) == 0 ? HDR_KEEPALIVE : HDR_DEFAULT;
    return 0;
}

static bool path_is(const char *p, size_t n, const char *want, size_t want_len)
{
    return n == want_len && memcmp(p, want, n) == 0;
}

static int parser_on_message_complete(llhttp_t *p)
{
    mock_conn_t *c = p->data;
    mock_server_t *s = c->server;
    uint8_t method = llhttp_get_method(p);
    const char *path = c->path;
    size_t len = c->path_len;
    /* Absolute form (as sent to proxies): count the path, not the authority. */
    if (len > 7 &&
        (strncasecmp(path, "http://", 7) == 0 || strncasecmp(path, "https://", 8) == 0)) {
        const char *auth = (const char *)memchr(path, ':', len) + 3;
        const char *slash = memchr(auth, '/', len - (size_t)(auth - path));
        path = slash ? slash : "/";
        len = slash ? len - (size_t)(slash - c->path) : 1;
    }
    entry_kind_t kind = KIND_ANSWER;
    if (!c->path_long && method == HTTP_GET &&
        path_is(path, len, STATS_PATH, sizeof STATS_PATH - 1))
        kind = KIND_STATS;
    else if (!c->path_long && method == HTTP_POST &&
             path_is(path, len, RESET_PATH, sizeof RESET_PATH - 1)) {
        kind = KIND_RESET;
        stats_reset(s->shared);
    } else {
        stats_count(s->stats, method, path, len, c->path_long);
    }
    if (c->q_len == c->q_cap && !conn_queue_grow(c)) {
        c->overflow = true;
        return HPE_PAUSED;
    }
    mock_entry_t e = {.due_ms = kind == KIND_ANSWER ? s->batch_due_ms : 0,
                      .kind = (uint8_t)kind,
                      .hdr = c->hdr,
                      .head = c->head};
    c->q[(c->q_head + c->q_len) % c->q_cap] = e;
    c->q_len++;
    if (c->hdr == HDR_CLOSE) {
        c->parse_done = true;
        return HPE_PAUSED; /* whatever follows a close is not ours to answer */
    }
    return 0;
}

static void parser_settings_build(void)
{
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = parser_on_message_begin;
    parser_settings.on_url = parser_on_url;
    parser_settings.on_headers_complete = parser_on_headers_complete;
    parser_settings.on_message_complete = parser_on_message_complete;
}

/* ---- server ------------------------------------------------------------- */

static void server_free(mock_server_t *s)
{
    if (s->owns_shared)
        shared_free(s->shared);
    free(s);
}

static void server_handle_closed(mock_server_t *s)
{
    if (--s->handles_open == 0 && s->stopping)
        server_free(s);
}

static void server_on_listener_close(uv_handle_t *h) { server_handle_closed(h->data); }

static void server_on_connection(uv_stream_t *l, int status)
{
    mock_server_t *s = l->data;
    if (status < 0) {
        log_limited(LOG_WARN, "mock: accept failed: %s", uv_strerror(status));
        return;
    }
    mock_conn_t *c = malloc(sizeof *c);
    if (!c) {
        log_limited(LOG_WARN, "mock: out of memory for a connection");
        return;
    }
    memset(c, 0, offsetof(mock_conn_t, path));
    c->server = s;
    c->q = c->q_inline;
    c->q_cap = QUEUE_INLINE;
    c->q_head = c->q_len = 0;
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    c->state = CONN_READING;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->handles_open++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    /* Answers are whole batches: waiting for more data would only add latency. */
    uv_tcp_nodelay(&c->tcp, 1);
    conn_update_reading(c);
}

/* A listening socket; fd >= 0, or FE_INVAL / FE_IO with err set. */
static int listen_socket(const char *address, bool reuseport, char *err, size_t errlen)
{
    addr_hostport_t hp;
    const char *why;
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (!address || addr_split(address, &hp, &why) != 0) {
        snprintf(err, errlen, "invalid listen address '%s': %s", address ? address : "",
                 address ? why : "missing");
        return FE_INVAL;
    }
    if (addr_numeric(&hp, &ss, &sslen) != 0) {
        struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM};
        struct addrinfo *ai = NULL;
        int g = getaddrinfo(hp.host, NULL, &hints, &ai);
        if (g != 0 || !ai) {
            snprintf(err, errlen, "cannot resolve '%s': %s", hp.host, gai_strerror(g));
            return FE_INVAL;
        }
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        sslen = ai->ai_addrlen;
        freeaddrinfo(ai);
        if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(hp.port);
        else
            ((struct sockaddr_in *)&ss)->sin_port = htons(hp.port);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", address, strerror(errno));
        if (fd >= 0)
            close(fd);
        return FE_IO;
    }
    return fd;
}

/* A server on loop serving fd (taken over, even on failure) with worker slot
 * `worker` of sh. NULL with err set on failure. */
static mock_server_t *server_new(uv_loop_t *loop, mock_shared_t *sh, uint32_t worker, int fd,
                                 char *err, size_t errlen)
{
    pthread_once(&parser_settings_once, parser_settings_build);
    mock_server_t *s = malloc(sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    memset(s, 0, offsetof(mock_server_t, iov));
    s->loop = loop;
    s->shared = sh;
    s->stats = sh->stats[worker];
    s->rng = (uv_hrtime() ^ ((uint64_t)(uintptr_t)s << 16) ^ worker) | 1;
    int r = uv_tcp_init(loop, &s->listener);
    if (r != 0) {
        snprintf(err, errlen, "uv_tcp_init: %s", uv_strerror(r));
        close(fd);
        free(s);
        return NULL;
    }
    s->listener.data = s;
    s->handles_open = 1;
    if ((r = uv_tcp_open(&s->listener, fd)) != 0) {
        close(fd);
        goto fail_close_listener;
    }
    if ((r = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, server_on_connection)) != 0)
        goto fail_close_listener;
    return s;
fail_close_listener:
    snprintf(err, errlen, "listen: %s", uv_strerror(r));
    s->owns_shared = false; /* the caller still owns sh when we fail */
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, server_on_listener_close);
    return NULL;
}

static void server_bound_address(mock_server_t *s, char *buf, size_t n)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) != 0 ||
        addr_format((struct sockaddr *)&ss, buf, n) == 0)
        snprintf(buf, n, "?");
}

mock_server_t *mock_server_start(uv_loop_t *loop, const mock_options_t *o, char *err, size_t errlen)
{
    int fd = listen_socket(o->listen, false, err, errlen);
    if (fd < 0)
        return NULL;
    mock_shared_t *sh = shared_new(o, 1);
    if (!sh) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    mock_server_t *s = server_new(loop, sh, 0, fd, err, errlen);
    if (!s) {
        shared_free(sh);
        return NULL;
    }
    s->owns_shared = true;
    char addr[80];
    server_bound_address(s, addr, sizeof addr);
    log_info("mock %s listening on %s", sh->name, addr);
    return s;
}

void mock_server_stop(mock_server_t *s)
{
    if (!s || s->stopping)
        return;
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, server_on_listener_close);
    for (mock_conn_t *c = s->conns; c; c = c->next)
        conn_close(c);
}

/* ---- command line ------------------------------------------------------- */

static const char USAGE[] =
    "usage: ficus mock --listen ADDR [options]\n"
    "  --listen ADDR      host:port, [v6]:port or :port to listen on (required)\n"
    "  --status N         status of the answers, 200-599 (default 200)\n"
    "  --body TEXT        response body (default \"ok\\n\")\n"
    "  --body-file F      response body read from file F\n"
    "  --latency D        answer after D, e.g. 20ms or 1s (default 0)\n"
    "  --fail-rate R      share 0..1 of requests answered with --fail-status instead\n"
    "  --fail-status N    status of those answers (default 503)\n"
    "  --reset-rate R     share 0..1 of requests answered by a TCP reset, no response\n"
    "  --name NAME        value of the X-Mock-Name header (default \"mock\")\n"
    "  --workers N        threads, each with its own SO_REUSEPORT listener (default 1)\n"
    "  --help             this text\n"
    "GET /__mock/stats reports the requests seen; POST /__mock/reset zeroes the counts.\n";

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return FE_INVAL;
    *out = v;
    return 0;
}

static int parse_rate(const char *s, double *out)
{
    double v;
    if (units_parse_decimal(s, &v) != 0 || v > 1)
        return FE_INVAL;
    *out = v;
    return 0;
}

static bool header_safe(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] > 0x7e)
            return false;
    return true;
}

/* Reads a whole file of at most MOCK_MAX_BODY_BYTES; 0 or FE_IO / FE_TOOBIG. */
static int read_body_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return FE_IO;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= MOCK_MAX_BODY_BYTES + 1) {
                rc = FE_TOOBIG;
                break;
            }
            size_t ncap = cap ? cap * 2 : 4096;
            if (ncap > MOCK_MAX_BODY_BYTES + 1)
                ncap = MOCK_MAX_BODY_BYTES + 1;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = FE_NOMEM;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f))
                rc = FE_IO;
            break;
        }
    }
    fclose(f);
    if (rc == 0 && n > MOCK_MAX_BODY_BYTES)
        rc = FE_TOOBIG;
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ficus mock: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", USAGE);
    va_end(ap);
    return 2;
}

/* Fills o from argv; returns -1 to go on, else the exit code. *body_owned is
 * the --body-file contents the caller frees. */
static int parse_args(int argc, char **argv, mock_options_t *o, char **body_owned)
{
    static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
                                             {"status", required_argument, NULL, 's'},
                                             {"body", required_argument, NULL, 'b'},
                                             {"body-file", required_argument, NULL, 'B'},
                                             {"latency", required_argument, NULL, 'L'},
                                             {"fail-rate", required_argument, NULL, 'f'},
                                             {"fail-status", required_argument, NULL, 'F'},
                                             {"reset-rate", required_argument, NULL, 'r'},
                                             {"name", required_argument, NULL, 'n'},
                                             {"workers", required_argument, NULL, 'w'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *body_file = NULL;
    const char *why;
    long v;
    memset(o, 0, sizeof *o);
    o->status = 200;
    o->fail_status = 503;
    o->name = "mock";
    o->workers = 1;
    opterr = 0;
    optind = 0; /* glibc: full re-initialisation, so mock_main can run twice */
    int ch;
    while ((ch = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        case 'l':
            o->listen = optarg;
            break;
        case 's':
            if (parse_long(optarg, 200, 599, &v) != 0)
                return usage_error("--status must be 200-599, not '%s'", optarg);
            o->status = (int)v;
            break;
        case 'F':
            if (parse_long(optarg, 200, 599, &v) != 0)
                return usage_error("--fail-status must be 200-599, not '%s'", optarg);
            o->fail_status = (int)v;
            break;
        case 'b':
            o->body = optarg;
            o->body_len = strlen(optarg);
            break;
        case 'B':
            body_file = optarg;
            break;
        case 'L':
            /* A bare 0 is unambiguous, and scripts pass it. */
            if (strcmp(optarg, "0") == 0)
                o->latency_ms = 0;
            else if (units_parse_duration_ms(optarg, &o->latency_ms, &why) != 0)
                return usage_error("--latency '%s': %s", optarg, why);
            break;
        case 'f':
            if (parse_rate(optarg, &o->fail_rate) != 0)
                return usage_error("--fail-rate must be a number from 0 to 1, not '%s'", optarg);
            break;
        case 'r':
            if (parse_rate(optarg, &o->reset_rate) != 0)
                return usage_error("--reset-rate must be a number from 0 to 1, not '%s'", optarg);
            break;
        case 'n':
            if (!header_safe(optarg))
                return usage_error("--name must be 1-128 printable characters, not '%s'", optarg);
            o->name = optarg;
            break;
        case 'w':
            if (parse_long(optarg, 1, MAX_WORKERS, &v) != 0)
                return usage_error("--workers must be 1-%d, not '%s'", MAX_WORKERS, optarg);
            o->workers = (uint32_t)v;
            break;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->listen)
        return usage_error("--listen is required");
    if (o->body && body_file)
        return usage_error("--body and --body-file exclude each other");
    if (o->body && o->body_len > MOCK_MAX_BODY_BYTES)
        return usage_error("--body is too large");
    if (body_file) {
        int rc = read_body_file(body_file, body_owned, &o->body_len);
        if (rc != 0) {
            fprintf(stderr, "ficus mock: cannot read --body-file %s: %s\n", body_file,
                    rc == FE_TOOBIG ? "larger than 16 MiB" : strerror(errno));
            return 1;
        }
        o->body = *body_owned;
    }
    return -1;
}

typedef struct mock_worker {
    uv_loop_t loop;
    uv_async_t stop;
    mock_server_t *server;
    pthread_t thread;
    bool loop_ready, started;
} mock_worker_t;

static void worker_on_stop(uv_async_t *a)
{
    mock_worker_t *w = a->data;
    mock_server_stop(w->server);
    uv_close((uv_handle_t *)&w->stop, NULL);
}

static void *worker_run(void *arg)
{
    mock_worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Closes whatever is left on a loop that never ran (set-up failed midway). */
static void worker_abandon(mock_worker_t *w)
{
    if (!w->loop_ready)
        return;
    if (w->server)
        mock_server_stop(w->server);
    if (!uv_is_closing((uv_handle_t *)&w->stop))
        uv_close((uv_handle_t *)&w->stop, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
}

int mock_main(int argc, char **argv)
{
    mock_options_t o;
    char *body_owned = NULL;
    int rc = parse_args(argc, argv, &o, &body_owned);
    if (rc >= 0) {
        free(body_owned);
        return rc;
    }
    rc = 1;
    char err[256];
    mock_worker_t *workers = calloc(o.workers, sizeof *workers);
    mock_shared_t *sh = shared_new(&o, o.workers);
    if (!workers || !sh) {
        fprintf(stderr, "ficus mock: out of memory\n");
        goto done;
    }
    /* Workers inherit this mask, so the signals reach sigwait below only. */
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    signal(SIGPIPE, SIG_IGN);
    uint32_t n_ready = 0;
    for (; n_ready < o.workers; n_ready++) {
        mock_worker_t *w = &workers[n_ready];
        if (uv_loop_init(&w->loop) != 0) {
            snprintf(err, sizeof err, "cannot create an event loop");
            break;
        }
        w->loop_ready = true;
        uv_async_init(&w->loop, &w->stop, worker_on_stop);
        w->stop.data = w;
        int fd = listen_socket(o.listen, o.workers > 1, err, sizeof err);
        if (fd < 0)
            break;
        if (!(w->server = server_new(&w->loop, sh, n_ready, fd, err, sizeof err)))
            break;
    }
    if (n_ready == o.workers) {
        char addr[80];
        server_bound_address(workers[0].server, addr, sizeof addr);
        if (o.workers > 1)
            log_info("mock %s listening on %s (%u workers)", sh->name, addr, o.workers);
        else
            log_info("mock %s listening on %s", sh->name, addr);
        for (n_ready = 0; n_ready < o.workers; n_ready++) {
            if (pthread_create(&workers[n_ready].thread, NULL, worker_run, &workers[n_ready])) {
                snprintf(err, sizeof err, "cannot start a worker thread");
                break;
            }
            workers[n_ready].started = true;
        }
    }
    if (n_ready == o.workers) {
        int sig = 0;
        sigwait(&sigs, &sig);
        log_info("mock %s: %s, stopping", sh->name, sig == SIGINT ? "SIGINT" : "SIGTERM");
        rc = 0;
    } else {
        fprintf(stderr, "ficus mock: %s\n", err);
    }
    for (uint32_t i = 0; i < o.workers; i++) {
        mock_worker_t *w = &workers[i];
        if (w->started) {
            uv_async_send(&w->stop);
            pthread_join(w->thread, NULL);
            uv_loop_close(&w->loop);
        } else {
            worker_abandon(w);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
done:
    shared_free(sh);
    free(workers);
    free(body_owned);
    return rc;
}
