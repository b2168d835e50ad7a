/* The table engine of the configuration: a row per key (how it is read, its
 * default and bounds, where it goes, whether a reload may change it), one
 * walker that applies a table of rows to a YAML mapping, errors with
 * FILE:LINE:COL and the key path, and the walks over the rows of a loaded
 * snapshot: the first changed restart-only key, and the JSON of /config. */
#ifndef FICUS_CONFIG_SCHEMA_H
#define FICUS_CONFIG_SCHEMA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "config/config.h"
#include "core/arena.h"

#define SCHEMA_PATH_BYTES 256 /* key paths in messages; longer ones are cut */
#define SCHEMA_QUOTE_BYTES 80 /* quoted values in messages; longer ones are cut */
#define SCHEMA_MAX_ROWS 24    /* rows of the largest table */

typedef struct schema_diag schema_diag_t;

/* One load: where errors go (collected, never fatal) and where values are
 * allocated. `user` is the state of the rows' own callbacks. */
typedef struct schema_ctx {
    const char *file;
    yaml_document_t *doc;
    arena_t *arena;
    schema_diag_t *diags;
    size_t n_diags, cap_diags;
    bool oom;
    bool muted; /* after "too many values": the rest would be noise */
    /* Lists and mappings may still be walked: YAML aliases can make a small
     * file expand without end (a "billion laughs"). */
    size_t values_left, values_max;
    config_key_pos_t *key_pos; /* where restart-only keys are written (arena) */
    void *user;
} schema_ctx_t;

typedef enum {
    SCHEMA_NONE = 0,   /* (value kind) nothing the walks can read by itself */
    SCHEMA_DURATION,   /* uint64_t milliseconds */
    SCHEMA_SIZE,       /* uint64_t bytes */
    SCHEMA_UINT,       /* uint32_t */
    SCHEMA_BOOL,       /* bool */
    SCHEMA_RATIO,      /* double in [0, 1] */
    SCHEMA_STRING,     /* char *, not empty (NULL when unset) */
    SCHEMA_TABLE,      /* a mapping: the rows `sub` applied to the object at off */
    SCHEMA_CUSTOM,     /* fn reads it; called with val NULL to set the default */
    SCHEMA_RAW,        /* the caller reads it from the schema_seen_t */
    SCHEMA_UNSUPPORTED /* a contract key of a feature this version lacks */
} schema_kind_t;

/* key/val are NULL when the key is absent (or null): fn sets the default. */
typedef void (*schema_fn)(schema_ctx_t *c, const yaml_node_t *key, const yaml_node_t *val,
                          const char *path, void *obj);
struct schema_row;
/* The JSON of row f's value in obj (the table's object; root is the whole
 * snapshot); NULL leaves the key out. */
typedef json_t *(*schema_json_fn)(const struct schema_row *f, const void *obj, const void *root);
/* Whether a row's value is the same in two objects of its table. */
typedef bool (*schema_same_fn)(const void *a, const void *b);

typedef struct schema_row {
    const char *key;
    schema_kind_t kind;  /* how it is read */
    schema_kind_t value; /* how it is stored at off, for the walks (SCHEMA_NONE: they skip it) */
    size_t off;          /* where it goes in the table's object */
    uint64_t def, min, max;
    double def_ratio;
    const char *def_str; /* SCHEMA_STRING default; SCHEMA_UNSUPPORTED: the feature */
    schema_fn fn;
    const struct schema_row *sub; /* SCHEMA_TABLE */
    size_t n_sub;
    bool has;       /* SCHEMA_TABLE: the bool at has_off is set to whether it was */
    size_t has_off; /* written, and the JSON leaves an unwritten one out */
    schema_json_fn json;
    schema_same_fn same;
    bool required;
    bool restart;   /* a reload cannot change it (bound to sockets, threads, files) */
    bool omit_null; /* SCHEMA_STRING: the JSON leaves NULL out instead of writing null */
} schema_row_t;

/* The row kinds, laid out by hand (clang-format would spread each over many
 * lines). Each takes extra designators at the end: ROW_RESTART, ... below. */
/* clang-format off */
#define ROW_DURATION(k, T, m, d, lo, hi, ...) {.key = k, .kind = SCHEMA_DURATION, \
    .value = SCHEMA_DURATION, .off = offsetof(T, m), .def = d, .min = lo, .max = hi, __VA_ARGS__}
