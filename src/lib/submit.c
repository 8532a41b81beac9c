/*
 * retryq_submit: the runner's retry request (POST /executions/{id}/retry-question)
 * done safely, in one transaction, then the job pushed:
 *
 *   BEGIN; SELECT ... FROM executions WHERE id = $1 AND region = $2 FOR UPDATE
 *     none                      -> RETRYQ_ERR_NOT_FOUND
 *     completed                 -> ALREADY_COMPLETED with the stored output_data
 *     running, processing, retrying, queued, created -> IN_FLIGHT (the API's 202)
 *     anything but failed, timeout, error -> RETRYQ_ERR_NOT_RETRYABLE
 *     retry_count >= max_retries -> RETRYQ_ERR_MAX_RETRIES
 *   UPDATE retry_count + 1, last_retry_at = now(), status 'retrying', one
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

#include "client.h"

static const char SQL_TIMEOUT[] = "SELECT set_config('statement_timeout', $1, true)";

static const char SQL_LOCK_ROW[] =
    "SELECT e.status, e.retry_count, e.max_retries, e.output_data::text, j.jobspec_id, "
    "e.model_id, e.question_id FROM executions e LEFT JOIN jobs j ON j.id = e.job_id "
    "WHERE e.id = $1::bigint AND e.region = $2 FOR UPDATE OF e";

/* original_error keeps the runner's failure: the runner never fills the column, its
 * failure text lives in output_data.error, which the worker's outcome replaces. */
static const char SQL_MARK_RETRYING[] =
    "UPDATE executions SET retry_count = retry_count + 1, last_retry_at = now(), "
    "status = 'retrying', original_error = coalesce(original_error, output_data->>'error'), "
    "retry_history = coalesce(retry_history, '[]'::jsonb) || "
    "jsonb_build_array(jsonb_build_object('attempt', retry_count + 1, 'timestamp', $3::text, "
    "'status', 'retrying')) "
    "WHERE id = $1::bigint AND region = $2 RETURNING retry_count";

/* Statuses the runner's API answers 202 for. 'pending' is not one of them: the API answers
 * 400 (not retryable) for it, and so does submit. */
static const char *const IN_FLIGHT_STATUSES[] = {"running", "processing", "retrying", "queued",
                                                 "created"};
static const char *const RETRYABLE_STATUSES[] = {"failed", "timeout", "error"};

typedef struct submit_ctx {
    retryq_client_t *client;
    PGconn *pg;
    bool in_transaction;
    bool broken; /* the connection failed: drop it at the end */
    int64_t execution_id;
    const char *region;
    retryq_error_t *err;
} submit_ctx_t;

/* What the locked row holds. */
typedef struct row {
    char status[51];
    int32_t retry_count;
    int32_t max_retries;
    char *output_data; /* malloc'd or NULL */
} row_t;

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, list[i]) == 0)
            return true;
    return false;
}

/* One line from a failed statement: the server's primary message, or libpq's. */
static void error_text(const submit_ctx_t *ctx, const PGresult *res, char *buf, size_t cap)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(buf, cap, "%s", primary != NULL ? primary : PQerrorMessage(ctx->pg));
    for (char *p = buf; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' '; n--)
        buf[n - 1] = '\0';
}

/* Classifies a failed statement (SQLSTATE first), fills err, frees res. */
static int sql_error(submit_ctx_t *ctx, PGresult *res, const char *what)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char text[300];
    int code;
    error_text(ctx, res, text, sizeof text);
    if (PQstatus(ctx->pg) != CONNECTION_OK || (state != NULL && strncmp(state, "08", 2) == 0)) {
        ctx->broken = true;
        code = rq_error(ctx->err, RETRYQ_ERR_DATABASE,
                        "[RETRY] execution %" PRId64 ": PostgreSQL connection lost during %s: %s",
                        ctx->execution_id, what, text);
    } else if (state != NULL && strcmp(state, "23514") == 0) {
        code = rq_error(ctx->err, RETRYQ_ERR_SCHEMA,
                        "[RETRY] execution %" PRId64 ": the database refuses status 'retrying' (%s): "
                        "the schema is not migrated; run `retryq migrate`",
                        ctx->execution_id, text);
    } else if (state != NULL && (strcmp(state, "42703") == 0 || strcmp(state, "42P01") == 0)) {
        code = rq_error(ctx->err, RETRYQ_ERR_SCHEMA,
                        "[RETRY] execution %" PRId64 ": %s: the runner's schema lacks retry tracking "
                        "(its migration 0010); migrate the runner, then run `retryq migrate`",
                        ctx->execution_id, text);
    } else if (state != NULL && strcmp(state, "57014") == 0) {
        code = rq_error(ctx->err, RETRYQ_ERR_DATABASE,
                        "[RETRY] execution %" PRId64 ": %s timed out after %d ms (is the row locked "
                        "by a long transaction?)",
                        ctx->execution_id, what, ctx->client->command_timeout_ms);
    } else {
        code = rq_error(ctx->err, RETRYQ_ERR_DATABASE, "[RETRY] execution %" PRId64 ": %s failed: %s%s%s",
                        ctx->execution_id, what, text, state != NULL ? " SQLSTATE " : "",
                        state != NULL ? state : "");
    }
    PQclear(res);
    return code;
}

