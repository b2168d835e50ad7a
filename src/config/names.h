/* Names in the configuration file: what a name or a token may be, and the
 * hashed sets the rows keep while a file is read (duplicates, references
 * from one section to another), so that a large generated file does not
 * make the checks quadratic. */
#ifndef FICUS_CONFIG_NAMES_H
#define FICUS_CONFIG_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include "config/schema.h"

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

/* Route, target group, set, client and provider names:
 * [A-Za-z0-9][A-Za-z0-9_.-]* */
bool names_valid(const char *s);
#define NAMES_RULE "use letters, digits, '_', '.' and '-', starting with a letter or digit"
/* An HTTP token (RFC 9110 tchar): header names, cookie names. */
bool names_valid_token(const char *s, size_t len);
bool names_is_alnum(char ch);
/* Headers that frame the message or the connection: never set by a rule. */
bool names_framing_header(const char *name);

/* Room for n names (an error on c when out of memory). */
void names_init(schema_ctx_t *c, name_set_t *set, size_t n, bool nocase);
void names_free(name_set_t *set);
/* Adds s (written at node at) -> value. Returns the earlier equal name,
 * and adds nothing then; else NULL. At most the n given to names_init. */
const name_slot_t *names_add(name_set_t *set, const char *s, size_t len, size_t value,
                             const yaml_node_t *at);
/* The value of s, or CONFIG_NONE. */
size_t names_find(const name_set_t *set, const char *s);
/* Key i of map, added to names (an error when it is there already): the
 * key, or NULL to skip the pair. */
const char *names_key_unique(schema_ctx_t *c, const yaml_node_t *map, size_t i, const char *path,
                             name_set_t *names, size_t value);
/* A mapping of name -> object (target_groups, sets, jwt_providers): the
 * name checked, the object registered even when it has errors, so that
 * references to it do not add errors of their own. Returns the name (with
 * its path in p) or NULL to skip the pair. */
const char *names_entry(schema_ctx_t *c, const yaml_node_t *map, size_t i, const char *path,
                        char *p, name_set_t *names, size_t value);

#endif
