/* Shared route rollouts; see rollout_fleet.h. Each route has at most one
 * call in flight: a sync (publish this instance's evidence, renew or take the
 * lease, fetch the transitions it has not applied and, for the leader, the
 * fleet-wide sums) or a publish (write a move made here). The scripts are the
 * whole protocol; the policy/rollout state machine decides everything. */
#include "app/rollout_fleet.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/kv.h"
#include "core/errors.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/time.h"

enum { KEY_LEADER = 0, KEY_HISTORY, KEY_COUNTS, KEY_MEMBERS, N_KEYS };
static const char *const key_suffix[N_KEYS] = {"leader", "history", "counts", "members"};

#define ENTRY_FIXED 7 /* seq at to paused_from step cause len, then len bytes */
#define SUMS_SCALARS 6
#define REASON_MAX (ROLLOUT_REASON_BYTES - 1)
_Static_assert(REASON_MAX == 95, "the sync script cuts reasons at 95 bytes");

_Static_assert(4 + ROLLOUT_FLEET_NEW_PER_SYNC * (ENTRY_FIXED + REASON_MAX) + SUMS_SCALARS +
                       2 * (1 + 2 * ROLLOUT_HIST_SLOTS) <=
                   KV_MAX_INTS,
               "a sync's reply fits in one kv reply");
_Static_assert(ROLLOUT_FLEET_COUNTS_BYTES + 2048 <= KV_MAX_ARG_BYTES, "a sync's arguments");

/* Time in ms from redis. */
#define LUA_NOW                                                                                    \
    "if redis.replicate_commands then redis.replicate_commands() end\n"                            \
    "local t = redis.call('TIME')\n"                                                               \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* The newest transition's seq in the history list (0: none). */
#define LUA_TOP_SEQ(list)                                                                          \
    "local function top_seq()\n"                                                                   \
    "  local e = redis.call('LINDEX', " list ", 0)\n"                                              \
    "  return e and tonumber(string.match(e, '^%d+')) or 0\n"                                      \
    "end\n"

/* KEYS: leader, history, counts, members. ARGV: member, lease_ms, known seq,
 * evidence text, transitions at most, retention_ms, histogram slots.
 * -> {leader 0/1, now, seq, k, k x (seq at to paused_from step cause len
 * bytes...), and for the leader: 6 sums, nc, nc x (slot count), np, np x
 * (slot count)}. Evidence counts only from live members at the current seq. */
static kv_script_t sync_script = {
    .source = LUA_NOW
    "local m, lease, known = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local slots = tonumber(ARGV[7])\n"
    "redis.call('ZADD', KEYS[4], now + lease, m)\n"
    "redis.call('PEXPIRE', KEYS[4], lease * 3)\n"
    "redis.call('HSET', KEYS[3], m, ARGV[4])\n"
    "redis.call('PEXPIRE', KEYS[3], lease * 3)\n"
    "local lead = 0\n"
    "local holder = redis.call('GET', KEYS[1])\n"
    "if holder == m then redis.call('PEXPIRE', KEYS[1], lease) lead = 1\n"
    "elseif not holder then redis.call('SET', KEYS[1], m, 'PX', lease) lead = 1 end\n"
    "local h = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[5]) - 1)\n"
    "local seq = 0\n"
    "if h[1] then seq = tonumber(string.match(h[1], '^%d+')) or 0 end\n"
    "local out = {lead, now, seq, 0}\n"
    "local k = 0\n"
    "for i = #h, 1, -1 do\n"
    "  local s, at, to, pf, st, ca, why =\n"
    "    string.match(h[i], '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) ?(.*)$')\n"
    "  if s and tonumber(s) > known then\n"
    "    k = k + 1\n"
    "    for _, v in ipairs({s, at, to, pf, st, ca}) do out[#out + 1] = tonumber(v) end\n"
    "    why = string.sub(why, 1, 95)\n" /* REASON_MAX */
    "    out[#out + 1] = #why\n"
    "    for j = 1, #why do out[#out + 1] = string.byte(why, j) end\n"
    "  end\n"
    "end\n"
    "out[4] = k\n"
    "if lead == 1 then\n"
    "  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]))\n"
    "  local sc, ch, ph = {0, 0, 0, 0, 0, 0}, {}, {}\n"
    "  local all = redis.call('HGETALL', KEYS[3])\n"
    "  for i = 1, #all, 2 do\n"
    "    local exp = redis.call('ZSCORE', KEYS[4], all[i])\n"
    "    if not exp or tonumber(exp) <= now then\n"
    "      redis.call('HDEL', KEYS[3], all[i])\n"
    "      redis.call('ZREM', KEYS[4], all[i])\n"
    "    else\n"
    "      local v = {}\n"
    "      for d in string.gmatch(all[i + 1], '%d+') do v[#v + 1] = tonumber(d) end\n"
    "      if v[1] == seq and #v >= 9 then\n"
    "        for j = 1, 6 do sc[j] = sc[j] + v[j + 1] end\n"
    "        local p = 8\n"
    "        for _, hist in ipairs({ch, ph}) do\n"
    "          local n = math.min(v[p] or 0, slots)\n"
    "          for j = 1, n do\n"
    "            local slot, c = v[p + 2 * j - 1], v[p + 2 * j]\n"
    "            if slot and c and slot < slots then hist[slot] = (hist[slot] or 0) + c end\n"
    "          end\n"
    "          p = p + 2 * n + 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for j = 1, 6 do out[#out + 1] = sc[j] end\n"
    "  for _, hist in ipairs({ch, ph}) do\n"
    "    local keys = {}\n"
    "    for slot in pairs(hist) do keys[#keys + 1] = slot end\n"
    "    table.sort(keys)\n"
    "    out[#out + 1] = #keys\n"
    "    for _, slot in ipairs(keys) do out[#out + 1] = slot out[#out + 1] = hist[slot] end\n"
    "  end\n"
    "end\n"
    "return out\n"};

