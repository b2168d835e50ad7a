/* Value syntaxes of the configuration file; see units.h. Numbers are read
 * as a whole part and a decimal fraction kept as integers, so "1.5s" is
 * exactly 1500ms and a value that is not a whole unit is refused, never
 * rounded. */
#include "config/units.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"

/* Nine decimals keep frac * unit below 2^64 for every unit used here. */
#define MAX_DECIMALS 9
#define KIB 1024ull

typedef struct number {
    uint64_t whole;
    uint64_t frac;  /* decimal digits after the point, as an integer */
    uint64_t scale; /* 10^(number of those digits) */
} number_t;

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Reads digits[.digits] (at least one digit) at *pp and advances it. */
static int read_number(const char **pp, number_t *n, const char **why)
{
    const char *p = *pp;
    bool any = false;
    n->whole = 0;
    n->frac = 0;
    n->scale = 1;
    for (; is_digit(*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (n->whole > (UINT64_MAX - d) / 10) {
            *why = "too large";
            return FE_TOOBIG;
        }
        n->whole = n->whole * 10 + d;
        any = true;
    }
    if (*p == '.') {
        p++;
        if (!is_digit(*p))
            return FE_PARSE;
        for (; is_digit(*p); p++) {
            if (n->scale == 1000000000ull) {
                *why = "at most 9 decimals";
                return FE_PARSE;
            }
            n->frac = n->frac * 10 + (uint64_t)(*p - '0');
            n->scale *= 10;
        }
        any = true;
    }
    if (!any)
        return FE_PARSE;
    *pp = p;
    return 0;
}

/* n * mult, exact: FE_PARSE when the fraction leaves a remainder. */
static int scale_number(const number_t *n, uint64_t mult, uint64_t *out)
{
    if (n->whole > UINT64_MAX / mult)
        return FE_TOOBIG;
    uint64_t v = n->whole * mult;
    uint64_t f = n->frac * mult;
    if (f % n->scale != 0)
        return FE_PARSE;
    f /= n->scale;
    if (v > UINT64_MAX - f)
        return FE_TOOBIG;
    *out = v + f;
    return 0;
}

static bool word_is(const char *w, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(w, lit, len) == 0;
}

static bool word_is_nocase(const char *w, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(w, lit, len) == 0;
}

static uint64_t duration_unit_ms(const char *u, size_t len)
{
    if (word_is(u, len, "ms"))
        return 1;
    if (word_is(u, len, "s"))
        return 1000;
    if (word_is(u, len, "m"))
        return 60 * 1000;
    if (word_is(u, len, "h"))
        return 60 * 60 * 1000;
    return 0;
}

int units_parse_duration_ms(const char *s, uint64_t *out, const char **why)
{
    static const char hint[] = "use a unit: 250ms, 5s, 2m, 1h";
    *why = hint;
    if (!s || !*s)
        return FE_PARSE;
    if (*s == '-') {
        *why = "durations cannot be negative";
        return FE_PARSE;
    }
    uint64_t total = 0;
    const char *p = s;
    /* Several parts add up, as in Go: "1h30m", "1s500ms". */
    while (*p) {
        number_t n;
        int rc = read_number(&p, &n, why);
        if (rc != 0)
            return rc;
        const char *u = p;
        while (is_alpha(*p))
            p++;
        uint64_t mult = duration_unit_ms(u, (size_t)(p - u));
        if (mult == 0) {
            *why = hint;
            return FE_PARSE;
        }
        uint64_t v;
        rc = scale_number(&n, mult, &v);
        if (rc != 0) {
            *why = rc == FE_PARSE ? "finer than 1ms" : "too large";
            return rc;
        }
        if (total > UINT64_MAX - v) {
            *why = "too large";
            return FE_TOOBIG;
        }
        total += v;
    }
    *out = total;
    *why = NULL;
    return 0;
}

int units_parse_size(const char *s, uint64_t *out, const char **why)
{
    static const char hint[] = "use bytes or a binary unit: 16KiB, 8MiB, 1GiB";
    *why = hint;
    if (!s || !*s)
        return FE_PARSE;
    if (*s == '-') {
        *why = "sizes cannot be negative";
        return FE_PARSE;
    }
    const char *p = s;
    number_t n;
    int rc = read_number(&p, &n, why);
    if (rc != 0)
        return rc;
    const char *u = p;
    while (is_alpha(*p))
        p++;
    size_t ul = (size_t)(p - u);
    if (*p != '\0') {
        *why = hint;
        return FE_PARSE;
    }
    uint64_t mult = 0;
    if (ul == 0)
        mult = 1;
    else if (word_is(u, ul, "KiB"))
        mult = KIB;
    else if (word_is(u, ul, "MiB"))
        mult = KIB * KIB;
    else if (word_is(u, ul, "GiB"))
        mult = KIB * KIB * KIB;
    if (mult == 0) {
        static const char *const decimal[] = {"k", "kb", "m", "mb", "g", "gb"};
        static const char *const binary[] = {"kib", "mib", "gib"};
        *why = hint;
        for (size_t i = 0; i < sizeof decimal / sizeof decimal[0]; i++) {
            if (word_is_nocase(u, ul, decimal[i]))
                *why = "KB, MB, GB are ambiguous: use KiB, MiB, GiB (powers of 1024)";
        }
        for (size_t i = 0; i < sizeof binary / sizeof binary[0]; i++) {
            if (word_is_nocase(u, ul, binary[i]))
                *why = "units are case-sensitive: KiB, MiB, GiB";
        }
        return FE_PARSE;
    }
    rc = scale_number(&n, mult, out);
    if (rc == FE_PARSE)
        *why = "not a whole number of bytes";
    else if (rc == FE_TOOBIG)
        *why = "too large";
    else
        *why = NULL;
    return rc;
}

int units_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE"};
    static const char *const no[] = {"false", "False", "FALSE"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return FE_PARSE;
}

int units_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why)
{
    *why = "not a whole number";
    if (!s || !*s)
        return FE_PARSE;
    if (*s == '-') {
        *why = "cannot be negative";
        return FE_PARSE;
    }
    uint64_t v = 0;
    bool overflow = false;
    for (const char *p = s; *p; p++) {
        if (!is_digit(*p))
            return FE_PARSE;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    if (overflow || v < min || v > max) {
        *why = "out of range";
        return FE_TOOBIG;
    }
    *out = v;
    *why = NULL;
    return 0;
}

int units_parse_decimal(const char *s, double *out)
{
    const char *p = s;
    const char *why;
    number_t n;
    if (!s || read_number(&p, &n, &why) != 0 || *p != '\0')
        return FE_PARSE;
    *out = (double)n.whole + (double)n.frac / (double)n.scale;
    return 0;
}

size_t units_format_duration(uint64_t ms, char *buf, size_t n)
{
    static const struct {
        uint64_t ms;
        const char *unit;
    } units[] = {{60 * 60 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}};
    const char *unit = "ms";
    uint64_t v = ms;
    for (size_t i = 0; ms != 0 && i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].ms == 0) {
            v = ms / units[i].ms;
            unit = units[i].unit;
            break;
        }
    }
    if (ms == 0)
        unit = "s";
    int w = snprintf(buf, n, "%llu%s", (unsigned long long)v, unit);
    return w < 0 ? 0 : (size_t)w;
}

size_t units_format_size(uint64_t bytes, char *buf, size_t n)
{
    static const struct {
        uint64_t bytes;
        const char *unit;
    } units[] = {{KIB * KIB * KIB, "GiB"}, {KIB * KIB, "MiB"}, {KIB, "KiB"}};
    const char *unit = "";
    uint64_t v = bytes;
    for (size_t i = 0; bytes != 0 && i < sizeof units / sizeof units[0]; i++) {
        if (bytes % units[i].bytes == 0) {
            v = bytes / units[i].bytes;
            unit = units[i].unit;
            break;
        }
    }
    int w = snprintf(buf, n, "%llu%s", (unsigned long long)v, unit);
    return w < 0 ? 0 : (size_t)w;
}
