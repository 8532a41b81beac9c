/*
 * One job's life, from payload to ack (DESIGN §1 and §5). The steps, in the order of this
 * file, and where the work of each is done:
 *
 *   1 decode the payload ─bad─► dead list         retryq_job_decode (src/lib/job.c)
 *     a rescan of a payload held, a duplicate of a job in flight ─► ack   inflight.c
 *   2 load the execution row by id                batch.c (one statement for many jobs)
 *   3 guard: status = 'retrying' AND retry_count = retry_attempt ─no─► ack as stale;
 *     region and max_retries checked too          here
 *   4 resolve the question ─bad─► record failed, dead list               question.c
 *   5 the queue's pause (`retryq pause`): held here, in the processing list, until the
 *     resume; handed back to the queue when the worker stops meanwhile   pause.c
 *     flow control: may this job call the router for its key (MODEL/REGION) now?
 *     ─not now (paused, breaker open, no permit or token)─► parked: delayed set with the
 *                                             same delivery, no database write   flow.c
 *   6 call the router (libcurl multi, 60 s)       router.c; the answer's meaning: classify.c
 *      the router's pause (429/503 with Retry-After or ratelimit headers) ─► parked
 *      transient (network, 5xx, 429, 408) ─► delayed set with delivery + 1, or failed
 *                                             after the last step of the backoff schedule
 *   7 record: one guarded UPDATE (status, output, history entry)
 *                                                 documents: outcome.c; statement: batch.c
 *   8 ack (LREM) only after the record committed  queue.c
 *
 * Every path off the happy one (delay, give up, poison, wait and redo, requeue, park) is decided
 * by policy.c (`decide`). A database outage never fails a job: loads wait and retry; an
 * outcome already received is kept in memory and its write retried until a deadline, then
 * the job is handed back to the queue. Everything a job owns hangs off its struct and is
 * freed by job_free.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "batch.h"
#include "classify.h"
#include "clock.h"
#include "inflight.h"
#include "internal.h"
#include "job.h"
#include "log.h"
#include "outcome.h"
#include "policy.h"

#define DEFAULT_MODEL "llama3.2-1b"
#define STORE_BACKOFF_MIN_MS 200
#define STORE_BACKOFF_MAX_MS 10000
#define JOB_PROMOTE_TICK_MS 1000 /* the period of the schedule's promotion (worker.c TICK_MS) */

typedef enum job_stage { STAGE_LOAD, STAGE_HELD, STAGE_FLOW, STAGE_CALL, STAGE_RECORD } job_stage_t;

struct job {
    worker_t *w;
    job_t *prev, *next;
    char *payload;
    size_t len;
    retryq_job_t req;          /* the retry request: the decoded payload */
    job_stage_t stage;
    int64_t taken_ms;
    int64_t call_started_ms;
    double call_sec;           /* the router call's wall time (retry_duration_seconds) */

    char *region;          /* as stored on the row */
    const char *router_region; /* the router's form of it (question_router_region) */
    char *model;
    question_t question;
    bool have_question;
    flow_pass_t *pass;         /* flow control's pass from asking to the router's answer */
    router_call_t *call;

    /* The outcome waiting to be recorded. */
    const char *exec_status;   /* completed | failed | timeout */
    const char *history_status; /* success | failed | timeout | error */
    char *output_json;
    char *history_json;
    char *receipt_json;        /* success: metadata.receipt, for receipt_data */
    char *provider;
    char *error;
    char *dead_reason;         /* after the record: dead-letter instead of ack */
    bool sanitised_retry;      /* the database refused the text once already */

    struct event *timer;       /* waiting to redo the current stage after an outage */
    int backoff_ms;            /* the last wait of RETRY_WAIT (policy.h) */
    int64_t received_ms;       /* when the outcome to record was received (0: none yet) */
    metrics_failure_t failure; /* what kind of failure the outcome is (metrics) */
    metrics_dead_t dead_class; /* why the job goes to the dead list after the record */

    inflight_entry_t index_entry; /* its place in the in-flight indexes (inflight.h) */
};

/* What the jobs of one worker share. */
struct job_ctx {
    batcher_t *batches; /* the loads and outcome writes, gathered into batches (batch.h) */
    inflight_t *index;  /* the jobs in flight by key and by payload (inflight.h) */
};

