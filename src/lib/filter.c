/*
 * retryq_submit_filter: the retry by filter (issue 15), chunk after chunk.
 *
 * The selection, the rules and the UPDATE are retryq's SQL (migration 0013):
 * retryq_retry_by_filter does one chunk in the caller's transaction (select in id order,
 * lock with SKIP LOCKED, judge with retryq_retry_verdict, mark with retryq_mark_retrying,
 * the same functions retryq_submit runs, record the set). This file turns the options
 * into the filter document, runs a chunk per transaction, commits, then pushes the
 * chunk's jobs with retryq_enqueue_many, and keeps the counts. A dry run runs the same
 * chunks in READ ONLY transactions that the function leaves unchanged.
 *
 * The history entry's timestamp is the chunk's jobs' enqueued_at, as for a single submit.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "statement.h"

#define DEFAULT_SAMPLE 20
#define MAX_CHUNK 5000
/* A chunk scans executions in id order until it has found its rows: on a large table with
 * a narrow filter that can take longer than one row's statement, so a chunk gets at least
 * this long. */
#define CHUNK_TIMEOUT_MS 60000

static const char SQL_CHUNK[] =
    "SELECT set_id, execution_id, region, question_index, verdict, attempt, status, retry_count, "
    "max_retries, model_id, question_id, error_code, "
    "to_char(failed_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS') "
    "FROM retryq_retry_by_filter($1::jsonb, $2::bigint, $3::integer, $4::integer, $5::bigint, $6, $7, "
    "$8, $9::boolean)";

enum chunk_column {
    COL_SET, COL_ID, COL_REGION, COL_QUESTION_INDEX, COL_VERDICT, COL_ATTEMPT, COL_STATUS,
    COL_RETRY_COUNT, COL_MAX_RETRIES, COL_MODEL, COL_QUESTION_ID, COL_ERROR_CODE, COL_FAILED_AT,
};

static const char *const skip_names[RETRYQ_SKIP_COUNT] = {
    [RETRYQ_SKIP_MAX_RETRIES] = "at_max_retries", [RETRYQ_SKIP_IN_FLIGHT] = "in_flight",
    [RETRYQ_SKIP_LOCKED] = "locked",              [RETRYQ_SKIP_NOT_RETRYABLE] = "not_retryable",
    [RETRYQ_SKIP_NO_QUESTION] = "no_question_id",
};

const char *retryq_skip_reason_name(int reason)
{
    return reason >= 0 && reason < RETRYQ_SKIP_COUNT ? skip_names[reason] : "unknown";
}

/* One run of retryq_submit_filter. */
typedef struct bulk_run {
    rq_statement_t st;
    retryq_client_t *client;
    retryq_bulk_result_t *result;
    retryq_error_t *err;
    char *filter_json;         /* p_filter */
    const char *set_name;
    char created_by[256];
    int64_t limit;             /* 0: none */
    bool dry_run;
    size_t chunk, sample_cap;
    int64_t after;             /* the last execution id seen */
    retryq_job_t *jobs;        /* one chunk's retried rows */
    size_t job_count;
} bulk_run_t;

/* ------------------------------------------------------------ the filter document */

static bool add_string(cJSON *o, const char *key, const char *value)
{
    return value == NULL || cJSON_AddStringToObject(o, key, value) != NULL;
}

static bool add_time(cJSON *o, const char *key, int64_t ms)
{
    char text[RETRYQ_MAX_TIMESTAMP + 1];
    if (ms == 0)
        return true;
    rq_format_rfc3339(ms, text, sizeof text);
    return cJSON_AddStringToObject(o, key, text) != NULL;
}

