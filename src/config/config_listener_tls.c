/* A listener's tls block; see config_listener_tls.h. */
#include "config/config_listener_tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config/config_rows.h"
#include "config/pem_check.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Read by hand below: each depends on the others (one form of the
 * certificates or the other, client_auth on client_ca). */
static const schema_row_t tls_fields[] = {
    ROW_RAW("cert"), ROW_RAW("key"),       ROW_RAW("certificates"), ROW_RAW("min_version"),
    ROW_RAW("alpn"), ROW_RAW("client_ca"), ROW_RAW("client_auth"),
};

static const schema_row_t pair_fields[] = {
    ROW_RAW("cert"),
    ROW_RAW("key"),
};

/* What alpn may name, and its default: every protocol, h2 first. */
static const char *const alpn_names[] = {"h2", "http/1.1"};

static const char *const client_auth_names[] = {"none", "optional", "required"};

/* ------------------------------------------------------------ the files */

/* The number of PEM certificates in file (0: none, or garbage first). */
static size_t pem_certs_count(const char *file)
{
    FILE *f = fopen(file, "r");
    size_t n = 0;
    X509 *x;
    while (f && n < 10000 && (x = PEM_read_X509(f, NULL, NULL, NULL))) {
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    if (f)
        fclose(f);
    return n;
}

/* The string at v made a file relative to the configuration file and
 * checked readable; NULL after an error. at: where a file error points. */
static char *read_file_name(schema_ctx_t *c, const yaml_node_t *at, const yaml_node_t *v,
                            const char *path)
{
    const char *s = schema_str(c, v, path);
    if (!s)
        return NULL;
    if (!*s) {
        schema_err(c, v, "%s: a file name is needed", path);
        return NULL;
    }
    char *name = config_rows_relative_path(c, at, schema_strdup(c, s));
    if (name && access(name, R_OK) != 0) {
        schema_err(c, at, "%s: cannot read %s: %s", path, name, strerror(errno));
        return NULL;
    }
    return name;
}

/* One certificate: cert and key (written at their keys' nodes in seen),
 * both readable and belonging together. at: the mapping holding them. */
static void read_pair(schema_ctx_t *c, const yaml_node_t *at, const char *path,
                      const schema_row_t *tab, size_t n, const schema_seen_t *seen,
                      config_tls_cert_t *out)
{
    size_t ci = schema_row_of(tab, n, "cert"), ki = schema_row_of(tab, n, "key");
    size_t rows[2] = {ci, ki};
    char **files[2] = {&out->cert, &out->key};
    for (size_t i = 0; i < 2; i++) {
        char p[SCHEMA_PATH_BYTES];
        schema_path_key(p, path, tab[rows[i]].key, strlen(tab[rows[i]].key));
        if (seen->val[rows[i]])
            *files[i] = read_file_name(c, seen->key[rows[i]], seen->val[rows[i]], p);
        else if (seen->key[rows[i]])
            schema_err(c, seen->key[rows[i]], "%s: needs a value", p);
        else
            schema_err(c, at, "%s: required key is missing", p);
    }
    const char *why = NULL;
    if (out->cert && out->key && !pem_check_pair(out->cert, out->key, &why))
        schema_err(c, at, "%s: %s", path, why);
}

/* ------------------------------------------------------- the other keys */

static void read_certificates(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                              config_listener_tls_t *t)
{
    if (!schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = schema_list_len(v);
    if (n == 0 || n > CONFIG_TLS_MAX_CERTS) {
        schema_err(c, v, "%s: 1 to %d certificates (the first is the default)", path,
                   CONFIG_TLS_MAX_CERTS);
        return;
    }
    t->certs = schema_alloc_array(c, n, sizeof *t->certs);
    if (!t->certs)
        return;
    t->n_certs = n;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = schema_list_item(c, v, i);
        char p[SCHEMA_PATH_BYTES];
        schema_path_index(p, path, i);
        if (!it || !schema_want(c, it, YAML_MAPPING_NODE, p))
            continue;
        schema_seen_t seen;
        schema_apply(c, it, it, p, pair_fields, ARRAY_LEN(pair_fields), NULL, &seen);
        read_pair(c, it, p, pair_fields, ARRAY_LEN(pair_fields), &seen, &t->certs[i]);
    }
}

static void read_min_version(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                             config_listener_tls_t *t)
{
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    if (strcmp(s, "1.3") == 0)
        t->min_tls13 = true;
    else if (strcmp(s, "1.2") != 0)
        schema_err(c, v, "%s: %s is not a TLS version ficus speaks (\"1.2\" or \"1.3\")", path,
                   schema_qnode(&q, v));
}

static void alpn_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i,
                      const char *s, void *obj)
{
    config_listener_tls_t *t = obj;
    schema_quote_t q;
    (void)i;
    for (size_t j = 0; j < ARRAY_LEN(alpn_names); j++) {
        if (strcmp(s, alpn_names[j]) != 0)
            continue;
        for (size_t k = 0; k < t->n_alpn; k++)
            if (t->alpn[k] == alpn_names[j]) {
                schema_err(c, it, "%s: %s twice", p, schema_qnode(&q, it));
                return;
            }
        t->alpn[t->n_alpn++] = alpn_names[j];
        return;
    }
    schema_err(c, it, "%s: unknown protocol %s (h2 or http/1.1)", p, schema_qnode(&q, it));
}

