/* `ficus demo`: the gateway on 127.0.0.1:8080 (admin :9901) in front of three
 * in-process mock backends: a monolith, search-v1 and a flaky search-v2
 * canary taking 10% of /search. */
#ifndef FICUS_APP_DEMO_H
#define FICUS_APP_DEMO_H

int demo_main(int argc, char **argv);

#endif
