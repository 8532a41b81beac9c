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

#include "classify.h"
#include "clock.h"
#include "internal.h"
#include "job.h"
#include "log.h"
#include "policy.h"
#include "sqlarray.h"

#define DEFAULT_MODEL "llama3.2-1b"
#define STORE_BACKOFF_MIN_MS 200
#define STORE_BACKOFF_MAX_MS 10000
#define WRITE_DEADLINE_MS (5 * 60 * 1000)

/* The worker's retry policy (policy.h), from its settings. */
static retry_policy_t policy_of(const worker_t *w)
{
    retry_policy_t p = {.backoff_ms = w->cfg.backoff_ms,
                        .backoff_count = w->cfg.backoff_count,
                        .max_deliveries = w->cfg.max_deliveries,
                        .wait_min_ms = STORE_BACKOFF_MIN_MS,
                        .wait_max_ms = STORE_BACKOFF_MAX_MS,
                        .write_deadline_ms = WRITE_DEADLINE_MS};
    return p;
}

static retry_decision_t decide(const job_t *job, retry_event_t event, long retry_after_ms);

/* Both load statements return the same columns:
 *   0 id, 1 region, 2 status, 3 retry_count, 4 question_id, 5 model_id, 6 job spec text,
 *   7 job_id, 8 spec_here, 9 max_retries.
 * The batch form sends a job's spec once per batch (on its lowest execution id; spec_here
 * says which row carries it), so PostgreSQL converts each spec to text once. */
const char JOB_SQL_LOAD[] =
    "SELECT e.id, e.region, e.status, e.retry_count, e.question_id, e.model_id, "
    "j.jobspec_data::text, e.job_id, true, e.max_retries "
    "FROM executions e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id = $1::bigint";

const char JOB_SQL_LOAD_MANY[] =
    "SELECT e.id, e.region, e.status, e.retry_count, e.question_id, e.model_id, "
    "CASE WHEN e.id = min(e.id) OVER w THEN j.jobspec_data::text END, e.job_id, "
    "e.id = min(e.id) OVER w, e.max_retries "
    "FROM executions e LEFT JOIN jobs j ON j.id = e.job_id WHERE e.id = ANY($1::bigint[]) "
    "WINDOW w AS (PARTITION BY e.job_id)";

/* The only statements that write an outcome. The guard makes a redelivered, superseded
 * or cancelled job change nothing. original_error keeps the first error: the runner
 * never fills it (its failure lives in output_data.error), so the row's own
 * output_data->>'error' as it was before this write comes first, then this attempt's
 * error; on success too, so a completed row still says what first went wrong (every
 * expression of SET reads the row as it was). receipt_data takes metadata.receipt on
 * success, as the runner's own success path does. The batch form is the same UPDATE
 * over unnest()ed arrays, one transaction for many outcomes; it returns (id, attempt)
 * of every row it changed. */
const char JOB_SQL_RECORD[] =
    "UPDATE executions SET status = $3, output_data = $4::jsonb, "
    "provider_id = COALESCE($5, provider_id), completed_at = now(), "
    "original_error = COALESCE(original_error, output_data->>'error', $6), "
    "receipt_data = COALESCE($8::jsonb, receipt_data), "
    "retry_history = COALESCE(retry_history, '[]'::jsonb) || jsonb_build_array($7::jsonb) "
    "WHERE id = $1::bigint AND status = 'retrying' AND retry_count = $2 RETURNING id";

const char JOB_SQL_RECORD_MANY[] =
    "UPDATE executions e SET status = v.status, output_data = v.output::jsonb, "
    "provider_id = COALESCE(v.provider, e.provider_id), completed_at = now(), "
    "original_error = COALESCE(e.original_error, e.output_data->>'error', v.error), "
    "receipt_data = COALESCE(v.receipt::jsonb, e.receipt_data), "
    "retry_history = COALESCE(e.retry_history, '[]'::jsonb) || jsonb_build_array(v.history::jsonb) "
    "FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], "
    "$7::text[], $8::text[]) AS v(id, attempt, status, output, provider, error, history, receipt) "
    "WHERE e.id = v.id AND e.status = 'retrying' AND e.retry_count = v.attempt "
    "RETURNING e.id, v.attempt";

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
    const char *router_region; /* the router's form of it (question_router_region) */
    char *model;
    question_t question;
    bool have_question;
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

    /* The two indexes of jobs in flight (struct job_ctx): by (execution id, attempt) and by
     * payload bytes. */
    uint64_t hash[2];
    job_t *chain[2];
    bool indexed[2];
};

/* ------------------------------------------------------------------ shared state */

#define JOB_BATCH_MAX 64     /* jobs in one load or record statement */
#define JOB_INDEX_FIRST 256  /* buckets of an index at start (doubles as jobs grow) */

enum { IX_KEY = 0, IX_PAYLOAD = 1 };
typedef enum batch_kind { BATCH_LOAD = 0, BATCH_RECORD = 1 } batch_kind_t;

/* One load or record statement for many jobs, while it runs. */
typedef struct job_batch {
    struct job_batch *prev, *next;
    worker_t *w;
    batch_kind_t kind;
    size_t n;
    job_t *jobs[JOB_BATCH_MAX];
} job_batch_t;

