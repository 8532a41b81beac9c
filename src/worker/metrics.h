/*
 * The worker's figures: its counters (the only set: /metrics, the status page, the
 * sd_notify status and the stop summary all read them here), failure and dead-letter
 * reasons, the router call histogram, router answers by code, the queue depths read from
 * Redis every few seconds, a throughput history for the status page and a ring of the
 * last errors. Everything is fixed-size inside `metrics_t` (one per worker, zeroed =
 * empty), so recording and serving never allocate. metrics.c also writes /metrics in the
 * Prometheus text exposition format 0.0.4; status_page.c reads the same struct.
 */
#ifndef RETRYQ_WORKER_METRICS_H
#define RETRYQ_WORKER_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue.h"
#include "router.h"

struct evbuffer;
struct worker;

/* retry_failure_total{reason}: why a recorded outcome was not a success. */
typedef enum metrics_failure {
    METRICS_FAIL_FAILED = 0,          /* the router said no (success:false, 4xx, bad JSON, ...) */
    METRICS_FAIL_TIMEOUT,             /* the router call hit the total timeout */
    METRICS_FAIL_TRANSIENT_EXHAUSTED, /* 5xx/429/network on every step of the backoff schedule */
    METRICS_FAIL_BAD_JOB,             /* bad job spec or question index (recorded, then dead) */
    METRICS_FAIL_POISON,              /* too many deliveries without an outcome */
    METRICS_FAIL_COUNT
} metrics_failure_t;

/* retry_dead_letter_total{reason}: a small fixed set of classes of dead-list reasons. */
typedef enum metrics_dead {
    METRICS_DEAD_INVALID_PAYLOAD = 0, /* "invalid job: ..." (not JSON, fields invalid) */
    METRICS_DEAD_REGION_MISMATCH,     /* "region mismatch: ..." */
    METRICS_DEAD_NOT_FOUND,           /* "execution not found" */
    METRICS_DEAD_BAD_SPEC,            /* "bad job spec ..." */
    METRICS_DEAD_INVALID_INDEX,       /* "invalid question index ..." */
    METRICS_DEAD_POISON,              /* "poison: ..." */
    METRICS_DEAD_OVER_MAX_RETRIES,    /* "retry attempt N exceeds the execution's max_retries (M)" */
    METRICS_DEAD_OTHER,               /* anything else */
    METRICS_DEAD_COUNT
} metrics_dead_t;

#define METRICS_BUCKETS 12    /* retry_duration_seconds: 0.1 .. 60 and +Inf */
#define METRICS_SLOTS 60      /* throughput history: 60 slots ... */
#define METRICS_SLOT_MS 5000  /* ... of 5 s (5 minutes); also the depth refresh period */
#define METRICS_ERRORS 10     /* the last errors kept for the status page */
#define METRICS_ERROR_TEXT 240

typedef struct metrics_error {
    int64_t at_ms;            /* wall clock, ms since the epoch */
    int64_t execution_id;     /* 0 when unknown */
    int32_t attempt;
    char kind[16];            /* failed, timeout, transient_exhausted, dead, delayed, ... */
    char text[METRICS_ERROR_TEXT]; /* cut to fit; raw bytes, escape when shown */
} metrics_error_t;

