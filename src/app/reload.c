/* Reload and watch; see reload.h. The new file is read, validated,
 * resolved and its sets read off the loop (thread pool); if valid, a new
 * generation goes to every worker for new requests while requests in flight
 * finish on the old one. Otherwise the old one keeps serving, every error is
 * logged and the failure counted.
 *
 * With a `reload` block in the serving configuration (contract 10.5), a
 * valid new one goes on trial instead: it serves canary_percent of new
 * requests for `bake`, judged every RELOAD_CHECK_MS against the serving one
 * (policy/reload_judge); it is promoted at the end of the bake, or reverted
 * at the first breach, and then its content is not applied again until the
 * file changes. A reload during a trial supersedes it: the trial is dropped
 * and the newer file goes on trial against the serving configuration. */
#include "app/reload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "core/hash.h"
#include "core/json.h"
#include "core/log.h"
#include "config/config_json.h"
#include "config/units.h"
#include "core/time.h"
#include "policy/reload_judge.h"

#define RELOAD_CHECK_MS 500 /* a trial is judged this often */
#define RELOAD_HISTORY 20   /* loads kept for GET /config/history */

/* One load, as GET /config/history shows it. */
typedef struct history_entry {
    uint64_t seq;    /* loads so far, this one included */
    uint64_t number; /* the configuration's #N, 0: it never served */
    uint64_t time_ms;
    uint64_t hash;
    bool hash_ok;
    const char
        *result; /* initial, success, failure, trial, promoted, reverted, superseded, skipped */
    char reason[256];
    bool judged;
    reload_judgement_t j;
} history_entry_t;

struct reload {
    uv_loop_t *loop;
    generations_t *gens;
    metrics_registry_t *metrics;
    const drain_t *drain;
    uv_work_t work;
    bool reloading;
    bool again;
    bool closed;
    const config_t *base; /* the current snapshot when the work started */
    config_t *cfg;        /* built by the work, NULL when invalid */
    generation_t *gen;    /* its sets, read by the work */
    config_errors_t errs;
    uint64_t loaded_hash; /* of the file the current snapshot came from */
    uint64_t failed_hash; /* of the last file that failed to load (0: none) */
    uint64_t hash;        /* of the file the work read */
    uv_fs_event_t watch;
    uv_timer_t debounce;
    uint64_t first_ms; /* first event of the pending debounce */
    bool watching;
    /* A new configuration on trial: its file's hash, its history entry,
     * the governing reload block, when it began and both sides' counts
     * then. */
    bool trial;
    uint64_t trial_hash;
    uint64_t trial_seq;
    config_reload_t rule;
    uint64_t trial_start_ms;
    reload_side_t old_base, new_base;
    uv_timer_t check;
    bool check_ready;
    uint64_t reverted_hash; /* of the last configuration reverted (0: none) */
    history_entry_t history[RELOAD_HISTORY];
    uint64_t seq;
};

/* A new history entry (the oldest goes beyond RELOAD_HISTORY). */
static history_entry_t *history_add(reload_t *r, const char *result, uint64_t number, uint64_t hash,
                                    bool hash_ok)
{
    history_entry_t *e = &r->history[r->seq % RELOAD_HISTORY];
    *e = (history_entry_t){.seq = ++r->seq,
                           .number = number,
                           .time_ms = time_now_realtime_ms(),
                           .hash = hash,
                           .hash_ok = hash_ok,
                           .result = result};
    return e;
}

/* The entry of load seq, NULL once it left the history. */
static history_entry_t *history_find(reload_t *r, uint64_t seq)
{
    history_entry_t *e = &r->history[(seq - 1) % RELOAD_HISTORY];
    return seq && e->seq == seq ? e : NULL;
}

/* FNV-1a of the file, to tell a real change from an editor's touch. */
uint64_t reload_file_hash(const char *path, bool *ok)
{
    uint64_t h = HASH_FNV1A_INIT;
    *ok = false;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        h = hash_fnv1a(h, buf, n);
    *ok = !ferror(f);
    fclose(f);
    return h;
}

/* Settings bound to sockets, threads and files opened at start: a reload
 * that changes one is refused (a takeover restart applies it). */
static const char *restart_only_change(const config_t *a, const config_t *b)
{
    return config_restart_only_change(a, b);
}

const char *reload_restart_only_change(const config_t *a, const config_t *b)
{
    return restart_only_change(a, b);
}

static const config_t *current_config(const reload_t *r)
{
    return generation_config(generations_current(r->gens));
}

