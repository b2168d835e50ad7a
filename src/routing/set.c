/* Sets: an immutable open-addressing table of members, parsed sans-I/O, and
 * the live set that workers read lock-free while a reload (file or http://
 * GET, blocking, meant for a thread-pool thread) swaps in a new table. */
#include "routing/set.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "client/fetch.h"
#include "core/buf.h"
#include "core/defaults.h"
#include "core/errors.h"
#include "core/file.h"
#include "core/hash.h"
#include "core/time.h"
#include "core/url.h"
#include "routing/balancer.h"

/* ---- member table ---- */

typedef struct slot {
    uint64_t hash;
    uint32_t off; /* into bytes; MAX_SET_BYTES keeps it within 32 bits */
    uint32_t len; /* 0 = empty slot: a member is never empty */
} slot_t;

struct set_members {
    atomic_uint refs; /* sets holding it: more than one after set_adopt */
    size_t count;     /* distinct members */
    size_t mask;      /* slots - 1, slots a power of two */
    char *bytes;
    slot_t slots[];
};

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static inline bool is_trim(char c) { return c == ' ' || c == '\t' || c == '\r'; }
static inline bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Line scanner shared by both passes of the parser. */
typedef struct scan {
    const char *data;
    size_t len;
    size_t pos;
    size_t line; /* number of the line last returned, from 1 */
} scan_t;

/* Next member: 1 with its span, 0 at the end, FE_PARSE with err set. */
static int scan_next(scan_t *s, const char **member, size_t *member_len, char *err, size_t errlen)
{
    while (s->pos < s->len) {
        const char *p = s->data + s->pos;
        size_t rest = s->len - s->pos;
        const char *nl = memchr(p, '\n', rest);
        size_t n = nl ? (size_t)(nl - p) : rest;
        s->pos += nl ? n + 1 : n;
        s->line++;
        if (memchr(p, '\0', n)) {
            errf(err, errlen, "line %zu: NUL byte", s->line);
            return FE_PARSE;
        }
        size_t raw = (n && p[n - 1] == '\r') ? n - 1 : n;
        if (raw > MAX_SET_LINE_BYTES) {
            errf(err, errlen, "line %zu: longer than %d bytes", s->line, MAX_SET_LINE_BYTES);
            return FE_PARSE;
        }
        while (n && is_trim(*p)) {
            p++;
            n--;
        }
        while (n && is_trim(p[n - 1]))
            n--;
        if (n == 0 || p[0] == '#')
            continue;
        /* '#' after whitespace starts a comment too ("shop1  # moved 1 May");
         * inside a member ("a#b") it is part of it. */
        for (size_t i = 1; i < n; i++) {
            if (p[i] == '#' && is_space(p[i - 1])) {
                n = i;
                break;
            }
        }
        while (n && is_trim(p[n - 1]))
            n--;
        for (size_t i = 0; i < n; i++) {
            if (is_space(p[i])) {
                errf(err, errlen, "line %zu: member contains whitespace", s->line);
                return FE_PARSE;
            }
        }
        *member = p;
        *member_len = n;
        return 1;
    }
    return 0;
}

static bool members_insert(set_members_t *m, const char *key, size_t len, uint64_t h, size_t *used)
{
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        slot_t *sl = &m->slots[i];
        if (sl->len == 0) {
            memcpy(m->bytes + *used, key, len);
            sl->hash = h;
            sl->off = (uint32_t)*used;
            sl->len = (uint32_t)len;
            *used += len;
            m->count++;
            return true;
        }
        if (sl->hash == h && sl->len == len && memcmp(m->bytes + sl->off, key, len) == 0)
            return false; /* a duplicate is fine: kept once */
    }
}

/* set_members_parse with the failure's FE_* code in *rc, for set_reload. */
static set_members_t *members_parse(const char *data, size_t len, char *err, size_t errlen, int *rc)
{
    if (len > MAX_SET_BYTES) {
        errf(err, errlen, "larger than %d bytes", MAX_SET_BYTES);
        *rc = FE_TOOBIG;
        return NULL;
    }
    /* A UTF-8 byte order mark would silently become part of the first member. */
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        data += 3;
        len -= 3;
    }
    /* Pass 1 validates and sizes; pass 2 cannot fail. */
    scan_t s = {data, len, 0, 0};
    const char *key;
    size_t klen, n_lines = 0, n_bytes = 0;
    while ((*rc = scan_next(&s, &key, &klen, err, errlen)) == 1) {
        n_lines++;
        n_bytes += klen;
    }
    if (*rc < 0)
        return NULL;
    size_t slots = 8;
    while (slots < 2 * n_lines) /* load factor at most 1/2 */
        slots *= 2;
    set_members_t *m = calloc(1, sizeof *m + slots * sizeof(slot_t));
    if (!m)
        goto fail_nomem;
    atomic_init(&m->refs, 1);
    m->mask = slots - 1;
    m->bytes = malloc(n_bytes ? n_bytes : 1);
    if (!m->bytes)
        goto fail_free;
    s = (scan_t){data, len, 0, 0};
    size_t used = 0;
    while (scan_next(&s, &key, &klen, NULL, 0) == 1)
        members_insert(m, key, klen, hash_bytes(key, klen), &used);
    *rc = 0;
    return m;

fail_free:
    free(m);
fail_nomem:
    errf(err, errlen, "out of memory");
    *rc = FE_NOMEM;
    return NULL;
}

