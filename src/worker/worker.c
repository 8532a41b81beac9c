/*
 * The worker's life: build the modules on one event_base, take jobs while there is
 * room, run the periodic work (heartbeat + lease recovery, promotion of due delayed
 * jobs, idle checks), and stop in order:
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
#include <sys/random.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "http.h"
#include "internal.h"
#include "janitor.h"
#include "job.h"
#include "log.h"
#include "notify.h"
#include "worker.h"

#define TICK_MS 1000
#define STOP_FLUSH_MS 5000

uint64_t worker_random(worker_t *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static void update_room(worker_t *w)
{
    size_t limit = (size_t)w->cfg.concurrency;
    size_t room = w->state == WORKER_RUNNING && w->inflight < limit ? limit - w->inflight : 0;
    queue_set_room(w->queue, room);
}

static void stop_loop(worker_t *w)
{
    if (w->state == WORKER_STOPPED)
        return;
    w->state = WORKER_STOPPED;
    const worker_counters_t *c = &w->count;
    log_info("worker.stopped",
             "stopped: %zu job(s) left in flight, %zu Redis write(s) unsent; jobs taken %" PRIu64
             ", completed %" PRIu64 ", failed %" PRIu64 ", timeout %" PRIu64 ", stale %" PRIu64
             ", dead %" PRIu64 ", delayed %" PRIu64 ", requeued %" PRIu64
             "; database batches: %" PRIu64 " loads of %" PRIu64 " jobs, %" PRIu64
             " records of %" PRIu64 " jobs, %" PRIu64 " refused",
             w->inflight, queue_unsent(w->queue), c->taken, c->succeeded, c->failed, c->timeouts,
             c->stale, c->dead, c->delayed, c->requeued, c->db_batches[0], c->db_batch_jobs[0],
             c->db_batches[1], c->db_batch_jobs[1], c->db_batches_refused);
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
    struct timeval tv = clock_tv_ms(STOP_FLUSH_MS);
    event_add(w->stop_deadline, &tv);
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
    if (w->inflight == 0) {
        begin_stopping(w);
        return;
    }
    struct timeval tv = clock_tv_ms(w->cfg.drain_timeout_ms);
    event_add(w->drain_deadline, &tv);
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

static void on_queue_job(void *arg, const char *payload, size_t len, bool rescan)
{
    worker_t *w = arg;
    job_start(w, payload, len, rescan);
    if (w->inflight > w->inflight_max)
        w->inflight_max = w->inflight;
    update_room(w);
}

static void on_queue_state(void *arg)
{
    worker_t *w = arg;
    if (w->state == WORKER_STARTING && queue_ready(w->queue)) {
        if (w->cfg.require_safe_redis && queue_unsafe(w->queue)[0] != '\0') {
            log_error("worker.unsafe_redis", "refusing to run (--require-safe-redis): %s",
                      queue_unsafe(w->queue));
            w->exit_code = 1;
            w->state = WORKER_STOPPED;
            event_base_loopbreak(w->base);
            return;
        }
        w->state = WORKER_RUNNING;
        queue_heartbeat(w->queue);
        notify_ready(w);
        char router[512]; /* the URL may carry basic-auth credentials */
        config_redact_url(w->cfg.router_url, router, sizeof router);
        log_info("worker.ready", "[RETRY] worker ready: queue=%s concurrency=%d router=%s",
                 w->keys.pending, w->cfg.concurrency, router);
    }
    update_room(w);
}

