/*
 * retryq_submit_filter and the retry sets through the library, against a real
 * PostgreSQL (a migrated clone of the runner's schema) and Redis (a private queue per
 * test, a job per test). Proves: a row retried by filter changes exactly as the same row
 * retried by retryq_submit (the one shared UPDATE), and its job carries the history
 * entry's timestamp and the spec's question index; chunks run one after the other with
 * the progress callback, the limit cuts across chunks; a row another transaction holds
 * is skipped as "locked" at once (never waited for, never changed) and retried by a later
 * run; Redis down after the commit stops after the first chunk with the rows committed
 * and counted not queued (COMMITTED_NOT_QUEUED); a dry run locks and writes nothing;
 * bad filters are refused before any connection; an unknown job is NOT_FOUND; an
 * unmigrated database is SCHEMA; retryq_sets_list and retryq_set_show read the set back.
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
#include <time.h>
#include <unistd.h>

#include "retryq/retryq.h"
#include "testutil.h"

#define SPEC "{\"id\":\"spec\",\"questions\":[\"identity_basic\",\"math_basic\"]}"

typedef tu_world_t fixture_t;

/* One database, queue and client for the group; each test has a job of its own, so a
 * filter on it sees only that test's rows, and starts with an empty queue. */
static int group_setup(void **state)
{
    *state = tu_world_open("filter");
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

/* ------------------------------------------------------------------ helpers */

/* A runner-shaped failed row: the failure in output_data, original_error NULL. */
static int64_t runner_row(fixture_t *fx, const char *status, const char *question, int count, int max)
{
    return tu_runner_failure(fx, status, question, count, max);
}

static char *row_without(fixture_t *fx, int64_t id, const char *columns)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    return tu_query_value(fx->pg, "SELECT (to_jsonb(e) - $2::text[])::text FROM executions e WHERE id = $1::int", 2,
                          text, columns);
}

static int64_t count_where(fixture_t *fx, const char *sql)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, fx->job);
    return tu_query_int(fx->pg, sql, 1, text);
}

