/* `ficus probe`: the status checker ("is staging broken, or is it me?").
 * Reads a YAML list of environments and endpoints, checks them all at once
 * (HTTP or HTTPS GET, status line only) and prints a table or JSON. */
#ifndef FICUS_TOOLS_PROBE_H
#define FICUS_TOOLS_PROBE_H

/* Parses argv (argv[0] = "probe"), checks every endpoint and prints the
 * results. Exit code: 0 all ok, 1 any failed, 2 bad usage or a bad file. */
int probe_main(int argc, char **argv);

#endif
