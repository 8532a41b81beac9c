/*
 * retryq_cancel and retryq_set_cancel through the library, against a real PostgreSQL (a
 * migrated clone of the runner's schema) and Redis (a private queue). A worker is played
 * by hand: an entry in {Q}:workers and a job moved into its processing list. Proves: a
 * runner-shaped row (failure in output_data, original_error NULL, its own max_retries,
 * an earlier retry in its history) cancelled before any worker took its job is restored
 * exactly — status, retry_count, last_retry_at, output_data, original_error and every
 * other column as before the retry, history = before + the retrying entry + one
 * cancelled entry — and a tombstone is left for the pop; it can be retried again and
 * gets the same attempt number; a runner-made retry falls back on the history (the exact
 * last_retry_at that retryq's own earlier retry recorded; a history timestamp that is not
 * one does not make the cancel fail); a job in a worker's processing list is "running" and
 * nothing changes; a worker registered after the caller read the list is still seen (the
 * script's re-check); a row not open is "finished"; unknown execution and set are
 * NOT_FOUND; a set cancel sorts its members into cancelled / running / finished, takes
 * back the tombstone of a member found finished, and the set's progress counts the
 * cancelled ones; a failed restore (the row locked elsewhere past the statement timeout)
 * takes its tombstones back and changes nothing; the Lua identity scanner the pop and the
 * cancel share reads ids above 2^53 exactly, string ids, and skips decoys, and the
 * delivery bump built on the same walk keeps every other byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "retryq/retryq.h"
#include "testutil.h"

#define SPEC "{\"id\":\"spec\",\"questions\":[\"identity_basic\",\"math_basic\"]}"

typedef tu_world_t fixture_t;

#define KEYS (retryq_client_keys(fx->client))

static int group_setup(void **state)
{
    *state = tu_world_open("cancel");
    return 0;
}

static int group_teardown(void **state)
{
    tu_world_close(*state);
    return 0;
}

static int setup(void **state)
{
    tu_world_job(*state, SPEC);
    return 0;
}

/* A runner-shaped row: failed by the runner (failure in output_data, original_error NULL)
 * after `count` earlier retries, the last of them at a known time. */
static int64_t runner_row(fixture_t *fx, const char *status, int count, int max)
{
    int64_t id = tu_runner_failure(fx, status, "math_basic", count, max);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    PQclear(
        tu_exec(fx->pg,
                "UPDATE executions SET "
                "last_retry_at = CASE WHEN retry_count > 0 THEN '2026-11-30 10:11:12.345678+00'::timestamptz END, "
                "retry_history = CASE WHEN retry_count > 0 THEN '[{\"attempt\": 1, \"timestamp\": "
                "\"2026-11-30T10:11:12Z\", \"status\": \"retrying\"}, {\"attempt\": 1, \"timestamp\": "
                "\"2026-11-30T10:12:00Z\", \"status\": \"timeout\", \"error\": \"deadline\"}]'::jsonb "
                "ELSE '[]'::jsonb END WHERE id = $1::int",
                1, text));
    return id;
}

static char *row_text(fixture_t *fx, int64_t id, const char *sql)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    return tu_query_value(fx->pg, sql, 1, text);
}

/* Every column but retry_history, as JSON. */
static char *row_rest(fixture_t *fx, int64_t id)
{
    return row_text(fx, id,
                    "SELECT (to_jsonb(e) - 'retry_history')::text FROM executions e WHERE id = $1::int");
}

static bool tombstone(fixture_t *fx, int64_t id, int attempt)
{
    redisReply *r = redisCommand(fx->redis, "ZSCORE %s %" PRId64 ":%d", KEYS->cancelled, id, attempt);
    assert_non_null(r);
    bool found = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return found;
}

