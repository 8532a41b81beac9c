/*
 * retryq_submit against a real PostgreSQL (a migrated clone of the runner's schema) and
 * Redis (a private queue name). Proves every answer of the runner's retry request:
 * unknown id, or right id with another region (even 'US' for 'us-east') -> NOT_FOUND;
 * completed -> ALREADY_COMPLETED with the stored output (and NULL output as NULL);
 * running/retrying -> IN_FLIGHT; pending and cancelled -> NOT_RETRYABLE naming the status;
 * retry_count >= max_retries -> MAX_RETRIES with the counts; and every refusal changes
 * no column and pushes nothing. On success for failed/timeout/error: exactly the
 * documented columns change (retry_count + 1, last_retry_at, status 'retrying', one
 * history entry {attempt, timestamp, status} appended to what was there, also when it
 * was NULL) and every other column is identical; the job in Redis decodes to the same
 * execution, region, question index and attempt. Two concurrent submits (two clients,
 * two threads, released together while the row is locked) give one QUEUED and one
 * IN_FLIGHT and one job. Redis down after the commit -> RETRYQ_ERR_REDIS with
 * COMMITTED_NOT_QUEUED, the job filled and the row retrying; PostgreSQL down ->
 * RETRYQ_ERR_DATABASE; an unmigrated database -> RETRYQ_ERR_SCHEMA ("retryq migrate"),
 * nothing changed, and the same client works once migrated; bad arguments are refused
 * before any connection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "retryq/retryq.h"
#include "testutil.h"

#define SPEC "{\"id\":\"spec\",\"questions\":[\"identity_basic\",\"math_basic\"]}"

typedef struct fixture {
    char *url;             /* a migrated database of this test program */
    char *queue;
    PGconn *pg;
    redisContext *redis;
    retryq_client_t *client;
    int64_t job;
} fixture_t;

static int group_setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    tu_open_services(&fx->url, &fx->pg, &fx->redis);
    fx->job = tu_insert_job(fx->pg, SPEC);
    *state = fx;
    return 0;
}

static int group_teardown(void **state)
{
    fixture_t *fx = *state;
    tu_close_services(fx->url, fx->pg, fx->redis);
    free(fx);
    return 0;
}

/* Each test has its own queue and client. */
static int setup(void **state)
{
    fixture_t *fx = *state;
    fx->queue = tu_unique_queue("submit");
    fx->client = tu_client(fx->url, tu_redis_url(), fx->queue);
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    retryq_client_free(fx->client);
    tu_redis_del_queue(fx->redis, fx->queue);
    free(fx->queue);
    return 0;
}

/* ------------------------------------------------------------------ helpers */

static int64_t new_execution(fixture_t *fx, const char *region, const char *status, int count, int max)
{
    return tu_insert_execution(fx->pg, fx->job, region, status, "mistral-7b", "math_basic", count, max);
}

/* The whole row as jsonb text. */
static char *row_json(fixture_t *fx, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    return tu_query_value(fx->pg, "SELECT to_jsonb(e)::text FROM executions e WHERE id = $1::int", 1, text);
}

/* The row without the four columns a successful submit may change. */
static char *row_rest(fixture_t *fx, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    return tu_query_value(fx->pg,
                          "SELECT (to_jsonb(e) - ARRAY['retry_count', 'last_retry_at', 'status', "
                          "'retry_history'])::text FROM executions e WHERE id = $1::int",
                          1, text);
}

static char *row_text(fixture_t *fx, const char *sql, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    return tu_query_value(fx->pg, sql, 1, text);
}

static int64_t row_int(fixture_t *fx, const char *sql, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    return tu_query_int(fx->pg, sql, 1, text);
}

static void set_column_json(fixture_t *fx, int64_t id, const char *column_sql, const char *value)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    PQclear(tu_exec(fx->pg, column_sql, 2, text, value));
}

