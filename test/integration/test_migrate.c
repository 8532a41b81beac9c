/*
 * retryq's own migrations (sql/migrations/0012, 0013 and 0014, embedded in libretryq) through
 * retryq_migrate / retryq_migrate_version, against databases cloned from the runner's
 * schema (services.sh's retryq_template: the runner up to its 0010, which refuses
 * 'retrying'). Proves: the template refuses the retry statuses until migrated; migrate
 * applies 0012, 0013 and 0014, records version 14 clean in retryq_schema_migrations and leaves
 * the runner's schema_migrations alone; a second run applies nothing; going down to 12
 * removes only the retry sets and functions; the SQL files
 * themselves are safe to run twice; the new statuses become legal (and only those);
 * down with live rows in 'retrying'/'timeout'/'error' succeeds and maps them as
 * docs/schema.md says, changing nothing else; up again works; a dirty record, an
 * unknown recorded version and a missing runner 0010 are refused with clear messages and
 * change nothing; two concurrent migrations serialise (one applies, the other finds the
 * work done); a bad target and an unreachable database are reported.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrations.h"
#include "retryq/retryq.h"
#include "testutil.h"

#define SETS 13   /* retry sets */
#define LATEST 14 /* the newest embedded migration (cancel) */
#define STEPS 3   /* up migrations from nothing to LATEST: 0012, 0013, 0014 */
#define WORKER 12 /* 0012_retry_worker, the status check and the sweep index */

typedef struct fixture {
    char *url;
    PGconn *pg;
    retryq_client_t *client;
} fixture_t;

static retryq_client_t *client_for(const char *url)
{
    retryq_options_t opts = {.database_url = url, .redis_url = tu_redis_url()};
    retryq_error_t err = {0};
    retryq_client_t *c = retryq_client_new(&opts, &err);
    if (c == NULL)
        fail_msg("retryq_client_new: %s", err.message);
    return c;
}

/* Every test starts from an unmigrated clone of the runner's schema. */
static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->url = tu_create_database(false);
    fx->pg = tu_pg_connect(fx->url);
    fx->client = client_for(fx->url);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    retryq_client_free(fx->client);
    PQfinish(fx->pg);
    tu_drop_database(fx->url);
    free(fx->url);
    free(fx);
    return 0;
}

static int migrate(fixture_t *fx, int64_t target, int *applied, retryq_error_t *err)
{
    return retryq_migrate(fx->client, target, applied, err);
}

static void migrate_ok(fixture_t *fx, int64_t target, int expect_applied)
{
    retryq_error_t err = {0};
    int applied = -1;
    int rc = migrate(fx, target, &applied, &err);
    if (rc != RETRYQ_OK)
        fail_msg("retryq_migrate(%lld): %s (%s)", (long long)target, err.message, retryq_code_name(rc));
    assert_int_equal(applied, expect_applied);
}

static void expect_version(fixture_t *fx, int64_t version, bool dirty)
{
    retryq_error_t err = {0};
    int64_t v = -1;
    bool d = !dirty;
    int rc = retryq_migrate_version(fx->client, &v, &d, &err);
    if (rc != RETRYQ_OK)
        fail_msg("retryq_migrate_version: %s", err.message);
    assert_int_equal(v, version);
    assert_int_equal(d, dirty);
}

/* The SQLSTATE of an INSERT of an execution with `status` ("" when it succeeded). */
static void insert_state(fixture_t *fx, const char *status, char *state, size_t cap)
{
    int64_t job = tu_insert_job(fx->pg, "{\"id\":\"spec\"}");
    char job_text[24];
    snprintf(job_text, sizeof job_text, "%lld", (long long)job);
    const char *params[] = {job_text, status};
    PGresult *res = PQexecParams(fx->pg,
                                 "INSERT INTO executions (job_id, provider_id, region, status) "
                                 "VALUES ($1::int, 'p', 'us-east', $2)",
                                 2, NULL, params, NULL, NULL, 0);
    const char *s = PQresultStatus(res) == PGRES_COMMAND_OK ? "" : PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(state, cap, "%s", s != NULL ? s : "?");
    PQclear(res);
}