/* KEYS: leader, history. ARGV: member, conditional 0/1, expected seq, to,
 * paused_from, step, cause, reason, entries kept, retention_ms.
 * -> {written 0/1, seq (the new one, or the current when refused), now}.
 * Conditional: only by the lease holder, only on top of the expected seq (or
 * of a history redis lost). The new seq is past both the current and the
 * expected one, so a redis that lost its data never makes a seq seen before. */
static kv_script_t publish_script = {
    .source =
        LUA_NOW LUA_TOP_SEQ("KEYS[2]") "local cur, expected = top_seq(), tonumber(ARGV[3])\n"
                                       "if ARGV[2] == '1' and ((cur ~= expected and cur ~= 0) or\n"
                                       "    redis.call('GET', KEYS[1]) ~= ARGV[1]) then\n"
                                       "  return {0, cur, now}\n"
                                       "end\n"
                                       "local seq = math.max(cur, expected) + 1\n"
                                       "redis.call('LPUSH', KEYS[2], string.format("
                                       "'%d %d %s %s %s %s %s', seq, now,\n"
                                       "  ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]))\n"
                                       "redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[9]) - 1)\n"
                                       "redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[10]))\n"
                                       "return {1, seq, now}\n"};

typedef enum { CALL_NONE = 0, CALL_SYNC, CALL_PUBLISH } call_kind_t;

struct rollout_fleet_route {
    rollout_fleet_route_t *next;
    rollout_fleet_t *f;
    rollout_t *r; /* NULL: unbound, freed when its call ends */
    rollout_fleet_changed_fn changed;
    void *ctx;
    uint64_t fp;
    char *name;
    char *keys[N_KEYS];
    size_t key_lens[N_KEYS];
    kv_call_t *call;
    call_kind_t kind;
    uint64_t applied_seq;     /* the fleet's transition this instance follows */
    uint64_t synced_ms;       /* last answer from redis (monotonic), 0: never */
    bool leader;              /* as of the last sync */
    bool cut_off;             /* as of the last tick (for the log) */
    uint64_t moves;           /* moves made here (actions, on_failure cut off, judgements) */
    uint64_t published_moves; /* moves written (or given up for the fleet's) */
    uint64_t sent_moves;      /* moves when the publish in flight was sent */
    bool conditional;         /* the moves to write are all the leader's judgements */
};

struct rollout_fleet {
    uv_loop_t *loop;
    kv_t *kv; /* NULL once closing */
    char *address;
    char member[ROLLOUT_FLEET_MAX_MEMBER_BYTES + 1];
    uint64_t timeout_ms;
    metrics_registry_t *metrics;
    bool closing;
    uint64_t errors;   /* bad replies (kv counts the rest) */
    uint64_t kv_seen;  /* kv's errors when it closed */
    uint64_t reported; /* errors already in the metrics */
    rollout_fleet_route_t *routes;
    rollout_counts_t counts; /* scratch (the loop's only) */
    rollout_snapshot_t snap; /* scratch */
    char text[ROLLOUT_FLEET_COUNTS_BYTES];
};

