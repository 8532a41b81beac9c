/*
 * Jittered doubling backoff, and the small random generator behind every jitter in the
 * worker: the Redis reconnects and refused pops (queue.c), the database reconnects
 * (store.c) and worker_random (the worker id, the retry policy's jitter). policy.c's WAIT
 * grows its bound with backoff_grow too. Pure apart from backoff_seed.
 */
#ifndef RETRYQ_WORKER_BACKOFF_H
#define RETRYQ_WORKER_BACKOFF_H

#include <stdint.h>

/* Seeds *rng from getrandom(2), else from the monotonic clock; never 0 afterwards. */
void backoff_seed(uint64_t *rng);

/* The next number of the xorshift64* sequence kept in *rng (which must not be 0). Good
 * enough for jitter, never for anything secret. */
uint64_t backoff_random(uint64_t *rng);

/* The bound that follows bound_ms: min_ms after a reset (bound_ms <= 0), then doubled,
 * never above max_ms. */
int backoff_grow(int bound_ms, int min_ms, int max_ms);

typedef struct backoff {
    int min_ms;   /* the first bound after a reset */
    int max_ms;   /* the bound never grows past this */
    int bound_ms; /* the bound of the last delay drawn, 0 after a reset */
} backoff_t;

/* A backoff from min_ms doubling to max_ms, reset. */
void backoff_init(backoff_t *b, int min_ms, int max_ms);

/* After a success: the next delay is drawn from [0, min_ms] again. */
void backoff_reset(backoff_t *b);

/* The next delay in ms: the bound grows (backoff_grow), then the delay is drawn uniformly
 * from [0, bound] ("full jitter", so that peers that failed together do not retry
 * together). */
int64_t backoff_next(backoff_t *b, uint64_t *rng);

#endif
