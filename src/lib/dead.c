/*
 * The dead list {Q}:dead (DESIGN §3): reading its entries, moving them back to the queue
 * and deleting it. The worker writes the entries (LPUSH, newest first, capped with
 * LTRIM); this file only reads, requeues and purges them.
 *
 * A requeue decodes the job here, in C, with the same rules as everywhere else
 * (retryq_job_decode), then moves the entry with a Lua script that removes the exact
 * stored text: an index is only a hint of where to look, never what gets moved, so a
 * concurrent LPUSH from a worker cannot make us move another entry.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define ENCODED_JOB_MAX 1024 /* the longest valid job encodes to about 600 bytes */
#define REQUEUE_PAGE 100     /* entries read per LRANGE by "requeue all" */

/* KEYS: dead, queue. ARGV: stored entry text, job to push. RPUSH: the next job taken. */
static const char LUA_REQUEUE[] =
    "if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end\n"
    "redis.call('RPUSH', KEYS[2], ARGV[2])\n"
    "return 1\n";

/* KEYS: dead. Returns how many entries the deleted list held. */
static const char LUA_PURGE[] =
    "local n = redis.call('LLEN', KEYS[1])\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n";

/* ------------------------------------------------------------ one entry */

static void entry_clear(retryq_dead_entry_t *e)
{
    free(e->job);
    free(e->reason);
    free(e->at);
    free(e->worker);
    free(e->raw);
    memset(e, 0, sizeof *e);
}

/* A copy of a member's string; NULL (and no failure) when the member is not a string. */
static int copy_member(const cJSON *object, const char *name, char **out, retryq_error_t *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
    *out = NULL;
    if (!cJSON_IsString(item))
        return RETRYQ_OK;
    *out = strdup(item->valuestring);
    return *out != NULL ? RETRYQ_OK : rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
}

/* The JSON object in text[0..len), or NULL when it is anything else (trailing text too). */
static cJSON *parse_object(const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (root == NULL)
        return NULL;
    for (size_t i = (size_t)(end - text); i < len; i++) {
        if ((unsigned char)text[i] > 0x20) {
            cJSON_Delete(root);
            return NULL;
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Fills `e` from one stored entry. Only running out of memory is a failure: text in
 * another shape gives an entry with `raw` alone. */
static int entry_parse(const char *text, size_t len, retryq_dead_entry_t *e, retryq_error_t *err)
{
    memset(e, 0, sizeof *e);
    if ((e->raw = strndup(text, len)) == NULL)
        return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    cJSON *root = parse_object(text, len);
    if (root == NULL || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "job"))) {
        cJSON_Delete(root);
        return RETRYQ_OK;
    }
    int rc = copy_member(root, "job", &e->job, err);
    if (rc == RETRYQ_OK)
        rc = copy_member(root, "reason", &e->reason, err);
    if (rc == RETRYQ_OK)
        rc = copy_member(root, "at", &e->at, err);
    if (rc == RETRYQ_OK)
        rc = copy_member(root, "worker", &e->worker, err);
    cJSON_Delete(root);
    if (rc != RETRYQ_OK)
        entry_clear(e);
    return rc;
}

/* ------------------------------------------------------------ list */

int retryq_dead_list(retryq_client_t *client, int64_t start, int64_t count,
                     retryq_dead_entry_t **entries, size_t *n, retryq_error_t *err)
{
    if (entries != NULL)
        *entries = NULL;
    if (n != NULL)
        *n = 0;
    if (client == NULL || entries == NULL || n == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "dead list: missing client or result");
    if (start < 0 || count == 0 || (count > 0 && start > INT64_MAX - count))
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "dead list: start must be >= 0 and count non-zero (negative: to the end)");
    int64_t stop = count < 0 ? -1 : start + count - 1;
    redisReply *r = rq_client_command(client, REDIS_REPLY_ARRAY, err, "LRANGE %s %lld %lld",
                                      client->keys.dead, (long long)start, (long long)stop);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    int rc = RETRYQ_OK;
    retryq_dead_entry_t *out = NULL;
    size_t filled = 0;
    if (r->elements > 0 && (out = calloc(r->elements, sizeof *out)) == NULL)
        rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    for (; rc == RETRYQ_OK && filled < r->elements; filled++) {
        const redisReply *item = r->element[filled];
        if (item->type != REDIS_REPLY_STRING)
            rc = rq_error(err, RETRYQ_ERR_REDIS, "Redis LRANGE: unexpected entry (type %d)", item->type);
        else
            rc = entry_parse(item->str, item->len, &out[filled], err);
    }
    freeReplyObject(r);
    if (rc != RETRYQ_OK) {
        retryq_dead_entries_free(out, filled);
        return rc;
    }
    *entries = out;
    *n = filled;
    return RETRYQ_OK;
}

