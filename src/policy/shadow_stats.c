/* Shadow comparison figures per route and Diffy's noise rule; see
 * shadow_stats.h. Rates are compared in exact integer arithmetic, so the
 * 20% / 0.03% edges are where the contract puts them. */
#include "policy/shadow_stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/log.h"

#define INDEX_SLOTS (2 * SHADOW_MAX_FIELDS) /* open addressing, at most half full */
#define OTHER SHADOW_MAX_FIELDS             /* field index of the pooled "other" */
#define NO_SERIES (-1)

typedef struct {
    char name[SHADOW_FIELD_MAX_BYTES + 1];
    uint64_t mismatches; /* comparisons in which it differed */
    uint64_t noise;      /* noise comparisons in which it differed */
    uint64_t counted;    /* mismatches the rule counted */
    int series;          /* its own /metrics series, or NO_SERIES (counted as "other") */
} field_t;

typedef struct {
    char request_id[SHADOW_EXAMPLE_MAX_BYTES + 1];
    char pointer[SHADOW_EXAMPLE_MAX_BYTES + 1];
    char old_value[SHADOW_EXAMPLE_MAX_BYTES + 1];
    char new_value[SHADOW_EXAMPLE_MAX_BYTES + 1];
    bool has_old, has_new; /* false: absent on that side */
} example_t;

struct shadow_route {
    char *name;
    bool shown; /* rendered in /metrics (main thread) */
    _Atomic uint64_t counts[SHADOW_RESULTS];

    pthread_mutex_t lock; /* everything below */
    uint64_t compared, noise_compared;
    size_t n_fields, n_series;
    field_t fields[SHADOW_MAX_FIELDS + 1]; /* [OTHER] pools the fields past the table */
    uint16_t index[INDEX_SLOTS];           /* field index + 1; 0 = free */
    uint64_t other_series;                 /* counted mismatches of fields without a series */
    example_t examples[SHADOW_EXAMPLES];   /* a ring, oldest at next once full */
    size_t next_example, n_examples;
};

struct shadow_stats {
    size_t n;
    bool full_logged;
    shadow_route_t *routes[SHADOW_STATS_MAX_ROUTES];
};

static const char *const result_names[SHADOW_RESULTS] = {"match", "mismatch", "shadow_error",
                                                         "dropped", "skipped"};

/* ---- registry ---- */

shadow_stats_t *shadow_stats_new(void) { return calloc(1, sizeof(shadow_stats_t)); }

static void route_free(shadow_route_t *sr)
{
    pthread_mutex_destroy(&sr->lock);
    free(sr->name);
    free(sr);
}

void shadow_stats_free(shadow_stats_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        route_free(s->routes[i]);
    free(s);
}

static shadow_route_t *route_new(const char *name)
{
    shadow_route_t *sr = calloc(1, sizeof *sr);
    if (!sr)
        return NULL;
    sr->name = strdup(name);
    if (!sr->name) {
        free(sr);
        return NULL;
    }
    if (pthread_mutex_init(&sr->lock, NULL) != 0) {
        free(sr->name);
        free(sr);
        return NULL;
    }
    sr->shown = true;
    memcpy(sr->fields[OTHER].name, SHADOW_OTHER_FIELD, sizeof SHADOW_OTHER_FIELD);
    sr->fields[OTHER].series = NO_SERIES;
    return sr;
}

shadow_route_t *shadow_stats_route(shadow_stats_t *s, const char *route)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->routes[i]->name, route) == 0) {
            s->routes[i]->shown = true;
            return s->routes[i];
        }
    if (s->n == SHADOW_STATS_MAX_ROUTES) {
        if (!s->full_logged)
            log_warn("shadow: figures are kept for %d route names at most; route %s and later "
                     "new names get none until a restart",
                     SHADOW_STATS_MAX_ROUTES, route);
        s->full_logged = true;
        return NULL;
    }
    shadow_route_t *sr = route_new(route);
    if (sr)
        s->routes[s->n++] = sr;
    return sr;
}

void shadow_stats_show_only(shadow_stats_t *s, shadow_route_t *const *routes, size_t n)
{
    for (size_t i = 0; i < s->n; i++)
        s->routes[i]->shown = false;
    for (size_t i = 0; i < n; i++)
        if (routes[i])
            routes[i]->shown = true;
}

/* ---- recording ---- */

void shadow_route_count(shadow_route_t *sr, shadow_result_t result)
{
    if (sr && (unsigned)result < SHADOW_RESULTS)
        atomic_fetch_add_explicit(&sr->counts[result], 1, memory_order_relaxed);
}

/* Copies s[0..n) into out (cap bytes, NUL included), cut so that no UTF-8
 * sequence is split. */
