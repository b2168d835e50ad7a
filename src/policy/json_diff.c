#include "policy/json_diff.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"

typedef struct {
    char **tok; /* escaped tokens, "*" is a wildcard */
    size_t n;
} pattern_t;

struct json_diff_spec {
    pattern_t *ignore, *unordered;
    size_t n_ignore, n_unordered;
    char **headers;
    size_t n_headers;
    size_t max_body_size;
};

typedef struct {
    const json_diff_spec_t *spec;
    json_diff_result_t *out;
    char path[8192];
    size_t tok_off[JSON_DIFF_MAX_DEPTH + 2];
    size_t depth, len;
    size_t work;
    bool probe;      /* only decide equality, record nothing */
    bool probe_diff; /* probe found a difference */
    int err;
} walk_t;

static void pattern_free(pattern_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->tok[i]);
    free(p->tok);
}

static void patterns_free(pattern_t *ps, size_t n)
{
    for (size_t i = 0; ps && i < n; i++)
        pattern_free(&ps[i]);
    free(ps);
}

static int pattern_compile(const char *s, pattern_t *p)
{
    p->tok = NULL;
    p->n = 0;
    if (*s == '\0')
        return FE_OK;
    if (*s != '/')
        return FE_INVAL;
    size_t n = 0;
    for (const char *c = s; *c; c++)
        n += *c == '/';
    if (n > JSON_DIFF_MAX_DEPTH)
        return FE_TOOBIG;
    p->tok = calloc(n, sizeof *p->tok);
    if (!p->tok)
        return FE_NOMEM;
    const char *c = s + 1;
    for (size_t i = 0; i < n; i++) {
        const char *e = strchr(c, '/');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        for (size_t k = 0; k < l; k++)
            if (c[k] == '~' && (k + 1 >= l || (c[k + 1] != '0' && c[k + 1] != '1'))) {
                p->n = i;
                return FE_INVAL;
            }
        p->tok[i] = strndup(c, l);
        if (!p->tok[i]) {
            p->n = i;
            return FE_NOMEM;
        }
        c += l + 1;
    }
    p->n = n;
    return FE_OK;
}

static int compile_list(const char *const *src, size_t n, pattern_t **dst, char *err, size_t errlen)
{
    *dst = calloc(n ? n : 1, sizeof **dst);
    if (!*dst)
        return FE_NOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = src[i] ? pattern_compile(src[i], &(*dst)[i]) : FE_INVAL;
        if (rc != FE_OK) {
            snprintf(err, errlen, "invalid JSON pointer '%s'", src[i] ? src[i] : "(null)");
            patterns_free(*dst, i + 1);
            *dst = NULL;
            return rc;
        }
    }
    return FE_OK;
}

json_diff_spec_t *json_diff_spec_new(const char *const *ignore, size_t n_ignore,
                                     const char *const *unordered, size_t n_unordered,
                                     const char *const *headers, size_t n_headers,
                                     size_t max_body_size, char *err, size_t errlen)
{
    json_diff_spec_t *s = calloc(1, sizeof *s);
    if (!s)
        goto nomem;
    if (compile_list(ignore, n_ignore, &s->ignore, err, errlen) != FE_OK)
        goto fail;
    s->n_ignore = n_ignore;
    if (compile_list(unordered, n_unordered, &s->unordered, err, errlen) != FE_OK)
        goto fail;
    s->n_unordered = n_unordered;
    s->headers = calloc(n_headers ? n_headers : 1, sizeof *s->headers);
    if (!s->headers)
        goto nomem;
    for (size_t i = 0; i < n_headers; i++) {
        if (!headers[i] || !*headers[i]) {
            snprintf(err, errlen, "empty header name");
            goto fail;
        }
        s->headers[i] = strdup(headers[i]);
        if (!s->headers[i])
            goto nomem;
        s->n_headers = i + 1;
        for (char *c = s->headers[i]; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    }
    s->max_body_size = max_body_size;
    return s;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    json_diff_spec_free(s);
    return NULL;
}

void json_diff_spec_free(json_diff_spec_t *s)
{
    if (!s)
        return;
    patterns_free(s->ignore, s->n_ignore);
    patterns_free(s->unordered, s->n_unordered);
    for (size_t i = 0; s->headers && i < s->n_headers; i++)
        free(s->headers[i]);
    free(s->headers);
    free(s);
}

void json_diff_result_free(json_diff_result_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_differences; i++) {
        free(r->differences[i].pointer);
        free(r->differences[i].old_value);
        free(r->differences[i].new_value);
    }
    r->n_differences = 0;
}

