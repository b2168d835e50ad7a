/* Semantic lint; see lint.h. Each rule reads the loaded configuration and
 * says where in the file the danger is written. Rules that cannot decide
 * (a regex against a regex) stay silent rather than raise a false alarm. */
#include "config/lint.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <pcre2.h>

typedef struct lint {
    const config_t *cfg;
    const yaml_pos_t *pos;
    lint_emit_fn emit;
    void *ctx;
    size_t n;
} lint_t;

static const char *const rule_names[LINT_N_RULES] = {
#define LINT_NAME(id, name) name,
    LINT_RULES(LINT_NAME)
#undef LINT_NAME
};

const char *lint_rule_name(lint_rule_t r)
{
    return (unsigned)r < LINT_N_RULES ? rule_names[r] : "?";
}

int lint_rule_find(const char *name, size_t len)
{
    for (int i = 0; i < LINT_N_RULES; i++)
        if (strlen(rule_names[i]) == len && memcmp(rule_names[i], name, len) == 0)
            return i;
    return -1;
}

/* Whether the key at path is written in the file. */
static bool written(const lint_t *l, const char *path)
{
    size_t line, col;
    return l->pos && yaml_pos_find(l->pos, path, &line, &col);
}

/* A warning about route `route` (SIZE_MAX: about the whole file), unless
 * lint.ignore silences its rule there. */
static void warn(lint_t *l, lint_rule_t rule, size_t route, const char *path, const char *fmt, ...)
{
    uint32_t bit = 1u << rule;
    if ((l->cfg->lint_ignore & bit) ||
        (route != SIZE_MAX && (l->cfg->routes[route].lint_ignore & bit)))
        return;
    size_t line = 1, col = 1;
    if (l->pos)
        yaml_pos_find(l->pos, path, &line, &col);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    l->emit(l->ctx, rule, line, col, msg);
    l->n++;
}

static void ms_text(char *out, size_t n, uint64_t ms)
{
    if (ms % 1000 == 0)
        snprintf(out, n, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, n, "%llums", (unsigned long long)ms);
}

#define BODY_METHODS (METHOD_POST | METHOD_PUT | METHOD_PATCH | METHOD_DELETE)

/* ------------------------------------------------------------ per route */

static void retry_non_idempotent(lint_t *l, const config_route_t *r, size_t i)
{
    uint32_t late = RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET | RETRY_ON_TIMEOUT;
    if (!r->has_retries || !r->retry_non_idempotent || r->retries.attempts == 0 ||
        (!(r->retries.retry_on & late) && !r->retries.n_retry_statuses))
        return;
    char p[64];
    snprintf(p, sizeof p, "routes.%zu.retry_non_idempotent", i);
    warn(l, LINT_RETRY_NON_IDEMPOTENT, i, p,
         "route %s retries POST/PATCH requests on conditions that fire after the request was "
         "sent (a 5xx, a reset or a timeout): the upstream may have done the work already; "
         "retry those only on connect-failure",
         r->name);
}

static void try_exceeds_timeout(lint_t *l, const config_route_t *r, size_t i)
{
    const config_retries_t *rt = &r->retries;
    if (!r->has_retries || !rt->per_try_timeout_ms)
        return;
    /* An aggregation's calls are bounded by the shorter of its timeouts. */
    bool agg = r->has_aggregate && r->aggregate.timeout_ms < r->timeout_ms;
    uint64_t limit = agg ? r->aggregate.timeout_ms : r->timeout_ms;
    const char *whose = agg ? "aggregate.timeout" : "route's timeout";
    char p[64], a[32], b[32];
    snprintf(p, sizeof p, "routes.%zu.retries.per_try_timeout", i);
    ms_text(a, sizeof a, rt->per_try_timeout_ms);
    ms_text(b, sizeof b, limit);
    if (rt->per_try_timeout_ms >= limit) {
        warn(l, LINT_TRY_EXCEEDS_TIMEOUT, i, p,
             "route %s: per_try_timeout %s is not shorter than the %s %s: it ends the first "
             "try, and no retry ever runs after a slow one",
             r->name, a, whose, b);
        return;
    }
    uint64_t need = (uint64_t)(rt->attempts + 1) * rt->per_try_timeout_ms + rt->backoff_ms;
    if (rt->attempts && need > limit) {
        char c[32];
        ms_text(c, sizeof c, need);
        warn(l, LINT_TRY_EXCEEDS_TIMEOUT, i, p,
             "route %s: %u tries of per_try_timeout %s plus backoff need %s, more than the "
             "%s %s: the later tries can never run in full",
             r->name, rt->attempts + 1, a, c, whose, b);
    }
}

