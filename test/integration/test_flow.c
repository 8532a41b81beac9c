/*
 * Flow control's operator side against a real Redis (RETRYQ_TEST_REDIS_URL): a pause
 * writes the document, its expiry and its index member on Redis's clock; "until resumed"
 * is the longest pause; a shorter pause never shortens a longer one (the operator's own or
 * a worker's) while a longer one replaces it; resume deletes any pause with its member and
 * says when there was none; the listing reports pauses, breakers and permits as the
 * workers write them, skips stale index members, reads each index in bounded pages whose
 * union is every key exactly; invalid keys, durations, reasons and cursors are refused
 * with a sentence and write nothing; an unreachable Redis is RETRYQ_ERR_REDIS. Every test
 * uses its own queue name.
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
#include "testutil.h"

#define MINUTE_MS INT64_C(60000)
#define CLOCK_SLACK_MS 2000 /* between Redis's TIME read by the test and by the script */

typedef struct fixture {
    char queue[64];
    retryq_client_t *client;
} fixture_t;

static int setup(void **state)
{
    static int counter;
    fixture_t *f = calloc(1, sizeof *f);
    retryq_error_t err = {0};
    assert_non_null(f);
    snprintf(f->queue, sizeof f->queue, "t_flow_%d_%d", (int)getpid(), ++counter);
    retryq_options_t opts = {.redis_url = tu_redis_url(), .queue = f->queue,
                             .connect_timeout_ms = 2000, .command_timeout_ms = 5000};
    f->client = retryq_client_new(&opts, &err);
    if (f->client == NULL)
        fail_msg("retryq_client_new: %s", err.message);
    *state = f;
    return 0;
}

/* ------------------------------------------------------------ Redis helpers */

static redisReply *cmd(retryq_client_t *c, int type, const char *fmt, ...)
{
    retryq_error_t err = {0};
    redisContext *rc = rq_client_redis(c, &err);
    if (rc == NULL)
        fail_msg("Redis: %s", err.message);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    if (r == NULL)
        fail_msg("%s: %s", fmt, rc->errstr);
    if (type >= 0 && r->type != type)
        fail_msg("%s: reply type %d, want %d (%s)", fmt, r->type, type,
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
    return r;
}

static long long integer(retryq_client_t *c, const char *fmt, ...)
{
    retryq_error_t err = {0};
    redisContext *rc = rq_client_redis(c, &err);
    if (rc == NULL)
        fail_msg("Redis: %s", err.message);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER)
        fail_msg("%s: not an integer reply", fmt);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static int64_t redis_now(retryq_client_t *c)
{
    int64_t now = 0;
    retryq_error_t err = {0};
    if (rq_client_time_ms(c, &now, &err) != RETRYQ_OK)
        fail_msg("TIME: %s", err.message);
    return now;
}

static void flow_name(retryq_client_t *c, retryq_flow_kind_t kind, const char *key, char *buf, size_t cap)
{
    assert_true(retryq_keys_flow(retryq_client_keys(c), kind, key, buf, cap) > 0);
}

/* The stored pause document of `key`, parsed (cJSON_Delete it); NULL when absent. */
static cJSON *pause_doc(retryq_client_t *c, const char *key)
{
    char name[600];
    flow_name(c, RETRYQ_FLOW_PAUSE, key, name, sizeof name);
    redisReply *r = cmd(c, -1, "GET %s", name);
    cJSON *doc = r->type == REDIS_REPLY_STRING ? cJSON_Parse(r->str) : NULL;
    if (r->type == REDIS_REPLY_STRING && doc == NULL)
        fail_msg("pause of %s is not JSON: %s", key, r->str);
    freeReplyObject(r);
    return doc;
}

static int64_t pause_pttl(retryq_client_t *c, const char *key)
{
    char name[600];
    flow_name(c, RETRYQ_FLOW_PAUSE, key, name, sizeof name);
    return integer(c, "PTTL %s", name);
}

/* The index score of `key`, or -1 when it is not a member. */
static int64_t index_score(retryq_client_t *c, const char *key)
{
    redisReply *r = cmd(c, -1, "ZSCORE %s %s", retryq_client_keys(c)->flow_paused, key);
    int64_t v = r->type == REDIS_REPLY_STRING ? (int64_t)strtod(r->str, NULL) : -1;
    freeReplyObject(r);
    return v;
}

static const char *doc_string(const cJSON *doc, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, name);
    assert_true(cJSON_IsString(item));
    return item->valuestring;
}