set_members_t *set_members_parse(const char *data, size_t len, char *err, size_t errlen)
{
    int rc;
    return members_parse(data, len, err, errlen, &rc);
}

void set_members_free(void *p)
{
    set_members_t *m = p;
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(m->bytes);
    free(m);
}

size_t set_members_count(const set_members_t *m) { return m ? m->count : 0; }

bool set_members_contains(const set_members_t *m, const char *key, size_t len)
{
    if (!m || len == 0 || m->count == 0)
        return false;
    uint64_t h = hash_bytes(key, len);
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        const slot_t *sl = &m->slots[i];
        if (sl->len == 0)
            return false;
        if (sl->hash == h && sl->len == len && memcmp(m->bytes + sl->off, key, len) == 0)
            return true;
    }
}

/* ---- the live set ---- */

struct set {
    _Atomic(set_members_t *) current;
    atomic_uint_fast64_t reload_failures;
    set_retire_fn retire;
    void *retire_ctx;
    /* Copies: a set may outlive the config snapshot it was made from. */
    char *name;
    char *file;
    char *url;
};

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = false;
    return d;
}

set_t *set_new(const config_set_t *cfg, set_retire_fn retire, void *retire_ctx)
{
    set_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->current, NULL);
    atomic_init(&s->reload_failures, 0);
    s->retire = retire;
    s->retire_ctx = retire_ctx;
    bool ok = true;
    s->name = dup_or_null(cfg->name ? cfg->name : "", &ok);
    s->file = dup_or_null(cfg->file, &ok);
    s->url = dup_or_null(cfg->url, &ok);
    if (!ok) {
        set_free(s);
        return NULL;
    }
    return s;
}

void set_free(set_t *s)
{
    if (!s)
        return;
    /* The owner frees the set once no worker can read it: no retire here. */
    set_members_free(atomic_load_explicit(&s->current, memory_order_acquire));
    free(s->name);
    free(s->file);
    free(s->url);
    free(s);
}

const char *set_name(const set_t *s) { return s->name; }

bool set_contains(const set_t *s, const char *key, size_t len)
{
    const set_members_t *m = atomic_load_explicit(&((set_t *)s)->current, memory_order_acquire);
    return set_members_contains(m, key, len);
}

const set_members_t *set_current(const set_t *s)
{
    return atomic_load_explicit(&((set_t *)s)->current, memory_order_acquire);
}

size_t set_count(const set_t *s)
{
    return set_members_count(atomic_load_explicit(&((set_t *)s)->current, memory_order_acquire));
}

void set_swap(set_t *s, set_members_t *m)
{
    set_members_t *old = atomic_exchange_explicit(&s->current, m, memory_order_acq_rel);
    if (!old)
        return;
    if (s->retire)
        s->retire(s->retire_ctx, old, set_members_free);
    else
        set_members_free(old);
}

bool set_adopt(set_t *dst, const set_t *src)
{
    set_members_t *m = atomic_load_explicit(&((set_t *)src)->current, memory_order_acquire);
    if (!m)
        return false;
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    set_swap(dst, m);
    return true;
}

uint64_t set_reload_failures(const set_t *s)
{
    return atomic_load_explicit(&((set_t *)s)->reload_failures, memory_order_relaxed);
}

int set_fetch(set_t *s, set_members_t **out, char *err, size_t errlen)
{
    const char *what = s->file ? s->file : s->url;
    char why[256] = "";
    buf_t data;
    buf_init(&data, MAX_SET_BYTES + 1);
    int rc;
    *out = NULL;
    if (s->file)
        rc = file_read(s->file, MAX_SET_BYTES, &data, why, sizeof why);
    else if (s->url)
        rc = fetch_get(s->url, SET_FETCH_HEAD_BYTES, MAX_SET_BYTES, SET_FETCH_TIMEOUT_MS, &data,
                       why, sizeof why);
    else {
        snprintf(why, sizeof why, "neither file nor url");
        rc = FE_INVAL;
    }
    if (rc == 0)
        *out = members_parse(data.data ? data.data : "", data.len, why, sizeof why, &rc);
    buf_deinit(&data);
    if (rc) {
        atomic_fetch_add_explicit(&s->reload_failures, 1, memory_order_relaxed);
        errf(err, errlen, "set %s: %s: %s", s->name, what ? what : "", why);
    }
    return rc;
}

void set_members_diff(const set_members_t *old, const set_members_t *cur, size_t *added,
                      size_t *removed)
{
    size_t common = 0;
    if (old && cur)
        for (size_t i = 0; i <= cur->mask; i++) {
            const slot_t *sl = &cur->slots[i];
            if (sl->len && set_members_contains(old, cur->bytes + sl->off, sl->len))
                common++;
        }
    *added = (cur ? cur->count : 0) - common;
    *removed = (old ? old->count : 0) - common;
}

int set_check(const config_set_t *cs, char *err, size_t errlen)
{
    set_t s = {.name = cs->name, .file = cs->file, .url = cs->url};
    set_members_t *m = NULL;
    int rc = set_fetch(&s, &m, err, errlen);
    set_members_free(m);
    return rc;
}

int set_reload(set_t *s, char *err, size_t errlen)
{
    set_members_t *m;
    int rc = set_fetch(s, &m, err, errlen);
    if (rc == 0)
        set_swap(s, m);
    return rc;
}
