/* The table engine of the configuration (see schema.h): a table of rows
 * applied to a YAML mapping with typed setters and errors carrying
 * FILE:LINE:COL and the key path, and the walks over the rows of a loaded
 * object (restart-only changes, JSON). */
#include "config/schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/units.h"
#include "core/errors.h"

/* ----------------------------------------------------------------- errors */

struct schema_diag {
    size_t line, col, seq;
    char *msg;
};

void schema_ctx_init(schema_ctx_t *c, const char *file, arena_t *arena)
{
    memset(c, 0, sizeof *c);
    c->file = file;
    c->arena = arena;
}

static void vdiag(schema_ctx_t *c, size_t line, size_t col, const char *fmt, va_list ap)
{
    char *msg;
    if (c->muted)
        return;
    if (vasprintf(&msg, fmt, ap) < 0) {
        c->oom = true;
        return;
    }
    if (c->n_diags == c->cap_diags) {
        size_t cap = c->cap_diags ? 2 * c->cap_diags : 16;
        schema_diag_t *d = realloc(c->diags, cap * sizeof *d);
        if (!d) {
            free(msg);
            c->oom = true;
            return;
        }
        c->diags = d;
        c->cap_diags = cap;
    }
    c->diags[c->n_diags] = (schema_diag_t){line, col, c->n_diags, msg};
    c->n_diags++;
}

void schema_err_at(schema_ctx_t *c, size_t line, size_t col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(c, line, col, fmt, ap);
    va_end(ap);
}

/* An error at the first character of node n (1:1 without a node). */
void schema_err(schema_ctx_t *c, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(c, n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1, fmt, ap);
    va_end(ap);
}

static int diag_cmp(const void *a, const void *b)
{
    const schema_diag_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Hands the errors over in file order. A node reached through several YAML
 * aliases is checked once per alias: its identical errors are shown once. */
void schema_ctx_deinit(schema_ctx_t *c, config_errors_t *errs)
{
    if (c->n_diags)
        qsort(c->diags, c->n_diags, sizeof *c->diags, diag_cmp);
    for (size_t i = 0; i < c->n_diags; i++) {
        const schema_diag_t *d = &c->diags[i];
        bool repeated = false;
        for (size_t j = i; j-- > 0 && c->diags[j].line == d->line && c->diags[j].col == d->col;)
            repeated = repeated || strcmp(c->diags[j].msg, d->msg) == 0;
        if (!repeated && errs)
            config_errors_add(errs, c->file, d->line, d->col, "%s", d->msg);
    }
    for (size_t i = 0; i < c->n_diags; i++)
        free(c->diags[i].msg);
    free(c->diags);
    c->diags = NULL;
    c->n_diags = c->cap_diags = 0;
}

/* ------------------------------------------------------------ node access */

static const yaml_node_t *node_at(schema_ctx_t *c, int id)
{
    return yaml_document_get_node(c->doc, id);
}

size_t schema_list_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

const yaml_node_t *schema_list_item(schema_ctx_t *c, const yaml_node_t *n, size_t i)
{
    return node_at(c, n->data.sequence.items.start[i]);
}

size_t schema_map_len(const yaml_node_t *n)
{
    return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
}

const yaml_node_t *schema_map_key(schema_ctx_t *c, const yaml_node_t *n, size_t i)
{
    return node_at(c, n->data.mapping.pairs.start[i].key);
}

const yaml_node_t *schema_map_value(schema_ctx_t *c, const yaml_node_t *n, size_t i)
{
    return node_at(c, n->data.mapping.pairs.start[i].value);
}

const char *schema_sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

size_t schema_slen(const yaml_node_t *n) { return n->data.scalar.length; }

/* YAML's null: an empty plain value ("key:"), "~" or null. */
bool schema_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = schema_sval(n);
    switch (schema_slen(n)) {
    case 0:
        return true;
    case 1:
        return s[0] == '~';
    case 4:
        return !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
    default:
        return false;
    }
}

const char *schema_kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return schema_is_null(n) ? "nothing" : "a string";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

