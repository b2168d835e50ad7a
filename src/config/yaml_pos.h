/* Where things are in a YAML file, for messages about a configuration that
 * loaded (ficus check's lint): the file parsed again into a document, and
 * nodes found by a dotted path ("routes.2.retries.per_try_timeout":
 * mapping keys by name, sequence items by index). */
#ifndef FICUS_CONFIG_YAML_POS_H
#define FICUS_CONFIG_YAML_POS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct yaml_pos yaml_pos_t;

/* NULL with err set when the file cannot be read or parsed. */
yaml_pos_t *yaml_pos_load(const char *path, char *err, size_t errlen);
void yaml_pos_free(yaml_pos_t *p); /* NULL: no-op */

/* The line and column (1-based) of the node at path — of its key, for a
 * mapping entry. Returns true when the whole path exists; false when not,
 * with the position of the deepest part that does (the document's start
 * at worst). */
bool yaml_pos_find(const yaml_pos_t *p, const char *path, size_t *line, size_t *col);

#endif
