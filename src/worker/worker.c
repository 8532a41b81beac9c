/*
 * The worker's life: build the modules on one event_base, take jobs while there is
 * room, run the periodic schedule (one table of the work repeated on timers: heartbeat
 * and lease recovery, promotion of due delayed jobs, the orphan sweep, ...; see
 * "periodic schedule" below), and stop in order:
 *
 *   RUNNING ──SIGTERM──► DRAINING (take nothing, finish in-flight jobs, up to the drain
 *   deadline) ──► STOPPING (hand what is left in the processing list back to the head of
 *   the queue, leave {Q}:workers, flush Redis writes) ──► STOPPED (loop exits).
 *
 * A second SIGTERM/SIGINT stops at once: the jobs stay in the processing list, where
 * lease recovery finds them. Teardown order: router (curl), queue (hiredis), store
 * (libpq), jobs, then the event_base.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "backoff.h"
#include "batch.h"
#include "clock.h"
#include "connstr_router.h"
#include "http.h"
#include "internal.h"
#include "janitor.h"
#include "job.h"
#include "log.h"
#include "notify.h"
#include "page_sets.h"
#include "resolve.h"
#include "worker.h"

#define TICK_MS 1000
#define REDIS_DNS_REFRESH_MS 30000 /* how often the Redis host name is looked up again */

uint64_t worker_random(worker_t *w)
{
    return backoff_random(&w->rng);
}

/* The worker takes jobs only while running, while the database can run its statements
 * and while the queue is known not to be paused: a job taken during an outage (or on a
 * schema the statements no longer prepare on) would only wait in this worker's list, out
 * of reach of healthy peers; one taken while paused could not start. */
static void update_room(worker_t *w)
{
    if (w->queue == NULL) /* still resolving the Redis host at start */
        return;
    size_t limit = (size_t)w->cfg.concurrency;
    size_t room = w->state == WORKER_RUNNING && store_connected(w->store) && !pause_holds(w) &&
                          w->inflight < limit
                      ? limit - w->inflight
                      : 0;
    queue_set_room(w->queue, room);
}

static void stop_loop(worker_t *w)
{
    if (w->state == WORKER_STOPPED)
        return;
    w->state = WORKER_STOPPED;
    const metrics_t *m = &w->metrics;
    uint64_t timeouts = m->failures[METRICS_FAIL_TIMEOUT];
    log_info("worker.stopped",
             "stopped: %zu job(s) left in flight, %zu Redis write(s) unsent; jobs taken %" PRIu64
             ", completed %" PRIu64 ", failed %" PRIu64 ", timeout %" PRIu64 ", stale %" PRIu64
             ", dead %" PRIu64 ", delayed %" PRIu64 ", requeued %" PRIu64
             "; database batches: %" PRIu64 " loads of %" PRIu64 " jobs, %" PRIu64
             " records of %" PRIu64 " jobs, %" PRIu64 " refused",
             w->inflight, queue_unsent(w->queue), m->taken_total, m->success_total,
             m->failure_total - timeouts, timeouts, m->stale_total, m->dead_total, m->delayed_total,
             m->requeued_total, m->db_batches_total[0], m->db_batch_jobs_total[0],
             m->db_batches_total[1], m->db_batch_jobs_total[1], m->db_batches_refused_total);
    event_base_loopbreak(w->base);
}

static void on_left(void *arg, bool empty)
{
    stop_loop(arg);
}

static void stop_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    log_warn("worker.stop", "Redis did not confirm the hand-back in time; the processing list "
                            "will be recovered by lease");
    stop_loop(w);
}

/* Hands back whatever is still in this worker's processing list, then stops. */
static void begin_stopping(worker_t *w)
{
    if (w->state == WORKER_STOPPING || w->state == WORKER_STOPPED)
        return;
    w->state = WORKER_STOPPING;
    update_room(w);
    if (w->inflight > 0)
        log_warn("worker.drain", "drain deadline passed with %zu job(s) in flight: handing them "
                                 "back to the head of the queue", w->inflight);
    queue_leave(w->queue, on_left, w);
    struct timeval tv = clock_tv_ms(w->cfg.stop_flush_ms);
    if (event_add(w->stop_deadline, &tv) != 0) {
        /* Without a deadline the stop could wait for Redis forever: stop now; what is
         * left in the processing list is recovered by lease. */
        log_error("worker.stop", "could not arm the stop deadline: stopping at once");
        stop_loop(w);
    }
}

static void drain_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    begin_stopping(arg);
}

