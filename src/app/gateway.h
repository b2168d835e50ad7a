/* The gateway process: loads the config, opens listeners, starts the
 * workers, the admin listener, set refreshers and signal handling, and runs
 * until told to stop. */
#ifndef FICUS_APP_GATEWAY_H
#define FICUS_APP_GATEWAY_H

#include "config/config.h"

/* Runs with cfg (takes the reference). Returns the process exit code. */
int gateway_run(config_t *cfg);

#endif
