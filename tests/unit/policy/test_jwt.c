/* JWT verification (policy/jwt.h) with keys made here by OpenSSL (RSA-2048,
 * P-256, P-384, Ed25519, an HMAC secret), a JWKS written from their public
 * parameters and tokens signed here: every algorithm, every result, algorithm
 * confusion, kid lookup, exp/nbf edges with leeway, aud forms, claim text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "policy/jwt.h"

#define NOW INT64_C(1800000000)
#define ISS "https://id.example.com"
#define ALL_ALGS ((JWT_ALG_EDDSA << 1) - 1)

/* What signs a token: a private key, or an HMAC secret. */
typedef struct signer {
    EVP_PKEY *pkey;
    const unsigned char *secret;
    size_t secret_len;
} signer_t;

static EVP_PKEY *rsa, *rsa2, *p256, *p384, *ed;
static int pss_saltlen = RSA_PSS_SALTLEN_DIGEST; /* what RFC 7518 3.5 asks */
static unsigned char hmac_key[64];
static jwks_t *keys; /* all of them, kids "rsa" "rsa2" "p256" "p384" "ed" "hs" */

static char *auds[] = {"shop", "admin"};
static config_jwt_provider_t prov = {
    .name = "main",
    .issuer = ISS,
    .audiences = auds,
    .n_audiences = 2,
    .algorithms = ALL_ALGS,
};

static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[len] = '\0';
    return (size_t)len;
}

static const char *md_of(const char *alg)
{
    if (strcmp(alg, "EdDSA") == 0)
        return NULL;
    return strcmp(alg + 2, "256") == 0   ? "SHA256"
           : strcmp(alg + 2, "384") == 0 ? "SHA384"
                                         : "SHA512";
}

/* The JWS signature of msg under alg, as it goes in a token. */
static size_t sign(const signer_t *s, const char *alg, const char *msg, unsigned char *sig)
{
    size_t n = strlen(msg), len = 1024;
    if (alg[0] == 'H') {
        unsigned int mac_len = 0;
        assert_non_null(HMAC(EVP_get_digestbyname(md_of(alg)), s->secret, (int)s->secret_len,
                             (const unsigned char *)msg, n, sig, &mac_len));
        return mac_len;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_int_equal(EVP_DigestSignInit_ex(ctx, &pctx, md_of(alg), NULL, NULL, s->pkey, NULL), 1);
    if (alg[0] == 'P') {
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, pss_saltlen), 1);
    }
    unsigned char der[1024];
    unsigned char *out = alg[0] == 'E' && alg[1] == 'S' ? der : sig;
    assert_int_equal(EVP_DigestSign(ctx, out, &len, (const unsigned char *)msg, n), 1);
    EVP_MD_CTX_free(ctx);
    if (out == der) { /* DER ECDSA-Sig-Value -> r||s */
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
        assert_non_null(es);
        int half = strcmp(alg, "ES256") == 0 ? 32 : 48;
        BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, half);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + half, half);
        ECDSA_SIG_free(es);
        len = (size_t)(2 * half);
    }
    return len;
}

/* A compact token: header and payload JSON as given, signed under alg. */
static char *make(const signer_t *s, const char *alg, const char *header, const char *payload)
{
    size_t hn = strlen(header), pn = strlen(payload);
    char *t = malloc((hn + pn) * 2 + 2048);
    assert_non_null(t);
    size_t n = b64url((const unsigned char *)header, hn, t);
    t[n++] = '.';
    n += b64url((const unsigned char *)payload, pn, t + n);
    unsigned char sig[1024];
    size_t sig_len = sign(s, alg, t, sig);
    t[n++] = '.';
    b64url(sig, sig_len, t + n);
    return t;
}

static signer_t signer_for(const char *alg)
{
    signer_t s = {.secret = hmac_key, .secret_len = sizeof hmac_key};
    if (alg[0] == 'R' || alg[0] == 'P')
        s.pkey = rsa;
    else if (strcmp(alg, "ES256") == 0)
        s.pkey = p256;
    else if (strcmp(alg, "ES384") == 0)
        s.pkey = p384;
    else if (strcmp(alg, "EdDSA") == 0)
        s.pkey = ed;
    return s;
}

static const char *kid_for(const char *alg)
{
    return alg[0] == 'R' || alg[0] == 'P' ? "rsa"
           : strcmp(alg, "ES256") == 0    ? "p256"
           : strcmp(alg, "ES384") == 0    ? "p384"
           : alg[0] == 'E'                ? "ed"
                                          : "hs";
}

/* A token of alg signed by its key, with the given kid (NULL: none). */
static char *tok_kid(const char *alg, const char *kid, const char *payload)
{
    char header[512];
    if (kid)
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg,
                 kid);
    else
        snprintf(header, sizeof header, "{\"alg\":\"%s\"}", alg);
    signer_t s = signer_for(alg);
    return make(&s, alg, header, payload);
}

