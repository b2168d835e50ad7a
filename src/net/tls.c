/* TLS engine over memory BIOs; see tls.h. */
#include "net/tls.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"

/* TLS 1.2: ECDHE key exchange and AEAD ciphers only (no RSA key exchange,
 * no CBC); TLS 1.3's suites are all forward-secret AEAD. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

#define TLS_MAX_NAMES 64                /* names kept per certificate for SNI */
#define TLS_SESSION_CACHE_ENTRIES 10000 /* per certificate context: about 1 KiB each */

/* ------------------------------------------------------ ticket keys */

typedef struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    bool set;
} ticket_key_t;

struct tls_keys {
    pthread_rwlock_t lock;
    ticket_key_t cur, prev;
};

tls_keys_t *tls_keys_new(void)
{
    tls_keys_t *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    pthread_rwlock_init(&k->lock, NULL);
    if (tls_keys_rotate(k) != 0) {
        tls_keys_free(k);
        return NULL;
    }
    return k;
}

void tls_keys_free(tls_keys_t *k)
{
    if (!k)
        return;
    pthread_rwlock_destroy(&k->lock);
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

int tls_keys_rotate(tls_keys_t *k)
{
    ticket_key_t n = {.set = true};
    if (RAND_bytes(n.name, sizeof n.name) != 1 || RAND_bytes(n.aes, sizeof n.aes) != 1 ||
        RAND_bytes(n.hmac, sizeof n.hmac) != 1)
        return FE_IO;
    pthread_rwlock_wrlock(&k->lock);
    k->prev = k->cur;
    k->cur = n;
    pthread_rwlock_unlock(&k->lock);
    OPENSSL_cleanse(&n, sizeof n);
    return 0;
}

static int keys_index = -1; /* SSL_CTX ex_data: its tls_keys_t */

static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    tls_keys_t *k = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), keys_index);
    if (!k)
        return 0;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    int rc = 0;
    pthread_rwlock_rdlock(&k->lock);
    if (enc) {
        if (RAND_bytes(iv, 16) == 1 &&
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->cur.aes, iv) == 1 &&
            EVP_MAC_init(hctx, k->cur.hmac, sizeof k->cur.hmac, params) == 1) {
            memcpy(key_name, k->cur.name, 16);
            rc = 1;
        } else {
            rc = -1;
        }
    } else {
        const ticket_key_t *t = memcmp(key_name, k->cur.name, 16) == 0                   ? &k->cur
                                : k->prev.set && memcmp(key_name, k->prev.name, 16) == 0 ? &k->prev
                                                                                         : NULL;
        if (t && EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, t->aes, iv) == 1 &&
            EVP_MAC_init(hctx, t->hmac, sizeof t->hmac, params) == 1)
            /* 2: a new ticket is issued: for a previous key's, and always in
             * TLS 1.3, whose clients use a ticket once (RFC 8446 C.4): else
             * they resume every other connection. */
            rc = t == &k->cur && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
    }
    pthread_rwlock_unlock(&k->lock);
    return rc;
}

/* ------------------------------------------------------------ server */

typedef struct cert_ctx {
    SSL_CTX *ctx;
    int64_t not_after;
    char *names[TLS_MAX_NAMES];
    size_t n_names;
} cert_ctx_t;

struct tls_server {
    atomic_uint refs;
    cert_ctx_t certs[TLS_MAX_CERTS];
    size_t n_certs;
    unsigned char alpn[64]; /* wire format: length-prefixed protocols */
    size_t alpn_len;
};

static int server_index = -1; /* SSL_CTX ex_data: its tls_server_t */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void make_indexes(void)
{
    keys_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    server_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void ossl_err(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char r[200] = "";
    if (e)
        ERR_error_string_n(e, r, sizeof r);
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, file, e ? r : "failed");
}

/* A name of the certificate matches host (case-insensitive; a wildcard
 * "*.example.com" matches one label). */
