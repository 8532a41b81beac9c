/*
 * systemd integration through sd_notify (libsystemd, optional at build time): READY=1
 * once connected, STATUS= lines, WATCHDOG=1 from the loop's own timer (so a stuck loop
 * stops pinging and systemd restarts it), STOPPING=1 when draining. Without libsystemd
 * or without $NOTIFY_SOCKET every call does nothing.
 */
#ifndef RETRYQ_WORKER_NOTIFY_H
#define RETRYQ_WORKER_NOTIFY_H

#include "worker.h"

/* READY=1 with a STATUS= line; starts the watchdog pings when WATCHDOG_USEC is set (and
 * WATCHDOG_PID is unset or this process): WATCHDOG=1 every third of the interval. */
void notify_ready(worker_t *w);
/* STOPPING=1 with a STATUS= line (a graceful stop began). */
void notify_stopping(worker_t *w);
/* Once a second from the loop: a STATUS= line (state, counts, readiness, queue depth). */
void notify_tick(worker_t *w);

#endif