/* An aggregation allowed longer than the request itself: the request's
 * deadline ends it first (its calls then answer 504 to nobody). */
static void aggregate_exceeds_timeout(lint_t *l, const config_route_t *r, size_t i)
{
    char p[64], a[32], b[32];
    snprintf(p, sizeof p, "routes.%zu.aggregate.timeout", i);
    if (!r->has_aggregate || r->aggregate.timeout_ms <= r->timeout_ms || !written(l, p))
        return;
    ms_text(a, sizeof a, r->aggregate.timeout_ms);
    ms_text(b, sizeof b, r->timeout_ms);
    warn(l, LINT_TRY_EXCEEDS_TIMEOUT, i, p,
         "route %s: aggregate.timeout %s is longer than the route's timeout %s: the request's "
         "deadline answers 504 before the aggregation can answer with what it has",
         r->name, a, b);
}

/* A fixed hedge delay the try's own timeout (or the deadline's floor)
 * always beats: the hedge never starts. */
static void hedge_after_timeout(lint_t *l, const config_route_t *r, size_t i)
{
    const config_retries_t *rt = &r->retries;
    if (!r->has_retries || !rt->has_hedge || rt->hedge.after_percentile)
        return;
    char p[64], a[32], b[32];
    snprintf(p, sizeof p, "routes.%zu.retries.hedge.after", i);
    ms_text(a, sizeof a, rt->hedge.after_ms);
    if (rt->per_try_timeout_ms && rt->hedge.after_ms >= rt->per_try_timeout_ms) {
        ms_text(b, sizeof b, rt->per_try_timeout_ms);
        warn(l, LINT_HEDGE_AFTER_TIMEOUT, i, p,
             "route %s: hedge.after %s is not shorter than per_try_timeout %s: a slow try times "
             "out before its hedge could start",
             r->name, a, b);
        return;
    }
    if (rt->hedge.after_ms + r->deadline.min_remaining_ms >= r->timeout_ms) {
        ms_text(b, sizeof b, r->timeout_ms);
        warn(l, LINT_HEDGE_AFTER_TIMEOUT, i, p,
             "route %s: hedge.after %s leaves less than deadline.min_remaining of the route's "
             "timeout %s: no hedge can ever start",
             r->name, a, b);
    }
}

static void retry_buffer_below_body(lint_t *l, const config_route_t *r, size_t i)
{
    if (r->has_aggregate)
        return; /* its calls carry no body */
    const config_server_t *s = &l->cfg->server;
    bool fallback = false;
    for (size_t b = 0; b < r->n_backends; b++)
        fallback |= r->backends[b].fallback != CONFIG_NONE;
    bool again = (r->has_retries && r->retries.attempts) || fallback ||
                 (r->has_shadow && (r->shadow.methods & BODY_METHODS));
    bool bodies = r->match.methods == 0 || (r->match.methods & BODY_METHODS);
    if (!again || !bodies || s->retry_buffer_bytes >= s->max_body_bytes)
        return;
    char p[64];
    snprintf(p, sizeof p, "routes.%zu.name", i);
    warn(l, LINT_RETRY_BUFFER_BELOW_BODY, i, p,
         "route %s retries, falls back or copies requests whose bodies may be up to "
         "server.max_body_size (%llu bytes), but only bodies up to server.retry_buffer_size "
         "(%llu bytes) are kept: larger ones are neither retried, fallen back nor copied",
         r->name, (unsigned long long)s->max_body_bytes, (unsigned long long)s->retry_buffer_bytes);
}

static void fallback_is_canary(lint_t *l, const config_route_t *r, size_t i)
{
    const config_t *cfg = l->cfg;
    for (size_t b = 0; b < r->n_backends; b++) {
        const config_backend_t *be = &r->backends[b];
        if (be->fallback == CONFIG_NONE)
            continue;
        char p[80];
        snprintf(p, sizeof p, "routes.%zu.backends.%zu.fallback", i, b);
        /* (Falling back to itself is a load error already.) */
        const char *g = cfg->target_groups[be->fallback].name;
        for (size_t c = 0; c < r->n_backends; c++) {
            const config_backend_t *o = &r->backends[c];
            if (o->target_group == be->fallback && o->weight > 0 && o->fallback != CONFIG_NONE)
                warn(l, LINT_FALLBACK_IS_CANARY, i, p,
                     "route %s: the fallback %s is itself a canary here (weight %u with its own "
                     "fallback): the old system the canary relies on is being replaced too",
                     r->name, g, o->weight);
        }
    }
}

