/* Active health checks; see health_check.h. One check per target, never two
 * at once: a check still running when the next is due is skipped. Each check
 * is one client/http_client request; its answer's head is all that is read. */
#include "policy/health_check.h"

#include <stdio.h>
#include <stdlib.h>

#include "client/http_client.h"
#include "core/defaults.h"
#include "core/log.h"

typedef struct hc_probe {
    uv_timer_t interval;
    struct health_checker *c;
    size_t group;
    size_t target;
    http_client_t *req; /* the check under way, or NULL */
} hc_probe_t;

struct health_checker {
    uv_loop_t *loop;
    const config_t *cfg;
    health_t *h;
    struct tls_client *const *tls; /* per group, or NULL */
    health_check_event_fn on_change;
    void *ctx;
    hc_probe_t *probes;
    size_t n;
    size_t open_handles;
    int stopping;
};

static void health_checker_free(health_checker_t *c)
{
    free(c->probes);
    free(c);
}

static void verdict(hc_probe_t *p, int ok, const char *why)
{
    health_checker_t *c = p->c;
    health_group_t *g = &c->h->groups[p->group];
    int t = health_check_result(g, p->target, ok);
    if (!t)
        return;
    const config_target_group_t *tg = &c->cfg->target_groups[p->group];
    if (t > 0)
        log_info("health check: %s %s is now healthy", tg->name, tg->targets[p->target].name);
    else
        log_warn("health check: %s %s is now unhealthy: %s", tg->name, tg->targets[p->target].name,
                 why);
    /* Panic mode follows the verdicts even without traffic. */
    health_group_panic(g, health_group_usable(g, uv_now(c->loop)));
    if (c->on_change)
        c->on_change(c->ctx, p->group, p->target, t);
}

static void on_check_done(void *ctx, const reply_t *reply, const char *error)
{
    hc_probe_t *p = ctx;
    p->req = NULL;
    if (error) {
        verdict(p, 0, error);
        return;
    }
    int status = reply_status(reply);
    char why[32];
    snprintf(why, sizeof why, "status %d", status);
    verdict(p, status >= 200 && status < 300, why);
}

static void on_interval(uv_timer_t *t)
{
    hc_probe_t *p = t->data;
    health_checker_t *c = p->c;
    if (p->req || c->stopping)
        return;
    const health_addr_t *a = atomic_load(&c->h->groups[p->group].targets[p->target].addr);
    if (!a)
        return; /* not resolved: nothing to check */
    const config_target_group_t *tg = &c->cfg->target_groups[p->group];
    request_t rq = {.method = "GET",
                    .target = tg->health_check.path,
                    .host = tg->targets[p->target].name,
                    .headers = "User-Agent: ficus-health-check\r\n",
                    .close = true};
    /* The status decides: the body is never read. */
    http_client_opts_t o = {.timeout_ms = tg->health_check.timeout_ms,
                            .max_head_bytes = DEFAULT_MAX_HEADER_BYTES,
                            .body_mode = REPLY_BODY_NONE,
                            .h2 = tg->h2};
    if (c->tls && c->tls[p->group]) {
        /* As the group's connections: tls.sni, else the target's host
         * name (an IP address is checked, not sent). */
        const config_target_t *tt = &tg->targets[p->target];
        o.tls = c->tls[p->group];
        o.tls_name = tg->tls.sni ? tg->tls.sni : tt->host;
        o.tls_sni = tt->numeric && !tg->tls.sni ? NULL : o.tls_name;
    }
    p->req = http_client_start(c->loop, (const struct sockaddr *)&a->ss, &rq, &o, on_check_done, p);
    if (!p->req)
        verdict(p, 0, "connect failed");
}

health_checker_t *health_checker_start(uv_loop_t *loop, const config_t *cfg, health_t *h,
                                       struct tls_client *const *tls,
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
    c->tls = tls;
    c->on_change = on_change;
    c->ctx = ctx;
    c->n = n;
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
            p->interval.data = p;
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
    /* A check under way closes on its own; freed when the timers have closed. */
    c->open_handles = c->n;
    for (size_t i = 0; i < c->n; i++) {
        hc_probe_t *p = &c->probes[i];
        http_client_cancel(p->req);
        p->req = NULL;
        uv_close((uv_handle_t *)&p->interval, on_timer_closed);
    }
}
