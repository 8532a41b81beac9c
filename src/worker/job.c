/*
 * One job, step by step (DESIGN §1 and §5):
 *
 *   decode ─bad─► dead list                    (execution untouched)
 *   load: one query by execution id            (status, retry_count, question, model, spec)
 *   guard: status = 'retrying' AND retry_count = retry_attempt ─no─► ack as stale
 *   resolve the question ─bad─► record failed, dead list
 *   router call (libcurl multi, 60 s)
 *      transient (network, 5xx, 429, 408) ─► delayed set with delivery + 1, or failed
 *                                             after the last step of the backoff schedule
 *   record: one guarded UPDATE (status, output, history entry)
 *   ack (LREM) only after the record committed
 *
 * A database outage never fails a job: loads wait and retry; an outcome already received
 * is kept in memory and its write retried until a deadline, then the job is handed back
 * to the queue. Everything a job owns hangs off its struct and is freed by job_free.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "clock.h"
#include "internal.h"
#include "job.h"
#include "log.h"

#define DEFAULT_MODEL "llama3.2-1b"
#define STORE_BACKOFF_MIN_MS 200
#define STORE_BACKOFF_MAX_MS 10000
#define WRITE_DEADLINE_MS (5 * 60 * 1000)

const char JOB_SQL_LOAD[] =
    "SELECT e.region, e.status, e.retry_count, e.question_id, e.model_id, "
    "j.jobspec_data::text, e.job_id "
    "FROM executions e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id = $1::bigint";

/* The only statement that writes an outcome. The guard makes a redelivered, superseded
 * or cancelled job change nothing; original_error keeps the first error. */
const char JOB_SQL_RECORD[] =
    "UPDATE executions SET status = $3, output_data = $4::jsonb, "
    "provider_id = COALESCE($5, provider_id), completed_at = now(), "
    "original_error = COALESCE(original_error, $6), "
    "retry_history = COALESCE(retry_history, '[]'::jsonb) || jsonb_build_array($7::jsonb) "
    "WHERE id = $1::bigint AND status = 'retrying' AND retry_count = $2 RETURNING id";

typedef enum job_stage { STAGE_LOAD, STAGE_CALL, STAGE_RECORD } job_stage_t;

struct job {
    worker_t *w;
    job_t *prev, *next;
    char *payload;
    size_t len;
    retryq_job_t job;
    job_stage_t stage;
    int64_t taken_ms;
    int64_t call_started_ms;
    double call_sec;           /* the router call's wall time (retry_duration_seconds) */

    char *region;          /* as stored on the row */
    char *model;
    question_t question;
    bool have_question;
    router_call_t *call;

    /* The outcome waiting to be recorded. */
    const char *exec_status;   /* completed | failed | timeout */
    const char *history_status; /* success | failed | timeout | error */
    char *output_json;
    char *history_json;
    char *provider;
    char *error;
    char *dead_reason;         /* after the record: dead-letter instead of ack */
    bool sanitised_retry;      /* the database refused the text once already */

    struct event *timer;       /* waiting to redo the current stage after an outage */
    int backoff_ms;
    int64_t write_deadline_ms;
};

static void job_load(job_t *job);
static void job_record(job_t *job);

/* ------------------------------------------------------------------ endings */

static void job_unlink(job_t *job)
{
    worker_t *w = job->w;
    if (job->prev != NULL)
        job->prev->next = job->next;
    else
        w->jobs = job->next;
    if (job->next != NULL)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
    w->inflight--;
}

void job_free(job_t *job)
{
    if (job == NULL)
        return;
    if (job->timer != NULL)
        event_free(job->timer);
    if (job->have_question)
        question_free(&job->question);
    free(job->payload);
    free(job->region);
    free(job->model);
    free(job->output_json);
    free(job->history_json);
    free(job->provider);
    free(job->error);
    free(job->dead_reason);
    free(job);
}

