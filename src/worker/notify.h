/*
 * systemd integration through sd_notify (libsystemd, optional at build time): READY=1
 * once connected, STATUS= lines, WATCHDOG=1 from the loop's own timer (so a stuck loop
 * stops pinging and systemd restarts it), STOPPING=1 when draining. Without libsystemd
 * or without $NOTIFY_SOCKET every call does nothing.
 */
#ifndef RETRYQ_WORKER_NOTIFY_H
#define RETRYQ_WORKER_NOTIFY_H

#include "worker.h"

void notify_ready(worker_t *w);
void notify_stopping(worker_t *w);
/* Once a second from the loop: watchdog ping (when enabled) and a STATUS= line. */
void notify_tick(worker_t *w);

#endif
