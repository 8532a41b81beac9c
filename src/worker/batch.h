/*
 * The database statements of the jobs: each job's load (its execution row by id) and its
 * outcome write (one guarded UPDATE), gathered into batches of up to RETRYQ_DB_BATCH_SIZE
 * jobs (64) and sent as one statement per batch (one transaction, one round trip, one
 * plan). A batch the database refuses as a whole is sent again one statement per job, so
 * each job meets its own error as if it had never been batched. What became of each job's statement is told
 * to job.c through the job_* functions at the end of this header; batch.c decides nothing
 * about a job itself.
 */
#ifndef RETRYQ_WORKER_BATCH_H
#define RETRYQ_WORKER_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "question.h"
#include "worker.h"

/* The SQL of the loads and outcome writes; registered with the store by worker.c. */
extern const char JOB_SQL_LOAD[];
extern const char JOB_SQL_LOAD_MANY[];
extern const char JOB_SQL_RECORD[];
extern const char JOB_SQL_RECORD_MANY[];
#define JOB_RECORD_PARAMS 8 /* parameters of JOB_SQL_RECORD and JOB_SQL_RECORD_MANY */

typedef struct batcher batcher_t;

/* The batches of one worker, on w->base with w->store and w->sql; NULL when out of memory. */
batcher_t *batch_new(worker_t *w);
/* Frees the batches; a statement still out is dropped without its callback (teardown,
 * after the store is gone). */
void batch_free(batcher_t *b);

/* Queues the load of the job's execution row; job.c hears back through job_loaded_row,
 * job_load_unreachable, job_load_refused or job_unsent. */
void batch_load(batcher_t *b, job_t *job, int64_t execution_id);

/* What the record statement writes for one job. The texts are the job's: they must stay
 * as they are until job.c hears back. */
typedef struct batch_outcome {
    int64_t execution_id;
    int32_t attempt;      /* the guard: the row's retry_count must still be this */
    const char *status;   /* executions.status: completed | failed | timeout */
    const char *output;   /* output_data (JSON) */
    const char *provider; /* provider_id; NULL keeps the row's */
    const char *error;    /* original_error unless the row already has one; NULL: none */
    const char *history;  /* the entry appended to retry_history (JSON) */
    const char *receipt;  /* receipt_data (JSON); NULL keeps the row's */
} batch_outcome_t;

/* Queues the job's outcome write; job.c hears back through job_recorded,
 * job_record_unreachable, job_record_refused or job_unsent. */
void batch_record(batcher_t *b, job_t *job, const batch_outcome_t *outcome);

/* A job's execution row in a load answer. Texts are NULL for SQL NULL and valid only
 * during job_loaded_row. */
typedef struct batch_row {
    const char *region, *status, *retry_count, *question_id, *model, *max_retries;
    struct load_answer *answer; /* batch.c's: where the row's job spec is */
    int index;
} batch_row_t;

typedef enum batch_spec {
    BATCH_SPEC_OK = 0, /* *spec is the row's job spec */
    BATCH_SPEC_NONE,   /* the execution has no job, or its job no spec */
    BATCH_SPEC_NOMEM,
} batch_spec_t;

/* The job spec of a row, parsed once per answer for every row of the same job; the spec
 * is valid only during job_loaded_row. */
batch_spec_t batch_row_spec(const batch_row_t *row, const question_spec_t **spec);

/* ------------------------------------------------------------------ provided by job.c */

/* The load was answered: the job's row, or NULL when the execution does not exist. */
void job_loaded_row(job_t *job, const batch_row_t *row);
/* The database could not run the load now (connection lost, a deadline). */
void job_load_unreachable(job_t *job, const char *message);
/* The database refused this job's load statement. */
void job_load_refused(job_t *job, const char *sqlstate, const char *message);
/* The outcome write ran; `updated`: the guard let it change the row. */
void job_recorded(job_t *job, bool updated);
/* The database could not run the outcome write now: its result is unknown. */
void job_record_unreachable(job_t *job, const char *message);
/* The database refused this job's outcome write. */
void job_record_refused(job_t *job, const char *sqlstate, const char *message);
/* The job's statement could not be queued at all (out of memory). */
void job_unsent(job_t *job, const char *why);

#endif
