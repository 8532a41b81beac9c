/*
 * The worker's PostgreSQL pool (src/worker/store.c) against a real PostgreSQL
 * (RETRYQ_TEST_DATABASE_URL and RETRYQ_TEST_ADMIN_URL, set by test/support/services.sh):
 * parameters and NULLs reach the server and results come back; a burst of queries on a
 * small pool completes exactly once per query without opening more connections than the
 * pool size; SQL errors carry their SQLSTATE and leave the connection usable; a backend
 * terminated under a running query answers STORE_ERR_CONNECTION and the pool reconnects on
 * its own; an unreachable server keeps queries waiting and says why; callbacks may queue
 * more queries and may free the store; freeing with work queued and running is clean.
 * Callbacks must never run inside store_exec. No sleeps: the loop is driven with
 * EVLOOP_ONCE against a monotonic deadline (a 20 ms tick keeps it from blocking).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "store.h"

#define APP_PREFIX "retryq-store-test"

typedef struct fixture {
    struct event_base *base;
    struct event *tick;
    PGconn *side; /* synchronous admin connection for looking at and breaking the server */
} fixture_t;

/* What one callback saw. */
typedef struct outcome {
    int calls;
    store_status_t status;
    bool had_result;
    char sqlstate[8];
    char message[512];
    int ncols;
    char values[4][128];
    bool nulls[4];
} outcome_t;

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *database_url(void)
{
    return getenv("RETRYQ_TEST_DATABASE_URL");
}

static const char *admin_url(void)
{
    const char *u = getenv("RETRYQ_TEST_ADMIN_URL");
    return u != NULL && u[0] != '\0' ? u : database_url();
}