/* The steps. */
static void job_load(job_t *job);
static void job_resolve(job_t *job, const batch_row_t *row);
static void job_flow(job_t *job);
static void job_call(job_t *job);
static void job_record(job_t *job);
/* The endings: each frees the job. */
static void job_ack(job_t *job);
static void job_dead(job_t *job, metrics_dead_t why, const char *reason);
static void job_delay(job_t *job, int64_t delay_ms, const char *why);
static void job_requeue(job_t *job, const char *why);
static void job_park(job_t *job, const flow_answer_t *answer);
/* The ways off the happy path. */
static retry_decision_t decide(const job_t *job, retry_event_t event, long retry_after_ms);
static void job_fail_input(job_t *job, const char *error, const char *code, const char *dead_reason,
                           metrics_failure_t failure, metrics_dead_t dead_class);
static void job_fail_delivery(job_t *job, const char *why);
static void job_wait_and_redo(job_t *job, retry_decision_t d, const char *why);
/* Helpers. */
static bool set_text(char **slot, const char *text);
static outcome_job_t outcome_job(const job_t *job);

/* ------------------------------------------------------------------ 1 decode */

/* A new job holding a copy of the payload, linked into the worker's jobs; NULL when out
 * of memory. */
static job_t *job_new(worker_t *w, const char *payload, size_t len)
{
    job_t *job = calloc(1, sizeof *job);
    if (job != NULL)
        job->payload = malloc(len + 1);
    if (job == NULL || job->payload == NULL) {
        free(job);
        return NULL;
    }
    memcpy(job->payload, payload, len);
    job->payload[len] = '\0';
    job->len = len;
    job->w = w;
    job->taken_ms = clock_mono_ms();
    job->next = w->jobs;
    if (w->jobs != NULL)
        w->jobs->prev = job;
    w->jobs = job;
    w->inflight++;
    w->metrics.taken_total++;
    inflight_add_payload(w->jobctx->index, &job->index_entry, job->payload, len);
    return job;
}

void job_start(worker_t *w, const char *payload, size_t len, bool rescan)
{
    if (rescan && inflight_held(w->jobctx->index, payload, len))
        return;
    job_t *job = job_new(w, payload, len);
    if (job == NULL) {
        /* Left in the processing list: found again by the rescan or lease recovery. */
        log_error("job.nomem", "out of memory taking a job");
        return;
    }
    retryq_error_t err;
    if (retryq_job_decode(payload, len, RETRYQ_MAX_ATTEMPT, &job->req, &err) != RETRYQ_OK) {
        memset(&job->req, 0, sizeof job->req);
        char reason[600];
        snprintf(reason, sizeof reason, "invalid job: %s", err.message);
        job_dead(job, METRICS_DEAD_INVALID_PAYLOAD, reason);
        return;
    }
    log_event(LOG_LEVEL_DEBUG, job->req.execution_id, job->req.retry_attempt, "job.taken",
              "[RETRY] job taken%s (delivery %d)", rescan ? " again (rescan of its processing list)" : "",
              job->req.delivery);
    if (inflight_twin(w->jobctx->index, &job->req)) {
        w->metrics.stale_total++;
        log_event(LOG_LEVEL_INFO, job->req.execution_id, job->req.retry_attempt, "job.duplicate",
                  "[RETRY] duplicate of a job in flight acknowledged");
        job_ack(job);
        return;
    }
    inflight_add_key(w->jobctx->index, &job->index_entry, &job->req);
    if (decide(job, RETRY_EV_TAKEN, -1).action == RETRY_POISON) {
        char reason[200];
        snprintf(reason, sizeof reason, "poison: delivered %d times without an outcome",
                 job->req.delivery);
        job_fail_input(job, reason, "poison", reason, METRICS_FAIL_POISON, METRICS_DEAD_POISON);
        return;
    }
    job_load(job);
}

/* ------------------------------------------------------------------ 2 load */

static void job_load(job_t *job)
{
    job->stage = STAGE_LOAD;
    batch_load(job->w->jobctx->batches, job, job->req.execution_id);
}

/* The database could not run the load: wait and load again. */
void job_load_unreachable(job_t *job, const char *message)
{
    job_wait_and_redo(job, decide(job, RETRY_EV_STORE_DOWN, -1), message);
}

void job_load_refused(job_t *job, const char *sqlstate, const char *message)
{
    char why[600];
    snprintf(why, sizeof why, "loading the execution failed (%s): %s", sqlstate, message);
    job_fail_delivery(job, why);
}

/* A statement of the job could not be queued at all: hand the job back. */
void job_unsent(job_t *job, const char *why)
{
    job_requeue(job, why);
}

