/*
 * Jittered doubling backoff and its random generator (see backoff.h).
 */
#include "backoff.h"

#include <sys/random.h>

#include "clock.h"

void backoff_seed(uint64_t *rng)
{
    if (getrandom(rng, sizeof *rng, 0) != (ssize_t)sizeof *rng || *rng == 0)
        *rng = (uint64_t)clock_mono_us() | 1;
}

uint64_t backoff_random(uint64_t *rng)
{
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    return *rng * UINT64_C(2685821657736338717);
}

int backoff_grow(int bound_ms, int min_ms, int max_ms)
{
    if (bound_ms <= 0)
        return min_ms;
    return bound_ms > max_ms / 2 ? max_ms : bound_ms * 2;
}

void backoff_init(backoff_t *b, int min_ms, int max_ms)
{
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->bound_ms = 0;
}

void backoff_reset(backoff_t *b)
{
    b->bound_ms = 0;
}

int64_t backoff_next(backoff_t *b, uint64_t *rng)
{
    b->bound_ms = backoff_grow(b->bound_ms, b->min_ms, b->max_ms);
    return (int64_t)(backoff_random(rng) % ((uint64_t)b->bound_ms + 1));
}