/* s as a double-quoted, escaped, length-capped string for a message. */
static const char *quote(schema_quote_t *b, const char *s, size_t len)
{
    const size_t lim = SCHEMA_QUOTE_BYTES - 5; /* room for "...", the quote, the NUL */
    size_t o = 0;
    b->s[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        size_t el = 1;
        esc[0] = (char)ch;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            el = 2;
        } else if (ch < 0x20 || ch == 0x7f) {
            el = (size_t)snprintf(esc, sizeof esc, "\\x%02x", ch);
        }
        if (o + el > lim) {
            memcpy(b->s + o, "...", 3);
            o += 3;
            break;
        }
        memcpy(b->s + o, esc, el);
        o += el;
    }
    b->s[o++] = '"';
    b->s[o] = '\0';
    return b->s;
}

const char *schema_qnode(schema_quote_t *b, const yaml_node_t *n)
{
    return quote(b, schema_sval(n), schema_slen(n));
}

const char *schema_qstr(schema_quote_t *b, const char *s) { return quote(b, s, strlen(s)); }

/* Key paths ("routes[2].retries.attempts") for messages; user-written keys
 * in them get their control characters replaced. */
static void path_append(char *out, size_t *o, const char *s, size_t len)
{
    for (size_t i = 0; i < len && *o + 1 < SCHEMA_PATH_BYTES; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[(*o)++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    out[*o] = '\0';
}

void schema_path_key(char *out, const char *parent, const char *key, size_t keylen)
{
    size_t o = 0;
    out[0] = '\0';
    if (parent && *parent) {
        path_append(out, &o, parent, strlen(parent));
        path_append(out, &o, ".", 1);
    }
    path_append(out, &o, key, keylen);
}

void schema_path_index(char *out, const char *parent, size_t i)
{
    char idx[32];
    int w = snprintf(idx, sizeof idx, "[%zu]", i);
    size_t o = 0;
    out[0] = '\0';
    path_append(out, &o, parent, strlen(parent));
    path_append(out, &o, idx, w > 0 ? (size_t)w : 0);
}

bool schema_want(schema_ctx_t *c, const yaml_node_t *n, yaml_node_type_t type, const char *path)
{
    if (n->type == type && type == YAML_SCALAR_NODE)
        return true;
    if (n->type == type) {
        size_t len = type == YAML_SEQUENCE_NODE ? schema_list_len(n) : schema_map_len(n);
        if (c->muted)
            return false;
        if (len > c->values_left) {
            schema_err(
                c, n,
                "%s: the configuration expands to more than %zu values; do YAML aliases repeat a "
                "large part of it?",
                path, c->values_max);
            c->muted = true;
            return false;
        }
        c->values_left -= len;
        return true;
    }
    schema_err(c, n, "%s: expected %s, got %s", path,
               type == YAML_MAPPING_NODE    ? "a mapping"
               : type == YAML_SEQUENCE_NODE ? "a list"
                                            : "a string",
               schema_kind_name(n));
    return false;
}

/* The scalar's text; NULL (and an error) for a list, a mapping or text
 * with a NUL byte, which C strings would silently cut. */
const char *schema_str(schema_ctx_t *c, const yaml_node_t *n, const char *path)
{
    if (!schema_want(c, n, YAML_SCALAR_NODE, path))
        return NULL;
    if (memchr(schema_sval(n), '\0', schema_slen(n))) {
        schema_err(c, n, "%s: contains a NUL byte", path);
        return NULL;
    }
    return schema_sval(n);
}

void schema_each_str(schema_ctx_t *c, const yaml_node_t *list, const char *path, schema_item_fn fn,
                     void *obj)
{
    for (size_t i = 0; i < schema_list_len(list); i++) {
        const yaml_node_t *it = schema_list_item(c, list, i);
        char p[SCHEMA_PATH_BYTES];
        schema_path_index(p, path, i);
        const char *s = schema_str(c, it, p);
        if (s)
            fn(c, it, p, i, s, obj);
    }
}

/* ------------------------------------------------------------------ arena */

void *schema_alloc_array(schema_ctx_t *c, size_t n, size_t size)
{
    if (n == 0 || size > SIZE_MAX / n) {
        c->oom = c->oom || n != 0;
        return NULL;
    }
    void *p = arena_alloc(c->arena, n * size);
    if (!p)
        c->oom = true;
    return p;
}

char *schema_strndup(schema_ctx_t *c, const char *s, size_t len)
{
    char *p = arena_strndup(c->arena, s, len);
    if (!p)
        c->oom = true;
    return p;
}

char *schema_strdup(schema_ctx_t *c, const char *s) { return schema_strndup(c, s, strlen(s)); }

char *schema_strdup_lower(schema_ctx_t *c, const char *s, size_t len)
{
    char *p = schema_strndup(c, s, len);
    for (size_t i = 0; p && i < len; i++) {
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (char)(p[i] | 0x20);
    }
    return p;
}

/* ------------------------------------------------------------- the rows */

size_t schema_row_of(const schema_row_t *tab, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tab[i].key, key) == 0)
            return i;
    }
    return SCHEMA_MAX_ROWS - 1; /* never: every caller names a row of its table */
}