/* ------------------------------------------------------------------ 3 guard */

/* The guard, from the job's row (NULL: not found); then the question. */
void job_loaded_row(job_t *job, const batch_row_t *row)
{
    worker_t *w = job->w;
    job->backoff_ms = 0;
    if (row == NULL) {
        job_dead(job, METRICS_DEAD_NOT_FOUND, "execution not found");
        return;
    }
    const char *region = row->region, *exec_status = row->status, *count = row->retry_count;
    if (region == NULL || strcmp(region, job->req.region) != 0) {
        char reason[400];
        snprintf(reason, sizeof reason, "region mismatch: job has \"%s\", execution has \"%s\"",
                 job->req.region, region != NULL ? region : "");
        job_dead(job, METRICS_DEAD_REGION_MISMATCH, reason);
        return;
    }
    if (exec_status == NULL || strcmp(exec_status, "retrying") != 0 || count == NULL ||
        strtol(count, NULL, 10) != job->req.retry_attempt) {
        w->metrics.stale_total++;
        log_event(LOG_LEVEL_INFO, job->req.execution_id, job->req.retry_attempt, "job.stale",
                  "[RETRY] stale job acknowledged: execution status=%s retry_count=%s",
                  exec_status ? exec_status : "null", count ? count : "null");
        job_ack(job);
        return;
    }
    if (!set_text(&job->region, region) ||
        !set_text(&job->model, row->model ? row->model : DEFAULT_MODEL)) {
        job_requeue(job, "out of memory");
        return;
    }
    job->router_region = question_router_region(job->region);
    /* The row's max_retries is the truth (the payload's bound is only a sanity ceiling). A
     * job past it would otherwise leave the row 'retrying' with nothing to finish it. */
    long row_max = row->max_retries != NULL ? strtol(row->max_retries, NULL, 10) : 0;
    if (job->req.retry_attempt > row_max) {
        char error[200];
        snprintf(error, sizeof error, "retry attempt %d exceeds the execution's max_retries (%ld)",
                 job->req.retry_attempt, row_max);
        job_fail_input(job, error, "attempt_over_max_retries", error, METRICS_FAIL_BAD_JOB,
                       METRICS_DEAD_OVER_MAX_RETRIES);
        return;
    }
    job_resolve(job, row);
}

/* ------------------------------------------------------------------ 4 question */

/* The question, through the job spec of the job's row; then the router call. */
static void job_resolve(job_t *job, const batch_row_t *row)
{
    const question_spec_t *spec = NULL;
    batch_spec_t found = batch_row_spec(row, &spec);
    if (found == BATCH_SPEC_NONE) {
        job_fail_input(job, "bad job spec: the execution's job has no spec", "bad_job_spec",
                       "bad job spec", METRICS_FAIL_BAD_JOB, METRICS_DEAD_BAD_SPEC);
        return;
    }
    if (found == BATCH_SPEC_NOMEM) {
        job_requeue(job, "out of memory resolving the question");
        return;
    }
    char err[300];
    int rc = question_resolve_spec(job->w->bank, spec, row->question_id, job->req.question_index,
                                   &job->question, err, sizeof err);
    if (rc == QUESTION_ERR_INDEX) {
        job_fail_input(job, err, "invalid_question_index", err, METRICS_FAIL_BAD_JOB,
                       METRICS_DEAD_INVALID_INDEX);
        return;
    }
    if (rc != QUESTION_OK) {
        char error[400];
        snprintf(error, sizeof error, "bad job spec: %s", err);
        job_fail_input(job, error, "bad_job_spec", error, METRICS_FAIL_BAD_JOB, METRICS_DEAD_BAD_SPEC);
        return;
    }
    job->have_question = true;
    if (job->question.note != NULL)
        log_event(LOG_LEVEL_WARN, job->req.execution_id, job->req.retry_attempt, "job.question",
                  "[RETRY] %s", job->question.note);
    job_flow(job);
}

/* ------------------------------------------------------------------ 5 flow control */

/* While the queue is paused the job waits here, before flow control and the router;
 * true when it was held (or, with the worker stopping, handed back). */
static bool job_hold(job_t *job)
{
    worker_t *w = job->w;
    if (!pause_holds(w))
        return false;
    if (w->state != WORKER_RUNNING) {
        job_requeue(job, "the queue is paused and this worker stops");
        return true;
    }
    job->stage = STAGE_HELD;
    log_event(LOG_LEVEL_DEBUG, job->req.execution_id, job->req.retry_attempt, "job.held",
              "[RETRY] the queue is paused: the job waits in the processing list");
    return true;
}