/* Drives the loop until `cond` holds; fails the test after `ms`. */
#define RUN_UNTIL(fx, cond, ms)                                                               \
    do {                                                                                      \
        int64_t deadline_ = monotonic_ms() + (ms);                                            \
        while (!(cond)) {                                                                     \
            if (monotonic_ms() > deadline_)                                                   \
                fail_msg("timed out after %d ms waiting for: %s", (int)(ms), #cond);          \
            event_base_loop((fx)->base, EVLOOP_ONCE);                                         \
        }                                                                                     \
    } while (0)

/* Drives the loop for `ms` (to show that something does NOT happen in that window). */
static void run_for(fixture_t *fx, int ms)
{
    int64_t deadline = monotonic_ms() + ms;
    while (monotonic_ms() < deadline)
        event_base_loop(fx->base, EVLOOP_ONCE);
}

/* "retryq-store-test-<pid>-<what>": this process's connections, even on a shared server. */
static const char *app_name(const char *what)
{
    static char name[64];
    snprintf(name, sizeof name, APP_PREFIX "-%d-%s", (int)getpid(), what);
    return name;
}

/* The test database URL (URI or key=value form) with our own application_name. */
static char *conninfo_for(const char *app)
{
    const char *url = database_url();
    size_t n = strlen(url) + strlen(app) + 40;
    char *s = malloc(n);
    assert_non_null(s);
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        snprintf(s, n, "%s%sapplication_name=%s", url, strchr(url, '?') ? "&" : "?", app);
    else
        snprintf(s, n, "%s application_name=%s", url, app);
    return s;
}

static store_t *new_store(fixture_t *fx, const char *app, int pool)
{
    char *conninfo = conninfo_for(app);
    char err[256] = "";
    store_t *s = store_new(fx->base, conninfo, pool, err, sizeof err);
    free(conninfo);
    if (s == NULL)
        fail_msg("store_new: %s", err);
    return s;
}

/* A one-value query on the side connection, as a long (-1 on NULL). */
static long side_long(fixture_t *fx, const char *sql, const char *param)
{
    const char *params[] = {param};
    PGresult *r = PQexecParams(fx->side, sql, param ? 1 : 0, NULL, param ? params : NULL, NULL,
                               NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("side query %s: %s", sql, msg);
    }
    long v = PQgetisnull(r, 0, 0) ? -1 : strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* A synchronous connection to the test database itself (the admin URL may name another). */
static PGconn *connect_test_database(void)
{
    PGconn *c = PQconnectdb(database_url());
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connecting to the test database: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

static void db_command(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
        PQclear(r);
        fail_msg("command %s: %s", sql, msg);
    }
    PQclear(r);
}

static long backends_of(fixture_t *fx, const char *app)
{
    return side_long(fx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app);
}

/* Backends inside pg_sleep right now (not merely preparing a statement that calls it). */
static long sleeping_backends_of(fixture_t *fx, const char *app)
{
    return side_long(fx,
                     "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                     "AND state = 'active' AND wait_event = 'PgSleep'",
                     app);
}

/* Set while a test calls into the store, so a callback can tell it ran synchronously. */
static bool inside_store_exec;

static void exec_ok(store_t *s, int stmt, int n, const char *const *params, store_done_fn fn,
                    void *arg)
{
    inside_store_exec = true;
    int rc = store_exec(s, stmt, n, params, fn, arg);
    inside_store_exec = false;
    assert_int_equal(rc, 0);
}

static void record(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                   const char *message)
{
    outcome_t *o = arg;
    if (inside_store_exec)
        fail_msg("a callback ran synchronously inside store_exec");
    assert_non_null(sqlstate);
    assert_non_null(message);
    o->calls++;
    o->status = status;
    o->had_result = res != NULL;
    snprintf(o->sqlstate, sizeof o->sqlstate, "%s", sqlstate);
    snprintf(o->message, sizeof o->message, "%s", message);
    o->ncols = 0;
    if (res != NULL && PQntuples(res) > 0) {
        o->ncols = PQnfields(res) > 4 ? 4 : PQnfields(res);
        for (int i = 0; i < o->ncols; i++) {
            o->nulls[i] = PQgetisnull(res, 0, i);
            snprintf(o->values[i], sizeof o->values[i], "%s", PQgetvalue(res, 0, i));
        }
    }
}

/* ------------------------------------------------------------------ fixture */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->base = event_base_new();
    assert_non_null(fx->base);
    fx->tick = event_new(fx->base, -1, EV_PERSIST, tick_cb, NULL);
    assert_non_null(fx->tick);
    struct timeval tv = {0, 20000};
    assert_int_equal(event_add(fx->tick, &tv), 0);
    fx->side = PQconnectdb(admin_url());
    if (PQstatus(fx->side) != CONNECTION_OK)
        fail_msg("admin connection: %s", PQerrorMessage(fx->side));
    PQsetNoticeProcessor(fx->side, quiet, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    PQfinish(fx->side);
    event_free(fx->tick);
    event_base_free(fx->base);
    free(fx);
    return 0;
}

/* Events the store still has in the base, besides the fixture's tick. */
static int store_events(fixture_t *fx)
{
    return event_base_get_num_events(fx->base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE) - 1;
}

/* ------------------------------------------------------------------ (1) parameters */

static void test_select_with_parameters_returns_the_values(void **state)
{
    fixture_t *fx = *state;
    store_t *s = new_store(fx, app_name("select"), 1);
    int stmt = store_register(s, "SELECT $1::int + $2::int, $3::text IS NULL, $4::text, $3::text", 4);
    assert_true(stmt >= 0);

    const char *params[] = {"40", "2", NULL, "h\xc3\xa9llo 'quoted' \"x\""};
    assert_int_equal(store_exec(s, stmt, 3, params, record, NULL), -1); /* wrong count */
    assert_int_equal(store_exec(s, stmt + 1, 4, params, record, NULL), -1); /* no such id */

    outcome_t o = {0};
    exec_ok(s, stmt, 4, params, record, &o);
    assert_int_equal(store_register(s, "SELECT 2", 0), -1); /* too late: a query is queued */
    assert_int_equal(o.calls, 0);
    assert_int_equal(store_pending(s), 1);

    RUN_UNTIL(fx, o.calls > 0, 10000);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, STORE_OK);
    assert_true(o.had_result);
    assert_string_equal(o.sqlstate, "");
    assert_int_equal(o.ncols, 4);
    assert_string_equal(o.values[0], "42");
    assert_string_equal(o.values[1], "t");
    assert_string_equal(o.values[2], params[3]);
    assert_true(o.nulls[3]);
    assert_true(store_connected(s));
    assert_int_equal(store_pending(s), 0);
    store_free(s);
    assert_int_equal(store_events(fx), 0);
}

/* ------------------------------------------------------------------ (2) a burst */

typedef struct burst_slot {
    int index;
    int calls;
    store_status_t status;
    long value;
    long pid;
} burst_slot_t;

static int burst_done;

static void burst_cb(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                     const char *message)
{
    burst_slot_t *slot = arg;
    if (inside_store_exec)
        fail_msg("a callback ran synchronously inside store_exec");
    slot->calls++;
    slot->status = status;
    if (status == STORE_OK) {
        slot->value = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        slot->pid = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    } else {
        print_error("query %d: %s %s\n", slot->index, sqlstate, message);
    }
    burst_done++;
}

static void test_thousand_queries_complete_once_on_four_connections(void **state)
{
    enum { N = 1000, POOL = 4 };
    fixture_t *fx = *state;
    const char *app = app_name("burst");
    store_t *s = new_store(fx, app, POOL);
    int stmt = store_register(s, "SELECT $1::int * 2, pg_backend_pid()", 1);
    assert_true(stmt >= 0);

    burst_slot_t *slots = calloc(N, sizeof *slots);
    assert_non_null(slots);
    burst_done = 0;
    int64_t start = monotonic_ms();
    for (int i = 0; i < N; i++) {
        char text[16];
        snprintf(text, sizeof text, "%d", i);
        const char *params[] = {text};
        slots[i].index = i;
        exec_ok(s, stmt, 1, params, burst_cb, &slots[i]);
    }
    assert_int_equal(store_pending(s), N);

    long most = 0;
    int64_t next_look = 0, deadline = start + 30000;
    while (burst_done < N) {
        if (monotonic_ms() > deadline)
            fail_msg("only %d of %d queries finished in 30 s", burst_done, N);
        if (monotonic_ms() >= next_look) {
            long n = backends_of(fx, app);
            most = n > most ? n : most;
            next_look = monotonic_ms() + 20;
        }
        event_base_loop(fx->base, EVLOOP_ONCE);
    }
    int64_t took = monotonic_ms() - start;
    long final = backends_of(fx, app);
    most = final > most ? final : most;
    run_for(fx, 100); /* nothing may be answered twice */

    long pids[POOL + 1] = {0};
    int npids = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(slots[i].calls, 1);
        assert_int_equal(slots[i].status, STORE_OK);
        assert_int_equal(slots[i].value, 2L * i);
        bool seen = false;
        for (int j = 0; j < npids; j++)
            seen = seen || pids[j] == slots[i].pid;
        if (!seen) {
            assert_true(npids < POOL); /* a fifth backend would overflow here */
            pids[npids++] = slots[i].pid;
        }
    }
    print_message("%d queries in %lld ms on %d backends (at most %ld seen at once)\n", N,
                  (long long)took, npids, most);
    assert_true(most >= 1 && most <= POOL);
    assert_int_equal(final, POOL);
    assert_int_equal(store_pending(s), 0);
    store_free(s);
    free(slots);
}

