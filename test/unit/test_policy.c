/*
 * The retry policy's table (src/worker/policy.h), row by row: what happened and the
 * job's facts in, the action and its delay out.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "policy.h"

static const int BACKOFF[] = {5000, 30000, 120000};

static retry_policy_t policy(void)
{
    retry_policy_t p = {.backoff_ms = BACKOFF, .backoff_count = 3, .max_deliveries = 5,
                        .wait_min_ms = 200, .wait_max_ms = 10000, .write_deadline_ms = 300000};
    return p;
}

static retry_decision_t decide(retry_event_t ev, int delivery, long retry_after, int waited,
                               int64_t writing, uint64_t random)
{
    retry_policy_t p = policy();
    retry_facts_t f = {.delivery = delivery, .retry_after_ms = retry_after, .waited_ms = waited,
                       .writing_ms = writing, .random = random};
    return retry_decide(&p, ev, &f);
}

static void router_transient_delays_then_gives_up(void **state)
{
    (void)state;
    for (int delivery = 0; delivery < 3; delivery++) {
        retry_decision_t d = decide(RETRY_EV_ROUTER_TRANSIENT, delivery, -1, 0, 0, 0);
        assert_int_equal(d.action, RETRY_DELAY);
        assert_int_equal(d.delay_ms, BACKOFF[delivery]); /* random 0: no jitter */
        d = decide(RETRY_EV_ROUTER_TRANSIENT, delivery, -1, 0, 0, UINT64_MAX);
        assert_true(d.delay_ms >= BACKOFF[delivery] && d.delay_ms <= BACKOFF[delivery] * 6 / 5);
    }
    assert_int_equal(decide(RETRY_EV_ROUTER_TRANSIENT, 3, -1, 0, 0, 0).action, RETRY_GIVE_UP);
    assert_int_equal(decide(RETRY_EV_ROUTER_TRANSIENT, 9, -1, 0, 0, 0).action, RETRY_GIVE_UP);
    /* Retry-After longer than the step wins; shorter does not shorten it */
    assert_int_equal(decide(RETRY_EV_ROUTER_TRANSIENT, 0, 60000, 0, 0, 0).delay_ms, 60000);
    assert_int_equal(decide(RETRY_EV_ROUTER_TRANSIENT, 0, 1000, 0, 0, 0).delay_ms, 5000);
}

static void job_failure_delays_then_is_poison(void **state)
{
    (void)state;
    assert_int_equal(decide(RETRY_EV_JOB_FAILED, 0, -1, 0, 0, 7).delay_ms, 5000);
    assert_int_equal(decide(RETRY_EV_JOB_FAILED, 2, -1, 0, 0, 7).delay_ms, 120000);
    retry_decision_t d = decide(RETRY_EV_JOB_FAILED, 3, -1, 0, 0, 7); /* past the schedule: last step */
    assert_int_equal(d.action, RETRY_DELAY);
    assert_int_equal(d.delay_ms, 120000);
    assert_int_equal(decide(RETRY_EV_JOB_FAILED, 4, -1, 0, 0, 0).action, RETRY_POISON); /* 5th delivery */
}

static void outages_wait_with_a_doubling_backoff(void **state)
{
    (void)state;
    int waited = 0;
    const int expect[] = {200, 400, 800, 1600, 3200, 6400, 10000, 10000};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        retry_decision_t d = decide(RETRY_EV_STORE_DOWN, 0, -1, waited, 0, 12345 + i);
        assert_int_equal(d.action, RETRY_WAIT);
        assert_int_equal(d.next_wait_ms, expect[i]);
        assert_true(d.delay_ms >= expect[i] / 2 && d.delay_ms <= expect[i]);
        waited = d.next_wait_ms;
    }
    /* the delivery count does not matter: an outage is never the job's fault */
    assert_int_equal(decide(RETRY_EV_STORE_DOWN, 99, -1, 0, 0, 0).action, RETRY_WAIT);
}

static void outcome_waits_until_the_write_deadline(void **state)
{
    (void)state;
    assert_int_equal(decide(RETRY_EV_WRITE_DOWN, 4, -1, 0, 1000, 0).action, RETRY_WAIT);
    assert_int_equal(decide(RETRY_EV_WRITE_DOWN, 4, -1, 0, 300000, 0).action, RETRY_WAIT);
    assert_int_equal(decide(RETRY_EV_WRITE_DOWN, 0, -1, 0, 300001, 0).action, RETRY_REQUEUE);
}