/* ---- recording ---- */

static char *dup_cut(const char *s, size_t n)
{
    if (n > JSON_DIFF_VALUE_MAX_BYTES)
        n = JSON_DIFF_VALUE_MAX_BYTES;
    return strndup(s, n);
}

typedef struct {
    char buf[JSON_DIFF_VALUE_MAX_BYTES];
    size_t used;
} cut_t;

/* Copies what fits and stops the dump once the buffer is full. */
static int cut_on_chunk(const char *chunk, size_t size, void *data)
{
    cut_t *c = data;
    size_t room = sizeof c->buf - c->used;
    size_t n = size < room ? size : room;
    memcpy(c->buf + c->used, chunk, n);
    c->used += n;
    return c->used == sizeof c->buf ? -1 : 0;
}

static char *value_text(const json_t *v)
{
    cut_t c = {.used = 0};
    if (!v)
        return NULL;
    json_dump_callback(v, cut_on_chunk, &c,
                       JSON_COMPACT | JSON_ENCODE_ANY | JSON_ENSURE_ASCII | JSON_SORT_KEYS);
    return dup_cut(c.buf, c.used);
}

/* Records one difference; old/new are taken over (may be NULL = absent). */
static void record(walk_t *w, const char *pointer, char *old_v, char *new_v, bool had_old,
                   bool had_new)
{
    json_diff_result_t *r = w->out;
    r->n_total++;
    if (r->n_differences < JSON_DIFF_MAX_REPORTED && w->err == FE_OK) {
        json_diff_difference_t *d = &r->differences[r->n_differences];
        d->pointer = strdup(pointer);
        if (!d->pointer || (had_old && !old_v) || (had_new && !new_v)) {
            free(d->pointer);
            free(old_v);
            free(new_v);
            w->err = FE_NOMEM;
            return;
        }
        d->old_value = old_v;
        d->new_value = new_v;
        r->n_differences++;
        return;
    }
    free(old_v);
    free(new_v);
}

static void record_json(walk_t *w, const char *suffix, const json_t *a, const json_t *b)
{
    if (w->probe) {
        w->probe_diff = true;
        return;
    }
    char ptr[sizeof w->path + 3];
    snprintf(ptr, sizeof ptr, "%.*s%s", (int)w->len, w->path, suffix);
    record(w, ptr, value_text(a), value_text(b), a != NULL, b != NULL);
}

/* ---- path ---- */

static bool path_push(walk_t *w, const char *key, size_t klen)
{
    if (w->len + 1 + 2 * klen >= sizeof w->path)
        return false;
    w->tok_off[w->depth++] = w->len;
    w->path[w->len++] = '/';
    for (size_t i = 0; i < klen; i++) {
        if (key[i] == '~' || key[i] == '/') {
            w->path[w->len++] = '~';
            w->path[w->len++] = key[i] == '~' ? '0' : '1';
        } else
            w->path[w->len++] = key[i];
    }
    return true;
}

static void path_pop(walk_t *w) { w->len = w->tok_off[--w->depth]; }

static bool path_matches(const walk_t *w, const pattern_t *ps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const pattern_t *p = &ps[i];
        if (p->n != w->depth)
            continue;
        size_t k = 0;
        for (; k < p->n; k++) {
            size_t s = w->tok_off[k] + 1;
            size_t e = k + 1 < w->depth ? w->tok_off[k + 1] : w->len;
            size_t l = strlen(p->tok[k]);
            if (strcmp(p->tok[k], "*") == 0)
                continue;
            if (l != e - s || memcmp(p->tok[k], w->path + s, l) != 0)
                break;
        }
        if (k == p->n)
            return true;
    }
    return false;
}

/* ---- values ---- */