/* A chained hash index of jobs; the chain runs through job->chain[which]. */
typedef struct job_index {
    job_t **slots;
    size_t cap, n;
} job_index_t;

/*
 * What the jobs of one worker share. Loads and records are gathered and sent as one
 * statement per batch: a batch leaves when it is full, or at the end of the loop
 * iteration in which its first job joined, as long as fewer than `pool size` batches of
 * its kind are already out; otherwise it keeps growing until one comes back. So a quiet
 * worker sends each job at once and a busy one sends a few large statements instead of
 * many small ones (one transaction, one round trip, one plan for up to 64 rows).
 */
struct job_ctx {
    job_t *waiting[2][JOB_BATCH_MAX];
    size_t nwaiting[2];
    int nsent[2];
    job_batch_t *sent;  /* batches sent and not answered: freed at teardown */
    struct event *flush;
    bool flush_armed;
    job_index_t index[2];
};

static void job_load(job_t *job);
static void job_record(job_t *job);
static void job_flush_cb(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------------ indexes */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t key_hash(int64_t execution_id, int attempt)
{
    return mix64((uint64_t)execution_id * 64 + (uint64_t)(unsigned)attempt);
}

static uint64_t payload_hash(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return mix64(h);
}

static bool index_alloc(job_index_t *ix, int which, size_t cap)
{
    job_t **slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return false;
    for (size_t i = 0; i < ix->cap; i++) {
        job_t *j = ix->slots[i];
        while (j != NULL) {
            job_t *next = j->chain[which];
            size_t slot = (size_t)(j->hash[which] & (cap - 1));
            j->chain[which] = slots[slot];
            slots[slot] = j;
            j = next;
        }
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return true;
}

/* Never fails: when the index cannot grow, its chains get longer. */
static void index_add(job_t *job, int which, uint64_t hash)
{
    job_index_t *ix = &job->w->jobctx->index[which];
    if (ix->n >= ix->cap && ix->cap <= SIZE_MAX / 4)
        index_alloc(ix, which, ix->cap * 2);
    size_t slot = (size_t)(hash & (ix->cap - 1));
    job->hash[which] = hash;
    job->chain[which] = ix->slots[slot];
    ix->slots[slot] = job;
    job->indexed[which] = true;
    ix->n++;
}

static void index_remove(job_t *job, int which)
{
    if (!job->indexed[which])
        return;
    job_index_t *ix = &job->w->jobctx->index[which];
    for (job_t **p = &ix->slots[job->hash[which] & (ix->cap - 1)]; *p != NULL;
         p = &(*p)->chain[which]) {
        if (*p == job) {
            *p = job->chain[which];
            break;
        }
    }
    job->chain[which] = NULL;
    job->indexed[which] = false;
    ix->n--;
}

static job_t *index_bucket(const worker_t *w, int which, uint64_t hash)
{
    const job_index_t *ix = &w->jobctx->index[which];
    return ix->slots[hash & (ix->cap - 1)];
}

int job_init(worker_t *w)
{
    struct job_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return -1;
    w->jobctx = ctx;
    ctx->flush = event_new(w->base, -1, 0, job_flush_cb, w);
    if (ctx->flush == NULL || !index_alloc(&ctx->index[IX_KEY], IX_KEY, JOB_INDEX_FIRST) ||
        !index_alloc(&ctx->index[IX_PAYLOAD], IX_PAYLOAD, JOB_INDEX_FIRST))
        return -1; /* job_free_all frees what was made */
    return 0;
}

/* ------------------------------------------------------------------ endings */

static void job_unlink(job_t *job)
{
    worker_t *w = job->w;
    index_remove(job, IX_KEY);
    index_remove(job, IX_PAYLOAD);
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
    while (ctx->sent != NULL) {
        job_batch_t *b = ctx->sent;
        ctx->sent = b->next;
        free(b);
    }
    if (ctx->flush != NULL)
        event_free(ctx->flush);
    free(ctx->index[IX_KEY].slots);
    free(ctx->index[IX_PAYLOAD].slots);
    free(ctx);
    w->jobctx = NULL;
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
    w->count.dead++;
    metrics_dead_letter(&w->metrics, job->job.execution_id, job->job.retry_attempt, why, reason);
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
        job_dead(job, METRICS_DEAD_OTHER, "could not re-encode the job for a delayed retry");
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

/* The text of a document built with every addition checked (`complete`); NULL when one
 * failed (out of memory): a document with a field missing is never stored. */
static char *checked_json(cJSON *obj, bool complete)
{
    char *text = obj != NULL && complete ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return text;
}

/* The history entry appended by the record statement. */
static char *history_entry(const job_t *job, int64_t duration_ms)
{
    char ts[48];
    rq_format_rfc3339(rq_now_ms(), ts, sizeof ts);
    cJSON *e = cJSON_CreateObject();
    bool ok = e != NULL;
    ok = ok && cJSON_AddNumberToObject(e, "attempt", job->job.retry_attempt) != NULL;
    ok = ok && cJSON_AddStringToObject(e, "status", job->history_status) != NULL;
    ok = ok && cJSON_AddStringToObject(e, "timestamp", ts) != NULL;
    ok = ok && cJSON_AddStringToObject(e, "worker", job->w->id) != NULL;
    if (job->provider != NULL)
        ok = ok && cJSON_AddStringToObject(e, "provider", job->provider) != NULL;
    else
        ok = ok && cJSON_AddNullToObject(e, "provider") != NULL;
    ok = ok && cJSON_AddNumberToObject(e, "duration_ms", (double)duration_ms) != NULL;
    if (job->error != NULL)
        ok = ok && cJSON_AddStringToObject(e, "error", job->error) != NULL;
    else
        ok = ok && cJSON_AddNullToObject(e, "error") != NULL;
    if (job->job.delivery > 0)
        ok = ok && cJSON_AddNumberToObject(e, "delivery", job->job.delivery) != NULL;
    if (job->have_question && job->question.note != NULL)
        ok = ok && cJSON_AddStringToObject(e, "note", job->question.note) != NULL;
    return checked_json(e, ok);
}

/* {"error", "error_code", "failure": {stage, component, subcomponent, code, type, region,
 * model, message}} with retry_attempt: the frame of every failure document. */
static cJSON *failure_frame(const job_t *job, const char *error, const char *code, const char *stage,
                            const char *component, const char *subcomponent, const char *type,
                            const char *region, const char *message, cJSON **failure)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *f = cJSON_CreateObject();
    if (o == NULL || f == NULL || !cJSON_AddItemToObject(o, "failure", f)) {
        cJSON_Delete(o);
        cJSON_Delete(f);
        return NULL;
    }
    bool ok = true;
    ok = ok && cJSON_AddStringToObject(o, "error", error) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "error_code", code) != NULL;
    ok = ok && cJSON_AddNumberToObject(o, "retry_attempt", job->job.retry_attempt) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "stage", stage) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "component", component) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "subcomponent", subcomponent) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "code", code) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "type", type) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "region", region) != NULL;
    ok = ok && cJSON_AddStringToObject(f, "model", job->model != NULL ? job->model : "") != NULL;
    ok = ok && cJSON_AddStringToObject(f, "message", message) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    *failure = f;
    return o;
}