static void shadow_side_effects(lint_t *l, const config_route_t *r, size_t i)
{
    if (!r->has_shadow || !(r->shadow.methods & BODY_METHODS))
        return;
    char p[64];
    snprintf(p, sizeof p, "routes.%zu.shadow.methods", i);
    warn(l, LINT_SHADOW_SIDE_EFFECTS, i, p,
         "route %s copies POST, PUT, PATCH or DELETE requests to %s: each write is done twice "
         "unless the shadow's writes go nowhere that matters",
         r->name, l->cfg->target_groups[r->shadow.target_group].name);
}

static void no_timeout(lint_t *l, const config_route_t *r, size_t i)
{
    char p[64];
    snprintf(p, sizeof p, "routes.%zu.timeout", i);
    if (written(l, p) || (r->has_retries && r->retries.per_try_timeout_ms))
        return;
    snprintf(p, sizeof p, "routes.%zu.aggregate.timeout", i);
    if (r->has_aggregate && written(l, p))
        return;
    snprintf(p, sizeof p, "routes.%zu.name", i);
    char d[32];
    ms_text(d, sizeof d, r->timeout_ms);
    warn(l, LINT_NO_TIMEOUT, i, p,
         "route %s sets no timeout and no retries.per_try_timeout: the default %s applies, "
         "whatever its upstream's latency; say how long a client should wait",
         r->name, d);
}

/* ------------------------------------------------------ unreachable routes */

/* Whether every request b matches on path, a matches too (decidable cases
 * only: false when unsure). */
static bool path_covers(const config_match_t *a, const config_match_t *b)
{
    if (a->kind == MATCH_PREFIX) {
        if (b->kind == MATCH_REGEX)
            return a->path_len == 1 && a->path[0] == '/';
        return b->path_len >= a->path_len && memcmp(b->path, a->path, a->path_len) == 0;
    }
    if (a->kind == MATCH_PATH)
        return b->kind == MATCH_PATH && b->path_len == a->path_len &&
               memcmp(b->path, a->path, a->path_len) == 0;
    /* a regex: decidable only against one exact path. */
    if (b->kind != MATCH_PATH || !a->regex)
        return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(a->regex, NULL);
    if (!md)
        return false;
    int rc = pcre2_match(a->regex, (PCRE2_SPTR)b->path, b->path_len, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static bool headers_cover(const config_match_t *a, const config_match_t *b)
{
    /* Every condition of a must be one of b's, word for word. */
    for (size_t i = 0; i < a->n_headers; i++) {
        const config_header_match_t *x = &a->headers[i];
        bool found = false;
        for (size_t j = 0; j < b->n_headers && !found; j++) {
            const config_header_match_t *y = &b->headers[j];
            found = x->name && y->name && strcmp(x->name, y->name) == 0 &&
                    ((!x->value && !y->value) ||
                     (x->value && y->value && strcmp(x->value, y->value) == 0));
        }
        if (!found)
            return false;
    }
    return true;
}

static bool host_covers(const config_match_t *a, const config_match_t *b)
{
    if (!a->host)
        return true;
    if (!b->host)
        return false;
    if (!a->host_wildcard)
        return !b->host_wildcard && strcmp(a->host, b->host) == 0;
    size_t al = strlen(a->host), bl = strlen(b->host);
    return bl >= al && strcmp(b->host + bl - al, a->host) == 0;
}

static bool match_covers(const config_match_t *a, const config_match_t *b)
{
    if (a->in_set != CONFIG_NONE)
        return false;
    if (a->methods && (!b->methods || (b->methods & ~a->methods)))
        return false;
    return host_covers(a, b) && headers_cover(a, b) && path_covers(a, b);
}

static void unreachable_route(lint_t *l, size_t i)
{
    const config_route_t *r = &l->cfg->routes[i];
    for (size_t e = 0; e < i; e++) {
        const config_route_t *earlier = &l->cfg->routes[e];
        if (!match_covers(&earlier->match, &r->match))
            continue;
        char p[64];
        snprintf(p, sizeof p, "routes.%zu.match", i);
        warn(l, LINT_UNREACHABLE_ROUTE, i, p,
             "route %s is never used: route %s, earlier in the file, matches every request it "
             "would (routes are tried in file order)",
             r->name, earlier->name);
        return;
    }
}

/* ---------------------------------------------------------- whole config */

static bool everyone(const cidr_t *c) { return c->prefix == 0; }

/* A listener on loopback or a private network: something else faces the
 * clients, so every request comes from a few proxy addresses. */
static bool behind_something(const config_listener_t *li)
{
    if (li->addr.ss_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)&li->addr)->sin_addr;
        return a[0] == 127 || a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) ||
               (a[0] == 192 && a[1] == 168);
    }
    if (li->addr.ss_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)&li->addr)->sin6_addr.s6_addr;
        static const uint8_t loop[16] = {[15] = 1};
        return memcmp(a, loop, 16) == 0 || (a[0] & 0xfe) == 0xfc;
    }
    return false;
}

