/*
 * Cancelling retries: retryq_cancel (one execution) and retryq_set_cancel (every open
 * member of a retry set), in chunks of RQ_CANCEL_CHUNK executions:
 *
 *   1. Redis decides (decide, below): a tombstone in {Q}:cancelled for each identity
 *      "<execution_id>:<attempt>" first, which the worker's pops respect
 *      (src/worker/queue.c): from then on such a job is never handed out; then a job a
 *      worker holds (its processing list or taken hash shows it) is "running" (its
 *      tombstone taken back: it finishes normally), any other is "cancelled" (it never
 *      runs).
 *   2. PostgreSQL restores the cancelled rows (retryq_cancel_restore, migration 0014),
 *      guarded by status = 'retrying' AND retry_count = attempt; a row that is no longer
 *      open is "finished" and its tombstone is taken back.
 *   3. When step 2 fails, the chunk's tombstones are taken back (best effort) and the
 *      error is returned: the retries go on as if no cancel had been asked.
 *
 * The scripts touch only {Q}:cancelled (one key: Redis Cluster); what the workers hold is
 * read with plain LRANGE and HKEYS, not inside a script (a script reading every
 * processing list cost ~15 us of Redis's time per job held). docs/reliability.md gives
 * the reasoning about races and crashes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "statement.h"

#define RQ_CANCEL_CHUNK 200

/* KEYS: cancelled. ARGV: the identities. A tombstone for each (score: Redis's time in ms). */
static const char LUA_MARK[] = "local t = redis.call('TIME')\n"
                               "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                               "for i = 1, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end\n"
                               "return #ARGV\n";

/* KEYS: cancelled. ARGV: the identities seen with a worker. Takes back each one's
 * tombstone: 1 when it was there (the job runs), 0 when a pop's check consumed it
 * meanwhile. */
static const char LUA_CONFIRM[] = "local out = {}\n"
                                  "for i = 1, #ARGV do out[i] = redis.call('ZREM', KEYS[1], ARGV[i]) end\n"
                                  "return out\n";

static const char SQL_RESTORE[] =
    "SELECT r.execution_id, r.outcome, coalesce(r.status, '') FROM retryq_cancel_restore("
    "$1::bigint[], ARRAY(SELECT x.v FROM jsonb_array_elements_text($2::jsonb) WITH ORDINALITY "
    "AS x(v, ord) ORDER BY x.ord), $3::integer[], $4::text) r";

static const char SQL_ROW[] =
    "SELECT status, retry_count FROM executions WHERE id = $1::bigint AND region = $2";

static const char SQL_SET_EXISTS[] = "SELECT 1 FROM retryq_sets WHERE id = $1::bigint";

static const char SQL_MEMBERS[] =
    "SELECT m.execution_id, m.region, m.attempt, "
    "retryq_member_state(e.status, e.retry_count, m.attempt, m.cancelled_at), coalesce(e.status, '') "
    "FROM retryq_set_members m LEFT JOIN executions e ON e.id = m.execution_id "
    "WHERE m.set_id = $1::bigint AND m.execution_id > $2::bigint "
    "ORDER BY m.execution_id LIMIT $3::bigint";

static int grow(retryq_cancel_result_t *res, size_t *cap, retryq_error_t *err)
{
    if (res->count < *cap)
        return RETRYQ_OK;
    size_t n = *cap == 0 ? 64 : *cap * 2;
    retryq_cancel_item_t *items = realloc(res->items, n * sizeof *items);
    if (items == NULL)
        return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    res->items = items;
    *cap = n;
    return RETRYQ_OK;
}

static void count_item(retryq_cancel_result_t *res, const retryq_cancel_item_t *it)
{
    if (it->outcome == RETRYQ_CANCEL_CANCELLED)
        res->cancelled++;
    else if (it->outcome == RETRYQ_CANCEL_RUNNING)
        res->running++;
    else
        res->finished++;
}

static void identity(const retryq_cancel_item_t *it, char *buf, size_t cap)
{
    snprintf(buf, cap, "%" PRId64 ":%" PRId32, it->execution_id, it->attempt);
}

/* ZREM of the tombstones of the items whose `take_back` is set; failures are ignored (a
 * tombstone left behind is trimmed after its retention, or consumed by a pop). */
