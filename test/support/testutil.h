/*
 * Helpers for the cmocka integration tests that run against the private Redis and
 * PostgreSQL of test/support/services.sh (through `services.sh exec`, which exports
 * RETRYQ_TEST_*). Every helper asserts: on any failure it fails the running test with a
 * sentence saying what went wrong, so callers never check return values.
 *
 * Databases: each test (or group) makes its own with tu_create_database(), a clone of
 * the runner's schema (retryq_template), optionally migrated through libretryq's own
 * retryq_migrate, and drops it with tu_drop_database(). Queues: tu_unique_queue() gives
 * a name no other test uses, so tests can share the one Redis.
 *
 * Include after <cmocka.h>'s prerequisites (stdarg.h, stddef.h, setjmp.h, stdint.h).
 * Ownership: every char * returned is malloc'd, free it; PGconn * with PQfinish;
 * PGresult * with PQclear; redisContext * with redisFree.
 */
#ifndef RETRYQ_TESTUTIL_H
#define RETRYQ_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

/* The value of a required environment variable; fails the test when unset or empty
 * ("run this test through ctest or services.sh exec"). */
const char *tu_env(const char *name);

/* The usual ones: RETRYQ_TEST_REDIS_URL, RETRYQ_TEST_DATABASE_URL (the shared `retryq`
 * database, migrated by services.sh), RETRYQ_TEST_ADMIN_URL (the `postgres` database). */
const char *tu_redis_url(void);
const char *tu_database_url(void);
const char *tu_admin_url(void);

/* True when the services' environment is present: call it first in main() and return 1
 * with a message when it is not. */
bool tu_have_services(void);

/*
 * A fresh database cloned from RETRYQ_TEST_TEMPLATE_DB (the runner's schema up to its
 * 0010: executions still refuses 'retrying'), uniquely named; when `migrated`,
 * retryq_migrate brings it to the latest version through the library. Returns its
 * postgresql:// URL.
 */
char *tu_create_database(bool migrated);
/* Drops the database of `url` (WITH (FORCE): open connections are ended). */
void tu_drop_database(const char *url);

/* A connection to `url`; fails the test when it cannot connect. */
PGconn *tu_pg_connect(const char *url);

/*
 * Runs `sql` with `nparams` parameters given as const char * varargs (NULL = SQL NULL),
 * no formatting into the SQL text. Fails the test unless the statement succeeds; returns
 * the result (PQclear it).
 */
PGresult *tu_exec(PGconn *pg, const char *sql, int nparams, ...);
/* tu_exec and the first column of the first row as a malloc'd string (NULL for SQL NULL);
 * fails the test when there is no row. */
char *tu_query_value(PGconn *pg, const char *sql, int nparams, ...);
/* tu_query_value as an integer; fails on NULL. */
int64_t tu_query_int(PGconn *pg, const char *sql, int nparams, ...);

/* Inserts a job with this job spec JSON (jobspec_id is "tu-" and a fresh uuid); returns its id. */
int64_t tu_insert_job(PGconn *pg, const char *jobspec_json);
/*
 * Inserts an execution of `job_id` (provider_id 'test-provider'); model_id NULL means
 * the column's default 'llama3.2-1b', question_id NULL stays NULL (an old batch row).
 * Returns its id.
 */
int64_t tu_insert_execution(PGconn *pg, int64_t job_id, const char *region, const char *status,
                            const char *model_id, const char *question_id, int retry_count,
                            int max_retries);

/* What most integration groups start from: a fresh migrated database (*url, malloc'd),
 * a connection to it and one to Redis; tu_close_services drops and frees all three. */
void tu_open_services(char **url, PGconn **pg, redisContext **redis);
void tu_close_services(char *url, PGconn *pg, redisContext *redis);

/*
 * The world of a library group that submits or cancels: a fresh migrated database, a
 * connection to it and one to Redis, a private queue (name from `queue_prefix`) and a
 * client on all of them (tu_world_open, in the group setup); per test, an empty queue and
 * a job of its own, so a filter on the job sees only that test's rows (tu_world_job, in
 * the test setup). tu_world_close frees everything, queue keys and database included.
 */
typedef struct tu_world {
    char *url;
    PGconn *pg;
    redisContext *redis;
    char *queue;
    struct retryq_client *client;
    int64_t job;   /* the current test's job */
    char *jobspec; /* its jobspec_id */
} tu_world_t;
tu_world_t *tu_world_open(const char *queue_prefix);
void tu_world_job(tu_world_t *w, const char *jobspec_json);
void tu_world_close(tu_world_t *w);

/*
 * An execution of the world's current job as the runner leaves a failure (region
 * us-east, model mistral-7b): the failure in output_data ("hybrid error: context deadline
 * exceeded", error_code ROUTER_TIMEOUT), original_error NULL, completed 5 minutes ago.
 * Returns its id.
 */
int64_t tu_runner_failure(tu_world_t *w, const char *status, const char *question_id,
                          int retry_count, int max_retries);

/* A retryq client for `database_url`, `redis_url` and `queue` with a 2 s connect
 * timeout; fails the test when the options are refused. Free with retryq_client_free. */
struct retryq_client;
struct retryq_client *tu_client(const char *database_url, const char *redis_url, const char *queue);

/* A loopback TCP port that refuses connections (bound, never listening) for as long as
 * *fd stays open: a "server down" URL for Redis or PostgreSQL. close(*fd) when done. */
int tu_closed_port(int *fd);

/* "<prefix>-<pid>-<random hex>": a queue name no other test run uses. */
char *tu_unique_queue(const char *prefix);

/* A hiredis connection to RETRYQ_TEST_REDIS_URL (db and password honoured). */
redisContext *tu_redis_connect(void);
/* Deletes every key of queue `queue`: Q, {Q}:delayed, {Q}:dead, {Q}:workers, {Q}:cancelled, all
 * {Q}:processing:* lists and {Q}:taken:* hashes. */
void tu_redis_del_queue(redisContext *rc, const char *queue);

#endif
