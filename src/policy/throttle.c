/* Client counters (policy/throttle.h): a chained hash table under a mutex,
 * for activations only; each counter is its own allocation so that its
 * address stays while the table grows. Requests touch only the counters. */
#include "policy/throttle.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"

#define INITIAL_BUCKETS 16

typedef struct entry {
    atomic_uint count; /* first: the address handed out */
    struct entry *next;
    char id[];
} entry_t;

struct throttle {
    pthread_mutex_t mu; /* guards the table, never the counters */
    entry_t **buckets;
    size_t n_buckets; /* a power of two */
    size_t n_entries;
};

throttle_t *throttle_new(void)
{
    throttle_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->buckets = calloc(INITIAL_BUCKETS, sizeof *t->buckets);
    if (!t->buckets)
        goto fail_free;
    t->n_buckets = INITIAL_BUCKETS;
    if (pthread_mutex_init(&t->mu, NULL) != 0)
        goto fail_free_buckets;
    return t;

fail_free_buckets:
    free(t->buckets);
fail_free:
    free(t);
    return NULL;
}

void throttle_free(throttle_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        entry_t *e = t->buckets[i];
        while (e) {
            entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Doubles the chains when entries outnumber them; on failure the table stays
 * as it was (longer chains, still correct). */
static void table_grow(throttle_t *t)
{
    size_t n = t->n_buckets * 2;
    entry_t **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < t->n_buckets; i++) {
        entry_t *e = t->buckets[i];
        while (e) {
            entry_t *next = e->next;
            size_t j = (size_t)hash_bytes(e->id, strlen(e->id)) & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
}

atomic_uint *throttle_counter(throttle_t *t, const char *client_id)
{
    if (!client_id)
        return NULL;
    size_t len = strlen(client_id);
    uint64_t h = hash_bytes(client_id, len);
    atomic_uint *c = NULL;
    pthread_mutex_lock(&t->mu);
    entry_t **head = &t->buckets[(size_t)h & (t->n_buckets - 1)];
    for (entry_t *e = *head; e; e = e->next)
        if (strcmp(e->id, client_id) == 0) {
            c = &e->count;
            goto unlock;
        }
    entry_t *e = malloc(sizeof *e + len + 1);
    if (!e)
        goto unlock;
    atomic_init(&e->count, 0);
    memcpy(e->id, client_id, len + 1);
    e->next = *head;
    *head = e;
    c = &e->count;
    if (++t->n_entries > t->n_buckets)
        table_grow(t);
unlock:
    pthread_mutex_unlock(&t->mu);
    return c;
}

bool throttle_acquire(atomic_uint *c, uint32_t max)
{
    unsigned v = atomic_load_explicit(c, memory_order_relaxed);
    do {
        if (v >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(c, &v, v + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

void throttle_release(atomic_uint *c)
{
    unsigned v = atomic_load_explicit(c, memory_order_relaxed);
    do {
        if (v == 0)
            return;
    } while (!atomic_compare_exchange_weak_explicit(c, &v, v - 1, memory_order_relaxed,
                                                    memory_order_relaxed));
}
