/* The rows of edge security (config_auth.h): API clients, JWT providers,
 * the session exchange, and a route's auth, clients and rate_limit. */
#include "config/config_auth.h"

#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_rows.h"
#include "config/names.h"
#include "core/defaults.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED __attribute__((unused))
#define REDACTED "<redacted>"

static config_rows_state_t *state(schema_ctx_t *c) { return c->user; }

static const char *const scope_names[] = {"local", "global"};

/* local | global into *out; global needs a redis section. */
static void read_scope(schema_ctx_t *c, const yaml_node_t *v, const char *path, config_scope_t *out)
{
    *out = SCOPE_LOCAL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    schema_quote_t q;
    if (!s)
        return;
    if (strcmp(s, "local") == 0)
        return;
    if (strcmp(s, "global") != 0) {
        schema_err(c, v, "%s: unknown scope %s (local or global)", path, schema_qnode(&q, v));
        return;
    }
    *out = SCOPE_GLOBAL;
    const config_t *cfg = state(c)->cfg;
    if (!cfg->redis_address)
        schema_err(c, v, "%s: global counts live in redis: set redis.address", path);
}

/* ---------------------------------------------------------------- clients */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The client being read, and where its keys go. */
typedef struct client_read {
    config_client_t *cl;
    size_t cap_keys;
} client_read_t;

static void add_key(schema_ctx_t *c, const yaml_node_t *at, const char *p, client_read_t *cr,
                    const uint8_t digest[32])
{
    config_client_t *cl = cr->cl;
    for (size_t i = 0; i < cl->n_keys; i++) {
        if (memcmp(cl->key_sha256[i], digest, 32) == 0) {
            schema_err(c, at, "%s: the same key twice", p);
            return;
        }
    }
    if (cl->n_keys < cr->cap_keys)
        memcpy(cl->key_sha256[cl->n_keys++], digest, 32);
}

static void key_hash_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                          const char *s, void *obj)
{
    uint8_t d[32];
    if (strlen(s) != 64) {
        schema_err(c, it, "%s: expected the SHA-256 of a key as 64 hex digits (%zu characters)", p,
                   strlen(s));
        return;
    }
    for (size_t j = 0; j < 32; j++) {
        int hi = hexval(s[2 * j]), lo = hexval(s[2 * j + 1]);
        if (hi < 0 || lo < 0) {
            schema_err(c, it, "%s: expected the SHA-256 of a key as 64 hex digits", p);
            return;
        }
        d[j] = (uint8_t)(hi << 4 | lo);
    }
    add_key(c, it, p, obj, d);
}

static void key_env_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                         const char *s, void *obj)
{
    client_read_t *cr = obj;
    schema_quote_t q;
    if (!names_valid_token(s, strlen(s))) {
        schema_err(c, it, "%s: %s is not an environment variable name", p, schema_qnode(&q, it));
        return;
    }
    const char *val = getenv(s);
    if (!val || !*val) {
        schema_err(c, it, "%s: the environment variable %s is not set (or empty)", p,
                   schema_qnode(&q, it));
        return;
    }
    uint8_t d[32];
    if (!EVP_Digest(val, strlen(val), d, NULL, EVP_sha256(), NULL)) {
        c->oom = true;
        return;
    }
    cr->cl->api_keys_env[cr->cl->n_api_keys_env++] = schema_strdup(c, s);
    add_key(c, it, p, cr, d);
}

static void f_client_id(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_client_t *cl = obj;
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    if (!names_valid(s)) {
        schema_err(c, v, "%s: invalid client id %s (%s)", path, schema_qnode(&q, v), NAMES_RULE);
        return;
    }
    const name_slot_t *first = names_add(&state(c)->clients, s, strlen(s), cl->index, v);
    if (first) {
        schema_err(c, v, "%s: duplicate client id %s (first at line %zu)", path,
                   schema_qnode(&q, v), first->line);
        return;
    }
    cl->id = schema_strdup(c, s);
}

static void f_scope(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                    const char *path, void *obj)
{
    config_client_t *cl = obj;
    read_scope(c, v, path, &cl->concurrency_scope);
}

static json_t *j_client_scope(const schema_row_t *f UNUSED, const void *obj,
                              const void *root UNUSED)
{
    const config_client_t *cl = obj;
    return json_string(scope_names[cl->concurrency_scope]);
}

static json_t *j_redacted(const schema_row_t *f UNUSED, const void *obj UNUSED,
                          const void *root UNUSED)
{
    return json_string(REDACTED);
}

