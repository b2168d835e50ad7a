/* API keys; see api_key.h. */
#include "policy/api_key.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

typedef struct key_slot {
    const uint8_t *digest; /* NULL: free */
    size_t client;
} key_slot_t;

struct api_key_index {
    key_slot_t *slots;
    size_t mask; /* slots - 1, a power of two at least twice the keys */
};

static size_t slot_of(const uint8_t *digest, size_t mask)
{
    uint64_t h;
    memcpy(&h, digest, sizeof h); /* a digest's bytes are already spread */
    return (size_t)h & mask;
}

api_key_index_t *api_key_index_new(const config_t *cfg)
{
    api_key_index_t *ix = calloc(1, sizeof *ix);
    if (!ix)
        return NULL;
    size_t n = 0, cap = 8;
    for (size_t i = 0; i < cfg->n_clients; i++)
        n += cfg->clients[i].n_keys;
    while (cap < 2 * n)
        cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->slots) {
        free(ix);
        return NULL;
    }
    ix->mask = cap - 1;
    for (size_t i = 0; i < cfg->n_clients; i++) {
        const config_client_t *cl = &cfg->clients[i];
        for (size_t k = 0; k < cl->n_keys; k++) {
            size_t s = slot_of(cl->key_sha256[k], ix->mask);
            while (ix->slots[s].digest)
                s = (s + 1) & ix->mask;
            ix->slots[s].digest = cl->key_sha256[k];
            ix->slots[s].client = i;
        }
    }
    return ix;
}

void api_key_index_free(api_key_index_t *ix)
{
    if (!ix)
        return;
    free(ix->slots);
    free(ix);
}

int api_key_hasher_init(api_key_hasher_t *h)
{
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    if (!h->md || !h->ctx) {
        api_key_hasher_deinit(h);
        return FE_NOMEM;
    }
    return 0;
}

void api_key_hasher_deinit(api_key_hasher_t *h)
{
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    h->ctx = NULL;
    h->md = NULL;
}

size_t api_key_lookup(const api_key_index_t *ix, api_key_hasher_t *h, const char *key, size_t len)
{
    uint8_t d[32];
    unsigned dl = 0;
    if (len == 0 || len > API_KEY_MAX_BYTES || !ix)
        return CONFIG_NONE;
    if (!EVP_DigestInit_ex2(h->ctx, h->md, NULL) || !EVP_DigestUpdate(h->ctx, key, len) ||
        !EVP_DigestFinal_ex(h->ctx, d, &dl) || dl != sizeof d)
        return CONFIG_NONE;
    for (size_t s = slot_of(d, ix->mask); ix->slots[s].digest; s = (s + 1) & ix->mask)
        if (CRYPTO_memcmp(ix->slots[s].digest, d, sizeof d) == 0)
            return ix->slots[s].client;
    return CONFIG_NONE;
}
