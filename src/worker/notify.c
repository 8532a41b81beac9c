/*
 * sd_notify messages for systemd (see notify.h).
 *
 * The watchdog ping is a row of the worker's periodic schedule (worker.c): the first ping
 * goes with READY=1, then one every third of WATCHDOG_USEC (sd_watchdog_enabled also
 * checks WATCHDOG_PID) on a timer of the worker's loop, so a loop that stops turning stops
 * pinging and systemd restarts the worker. This file owns no timer.
 */
#include <stdio.h>

#include "http.h"
#include "notify.h"

#ifdef RETRYQ_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

#define WATCHDOG_MIN_MS 10

static const char *state_name(const worker_t *w)
{
    switch (w->state) {
    case WORKER_STARTING: return "connecting";
    case WORKER_RUNNING: return "running";
    case WORKER_DRAINING: return "draining";
    default: return "stopping";
    }
}

static void send_status(worker_t *w, const char *head)
{
    char msg[1024], depth[64] = "", pause[RETRYQ_MAX_PAUSE_REASON + RETRYQ_MAX_PAUSE_BY + 100];
    char paused[sizeof pause + 32] = "";
    char detail[300];
    const char *why = w->state == WORKER_RUNNING || w->state == WORKER_STARTING
                          ? http_not_ready(w, detail, sizeof detail)
                          : NULL;
    char reason[400] = "";
    if (why != NULL)
        snprintf(reason, sizeof reason, ", not ready: %s%s%s%s", why, detail[0] ? " (" : "",
                 detail, detail[0] ? ")" : "");
    pause_describe(w, pause, sizeof pause);
    if (pause[0] != '\0')
        snprintf(paused, sizeof paused, ", queue paused %s", pause);
    if (w->metrics.depths_known)
        snprintf(depth, sizeof depth, "; queue %lld pending, %lld dead", (long long)w->metrics.pending,
                 (long long)w->metrics.dead_depth);
    snprintf(msg, sizeof msg,
             "%sSTATUS=%s%s%s: %zu in flight, %llu succeeded, %llu failed, %llu stale, %llu dead%s",
             head, state_name(w), paused, reason,
             w->inflight, (unsigned long long)w->metrics.success_total,
             (unsigned long long)w->metrics.failure_total,
             (unsigned long long)w->metrics.stale_total, (unsigned long long)w->metrics.dead_total,
             depth);
    sd_notify(0, msg);
}

int64_t notify_watchdog_ms(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    int64_t ms = (int64_t)(usec / 3000);
    return ms < WATCHDOG_MIN_MS ? WATCHDOG_MIN_MS : ms;
}

void notify_watchdog(worker_t *w)
{
    if (notify_watchdog_ms() == 0)
        return;
    /* A worker whose pops Redis keeps refusing takes nothing though its loop turns: let
     * systemd see it (an outage, with the connections down, is not this case). */
    if (queue_pop_failing_ms(w->queue) <= HTTP_POP_STALL_MS)
        sd_notify(0, "WATCHDOG=1");
}

void notify_ready(worker_t *w)
{
    send_status(w, "READY=1\n");
    notify_watchdog(w);
}

void notify_stopping(worker_t *w)
{
    send_status(w, "STOPPING=1\n");
}

void notify_tick(worker_t *w)
{
    send_status(w, "");
}
#else
int64_t notify_watchdog_ms(void)
{
    return 0;
}

void notify_watchdog(worker_t *w)
{
    (void)w;
}

void notify_ready(worker_t *w)
{
    (void)w;
}

void notify_stopping(worker_t *w)
{
    (void)w;
}

void notify_tick(worker_t *w)
{
    (void)w;
}
#endif
