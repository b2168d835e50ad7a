/* Per-instance target state shared by every worker through atomics: active
 * health-check verdicts, outlier ejections, in-flight counts, circuit-breaker
 * counters of each group, and each target's current address (re-resolved by
 * DNS). Workers read it on every pick; failures update it. */
#ifndef FICUS_POLICY_HEALTH_H
#define FICUS_POLICY_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"

typedef struct health_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} health_addr_t;

typedef struct health_target {
    _Atomic(health_addr_t *) addr; /* NULL: not resolved (yet) */
    atomic_uint checked_healthy;   /* 1 until active checks say otherwise */
    atomic_uint consecutive_errors;
    atomic_uint_fast64_t ejected_until_ms; /* monotonic; 0 = never ejected */
    atomic_uint ejections;                 /* times ejected so far */
    atomic_uint inflight;                  /* requests in flight, all workers */
    atomic_uint ejection_open;             /* ejected, its return not logged yet */
    uint32_t hc_successes;                 /* health-check thread only */
    uint32_t hc_failures;
} health_target_t;

typedef struct health_group {
    const config_target_group_t *cfg;
    health_target_t *targets;
    size_t n;
    atomic_uint connections; /* circuit breaker: open upstream connections */
    atomic_uint pending;     /* requests waiting for a connection */
    atomic_uint requests;    /* requests in flight */
    atomic_flag eject_lock;  /* serialises ejection decisions (failure path only) */
    atomic_uint panic;       /* 1 while fewer than panic_threshold % are usable */
} health_group_t;

typedef struct health {
    health_group_t *groups;
    size_t n_groups;
} health_t;

/* State for every group of cfg; numeric targets get their address now. */
health_t *health_new(const config_t *cfg);
void health_free(health_t *h);
/* After a reload: targets of h that old also had (same group and target
 * names) keep their verdicts, ejections and, when h has none, their address.
 * Breaker counters are not carried: old's in-flight work releases into old. */
void health_inherit(health_t *h, const health_t *old);

/* Usable: healthy by active checks, not ejected, and resolved. */
bool health_target_usable(const health_target_t *t, uint64_t now_ms);
bool health_target_ejected(const health_target_t *t, uint64_t now_ms);
size_t health_group_usable(const health_group_t *g, uint64_t now_ms);

/* Panic mode (as Envoy): true when fewer than the group's panic_threshold
 * percent of its targets are usable, given `usable` of them. Logs and
 * records the transitions (ficus_panic_mode). */
bool health_group_panic(health_group_t *g, size_t usable);

/* Records the result of a try for outlier detection. Returns true when this
 * call ejected the target (for the ejection counter). */
bool health_record(health_group_t *g, size_t target, bool failure, uint64_t now_ms);

/* An active check's verdict (health-check thread). Returns +1 when the target
 * just became healthy, -1 when it just became unhealthy, 0 otherwise. */
int health_check_result(health_group_t *g, size_t target, bool ok);

/* Circuit breaker: takes one unit of c unless it is at max. */
bool health_acquire(atomic_uint *c, uint32_t max);
void health_release(atomic_uint *c);

/* Installs a new address; the old one goes to retire (or is freed at once
 * when retire is NULL). */
void health_set_addr(health_target_t *t, const struct sockaddr *sa, socklen_t len,
                     void (*retire)(void *ctx, void *ptr, void (*free_fn)(void *)),
                     void *retire_ctx);

#endif