static void copy_cut(char *out, size_t cap, const char *s, size_t n)
{
    if (n > cap - 1) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--; /* s[n] continues a sequence: cut before its lead byte */
    }
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Bytes that are not UTF-8 (json_diff never makes such pointers; nothing
 * here trusts that) become '?', so the JSON and the exposition stay valid. */
static void make_utf8(char *s)
{
    const char *p = s;
    while (*p && (unsigned char)*p < 0x80)
        p++;
    if (!*p)
        return; /* ASCII */
    json_t *probe = json_string(s);
    if (probe) {
        json_decref(probe);
        return;
    }
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            *s = '?';
}

/* The field named by pointer, added on first sight (OTHER when the table
 * is full). */
static size_t field_find(shadow_route_t *sr, const char *pointer)
{
    char name[SHADOW_FIELD_MAX_BYTES + 1];
    copy_cut(name, sizeof name, pointer, strlen(pointer));
    make_utf8(name);
    size_t len = strlen(name);
    size_t slot = hash_bytes(name, len) % INDEX_SLOTS;
    for (;; slot = (slot + 1) % INDEX_SLOTS) {
        uint16_t v = sr->index[slot];
        if (v == 0)
            break;
        if (strcmp(sr->fields[v - 1].name, name) == 0)
            return v - 1;
    }
    if (sr->n_fields == SHADOW_MAX_FIELDS)
        return OTHER;
    size_t f = sr->n_fields++;
    memcpy(sr->fields[f].name, name, len + 1);
    sr->fields[f].series = NO_SERIES;
    sr->index[slot] = (uint16_t)(f + 1);
    return f;
}

static const char *diff_pointer(const json_diff_result_t *d, size_t i)
{
    const char *p = d->n_differences ? d->differences[i].pointer : NULL;
    return p ? p : "";
}

static bool is_status(const json_diff_result_t *d, size_t i)
{
    return strcmp(diff_pointer(d, i), "status") == 0;
}

/* The distinct fields d differs at (a difference that reports nothing is
 * one at "", the body as a whole); returns how many went into f. */
static size_t diff_fields(shadow_route_t *sr, const json_diff_result_t *d,
                          size_t f[JSON_DIFF_MAX_REPORTED], size_t at[JSON_DIFF_MAX_REPORTED])
{
    size_t n = 0;
    size_t total = d->n_differences ? d->n_differences : !d->match;
    for (size_t i = 0; i < total && i < JSON_DIFF_MAX_REPORTED; i++) {
        size_t fi = field_find(sr, diff_pointer(d, i));
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = f[k] == fi;
        if (!seen) {
            f[n] = fi;
            at[n++] = i;
        }
    }
    return n;
}

/* Diffy's rule: mismatches / compared > noise / noise_compared by 20%
 * relative and 0.03% absolute, in integers (128 bits: no overflow). */
static bool rule_counts(const shadow_route_t *sr, const field_t *f)
{
    if (sr->noise_compared == 0)
        return f->mismatches > 0; /* nothing learned: every difference counts */
    unsigned __int128 m = (unsigned __int128)f->mismatches * sr->noise_compared;
    unsigned __int128 n = (unsigned __int128)f->noise * sr->compared;
    unsigned __int128 both = (unsigned __int128)sr->compared * sr->noise_compared;
    return m * 100 > n * (100 + SHADOW_NOISE_RELATIVE_PCT) && m > n &&
           (m - n) * 10000 > both * SHADOW_NOISE_ABSOLUTE_BP;
}

static void example_add(shadow_route_t *sr, const json_diff_result_t *d, size_t i,
                        const char *request_id, size_t request_id_len)
{
    example_t *e = &sr->examples[sr->next_example];
    sr->next_example = (sr->next_example + 1) % SHADOW_EXAMPLES;
    if (sr->n_examples < SHADOW_EXAMPLES)
        sr->n_examples++;
    size_t n = !request_id                                 ? 0
               : request_id_len < SHADOW_EXAMPLE_MAX_BYTES ? request_id_len
                                                           : SHADOW_EXAMPLE_MAX_BYTES;
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)request_id[k];
        e->request_id[k] = c > 0x20 && c < 0x7f ? (char)c : '?'; /* printable ASCII only */
    }
    e->request_id[n] = '\0';
    const json_diff_difference_t *dd = d->n_differences ? &d->differences[i] : NULL;
    const char *p = diff_pointer(d, i);
    copy_cut(e->pointer, sizeof e->pointer, p, strlen(p));
    make_utf8(e->pointer);
    e->has_old = dd && dd->old_value;
    e->has_new = dd && dd->new_value;
    copy_cut(e->old_value, sizeof e->old_value, e->has_old ? dd->old_value : "",
             e->has_old ? strlen(dd->old_value) : 0);
    copy_cut(e->new_value, sizeof e->new_value, e->has_new ? dd->new_value : "",
             e->has_new ? strlen(dd->new_value) : 0);
    make_utf8(e->old_value);
    make_utf8(e->new_value);
}