/* ---- the evidence as text ---- */

typedef struct {
    char *p;
    size_t len, used;
    bool over;
} out_t;

static void put(out_t *o, const char *fmt, ...)
{
    if (o->over)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->used, o->len - o->used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->len - o->used)
        o->over = true;
    else
        o->used += (size_t)n;
}

static void put_hist(out_t *o, const uint64_t *hist)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++)
        n += hist[i] != 0;
    put(o, " %u", n);
    for (uint32_t i = 0; i < ROLLOUT_HIST_SLOTS; i++)
        if (hist[i])
            put(o, " %u %" PRIu64, i, hist[i]);
}

size_t rollout_fleet_encode_counts(uint64_t tag, const rollout_counts_t *c, char *out, size_t len)
{
    out_t o = {.p = out, .len = len};
    if (len == 0)
        return 0;
    put(&o, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, tag,
        c->canary_tries, c->canary_failures, c->canary_masked, c->primary_tries, c->shadow_matches,
        c->shadow_mismatches);
    put_hist(&o, c->canary_hist);
    put_hist(&o, c->primary_hist);
    return o.over ? 0 : o.used;
}

uint64_t rollout_fleet_fingerprint(const rollout_config_t *c, const char *canary)
{
    char buf[512] = "";
    out_t o = {.p = buf, .len = sizeof buf};
    put(&o, "%s|%" PRIu64 "|%u|%.17g|%.17g|%.17g|%d|", canary ? canary : "", c->interval_ms,
        c->min_requests, c->max_error_rate, c->max_latency_ratio, c->max_mismatch_rate,
        (int)c->on_failure);
    for (uint32_t i = 0; i < c->n_steps && i < ROLLOUT_MAX_STEPS; i++)
        put(&o, "%u,", c->steps[i]);
    return hash_fnv1a(HASH_FNV1A_INIT, buf, o.used);
}

/* ---- replies ---- */

typedef struct {
    rollout_transition_t t;
    rollout_state_t paused_from;
    uint64_t seq, at_redis_ms;
    bool valid; /* its values fit a rollout */
} entry_t;

typedef struct {
    bool leader;
    uint64_t now_ms, seq;
    size_t n_entries;
    entry_t entries[ROLLOUT_FLEET_NEW_PER_SYNC];
    bool has_sums;
} sync_reply_t;

static bool in_range(long long v, long long lo, long long hi) { return v >= lo && v <= hi; }

static int parse_hist(const long long *ints, size_t n, size_t *pos, uint64_t *hist)
{
    if (*pos >= n || !in_range(ints[*pos], 0, ROLLOUT_HIST_SLOTS))
        return FE_PARSE;
    size_t k = (size_t)ints[(*pos)++];
    if (n - *pos < 2 * k)
        return FE_PARSE;
    for (size_t i = 0; i < k; i++, *pos += 2) {
        if (!in_range(ints[*pos], 0, ROLLOUT_HIST_SLOTS - 1) || ints[*pos + 1] < 0)
            return FE_PARSE;
        hist[ints[*pos]] += (uint64_t)ints[*pos + 1];
    }
    return 0;
}

/* One transition of a sync's reply. FE_PARSE when the reply's shape is
 * wrong; an entry of the right shape whose values do not fit (a state or
 * cause out of range) is kept with valid false, to be skipped. */
static int parse_entry(const long long *ints, size_t n, size_t *pos, entry_t *e)
{
    const long long *v = ints + *pos;
    if (n - *pos < ENTRY_FIXED || !in_range(v[6], 0, REASON_MAX) ||
        n - *pos - ENTRY_FIXED < (size_t)v[6])
        return FE_PARSE;
    memset(e, 0, sizeof *e);
    size_t len = (size_t)v[6];
    e->valid = v[0] >= 1 && v[1] >= 0 && in_range(v[2], 0, ROLLOUT_PAUSED) &&
               in_range(v[3], 0, ROLLOUT_PAUSED) && in_range(v[4], 0, ROLLOUT_MAX_STEPS - 1) &&
               in_range(v[5], 0, ROLLOUT_CAUSE_MANUAL);
    e->seq = v[0] >= 1 ? (uint64_t)v[0] : 0;
    if (e->valid) {
        e->at_redis_ms = (uint64_t)v[1];
        e->t.to = (rollout_state_t)v[2];
        e->paused_from = (rollout_state_t)v[3];
        e->t.step = (uint32_t)v[4];
        e->t.cause = (rollout_cause_t)v[5];
    }
    for (size_t i = 0; i < len; i++) {
        long long b = v[ENTRY_FIXED + i];
        if (!in_range(b, 1, 255))
            e->valid = false;
        else
            e->t.reason[i] = (char)b;
    }
    *pos += ENTRY_FIXED + len;
    return 0;
}