static char *tok(const char *alg, const char *payload)
{
    return tok_kid(alg, kid_for(alg), payload);
}

static char *claims(const char *extra)
{
    static char buf[JWT_MAX_BYTES + 1024];
    snprintf(buf, sizeof buf, "{\"sub\":\"u1\",\"iss\":\"" ISS "\",\"aud\":\"shop\"%s%s}",
             *extra ? "," : "", extra);
    return buf;
}

/* Verifies (and frees) token with p and ks; checks out is empty on failure. */
static jwt_result_t run_with(char *token, const jwks_t *ks, const config_jwt_provider_t *p)
{
    jwt_verified_t v = {.exp_s = 42, .claims = (json_t *)&v};
    jwt_result_t r = jwt_verify(token, strlen(token), ks, p, NOW, &v);
    if (r == JWT_OK) {
        assert_true(json_is_object(v.claims));
        json_decref(v.claims);
    } else {
        assert_null(v.claims);
        assert_int_equal(v.exp_s, 0);
    }
    free(token);
    return r;
}

static jwt_result_t run(char *token) { return run_with(token, keys, &prov); }

static char *strdup_or_fail(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

/* ---- keys and the JWKS ---- */

static size_t bn_b64(EVP_PKEY *k, const char *param, int pad, char *out)
{
    BIGNUM *bn = NULL;
    unsigned char bin[1024];
    assert_int_equal(EVP_PKEY_get_bn_param(k, param, &bn), 1);
    int n = pad ? BN_bn2binpad(bn, bin, pad) : BN_bn2bin(bn, bin);
    BN_free(bn);
    return b64url(bin, (size_t)n, out);
}

static void jwk_rsa(char *out, size_t cap, EVP_PKEY *k, const char *kid, const char *extra)
{
    char n[600], e[16];
    bn_b64(k, OSSL_PKEY_PARAM_RSA_N, 0, n);
    bn_b64(k, OSSL_PKEY_PARAM_RSA_E, 0, e);
    snprintf(out, cap, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, n, e,
             extra);
}

static void jwk_ec(char *out, size_t cap, EVP_PKEY *k, const char *kid, const char *crv, int size)
{
    char x[80], y[80];
    bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, size, x);
    bn_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, size, y);
    snprintf(out, cap, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}",
             kid, crv, x, y);
}

static jwks_t *parse_or_fail(const char *doc)
{
    jwks_t *k = jwks_parse(doc, strlen(doc), NULL, 0); /* test_jwks checks the reasons */
    assert_non_null(k);
    return k;
}

static int setup(void **state)
{
    (void)state;
    rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!rsa || !rsa2 || !p256 || !p384 || !ed)
        return -1;
    for (size_t i = 0; i < sizeof hmac_key; i++)
        hmac_key[i] = (unsigned char)(i * 7 + 1);

    char doc[8192], jr[1024], jr2[1024], je256[256], je384[300], x[64], k[100];
    jwk_rsa(jr, sizeof jr, rsa, "rsa", "");
    jwk_rsa(jr2, sizeof jr2, rsa2, "rsa2", "");
    jwk_ec(je256, sizeof je256, p256, "p256", "P-256", 32);
    jwk_ec(je384, sizeof je384, p384, "p384", "P-384", 48);
    unsigned char raw[32];
    size_t raw_len = sizeof raw;
    EVP_PKEY_get_raw_public_key(ed, raw, &raw_len);
    b64url(raw, raw_len, x);
    b64url(hmac_key, sizeof hmac_key, k);
    snprintf(doc, sizeof doc,
             "{\"keys\":[%s,%s,%s,%s,{\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\",\"x\":"
             "\"%s\"},{\"kty\":\"oct\",\"kid\":\"hs\",\"k\":\"%s\"}]}",
             jr, jr2, je256, je384, x, k);
    keys = parse_or_fail(doc);
    return jwks_count(keys) == 6 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    jwks_unref(keys);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
    return 0;
}

/* ---- tests ---- */

static const char *const algs[] = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES384", "HS256", "HS384", "HS512", "EdDSA"};

static void test_every_algorithm(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        char *t = tok(algs[i], claims("\"exp\":1800000060"));
        jwt_verified_t v;
        jwt_result_t r = jwt_verify(t, strlen(t), keys, &prov, NOW, &v);
        if (r != JWT_OK)
            fail_msg("%s: %s", algs[i], jwt_result_name(r));
        assert_int_equal(v.exp_s, NOW + 60);
        assert_string_equal(json_string_value(json_object_get(v.claims, "sub")), "u1");
        json_decref(v.claims);
        free(t);
        /* Without kid: the keys of the algorithm's type are tried. */
        assert_int_equal(run(tok_kid(algs[i], NULL, claims(""))), JWT_OK);
        /* And with the provider not accepting it. */
        config_jwt_provider_t other = prov;
        other.algorithms = ALL_ALGS & ~jwks_alg_from_name(algs[i]);
        assert_int_equal(run_with(tok(algs[i], claims("")), keys, &other), JWT_ALG_REFUSED);
    }
}

