/* The configuration loader: YAML (libyaml's document API, which keeps each
 * node's line and column) -> a validated, immutable config_t in one arena.
 * Every section is a table with one row per key (type, default, bounds,
 * where it goes) and one walker applies the tables. Errors are collected,
 * never fatal, and handed back sorted in file order. */
#include "config/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#include "config/units.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/url.h"

#define PATH_BYTES 256 /* key paths in messages; longer ones are cut */
#define QUOTE_BYTES 80 /* quoted values in messages; longer ones are cut */
#define MAX_FIELDS 24  /* rows of the largest table */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UNUSED __attribute__((unused)) /* a table callback that needs no key node */

/* ------------------------------------------------------------------ errors */

void config_errors_init(config_errors_t *e)
{
    e->items = NULL;
    e->n = 0;
    e->cap = 0;
}

void config_errors_deinit(config_errors_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->items[i]);
    free(e->items);
    config_errors_init(e);
}

void config_errors_add(config_errors_t *e, const char *file, size_t line, size_t col,
                       const char *fmt, ...)
{
    char *msg = NULL, *full = NULL;
    va_list ap;
    va_start(ap, fmt);
    int w = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (w < 0)
        return;
    /* Line 0 means "the file as a whole" (it could not be read): editors
     * and CI annotations still want a position, so it is 1:1. */
    if (line == 0) {
        line = 1;
        col = 1;
    }
    w = asprintf(&full, "%s:%zu:%zu: %s", file ? file : "<config>", line, col ? col : 1, msg);
    free(msg);
    if (w < 0)
        return;
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 8;
        char **items = realloc(e->items, cap * sizeof *items);
        if (!items) {
            free(full);
            return;
        }
        e->items = items;
        e->cap = cap;
    }
    e->items[e->n++] = full;
}

/* ----------------------------------------------------------- load context */

typedef struct diag {
    size_t line, col, seq;
    char *msg;
} diag_t;

/* Names seen while loading, for duplicate checks and lookups: hashed, so
 * that a large generated file does not make the checks quadratic. */
typedef struct name_slot {
    const char *s; /* NULL: free */
    size_t len;
    size_t value; /* an index into what the names name */
    size_t line;  /* where the name was written */
} name_slot_t;

typedef struct name_set {
    name_slot_t *slots;
    size_t cap; /* a power of two, at least twice the names added */
    bool nocase;
} name_set_t;

typedef struct ctx {
    const char *file;
    yaml_document_t *doc;
    config_t *cfg;
    diag_t *diags;
    size_t n_diags, cap_diags;
    bool oom;
    bool muted; /* after "too many values": the rest would be noise */
    /* Lists and mappings may still be walked: YAML aliases can make a small
     * file expand without end (a "billion laughs"). */
    size_t values_left, values_max;
    name_set_t groups, sets, route_names;
    /* The route being read: some of its keys depend on its match. */
    config_route_t *route;
    bool match_known;    /* route->match.kind is final */
    bool captures_known; /* route->match.n_captures is final */
} ctx_t;

static void vdiag(ctx_t *c, size_t line, size_t col, const char *fmt, va_list ap)
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
        diag_t *d = realloc(c->diags, cap * sizeof *d);
        if (!d) {
            free(msg);
            c->oom = true;
            return;
        }
        c->diags = d;
        c->cap_diags = cap;
    }
    c->diags[c->n_diags] = (diag_t){line, col, c->n_diags, msg};
    c->n_diags++;
}

