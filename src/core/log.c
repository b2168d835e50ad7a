/* stderr error log with level and timestamp; see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/time.h"

int log_current_level = LOG_INFO;
static int log_json;

void log_set_level(log_level_t level) { log_current_level = (int)level; }
void log_set_json(int json) { log_json = json; }

/* The message as a JSON string body (quotes and controls escaped). */
void log_write(log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[2048];
    char ts[40];
    time_format_rfc3339_ms(time_now_realtime_ms(), ts, sizeof ts);
    size_t len;
    va_list ap;
    va_start(ap, fmt);
    if (log_json) {
        char msg[1536];
        int m = vsnprintf(msg, sizeof msg, fmt, ap);
        size_t ml = m < 0 ? 0 : ((size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1);
        int n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                         names[level]);
        size_t used; /* a message longer than the line is cut, never split mid-escape */
        len = (size_t)n + json_escape(line + n, sizeof line - (size_t)n - 4, msg, ml, &used);
        memcpy(line + len, "\"}", 2);
        len += 2;
    } else {
        int n = snprintf(line, sizeof line, "%s ficus[%s] ", ts, names[level]);
        int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
        len = (size_t)n + (m < 0 ? 0 : (size_t)m);
        if (len > sizeof line - 2)
            len = sizeof line - 2;
    }
    va_end(ap);
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