static void assert_status_legal(fixture_t *fx, const char *status, bool legal)
{
    char state[8];
    insert_state(fx, status, state, sizeof state);
    if (legal && state[0] != '\0')
        fail_msg("status '%s' refused (SQLSTATE %s)", status, state);
    if (!legal)
        assert_string_equal(state, "23514");
}

static int64_t count_of(fixture_t *fx, const char *sql)
{
    return tu_query_int(fx->pg, sql, 0);
}

static bool sweep_index_exists(fixture_t *fx)
{
    return count_of(fx, "SELECT count(*) FROM pg_indexes WHERE tablename = 'executions' AND "
                        "indexname = 'idx_executions_retrying' AND indexdef LIKE "
                        "'%last_retry_at%WHERE%retrying%'") == 1;
}

/* ------------------------------------------------------------------ tests */

static void test_template_refuses_retry_statuses(void **state)
{
    fixture_t *fx = *state;
    expect_version(fx, 0, false);
    /* reading the version creates nothing */
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_class WHERE relname = 'retryq_schema_migrations'"), 0);
    assert_status_legal(fx, "failed", true);
    assert_status_legal(fx, "retrying", false);
    assert_status_legal(fx, "timeout", false);
    assert_status_legal(fx, "error", false);
}

static void test_migrate_applies_0012_and_records_version(void **state)
{
    fixture_t *fx = *state;
    /* the runner's own golang-migrate table, which retryq must leave alone */
    PQclear(tu_exec(fx->pg, "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, "
                            "dirty boolean NOT NULL)", 0));
    PQclear(tu_exec(fx->pg, "INSERT INTO schema_migrations VALUES (10, false)", 0));
    migrate_ok(fx, -1, STEPS);
    expect_version(fx, LATEST, false);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM retryq_schema_migrations"), 1);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM retryq_schema_migrations WHERE version = 14 AND NOT dirty"),
                     1);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM schema_migrations WHERE version = 10 AND NOT dirty"), 1);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM schema_migrations"), 1);
    assert_true(sweep_index_exists(fx));
    /* exactly one status check, still under the runner's name */
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'executions'::regclass "
                                  "AND contype = 'c'"),
                     1);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'executions'::regclass "
                                  "AND conname = 'chk_executions_status'"),
                     1);
}

static void test_second_run_applies_nothing(void **state)
{
    fixture_t *fx = *state;
    migrate_ok(fx, -1, STEPS);
    migrate_ok(fx, -1, 0);
    migrate_ok(fx, LATEST, 0);
    expect_version(fx, LATEST, false);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM retryq_schema_migrations"), 1);
}

static void test_new_statuses_are_legal_and_only_those(void **state)
{
    fixture_t *fx = *state;
    static const char *const legal[] = {"pending", "running", "completed", "failed",
                                        "cancelled", "retrying", "timeout", "error"};
    migrate_ok(fx, -1, STEPS);
    for (size_t i = 0; i < sizeof legal / sizeof *legal; i++)
        assert_status_legal(fx, legal[i], true);
    assert_status_legal(fx, "processing", false);
    assert_status_legal(fx, "queued", false);
    assert_status_legal(fx, "bogus", false);
    assert_status_legal(fx, "Retrying", false);
}

static const char *embedded_sql(int64_t version, int up)
{
    for (size_t i = 0; i < migration_file_count; i++)
        if (migration_files[i].version == version && migration_files[i].up == up)
            return migration_files[i].sql;
    fail_msg("migration %d (%s) is not embedded", (int)version, up ? "up" : "down");
    return NULL;
}

static void run_in_transaction(fixture_t *fx, const char *sql)
{
    PQclear(tu_exec(fx->pg, "BEGIN", 0));
    PQclear(tu_exec(fx->pg, "SET LOCAL client_min_messages = warning", 0));
    PGresult *res = PQexec(fx->pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
        PQclear(res);
        fail_msg("migration SQL failed: %s", msg);
    }
    PQclear(res);
    PQclear(tu_exec(fx->pg, "COMMIT", 0));
}