const char *schema_key_str(schema_ctx_t *c, const yaml_node_t *map, size_t i, const char *path)
{
    const yaml_node_t *k = schema_map_key(c, map, i);
    if (k->type != YAML_SCALAR_NODE) {
        schema_err(c, k, "%s: keys must be strings, got %s", *path ? path : "top level",
                   schema_kind_name(k));
        return NULL;
    }
    if (memchr(schema_sval(k), '\0', schema_slen(k))) {
        char p[SCHEMA_PATH_BYTES];
        schema_path_key(p, path, schema_sval(k), schema_slen(k));
        schema_err(c, k, "%s: key contains a NUL byte", p);
        return NULL;
    }
    return schema_sval(k);
}

static size_t edit_distance(const char *a, size_t al, const char *b, size_t bl)
{
    size_t row[33];
    if (al > 32 || bl > 32)
        return SIZE_MAX;
    for (size_t j = 0; j <= bl; j++)
        row[j] = j;
    for (size_t i = 1; i <= al; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= bl; j++) {
            size_t up = row[j];
            size_t best = diag + ((a[i - 1] | 0x20) != (b[j - 1] | 0x20));
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[bl];
}

static void unknown_key(schema_ctx_t *c, const yaml_node_t *k, const char *path,
                        const schema_row_t *tab, size_t n)
{
    char p[SCHEMA_PATH_BYTES];
    schema_path_key(p, path, schema_sval(k), schema_slen(k));
    if (strcmp(schema_sval(k), "<<") == 0) {
        schema_err(c, k, "%s: YAML merge keys are not supported; write the keys out", p);
        return;
    }
    const char *best = NULL;
    size_t best_d = 3; /* a typo is at most two edits away */
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(schema_sval(k), schema_slen(k), tab[i].key, strlen(tab[i].key));
        if (d < best_d && d < strlen(tab[i].key)) {
            best = tab[i].key;
            best_d = d;
        }
    }
    if (best)
        schema_err(c, k, "%s: unknown key (did you mean \"%s\"?)", p, best);
    else
        schema_err(c, k, "%s: unknown key", p);
}

/* A quantity with a unit: how it is read and written, and its words. */
typedef struct unit {
    const char *what, *low, *high; /* "duration", "too short", "too long" */
    int (*parse)(const char *s, uint64_t *out, const char **why);
    size_t (*format)(uint64_t v, char *buf, size_t n);
} unit_t;

static const unit_t duration_unit = {"duration", "too short", "too long", units_parse_duration_ms,
                                     units_format_duration};
static const unit_t size_unit = {"size", "too small", "too large", units_parse_size,
                                 units_format_size};