static bool name_matches(const char *name, const char *host)
{
    if (name[0] == '*' && name[1] == '.') {
        const char *dot = strchr(host, '.');
        return dot && dot != host && strcasecmp(dot, name + 1) == 0;
    }
    return strcasecmp(name, host) == 0;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    tls_server_t *s = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!host)
        return SSL_TLSEXT_ERR_OK; /* the default certificate */
    for (size_t i = 0; i < s->n_certs; i++)
        for (size_t j = 0; j < s->certs[i].n_names; j++)
            if (name_matches(s->certs[i].names[j], host)) {
                if (i > 0)
                    SSL_set_SSL_CTX(ssl, s->certs[i].ctx);
                return SSL_TLSEXT_ERR_OK;
            }
    return SSL_TLSEXT_ERR_OK; /* unknown name: the default certificate */
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    tls_server_t *s = arg;
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, s->alpn, (unsigned)s->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* no protocol in common */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

/* optional client certificates: the handshake goes on whatever the
 * certificate; only a verified one names the client (tls_conn_peer_cn). */
static int verify_optional_cb(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

/* The certificate's DNS names (SAN), else its subject CN; and notAfter. */
static void cert_names(cert_ctx_t *cc, X509 *x)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && cc->n_names < TLS_MAX_NAMES; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int n = ASN1_STRING_length(g->d.dNSName);
        char *name = n > 0 ? strndup((const char *)d, (size_t)n) : NULL;
        if (name)
            cc->names[cc->n_names++] = name;
    }
    GENERAL_NAMES_free(sans);
    if (cc->n_names == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) >
            0) {
            cc->names[0] = strdup(cn);
            cc->n_names = cc->names[0] ? 1 : 0;
        }
    }
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        cc->not_after = (int64_t)timegm(&tm);
}

/* The session id context: what a session may resume under. Every context
 * of every listener shares the ticket keys and the "ficus" prefix, so a
 * session resumes on any worker and across reloads; the client
 * certificate policy (client_auth and the CA certificates trusted) is in
 * it too, so that a session made where no certificate was asked, or where
 * another CA verified it, does not resume past this listener's check. */