/* The files themselves (as psql or golang-migrate would run them) are idempotent. */
static void test_sql_files_are_safe_to_run_twice(void **state)
{
    fixture_t *fx = *state;
    run_in_transaction(fx, embedded_sql(WORKER, 1));
    run_in_transaction(fx, embedded_sql(WORKER, 1));
    run_in_transaction(fx, embedded_sql(SETS, 1));
    run_in_transaction(fx, embedded_sql(SETS, 1));
    run_in_transaction(fx, embedded_sql(LATEST, 1));
    run_in_transaction(fx, embedded_sql(LATEST, 1));
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_class WHERE relname IN ('retryq_sets', "
                                  "'retryq_set_members')"),
                     2);
    /* nothing of retryq's depends on a runner column: the runner may still drop or retype one */
    PQclear(tu_exec(fx->pg, "ALTER TABLE executions ALTER COLUMN model_id TYPE varchar(100)", 0));
    assert_true(sweep_index_exists(fx));
    assert_status_legal(fx, "retrying", true);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'executions'::regclass "
                                  "AND contype = 'c'"),
                     1);
    PQclear(tu_exec(fx->pg, "DELETE FROM executions", 0));
    run_in_transaction(fx, embedded_sql(LATEST, 0));
    run_in_transaction(fx, embedded_sql(LATEST, 0));
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_proc WHERE proname = 'retryq_cancel_restore'"),
                     0);
    run_in_transaction(fx, embedded_sql(SETS, 0));
    run_in_transaction(fx, embedded_sql(SETS, 0));
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_class WHERE relname LIKE 'retryq_set%'"), 0);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'retryq_%'"), 0);
    run_in_transaction(fx, embedded_sql(WORKER, 0));
    run_in_transaction(fx, embedded_sql(WORKER, 0));
    assert_false(sweep_index_exists(fx));
    assert_status_legal(fx, "retrying", false);
    /* and it recorded nothing: only retryq_migrate writes the version */
    expect_version(fx, 0, false);
}

/* The row without the columns the down migration may change. */
static char *row_rest(fixture_t *fx, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)id);
    return tu_query_value(fx->pg,
                          "SELECT (to_jsonb(e) - ARRAY['status', 'retry_history'])::text "
                          "FROM executions e WHERE id = $1::int",
                          1, text);
}

static char *row_all(fixture_t *fx, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)id);
    return tu_query_value(fx->pg, "SELECT to_jsonb(e)::text FROM executions e WHERE id = $1::int", 1, text);
}

static int64_t row_int(fixture_t *fx, const char *sql, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)id);
    return tu_query_int(fx->pg, sql, 1, text);
}

static char *row_text(fixture_t *fx, const char *sql, int64_t id)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)id);
    return tu_query_value(fx->pg, sql, 1, text);
}

static void set_row(fixture_t *fx, int64_t id, const char *history, const char *output,
                    const char *original_error)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)id);
    PQclear(tu_exec(fx->pg,
                    "UPDATE executions SET retry_history = $2::jsonb, output_data = $3::jsonb, "
                    "original_error = $4 WHERE id = $1::int",
                    4, text, history, output, original_error));
}

static void assert_mapped(fixture_t *fx, int64_t id, const char *before_rest, const char *previous,
                          int64_t history_len, bool closes_attempt, int64_t attempt)
{
    char *rest = row_rest(fx, id);
    assert_string_equal(rest, before_rest);
    free(rest);
    char *status = row_text(fx, "SELECT status FROM executions WHERE id = $1::int", id);
    assert_string_equal(status, "failed");
    free(status);
    assert_int_equal(row_int(fx, "SELECT jsonb_array_length(retry_history) FROM executions WHERE id = $1::int", id),
                     history_len);
    char *prev = row_text(fx, "SELECT retry_history->-1->>'previous_status' FROM executions WHERE id = $1::int", id);
    assert_string_equal(prev, previous);
    free(prev);
    char *st = row_text(fx, "SELECT retry_history->-1->>'status' FROM executions WHERE id = $1::int", id);
    assert_string_equal(st, "failed");
    free(st);
    char *mig = row_text(fx, "SELECT retry_history->-1->>'migration' FROM executions WHERE id = $1::int", id);
    assert_string_equal(mig, "0012_retry_worker.down");
    free(mig);
    /* the timestamp is RFC 3339 and recent */
    assert_int_equal(row_int(fx,
                             "SELECT count(*) FROM executions WHERE id = $1::int AND "
                             "(retry_history->-1->>'timestamp') ~ '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(\\.\\d+)?Z$' "
                             "AND (retry_history->-1->>'timestamp')::timestamptz > now() - interval '5 minutes'",
                             id),
                     1);
    assert_int_equal(row_int(fx, "SELECT count(*) FROM executions WHERE id = $1::int AND "
                                 "length(retry_history->-1->>'error') > 10", id),
                     1);
    if (closes_attempt)
        assert_int_equal(row_int(fx, "SELECT (retry_history->-1->>'attempt')::int FROM executions WHERE id = $1::int", id),
                         attempt);
    else
        assert_int_equal(row_int(fx, "SELECT count(*) FROM executions WHERE id = $1::int AND "
                                     "retry_history->-1 ? 'attempt'", id),
                         0);
}