static bool get_quantity(schema_ctx_t *c, const unit_t *u, const yaml_node_t *v, const char *path,
                         uint64_t min, uint64_t max, uint64_t *out)
{
    const char *s = schema_str(c, v, path);
    if (!s)
        return false;
    schema_quote_t q;
    char lim[32];
    uint64_t n;
    const char *why;
    if (u->parse(s, &n, &why) != 0) {
        schema_err(c, v, "%s: invalid %s %s (%s)", path, u->what, schema_qnode(&q, v), why);
        return false;
    }
    if (n < min || n > max) {
        u->format(n < min ? min : max, lim, sizeof lim);
        schema_err(c, v, "%s: %s is %s (the %s is %s)", path, schema_qnode(&q, v),
                   n < min ? u->low : u->high, n < min ? "minimum" : "maximum", lim);
        return false;
    }
    *out = n;
    return true;
}

static bool get_uint(schema_ctx_t *c, const yaml_node_t *v, const char *path, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    const char *s = schema_str(c, v, path);
    if (!s)
        return false;
    schema_quote_t q;
    const char *why;
    int rc = units_parse_uint(s, min, max, out, &why);
    if (rc == FE_TOOBIG)
        schema_err(c, v, "%s: %s is out of range (%llu to %llu)", path, schema_qnode(&q, v),
                   (unsigned long long)min, (unsigned long long)max);
    else if (rc != 0)
        schema_err(c, v, "%s: expected a whole number from %llu to %llu, got %s", path,
                   (unsigned long long)min, (unsigned long long)max, schema_qnode(&q, v));
    return rc == 0;
}

static void set_default(schema_ctx_t *c, const schema_row_t *f, const char *path, void *obj)
{
    char *at = (char *)obj + f->off;
    switch (f->kind) {
    case SCHEMA_DURATION:
    case SCHEMA_SIZE:
        *(uint64_t *)(void *)at = f->def;
        break;
    case SCHEMA_UINT:
        *(uint32_t *)(void *)at = (uint32_t)f->def;
        break;
    case SCHEMA_BOOL:
        *(bool *)(void *)at = f->def != 0;
        break;
    case SCHEMA_RATIO:
        *(double *)(void *)at = f->def_ratio;
        break;
    case SCHEMA_STRING:
        *(char **)(void *)at = f->def_str ? schema_strdup(c, f->def_str) : NULL;
        break;
    case SCHEMA_TABLE: {
        schema_seen_t seen;
        if (f->has)
            *(bool *)((char *)obj + f->has_off) = false;
        schema_apply(c, NULL, NULL, path, f->sub, f->n_sub, at, &seen);
        break;
    }
    case SCHEMA_CUSTOM:
        f->fn(c, NULL, NULL, path, obj);
        break;
    case SCHEMA_NONE:
    case SCHEMA_RAW:
    case SCHEMA_UNSUPPORTED:
        break;
    }
}

static void parse_field(schema_ctx_t *c, const schema_row_t *f, const yaml_node_t *k,
                        const yaml_node_t *v, const char *path, void *obj)
{
    char *at = (char *)obj + f->off;
    schema_quote_t q;
    if (f->kind == SCHEMA_CUSTOM) {
        f->fn(c, k, v, path, obj);
        return;
    }
    if (f->kind == SCHEMA_TABLE) {
        schema_seen_t seen;
        if (f->has)
            *(bool *)((char *)obj + f->has_off) = true;
        schema_apply(c, v, v, path, f->sub, f->n_sub, at, &seen);
        return;
    }
    /* The default first: a bad value still leaves a sane object behind. */
    set_default(c, f, path, obj);
    switch (f->kind) {
    case SCHEMA_DURATION:
        get_quantity(c, &duration_unit, v, path, f->min, f->max, (uint64_t *)(void *)at);
        break;
    case SCHEMA_SIZE:
        get_quantity(c, &size_unit, v, path, f->min, f->max, (uint64_t *)(void *)at);
        break;
    case SCHEMA_UINT: {
        uint64_t u;
        if (get_uint(c, v, path, f->min, f->max, &u))
            *(uint32_t *)(void *)at = (uint32_t)u;
        break;
    }
    case SCHEMA_BOOL: {
        const char *s = schema_str(c, v, path);
        if (s && units_parse_bool(s, (bool *)(void *)at) != 0)
            schema_err(c, v, "%s: expected true or false, got %s", path, schema_qnode(&q, v));
        break;
    }
    case SCHEMA_RATIO: {
        const char *s = schema_str(c, v, path);
        double d;
        if (s && (units_parse_decimal(s, &d) != 0 || d > 1.0))
            schema_err(c, v, "%s: expected a number from 0 to 1, got %s", path,
                       schema_qnode(&q, v));
        else if (s)
            *(double *)(void *)at = d;
        break;
    }
    case SCHEMA_STRING: {
        const char *s = schema_str(c, v, path);
        if (s && !*s)
            schema_err(c, v, "%s: must not be empty", path);
        else if (s)
            *(char **)(void *)at = schema_strdup(c, s);
        break;
    }
    default:
        break;
    }
}

