/* The rows of every section of the configuration file (config_rows.h):
 * how each key is read and checked, its default and bounds, where it goes,
 * whether a reload may change it (ROW_RESTART) and how /config shows it.
 * The checks across sections (names, references) are here too. */
#include "config/config_rows.h"
#include "config/pem_check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config_auth.h"
#include "config/config_lint.h"
#include "config/config_listener_tls.h"
#include "config/config_aggregate.h"
#include "config/config_migration.h"
#include "config/names.h"
#include "config/units.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/url.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED __attribute__((unused)) /* a callback that needs no key node or root */

static config_rows_state_t *state(schema_ctx_t *c) { return c->user; }

/* ----------------------------------------------------------- value checks */

/* A DNS name as written in a target or a host match (no port). */
static bool valid_hostname(const char *s, size_t len)
{
    if (len == 0 || len > 253 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!names_is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
        if (s[i] == '.' && i + 1 < len && s[i + 1] == '.')
            return false;
    }
    return true;
}

/* A request path: '/' first, no space or control character; a query only
 * where a backend path template may carry one. */
static bool check_path(schema_ctx_t *c, const yaml_node_t *v, const char *path, const char *s,
                       bool query_ok)
{
    schema_quote_t q;
    if (s[0] != '/') {
        schema_err(c, v, "%s: must start with '/', got %s", path, schema_qstr(&q, s));
        return false;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            schema_err(c, v, "%s: %s contains a space or a control character", path,
                       schema_qstr(&q, s));
            return false;
        }
        if (*p == '?' && !query_ok) {
            schema_err(c, v, "%s: %s contains '?' (the query is not part of the matched path)",
                       path, schema_qstr(&q, s));
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------- server */

static bool set_listener(schema_ctx_t *c, const yaml_node_t *v, const char *path, const char *s,
                         config_listener_t *l)
{
    addr_hostport_t hp;
    const char *why;
    schema_quote_t q;
    if (addr_split(s, &hp, &why) != 0) {
        schema_err(c, v, "%s: invalid address %s (%s)", path, schema_qstr(&q, s), why);
        return false;
    }
    if (addr_numeric(&hp, &l->addr, &l->addrlen) != 0) {
        schema_err(c, v,
                   "%s: %s is not a numeric address (listen on an IP: 0.0.0.0:8080, [::]:8080, or "
                   ":8080)",
                   path, schema_qstr(&q, s));
        return false;
    }
    l->address = schema_strdup(c, s);
    return l->address != NULL;
}

static void f_listener_address(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                               const char *path, void *obj)
{
    const char *s = schema_str(c, v, path);
    if (s)
        set_listener(c, v, path, s, obj);
}

static void f_listener_tls(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    if (v)
        config_listener_tls_read(c, v, path, obj);
}

/* The addresses as written; a reload compares the bound addresses. */
static json_t *j_listen(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_server_t *s = obj;
    return schema_json_strings(s->listeners, sizeof *s->listeners, s->n_listeners,
                               offsetof(config_listener_t, address));
}

static bool same_addr(const struct sockaddr_storage *a, socklen_t alen,
                      const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static bool same_listen(const void *a, const void *b)
{
    const config_server_t *x = a, *y = b;
    if (x->n_listeners != y->n_listeners)
        return false;
    for (size_t i = 0; i < x->n_listeners; i++)
        if (!same_addr(&x->listeners[i].addr, x->listeners[i].addrlen, &y->listeners[i].addr,
                       y->listeners[i].addrlen))
            return false;
    return true;
}

static const schema_row_t listener_fields[] = {
    ROW_CUSTOM_REQ("address", f_listener_address),
    ROW_CUSTOM("tls", f_listener_tls),
};

static void f_listen(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                     const char *path, void *obj)
{
    config_server_t *s = obj;
    schema_quote_t q;
    if (!v) {
        s->listeners = schema_alloc_array(c, 1, sizeof *s->listeners);
        if (s->listeners) {
            s->n_listeners = 1;
            set_listener(c, NULL, path, DEFAULT_LISTEN, &s->listeners[0]);
        }
        return;
    }
    if (!schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = schema_list_len(v);
    if (n == 0) {
        schema_err(c, v, "%s: needs at least one address (omit it to listen on %s)", path,
                   DEFAULT_LISTEN);
        return;
    }
    if (n > MAX_LISTENERS) {
        schema_err(c, v, "%s: at most %d listeners", path, MAX_LISTENERS);
        return;
    }
    s->listeners = schema_alloc_array(c, n, sizeof *s->listeners);
    if (!s->listeners)
        return;
    s->n_listeners = n;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = schema_list_item(c, v, i);
        config_listener_t *l = &s->listeners[i];
        char p[SCHEMA_PATH_BYTES];
        schema_path_index(p, path, i);
        if (it->type == YAML_MAPPING_NODE) {
            schema_seen_t seen;
            schema_apply(c, it, it, p, listener_fields, ARRAY_LEN(listener_fields), l, &seen);
        } else if (it->type == YAML_SEQUENCE_NODE) {
            schema_err(c, it, "%s: expected an address or {address, tls}, got a list", p);
            continue;
        } else {
            const char *a = schema_str(c, it, p);
            if (!a || !set_listener(c, it, p, a, l))
                continue;
        }
        for (size_t j = 0; j < i && l->addrlen; j++) {
            const config_listener_t *o = &s->listeners[j];
            if (o->addrlen == l->addrlen && memcmp(&o->addr, &l->addr, l->addrlen) == 0) {
                schema_err(c, it, "%s: %s is already in %s[%zu]", p, schema_qstr(&q, l->address),
                           path, j);
                break;
            }
        }
    }
}

static void f_workers(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    config_server_t *s = obj;
    schema_quote_t q;
    if (!v || (v->type == YAML_SCALAR_NODE && strcmp(schema_sval(v), "auto") == 0)) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->workers = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (uint32_t)n;
        return;
    }
    const char *t = schema_str(c, v, path);
    uint64_t w;
    const char *why;
    if (!t)
        return;
    if (units_parse_uint(t, 1, MAX_WORKERS, &w, &why) != 0) {
        schema_err(c, v, "%s: expected auto or a number from 1 to %d, got %s", path, MAX_WORKERS,
                   schema_qnode(&q, v));
        return;
    }
    s->workers = (uint32_t)w;
}

static void f_control_socket(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_server_t *s = obj;
    const size_t max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;
    schema_quote_t q;
    s->control_socket = NULL;
    const char *t = v ? schema_str(c, v, path) : NULL;
    if (!t || !*t)
        return;
    if (strlen(t) > max) {
        schema_err(c, v, "%s: %s is too long for a Unix socket path (at most %zu bytes)", path,
                   schema_qnode(&q, v), max);
        return;
    }
    s->control_socket = schema_strdup(c, t);
}

static void cidr_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i,
                      const char *s, void *arr)
{
    schema_quote_t q;
    if (cidr_parse(s, &((cidr_t *)arr)[i]) != 0)
        schema_err(c, it, "%s: invalid CIDR %s (e.g. 10.0.0.0/8, 2001:db8::/32 or one address)", p,
                   schema_qnode(&q, it));
}

static void cidr_list(schema_ctx_t *c, const yaml_node_t *v, const char *path, cidr_t **out,
                      size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path) || schema_list_len(v) == 0)
        return;
    cidr_t *arr = schema_alloc_array(c, schema_list_len(v), sizeof *arr);
    if (!arr)
        return;
    schema_each_str(c, v, path, cidr_item, arr);
    *out = arr;
    *n = schema_list_len(v);
}

static json_t *cidrs_json(const cidr_t *c, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        char ip[INET6_ADDRSTRLEN], out[64];
        inet_ntop(c[i].family, c[i].bytes, ip, sizeof ip);
        snprintf(out, sizeof out, "%s/%u", ip, c[i].prefix);
        json_array_append_new(a, json_string(out));
    }
    return a;
}

static json_t *j_trusted_proxies(const schema_row_t *f UNUSED, const void *obj,
                                 const void *root UNUSED)
{
    const config_server_t *s = obj;
    return cidrs_json(s->trusted_proxies, s->n_trusted_proxies);
}

static void f_trusted_proxies(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_server_t *s = obj;
    cidr_list(c, v, path, &s->trusted_proxies, &s->n_trusted_proxies);
}

static const schema_row_t http2_fields[] = {
    ROW_BOOL("enabled", config_http2_t, enabled, true),
    ROW_UINT("max_concurrent_streams", config_http2_t, max_concurrent_streams,
             DEFAULT_H2_MAX_CONCURRENT_STREAMS, 1, H2_MAX_CONCURRENT_STREAMS),
    ROW_SIZE("initial_window_size", config_http2_t, initial_window_size,
             DEFAULT_H2_INITIAL_WINDOW_BYTES, H2_MIN_WINDOW_BYTES, H2_MAX_WINDOW_BYTES),
    ROW_SIZE("max_header_list_size", config_http2_t, max_header_list_size, 0, 0,
             CONFIG_MAX_HEADER_BYTES),
};

