/* A worker's cache of what verifying a token gave (one thread, no locks):
 * token bytes -> an opaque value until an expiry, so that a repeated token
 * costs a hash lookup and one memcmp, not a signature check. Bounded in
 * entries and in bytes; when a put crosses either bound the least recently
 * used entries are evicted (a hit makes an entry the most recent). */
#ifndef FICUS_POLICY_TOKEN_CACHE_H
#define FICUS_POLICY_TOKEN_CACHE_H

#include <stddef.h>
#include <stdint.h>

/* What one entry costs in the byte bound besides its token and value. */
#define TOKEN_CACHE_ENTRY_OVERHEAD 64

typedef struct token_cache token_cache_t;

/* A cache of at most max_entries entries (> 0) and max_bytes bytes, counted
 * as token + value + TOKEN_CACHE_ENTRY_OVERHEAD per entry. NULL: no memory
 * or a zero bound. */
token_cache_t *token_cache_new(size_t max_entries, size_t max_bytes);

/* Frees the cache and every entry. NULL: no-op. */
void token_cache_free(token_cache_t *c);

/* The value cached for token[0..len) and its length in *value_len, or NULL
 * when absent or expired (expires_ms <= now_ms; the entry is dropped then).
 * The pointer holds until the next put or free; no allocation. */
const void *token_cache_get(token_cache_t *c, const char *token, size_t len, uint64_t now_ms,
                            size_t *value_len);

/* Caches a copy of value[0..value_len) for a copy of token[0..len) until
 * expires_ms, replacing any entry of the same token, evicting the least
 * recently used ones to stay within both bounds. 0, FE_TOOBIG when the entry
 * alone crosses the byte bound, FE_NOMEM. */
int token_cache_put(token_cache_t *c, const char *token, size_t len, const void *value,
                    size_t value_len, uint64_t expires_ms);

/* Entries evicted to stay within the bounds since the cache was made
 * (expired entries dropped by a get are not counted). */
uint64_t token_cache_evictions(const token_cache_t *c);

/* Entries held now. */
size_t token_cache_entries(const token_cache_t *c);

#endif