static bool numbers_equal(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b))
        return json_integer_value(a) == json_integer_value(b);
    if (json_is_real(a) && json_is_real(b))
        return json_real_value(a) == json_real_value(b);
    const json_t *i = json_is_integer(a) ? a : b;
    double r = json_real_value(json_is_real(a) ? a : b);
    json_int_t iv = json_integer_value(i);
    /* exact: the real must be integral and in range, then compare as ints */
    if (r != r || r < -9223372036854775808.0 || r >= 9223372036854775808.0)
        return false;
    if ((double)(json_int_t)r != r)
        return false;
    return (json_int_t)r == iv;
}

static void walk(walk_t *w, const json_t *a, const json_t *b);

/* The path is full (very long keys): compare the parent strictly. */
static void path_overflow(walk_t *w, const json_t *a, const json_t *b)
{
    if (!json_equal((json_t *)a, (json_t *)b))
        record_json(w, "", a, b);
}

static bool subtree_equal(walk_t *w, const json_t *a, const json_t *b)
{
    bool saved_probe = w->probe, saved_diff = w->probe_diff;
    w->probe = true;
    w->probe_diff = false;
    walk(w, a, b);
    bool eq = !w->probe_diff;
    w->probe = saved_probe;
    w->probe_diff = saved_diff;
    return eq;
}

static void walk_multiset(walk_t *w, const json_t *a, const json_t *b)
{
    size_t na = json_array_size(a), nb = json_array_size(b);
    bool *used = calloc(nb ? nb : 1, sizeof *used);
    if (!used) {
        w->err = FE_NOMEM;
        return;
    }
    if (!path_push(w, "*", 1)) {
        free(used);
        path_overflow(w, a, b);
        return;
    }
    for (size_t i = 0; i < na && !w->out->incomplete; i++) {
        const json_t *x = json_array_get(a, i);
        bool found = false;
        for (size_t j = 0; j < nb && !found; j++)
            if (!used[j] && subtree_equal(w, x, json_array_get(b, j)))
                used[j] = found = true;
        if (!found)
            record_json(w, "", x, NULL);
    }
    for (size_t j = 0; j < nb && !w->out->incomplete; j++)
        if (!used[j])
            record_json(w, "", NULL, json_array_get(b, j));
    path_pop(w);
    free(used);
}

/* Visits child x/y (either may be NULL: absent) of parents a/b under key k.
 * Returns false when the parent's walk should stop. */
static bool walk_child(walk_t *w, const json_t *a, const json_t *b, const char *k, size_t kl,
                       const json_t *x, const json_t *y)
{
    if (!path_push(w, k, kl)) {
        path_overflow(w, a, b);
        return false;
    }
    if (!path_matches(w, w->spec->ignore, w->spec->n_ignore)) {
        if (x && y)
            walk(w, x, y);
        else
            record_json(w, "", x, y);
    }
    path_pop(w);
    return !(w->probe && w->probe_diff) && !w->out->incomplete && w->err == FE_OK;
}

static void walk_object(walk_t *w, const json_t *a, const json_t *b)
{
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach((json_t *)a, k, kl, v)
    {
        if (!walk_child(w, a, b, k, kl, v, json_object_getn(b, k, kl)))
            return;
    }
    json_object_keylen_foreach((json_t *)b, k, kl, v)
    {
        if (!json_object_getn(a, k, kl) && !walk_child(w, a, b, k, kl, NULL, v))
            return;
    }
}

static void walk_array(walk_t *w, const json_t *a, const json_t *b)
{
    if (path_matches(w, w->spec->unordered, w->spec->n_unordered)) {
        walk_multiset(w, a, b);
        return;
    }
    size_t na = json_array_size(a), nb = json_array_size(b);
    size_t n = na > nb ? na : nb;
    for (size_t i = 0; i < n; i++)
        if (!walk_child(w, a, b, "*", 1, json_array_get(a, i), json_array_get(b, i)))
            return;
}

static void walk(walk_t *w, const json_t *a, const json_t *b)
{
    if (w->out->incomplete || w->err != FE_OK)
        return;
    if (++w->work > JSON_DIFF_WORK_BUDGET) {
        w->out->incomplete = true;
        return;
    }
    if (json_is_number(a) && json_is_number(b)) {
        if (!numbers_equal(a, b))
            record_json(w, "", a, b);
        return;
    }
    if (json_typeof(a) != json_typeof(b)) {
        record_json(w, "", a, b);
        return;
    }
    if (w->depth >= JSON_DIFF_MAX_DEPTH) {
        if (!json_equal((json_t *)a, (json_t *)b))
            record_json(w, "", a, b);
        return;
    }
    switch (json_typeof(a)) {
    case JSON_OBJECT:
        walk_object(w, a, b);
        break;
    case JSON_ARRAY:
        walk_array(w, a, b);
        break;
    case JSON_STRING:
        if (json_string_length(a) != json_string_length(b) ||
            memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) != 0)
            record_json(w, "", a, b);
        break;
    default: /* true, false, null: same type is same value */
        break;
    }
}