/* Flow control's answer: call now, or park the job. */
static void job_flow_answer(job_t *job, const flow_answer_t *answer)
{
    if (answer->wait != RETRY_FLOW_GO) {
        job_park(job, answer);
        return;
    }
    if (pause_holds(job->w)) {
        /* Paused while flow control was asked: give the permit back, ask again later. */
        flow_end(job->w->flow, job->pass, -1);
        job->pass = NULL;
        job_hold(job);
        return;
    }
    job_call(job);
}

static void on_flow_answer(void *arg, const flow_answer_t *answer)
{
    job_flow_answer(arg, answer);
}

/* May this job call the router for its key now? At once for a key without limits. */
static void job_flow(job_t *job)
{
    flow_answer_t answer;
    if (job_hold(job))
        return;
    job->stage = STAGE_FLOW;
    int rc = flow_ask(job->w->flow, job->model, job->router_region, on_flow_answer, job, &job->pass,
                      &answer);
    if (rc < 0) {
        job_requeue(job, "out of memory asking flow control");
        return;
    }
    if (rc == 1)
        job_flow_answer(job, &answer);
}

/* ------------------------------------------------------------------ 6 router */

/* "hybrid error: <message>" becomes the job's error. */
static bool set_hybrid_error(job_t *job, const char *message)
{
    char *text = outcome_hybrid_error(message);
    if (text == NULL)
        return false;
    free(job->error);
    job->error = text;
    return true;
}

/* The router's answer becomes the outcome to record (a transient failure here is one
 * past the last step of the backoff schedule). False when out of memory. */
static bool job_keep_answer(job_t *job, const router_outcome_t *out, const char *path)
{
    bool ok;
    if (out->verdict == ROUTER_SUCCESS) {
        job->exec_status = "completed";
        job->history_status = "success";
        ok = set_text(&job->provider, out->provider) && set_text(&job->receipt_json, out->receipt_json);
        outcome_job_t o = outcome_job(job);
        job->output_json = outcome_success(&o, out);
        return ok;
    }
    if (out->verdict == ROUTER_TRANSIENT) {
        const char *why = out->error != NULL ? out->error : "transient router failure";
        char error[2600];
        snprintf(error, sizeof error, "gave up after %d tries: %s", job->req.delivery + 1, why);
        job->exec_status = "failed";
        job->history_status = "failed";
        job->failure = METRICS_FAIL_TRANSIENT_EXHAUSTED;
        ok = set_hybrid_error(job, error);
    } else {
        bool timeout = out->verdict == ROUTER_TIMEOUT;
        job->failure = timeout ? METRICS_FAIL_TIMEOUT : METRICS_FAIL_FAILED;
        job->exec_status = timeout ? "timeout" : "failed";
        job->history_status = timeout ? "timeout" : "failed";
        ok = set_hybrid_error(job, out->error != NULL ? out->error : "router call failed");
    }
    if (ok) {
        outcome_job_t o = outcome_job(job);
        job->output_json = outcome_router_failure(&o, out, path);
    }
    return ok;
}

static void on_router_done(void *arg, const router_result_t *result)
{
    job_t *job = arg;
    worker_t *w = job->w;
    job->call = NULL;
    job->call_sec = result->total_sec;
    metrics_router_request(&w->metrics, result);
    router_outcome_t out;
    router_classify(result, &out);
    log_event(LOG_LEVEL_DEBUG, job->req.execution_id, job->req.retry_attempt, "router.done",
              "router answered %s (HTTP %ld) in %.3f s", router_verdict_name(out.verdict),
              out.http_status, result->total_sec);
    flow_answer_t flow = flow_done(w->flow, job->pass, &out);
    if (flow.wait != RETRY_FLOW_GO) {
        /* The router's own words: the key is paused; this call costs the job nothing. */
        router_outcome_free(&out);
        job_park(job, &flow);
        return;
    }
    flow_end(w->flow, job->pass, -1);
    job->pass = NULL;
    if (out.verdict == ROUTER_TRANSIENT) {
        retry_decision_t d = decide(job, RETRY_EV_ROUTER_TRANSIENT, out.retry_after_ms);
        if (d.action == RETRY_DELAY) {
            job_delay(job, d.delay_ms, out.error != NULL ? out.error : "transient router failure");
            router_outcome_free(&out);
            return;
        }
    }
    bool ok = job_keep_answer(job, &out, result->path);
    router_outcome_free(&out);
    if (!ok) {
        job_requeue(job, "out of memory keeping the router's answer");
        return;
    }
    job_record(job);
}

