/* Route rollouts shared by a fleet through redis (contract 10.2, `state:
 * redis`), on the main loop: every instance publishes its evidence of the
 * current step each second and applies the transitions the fleet shares; the
 * instance holding a route's lease (the leader) judges the fleet-wide sums
 * of the same window and moves the steps. Cut off from redis, an instance
 * holds its step (no promotion) and still acts on_failure on its own
 * evidence; that move is published when redis answers again.
 *
 * Keys, per route and rollout block (fingerprint fp, 16 hex digits):
 *   ficus:rollout:<route>:<fp>:leader   the leader's member name, PX lease
 *   ficus:rollout:<route>:<fp>:history  transitions, newest first (a list of
 *                                       "seq at_ms to paused_from step cause reason")
 *   ficus:rollout:<route>:<fp>:counts   member -> its evidence (a hash)
 *   ficus:rollout:<route>:<fp>:members  member -> expiry (a sorted set)
 * Times are redis's (TIME), so instances' clocks do not matter. One call in
 * flight per route; nothing blocks. */
#ifndef FICUS_APP_ROLLOUT_FLEET_H
#define FICUS_APP_ROLLOUT_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "observe/metrics.h"
#include "policy/rollout.h"

#define ROLLOUT_FLEET_LEASE_MS 3000   /* the leader's lease, renewed every tick */
#define ROLLOUT_FLEET_CUT_OFF_MS 2500 /* no sync for this long: hold the step */
#define ROLLOUT_FLEET_HISTORY 16      /* transitions kept in redis */
#define ROLLOUT_FLEET_NEW_PER_SYNC 4  /* transitions a sync brings at most (the newest) */
#define ROLLOUT_FLEET_RETENTION_MS (7 * 24 * 3600 * 1000ull) /* history without a leader */
#define ROLLOUT_FLEET_TIMEOUT_MS 250                         /* a call, when none is given */
#define ROLLOUT_FLEET_BACKOFF_MIN_MS 100                     /* reconnecting to redis */
#define ROLLOUT_FLEET_BACKOFF_MAX_MS 2000 /* (less than the cut-off: back soon after redis) */
#define ROLLOUT_FLEET_MAX_MEMBER_BYTES 200
#define ROLLOUT_FLEET_COUNTS_BYTES (16 + 4 * ROLLOUT_HIST_SLOTS * 21) /* one member's evidence */

typedef struct rollout_fleet rollout_fleet_t;
typedef struct rollout_fleet_route rollout_fleet_route_t;

/* Main loop: a rollout moved on its own (a followed transition, the
 * leader's judgement) outside a call from its owner. */
typedef void (*rollout_fleet_changed_fn)(void *ctx);

/* What GET /routes/NAME/rollout shows of a shared route. */
typedef struct {
    bool leader;        /* this instance holds the lease */
    bool connected;     /* a sync answered within ROLLOUT_FLEET_CUT_OFF_MS */
    bool unpublished;   /* a move made here waits to be written */
    uint64_t seq;       /* the fleet's transition this instance follows */
    uint64_t synced_ms; /* last sync answered (monotonic), 0: never */
} rollout_fleet_status_t;

/* The instance's connection for shared rollouts to redis at address, calls
 * timing out after timeout_ms, member a name unique to this process; errors
 * counted into metrics (ficus_redis_errors_total; may be NULL). NULL on a bad
 * address or member, or no memory. */
rollout_fleet_t *rollout_fleet_new(uv_loop_t *loop, const char *address, uint64_t timeout_ms,
                                   const char *member, metrics_registry_t *metrics);
/* Starts closing: calls in flight end now; the memory goes with the last
 * route unbound (or now when none). NULL is a no-op. */
void rollout_fleet_close(rollout_fleet_t *f);
/* The redis address it was made for. */
const char *rollout_fleet_address(const rollout_fleet_t *f);
/* Calls sent from now on time out after timeout_ms (a reload changed
 * redis.timeout; the connection and the routes' places stay). */
void rollout_fleet_set_timeout(rollout_fleet_t *f, uint64_t timeout_ms);
/* Redis errors so far (failed, late or refused calls, bad replies, lost
 * connections). */
uint64_t rollout_fleet_errors(const rollout_fleet_t *f);

/* A route's rollout block as a fingerprint: instances share a rollout only
 * when their blocks (and canary) are the same. */
uint64_t rollout_fleet_fingerprint(const rollout_config_t *c, const char *canary);

/* Shares route's rollout r through f: the entry of (route, fp) when one is
 * bound already (a reload that kept the rollout: its place in the fleet is
 * kept and r replaces the previous rollout), else a new one. changed(ctx)
 * runs when r moved in a reply. NULL when out of memory or f is closing. */
rollout_fleet_route_t *rollout_fleet_bind(rollout_fleet_t *f, const char *route, uint64_t fp,
                                          rollout_t *r, rollout_fleet_changed_fn changed,
                                          void *ctx);
/* r no longer takes part (its generation is going away); when r is the
 * entry's rollout the entry is freed (at once or when its call ends). */
void rollout_fleet_unbind(rollout_fleet_route_t *fr, rollout_t *r);

/* Once a second: ticks the rollout (hold while connected, on_failure only
 * while cut off) and sends the route's next call (its sync, or a move made
 * here). 1 when the rollout moved now, else 0. */
int rollout_fleet_tick(rollout_fleet_route_t *fr, uint64_t now_ms);
/* The rollout moved here (a manual action): the move is written to redis,
 * now when no call is in flight, and the fleet follows it. */
void rollout_fleet_publish(rollout_fleet_route_t *fr, uint64_t now_ms);
void rollout_fleet_status(const rollout_fleet_route_t *fr, uint64_t now_ms,
                          rollout_fleet_status_t *out);

/* ---- the wire (exposed for tests) ---- */

/* One member's evidence as text: "tag ct cf cm pt sm smm nc [slot count]...
 * np [slot count]..." (histograms sparse). The length, or 0 when it does not
 * fit in len. */
size_t rollout_fleet_encode_counts(uint64_t tag, const rollout_counts_t *c, char *out, size_t len);

#endif