static void test_malformed(void **state)
{
    (void)state;
    char *good = tok("HS256", claims(""));
    const char *dot1 = strchr(good, '.'), *dot2 = strrchr(good, '.');
    char buf[2048];
    const char *bad[] = {"",         ".",
                         "..",       "a.b",
                         "a.b.c.d",  "eyJhbGciOiJIUzI1NiJ9",
                         "!!.!!.!!", "eyJhbGciOiJIUzI1NiJ9..sig"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(run(strdup_or_fail(bad[i])), JWT_MALFORMED);
    /* Good segments in the wrong places, extra bytes, padding. */
    snprintf(buf, sizeof buf, "%s.", good);
    assert_int_equal(run(strdup_or_fail(buf)), JWT_MALFORMED);
    snprintf(buf, sizeof buf, "%s ", good);
    assert_int_equal(run(strdup_or_fail(buf)), JWT_MALFORMED);
    snprintf(buf, sizeof buf, "%.*s.%s", (int)(dot1 - good), good, dot2);
    assert_int_equal(run(strdup_or_fail(buf)), JWT_MALFORMED); /* header..sig */
    snprintf(buf, sizeof buf, "%.*s=%s", (int)(dot1 - good), good, dot1);
    assert_int_equal(run(strdup_or_fail(buf)), JWT_MALFORMED);
    snprintf(buf, sizeof buf, "%.*s.%s", (int)(dot2 - good), good, "ab+/");
    assert_int_equal(run(strdup_or_fail(buf)), JWT_MALFORMED);
    free(good);

    /* Headers that are not a JOSE header ficus can use. */
    signer_t s = signer_for("HS256");
    const char *headers[] = {"[\"HS256\"]",
                             "{\"alg\":\"HS256\",\"alg\":\"HS256\"}",
                             "{}",
                             "{\"alg\":5}",
                             "{\"alg\":\"HS256\",\"kid\":5}",
                             "not json",
                             "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}",
                             "{\"alg\":\"HS256\",\"crit\":\"exp\"}",
                             "{\"alg\":\"HS256\"} {}"};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++)
        if (run(make(&s, "HS256", headers[i], claims(""))) != JWT_MALFORMED)
            fail_msg("header %s", headers[i]);
    assert_int_equal(run(make(&s, "HS256", "{\"alg\":\"HS256\",\"crit\":[]}", claims(""))), JWT_OK);

    /* Payloads signed right but not claims. */
    const char *payloads[] = {"[1]",
                              "\"sub\"",
                              "",
                              "{\"sub\":1,\"sub\":2}",
                              "{",
                              "{\"exp\":\"soon\"}",
                              "{\"nbf\":null}",
                              "{\"exp\":[1]}"};
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++)
        if (run(make(&s, "HS256", "{\"alg\":\"HS256\"}", payloads[i])) != JWT_MALFORMED)
            fail_msg("payload %s", payloads[i]);

    jwt_verified_t v;
    assert_int_equal(jwt_verify("x", 0, keys, &prov, NOW, &v), JWT_MALFORMED);
    assert_int_equal(jwt_verify(NULL, 5, keys, &prov, NOW, &v), JWT_MALFORMED);
}

static void test_size_limit(void **state)
{
    (void)state;
    /* A valid token of exactly JWT_MAX_BYTES, then one of a byte more. */
    char extra[JWT_MAX_BYTES];
    size_t pad = 0;
    for (;;) {
        snprintf(extra, sizeof extra, "\"pad\":\"%*s\"", (int)pad, "");
        char *t = tok("HS256", claims(extra));
        size_t len = strlen(t);
        free(t);
        if (len >= JWT_MAX_BYTES - 3)
            break;
        pad += (JWT_MAX_BYTES - 3 - len) * 3 / 4 + 1;
    }
    int seen_max = 0, seen_over = 0;
    for (size_t p = pad > 8 ? pad - 8 : 0; p < pad + 8; p++) {
        snprintf(extra, sizeof extra, "\"pad\":\"%*s\"", (int)p, "");
        char *t = tok("HS256", claims(extra));
        size_t len = strlen(t);
        jwt_result_t r = run(t);
        if (len == JWT_MAX_BYTES) {
            assert_int_equal(r, JWT_OK);
            seen_max = 1;
        } else if (len > JWT_MAX_BYTES) {
            assert_int_equal(r, JWT_MALFORMED);
            seen_over = 1;
        }
    }
    assert_true(seen_max && seen_over);
}

