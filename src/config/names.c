/* Names in the configuration file; see names.h. */
#include "config/names.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/defaults.h"

bool names_is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

bool names_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > CONFIG_MAX_NAME_BYTES || !names_is_alnum(s[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!names_is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    }
    return true;
}

bool names_valid_token(const char *s, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!names_is_alnum(s[i]) && (s[i] == '\0' || !strchr(extra, s[i])))
            return false;
    }
    return true;
}

void names_init(schema_ctx_t *c, name_set_t *set, size_t n, bool nocase)
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

void names_free(name_set_t *set)
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

const name_slot_t *names_add(name_set_t *set, const char *s, size_t len, size_t value,
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

size_t names_find(const name_set_t *set, const char *s)
{
    const name_slot_t *slot = names_slot(set, s, strlen(s));
    return slot && slot->s ? slot->value : CONFIG_NONE;
}

const char *names_key_unique(schema_ctx_t *c, const yaml_node_t *map, size_t i, const char *path,
                             name_set_t *names, size_t value)
{
    const char *name = schema_key_str(c, map, i, path);
    if (!name)
        return NULL;
    const yaml_node_t *k = schema_map_key(c, map, i);
    const name_slot_t *first = names_add(names, name, schema_slen(k), value, k);
    if (!first)
        return name;
    char p[SCHEMA_PATH_BYTES];
    schema_path_key(p, path, name, schema_slen(k));
    schema_err(c, k, "%s: duplicate key (first at line %zu)", p, first->line);
    return NULL;
}

const char *names_entry(schema_ctx_t *c, const yaml_node_t *map, size_t i, const char *path,
                        char *p, name_set_t *names, size_t value)
{
    const char *name = names_key_unique(c, map, i, path, names, value);
    if (!name)
        return NULL;
    const yaml_node_t *k = schema_map_key(c, map, i);
    schema_quote_t q;
    schema_path_key(p, path, name, schema_slen(k));
    if (!names_valid(name))
        schema_err(c, k, "%s: invalid name %s (%s)", p, schema_qnode(&q, k), NAMES_RULE);
    return name;
}

bool names_framing_header(const char *name)
{
    static const char *const names[] = {"connection", "content-length",   "transfer-encoding",
                                        "keep-alive", "proxy-connection", "te",
                                        "trailer",    "upgrade"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i]) == 0)
            return true;
    }
    return false;
}
