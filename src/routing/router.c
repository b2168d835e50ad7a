/* Route matching (contract section 4) and the upstream request target.
 * Runs on every request: no allocation, no locks; the cheap conditions
 * (exact/prefix path, method, host, headers) are tried before a regex runs. */
#include "routing/router.h"

#include <string.h>

#include "core/errors.h"

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* s (any case) equals the lower-case lit over n bytes. */
static bool equal_nocase(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/* The host name of a Host header value: without the port, the surrounding
 * whitespace or one trailing dot (an FQDN's root, as nginx ignores it). An IPv6
 * literal keeps its brackets. */
static void host_name(const char *v, size_t len, const char **out, size_t *out_len)
{
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    size_t n = len;
    if (len && v[0] == '[') {
        const char *rb = memchr(v, ']', len);
        n = rb ? (size_t)(rb - v) + 1 : len;
    } else {
        const char *colon = memchr(v, ':', len);
        if (colon)
            n = (size_t)(colon - v);
        if (n && v[n - 1] == '.')
            n--;
    }
    *out = v;
    *out_len = n;
}

static bool host_matches(const config_match_t *m, const router_request_t *req)
{
    if (!req->host)
        return false;
    const char *h;
    size_t hl;
    host_name(req->host, req->host_len, &h, &hl);
    size_t pl = strlen(m->host);
    if (m->host_wildcard) /* ".suffix": at least one character before it */
        return hl > pl && equal_nocase(h + hl - pl, m->host, pl);
    return hl == pl && equal_nocase(h, m->host, pl);
}

/* Every listed header is present with exactly that value; with repeated
 * headers of one name, any of them may carry it. */
static bool headers_match(const config_match_t *m, const router_request_t *req)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        const config_header_match_t *want = &m->headers[i];
        size_t nl = strlen(want->name);
        size_t vl = strlen(want->value);
        bool found = false;
        for (size_t j = 0; j < req->n_headers && !found; j++) {
            const http_header_t *h = &req->headers[j];
            found = h->value_len == vl &&
                    http_header_name_is(h->name, h->name_len, want->name, nl) &&
                    memcmp(h->value, want->value, vl) == 0;
        }
        if (!found)
            return false;
    }
    return true;
}

static void captures_clear(router_match_t *out)
{
    for (size_t i = 0; i < 2 * MAX_PATH_CAPTURES; i++)
        out->ovector[i] = PCRE2_UNSET;
    out->n_captures = 0;
}

/* Runs the route's regex; on a match copies the captures into out and
 * returns how many ovector pairs of md are meaningful (>= 1), else 0. */
static uint32_t regex_matches(const config_match_t *m, pcre2_match_data *md,
                              const router_request_t *req, router_match_t *out)
{
    int rc = pcre2_match(m->regex, (PCRE2_SPTR)req->path, req->path_len, 0, 0, md, NULL);
    if (rc < 0)
        return 0;
    /* rc == 0: the pattern has more groups than md holds and every pair is
     * set. Else pairs past rc are unset, or (past the pattern's own groups)
     * left from an earlier match, so they are never read. */
    uint32_t valid = rc == 0 ? pcre2_get_ovector_count(md) : (uint32_t)rc;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    uint32_t n = valid < MAX_PATH_CAPTURES ? valid : MAX_PATH_CAPTURES;
    for (uint32_t i = 0; i < 2 * n; i++)
        out->ovector[i] = ov[i];
    out->n_captures = n;
    return valid;
}

/* The in_set group is read from md, not out: it may lie past the
 * MAX_PATH_CAPTURES pairs that out keeps. */