static void take_back(retryq_client_t *client, retryq_cancel_item_t *items, const bool *take, size_t n)
{
    const retryq_keys_t *keys = retryq_client_keys(client);
    const char **argv = calloc(n + 2, sizeof *argv);
    char(*ids)[48] = calloc(n, sizeof *ids);
    size_t argc = 2;
    if (argv != NULL && ids != NULL) {
        argv[0] = "ZREM";
        argv[1] = keys->cancelled;
        for (size_t i = 0; i < n; i++)
            if (take[i]) {
                identity(&items[i], ids[i], sizeof ids[i]);
                argv[argc++] = ids[i];
            }
        if (argc > 2) {
            retryq_error_t ignored;
            redisReply *r = rq_client_command_argv(client, -1, &ignored, (int)argc, argv, NULL);
            if (r != NULL)
                freeReplyObject(r);
        }
    }
    free(argv);
    free(ids);
}

/* An item's identity and which worker showed it (decide). */
typedef struct seen {
    char id[48];
    size_t item;
    size_t list; /* index into the workers read */
    char *text;  /* the entry as read (malloc'd) */
    bool held;   /* seen with a worker */
} seen_t;

static int by_identity(const void *a, const void *b)
{
    return strcmp(((const seen_t *)a)->id, ((const seen_t *)b)->id);
}

/* The jobs worker `w` (as {Q}:workers names it) holds, or NULL: its whole processing list
 * (one LRANGE: a read in pages could miss an entry that an ack shifts) when `hash` is
 * false, else the fields of its taken hash (HKEYS). The list is read first: a job only
 * moves from the list to the hash. */
static redisReply *read_held(retryq_client_t *client, const redisReply *w, bool hash,
                             retryq_error_t *err)
{
    char key[RETRYQ_MAX_QUEUE_NAME + 600], id[512];
    snprintf(id, sizeof id, "%.*s", (int)w->len, w->str);
    int n = hash ? retryq_keys_taken(retryq_client_keys(client), id, key, sizeof key)
                 : retryq_keys_processing(retryq_client_keys(client), id, key, sizeof key);
    if (n < 0 || (size_t)w->len >= sizeof id) {
        rq_error(err, RETRYQ_ERR_REDIS, "worker id \"%s\": no key", id);
        return NULL;
    }
    const char *list[] = {"LRANGE", key, "0", "-1"}, *fields[] = {"HKEYS", key};
    return hash ? rq_client_command_argv(client, REDIS_REPLY_ARRAY, err, 2, fields, NULL)
                : rq_client_command_argv(client, REDIS_REPLY_ARRAY, err, 4, list, NULL);
}