static void test_alg_refused(void **state)
{
    (void)state;
    signer_t s = signer_for("HS256");
    char h[64], p[64], buf[256];
    b64url((const unsigned char *)"{\"alg\":\"none\"}", 14, h);
    b64url((const unsigned char *)"{\"sub\":\"u1\"}", 12, p);
    snprintf(buf, sizeof buf, "%s.%s.", h, p);
    assert_int_equal(run(strdup_or_fail(buf)), JWT_ALG_REFUSED);
    config_jwt_provider_t open = {.algorithms = UINT32_MAX};
    snprintf(buf, sizeof buf, "%s.%s.", h, p);
    assert_int_equal(run_with(strdup_or_fail(buf), keys, &open), JWT_ALG_REFUSED);
    const char *names[] = {"none", "None", "NONE", "HS1", "hs256", "ES512", "RSA-OAEP", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char header[64];
        snprintf(header, sizeof header, "{\"alg\":\"%s\",\"kid\":\"hs\"}", names[i]);
        if (run_with(make(&s, "HS256", header, claims("")), keys, &open) != JWT_ALG_REFUSED)
            fail_msg("alg %s", names[i]);
    }
    config_jwt_provider_t rs_only = prov;
    rs_only.algorithms = JWT_ALG_RS256;
    assert_int_equal(run_with(tok("ES256", claims("")), keys, &rs_only), JWT_ALG_REFUSED);
    assert_int_equal(run_with(tok("PS256", claims("")), keys, &rs_only), JWT_ALG_REFUSED);
    assert_int_equal(run_with(tok("RS256", claims("")), keys, &rs_only), JWT_OK);
    /* A kid of another type's key: never verified with the wrong kind of key. */
    assert_int_equal(run(tok_kid("ES256", "rsa", claims(""))), JWT_ALG_REFUSED);
    assert_int_equal(run(tok_kid("HS256", "ed", claims(""))), JWT_ALG_REFUSED);
    assert_int_equal(run(tok_kid("ES384", "p256", claims(""))), JWT_ALG_REFUSED);
}

/* The classic confusion: an HS256 token whose "secret" is the RSA public
 * key (its PEM, or its modulus), against a set holding only that key. */
static void test_algorithm_confusion(void **state)
{
    (void)state;
    char jr[1024], doc[1200];
    jwk_rsa(jr, sizeof jr, rsa, "rsa", "");
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", jr);
    jwks_t *only_rsa = parse_or_fail(doc);

    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, rsa), 1);
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    BIGNUM *n = NULL;
    unsigned char mod[512];
    assert_int_equal(EVP_PKEY_get_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, &n), 1);
    int mod_len = BN_bn2bin(n, mod);
    BN_free(n);

    signer_t as_pem = {.secret = (const unsigned char *)pem, .secret_len = (size_t)pem_len};
    signer_t as_mod = {.secret = mod, .secret_len = (size_t)mod_len};
    const signer_t *forgers[] = {&as_pem, &as_mod};
    for (size_t i = 0; i < 2; i++) {
        const char *hdrs[] = {"{\"alg\":\"HS256\",\"kid\":\"rsa\"}", "{\"alg\":\"HS256\"}"};
        for (size_t j = 0; j < 2; j++) {
            assert_int_equal(
                run_with(make(forgers[i], "HS256", hdrs[j], claims("")), only_rsa, &prov),
                JWT_ALG_REFUSED);
            assert_int_equal(run(make(forgers[i], "HS256", hdrs[j], claims(""))),
                             j == 0 ? JWT_ALG_REFUSED : JWT_BAD_SIGNATURE);
        }
    }
    BIO_free(bio);
    jwks_unref(only_rsa);

    /* A key that names its algorithm serves that one only. */
    jwk_rsa(jr, sizeof jr, rsa, "r", ",\"alg\":\"RS256\"");
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", jr);
    jwks_t *pinned = parse_or_fail(doc);
    assert_int_equal(run_with(tok_kid("RS256", "r", claims("")), pinned, &prov), JWT_OK);
    assert_int_equal(run_with(tok_kid("PS256", "r", claims("")), pinned, &prov), JWT_ALG_REFUSED);
    assert_int_equal(run_with(tok_kid("RS512", "r", claims("")), pinned, &prov), JWT_ALG_REFUSED);
    assert_int_equal(run_with(tok_kid("PS256", NULL, claims("")), pinned, &prov), JWT_ALG_REFUSED);
    jwks_unref(pinned);
}