static void err_pos(ctx_t *c, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_pos(ctx_t *c, size_t line, size_t col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(c, line, col, fmt, ap);
    va_end(ap);
}

/* An error at the first character of node n (1:1 without a node). */
static void err(ctx_t *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err(ctx_t *c, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdiag(c, n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1, fmt, ap);
    va_end(ap);
}

static int diag_cmp(const void *a, const void *b)
{
    const diag_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Hands the errors over in file order. A node reached through several YAML
 * aliases is checked once per alias: its identical errors are shown once. */
static void diags_flush(ctx_t *c, config_errors_t *errs)
{
    if (c->n_diags)
        qsort(c->diags, c->n_diags, sizeof *c->diags, diag_cmp);
    for (size_t i = 0; i < c->n_diags; i++) {
        const diag_t *d = &c->diags[i];
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

static const yaml_node_t *node_at(ctx_t *c, int id) { return yaml_document_get_node(c->doc, id); }

static size_t list_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static const yaml_node_t *list_item(ctx_t *c, const yaml_node_t *n, size_t i)
{
    return node_at(c, n->data.sequence.items.start[i]);
}

static size_t map_len(const yaml_node_t *n)
{
    return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
}

static const yaml_node_t *map_key(ctx_t *c, const yaml_node_t *n, size_t i)
{
    return node_at(c, n->data.mapping.pairs.start[i].key);
}

static const yaml_node_t *map_value(ctx_t *c, const yaml_node_t *n, size_t i)
{
    return node_at(c, n->data.mapping.pairs.start[i].value);
}

static const char *sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static size_t slen(const yaml_node_t *n) { return n->data.scalar.length; }

/* YAML's null: an empty plain value ("key:"), "~" or null. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = sval(n);
    switch (slen(n)) {
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

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return is_null(n) ? "nothing" : "a string";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

typedef struct qbuf {
    char s[QUOTE_BYTES];
} qbuf_t;

/* s as a double-quoted, escaped, length-capped string for a message. */
static const char *quote(qbuf_t *b, const char *s, size_t len)
{
    const size_t lim = QUOTE_BYTES - 5; /* room for "...", the quote, the NUL */
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

static const char *qnode(qbuf_t *b, const yaml_node_t *n) { return quote(b, sval(n), slen(n)); }

static const char *qstr(qbuf_t *b, const char *s) { return quote(b, s, strlen(s)); }

/* Key paths ("routes[2].retries.attempts") for messages; user-written keys
 * in them get their control characters replaced. */
static void path_append(char *out, size_t *o, const char *s, size_t len)
{
    for (size_t i = 0; i < len && *o + 1 < PATH_BYTES; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[(*o)++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    out[*o] = '\0';
}

static void path_key(char *out, const char *parent, const char *key, size_t keylen)
{
    size_t o = 0;
    out[0] = '\0';
    if (parent && *parent) {
        path_append(out, &o, parent, strlen(parent));
        path_append(out, &o, ".", 1);
    }
    path_append(out, &o, key, keylen);
}

static void path_index(char *out, const char *parent, size_t i)
{
    char idx[32];
    int w = snprintf(idx, sizeof idx, "[%zu]", i);
    size_t o = 0;
    out[0] = '\0';
    path_append(out, &o, parent, strlen(parent));
    path_append(out, &o, idx, w > 0 ? (size_t)w : 0);
}

static bool want(ctx_t *c, const yaml_node_t *n, yaml_node_type_t type, const char *path)
{
    if (n->type == type && type == YAML_SCALAR_NODE)
        return true;
    if (n->type == type) {
        size_t len = type == YAML_SEQUENCE_NODE ? list_len(n) : map_len(n);
        if (c->muted)
            return false;
        if (len > c->values_left) {
            err(c, n,
                "%s: the configuration expands to more than %zu values; do YAML aliases repeat a "
                "large part of it?",
                path, c->values_max);
            c->muted = true;
            return false;
        }
        c->values_left -= len;
        return true;
    }
    err(c, n, "%s: expected %s, got %s", path,
        type == YAML_MAPPING_NODE    ? "a mapping"
        : type == YAML_SEQUENCE_NODE ? "a list"
                                     : "a string",
        kind_name(n));
    return false;
}

/* The scalar's text; NULL (and an error) for a list, a mapping or text
 * with a NUL byte, which C strings would silently cut. */
static const char *str(ctx_t *c, const yaml_node_t *n, const char *path)
{
    if (!want(c, n, YAML_SCALAR_NODE, path))
        return NULL;
    if (memchr(sval(n), '\0', slen(n))) {
        err(c, n, "%s: contains a NUL byte", path);
        return NULL;
    }
    return sval(n);
}

/* ------------------------------------------------------------------ arena */

static void *alloc_array(ctx_t *c, size_t n, size_t size)
{
    if (n == 0 || size > SIZE_MAX / n) {
        c->oom = c->oom || n != 0;
        return NULL;
    }
    void *p = arena_alloc(&c->cfg->arena, n * size);
    if (!p)
        c->oom = true;
    return p;
}

static char *sdup_n(ctx_t *c, const char *s, size_t len)
{
    char *p = arena_strndup(&c->cfg->arena, s, len);
    if (!p)
        c->oom = true;
    return p;
}

static char *sdup(ctx_t *c, const char *s) { return sdup_n(c, s, strlen(s)); }

static char *sdup_lower(ctx_t *c, const char *s, size_t len)
{
    char *p = sdup_n(c, s, len);
    for (size_t i = 0; p && i < len; i++) {
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (char)(p[i] | 0x20);
    }
    return p;
}

/* ----------------------------------------------------------- value checks */

static bool is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* Route, target group and set names: [A-Za-z0-9][A-Za-z0-9_.-]* */
static bool valid_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > CONFIG_MAX_NAME_BYTES || !is_alnum(s[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    }
    return true;
}

static const char name_rule[] =
    "use letters, digits, '_', '.' and '-', starting with a letter or digit";

/* An HTTP token (RFC 9110 tchar): header names, cookie names. */
static bool valid_token(const char *s, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_alnum(s[i]) && (s[i] == '\0' || !strchr(extra, s[i])))
            return false;
    }
    return true;
}

/* A DNS name as written in a target or a host match (no port). */
static bool valid_hostname(const char *s, size_t len)
{
    if (len == 0 || len > 253 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
            return false;
        if (s[i] == '.' && i + 1 < len && s[i + 1] == '.')
            return false;
    }
    return true;
}

/* A request path: '/' first, no space or control character; a query only
 * where a backend path template may carry one. */
static bool check_path(ctx_t *c, const yaml_node_t *v, const char *path, const char *s,
                       bool query_ok)
{
    qbuf_t q;
    if (s[0] != '/') {
        err(c, v, "%s: must start with '/', got %s", path, qstr(&q, s));
        return false;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            err(c, v, "%s: %s contains a space or a control character", path, qstr(&q, s));
            return false;
        }
        if (*p == '?' && !query_ok) {
            err(c, v, "%s: %s contains '?' (the query is not part of the matched path)", path,
                qstr(&q, s));
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------- the tables */

typedef enum {
    F_DURATION,   /* uint64_t milliseconds */
    F_SIZE,       /* uint64_t bytes */
    F_UINT,       /* uint32_t */
    F_BOOL,       /* bool */
    F_RATIO,      /* double in [0, 1] */
    F_STRING,     /* char *, not empty */
    F_CUSTOM,     /* fn reads it; called with val NULL to set the default */
    F_RAW,        /* the caller reads it from the seen_t */
    F_UNSUPPORTED /* a contract key of a feature this version lacks */
} field_kind_t;

/* key/val are NULL when the key is absent (or null): fn sets the default. */
typedef void (*field_fn)(ctx_t *c, const yaml_node_t *key, const yaml_node_t *val, const char *path,
                         void *obj);

typedef struct field {
    const char *key;
    field_kind_t kind;
    size_t off; /* where it goes in the table's object */
    uint64_t def, min, max;
    double def_ratio;
    const char *def_str; /* F_STRING default; F_UNSUPPORTED: the feature */
    field_fn fn;
    bool required;
} field_t;

/* One row kind per line; clang-format would spread each over four. */
/* clang-format off */
#define ROW_DURATION(k, T, m, d, lo, hi) \
    {.key = k, .kind = F_DURATION, .off = offsetof(T, m), .def = d, .min = lo, .max = hi}
#define ROW_SIZE(k, T, m, d, lo, hi) \
    {.key = k, .kind = F_SIZE, .off = offsetof(T, m), .def = d, .min = lo, .max = hi}
#define ROW_UINT(k, T, m, d, lo, hi) \
    {.key = k, .kind = F_UINT, .off = offsetof(T, m), .def = d, .min = lo, .max = hi}
#define ROW_UINT_REQ(k, T, m, lo, hi) \
    {.key = k, .kind = F_UINT, .off = offsetof(T, m), .min = lo, .max = hi, .required = true}
#define ROW_BOOL(k, T, m, d) {.key = k, .kind = F_BOOL, .off = offsetof(T, m), .def = d}
#define ROW_RATIO(k, T, m, d) {.key = k, .kind = F_RATIO, .off = offsetof(T, m), .def_ratio = d}
#define ROW_STRING(k, T, m, d) {.key = k, .kind = F_STRING, .off = offsetof(T, m), .def_str = d}
#define ROW_STRING_REQ(k, T, m) \
    {.key = k, .kind = F_STRING, .off = offsetof(T, m), .required = true}
#define ROW_CUSTOM(k, f) {.key = k, .kind = F_CUSTOM, .fn = f}
#define ROW_CUSTOM_REQ(k, f) {.key = k, .kind = F_CUSTOM, .fn = f, .required = true}
#define ROW_RAW(k) {.key = k, .kind = F_RAW}
#define ROW_UNSUPPORTED(k, feature) {.key = k, .kind = F_UNSUPPORTED, .def_str = feature}
/* clang-format on */

/* What apply_table() found: key and value node per row (value NULL when
 * absent or null). */
typedef struct seen {
    const yaml_node_t *key[MAX_FIELDS];
    const yaml_node_t *val[MAX_FIELDS];
} seen_t;

static size_t row_of(const field_t *tab, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tab[i].key, key) == 0)
            return i;
    }
    return MAX_FIELDS - 1; /* never: every caller names a row of its table */
}

#define SEEN_VAL(tab, s, k) ((s).val[row_of(tab, ARRAY_LEN(tab), k)])
#define SEEN_KEY(tab, s, k) ((s).key[row_of(tab, ARRAY_LEN(tab), k)])

static void names_init(ctx_t *c, name_set_t *set, size_t n, bool nocase)
{
    set->cap = 16;
    while (set->cap < 2 * n)
        set->cap *= 2;
    set->nocase = nocase;
    set->slots = calloc(set->cap, sizeof *set->slots);
    if (!set->slots) {
        set->cap = 0;
        c->oom = true;
    }
}

static void names_free(name_set_t *set)
{
    free(set->slots);
    set->slots = NULL;
    set->cap = 0;
}

/* The slot holding s, or the free slot where it belongs; NULL without a
 * table. */
static name_slot_t *names_slot(const name_set_t *set, const char *s, size_t len)
{
    if (set->cap == 0)
        return NULL;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (set->nocase && ch >= 'A' && ch <= 'Z')
            ch = (unsigned char)(ch | 0x20);
        h = (h ^ ch) * 1099511628211ull;
    }
    for (size_t i = (size_t)h & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        name_slot_t *slot = &set->slots[i];
        if (!slot->s || (slot->len == len && (set->nocase ? strncasecmp(slot->s, s, len) == 0
                                                          : memcmp(slot->s, s, len) == 0)))
            return slot;
    }
}

/* Adds s (written at node at) -> value. Returns the earlier equal name,
 * and adds nothing then; else NULL. At most the n given to names_init. */
static const name_slot_t *names_add(name_set_t *set, const char *s, size_t len, size_t value,
                                    const yaml_node_t *at)
{
    name_slot_t *slot = names_slot(set, s, len);
    if (!slot || slot->s)
        return slot;
    slot->s = s;
    slot->len = len;
    slot->value = value;
    slot->line = at ? at->start_mark.line + 1 : 1;
    return NULL;
}

static size_t names_find(const name_set_t *set, const char *s)
{
    const name_slot_t *slot = names_slot(set, s, strlen(s));
    return slot && slot->s ? slot->value : CONFIG_NONE;
}

/* The i-th key of map as a string; NULL (with an error) when it is not one. */
static const char *key_str(ctx_t *c, const yaml_node_t *map, size_t i, const char *path)
{
    const yaml_node_t *k = map_key(c, map, i);
    if (k->type != YAML_SCALAR_NODE) {
        err(c, k, "%s: keys must be strings, got %s", *path ? path : "top level", kind_name(k));
        return NULL;
    }
    if (memchr(sval(k), '\0', slen(k))) {
        char p[PATH_BYTES];
        path_key(p, path, sval(k), slen(k));
        err(c, k, "%s: key contains a NUL byte", p);
        return NULL;
    }
    return sval(k);
}

/* key_str() for a mapping of user-chosen keys (names, header names), whose
 * repeats are errors: names holds the keys so far and gets this one, with
 * value. */
static const char *key_unique(ctx_t *c, const yaml_node_t *map, size_t i, const char *path,
                              name_set_t *names, size_t value)
{
    const char *name = key_str(c, map, i, path);
    if (!name)
        return NULL;
    const yaml_node_t *k = map_key(c, map, i);
    const name_slot_t *first = names_add(names, name, slen(k), value, k);
    if (!first)
        return name;
    char p[PATH_BYTES];
    path_key(p, path, name, slen(k));
    err(c, k, "%s: duplicate key (first at line %zu)", p, first->line);
    return NULL;
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

static void unknown_key(ctx_t *c, const yaml_node_t *k, const char *path, const field_t *tab,
                        size_t n)
{
    char p[PATH_BYTES];
    path_key(p, path, sval(k), slen(k));
    if (strcmp(sval(k), "<<") == 0) {
        err(c, k, "%s: YAML merge keys are not supported; write the keys out", p);
        return;
    }
    const char *best = NULL;
    size_t best_d = 3; /* a typo is at most two edits away */
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(sval(k), slen(k), tab[i].key, strlen(tab[i].key));
        if (d < best_d && d < strlen(tab[i].key)) {
            best = tab[i].key;
            best_d = d;
        }
    }
    if (best)
        err(c, k, "%s: unknown key (did you mean \"%s\"?)", p, best);
    else
        err(c, k, "%s: unknown key", p);
}

static bool get_duration(ctx_t *c, const yaml_node_t *v, const char *path, uint64_t min,
                         uint64_t max, uint64_t *out)
{
    const char *s = str(c, v, path);
    if (!s)
        return false;
    qbuf_t q;
    char lim[32];
    uint64_t ms;
    const char *why;
    if (units_parse_duration_ms(s, &ms, &why) != 0) {
        err(c, v, "%s: invalid duration %s (%s)", path, qnode(&q, v), why);
        return false;
    }
    if (ms < min) {
        units_format_duration(min, lim, sizeof lim);
        err(c, v, "%s: %s is too short (the minimum is %s)", path, qnode(&q, v), lim);
        return false;
    }
    if (ms > max) {
        units_format_duration(max, lim, sizeof lim);
        err(c, v, "%s: %s is too long (the maximum is %s)", path, qnode(&q, v), lim);
        return false;
    }
    *out = ms;
    return true;
}

static bool get_size(ctx_t *c, const yaml_node_t *v, const char *path, uint64_t min, uint64_t max,
                     uint64_t *out)
{
    const char *s = str(c, v, path);
    if (!s)
        return false;
    qbuf_t q;
    char lim[32];
    uint64_t bytes;
    const char *why;
    if (units_parse_size(s, &bytes, &why) != 0) {
        err(c, v, "%s: invalid size %s (%s)", path, qnode(&q, v), why);
        return false;
    }
    if (bytes < min) {
        units_format_size(min, lim, sizeof lim);
        err(c, v, "%s: %s is too small (the minimum is %s)", path, qnode(&q, v), lim);
        return false;
    }
    if (bytes > max) {
        units_format_size(max, lim, sizeof lim);
        err(c, v, "%s: %s is too large (the maximum is %s)", path, qnode(&q, v), lim);
        return false;
    }
    *out = bytes;
    return true;
}

static bool get_uint(ctx_t *c, const yaml_node_t *v, const char *path, uint64_t min, uint64_t max,
                     uint64_t *out)
{
    const char *s = str(c, v, path);
    if (!s)
        return false;
    qbuf_t q;
    const char *why;
    int rc = units_parse_uint(s, min, max, out, &why);
    if (rc == FE_TOOBIG)
        err(c, v, "%s: %s is out of range (%llu to %llu)", path, qnode(&q, v),
            (unsigned long long)min, (unsigned long long)max);
    else if (rc != 0)
        err(c, v, "%s: expected a whole number from %llu to %llu, got %s", path,
            (unsigned long long)min, (unsigned long long)max, qnode(&q, v));
    return rc == 0;
}

static void set_default(ctx_t *c, const field_t *f, const char *path, void *obj)
{
    char *at = (char *)obj + f->off;
    switch (f->kind) {
    case F_DURATION:
    case F_SIZE:
        *(uint64_t *)(void *)at = f->def;
        break;
    case F_UINT:
        *(uint32_t *)(void *)at = (uint32_t)f->def;
        break;
    case F_BOOL:
        *(bool *)(void *)at = f->def != 0;
        break;
    case F_RATIO:
        *(double *)(void *)at = f->def_ratio;
        break;
    case F_STRING:
        *(char **)(void *)at = f->def_str ? sdup(c, f->def_str) : NULL;
        break;
    case F_CUSTOM:
        f->fn(c, NULL, NULL, path, obj);
        break;
    case F_RAW:
    case F_UNSUPPORTED:
        break;
    }
}

static void parse_field(ctx_t *c, const field_t *f, const yaml_node_t *k, const yaml_node_t *v,
                        const char *path, void *obj)
{
    char *at = (char *)obj + f->off;
    qbuf_t q;
    if (f->kind == F_CUSTOM) {
        f->fn(c, k, v, path, obj);
        return;
    }
    /* The default first: a bad value still leaves a sane object behind. */
    set_default(c, f, path, obj);
    switch (f->kind) {
    case F_DURATION:
        get_duration(c, v, path, f->min, f->max, (uint64_t *)(void *)at);
        break;
    case F_SIZE:
        get_size(c, v, path, f->min, f->max, (uint64_t *)(void *)at);
        break;
    case F_UINT: {
        uint64_t u;
        if (get_uint(c, v, path, f->min, f->max, &u))
            *(uint32_t *)(void *)at = (uint32_t)u;
        break;
    }
    case F_BOOL: {
        const char *s = str(c, v, path);
        if (s && units_parse_bool(s, (bool *)(void *)at) != 0)
            err(c, v, "%s: expected true or false, got %s", path, qnode(&q, v));
        break;
    }
    case F_RATIO: {
        const char *s = str(c, v, path);
        double d;
        if (s && (units_parse_decimal(s, &d) != 0 || d > 1.0))
            err(c, v, "%s: expected a number from 0 to 1, got %s", path, qnode(&q, v));
        else if (s)
            *(double *)(void *)at = d;
        break;
    }
    case F_STRING: {
        const char *s = str(c, v, path);
        if (s && !*s)
            err(c, v, "%s: must not be empty", path);
        else if (s)
            *(char **)(void *)at = sdup(c, s);
        break;
    }
    default:
        break;
    }
}

/* Applies table tab to mapping map (NULL: absent, so only defaults) into
 * obj: unknown, duplicate and unsupported keys are errors; a missing
 * required key is reported at `at`. Rows are applied in table order, so a
 * row may rely on the rows above it. */
const char *const config_restart_keys[CONFIG_RESTART_KEYS] = {
    "server.listen",          "server.workers",        "server.max_connections",
    "server.max_header_size", "server.control_socket", "admin.listen",
    "access_log.path",        "tracing.otlp_endpoint", "tracing.service_name",
};

static void note_key_position(ctx_t *c, const char *path, const yaml_node_t *k)
{
    for (size_t i = 0; i < CONFIG_RESTART_KEYS; i++)
        if (strcmp(path, config_restart_keys[i]) == 0) {
            c->cfg->key_pos[i].key = config_restart_keys[i];
            c->cfg->key_pos[i].line = k->start_mark.line + 1;
            c->cfg->key_pos[i].col = k->start_mark.column + 1;
        }
}

void config_key_position(const config_t *cfg, const char *key, size_t *line, size_t *col)
{
    *line = *col = 0;
    for (size_t i = 0; i < CONFIG_RESTART_KEYS; i++)
        if (strcmp(key, config_restart_keys[i]) == 0) {
            *line = cfg->key_pos[i].line;
            *col = cfg->key_pos[i].col;
        }
}

static void apply_table(ctx_t *c, const yaml_node_t *map, const yaml_node_t *at, const char *path,
                        const field_t *tab, size_t n, void *obj, seen_t *seen)
{
    memset(seen, 0, sizeof *seen);
    if (map && is_null(map))
        map = NULL;
    if (map && !want(c, map, YAML_MAPPING_NODE, path)) {
        /* One error is enough: no "missing key" for a mapping not there. */
        map = NULL;
        at = NULL;
    }
    for (size_t i = 0; map && i < map_len(map); i++) {
        const yaml_node_t *k = map_key(c, map, i);
        const char *name = key_str(c, map, i, path);
        if (!name)
            continue;
        size_t f = 0;
        while (f < n && (strlen(tab[f].key) != slen(k) || memcmp(tab[f].key, name, slen(k)) != 0))
            f++;
        if (f == n) {
            unknown_key(c, k, path, tab, n);
            continue;
        }
        if (seen->key[f]) {
            char p[PATH_BYTES];
            path_key(p, path, name, slen(k));
            err(c, k, "%s: duplicate key (first at line %zu)", p,
                (size_t)seen->key[f]->start_mark.line + 1);
            continue;
        }
        const yaml_node_t *v = map_value(c, map, i);
        seen->key[f] = k;
        seen->val[f] = is_null(v) ? NULL : v;
    }
    for (size_t f = 0; f < n; f++) {
        char p[PATH_BYTES];
        path_key(p, path, tab[f].key, strlen(tab[f].key));
        if (seen->key[f] && c->cfg)
            note_key_position(c, p, seen->key[f]);
        if (tab[f].kind == F_UNSUPPORTED) {
            if (seen->key[f])
                err(c, seen->key[f], "%s: %s is not supported by this version of ficus", p,
                    tab[f].def_str);
            continue;
        }
        if (tab[f].kind == F_RAW)
            continue;
        if (seen->val[f]) {
            parse_field(c, &tab[f], seen->key[f], seen->val[f], p, obj);
        } else if (!tab[f].required) {
            set_default(c, &tab[f], p, obj);
        } else if (seen->key[f]) {
            err(c, seen->key[f], "%s: needs a value", p);
        } else if (at) {
            err(c, at, "%s: required key is missing", p);
        }
    }
}

/* ---------------------------------------------------------------- server */

static bool set_listener(ctx_t *c, const yaml_node_t *v, const char *path, const char *s,
                         config_listener_t *l)
{
    addr_hostport_t hp;
    const char *why;
    qbuf_t q;
    if (addr_split(s, &hp, &why) != 0) {
        err(c, v, "%s: invalid address %s (%s)", path, qstr(&q, s), why);
        return false;
    }
    if (addr_numeric(&hp, &l->addr, &l->addrlen) != 0) {
        err(c, v,
            "%s: %s is not a numeric address (listen on an IP: 0.0.0.0:8080, [::]:8080, or "
            ":8080)",
            path, qstr(&q, s));
        return false;
    }
    l->address = sdup(c, s);
    return l->address != NULL;
}

static void f_listener_address(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                               const char *path, void *obj)
{
    const char *s = str(c, v, path);
    if (s)
        set_listener(c, v, path, s, obj);
}

static const field_t tls_fields[] = {
    ROW_STRING_REQ("cert", config_listener_t, tls_cert),
    ROW_STRING_REQ("key", config_listener_t, tls_key),
};

static void f_listener_tls(ctx_t *c, const yaml_node_t *k, const yaml_node_t *v, const char *path,
                           void *obj)
{
    if (!v)
        return;
    seen_t seen;
    apply_table(c, v, v, path, tls_fields, ARRAY_LEN(tls_fields), obj, &seen);
    /* Accepting it silently would serve plain HTTP where TLS was asked for. */
    err(c, k, "%s: TLS listeners are not supported yet", path);
}

static const field_t listener_fields[] = {
    ROW_CUSTOM_REQ("address", f_listener_address),
    ROW_CUSTOM("tls", f_listener_tls),
};

static void f_listen(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                     void *obj)
{
    config_server_t *s = obj;
    qbuf_t q;
    if (!v) {
        s->listeners = alloc_array(c, 1, sizeof *s->listeners);
        if (s->listeners) {
            s->n_listeners = 1;
            set_listener(c, NULL, path, DEFAULT_LISTEN, &s->listeners[0]);
        }
        return;
    }
    if (!want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = list_len(v);
    if (n == 0) {
        err(c, v, "%s: needs at least one address (omit it to listen on %s)", path, DEFAULT_LISTEN);
        return;
    }
    if (n > MAX_LISTENERS) {
        err(c, v, "%s: at most %d listeners", path, MAX_LISTENERS);
        return;
    }
    s->listeners = alloc_array(c, n, sizeof *s->listeners);
    if (!s->listeners)
        return;
    s->n_listeners = n;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = list_item(c, v, i);
        config_listener_t *l = &s->listeners[i];
        char p[PATH_BYTES];
        path_index(p, path, i);
        if (it->type == YAML_MAPPING_NODE) {
            seen_t seen;
            apply_table(c, it, it, p, listener_fields, ARRAY_LEN(listener_fields), l, &seen);
        } else if (it->type == YAML_SEQUENCE_NODE) {
            err(c, it, "%s: expected an address or {address, tls}, got a list", p);
            continue;
        } else {
            const char *a = str(c, it, p);
            if (!a || !set_listener(c, it, p, a, l))
                continue;
        }
        for (size_t j = 0; j < i && l->addrlen; j++) {
            const config_listener_t *o = &s->listeners[j];
            if (o->addrlen == l->addrlen && memcmp(&o->addr, &l->addr, l->addrlen) == 0) {
                err(c, it, "%s: %s is already in %s[%zu]", p, qstr(&q, l->address), path, j);
                break;
            }
        }
    }
}

static void f_workers(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_server_t *s = obj;
    qbuf_t q;
    if (!v || (v->type == YAML_SCALAR_NODE && strcmp(sval(v), "auto") == 0)) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        s->workers = n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (uint32_t)n;
        return;
    }
    const char *t = str(c, v, path);
    uint64_t w;
    const char *why;
    if (!t)
        return;
    if (units_parse_uint(t, 1, MAX_WORKERS, &w, &why) != 0) {
        err(c, v, "%s: expected auto or a number from 1 to %d, got %s", path, MAX_WORKERS,
            qnode(&q, v));
        return;
    }
    s->workers = (uint32_t)w;
}

static void f_control_socket(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_server_t *s = obj;
    const size_t max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;
    qbuf_t q;
    s->control_socket = NULL;
    const char *t = v ? str(c, v, path) : NULL;
    if (!t || !*t)
        return;
    if (strlen(t) > max) {
        err(c, v, "%s: %s is too long for a Unix socket path (at most %zu bytes)", path,
            qnode(&q, v), max);
        return;
    }
    s->control_socket = sdup(c, t);
}

static void cidr_list(ctx_t *c, const yaml_node_t *v, const char *path, cidr_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!v || !want(c, v, YAML_SEQUENCE_NODE, path) || list_len(v) == 0)
        return;
    cidr_t *arr = alloc_array(c, list_len(v), sizeof *arr);
    if (!arr)
        return;
    for (size_t i = 0; i < list_len(v); i++) {
        const yaml_node_t *it = list_item(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_index(p, path, i);
        const char *s = str(c, it, p);
        if (s && cidr_parse(s, &arr[i]) != 0)
            err(c, it, "%s: invalid CIDR %s (e.g. 10.0.0.0/8, 2001:db8::/32 or one address)", p,
                qnode(&q, it));
    }
    *out = arr;
    *n = list_len(v);
}

static void f_trusted_proxies(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_server_t *s = obj;
    cidr_list(c, v, path, &s->trusted_proxies, &s->n_trusted_proxies);
}

static const field_t server_fields[] = {
    ROW_CUSTOM("listen", f_listen),
    ROW_CUSTOM("workers", f_workers),
    ROW_UINT("max_connections", config_server_t, max_connections, DEFAULT_MAX_CONNECTIONS, 1,
             CONFIG_MAX_COUNT),
    ROW_DURATION("header_timeout", config_server_t, header_timeout_ms, DEFAULT_HEADER_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_DURATION("idle_timeout", config_server_t, idle_timeout_ms, DEFAULT_IDLE_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_SIZE("max_header_size", config_server_t, max_header_bytes, DEFAULT_MAX_HEADER_BYTES,
             CONFIG_MIN_HEADER_BYTES, CONFIG_MAX_HEADER_BYTES),
    ROW_SIZE("max_body_size", config_server_t, max_body_bytes, DEFAULT_MAX_BODY_BYTES, 0,
             UINT64_MAX),
    ROW_SIZE("retry_buffer_size", config_server_t, retry_buffer_bytes, DEFAULT_RETRY_BUFFER_BYTES,
             0, CONFIG_MAX_RETRY_BUFFER_BYTES),
    ROW_DURATION("tunnel_idle_timeout", config_server_t, tunnel_idle_timeout_ms,
                 DEFAULT_TUNNEL_IDLE_TIMEOUT_MS, 1, CONFIG_MAX_DURATION_MS),
    ROW_DURATION("drain_delay", config_server_t, drain_delay_ms, DEFAULT_DRAIN_DELAY_MS, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_DURATION("drain_timeout", config_server_t, drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("control_socket", f_control_socket),
    ROW_CUSTOM("trusted_proxies", f_trusted_proxies),
};

static void sec_server(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_t *cfg = obj;
    seen_t seen;
    apply_table(c, v, v, path, server_fields, ARRAY_LEN(server_fields), &cfg->server, &seen);
}

/* -------------------------------------------- admin, access log, tracing */

static void f_admin_listen(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    config_t *cfg = obj;
    config_listener_t l;
    qbuf_t q;
    memset(&l, 0, sizeof l);
    const char *s = v ? str(c, v, path) : DEFAULT_ADMIN_LISTEN;
    if (!s || !set_listener(c, v, path, s, &l))
        return;
    cfg->admin_listen = l.address;
    cfg->admin_addr = l.addr;
    cfg->admin_addrlen = l.addrlen;
    /* server is read before admin (table order): its listeners are known. */
    for (size_t i = 0; i < cfg->server.n_listeners; i++) {
        const config_listener_t *o = &cfg->server.listeners[i];
        if (o->addrlen == l.addrlen && memcmp(&o->addr, &l.addr, l.addrlen) == 0) {
            err(c, v, "%s: %s is also server.listen[%zu]", path, qstr(&q, s), i);
            break;
        }
    }
}

/* admin.token_env: the bearer token comes from this environment variable,
 * read when the file is loaded (an unset or empty variable is an error:
 * an admin API meant to be protected must not open up silently). */
static void f_admin_token_env(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->admin_token_env = NULL;
    cfg->admin_token = NULL;
    if (!v)
        return;
    const char *s = str(c, v, path);
    if (!s)
        return;
    qbuf_t q;
    if (!valid_token(s, strlen(s))) {
        err(c, v, "%s: %s is not an environment variable name", path, qnode(&q, v));
        return;
    }
    const char *val = getenv(s);
    if (!val || !*val) {
        err(c, v, "%s: the environment variable %s is not set (or empty)", path, qnode(&q, v));
        return;
    }
    cfg->admin_token_env = sdup(c, s);
    cfg->admin_token = sdup(c, val);
}

static const field_t admin_fields[] = {
    ROW_CUSTOM("listen", f_admin_listen),
    ROW_CUSTOM("token_env", f_admin_token_env),
};

static void sec_admin(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    seen_t seen;
    apply_table(c, v, v, path, admin_fields, ARRAY_LEN(admin_fields), obj, &seen);
}

static void f_access_log_path(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->access_log_path = NULL;
    if (!v) {
        cfg->access_log_path = sdup(c, DEFAULT_ACCESS_LOG);
        return;
    }
    const char *s = str(c, v, path);
    if (!s)
        return;
    if (!*s)
        err(c, v, "%s: must not be empty (write off to turn the access log off)", path);
    else if (strcmp(s, "off") != 0)
        cfg->access_log_path = sdup(c, s);
}

static void f_log_level(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    config_t *cfg = obj;
    cfg->log_level = 2; /* info */
    if (!v)
        return;
    const char *s = str(c, v, path);
    if (!s)
        return;
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            cfg->log_level = i;
            return;
        }
    qbuf_t q;
    err(c, v, "%s: %s is not one of error, warn, info, debug", path, qnode(&q, v));
}

static void f_log_format(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_t *cfg = obj;
    cfg->log_json = false;
    if (!v)
        return;
    const char *s = str(c, v, path);
    if (!s)
        return;
    if (strcmp(s, "json") == 0)
        cfg->log_json = true;
    else if (strcmp(s, "text") != 0) {
        qbuf_t q;
        err(c, v, "%s: %s is not one of text, json", path, qnode(&q, v));
    }
}

static const field_t log_fields[] = {
    ROW_CUSTOM("level", f_log_level),
    ROW_CUSTOM("format", f_log_format),
};

static void sec_log(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                    void *obj)
{
    seen_t seen;
    apply_table(c, v, v, path, log_fields, ARRAY_LEN(log_fields), obj, &seen);
}

static const field_t access_log_fields[] = {
    ROW_CUSTOM("path", f_access_log_path),
};

static void sec_access_log(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    seen_t seen;
    apply_table(c, v, v, path, access_log_fields, ARRAY_LEN(access_log_fields), obj, &seen);
}

/* An http:// URL (what the runtime can fetch); NULL with an error else. */
static const char *http_url(ctx_t *c, const yaml_node_t *v, const char *path, const char *s)
{
    qbuf_t q;
    if (strncmp(s, "https://", 8) == 0) {
        err(c, v, "%s: https is not supported yet; use an http:// URL", path);
        return NULL;
    }
    if (strncmp(s, "http://", 7) != 0 || s[7] == '\0' || s[7] == '/') {
        err(c, v, "%s: expected an http:// URL, got %s", path, qnode(&q, v));
        return NULL;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            err(c, v, "%s: %s contains a space or a control character", path, qnode(&q, v));
            return NULL;
        }
    }
    /* Host, port and the rest, as the runtime will read them: a bad one
     * fails `ficus check`, not the first fetch. */
    url_http_t u;
    char why[128];
    if (url_parse_http(s, &u, why, sizeof why) != 0) {
        err(c, v, "%s: %s, got %s", path, why, qnode(&q, v));
        return NULL;
    }
    return s;
}

static void f_otlp_endpoint(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_tracing_t *t = obj;
    t->otlp_endpoint = NULL;
    const char *s = v ? str(c, v, path) : NULL;
    if (s && *s && http_url(c, v, path, s))
        t->otlp_endpoint = sdup(c, s);
}

static void f_propagation(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_tracing_t *t = obj;
    t->propagate_w3c = v == NULL;
    t->propagate_datadog = false;
    if (!v || !want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    for (size_t i = 0; i < list_len(v); i++) {
        const yaml_node_t *it = list_item(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_index(p, path, i);
        const char *s = str(c, it, p);
        if (!s)
            continue;
        if (strcmp(s, "w3c") == 0)
            t->propagate_w3c = true;
        else if (strcmp(s, "datadog") == 0)
            t->propagate_datadog = true;
        else
            err(c, it, "%s: unknown propagation %s (w3c or datadog)", p, qnode(&q, it));
    }
}

static const field_t tracing_fields[] = {
    ROW_CUSTOM("otlp_endpoint", f_otlp_endpoint),
    ROW_STRING("service_name", config_tracing_t, service_name, DEFAULT_SERVICE_NAME),
    ROW_RATIO("sample_ratio", config_tracing_t, sample_ratio, DEFAULT_SAMPLE_RATIO),
    ROW_CUSTOM("propagation", f_propagation),
};

static void sec_tracing(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    config_t *cfg = obj;
    seen_t seen;
    apply_table(c, v, v, path, tracing_fields, ARRAY_LEN(tracing_fields), &cfg->tracing, &seen);
}

static void f_redis_address(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_t *cfg = obj;
    const char *s = str(c, v, path);
    addr_hostport_t hp;
    const char *why;
    qbuf_t q;
    if (!s)
        return;
    if (addr_split(s, &hp, &why) != 0)
        err(c, v, "%s: invalid address %s (%s)", path, qnode(&q, v), why);
    else if (!hp.host[0])
        err(c, v, "%s: %s needs a host (e.g. 127.0.0.1:6379)", path, qnode(&q, v));
    else
        cfg->redis_address = sdup(c, s);
}

static const field_t redis_fields[] = {
    ROW_CUSTOM_REQ("address", f_redis_address),
};

static void sec_redis(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    seen_t seen;
    if (v)
        apply_table(c, v, v, path, redis_fields, ARRAY_LEN(redis_fields), obj, &seen);
}

/* ---------------------------------------------------------- target groups */

static void f_targets(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_target_group_t *g = obj;
    if (!want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = list_len(v);
    if (n == 0) {
        err(c, v, "%s: needs at least one target (host:port)", path);
        return;
    }
    g->targets = alloc_array(c, n, sizeof *g->targets);
    if (!g->targets)
        return;
    g->n_targets = n;
    name_set_t names;
    names_init(c, &names, n, false);
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = list_item(c, v, i);
        config_target_t *t = &g->targets[i];
        addr_hostport_t hp;
        const char *why;
        char p[PATH_BYTES];
        qbuf_t q;
        path_index(p, path, i);
        const char *s = str(c, it, p);
        if (!s)
            continue;
        if (addr_split(s, &hp, &why) != 0) {
            err(c, it, "%s: invalid target %s (%s)", p, qnode(&q, it), why);
            continue;
        }
        if (!hp.host[0]) {
            err(c, it, "%s: %s needs a host (e.g. 10.0.0.5:80 or app.internal:80)", p,
                qnode(&q, it));
            continue;
        }
        t->numeric = addr_numeric(&hp, &t->addr, &t->addrlen) == 0;
        if (!t->numeric && !valid_hostname(hp.host, strlen(hp.host))) {
            err(c, it, "%s: invalid host name in %s", p, qnode(&q, it));
            continue;
        }
        t->name = sdup(c, s);
        t->host = sdup(c, hp.host);
        t->port = hp.port;
        const name_slot_t *first = names_add(&names, s, strlen(s), i, it);
        if (first)
            err(c, it, "%s: %s is already %s[%zu]", p, qnode(&q, it), path, first->value);
    }
    names_free(&names);
}

static void f_balance(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_target_group_t *g = obj;
    qbuf_t q;
    g->balance = BALANCE_ROUND_ROBIN;
    const char *s = v ? str(c, v, path) : NULL;
    if (!s || strcmp(s, "round_robin") == 0)
        return;
    if (strcmp(s, "least_request") == 0)
        g->balance = BALANCE_LEAST_REQUEST;
    else if (strcmp(s, "random") == 0)
        g->balance = BALANCE_RANDOM;
    else
        err(c, v, "%s: unknown balance %s (round_robin, least_request or random)", path,
            qnode(&q, v));
}

static const field_t keepalive_fields[] = {
    ROW_UINT("max_idle", config_target_group_t, keepalive_max_idle, DEFAULT_KEEPALIVE_MAX_IDLE, 0,
             CONFIG_MAX_COUNT),
    ROW_DURATION("idle_timeout", config_target_group_t, keepalive_idle_timeout_ms,
                 DEFAULT_KEEPALIVE_IDLE_TIMEOUT_MS, 1, CONFIG_MAX_DURATION_MS),
};

static void f_keepalive(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                        const char *path, void *obj)
{
    seen_t seen;
    apply_table(c, v, v, path, keepalive_fields, ARRAY_LEN(keepalive_fields), obj, &seen);
}

static void f_hc_path(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_health_check_t *hc = obj;
    const char *s = v ? str(c, v, path) : DEFAULT_HC_PATH;
    hc->path = NULL;
    if (s && check_path(c, v, path, s, true))
        hc->path = sdup(c, s);
}

static const field_t health_check_fields[] = {
    ROW_CUSTOM("path", f_hc_path),
    ROW_DURATION("interval", config_health_check_t, interval_ms, DEFAULT_HC_INTERVAL_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_DURATION("timeout", config_health_check_t, timeout_ms, DEFAULT_HC_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_UINT("healthy_threshold", config_health_check_t, healthy_threshold,
             DEFAULT_HC_HEALTHY_THRESHOLD, 1, CONFIG_MAX_THRESHOLD),
    ROW_UINT("unhealthy_threshold", config_health_check_t, unhealthy_threshold,
             DEFAULT_HC_UNHEALTHY_THRESHOLD, 1, CONFIG_MAX_THRESHOLD),
};

static void f_health_check(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    config_target_group_t *g = obj;
    seen_t seen;
    g->has_health_check = v != NULL;
    apply_table(c, v, v, path, health_check_fields, ARRAY_LEN(health_check_fields),
                &g->health_check, &seen);
}

static const field_t outlier_fields[] = {
    ROW_UINT("consecutive_errors", config_outlier_t, consecutive_errors,
             DEFAULT_OUTLIER_CONSECUTIVE_ERRORS, 1, CONFIG_MAX_THRESHOLD),
    ROW_DURATION("base_ejection_time", config_outlier_t, base_ejection_ms,
                 DEFAULT_OUTLIER_BASE_EJECTION_MS, 1, CONFIG_MAX_DURATION_MS),
    ROW_UINT("max_ejection_percent", config_outlier_t, max_ejection_percent,
             DEFAULT_OUTLIER_MAX_EJECTION_PERCENT, 0, 100),
};

static void f_outlier(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_target_group_t *g = obj;
    seen_t seen;
    g->has_outlier = v != NULL;
    apply_table(c, v, v, path, outlier_fields, ARRAY_LEN(outlier_fields), &g->outlier, &seen);
}

static const field_t group_fields[] = {
    ROW_CUSTOM_REQ("targets", f_targets),
    ROW_DURATION("dns_refresh", config_target_group_t, dns_refresh_ms, DEFAULT_DNS_REFRESH_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("balance", f_balance),
    ROW_DURATION("connect_timeout", config_target_group_t, connect_timeout_ms,
                 DEFAULT_CONNECT_TIMEOUT_MS, 1, CONFIG_MAX_DURATION_MS),
    ROW_UINT("max_connections", config_target_group_t, max_connections,
             DEFAULT_GROUP_MAX_CONNECTIONS, 1, CONFIG_MAX_COUNT),
    ROW_UINT("max_pending", config_target_group_t, max_pending, DEFAULT_GROUP_MAX_PENDING, 1,
             CONFIG_MAX_COUNT),
    ROW_UINT("max_requests", config_target_group_t, max_requests, DEFAULT_GROUP_MAX_REQUESTS, 1,
             CONFIG_MAX_COUNT),
    ROW_CUSTOM("keepalive", f_keepalive),
    ROW_CUSTOM("health_check", f_health_check),
    ROW_CUSTOM("outlier_detection", f_outlier),
    ROW_BOOL("required", config_target_group_t, required, false),
    ROW_UINT("panic_threshold", config_target_group_t, panic_threshold, DEFAULT_PANIC_THRESHOLD, 0,
             100),
};

/* A mapping of name -> object (target_groups, sets): the name checked, the
 * object registered even when it has errors, so that references to it do
 * not add errors of their own. Returns the name or NULL to skip the pair. */
static const char *named_entry(ctx_t *c, const yaml_node_t *map, size_t i, const char *path,
                               char *p, name_set_t *names, size_t value)
{
    const char *name = key_unique(c, map, i, path, names, value);
    if (!name)
        return NULL;
    const yaml_node_t *k = map_key(c, map, i);
    qbuf_t q;
    path_key(p, path, name, slen(k));
    if (!valid_name(name))
        err(c, k, "%s: invalid name %s (%s)", p, qnode(&q, k), name_rule);
    return name;
}

static void sec_target_groups(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    config_t *cfg = obj;
    if (!v || !want(c, v, YAML_MAPPING_NODE, path) || map_len(v) == 0)
        return;
    cfg->target_groups = alloc_array(c, map_len(v), sizeof *cfg->target_groups);
    if (!cfg->target_groups)
        return;
    names_init(c, &c->groups, map_len(v), false);
    for (size_t i = 0; i < map_len(v); i++) {
        char p[PATH_BYTES];
        const char *name = named_entry(c, v, i, path, p, &c->groups, cfg->n_target_groups);
        if (!name)
            continue;
        config_target_group_t *g = &cfg->target_groups[cfg->n_target_groups];
        g->index = cfg->n_target_groups++;
        g->name = sdup(c, name);
        const yaml_node_t *gv = map_value(c, v, i);
        seen_t seen;
        if (is_null(gv))
            err(c, map_key(c, v, i), "%s: needs a mapping with targets", p);
        else
            apply_table(c, gv, gv, p, group_fields, ARRAY_LEN(group_fields), g, &seen);
    }
}

/* ------------------------------------------------------------------ sets */

static void f_set_url(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_set_t *s = obj;
    s->url = NULL;
    const char *u = v ? str(c, v, path) : NULL;
    if (u && http_url(c, v, path, u))
        s->url = sdup(c, u);
}

static const field_t set_fields[] = {
    ROW_STRING("file", config_set_t, file, NULL),
    ROW_CUSTOM("url", f_set_url),
    ROW_DURATION("refresh", config_set_t, refresh_ms, DEFAULT_SET_REFRESH_MS, 1,
                 CONFIG_MAX_DURATION_MS),
};

static void sec_sets(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                     void *obj)
{
    config_t *cfg = obj;
    if (!v || !want(c, v, YAML_MAPPING_NODE, path) || map_len(v) == 0)
        return;
    cfg->sets = alloc_array(c, map_len(v), sizeof *cfg->sets);
    if (!cfg->sets)
        return;
    names_init(c, &c->sets, map_len(v), false);
    for (size_t i = 0; i < map_len(v); i++) {
        char p[PATH_BYTES];
        const char *name = named_entry(c, v, i, path, p, &c->sets, cfg->n_sets);
        if (!name)
            continue;
        config_set_t *s = &cfg->sets[cfg->n_sets];
        s->index = cfg->n_sets++;
        s->name = sdup(c, name);
        const yaml_node_t *sv = map_value(c, v, i);
        seen_t seen;
        apply_table(c, sv, sv, p, set_fields, ARRAY_LEN(set_fields), s, &seen);
        if (!is_null(sv) && sv->type != YAML_MAPPING_NODE)
            continue;
        const yaml_node_t *file = SEEN_VAL(set_fields, seen, "file");
        const yaml_node_t *url = SEEN_VAL(set_fields, seen, "url");
        if (file) {
            s->file_line = file->start_mark.line + 1;
            s->file_col = file->start_mark.column + 1;
        }
        if (file && s->file && s->file[0] != '/' && strchr(c->file, '/')) {
            /* Relative to the configuration file's directory, not to the
             * working directory (systemd starts ficus in /). */
            const char *slash = strrchr(c->file, '/');
            char full[4096];
            int w =
                snprintf(full, sizeof full, "%.*s/%s", (int)(slash - c->file), c->file, s->file);
            if (w > 0 && (size_t)w < sizeof full)
                s->file = sdup(c, full);
            else
                err(c, file, "%s.file: path too long", p);
        }
        if (!file && !url)
            err(c, is_null(sv) ? map_key(c, v, i) : sv, "%s: needs file or url", p);
        else if (file && url)
            err(c, SEEN_KEY(set_fields, seen, "url"), "%s.url: set file or url, not both", p);
    }
}

/* ---------------------------------------------------------------- routes */

static void f_route_name(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                         const char *path, void *obj)
{
    config_route_t *r = obj;
    qbuf_t q;
    const char *s = str(c, v, path);
    if (!s)
        return;
    if (!valid_name(s))
        err(c, v, "%s: invalid name %s (%s)", path, qnode(&q, v), name_rule);
    r->name = sdup(c, s);
    const name_slot_t *first = names_add(&c->route_names, s, strlen(s), r->index, v);
    if (first)
        err(c, v, "%s: duplicate route name %s (also routes[%zu])", path, qnode(&q, v),
            first->value);
}

static void f_methods(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_match_t *m = obj;
    m->methods = 0;
    if (!v || !want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    if (list_len(v) == 0) {
        err(c, v, "%s: must not be empty (omit it to match every method)", path);
        return;
    }
    for (size_t i = 0; i < list_len(v); i++) {
        const yaml_node_t *it = list_item(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_index(p, path, i);
        const char *s = str(c, it, p);
        if (!s)
            continue;
        uint32_t bit = config_method_bit(s, strlen(s));
        if (bit != METHOD_OTHER) {
            m->methods |= bit;
            continue;
        }
        char upper[16];
        size_t len = strlen(s);
        for (size_t j = 0; j < len && j < sizeof upper; j++)
            upper[j] = (s[j] >= 'a' && s[j] <= 'z') ? (char)(s[j] - 32) : s[j];
        if (len <= sizeof upper && config_method_bit(upper, len) != METHOD_OTHER)
            err(c, it, "%s: unknown method %s (methods are case-sensitive: %.*s)", p, qnode(&q, it),
                (int)len, upper);
        else
            err(c, it,
                "%s: unknown method %s (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE or "
                "CONNECT)",
                p, qnode(&q, it));
    }
}

static void f_host(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                   void *obj)
{
    config_match_t *m = obj;
    qbuf_t q;
    m->host = NULL;
    m->host_wildcard = false;
    const char *s = v ? str(c, v, path) : NULL;
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
            ok = is_alnum(h[i]) || h[i] == ':' || h[i] == '.';
    } else {
        ok = valid_hostname(name, name_len);
    }
    if (ok) {
        m->host = sdup_lower(c, h, len);
        m->host_wildcard = wild;
    } else if (strchr(s, '*')) {
        err(c, v, "%s: invalid host %s (a wildcard is only allowed as *.suffix)", path,
            qnode(&q, v));
    } else if (strchr(s, ':') && s[0] != '[') {
        err(c, v, "%s: invalid host %s (no port: the port is ignored when matching)", path,
            qnode(&q, v));
    } else {
        err(c, v, "%s: invalid host %s", path, qnode(&q, v));
    }
}

static void f_match_headers(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_match_t *m = obj;
    m->headers = NULL;
    m->n_headers = 0;
    if (!v || !want(c, v, YAML_MAPPING_NODE, path) || map_len(v) == 0)
        return;
    m->headers = alloc_array(c, map_len(v), sizeof *m->headers);
    name_set_t names;
    names_init(c, &names, map_len(v), true);
    for (size_t i = 0; m->headers && i < map_len(v); i++) {
        const char *name = key_unique(c, v, i, path, &names, i);
        if (!name)
            continue;
        const yaml_node_t *kn = map_key(c, v, i), *vn = map_value(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_key(p, path, name, slen(kn));
        if (!valid_token(name, slen(kn))) {
            err(c, kn, "%s: invalid header name %s", p, qnode(&q, kn));
            continue;
        }
        const char *value = str(c, vn, p);
        if (!value)
            continue;
        config_header_match_t *h = &m->headers[m->n_headers++];
        h->name = sdup_lower(c, name, slen(kn));
        h->value = sdup(c, value);
    }
    names_free(&names);
}

static const field_t match_fields[] = {
    ROW_RAW("path"),
    ROW_RAW("path_prefix"),
    ROW_RAW("path_regex"),
    ROW_CUSTOM("methods", f_methods),
    ROW_CUSTOM("host", f_host),
    ROW_CUSTOM("headers", f_match_headers),
    ROW_RAW("in_set"),
};

static void compile_regex(ctx_t *c, const yaml_node_t *v, const char *path, config_match_t *m)
{
    int code;
    PCRE2_SIZE offset;
    qbuf_t q;
    /* Plain bytes (no UTF mode): paths are bytes, and a percent-decoded or
     * invalid UTF-8 path must still be matchable. */
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)m->path, m->path_len, PCRE2_ANCHORED, &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "error %d", code);
        err(c, v, "%s: invalid regex %s: %s (at offset %zu)", path, qnode(&q, v), (const char *)msg,
            (size_t)offset);
        return;
    }
    m->regex = re;
    /* No JIT (unsupported CPU, no executable memory): the interpreter gives
     * the same answers, only slower. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    uint32_t n = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &n);
    m->n_captures = n;
    c->captures_known = true;
}

typedef struct in_set_raw {
    char *capture;
    char *set;
} in_set_raw_t;

static const field_t in_set_fields[] = {
    ROW_STRING_REQ("capture", in_set_raw_t, capture),
    ROW_STRING_REQ("set", in_set_raw_t, set),
};

static void match_in_set(ctx_t *c, const yaml_node_t *k, const yaml_node_t *v, const char *path,
                         config_match_t *m)
{
    in_set_raw_t raw = {NULL, NULL};
    seen_t seen;
    qbuf_t q;
    apply_table(c, v, v, path, in_set_fields, ARRAY_LEN(in_set_fields), &raw, &seen);
    if (c->match_known && m->kind != MATCH_REGEX) {
        err(c, k, "%s: needs path_regex (in_set looks up a named group of it)", path);
        return;
    }
    if (raw.set) {
        size_t idx = names_find(&c->sets, raw.set);
        if (idx == CONFIG_NONE)
            err(c, SEEN_VAL(in_set_fields, seen, "set"), "%s.set: unknown set %s", path,
                qstr(&q, raw.set));
        m->in_set = idx;
    }
    if (raw.capture && m->regex) {
        const yaml_node_t *cn = SEEN_VAL(in_set_fields, seen, "capture");
        int g = pcre2_substring_number_from_name(m->regex, (PCRE2_SPTR)raw.capture);
        if (g == PCRE2_ERROR_NOUNIQUESUBSTRING)
            err(c, cn, "%s.capture: group name %s is not unique in path_regex", path,
                qstr(&q, raw.capture));
        else if (g < 0)
            err(c, cn, "%s.capture: path_regex has no group named %s (write it as (?<name>...))",
                path, qstr(&q, raw.capture));
        else if (g >= ROUTER_MATCH_DATA_PAIRS)
            err(c, cn, "%s.capture: group %d is beyond the %d groups a route can use", path, g,
                ROUTER_MATCH_DATA_PAIRS - 1);
        else
            m->in_set_capture = (uint32_t)g;
        m->in_set_capture_name = sdup(c, raw.capture);
    }
}

static void f_match(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                    void *obj)
{
    static const char *const kinds[] = {"path", "path_prefix", "path_regex"};
    static const config_match_kind_t kind_of[] = {MATCH_PATH, MATCH_PREFIX, MATCH_REGEX};
    config_route_t *r = obj;
    config_match_t *m = &r->match;
    seen_t seen;
    if (!want(c, v, YAML_MAPPING_NODE, path))
        return;
    apply_table(c, v, v, path, match_fields, ARRAY_LEN(match_fields), m, &seen);
    /* The first one written is taken; the later ones are the errors. */
    size_t present = 0, which = 0;
    for (size_t i = 0; i < 3; i++) {
        const yaml_node_t *ki = SEEN_KEY(match_fields, seen, kinds[i]);
        if (!SEEN_VAL(match_fields, seen, kinds[i]))
            continue;
        if (present++ == 0 ||
            ki->start_mark.index < SEEN_KEY(match_fields, seen, kinds[which])->start_mark.index)
            which = i;
    }
    for (size_t i = 0; present > 1 && i < 3; i++) {
        if (i != which && SEEN_VAL(match_fields, seen, kinds[i]))
            err(c, SEEN_KEY(match_fields, seen, kinds[i]),
                "%s.%s: only one of path, path_prefix or path_regex may be set", path, kinds[i]);
    }
    if (present == 0)
        err(c, v, "%s: needs one of path, path_prefix or path_regex", path);
    if (present == 1) {
        const yaml_node_t *pv = SEEN_VAL(match_fields, seen, kinds[which]);
        char p[PATH_BYTES];
        path_key(p, path, kinds[which], strlen(kinds[which]));
        m->kind = kind_of[which];
        c->match_known = true;
        const char *s = str(c, pv, p);
        if (s && m->kind != MATCH_REGEX && check_path(c, pv, p, s, false)) {
            m->path = sdup(c, s);
            m->path_len = strlen(s);
        } else if (s && m->kind == MATCH_REGEX) {
            m->path = sdup(c, s);
            m->path_len = strlen(s);
            if (!*s)
                err(c, pv, "%s: must not be empty", p);
            else if (m->path)
                compile_regex(c, pv, p, m);
        }
    }
    const yaml_node_t *in_set = SEEN_VAL(match_fields, seen, "in_set");
    if (in_set) {
        char p[PATH_BYTES];
        path_key(p, path, "in_set", 6);
        match_in_set(c, SEEN_KEY(match_fields, seen, "in_set"), in_set, p, m);
    }
}

static void f_rewrite_prefix(ctx_t *c, const yaml_node_t *k, const yaml_node_t *v, const char *path,
                             void *obj)
{
    config_route_t *r = obj;
    r->rewrite_prefix = NULL;
    const char *s = v ? str(c, v, path) : NULL;
    if (!s || !check_path(c, v, path, s, false))
        return;
    if (c->match_known && r->match.kind != MATCH_PREFIX) {
        err(c, k, "%s: only works with match.path_prefix", path);
        return;
    }
    r->rewrite_prefix = sdup(c, s);
}

static void f_backend_group(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                            const char *path, void *obj)
{
    config_backend_t *b = obj;
    qbuf_t q;
    const char *s = str(c, v, path);
    if (!s)
        return;
    b->target_group = names_find(&c->groups, s);
    if (b->target_group == CONFIG_NONE)
        err(c, v, "%s: unknown target group %s", path, qnode(&q, v));
}

/* A path template: $0..$9 are captures ("$$" is a '$'), as the router
 * expands them; a capture the match cannot produce is an error here rather
 * than an empty string at run time. */
static void f_backend_path(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                           const char *path, void *obj)
{
    config_backend_t *b = obj;
    const config_match_t *m = &c->route->match;
    b->path = NULL;
    const char *s = v ? str(c, v, path) : NULL;
    if (!s || !check_path(c, v, path, s, true))
        return;
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
        if (!c->match_known)
            continue;
        if (m->kind == MATCH_REGEX && c->captures_known && g > m->n_captures) {
            err(c, v, "%s: $%u, but match.path_regex has %u capture group%s", path, g,
                m->n_captures, m->n_captures == 1 ? "" : "s");
            return;
        }
        if (m->kind != MATCH_REGEX && g != 0) {
            err(c, v,
                "%s: $%u needs match.path_regex (without it only $0, the matched path, exists)",
                path, g);
            return;
        }
    }
    b->path = sdup(c, s);
}

static const field_t backend_fields[] = {
    ROW_CUSTOM_REQ("target_group", f_backend_group),
    ROW_UINT("weight", config_backend_t, weight, DEFAULT_BACKEND_WEIGHT, 0, MAX_BACKEND_WEIGHT),
    ROW_RAW("fallback"),
    ROW_CUSTOM("path", f_backend_path),
};

static void backend_fallback(ctx_t *c, const config_route_t *r, size_t i, const yaml_node_t *fv,
                             const char *path)
{
    config_backend_t *b = &r->backends[i];
    char item[PATH_BYTES], p[PATH_BYTES];
    qbuf_t q;
    path_index(item, path, i);
    path_key(p, item, "fallback", 8);
    const char *s = str(c, fv, p);
    if (!s)
        return;
    size_t g = names_find(&c->groups, s);
    if (g == CONFIG_NONE) {
        err(c, fv, "%s: unknown target group %s", p, qnode(&q, fv));
        return;
    }
    if (g == b->target_group) {
        err(c, fv, "%s: a backend cannot fall back to its own target group %s", p, qnode(&q, fv));
        return;
    }
    for (size_t j = 0; j < r->n_backends; j++) {
        if (r->backends[j].target_group == g) {
            b->fallback = g;
            return;
        }
    }
    err(c, fv, "%s: fallback group %s is not one of the route's backends (add it with weight: 0)",
        p, qnode(&q, fv));
}

static void f_backends(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_route_t *r = obj;
    const yaml_node_t *group_node[MAX_ROUTE_BACKENDS], *fallback_node[MAX_ROUTE_BACKENDS];
    if (!v || !want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t n = list_len(v);
    if (n == 0) {
        err(c, v, "%s: needs at least one backend", path);
        return;
    }
    if (n > MAX_ROUTE_BACKENDS) {
        err(c, v, "%s: at most %d backends", path, MAX_ROUTE_BACKENDS);
        return;
    }
    r->backends = alloc_array(c, n, sizeof *r->backends);
    if (!r->backends)
        return;
    r->n_backends = n;
    bool all_read = true, any_weight = false;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *it = list_item(c, v, i);
        config_backend_t *b = &r->backends[i];
        char p[PATH_BYTES];
        seen_t seen;
        b->target_group = CONFIG_NONE;
        b->fallback = CONFIG_NONE;
        group_node[i] = fallback_node[i] = NULL;
        path_index(p, path, i);
        if (!want(c, it, YAML_MAPPING_NODE, p)) {
            all_read = false;
            continue;
        }
        apply_table(c, it, it, p, backend_fields, ARRAY_LEN(backend_fields), b, &seen);
        group_node[i] = SEEN_VAL(backend_fields, seen, "target_group");
        fallback_node[i] = SEEN_VAL(backend_fields, seen, "fallback");
        any_weight = any_weight || b->weight > 0;
    }
    if (all_read && !any_weight)
        err(c, v, "%s: every weight is 0; at least one backend must take traffic", path);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i && r->backends[i].target_group != CONFIG_NONE; j++) {
            if (r->backends[j].target_group == r->backends[i].target_group) {
                char item[PATH_BYTES], p[PATH_BYTES];
                qbuf_t q;
                path_index(item, path, i);
                path_key(p, item, "target_group", 12);
                err(c, group_node[i], "%s: %s is already %s[%zu]", p, qnode(&q, group_node[i]),
                    path, j);
                break;
            }
        }
        if (fallback_node[i])
            backend_fallback(c, r, i, fallback_node[i], path);
    }
}

static void f_sticky(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                     void *obj)
{
    config_route_t *r = obj;
    qbuf_t q;
    r->sticky = STICKY_NONE;
    r->sticky_name = NULL;
    const char *s = v ? str(c, v, path) : NULL;
    if (!s || strcmp(s, "none") == 0)
        return;
    if (strcmp(s, "client_ip") == 0) {
        r->sticky = STICKY_CLIENT_IP;
    } else if (strncmp(s, "header:", 7) == 0 && valid_token(s + 7, strlen(s + 7))) {
        r->sticky = STICKY_HEADER;
        r->sticky_name = sdup_lower(c, s + 7, strlen(s + 7));
    } else if (strncmp(s, "cookie:", 7) == 0 && valid_token(s + 7, strlen(s + 7))) {
        r->sticky = STICKY_COOKIE;
        r->sticky_name = sdup(c, s + 7);
    } else {
        err(c, v, "%s: invalid sticky %s (none, client_ip, header:NAME or cookie:NAME)", path,
            qnode(&q, v));
    }
}

static void f_retry_on(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } conditions[] = {
        {"5xx", RETRY_ON_5XX},
        {"gateway-error", RETRY_ON_GATEWAY_ERROR},
        {"connect-failure", RETRY_ON_CONNECT_FAILURE},
        {"reset", RETRY_ON_RESET},
        {"timeout", RETRY_ON_TIMEOUT},
    };
    config_retries_t *rt = obj;
    if (!want(c, v, YAML_SEQUENCE_NODE, path))
        return;
    if (list_len(v) == 0) {
        err(c, v, "%s: needs at least one condition", path);
        return;
    }
    rt->retry_statuses = alloc_array(c, list_len(v), sizeof *rt->retry_statuses);
    for (size_t i = 0; rt->retry_statuses && i < list_len(v); i++) {
        const yaml_node_t *it = list_item(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_index(p, path, i);
        const char *s = str(c, it, p);
        if (!s)
            continue;
        size_t j = 0;
        while (j < ARRAY_LEN(conditions) && strcmp(conditions[j].name, s) != 0)
            j++;
        if (j < ARRAY_LEN(conditions)) {
            rt->retry_on |= conditions[j].bit;
            continue;
        }
        uint64_t status;
        const char *why;
        int rc = units_parse_uint(s, 100, 599, &status, &why);
        if (rc == FE_TOOBIG) {
            err(c, it, "%s: status %s is out of range (100 to 599)", p, qnode(&q, it));
            continue;
        }
        if (rc != 0) {
            err(c, it,
                "%s: unknown retry condition %s (5xx, gateway-error, connect-failure, reset, "
                "timeout or a status code such as 429)",
                p, qnode(&q, it));
            continue;
        }
        bool known = false;
        for (size_t x = 0; x < rt->n_retry_statuses; x++)
            known = known || rt->retry_statuses[x] == status;
        if (!known)
            rt->retry_statuses[rt->n_retry_statuses++] = (uint16_t)status;
    }
}

static const field_t retry_fields[] = {
    ROW_UINT_REQ("attempts", config_retries_t, attempts, 0, MAX_RETRY_ATTEMPTS),
    ROW_DURATION("per_try_timeout", config_retries_t, per_try_timeout_ms, 0, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM_REQ("retry_on", f_retry_on),
    ROW_DURATION("backoff", config_retries_t, backoff_ms, DEFAULT_RETRY_BACKOFF_MS, 0,
                 CONFIG_MAX_DURATION_MS),
    ROW_UINT("budget_percent", config_retries_t, budget_percent, DEFAULT_RETRY_BUDGET_PERCENT, 0,
             100),
};

static void f_retries(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_route_t *r = obj;
    seen_t seen;
    r->has_retries = v != NULL;
    if (v)
        apply_table(c, v, v, path, retry_fields, ARRAY_LEN(retry_fields), &r->retries, &seen);
}

static void f_ip_allow(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_route_t *r = obj;
    cidr_list(c, v, path, &r->ip_allow, &r->n_ip_allow);
}

static void f_ip_deny(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v, const char *path,
                      void *obj)
{
    config_route_t *r = obj;
    cidr_list(c, v, path, &r->ip_deny, &r->n_ip_deny);
}

/* Headers that frame the message or the connection: ficus writes them. */
static bool framing_header(const char *name)
{
    static const char *const names[] = {"connection", "content-length",   "transfer-encoding",
                                        "keep-alive", "proxy-connection", "te",
                                        "trailer",    "upgrade"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcasecmp(name, names[i]) == 0)
            return true;
    }
    return false;
}

static void f_headers_set(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                          const char *path, void *obj)
{
    config_route_t *r = obj;
    r->set_headers = NULL;
    r->n_set_headers = 0;
    if (!v || !want(c, v, YAML_MAPPING_NODE, path) || map_len(v) == 0)
        return;
    r->set_headers = alloc_array(c, map_len(v), sizeof *r->set_headers);
    name_set_t names;
    names_init(c, &names, map_len(v), true);
    for (size_t i = 0; r->set_headers && i < map_len(v); i++) {
        const char *name = key_unique(c, v, i, path, &names, i);
        if (!name)
            continue;
        const yaml_node_t *kn = map_key(c, v, i), *vn = map_value(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_key(p, path, name, slen(kn));
        if (!valid_token(name, slen(kn))) {
            err(c, kn, "%s: invalid header name %s", p, qnode(&q, kn));
            continue;
        }
        if (framing_header(name)) {
            err(c, kn, "%s: %s cannot be set (ficus manages it)", p, qnode(&q, kn));
            continue;
        }
        const char *value = str(c, vn, p);
        if (!value)
            continue;
        for (const char *s = value; *s; s++) {
            if (*s == '\r' || *s == '\n') {
                err(c, vn, "%s: a header value cannot contain a line break", p);
                value = NULL;
                break;
            }
        }
        if (!value)
            continue;
        config_header_set_t *h = &r->set_headers[r->n_set_headers++];
        h->name = sdup(c, name);
        h->value = sdup(c, value);
    }
    names_free(&names);
}

static void f_headers_remove(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                             const char *path, void *obj)
{
    config_route_t *r = obj;
    r->remove_headers = NULL;
    r->n_remove_headers = 0;
    if (!v || !want(c, v, YAML_SEQUENCE_NODE, path) || list_len(v) == 0)
        return;
    r->remove_headers = alloc_array(c, list_len(v), sizeof *r->remove_headers);
    for (size_t i = 0; r->remove_headers && i < list_len(v); i++) {
        const yaml_node_t *it = list_item(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_index(p, path, i);
        const char *s = str(c, it, p);
        if (!s)
            continue;
        if (!valid_token(s, strlen(s))) {
            err(c, it, "%s: invalid header name %s", p, qnode(&q, it));
            continue;
        }
        r->remove_headers[r->n_remove_headers++] = sdup_lower(c, s, strlen(s));
    }
}

/* route.upgrades: Upgrade tokens tunnelled after a 101 (default [websocket]). */
static void f_upgrades(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_route_t *r = obj;
    r->n_upgrades = 0;
    r->upgrades = NULL;
    if (!v) {
        r->upgrades = alloc_array(c, 1, sizeof *r->upgrades);
        if (r->upgrades)
            r->upgrades[r->n_upgrades++] = sdup(c, "websocket");
        return;
    }
    if (!want(c, v, YAML_SEQUENCE_NODE, path) || list_len(v) == 0)
        return;
    r->upgrades = alloc_array(c, list_len(v), sizeof *r->upgrades);
    for (size_t i = 0; r->upgrades && i < list_len(v); i++) {
        const yaml_node_t *it = list_item(c, v, i);
        char p[PATH_BYTES];
        qbuf_t q;
        path_index(p, path, i);
        const char *s = str(c, it, p);
        if (!s)
            continue;
        if (!valid_token(s, strlen(s))) {
            err(c, it, "%s: invalid protocol %s (a token, such as websocket)", p, qnode(&q, it));
            continue;
        }
        r->upgrades[r->n_upgrades++] = sdup_lower(c, s, strlen(s));
    }
}

static const field_t request_headers_fields[] = {
    ROW_CUSTOM("set", f_headers_set),
    ROW_CUSTOM("remove", f_headers_remove),
};

static void f_request_headers(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                              const char *path, void *obj)
{
    seen_t seen;
    apply_table(c, v, v, path, request_headers_fields, ARRAY_LEN(request_headers_fields), obj,
                &seen);
}

static const field_t route_fields[] = {
    ROW_CUSTOM_REQ("name", f_route_name),
    ROW_CUSTOM_REQ("match", f_match),
    ROW_CUSTOM("rewrite_prefix", f_rewrite_prefix),
    ROW_CUSTOM("backends", f_backends),
    ROW_CUSTOM("sticky", f_sticky),
    ROW_DURATION("timeout", config_route_t, timeout_ms, DEFAULT_ROUTE_TIMEOUT_MS, 1,
                 CONFIG_MAX_DURATION_MS),
    ROW_CUSTOM("retries", f_retries),
    ROW_BOOL("retry_non_idempotent", config_route_t, retry_non_idempotent, false),
    ROW_CUSTOM("ip_allow", f_ip_allow),
    ROW_CUSTOM("ip_deny", f_ip_deny),
    ROW_CUSTOM("request_headers", f_request_headers),
    ROW_CUSTOM("upgrades", f_upgrades),
    ROW_UNSUPPORTED("auth", "authentication"),
    ROW_UNSUPPORTED("clients", "restricting a route to clients"),
    ROW_UNSUPPORTED("rate_limit", "rate limiting"),
    ROW_UNSUPPORTED("aggregate", "aggregation (BFF)"),
};

static void parse_route(ctx_t *c, const yaml_node_t *v, const char *path, config_route_t *r)
{
    seen_t seen;
    c->route = r;
    c->match_known = false;
    c->captures_known = false;
    if (!want(c, v, YAML_MAPPING_NODE, path))
        return;
    apply_table(c, v, v, path, route_fields, ARRAY_LEN(route_fields), r, &seen);
    /* An aggregate route has calls instead of backends: its own error says
     * enough. */
    if (SEEN_VAL(route_fields, seen, "backends") || SEEN_KEY(route_fields, seen, "aggregate"))
        return;
    char p[PATH_BYTES];
    path_key(p, path, "backends", 8);
    if (SEEN_KEY(route_fields, seen, "backends"))
        err(c, SEEN_KEY(route_fields, seen, "backends"), "%s: needs at least one backend", p);
    else
        err(c, v, "%s: required key is missing", p);
}

static void sec_routes(ctx_t *c, const yaml_node_t *k UNUSED, const yaml_node_t *v,
                       const char *path, void *obj)
{
    config_t *cfg = obj;
    if (!v || !want(c, v, YAML_SEQUENCE_NODE, path) || list_len(v) == 0)
        return;
    cfg->routes = alloc_array(c, list_len(v), sizeof *cfg->routes);
    if (!cfg->routes)
        return;
    cfg->n_routes = list_len(v);
    names_init(c, &c->route_names, cfg->n_routes, false);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        config_route_t *r = &cfg->routes[i];
        char p[PATH_BYTES];
        r->index = i;
        r->match.in_set = CONFIG_NONE;
        path_index(p, path, i);
        parse_route(c, list_item(c, v, i), p, r);
    }
    c->route = NULL;
}

/* Sections in dependency order: routes refer to target groups and sets. */
static const field_t top_fields[] = {
    ROW_CUSTOM("server", sec_server),
    ROW_CUSTOM("admin", sec_admin),
    ROW_CUSTOM("access_log", sec_access_log),
    ROW_CUSTOM("log", sec_log),
    ROW_CUSTOM("tracing", sec_tracing),
    ROW_CUSTOM("redis", sec_redis),
    ROW_CUSTOM("target_groups", sec_target_groups),
    ROW_CUSTOM("sets", sec_sets),
    ROW_CUSTOM("routes", sec_routes),
    ROW_UNSUPPORTED("clients", "client authentication"),
    ROW_UNSUPPORTED("jwt_providers", "JWT authentication"),
    ROW_UNSUPPORTED("session_exchange", "session exchange"),
};

_Static_assert(ARRAY_LEN(top_fields) <= MAX_FIELDS, "seen_t too small");
_Static_assert(ARRAY_LEN(server_fields) <= MAX_FIELDS, "seen_t too small");
_Static_assert(ARRAY_LEN(group_fields) <= MAX_FIELDS, "seen_t too small");
_Static_assert(ARRAY_LEN(route_fields) <= MAX_FIELDS, "seen_t too small");

/* ------------------------------------------------------------ the loader */

static void yaml_error(ctx_t *c, const yaml_parser_t *p, const char *yaml, size_t len)
{
    const char *problem = p->problem ? p->problem : "malformed input";
    if (p->error == YAML_MEMORY_ERROR) {
        c->oom = true;
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        /* The reader (encoding) has an offset, not a mark. */
        size_t line = 1, col = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (yaml[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        if (p->problem_value != -1)
            err_pos(c, line, col, "invalid YAML: %s (byte 0x%02X)", problem,
                    (unsigned)p->problem_value);
        else
            err_pos(c, line, col, "invalid YAML: %s", problem);
        return;
    }
    size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
    /* The most common YAML mistake gets a plain answer. */
    if (p->problem_mark.index < len && yaml[p->problem_mark.index] == '\t')
        err_pos(c, line, col, "invalid YAML: a tab cannot indent YAML; use spaces");
    else if (p->context)
        err_pos(c, line, col, "invalid YAML: %s (%s at line %zu, column %zu)", problem, p->context,
                (size_t)p->context_mark.line + 1, (size_t)p->context_mark.column + 1);
    else
        err_pos(c, line, col, "invalid YAML: %s", problem);
}

static void build(ctx_t *c, const yaml_node_t *root)
{
    seen_t seen;
    if (root->type != YAML_MAPPING_NODE) {
        err(c, root, "the top level must be a mapping of sections (server:, routes:, ...), got %s",
            kind_name(root));
        return;
    }
    apply_table(c, root, root, "", top_fields, ARRAY_LEN(top_fields), c->cfg, &seen);
    /* Their names point into the document, which dies next. */
    names_free(&c->groups);
    names_free(&c->sets);
    names_free(&c->route_names);
}

static void parse_yaml(ctx_t *c, const char *yaml, size_t len)
{
    yaml_parser_t parser;
    yaml_document_t doc, next;
    if (!yaml_parser_initialize(&parser)) {
        c->oom = true;
        return;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)(yaml ? yaml : ""),
                                 yaml ? len : 0);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_error(c, &parser, yaml, len);
        yaml_parser_delete(&parser);
        return;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        err_pos(c, 1, 1, "the configuration is empty");
    } else {
        if (!yaml_parser_load(&parser, &next)) {
            yaml_error(c, &parser, yaml, len);
        } else {
            if (yaml_document_get_root_node(&next))
                err_pos(c, next.start_mark.line + 1, next.start_mark.column + 1,
                        "only one YAML document is allowed; found a second one");
            yaml_document_delete(&next);
        }
        /* Four walks of every node is plenty; aliases may add a bounded
         * number of values on top. */
        size_t nodes = (size_t)(doc.nodes.top - doc.nodes.start);
        c->values_max = c->values_left = 4 * nodes + CONFIG_MAX_ALIAS_VALUES;
        c->doc = &doc;
        build(c, root);
        c->doc = NULL;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
}

static void config_destroy(config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_routes; i++)
        pcre2_code_free(cfg->routes[i].match.regex);
    arena_deinit(&cfg->arena);
    free(cfg);
}

config_t *config_load_string(const char *yaml, size_t len, const char *name, config_errors_t *errs)
{
    ctx_t c;
    memset(&c, 0, sizeof c);
    c.file = name ? name : "<config>";
    config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        if (errs)
            config_errors_add(errs, c.file, 0, 0, "out of memory");
        return NULL;
    }
    atomic_init(&cfg->refs, 1);
    arena_init(&cfg->arena, 16 * 1024);
    c.cfg = cfg;
    cfg->path = sdup(&c, c.file);
    parse_yaml(&c, yaml, len);
    if (c.oom)
        err_pos(&c, 0, 0, "out of memory");
    bool ok = c.n_diags == 0 && !c.oom;
    diags_flush(&c, errs);
    if (!ok) {
        config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

/* The whole of f, up to CONFIG_MAX_FILE_BYTES: 0, FE_NOMEM, FE_TOOBIG or
 * FE_IO (errno set). */
static int read_all(FILE *f, char **out, size_t *out_len)
{
    const size_t max = CONFIG_MAX_FILE_BYTES;
    size_t len = 0, cap = 64 * 1024;
    char *buf = malloc(cap);
    if (!buf)
        return FE_NOMEM;
    for (;;) {
        if (len == cap) {
            /* One byte past the limit tells "exactly the limit" from "more". */
            size_t ncap = cap > max / 2 ? max + 1 : 2 * cap;
            char *nb = len > max ? NULL : realloc(buf, ncap);
            if (!nb) {
                free(buf);
                return len > max ? FE_TOOBIG : FE_NOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        int e = errno;
        free(buf);
        errno = e;
        return FE_IO;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

config_t *config_load_file(const char *path, config_errors_t *errs)
{
    char ebuf[128], lim[32];
    char *buf = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "rb");
    int rc = f ? read_all(f, &buf, &len) : FE_IO;
    int e = errno;
    if (f)
        fclose(f);
    if (rc == 0) {
        config_t *cfg = config_load_string(buf, len, path, errs);
        free(buf);
        return cfg;
    }
    if (!errs)
        return NULL;
    if (rc == FE_TOOBIG) {
        units_format_size(CONFIG_MAX_FILE_BYTES, lim, sizeof lim);
        config_errors_add(errs, path, 0, 0, "cannot read: larger than %s", lim);
    } else if (rc == FE_NOMEM) {
        config_errors_add(errs, path, 0, 0, "cannot read: out of memory");
    } else {
        config_errors_add(errs, path, 0, 0, "cannot read: %s", strerror_r(e, ebuf, sizeof ebuf));
    }
    return NULL;
}

void config_unref(config_t *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        config_destroy(c);
}

/* ---------------------------------------------------------------- lookups */

size_t config_find_target_group(const config_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_target_groups; i++) {
        if (c->target_groups[i].name && strcmp(c->target_groups[i].name, name) == 0)
            return i;
    }
    return CONFIG_NONE;
}

size_t config_find_route(const config_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_routes; i++) {
        if (c->routes[i].name && strcmp(c->routes[i].name, name) == 0)
            return i;
    }
    return CONFIG_NONE;
}

size_t config_find_set(const config_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_sets; i++) {
        if (c->sets[i].name && strcmp(c->sets[i].name, name) == 0)
            return i;
    }
    return CONFIG_NONE;
}

uint32_t config_method_bit(const char *m, size_t len)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } methods[] = {
        {"GET", METHOD_GET},         {"HEAD", METHOD_HEAD},     {"POST", METHOD_POST},
        {"PUT", METHOD_PUT},         {"DELETE", METHOD_DELETE}, {"PATCH", METHOD_PATCH},
        {"OPTIONS", METHOD_OPTIONS}, {"TRACE", METHOD_TRACE},   {"CONNECT", METHOD_CONNECT},
    };
    for (size_t i = 0; i < ARRAY_LEN(methods); i++) {
        if (strlen(methods[i].name) == len && memcmp(methods[i].name, m, len) == 0)
            return methods[i].bit;
    }
    return METHOD_OTHER;
}
