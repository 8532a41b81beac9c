/*
 * The circuit breaker of one flow key, as a pure state machine on the worker's monotonic
 * clock (flow.c keeps one per key and does what its answers say; test/unit/test_breaker.c
 * walks every transition):
 *
 *   CLOSED ── failures / calls >= ratio over >= min calls in the window ──► OPEN
 *   OPEN ── back-off over (5 s, doubling on each reopen up to 5 min) ──► HALF_OPEN
 *   HALF_OPEN: one probe call goes; its success ──► CLOSED (back-off reset),
 *              its failure ──► OPEN with the back-off doubled
 *
 * The window is a ring of BREAKER_SLOTS slots of window / BREAKER_SLOTS each, so old
 * calls leave it a slot at a time. A failure is what the provider did wrong in a way that
 * may pass (5xx, 408, timeouts, no answer); a 429 is neither a failure nor a success (the
 * provider is up and says how long to wait). Calls that were in flight when the breaker
 * opened and answer later are not counted.
 */
#ifndef RETRYQ_WORKER_BREAKER_H
#define RETRYQ_WORKER_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "flowrules.h"

#define BREAKER_SLOTS 10

typedef enum breaker_state {
    BREAKER_CLOSED = 0, /* the numbers of retry_flow_breaker_state */
    BREAKER_OPEN = 1,
    BREAKER_HALF_OPEN = 2,
} breaker_state_t;

typedef enum breaker_result {
    BREAKER_SUCCESS, /* the provider answered (whatever it said) */
    BREAKER_FAILURE, /* 5xx, 408, timeout, no answer */
    BREAKER_IGNORE,  /* 429: rate limited, not broken */
} breaker_result_t;

typedef enum breaker_gate {
    BREAKER_PASS,       /* closed: call */
    BREAKER_PROBE,      /* half-open: this call is the probe */
    BREAKER_HOLD_OPEN,  /* open: wait (wait_ms) */
    BREAKER_HOLD_PROBE, /* half-open, the probe is out: wait for its answer */
} breaker_gate_t;

typedef enum breaker_change {
    BREAKER_SAME,
    BREAKER_OPENED,   /* closed -> open */
    BREAKER_REOPENED, /* the probe failed: open again, back-off doubled */
    BREAKER_CLOSED_NOW, /* the probe succeeded */
} breaker_change_t;

typedef struct breaker {
    breaker_state_t state;
    int64_t until_ms;         /* OPEN: when the probe may go */
    int backoff_ms;           /* the back-off of the current or last open; 0 when closed */
    bool probe_out;           /* HALF_OPEN: the probe call is in flight */
    int64_t slot_ms;          /* start of the current slot (0: none yet) */
    unsigned slot;
    uint32_t calls[BREAKER_SLOTS];
    uint32_t failures[BREAKER_SLOTS];
    uint32_t opened_calls;    /* the window's figures when it last opened (for the log) */
    uint32_t opened_failures;
} breaker_t;

/* May a call go now? Moves OPEN to HALF_OPEN when the back-off is over; PROBE marks the
 * probe as out. `wait_ms` is set for HOLD_OPEN. A disabled breaker always passes. */
breaker_gate_t breaker_gate(breaker_t *b, const breaker_config_t *c, int64_t now_ms,
                            int64_t *wait_ms);
/* The answer of a call that passed the gate (`probe`: it was the PROBE). */
breaker_change_t breaker_record(breaker_t *b, const breaker_config_t *c, int64_t now_ms, bool probe,
                                breaker_result_t result);
/* The probe was not made or its answer will never be known (the job ended otherwise):
 * the next call becomes the probe. */
void breaker_probe_dropped(breaker_t *b);
/* Closed with nothing in its window: it can be forgotten. */
bool breaker_idle(const breaker_t *b);
const char *breaker_state_name(breaker_state_t s); /* "closed", "open", "half_open" */

#endif