static void test_down_maps_live_rows_and_restores_constraint(void **state)
{
    fixture_t *fx = *state;
    migrate_ok(fx, -1, STEPS);
    int64_t job = tu_insert_job(fx->pg, "{\"id\":\"spec\",\"questions\":[\"math_basic\"]}");
    int64_t retrying = tu_insert_execution(fx->pg, job, "us-east", "retrying", NULL, "math_basic", 2, 3);
    set_row(fx, retrying,
            "[{\"attempt\":1,\"status\":\"retrying\",\"timestamp\":\"2026-01-01T00:00:00Z\"},"
            "{\"attempt\":1,\"status\":\"failed\",\"timestamp\":\"2026-01-01T00:00:05Z\",\"error\":\"boom\"},"
            "{\"attempt\":2,\"status\":\"retrying\",\"timestamp\":\"2026-01-01T00:01:00Z\"}]",
            "{\"error\":\"router 503\"}", "router 503");
    int64_t timeout = tu_insert_execution(fx->pg, job, "eu-west", "timeout", "mistral-7b", "math_basic", 1, 3);
    set_row(fx, timeout,
            "[{\"attempt\":1,\"status\":\"retrying\",\"timestamp\":\"2026-01-01T00:00:00Z\"},"
            "{\"attempt\":1,\"status\":\"timeout\",\"timestamp\":\"2026-01-01T00:01:00Z\"}]",
            "{\"error\":\"timeout\"}", NULL);
    int64_t error = tu_insert_execution(fx->pg, job, "asia-pacific", "error", NULL, NULL, 0, 3);
    set_row(fx, error, NULL, NULL, "first");
    int64_t failed = tu_insert_execution(fx->pg, job, "US", "failed", NULL, "math_basic", 1, 3);
    int64_t completed = tu_insert_execution(fx->pg, job, "EU", "completed", NULL, "math_basic", 0, 3);
    set_row(fx, completed, "[]", "{\"response\":\"4\"}", NULL);
    int64_t cancelled = tu_insert_execution(fx->pg, job, "ASIA", "cancelled", NULL, "math_basic", 0, 3);

    char *rest_retrying = row_rest(fx, retrying), *rest_timeout = row_rest(fx, timeout),
         *rest_error = row_rest(fx, error);
    char *all_failed = row_all(fx, failed), *all_completed = row_all(fx, completed),
         *all_cancelled = row_all(fx, cancelled);
    char *old_history = row_text(fx, "SELECT retry_history::text FROM executions WHERE id = $1::int", retrying);

    migrate_ok(fx, 0, STEPS);
    expect_version(fx, 0, false);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM retryq_schema_migrations"), 0);

    assert_mapped(fx, retrying, rest_retrying, "retrying", 4, true, 2);
    assert_mapped(fx, timeout, rest_timeout, "timeout", 3, false, 0);
    assert_mapped(fx, error, rest_error, "error", 1, false, 0);
    /* earlier history entries are kept as they were */
    char *kept = row_text(fx, "SELECT (retry_history - (-1))::text FROM executions WHERE id = $1::int", retrying);
    assert_string_equal(kept, old_history);
    free(kept);
    char *kept3 = row_text(fx, "SELECT (retry_history->2)::text FROM executions WHERE id = $1::int", retrying);
    assert_string_equal(kept3, "{\"status\": \"retrying\", \"attempt\": 2, \"timestamp\": \"2026-01-01T00:01:00Z\"}");
    free(kept3);
    char *err_text = row_text(fx, "SELECT retry_history->-1->>'error' FROM executions WHERE id = $1::int", retrying);
    assert_non_null(strstr(err_text, "abandoned"));
    free(err_text);

    /* rows in the old statuses are untouched */
    char *now_failed = row_all(fx, failed), *now_completed = row_all(fx, completed),
         *now_cancelled = row_all(fx, cancelled);
    assert_string_equal(now_failed, all_failed);
    assert_string_equal(now_completed, all_completed);
    assert_string_equal(now_cancelled, all_cancelled);

    /* the runner's constraint is back and the sweep index is gone */
    assert_status_legal(fx, "retrying", false);
    assert_status_legal(fx, "timeout", false);
    assert_status_legal(fx, "cancelled", true);
    assert_false(sweep_index_exists(fx));
    assert_int_equal(count_of(fx, "SELECT count(*) FROM executions WHERE status IN ('retrying', 'timeout', 'error')"), 0);

    char *owned[] = {rest_retrying, rest_timeout, rest_error, all_failed, all_completed,
                     all_cancelled, now_failed, now_completed, now_cancelled, old_history};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        free(owned[i]);
}

