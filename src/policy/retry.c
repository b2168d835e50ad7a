/* Retry and fallback rules; see retry.h. */
#include "policy/retry.h"

#include "core/defaults.h"
#include "core/rand.h"

bool retry_qualifies(const config_retries_t *r, retry_outcome_t o, int status)
{
    if (o == RETRY_OUTCOME_NONE || o == RETRY_OUTCOME_UNAVAILABLE)
        return false; /* the second is for a fallback alone */
    if (!r) {
        return o != RETRY_OUTCOME_STATUS || status >= 500;
    }
    uint32_t on = r->retry_on;
    switch (o) {
    case RETRY_OUTCOME_NONE:
    case RETRY_OUTCOME_UNAVAILABLE:
        return false;
    case RETRY_OUTCOME_CONNECT_FAILURE:
        /* 5xx covers connect failures too, as in Envoy. */
        return (on & (RETRY_ON_CONNECT_FAILURE | RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR)) != 0;
    case RETRY_OUTCOME_RESET:
        return (on & (RETRY_ON_RESET | RETRY_ON_5XX)) != 0;
    case RETRY_OUTCOME_TIMEOUT:
        return (on & (RETRY_ON_TIMEOUT | RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR)) != 0;
    case RETRY_OUTCOME_STATUS:
        if ((on & RETRY_ON_5XX) && status >= 500 && status <= 599)
            return true;
        if ((on & RETRY_ON_GATEWAY_ERROR) && status >= 502 && status <= 504)
            return true;
        for (size_t i = 0; i < r->n_retry_statuses; i++)
            if (r->retry_statuses[i] == status)
                return true;
        return false;
    }
    return false;
}

bool retry_qualifies_grpc(const config_retries_t *r, int grpc_status)
{
    if (!r)
        return false;
    switch (grpc_status) {
    case 1:
        return (r->retry_on & RETRY_ON_GRPC_CANCELLED) != 0;
    case 4:
        return (r->retry_on & RETRY_ON_GRPC_DEADLINE_EXCEEDED) != 0;
    case 8:
        return (r->retry_on & RETRY_ON_GRPC_RESOURCE_EXHAUSTED) != 0;
    case 14:
        return (r->retry_on & RETRY_ON_GRPC_UNAVAILABLE) != 0;
    default:
        return false;
    }
}

bool retry_resend_allowed(bool idempotent, bool retry_non_idempotent, retry_outcome_t o)
{
    if (o == RETRY_OUTCOME_NONE)
        return false;
    return idempotent || retry_non_idempotent || o == RETRY_OUTCOME_CONNECT_FAILURE ||
           o == RETRY_OUTCOME_UNAVAILABLE;
}

uint64_t retry_backoff_ms(uint64_t base_ms, uint32_t n, uint64_t *rng)
{
    if (base_ms == 0)
        return 0;
    uint64_t cap = base_ms * 10;
    uint64_t v = base_ms;
    for (uint32_t i = 1; i < n && v < cap; i++)
        v *= 2;
    if (v > cap)
        v = cap;
    return rand_next(rng) % (v + 1);
}

bool retry_budget_allows(uint32_t retries_in_flight, uint32_t requests_in_flight,
                         uint32_t budget_percent)
{
    if (retries_in_flight < RETRY_BUDGET_MIN_CONCURRENT)
        return true;
    return (uint64_t)retries_in_flight * 100 < (uint64_t)requests_in_flight * budget_percent;
}