void retryq_dead_entries_free(retryq_dead_entry_t *entries, size_t n)
{
    if (entries == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        entry_clear(&entries[i]);
    free(entries);
}

/* ------------------------------------------------------------ requeue */

/*
 * The job of one stored entry, re-encoded with delivery 0, into buf. RETRYQ_ERR_INVALID
 * (with the sentence about entry `index`) when the entry or its job is not valid.
 */
static int requeue_payload(const char *text, size_t len, int64_t index, char *buf, size_t cap,
                           retryq_error_t *err)
{
    retryq_dead_entry_t e;
    retryq_job_t job;
    retryq_error_t why = {0};
    int rc = entry_parse(text, len, &e, err);
    if (rc != RETRYQ_OK)
        return rc;
    if (e.job == NULL)
        rc = rq_error(err, RETRYQ_ERR_INVALID,
                      "entry %" PRId64 " is not a dead-list entry (a JSON object with a \"job\" string)", index);
    else if (retryq_job_decode(e.job, strlen(e.job), RETRYQ_MAX_ATTEMPT, &job, &why) != RETRYQ_OK)
        rc = rq_error(err, RETRYQ_ERR_INVALID, "entry %" PRId64 " holds an invalid job: %s", index,
                      why.message);
    if (rc == RETRYQ_OK) {
        job.delivery = 0;
        if (retryq_job_encode(&job, buf, cap) < 0)
            rc = rq_error(err, RETRYQ_ERR_INVALID, "entry %" PRId64 " holds a job that cannot be encoded", index);
    }
    entry_clear(&e);
    return rc;
}

/* Runs the move script for one stored entry; *moved is 1, or 0 when the text had
 * already left the dead list. */
static int move_entry(retryq_client_t *client, const char *text, size_t len, const char *payload,
                      int64_t *moved, retryq_error_t *err)
{
    redisReply *r = rq_client_command(client, REDIS_REPLY_INTEGER, err, "EVAL %s 2 %s %s %b %s",
                                      LUA_REQUEUE, client->keys.dead, client->keys.pending, text, len,
                                      payload);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    *moved = r->integer;
    freeReplyObject(r);
    return RETRYQ_OK;
}

static int requeue_one(retryq_client_t *client, int64_t index, int64_t *moved, retryq_error_t *err)
{
    char payload[ENCODED_JOB_MAX];
    redisReply *r = rq_client_command(client, -1, err, "LINDEX %s %lld", client->keys.dead,
                                      (long long)index);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    int rc = RETRYQ_OK;
    if (r->type == REDIS_REPLY_NIL)
        rc = rq_error(err, RETRYQ_ERR_NOT_FOUND, "the dead list has no entry %" PRId64, index);
    else if (r->type != REDIS_REPLY_STRING)
        rc = rq_error(err, RETRYQ_ERR_REDIS, "Redis LINDEX: unexpected reply (type %d)", r->type);
    if (rc == RETRYQ_OK)
        rc = requeue_payload(r->str, r->len, index, payload, sizeof payload, err);
    if (rc == RETRYQ_OK)
        rc = move_entry(client, r->str, r->len, payload, moved, err);
    if (rc == RETRYQ_OK && *moved == 0)
        rc = rq_error(err, RETRYQ_ERR_NOT_FOUND, "entry %" PRId64 " left the dead list before it could be moved",
                      index);
    freeReplyObject(r);
    return rc;
}

/* Requeues one entry of a page, or counts it as skipped when it is not valid. */
static int requeue_item(retryq_client_t *client, const redisReply *item, int64_t *moved,
                        int64_t *skipped, retryq_error_t *err)
{
    char payload[ENCODED_JOB_MAX];
    int64_t one = 0;
    if (item->type != REDIS_REPLY_STRING)
        return rq_error(err, RETRYQ_ERR_REDIS, "Redis LRANGE: unexpected entry (type %d)", item->type);
    int rc = requeue_payload(item->str, item->len, 0, payload, sizeof payload, NULL);
    if (rc == RETRYQ_ERR_INVALID) {
        (*skipped)++;
        return RETRYQ_OK;
    }
    if (rc != RETRYQ_OK)
        return rq_error(err, rc, "out of memory");
    rc = move_entry(client, item->str, item->len, payload, &one, err);
    *moved += one;
    return rc;
}

/*
 * Pages from the tail (the oldest entries) with negative indexes, which a worker's LPUSH
 * at the head does not shift. Skipped entries stay at the tail, so each page starts
 * `skipped` entries further in. Only as many entries as the list held at the start are
 * examined: a job that dies again at once comes back at the head and must not be
 * requeued over and over.
 */
static int requeue_all(retryq_client_t *client, int64_t *moved, int64_t *skipped, retryq_error_t *err)
{
    redisReply *r = rq_client_command(client, REDIS_REPLY_INTEGER, err, "LLEN %s", client->keys.dead);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    int64_t remaining = r->integer;
    freeReplyObject(r);
    int rc = RETRYQ_OK;
    while (rc == RETRYQ_OK && remaining > 0) {
        int64_t page = remaining < REQUEUE_PAGE ? remaining : REQUEUE_PAGE;
        r = rq_client_command(client, REDIS_REPLY_ARRAY, err, "LRANGE %s %lld %lld", client->keys.dead,
                              (long long)-(*skipped + page), (long long)-(*skipped + 1));
        if (r == NULL)
            return RETRYQ_ERR_REDIS;
        if (r->elements == 0)
            remaining = 0;
        for (size_t i = r->elements; i-- > 0 && rc == RETRYQ_OK; remaining--) /* oldest first */
            rc = requeue_item(client, r->element[i], moved, skipped, err);
        freeReplyObject(r);
    }
    return rc;
}

int retryq_dead_requeue(retryq_client_t *client, int64_t index, int64_t *moved, int64_t *skipped,
                        retryq_error_t *err)
{
    int64_t moved_count = 0, skipped_count = 0;
    int rc;
    if (client == NULL)
        rc = rq_error(err, RETRYQ_ERR_INVALID, "dead requeue: missing client");
    else if (index < -1)
        rc = rq_error(err, RETRYQ_ERR_INVALID, "dead requeue: index must be >= 0, or -1 for all");
    else if (index == -1)
        rc = requeue_all(client, &moved_count, &skipped_count, err);
    else
        rc = requeue_one(client, index, &moved_count, err);
    if (moved != NULL)
        *moved = moved_count;
    if (skipped != NULL)
        *skipped = skipped_count;
    return rc;
}

/* ------------------------------------------------------------ purge */

int retryq_dead_purge(retryq_client_t *client, int64_t *removed, retryq_error_t *err)
{
    if (removed != NULL)
        *removed = 0;
    if (client == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "dead purge: missing client");
    redisReply *r = rq_client_command(client, REDIS_REPLY_INTEGER, err, "EVAL %s 1 %s", LUA_PURGE,
                                      client->keys.dead);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    if (removed != NULL)
        *removed = r->integer;
    freeReplyObject(r);
    return RETRYQ_OK;
}
