/* A bounded token -> value cache for one worker; see token_cache.h. Chained
 * hash table plus a least-recently-used list. The hash reads the length and
 * the last TAIL_BYTES of a token (a JWT's signature: the bytes that differ
 * between tokens), keyed with a per-cache random seed so that tokens chosen
 * to collide cannot be made without knowing it; a hit then compares the
 * whole token with memcmp. */
#include "policy/token_cache.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/hash.h"
#include "core/lru.h"
#include "core/rand.h"

#define TAIL_BYTES 32
#define MAX_BUCKETS ((size_t)1 << 20) /* 8 MiB of chain heads; beyond, chains grow */

typedef struct entry {
    lru_node_t lru;      /* first: the recency list's node is the entry */
    struct entry *hnext; /* bucket chain */
    uint64_t hash;
    uint64_t expires_ms;
    size_t token_len, value_len;
    alignas(max_align_t) unsigned char data[]; /* value, then token */
} entry_t;

struct token_cache {
    entry_t **buckets;
    size_t mask;
    lru_list_t lru; /* most recently used first */
    size_t entries, max_entries;
    size_t bytes, max_bytes;
    uint64_t evictions;
    uint64_t seed;
};

static uint64_t token_hash(const token_cache_t *c, const char *token, size_t len)
{
    size_t tail = len < TAIL_BYTES ? len : TAIL_BYTES;
    uint64_t h = hash_mix(c->seed ^ (uint64_t)len);
    if (tail == 0)
        return h;
    const char *p = token + len - tail;
    while (tail > 0) {
        uint64_t w = 0;
        size_t n = tail < sizeof w ? tail : sizeof w;
        memcpy(&w, p, n);
        h = hash_mix(h ^ w) + c->seed;
        p += n;
        tail -= n;
    }
    return h;
}

static size_t entry_cost(size_t token_len, size_t value_len)
{
    return token_len + value_len + TOKEN_CACHE_ENTRY_OVERHEAD;
}

token_cache_t *token_cache_new(size_t max_entries, size_t max_bytes)
{
    if (max_entries == 0 || max_bytes == 0)
        return NULL;
    token_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    /* One bucket per entry at most, and no more entries than bytes allow. */
    size_t want = max_entries;
    if (want > max_bytes / TOKEN_CACHE_ENTRY_OVERHEAD + 1)
        want = max_bytes / TOKEN_CACHE_ENTRY_OVERHEAD + 1;
    size_t n = 16;
    while (n < want && n < MAX_BUCKETS)
        n <<= 1;
    c->buckets = calloc(n, sizeof c->buckets[0]);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->mask = n - 1;
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->seed = rand_seed((uint64_t)(uintptr_t)c);
    return c;
}

static void entry_drop(token_cache_t *c, entry_t *e)
{
    entry_t **pp = &c->buckets[e->hash & c->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(&c->lru, &e->lru);
    c->entries--;
    c->bytes -= entry_cost(e->token_len, e->value_len);
    free(e);
}

void token_cache_free(token_cache_t *c)
{
    if (!c)
        return;
    for (lru_node_t *n = c->lru.head; n;) {
        lru_node_t *next = n->next;
        free(n);
        n = next;
    }
    free(c->buckets);
    free(c);
}

static entry_t *find(const token_cache_t *c, const char *token, size_t len, uint64_t h)
{
    for (entry_t *e = c->buckets[h & c->mask]; e; e = e->hnext)
        if (e->hash == h && e->token_len == len &&
            (len == 0 || memcmp(e->data + e->value_len, token, len) == 0))
            return e;
    return NULL;
}

const void *token_cache_get(token_cache_t *c, const char *token, size_t len, uint64_t now_ms,
                            size_t *value_len)
{
    entry_t *e = find(c, token, len, token_hash(c, token, len));
    if (!e)
        return NULL;
    if (e->expires_ms <= now_ms) {
        entry_drop(c, e);
        return NULL;
    }
    if (c->lru.head != &e->lru) {
        lru_unlink(&c->lru, &e->lru);
        lru_push_front(&c->lru, &e->lru);
    }
    if (value_len)
        *value_len = e->value_len;
    return e->data;
}

int token_cache_put(token_cache_t *c, const char *token, size_t len, const void *value,
                    size_t value_len, uint64_t expires_ms)
{
    /* In this order no sum can wrap around. */
    if (len > c->max_bytes || value_len > c->max_bytes - len ||
        TOKEN_CACHE_ENTRY_OVERHEAD > c->max_bytes - len - value_len ||
        len + value_len > SIZE_MAX - sizeof(entry_t))
        return FE_TOOBIG;
    size_t cost = entry_cost(len, value_len);
    entry_t *e = malloc(sizeof *e + value_len + len);
    if (!e)
        return FE_NOMEM;
    uint64_t h = token_hash(c, token, len);
    entry_t *old = find(c, token, len, h);
    if (old)
        entry_drop(c, old);
    while (c->lru.tail && (c->entries + 1 > c->max_entries || c->bytes + cost > c->max_bytes)) {
        entry_drop(c, (entry_t *)c->lru.tail);
        c->evictions++;
    }
    e->hash = h;
    e->expires_ms = expires_ms;
    e->token_len = len;
    e->value_len = value_len;
    if (value_len > 0)
        memcpy(e->data, value, value_len);
    if (len > 0)
        memcpy(e->data + value_len, token, len);
    e->hnext = c->buckets[h & c->mask];
    c->buckets[h & c->mask] = e;
    lru_push_front(&c->lru, &e->lru);
    c->entries++;
    c->bytes += cost;
    return 0;
}

uint64_t token_cache_evictions(const token_cache_t *c) { return c ? c->evictions : 0; }

size_t token_cache_entries(const token_cache_t *c) { return c ? c->entries : 0; }
