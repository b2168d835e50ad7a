/* JSON Web Key Sets as OpenSSL 3 keys, and the signature check each key
 * does; see jwks.h. Keys are built with OSSL_PARAM_BLD / EVP_PKEY_fromdata
 * (no deprecated RSA_* / EC_KEY_* calls) and never change once parsed, so
 * the workers verify with them concurrently. */
#include "policy/jwks.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/errors.h"

enum { KTY_RSA, KTY_EC, KTY_OCT, KTY_OKP };

#define ALGS_RSA                                                                                   \
    (JWT_ALG_RS256 | JWT_ALG_RS384 | JWT_ALG_RS512 | JWT_ALG_PS256 | JWT_ALG_PS384 | JWT_ALG_PS512)
#define ALGS_HMAC (JWT_ALG_HS256 | JWT_ALG_HS384 | JWT_ALG_HS512)

struct jwks_key {
    char *kid; /* NULL: none */
    size_t kid_len;
    int kty;
    uint32_t algs;         /* JWT_ALG_* bits this key verifies */
    EVP_PKEY *pkey;        /* RSA, EC, OKP */
    unsigned char *secret; /* oct */
    size_t secret_len;
    size_t ec_coord_bytes; /* EC: 32 (P-256) or 48 (P-384) */
};

struct jwks {
    atomic_size_t refs;
    size_t n, skipped;
    jwks_key_t keys[];
};

static const struct {
    const char *name;
    uint32_t bit;
} alg_names[] = {
    {"RS256", JWT_ALG_RS256}, {"RS384", JWT_ALG_RS384}, {"RS512", JWT_ALG_RS512},
    {"PS256", JWT_ALG_PS256}, {"PS384", JWT_ALG_PS384}, {"PS512", JWT_ALG_PS512},
    {"ES256", JWT_ALG_ES256}, {"ES384", JWT_ALG_ES384}, {"HS256", JWT_ALG_HS256},
    {"HS384", JWT_ALG_HS384}, {"HS512", JWT_ALG_HS512}, {"EdDSA", JWT_ALG_EDDSA},
};

uint32_t jwks_alg_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
        if (strcmp(alg_names[i].name, name) == 0)
            return alg_names[i].bit;
    return 0;
}

/* The digest of an algorithm (NULL for EdDSA, which hashes inside). */
static const char *alg_digest(uint32_t alg)
{
    if (alg & (JWT_ALG_RS256 | JWT_ALG_PS256 | JWT_ALG_ES256 | JWT_ALG_HS256))
        return "SHA256";
    if (alg & (JWT_ALG_RS384 | JWT_ALG_PS384 | JWT_ALG_ES384 | JWT_ALG_HS384))
        return "SHA384";
    if (alg & (JWT_ALG_RS512 | JWT_ALG_PS512 | JWT_ALG_HS512))
        return "SHA512";
    return NULL;
}

static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* ---- base64url and bounded JSON ---- */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long jwks_b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    if (n % 4 == 1)
        return FE_PARSE; /* one char holds 6 bits: never a whole byte */
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > cap)
        return FE_TOOBIG;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return FE_PARSE;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return FE_PARSE; /* non-zero unused bits: a second spelling of the same bytes */
    return (long)o;
}

/* Is the nesting of the JSON text at most max? Counts brackets outside
 * strings; jansson checks everything else. */
