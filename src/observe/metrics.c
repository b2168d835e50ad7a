/* Prometheus metrics. Each worker owns its counters and is their only writer
 * (relaxed load+store), the scraping thread sums them; process-wide events
 * use atomic read-modify-write on the registry. Per-slot storage is allocated
 * on first use and published with a release store, so /metrics never locks. */
#include "observe/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "core/errors.h"
#include "core/fmt.h"
#include "core/hash.h"
#include "core/log.h"

#define N_BUCKETS 17
const double metrics_buckets_s[N_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10,    30};
const size_t metrics_n_buckets = N_BUCKETS;

/* The same bounds in microseconds (what is recorded) and as label text (so
 * the exposition never depends on how printf rounds a double). */
static const uint64_t bucket_us[N_BUCKETS] = {100,     250,     500,     1000,     2500,    5000,
                                              10000,   25000,   50000,   100000,   250000,  500000,
                                              1000000, 2500000, 5000000, 10000000, 30000000};
static const char *const bucket_le[N_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",   "30"};

#define STATUS_MIN 100
#define STATUS_SPAN 500                  /* 100..599 */
#define UPSTREAM_CODES (STATUS_SPAN + 3) /* + connect_error, timeout, reset */
#define N_LIMITS 3
#define PAIR_USED (UINT64_C(1) << 63) /* keys are never 0, which marks an empty entry */

_Static_assert((METRICS_PAIR_SLOTS & (METRICS_PAIR_SLOTS - 1)) == 0, "power of two");
_Static_assert(METRICS_MAX_ROUTES <= 0xffff && METRICS_MAX_GROUPS <= 0xffff, "pair keys pack");

typedef struct hist {
    uint64_t buckets[N_BUCKETS + 1]; /* not cumulative; the last is +Inf */
    uint64_t sum_us;
} hist_t;

typedef struct route_stats {
    uint64_t codes[STATUS_SPAN];
    uint64_t rate_limited;
    uint64_t in_flight; /* signed sums in two's complement (gauges) */
    uint64_t tunnels;
    hist_t duration;
} route_stats_t;

typedef struct group_stats {
    uint64_t cb_rejections[N_LIMITS];
    hist_t duration;
} group_stats_t;

typedef struct target_stats {
    uint64_t codes[UPSTREAM_CODES];
} target_stats_t;

typedef struct pair_entry {
    uint64_t key; /* 0 = empty; written once, then only read */
    uint64_t count;
} pair_entry_t;

/* Big, but calloc'd: pages a worker never touches are never backed. Slot
 * arrays hold void * so one publish/lookup helper serves them all. */
struct metrics_worker {
    void *routes[METRICS_MAX_ROUTES];   /* route_stats_t */
    void *groups[METRICS_MAX_GROUPS];   /* group_stats_t */
    void *targets[METRICS_MAX_TARGETS]; /* target_stats_t */
    uint64_t throttled[METRICS_MAX_CLIENTS];
    pair_entry_t retries[METRICS_PAIR_SLOTS];   /* key: route, group */
    pair_entry_t fallbacks[METRICS_PAIR_SLOTS]; /* key: route, from, to */
    pair_entry_t masked[METRICS_PAIR_SLOTS];    /* key: route, group */
    pair_entry_t hedges[METRICS_PAIR_SLOTS];    /* key: route, metrics_hedge_t */
    uint64_t connections;                       /* a signed sum kept in two's complement */
    uint64_t connections_rejected;
    uint64_t tls_handshakes[METRICS_MAX_LISTENERS][METRICS_TLS_RESULTS];
    uint64_t http2_errors[METRICS_H2_REASONS];
};

typedef struct tls_cert_gauge {
    size_t listener;
    char name[128];
    int64_t not_after;
} tls_cert_gauge_t;

typedef struct name_table {
    uint32_t cap;
    uint32_t n;
    char **names;
    uint32_t *group; /* targets only: the group slot of each */
    uint32_t *index; /* open addressing: slot + 1, 0 = empty */
    uint32_t mask;
} name_table_t;

enum { REASON_EMPTY = 0, REASON_WRITING, REASON_READY };

typedef struct reason {
    int state;
    char name[METRICS_REASON_MAX_BYTES];
} reason_t;

struct metrics_registry {
    size_t n_workers;
    metrics_worker_t **workers;
    char *version;
    name_table_t routes, groups, targets, clients, sets;
    /* Process-wide, any thread: atomic read-modify-write. */
    uint64_t *outlier_ejections;   /* per target slot */
    uint64_t *set_reload_failures; /* per set slot */
    uint64_t *set_members;         /* per set slot: members at the last read */
    uint64_t *set_success_ms;      /* per set slot: 0 = never read */
    uint64_t reloads_ok;
    uint64_t reloads_failed;
    uint64_t reloads_reverted;
    uint64_t config_canary;
    uint64_t last_reload_ok_ms;
    uint64_t last_reload_ok; /* 0/1: ficus_config_last_reload_successful */
    int initial_load_seen;
    uint64_t redis_errors;
    char *tls_listeners[METRICS_MAX_LISTENERS]; /* labels; NULL: not a TLS listener */
    const char *tls_results[METRICS_TLS_RESULTS];
    const char *http2_reasons[METRICS_H2_REASONS];
    tls_cert_gauge_t tls_certs[METRICS_MAX_TLS_CERTS];
    size_t n_tls_certs;
    uint64_t agg_cache[METRICS_AGG_RESULTS];
    uint64_t trace_dropped;
    uint64_t trace_export_failures;
    reason_t reasons[METRICS_MAX_REASONS];
    pair_entry_t auth_failures[METRICS_PAIR_SLOTS]; /* key: route, reason */
    uint64_t session_failures[METRICS_MAX_REASONS];
};

/* ---- atomics ---- */

static inline uint64_t load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* Only the owning worker writes: a relaxed load+store is a whole increment,
 * and the scraper always reads a value that was really there. */
static inline void bump(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline void bump_shared(uint64_t *p, uint64_t v)
{
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static void hist_observe(hist_t *h, uint64_t us)
{
    size_t i = 0;
    while (i < N_BUCKETS && us > bucket_us[i])
        i++;
    bump(&h->buckets[i], 1);
    bump(&h->sum_us, us);
}

/* The stats of a slot, allocated on this worker's first use of it. */
static void *worker_slot(void **slots, uint32_t slot, uint32_t max, size_t size)
{
    if (slot >= max)
        return NULL;
    void *s = __atomic_load_n(&slots[slot], __ATOMIC_RELAXED);
    if (s)
        return s;
    s = calloc(1, size);
    if (!s) {
        log_limited(LOG_WARN, "metrics: out of memory, sample dropped");
        return NULL;
    }
    /* Release: the scraper must see zeroed counters, not the old page. */
    __atomic_store_n(&slots[slot], s, __ATOMIC_RELEASE);
    return s;
}

/* The scraper's view of a worker's slot; NULL when never used. */
static const void *peek_slot(void *const *slots, uint32_t slot)
{
    return __atomic_load_n(&slots[slot], __ATOMIC_ACQUIRE);
}

/* Per-worker pair counter (single writer). NULL when the neighbourhood is
 * full: the table is bounded, the sample is dropped and said so. */
static uint64_t *pair_counter(pair_entry_t *t, uint64_t key)
{
    size_t i = (size_t)hash_mix(key) & (METRICS_PAIR_SLOTS - 1);
    for (size_t probe = 0; probe < METRICS_PAIR_MAX_PROBES; probe++) {
        uint64_t k = __atomic_load_n(&t[i].key, __ATOMIC_RELAXED);
        if (k == key)
            return &t[i].count;
        if (k == 0) {
            __atomic_store_n(&t[i].key, key, __ATOMIC_RELEASE);
            return &t[i].count;
        }
        i = (i + 1) & (METRICS_PAIR_SLOTS - 1);
    }
    log_limited(LOG_WARN, "metrics: pair table full, sample dropped");
    return NULL;
}

/* The same for a table written by any thread: entries are claimed by CAS. */
static uint64_t *shared_pair_counter(pair_entry_t *t, uint64_t key)
{
    size_t i = (size_t)hash_mix(key) & (METRICS_PAIR_SLOTS - 1);
    for (size_t probe = 0; probe < METRICS_PAIR_MAX_PROBES; probe++) {
        uint64_t k = __atomic_load_n(&t[i].key, __ATOMIC_ACQUIRE);
        /* On a lost race k becomes the winner's key, which may be ours. */
        if (k == 0 && __atomic_compare_exchange_n(&t[i].key, &k, key, false, __ATOMIC_ACQ_REL,
                                                  __ATOMIC_ACQUIRE))
            return &t[i].count;
        if (k == key)
            return &t[i].count;
        i = (i + 1) & (METRICS_PAIR_SLOTS - 1);
    }
    log_limited(LOG_WARN, "metrics: shared pair table full, sample dropped");
    return NULL;
}

/* Interns a reason code from any thread. Two threads naming two empty
 * entries with the same reason at once make a duplicate; render merges them. */
static int reason_index(metrics_registry_t *r, const char *reason)
{
    if (!reason)
        reason = "unknown";
    size_t n = strnlen(reason, METRICS_REASON_MAX_BYTES - 1);
    for (int i = 0; i < METRICS_MAX_REASONS; i++) {
        reason_t *e = &r->reasons[i];
        int st = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
        if (st == REASON_EMPTY) {
            if (__atomic_compare_exchange_n(&e->state, &st, REASON_WRITING, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                memcpy(e->name, reason, n);
                e->name[n] = '\0';
                __atomic_store_n(&e->state, REASON_READY, __ATOMIC_RELEASE);
                return i;
            }
        }
        if (st == REASON_READY && strncmp(e->name, reason, n) == 0 && e->name[n] == '\0')
            return i;
    }
    log_limited(LOG_WARN, "metrics: too many failure reasons, \"%s\" not counted", reason);
    return -1;
}

/* ---- name tables (main thread) ---- */

static int names_init(name_table_t *t, uint32_t cap, bool with_group)
{
    memset(t, 0, sizeof *t);
    t->cap = cap;
    uint32_t size = 1;
    while (size < 2 * cap)
        size <<= 1;
    t->mask = size - 1;
    t->names = calloc(cap, sizeof *t->names);
    t->index = calloc(size, sizeof *t->index);
    t->group = with_group ? calloc(cap, sizeof *t->group) : NULL;
    if (!t->names || !t->index || (with_group && !t->group))
        return FE_NOMEM;
    return 0;
}

static void names_deinit(name_table_t *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        free(t->names[i]);
    free(t->names);
    free(t->index);
    free(t->group);
}

static uint32_t names_hash(uint32_t group, const char *s)
{
    return (uint32_t)hash_mix(hash_fnv1a(HASH_FNV1A_INIT ^ group, s, strlen(s)));
}

/* Finds or adds (group, name); group is 0 for tables that have none. */
static uint32_t names_slot(name_table_t *t, uint32_t group, const char *name)
{
    if (!name)
        return METRICS_SLOT_NONE;
    uint32_t i = names_hash(group, name) & t->mask;
    for (;; i = (i + 1) & t->mask) {
        uint32_t v = t->index[i];
        if (v == 0)
            break;
        uint32_t slot = v - 1;
        if ((!t->group || t->group[slot] == group) && strcmp(t->names[slot], name) == 0)
            return slot;
    }
    if (t->n == t->cap)
        return METRICS_SLOT_NONE;
    char *copy = strdup(name);
    if (!copy)
        return METRICS_SLOT_NONE;
    uint32_t slot = t->n++;
    t->names[slot] = copy;
    if (t->group)
        t->group[slot] = group;
    t->index[i] = slot + 1;
    return slot;
}

/* ---- set-up ---- */

metrics_registry_t *metrics_registry_new(size_t n_workers, const char *version)
{
    metrics_registry_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->n_workers = n_workers;
    r->version = strdup(version ? version : "unknown");
    r->workers = calloc(n_workers ? n_workers : 1, sizeof *r->workers);
    r->outlier_ejections = calloc(METRICS_MAX_TARGETS, sizeof *r->outlier_ejections);
    r->set_reload_failures = calloc(METRICS_MAX_SETS, sizeof *r->set_reload_failures);
    r->set_members = calloc(METRICS_MAX_SETS, sizeof *r->set_members);
    r->set_success_ms = calloc(METRICS_MAX_SETS, sizeof *r->set_success_ms);
    if (!r->version || !r->workers || !r->outlier_ejections || !r->set_reload_failures ||
        !r->set_members || !r->set_success_ms)
        goto fail_free;
    for (size_t i = 0; i < n_workers; i++) {
        r->workers[i] = calloc(1, sizeof(metrics_worker_t));
        if (!r->workers[i])
            goto fail_free;
    }
    if (names_init(&r->routes, METRICS_MAX_ROUTES, false) != 0 ||
        names_init(&r->groups, METRICS_MAX_GROUPS, false) != 0 ||
        names_init(&r->targets, METRICS_MAX_TARGETS, true) != 0 ||
        names_init(&r->clients, METRICS_MAX_CLIENTS, false) != 0 ||
        names_init(&r->sets, METRICS_MAX_SETS, false) != 0)
        goto fail_free;
    if (names_slot(&r->routes, 0, "-") != METRICS_NO_ROUTE)
        goto fail_free;
    return r;

fail_free:
    metrics_registry_free(r);
    return NULL;
}

/* Workers must have stopped: their lazily allocated stats are freed here. */
void metrics_registry_free(metrics_registry_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->workers && i < r->n_workers; i++) {
        metrics_worker_t *w = r->workers[i];
        if (!w)
            continue;
        for (size_t s = 0; s < METRICS_MAX_ROUTES; s++)
            free(w->routes[s]);
        for (size_t s = 0; s < METRICS_MAX_GROUPS; s++)
            free(w->groups[s]);
        for (size_t s = 0; s < METRICS_MAX_TARGETS; s++)
            free(w->targets[s]);
        free(w);
    }
    names_deinit(&r->routes);
    names_deinit(&r->groups);
    names_deinit(&r->targets);
    names_deinit(&r->clients);
    names_deinit(&r->sets);
    free(r->workers);
    free(r->outlier_ejections);
    free(r->set_reload_failures);
    free(r->set_members);
    free(r->set_success_ms);
    for (size_t i = 0; i < METRICS_MAX_LISTENERS; i++)
        free(r->tls_listeners[i]);
    free(r->version);
    free(r);
}

/* The storage of worker i (0 <= i < n_workers), NULL otherwise. */
metrics_worker_t *metrics_worker_get(metrics_registry_t *r, size_t worker)
{
    return worker < r->n_workers ? r->workers[worker] : NULL;
}

/* Slot of a route name; "-" is METRICS_NO_ROUTE. */
uint32_t metrics_route_slot(metrics_registry_t *r, const char *route)
{
    return names_slot(&r->routes, 0, route);
}

/* Slot of a target group name. */
uint32_t metrics_group_slot(metrics_registry_t *r, const char *group)
{
    return names_slot(&r->groups, 0, group);
}

/* Slot of a target within its group (registers the group too). */
uint32_t metrics_target_slot(metrics_registry_t *r, const char *group, const char *target)
{
    uint32_t g = metrics_group_slot(r, group);
    if (g == METRICS_SLOT_NONE)
        return METRICS_SLOT_NONE;
    return names_slot(&r->targets, g, target);
}

/* Slot of an API client id. */
uint32_t metrics_client_slot(metrics_registry_t *r, const char *client)
{
    return names_slot(&r->clients, 0, client);
}

/* Slot of a set name. */
uint32_t metrics_set_slot(metrics_registry_t *r, const char *set)
{
    return names_slot(&r->sets, 0, set);
}

/* ---- hot path ---- */

/* One request ended with status after duration_us. */
void metrics_request(metrics_worker_t *w, uint32_t route, int status, uint64_t duration_us)
{
    route_stats_t *s = worker_slot(w->routes, route, METRICS_MAX_ROUTES, sizeof *s);
    if (!s)
        return;
    /* A status outside 100..599 has no label; the duration still counts. */
    if (status >= STATUS_MIN && status < STATUS_MIN + STATUS_SPAN)
        bump(&s->codes[status - STATUS_MIN], 1);
    hist_observe(&s->duration, duration_us);
}

void metrics_route_in_flight(metrics_worker_t *w, uint32_t route, int delta)
{
    route_stats_t *s = worker_slot(w->routes, route, METRICS_MAX_ROUTES, sizeof *s);
    if (s)
        bump(&s->in_flight, (uint64_t)(int64_t)delta);
}

void metrics_tunnel(metrics_worker_t *w, uint32_t route, int delta)
{
    route_stats_t *s = worker_slot(w->routes, route, METRICS_MAX_ROUTES, sizeof *s);
    if (s)
        bump(&s->tunnels, (uint64_t)(int64_t)delta);
}

/* One upstream attempt ended with code (status or METRICS_UPSTREAM_*). */
void metrics_upstream(metrics_worker_t *w, uint32_t group, uint32_t target, int code,
                      uint64_t duration_us)
{
    group_stats_t *g = worker_slot(w->groups, group, METRICS_MAX_GROUPS, sizeof *g);
    if (g)
        hist_observe(&g->duration, duration_us);
    int i;
    if (code >= STATUS_MIN && code < STATUS_MIN + STATUS_SPAN)
        i = code - STATUS_MIN;
    else if (code <= METRICS_UPSTREAM_CONNECT_ERROR && code >= METRICS_UPSTREAM_RESET)
        i = STATUS_SPAN + (-code - 1);
    else
        return;
    target_stats_t *t = worker_slot(w->targets, target, METRICS_MAX_TARGETS, sizeof *t);
    if (t)
        bump(&t->codes[i], 1);
}

static void route_group_count(pair_entry_t *t, uint32_t route, uint32_t group)
{
    if (route >= METRICS_MAX_ROUTES || group >= METRICS_MAX_GROUPS)
        return;
    uint64_t *c = pair_counter(t, PAIR_USED | (uint64_t)route << 32 | group);
    if (c)
        bump(c, 1);
}

/* A retry of a request on route, sent to group. */
void metrics_retry(metrics_worker_t *w, uint32_t route, uint32_t group)
{
    route_group_count(w->retries, route, group);
}

/* A try to group failed and the fallback answered the client. */
void metrics_canary_masked(metrics_worker_t *w, uint32_t route, uint32_t group)
{
    route_group_count(w->masked, route, group);
}

void metrics_hedge(metrics_worker_t *w, uint32_t route, metrics_hedge_t result)
{
    if (route >= METRICS_MAX_ROUTES)
        return;
    uint64_t *c = pair_counter(w->hedges, PAIR_USED | (uint64_t)route << 32 | (uint64_t)result);
    if (c)
        bump(c, 1);
}

/* A request on route fell back from one group to another. */
void metrics_fallback(metrics_worker_t *w, uint32_t route, uint32_t from_group, uint32_t to_group)
{
    if (route >= METRICS_MAX_ROUTES || from_group >= METRICS_MAX_GROUPS ||
        to_group >= METRICS_MAX_GROUPS)
        return;
    uint64_t key = PAIR_USED | (uint64_t)route << 32 | (uint64_t)from_group << 16 | to_group;
    uint64_t *c = pair_counter(w->fallbacks, key);
    if (c)
        bump(c, 1);
}

/* A request was refused by group's circuit breaker on limit l. */
void metrics_circuit_breaker_rejection(metrics_worker_t *w, uint32_t group, metrics_limit_t l)
{
    if ((unsigned)l >= N_LIMITS)
        return;
    group_stats_t *g = worker_slot(w->groups, group, METRICS_MAX_GROUPS, sizeof *g);
    if (g)
        bump(&g->cb_rejections[l], 1);
}

/* A request on route was refused by its rate limit. */
void metrics_rate_limited(metrics_worker_t *w, uint32_t route)
{
    route_stats_t *s = worker_slot(w->routes, route, METRICS_MAX_ROUTES, sizeof *s);
    if (s)
        bump(&s->rate_limited, 1);
}

/* A request of client was refused by its concurrency throttle. */
void metrics_throttled(metrics_worker_t *w, uint32_t client)
{
    if (client < METRICS_MAX_CLIENTS)
        bump(&w->throttled[client], 1);
}

/* +1 when this worker accepts a downstream connection, -1 when it closes. */
void metrics_downstream_connection(metrics_worker_t *w, int delta)
{
    bump(&w->connections, (uint64_t)(int64_t)delta);
}

/* A downstream connection was shed (limit or descriptor exhaustion). */
void metrics_downstream_rejected(metrics_worker_t *w) { bump(&w->connections_rejected, 1); }

/* ---- process-wide events ---- */

/* Outlier detection ejected target. */
void metrics_outlier_ejection(metrics_registry_t *r, uint32_t group, uint32_t target)
{
    (void)group; /* the target slot already names its group */
    if (target < METRICS_MAX_TARGETS)
        bump_shared(&r->outlier_ejections[target], 1);
}

/* A configuration load ended. The first success is the start-up load: it
 * sets the timestamp but is not a reload, so reloads_total starts at 0. */
void metrics_config_reload(metrics_registry_t *r, bool success, uint64_t realtime_ms)
{
    __atomic_store_n(&r->last_reload_ok, success ? 1 : 0, __ATOMIC_RELAXED);
    if (!success) {
        bump_shared(&r->reloads_failed, 1);
        return;
    }
    __atomic_store_n(&r->last_reload_ok_ms, realtime_ms, __ATOMIC_RELAXED);
    if (__atomic_exchange_n(&r->initial_load_seen, 1, __ATOMIC_ACQ_REL))
        bump_shared(&r->reloads_ok, 1);
}

void metrics_config_reverted(metrics_registry_t *r)
{
    /* The file on disk does not serve: as after a failure, until a load
     * succeeds. */
    __atomic_store_n(&r->last_reload_ok, 0, __ATOMIC_RELAXED);
    bump_shared(&r->reloads_reverted, 1);
}

void metrics_config_canary(metrics_registry_t *r, bool on)
{
    __atomic_store_n(&r->config_canary, on ? 1 : 0, __ATOMIC_RELAXED);
}

/* Re-reading set failed (the previous members stay). */
void metrics_set_reload_failure(metrics_registry_t *r, uint32_t set)
{
    if (set < METRICS_MAX_SETS)
        bump_shared(&r->set_reload_failures[set], 1);
}

void metrics_set_loaded(metrics_registry_t *r, uint32_t set, uint64_t members, uint64_t at_ms)
{
    if (set >= METRICS_MAX_SETS)
        return;
    __atomic_store_n(&r->set_members[set], members, __ATOMIC_RELAXED);
    __atomic_store_n(&r->set_success_ms[set], at_ms, __ATOMIC_RELAXED);
}

/* A redis command failed or redis was unreachable. */
void metrics_redis_error(metrics_registry_t *r) { bump_shared(&r->redis_errors, 1); }

void metrics_tls_listener(metrics_registry_t *r, size_t listener, const char *name)
{
    if (listener < METRICS_MAX_LISTENERS && !r->tls_listeners[listener])
        r->tls_listeners[listener] = strdup(name);
}

void metrics_tls_results(metrics_registry_t *r, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n && i < METRICS_TLS_RESULTS; i++)
        r->tls_results[i] = names[i];
}

void metrics_tls_handshake(metrics_worker_t *w, size_t listener, unsigned result)
{
    if (listener < METRICS_MAX_LISTENERS && result < METRICS_TLS_RESULTS)
        bump(&w->tls_handshakes[listener][result], 1);
}

void metrics_http2_reasons(metrics_registry_t *r, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n && i < METRICS_H2_REASONS; i++)
        r->http2_reasons[i] = names[i];
}

void metrics_http2_error(metrics_worker_t *w, unsigned reason)
{
    if (reason < METRICS_H2_REASONS)
        bump(&w->http2_errors[reason], 1);
}

void metrics_tls_certs_clear(metrics_registry_t *r) { r->n_tls_certs = 0; }

void metrics_tls_cert(metrics_registry_t *r, size_t listener, const char *name, int64_t not_after)
{
    if (r->n_tls_certs == METRICS_MAX_TLS_CERTS)
        return;
    tls_cert_gauge_t *g = &r->tls_certs[r->n_tls_certs++];
    g->listener = listener;
    snprintf(g->name, sizeof g->name, "%s", name);
    g->not_after = not_after;
}

void metrics_aggregate_cache(metrics_registry_t *r, metrics_agg_result_t res)
{
    if (res < METRICS_AGG_RESULTS)
        bump_shared(&r->agg_cache[res], 1);
}

/* n spans were dropped before export. */
void metrics_trace_dropped(metrics_registry_t *r, uint64_t n) { bump_shared(&r->trace_dropped, n); }

/* A span export batch failed. */
void metrics_trace_export_failure(metrics_registry_t *r)
{
    bump_shared(&r->trace_export_failures, 1);
}

/* Authentication on route failed for reason (a short code). */
void metrics_auth_failure(metrics_registry_t *r, uint32_t route, const char *reason)
{
    if (route >= METRICS_MAX_ROUTES)
        return;
    int ri = reason_index(r, reason);
    if (ri < 0)
        return;
    uint64_t *c =
        shared_pair_counter(r->auth_failures, PAIR_USED | (uint64_t)route << 32 | (uint64_t)ri);
    if (c)
        bump_shared(c, 1);
}

/* A session exchange failed for reason (a short code). */
void metrics_session_exchange_failure(metrics_registry_t *r, const char *reason)
{
    int ri = reason_index(r, reason);
    if (ri >= 0)
        bump_shared(&r->session_failures[ri], 1);
}

/* ---- rendering (text exposition 0.0.4) ---- */

typedef struct render {
    metrics_registry_t *r;
    buf_t *out;
    int rc; /* the first error; later appends are skipped */
} render_t;

typedef struct label {
    const char *name;
    const char *value;
} label_t;

static void put(render_t *rt, const char *s, size_t n)
{
    if (rt->rc == 0)
        rt->rc = buf_append(rt->out, s, n);
}

static void put_str(render_t *rt, const char *s) { put(rt, s, strlen(s)); }

static void put_u64(render_t *rt, uint64_t v)
{
    char tmp[20];
    put(rt, tmp, fmt_u64(tmp, v));
}

static void put_i64(render_t *rt, int64_t v)
{
    if (v < 0) {
        put(rt, "-", 1);
        put_u64(rt, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(rt, (uint64_t)v);
    }
}

/* An integer count of a smaller unit as a decimal of the larger one, exactly
 * (no float rounding): 1234567 us with digits=6 is "1.234567". */
static void put_fixed(render_t *rt, uint64_t v, unsigned digits)
{
    uint64_t scale = 1;
    for (unsigned i = 0; i < digits; i++)
        scale *= 10;
    put_u64(rt, v / scale);
    char frac[20];
    uint64_t f = v % scale;
    for (unsigned i = digits; i > 0; i--) {
        frac[i - 1] = (char)('0' + f % 10);
        f /= 10;
    }
    put(rt, ".", 1);
    put(rt, frac, digits);
}

/* Label values are escaped as the exposition format requires. */
static void put_label_value(render_t *rt, const char *v)
{
    const char *run = v;
    for (; *v; v++) {
        const char *esc = *v == '\\' ? "\\\\" : *v == '"' ? "\\\"" : *v == '\n' ? "\\n" : NULL;
        if (!esc)
            continue;
        put(rt, run, (size_t)(v - run));
        put(rt, esc, 2);
        run = v + 1;
    }
    put(rt, run, (size_t)(v - run));
}

static void family(render_t *rt, const char *name, const char *type, const char *help)
{
    put_str(rt, "# HELP ");
    put_str(rt, name);
    put(rt, " ", 1);
    put_str(rt, help);
    put_str(rt, "\n# TYPE ");
    put_str(rt, name);
    put(rt, " ", 1);
    put_str(rt, type);
    put(rt, "\n", 1);
}

/* Writes "name_suffix{l="v",...} " ready for the value. */
static void sample_start(render_t *rt, const char *name, const char *suffix, const label_t *l,
                         size_t n)
{
    put_str(rt, name);
    if (suffix)
        put_str(rt, suffix);
    if (n) {
        put(rt, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                put(rt, ",", 1);
            put_str(rt, l[i].name);
            put(rt, "=\"", 2);
            put_label_value(rt, l[i].value);
            put(rt, "\"", 1);
        }
        put(rt, "}", 1);
    }
    put(rt, " ", 1);
}

static void sample_u64(render_t *rt, const char *name, const label_t *l, size_t n, uint64_t v)
{
    sample_start(rt, name, NULL, l, n);
    put_u64(rt, v);
    put(rt, "\n", 1);
}

#define MAX_LABELS 4

/* _bucket (cumulative), _sum in seconds and _count; _count is the +Inf
 * bucket so the two always agree even while workers keep writing. */
static void sample_hist(render_t *rt, const char *name, const label_t *l, size_t n, const hist_t *h)
{
    label_t ll[MAX_LABELS];
    memcpy(ll, l, n * sizeof *l);
    ll[n].name = "le";
    uint64_t cum = 0;
    for (size_t i = 0; i <= N_BUCKETS; i++) {
        cum += h->buckets[i];
        ll[n].value = i < N_BUCKETS ? bucket_le[i] : "+Inf";
        sample_start(rt, name, "_bucket", ll, n + 1);
        put_u64(rt, cum);
        put(rt, "\n", 1);
    }
    sample_start(rt, name, "_sum", l, n);
    put_fixed(rt, h->sum_us, 6);
    put(rt, "\n", 1);
    sample_start(rt, name, "_count", l, n);
    put_u64(rt, cum);
    put(rt, "\n", 1);
}

static void hist_add(hist_t *sum, const hist_t *h)
{
    for (size_t i = 0; i <= N_BUCKETS; i++)
        sum->buckets[i] += load_u64(&h->buckets[i]);
    sum->sum_us += load_u64(&h->sum_us);
}

static void render_requests(render_t *rt)
{
    metrics_registry_t *r = rt->r;
    family(rt, "ficus_requests_total", "counter", "Requests answered, by route and status code.");
    for (uint32_t slot = 0; slot < r->routes.n; slot++) {
        uint64_t codes[STATUS_SPAN] = {0};
        bool seen = false;
        for (size_t wi = 0; wi < r->n_workers; wi++) {
            const route_stats_t *s = peek_slot(r->workers[wi]->routes, slot);
            if (!s)
                continue;
            seen = true;
            for (size_t c = 0; c < STATUS_SPAN; c++)
                codes[c] += load_u64(&s->codes[c]);
        }
        for (size_t c = 0; seen && c < STATUS_SPAN; c++) {
            if (!codes[c])
                continue;
            char code[8];
            code[fmt_u64(code, STATUS_MIN + c)] = '\0';
            label_t l[] = {{"route", r->routes.names[slot]}, {"code", code}};
            sample_u64(rt, "ficus_requests_total", l, 2, codes[c]);
        }
    }

    family(rt, "ficus_request_duration_seconds", "histogram",
           "Time from the request's first byte to the end of its response, by route.");
    for (uint32_t slot = 0; slot < r->routes.n; slot++) {
        hist_t h = {{0}, 0};
        bool seen = false;
        for (size_t wi = 0; wi < r->n_workers; wi++) {
            const route_stats_t *s = peek_slot(r->workers[wi]->routes, slot);
            if (s) {
                seen = true;
                hist_add(&h, &s->duration);
            }
        }
        label_t l[] = {{"route", r->routes.names[slot]}};
        if (seen)
            sample_hist(rt, "ficus_request_duration_seconds", l, 1, &h);
    }

    static const struct {
        const char *name, *help;
        size_t off;
    } gauges[] = {
        {"ficus_requests_in_flight", "Requests being served, by route.",
         offsetof(route_stats_t, in_flight)},
        {"ficus_tunnels", "Open tunnels (WebSocket and other upgrades), by route.",
         offsetof(route_stats_t, tunnels)},
    };
    for (size_t gi = 0; gi < sizeof gauges / sizeof gauges[0]; gi++) {
        family(rt, gauges[gi].name, "gauge", gauges[gi].help);
        for (uint32_t slot = 0; slot < r->routes.n; slot++) {
            uint64_t sum = 0; /* wraps back to the true signed sum */
            bool seen = false;
            for (size_t wi = 0; wi < r->n_workers; wi++) {
                const route_stats_t *s = peek_slot(r->workers[wi]->routes, slot);
                if (s) {
                    seen = true;
                    sum += load_u64((const uint64_t *)((const char *)s + gauges[gi].off));
                }
            }
            if (!seen)
                continue;
            label_t l[] = {{"route", r->routes.names[slot]}};
            sample_start(rt, gauges[gi].name, NULL, l, 1);
            put_i64(rt, (int64_t)sum);
            put(rt, "\n", 1);
        }
    }
}

const char *metrics_upstream_failure_name(int code)
{
    static const char *const names[] = {"connect_error", "timeout", "reset"};
    return code < 0 && code >= METRICS_UPSTREAM_RESET ? names[-code - 1] : NULL;
}

static const char *upstream_code_name(size_t i, char *buf)
{
    if (i >= STATUS_SPAN)
        return metrics_upstream_failure_name(-(int)(i - STATUS_SPAN) - 1);
    buf[fmt_u64(buf, STATUS_MIN + i)] = '\0';
    return buf;
}

static void render_upstream(render_t *rt)
{
    metrics_registry_t *r = rt->r;
    family(rt, "ficus_upstream_requests_total", "counter",
           "Upstream attempts, by target and status code or failure.");
    for (uint32_t slot = 0; slot < r->targets.n; slot++) {
        uint64_t codes[UPSTREAM_CODES] = {0};
        for (size_t wi = 0; wi < r->n_workers; wi++) {
            const target_stats_t *t = peek_slot(r->workers[wi]->targets, slot);
            for (size_t c = 0; t && c < UPSTREAM_CODES; c++)
                codes[c] += load_u64(&t->codes[c]);
        }
        for (size_t c = 0; c < UPSTREAM_CODES; c++) {
            if (!codes[c])
                continue;
            char buf[8];
            label_t l[] = {{"target_group", r->groups.names[r->targets.group[slot]]},
                           {"target", r->targets.names[slot]},
                           {"code", upstream_code_name(c, buf)}};
            sample_u64(rt, "ficus_upstream_requests_total", l, 3, codes[c]);
        }
    }

    family(rt, "ficus_upstream_duration_seconds", "histogram",
           "Duration of upstream attempts, by target group.");
    for (uint32_t slot = 0; slot < r->groups.n; slot++) {
        hist_t h = {{0}, 0};
        uint64_t n = 0;
        for (size_t wi = 0; wi < r->n_workers; wi++) {
            const group_stats_t *g = peek_slot(r->workers[wi]->groups, slot);
            if (g)
                hist_add(&h, &g->duration);
        }
        for (size_t i = 0; i <= N_BUCKETS; i++)
            n += h.buckets[i];
        label_t l[] = {{"target_group", r->groups.names[slot]}};
        if (n)
            sample_hist(rt, "ficus_upstream_duration_seconds", l, 1, &h);
    }
}

static int pair_cmp(const void *a, const void *b)
{
    uint64_t x = ((const pair_entry_t *)a)->key, y = ((const pair_entry_t *)b)->key;
    return x < y ? -1 : x > y;
}

/* Collects one pair table (at byte offset off in each worker) from every
 * worker, summed per key and sorted. *n_out entries; NULL when empty. */
static pair_entry_t *collect_pairs(render_t *rt, size_t off, size_t *n_out)
{
    metrics_registry_t *r = rt->r;
    size_t n = 0;
    *n_out = 0;
    for (size_t wi = 0; wi < r->n_workers; wi++) {
        const pair_entry_t *t = (const pair_entry_t *)((const char *)r->workers[wi] + off);
        for (size_t i = 0; i < METRICS_PAIR_SLOTS; i++)
            n += __atomic_load_n(&t[i].key, __ATOMIC_ACQUIRE) != 0;
    }
    if (n == 0)
        return NULL;
    pair_entry_t *all = malloc(n * sizeof *all);
    if (!all) {
        rt->rc = FE_NOMEM;
        return NULL;
    }
    size_t k = 0;
    for (size_t wi = 0; wi < r->n_workers; wi++) {
        const pair_entry_t *t = (const pair_entry_t *)((const char *)r->workers[wi] + off);
        for (size_t i = 0; i < METRICS_PAIR_SLOTS && k < n; i++) {
            uint64_t key = __atomic_load_n(&t[i].key, __ATOMIC_ACQUIRE);
            if (key) {
                all[k].key = key;
                all[k].count = load_u64(&t[i].count);
                k++;
            }
        }
    }
    qsort(all, k, sizeof *all, pair_cmp);
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m && all[m - 1].key == all[i].key)
            all[m - 1].count += all[i].count;
        else
            all[m++] = all[i];
    }
    *n_out = m;
    return all;
}

