/* A named set of strings (one member per line, '#' comments) loaded from a
 * file or an http:// URL and re-read every `refresh`. Workers look members up
 * lock-free; the main thread swaps in a new immutable member table and
 * retires the old one through the retire hook once no worker can see it.
 * A failed read keeps the previous members. */
#ifndef FICUS_ROUTING_SET_H
#define FICUS_ROUTING_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct set set_t;
typedef struct set_members set_members_t;

/* Frees ptr with free_fn once no reader can hold it (see worker_retire). */
typedef void (*set_retire_fn)(void *ctx, void *ptr, void (*free_fn)(void *));

/* Parses a member list (sans-I/O, fuzzable): NULL on FE_NOMEM/FE_PARSE with
 * err set ("line N: ..."). Lines are trimmed; blank lines and '#' comments are
 * skipped; a member longer than MAX_SET_LINE_BYTES is an error. */
set_members_t *set_members_parse(const char *data, size_t len, char *err, size_t errlen);
/* Drops one reference; the last frees. */
void set_members_free(void *m);
size_t set_members_count(const set_members_t *m);
bool set_members_contains(const set_members_t *m, const char *key, size_t len);

/* An empty set: members arrive with the first set_reload(). retire may be
 * NULL (old members are then freed at once: single-threaded use and tests). */
set_t *set_new(const config_set_t *cfg, set_retire_fn retire, void *retire_ctx);
void set_free(set_t *s);
const char *set_name(const set_t *s);
/* Any thread; lock-free. */
bool set_contains(const set_t *s, const char *key, size_t len);
size_t set_count(const set_t *s);
/* Installs new members (takes ownership) and retires the old ones. */
void set_swap(set_t *s, set_members_t *m);
/* Blocking read of the file or URL + parse, without installing: any thread
 * (the retire hook may not be). 0 with *out, or a negative FE_* with err set
 * (counted as a reload failure). */
int set_fetch(set_t *s, set_members_t **out, char *err, size_t errlen);
/* Main thread: dst shares src's current members (a reload whose first read
 * of a set failed keeps what the previous configuration had). False when src
 * has none. */
bool set_adopt(set_t *dst, const set_t *src);
/* set_fetch + set_swap, in the thread that may retire. */
/* Members in cur and not in old (added) and the reverse (removed). */
void set_members_diff(const set_members_t *old, const set_members_t *cur, size_t *added,
                      size_t *removed);
/* The current members (valid until the next swap; main thread). */
const set_members_t *set_current(const set_t *s);
/* Reads the set's file or URL once and parses it, as a refresh would (for
 * `ficus check`); 0, or an error in err. */
int set_check(const config_set_t *cs, char *err, size_t errlen);
int set_reload(set_t *s, char *err, size_t errlen);
/* Counters for metrics: reload failures so far. */
uint64_t set_reload_failures(const set_t *s);

#endif
