/* ficus's own error log (stderr): levelled, one line per event, and
 * rate-limited per call site so one broken upstream cannot flood it. */
#ifndef FICUS_CORE_LOG_H
#define FICUS_CORE_LOG_H

#include <stdint.h>

typedef enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level_t;

extern int log_current_level;

void log_set_level(log_level_t level);
/* 1: one JSON object per line ({"time","level","msg"}); 0: text. */
void log_set_json(int json);
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Per call site: the first occurrence in a window is logged, the rest counted
 * and reported with the next line that gets through. */
typedef struct log_limiter {
    uint64_t window_start_ms;
    uint64_t suppressed;
} log_limiter_t;
int log_limiter_allow(log_limiter_t *l, uint64_t *suppressed_out);

#define LOG_AT(lvl, ...)                                                                           \
    do {                                                                                           \
        if ((int)(lvl) <= log_current_level)                                                       \
            log_write((lvl), __VA_ARGS__);                                                         \
    } while (0)
#define log_error(...) LOG_AT(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_WARN, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_DEBUG, __VA_ARGS__)

/* Logs at most once a second from this call site (per thread), then a count. */
#define log_limited(lvl, fmt, ...)                                                                 \
    do {                                                                                           \
        static __thread log_limiter_t lim_;                                                        \
        uint64_t sup_;                                                                             \
        if ((int)(lvl) <= log_current_level && log_limiter_allow(&lim_, &sup_)) {                  \
            if (sup_)                                                                              \
                log_write((lvl), fmt " (and %llu more like it)", ##__VA_ARGS__,                    \
                          (unsigned long long)sup_);                                               \
            else                                                                                   \
                log_write((lvl), fmt, ##__VA_ARGS__);                                              \
        }                                                                                          \
    } while (0)

#endif
