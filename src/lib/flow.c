/*
 * Flow control, the operator's side (issue 14): pausing and resuming one flow key
 * (MODEL/REGION) for every worker, and listing what the workers see of flow control: the
 * paused keys, the circuit breakers they publish and the concurrency permits in use. The
 * workers write the same keys themselves (Retry-After, rate limits, breakers, permits);
 * both sides follow one set of rules:
 *
 *   {Q}:flow:pause:<key>    JSON {"cause","reason","until_ms","by"}, expiring at until_ms
 *   {Q}:flow:paused         ZSET <key> -> until_ms, the index of the pauses
 *   {Q}:flow:breakers       HASH <key> -> JSON {"state","until_ms","worker","failures","calls"}
 *   {Q}:flow:keys           ZSET <key> -> when a worker last used the key
 *   {Q}:flow:permits:<key>  ZSET <worker id>:<seq> -> lease expiry
 *
 * Writes are Lua scripts that take the time from Redis (TIME), so until_ms means the
 * same to every host whatever their clocks say, and that name every key they touch in
 * KEYS (Redis Cluster: all of them share the {Q} hash tag). Reads never walk the
 * keyspace: each index is read one ZSCAN/HSCAN step at a time, and the keys it names are
 * read with one MGET or one script per step.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define FLOW_NAME_MAX (RETRYQ_MAX_QUEUE_NAME + RETRYQ_MAX_FLOW_KEY + 32) /* {Q}:flow:permits:<key> */
#define CURSOR_PART_MAX 24 /* a Redis cursor is an unsigned 64-bit decimal */
#define CURSOR_PARTS 3     /* paused index, breakers, keys in use */
#define CURSOR_DONE "-"

/*
 * KEYS: the pause key, {Q}:flow:paused. ARGV: duration ms, cause, reason and by as JSON
 * strings, the flow key (the index's member). A pause in place that ends at the same time
 * or later stays (its index member is put back, in case it was missing); else the new
 * document replaces it, expiring when it ends, and the index drops its stale members.
 * Returns {written (0/1), the document in force, Redis's time in ms}.
 */
static const char LUA_PAUSE[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ms = tonumber(ARGV[1])\n"
    "local until_ms = now + ms\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then\n"
    "  local ok, doc = pcall(cjson.decode, cur)\n"
    "  local u = ok and type(doc) == 'table' and tonumber(doc.until_ms)\n"
    "  if u and u >= until_ms then\n"
    "    redis.call('ZADD', KEYS[2], u, ARGV[5])\n"
    "    return {0, cur, now}\n"
    "  end\n"
    "end\n"
    "local doc = '{\"cause\":' .. ARGV[2] .. ',\"reason\":' .. ARGV[3] .. ',\"until_ms\":' ..\n"
    "  string.format('%d', until_ms) .. ',\"by\":' .. ARGV[4] .. '}'\n"
    "redis.call('SET', KEYS[1], doc, 'PX', ms)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)\n"
    "redis.call('ZADD', KEYS[2], until_ms, ARGV[5])\n"
    "return {1, doc, now}\n";

/* KEYS: the pause key, {Q}:flow:paused. ARGV: the flow key. Returns {Redis's time in ms,
 * 1, the deleted document} or {time, 0} when there was no pause. */
static const char LUA_RESUME[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "if cur then return {now, 1, cur} end\n"
    "return {now, 0}\n";

/* KEYS: permit sets. ARGV: Redis's time in ms. Returns each set's members whose lease
 * (score) has not expired. */
static const char LUA_PERMITS[] =
    "local out = {}\n"
    "for i = 1, #KEYS do out[i] = redis.call('ZCOUNT', KEYS[i], '(' .. ARGV[1], '+inf') end\n"
    "return out\n";

/* ------------------------------------------------------------ keys and reasons */

int retryq_flow_key_validate(const char *key, retryq_error_t *err)
{
    size_t n = key != NULL ? strlen(key) : 0;
    if (n == 0)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "flow key: missing (expected MODEL/REGION, e.g. llama3.2-1b/us-east)");
    if (n > RETRYQ_MAX_FLOW_KEY)
        return rq_error(err, RETRYQ_ERR_INVALID, "flow key: %zu bytes, at most %d", n, RETRYQ_MAX_FLOW_KEY);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f)
            return rq_error(err, RETRYQ_ERR_INVALID, "flow key: must not contain control characters");
    }
    if (!rq_utf8_valid(key, n))
        return rq_error(err, RETRYQ_ERR_INVALID, "flow key: must be valid UTF-8");
    if (strchr(key, '*') != NULL)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "flow key '%s': '*' is a wildcard of the worker's configuration; "
                        "a pause names one key, MODEL/REGION",
                        key);
    const char *slash = strrchr(key, '/');
    if (slash == NULL || slash == key || slash[1] == '\0')
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "flow key '%s': expected MODEL/REGION (e.g. llama3.2-1b/us-east; "
                        "the region follows the last '/')",
                        key);
    if (strlen(slash + 1) > RETRYQ_MAX_REGION)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "flow key: the region after the last '/' is %zu bytes, at most %d", strlen(slash + 1),
                        RETRYQ_MAX_REGION);
    return RETRYQ_OK;
}