static json_t *j_keys_env(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_client_t *cl = obj;
    return schema_json_strings(cl->api_keys_env, sizeof(char *), cl->n_api_keys_env, 0);
}

static json_t *j_cert_cn(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_client_t *cl = obj;
    return schema_json_strings(cl->certificate_cn, sizeof(char *), cl->n_certificate_cn, 0);
}

/* A subject CN as a certificate carries it: 1 to 64 characters (X.520's
 * bound), no control character. */
static void cert_cn_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                         const char *s, void *obj)
{
    config_client_t *cl = obj;
    schema_quote_t q;
    size_t len = strlen(s);
    bool ok = len > 0 && len <= 64;
    for (size_t j = 0; ok && j < len; j++)
        ok = (unsigned char)s[j] >= 0x20 && s[j] != 0x7f;
    if (!ok) {
        schema_err(c, it,
                   "%s: %s is not a certificate subject CN (1 to 64 characters, no control "
                   "character)",
                   p, schema_qnode(&q, it));
        return;
    }
    cl->certificate_cn[cl->n_certificate_cn++] = schema_strdup(c, s);
}

static const schema_row_t client_fields[] = {
    ROW_CUSTOM_REQ("id", f_client_id, ROW_AS(SCHEMA_STRING, config_client_t, id)),
    ROW_RAW("api_keys_sha256", ROW_JSON(j_redacted)),
    ROW_RAW("api_keys_env", ROW_JSON(j_keys_env)),
    ROW_UINT("max_concurrent_requests", config_client_t, max_concurrent_requests, 0, 0, 10000000),
    ROW_CUSTOM("concurrency_scope", f_scope, ROW_JSON(j_client_scope)),
    ROW_RAW("certificate_cn", ROW_JSON(j_cert_cn)),
};

static void parse_client(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                         config_client_t *cl)
{
    schema_seen_t seen;
    if (!schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    schema_apply(c, v, v, path, client_fields, ARRAY_LEN(client_fields), cl, &seen);
    const yaml_node_t *hashes = SCHEMA_SEEN_VAL(client_fields, seen, "api_keys_sha256");
    const yaml_node_t *envs = SCHEMA_SEEN_VAL(client_fields, seen, "api_keys_env");
    const yaml_node_t *cns = SCHEMA_SEEN_VAL(client_fields, seen, "certificate_cn");
    char p[SCHEMA_PATH_BYTES];
    client_read_t cr = {cl, 0};
    if (cns) {
        schema_path_key(p, path, "certificate_cn", 14);
        if (schema_want(c, cns, YAML_SEQUENCE_NODE, p) && schema_list_len(cns) > 0 &&
            (cl->certificate_cn = schema_alloc_array(c, schema_list_len(cns), sizeof(char *))))
            schema_each_str(c, cns, p, cert_cn_item, cl);
    }
    if (hashes) {
        schema_path_key(p, path, "api_keys_sha256", 15);
        if (schema_want(c, hashes, YAML_SEQUENCE_NODE, p))
            cr.cap_keys += schema_list_len(hashes);
    }
    if (envs) {
        schema_path_key(p, path, "api_keys_env", 12);
        if (schema_want(c, envs, YAML_SEQUENCE_NODE, p)) {
            cr.cap_keys += schema_list_len(envs);
            cl->api_keys_env = schema_alloc_array(c, schema_list_len(envs), sizeof(char *));
        }
    }
    if (cr.cap_keys == 0) {
        if (!cns || cns->type != YAML_SEQUENCE_NODE || schema_list_len(cns) == 0)
            schema_err(c, v,
                       "%s: needs api_keys_sha256, api_keys_env (the keys it presents) or "
                       "certificate_cn (its client certificates)",
                       path);
        return;
    }
    cl->key_sha256 = schema_alloc_array(c, cr.cap_keys, sizeof *cl->key_sha256);
    if (!cl->key_sha256)
        return;
    if (hashes && hashes->type == YAML_SEQUENCE_NODE) {
        schema_path_key(p, path, "api_keys_sha256", 15);
        schema_each_str(c, hashes, p, key_hash_item, &cr);
    }
    if (envs && envs->type == YAML_SEQUENCE_NODE && cl->api_keys_env) {
        schema_path_key(p, path, "api_keys_env", 12);
        schema_each_str(c, envs, p, key_env_item, &cr);
    }
}

/* The value of key in mapping map, or NULL. */
static const yaml_node_t *map_get(schema_ctx_t *c, const yaml_node_t *map, const char *key)
{
    for (size_t i = 0; map && map->type == YAML_MAPPING_NODE && i < schema_map_len(map); i++) {
        const yaml_node_t *k = schema_map_key(c, map, i);
        if (k && k->type == YAML_SCALAR_NODE && strcmp(schema_sval(k), key) == 0)
            return schema_map_value(c, map, i);
    }
    return NULL;
}

static int cert_cn_cmp(const void *a, const void *b)
{
    return strcmp(((const config_cert_cn_t *)a)->cn, ((const config_cert_cn_t *)b)->cn);
}

/* One certificate_cn, one client (else the log would lie about who
 * called); then the index config_client_by_cn searches. */
static void cert_cn_index(schema_ctx_t *c, const yaml_node_t *v, const char *path, config_t *cfg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_clients; i++)
        n += cfg->clients[i].n_certificate_cn;
    if (n == 0)
        return;
    name_set_t seen;
    names_init(c, &seen, n, false);
    cfg->cert_cns = schema_alloc_array(c, n, sizeof *cfg->cert_cns);
    if (!seen.slots || !cfg->cert_cns) {
        names_free(&seen);
        return;
    }
    for (size_t i = 0; i < cfg->n_clients; i++) {
        const config_client_t *cl = &cfg->clients[i];
        const yaml_node_t *list = map_get(c, schema_list_item(c, v, i), "certificate_cn");
        for (size_t j = 0; j < cl->n_certificate_cn; j++) {
            const char *cn = cl->certificate_cn[j];
            if (!cn)
                continue;
            const name_slot_t *first = names_add(&seen, cn, strlen(cn), i, NULL);
            if (!first) {
                cfg->cert_cns[cfg->n_cert_cns++] = (config_cert_cn_t){cn, i};
                continue;
            }
            /* the node: the j-th valid item is at or after index j */
            const yaml_node_t *at = list ? list : schema_list_item(c, v, i);
            for (size_t k = j; list && k < schema_list_len(list); k++) {
                const yaml_node_t *it = schema_list_item(c, list, k);
                if (it && it->type == YAML_SCALAR_NODE && strcmp(schema_sval(it), cn) == 0) {
                    at = it;
                    break;
                }
            }
            char p[SCHEMA_PATH_BYTES], q[SCHEMA_PATH_BYTES];
            schema_path_index(q, path, i);
            schema_path_key(p, q, "certificate_cn", 14);
            schema_quote_t qs;
            if (first->value == i)
                schema_err(c, at, "%s: %s twice", p, schema_qstr(&qs, cn));
            else
                schema_err(c, at, "%s: %s is also a certificate_cn of client %s", p,
                           schema_qstr(&qs, cn),
                           cfg->clients[first->value].id ? cfg->clients[first->value].id : "?");
        }
    }
    names_free(&seen);
    qsort(cfg->cert_cns, cfg->n_cert_cns, sizeof *cfg->cert_cns, cert_cn_cmp);
}