static long long queue_length(fixture_t *fx)
{
    redisReply *r = redisCommand(fx->redis, "LLEN %s", fx->queue);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* Pops the one job of the queue (fails when there is not exactly one) and decodes it. */
static void pop_only_job(fixture_t *fx, retryq_job_t *job)
{
    assert_int_equal(queue_length(fx), 1);
    redisReply *r = redisCommand(fx->redis, "RPOP %s", fx->queue);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    retryq_error_t err = {0};
    int rc = retryq_job_decode(r->str, r->len, 0, job, &err);
    if (rc != RETRYQ_OK)
        fail_msg("the queued payload does not decode: %s: %s", err.message, r->str);
    freeReplyObject(r);
}

static int submit(fixture_t *fx, int64_t id, const char *region, int64_t index,
                  retryq_submit_result_t *res, retryq_error_t *err)
{
    memset(err, 0, sizeof *err);
    return retryq_submit(fx->client, id, region, index, res, err);
}

/* A refusal or report: nothing in the row changed and nothing was queued. */
static void assert_untouched(fixture_t *fx, int64_t id, const char *before)
{
    char *after = row_json(fx, id);
    assert_string_equal(after, before);
    free(after);
    assert_int_equal(queue_length(fx), 0);
}

/* ------------------------------------------------------------------ refusals */

static void test_not_found_by_id_or_region(void **state)
{
    fixture_t *fx = *state;
    retryq_submit_result_t res;
    retryq_error_t err;
    int64_t id = new_execution(fx, "us-east", "failed", 0, 3);
    char *before = row_json(fx, id);

    assert_int_equal(submit(fx, id + 1000, "us-east", 0, &res, &err), RETRYQ_ERR_NOT_FOUND);
    assert_int_equal(err.code, RETRYQ_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "us-east"));
    retryq_submit_result_free(&res);
    /* the right id with another region: the API looks up by id AND region */
    assert_int_equal(submit(fx, id, "eu-west", 0, &res, &err), RETRYQ_ERR_NOT_FOUND);
    retryq_submit_result_free(&res);
    /* the runner's short form of the same region is a different string */
    assert_int_equal(submit(fx, id, "US", 0, &res, &err), RETRYQ_ERR_NOT_FOUND);
    retryq_submit_result_free(&res);
    /* an id beyond int4 is simply not there */
    assert_int_equal(submit(fx, INT64_C(9000000000), "us-east", 0, &res, &err), RETRYQ_ERR_NOT_FOUND);
    retryq_submit_result_free(&res);
    assert_untouched(fx, id, before);
    free(before);
}

static void test_completed_reports_stored_output(void **state)
{
    fixture_t *fx = *state;
    retryq_submit_result_t res;
    retryq_error_t err;
    int64_t id = new_execution(fx, "eu-west", "completed", 1, 3);
    set_column_json(fx, id, "UPDATE executions SET output_data = $2::jsonb WHERE id = $1::int",
                    "{\"response\":\"4\",\"provider\":\"modal-eu\",\"metadata\":{\"tokens\":3}}");
    char *before = row_json(fx, id);

    assert_int_equal(submit(fx, id, "eu-west", 1, &res, &err), RETRYQ_OK);
    assert_int_equal(res.status, RETRYQ_SUBMIT_ALREADY_COMPLETED);
    assert_string_equal(res.execution_status, "completed");
    assert_int_equal(res.retry_count, 1);
    assert_int_equal(res.max_retries, 3);
    assert_non_null(res.output_data);
    /* the same JSON value as stored */
    assert_int_equal(tu_query_int(fx->pg, "SELECT ($1::jsonb = '{\"response\":\"4\",\"provider\":\"modal-eu\","
                                          "\"metadata\":{\"tokens\":3}}'::jsonb)::int",
                                  1, res.output_data),
                     1);
    retryq_submit_result_free(&res);
    assert_null(res.output_data);
    assert_untouched(fx, id, before);
    free(before);

    /* completed without output: reported, output NULL */
    int64_t bare = new_execution(fx, "eu-west", "completed", 0, 3);
    assert_int_equal(submit(fx, bare, "eu-west", 1, &res, &err), RETRYQ_OK);
    assert_int_equal(res.status, RETRYQ_SUBMIT_ALREADY_COMPLETED);
    assert_null(res.output_data);
    retryq_submit_result_free(&res);
}