/* Draining or stopping: nothing is reloaded any more. */
static bool refused(const reload_t *r) { return r->closed || drain_active(r->drain); }

static void reload_work(uv_work_t *w)
{
    reload_t *r = w->data;
    const config_t *cur = r->base;
    bool ok;
    r->hash = reload_file_hash(cur->path, &ok);
    r->cfg = config_load_file(cur->path, &r->errs);
    if (!r->cfg)
        return;
    const char *key = restart_only_change(cur, r->cfg);
    if (key) {
        size_t line, col;
        config_key_position(r->cfg, key, &line, &col);
        if (!line) /* removed from the new file: the old one says where it was */
            config_key_position(cur, key, &line, &col);
        config_errors_add(&r->errs, cur->path, line, col,
                          "%s changed: it takes effect only at a restart (use a takeover restart, "
                          "see docs/operations.md); nothing was applied",
                          key);
        config_unref(r->cfg);
        r->cfg = NULL;
        return;
    }
    r->gen = generation_prepare(r->gens, r->cfg);
    if (!r->gen) {
        config_errors_add(&r->errs, cur->path, 0, 0,
                          "cannot set it up (a certificate that does not load, or no memory: "
                          "see the log)");
        config_unref(r->cfg);
        r->cfg = NULL;
    }
}

/* The trial ends: its history entry says how, with the last figures. */
static void trial_over(reload_t *r, const char *result, const char *reason,
                       const reload_judgement_t *j)
{
    r->trial = false;
    if (r->check_ready)
        uv_timer_stop(&r->check);
    /* The serving configuration (the old one, or the one promoted) stops
     * counting until the next trial; a dropped one goes with its counts. */
    reload_figures_arm(generation_figures(generations_current(r->gens)), false);
    metrics_config_canary(r->metrics, false);
    history_entry_t *e = history_find(r, r->trial_seq);
    if (!e)
        return;
    e->result = result;
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    if (j) {
        e->judged = true;
        e->j = *j;
    }
}

/* Both sides' counts since the trial began. */
static void trial_sides(reload_t *r, reload_side_t *old_side, reload_side_t *new_side)
{
    reload_side_t now;
    reload_figures_sum(generation_figures(generations_current(r->gens)), &now);
    reload_side_since(&now, &r->old_base, old_side);
    reload_figures_sum(generation_figures(generations_trial(r->gens)), &now);
    reload_side_since(&now, &r->new_base, new_side);
}

static void on_trial_check(uv_timer_t *t)
{
    reload_t *r = t->data;
    if (!r->trial || refused(r))
        return;
    generation_t *cur = generations_current(r->gens), *gen = generations_trial(r->gens);
    reload_side_t old_side, new_side;
    trial_sides(r, &old_side, &new_side);
    reload_judgement_t j;
    reload_judge(&r->rule, &old_side, &new_side,
                 uv_now(r->loop) - r->trial_start_ms >= r->rule.bake_ms, &j);
    if (j.verdict == RELOAD_WAIT)
        return;
    unsigned long long n = (unsigned long long)generation_id(gen),
                       o = (unsigned long long)generation_id(cur);
    if (j.verdict == RELOAD_REVERT) {
        log_warn("configuration #%llu reverted: %s (#%llu: %llu requests, 5xx %.2f%%, p99 %.1f "
                 "ms; #%llu: %llu requests, 5xx %.2f%%, p99 %.1f ms); #%llu serves everything "
                 "again, and this file content is not applied again until it changes",
                 n, j.reason, n, (unsigned long long)j.new_requests, 100 * j.new_error_rate,
                 j.new_p99_us / 1000.0, o, (unsigned long long)j.old_requests,
                 100 * j.old_error_rate, j.old_p99_us / 1000.0, o);
        r->reverted_hash = r->trial_hash;
        generations_drop_trial(r->gens);
        metrics_config_reverted(r->metrics);
        trial_over(r, "reverted", j.reason, &j);
        return;
    }
    log_info("configuration #%llu promoted after its bake (%llu requests, and %llu on #%llu): "
             "%s; requests in flight finish on #%llu",
             n, (unsigned long long)j.new_requests, (unsigned long long)j.old_requests, o, j.reason,
             o);
    const config_t *cfg = generation_config(gen);
    generations_promote(r->gens);
    r->loaded_hash = r->trial_hash;
    r->reverted_hash = 0; /* another content serves: a reverted one may be tried anew */
    metrics_config_reload(r->metrics, true, time_now_realtime_ms());
    log_set_level((log_level_t)cfg->log_level);
    log_set_json(cfg->log_json);
    trial_over(r, "promoted", j.reason, &j);
}

