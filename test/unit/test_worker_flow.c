/*
 * flow.c without Redis (no queue: what would be sent is skipped), on the worker's
 * monotonic clock: a key without limits is answered at once and costs nothing; the
 * router's pause parks the key's jobs until it ends (the pause is floored at 1 s); the
 * breaker opens on failures, holds the key, lets one probe through and closes; a limited
 * key without Redis answers "unknown"; keys too long are not tracked; the figures of
 * /metrics list keys with something to show first, at most `max`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "flow.h"

static flow_t *make(const char *rules_text, const char *breaker_text)
{
    static flow_rules_t rules;
    static retryq_keys_t keys;
    breaker_config_t breaker;
    char err[400];
    assert_int_equal(flow_rules_parse(rules_text, &rules, err, sizeof err), 0);
    assert_int_equal(breaker_config_parse(breaker_text, &breaker, err, sizeof err), 0);
    assert_int_equal(retryq_keys_init(&keys, "flowq", NULL), 0);
    flow_config_t cfg = {.rules = &rules, .breaker = &breaker, .queue = NULL, .keys = &keys,
                         .worker_id = "w1", .lease_ms = 30000};
    flow_t *f = flow_new(&cfg, err, sizeof err);
    assert_non_null(f);
    /* no queue: what would go to Redis is skipped */
    return f;
}

static void never_called(void *arg, const flow_answer_t *a)
{
    (void)arg;
    (void)a;
    fail_msg("no answer may come later without Redis");
}

static flow_answer_t ask(flow_t *f, const char *model, const char *region, flow_pass_t **pass)
{
    flow_answer_t a;
    assert_int_equal(flow_ask(f, model, region, never_called, NULL, pass, &a), 1);
    assert_non_null(*pass);
    return a;
}

static router_outcome_t outcome(router_verdict_t v, long status, long pause_ms, const char *cause)
{
    router_outcome_t o;
    memset(&o, 0, sizeof o);
    o.verdict = v;
    o.http_status = status;
    o.failure = v == ROUTER_SUCCESS ? ROUTER_FAILURE_NONE : ROUTER_FAILURE_HTTP;
    o.retry_after_ms = -1;
    o.pause_ms = pause_ms;
    o.pause_cause = cause;
    return o;
}

static void test_no_limits_go_at_once(void **state)
{
    (void)state;
    flow_t *f = make("", "off");
    flow_pass_t *p;
    for (int i = 0; i < 1000; i++) {
        flow_answer_t a = ask(f, "llama3.2-1b", "eu-west", &p);
        assert_int_equal(a.wait, RETRY_FLOW_GO);
        assert_string_equal(flow_pass_key(p), "llama3.2-1b/eu-west");
        router_outcome_t o = outcome(ROUTER_SUCCESS, 200, -1, NULL);
        assert_int_equal(flow_done(f, p, &o).wait, RETRY_FLOW_GO);
        flow_end(f, p, -1);
    }
    /* a key too long to track still goes */
    char model[300];
    memset(model, 'm', sizeof model - 1);
    model[sizeof model - 1] = '\0';
    flow_answer_t a = ask(f, model, "eu-west", &p);
    assert_int_equal(a.wait, RETRY_FLOW_GO);
    assert_string_equal(flow_pass_key(p), "");
    flow_end(f, p, -1);
    flow_free(f);
}

static void test_router_pause_parks_the_key(void **state)
{
    (void)state;
    flow_t *f = make("", "off");
    flow_pass_t *p, *q;
    ask(f, "m", "eu-west", &p);
    router_outcome_t o = outcome(ROUTER_TRANSIENT, 429, 20000, "retry_after");
    flow_answer_t a = flow_done(f, p, &o);
    assert_int_equal(a.wait, RETRY_FLOW_PAUSE);
    assert_in_range(a.wait_ms, 19000, 20000);
    flow_end(f, p, a.wait_ms);
    /* the key's next jobs are parked for the time left; other keys go */
    a = ask(f, "m", "eu-west", &q);
    assert_int_equal(a.wait, RETRY_FLOW_PAUSE);
    assert_in_range(a.wait_ms, 19000, 20000);
    flow_end(f, q, a.wait_ms);
    a = ask(f, "m", "us-east", &q);
    assert_int_equal(a.wait, RETRY_FLOW_GO);
    flow_end(f, q, -1);
    /* "Retry-After: 0" pauses for a second */
    ask(f, "m", "asia-pacific", &p);
    o = outcome(ROUTER_TRANSIENT, 503, 0, "ratelimit");
    a = flow_done(f, p, &o);
    assert_int_equal(a.wait, RETRY_FLOW_PAUSE);
    assert_in_range(a.wait_ms, 900, 1000);
    flow_end(f, p, -1);
    flow_free(f);
}

