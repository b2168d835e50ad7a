/* The migration board's figures; see board.h. */
#include "observe/board.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define BOARD_NAME_BYTES 128
#define BOARD_LAT_BASE_US 250u

typedef struct cell {
    _Atomic uint64_t requests, errors, fallbacks, masked;
    _Atomic uint64_t lat[BOARD_LAT_SLOTS];
} cell_t;

/* One worker's buckets of one route: written by that worker only. */
typedef struct shard {
    _Atomic int64_t number[BOARD_BUCKETS]; /* bucket number held (now / width), -1: none */
    cell_t cells[BOARD_BUCKETS][BOARD_MAX_GROUPS];
    _Atomic uint64_t shadow_match[BOARD_BUCKETS];
    _Atomic uint64_t shadow_total[BOARD_BUCKETS];
} shard_t;

struct board_route {
    char name[BOARD_NAME_BYTES];
    uint64_t seen_ms; /* first seen */
    uint32_t n_groups;
    char groups[BOARD_MAX_GROUPS][BOARD_NAME_BYTES];
    uint8_t roles[BOARD_MAX_GROUPS];
    size_t n_workers;
    shard_t **shards; /* per worker, each its own cache lines */
};

struct board {
    size_t n_workers;
    size_t n_routes;
    board_route_t *routes[BOARD_MAX_ROUTES];
};

static inline uint64_t ld(const _Atomic uint64_t *x)
{
    return atomic_load_explicit(x, memory_order_relaxed);
}

/* One writer per shard: a relaxed load and store, no locked instruction. */
static inline void bump(_Atomic uint64_t *x)
{
    atomic_store_explicit(x, ld(x) + 1, memory_order_relaxed);
}

board_t *board_new(size_t n_workers, uint64_t now_ms)
{
    (void)now_ms;
    board_t *b = calloc(1, sizeof *b);
    if (b)
        b->n_workers = n_workers ? n_workers : 1;
    return b;
}

static void route_free(board_route_t *br)
{
    for (size_t w = 0; br->shards && w < br->n_workers; w++)
        free(br->shards[w]);
    free(br->shards);
    free(br);
}

void board_free(board_t *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_routes; i++)
        route_free(b->routes[i]);
    free(b);
}