void worker_job_finished(worker_t *w)
{
    update_room(w);
    if (w->state == WORKER_DRAINING && w->inflight == 0)
        begin_stopping(w);
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    /* Once the worker has left {Q}:workers, a late heartbeat would put it back. */
    if (w->state == WORKER_STOPPING || w->state == WORKER_STOPPED)
        return;
    queue_heartbeat(w->queue);
    queue_recover(w->queue, w->cfg.lease_ms);
    queue_self_check(w->queue);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    janitor_sweep(arg);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    queue_promote(w->queue);
    notify_tick(w);
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

int worker_init(worker_t *w, const config_t *cfg, char *err, size_t errcap)
{
    retryq_error_t rerr;
    memset(w, 0, sizeof *w);
    w->cfg = *cfg;
    w->started_ms = clock_mono_ms();
    if (getrandom(&w->rng, sizeof w->rng, 0) != sizeof w->rng || w->rng == 0)
        w->rng = (uint64_t)clock_mono_us() | 1;
    if (make_id(w, err, errcap) < 0)
        return -1;
    log_set_worker(w->id);
    if (retryq_keys_init(&w->keys, cfg->queue, &rerr) != RETRYQ_OK ||
        retryq_redis_url_parse(cfg->redis_url, &w->redis_url, &rerr) != RETRYQ_OK) {
        snprintf(err, errcap, "%s", rerr.message);
        return -1;
    }
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(err, errcap, "could not create the event loop");
        return -1;
    }
    w->bank = question_bank_load(cfg->question_bank, err, errcap);
    if (w->bank == NULL)
        return -1;
    w->store = store_new(w->base, cfg->database_url, cfg->db_pool_size, err, errcap);
    if (w->store == NULL)
        return -1;
    w->sql.load = store_register(w->store, JOB_SQL_LOAD, 1);
    w->sql.load_many = store_register(w->store, JOB_SQL_LOAD_MANY, 1);
    w->sql.record = store_register(w->store, JOB_SQL_RECORD, JOB_RECORD_PARAMS);
    w->sql.record_many = store_register(w->store, JOB_SQL_RECORD_MANY, JOB_RECORD_PARAMS);
    w->sql.orphans = store_register(w->store, JANITOR_SQL_ORPHANS, 2);
    if (w->sql.load < 0 || w->sql.load_many < 0 || w->sql.record < 0 || w->sql.record_many < 0 ||
        w->sql.orphans < 0) {
        snprintf(err, errcap, "could not register SQL statements");
        return -1;
    }
    if (job_init(w) < 0) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    router_config_t rcfg = {
        .base_url = cfg->router_url,
        .timeout_ms = cfg->timeout_ms,
        .connect_timeout_ms = cfg->connect_timeout_ms,
        .max_body = (size_t)cfg->max_response_bytes,
    };
    w->router = router_new(w->base, &rcfg, err, errcap);
    if (w->router == NULL)
        return -1;
    queue_config_t qcfg = {
        .url = &w->redis_url,
        .keys = &w->keys,
        .worker_id = w->id,
        .connect_timeout_ms = cfg->connect_timeout_ms,
        .command_timeout_ms = 5000,
        .block_ms = cfg->exit_when_idle ? 200 : 1000,
        .batch = 64,
        .dead_max = cfg->dead_max,
        .heartbeat_ms = cfg->heartbeat_ms,
    };
    queue_callbacks_t qcb = {
        .job = on_queue_job, .idle = on_queue_idle, .state = on_queue_state, .arg = w};
    w->queue = queue_new(w->base, &qcfg, &qcb, err, errcap);
    if (w->queue == NULL)
        return -1;
    w->sigint = evsignal_new(w->base, SIGINT, on_signal, w);
    w->sigterm = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    w->heartbeat = event_new(w->base, -1, EV_PERSIST, heartbeat_cb, w);
    w->sweep = event_new(w->base, -1, EV_PERSIST, sweep_cb, w);
    w->drain_deadline = evtimer_new(w->base, drain_deadline_cb, w);
    w->stop_deadline = evtimer_new(w->base, stop_deadline_cb, w);
    if (w->sigint == NULL || w->sigterm == NULL || w->tick == NULL || w->heartbeat == NULL ||
        w->sweep == NULL ||
        w->drain_deadline == NULL || w->stop_deadline == NULL) {
        snprintf(err, errcap, "could not create timers");
        return -1;
    }
    struct timeval tick = clock_tv_ms(TICK_MS), beat = clock_tv_ms(cfg->heartbeat_ms);
    struct timeval sweep = clock_tv_ms(cfg->orphan_interval_ms);
    if (event_add(w->sigint, NULL) < 0 || event_add(w->sigterm, NULL) < 0 ||
        event_add(w->tick, &tick) < 0 || event_add(w->heartbeat, &beat) < 0 ||
        event_add(w->sweep, &sweep) < 0) {
        snprintf(err, errcap, "could not arm signals and timers");
        return -1;
    }
    if (http_start(w, err, errcap) < 0)
        return -1;
    return 0;
}

int worker_run(worker_t *w)
{
    log_info("worker.start", "[RETRY] retryq-worker %s starting: queue=%s", RETRYQ_VERSION_STRING,
             w->keys.pending);
    if (event_base_dispatch(w->base) < 0) {
        log_error("worker.loop", "the event loop failed");
        return 1;
    }
    return w->exit_code;
}

void worker_destroy(worker_t *w)
{
    struct event **events[] = {&w->sigint, &w->sigterm, &w->tick, &w->heartbeat, &w->sweep,
                               &w->drain_deadline, &w->stop_deadline};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) {
        if (*events[i] != NULL)
            event_free(*events[i]);
        *events[i] = NULL;
    }
    http_stop(w);
    if (w->router != NULL)
        router_free(w->router);
    queue_free(w->queue);
    if (w->store != NULL)
        store_free(w->store);
    janitor_free(w);
    job_free_all(w);
    if (w->bank != NULL)
        question_bank_free(w->bank);
    if (w->base != NULL)
        event_base_free(w->base);
    config_free(&w->cfg);
    memset(w, 0, sizeof *w);
}
