/*
 * Test helpers for the integration tests (see testutil.h): environment, throw-away
 * databases cloned from the runner's schema, parameterised SQL that asserts, rows of the
 * runner's tables, unique queue names and Redis clean-up. Key names and URL parsing come
 * from libretryq itself; nothing here re-implements it.
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "retryq/retryq.h"
#include "testutil.h"

#define MAX_PARAMS 16

/* Fails the running test with a formatted sentence; never returns. */
static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail_msg("%s", msg);
    abort(); /* not reached: fail_msg leaves the test */
}

const char *tu_env(const char *name)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0')
        die("%s is not set: run this test through ctest (or test/support/services.sh exec)",
                 name);
    return v;
}

const char *tu_redis_url(void)
{
    return tu_env("RETRYQ_TEST_REDIS_URL");
}

const char *tu_database_url(void)
{
    return tu_env("RETRYQ_TEST_DATABASE_URL");
}

const char *tu_admin_url(void)
{
    return tu_env("RETRYQ_TEST_ADMIN_URL");
}

bool tu_have_services(void)
{
    static const char *const names[] = {"RETRYQ_TEST_REDIS_URL", "RETRYQ_TEST_DATABASE_URL",
                                        "RETRYQ_TEST_ADMIN_URL", "RETRYQ_TEST_PG_HOST",
                                        "RETRYQ_TEST_PG_PORT", "RETRYQ_TEST_TEMPLATE_DB"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *v = getenv(names[i]);
        if (v == NULL || v[0] == '\0')
            return false;
    }
    return true;
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    return v;
}

/* ------------------------------------------------------------------ SQL */

PGconn *tu_pg_connect(const char *url)
{
    PGconn *pg = PQconnectdb(url);
    if (pg == NULL)
        die("PQconnectdb(%s): out of memory", url);
    if (PQstatus(pg) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(pg));
        PQfinish(pg);
        die("cannot connect to %s: %s", url, msg);
    }
    return pg;
}

static PGresult *vexec(PGconn *pg, const char *sql, int nparams, va_list ap)
{
    const char *params[MAX_PARAMS];
    if (nparams < 0 || nparams > MAX_PARAMS)
        die("tu_exec: %d parameters (at most %d)", nparams, MAX_PARAMS);
    for (int i = 0; i < nparams; i++)
        params[i] = va_arg(ap, const char *);
    PGresult *res = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
        PQclear(res);
        die("SQL failed (SQLSTATE %s): %s\n  statement: %s", state != NULL ? state : "none",
                 msg, sql);
    }
    return res;
}

PGresult *tu_exec(PGconn *pg, const char *sql, int nparams, ...)
{
    va_list ap;
    va_start(ap, nparams);
    PGresult *res = vexec(pg, sql, nparams, ap);
    va_end(ap);
    return res;
}

static char *first_value(PGresult *res, const char *sql)
{
    if (PQntuples(res) < 1 || PQnfields(res) < 1) {
        PQclear(res);
        die("no row from: %s", sql);
    }
    char *v = PQgetisnull(res, 0, 0) ? NULL : strdup(PQgetvalue(res, 0, 0));
    bool oom = !PQgetisnull(res, 0, 0) && v == NULL;
    PQclear(res);
    if (oom)
        die("out of memory");
    return v;
}

char *tu_query_value(PGconn *pg, const char *sql, int nparams, ...)
{
    va_list ap;
    va_start(ap, nparams);
    PGresult *res = vexec(pg, sql, nparams, ap);
    va_end(ap);
    return first_value(res, sql);
}

int64_t tu_query_int(PGconn *pg, const char *sql, int nparams, ...)
{
    va_list ap;
    va_start(ap, nparams);
    PGresult *res = vexec(pg, sql, nparams, ap);
    va_end(ap);
    char *v = first_value(res, sql);
    if (v == NULL)
        die("NULL where an integer was expected from: %s", sql);
    char *end = NULL;
    int64_t n = strtoll(v, &end, 10);
    bool bad = end == v || *end != '\0';
    free(v);
    if (bad)
        die("not an integer from: %s", sql);
    return n;
}

int64_t tu_insert_job(PGconn *pg, const char *jobspec_json)
{
    return tu_query_int(pg,
                        "INSERT INTO jobs (jobspec_id, jobspec_data) "
                        "VALUES ('tu-' || gen_random_uuid()::text, $1::jsonb) RETURNING id",
                        1, jobspec_json);
}

int64_t tu_insert_execution(PGconn *pg, int64_t job_id, const char *region, const char *status,
                            const char *model_id, const char *question_id, int retry_count,
                            int max_retries)
{
    char job[24], count[16], max[16];
    snprintf(job, sizeof job, "%" PRId64, job_id);
    snprintf(count, sizeof count, "%d", retry_count);
    snprintf(max, sizeof max, "%d", max_retries);
    return tu_query_int(pg,
                        "INSERT INTO executions (job_id, provider_id, region, status, model_id, "
                        "question_id, retry_count, max_retries) VALUES ($1::int, 'test-provider', $2, "
                        "$3, coalesce($4, 'llama3.2-1b'), $5, $6::int, $7::int) RETURNING id",
                        7, job, region, status, model_id, question_id, count, max);
}

