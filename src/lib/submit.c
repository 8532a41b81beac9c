/*
 * retryq_submit: the runner's retry request (POST /executions/{id}/retry-question)
 * done safely, in one transaction, then the job pushed:
 *
 *   BEGIN; SELECT ... FROM executions WHERE id = $1 AND region = $2 FOR UPDATE, judged by
 *   retryq_retry_verdict:
 *     none                      -> RETRYQ_ERR_NOT_FOUND
 *     completed                 -> ALREADY_COMPLETED with the stored output_data
 *     running, processing, retrying, queued, created -> IN_FLIGHT (the API's 202)
 *     anything but failed, timeout, error -> RETRYQ_ERR_NOT_RETRYABLE
 *     retry_count >= max_retries -> RETRYQ_ERR_MAX_RETRIES
 *   retryq_mark_retrying: retry_count + 1, last_retry_at = now(), status 'retrying', one
 *     {attempt, timestamp, status: "retrying"} entry appended to retry_history; COMMIT
 *   LPUSH the job (retryq_enqueue).
 *
 * The row lock replaces the API's Redis NX key: a second submit for the same execution
 * waits for the first to commit, then sees 'retrying' and reports IN_FLIGHT, so exactly
 * one job is pushed. The history entry's timestamp is the job's enqueued_at, so the two
 * can be matched. All values travel as parameters. Statements are bounded by the
 * client's command timeout (SET LOCAL statement_timeout) so a row locked elsewhere
 * cannot hang the caller.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statement.h"

/* The rules and the UPDATE are retryq's SQL functions (migration 0013), which the retry
 * by filter (filter.c) and the Go package run too: retryq_retry_verdict judges the
 * locked row, retryq_mark_retrying starts the retry. */
static const char SQL_LOCK_ROW[] =
    "SELECT e.status, e.retry_count, e.max_retries, e.output_data::text, j.jobspec_id, "
    "e.model_id, e.question_id, retryq_retry_verdict(e.status, e.retry_count, e.max_retries) "
    "FROM executions e LEFT JOIN jobs j ON j.id = e.job_id "
    "WHERE e.id = $1::bigint AND e.region = $2 FOR UPDATE OF e";

static const char SQL_MARK_RETRYING[] =
    "SELECT retry_count FROM retryq_mark_retrying(ARRAY[$1::bigint], ARRAY[$2::text], $3::text)";

typedef struct submit_ctx {
    rq_statement_t st;
    int64_t execution_id;
    const char *region;
    retryq_error_t *err;
} submit_ctx_t;

/* What the locked row holds. */
typedef struct row {
    char status[51];
    int32_t retry_count;
    int32_t max_retries;
    char verdict[24];  /* retryq_retry_verdict: retry, completed, in_flight, ... */
    char *output_data; /* malloc'd or NULL */
} row_t;

/* The runner's response fields of the locked row (job_id, model_id, question_id). */
static void copy_response_fields(const PGresult *res, retryq_submit_result_t *result)
{
    rq_copy(result->job_id, sizeof result->job_id, PQgetisnull(res, 0, 4) ? "" : PQgetvalue(res, 0, 4));
    rq_copy(result->model_id, sizeof result->model_id, PQgetisnull(res, 0, 5) ? "" : PQgetvalue(res, 0, 5));
    result->has_question_id = !PQgetisnull(res, 0, 6);
    rq_copy(result->question_id, sizeof result->question_id,
            result->has_question_id ? PQgetvalue(res, 0, 6) : "");
}