static void job_call(job_t *job)
{
    worker_t *w = job->w;
    size_t len = 0;
    char *body = question_build_request(&job->question, job->model, job->router_region,
                                        w->cfg.request_mode, &len);
    if (body == NULL) {
        job_requeue(job, "out of memory building the router request");
        return;
    }
    job->stage = STAGE_CALL;
    log_event(LOG_LEVEL_INFO, job->req.execution_id, job->req.retry_attempt, "job.started",
              "[RETRY] Starting retry for execution %" PRId64 " (region %s, question %" PRId64
              ", attempt %d)",
              job->req.execution_id, job->req.region, job->req.question_index, job->req.retry_attempt);
    job->call_started_ms = clock_mono_ms();
    job->call = router_call(w->router, body, len, job->req.execution_id, job->req.retry_attempt,
                            on_router_done, job);
    free(body);
    if (job->call == NULL) {
        job_requeue(job, "the router call could not be started");
        return;
    }
    w->metrics.attempts_total++;
}

/* ------------------------------------------------------------------ 7 record */

/* What the record statement writes: the error only for a failure, the receipt only for a
 * success. */
static batch_outcome_t outcome_row(const job_t *job)
{
    bool is_error = strcmp(job->exec_status, "completed") != 0;
    batch_outcome_t o = {.execution_id = job->req.execution_id,
                         .attempt = job->req.retry_attempt,
                         .status = job->exec_status,
                         .output = job->output_json,
                         .provider = job->provider,
                         .error = is_error ? job->error : NULL,
                         .history = job->history_json,
                         .receipt = is_error ? NULL : job->receipt_json};
    return o;
}

static void job_record(job_t *job)
{
    job->stage = STAGE_RECORD;
    if (job->received_ms == 0)
        job->received_ms = clock_mono_ms();
    int64_t duration = job->call_started_ms > 0 ? clock_mono_ms() - job->call_started_ms : 0;
    free(job->history_json);
    outcome_job_t o = outcome_job(job);
    job->history_json = outcome_history_entry(&o, rq_now_ms(), duration);
    if (job->history_json == NULL || job->output_json == NULL) {
        job_requeue(job, "out of memory building the outcome");
        return;
    }
    batch_outcome_t row = outcome_row(job);
    batch_record(job->w->jobctx->batches, job, &row);
}

/* ------------------------------------------------------------------ 8 ack */

/* The outcome is in the database (or the guard said it never will be): ack, or
 * dead-letter a job given up on. */
static void job_done(job_t *job)
{
    if (job->dead_reason != NULL)
        job_dead(job, job->dead_class, job->dead_reason);
    else
        job_ack(job);
}

/* The record statement ran; `updated` says whether the guard let it change the row. */
void job_recorded(job_t *job, bool updated)
{
    worker_t *w = job->w;
    if (!updated) {
        w->metrics.stale_total++;
        log_event(LOG_LEVEL_INFO, job->req.execution_id, job->req.retry_attempt, "job.stale",
                  "[RETRY] outcome not recorded: the execution is no longer retrying at this attempt");
        job_done(job);
        return;
    }
    metrics_outcome(&w->metrics, job->req.execution_id, job->req.retry_attempt,
                    strcmp(job->exec_status, "completed") == 0, job->failure, job->dead_reason != NULL,
                    job->error != NULL ? job->error : job->exec_status,
                    job->call_started_ms > 0 ? job->call_sec : -1.0);
    log_event(strcmp(job->exec_status, "completed") == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
              job->req.execution_id, job->req.retry_attempt, "job.recorded",
              "[RETRY] Completed retry for execution %" PRId64 ": status %s, inference %" PRId64
              " ms (%" PRId64 " ms from pop)%s%s",
              job->req.execution_id, job->exec_status,
              job->call_started_ms > 0 ? (int64_t)(job->call_sec * 1000.0 + 0.5) : (int64_t)0,
              clock_mono_ms() - job->taken_ms, job->error ? ": " : "", job->error ? job->error : "");
    job_done(job);
}

/* ------------------------------------------------------------------ when the record fails */