static long long zcard(fixture_t *fx)
{
    redisReply *r = redisCommand(fx->redis, "ZCARD %s", KEYS->cancelled);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* Plays a worker: registers `worker` and moves the oldest job into its list. */
static void worker_takes(fixture_t *fx, const char *worker)
{
    redisReply *r = redisCommand(fx->redis, "ZADD %s 1 %s", KEYS->workers, worker);
    freeReplyObject(r);
    r = redisCommand(fx->redis, "RPOPLPUSH %s %s%s", fx->queue, KEYS->processing_prefix, worker);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
}

static void submit(fixture_t *fx, int64_t id, int want_attempt)
{
    retryq_submit_result_t res;
    retryq_error_t err = {0};
    assert_int_equal(retryq_submit(fx->client, id, "us-east", 1, &res, &err), RETRYQ_OK);
    assert_int_equal(res.attempt, want_attempt);
    retryq_submit_result_free(&res);
}

/* ------------------------------------------------------------------ tests */

static void test_runner_row_restored_exactly(void **state)
{
    fixture_t *fx = *state;
    int64_t id = runner_row(fx, "timeout", 1, 5);
    char *before = row_rest(fx, id);
    char *history = row_text(fx, id, "SELECT retry_history::text FROM executions WHERE id = $1::int");
    submit(fx, id, 2);
    char *retrying = row_text(fx, id,
                              "SELECT (retry_history->-1)::text FROM executions WHERE id = $1::int");
    char *original = row_text(fx, id, "SELECT original_error FROM executions WHERE id = $1::int");
    assert_non_null(original); /* the retry filled it... */

    retryq_cancel_result_t res;
    retryq_error_t err = {0};
    assert_int_equal(retryq_cancel(fx->client, id, "us-east", &res, &err), RETRYQ_OK);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.cancelled, 1);
    assert_int_equal(res.running + res.finished, 0);
    assert_int_equal(res.items[0].outcome, RETRYQ_CANCEL_CANCELLED);
    assert_int_equal(res.items[0].attempt, 2);
    assert_string_equal(res.items[0].status, "timeout");
    retryq_cancel_result_free(&res);

    char *after = row_rest(fx, id); /* ...and the cancel empties it again, with the rest */
    assert_string_equal(after, before);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    assert_int_equal(tu_query_int(fx->pg,
                                  "SELECT count(*) FROM executions WHERE id = $1::int AND "
                                  "retry_history = $2::jsonb || jsonb_build_array($3::jsonb) || "
                                  "jsonb_build_array(jsonb_build_object('attempt', 2, 'status', 'cancelled', "
                                  "'timestamp', retry_history->-1->'timestamp'))",
                                  3, text, history, retrying),
                     1);
    assert_true(tombstone(fx, id, 2));

    /* retried again: the attempt number is the same */
    submit(fx, id, 2);
    char *status = row_text(fx, id,
                            "SELECT status || ':' || retry_count FROM executions WHERE id = $1::int");
    assert_string_equal(status, "retrying:2");
    free(before);
    free(history);
    free(retrying);
    free(original);
    free(after);
    free(status);
}

/* A row retried by the runner itself, whose entry has no previous_status: the previous
 * outcome's status, else 'failed'; last_retry_at from the earlier retrying entry. */
static void test_runner_made_retry_falls_back(void **state)
{
    fixture_t *fx = *state;
    int64_t first = runner_row(fx, "failed", 0, 3), second = runner_row(fx, "timeout", 1, 3);
    char text[24];
    PQclear(tu_exec(fx->pg,
                    "UPDATE executions SET status = 'retrying', retry_count = retry_count + 1, "
                    "last_retry_at = now(), retry_history = retry_history || jsonb_build_array("
                    "jsonb_build_object('attempt', retry_count + 1, 'timestamp', '2026-12-01T00:00:00Z', "
                    "'status', 'retrying')) WHERE job_id = $1::int",
                    1, (snprintf(text, sizeof text, "%" PRId64, fx->job), text)));
    retryq_cancel_result_t res;
    retryq_error_t err = {0};
    assert_int_equal(retryq_cancel(fx->client, first, "us-east", &res, &err), RETRYQ_OK);
    assert_string_equal(res.items[0].status, "failed");
    retryq_cancel_result_free(&res);
    assert_int_equal(retryq_cancel(fx->client, second, "us-east", &res, &err), RETRYQ_OK);
    assert_string_equal(res.items[0].status, "timeout");
    retryq_cancel_result_free(&res);
    char *a = row_text(fx, first,
                       "SELECT status || ':' || retry_count || ':' || coalesce(last_retry_at::text, 'null') "
                       "FROM executions WHERE id = $1::int");
    char *b =
        row_text(fx, second,
                 "SELECT status || ':' || retry_count || ':' || "
                 "(last_retry_at = '2026-11-30T10:11:12Z'::timestamptz) FROM executions WHERE id = $1::int");
    assert_string_equal(a, "failed:0:null");
    assert_string_equal(b, "timeout:1:true");
    free(a);
    free(b);
}