static long long queue_length(fixture_t *fx)
{
    redisReply *r = redisCommand(fx->redis, "LLEN %s", fx->queue);
    assert_non_null(r);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

static int run(fixture_t *fx, retryq_client_t *c, const retryq_bulk_options_t *opts,
               retryq_bulk_result_t *res, retryq_error_t *err)
{
    retryq_filter_t filter = {.job = fx->jobspec};
    memset(err, 0, sizeof *err);
    return retryq_submit_filter(c != NULL ? c : fx->client, &filter, opts, res, err);
}

/* ------------------------------------------------------------------ tests */

/* The row retried by filter changes exactly as its twin retried by retryq_submit. */
static void test_same_effect_as_submit(void **state)
{
    fixture_t *fx = *state;
    int64_t bulk = runner_row(fx, "timeout", "math_basic", 1, 3);
    int64_t twin = tu_insert_execution(fx->pg, fx->job, "us-east", "timeout", "mistral-7b", "math_basic", 1, 3);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, twin);
    PQclear(tu_exec(fx->pg, "UPDATE executions t SET output_data = b.output_data, completed_at = b.completed_at "
                            "FROM executions b WHERE t.id = $1::int AND b.id = $1::int - 1", 1, text));
    retryq_submit_result_t single;
    retryq_error_t err = {0};
    assert_int_equal(retryq_submit(fx->client, twin, "us-east", 1, &single, &err), RETRYQ_OK);
    retryq_submit_result_free(&single);
    redisReply *r = redisCommand(fx->redis, "DEL %s", fx->queue);
    freeReplyObject(r);
    /* the twin is 'retrying' now, so the filter takes only the other one */
    retryq_bulk_result_t res;
    assert_int_equal(run(fx, NULL, NULL, &res, &err), RETRYQ_OK);
    assert_int_equal(res.selected, 1);
    assert_int_equal(res.retried, 1);
    assert_int_equal(res.queued, 1);
    assert_true(res.set_id > 0);
    assert_int_equal(res.sample_count, 1);
    assert_int_equal(res.sample[0].execution_id, bulk);
    assert_int_equal(res.sample[0].attempt, 2);
    assert_int_equal(res.sample[0].question_index, 1);
    assert_string_equal(res.sample[0].error_code, "ROUTER_TIMEOUT");
    retryq_bulk_result_free(&res);

    static const char *const vary = "{id,created_at,last_retry_at,retry_history}";
    char *a = row_without(fx, bulk, vary), *b = row_without(fx, twin, vary);
    assert_string_equal(a, b);
    free(a);
    free(b);
    char *ha, *hb;
    snprintf(text, sizeof text, "%" PRId64, bulk);
    ha = tu_query_value(fx->pg,
                        "SELECT ((retry_history->-1) - 'timestamp' - 'last_retry_at')::text FROM executions WHERE id = $1::int",
                        1, text);
    snprintf(text, sizeof text, "%" PRId64, twin);
    hb = tu_query_value(fx->pg,
                        "SELECT ((retry_history->-1) - 'timestamp' - 'last_retry_at')::text FROM executions WHERE id = $1::int",
                        1, text);
    assert_string_equal(ha, hb);
    free(ha);
    free(hb);

    /* the job: attempt 2, the spec's index of math_basic, the history's timestamp */
    r = redisCommand(fx->redis, "RPOP %s", fx->queue);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    retryq_job_t job;
    assert_int_equal(retryq_job_decode(r->str, r->len, 0, &job, &err), RETRYQ_OK);
    freeReplyObject(r);
    assert_int_equal(job.execution_id, bulk);
    assert_int_equal(job.retry_attempt, 2);
    assert_int_equal(job.question_index, 1);
    snprintf(text, sizeof text, "%" PRId64, bulk);
    char *ts = tu_query_value(fx->pg, "SELECT retry_history->-1->>'timestamp' FROM executions WHERE id = $1::int", 1, text);
    assert_string_equal(ts, job.enqueued_at);
    free(ts);
}

typedef struct progress_log {
    int calls;
    int64_t last_selected;
    bool monotonic;
} progress_log_t;

static void on_progress(const retryq_bulk_result_t *so_far, void *privdata)
{
    progress_log_t *log = privdata;
    log->calls++;
    if (so_far->selected < log->last_selected)
        log->monotonic = false;
    log->last_selected = so_far->selected;
}