static int json_depth_ok(const char *s, size_t n, int max)
{
    int depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

json_t *jwks_json_object(const char *text, size_t len, char *err, size_t err_cap)
{
    if (!json_depth_ok(text, len, JWKS_MAX_JSON_DEPTH)) {
        set_err(err, err_cap, "JSON nested deeper than %d levels", JWKS_MAX_JSON_DEPTH);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        set_err(err, err_cap, "invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        set_err(err, err_cap, "not a JSON object");
        return NULL;
    }
    return j;
}

/* ---- building keys ---- */

/* A member that must be a base64url string: decoded into a fresh buffer of
 * at most cap bytes. NULL when absent, not a string or badly encoded. */
static unsigned char *member_b64(const json_t *jk, const char *name, size_t cap, size_t *len)
{
    const json_t *v = json_object_get(jk, name);
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    if (n > (cap / 3 + 1) * 4)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 3);
    if (!out)
        return NULL;
    long got = jwks_b64url_decode(json_string_value(v), n, out, n / 4 * 3 + 3);
    if (got <= 0 || (size_t)got > cap) {
        free(out);
        return NULL;
    }
    *len = (size_t)got;
    return out;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    if (!params)
        return NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
            pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static const char *key_rsa(jwks_key_t *key, const json_t *jk)
{
    size_t n_len = 0, e_len = 0;
    const char *why = NULL;
    unsigned char *n = member_b64(jk, "n", JWKS_RSA_MAX_BITS / 8 + 1, &n_len);
    unsigned char *e = member_b64(jk, "e", 8, &e_len);
    BIGNUM *bn_n = n ? BN_bin2bn(n, (int)n_len, NULL) : NULL;
    BIGNUM *bn_e = e ? BN_bin2bn(e, (int)e_len, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (!bn_n || !bn_e) {
        why = "RSA key without a valid n and e";
    } else if (BN_num_bits(bn_n) < JWKS_RSA_MIN_BITS || BN_num_bits(bn_n) > JWKS_RSA_MAX_BITS) {
        why = "RSA modulus not between 2048 and 8192 bits";
    } else if (!BN_is_odd(bn_e) || BN_is_one(bn_e)) {
        why = "RSA exponent not odd and above 1";
    } else if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
               !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
               !(key->pkey = pkey_fromdata("RSA", bld))) {
        why = "RSA key refused by OpenSSL";
    }
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    free(n);
    free(e);
    key->algs = ALGS_RSA;
    return why;
}

static const char *key_ec(jwks_key_t *key, const json_t *jk)
{
    const char *crv = json_string_value(json_object_get(jk, "crv"));
    const char *group;
    if (crv && strcmp(crv, "P-256") == 0) {
        group = "prime256v1";
        key->ec_coord_bytes = 32;
        key->algs = JWT_ALG_ES256;
    } else if (crv && strcmp(crv, "P-384") == 0) {
        group = "secp384r1";
        key->ec_coord_bytes = 48;
        key->algs = JWT_ALG_ES384;
    } else {
        return "EC key on an unknown curve";
    }
    size_t c = key->ec_coord_bytes, x_len = 0, y_len = 0;
    const char *why = NULL;
    unsigned char *x = member_b64(jk, "x", c, &x_len);
    unsigned char *y = member_b64(jk, "y", c, &y_len);
    unsigned char point[1 + 2 * 48];
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (!x || !y || x_len != c || y_len != c) {
        why = "EC key without x and y of the curve's size";
    } else {
        point[0] = POINT_CONVERSION_UNCOMPRESSED;
        memcpy(point + 1, x, c);
        memcpy(point + 1 + c, y, c);
        /* fromdata decodes the point, which refuses one off the curve. */
        if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * c) ||
            !(key->pkey = pkey_fromdata("EC", bld)))
            why = "EC point refused by OpenSSL";
    }
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return why;
}

static const char *key_okp(jwks_key_t *key, const json_t *jk)
{
    const char *crv = json_string_value(json_object_get(jk, "crv"));
    if (!crv || strcmp(crv, "Ed25519") != 0)
        return "OKP key on a curve other than Ed25519";
    size_t x_len = 0;
    unsigned char *x = member_b64(jk, "x", 32, &x_len);
    if (x && x_len == 32)
        key->pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x, 32);
    free(x);
    key->algs = JWT_ALG_EDDSA;
    return key->pkey ? NULL : "Ed25519 key without a 32-byte x";
}

static const char *key_oct(jwks_key_t *key, const json_t *jk)
{
    key->secret = member_b64(jk, "k", JWKS_HMAC_MAX_BYTES, &key->secret_len);
    if (!key->secret || key->secret_len < JWKS_HMAC_MIN_BYTES)
        return "oct key without a k of 32 to 512 bytes";
    /* RFC 7518 3.2: a key at least as long as the hash's output. */
    key->algs = JWT_ALG_HS256;
    if (key->secret_len >= 48)
        key->algs |= JWT_ALG_HS384;
    if (key->secret_len >= 64)
        key->algs |= JWT_ALG_HS512;
    return NULL;
}

static void key_deinit(jwks_key_t *key)
{
    free(key->kid);
    EVP_PKEY_free(key->pkey);
    if (key->secret)
        OPENSSL_cleanse(key->secret, key->secret_len);
    free(key->secret);
    memset(key, 0, sizeof *key);
}

