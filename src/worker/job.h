/*
 * One job's life: decode, load (one query), guard, resolve the question, ask flow
 * control, call the router, record the outcome (one guarded statement), then ack. Each
 * job is one struct that owns all its buffers and is freed in one place (job_free). Every
 * path ends in exactly one of: ack, dead-letter, delay (transient failure), park (flow
 * control's "not now": delayed set, delivery kept), requeue or — at a fast stop —
 * nothing (the job stays in the processing list for recovery). The functions of
 * job.c that batch.c calls with a statement's answer are declared in batch.h.
 */
#ifndef RETRYQ_WORKER_JOB_H
#define RETRYQ_WORKER_JOB_H

#include <stdbool.h>
#include <stddef.h>

#include "worker.h"

/* Creates what the jobs of a worker share (batches, indexes) on w->base; -1 when out of
 * memory. job_free_all frees it. */
int job_init(worker_t *w);

/* A payload arrived from the queue: start a job for it (rescan: see queue.h). */
void job_start(worker_t *w, const char *payload, size_t len, bool rescan);
/* The queue's pause (pause.h): a job about to ask flow control and call the router waits,
 * held, while the queue is paused; it stays in the processing list. Release starts the
 * held jobs' router calls (after a resume); hand back returns them to the head of the
 * queue (a stop while paused). job_held_count: the jobs held now. */
void job_release_held(worker_t *w);
void job_hand_back_held(worker_t *w, const char *why);
size_t job_held_count(const worker_t *w);
/* Frees a job and its buffers; the caller has unlinked it or is tearing down. */
void job_free(job_t *job);
/* Frees every job still linked and the shared state (teardown, after the store, router
 * and queue are gone). */
void job_free_all(worker_t *w);

#endif