static void test_in_flight_statuses_change_nothing(void **state)
{
    fixture_t *fx = *state;
    static const char *const statuses[] = {"running", "retrying"};
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++) {
        retryq_submit_result_t res;
        retryq_error_t err;
        int64_t id = new_execution(fx, "asia-pacific", statuses[i], 1, 3);
        char *before = row_json(fx, id);
        int rc = submit(fx, id, "asia-pacific", 0, &res, &err);
        if (rc != RETRYQ_OK)
            fail_msg("status %s: %s", statuses[i], err.message);
        assert_int_equal(res.status, RETRYQ_SUBMIT_IN_FLIGHT);
        assert_string_equal(res.execution_status, statuses[i]);
        assert_int_equal(res.retry_count, 1);
        assert_null(res.output_data);
        retryq_submit_result_free(&res);
        assert_untouched(fx, id, before);
        free(before);
    }
}

static void test_cancelled_and_pending_are_not_retryable(void **state)
{
    fixture_t *fx = *state;
    static const char *const statuses[] = {"cancelled", "pending"};
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++) {
        retryq_submit_result_t res;
        retryq_error_t err;
        char quoted[32];
        int64_t id = new_execution(fx, "us-east", statuses[i], 0, 3);
        char *before = row_json(fx, id);
        assert_int_equal(submit(fx, id, "us-east", 0, &res, &err), RETRYQ_ERR_NOT_RETRYABLE);
        assert_int_equal(err.code, RETRYQ_ERR_NOT_RETRYABLE);
        snprintf(quoted, sizeof quoted, "'%s'", statuses[i]);
        assert_non_null(strstr(err.message, quoted));
        assert_string_equal(res.execution_status, statuses[i]);
        retryq_submit_result_free(&res);
        assert_untouched(fx, id, before);
        free(before);
    }
}

static void test_max_retries_reports_counts(void **state)
{
    fixture_t *fx = *state;
    retryq_submit_result_t res;
    retryq_error_t err;
    int64_t id = new_execution(fx, "us-east", "failed", 3, 3);
    char *before = row_json(fx, id);
    assert_int_equal(submit(fx, id, "us-east", 1, &res, &err), RETRYQ_ERR_MAX_RETRIES);
    assert_non_null(strstr(err.message, "retry_count 3 >= max_retries 3"));
    assert_int_equal(res.retry_count, 3);
    assert_int_equal(res.max_retries, 3);
    retryq_submit_result_free(&res);
    assert_untouched(fx, id, before);
    free(before);

    int64_t over = new_execution(fx, "us-east", "timeout", 5, 2);
    before = row_json(fx, over);
    assert_int_equal(submit(fx, over, "us-east", 1, &res, &err), RETRYQ_ERR_MAX_RETRIES);
    assert_non_null(strstr(err.message, "retry_count 5 >= max_retries 2"));
    retryq_submit_result_free(&res);
    assert_untouched(fx, over, before);
    free(before);
}