/* Does "key_ops", when present, allow verifying? */
static int key_ops_verify(const json_t *ops)
{
    if (!ops)
        return 1;
    size_t i;
    const json_t *op;
    json_array_foreach(ops, i, op)
    {
        const char *s = json_string_value(op);
        if (s && strcmp(s, "verify") == 0)
            return 1;
    }
    return 0;
}

/* Fills key from one member of "keys": NULL, or why it cannot be used. */
static const char *key_init(jwks_key_t *key, const json_t *jk)
{
    if (!json_is_object(jk))
        return "not an object";
    const char *kty = json_string_value(json_object_get(jk, "kty"));
    const json_t *use = json_object_get(jk, "use");
    const json_t *kid = json_object_get(jk, "kid");
    const json_t *alg = json_object_get(jk, "alg");
    if (!kty)
        return "no kty";
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return "use other than sig";
    if (!key_ops_verify(json_object_get(jk, "key_ops")))
        return "key_ops without verify";
    if (kid && (!json_is_string(kid) || json_string_length(kid) > JWKS_MAX_KID_BYTES))
        return "kid not a string of at most 256 bytes";
    if (alg && !json_is_string(alg))
        return "alg not a string";
    const char *why;
    if (strcmp(kty, "RSA") == 0) {
        key->kty = KTY_RSA;
        why = key_rsa(key, jk);
    } else if (strcmp(kty, "EC") == 0) {
        key->kty = KTY_EC;
        why = key_ec(key, jk);
    } else if (strcmp(kty, "oct") == 0) {
        key->kty = KTY_OCT;
        why = key_oct(key, jk);
    } else if (strcmp(kty, "OKP") == 0) {
        key->kty = KTY_OKP;
        why = key_okp(key, jk);
    } else {
        return "unknown kty";
    }
    if (why)
        return why;
    if (alg) {
        /* A key that names its algorithm verifies that one only. */
        uint32_t bit = jwks_alg_from_name(json_string_value(alg));
        if (!(bit & key->algs))
            return "alg unknown or not of the key's type";
        key->algs = bit;
    }
    if (kid) {
        key->kid_len = json_string_length(kid);
        key->kid = malloc(key->kid_len + 1);
        if (!key->kid)
            return "out of memory";
        memcpy(key->kid, json_string_value(kid), key->kid_len + 1);
    }
    return NULL;
}

jwks_t *jwks_parse(const char *json, size_t len, char *err, size_t err_cap)
{
    set_err(err, err_cap, "%s", "");
    if (len > JWKS_MAX_BYTES) {
        set_err(err, err_cap, "JWKS over %d bytes", JWKS_MAX_BYTES);
        return NULL;
    }
    char reason[160];
    json_t *doc = jwks_json_object(json, len, reason, sizeof reason);
    if (!doc) {
        set_err(err, err_cap, "not a JWKS: %s", reason);
        return NULL;
    }
    const json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        json_decref(doc);
        set_err(err, err_cap, "not a JWKS: no \"keys\" array");
        return NULL;
    }
    size_t n = json_array_size(keys);
    size_t cap = n < JWKS_MAX_KEYS ? n : JWKS_MAX_KEYS;
    jwks_t *k = calloc(1, sizeof *k + cap * sizeof k->keys[0]);
    if (!k) {
        json_decref(doc);
        set_err(err, err_cap, "out of memory");
        return NULL;
    }
    atomic_init(&k->refs, 1);
    for (size_t i = 0; i < n; i++) {
        if (k->n == cap) {
            if (k->skipped == 0)
                set_err(err, err_cap, "keys[%zu] and on skipped: over %d keys", i, JWKS_MAX_KEYS);
            k->skipped += n - i;
            break;
        }
        jwks_key_t *key = &k->keys[k->n];
        const char *why = key_init(key, json_array_get(keys, i));
        if (!why) {
            k->n++;
            continue;
        }
        if (k->skipped++ == 0)
            set_err(err, err_cap, "keys[%zu] skipped: %s", i, why);
        key_deinit(key);
    }
    json_decref(doc);
    return k;
}

jwks_t *jwks_ref(jwks_t *k)
{
    if (k)
        atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    return k;
}

void jwks_unref(jwks_t *k)
{
    if (!k || atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < k->n; i++)
        key_deinit(&k->keys[i]);
    free(k);
}