/* A trial under way ends because another load replaced it. */
static void trial_superseded(reload_t *r, const char *why)
{
    if (!r->trial)
        return;
    log_info("configuration #%llu on trial dropped: %s",
             (unsigned long long)generation_id(generations_trial(r->gens)), why);
    generations_drop_trial(r->gens);
    trial_over(r, "superseded", why, NULL);
}

/* gen (valid) goes on trial under the serving configuration's reload
 * block. False when it could not (out of memory). */
static bool trial_start(reload_t *r, generation_t *gen, const config_reload_t *rule)
{
    if (generations_start_trial(r->gens, gen, rule->canary_percent) != 0)
        return false;
    if (!r->check_ready) {
        uv_timer_init(r->loop, &r->check);
        r->check.data = r;
        r->check_ready = true;
    }
    r->trial = true;
    r->trial_hash = r->hash;
    r->rule = *rule;
    r->trial_start_ms = uv_now(r->loop);
    /* Both sides count from now: only the trial's requests are judged. */
    reload_figures_arm(generation_figures(generations_current(r->gens)), true);
    reload_figures_arm(generation_figures(gen), true);
    reload_figures_sum(generation_figures(generations_current(r->gens)), &r->old_base);
    reload_figures_sum(generation_figures(gen), &r->new_base);
    history_entry_t *e = history_add(r, "trial", generation_id(gen), r->hash, true);
    r->trial_seq = e->seq;
    char bake[32];
    units_format_duration(rule->bake_ms, bake, sizeof bake);
    snprintf(e->reason, sizeof e->reason, "serving %u%% of new requests for %s",
             rule->canary_percent, bake);
    metrics_config_canary(r->metrics, true);
    uv_timer_start(&r->check, on_trial_check, RELOAD_CHECK_MS, RELOAD_CHECK_MS);
    return true;
}

static void reload_done(uv_work_t *w, int status)
{
    reload_t *r = w->data;
    r->reloading = false;
    config_t *cfg = r->cfg;
    generation_t *gen = r->gen;
    r->cfg = NULL;
    r->gen = NULL;
    bool ok = status == 0 && cfg && gen && !refused(r);
    generation_t *old = generations_current(r->gens);
    const config_t *serving = generation_config(old);
    bool skip = false;
    if (ok && r->trial && r->hash == r->loaded_hash) {
        /* The file went back to what serves: the trial is over, nothing new. */
        trial_superseded(r, "the file is the serving configuration's again");
        skip = true;
    } else if (ok && r->trial && r->hash == r->trial_hash) {
        log_info("reload: the file is the configuration on trial already: nothing to do");
        skip = true;
    } else if (ok && r->hash == r->reverted_hash) {
        log_warn("reload: the file is the configuration reverted last: not applied again "
                 "until it changes");
        history_entry_t *e = history_add(r, "skipped", 0, r->hash, true);
        snprintf(e->reason, sizeof e->reason,
                 "the same content as the configuration reverted last");
        skip = true;
    }
    if (skip) {
        generations_discard(r->gens, gen);
        config_unref(cfg);
        config_errors_deinit(&r->errs);
        goto again;
    }
    if (ok && serving->has_reload) {
        trial_superseded(r, "a newer configuration was loaded");
        ok = trial_start(r, gen, &serving->reload);
        if (!ok)
            config_errors_add(&r->errs, cfg->path, 0, 0, "out of memory");
        else
            log_info("configuration #%llu loaded from %s on trial: %u%% of new requests for "
                     "%llu ms beside #%llu (reload block), then promoted or reverted",
                     (unsigned long long)generation_id(gen), cfg->path,
                     serving->reload.canary_percent, (unsigned long long)serving->reload.bake_ms,
                     (unsigned long long)generation_id(old));
    } else if (ok) {
        trial_superseded(r, "a newer configuration was loaded");
        ok = generations_install(r->gens, gen) == 0;
        if (!ok)
            config_errors_add(&r->errs, cfg->path, 0, 0, "out of memory");
    }
    if (ok && !r->trial) {
        r->loaded_hash = r->hash;
        r->failed_hash = 0;
        r->reverted_hash = 0;
        metrics_config_reload(r->metrics, true, time_now_realtime_ms());
        history_add(r, "success", generation_id(gen), r->hash, true);
        log_info("configuration #%llu loaded from %s: %zu route%s, %zu target group%s; requests "
                 "in flight finish on #%llu",
                 (unsigned long long)generation_id(gen), cfg->path, cfg->n_routes,
                 cfg->n_routes == 1 ? "" : "s", cfg->n_target_groups,
                 cfg->n_target_groups == 1 ? "" : "s", (unsigned long long)generation_id(old));
        log_set_level((log_level_t)cfg->log_level);
        log_set_json(cfg->log_json);
    } else if (ok) {
        r->failed_hash = 0;
    } else {
        if (gen)
            generations_discard(r->gens, gen);
        if (!refused(r)) {
            for (size_t i = 0; i < r->errs.n; i++)
                log_error("reload: %s", r->errs.items[i]);
            log_error("reload failed: the previous configuration keeps serving");
            r->failed_hash = r->hash; /* the watch waits for another change */
            metrics_config_reload(r->metrics, false, time_now_realtime_ms());
            history_entry_t *e = history_add(r, "failure", 0, r->hash, r->hash != 0);
            snprintf(e->reason, sizeof e->reason, "%s",
                     r->errs.n ? r->errs.items[0] : "the file could not be loaded");
        }
    }
    config_unref(cfg);
    config_errors_deinit(&r->errs);
again:
    if (r->again) {
        r->again = false;
        reload_start(r, "the file changed again");
    }
}