/* 25 rows in chunks of 10; a limit of 13 cuts in the second chunk; a second run takes the rest. */
static void test_chunks_progress_and_limit(void **state)
{
    fixture_t *fx = *state;
    for (int i = 0; i < 25; i++)
        runner_row(fx, i % 3 == 0 ? "error" : "failed", "identity_basic", 0, 3);
    runner_row(fx, "failed", "identity_basic", 3, 3); /* at max: after the limit, not seen */
    progress_log_t log = {.monotonic = true};
    retryq_bulk_options_t opts = {.chunk = 10, .limit = 13, .sample = 5, .progress = on_progress,
                                  .progress_data = &log, .set_name = "first", .created_by = "tester"};
    retryq_bulk_result_t res;
    retryq_error_t err;
    assert_int_equal(run(fx, NULL, &opts, &res, &err), RETRYQ_OK);
    assert_int_equal(res.retried, 13);
    assert_int_equal(res.selected, 13);
    assert_int_equal(res.chunks, 2);
    assert_int_equal(res.sample_count, 5);
    assert_int_equal(log.calls, 2);
    assert_true(log.monotonic);
    assert_int_equal(queue_length(fx), 13);
    int64_t first_set = res.set_id;
    retryq_bulk_result_free(&res);

    opts = (retryq_bulk_options_t){.chunk = 10};
    assert_int_equal(run(fx, NULL, &opts, &res, &err), RETRYQ_OK);
    assert_int_equal(res.retried, 12);
    assert_int_equal(res.skipped[RETRYQ_SKIP_MAX_RETRIES], 1);
    assert_int_equal(res.selected, 13);
    assert_true(res.set_id > first_set);
    retryq_bulk_result_free(&res);
    assert_int_equal(count_where(fx, "SELECT count(*) FROM executions WHERE job_id = $1::int AND status = 'retrying'"), 25);

    /* the sets read back: newest first, with their members open */
    retryq_set_t *sets = NULL;
    size_t n = 0;
    assert_int_equal(retryq_sets_list(fx->client, 2, &sets, &n, &err), RETRYQ_OK);
    assert_int_equal(n, 2);
    assert_int_equal(sets[1].id, first_set);
    assert_string_equal(sets[1].name, "first");
    assert_string_equal(sets[1].created_by, "tester");
    assert_non_null(strstr(sets[1].filter, fx->jobspec));
    assert_int_equal(sets[1].progress.total, 13);
    assert_int_equal(sets[1].progress.open, 13);
    assert_int_equal(sets[1].progress.eta_ms, -1);
    assert_null(sets[0].name);
    assert_int_equal(sets[0].progress.total, 12);
    retryq_sets_free(sets, n);

    retryq_set_detail_t d;
    assert_int_equal(retryq_set_show(fx->client, first_set, 4, &d, &err), RETRYQ_OK);
    assert_int_equal(d.set.progress.open, 13);
    assert_int_equal(d.open_count, 4);
    assert_int_equal(d.slice_count, 1);
    assert_string_equal(d.slices[0].model_id, "mistral-7b");
    assert_int_equal(d.slices[0].progress.total, 13);
    assert_int_equal(d.code_count, 0);
    retryq_set_detail_free(&d);
    assert_int_equal(retryq_set_show(fx->client, first_set + 1000, 0, &d, &err), RETRYQ_ERR_NOT_FOUND);
    retryq_set_detail_free(&d);
}

/* A row another transaction holds is skipped at once, unchanged, and retried later. */
static void test_locked_row_is_skipped_not_waited_for(void **state)
{
    fixture_t *fx = *state;
    int64_t held = runner_row(fx, "failed", "math_basic", 0, 3);
    int64_t free_row = runner_row(fx, "failed", "math_basic", 0, 3);
    PGconn *side = tu_pg_connect(fx->url);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, held);
    PQclear(tu_exec(side, "BEGIN", 0));
    PQclear(tu_exec(side, "SELECT 1 FROM executions WHERE id = $1::int FOR UPDATE", 1, text));
    char *before = row_without(fx, held, "{}");

    retryq_bulk_result_t res;
    retryq_error_t err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(run(fx, NULL, NULL, &res, &err), RETRYQ_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 3); /* no lock wait */
    assert_int_equal(res.retried, 1);
    assert_int_equal(res.skipped[RETRYQ_SKIP_LOCKED], 1);
    assert_int_equal(res.sample[0].execution_id, held);
    assert_string_equal(res.sample[0].verdict, "locked");
    assert_int_equal(res.sample[1].execution_id, free_row);
    retryq_bulk_result_free(&res);
    char *after = row_without(fx, held, "{}");
    assert_string_equal(after, before);
    free(before);
    free(after);

    PQclear(tu_exec(side, "COMMIT", 0));
    PQfinish(side);
    assert_int_equal(run(fx, NULL, NULL, &res, &err), RETRYQ_OK);
    assert_int_equal(res.retried, 1);
    assert_int_equal(res.sample[0].execution_id, held);
    retryq_bulk_result_free(&res);
    assert_int_equal(queue_length(fx), 2);
}

