/* Graceful shutdown: /readyz fails at once; the listeners keep serving for
 * drain_delay, then close with the idle connections; requests in flight
 * are answered with Connection: close; done when no connection is left or
 * at drain_timeout. After a takeover the listeners close at once. */
#ifndef FICUS_APP_DRAIN_H
#define FICUS_APP_DRAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "net/worker.h"

typedef struct drain drain_t;

/* Main thread: on_done(ctx) runs on loop when a drain is over (every worker
 * drained, drain_timeout, or a second drain_begin). workers' app is a
 * proxy_worker_t. NULL when out of memory. */
drain_t *drain_new(uv_loop_t *loop, worker_group_t *workers, void (*on_done)(void *ctx), void *ctx);
/* SIGTERM: serve for delay_ms, then close the listeners; in-flight requests
 * get timeout_ms. A second call ends the drain now. */
void drain_begin(drain_t *d, uint64_t delay_ms, uint64_t timeout_ms);
/* A new process serves the listeners: close them now; idle connections get
 * TAKEOVER_IDLE_GRACE_MS, the others timeout_ms. */
void drain_handover(drain_t *d, uint64_t timeout_ms);
/* True once a drain began. */
bool drain_active(const drain_t *d);
/* Closes the timer and the wake-up handle. NULL is a no-op. */
void drain_close(drain_t *d);
/* After the loop ended. NULL is a no-op. */
void drain_free(drain_t *d);

#endif