static void test_invalid_arguments_touch_nothing(void **state)
{
    (void)state;
    int fd;
    char url[128];
    snprintf(url, sizeof url, "postgresql://retryq@127.0.0.1:%d/none", tu_closed_port(&fd));
    /* a client whose database is down: an INVALID answer proves no connection was tried */
    retryq_client_t *c = tu_client(url, "redis://127.0.0.1:1", "submit-invalid");
    retryq_submit_result_t res;
    retryq_error_t err = {0};
    char long_region[RETRYQ_MAX_REGION + 2];
    memset(long_region, 'r', sizeof long_region - 1);
    long_region[sizeof long_region - 1] = '\0';
    assert_int_equal(retryq_submit(c, 0, "us-east", 0, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit(c, -4, "us-east", 0, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit(c, 1, "", 0, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit(c, 1, "us\neast", 0, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit(c, 1, long_region, 0, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit(c, 1, "us-east", -1, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit(c, 1, NULL, 0, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit(c, 1, "us-east", 0, NULL, &err), RETRYQ_ERR_INVALID);
    retryq_client_free(c);
    close(fd);
}

/* ------------------------------------------------------------------ success */

/* Submits one retryable execution and checks the exact SQL effects and the job. */
static void check_success(fixture_t *fx, const char *status, int count, const char *history)
{
    retryq_submit_result_t res;
    retryq_error_t err;
    int64_t id = new_execution(fx, "us-east", status, count, 3);
    set_column_json(fx, id,
                    "UPDATE executions SET retry_history = $2::jsonb, original_error = 'first error', "
                    "output_data = '{\"error\":\"router 503\"}', system_prompt = 'be brief', "
                    "response_classification = 'technical_failure', is_technical_error = true, "
                    "started_at = now() - interval '1 minute', completed_at = now() WHERE id = $1::int",
                    history);
    char *rest_before = row_rest(fx, id);
    char *history_before = row_text(fx, "SELECT coalesce(retry_history, '[]'::jsonb)::text FROM executions "
                                        "WHERE id = $1::int", id);
    int64_t len_before = row_int(fx, "SELECT coalesce(jsonb_array_length(retry_history), 0) FROM executions "
                                     "WHERE id = $1::int", id);

    int rc = submit(fx, id, "us-east", 1, &res, &err);
    if (rc != RETRYQ_OK)
        fail_msg("submit (%s): %s", status, err.message);
    assert_int_equal(res.status, RETRYQ_SUBMIT_QUEUED);
    assert_int_equal(res.attempt, count + 1);
    assert_int_equal(res.retry_count, count + 1);
    assert_int_equal(res.max_retries, 3);
    assert_string_equal(res.execution_status, "retrying");
    assert_null(res.output_data);

    /* every column but the four is exactly as it was */
    char *rest_after = row_rest(fx, id);
    assert_string_equal(rest_after, rest_before);
    /* the four */
    char *st = row_text(fx, "SELECT status FROM executions WHERE id = $1::int", id);
    assert_string_equal(st, "retrying");
    assert_int_equal(row_int(fx, "SELECT retry_count FROM executions WHERE id = $1::int", id), count + 1);
    assert_int_equal(row_int(fx, "SELECT count(*) FROM executions WHERE id = $1::int AND last_retry_at "
                                 "BETWEEN now() - interval '1 minute' AND now() + interval '1 second'", id),
                     1);
    assert_int_equal(row_int(fx, "SELECT jsonb_array_length(retry_history) FROM executions WHERE id = $1::int", id),
                     len_before + 1);
    char *kept = row_text(fx, "SELECT (retry_history - (-1))::text FROM executions WHERE id = $1::int", id);
    assert_string_equal(kept, history_before);
    /* the new entry: {attempt, timestamp, status} as the runner writes it, and what a
     * cancel needs to undo the retry (migration 0014) */
    char *keys = row_text(fx, "SELECT string_agg(k, ',' ORDER BY k) FROM executions, "
                              "jsonb_object_keys(retry_history->-1) AS k WHERE id = $1::int", id);
    assert_string_equal(keys, "attempt,last_retry_at,original_error_filled,previous_last_retry_at,previous_status,status,"
                              "timestamp");
    char *previous =
        row_text(fx, "SELECT retry_history->-1->>'previous_status' FROM executions WHERE id = $1::int",
                 id);
    assert_string_equal(previous, status);
    free(previous);
    assert_int_equal(row_int(fx, "SELECT (retry_history->-1->>'attempt')::int FROM executions WHERE id = $1::int", id),
                     count + 1);
    assert_int_equal(row_int(fx, "SELECT (jsonb_typeof(retry_history->-1->'attempt') = 'number' AND "
                                 "retry_history->-1->>'status' = 'retrying')::int FROM executions WHERE id = $1::int",
                             id),
                     1);
    char *ts = row_text(fx, "SELECT retry_history->-1->>'timestamp' FROM executions WHERE id = $1::int", id);
    assert_int_equal(tu_query_int(fx->pg, "SELECT ($1 ~ '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(\\.\\d+)?Z$' "
                                          "AND $1::timestamptz BETWEEN now() - interval '1 minute' "
                                          "AND now() + interval '1 minute')::int",
                                  1, ts),
                     1);
    assert_string_equal(ts, res.job.enqueued_at);

    /* the job in Redis */
    retryq_job_t job;
    pop_only_job(fx, &job);
    assert_int_equal(job.execution_id, id);
    assert_string_equal(job.region, "us-east");
    assert_int_equal(job.question_index, 1);
    assert_int_equal(job.retry_attempt, count + 1);
    char want_id[48];
    snprintf(want_id, sizeof want_id, "%" PRId64 ":%d", id, count + 1);
    assert_string_equal(job.id, want_id);
    assert_string_equal(job.enqueued_at, ts);
    assert_int_equal(res.job.execution_id, id);
    assert_int_equal(res.job.retry_attempt, count + 1);
    assert_string_equal(res.job.id, want_id);

    retryq_submit_result_free(&res);
    free(rest_before);
    free(rest_after);
    free(history_before);
    free(st);
    free(kept);
    free(keys);
    free(ts);
}

static void test_failed_is_retried_with_exact_effects(void **state)
{
    check_success(*state, "failed", 0, "[]");
}

static void test_timeout_appends_to_existing_history(void **state)
{
    check_success(*state, "timeout", 1,
                  "[{\"attempt\":1,\"status\":\"retrying\",\"timestamp\":\"2026-01-01T00:00:00Z\"},"
                  "{\"attempt\":1,\"status\":\"timeout\",\"timestamp\":\"2026-01-01T00:01:00Z\",\"worker\":\"w1\"}]");
}

static void test_error_with_null_history(void **state)
{
    check_success(*state, "error", 2, NULL);
}

static void test_last_retry_then_refused(void **state)
{
    fixture_t *fx = *state;
    retryq_submit_result_t res;
    retryq_error_t err;
    int64_t id = new_execution(fx, "us-east", "failed", 2, 3);
    assert_int_equal(submit(fx, id, "us-east", 0, &res, &err), RETRYQ_OK);
    assert_int_equal(res.attempt, 3);
    retryq_submit_result_free(&res);
    /* the worker fails it again: now all retries are used */
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    PQclear(tu_exec(fx->pg, "UPDATE executions SET status = 'failed' WHERE id = $1::int", 1, text));
    assert_int_equal(submit(fx, id, "us-east", 0, &res, &err), RETRYQ_ERR_MAX_RETRIES);
    retryq_submit_result_free(&res);
    assert_int_equal(queue_length(fx), 1);
}

/* A row as the runner leaves it: original_error NULL, its failure in output_data. Submit
 * keeps that failure as original_error (a retry's outcome replaces output_data), and the
 * result carries the runner's response fields. */
static void test_runner_row_keeps_original_error(void **state)
{
    fixture_t *fx = *state;
    retryq_submit_result_t res;
    retryq_error_t err;
    int64_t id = new_execution(fx, "eu-west", "failed", 0, 5);
    set_column_json(fx, id,
                    "UPDATE executions SET original_error = NULL, output_data = $2::jsonb WHERE id = $1::int",
                    "{\"error\":\"hybrid error: context deadline exceeded\",\"error_code\":\"ROUTER_TIMEOUT\","
                    "\"failure\":{\"stage\":\"router_http_timeout\",\"component\":\"hybrid_router\"}}");
    assert_int_equal(submit(fx, id, "eu-west", 1, &res, &err), RETRYQ_OK);
    char *kept = row_text(fx, "SELECT original_error FROM executions WHERE id = $1::int", id);
    assert_string_equal(kept, "hybrid error: context deadline exceeded");
    char *jobspec_id = tu_query_value(fx->pg, "SELECT jobspec_id FROM jobs ORDER BY id LIMIT 1", 0);
    assert_string_equal(res.job_id, jobspec_id);
    assert_string_equal(res.model_id, "mistral-7b");
    assert_true(res.has_question_id);
    assert_string_equal(res.question_id, "math_basic");
    assert_int_equal(res.max_retries, 5);
    retryq_submit_result_free(&res);
    free(kept);
    free(jobspec_id);

    /* an original_error already there is never replaced; a row without an error text keeps NULL */
    int64_t set = new_execution(fx, "eu-west", "timeout", 0, 3);
    set_column_json(fx, set, "UPDATE executions SET original_error = 'the first one', "
                             "output_data = $2::jsonb WHERE id = $1::int", "{\"error\":\"a later one\"}");
    int64_t none = new_execution(fx, "eu-west", "error", 0, 3);
    set_column_json(fx, none, "UPDATE executions SET original_error = NULL, output_data = $2::jsonb "
                              "WHERE id = $1::int", "[\"not an object\"]");
    set_column_json(fx, none, "UPDATE executions SET question_id = NULL WHERE id = $1::int AND $2 <> ''", "x");
    assert_int_equal(submit(fx, set, "eu-west", 1, &res, &err), RETRYQ_OK);
    retryq_submit_result_free(&res);
    assert_int_equal(submit(fx, none, "eu-west", 1, &res, &err), RETRYQ_OK);
    assert_false(res.has_question_id);
    retryq_submit_result_free(&res);
    kept = row_text(fx, "SELECT original_error FROM executions WHERE id = $1::int", set);
    assert_string_equal(kept, "the first one");
    free(kept);
    assert_int_equal(row_int(fx, "SELECT (original_error IS NULL)::int FROM executions WHERE id = $1::int", none), 1);
}

/* ------------------------------------------------------------------ concurrency */

typedef struct racer {
    const char *url;
    const char *queue;
    int64_t id;
    pthread_barrier_t *barrier;
    int rc;
    retryq_submit_result_t res;
    retryq_error_t err;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    retryq_options_t opts = {.database_url = r->url, .redis_url = getenv("RETRYQ_TEST_REDIS_URL"),
                             .queue = r->queue};
    retryq_client_t *c = retryq_client_new(&opts, &r->err);
    pthread_barrier_wait(r->barrier);
    r->rc = c != NULL ? retryq_submit(c, r->id, "eu-west", 0, &r->res, &r->err) : RETRYQ_ERR_INVALID;
    retryq_client_free(c);
    return NULL;
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A side transaction holds the row so both submits are seen waiting on it at once. */
static void test_concurrent_submits_queue_once(void **state)
{
    fixture_t *fx = *state;
    int64_t id = new_execution(fx, "eu-west", "failed", 0, 3);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    PGconn *side = tu_pg_connect(fx->url);
    PQclear(tu_exec(side, "BEGIN", 0));
    PQclear(tu_exec(side, "SELECT 1 FROM executions WHERE id = $1::int FOR UPDATE", 1, text));

    pthread_barrier_t barrier;
    racer_t racers[2];
    pthread_t threads[2];
    assert_int_equal(pthread_barrier_init(&barrier, NULL, 2), 0);
    for (int i = 0; i < 2; i++) {
        racers[i] = (racer_t){.url = fx->url, .queue = fx->queue, .id = id, .barrier = &barrier};
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    int64_t deadline = monotonic_ms() + 4000; /* below the client's 5 s statement timeout */
    while (tu_query_int(fx->pg, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type = 'Lock'", 0) < 2) {
        if (monotonic_ms() > deadline)
            fail_msg("the two submits never both waited on the row lock");
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
    PQclear(tu_exec(side, "COMMIT", 0));
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    PQfinish(side);

    int queued = 0, in_flight = 0;
    for (int i = 0; i < 2; i++) {
        if (racers[i].rc != RETRYQ_OK)
            fail_msg("racer %d: %s", i, racers[i].err.message);
        queued += racers[i].res.status == RETRYQ_SUBMIT_QUEUED;
        in_flight += racers[i].res.status == RETRYQ_SUBMIT_IN_FLIGHT;
        if (racers[i].res.status == RETRYQ_SUBMIT_IN_FLIGHT)
            assert_string_equal(racers[i].res.execution_status, "retrying");
        retryq_submit_result_free(&racers[i].res);
    }
    assert_int_equal(queued, 1);
    assert_int_equal(in_flight, 1);
    assert_int_equal(row_int(fx, "SELECT retry_count FROM executions WHERE id = $1::int", id), 1);
    assert_int_equal(row_int(fx, "SELECT jsonb_array_length(retry_history) FROM executions WHERE id = $1::int", id), 1);
    retryq_job_t job;
    pop_only_job(fx, &job);
    assert_int_equal(job.execution_id, id);
    assert_int_equal(job.retry_attempt, 1);
}

/* ------------------------------------------------------------------ outages */

static void test_redis_down_after_commit(void **state)
{
    fixture_t *fx = *state;
    int fd;
    char redis_url[64];
    snprintf(redis_url, sizeof redis_url, "redis://127.0.0.1:%d", tu_closed_port(&fd));
    retryq_client_t *c = tu_client(fx->url, redis_url, fx->queue);
    int64_t id = new_execution(fx, "us-east", "timeout", 0, 3);
    retryq_submit_result_t res;
    retryq_error_t err = {0};

    assert_int_equal(retryq_submit(c, id, "us-east", 1, &res, &err), RETRYQ_ERR_REDIS);
    assert_int_equal(err.code, RETRYQ_ERR_REDIS);
    assert_int_equal(res.status, RETRYQ_SUBMIT_COMMITTED_NOT_QUEUED);
    assert_non_null(strstr(err.message, "not queued"));
    assert_int_equal(res.attempt, 1);
    assert_int_equal(res.job.execution_id, id);
    assert_string_equal(res.job.region, "us-east");
    assert_int_equal(res.job.question_index, 1);
    assert_int_equal(res.job.retry_attempt, 1);
    retryq_submit_result_free(&res);
    /* committed: the row is retrying at attempt 1 */
    char *st = row_text(fx, "SELECT status || ':' || retry_count FROM executions WHERE id = $1::int", id);
    assert_string_equal(st, "retrying:1");
    free(st);
    /* and a second submit is in flight, not a second retry */
    assert_int_equal(retryq_submit(c, id, "us-east", 1, &res, &err), RETRYQ_OK);
    assert_int_equal(res.status, RETRYQ_SUBMIT_IN_FLIGHT);
    retryq_submit_result_free(&res);
    retryq_client_free(c);
    close(fd);
    assert_int_equal(queue_length(fx), 0);
}

static void test_database_down(void **state)
{
    fixture_t *fx = *state;
    int fd;
    char url[128];
    snprintf(url, sizeof url, "postgresql://retryq@127.0.0.1:%d/retryq", tu_closed_port(&fd));
    retryq_client_t *c = tu_client(url, tu_redis_url(), fx->queue);
    retryq_submit_result_t res;
    retryq_error_t err = {0};
    assert_int_equal(retryq_submit(c, 1, "us-east", 0, &res, &err), RETRYQ_ERR_DATABASE);
    assert_int_equal(err.code, RETRYQ_ERR_DATABASE);
    assert_non_null(strstr(err.message, "PostgreSQL"));
    retryq_submit_result_free(&res);
    retryq_client_free(c);
    close(fd);
    assert_int_equal(queue_length(fx), 0);
}

/* The runner's schema without retryq's migration refuses 'retrying' (23514). */
static void test_unmigrated_database_is_schema_error(void **state)
{
    fixture_t *fx = *state;
    char *url = tu_create_database(false);
    PGconn *pg = tu_pg_connect(url);
    int64_t job = tu_insert_job(pg, SPEC);
    int64_t id = tu_insert_execution(pg, job, "us-east", "failed", NULL, "math_basic", 0, 3);
    retryq_client_t *c = tu_client(url, tu_redis_url(), fx->queue);
    retryq_submit_result_t res;
    retryq_error_t err = {0};
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    char *before = tu_query_value(pg, "SELECT to_jsonb(e)::text FROM executions e WHERE id = $1::int", 1, text);

    assert_int_equal(retryq_submit(c, id, "us-east", 0, &res, &err), RETRYQ_ERR_SCHEMA);
    assert_int_equal(err.code, RETRYQ_ERR_SCHEMA);
    assert_non_null(strstr(err.message, "retryq migrate"));
    retryq_submit_result_free(&res);
    char *after = tu_query_value(pg, "SELECT to_jsonb(e)::text FROM executions e WHERE id = $1::int", 1, text);
    assert_string_equal(after, before); /* rolled back */
    assert_int_equal(queue_length(fx), 0);

    /* the same client (its transaction closed) works once the schema is migrated */
    int applied = 0;
    assert_int_equal(retryq_migrate(c, -1, &applied, &err), RETRYQ_OK);
    assert_true(applied >= 1); /* 0012, and each one after it */
    assert_int_equal(retryq_submit(c, id, "us-east", 0, &res, &err), RETRYQ_OK);
    assert_int_equal(res.status, RETRYQ_SUBMIT_QUEUED);
    retryq_submit_result_free(&res);
    assert_int_equal(queue_length(fx), 1);

    free(before);
    free(after);
    retryq_client_free(c);
    PQfinish(pg);
    tu_drop_database(url);
    free(url);
}

/* A connection the server dropped between two calls is replaced on the next call. */
static void test_reconnects_after_backend_is_terminated(void **state)
{
    fixture_t *fx = *state;
    retryq_submit_result_t res;
    retryq_error_t err;
    int64_t first = new_execution(fx, "us-east", "failed", 0, 3);
    assert_int_equal(submit(fx, first, "us-east", 0, &res, &err), RETRYQ_OK);
    retryq_submit_result_free(&res);
    PGconn *admin = tu_pg_connect(tu_admin_url());
    int64_t killed = tu_query_int(admin,
                                  "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE datname = $1 AND application_name = 'retryq' AND pid <> pg_backend_pid()",
                                  1, PQdb(fx->pg));
    PQfinish(admin);
    assert_true(killed >= 1);
    int64_t second = new_execution(fx, "us-east", "failed", 0, 3);
    int rc = submit(fx, second, "us-east", 0, &res, &err);
    if (rc != RETRYQ_OK)
        fail_msg("submit after the backend was terminated: %s", err.message);
    assert_int_equal(res.status, RETRYQ_SUBMIT_QUEUED);
    retryq_submit_result_free(&res);
    assert_int_equal(queue_length(fx), 2);
}

int main(void)
{
    if (!tu_have_services()) {
        fprintf(stderr, "test_submit: RETRYQ_TEST_* is not set: run it through ctest "
                        "(or test/support/services.sh exec DIR -- test_submit)\n");
        return 1;
    }
    if (getenv("RETRYQ_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("RETRYQ_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_not_found_by_id_or_region, setup, teardown),
        cmocka_unit_test_setup_teardown(test_completed_reports_stored_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_flight_statuses_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_and_pending_are_not_retryable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_retries_reports_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_arguments_touch_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_is_retried_with_exact_effects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_appends_to_existing_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_with_null_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_retry_then_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_row_keeps_original_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_submits_queue_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unmigrated_database_is_schema_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnects_after_backend_is_terminated, setup, teardown),
    };
    return cmocka_run_group_tests_name("submit", tests, group_setup, group_teardown);
}
