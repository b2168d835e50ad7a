/* The instance's session tokens; see session_store.h. A hash table (a random
 * seed per store, so tokens an attacker picks do not pile up in one bucket)
 * of entries that are either pending (in a list, oldest first, with the
 * workers waiting for them) or answered (in a min-heap by expiry). Room is
 * made by evicting the answered entry that expires first (expired ones come
 * before live ones, and for entries of one cache_ttl it is the oldest), and
 * only when none is left the oldest pending one, whose waiters are woken.
 * Workers are woken after the lock is released. */
#include "policy/session_store.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "core/hash.h"
#include "core/rand.h"

typedef struct entry {
    struct entry *hnext;       /* bucket chain */
    struct entry *prev, *next; /* the pending list, while pending */
    uint64_t hash;
    uint64_t expires_ms; /* answered: until when it answers */
    size_t heap_idx;     /* answered: its place in the heap */
    char *jwt;           /* SESSION_USER's JWT */
    size_t jwt_len;
    size_t token_len;
    session_state_t state; /* USER, NO_USER, UNAVAILABLE or PENDING */
    uint64_t waiting[];    /* pending: a bit per waiting worker; then the token */
} entry_t;

typedef struct wake {
    void (*fn)(void *ctx);
    void *ctx;
} wake_t;

/* The workers to wake once the lock is released. */
typedef struct wake_list {
    wake_t w[MAX_WORKERS];
    unsigned n;
} wake_list_t;

struct session_store {
    pthread_mutex_t mu;
    entry_t **buckets;
    size_t mask;
    entry_t **heap; /* answered entries, soonest expiry first */
    size_t heap_n;
    entry_t *pend_head, *pend_tail; /* pending entries, oldest first */
    size_t n, bytes;
    size_t max_entries, max_bytes;
    unsigned n_workers;
    size_t words; /* of each entry's waiting bitmap */
    uint64_t seed;
    wake_t *wake;
};

static char *entry_token(const session_store_t *s, entry_t *e)
{
    return (char *)(e->waiting + s->words);
}

static size_t entry_bytes(const session_store_t *s, size_t token_len)
{
    return sizeof(entry_t) + s->words * sizeof(uint64_t) + token_len;
}

static size_t words_for(unsigned n_workers) { return ((size_t)n_workers + 63) / 64; }

size_t session_store_entry_max_bytes(unsigned n_workers)
{
    return sizeof(entry_t) + words_for(n_workers) * sizeof(uint64_t) + SESSION_TOKEN_MAX_BYTES +
           SESSION_JWT_MAX_BYTES;
}

/* ---- the heap of answered entries ---- */

static void heap_set(session_store_t *s, size_t i, entry_t *e)
{
    s->heap[i] = e;
    e->heap_idx = i;
}

static void heap_up(session_store_t *s, size_t i)
{
    entry_t *e = s->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->expires_ms <= e->expires_ms)
            break;
        heap_set(s, i, s->heap[p]);
        i = p;
    }
    heap_set(s, i, e);
}

static void heap_down(session_store_t *s, size_t i)
{
    entry_t *e = s->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && s->heap[c + 1]->expires_ms < s->heap[c]->expires_ms)
            c++;
        if (e->expires_ms <= s->heap[c]->expires_ms)
            break;
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, e);
}

static void heap_push(session_store_t *s, entry_t *e)
{
    heap_set(s, s->heap_n++, e);
    heap_up(s, e->heap_idx);
}

static void heap_remove(session_store_t *s, entry_t *e)
{
    size_t i = e->heap_idx;
    entry_t *last = s->heap[--s->heap_n];
    if (last == e)
        return;
    heap_set(s, i, last);
    heap_down(s, i);
    heap_up(s, last->heap_idx);
}

/* ---- the pending list ---- */

static void pending_append(session_store_t *s, entry_t *e)
{
    e->state = SESSION_PENDING;
    memset(e->waiting, 0, s->words * sizeof(uint64_t));
    e->next = NULL;
    e->prev = s->pend_tail;
    if (s->pend_tail)
        s->pend_tail->next = e;
    else
        s->pend_head = e;
    s->pend_tail = e;
}

static void pending_remove(session_store_t *s, entry_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->pend_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->pend_tail = e->prev;
    e->prev = e->next = NULL;
}

/* Adds the workers waiting for e to the wake list, and forgets them. */
static void collect_waiters(session_store_t *s, entry_t *e, wake_list_t *wl)
{
    for (size_t w = 0; w < s->words; w++) {
        uint64_t bits = e->waiting[w];
        e->waiting[w] = 0;
        while (bits) {
            unsigned worker = (unsigned)(w * 64) + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (s->wake[worker].fn)
                wl->w[wl->n++] = s->wake[worker];
        }
    }
}

