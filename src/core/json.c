/* The JSON string escaper; see json.h. */
#include "core/json.h"

#include <stdbool.h>
#include <string.h>

static inline bool is_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

static inline bool is_cont(unsigned char c) { return (c & 0xc0) == 0x80; }

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && is_cont(s[1]) ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
        return n >= 3 && s[1] >= lo && s[1] <= hi && is_cont(s[2]) ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
        return n >= 4 && s[1] >= lo && s[1] <= hi && is_cont(s[2]) && is_cont(s[3]) ? 4 : 0;
    }
    return 0;
}

size_t json_escape(char *out, size_t cap, const char *in, size_t n, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0;
    while (i < n) {
        /* A run of plain bytes, copied at once. */
        size_t j = i;
        while (j < n && is_plain(s[j]))
            j++;
        if (j > i) {
            size_t k = j - i < cap - o ? j - i : cap - o;
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
            if (i < j)
                break; /* out is full */
            continue;
        }
        unsigned char c = s[i];
        char esc[6];
        const char *w = esc;
        size_t wn, take = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            wn = 2;
        } else if (c < 0x80) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            wn = 6;
        } else if ((take = utf8_len(s + i, n - i)) != 0) {
            w = (const char *)s + i;
            wn = take;
        } else {
            w = "\\ufffd";
            wn = 6;
            take = 1;
        }
        if (wn > cap - o)
            break;
        memcpy(out + o, w, wn);
        o += wn;
        i += take;
    }
    *used = i;
    return o;
}
