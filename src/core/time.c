/* Clock helpers; see time.h. */
#include "core/time.h"

#include <stdio.h>
#include <time.h>

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t time_now_ms(void) { return clock_ns(CLOCK_MONOTONIC) / 1000000u; }
uint64_t time_now_us(void) { return clock_ns(CLOCK_MONOTONIC) / 1000u; }
uint64_t time_now_realtime_ms(void) { return clock_ns(CLOCK_REALTIME) / 1000000u; }
uint64_t time_now_realtime_ns(void) { return clock_ns(CLOCK_REALTIME); }

size_t time_format_rfc3339_ms(uint64_t realtime_ms, char *buf, size_t n)
{
    /* Cache the formatted second: the access log formats a time per request. */
    static __thread time_t cached_sec = -1;
    static __thread char cached[24];
    time_t sec = (time_t)(realtime_ms / 1000);
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    int w = snprintf(buf, n, "%s.%03uZ", cached, (unsigned)(realtime_ms % 1000));
    return w < 0 ? 0 : (size_t)w;
}