void job_free_all(worker_t *w)
{
    while (w->jobs != NULL) {
        job_t *job = w->jobs;
        job_unlink(job);
        job_free(job);
    }
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
static void job_dead(job_t *job, const char *reason)
{
    worker_t *w = job->w;
    w->count.dead++;
    metrics_dead_letter(&w->metrics, job->job.execution_id, job->job.retry_attempt, reason);
    log_event(LOG_LEVEL_WARN, job->job.execution_id, job->job.retry_attempt, "job.dead",
              "[RETRY] job moved to the dead list: %s", reason);
    queue_dead(w->queue, job->payload, job->len, reason);
    job_end(job);
}

/* Hands the job back to the delayed set with its delivery count raised. */
static void job_delay(job_t *job, int64_t delay_ms, const char *why)
{
    worker_t *w = job->w;
    retryq_job_t next = job->job;
    char buf[1024]; /* the longest valid job encodes to about 600 bytes */
    next.delivery = job->job.delivery + 1;
    if (retryq_job_encode(&next, buf, sizeof buf) < 0) {
        job_dead(job, "could not re-encode the job for a delayed retry");
        return;
    }
    w->count.delayed++;
    metrics_note_error(&w->metrics, job->job.execution_id, job->job.retry_attempt, "delayed", why);
    log_event(LOG_LEVEL_INFO, job->job.execution_id, job->job.retry_attempt, "job.delayed",
              "[RETRY] transient failure, trying again in %" PRId64 " ms (delivery %d): %s",
              delay_ms, next.delivery, why);
    queue_delay(w->queue, job->payload, job->len, buf, delay_ms);
    job_end(job);
}

static void job_requeue(job_t *job, const char *why)
{
    job->w->count.requeued++;
    log_event(LOG_LEVEL_WARN, job->job.execution_id, job->job.retry_attempt, "job.requeued",
              "[RETRY] handing the job back to the queue: %s", why);
    queue_requeue(job->w->queue, job->payload, job->len);
    job_end(job);
}

/* ------------------------------------------------------------------ outcomes */

static char *print_json(cJSON *obj)
{
    char *text = obj != NULL ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return text;
}

/* The history entry appended by the record statement. */
static char *history_entry(const job_t *job, int64_t duration_ms)
{
    char ts[48];
    rq_format_rfc3339(rq_now_ms(), ts, sizeof ts);
    cJSON *e = cJSON_CreateObject();
    if (e == NULL)
        return NULL;
    cJSON_AddNumberToObject(e, "attempt", job->job.retry_attempt);
    cJSON_AddStringToObject(e, "status", job->history_status);
    cJSON_AddStringToObject(e, "timestamp", ts);
    cJSON_AddStringToObject(e, "worker", job->w->id);
    if (job->provider != NULL)
        cJSON_AddStringToObject(e, "provider", job->provider);
    else
        cJSON_AddNullToObject(e, "provider");
    cJSON_AddNumberToObject(e, "duration_ms", (double)duration_ms);
    if (job->error != NULL)
        cJSON_AddStringToObject(e, "error", job->error);
    else
        cJSON_AddNullToObject(e, "error");
    if (job->job.delivery > 0)
        cJSON_AddNumberToObject(e, "delivery", job->job.delivery);
    if (job->have_question && job->question.note != NULL)
        cJSON_AddStringToObject(e, "note", job->question.note);
    return print_json(e);
}

/* output_data of a failure, in the runner's shape plus retry_attempt. */
static char *failure_output(const job_t *job, const char *code, const char *type, long http_status,
                            bool transient)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *f = cJSON_CreateObject();
    if (o == NULL || f == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(f);
        return NULL;
    }
    cJSON_AddStringToObject(o, "error", job->error != NULL ? job->error : "unknown error");
    cJSON_AddStringToObject(o, "error_code", code);
    cJSON_AddStringToObject(f, "stage", "retry");
    cJSON_AddStringToObject(f, "component", strcmp(type, "input") == 0 ? "retryq" : "router");
    cJSON_AddStringToObject(f, "code", code);
    cJSON_AddStringToObject(f, "type", type);
    cJSON_AddStringToObject(f, "region", job->job.region);
    cJSON_AddStringToObject(f, "model", job->model != NULL ? job->model : "");
    cJSON_AddStringToObject(f, "message", job->error != NULL ? job->error : "unknown error");
    if (http_status > 0)
        cJSON_AddNumberToObject(f, "http_status", (double)http_status);
    cJSON_AddBoolToObject(f, "transient", transient);
    cJSON_AddItemToObject(o, "failure", f);
    cJSON_AddNumberToObject(o, "retry_attempt", job->job.retry_attempt);
    return print_json(o);
}