/* A member of an index as a flow key: false for one no worker could have written (too
 * long, or holding a NUL), which is then skipped rather than cut. */
static bool member_key(const redisReply *m)
{
    return m->type == REDIS_REPLY_STRING && m->len > 0 && m->len <= RETRYQ_MAX_FLOW_KEY &&
           memchr(m->str, '\0', m->len) == NULL;
}

/* ------------------------------------------------------------ documents */

static void copy_member(const cJSON *object, const char *name, char *dst, size_t cap)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
    if (cJSON_IsString(item))
        rq_copy_utf8(dst, cap, item->valuestring, strlen(item->valuestring));
}

static int64_t number_member(const cJSON *object, const char *name, int64_t absent)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
    if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble > 9e15)
        return absent;
    return (int64_t)item->valuedouble;
}

static cJSON *parse_object(const char *doc, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(doc, len);
    if (root != NULL && !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

bool rq_flow_parse_pause(const char *key, const char *doc, size_t len, int64_t now_ms,
                         retryq_flow_pause_t *out)
{
    memset(out, 0, sizeof *out);
    rq_copy_utf8(out->key, sizeof out->key, key, strlen(key));
    out->left_ms = -1;
    cJSON *root = parse_object(doc, len);
    if (root == NULL)
        return false;
    copy_member(root, "cause", out->cause, sizeof out->cause);
    copy_member(root, "reason", out->reason, sizeof out->reason);
    copy_member(root, "by", out->by, sizeof out->by);
    out->until_ms = number_member(root, "until_ms", 0);
    if (out->until_ms > 0)
        out->left_ms = out->until_ms > now_ms ? out->until_ms - now_ms : 0;
    cJSON_Delete(root);
    return true;
}

bool rq_flow_parse_breaker(const char *key, const char *doc, size_t len, int64_t now_ms,
                           retryq_flow_breaker_t *out)
{
    memset(out, 0, sizeof *out);
    rq_copy_utf8(out->key, sizeof out->key, key, strlen(key));
    out->failures = out->calls = -1;
    cJSON *root = parse_object(doc, len);
    if (root == NULL)
        return false;
    copy_member(root, "state", out->state, sizeof out->state);
    copy_member(root, "worker", out->worker, sizeof out->worker);
    out->until_ms = number_member(root, "until_ms", 0);
    out->left_ms = out->until_ms > now_ms ? out->until_ms - now_ms : 0;
    out->failures = number_member(root, "failures", -1);
    out->calls = number_member(root, "calls", -1);
    cJSON_Delete(root);
    return true;
}

/* `text` as a JSON string, quoted and escaped (malloc'd), or NULL when memory ran out. */
static char *json_string(const char *text)
{
    cJSON *s = cJSON_CreateString(text);
    char *out = s != NULL ? cJSON_PrintUnformatted(s) : NULL;
    cJSON_Delete(s);
    return out;
}

/* ------------------------------------------------------------ pause, resume */

static int pause_key(const retryq_client_t *client, const char *key, char *name, retryq_error_t *err)
{
    int rc = retryq_flow_key_validate(key, err);
    if (rc == RETRYQ_OK && retryq_keys_flow(&client->keys, RETRYQ_FLOW_PAUSE, key, name, FLOW_NAME_MAX) < 0)
        rc = rq_error(err, RETRYQ_ERR_INVALID, "flow key: too long for the queue's key names");
    return rc;
}

int retryq_flow_pause(retryq_client_t *client, const char *key, int64_t duration_ms,
                      const char *reason, bool *applied, retryq_flow_pause_t *in_place,
                      retryq_error_t *err)
{
    char name[FLOW_NAME_MAX];
    if (client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "flow pause: missing client");
    if (duration_ms < 0 || duration_ms > RETRYQ_FLOW_PAUSE_MAX_MS)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "pause duration: %" PRId64 " ms; expected 1 ms to 30 days (0: until resumed)",
                        duration_ms);
    int rc = pause_key(client, key, name, err);
    if (rc == RETRYQ_OK)
        rc = rq_check_text("reason", reason != NULL ? reason : "", RETRYQ_MAX_FLOW_REASON, err);
    if (rc != RETRYQ_OK)
        return rc;
    char *reason_json = json_string(reason != NULL ? reason : "");
    if (reason_json == NULL)
        return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    redisReply *r = rq_client_command(client, REDIS_REPLY_ARRAY, err, "EVAL %s 2 %s %s %lld %s %s %s %s",
                                      LUA_PAUSE, name, client->keys.flow_paused,
                                      (long long)(duration_ms == 0 ? RETRYQ_FLOW_PAUSE_MAX_MS : duration_ms),
                                      "\"operator\"", reason_json, "\"operator\"", key);
    free(reason_json);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    if (r->elements != 3 || r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_STRING || r->element[2]->type != REDIS_REPLY_INTEGER) {
        rc = rq_error(err, RETRYQ_ERR_REDIS, "Redis EVAL (flow pause): unexpected reply");
    } else {
        retryq_flow_pause_t pause;
        rq_flow_parse_pause(key, r->element[1]->str, r->element[1]->len, r->element[2]->integer, &pause);
        if (applied != NULL)
            *applied = r->element[0]->integer == 1;
        if (in_place != NULL)
            *in_place = pause;
    }
    freeReplyObject(r);
    return rc;
}

int retryq_flow_resume(retryq_client_t *client, const char *key, bool *was_paused,
                       retryq_flow_pause_t *deleted, retryq_error_t *err)
{
    char name[FLOW_NAME_MAX];
    if (was_paused != NULL)
        *was_paused = false;
    if (client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "flow resume: missing client");
    int rc = pause_key(client, key, name, err);
    if (rc != RETRYQ_OK)
        return rc;
    redisReply *r = rq_client_command(client, REDIS_REPLY_ARRAY, err, "EVAL %s 2 %s %s %s", LUA_RESUME,
                                      name, client->keys.flow_paused, key);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    bool shape = r->elements >= 2 && r->element[0]->type == REDIS_REPLY_INTEGER &&
                 r->element[1]->type == REDIS_REPLY_INTEGER;
    bool had = shape && r->element[1]->integer == 1;
    if (!shape || (had && (r->elements != 3 || r->element[2]->type != REDIS_REPLY_STRING))) {
        rc = rq_error(err, RETRYQ_ERR_REDIS, "Redis EVAL (flow resume): unexpected reply");
    } else {
        if (was_paused != NULL)
            *was_paused = had;
        if (had && deleted != NULL)
            rq_flow_parse_pause(key, r->element[2]->str, r->element[2]->len, r->element[0]->integer, deleted);
    }
    freeReplyObject(r);
    return rc;
}

/* ------------------------------------------------------------ list */

/* Where each index's iteration stands: a Redis cursor, or CURSOR_DONE. */
typedef struct cursor {
    char part[CURSOR_PARTS][CURSOR_PART_MAX];
} cursor_t;

static bool cursor_part_ok(const char *s, size_t n)
{
    if (n == 1 && s[0] == '-')
        return true;
    if (n == 0 || n >= CURSOR_PART_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* NULL, "" and "0" start every index; else "A:B:C" as cursor_format wrote it. */
static int cursor_parse(const char *text, cursor_t *c, retryq_error_t *err)
{
    for (int i = 0; i < CURSOR_PARTS; i++)
        strcpy(c->part[i], "0");
    if (text == NULL || text[0] == '\0' || strcmp(text, "0") == 0)
        return RETRYQ_OK;
    const char *p = text;
    for (int i = 0; i < CURSOR_PARTS; i++) {
        size_t n = strcspn(p, ":");
        if (!cursor_part_ok(p, n) || (i + 1 < CURSOR_PARTS ? p[n] != ':' : p[n] != '\0'))
            return rq_error(err, RETRYQ_ERR_INVALID,
                            "flow list: invalid cursor (pass \"0\" or the previous page's next)");
        memcpy(c->part[i], p, n);
        c->part[i][n] = '\0';
        p += n + 1;
    }
    return RETRYQ_OK;
}

static void cursor_format(const cursor_t *c, char *buf, size_t cap)
{
    bool done = true;
    for (int i = 0; i < CURSOR_PARTS; i++)
        done = done && strcmp(c->part[i], CURSOR_DONE) == 0;
    if (done)
        snprintf(buf, cap, "0");
    else
        snprintf(buf, cap, "%s:%s:%s", c->part[0], c->part[1], c->part[2]);
}

/*
 * One ZSCAN/HSCAN step of `index` from cursor `part` (updated: CURSOR_DONE after the last
 * step). Returns the reply, whose element[1] holds the member/value pairs (free it), or
 * NULL with err filled.
 */
static redisReply *scan_step(retryq_client_t *client, const char *command, const char *index,
                             char *part, size_t limit, retryq_error_t *err)
{
    char count[24];
    snprintf(count, sizeof count, "%zu", limit);
    const char *argv[] = {command, index, part, "COUNT", count};
    redisReply *r = rq_client_command_argv(client, REDIS_REPLY_ARRAY, err, 5, argv, NULL);
    if (r == NULL)
        return NULL;
    if (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[0]->len >= CURSOR_PART_MAX || r->element[1]->type != REDIS_REPLY_ARRAY ||
        r->element[1]->elements % 2 != 0) {
        rq_error(err, RETRYQ_ERR_REDIS, "Redis %s: unexpected reply", command);
        freeReplyObject(r);
        return NULL;
    }
    const char *next = r->element[0]->str;
    snprintf(part, CURSOR_PART_MAX, "%s", strcmp(next, "0") == 0 ? CURSOR_DONE : next);
    return r;
}

/* Marks the pairs whose member is a usable flow key (and, with `live_after` >= 0, whose
 * score is later than it); returns how many. */
static size_t mark_members(const redisReply *pairs, int64_t live_after, bool *use)
{
    size_t n = 0;
    for (size_t i = 0; i < pairs->elements / 2; i++) {
        const redisReply *score = pairs->element[2 * i + 1];
        bool live = live_after < 0 ||
                    (score->type == REDIS_REPLY_STRING && strtod(score->str, NULL) > (double)live_after);
        use[i] = member_key(pairs->element[2 * i]) && live;
        n += use[i];
    }
    return n;
}

/* One scan step of a sorted-set index and the one command that reads what its members
 * name: the pairs (member, score), which of them were used, and one reply per used
 * member, in order. */
typedef struct keyed_step {
    redisReply *scan;     /* [cursor, [member, score, ...]] */
    const redisReply *pairs;
    bool *use;
    size_t n;             /* members used */
    redisReply *replies;  /* an array of n replies; NULL when n is 0 */
} keyed_step_t;

static void keyed_step_free(keyed_step_t *step)
{
    if (step->replies != NULL)
        freeReplyObject(step->replies);
    if (step->scan != NULL)
        freeReplyObject(step->scan);
    free(step->use);
    memset(step, 0, sizeof *step);
}

/* The arguments of the read: MGET <keys> when `script` is NULL, else EVAL script n <keys>
 * `arg` (n written into `count`). `argv` has room for n + 4, `names` for n key names. */
static int read_argv(const retryq_client_t *client, const keyed_step_t *step, retryq_flow_kind_t kind,
                     const char *script, const char *arg, const char **argv, char *names,
                     char count[static 24], size_t *argc, retryq_error_t *err)
{
    size_t at = 0, k = 0;
    snprintf(count, 24, "%zu", step->n);
    argv[at++] = script == NULL ? "MGET" : "EVAL";
    if (script != NULL) {
        argv[at++] = script;
        argv[at++] = count;
    }
    for (size_t i = 0; i < step->pairs->elements / 2; i++) {
        if (!step->use[i])
            continue;
        char *name = names + k++ * FLOW_NAME_MAX;
        if (retryq_keys_flow(&client->keys, kind, step->pairs->element[2 * i]->str, name, FLOW_NAME_MAX) < 0) {
            rq_error(err, RETRYQ_ERR_INVALID, "flow key: too long for the queue's key names");
            return RETRYQ_ERR_INVALID;
        }
        argv[at++] = name;
    }
    if (script != NULL)
        argv[at++] = arg;
    *argc = at;
    return RETRYQ_OK;
}

/*
 * ZSCANs one step of `index` from cursor `part` (members with a score after `live_after`
 * when it is >= 0), then reads the `kind` keys of the members with one command: MGET, or
 * `script` with those keys in KEYS and `arg` as ARGV[1]. Free *step with keyed_step_free.
 */
static int keyed_step(retryq_client_t *client, const char *index, char *part, size_t limit,
                      int64_t live_after, retryq_flow_kind_t kind, const char *script, const char *arg,
                      keyed_step_t *step, retryq_error_t *err)
{
    memset(step, 0, sizeof *step);
    if ((step->scan = scan_step(client, "ZSCAN", index, part, limit, err)) == NULL)
        return RETRYQ_ERR_REDIS;
    step->pairs = step->scan->element[1];
    if ((step->use = calloc(step->pairs->elements / 2 + 1, sizeof *step->use)) == NULL) {
        rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
        return RETRYQ_ERR_NOMEM;
    }
    step->n = mark_members(step->pairs, live_after, step->use);
    if (step->n == 0)
        return RETRYQ_OK;
    size_t argc = 0;
    char count[24];
    const char **argv = calloc(step->n + 4, sizeof *argv);
    char *names = calloc(step->n, FLOW_NAME_MAX);
    int rc = RETRYQ_OK;
    if (argv == NULL || names == NULL) {
        rc = RETRYQ_ERR_NOMEM;
        rq_error(err, rc, "out of memory");
    }
    if (rc == RETRYQ_OK)
        rc = read_argv(client, step, kind, script, arg, argv, names, count, &argc, err);
    if (rc == RETRYQ_OK &&
        (step->replies = rq_client_command_argv(client, REDIS_REPLY_ARRAY, err, (int)argc, argv, NULL)) == NULL)
        rc = RETRYQ_ERR_REDIS;
    if (rc == RETRYQ_OK && step->replies->elements != step->n) {
        rc = RETRYQ_ERR_REDIS;
        rq_error(err, rc, "Redis %s: %zu replies for %zu keys", argv[0], step->replies->elements, step->n);
    }
    free(argv);
    free(names);
    return rc;
}

/* One step of {Q}:flow:paused, then one MGET of the live members' pause keys. */
static int read_pauses(retryq_client_t *client, char *part, size_t limit, retryq_flow_list_t *out,
                       retryq_error_t *err)
{
    keyed_step_t step;
    int rc = keyed_step(client, client->keys.flow_paused, part, limit, out->now_ms, RETRYQ_FLOW_PAUSE, NULL,
                        NULL, &step, err);
    if (rc == RETRYQ_OK && step.n > 0 && (out->pauses = calloc(step.n, sizeof *out->pauses)) == NULL) {
        rc = RETRYQ_ERR_NOMEM;
        rq_error(err, rc, "out of memory");
    }
    for (size_t i = 0, k = 0; rc == RETRYQ_OK && out->pauses != NULL && i < step.pairs->elements / 2; i++) {
        if (!step.use[i])
            continue;
        const redisReply *doc = step.replies->element[k++];
        if (doc->type == REDIS_REPLY_STRING) /* nil: the pause ended or was resumed meanwhile */
            rq_flow_parse_pause(step.pairs->element[2 * i]->str, doc->str, doc->len, out->now_ms,
                                &out->pauses[out->pause_count++]);
    }
    keyed_step_free(&step);
    return rc;
}

/* One step of {Q}:flow:breakers. */
static int read_breakers(retryq_client_t *client, char *part, size_t limit, retryq_flow_list_t *out,
                         retryq_error_t *err)
{
    redisReply *scan = scan_step(client, "HSCAN", client->keys.flow_breakers, part, limit, err);
    if (scan == NULL)
        return RETRYQ_ERR_REDIS;
    const redisReply *pairs = scan->element[1];
    size_t n = pairs->elements / 2;
    int rc = RETRYQ_OK;
    if (n > 0 && (out->breakers = calloc(n, sizeof *out->breakers)) == NULL)
        rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == RETRYQ_OK && out->breakers != NULL && i < n; i++) {
        const redisReply *field = pairs->element[2 * i], *value = pairs->element[2 * i + 1];
        if (member_key(field) && value->type == REDIS_REPLY_STRING)
            rq_flow_parse_breaker(field->str, value->str, value->len, out->now_ms,
                                  &out->breakers[out->breaker_count++]);
    }
    freeReplyObject(scan);
    return rc;
}

/* One step of {Q}:flow:keys, then one script counting those keys' live permits. */
static int read_permits(retryq_client_t *client, char *part, size_t limit, retryq_flow_list_t *out,
                        retryq_error_t *err)
{
    keyed_step_t step;
    char now[24];
    snprintf(now, sizeof now, "%" PRId64, out->now_ms);
    int rc = keyed_step(client, client->keys.flow_keys, part, limit, -1, RETRYQ_FLOW_PERMITS, LUA_PERMITS, now,
                        &step, err);
    if (rc == RETRYQ_OK && step.n > 0 && (out->keys = calloc(step.n, sizeof *out->keys)) == NULL) {
        rc = RETRYQ_ERR_NOMEM;
        rq_error(err, rc, "out of memory");
    }
    for (size_t i = 0, k = 0; rc == RETRYQ_OK && out->keys != NULL && i < step.pairs->elements / 2; i++) {
        if (!step.use[i])
            continue;
        const redisReply *count = step.replies->element[k++];
        const redisReply *member = step.pairs->element[2 * i], *score = step.pairs->element[2 * i + 1];
        retryq_flow_permits_t *p = &out->keys[out->key_count++];
        rq_copy_utf8(p->key, sizeof p->key, member->str, member->len);
        p->in_use = count->type == REDIS_REPLY_INTEGER ? count->integer : 0;
        p->last_used_ms = score->type == REDIS_REPLY_STRING ? (int64_t)strtod(score->str, NULL) : 0;
    }
    keyed_step_free(&step);
    return rc;
}

int retryq_flow_list(retryq_client_t *client, const char *cursor, size_t limit,
                     retryq_flow_list_t *out, retryq_error_t *err)
{
    cursor_t c;
    if (out == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "flow list: missing result");
    memset(out, 0, sizeof *out);
    snprintf(out->next, sizeof out->next, "0");
    if (client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "flow list: missing client");
    int rc = cursor_parse(cursor, &c, err);
    if (rc != RETRYQ_OK)
        return rc;
    if (limit == 0 || limit > RETRYQ_FLOW_PAGE_MAX)
        limit = RETRYQ_FLOW_PAGE_MAX;
    rc = rq_client_time_ms(client, &out->now_ms, err);
    if (rc == RETRYQ_OK && strcmp(c.part[0], CURSOR_DONE) != 0)
        rc = read_pauses(client, c.part[0], limit, out, err);
    if (rc == RETRYQ_OK && strcmp(c.part[1], CURSOR_DONE) != 0)
        rc = read_breakers(client, c.part[1], limit, out, err);
    if (rc == RETRYQ_OK && strcmp(c.part[2], CURSOR_DONE) != 0)
        rc = read_permits(client, c.part[2], limit, out, err);
    if (rc != RETRYQ_OK) {
        retryq_flow_list_free(out);
        return rc;
    }
    cursor_format(&c, out->next, sizeof out->next);
    return RETRYQ_OK;
}

void retryq_flow_list_free(retryq_flow_list_t *list)
{
    if (list == NULL)
        return;
    free(list->pauses);
    free(list->breakers);
    free(list->keys);
    list->pauses = NULL;
    list->breakers = NULL;
    list->keys = NULL;
    list->pause_count = list->breaker_count = list->key_count = 0;
    snprintf(list->next, sizeof list->next, "0");
}
