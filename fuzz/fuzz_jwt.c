/* libFuzzer target for jwt_verify: token bytes against a fixed small JWKS
 * (the RFC 7515 A.1 HMAC key, the RFC 8037 Ed25519 key, a P-256 key) and
 * provider. An input starting with '{' is "header JSON \n payload JSON"
 * instead, encoded and signed HS256 here with the HMAC key, so that header
 * and claims checks are reached. Never crashes or leaks; a token that
 * verifies gives claims whose header texts hold no CR, LF or NUL, and the
 * worker's token cache returns what was put for it. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/jwt.h"
#include "policy/token_cache.h"

static const char jwks_doc[] = "{\"keys\":["
                               "{\"kty\":\"oct\",\"k\":\"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-"
                               "EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcg"
                               "UuTwjAzZr1Z9CAow\"},"
                               "{\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\",\"x\":"
                               "\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
                               "{\"kty\":\"EC\",\"kid\":\"p256\",\"crv\":\"P-256\",\"x\":"
                               "\"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY\","
                               "\"y\":\"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU\"}]}";

static const unsigned char hmac_key[64] = {
    0x03, 0x23, 0x35, 0x4b, 0x2b, 0x0f, 0xa5, 0xbc, 0x83, 0x7e, 0x06, 0x65, 0x77,
    0x7b, 0xa6, 0x8f, 0x5a, 0xb3, 0x28, 0xe6, 0xf0, 0x54, 0xc9, 0x28, 0xa9, 0x0f,
    0x84, 0xb2, 0xd2, 0x50, 0x2e, 0xbf, 0xd3, 0xfb, 0x5a, 0x92, 0xd2, 0x06, 0x47,
    0xef, 0x96, 0x8a, 0xb4, 0xc3, 0x77, 0x62, 0x3d, 0x22, 0x3d, 0x2e, 0x21, 0x72,
    0x05, 0x2e, 0x4f, 0x08, 0xc0, 0xcd, 0x9a, 0xf5, 0x67, 0xd0, 0x80, 0xa3}; /* the k above */

static char *auds[] = {"bob", "saul"};

/* Base64url without padding of in[0..n) at out; returns the end. */
static char *encode(const unsigned char *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        for (bits += 8; bits >= 6; bits -= 6)
            *out++ = abc[(acc >> (bits - 6)) & 63];
    }
    if (bits > 0)
        *out++ = abc[(acc << (6 - bits)) & 63];
    return out;
}

/* "header\npayload" as a compact token signed HS256 with hmac_key. */
static size_t sign_hs256(const uint8_t *data, size_t size, char *out)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hn = nl ? (size_t)(nl - data) : size;
    char *p = encode(data, hn, out);
    *p++ = '.';
    if (nl)
        p = encode(nl + 1, size - hn - 1, p);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha256(), hmac_key, sizeof hmac_key, (unsigned char *)out, (size_t)(p - out), mac,
              &mac_len))
        abort();
    *p++ = '.';
    p = encode(mac, mac_len, p);
    return (size_t)(p - out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static jwks_t *keys;
    static token_cache_t *cache;
    if (!keys) {
        keys = jwks_parse(jwks_doc, sizeof jwks_doc - 1, NULL, 0);
        cache = token_cache_new(64, 64 * 1024);
        if (!keys || jwks_count(keys) != 3 || !cache)
            abort();
    }
    /* The provider varies with the first byte: audiences checked or not. */
    config_jwt_provider_t p = {
        .issuer = "joe",
        .audiences = auds,
        .n_audiences = size > 0 && (data[0] & 1) ? 2 : 0,
        .algorithms = UINT32_MAX,
        .leeway_ms = 1000,
    };
    static char signed_token[4096 / 3 * 4 + 128];
    if (size > 0 && data[0] == '{' && size <= 4096) {
        size = sign_hs256(data, size, signed_token);
        data = (const uint8_t *)signed_token;
    }
    jwt_verified_t v;
    jwt_result_t r = jwt_verify((const char *)data, size, keys, &p, 1300819379, &v);
    if (jwt_result_name(r) == NULL)
        abort();
    if (r != JWT_OK) {
        if (v.claims || v.exp_s != 0)
            abort();
        return 0;
    }
    if (!json_is_object(v.claims))
        abort();
    const char *names[] = {"iss", "sub", "aud", "exp", "http://example.com/is_root"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char text[128];
        int n = jwt_claim_text(v.claims, names[i], text, sizeof text);
        if (n >= 0 && (strlen(text) != (size_t)n || strpbrk(text, "\r\n")))
            abort();
    }
    if (token_cache_put(cache, (const char *)data, size, &v.exp_s, sizeof v.exp_s, UINT64_MAX) ==
        0) {
        size_t len = 0;
        const int64_t *exp = token_cache_get(cache, (const char *)data, size, 0, &len);
        if (!exp || len != sizeof *exp || *exp != v.exp_s)
            abort();
    }
    json_decref(v.claims);
    return 0;
}
