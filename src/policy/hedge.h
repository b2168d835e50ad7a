/* Hedging (contract 10.3): when a route's try has no response head after a
 * delay, a second try races it. This is the policy half, sans-I/O and
 * worker-local: the delay (fixed, or the backend's own p95/p99 over the last
 * minute, learned from the route's response heads) and the cap (at most
 * max_percent of the route's requests start a hedge). The request path
 * (proxy/proxy.c) runs the race.
 *
 * The cap is a token bucket in hundredths of a hedge: every request of the
 * route adds max_percent, a hedge takes 100, and the bucket holds at most
 * one hedge plus one request's share, so hedges never exceed max_percent of
 * the requests over any stretch longer than a burst of one. It starts full:
 * the first slow request may hedge.
 *
 * The learned delay: per backend, six 10-second windows of a log-linear
 * histogram of time-to-response-head (8 slots per doubling, so a percentile
 * is at most 12.5% above the truth); the percentile over the windows of the
 * last minute is recomputed at most once a second (at every sample while
 * there is none yet). Below
 * HEDGE_MIN_SAMPLES samples in the last minute there is no delay to use and
 * no hedge. Memory: HEDGE_WINDOWS x HEDGE_SLOTS x 4 bytes (4.6 KiB) per
 * backend of a route with a learned delay, per worker. */
#ifndef FICUS_POLICY_HEDGE_H
#define FICUS_POLICY_HEDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define HEDGE_WINDOWS 6
#define HEDGE_WINDOW_MS 10000u
#define HEDGE_SLOTS 192 /* 8 per doubling up to 67 s; the last takes the rest */
#define HEDGE_MIN_SAMPLES 20

typedef struct hedge hedge_t;

/* A route's hedging state for one worker (NULL when out of memory). */
hedge_t *hedge_new(const config_hedge_t *cfg, size_t n_backends);
void hedge_free(hedge_t *h); /* NULL: no-op */

/* A request of the route began: its share of the cap. */
void hedge_note_request(hedge_t *h);
/* A hedge wants to start: true when the cap allows it (and takes it). */
bool hedge_take(hedge_t *h);

/* A response head from backend's group came latency_us after its try began
 * (only kept when the delay is learned). */
void hedge_record(hedge_t *h, size_t backend, uint64_t now_ms, uint64_t latency_us);
/* How long a try to backend waits before its hedge, in ms (at least 1);
 * 0 when there is none (a learned delay without enough samples). */
uint64_t hedge_delay_ms(hedge_t *h, size_t backend, uint64_t now_ms);

/* The slot of a latency and a slot's upper bound (exposed for tests). */
size_t hedge_slot(uint64_t latency_us);
uint64_t hedge_slot_upper_us(size_t slot);

#endif