static int64_t doc_number(const cJSON *doc, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(doc, name);
    assert_true(cJSON_IsNumber(item));
    return (int64_t)item->valuedouble;
}

static void assert_near(int64_t got, int64_t want, int64_t slack)
{
    if (got < want - slack || got > want + slack)
        fail_msg("%lld is not within %lld of %lld", (long long)got, (long long)slack, (long long)want);
}

/* Writes a pause as a worker would (cause, by, until `left_ms` from now), indexed. */
static void worker_pause(retryq_client_t *c, const char *key, const char *cause, int64_t left_ms)
{
    char name[600], doc[512];
    int64_t until = redis_now(c) + left_ms;
    flow_name(c, RETRYQ_FLOW_PAUSE, key, name, sizeof name);
    snprintf(doc, sizeof doc,
             "{\"cause\":\"%s\",\"reason\":\"429 Retry-After\",\"until_ms\":%lld,\"by\":\"h:1:w\"}", cause,
             (long long)until);
    freeReplyObject(cmd(c, REDIS_REPLY_STATUS, "SET %s %s PX %lld", name, doc, (long long)left_ms));
    integer(c, "ZADD %s %lld %s", retryq_client_keys(c)->flow_paused, (long long)until, key);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    const retryq_keys_t *k = retryq_client_keys(f->client);
    char pattern[128];
    snprintf(pattern, sizeof pattern, "{%s}:*", f->queue);
    /* Only this test's own queue: its keys are few, one SCAN pass is enough here. */
    char cursor[32] = "0";
    do {
        redisReply *r = cmd(f->client, REDIS_REPLY_ARRAY, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++)
            integer(f->client, "DEL %s", r->element[1]->element[i]->str);
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    integer(f->client, "DEL %s", k->pending);
    retryq_client_free(f->client);
    free(f);
    return 0;
}

/* ------------------------------------------------------------ pause */

static void test_pause_writes_document_expiry_and_index(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    retryq_flow_pause_t in_place;
    retryq_error_t err = {0};
    bool applied = false;
    int64_t before = redis_now(c);
    if (retryq_flow_pause(c, "meta/llama-3/eu-west", 5 * MINUTE_MS, "maintenance \"window\" <b>", &applied,
                          &in_place, &err) != RETRYQ_OK)
        fail_msg("pause: %s", err.message);
    assert_true(applied);

    cJSON *doc = pause_doc(c, "meta/llama-3/eu-west");
    assert_non_null(doc);
    assert_string_equal(doc_string(doc, "cause"), "operator");
    assert_string_equal(doc_string(doc, "reason"), "maintenance \"window\" <b>");
    assert_string_equal(doc_string(doc, "by"), "operator");
    int64_t until = doc_number(doc, "until_ms");
    cJSON_Delete(doc);
    assert_near(until, before + 5 * MINUTE_MS, CLOCK_SLACK_MS);
    assert_near(pause_pttl(c, "meta/llama-3/eu-west"), 5 * MINUTE_MS, CLOCK_SLACK_MS);
    assert_int_equal(index_score(c, "meta/llama-3/eu-west"), until);

    assert_string_equal(in_place.key, "meta/llama-3/eu-west");
    assert_string_equal(in_place.cause, "operator");
    assert_string_equal(in_place.by, "operator");
    assert_string_equal(in_place.reason, "maintenance \"window\" <b>");
    assert_int_equal(in_place.until_ms, until);
    assert_near(in_place.left_ms, 5 * MINUTE_MS, CLOCK_SLACK_MS);
}

static void test_pause_until_resumed_is_the_longest(void **state)
{
    fixture_t *f = *state;
    retryq_flow_pause_t in_place;
    retryq_error_t err = {0};
    bool applied = false;
    assert_int_equal(retryq_flow_pause(f->client, "llama3.2-1b/us-east", 0, NULL, &applied, &in_place, &err),
                     RETRYQ_OK);
    assert_true(applied);
    assert_string_equal(in_place.reason, "");
    assert_near(in_place.left_ms, RETRYQ_FLOW_PAUSE_MAX_MS, CLOCK_SLACK_MS);
    assert_near(pause_pttl(f->client, "llama3.2-1b/us-east"), RETRYQ_FLOW_PAUSE_MAX_MS, CLOCK_SLACK_MS);
    /* Any explicit duration is shorter (a second 30 days is later by the time between). */
    assert_int_equal(retryq_flow_pause(f->client, "llama3.2-1b/us-east", RETRYQ_FLOW_PAUSE_MAX_MS - MINUTE_MS,
                                       "again", &applied, &in_place, &err),
                     RETRYQ_OK);
    assert_false(applied);
    assert_string_equal(in_place.reason, "");
}

static void test_shorter_pause_never_shortens_a_longer_one(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const char *key = "gpt-4o/eu-west";
    retryq_flow_pause_t first, kept, longer;
    retryq_error_t err = {0};
    bool applied = true;
    assert_int_equal(retryq_flow_pause(c, key, 10 * MINUTE_MS, "long", &applied, &first, &err), RETRYQ_OK);
    assert_true(applied);

    assert_int_equal(retryq_flow_pause(c, key, MINUTE_MS, "short", &applied, &kept, &err), RETRYQ_OK);
    assert_false(applied);
    assert_string_equal(kept.reason, "long");
    assert_int_equal(kept.until_ms, first.until_ms);
    cJSON *doc = pause_doc(c, key);
    assert_string_equal(doc_string(doc, "reason"), "long");
    assert_int_equal(doc_number(doc, "until_ms"), first.until_ms);
    cJSON_Delete(doc);
    assert_true(pause_pttl(c, key) > 9 * MINUTE_MS);
    assert_int_equal(index_score(c, key), first.until_ms);

    assert_int_equal(retryq_flow_pause(c, key, 20 * MINUTE_MS, "longer", &applied, &longer, &err), RETRYQ_OK);
    assert_true(applied);
    assert_true(longer.until_ms > first.until_ms);
    assert_string_equal(longer.reason, "longer");
    assert_true(pause_pttl(c, key) > 19 * MINUTE_MS);
    assert_int_equal(index_score(c, key), longer.until_ms);
}

static void test_operator_pause_keeps_a_longer_worker_pause(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    retryq_flow_pause_t kept;
    retryq_error_t err = {0};
    bool applied = true;
    worker_pause(c, "gpt-4o/us-east", "retry_after", 10 * MINUTE_MS);
    assert_int_equal(retryq_flow_pause(c, "gpt-4o/us-east", 2 * MINUTE_MS, "mine", &applied, &kept, &err),
                     RETRYQ_OK);
    assert_false(applied);
    assert_string_equal(kept.cause, "retry_after");
    assert_string_equal(kept.by, "h:1:w");
    assert_string_equal(kept.reason, "429 Retry-After");
    cJSON *doc = pause_doc(c, "gpt-4o/us-east");
    assert_string_equal(doc_string(doc, "cause"), "retry_after");
    cJSON_Delete(doc);

    /* A worker's shorter pause is replaced by the operator's longer one. */
    worker_pause(c, "gpt-4o/asia-pacific", "breaker", 5000);
    assert_int_equal(retryq_flow_pause(c, "gpt-4o/asia-pacific", MINUTE_MS, "mine", &applied, &kept, &err),
                     RETRYQ_OK);
    assert_true(applied);
    assert_string_equal(kept.cause, "operator");
}

static void test_pause_replaces_an_unreadable_document(void **state)
{
    fixture_t *f = *state;
    char name[600];
    retryq_error_t err = {0};
    bool applied = false;
    flow_name(f->client, RETRYQ_FLOW_PAUSE, "m/r", name, sizeof name);
    freeReplyObject(cmd(f->client, REDIS_REPLY_STATUS, "SET %s %s", name, "not json"));
    assert_int_equal(retryq_flow_pause(f->client, "m/r", MINUTE_MS, "x", &applied, NULL, &err), RETRYQ_OK);
    assert_true(applied);
    cJSON *doc = pause_doc(f->client, "m/r");
    assert_string_equal(doc_string(doc, "cause"), "operator");
    cJSON_Delete(doc);
}

static void test_pause_drops_stale_index_members(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    retryq_error_t err = {0};
    const char *index = retryq_client_keys(c)->flow_paused;
    integer(c, "ZADD %s %lld %s", index, (long long)(redis_now(c) - 1000), "old/gone");
    assert_int_equal(retryq_flow_pause(c, "m/r", MINUTE_MS, "", NULL, NULL, &err), RETRYQ_OK);
    assert_int_equal(index_score(c, "old/gone"), -1);
    assert_int_equal(integer(c, "ZCARD %s", index), 1);
}

/* ------------------------------------------------------------ resume */

static void test_resume_deletes_the_pause_and_its_member(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    retryq_flow_pause_t deleted;
    retryq_error_t err = {0};
    bool was = false;
    assert_int_equal(retryq_flow_pause(c, "meta/llama-3/eu-west", 3 * MINUTE_MS, "why", NULL, NULL, &err),
                     RETRYQ_OK);
    assert_int_equal(retryq_flow_resume(c, "meta/llama-3/eu-west", &was, &deleted, &err), RETRYQ_OK);
    assert_true(was);
    assert_string_equal(deleted.key, "meta/llama-3/eu-west");
    assert_string_equal(deleted.cause, "operator");
    assert_string_equal(deleted.reason, "why");
    assert_near(deleted.left_ms, 3 * MINUTE_MS, CLOCK_SLACK_MS);
    assert_null(pause_doc(c, "meta/llama-3/eu-west"));
    assert_int_equal(index_score(c, "meta/llama-3/eu-west"), -1);

    /* Not paused: not an error, and it says so. */
    was = true;
    memset(&deleted, 0x55, sizeof deleted);
    assert_int_equal(retryq_flow_resume(c, "meta/llama-3/eu-west", &was, &deleted, &err), RETRYQ_OK);
    assert_false(was);
    assert_int_equal(retryq_flow_resume(c, "never/paused", NULL, NULL, &err), RETRYQ_OK);
}

static void test_resume_deletes_a_worker_pause(void **state)
{
    fixture_t *f = *state;
    retryq_flow_pause_t deleted;
    retryq_error_t err = {0};
    bool was = false;
    worker_pause(f->client, "gpt-4o/eu-west", "breaker", 10 * MINUTE_MS);
    assert_int_equal(retryq_flow_resume(f->client, "gpt-4o/eu-west", &was, &deleted, &err), RETRYQ_OK);
    assert_true(was);
    assert_string_equal(deleted.cause, "breaker");
    assert_string_equal(deleted.by, "h:1:w");
    assert_null(pause_doc(f->client, "gpt-4o/eu-west"));
    assert_int_equal(index_score(f->client, "gpt-4o/eu-west"), -1);
}

/* ------------------------------------------------------------ list */

static const retryq_flow_breaker_t *find_breaker(const retryq_flow_list_t *l, const char *key)
{
    for (size_t i = 0; i < l->breaker_count; i++)
        if (strcmp(l->breakers[i].key, key) == 0)
            return &l->breakers[i];
    return NULL;
}

static const retryq_flow_permits_t *find_permits(const retryq_flow_list_t *l, const char *key)
{
    for (size_t i = 0; i < l->key_count; i++)
        if (strcmp(l->keys[i].key, key) == 0)
            return &l->keys[i];
    return NULL;
}

static void test_list_reports_what_the_workers_write(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    retryq_error_t err = {0};
    retryq_flow_list_t l;
    char permits[600];
    int64_t now = redis_now(c);

    assert_int_equal(retryq_flow_pause(c, "llama3.2-1b/us-east", 5 * MINUTE_MS, "ops", NULL, NULL, &err),
                     RETRYQ_OK);
    worker_pause(c, "gpt-4o/eu-west", "ratelimit", MINUTE_MS);
    /* Index members that must not be listed: past, and live but without a pause key. */
    integer(c, "ZADD %s %lld %s", k->flow_paused, (long long)(now - 5000), "past/key");
    integer(c, "ZADD %s %lld %s", k->flow_paused, (long long)(now + MINUTE_MS), "no/document");
    char open[256];
    snprintf(open, sizeof open,
             "{\"state\":\"open\",\"until_ms\":%lld,\"worker\":\"h:1:w\",\"failures\":12,\"calls\":20}",
             (long long)(now + 30000));
    integer(c, "HSET %s %s %s", k->flow_breakers, "gpt-4o/eu-west", open);
    integer(c, "HSET %s %s %s", k->flow_breakers, "gpt-4o/us-east",
            "{\"state\":\"closed\",\"until_ms\":0,\"worker\":\"h:2:w\",\"failures\":0,\"calls\":3}");
    integer(c, "HSET %s %s %s", k->flow_breakers, "bad/entry", "not json");
    integer(c, "ZADD %s %lld %s", k->flow_keys, (long long)now, "llama3.2-1b/us-east");
    integer(c, "ZADD %s %lld %s", k->flow_keys, (long long)(now - 1000), "gpt-4o/eu-west");
    flow_name(c, RETRYQ_FLOW_PERMITS, "llama3.2-1b/us-east", permits, sizeof permits);
    integer(c, "ZADD %s %lld %s", permits, (long long)(now + 30000), "h:1:w:1");
    integer(c, "ZADD %s %lld %s", permits, (long long)(now + 30000), "h:1:w:2");
    integer(c, "ZADD %s %lld %s", permits, (long long)(now - 1), "h:9:dead:1"); /* lease expired */

    if (retryq_flow_list(c, NULL, 0, &l, &err) != RETRYQ_OK)
        fail_msg("list: %s", err.message);
    assert_string_equal(l.next, "0");
    assert_near(l.now_ms, now, CLOCK_SLACK_MS);
    assert_int_equal(l.pause_count, 2);
    for (size_t i = 0; i < l.pause_count; i++) {
        const retryq_flow_pause_t *p = &l.pauses[i];
        if (strcmp(p->key, "llama3.2-1b/us-east") == 0) {
            assert_string_equal(p->cause, "operator");
            assert_string_equal(p->reason, "ops");
            assert_near(p->left_ms, 5 * MINUTE_MS, CLOCK_SLACK_MS);
        } else {
            assert_string_equal(p->key, "gpt-4o/eu-west");
            assert_string_equal(p->cause, "ratelimit");
            assert_string_equal(p->by, "h:1:w");
            assert_near(p->left_ms, MINUTE_MS, CLOCK_SLACK_MS);
        }
    }
    assert_int_equal(l.breaker_count, 3);
    const retryq_flow_breaker_t *b = find_breaker(&l, "gpt-4o/eu-west");
    assert_non_null(b);
    assert_string_equal(b->state, "open");
    assert_string_equal(b->worker, "h:1:w");
    assert_int_equal(b->failures, 12);
    assert_int_equal(b->calls, 20);
    assert_near(b->left_ms, 30000, CLOCK_SLACK_MS);
    assert_string_equal(find_breaker(&l, "gpt-4o/us-east")->state, "closed");
    assert_string_equal(find_breaker(&l, "bad/entry")->state, "");
    assert_int_equal(find_breaker(&l, "bad/entry")->calls, -1);
    assert_int_equal(l.key_count, 2);
    assert_int_equal(find_permits(&l, "llama3.2-1b/us-east")->in_use, 2);
    assert_int_equal(find_permits(&l, "llama3.2-1b/us-east")->last_used_ms, now);
    assert_int_equal(find_permits(&l, "gpt-4o/eu-west")->in_use, 0);
    retryq_flow_list_free(&l);
    assert_null(l.pauses);
    assert_int_equal(l.pause_count, 0);
}

static void test_list_of_nothing(void **state)
{
    fixture_t *f = *state;
    retryq_flow_list_t l;
    retryq_error_t err = {0};
    assert_int_equal(retryq_flow_list(f->client, "0", 10, &l, &err), RETRYQ_OK);
    assert_int_equal(l.pause_count + l.breaker_count + l.key_count, 0);
    assert_null(l.pauses);
    assert_null(l.breakers);
    assert_null(l.keys);
    assert_string_equal(l.next, "0");
    retryq_flow_list_free(&l);
}

#define MANY 1500

/* Reads every page with `limit`, checks each page's bound and that every key of the
 * three indexes came at least once; returns the number of pages. */
static int read_all_pages(retryq_client_t *c, size_t limit, size_t page_bound)
{
    static bool seen[3][MANY];
    char cursor[RETRYQ_MAX_FLOW_CURSOR] = "0";
    int pages = 0;
    memset(seen, 0, sizeof seen);
    do {
        retryq_flow_list_t l;
        retryq_error_t err = {0};
        if (retryq_flow_list(c, cursor, limit, &l, &err) != RETRYQ_OK)
            fail_msg("list page %d: %s", pages, err.message);
        if (l.pause_count > page_bound || l.breaker_count > page_bound || l.key_count > page_bound)
            fail_msg("page %d holds %zu pauses, %zu breakers, %zu keys: more than %zu", pages, l.pause_count,
                     l.breaker_count, l.key_count, page_bound);
        for (size_t i = 0; i < l.pause_count; i++)
            seen[0][atoi(strchr(l.pauses[i].key, '-') + 1)] = true;
        for (size_t i = 0; i < l.breaker_count; i++)
            seen[1][atoi(strchr(l.breakers[i].key, '-') + 1)] = true;
        for (size_t i = 0; i < l.key_count; i++) {
            assert_int_equal(l.keys[i].in_use, 1);
            seen[2][atoi(strchr(l.keys[i].key, '-') + 1)] = true;
        }
        snprintf(cursor, sizeof cursor, "%s", l.next);
        retryq_flow_list_free(&l);
        pages++;
        assert_true(pages < 1000);
    } while (strcmp(cursor, "0") != 0);
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < MANY; i++)
            if (!seen[s][i])
                fail_msg("index %d: key m-%d/r never listed (limit %zu)", s, i, limit);
    return pages;
}

