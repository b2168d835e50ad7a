/* libFuzzer target for config_load_string: never crashes or leaks; a
 * failed load explains itself with FILE:LINE:COL errors in file order, and a
 * loaded snapshot's cross references all point inside it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_errors(const config_errors_t *e)
{
    size_t prev_line = 0, prev_col = 0;
    if (e->n == 0)
        abort(); /* a failure without a reason */
    for (size_t i = 0; i < e->n; i++) {
        size_t line = 0, col = 0;
        const char *p = e->items[i];
        if (strncmp(p, "fuzz.yaml:", 10) != 0)
            abort();
        p += 10;
        while (*p >= '0' && *p <= '9')
            line = line * 10 + (size_t)(*p++ - '0');
        if (*p++ != ':')
            abort();
        while (*p >= '0' && *p <= '9')
            col = col * 10 + (size_t)(*p++ - '0');
        if (*p != ':' || line == 0 || col == 0)
            abort();
        if (line < prev_line || (line == prev_line && col < prev_col))
            abort(); /* not in file order */
        prev_line = line;
        prev_col = col;
    }
}

static void check_config(const config_t *c)
{
    if (c->server.n_listeners == 0 || c->server.workers == 0 || !c->admin_listen)
        abort();
    for (size_t i = 0; i < c->n_routes; i++) {
        const config_route_t *r = &c->routes[i];
        if (!r->name || r->n_backends == 0 || !r->match.path)
            abort();
        if (r->match.kind == MATCH_REGEX && !r->match.regex)
            abort();
        if (r->match.in_set != CONFIG_NONE && r->match.in_set >= c->n_sets)
            abort();
        for (size_t j = 0; j < r->n_backends; j++) {
            const config_backend_t *b = &r->backends[j];
            if (b->target_group >= c->n_target_groups)
                abort();
            if (b->fallback != CONFIG_NONE && b->fallback >= c->n_target_groups)
                abort();
        }
    }
    for (size_t i = 0; i < c->n_target_groups; i++) {
        if (c->target_groups[i].n_targets == 0 || c->target_groups[i].index != i)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    config_errors_t e;
    config_errors_init(&e);
    config_t *c = config_load_string((const char *)data, size, "fuzz.yaml", &e);
    if (c) {
        if (e.n != 0)
            abort();
        check_config(c);
        config_ref(c);
        config_unref(c);
    } else {
        check_errors(&e);
    }
    config_unref(c);
    config_errors_deinit(&e);
    return 0;
}
