/* JSON Web Key Sets (policy/jwks.h): what a document must be, which keys are
 * kept and which skipped, lookup by kid and algorithm, the RFC examples'
 * signatures, base64url and the bounded JSON reader. Tokens signed with
 * generated keys are in test_jwt.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/errors.h"
#include "policy/jwks.h"

/* RFC 7515 A.1: the HMAC key and the HS256 JWS made with it. */
#define RFC7515_K                                                                                  \
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
#define RFC7515_JWS                                                                                \
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9."                                                    \
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0c"    \
    "nVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
/* RFC 8037 A.2 and A.4: the Ed25519 public key and its JWS. */
#define RFC8037_X "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define RFC8037_JWS                                                                                \
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."                                    \
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
/* The P-256 generator: a point on the curve. */
#define P256_GX "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY"
#define P256_GY "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"
/* Moduli that only need the right size to be kept: 2048 and 1024 bits. */
#define N2048                                                                                      \
    "xQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"       \
    "EBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"       \
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"       \
    "EBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"
#define N1024                                                                                      \
    "xQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"       \
    "EBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"
#define K32 "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"
#define K31 "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2traw"
#define K64 "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2traw"

static jwks_t *parse(const char *doc)
{
    char err[160];
    jwks_t *k = jwks_parse(doc, strlen(doc), err, sizeof err);
    if (!k)
        fail_msg("jwks_parse: %s", err);
    return k;
}

/* Keys kept and skipped of a one-key document. */
static void assert_one_key(const char *jwk, size_t kept)
{
    char doc[2048], err[160] = "junk";
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", jwk);
    jwks_t *k = jwks_parse(doc, strlen(doc), err, sizeof err);
    assert_non_null(k);
    if (jwks_count(k) != kept)
        fail_msg("%s: kept %zu, expected %zu (%s)", jwk, jwks_count(k), kept, err);
    assert_int_equal(jwks_skipped(k), 1 - kept);
    /* A skipped key's reason is told, for `ficus check`. */
    if (kept)
        assert_string_equal(err, "");
    else
        assert_true(strncmp(err, "keys[0] skipped: ", 17) == 0 && strlen(err) > 17);
    jwks_unref(k);
}

static void test_not_a_jwks(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "[]",
                         "{\"keys\":{}}",
                         "{}",
                         "{\"keys\":[]",
                         "\"keys\"",
                         "{\"keys\":[],\"keys\":[]}",
                         ("{\"keys\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                          "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}")};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[160] = "";
        assert_null(jwks_parse(bad[i], strlen(bad[i]), err, sizeof err));
        assert_true(strncmp(err, "not a JWKS", 10) == 0);
        assert_null(strchr(err, '\n'));
    }
    char *big = malloc(JWKS_MAX_BYTES + 2);
    assert_non_null(big);
    memset(big, ' ', JWKS_MAX_BYTES + 1);
    memcpy(big, "{\"keys\":[]}", 11);
    char err[160] = "";
    assert_null(jwks_parse(big, JWKS_MAX_BYTES + 1, err, sizeof err));
    assert_non_null(strstr(err, "bytes"));
    jwks_t *k = jwks_parse(big, JWKS_MAX_BYTES, err, sizeof err);
    assert_non_null(k);
    assert_int_equal(jwks_count(k), 0);
    jwks_unref(k);
    free(big);
}

static void test_keys_kept(void **state)
{
    (void)state;
    assert_one_key("{\"kty\":\"RSA\",\"n\":\"" N2048 "\",\"e\":\"AQAB\"}", 1);
    assert_one_key("{\"kty\":\"RSA\",\"use\":\"sig\",\"alg\":\"PS256\",\"n\":\"" N2048
                   "\",\"e\":\"AQAB\"}",
                   1);
    assert_one_key("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" P256_GX "\",\"y\":\"" P256_GY "\"}",
                   1);
    assert_one_key("{\"kty\":\"oct\",\"k\":\"" K32 "\",\"key_ops\":[\"sign\",\"verify\"]}", 1);
    assert_one_key("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" RFC8037_X "\"}", 1);
}