static void untrusted_forwarded_for(lint_t *l)
{
    const config_server_t *s = &l->cfg->server;
    for (size_t i = 0; i < s->n_trusted_proxies; i++)
        if (everyone(&s->trusted_proxies[i])) {
            char p[64];
            snprintf(p, sizeof p, "server.trusted_proxies.%zu", i);
            warn(l, LINT_UNTRUSTED_FORWARDED_FOR, SIZE_MAX, p,
                 "every address is a trusted proxy: any client can pick its own address with "
                 "X-Forwarded-For, past IP rules and per-IP rate limits");
            return;
        }
    if (s->n_trusted_proxies)
        return;
    bool behind = s->n_listeners > 0;
    for (size_t i = 0; i < s->n_listeners; i++)
        behind &= behind_something(&s->listeners[i]);
    if (!behind)
        return;
    for (size_t i = 0; i < l->cfg->n_routes; i++) {
        const config_route_t *r = &l->cfg->routes[i];
        if (!r->has_rate_limit || r->rate_limit.by != RATE_BY_IP)
            continue;
        char p[64];
        snprintf(p, sizeof p, "routes.%zu.rate_limit.by", i);
        warn(l, LINT_UNTRUSTED_FORWARDED_FOR, i, p,
             "route %s limits by client address, but ficus listens only on private or loopback "
             "addresses with no server.trusted_proxies: every client looks like the proxy in "
             "front, and they share one bucket",
             r->name);
    }
}

static bool route_uses(const config_route_t *r, size_t g)
{
    for (size_t b = 0; b < r->n_backends; b++)
        if (r->backends[b].target_group == g || r->backends[b].fallback == g)
            return true;
    return false;
}

static void required_shared_group(lint_t *l)
{
    const config_t *cfg = l->cfg;
    if (cfg->n_routes < 2)
        return;
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        if (!cfg->target_groups[g].required)
            continue;
        size_t n = 0;
        for (size_t i = 0; i < cfg->n_routes; i++)
            n += route_uses(&cfg->routes[i], g);
        if (n < cfg->n_routes)
            continue;
        char p[300];
        snprintf(p, sizeof p, "target_groups.%s.required", cfg->target_groups[g].name);
        warn(l, LINT_REQUIRED_SHARED_GROUP, SIZE_MAX, p,
             "%s is required and serves every route: when it is slow or down every instance "
             "turns unready at once and the whole fleet leaves the load balancer",
             cfg->target_groups[g].name);
    }
}

static void tls_verify_off(lint_t *l)
{
    const config_t *cfg = l->cfg;
    for (size_t g = 0; g < cfg->n_target_groups; g++) {
        const config_target_group_t *tg = &cfg->target_groups[g];
        if (!tg->has_tls || tg->tls.verify)
            continue;
        char p[300];
        snprintf(p, sizeof p, "target_groups.%s.tls.verify", tg->name);
        warn(l, LINT_TLS_VERIFY_OFF, SIZE_MAX, p,
             "%s does not verify its targets' certificates: anyone on the path can pose as a "
             "target and read or change the traffic; give it the CA (tls.ca) instead",
             tg->name);
    }
}

size_t lint_config(const config_t *cfg, const yaml_pos_t *pos, lint_emit_fn emit, void *ctx)
{
    lint_t l = {.cfg = cfg, .pos = pos, .emit = emit, .ctx = ctx};
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const config_route_t *r = &cfg->routes[i];
        retry_non_idempotent(&l, r, i);
        try_exceeds_timeout(&l, r, i);
        aggregate_exceeds_timeout(&l, r, i);
        hedge_after_timeout(&l, r, i);
        retry_buffer_below_body(&l, r, i);
        fallback_is_canary(&l, r, i);
        unreachable_route(&l, i);
        shadow_side_effects(&l, r, i);
        no_timeout(&l, r, i);
    }
    untrusted_forwarded_for(&l);
    required_shared_group(&l);
    tls_verify_off(&l);
    return l.n;
}