/* Where a restart-only key is written, so that a reload refusing a change
 * can point at it. */
static void note_restart_key(schema_ctx_t *c, const char *path, const yaml_node_t *k)
{
    config_key_pos_t *pos = schema_alloc_array(c, 1, sizeof *pos);
    if (!pos)
        return;
    pos->key = schema_strdup(c, path);
    pos->line = k->start_mark.line + 1;
    pos->col = k->start_mark.column + 1;
    pos->next = c->key_pos;
    c->key_pos = pos;
}

void schema_apply(schema_ctx_t *c, const yaml_node_t *map, const yaml_node_t *at, const char *path,
                  const schema_row_t *tab, size_t n, void *obj, schema_seen_t *seen)
{
    memset(seen, 0, sizeof *seen);
    if (map && schema_is_null(map))
        map = NULL;
    if (map && !schema_want(c, map, YAML_MAPPING_NODE, path)) {
        /* One error is enough: no "missing key" for a mapping not there. */
        map = NULL;
        at = NULL;
    }
    for (size_t i = 0; map && i < schema_map_len(map); i++) {
        const yaml_node_t *k = schema_map_key(c, map, i);
        const char *name = schema_key_str(c, map, i, path);
        if (!name)
            continue;
        size_t f = 0;
        while (f < n && (strlen(tab[f].key) != schema_slen(k) ||
                         memcmp(tab[f].key, name, schema_slen(k)) != 0))
            f++;
        if (f == n) {
            unknown_key(c, k, path, tab, n);
            continue;
        }
        if (seen->key[f]) {
            char p[SCHEMA_PATH_BYTES];
            schema_path_key(p, path, name, schema_slen(k));
            schema_err(c, k, "%s: duplicate key (first at line %zu)", p,
                       (size_t)seen->key[f]->start_mark.line + 1);
            continue;
        }
        const yaml_node_t *v = schema_map_value(c, map, i);
        seen->key[f] = k;
        seen->val[f] = schema_is_null(v) ? NULL : v;
    }
    for (size_t f = 0; f < n; f++) {
        char p[SCHEMA_PATH_BYTES];
        schema_path_key(p, path, tab[f].key, strlen(tab[f].key));
        if (seen->key[f] && tab[f].restart)
            note_restart_key(c, p, seen->key[f]);
        if (tab[f].kind == SCHEMA_UNSUPPORTED) {
            if (seen->key[f])
                schema_err(c, seen->key[f], "%s: %s is not supported by this version of ficus", p,
                           tab[f].def_str);
            continue;
        }
        if (tab[f].kind == SCHEMA_RAW)
            continue;
        if (seen->val[f]) {
            parse_field(c, &tab[f], seen->key[f], seen->val[f], p, obj);
        } else if (!tab[f].required) {
            set_default(c, &tab[f], p, obj);
        } else if (seen->key[f]) {
            schema_err(c, seen->key[f], "%s: needs a value", p);
        } else if (at) {
            schema_err(c, at, "%s: required key is missing", p);
        }
    }
}

/* ------------------------------------------------------ walks over values */

static const void *value_at(const void *obj, size_t off) { return (const char *)obj + off; }

/* Whether row f holds the same value in a and b. A row the walk cannot
 * read (no value kind, no ROW_SAME) compares equal. */
