/* An intrusive recency list: the head is the most recently used, the tail
 * the first to evict. An entry embeds an lru_node_t as its first member, so
 * a node is its entry. Used by the token cache and the aggregation cache. */
#ifndef FICUS_CORE_LRU_H
#define FICUS_CORE_LRU_H

#include <stddef.h>

typedef struct lru_node {
    struct lru_node *prev, *next; /* prev toward the most recent */
} lru_node_t;

typedef struct lru_list {
    lru_node_t *head, *tail;
} lru_list_t;

static inline void lru_unlink(lru_list_t *l, lru_node_t *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

static inline void lru_push_front(lru_list_t *l, lru_node_t *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head)
        l->head->prev = n;
    l->head = n;
    if (!l->tail)
        l->tail = n;
}

#endif
