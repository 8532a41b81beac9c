/*
 * The circuit breaker's state machine (breaker.c), transition by transition, on a
 * clock the test moves: opening at the ratio over the minimum of calls, a window whose
 * old calls leave it, one probe at a time, a back-off that doubles up to its cap and
 * starts again after closing, 429s counted for nothing, a dropped probe, and "off".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "breaker.h"

static breaker_config_t config(void)
{
    breaker_config_t c = {.enabled = true, .ratio = 0.5, .min_calls = 4, .window_ms = 10000,
                          .backoff_min_ms = 1000, .backoff_max_ms = 4000};
    return c;
}

static breaker_change_t record(breaker_t *b, const breaker_config_t *c, int64_t now, breaker_result_t r)
{
    int64_t wait = 0;
    bool probe = breaker_gate(b, c, now, &wait) == BREAKER_PROBE;
    return breaker_record(b, c, now, probe, r);
}

static void test_opens_at_ratio_over_min_calls(void **state)
{
    (void)state;
    breaker_config_t c = config();
    breaker_t b;
    memset(&b, 0, sizeof b);
    int64_t now = 1000, wait = 0;
    assert_true(breaker_idle(&b));
    /* 3 failures: below the minimum of 4 calls */
    for (int i = 0; i < 3; i++)
        assert_int_equal(record(&b, &c, now, BREAKER_FAILURE), BREAKER_SAME);
    assert_false(breaker_idle(&b));
    /* 3 failures of 4 calls (75 %): open */
    assert_int_equal(record(&b, &c, now, BREAKER_SUCCESS), BREAKER_OPENED);
    assert_int_equal(b.state, BREAKER_OPEN);
    assert_int_equal(b.opened_calls, 4);
    assert_int_equal(b.opened_failures, 3);
    assert_int_equal(b.backoff_ms, 1000);
    assert_int_equal(breaker_gate(&b, &c, now + 400, &wait), BREAKER_HOLD_OPEN);
    assert_int_equal(wait, 600);
    /* answers of calls started before it opened change nothing */
    assert_int_equal(breaker_record(&b, &c, now + 500, false, BREAKER_SUCCESS), BREAKER_SAME);
    assert_int_equal(b.state, BREAKER_OPEN);
}

static void test_below_ratio_and_429s_stay_closed(void **state)
{
    (void)state;
    breaker_config_t c = config();
    breaker_t b;
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 100; i++) /* 1 failure in 3 calls, forever: 33 % */
        assert_int_equal(record(&b, &c, 1000 + i, i % 3 == 2 ? BREAKER_FAILURE : BREAKER_SUCCESS),
                         BREAKER_SAME);
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 100; i++) /* rate limited is not broken */
        assert_int_equal(record(&b, &c, 1000 + i, BREAKER_IGNORE), BREAKER_SAME);
    assert_true(breaker_idle(&b));
}

static void test_old_calls_leave_the_window(void **state)
{
    (void)state;
    breaker_config_t c = config();
    breaker_t b;
    memset(&b, 0, sizeof b);
    for (int i = 0; i < 3; i++)
        record(&b, &c, 1000, BREAKER_FAILURE);
    /* a window (10 s) later they are gone: 1 failure of 1 call is below the minimum */
    assert_int_equal(record(&b, &c, 11000, BREAKER_FAILURE), BREAKER_SAME);
    /* 6 s later (6 slots on) the 11 s failure is still in: 4 failures of 4 calls */
    for (int i = 0; i < 2; i++)
        assert_int_equal(record(&b, &c, 17000, BREAKER_FAILURE), BREAKER_SAME);
    assert_int_equal(record(&b, &c, 17000, BREAKER_FAILURE), BREAKER_OPENED);
}

static void test_probe_closes_or_reopens_doubling(void **state)
{
    (void)state;
    breaker_config_t c = config();
    breaker_t b;
    memset(&b, 0, sizeof b);
    int64_t now = 1000, wait = 0;
    for (int i = 0; i < 4; i++)
        record(&b, &c, now, BREAKER_FAILURE);
    assert_int_equal(b.state, BREAKER_OPEN);
    int expect[] = {2000, 4000, 4000}; /* doubled, then capped at 4 s */
    for (int round = 0; round < 3; round++) {
        now = b.until_ms;
        assert_int_equal(breaker_gate(&b, &c, now, &wait), BREAKER_PROBE);
        assert_int_equal(b.state, BREAKER_HALF_OPEN);
        /* one probe at a time */
        assert_int_equal(breaker_gate(&b, &c, now, &wait), BREAKER_HOLD_PROBE);
        /* a call that passed before the probe says nothing */
        assert_int_equal(breaker_record(&b, &c, now, false, BREAKER_FAILURE), BREAKER_SAME);
        assert_int_equal(breaker_record(&b, &c, now + 10, true, BREAKER_FAILURE), BREAKER_REOPENED);
        assert_int_equal(b.backoff_ms, expect[round]);
        assert_int_equal(b.until_ms, now + 10 + expect[round]);
    }
    now = b.until_ms;
    assert_int_equal(breaker_gate(&b, &c, now, &wait), BREAKER_PROBE);
    /* a 429 probe: not decided, the next call probes */
    assert_int_equal(breaker_record(&b, &c, now, true, BREAKER_IGNORE), BREAKER_SAME);
    assert_int_equal(breaker_gate(&b, &c, now, &wait), BREAKER_PROBE);
    /* a dropped probe (the job ended otherwise): the next call probes */
    breaker_probe_dropped(&b);
    assert_int_equal(breaker_gate(&b, &c, now, &wait), BREAKER_PROBE);
    assert_int_equal(breaker_record(&b, &c, now, true, BREAKER_SUCCESS), BREAKER_CLOSED_NOW);
    assert_int_equal(b.state, BREAKER_CLOSED);
    assert_true(breaker_idle(&b));
    assert_int_equal(breaker_gate(&b, &c, now, &wait), BREAKER_PASS);
    /* after closing, the back-off starts again from the minimum */
    for (int i = 0; i < 4; i++)
        record(&b, &c, now + 1, BREAKER_FAILURE);
    assert_int_equal(b.backoff_ms, 1000);
}

static void test_off_always_passes(void **state)
{
    (void)state;
    breaker_config_t c = config();
    c.enabled = false;
    breaker_t b;
    memset(&b, 0, sizeof b);
    int64_t wait = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(breaker_gate(&b, &c, 1000 + i, &wait), BREAKER_PASS);
        assert_int_equal(breaker_record(&b, &c, 1000 + i, false, BREAKER_FAILURE), BREAKER_SAME);
    }
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_at_ratio_over_min_calls),
        cmocka_unit_test(test_below_ratio_and_429s_stay_closed),
        cmocka_unit_test(test_old_calls_leave_the_window),
        cmocka_unit_test(test_probe_closes_or_reopens_doubling),
        cmocka_unit_test(test_off_always_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
