/* The aggregation cache; see agg_cache.h. A chained hash table of entries,
 * each on a doubly linked recency list; an entry being fetched has no body
 * yet and a list of waiters, and is never evicted. */
#include "policy/agg_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/lru.h"

typedef struct entry {
    lru_node_t lru;      /* first: the recency list's node is the entry */
    struct entry *hnext; /* hash chain */
    uint64_t hash;
    char *key;
    size_t key_len;
    agg_body_t *body; /* NULL while fetching */
    uint64_t expires_ms;
    bool fetching;
    agg_waiter_t *waiters;
} entry_t;

struct agg_cache {
    pthread_mutex_t lock;
    entry_t **buckets;
    size_t n_buckets;
    lru_list_t lru; /* most recently used first */
    size_t entries, bytes, max_entries, max_bytes;
    uint64_t hits, misses, waits, evictions;
};

agg_body_t *agg_body_new(const char *data, size_t len)
{
    agg_body_t *b = malloc(sizeof *b + len);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    memcpy(b->data, data, len);
    return b;
}

void agg_body_unref(agg_body_t *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

agg_cache_t *agg_cache_new(size_t max_entries, size_t max_bytes)
{
    agg_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->n_buckets = 64;
    while (c->n_buckets < max_entries && c->n_buckets < (1u << 20))
        c->n_buckets <<= 1;
    c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

static size_t entry_bytes(const entry_t *e)
{
    return sizeof *e + e->key_len + (e->body ? e->body->len : 0);
}

static entry_t **find(agg_cache_t *c, uint64_t h, const char *key, size_t len)
{
    entry_t **pp = &c->buckets[h & (c->n_buckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->key_len == len && memcmp((*pp)->key, key, len) == 0))
        pp = &(*pp)->hnext;
    return pp;
}

/* Removes the entry *pp points to (not fetching). */
static void drop(agg_cache_t *c, entry_t **pp)
{
    entry_t *e = *pp;
    *pp = e->hnext;
    lru_unlink(&c->lru, &e->lru);
    c->entries--;
    c->bytes -= entry_bytes(e);
    agg_body_unref(e->body);
    free(e->key);
    free(e);
}

/* Least recently used entries out until the bounds hold (entries being
 * fetched stay). */
static void evict(agg_cache_t *c)
{
    entry_t *e = (entry_t *)c->lru.tail;
    while (e && (c->entries > c->max_entries || c->bytes > c->max_bytes)) {
        entry_t *prev = (entry_t *)e->lru.prev;
        if (!e->fetching) {
            drop(c, find(c, e->hash, e->key, e->key_len));
            c->evictions++;
        }
        e = prev;
    }
}

agg_lookup_t agg_cache_get(agg_cache_t *c, const char *key, size_t key_len, uint64_t now_ms,
                           agg_body_t **hit, agg_waiter_t *w)
{
    uint64_t h = hash_bytes(key, key_len);
    *hit = NULL;
    pthread_mutex_lock(&c->lock);
    entry_t **pp = find(c, h, key, key_len), *e = *pp;
    if (e && e->fetching) {
        w->next = e->waiters;
        e->waiters = w;
        c->waits++;
        pthread_mutex_unlock(&c->lock);
        return AGG_WAIT;
    }
    if (e && e->expires_ms > now_ms) {
        *hit = agg_body_ref(e->body);
        lru_unlink(&c->lru, &e->lru);
        lru_push_front(&c->lru, &e->lru);
        c->hits++;
        pthread_mutex_unlock(&c->lock);
        return AGG_HIT;
    }
    c->misses++;
    if (e) { /* expired: it becomes the fetch */
        c->bytes -= entry_bytes(e);
        agg_body_unref(e->body);
        e->body = NULL;
        c->bytes += entry_bytes(e);
    } else if ((e = calloc(1, sizeof *e)) && (e->key = malloc(key_len ? key_len : 1))) {
        memcpy(e->key, key, key_len);
        e->key_len = key_len;
        e->hash = h;
        e->hnext = *pp;
        *pp = e;
        lru_push_front(&c->lru, &e->lru);
        c->entries++;
        c->bytes += entry_bytes(e);
    } else {
        free(e); /* no memory: fetch without single flight */
        pthread_mutex_unlock(&c->lock);
        return AGG_FETCH;
    }
    e->fetching = true;
    e->waiters = NULL;
    evict(c);
    pthread_mutex_unlock(&c->lock);
    return AGG_FETCH;
}

/* Ends key's fetch: its waiters are handed over (to be woken unlocked). */
static agg_waiter_t *end_fetch(agg_cache_t *c, const char *key, size_t key_len, agg_body_t *body,
                               uint64_t ttl_ms, uint64_t now_ms)
{
    uint64_t h = hash_bytes(key, key_len);
    entry_t **pp = find(c, h, key, key_len), *e = *pp;
    if (!e || !e->fetching)
        return NULL;
    agg_waiter_t *w = e->waiters;
    e->waiters = NULL;
    e->fetching = false;
    if (!body || !ttl_ms || sizeof *e + key_len + body->len > c->max_bytes) {
        drop(c, pp);
        return w;
    }
    c->bytes -= entry_bytes(e);
    e->body = agg_body_ref(body);
    e->expires_ms = now_ms + ttl_ms;
    c->bytes += entry_bytes(e);
    lru_unlink(&c->lru, &e->lru);
    lru_push_front(&c->lru, &e->lru);
    evict(c);
    return w;
}

static void wake(agg_waiter_t *w, agg_body_t *body)
{
    while (w) {
        agg_waiter_t *next = w->next;
        w->fn(w, body ? agg_body_ref(body) : NULL);
        w = next;
    }
}

void agg_cache_put(agg_cache_t *c, const char *key, size_t key_len, agg_body_t *body,
                   uint64_t ttl_ms, uint64_t now_ms)
{
    pthread_mutex_lock(&c->lock);
    agg_waiter_t *w = end_fetch(c, key, key_len, body, ttl_ms, now_ms);
    pthread_mutex_unlock(&c->lock);
    wake(w, body);
}

void agg_cache_fail(agg_cache_t *c, const char *key, size_t key_len)
{
    pthread_mutex_lock(&c->lock);
    agg_waiter_t *w = end_fetch(c, key, key_len, NULL, 0, 0);
    pthread_mutex_unlock(&c->lock);
    wake(w, NULL);
}

bool agg_cache_cancel(agg_cache_t *c, const char *key, size_t key_len, agg_waiter_t *w)
{
    bool found = false;
    pthread_mutex_lock(&c->lock);
    entry_t *e = *find(c, hash_bytes(key, key_len), key, key_len);
    for (agg_waiter_t **pp = e ? &e->waiters : NULL; pp && *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            found = true;
            break;
        }
    pthread_mutex_unlock(&c->lock);
    return found;
}

void agg_cache_stats(agg_cache_t *c, agg_cache_stats_t *out)
{
    pthread_mutex_lock(&c->lock);
    *out = (agg_cache_stats_t){c->entries, c->bytes, c->hits, c->misses, c->waits, c->evictions};
    pthread_mutex_unlock(&c->lock);
}

void agg_cache_free(agg_cache_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_buckets; i++)
        while (c->buckets[i]) {
            entry_t *e = c->buckets[i];
            c->buckets[i] = e->hnext;
            agg_body_unref(e->body);
            free(e->key);
            free(e);
        }
    free(c->buckets);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
