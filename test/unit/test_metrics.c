/*
 * metrics.c and status_page.c without a server: the reason classes pinned to the exact
 * sentences job.c writes, the histogram buckets, router codes, the error ring, the
 * throughput slots, the oldest-job age, label escaping, number formatting and HTML
 * escaping of hostile text.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "metrics.h"
#include "status_page.h"

/* The evbuffer's text as a malloc'd C string (the test frees it). */
static char *text_of(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    assert_non_null(s);
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(metrics_dead_name(METRICS_DEAD_INVALID_INDEX), "invalid_question_index");
    assert_string_equal(metrics_dead_name(METRICS_DEAD_OVER_MAX_RETRIES), "attempt_over_max_retries");
    assert_string_equal(metrics_dead_name(METRICS_DEAD_COUNT), "other");
    assert_string_equal(metrics_failure_name(METRICS_FAIL_TRANSIENT_EXHAUSTED), "transient_exhausted");
    assert_string_equal(metrics_failure_name(METRICS_FAIL_COUNT), "failed");
}

/* The kind of a failure is what the worker says, whatever its text reads like. */
static void test_failures_and_dead_by_kind(void **state)
{
    (void)state;
    metrics_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    metrics_outcome(m, 1, 1, false, METRICS_FAIL_TRANSIENT_EXHAUSTED, false, "hybrid error: HTTP 503", 0.1);
    metrics_outcome(m, 2, 1, false, METRICS_FAIL_FAILED, false, "gave up after 3 tries (the router's text)", 0.1);
    metrics_outcome(m, 3, 1, false, METRICS_FAIL_POISON, true, "poison: x", -1);
    metrics_dead_letter(m, 3, 1, METRICS_DEAD_POISON, "poison: x");
    metrics_dead_letter(m, 4, 1, METRICS_DEAD_REGION_MISMATCH, "poison: a sentence that lies");
    assert_int_equal(m->failures[METRICS_FAIL_TRANSIENT_EXHAUSTED], 1);
    assert_int_equal(m->failures[METRICS_FAIL_FAILED], 1);
    assert_int_equal(m->failures[METRICS_FAIL_POISON], 1);
    assert_int_equal(m->dead[METRICS_DEAD_POISON], 1);
    assert_int_equal(m->dead[METRICS_DEAD_REGION_MISMATCH], 1);
    assert_int_equal(m->errors_total, 4); /* the poison failure is noted once, by its dead letter */
    free(m);
}

static void test_histogram_and_outcomes(void **state)
{
    (void)state;
    metrics_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    metrics_outcome(m, 1, 1, true, METRICS_FAIL_FAILED, false, NULL, 0.1);   /* le=0.1 (inclusive) */
    metrics_outcome(m, 2, 1, true, METRICS_FAIL_FAILED, false, NULL, 0.26);  /* le=0.5 */
    metrics_outcome(m, 3, 1, false, METRICS_FAIL_TIMEOUT, false, "timed out", 60.0); /* le=60 */
    metrics_outcome(m, 4, 1, false, METRICS_FAIL_FAILED, false, "refused", 61.0);    /* +Inf */
    metrics_outcome(m, 5, 1, false, METRICS_FAIL_BAD_JOB, true, "bad job spec: x", -1); /* no call */
    assert_int_equal(m->buckets[0], 1);
    assert_int_equal(m->buckets[1], 0);
    assert_int_equal(m->buckets[2], 1);
    assert_int_equal(m->buckets[10], 1);
    assert_int_equal(m->buckets[11], 1);
    assert_int_equal(m->duration_count, 4);
    assert_true(fabs(m->duration_sum - 121.36) < 1e-9);
    assert_int_equal(m->success_total, 2);
    assert_int_equal(m->failure_total, 3);
    assert_int_equal(m->failures[METRICS_FAIL_TIMEOUT], 1);
    assert_int_equal(m->failures[METRICS_FAIL_FAILED], 1);
    assert_int_equal(m->failures[METRICS_FAIL_BAD_JOB], 1);
    /* Two errors noted: the bad job's note is left to its dead-letter entry. */
    assert_int_equal(m->errors_total, 2);
    free(m);
}

static void test_router_codes(void **state)
{
    (void)state;
    metrics_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    router_result_t r = {.http_status = 503};
    metrics_router_request(m, &r);
    r.http_status = 0;
    metrics_router_request(m, &r);
    r.timed_out = true;
    r.http_status = 200; /* headers came, then the timeout: still a timeout */
    metrics_router_request(m, &r);
    r.timed_out = false;
    r.http_status = 999;
    metrics_router_request(m, &r);
    assert_int_equal(m->router_http[503], 1);
    assert_int_equal(m->router_http[200], 0);
    assert_int_equal(m->router_timeout, 1);
    assert_int_equal(m->router_network, 2);
    free(m);
}

