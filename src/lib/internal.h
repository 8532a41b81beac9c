/*
 * Helpers shared by libretryq's own files; not part of the public API (the symbols
 * are hidden in the shared library, visible in the static one for tests and the
 * worker).
 */
#ifndef RETRYQ_LIB_INTERNAL_H
#define RETRYQ_LIB_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "retryq/retryq.h"

/* Fills err (when not NULL) with code and a formatted sentence; returns code. */
int rq_error(retryq_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies src into dst of capacity cap, always NUL-terminating; false when cut. */
bool rq_copy(char *dst, size_t cap, const char *src);

/* Copies len bytes of src (no NUL needed) into dst of capacity cap, NUL-terminated; a
 * longer text is cut before the UTF-8 sequence that would not fit whole. */
void rq_copy_utf8(char *dst, size_t cap, const char *src, size_t len);

/* The caller's name `given`, else the OS user's (getpwuid_r, else $USER, else "unknown"). */
void rq_who(const char *given, char *buf, size_t cap);

/* Checks an operator's text (a reason, a name): at most `max` bytes of valid UTF-8 without
 * control characters. RETRYQ_ERR_INVALID with "<what>: ..." otherwise. */
int rq_check_text(const char *what, const char *text, size_t max, retryq_error_t *err);

/* Milliseconds since the epoch (wall clock) and an RFC 3339 UTC timestamp of it. */
int64_t rq_now_ms(void);
void rq_format_rfc3339(int64_t epoch_ms, char *buf, size_t cap);
/* Parses RFC 3339 ("2026-11-29T00:00:00Z", fractions and offsets allowed); -1 when bad. */
int64_t rq_parse_rfc3339(const char *text);

/*
 * Nesting limit of a JSON text, checked on the raw bytes before a parser sees them (cJSON
 * recurses once per level). Strings and their escapes are skipped; the text need not be
 * valid JSON (a closing bracket without its opening one counts one level less). Returns
 * the offset of the first '{' or '[' that opens a level deeper than limit, or len when
 * none does.
 */
size_t rq_json_too_deep(const char *text, size_t len, int limit);

/*
 * Strict UTF-8, the form PostgreSQL accepts: shortest form, no UTF-16 surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF.
 *
 * rq_utf8_sequence: the length of the valid sequence that starts at s[0] (len >= 1
 * bytes left; 1 for any ASCII byte, NUL included), or 0 when none starts there; then
 * *bad (when not NULL) is the length of its maximal subpart (Unicode's rule for what
 * one U+FFFD replaces), at least 1.
 */
size_t rq_utf8_sequence(const unsigned char *s, size_t len, size_t *bad);
/* True when s[0..len) is strict UTF-8 (NUL bytes are valid here). */
bool rq_utf8_valid(const char *s, size_t len);

/* Flow control documents (flow.c), also read by the worker's status page. Each fills
 * `out` from the stored JSON text (`doc`, `len` bytes) of flow key `key` as seen at Redis
 * time `now_ms`, and returns false when the text is not a JSON object (out then holds the
 * key and empty fields: until_ms 0, left_ms -1 for a pause; failures and calls -1). */
bool rq_flow_parse_pause(const char *key, const char *doc, size_t len, int64_t now_ms,
                         retryq_flow_pause_t *out);
bool rq_flow_parse_breaker(const char *key, const char *doc, size_t len, int64_t now_ms,
                           retryq_flow_breaker_t *out);

/* Retry set progress (sets.c), also read by the worker's status page. The SQL pieces:
 * a timestamp column as RFC 3339 UTC text; the span (ms) a set's rate of outcomes is
 * counted over — the last minute, or less for a younger set (s = retryq_sets); the
 * progress columns of retryq_set_progress / retryq_set_slices (p), in the order
 * rq_set_progress_add reads them. */
#define RQ_SET_UTC_TEXT(column) \
    "to_char(" column " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define RQ_SET_RATE_WINDOW_MS \
    "extract(epoch FROM least(interval '1 minute', now() - s.created_at)) * 1000"
#define RQ_SET_PROGRESS_COLUMNS "p.total, p.open, p.completed, p.failed, p.superseded, " \
                                "p.cancelled, p.other, p.finished_last_minute"
#define RQ_SET_PROGRESS_COUNT 8
struct pg_result;
/* Adds the RQ_SET_PROGRESS_COUNT counts of row `row` from column `col` on to *p. */
void rq_set_progress_add(const struct pg_result *res, int row, int col, retryq_set_progress_t *p);
/* Percent and ETA of counted progress, from `window_ms` (RQ_SET_RATE_WINDOW_MS; <= 0: no
 * ETA). */
void rq_set_progress_finish(retryq_set_progress_t *p, double window_ms);

/* The queue's pause (pause.c), also read by the worker: fills `out` from the pause as the
 * scripts return it (`pairs`: field, value, ...; an empty array when the queue runs) as
 * seen at Redis time `now_ms` (0: unknown, age_ms -1). False when the reply is not an
 * array of strings (out then says not paused). */
struct redisReply;
/* The script that reads {Q}:paused (KEYS[1]; ARGV[1] "0": read, "1": read and delete);
 * its reply is {Redis's time in ms, [field, value, ...] of the pause}. */
extern const char rq_pause_lua_read[];
bool rq_pause_parse(const struct redisReply *pairs, int64_t now_ms, retryq_pause_state_t *out);

/*
 * Lua source shared by the scripts of the pop (src/worker/queue.c) and the cancel
 * (src/lib/cancel.c), which must agree on every byte of a job's reading. They read the job
 * text with a scanner of its outermost object rather than cjson: cjson keeps numbers as
 * doubles, so an execution_id above 2^53 would come back changed, and re-encoding may
 * reorder keys or escape slashes.
 *
 * Whitespace is what the C decoder skips (src/lib/job.c, cJSON's rule): any byte up to
 * 0x20, not only JSON's space, tab, CR and LF (RQ_LUA_WS, a Lua character class).
 *
 * RQ_LUA_WALK: walk(v, on_key) goes through the top-level keys of the object `v`, skipping
 * strings (with their escapes) and nested values, so a key inside a nested object or a
 * string is not taken for the job's; leading and trailing whitespace is no obstacle. For
 * each top-level key it calls on_key(key, pos), pos being just after the key's closing
 * quote; a non-nil answer stops the walk and is returned second (nil, answer). At the end
 * it returns the position of the closing brace; nil when `v` is not an object or is cut.
 * A key spelled with escapes ("deliv\u0065ry") is not recognised.
 */
#define RQ_LUA_WS "%z\\1- "

#define RQ_LUA_WALK \
    "local function walk(v, on_key)\n" \
    "  local i = string.find(v, '[^" RQ_LUA_WS "]')\n" \
    "  if not i or string.byte(v, i) ~= 123 then return nil end\n" \
    "  local depth, pos, want_key = 0, i, false\n" \
    "  while true do\n" \
    "    local s = string.find(v, '[{}%[%]\",]', pos)\n" \
    "    if not s then return nil end\n" \
    "    local c = string.byte(v, s)\n" \
    "    if c == 34 then\n" \
    "      local e = s + 1\n" \
    "      while true do\n" \
    "        local f = string.find(v, '[\"\\\\]', e)\n" \
    "        if not f then return nil end\n" \
    "        if string.byte(v, f) == 92 then e = f + 2 else e = f; break end\n" \
    "      end\n" \
    "      if depth == 1 and want_key then\n" \
    "        want_key = false\n" \
    "        local r = on_key(string.sub(v, s + 1, e - 1), e + 1)\n" \
    "        if r ~= nil then return nil, r end\n" \
    "      end\n" \
    "      pos = e + 1\n" \
    "    elseif c == 123 or c == 91 then\n" \
    "      depth = depth + 1\n" \
    "      if depth == 1 then want_key = true end\n" \
    "      pos = s + 1\n" \
    "    elseif c == 125 or c == 93 then\n" \
    "      depth = depth - 1\n" \
    "      if depth == 0 then return s end\n" \
    "      pos = s + 1\n" \
    "    else\n" \
    "      if depth == 1 then want_key = true end\n" \
    "      pos = s + 1\n" \
    "    end\n" \
    "  end\n" \
    "end\n"

/*
 * RQ_LUA_BUMP (with RQ_LUA_WALK): bump(v), the job text with its top-level "delivery"
 * raised by one (added as 1 when absent), every other byte kept. Text that is not an
 * object, or whose delivery is not digits, is returned unchanged (the worker
 * dead-letters it when it decodes it).
 */
#define RQ_LUA_BUMP \
    RQ_LUA_WALK \
    "local function bump(v)\n" \
    "  local close, done = walk(v, function(k, e)\n" \
    "    if k ~= 'delivery' then return nil end\n" \
    "    local _, b, d = string.find(v, '^[" RQ_LUA_WS "]*:[" RQ_LUA_WS "]*(%d+)', e)\n" \
    "    if not b then return v end\n" \
    "    return string.sub(v, 1, b - #d) .. tostring(tonumber(d) + 1) .. string.sub(v, b + 1)\n" \
    "  end)\n" \
    "  if done then return done end\n" \
    "  if not close then return v end\n" \
    "  local i = string.find(v, '[^" RQ_LUA_WS "]')\n" \
    "  local j = close - 1\n" \
    "  while j > i and string.find(string.sub(v, j, j), '^[" RQ_LUA_WS "]$') do j = j - 1 end\n" \
    "  local sep = j > i and ',' or ''\n" \
    "  return string.sub(v, 1, close - 1) .. sep .. '\"delivery\":1' .. string.sub(v, close)\n" \
    "end\n"

/*
 * RQ_LUA_IDENTITY (with RQ_LUA_WALK): ident(v), the identity "<execution_id>:<retry_attempt>"
 * of a job's text, or nil when it is not an object holding both as digits (execution_id
 * may be a decimal string, as the wire format allows). Leading zeros are dropped, so the
 * identity equals what C prints with %lld.
 *
 * The walk costs about 10 us of Redis's time a job: a pop of 64 while any tombstone
 * exists took 1.0-1.4 ms against 0.19-0.21 ms without (docs/performance.md). Jobs as
 * libretryq and the Go package write them start with the four fields in one order
 * (RQ_LUA_CANONICAL); when the rest of the text holds no escape, no nested value and
 * neither key again, every key the walk would visit after those four is another key, so
 * the two numbers (without leading zeros) are read from the prefix with one match
 * (0.50-0.56 ms for that pop). Any other text is walked. The two readings agree on every
 * text the decoder accepts (a text cut short after the prefix, which the decoder refuses,
 * gets an identity from the prefix and none from the walk: it never runs either way).
 */
#define RQ_LUA_CANONICAL \
    "^{\"execution_id\":([1-9]%d*),\"region\":\"[^\"\\\\]*\",\"question_index\":%-?%d+,\"retry_attempt\":([1-9]%d*)[,}]"

#define RQ_LUA_IDENTITY_ONLY \
    "local function ident_walk(v)\n" \
    "  local eid, att\n" \
    "  local close = walk(v, function(k, e)\n" \
    "    if k == 'execution_id' then\n" \
    "      local _, _, d = string.find(v, '^[" RQ_LUA_WS "]*:[" RQ_LUA_WS "]*\"?(%d+)', e)\n" \
    "      if d then eid = d end\n" \
    "    elseif k == 'retry_attempt' then\n" \
    "      local _, _, d = string.find(v, '^[" RQ_LUA_WS "]*:[" RQ_LUA_WS "]*(%d+)', e)\n" \
    "      if d then att = d end\n" \
    "    end\n" \
    "    return nil\n" \
    "  end)\n" \
    "  if not close or not eid or not att then return nil end\n" \
    "  return eid, att\n" \
    "end\n" \
    "local function ident(v)\n" \
    "  local _, e, eid, att = string.find(v, '" RQ_LUA_CANONICAL "')\n" \
    "  if e and not string.find(v, '[\\\\{%[]', e) and not string.find(v, '\"execution_id\"', e, true)\n" \
    "     and not string.find(v, '\"retry_attempt\"', e, true) then\n" \
    "    return eid .. ':' .. att\n" \
    "  end\n" \
    "  eid, att = ident_walk(v)\n" \
    "  if not eid then return nil end\n" \
    "  return (string.gsub(eid, '^0+(%d)', '%1')) .. ':' .. (string.gsub(att, '^0+(%d)', '%1'))\n" \
    "end\n"
#define RQ_LUA_IDENTITY RQ_LUA_WALK RQ_LUA_IDENTITY_ONLY

#endif