/* Redis down: the first chunk is committed, counted not queued, and nothing more. */
static void test_redis_down_stops_after_the_first_chunk(void **state)
{
    fixture_t *fx = *state;
    int fd;
    char redis_url[64];
    snprintf(redis_url, sizeof redis_url, "redis://127.0.0.1:%d", tu_closed_port(&fd));
    retryq_client_t *c = tu_client(fx->url, redis_url, fx->queue);
    for (int i = 0; i < 7; i++)
        runner_row(fx, "timeout", "identity_basic", 0, 3);
    retryq_bulk_options_t opts = {.chunk = 3};
    retryq_bulk_result_t res;
    retryq_error_t err;
    assert_int_equal(run(fx, c, &opts, &res, &err), RETRYQ_ERR_REDIS);
    assert_non_null(strstr(err.message, "orphan sweep"));
    assert_int_equal(res.retried, 3);
    assert_int_equal(res.queued, 0);
    assert_int_equal(res.not_queued, 3);
    assert_true(res.set_id > 0);
    retryq_bulk_result_free(&res);
    assert_int_equal(count_where(fx, "SELECT count(*) FROM executions WHERE job_id = $1::int AND status = 'retrying'"), 3);
    assert_int_equal(count_where(fx, "SELECT count(*) FROM executions WHERE job_id = $1::int AND status = 'timeout'"), 4);
    retryq_client_free(c);
    close(fd);
}

/* A dry run takes no lock and writes nothing: a held row is judged as it is. */
static void test_dry_run_writes_nothing(void **state)
{
    fixture_t *fx = *state;
    int64_t id = runner_row(fx, "failed", "math_basic", 0, 3);
    runner_row(fx, "error", NULL, 0, 3); /* an old batch row: no question_id */
    runner_row(fx, "failed", "math_basic", 5, 5);
    char *before = tu_query_value(fx->pg, "SELECT md5(string_agg(to_jsonb(e)::text, '' ORDER BY id)) FROM executions e", 0);
    PGconn *side = tu_pg_connect(fx->url);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    PQclear(tu_exec(side, "BEGIN", 0));
    PQclear(tu_exec(side, "SELECT 1 FROM executions WHERE id = $1::int FOR UPDATE", 1, text));
    retryq_bulk_options_t opts = {.dry_run = true};
    retryq_bulk_result_t res;
    retryq_error_t err;
    assert_int_equal(run(fx, NULL, &opts, &res, &err), RETRYQ_OK);
    assert_true(res.dry_run);
    assert_int_equal(res.selected, 3);
    assert_int_equal(res.retried, 1);
    assert_int_equal(res.skipped[RETRYQ_SKIP_NO_QUESTION], 1);
    assert_int_equal(res.skipped[RETRYQ_SKIP_MAX_RETRIES], 1);
    assert_int_equal(res.set_id, 0);
    assert_int_equal(res.sample[1].question_index, -1);
    retryq_bulk_result_free(&res);
    PQclear(tu_exec(side, "ROLLBACK", 0));
    PQfinish(side);
    char *after = tu_query_value(fx->pg, "SELECT md5(string_agg(to_jsonb(e)::text, '' ORDER BY id)) FROM executions e", 0);
    assert_string_equal(after, before);
    free(before);
    free(after);
    assert_int_equal(queue_length(fx), 0);
    assert_int_equal(tu_query_int(fx->pg, "SELECT count(*) FROM retryq_sets WHERE filter->>'job' = $1", 1, fx->jobspec), 0);
}