static void test_error_ring_keeps_the_last_ten(void **state)
{
    (void)state;
    metrics_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    assert_null(metrics_recent_error(m, 0));
    char text[32];
    for (int i = 1; i <= 13; i++) {
        snprintf(text, sizeof text, "error %d", i);
        metrics_note_error(m, i, 1, "failed", text);
    }
    assert_string_equal(metrics_recent_error(m, 0)->text, "error 13");
    assert_string_equal(metrics_recent_error(m, 9)->text, "error 4");
    assert_null(metrics_recent_error(m, 10));
    char long_text[1000];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    metrics_note_error(m, 0, 0, "a-kind-name-longer-than-sixteen", long_text);
    assert_int_equal(strlen(metrics_recent_error(m, 0)->text), METRICS_ERROR_TEXT - 1);
    assert_int_equal(strlen(metrics_recent_error(m, 0)->kind), 15);
    free(m);
}

static void test_throughput_slots(void **state)
{
    (void)state;
    metrics_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    uint64_t s, f;
    metrics_outcome(m, 1, 1, true, METRICS_FAIL_FAILED, false, NULL, 0.1);
    metrics_outcome(m, 2, 1, true, METRICS_FAIL_FAILED, false, NULL, 0.1);
    metrics_roll(m);
    metrics_outcome(m, 3, 1, false, METRICS_FAIL_FAILED, false, "no", 0.1);
    metrics_roll(m);
    metrics_rates(m, 1, &s, &f);
    assert_int_equal(s, 0);
    assert_int_equal(f, 1);
    metrics_rates(m, 12, &s, &f);
    assert_int_equal(s, 2);
    assert_int_equal(f, 1);
    for (int i = 0; i < METRICS_SLOTS; i++)
        metrics_roll(m); /* everything ages out */
    metrics_rates(m, METRICS_SLOTS, &s, &f);
    assert_int_equal(s + f, 0);
    assert_int_equal(m->slots_used, METRICS_SLOTS);
    free(m);
}

static void test_oldest_age(void **state)
{
    (void)state;
    metrics_t *m = calloc(1, sizeof *m);
    assert_non_null(m);
    const char with_at[] = "{\"execution_id\":1,\"region\":\"us-east\",\"question_index\":0,"
                           "\"retry_attempt\":1,\"enqueued_at\":\"2026-01-01T00:00:00Z\"}";
    queue_depths_t d = {.pending = 1, .now_ms = 1767225600000 + 90500, .oldest = with_at,
                        .oldest_len = sizeof with_at - 1};
    metrics_set_depths(m, &d, 1000);
    assert_true(m->depths_known);
    assert_true(m->oldest_from_enqueued_at);
    assert_true(fabs(m->oldest_age_sec - 90.5) < 1e-9);
    /* The runner's four-field job: age since first seen at the head, by the monotonic clock. */
    const char bare[] = "{\"execution_id\":2,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}";
    d.oldest = bare;
    d.oldest_len = sizeof bare - 1;
    metrics_set_depths(m, &d, 5000);
    assert_false(m->oldest_from_enqueued_at);
    assert_true(m->oldest_age_sec == 0);
    metrics_set_depths(m, &d, 12000);
    assert_true(fabs(m->oldest_age_sec - 7.0) < 1e-9);
    d.oldest = NULL;
    d.oldest_len = 0;
    d.pending = 0;
    metrics_set_depths(m, &d, 13000);
    assert_true(m->oldest_age_sec == 0);
    free(m);
}

static void test_label_escaping_and_numbers(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    metrics_write_label_value(b, "a\"b\\c\nd");
    evbuffer_add(b, "|", 1);
    metrics_write_number(b, 3);
    evbuffer_add(b, "|", 1);
    metrics_write_number(b, 0.1);
    evbuffer_add(b, "|", 1);
    metrics_write_number(b, 1795916250.123);
    evbuffer_add(b, "|", 1);
    metrics_write_number(b, INFINITY);
    evbuffer_add(b, "|", 1);
    metrics_write_number(b, NAN);
    evbuffer_add(b, "|", 1);
    metrics_write_number(b, 1.0 / 3.0);
    char *s = text_of(b);
    assert_string_equal(s, "a\\\"b\\\\c\\nd|3|0.1|1795916250.123|+Inf|NaN|0.33333333333333331");
    free(s);
    evbuffer_free(b);
}

static void test_html_escaping(void **state)
{
    (void)state;
    struct evbuffer *b = evbuffer_new();
    assert_non_null(b);
    const char hostile[] = "<img src=x onerror='a'>&\"\x01\x7f ok \xC3\xA9 \xFF\xC3(\xED\xA0\x80\tend";
    status_page_escape(b, hostile, sizeof hostile - 1);
    char *s = text_of(b);
    assert_string_equal(s, "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;\xEF\xBF\xBD\xEF\xBF\xBD ok "
                           "\xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\tend");
    free(s);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_failures_and_dead_by_kind),
        cmocka_unit_test(test_histogram_and_outcomes),
        cmocka_unit_test(test_router_codes),
        cmocka_unit_test(test_error_ring_keeps_the_last_ten),
        cmocka_unit_test(test_throughput_slots),
        cmocka_unit_test(test_oldest_age),
        cmocka_unit_test(test_label_escaping_and_numbers),
        cmocka_unit_test(test_html_escaping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