size_t jwks_count(const jwks_t *k) { return k ? k->n : 0; }

size_t jwks_skipped(const jwks_t *k) { return k ? k->skipped : 0; }

static int kid_equal(const jwks_key_t *key, const char *kid, size_t kid_len)
{
    return key->kid && key->kid_len == kid_len && memcmp(key->kid, kid, kid_len) == 0;
}

const jwks_key_t *jwks_next(const jwks_t *k, const char *kid, size_t kid_len, uint32_t alg,
                            size_t *pos)
{
    if (!k || alg == 0)
        return NULL;
    /* *pos < n: the first pass (kid equal, or every key without a kid);
     * n <= *pos < 2n: with a kid, the second pass over the keys without one. */
    for (size_t i = *pos; i < 2 * k->n; i++) {
        const jwks_key_t *key = &k->keys[i % k->n];
        int second = i >= k->n;
        if (second && !kid)
            break;
        int kid_ok = !kid || (second ? key->kid == NULL : kid_equal(key, kid, kid_len));
        if (kid_ok && (key->algs & alg) == alg) {
            *pos = i + 1;
            return key;
        }
    }
    *pos = 2 * k->n;
    return NULL;
}

int jwks_has_kid(const jwks_t *k, const char *kid, size_t kid_len)
{
    for (size_t i = 0; k && i < k->n; i++)
        if (kid_equal(&k->keys[i], kid, kid_len))
            return 1;
    return 0;
}

/* ---- verifying ---- */

/* r||s as the DER ECDSA-Sig-Value EVP expects; returns its length or 0. */
static int ecdsa_der(const unsigned char *sig, size_t half, unsigned char **der)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL);
    BIGNUM *s = BN_bin2bn(sig + half, (int)half, NULL);
    int len = 0;
    if (es && r && s && ECDSA_SIG_set0(es, r, s) == 1) {
        r = s = NULL; /* es owns them */
        len = i2d_ECDSA_SIG(es, der);
        if (len < 0)
            len = 0;
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    return len;
}

static int verify_hmac(const jwks_key_t *key, uint32_t alg, const unsigned char *msg,
                       size_t msg_len, const unsigned char *sig, size_t sig_len)
{
    const EVP_MD *md = EVP_get_digestbyname(alg_digest(alg));
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!md || !HMAC(md, key->secret, (int)key->secret_len, msg, msg_len, mac, &mac_len))
        return FE_NOMEM;
    if (sig_len != mac_len || CRYPTO_memcmp(mac, sig, mac_len) != 0)
        return FE_INVAL;
    return 0;
}

static int verify_pkey(const jwks_key_t *key, uint32_t alg, const unsigned char *msg,
                       size_t msg_len, const unsigned char *sig, size_t sig_len)
{
    unsigned char *der = NULL;
    if (key->kty == KTY_EC) {
        if (sig_len != 2 * key->ec_coord_bytes)
            return FE_INVAL;
        int n = ecdsa_der(sig, key->ec_coord_bytes, &der);
        if (n == 0)
            return FE_NOMEM;
        sig = der;
        sig_len = (size_t)n;
    } else if ((int)sig_len != EVP_PKEY_get_size(key->pkey)) {
        return FE_INVAL; /* RSA: the modulus's size; Ed25519: 64 */
    }
    int rc = FE_NOMEM;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md ||
        EVP_DigestVerifyInit_ex(md, &pctx, alg_digest(alg), NULL, NULL, key->pkey, NULL) != 1)
        goto done;
    if (alg & (JWT_ALG_PS256 | JWT_ALG_PS384 | JWT_ALG_PS512)) {
        /* RFC 7518 3.5: MGF1 with the same hash, salt as long as the hash. */
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)
            goto done;
    }
    rc = EVP_DigestVerify(md, sig, sig_len, msg, msg_len) == 1 ? 0 : FE_INVAL;
done:
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    return rc;
}

int jwks_key_verify(const jwks_key_t *key, uint32_t alg, const unsigned char *msg, size_t msg_len,
                    const unsigned char *sig, size_t sig_len)
{
    if (!key || alg == 0 || (key->algs & alg) != alg)
        return FE_INVAL;
    if (key->kty == KTY_OCT)
        return verify_hmac(key, alg, msg, msg_len, sig, sig_len);
    return verify_pkey(key, alg, msg, msg_len, sig, sig_len);
}