/* ------------------------------------------------------------------ databases */

char *tu_create_database(bool migrated)
{
    char name[64], *url;
    snprintf(name, sizeof name, "tu_%d_%016" PRIx64, (int)getpid(), random_u64());
    PGconn *admin = tu_pg_connect(tu_admin_url());
    char *ident = PQescapeIdentifier(admin, name, strlen(name));
    char *tmpl = PQescapeIdentifier(admin, tu_env("RETRYQ_TEST_TEMPLATE_DB"),
                                        strlen(tu_env("RETRYQ_TEST_TEMPLATE_DB")));
    if (ident == NULL || tmpl == NULL)
        die("PQescapeIdentifier: %s", PQerrorMessage(admin));
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s", ident, tmpl);
    /* Another session cloning the template at the same moment makes PostgreSQL refuse
     * with 55006 (object in use): try again for a few seconds. */
    int64_t deadline = (int64_t)time(NULL) + 10;
    for (;;) {
        PGresult *res = PQexec(admin, sql);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            PQclear(res);
            break;
        }
        bool busy = state != NULL && strcmp(state, "55006") == 0 && time(NULL) < deadline;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
        PQclear(res);
        if (!busy)
            die("%s: %s", sql, msg);
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    PQfreemem(ident);
    PQfreemem(tmpl);
    const char *user = PQuser(admin);
    size_t n = strlen(user) + strlen(name) + 128;
    url = malloc(n);
    if (url == NULL)
        die("out of memory");
    snprintf(url, n, "postgresql://%s@%s:%s/%s", user, tu_env("RETRYQ_TEST_PG_HOST"),
             tu_env("RETRYQ_TEST_PG_PORT"), name);
    PQfinish(admin);
    if (migrated) {
        retryq_options_t opts = {.database_url = url, .redis_url = tu_redis_url()};
        retryq_error_t err = {0};
        int applied = 0;
        retryq_client_t *client = retryq_client_new(&opts, &err);
        if (client == NULL)
            die("retryq_client_new: %s", err.message);
        int rc = retryq_migrate(client, -1, &applied, &err);
        retryq_client_free(client);
        if (rc != RETRYQ_OK)
            die("retryq_migrate on %s: %s (%s)", name, err.message, retryq_code_name(rc));
    }
    return url;
}

void tu_open_services(char **url, PGconn **pg, redisContext **redis)
{
    *url = tu_create_database(true);
    *pg = tu_pg_connect(*url);
    *redis = tu_redis_connect();
}

void tu_close_services(char *url, PGconn *pg, redisContext *redis)
{
    redisFree(redis);
    PQfinish(pg);
    tu_drop_database(url);
    free(url);
}

tu_world_t *tu_world_open(const char *queue_prefix)
{
    tu_world_t *w = calloc(1, sizeof *w);
    if (w == NULL)
        die("out of memory");
    tu_open_services(&w->url, &w->pg, &w->redis);
    w->queue = tu_unique_queue(queue_prefix);
    w->client = tu_client(w->url, tu_redis_url(), w->queue);
    return w;
}

void tu_world_job(tu_world_t *w, const char *jobspec_json)
{
    char text[24];
    tu_redis_del_queue(w->redis, w->queue);
    w->job = tu_insert_job(w->pg, jobspec_json);
    snprintf(text, sizeof text, "%" PRId64, w->job);
    free(w->jobspec);
    w->jobspec = tu_query_value(w->pg, "SELECT jobspec_id FROM jobs WHERE id = $1::int", 1, text);
}

void tu_world_close(tu_world_t *w)
{
    retryq_client_free(w->client);
    tu_redis_del_queue(w->redis, w->queue);
    free(w->queue);
    free(w->jobspec);
    tu_close_services(w->url, w->pg, w->redis);
    free(w);
}

int64_t tu_runner_failure(tu_world_t *w, const char *status, const char *question_id,
                          int retry_count, int max_retries)
{
    int64_t id = tu_insert_execution(w->pg, w->job, "us-east", status, "mistral-7b", question_id,
                                     retry_count, max_retries);
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, id);
    PQclear(tu_exec(w->pg,
                    "UPDATE executions SET output_data = '{\"error\": \"hybrid error: context deadline "
                    "exceeded\", \"error_code\": \"ROUTER_TIMEOUT\", \"failure\": {\"stage\": "
                    "\"inference\", \"code\": \"ROUTER_TIMEOUT\", \"transient\": true}}', "
                    "original_error = NULL, completed_at = localtimestamp - interval '5 minutes' "
                    "WHERE id = $1::int",
                    1, text));
    return id;
}

retryq_client_t *tu_client(const char *database_url, const char *redis_url, const char *queue)
{
    retryq_options_t opts = {.database_url = database_url, .redis_url = redis_url, .queue = queue,
                             .connect_timeout_ms = 2000};
    retryq_error_t err = {0};
    retryq_client_t *c = retryq_client_new(&opts, &err);
    if (c == NULL)
        die("retryq_client_new: %s", err.message);
    return c;
}

