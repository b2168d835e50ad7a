/* One exchange of an opaque session token for a JWT with the session service
 * (session_exchange): GET url with the token in X-Session-Token, from a
 * worker's loop through client/http_client, within timeout_ms; the answer
 * judged by session_exchange_answer (sans-I/O). The url's host, when it is a
 * name, is resolved with uv_getaddrinfo and its address kept per thread (one
 * worker loop each) for DEFAULT_DNS_REFRESH_MS, forgotten at once when a
 * connect to it fails. */
#ifndef FICUS_POLICY_SESSION_EXCHANGE_H
#define FICUS_POLICY_SESSION_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "policy/session_store.h"

/* The answer body read, at most (a JWT and whitespace around it). */
#define SESSION_ANSWER_MAX_BYTES (2 * SESSION_JWT_MAX_BYTES)

typedef struct session_exchange session_exchange_t;

/* Called once, on the loop, unless cancelled first: result SESSION_USER
 * (jwt, jwt_len: the JWT, valid during the call only), SESSION_NO_USER
 * (401/404), or SESSION_UNAVAILABLE with failure the reason label of
 * ficus_session_exchange_failures_total: "connect_error" (resolving or
 * connecting failed, or the connection closed before any answer),
 * "timeout", "status" (an answer other than 200/401/404) or
 * "invalid_answer" (a malformed answer, or a 200 whose body is not one
 * JWT); failure is NULL otherwise. The exchange is gone once it returns. */
typedef void (*session_exchange_done_fn)(void *ctx, session_state_t result, const char *failure,
                                         const char *jwt, size_t jwt_len);

/* Starts GET cfg->url with X-Session-Token: <token> (token copied; cfg must
 * outlive the exchange), all of it (resolving included) within
 * cfg->timeout_ms. NULL when it cannot start (a token that is not
 * session_exchange_token_ok, an invalid url, out of memory, libuv refused):
 * no callback follows, and the caller counts the failure itself. */
session_exchange_t *session_exchange_start(uv_loop_t *loop, const config_session_exchange_t *cfg,
                                           const char *token, size_t len,
                                           session_exchange_done_fn done, void *ctx);
/* Stops an exchange whose callback has not run: no callback follows; its
 * memory goes once its handles and requests have closed (run the loop). */
void session_exchange_cancel(session_exchange_t *x);

/* Judges the session service's answer (sans-I/O): 200 with a body that is
 * one compact JWS (three non-empty base64url segments, no padding, at most
 * SESSION_JWT_MAX_BYTES once surrounding whitespace is trimmed, nothing
 * else) -> SESSION_USER, *jwt and *jwt_len pointing at it in body;
 * 401/404 -> SESSION_NO_USER; 200 with anything else -> SESSION_UNAVAILABLE,
 * *failure "invalid_answer"; any other status -> SESSION_UNAVAILABLE,
 * *failure "status". *failure is NULL when there is none. */
session_state_t session_exchange_answer(int status, const char *body, size_t len, const char **jwt,
                                        size_t *jwt_len, const char **failure);

/* Is t sane to send in a header: 1..SESSION_TOKEN_MAX_BYTES bytes of visible
 * ASCII (no space, no control character, nothing above 0x7e)? */
bool session_exchange_token_ok(const char *t, size_t len);

#endif
