/*
 * Pausing the whole queue (retryq_pause, retryq_resume, retryq_pause_get): the hash
 * {Q}:paused holds reason, by and since_ms while the queue is paused, and nothing else
 * does. The workers read it on a timer of their periodic schedule (src/worker/pause.c)
 * and stop taking jobs and starting router calls while it exists.
 *
 * Each call is one Lua script that takes the time from Redis (TIME), so since_ms and the
 * age mean the same to every host, and names its one key in KEYS (Redis Cluster: the key
 * carries the {Q} hash tag).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

/* The head of both scripts: Redis's time, and the pause in place as [field, value, ...]
 * (empty when there is none). Only HMGET and TIME, so the worker's least-privilege ACL
 * (docs/security.md) is enough to read it; a hash with none of the three fields is no
 * pause. A key of another type (written by hand) reads as a pause whose reason says so:
 * the workers take nothing until `retryq resume` deletes it. */
#define LUA_HEAD                                                                              \
    "local t = redis.call('TIME')\n"                                                          \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                 \
    "local cur = {}\n"                                                                        \
    "local f = redis.pcall('HMGET', KEYS[1], 'reason', 'by', 'since_ms')\n"                   \
    "if f.err then\n"                                                                         \
    "  cur = {'reason', 'unreadable pause: ' .. KEYS[1] .. ' is not a hash (retryq resume deletes it)'}\n" \
    "elseif f[1] or f[2] or f[3] then\n"                                                      \
    "  cur = {'reason', f[1] or '', 'by', f[2] or '', 'since_ms', f[3] or ''}\n"              \
    "end\n"

/* KEYS: {Q}:paused. ARGV: reason, by. A pause in place stays as it is. Returns {written
 * (0/1), the hash in force as [field, value, ...], Redis's time in ms}. */
static const char LUA_PAUSE[] =
    LUA_HEAD
    "if #cur > 0 then return {0, cur, now} end\n"
    "redis.call('HSET', KEYS[1], 'reason', ARGV[1], 'by', ARGV[2], 'since_ms', string.format('%d', now))\n"
    "return {1, {'reason', ARGV[1], 'by', ARGV[2], 'since_ms', string.format('%d', now)}, now}\n";

/* KEYS: {Q}:paused. ARGV: 1 to delete it (resume), 0 to read it. Returns {Redis's time in
 * ms, the hash as it was, [field, value, ...], empty when the queue ran}. The worker reads
 * the pause with it too (internal.h). */
const char rq_pause_lua_read[] =
    LUA_HEAD
    "if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end\n"
    "return {now, cur}\n";

bool rq_pause_parse(const redisReply *pairs, int64_t now_ms, retryq_pause_state_t *out)
{
    memset(out, 0, sizeof *out);
    out->age_ms = -1;
    if (pairs == NULL || pairs->type != REDIS_REPLY_ARRAY)
        return false;
    for (size_t i = 0; i + 1 < pairs->elements; i += 2) {
        const redisReply *f = pairs->element[i], *v = pairs->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return false;
        if (strcmp(f->str, "reason") == 0) {
            rq_copy_utf8(out->reason, sizeof out->reason, v->str, v->len);
        } else if (strcmp(f->str, "by") == 0) {
            rq_copy_utf8(out->by, sizeof out->by, v->str, v->len);
        } else if (strcmp(f->str, "since_ms") == 0) {
            char *end = NULL;
            long long since = strtoll(v->str, &end, 10);
            out->since_ms = end != v->str && since > 0 ? (int64_t)since : 0;
        }
    }
    out->paused = pairs->elements > 0;
    if (out->paused && out->since_ms > 0 && now_ms > 0)
        out->age_ms = now_ms > out->since_ms ? now_ms - out->since_ms : 0;
    return true;
}