static void test_keys_skipped(void **state)
{
    (void)state;
    const char *skip[] = {
        "{\"kty\":\"RSA\",\"n\":\"" N1024 "\",\"e\":\"AQAB\"}",  /* too small */
        "{\"kty\":\"RSA\",\"n\":\"" N2048 "\",\"e\":\"Ag\"}",    /* even e */
        "{\"kty\":\"RSA\",\"n\":\"" N2048 "\"}",                 /* no e */
        "{\"kty\":\"RSA\",\"n\":\"" N2048 "=\",\"e\":\"AQAB\"}", /* padding */
        "{\"kty\":\"RSA\",\"n\":\"" N2048 "\",\"e\":\"AQAB\",\"use\":\"enc\"}",
        "{\"kty\":\"RSA\",\"n\":\"" N2048
        "\",\"e\":\"AQAB\",\"alg\":\"ES256\"}", /* alg of another kty */
        "{\"kty\":\"RSA\",\"n\":\"" N2048 "\",\"e\":\"AQAB\",\"alg\":\"none\"}",
        "{\"kty\":\"RSA\",\"n\":\"" N2048 "\",\"e\":\"AQAB\",\"kid\":7}",
        "{\"kty\":\"RSA\",\"n\":\"" N2048 "\",\"e\":\"AQAB\",\"key_ops\":[\"encrypt\"]}",
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" P256_GY "\",\"y\":\"" P256_GX
        "\"}", /* off the curve */
        "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"" P256_GX "\",\"y\":\"" P256_GY
        "\"}", /* wrong size */
        "{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"" P256_GX "\",\"y\":\"" P256_GY "\"}",
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" P256_GX "\"}",
        "{\"kty\":\"oct\",\"k\":\"" K31 "\"}",                   /* under 32 bytes */
        "{\"kty\":\"oct\",\"k\":\"" K32 "\",\"alg\":\"HS512\"}", /* too short for it */
        "{\"kty\":\"oct\",\"k\":\"a2tr+2tr\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"" RFC8037_X "\"}",
        "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"" RFC8037_X "\"}",
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" K31 "\"}",
        "{\"kty\":\"DSA\"}",
        "{\"n\":\"" N2048 "\",\"e\":\"AQAB\"}",
        "{\"kty\":[]}",
        "\"RSA\"",
        "null",
    };
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        assert_one_key(skip[i], 0);
}

static void test_counts_and_refs(void **state)
{
    (void)state;
    jwks_t *k =
        parse("{\"keys\":[{\"kty\":\"oct\",\"k\":\"" K32 "\"},{\"kty\":\"nope\"},"
              "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" RFC8037_X "\"}],\"extra\":1}");
    assert_int_equal(jwks_count(k), 2);
    assert_int_equal(jwks_skipped(k), 1);
    assert_ptr_equal(jwks_ref(k), k);
    jwks_unref(k);
    assert_int_equal(jwks_count(k), 2); /* one reference left */
    jwks_unref(k);
    assert_null(jwks_ref(NULL));
    jwks_unref(NULL);
    assert_int_equal(jwks_count(NULL), 0);
}

static void test_max_keys(void **state)
{
    (void)state;
    size_t n = JWKS_MAX_KEYS + 3, one = strlen("{\"kty\":\"oct\",\"k\":\"" K32 "\"},");
    char *doc = malloc(n * one + 32);
    assert_non_null(doc);
    char *p = doc + sprintf(doc, "{\"keys\":[");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "{\"kty\":\"oct\",\"k\":\"" K32 "\"}%s", i + 1 < n ? "," : "");
    strcpy(p, "]}");
    char err[160];
    jwks_t *k = jwks_parse(doc, strlen(doc), err, sizeof err);
    assert_non_null(k);
    assert_int_equal(jwks_count(k), JWKS_MAX_KEYS);
    assert_int_equal(jwks_skipped(k), 3);
    assert_string_equal(err, "keys[256] and on skipped: over 256 keys");
    jwks_unref(k);
    free(doc);
}

static size_t count_next(const jwks_t *k, const char *kid, uint32_t alg)
{
    size_t pos = 0, n = 0;
    while (jwks_next(k, kid, kid ? strlen(kid) : 0, alg, &pos))
        n++;
    return n;
}

