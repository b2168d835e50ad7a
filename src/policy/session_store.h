/* This instance's session tokens (session_exchange), exchanged or being
 * exchanged, shared by its workers behind one short mutex: one exchange in
 * flight per token however many requests and workers carry it, its answer
 * cached until it expires, the workers that waited woken once it ends.
 * Bounded by entries and bytes. Only requests that their worker's own cache
 * missed come here. */
#ifndef FICUS_POLICY_SESSION_STORE_H
#define FICUS_POLICY_SESSION_STORE_H

#include <stddef.h>
#include <stdint.h>

/* A session token longer than this is invalid (refused before any lookup). */
#define SESSION_TOKEN_MAX_BYTES 4096
/* A JWT longer than this is not a valid answer of the session service. */
#define SESSION_JWT_MAX_BYTES 8192
/* How long a failed exchange is served to the requests that waited for it
 * (done's expires_ms is now + this); later requests try again. */
#define SESSION_STORE_UNAVAILABLE_MS 1000

typedef enum {
    SESSION_USER,        /* the service gave a JWT */
    SESSION_NO_USER,     /* the service said there is no user (401/404) */
    SESSION_UNAVAILABLE, /* the exchange failed (down, 5xx, timeout, invalid answer) */
    SESSION_PENDING,     /* someone is exchanging it: the worker is woken when it ends */
    SESSION_MINE         /* nobody was: the caller now owns the exchange */
} session_state_t;

typedef struct session_store session_store_t;

/* A store of at most max_entries tokens and max_bytes of memory (entries
 * and their tokens and JWTs) for workers 0..n_workers-1. NULL when out of
 * memory, or when a bound is 0, n_workers is 0, or max_bytes cannot hold one
 * entry with the longest token and JWT (session_store_entry_max_bytes). */
session_store_t *session_store_new(size_t max_entries, size_t max_bytes, unsigned n_workers);
/* Frees it (NULL: no-op). No worker may be using it; nobody is woken. */
void session_store_free(session_store_t *s);
/* The bytes the biggest entry takes: max_bytes must be at least this. */
size_t session_store_entry_max_bytes(unsigned n_workers);

/* How worker is woken (from any thread, outside the store's lock: a
 * uv_async_send) when an exchange it waits for ends. Set it before the
 * worker's first get; NULL: the worker is not woken. */
void session_store_set_wake(session_store_t *s, unsigned worker, void (*wake)(void *ctx),
                            void *ctx);

/* Looks token up at now_ms (a monotonic clock, the same for every worker):
 * - SESSION_USER: the JWT copied into jwt (*jwt_len bytes, not terminated)
 *   and when the entry expires in *expires_ms;
 * - SESSION_NO_USER: the service said there is none (*expires_ms set); also
 *   the answer for a token of 0 or more than SESSION_TOKEN_MAX_BYTES bytes,
 *   which is never stored;
 * - SESSION_UNAVAILABLE: the last exchange for it failed a moment ago
 *   (*expires_ms set); also when the store is out of memory, or jwt_cap is
 *   below the JWT's length (*jwt_len says how long it is);
 * - SESSION_PENDING: it is being exchanged: worker is marked as waiting and
 *   its wake will be called once when the exchange ends (ask again then);
 * - SESSION_MINE: nobody was exchanging it and nothing valid is cached: the
 *   caller owns the exchange and must call session_store_done exactly once,
 *   whatever happens (failure, cancel: SESSION_UNAVAILABLE).
 * An expired entry counts as absent. jwt_len and expires_ms may be NULL. */
session_state_t session_store_get(session_store_t *s, const char *token, size_t len,
                                  uint64_t now_ms, unsigned worker, char *jwt, size_t jwt_cap,
                                  size_t *jwt_len, uint64_t *expires_ms);

/* Ends the exchange of token that get gave the caller (SESSION_MINE):
 * result SESSION_USER with the JWT, SESSION_NO_USER, or SESSION_UNAVAILABLE
 * (SESSION_MINE, or a JWT of 0 or more than SESSION_JWT_MAX_BYTES bytes, is
 * taken as SESSION_UNAVAILABLE); the entry then answers until expires_ms
 * (USER: now + cache_ttl, no later than the JWT's exp; NO_USER: now +
 * cache_ttl; UNAVAILABLE: now + SESSION_STORE_UNAVAILABLE_MS). Or
 * SESSION_PENDING: the exchange was abandoned without an answer (its
 * request went away): the entry is dropped, so that a waiter exchanges the
 * token again rather than fail. Every worker waiting for it is woken once.
 * A token whose entry was evicted meanwhile is not stored again. */
void session_store_done(session_store_t *s, const char *token, size_t len, session_state_t result,
                        const char *jwt, size_t jwt_len, uint64_t expires_ms);

/* Entries and bytes held now (for tests and metrics). */
size_t session_store_entries(session_store_t *s);
size_t session_store_bytes(session_store_t *s);

#endif