typedef struct seen {
    int keys;
    char first[64];
    int paused, waiting;
    uint64_t retry_after;
} seen_t;

static void collect(void *arg, const flow_figures_t *k)
{
    seen_t *s = arg;
    if (s->keys++ == 0)
        strcpy(s->first, k->key);
    s->paused += k->paused;
    s->waiting += (int)k->waiting;
    s->retry_after += k->pauses[FLOW_CAUSE_RETRY_AFTER];
}

static void test_figures(void **state)
{
    (void)state;
    flow_t *f = make("", "off");
    flow_pass_t *p;
    char region[32];
    for (int i = 0; i < 5; i++) { /* five quiet keys first */
        snprintf(region, sizeof region, "r%d", i);
        ask(f, "m", region, &p);
        flow_end(f, p, -1);
    }
    ask(f, "m", "busy", &p);
    router_outcome_t o = outcome(ROUTER_TRANSIENT, 429, 5000, "retry_after");
    flow_answer_t a = flow_done(f, p, &o);
    flow_end(f, p, a.wait_ms);
    seen_t s = {0};
    assert_int_equal(flow_each_key(f, 3, collect, &s), 6);
    assert_int_equal(s.keys, 3);
    assert_string_equal(s.first, "m/busy"); /* something to show: first */
    assert_int_equal(s.paused, 1);
    assert_int_equal(s.waiting, 1);
    assert_int_equal(s.retry_after, 1);
    flow_free(f);
}

static void test_breaker_holds_and_probes(void **state)
{
    (void)state;
    flow_t *f = make("", "ratio:0.5,min:3,window:10s,backoff:100ms..1s");
    flow_pass_t *p, *q;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ask(f, "m", "eu", &p).wait, RETRY_FLOW_GO);
        router_outcome_t o = outcome(ROUTER_TRANSIENT, 500, -1, NULL);
        /* the job that failed on its own goes its usual way (a delivery) */
        assert_int_equal(flow_done(f, p, &o).wait, RETRY_FLOW_GO);
        flow_end(f, p, -1);
    }
    flow_answer_t a = ask(f, "m", "eu", &p);
    assert_int_equal(a.wait, RETRY_FLOW_BREAKER);
    assert_in_range(a.wait_ms, 1, 100);
    flow_end(f, p, a.wait_ms);
    seen_t s = {0};
    flow_each_key(f, 10, collect, &s);
    assert_int_equal(s.paused, 1);
    /* after the back-off: one probe, the others wait for it */
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(ask(f, "m", "eu", &p).wait, RETRY_FLOW_GO);
    assert_int_equal(ask(f, "m", "eu", &q).wait, RETRY_FLOW_PROBE);
    flow_end(f, q, 500);
    router_outcome_t ok = outcome(ROUTER_SUCCESS, 200, -1, NULL);
    assert_int_equal(flow_done(f, p, &ok).wait, RETRY_FLOW_GO);
    flow_end(f, p, -1);
    assert_int_equal(ask(f, "m", "eu", &q).wait, RETRY_FLOW_GO); /* closed */
    flow_end(f, q, -1);
    flow_free(f);
}

static void test_limited_key_without_redis(void **state)
{
    (void)state;
    flow_t *f = make("m/eu=concurrency:2", "");
    flow_pass_t *p;
    flow_answer_t a = ask(f, "m", "eu", &p);
    assert_int_equal(a.wait, RETRY_FLOW_UNKNOWN); /* cannot know: park shortly */
    flow_end(f, p, 1000);
    assert_int_equal(ask(f, "m", "us", &p).wait, RETRY_FLOW_GO);
    flow_end(f, p, -1);
    flow_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_limits_go_at_once),
        cmocka_unit_test(test_router_pause_parks_the_key),
        cmocka_unit_test(test_figures),
        cmocka_unit_test(test_breaker_holds_and_probes),
        cmocka_unit_test(test_limited_key_without_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
