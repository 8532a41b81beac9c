/*
 * The synchronous client against a real Redis (RETRYQ_TEST_REDIS_URL, set by
 * test/support/services.sh): enqueue writes the exact payload and the queue is FIFO,
 * raw payloads stay byte-exact, stats count what the keys hold, SELECT and AUTH are
 * applied, and an unreachable or silent Redis fails with RETRYQ_ERR_REDIS within the
 * configured timeouts. Every test uses its own queue name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

typedef struct fixture {
    char queue[64];
    retryq_client_t *client;
} fixture_t;

static const char *test_redis_url(void)
{
    return getenv("RETRYQ_TEST_REDIS_URL");
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static retryq_client_t *client_for(const char *redis_url, const char *queue, int timeout_ms)
{
    retryq_options_t opts = {.redis_url = redis_url, .queue = queue,
                             .connect_timeout_ms = timeout_ms, .command_timeout_ms = timeout_ms};
    retryq_error_t err = {0};
    retryq_client_t *c = retryq_client_new(&opts, &err);
    if (c == NULL)
        fail_msg("retryq_client_new: %s", err.message);
    return c;
}

/* A reply of the expected type, or the test fails with Redis's message. */
static redisReply *command(retryq_client_t *c, int type, const char *fmt, const char *key,
                           const char *arg)
{
    retryq_error_t err = {0};
    redisReply *r = rq_client_command(c, type, &err, fmt, key, arg);
    if (r == NULL)
        fail_msg("%s: %s", fmt, err.message);
    return r;
}

static long long integer_of(retryq_client_t *c, const char *fmt, const char *key, const char *arg)
{
    redisReply *r = command(c, REDIS_REPLY_INTEGER, fmt, key, arg);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* Deletes every key a test may have created for `queue` (its workers are named below). */
static void delete_queue(retryq_client_t *c)
{
    static const char *const workers[] = {"w", "w1", "w2", "orphan"};
    const retryq_keys_t *k = retryq_client_keys(c);
    char key[300];
    integer_of(c, "DEL %s %s", k->pending, k->dead);
    integer_of(c, "DEL %s %s", k->delayed, k->workers);
    for (size_t i = 0; i < sizeof workers / sizeof workers[0]; i++) {
        assert_true(retryq_keys_processing(k, workers[i], key, sizeof key) > 0);
        integer_of(c, "DEL %s", key, NULL);
        assert_true(retryq_keys_taken(k, workers[i], key, sizeof key) > 0);
        integer_of(c, "DEL %s", key, NULL);
    }
}

static int setup(void **state)
{
    static int counter;
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->queue, sizeof f->queue, "t_client_%d_%d", (int)getpid(), ++counter);
    f->client = client_for(test_redis_url(), f->queue, 2000);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    delete_queue(f->client);
    retryq_client_free(f->client);
    free(f);
    return 0;
}

/* A listening socket that accepts connections (kernel backlog) and never answers. */
static void silent_server(int *fd, char *url, size_t cap)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(*fd, 4), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    snprintf(url, cap, "redis://127.0.0.1:%d", ntohs(a.sin_port));
}

/* ------------------------------------------------------------ enqueue */

static void test_enqueue_writes_exact_payload_and_queue_is_fifo(void **state)
{
    fixture_t *f = *state;
    retryq_job_t jobs[3];
    char encoded[3][512];
    retryq_error_t err = {0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(retryq_job_init(&jobs[i], 100 + i, "us-east", i, 1, &err), RETRYQ_OK);
        assert_true(retryq_job_encode(&jobs[i], encoded[i], sizeof encoded[i]) > 0);
        assert_int_equal(retryq_enqueue(f->client, &jobs[i], &err), RETRYQ_OK);
    }
    redisReply *r = command(f->client, REDIS_REPLY_ARRAY, "LRANGE %s 0 -1", f->queue, NULL);
    assert_int_equal(r->elements, 3);
    for (int i = 0; i < 3; i++) /* LPUSH: the first job is at the right end */
        assert_string_equal(r->element[2 - i]->str, encoded[i]);
    freeReplyObject(r);
    for (int i = 0; i < 3; i++) {
        r = command(f->client, REDIS_REPLY_STRING, "RPOP %s", f->queue, NULL);
        assert_string_equal(r->str, encoded[i]);
        freeReplyObject(r);
    }
}

