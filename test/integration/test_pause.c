/*
 * Pausing the queue against a real Redis (RETRYQ_TEST_REDIS_URL): retryq_pause writes the
 * hash {Q}:paused (reason, by, since_ms on Redis's clock) with no expiry; "by" defaults to
 * user@host; a second pause keeps the first as it is; retryq_pause_get reads it with its
 * age, says "not paused" for a queue that runs and reads a key of another type as a pause
 * that says so; retryq_resume deletes it, returns what it deleted and says when there was
 * none; retryq_stats carries the pause; invalid reasons and names are refused with a
 * sentence and write nothing; an unreachable Redis is RETRYQ_ERR_REDIS. Every test uses
 * its own queue name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "testutil.h"

#define CLOCK_SLACK_MS 2000 /* between Redis's TIME read by the test and by the script */

typedef struct fixture {
    char *queue;
    retryq_client_t *client;
    redisContext *redis;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->queue = tu_unique_queue("t_pause");
    f->client = tu_client(NULL, tu_redis_url(), f->queue);
    f->redis = tu_redis_connect();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    freeReplyObject(redisCommand(f->redis, "DEL %s", retryq_client_keys(f->client)->paused));
    tu_redis_del_queue(f->redis, f->queue);
    redisFree(f->redis);
    retryq_client_free(f->client);
    free(f->queue);
    free(f);
    return 0;
}

static int64_t redis_now(retryq_client_t *c)
{
    int64_t now = 0;
    retryq_error_t err = {0};
    if (rq_client_time_ms(c, &now, &err) != RETRYQ_OK)
        fail_msg("TIME: %s", err.message);
    return now;
}

/* HGET {Q}:paused <field> as a malloc'd string, NULL when absent. */
static char *field(fixture_t *f, const char *name)
{
    redisReply *r = redisCommand(f->redis, "HGET %s %s", retryq_client_keys(f->client)->paused, name);
    assert_non_null(r);
    char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return v;
}