static char *success_output(const job_t *job, const router_outcome_t *out)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "response", out->response != NULL ? out->response : "");
    if (out->provider != NULL) {
        cJSON_AddStringToObject(o, "provider", out->provider);
        cJSON_AddStringToObject(o, "provider_used", out->provider);
    }
    cJSON_AddNumberToObject(o, "inference_sec", out->inference_sec);
    cJSON *meta = out->metadata_json != NULL ? cJSON_Parse(out->metadata_json) : NULL;
    if (meta == NULL)
        meta = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "metadata", meta);
    cJSON_AddNumberToObject(o, "retry_attempt", job->job.retry_attempt);
    if (job->have_question && job->question.id != NULL)
        cJSON_AddStringToObject(o, "question_id", job->question.id);
    return print_json(o);
}

static bool set_text(char **slot, const char *text)
{
    free(*slot);
    *slot = text != NULL ? strdup(text) : NULL;
    return text == NULL || *slot != NULL;
}

/* Records a failure that is not the router's answer (bad spec, bad index, poison), then
 * dead-letters the job. */
static void job_fail_input(job_t *job, const char *error, const char *code, const char *dead_reason)
{
    job->exec_status = "failed";
    job->history_status = "error";
    if (!set_text(&job->error, error) || !set_text(&job->dead_reason, dead_reason)) {
        job_requeue(job, "out of memory");
        return;
    }
    free(job->output_json);
    job->output_json = failure_output(job, code, "input", 0, false);
    job_record(job);
}

/* A processing failure that may go away (a database error on this row): try again later,
 * counting a delivery; past the bound the job is poison. */
static void job_fail_delivery(job_t *job, const char *why)
{
    worker_t *w = job->w;
    int next = job->job.delivery + 1;
    if (next >= w->cfg.max_deliveries) {
        char reason[600];
        snprintf(reason, sizeof reason, "poison: failed %d deliveries: %s", next, why);
        job_fail_input(job, reason, "poison", reason);
        return;
    }
    int step = job->job.delivery < w->cfg.backoff_count ? job->job.delivery : w->cfg.backoff_count - 1;
    job_delay(job, w->cfg.backoff_ms[step], why);
}

/* ------------------------------------------------------------------ waiting out an outage */

static void job_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    job_t *job = arg;
    if (job->stage == STAGE_LOAD)
        job_load(job);
    else
        job_record(job);
}

static void job_wait_and_redo(job_t *job, const char *why)
{
    worker_t *w = job->w;
    if (job->timer == NULL)
        job->timer = evtimer_new(w->base, job_timer_cb, job);
    if (job->timer == NULL) {
        job_requeue(job, "out of memory");
        return;
    }
    job->backoff_ms = job->backoff_ms == 0 ? STORE_BACKOFF_MIN_MS
                                           : (job->backoff_ms * 2 > STORE_BACKOFF_MAX_MS
                                                  ? STORE_BACKOFF_MAX_MS
                                                  : job->backoff_ms * 2);
    int64_t delay = job->backoff_ms / 2 + (int64_t)(worker_random(w) % (uint64_t)(job->backoff_ms / 2 + 1));
    w->count.store_retries++;
    log_event(LOG_LEVEL_WARN, job->job.execution_id, job->job.retry_attempt, "job.wait",
              "[RETRY] database unavailable during %s, trying again in %" PRId64 " ms: %s",
              job->stage == STAGE_LOAD ? "load" : "record", delay, why);
    struct timeval tv = clock_tv_ms(delay);
    evtimer_add(job->timer, &tv);
}

/* ------------------------------------------------------------------ record */

