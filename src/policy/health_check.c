/* Active health checks; see health_check.h. One probe per target, never two
 * at once: a check still running when the next is due is skipped. */
#include "policy/health_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "net/stream.h"

#define HC_RESPONSE_BYTES 1024

typedef struct hc_probe {
    stream_t s; /* first: stream callbacks cast back */
    uv_connect_t creq;
    uv_timer_t interval;
    uv_timer_t timeout;
    struct health_checker *c;
    size_t group;
    size_t target;
    char in[HC_RESPONSE_BYTES];
    size_t in_len;
    int busy; /* a check is under way */
    int stream_open;
    int done;
} hc_probe_t;

struct health_checker {
    uv_loop_t *loop;
    const config_t *cfg;
    health_t *h;
    health_check_event_fn on_change;
    void *ctx;
    pbuf_pool_t pool;
    hc_probe_t *probes;
    size_t n;
    size_t open_handles;
    int stopping;
};

static void health_checker_free(health_checker_t *c)
{
    pbuf_pool_deinit(&c->pool);
    free(c->probes);
    free(c);
}

static void verdict(hc_probe_t *p, int ok, const char *why)
{
    if (p->done)
        return;
    p->done = 1;
    uv_timer_stop(&p->timeout);
    health_checker_t *c = p->c;
    health_group_t *g = &c->h->groups[p->group];
    int t = health_check_result(g, p->target, ok);
    if (t) {
        const config_target_group_t *tg = &c->cfg->target_groups[p->group];
        if (t > 0)
            log_info("health check: %s %s is now healthy", tg->name, tg->targets[p->target].name);
        else
            log_warn("health check: %s %s is now unhealthy: %s", tg->name,
                     tg->targets[p->target].name, why);
        /* Panic mode follows the verdicts even without traffic. */
        health_group_panic(g, health_group_usable(g, uv_now(c->loop)));
        if (c->on_change)
            c->on_change(c->ctx, p->group, p->target, t);
    }
    if (p->stream_open)
        stream_close(&p->s, !ok);
}

static void on_stream_close(stream_t *s)
{
    hc_probe_t *p = (hc_probe_t *)s;
    p->stream_open = 0;
    p->busy = 0;
    health_checker_t *c = p->c;
    if (c->stopping && --c->open_handles == 0)
        health_checker_free(c);
}

static void on_alloc(stream_t *s, uv_buf_t *buf)
{
    hc_probe_t *p = (hc_probe_t *)s;
    *buf = uv_buf_init(p->in + p->in_len, (unsigned)(sizeof p->in - p->in_len - 1));
}

static void on_read(stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    hc_probe_t *p = (hc_probe_t *)s;
    if (n < 0) {
        verdict(p, 0, "closed before a status line");
        return;
    }
    p->in_len += (size_t)n;
    p->in[p->in_len] = '\0';
    char *eol = strstr(p->in, "\r\n");
    if (!eol) {
        if (p->in_len >= sizeof p->in - 1)
            verdict(p, 0, "status line too long");
        return;
    }
    int status = 0;
    if (sscanf(p->in, "HTTP/1.%*d %d", &status) != 1) {
        verdict(p, 0, "invalid status line");
        return;
    }
    char why[32];
    snprintf(why, sizeof why, "status %d", status);
    verdict(p, status >= 200 && status < 300, why);
}

static void on_drain(stream_t *s, int status)
{
    if (status < 0)
        verdict((hc_probe_t *)s, 0, uv_strerror(status));
}

static const stream_ops_t probe_ops = {on_alloc, on_read, on_drain, on_stream_close};

static void on_connect(uv_connect_t *req, int status)
{
    hc_probe_t *p = req->data;
    if (p->done)
        return;
    if (status < 0) {
        verdict(p, 0, uv_strerror(status));
        return;
    }
    const config_target_group_t *tg = &p->c->cfg->target_groups[p->group];
    const config_target_t *t = &tg->targets[p->target];
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ficus-health-check\r\n"
                     "Connection: close\r\n\r\n",
                     tg->health_check.path, t->name);
    uv_buf_t b = uv_buf_init(head, (unsigned)n);
    if (stream_write(&p->s, &b, 1) < 0 || stream_read_start(&p->s) != 0)
        verdict(p, 0, "write failed");
}

static void on_timeout(uv_timer_t *t) { verdict(t->data, 0, "timeout"); }

static void on_interval(uv_timer_t *t)
{
    hc_probe_t *p = t->data;
    health_checker_t *c = p->c;
    if (p->busy || c->stopping)
        return;
    const health_addr_t *a = atomic_load(&c->h->groups[p->group].targets[p->target].addr);
    if (!a)
        return; /* not resolved: nothing to check */
    p->busy = 1;
    p->done = 0;
    p->in_len = 0;
    if (stream_init(c->loop, &p->s, &probe_ops, &c->pool) != 0) {
        p->busy = 0;
        return;
    }
    p->stream_open = 1;
    p->creq.data = p;
    uv_timer_start(&p->timeout, on_timeout, c->cfg->target_groups[p->group].health_check.timeout_ms,
                   0);
    if (stream_connect(&p->s, &p->creq, (const struct sockaddr *)&a->ss, on_connect) != 0)
        verdict(p, 0, "connect failed");
}

health_checker_t *health_checker_start(uv_loop_t *loop, const config_t *cfg, health_t *h,
                                       health_check_event_fn on_change, void *ctx)
{
    size_t n = 0;
    for (size_t g = 0; g < cfg->n_target_groups; g++)
        if (cfg->target_groups[g].has_health_check)
            n += cfg->target_groups[g].n_targets;
    if (n == 0)
        return NULL;
    health_checker_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->probes = calloc(n, sizeof *c->probes);
    if (!c->probes) {
        free(c);
        return NULL;
    }
    c->loop = loop;
    c->cfg = cfg;
    c->h = h;
    c->on_change = on_change;
    c->ctx = ctx;
    c->n = n;
    pbuf_pool_init(&c->pool, 4096, 4);
    size_t i = 0;
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        if (!tg->has_health_check)
            continue;
        for (size_t t = 0; t < tg->n_targets; t++, i++) {
            hc_probe_t *p = &c->probes[i];
            p->c = c;
            p->group = g;
            p->target = t;
            uv_timer_init(loop, &p->interval);
            uv_timer_init(loop, &p->timeout);
            p->interval.data = p->timeout.data = p;
            /* First check soon, spread over the interval so checks do not align. */
            uint64_t first = tg->health_check.interval_ms * (t + 1) / (tg->n_targets + 1);
            uv_timer_start(&p->interval, on_interval, first, tg->health_check.interval_ms);
        }
    }
    return c;
}

static void on_timer_closed(uv_handle_t *h)
{
    hc_probe_t *p = h->data;
    health_checker_t *c = p->c;
    if (--c->open_handles == 0)
        health_checker_free(c);
}

void health_checker_stop(health_checker_t *c)
{
    if (!c)
        return;
    c->stopping = 1;
    /* Freed when the last of its handles has closed, in whatever order. */
    c->open_handles = 2 * c->n;
    for (size_t i = 0; i < c->n; i++) {
        hc_probe_t *p = &c->probes[i];
        p->done = 1;
        if (p->stream_open) {
            c->open_handles++;
            if (!stream_closing(&p->s))
                stream_close(&p->s, true);
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        uv_close((uv_handle_t *)&c->probes[i].interval, on_timer_closed);
        uv_close((uv_handle_t *)&c->probes[i].timeout, on_timer_closed);
    }
}