static const schema_row_t server_fields[] = {
    ROW_CUSTOM("listen", f_listen, ROW_JSON(j_listen), ROW_SAME(same_listen), ROW_RESTART),
    ROW_CUSTOM("workers", f_workers, ROW_AS(SCHEMA_UINT, config_server_t, workers), ROW_RESTART),
    ROW_UINT("max_connections", config_server_t, max_connections, DEFAULT_MAX_CONNECTIONS, 1,
             CONFIG_MAX_COUNT, ROW_RESTART),
    ROW_DURATION("header_timeout", config_server_t, header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_DURATION("idle_timeout", config_server_t, idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_DURATION("tunnel_idle_timeout", config_server_t, tunnel_idle_timeout_ms,
                 DEFAULT_TUNNEL_IDLE_TIMEOUT_MS, 1, CONFIG_MAX_DURATION_MS),
    ROW_SIZE("max_header_size", config_server_t, max_header_bytes, DEFAULT_MAX_HEADER_BYTES,
             CONFIG_MIN_HEADER_BYTES, CONFIG_MAX_HEADER_BYTES, ROW_RESTART),
    ROW_SIZE("max_body_size", config_server_t, max_body_bytes, DEFAULT_MAX_BODY_BYTES, 0,
             UINT64_MAX),
    ROW_SIZE("retry_buffer_size", config_server_t, retry_buffer_bytes, DEFAULT_RETRY_BUFFER_BYTES,
             0, CONFIG_MAX_RETRY_BUFFER_BYTES),
    ROW_DURATION("drain_delay", config_server_t, drain_delay_ms, DEFAULT_DRAIN_DELAY_MS, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_DURATION("drain_timeout", config_server_t, drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("control_socket", f_control_socket,
               ROW_AS(SCHEMA_STRING, config_server_t, control_socket), ROW_RESTART),
    ROW_CUSTOM("trusted_proxies", f_trusted_proxies, ROW_JSON(j_trusted_proxies)),
    ROW_TABLE("http2", config_server_t, http2, http2_fields),
};

/* -------------------------------------------- admin, access log, tracing */

static void f_admin_listen(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    config_t *cfg = obj;
    config_listener_t l;
    schema_quote_t q;
    memset(&l, 0, sizeof l);
    const char *s = v ? schema_str(c, v, path) : DEFAULT_ADMIN_LISTEN;
    if (!s || !set_listener(c, v, path, s, &l))
        return;
    cfg->admin_listen = l.address;
    cfg->admin_addr = l.addr;
    cfg->admin_addrlen = l.addrlen;
    /* server is read before admin (table order): its listeners are known. */
    for (size_t i = 0; i < cfg->server.n_listeners; i++) {
        const config_listener_t *o = &cfg->server.listeners[i];
        if (o->addrlen == l.addrlen && memcmp(&o->addr, &l.addr, l.addrlen) == 0) {
            schema_err(c, v, "%s: %s is also server.listen[%zu]", path, schema_qstr(&q, s), i);
            break;
        }
    }
}

/* admin.token_env: the bearer token comes from this environment variable,
 * read when the file is loaded (an unset or empty variable is an error:
 * an admin API meant to be protected must not open up silently). */
static void f_admin_token_env(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->admin_token_env = NULL;
    cfg->admin_token = NULL;
    if (!v)
        return;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    schema_quote_t q;
    if (!names_valid_token(s, strlen(s))) {
        schema_err(c, v, "%s: %s is not an environment variable name", path, schema_qnode(&q, v));
        return;
    }
    const char *val = getenv(s);
    if (!val || !*val) {
        schema_err(c, v, "%s: the environment variable %s is not set (or empty)", path,
                   schema_qnode(&q, v));
        return;
    }
    cfg->admin_token_env = schema_strdup(c, s);
    cfg->admin_token = schema_strdup(c, val);
}

/* The address as written; a reload compares the bound address. */
static bool same_admin_listen(const void *a, const void *b)
{
    const config_t *x = a, *y = b;
    return same_addr(&x->admin_addr, x->admin_addrlen, &y->admin_addr, y->admin_addrlen);
}

static const schema_row_t admin_fields[] = {
    ROW_CUSTOM("listen", f_admin_listen, ROW_AS(SCHEMA_STRING, config_t, admin_listen),
               ROW_SAME(same_admin_listen), ROW_RESTART),
    ROW_CUSTOM("token_env", f_admin_token_env, ROW_AS(SCHEMA_STRING, config_t, admin_token_env),
               ROW_OMIT_NULL),
};

static void f_access_log_path(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->access_log_path = NULL;
    if (!v) {
        cfg->access_log_path = schema_strdup(c, DEFAULT_ACCESS_LOG);
        return;
    }
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    if (!*s)
        schema_err(c, v, "%s: must not be empty (write off to turn the access log off)", path);
    else if (strcmp(s, "off") != 0)
        cfg->access_log_path = schema_strdup(c, s);
}

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

static void f_log_level(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->log_level = 2; /* info */
    if (!v)
        return;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    for (int i = 0; i < 4; i++)
        if (strcmp(s, log_level_names[i]) == 0) {
            cfg->log_level = i;
            return;
        }
    schema_quote_t q;
    schema_err(c, v, "%s: %s is not one of error, warn, info, debug", path, schema_qnode(&q, v));
}

static void f_log_format(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->log_json = false;
    if (!v)
        return;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    if (strcmp(s, "json") == 0)
        cfg->log_json = true;
    else if (strcmp(s, "text") != 0) {
        schema_quote_t q;
        schema_err(c, v, "%s: %s is not one of text, json", path, schema_qnode(&q, v));
    }
}

static json_t *j_log_level(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_t *cfg = obj;
    int i = cfg->log_level >= 0 && cfg->log_level < 4 ? cfg->log_level : 2;
    return json_string(log_level_names[i]);
}

static json_t *j_log_format(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_t *cfg = obj;
    return json_string(cfg->log_json ? "json" : "text");
}

static const schema_row_t log_fields[] = {
    ROW_CUSTOM("level", f_log_level, ROW_JSON(j_log_level)),
    ROW_CUSTOM("format", f_log_format, ROW_JSON(j_log_format)),
};

static json_t *j_access_log_path(const schema_row_t *f UNUSED, const void *obj,
                                 const void *root UNUSED)
{
    const config_t *cfg = obj;
    return json_string(cfg->access_log_path ? cfg->access_log_path : "off");
}

static const schema_row_t access_log_fields[] = {
    ROW_CUSTOM("path", f_access_log_path, ROW_AS(SCHEMA_STRING, config_t, access_log_path),
               ROW_JSON(j_access_log_path), ROW_RESTART),
};

const char *config_rows_http_url(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                                 const char *s)
{
    schema_quote_t q;
    if (strncmp(s, "https://", 8) == 0) {
        schema_err(c, v, "%s: https is not supported yet; use an http:// URL", path);
        return NULL;
    }
    if (strncmp(s, "http://", 7) != 0 || s[7] == '\0' || s[7] == '/') {
        schema_err(c, v, "%s: expected an http:// URL, got %s", path, schema_qnode(&q, v));
        return NULL;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            schema_err(c, v, "%s: %s contains a space or a control character", path,
                       schema_qnode(&q, v));
            return NULL;
        }
    }
    /* Host, port and the rest, as the runtime will read them: a bad one
     * fails `ficus check`, not the first fetch. */
    url_http_t u;
    char why[128];
    if (url_parse_http(s, &u, why, sizeof why) != 0) {
        schema_err(c, v, "%s: %s, got %s", path, why, schema_qnode(&q, v));
        return NULL;
    }
    return s;
}

static void f_otlp_endpoint(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_tracing_t *t = obj;
    t->otlp_endpoint = NULL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (s && *s && config_rows_http_url(c, v, path, s))
        t->otlp_endpoint = schema_strdup(c, s);
}

static void propagation_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                             const char *s, void *obj)
{
    config_tracing_t *t = obj;
    schema_quote_t q;
    if (strcmp(s, "w3c") == 0)
        t->propagate_w3c = true;
    else if (strcmp(s, "datadog") == 0)
        t->propagate_datadog = true;
    else
        schema_err(c, it, "%s: unknown propagation %s (w3c or datadog)", p, schema_qnode(&q, it));
}

static void f_propagation(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_tracing_t *t = obj;
    t->propagate_w3c = v == NULL;
    t->propagate_datadog = false;
    if (v && schema_want(c, v, YAML_SEQUENCE_NODE, path))
        schema_each_str(c, v, path, propagation_item, t);
}

static json_t *j_propagation(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_tracing_t *t = obj;
    json_t *a = json_array();
    if (a && t->propagate_w3c)
        json_array_append_new(a, json_string("w3c"));
    if (a && t->propagate_datadog)
        json_array_append_new(a, json_string("datadog"));
    return a;
}

static const schema_row_t tracing_fields[] = {
    ROW_CUSTOM("otlp_endpoint", f_otlp_endpoint,
               ROW_AS(SCHEMA_STRING, config_tracing_t, otlp_endpoint), ROW_RESTART),
    ROW_STRING("service_name", config_tracing_t, service_name, DEFAULT_SERVICE_NAME, ROW_RESTART),
    ROW_RATIO("sample_ratio", config_tracing_t, sample_ratio, DEFAULT_SAMPLE_RATIO),
    ROW_CUSTOM("propagation", f_propagation, ROW_JSON(j_propagation)),
};

static void f_redis_address(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_t *cfg = obj;
    const char *s = schema_str(c, v, path);
    addr_hostport_t hp;
    const char *why;
    schema_quote_t q;
    if (!s)
        return;
    if (addr_split(s, &hp, &why) != 0)
        schema_err(c, v, "%s: invalid address %s (%s)", path, schema_qnode(&q, v), why);
    else if (!hp.host[0])
        schema_err(c, v, "%s: %s needs a host (e.g. 127.0.0.1:6379)", path, schema_qnode(&q, v));
    else
        cfg->redis_address = schema_strdup(c, s);
}

static const schema_row_t redis_fields[] = {
    ROW_CUSTOM_REQ("address", f_redis_address, ROW_AS(SCHEMA_STRING, config_t, redis_address)),
    ROW_DURATION("timeout", config_t, redis_timeout_ms, DEFAULT_REDIS_TIMEOUT_MS, 1, 60000),
};

/* null when the section is not written. */
static json_t *j_redis(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_t *cfg = obj;
    if (!cfg->redis_address)
        return json_null();
    return schema_json(redis_fields, ARRAY_LEN(redis_fields), cfg, root);
}

/* ---------------------------------------------------------- target groups */

/* The targets being read, and their names so far. */
typedef struct targets_read {
    config_target_group_t *g;
    name_set_t names;
    const char *path;
} targets_read_t;

static void target_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i,
                        const char *s, void *obj)
{
    targets_read_t *tr = obj;
    config_target_t *t = &tr->g->targets[i];
    addr_hostport_t hp;
    const char *why;
    schema_quote_t q;
    if (addr_split(s, &hp, &why) != 0) {
        schema_err(c, it, "%s: invalid target %s (%s)", p, schema_qnode(&q, it), why);
        return;
    }
    if (!hp.host[0]) {
        schema_err(c, it, "%s: %s needs a host (e.g. 10.0.0.5:80 or app.internal:80)", p,
                   schema_qnode(&q, it));
        return;
    }
    t->numeric = addr_numeric(&hp, &t->addr, &t->addrlen) == 0;
    if (!t->numeric && !valid_hostname(hp.host, strlen(hp.host))) {
        schema_err(c, it, "%s: invalid host name in %s", p, schema_qnode(&q, it));
        return;
    }
    t->name = schema_strdup(c, s);
    t->host = schema_strdup(c, hp.host);
    t->port = hp.port;
    const name_slot_t *first = names_add(&tr->names, s, strlen(s), i, it);
    if (first)
        schema_err(c, it, "%s: %s is already %s[%zu]", p, schema_qnode(&q, it), tr->path,
                   first->value);
}

static void f_targets(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    targets_read_t tr = {.g = obj, .path = path};
    if (!schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = schema_list_len(v);
    if (n == 0) {
        schema_err(c, v, "%s: needs at least one target (host:port)", path);
        return;
    }
    tr.g->targets = schema_alloc_array(c, n, sizeof *tr.g->targets);
    if (!tr.g->targets)
        return;
    tr.g->n_targets = n;
    names_init(c, &tr.names, n, false);
    schema_each_str(c, v, path, target_item, &tr);
    names_free(&tr.names);
}

static void f_balance(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    config_target_group_t *g = obj;
    schema_quote_t q;
    g->balance = BALANCE_ROUND_ROBIN;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s || strcmp(s, "round_robin") == 0)
        return;
    if (strcmp(s, "least_request") == 0)
        g->balance = BALANCE_LEAST_REQUEST;
    else if (strcmp(s, "random") == 0)
        g->balance = BALANCE_RANDOM;
    else
        schema_err(c, v, "%s: unknown balance %s (round_robin, least_request or random)", path,
                   schema_qnode(&q, v));
}

static const schema_row_t keepalive_fields[] = {
    ROW_UINT("max_idle", config_target_group_t, keepalive_max_idle, DEFAULT_KEEPALIVE_MAX_IDLE, 0,
             CONFIG_MAX_COUNT),
    ROW_DURATION("idle_timeout", config_target_group_t, keepalive_idle_timeout_ms,
                 DEFAULT_KEEPALIVE_IDLE_TIMEOUT_MS, 1, CONFIG_MAX_DURATION_MS),
};

static void f_hc_path(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    config_health_check_t *hc = obj;
    const char *s = v ? schema_str(c, v, path) : DEFAULT_HC_PATH;
    hc->path = NULL;
    if (s && check_path(c, v, path, s, true))
        hc->path = schema_strdup(c, s);
}

static const schema_row_t health_check_fields[] = {
    ROW_CUSTOM("path", f_hc_path, ROW_AS(SCHEMA_STRING, config_health_check_t, path)),
    ROW_DURATION("interval", config_health_check_t, interval_ms, DEFAULT_HC_INTERVAL_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_DURATION("timeout", config_health_check_t, timeout_ms, DEFAULT_HC_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_UINT("healthy_threshold", config_health_check_t, healthy_threshold,
             DEFAULT_HC_HEALTHY_THRESHOLD, 1, CONFIG_MAX_THRESHOLD),
    ROW_UINT("unhealthy_threshold", config_health_check_t, unhealthy_threshold,
             DEFAULT_HC_UNHEALTHY_THRESHOLD, 1, CONFIG_MAX_THRESHOLD),
};

static const schema_row_t outlier_fields[] = {
    ROW_UINT("consecutive_errors", config_outlier_t, consecutive_errors,
             DEFAULT_OUTLIER_CONSECUTIVE_ERRORS, 1, CONFIG_MAX_THRESHOLD),
    ROW_DURATION("base_ejection_time", config_outlier_t, base_ejection_ms,
                 DEFAULT_OUTLIER_BASE_EJECTION_MS, 1, CONFIG_MAX_DURATION_MS),
    ROW_UINT("max_ejection_percent", config_outlier_t, max_ejection_percent,
             DEFAULT_OUTLIER_MAX_EJECTION_PERCENT, 0, 100),
};

static const schema_row_t target_tls_fields[] = {
    ROW_STRING("sni", config_target_tls_t, sni, NULL, ROW_OMIT_NULL),
    ROW_STRING("ca", config_target_tls_t, ca, NULL, ROW_OMIT_NULL),
    ROW_BOOL("verify", config_target_tls_t, verify, true),
    ROW_STRING("cert", config_target_tls_t, cert, NULL, ROW_OMIT_NULL),
    ROW_STRING("key", config_target_tls_t, key, NULL, ROW_OMIT_NULL),
};

/* tls: {sni, ca, verify, cert, key}; `tls: {}` is TLS with the defaults.
 * Files are relative to the configuration file, checked readable now (and
 * cert and key that they go together); read when a configuration is
 * activated. */
static void f_group_tls(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_target_group_t *g = obj;
    config_target_tls_t *t = &g->tls;
    schema_seen_t seen;
    g->has_tls = v != NULL;
    if (v && !schema_want(c, v, YAML_MAPPING_NODE, path))
        v = NULL;
    schema_apply(c, v, v, path, target_tls_fields, ARRAY_LEN(target_tls_fields), t, &seen);
    if (!v)
        return;
    const yaml_node_t *sni = SCHEMA_SEEN_VAL(target_tls_fields, seen, "sni");
    schema_quote_t q;
    if (t->sni && sni && !valid_hostname(t->sni, strlen(t->sni)))
        schema_err(c, sni, "%s.sni: invalid host name %s", path, schema_qnode(&q, sni));
    const char *keys[3] = {"ca", "cert", "key"};
    char **files[3] = {&t->ca, &t->cert, &t->key};
    bool readable = true;
    for (size_t i = 0; i < 3; i++) {
        const yaml_node_t *at = SCHEMA_SEEN_VAL(target_tls_fields, seen, keys[i]);
        if (!*files[i] || !at)
            continue;
        *files[i] = config_rows_relative_path(c, at, *files[i]);
        if (*files[i] && access(*files[i], R_OK) != 0) {
            schema_err(c, at, "%s.%s: cannot read %s: %s", path, keys[i], *files[i],
                       strerror(errno));
            readable = false;
        }
    }
    if (!t->cert != !t->key) {
        schema_err(c, v, "%s: %s without %s (a client certificate needs both)", path,
                   t->cert ? "cert" : "key", t->cert ? "key" : "cert");
        return;
    }
    const char *why = NULL;
    if (t->cert && readable && !pem_check_pair(t->cert, t->key, &why))
        schema_err(c, v, "%s: %s", path, why);
}

static json_t *j_group_tls(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_target_group_t *g = obj;
    if (!g->has_tls)
        return NULL;
    return schema_json(target_tls_fields, ARRAY_LEN(target_tls_fields), &g->tls, root);
}

static json_t *j_targets(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_target_group_t *g = obj;
    return schema_json_strings(g->targets, sizeof *g->targets, g->n_targets,
                               offsetof(config_target_t, name));
}

static void f_protocol(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_target_group_t *g = obj;
    schema_quote_t q;
    g->h2 = false;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s || strcmp(s, "http1") == 0)
        return;
    if (strcmp(s, "h2") == 0)
        g->h2 = true;
    else
        schema_err(c, v, "%s: unknown protocol %s (http1 or h2)", path, schema_qnode(&q, v));
}

static json_t *j_protocol(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_target_group_t *g = obj;
    return json_string(g->h2 ? "h2" : "http1");
}

static json_t *j_balance(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    static const char *const names[] = {"round_robin", "least_request", "random"};
    const config_target_group_t *g = obj;
    return json_string(names[g->balance]);
}

static const schema_row_t group_fields[] = {
    ROW_CUSTOM_REQ("targets", f_targets, ROW_JSON(j_targets)),
    ROW_DURATION("dns_refresh", config_target_group_t, dns_refresh_ms, DEFAULT_DNS_REFRESH_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("balance", f_balance, ROW_JSON(j_balance)),
    ROW_CUSTOM("protocol", f_protocol, ROW_JSON(j_protocol)),
    ROW_DURATION("connect_timeout", config_target_group_t, connect_timeout_ms,
                 DEFAULT_CONNECT_TIMEOUT_MS, 1, CONFIG_MAX_DURATION_MS),
    ROW_UINT("max_connections", config_target_group_t, max_connections,
             DEFAULT_GROUP_MAX_CONNECTIONS, 1, CONFIG_MAX_COUNT),
    ROW_UINT("max_pending", config_target_group_t, max_pending, DEFAULT_GROUP_MAX_PENDING, 1,
             CONFIG_MAX_COUNT),
    ROW_UINT("max_requests", config_target_group_t, max_requests, DEFAULT_GROUP_MAX_REQUESTS, 1,
             CONFIG_MAX_COUNT),
    ROW_TABLE_SELF("keepalive", keepalive_fields),
    ROW_BOOL("required", config_target_group_t, required, false),
    ROW_UINT("panic_threshold", config_target_group_t, panic_threshold, DEFAULT_PANIC_THRESHOLD, 0,
             100),
    ROW_TABLE("health_check", config_target_group_t, health_check, health_check_fields,
              ROW_HAS(config_target_group_t, has_health_check)),
    ROW_TABLE("outlier_detection", config_target_group_t, outlier, outlier_fields,
              ROW_HAS(config_target_group_t, has_outlier)),
    ROW_CUSTOM("tls", f_group_tls, ROW_JSON(j_group_tls)),
};

static void sec_target_groups(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_t *cfg = obj;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path) || schema_map_len(v) == 0)
        return;
    cfg->target_groups = schema_alloc_array(c, schema_map_len(v), sizeof *cfg->target_groups);
    if (!cfg->target_groups)
        return;
    names_init(c, &state(c)->groups, schema_map_len(v), false);
    for (size_t i = 0; i < schema_map_len(v); i++) {
        char p[SCHEMA_PATH_BYTES];
        const char *name = names_entry(c, v, i, path, p, &state(c)->groups, cfg->n_target_groups);
        if (!name)
            continue;
        config_target_group_t *g = &cfg->target_groups[cfg->n_target_groups];
        g->index = cfg->n_target_groups++;
        g->name = schema_strdup(c, name);
        const yaml_node_t *gv = schema_map_value(c, v, i);
        schema_seen_t seen;
        if (schema_is_null(gv))
            schema_err(c, schema_map_key(c, v, i), "%s: needs a mapping with targets", p);
        else
            schema_apply(c, gv, gv, p, group_fields, ARRAY_LEN(group_fields), g, &seen);
    }
}

/* name -> the group's rows. */
static json_t *j_target_groups(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_t *cfg = obj;
    return schema_json_named(group_fields, ARRAY_LEN(group_fields), cfg->target_groups,
                             sizeof *cfg->target_groups, cfg->n_target_groups,
                             offsetof(config_target_group_t, name), root);
}

/* ------------------------------------------------------------------ sets */

static void f_set_url(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    config_set_t *s = obj;
    s->url = NULL;
    const char *u = v ? schema_str(c, v, path) : NULL;
    if (u && config_rows_http_url(c, v, path, u))
        s->url = schema_strdup(c, u);
}

static const schema_row_t set_fields[] = {
    ROW_STRING("file", config_set_t, file, NULL),
    ROW_CUSTOM("url", f_set_url, ROW_AS(SCHEMA_STRING, config_set_t, url)),
    ROW_DURATION("refresh", config_set_t, refresh_ms, DEFAULT_SET_REFRESH_MS, 1,
                 CONFIG_MAX_DURATION_MS),
};

static void sec_sets(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                     const char *path, void *obj)
{
    config_t *cfg = obj;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path) || schema_map_len(v) == 0)
        return;
    cfg->sets = schema_alloc_array(c, schema_map_len(v), sizeof *cfg->sets);
    if (!cfg->sets)
        return;
    names_init(c, &state(c)->sets, schema_map_len(v), false);
    for (size_t i = 0; i < schema_map_len(v); i++) {
        char p[SCHEMA_PATH_BYTES];
        const char *name = names_entry(c, v, i, path, p, &state(c)->sets, cfg->n_sets);
        if (!name)
            continue;
        config_set_t *s = &cfg->sets[cfg->n_sets];
        s->index = cfg->n_sets++;
        s->name = schema_strdup(c, name);
        const yaml_node_t *sv = schema_map_value(c, v, i);
        schema_seen_t seen;
        schema_apply(c, sv, sv, p, set_fields, ARRAY_LEN(set_fields), s, &seen);
        if (!schema_is_null(sv) && sv->type != YAML_MAPPING_NODE)
            continue;
        const yaml_node_t *file = SCHEMA_SEEN_VAL(set_fields, seen, "file");
        const yaml_node_t *url = SCHEMA_SEEN_VAL(set_fields, seen, "url");
        if (file) {
            s->file_line = file->start_mark.line + 1;
            s->file_col = file->start_mark.column + 1;
        }
        if (file && s->file)
            s->file = config_rows_relative_path(c, file, s->file);
        if (!file && !url)
            schema_err(c, schema_is_null(sv) ? schema_map_key(c, v, i) : sv,
                       "%s: needs file or url", p);
        else if (file && url)
            schema_err(c, SCHEMA_SEEN_KEY(set_fields, seen, "url"),
                       "%s.url: set file or url, not both", p);
    }
}

