/* Clocks and time formatting. Monotonic for durations, realtime for logs. */
#ifndef FICUS_CORE_TIME_H
#define FICUS_CORE_TIME_H

#include <stddef.h>
#include <stdint.h>

uint64_t time_now_ms(void); /* monotonic */
uint64_t time_now_us(void); /* monotonic */
uint64_t time_now_realtime_ms(void);
uint64_t time_now_realtime_ns(void);
/* "2026-11-21T10:00:00.123Z"; returns length written (buf >= 25 bytes). */
size_t time_format_rfc3339_ms(uint64_t realtime_ms, char *buf, size_t n);

#endif
