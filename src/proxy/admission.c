/* Admission steps and their runner; see admission.h. */
#include "proxy/admission.h"

#include "core/addr.h"
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

const admission_step_t admission_steps[] = {
    {"ip_rules", ip_rules, NULL},
    {"body_limit", body_limit, NULL},
};
const size_t admission_n_steps = sizeof admission_steps / sizeof admission_steps[0];
