/*
 * The worker's HTTP endpoint (evhttp on the worker's loop, loopback by default):
 * /healthz (the loop answers), /readyz (Redis and PostgreSQL connected and not
 * draining, else 503 with the reason), /metrics (Prometheus text format).
 */
#ifndef RETRYQ_WORKER_HTTP_H
#define RETRYQ_WORKER_HTTP_H

#include <stddef.h>

#include "worker.h"

/* Binds cfg.http_addr unless it is "" or "off"; -1 with err on a bind failure. */
int http_start(worker_t *w, char *err, size_t errcap);
void http_stop(worker_t *w);

#endif