/* The runner's API retrying one row itself: retry_count + 1, last_retry_at = now(), status
 * 'retrying' and its own {attempt, timestamp, status} entry (nothing for a restore). */
static void runner_retries(fixture_t *fx, int64_t id)
{
    char *done = row_text(fx, id,
                          "UPDATE executions SET status = 'retrying', retry_count = retry_count + 1, "
                          "last_retry_at = now(), retry_history = retry_history || jsonb_build_array("
                          "jsonb_build_object('attempt', retry_count + 1, 'timestamp', "
                          "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                          "'status', 'retrying')) WHERE id = $1::int RETURNING 'done'");
    assert_non_null(done);
    free(done);
}

/* Cancels the open retry of `id`, which must come back cancelled at `attempt`, restored
 * to `status`. */
static void cancel_one(fixture_t *fx, int64_t id, int attempt, const char *status)
{
    retryq_cancel_result_t res;
    retryq_error_t err = {0};
    int rc = retryq_cancel(fx->client, id, "us-east", &res, &err);
    if (rc != RETRYQ_OK)
        fail_msg("retryq_cancel: %s (%s)", err.message, retryq_code_name(rc));
    assert_int_equal(res.count, 1);
    assert_int_equal(res.items[0].outcome, RETRYQ_CANCEL_CANCELLED);
    assert_int_equal(res.items[0].attempt, attempt);
    assert_string_equal(res.items[0].status, status);
    retryq_cancel_result_free(&res);
}

/* Retried by retryq (attempt 1 ran and timed out, recorded as the worker records it), then
 * by the runner's API (attempt 2): the cancel of attempt 2 puts the row back exactly as it
 * was before it — last_retry_at included, which attempt 1's retry set with the database's
 * clock (not the client-clock timestamp of its history entry). */
static void test_runner_retry_after_retryq_retry(void **state)
{
    fixture_t *fx = *state;
    int64_t id = runner_row(fx, "failed", 0, 3);
    submit(fx, id, 1);
    char *recorded =
        row_text(fx, id,
                 "UPDATE executions SET status = 'timeout', completed_at = now(), "
                 "output_data = '{\"error\": \"router timeout after 60000 ms\"}', "
                 "original_error = coalesce(original_error, output_data->>'error'), "
                 "retry_history = retry_history || '[{\"attempt\": 1, \"status\": \"timeout\", "
                 "\"timestamp\": \"2026-12-01T00:01:00Z\"}]'::jsonb "
                 "WHERE id = $1::int AND status = 'retrying' AND retry_count = 1 RETURNING 'done'");
    assert_non_null(recorded);
    char *before = row_rest(fx, id);
    runner_retries(fx, id);
    cancel_one(fx, id, 2, "timeout");
    char *after = row_rest(fx, id);
    assert_string_equal(after, before);
    free(recorded);
    free(before);
    free(after);
}

/* A runner-made retry whose earlier retrying entry has a timestamp that is not one (a
 * foreign writer's, here ""): the cancel still restores the row (last_retry_at left as
 * it is) instead of failing the whole restore, which would leave the execution, and
 * every other member of its chunk, impossible to cancel. */
static void test_bad_history_timestamp_does_not_block_the_cancel(void **state)
{
    fixture_t *fx = *state;
    int64_t id = runner_row(fx, "timeout", 1, 3);
    char *bad = row_text(fx, id,
                         "UPDATE executions SET retry_history = jsonb_set(retry_history, '{0,timestamp}', "
                         "'\"\"') WHERE id = $1::int RETURNING retry_history->0->>'status'");
    assert_string_equal(bad, "retrying");
    runner_retries(fx, id);
    char *last = row_text(fx, id, "SELECT last_retry_at::text FROM executions WHERE id = $1::int");
    cancel_one(fx, id, 2, "timeout");
    char *row = row_text(fx, id,
                         "SELECT status || ':' || retry_count || ':' || last_retry_at::text "
                         "FROM executions WHERE id = $1::int");
    char want[96];
    snprintf(want, sizeof want, "timeout:1:%s", last);
    assert_string_equal(row, want);
    free(bad);
    free(last);
    free(row);
}

