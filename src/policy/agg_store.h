/* The aggregation cache's fleet-wide store (contract 8, aggregate_cache
 * {scope: redis}): one worker loop's view of the call bodies kept in redis
 * for every instance. A lookup is one script round trip that answers the
 * body (HIT), or takes the entry's short lock (SET NX PX) and answers FETCH
 * (this worker calls upstream, then agg_store_put or agg_store_release), or
 * finds another holder: the store then looks again every few ms until the
 * body is there, the lock is gone (it takes it: FETCH) or wait_ms passed
 * (LATE). Redis unreachable or failing: ERROR at once, for the instance's
 * own cache to serve. Keys: ficus:agg:<key> and ficus:agg:<key>:lock (its
 * value names the holder, so only the holder lets it go). A store has its
 * own redis connection: a large body would otherwise hold up the fleet's
 * throttle calls. Every waiting lookup looks again on its own: a caller
 * asks once per key per instance (after the instance's single flight,
 * policy/agg_cache's AGG_FETCH), the others waiting in that cache. One
 * loop, no locks, never blocks. */
#ifndef FICUS_POLICY_AGG_STORE_H
#define FICUS_POLICY_AGG_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "client/kv.h"
#include "policy/agg_cache.h"

#define AGG_STORE_PREFIX "ficus:agg:"
#define AGG_STORE_LOCK_SUFFIX ":lock"
#define AGG_STORE_MAX_KEY_BYTES 2048 /* the caller's key, without the prefix */
#define AGG_STORE_MAX_BODY_BYTES                                                                   \
    (KV_MAX_BULK_BYTES - 8192) /* a body stored or read; the rest of a put's arguments fit beside  \
                                */
#define AGG_STORE_MAX_LOOKUPS                                                                      \
    1024 /* lookups in flight per store (cancelled ones until redis                                \
            answered); beyond: refused */
#define AGG_STORE_MAX_TTL_MS                                                                       \
    (365ULL * 24 * 3600 *                                                                          \
     1000) /* longer ttls and locks are cut to this (redis refuses huge ones) */
#define AGG_STORE_POLL_MIN_MS 5      /* while another instance fetches: the next look in */
#define AGG_STORE_POLL_MAX_MS 10     /* [min, max] ms, jittered so that instances spread out */
#define AGG_STORE_BACKOFF_MIN_MS 100 /* reconnecting to redis */
#define AGG_STORE_BACKOFF_MAX_MS 5000

typedef struct agg_store agg_store_t;
typedef struct agg_store_op agg_store_op_t;

/* Connects to redis at address ("host:port") in the background. timeout_ms
 * bounds each round trip (0: DEFAULT_REDIS_TIMEOUT_MS). NULL on a malformed
 * address or no memory. The caller owns it until agg_store_close. */
agg_store_t *agg_store_new(uv_loop_t *loop, const char *address, uint64_t timeout_ms);
/* Starts closing: lookups in flight end at once with AGG_STORE_ERROR; locks
 * held are left to expire. Memory freed from the close callbacks (run the
 * loop). agg_store_close(NULL) is a no-op. */
void agg_store_close(agg_store_t *s);
/* Connected to redis: lookups can be asked. */
bool agg_store_connected(const agg_store_t *s);

typedef enum {
    AGG_STORE_HIT,   /* body: one reference, the caller's */
    AGG_STORE_FETCH, /* this store holds the lock: fetch, then agg_store_put or _release */
    AGG_STORE_LATE,  /* another instance held the lock for all of wait_ms: fetch without it */
    AGG_STORE_ERROR  /* redis could not answer (counted): the instance's cache serves */
} agg_store_result_t;

/* The end of a lookup, on the loop. body: with AGG_STORE_HIT only, else NULL. */
typedef void (*agg_store_done_fn)(void *ctx, agg_store_result_t r, agg_body_t *body);

/* Looks key up; on a miss takes its lock for lock_ms (the longest the fetch
 * may take; cut to AGG_STORE_MAX_TTL_MS). While another instance holds the lock, looks again until
 * wait_ms have passed (the lookup then lasts at most wait_ms plus one round
 * trip). done runs exactly once, never from inside this call, unless
 * agg_store_cancel comes first. NULL: not asked, treat as AGG_STORE_ERROR at
 * once (no callback follows): redis not connected, AGG_STORE_MAX_LOOKUPS in
 * flight or no memory (these counted in agg_store_errors), or key empty or
 * over AGG_STORE_MAX_KEY_BYTES, lock_ms 0, closing. The key is copied. */
agg_store_op_t *agg_store_get(agg_store_t *s, const char *key, size_t key_len, uint64_t lock_ms,
                              uint64_t wait_ms, agg_store_done_fn done, void *ctx);
/* No callback follows. A lock that redis grants after the cancel is let go
 * by the store itself. Only before done ran. */
void agg_store_cancel(agg_store_op_t *op);

/* After AGG_STORE_FETCH, the fetch gave body: stored for ttl_ms (0: not
 * stored) and the lock let go if this store still holds it; without
 * waiting (a failure is counted; the lock then expires by itself). 0 when
 * sent; FE_TOOBIG: body over AGG_STORE_MAX_BODY_BYTES, not stored (the lock
 * is let go all the same); FE_INVAL: bad key; FE_IO: could not be sent. */
int agg_store_put(agg_store_t *s, const char *key, size_t key_len, const char *body, size_t len,
                  uint64_t ttl_ms);
/* After AGG_STORE_FETCH, the fetch failed: the lock let go (if still this
 * store's), so that another instance fetches at once. As agg_store_put. */
int agg_store_release(agg_store_t *s, const char *key, size_t key_len);

typedef struct agg_store_stats {
    uint64_t hits;    /* lookups answered with a body */
    uint64_t fetches; /* lookups that took the lock */
    uint64_t waits;   /* lookups that found the lock held (then ended any way) */
    uint64_t lates;   /* lookups that waited wait_ms in vain */
} agg_store_stats_t;
void agg_store_stats(const agg_store_t *s, agg_store_stats_t *out);
/* Redis errors of this store so far (for ficus_redis_errors_total): its
 * connection's, lookups refused on a bound, and replies it could not use. */
uint64_t agg_store_errors(const agg_store_t *s);

#endif