/* ------------------------------------------------------------------ (3) SQL errors */

static void test_sql_errors_carry_sqlstate_and_keep_the_connection(void **state)
{
    fixture_t *fx = *state;
    char table[64], sql[256];
    snprintf(table, sizeof table, "store_test_check_%d", (int)getpid());
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (v int CHECK (v > 0))",
             table, table);
    PGconn *db = connect_test_database();
    db_command(db, sql);

    store_t *s = new_store(fx, app_name("errors"), 1);
    int cast = store_register(s, "SELECT $1::int", 1);
    snprintf(sql, sizeof sql, "INSERT INTO %s (v) VALUES ($1::int)", table);
    int insert = store_register(s, sql, 1);
    int pid = store_register(s, "SELECT pg_backend_pid()", 0);
    assert_true(cast >= 0 && insert >= 0 && pid >= 0);

    outcome_t before = {0}, bad_int = {0}, check = {0}, good = {0}, after = {0};
    const char *abc[] = {"abc"}, *minus[] = {"-1"}, *five[] = {"5"};
    exec_ok(s, pid, 0, NULL, record, &before);
    exec_ok(s, cast, 1, abc, record, &bad_int);
    exec_ok(s, insert, 1, minus, record, &check);
    exec_ok(s, insert, 1, five, record, &good);
    exec_ok(s, pid, 0, NULL, record, &after);
    RUN_UNTIL(fx, after.calls > 0, 10000);

    assert_int_equal(bad_int.calls, 1);
    assert_int_equal(bad_int.status, STORE_ERR_QUERY);
    assert_false(bad_int.had_result);
    assert_string_equal(bad_int.sqlstate, "22P02");
    assert_non_null(strstr(bad_int.message, "integer"));

    assert_int_equal(check.calls, 1);
    assert_int_equal(check.status, STORE_ERR_QUERY);
    assert_string_equal(check.sqlstate, "23514");
    assert_non_null(strstr(check.message, "check constraint"));

    assert_int_equal(good.status, STORE_OK);
    assert_int_equal(before.status, STORE_OK);
    assert_int_equal(after.status, STORE_OK);
    /* the same backend before and after the errors: nothing was reconnected */
    assert_string_equal(before.values[0], after.values[0]);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    PGresult *r = PQexec(db, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    assert_string_equal(store_last_error(s), "");

    store_free(s);
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    db_command(db, sql);
    PQfinish(db);
}