/* output_data of a failure that is retryq's own (bad spec, bad index, poison, an answer
 * the database refused): the runner's frame under component "retryq" and retryq's codes. */
static char *input_failure_output(const job_t *job, const char *code, const char *type)
{
    const char *error = job->error != NULL ? job->error : "unknown error";
    cJSON *f = NULL;
    cJSON *o = failure_frame(job, error, code, "retry", "retryq", "worker", type, job->job.region,
                             error, &f);
    if (o == NULL)
        return NULL;
    return checked_json(o, cJSON_AddBoolToObject(f, "transient", false) != NULL);
}

/*
 * output_data of a router failure in the runner's exact vocabulary (its HybridExecutor):
 * error "hybrid error: <message>", error_code ROUTER_*, and a failure document whose
 * stage, type and code follow the kind of failure, with the router-form region (or the
 * router's metadata.region), http_status and url for HTTP errors, the provider, its
 * metadata's provider_type and failure, and whether the failure is transient.
 */
static char *router_failure_output(const job_t *job, const router_outcome_t *out, const char *path)
{
    char code_buf[32];
    const char *code = router_failure_code(out->failure, out->http_status, code_buf, sizeof code_buf);
    const char *message = out->error != NULL ? out->error : "router call failed";
    cJSON *meta = out->metadata_json != NULL ? cJSON_Parse(out->metadata_json) : NULL;
    const cJSON *meta_region = cJSON_GetObjectItemCaseSensitive(meta, "region");
    const char *region = cJSON_IsString(meta_region) && meta_region->valuestring[0] != '\0'
                             ? meta_region->valuestring
                             : job->router_region;
    bool transient = out->verdict == ROUTER_TRANSIENT || out->failure == ROUTER_FAILURE_TIMEOUT ||
                     out->failure == ROUTER_FAILURE_NETWORK ||
                     (out->failure == ROUTER_FAILURE_HTTP && out->http_status >= 500);
    cJSON *f = NULL;
    cJSON *o = failure_frame(job, job->error != NULL ? job->error : message, code,
                             router_failure_stage(out->failure), "hybrid_router", "inference",
                             router_failure_type(out->failure), region != NULL ? region : "",
                             message, &f);
    if (o == NULL) {
        cJSON_Delete(meta);
        return NULL;
    }
    bool ok = true;
    if (out->http_status > 0 && out->failure == ROUTER_FAILURE_HTTP)
        ok = ok && cJSON_AddNumberToObject(f, "http_status", (double)out->http_status) != NULL;
    if (path != NULL && out->failure == ROUTER_FAILURE_HTTP)
        ok = ok && cJSON_AddStringToObject(f, "url", path) != NULL;
    if (out->error_code != NULL) /* retryq's finer reason: too_large, rate_limited, ... */
        ok = ok && cJSON_AddStringToObject(f, "retryq_reason", out->error_code) != NULL;
    if (out->provider != NULL)
        ok = ok && cJSON_AddStringToObject(f, "provider", out->provider) != NULL;
    static const char *const copied[][2] = {{"provider_type", "provider_type"}, {"failure", "router_failure"}};
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++) {
        cJSON *item = cJSON_DetachItemFromObjectCaseSensitive(meta, copied[i][0]);
        if (item != NULL && !cJSON_AddItemToObject(f, copied[i][1], item)) {
            cJSON_Delete(item);
            ok = false;
        }
    }
    ok = ok && cJSON_AddBoolToObject(f, "transient", transient) != NULL;
    if (out->failure == ROUTER_FAILURE_ROUTER && out->error != NULL)
        ok = ok && cJSON_AddStringToObject(o, "router_error", out->error) != NULL;
    cJSON_Delete(meta);
    return checked_json(o, ok);
}