static void taken_job_past_the_bound_is_poison(void **state)
{
    (void)state;
    assert_int_equal(decide(RETRY_EV_TAKEN, 0, -1, 0, 0, 0).action, RETRY_GO_ON);
    assert_int_equal(decide(RETRY_EV_TAKEN, 4, -1, 0, 0, 0).action, RETRY_GO_ON);
    assert_int_equal(decide(RETRY_EV_TAKEN, 5, -1, 0, 0, 0).action, RETRY_POISON);
}

static retry_decision_t park(retry_flow_wait_t why, int64_t wait_ms, int delivery, uint64_t random)
{
    retry_policy_t p = policy();
    retry_facts_t f = {.delivery = delivery, .retry_after_ms = -1, .random = random,
                       .flow_wait = why, .flow_wait_ms = wait_ms};
    return retry_decide(&p, RETRY_EV_FLOW_WAIT, &f);
}

static void flow_waits_park_without_a_delivery(void **state)
{
    (void)state;
    /* whatever the delivery count (even past every bound), flow control only parks */
    for (int delivery = 0; delivery < 10; delivery++)
        assert_int_equal(park(RETRY_FLOW_PAUSE, 20000, delivery, 0).action, RETRY_PARK);
    /* a pause: its time left, plus up to 10 % (at most 1 s) to spread the herd */
    assert_int_equal(park(RETRY_FLOW_PAUSE, 20000, 0, 0).delay_ms, 20000);
    retry_decision_t d = park(RETRY_FLOW_PAUSE, 20000, 0, 999);
    assert_int_equal(d.delay_ms, 20999);
    d = park(RETRY_FLOW_PAUSE, 5000, 0, 500);
    assert_int_equal(d.delay_ms, 5000 + 500 % 501);
    for (uint64_t r = 0; r < 3000; r += 7) {
        d = park(RETRY_FLOW_BREAKER, 5000, 0, r);
        assert_in_range(d.delay_ms, 5000, 5500);
    }
    /* long pauses park a minute at a time (a resume reaches parked jobs within it) */
    assert_int_equal(park(RETRY_FLOW_PAUSE, 30LL * 86400 * 1000, 0, 0).delay_ms, 60000);
    assert_in_range(park(RETRY_FLOW_BREAKER, 300000, 0, UINT64_MAX).delay_ms, 60000, 61000);
    /* the next token, plus up to 10 % (at most 250 ms) */
    assert_int_equal(park(RETRY_FLOW_RATE, 200, 0, 0).delay_ms, 200);
    assert_in_range(park(RETRY_FLOW_RATE, 10000, 0, UINT64_MAX).delay_ms, 10000, 10250);
    /* no permit: 100..300 ms; the probe out: 0.5..1.5 s; Redis silent: 1..2 s */
    for (uint64_t r = 0; r < 5000; r += 13) {
        assert_in_range(park(RETRY_FLOW_CONCURRENCY, 0, 0, r).delay_ms, 100, 300);
        assert_in_range(park(RETRY_FLOW_PROBE, 0, 0, r).delay_ms, 500, 1500);
        assert_in_range(park(RETRY_FLOW_UNKNOWN, 0, 0, r).delay_ms, 1000, 2000);
    }
    assert_string_equal(retry_action_name(RETRY_PARK), "park");
    assert_string_equal(retry_flow_wait_name(RETRY_FLOW_CONCURRENCY), "concurrency");
}

static void action_names(void **state)
{
    (void)state;
    assert_string_equal(retry_action_name(RETRY_GO_ON), "go_on");
    assert_string_equal(retry_action_name(RETRY_DELAY), "delay");
    assert_string_equal(retry_action_name(RETRY_GIVE_UP), "give_up");
    assert_string_equal(retry_action_name(RETRY_POISON), "poison");
    assert_string_equal(retry_action_name(RETRY_WAIT), "wait");
    assert_string_equal(retry_action_name(RETRY_REQUEUE), "requeue");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(router_transient_delays_then_gives_up),
        cmocka_unit_test(job_failure_delays_then_is_poison),
        cmocka_unit_test(outages_wait_with_a_doubling_backoff),
        cmocka_unit_test(outcome_waits_until_the_write_deadline),
        cmocka_unit_test(taken_job_past_the_bound_is_poison),
        cmocka_unit_test(flow_waits_park_without_a_delivery),
        cmocka_unit_test(action_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
