/* `ficus load`'s figures; see load_report.h. */
#include "tools/load_report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/loghist.h"

static size_t slot_of(uint64_t v) { return loghist_slot(v, 5, LOAD_HIST_SLOTS); }

static uint64_t slot_upper(size_t s) { return loghist_upper(s, 5); }

void load_hist_record(load_hist_t *h, uint64_t us)
{
    h->n++;
    if (us > h->max_us)
        h->max_us = us;
    h->slots[slot_of(us)]++;
}

uint64_t load_hist_quantile(const load_hist_t *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->n), seen = 0;
    if (rank < 1)
        rank = 1;
    for (size_t s = 0; s < LOAD_HIST_SLOTS; s++) {
        seen += h->slots[s];
        if (seen >= rank) {
            uint64_t up = slot_upper(s) - 1;
            return up < h->max_us ? up : h->max_us;
        }
    }
    return h->max_us;
}

double load_run_achieved(const load_run_t *r)
{
    return r->seconds > 0 ? (double)r->completed / r->seconds : 0;
}

double load_run_error_ratio(const load_run_t *r)
{
    return r->scheduled ? (double)(r->errors + r->unsent) / (double)r->scheduled : 0;
}

bool load_run_ok(const load_run_t *r, uint64_t p99_us)
{
    if (!r->completed || load_run_error_ratio(r) >= LOAD_KNEE_MAX_ERRORS)
        return false;
    return !p99_us || load_hist_quantile(&r->latency, 0.99) <= p99_us;
}

static double ms(uint64_t us) { return (double)us / 1000.0; }

void load_run_print(FILE *f, const load_run_t *r)
{
    const load_hist_t *h = &r->latency;
    fprintf(f, "rate      asked %.0f req/s, achieved %.1f req/s over %.1f s\n", r->rate,
            load_run_achieved(r), r->seconds);
    fprintf(f, "requests  %llu scheduled, %llu answered, %llu errors (%.3f%%), %llu never sent\n",
            (unsigned long long)r->scheduled, (unsigned long long)r->completed,
            (unsigned long long)r->errors, 100.0 * load_run_error_ratio(r),
            (unsigned long long)r->unsent);
    fprintf(f, "latency   p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms\n",
            ms(load_hist_quantile(h, 0.5)), ms(load_hist_quantile(h, 0.9)),
            ms(load_hist_quantile(h, 0.99)), ms(load_hist_quantile(h, 0.999)), ms(h->max_us));
    fprintf(f, "          (from each request's scheduled send time: open loop)\n");
    fprintf(f, "status   ");
    bool any = false;
    for (int s = 0; s < LOAD_MAX_STATUS; s++)
        if (r->status[s]) {
            fprintf(f, " %d: %llu", s, (unsigned long long)r->status[s]);
            any = true;
        }
    if (r->failures) {
        fprintf(f, " no answer: %llu", (unsigned long long)r->failures);
        any = true;
    }
    fprintf(f, "%s\n", any ? "" : " none");
}

int load_knee(const load_run_t *steps, size_t n, uint64_t p99_us)
{
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (load_run_ok(&steps[i], p99_us) && (best < 0 || steps[i].rate > steps[best].rate))
            best = (int)i;
    return best;
}

uint64_t load_plan_instances(double peak, double capacity, double headroom)
{
    double usable = capacity * (1.0 - headroom);
    if (!(usable > 0))
        return 0;
    double k = ceil(peak / usable - 1e-9);
    return k < 1 ? 1 : (uint64_t)k;
}

void load_plan_print(FILE *f, const load_event_t *ev, size_t n, double capacity, double headroom)
{
    double usable = capacity * (1.0 - headroom);
    fprintf(f, "plan: %.0f req/s per instance at the knee, %.0f%% headroom: %.0f req/s usable\n",
            capacity, 100 * headroom, usable);
    fprintf(f, "%-24s %14s %18s %10s\n", "event", "peak req/s", "req/s per instance", "instances");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%-24s %14.0f %18.0f %10llu\n", ev[i].name, ev[i].peak, usable,
                (unsigned long long)load_plan_instances(ev[i].peak, capacity, headroom));
}

/* ------------------------------------------------------------ plan file */

static int plan_err(char *err, size_t errlen, const char *path, const yaml_node_t *n,
                    const char *msg)
{
    snprintf(err, errlen, "%s:%zu:%zu: %s", path, n ? n->start_mark.line + 1 : 1,
             n ? n->start_mark.column + 1 : 1, msg);
    return -1;
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* One {name, peak} mapping into e. */
static int plan_event(yaml_document_t *d, const yaml_node_t *m, load_event_t *e, const char *path,
                      char *err, size_t errlen)
{
    if (m->type != YAML_MAPPING_NODE)
        return plan_err(err, errlen, path, m, "expected a mapping {name: ..., peak: req/s}");
    bool has_name = false, has_peak = false;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(d, p->key);
        const yaml_node_t *v = yaml_document_get_node(d, p->value);
        const char *ks = scalar(k), *vs = scalar(v);
        if (ks && strcmp(ks, "name") == 0 && vs && *vs && strlen(vs) < sizeof e->name) {
            snprintf(e->name, sizeof e->name, "%s", vs);
            has_name = true;
        } else if (ks && strcmp(ks, "name") == 0) {
            return plan_err(err, errlen, path, v, "name: expected a name of 1 to 63 characters");
        } else if (ks && strcmp(ks, "peak") == 0) {
            char *end;
            double x = vs ? strtod(vs, &end) : 0;
            if (!vs || end == vs || *end || !(x > 0) || !isfinite(x))
                return plan_err(err, errlen, path, v, "peak: expected req/s, a number above 0");
            e->peak = x;
            has_peak = true;
        } else {
            return plan_err(err, errlen, path, k, "unknown key (name and peak are known)");
        }
    }
    if (!has_name || !has_peak)
        return plan_err(err, errlen, path, m, "an event needs name and peak");
    return 0;
}