static const char *route_name(const metrics_registry_t *r, uint64_t slot)
{
    return slot < r->routes.n ? r->routes.names[slot] : "?";
}

static const char *group_name(const metrics_registry_t *r, uint64_t slot)
{
    return slot < r->groups.n ? r->groups.names[slot] : "?";
}

static void render_retries_fallbacks(render_t *rt)
{
    metrics_registry_t *r = rt->r;
    size_t n;
    family(rt, "ficus_retries_total", "counter", "Retries, by route and the group retried.");
    pair_entry_t *p = collect_pairs(rt, offsetof(metrics_worker_t, retries), &n);
    for (size_t i = 0; i < n; i++) {
        label_t l[] = {{"route", route_name(r, (p[i].key >> 32) & 0xffff)},
                       {"target_group", group_name(r, p[i].key & 0xffff)}};
        sample_u64(rt, "ficus_retries_total", l, 2, p[i].count);
    }
    free(p);

    family(rt, "ficus_fallbacks_total", "counter",
           "Requests re-sent to a fallback group, by route, failed group and fallback group.");
    p = collect_pairs(rt, offsetof(metrics_worker_t, fallbacks), &n);
    for (size_t i = 0; i < n; i++) {
        label_t l[] = {{"route", route_name(r, (p[i].key >> 32) & 0xffff)},
                       {"from", group_name(r, (p[i].key >> 16) & 0xffff)},
                       {"to", group_name(r, p[i].key & 0xffff)}};
        sample_u64(rt, "ficus_fallbacks_total", l, 3, p[i].count);
    }
    free(p);

    family(rt, "ficus_canary_masked_failures_total", "counter",
           "Tries that failed while the fallback answered the client, by route and failed group.");
    p = collect_pairs(rt, offsetof(metrics_worker_t, masked), &n);
    for (size_t i = 0; i < n; i++) {
        label_t l[] = {{"route", route_name(r, (p[i].key >> 32) & 0xffff)},
                       {"target_group", group_name(r, p[i].key & 0xffff)}};
        sample_u64(rt, "ficus_canary_masked_failures_total", l, 2, p[i].count);
    }
    free(p);

    static const char *const hedge_results[] = {"won", "lost", "capped"};
    family(rt, "ficus_hedges_total", "counter",
           "Hedged tries by route: the hedge answered (won), the first try did (lost), or the "
           "cap refused one (capped).");
    p = collect_pairs(rt, offsetof(metrics_worker_t, hedges), &n);
    for (size_t i = 0; i < n; i++) {
        uint64_t res = p[i].key & 0xffff;
        label_t l[] = {{"route", route_name(r, (p[i].key >> 32) & 0xffff)},
                       {"result", res < 3 ? hedge_results[res] : "other"}};
        sample_u64(rt, "ficus_hedges_total", l, 2, p[i].count);
    }
    free(p);
}