static void test_unknown_kid(void **state)
{
    (void)state;
    assert_int_equal(run(tok_kid("RS256", "nope", claims(""))), JWT_UNKNOWN_KID);
    assert_int_equal(run(tok_kid("HS256", "", claims(""))), JWT_UNKNOWN_KID);
    assert_int_equal(run(tok_kid("RS256", "RSA", claims(""))), JWT_UNKNOWN_KID);
    char long_kid[400];
    memset(long_kid, 'k', sizeof long_kid - 1);
    long_kid[sizeof long_kid - 1] = '\0';
    assert_int_equal(run(tok_kid("RS256", long_kid, claims(""))), JWT_UNKNOWN_KID);
    jwks_t *empty = parse_or_fail("{\"keys\":[]}");
    assert_int_equal(run_with(tok_kid("RS256", NULL, claims("")), empty, &prov), JWT_UNKNOWN_KID);
    assert_int_equal(run_with(tok("RS256", claims("")), empty, &prov), JWT_UNKNOWN_KID);
    jwks_unref(empty);
    assert_int_equal(run_with(tok("RS256", claims("")), NULL, &prov), JWT_UNKNOWN_KID);
}

/* A key without kid verifies tokens of any kid, after the keys of that kid. */
static void test_key_without_kid(void **state)
{
    (void)state;
    char k[100], doc[200];
    b64url(hmac_key, sizeof hmac_key, k);
    snprintf(doc, sizeof doc, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"%s\"}]}", k);
    jwks_t *plain = parse_or_fail(doc);
    assert_int_equal(run_with(tok_kid("HS256", "key-2024", claims("")), plain, &prov), JWT_OK);
    assert_int_equal(run_with(tok_kid("HS384", NULL, claims("")), plain, &prov), JWT_OK);
    assert_int_equal(run_with(tok_kid("RS256", "key-2024", claims("")), plain, &prov),
                     JWT_UNKNOWN_KID);
    jwks_unref(plain);
}

/* Replaces the signature segment of t by sig[0..n) (freeing t). */
static char *with_sig(char *t, const unsigned char *sig, size_t n)
{
    char *out = malloc(strlen(t) + 2 * n + 8);
    assert_non_null(out);
    size_t head = (size_t)(strrchr(t, '.') - t) + 1;
    memcpy(out, t, head);
    b64url(sig, n, out + head);
    free(t);
    return out;
}

static void test_bad_signature(void **state)
{
    (void)state;
    /* The payload changed after signing. */
    char *t = tok("RS256", claims(""));
    char *a = tok("RS256", claims("\"admin\":true"));
    char buf[2048];
    const char *t_dot = strchr(t, '.'), *t_sig = strrchr(t, '.'), *a_dot = strchr(a, '.');
    snprintf(buf, sizeof buf, "%.*s%.*s%s", (int)(t_dot - t), t, (int)(strrchr(a, '.') - a_dot),
             a_dot, t_sig);
    free(t);
    free(a);
    assert_int_equal(run(strdup_or_fail(buf)), JWT_BAD_SIGNATURE);

    /* Signed by rsa2 while naming rsa; without kid both are tried. */
    signer_t other = {.pkey = rsa2};
    assert_int_equal(run(make(&other, "RS256", "{\"alg\":\"RS256\",\"kid\":\"rsa\"}", claims(""))),
                     JWT_BAD_SIGNATURE);
    assert_int_equal(run(make(&other, "RS256", "{\"alg\":\"RS256\"}", claims(""))), JWT_OK);
    assert_int_equal(run(make(&other, "PS384", "{\"alg\":\"PS384\",\"kid\":\"rsa2\"}", claims(""))),
                     JWT_OK);

    /* PSS with a salt other than the hash's length. */
    pss_saltlen = RSA_PSS_SALTLEN_MAX;
    assert_int_equal(run(tok("PS256", claims(""))), JWT_BAD_SIGNATURE);
    pss_saltlen = RSA_PSS_SALTLEN_DIGEST;
    assert_int_equal(run(tok("PS256", claims(""))), JWT_OK);

    /* Signature lengths: exact or nothing. */
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        signer_t s = signer_for(algs[i]);
        char *h = tok(algs[i], claims(""));
        unsigned char sig[1100];
        char *body = strdup_or_fail(h);
        *strrchr(body, '.') = '\0';
        size_t n = sign(&s, algs[i], body, sig);
        free(body);
        sig[n] = 0;
        unsigned char zero_first[1100] = {0};
        memcpy(zero_first + 1, sig, n);
        assert_int_equal(run(with_sig(strdup_or_fail(h), sig, n)), JWT_OK);
        assert_int_equal(run(with_sig(strdup_or_fail(h), sig, n + 1)), JWT_BAD_SIGNATURE);
        assert_int_equal(run(with_sig(strdup_or_fail(h), sig, n - 1)), JWT_BAD_SIGNATURE);
        assert_int_equal(run(with_sig(strdup_or_fail(h), zero_first, n + 1)), JWT_BAD_SIGNATURE);
        assert_int_equal(run(with_sig(strdup_or_fail(h), sig, 0)), JWT_BAD_SIGNATURE);
        sig[n / 2] ^= 0x10;
        assert_int_equal(run(with_sig(h, sig, n)), JWT_BAD_SIGNATURE);
    }

    /* ECDSA in DER (what OpenSSL makes), not r||s: refused. */
    char *e = tok("ES256", claims(""));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char der[128];
    size_t der_len = sizeof der;
    char *body = strdup_or_fail(e);
    *strrchr(body, '.') = '\0';
    assert_int_equal(EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, p256, NULL), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &der_len, (unsigned char *)body, strlen(body)), 1);
    EVP_MD_CTX_free(ctx);
    free(body);
    assert_int_equal(run(with_sig(e, der, der_len)), JWT_BAD_SIGNATURE);
}

