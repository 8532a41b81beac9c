/*
 * The retry policy: the one place that decides what happens to a job when something did
 * not go to plan. Every path of the worker asks retry_decide with what happened and the
 * job's facts (its delivery count, the router's Retry-After, how long it has waited), and
 * does what the decision says:
 *
 *   what happened              facts                            action
 *   ROUTER_TRANSIENT           delivery < backoff steps         DELAY  backoff[delivery] +0..20 %, >= Retry-After
 *   (network, 5xx, 429, 408)   delivery >= backoff steps        GIVE_UP (record failed, ack)
 *   JOB_FAILED                 delivery + 1 >= max_deliveries   POISON (record failed, dead list)
 *   (the database refused      otherwise                        DELAY  backoff[min(delivery, steps - 1)]
 *    this job's statement)
 *   STORE_DOWN (load)          always                           WAIT   200 ms doubling to 10 s, jittered
 *   WRITE_DOWN (outcome kept)  received < write deadline ago    WAIT   as above (the router is not called again)
 *                              past the write deadline          REQUEUE (hand back as it is)
 *   TAKEN                      delivery >= max_deliveries       POISON
 *                              otherwise                        GO_ON
 *   FLOW_WAIT (flow control    pause or open breaker            PARK  min(wait, 60 s) + 0..10 % (<= 1 s)
 *    says not now, flow.h;     rate (the next token)            PARK  wait + 0..10 % (<= 250 ms)
 *    also the router's pause)  concurrency (no permit free)     PARK  100..300 ms
 *                              half-open, the probe is out      PARK  500..1500 ms
 *                              Redis did not answer the check   PARK  1000..2000 ms
 *
 * DELAY raises the delivery count (the job goes to the delayed set), WAIT, PARK and
 * REQUEUE do not. PARK is DELAY without the delivery: the job waits in the delayed set,
 * no database write, no attempt used. A long pause parks in steps of at most 60 s, so an
 * operator's resume reaches parked jobs within a minute. A lease that expires (a worker died holding the job) counts a delivery on the
 * Redis side, so a job that keeps killing workers meets TAKEN's POISON row. Pure
 * functions, no state: test/unit/test_policy.c checks the table row by row.
 */
#ifndef RETRYQ_WORKER_POLICY_H
#define RETRYQ_WORKER_POLICY_H

#include <stdint.h>

typedef enum retry_event {
    RETRY_EV_ROUTER_TRANSIENT, /* the router call failed in a way that may pass */
    RETRY_EV_JOB_FAILED,       /* the database refused this job's load or outcome */
    RETRY_EV_STORE_DOWN,       /* the database is unreachable (or asked again) during a load */
    RETRY_EV_WRITE_DOWN,       /* the same while writing an outcome already received */
    RETRY_EV_TAKEN,            /* a job was just taken */
    RETRY_EV_FLOW_WAIT,        /* flow control says not now (facts.flow_wait, flow_wait_ms) */
} retry_event_t;

/* Why flow control (flow.h) says not now. */
typedef enum retry_flow_wait {
    RETRY_FLOW_GO = 0,          /* not a wait: call the router */
    RETRY_FLOW_PAUSE,           /* the key is paused (the router, an operator, a breaker elsewhere) */
    RETRY_FLOW_BREAKER,         /* this worker's breaker of the key is open */
    RETRY_FLOW_PROBE,           /* half-open: the probe call is out */
    RETRY_FLOW_CONCURRENCY,     /* every concurrency permit of the key is held */
    RETRY_FLOW_RATE,            /* the key's token bucket is empty until the next token */
    RETRY_FLOW_UNKNOWN,         /* Redis did not answer the check */
} retry_flow_wait_t;

typedef enum retry_action {
    RETRY_GO_ON,   /* carry on with the job */
    RETRY_DELAY,   /* to the delayed set with delivery + 1, due after delay_ms */
    RETRY_GIVE_UP, /* record the failure: every transient retry was used */
    RETRY_POISON,  /* record the failure as poison, then dead-letter the job */
    RETRY_WAIT,    /* keep the job, redo the same step after delay_ms */
    RETRY_REQUEUE, /* hand the job back to the queue as it is */
    RETRY_PARK,    /* to the delayed set as it is (delivery unchanged), due after delay_ms */
} retry_action_t;

typedef struct retry_policy {
    const int *backoff_ms; /* the --backoff schedule */
    int backoff_count;
    int max_deliveries;
    int wait_min_ms, wait_max_ms; /* WAIT's doubling backoff */
    int64_t write_deadline_ms;    /* WRITE_DOWN: how long an outcome may wait to be written */
    int64_t park_max_ms;          /* FLOW_WAIT: the longest single park (0: 60 s) */
} retry_policy_t;

typedef struct retry_facts {
    int delivery;           /* the job's delivery count */
    long retry_after_ms;    /* ROUTER_TRANSIENT: the router's Retry-After, -1 when none */
    int waited_ms;          /* WAIT: the job's previous wait backoff, 0 the first time */
    int64_t writing_ms;     /* WRITE_DOWN: time since the outcome was received */
    uint64_t random;        /* any random number, for the jitter */
    retry_flow_wait_t flow_wait; /* FLOW_WAIT: why */
    int64_t flow_wait_ms;   /* FLOW_WAIT: how long flow control says (pause left, next token) */
} retry_facts_t;

typedef struct retry_decision {
    retry_action_t action;
    int64_t delay_ms;  /* DELAY, WAIT */
    int next_wait_ms;  /* WAIT: the job's new wait backoff (pass it back as waited_ms) */
} retry_decision_t;

retry_decision_t retry_decide(const retry_policy_t *policy, retry_event_t event,
                              const retry_facts_t *facts);
const char *retry_action_name(retry_action_t action); /* "go_on", "delay", ... */
const char *retry_flow_wait_name(retry_flow_wait_t wait); /* "go", "pause", "breaker", ... */

#endif
