/* The command line: parse, dispatch, exit codes (0 ok, 1 failure, 2 usage). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>
#include <yaml.h>

#include "app/demo.h"
#include "app/gateway.h"
#include "app/jwks_refresh.h"
#include "config/config.h"
#include "config/lint.h"
#include "config/yaml_pos.h"
#include "routing/set.h"
#include "llhttp.h"
#include "tools/load.h"
#include "tools/mock.h"
#include "tools/probe.h"

static const char usage[] =
    "usage: ficus [COMMAND] [OPTIONS]\n"
    "\n"
    "An API gateway for moving a monolith to services one route at a time.\n"
    "\n"
    "commands:\n"
    "  demo              run the embedded demo (the default)\n"
    "  run -c FILE       run the gateway with FILE\n"
    "  check -c FILE     validate FILE; print every error as FILE:LINE:COL: message,\n"
    "    [--strict]      then warnings for what is dangerous (--strict: they fail it too)\n"
    "  mock ...          a mock backend for load and failure tests (ficus mock --help)\n"
    "  probe -f FILE     check environments' endpoints (ficus probe --help)\n"
    "  load URL ...      open-loop load, the latency knee, a capacity plan (ficus load --help)\n"
    "  version           versions of ficus and its libraries\n"
    "\n"
    "signals (ficus run): SIGTERM/SIGINT drain and stop (a second one stops at once),\n"
    "  SIGHUP reloads the configuration, SIGUSR1 reopens the access log.\n";

static int print_version(void)
{
    printf("ficus %s\n", FICUS_VERSION);
    printf("  libuv %s\n", uv_version_string());
    printf("  llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
    printf("  libyaml %s\n", yaml_get_version_string());
    char pcre[64] = "";
    pcre2_config(PCRE2_CONFIG_VERSION, pcre);
    printf("  pcre2 %s\n", pcre);
    printf("  jansson %s\n", jansson_version_str());
    printf("  %s\n", OpenSSL_version(OPENSSL_VERSION));
    return 0;
}

/* Parses "-c FILE" / "--config FILE" / "--config=FILE" for run and check,
 * and check's "--strict" (strict may be NULL: not taken). */
static int config_arg(int argc, char **argv, const char **path, const char *cmd, bool *strict)
{
    *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strict && strcmp(argv[i], "--strict") == 0) {
            *strict = true;
            continue;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: ficus %s -c FILE%s\n", cmd, strict ? " [--strict]" : "");
            if (strict)
                printf("\nPrints every error as FILE:LINE:COL: message, then warnings for what\n"
                       "loads but is dangerous as FILE:LINE:COL: warning: [rule] message.\n"
                       "--strict: a warning fails the check too (exit 1).\n");
            if (strcmp(cmd, "run") == 0)
                printf("\nsignals: SIGTERM/SIGINT drain and stop (a second one stops at once),\n"
                       "  SIGHUP reloads FILE (so does a change of FILE), SIGUSR1 reopens the\n"
                       "  access log.\n");
            return 0;
        }
        if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ficus %s: %s needs a FILE\nusage: ficus %s -c FILE\n", cmd,
                        argv[i], cmd);
                return 2;
            }
            *path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9;
        } else {
            fprintf(stderr, "ficus %s: unexpected argument '%s'\nusage: ficus %s -c FILE\n", cmd,
                    argv[i], cmd);
            return 2;
        }
    }
    if (!*path) {
        fprintf(stderr, "ficus %s: missing -c FILE\nusage: ficus %s -c FILE\n", cmd, cmd);
        return 2;
    }
    return -1;
}

static config_t *load(const char *path)
{
    config_errors_t errs;
    config_errors_init(&errs);
    config_t *cfg = config_load_file(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.items[i]);
    config_errors_deinit(&errs);
    return cfg;
}

/* One lint warning, as ficus check prints it. */
typedef struct check_out {
    const char *path;
} check_out_t;

static void print_warning(void *ctx, lint_rule_t rule, size_t line, size_t col, const char *msg)
{
    const check_out_t *o = ctx;
    fprintf(stderr, "%s:%zu:%zu: warning: [%s] %s\n", o->path, line, col, lint_rule_name(rule),
            msg);
}

static int cmd_check(int argc, char **argv)
{
    const char *path;
    bool strict = false;
    int rc = config_arg(argc, argv, &path, "check", &strict);
    if (rc >= 0)
        return rc;
    config_t *cfg = load(path);
    if (!cfg)
        return 1;
    /* Every file the configuration names is read too (sets' files, JWKS
     * files; URLs are not fetched: a CI job may have no route to them). */
    int bad = 0;
    for (size_t i = 0; i < cfg->n_sets; i++) {
        const config_set_t *s = &cfg->sets[i];
        char err[512];
        if (s->file && set_check(s, err, sizeof err) != 0) {
            fprintf(stderr, "%s:%zu:%zu: sets.%s: %s\n", path, s->file_line ? s->file_line : 1,
                    s->file_col ? s->file_col : 1, s->name, err);
            bad = 1;
        }
    }
    for (size_t i = 0; i < cfg->n_jwt_providers; i++) {
        const config_jwt_provider_t *p = &cfg->jwt_providers[i];
        char err[600];
        if (!p->jwks_file)
            continue;
        int prc = jwks_refresh_check_file(p, err, sizeof err);
        if (prc != 0 || err[0])
            fprintf(stderr, "%s:%zu:%zu: %s%s\n", path, p->jwks_line ? p->jwks_line : 1,
                    p->jwks_col ? p->jwks_col : 1, prc ? "" : "warning: ", err);
        if (prc != 0)
            bad = 1;
    }
    char err[512];
    yaml_pos_t *pos = yaml_pos_load(path, err, sizeof err);
    check_out_t out = {.path = path};
    size_t warnings = lint_config(cfg, pos, print_warning, &out);
    yaml_pos_free(pos);
    if (strict && warnings) {
        fprintf(stderr, "%s: %zu warning%s (--strict)\n", path, warnings, warnings == 1 ? "" : "s");
        bad = 1;
    }
    if (!bad)
        printf("%s: ok (%zu route%s, %zu target group%s)\n", path, cfg->n_routes,
               cfg->n_routes == 1 ? "" : "s", cfg->n_target_groups,
               cfg->n_target_groups == 1 ? "" : "s");
    config_unref(cfg);
    return bad;
}

static int cmd_run(int argc, char **argv)
{
    const char *path;
    int rc = config_arg(argc, argv, &path, "run", NULL);
    if (rc >= 0)
        return rc;
    config_t *cfg = load(path);
    if (!cfg)
        return 1;
    return gateway_run(cfg);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return demo_main(1, argv);
    const char *cmd = argv[1];
    if (strcmp(cmd, "demo") == 0)
        return demo_main(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "mock") == 0)
        return mock_main(argc - 1, argv + 1);
    if (strcmp(cmd, "probe") == 0)
        return probe_main(argc - 1, argv + 1);
    if (strcmp(cmd, "load") == 0)
        return load_main(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
            printf("usage: ficus version\n\nPrints the versions of ficus and its libraries.\n");
            return 0;
        }
        if (argc > 2) {
            fprintf(stderr, "ficus version: unexpected argument '%s'\n", argv[2]);
            return 2;
        }
        return print_version();
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    fprintf(stderr, "ficus: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
