/* The migration board's figures (contract 10.6): per route, 15 minutes of
 * 10-second buckets kept in process — per target group the requests it
 * answered, errors, fallbacks, masked canary failures and a latency
 * histogram (p50/p99), and per bucket the shadow comparisons.
 *
 * Threads: board_record*() run on worker `worker`'s thread and write only
 * that worker's shard (no lock, no allocation, no cache line shared with
 * another worker); board_route*() and board_json() run on the main thread
 * and sum the shards as they are (a bucket being recycled by a worker while
 * it is read may be off by that worker's few requests: a dashboard's
 * tolerance, not an accountant's).
 *
 * Routes are found by name and outlive reloads; at most BOARD_MAX_ROUTES,
 * each with at most BOARD_MAX_GROUPS groups (the last slot takes the rest as
 * "other"). Memory: a route takes n_workers x 90 x (BOARD_MAX_GROUPS x
 * (4 + BOARD_LAT_SLOTS) + 2) x 8 bytes, 57.6 KiB per worker. */
#ifndef FICUS_OBSERVE_BOARD_H
#define FICUS_OBSERVE_BOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define BOARD_BUCKETS 90       /* 15 minutes ... */
#define BOARD_BUCKET_MS 10000u /* ... of 10 seconds */
#define BOARD_MAX_ROUTES 256
#define BOARD_MAX_GROUPS 4
/* Latency slot k holds durations below 2^k * 250 us (the last: the rest);
 * a percentile is its slot's upper bound, so at most twice the truth. */
#define BOARD_LAT_SLOTS 16

typedef struct board board_t;
typedef struct board_route board_route_t;

/* Whose answer a group gives: the old system's, or the new service's. */
typedef enum { BOARD_OLD = 0, BOARD_NEW } board_role_t;

board_t *board_new(size_t n_workers, uint64_t now_ms);
void board_free(board_t *b); /* NULL: no-op */

/* Main thread: the route's figures, made on first use (NULL past
 * BOARD_MAX_ROUTES or without memory). now_ms: when it was first seen. */
board_route_t *board_route(board_t *b, const char *route, uint64_t now_ms);
/* Main thread: the index of the route's group `name`, made on first use;
 * its role is set on every call (a reload may change it). */
uint32_t board_route_group(board_route_t *br, const char *name, board_role_t role);

/* Worker thread: one request the group answered: the status the client got
 * (0: none; 5xx and none are errors), whether a fallback answered, the
 * request's duration; masked_group: the group whose failure the fallback
 * hid (a masked canary failure, counted there), BOARD_NO_GROUP: none. */
#define BOARD_NO_GROUP UINT32_MAX
void board_record(board_route_t *br, unsigned worker, uint64_t now_ms, uint32_t group, int status,
                  bool fallback, uint32_t masked_group, uint64_t latency_us);
/* Worker thread: one shadow comparison. */
void board_record_shadow(board_route_t *br, unsigned worker, uint64_t now_ms, bool match);

/* What a route's verdict is: all on the old system, moving, or all on the
 * new one with no fallback over the whole window (ready to retire the old
 * route). */
typedef enum { BOARD_VERDICT_OLD = 0, BOARD_VERDICT_MIGRATING, BOARD_VERDICT_NEW } board_verdict_t;
const char *board_verdict_name(board_verdict_t v);

/* Main thread: the route's board as JSON (a new reference): its verdict,
 * totals over the window, per group its role, share, rates, p50/p99 and
 * per-bucket series, and the shadow match series. realtime_ms dates the
 * buckets for charts. */
json_t *board_route_json(board_route_t *br, uint64_t now_ms, uint64_t realtime_ms);

#endif