#define ROW_SIZE(k, T, m, d, lo, hi, ...) {.key = k, .kind = SCHEMA_SIZE, .value = SCHEMA_SIZE, \
    .off = offsetof(T, m), .def = d, .min = lo, .max = hi, __VA_ARGS__}
#define ROW_UINT(k, T, m, d, lo, hi, ...) {.key = k, .kind = SCHEMA_UINT, .value = SCHEMA_UINT, \
    .off = offsetof(T, m), .def = d, .min = lo, .max = hi, __VA_ARGS__}
#define ROW_UINT_REQ(k, T, m, lo, hi, ...) {.key = k, .kind = SCHEMA_UINT, .value = SCHEMA_UINT, \
    .off = offsetof(T, m), .min = lo, .max = hi, .required = true, __VA_ARGS__}
#define ROW_BOOL(k, T, m, d, ...) {.key = k, .kind = SCHEMA_BOOL, .value = SCHEMA_BOOL, \
    .off = offsetof(T, m), .def = d, __VA_ARGS__}
#define ROW_RATIO(k, T, m, d, ...) {.key = k, .kind = SCHEMA_RATIO, .value = SCHEMA_RATIO, \
    .off = offsetof(T, m), .def_ratio = d, __VA_ARGS__}
#define ROW_STRING(k, T, m, d, ...) {.key = k, .kind = SCHEMA_STRING, .value = SCHEMA_STRING, \
    .off = offsetof(T, m), .def_str = d, __VA_ARGS__}
#define ROW_STRING_REQ(k, T, m, ...) {.key = k, .kind = SCHEMA_STRING, .value = SCHEMA_STRING, \
    .off = offsetof(T, m), .required = true, __VA_ARGS__}
#define ROW_TABLE(k, T, m, rows, ...) {.key = k, .kind = SCHEMA_TABLE, .off = offsetof(T, m), \
    .sub = rows, .n_sub = sizeof(rows) / sizeof((rows)[0]), __VA_ARGS__}
/* A table whose keys go into the object of the table above it. */
#define ROW_TABLE_SELF(k, rows, ...) {.key = k, .kind = SCHEMA_TABLE, .off = 0, \
    .sub = rows, .n_sub = sizeof(rows) / sizeof((rows)[0]), __VA_ARGS__}
#define ROW_CUSTOM(k, f, ...) {.key = k, .kind = SCHEMA_CUSTOM, .fn = f, __VA_ARGS__}
#define ROW_CUSTOM_REQ(k, f, ...) {.key = k, .kind = SCHEMA_CUSTOM, .fn = f, .required = true, \
    __VA_ARGS__}
#define ROW_RAW(k, ...) {.key = k, .kind = SCHEMA_RAW, __VA_ARGS__}
#define ROW_UNSUPPORTED(k, feature) {.key = k, .kind = SCHEMA_UNSUPPORTED, .def_str = feature}

#define ROW_RESTART .restart = true                             /* a reload cannot change it */
#define ROW_AS(kind, T, m) .value = kind, .off = offsetof(T, m) /* where a custom row keeps it */
#define ROW_HAS(T, m) .has = true, .has_off = offsetof(T, m)    /* a ROW_TABLE's "written" */
#define ROW_JSON(f) .json = f                     /* its JSON, when not its value's own */
#define ROW_SAME(f) .same = f                     /* its comparison, likewise */
#define ROW_OMIT_NULL .omit_null = true           /* a NULL string: no key in the JSON */
/* clang-format on */

/* What schema_apply() found: key and value node per row (value NULL when
 * absent or null). */
typedef struct schema_seen {
    const yaml_node_t *key[SCHEMA_MAX_ROWS];
    const yaml_node_t *val[SCHEMA_MAX_ROWS];
} schema_seen_t;

/* The index of the row named key in tab (every caller names one). */
size_t schema_row_of(const schema_row_t *tab, size_t n, const char *key);
#define SCHEMA_SEEN_VAL(tab, s, k) ((s).val[schema_row_of(tab, sizeof(tab) / sizeof((tab)[0]), k)])
#define SCHEMA_SEEN_KEY(tab, s, k) ((s).key[schema_row_of(tab, sizeof(tab) / sizeof((tab)[0]), k)])

/* ---- a load */

/* A context for a load of file whose values go into arena. */
void schema_ctx_init(schema_ctx_t *c, const char *file, arena_t *arena);
/* Hands the errors over to errs in file order (identical ones at one
 * position once) and frees them. errs may be NULL. */
void schema_ctx_deinit(schema_ctx_t *c, config_errors_t *errs);

