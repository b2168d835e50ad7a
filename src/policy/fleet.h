/* Fleet-wide counts in redis for one worker (a "member"): client throttles
 * (requests in flight across every instance) and token buckets, each decided
 * by one script call (time from redis's TIME, so instances' clocks do not
 * matter). A member keeps its own in-flight counts per client and, every
 * lease_ms/3, renews its lease and re-writes them: a count that a lost reply
 * left wrong heals, and a member that died (kill -9) stops counting once its
 * lease expired. Keys: ficus:members (a sorted set of leases),
 * ficus:throttle:<client> (a hash: member -> count), ficus:rate:<key> (a
 * hash: tokens, ts); all with expiries. One loop, no locks. */
#ifndef FICUS_POLICY_FLEET_H
#define FICUS_POLICY_FLEET_H

#include <stdint.h>
#include <uv.h>

#define FLEET_DEFAULT_LEASE_MS 5000
#define FLEET_DEFAULT_TIMEOUT_MS 250
#define FLEET_MIN_LEASE_MS 300   /* shorter leases are raised to this */
#define FLEET_BACKOFF_MIN_MS 100 /* reconnecting to redis */
#define FLEET_BACKOFF_MAX_MS 5000
#define FLEET_RETRY_HEARTBEAT_MS 100 /* after a heartbeat that did not get through */
#define FLEET_MAX_CLIENTS 4096       /* clients counted at once per member; beyond: NULL */
#define FLEET_MAX_KEY_BYTES 512      /* a client name or a rate key */
#define FLEET_MAX_MEMBER_BYTES 256
#define FLEET_HEARTBEAT_CHUNK 64 /* clients re-written per script call (< KV_MAX_ARG_BYTES) */

typedef struct fleet fleet_t;

typedef struct fleet_opts {
    const char *address; /* redis "host:port" */
    const char *member;  /* unique per worker per process: "<host>:<pid>:<start>:<worker>" */
    uint64_t lease_ms;   /* 0: FLEET_DEFAULT_LEASE_MS */
    uint64_t timeout_ms; /* per call when the call names none; 0: FLEET_DEFAULT_TIMEOUT_MS */
} fleet_opts_t;

/* Connects (in the background) and starts heartbeating. NULL on a bad
 * address or member, or no memory. */
fleet_t *fleet_new(uv_loop_t *loop, const fleet_opts_t *o);
/* Starts closing: operations in flight complete at once with FLEET_ERROR;
 * nothing is released in redis (the lease runs out). Memory freed from the
 * close callbacks. fleet_close(NULL) is a no-op. */
void fleet_close(fleet_t *f);

typedef enum { FLEET_ALLOW, FLEET_DENY, FLEET_ERROR } fleet_verdict_t;

/* On the loop, exactly once per operation unless cancelled. retry_after_ms:
 * with a rate DENY, when a token will be there; otherwise 0. */
typedef void (*fleet_done_fn)(void *ctx, fleet_verdict_t v, uint64_t retry_after_ms);

typedef struct fleet_op fleet_op_t;

/* One round trip: counts one more request in flight for client when the
 * fleet-wide total (live members only) stays <= max: FLEET_ALLOW (call
 * fleet_throttle_release when the request ends); FLEET_DENY otherwise
 * (nothing counted); FLEET_ERROR (redis unreachable or late: nothing to
 * release). NULL: cannot ask (down, or bounds crossed): treat as FLEET_ERROR
 * at once, no callback follows. timeout_ms 0: the fleet's. */
fleet_op_t *fleet_throttle_acquire(fleet_t *f, const char *client, uint32_t max,
                                   uint64_t timeout_ms, fleet_done_fn done, void *ctx);
/* After a FLEET_ALLOW: one less in flight (fire-and-forget; a lost release is
 * healed by the next heartbeat). Ignored when client holds nothing. */
void fleet_throttle_release(fleet_t *f, const char *client);
/* A token bucket in redis (refilled at rate_per_s up to burst; one token per
 * call): FLEET_ALLOW, FLEET_DENY with retry_after_ms, or FLEET_ERROR. NULL
 * as above, and for rate_per_s <= 0 or burst < 1. */
fleet_op_t *fleet_rate_take(fleet_t *f, const char *key, double rate_per_s, double burst,
                            uint64_t timeout_ms, fleet_done_fn done, void *ctx);
/* No callback follows. An acquire that redis allows after its cancel is
 * released by the fleet itself. Only before done ran. */
void fleet_cancel(fleet_op_t *op);
/* Redis errors of this member so far (ficus_redis_errors_total), with the
 * operations refused because a bound was crossed. */
uint64_t fleet_errors(const fleet_t *f);

#endif