void config_auth_sec_clients(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_t *cfg = obj;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path) || schema_list_len(v) == 0)
        return;
    size_t n = schema_list_len(v);
    cfg->clients = schema_alloc_array(c, n, sizeof *cfg->clients);
    if (!cfg->clients)
        return;
    cfg->n_clients = n;
    names_init(c, &state(c)->clients, n, false);
    for (size_t i = 0; i < n; i++) {
        char p[SCHEMA_PATH_BYTES];
        cfg->clients[i].index = i;
        schema_path_index(p, path, i);
        parse_client(c, schema_list_item(c, v, i), p, &cfg->clients[i]);
    }
    /* One key, one client: a key two clients share would make the second
     * unreachable and the log lie about who called. */
    for (size_t i = 0; i < n; i++)
        for (size_t a = 0; a < cfg->clients[i].n_keys; a++)
            for (size_t j = i + 1; j < n; j++)
                for (size_t b = 0; b < cfg->clients[j].n_keys; b++)
                    if (memcmp(cfg->clients[i].key_sha256[a], cfg->clients[j].key_sha256[b], 32) ==
                        0) {
                        char p[SCHEMA_PATH_BYTES];
                        schema_path_index(p, path, j);
                        schema_err(c, schema_list_item(c, v, j),
                                   "%s: a key of client %s is also a key of client %s", p,
                                   cfg->clients[j].id ? cfg->clients[j].id : "?",
                                   cfg->clients[i].id ? cfg->clients[i].id : "?");
                    }
    cert_cn_index(c, v, path, cfg);
}

json_t *config_auth_j_clients(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_t *cfg = obj;
    return schema_json_array(client_fields, ARRAY_LEN(client_fields), cfg->clients,
                             sizeof *cfg->clients, cfg->n_clients, root);
}

/* ---------------------------------------------------------- jwt_providers */

