/*
 * Bulk enqueue (retryq_enqueue_many): many jobs in few round trips. Valid jobs are
 * encoded and pushed BULK_BATCH at a time with one variadic LPUSH each, and up to
 * BULK_WINDOW of those are written before their replies are read (a pipeline), so a
 * call costs about one round trip per BULK_BATCH * BULK_WINDOW jobs.
 *
 * One LPUSH is atomic, so a batch is queued whole or not at all, and each job's code
 * says which: an invalid job gets its own validation code (and is never sent), a batch
 * Redis refuses gives each of its jobs RETRYQ_ERR_REDIS. When the connection breaks with
 * replies outstanding, the jobs of those batches are reported RETRYQ_ERR_REDIS although
 * Redis may have queued them (the reply was lost, not necessarily the command); pushing
 * such a job again is harmless, because the worker records an attempt at most once.
 * Jobs after a broken connection are not sent and also get RETRYQ_ERR_REDIS.
 *
 * On a Redis Cluster a batch answered -MOVED, -ASK, -TRYAGAIN or -CLUSTERDOWN did not
 * run: its jobs are sent again after the window, the way rq_client_cluster_again says
 * (to the node a MOVED names, or after a pause).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"

#define BULK_BATCH 1000        /* jobs in one LPUSH */
#define BULK_WINDOW 16         /* LPUSHes written before their replies are read */
#define ENCODED_JOB_MAX 1024   /* as in client.c: a valid job encodes to about 600 bytes */
#define UNSENT 1               /* a job's code before it is considered (codes are <= 0) */
#define IN_BATCH 2             /* ... while its batch's reply is outstanding */

typedef struct bulk {
    retryq_client_t *client;
    const retryq_job_t *jobs;
    size_t n;
    int *codes;                /* per job; never NULL inside (a scratch array if needed) */
    size_t queued;
    size_t failed;
    size_t first_failed;       /* index of the first job not queued (failed > 0) */
    retryq_error_t first;      /* its reason */
    /* one batch being built: argv for LPUSH key p1..pK; payload bytes back to back */
    const char **argv;
    size_t *argvlen;
    char *text;
    /* Redis Cluster: a redirected batch's reply, kept until the window is read */
    redisReply *redirect;
    size_t redo_from;          /* the first job of a redirected batch (n: none) */
    int redirects;
    struct timespec start;
} bulk_t;

/* Records a job that will not be queued, keeping the first reason for the summary. */
static void bulk_fail(bulk_t *b, size_t i, int code, const char *message)
{
    b->codes[i] = code;
    if (b->failed++ == 0) {
        b->first_failed = i;
        b->first.code = code;
        rq_copy(b->first.message, sizeof b->first.message, message);
    }
}

/* Fails the jobs of [from, to) whose code is still `state`. */
static void bulk_fail_range(bulk_t *b, size_t from, size_t to, int state, const char *message)
{
    for (size_t i = from; i < to; i++)
        if (b->codes[i] == state)
            bulk_fail(b, i, RETRYQ_ERR_REDIS, message);
}

/* Encodes the valid jobs of [*next, n) into one LPUSH of up to BULK_BATCH payloads and
 * appends it to the connection's output buffer (hiredis copies it there). Jobs in it are
 * IN_BATCH until their reply is read; invalid ones get their code at once. Returns the
 * index after the last job considered, with *sent set when a command was appended. */
static size_t bulk_append(bulk_t *b, redisContext *rc, size_t next, bool *sent)
{
    int argc = 2;
    size_t used = 0;
    b->argv[0] = "LPUSH";
    b->argvlen[0] = 5;
    b->argv[1] = b->client->keys.pending;
    b->argvlen[1] = strlen(b->client->keys.pending);
    size_t offsets[BULK_BATCH];
    size_t i = next;
    for (; i < b->n && argc - 2 < BULK_BATCH; i++) {
        retryq_error_t err = {0};
        if (b->codes[i] != UNSENT)
            continue; /* sent again after a redirection: only the jobs not queued */
        if (retryq_job_validate(&b->jobs[i], RETRYQ_MAX_ATTEMPT, &err) != RETRYQ_OK) {
            bulk_fail(b, i, err.code, err.message);
            continue;
        }
        int len = retryq_job_encode(&b->jobs[i], b->text + used, ENCODED_JOB_MAX);
        if (len < 0) {
            bulk_fail(b, i, len, "job: cannot be encoded");
            continue;
        }
        offsets[argc - 2] = used;
        b->argvlen[argc++] = (size_t)len;
        used += (size_t)len;
        b->codes[i] = IN_BATCH;
    }
    for (int k = 2; k < argc; k++)
        b->argv[k] = b->text + offsets[k - 2];
    *sent = argc > 2 && redisAppendCommandArgv(rc, argc, b->argv, b->argvlen) == REDIS_OK;
    if (argc > 2 && !*sent)
        bulk_fail_range(b, next, i, IN_BATCH, "Redis LPUSH failed: out of memory");
    return i;
}

