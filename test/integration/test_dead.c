/*
 * The dead list against a real Redis (RETRYQ_TEST_REDIS_URL): entries are listed newest
 * first with their fields, text in another shape is kept raw, a requeue moves exactly
 * the chosen entry to the head of the queue with its delivery count reset, "all" moves
 * every valid job (across pages) and skips the rest, an invalid job is refused and left
 * in place, purge deletes and counts, and an unreachable Redis is RETRYQ_ERR_REDIS.
 * Every test uses its own queue name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

typedef struct fixture {
    char queue[64];
    retryq_client_t *client;
} fixture_t;

/* A dead-list entry as the worker writes it (queue_dead), malloc'd. */
static char *entry_text(const char *job, const char *reason, const char *at, const char *worker)
{
    cJSON *o = cJSON_CreateObject();
    assert_non_null(o);
    assert_non_null(cJSON_AddStringToObject(o, "job", job));
    assert_non_null(cJSON_AddStringToObject(o, "reason", reason));
    assert_non_null(cJSON_AddStringToObject(o, "at", at));
    assert_non_null(cJSON_AddStringToObject(o, "worker", worker));
    char *text = cJSON_PrintUnformatted(o);
    assert_non_null(text);
    cJSON_Delete(o);
    return text;
}

/* A valid job for execution `id` with the given delivery count (0: absent). */
static void job_text(int64_t id, int delivery, char *buf, size_t cap)
{
    retryq_job_t job;
    retryq_error_t err = {0};
    assert_int_equal(retryq_job_init(&job, id, "us-east", 2, 1, &err), RETRYQ_OK);
    snprintf(job.enqueued_at, sizeof job.enqueued_at, "2026-11-29T00:00:00Z");
    job.delivery = delivery;
    assert_true(retryq_job_encode(&job, buf, cap) > 0);
}

