/* stderr error log with level and timestamp; see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/time.h"

int log_current_level = LOG_INFO;

void log_set_level(log_level_t level) { log_current_level = (int)level; }

void log_write(log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[2048];
    char ts[40];
    time_format_rfc3339_ms(time_now_realtime_ms(), ts, sizeof ts);
    int n = snprintf(line, sizeof line, "%s ficus[%s] ", ts, names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* One write per line keeps lines whole across threads. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

int log_limiter_allow(log_limiter_t *l, uint64_t *suppressed_out)
{
    uint64_t now = time_now_ms();
    if (l->window_start_ms && now - l->window_start_ms < 1000) {
        l->suppressed++;
        return 0;
    }
    l->window_start_ms = now ? now : 1;
    *suppressed_out = l->suppressed;
    l->suppressed = 0;
    return 1;
}