static const struct {
    const char *name;
    uint32_t bit;
} algorithms[] = {
    {"RS256", JWT_ALG_RS256}, {"RS384", JWT_ALG_RS384}, {"RS512", JWT_ALG_RS512},
    {"PS256", JWT_ALG_PS256}, {"PS384", JWT_ALG_PS384}, {"PS512", JWT_ALG_PS512},
    {"ES256", JWT_ALG_ES256}, {"ES384", JWT_ALG_ES384}, {"HS256", JWT_ALG_HS256},
    {"HS384", JWT_ALG_HS384}, {"HS512", JWT_ALG_HS512}, {"EdDSA", JWT_ALG_EDDSA},
};

static void algorithm_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                           const char *s, void *obj)
{
    config_jwt_provider_t *jp = obj;
    schema_quote_t q;
    for (size_t j = 0; j < ARRAY_LEN(algorithms); j++) {
        if (strcmp(s, algorithms[j].name) == 0) {
            jp->algorithms |= algorithms[j].bit;
            return;
        }
    }
    if (strcasecmp(s, "none") == 0)
        schema_err(c, it, "%s: \"none\" (unsigned tokens) is never accepted", p);
    else
        schema_err(c, it,
                   "%s: unknown algorithm %s (RS256, RS384, RS512, PS256, PS384, PS512, ES256, "
                   "ES384, HS256, HS384, HS512, EdDSA)",
                   p, schema_qnode(&q, it));
}

static void f_algorithms(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_jwt_provider_t *jp = obj;
    jp->algorithms = 0;
    if (!v) {
        jp->algorithms = JWT_ALG_RS256 | JWT_ALG_ES256;
        return;
    }
    if (schema_want(c, v, YAML_SEQUENCE_NODE, path))
        schema_each_str(c, v, path, algorithm_item, jp);
    if (jp->algorithms == 0 && schema_list_len(v) == 0)
        schema_err(c, v, "%s: needs at least one algorithm", path);
}

static json_t *j_algorithms(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_jwt_provider_t *jp = obj;
    json_t *a = json_array();
    for (size_t j = 0; a && j < ARRAY_LEN(algorithms); j++)
        if (jp->algorithms & algorithms[j].bit)
            json_array_append_new(a, json_string(algorithms[j].name));
    return a;
}

static void audience_item(schema_ctx_t *c, const yaml_node_t *it UNUSED, const char *p UNUSED,
                          size_t i UNUSED, const char *s, void *obj)
{
    config_jwt_provider_t *jp = obj;
    jp->audiences[jp->n_audiences++] = schema_strdup(c, s);
}

static void f_audiences(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_jwt_provider_t *jp = obj;
    jp->audiences = NULL;
    jp->n_audiences = 0;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path) || schema_list_len(v) == 0)
        return;
    jp->audiences = schema_alloc_array(c, schema_list_len(v), sizeof(char *));
    if (jp->audiences)
        schema_each_str(c, v, path, audience_item, jp);
}

static json_t *j_audiences(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_jwt_provider_t *jp = obj;
    return schema_json_strings(jp->audiences, sizeof(char *), jp->n_audiences, 0);
}

static void f_jwks_url(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_jwt_provider_t *jp = obj;
    jp->jwks_url = NULL;
    const char *u = v ? schema_str(c, v, path) : NULL;
    if (u && config_rows_http_url(c, v, path, u))
        jp->jwks_url = schema_strdup(c, u);
}

/* A header ficus sets upstream from what it verified: a token, not one
 * that frames the message, nor one ficus writes itself. */
static bool claim_header_ok(schema_ctx_t *c, const yaml_node_t *v, const char *path, const char *h)
{
    static const char *const own[] = {
        "host",         "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
        "x-request-id", "x-client-id",     "authorization",     "traceparent",
        "tracestate",   "cookie",          "x-api-key"};
    schema_quote_t q;
    if (!names_valid_token(h, strlen(h))) {
        schema_err(c, v, "%s: invalid header name %s", path, schema_qnode(&q, v));
        return false;
    }
    bool bad = names_framing_header(h);
    for (size_t i = 0; i < ARRAY_LEN(own) && !bad; i++)
        bad = strcasecmp(h, own[i]) == 0;
    if (bad)
        schema_err(c, v, "%s: %s is a header ficus writes or frames the request with", path,
                   schema_qnode(&q, v));
    return !bad;
}