static void on_recorded(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                        const char *message)
{
    job_t *job = arg;
    worker_t *w = job->w;
    if (status == STORE_ERR_CONNECTION) {
        if (clock_mono_ms() > job->write_deadline_ms)
            job_requeue(job, "the outcome could not be written before the write deadline");
        else
            job_wait_and_redo(job, message);
        return;
    }
    if (status == STORE_ERR_QUERY && job->dead_reason != NULL) {
        /* Already giving up on this job: do not loop on a row the database refuses. */
        job_dead(job, job->dead_reason);
        return;
    }
    if (status == STORE_ERR_QUERY) {
        if ((strcmp(sqlstate, "22P05") == 0 || strcmp(sqlstate, "22021") == 0 ||
             strcmp(sqlstate, "22P02") == 0) && !job->sanitised_retry) {
            /* The router's text could not be stored: record a clear failure instead so the
             * job cannot loop on it. */
            job->sanitised_retry = true;
            char error[600];
            snprintf(error, sizeof error, "router answer could not be stored: %s", message);
            job->exec_status = "failed";
            job->history_status = "failed";
            set_text(&job->error, error);
            set_text(&job->provider, NULL);
            free(job->output_json);
            job->output_json = failure_output(job, "unstorable_answer", "router", 0, false);
            job_record(job);
            return;
        }
        if (strcmp(sqlstate, "23514") == 0)
            log_error("db.schema", "the database refused status '%s' (check constraint): run "
                                   "`retryq migrate`", job->exec_status);
        char why[600];
        snprintf(why, sizeof why, "database refused the outcome (%s): %s", sqlstate, message);
        job_fail_delivery(job, why);
        return;
    }
    if (PQntuples(res) == 0) {
        w->count.stale++;
        log_event(LOG_LEVEL_INFO, job->job.execution_id, job->job.retry_attempt, "job.stale",
                  "[RETRY] outcome not recorded: the execution is no longer retrying at this attempt");
        if (job->dead_reason != NULL) {
            job_dead(job, job->dead_reason);
        } else {
            job_ack(job);
        }
        return;
    }
    if (strcmp(job->exec_status, "completed") == 0)
        w->count.succeeded++;
    else if (strcmp(job->exec_status, "timeout") == 0)
        w->count.timeouts++;
    else
        w->count.failed++;
    metrics_outcome(&w->metrics, job->job.execution_id, job->job.retry_attempt, job->exec_status,
                    job->dead_reason, job->error, job->call_started_ms > 0 ? job->call_sec : -1.0);
    log_event(strcmp(job->exec_status, "completed") == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
              job->job.execution_id, job->job.retry_attempt, "job.recorded",
              "[RETRY] execution %s after retry%s%s", job->exec_status, job->error ? ": " : "",
              job->error ? job->error : "");
    if (job->dead_reason != NULL) {
        job_dead(job, job->dead_reason);
    } else {
        job_ack(job);
    }
}

static void job_record(job_t *job)
{
    worker_t *w = job->w;
    job->stage = STAGE_RECORD;
    if (job->write_deadline_ms == 0)
        job->write_deadline_ms = clock_mono_ms() + WRITE_DEADLINE_MS;
    int64_t duration = job->call_started_ms > 0 ? clock_mono_ms() - job->call_started_ms : 0;
    free(job->history_json);
    job->history_json = history_entry(job, duration);
    if (job->history_json == NULL || job->output_json == NULL) {
        job_requeue(job, "out of memory building the outcome");
        return;
    }
    char id[24], attempt[16];
    snprintf(id, sizeof id, "%" PRId64, job->job.execution_id);
    snprintf(attempt, sizeof attempt, "%d", job->job.retry_attempt);
    bool is_error = strcmp(job->exec_status, "completed") != 0;
    const char *params[] = {id, attempt, job->exec_status, job->output_json,
                            job->provider, is_error ? job->error : NULL, job->history_json};
    if (store_exec(w->store, w->sql.record, 7, params, on_recorded, job) < 0)
        job_requeue(job, "out of memory queueing the outcome");
}

/* ------------------------------------------------------------------ router */

