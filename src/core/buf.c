/* Bounded growable buffers and the per-thread fixed-size buffer pool. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

void buf_init(buf_t *b, size_t limit)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit;
}

void buf_deinit(buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int buf_reserve(buf_t *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    size_t need = b->len + n;
    if (b->limit && need > b->limit)
        return FE_TOOBIG;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (b->limit && cap > b->limit)
        cap = b->limit;
    char *p = realloc(b->data, cap);
    if (!p)
        return FE_NOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(buf_t *b, const void *p, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_append_str(buf_t *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[256];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return FE_INVAL;
    if ((size_t)n < sizeof tmp)
        return buf_append(b, tmp, (size_t)n);
    /* Longer: format aside, so the NUL never counts against the bound. */
    char *big = malloc((size_t)n + 1);
    if (!big)
        return FE_NOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

void buf_consume(buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void pbuf_pool_init(pbuf_pool_t *p, size_t buf_bytes, size_t max_free)
{
    p->free = NULL;
    p->n_free = 0;
    p->max_free = max_free;
    p->buf_bytes = buf_bytes;
    p->n_out = 0;
}

void pbuf_pool_deinit(pbuf_pool_t *p)
{
    while (p->free) {
        pbuf_t *b = p->free;
        p->free = b->next;
        free(b);
    }
    p->n_free = 0;
}

pbuf_t *pbuf_get(pbuf_pool_t *p)
{
    pbuf_t *b = p->free;
    if (b) {
        p->free = b->next;
        p->n_free--;
    } else {
        b = malloc(sizeof *b + p->buf_bytes);
        if (!b)
            return NULL;
        b->cap = (uint32_t)p->buf_bytes;
    }
    b->next = NULL;
    b->len = b->off = 0;
    p->n_out++;
    return b;
}

void pbuf_put(pbuf_pool_t *p, pbuf_t *b)
{
    if (!b)
        return;
    p->n_out--;
    if (p->n_free >= p->max_free) {
        free(b);
        return;
    }
    b->next = p->free;
    p->free = b;
    p->n_free++;
}

pbuf_t *pbuf_chain_room(pbuf_pool_t *p, pbuf_chain_t *c, size_t need)
{
    if (c->last && pbuf_room(c->last) >= need)
        return c->last;
    pbuf_t *b = pbuf_get(p);
    if (!b)
        return NULL;
    b->next = NULL;
    b->off = b->len = 0;
    if (c->last)
        c->last->next = b;
    else
        c->first = b;
    c->last = b;
    return b;
}

int pbuf_chain_append(pbuf_pool_t *p, pbuf_chain_t *c, const void *data, size_t n)
{
    const char *s = data;
    while (n) {
        pbuf_t *b = pbuf_chain_room(p, c, 1);
        if (!b)
            return FE_NOMEM;
        size_t k = pbuf_room(b) < n ? pbuf_room(b) : n;
        memcpy(pbuf_tail(b), s, k);
        b->len += (uint32_t)k;
        s += k;
        n -= k;
    }
    return 0;
}

void pbuf_chain_consume(pbuf_pool_t *p, pbuf_chain_t *c, size_t n)
{
    while (c->first && (n || c->first->len == 0)) {
        pbuf_t *b = c->first;
        size_t k = b->len < n ? b->len : n;
        b->off += (uint32_t)k;
        b->len -= (uint32_t)k;
        n -= k;
        if (b->len == 0) {
            c->first = b->next;
            if (!c->first)
                c->last = NULL;
            b->next = NULL;
            pbuf_put(p, b);
        }
    }
}

size_t pbuf_chain_read(pbuf_pool_t *p, pbuf_chain_t *c, void *out, size_t cap)
{
    size_t n = 0;
    while (n < cap && c->first) {
        pbuf_t *b = c->first;
        size_t k = b->len < cap - n ? b->len : cap - n;
        memcpy((char *)out + n, pbuf_head(b), k);
        n += k;
        pbuf_chain_consume(p, c, k);
    }
    return n;
}

size_t pbuf_chain_len(const pbuf_chain_t *c)
{
    size_t n = 0;
    for (const pbuf_t *b = c->first; b; b = b->next)
        n += b->len;
    return n;
}

void pbuf_chain_free(pbuf_pool_t *p, pbuf_chain_t *c)
{
    while (c->first) {
        pbuf_t *b = c->first;
        c->first = b->next;
        b->next = NULL;
        pbuf_put(p, b);
    }
    c->last = NULL;
}

void pbuf_compact(pbuf_t *b)
{
    if (b->off == 0)
        return;
    if (b->len)
        memmove(b->data, b->data + b->off, b->len);
    b->off = 0;
}