static void test_list_is_bounded_and_pages_through_everything(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    const retryq_keys_t *k = retryq_client_keys(c);
    retryq_error_t err = {0};
    redisContext *rc = rq_client_redis(c, &err);
    assert_non_null(rc);
    int64_t now = redis_now(c);
    for (int i = 0; i < MANY; i++) {
        char key[32], name[600], doc[160];
        snprintf(key, sizeof key, "m-%d/r", i);
        flow_name(c, RETRYQ_FLOW_PAUSE, key, name, sizeof name);
        snprintf(doc, sizeof doc,
                 "{\"cause\":\"operator\",\"reason\":\"\",\"until_ms\":%lld,\"by\":\"operator\"}",
                 (long long)(now + 10 * MINUTE_MS));
        redisAppendCommand(rc, "SET %s %s PX %d", name, doc, 600000);
        redisAppendCommand(rc, "ZADD %s %lld %s", k->flow_paused, (long long)(now + 10 * MINUTE_MS), key);
        redisAppendCommand(rc, "HSET %s %s %s", k->flow_breakers, key, "{\"state\":\"closed\"}");
        redisAppendCommand(rc, "ZADD %s %lld %s", k->flow_keys, (long long)now, key);
        flow_name(c, RETRYQ_FLOW_PERMITS, key, name, sizeof name);
        redisAppendCommand(rc, "ZADD %s %lld %s", name, (long long)(now + 10 * MINUTE_MS), "w:1");
    }
    for (int i = 0; i < MANY * 5; i++) {
        redisReply *r = NULL;
        assert_int_equal(redisGetReply(rc, (void **)&r), REDIS_OK);
        assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }

    /* The default page: about RETRYQ_FLOW_PAGE_MAX per index, so 1,500 take two pages. */
    retryq_flow_list_t l;
    assert_int_equal(retryq_flow_list(c, NULL, 0, &l, &err), RETRYQ_OK);
    assert_true(l.pause_count < MANY && l.breaker_count < MANY && l.key_count < MANY);
    assert_string_not_equal(l.next, "0");
    retryq_flow_list_free(&l);
    /* A limit above the maximum is the maximum. */
    assert_int_equal(retryq_flow_list(c, "0", 100000, &l, &err), RETRYQ_OK);
    assert_true(l.pause_count < MANY && l.breaker_count < MANY && l.key_count < MANY);
    retryq_flow_list_free(&l);

    assert_true(read_all_pages(c, 0, RETRYQ_FLOW_PAGE_MAX + RETRYQ_FLOW_PAGE_MAX / 2) >= 2);
    assert_true(read_all_pages(c, 100, 200) >= 8);
}

