/*
 * The two indexes of a worker's jobs in flight: by (execution id, attempt, region), so a
 * duplicate of a job already running is acknowledged at once instead of running twice,
 * and by payload bytes, so the periodic rescan of the own processing list skips the
 * payloads a job already holds. Chained hash tables that double as jobs grow and never
 * allocate per job: each job embeds one inflight_entry_t, zeroed = in neither index.
 */
#ifndef RETRYQ_WORKER_INFLIGHT_H
#define RETRYQ_WORKER_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "retryq/retryq.h"

/* A job's place in both indexes. The payload and request are the job's: they must stay
 * where they are until inflight_remove. */
typedef struct inflight_entry {
    struct inflight_entry *chain[2]; /* [0] by key, [1] by payload */
    uint64_t hash[2];
    bool linked[2];
    const char *payload;
    size_t len;
    const retryq_job_t *req;
} inflight_entry_t;

typedef struct inflight inflight_t;

/* NULL when out of memory. inflight_free does not touch the entries. */
inflight_t *inflight_new(void);
void inflight_free(inflight_t *ix);

/* Indexes a job by its payload bytes. Never fails: when an index cannot grow, its chains
 * get longer. */
void inflight_add_payload(inflight_t *ix, inflight_entry_t *e, const char *payload, size_t len);
/* True when a job in flight holds exactly these payload bytes. */
bool inflight_held(const inflight_t *ix, const char *payload, size_t len);

/* True when a job in flight already has this request's execution id, attempt and region. */
bool inflight_twin(const inflight_t *ix, const retryq_job_t *req);
/* Indexes a job by its request (after inflight_twin said there is none). */
void inflight_add_key(inflight_t *ix, inflight_entry_t *e, const retryq_job_t *req);

/* Takes the entry out of the indexes it is in. */
void inflight_remove(inflight_t *ix, inflight_entry_t *e);

#endif