void worker_request_stop(worker_t *w, const char *why)
{
    if (w->state != WORKER_STARTING && w->state != WORKER_RUNNING)
        return;
    w->state = WORKER_DRAINING;
    w->stop_requested_ms = clock_mono_ms();
    log_info("worker.drain", "stopping (%s): taking no more jobs, %zu in flight, drain deadline %d ms",
             why, w->inflight, w->cfg.drain_timeout_ms);
    notify_stopping(w);
    update_room(w);
    /* Jobs held by the queue's pause would only wait out the drain deadline: they go back
     * to the head of the queue now, for whichever worker runs after the resume. */
    job_hand_back_held(w, "the queue is paused and this worker stops");
    if (w->inflight == 0) {
        begin_stopping(w);
        return;
    }
    struct timeval tv = clock_tv_ms(w->cfg.drain_timeout_ms);
    if (event_add(w->drain_deadline, &tv) != 0) {
        log_error("worker.drain", "could not arm the drain deadline: handing the jobs in "
                                  "flight back now");
        begin_stopping(w);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    worker_t *w = arg;
    if (++w->signals > 1) {
        log_warn("worker.signal", "second signal: stopping now; %zu job(s) stay in the processing "
                                  "list for recovery", w->inflight);
        w->state = WORKER_STOPPED;
        event_base_loopbreak(w->base);
        return;
    }
    worker_request_stop(w, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* SIGHUP is a reload request by convention; a reload must never kill jobs in flight, and
 * logs go to stderr (nothing to reopen), so it is logged and ignored (docs/operations.md). */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    worker_t *w = arg;
    log_info("worker.signal", "SIGHUP ignored (%zu job(s) in flight): settings are read at "
                              "start only; restart the worker to change them", w->inflight);
}

static void on_queue_empty(void *arg, bool empty)
{
    worker_t *w = arg;
    w->idle_check_pending = false;
    if (empty && w->inflight == 0 && w->state == WORKER_RUNNING)
        worker_request_stop(w, "queue empty and nothing in flight (--exit-when-idle)");
}

static void on_queue_idle(void *arg)
{
    worker_t *w = arg;
    if (w->cfg.exit_when_idle && w->inflight == 0 && !w->idle_check_pending &&
        w->state == WORKER_RUNNING) {
        w->idle_check_pending = true;
        queue_check_empty(w->queue, 2 * w->cfg.heartbeat_ms, on_queue_empty, w);
    }
}

/* A pop dropped a cancelled job (retryq_cancel): counted and logged, nothing else to do
 * (the cancel restores the row). */
static void on_queue_cancelled(void *arg, const char *id, size_t len)
{
    worker_t *w = arg;
    w->metrics.cancelled_total++;
    log_info("job.cancelled", "[RETRY] job %.*s was cancelled: dropped when taken, not run",
             (int)(len > 64 ? 64 : len), id);
}

static void on_queue_job(void *arg, const char *payload, size_t len, bool rescan)
{
    worker_t *w = arg;
    job_start(w, payload, len, rescan);
    if (w->inflight > w->inflight_max)
        w->inflight_max = w->inflight;
    update_room(w);
}

/* Stops the loop at start-up with an exit code (worker.h: WORKER_EXIT_*). */
static void refuse_start(worker_t *w, int code)
{
    w->exit_code = code;
    w->state = WORKER_STOPPED;
    event_base_loopbreak(w->base);
}

/*
 * The schema check, run once at start on a connection of its own (a pool of one that
 * prepares nothing else, so it runs even where the worker's statements would not prepare):
 * the tables and columns the worker's statements use, and a status check on executions
 * that names 'retrying', 'timeout' and 'error'. One row: problems as text, NULL when none.
 */
static const char SCHEMA_SQL[] =
    "WITH need(tbl, col) AS (VALUES ('executions', 'id'), ('executions', 'job_id'), "
    "('executions', 'region'), ('executions', 'status'), ('executions', 'retry_count'), "
    "('executions', 'max_retries'), ('executions', 'last_retry_at'), "
    "('executions', 'question_id'), ('executions', 'model_id'), ('executions', 'output_data'), "
    "('executions', 'receipt_data'), ('executions', 'provider_id'), "
    "('executions', 'completed_at'), ('executions', 'original_error'), "
    "('executions', 'retry_history'), ('jobs', 'id'), ('jobs', 'jobspec_data')) "
    "SELECT (SELECT string_agg('no ' || t || ' table', ', ' ORDER BY t) FROM "
    "(SELECT DISTINCT tbl AS t FROM need) x WHERE to_regclass(t) IS NULL), "
    "(SELECT string_agg(n.tbl || '.' || n.col, ', ' ORDER BY n.tbl, n.col) FROM need n "
    "WHERE to_regclass(n.tbl) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute a "
    "WHERE a.attrelid = to_regclass(n.tbl) AND a.attname = n.col AND a.attnum > 0 "
    "AND NOT a.attisdropped)), "
    "(SELECT string_agg(c.conname || ' does not admit ' || m.missing, '; ' ORDER BY c.conname) "
    "FROM pg_constraint c CROSS JOIN LATERAL (SELECT string_agg(st, ', ') AS missing FROM "
    "unnest(ARRAY['retrying', 'timeout', 'error']) st "
    "WHERE position(quote_literal(st) IN pg_get_constraintdef(c.oid)) = 0) m "
    "WHERE c.conrelid = to_regclass('executions') AND c.contype = 'c' "
    "AND pg_get_constraintdef(c.oid) ~ '\\mstatus\\M' AND m.missing IS NOT NULL), "
    /* not a problem: whether retry sets (migration 0013) are there for the status page */
    "to_regprocedure('retryq_set_progress(bigint[])') IS NOT NULL";

static void maybe_start(worker_t *w);

/* The deadlines and resolver of every database connection of the worker. */
static store_options_t db_options(const worker_t *w)
{
    const config_t *cfg = &w->cfg;
    return (store_options_t){.query_timeout_ms = cfg->db_query_timeout_ms,
                             .lock_timeout_ms = cfg->db_lock_timeout_ms,
                             .tcp_timeout_ms = cfg->db_tcp_timeout_ms,
                             .pipeline_depth = cfg->db_pipeline_depth,
                             .resolver = w->resolver,
                             .password = cfg->database_password};
}

/* The status page's retry sets, on a connection of their own, when the page is served and
 * the database has them (a worker runs without them: they are only shown). */
static void start_page_sets(worker_t *w)
{
    if (w->http == NULL || !w->schema_has_sets || w->page_sets != NULL)
        return;
    char err[256];
    store_options_t sopts = db_options(w);
    w->page_sets = page_sets_new(w->base, w->cfg.database_url, &sopts, err, sizeof err);
    if (w->page_sets == NULL)
        log_warn("status.sets", "the status page will not show retry sets: %s", err);
}

static void schedule_start_at_ready(worker_t *w);

static void on_schema(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                      const char *message)
{
    worker_t *w = arg;
    if (status == STORE_ERR_CONNECTION) {
        /* The database went away under the check: ask again once it is back. */
        if (store_exec(w->schema_probe, 0, 0, NULL, on_schema, w) < 0)
            refuse_start(w, WORKER_EXIT_SOFTWARE);
        return;
    }
    if (status == STORE_ERR_QUERY || PQntuples(res) != 1) {
        log_error("db.schema", "could not check the database schema (%s): %s", sqlstate, message);
        refuse_start(w, WORKER_EXIT_CONFIG);
        return;
    }
    char problems[2048] = "";
    size_t o = 0;
    static const char *const fixes[] = {
        "is RETRYQ_DATABASE_URL the wrong database? It must name the runner's database, "
        "migrated with `retryq migrate`",
        "the worker needs these columns: run the runner's migrations and `retryq migrate`, or "
        "point RETRYQ_DATABASE_URL at the right database",
        "run `retryq migrate` (retryq's migration widens the status check)",
    };
    static const char *const leads[] = {"", "missing column(s) ", ""};
    for (int k = 0; k < 3; k++) {
        if (PQgetisnull(res, 0, k))
            continue;
        int n = snprintf(problems + o, sizeof problems - o, "%s%s%s: %s", o > 0 ? "; " : "",
                         leads[k], PQgetvalue(res, 0, k), fixes[k]);
        if (n > 0)
            o = o + (size_t)n < sizeof problems ? o + (size_t)n : sizeof problems - 1;
    }
    bool has_sets = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    /* The probe is done either way (freeing it from its own callback is allowed). */
    store_free(w->schema_probe);
    w->schema_probe = NULL;
    if (problems[0] != '\0') {
        log_error("db.schema", "refusing to start, the database cannot be used: %s", problems);
        refuse_start(w, WORKER_EXIT_CONFIG);
        return;
    }
    w->schema_ok = true;
    w->schema_has_sets = has_sets;
    start_page_sets(w);
    maybe_start(w);
}

static void maybe_start(worker_t *w)
{
    if (w->state != WORKER_STARTING || !w->schema_ok || w->queue == NULL ||
        !queue_ready(w->queue))
        return;
    if (w->cfg.require_safe_redis && queue_unsafe(w->queue)[0] != '\0') {
        log_error("worker.unsafe_redis", "refusing to run (--require-safe-redis): %s",
                  queue_unsafe(w->queue));
        refuse_start(w, WORKER_EXIT_CONFIG);
        return;
    }
    w->state = WORKER_RUNNING;
    queue_heartbeat(w->queue);
    notify_ready(w);
    schedule_start_at_ready(w);
    char router[512]; /* the URL may carry basic-auth credentials */
    connstr_router_redact(w->cfg.router_url, router, sizeof router);
    log_info("worker.ready", "[RETRY] worker ready: queue=%s concurrency=%d router=%s",
             w->keys.pending, w->cfg.concurrency, router);
    update_room(w);
}

static void on_store_state(void *arg)
{
    worker_t *w = arg;
    update_room(w);
    /* No room now, and a blocking pop still out would bring a job the store cannot load:
     * make it answer at once (issue 12 item 10: take no jobs while the store is down). */
    if (w->queue != NULL && !store_connected(w->store))
        queue_cancel_pop(w->queue);
}

static void on_queue_state(void *arg)
{
    worker_t *w = arg;
    /* The pause is read as soon as Redis is up, so a worker that starts takes jobs (or
     * knows it must not) at once rather than at the schedule's next read. */
    if (!w->pause.known)
        pause_refresh(w);
    maybe_start(w);
    update_room(w);
}

void worker_pause_changed(worker_t *w)
{
    update_room(w);
    if (pause_holds(w)) {
        queue_cancel_pop(w->queue); /* a blocking pop out would bring a job now */
        return;
    }
    job_release_held(w);
}

void worker_job_finished(worker_t *w)
{
    update_room(w);
    if (w->state == WORKER_DRAINING && w->inflight == 0)
        begin_stopping(w);
}

/* The Redis host's address: looked up with evdns at start and every 30 s, so a reconnect
 * (after a failover that moved the name, too) connects to an address and never waits
 * for DNS on the loop. */
static void on_redis_resolved(void *arg, const char *addr, const char *error)
{
    worker_t *w = arg;
    w->redis_dns = NULL;
    w->redis_dns_done = true;
    if (addr == NULL) {
        log_warn("redis.resolve", "could not resolve the Redis host %s: %s%s", w->redis_name,
                 error, w->queue != NULL ? " (keeping the last address)" : "");
        return;
    }
    if (strcmp(w->redis_url.host, addr) != 0) {
        log_info("redis.resolve", "Redis host %s is %s", w->redis_name, addr);
        rq_copy(w->redis_url.host, sizeof w->redis_url.host, addr);
    }
    if (w->queue != NULL)
        queue_set_host(w->queue, addr);
}

static void resolve_redis(worker_t *w)
{
    if (w->redis_name[0] == '\0' || w->redis_dns != NULL)
        return;
    w->redis_dns_ms = clock_mono_ms();
    w->redis_dns = resolve_start(w->resolver, w->redis_name, on_redis_resolved, w);
}

static void dns_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* The first lookup of the Redis host, before the queue connects: the loop runs (the
 * database connections start meanwhile) until the answer or the connect timeout. */
static int resolve_redis_first(worker_t *w, char *err, size_t errcap)
{
    /* Sentinel: the queue resolves the sentinels' and the primary's names itself; Cluster:
     * the seeds are asked as they are written (the nodes answer with addresses). */
    if (w->redis_url.is_unix || w->redis_url.is_sentinel || w->redis_url.is_cluster ||
        !resolve_is_name(w->redis_url.host))
        return 0;
    rq_copy(w->redis_name, sizeof w->redis_name, w->redis_url.host);
    bool expired = false;
    struct event *deadline = evtimer_new(w->base, dns_deadline_cb, &expired);
    struct timeval tv = clock_tv_ms(w->cfg.connect_timeout_ms);
    if (deadline == NULL || evtimer_add(deadline, &tv) != 0) {
        if (deadline != NULL)
            event_free(deadline);
        snprintf(err, errcap, "could not arm the DNS deadline");
        return WORKER_EXIT_SOFTWARE;
    }
    resolve_redis(w);
    while (!w->redis_dns_done && !expired && w->redis_dns != NULL)
        event_base_loop(w->base, EVLOOP_ONCE);
    event_free(deadline);
    if (w->redis_dns != NULL) {
        resolve_cancel(w->redis_dns);
        w->redis_dns = NULL;
    }
    if (!resolve_is_name(w->redis_url.host)) /* replaced by the address */
        return 0;
    snprintf(err, errcap, "could not resolve the Redis host %s within %d ms", w->redis_name,
             w->cfg.connect_timeout_ms);
    return WORKER_EXIT_UNAVAILABLE;
}

/* ------------------------------------------------------------------ periodic schedule */

/*
 * The periodic schedule: everything the worker does again and again by itself, in one
 * table (schedule_table). Each row is one persistent libevent timer (EV_PERSIST), armed
 * in table order: the first run comes one period after it is armed — at the end of
 * worker_init, or when the worker starts running (READY=1) for the systemd watchdog — and
 * the next ones every period, counted from when a run was due, not from when it ran. Every
 * row runs until the loop exits (through DRAINING and STOPPING) except the heartbeat,
 * which stops at STOPPING: once the worker has left {Q}:workers, a late heartbeat would
 * put it back.
 *
 *   task              period                        steps, in this order
 *   redis.watchdog    500 ms (QUEUE_WATCHDOG_MS)    queue_watchdog: drop a Redis
 *                                                   connection whose reply is overdue;
 *                                                   PING one idle for 2 s
 *   tick              1 s (TICK_MS)                 resolve_redis when 30 s have passed
 *                                                   since the last lookup; queue_promote
 *                                                   (due delayed jobs); notify_tick (STATUS=)
 *   heartbeat         heartbeat_ms                  queue_heartbeat; flow_heartbeat (renew
 *                                                   the leases of the flow permits held);
 *                                                   queue_recover (lease_ms); queue_self_check
 *   queue.pause       250 ms (PAUSE_REFRESH_MS)     pause_refresh: read {Q}:paused; a change
 *                                                   stops or restarts the pops and holds or
 *                                                   releases the jobs about to call the router
 *   flow.refresh      1 s (FLOW_REFRESH_MS)         flow_refresh: end local pauses that are
 *                                                   over, read the paused keys of every
 *                                                   worker and operator, note the keys used
 *   orphan.sweep      orphan_interval_ms            janitor_sweep (starts a sweep only while
 *                                                   RUNNING with Redis and PostgreSQL up)
 *   metrics.refresh   1 s (HTTP_REFRESH_MS), with   http_refresh: throughput slots, queue
 *                     the HTTP endpoint only        depths for /metrics and the status page,
 *                                                   the flow-control state for the page
 *   systemd.watchdog  WATCHDOG_USEC / 3 from        notify_watchdog (WATCHDOG=1)
 *                     READY=1, when it is ours
 *
 * The steps of one row run in one callback, in order (the heartbeat goes out before the
 * lease recovery): as separate timers their order would depend on how libevent orders
 * timers that fall due in the same turn, which it does not promise.
 *
 * Not in the schedule: one-shot timers that belong to one object and are armed by what
 * happens to it — a job's backoff and deadlines (job.c), a Redis connection's connect
 * deadline and reconnect backoff and the pop retry (queue.c), a database connection's
 * timers (store.c), curl's timer (router.c), the drain and stop deadlines and the DNS
 * deadline at start (this file). They live and die with their object.
 */
#define SCHEDULE_ROWS 8

typedef enum periodic_from {
    FROM_INIT,  /* armed at the end of worker_init */
    FROM_READY, /* armed when the worker starts running (READY=1) */
} periodic_from_t;

typedef enum periodic_span {
    UNTIL_EXIT,     /* runs in every state until the loop exits */
    UNTIL_STOPPING, /* does nothing once the worker is STOPPING or STOPPED */
} periodic_span_t;

typedef struct periodic_task {
    const char *name;
    int64_t period_ms;       /* 0: not scheduled (its module is off) */
    periodic_from_t from;
    periodic_span_t span;
    void (*run)(worker_t *w, int64_t now_ms);
} periodic_task_t;

/* One row of w->schedule. */
struct periodic {
    periodic_task_t task;
    worker_t *w;
    struct event *timer;     /* NULL when not scheduled */
};

static void run_redis_watchdog(worker_t *w, int64_t now_ms)
{
    queue_watchdog(w->queue, now_ms);
}

static void run_tick(worker_t *w, int64_t now_ms)
{
    if (w->redis_name[0] != '\0' && now_ms - w->redis_dns_ms > REDIS_DNS_REFRESH_MS)
        resolve_redis(w);
    queue_promote(w->queue);
    notify_tick(w);
}

static void run_heartbeat(worker_t *w, int64_t now_ms)
{
    queue_heartbeat(w->queue);
    flow_heartbeat(w->flow);
    queue_recover(w->queue, w->cfg.lease_ms);
    queue_self_check(w->queue);
}

static void run_pause_refresh(worker_t *w, int64_t now_ms)
{
    pause_refresh(w);
}

static void run_flow_refresh(worker_t *w, int64_t now_ms)
{
    flow_refresh(w->flow, now_ms);
}

static void run_orphan_sweep(worker_t *w, int64_t now_ms)
{
    janitor_sweep(w);
}

static void run_metrics_refresh(worker_t *w, int64_t now_ms)
{
    http_refresh(w, now_ms);
}

static void run_systemd_watchdog(worker_t *w, int64_t now_ms)
{
    notify_watchdog(w);
}

/* The table described above; a period of 0 leaves its row out. */
static void schedule_table(const worker_t *w, periodic_task_t tasks[SCHEDULE_ROWS])
{
    const periodic_task_t table[SCHEDULE_ROWS] = {
        /* task              period (ms)                           from        runs */
        {"redis.watchdog",   QUEUE_WATCHDOG_MS,                    FROM_INIT,  UNTIL_EXIT,
         run_redis_watchdog},
        {"tick",             TICK_MS,                              FROM_INIT,  UNTIL_EXIT,
         run_tick},
        {"heartbeat",        w->cfg.heartbeat_ms,                  FROM_INIT,  UNTIL_STOPPING,
         run_heartbeat},
        {"queue.pause",      PAUSE_REFRESH_MS,                     FROM_INIT,  UNTIL_EXIT,
         run_pause_refresh},
        {"flow.refresh",     FLOW_REFRESH_MS,                      FROM_INIT,  UNTIL_EXIT,
         run_flow_refresh},
        {"orphan.sweep",     w->cfg.orphan_interval_ms,            FROM_INIT,  UNTIL_EXIT,
         run_orphan_sweep},
        {"metrics.refresh",  w->http != NULL ? HTTP_REFRESH_MS : 0, FROM_INIT, UNTIL_EXIT,
         run_metrics_refresh},
        {"systemd.watchdog", notify_watchdog_ms(),                 FROM_READY, UNTIL_EXIT,
         run_systemd_watchdog},
    };
    memcpy(tasks, table, sizeof table);
}

static void periodic_cb(evutil_socket_t fd, short what, void *arg)
{
    struct periodic *p = arg;
    worker_t *w = p->w;
    if (p->task.span == UNTIL_STOPPING &&
        (w->state == WORKER_STOPPING || w->state == WORKER_STOPPED))
        return;
    p->task.run(w, clock_mono_ms());
}

/* Arms the scheduled rows that start `from` now, in table order; returns the task whose
 * timer could not be armed, or NULL. */
static const char *schedule_start(worker_t *w, periodic_from_t from)
{
    for (size_t i = 0; w->schedule != NULL && i < SCHEDULE_ROWS; i++) {
        struct periodic *p = &w->schedule[i];
        if (p->task.from != from || p->timer == NULL)
            continue;
        struct timeval tv = clock_tv_ms(p->task.period_ms);
        if (event_add(p->timer, &tv) < 0)
            return p->task.name;
    }
    return NULL;
}

static void schedule_start_at_ready(worker_t *w)
{
    const char *failed = schedule_start(w, FROM_READY);
    if (failed != NULL)
        log_error("worker.schedule", "could not arm the %s timer", failed);
}

/* The last step of worker_init: every module the rows call exists by now. */
static int schedule_init(worker_t *w, char *err, size_t errcap)
{
    w->schedule = calloc(SCHEDULE_ROWS, sizeof *w->schedule);
    if (w->schedule == NULL) {
        snprintf(err, errcap, "out of memory");
        return WORKER_EXIT_SOFTWARE;
    }
    periodic_task_t tasks[SCHEDULE_ROWS];
    schedule_table(w, tasks);
    for (size_t i = 0; i < SCHEDULE_ROWS; i++) {
        struct periodic *p = &w->schedule[i];
        p->task = tasks[i];
        p->w = w;
        if (p->task.period_ms <= 0)
            continue;
        p->timer = event_new(w->base, -1, EV_PERSIST, periodic_cb, p);
        if (p->timer == NULL) {
            snprintf(err, errcap, "could not create timers");
            return WORKER_EXIT_SOFTWARE;
        }
    }
    const char *failed = schedule_start(w, FROM_INIT);
    if (failed != NULL) {
        snprintf(err, errcap, "could not arm the %s timer", failed);
        return WORKER_EXIT_SOFTWARE;
    }
    return 0;
}

static void schedule_free(worker_t *w)
{
    for (size_t i = 0; w->schedule != NULL && i < SCHEDULE_ROWS; i++)
        if (w->schedule[i].timer != NULL)
            event_free(w->schedule[i].timer);
    free(w->schedule);
    w->schedule = NULL;
}

static int make_id(worker_t *w, char *err, size_t errcap)
{
    if (w->cfg.worker_id != NULL && w->cfg.worker_id[0] != '\0') {
        if (!rq_copy(w->id, sizeof w->id, w->cfg.worker_id)) {
            snprintf(err, errcap, "RETRYQ_WORKER_ID: longer than %zu bytes", sizeof w->id - 1);
            return -1;
        }
        return 0;
    }
    char host[128] = "localhost";
    if (gethostname(host, sizeof host) != 0)
        rq_copy(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(w->id, sizeof w->id, "%s:%ld:%08llx", host, (long)getpid(),
             (unsigned long long)(worker_random(w) & 0xffffffffu));
    return 0;
}

/* ------------------------------------------------------------------ start-up */

/* The first step of worker_init: the settings, the worker id, the key names and the Redis
 * URL, none of which needs the event loop. */
static int init_identity(worker_t *w, const config_t *cfg, char *err, size_t errcap)
{
    retryq_error_t rerr;
    memset(w, 0, sizeof *w);
    w->cfg = *cfg;
    w->started_ms = clock_mono_ms();
    backoff_seed(&w->rng);
    if (make_id(w, err, errcap) < 0)
        return WORKER_EXIT_CONFIG;
    log_set_worker(w->id);
    if (retryq_keys_init(&w->keys, cfg->queue, &rerr) != RETRYQ_OK) {
        snprintf(err, errcap, "%s", rerr.message);
        return WORKER_EXIT_CONFIG;
    }
    w->redis_url = cfg->redis; /* parsed once by config_load, with the file's password */
    return 0;
}

/* The event loop, the evdns resolver on it, and the question bank. */
static int init_loop(worker_t *w, char *err, size_t errcap)
{
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(err, errcap, "could not create the event loop");
        return WORKER_EXIT_SOFTWARE;
    }
    w->resolver = resolver_new(w->base, w->cfg.hosts_file, err, errcap);
    if (w->resolver == NULL)
        return WORKER_EXIT_CONFIG;
    w->bank = question_bank_load(w->cfg.question_bank, err, errcap);
    if (w->bank == NULL)
        return WORKER_EXIT_CONFIG;
    return 0;
}

/* The database: the worker's pool, and the schema check on a connection of its own (sent
 * now, answered once the loop runs). */
static int init_database(worker_t *w, char *err, size_t errcap)
{
    const config_t *cfg = &w->cfg;
    store_options_t sopts = db_options(w);
    w->store = store_new_opts(w->base, cfg->database_url, cfg->db_pool_size, &sopts, err, errcap);
    if (w->store == NULL)
        return WORKER_EXIT_CONFIG;
    store_set_state_callback(w->store, on_store_state, w);
    w->schema_probe = store_new_opts(w->base, cfg->database_url, 1, &sopts, err, errcap);
    if (w->schema_probe == NULL)
        return WORKER_EXIT_CONFIG;
    if (store_register(w->schema_probe, SCHEMA_SQL, 0) != 0 ||
        store_exec(w->schema_probe, 0, 0, NULL, on_schema, w) < 0) {
        snprintf(err, errcap, "out of memory");
        return WORKER_EXIT_SOFTWARE;
    }
    return 0;
}

/* The statements the jobs and the orphan sweep run, prepared on every pool connection. */
static int init_statements(worker_t *w, char *err, size_t errcap)
{
    /* Single-row statements wait and retry when a deadline stops them (a locked row); the
     * batches see the error and are split (batch.c), so one row cannot hold up 64 jobs. */
    w->sql.load = store_register_flags(w->store, JOB_SQL_LOAD, 1, STORE_DEADLINE_IS_TRANSIENT);
    w->sql.load_many = store_register(w->store, JOB_SQL_LOAD_MANY, 1);
    w->sql.record = store_register_flags(w->store, JOB_SQL_RECORD, JOB_RECORD_PARAMS,
                                         STORE_DEADLINE_IS_TRANSIENT);
    w->sql.record_many = store_register(w->store, JOB_SQL_RECORD_MANY, JOB_RECORD_PARAMS);
    w->sql.orphans = store_register(w->store, JANITOR_SQL_ORPHANS, 2);
    w->sql.still_open = store_register(w->store, JANITOR_SQL_STILL_OPEN, 3);
    if (w->sql.load < 0 || w->sql.load_many < 0 || w->sql.record < 0 || w->sql.record_many < 0 ||
        w->sql.orphans < 0 || w->sql.still_open < 0) {
        snprintf(err, errcap, "could not register SQL statements");
        return WORKER_EXIT_SOFTWARE;
    }
    return 0;
}

/* What a job needs besides the stores: its batches and indexes (job.c) and the router. */
static int init_jobs(worker_t *w, char *err, size_t errcap)
{
    if (job_init(w) < 0) {
        snprintf(err, errcap, "out of memory");
        return WORKER_EXIT_SOFTWARE;
    }
    router_config_t rcfg = {
        .base_url = w->cfg.router_url,
        .timeout_ms = w->cfg.timeout_ms,
        .connect_timeout_ms = w->cfg.connect_timeout_ms,
        .max_body = (size_t)w->cfg.max_response_bytes,
    };
    w->router = router_new(w->base, &rcfg, err, errcap);
    if (w->router == NULL)
        return WORKER_EXIT_CONFIG;
    return 0;
}

/* Redis: the host name looked up first (the loop turns meanwhile), then the queue's two
 * connections started. */
static int init_queue(worker_t *w, char *err, size_t errcap)
{
    int rc = resolve_redis_first(w, err, errcap);
    if (rc != 0)
        return rc;
    queue_config_t qcfg = {
        .url = &w->redis_url,
        .keys = &w->keys,
        .worker_id = w->id,
        .connect_timeout_ms = w->cfg.connect_timeout_ms,
        .command_timeout_ms = w->cfg.redis_command_timeout_ms,
        .block_ms = w->cfg.exit_when_idle ? 200 : 1000,
        .batch = 64,
        .dead_max = w->cfg.dead_max,
        .heartbeat_ms = w->cfg.heartbeat_ms,
        .self_check_page = w->cfg.self_check_page,
        .resolver = w->resolver,
    };
    queue_callbacks_t qcb = {.job = on_queue_job,
                             .cancelled = on_queue_cancelled,
                             .idle = on_queue_idle,
                             .state = on_queue_state,
                             .arg = w};
    w->queue = queue_new(w->base, &qcfg, &qcb, err, errcap);
    if (w->queue == NULL)
        return WORKER_EXIT_SOFTWARE;
    return 0;
}

/* Flow control on the queue's command connection, with the limits of RETRYQ_FLOW and the
 * breaker of RETRYQ_BREAKER (both checked by config.c already). */
static int init_flow(worker_t *w, char *err, size_t errcap)
{
    flow_rules_t *rules = malloc(sizeof *rules);
    breaker_config_t breaker;
    char why[400];
    if (rules == NULL) {
        snprintf(err, errcap, "out of memory");
        return WORKER_EXIT_SOFTWARE;
    }
    int rc = 0;
    if (flow_rules_parse(w->cfg.flow, rules, why, sizeof why) < 0 ||
        breaker_config_parse(w->cfg.breaker, &breaker, why, sizeof why) < 0) {
        snprintf(err, errcap, "flow control: %s", why);
        rc = WORKER_EXIT_CONFIG;
    } else {
        flow_config_t fcfg = {.rules = rules,
                              .breaker = &breaker,
                              .queue = w->queue,
                              .keys = &w->keys,
                              .worker_id = w->id,
                              .lease_ms = w->cfg.lease_ms};
        w->flow = flow_new(&fcfg, err, errcap);
        if (w->flow == NULL)
            rc = WORKER_EXIT_SOFTWARE;
        else if (rules->count > 0 || !breaker.enabled)
            log_info("flow.config", "flow control: %d rule(s) of limits, breaker %s", rules->count,
                     breaker.enabled ? "on" : "off");
    }
    free(rules);
    return rc;
}

/* The signals (armed now) and the drain and stop deadlines (armed by a stop). */
static int init_signals(worker_t *w, char *err, size_t errcap)
{
    w->sigint = evsignal_new(w->base, SIGINT, on_signal, w);
    w->sigterm = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->sighup = evsignal_new(w->base, SIGHUP, on_sighup, w);
    w->drain_deadline = evtimer_new(w->base, drain_deadline_cb, w);
    w->stop_deadline = evtimer_new(w->base, stop_deadline_cb, w);
    if (w->sigint == NULL || w->sigterm == NULL || w->sighup == NULL ||
        w->drain_deadline == NULL || w->stop_deadline == NULL) {
        snprintf(err, errcap, "could not create timers");
        return WORKER_EXIT_SOFTWARE;
    }
    if (event_add(w->sigint, NULL) < 0 || event_add(w->sigterm, NULL) < 0 ||
        event_add(w->sighup, NULL) < 0) {
        snprintf(err, errcap, "could not arm signals and timers");
        return WORKER_EXIT_SOFTWARE;
    }
    return 0;
}

static int init_http(worker_t *w, char *err, size_t errcap)
{
    return http_start(w, err, errcap) < 0 ? WORKER_EXIT_UNAVAILABLE : 0;
}

/* In this order: what a step builds, the later ones use; the schedule comes last so that
 * every module its rows call exists. */
int worker_init(worker_t *w, const config_t *cfg, char *err, size_t errcap)
{
    static int (*const steps[])(worker_t *w, char *err, size_t errcap) = {
        init_loop, init_database, init_statements, init_jobs,
        init_queue, init_flow, init_signals, init_http, schedule_init,
    };
    int rc = init_identity(w, cfg, err, errcap);
    for (size_t i = 0; rc == 0 && i < sizeof steps / sizeof steps[0]; i++)
        rc = steps[i](w, err, errcap);
    return rc;
}

int worker_run(worker_t *w)
{
    log_info("worker.start", "[RETRY] retryq-worker %s starting: queue=%s", RETRYQ_VERSION_STRING,
             w->keys.pending);
    if (w->state == WORKER_STOPPED) /* refused while starting (the schema check) */
        return w->exit_code;
    if (event_base_dispatch(w->base) < 0) {
        log_error("worker.loop", "the event loop failed");
        return WORKER_EXIT_SOFTWARE;
    }
    return w->exit_code;
}

void worker_destroy(worker_t *w)
{
    struct event **events[] = {&w->sigint, &w->sigterm, &w->sighup, &w->drain_deadline,
                               &w->stop_deadline};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        if (*events[i] != NULL)
            event_free(*events[i]);
        *events[i] = NULL;
    }
    schedule_free(w);
    http_stop(w);
    if (w->router != NULL)
        router_free(w->router);
    flow_close(w->flow); /* replies the queue still owes are dropped */
    queue_free(w->queue);
    if (w->store != NULL)
        store_free(w->store);
    if (w->schema_probe != NULL)
        store_free(w->schema_probe);
    page_sets_free(w->page_sets);
    if (w->redis_dns != NULL)
        resolve_cancel(w->redis_dns);
    if (w->resolver != NULL)
        resolver_free(w->resolver); /* after the store: its lookups are cancelled by then */
    janitor_free(w);
    job_free_all(w);
    flow_free(w->flow); /* after the jobs have given their passes back */
    if (w->bank != NULL)
        question_bank_free(w->bank);
    if (w->base != NULL)
        event_base_free(w->base);
    config_free(&w->cfg);
    memset(w, 0, sizeof *w);
}