/* ------------------------------------------------------------ refusals */

static void assert_refused(retryq_client_t *c, const char *key, const char *why)
{
    retryq_error_t err = {0};
    assert_int_equal(retryq_flow_pause(c, key, MINUTE_MS, "", NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(err.code, RETRYQ_ERR_INVALID);
    if (strstr(err.message, why) == NULL)
        fail_msg("pause of an invalid key: \"%s\" does not say \"%s\"", err.message, why);
    memset(&err, 0, sizeof err);
    assert_int_equal(retryq_flow_resume(c, key, NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, why));
}

static void test_invalid_keys_durations_and_reasons_are_refused(void **state)
{
    fixture_t *f = *state;
    retryq_client_t *c = f->client;
    retryq_error_t err = {0};
    char long_key[RETRYQ_MAX_FLOW_KEY + 2], long_region[RETRYQ_MAX_REGION + 8];
    char long_reason[RETRYQ_MAX_FLOW_REASON + 2];
    memset(long_key, 'm', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    long_key[10] = '/';
    snprintf(long_region, sizeof long_region, "m/");
    memset(long_region + 2, 'r', RETRYQ_MAX_REGION + 1);
    long_region[RETRYQ_MAX_REGION + 3] = '\0';
    memset(long_reason, 'x', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = '\0';

    assert_refused(c, NULL, "missing");
    assert_refused(c, "", "missing");
    assert_refused(c, "gpt-4", "expected MODEL/REGION");
    assert_refused(c, "/us-east", "expected MODEL/REGION");
    assert_refused(c, "gpt-4/", "expected MODEL/REGION");
    assert_refused(c, "*/eu-west", "wildcard");
    assert_refused(c, "llama3.2-1b/*", "wildcard");
    assert_refused(c, "gpt\n4/us-east", "control characters");
    assert_refused(c, "gpt\x7f/us-east", "control characters");
    assert_refused(c, "gpt-\xff/us-east", "UTF-8");
    assert_refused(c, long_key, "at most 255");
    assert_refused(c, long_region, "at most 128");

    assert_int_equal(retryq_flow_pause(c, "m/r", -1, "", NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "30 days"));
    assert_int_equal(retryq_flow_pause(c, "m/r", RETRYQ_FLOW_PAUSE_MAX_MS + 1, "", NULL, NULL, &err),
                     RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_flow_pause(c, "m/r", MINUTE_MS, long_reason, NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "reason"));
    assert_int_equal(retryq_flow_pause(c, "m/r", MINUTE_MS, "two\nlines", NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_flow_pause(c, "m/r", MINUTE_MS, "\xc3", NULL, NULL, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_flow_pause(NULL, "m/r", MINUTE_MS, "", NULL, NULL, &err), RETRYQ_ERR_INVALID);

    /* Nothing was written by the refusals. */
    assert_int_equal(integer(c, "EXISTS %s", retryq_client_keys(c)->flow_paused), 0);
    char name[600];
    flow_name(c, RETRYQ_FLOW_PAUSE, "m/r", name, sizeof name);
    assert_int_equal(integer(c, "EXISTS %s", name), 0);

    /* What the worker may produce is accepted: '/' in the model, UTF-8 and spaces in the region. */
    assert_int_equal(retryq_flow_key_validate("meta-llama/Llama-3.1-8B/us-east", &err), RETRYQ_OK);
    assert_int_equal(retryq_flow_key_validate("llama3.2:1b/東京 1", &err), RETRYQ_OK);
}

static void test_invalid_cursor_is_refused(void **state)
{
    fixture_t *f = *state;
    static const char *const bad[] = {"abc", "1:2", "1:2:3:4", "x:0:0", "0:0:", "-1:0:0",
                                      "123456789012345678901234:0:0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        retryq_flow_list_t l;
        retryq_error_t err = {0};
        assert_int_equal(retryq_flow_list(f->client, bad[i], 0, &l, &err), RETRYQ_ERR_INVALID);
        assert_non_null(strstr(err.message, "cursor"));
        assert_null(l.pauses);
        assert_string_equal(l.next, "0");
    }
    retryq_flow_list_t l;
    retryq_error_t err = {0};
    assert_int_equal(retryq_flow_list(f->client, "-:-:0", 0, &l, &err), RETRYQ_OK);
    retryq_flow_list_free(&l);
}

static void test_unreachable_redis_is_a_redis_error(void **state)
{
    (void)state;
    int fd = -1;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", tu_closed_port(&fd));
    retryq_options_t opts = {.redis_url = url, .queue = "t_flow_down", .connect_timeout_ms = 500,
                             .command_timeout_ms = 500};
    retryq_error_t err = {0};
    retryq_client_t *c = retryq_client_new(&opts, &err);
    assert_non_null(c);
    retryq_flow_list_t l;
    assert_int_equal(retryq_flow_pause(c, "m/r", MINUTE_MS, "", NULL, NULL, &err), RETRYQ_ERR_REDIS);
    assert_non_null(strstr(err.message, "cannot connect to Redis"));
    assert_int_equal(retryq_flow_resume(c, "m/r", NULL, NULL, &err), RETRYQ_ERR_REDIS);
    assert_int_equal(retryq_flow_list(c, NULL, 0, &l, &err), RETRYQ_ERR_REDIS);
    assert_int_equal(l.pause_count, 0);
    retryq_client_free(c);
    close(fd);
}

int main(void)
{
    if (!tu_have_services()) {
        fprintf(stderr, "test_flow: run it through ctest (test/support/services.sh exec)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pause_writes_document_expiry_and_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_until_resumed_is_the_longest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shorter_pause_never_shortens_a_longer_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_operator_pause_keeps_a_longer_worker_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_replaces_an_unreadable_document, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_drops_stale_index_members, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_deletes_the_pause_and_its_member, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_deletes_a_worker_pause, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_reports_what_the_workers_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_of_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_is_bounded_and_pages_through_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_keys_durations_and_reasons_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_cursor_is_refused, setup, teardown),
        cmocka_unit_test(test_unreachable_redis_is_a_redis_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
