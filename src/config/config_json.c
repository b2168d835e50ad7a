/* config_t -> JSON; see config_json.h. */
#include "config/config_json.h"

#include <arpa/inet.h>

#include "config/units.h"

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

/* A duration as the YAML writes it ("250ms", "5s", "2m"; 0 is "0s"). */
static json_t *dur(uint64_t ms)
{
    char out[32];
    units_format_duration(ms, out, sizeof out);
    return json_string(out);
}

/* A size as the YAML writes it: KiB/MiB/GiB when exact, else a number. */
static json_t *size(uint64_t bytes)
{
    char out[32];
    size_t n = units_format_size(bytes, out, sizeof out);
    if (n && out[n - 1] != 'B')
        return json_integer((json_int_t)bytes);
    return json_string(out);
}

static json_t *cidrs(const cidr_t *c, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char ip[INET6_ADDRSTRLEN], out[64];
        inet_ntop(c[i].family, c[i].bytes, ip, sizeof ip);
        snprintf(out, sizeof out, "%s/%u", ip, c[i].prefix);
        json_array_append_new(a, json_string(out));
    }
    return a;
}

static const char *method_names[] = {"GET",   "HEAD",    "POST",  "PUT",     "DELETE",
                                     "PATCH", "OPTIONS", "TRACE", "CONNECT", "OTHER"};

static json_t *match_json(const config_match_t *m, const config_t *cfg)
{
    static const char *kinds[] = {"path", "path_prefix", "path_regex"};
    json_t *j = json_object();
    json_object_set_new(j, kinds[m->kind], json_string(m->path));
    if (m->methods) {
        json_t *ms = json_array();
        for (unsigned i = 0; i < 10; i++)
            if (m->methods & (1u << i))
                json_array_append_new(ms, json_string(method_names[i]));
        json_object_set_new(j, "methods", ms);
    }
    if (m->host) {
        char h[300];
        snprintf(h, sizeof h, "%s%s", m->host_wildcard ? "*" : "", m->host);
        json_object_set_new(j, "host", json_string(h));
    }
    if (m->n_headers) {
        json_t *hs = json_object();
        for (size_t i = 0; i < m->n_headers; i++)
            json_object_set_new(hs, m->headers[i].name, json_string(m->headers[i].value));
        json_object_set_new(j, "headers", hs);
    }
    if (m->in_set != CONFIG_NONE)
        json_object_set_new(j, "in_set",
                            json_pack("{s:s,s:s}", "capture",
                                      m->in_set_capture_name ? m->in_set_capture_name : "", "set",
                                      cfg->sets[m->in_set].name));
    return j;
}

static json_t *route_json(const config_route_t *r, const config_t *cfg)
{
    static const char *sticky[] = {"none", "client_ip", "header", "cookie"};
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(r->name));
    json_object_set_new(j, "match", match_json(&r->match, cfg));
    if (r->rewrite_prefix)
        json_object_set_new(j, "rewrite_prefix", json_string(r->rewrite_prefix));
    json_t *bs = json_array();
    for (size_t i = 0; i < r->n_backends; i++) {
        const config_backend_t *b = &r->backends[i];
        json_t *bj =
            json_pack("{s:s,s:I}", "target_group", cfg->target_groups[b->target_group].name,
                      "weight", (json_int_t)b->weight);
        if (b->fallback != CONFIG_NONE)
            json_object_set_new(bj, "fallback", json_string(cfg->target_groups[b->fallback].name));
        if (b->path)
            json_object_set_new(bj, "path", json_string(b->path));
        json_array_append_new(bs, bj);
    }
    json_object_set_new(j, "backends", bs);
    char st[300];
    snprintf(st, sizeof st, "%s%s%s", sticky[r->sticky], r->sticky_name ? ":" : "",
             r->sticky_name ? r->sticky_name : "");
    json_object_set_new(j, "sticky", json_string(st));
    json_object_set_new(j, "timeout", dur(r->timeout_ms));
    if (r->has_retries) {
        const config_retries_t *rt = &r->retries;
        json_t *on = json_array();
        static const char *names[] = {"5xx", "gateway-error", "connect-failure", "reset",
                                      "timeout"};
        for (unsigned i = 0; i < 5; i++)
            if (rt->retry_on & (1u << i))
                json_array_append_new(on, json_string(names[i]));
        for (size_t i = 0; i < rt->n_retry_statuses; i++)
            json_array_append_new(on, json_integer(rt->retry_statuses[i]));
        json_object_set_new(j, "retries",
                            json_pack("{s:i,s:o,s:o,s:o,s:i}", "attempts", (int)rt->attempts,
                                      "per_try_timeout", dur(rt->per_try_timeout_ms), "retry_on",
                                      on, "backoff", dur(rt->backoff_ms), "budget_percent",
                                      (int)rt->budget_percent));
    }
    json_object_set_new(j, "retry_non_idempotent", json_boolean(r->retry_non_idempotent));
    json_object_set_new(j, "ip_allow", cidrs(r->ip_allow, r->n_ip_allow));
    json_object_set_new(j, "ip_deny", cidrs(r->ip_deny, r->n_ip_deny));
    json_t *set = json_object(), *rm = json_array();
    for (size_t i = 0; i < r->n_set_headers; i++)
        json_object_set_new(set, r->set_headers[i].name, json_string(r->set_headers[i].value));
    for (size_t i = 0; i < r->n_remove_headers; i++)
        json_array_append_new(rm, json_string(r->remove_headers[i]));
    json_object_set_new(j, "request_headers", json_pack("{s:o,s:o}", "set", set, "remove", rm));
    json_t *up = json_array();
    for (size_t i = 0; i < r->n_upgrades; i++)
        json_array_append_new(up, json_string(r->upgrades[i]));
    json_object_set_new(j, "upgrades", up);
    return j;
}

