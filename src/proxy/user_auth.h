/* The user admission step (route auth.user): the bearer JWT of
 * Authorization verified with the route's provider, or -- with
 * session_exchange for that provider -- the session token of the cookie or
 * header exchanged with the session service for a JWT (one exchange per
 * token for the whole instance; the request waits for it), verified too and
 * forwarded as Authorization: Bearer. The provider's forward_claims become
 * headers upstream. What a token gave is kept per worker until its expiry,
 * so a repeated token costs a lookup, not a signature check.
 *
 * Failures: no token -> 401 when the route requires a user, else the
 * request goes on without one; an invalid token -> 401 always; the session
 * service down, failing or late -> 503 when a user is required, else on
 * without one. No failure path lets a request on as a user. */
#ifndef FICUS_PROXY_USER_AUTH_H
#define FICUS_PROXY_USER_AUTH_H

#include "proxy/admission.h"
#include "proxy/request.h"

/* Worker set-up: its caches, and the session store's wake. 0 or FE_NOMEM. */
int user_auth_worker_init(proxy_worker_t *pw);
/* Worker stop: exchanges under way are abandoned (their waiters elsewhere
 * take over), the store no longer wakes this worker. */
void user_auth_worker_stop(proxy_worker_t *pw);
void user_auth_worker_deinit(proxy_worker_t *pw);

/* The step (subject: a request_t). */
admit_t user_auth_run(void *subject, admission_deny_t *deny);

#endif
