/* The aggregation cache (contract 8): a call's 200 bodies by resolved path,
 * shared by the instance's workers, bounded in entries and bytes (least
 * recently used first out), with single flight: while one request fetches
 * a path, the others that miss it wait for that fetch instead of making
 * their own, so an entry expiring under load costs one upstream call.
 *
 * Thread-safe: one mutex, held for table work only; waiters are woken after
 * it is released. Bodies are reference-counted, so a response writes one
 * out without copying it. */
#ifndef FICUS_POLICY_AGG_CACHE_H
#define FICUS_POLICY_AGG_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct agg_body {
    atomic_uint refs;
    size_t len;
    char data[];
} agg_body_t;

/* A body of one reference (NULL: no memory). */
agg_body_t *agg_body_new(const char *data, size_t len);
static inline agg_body_t *agg_body_ref(agg_body_t *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}
void agg_body_unref(agg_body_t *b); /* NULL: no-op */

/* Someone waiting for a fetch: fn is called once, on the thread that ended
 * the fetch, with a reference to the body (NULL: the fetch failed), unless
 * the wait was cancelled first. The memory is the caller's until then. */
typedef struct agg_waiter {
    void (*fn)(struct agg_waiter *w, agg_body_t *body);
    void *ctx;
    struct agg_waiter *next;
} agg_waiter_t;

typedef struct agg_cache agg_cache_t;

/* At most max_entries entries and max_bytes of keys and bodies (NULL: no
 * memory). */
agg_cache_t *agg_cache_new(size_t max_entries, size_t max_bytes);
void agg_cache_free(agg_cache_t *c); /* waiters still queued are not called */

typedef enum {
    AGG_HIT,   /* *hit holds a reference to a fresh body */
    AGG_FETCH, /* the caller fetches: it must end with agg_cache_put or _fail */
    AGG_WAIT   /* another fetch is under way: w is queued */
} agg_lookup_t;

agg_lookup_t agg_cache_get(agg_cache_t *c, const char *key, size_t key_len, uint64_t now_ms,
                           agg_body_t **hit, agg_waiter_t *w);
/* The fetch of key ended with body (kept ttl_ms from now_ms when it fits;
 * 0: not kept); every waiter gets it. */
void agg_cache_put(agg_cache_t *c, const char *key, size_t key_len, agg_body_t *body,
                   uint64_t ttl_ms, uint64_t now_ms);
/* The fetch of key failed: every waiter is told (NULL body). */
void agg_cache_fail(agg_cache_t *c, const char *key, size_t key_len);
/* w no longer waits: true when it was still queued (fn will not be
 * called); false when fn has been or is being called (on another thread:
 * w's memory must stay until fn returns). */
bool agg_cache_cancel(agg_cache_t *c, const char *key, size_t key_len, agg_waiter_t *w);

typedef struct agg_cache_stats {
    size_t entries, bytes;
    uint64_t hits, misses, waits, evictions;
} agg_cache_stats_t;
void agg_cache_stats(agg_cache_t *c, agg_cache_stats_t *out);

#endif
