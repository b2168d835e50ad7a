/* libFuzzer target for jwks_parse: any document bytes. Never crashes or
 * leaks; a set parsed holds at most JWKS_MAX_KEYS keys, and the lookup never
 * offers more keys than it holds. */
#include <stdint.h>
#include <stdlib.h>

#include "config/config.h"
#include "policy/jwks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[160];
    jwks_t *k = jwks_parse((const char *)data, size, err, sizeof err);
    if (!k)
        return 0;
    size_t n = jwks_count(k);
    if (n > JWKS_MAX_KEYS)
        abort();
    for (uint32_t alg = JWT_ALG_RS256; alg <= JWT_ALG_EDDSA; alg <<= 1) {
        size_t pos = 0, seen = 0;
        while (jwks_next(k, NULL, 0, alg, &pos))
            if (++seen > n)
                abort();
    }
    jwks_unref(jwks_ref(k));
    jwks_unref(k);
    return 0;
}