static void f_forward_claims(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_jwt_provider_t *jp = obj;
    jp->forward_claims = NULL;
    jp->n_forward_claims = 0;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path) || schema_map_len(v) == 0)
        return;
    size_t n = schema_map_len(v);
    jp->forward_claims = schema_alloc_array(c, n, sizeof *jp->forward_claims);
    if (!jp->forward_claims)
        return;
    for (size_t i = 0; i < n; i++) {
        const char *claim = schema_key_str(c, v, i, path);
        char p[SCHEMA_PATH_BYTES];
        if (!claim)
            continue;
        const yaml_node_t *hv = schema_map_value(c, v, i);
        schema_path_key(p, path, claim, strlen(claim));
        const char *h = schema_str(c, hv, p);
        if (!h || !claim_header_ok(c, hv, p, h))
            continue;
        for (size_t j = 0; j < jp->n_forward_claims; j++)
            if (strcasecmp(jp->forward_claims[j].header, h) == 0) {
                schema_err(c, hv, "%s: header %s already carries claim %s", p, h,
                           jp->forward_claims[j].claim);
                h = NULL;
                break;
            }
        if (!h)
            continue;
        config_claim_header_t *ch = &jp->forward_claims[jp->n_forward_claims++];
        ch->claim = schema_strdup(c, claim);
        ch->header = schema_strdup(c, h);
        ch->header_lc = schema_strdup_lower(c, h, strlen(h));
    }
}

static json_t *j_forward_claims(const schema_row_t *f UNUSED, const void *obj,
                                const void *root UNUSED)
{
    const config_jwt_provider_t *jp = obj;
    json_t *o = json_object();
    for (size_t i = 0; o && i < jp->n_forward_claims; i++)
        json_object_set_new(o, jp->forward_claims[i].claim,
                            json_string(jp->forward_claims[i].header));
    return o;
}

static const schema_row_t provider_fields[] = {
    ROW_STRING("issuer", config_jwt_provider_t, issuer, NULL),
    ROW_CUSTOM("audiences", f_audiences, ROW_JSON(j_audiences)),
    ROW_STRING("jwks_file", config_jwt_provider_t, jwks_file, NULL, ROW_OMIT_NULL),
    ROW_CUSTOM("jwks_url", f_jwks_url, ROW_AS(SCHEMA_STRING, config_jwt_provider_t, jwks_url),
               ROW_OMIT_NULL),
    ROW_DURATION("jwks_refresh", config_jwt_provider_t, jwks_refresh_ms, DEFAULT_JWKS_REFRESH_MS,
                 1000, CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("algorithms", f_algorithms, ROW_JSON(j_algorithms)),
    ROW_DURATION("leeway", config_jwt_provider_t, leeway_ms, DEFAULT_JWT_LEEWAY_MS, 0,
                 10 * 60 * 1000),
    ROW_CUSTOM("forward_claims", f_forward_claims, ROW_JSON(j_forward_claims)),
};

void config_auth_sec_jwt_providers(schema_ctx_t *c, const yaml_node_t *k UNUSED,
                                   const yaml_node_t *v, const char *path, void *obj)
{
    config_t *cfg = obj;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path) || schema_map_len(v) == 0)
        return;
    cfg->jwt_providers = schema_alloc_array(c, schema_map_len(v), sizeof *cfg->jwt_providers);
    if (!cfg->jwt_providers)
        return;
    names_init(c, &state(c)->providers, schema_map_len(v), false);
    for (size_t i = 0; i < schema_map_len(v); i++) {
        char p[SCHEMA_PATH_BYTES];
        const char *name =
            names_entry(c, v, i, path, p, &state(c)->providers, cfg->n_jwt_providers);
        if (!name)
            continue;
        config_jwt_provider_t *jp = &cfg->jwt_providers[cfg->n_jwt_providers];
        jp->index = cfg->n_jwt_providers++;
        jp->name = schema_strdup(c, name);
        const yaml_node_t *pv = schema_map_value(c, v, i);
        schema_seen_t seen;
        if (schema_is_null(pv)) {
            schema_err(c, schema_map_key(c, v, i), "%s: needs a mapping with jwks_file or jwks_url",
                       p);
            continue;
        }
        schema_apply(c, pv, pv, p, provider_fields, ARRAY_LEN(provider_fields), jp, &seen);
        if (pv->type != YAML_MAPPING_NODE)
            continue;
        const yaml_node_t *file = SCHEMA_SEEN_VAL(provider_fields, seen, "jwks_file");
        const yaml_node_t *url = SCHEMA_SEEN_VAL(provider_fields, seen, "jwks_url");
        if (!file && !url)
            schema_err(c, pv, "%s: needs jwks_file or jwks_url (where its keys are)", p);
        else if (file && url)
            schema_err(c, SCHEMA_SEEN_KEY(provider_fields, seen, "jwks_url"),
                       "%s.jwks_url: set jwks_file or jwks_url, not both", p);
        if (file && jp->jwks_file)
            jp->jwks_file = config_rows_relative_path(c, file, jp->jwks_file);
        const yaml_node_t *at = file ? file : url;
        if (at) {
            jp->jwks_line = at->start_mark.line + 1;
            jp->jwks_col = at->start_mark.column + 1;
        }
    }
}