/* `given`, else "user@host" of this process. */
static void pause_by(const char *given, char *buf, size_t cap)
{
    char user[128], host[128] = "";
    if (given != NULL && given[0] != '\0') {
        rq_copy(buf, cap, given);
        return;
    }
    rq_who(NULL, user, sizeof user);
    if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
        rq_copy(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    snprintf(buf, cap, "%s@%s", user, host);
}

/* Runs one script on {Q}:paused with the arguments and checks the reply's shape:
 * `pairs_at` is the index of the hash in the reply, `now_at` that of the time. */
static redisReply *run_script(retryq_client_t *client, const char *what, const char *script, int argc,
                              const char **args, size_t pairs_at, size_t now_at, retryq_error_t *err)
{
    const char *argv[6] = {"EVAL", script, "1", client->keys.paused, NULL, NULL};
    for (int i = 0; i < argc; i++)
        argv[4 + i] = args[i];
    redisReply *r = rq_client_command_argv(client, REDIS_REPLY_ARRAY, err, 4 + argc, argv, NULL);
    if (r == NULL)
        return NULL;
    if (r->elements <= pairs_at || r->elements <= now_at || r->element[pairs_at]->type != REDIS_REPLY_ARRAY ||
        r->element[now_at]->type != REDIS_REPLY_INTEGER) {
        rq_error(err, RETRYQ_ERR_REDIS, "Redis EVAL (%s): unexpected reply", what);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int retryq_pause(retryq_client_t *client, const char *reason, const char *by, bool *applied,
                 retryq_pause_state_t *in_place, retryq_error_t *err)
{
    char who[RETRYQ_MAX_PAUSE_BY + 1];
    if (client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "pause: missing client");
    if (reason == NULL)
        reason = "";
    int rc = rq_check_text("reason", reason, RETRYQ_MAX_PAUSE_REASON, err);
    if (rc == RETRYQ_OK && by != NULL)
        rc = rq_check_text("by", by, RETRYQ_MAX_PAUSE_BY, err);
    if (rc != RETRYQ_OK)
        return rc;
    pause_by(by, who, sizeof who);
    const char *args[] = {reason, who};
    redisReply *r = run_script(client, "pause", LUA_PAUSE, 2, args, 1, 2, err);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    retryq_pause_state_t state;
    if (r->element[0]->type != REDIS_REPLY_INTEGER ||
        !rq_pause_parse(r->element[1], r->element[2]->integer, &state)) {
        rc = rq_error(err, RETRYQ_ERR_REDIS, "Redis EVAL (pause): unexpected reply");
    } else {
        if (applied != NULL)
            *applied = r->element[0]->integer == 1;
        if (in_place != NULL)
            *in_place = state;
    }
    freeReplyObject(r);
    return rc;
}

/* Reads {Q}:paused, and deletes it when `delete`. */
static int read_pause(retryq_client_t *client, bool delete, retryq_pause_state_t *out, retryq_error_t *err)
{
    const char *args[] = {delete ? "1" : "0"};
    const char *what = delete ? "resume" : "pause get";
    redisReply *r = run_script(client, what, rq_pause_lua_read, 1, args, 1, 0, err);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    int rc = RETRYQ_OK;
    if (!rq_pause_parse(r->element[1], r->element[0]->integer, out))
        rc = rq_error(err, RETRYQ_ERR_REDIS, "Redis EVAL (%s): unexpected reply", what);
    freeReplyObject(r);
    return rc;
}

int retryq_resume(retryq_client_t *client, bool *was_paused, retryq_pause_state_t *deleted,
                  retryq_error_t *err)
{
    retryq_pause_state_t state;
    if (was_paused != NULL)
        *was_paused = false;
    if (client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "resume: missing client");
    int rc = read_pause(client, true, &state, err);
    if (rc != RETRYQ_OK)
        return rc;
    if (was_paused != NULL)
        *was_paused = state.paused;
    if (deleted != NULL)
        *deleted = state;
    return RETRYQ_OK;
}

int retryq_pause_get(retryq_client_t *client, retryq_pause_state_t *out, retryq_error_t *err)
{
    if (out == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "pause get: missing result");
    memset(out, 0, sizeof *out);
    out->age_ms = -1;
    if (client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "pause get: missing client");
    return read_pause(client, false, out, err);
}