static void render_groups(render_t *rt)
{
    static const char *const limits[N_LIMITS] = {"max_connections", "max_pending", "max_requests"};
    metrics_registry_t *r = rt->r;
    family(rt, "ficus_circuit_breaker_rejections_total", "counter",
           "Requests failed fast by a group's circuit breaker, by limit.");
    for (uint32_t slot = 0; slot < r->groups.n; slot++) {
        uint64_t c[N_LIMITS] = {0};
        for (size_t wi = 0; wi < r->n_workers; wi++) {
            const group_stats_t *g = peek_slot(r->workers[wi]->groups, slot);
            for (size_t i = 0; g && i < N_LIMITS; i++)
                c[i] += load_u64(&g->cb_rejections[i]);
        }
        for (size_t i = 0; i < N_LIMITS; i++) {
            label_t l[] = {{"target_group", r->groups.names[slot]}, {"limit", limits[i]}};
            if (c[i])
                sample_u64(rt, "ficus_circuit_breaker_rejections_total", l, 2, c[i]);
        }
    }

    family(rt, "ficus_outlier_ejections_total", "counter", "Targets ejected by outlier detection.");
    for (uint32_t slot = 0; slot < r->targets.n; slot++) {
        uint64_t v = load_u64(&r->outlier_ejections[slot]);
        label_t l[] = {{"target_group", r->groups.names[r->targets.group[slot]]},
                       {"target", r->targets.names[slot]}};
        if (v)
            sample_u64(rt, "ficus_outlier_ejections_total", l, 2, v);
    }
}

