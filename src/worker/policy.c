/*
 * The retry policy's table (see policy.h): one decision for every path that is not the
 * happy one.
 */
#include "policy.h"

#include "backoff.h"

const char *retry_action_name(retry_action_t action)
{
    switch (action) {
    case RETRY_GO_ON: return "go_on";
    case RETRY_DELAY: return "delay";
    case RETRY_GIVE_UP: return "give_up";
    case RETRY_POISON: return "poison";
    case RETRY_WAIT: return "wait";
    case RETRY_REQUEUE: return "requeue";
    case RETRY_PARK: return "park";
    }
    return "unknown";
}

const char *retry_flow_wait_name(retry_flow_wait_t wait)
{
    switch (wait) {
    case RETRY_FLOW_GO: return "go";
    case RETRY_FLOW_PAUSE: return "pause";
    case RETRY_FLOW_BREAKER: return "breaker";
    case RETRY_FLOW_PROBE: return "probe";
    case RETRY_FLOW_CONCURRENCY: return "concurrency";
    case RETRY_FLOW_RATE: return "rate";
    case RETRY_FLOW_UNKNOWN: return "unknown";
    }
    return "unknown";
}

static retry_decision_t decision(retry_action_t action, int64_t delay_ms)
{
    retry_decision_t d = {.action = action, .delay_ms = delay_ms, .next_wait_ms = 0};
    return d;
}

/* The backoff step of a delivery count, clamped to the schedule. */
static int64_t step_ms(const retry_policy_t *p, int delivery)
{
    int i = delivery < 0 ? 0 : delivery;
    if (i >= p->backoff_count)
        i = p->backoff_count - 1;
    return p->backoff_count > 0 ? p->backoff_ms[i] : 0;
}

/* Waiting out an outage: 200 ms doubling to 10 s, each wait drawn from [b/2, b]. */
static retry_decision_t wait_out(const retry_policy_t *p, const retry_facts_t *f)
{
    int b = backoff_grow(f->waited_ms, p->wait_min_ms, p->wait_max_ms);
    retry_decision_t d = decision(RETRY_WAIT, b / 2 + (int64_t)(f->random % (uint64_t)(b / 2 + 1)));
    d.next_wait_ms = b;
    return d;
}

/* `base` plus a jitter of 0..`frac_percent` % of it, at most `cap` ms. */
static int64_t jittered(int64_t base, int frac_percent, int64_t cap, uint64_t random)
{
    int64_t spread = base * frac_percent / 100;
    if (spread > cap)
        spread = cap;
    return base + (int64_t)(random % (uint64_t)(spread + 1));
}

/* Parking: where flow control's "not now" puts the job, and for how long. */
static retry_decision_t park(const retry_policy_t *p, const retry_facts_t *f)
{
    int64_t max = p->park_max_ms > 0 ? p->park_max_ms : 60000;
    int64_t wait = f->flow_wait_ms > 0 ? f->flow_wait_ms : 0;
    switch (f->flow_wait) {
    case RETRY_FLOW_PAUSE:
    case RETRY_FLOW_BREAKER:
        return decision(RETRY_PARK, jittered(wait < max ? wait : max, 10, 1000, f->random));
    case RETRY_FLOW_RATE:
        return decision(RETRY_PARK, jittered(wait < max ? wait : max, 10, 250, f->random));
    case RETRY_FLOW_CONCURRENCY:
        return decision(RETRY_PARK, 100 + (int64_t)(f->random % 201));
    case RETRY_FLOW_PROBE:
        return decision(RETRY_PARK, 500 + (int64_t)(f->random % 1001));
    case RETRY_FLOW_GO:
    case RETRY_FLOW_UNKNOWN:
        break;
    }
    return decision(RETRY_PARK, 1000 + (int64_t)(f->random % 1001));
}

retry_decision_t retry_decide(const retry_policy_t *p, retry_event_t event, const retry_facts_t *f)
{
    switch (event) {
    case RETRY_EV_ROUTER_TRANSIENT: {
        if (f->delivery >= p->backoff_count)
            return decision(RETRY_GIVE_UP, 0);
        int64_t delay = step_ms(p, f->delivery);
        delay += (int64_t)(f->random % (uint64_t)(delay / 5 + 1)); /* up to +20 % */
        if (f->retry_after_ms > delay)
            delay = f->retry_after_ms;
        return decision(RETRY_DELAY, delay);
    }
    case RETRY_EV_JOB_FAILED:
        if (f->delivery + 1 >= p->max_deliveries)
            return decision(RETRY_POISON, 0);
        return decision(RETRY_DELAY, step_ms(p, f->delivery));
    case RETRY_EV_STORE_DOWN:
        return wait_out(p, f);
    case RETRY_EV_WRITE_DOWN:
        if (f->writing_ms > p->write_deadline_ms)
            return decision(RETRY_REQUEUE, 0);
        return wait_out(p, f);
    case RETRY_EV_TAKEN:
        return decision(f->delivery >= p->max_deliveries ? RETRY_POISON : RETRY_GO_ON, 0);
    case RETRY_EV_FLOW_WAIT:
        return park(p, f);
    }
    return decision(RETRY_REQUEUE, 0);
}
