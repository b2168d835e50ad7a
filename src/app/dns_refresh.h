/* Names of targets: resolved once, blocking, when a configuration is
 * prepared, then re-resolved every dns_refresh on the main loop. A failed
 * lookup keeps the last good address. */
#ifndef FICUS_APP_DNS_REFRESH_H
#define FICUS_APP_DNS_REFRESH_H

#include <uv.h>

#include "config/config.h"
#include "net/worker.h"
#include "policy/health.h"

typedef struct dns_refresh dns_refresh_t;

/* Any thread, blocking: resolves cfg's named targets into cfg (a name that
 * does not resolve leaves its target unusable, and is logged). */
void dns_refresh_resolve(config_t *cfg);
/* Main thread: re-resolves cfg's named targets every dns_refresh into
 * health's addresses (old ones retired through workers). NULL when out of
 * memory. cfg and health outlive the result. */
dns_refresh_t *dns_refresh_start(uv_loop_t *loop, const config_t *cfg, health_t *health,
                                 worker_group_t *workers);
/* Cancels the lookups and closes the timers; the callbacks still to come
 * change nothing. */
void dns_refresh_stop(dns_refresh_t *d);
/* Callbacks still to come (lookups, timer closes): free only at 0. */
unsigned dns_refresh_pending(const dns_refresh_t *d);
/* NULL is a no-op. */
void dns_refresh_free(dns_refresh_t *d);

#endif