static long long integer_of(retryq_client_t *c, const char *fmt, const char *key, const char *arg)
{
    retryq_error_t err = {0};
    redisReply *r = rq_client_command(c, REDIS_REPLY_INTEGER, &err, fmt, key, arg);
    if (r == NULL)
        fail_msg("%s: %s", fmt, err.message);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void lpush(retryq_client_t *c, const char *key, const char *value)
{
    integer_of(c, "LPUSH %s %s", key, value);
}

/* LPUSHes a worker-style entry holding a valid job for execution `id` (delivery 5). */
static char *push_valid(retryq_client_t *c, int64_t id)
{
    char job[512], reason[64];
    job_text(id, 5, job, sizeof job);
    snprintf(reason, sizeof reason, "too many deliveries (%lld)", (long long)id);
    char *e = entry_text(job, reason, "2026-11-29T01:00:00Z", "host:1:abc");
    lpush(c, retryq_client_keys(c)->dead, e);
    return e;
}

/* The list's items, left to right, as one string joined by '\n'. */
static char *list_text(retryq_client_t *c, const char *key)
{
    retryq_error_t err = {0};
    redisReply *r = rq_client_command(c, REDIS_REPLY_ARRAY, &err, "LRANGE %s 0 -1", key);
    if (r == NULL)
        fail_msg("LRANGE: %s", err.message);
    size_t len = 1;
    for (size_t i = 0; i < r->elements; i++)
        len += r->element[i]->len + 1;
    char *out = calloc(1, len);
    assert_non_null(out);
    for (size_t i = 0; i < r->elements; i++) {
        strcat(out, r->element[i]->str);
        if (i + 1 < r->elements)
            strcat(out, "\n");
    }
    freeReplyObject(r);
    return out;
}

static void assert_list(retryq_client_t *c, const char *key, const char *want)
{
    char *got = list_text(c, key);
    assert_string_equal(got, want);
    free(got);
}

static int setup(void **state)
{
    static int counter;
    fixture_t *f = calloc(1, sizeof *f);
    retryq_error_t err = {0};
    assert_non_null(f);
    assert_non_null(getenv("RETRYQ_TEST_REDIS_URL"));
    snprintf(f->queue, sizeof f->queue, "t_dead_%d_%d", (int)getpid(), ++counter);
    retryq_options_t opts = {.redis_url = getenv("RETRYQ_TEST_REDIS_URL"), .queue = f->queue,
                             .connect_timeout_ms = 2000, .command_timeout_ms = 2000};
    f->client = retryq_client_new(&opts, &err);
    if (f->client == NULL)
        fail_msg("retryq_client_new: %s", err.message);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    const retryq_keys_t *k = retryq_client_keys(f->client);
    integer_of(f->client, "DEL %s %s", k->pending, k->dead);
    retryq_client_free(f->client);
    free(f);
    return 0;
}

/* ------------------------------------------------------------ list */

static void test_list_is_newest_first_with_fields(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    char *e[3];
    retryq_dead_entry_t *entries = NULL;
    size_t n = 99;
    retryq_error_t err = {0};
    for (int i = 0; i < 3; i++)
        e[i] = push_valid(c, 10 + i);

    assert_int_equal(retryq_dead_list(c, 0, -1, &entries, &n, &err), RETRYQ_OK);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) { /* index 0 is the last pushed */
        char job[512], reason[64];
        job_text(12 - i, 5, job, sizeof job);
        snprintf(reason, sizeof reason, "too many deliveries (%d)", 12 - i);
        assert_string_equal(entries[i].raw, e[2 - i]);
        assert_string_equal(entries[i].job, job);
        assert_string_equal(entries[i].reason, reason);
        assert_string_equal(entries[i].at, "2026-11-29T01:00:00Z");
        assert_string_equal(entries[i].worker, "host:1:abc");
    }
    retryq_dead_entries_free(entries, n);

    assert_int_equal(retryq_dead_list(c, 1, 1, &entries, &n, &err), RETRYQ_OK);
    assert_int_equal(n, 1);
    assert_string_equal(entries[0].raw, e[1]);
    retryq_dead_entries_free(entries, n);

    assert_int_equal(retryq_dead_list(c, 2, 10, &entries, &n, &err), RETRYQ_OK);
    assert_int_equal(n, 1);
    assert_string_equal(entries[0].raw, e[0]);
    retryq_dead_entries_free(entries, n);

    assert_int_equal(retryq_dead_list(c, 3, 10, &entries, &n, &err), RETRYQ_OK);
    assert_int_equal(n, 0);
    assert_null(entries);

    assert_int_equal(retryq_dead_list(c, -1, 10, &entries, &n, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_dead_list(c, 0, 0, &entries, &n, &err), RETRYQ_ERR_INVALID);
    for (int i = 0; i < 3; i++)
        cJSON_free(e[i]);
}

static void test_list_keeps_malformed_entries_raw(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const char *dead = retryq_client_keys(c)->dead;
    static const char *const malformed[] = {
        "not json", "[1,2]", "{\"reason\":\"no job\"}", "{\"job\":5,\"reason\":\"r\"}",
        "{\"job\":\"x\"} trailing", "",
    };
    const size_t count = sizeof malformed / sizeof malformed[0];
    retryq_dead_entry_t *entries = NULL;
    size_t n = 0;
    retryq_error_t err = {0};
    lpush(c, dead, "{\"job\":\"x\",\"reason\":7}"); /* in shape, reason not a string */
    for (size_t i = 0; i < count; i++)
        lpush(c, dead, malformed[i]);

    assert_int_equal(retryq_dead_list(c, 0, -1, &entries, &n, &err), RETRYQ_OK);
    assert_int_equal(n, count + 1);
    for (size_t i = 0; i < count; i++) {
        const retryq_dead_entry_t *e = &entries[count - 1 - i];
        assert_string_equal(e->raw, malformed[i]);
        assert_null(e->job);
        assert_null(e->reason);
        assert_null(e->at);
        assert_null(e->worker);
    }
    assert_string_equal(entries[count].job, "x");
    assert_null(entries[count].reason);
    assert_null(entries[count].at);
    retryq_dead_entries_free(entries, n);
}

/* ------------------------------------------------------------ requeue */

static void test_requeue_one_moves_exactly_that_entry_to_the_head(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    char *e[3], want[512], expected_dead[4096];
    int64_t moved = -1, skipped = -1;
    retryq_error_t err = {0};
    retryq_job_t job;
    lpush(c, k->pending, "pending-a");
    lpush(c, k->pending, "pending-b");
    for (int i = 0; i < 3; i++)
        e[i] = push_valid(c, 20 + i); /* dead list: e2, e1, e0 */

    assert_int_equal(retryq_dead_requeue(c, 1, &moved, &skipped, &err), RETRYQ_OK);
    assert_int_equal(moved, 1);
    assert_int_equal(skipped, 0);
    snprintf(expected_dead, sizeof expected_dead, "%s\n%s", e[2], e[0]);
    assert_list(c, k->dead, expected_dead);
    /* The job is at the right end (taken next), with no "delivery" field any more. */
    job_text(21, 0, want, sizeof want);
    assert_null(strstr(want, "delivery"));
    char expected_queue[1024];
    snprintf(expected_queue, sizeof expected_queue, "pending-b\npending-a\n%s", want);
    assert_list(c, k->pending, expected_queue);
    assert_int_equal(retryq_job_decode(want, strlen(want), 0, &job, &err), RETRYQ_OK);
    assert_int_equal(job.delivery, 0);
    assert_int_equal(job.execution_id, 21);
    for (int i = 0; i < 3; i++)
        cJSON_free(e[i]);
}

/* The runner's four-field payload, with an unknown field and a string execution_id. */
static void test_requeue_reencodes_runner_payload(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    char *e = entry_text("{\"execution_id\":\"9\",\"region\":\"eu-west\",\"question_index\":0,"
                         "\"retry_attempt\":2,\"delivery\":3,\"extra\":true}",
                         "r", "2026-11-29T01:00:00Z", "w");
    int64_t moved = 0;
    retryq_error_t err = {0};
    lpush(c, k->dead, e);
    assert_int_equal(retryq_dead_requeue(c, 0, &moved, NULL, &err), RETRYQ_OK);
    assert_int_equal(moved, 1);
    assert_list(c, k->pending, "{\"execution_id\":9,\"region\":\"eu-west\",\"question_index\":0,\"retry_attempt\":2}");
    assert_int_equal(integer_of(c, "LLEN %s", k->dead, NULL), 0);
    cJSON_free(e);
}

static void test_requeue_refuses_invalid_job_and_missing_entry(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    char *bad = entry_text("{\"execution_id\":0,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}",
                           "execution_id: must be a positive integer", "2026-11-29T01:00:00Z", "w");
    char expected[2048];
    int64_t moved = -1;
    retryq_error_t err = {0};
    lpush(c, k->dead, bad);
    lpush(c, k->dead, "garbage");

    assert_int_equal(retryq_dead_requeue(c, 1, &moved, NULL, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(err.code, RETRYQ_ERR_INVALID);
    assert_string_equal(err.message,
                        "entry 1 holds an invalid job: execution_id: must be a positive integer that fits int64");
    assert_int_equal(moved, 0);

    assert_int_equal(retryq_dead_requeue(c, 0, &moved, NULL, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "entry 0 is not a dead-list entry"));

    assert_int_equal(retryq_dead_requeue(c, 2, &moved, NULL, &err), RETRYQ_ERR_NOT_FOUND);
    assert_string_equal(err.message, "the dead list has no entry 2");
    assert_int_equal(retryq_dead_requeue(c, -2, &moved, NULL, &err), RETRYQ_ERR_INVALID);

    snprintf(expected, sizeof expected, "garbage\n%s", bad); /* nothing moved */
    assert_list(c, k->dead, expected);
    assert_int_equal(integer_of(c, "LLEN %s", k->pending, NULL), 0);
    cJSON_free(bad);
}

static void test_requeue_all_moves_valid_and_skips_the_rest(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    char *bad = entry_text("{\"execution_id\":1,\"region\":\"\",\"question_index\":0,\"retry_attempt\":1}",
                           "region", "2026-11-29T01:00:00Z", "w");
    char *v[3], expected[4096], jobs[3][512];
    int64_t moved = -1, skipped = -1;
    retryq_error_t err = {0};
    lpush(c, k->pending, "pending-a");
    v[0] = push_valid(c, 30); /* oldest */
    lpush(c, k->dead, bad);
    v[1] = push_valid(c, 31);
    lpush(c, k->dead, "{malformed");
    v[2] = push_valid(c, 32); /* newest */

    assert_int_equal(retryq_dead_requeue(c, -1, &moved, &skipped, &err), RETRYQ_OK);
    assert_int_equal(moved, 3);
    assert_int_equal(skipped, 2);
    snprintf(expected, sizeof expected, "{malformed\n%s", bad);
    assert_list(c, k->dead, expected);
    /* Oldest moved first, so the newest dead job is at the right end: it runs first. */
    for (int i = 0; i < 3; i++)
        job_text(30 + i, 0, jobs[i], sizeof jobs[i]);
    snprintf(expected, sizeof expected, "pending-a\n%s\n%s\n%s", jobs[0], jobs[1], jobs[2]);
    assert_list(c, k->pending, expected);

    /* Again: nothing left to move, the two invalid entries are skipped again. */
    assert_int_equal(retryq_dead_requeue(c, -1, &moved, &skipped, &err), RETRYQ_OK);
    assert_int_equal(moved, 0);
    assert_int_equal(skipped, 2);
    for (int i = 0; i < 3; i++)
        cJSON_free(v[i]);
    cJSON_free(bad);
}

/* More entries than one page (100), invalid ones spread among them. */
static void test_requeue_all_spans_pages(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    int64_t moved = 0, skipped = 0, valid = 0, invalid = 0;
    retryq_error_t err = {0};
    for (int i = 0; i < 250; i++) {
        if (i % 3 == 0) {
            char text[32];
            snprintf(text, sizeof text, "bad-%d", i);
            lpush(c, k->dead, text);
            invalid++;
        } else {
            cJSON_free(push_valid(c, 1000 + i));
            valid++;
        }
    }
    assert_int_equal(retryq_dead_requeue(c, -1, &moved, &skipped, &err), RETRYQ_OK);
    assert_int_equal(moved, valid);
    assert_int_equal(skipped, invalid);
    assert_int_equal(integer_of(c, "LLEN %s", k->pending, NULL), valid);
    assert_int_equal(integer_of(c, "LLEN %s", k->dead, NULL), invalid);
    /* Order kept: the right end of the queue is the newest valid entry (i = 248). */
    char want[512];
    job_text(1248, 0, want, sizeof want);
    redisReply *r = rq_client_command(c, REDIS_REPLY_STRING, &err, "LINDEX %s -1", k->pending);
    assert_non_null(r);
    assert_string_equal(r->str, want);
    freeReplyObject(r);
    r = rq_client_command(c, REDIS_REPLY_STRING, &err, "LINDEX %s 0", k->dead);
    assert_non_null(r);
    assert_string_equal(r->str, "bad-249");
    freeReplyObject(r);
}

/* ------------------------------------------------------------ purge */

static void test_purge_deletes_and_counts(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    int64_t removed = -1;
    retryq_error_t err = {0};
    lpush(c, k->pending, "pending-a");
    cJSON_free(push_valid(c, 1));
    lpush(c, k->dead, "x");
    lpush(c, k->dead, "y");
    assert_int_equal(retryq_dead_purge(c, &removed, &err), RETRYQ_OK);
    assert_int_equal(removed, 3);
    assert_int_equal(integer_of(c, "EXISTS %s", k->dead, NULL), 0);
    assert_int_equal(integer_of(c, "LLEN %s", k->pending, NULL), 1);
    assert_int_equal(retryq_dead_purge(c, &removed, &err), RETRYQ_OK);
    assert_int_equal(removed, 0);
}

/* ------------------------------------------------------------ Redis down */

static void test_unreachable_redis(void **state)
{
    fixture_t *f = *state;
    retryq_options_t opts = {.redis_url = "redis://127.0.0.1:1", .queue = f->queue,
                             .connect_timeout_ms = 1000};
    retryq_error_t err = {0};
    retryq_dead_entry_t *entries = (retryq_dead_entry_t *)&err; /* must be reset */
    size_t n = 7;
    int64_t count = 7;
    retryq_client_t *c = retryq_client_new(&opts, &err);
    assert_non_null(c);
    assert_int_equal(retryq_dead_list(c, 0, -1, &entries, &n, &err), RETRYQ_ERR_REDIS);
    assert_null(entries);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err.message, "cannot connect to Redis at 127.0.0.1:1"));
    assert_int_equal(retryq_dead_requeue(c, 0, &count, NULL, &err), RETRYQ_ERR_REDIS);
    assert_int_equal(count, 0);
    assert_int_equal(retryq_dead_requeue(c, -1, &count, NULL, &err), RETRYQ_ERR_REDIS);
    assert_int_equal(retryq_dead_purge(c, &count, &err), RETRYQ_ERR_REDIS);
    retryq_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_is_newest_first_with_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_keeps_malformed_entries_raw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_one_moves_exactly_that_entry_to_the_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_reencodes_runner_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_refuses_invalid_job_and_missing_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_all_moves_valid_and_skips_the_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_all_spans_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_deletes_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_redis, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
