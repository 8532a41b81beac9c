/*
 * Flow control (docs/flow-control.md): before a job calls the router it asks "may I
 * call the router for key K now?", and after the call it says what the router answered.
 * A key is MODEL/REGION (the row's model_id and the router's region). flow.c owns, per
 * key known to this worker:
 *
 *   - pauses: from the router's own words (a 429/503 with Retry-After or an exhausted
 *     x-ratelimit budget), from this worker's breaker, or learned from Redis
 *     ({Q}:flow:pause:<key>, set by other workers or by an operator); a paused key's jobs
 *     are parked until the pause ends;
 *   - the circuit breaker (breaker.h), which pauses the key while the provider is down;
 *   - the shared limits of RETRYQ_FLOW: concurrency permits (a ZSET of leases renewed on
 *     each heartbeat) and a rate token bucket, both in Lua on Redis's clock.
 *
 * A key without limits, not paused and with a closed breaker costs no Redis round trip:
 * the answer is given at once. Pauses set elsewhere are learned from the replies flow
 * control already gets and from flow_refresh (a row of the worker's periodic schedule).
 *
 * Ownership: flow_ask gives the job a pass; the job hands it back exactly once, with
 * flow_end (parked, ended, or done after flow_done). Redis work goes through queue.c's
 * command connection; no reply that is lost can leave a permit held for longer than the
 * lease.
 */
#ifndef RETRYQ_WORKER_FLOW_H
#define RETRYQ_WORKER_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "breaker.h"
#include "flowrules.h"
#include "policy.h"
#include "queue.h"
#include "classify.h"

typedef struct flow flow_t;
typedef struct flow_pass flow_pass_t;

#define FLOW_KEY_MAX 200            /* bytes of a key text; longer keys are not tracked */
#define FLOW_METRICS_KEYS 200       /* keys exported on /metrics at most */
#define FLOW_REFRESH_MS 1000        /* the period of flow_refresh (the schedule's row) */
#define FLOW_PAUSE_MIN_MS 1000      /* shorter pauses from the router are made this long */

/* Why a pause began (retry_flow_pauses_total{cause}, the "cause" of the pause key). */
typedef enum flow_cause {
    FLOW_CAUSE_RETRY_AFTER = 0,
    FLOW_CAUSE_RATELIMIT,
    FLOW_CAUSE_BREAKER,
    FLOW_CAUSE_OPERATOR,
    FLOW_CAUSES
} flow_cause_t;
const char *flow_cause_name(flow_cause_t cause);

/* The answer to a job: call now (wait == RETRY_FLOW_GO), or park for about wait_ms. */
typedef struct flow_answer {
    retry_flow_wait_t wait;
    int64_t wait_ms;
} flow_answer_t;

typedef struct flow_config {
    const flow_rules_t *rules;       /* copied */
    const breaker_config_t *breaker; /* copied */
    queue_t *queue;
    const retryq_keys_t *keys;       /* the queue's key names ({Q}) */
    const char *worker_id;
    int lease_ms;                    /* permit lease (RETRYQ_LEASE_MS) */
} flow_config_t;

flow_t *flow_new(const flow_config_t *cfg, char *err, size_t errcap);
/* Before the queue is freed: nothing is sent any more and replies still due are dropped. */
void flow_close(flow_t *f);
/* After every pass was handed back (job_free_all). */
void flow_free(flow_t *f);

/*
 * May the job call the router for (model, region) now? Returns 1 with *answer set at once
 * (no Redis round trip), 0 when the answer comes later through `fn` (exactly once, never
 * from inside this call), -1 when out of memory. In both first cases *pass is the job's
 * until it gives it back with flow_end.
 */
typedef void (*flow_answer_fn)(void *arg, const flow_answer_t *answer);
int flow_ask(flow_t *f, const char *model, const char *region, flow_answer_fn fn, void *arg,
             flow_pass_t **pass, flow_answer_t *answer);
/* The router answered a call made with a go: releases its permit, feeds the breaker, and
 * pauses the key when the answer says so. Returns a go (carry on with the answer), or a
 * wait when the job is to be parked instead (the router's pause). */
flow_answer_t flow_done(flow_t *f, flow_pass_t *pass, const router_outcome_t *out);
/* Gives the pass back: `parked_ms` >= 0 when the job was parked for that long (counted in
 * retry_flow_waiting), -1 otherwise. Releases a permit still held. */
void flow_end(flow_t *f, flow_pass_t *pass, int64_t parked_ms);
/* The key of a pass ("MODEL/REGION"), or "" when the key is not tracked. */
const char *flow_pass_key(const flow_pass_t *pass);

/* The heartbeat's step: renews the leases of the permits held. */
void flow_heartbeat(flow_t *f);
/* The schedule's row (every FLOW_REFRESH_MS): ends local pauses that are over, reads the
 * paused keys of every worker and operator from {Q}:flow:paused, notes the keys used in
 * {Q}:flow:keys. */
void flow_refresh(flow_t *f, int64_t now_ms);

/* ---- for /metrics ---- */
typedef struct flow_figures {
    const char *key;
    bool paused;
    size_t waiting;           /* jobs this worker parked whose due time has not come */
    int permits;              /* concurrency permits this worker holds */
    breaker_state_t breaker;
    uint64_t pauses[FLOW_CAUSES]; /* pauses this worker began or learned, by cause */
} flow_figures_t;
/* Calls fn for at most `max` keys, the same keys in the same order on every call until
 * the next flow_ask or flow_refresh (keys with something to show first); returns how many
 * keys this worker tracks. */
size_t flow_each_key(flow_t *f, size_t max, void (*fn)(void *arg, const flow_figures_t *k),
                     void *arg);

#endif