/* A statement the server cannot prepare (schema not migrated) keeps the pool down and says
 * why; queries wait instead of failing. */
static void test_unpreparable_statement_keeps_the_pool_down(void **state)
{
    fixture_t *fx = *state;
    store_t *s = new_store(fx, app_name("unprepared"), 1);
    int good = store_register(s, "SELECT 1", 0);
    int bad = store_register(s, "SELECT v FROM retryq_store_test_no_such_table", 0);
    assert_true(good >= 0 && bad >= 0);
    outcome_t o = {0};
    exec_ok(s, good, 0, NULL, record, &o);
    RUN_UNTIL(fx, strstr(store_last_error(s), "no_such_table") != NULL, 10000);
    print_message("last error: %s\n", store_last_error(s));
    assert_non_null(strstr(store_last_error(s), "rq_1"));
    assert_false(store_connected(s));
    assert_int_equal(o.calls, 0);
    assert_int_equal(store_pending(s), 1);
    store_free(s);
}

static void test_sqlstate_classes(void **state)
{
    (void)state;
    assert_true(store_sqlstate_is_connection("08006"));
    assert_true(store_sqlstate_is_connection("08P01"));
    assert_true(store_sqlstate_is_connection("57P01"));
    assert_true(store_sqlstate_is_connection("57P02"));
    assert_true(store_sqlstate_is_connection("57P03"));
    assert_false(store_sqlstate_is_connection("57014"));
    assert_false(store_sqlstate_is_connection("22P02"));
    assert_false(store_sqlstate_is_connection(""));
    assert_false(store_sqlstate_is_connection(NULL));
    assert_true(store_sqlstate_is_retryable("40001"));
    assert_true(store_sqlstate_is_retryable("40P01"));
    assert_false(store_sqlstate_is_retryable("23514"));
    assert_false(store_sqlstate_is_retryable(NULL));
}

/* ------------------------------------------------------------------ (4) killed backend */

