/* Admission steps and their runner; see admission.h. */
#include "proxy/admission.h"

#include "core/addr.h"
#include "policy/api_key.h"
#include "proxy/proxy_worker.h"

admit_t admission_run(const admission_step_t *steps, size_t n, uint32_t *at, void *subject,
                      admission_deny_t *deny)
{
    while (*at < n) {
        deny->why = END_OK;
        deny->message = NULL;
        admit_t a = steps[*at].run(subject, deny);
        if (a != ADMIT_NEXT)
            return a;
        (*at)++;
    }
    return ADMIT_NEXT;
}

/* The route's ip_deny, then ip_allow (when it has one), on the client's
 * address as the request resolved it (X-Forwarded-For behind a trusted proxy). */
static admit_t ip_rules(void *subject, admission_deny_t *deny)
{
    const request_t *req = subject;
    const config_route_t *r = req->route;
    const char *ip = req->client_ip_len ? req->client_ip : req->cc->client_ip;
    size_t len = req->client_ip_len ? req->client_ip_len : req->cc->client_ip_len;
    bool ok = r->n_ip_allow == 0;
    for (size_t i = 0; i < r->n_ip_deny; i++)
        if (cidr_match_text(&r->ip_deny[i], ip, len))
            goto denied;
    for (size_t i = 0; i < r->n_ip_allow && !ok; i++)
        ok = cidr_match_text(&r->ip_allow[i], ip, len);
    if (ok)
        return ADMIT_NEXT;
denied:
    deny->why = END_FORBIDDEN;
    return ADMIT_DENY;
}

/* A declared body over server.max_body_size is refused before it is read
 * (a chunked one is counted as it comes, by the client connection). */
static admit_t body_limit(void *subject, admission_deny_t *deny)
{
    const request_t *req = subject;
    if (req->has_content_length && req->content_length > req->gen->cfg->server.max_body_bytes) {
        client_conn_close_after(req->cc);
        deny->why = END_BODY_TOO_LARGE;
        return ADMIT_DENY;
    }
    return ADMIT_NEXT;
}

/* A refusal for want of credentials, counted by reason. */
static admit_t unauthorized(const request_t *req, admission_deny_t *deny, const char *reason,
                            const char *message)
{
    metrics_auth_failure(req->pw->registry, req->gen->metrics_route[req->route->index], reason);
    deny->why = END_UNAUTHORIZED;
    deny->message = message;
    return ADMIT_DENY;
}

/* The API client, by its X-Api-Key (route auth.client): required -> 401
 * without a known key; optional -> anonymous without one, 401 with a wrong
 * one. Two X-Api-Key fields are no key. */
static admit_t client_key(void *subject, admission_deny_t *deny)
{
    request_t *req = subject;
    const config_route_t *r = req->route;
    if (r->auth_client == AUTH_CLIENT_NONE)
        return ADMIT_NEXT;
    const http_head_t *h = req->head;
    const http_header_t *k = NULL;
    for (uint32_t i = 0; i < h->n_headers; i++) {
        if (!http_header_name_is(h->headers[i].name, h->headers[i].name_len, "x-api-key", 9))
            continue;
        if (k)
            return unauthorized(req, deny, "invalid_api_key", "more than one X-Api-Key");
        k = &h->headers[i];
    }
    if (!k) {
        if (r->auth_client == AUTH_CLIENT_OPTIONAL)
            return ADMIT_NEXT;
        return unauthorized(req, deny, "missing_api_key", "missing X-Api-Key");
    }
    size_t c = api_key_lookup(req->gen->api_keys, &req->pw->hasher, k->value, k->value_len);
    if (c == CONFIG_NONE)
        return unauthorized(req, deny, "invalid_api_key", "unknown API key");
    req->client = (uint32_t)c;
    return ADMIT_NEXT;
}

/* The route's clients list: a known client not on it gets 403. */
static admit_t route_clients(void *subject, admission_deny_t *deny)
{
    const request_t *req = subject;
    const config_route_t *r = req->route;
    if (r->n_clients == 0)
        return ADMIT_NEXT;
    for (size_t i = 0; i < r->n_clients; i++)
        if (r->clients[i] == req->client)
            return ADMIT_NEXT;
    metrics_auth_failure(req->pw->registry, req->gen->metrics_route[r->index],
                         "client_not_allowed");
    deny->why = END_CLIENT_FORBIDDEN;
    return ADMIT_DENY;
}

void admission_release(request_t *req) { (void)req; }

const admission_step_t admission_steps[] = {
    {"ip_rules", ip_rules, NULL},
    {"body_limit", body_limit, NULL},
    {"client_key", client_key, NULL},
    {"route_clients", route_clients, NULL},
};
const size_t admission_n_steps = sizeof admission_steps / sizeof admission_steps[0];