/* A sync's reply into out and, for the leader, the sums into sums. */
static int parse_sync(const long long *ints, size_t n, sync_reply_t *out, rollout_counts_t *sums)
{
    memset(out, 0, sizeof *out);
    if (n < 4 || !in_range(ints[0], 0, 1) || ints[1] < 0 || ints[2] < 0 ||
        !in_range(ints[3], 0, ROLLOUT_FLEET_NEW_PER_SYNC))
        return FE_PARSE;
    out->leader = ints[0] == 1;
    out->now_ms = (uint64_t)ints[1];
    out->seq = (uint64_t)ints[2];
    out->n_entries = (size_t)ints[3];
    size_t pos = 4;
    for (size_t i = 0; i < out->n_entries; i++)
        if (parse_entry(ints, n, &pos, &out->entries[i]) != 0)
            return FE_PARSE;
    if (!out->leader)
        return pos == n ? 0 : FE_PARSE;
    if (n - pos < SUMS_SCALARS)
        return FE_PARSE;
    memset(sums, 0, sizeof *sums);
    uint64_t *scalars[SUMS_SCALARS] = {&sums->canary_tries,   &sums->canary_failures,
                                       &sums->canary_masked,  &sums->primary_tries,
                                       &sums->shadow_matches, &sums->shadow_mismatches};
    for (size_t i = 0; i < SUMS_SCALARS; i++, pos++) {
        if (ints[pos] < 0)
            return FE_PARSE;
        *scalars[i] = (uint64_t)ints[pos];
    }
    if (parse_hist(ints, n, &pos, sums->canary_hist) != 0 ||
        parse_hist(ints, n, &pos, sums->primary_hist) != 0 || pos != n)
        return FE_PARSE;
    out->has_sums = true;
    return 0;
}

/* ---- routes ---- */

static void bad_reply(rollout_fleet_route_t *fr, const char *what)
{
    fr->f->errors++;
    log_limited(LOG_WARN, "route %s: rollout: redis answered a %s of another shape", fr->name,
                what);
}

static void route_free(rollout_fleet_route_t *fr)
{
    rollout_fleet_t *f = fr->f;
    for (rollout_fleet_route_t **p = &f->routes; *p; p = &(*p)->next)
        if (*p == fr) {
            *p = fr->next;
            break;
        }
    for (int i = 0; i < N_KEYS; i++)
        free(fr->keys[i]);
    free(fr->name);
    free(fr);
}

static void fleet_free_if_done(rollout_fleet_t *f)
{
    if (f->closing && !f->routes) {
        free(f->address);
        free(f);
    }
}

/* A call ended: false when the route is gone (unbound or closing). */
static bool call_ended(rollout_fleet_route_t *fr)
{
    fr->call = NULL;
    fr->kind = CALL_NONE;
    if (!fr->r) {
        rollout_fleet_t *f = fr->f;
        route_free(fr);
        fleet_free_if_done(f);
        return false;
    }
    return !fr->f->closing;
}

static bool move_pending(const rollout_fleet_route_t *fr)
{
    return fr->moves != fr->published_moves;
}

static void send_publish(rollout_fleet_route_t *fr);

/* Applies the fleet's transitions this instance has not, then (the leader)
 * judges the fleet-wide window. */
