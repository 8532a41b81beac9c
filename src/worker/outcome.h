/*
 * The JSON documents a recorded outcome writes into its executions row: output_data (the
 * router's answer, or a failure document in the runner's vocabulary) and the entry
 * appended to retry_history. Pure functions of what is known about the job and the
 * router's answer: no I/O, no clock, nothing kept. Each returns a malloc'd NUL-terminated
 * text the caller frees, or NULL when out of memory (a document with a field missing is
 * never returned).
 */
#ifndef RETRYQ_WORKER_OUTCOME_H
#define RETRYQ_WORKER_OUTCOME_H

#include <stdint.h>

#include "question.h"
#include "classify.h"

/* What the documents say about the job; every text is borrowed for the call. */
typedef struct outcome_job {
    const char *worker;         /* this worker's id */
    int32_t attempt;            /* the payload's retry_attempt */
    int32_t delivery;           /* the payload's delivery (0: the first) */
    const char *region;         /* the payload's region */
    const char *router_region;  /* the router's form of the row's region; NULL before the load */
    const char *model;          /* the row's model; NULL before the load */
    const char *history_status; /* success | failed | timeout | error */
    const char *provider;       /* the router's provider_used; NULL when none */
    const char *error;          /* this attempt's error; NULL on success */
    const question_t *question; /* NULL until the question was resolved */
} outcome_job_t;

/* The retry_history entry: attempt, status, timestamp (at_ms, wall clock), worker,
 * provider, duration_ms, error, and delivery and the question's note when there are any. */
char *outcome_history_entry(const outcome_job_t *job, int64_t at_ms, int64_t duration_ms);

/* output_data of a success: the answer, its provider, inference time, the router's
 * metadata, retry_attempt and the question id. */
char *outcome_success(const outcome_job_t *job, const router_outcome_t *out);

/* output_data of a failure that is retryq's own (bad spec, bad index, poison, an answer
 * the database refused): the runner's frame under component "retryq", with retryq's
 * `code` and failure `type`. */
char *outcome_input_failure(const outcome_job_t *job, const char *code, const char *type);

/* output_data of a router failure in the runner's exact vocabulary (its HybridExecutor);
 * `path` is the URL path the call went to (NULL: unknown). */
char *outcome_router_failure(const outcome_job_t *job, const router_outcome_t *out, const char *path);

/* "hybrid error: <message>", the runner's error text of a router failure. */
char *outcome_hybrid_error(const char *message);

#endif