/* EVAL of `script` with KEYS[1] = {Q}:cancelled and the identities of `pick` as ARGV. */
static redisReply *eval_ids(retryq_client_t *client, const char *script, seen_t *seen, size_t n,
                            bool (*pick)(const seen_t *), retryq_error_t *err)
{
    const retryq_keys_t *keys = retryq_client_keys(client);
    const char **argv = calloc(n + 4, sizeof *argv);
    if (argv == NULL) {
        rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    size_t argc = 4;
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "1";
    argv[3] = keys->cancelled;
    for (size_t i = 0; i < n; i++)
        if (pick == NULL || pick(&seen[i]))
            argv[argc++] = seen[i].id;
    redisReply *r = rq_client_command_argv(client, -1, err, (int)argc, argv, NULL);
    free(argv);
    return r;
}

static bool is_held(const seen_t *s)
{
    return s->held;
}

/* Marks the items whose identity one of the jobs of reply `r` (a worker's list or the
 * fields of its hash) has. */
static int mark_held(const redisReply *r, size_t list, seen_t *seen, size_t n, retryq_error_t *err)
{
    int rc = RETRYQ_OK;
    for (size_t e = 0; e < r->elements && rc == RETRYQ_OK; e++) {
        const redisReply *v = r->element[e];
        retryq_job_t job;
        retryq_error_t ignored;
        if (v->type != REDIS_REPLY_STRING ||
            retryq_job_decode(v->str, v->len, RETRYQ_MAX_ATTEMPT, &job, &ignored) != RETRYQ_OK)
            continue; /* a job the worker dead-letters: it never runs */
        seen_t key_of = {0};
        snprintf(key_of.id, sizeof key_of.id, "%" PRId64 ":%" PRId32, job.execution_id,
                 job.retry_attempt);
        seen_t *s = bsearch(&key_of, seen, n, sizeof *seen, by_identity);
        if (s == NULL || s->held)
            continue;
        s->text = malloc(v->len + 1);
        if (s->text == NULL) {
            rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(s->text, v->str, v->len + 1);
        s->held = true;
        s->list = list;
    }
    return rc;
}

/* Reads what worker `w` holds (its list, then its hash) and marks the items whose identity
 * one of its jobs has. */
static int read_list(retryq_client_t *client, const redisReply *w, size_t list, seen_t *seen,
                     size_t n, retryq_error_t *err)
{
    int rc = RETRYQ_OK;
    for (int hash = 0; hash < 2 && rc == RETRYQ_OK; hash++) {
        redisReply *r = read_held(client, w, hash == 1, err);
        if (r == NULL)
            return RETRYQ_ERR_REDIS;
        rc = mark_held(r, list, seen, n, err);
        freeReplyObject(r);
    }
    return rc;
}
/* Whether worker `w` still holds exactly `text`: in its processing list (short: a job stays
 * there only until the pop's check), else in its taken hash (HEXISTS), in that order. */
static int still_held(retryq_client_t *client, const redisReply *w, const char *text, bool *held,
                      retryq_error_t *err)
{
    redisReply *r = read_held(client, w, false, err);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    *held = false;
    for (size_t e = 0; e < r->elements && !*held; e++)
        *held = r->element[e]->type == REDIS_REPLY_STRING && strcmp(r->element[e]->str, text) == 0;
    freeReplyObject(r);
    if (*held)
        return RETRYQ_OK;
    char key[RETRYQ_MAX_QUEUE_NAME + 600], id[512];
    snprintf(id, sizeof id, "%.*s", (int)w->len, w->str);
    if (retryq_keys_taken(retryq_client_keys(client), id, key, sizeof key) < 0)
        return rq_error(err, RETRYQ_ERR_REDIS, "worker id \"%s\": no key", id);
    const char *argv[] = {"HEXISTS", key, text};
    r = rq_client_command_argv(client, REDIS_REPLY_INTEGER, err, 3, argv, NULL);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    *held = r->integer == 1;
    freeReplyObject(r);
    return RETRYQ_OK;
}

/*
 * Step 1: the Redis decision for items[0..n) (all open). Sets each one's outcome to
 * CANCELLED or RUNNING. In three calls or so, none of which reads a list inside a script:
 *   a. LUA_MARK: a tombstone for every identity. From then on no worker is handed a job
 *      of these identities: every way into a processing list checks the tombstones.
 *   b. {Q}:workers, then each worker's list with a plain LRANGE; the identities are read
 *      here (the decoder), not in Lua (about 15 us of Redis's time an entry).
 *   c. LUA_CONFIRM for the identities a list showed: the tombstone taken back → RUNNING
 *      (the job had passed its check before a, or passes it now that the tombstone is
 *      gone). Already gone → a check consumed it between a and c (a job moved by a
 *      blocking pop and checked after a, or a copy of the job in the queue): RUNNING when
 *      the list still holds that exact entry, else CANCELLED (the job was dropped).
 *   Identities no list showed: CANCELLED (the tombstone drops the job when it is popped).
 * When a call fails (a too: it may have run with its reply lost), the tombstones are taken
 * back (best effort; a tombstone of an earlier cancel taken back only lets its job reach
 * the guard, which finds the row restored) and the error is returned: the retries go on.
 */
static int decide(retryq_client_t *client, retryq_cancel_item_t *items, size_t n, retryq_error_t *err)
{
    const retryq_keys_t *keys = retryq_client_keys(client);
    seen_t *seen = calloc(n, sizeof *seen);
    if (seen == NULL)
        return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        identity(&items[i], seen[i].id, sizeof seen[i].id);
        seen[i].item = i;
    }
    qsort(seen, n, sizeof *seen, by_identity);
    redisReply *ws = NULL, *r = eval_ids(client, LUA_MARK, seen, n, NULL, err);
    int rc = r != NULL ? RETRYQ_OK : RETRYQ_ERR_REDIS;
    if (r != NULL)
        freeReplyObject(r);
    if (rc == RETRYQ_OK) {
        ws = rq_client_command(client, REDIS_REPLY_ARRAY, err, "ZRANGE %s 0 -1", keys->workers);
        if (ws == NULL)
            rc = RETRYQ_ERR_REDIS;
    }
    for (size_t w = 0; rc == RETRYQ_OK && w < ws->elements; w++)
        if (ws->element[w]->type == REDIS_REPLY_STRING)
            rc = read_list(client, ws->element[w], w, seen, n, err);
    size_t held = 0;
    for (size_t i = 0; i < n; i++)
        held += seen[i].held;
    r = NULL;
    if (rc == RETRYQ_OK && held > 0) {
        r = eval_ids(client, LUA_CONFIRM, seen, n, is_held, err);
        if (r == NULL)
            rc = RETRYQ_ERR_REDIS;
        else if (r->type != REDIS_REPLY_ARRAY || r->elements != held)
            rc = rq_error(err, RETRYQ_ERR_REDIS, "cancel: unexpected reply from Redis");
    }
    for (size_t i = 0, k = 0; rc == RETRYQ_OK && i < n; i++) {
        retryq_cancel_item_t *it = &items[seen[i].item];
        it->outcome = RETRYQ_CANCEL_CANCELLED;
        if (!seen[i].held)
            continue;
        const redisReply *e = r->element[k++];
        bool running = e->type == REDIS_REPLY_INTEGER && e->integer == 1;
        if (!running)
            rc = still_held(client, ws->element[seen[i].list], seen[i].text, &running, err);
        if (running)
            it->outcome = RETRYQ_CANCEL_RUNNING;
    }
    if (r != NULL)
        freeReplyObject(r);
    if (ws != NULL)
        freeReplyObject(ws);
    for (size_t i = 0; i < n; i++)
        free(seen[i].text);
    free(seen);
    if (rc != RETRYQ_OK) { /* MARK included: it may have run with its reply lost */
        bool *all = malloc(n * sizeof *all);
        if (all != NULL) {
            for (size_t i = 0; i < n; i++)
                all[i] = true;
            take_back(client, items, all, n);
        }
        free(all);
    }
    return rc;
}

/* Step 2: restores the CANCELLED items in one transaction; those PostgreSQL finds no
 * longer open become FINISHED. */
static int restore(retryq_client_t *client, retryq_cancel_item_t *items, size_t n, retryq_error_t *err)
{
    rq_statement_t st;
    size_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += items[i].outcome == RETRYQ_CANCEL_CANCELLED;
    if (want == 0)
        return RETRYQ_OK;
    char *ids = malloc(want * 24 + 3), *attempts = malloc(want * 12 + 3);
    cJSON *regions = cJSON_CreateArray();
    char *regions_text = NULL;
    char stamp[RETRYQ_MAX_TIMESTAMP + 1];
    PGresult *res = NULL;
    int rc = RETRYQ_OK;
    bool opened = false;
    if (ids == NULL || attempts == NULL || regions == NULL) {
        rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t a = 0, b = 0;
    ids[a++] = '{';
    attempts[b++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (items[i].outcome != RETRYQ_CANCEL_CANCELLED)
            continue;
        a += (size_t)snprintf(ids + a, 24, "%s%" PRId64, a > 1 ? "," : "", items[i].execution_id);
        b += (size_t)snprintf(attempts + b, 12, "%s%" PRId32, b > 1 ? "," : "", items[i].attempt);
        if (!cJSON_AddItemToArray(regions, cJSON_CreateString(items[i].region))) {
            rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    ids[a++] = '}';
    ids[a] = '\0';
    attempts[b++] = '}';
    attempts[b] = '\0';
    regions_text = cJSON_PrintUnformatted(regions);
    if (regions_text == NULL) {
        rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    rq_format_rfc3339(rq_now_ms(), stamp, sizeof stamp);
    rc = rq_statement_open(&st, client, "[RETRY] cancel", err);
    if (rc != RETRYQ_OK)
        goto done;
    opened = true;
    const char *const params[] = {ids, regions_text, attempts, stamp};
    rc = rq_statement_begin(&st, client->command_timeout_ms, false);
    if (rc == RETRYQ_OK)
        rc = rq_statement_exec(&st, SQL_RESTORE, 4, params, "restoring the cancelled executions", &res);
    if (rc == RETRYQ_OK)
        rc = rq_statement_commit(&st, "COMMIT (the restore may or may not be recorded)");
    if (rc == RETRYQ_OK) {
        for (int r = 0; r < PQntuples(res); r++) {
            int64_t id = rq_statement_int(res, r, 0);
            const char *outcome = PQgetvalue(res, r, 1);
            for (size_t i = 0; i < n; i++) {
                if (items[i].execution_id != id || items[i].outcome != RETRYQ_CANCEL_CANCELLED)
                    continue;
                if (strcmp(outcome, "cancelled") != 0)
                    items[i].outcome = RETRYQ_CANCEL_FINISHED;
                rq_copy(items[i].status, sizeof items[i].status, PQgetvalue(res, r, 2));
                break;
            }
        }
    }
done:
    if (res != NULL)
        PQclear(res);
    if (opened)
        rq_statement_end(&st);
    free(ids);
    free(attempts);
    cJSON_Delete(regions);
    free(regions_text);
    return rc;
}

/* Steps 1 to 3 for items[0..n), all open at attempt items[i].attempt. */
static int cancel_chunk(retryq_client_t *client, retryq_cancel_item_t *items, size_t n,
                        retryq_error_t *err)
{
    if (n == 0)
        return RETRYQ_OK;
    int rc = decide(client, items, n, err);
    if (rc != RETRYQ_OK)
        return rc;
    bool *take = calloc(n, sizeof *take);
    if (take == NULL) {
        for (size_t i = 0; i < n; i++)
            items[i].outcome = RETRYQ_CANCEL_RUNNING; /* tombstones stay: nothing will be counted as cancelled */
        return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        take[i] = items[i].outcome == RETRYQ_CANCEL_CANCELLED;
    rc = restore(client, items, n, err);
    if (rc != RETRYQ_OK) {
        /* Not restored: the retries go on. Their tombstones are taken back. */
        take_back(client, items, take, n);
        for (size_t i = 0; i < n; i++)
            if (take[i])
                items[i].outcome = RETRYQ_CANCEL_RUNNING;
    } else {
        /* Rows found finished keep no tombstone. */
        for (size_t i = 0; i < n; i++)
            take[i] = take[i] && items[i].outcome == RETRYQ_CANCEL_FINISHED;
        take_back(client, items, take, n);
    }
    free(take);
    return rc;
}

int retryq_cancel(retryq_client_t *client, int64_t execution_id, const char *region,
                  retryq_cancel_result_t *result, retryq_error_t *err)
{
    rq_statement_t st;
    PGresult *res = NULL;
    char id[24];
    if (result != NULL)
        memset(result, 0, sizeof *result); /* defined after any failure: freeing it is safe */
    if (result == NULL || client == NULL || region == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "cancel: missing client, region or result");
    if (execution_id <= 0)
        return rq_error(err, RETRYQ_ERR_INVALID, "cancel: the execution id must be a positive integer");
    if (region[0] == '\0' || strlen(region) > RETRYQ_MAX_REGION)
        return rq_error(err, RETRYQ_ERR_INVALID, "cancel: the region must be 1..%d bytes",
                        RETRYQ_MAX_REGION);
    result->items = calloc(1, sizeof *result->items);
    if (result->items == NULL)
        return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    retryq_cancel_item_t *it = &result->items[0];
    it->execution_id = execution_id;
    rq_copy(it->region, sizeof it->region, region);

    snprintf(id, sizeof id, "%" PRId64, execution_id);
    const char *const params[] = {id, region};
    int rc = rq_statement_open(&st, client, "[RETRY] cancel", err);
    if (rc != RETRYQ_OK)
        return rc;
    rc = rq_statement_exec(&st, SQL_ROW, 2, params, "reading the execution", &res);
    if (rc == RETRYQ_OK && PQntuples(res) != 1)
        rc = rq_error(err, RETRYQ_ERR_NOT_FOUND,
                      "[RETRY] no execution %" PRId64 " in region '%s' (the region must match the "
                      "stored value exactly, e.g. 'us-east')",
                      execution_id, region);
    if (rc == RETRYQ_OK) {
        rq_copy(it->status, sizeof it->status, PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
        it->attempt = (int32_t)rq_statement_int(res, 0, 1);
    }
    if (res != NULL)
        PQclear(res);
    rq_statement_end(&st);
    if (rc != RETRYQ_OK)
        return rc;
    result->count = 1;
    if (strcmp(it->status, "retrying") != 0 || it->attempt < 1) {
        it->outcome = RETRYQ_CANCEL_FINISHED;
    } else {
        rc = cancel_chunk(client, it, 1, err);
        if (rc != RETRYQ_OK) {
            result->count = 0;
            return rc;
        }
    }
    count_item(result, it);
    return RETRYQ_OK;
}

int retryq_set_cancel(retryq_client_t *client, int64_t set_id, retryq_cancel_result_t *result,
                      retryq_error_t *err)
{
    rq_statement_t st;
    char subject[48], set_arg[24], after[24], limit[24];
    size_t cap = 0;
    int64_t last = 0;
    if (result != NULL)
        memset(result, 0, sizeof *result);
    if (result == NULL || client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "cancel: missing client or result");
    if (set_id <= 0)
        return rq_error(err, RETRYQ_ERR_INVALID, "cancel: the set id must be a positive integer");
    snprintf(subject, sizeof subject, "retry set %" PRId64, set_id);
    snprintf(set_arg, sizeof set_arg, "%" PRId64, set_id);
    snprintf(limit, sizeof limit, "%d", RQ_CANCEL_CHUNK);

    for (bool first = true;; first = false) {
        PGresult *res = NULL;
        int rc = rq_statement_open(&st, client, subject, err);
        if (rc != RETRYQ_OK)
            return rc;
        if (first) {
            const char *const p1[] = {set_arg};
            rc = rq_statement_exec(&st, SQL_SET_EXISTS, 1, p1, "looking for the set", &res);
            if (rc == RETRYQ_OK && PQntuples(res) != 1)
                rc = rq_error(err, RETRYQ_ERR_NOT_FOUND, "no retry set %" PRId64, set_id);
            if (res != NULL)
                PQclear(res);
            res = NULL;
        }
        snprintf(after, sizeof after, "%" PRId64, last);
        const char *const params[] = {set_arg, after, limit};
        if (rc == RETRYQ_OK)
            rc = rq_statement_exec(&st, SQL_MEMBERS, 3, params, "reading the set's members", &res);
        rq_statement_end(&st);
        if (rc != RETRYQ_OK) {
            if (res != NULL)
                PQclear(res);
            return rc;
        }
        int rows = PQntuples(res);
        size_t start = result->count;
        for (int r = 0; r < rows && rc == RETRYQ_OK; r++) {
            rc = grow(result, &cap, err);
            if (rc != RETRYQ_OK)
                break;
            retryq_cancel_item_t *it = &result->items[result->count++];
            memset(it, 0, sizeof *it);
            it->execution_id = rq_statement_int(res, r, 0);
            rq_copy(it->region, sizeof it->region, PQgetvalue(res, r, 1));
            it->attempt = (int32_t)rq_statement_int(res, r, 2);
            it->outcome = strcmp(PQgetvalue(res, r, 3), "open") == 0 ? RETRYQ_CANCEL_RUNNING
                                                                     : RETRYQ_CANCEL_FINISHED;
            rq_copy(it->status, sizeof it->status, PQgetvalue(res, r, 4));
            last = it->execution_id;
        }
        PQclear(res);
        if (rc != RETRYQ_OK) {
            result->count = start; /* this page's members were not decided */
            return rc;
        }
        /* The open members of this page, gathered at its end for one Redis call. */
        size_t open = start;
        for (size_t i = start; i < result->count; i++)
            if (result->items[i].outcome == RETRYQ_CANCEL_RUNNING) {
                retryq_cancel_item_t t = result->items[open];
                result->items[open] = result->items[i];
                result->items[i] = t;
                open++;
            }
        rc = cancel_chunk(client, result->items + start, open - start, err);
        if (rc != RETRYQ_OK) {
            /* This page's outcomes are unknown or undone: the result keeps the pages
             * before, which stay cancelled. */
            result->count = start;
            return rc;
        }
        for (size_t i = start; i < result->count; i++)
            count_item(result, &result->items[i]);
        if (rows < RQ_CANCEL_CHUNK)
            return RETRYQ_OK;
    }
}

void retryq_cancel_result_free(retryq_cancel_result_t *result)
{
    if (result == NULL)
        return;
    free(result->items);
    memset(result, 0, sizeof *result);
}
