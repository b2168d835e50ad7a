/* Deadline header values; see deadline.h. */
#include "http/deadline.h"

#include <string.h>

#include "core/errors.h"

/* v without optional whitespace around it. */
static void trim(const char **v, size_t *n)
{
    while (*n && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*n)--;
    }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
        (*n)--;
}

/* Leading digits of v (at most max of them, all of v but `rest`). */
static int digits(const char *v, size_t n, size_t max, uint64_t *out)
{
    if (n == 0 || n > max)
        return FE_PARSE;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return FE_PARSE;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

int http_deadline_parse_ms(const char *v, size_t n, uint64_t *ms)
{
    trim(&v, &n);
    return digits(v, n, DEADLINE_MS_WIDTH, ms);
}

int http_deadline_parse_grpc(const char *v, size_t n, uint64_t *ms)
{
    trim(&v, &n);
    uint64_t x;
    if (n < 2 || digits(v, n - 1, 8, &x) != 0)
        return FE_PARSE;
    switch (v[n - 1]) {
    case 'H':
        *ms = x * 3600000;
        return 0;
    case 'M':
        *ms = x * 60000;
        return 0;
    case 'S':
        *ms = x * 1000;
        return 0;
    case 'm':
        *ms = x;
        return 0;
    case 'u':
        *ms = (x + 999) / 1000;
        return 0;
    case 'n':
        *ms = (x + 999999) / 1000000;
        return 0;
    default:
        return FE_PARSE;
    }
}

/* x right-aligned in width bytes, spaces before it. */
static void right_aligned(char *at, size_t width, uint64_t x)
{
    memset(at, ' ', width);
    size_t i = width;
    do {
        at[--i] = (char)('0' + x % 10);
        x /= 10;
    } while (x && i);
}

void http_deadline_write_ms(char *at, uint64_t ms)
{
    right_aligned(at, DEADLINE_MS_WIDTH, ms > 9999999999ull ? 9999999999ull : ms);
}

void http_deadline_write_grpc(char *at, uint64_t ms)
{
    static const struct {
        char unit;
        uint64_t ms;
    } units[] = {{'m', 1}, {'S', 1000}, {'M', 60000}, {'H', 3600000}};
    size_t u = 0;
    while (u + 1 < sizeof units / sizeof units[0] && ms / units[u].ms > 99999999)
        u++;
    uint64_t x = ms / units[u].ms;
    right_aligned(at, DEADLINE_GRPC_WIDTH - 1, x > 99999999 ? 99999999 : x);
    at[DEADLINE_GRPC_WIDTH - 1] = units[u].unit;
}
