/* Compact JWS / JWT verification; see jwt.h. Order of the checks: shape,
 * header (alg, kid, crit), signature with the set's keys, then the claims
 * (exp, nbf, iss, aud). The payload is parsed only once its signature holds. */
#include "policy/jwt.h"

#include <math.h>
#include <string.h>

#include "core/errors.h"

/* Seconds and milliseconds beyond any clock, so that * 1000 and +/- leeway
 * never overflow an int64. */
#define TIME_LIMIT_S (INT64_MAX / 4000)
#define TIME_LIMIT_MS (TIME_LIMIT_S * 1000)

/* Decoded segments are at most this long. */
#define SEGMENT_MAX_BYTES (JWT_MAX_BYTES / 4 * 3 + 3)

static const char *const result_names[] = {
    [JWT_OK] = "ok",
    [JWT_MALFORMED] = "malformed",
    [JWT_ALG_REFUSED] = "algorithm",
    [JWT_UNKNOWN_KID] = "unknown_kid",
    [JWT_BAD_SIGNATURE] = "signature",
    [JWT_EXPIRED] = "expired",
    [JWT_NOT_YET_VALID] = "not_yet_valid",
    [JWT_BAD_ISSUER] = "issuer",
    [JWT_BAD_AUDIENCE] = "audience",
};

const char *jwt_result_name(jwt_result_t r)
{
    if ((unsigned)r >= sizeof result_names / sizeof result_names[0])
        return "malformed";
    return result_names[r];
}

static int64_t clamp_s(int64_t s)
{
    return s > TIME_LIMIT_S ? TIME_LIMIT_S : s < -TIME_LIMIT_S ? -TIME_LIMIT_S : s;
}

/* A NumericDate claim in milliseconds: 1 and *ms when present, 0 when
 * absent, -1 when not a number. */
static int numeric_date_ms(const json_t *claims, const char *name, int64_t *ms)
{
    const json_t *v = json_object_get(claims, name);
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        *ms = clamp_s((int64_t)json_integer_value(v)) * 1000;
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v) * 1000.0;
        if (isnan(d))
            return -1;
        *ms = d >= (double)TIME_LIMIT_MS    ? TIME_LIMIT_MS
              : d <= -(double)TIME_LIMIT_MS ? -TIME_LIMIT_MS
                                            : (int64_t)floor(d);
        return 1;
    }
    return -1;
}

static int string_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

static jwt_result_t check_audience(const json_t *aud, const config_jwt_provider_t *p)
{
    for (size_t i = 0; i < p->n_audiences; i++) {
        if (string_is(aud, p->audiences[i]))
            return JWT_OK;
        size_t j;
        const json_t *a;
        json_array_foreach(aud, j, a)
        {
            if (string_is(a, p->audiences[i]))
                return JWT_OK;
        }
    }
    return JWT_BAD_AUDIENCE;
}

static jwt_result_t check_claims(const json_t *claims, const config_jwt_provider_t *p,
                                 int64_t now_s, int64_t *exp_s)
{
    int64_t now_ms = clamp_s(now_s) * 1000;
    int64_t leeway_ms =
        p->leeway_ms > (uint64_t)TIME_LIMIT_MS ? TIME_LIMIT_MS : (int64_t)p->leeway_ms;
    int64_t exp_ms = 0, nbf_ms = 0;
    int has_exp = numeric_date_ms(claims, "exp", &exp_ms);
    int has_nbf = numeric_date_ms(claims, "nbf", &nbf_ms);
    if (has_exp < 0 || has_nbf < 0)
        return JWT_MALFORMED;
    if (has_exp && exp_ms <= now_ms - leeway_ms)
        return JWT_EXPIRED;
    if (has_nbf && nbf_ms > now_ms + leeway_ms)
        return JWT_NOT_YET_VALID;
    if (p->issuer && !string_is(json_object_get(claims, "iss"), p->issuer))
        return JWT_BAD_ISSUER;
    if (p->n_audiences > 0 && check_audience(json_object_get(claims, "aud"), p) != JWT_OK)
        return JWT_BAD_AUDIENCE;
    if (has_exp) {
        /* 0 means "no exp": an exp in the first second of 1970 counts as 1. */
        *exp_s = exp_ms / 1000;
        if (*exp_s == 0)
            *exp_s = exp_ms < 0 ? -1 : 1;
    }
    return JWT_OK;
}