/* The filter as retryq_retry_by_filter reads it (and the set keeps it). */
static char *filter_document(const retryq_filter_t *f, int64_t limit)
{
    static const struct { unsigned bit; const char *name; } statuses[] = {
        {RETRYQ_STATUS_FAILED, "failed"}, {RETRYQ_STATUS_TIMEOUT, "timeout"}, {RETRYQ_STATUS_ERROR, "error"}};
    unsigned bits = f->statuses != 0 ? f->statuses : RETRYQ_STATUS_FAILED | RETRYQ_STATUS_TIMEOUT | RETRYQ_STATUS_ERROR;
    cJSON *o = cJSON_CreateObject(), *list = NULL;
    bool ok = o != NULL && add_string(o, "job", f->job) && add_string(o, "model", f->model) &&
              add_string(o, "region", f->region) && (list = cJSON_AddArrayToObject(o, "statuses")) != NULL;
    for (size_t i = 0; ok && i < sizeof statuses / sizeof *statuses; i++)
        if (bits & statuses[i].bit) {
            cJSON *name = cJSON_CreateString(statuses[i].name);
            ok = name != NULL && cJSON_AddItemToArray(list, name);
            if (!ok)
                cJSON_Delete(name);
        }
    ok = ok && add_string(o, "error_code", f->error_code) && add_time(o, "since", f->since_ms) &&
         add_time(o, "until", f->until_ms);
    if (ok && limit > 0)
        ok = cJSON_AddNumberToObject(o, "limit", (double)limit) != NULL;
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

static int check_arguments(const retryq_filter_t *f, const retryq_bulk_options_t *o, retryq_error_t *err)
{
    if ((f->job == NULL || f->job[0] == '\0') && f->since_ms == 0)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "retry by filter: give a job (jobspec_id) or a since time, or both");
    if ((f->statuses & ~(RETRYQ_STATUS_FAILED | RETRYQ_STATUS_TIMEOUT | RETRYQ_STATUS_ERROR)) != 0)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "retry by filter: statuses must be among failed, timeout and error");
    if (f->since_ms < 0 || f->until_ms < 0 || (f->until_ms != 0 && f->until_ms <= f->since_ms))
        return rq_error(err, RETRYQ_ERR_INVALID, "retry by filter: until must come after since");
    if (o->limit < 0 || o->chunk > MAX_CHUNK)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "retry by filter: the limit must be >= 0 and the chunk from 1 to %d", MAX_CHUNK);
    return RETRYQ_OK;
}

/* ------------------------------------------------------------ one chunk */

static int skip_reason(const char *verdict)
{
    for (int i = 0; i < RETRYQ_SKIP_COUNT; i++)
        if (strcmp(verdict, skip_names[i]) == 0)
            return i;
    return RETRYQ_SKIP_NOT_RETRYABLE;
}

static const char *text_or_empty(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col);
}

static void keep_sample(bulk_run_t *b, const PGresult *res, int row)
{
    retryq_bulk_result_t *r = b->result;
    if (r->sample_count >= b->sample_cap)
        return;
    retryq_bulk_row_t *s = &r->sample[r->sample_count++];
    s->execution_id = rq_statement_int(res, row, COL_ID);
    rq_copy(s->region, sizeof s->region, text_or_empty(res, row, COL_REGION));
    rq_copy(s->model_id, sizeof s->model_id, text_or_empty(res, row, COL_MODEL));
    rq_copy(s->status, sizeof s->status, text_or_empty(res, row, COL_STATUS));
    s->retry_count = (int32_t)rq_statement_int(res, row, COL_RETRY_COUNT);
    s->max_retries = (int32_t)rq_statement_int(res, row, COL_MAX_RETRIES);
    rq_copy(s->error_code, sizeof s->error_code, text_or_empty(res, row, COL_ERROR_CODE));
    rq_copy(s->question_id, sizeof s->question_id, text_or_empty(res, row, COL_QUESTION_ID));
    s->question_index = PQgetisnull(res, row, COL_QUESTION_INDEX) ? -1 : rq_statement_int(res, row, COL_QUESTION_INDEX);
    rq_copy(s->failed_at, sizeof s->failed_at, text_or_empty(res, row, COL_FAILED_AT));
    rq_copy(s->verdict, sizeof s->verdict, text_or_empty(res, row, COL_VERDICT));
    s->attempt = (int32_t)rq_statement_int(res, row, COL_ATTEMPT);
}