/* name -> the set's rows. */
static json_t *j_sets(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_t *cfg = obj;
    return schema_json_named(set_fields, ARRAY_LEN(set_fields), cfg->sets, sizeof *cfg->sets,
                             cfg->n_sets, offsetof(config_set_t, name), root);
}

/* A relative file name made relative to the configuration file's
 * directory, not to the working directory (systemd starts ficus in /). */
char *config_rows_relative_path(schema_ctx_t *c, const yaml_node_t *at, char *name)
{
    if (name[0] == '/' || !strchr(c->file, '/'))
        return name;
    const char *slash = strrchr(c->file, '/');
    char full[4096];
    int w = snprintf(full, sizeof full, "%.*s/%s", (int)(slash - c->file), c->file, name);
    if (w > 0 && (size_t)w < sizeof full)
        return schema_strdup(c, full);
    schema_err(c, at, "%s: path too long", name);
    return name;
}

/* ---------------------------------------------------------------- routes */

static void f_route_name(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_route_t *r = obj;
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    if (!names_valid(s))
        schema_err(c, v, "%s: invalid name %s (%s)", path, schema_qnode(&q, v), NAMES_RULE);
    r->name = schema_strdup(c, s);
    const name_slot_t *first = names_add(&state(c)->route_names, s, strlen(s), r->index, v);
    if (first)
        schema_err(c, v, "%s: duplicate route name %s (also routes[%zu])", path,
                   schema_qnode(&q, v), first->value);
}

