/*
 * Periodic maintenance that needs both Redis and PostgreSQL: the orphan sweep. The
 * runner's API commits 'retrying' before it pushes the job; if it dies in between (or
 * Redis loses the job in a failover) the execution would stay 'retrying' forever. Every
 * orphan interval one worker (a Redis lock decides which) looks for executions retrying
 * for longer than the orphan age, asks Redis which of them have no job anywhere, and
 * pushes a job for each. A duplicate is harmless: the guard acks it as stale. The same
 * timer trims the cancel tombstones older than their retention.
 */
#ifndef RETRYQ_WORKER_JANITOR_H
#define RETRYQ_WORKER_JANITOR_H

#include "worker.h"

extern const char JANITOR_SQL_ORPHANS[];
extern const char JANITOR_SQL_STILL_OPEN[];

/* How long a cancel tombstone ({Q}:cancelled) is kept when no pop consumes it: 7 days,
 * far longer than any job waits in the queue or the delayed set (docs/reliability.md). */
#define JANITOR_TOMBSTONE_RETENTION_MS (INT64_C(7) * 24 * 3600 * 1000)

/* The execution id of a queued job's text as the sweep reads it: the digits (at most 19,
 * optionally quoted) after the first "execution_id" key that has them; false when none. */
bool janitor_entry_execution_id(const char *text, size_t len, int64_t *id);

/* Starts one sweep unless one is running (called from a timer). */
void janitor_sweep(worker_t *w);
/* Frees a sweep cut short by teardown (the store never calls back after store_free). */
void janitor_free(worker_t *w);

#endif