static void wake_all(const wake_list_t *wl)
{
    for (unsigned i = 0; i < wl->n; i++)
        wl->w[i].fn(wl->w[i].ctx);
}

/* ---- the table ---- */

static uint64_t token_hash(const session_store_t *s, const char *token, size_t len)
{
    return hash_mix(hash_fnv1a(s->seed, token, len));
}

static entry_t *find(session_store_t *s, const char *token, size_t len, uint64_t h)
{
    for (entry_t *e = s->buckets[h & s->mask]; e; e = e->hnext)
        if (e->hash == h && e->token_len == len && memcmp(entry_token(s, e), token, len) == 0)
            return e;
    return NULL;
}

static void drop_jwt(session_store_t *s, entry_t *e)
{
    s->bytes -= e->jwt_len;
    free(e->jwt);
    e->jwt = NULL;
    e->jwt_len = 0;
}

/* Removes e from the table and frees it; a pending entry's waiters are
 * woken (an answered entry has none). */
static void evict(session_store_t *s, entry_t *e, wake_list_t *wl)
{
    entry_t **p = &s->buckets[e->hash & s->mask];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    if (e->state == SESSION_PENDING) {
        collect_waiters(s, e, wl);
        pending_remove(s, e);
    } else {
        heap_remove(s, e);
    }
    drop_jwt(s, e);
    s->bytes -= entry_bytes(s, e->token_len);
    s->n--;
    free(e);
}

/* Evicts until one more entry (when adding) and need more bytes fit. An
 * entry held by the caller is in neither the heap nor the pending list, so
 * it is never chosen; max_bytes holds the biggest entry on its own. */
static void make_room(session_store_t *s, bool adding, size_t need, wake_list_t *wl)
{
    while (s->n > 0 && (s->n + adding > s->max_entries || s->bytes + need > s->max_bytes)) {
        if (s->heap_n > 0)
            evict(s, s->heap[0], wl);
        else if (s->pend_head)
            evict(s, s->pend_head, wl);
        else
            break;
    }
}

session_store_t *session_store_new(size_t max_entries, size_t max_bytes, unsigned n_workers)
{
    if (max_entries == 0 || n_workers == 0 || n_workers > MAX_WORKERS ||
        max_bytes < session_store_entry_max_bytes(n_workers))
        return NULL;
    session_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->words = words_for(n_workers);
    /* No more entries than the bytes can hold at their smallest: the
     * table and the heap are sized by them. */
    size_t smallest = entry_bytes(s, 1);
    if (max_entries > max_bytes / smallest)
        max_entries = max_bytes / smallest;
    size_t nb = 16;
    while (nb < max_entries)
        nb *= 2;
    s->max_entries = max_entries;
    s->max_bytes = max_bytes;
    s->n_workers = n_workers;
    s->mask = nb - 1;
    s->seed = rand_seed((uint64_t)(uintptr_t)s);
    s->buckets = calloc(nb, sizeof *s->buckets);
    if (!s->buckets)
        goto fail_free;
    s->heap = calloc(max_entries, sizeof *s->heap);
    if (!s->heap)
        goto fail_free_buckets;
    s->wake = calloc(n_workers, sizeof *s->wake);
    if (!s->wake)
        goto fail_free_heap;
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        goto fail_free_wake;
    return s;

fail_free_wake:
    free(s->wake);
fail_free_heap:
    free(s->heap);
fail_free_buckets:
    free(s->buckets);
fail_free:
    free(s);
    return NULL;
}