static void test_lookup(void **state)
{
    (void)state;
    jwks_t *k = parse("{\"keys\":["
                      "{\"kty\":\"oct\",\"kid\":\"a\",\"k\":\"" K32 "\"},"
                      "{\"kty\":\"oct\",\"kid\":\"b\",\"k\":\"" K64 "\"},"
                      "{\"kty\":\"RSA\",\"kid\":\"r\",\"alg\":\"RS256\",\"n\":\"" N2048
                      "\",\"e\":\"AQAB\"},"
                      "{\"kty\":\"RSA\",\"n\":\"" N2048 "\",\"e\":\"AQAB\"},"
                      "{\"kty\":\"EC\",\"kid\":\"a\",\"crv\":\"P-256\",\"x\":\"" P256_GX
                      "\",\"y\":\"" P256_GY "\"}]}");
    assert_int_equal(jwks_count(k), 5);
    assert_int_equal(count_next(k, NULL, JWT_ALG_HS256), 2);
    assert_int_equal(count_next(k, NULL, JWT_ALG_HS512), 1); /* the 64-byte secret only */
    assert_int_equal(count_next(k, "a", JWT_ALG_HS256), 1);
    assert_int_equal(count_next(k, "a", JWT_ALG_ES256), 1);
    assert_int_equal(count_next(k, "a", JWT_ALG_ES384), 0);
    assert_int_equal(count_next(k, "a", JWT_ALG_RS256), 1); /* the RSA key without kid */
    assert_int_equal(count_next(k, NULL, JWT_ALG_RS256), 2);
    assert_int_equal(count_next(k, NULL, JWT_ALG_PS256), 1); /* "r" says RS256 only */
    assert_int_equal(count_next(k, "r", JWT_ALG_PS256), 1);  /* the RSA key without kid */
    assert_int_equal(count_next(k, "r", JWT_ALG_RS256), 2);
    assert_int_equal(count_next(k, "zz", JWT_ALG_RS512), 1);
    assert_int_equal(count_next(k, "", JWT_ALG_HS256), 0);
    assert_int_equal(count_next(k, "ab", JWT_ALG_HS256), 0);
    assert_int_equal(count_next(k, NULL, 0), 0);
    assert_true(jwks_has_kid(k, "r", 1));
    assert_false(jwks_has_kid(k, "x", 1));
    assert_false(jwks_has_kid(k, "", 0));
    jwks_unref(k);
}

/* The signing input and signature of a compact JWS. */
static void split_jws(const char *jws, size_t *msg_len, unsigned char *sig, size_t *sig_len)
{
    const char *dot = strrchr(jws, '.');
    *msg_len = (size_t)(dot - jws);
    long n = jwks_b64url_decode(dot + 1, strlen(dot + 1), sig, 512);
    assert_true(n > 0);
    *sig_len = (size_t)n;
}

static int verify_jws(const jwks_t *k, uint32_t alg, const char *jws)
{
    size_t msg_len, sig_len, pos = 0;
    unsigned char sig[512];
    split_jws(jws, &msg_len, sig, &sig_len);
    const jwks_key_t *key = jwks_next(k, NULL, 0, alg, &pos);
    assert_non_null(key);
    return jwks_key_verify(key, alg, (const unsigned char *)jws, msg_len, sig, sig_len);
}

static void test_rfc_signatures(void **state)
{
    (void)state;
    jwks_t *k = parse("{\"keys\":[{\"kty\":\"oct\",\"k\":\"" RFC7515_K "\"},"
                      "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" RFC8037_X "\"}]}");
    assert_int_equal(verify_jws(k, JWT_ALG_HS256, RFC7515_JWS), 0);
    assert_int_equal(verify_jws(k, JWT_ALG_EDDSA, RFC8037_JWS), 0);

    /* One bit off in the message or the signature, or a signature cut short. */
    char bad[sizeof RFC7515_JWS];
    memcpy(bad, RFC7515_JWS, sizeof bad);
    bad[5] ^= 1;
    assert_int_equal(verify_jws(k, JWT_ALG_HS256, bad), FE_INVAL);
    memcpy(bad, RFC7515_JWS, sizeof bad);
    bad[sizeof bad - 3] = bad[sizeof bad - 3] == 'A' ? 'B' : 'A';
    assert_int_equal(verify_jws(k, JWT_ALG_HS256, bad), FE_INVAL);
    memcpy(bad, RFC7515_JWS, sizeof bad);
    bad[sizeof bad - 4] = '\0';
    assert_int_equal(verify_jws(k, JWT_ALG_HS256, bad), FE_INVAL);
    char ed[sizeof RFC8037_JWS];
    memcpy(ed, RFC8037_JWS, sizeof ed);
    ed[30] ^= 1;
    assert_int_equal(verify_jws(k, JWT_ALG_EDDSA, ed), FE_INVAL);

    /* The HMAC key asked for another algorithm: refused, not computed. */
    size_t pos = 0, msg_len, sig_len;
    unsigned char sig[512];
    split_jws(RFC7515_JWS, &msg_len, sig, &sig_len);
    const jwks_key_t *oct = jwks_next(k, NULL, 0, JWT_ALG_HS256, &pos);
    assert_int_equal(jwks_key_verify(oct, JWT_ALG_RS256, (const unsigned char *)RFC7515_JWS,
                                     msg_len, sig, sig_len),
                     FE_INVAL);
    assert_int_equal(jwks_key_verify(oct, JWT_ALG_HS384, (const unsigned char *)RFC7515_JWS,
                                     msg_len, sig, sig_len),
                     FE_INVAL);
    jwks_unref(k);
}

