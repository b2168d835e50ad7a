/* One connection to redis from one event loop (hiredis and its libuv
 * adapter), for scripts that answer integers (one, or an array of up to
 * KV_MAX_INTS) or one string (kv_eval_bulk): EVALSHA with an EVAL fallback,
 * a deadline per call, a bound on calls in flight, and reconnection with
 * exponential backoff and jitter. Never blocks; no locks: everything of a kv
 * runs on its loop. */
#ifndef FICUS_CLIENT_KV_H
#define FICUS_CLIENT_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define KV_MAX_INFLIGHT 4096         /* calls per connection; beyond: refused */
#define KV_MAX_ARGS 1024             /* keys + arguments of one call */
#define KV_MAX_ARG_BYTES (64 * 1024) /* their bytes together */
#define KV_MAX_INFLIGHT_BYTES                                                                      \
    (16 << 20)                         /* argument bytes of all calls in flight; beyond: refused */
#define KV_MAX_INTS 2048               /* integers in a reply (an array of more: FE_PARSE) */
#define KV_CONNECT_TIMEOUT_MIN_MS 1000 /* a connection attempt gets max(this, timeout_ms) */
#define KV_STALL_MIN_MS                                                                            \
    1000 /* silent this long (and 4 timeouts' worth) with calls timing out:                        \
            the connection is dropped and made again */

typedef struct kv kv_t;

typedef struct kv_opts {
    uint64_t timeout_ms;     /* per call, when the call names none */
    uint64_t backoff_min_ms; /* first wait before reconnecting after a failure or a drop */
    uint64_t backoff_max_ms; /* the wait doubles up to this (each wait jittered in [d/2, d]) */
} kv_opts_t;

/* Starts connecting to address ("host:port", "[v6]:port"; a name is resolved
 * through the loop's thread pool at each attempt). NULL on a malformed
 * address, a zero timeout or no memory. The caller owns it until kv_close. */
kv_t *kv_new(uv_loop_t *loop, const char *address, const kv_opts_t *o);
/* Starts closing: the calls in flight complete at once with FE_IO; the memory
 * is freed from the close callbacks (run the loop). kv_close(NULL) is a no-op. */
void kv_close(kv_t *kv);
/* Connected and accepting calls. */
bool kv_connected(const kv_t *kv);

typedef struct kv_call kv_call_t;

/* The end of a call, on the loop. status: 0; FE_IO (down, refused, reset, or
 * redis answered an error); FE_AGAIN (the deadline passed); FE_PARSE (the
 * reply was not an integer or an array of at most KV_MAX_INTS integers).
 * ints/n: the integer reply (n = 1) or the array's integers; valid during the
 * callback only. */
typedef void (*kv_done_fn)(void *ctx, int status, const long long *ints, size_t n);

/* A Lua script; sha1 is computed (OpenSSL) on first use when empty. Both
 * must outlive the calls that name it (a static object is the usual home). */
typedef struct kv_script {
    const char *source;
    char sha1[41];
} kv_script_t;

/* Sends EVALSHA script nkeys args... (args[0..nkeys) are the keys), falling
 * back to EVAL when redis answers NOSCRIPT. Redis runs the calls of one kv in
 * the order sent, except that a call re-sent as EVAL runs after those sent
 * meanwhile. timeout_ms 0: the kv's. NULL when it cannot be queued (not
 * connected, KV_MAX_INFLIGHT calls or KV_MAX_INFLIGHT_BYTES in flight, bounds
 * crossed, no memory): no callback then. Otherwise done runs exactly
 * once, on the loop, never from inside kv_eval, unless kv_cancel comes first.
 * The args are copied. */
kv_call_t *kv_eval(kv_t *kv, kv_script_t *script, size_t nkeys, const char *const *args,
                   const size_t *arg_lens, size_t nargs, uint64_t timeout_ms, kv_done_fn done,
                   void *ctx);
/* The end of a kv_eval_bulk call: status as kv_done_fn's (FE_PARSE: the
 * reply was not a string of at most KV_MAX_BULK_BYTES, nil or an integer);
 * then s/len the string (s non-NULL, len 0 included), or s NULL with i the
 * integer reply (0 for nil: a script that must tell nil from 0 answers
 * another integer). Valid during the callback only. */
typedef void (*kv_bulk_fn)(void *ctx, int status, const char *s, size_t len, long long i);
#define KV_MAX_BULK_BYTES (8 << 20) /* a string either way: arguments together, or the reply */

/* kv_eval for strings both ways: a script answering a string, nil or an
 * integer, whose arguments together may reach KV_MAX_BULK_BYTES (a value to
 * store; KV_MAX_INFLIGHT_BYTES still bounds all calls in flight). The same
 * rules as kv_eval otherwise. A large value holds the connection while it is
 * written or read: a user of large values keeps a kv of its own. */
kv_call_t *kv_eval_bulk(kv_t *kv, kv_script_t *script, size_t nkeys, const char *const *args,
                        const size_t *arg_lens, size_t nargs, uint64_t timeout_ms, kv_bulk_fn done,
                        void *ctx);
/* No callback follows (the reply, if any, is ignored). Only before done ran. */
void kv_cancel(kv_call_t *call);
/* Errors so far: calls that timed out, failed or were refused, failed
 * connection attempts and lost connections (ficus_redis_errors_total). */
uint64_t kv_errors(const kv_t *kv);

#endif