/* "hybrid error: <message>", the runner's error text of a router failure. */
static bool set_hybrid_error(job_t *job, const char *message)
{
    char *text = NULL;
    if (asprintf(&text, "hybrid error: %s", message) < 0)
        return false;
    free(job->error);
    job->error = text;
    return true;
}

static char *success_output(const job_t *job, const router_outcome_t *out)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    bool ok = true;
    ok = ok && cJSON_AddStringToObject(o, "response", out->response != NULL ? out->response : "") != NULL;
    if (out->provider != NULL) {
        ok = ok && cJSON_AddStringToObject(o, "provider", out->provider) != NULL;
        ok = ok && cJSON_AddStringToObject(o, "provider_used", out->provider) != NULL;
    }
    ok = ok && cJSON_AddNumberToObject(o, "inference_sec", out->inference_sec) != NULL;
    cJSON *meta = out->metadata_json != NULL ? cJSON_Parse(out->metadata_json) : NULL;
    if (meta == NULL)
        meta = cJSON_CreateObject();
    if (meta == NULL || !cJSON_AddItemToObject(o, "metadata", meta)) {
        cJSON_Delete(meta);
        ok = false;
    }
    ok = ok && cJSON_AddNumberToObject(o, "retry_attempt", job->job.retry_attempt) != NULL;
    if (job->have_question && job->question.id != NULL)
        ok = ok && cJSON_AddStringToObject(o, "question_id", job->question.id) != NULL;
    return checked_json(o, ok);
}

static bool set_text(char **slot, const char *text)
{
    free(*slot);
    *slot = text != NULL ? strdup(text) : NULL;
    return text == NULL || *slot != NULL;
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
    job->output_json = input_failure_output(job, code, "input");
    job_record(job);
}

/* A processing failure that may go away (a database error on this row): try again later,
 * counting a delivery; past the bound the job is poison. */
static void job_fail_delivery(job_t *job, const char *why)
{
    retry_decision_t d = decide(job, RETRY_EV_JOB_FAILED, -1);
    if (d.action == RETRY_POISON) {
        char reason[600];
        snprintf(reason, sizeof reason, "poison: failed %d deliveries: %s", job->job.delivery + 1, why);
        job_fail_input(job, reason, "poison", reason, METRICS_FAIL_POISON, METRICS_DEAD_POISON);
        return;
    }
    job_delay(job, d.delay_ms, why);
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
    w->count.store_retries++;
    log_event(LOG_LEVEL_WARN, job->job.execution_id, job->job.retry_attempt, "job.wait",
              "[RETRY] the database could not run the %s now, trying again in %" PRId64 " ms: %s",
              job->stage == STAGE_LOAD ? "load" : "record", delay, why);
    struct timeval tv = clock_tv_ms(delay);
    if (evtimer_add(job->timer, &tv) != 0)
        job_requeue(job, "could not arm the wait timer");
}

/* The database could not run the load: wait and load again. */
static void job_load_unreachable(job_t *job, const char *message)
{
    job_wait_and_redo(job, decide(job, RETRY_EV_STORE_DOWN, -1), message);
}

/* ------------------------------------------------------------------ record */

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

/* The database could not be reached while the outcome was being written. */
static void job_record_unreachable(job_t *job, const char *message)
{
    retry_decision_t d = decide(job, RETRY_EV_WRITE_DOWN, -1);
    if (d.action == RETRY_REQUEUE)
        job_requeue(job, "the outcome could not be written before the write deadline");
    else
        job_wait_and_redo(job, d, message);
}

