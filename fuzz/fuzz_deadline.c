/* libFuzzer target for the deadline header values (http/deadline.h): never
 * crashes, never reads past n; an accepted X-Request-Timeout-Ms value
 * written back at its fixed width reads back the same, and an accepted
 * grpc-timeout written back reads back no later than it was. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/deadline.h"

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = malloc(size ? size : 1); /* exactly size bytes: ASan sees an overread */
    if (!v)
        return 0;
    memcpy(v, data, size);
    uint64_t ms, back;
    char out[DEADLINE_MS_WIDTH];
    if (http_deadline_parse_ms(v, size, &ms) == 0) {
        http_deadline_write_ms(out, ms);
        CHECK(http_deadline_parse_ms(out, sizeof out, &back) == 0 && back == ms);
    }
    if (http_deadline_parse_grpc(v, size, &ms) == 0) {
        http_deadline_write_grpc(out, ms);
        CHECK(http_deadline_parse_grpc(out, DEADLINE_GRPC_WIDTH, &back) == 0 && back <= ms);
        CHECK(ms < 60000 || back * 2 >= ms); /* a coarser unit, never a wild value */
    }
    free(v);
    return 0;
}