static void method_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                        const char *s, void *obj)
{
    config_match_t *m = obj;
    schema_quote_t q;
    uint32_t bit = config_method_bit(s, strlen(s));
    if (bit != METHOD_OTHER) {
        m->methods |= bit;
        return;
    }
    char upper[16];
    size_t len = strlen(s);
    for (size_t j = 0; j < len && j < sizeof upper; j++)
        upper[j] = (s[j] >= 'a' && s[j] <= 'z') ? (char)(s[j] - 32) : s[j];
    if (len <= sizeof upper && config_method_bit(upper, len) != METHOD_OTHER)
        schema_err(c, it, "%s: unknown method %s (methods are case-sensitive: %.*s)", p,
                   schema_qnode(&q, it), (int)len, upper);
    else
        schema_err(c, it,
                   "%s: unknown method %s (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE or "
                   "CONNECT)",
                   p, schema_qnode(&q, it));
}

static void f_methods(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    config_match_t *m = obj;
    m->methods = 0;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    if (schema_list_len(v) == 0)
        schema_err(c, v, "%s: must not be empty (omit it to match every method)", path);
    else
        schema_each_str(c, v, path, method_item, m);
}

static void f_host(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                   const char *path, void *obj)
{
    config_match_t *m = obj;
    schema_quote_t q;
    m->host = NULL;
    m->host_wildcard = false;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s)
        return;
    bool wild = strncmp(s, "*.", 2) == 0;
    const char *h = wild ? s + 1 : s; /* a wildcard keeps its dot: ".example.com" */
    size_t len = strlen(h);
    if (len > 1 && h[len - 1] == '.' && h[0] != '[')
        len--; /* "example.com." is the same name; the router drops that dot too */
    const char *name = wild ? h + 1 : h;
    size_t name_len = wild ? len - 1 : len;
    bool ok;
    if (!wild && len > 2 && h[0] == '[') {
        ok = h[len - 1] == ']';
        for (size_t i = 1; ok && i + 1 < len; i++)
            ok = names_is_alnum(h[i]) || h[i] == ':' || h[i] == '.';
    } else {
        ok = valid_hostname(name, name_len);
    }
    if (ok) {
        m->host = schema_strdup_lower(c, h, len);
        m->host_wildcard = wild;
    } else if (strchr(s, '*')) {
        schema_err(c, v, "%s: invalid host %s (a wildcard is only allowed as *.suffix)", path,
                   schema_qnode(&q, v));
    } else if (strchr(s, ':') && s[0] != '[') {
        schema_err(c, v, "%s: invalid host %s (no port: the port is ignored when matching)", path,
                   schema_qnode(&q, v));
    } else {
        schema_err(c, v, "%s: invalid host %s", path, schema_qnode(&q, v));
    }
}