static void on_router_done(void *arg, const router_result_t *result)
{
    job_t *job = arg;
    worker_t *w = job->w;
    job->call = NULL;
    job->call_sec = result->total_sec;
    metrics_router_request(&w->metrics, result);
    router_outcome_t out;
    router_classify(result, &out);
    log_event(LOG_LEVEL_DEBUG, job->job.execution_id, job->job.retry_attempt, "router.done",
              "router answered %s (HTTP %ld) in %.3f s", router_verdict_name(out.verdict),
              out.http_status, result->total_sec);

    if (out.verdict == ROUTER_TRANSIENT) {
        const char *why = out.error != NULL ? out.error : "transient router failure";
        if (job->job.delivery < w->cfg.backoff_count) {
            int64_t delay = w->cfg.backoff_ms[job->job.delivery];
            delay += (int64_t)(worker_random(w) % (uint64_t)(delay / 5 + 1)); /* up to +20 % */
            if (out.retry_after_ms > delay)
                delay = out.retry_after_ms;
            job_delay(job, delay, why);
        } else {
            char error[2600];
            snprintf(error, sizeof error, "gave up after %d tries: %s", job->job.delivery + 1, why);
            job->exec_status = "failed";
            job->history_status = "failed";
            set_text(&job->error, error);
            job->output_json = failure_output(job, out.error_code ? out.error_code : "transient",
                                              "transient", out.http_status, true);
            job_record(job);
        }
        router_outcome_free(&out);
        return;
    }
    if (out.verdict == ROUTER_SUCCESS) {
        job->exec_status = "completed";
        job->history_status = "success";
        set_text(&job->provider, out.provider);
        job->output_json = success_output(job, &out);
    } else {
        bool timeout = out.verdict == ROUTER_TIMEOUT;
        job->exec_status = timeout ? "timeout" : "failed";
        job->history_status = timeout ? "timeout" : "failed";
        set_text(&job->error, out.error != NULL ? out.error : "router call failed");
        job->output_json = failure_output(job, out.error_code ? out.error_code : "router_error",
                                          timeout ? "timeout" : "router", out.http_status, false);
    }
    router_outcome_free(&out);
    job_record(job);
}

static void job_call(job_t *job)
{
    worker_t *w = job->w;
    size_t len = 0;
    char *body = question_build_request(&job->question, job->model, job->region,
                                        w->cfg.request_mode, &len);
    if (body == NULL) {
        job_requeue(job, "out of memory building the router request");
        return;
    }
    job->stage = STAGE_CALL;
    job->call_started_ms = clock_mono_ms();
    job->call = router_call(w->router, body, len, job->job.execution_id, job->job.retry_attempt,
                            on_router_done, job);
    free(body);
    if (job->call == NULL) {
        job_requeue(job, "the router call could not be started");
        return;
    }
    w->count.attempts++;
}

/* ------------------------------------------------------------------ load + guard */

static const char *field(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? NULL : PQgetvalue(res, 0, col);
}