static void copy_name(char *dst, const char *src)
{
    size_t n = strlen(src);
    if (n >= BOARD_NAME_BYTES)
        n = BOARD_NAME_BYTES - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

board_route_t *board_route(board_t *b, const char *route, uint64_t now_ms)
{
    for (size_t i = 0; i < b->n_routes; i++)
        if (strncmp(b->routes[i]->name, route, BOARD_NAME_BYTES - 1) == 0)
            return b->routes[i];
    if (b->n_routes == BOARD_MAX_ROUTES)
        return NULL;
    board_route_t *br = calloc(1, sizeof *br);
    if (!br)
        return NULL;
    copy_name(br->name, route);
    br->seen_ms = now_ms;
    br->n_workers = b->n_workers;
    br->shards = calloc(b->n_workers, sizeof *br->shards);
    if (!br->shards) {
        free(br);
        return NULL;
    }
    for (size_t w = 0; w < b->n_workers; w++) {
        size_t bytes = (sizeof(shard_t) + 63) & ~(size_t)63;
        br->shards[w] = aligned_alloc(64, bytes);
        if (!br->shards[w]) {
            route_free(br);
            return NULL;
        }
        memset(br->shards[w], 0, bytes);
        for (size_t i = 0; i < BOARD_BUCKETS; i++)
            atomic_store(&br->shards[w]->number[i], -1);
    }
    b->routes[b->n_routes++] = br;
    return br;
}

uint32_t board_route_group(board_route_t *br, const char *name, board_role_t role)
{
    uint32_t i = 0;
    for (; i < br->n_groups; i++)
        if (strncmp(br->groups[i], name, BOARD_NAME_BYTES - 1) == 0)
            break;
    if (i == br->n_groups) {
        if (br->n_groups == BOARD_MAX_GROUPS)
            return BOARD_MAX_GROUPS - 1; /* "other" */
        i = br->n_groups++;
        copy_name(br->groups[i], br->n_groups == BOARD_MAX_GROUPS ? "other" : name);
    }
    br->roles[i] = (uint8_t)role;
    return i;
}

static uint32_t lat_slot(uint64_t us)
{
    uint32_t k = 0;
    for (uint64_t bound = BOARD_LAT_BASE_US; us >= bound && k < BOARD_LAT_SLOTS - 1; bound <<= 1)
        k++;
    return k;
}

/* The worker's bucket for now_ms, recycled first if it held an older one. */
static size_t bucket(shard_t *s, uint64_t now_ms)
{
    int64_t n = (int64_t)(now_ms / BOARD_BUCKET_MS);
    size_t i = (size_t)n % BOARD_BUCKETS;
    if (atomic_load_explicit(&s->number[i], memory_order_relaxed) != n) {
        atomic_store_explicit(&s->number[i], -1, memory_order_relaxed);
        atomic_thread_fence(memory_order_release);
        memset((void *)s->cells[i], 0, sizeof s->cells[i]);
        atomic_store_explicit(&s->shadow_match[i], 0, memory_order_relaxed);
        atomic_store_explicit(&s->shadow_total[i], 0, memory_order_relaxed);
        atomic_store_explicit(&s->number[i], n, memory_order_release);
    }
    return i;
}

void board_record(board_route_t *br, unsigned worker, uint64_t now_ms, uint32_t group, int status,
                  bool fallback, uint32_t masked_group, uint64_t latency_us)
{
    if (!br || worker >= br->n_workers || group >= BOARD_MAX_GROUPS)
        return;
    shard_t *s = br->shards[worker];
    size_t i = bucket(s, now_ms);
    cell_t *c = &s->cells[i][group];
    bump(&c->requests);
    if (status == 0 || status >= 500)
        bump(&c->errors);
    if (fallback)
        bump(&c->fallbacks);
    if (masked_group < BOARD_MAX_GROUPS)
        bump(&s->cells[i][masked_group].masked);
    bump(&c->lat[lat_slot(latency_us)]);
}

void board_record_shadow(board_route_t *br, unsigned worker, uint64_t now_ms, bool match)
{
    if (!br || worker >= br->n_workers)
        return;
    shard_t *s = br->shards[worker];
    size_t i = bucket(s, now_ms);
    bump(&s->shadow_total[i]);
    if (match)
        bump(&s->shadow_match[i]);
}

const char *board_verdict_name(board_verdict_t v)
{
    static const char *const names[] = {"old", "migrating", "new"};
    return (unsigned)v < 3 ? names[v] : "old";
}

/* ---------------------------------------------------------------- reading */

typedef struct sums {
    uint64_t requests, errors, fallbacks, masked;
    uint64_t lat[BOARD_LAT_SLOTS];
} sums_t;

static void sums_add(sums_t *a, const sums_t *b)
{
    a->requests += b->requests;
    a->errors += b->errors;
    a->fallbacks += b->fallbacks;
    a->masked += b->masked;
    for (size_t k = 0; k < BOARD_LAT_SLOTS; k++)
        a->lat[k] += b->lat[k];
}

/* The upper bound (ms) of the slot holding quantile q, or -1 without data. */
static double quantile_ms(const sums_t *s, double q)
{
    uint64_t n = 0;
    for (size_t k = 0; k < BOARD_LAT_SLOTS; k++)
        n += s->lat[k];
    if (!n)
        return -1;
    uint64_t want = (uint64_t)(q * (double)n);
    if (want >= n)
        want = n - 1;
    uint64_t seen = 0;
    for (size_t k = 0; k < BOARD_LAT_SLOTS; k++) {
        seen += s->lat[k];
        if (seen > want)
            return (double)((uint64_t)BOARD_LAT_BASE_US << k) / 1000.0;
    }
    return (double)((uint64_t)BOARD_LAT_BASE_US << (BOARD_LAT_SLOTS - 1)) / 1000.0;
}

static json_t *ms_json(double ms) { return ms < 0 ? json_null() : json_real(ms); }

static json_t *rate_json(uint64_t part, uint64_t whole)
{
    return whole ? json_real((double)part / (double)whole) : json_null();
}

/* The window: BOARD_BUCKETS buckets ending with the current one, summed
 * over the workers. */
typedef struct window {
    sums_t cells[BOARD_BUCKETS][BOARD_MAX_GROUPS];
    uint64_t shadow_match[BOARD_BUCKETS], shadow_total[BOARD_BUCKETS];
} window_t;

static void read_window(const board_route_t *br, uint64_t now_ms, window_t *w)
{
    memset(w, 0, sizeof *w);
    int64_t cur = (int64_t)(now_ms / BOARD_BUCKET_MS);
    for (size_t j = 0; j < BOARD_BUCKETS; j++) {
        int64_t n = cur - (int64_t)(BOARD_BUCKETS - 1) + (int64_t)j;
        if (n < 0)
            continue;
        size_t i = (size_t)n % BOARD_BUCKETS;
        for (size_t wk = 0; wk < br->n_workers; wk++) {
            shard_t *s = br->shards[wk];
            if (atomic_load_explicit(&s->number[i], memory_order_acquire) != n)
                continue;
            for (size_t g = 0; g < br->n_groups; g++) {
                const cell_t *c = &s->cells[i][g];
                sums_t x = {
                    ld(&c->requests), ld(&c->errors), ld(&c->fallbacks), ld(&c->masked), {0}};
                for (size_t k = 0; k < BOARD_LAT_SLOTS; k++)
                    x.lat[k] = ld(&c->lat[k]);
                sums_add(&w->cells[j][g], &x);
            }
            w->shadow_match[j] += ld(&s->shadow_match[i]);
            w->shadow_total[j] += ld(&s->shadow_total[i]);
        }
    }
}

static json_t *series_u64(const uint64_t *v, size_t stride_bytes)
{
    json_t *a = json_array();
    for (size_t j = 0; j < BOARD_BUCKETS; j++)
        json_array_append_new(
            a, json_integer((json_int_t) * (const uint64_t *)((const char *)v + j * stride_bytes)));
    return a;
}

static json_t *group_json(const board_route_t *br, const window_t *w, size_t g, uint64_t total)
{
    sums_t s = {0};
    json_t *p50 = json_array(), *p99 = json_array();
    for (size_t j = 0; j < BOARD_BUCKETS; j++) {
        const sums_t *c = &w->cells[j][g];
        sums_add(&s, c);
        json_array_append_new(p50, ms_json(quantile_ms(c, 0.50)));
        json_array_append_new(p99, ms_json(quantile_ms(c, 0.99)));
    }
    size_t stride = sizeof w->cells[0];
    json_t *series = json_pack(
        "{s:o,s:o,s:o,s:o,s:o,s:o}", "requests", series_u64(&w->cells[0][g].requests, stride),
        "errors", series_u64(&w->cells[0][g].errors, stride), "fallbacks",
        series_u64(&w->cells[0][g].fallbacks, stride), "masked",
        series_u64(&w->cells[0][g].masked, stride), "p50_ms", p50, "p99_ms", p99);
    return json_pack("{s:s,s:s,s:I,s:o,s:I,s:o,s:I,s:I,s:o,s:o,s:o}", "name", br->groups[g], "role",
                     br->roles[g] == BOARD_NEW ? "new" : "old", "requests", (json_int_t)s.requests,
                     "share", rate_json(s.requests, total), "errors", (json_int_t)s.errors,
                     "error_rate", rate_json(s.errors, s.requests), "fallbacks",
                     (json_int_t)s.fallbacks, "masked", (json_int_t)s.masked, "p50_ms",
                     ms_json(quantile_ms(&s, 0.50)), "p99_ms", ms_json(quantile_ms(&s, 0.99)),
                     "series", series);
}

json_t *board_route_json(board_route_t *br, uint64_t now_ms, uint64_t realtime_ms)
{
    window_t *w = malloc(sizeof *w);
    if (!w)
        return NULL;
    read_window(br, now_ms, w);
    sums_t all = {0};
    uint64_t by_role[2] = {0, 0};
    for (size_t j = 0; j < BOARD_BUCKETS; j++)
        for (size_t g = 0; g < br->n_groups; g++) {
            sums_add(&all, &w->cells[j][g]);
            by_role[br->roles[g] == BOARD_NEW] += w->cells[j][g].requests;
        }
    bool complete = now_ms - br->seen_ms >= (uint64_t)BOARD_BUCKETS * BOARD_BUCKET_MS;
    board_verdict_t v = BOARD_VERDICT_MIGRATING;
    if (by_role[BOARD_NEW] == 0)
        v = BOARD_VERDICT_OLD;
    else if (by_role[BOARD_OLD] == 0 && all.fallbacks == 0 && complete)
        v = BOARD_VERDICT_NEW;
    json_t *groups = json_array();
    for (size_t g = 0; g < br->n_groups; g++)
        json_array_append_new(groups, group_json(br, w, g, all.requests));
    uint64_t sm = 0, st = 0;
    json_t *match = json_array(), *compared = json_array();
    for (size_t j = 0; j < BOARD_BUCKETS; j++) {
        sm += w->shadow_match[j];
        st += w->shadow_total[j];
        json_array_append_new(match, rate_json(w->shadow_match[j], w->shadow_total[j]));
        json_array_append_new(compared, json_integer((json_int_t)w->shadow_total[j]));
    }
    int64_t first = (int64_t)(now_ms / BOARD_BUCKET_MS) - (BOARD_BUCKETS - 1);
    int64_t first_real =
        (int64_t)realtime_ms - ((int64_t)now_ms - first * (int64_t)BOARD_BUCKET_MS);
    json_t *out = json_pack(
        "{s:s,s:s,s:b,s:I,s:I,s:I,s:{s:I,s:I,s:o,s:o,s:I,s:I,s:o,s:o,s:o},s:o,s:{s:I,s:o,s:o,s:o}}",
        "name", br->name, "verdict", board_verdict_name(v), "window_complete", complete,
        "seen_seconds", (json_int_t)((now_ms - br->seen_ms) / 1000), "first_bucket_ms",
        (json_int_t)first_real, "bucket_ms", (json_int_t)BOARD_BUCKET_MS, "totals", "requests",
        (json_int_t)all.requests, "errors", (json_int_t)all.errors, "error_rate",
        rate_json(all.errors, all.requests), "fallback_rate",
        rate_json(all.fallbacks, all.requests), "fallbacks", (json_int_t)all.fallbacks, "masked",
        (json_int_t)all.masked, "new_share", rate_json(by_role[BOARD_NEW], all.requests), "p50_ms",
        ms_json(quantile_ms(&all, 0.50)), "p99_ms", ms_json(quantile_ms(&all, 0.99)), "groups",
        groups, "shadow_window", "compared", (json_int_t)st, "match_rate", rate_json(sm, st),
        "match_series", match, "compared_series", compared);
    free(w);
    return out;
}