/* ---- sides ---- */

static bool is_json_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return true;
    return n > 5 && memchr(ct, '/', n) && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

static const char *header_get(const json_diff_side_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_headers; i++)
        if (s->headers[i].name && strcasecmp(s->headers[i].name, name) == 0)
            return s->headers[i].value ? s->headers[i].value : "";
    return NULL;
}

static char *string_text(const char *s)
{
    if (!s)
        return NULL;
    json_t *j = json_stringn_nocheck(s, strlen(s));
    if (!j)
        return NULL;
    char *t = value_text(j);
    json_decref(j);
    return t;
}

static char *size_text(size_t n)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%zu", n);
    return strdup(buf);
}

static void compare_bytes(walk_t *w, const json_diff_side_t *a, const json_diff_side_t *b,
                          bool lengths_only)
{
    bool same = a->body_len == b->body_len && a->body_truncated == b->body_truncated;
    if (same && !lengths_only && a->body_len)
        same = memcmp(a->body, b->body, a->body_len) == 0;
    if (!same)
        record(w, "", size_text(a->body_len), size_text(b->body_len), true, true);
}

static json_t *parse(const json_diff_side_t *s)
{
    json_error_t e;
    if (!s->body)
        return NULL;
    return json_loadb((const char *)s->body, s->body_len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
}

int json_diff_run(const json_diff_spec_t *spec, const json_diff_side_t *old_side,
                  const json_diff_side_t *new_side, json_diff_result_t *out)
{
    if (!spec || !old_side || !new_side || !out)
        return FE_INVAL;
    memset(out, 0, sizeof *out);
    walk_t *w = calloc(1, sizeof *w);
    if (!w)
        return FE_NOMEM;
    w->spec = spec;
    w->out = out;

    if (old_side->status != new_side->status) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", old_side->status);
        snprintf(b, sizeof b, "%d", new_side->status);
        record(w, "status", strdup(a), strdup(b), true, true);
    }
    for (size_t i = 0; i < spec->n_headers; i++) {
        const char *x = header_get(old_side, spec->headers[i]);
        const char *y = header_get(new_side, spec->headers[i]);
        if ((x == NULL) == (y == NULL) && (!x || strcmp(x, y) == 0))
            continue;
        char name[300];
        snprintf(name, sizeof name, "header:%.*s", 280, spec->headers[i]);
        record(w, name, string_text(x), string_text(y), x != NULL, y != NULL);
    }

    bool too_big = old_side->body_len > spec->max_body_size ||
                   new_side->body_len > spec->max_body_size || old_side->body_truncated ||
                   new_side->body_truncated;
    if (too_big) {
        out->compared_by_length = true;
        compare_bytes(w, old_side, new_side, true);
    } else if (old_side->body_len == new_side->body_len &&
               (old_side->body_len == 0 ||
                memcmp(old_side->body, new_side->body, old_side->body_len) == 0)) {
        /* The same bytes are the same value: the common case of a working
         * migration costs no parse (invalid flags are not looked at). */
    } else if (is_json_type(old_side->content_type) && is_json_type(new_side->content_type)) {
        json_t *a = parse(old_side), *b = parse(new_side);
        out->old_invalid = !a;
        out->new_invalid = !b;
        if (a && b)
            walk(w, a, b);
        else
            compare_bytes(w, old_side, new_side, false);
        json_decref(a);
        json_decref(b);
    } else {
        compare_bytes(w, old_side, new_side, false);
    }
    int err = w->err;
    free(w);
    if (err != FE_OK) {
        json_diff_result_free(out);
        memset(out, 0, sizeof *out);
        return err;
    }
    out->match = out->n_total == 0 && !out->incomplete;
    return FE_OK;
}
