/* `ficus load`: an open-loop HTTP/1.1 load generator (contract 9). Requests
 * go out on a fixed schedule and each one's latency counts from its
 * scheduled send time, so a slow server cannot hide its latency by slowing
 * the load (no coordinated omission). Keep-alive connections are reused;
 * one loop on one thread. --find-knee searches the highest rate whose p99
 * stays under --p99 with under 0.1% errors; --plan turns it into instances
 * per event; --svg draws the search; --json prints the results. */
#ifndef FICUS_TOOLS_LOAD_H
#define FICUS_TOOLS_LOAD_H

/* Parses argv (argv[0] = "load"), runs and prints. Exit code: 0; 1 when
 * --p99 was given and missed (or no rate met it in a knee search); 2 bad
 * usage or a target that cannot be reached at all. */
int load_main(int argc, char **argv);

#endif
