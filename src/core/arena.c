/* Bump allocator over a list of malloc'd blocks. */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

struct arena_block {
    arena_block_t *next;
    size_t used;
    size_t cap;
    _Alignas(16) char data[];
};

void arena_init(arena_t *a, size_t block_bytes)
{
    a->head = NULL;
    a->block_bytes = block_bytes ? block_bytes : 8192;
}

void arena_deinit(arena_t *a)
{
    while (a->head) {
        arena_block_t *b = a->head;
        a->head = b->next;
        free(b);
    }
}

void *arena_alloc(arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_block_t *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > a->block_bytes ? n : a->block_bytes;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(arena_t *a, const char *s) { return s ? arena_strndup(a, s, strlen(s)) : NULL; }
