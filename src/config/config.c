/* The configuration loader: YAML (libyaml's document API, which keeps each
 * node's line and column) -> a validated, immutable config_t in one arena.
 * The rows of config_rows.c say what each key is; the engine of schema.c
 * applies them. Errors are collected, never fatal, and handed back sorted
 * in file order. Also: lookups, and what a reload may not change. */
#include "config/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config/config_rows.h"
#include "config/schema.h"
#include "config/units.h"
#include "core/defaults.h"
#include "core/errors.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

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

/* ------------------------------------------------------------ the loader */

static void yaml_error(schema_ctx_t *c, const yaml_parser_t *p, const char *yaml, size_t len)
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
            schema_err_at(c, line, col, "invalid YAML: %s (byte 0x%02X)", problem,
                          (unsigned)p->problem_value);
        else
            schema_err_at(c, line, col, "invalid YAML: %s", problem);
        return;
    }
    size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
    /* The most common YAML mistake gets a plain answer. */
    if (p->problem_mark.index < len && yaml[p->problem_mark.index] == '\t')
        schema_err_at(c, line, col, "invalid YAML: a tab cannot indent YAML; use spaces");
    else if (p->context)
        schema_err_at(c, line, col, "invalid YAML: %s (%s at line %zu, column %zu)", problem,
                      p->context, (size_t)p->context_mark.line + 1,
                      (size_t)p->context_mark.column + 1);
    else
        schema_err_at(c, line, col, "invalid YAML: %s", problem);
}

static void parse_yaml(schema_ctx_t *c, const char *yaml, size_t len, config_t *cfg)
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
        schema_err_at(c, 1, 1, "the configuration is empty");
    } else {
        if (!yaml_parser_load(&parser, &next)) {
            yaml_error(c, &parser, yaml, len);
        } else {
            if (yaml_document_get_root_node(&next))
                schema_err_at(c, next.start_mark.line + 1, next.start_mark.column + 1,
                              "only one YAML document is allowed; found a second one");
            yaml_document_delete(&next);
        }
        /* Four walks of every node is plenty; aliases may add a bounded
         * number of values on top. */
        size_t nodes = (size_t)(doc.nodes.top - doc.nodes.start);
        c->values_max = c->values_left = 4 * nodes + CONFIG_MAX_ALIAS_VALUES;
        c->doc = &doc;
        config_rows_load(c, root, cfg);
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
    schema_ctx_t c;
    const char *file = name ? name : "<config>";
    config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        if (errs)
            config_errors_add(errs, file, 0, 0, "out of memory");
        return NULL;
    }
    atomic_init(&cfg->refs, 1);
    arena_init(&cfg->arena, 16 * 1024);
    schema_ctx_init(&c, file, &cfg->arena);
    cfg->path = schema_strdup(&c, c.file);
    parse_yaml(&c, yaml, len, cfg);
    cfg->key_pos = c.key_pos;
    if (c.oom)
        schema_err_at(&c, 0, 0, "out of memory");
    bool ok = c.n_diags == 0 && !c.oom;
    schema_ctx_deinit(&c, errs);
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

/* ----------------------------------------------------------------- reload */

void config_key_position(const config_t *cfg, const char *key, size_t *line, size_t *col)
{
    *line = *col = 0;
    for (const config_key_pos_t *p = cfg->key_pos; p; p = p->next)
        if (strcmp(key, p->key) == 0) {
            *line = p->line;
            *col = p->col;
        }
}

const char *config_restart_only_change(const config_t *old, const config_t *new)
{
    static _Thread_local char key[SCHEMA_PATH_BYTES];
    return schema_restart_diff(config_rows, config_rows_n, old, new, "", key);
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

size_t config_client_by_cn(const config_t *c, const char *cn, size_t len)
{
    size_t lo = 0, hi = c->n_cert_cns;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = c->cert_cns[mid].cn;
        size_t mlen = strlen(m);
        int d = memcmp(m, cn, mlen < len ? mlen : len); /* strcmp's order, as sorted */
        if (d == 0)
            d = mlen < len ? -1 : mlen > len ? 1 : 0;
        if (d == 0)
            return c->cert_cns[mid].client;
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return CONFIG_NONE;
}
