/* The method table; see method.h. */
#include "http/method.h"

#include <string.h>

static const struct {
    const char *token;
    unsigned char len;
    bool idempotent;
} methods[HTTP_METHOD_COUNT] = {
#define HTTP_METHOD_ROW(id, tok, idem) [HTTP_METHOD_##id] = {tok, sizeof(tok) - 1, idem},
    HTTP_METHODS(HTTP_METHOD_ROW)
#undef HTTP_METHOD_ROW
        [HTTP_METHOD_OTHER] = {"OTHER", 5, false},
};

http_method_t http_method_parse(const char *token, size_t len)
{
    for (int m = 0; m < HTTP_METHOD_OTHER; m++)
        if (methods[m].len == len && memcmp(methods[m].token, token, len) == 0)
            return (http_method_t)m;
    return HTTP_METHOD_OTHER;
}

const char *http_method_name(http_method_t m)
{
    return (unsigned)m < HTTP_METHOD_COUNT ? methods[m].token : "OTHER";
}

bool http_method_idempotent(http_method_t m)
{
    return (unsigned)m < HTTP_METHOD_COUNT && methods[m].idempotent;
}