json_t *config_auth_j_jwt_providers(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_t *cfg = obj;
    return schema_json_named(provider_fields, ARRAY_LEN(provider_fields), cfg->jwt_providers,
                             sizeof *cfg->jwt_providers, cfg->n_jwt_providers,
                             offsetof(config_jwt_provider_t, name), root);
}

/* ------------------------------------------------------- session_exchange */

static void f_session_cookie(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_session_exchange_t *se = obj;
    se->cookie = NULL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    schema_quote_t q;
    if (s && !names_valid_token(s, strlen(s)))
        schema_err(c, v, "%s: invalid cookie name %s", path, schema_qnode(&q, v));
    else if (s)
        se->cookie = schema_strdup(c, s);
}

static void f_session_header(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_session_exchange_t *se = obj;
    se->header = NULL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (s && claim_header_ok(c, v, path, s))
        se->header = schema_strdup_lower(c, s, strlen(s));
}

static void f_session_url(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_session_exchange_t *se = obj;
    const char *u = schema_str(c, v, path);
    if (u && config_rows_http_url(c, v, path, u))
        se->url = schema_strdup(c, u);
}

static void f_session_provider(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                               const char *path, void *obj)
{
    config_session_exchange_t *se = obj;
    se->provider = CONFIG_NONE;
    const char *s = schema_str(c, v, path);
    schema_quote_t q;
    if (!s)
        return;
    se->provider = names_find(&state(c)->providers, s);
    if (se->provider == CONFIG_NONE)
        schema_err(c, v, "%s: unknown JWT provider %s (see jwt_providers)", path,
                   schema_qnode(&q, v));
}

static json_t *j_session_provider(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_session_exchange_t *se = obj;
    const config_t *cfg = root;
    if (se->provider == CONFIG_NONE)
        return json_null();
    return json_string(cfg->jwt_providers[se->provider].name);
}

static const schema_row_t session_fields[] = {
    ROW_CUSTOM("cookie", f_session_cookie, ROW_AS(SCHEMA_STRING, config_session_exchange_t, cookie),
               ROW_OMIT_NULL),
    ROW_CUSTOM("header", f_session_header, ROW_AS(SCHEMA_STRING, config_session_exchange_t, header),
               ROW_OMIT_NULL),
    ROW_CUSTOM_REQ("url", f_session_url, ROW_AS(SCHEMA_STRING, config_session_exchange_t, url)),
    ROW_CUSTOM_REQ("provider", f_session_provider, ROW_JSON(j_session_provider)),
    ROW_DURATION("cache_ttl", config_session_exchange_t, cache_ttl_ms, DEFAULT_SESSION_CACHE_TTL_MS,
                 0, CONFIG_MAX_DURATION_MS),
    ROW_DURATION("timeout", config_session_exchange_t, timeout_ms, DEFAULT_SESSION_TIMEOUT_MS, 1,
                 60000),
};