void reload_start(reload_t *r, const char *why)
{
    if (refused(r))
        return;
    const config_t *cur = current_config(r);
    if (strcmp(cur->path, "<demo>") == 0) {
        log_warn("%s: the embedded demo configuration cannot be reloaded", why);
        return;
    }
    if (r->reloading) {
        r->again = true; /* once the current one is done */
        return;
    }
    log_info("%s: reloading %s", why, cur->path);
    r->reloading = true;
    r->base = cur;
    config_errors_init(&r->errs);
    r->work.data = r;
    if (uv_queue_work(r->loop, &r->work, reload_work, reload_done) != 0) {
        r->reloading = false;
        config_errors_deinit(&r->errs);
        log_error("reload: cannot queue the work");
        metrics_config_reload(r->metrics, false, time_now_realtime_ms());
    }
}

/* The directory is watched, not the file: editors and Kubernetes ConfigMaps
 * replace the file (rename, symlink swap) rather than write into it. Events
 * are debounced, and only a change of content reloads. */
static void on_watch_debounced(uv_timer_t *t)
{
    reload_t *r = t->data;
    bool ok;
    uint64_t h = reload_file_hash(current_config(r)->path, &ok);
    if (!ok || h == r->loaded_hash || h == r->failed_hash || (r->trial && h == r->trial_hash))
        return; /* not again: what serves, what failed, what is on trial */
    if (h == r->reverted_hash)
        log_warn("configuration file changed: its content is the configuration reverted last: "
                 "skipped, not applied again until it changes");
    else
        reload_start(r, "configuration file changed");
}

bool reload_watch_concerns(const char *path, const char *filename)
{
    if (!filename)
        return true; /* the platform does not say: check */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strcmp(filename, base) == 0 || strncmp(filename, "..", 2) == 0;
}

static void on_watch(uv_fs_event_t *e, const char *filename, int events, int status)
{
    (void)events;
    reload_t *r = e->data;
    if (status < 0 || r->closed || !reload_watch_concerns(current_config(r)->path, filename))
        return;
    /* Debounced, but never past CONFIG_WATCH_MAX_DELAY_MS after the first
     * event: a file written again and again is still checked. */
    uint64_t now = uv_now(r->loop);
    if (!uv_is_active((uv_handle_t *)&r->debounce))
        r->first_ms = now;
    else if (now - r->first_ms + CONFIG_WATCH_DEBOUNCE_MS > CONFIG_WATCH_MAX_DELAY_MS)
        return;
    uv_timer_start(&r->debounce, on_watch_debounced, CONFIG_WATCH_DEBOUNCE_MS, 0);
}

reload_t *reload_new(uv_loop_t *loop, generations_t *gens, metrics_registry_t *metrics,
                     const drain_t *drain)
{
    reload_t *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    *r = (reload_t){.loop = loop, .gens = gens, .metrics = metrics, .drain = drain};
    generation_t *cur = generations_current(gens);
    if (cur) {
        bool ok;
        const char *path = generation_config(cur)->path;
        uint64_t h = strcmp(path, "<demo>") == 0 ? 0 : reload_file_hash(path, &ok);
        history_add(r, "initial", generation_id(cur), h, h != 0);
    }
    return r;
}

/* A reason as a JSON string. It may quote the file's path or be cut in
 * the middle of a character, which jansson refuses as UTF-8: then the one
 * escaper (core/json) stands in U+FFFD for what is not UTF-8. */