static int session_context(SSL_CTX *ctx, const tls_server_opts_t *o)
{
    unsigned char md[EVP_MAX_MD_SIZE], ca_md[EVP_MAX_MD_SIZE];
    unsigned int n = 0, ca_n = 0;
    unsigned char mode = (unsigned char)(o->client_ca ? o->client_auth : TLS_CLIENT_AUTH_NONE);
    EVP_MD_CTX *d = EVP_MD_CTX_new();
    STACK_OF(X509) *cas = mode != TLS_CLIENT_AUTH_NONE
                              ? X509_STORE_get1_all_certs(SSL_CTX_get_cert_store(ctx))
                              : NULL;
    bool ok = d && EVP_DigestInit_ex(d, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(d, "ficus", 5) == 1 && EVP_DigestUpdate(d, &mode, 1) == 1;
    for (int i = 0; ok && cas && i < sk_X509_num(cas); i++)
        ok = X509_digest(sk_X509_value(cas, i), EVP_sha256(), ca_md, &ca_n) == 1 &&
             EVP_DigestUpdate(d, ca_md, ca_n) == 1;
    ok = ok && EVP_DigestFinal_ex(d, md, &n) == 1 && n <= SSL_MAX_SID_CTX_LENGTH &&
         SSL_CTX_set_session_id_context(ctx, md, n) == 1;
    sk_X509_pop_free(cas, X509_free);
    EVP_MD_CTX_free(d);
    return ok ? 0 : FE_NOMEM;
}

static SSL_CTX *make_ctx(tls_server_t *s, const tls_server_opts_t *o, size_t i, char *err,
                         size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ossl_err(err, errlen, "TLS context for", o->certs[i]);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, o->min_tls13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1) {
        ossl_err(err, errlen, "ciphers for", o->certs[i]);
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, o->certs[i]) != 1) {
        ossl_err(err, errlen, "certificate", o->certs[i]);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->keys[i], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ossl_err(err, errlen, "key", o->keys[i]);
        goto fail;
    }
    /* Tickets resume most clients; those that ask by session id find it in
     * the context's cache, which every worker shares (bounded). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, TLS_SESSION_CACHE_ENTRIES);
    if (o->keys_ring) {
        SSL_CTX_set_ex_data(ctx, keys_index, o->keys_ring);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    if (s->alpn_len)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, s);
    if (o->client_ca && o->client_auth != TLS_CLIENT_AUTH_NONE) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca);
        if (!names || SSL_CTX_load_verify_locations(ctx, o->client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            ossl_err(err, errlen, "client CA", o->client_ca);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        if (o->client_auth == TLS_CLIENT_AUTH_REQUIRED)
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        else
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_optional_cb);
    }
    if (session_context(ctx, o) != 0) {
        ossl_err(err, errlen, "session context for", o->certs[i]);
        goto fail;
    }
    SSL_CTX_set_ex_data(ctx, server_index, s);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

tls_server_t *tls_server_new(const tls_server_opts_t *o, char *err, size_t errlen)
{
    pthread_once(&index_once, make_indexes);
    if (o->n_certs == 0 || o->n_certs > TLS_MAX_CERTS) {
        snprintf(err, errlen, "a TLS listener needs 1 to %d certificates", TLS_MAX_CERTS);
        return NULL;
    }
    tls_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    for (size_t i = 0; i < o->n_alpn && i < TLS_MAX_ALPN; i++) {
        size_t n = strlen(o->alpn[i]);
        if (n == 0 || n > 255 || s->alpn_len + 1 + n > sizeof s->alpn)
            continue;
        s->alpn[s->alpn_len++] = (unsigned char)n;
        memcpy(s->alpn + s->alpn_len, o->alpn[i], n);
        s->alpn_len += n;
    }
    for (size_t i = 0; i < o->n_certs; i++) {
        cert_ctx_t *cc = &s->certs[i];
        cc->ctx = make_ctx(s, o, i, err, errlen);
        if (!cc->ctx) {
            tls_server_unref(s);
            return NULL;
        }
        s->n_certs++;
        X509 *x = SSL_CTX_get0_certificate(cc->ctx);
        if (x)
            cert_names(cc, x);
    }
    SSL_CTX_set_tlsext_servername_callback(s->certs[0].ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(s->certs[0].ctx, s);
    return s;
}

tls_server_t *tls_server_ref(tls_server_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void tls_server_unref(tls_server_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < s->n_certs; i++) {
        SSL_CTX_free(s->certs[i].ctx);
        for (size_t j = 0; j < s->certs[i].n_names; j++)
            free(s->certs[i].names[j]);
    }
    free(s);
}

size_t tls_server_n_certs(const tls_server_t *s) { return s->n_certs; }
int64_t tls_server_cert_expiry(const tls_server_t *s, size_t i) { return s->certs[i].not_after; }
const char *tls_server_cert_name(const tls_server_t *s, size_t i)
{
    return s->certs[i].n_names ? s->certs[i].names[0] : "";
}

const char *tls_hs_result_name(tls_hs_result_t r)
{
    static const char *const names[TLS_HS_RESULTS] = {
        [TLS_HS_OK] = "ok",
        [TLS_HS_RESUMED] = "resumed",
        [TLS_HS_PROTOCOL] = "protocol_error",
        [TLS_HS_NO_ALPN] = "no_application_protocol",
        [TLS_HS_CERTIFICATE] = "client_certificate",
        [TLS_HS_CLOSED] = "closed",
    };
    return r < TLS_HS_RESULTS ? names[r] : "protocol_error";
}

/* -------------------------------------------------------- connection */

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio;
    tls_server_t *server;     /* one reference, or NULL (a client) */
    tls_client_t *client;     /* one reference, or NULL (a server) */
    tls_session_slot_t *slot; /* a client's: where its sessions go */
    bool done;
    bool eof;
};