/* Headers that frame the message or the connection: ficus writes them. */
/* A mapping of header name -> value into *out: the names tokens, each
 * written once whatever its case. Names to match are lower-cased; headers
 * to set are no framing headers and have no line break in their value. */
static void header_map(schema_ctx_t *c, const yaml_node_t *v, const char *path, bool setting,
                       config_header_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!v || !schema_want(c, v, YAML_MAPPING_NODE, path) || schema_map_len(v) == 0)
        return;
    config_header_t *h = schema_alloc_array(c, schema_map_len(v), sizeof *h);
    name_set_t names;
    names_init(c, &names, schema_map_len(v), true);
    for (size_t i = 0; h && i < schema_map_len(v); i++) {
        const char *name = names_key_unique(c, v, i, path, &names, i);
        if (!name)
            continue;
        const yaml_node_t *kn = schema_map_key(c, v, i), *vn = schema_map_value(c, v, i);
        const char *value = NULL;
        char p[SCHEMA_PATH_BYTES];
        schema_quote_t q;
        schema_path_key(p, path, name, schema_slen(kn));
        if (!names_valid_token(name, schema_slen(kn)))
            schema_err(c, kn, "%s: invalid header name %s", p, schema_qnode(&q, kn));
        else if (setting && names_framing_header(name))
            schema_err(c, kn, "%s: %s cannot be set (ficus manages it)", p, schema_qnode(&q, kn));
        else
            value = schema_str(c, vn, p);
        if (value && setting && strpbrk(value, "\r\n")) {
            schema_err(c, vn, "%s: a header value cannot contain a line break", p);
            value = NULL;
        }
        if (!value)
            continue;
        h[*n].name = setting ? schema_strndup(c, name, schema_slen(kn))
                             : schema_strdup_lower(c, name, schema_slen(kn));
        h[*n].value = schema_strdup(c, value);
        (*n)++;
    }
    names_free(&names);
    *out = h;
}

static void f_match_headers(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_match_t *m = obj;
    header_map(c, v, path, false, &m->headers, &m->n_headers);
}

static const char *const match_kinds[] = {"path", "path_prefix", "path_regex"};

/* The one of path, path_prefix, path_regex the match has. */
static json_t *j_match_path(const schema_row_t *f, const void *obj, const void *root UNUSED)
{
    const config_match_t *m = obj;
    return strcmp(f->key, match_kinds[m->kind]) == 0 ? json_string(m->path) : NULL;
}

static json_t *j_methods(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_match_t *m = obj;
    if (!m->methods)
        return NULL;
    json_t *a = json_array();
    for (unsigned i = 0; a && i < HTTP_METHOD_COUNT; i++)
        if (m->methods & (1u << i))
            json_array_append_new(a, json_string(http_method_name((http_method_t)i)));
    return a;
}

static json_t *j_host(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_match_t *m = obj;
    char h[300];
    if (!m->host)
        return NULL;
    snprintf(h, sizeof h, "%s%s", m->host_wildcard ? "*" : "", m->host);
    return json_string(h);
}

static json_t *j_match_headers(const schema_row_t *f UNUSED, const void *obj,
                               const void *root UNUSED)
{
    const config_match_t *m = obj;
    if (!m->n_headers)
        return NULL;
    json_t *o = json_object();
    for (size_t i = 0; o && i < m->n_headers; i++)
        json_object_set_new(o, m->headers[i].name, json_string(m->headers[i].value));
    return o;
}

static json_t *j_in_set(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_match_t *m = obj;
    const config_t *cfg = root;
    if (m->in_set == CONFIG_NONE)
        return NULL;
    return json_pack("{s:s,s:s}", "capture", m->in_set_capture_name ? m->in_set_capture_name : "",
                     "set", cfg->sets[m->in_set].name);
}

static const schema_row_t match_fields[] = {
    ROW_RAW("path", ROW_JSON(j_match_path)),
    ROW_RAW("path_prefix", ROW_JSON(j_match_path)),
    ROW_RAW("path_regex", ROW_JSON(j_match_path)),
    ROW_CUSTOM("methods", f_methods, ROW_JSON(j_methods)),
    ROW_CUSTOM("host", f_host, ROW_JSON(j_host)),
    ROW_CUSTOM("headers", f_match_headers, ROW_JSON(j_match_headers)),
    ROW_RAW("in_set", ROW_JSON(j_in_set)),
};

static void compile_regex(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                          config_match_t *m)
{
    int code;
    PCRE2_SIZE offset;
    schema_quote_t q;
    /* Plain bytes (no UTF mode): paths are bytes, and a percent-decoded or
     * invalid UTF-8 path must still be matchable. */
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)m->path, m->path_len, PCRE2_ANCHORED, &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "error %d", code);
        schema_err(c, v, "%s: invalid regex %s: %s (at offset %zu)", path, schema_qnode(&q, v),
                   (const char *)msg, (size_t)offset);
        return;
    }
    m->regex = re;
    /* No JIT (unsupported CPU, no executable memory): the interpreter gives
     * the same answers, only slower. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    uint32_t n = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n);
    m->n_captures = n;
    state(c)->captures_known = true;
}

typedef struct in_set_raw {
    char *capture;
    char *set;
} in_set_raw_t;

static const schema_row_t in_set_fields[] = {
    ROW_STRING_REQ("capture", in_set_raw_t, capture),
    ROW_STRING_REQ("set", in_set_raw_t, set),
};

static void match_in_set(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                         const char *path, config_match_t *m)
{
    in_set_raw_t raw = {NULL, NULL};
    schema_seen_t seen;
    schema_quote_t q;
    schema_apply(c, v, v, path, in_set_fields, ARRAY_LEN(in_set_fields), &raw, &seen);
    if (state(c)->match_known && m->kind != MATCH_REGEX) {
        schema_err(c, k, "%s: needs path_regex (in_set looks up a named group of it)", path);
        return;
    }
    if (raw.set) {
        size_t idx = names_find(&state(c)->sets, raw.set);
        if (idx == CONFIG_NONE)
            schema_err(c, SCHEMA_SEEN_VAL(in_set_fields, seen, "set"), "%s.set: unknown set %s",
                       path, schema_qstr(&q, raw.set));
        m->in_set = idx;
    }
    if (raw.capture && m->regex) {
        const yaml_node_t *cn = SCHEMA_SEEN_VAL(in_set_fields, seen, "capture");
        int g = pcre2_substring_number_from_name(m->regex, (PCRE2_SPTR)raw.capture);
        if (g == PCRE2_ERROR_NOUNIQUESUBSTRING)
            schema_err(c, cn, "%s.capture: group name %s is not unique in path_regex", path,
                       schema_qstr(&q, raw.capture));
        else if (g < 0)
            schema_err(c, cn,
                       "%s.capture: path_regex has no group named %s (write it as (?<name>...))",
                       path, schema_qstr(&q, raw.capture));
        else if (g >= ROUTER_MATCH_DATA_PAIRS)
            schema_err(c, cn, "%s.capture: group %d is beyond the %d groups a route can use", path,
                       g, ROUTER_MATCH_DATA_PAIRS - 1);
        else
            m->in_set_capture = (uint32_t)g;
        m->in_set_capture_name = schema_strdup(c, raw.capture);
    }
}

static void f_match(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                    const char *path, void *obj)
{
    static const config_match_kind_t kind_of[] = {MATCH_PATH, MATCH_PREFIX, MATCH_REGEX};
    config_route_t *r = obj;
    config_match_t *m = &r->match;
    schema_seen_t seen;
    if (!schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    schema_apply(c, v, v, path, match_fields, ARRAY_LEN(match_fields), m, &seen);
    /* The first one written is taken; the later ones are the errors. */
    size_t present = 0, which = 0;
    for (size_t i = 0; i < 3; i++) {
        const yaml_node_t *ki = SCHEMA_SEEN_KEY(match_fields, seen, match_kinds[i]);
        if (!SCHEMA_SEEN_VAL(match_fields, seen, match_kinds[i]))
            continue;
        if (present++ == 0 ||
            ki->start_mark.index <
                SCHEMA_SEEN_KEY(match_fields, seen, match_kinds[which])->start_mark.index)
            which = i;
    }
    for (size_t i = 0; present > 1 && i < 3; i++) {
        if (i != which && SCHEMA_SEEN_VAL(match_fields, seen, match_kinds[i]))
            schema_err(c, SCHEMA_SEEN_KEY(match_fields, seen, match_kinds[i]),
                       "%s.%s: only one of path, path_prefix or path_regex may be set", path,
                       match_kinds[i]);
    }
    if (present == 0)
        schema_err(c, v, "%s: needs one of path, path_prefix or path_regex", path);
    if (present == 1) {
        const yaml_node_t *pv = SCHEMA_SEEN_VAL(match_fields, seen, match_kinds[which]);
        char p[SCHEMA_PATH_BYTES];
        schema_path_key(p, path, match_kinds[which], strlen(match_kinds[which]));
        m->kind = kind_of[which];
        state(c)->match_known = true;
        const char *s = schema_str(c, pv, p);
        if (s && m->kind != MATCH_REGEX && check_path(c, pv, p, s, false)) {
            m->path = schema_strdup(c, s);
            m->path_len = strlen(s);
        } else if (s && m->kind == MATCH_REGEX) {
            m->path = schema_strdup(c, s);
            m->path_len = strlen(s);
            if (!*s)
                schema_err(c, pv, "%s: must not be empty", p);
            else if (m->path)
                compile_regex(c, pv, p, m);
        }
    }
    const yaml_node_t *in_set = SCHEMA_SEEN_VAL(match_fields, seen, "in_set");
    if (in_set) {
        char p[SCHEMA_PATH_BYTES];
        schema_path_key(p, path, "in_set", 6);
        match_in_set(c, SCHEMA_SEEN_KEY(match_fields, seen, "in_set"), in_set, p, m);
    }
}