void config_auth_sec_session_exchange(schema_ctx_t *c, const yaml_node_t *k UNUSED,
                                      const yaml_node_t *v, const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->has_session_exchange = false;
    cfg->session_exchange.provider = CONFIG_NONE;
    if (!v)
        return;
    if (!schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    schema_seen_t seen;
    cfg->has_session_exchange = true;
    schema_apply(c, v, v, path, session_fields, ARRAY_LEN(session_fields), &cfg->session_exchange,
                 &seen);
    const yaml_node_t *cookie = SCHEMA_SEEN_VAL(session_fields, seen, "cookie");
    const yaml_node_t *header = SCHEMA_SEEN_VAL(session_fields, seen, "header");
    if (!cookie && !header)
        schema_err(c, v, "%s: needs cookie or header (where the session token comes)", path);
    else if (cookie && header)
        schema_err(c, SCHEMA_SEEN_KEY(session_fields, seen, "header"),
                   "%s.header: set cookie or header, not both", path);
}

json_t *config_auth_j_session_exchange(const schema_row_t *f UNUSED, const void *obj,
                                       const void *root)
{
    const config_t *cfg = obj;
    if (!cfg->has_session_exchange)
        return json_null();
    return schema_json(session_fields, ARRAY_LEN(session_fields), &cfg->session_exchange, root);
}

/* ------------------------------------------------------------ route keys */

static const char *const auth_client_names[] = {"none", "optional", "required"};

static void f_auth_client(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_route_t *r = obj;
    r->auth_client = AUTH_CLIENT_NONE;
    const char *s = v ? schema_str(c, v, path) : NULL;
    schema_quote_t q;
    if (!s)
        return;
    for (size_t i = 0; i < ARRAY_LEN(auth_client_names); i++)
        if (strcmp(s, auth_client_names[i]) == 0) {
            r->auth_client = (config_auth_client_t)i;
            if (r->auth_client != AUTH_CLIENT_NONE && state(c)->cfg->n_clients == 0)
                schema_err(c, v, "%s: no clients are defined (see clients)", path);
            return;
        }
    schema_err(c, v, "%s: unknown value %s (none, optional or required)", path,
               schema_qnode(&q, v));
}

static json_t *j_auth_client(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_route_t *r = obj;
    return json_string(auth_client_names[r->auth_client]);
}

static void f_user_provider(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_route_t *r = obj;
    const char *s = schema_str(c, v, path);
    schema_quote_t q;
    if (!s)
        return;
    r->auth_provider = names_find(&state(c)->providers, s);
    if (r->auth_provider == CONFIG_NONE)
        schema_err(c, v, "%s: unknown JWT provider %s (see jwt_providers)", path,
                   schema_qnode(&q, v));
}

static json_t *j_user_provider(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_route_t *r = obj;
    const config_t *cfg = root;
    return r->auth_provider == CONFIG_NONE ? json_null()
                                           : json_string(cfg->jwt_providers[r->auth_provider].name);
}

static const schema_row_t user_fields[] = {
    ROW_CUSTOM_REQ("provider", f_user_provider, ROW_JSON(j_user_provider)),
    ROW_BOOL("required", config_route_t, auth_user_required, false),
};

static json_t *j_user(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_route_t *r = obj;
    if (r->auth_provider == CONFIG_NONE)
        return json_null();
    return schema_json(user_fields, ARRAY_LEN(user_fields), r, root);
}

static void f_user(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                   const char *path, void *obj)
{
    config_route_t *r = obj;
    r->auth_provider = CONFIG_NONE;
    r->auth_user_required = false;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    schema_seen_t seen;
    schema_apply(c, v, v, path, user_fields, ARRAY_LEN(user_fields), r, &seen);
}

static const schema_row_t auth_fields[] = {
    ROW_CUSTOM("client", f_auth_client, ROW_JSON(j_auth_client)),
    ROW_CUSTOM("user", f_user, ROW_JSON(j_user)),
};

void config_auth_f_route_auth(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_route_t *r = obj;
    schema_seen_t seen;
    if (v && !schema_want(c, v, YAML_MAPPING_NODE, path))
        v = NULL;
    schema_apply(c, v, v, path, auth_fields, ARRAY_LEN(auth_fields), r, &seen);
}

json_t *config_auth_j_route_auth(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    return schema_json(auth_fields, ARRAY_LEN(auth_fields), obj, root);
}

static void route_client_item(schema_ctx_t *c, const yaml_node_t *it, const char *p,
                              size_t i UNUSED, const char *s, void *obj)
{
    config_route_t *r = obj;
    schema_quote_t q;
    size_t ci = names_find(&state(c)->clients, s);
    if (ci == CONFIG_NONE) {
        schema_err(c, it, "%s: unknown client %s (see clients)", p, schema_qnode(&q, it));
        return;
    }
    for (size_t j = 0; j < r->n_clients; j++)
        if (r->clients[j] == ci)
            return;
    r->clients[r->n_clients++] = ci;
}

void config_auth_f_route_clients(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                                 const char *path, void *obj)
{
    config_route_t *r = obj;
    r->clients = NULL;
    r->n_clients = 0;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path) || schema_list_len(v) == 0)
        return;
    if (r->auth_client != AUTH_CLIENT_REQUIRED) {
        schema_err(c, v,
                   "%s: only a known client can be let in: set auth.client: required on the route",
                   path);
        return;
    }
    r->clients = schema_alloc_array(c, schema_list_len(v), sizeof *r->clients);
    if (r->clients)
        schema_each_str(c, v, path, route_client_item, r);
}

json_t *config_auth_j_route_clients(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_route_t *r = obj;
    const config_t *cfg = root;
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->n_clients; i++)
        json_array_append_new(a, json_string(cfg->clients[r->clients[i]].id));
    return a;
}