static bool same_value(const schema_row_t *f, const void *a, const void *b)
{
    if (f->same)
        return f->same(a, b);
    const void *x = value_at(a, f->off), *y = value_at(b, f->off);
    switch (f->value) {
    case SCHEMA_DURATION:
    case SCHEMA_SIZE:
        return *(const uint64_t *)x == *(const uint64_t *)y;
    case SCHEMA_UINT:
        return *(const uint32_t *)x == *(const uint32_t *)y;
    case SCHEMA_BOOL:
        return *(const bool *)x == *(const bool *)y;
    case SCHEMA_RATIO:
        return *(const double *)x == *(const double *)y;
    case SCHEMA_STRING: {
        const char *s = *(char *const *)x, *t = *(char *const *)y;
        return s == t || (s && t && strcmp(s, t) == 0);
    }
    default:
        return true;
    }
}

const char *schema_restart_diff(const schema_row_t *tab, size_t n, const void *a, const void *b,
                                const char *path, char *out)
{
    for (size_t i = 0; i < n; i++) {
        const schema_row_t *f = &tab[i];
        if (f->kind == SCHEMA_TABLE) {
            char p[SCHEMA_PATH_BYTES];
            schema_path_key(p, path, f->key, strlen(f->key));
            const char *key = schema_restart_diff(f->sub, f->n_sub, value_at(a, f->off),
                                                  value_at(b, f->off), p, out);
            if (key)
                return key;
        } else if (f->restart && !same_value(f, a, b)) {
            schema_path_key(out, path, f->key, strlen(f->key));
            return out;
        }
    }
    return NULL;
}

static json_t *value_json(const schema_row_t *f, const void *obj, const void *root)
{
    const void *x = value_at(obj, f->off);
    char out[32];
    if (f->json)
        return f->json(f, obj, root);
    if (f->kind == SCHEMA_TABLE) {
        if (f->has && !*(const bool *)value_at(obj, f->has_off))
            return NULL;
        return schema_json(f->sub, f->n_sub, x, root);
    }
    switch (f->value) {
    case SCHEMA_DURATION: /* as a file writes it: "250ms", "5s", "2m"; 0 is "0s" */
        units_format_duration(*(const uint64_t *)x, out, sizeof out);
        return json_string(out);
    case SCHEMA_SIZE: { /* KiB/MiB/GiB when exact, else a number */
        size_t len = units_format_size(*(const uint64_t *)x, out, sizeof out);
        if (len && out[len - 1] != 'B')
            return json_integer((json_int_t) * (const uint64_t *)x);
        return json_string(out);
    }
    case SCHEMA_UINT:
        return json_integer((json_int_t) * (const uint32_t *)x);
    case SCHEMA_BOOL:
        return json_boolean(*(const bool *)x);
    case SCHEMA_RATIO:
        return json_real(*(const double *)x);
    case SCHEMA_STRING: {
        const char *s = *(char *const *)x;
        return s ? json_string(s) : f->omit_null ? NULL : json_null();
    }
    default:
        return NULL;
    }
}

json_t *schema_json(const schema_row_t *tab, size_t n, const void *obj, const void *root)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++) {
        json_t *v = value_json(&tab[i], obj, root);
        if (v && json_object_set_new(o, tab[i].key, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *schema_json_array(const schema_row_t *tab, size_t n, const void *items, size_t size,
                          size_t count, const void *root)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < count; i++)
        json_array_append_new(a, schema_json(tab, n, (const char *)items + i * size, root));
    return a;
}

json_t *schema_json_named(const schema_row_t *tab, size_t n, const void *items, size_t size,
                          size_t count, size_t name_off, const void *root)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < count; i++) {
        const void *item = (const char *)items + i * size;
        json_object_set_new(o, *(char *const *)value_at(item, name_off),
                            schema_json(tab, n, item, root));
    }
    return o;
}

json_t *schema_json_strings(const void *items, size_t size, size_t count, size_t str_off)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < count; i++)
        json_array_append_new(
            a, json_string(*(char *const *)value_at((const char *)items + i * size, str_off)));
    return a;
}
