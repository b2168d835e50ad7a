/* JSON Web Token verification (RFC 7519 over a compact RFC 7515 JWS): the
 * token of Authorization: Bearer, checked against a provider's JWKS,
 * algorithms, issuer, audiences and leeway. Sans-I/O: bytes and a clock in,
 * a result and the claims out. Any thread (the key set is shared, read-only). */
#ifndef FICUS_POLICY_JWT_H
#define FICUS_POLICY_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "policy/jwks.h"

#define JWT_MAX_BYTES 8192 /* a whole compact token */

typedef enum {
    JWT_OK = 0,
    JWT_MALFORMED,     /* not three base64url segments of JSON objects, bad claim types, crit */
    JWT_ALG_REFUSED,   /* none, unknown, not in the provider's algorithms, or not the key's */
    JWT_UNKNOWN_KID,   /* no key of the set has the token's kid (or the set is empty) */
    JWT_BAD_SIGNATURE, /* no candidate key verifies the signature */
    JWT_EXPIRED,       /* exp <= now - leeway */
    JWT_NOT_YET_VALID, /* nbf > now + leeway */
    JWT_BAD_ISSUER,    /* iss missing or not the provider's issuer */
    JWT_BAD_AUDIENCE   /* aud missing or none of the provider's audiences */
} jwt_result_t;

/* The reason label of ficus_auth_failures_total: "ok", "malformed",
 * "algorithm", "unknown_kid", "signature", "expired", "not_yet_valid",
 * "issuer", "audience" ("malformed" for a value out of the enum). */
const char *jwt_result_name(jwt_result_t r);

typedef struct jwt_verified {
    int64_t exp_s;  /* the exp claim in seconds; 0: no exp */
    json_t *claims; /* the payload object; the caller json_decref()s it */
} jwt_verified_t;

/* Verifies token[0..len) (at most JWT_MAX_BYTES) with the keys and rules of
 * provider p at now_s (Unix seconds). JWT_OK fills *out (claims owned by the
 * caller); any other result leaves out->claims NULL and out->exp_s 0. A token
 * without kid tries the keys of its algorithm's type, JWKS_MAX_TRIES at most.
 * Header parameters that would name another key (jku, jwk, x5u, x5c) are
 * ignored: only keys of the set verify. */
jwt_result_t jwt_verify(const char *token, size_t len, const jwks_t *keys,
                        const config_jwt_provider_t *p, int64_t now_s, jwt_verified_t *out);

/* Claim `name` of claims as a header value, NUL-terminated in out[0..cap): a
 * string as is, a number/bool/null as JSON text, an array/object as compact
 * JSON. Returns its length; FE_NOTFOUND when absent, FE_INVAL when it holds
 * a byte a header value must not (CR, LF, NUL, DEL, controls but tab),
 * FE_TOOBIG when it does not fit with its NUL; out is "" then (cap > 0). */
int jwt_claim_text(const json_t *claims, const char *name, char *out, size_t cap);

#endif