/* Counts the chunk's rows and builds the jobs of those retried. */
static int read_chunk(bulk_run_t *b, const PGresult *res, const char *timestamp)
{
    retryq_bulk_result_t *r = b->result;
    int rows = PQntuples(res);
    b->job_count = 0;
    for (int i = 0; i < rows; i++) {
        const char *verdict = PQgetvalue(res, i, COL_VERDICT);
        int64_t id = rq_statement_int(res, i, COL_ID);
        r->selected++;
        b->after = id > b->after ? id : b->after;
        keep_sample(b, res, i);
        if (strcmp(verdict, "retry") != 0) {
            r->skipped[skip_reason(verdict)]++;
            continue;
        }
        r->retried++;
        if (b->dry_run)
            continue;
        if (r->set_id == 0)
            r->set_id = rq_statement_int(res, i, COL_SET);
        retryq_job_t *job = &b->jobs[b->job_count];
        retryq_error_t why = {0};
        if (PQgetisnull(res, i, COL_QUESTION_INDEX))
            return rq_error(b->err, RETRYQ_ERR_INVALID,
                            "[RETRY] retry by filter: execution %" PRId64 " was retried without a question "
                            "index; nothing of its chunk was committed",
                            id);
        int rc = retryq_job_init(job, id, PQgetvalue(res, i, COL_REGION),
                                 rq_statement_int(res, i, COL_QUESTION_INDEX),
                                 (int32_t)rq_statement_int(res, i, COL_ATTEMPT), &why);
        if (rc != RETRYQ_OK)
            return rq_error(b->err, rc,
                            "[RETRY] retry by filter: execution %" PRId64 " cannot become a job (%s); "
                            "nothing of its chunk was committed",
                            id, why.message);
        rq_copy(job->enqueued_at, sizeof job->enqueued_at, timestamp);
        b->job_count++;
    }
    return RETRYQ_OK;
}

/* Pushes the committed chunk's jobs. RETRYQ_ERR_REDIS when some were not queued. */
static int push_chunk(bulk_run_t *b)
{
    retryq_bulk_result_t *r = b->result;
    retryq_error_t why = {0};
    size_t queued = 0;
    int rc = retryq_enqueue_many(b->client, b->jobs, b->job_count, NULL, &queued, &why);
    r->queued += (int64_t)queued;
    r->not_queued += (int64_t)(b->job_count - queued);
    if (rc == RETRYQ_OK)
        return RETRYQ_OK;
    return rq_error(b->err, RETRYQ_ERR_REDIS,
                    "[RETRY] retry by filter: %" PRId64 " execution(s) of retry set %" PRId64
                    " are 'retrying' but their jobs were not queued: %s; the worker's orphan sweep will "
                    "enqueue them; stopped before the rest of the selection",
                    r->not_queued, r->set_id, why.message);
}

/* Puts the counts back as they were before a chunk that was rolled back. */
static void forget_chunk(retryq_bulk_result_t *r, const retryq_bulk_result_t *before)
{
    r->set_id = before->set_id;
    r->selected = before->selected;
    r->retried = before->retried;
    memcpy(r->skipped, before->skipped, sizeof r->skipped);
    r->sample_count = before->sample_count;
}

