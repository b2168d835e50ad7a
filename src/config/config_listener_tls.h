/* A listener's tls block (contract 3.3): its certificates (cert and key,
 * or certificates: a list chosen by SNI), min_version, alpn, client_ca and
 * client_auth. Every file is made relative to the configuration file and
 * checked at load (readable, PEM, the key that belongs to its
 * certificate), so that a configuration whose TLS cannot be set up fails
 * `ficus check` at the key's line and column. */
#ifndef FICUS_CONFIG_CONFIG_LISTENER_TLS_H
#define FICUS_CONFIG_CONFIG_LISTENER_TLS_H

#include "config/config.h"
#include "config/schema.h"

/* Reads the tls mapping v (path: "server.listen[i].tls") into l->tls. */
void config_listener_tls_read(schema_ctx_t *c, const yaml_node_t *v, const char *path,
                              config_listener_t *l);

#endif