/* A token without kid tries at most JWKS_MAX_TRIES keys of its type. */
static void test_tries_bounded(void **state)
{
    (void)state;
    unsigned char secrets[JWKS_MAX_TRIES + 1][32];
    char doc[(JWKS_MAX_TRIES + 1) * 80 + 32], k[64];
    size_t n = (size_t)sprintf(doc, "{\"keys\":[");
    for (int i = 0; i <= JWKS_MAX_TRIES; i++) {
        memset(secrets[i], 'a' + i, sizeof secrets[i]);
        b64url(secrets[i], sizeof secrets[i], k);
        n += (size_t)sprintf(doc + n, "%s{\"kty\":\"oct\",\"k\":\"%s\"}", i ? "," : "", k);
    }
    strcpy(doc + n, "]}");
    jwks_t *many = parse_or_fail(doc);
    assert_int_equal(jwks_count(many), JWKS_MAX_TRIES + 1);
    signer_t last_tried = {.secret = secrets[JWKS_MAX_TRIES - 1], .secret_len = 32};
    signer_t beyond = {.secret = secrets[JWKS_MAX_TRIES], .secret_len = 32};
    assert_int_equal(
        run_with(make(&last_tried, "HS256", "{\"alg\":\"HS256\"}", claims("")), many, &prov),
        JWT_OK);
    assert_int_equal(
        run_with(make(&beyond, "HS256", "{\"alg\":\"HS256\"}", claims("")), many, &prov),
        JWT_BAD_SIGNATURE);
    jwks_unref(many);
}

static jwt_result_t at_leeway(uint64_t leeway_ms, const char *extra)
{
    config_jwt_provider_t p = prov;
    p.leeway_ms = leeway_ms;
    return run_with(tok("ES256", claims(extra)), keys, &p);
}

static void test_exp_nbf(void **state)
{
    (void)state;
    assert_int_equal(at_leeway(0, "\"exp\":1800000000"), JWT_EXPIRED);
    assert_int_equal(at_leeway(0, "\"exp\":1800000001"), JWT_OK);
    assert_int_equal(at_leeway(0, "\"exp\":0"), JWT_EXPIRED);
    assert_int_equal(at_leeway(0, "\"exp\":-5"), JWT_EXPIRED);
    assert_int_equal(at_leeway(0, "\"exp\":1800000000.5"), JWT_OK);
    assert_int_equal(at_leeway(0, "\"exp\":1799999999.999"), JWT_EXPIRED);
    assert_int_equal(at_leeway(0, "\"exp\":1e300"), JWT_OK);
    assert_int_equal(at_leeway(0, "\"exp\":-1e300"), JWT_EXPIRED);
    assert_int_equal(at_leeway(0, "\"exp\":9223372036854775807"), JWT_OK);
    assert_int_equal(at_leeway(0, "\"exp\":-9223372036854775807"), JWT_EXPIRED);
    assert_int_equal(at_leeway(0, "\"nbf\":1800000001"), JWT_NOT_YET_VALID);
    assert_int_equal(at_leeway(0, "\"nbf\":1800000000"), JWT_OK);
    assert_int_equal(at_leeway(0, "\"nbf\":1800000000.001"), JWT_NOT_YET_VALID);
    assert_int_equal(at_leeway(0, "\"nbf\":-9223372036854775807"), JWT_OK);
    assert_int_equal(at_leeway(0, "\"nbf\":1e300"), JWT_NOT_YET_VALID);
    /* Leeway: 5 s both ways. */
    assert_int_equal(at_leeway(5000, "\"exp\":1799999996"), JWT_OK);
    assert_int_equal(at_leeway(5000, "\"exp\":1799999995"), JWT_EXPIRED);
    assert_int_equal(at_leeway(5000, "\"nbf\":1800000005"), JWT_OK);
    assert_int_equal(at_leeway(5000, "\"nbf\":1800000006"), JWT_NOT_YET_VALID);
    /* Milliseconds count: 1.5 s lets a token 1 s old through, not 2 s. */
    assert_int_equal(at_leeway(1500, "\"exp\":1799999999"), JWT_OK);
    assert_int_equal(at_leeway(1500, "\"exp\":1799999998"), JWT_EXPIRED);
    assert_int_equal(at_leeway(1500, "\"nbf\":1800000001"), JWT_OK);
    assert_int_equal(at_leeway(1500, "\"nbf\":1800000002"), JWT_NOT_YET_VALID);
    assert_int_equal(at_leeway(UINT64_MAX, "\"exp\":1,\"nbf\":9000000000"), JWT_OK);
    /* Both present: exp is checked first. */
    assert_int_equal(at_leeway(0, "\"exp\":1,\"nbf\":9000000000"), JWT_EXPIRED);

    /* exp_s: the claim, or 0 without one. */
    jwt_verified_t v;
    char *t = tok("HS256", claims(""));
    assert_int_equal(jwt_verify(t, strlen(t), keys, &prov, NOW, &v), JWT_OK);
    assert_int_equal(v.exp_s, 0);
    json_decref(v.claims);
    free(t);
    t = tok("HS256", claims("\"exp\":1800000100.75"));
    assert_int_equal(jwt_verify(t, strlen(t), keys, &prov, NOW, &v), JWT_OK);
    assert_int_equal(v.exp_s, NOW + 100);
    json_decref(v.claims);
    free(t);
}