/* The database could not be reached while the outcome was being written. */
void job_record_unreachable(job_t *job, const char *message)
{
    retry_decision_t d = decide(job, RETRY_EV_WRITE_DOWN, -1);
    if (d.action == RETRY_REQUEUE)
        job_requeue(job, "the outcome could not be written before the write deadline");
    else
        job_wait_and_redo(job, d, message);
}

/* SQLSTATEs after which the same statement may well succeed: serialization failure,
 * deadlock, lock not available, statement cancelled (a deadline). */
static bool sql_state_retryable(const char *sqlstate)
{
    static const char *const states[] = {"40001", "40P01", "55P03", "57014"};
    for (size_t i = 0; sqlstate != NULL && i < sizeof states / sizeof states[0]; i++)
        if (strcmp(sqlstate, states[i]) == 0)
            return true;
    return false;
}

/* The router's text could not be stored (NUL, bad UTF-8, bad JSON): record a clear
 * failure instead, so the job cannot loop on it. */
static void job_record_unstorable(job_t *job, const char *message)
{
    job->sanitised_retry = true;
    char error[600];
    snprintf(error, sizeof error, "router answer could not be stored: %s", message);
    job->exec_status = "failed";
    job->history_status = "failed";
    job->failure = METRICS_FAIL_FAILED;
    set_text(&job->error, error);
    set_text(&job->provider, NULL);
    set_text(&job->receipt_json, NULL);
    free(job->output_json);
    outcome_job_t o = outcome_job(job);
    job->output_json = outcome_input_failure(&o, "unstorable_answer", "storage");
    job_record(job);
}

void job_record_refused(job_t *job, const char *sqlstate, const char *message)
{
    if (sql_state_retryable(sqlstate)) {
        /* The write itself may succeed if sent again: keep the router's answer and redo
         * the write, as for a lost connection (never call the router again for it). */
        job_record_unreachable(job, message);
        return;
    }
    if (job->dead_reason != NULL) {
        /* Already giving up on this job: do not loop on a row the database refuses. */
        job_dead(job, job->dead_class, job->dead_reason);
        return;
    }
    if ((strcmp(sqlstate, "22P05") == 0 || strcmp(sqlstate, "22021") == 0 ||
         strcmp(sqlstate, "22P02") == 0) && !job->sanitised_retry) {
        job_record_unstorable(job, message);
        return;
    }
    if (strcmp(sqlstate, "23514") == 0)
        log_error("db.schema", "the database refused status '%s' (check constraint): run "
                               "`retryq migrate`", job->exec_status);
    char why[600];
    snprintf(why, sizeof why, "database refused the outcome (%s): %s", sqlstate, message);
    job_fail_delivery(job, why);
}

/* ------------------------------------------------------------------ the policy */

/* The worker's retry policy (policy.h), from its settings. */
static retry_policy_t policy_of(const worker_t *w)
{
    retry_policy_t p = {.backoff_ms = w->cfg.backoff_ms,
                        .backoff_count = w->cfg.backoff_count,
                        .max_deliveries = w->cfg.max_deliveries,
                        .wait_min_ms = STORE_BACKOFF_MIN_MS,
                        .wait_max_ms = STORE_BACKOFF_MAX_MS,
                        .write_deadline_ms = w->cfg.db_write_deadline_ms};
    return p;
}

static retry_decision_t decide(const job_t *job, retry_event_t event, long retry_after_ms)
{
    retry_policy_t policy = policy_of(job->w);
    retry_facts_t facts = {.delivery = job->req.delivery,
                           .retry_after_ms = retry_after_ms,
                           .waited_ms = job->backoff_ms,
                           .writing_ms = job->received_ms > 0 ? clock_mono_ms() - job->received_ms : 0,
                           .random = worker_random(job->w)};
    return retry_decide(&policy, event, &facts);
}

/* Records a failure that is not the router's answer (bad spec, bad index, poison), then
 * dead-letters the job. */
static void job_fail_input(job_t *job, const char *error, const char *code, const char *dead_reason,
                           metrics_failure_t failure, metrics_dead_t dead_class)
{
    job->failure = failure;
    job->dead_class = dead_class;
    job->exec_status = "failed";
    job->history_status = "error";
    if (!set_text(&job->error, error) || !set_text(&job->dead_reason, dead_reason)) {
        job_requeue(job, "out of memory");
        return;
    }
    free(job->output_json);
    outcome_job_t o = outcome_job(job);
    job->output_json = outcome_input_failure(&o, code, "input");
    job_record(job);
}

