/* A bump allocator: many small allocations, one free. Holds a config
 * snapshot's strings and arrays, so the snapshot is freed in one call. */
#ifndef FICUS_CORE_ARENA_H
#define FICUS_CORE_ARENA_H

#include <stddef.h>

typedef struct arena_block arena_block_t;

typedef struct arena {
    arena_block_t *head;
    size_t block_bytes;
} arena_t;

void arena_init(arena_t *a, size_t block_bytes);
void arena_deinit(arena_t *a); /* frees every allocation at once */
/* Zeroed, 16-byte aligned memory; NULL when out of memory. */
void *arena_alloc(arena_t *a, size_t n);
char *arena_strndup(arena_t *a, const char *s, size_t n);
char *arena_strdup(arena_t *a, const char *s); /* NULL in, NULL out */

#endif