/* Runs a statement; `out` (optional) receives the result when it succeeded. */
static int exec_params(submit_ctx_t *ctx, const char *sql, int nparams,
                       const char *const *params, const char *what, PGresult **out)
{
    PGresult *res = PQexecParams(ctx->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return sql_error(ctx, res, what);
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return RETRYQ_OK;
}

/* BEGIN and the statement timeout. A connection that went stale since the last call
 * (server restart) is replaced once: nothing has happened yet, so that is safe. */
static int begin(submit_ctx_t *ctx)
{
    char timeout[24];
    const char *const params[] = {timeout};
    snprintf(timeout, sizeof timeout, "%d", ctx->client->command_timeout_ms);
    int rc = exec_params(ctx, "BEGIN", 0, NULL, "BEGIN", NULL);
    if (rc != RETRYQ_OK && ctx->broken) {
        rq_client_pg_reset(ctx->client);
        ctx->broken = false;
        ctx->pg = rq_client_pg(ctx->client, ctx->err);
        if (ctx->pg == NULL)
            return RETRYQ_ERR_DATABASE;
        rc = exec_params(ctx, "BEGIN", 0, NULL, "BEGIN", NULL);
    }
    if (rc != RETRYQ_OK)
        return rc;
    ctx->in_transaction = true;
    return exec_params(ctx, SQL_TIMEOUT, 1, params, "setting the statement timeout", NULL);
}

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
    int rc = exec_params(ctx, SQL_LOCK_ROW, 2, params, "locking the execution", &res);
    if (rc != RETRYQ_OK)
        return rc;
    if (PQntuples(res) == 1) {
        *found = true;
        rq_copy(row->status, sizeof row->status, PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
        row->retry_count = (int32_t)strtol(PQgetvalue(res, 0, 1), NULL, 10);
        row->max_retries = (int32_t)strtol(PQgetvalue(res, 0, 2), NULL, 10);
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
    int rc = exec_params(ctx, SQL_MARK_RETRYING, 3, params, "marking the execution retrying", &res);
    if (rc != RETRYQ_OK)
        return rc;
    if (PQntuples(res) != 1 || strtol(PQgetvalue(res, 0, 0), NULL, 10) != job->retry_attempt)
        rc = rq_error(ctx->err, RETRYQ_ERR_DATABASE,
                      "[RETRY] execution %" PRId64 ": the update did not leave retry_count at %" PRId32,
                      ctx->execution_id, job->retry_attempt);
    PQclear(res);
    return rc;
}

/* Decides what the found row allows; RETRYQ_OK with *proceed set when it is retryable. */
static int judge(submit_ctx_t *ctx, row_t *row, retryq_submit_result_t *result, bool *proceed)
{
    *proceed = false;
    rq_copy(result->execution_status, sizeof result->execution_status, row->status);
    result->retry_count = row->retry_count;
    result->max_retries = row->max_retries;
    if (strcmp(row->status, "completed") == 0) {
        result->status = RETRYQ_SUBMIT_ALREADY_COMPLETED;
        result->output_data = row->output_data;
        row->output_data = NULL;
        return RETRYQ_OK;
    }
    if (in_list(row->status, IN_FLIGHT_STATUSES, sizeof IN_FLIGHT_STATUSES / sizeof *IN_FLIGHT_STATUSES)) {
        result->status = RETRYQ_SUBMIT_IN_FLIGHT;
        return RETRYQ_OK;
    }
    if (!in_list(row->status, RETRYABLE_STATUSES, sizeof RETRYABLE_STATUSES / sizeof *RETRYABLE_STATUSES))
        return rq_error(ctx->err, RETRYQ_ERR_NOT_RETRYABLE,
                        "[RETRY] execution %" PRId64 " (%s) has status '%s': only failed, timeout and "
                        "error executions can be retried",
                        ctx->execution_id, ctx->region, row->status[0] != '\0' ? row->status : "(null)");
    if (row->retry_count >= row->max_retries)
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
    submit_ctx_t ctx = {client, NULL, false, false, execution_id, region, err};
    row_t row = {.output_data = NULL};
    retryq_job_t job;
    bool found = false, proceed = false;
    int rc;

    if (result == NULL || client == NULL || region == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "submit: missing client, region or result");
    memset(result, 0, sizeof *result);
    /* The arguments are checked before anything is touched (attempt 1 stands in). */
    rc = retryq_job_init(&job, execution_id, region, question_index, 1, err);
    if (rc != RETRYQ_OK)
        return rc;
    ctx.pg = rq_client_pg(client, err);
    if (ctx.pg == NULL)
        return RETRYQ_ERR_DATABASE;

    rc = begin(&ctx);
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
    if (rc == RETRYQ_OK && proceed) {
        rc = exec_params(&ctx, "COMMIT", 0, NULL, "COMMIT (the retry may or may not be recorded)", NULL);
        ctx.in_transaction = false;
    }
    if (ctx.in_transaction && !ctx.broken)
        PQclear(PQexec(ctx.pg, "ROLLBACK")); /* refusals change nothing */
    if (ctx.broken)
        rq_client_pg_reset(client);
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