shadow_result_t shadow_route_compared(shadow_route_t *sr, const json_diff_result_t *diff,
                                      const json_diff_result_t *noise, const char *request_id,
                                      size_t request_id_len)
{
    if (!diff)
        return SHADOW_ERROR;
    if (!sr)
        return diff->match ? SHADOW_MATCH : SHADOW_MISMATCH;
    size_t f[JSON_DIFF_MAX_REPORTED], at[JSON_DIFF_MAX_REPORTED];
    pthread_mutex_lock(&sr->lock);
    bool noise_status = false;
    if (noise) {
        sr->noise_compared++;
        size_t n = diff_fields(sr, noise, f, at);
        for (size_t k = 0; k < n; k++) {
            sr->fields[f[k]].noise++;
            noise_status = noise_status || is_status(noise, at[k]);
        }
    }
    sr->compared++;
    size_t n = diff_fields(sr, diff, f, at);
    for (size_t k = 0; k < n; k++)
        sr->fields[f[k]].mismatches++;
    size_t first = SIZE_MAX;
    for (size_t k = 0; k < n; k++) {
        field_t *fd = &sr->fields[f[k]];
        if (!(is_status(diff, at[k]) && !noise_status) && !rule_counts(sr, fd))
            continue;
        if (fd->counted++ == 0 && f[k] != OTHER && sr->n_series < SHADOW_FIELD_SERIES_MAX)
            fd->series = (int)sr->n_series++;
        if (fd->series == NO_SERIES)
            sr->other_series++;
        if (first == SIZE_MAX)
            first = at[k];
    }
    shadow_result_t result = first == SIZE_MAX ? SHADOW_MATCH : SHADOW_MISMATCH;
    if (result == SHADOW_MISMATCH)
        example_add(sr, diff, first, request_id, request_id_len);
    atomic_fetch_add_explicit(&sr->counts[result], 1, memory_order_relaxed);
    pthread_mutex_unlock(&sr->lock);
    return result;
}

/* ---- reading ---- */

static double ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0.0; }

static uint64_t count_of(shadow_route_t *sr, shadow_result_t r)
{
    return atomic_load_explicit(&sr->counts[r], memory_order_relaxed);
}

/* Under the lock: the tracked fields, then "other" once it was used. */
static size_t fields_list(const shadow_route_t *sr, const field_t *out[SHADOW_MAX_FIELDS + 1])
{
    size_t n = 0;
    for (size_t i = 0; i < sr->n_fields; i++)
        out[n++] = &sr->fields[i];
    if (sr->fields[OTHER].mismatches || sr->fields[OTHER].noise)
        out[n++] = &sr->fields[OTHER];
    return n;
}

static json_t *field_json(const shadow_route_t *sr, const field_t *f)
{
    return json_pack("{s:s,s:I,s:f,s:I,s:f,s:b,s:I}", "field", f->name, "mismatches",
                     (json_int_t)f->mismatches, "mismatch_rate", ratio(f->mismatches, sr->compared),
                     "noise", (json_int_t)f->noise, "noise_rate",
                     ratio(f->noise, sr->noise_compared), "counted", rule_counts(sr, f),
                     "counted_mismatches", (json_int_t)f->counted);
}

static int by_mismatches(const void *a, const void *b)
{
    const field_t *x = *(const field_t *const *)a, *y = *(const field_t *const *)b;
    if (x->mismatches != y->mismatches)
        return x->mismatches < y->mismatches ? 1 : -1;
    if (x->noise != y->noise)
        return x->noise < y->noise ? 1 : -1;
    return strcmp(x->name, y->name);
}

static json_t *example_json(const example_t *e)
{
    return json_pack("{s:s,s:s,s:s?,s:s?}", "request_id", e->request_id, "pointer", e->pointer,
                     "old_value", e->has_old ? e->old_value : NULL, "new_value",
                     e->has_new ? e->new_value : NULL);
}

