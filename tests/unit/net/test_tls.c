/* net/tls: a server engine against an OpenSSL client, both over memory
 * (no sockets): handshake and its results, SNI choosing among
 * certificates, ALPN, data both ways, tickets resuming on another
 * connection, close_notify, and refusals. Then the client engine against
 * the server engine: verification against a CA file and the name (DNS or
 * IP), verify off, sessions resumed through a slot, mutual TLS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net/tls.h"

typedef struct files {
    char dir[32];
    char cert[2][64], key[2][64];
} files_t;

/* A self-signed P-256 certificate for name (and a SAN of it). */
static void make_cert(const char *name, const char *cert_path, const char *key_path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    char san[128];
    snprintf(san, sizeof san, "DNS:%s", name);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static int setup(void **state)
{
    files_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ficus-tls-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    const char *names[2] = {"a.test", "b.test"};
    for (int i = 0; i < 2; i++) {
        snprintf(f->cert[i], sizeof f->cert[i], "%s/%d.crt", f->dir, i);
        snprintf(f->key[i], sizeof f->key[i], "%s/%d.key", f->dir, i);
        make_cert(names[i], f->cert[i], f->key[i]);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    files_t *f = *state;
    for (int i = 0; i < 2; i++) {
        unlink(f->cert[i]);
        unlink(f->key[i]);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

typedef struct client {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio;
} client_t;

static void client_new(client_t *c, const char *sni, const char *alpn_wire, size_t alpn_len,
                       SSL_SESSION *resume, int max_version)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    if (max_version)
        SSL_CTX_set_max_proto_version(c->ctx, max_version);
    c->ssl = SSL_new(c->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    if (sni)
        SSL_set_tlsext_host_name(c->ssl, sni);
    if (alpn_wire)
        SSL_set_alpn_protos(c->ssl, (const unsigned char *)alpn_wire, (unsigned)alpn_len);
    if (resume)
        SSL_set_session(c->ssl, resume);
}

static void client_free(client_t *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

/* Moves bytes both ways until neither side has anything to say. */
static void shuttle(client_t *c, tls_conn_t *s)
{
    char buf[32768];
    for (int round = 0; round < 50; round++) {
        int moved = 0;
        int n;
        SSL_do_handshake(c->ssl); /* the client's next flight, if any */
        while ((n = BIO_read(c->wbio, buf, sizeof buf)) > 0) {
            assert_int_equal(tls_conn_feed(s, buf, (size_t)n), 0);
            moved = 1;
        }
        tls_hs_result_t why;
        tls_conn_handshake(s, &why);
        size_t k;
        while ((k = tls_conn_out(s, buf, sizeof buf)) > 0) {
            BIO_write(c->rbio, buf, (int)k);
            moved = 1;
        }
        if (!moved)
            return;
    }
}

static tls_server_t *server(files_t *f, size_t n, const char *alpn, tls_keys_t *keys)
{
    tls_server_opts_t o = {.n_certs = n, .keys_ring = keys};
    for (size_t i = 0; i < n; i++) {
        o.certs[i] = f->cert[i];
        o.keys[i] = f->key[i];
    }
    if (alpn) {
        o.alpn[0] = alpn;
        o.n_alpn = 1;
    }
    char err[256];
    tls_server_t *s = tls_server_new(&o, err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    return s;
}

static void test_sni_alpn_and_data(void **state)
{
    files_t *f = *state;
    tls_keys_t *keys = tls_keys_new();
    tls_server_t *srv = server(f, 2, "http/1.1", keys);
    assert_int_equal(tls_server_n_certs(srv), 2);
    assert_string_equal(tls_server_cert_name(srv, 1), "b.test");
    assert_true(tls_server_cert_expiry(srv, 0) > 0);
    const char *names[3] = {"b.test", "a.test", "other.test"};
    const char *want[3] = {"b.test", "a.test", "a.test"}; /* unknown: the default */
    for (int i = 0; i < 3; i++) {
        client_t c;
        client_new(&c, names[i], "\x02h2\x08http/1.1", 12, NULL, 0);
        tls_conn_t *s = tls_conn_new_server(srv);
        shuttle(&c, s);
        assert_true(tls_conn_handshake_done(s));
        X509 *peer = SSL_get0_peer_certificate(c.ssl);
        char cn[64];
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
        assert_string_equal(cn, want[i]);
        size_t alen;
        const char *a = tls_conn_alpn(s, &alen);
        assert_non_null(a);
        assert_memory_equal(a, "http/1.1", alen);
        /* data both ways */
        SSL_write(c.ssl, "ping", 4);
        shuttle(&c, s);
        char buf[16];
        assert_int_equal(tls_conn_read(s, buf, sizeof buf), 4);
        assert_memory_equal(buf, "ping", 4);
        assert_int_equal(tls_conn_read(s, buf, sizeof buf), 0);
        assert_int_equal(tls_conn_write(s, "pong!", 5), 0);
        shuttle(&c, s);
        assert_int_equal(SSL_read(c.ssl, buf, sizeof buf), 5);
        /* close_notify both ways */
        tls_conn_shutdown(s);
        shuttle(&c, s);
        assert_int_equal(SSL_read(c.ssl, buf, sizeof buf), 0);
        assert_int_equal(SSL_get_error(c.ssl, 0), SSL_ERROR_ZERO_RETURN);
        SSL_shutdown(c.ssl);
        shuttle(&c, s);
        assert_int_equal(tls_conn_read(s, buf, sizeof buf), TLS_EOF);
        tls_conn_free(s);
        client_free(&c);
    }
    tls_server_unref(srv);
    tls_keys_free(keys);
}

/* A ticket resumes on another connection, also after one rotation of the
 * keys (the previous key still opens it). */
static void test_tickets_resume_across_a_rotation(void **state)
{
    files_t *f = *state;
    tls_keys_t *keys = tls_keys_new();
    tls_server_t *srv = server(f, 1, NULL, keys);
    client_t c;
    client_new(&c, "a.test", NULL, 0, NULL, TLS1_2_VERSION);
    tls_conn_t *s = tls_conn_new_server(srv);
    shuttle(&c, s);
    assert_true(tls_conn_handshake_done(s));
    assert_false(tls_conn_resumed(s));
    SSL_SESSION *sess = SSL_get1_session(c.ssl);
    assert_true(SSL_SESSION_has_ticket(sess));
    SSL_shutdown(c.ssl); /* freed without it, OpenSSL forgets the session */
    tls_conn_free(s);
    client_free(&c);
    for (int rotations = 0; rotations < 2; rotations++) {
        if (rotations)
            assert_int_equal(tls_keys_rotate(keys), 0);
        client_new(&c, "a.test", NULL, 0, sess, TLS1_2_VERSION);
        s = tls_conn_new_server(srv);
        shuttle(&c, s);
        assert_true(tls_conn_handshake_done(s));
        assert_true(tls_conn_resumed(s));
        SSL_shutdown(c.ssl);
        tls_conn_free(s);
        client_free(&c);
    }
    SSL_SESSION_free(sess);
    tls_server_unref(srv);
    tls_keys_free(keys);
}

static void test_refusals(void **state)
{
    files_t *f = *state;
    tls_server_t *srv = server(f, 1, "h2", NULL);
    /* TLS 1.1 */
    client_t c;
    client_new(&c, "a.test", NULL, 0, NULL, TLS1_1_VERSION);
    SSL_set_security_level(c.ssl, 0);
    tls_conn_t *s = tls_conn_new_server(srv);
    char buf[4096];
    SSL_do_handshake(c.ssl);
    int n = BIO_read(c.wbio, buf, sizeof buf);
    assert_true(n > 0);
    tls_conn_feed(s, buf, (size_t)n);
    tls_hs_result_t why = TLS_HS_OK;
    assert_int_equal(tls_conn_handshake(s, &why), -1);
    assert_int_equal(why, TLS_HS_PROTOCOL);
    tls_conn_free(s);
    client_free(&c);
    /* ALPN with nothing in common */
    client_new(&c, "a.test", "\x08http/1.1", 9, NULL, 0);
    s = tls_conn_new_server(srv);
    SSL_do_handshake(c.ssl);
    n = BIO_read(c.wbio, buf, sizeof buf);
    tls_conn_feed(s, buf, (size_t)n);
    assert_int_equal(tls_conn_handshake(s, &why), -1);
    assert_int_equal(why, TLS_HS_NO_ALPN);
    tls_conn_free(s);
    client_free(&c);
    /* garbage */
    s = tls_conn_new_server(srv);
    tls_conn_feed(s, "GET / HTTP/1.1\r\n\r\n", 18);
    assert_int_equal(tls_conn_handshake(s, &why), -1);
    assert_int_equal(why, TLS_HS_PROTOCOL);
    tls_conn_free(s);
    tls_server_unref(srv);
    /* a file that is not a certificate */
    tls_server_opts_t o = {.certs = {f->key[0]}, .keys = {f->key[0]}, .n_certs = 1};
    char err[256];
    assert_null(tls_server_new(&o, err, sizeof err));
    assert_non_null(strstr(err, f->key[0]));
}

/* ------------------------------------------------ the client engine */

/* What a handshake came to: 0 under way, 1 done, -1 failed, and why. */
typedef struct hs {
    int rc;
    tls_hs_result_t why;
} hs_t;

static void hs_step(tls_conn_t *x, hs_t *h)
{
    if (h->rc == 0)
        h->rc = tls_conn_handshake(x, &h->why);
}

/* Moves bytes between two engines, driving both handshakes (their ends
 * into hc and hs), until neither has anything to say. */
static void pair_run(tls_conn_t *c, tls_conn_t *s, hs_t *hc, hs_t *hs)
{
    char buf[32768];
    for (int round = 0; round < 50; round++) {
        int moved = 0;
        size_t k;
        hs_step(c, hc);
        while ((k = tls_conn_out(c, buf, sizeof buf)) > 0) {
            assert_int_equal(tls_conn_feed(s, buf, k), 0);
            moved = 1;
        }
        hs_step(s, hs);
        while ((k = tls_conn_out(s, buf, sizeof buf)) > 0) {
            assert_int_equal(tls_conn_feed(c, buf, k), 0);
            moved = 1;
        }
        if (!moved)
            return;
    }
}

static void pair_shuttle(tls_conn_t *c, tls_conn_t *s)
{
    hs_t hc = {0}, hs = {0};
    pair_run(c, s, &hc, &hs);
}

static tls_client_t *client_ctx(const char *ca, bool verify, const char *cert, const char *key)
{
    tls_client_opts_t o = {.ca = ca, .verify = verify, .cert = cert, .key = key};
    char err[256];
    tls_client_t *cl = tls_client_new(&o, err, sizeof err);
    if (!cl)
        fail_msg("%s", err);
    return cl;
}

/* One client connection's handshake against srv: its result (1 done, -1
 * failed) and why; *out keeps the connection when asked. */
static int client_handshake(tls_client_t *cl, tls_server_t *srv, const char *sni, const char *name,
                            tls_session_slot_t *slot, tls_hs_result_t *why, tls_conn_t **out)
{
    tls_conn_t *c = tls_conn_new_client(cl, sni, name, slot);
    assert_non_null(c);
    tls_conn_t *s = tls_conn_new_server(srv);
    hs_t hc = {0}, hs = {0};
    pair_run(c, s, &hc, &hs);
    int rc = hc.rc;
    *why = hc.why;
    if (rc == 1) {
        /* TLS 1.3 tickets come after the handshake: the first read takes
         * them into the slot. */
        char buf[16];
        assert_int_equal(tls_conn_read(c, buf, sizeof buf), 0);
        assert_int_equal(tls_conn_resumed(c), tls_conn_resumed(s));
        tls_conn_shutdown(c); /* freed without it, OpenSSL forgets the session */
    }
    tls_conn_free(s);
    if (out)
        *out = c;
    else
        tls_conn_free(c);
    return rc;
}

static void test_client_verifies_sends_data_and_resumes(void **state)
{
    files_t *f = *state;
    tls_keys_t *keys = tls_keys_new();
    tls_server_t *srv = server(f, 2, NULL, keys);
    tls_client_t *cl = client_ctx(f->cert[0], true, NULL, NULL);
    /* data both ways, then close_notify */
    tls_conn_t *c = tls_conn_new_client(cl, "a.test", "a.test", NULL);
    tls_conn_t *s = tls_conn_new_server(srv);
    pair_shuttle(c, s);
    assert_true(tls_conn_handshake_done(c) && tls_conn_handshake_done(s));
    assert_null(tls_conn_verify_error(c));
    assert_int_equal(tls_conn_write(c, "GET /", 5), 0);
    pair_shuttle(c, s);
    char buf[16];
    assert_int_equal(tls_conn_read(s, buf, sizeof buf), 5);
    assert_int_equal(tls_conn_write(s, "200", 3), 0);
    pair_shuttle(c, s);
    assert_int_equal(tls_conn_read(c, buf, sizeof buf), 3);
    assert_memory_equal(buf, "200", 3);
    tls_conn_shutdown(c);
    pair_shuttle(c, s);
    assert_int_equal(tls_conn_read(s, buf, sizeof buf), TLS_EOF);
    tls_conn_free(c);
    tls_conn_free(s);
    /* sessions: the first connection fills the slot, the next ones resume */
    tls_server_t *one = server(f, 1, NULL, keys);
    tls_session_slot_t slot = {0};
    tls_hs_result_t why;
    assert_int_equal(client_handshake(cl, one, "a.test", "a.test", &slot, &why, NULL), 1);
    assert_int_equal(why, TLS_HS_OK);
    assert_non_null(slot.session);
    assert_int_equal(client_handshake(cl, one, "a.test", "a.test", &slot, &why, NULL), 1);
    assert_int_equal(why, TLS_HS_RESUMED);
    /* A TLS 1.3 ticket is used once (OpenSSL's client): the server sends a
     * new one on every resumed connection, so every next one resumes too. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(client_handshake(cl, one, "a.test", "a.test", &slot, &why, NULL), 1);
        assert_int_equal(why, TLS_HS_RESUMED);
    }
    tls_session_slot_clear(&slot);
    assert_null(slot.session);
    tls_server_unref(one);
    /* SNI picks the second certificate; its name is checked */
    tls_client_t *cl_b = client_ctx(f->cert[1], true, NULL, NULL);
    assert_int_equal(client_handshake(cl_b, srv, "b.test", "b.test", NULL, &why, NULL), 1);
    tls_client_unref(cl_b);
    tls_client_unref(cl);
    tls_server_unref(srv);
    tls_keys_free(keys);
}

static void test_client_refusals(void **state)
{
    files_t *f = *state;
    tls_server_t *srv = server(f, 1, NULL, NULL);
    tls_client_t *cl = client_ctx(f->cert[0], true, NULL, NULL);
    tls_hs_result_t why = TLS_HS_OK;
    tls_conn_t *c;
    /* a name the certificate is not issued to */
    assert_int_equal(client_handshake(cl, srv, "a.test", "b.test", NULL, &why, &c), -1);
    assert_int_equal(why, TLS_HS_CERTIFICATE);
    assert_non_null(tls_conn_verify_error(c));
    tls_conn_free(c);
    /* an IP address it does not name */
    assert_int_equal(client_handshake(cl, srv, NULL, "127.0.0.1", NULL, &why, NULL), -1);
    assert_int_equal(why, TLS_HS_CERTIFICATE);
    tls_client_unref(cl);
    /* another CA */
    cl = client_ctx(f->cert[1], true, NULL, NULL);
    assert_int_equal(client_handshake(cl, srv, "a.test", "a.test", NULL, &why, NULL), -1);
    assert_int_equal(why, TLS_HS_CERTIFICATE);
    tls_client_unref(cl);
    /* verify off: any certificate, any name */
    cl = client_ctx(f->cert[1], false, NULL, NULL);
    assert_int_equal(client_handshake(cl, srv, "a.test", "b.test", NULL, &why, NULL), 1);
    tls_client_unref(cl);
    tls_server_unref(srv);
    /* a client certificate needs both files; a CA file that is not one */
    tls_client_opts_t o = {.verify = true, .cert = f->cert[0]};
    char err[256];
    assert_null(tls_client_new(&o, err, sizeof err));
    o = (tls_client_opts_t){.verify = true, .ca = f->key[0]};
    assert_null(tls_client_new(&o, err, sizeof err));
    assert_non_null(strstr(err, f->key[0]));
}

static void test_client_certificate(void **state)
{
    files_t *f = *state;
    tls_server_opts_t so = {.certs = {f->cert[0]},
                            .keys = {f->key[0]},
                            .n_certs = 1,
                            .client_ca = f->cert[1],
                            .client_auth = TLS_CLIENT_AUTH_REQUIRED};
    char err[256];
    tls_server_t *srv = tls_server_new(&so, err, sizeof err);
    assert_non_null(srv);
    /* with the certificate the server trusts: its CN names the client */
    tls_client_t *cl = client_ctx(f->cert[0], true, f->cert[1], f->key[1]);
    tls_conn_t *c = tls_conn_new_client(cl, "a.test", "a.test", NULL);
    tls_conn_t *s = tls_conn_new_server(srv);
    pair_shuttle(c, s);
    assert_true(tls_conn_handshake_done(c) && tls_conn_handshake_done(s));
    char cn[64];
    assert_int_equal(tls_conn_peer_cn(s, cn, sizeof cn), 6);
    assert_string_equal(cn, "b.test");
    tls_conn_free(c);
    tls_conn_free(s);
    tls_client_unref(cl);
    /* without: the server refuses */
    cl = client_ctx(f->cert[0], true, NULL, NULL);
    c = tls_conn_new_client(cl, "a.test", "a.test", NULL);
    s = tls_conn_new_server(srv);
    hs_t hc = {0}, hs = {0};
    pair_run(c, s, &hc, &hs);
    assert_int_equal(hs.rc, -1);
    assert_int_equal(hs.why, TLS_HS_CERTIFICATE);
    tls_conn_free(c);
    tls_conn_free(s);
    tls_client_unref(cl);
    tls_server_unref(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sni_alpn_and_data),
        cmocka_unit_test(test_tickets_resume_across_a_rotation),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_client_verifies_sends_data_and_resumes),
        cmocka_unit_test(test_client_refusals),
        cmocka_unit_test(test_client_certificate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
