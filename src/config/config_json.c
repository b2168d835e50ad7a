/* config_t -> JSON; see config_json.h. The rows of config_rows.c say how
 * each key is shown: this only adds where the snapshot came from. */
#include "config/config_json.h"

#include "config/config_rows.h"
#include "config/schema.h"

json_t *config_json(const config_t *cfg)
{
    json_t *out = json_object();
    json_t *rows = schema_json(config_rows, config_rows_n, cfg, cfg);
    if (!out || !rows || json_object_set_new(out, "source", json_string(cfg->path)) != 0 ||
        json_object_update(out, rows) != 0) {
        json_decref(out);
        json_decref(rows);
        return NULL;
    }
    json_decref(rows);
    return out;
}
