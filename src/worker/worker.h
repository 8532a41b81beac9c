/*
 * The worker: one event_base, one thread, one `worker_t` that every module is handed
 * (nothing global). worker.c owns start-up, the periodic schedule (every timer that
 * repeats), signals, draining and teardown; job.c owns the life of one job. The worker's
 * counters live in `metrics` (metrics.h).
 */
#ifndef RETRYQ_WORKER_WORKER_H
#define RETRYQ_WORKER_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "flow.h"
#include "metrics.h"
#include "pause.h"
#include "question.h"
#include "queue.h"
#include "retryq/retryq.h"
#include "router.h"
#include "store.h"

struct event_base;
struct event;
typedef struct job job_t;
typedef struct http_server http_server_t;

typedef enum worker_state {
    WORKER_STARTING = 0, /* connecting */
    WORKER_RUNNING,      /* taking jobs */
    WORKER_DRAINING,     /* not taking jobs; finishing the ones in flight */
    WORKER_STOPPING,     /* handing back what is left, flushing Redis writes */
    WORKER_STOPPED,
} worker_state_t;

/* Exit codes (sysexits.h): why a worker stopped, for systemd and scripts. */
#define WORKER_EXIT_OK 0            /* stopped normally (also --help, --version) */
#define WORKER_EXIT_UNAVAILABLE 69  /* a resource it needs at start is not available (the
                                       HTTP address cannot be bound) */
#define WORKER_EXIT_SOFTWARE 70     /* internal failure: out of memory, the event loop failed */
#define WORKER_EXIT_CONFIG 78       /* configuration: a bad setting, a database it cannot use
                                       (not migrated, wrong database), an unsafe Redis
                                       refused with --require-safe-redis */

/* Statement ids registered with the store. */
typedef struct worker_statements {
    int load;
    int load_many;
    int record;
    int record_many;
    int orphans;
    int still_open; /* the sweep's suspects read again */
} worker_statements_t;

typedef struct worker {
    struct event_base *base;
    config_t cfg;
    char id[256];
    retryq_keys_t keys;
    retryq_redis_url_t redis_url;
    queue_t *queue;
    flow_t *flow;            /* flow control per model and region (flow.h) */
    store_t *store;
    struct resolver *resolver; /* evdns: host names of the Redis and database URLs */
    struct resolve_request *redis_dns; /* a lookup of the Redis host in progress */
    char redis_name[256];    /* the Redis URL's host name ("" when an address or a socket) */
    bool redis_dns_done;     /* the first lookup answered */
    int64_t redis_dns_ms;    /* monotonic time of the last lookup */
    store_t *schema_probe;   /* the start-up schema check's own connection, until it answered */
    bool schema_ok;          /* the schema check passed */
    bool schema_has_sets;    /* the database has retry sets (migration 0013) */
    struct page_sets *page_sets; /* the status page's retry sets (page_sets.h), or NULL */
    router_t *router;
    question_bank_t *bank;
    http_server_t *http;
    worker_statements_t sql;
    worker_state_t state;
    int exit_code;

    job_t *jobs;             /* in-flight jobs (doubly linked) */
    size_t inflight;
    size_t inflight_max;     /* high-water mark of inflight (retry_inflight_max) */
    struct job_ctx *jobctx;  /* batches and indexes of the jobs (job.c, batch.c, inflight.c) */

    struct event *sigint;
    struct event *sigterm;
    struct event *sighup;    /* logged and ignored */
    struct periodic *schedule; /* the periodic schedule: one timer per row (worker.c) */
    struct event *drain_deadline;
    struct event *stop_deadline;
    int64_t started_ms;      /* monotonic */
    int64_t stop_requested_ms;
    int signals;             /* SIGINT/SIGTERM received */
    bool idle_check_pending;
    bool sweeping;           /* an orphan sweep is running */
    struct sweep *sweep_state; /* its state while a database query is out (freed at teardown) */
    int64_t sweep_cursor;    /* the last execution id the previous sweep read (0: start) */
    bool ready_announced;

    pause_state_t pause;     /* the queue's pause, read from {Q}:paused (pause.h) */
    metrics_t metrics;       /* counters, reasons, histogram, depths, recent errors (metrics.h) */
    uint64_t rng;
} worker_t;

/* Builds everything from the configuration; returns 0, or on failure a WORKER_EXIT_* code
 * with err filled. */
int worker_init(worker_t *w, const config_t *cfg, char *err, size_t errcap);
/* Runs the loop until the worker stops; returns the process exit code. */
int worker_run(worker_t *w);
void worker_destroy(worker_t *w);

/* Begins a graceful stop (as SIGTERM does). */
void worker_request_stop(worker_t *w, const char *why);
/* Called by job.c whenever a job ends, so the worker can take more or finish a drain. */
void worker_job_finished(worker_t *w);
/* Called by pause.c when the queue's pause began or ended (or was first read): takes no
 * jobs and hurries the blocking pop while paused, takes jobs and releases the held ones
 * after a resume. */
void worker_pause_changed(worker_t *w);
/* A random number for jitter. */
uint64_t worker_random(worker_t *w);

#endif