/* Applies table tab to mapping map (NULL: absent, so only defaults) into
 * obj: unknown, duplicate and unsupported keys are errors; a missing
 * required key is reported at `at`. Rows are applied in table order, so a
 * row may rely on the rows above it. */
void schema_apply(schema_ctx_t *c, const yaml_node_t *map, const yaml_node_t *at, const char *path,
                  const schema_row_t *tab, size_t n, void *obj, schema_seen_t *seen);

/* ---- errors: "path: message", at a node or a position */

void schema_err(schema_ctx_t *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void schema_err_at(schema_ctx_t *c, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- nodes */

size_t schema_list_len(const yaml_node_t *n);
const yaml_node_t *schema_list_item(schema_ctx_t *c, const yaml_node_t *n, size_t i);
size_t schema_map_len(const yaml_node_t *n);
const yaml_node_t *schema_map_key(schema_ctx_t *c, const yaml_node_t *n, size_t i);
const yaml_node_t *schema_map_value(schema_ctx_t *c, const yaml_node_t *n, size_t i);
const char *schema_sval(const yaml_node_t *n);
size_t schema_slen(const yaml_node_t *n);
/* YAML's null: an empty plain value ("key:"), "~" or null. */
bool schema_is_null(const yaml_node_t *n);
/* "a string", "a list", "a mapping" or "nothing", for messages. */
const char *schema_kind_name(const yaml_node_t *n);
/* Whether n is of type (counting its values against the alias bound); an
 * error naming path when not. */
bool schema_want(schema_ctx_t *c, const yaml_node_t *n, yaml_node_type_t type, const char *path);
/* The scalar's text; NULL (and an error) for a list, a mapping or text
 * with a NUL byte, which C strings would silently cut. */
const char *schema_str(schema_ctx_t *c, const yaml_node_t *n, const char *path);
/* The i-th key of map as a string; NULL (with an error) when it is not one. */
const char *schema_key_str(schema_ctx_t *c, const yaml_node_t *map, size_t i, const char *path);
/* Calls fn with each item of list that is a string (the others are errors),
 * its index and its path ("path[i]"). */
typedef void (*schema_item_fn)(schema_ctx_t *c, const yaml_node_t *item, const char *path, size_t i,
                               const char *s, void *obj);
void schema_each_str(schema_ctx_t *c, const yaml_node_t *list, const char *path, schema_item_fn fn,
                     void *obj);

/* ---- message pieces */

typedef struct schema_quote {
    char s[SCHEMA_QUOTE_BYTES];
} schema_quote_t;

/* A scalar or a string as a double-quoted, escaped, length-capped string. */
const char *schema_qnode(schema_quote_t *b, const yaml_node_t *n);
const char *schema_qstr(schema_quote_t *b, const char *s);
/* Key paths ("routes[2].retries.attempts") into out[SCHEMA_PATH_BYTES];
 * user-written keys in them get their control characters replaced. */
void schema_path_key(char *out, const char *parent, const char *key, size_t keylen);
void schema_path_index(char *out, const char *parent, size_t i);

/* ---- the load's arena (out of memory sets c->oom) */

void *schema_alloc_array(schema_ctx_t *c, size_t n, size_t size);
char *schema_strndup(schema_ctx_t *c, const char *s, size_t len);
char *schema_strdup(schema_ctx_t *c, const char *s);
char *schema_strdup_lower(schema_ctx_t *c, const char *s, size_t len);

/* ---- walks over loaded objects */

/* The path of the first restart-only row (in table order, tables included)
 * whose value differs between a and b, written into out[SCHEMA_PATH_BYTES];
 * NULL when none does. */
const char *schema_restart_diff(const schema_row_t *tab, size_t n, const void *a, const void *b,
                                const char *path, char *out);
/* The rows' values in obj as a JSON object (a new reference; NULL when out
 * of memory). Durations and sizes are written as a file writes them. */
json_t *schema_json(const schema_row_t *tab, size_t n, const void *obj, const void *root);
/* schema_json() of each of count objects of size bytes from items: as a
 * list, or as an object keyed by the string each has at name_off. */
json_t *schema_json_array(const schema_row_t *tab, size_t n, const void *items, size_t size,
                          size_t count, const void *root);
json_t *schema_json_named(const schema_row_t *tab, size_t n, const void *items, size_t size,
                          size_t count, size_t name_off, const void *root);
/* A list of the string each of count objects of size bytes from items has
 * at str_off. */
json_t *schema_json_strings(const void *items, size_t size, size_t count, size_t str_off);

#endif
