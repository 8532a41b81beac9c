/*
 * systemd integration through sd_notify (libsystemd, optional at build time): READY=1
 * once connected, STATUS= lines, WATCHDOG=1 from a timer of the loop (so a stuck loop
 * stops pinging and systemd restarts it), STOPPING=1 when draining. The timers that send
 * STATUS= and WATCHDOG=1 are rows of the worker's periodic schedule (worker.c); this
 * module owns none. Without libsystemd or without $NOTIFY_SOCKET every call does nothing.
 */
#ifndef RETRYQ_WORKER_NOTIFY_H
#define RETRYQ_WORKER_NOTIFY_H

#include "worker.h"

/* READY=1 with a STATUS= line, and the first watchdog ping (notify_watchdog). */
void notify_ready(worker_t *w);
/* How often to ping: a third of WATCHDOG_USEC (at least 10 ms) when the watchdog is this
 * process's (WATCHDOG_USEC set, WATCHDOG_PID unset or this process), else 0: no pings. */
int64_t notify_watchdog_ms(void);
/* WATCHDOG=1 when the watchdog is this process's, unless Redis has refused the pops for
 * longer than HTTP_POP_STALL_MS; the schedule runs it every notify_watchdog_ms() after
 * READY=1. */
void notify_watchdog(worker_t *w);
/* STOPPING=1 with a STATUS= line (a graceful stop began). */
void notify_stopping(worker_t *w);
/* Once a second from the loop: a STATUS= line (state, counts, readiness, queue depth). */
void notify_tick(worker_t *w);

#endif
