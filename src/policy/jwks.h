/* A JSON Web Key Set (RFC 7517/7518/8037) as OpenSSL keys: parsed once from a
 * jwks_file or a jwks_url answer, then immutable and reference-counted (the
 * workers share one; a refresh parses a new one and swaps it). Each key
 * verifies the JWS signatures of the algorithms its type allows. */
#ifndef FICUS_POLICY_JWKS_H
#define FICUS_POLICY_JWKS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define JWKS_MAX_BYTES (1024 * 1024) /* a JWKS document, bytes */
#define JWKS_MAX_KEYS 256            /* keys kept from one document; more are skipped */
#define JWKS_MAX_KID_BYTES 256       /* a longer kid: the key is skipped */
#define JWKS_MAX_JSON_DEPTH 32       /* nesting of a JWKS or a JOSE header/payload */
#define JWKS_RSA_MIN_BITS 2048
#define JWKS_RSA_MAX_BITS 8192
#define JWKS_HMAC_MIN_BYTES 32 /* RFC 7518 3.2: at least the hash's size (HS384: 48, HS512: 64) */
#define JWKS_HMAC_MAX_BYTES 512
#define JWKS_MAX_TRIES 8 /* keys one token without kid (or with a shared kid) may try */

typedef struct jwks jwks_t;
typedef struct jwks_key jwks_key_t;

/* Parses a JWKS document ({"keys":[...]}). NULL, with a one-line reason in
 * err, when it is not one (not JSON, no "keys" array, over JWKS_MAX_BYTES);
 * a key ficus cannot use (unknown kty/crv/alg, "use" other than "sig",
 * key_ops without "verify", bad base64url, RSA modulus under 2048 bits,
 * HMAC secret under 32 bytes, anything malformed) is skipped and counted,
 * and err then says why the first was ("" when none was: for `ficus check`).
 * The set returned holds one reference. */
jwks_t *jwks_parse(const char *json, size_t len, char *err, size_t err_cap);

/* Takes one more reference (atomic: any thread); returns k. NULL: no-op. */
jwks_t *jwks_ref(jwks_t *k);

/* Drops one reference; the last frees the set. NULL: no-op. */
void jwks_unref(jwks_t *k);

/* Keys kept, and keys skipped as unusable. */
size_t jwks_count(const jwks_t *k);
size_t jwks_skipped(const jwks_t *k);

/* The keys that may verify a token of algorithm alg (one JWT_ALG_* bit) with
 * this kid: start with *pos = 0, call until NULL. With a kid, the keys of that
 * kid come first, then the keys without one (as Envoy: a hand-written set of
 * HMAC secrets often names none); kid NULL (a token without kid) allows every
 * key. Document order within each. A key whose type or own "alg" does not
 * allow alg is never returned (no algorithm confusion). */
const jwks_key_t *jwks_next(const jwks_t *k, const char *kid, size_t kid_len, uint32_t alg,
                            size_t *pos);

/* The JWT_ALG_* bit of a JWS "alg" name ("RS256", ..., "EdDSA"); 0 for any
 * other name ("none" included). */
uint32_t jwks_alg_from_name(const char *name);

/* Does the set hold a key with this kid, whatever its type? */
int jwks_has_kid(const jwks_t *k, const char *kid, size_t kid_len);

/* Verifies a JWS signature of msg with key under alg (one JWT_ALG_* bit):
 * 0 when it holds, FE_INVAL when it does not (or the key cannot do alg),
 * FE_NOMEM. ECDSA signatures are r||s (RFC 7518 3.4) of the exact length;
 * HMACs are compared in constant time. */
int jwks_key_verify(const jwks_key_t *key, uint32_t alg, const unsigned char *msg, size_t msg_len,
                    const unsigned char *sig, size_t sig_len);

/* Base64url without padding (RFC 7515 2), strict: only [A-Za-z0-9_-], no
 * '=', unused trailing bits zero. Decodes in[0..n) into out (at most cap
 * bytes); returns the bytes written, FE_PARSE on a bad encoding, FE_TOOBIG
 * when over cap. The JWS segments use it too. */
long jwks_b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap);

/* Parses a JSON text bounded for hostile input: at most JWKS_MAX_JSON_DEPTH
 * levels of nesting, duplicate keys refused, one object at top level. NULL
 * with a reason in err (may be NULL) otherwise. The caller json_decref()s. */
json_t *jwks_json_object(const char *text, size_t len, char *err, size_t err_cap);

#endif