static void test_up_again_after_down(void **state)
{
    fixture_t *fx = *state;
    migrate_ok(fx, -1, STEPS);
    migrate_ok(fx, 0, STEPS);
    migrate_ok(fx, 0, 0);
    expect_version(fx, 0, false);
    migrate_ok(fx, -1, STEPS);
    expect_version(fx, LATEST, false);
    assert_true(sweep_index_exists(fx));
    assert_status_legal(fx, "retrying", true);
}

/* Down to 12: the sets and the shared functions go, 0012's check and index stay, and the
 * executions a set retried are left as they are. */
static void test_down_to_12_removes_only_the_sets(void **state)
{
    fixture_t *fx = *state;
    migrate_ok(fx, -1, STEPS);
    int64_t job = tu_insert_job(fx->pg, "{\"id\":\"spec\",\"questions\":[\"math_basic\"]}");
    int64_t id = tu_insert_execution(fx->pg, job, "us-east", "retrying", NULL, "math_basic", 1, 3);
    PQclear(tu_exec(fx->pg, "INSERT INTO retryq_sets (filter, created_by) VALUES ('{}', 'test')", 0));
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)id);
    PQclear(tu_exec(fx->pg, "INSERT INTO retryq_set_members SELECT id, $1::bigint, 'us-east', 1, 'failed' "
                            "FROM retryq_sets", 1, text));
    char *before = row_all(fx, id);
    migrate_ok(fx, WORKER, 2);
    expect_version(fx, WORKER, false);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_class WHERE relname LIKE 'retryq_set%'"), 0);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'retryq_%'"), 0);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_type WHERE typname = 'retryq_candidate'"), 0);
    assert_true(sweep_index_exists(fx));
    assert_status_legal(fx, "retrying", true);
    char *after = row_all(fx, id);
    assert_string_equal(after, before);
    free(before);
    free(after);
    migrate_ok(fx, -1, 2);
    expect_version(fx, LATEST, false);
}

static void test_dirty_record_refuses(void **state)
{
    fixture_t *fx = *state;
    retryq_error_t err = {0};
    int applied = -1;
    migrate_ok(fx, -1, STEPS);
    PQclear(tu_exec(fx->pg, "UPDATE retryq_schema_migrations SET dirty = true", 0));
    expect_version(fx, LATEST, true);

    assert_int_equal(migrate(fx, -1, &applied, &err), RETRYQ_ERR_SCHEMA);
    assert_int_equal(err.code, RETRYQ_ERR_SCHEMA);
    assert_int_equal(applied, 0);
    assert_non_null(strstr(err.message, "dirty at version 14"));
    assert_non_null(strstr(err.message, "by hand"));

    memset(&err, 0, sizeof err);
    assert_int_equal(migrate(fx, 0, &applied, &err), RETRYQ_ERR_SCHEMA);
    assert_non_null(strstr(err.message, "dirty"));
    /* nothing moved: still the wide constraint and the index */
    assert_status_legal(fx, "retrying", true);
    assert_true(sweep_index_exists(fx));
    expect_version(fx, LATEST, true);
}