static void on_sync_done(void *ctx, int status, const long long *ints, size_t n)
{
    rollout_fleet_route_t *fr = ctx;
    if (!call_ended(fr))
        return;
    if (status != 0) {
        fr->leader = false; /* counted by kv */
        return;
    }
    rollout_fleet_t *f = fr->f;
    sync_reply_t rep;
    if (parse_sync(ints, n, &rep, &f->counts) != 0) {
        bad_reply(fr, "sync");
        fr->leader = false;
        return;
    }
    uint64_t now = time_now_ms();
    fr->synced_ms = now;
    if (rep.leader != fr->leader)
        log_info("route %s: rollout: this instance %s the fleet's leader", fr->name,
                 rep.leader ? "is now" : "is no longer");
    fr->leader = rep.leader;
    if (rep.seq < fr->applied_seq) {
        log_warn("route %s: rollout: redis lost the fleet's transitions (at %" PRIu64
                 ", this instance followed %" PRIu64 "); the state here is kept",
                 fr->name, rep.seq, fr->applied_seq);
        fr->applied_seq = rep.seq;
    }
    bool moved = false;
    /* A move made here and not written yet wins: it is written next. */
    for (size_t i = 0; i < rep.n_entries && !move_pending(fr); i++) {
        entry_t *e = &rep.entries[i];
        if (e->seq <= fr->applied_seq)
            continue;
        uint64_t age = rep.now_ms > e->at_redis_ms ? rep.now_ms - e->at_redis_ms : 0;
        e->t.at_ms = now > age ? now - age : 0;
        if (e->valid && rollout_follow(fr->r, &e->t, e->paused_from, now) == 0) {
            moved = true;
        } else {
            f->errors++; /* written by something else than this version */
            log_limited(LOG_WARN,
                        "route %s: rollout: the fleet's transition %" PRIu64
                        " does not fit this rollout block; skipped",
                        fr->name, e->seq);
        }
        fr->applied_seq = e->seq;
    }
    if (rep.leader && rep.has_sums && !move_pending(fr) &&
        rollout_tick_mode(fr->r, now, &f->counts, ROLLOUT_TICK_ALL) != 0) {
        moved = true;
        fr->moves++;
        fr->conditional = true;
    }
    if (moved && fr->changed)
        fr->changed(fr->ctx);
    if (move_pending(fr) && !fr->call)
        send_publish(fr);
}

static void on_publish_done(void *ctx, int status, const long long *ints, size_t n)
{
    rollout_fleet_route_t *fr = ctx;
    if (!call_ended(fr) || status != 0)
        return; /* a failure is counted by kv; the move is written at the next tick */
    if (n != 3 || !in_range(ints[0], 0, 1) || ints[1] < 0) {
        bad_reply(fr, "publish");
        return;
    }
    fr->synced_ms = time_now_ms();
    uint64_t seq = (uint64_t)ints[1];
    if (ints[0] == 1) {
        fr->applied_seq = seq;
        if (fr->sent_moves == fr->moves) {
            fr->published_moves = fr->moves;
            fr->conditional = false;
        }
        log_info("route %s: rollout: move written for the fleet (transition %" PRIu64 ")", fr->name,
                 seq);
    } else {
        /* The lease or the fleet moved on first: the judgement made here is
         * dropped and the fleet's newest transition applied again. */
        log_info("route %s: rollout: the fleet moved first (transition %" PRIu64 "); following it",
                 fr->name, seq);
        fr->published_moves = fr->moves;
        fr->conditional = false;
        fr->leader = false;
        fr->applied_seq = seq > 0 ? seq - 1 : 0;
    }
    if (move_pending(fr))
        send_publish(fr);
}

/* Sends kind's script with args; the route's one call. */
static void call_send(rollout_fleet_route_t *fr, call_kind_t kind, kv_script_t *script,
                      const char *const *args, const size_t *lens, size_t nkeys, size_t nargs)
{
    fr->call = kv_eval(fr->f->kv, script, nkeys, args, lens, nargs, fr->f->timeout_ms,
                       kind == CALL_SYNC ? on_sync_done : on_publish_done, fr);
    fr->kind = fr->call ? kind : CALL_NONE; /* refused: counted by kv, tried next tick */
}

static size_t num(char *buf, size_t len, uint64_t v)
{
    int n = snprintf(buf, len, "%" PRIu64, v);
    return n > 0 ? (size_t)n : 0;
}

