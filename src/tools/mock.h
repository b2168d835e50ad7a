/* `ficus mock`: a fast mock backend for load and failure tests, also embedded
 * by the demo. Answers every request with a fixed status and body after an
 * optional latency, failing or resetting a share of them; GET /__mock/stats
 * reports what it has seen. */
#ifndef FICUS_TOOLS_MOCK_H
#define FICUS_TOOLS_MOCK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mock_options {
    const char *listen; /* "host:port" */
    int status;         /* default 200 */
    const char *body;   /* default "ok\n"; bytes, body_len long */
    size_t body_len;
    uint64_t latency_ms;      /* 0 = answer at once */
    double fail_rate;         /* share of requests answered with fail_status */
    int fail_status;          /* default 503 */
    double reset_rate;        /* share of requests answered by a TCP reset */
    const char *name;         /* X-Mock-Name; default "mock" */
    const char *content_type; /* of the body; default text/plain */
    uint32_t workers;         /* threads, each with its own SO_REUSEPORT listener; default 1 */
} mock_options_t;

typedef struct mock_server mock_server_t;

/* Parses argv (argv[0] = "mock") and runs until SIGINT/SIGTERM. Exit code:
 * 0, 1 on start failure, 2 on bad usage. */
int mock_main(int argc, char **argv);

/* Starts one mock listener on an existing loop (the demo uses this). NULL with
 * err set on failure. */
mock_server_t *mock_server_start(uv_loop_t *loop, const mock_options_t *o, char *err,
                                 size_t errlen);
/* Closes the listener and its connections; frees on the loop's next turns. */
void mock_server_stop(mock_server_t *m);

#endif