/* A processing failure that may go away (a database error on this row): try again later,
 * counting a delivery; past the bound the job is poison. */
static void job_fail_delivery(job_t *job, const char *why)
{
    retry_decision_t d = decide(job, RETRY_EV_JOB_FAILED, -1);
    if (d.action == RETRY_POISON) {
        char reason[600];
        snprintf(reason, sizeof reason, "poison: failed %d deliveries: %s", job->req.delivery + 1, why);
        job_fail_input(job, reason, "poison", reason, METRICS_FAIL_POISON, METRICS_DEAD_POISON);
        return;
    }
    job_delay(job, d.delay_ms, why);
}

static void job_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    job_t *job = arg;
    if (job->stage == STAGE_LOAD)
        job_load(job);
    else
        job_record(job);
}

/* RETRY_WAIT: keep the job and redo its current step after the decided delay. */
static void job_wait_and_redo(job_t *job, retry_decision_t d, const char *why)
{
    worker_t *w = job->w;
    if (job->timer == NULL)
        job->timer = evtimer_new(w->base, job_timer_cb, job);
    if (job->timer == NULL) {
        job_requeue(job, "out of memory");
        return;
    }
    job->backoff_ms = d.next_wait_ms;
    int64_t delay = d.delay_ms;
    w->metrics.store_retries_total++;
    log_event(LOG_LEVEL_WARN, job->req.execution_id, job->req.retry_attempt, "job.wait",
              "[RETRY] the database could not run the %s now, trying again in %" PRId64 " ms: %s",
              job->stage == STAGE_LOAD ? "load" : "record", delay, why);
    struct timeval tv = clock_tv_ms(delay);
    if (evtimer_add(job->timer, &tv) != 0)
        job_requeue(job, "could not arm the wait timer");
}

/* ------------------------------------------------------------------ endings */

static void job_unlink(job_t *job)
{
    worker_t *w = job->w;
    inflight_remove(w->jobctx->index, &job->index_entry);
    if (job->prev != NULL)
        job->prev->next = job->next;
    else
        w->jobs = job->next;
    if (job->next != NULL)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
    w->inflight--;
}

static void job_end(job_t *job)
{
    worker_t *w = job->w;
    job_unlink(job);
    job_free(job);
    worker_job_finished(w);
}

static void job_ack(job_t *job)
{
    queue_ack(job->w->queue, job->payload, job->len);
    job_end(job);
}

/* `reason` may be owned by the job: it is used before the job is freed. */
static void job_dead(job_t *job, metrics_dead_t why, const char *reason)
{
    worker_t *w = job->w;
    metrics_dead_letter(&w->metrics, job->req.execution_id, job->req.retry_attempt, why, reason);
    log_event(LOG_LEVEL_WARN, job->req.execution_id, job->req.retry_attempt, "job.dead",
              "[RETRY] job moved to the dead list: %s", reason);
    queue_dead(w->queue, job->payload, job->len, reason);
    job_end(job);
}

/* Hands the job back to the delayed set with its delivery count raised. */
static void job_delay(job_t *job, int64_t delay_ms, const char *why)
{
    worker_t *w = job->w;
    retryq_job_t next = job->req;
    char buf[1024]; /* the longest valid job encodes to about 600 bytes */
    next.delivery = job->req.delivery + 1;
    if (retryq_job_encode(&next, buf, sizeof buf) < 0) {
        job_dead(job, METRICS_DEAD_OTHER, "could not re-encode the job for a delayed retry");
        return;
    }
    w->metrics.delayed_total++;
    metrics_note_error(&w->metrics, job->req.execution_id, job->req.retry_attempt, "delayed", why);
    log_event(LOG_LEVEL_INFO, job->req.execution_id, job->req.retry_attempt, "job.delayed",
              "[RETRY] transient failure, trying again in %" PRId64 " ms (delivery %d): %s",
              delay_ms, next.delivery, why);
    queue_delay(w->queue, job->payload, job->len, buf, delay_ms);
    job_end(job);
}

/* Parks the job in the delayed set as it is (delivery unchanged, nothing written to the
 * database), for as long as the policy says for flow control's answer. */