static void test_terminated_backend_fails_the_query_and_the_pool_reconnects(void **state)
{
    fixture_t *fx = *state;
    const char *app = app_name("kill");
    store_t *s = new_store(fx, app, 2);
    int sleep_stmt = store_register(s, "SELECT pg_sleep($1::float8)", 1);
    int pid_stmt = store_register(s, "SELECT pg_backend_pid()", 0);
    assert_true(sleep_stmt >= 0 && pid_stmt >= 0);
    RUN_UNTIL(fx, backends_of(fx, app) == 2, 10000);

    outcome_t slow = {0};
    const char *five[] = {"5"};
    exec_ok(s, sleep_stmt, 1, five, record, &slow);
    RUN_UNTIL(fx, sleeping_backends_of(fx, app) == 1, 5000);

    PGresult *r = PQexecParams(fx->side,
                               "SELECT string_agg(pid::text, ',' ORDER BY pid), "
                               "count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = $1",
                               1, NULL, &app, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char killed[128], fresh_sql[300];
    snprintf(killed, sizeof killed, ",%s,", PQgetvalue(r, 0, 0));
    snprintf(fresh_sql, sizeof fresh_sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
             "AND pid NOT IN (%s)",
             PQgetvalue(r, 0, 0));
    assert_string_equal(PQgetvalue(r, 0, 1), "2");
    PQclear(r);
    int64_t start = monotonic_ms();

    RUN_UNTIL(fx, slow.calls > 0, 4000); /* well before pg_sleep(5) would end */
    assert_true(monotonic_ms() - start < 4000);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.status, STORE_ERR_CONNECTION);
    assert_false(slow.had_result);
    assert_true(slow.message[0] != '\0');
    assert_true(store_last_error(s)[0] != '\0');
    print_message("terminated: sqlstate=%s message=%s\n", slow.sqlstate, slow.message);

    /* The store reconnects by itself: two new backends appear without any query asking.
     * (Only then is the next query sure to miss the dying idle connection: had it been sent
     * there first, STORE_ERR_CONNECTION would have been the right answer.) */
    RUN_UNTIL(fx, side_long(fx, fresh_sql, app) == 2, 15000);
    outcome_t later = {0};
    exec_ok(s, pid_stmt, 0, NULL, record, &later);
    RUN_UNTIL(fx, later.calls > 0, 15000);
    assert_int_equal(later.status, STORE_OK);
    char pid[sizeof later.values[0] + 2];
    snprintf(pid, sizeof pid, ",%s,", later.values[0]);
    assert_null(strstr(killed, pid));
    assert_true(store_connected(s));
    RUN_UNTIL(fx, backends_of(fx, app) == 2, 15000);
    run_for(fx, 50);
    assert_int_equal(slow.calls, 1);
    store_free(s);
}

/* ------------------------------------------------------------------ (11) deadlines */

/* A host that goes silent mid-query (its backend frozen with SIGSTOP: the socket stays
 * open, nothing answers, statement_timeout cannot fire) is given up on by the client-side
 * deadline; the query answers STORE_ERR_CONNECTION and the pool reconnects. */
static void test_silent_host_is_dropped_by_the_query_deadline(void **state)
{
    fixture_t *fx = *state;
    const char *app = app_name("silent");
    char *conninfo = conninfo_for(app);
    char err[256] = "";
    store_options_t opts = {.query_timeout_ms = 300, .lock_timeout_ms = 0, .tcp_timeout_ms = 2000};
    store_t *s = store_new_opts(fx->base, conninfo, 1, &opts, err, sizeof err);
    free(conninfo);
    assert_non_null(s);
    int pid_stmt = store_register(s, "SELECT pg_backend_pid(), current_setting('statement_timeout')", 0);
    assert_true(pid_stmt >= 0);
    outcome_t first = {0};
    exec_ok(s, pid_stmt, 0, NULL, record, &first);
    RUN_UNTIL(fx, first.calls > 0, 10000);
    assert_int_equal(first.status, STORE_OK);
    assert_string_equal(first.values[1], "300ms");
    pid_t backend = (pid_t)strtol(first.values[0], NULL, 10);
    assert_int_equal(kill(backend, SIGSTOP), 0);

    outcome_t frozen = {0};
    int64_t start = monotonic_ms();
    exec_ok(s, pid_stmt, 0, NULL, record, &frozen);
    RUN_UNTIL(fx, frozen.calls > 0, 5000);
    int64_t took = monotonic_ms() - start;
    assert_int_equal(kill(backend, SIGCONT), 0);
    print_message("silent host: answered after %lld ms: %s\n", (long long)took, frozen.message);
    assert_int_equal(frozen.status, STORE_ERR_CONNECTION);
    assert_true(took >= 550 && took < 3000); /* 300 ms + 300 ms grace */

    outcome_t later = {0};
    exec_ok(s, pid_stmt, 0, NULL, record, &later);
    RUN_UNTIL(fx, later.calls > 0, 15000);
    assert_int_equal(later.status, STORE_OK);
    assert_int_not_equal(strtol(later.values[0], NULL, 10), backend);
    store_free(s);
}