static bool in_set_matches(const config_t *cfg, set_t *const *sets, const config_match_t *m,
                           pcre2_match_data *md, const router_request_t *req, uint32_t valid)
{
    if (!sets || m->in_set >= cfg->n_sets || !sets[m->in_set])
        return false;
    uint32_t g = m->in_set_capture;
    if (g >= valid)
        return false;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    if (ov[2 * g] == PCRE2_UNSET || ov[2 * g + 1] < ov[2 * g])
        return false;
    return set_contains(sets[m->in_set], req->path + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
}

int router_match(const config_t *cfg, set_t *const *sets, pcre2_match_data *md,
                 const router_request_t *req, router_match_t *out)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const config_route_t *r = &cfg->routes[i];
        const config_match_t *m = &r->match;
        if (m->kind == MATCH_PATH &&
            (req->path_len != m->path_len || memcmp(req->path, m->path, m->path_len) != 0))
            continue;
        if (m->kind == MATCH_PREFIX &&
            (req->path_len < m->path_len || memcmp(req->path, m->path, m->path_len) != 0))
            continue;
        if (m->methods && !(m->methods & req->method_bit))
            continue;
        if (m->host && !host_matches(m, req))
            continue;
        if (m->n_headers && !headers_match(m, req))
            continue;
        captures_clear(out);
        uint32_t valid = 0;
        if (m->kind == MATCH_REGEX) {
            if (!md || !m->regex || !(valid = regex_matches(m, md, req, out)))
                continue;
        } else {
            /* $0 is what the path condition matched: the rewrite_prefix
             * replaces exactly that. */
            out->ovector[0] = 0;
            out->ovector[1] = m->kind == MATCH_PATH ? req->path_len : m->path_len;
            out->n_captures = 1;
        }
        /* Only a regex has the named capture in_set needs. */
        if (m->in_set != CONFIG_NONE &&
            (m->kind != MATCH_REGEX || !in_set_matches(cfg, sets, m, md, req, valid)))
            continue;
        out->route = r;
        return 0;
    }
    out->route = NULL;
    return FE_NOTFOUND;
}

pcre2_match_data *router_match_data_new(void)
{
    return pcre2_match_data_create(ROUTER_MATCH_DATA_PAIRS, NULL);
}

/* Appends n bytes at *pos if they fit before cap; false once they do not. */
static bool put(char *out, size_t cap, size_t *pos, const char *p, size_t n)
{
    if (n > cap || *pos > cap - n)
        return false;
    memcpy(out + *pos, p, n);
    *pos += n;
    return true;
}

/* Expands a backend path template: $0..$9 are captures (unset = empty),
 * "$$" is a '$', any other '$' is literal. */
static bool expand_template(const char *t, const router_request_t *req, const router_match_t *m,
                            char *out, size_t cap, size_t *pos)
{
    for (const char *p = t; *p; p++) {
        if (*p != '$' || !p[1]) {
            if (!put(out, cap, pos, p, 1))
                return false;
            continue;
        }
        if (p[1] == '$') {
            if (!put(out, cap, pos, "$", 1))
                return false;
            p++;
            continue;
        }
        if (p[1] < '0' || p[1] > '9') {
            if (!put(out, cap, pos, p, 1))
                return false;
            continue;
        }
        unsigned g = (unsigned)(p[1] - '0');
        p++;
        if (g >= m->n_captures || m->ovector[2 * g] == PCRE2_UNSET)
            continue;
        size_t s = m->ovector[2 * g], e = m->ovector[2 * g + 1];
        if (e > s && !put(out, cap, pos, req->path + s, e - s))
            return false;
    }
    return true;
}

long router_rewrite_target(const config_route_t *r, const config_backend_t *b,
                           const router_request_t *req, const router_match_t *m, char *out,
                           size_t cap)
{
    size_t pos = 0;
    bool ok;
    bool template_has_query = false;
    if (b && b->path) {
        ok = expand_template(b->path, req, m, out, cap, &pos);
        template_has_query = strchr(b->path, '?') != NULL;
    } else if (r->rewrite_prefix && m->n_captures > 0 && m->ovector[0] == 0 &&
               m->ovector[1] <= req->path_len) {
        /* Plain replacement, as Envoy's prefix_rewrite: prefix "/api/" with
         * rewrite "/" maps "/api/x" to "/x"; no slash is added or merged. */
        size_t matched = m->ovector[1];
        ok = put(out, cap, &pos, r->rewrite_prefix, strlen(r->rewrite_prefix)) &&
             put(out, cap, &pos, req->path + matched, req->path_len - matched);
    } else {
        ok = put(out, cap, &pos, req->path, req->path_len);
    }
    /* An empty target is not a request target: "/" is what was meant. */
    if (ok && pos == 0)
        ok = put(out, cap, &pos, "/", 1);
    if (ok && req->query && !(template_has_query && req->query_len == 0)) {
        /* A template may carry its own query; the client's joins it. */
        ok = put(out, cap, &pos, template_has_query ? "&" : "?", 1) &&
             put(out, cap, &pos, req->query, req->query_len);
    }
    /* Room for the terminating NUL too, so callers may use out as a string. */
    if (!ok || pos >= cap)
        return FE_TOOBIG;
    out[pos] = '\0';
    return (long)pos;
}