static void read_alpn(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                      config_listener_tls_t *t)
{
    if (!v) {
        for (size_t j = 0; j < ARRAY_LEN(alpn_names); j++)
            t->alpn[t->n_alpn++] = alpn_names[j];
        return;
    }
    if (!schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    if (schema_list_len(v) == 0) {
        schema_err(c, v, "%s: needs at least one protocol (h2, http/1.1)", path);
        return;
    }
    schema_each_str(c, v, path, alpn_item, t);
}

/* client_ca and client_auth: asking for certificates needs a CA to verify
 * them with, and a CA is there to verify them. */
static void read_client_auth(schema_ctx_t *c, const yaml_node_t *ca, const yaml_node_t *ca_key,
                             const yaml_node_t *auth, const char *path, config_listener_tls_t *t)
{
    char p[SCHEMA_PATH_BYTES];
    schema_quote_t q;
    if (auth) {
        schema_path_key(p, path, "client_auth", 11);
        const char *s = schema_str(c, auth, p);
        size_t i = 0;
        while (s && i < ARRAY_LEN(client_auth_names) && strcmp(s, client_auth_names[i]) != 0)
            i++;
        if (s && i == ARRAY_LEN(client_auth_names))
            schema_err(c, auth, "%s: unknown value %s (none, optional or required)", p,
                       schema_qnode(&q, auth));
        else if (s)
            t->client_auth = (config_client_cert_t)i;
        if (!s || i == ARRAY_LEN(client_auth_names))
            return;
    }
    bool has_ca = ca && !(ca->type == YAML_SCALAR_NODE && schema_slen(ca) == 0);
    if (t->client_auth != CONFIG_CLIENT_CERT_NONE && !has_ca) {
        schema_path_key(p, path, "client_auth", 11);
        schema_err(c, auth,
                   "%s: %s needs client_ca (the CA file client certificates are verified with)", p,
                   client_auth_names[t->client_auth]);
        return;
    }
    if (!has_ca)
        return; /* client_ca: "" is no CA */
    schema_path_key(p, path, "client_ca", 9);
    if (t->client_auth == CONFIG_CLIENT_CERT_NONE) {
        schema_err(c, ca,
                   "%s: set client_auth (optional or required) to ask for client certificates", p);
        return;
    }
    t->client_ca = read_file_name(c, ca_key, ca, p);
    if (t->client_ca && pem_certs_count(t->client_ca) == 0)
        schema_err(c, ca, "%s: %s holds no PEM certificate", p, t->client_ca);
}

void config_listener_tls_read(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                              config_listener_t *l)
{
    if (!schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    config_listener_tls_t *t = schema_alloc_array(c, 1, sizeof *t);
    if (!t)
        return;
    l->tls = t;
    schema_seen_t seen;
    schema_apply(c, v, v, path, tls_fields, ARRAY_LEN(tls_fields), NULL, &seen);
    const yaml_node_t *cert_k = SCHEMA_SEEN_KEY(tls_fields, seen, "cert");
    const yaml_node_t *key_k = SCHEMA_SEEN_KEY(tls_fields, seen, "key");
    const yaml_node_t *list_k = SCHEMA_SEEN_KEY(tls_fields, seen, "certificates");
    const yaml_node_t *list = SCHEMA_SEEN_VAL(tls_fields, seen, "certificates");
    char p[SCHEMA_PATH_BYTES];
    if (list_k && (cert_k || key_k)) {
        schema_path_key(p, path, "certificates", 12);
        schema_err(c, list_k, "%s: set cert and key (one certificate) or certificates, not both",
                   p);
    } else if (list) {
        schema_path_key(p, path, "certificates", 12);
        read_certificates(c, list, p, t);
    } else if (cert_k || key_k) {
        t->certs = schema_alloc_array(c, 1, sizeof *t->certs);
        if (t->certs) {
            t->n_certs = 1;
            read_pair(c, v, path, tls_fields, ARRAY_LEN(tls_fields), &seen, t->certs);
        }
    } else {
        schema_err(c, v, "%s: needs cert and key, or certificates", path);
    }
    const yaml_node_t *mv = SCHEMA_SEEN_VAL(tls_fields, seen, "min_version");
    if (mv) {
        schema_path_key(p, path, "min_version", 11);
        read_min_version(c, mv, p, t);
    }
    schema_path_key(p, path, "alpn", 4);
    read_alpn(c, SCHEMA_SEEN_VAL(tls_fields, seen, "alpn"), p, t);
    read_client_auth(c, SCHEMA_SEEN_VAL(tls_fields, seen, "client_ca"),
                     SCHEMA_SEEN_KEY(tls_fields, seen, "client_ca"),
                     SCHEMA_SEEN_VAL(tls_fields, seen, "client_auth"), path, t);
}