/* The JOSE header: the algorithm (a bit of p->algorithms) and the kid. */
static jwt_result_t check_header(const char *seg, size_t n, const config_jwt_provider_t *p,
                                 uint32_t *alg, char *kid, size_t *kid_len, int *has_kid)
{
    unsigned char text[SEGMENT_MAX_BYTES];
    long len = jwks_b64url_decode(seg, n, text, sizeof text);
    if (len <= 0)
        return JWT_MALFORMED;
    json_t *h = jwks_json_object((const char *)text, (size_t)len, NULL, 0);
    if (!h)
        return JWT_MALFORMED;
    jwt_result_t r = JWT_OK;
    const json_t *a = json_object_get(h, "alg");
    const json_t *k = json_object_get(h, "kid");
    const json_t *crit = json_object_get(h, "crit");
    if (!json_is_string(a) || (k && !json_is_string(k)) ||
        (crit && (!json_is_array(crit) || json_array_size(crit) > 0))) {
        r = JWT_MALFORMED; /* crit names extensions ficus does not implement */
    } else if ((*alg = jwks_alg_from_name(json_string_value(a))) == 0 || !(*alg & p->algorithms)) {
        r = JWT_ALG_REFUSED; /* "none" among them: never in the table */
    } else if (k) {
        *kid_len = json_string_length(k);
        if (*kid_len > JWKS_MAX_KID_BYTES) {
            r = JWT_UNKNOWN_KID; /* longer than any kid a set keeps */
        } else {
            memcpy(kid, json_string_value(k), *kid_len);
            *has_kid = 1;
        }
    }
    json_decref(h);
    return r;
}

/* Tries the keys the set offers for alg and kid; JWT_OK when one verifies. */
static jwt_result_t check_signature(const jwks_t *keys, uint32_t alg, const char *kid,
                                    size_t kid_len, const char *msg, size_t msg_len,
                                    const char *seg, size_t n)
{
    unsigned char sig[SEGMENT_MAX_BYTES];
    long sig_len = jwks_b64url_decode(seg, n, sig, sizeof sig);
    if (sig_len < 0)
        return JWT_MALFORMED;
    size_t pos = 0, tries = 0;
    const jwks_key_t *key;
    while (tries < JWKS_MAX_TRIES && (key = jwks_next(keys, kid, kid_len, alg, &pos)) != NULL) {
        tries++;
        if (jwks_key_verify(key, alg, (const unsigned char *)msg, msg_len, sig, (size_t)sig_len) ==
            0)
            return JWT_OK;
    }
    if (tries > 0)
        return JWT_BAD_SIGNATURE;
    /* No key of the set may verify this alg: a kid of another type is an
     * algorithm confusion; a kid the set lacks is unknown. */
    if (kid)
        return jwks_has_kid(keys, kid, kid_len) ? JWT_ALG_REFUSED : JWT_UNKNOWN_KID;
    return jwks_count(keys) > 0 ? JWT_ALG_REFUSED : JWT_UNKNOWN_KID;
}

jwt_result_t jwt_verify(const char *token, size_t len, const jwks_t *keys,
                        const config_jwt_provider_t *p, int64_t now_s, jwt_verified_t *out)
{
    out->exp_s = 0;
    out->claims = NULL;
    if (!token || len == 0 || len > JWT_MAX_BYTES || !p)
        return JWT_MALFORMED;
    const char *end = token + len;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (!d2 || d1 == token || d2 == d1 + 1 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return JWT_MALFORMED;

    uint32_t alg = 0;
    char kid[JWKS_MAX_KID_BYTES];
    size_t kid_len = 0;
    int has_kid = 0;
    jwt_result_t r = check_header(token, (size_t)(d1 - token), p, &alg, kid, &kid_len, &has_kid);
    if (r != JWT_OK)
        return r;

    unsigned char payload[SEGMENT_MAX_BYTES];
    long payload_len = jwks_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), payload, sizeof payload);
    if (payload_len <= 0)
        return JWT_MALFORMED;

    r = check_signature(keys, alg, has_kid ? kid : NULL, kid_len, token, (size_t)(d2 - token),
                        d2 + 1, (size_t)(end - d2 - 1));
    if (r != JWT_OK)
        return r;

    json_t *claims = jwks_json_object((const char *)payload, (size_t)payload_len, NULL, 0);
    if (!claims)
        return JWT_MALFORMED;
    int64_t exp_s = 0;
    r = check_claims(claims, p, now_s, &exp_s);
    if (r != JWT_OK) {
        json_decref(claims);
        return r;
    }
    out->exp_s = exp_s;
    out->claims = claims;
    return JWT_OK;
}

/* May these bytes stand in a header value (RFC 9110 5.5: no CR, LF, NUL,
 * nor other controls but HTAB)? */
static int header_safe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

int jwt_claim_text(const json_t *claims, const char *name, char *out, size_t cap)
{
    if (cap > 0)
        out[0] = '\0';
    const json_t *v = json_object_get(claims, name);
    if (!v)
        return FE_NOTFOUND;
    size_t n;
    if (json_is_string(v)) {
        n = json_string_length(v);
        if (!header_safe(json_string_value(v), n))
            return FE_INVAL;
        if (n >= cap)
            return FE_TOOBIG;
        memcpy(out, json_string_value(v), n);
    } else {
        /* Strings inside come out escaped: no raw control byte is left. */
        n = json_dumpb(v, out, cap, JSON_COMPACT | JSON_ENCODE_ANY);
        if (n == 0)
            return FE_INVAL;
        if (n >= cap || n > INT32_MAX) {
            if (cap > 0)
                out[0] = '\0';
            return FE_TOOBIG;
        }
    }
    out[n] = '\0';
    return (int)n;
}
