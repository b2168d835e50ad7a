/* PEM files a configuration names (listener and target-group TLS),
 * checked when it is loaded so that `ficus check` catches them. */
#ifndef FICUS_CONFIG_PEM_CHECK_H
#define FICUS_CONFIG_PEM_CHECK_H

#include <stdbool.h>

/* A PEM certificate (chain) and the unencrypted private key that goes with
 * it; else false with *why. */
bool pem_check_pair(const char *cert, const char *key, const char **why);

#endif