/* Bad filters are refused before any connection (the database URL leads nowhere). */
static void test_bad_filters_refused_first(void **state)
{
    fixture_t *fx = *state;
    retryq_client_t *c = tu_client("postgresql://retryq@127.0.0.1:1/none", "redis://127.0.0.1:1", fx->queue);
    retryq_bulk_result_t res;
    retryq_error_t err = {0};
    retryq_filter_t none = {.model = "mistral-7b"};
    assert_int_equal(retryq_submit_filter(c, &none, NULL, &res, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "since"));
    retryq_filter_t statuses = {.job = "x", .statuses = 0x8};
    assert_int_equal(retryq_submit_filter(c, &statuses, NULL, &res, &err), RETRYQ_ERR_INVALID);
    retryq_filter_t backwards = {.since_ms = 2000, .until_ms = 1000};
    assert_int_equal(retryq_submit_filter(c, &backwards, NULL, &res, &err), RETRYQ_ERR_INVALID);
    retryq_filter_t fine = {.job = "x"};
    retryq_bulk_options_t big = {.chunk = 5001};
    assert_int_equal(retryq_submit_filter(c, &fine, &big, &res, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_submit_filter(c, &fine, NULL, NULL, &err), RETRYQ_ERR_INVALID);
    /* valid, so it tries the database */
    assert_int_equal(retryq_submit_filter(c, &fine, NULL, &res, &err), RETRYQ_ERR_DATABASE);
    retryq_bulk_result_free(&res);
    retryq_client_free(c);

    int64_t t = 0;
    assert_int_equal(retryq_parse_time("1h30m", 10000000, &t, &err), RETRYQ_OK);
    assert_int_equal(t, 10000000 - 5400000);
    assert_int_equal(retryq_parse_time("2026-11-29T08:00:00Z", 0, &t, &err), RETRYQ_OK);
    assert_int_equal(t, INT64_C(1795939200000));
    assert_int_equal(retryq_parse_time("soon", 0, &t, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_parse_time("5x", 0, &t, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(retryq_skip_reason_name(RETRYQ_SKIP_LOCKED), "locked");
    assert_string_equal(retryq_skip_reason_name(99), "unknown");
}

static void test_unknown_job_and_unmigrated_database(void **state)
{
    fixture_t *fx = *state;
    retryq_bulk_result_t res;
    retryq_error_t err = {0};
    retryq_filter_t unknown = {.job = "no-such-job"};
    assert_int_equal(retryq_submit_filter(fx->client, &unknown, NULL, &res, &err), RETRYQ_ERR_NOT_FOUND);
    assert_non_null(strstr(err.message, "no-such-job"));
    retryq_bulk_result_free(&res);

    char *url = tu_create_database(false);
    retryq_client_t *c = tu_client(url, tu_redis_url(), fx->queue);
    retryq_filter_t any = {.since_ms = 1000};
    assert_int_equal(retryq_submit_filter(c, &any, NULL, &res, &err), RETRYQ_ERR_SCHEMA);
    assert_non_null(strstr(err.message, "retryq migrate"));
    retryq_bulk_result_free(&res);
    retryq_set_t *sets = NULL;
    size_t n = 0;
    assert_int_equal(retryq_sets_list(c, 0, &sets, &n, &err), RETRYQ_ERR_SCHEMA);
    assert_non_null(strstr(err.message, "retryq migrate"));
    retryq_client_free(c);
    tu_drop_database(url);
    free(url);
}

int main(void)
{
    if (!tu_have_services()) {
        fprintf(stderr, "test_submit_filter: RETRYQ_TEST_* is not set: run it through ctest\n");
        return 1;
    }
    if (getenv("RETRYQ_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("RETRYQ_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_effect_as_submit, setup, NULL),
        cmocka_unit_test_setup_teardown(test_chunks_progress_and_limit, setup, NULL),
        cmocka_unit_test_setup_teardown(test_locked_row_is_skipped_not_waited_for, setup, NULL),
        cmocka_unit_test_setup_teardown(test_redis_down_stops_after_the_first_chunk, setup, NULL),
        cmocka_unit_test_setup_teardown(test_dry_run_writes_nothing, setup, NULL),
        cmocka_unit_test_setup_teardown(test_bad_filters_refused_first, setup, NULL),
        cmocka_unit_test_setup_teardown(test_unknown_job_and_unmigrated_database, setup, NULL),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