static long long integer(fixture_t *f, const char *fmt, const char *arg)
{
    redisReply *r = redisCommand(f->redis, fmt, arg);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static void assert_field(fixture_t *f, const char *name, const char *want)
{
    char *v = field(f, name);
    if (v == NULL || strcmp(v, want) != 0)
        fail_msg("{Q}:paused %s: got \"%s\", want \"%s\"", name, v != NULL ? v : "(none)", want);
    free(v);
}

static void test_key_name(void **state)
{
    fixture_t *f = *state;
    char want[300];
    snprintf(want, sizeof want, "{%s}:paused", f->queue);
    assert_string_equal(retryq_client_keys(f->client)->paused, want);
}

static void test_pause_writes_the_hash_on_redis_clock(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    retryq_pause_state_t p;
    bool applied = false;
    int64_t before = redis_now(f->client);
    assert_int_equal(retryq_pause(f->client, "provider outage ✓", "alice@ops", &applied, &p, &err), RETRYQ_OK);
    int64_t after = redis_now(f->client);
    assert_true(applied);
    assert_true(p.paused);
    assert_string_equal(p.reason, "provider outage ✓");
    assert_string_equal(p.by, "alice@ops");
    assert_in_range(p.since_ms, before - CLOCK_SLACK_MS, after + CLOCK_SLACK_MS);
    assert_in_range(p.age_ms, 0, CLOCK_SLACK_MS);
    assert_field(f, "reason", "provider outage ✓");
    assert_field(f, "by", "alice@ops");
    char since[32];
    snprintf(since, sizeof since, "%lld", (long long)p.since_ms);
    assert_field(f, "since_ms", since);
    assert_int_equal(integer(f, "PTTL %s", retryq_client_keys(f->client)->paused), -1); /* no expiry */
}

static void test_by_defaults_to_user_at_host(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    retryq_pause_state_t p;
    char host[128] = "";
    assert_int_equal(gethostname(host, sizeof host), 0);
    assert_int_equal(retryq_pause(f->client, NULL, NULL, NULL, &p, &err), RETRYQ_OK);
    const char *at = strrchr(p.by, '@');
    assert_non_null(at);
    assert_true(at > p.by);
    assert_string_equal(at + 1, host);
    assert_string_equal(p.reason, "");
    assert_field(f, "reason", "");
}

static void test_second_pause_keeps_the_first(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    retryq_pause_state_t first, second;
    bool applied = true;
    assert_int_equal(retryq_pause(f->client, "first", "a", NULL, &first, &err), RETRYQ_OK);
    assert_int_equal(retryq_pause(f->client, "second", "b", &applied, &second, &err), RETRYQ_OK);
    assert_false(applied);
    assert_true(second.paused);
    assert_string_equal(second.reason, "first");
    assert_string_equal(second.by, "a");
    assert_int_equal(second.since_ms, first.since_ms);
    assert_field(f, "reason", "first");
}

static void test_get_reads_the_pause_or_says_running(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    retryq_pause_state_t p;
    memset(&p, 0x55, sizeof p);
    assert_int_equal(retryq_pause_get(f->client, &p, &err), RETRYQ_OK);
    assert_false(p.paused);
    assert_string_equal(p.reason, "");
    assert_string_equal(p.by, "");
    assert_int_equal(p.since_ms, 0);
    assert_int_equal(p.age_ms, -1);

    /* Written as another program would: the age counts from since_ms on Redis's clock. */
    char since[32];
    snprintf(since, sizeof since, "%lld", (long long)(redis_now(f->client) - 90000));
    freeReplyObject(redisCommand(f->redis, "HSET %s reason %s by %s since_ms %s",
                                 retryq_client_keys(f->client)->paused, "maintenance", "bob@h", since));
    assert_int_equal(retryq_pause_get(f->client, &p, &err), RETRYQ_OK);
    assert_true(p.paused);
    assert_string_equal(p.reason, "maintenance");
    assert_string_equal(p.by, "bob@h");
    assert_int_equal(p.since_ms, strtoll(since, NULL, 10));
    assert_in_range(p.age_ms, 90000, 90000 + CLOCK_SLACK_MS);
}

static void test_unreadable_fields_still_mean_paused(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    retryq_pause_state_t p;
    /* A hand-made pause with a bad time and no reason: paused, time unknown. */
    freeReplyObject(redisCommand(f->redis, "HSET %s since_ms %s", retryq_client_keys(f->client)->paused,
                                 "yesterday"));
    assert_int_equal(retryq_pause_get(f->client, &p, &err), RETRYQ_OK);
    assert_true(p.paused);
    assert_int_equal(p.since_ms, 0);
    assert_int_equal(p.age_ms, -1);
    assert_string_equal(p.reason, "");

    /* A key of another type written by hand: a pause whose reason says so; pause keeps
     * it, resume deletes it. */
    freeReplyObject(redisCommand(f->redis, "DEL %s", retryq_client_keys(f->client)->paused));
    freeReplyObject(redisCommand(f->redis, "SET %s %s", retryq_client_keys(f->client)->paused, "junk"));
    assert_int_equal(retryq_pause_get(f->client, &p, &err), RETRYQ_OK);
    assert_true(p.paused);
    assert_non_null(strstr(p.reason, "unreadable pause: "));
    assert_non_null(strstr(p.reason, "is not a hash (retryq resume deletes it)"));
    bool applied = true;
    assert_int_equal(retryq_pause(f->client, "new", NULL, &applied, &p, &err), RETRYQ_OK);
    assert_false(applied);
    bool was = false;
    assert_int_equal(retryq_resume(f->client, &was, NULL, &err), RETRYQ_OK);
    assert_true(was);
    assert_int_equal(integer(f, "EXISTS %s", retryq_client_keys(f->client)->paused), 0);
}

static void test_resume_deletes_and_returns_the_pause(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    retryq_pause_state_t p, deleted;
    bool was = false;
    assert_int_equal(retryq_pause(f->client, "deploy", "carol@x", NULL, &p, &err), RETRYQ_OK);
    assert_int_equal(retryq_resume(f->client, &was, &deleted, &err), RETRYQ_OK);
    assert_true(was);
    assert_true(deleted.paused);
    assert_string_equal(deleted.reason, "deploy");
    assert_string_equal(deleted.by, "carol@x");
    assert_int_equal(deleted.since_ms, p.since_ms);
    assert_int_equal(integer(f, "EXISTS %s", retryq_client_keys(f->client)->paused), 0);
    assert_int_equal(retryq_pause_get(f->client, &p, &err), RETRYQ_OK);
    assert_false(p.paused);

    /* Not paused: not an error, and says so. */
    was = true;
    assert_int_equal(retryq_resume(f->client, &was, &deleted, &err), RETRYQ_OK);
    assert_false(was);
    assert_false(deleted.paused);
    assert_int_equal(retryq_resume(f->client, NULL, NULL, &err), RETRYQ_OK);

    /* A new pause after the resume begins anew. */
    bool applied = false;
    assert_int_equal(retryq_pause(f->client, "again", "d", &applied, &p, &err), RETRYQ_OK);
    assert_true(applied);
    assert_string_equal(p.reason, "again");
}

static void test_stats_carry_the_pause(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    retryq_stats_t st;
    assert_int_equal(retryq_stats(f->client, &st, &err), RETRYQ_OK);
    assert_false(st.pause.paused);
    retryq_stats_free(&st);
    assert_int_equal(retryq_pause(f->client, "stats", "e@h", NULL, NULL, &err), RETRYQ_OK);
    assert_int_equal(retryq_stats(f->client, &st, &err), RETRYQ_OK);
    assert_true(st.pause.paused);
    assert_string_equal(st.pause.reason, "stats");
    assert_string_equal(st.pause.by, "e@h");
    assert_true(st.pause.since_ms > 0);
    retryq_stats_free(&st);
}

static void test_invalid_reason_and_by_are_refused(void **state)
{
    fixture_t *f = *state;
    retryq_error_t err = {0};
    char long_reason[RETRYQ_MAX_PAUSE_REASON + 2];
    memset(long_reason, 'r', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = '\0';
    char long_by[RETRYQ_MAX_PAUSE_BY + 2];
    memset(long_by, 'b', sizeof long_by - 1);
    long_by[sizeof long_by - 1] = '\0';
    static const struct {
        const char *reason, *by, *message;
    } cases[] = {
        {"line\nbreak", NULL, "reason: must not contain control characters"},
        {"\xff\xfe", NULL, "reason: must be valid UTF-8"},
        {"ok", "tab\there", "by: must not contain control characters"},
        {"ok", "\xc3", "by: must be valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(retryq_pause(f->client, cases[i].reason, cases[i].by, NULL, NULL, &err),
                         RETRYQ_ERR_INVALID);
        assert_string_equal(err.message, cases[i].message);
    }
    assert_int_equal(retryq_pause(f->client, long_reason, NULL, NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, "reason: 201 bytes, at most 200");
    assert_int_equal(retryq_pause(f->client, "ok", long_by, NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, "by: 256 bytes, at most 255");
    assert_int_equal(integer(f, "EXISTS %s", retryq_client_keys(f->client)->paused), 0);
    /* The longest reason is accepted whole. */
    long_reason[RETRYQ_MAX_PAUSE_REASON] = '\0';
    retryq_pause_state_t p;
    assert_int_equal(retryq_pause(f->client, long_reason, NULL, NULL, &p, &err), RETRYQ_OK);
    assert_int_equal(strlen(p.reason), RETRYQ_MAX_PAUSE_REASON);
    assert_int_equal(retryq_pause(NULL, "", NULL, NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_resume(NULL, NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_pause_get(f->client, NULL, &err), RETRYQ_ERR_INVALID);
}

static void test_unreachable_redis_is_a_redis_error(void **state)
{
    (void)state;
    int fd = -1;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", tu_closed_port(&fd));
    retryq_options_t opts = {.redis_url = url, .queue = "t_pause_down", .connect_timeout_ms = 500,
                             .command_timeout_ms = 500};
    retryq_error_t err = {0};
    retryq_client_t *c = retryq_client_new(&opts, &err);
    assert_non_null(c);
    retryq_pause_state_t p;
    bool was = true;
    assert_int_equal(retryq_pause(c, "x", NULL, NULL, NULL, &err), RETRYQ_ERR_REDIS);
    assert_non_null(strstr(err.message, "cannot connect to Redis"));
    assert_int_equal(retryq_resume(c, &was, NULL, &err), RETRYQ_ERR_REDIS);
    assert_false(was);
    assert_int_equal(retryq_pause_get(c, &p, &err), RETRYQ_ERR_REDIS);
    assert_false(p.paused);
    retryq_client_free(c);
    close(fd);
}

int main(void)
{
    if (!tu_have_services()) {
        fprintf(stderr, "test_pause: run it through ctest (test/support/services.sh exec)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_writes_the_hash_on_redis_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_by_defaults_to_user_at_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_pause_keeps_the_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_reads_the_pause_or_says_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_fields_still_mean_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_deletes_and_returns_the_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_carry_the_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_reason_and_by_are_refused, setup, teardown),
        cmocka_unit_test(test_unreachable_redis_is_a_redis_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
