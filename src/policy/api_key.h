/* API clients by the key they present (X-Api-Key): the key's SHA-256 looked
 * up among the hashes of the configured keys. The index is built from one
 * configuration and read by every worker; each worker hashes with its own
 * digest context, so a lookup allocates nothing. A key's digest is compared
 * whole in constant time (CRYPTO_memcmp); which slot is probed depends only
 * on the digest of what the client sent, so timing tells nothing about the
 * keys ficus knows. */
#ifndef FICUS_POLICY_API_KEY_H
#define FICUS_POLICY_API_KEY_H

#include <openssl/evp.h>
#include <stddef.h>

#include "config/config.h"

#define API_KEY_MAX_BYTES 512 /* a longer X-Api-Key is no key of ours */

typedef struct api_key_index api_key_index_t;

/* The keys of cfg's clients. NULL when out of memory. */
api_key_index_t *api_key_index_new(const config_t *cfg);
void api_key_index_free(api_key_index_t *ix); /* NULL is a no-op */

/* A worker's SHA-256 context, reused for every key. */
typedef struct api_key_hasher {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
} api_key_hasher_t;
int api_key_hasher_init(api_key_hasher_t *h); /* 0 or FE_NOMEM */
void api_key_hasher_deinit(api_key_hasher_t *h);

/* The index in cfg->clients of the client whose key this is, or
 * CONFIG_NONE (unknown, empty or over API_KEY_MAX_BYTES). */
size_t api_key_lookup(const api_key_index_t *ix, api_key_hasher_t *h, const char *key, size_t len);

#endif
