/*
 * The circuit breaker's state machine (see breaker.h).
 */
#include <string.h>

#include "breaker.h"

const char *breaker_state_name(breaker_state_t s)
{
    return s == BREAKER_OPEN ? "open" : s == BREAKER_HALF_OPEN ? "half_open" : "closed";
}

static void clear_window(breaker_t *b, int64_t now_ms)
{
    memset(b->calls, 0, sizeof b->calls);
    memset(b->failures, 0, sizeof b->failures);
    b->slot = 0;
    b->slot_ms = now_ms;
}

/* Moves the ring to the slot of now_ms, emptying the slots passed over. */
static void advance(breaker_t *b, const breaker_config_t *c, int64_t now_ms)
{
    int64_t len = c->window_ms / BREAKER_SLOTS > 0 ? c->window_ms / BREAKER_SLOTS : 1;
    if (b->slot_ms == 0 || now_ms - b->slot_ms >= (int64_t)c->window_ms) {
        clear_window(b, now_ms);
        return;
    }
    while (now_ms - b->slot_ms >= len) {
        b->slot = (b->slot + 1) % BREAKER_SLOTS;
        b->calls[b->slot] = 0;
        b->failures[b->slot] = 0;
        b->slot_ms += len;
    }
}

static void open_for(breaker_t *b, int64_t now_ms, int backoff_ms)
{
    b->state = BREAKER_OPEN;
    b->backoff_ms = backoff_ms;
    b->until_ms = now_ms + backoff_ms;
    b->probe_out = false;
}

breaker_gate_t breaker_gate(breaker_t *b, const breaker_config_t *c, int64_t now_ms, int64_t *wait_ms)
{
    if (!c->enabled)
        return BREAKER_PASS;
    switch (b->state) {
    case BREAKER_CLOSED:
        return BREAKER_PASS;
    case BREAKER_OPEN:
        if (now_ms < b->until_ms) {
            *wait_ms = b->until_ms - now_ms;
            return BREAKER_HOLD_OPEN;
        }
        b->state = BREAKER_HALF_OPEN;
        b->probe_out = false;
        /* fall through */
    case BREAKER_HALF_OPEN:
        break;
    }
    if (b->probe_out)
        return BREAKER_HOLD_PROBE;
    b->probe_out = true;
    return BREAKER_PROBE;
}

breaker_change_t breaker_record(breaker_t *b, const breaker_config_t *c, int64_t now_ms, bool probe,
                                breaker_result_t result)
{
    if (!c->enabled)
        return BREAKER_SAME;
    if (b->state == BREAKER_HALF_OPEN && probe) {
        b->probe_out = false;
        if (result == BREAKER_IGNORE)
            return BREAKER_SAME; /* rate limited: the next call probes again */
        if (result == BREAKER_FAILURE) {
            int next = b->backoff_ms > c->backoff_max_ms / 2 ? c->backoff_max_ms : b->backoff_ms * 2;
            open_for(b, now_ms, next < c->backoff_min_ms ? c->backoff_min_ms : next);
            return BREAKER_REOPENED;
        }
        b->state = BREAKER_CLOSED;
        b->backoff_ms = 0;
        clear_window(b, now_ms);
        return BREAKER_CLOSED_NOW;
    }
    if (b->state != BREAKER_CLOSED || result == BREAKER_IGNORE)
        return BREAKER_SAME; /* calls started before it opened */
    advance(b, c, now_ms);
    b->calls[b->slot]++;
    if (result == BREAKER_FAILURE)
        b->failures[b->slot]++;
    uint32_t calls = 0, failures = 0;
    for (unsigned i = 0; i < BREAKER_SLOTS; i++) {
        calls += b->calls[i];
        failures += b->failures[i];
    }
    if (calls < (uint32_t)c->min_calls || (double)failures < c->ratio * (double)calls)
        return BREAKER_SAME;
    b->opened_calls = calls;
    b->opened_failures = failures;
    open_for(b, now_ms, c->backoff_min_ms);
    clear_window(b, now_ms);
    return BREAKER_OPENED;
}

void breaker_probe_dropped(breaker_t *b)
{
    if (b->state == BREAKER_HALF_OPEN)
        b->probe_out = false;
}

bool breaker_idle(const breaker_t *b)
{
    if (b->state != BREAKER_CLOSED)
        return false;
    for (unsigned i = 0; i < BREAKER_SLOTS; i++)
        if (b->calls[i] != 0)
            return false;
    return true;
}