static void test_job_taken_by_a_worker_runs(void **state)
{
    fixture_t *fx = *state;
    int64_t id = runner_row(fx, "failed", 0, 3);
    submit(fx, id, 1);
    worker_takes(fx, "w-1");
    char *before = row_text(fx, id, "SELECT to_jsonb(e)::text FROM executions e WHERE id = $1::int");
    retryq_cancel_result_t res;
    retryq_error_t err = {0};
    assert_int_equal(retryq_cancel(fx->client, id, "us-east", &res, &err), RETRYQ_OK);
    assert_int_equal(res.running, 1);
    assert_int_equal(res.items[0].outcome, RETRYQ_CANCEL_RUNNING);
    retryq_cancel_result_free(&res);
    char *after = row_text(fx, id, "SELECT to_jsonb(e)::text FROM executions e WHERE id = $1::int");
    assert_string_equal(after, before);
    assert_false(tombstone(fx, id, 1));
    free(before);
    free(after);
}

static void test_not_open_and_not_found(void **state)
{
    fixture_t *fx = *state;
    int64_t id = runner_row(fx, "failed", 0, 3);
    retryq_cancel_result_t res;
    retryq_error_t err = {0};
    assert_int_equal(retryq_cancel(fx->client, id, "us-east", &res, &err), RETRYQ_OK);
    assert_int_equal(res.finished, 1);
    assert_string_equal(res.items[0].status, "failed");
    retryq_cancel_result_free(&res);
    assert_int_equal(retryq_cancel(fx->client, id, "eu-west", &res, &err), RETRYQ_ERR_NOT_FOUND);
    retryq_cancel_result_free(&res);
    assert_int_equal(retryq_set_cancel(fx->client, 987654321, &res, &err), RETRYQ_ERR_NOT_FOUND);
    retryq_cancel_result_free(&res);
    assert_int_equal(retryq_cancel(fx->client, 0, "us-east", &res, &err), RETRYQ_ERR_INVALID);
    retryq_cancel_result_free(&res);
    assert_int_equal(zcard(fx), 0);
}

/* The result is defined after every failure, a missing argument's too, so that freeing
 * it, as retryq.h asks, is safe (it held whatever the caller's memory held before). */
static void test_result_defined_after_a_missing_argument(void **state)
{
    fixture_t *fx = *state;
    retryq_cancel_result_t res;
    retryq_error_t err = {0};
    memset(&res, 0xab, sizeof res);
    assert_int_equal(retryq_cancel(NULL, 1, "us-east", &res, &err), RETRYQ_ERR_INVALID);
    assert_null(res.items);
    assert_int_equal(res.count, 0);
    retryq_cancel_result_free(&res);
    memset(&res, 0xab, sizeof res);
    assert_int_equal(retryq_cancel(fx->client, 1, NULL, &res, &err), RETRYQ_ERR_INVALID);
    assert_null(res.items);
    retryq_cancel_result_free(&res);
    memset(&res, 0xab, sizeof res);
    assert_int_equal(retryq_set_cancel(NULL, 1, &res, &err), RETRYQ_ERR_INVALID);
    assert_null(res.items);
    assert_int_equal(res.count, 0);
    retryq_cancel_result_free(&res);
}