void session_store_free(session_store_t *s)
{
    if (!s)
        return;
    for (size_t b = 0; b <= s->mask; b++) {
        entry_t *e = s->buckets[b];
        while (e) {
            entry_t *next = e->hnext;
            free(e->jwt);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&s->mu);
    free(s->wake);
    free(s->heap);
    free(s->buckets);
    free(s);
}

void session_store_set_wake(session_store_t *s, unsigned worker, void (*wake)(void *ctx), void *ctx)
{
    if (worker >= s->n_workers)
        return;
    pthread_mutex_lock(&s->mu);
    s->wake[worker] = (wake_t){wake, ctx};
    pthread_mutex_unlock(&s->mu);
}

/* An answered entry's answer, copied out. */
static session_state_t answer(const entry_t *e, char *jwt, size_t jwt_cap, size_t *jwt_len,
                              uint64_t *expires_ms)
{
    if (expires_ms)
        *expires_ms = e->expires_ms;
    if (e->state != SESSION_USER)
        return e->state;
    if (jwt_len)
        *jwt_len = e->jwt_len;
    if (!jwt || jwt_cap < e->jwt_len)
        return SESSION_UNAVAILABLE;
    memcpy(jwt, e->jwt, e->jwt_len);
    return SESSION_USER;
}

session_state_t session_store_get(session_store_t *s, const char *token, size_t len,
                                  uint64_t now_ms, unsigned worker, char *jwt, size_t jwt_cap,
                                  size_t *jwt_len, uint64_t *expires_ms)
{
    if (jwt_len)
        *jwt_len = 0;
    if (expires_ms)
        *expires_ms = now_ms;
    if (len == 0 || len > SESSION_TOKEN_MAX_BYTES || worker >= s->n_workers)
        return len == 0 || len > SESSION_TOKEN_MAX_BYTES ? SESSION_NO_USER : SESSION_UNAVAILABLE;
    uint64_t h = token_hash(s, token, len);
    wake_list_t wl;
    wl.n = 0;
    session_state_t st;
    pthread_mutex_lock(&s->mu);
    entry_t *e = find(s, token, len, h);
    if (e && e->state == SESSION_PENDING) {
        e->waiting[worker / 64] |= UINT64_C(1) << (worker % 64);
        st = SESSION_PENDING;
    } else if (e && now_ms < e->expires_ms) {
        st = answer(e, jwt, jwt_cap, jwt_len, expires_ms);
    } else if (e) {
        /* Expired: exchanged again, by the caller. */
        heap_remove(s, e);
        drop_jwt(s, e);
        pending_append(s, e);
        st = SESSION_MINE;
    } else {
        size_t need = entry_bytes(s, len);
        make_room(s, true, need, &wl);
        e = malloc(need);
        if (e) {
            memset(e, 0, sizeof *e);
            e->hash = h;
            e->token_len = len;
            memcpy(entry_token(s, e), token, len);
            e->hnext = s->buckets[h & s->mask];
            s->buckets[h & s->mask] = e;
            pending_append(s, e);
            s->n++;
            s->bytes += need;
        }
        st = e ? SESSION_MINE : SESSION_UNAVAILABLE;
    }
    pthread_mutex_unlock(&s->mu);
    wake_all(&wl);
    return st;
}

void session_store_done(session_store_t *s, const char *token, size_t len, session_state_t result,
                        const char *jwt, size_t jwt_len, uint64_t expires_ms)
{
    if (len == 0 || len > SESSION_TOKEN_MAX_BYTES)
        return;
    if (result != SESSION_USER && result != SESSION_NO_USER && result != SESSION_PENDING)
        result = SESSION_UNAVAILABLE;
    if (result == SESSION_USER && (!jwt || jwt_len == 0 || jwt_len > SESSION_JWT_MAX_BYTES))
        result = SESSION_UNAVAILABLE;
    uint64_t h = token_hash(s, token, len);
    wake_list_t wl;
    wl.n = 0;
    pthread_mutex_lock(&s->mu);
    entry_t *e = find(s, token, len, h);
    if (!e)
        goto unlock;
    if (result == SESSION_PENDING) {
        /* Abandoned: an answer that came meanwhile (a second owner's) stays. */
        if (e->state == SESSION_PENDING)
            evict(s, e, &wl);
        goto unlock;
    }
    /* Held by this call alone while it is changed: in neither the pending
     * list nor the heap, so room is never made by evicting it. */
    if (e->state == SESSION_PENDING) {
        collect_waiters(s, e, &wl);
        pending_remove(s, e);
    } else {
        /* A second owner after an eviction: the newer answer wins. */
        heap_remove(s, e);
        drop_jwt(s, e);
    }
    if (result == SESSION_USER) {
        make_room(s, false, jwt_len, &wl);
        e->jwt = malloc(jwt_len);
        if (e->jwt) {
            memcpy(e->jwt, jwt, jwt_len);
            e->jwt_len = jwt_len;
            s->bytes += jwt_len;
        } else {
            result = SESSION_UNAVAILABLE;
        }
    }
    e->state = result;
    e->expires_ms = expires_ms;
    heap_push(s, e);
unlock:
    pthread_mutex_unlock(&s->mu);
    wake_all(&wl);
}

size_t session_store_entries(session_store_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t session_store_bytes(session_store_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->bytes;
    pthread_mutex_unlock(&s->mu);
    return n;
}
