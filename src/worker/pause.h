/*
 * The queue's pause as this worker knows it (`retryq pause`, libretryq's src/lib/pause.c):
 * the hash {Q}:paused, read by a row of the periodic schedule every PAUSE_REFRESH_MS and
 * once more as soon as the Redis connections come up. While the queue is paused, or
 * before the first read has answered (a worker started while paused takes nothing), the
 * worker has no room for jobs, the blocking pop is hurried (CLIENT UNBLOCK) and a job
 * about to call the router is held (job.c) until the resume. worker.c reacts to a change
 * (worker_pause_changed); this file owns the reads, the state and the log lines
 * queue.paused and queue.resumed.
 */
#ifndef RETRYQ_WORKER_PAUSE_H
#define RETRYQ_WORKER_PAUSE_H

#include <stdbool.h>
#include <stdint.h>

#include "retryq/retryq.h"

struct worker;

#define PAUSE_REFRESH_MS 250 /* the period of pause_refresh (the schedule's row) */

typedef struct pause_state {
    bool known;                /* a read has answered at least once */
    bool asking;               /* a read is out */
    retryq_pause_state_t info; /* the last read; info.paused says whether the queue is paused */
    int64_t read_mono_ms;      /* monotonic time of that read (info.age_ms counts from it) */
    uint64_t failed_in_row;    /* reads in a row that got no usable answer (the last state is kept) */
} pause_state_t;

/* Asks Redis for {Q}:paused unless a read is out or the queue is not connected. */
void pause_refresh(struct worker *w);
/* True while the worker must take nothing and start no router call: paused, or not
 * known yet. */
bool pause_holds(const struct worker *w);
/* True when the last read found the queue paused. */
bool pause_is_paused(const struct worker *w);
/* "by WHO, since TIME: REASON" of the pause in force ("" when not paused). */
void pause_describe(const struct worker *w, char *buf, size_t cap);

#endif