static void test_set_cancel(void **state)
{
    fixture_t *fx = *state;
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = runner_row(fx, i % 2 ? "timeout" : "failed", 0, 2 + i);
    retryq_filter_t filter = {.job = fx->jobspec};
    retryq_bulk_result_t bulk;
    retryq_error_t err = {0};
    assert_int_equal(retryq_submit_filter(fx->client, &filter, NULL, &bulk, &err), RETRYQ_OK);
    assert_int_equal(bulk.queued, 5);
    int64_t set = bulk.set_id;
    retryq_bulk_result_free(&bulk);
    worker_takes(fx, "w-2"); /* the oldest job: ids[0] */
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, ids[4]);
    /* ids[4] finished (its job still queued: a worker would find it stale) */
    PQclear(tu_exec(fx->pg, "UPDATE executions SET status = 'completed' WHERE id = $1::int", 1, text));

    retryq_cancel_result_t res;
    assert_int_equal(retryq_set_cancel(fx->client, set, &res, &err), RETRYQ_OK);
    assert_int_equal(res.count, 5);
    assert_int_equal(res.cancelled, 3);
    assert_int_equal(res.running, 1);
    assert_int_equal(res.finished, 1);
    for (size_t i = 0; i < res.count; i++) {
        const retryq_cancel_item_t *it = &res.items[i];
        if (it->execution_id == ids[0])
            assert_int_equal(it->outcome, RETRYQ_CANCEL_RUNNING);
        else if (it->execution_id == ids[4])
            assert_int_equal(it->outcome, RETRYQ_CANCEL_FINISHED);
        else
            assert_int_equal(it->outcome, RETRYQ_CANCEL_CANCELLED);
    }
    retryq_cancel_result_free(&res);
    assert_int_equal(zcard(fx), 3);
    assert_false(tombstone(fx, ids[4], 1));
    snprintf(text, sizeof text, "%" PRId64, fx->job);
    assert_int_equal(tu_query_int(fx->pg,
                                  "SELECT count(*) FROM executions WHERE job_id = $1::int AND "
                                  "status IN ('failed', 'timeout') AND retry_count = 0",
                                  1, text),
                     3);

    retryq_set_detail_t d;
    assert_int_equal(retryq_set_show(fx->client, set, 0, &d, &err), RETRYQ_OK);
    assert_int_equal(d.set.progress.cancelled, 3);
    assert_int_equal(d.set.progress.open, 1);
    assert_int_equal(d.set.progress.completed, 1);
    assert_int_equal(d.open_count, 1);
    retryq_set_detail_free(&d);

    /* a second cancel: nothing open is left but the running one */
    assert_int_equal(retryq_set_cancel(fx->client, set, &res, &err), RETRYQ_OK);
    assert_int_equal(res.cancelled, 0);
    assert_int_equal(res.running, 1);
    assert_int_equal(res.finished, 4);
    retryq_cancel_result_free(&res);
}

/* The row is locked elsewhere past the statement timeout: the restore fails, the
 * tombstone is taken back, the row is still retrying. */
static void test_failed_restore_takes_tombstones_back(void **state)
{
    fixture_t *fx = *state;
    int64_t id = runner_row(fx, "failed", 0, 3);
    submit(fx, id, 1);
    retryq_options_t opts = {.database_url = fx->url,
                             .redis_url = tu_redis_url(),
                             .queue = fx->queue,
                             .connect_timeout_ms = 2000,
                             .command_timeout_ms = 300};
    retryq_error_t err = {0};
    retryq_client_t *c = retryq_client_new(&opts, &err);
    assert_non_null(c);
    PGconn *other = tu_pg_connect(fx->url);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    PQclear(tu_exec(other, "BEGIN", 0));
    PQclear(tu_exec(other, "SELECT 1 FROM executions WHERE id = $1::int FOR UPDATE", 1, text));
    retryq_cancel_result_t res;
    assert_int_equal(retryq_cancel(c, id, "us-east", &res, &err), RETRYQ_ERR_DATABASE);
    retryq_cancel_result_free(&res);
    PQclear(tu_exec(other, "ROLLBACK", 0));
    PQfinish(other);
    retryq_client_free(c);
    assert_false(tombstone(fx, id, 1));
    char *status = row_text(fx, id,
                            "SELECT status || ':' || retry_count FROM executions WHERE id = $1::int");
    assert_string_equal(status, "retrying:1");
    free(status);
}

static char *lua_call(fixture_t *fx, const char *script, const char *job)
{
    redisReply *r = redisCommand(fx->redis, "EVAL %s 0 %s", script, job);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    char *s = strdup(r->str);
    freeReplyObject(r);
    return s;
}

