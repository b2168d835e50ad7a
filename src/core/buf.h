/* Byte buffers with a hard bound, and a per-thread pool of fixed-size ones.
 * buf_t grows up to its cap and never past it: crossing the cap is FE_TOOBIG. */
#ifndef FICUS_CORE_BUF_H
#define FICUS_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;   /* allocated */
    size_t limit; /* never grows past this (0 = no bound: config/admin only) */
} buf_t;

void buf_init(buf_t *b, size_t limit);
void buf_deinit(buf_t *b);
/* Ensures room for n more bytes: 0, FE_NOMEM or FE_TOOBIG. */
int buf_reserve(buf_t *b, size_t n);
int buf_append(buf_t *b, const void *p, size_t n);
int buf_append_str(buf_t *b, const char *s);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes. */
void buf_consume(buf_t *b, size_t n);
static inline void buf_reset(buf_t *b) { b->len = 0; }

/* Fixed-size buffers recycled through a free list (one pool per thread, no
 * locking). Used for request heads and for data held back by backpressure. */
typedef struct pbuf {
    struct pbuf *next; /* free-list link while pooled */
    uint32_t len;      /* bytes used from data[off] */
    uint32_t off;      /* first unconsumed byte */
    uint32_t cap;
    char data[];
} pbuf_t;

typedef struct pbuf_pool {
    pbuf_t *free;
    size_t n_free;
    size_t max_free;
    size_t buf_bytes;
    size_t n_out; /* handed out and not returned */
} pbuf_pool_t;

void pbuf_pool_init(pbuf_pool_t *p, size_t buf_bytes, size_t max_free);
void pbuf_pool_deinit(pbuf_pool_t *p);
pbuf_t *pbuf_get(pbuf_pool_t *p);
void pbuf_put(pbuf_pool_t *p, pbuf_t *b); /* NULL is a no-op */
static inline char *pbuf_head(pbuf_t *b) { return b->data + b->off; }
static inline size_t pbuf_room(const pbuf_t *b) { return b->cap - b->off - b->len; }
static inline char *pbuf_tail(pbuf_t *b) { return b->data + b->off + b->len; }
/* Moves unconsumed bytes to the start to make room at the end. */
void pbuf_compact(pbuf_t *b);

/* Pooled buffers in a queue (linked through next): bytes appended at the
 * end, consumed from the front; a buffer goes back to its pool once read. */
typedef struct pbuf_chain {
    pbuf_t *first;
    pbuf_t *last;
} pbuf_chain_t;

/* The last buffer with at least `need` bytes of room (a new one when the
 * last has less); NULL when the pool has none. */
pbuf_t *pbuf_chain_room(pbuf_pool_t *p, pbuf_chain_t *c, size_t need);
/* Appends n bytes: 0, or FE_NOMEM (what fitted stays). */
int pbuf_chain_append(pbuf_pool_t *p, pbuf_chain_t *c, const void *data, size_t n);
/* Drops n bytes from the front. */
void pbuf_chain_consume(pbuf_pool_t *p, pbuf_chain_t *c, size_t n);
/* Copies up to cap bytes from the front into out and drops them; returns how many. */
size_t pbuf_chain_read(pbuf_pool_t *p, pbuf_chain_t *c, void *out, size_t cap);
/* Bytes queued. */
size_t pbuf_chain_len(const pbuf_chain_t *c);
/* Every buffer back to the pool. */
void pbuf_chain_free(pbuf_pool_t *p, pbuf_chain_t *c);

#endif