typedef struct metrics {
    /* Outcomes recorded (metrics_outcome) and jobs dead-lettered (metrics_dead_letter). */
    uint64_t success_total;   /* recorded as completed */
    uint64_t failure_total;   /* recorded as not completed: the sum of failures[] */
    uint64_t failures[METRICS_FAIL_COUNT]; /* by reason; [METRICS_FAIL_TIMEOUT]: as timeout */
    uint64_t dead_total;      /* sent to the dead list: the sum of dead[] */
    uint64_t dead[METRICS_DEAD_COUNT];

    /* The worker's other counters, counted where the worker decides. */
    uint64_t taken_total;     /* jobs taken from the queue (incl. rescans) */
    uint64_t attempts_total;  /* router calls started (retry_attempts_total) */
    uint64_t stale_total;     /* guard said superseded or already recorded; duplicates */
    uint64_t cancelled_total; /* cancelled jobs a pop dropped (retryq cancel's tombstones) */
    uint64_t delayed_total;   /* transient failures sent to the delayed set */
    uint64_t requeued_total;  /* jobs handed back to the queue (write deadline passed, ...) */
    uint64_t parked_total;    /* jobs parked by flow control (delayed set, delivery kept) */
    uint64_t store_retries_total; /* database steps retried after an outage */
    uint64_t orphans_total;   /* executions re-enqueued by the orphan sweep */
    uint64_t db_batches_total[2];     /* batch statements answered: [0] loads, [1] records */
    uint64_t db_batch_jobs_total[2];  /* jobs those statements carried */
    uint64_t db_batches_refused_total; /* refused as a whole and sent again one by one */

    /* Router call duration of each recorded outcome that made a router call. */
    uint64_t buckets[METRICS_BUCKETS]; /* per bucket, not cumulative */
    uint64_t duration_count;
    double duration_sum;

    /* Router answers: index = HTTP status (100..599); others below. */
    uint64_t router_http[600];
    uint64_t router_network;  /* no HTTP answer (refused, reset, DNS, ...) */
    uint64_t router_timeout;  /* the total timeout hit */

    /* Queue depths (Redis, refreshed every METRICS_SLOT_MS by http.c). */
    bool depths_known;        /* at least one answer so far */
    bool depths_asking;       /* a question is out */
    int64_t depths_at_ms;     /* monotonic time of the last answer */
    int64_t pending, processing, delayed, dead_depth;
    int64_t workers, workers_live;
    double oldest_age_sec;    /* age of the next job to be taken; 0 when the queue is empty */
    bool oldest_from_enqueued_at; /* else: since this worker first saw it at the head */
    uint64_t oldest_hash;
    int64_t oldest_first_seen_ms; /* monotonic */

    /* Throughput history: outcomes per slot (success / not success), newest at `slot`. */
    uint32_t slot_success[METRICS_SLOTS];
    uint32_t slot_failure[METRICS_SLOTS];
    unsigned slot;            /* index of the newest complete slot */
    unsigned slots_used;      /* complete slots so far (<= METRICS_SLOTS) */
    uint64_t rolled_success;  /* success_total and failure_total at the last roll */
    uint64_t rolled_failure;

    int64_t start_wall_ms;    /* process start, ms since the epoch (set once by http.c) */

    metrics_error_t errors[METRICS_ERRORS];
    unsigned errors_next;     /* where the next error goes */
    uint64_t errors_total;
} metrics_t;

/* Classifies a dead-list reason text (the worker's own sentences, see job.c). */
const char *metrics_dead_name(metrics_dead_t d);
const char *metrics_failure_name(metrics_failure_t f);
/* One finished router call (counted by HTTP status, "timeout" or "network"). */
void metrics_router_request(metrics_t *m, const router_result_t *result);
/* One outcome recorded in PostgreSQL: a success, or a failure of kind `failure` (the
 * worker says which where it decides, never through the text). `dead_follows`: a dead-list
 * note follows, so the failure is not noted twice; `error` is the text for the status page.
 * call_sec < 0 when no router call was made (input failures): the histogram is not touched. */
void metrics_outcome(metrics_t *m, int64_t execution_id, int32_t attempt, bool success,
                     metrics_failure_t failure, bool dead_follows, const char *error, double call_sec);
/* One job sent to the dead list, for the reason `why` (`reason` is its sentence). */
void metrics_dead_letter(metrics_t *m, int64_t execution_id, int32_t attempt, metrics_dead_t why,
                         const char *reason);
/* Any other error worth showing on the status page (e.g. a transient failure). */
void metrics_note_error(metrics_t *m, int64_t execution_id, int32_t attempt, const char *kind,
                        const char *text);
/* The i-th most recent error (0 = newest), or NULL. */
const metrics_error_t *metrics_recent_error(const metrics_t *m, unsigned i);

/* Called every METRICS_SLOT_MS: closes the current throughput slot. */
void metrics_roll(metrics_t *m);
/* Outcomes in the last `slots` complete slots. */
void metrics_rates(const metrics_t *m, unsigned slots, uint64_t *success, uint64_t *failure);

/* Stores a queue_depths answer (now_mono_ms: the worker's monotonic clock). */
void metrics_set_depths(metrics_t *m, const queue_depths_t *d, int64_t now_mono_ms);

/* Writes the whole /metrics body for this worker. */
void metrics_write(const struct worker *w, struct evbuffer *out);

/* Exposition helpers (exported for the status page and the unit test). */
void metrics_write_label_value(struct evbuffer *out, const char *value);
void metrics_write_number(struct evbuffer *out, double value);

#endif