static void test_unknown_recorded_version_refuses(void **state)
{
    fixture_t *fx = *state;
    retryq_error_t err = {0};
    migrate_ok(fx, -1, STEPS);
    PQclear(tu_exec(fx->pg, "UPDATE retryq_schema_migrations SET version = 99", 0));
    assert_int_equal(migrate(fx, -1, NULL, &err), RETRYQ_ERR_SCHEMA);
    assert_non_null(strstr(err.message, "version 99"));
    assert_non_null(strstr(err.message, "newer retryq"));
    expect_version(fx, 99, false);
}

static void test_missing_runner_0010_fails_clearly(void **state)
{
    fixture_t *fx = *state;
    retryq_error_t err = {0};
    int applied = -1;
    PQclear(tu_exec(fx->pg, "ALTER TABLE executions DROP COLUMN retry_history, DROP COLUMN last_retry_at", 0));
    assert_int_equal(migrate(fx, -1, &applied, &err), RETRYQ_ERR_SCHEMA);
    assert_int_equal(applied, 0);
    assert_non_null(strstr(err.message, "0010"));
    assert_non_null(strstr(err.message, "last_retry_at, retry_history"));
    /* rolled back whole: no version, the runner's constraint, no index */
    expect_version(fx, 0, false);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_class WHERE relname = 'retryq_schema_migrations'"), 0);
    assert_status_legal(fx, "retrying", false);
    assert_false(sweep_index_exists(fx));
}

/* The widened check is added NOT VALID and validated after the commit. */
static void test_check_is_validated_after_commit(void **state)
{
    fixture_t *fx = *state;
    migrate_ok(fx, -1, STEPS);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'executions'::regclass "
                                  "AND conname = 'chk_executions_status' AND convalidated"),
                     1);
    /* an interrupted run (committed, not yet validated) is finished by the next one */
    PQclear(tu_exec(fx->pg, "ALTER TABLE executions DROP CONSTRAINT chk_executions_status, ADD CONSTRAINT "
                            "chk_executions_status CHECK (status IN ('pending', 'running', 'completed', "
                            "'failed', 'cancelled', 'retrying', 'timeout', 'error')) NOT VALID", 0));
    migrate_ok(fx, -1, 0);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'executions'::regclass "
                                  "AND conname = 'chk_executions_status' AND convalidated"),
                     1);
}

/* A row whose status the new check would refuse: a clear refusal, nothing changed. */
static void test_status_outside_the_new_set_refuses(void **state)
{
    fixture_t *fx = *state;
    retryq_error_t err = {0};
    int applied = -1;
    PQclear(tu_exec(fx->pg, "ALTER TABLE executions DROP CONSTRAINT chk_executions_status", 0));
    char st[8];
    insert_state(fx, "queued", st, sizeof st);
    insert_state(fx, "queued", st, sizeof st);
    assert_string_equal(st, "");
    assert_int_equal(migrate(fx, -1, &applied, &err), RETRYQ_ERR_SCHEMA);
    assert_int_equal(applied, 0);
    assert_non_null(strstr(err.message, "'queued' (2 rows)"));
    expect_version(fx, 0, false);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'executions'::regclass "
                                  "AND conname = 'chk_executions_status'"),
                     0);
    assert_false(sweep_index_exists(fx));
}

/* A later runner migration that rebuilds the check without retryq's statuses is named. */
static void test_check_rebuilt_by_the_runner_is_reported(void **state)
{
    fixture_t *fx = *state;
    retryq_error_t err = {0};
    int applied = -1;
    migrate_ok(fx, -1, STEPS);
    PQclear(tu_exec(fx->pg, "ALTER TABLE executions DROP CONSTRAINT chk_executions_status, ADD CONSTRAINT "
                            "chk_executions_status CHECK (status IN ('pending', 'running', 'completed', "
                            "'failed', 'cancelled', 'paused'))", 0));
    assert_int_equal(migrate(fx, -1, &applied, &err), RETRYQ_ERR_SCHEMA);
    assert_non_null(strstr(err.message, "does not admit retryq's statuses"));
    assert_non_null(strstr(err.message, "0012_retry_worker.up.sql"));
}