/* An engine on ctx with its memory BIOs; NULL when out of memory. */
static tls_conn_t *conn_new(SSL_CTX *ctx)
{
    tls_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ssl = SSL_new(ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
        SSL_free(c->ssl);
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        free(c);
        return NULL;
    }
    BIO_set_mem_eof_return(c->rbio, -1); /* empty: "retry", not EOF */
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    return c;
}

tls_conn_t *tls_conn_new_server(tls_server_t *s)
{
    tls_conn_t *c = conn_new(s->certs[0].ctx);
    if (!c)
        return NULL;
    SSL_set_accept_state(c->ssl);
    c->server = tls_server_ref(s);
    return c;
}

void tls_conn_free(tls_conn_t *c)
{
    if (!c)
        return;
    SSL_free(c->ssl); /* and its BIOs */
    tls_server_unref(c->server);
    tls_client_unref(c->client);
    free(c);
}

int tls_conn_feed(tls_conn_t *c, const char *data, size_t len)
{
    while (len > 0) {
        int n = BIO_write(c->rbio, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0)
            return FE_NOMEM;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static tls_hs_result_t hs_failure(tls_conn_t *c, int ssl_err)
{
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (ssl_err == SSL_ERROR_ZERO_RETURN || (ssl_err == SSL_ERROR_SYSCALL && e == 0))
        return TLS_HS_CLOSED;
    int reason = ERR_GET_REASON(e);
    if (reason == SSL_R_NO_APPLICATION_PROTOCOL)
        return TLS_HS_NO_ALPN;
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
        reason == SSL_R_CERTIFICATE_VERIFY_FAILED || tls_conn_verify_error(c))
        return TLS_HS_CERTIFICATE;
    return TLS_HS_PROTOCOL;
}

int tls_conn_handshake(tls_conn_t *c, tls_hs_result_t *why)
{
    if (c->done)
        return 1;
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->done = true;
        *why = SSL_session_reused(c->ssl) ? TLS_HS_RESUMED : TLS_HS_OK;
        return 1;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    *why = hs_failure(c, e);
    return -1;
}

bool tls_conn_handshake_done(const tls_conn_t *c) { return c->done; }

long tls_conn_read(tls_conn_t *c, char *buf, size_t cap)
{
    if (c->eof)
        return TLS_EOF;
    if (cap == 0)
        return 0;
    int n = SSL_read(c->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN) {
        c->eof = true;
        return TLS_EOF;
    }
    return FE_PARSE;
}

bool tls_conn_read_pending(const tls_conn_t *c)
{
    return SSL_pending(c->ssl) > 0 || BIO_ctrl_pending(c->rbio) > 0;
}

int tls_conn_write(tls_conn_t *c, const char *data, size_t len)
{
    while (len > 0) {
        int n = SSL_write(c->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0) {
            ERR_clear_error();
            return FE_IO;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

size_t tls_conn_out_pending(const tls_conn_t *c) { return BIO_ctrl_pending(c->wbio); }

size_t tls_conn_out(tls_conn_t *c, char *buf, size_t cap)
{
    int n = BIO_read(c->wbio, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

void tls_conn_shutdown(tls_conn_t *c)
{
    if (c->done && !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
}

const char *tls_conn_alpn(const tls_conn_t *c, size_t *len)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    *len = n;
    return n ? (const char *)p : NULL;
}

bool tls_conn_resumed(const tls_conn_t *c) { return SSL_session_reused(c->ssl) == 1; }

const char *tls_conn_verify_error(const tls_conn_t *c)
{
    if (SSL_get_verify_mode(c->ssl) == SSL_VERIFY_NONE)
        return NULL; /* computed, but not asked for */
    long r = SSL_get_verify_result(c->ssl);
    return r == X509_V_OK ? NULL : X509_verify_cert_error_string(r);
}

size_t tls_conn_peer_cn(const tls_conn_t *c, char *cn, size_t cap)
{
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    if (!x || SSL_get_verify_result(c->ssl) != X509_V_OK || cap == 0)
        return 0;
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, (int)cap);
    return n > 0 ? (size_t)n : 0;
}

/* ------------------------------------------------------------ client */

struct tls_client {
    atomic_uint refs;
    SSL_CTX *ctx;
};

static int conn_index = -1; /* SSL ex_data: its tls_conn_t */
static pthread_once_t conn_index_once = PTHREAD_ONCE_INIT;

static void make_conn_index(void) { conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL); }

/* A session the target gave (after the handshake in TLS 1.2, in a ticket
 * after it in TLS 1.3): into the connection's slot, replacing the one there.
 * Returns 1: the slot keeps the reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    tls_conn_t *c = SSL_get_ex_data(ssl, conn_index);
    if (!c || !c->slot || !SSL_SESSION_is_resumable(sess))
        return 0;
    SSL_SESSION_free(c->slot->session);
    c->slot->session = sess;
    return 1;
}

tls_client_t *tls_client_new(const tls_client_opts_t *o, char *err, size_t errlen)
{
    pthread_once(&conn_index_once, make_conn_index);
    if (!o->cert != !o->key) {
        snprintf(err, errlen, "a client certificate needs both cert and key");
        return NULL;
    }
    tls_client_t *cl = calloc(1, sizeof *cl);
    SSL_CTX *ctx = cl ? SSL_CTX_new(TLS_client_method()) : NULL;
    if (!ctx) {
        free(cl);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&cl->refs, 1);
    cl->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    static const unsigned char http11[] = "\x08http/1.1";
    static const unsigned char h2[] = "\x02h2";
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
        (o->h2 ? SSL_CTX_set_alpn_protos(ctx, h2, sizeof h2 - 1)
               : SSL_CTX_set_alpn_protos(ctx, http11, sizeof http11 - 1)) != 0) {
        ossl_err(err, errlen, "ciphers for", "the client");
        goto fail;
    }
    if (o->verify) {
        int ok = o->ca ? SSL_CTX_load_verify_locations(ctx, o->ca, NULL)
                       : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            ossl_err(err, errlen, "CA", o->ca ? o->ca : "(the system's store)");
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (o->cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
            ossl_err(err, errlen, "certificate", o->cert);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            ossl_err(err, errlen, "key", o->key);
            goto fail;
        }
    }
    /* Sessions go to the connections' slots, not to a cache in the
     * context (which every worker would share under a lock). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    return cl;
fail:
    tls_client_unref(cl);
    return NULL;
}

tls_client_t *tls_client_ref(tls_client_t *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void tls_client_unref(tls_client_t *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

void tls_session_slot_clear(tls_session_slot_t *slot)
{
    SSL_SESSION_free(slot->session);
    slot->session = NULL;
}

static bool is_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

tls_conn_t *tls_conn_new_client(tls_client_t *cl, const char *sni, const char *name,
                                tls_session_slot_t *slot)
{
    tls_conn_t *c = conn_new(cl->ctx);
    if (!c)
        return NULL;
    c->client = tls_client_ref(cl);
    c->slot = slot;
    SSL_set_connect_state(c->ssl);
    bool ok = SSL_set_ex_data(c->ssl, conn_index, c) == 1;
    if (ok && sni && !is_ip(sni))
        ok = SSL_set_tlsext_host_name(c->ssl, sni) == 1;
    if (ok && name && SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE) {
        /* The name, or the IP address, the certificate must be issued to. */
        if (is_ip(name))
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) == 1;
        else
            ok = SSL_set1_host(c->ssl, name) == 1;
    }
    if (ok && slot && slot->session) {
        if (SSL_SESSION_is_resumable(slot->session))
            SSL_set_session(c->ssl, slot->session);
        else
            tls_session_slot_clear(slot);
    }
    if (!ok) {
        ERR_clear_error();
        tls_conn_free(c);
        return NULL;
    }
    return c;
}