/* rate_limit.requests_per_second and burst: positive numbers (fractions
 * allowed: 0.5 is one request every two seconds). */
static double read_rate(schema_ctx_t *c, const yaml_node_t *v, const char *path, double min)
{
    const char *s = schema_str(c, v, path);
    schema_quote_t q;
    if (!s)
        return 0;
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end || !isfinite(d) || d < min || d > 1e9) {
        schema_err(c, v, "%s: expected a number from %g to 1e9, got %s", path, min,
                   schema_qnode(&q, v));
        return 0;
    }
    return d;
}

static void f_rps(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                  const char *path, void *obj)
{
    config_rate_limit_t *rl = obj;
    rl->requests_per_second = read_rate(c, v, path, 0.001);
}

static void f_burst(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                    const char *path, void *obj)
{
    config_rate_limit_t *rl = obj;
    /* Unwritten: one second's worth, and at least one request. */
    rl->burst = v ? read_rate(c, v, path, 1)
                  : (rl->requests_per_second < 1 ? 1 : ceil(rl->requests_per_second));
}

static const char *const rate_by_names[] = {"client", "ip", "user", "route"};

static void f_by(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                 const char *path, void *obj)
{
    config_rate_limit_t *rl = obj;
    rl->by = RATE_BY_IP;
    const char *s = v ? schema_str(c, v, path) : NULL;
    schema_quote_t q;
    if (!s)
        return;
    for (size_t i = 0; i < ARRAY_LEN(rate_by_names); i++)
        if (strcmp(s, rate_by_names[i]) == 0) {
            rl->by = (config_rate_by_t)i;
            return;
        }
    schema_err(c, v, "%s: unknown value %s (client, ip, user or route)", path, schema_qnode(&q, v));
}

static void f_rate_scope(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_rate_limit_t *rl = obj;
    read_scope(c, v, path, &rl->scope);
}

static json_t *j_number(double d)
{
    return d == floor(d) ? json_integer((json_int_t)d) : json_real(d);
}

static json_t *j_rps(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    return j_number(((const config_rate_limit_t *)obj)->requests_per_second);
}

static json_t *j_burst(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    return j_number(((const config_rate_limit_t *)obj)->burst);
}

static json_t *j_by(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    return json_string(rate_by_names[((const config_rate_limit_t *)obj)->by]);
}

static json_t *j_rate_scope(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    return json_string(scope_names[((const config_rate_limit_t *)obj)->scope]);
}

static const schema_row_t rate_limit_fields[] = {
    ROW_CUSTOM_REQ("requests_per_second", f_rps, ROW_JSON(j_rps)),
    ROW_CUSTOM("burst", f_burst, ROW_JSON(j_burst)),
    ROW_CUSTOM("by", f_by, ROW_JSON(j_by)),
    ROW_CUSTOM("scope", f_rate_scope, ROW_JSON(j_rate_scope)),
};

void config_auth_f_route_rate_limit(schema_ctx_t *c, const yaml_node_t *k UNUSED,
                                    const yaml_node_t *v, const char *path, void *obj)
{
    config_route_t *r = obj;
    r->has_rate_limit = false;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    schema_seen_t seen;
    r->has_rate_limit = true;
    schema_apply(c, v, v, path, rate_limit_fields, ARRAY_LEN(rate_limit_fields), &r->rate_limit,
                 &seen);
    const yaml_node_t *by = SCHEMA_SEEN_VAL(rate_limit_fields, seen, "by");
    char p[SCHEMA_PATH_BYTES];
    schema_path_key(p, path, "by", 2);
    if (r->rate_limit.by == RATE_BY_CLIENT && r->auth_client == AUTH_CLIENT_NONE)
        schema_err(c, by ? by : v, "%s: by client needs auth.client on the route", p);
    if (r->rate_limit.by == RATE_BY_USER && r->auth_provider == CONFIG_NONE)
        schema_err(c, by ? by : v, "%s: by user needs auth.user on the route", p);
}

json_t *config_auth_j_route_rate_limit(const schema_row_t *f UNUSED, const void *obj,
                                       const void *root)
{
    const config_route_t *r = obj;
    if (!r->has_rate_limit)
        return NULL;
    return schema_json(rate_limit_fields, ARRAY_LEN(rate_limit_fields), &r->rate_limit, root);
}

_Static_assert(ARRAY_LEN(provider_fields) <= SCHEMA_MAX_ROWS, "schema_seen_t too small");
_Static_assert(ARRAY_LEN(session_fields) <= SCHEMA_MAX_ROWS, "schema_seen_t too small");