static int lock_row(submit_ctx_t *ctx, row_t *row, bool *found, retryq_submit_result_t *result)
{
    char id[24];
    const char *const params[] = {id, ctx->region};
    PGresult *res = NULL;
    snprintf(id, sizeof id, "%" PRId64, ctx->execution_id);
    *found = false;
    int rc = rq_statement_exec(&ctx->st, SQL_LOCK_ROW, 2, params, "locking the execution", &res);
    if (rc != RETRYQ_OK)
        return rc;
    if (PQntuples(res) == 1) {
        *found = true;
        rq_copy(row->status, sizeof row->status, PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
        row->retry_count = (int32_t)strtol(PQgetvalue(res, 0, 1), NULL, 10);
        row->max_retries = (int32_t)strtol(PQgetvalue(res, 0, 2), NULL, 10);
        rq_copy(row->verdict, sizeof row->verdict, PQgetvalue(res, 0, 7));
        copy_response_fields(res, result);
        if (!PQgetisnull(res, 0, 3)) {
            row->output_data = strdup(PQgetvalue(res, 0, 3));
            if (row->output_data == NULL)
                rc = rq_error(ctx->err, RETRYQ_ERR_NOMEM, "out of memory");
        }
    }
    PQclear(res);
    return rc;
}

/* The UPDATE; checks that the new retry_count is the attempt we computed. */
static int mark_retrying(submit_ctx_t *ctx, const retryq_job_t *job)
{
    char id[24];
    const char *const params[] = {id, ctx->region, job->enqueued_at};
    PGresult *res = NULL;
    snprintf(id, sizeof id, "%" PRId64, ctx->execution_id);
    int rc = rq_statement_exec(&ctx->st, SQL_MARK_RETRYING, 3, params, "marking the execution retrying",
                               &res);
    if (rc != RETRYQ_OK)
        return rc;
    if (PQntuples(res) != 1 || strtol(PQgetvalue(res, 0, 0), NULL, 10) != job->retry_attempt)
        rc = rq_error(ctx->err, RETRYQ_ERR_DATABASE,
                      "[RETRY] execution %" PRId64 ": the update did not leave retry_count at %" PRId32,
                      ctx->execution_id, job->retry_attempt);
    PQclear(res);
    return rc;
}

/* Decides what the found row allows, from its verdict; RETRYQ_OK with *proceed set when it
 * is retryable. */
static int judge(submit_ctx_t *ctx, row_t *row, retryq_submit_result_t *result, bool *proceed)
{
    *proceed = false;
    rq_copy(result->execution_status, sizeof result->execution_status, row->status);
    result->retry_count = row->retry_count;
    result->max_retries = row->max_retries;
    if (strcmp(row->verdict, "completed") == 0) {
        result->status = RETRYQ_SUBMIT_ALREADY_COMPLETED;
        result->output_data = row->output_data;
        row->output_data = NULL;
        return RETRYQ_OK;
    }
    if (strcmp(row->verdict, "in_flight") == 0) {
        result->status = RETRYQ_SUBMIT_IN_FLIGHT;
        return RETRYQ_OK;
    }
    if (strcmp(row->verdict, "not_retryable") == 0)
        return rq_error(ctx->err, RETRYQ_ERR_NOT_RETRYABLE,
                        "[RETRY] execution %" PRId64 " (%s) has status '%s': only failed, timeout and "
                        "error executions can be retried",
                        ctx->execution_id, ctx->region, row->status[0] != '\0' ? row->status : "(null)");
    if (strcmp(row->verdict, "retry") != 0) /* at_max_retries */
        return rq_error(ctx->err, RETRYQ_ERR_MAX_RETRIES,
                        "[RETRY] execution %" PRId64 " (%s) has no retries left: retry_count %" PRId32
                        " >= max_retries %" PRId32,
                        ctx->execution_id, ctx->region, row->retry_count, row->max_retries);
    *proceed = true;
    return RETRYQ_OK;
}

int retryq_submit(retryq_client_t *client, int64_t execution_id, const char *region,
                  int64_t question_index, retryq_submit_result_t *result, retryq_error_t *err)
{
    submit_ctx_t ctx = {.execution_id = execution_id, .region = region, .err = err};
    char subject[48];
    row_t row = {.output_data = NULL};
    retryq_job_t job;
    bool found = false, proceed = false;
    int rc;

    if (result != NULL)
        memset(result, 0, sizeof *result); /* defined on every return */
    if (result == NULL || client == NULL || region == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "submit: missing client, region or result");
    /* The arguments are checked before anything is touched (attempt 1 stands in). */
    rc = retryq_job_init(&job, execution_id, region, question_index, 1, err);
    if (rc != RETRYQ_OK)
        return rc;
    snprintf(subject, sizeof subject, "[RETRY] execution %" PRId64, execution_id);
    rc = rq_statement_open(&ctx.st, client, subject, err);
    if (rc != RETRYQ_OK)
        return rc;

    rc = rq_statement_begin(&ctx.st, client->command_timeout_ms, false);
    if (rc == RETRYQ_OK)
        rc = lock_row(&ctx, &row, &found, result);
    if (rc == RETRYQ_OK && !found)
        rc = rq_error(err, RETRYQ_ERR_NOT_FOUND,
                      "[RETRY] no execution %" PRId64 " in region '%s' (the region must match the "
                      "stored value exactly, e.g. 'us-east')",
                      execution_id, region);
    if (rc == RETRYQ_OK)
        rc = judge(&ctx, &row, result, &proceed);
    if (rc == RETRYQ_OK && proceed)
        rc = retryq_job_init(&job, execution_id, region, question_index, row.retry_count + 1, err);
    if (rc == RETRYQ_OK && proceed)
        rc = mark_retrying(&ctx, &job);
    if (rc == RETRYQ_OK && proceed)
        rc = rq_statement_commit(&ctx.st, "COMMIT (the retry may or may not be recorded)");
    rq_statement_end(&ctx.st); /* refusals roll back: they change nothing */
    free(row.output_data);
    if (rc != RETRYQ_OK || !proceed)
        return rc;

    /* Committed: the execution is 'retrying' at this attempt whatever happens next. */
    result->attempt = job.retry_attempt;
    result->retry_count = job.retry_attempt;
    rq_copy(result->execution_status, sizeof result->execution_status, "retrying");
    result->job = job;
    rc = retryq_enqueue(client, &job, err);
    if (rc != RETRYQ_OK) {
        char why[sizeof err->message];
        rq_copy(why, sizeof why, err != NULL ? err->message : retryq_code_name(rc));
        result->status = RETRYQ_SUBMIT_COMMITTED_NOT_QUEUED;
        return rq_error(err, RETRYQ_ERR_REDIS,
                        "[RETRY] execution %" PRId64 " (%s) is 'retrying' (attempt %" PRId32 " of %" PRId32
                        ") but its job was not queued: %s; the worker's orphan sweep will enqueue it",
                        execution_id, region, job.retry_attempt, result->max_retries, why);
    }
    result->status = RETRYQ_SUBMIT_QUEUED;
    return RETRYQ_OK;
}

void retryq_submit_result_free(retryq_submit_result_t *result)
{
    if (result == NULL)
        return;
    free(result->output_data);
    result->output_data = NULL;
}
