/* Strict chunked decoding and re-framing: a byte-at-a-time state machine for
 * the framing, bulk copies for the data. */
#include "http/chunked.h"

#include <string.h>

#include "core/errors.h"

enum {
    ST_SIZE_FIRST, /* first hex digit of a size */
    ST_SIZE,       /* more hex digits, or the end of them */
    ST_SIZE_WS,    /* whitespace after the size: only ';' or CR may follow */
    ST_EXT,        /* a chunk extension, up to CR */
    ST_SIZE_LF,    /* LF after the size line's CR */
    ST_DATA,
    ST_DATA_CR,
    ST_DATA_LF,
    ST_TRAILER_LINE, /* start of a trailer field line, or of the final CRLF */
    ST_TRAILER_NAME,
    ST_TRAILER_VALUE,
    ST_TRAILER_LF, /* LF ending a trailer field line */
    ST_END_LF,     /* LF of the final CRLF */
    ST_DONE
};

static bool is_tchar(unsigned char ch)
{
    /* RFC 9110 5.6.2 token characters. */
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && memchr(extra, ch, sizeof extra - 1));
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Field value and extension bytes: visible, space, tab, obs-text. */
static bool is_text(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

void http_chunked_init(http_chunked_t *c, uint32_t max_trailer_bytes)
{
    memset(c, 0, sizeof *c);
    c->max_trailer_bytes = max_trailer_bytes;
}

static size_t put_size_line(char *out, uint64_t size)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[size & 15];
        size >>= 4;
    } while (size);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

static long fail(http_chunked_t *c, const char *why)
{
    c->error = why;
    return FE_PARSE;
}

/* A byte of a trailer field line, kept when the caller keeps them. */
static bool keep(http_chunked_t *c, unsigned char ch)
{
    if (!c->trailers)
        return true;
    if (c->trailers_len == c->trailers_cap)
        return false;
    c->trailers[c->trailers_len++] = (char)ch;
    return true;
}

long http_chunked_feed(http_chunked_t *c, const char *in, size_t len, chunked_out_t mode, char *out,
                       size_t *out_len, size_t out_cap, bool *done)
{
    size_t i = 0, o = *out_len;
    *done = false;
    if (mode != CHUNKED_OUT_NONE && !out)
        mode = CHUNKED_OUT_NONE;
    while (i < len && c->state != ST_DONE) {
        unsigned char ch = (unsigned char)in[i];
        if (c->state == ST_DATA) {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            if (mode != CHUNKED_OUT_NONE) {
                if (n > out_cap - o)
                    n = out_cap - o;
                if (n == 0)
                    break;
                memcpy(out + o, in + i, n);
                o += n;
            }
            i += n;
            c->remaining -= n;
            c->data_bytes += n;
            if (c->remaining == 0)
                c->state = ST_DATA_CR;
            continue;
        }
        switch (c->state) {
        case ST_SIZE_FIRST:
        case ST_SIZE: {
            int v = hex_value(ch);
            if (v >= 0) {
                if (c->size_digits || v)
                    c->size_digits++;
                if (c->size_digits > 15)
                    return fail(c, "chunk size too large");
                c->remaining = (c->remaining << 4) | (uint64_t)v;
                c->state = ST_SIZE;
                break;
            }
            if (c->state == ST_SIZE_FIRST)
                return fail(c, "invalid chunk size");
            if (ch == '\r')
                c->state = ST_SIZE_LF;
            else if (ch == ';')
                c->state = ST_EXT;
            else if (ch == ' ' || ch == '\t')
                c->state = ST_SIZE_WS;
            else
                return fail(c, "invalid chunk size");
            break;
        }
        case ST_SIZE_WS:
            if (ch == ';')
                c->state = ST_EXT;
            else if (ch == '\r')
                c->state = ST_SIZE_LF;
            else if (ch != ' ' && ch != '\t')
                return fail(c, "invalid chunk size line");
            break;
        case ST_EXT:
            if (ch == '\r')
                c->state = ST_SIZE_LF;
            else if (!is_text(ch))
                return fail(c, "invalid chunk extension");
            break;
        case ST_SIZE_LF:
            if (ch != '\n')
                return fail(c, "chunk size line not ended by CRLF");
            if (c->remaining == 0) {
                c->state = ST_TRAILER_LINE;
                break;
            }
            if (mode == CHUNKED_OUT_REFRAME) {
                if (out_cap - o < 18)
                    goto out_full;
                o += put_size_line(out + o, c->remaining);
            }
            c->state = ST_DATA;
            break;
        case ST_DATA_CR:
            if (ch != '\r')
                return fail(c, "chunk data not followed by CRLF");
            c->state = ST_DATA_LF;
            break;
        case ST_DATA_LF:
            if (ch != '\n')
                return fail(c, "chunk data not followed by CRLF");
            if (mode == CHUNKED_OUT_REFRAME) {
                if (out_cap - o < 2)
                    goto out_full;
                out[o++] = '\r';
                out[o++] = '\n';
            }
            c->state = ST_SIZE_FIRST;
            c->size_digits = 0;
            c->line_bytes = 0;
            break;
        case ST_TRAILER_LINE:
            if (ch == '\r') {
                c->state = ST_END_LF;
            } else if (is_tchar(ch)) {
                c->state = ST_TRAILER_NAME;
                if (!keep(c, ch))
                    return fail(c, "trailer section too large");
            } else if (ch == ' ' || ch == '\t') {
                return fail(c, "obsolete line folding in the trailer section");
            } else {
                return fail(c, "invalid trailer field");
            }
            break;
        case ST_TRAILER_NAME:
            if (ch == ':')
                c->state = ST_TRAILER_VALUE;
            else if (!is_tchar(ch))
                return fail(c, "invalid trailer field name");
            if (!keep(c, ch))
                return fail(c, "trailer section too large");
            break;
        case ST_TRAILER_VALUE:
            if (ch == '\r')
                c->state = ST_TRAILER_LF;
            else if (!is_text(ch))
                return fail(c, "invalid trailer field value");
            if (!keep(c, ch))
                return fail(c, "trailer section too large");
            break;
        case ST_TRAILER_LF:
            if (ch != '\n')
                return fail(c, "trailer field not ended by CRLF");
            c->state = ST_TRAILER_LINE;
            if (!keep(c, ch))
                return fail(c, "trailer section too large");
            break;
        case ST_END_LF:
            if (ch != '\n')
                return fail(c, "trailer section not ended by CRLF");
            if (mode == CHUNKED_OUT_REFRAME) {
                size_t kept = c->trailers ? c->trailers_len : 0;
                if (out_cap - o < 5 + kept)
                    goto out_full;
                memcpy(out + o, "0\r\n", 3);
                if (kept)
                    memcpy(out + o + 3, c->trailers, kept);
                memcpy(out + o + 3 + kept, "\r\n", 2);
                o += 5 + kept;
            }
            c->state = ST_DONE;
            break;
        default:
            return fail(c, "invalid chunked state");
        }
        i++;
        if (c->state <= ST_SIZE_LF && ++c->line_bytes > CHUNKED_MAX_LINE_BYTES)
            return fail(c, "chunk size line too long");
        if (c->state >= ST_TRAILER_LINE && c->state <= ST_END_LF &&
            ++c->trailer_bytes > c->max_trailer_bytes)
            return fail(c, "trailer section too large");
    }
out_full:
    *out_len = o;
    *done = c->state == ST_DONE;
    return (long)i;
}