/* A row locked by another session: a statement marked STORE_DEADLINE_IS_TRANSIENT waits at
 * most lock_timeout and answers STORE_ERR_CONNECTION (sqlstate 55P03); a query pipelined
 * behind it on the same (only) connection completes; after the release the write works. */
static void test_locked_row_does_not_hold_up_the_connection(void **state)
{
    fixture_t *fx = *state;
    PGconn *locker = connect_test_database();
    db_command(locker, "DROP TABLE IF EXISTS retryq_store_test_lock");
    db_command(locker, "CREATE TABLE retryq_store_test_lock (id int PRIMARY KEY, v int)");
    db_command(locker, "INSERT INTO retryq_store_test_lock VALUES (1, 0)");
    db_command(locker, "BEGIN");
    PGresult *held = PQexec(locker, "SELECT v FROM retryq_store_test_lock WHERE id = 1 FOR UPDATE");
    assert_int_equal(PQresultStatus(held), PGRES_TUPLES_OK);
    PQclear(held);

    const char *app = app_name("lock");
    char *conninfo = conninfo_for(app);
    char err[256] = "";
    store_options_t opts = {.query_timeout_ms = 10000, .lock_timeout_ms = 300};
    store_t *s = store_new_opts(fx->base, conninfo, 1, &opts, err, sizeof err);
    free(conninfo);
    assert_non_null(s);
    int update = store_register_flags(s, "UPDATE retryq_store_test_lock SET v = v + 1 WHERE id = 1",
                                      0, STORE_DEADLINE_IS_TRANSIENT);
    int plain = store_register(s, "UPDATE retryq_store_test_lock SET v = v + 1 WHERE id = 1", 0);
    int fast = store_register(s, "SELECT 42", 0);
    assert_true(update >= 0 && plain >= 0 && fast >= 0);
    RUN_UNTIL(fx, store_connected(s), 10000);

    outcome_t blocked = {0}, refused = {0}, behind = {0};
    int64_t start = monotonic_ms();
    exec_ok(s, update, 0, NULL, record, &blocked);
    exec_ok(s, plain, 0, NULL, record, &refused);
    exec_ok(s, fast, 0, NULL, record, &behind);
    RUN_UNTIL(fx, behind.calls > 0, 5000);
    int64_t took = monotonic_ms() - start;
    print_message("locked row: the query behind answered after %lld ms\n", (long long)took);
    assert_int_equal(behind.status, STORE_OK);
    assert_string_equal(behind.values[0], "42");
    assert_int_equal(blocked.status, STORE_ERR_CONNECTION);
    assert_string_equal(blocked.sqlstate, "55P03");
    assert_int_equal(refused.status, STORE_ERR_QUERY); /* without the flag: the error itself */
    assert_string_equal(refused.sqlstate, "55P03");
    assert_true(took < 3000);

    db_command(locker, "COMMIT");
    outcome_t after = {0};
    exec_ok(s, update, 0, NULL, record, &after);
    RUN_UNTIL(fx, after.calls > 0, 5000);
    assert_int_equal(after.status, STORE_OK);
    store_free(s);
    db_command(locker, "DROP TABLE retryq_store_test_lock");
    PQfinish(locker);
}

/* ------------------------------------------------------------------ (5) server down */

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* bound, never listened: connecting is refused */
    return ntohs(a.sin_port);
}

