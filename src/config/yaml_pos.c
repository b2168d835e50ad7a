/* Where things are in a YAML file; see yaml_pos.h. */
#include "config/yaml_pos.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct yaml_pos {
    yaml_document_t doc;
};

yaml_pos_t *yaml_pos_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    yaml_pos_t *p = calloc(1, sizeof *p);
    yaml_parser_t parser;
    if (!p || !yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "out of memory");
        free(p);
        fclose(f);
        return NULL;
    }
    yaml_parser_set_input_file(&parser, f);
    int ok = yaml_parser_load(&parser, &p->doc);
    if (!ok)
        snprintf(err, errlen, "%s: %s", path, parser.problem ? parser.problem : "not YAML");
    yaml_parser_delete(&parser);
    fclose(f);
    if (!ok) {
        free(p);
        return NULL;
    }
    return p;
}

void yaml_pos_free(yaml_pos_t *p)
{
    if (!p)
        return;
    yaml_document_delete(&p->doc);
    free(p);
}

static bool all_digits(const char *s, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

bool yaml_pos_find(const yaml_pos_t *p, const char *path, size_t *line, size_t *col)
{
    yaml_document_t *doc = (yaml_document_t *)&p->doc;
    yaml_node_t *n = yaml_document_get_root_node(doc);
    *line = *col = 1;
    if (!n)
        return false;
    *line = n->start_mark.line + 1;
    *col = n->start_mark.column + 1;
    const char *s = path;
    while (*s) {
        const char *e = strchr(s, '.');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        yaml_node_t *next = NULL;
        yaml_mark_t at = {0};
        if (n->type == YAML_MAPPING_NODE) {
            for (yaml_node_pair_t *pr = n->data.mapping.pairs.start;
                 pr < n->data.mapping.pairs.top && !next; pr++) {
                yaml_node_t *k = yaml_document_get_node(doc, pr->key);
                if (k && k->type == YAML_SCALAR_NODE && k->data.scalar.length == len &&
                    memcmp(k->data.scalar.value, s, len) == 0) {
                    next = yaml_document_get_node(doc, pr->value);
                    at = k->start_mark;
                }
            }
        } else if (n->type == YAML_SEQUENCE_NODE && all_digits(s, len) && len < 9) {
            size_t i = (size_t)strtoul(s, NULL, 10);
            yaml_node_item_t *it = n->data.sequence.items.start + i;
            if (it < n->data.sequence.items.top) {
                next = yaml_document_get_node(doc, *it);
                if (next)
                    at = next->start_mark;
            }
        }
        if (!next)
            return false;
        n = next;
        *line = at.line + 1;
        *col = at.column + 1;
        if (!e)
            break;
        s = e + 1;
    }
    return true;
}