void tu_drop_database(const char *url)
{
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    if (opts == NULL)
        die("cannot parse %s", url);
    char name[128] = "";
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val != NULL)
            snprintf(name, sizeof name, "%s", o->val);
    PQconninfoFree(opts);
    if (name[0] == '\0')
        die("no database name in %s", url);
    PGconn *admin = tu_pg_connect(tu_admin_url());
    char *ident = PQescapeIdentifier(admin, name, strlen(name));
    if (ident == NULL)
        die("PQescapeIdentifier: %s", PQerrorMessage(admin));
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", ident);
    PQfreemem(ident);
    PQclear(tu_exec(admin, sql, 0));
    PQfinish(admin);
}

/* ------------------------------------------------------------------ Redis */

int tu_closed_port(int *fd)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof addr;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    if (*fd < 0 || bind(*fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(*fd, (struct sockaddr *)&addr, &len) != 0)
        die("tu_closed_port: cannot bind a loopback socket");
    return ntohs(addr.sin_port);
}

char *tu_unique_queue(const char *prefix)
{
    size_t n = strlen(prefix) + 48;
    char *q = malloc(n);
    if (q == NULL)
        die("out of memory");
    snprintf(q, n, "%s-%d-%012" PRIx64, prefix, (int)getpid(), (uint64_t)(random_u64() & 0xffffffffffffU));
    return q;
}

static void expect_ok(redisContext *rc, redisReply *reply, const char *what)
{
    if (reply == NULL)
        die("Redis %s: %s", what, rc->errstr);
    if (reply->type == REDIS_REPLY_ERROR) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", reply->str);
        freeReplyObject(reply);
        die("Redis %s: %s", what, msg);
    }
}

redisContext *tu_redis_connect(void)
{
    retryq_redis_url_t u;
    retryq_error_t err = {0};
    if (retryq_redis_url_parse(tu_redis_url(), &u, &err) != RETRYQ_OK)
        die("RETRYQ_TEST_REDIS_URL: %s", err.message);
    struct timeval tv = {5, 0};
    redisContext *rc = u.is_unix ? redisConnectUnixWithTimeout(u.path, tv)
                                 : redisConnectWithTimeout(u.host, u.port, tv);
    if (rc == NULL || rc->err != 0)
        die("cannot connect to Redis at %s: %s", tu_redis_url(),
                 rc != NULL ? rc->errstr : "out of memory");
    if (redisSetTimeout(rc, tv) != REDIS_OK)
        die("redisSetTimeout: %s", rc->errstr);
    redisReply *reply = NULL;
    if (u.password[0] != '\0') {
        reply = u.user[0] != '\0' ? redisCommand(rc, "AUTH %s %s", u.user, u.password)
                                  : redisCommand(rc, "AUTH %s", u.password);
        expect_ok(rc, reply, "AUTH");
        freeReplyObject(reply);
    }
    if (u.db != 0) {
        reply = redisCommand(rc, "SELECT %d", u.db);
        expect_ok(rc, reply, "SELECT");
        freeReplyObject(reply);
    }
    return rc;
}

static void del_key(redisContext *rc, const char *key)
{
    redisReply *reply = redisCommand(rc, "DEL %s", key);
    expect_ok(rc, reply, "DEL");
    freeReplyObject(reply);
}

static void del_prefixed(redisContext *rc, const char *prefix);

void tu_redis_del_queue(redisContext *rc, const char *queue)
{
    retryq_keys_t keys;
    retryq_error_t err = {0};
    if (retryq_keys_init(&keys, queue, &err) != RETRYQ_OK)
        die("queue name %s: %s", queue, err.message);
    del_key(rc, keys.pending);
    del_key(rc, keys.delayed);
    del_key(rc, keys.dead);
    del_key(rc, keys.workers);
    del_key(rc, keys.cancelled);
    char taken[sizeof keys.processing_prefix];
    snprintf(taken, sizeof taken, "{%s}:taken:", queue);
    del_prefixed(rc, keys.processing_prefix);
    del_prefixed(rc, taken);
}

/* Deletes every key named `prefix`*, the glob characters of the prefix escaped. */
static void del_prefixed(redisContext *rc, const char *prefix)
{
    char pattern[2 * RETRYQ_MAX_QUEUE_NAME + 80];
    size_t n = 0;
    for (const char *p = prefix; *p != '\0' && n + 3 < sizeof pattern; p++) {
        if (strchr("*?[]\\", *p) != NULL)
            pattern[n++] = '\\';
        pattern[n++] = *p;
    }
    pattern[n++] = '*';
    pattern[n] = '\0';
    char cursor[32] = "0";
    do {
        redisReply *reply = redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        expect_ok(rc, reply, "SCAN");
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
            die("Redis SCAN: unexpected reply");
        snprintf(cursor, sizeof cursor, "%s", reply->element[0]->str);
        for (size_t i = 0; i < reply->element[1]->elements; i++)
            del_key(rc, reply->element[1]->element[i]->str);
        freeReplyObject(reply);
    } while (strcmp(cursor, "0") != 0);
}