static void test_issuer(void **state)
{
    (void)state;
    signer_t s = signer_for("HS256");
    const char *h = "{\"alg\":\"HS256\"}";
    assert_int_equal(run(make(&s, "HS256", h, "{\"aud\":\"shop\"}")), JWT_BAD_ISSUER);
    assert_int_equal(run(make(&s, "HS256", h, "{\"aud\":\"shop\",\"iss\":\"" ISS "/\"}")),
                     JWT_BAD_ISSUER);
    assert_int_equal(run(make(&s, "HS256", h, "{\"aud\":\"shop\",\"iss\":\"https://id.example\"}")),
                     JWT_BAD_ISSUER);
    assert_int_equal(run(make(&s, "HS256", h, "{\"aud\":\"shop\",\"iss\":[\"" ISS "\"]}")),
                     JWT_BAD_ISSUER);
    assert_int_equal(run(make(&s, "HS256", h, "{\"aud\":\"shop\",\"iss\":\"" ISS "\"}")), JWT_OK);
    config_jwt_provider_t any = prov;
    any.issuer = NULL;
    assert_int_equal(run_with(make(&s, "HS256", h, "{\"aud\":\"shop\"}"), keys, &any), JWT_OK);
    assert_int_equal(run_with(make(&s, "HS256", h, "{\"aud\":\"shop\",\"iss\":7}"), keys, &any),
                     JWT_OK);
    /* Issuer before audience. */
    assert_int_equal(run(make(&s, "HS256", h, "{\"iss\":\"x\"}")), JWT_BAD_ISSUER);
}

static jwt_result_t with_aud(const config_jwt_provider_t *p, const char *aud)
{
    char payload[256];
    signer_t s = signer_for("EdDSA");
    if (aud)
        snprintf(payload, sizeof payload, "{\"iss\":\"" ISS "\",\"aud\":%s}", aud);
    else
        snprintf(payload, sizeof payload, "{\"iss\":\"" ISS "\"}");
    return run_with(make(&s, "EdDSA", "{\"alg\":\"EdDSA\",\"kid\":\"ed\"}", payload), keys, p);
}

static void test_audience(void **state)
{
    (void)state;
    assert_int_equal(with_aud(&prov, "\"shop\""), JWT_OK);
    assert_int_equal(with_aud(&prov, "\"admin\""), JWT_OK);
    assert_int_equal(with_aud(&prov, "[\"x\",\"admin\"]"), JWT_OK);
    assert_int_equal(with_aud(&prov, "[1,null,\"shop\"]"), JWT_OK);
    assert_int_equal(with_aud(&prov, "[\"x\"]"), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, "[]"), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, "\"Shop\""), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, "\"shop \""), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, "\"sho\""), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, "5"), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, "{\"shop\":1}"), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, "[[\"shop\"]]"), JWT_BAD_AUDIENCE);
    assert_int_equal(with_aud(&prov, NULL), JWT_BAD_AUDIENCE);
    config_jwt_provider_t any = prov;
    any.n_audiences = 0;
    assert_int_equal(with_aud(&any, NULL), JWT_OK);
    assert_int_equal(with_aud(&any, "5"), JWT_OK);
}

/* Workers share one set: each takes a reference and verifies at once. */
enum { THREADS = 4, ROUNDS = 25 };
static char *shared_tokens[4];

static void *verify_many(void *arg)
{
    jwks_t *mine = jwks_ref(keys);
    intptr_t failures = 0;
    for (int i = 0; i < ROUNDS; i++)
        for (size_t t = 0; t < 4; t++) {
            const char *tk = shared_tokens[(t + (size_t)(intptr_t)arg) % 4];
            jwt_verified_t v;
            if (jwt_verify(tk, strlen(tk), mine, &prov, NOW, &v) != JWT_OK)
                failures++;
            else
                json_decref(v.claims);
        }
    jwks_unref(mine);
    return (void *)failures;
}