static void emit_health(void *ctx, const char *group, const char *target, int healthy, int ejected)
{
    (void)ejected;
    label_t l[] = {{"target_group", group ? group : ""}, {"target", target ? target : ""}};
    sample_u64(ctx, "ficus_target_healthy", l, 2, healthy ? 1 : 0);
}

static void emit_ejected(void *ctx, const char *group, const char *target, int healthy, int ejected)
{
    (void)healthy;
    label_t l[] = {{"target_group", group ? group : ""}, {"target", target ? target : ""}};
    sample_u64(ctx, "ficus_target_ejected", l, 2, ejected ? 1 : 0);
}

static void emit_panic(void *ctx, const char *group, int panic)
{
    label_t l[] = {{"target_group", group ? group : ""}};
    sample_u64(ctx, "ficus_panic_mode", l, 1, panic ? 1 : 0);
}

static void emit_weight(void *ctx, const char *route, const char *group, uint32_t weight)
{
    label_t l[] = {{"route", route ? route : ""}, {"target_group", group ? group : ""}};
    sample_u64(ctx, "ficus_backend_weight", l, 2, weight);
}

static void render_gauges(render_t *rt, const metrics_gauges_t *g)
{
    family(rt, "ficus_target_healthy", "gauge", "1 while a target is healthy, else 0.");
    if (g && g->each_target_health)
        g->each_target_health(g->ctx, emit_health, rt);
    family(rt, "ficus_target_ejected", "gauge", "1 while outlier detection ejects a target.");
    if (g && g->each_target_health)
        g->each_target_health(g->ctx, emit_ejected, rt);
    family(rt, "ficus_panic_mode", "gauge",
           "1 while a target group has too few healthy targets and ignores health.");
    if (g && g->each_group_panic)
        g->each_group_panic(g->ctx, emit_panic, rt);
    family(rt, "ficus_backend_weight", "gauge", "Current weight of each backend of each route.");
    if (g && g->each_backend_weight)
        g->each_backend_weight(g->ctx, emit_weight, rt);
}