static void test_lua_scanners(void **state)
{
    fixture_t *fx = *state;
    static const char *const cases[][2] = {
        {"{\"execution_id\":9007199254740993,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":2}",
         "9007199254740993:2"},
        {"{\"execution_id\":\"9223372036854775807\",\"retry_attempt\":3}", "9223372036854775807:3"},
        {" { \"nested\": {\"execution_id\": 1, \"retry_attempt\": 9}, \"note\": \"\\\"execution_id\\\":2\","
         " \"execution_id\" : 0042 , \"retry_attempt\" : 1 } ",
         "42:1"},
        {"{\"a\":[{\"retry_attempt\":5}],\"retry_attempt\":4,\"execution_id\":7}", "7:4"},
        {"{\"execution_id\":7}", ""},
        {"[1,2]", ""},
        {"not json", ""},
    };
    static const char ident[] = RQ_LUA_IDENTITY "return ident(ARGV[1]) or ''\n";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = lua_call(fx, ident, cases[i][0]);
        assert_string_equal(got, cases[i][1]);
        free(got);
    }
    /* the delivery bump of lease recovery walks the same way */
    static const char *const bumps[][2] = {
        {"{\"execution_id\":9007199254740993,\"retry_attempt\":1}",
         "{\"execution_id\":9007199254740993,\"retry_attempt\":1,\"delivery\":1}"},
        {"{\"a\":\"x\",\"delivery\" : 4}", "{\"a\":\"x\",\"delivery\" : 5}"},
        {"{\"meta\":{\"delivery\":0,\"x\":\"}\"},\"retry_attempt\":1} \n",
         "{\"meta\":{\"delivery\":0,\"x\":\"}\"},\"retry_attempt\":1,\"delivery\":1} \n"},
        {"{}", "{\"delivery\":1}"},
        {"{\"delivery\":\"x\"}", "{\"delivery\":\"x\"}"},
        {"not json", "not json"},
    };
    static const char bump[] = RQ_LUA_BUMP "return bump(ARGV[1])\n";
    for (size_t i = 0; i < sizeof bumps / sizeof bumps[0]; i++) {
        char *got = lua_call(fx, bump, bumps[i][0]);
        assert_string_equal(got, bumps[i][1]);
        free(got);
    }
}

/* The identity read from the canonical prefix (RQ_LUA_CANONICAL: jobs as libretryq and the
 * Go package write them) equals the walk's, and the decoder's where it accepts the text;
 * the texts that start like a canonical job but must be walked (the key again after the
 * prefix, a nested value, an escape) are walked. */
static void test_lua_identity_prefix_agrees_with_the_walk(void **state)
{
    fixture_t *fx = *state;
    static const char *const cases[] = {
        "{\"execution_id\":12,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":3}",
        "{\"execution_id\":12,\"region\":\"us-east\",\"question_index\":2,\"retry_attempt\":3,"
        "\"enqueued_at\":\"2026-12-03T18:00:00.000Z\",\"id\":\"a1\",\"delivery\":2}",
        "{\"execution_id\":9223372036854775807,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":1000}",
        "{\"execution_id\":12,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":3,\"retry_attempt\":4}",
        "{\"execution_id\":12,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":3,\"execution_id\":5}",
        "{\"execution_id\":12,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":3,"
        "\"x\":{\"retry_attempt\":9}}",
        "{\"execution_id\":12,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":3,\"x\":[9]}",
        "{\"execution_id\":12,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":3,"
        "\"x\\u0022\":\"\\\"retry_attempt\\\":9\"}",
        "{\"execution_id\":12,\"region\":\"e\\\"u\",\"question_index\":0,\"retry_attempt\":3}",
        "{\"execution_id\":012,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":03}",
        "{\"execution_id\":\"12\",\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":3}",
        "{\"execution_id\":12,\"region\":\"eu\",\"question_index\":0,\"retry_attempt\":3",
    };
    static const char both[] = RQ_LUA_IDENTITY
        "local e, a = ident_walk(ARGV[1])\n"
        "local w = e and ((string.gsub(e, '^0+(%d)', '%1')) .. ':' .. "
        "(string.gsub(a, '^0+(%d)', '%1'))) or ''\n"
        "return (ident(ARGV[1]) or '') .. ' ' .. w\n";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = lua_call(fx, both, cases[i]);
        const char *sp = strchr(got, ' ');
        assert_non_null(sp);
        char fast[64];
        snprintf(fast, sizeof fast, "%.*s", (int)(sp - got), got);
        assert_string_equal(fast, sp + 1);
        retryq_job_t job;
        retryq_error_t err = {0};
        if (retryq_job_decode(cases[i], strlen(cases[i]), 1000, &job, &err) == RETRYQ_OK) {
            char want[64];
            snprintf(want, sizeof want, "%" PRId64 ":%" PRId32, job.execution_id, job.retry_attempt);
            assert_string_equal(fast, want);
        }
        free(got);
    }
    /* The first three are read from the prefix (the pattern matches them). */
    static const char matches[] = "return string.find(ARGV[1], '" RQ_LUA_CANONICAL
                                  "') and 'y' or 'n'\n";
    for (size_t i = 0; i < 3; i++) {
        char *got = lua_call(fx, matches, cases[i]);
        assert_string_equal(got, "y");
        free(got);
    }
}

