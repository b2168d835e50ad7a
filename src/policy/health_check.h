/* Active health checks (main thread): every `interval`, an HTTP GET of `path`
 * to each target of a group that has a health_check block; 2xx within
 * `timeout` is a success. Verdicts go to the shared state in policy/health,
 * where healthy_threshold / unhealthy_threshold turn them into transitions.
 * A group with `tls` is checked over TLS with the group's client context,
 * the same names sent and checked as its connections (a failed handshake
 * is a failed check). */
#ifndef FICUS_POLICY_HEALTH_CHECK_H
#define FICUS_POLICY_HEALTH_CHECK_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "policy/health.h"

typedef struct health_checker health_checker_t;

/* Called on each transition: +1 healthy, -1 unhealthy. */
typedef void (*health_check_event_fn)(void *ctx, size_t group, size_t target, int transition);

struct tls_client;

/* NULL when no group has health checks (or out of memory). tls: per group,
 * its TLS client context (NULL: cleartext), held by the caller while the
 * checker runs; NULL: no group has TLS. */
health_checker_t *health_checker_start(uv_loop_t *loop, const config_t *cfg, health_t *h,
                                       struct tls_client *const *tls,
                                       health_check_event_fn on_change, void *ctx);
/* Closes every handle; frees on the loop's next turns. NULL is a no-op. */
void health_checker_stop(health_checker_t *c);

#endif
