/*
 * sd_notify messages for systemd (see notify.h).
 */
#include <stdio.h>

#include "notify.h"

#ifdef RETRYQ_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

static void send_status(worker_t *w, const char *head)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%sSTATUS=%s: %zu in flight, %llu done, %llu stale, %llu dead", head,
             w->state == WORKER_RUNNING ? "running" : w->state == WORKER_STARTING ? "connecting"
                                                                                    : "draining",
             w->inflight,
             (unsigned long long)(w->count.succeeded + w->count.failed + w->count.timeouts),
             (unsigned long long)w->count.stale, (unsigned long long)w->count.dead);
    sd_notify(0, msg);
}

void notify_ready(worker_t *w)
{
    send_status(w, "READY=1\n");
}

void notify_stopping(worker_t *w)
{
    send_status(w, "STOPPING=1\n");
}

void notify_tick(worker_t *w)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0)
        sd_notify(0, "WATCHDOG=1");
    send_status(w, "");
}
#else
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