static void test_shared_across_threads(void **state)
{
    (void)state;
    const char *use[] = {"RS256", "ES384", "EdDSA", "HS512"};
    for (size_t i = 0; i < 4; i++)
        shared_tokens[i] = tok(use[i], claims(""));
    pthread_t th[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verify_many, (void *)i), 0);
    for (int i = 0; i < THREADS; i++) {
        void *failures = NULL;
        assert_int_equal(pthread_join(th[i], &failures), 0);
        assert_null(failures);
    }
    for (size_t i = 0; i < 4; i++)
        free(shared_tokens[i]);
    assert_int_equal(jwks_count(keys), 6);
}

static void test_result_names(void **state)
{
    (void)state;
    const char *want[] = {"ok",      "malformed",     "algorithm", "unknown_kid", "signature",
                          "expired", "not_yet_valid", "issuer",    "audience"};
    for (int i = JWT_OK; i <= JWT_BAD_AUDIENCE; i++)
        assert_string_equal(jwt_result_name((jwt_result_t)i), want[i]);
    assert_string_equal(jwt_result_name((jwt_result_t)99), "malformed");
    assert_string_equal(jwt_result_name((jwt_result_t)-1), "malformed");
}

static void assert_text(const json_t *c, const char *name, const char *want)
{
    char out[64];
    int n = jwt_claim_text(c, name, out, sizeof out);
    if (n < 0)
        fail_msg("%s: %d", name, n);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

static void test_claim_text(void **state)
{
    (void)state;
    json_t *c =
        json_loads("{\"s\":\"u-1\",\"n\":42,\"neg\":-7,\"r\":1.5,\"t\":true,\"f\":false,"
                   "\"z\":null,\"a\":[1,\"x\"],\"o\":{\"k\":\"v\"},\"e\":\"\","
                   "\"tab\":\"a\\tb\",\"u\":\"\\u00e9t\\u00e9\",\"nl_in\":[\"a\\nb\"],"
                   "\"crlf\":\"a\\r\\nb\",\"lf\":\"a\\nb\",\"cr\":\"a\\r\",\"del\":\"a\\u007f\","
                   "\"esc\":\"\\u001b[0m\",\"q\":\"say \\\"hi\\\"\"}",
                   0, NULL);
    assert_non_null(c);
    assert_text(c, "s", "u-1");
    assert_text(c, "n", "42");
    assert_text(c, "neg", "-7");
    assert_text(c, "r", "1.5");
    assert_text(c, "t", "true");
    assert_text(c, "f", "false");
    assert_text(c, "z", "null");
    assert_text(c, "a", "[1,\"x\"]");
    assert_text(c, "o", "{\"k\":\"v\"}");
    assert_text(c, "e", "");
    assert_text(c, "tab", "a\tb");
    assert_text(c, "u", "\xc3\xa9t\xc3\xa9");
    assert_text(c, "nl_in", "[\"a\\nb\"]"); /* escaped inside JSON: safe */
    assert_text(c, "q", "say \"hi\"");

    char out[8] = "junk";
    const char *bad[] = {"crlf", "lf", "cr", "del", "esc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(jwt_claim_text(c, bad[i], out, sizeof out), FE_INVAL);
        assert_string_equal(out, "");
    }
    json_object_set_new(c, "nul", json_stringn("a\0b", 3));
    assert_int_equal(jwt_claim_text(c, "nul", out, sizeof out), FE_INVAL);
    assert_int_equal(jwt_claim_text(c, "missing", out, sizeof out), FE_NOTFOUND);

    /* Bounds: the text and its NUL must fit. */
    assert_int_equal(jwt_claim_text(c, "s", out, 4), 3);
    assert_string_equal(out, "u-1");
    assert_int_equal(jwt_claim_text(c, "s", out, 3), FE_TOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(jwt_claim_text(c, "n", out, 3), 2);
    assert_int_equal(jwt_claim_text(c, "n", out, 2), FE_TOOBIG);
    assert_int_equal(jwt_claim_text(c, "o", out, sizeof out), FE_TOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(jwt_claim_text(c, "e", out, 1), 0);
    assert_int_equal(jwt_claim_text(c, "e", out, 0), FE_TOOBIG);
    json_decref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_algorithm),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_alg_refused),
        cmocka_unit_test(test_algorithm_confusion),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_key_without_kid),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_tries_bounded),
        cmocka_unit_test(test_exp_nbf),
        cmocka_unit_test(test_issuer),
        cmocka_unit_test(test_audience),
        cmocka_unit_test(test_shared_across_threads),
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_claim_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