/* Whitespace as the C decoder reads it (any byte <= 0x20 between tokens, cJSON's rule),
 * not JSON's four only: a payload the worker takes has the same identity in the scripts
 * (else a cancel does not see it held, and the pop does not drop it), and the delivery
 * bump of lease recovery raises its delivery (else a job that keeps killing workers is
 * never counted toward the dead list). */
static void test_lua_reads_whitespace_as_the_decoder(void **state)
{
    fixture_t *fx = *state;
    static const char job[] = "\f{\"execution_id\":\v7,\x01\"region\":\"us-east\",\"question_index\":0,"
                              "\"retry_attempt\"\x1f:\f"
                              "2,\"delivery\":\x0b"
                              "1\x1e}\v";
    retryq_job_t decoded;
    retryq_error_t err = {0};
    assert_int_equal(retryq_job_decode(job, strlen(job), 0, &decoded, &err), RETRYQ_OK);
    assert_int_equal(decoded.execution_id, 7);
    assert_int_equal(decoded.retry_attempt, 2);

    static const char ident[] = RQ_LUA_IDENTITY "return ident(ARGV[1]) or ''\n";
    char *id = lua_call(fx, ident, job);
    assert_string_equal(id, "7:2");
    static const char bump[] = RQ_LUA_BUMP "return bump(ARGV[1])\n";
    char *bumped = lua_call(fx, bump, job);
    assert_int_equal(retryq_job_decode(bumped, strlen(bumped), 0, &decoded, &err), RETRYQ_OK);
    assert_int_equal(decoded.delivery, 2);
    char *empty = lua_call(fx, bump, "{\x01}");
    assert_string_equal(empty, "{\x01\"delivery\":1}");
    free(id);
    free(bumped);
    free(empty);
}

int main(void)
{
    if (!tu_have_services())
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_runner_row_restored_exactly, setup, NULL),
        cmocka_unit_test_setup_teardown(test_runner_made_retry_falls_back, setup, NULL),
        cmocka_unit_test_setup_teardown(test_runner_retry_after_retryq_retry, setup, NULL),
        cmocka_unit_test_setup_teardown(test_bad_history_timestamp_does_not_block_the_cancel, setup,
                                        NULL),
        cmocka_unit_test_setup_teardown(test_job_taken_by_a_worker_runs, setup, NULL),
        cmocka_unit_test_setup_teardown(test_not_open_and_not_found, setup, NULL),
        cmocka_unit_test_setup_teardown(test_result_defined_after_a_missing_argument, setup, NULL),
        cmocka_unit_test_setup_teardown(test_set_cancel, setup, NULL),
        cmocka_unit_test_setup_teardown(test_failed_restore_takes_tombstones_back, setup, NULL),
        cmocka_unit_test_setup_teardown(test_lua_scanners, setup, NULL),
        cmocka_unit_test_setup_teardown(test_lua_reads_whitespace_as_the_decoder, setup, NULL),
        cmocka_unit_test_setup_teardown(test_lua_identity_prefix_agrees_with_the_walk, setup, NULL),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
