/* Reload and watch; see reload.h. The new file is read, validated,
 * resolved and its sets read off the loop (thread pool); if valid, a new
 * generation goes to every worker for new requests while requests in flight
 * finish on the old one. Otherwise the old one keeps serving, every error is
 * logged and the failure counted. */
#include "app/reload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/defaults.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/time.h"

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
};

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
        config_errors_add(&r->errs, cur->path, 0, 0, "out of memory");
        config_unref(r->cfg);
        r->cfg = NULL;
    }
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
    if (ok) {
        ok = generations_install(r->gens, gen) == 0;
        if (!ok)
            config_errors_add(&r->errs, cfg->path, 0, 0, "out of memory");
    }
    if (ok) {
        r->loaded_hash = r->hash;
        r->failed_hash = 0;
        metrics_config_reload(r->metrics, true, time_now_realtime_ms());
        log_info("configuration #%llu loaded from %s: %zu route%s, %zu target group%s; requests "
                 "in flight finish on #%llu",
                 (unsigned long long)generation_id(gen), cfg->path, cfg->n_routes,
                 cfg->n_routes == 1 ? "" : "s", cfg->n_target_groups,
                 cfg->n_target_groups == 1 ? "" : "s", (unsigned long long)generation_id(old));
        log_set_level((log_level_t)cfg->log_level);
        log_set_json(cfg->log_json);
    } else {
        if (gen)
            generations_discard(r->gens, gen);
        if (!refused(r)) {
            for (size_t i = 0; i < r->errs.n; i++)
                log_error("reload: %s", r->errs.items[i]);
            log_error("reload failed: the previous configuration keeps serving");
            r->failed_hash = r->hash; /* the watch waits for another change */
            metrics_config_reload(r->metrics, false, time_now_realtime_ms());
        }
    }
    config_unref(cfg);
    config_errors_deinit(&r->errs);
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
    if (ok && h != r->loaded_hash && h != r->failed_hash)
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
    return r;
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
    if (r->watching) {
        uv_close((uv_handle_t *)&r->watch, NULL);
        uv_close((uv_handle_t *)&r->debounce, NULL);
        r->watching = false;
    }
}

void reload_free(reload_t *r) { free(r); }