static json_t *j_match(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_route_t *r = obj;
    return schema_json(match_fields, ARRAY_LEN(match_fields), &r->match, root);
}

static void f_rewrite_prefix(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_route_t *r = obj;
    r->rewrite_prefix = NULL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s || !check_path(c, v, path, s, false))
        return;
    if (state(c)->match_known && r->match.kind != MATCH_PREFIX) {
        schema_err(c, k, "%s: only works with match.path_prefix", path);
        return;
    }
    r->rewrite_prefix = schema_strdup(c, s);
}

static void f_backend_group(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_backend_t *b = obj;
    schema_quote_t q;
    const char *s = schema_str(c, v, path);
    if (!s)
        return;
    b->target_group = names_find(&state(c)->groups, s);
    if (b->target_group == CONFIG_NONE)
        schema_err(c, v, "%s: unknown target group %s", path, schema_qnode(&q, v));
}

/* A path template: $0..$9 are captures ("$$" is a '$'), as the router
 * expands them; a capture the match cannot produce is an error here rather
 * than an empty string at run time. */
char *config_rows_path_template(schema_ctx_t *c, const yaml_node_t *v, const char *path)
{
    const config_match_t *m = &state(c)->route->match;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s || !check_path(c, v, path, s, true))
        return NULL;
    for (const char *p = s; *p; p++) {
        if (p[0] != '$' || p[1] == '\0')
            continue;
        if (p[1] == '$') {
            p++;
            continue;
        }
        if (p[1] < '0' || p[1] > '9')
            continue;
        unsigned g = (unsigned)(p[1] - '0');
        p++;
        if (!state(c)->match_known)
            continue;
        if (m->kind == MATCH_REGEX && state(c)->captures_known && g > m->n_captures) {
            schema_err(c, v, "%s: $%u, but match.path_regex has %u capture group%s", path, g,
                       m->n_captures, m->n_captures == 1 ? "" : "s");
            return NULL;
        }
        if (m->kind != MATCH_REGEX && g != 0) {
            schema_err(
                c, v,
                "%s: $%u needs match.path_regex (without it only $0, the matched path, exists)",
                path, g);
            return NULL;
        }
    }
    return schema_strdup(c, s);
}

static void f_backend_path(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    config_backend_t *b = obj;
    b->path = config_rows_path_template(c, v, path);
}

static json_t *j_backend_group(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_backend_t *b = obj;
    const config_t *cfg = root;
    return json_string(cfg->target_groups[b->target_group].name);
}

static json_t *j_backend_fallback(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_backend_t *b = obj;
    const config_t *cfg = root;
    return b->fallback == CONFIG_NONE ? NULL : json_string(cfg->target_groups[b->fallback].name);
}

static const schema_row_t backend_fields[] = {
    ROW_CUSTOM_REQ("target_group", f_backend_group, ROW_JSON(j_backend_group)),
    ROW_UINT("weight", config_backend_t, weight, DEFAULT_BACKEND_WEIGHT, 0, MAX_BACKEND_WEIGHT),
    ROW_RAW("fallback", ROW_JSON(j_backend_fallback)),
    ROW_CUSTOM("path", f_backend_path, ROW_AS(SCHEMA_STRING, config_backend_t, path),
               ROW_OMIT_NULL),
};

static void backend_fallback(schema_ctx_t *c, const config_route_t *r, size_t i,
                             const yaml_node_t *fv, const char *path)
{
    config_backend_t *b = &r->backends[i];
    char item[SCHEMA_PATH_BYTES], p[SCHEMA_PATH_BYTES];
    schema_quote_t q;
    schema_path_index(item, path, i);
    schema_path_key(p, item, "fallback", 8);
    const char *s = schema_str(c, fv, p);
    if (!s)
        return;
    size_t g = names_find(&state(c)->groups, s);
    if (g == CONFIG_NONE) {
        schema_err(c, fv, "%s: unknown target group %s", p, schema_qnode(&q, fv));
        return;
    }
    if (g == b->target_group) {
        schema_err(c, fv, "%s: a backend cannot fall back to its own target group %s", p,
                   schema_qnode(&q, fv));
        return;
    }
    for (size_t j = 0; j < r->n_backends; j++) {
        if (r->backends[j].target_group == g) {
            b->fallback = g;
            return;
        }
    }
    schema_err(c, fv,
               "%s: fallback group %s is not one of the route's backends (add it with weight: 0)",
               p, schema_qnode(&q, fv));
}

static void f_backends(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_route_t *r = obj;
    const yaml_node_t *group_node[MAX_ROUTE_BACKENDS], *fallback_node[MAX_ROUTE_BACKENDS];
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = schema_list_len(v);
    if (n == 0) {
        schema_err(c, v, "%s: needs at least one backend", path);
        return;
    }
    if (n > MAX_ROUTE_BACKENDS) {
        schema_err(c, v, "%s: at most %d backends", path, MAX_ROUTE_BACKENDS);
        return;
    }
    r->backends = schema_alloc_array(c, n, sizeof *r->backends);
    if (!r->backends)
        return;
    r->n_backends = n;
    bool all_read = true, any_weight = false;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = schema_list_item(c, v, i);
        config_backend_t *b = &r->backends[i];
        char p[SCHEMA_PATH_BYTES];
        schema_seen_t seen;
        b->target_group = CONFIG_NONE;
        b->fallback = CONFIG_NONE;
        group_node[i] = fallback_node[i] = NULL;
        schema_path_index(p, path, i);
        if (!schema_want(c, it, YAML_MAPPING_NODE, p)) {
            all_read = false;
            continue;
        }
        schema_apply(c, it, it, p, backend_fields, ARRAY_LEN(backend_fields), b, &seen);
        group_node[i] = SCHEMA_SEEN_VAL(backend_fields, seen, "target_group");
        fallback_node[i] = SCHEMA_SEEN_VAL(backend_fields, seen, "fallback");
        any_weight = any_weight || b->weight > 0;
    }
    if (all_read && !any_weight)
        schema_err(c, v, "%s: every weight is 0; at least one backend must take traffic", path);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i && r->backends[i].target_group != CONFIG_NONE; j++) {
            if (r->backends[j].target_group == r->backends[i].target_group) {
                char item[SCHEMA_PATH_BYTES], p[SCHEMA_PATH_BYTES];
                schema_quote_t q;
                schema_path_index(item, path, i);
                schema_path_key(p, item, "target_group", 12);
                schema_err(c, group_node[i], "%s: %s is already %s[%zu]", p,
                           schema_qnode(&q, group_node[i]), path, j);
                break;
            }
        }
        if (fallback_node[i])
            backend_fallback(c, r, i, fallback_node[i], path);
    }
}