static void send_publish(rollout_fleet_route_t *fr)
{
    rollout_fleet_t *f = fr->f;
    rollout_snapshot_t *s = &f->snap;
    rollout_snapshot(fr->r, time_now_ms(), s);
    const rollout_transition_t *last = s->n_history ? &s->history[s->n_history - 1] : NULL;
    /* ARGV 3..: expected, to, paused_from, step, cause, (reason), kept, retention */
    uint64_t vals[] = {fr->applied_seq,
                       (uint64_t)s->state,
                       (uint64_t)s->paused_from,
                       s->step,
                       last ? (uint64_t)last->cause : (uint64_t)ROLLOUT_CAUSE_MANUAL,
                       ROLLOUT_FLEET_HISTORY,
                       ROLLOUT_FLEET_RETENTION_MS};
    char v[7][24];
    const char *args[12] = {fr->keys[KEY_LEADER], fr->keys[KEY_HISTORY], f->member,
                            fr->conditional ? "1" : "0"};
    size_t lens[12] = {fr->key_lens[KEY_LEADER], fr->key_lens[KEY_HISTORY], strlen(f->member), 1};
    for (size_t i = 0; i < 7; i++) {
        size_t at = i < 5 ? 4 + i : 5 + i; /* the reason sits between cause and kept */
        args[at] = v[i];
        lens[at] = num(v[i], sizeof v[i], vals[i]);
    }
    args[9] = last ? last->reason : "";
    lens[9] = strlen(args[9]);
    fr->sent_moves = fr->moves;
    call_send(fr, CALL_PUBLISH, &publish_script, args, lens, 2, 12);
}

static void send_sync(rollout_fleet_route_t *fr, uint64_t now_ms)
{
    rollout_fleet_t *f = fr->f;
    rollout_window_counts(fr->r, now_ms, &f->counts);
    size_t text_len =
        rollout_fleet_encode_counts(fr->applied_seq, &f->counts, f->text, sizeof f->text);
    char lease[24], known[24], most[24], keep[24], slots[24];
    const char *args[N_KEYS + 7];
    size_t lens[N_KEYS + 7];
    for (int i = 0; i < N_KEYS; i++) {
        args[i] = fr->keys[i];
        lens[i] = fr->key_lens[i];
    }
    args[4] = f->member;
    lens[4] = strlen(f->member);
    args[5] = lease;
    lens[5] = num(lease, sizeof lease, ROLLOUT_FLEET_LEASE_MS);
    args[6] = known;
    lens[6] = num(known, sizeof known, fr->applied_seq);
    args[7] = f->text;
    lens[7] = text_len; /* cannot overflow (sized for every slot); 0 would count nothing */
    args[8] = most;
    lens[8] = num(most, sizeof most, ROLLOUT_FLEET_NEW_PER_SYNC);
    args[9] = keep;
    lens[9] = num(keep, sizeof keep, ROLLOUT_FLEET_RETENTION_MS);
    args[10] = slots;
    lens[10] = num(slots, sizeof slots, ROLLOUT_HIST_SLOTS);
    call_send(fr, CALL_SYNC, &sync_script, args, lens, N_KEYS, N_KEYS + 7);
}

/* ---- the public side ---- */

rollout_fleet_t *rollout_fleet_new(uv_loop_t *loop, const char *address, uint64_t timeout_ms,
                                   const char *member, metrics_registry_t *metrics)
{
    if (!loop || !address || !member || !member[0] ||
        strlen(member) > ROLLOUT_FLEET_MAX_MEMBER_BYTES)
        return NULL;
    rollout_fleet_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->loop = loop;
    f->metrics = metrics;
    f->timeout_ms = timeout_ms ? timeout_ms : ROLLOUT_FLEET_TIMEOUT_MS;
    memcpy(f->member, member, strlen(member) + 1);
    f->address = strdup(address);
    if (!f->address)
        goto fail_free;
    kv_opts_t ko = {.timeout_ms = f->timeout_ms,
                    .backoff_min_ms = ROLLOUT_FLEET_BACKOFF_MIN_MS,
                    .backoff_max_ms = ROLLOUT_FLEET_BACKOFF_MAX_MS};
    f->kv = kv_new(loop, address, &ko);
    if (!f->kv)
        goto fail_free_address;
    return f;

fail_free_address:
    free(f->address);
fail_free:
    free(f);
    return NULL;
}

void rollout_fleet_close(rollout_fleet_t *f)
{
    if (!f || f->closing)
        return;
    f->closing = true;
    f->kv_seen = kv_errors(f->kv);
    kv_t *kv = f->kv;
    f->kv = NULL;
    kv_close(kv); /* calls in flight end here, with FE_IO */
    fleet_free_if_done(f);
}

const char *rollout_fleet_address(const rollout_fleet_t *f) { return f->address; }

void rollout_fleet_set_timeout(rollout_fleet_t *f, uint64_t timeout_ms)
{
    if (timeout_ms)
        f->timeout_ms = timeout_ms;
}

