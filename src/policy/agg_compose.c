/* An aggregation's answer; see agg_compose.h. */
#include "policy/agg_compose.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

/* The value at pointer p (RFC 6901) in v, or NULL. */
static json_t *at_pointer(json_t *v, const char *p)
{
    if (!*p)
        return v;
    if (*p != '/')
        return NULL;
    char tok[256];
    while (v && *p == '/') {
        p++;
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char c = *p;
            if (c == '~') {
                if (p[1] != '0' && p[1] != '1')
                    return NULL;
                c = p[1] == '0' ? '~' : '/';
                p++;
            }
            if (n + 1 >= sizeof tok)
                return NULL;
            tok[n++] = c;
        }
        tok[n] = '\0';
        if (json_is_object(v)) {
            v = json_object_getn(v, tok, n);
        } else if (json_is_array(v)) {
            if (!n || (n > 1 && tok[0] == '0') || strspn(tok, "0123456789") != n || n > 9)
                return NULL;
            v = json_array_get(v, (size_t)strtoul(tok, NULL, 10));
        } else {
            return NULL;
        }
    }
    return v;
}

int agg_compose_check(const char *body, size_t len, size_t max, const char *extract,
                      const char **out, size_t *out_len, char **owned, const char **reason)
{
    *owned = NULL;
    if (len > max) {
        *reason = "the body is larger than the call's limit";
        return -1;
    }
    json_error_t err;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY, &err);
    if (!v) {
        *reason = "the body is not JSON";
        return -1;
    }
    if (!extract) {
        /* The value as it came, without the whitespace around it. */
        json_decref(v);
        while (len && strchr(" \t\r\n", body[len - 1]))
            len--;
        while (len && strchr(" \t\r\n", body[0])) {
            body++;
            len--;
        }
        *out = body;
        *out_len = len;
        return 0;
    }
    json_t *x = at_pointer(v, extract);
    char *s = x ? json_dumps(x, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    if (!s) {
        *reason = x ? "out of memory" : "no value at the extract pointer";
        return -1;
    }
    *owned = s;
    *out = s;
    *out_len = strlen(s);
    return 0;
}

typedef struct layout {
    agg_piece_t *pieces;
    size_t n, max;
    char *glue;
    size_t used, cap;
    bool overflow;
    bool last_glue; /* the last piece is glue: more glue extends it */
} layout_t;

/* Appends text to the glue, as its own piece or the previous glue piece's
 * continuation. */
static void glue(layout_t *l, const char *s, size_t n)
{
    if (l->used + n > l->cap || l->overflow) {
        l->overflow = true;
        return;
    }
    char *at = l->glue + l->used;
    memcpy(at, s, n);
    l->used += n;
    if (l->last_glue) {
        l->pieces[l->n - 1].n += n;
        return;
    }
    if (l->n == l->max) {
        l->overflow = true;
        return;
    }
    l->pieces[l->n++] = (agg_piece_t){at, n};
    l->last_glue = true;
}

static void glue_str(layout_t *l, const char *s)
{
    size_t n = strlen(s), used;
    glue(l, "\"", 1);
    if (l->overflow)
        return;
    size_t w = json_escape(l->glue + l->used, l->cap - l->used, s, n, &used);
    if (used < n) {
        l->overflow = true;
        return;
    }
    /* The escaped bytes were written in place: account for them. */
    l->used += w;
    l->pieces[l->n - 1].n += w;
    glue(l, "\"", 1);
}

static void body(layout_t *l, const char *p, size_t n)
{
    if (l->n == l->max) {
        l->overflow = true;
        return;
    }
    l->pieces[l->n++] = (agg_piece_t){p, n};
    l->last_glue = false;
}

long agg_compose(const agg_result_t *r, size_t n, agg_piece_t *pieces, size_t max, char *g,
                 size_t cap, bool *partial)
{
    layout_t l = {pieces, 0, max, g, 0, cap, false, false};
    *partial = false;
    glue(&l, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            glue(&l, ",", 1);
        glue_str(&l, r[i].name);
        glue(&l, ":", 1);
        if (r[i].error || !r[i].body)
            glue(&l, "null", 4);
        else
            body(&l, r[i].body, r[i].len);
        *partial |= r[i].error != NULL;
    }
    if (*partial) {
        glue(&l, ",\"_errors\":{", 12);
        bool first = true;
        for (size_t i = 0; i < n; i++) {
            if (!r[i].error)
                continue;
            if (!first)
                glue(&l, ",", 1);
            first = false;
            glue_str(&l, r[i].name);
            glue(&l, ":", 1);
            glue_str(&l, r[i].error);
        }
        glue(&l, "}", 1);
    }
    glue(&l, "}", 1);
    return l.overflow ? -1 : (long)l.n;
}