static json_t *text_json(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char esc[sizeof((history_entry_t *)0)->reason * 6 + 2];
    size_t used, n = strlen(s);
    esc[0] = '"';
    size_t w = json_escape(esc + 1, sizeof esc - 2, s, n, &used);
    esc[1 + w] = '"';
    return json_loadb(esc, w + 2, JSON_DECODE_ANY, NULL);
}

json_t *reload_history_json(const reload_t *r)
{
    json_t *o = json_object(), *loads = json_array();
    if (!o || !loads) {
        json_decref(o);
        json_decref(loads);
        return NULL;
    }
    /* Newest first. */
    for (uint64_t k = 0; k < RELOAD_HISTORY && k < r->seq; k++) {
        const history_entry_t *e = &r->history[(r->seq - 1 - k) % RELOAD_HISTORY];
        char when[40], hash[24];
        time_format_rfc3339_ms(e->time_ms, when, sizeof when);
        snprintf(hash, sizeof hash, "%016llx", (unsigned long long)e->hash);
        json_t *x = json_pack("{sI so ss so ss so}", "load", (json_int_t)e->seq, "number",
                              e->number ? json_integer((json_int_t)e->number) : json_null(), "time",
                              when, "hash", e->hash_ok ? json_string(hash) : json_null(), "result",
                              e->result, "reason", text_json(e->reason));
        if (x && e->judged) {
            const reload_judgement_t *j = &e->j;
            json_object_set_new(
                x, "figures",
                json_pack("{s{sIsfsf} s{sIsfsf}}", "new", "requests", (json_int_t)j->new_requests,
                          "error_rate", j->new_error_rate, "p99_ms", j->new_p99_us / 1000.0, "old",
                          "requests", (json_int_t)j->old_requests, "error_rate", j->old_error_rate,
                          "p99_ms", j->old_p99_us / 1000.0));
        }
        if (x)
            json_array_append_new(loads, x);
    }
    generation_t *cur = generations_current(r->gens), *trial = generations_trial(r->gens);
    json_object_set_new(o, "serving",
                        cur ? json_integer((json_int_t)generation_id(cur)) : json_null());
    json_object_set_new(o, "trial",
                        trial ? json_pack("{sI sI}", "number", (json_int_t)generation_id(trial),
                                          "percent", (json_int_t)r->rule.canary_percent)
                              : json_null());
    json_object_set_new(o, "loads", loads);
    return o;
}

json_t *reload_config_json(const reload_t *r)
{
    generation_t *cur = generations_current(r->gens), *trial = generations_trial(r->gens);
    json_t *o = config_json(generation_config(cur));
    char name[32];
    snprintf(name, sizeof name, "#%llu", (unsigned long long)generation_id(cur));
    if (!o || json_object_set_new(o, "config", json_string(name)) != 0) {
        json_decref(o);
        return NULL;
    }
    json_t *t = json_null();
    if (trial && r->trial) {
        uint64_t ran = uv_now(r->loop) - r->trial_start_ms;
        snprintf(name, sizeof name, "#%llu", (unsigned long long)generation_id(trial));
        t = json_pack("{ss sI sI so}", "config", name, "percent",
                      (json_int_t)r->rule.canary_percent, "bake_left_ms",
                      (json_int_t)(ran < r->rule.bake_ms ? r->rule.bake_ms - ran : 0),
                      "configuration", config_json(generation_config(trial)));
    }
    if (!t || json_object_set_new(o, "trial", t) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void reload_watch(reload_t *r)
{
    const char *path = current_config(r)->path;
    if (strcmp(path, "<demo>") == 0)
        return;
    bool ok;
    r->loaded_hash = reload_file_hash(path, &ok);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    uv_timer_init(r->loop, &r->debounce);
    r->debounce.data = r;
    uv_fs_event_init(r->loop, &r->watch);
    r->watch.data = r;
    int rc = uv_fs_event_start(&r->watch, on_watch, dir, 0);
    if (rc != 0)
        log_warn("cannot watch %s for changes (%s): reload with SIGHUP", dir, uv_strerror(rc));
    r->watching = true;
}

void reload_close(reload_t *r)
{
    r->closed = true;
    if (r->check_ready) {
        uv_close((uv_handle_t *)&r->check, NULL);
        r->check_ready = false;
    }
    if (r->watching) {
        uv_close((uv_handle_t *)&r->watch, NULL);
        uv_close((uv_handle_t *)&r->debounce, NULL);
        r->watching = false;
    }
}

void reload_free(reload_t *r) { free(r); }
