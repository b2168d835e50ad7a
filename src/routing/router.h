/* Route matching: first route (file order) whose every condition holds.
 * Sans-I/O: a request view in, a route and the path captures out. */
#ifndef FICUS_ROUTING_ROUTER_H
#define FICUS_ROUTING_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/defaults.h"
#include "http/header.h"
#include "routing/set.h"

typedef struct router_request {
    uint32_t method_bit; /* METHOD_* */
    const char *path;    /* without the query */
    size_t path_len;
    const char *query; /* after '?', NULL if none */
    size_t query_len;
    const char *host; /* Host header value, NULL if absent */
    size_t host_len;
    const http_header_t *headers;
    size_t n_headers;
} router_request_t;

typedef struct router_match {
    const config_route_t *route;
    uint32_t n_captures;                   /* pairs filled, $0 included */
    size_t ovector[2 * MAX_PATH_CAPTURES]; /* offsets into path; PCRE2_UNSET if unset */
} router_match_t;

/* sets: the runtime set objects indexed like cfg->sets (may be NULL if
 * cfg->n_sets == 0). md: the caller thread's match data, from
 * router_match_data_new(). 0 on match, FE_NOTFOUND when no route matches. */
int router_match(const config_t *cfg, set_t *const *sets, pcre2_match_data *md,
                 const router_request_t *req, router_match_t *out);
pcre2_match_data *router_match_data_new(void);

/* Writes the upstream request target for backend b into out: the backend's
 * path template with $N replaced by captures, else rewrite_prefix replacing the
 * matched prefix, else the original path; then "?query" if any. Returns the
 * length, or FE_TOOBIG if it does not fit in cap. */
long router_rewrite_target(const config_route_t *r, const config_backend_t *b,
                           const router_request_t *req, const router_match_t *m, char *out,
                           size_t cap);

#endif
