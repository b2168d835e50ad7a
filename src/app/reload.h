/* Reload: on SIGHUP or a change of the configuration file (its directory
 * is watched), the file is loaded off the loop and, if valid and changing
 * nothing bound at start, becomes the next generation — or, when the serving
 * configuration has a `reload` block, goes on trial beside it first and is
 * promoted or reverted on the figures (contract 10.5). A failed reload
 * leaves the previous configuration serving (logged and counted). */
#ifndef FICUS_APP_RELOAD_H
#define FICUS_APP_RELOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "app/drain.h"
#include "app/generation.h"
#include "config/config.h"
#include "observe/metrics.h"

typedef struct reload reload_t;

/* Main thread: reloads make generations of gens; none starts or applies
 * once drain is active or reload_close was called. NULL when out of memory. */
reload_t *reload_new(uv_loop_t *loop, generations_t *gens, metrics_registry_t *metrics,
                     const drain_t *drain);
/* Watches the current configuration file (not the embedded demo's). */
void reload_watch(reload_t *r);
/* Reloads now (why goes to the log); one at a time: a request during a
 * reload runs once it is done. */
void reload_start(reload_t *r, const char *why);
/* Stops the watch; no reload starts or applies from now on. */
void reload_close(reload_t *r);
/* After the loop ended. NULL is a no-op. */
void reload_free(reload_t *r);

/* Main thread: GET /config/history (contract 10.5): the configuration
 * serving, the one on trial (or null), and the last 20 loads, newest first
 * (load, number, time, hash, result, reason, and a trial's figures). A new
 * reference; NULL when out of memory. */
json_t *reload_history_json(const reload_t *r);

/* Main thread: GET /config: the serving configuration as JSON, with
 * "config" (its #N) and "trial" (null, or the configuration on trial: its
 * #N, percent, bake_left_ms and its own document under "configuration").
 * A new reference; NULL when out of memory. */
json_t *reload_config_json(const reload_t *r);

/* FNV-1a of the file's content (*ok false when it cannot be read). */
uint64_t reload_file_hash(const char *path, bool *ok);
/* Does a watch event about filename (NULL: unknown) concern the file at
 * path? Its own name, or Kubernetes' `..data` and `..<timestamp>` entries. */
bool reload_watch_concerns(const char *path, const char *filename);
/* The first setting bound to sockets, threads or files opened at start
 * ("server.listen") that differs from a to b, or NULL: such a reload is
 * refused (a takeover restart applies it). */
const char *reload_restart_only_change(const config_t *a, const config_t *b);

#endif