static json_t *j_backends(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_route_t *r = obj;
    return schema_json_array(backend_fields, ARRAY_LEN(backend_fields), r->backends,
                             sizeof *r->backends, r->n_backends, root);
}

static json_t *j_sticky(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    static const char *const names[] = {"none", "client_ip", "header", "cookie"};
    const config_route_t *r = obj;
    char st[300];
    snprintf(st, sizeof st, "%s%s%s", names[r->sticky], r->sticky_name ? ":" : "",
             r->sticky_name ? r->sticky_name : "");
    return json_string(st);
}

static void f_sticky(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                     const char *path, void *obj)
{
    config_route_t *r = obj;
    schema_quote_t q;
    r->sticky = STICKY_NONE;
    r->sticky_name = NULL;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s || strcmp(s, "none") == 0)
        return;
    if (strcmp(s, "client_ip") == 0) {
        r->sticky = STICKY_CLIENT_IP;
    } else if (strncmp(s, "header:", 7) == 0 && names_valid_token(s + 7, strlen(s + 7))) {
        r->sticky = STICKY_HEADER;
        r->sticky_name = schema_strdup_lower(c, s + 7, strlen(s + 7));
    } else if (strncmp(s, "cookie:", 7) == 0 && names_valid_token(s + 7, strlen(s + 7))) {
        r->sticky = STICKY_COOKIE;
        r->sticky_name = schema_strdup(c, s + 7);
    } else {
        schema_err(c, v, "%s: invalid sticky %s (none, client_ip, header:NAME or cookie:NAME)",
                   path, schema_qnode(&q, v));
    }
}

static const struct {
    const char *name;
    uint32_t bit;
} retry_conditions[] = {
    {"5xx", RETRY_ON_5XX},
    {"gateway-error", RETRY_ON_GATEWAY_ERROR},
    {"connect-failure", RETRY_ON_CONNECT_FAILURE},
    {"reset", RETRY_ON_RESET},
    {"timeout", RETRY_ON_TIMEOUT},
    {"cancelled", RETRY_ON_GRPC_CANCELLED},
    {"deadline-exceeded", RETRY_ON_GRPC_DEADLINE_EXCEEDED},
    {"resource-exhausted", RETRY_ON_GRPC_RESOURCE_EXHAUSTED},
    {"unavailable", RETRY_ON_GRPC_UNAVAILABLE},
};

static void retry_on_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                          const char *s, void *obj)
{
    config_retries_t *rt = obj;
    schema_quote_t q;
    size_t j = 0;
    while (j < ARRAY_LEN(retry_conditions) && strcmp(retry_conditions[j].name, s) != 0)
        j++;
    if (j < ARRAY_LEN(retry_conditions)) {
        rt->retry_on |= retry_conditions[j].bit;
        return;
    }
    uint64_t status;
    const char *why;
    int rc = units_parse_uint(s, 100, 599, &status, &why);
    if (rc == FE_TOOBIG) {
        schema_err(c, it, "%s: status %s is out of range (100 to 599)", p, schema_qnode(&q, it));
        return;
    }
    if (rc != 0) {
        schema_err(c, it,
                   "%s: unknown retry condition %s (5xx, gateway-error, connect-failure, reset, "
                   "timeout, a status code such as 429, or a gRPC status: cancelled, "
                   "deadline-exceeded, resource-exhausted, unavailable)",
                   p, schema_qnode(&q, it));
        return;
    }
    bool known = false;
    for (size_t x = 0; x < rt->n_retry_statuses; x++)
        known = known || rt->retry_statuses[x] == status;
    if (!known)
        rt->retry_statuses[rt->n_retry_statuses++] = (uint16_t)status;
}

