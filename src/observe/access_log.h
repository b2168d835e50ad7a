/* The JSON access log (one object per line per request). Workers format into
 * their own buffer and hand whole buffers to one writer thread, so no request
 * waits on a write(2). If the writer falls behind, buffers are dropped and
 * counted rather than blocking a worker. */
#ifndef FICUS_OBSERVE_ACCESS_LOG_H
#define FICUS_OBSERVE_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct access_log access_log_t;
typedef struct access_log_writer access_log_writer_t;

/* A string field: NULL ptr = JSON null. Not NUL-terminated. */
typedef struct access_log_str {
    const char *p;
    size_t n;
} access_log_str_t;

typedef struct access_log_entry {
    uint64_t time_ms; /* realtime, ms: request start */
    access_log_str_t request_id;
    access_log_str_t trace_id;
    access_log_str_t client_ip;
    access_log_str_t client_id;
    access_log_str_t method;
    access_log_str_t path; /* the request target as received */
    access_log_str_t route;
    access_log_str_t target_group;
    access_log_str_t target;
    int status;
    int upstream_status; /* 0 = null */
    uint32_t attempts;
    bool fallback;
    uint64_t duration_us;
    int64_t upstream_us; /* < 0 = null */
    uint64_t bytes_in;
    uint64_t bytes_out;
    access_log_str_t user_agent;
    const char *error;              /* NUL-terminated code, NULL = null */
    access_log_str_t upstream_path; /* the target sent upstream, after rewrites */
    access_log_str_t protocol;      /* "HTTP/1.1" */
    uint64_t config;                /* configuration number; 0 = null */
    const char *shadow; /* the shadow copy's result (match, mismatch, error), NULL = null */
} access_log_entry_t;

/* path: "stdout" or a file (opened for append, created 0644). NULL with err
 * set when the file cannot be opened. Starts the writer thread. */
access_log_t *access_log_open(const char *path, char *err, size_t errlen);
/* Flushes what workers handed over, stops the thread, closes. NULL no-op. */
void access_log_close(access_log_t *log);
/* Reopens the file (SIGUSR1, logrotate). 0 or FE_IO. Any thread. */
int access_log_reopen(access_log_t *log);
uint64_t access_log_dropped_lines(const access_log_t *log);

/* One per worker; used by that worker's thread only. */
access_log_writer_t *access_log_writer_new(access_log_t *log);
void access_log_writer_free(access_log_writer_t *w); /* flushes first */
void access_log_append(access_log_writer_t *w, const access_log_entry_t *e);
/* Hands the buffered lines to the writer thread (called every
 * ACCESS_LOG_FLUSH_MS by the worker, and when the buffer fills). */
void access_log_writer_flush(access_log_writer_t *w);

/* Formats one entry as a JSON line ending in '\n' (sans-I/O, for tests).
 * Returns the length, or 0 if cap is too small. */
size_t access_log_format(const access_log_entry_t *e, char *out, size_t cap);

#endif