/* Reads the reply of the batch of jobs [from, to). False when the connection broke. */
static bool bulk_reply(bulk_t *b, redisContext *rc, size_t from, size_t to)
{
    redisReply *reply = NULL;
    if (redisGetReply(rc, (void **)&reply) != REDIS_OK || reply == NULL) {
        char message[400];
        snprintf(message, sizeof message, "Redis LPUSH failed: %s (the job may have been queued)",
                 rc->errstr[0] != '\0' ? rc->errstr : "connection lost");
        bulk_fail_range(b, from, to, IN_BATCH, message);
        return false;
    }
    if (b->client->redis.is_cluster && reply->type == REDIS_REPLY_ERROR &&
        (strncmp(reply->str, "MOVED ", 6) == 0 || cluster_retry_later(reply->str))) {
        for (size_t i = from; i < to; i++)
            if (b->codes[i] == IN_BATCH)
                b->codes[i] = UNSENT;
        if (from < b->redo_from)
            b->redo_from = from;
        if (b->redirect == NULL)
            b->redirect = reply;
        else
            freeReplyObject(reply);
        return true;
    }
    if (reply->type == REDIS_REPLY_INTEGER) {
        for (size_t i = from; i < to; i++)
            if (b->codes[i] == IN_BATCH) {
                b->codes[i] = RETRYQ_OK;
                b->queued++;
            }
    } else {
        char message[400];
        snprintf(message, sizeof message, "Redis LPUSH failed: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        bulk_fail_range(b, from, to, IN_BATCH, message);
    }
    freeReplyObject(reply);
    return true;
}

/* One window: append up to BULK_WINDOW batches, then read their replies in order.
 * Returns the index of the next job, or n after the connection broke (the rest failed). */
static size_t bulk_window(bulk_t *b, redisContext *rc, size_t next)
{
    size_t bounds[BULK_WINDOW + 1];
    int batches = 0;
    bounds[0] = next;
    while (batches < BULK_WINDOW && next < b->n) {
        bool sent = false;
        size_t end = bulk_append(b, rc, next, &sent);
        if (sent)
            bounds[++batches] = end;
        else if (batches > 0)
            bounds[batches] = end; /* jobs with no batch of their own: already failed */
        else
            bounds[0] = end;
        next = end;
    }
    for (int k = 0; k < batches; k++) {
        if (!bulk_reply(b, rc, bounds[k], bounds[k + 1])) {
            if (b->redirect != NULL) /* its jobs are UNSENT: bulk_run fails them */
                freeReplyObject(b->redirect);
            b->redirect = NULL;
            rq_client_redis_reset(b->client);
            bulk_fail_range(b, bounds[k + 1], bounds[batches], IN_BATCH,
                            "Redis LPUSH failed: connection lost (the job may have been queued)");
            return b->n;
        }
    }
    if (b->redirect == NULL) {
        b->redirects = 0; /* progress: the pauses' budget starts again */
        clock_gettime(CLOCK_MONOTONIC, &b->start);
    } else {
        bool again = rq_client_cluster_again(b->client, b->redirect, &b->redirects, &b->start);
        char message[400];
        snprintf(message, sizeof message, "Redis LPUSH failed: %s", b->redirect->str);
        freeReplyObject(b->redirect);
        b->redirect = NULL;
        next = b->redo_from;
        b->redo_from = b->n;
        if (!again) {
            bulk_fail_range(b, next, b->n, UNSENT, message);
            return b->n;
        }
    }
    return next;
}

static int bulk_run(bulk_t *b, retryq_error_t *err)
{
    retryq_error_t connect_err = {0};
    redisContext *rc = rq_client_redis(b->client, &connect_err);
    size_t next = 0;
    b->redo_from = b->n;
    clock_gettime(CLOCK_MONOTONIC, &b->start);
    while (rc != NULL && next < b->n) {
        next = bulk_window(b, rc, next);
        if (next < b->n)
            rc = rq_client_redis(b->client, &connect_err); /* anew after a MOVED */
    }
    bulk_fail_range(b, 0, b->n, UNSENT,
                    rc == NULL ? connect_err.message : "Redis LPUSH not sent: the connection broke");
    if (b->failed == 0)
        return RETRYQ_OK;
    return rq_error(err, b->first.code, "%zu of %zu job(s) not queued; the first (job %zu): %s",
                    b->failed, b->n, b->first_failed, b->first.message);
}

int retryq_enqueue_many(retryq_client_t *client, const retryq_job_t *jobs, size_t n, int *codes,
                        size_t *queued, retryq_error_t *err)
{
    if (queued != NULL)
        *queued = 0;
    if (client == NULL || (jobs == NULL && n > 0))
        return rq_error(err, RETRYQ_ERR_INVALID, "enqueue: missing client or jobs");
    if (n == 0)
        return RETRYQ_OK;
    bulk_t b = {.client = client, .jobs = jobs, .n = n, .codes = codes};
    int *scratch = codes == NULL ? calloc(n, sizeof *scratch) : NULL;
    if (codes == NULL)
        b.codes = scratch;
    for (size_t i = 0; b.codes != NULL && i < n; i++)
        b.codes[i] = UNSENT;
    b.argv = malloc((BULK_BATCH + 2) * sizeof *b.argv);
    b.argvlen = malloc((BULK_BATCH + 2) * sizeof *b.argvlen);
    b.text = malloc((size_t)BULK_BATCH * ENCODED_JOB_MAX);
    int rc;
    if (b.codes == NULL || b.argv == NULL || b.argvlen == NULL || b.text == NULL)
        rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    else
        rc = bulk_run(&b, err);
    if (queued != NULL)
        *queued = b.queued;
    free(scratch);
    free(b.argv);
    free(b.argvlen);
    free(b.text);
    return rc;
}