/* The record statement ran; `updated` says whether the guard let it change the row. */
static void job_recorded(job_t *job, bool updated)
{
    worker_t *w = job->w;
    if (!updated) {
        w->count.stale++;
        log_event(LOG_LEVEL_INFO, job->job.execution_id, job->job.retry_attempt, "job.stale",
                  "[RETRY] outcome not recorded: the execution is no longer retrying at this attempt");
        if (job->dead_reason != NULL) {
            job_dead(job, job->dead_class, job->dead_reason);
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
    metrics_outcome(&w->metrics, job->job.execution_id, job->job.retry_attempt,
                    strcmp(job->exec_status, "completed") == 0, job->failure, job->dead_reason != NULL,
                    job->error != NULL ? job->error : job->exec_status,
                    job->call_started_ms > 0 ? job->call_sec : -1.0);
    log_event(strcmp(job->exec_status, "completed") == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
              job->job.execution_id, job->job.retry_attempt, "job.recorded",
              "[RETRY] Completed retry for execution %" PRId64 ": status %s, inference %" PRId64
              " ms (%" PRId64 " ms from pop)%s%s",
              job->job.execution_id, job->exec_status,
              job->call_started_ms > 0 ? (int64_t)(job->call_sec * 1000.0 + 0.5) : (int64_t)0,
              clock_mono_ms() - job->taken_ms, job->error ? ": " : "", job->error ? job->error : "");
    if (job->dead_reason != NULL) {
        job_dead(job, job->dead_class, job->dead_reason);
    } else {
        job_ack(job);
    }
}

static void on_recorded(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                        const char *message)
{
    job_t *job = arg;
    if (status == STORE_ERR_CONNECTION) {
        job_record_unreachable(job, message);
        return;
    }
    if (status == STORE_ERR_QUERY && sql_state_retryable(sqlstate)) {
        /* The write itself may succeed if sent again: keep the router's answer and redo
         * the write, as for a lost connection (never call the router again for it). */
        job_record_unreachable(job, message);
        return;
    }
    if (status == STORE_ERR_QUERY && job->dead_reason != NULL) {
        /* Already giving up on this job: do not loop on a row the database refuses. */
        job_dead(job, job->dead_class, job->dead_reason);
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
            job->failure = METRICS_FAIL_FAILED;
            set_text(&job->error, error);
            set_text(&job->provider, NULL);
            set_text(&job->receipt_json, NULL);
            free(job->output_json);
            job->output_json = input_failure_output(job, "unstorable_answer", "storage");
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
    job_recorded(job, PQntuples(res) > 0);
}

/* The parameters of JOB_SQL_RECORD for one job (texts valid while the job lives). */
typedef struct record_params {
    char id[24], attempt[16];
    const char *v[JOB_RECORD_PARAMS];
} record_params_t;

static void record_params(const job_t *job, record_params_t *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->id, sizeof p->id, "%" PRId64, job->job.execution_id);
    snprintf(p->attempt, sizeof p->attempt, "%d", job->job.retry_attempt);
    bool is_error = strcmp(job->exec_status, "completed") != 0;
    const char *v[] = {p->id,           p->attempt,
                       job->exec_status, job->output_json,
                       job->provider,   is_error ? job->error : NULL,
                       job->history_json, is_error ? NULL : job->receipt_json};
    memcpy(p->v, v, sizeof v);
}

/* One statement for this job alone (the batch was refused: find out which job it was). */
static void job_record_one(job_t *job)
{
    record_params_t p;
    record_params(job, &p);
    if (store_exec(job->w->store, job->w->sql.record, JOB_RECORD_PARAMS, p.v, on_recorded, job) < 0)
        job_requeue(job, "out of memory queueing the outcome");
}

static void job_batch_add(job_t *job, batch_kind_t kind);

static void job_record(job_t *job)
{
    job->stage = STAGE_RECORD;
    if (job->received_ms == 0)
        job->received_ms = clock_mono_ms();
    int64_t duration = job->call_started_ms > 0 ? clock_mono_ms() - job->call_started_ms : 0;
    free(job->history_json);
    job->history_json = history_entry(job, duration);
    if (job->history_json == NULL || job->output_json == NULL) {
        job_requeue(job, "out of memory building the outcome");
        return;
    }
    job_batch_add(job, BATCH_RECORD);
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

    bool ok = true;
    if (out.verdict == ROUTER_TRANSIENT) {
        const char *why = out.error != NULL ? out.error : "transient router failure";
        retry_decision_t d = decide(job, RETRY_EV_ROUTER_TRANSIENT, out.retry_after_ms);
        if (d.action == RETRY_DELAY) {
            job_delay(job, d.delay_ms, why);
            router_outcome_free(&out);
            return;
        }
        char error[2600];
        snprintf(error, sizeof error, "gave up after %d tries: %s", job->job.delivery + 1, why);
        job->exec_status = "failed";
        job->history_status = "failed";
        job->failure = METRICS_FAIL_TRANSIENT_EXHAUSTED;
        ok = set_hybrid_error(job, error);
    } else if (out.verdict == ROUTER_SUCCESS) {
        job->exec_status = "completed";
        job->history_status = "success";
        ok = set_text(&job->provider, out.provider) && set_text(&job->receipt_json, out.receipt_json);
        job->output_json = success_output(job, &out);
    } else {
        bool timeout = out.verdict == ROUTER_TIMEOUT;
        job->failure = timeout ? METRICS_FAIL_TIMEOUT : METRICS_FAIL_FAILED;
        job->exec_status = timeout ? "timeout" : "failed";
        job->history_status = timeout ? "timeout" : "failed";
        ok = set_hybrid_error(job, out.error != NULL ? out.error : "router call failed");
    }
    if (ok && out.verdict != ROUTER_SUCCESS)
        job->output_json = router_failure_output(job, &out, result->path);
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
    log_event(LOG_LEVEL_INFO, job->job.execution_id, job->job.retry_attempt, "job.started",
              "[RETRY] Starting retry for execution %" PRId64 " (region %s, question %" PRId64
              ", attempt %d)",
              job->job.execution_id, job->job.region, job->job.question_index, job->job.retry_attempt);
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

static const char *field(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* The row that carries the job spec of `row`: the row itself, or (batch form) the row of
 * the same job that carries it; -1 when the execution has no job. */
static int spec_row(const PGresult *res, int row)
{
    const char *here = field(res, row, 8), *job_id = field(res, row, 7);
    if (here != NULL && here[0] == 't')
        return row;
    if (job_id == NULL)
        return -1;
    for (int r = 0, n = PQntuples(res); r < n; r++) {
        const char *other = field(res, r, 7), *flag = field(res, r, 8);
        if (r != row && other != NULL && flag != NULL && flag[0] == 't' && strcmp(other, job_id) == 0)
            return r;
    }
    return -1;
}

/* Job specs parsed once per answer: parsed[r] belongs to carrier row r. */
typedef struct spec_cache {
    question_spec_t *parsed[JOB_BATCH_MAX];
} spec_cache_t;

static void spec_cache_clear(spec_cache_t *cache)
{
    for (size_t r = 0; r < JOB_BATCH_MAX; r++)
        question_spec_free(cache->parsed[r]);
}

/* Resolves the job's question through the parsed spec of its row. Returns a
 * question_status_t, or 1 when the job has no spec, or 2 when out of memory. */
static int resolve_question(job_t *job, const PGresult *res, int row, spec_cache_t *cache,
                            const char *question_id, char *err, size_t errcap)
{
    int carrier = spec_row(res, row);
    if (carrier < 0 || PQgetisnull(res, carrier, 6))
        return 1;
    if (carrier >= JOB_BATCH_MAX)
        return 2; /* cannot happen: a batch asks for at most JOB_BATCH_MAX ids */
    if (cache->parsed[carrier] == NULL) {
        const char *text = PQgetvalue(res, carrier, 6);
        cache->parsed[carrier] = question_spec_parse(text, (size_t)PQgetlength(res, carrier, 6));
        if (cache->parsed[carrier] == NULL)
            return 2;
    }
    return question_resolve_spec(job->w->bank, cache->parsed[carrier], question_id,
                                 job->job.question_index, &job->question, err, errcap);
}

/* The guard and the question, from the job's row (row < 0: not found). */
static void job_loaded(job_t *job, const PGresult *res, int row, spec_cache_t *cache)
{
    worker_t *w = job->w;
    job->backoff_ms = 0;
    if (row < 0) {
        job_dead(job, METRICS_DEAD_NOT_FOUND, "execution not found");
        return;
    }
    const char *region = field(res, row, 1), *exec_status = field(res, row, 2);
    const char *count = field(res, row, 3), *question_id = field(res, row, 4);
    const char *model = field(res, row, 5), *max_retries = field(res, row, 9);
    if (region == NULL || strcmp(region, job->job.region) != 0) {
        char reason[400];
        snprintf(reason, sizeof reason, "region mismatch: job has \"%s\", execution has \"%s\"",
                 job->job.region, region != NULL ? region : "");
        job_dead(job, METRICS_DEAD_REGION_MISMATCH, reason);
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
    job->router_region = question_router_region(job->region);
    /* The row's max_retries is the truth (the payload's bound is only a sanity ceiling). A
     * job past it would otherwise leave the row 'retrying' with nothing to finish it. */
    long row_max = max_retries != NULL ? strtol(max_retries, NULL, 10) : 0;
    if (job->job.retry_attempt > row_max) {
        char error[200];
        snprintf(error, sizeof error, "retry attempt %d exceeds the execution's max_retries (%ld)",
                 job->job.retry_attempt, row_max);
        job_fail_input(job, error, "attempt_over_max_retries", error, METRICS_FAIL_BAD_JOB,
                       METRICS_DEAD_OVER_MAX_RETRIES);
        return;
    }
    char err[300];
    int rc = resolve_question(job, res, row, cache, question_id, err, sizeof err);
    if (rc == 1) {
        job_fail_input(job, "bad job spec: the execution's job has no spec", "bad_job_spec",
                       "bad job spec", METRICS_FAIL_BAD_JOB, METRICS_DEAD_BAD_SPEC);
        return;
    }
    if (rc == 2) {
        job_requeue(job, "out of memory resolving the question");
        return;
    }
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
        log_event(LOG_LEVEL_WARN, job->job.execution_id, job->job.retry_attempt, "job.question",
                  "[RETRY] %s", job->question.note);
    job_call(job);
}

static retry_decision_t decide(const job_t *job, retry_event_t event, long retry_after_ms)
{
    retry_policy_t policy = policy_of(job->w);
    retry_facts_t facts = {.delivery = job->job.delivery,
                           .retry_after_ms = retry_after_ms,
                           .waited_ms = job->backoff_ms,
                           .writing_ms = job->received_ms > 0 ? clock_mono_ms() - job->received_ms : 0,
                           .random = worker_random(job->w)};
    return retry_decide(&policy, event, &facts);
}

static void job_load_failed(job_t *job, const char *sqlstate, const char *message)
{
    char why[600];
    snprintf(why, sizeof why, "loading the execution failed (%s): %s", sqlstate, message);
    job_fail_delivery(job, why);
}

static void on_loaded(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                      const char *message)
{
    job_t *job = arg;
    if (status == STORE_ERR_CONNECTION)
        job_load_unreachable(job, message);
    else if (status == STORE_ERR_QUERY)
        job_load_failed(job, sqlstate, message);
    else {
        spec_cache_t cache = {{NULL}};
        job_loaded(job, res, PQntuples(res) > 0 ? 0 : -1, &cache);
        spec_cache_clear(&cache);
    }
}

static void job_load_one(job_t *job)
{
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, job->job.execution_id);
    const char *params[] = {id};
    if (store_exec(job->w->store, job->w->sql.load, 1, params, on_loaded, job) < 0)
        job_requeue(job, "out of memory queueing the load");
}

static void job_load(job_t *job)
{
    job->stage = STAGE_LOAD;
    job_batch_add(job, BATCH_LOAD);
}

/* ------------------------------------------------------------------ batches */

static int batch_limit(const worker_t *w)
{
    return w->cfg.db_pool_size > 0 ? w->cfg.db_pool_size : 1;
}

static void job_flush_arm(worker_t *w)
{
    struct job_ctx *ctx = w->jobctx;
    if (!ctx->flush_armed) {
        ctx->flush_armed = true;
        event_active(ctx->flush, EV_TIMEOUT, 1);
    }
}

/* A batch the database refused as a whole (or that could not be sent): every job goes
 * again on its own, so each meets its own error, exactly as if it had never been batched. */
static void batch_one_by_one(job_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        if (b->kind == BATCH_LOAD)
            job_load_one(b->jobs[i]);
        else
            job_record_one(b->jobs[i]);
    }
}

static int64_t row_int(const PGresult *res, int row, int col)
{
    const char *v = field(res, row, col);
    return v != NULL ? strtoll(v, NULL, 10) : -1;
}

/* Hands every job of an answered batch its row: the loaded row, or "recorded" when the
 * UPDATE returned (id, attempt) for it. */
static void batch_answered(job_batch_t *b, const PGresult *res)
{
    int nrows = PQntuples(res);
    spec_cache_t cache = {{NULL}};
    int64_t ids[JOB_BATCH_MAX], attempts[JOB_BATCH_MAX];
    int n = nrows < JOB_BATCH_MAX ? nrows : JOB_BATCH_MAX;
    for (int r = 0; r < n; r++) {
        ids[r] = row_int(res, r, 0);
        attempts[r] = b->kind == BATCH_RECORD ? row_int(res, r, 1) : 0;
    }
    for (size_t i = 0; i < b->n; i++) {
        job_t *job = b->jobs[i];
        int found = -1;
        for (int r = 0; r < n && found < 0; r++)
            if (ids[r] == job->job.execution_id &&
                (b->kind == BATCH_LOAD || attempts[r] == job->job.retry_attempt))
                found = r;
        if (b->kind == BATCH_LOAD)
            job_loaded(job, res, found, &cache);
        else
            job_recorded(job, found >= 0);
    }
    spec_cache_clear(&cache);
}

static void on_batch(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                     const char *message)
{
    job_batch_t *b = arg;
    worker_t *w = b->w;
    struct job_ctx *ctx = w->jobctx;
    if (b->prev != NULL)
        b->prev->next = b->next;
    else
        ctx->sent = b->next;
    if (b->next != NULL)
        b->next->prev = b->prev;
    ctx->nsent[b->kind]--;

    if (status == STORE_ERR_CONNECTION) {
        for (size_t i = 0; i < b->n; i++) {
            if (b->kind == BATCH_LOAD)
                job_load_unreachable(b->jobs[i], message);
            else
                job_record_unreachable(b->jobs[i], message);
        }
    } else if (status == STORE_ERR_QUERY) {
        w->count.db_batches_refused++;
        log_event(LOG_LEVEL_DEBUG, 0, 0, "db.batch",
                  "a %s batch of %zu jobs was refused (%s: %s); sending them one by one",
                  b->kind == BATCH_LOAD ? "load" : "record", b->n, sqlstate, message);
        batch_one_by_one(b);
    } else {
        w->count.db_batches[b->kind]++;
        w->count.db_batch_jobs[b->kind] += b->n;
        batch_answered(b, res);
    }
    free(b);
    if (ctx->nwaiting[BATCH_LOAD] > 0 || ctx->nwaiting[BATCH_RECORD] > 0)
        job_flush_arm(w);
}

/* Builds the array parameters of one batch statement; false when out of memory. */
static bool batch_params(const job_batch_t *b, char **params, int nparams)
{
    sqlarray_t arrays[JOB_RECORD_PARAMS];
    for (int k = 0; k < nparams; k++)
        sqlarray_init(&arrays[k]);
    for (size_t i = 0; i < b->n; i++) {
        const job_t *job = b->jobs[i];
        sqlarray_int(&arrays[0], job->job.execution_id);
        if (b->kind == BATCH_RECORD) {
            record_params_t p;
            record_params(job, &p);
            sqlarray_int(&arrays[1], job->job.retry_attempt);
            for (int k = 2; k < JOB_RECORD_PARAMS; k++)
                sqlarray_text(&arrays[k], p.v[k]);
        }
    }
    bool ok = true;
    for (int k = 0; k < nparams; k++) {
        params[k] = sqlarray_finish(&arrays[k]);
        ok = ok && params[k] != NULL;
    }
    return ok;
}

/* Sends the jobs waiting for a statement of this kind as one batch. */
static void batch_send(worker_t *w, batch_kind_t kind)
{
    struct job_ctx *ctx = w->jobctx;
    size_t n = ctx->nwaiting[kind];
    if (n == 0)
        return;
    job_batch_t *b = calloc(1, sizeof *b);
    if (b == NULL) {
        job_batch_t tmp = {.kind = kind, .n = n};
        memcpy(tmp.jobs, ctx->waiting[kind], n * sizeof tmp.jobs[0]);
        ctx->nwaiting[kind] = 0;
        batch_one_by_one(&tmp);
        return;
    }
    b->w = w;
    b->kind = kind;
    b->n = n;
    memcpy(b->jobs, ctx->waiting[kind], n * sizeof b->jobs[0]);
    ctx->nwaiting[kind] = 0;

    int nparams = kind == BATCH_LOAD ? 1 : JOB_RECORD_PARAMS;
    char *params[JOB_RECORD_PARAMS] = {NULL};
    int rc = -1;
    if (batch_params(b, params, nparams))
        rc = store_exec(w->store, kind == BATCH_LOAD ? w->sql.load_many : w->sql.record_many,
                        nparams, (const char *const *)params, on_batch, b);
    for (int k = 0; k < nparams; k++)
        free(params[k]);
    if (rc < 0) {
        batch_one_by_one(b);
        free(b);
        return;
    }
    b->next = ctx->sent;
    if (ctx->sent != NULL)
        ctx->sent->prev = b;
    ctx->sent = b;
    ctx->nsent[kind]++;
}

static void job_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    worker_t *w = arg;
    struct job_ctx *ctx = w->jobctx;
    ctx->flush_armed = false;
    for (int kind = BATCH_LOAD; kind <= BATCH_RECORD; kind++)
        if (ctx->nsent[kind] < batch_limit(w))
            batch_send(w, (batch_kind_t)kind);
}

static void job_batch_add(job_t *job, batch_kind_t kind)
{
    worker_t *w = job->w;
    struct job_ctx *ctx = w->jobctx;
    ctx->waiting[kind][ctx->nwaiting[kind]++] = job;
    if (ctx->nwaiting[kind] == JOB_BATCH_MAX)
        batch_send(w, kind);
    else
        job_flush_arm(w);
}

/* ------------------------------------------------------------------ start */

static bool held(const worker_t *w, const char *payload, size_t len)
{
    uint64_t h = payload_hash(payload, len);
    for (const job_t *j = index_bucket(w, IX_PAYLOAD, h); j != NULL; j = j->chain[IX_PAYLOAD])
        if (j->hash[IX_PAYLOAD] == h && j->len == len && memcmp(j->payload, payload, len) == 0)
            return true;
    return false;
}

static const job_t *twin(const worker_t *w, const job_t *job)
{
    uint64_t h = key_hash(job->job.execution_id, job->job.retry_attempt);
    for (const job_t *j = index_bucket(w, IX_KEY, h); j != NULL; j = j->chain[IX_KEY])
        if (j != job && j->job.execution_id == job->job.execution_id &&
            j->job.retry_attempt == job->job.retry_attempt &&
            strcmp(j->job.region, job->job.region) == 0)
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
    index_add(job, IX_PAYLOAD, payload_hash(payload, len));

    retryq_error_t err;
    if (retryq_job_decode(payload, len, RETRYQ_MAX_ATTEMPT, &job->job, &err) != RETRYQ_OK) {
        memset(&job->job, 0, sizeof job->job);
        char reason[600];
        snprintf(reason, sizeof reason, "invalid job: %s", err.message);
        job_dead(job, METRICS_DEAD_INVALID_PAYLOAD, reason);
        return;
    }
    log_event(LOG_LEVEL_DEBUG, job->job.execution_id, job->job.retry_attempt, "job.taken",
              "[RETRY] job taken%s (delivery %d)", rescan ? " again (rescan of its processing list)" : "",
              job->job.delivery);
    if (twin(w, job) != NULL) {
        w->count.stale++;
        log_event(LOG_LEVEL_INFO, job->job.execution_id, job->job.retry_attempt, "job.duplicate",
                  "[RETRY] duplicate of a job in flight acknowledged");
        job_ack(job);
        return;
    }
    index_add(job, IX_KEY, key_hash(job->job.execution_id, job->job.retry_attempt));
    if (decide(job, RETRY_EV_TAKEN, -1).action == RETRY_POISON) {
        char reason[200];
        snprintf(reason, sizeof reason, "poison: delivered %d times without an outcome",
                 job->job.delivery);
        job_fail_input(job, reason, "poison", reason, METRICS_FAIL_POISON, METRICS_DEAD_POISON);
        return;
    }
    job_load(job);
}