static void test_unreachable_server_keeps_queries_waiting(void **state)
{
    fixture_t *fx = *state;
    int port = closed_port();
    char conninfo[256], port_text[16];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=nothing user=nobody password=sekrit-pw-42 "
             "connect_timeout=2 application_name=%s",
             port, app_name("down"));
    snprintf(port_text, sizeof port_text, "%d", port);
    char err[256] = "";
    store_t *s = store_new(fx->base, conninfo, 2, err, sizeof err);
    assert_non_null(s);
    int stmt = store_register(s, "SELECT 1", 0);
    assert_true(stmt >= 0);
    outcome_t o = {0};
    exec_ok(s, stmt, 0, NULL, record, &o);

    RUN_UNTIL(fx, store_last_error(s)[0] != '\0', 5000);
    run_for(fx, 400); /* several reconnect attempts (first backoffs are <= 100, 200 ms) */
    assert_int_equal(o.calls, 0);
    assert_false(store_connected(s));
    assert_int_equal(store_pending(s), 1);
    print_message("last error: %s\n", store_last_error(s));
    assert_non_null(strstr(store_last_error(s), port_text));
    assert_null(strstr(store_last_error(s), "sekrit"));
    assert_null(strchr(store_last_error(s), '\n'));
    store_free(s);
    assert_int_equal(o.calls, 0);
    assert_int_equal(store_events(fx), 0);
}

static void test_bad_arguments_are_refused_without_secrets(void **state)
{
    fixture_t *fx = *state;
    static const char *const bad[] = {
        "postgresql://u:sekrit@[::1/db",
        "postgresql://u:sek%zzrit@127.0.0.1/db",
        "host=127.0.0.1 password=sekrit bogus",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        assert_null(store_new(fx->base, bad[i], 1, err, sizeof err));
        print_message("refused: %s\n", err);
        assert_true(err[0] != '\0');
        assert_null(strstr(err, "sekrit"));
        assert_null(strstr(err, "zzrit"));
    }
    char err[256] = "";
    assert_null(store_new(fx->base, "host=127.0.0.1", 0, err, sizeof err));
    assert_non_null(strstr(err, "pool size"));
    assert_null(store_new(fx->base, "host=127.0.0.1", 65, err, sizeof err));
    assert_int_equal(store_events(fx), 0);
}

/* ------------------------------------------------------------------ (6) re-entrancy */

typedef struct chain {
    store_t *store;
    int stmt;
    int chained, fanned;
    int bad;
    bool in_callback;
} chain_t;

enum { CHAIN_LENGTH = 200, FAN_OUT = 50 };

static void fan_cb(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                   const char *message)
{
    chain_t *c = arg;
    if (c->in_callback)
        fail_msg("a callback ran inside another callback");
    if (status != STORE_OK)
        c->bad++;
    c->fanned++;
}

static void chain_cb(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                     const char *message)
{
    chain_t *c = arg;
    if (c->in_callback)
        fail_msg("a callback ran inside another callback");
    c->in_callback = true;
    if (status != STORE_OK || strtol(PQgetvalue(res, 0, 0), NULL, 10) != c->chained)
        c->bad++;
    c->chained++;
    char text[16];
    snprintf(text, sizeof text, "%d", c->chained);
    const char *params[] = {text};
    if (c->chained == 1)
        for (int i = 0; i < FAN_OUT; i++)
            if (store_exec(c->store, c->stmt, 1, params, fan_cb, c) != 0)
                c->bad++;
    if (c->chained < CHAIN_LENGTH && store_exec(c->store, c->stmt, 1, params, chain_cb, c) != 0)
        c->bad++;
    c->in_callback = false;
}

static void test_store_exec_from_a_callback(void **state)
{
    fixture_t *fx = *state;
    store_t *s = new_store(fx, app_name("chain"), 3);
    chain_t c = {.store = s};
    c.stmt = store_register(s, "SELECT $1::int", 1);
    assert_true(c.stmt >= 0);
    const char *zero[] = {"0"};
    exec_ok(s, c.stmt, 1, zero, chain_cb, &c);
    RUN_UNTIL(fx, c.chained == CHAIN_LENGTH && c.fanned == FAN_OUT, 20000);
    run_for(fx, 50);
    assert_int_equal(c.chained, CHAIN_LENGTH);
    assert_int_equal(c.fanned, FAN_OUT);
    assert_int_equal(c.bad, 0);
    assert_int_equal(store_pending(s), 0);
    store_free(s);
}

