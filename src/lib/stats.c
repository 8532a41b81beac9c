/*
 * Queue statistics (retryq_stats): depths of the pending, processing, delayed and dead
 * keys, every registered worker with its heartbeat age and in-flight count, the age of
 * the oldest pending job and the queue's pause (pause.c). Ages use Redis's clock (TIME),
 * as the worker's leases do.
 *
 * The figures come from separate commands, so they are a near snapshot, not an atomic
 * one. The workers' processing lists and taken hashes are found with SCAN (never KEYS);
 * SCAN may return a key twice, so the names are de-duplicated before they are counted. A
 * job a worker holds counts once per field of its hash (HLEN: copies of one text, which
 * only a producer pushing the same job twice makes, count once).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

/* A growable list of key names (SCAN results). */
typedef struct names {
    char **items;
    size_t count, cap;
} names_t;

static void names_free(names_t *n)
{
    for (size_t i = 0; i < n->count; i++)
        free(n->items[i]);
    free(n->items);
    memset(n, 0, sizeof *n);
}

static int names_add(names_t *n, const char *s, size_t len, retryq_error_t *err)
{
    if (n->count == n->cap) {
        size_t cap = n->cap != 0 ? n->cap * 2 : 16;
        char **items = realloc(n->items, cap * sizeof *items);
        if (items == NULL)
            return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
        n->items = items;
        n->cap = cap;
    }
    if ((n->items[n->count] = strndup(s, len)) == NULL)
        return rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    n->count++;
    return RETRYQ_OK;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_sort_unique(names_t *n)
{
    size_t kept = 0;
    if (n->count == 0)
        return;
    qsort(n->items, n->count, sizeof *n->items, compare_names);
    for (size_t i = 1; i < n->count; i++) {
        if (strcmp(n->items[i], n->items[kept]) == 0)
            free(n->items[i]);
        else
            n->items[++kept] = n->items[i];
    }
    n->count = kept + 1;
}

/* ------------------------------------------------------------ Redis reads */

/* LLEN of a list, or ZCARD of a sorted set. */
/* The size of `key` by `command` (LLEN, ZCARD, HLEN). */
static int key_size(retryq_client_t *client, const char *command, const char *key, int64_t *out,
                    retryq_error_t *err)
{
    const char *argv[] = {command, key};
    redisReply *r = rq_client_command_argv(client, REDIS_REPLY_INTEGER, err, 2, argv, NULL);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    *out = r->integer;
    freeReplyObject(r);
    return RETRYQ_OK;
}

/* Redis glob pattern matching `prefix` literally, followed by '*'. */
static void glob_prefix(const char *prefix, char *buf, size_t cap)
{
    size_t n = 0;
    for (; *prefix != '\0' && n + 3 < cap; prefix++) {
        if (strchr("*?[]\\{}", *prefix) != NULL)
            buf[n++] = '\\';
        buf[n++] = *prefix;
    }
    buf[n++] = '*';
    buf[n] = '\0';
}

/* One SCAN reply: [cursor, [key...]]. */
static int scan_page(const redisReply *r, char *cursor, size_t cap, names_t *found,
                     retryq_error_t *err)
{
    if (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_ARRAY || r->element[0]->len >= cap)
        return rq_error(err, RETRYQ_ERR_REDIS, "Redis SCAN: unexpected reply");
    memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
    int rc = RETRYQ_OK;
    for (size_t i = 0; i < r->element[1]->elements && rc == RETRYQ_OK; i++) {
        const redisReply *key = r->element[1]->element[i];
        rc = key->type == REDIS_REPLY_STRING ? names_add(found, key->str, key->len, err)
                                             : rq_error(err, RETRYQ_ERR_REDIS, "Redis SCAN: unexpected key");
    }
    return rc;
}

static int scan_keys(retryq_client_t *client, const char *pattern, names_t *found,
                     retryq_error_t *err)
{
    char cursor[32] = "0";
    int rc;
    do {
        redisReply *r = rq_client_command(client, REDIS_REPLY_ARRAY, err,
                                          "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r == NULL)
            return RETRYQ_ERR_REDIS;
        rc = scan_page(r, cursor, sizeof cursor, found, err);
        freeReplyObject(r);
    } while (rc == RETRYQ_OK && strcmp(cursor, "0") != 0);
    return rc;
}

/* Sum of LLEN over every {Q}:processing:* list and of HLEN over every {Q}:taken:* hash. */
static int processing_total(retryq_client_t *client, int64_t *total, retryq_error_t *err)
{
    char taken_prefix[sizeof client->keys.processing_prefix];
    snprintf(taken_prefix, sizeof taken_prefix, "{%s}:taken:", client->keys.pending);
    const char *prefixes[] = {client->keys.processing_prefix, taken_prefix};
    const char *commands[] = {"LLEN", "HLEN"};
    int rc = RETRYQ_OK;
    *total = 0;
    for (size_t p = 0; p < 2 && rc == RETRYQ_OK; p++) {
        char pattern[2 * sizeof client->keys.processing_prefix + 2];
        names_t keys = {0};
        glob_prefix(prefixes[p], pattern, sizeof pattern);
        rc = scan_keys(client, pattern, &keys, err);
        if (rc == RETRYQ_OK)
            names_sort_unique(&keys);
        for (size_t i = 0; i < keys.count && rc == RETRYQ_OK; i++) {
            int64_t n = 0;
            rc = key_size(client, commands[p], keys.items[i], &n, err);
            *total += n;
        }
        names_free(&keys);
    }
    return rc;
}

/* One worker from ZRANGE ... WITHSCORES: its id, heartbeat age and in-flight jobs. */
static int read_worker(retryq_client_t *client, const redisReply *id, const redisReply *score,
                       int64_t now_ms, retryq_worker_info_t *out, retryq_error_t *err)
{
    char key[sizeof client->keys.processing_prefix + 1024];
    if (id->type != REDIS_REPLY_STRING || score->type != REDIS_REPLY_STRING || id->len >= 1024)
        return rq_error(err, RETRYQ_ERR_REDIS, "Redis ZRANGE: unexpected worker entry");
    rq_copy(out->id, sizeof out->id, id->str);
    out->heartbeat_age_ms = now_ms - (int64_t)strtod(score->str, NULL);
    int64_t landed = 0;
    if (retryq_keys_processing(&client->keys, id->str, key, sizeof key) < 0)
        return rq_error(err, RETRYQ_ERR_REDIS, "worker id \"%s\": no processing key", out->id);
    int rc = key_size(client, "LLEN", key, &landed, err);
    if (rc != RETRYQ_OK || retryq_keys_taken(&client->keys, id->str, key, sizeof key) < 0)
        return rc != RETRYQ_OK ? rc
                               : rq_error(err, RETRYQ_ERR_REDIS, "worker id \"%s\": no key", out->id);
    rc = key_size(client, "HLEN", key, &out->inflight, err);
    out->inflight += landed;
    return rc;
}

static int read_workers(retryq_client_t *client, int64_t now_ms, retryq_stats_t *out,
                        retryq_error_t *err)
{
    redisReply *r = rq_client_command(client, REDIS_REPLY_ARRAY, err, "ZRANGE %s 0 -1 WITHSCORES",
                                      client->keys.workers);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    int rc = RETRYQ_OK;
    size_t count = r->elements / 2;
    if (count > 0 && (out->workers = calloc(count, sizeof *out->workers)) == NULL)
        rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < count && rc == RETRYQ_OK; i++, out->worker_count++)
        rc = read_worker(client, r->element[2 * i], r->element[2 * i + 1], now_ms,
                         &out->workers[i], err);
    freeReplyObject(r);
    return rc;
}

/* Age of the job at the right end of the queue (the next one taken), -1 when it has no
 * readable enqueued_at (the runner's own four-field jobs carry none). */
static int oldest_pending_age(retryq_client_t *client, int64_t now_ms, int64_t *age,
                              retryq_error_t *err)
{
    redisReply *r = rq_client_command(client, -1, err, "LINDEX %s -1", client->keys.pending);
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    retryq_job_t job;
    *age = -1;
    if (r->type == REDIS_REPLY_STRING &&
        retryq_job_decode(r->str, r->len, RETRYQ_MAX_ATTEMPT, &job, NULL) == RETRYQ_OK &&
        job.enqueued_at[0] != '\0') {
        int64_t at = rq_parse_rfc3339(job.enqueued_at);
        if (at >= 0)
            *age = now_ms > at ? now_ms - at : 0;
    }
    freeReplyObject(r);
    return RETRYQ_OK;
}

int retryq_stats(retryq_client_t *client, retryq_stats_t *out, retryq_error_t *err)
{
    int64_t now_ms = 0;
    if (client == NULL || out == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "stats: missing client or result");
    memset(out, 0, sizeof *out);
    out->oldest_pending_age_ms = -1;
    out->pause.age_ms = -1;
    const retryq_keys_t *k = &client->keys;
    int rc = rq_client_time_ms(client, &now_ms, err);
    if (rc == RETRYQ_OK)
        rc = key_size(client, "LLEN", k->pending, &out->pending, err);
    if (rc == RETRYQ_OK)
        rc = key_size(client, "ZCARD", k->delayed, &out->delayed, err);
    if (rc == RETRYQ_OK)
        rc = key_size(client, "LLEN", k->dead, &out->dead, err);
    if (rc == RETRYQ_OK)
        rc = processing_total(client, &out->processing, err);
    if (rc == RETRYQ_OK)
        rc = read_workers(client, now_ms, out, err);
    if (rc == RETRYQ_OK)
        rc = oldest_pending_age(client, now_ms, &out->oldest_pending_age_ms, err);
    if (rc == RETRYQ_OK)
        rc = retryq_pause_get(client, &out->pause, err);
    if (rc != RETRYQ_OK)
        retryq_stats_free(out);
    return rc;
}

void retryq_stats_free(retryq_stats_t *stats)
{
    if (stats == NULL)
        return;
    free(stats->workers);
    stats->workers = NULL;
    stats->worker_count = 0;
}