/* One transaction. *more says whether the selection may go on after it. */
static int run_chunk(bulk_run_t *b, bool *more)
{
    retryq_bulk_result_t *r = b->result;
    char after[24], size[24], want[24], set[24], timestamp[RETRYQ_MAX_TIMESTAMP + 1];
    int64_t remaining = b->limit > 0 ? b->limit - r->retried : 0;
    snprintf(after, sizeof after, "%" PRId64, b->after);
    snprintf(size, sizeof size, "%zu", b->chunk);
    snprintf(want, sizeof want, "%" PRId64, remaining);
    snprintf(set, sizeof set, "%" PRId64, r->set_id);
    rq_format_rfc3339(rq_now_ms(), timestamp, sizeof timestamp);
    const char *const params[] = {b->filter_json, after, size, b->limit > 0 ? want : NULL,
                                  r->set_id != 0 ? set : NULL, b->set_name, b->created_by, timestamp,
                                  b->dry_run ? "true" : "false"};
    int timeout = b->client->command_timeout_ms > CHUNK_TIMEOUT_MS ? b->client->command_timeout_ms : CHUNK_TIMEOUT_MS;
    PGresult *res = NULL;
    const retryq_bulk_result_t before = *r;

    *more = false;
    int rc = rq_statement_begin(&b->st, timeout, b->dry_run);
    if (rc == RETRYQ_OK)
        rc = rq_statement_exec(&b->st, SQL_CHUNK, 9, params, "selecting and retrying a chunk", &res);
    if (rc == RETRYQ_OK) {
        rc = read_chunk(b, res, timestamp);
        *more = (size_t)PQntuples(res) == b->chunk && (b->limit == 0 || r->retried < b->limit);
        PQclear(res);
    }
    if (rc != RETRYQ_OK || b->job_count == 0) {
        rq_statement_rollback(&b->st); /* a dry run, or nothing retried: nothing to keep */
        if (rc != RETRYQ_OK)
            forget_chunk(r, &before);
        return rc;
    }
    rc = rq_statement_commit(&b->st, "COMMIT (the chunk's retries may or may not be recorded)");
    if (rc != RETRYQ_OK) {
        forget_chunk(r, &before);
        return rc;
    }
    return push_chunk(b);
}

/* ------------------------------------------------------------ the whole run */

int retryq_submit_filter(retryq_client_t *client, const retryq_filter_t *filter,
                         const retryq_bulk_options_t *opts, retryq_bulk_result_t *result,
                         retryq_error_t *err)
{
    static const retryq_bulk_options_t defaults = {0};
    const retryq_bulk_options_t *o = opts != NULL ? opts : &defaults;
    if (result == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "retry by filter: missing result");
    memset(result, 0, sizeof *result);
    result->dry_run = o->dry_run;
    if (client == NULL || filter == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "retry by filter: missing client or filter");
    int rc = check_arguments(filter, o, err);
    if (rc != RETRYQ_OK)
        return rc;

    bulk_run_t b = {.client = client, .result = result, .err = err, .set_name = o->set_name,
                    .limit = o->limit, .dry_run = o->dry_run,
                    .chunk = o->chunk != 0 ? o->chunk : RETRYQ_BULK_CHUNK,
                    .sample_cap = o->sample != 0 ? o->sample : DEFAULT_SAMPLE};
    rq_who(o->created_by, b.created_by, sizeof b.created_by);
    b.filter_json = filter_document(filter, o->limit);
    b.jobs = malloc(b.chunk * sizeof *b.jobs);
    result->sample = calloc(b.sample_cap, sizeof *result->sample);
    if (b.filter_json == NULL || b.jobs == NULL || result->sample == NULL)
        rc = rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
    if (rc == RETRYQ_OK)
        rc = rq_statement_open(&b.st, client, "[RETRY] retry by filter", err);
    for (bool more = true; rc == RETRYQ_OK && more;) {
        rc = run_chunk(&b, &more);
        result->chunks++;
        if (rc == RETRYQ_OK && o->progress != NULL)
            o->progress(result, o->progress_data);
    }
    rq_statement_end(&b.st);
    cJSON_free(b.filter_json);
    free(b.jobs);
    return rc;
}

void retryq_bulk_result_free(retryq_bulk_result_t *result)
{
    if (result == NULL)
        return;
    free(result->sample);
    result->sample = NULL;
    result->sample_count = 0;
}