json_t *shadow_route_json(shadow_route_t *sr)
{
    json_t *counts = json_object(), *fields = json_array(), *recent = json_array();
    json_t *root = json_pack("{s:s,s:o,s:o,s:o}", "route", sr->name, "requests", counts, "fields",
                             fields, "recent_mismatches", recent);
    if (!root)
        return NULL;
    bool ok = true;
    for (size_t r = 0; r < SHADOW_RESULTS; r++)
        ok &= json_object_set_new(counts, result_names[r],
                                  json_integer((json_int_t)count_of(sr, (shadow_result_t)r))) == 0;
    pthread_mutex_lock(&sr->lock);
    const field_t *sorted[SHADOW_MAX_FIELDS + 1];
    size_t n = fields_list(sr, sorted);
    qsort(sorted, n, sizeof *sorted, by_mismatches);
    for (size_t i = 0; i < n; i++)
        ok &= json_array_append_new(fields, field_json(sr, sorted[i])) == 0;
    for (size_t i = 0; i < sr->n_examples; i++) {
        size_t k =
            (sr->next_example + SHADOW_EXAMPLES - 1 - i) % SHADOW_EXAMPLES; /* newest first */
        ok &= json_array_append_new(recent, example_json(&sr->examples[k])) == 0;
    }
    uint64_t compared = sr->compared, noise_compared = sr->noise_compared;
    uint64_t matches = count_of(sr, SHADOW_MATCH);
    pthread_mutex_unlock(&sr->lock);
    json_t *rate = compared ? json_real(ratio(matches, compared)) : json_null();
    ok &= json_object_set_new(root, "compared", json_integer((json_int_t)compared)) == 0;
    ok &=
        json_object_set_new(root, "noise_compared", json_integer((json_int_t)noise_compared)) == 0;
    ok &= json_object_set_new(root, "match_rate", rate) == 0;
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}

static int by_counted(const void *a, const void *b)
{
    const field_t *x = *(const field_t *const *)a, *y = *(const field_t *const *)b;
    if (x->counted != y->counted)
        return x->counted < y->counted ? 1 : -1;
    return strcmp(x->name, y->name);
}

void shadow_route_summary(shadow_route_t *sr, shadow_summary_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&sr->lock);
    const field_t *worst[SHADOW_MAX_FIELDS + 1];
    size_t n = fields_list(sr, worst);
    qsort(worst, n, sizeof *worst, by_counted);
    out->compared = sr->compared;
    out->match_rate = sr->compared ? ratio(count_of(sr, SHADOW_MATCH), sr->compared) : -1;
    for (size_t i = 0; i < n && i < SHADOW_SUMMARY_FIELDS && worst[i]->counted; i++) {
        memcpy(out->fields[i], worst[i]->name, sizeof out->fields[i]);
        out->field_rates[i] = ratio(worst[i]->counted, sr->compared);
        out->n_fields++;
    }
    pthread_mutex_unlock(&sr->lock);
}

/* ---- exposition ---- */

/* A label value as the exposition format wants it: \\, \" and \n. */
static void put_label(buf_t *out, const char *v)
{
    for (const char *run = v;; v++) {
        char c = *v;
        if (c != '\0' && c != '\\' && c != '"' && c != '\n')
            continue;
        buf_append(out, run, (size_t)(v - run));
        if (c == '\0')
            return;
        buf_append_str(out, c == '\\' ? "\\\\" : c == '"' ? "\\\"" : "\\n");
        run = v + 1;
    }
}

static void put_sample(buf_t *out, const char *family, const char *route, const char *label,
                       const char *value, uint64_t v)
{
    buf_printf(out, "%s{route=\"", family);
    put_label(out, route);
    buf_printf(out, "\",%s=\"", label);
    put_label(out, value);
    buf_printf(out, "\"} %llu\n", (unsigned long long)v);
}

void shadow_stats_render(shadow_stats_t *s, buf_t *out)
{
    static const char req[] = "ficus_shadow_requests_total",
                      fld[] = "ficus_shadow_field_mismatches_total";
    buf_printf(out,
               "# HELP %s Shadow copies by result: match, mismatch, shadow_error, dropped, "
               "skipped.\n# TYPE %s counter\n",
               req, req);
    for (size_t i = 0; i < s->n; i++)
        for (size_t r = 0; s->routes[i]->shown && r < SHADOW_RESULTS; r++)
            put_sample(out, req, s->routes[i]->name, "result", result_names[r],
                       count_of(s->routes[i], (shadow_result_t)r));
    buf_printf(out,
               "# HELP %s Shadow mismatches counted per field after the noise rule (at most %d "
               "fields per route, the rest as field=\"other\").\n# TYPE %s counter\n",
               fld, SHADOW_FIELD_SERIES_MAX, fld);
    for (size_t i = 0; i < s->n; i++) {
        shadow_route_t *sr = s->routes[i];
        if (!sr->shown)
            continue;
        pthread_mutex_lock(&sr->lock);
        for (size_t f = 0; f < sr->n_fields; f++)
            if (sr->fields[f].series != NO_SERIES)
                put_sample(out, fld, sr->name, "field", sr->fields[f].name, sr->fields[f].counted);
        if (sr->other_series)
            put_sample(out, fld, sr->name, "field", SHADOW_OTHER_FIELD, sr->other_series);
        pthread_mutex_unlock(&sr->lock);
    }
}
