/*
 * The worker's HTTP endpoint (evhttp on the worker's loop, loopback by default):
 *   /          a small status page for people (status_page.c; also at /status)
 *   /healthz   200 while the loop answers
 *   /readyz    200 when Redis and PostgreSQL are connected, the worker is taking jobs and
 *              the pop connection makes progress; else 503 with the reason. A paused queue
 *              is ready (200), with a second line "queue paused by WHO, since TIME: REASON"
 *   /metrics   Prometheus text format 0.0.4 (metrics.c)
 * GET and HEAD only (405 otherwise), small request limits. It also keeps the figures the
 * pages show fresh (http_refresh): the queue depths and the flow-control pauses and
 * breakers from Redis, a throughput slot closed every 5 s.
 */
#ifndef RETRYQ_WORKER_HTTP_H
#define RETRYQ_WORKER_HTTP_H

#include <stddef.h>

#include "worker.h"

/* Binds cfg.http_addr unless it is "" or "off"; -1 with err on a bind failure. */
int http_start(worker_t *w, char *err, size_t errcap);
void http_stop(worker_t *w);

/* Closes a throughput slot when METRICS_SLOT_MS has passed and then asks Redis for the
 * queue depths and the flow-control state (at once while none are known), one question
 * of each kind at a time. The worker's
 * periodic schedule runs it every HTTP_REFRESH_MS while the endpoint listens. */
#define HTTP_REFRESH_MS 1000
void http_refresh(worker_t *w, int64_t now_ms);

/* Flow control as the status page shows it: the paused keys (the soonest to end first)
 * and the open or half-open circuit breakers, read with the queue depths (every
 * METRICS_SLOT_MS): one script over {Q}:flow:paused and one HSCAN step of
 * {Q}:flow:breakers, then one MGET of the pauses shown. At most HTTP_FLOW_SHOWN of each. */
#define HTTP_FLOW_SHOWN 32
typedef struct http_flow {
    bool known;               /* read at least once */
    int64_t read_ms;          /* monotonic time of the read (left_ms counts from it) */
    int64_t redis_ms;         /* Redis's time of the read */
    int64_t paused_total;     /* live pauses in the index, shown or not */
    size_t pause_count;
    retryq_flow_pause_t pauses[HTTP_FLOW_SHOWN];
    size_t breaker_count;
    retryq_flow_breaker_t breakers[HTTP_FLOW_SHOWN];
    bool breakers_cut;        /* more breakers than one read covers, or than shown */
} http_flow_t;
/* The last complete read; NULL while the endpoint is off. */
const http_flow_t *http_flow(const worker_t *w);

/* A pop connection silent this long while the worker has room is not ready. */
#define HTTP_POP_STALL_MS 15000

/* NULL when the worker is ready; else a short reason ("starting", "draining", "redis
 * unavailable", "database unavailable", "the queue's pause cannot be read: taking no
 * jobs", "no progress on the Redis pop connection") and
 * `detail` (may be "") says more. */
const char *http_not_ready(const worker_t *w, char *detail, size_t cap);

#endif