int load_plan_read(const char *path, load_event_t **events, size_t *n, char *err, size_t errlen)
{
    *events = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -1;
    }
    yaml_parser_t p;
    yaml_document_t d;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    int rc = -1;
    if (!yaml_parser_load(&p, &d)) {
        snprintf(err, errlen, "%s:%zu:%zu: %s", path, p.problem_mark.line + 1,
                 p.problem_mark.column + 1, p.problem ? p.problem : "invalid YAML");
        goto out_parser;
    }
    const yaml_node_t *root = yaml_document_get_root_node(&d);
    if (!root || root->type != YAML_SEQUENCE_NODE ||
        root->data.sequence.items.top == root->data.sequence.items.start) {
        plan_err(err, errlen, path, root, "expected a list of events {name: ..., peak: req/s}");
        goto out_doc;
    }
    size_t cnt = (size_t)(root->data.sequence.items.top - root->data.sequence.items.start);
    load_event_t *ev = calloc(cnt, sizeof *ev);
    if (!ev) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out_doc;
    }
    for (size_t i = 0; i < cnt; i++) {
        const yaml_node_t *m = yaml_document_get_node(&d, root->data.sequence.items.start[i]);
        if (plan_event(&d, m, &ev[i], path, err, errlen) != 0) {
            free(ev);
            goto out_doc;
        }
    }
    *events = ev;
    *n = cnt;
    rc = 0;
out_doc:
    yaml_document_delete(&d);
out_parser:
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ svg */

int load_svg_write(const char *path, const load_run_t *steps, size_t n, int knee, uint64_t p99_us)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const double W = 720, H = 420, L = 70, R = 20, T = 40, B = 60;
    double max_rate = 1, max_ms = 1;
    for (size_t i = 0; i < n; i++) {
        if (steps[i].rate > max_rate)
            max_rate = steps[i].rate;
        double p99 = ms(load_hist_quantile(&steps[i].latency, 0.99));
        if (p99 > max_ms)
            max_ms = p99;
    }
    if (p99_us && ms(p99_us) > max_ms)
        max_ms = ms(p99_us);
    max_ms *= 1.1;
    max_rate *= 1.05;
#define X(rate) (L + (rate) / max_rate * (W - L - R))
#define Y(v) (H - B - (v) / max_ms * (H - T - B))
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%.0f\" y=\"24\" font-size=\"15\">ficus load: latency against rate "
            "(from scheduled send times)</text>\n",
            W, H, L);
    fprintf(f,
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n"
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
            L, H - B, W - R, H - B, L, T, L, H - B);
    for (int t = 0; t <= 4; t++) {
        double rv = max_rate * t / 4, mv = max_ms * t / 4;
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.0f</text>\n", X(rv),
                H - B + 18, rv);
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.1f</text>\n", L - 6,
                Y(mv) + 4, mv);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">req/s</text>\n", (L + W - R) / 2,
            H - 18);
    fprintf(f,
            "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" "
            "text-anchor=\"middle\">ms</text>\n",
            (T + H - B) / 2, (T + H - B) / 2);
    if (p99_us)
        fprintf(f,
                "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#999\" "
                "stroke-dasharray=\"4 4\"/><text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\" "
                "fill=\"#666\">--p99 %.1f ms</text>\n",
                L, Y(ms(p99_us)), W - R, Y(ms(p99_us)), W - R, Y(ms(p99_us)) - 4, ms(p99_us));
    /* Steps in rate order (a knee search bisects). */
    size_t *ord = malloc((n ? n : 1) * sizeof *ord);
    if (!ord) {
        fclose(f);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        ord[i] = i;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && steps[ord[j]].rate < steps[ord[j - 1]].rate; j--) {
            size_t t = ord[j];
            ord[j] = ord[j - 1];
            ord[j - 1] = t;
        }
    static const struct {
        double q;
        const char *color, *name;
    } series[] = {{0.5, "#1f77b4", "p50"}, {0.99, "#d62728", "p99"}};
    for (size_t s = 0; s < 2; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
                series[s].color);
        for (size_t i = 0; i < n; i++) {
            const load_run_t *r = &steps[ord[i]];
            fprintf(f, "%.1f,%.1f ", X(r->rate),
                    Y(ms(load_hist_quantile(&r->latency, series[s].q))));
        }
        fprintf(f, "\"/>\n");
        for (size_t i = 0; i < n; i++) {
            const load_run_t *r = &steps[ord[i]];
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", X(r->rate),
                    Y(ms(load_hist_quantile(&r->latency, series[s].q))), series[s].color);
        }
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n", L + 10 + 50 * s, T + 4,
                series[s].color, series[s].name);
    }
    if (knee >= 0) {
        const load_run_t *k = &steps[knee];
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#2ca02c\" "
                "stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.0f\" fill=\"#2ca02c\">knee %.0f "
                "req/s</text>\n",
                X(k->rate), T, X(k->rate), H - B, X(k->rate) + 4, T + 18, k->rate);
    }
#undef X
#undef Y
    free(ord);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}