uint64_t rollout_fleet_errors(const rollout_fleet_t *f)
{
    return f->errors + (f->kv ? kv_errors(f->kv) : f->kv_seen);
}

rollout_fleet_route_t *rollout_fleet_bind(rollout_fleet_t *f, const char *route, uint64_t fp,
                                          rollout_t *r, rollout_fleet_changed_fn changed, void *ctx)
{
    if (!f || f->closing || !route || !r)
        return NULL;
    for (rollout_fleet_route_t *fr = f->routes; fr; fr = fr->next)
        if (fr->fp == fp && strcmp(fr->name, route) == 0) {
            fr->r = r;
            fr->changed = changed;
            fr->ctx = ctx;
            return fr;
        }
    rollout_fleet_route_t *fr = calloc(1, sizeof *fr);
    if (!fr)
        return NULL;
    fr->f = f;
    fr->fp = fp;
    fr->name = strdup(route);
    bool ok = fr->name != NULL;
    for (int i = 0; ok && i < N_KEYS; i++) {
        size_t len = strlen("ficus:rollout:") + strlen(route) + 18 + strlen(key_suffix[i]) + 1;
        fr->keys[i] = malloc(len);
        ok = fr->keys[i] != NULL;
        if (ok)
            fr->key_lens[i] = (size_t)snprintf(
                fr->keys[i], len, "ficus:rollout:%s:%016" PRIx64 ":%s", route, fp, key_suffix[i]);
    }
    fr->next = f->routes;
    f->routes = fr;
    if (!ok) {
        route_free(fr);
        return NULL;
    }
    fr->r = r;
    fr->changed = changed;
    fr->ctx = ctx;
    return fr;
}

void rollout_fleet_unbind(rollout_fleet_route_t *fr, rollout_t *r)
{
    if (!fr || fr->r != r)
        return;
    fr->r = NULL;
    fr->changed = NULL;
    if (fr->call)
        return; /* freed when it ends */
    rollout_fleet_t *f = fr->f;
    route_free(fr);
    fleet_free_if_done(f);
}

static bool connected(const rollout_fleet_route_t *fr, uint64_t now_ms)
{
    return fr->f->kv && kv_connected(fr->f->kv) && fr->synced_ms &&
           now_ms - fr->synced_ms <= ROLLOUT_FLEET_CUT_OFF_MS;
}

/* Redis errors into ficus_redis_errors_total as they happen. */
static void report_errors(rollout_fleet_t *f)
{
    uint64_t now = rollout_fleet_errors(f);
    for (; f->metrics && f->reported < now; f->reported++)
        metrics_redis_error(f->metrics);
    f->reported = now;
}

int rollout_fleet_tick(rollout_fleet_route_t *fr, uint64_t now_ms)
{
    if (!fr || !fr->r)
        return 0;
    rollout_fleet_t *f = fr->f;
    report_errors(f);
    bool cut_off = !connected(fr, now_ms);
    if (cut_off != fr->cut_off && fr->synced_ms) /* quiet until redis first answered */
        log_warn("route %s: rollout %s", fr->name,
                 cut_off ? "cut off from redis: the step is held, on_failure still acts on this "
                           "instance's evidence"
                         : "shares the fleet's state again");
    if (fr->synced_ms)
        fr->cut_off = cut_off;
    int moved =
        rollout_tick_mode(fr->r, now_ms, NULL, cut_off ? ROLLOUT_TICK_FAILURES : ROLLOUT_TICK_HOLD);
    if (moved) {
        fr->moves++;
        fr->conditional = false;
    }
    if (fr->call || f->closing)
        return moved;
    if (move_pending(fr))
        send_publish(fr);
    else
        send_sync(fr, now_ms);
    return moved;
}

void rollout_fleet_publish(rollout_fleet_route_t *fr, uint64_t now_ms)
{
    if (!fr || !fr->r)
        return;
    fr->moves++;
    fr->conditional = false;
    if (!fr->call && !fr->f->closing)
        send_publish(fr);
}

void rollout_fleet_status(const rollout_fleet_route_t *fr, uint64_t now_ms,
                          rollout_fleet_status_t *out)
{
    memset(out, 0, sizeof *out);
    bool up = connected(fr, now_ms);
    out->connected = up;
    out->leader = up && fr->leader;
    out->unpublished = move_pending(fr);
    out->seq = fr->applied_seq;
    out->synced_ms = fr->synced_ms;
}
