/* Semantic lint (contract 10.4): configurations that load but are
 * dangerous, as warnings with a rule id and the place in the file they are
 * about. Run by `ficus check` on a loaded configuration. */
#ifndef FICUS_CONFIG_LINT_H
#define FICUS_CONFIG_LINT_H

#include <stddef.h>

#include "config/config.h"
#include "config/yaml_pos.h"

#define LINT_RULES(X)                                                                              \
    X(RETRY_NON_IDEMPOTENT, "retry-non-idempotent")                                                \
    X(TRY_EXCEEDS_TIMEOUT, "try-exceeds-timeout")                                                  \
    X(RETRY_BUFFER_BELOW_BODY, "retry-buffer-below-body")                                          \
    X(FALLBACK_IS_CANARY, "fallback-is-canary")                                                    \
    X(UNREACHABLE_ROUTE, "unreachable-route")                                                      \
    X(SHADOW_SIDE_EFFECTS, "shadow-side-effects")                                                  \
    X(UNTRUSTED_FORWARDED_FOR, "untrusted-forwarded-for")                                          \
    X(REQUIRED_SHARED_GROUP, "required-shared-group")                                              \
    X(TLS_VERIFY_OFF, "tls-verify-off")                                                            \
    X(NO_TIMEOUT, "no-timeout")                                                                    \
    X(HEDGE_AFTER_TIMEOUT, "hedge-after-timeout")

typedef enum {
#define LINT_ENUM(id, name) LINT_##id,
    LINT_RULES(LINT_ENUM)
#undef LINT_ENUM
        LINT_N_RULES
} lint_rule_t;

/* "retry-non-idempotent", ... */
const char *lint_rule_name(lint_rule_t r);
/* The rule named name (len bytes), or -1. */
int lint_rule_find(const char *name, size_t len);

/* One warning: its rule, where (1-based; from pos), and what. */
typedef void (*lint_emit_fn)(void *ctx, lint_rule_t rule, size_t line, size_t col,
                             const char *message);

/* Runs every rule on cfg; pos places the warnings (NULL: line 1, column
 * 1). Returns how many warnings were emitted. */
size_t lint_config(const config_t *cfg, const yaml_pos_t *pos, lint_emit_fn emit, void *ctx);

#endif