/* A statement registered after the connections are up is prepared on them too. */
static void test_register_after_connecting(void **state)
{
    fixture_t *fx = *state;
    const char *app = app_name("late");
    store_t *s = new_store(fx, app, 2);
    RUN_UNTIL(fx, store_connected(s) && backends_of(fx, app) == 2, 10000);
    int stmt = store_register(s, "SELECT 'late'::text", 0);
    assert_true(stmt >= 0);
    outcome_t a = {0}, b = {0};
    exec_ok(s, stmt, 0, NULL, record, &a);
    exec_ok(s, stmt, 0, NULL, record, &b);
    RUN_UNTIL(fx, a.calls > 0 && b.calls > 0, 10000);
    assert_int_equal(a.status, STORE_OK);
    assert_int_equal(b.status, STORE_OK);
    assert_string_equal(a.values[0], "late");
    store_free(s);
}

/* ------------------------------------------------------------------ (7) teardown */

static void test_free_with_queued_and_running_queries(void **state)
{
    fixture_t *fx = *state;
    const char *app = app_name("free");
    store_t *s = new_store(fx, app, 2);
    int sleep_stmt = store_register(s, "SELECT pg_sleep($1::float8)", 1);
    int fast = store_register(s, "SELECT $1::text", 1);
    assert_true(sleep_stmt >= 0 && fast >= 0);
    outcome_t o = {0};
    const char *five[] = {"5"}, *x[] = {"x"};
    exec_ok(s, sleep_stmt, 1, five, record, &o);
    exec_ok(s, sleep_stmt, 1, five, record, &o);
    for (int i = 0; i < 20; i++)
        exec_ok(s, fast, 1, x, record, &o);
    RUN_UNTIL(fx, sleeping_backends_of(fx, app) == 2, 10000);
    assert_int_equal(store_pending(s), 22);
    store_free(s);
    assert_int_equal(store_events(fx), 0);
    run_for(fx, 50);
    assert_int_equal(o.calls, 0);
    /* the server sees the connections go */
    int64_t deadline = monotonic_ms() + 5000;
    while (backends_of(fx, app) != 0)
        if (monotonic_ms() > deadline)
            fail_msg("the store's backends are still there after store_free");
}

typedef struct free_inside {
    store_t *store;
    int calls;
} free_inside_t;

static void free_inside_cb(void *arg, store_status_t status, const PGresult *res,
                           const char *sqlstate, const char *message)
{
    free_inside_t *f = arg;
    f->calls++;
    if (status == STORE_OK)
        assert_string_equal(PQgetvalue(res, 0, 0), "1");
    store_free(f->store); /* the result stays readable until we return */
    if (res != NULL)
        assert_string_equal(PQgetvalue(res, 0, 0), "1");
    f->store = NULL;
}

static void test_free_from_inside_a_callback(void **state)
{
    fixture_t *fx = *state;
    store_t *s = new_store(fx, app_name("free-inside"), 2);
    int stmt = store_register(s, "SELECT 1", 0);
    assert_true(stmt >= 0);
    free_inside_t f = {.store = s};
    for (int i = 0; i < 10; i++)
        exec_ok(s, stmt, 0, NULL, free_inside_cb, &f);
    RUN_UNTIL(fx, f.calls > 0, 10000);
    run_for(fx, 100);
    assert_int_equal(f.calls, 1);
    assert_int_equal(store_events(fx), 0);
}

int main(void)
{
    if (database_url() == NULL || database_url()[0] == '\0') {
        fprintf(stderr, "FAIL: RETRYQ_TEST_DATABASE_URL is not set; run this test through ctest "
                        "(test/support/services.sh exec starts PostgreSQL and sets it)\n");
        return 1;
    }
    if (getenv("RETRYQ_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("RETRYQ_TEST_FILTER"));
    event_enable_debug_mode();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqlstate_classes),
        cmocka_unit_test_setup_teardown(test_select_with_parameters_returns_the_values, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_thousand_queries_complete_once_on_four_connections,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sql_errors_carry_sqlstate_and_keep_the_connection,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_unpreparable_statement_keeps_the_pool_down, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_terminated_backend_fails_the_query_and_the_pool_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_host_is_dropped_by_the_query_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_locked_row_does_not_hold_up_the_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_server_keeps_queries_waiting, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments_are_refused_without_secrets, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_store_exec_from_a_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_after_connecting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_queued_and_running_queries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_free_from_inside_a_callback, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    libevent_global_shutdown();
    return failed;
}