static void render_limits(render_t *rt)
{
    metrics_registry_t *r = rt->r;
    family(rt, "ficus_rate_limited_total", "counter", "Requests refused by a route's rate limit.");
    for (uint32_t slot = 0; slot < r->routes.n; slot++) {
        uint64_t v = 0;
        for (size_t wi = 0; wi < r->n_workers; wi++) {
            const route_stats_t *s = peek_slot(r->workers[wi]->routes, slot);
            if (s)
                v += load_u64(&s->rate_limited);
        }
        label_t l[] = {{"route", r->routes.names[slot]}};
        if (v)
            sample_u64(rt, "ficus_rate_limited_total", l, 1, v);
    }

    /* Reasons interned twice in a race count as one: map each to its first. */
    int canon[METRICS_MAX_REASONS];
    for (int i = 0; i < METRICS_MAX_REASONS; i++) {
        canon[i] = -1;
        if (__atomic_load_n(&r->reasons[i].state, __ATOMIC_ACQUIRE) != REASON_READY)
            continue;
        canon[i] = i;
        for (int j = 0; j < i; j++) {
            if (canon[j] == j && strcmp(r->reasons[j].name, r->reasons[i].name) == 0) {
                canon[i] = j;
                break;
            }
        }
    }

    family(rt, "ficus_auth_failures_total", "counter",
           "Requests refused by authentication, by route and reason.");
    size_t n = 0;
    pair_entry_t *p = malloc(METRICS_PAIR_SLOTS * sizeof *p);
    if (!p) {
        rt->rc = FE_NOMEM;
        return;
    }
    for (size_t i = 0; i < METRICS_PAIR_SLOTS; i++) {
        uint64_t key = __atomic_load_n(&r->auth_failures[i].key, __ATOMIC_ACQUIRE);
        if (!key || canon[key & 0xffff] < 0)
            continue;
        p[n].key = (key & ~UINT64_C(0xffff)) | (uint64_t)canon[key & 0xffff];
        p[n].count = load_u64(&r->auth_failures[i].count);
        n++;
    }
    qsort(p, n, sizeof *p, pair_cmp);
    for (size_t i = 0; i < n; i++) {
        uint64_t v = p[i].count;
        while (i + 1 < n && p[i + 1].key == p[i].key)
            v += p[++i].count;
        label_t l[] = {{"route", route_name(r, (p[i].key >> 32) & 0xffff)},
                       {"reason", r->reasons[p[i].key & 0xffff].name}};
        sample_u64(rt, "ficus_auth_failures_total", l, 2, v);
    }
    free(p);

    family(rt, "ficus_throttled_total", "counter",
           "Requests refused by a client's concurrency throttle.");
    for (uint32_t slot = 0; slot < r->clients.n; slot++) {
        uint64_t v = 0;
        for (size_t wi = 0; wi < r->n_workers; wi++)
            v += load_u64(&r->workers[wi]->throttled[slot]);
        label_t l[] = {{"client", r->clients.names[slot]}};
        if (v)
            sample_u64(rt, "ficus_throttled_total", l, 1, v);
    }

    family(rt, "ficus_session_exchange_failures_total", "counter",
           "Session exchanges that failed, by reason.");
    for (int i = 0; i < METRICS_MAX_REASONS; i++) {
        if (canon[i] != i)
            continue;
        uint64_t v = 0;
        for (int j = i; j < METRICS_MAX_REASONS; j++)
            if (canon[j] == i)
                v += load_u64(&r->session_failures[j]);
        label_t l[] = {{"reason", r->reasons[i].name}};
        if (v)
            sample_u64(rt, "ficus_session_exchange_failures_total", l, 1, v);
    }
}