static void job_park(job_t *job, const flow_answer_t *answer)
{
    worker_t *w = job->w;
    retry_policy_t policy = policy_of(w);
    retry_facts_t facts = {.delivery = job->req.delivery,
                           .retry_after_ms = -1,
                           .random = worker_random(w),
                           .flow_wait = answer->wait,
                           .flow_wait_ms = answer->wait_ms};
    retry_decision_t d = retry_decide(&policy, RETRY_EV_FLOW_WAIT, &facts);
    w->metrics.parked_total++;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        const char *pairs[] = {"key", flow_pass_key(job->pass), "wait", retry_flow_wait_name(answer->wait),
                               NULL};
        log_fields(LOG_LEVEL_DEBUG, job->req.execution_id, job->req.retry_attempt, "job.parked",
                   pairs, "[RETRY] flow control parks the job for %" PRId64 " ms (delivery %d kept)",
                   d.delay_ms, job->req.delivery);
    }
    flow_end(w->flow, job->pass, d.delay_ms);
    job->pass = NULL;
    queue_delay(w->queue, job->payload, job->len, job->payload, d.delay_ms);
    if (d.delay_ms < JOB_PROMOTE_TICK_MS)
        queue_promote_soon(w->queue, d.delay_ms + 5); /* the tick would add up to a second */
    job_end(job);
}

static void job_requeue(job_t *job, const char *why)
{
    job->w->metrics.requeued_total++;
    log_event(LOG_LEVEL_WARN, job->req.execution_id, job->req.retry_attempt, "job.requeued",
              "[RETRY] handing the job back to the queue: %s", why);
    queue_requeue(job->w->queue, job->payload, job->len);
    job_end(job);
}

/* ------------------------------------------------------------------ the queue's pause */

/* The first held job, or NULL. Each call starts from the head: releasing or handing back
 * a job ends or changes only that job, but the list may change under a walk. */
static job_t *first_held(const worker_t *w)
{
    for (job_t *job = w->jobs; job != NULL; job = job->next)
        if (job->stage == STAGE_HELD)
            return job;
    return NULL;
}

void job_release_held(worker_t *w)
{
    job_t *job;
    size_t released = 0;
    while (!pause_holds(w) && (job = first_held(w)) != NULL) {
        job->stage = STAGE_FLOW; /* not held any more, whatever job_flow does next */
        released++;
        job_flow(job);
    }
    if (released > 0)
        log_info("queue.released", "[RETRY] %zu held job(s) go on to the router", released);
}

void job_hand_back_held(worker_t *w, const char *why)
{
    job_t *job;
    while ((job = first_held(w)) != NULL)
        job_requeue(job, why);
}

size_t job_held_count(const worker_t *w)
{
    size_t n = 0;
    for (const job_t *job = w->jobs; job != NULL; job = job->next)
        n += job->stage == STAGE_HELD;
    return n;
}

/* ------------------------------------------------------------------ helpers, shared state */

static bool set_text(char **slot, const char *text)
{
    free(*slot);
    *slot = text != NULL ? strdup(text) : NULL;
    return text == NULL || *slot != NULL;
}

/* What the outcome documents (outcome.h) say about this job. */
static outcome_job_t outcome_job(const job_t *job)
{
    outcome_job_t o = {.worker = job->w->id,
                       .attempt = job->req.retry_attempt,
                       .delivery = job->req.delivery,
                       .region = job->req.region,
                       .router_region = job->router_region,
                       .model = job->model,
                       .history_status = job->history_status,
                       .provider = job->provider,
                       .error = job->error,
                       .question = job->have_question ? &job->question : NULL};
    return o;
}

int job_init(worker_t *w)
{
    struct job_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return -1;
    w->jobctx = ctx;
    ctx->batches = batch_new(w);
    ctx->index = inflight_new();
    if (ctx->batches == NULL || ctx->index == NULL)
        return -1; /* job_free_all frees what was made */
    return 0;
}

void job_free(job_t *job)
{
    if (job == NULL)
        return;
    if (job->timer != NULL)
        event_free(job->timer);
    if (job->pass != NULL)
        flow_end(job->w->flow, job->pass, -1);
    if (job->have_question)
        question_free(&job->question);
    free(job->payload);
    free(job->region);
    free(job->model);
    free(job->output_json);
    free(job->history_json);
    free(job->receipt_json);
    free(job->provider);
    free(job->error);
    free(job->dead_reason);
    free(job);
}

void job_free_all(worker_t *w)
{
    struct job_ctx *ctx = w->jobctx;
    if (ctx == NULL)
        return;
    while (w->jobs != NULL) {
        job_t *job = w->jobs;
        job_unlink(job);
        job_free(job);
    }
    batch_free(ctx->batches);
    inflight_free(ctx->index);
    free(ctx);
    w->jobctx = NULL;
}
