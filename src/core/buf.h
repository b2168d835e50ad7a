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

#endif