static void test_enqueue_raw_keeps_bytes(void **state)
{
    fixture_t *f = *state;
    const char payload[] = "not json\0with a NUL";
    retryq_error_t err = {0};
    assert_int_equal(retryq_enqueue_raw(f->client, payload, sizeof payload - 1, &err), RETRYQ_OK);
    redisReply *r = command(f->client, REDIS_REPLY_STRING, "RPOP %s", f->queue, NULL);
    assert_int_equal(r->len, sizeof payload - 1);
    assert_memory_equal(r->str, payload, sizeof payload - 1);
    freeReplyObject(r);
}

static void test_enqueue_refuses_invalid_job(void **state)
{
    fixture_t *f = *state;
    retryq_job_t job;
    retryq_error_t err = {0};
    assert_int_equal(retryq_job_init(&job, 1, "us-east", 0, 1, &err), RETRYQ_OK);
    job.region[0] = '\0';
    assert_int_equal(retryq_enqueue(f->client, &job, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, "region: must be a string of 1..128 bytes");
    assert_int_equal(integer_of(f->client, "LLEN %s", f->queue, NULL), 0);
}

/* ------------------------------------------------------------ enqueue_many */

/* 2,500 jobs over three LPUSH batches, two of them invalid: each job gets its own code,
 * the invalid ones are not sent, the rest are queued in the order given. */
static void test_enqueue_many_codes_and_order(void **state)
{
    fixture_t *f = *state;
    enum { N = 2500 };
    static retryq_job_t jobs[N];
    static int codes[N];
    retryq_error_t err = {0};
    size_t queued = 99;
    for (int i = 0; i < N; i++)
        assert_int_equal(retryq_job_init(&jobs[i], 1000 + i, "us-east", i % 7, 1, &err), RETRYQ_OK);
    jobs[7].region[0] = '\0';
    jobs[1500].retry_attempt = 0;
    assert_int_equal(retryq_enqueue_many(f->client, jobs, N, codes, &queued, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(queued, N - 2);
    assert_non_null(strstr(err.message, "2 of 2500 job(s) not queued; the first (job 7): region"));
    for (int i = 0; i < N; i++)
        assert_int_equal(codes[i], i == 7 || i == 1500 ? RETRYQ_ERR_INVALID : RETRYQ_OK);
    assert_int_equal(integer_of(f->client, "LLEN %s", f->queue, NULL), N - 2);
    char want[512];
    for (int i = 0; i < N; i++) { /* the worker takes from the right: the first job first */
        if (i == 7 || i == 1500)
            continue;
        assert_true(retryq_job_encode(&jobs[i], want, sizeof want) > 0);
        redisReply *r = command(f->client, REDIS_REPLY_STRING, "RPOP %s", f->queue, NULL);
        assert_string_equal(r->str, want);
        freeReplyObject(r);
    }
    assert_int_equal(retryq_enqueue_many(f->client, jobs, 0, NULL, &queued, &err), RETRYQ_OK);
    assert_int_equal(queued, 0);
}

/* Redis refuses every batch (the queue key holds a string): every job says so. */
static void test_enqueue_many_refused_batch(void **state)
{
    fixture_t *f = *state;
    retryq_job_t jobs[3];
    int codes[3];
    size_t queued = 99;
    retryq_error_t err = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(retryq_job_init(&jobs[i], 1 + i, "eu-west", 0, 1, &err), RETRYQ_OK);
    freeReplyObject(command(f->client, REDIS_REPLY_STATUS, "SET %s %s", f->queue, "not a list"));
    assert_int_equal(retryq_enqueue_many(f->client, jobs, 3, codes, &queued, &err), RETRYQ_ERR_REDIS);
    assert_int_equal(queued, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(codes[i], RETRYQ_ERR_REDIS);
    assert_non_null(strstr(err.message, "3 of 3 job(s) not queued; the first (job 0): Redis LPUSH failed: WRONGTYPE"));
    assert_non_null(f->client->rc); /* an error reply is not a broken connection */
}

/* A Redis that never answers: the pipeline times out, every job is reported (as perhaps
 * queued), the connection is dropped, and the call returns within the timeout. */
static void test_enqueue_many_silent_redis(void **state)
{
    fixture_t *f = *state;
    enum { N = 20000 };
    static retryq_job_t jobs[N];
    static int codes[N];
    retryq_error_t err = {0};
    size_t queued = 99;
    int fd = -1;
    char url[64];
    silent_server(&fd, url, sizeof url);
    for (int i = 0; i < N; i++)
        assert_int_equal(retryq_job_init(&jobs[i], 1 + i, "us-east", 0, 1, &err), RETRYQ_OK);
    retryq_client_t *c = client_for(url, f->queue, 300);
    int64_t start = monotonic_ms();
    assert_int_equal(retryq_enqueue_many(c, jobs, N, codes, &queued, &err), RETRYQ_ERR_REDIS);
    int64_t took = monotonic_ms() - start;
    if (took > 2000)
        fail_msg("enqueue_many took %lld ms with a 300 ms timeout", (long long)took);
    assert_int_equal(queued, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(codes[i], RETRYQ_ERR_REDIS);
    assert_non_null(strstr(err.message, "20000 of 20000 job(s) not queued"));
    assert_non_null(strstr(err.message, "may have been queued"));
    assert_null(c->rc);
    retryq_client_free(c);
    close(fd);
}

/* ------------------------------------------------------------ stats */

static int64_t redis_now_ms(retryq_client_t *c)
{
    redisReply *r = command(c, REDIS_REPLY_ARRAY, "TIME", NULL, NULL);
    int64_t ms = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(r);
    return ms;
}

static void push_list(retryq_client_t *c, const char *key, int n)
{
    for (int i = 0; i < n; i++)
        integer_of(c, "RPUSH %s %s", key, "{}");
}

static void add_worker(retryq_client_t *c, const char *id, int64_t heartbeat_ms)
{
    char score[32];
    snprintf(score, sizeof score, "%lld", (long long)heartbeat_ms);
    redisReply *r = rq_client_command(c, REDIS_REPLY_INTEGER, NULL, "ZADD %s %s %s",
                                      retryq_client_keys(c)->workers, score, id);
    assert_non_null(r);
    freeReplyObject(r);
}

static void processing_key(retryq_client_t *c, const char *worker, char *buf, size_t cap)
{
    assert_true(retryq_keys_processing(retryq_client_keys(c), worker, buf, cap) > 0);
}

/* n jobs in worker `worker`'s taken hash, the first one with two copies (counted once). */
static void hold_jobs(retryq_client_t *c, const char *worker, int n)
{
    char key[300];
    assert_true(retryq_keys_taken(retryq_client_keys(c), worker, key, sizeof key) > 0);
    for (int i = 0; i < n; i++) {
        char job[32];
        snprintf(job, sizeof job, "{\"n\":%d}", i);
        integer_of(c, "HINCRBY %s %s 1", key, job);
    }
    integer_of(c, "HINCRBY %s %s 1", key, "{\"n\":0}");
}

static void assert_near(int64_t value, int64_t want, int64_t slack)
{
    if (value < want - slack || value > want + slack)
        fail_msg("%lld is not within %lld of %lld", (long long)value, (long long)slack, (long long)want);
}

static void test_stats_count_every_key(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    retryq_job_t old, young;
    retryq_stats_t st;
    retryq_error_t err = {0};
    char key[300];
    int64_t now = redis_now_ms(c);

    assert_int_equal(retryq_job_init(&old, 1, "us-east", 0, 1, &err), RETRYQ_OK);
    rq_format_rfc3339(rq_now_ms() - 5000, old.enqueued_at, sizeof old.enqueued_at);
    assert_int_equal(retryq_job_init(&young, 2, "us-east", 0, 1, &err), RETRYQ_OK);
    assert_int_equal(retryq_enqueue(c, &old, &err), RETRYQ_OK);
    assert_int_equal(retryq_enqueue(c, &young, &err), RETRYQ_OK);
    integer_of(c, "ZADD %s 1 %s", k->delayed, "a");
    integer_of(c, "ZADD %s 2 %s", k->delayed, "b");
    integer_of(c, "ZADD %s 3 %s", k->delayed, "c");
    push_list(c, k->dead, 1);
    processing_key(c, "w1", key, sizeof key); /* one where a blocking pop lands, two taken */
    push_list(c, key, 1);
    hold_jobs(c, "w1", 2);
    hold_jobs(c, "w2", 1);
    processing_key(c, "orphan", key, sizeof key); /* a list whose worker is gone */
    push_list(c, key, 1);
    add_worker(c, "w1", now - 1000);
    add_worker(c, "w2", now - 30000);

    assert_int_equal(retryq_stats(c, &st, &err), RETRYQ_OK);
    assert_int_equal(st.pending, 2);
    assert_int_equal(st.delayed, 3);
    assert_int_equal(st.dead, 1);
    assert_int_equal(st.processing, 5);
    assert_near(st.oldest_pending_age_ms, 5000, 2000);
    assert_int_equal(st.worker_count, 2);
    assert_string_equal(st.workers[0].id, "w2"); /* ZRANGE: oldest heartbeat first */
    assert_near(st.workers[0].heartbeat_age_ms, 30000, 2000);
    assert_int_equal(st.workers[0].inflight, 1);
    assert_string_equal(st.workers[1].id, "w1");
    assert_near(st.workers[1].heartbeat_age_ms, 1000, 2000);
    assert_int_equal(st.workers[1].inflight, 3);
    retryq_stats_free(&st);
    assert_null(st.workers);
}

static void test_stats_of_an_empty_queue(void **state)
{
    fixture_t *f = *state;
    retryq_stats_t st;
    retryq_error_t err = {0};
    assert_int_equal(retryq_stats(f->client, &st, &err), RETRYQ_OK);
    assert_int_equal(st.pending + st.processing + st.delayed + st.dead, 0);
    assert_int_equal(st.oldest_pending_age_ms, -1);
    assert_int_equal(st.worker_count, 0);
    assert_null(st.workers);
    retryq_stats_free(&st);
}

static void test_oldest_age_unknown_for_runner_payload(void **state)
{
    fixture_t *f = *state;
    const char *go = "{\"execution_id\":123,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}";
    retryq_stats_t st;
    retryq_error_t err = {0};
    assert_int_equal(retryq_enqueue_raw(f->client, go, strlen(go), &err), RETRYQ_OK);
    assert_int_equal(retryq_stats(f->client, &st, &err), RETRYQ_OK);
    assert_int_equal(st.pending, 1);
    assert_int_equal(st.oldest_pending_age_ms, -1);
    retryq_stats_free(&st);
}

/* Glob characters in the queue name match only themselves: "q*" must not count "qx". */
static void test_stats_escape_glob_characters(void **state)
{
    fixture_t *f = *state;
    char glob_queue[80], other_queue[80], key[300];
    retryq_stats_t st;
    retryq_error_t err = {0};
    snprintf(glob_queue, sizeof glob_queue, "%s_[a]*", f->queue);
    snprintf(other_queue, sizeof other_queue, "%s_axx", f->queue);
    retryq_client_t *glob = client_for(test_redis_url(), glob_queue, 2000);
    retryq_client_t *other = client_for(test_redis_url(), other_queue, 2000);
    processing_key(other, "w", key, sizeof key);
    push_list(other, key, 5);
    processing_key(glob, "w", key, sizeof key);
    push_list(glob, key, 2);
    assert_int_equal(retryq_stats(glob, &st, &err), RETRYQ_OK);
    assert_int_equal(st.processing, 2);
    retryq_stats_free(&st);
    delete_queue(glob);
    delete_queue(other);
    retryq_client_free(glob);
    retryq_client_free(other);
}

/* ------------------------------------------------------------ connection */

/* The test server's URL rebuilt with another user, password or database. */
static void url_with(char *buf, size_t cap, const char *user, const char *password, int db)
{
    retryq_redis_url_t u;
    char auth[600] = "";
    assert_int_equal(retryq_redis_url_parse(test_redis_url(), &u, NULL), RETRYQ_OK);
    if (password != NULL) {
        size_t n = (size_t)snprintf(auth, sizeof auth, "%s:", user);
        for (const char *p = password; *p != '\0' && n + 4 < sizeof auth; p++)
            n += (size_t)snprintf(auth + n, sizeof auth - n, isalnum((unsigned char)*p) ? "%c" : "%%%02X",
                                  (unsigned char)*p);
        snprintf(auth + n, sizeof auth - n, "@");
    }
    if (u.is_unix)
        snprintf(buf, cap, "unix://%s%s?db=%d", auth, u.path, db);
    else
        snprintf(buf, cap, "redis://%s[%s]:%d/%d", auth, u.host, u.port, db);
}

static void test_select_uses_the_database(void **state)
{
    fixture_t *f = *state;
    char url[1024];
    retryq_redis_url_t u;
    retryq_error_t err = {0};
    assert_int_equal(retryq_redis_url_parse(test_redis_url(), &u, NULL), RETRYQ_OK);
    url_with(url, sizeof url, u.user, u.password[0] != '\0' ? u.password : NULL, u.db == 1 ? 2 : 1);
    retryq_client_t *other_db = client_for(url, f->queue, 2000);
    assert_int_equal(retryq_enqueue_raw(other_db, "x", 1, &err), RETRYQ_OK);
    assert_int_equal(integer_of(other_db, "LLEN %s", f->queue, NULL), 1);
    assert_int_equal(integer_of(f->client, "LLEN %s", f->queue, NULL), 0);
    delete_queue(other_db);
    retryq_client_free(other_db);
}

static void test_auth_failure_is_reported(void **state)
{
    fixture_t *f = *state;
    char url[1024];
    retryq_error_t err = {0};
    url_with(url, sizeof url, "nobody", "wrong-secret", 0);
    retryq_client_t *c = client_for(url, f->queue, 2000);
    assert_int_equal(retryq_enqueue_raw(c, "x", 1, &err), RETRYQ_ERR_REDIS);
    assert_int_equal(err.code, RETRYQ_ERR_REDIS);
    assert_non_null(strstr(err.message, "Redis AUTH failed: "));
    assert_null(strstr(err.message, "wrong-secret"));
    assert_null(c->rc); /* nothing half-open is kept */
    retryq_client_free(c);
}

/* A loopback port with nothing listening (bound, read, released). */
static int closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_unreachable_redis_fails_fast(void **state)
{
    fixture_t *f = *state;
    char url[64], want[64];
    retryq_stats_t st;
    retryq_error_t err = {0};
    int port = closed_port();
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    snprintf(want, sizeof want, "cannot connect to Redis at 127.0.0.1:%d: ", port);
    retryq_client_t *c = client_for(url, f->queue, 1000);
    int64_t start = monotonic_ms();
    assert_int_equal(retryq_enqueue_raw(c, "x", 1, &err), RETRYQ_ERR_REDIS);
    assert_true(strncmp(err.message, want, strlen(want)) == 0);
    assert_int_equal(retryq_stats(c, &st, &err), RETRYQ_ERR_REDIS);
    assert_null(st.workers);
    assert_true(monotonic_ms() - start < 1500);
    retryq_client_free(c);
}

/* A server that accepts the connection (kernel backlog) and never answers. */
static void test_silent_redis_times_out(void **state)
{
    fixture_t *f = *state;
    char url[64];
    retryq_error_t err = {0};
    int fd = -1;
    silent_server(&fd, url, sizeof url);
    retryq_client_t *c = client_for(url, f->queue, 300);
    for (int attempt = 0; attempt < 2; attempt++) { /* the second call reconnects */
        int64_t start = monotonic_ms();
        assert_int_equal(retryq_enqueue_raw(c, "x", 1, &err), RETRYQ_ERR_REDIS);
        int64_t took = monotonic_ms() - start;
        if (took < 250 || took > 2000)
            fail_msg("the command took %lld ms with a 300 ms timeout", (long long)took);
        assert_non_null(strstr(err.message, "Redis LPUSH failed: "));
        assert_null(c->rc);
    }
    retryq_client_free(c);
    close(fd);
}

/* ------------------------------------------------------------ settings */

static void test_settings_from_environment_and_refusals(void **state)
{
    retryq_error_t err = {0};
    retryq_options_t bad_url = {.redis_url = "rediss://h"}, bad_queue = {.queue = "a b"};
    retryq_options_t bad_timeout = {.connect_timeout_ms = -1};
    (void)state;
    setenv("RETRYQ_QUEUE", "from_env", 1);
    setenv("RETRYQ_REDIS_URL", "redis://envhost:7000/3", 1);
    unsetenv("RETRYQ_DATABASE_URL");
    retryq_client_t *c = retryq_client_new(NULL, &err);
    assert_non_null(c);
    assert_string_equal(retryq_client_keys(c)->pending, "from_env");
    assert_string_equal(c->redis.host, "envhost");
    assert_int_equal(c->redis.db, 3);
    assert_int_equal(c->connect_timeout_ms, 5000);
    assert_int_equal(c->command_timeout_ms, 5000);
    assert_null(rq_client_pg(c, &err));
    assert_int_equal(err.code, RETRYQ_ERR_DATABASE);
    assert_non_null(strstr(err.message, "RETRYQ_DATABASE_URL"));
    retryq_client_free(c);
    unsetenv("RETRYQ_QUEUE");
    unsetenv("RETRYQ_REDIS_URL");
    assert_null(retryq_client_new(&bad_url, &err));
    assert_non_null(strstr(err.message, "no TLS"));
    assert_null(retryq_client_new(&bad_queue, &err));
    assert_non_null(strstr(err.message, "queue name"));
    assert_null(retryq_client_new(&bad_timeout, &err));
    assert_non_null(strstr(err.message, "connect timeout"));
}

static void test_unreachable_postgres_is_one_line(void **state)
{
    char url[96];
    retryq_error_t err = {0};
    (void)state;
    snprintf(url, sizeof url, "postgresql://retryq@127.0.0.1:%d/none", closed_port());
    retryq_options_t opts = {.database_url = url, .connect_timeout_ms = 1000};
    retryq_client_t *c = retryq_client_new(&opts, &err);
    assert_non_null(c);
    assert_null(rq_client_pg(c, &err));
    assert_int_equal(err.code, RETRYQ_ERR_DATABASE);
    assert_true(strncmp(err.message, "cannot connect to PostgreSQL: ", 30) == 0);
    assert_null(strchr(err.message, '\n'));
    assert_null(c->pg);
    retryq_client_free(c);
}

int main(void)
{
    if (test_redis_url() == NULL || test_redis_url()[0] == '\0') {
        fprintf(stderr, "test_client: RETRYQ_TEST_REDIS_URL is not set; run it through ctest "
                        "(test/support/services.sh exec) or export the URL of a test Redis\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_enqueue_writes_exact_payload_and_queue_is_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_raw_keeps_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_refuses_invalid_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_many_codes_and_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_many_refused_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enqueue_many_silent_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_count_every_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_of_an_empty_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oldest_age_unknown_for_runner_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_escape_glob_characters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_select_uses_the_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_failure_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_redis_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_redis_times_out, setup, teardown),
        cmocka_unit_test(test_settings_from_environment_and_refusals),
        cmocka_unit_test(test_unreachable_postgres_is_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