static void test_bad_target_is_invalid(void **state)
{
    fixture_t *fx = *state;
    retryq_error_t err = {0};
    assert_int_equal(migrate(fx, 5, NULL, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "version 5"));
    assert_int_equal(migrate(fx, LATEST + 1, NULL, &err), RETRYQ_ERR_INVALID);
    expect_version(fx, 0, false);
    assert_status_legal(fx, "retrying", false);
}

static void test_database_down_is_reported(void **state)
{
    (void)state;
    int fd;
    char url[128];
    snprintf(url, sizeof url, "postgresql://retryq@127.0.0.1:%d/retryq", tu_closed_port(&fd));
    retryq_client_t *c = client_for(url);
    retryq_error_t err = {0};
    int64_t v = 0;
    bool dirty = false;
    assert_int_equal(retryq_migrate(c, -1, NULL, &err), RETRYQ_ERR_DATABASE);
    assert_non_null(strstr(err.message, "cannot connect"));
    assert_int_equal(retryq_migrate_version(c, &v, &dirty, &err), RETRYQ_ERR_DATABASE);
    retryq_client_free(c);
    close(fd);
}

/* ------------------------------------------------------------------ concurrency */

typedef struct racer {
    const char *url;
    pthread_barrier_t *barrier;
    int rc;
    int applied;
    retryq_error_t err;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    retryq_options_t opts = {.database_url = r->url, .redis_url = "redis://127.0.0.1:1"};
    retryq_client_t *c = retryq_client_new(&opts, &r->err);
    pthread_barrier_wait(r->barrier);
    r->rc = c != NULL ? retryq_migrate(c, -1, &r->applied, &r->err) : RETRYQ_ERR_INVALID;
    retryq_client_free(c);
    return NULL;
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * A side transaction holds executions locked, so the first migration blocks inside its
 * step (holding the advisory lock) and the second blocks on the advisory lock; both are
 * seen waiting before the side lets go. Without the lock both would run the step and the
 * second would fail on the version row.
 */
static void test_concurrent_migrations_serialise(void **state)
{
    fixture_t *fx = *state;
    pthread_barrier_t barrier;
    racer_t racers[2];
    pthread_t threads[2];
    PGconn *side = tu_pg_connect(fx->url);
    PQclear(tu_exec(side, "BEGIN", 0));
    PQclear(tu_exec(side, "LOCK TABLE executions IN ACCESS EXCLUSIVE MODE", 0));
    assert_int_equal(pthread_barrier_init(&barrier, NULL, 2), 0);
    for (int i = 0; i < 2; i++) {
        racers[i] = (racer_t){.url = fx->url, .barrier = &barrier};
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    int64_t deadline = monotonic_ms() + 15000;
    while (count_of(fx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'") < 2) {
        if (monotonic_ms() > deadline)
            fail_msg("the two migrations never both waited on a lock");
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    PQclear(tu_exec(side, "COMMIT", 0));
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    PQfinish(side);
    for (int i = 0; i < 2; i++)
        if (racers[i].rc != RETRYQ_OK)
            fail_msg("racer %d: %s", i, racers[i].err.message);
    assert_int_equal(racers[0].applied + racers[1].applied, STEPS);
    expect_version(fx, LATEST, false);
    assert_int_equal(count_of(fx, "SELECT count(*) FROM retryq_schema_migrations"), 1);
}

int main(void)
{
    if (!tu_have_services()) {
        fprintf(stderr, "test_migrate: RETRYQ_TEST_* is not set: run it through ctest "
                        "(or test/support/services.sh exec DIR -- %s)\n", "test_migrate");
        return 1;
    }
    if (getenv("RETRYQ_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("RETRYQ_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_template_refuses_retry_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_applies_0012_and_records_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_run_applies_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_statuses_are_legal_and_only_those, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sql_files_are_safe_to_run_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_maps_live_rows_and_restores_constraint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_up_again_after_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_to_12_removes_only_the_sets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dirty_record_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_recorded_version_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_runner_0010_fails_clearly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_is_validated_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_outside_the_new_set_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_rebuilt_by_the_runner_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_target_is_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_down_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_migrations_serialise, setup, teardown),
    };
    return cmocka_run_group_tests_name("migrate", tests, NULL, NULL);
}
