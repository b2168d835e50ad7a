/* Cookie pairs; see cookie.h. */
#include "http/cookie.h"

#include <string.h>

static bool blank(char c) { return c == ' ' || c == '\t'; }

bool http_cookie_next(const char **p, const char *end, http_cookie_t *c)
{
    const char *s = *p;
    for (;;) {
        while (s < end && (blank(*s) || *s == ';'))
            s++;
        if (s >= end) {
            *p = end;
            return false;
        }
        const char *pair = s;
        while (s < end && *s != ';')
            s++;
        const char *pe = s;
        while (pe > pair && blank(pe[-1]))
            pe--;
        if (pe == pair)
            continue;
        const char *eq = memchr(pair, '=', (size_t)(pe - pair));
        const char *ne = eq ? eq : pe;
        while (ne > pair && blank(ne[-1]))
            ne--;
        const char *v = eq ? eq + 1 : pe;
        while (v < pe && blank(*v))
            v++;
        const char *ve = pe;
        if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"') {
            v++;
            ve--;
        }
        *c = (http_cookie_t){pair, (size_t)(pe - pair), pair, (size_t)(ne - pair),
                             v,    (size_t)(ve - v)};
        *p = s;
        return true;
    }
}