/* The Prometheus client conventions' process_* family, from /proc/self. */
static void render_os_process(render_t *rt)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    double cpu = 0, start = 0, rss = 0;
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces): from ")". */
    const char *p = strrchr(buf, ')');
    unsigned long long utime = 0, stime = 0, starttime = 0;
    long rss_pages = 0;
    if (p &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
               "%*d %llu %*u %ld",
               &utime, &stime, &starttime, &rss_pages) == 4 &&
        tick > 0) {
        cpu = (double)(utime + stime) / (double)tick;
        rss = (double)rss_pages * (double)page;
        unsigned long long btime = 0;
        FILE *st = fopen("/proc/stat", "r");
        char line[256];
        while (st && fgets(line, sizeof line, st))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        if (st)
            fclose(st);
        start = (double)btime + (double)starttime / (double)tick;
    }
    size_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        fds += e->d_name[0] != '.';
    if (d) {
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    char num[64];
    family(rt, "process_cpu_seconds_total", "counter", "User and system CPU time, in seconds.");
    snprintf(num, sizeof num, "process_cpu_seconds_total %.2f\n", cpu);
    put(rt, num, strlen(num));
    family(rt, "process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.");
    snprintf(num, sizeof num, "process_resident_memory_bytes %.0f\n", rss);
    put(rt, num, strlen(num));
    family(rt, "process_open_fds", "gauge", "Open file descriptors.");
    sample_u64(rt, "process_open_fds", NULL, 0, fds);
    family(rt, "process_max_fds", "gauge", "The open-file limit.");
    sample_u64(rt, "process_max_fds", NULL, 0, (uint64_t)rl.rlim_cur);
    family(rt, "process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch, in seconds.");
    snprintf(num, sizeof num, "process_start_time_seconds %.2f\n", start);
    put(rt, num, strlen(num));
}

