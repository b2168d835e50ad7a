/* libFuzzer target for session_exchange_answer and session_exchange_token_ok:
 * the first two bytes are the status (big-endian), the rest the body. Never
 * crashes; a user's JWT is a trimmed piece of the body made of three
 * non-empty base64url segments, no longer than SESSION_JWT_MAX_BYTES; every
 * failure has a reason; a sane token is visible ASCII only. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/session_exchange.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_jwt(const char *body, size_t len, const char *jwt, size_t jwt_len)
{
    if (!jwt || jwt < body || jwt_len == 0 || jwt_len > SESSION_JWT_MAX_BYTES ||
        (size_t)(jwt - body) + jwt_len > len)
        abort();
    size_t dots = 0;
    for (size_t i = 0; i < jwt_len; i++) {
        char c = jwt[i];
        if (c == '.')
            dots++;
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_'))
            abort();
    }
    if (dots != 2 || jwt[0] == '.' || jwt[jwt_len - 1] == '.' || memmem(jwt, jwt_len, "..", 2))
        abort();
    /* Only whitespace around it. */
    for (const char *p = body; p < jwt; p++)
        if (!strchr(" \t\r\n", *p) || *p == '\0')
            abort();
    for (const char *p = jwt + jwt_len; p < body + len; p++)
        if (!strchr(" \t\r\n", *p) || *p == '\0')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int status = data[0] << 8 | data[1];
    const char *body = (const char *)data + 2;
    size_t len = size - 2;
    const char *jwt, *failure;
    size_t jwt_len;
    session_state_t r = session_exchange_answer(status, body, len, &jwt, &jwt_len, &failure);
    switch (r) {
    case SESSION_USER:
        if (status != 200 || failure)
            abort();
        check_jwt(body, len, jwt, jwt_len);
        break;
    case SESSION_NO_USER:
        if ((status != 401 && status != 404) || failure || jwt)
            abort();
        break;
    case SESSION_UNAVAILABLE:
        if (!failure || jwt || jwt_len)
            abort();
        if (strcmp(failure, status == 200 ? "invalid_answer" : "status") != 0)
            abort();
        break;
    default:
        abort();
    }
    if (session_exchange_token_ok(body, len)) {
        if (len == 0 || len > SESSION_TOKEN_MAX_BYTES)
            abort();
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)body[i] <= 0x20 || (unsigned char)body[i] >= 0x7f)
                abort();
    }
    return 0;
}
