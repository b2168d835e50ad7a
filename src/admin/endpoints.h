/* The admin endpoints that report or change the gateway's state: readiness,
 * the metrics exposition, /config, /target_groups, /routes/NAME/weights,
 * /routes/NAME/shadow and /routes/NAME/rollout[/ACTION].
 * Sans-I/O: hooks in, status and body out; admin.c routes requests here. */
#ifndef FICUS_ADMIN_ENDPOINTS_H
#define FICUS_ADMIN_ENDPOINTS_H

#include "admin/admin.h"

/* 1 when ready; else 0 with a short reason written into reason. */
int endpoints_ready(const admin_hooks_t *h, char *reason, size_t n);
/* Appends the Prometheus exposition. */
void endpoints_metrics(const admin_hooks_t *h, buf_t *out);
/* The JSON endpoints: returns the status (0 = no such endpoint) and fills
 * out. path is without its query. A 405 sets *allow to the methods the
 * endpoint takes ("GET, PUT"). */
int endpoints_handle(const admin_hooks_t *h, const char *method, size_t method_len,
                     const char *path, size_t path_len, const char *body, size_t body_len,
                     buf_t *out, const char **allow);

#endif
