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
#include <unistd.h>

#include <event2/event.h>

#include "backoff.h"
#include "clock.h"
#include "http.h"
#include "internal.h"
#include "janitor.h"
#include "job.h"
#include "log.h"
#include "notify.h"
#include "resolve.h"
#include "worker.h"

#define TICK_MS 1000
#define REDIS_DNS_REFRESH_MS 30000 /* how often the Redis host name is looked up again */
#define STOP_FLUSH_MS 5000

uint64_t worker_random(worker_t *w)
{
    return backoff_random(&w->rng);
}

/* The worker takes jobs only while running and while the database can run its
 * statements: a job taken during an outage (or on a schema the statements no longer
 * prepare on) would only wait in this worker's list, out of reach of healthy peers. */
static void update_room(worker_t *w)
{
    if (w->queue == NULL) /* still resolving the Redis host at start */
        return;
    size_t limit = (size_t)w->cfg.concurrency;
    size_t room = w->state == WORKER_RUNNING && store_connected(w->store) && w->inflight < limit
                      ? limit - w->inflight
                      : 0;
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
    "AND pg_get_constraintdef(c.oid) ~ '\\mstatus\\M' AND m.missing IS NOT NULL)";

static void maybe_start(worker_t *w);

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
    /* The probe is done either way (freeing it from its own callback is allowed). */
    store_free(w->schema_probe);
    w->schema_probe = NULL;
    if (problems[0] != '\0') {
        log_error("db.schema", "refusing to start, the database cannot be used: %s", problems);
        refuse_start(w, WORKER_EXIT_CONFIG);
        return;
    }
    w->schema_ok = true;
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
    char router[512]; /* the URL may carry basic-auth credentials */
    config_redact_url(w->cfg.router_url, router, sizeof router);
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
    maybe_start(w);
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
    if (w->redis_url.is_unix || !resolve_is_name(w->redis_url.host))
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

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    if (w->redis_name[0] != '\0' && clock_mono_ms() - w->redis_dns_ms > REDIS_DNS_REFRESH_MS)
        resolve_redis(w);
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
    backoff_seed(&w->rng);
    if (make_id(w, err, errcap) < 0)
        return WORKER_EXIT_CONFIG;
    log_set_worker(w->id);
    if (retryq_keys_init(&w->keys, cfg->queue, &rerr) != RETRYQ_OK ||
        retryq_redis_url_parse(cfg->redis_url, &w->redis_url, &rerr) != RETRYQ_OK) {
        snprintf(err, errcap, "%s", rerr.message);
        return WORKER_EXIT_CONFIG;
    }
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(err, errcap, "could not create the event loop");
        return WORKER_EXIT_SOFTWARE;
    }
    w->resolver = resolver_new(w->base, cfg->hosts_file, err, errcap);
    if (w->resolver == NULL)
        return WORKER_EXIT_CONFIG;
    w->bank = question_bank_load(cfg->question_bank, err, errcap);
    if (w->bank == NULL)
        return WORKER_EXIT_CONFIG;
    store_options_t sopts = {.query_timeout_ms = cfg->db_query_timeout_ms,
                             .lock_timeout_ms = cfg->db_lock_timeout_ms,
                             .tcp_timeout_ms = cfg->db_tcp_timeout_ms,
                             .resolver = w->resolver};
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
    /* Single-row statements wait and retry when a deadline stops them (a locked row); the
     * batches see the error and are split (job.c), so one row cannot hold up 64 jobs. */
    w->sql.load = store_register_flags(w->store, JOB_SQL_LOAD, 1, STORE_DEADLINE_IS_TRANSIENT);
    w->sql.load_many = store_register(w->store, JOB_SQL_LOAD_MANY, 1);
    w->sql.record = store_register_flags(w->store, JOB_SQL_RECORD, JOB_RECORD_PARAMS,
                                         STORE_DEADLINE_IS_TRANSIENT);
    w->sql.record_many = store_register(w->store, JOB_SQL_RECORD_MANY, JOB_RECORD_PARAMS);
    w->sql.orphans = store_register(w->store, JANITOR_SQL_ORPHANS, 2);
    if (w->sql.load < 0 || w->sql.load_many < 0 || w->sql.record < 0 || w->sql.record_many < 0 ||
        w->sql.orphans < 0) {
        snprintf(err, errcap, "could not register SQL statements");
        return WORKER_EXIT_SOFTWARE;
    }
    if (job_init(w) < 0) {
        snprintf(err, errcap, "out of memory");
        return WORKER_EXIT_SOFTWARE;
    }
    router_config_t rcfg = {
        .base_url = cfg->router_url,
        .timeout_ms = cfg->timeout_ms,
        .connect_timeout_ms = cfg->connect_timeout_ms,
        .max_body = (size_t)cfg->max_response_bytes,
    };
    w->router = router_new(w->base, &rcfg, err, errcap);
    if (w->router == NULL)
        return WORKER_EXIT_CONFIG;
    int rc = resolve_redis_first(w, err, errcap);
    if (rc != 0)
        return rc;
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
        return WORKER_EXIT_SOFTWARE;
    w->sigint = evsignal_new(w->base, SIGINT, on_signal, w);
    w->sigterm = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->sighup = evsignal_new(w->base, SIGHUP, on_sighup, w);
    w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    w->heartbeat = event_new(w->base, -1, EV_PERSIST, heartbeat_cb, w);
    w->sweep = event_new(w->base, -1, EV_PERSIST, sweep_cb, w);
    w->drain_deadline = evtimer_new(w->base, drain_deadline_cb, w);
    w->stop_deadline = evtimer_new(w->base, stop_deadline_cb, w);
    if (w->sigint == NULL || w->sigterm == NULL || w->sighup == NULL || w->tick == NULL ||
        w->heartbeat == NULL || w->sweep == NULL ||
        w->drain_deadline == NULL || w->stop_deadline == NULL) {
        snprintf(err, errcap, "could not create timers");
        return WORKER_EXIT_SOFTWARE;
    }
    struct timeval tick = clock_tv_ms(TICK_MS), beat = clock_tv_ms(cfg->heartbeat_ms);
    struct timeval sweep = clock_tv_ms(cfg->orphan_interval_ms);
    if (event_add(w->sigint, NULL) < 0 || event_add(w->sigterm, NULL) < 0 ||
        event_add(w->sighup, NULL) < 0 ||
        event_add(w->tick, &tick) < 0 || event_add(w->heartbeat, &beat) < 0 ||
        event_add(w->sweep, &sweep) < 0) {
        snprintf(err, errcap, "could not arm signals and timers");
        return WORKER_EXIT_SOFTWARE;
    }
    if (http_start(w, err, errcap) < 0)
        return WORKER_EXIT_UNAVAILABLE;
    return 0;
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
    struct event **events[] = {&w->sigint, &w->sigterm, &w->sighup, &w->tick, &w->heartbeat,
                               &w->sweep,
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
    if (w->schema_probe != NULL)
        store_free(w->schema_probe);
    if (w->redis_dns != NULL)
        resolve_cancel(w->redis_dns);
    if (w->resolver != NULL)
        resolver_free(w->resolver); /* after the store: its lookups are cancelled by then */
    janitor_free(w);
    job_free_all(w);
    if (w->bank != NULL)
        question_bank_free(w->bank);
    if (w->base != NULL)
        event_base_free(w->base);
    config_free(&w->cfg);
    memset(w, 0, sizeof *w);
}