static json_t *group_json(const config_target_group_t *g)
{
    static const char *balance[] = {"round_robin", "least_request", "random"};
    json_t *ts = json_array();
    for (size_t i = 0; i < g->n_targets; i++)
        json_array_append_new(ts, json_string(g->targets[i].name));
    json_t *j = json_pack("{s:o,s:o,s:s,s:o,s:I,s:I,s:I,s:{s:I,s:o},s:b}", "targets", ts,
                          "dns_refresh", dur(g->dns_refresh_ms), "balance", balance[g->balance],
                          "connect_timeout", dur(g->connect_timeout_ms), "max_connections",
                          (json_int_t)g->max_connections, "max_pending", (json_int_t)g->max_pending,
                          "max_requests", (json_int_t)g->max_requests, "keepalive", "max_idle",
                          (json_int_t)g->keepalive_max_idle, "idle_timeout",
                          dur(g->keepalive_idle_timeout_ms), "required", g->required);
    json_object_set_new(j, "panic_threshold", json_integer((json_int_t)g->panic_threshold));
    if (g->has_health_check)
        json_object_set_new(j, "health_check",
                            json_pack("{s:s,s:o,s:o,s:i,s:i}", "path", g->health_check.path,
                                      "interval", dur(g->health_check.interval_ms), "timeout",
                                      dur(g->health_check.timeout_ms), "healthy_threshold",
                                      (int)g->health_check.healthy_threshold, "unhealthy_threshold",
                                      (int)g->health_check.unhealthy_threshold));
    if (g->has_outlier)
        json_object_set_new(j, "outlier_detection",
                            json_pack("{s:i,s:o,s:i}", "consecutive_errors",
                                      (int)g->outlier.consecutive_errors, "base_ejection_time",
                                      dur(g->outlier.base_ejection_ms), "max_ejection_percent",
                                      (int)g->outlier.max_ejection_percent));
    return j;
}

json_t *config_json(const config_t *cfg)
{
    const config_server_t *s = &cfg->server;
    json_t *listen = json_array();
    for (size_t i = 0; i < s->n_listeners; i++)
        json_array_append_new(listen, json_string(s->listeners[i].address));
    json_t *server = json_pack(
        "{s:o,s:i,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "listen", listen, "workers",
        (int)s->workers, "max_connections", (json_int_t)s->max_connections, "header_timeout",
        dur(s->header_timeout_ms), "idle_timeout", dur(s->idle_timeout_ms), "tunnel_idle_timeout",
        dur(s->tunnel_idle_timeout_ms), "max_header_size", size(s->max_header_bytes),
        "max_body_size", size(s->max_body_bytes), "retry_buffer_size", size(s->retry_buffer_bytes),
        "drain_delay", dur(s->drain_delay_ms), "drain_timeout", dur(s->drain_timeout_ms),
        "control_socket", str_or_null(s->control_socket), "trusted_proxies",
        cidrs(s->trusted_proxies, s->n_trusted_proxies));
    json_t *prop = json_array();
    if (cfg->tracing.propagate_w3c)
        json_array_append_new(prop, json_string("w3c"));
    if (cfg->tracing.propagate_datadog)
        json_array_append_new(prop, json_string("datadog"));
    json_t *groups = json_object();
    for (size_t g = 0; g < cfg->n_target_groups; g++)
        json_object_set_new(groups, cfg->target_groups[g].name, group_json(&cfg->target_groups[g]));
    json_t *sets = json_object();
    for (size_t i = 0; i < cfg->n_sets; i++)
        json_object_set_new(sets, cfg->sets[i].name,
                            json_pack("{s:o,s:o,s:o}", "file", str_or_null(cfg->sets[i].file),
                                      "url", str_or_null(cfg->sets[i].url), "refresh",
                                      dur(cfg->sets[i].refresh_ms)));
    json_t *routes = json_array();
    for (size_t r = 0; r < cfg->n_routes; r++)
        json_array_append_new(routes, route_json(&cfg->routes[r], cfg));
    json_t *out = json_pack(
        "{s:s,s:o,s:{s:s},s:{s:o},s:{s:o,s:s,s:f,s:o},s:o,s:o,s:o,s:o}", "source", cfg->path,
        "server", server, "admin", "listen", cfg->admin_listen, "access_log", "path",
        cfg->access_log_path ? json_string(cfg->access_log_path) : json_string("off"), "tracing",
        "otlp_endpoint", str_or_null(cfg->tracing.otlp_endpoint), "service_name",
        cfg->tracing.service_name, "sample_ratio", cfg->tracing.sample_ratio, "propagation", prop,
        "redis",
        cfg->redis_address ? json_pack("{s:s}", "address", cfg->redis_address) : json_null(),
        "target_groups", groups, "sets", sets, "routes", routes);
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    if (out && cfg->admin_token_env) {
        json_t *admin = json_object_get(out, "admin");
        json_object_set_new(admin, "token_env", json_string(cfg->admin_token_env));
    }
    if (out)
        json_object_set_new(
            out, "log",
            json_pack("{s:s,s:s}", "level",
                      levels[cfg->log_level >= 0 && cfg->log_level < 4 ? cfg->log_level : 2],
                      "format", cfg->log_json ? "json" : "text"));
    return out;
}