static void render_process(render_t *rt)
{
    metrics_registry_t *r = rt->r;
    uint64_t conns = 0; /* wraps back to the true signed sum */
    uint64_t rejected = 0;
    for (size_t wi = 0; wi < r->n_workers; wi++) {
        conns += load_u64(&r->workers[wi]->connections);
        rejected += load_u64(&r->workers[wi]->connections_rejected);
    }
    family(rt, "ficus_downstream_connections", "gauge", "Open downstream connections.");
    sample_start(rt, "ficus_downstream_connections", NULL, NULL, 0);
    put_i64(rt, (int64_t)conns);
    put(rt, "\n", 1);
    family(rt, "ficus_downstream_connections_rejected_total", "counter",
           "Downstream connections shed (connection limit or descriptor exhaustion).");
    sample_u64(rt, "ficus_downstream_connections_rejected_total", NULL, 0, rejected);

    family(rt, "ficus_tls_handshakes_total", "counter",
           "TLS handshakes on a listener, by result (ok, resumed, or the failure).");
    for (size_t l = 0; l < METRICS_MAX_LISTENERS; l++) {
        if (!r->tls_listeners[l])
            continue;
        for (size_t k = 0; k < METRICS_TLS_RESULTS; k++) {
            uint64_t n = 0;
            for (size_t wi = 0; wi < r->n_workers; wi++)
                n += load_u64(&r->workers[wi]->tls_handshakes[l][k]);
            label_t lb[] = {{"listener", r->tls_listeners[l]}, {"result", r->tls_results[k]}};
            if (n && r->tls_results[k])
                sample_u64(rt, "ficus_tls_handshakes_total", lb, 2, n);
        }
    }
    family(rt, "ficus_http2_protocol_errors_total", "counter",
           "Downstream HTTP/2 connections or streams ended for breaking the protocol or abusing "
           "it, by reason.");
    for (size_t k = 0; k < METRICS_H2_REASONS; k++) {
        if (!r->http2_reasons[k])
            continue;
        uint64_t n = 0;
        for (size_t wi = 0; wi < r->n_workers; wi++)
            n += load_u64(&r->workers[wi]->http2_errors[k]);
        label_t lb[] = {{"reason", r->http2_reasons[k]}};
        sample_u64(rt, "ficus_http2_protocol_errors_total", lb, 1, n);
    }
    family(rt, "ficus_tls_certificate_expiry_timestamp_seconds", "gauge",
           "When a listener's certificate expires (seconds since the epoch).");
    for (size_t i = 0; i < r->n_tls_certs; i++) {
        const tls_cert_gauge_t *g = &r->tls_certs[i];
        const char *ln = g->listener < METRICS_MAX_LISTENERS ? r->tls_listeners[g->listener] : NULL;
        label_t lb[] = {{"listener", ln ? ln : ""}, {"name", g->name}};
        sample_start(rt, "ficus_tls_certificate_expiry_timestamp_seconds", NULL, lb, 2);
        put_i64(rt, g->not_after);
        put(rt, "\n", 1);
    }

    family(rt, "ficus_config_reloads_total", "counter",
           "Configuration reloads, by result (the start-up load is not counted).");
    label_t ok[] = {{"result", "success"}}, bad[] = {{"result", "failure"}},
            reverted[] = {{"result", "reverted"}};
    sample_u64(rt, "ficus_config_reloads_total", ok, 1, load_u64(&r->reloads_ok));
    sample_u64(rt, "ficus_config_reloads_total", bad, 1, load_u64(&r->reloads_failed));
    sample_u64(rt, "ficus_config_reloads_total", reverted, 1, load_u64(&r->reloads_reverted));
    family(rt, "ficus_config_canary", "gauge",
           "1 while a new configuration serves a share of the requests on trial (reload block).");
    sample_u64(rt, "ficus_config_canary", NULL, 0, load_u64(&r->config_canary));
    family(rt, "ficus_config_last_reload_success_timestamp_seconds", "gauge",
           "Unix time of the last successful configuration load.");
    sample_start(rt, "ficus_config_last_reload_success_timestamp_seconds", NULL, NULL, 0);
    put_fixed(rt, load_u64(&r->last_reload_ok_ms), 3);
    put(rt, "\n", 1);
    family(rt, "ficus_config_last_reload_successful", "gauge",
           "1 when the last configuration load (start or reload) succeeded, 0 after a failure.");
    sample_u64(rt, "ficus_config_last_reload_successful", NULL, 0, load_u64(&r->last_reload_ok));
    render_os_process(rt);

    family(rt, "ficus_build_info", "gauge", "Always 1; the version is a label.");
    label_t v[] = {{"version", r->version}};
    sample_u64(rt, "ficus_build_info", v, 1, 1);

    family(rt, "ficus_set_reload_failures_total", "counter",
           "Failed re-reads of a set (the previous members were kept).");
    for (uint32_t slot = 0; slot < r->sets.n; slot++) {
        uint64_t n = load_u64(&r->set_reload_failures[slot]);
        label_t l[] = {{"set", r->sets.names[slot]}};
        if (n)
            sample_u64(rt, "ficus_set_reload_failures_total", l, 1, n);
    }

    family(rt, "ficus_set_members", "gauge", "Members of a set at its last successful read.");
    for (uint32_t slot = 0; slot < r->sets.n; slot++) {
        label_t l[] = {{"set", r->sets.names[slot]}};
        if (load_u64(&r->set_success_ms[slot]))
            sample_u64(rt, "ficus_set_members", l, 1, load_u64(&r->set_members[slot]));
    }
    family(rt, "ficus_set_last_success_timestamp_seconds", "gauge",
           "When a set was last read successfully (seconds since the epoch).");
    for (uint32_t slot = 0; slot < r->sets.n; slot++) {
        label_t l[] = {{"set", r->sets.names[slot]}};
        uint64_t ms = load_u64(&r->set_success_ms[slot]);
        if (!ms)
            continue;
        sample_start(rt, "ficus_set_last_success_timestamp_seconds", NULL, l, 1);
        put_fixed(rt, ms, 3);
        put(rt, "\n", 1);
    }

    family(rt, "ficus_redis_errors_total", "counter", "Failed or unreachable redis commands.");
    sample_u64(rt, "ficus_redis_errors_total", NULL, 0, load_u64(&r->redis_errors));
    family(rt, "ficus_aggregate_cache_lookups_total", "counter",
           "Aggregation calls with cache_ttl, by what the cache did.");
    static const char *const agg_results[METRICS_AGG_RESULTS] = {"hit", "miss", "shared",
                                                                 "redis_unavailable"};
    for (size_t i = 0; i < METRICS_AGG_RESULTS; i++) {
        label_t l[] = {{"result", agg_results[i]}};
        uint64_t n = load_u64(&r->agg_cache[i]);
        if (n)
            sample_u64(rt, "ficus_aggregate_cache_lookups_total", l, 1, n);
    }
    family(rt, "ficus_trace_spans_dropped_total", "counter", "Spans dropped before export.");
    sample_u64(rt, "ficus_trace_spans_dropped_total", NULL, 0, load_u64(&r->trace_dropped));
    family(rt, "ficus_trace_export_failures_total", "counter", "Failed span export batches.");
    sample_u64(rt, "ficus_trace_export_failures_total", NULL, 0,
               load_u64(&r->trace_export_failures));
}

/* Appends every family of the contract; a labelled series appears once it
 * is non-zero. 0, or the buffer's FE_NOMEM / FE_TOOBIG. */
int metrics_render(metrics_registry_t *r, const metrics_gauges_t *g, buf_t *out)
{
    render_t rt = {r, out, 0};
    render_requests(&rt);
    render_upstream(&rt);
    render_retries_fallbacks(&rt);
    render_groups(&rt);
    render_gauges(&rt, g);
    render_limits(&rt);
    render_process(&rt);
    return rt.rc;
}
