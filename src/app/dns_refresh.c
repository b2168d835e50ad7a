/* Target name resolution; see dns_refresh.h. */
#include "app/dns_refresh.h"

#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/addr.h"
#include "core/log.h"

typedef struct dns_target {
    uv_getaddrinfo_t req;
    struct dns_group *dg;
    size_t target;
    int busy;
} dns_target_t;

typedef struct dns_group {
    uv_timer_t timer;
    dns_refresh_t *owner;
    size_t group;
    dns_target_t *targets; /* named targets only have a use for it */
} dns_group_t;

struct dns_refresh {
    uv_loop_t *loop;
    const config_t *cfg;
    health_t *health;
    worker_group_t *workers;
    dns_group_t *groups;
    unsigned pending;
    bool stopped;
};

void dns_refresh_resolve(config_t *cfg)
{
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        config_target_group_t *tg = &cfg->target_groups[g];
        for (size_t i = 0; i < tg->n_targets; i++) {
            config_target_t *t = &tg->targets[i];
            if (t->numeric)
                continue;
            struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
            char port[8];
            snprintf(port, sizeof port, "%u", t->port);
            int rc = getaddrinfo(t->host, port, &hints, &res);
            if (rc != 0 || !res) {
                log_error("target group %s: cannot resolve %s: %s", tg->name, t->name,
                          gai_strerror(rc));
                continue;
            }
            memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
            t->addrlen = res->ai_addrlen;
            freeaddrinfo(res);
        }
    }
}

static void on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    dns_target_t *d = req->data;
    dns_group_t *dg = d->dg;
    dns_refresh_t *r = dg->owner;
    d->busy = 0;
    r->pending--;
    const config_target_group_t *tg = &r->cfg->target_groups[dg->group];
    const config_target_t *t = &tg->targets[d->target];
    if (status != 0 || !res) {
        if (status != UV_ECANCELED && !r->stopped)
            log_limited(LOG_WARN,
                        "target group %s: cannot resolve %s: %s (keeping the last address)",
                        tg->name, t->name, uv_strerror(status));
    } else if (!r->stopped) {
        health_target_t *ht = &r->health->groups[dg->group].targets[d->target];
        const health_addr_t *cur = atomic_load(&ht->addr);
        if (!cur || cur->len != res->ai_addrlen || memcmp(&cur->ss, res->ai_addr, cur->len) != 0) {
            char name[80];
            addr_format(res->ai_addr, name, sizeof name);
            log_info("target group %s: %s now resolves to %s", tg->name, t->name, name);
            health_set_addr(ht, res->ai_addr, res->ai_addrlen, worker_group_retire_cb, r->workers);
        }
    }
    uv_freeaddrinfo(res);
}

static void on_dns_timer(uv_timer_t *timer)
{
    dns_group_t *dg = timer->data;
    dns_refresh_t *r = dg->owner;
    const config_target_group_t *tg = &r->cfg->target_groups[dg->group];
    for (size_t i = 0; i < tg->n_targets; i++) {
        const config_target_t *t = &tg->targets[i];
        dns_target_t *d = &dg->targets[i];
        if (t->numeric || d->busy || r->stopped)
            continue;
        char port[8];
        snprintf(port, sizeof port, "%u", t->port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        d->req.data = d;
        if (uv_getaddrinfo(r->loop, &d->req, on_dns, t->host, port, &hints) == 0) {
            d->busy = 1;
            r->pending++;
        }
    }
}

static bool has_names(const config_target_group_t *tg)
{
    bool named = false;
    for (size_t t = 0; t < tg->n_targets; t++)
        named |= !tg->targets[t].numeric;
    return named;
}

dns_refresh_t *dns_refresh_start(uv_loop_t *loop, const config_t *cfg, health_t *health,
                                 worker_group_t *workers)
{
    dns_refresh_t *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    *r = (dns_refresh_t){.loop = loop, .cfg = cfg, .health = health, .workers = workers};
    r->groups = calloc(cfg->n_target_groups ? cfg->n_target_groups : 1, sizeof *r->groups);
    if (!r->groups)
        goto fail_free;
    /* Everything allocated before any timer runs: a failure frees at once. */
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        dns_group_t *dg = &r->groups[g];
        dg->owner = r;
        dg->group = g;
        if (!has_names(tg))
            continue;
        dg->targets = calloc(tg->n_targets, sizeof *dg->targets);
        if (!dg->targets)
            goto fail_free;
        for (size_t t = 0; t < tg->n_targets; t++) {
            dg->targets[t].dg = dg;
            dg->targets[t].target = t;
        }
    }
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        dns_group_t *dg = &r->groups[g];
        if (!dg->targets)
            continue;
        uv_timer_init(loop, &dg->timer);
        dg->timer.data = dg;
        uv_timer_start(&dg->timer, on_dns_timer, cfg->target_groups[g].dns_refresh_ms,
                       cfg->target_groups[g].dns_refresh_ms);
    }
    return r;
fail_free:
    dns_refresh_free(r);
    return NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
    dns_group_t *dg = h->data;
    dg->owner->pending--;
}

void dns_refresh_stop(dns_refresh_t *r)
{
    r->stopped = true;
    for (size_t g = 0; g < r->cfg->n_target_groups; g++) {
        dns_group_t *dg = &r->groups[g];
        if (!dg->targets)
            continue;
        if (!uv_is_closing((uv_handle_t *)&dg->timer)) {
            r->pending++;
            uv_close((uv_handle_t *)&dg->timer, on_timer_closed);
        }
        for (size_t t = 0; t < r->cfg->target_groups[g].n_targets; t++)
            if (dg->targets[t].busy)
                uv_cancel((uv_req_t *)&dg->targets[t].req);
    }
}

unsigned dns_refresh_pending(const dns_refresh_t *r) { return r->pending; }

void dns_refresh_free(dns_refresh_t *r)
{
    if (!r)
        return;
    for (size_t g = 0; r->groups && g < r->cfg->n_target_groups; g++)
        free(r->groups[g].targets);
    free(r->groups);
    free(r);
}