static void f_retry_on(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_retries_t *rt = obj;
    if (!schema_want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    if (schema_list_len(v) == 0) {
        schema_err(c, v, "%s: needs at least one condition", path);
        return;
    }
    rt->retry_statuses = schema_alloc_array(c, schema_list_len(v), sizeof *rt->retry_statuses);
    if (rt->retry_statuses)
        schema_each_str(c, v, path, retry_on_item, rt);
}

/* The conditions in RETRY_ON_* bit order, then the status codes. */
static json_t *j_retry_on(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_retries_t *rt = obj;
    json_t *a = json_array();
    for (unsigned i = 0; a && i < 5; i++)
        if (rt->retry_on & (1u << i))
            json_array_append_new(a, json_string(retry_conditions[i].name));
    for (size_t i = 0; a && i < rt->n_retry_statuses; i++)
        json_array_append_new(a, json_integer(rt->retry_statuses[i]));
    return a;
}

static const schema_row_t retry_fields[] = {
    ROW_UINT_REQ("attempts", config_retries_t, attempts, 0, MAX_RETRY_ATTEMPTS),
    ROW_DURATION("per_try_timeout", config_retries_t, per_try_timeout_ms, 0, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM_REQ("retry_on", f_retry_on, ROW_JSON(j_retry_on)),
    ROW_DURATION("backoff", config_retries_t, backoff_ms, DEFAULT_RETRY_BACKOFF_MS, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_UINT("budget_percent", config_retries_t, budget_percent, DEFAULT_RETRY_BUDGET_PERCENT, 0,
             100),
    ROW_CUSTOM("hedge", config_migration_f_hedge, ROW_JSON(config_migration_j_hedge)),
};

static void f_ip_allow(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_route_t *r = obj;
    cidr_list(c, v, path, &r->ip_allow, &r->n_ip_allow);
}

static void f_ip_deny(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                      const char *path, void *obj)
{
    config_route_t *r = obj;
    cidr_list(c, v, path, &r->ip_deny, &r->n_ip_deny);
}

static json_t *j_ip_allow(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_route_t *r = obj;
    return cidrs_json(r->ip_allow, r->n_ip_allow);
}

static json_t *j_ip_deny(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_route_t *r = obj;
    return cidrs_json(r->ip_deny, r->n_ip_deny);
}

static void f_headers_set(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_route_t *r = obj;
    header_map(c, v, path, true, &r->set_headers, &r->n_set_headers);
}

/* A list of tokens (header names, Upgrade protocols) into *out,
 * lower-cased; a bad one is an "invalid <what>" error, with the hint. */
/* A list of tokens being read: where they go, and what a bad one is. */
typedef struct tokens_read {
    char **out;
    size_t *n;
    const char *what, *hint;
} tokens_read_t;

static void token_item(schema_ctx_t *c, const yaml_node_t *it, const char *p, size_t i UNUSED,
                       const char *s, void *obj)
{
    tokens_read_t *tr = obj;
    schema_quote_t q;
    if (!names_valid_token(s, strlen(s)))
        schema_err(c, it, "%s: invalid %s %s%s", p, tr->what, schema_qnode(&q, it), tr->hint);
    else
        tr->out[(*tr->n)++] = schema_strdup_lower(c, s, strlen(s));
}

static void token_list(schema_ctx_t *c, const yaml_node_t *v, const char *path, const char *what,
                       const char *hint, char ***out, size_t *n)
{
    *out = schema_alloc_array(c, schema_list_len(v), sizeof **out);
    tokens_read_t tr = {*out, n, what, hint};
    if (*out)
        schema_each_str(c, v, path, token_item, &tr);
}

static void f_headers_remove(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_route_t *r = obj;
    r->remove_headers = NULL;
    r->n_remove_headers = 0;
    if (v && schema_want(c, v, YAML_SEQUENCE_NODE, path) && schema_list_len(v) > 0)
        token_list(c, v, path, "header name", "", &r->remove_headers, &r->n_remove_headers);
}

/* route.upgrades: Upgrade tokens tunnelled after a 101 (default [websocket]). */
static void f_upgrades(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_route_t *r = obj;
    r->n_upgrades = 0;
    r->upgrades = NULL;
    if (!v) {
        r->upgrades = schema_alloc_array(c, 1, sizeof *r->upgrades);
        if (r->upgrades)
            r->upgrades[r->n_upgrades++] = schema_strdup(c, "websocket");
        return;
    }
    if (schema_want(c, v, YAML_SEQUENCE_NODE, path) && schema_list_len(v) > 0)
        token_list(c, v, path, "protocol", " (a token, such as websocket)", &r->upgrades,
                   &r->n_upgrades);
}

static json_t *j_headers_set(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_route_t *r = obj;
    json_t *o = json_object();
    for (size_t i = 0; o && i < r->n_set_headers; i++)
        json_object_set_new(o, r->set_headers[i].name, json_string(r->set_headers[i].value));
    return o;
}

static json_t *j_headers_remove(const schema_row_t *f UNUSED, const void *obj,
                                const void *root UNUSED)
{
    const config_route_t *r = obj;
    return schema_json_strings(r->remove_headers, sizeof(char *), r->n_remove_headers, 0);
}

static json_t *j_upgrades(const schema_row_t *f UNUSED, const void *obj, const void *root UNUSED)
{
    const config_route_t *r = obj;
    return schema_json_strings(r->upgrades, sizeof(char *), r->n_upgrades, 0);
}

static const schema_row_t request_headers_fields[] = {
    ROW_CUSTOM("set", f_headers_set, ROW_JSON(j_headers_set)),
    ROW_CUSTOM("remove", f_headers_remove, ROW_JSON(j_headers_remove)),
};

static const schema_row_t route_fields[] = {
    ROW_CUSTOM_REQ("name", f_route_name, ROW_AS(SCHEMA_STRING, config_route_t, name)),
    ROW_CUSTOM_REQ("match", f_match, ROW_JSON(j_match)),
    ROW_CUSTOM("rewrite_prefix", f_rewrite_prefix,
               ROW_AS(SCHEMA_STRING, config_route_t, rewrite_prefix), ROW_OMIT_NULL),
    ROW_CUSTOM("backends", f_backends, ROW_JSON(j_backends)),
    ROW_CUSTOM("sticky", f_sticky, ROW_JSON(j_sticky)),
    ROW_DURATION("timeout", config_route_t, timeout_ms, DEFAULT_ROUTE_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_TABLE("retries", config_route_t, retries, retry_fields,
              ROW_HAS(config_route_t, has_retries)),
    ROW_BOOL("retry_non_idempotent", config_route_t, retry_non_idempotent, false),
    ROW_CUSTOM("deadline", config_migration_f_route_deadline,
               ROW_JSON(config_migration_j_route_deadline)),
    ROW_CUSTOM("ip_allow", f_ip_allow, ROW_JSON(j_ip_allow)),
    ROW_CUSTOM("ip_deny", f_ip_deny, ROW_JSON(j_ip_deny)),
    ROW_TABLE_SELF("request_headers", request_headers_fields),
    ROW_CUSTOM("upgrades", f_upgrades, ROW_JSON(j_upgrades)),
    ROW_CUSTOM("auth", config_auth_f_route_auth, ROW_JSON(config_auth_j_route_auth)),
    ROW_CUSTOM("clients", config_auth_f_route_clients, ROW_JSON(config_auth_j_route_clients)),
    ROW_CUSTOM("rate_limit", config_auth_f_route_rate_limit,
               ROW_JSON(config_auth_j_route_rate_limit)),
    ROW_CUSTOM("shadow", config_migration_f_route_shadow,
               ROW_JSON(config_migration_j_route_shadow)),
    ROW_CUSTOM("rollout", config_migration_f_route_rollout,
               ROW_JSON(config_migration_j_route_rollout)),
    ROW_CUSTOM("aggregate", config_aggregate_f_route, ROW_JSON(config_aggregate_j_route)),
    ROW_CUSTOM("lint", config_lint_f_route, ROW_JSON(config_lint_j_route)),
};

static void parse_route(schema_ctx_t *c, const yaml_node_t *v, const char *path, config_route_t *r)
{
    schema_seen_t seen;
    state(c)->route = r;
    state(c)->match_known = false;
    state(c)->captures_known = false;
    if (!schema_want(c, v, YAML_MAPPING_NODE, path))
        return;
    schema_apply(c, v, v, path, route_fields, ARRAY_LEN(route_fields), r, &seen);
    char p[SCHEMA_PATH_BYTES];
    const yaml_node_t *agg = SCHEMA_SEEN_KEY(route_fields, seen, "aggregate");
    if (agg) {
        /* Calls instead of backends: what needs backends does not apply. */
        schema_path_key(p, path, "aggregate", 9);
        if (SCHEMA_SEEN_KEY(route_fields, seen, "backends"))
            schema_err(c, agg, "%s: a route has backends or aggregate calls, not both", p);
        else if (r->has_shadow || r->has_rollout)
            schema_err(c, agg, "%s: shadow and rollout need backends; an aggregate route has none",
                       p);
        for (size_t i = 0; i < r->aggregate.n_calls && r->auth_provider == CONFIG_NONE; i++)
            if (r->aggregate.calls[i].uses_user) {
                schema_err(c, agg,
                           "%s: calls[%zu].path uses {user}: the route needs auth.user (the "
                           "user's id comes from the token)",
                           p, i);
                break;
            }
        return;
    }
    if (SCHEMA_SEEN_VAL(route_fields, seen, "backends"))
        return;
    schema_path_key(p, path, "backends", 8);
    if (SCHEMA_SEEN_KEY(route_fields, seen, "backends"))
        schema_err(c, SCHEMA_SEEN_KEY(route_fields, seen, "backends"),
                   "%s: needs at least one backend", p);
    else
        schema_err(c, v, "%s: required key is missing", p);
}

static void sec_routes(schema_ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_t *cfg = obj;
    if (!v || !schema_want(c, v, YAML_SEQUENCE_NODE, path) || schema_list_len(v) == 0)
        return;
    cfg->routes = schema_alloc_array(c, schema_list_len(v), sizeof *cfg->routes);
    if (!cfg->routes)
        return;
    cfg->n_routes = schema_list_len(v);
    names_init(c, &state(c)->route_names, cfg->n_routes, false);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        config_route_t *r = &cfg->routes[i];
        char p[SCHEMA_PATH_BYTES];
        r->index = i;
        r->match.in_set = CONFIG_NONE;
        r->auth_provider = CONFIG_NONE;
        schema_path_index(p, path, i);
        parse_route(c, schema_list_item(c, v, i), p, r);
    }
    state(c)->route = NULL;
}

static json_t *j_routes(const schema_row_t *f UNUSED, const void *obj, const void *root)
{
    const config_t *cfg = obj;
    return schema_json_array(route_fields, ARRAY_LEN(route_fields), cfg->routes,
                             sizeof *cfg->routes, cfg->n_routes, root);
}

/* ------------------------------------------------------------ the file */

/* Sections in dependency order: routes refer to target groups, sets,
 * clients and JWT providers; the session exchange to a provider; global
 * scopes need redis. */
const schema_row_t config_rows[] = {
    ROW_TABLE("server", config_t, server, server_fields),
    ROW_TABLE_SELF("admin", admin_fields),
    ROW_TABLE_SELF("access_log", access_log_fields),
    ROW_TABLE_SELF("log", log_fields),
    ROW_TABLE("tracing", config_t, tracing, tracing_fields),
    ROW_TABLE_SELF("redis", redis_fields, ROW_JSON(j_redis)),
    ROW_CUSTOM("target_groups", sec_target_groups, ROW_JSON(j_target_groups)),
    ROW_CUSTOM("sets", sec_sets, ROW_JSON(j_sets)),
    ROW_CUSTOM("clients", config_auth_sec_clients, ROW_JSON(config_auth_j_clients)),
    ROW_CUSTOM("jwt_providers", config_auth_sec_jwt_providers,
               ROW_JSON(config_auth_j_jwt_providers)),
    ROW_CUSTOM("session_exchange", config_auth_sec_session_exchange,
               ROW_JSON(config_auth_j_session_exchange)),
    ROW_CUSTOM("routes", sec_routes, ROW_JSON(j_routes)),
    ROW_CUSTOM("lint", config_lint_f_top, ROW_JSON(config_lint_j_top)),
    ROW_CUSTOM("reload", config_migration_f_reload, ROW_JSON(config_migration_j_reload)),
    ROW_CUSTOM("aggregate_cache", config_aggregate_f_cache, ROW_JSON(config_aggregate_j_cache)),
};

const size_t config_rows_n = ARRAY_LEN(config_rows);

_Static_assert(ARRAY_LEN(config_rows) <= SCHEMA_MAX_ROWS, "schema_seen_t too small");
_Static_assert(ARRAY_LEN(server_fields) <= SCHEMA_MAX_ROWS, "schema_seen_t too small");
_Static_assert(ARRAY_LEN(group_fields) <= SCHEMA_MAX_ROWS, "schema_seen_t too small");
_Static_assert(ARRAY_LEN(route_fields) <= SCHEMA_MAX_ROWS, "schema_seen_t too small");

void config_rows_load(schema_ctx_t *c, const yaml_node_t *root, config_t *cfg)
{
    schema_seen_t seen;
    config_rows_state_t st;
    if (root->type != YAML_MAPPING_NODE) {
        schema_err(c, root,
                   "the top level must be a mapping of sections (server:, routes:, ...), got %s",
                   schema_kind_name(root));
        return;
    }
    memset(&st, 0, sizeof st);
    st.cfg = cfg;
    c->user = &st;
    schema_apply(c, root, root, "", config_rows, config_rows_n, cfg, &seen);
    /* Their names point into the document, which dies next. */
    names_free(&st.groups);
    names_free(&st.sets);
    names_free(&st.route_names);
    names_free(&st.clients);
    names_free(&st.providers);
    c->user = NULL;
}
