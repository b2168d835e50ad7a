/* The sets of one configuration and their refresh: a blocking first read
 * when the configuration is prepared, then a re-read every refresh period
 * off the loop (thread pool), installed on the main loop. */
#ifndef FICUS_APP_SET_REFRESH_H
#define FICUS_APP_SET_REFRESH_H

#include <uv.h>

#include "config/config.h"
#include "net/worker.h"
#include "observe/metrics.h"
#include "routing/set.h"

typedef struct set_refresh set_refresh_t;

/* Any thread, blocking: creates cfg's sets and reads each once (a failed
 * read starts empty and is logged). Old members are retired through
 * workers. NULL when out of memory. cfg outlives the result. */
set_refresh_t *set_refresh_new(const config_t *cfg, metrics_registry_t *metrics,
                               worker_group_t *workers);
/* The sets, one per cfg->sets (NULL when there is none). */
set_t **set_refresh_sets(set_refresh_t *s);
/* Main thread: counts the failed first reads (a set whose first read failed
 * at a reload keeps the members old's set of that name had) and starts the
 * refresh timers. old may be NULL. */
void set_refresh_start(set_refresh_t *s, uv_loop_t *loop, const set_refresh_t *old);
/* Main thread: cancels the reads and closes the timers; the callbacks still
 * to come install nothing. */
void set_refresh_stop(set_refresh_t *s);
/* Callbacks still to come (reads, timer closes): free only at 0. */
unsigned set_refresh_pending(const set_refresh_t *s);
/* Frees the sets. NULL is a no-op. */
void set_refresh_free(set_refresh_t *s);

#endif
