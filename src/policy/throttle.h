/* In-flight requests of each API client on this instance, shared by all its
 * workers: one atomic counter per client id, found by id when a configuration
 * is activated and then used by pointer on every request (no lock there). */
#ifndef FICUS_POLICY_THROTTLE_H
#define FICUS_POLICY_THROTTLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* The counters by client id. A counter, once made, lives as long as the
 * throttle (the process): requests started under an old configuration release
 * the counter that a reload's new configuration also uses. Only ids that some
 * configuration named are ever added, so it grows with the configurations, not
 * with traffic. */
typedef struct throttle throttle_t;

throttle_t *throttle_new(void); /* NULL when out of memory */
void throttle_free(throttle_t *t);

/* The counter of client_id, made (at 0) on first use. Thread-safe; takes a
 * lock: call it when a configuration is activated, not per request. NULL
 * when out of memory (or client_id is NULL). */
atomic_uint *throttle_counter(throttle_t *t, const char *client_id);

/* Counts one request in on c unless that would pass max (then false and
 * nothing counted; max 0 refuses all). Never overshoots, even under races. */
bool throttle_acquire(atomic_uint *c, uint32_t max);
/* Counts one request out of c (never below 0). */
void throttle_release(atomic_uint *c);

#endif