static void on_loaded(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                      const char *message)
{
    job_t *job = arg;
    worker_t *w = job->w;
    if (status == STORE_ERR_CONNECTION) {
        job_wait_and_redo(job, message);
        return;
    }
    if (status == STORE_ERR_QUERY) {
        char why[600];
        snprintf(why, sizeof why, "loading the execution failed (%s): %s", sqlstate, message);
        job_fail_delivery(job, why);
        return;
    }
    job->backoff_ms = 0;
    if (PQntuples(res) == 0) {
        job_dead(job, "execution not found");
        return;
    }
    const char *region = field(res, 0), *exec_status = field(res, 1), *count = field(res, 2);
    const char *question_id = field(res, 3), *model = field(res, 4), *spec = field(res, 5);
    if (region == NULL || strcmp(region, job->job.region) != 0) {
        char reason[400];
        snprintf(reason, sizeof reason, "region mismatch: job has \"%s\", execution has \"%s\"",
                 job->job.region, region != NULL ? region : "");
        job_dead(job, reason);
        return;
    }
    if (exec_status == NULL || strcmp(exec_status, "retrying") != 0 || count == NULL ||
        strtol(count, NULL, 10) != job->job.retry_attempt) {
        w->count.stale++;
        log_event(LOG_LEVEL_INFO, job->job.execution_id, job->job.retry_attempt, "job.stale",
                  "[RETRY] stale job acknowledged: execution status=%s retry_count=%s",
                  exec_status ? exec_status : "null", count ? count : "null");
        job_ack(job);
        return;
    }
    if (!set_text(&job->region, region) || !set_text(&job->model, model ? model : DEFAULT_MODEL)) {
        job_requeue(job, "out of memory");
        return;
    }
    if (spec == NULL) {
        job_fail_input(job, "bad job spec: the execution's job has no spec", "bad_job_spec",
                       "bad job spec");
        return;
    }
    char err[300];
    int rc = question_resolve(w->bank, spec, strlen(spec), question_id, job->job.question_index,
                              &job->question, err, sizeof err);
    if (rc == QUESTION_ERR_INDEX) {
        job_fail_input(job, err, "invalid_question_index", err);
        return;
    }
    if (rc != QUESTION_OK) {
        char error[400];
        snprintf(error, sizeof error, "bad job spec: %s", err);
        job_fail_input(job, error, "bad_job_spec", error);
        return;
    }
    job->have_question = true;
    if (job->question.note != NULL)
        log_event(LOG_LEVEL_WARN, job->job.execution_id, job->job.retry_attempt, "job.question",
                  "[RETRY] %s", job->question.note);
    job_call(job);
}

static void job_load(job_t *job)
{
    worker_t *w = job->w;
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, job->job.execution_id);
    const char *params[] = {id};
    job->stage = STAGE_LOAD;
    if (store_exec(w->store, w->sql.load, 1, params, on_loaded, job) < 0)
        job_requeue(job, "out of memory queueing the load");
}

/* ------------------------------------------------------------------ start */

static bool held(const worker_t *w, const char *payload, size_t len)
{
    for (const job_t *j = w->jobs; j != NULL; j = j->next)
        if (j->len == len && memcmp(j->payload, payload, len) == 0)
            return true;
    return false;
}

static const job_t *twin(const worker_t *w, const job_t *job)
{
    for (const job_t *j = w->jobs; j != NULL; j = j->next)
        if (j != job && j->job.execution_id == job->job.execution_id &&
            j->job.retry_attempt == job->job.retry_attempt && j->job.execution_id != 0)
            return j;
    return NULL;
}

void job_start(worker_t *w, const char *payload, size_t len, bool rescan)
{
    if (rescan && held(w, payload, len))
        return;
    job_t *job = calloc(1, sizeof *job);
    if (job != NULL)
        job->payload = malloc(len + 1);
    if (job == NULL || job->payload == NULL) {
        /* Left in the processing list: found again by the rescan or lease recovery. */
        log_error("job.nomem", "out of memory taking a job");
        free(job);
        return;
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
    w->count.taken++;

    retryq_error_t err;
    if (retryq_job_decode(payload, len, w->cfg.max_retries, &job->job, &err) != RETRYQ_OK) {
        memset(&job->job, 0, sizeof job->job);
        char reason[600];
        snprintf(reason, sizeof reason, "invalid job: %s", err.message);
        job_dead(job, reason);
        return;
    }
    log_event(LOG_LEVEL_DEBUG, job->job.execution_id, job->job.retry_attempt, "job.taken",
              "[RETRY] job taken%s (delivery %d)", rescan ? " again after a reconnect" : "",
              job->job.delivery);
    if (twin(w, job) != NULL) {
        w->count.stale++;
        log_event(LOG_LEVEL_INFO, job->job.execution_id, job->job.retry_attempt, "job.duplicate",
                  "[RETRY] duplicate of a job in flight acknowledged");
        job_ack(job);
        return;
    }
    if (job->job.delivery >= w->cfg.max_deliveries) {
        char reason[200];
        snprintf(reason, sizeof reason, "poison: delivered %d times without an outcome",
                 job->job.delivery);
        job_fail_input(job, reason, "poison", reason);
        return;
    }
    job_load(job);
}