static void test_b64url(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(jwks_b64url_decode("", 0, out, sizeof out), 0);
    assert_int_equal(jwks_b64url_decode("TQ", 2, out, sizeof out), 1);
    assert_int_equal(out[0], 'M');
    assert_int_equal(jwks_b64url_decode("TWE", 3, out, sizeof out), 2);
    assert_int_equal(jwks_b64url_decode("TWFu", 4, out, sizeof out), 3);
    assert_memory_equal(out, "Man", 3);
    assert_int_equal(jwks_b64url_decode("-_8", 3, out, sizeof out), 2);
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(out[1], 0xff);
    assert_int_equal(jwks_b64url_decode("TR", 2, out, sizeof out), FE_PARSE); /* stray bits */
    assert_int_equal(jwks_b64url_decode("TWF", 3, out, sizeof out), FE_PARSE);
    assert_int_equal(jwks_b64url_decode("T", 1, out, sizeof out), FE_PARSE);
    assert_int_equal(jwks_b64url_decode("TQ==", 4, out, sizeof out), FE_PARSE);
    assert_int_equal(jwks_b64url_decode("+/8A", 4, out, sizeof out), FE_PARSE);
    assert_int_equal(jwks_b64url_decode("TW u", 4, out, sizeof out), FE_PARSE);
    assert_int_equal(jwks_b64url_decode("TW\0u", 4, out, sizeof out), FE_PARSE);
    assert_int_equal(jwks_b64url_decode("TWFu", 4, out, 2), FE_TOOBIG);
}

static void test_json_object(void **state)
{
    (void)state;
    char err[160];
    json_t *j = jwks_json_object("{\"a\":[1,{\"b\":2}]}", 17, err, sizeof err);
    assert_non_null(j);
    json_decref(j);
    assert_null(jwks_json_object("{\"a\":1,\"a\":2}", 13, err, sizeof err));
    assert_null(jwks_json_object("[1]", 3, err, sizeof err));
    assert_string_equal(err, "not a JSON object");
    assert_null(jwks_json_object("{\"a\":1} x", 9, NULL, 0));
    assert_null(jwks_json_object("{\"a\":\"\\u0000\"}", 14, NULL, 0));
    /* Nesting: JWKS_MAX_JSON_DEPTH levels pass, one more does not;
     * brackets inside strings do not count. */
    char deep[6 * JWKS_MAX_JSON_DEPTH + 16];
    for (int extra = 0; extra <= 1; extra++) {
        int d = JWKS_MAX_JSON_DEPTH + extra;
        size_t n = 0;
        for (int i = 0; i < d; i++)
            n += (size_t)sprintf(deep + n, "{\"a\":");
        deep[n++] = '1';
        for (int i = 0; i < d; i++)
            deep[n++] = '}';
        json_t *o = jwks_json_object(deep, n, err, sizeof err);
        if (extra == 0) {
            assert_non_null(o);
            json_decref(o);
        } else {
            assert_null(o);
            assert_non_null(strstr(err, "deeper"));
        }
    }
    const char *strs = "{\"a\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[[[\"}";
    j = jwks_json_object(strs, strlen(strs), err, sizeof err);
    assert_non_null(j);
    json_decref(j);
}

static void test_alg_names(void **state)
{
    (void)state;
    assert_int_equal(jwks_alg_from_name("RS256"), JWT_ALG_RS256);
    assert_int_equal(jwks_alg_from_name("PS512"), JWT_ALG_PS512);
    assert_int_equal(jwks_alg_from_name("ES384"), JWT_ALG_ES384);
    assert_int_equal(jwks_alg_from_name("HS384"), JWT_ALG_HS384);
    assert_int_equal(jwks_alg_from_name("EdDSA"), JWT_ALG_EDDSA);
    assert_int_equal(jwks_alg_from_name("none"), 0);
    assert_int_equal(jwks_alg_from_name("hs256"), 0);
    assert_int_equal(jwks_alg_from_name("ES512"), 0);
    assert_int_equal(jwks_alg_from_name(""), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_a_jwks),     cmocka_unit_test(test_keys_kept),
        cmocka_unit_test(test_keys_skipped),   cmocka_unit_test(test_counts_and_refs),
        cmocka_unit_test(test_max_keys),       cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_rfc_signatures), cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_json_object),    cmocka_unit_test(test_alg_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
