/* The key sets of a configuration's JWT providers. Each is read once when
 * the configuration is prepared (blocking: jwks_file, or a GET of jwks_url),
 * then a jwks_url is read again every jwks_refresh off the loop (thread
 * pool) and, when a token names a kid the set lacks, at once -- at most once
 * per JWKS_REFETCH_MIN_MS. A new set replaces the old one for the workers at
 * once; the old one is retired through the workers (freed when none can
 * still hold it). A read that fails keeps the keys there were: the same
 * provider's before a reload; at start none, so every token is refused
 * until a read succeeds (fail closed). */
#ifndef FICUS_APP_JWKS_REFRESH_H
#define FICUS_APP_JWKS_REFRESH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "net/worker.h"
#include "policy/jwks.h"
#include "policy/jwks_slot.h"

typedef struct jwks_refresh jwks_refresh_t;

/* Any thread, blocking: reads every provider's keys once. NULL when out of
 * memory. cfg outlives the result. */
jwks_refresh_t *jwks_refresh_new(const config_t *cfg, worker_group_t *workers);
/* One per cfg->jwt_providers (NULL when there is none); a slot's want
 * asks for a read of a jwks_url now, at most once per JWKS_REFETCH_MIN_MS. */
jwks_slot_t *jwks_refresh_slots(jwks_refresh_t *r);
/* Main thread: a provider whose first read failed takes the keys of old's
 * provider of the same name and source (old may be NULL); the periodic
 * reads start; wake(ctx) is called after each read that ends (requests
 * waiting for a kid look again). 0 or FE_NOMEM. */
int jwks_refresh_start(jwks_refresh_t *r, uv_loop_t *loop, const jwks_refresh_t *old,
                       void (*wake)(void *ctx), void *ctx);
/* Main thread: cancels what it can; the callbacks still to come change
 * nothing. */
void jwks_refresh_stop(jwks_refresh_t *r);
/* Callbacks still to come: free only at 0. */
unsigned jwks_refresh_pending(const jwks_refresh_t *r);
void jwks_refresh_free(jwks_refresh_t *r); /* NULL is a no-op */

/* `ficus check`: reads a provider's jwks_file and parses it. 0 (err then
 * says how many keys were skipped, or is ""), or an error with the reason
 * in err (unreadable, not a JWKS, no usable key). */
int jwks_refresh_check_file(const config_jwt_provider_t *p, char *err, size_t errlen);

#endif
