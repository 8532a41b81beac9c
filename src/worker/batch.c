/*
 * The batches of loads and outcome writes (see batch.h). A job joins the batch of its
 * kind that is still gathering; a batch leaves when it is full, or at the end of the loop
 * iteration in which its first job joined, as long as fewer than `pool size` batches of
 * its kind are already out; otherwise it keeps growing until one comes back. So a quiet
 * worker sends each job at once and a busy one sends a few large statements instead of
 * many small ones. The single-row statements serve the jobs of a batch sent again one by
 * one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "batch.h"
#include "log.h"
#include "sqlarray.h"

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

typedef enum batch_kind { BATCH_LOAD = 0, BATCH_RECORD = 1 } batch_kind_t;

/* A job in a batch, with what its statement sends (a load: the execution id only). */
typedef struct batch_item {
    job_t *job;
    batch_outcome_t outcome;
} batch_item_t;

/* One load or record statement for many jobs, while it runs. */
typedef struct job_batch {
    struct job_batch *prev, *next;
    batcher_t *owner;
    batch_kind_t kind;
    size_t n;
    batch_item_t items[]; /* n of them, in the same allocation */
} job_batch_t;

struct batcher {
    worker_t *w;
    size_t max_jobs;           /* jobs in one statement: RETRYQ_DB_BATCH_SIZE */
    batch_item_t *waiting[2];  /* the batch of each kind still gathering (max_jobs each) */
    size_t nwaiting[2];
    int nsent[2];
    job_batch_t *sent;  /* batches sent and not answered: freed at teardown */
    struct event *flush;
    bool flush_armed;
};

/* A load answer while its rows are handed out: job specs parsed once per answer. */
struct load_answer {
    const PGresult *res;
    question_spec_t **parsed; /* parsed[r]: the spec carried by row r (one per row, made
                                 when the first spec is asked for) */
};

static void batch_flush_cb(evutil_socket_t fd, short what, void *arg);

batcher_t *batch_new(worker_t *w)
{
    batcher_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->w = w;
    b->max_jobs = w->cfg.db_batch_size > 0 ? (size_t)w->cfg.db_batch_size : 1;
    b->waiting[BATCH_LOAD] = calloc(b->max_jobs, sizeof *b->waiting[BATCH_LOAD]);
    b->waiting[BATCH_RECORD] = calloc(b->max_jobs, sizeof *b->waiting[BATCH_RECORD]);
    b->flush = event_new(w->base, -1, 0, batch_flush_cb, b);
    if (b->waiting[BATCH_LOAD] == NULL || b->waiting[BATCH_RECORD] == NULL || b->flush == NULL) {
        batch_free(b);
        return NULL;
    }
    return b;
}

void batch_free(batcher_t *b)
{
    if (b == NULL)
        return;
    while (b->sent != NULL) {
        job_batch_t *batch = b->sent;
        b->sent = batch->next;
        free(batch);
    }
    if (b->flush != NULL)
        event_free(b->flush);
    free(b->waiting[BATCH_LOAD]);
    free(b->waiting[BATCH_RECORD]);
    free(b);
}

/* ------------------------------------------------------------------ load answers */

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

batch_spec_t batch_row_spec(const batch_row_t *row, const question_spec_t **spec)
{
    struct load_answer *a = row->answer;
    int carrier = spec_row(a->res, row->index);
    if (carrier < 0 || PQgetisnull(a->res, carrier, 6))
        return BATCH_SPEC_NONE;
    if (a->parsed == NULL &&
        (a->parsed = calloc((size_t)PQntuples(a->res), sizeof *a->parsed)) == NULL)
        return BATCH_SPEC_NOMEM;
    if (a->parsed[carrier] == NULL) {
        const char *text = PQgetvalue(a->res, carrier, 6);
        a->parsed[carrier] = question_spec_parse(text, (size_t)PQgetlength(a->res, carrier, 6));
        if (a->parsed[carrier] == NULL)
            return BATCH_SPEC_NOMEM;
    }
    *spec = a->parsed[carrier];
    return BATCH_SPEC_OK;
}

static void answer_clear(struct load_answer *a)
{
    for (int r = 0; a->parsed != NULL && r < PQntuples(a->res); r++)
        question_spec_free(a->parsed[r]);
    free(a->parsed);
    a->parsed = NULL;
}

/* Hands a job its row of the answer (row < 0: not found). */
static void hand_row(struct load_answer *a, job_t *job, int row)
{
    if (row < 0) {
        job_loaded_row(job, NULL);
        return;
    }
    const PGresult *res = a->res;
    batch_row_t r = {.region = field(res, row, 1),
                     .status = field(res, row, 2),
                     .retry_count = field(res, row, 3),
                     .question_id = field(res, row, 4),
                     .model = field(res, row, 5),
                     .max_retries = field(res, row, 9),
                     .answer = a,
                     .index = row};
    job_loaded_row(job, &r);
}

/* ------------------------------------------------------------------ one statement per job */

static void on_loaded(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                      const char *message)
{
    job_t *job = arg;
    if (status == STORE_ERR_CONNECTION) {
        job_load_unreachable(job, message);
    } else if (status == STORE_ERR_QUERY) {
        job_load_refused(job, sqlstate, message);
    } else {
        struct load_answer a = {.res = res};
        hand_row(&a, job, PQntuples(res) > 0 ? 0 : -1);
        answer_clear(&a);
    }
}

static void on_recorded(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                        const char *message)
{
    job_t *job = arg;
    if (status == STORE_ERR_CONNECTION)
        job_record_unreachable(job, message);
    else if (status == STORE_ERR_QUERY)
        job_record_refused(job, sqlstate, message);
    else
        job_recorded(job, PQntuples(res) > 0);
}

/* The parameters of JOB_SQL_RECORD for one outcome (texts valid while the job lives). */
typedef struct record_params {
    char id[24], attempt[16];
    const char *v[JOB_RECORD_PARAMS];
} record_params_t;

static void record_params(const batch_outcome_t *o, record_params_t *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->id, sizeof p->id, "%" PRId64, o->execution_id);
    snprintf(p->attempt, sizeof p->attempt, "%d", o->attempt);
    const char *v[] = {p->id,     p->attempt,  o->status,  o->output,
                       o->provider, o->error, o->history, o->receipt};
    memcpy(p->v, v, sizeof v);
}

static void load_one(const batcher_t *b, const batch_item_t *item)
{
    char id[24];
    snprintf(id, sizeof id, "%" PRId64, item->outcome.execution_id);
    const char *params[] = {id};
    if (store_exec(b->w->store, b->w->sql.load, 1, params, on_loaded, item->job) < 0)
        job_unsent(item->job, "out of memory queueing the load");
}

static void record_one(const batcher_t *b, const batch_item_t *item)
{
    record_params_t p;
    record_params(&item->outcome, &p);
    if (store_exec(b->w->store, b->w->sql.record, JOB_RECORD_PARAMS, p.v, on_recorded, item->job) < 0)
        job_unsent(item->job, "out of memory queueing the outcome");
}

/* A batch the database refused as a whole (or that could not be sent): every job goes
 * again on its own, so each meets its own error, exactly as if it had never been batched. */
static void batch_one_by_one(const batcher_t *b, batch_kind_t kind, const batch_item_t *items,
                             size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (kind == BATCH_LOAD)
            load_one(b, &items[i]);
        else
            record_one(b, &items[i]);
    }
}

/* ------------------------------------------------------------------ batches */

static int batch_limit(const worker_t *w)
{
    return w->cfg.db_pool_size > 0 ? w->cfg.db_pool_size : 1;
}

static void batch_flush_arm(batcher_t *b)
{
    if (!b->flush_armed) {
        b->flush_armed = true;
        event_active(b->flush, EV_TIMEOUT, 1);
    }
}

static int64_t row_int(const PGresult *res, int row, int col)
{
    const char *v = field(res, row, col);
    return v != NULL ? strtoll(v, NULL, 10) : -1;
}

/* Column `col` of row `row` as a number: from `keys` (id, attempt of each row) when they
 * could be read in advance, else from the answer itself. */
static int64_t row_key(const PGresult *res, const int64_t *keys, int row, int col)
{
    return keys != NULL ? keys[2 * row + col] : row_int(res, row, col);
}

/* Hands every job of an answered batch its row: the loaded row, or "recorded" when the
 * UPDATE returned (id, attempt) for it. A batch of n jobs has at most n rows. */
static void batch_answered(const job_batch_t *batch, const PGresult *res)
{
    int nrows = PQntuples(res);
    int n = nrows < (int)batch->n ? nrows : (int)batch->n;
    struct load_answer answer = {.res = res};
    int64_t *keys = n > 0 ? malloc(2 * (size_t)n * sizeof *keys) : NULL;
    for (int r = 0; keys != NULL && r < n; r++) {
        keys[2 * r] = row_int(res, r, 0);
        keys[2 * r + 1] = batch->kind == BATCH_RECORD ? row_int(res, r, 1) : 0;
    }
    for (size_t i = 0; i < batch->n; i++) {
        const batch_item_t *item = &batch->items[i];
        int found = -1;
        for (int r = 0; r < n && found < 0; r++)
            if (row_key(res, keys, r, 0) == item->outcome.execution_id &&
                (batch->kind == BATCH_LOAD || row_key(res, keys, r, 1) == item->outcome.attempt))
                found = r;
        if (batch->kind == BATCH_LOAD)
            hand_row(&answer, item->job, found);
        else
            job_recorded(item->job, found >= 0);
    }
    free(keys);
    answer_clear(&answer);
}

static void on_batch(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                     const char *message)
{
    job_batch_t *batch = arg;
    batcher_t *b = batch->owner;
    worker_t *w = b->w;
    if (batch->prev != NULL)
        batch->prev->next = batch->next;
    else
        b->sent = batch->next;
    if (batch->next != NULL)
        batch->next->prev = batch->prev;
    b->nsent[batch->kind]--;

    if (status == STORE_ERR_CONNECTION) {
        for (size_t i = 0; i < batch->n; i++) {
            if (batch->kind == BATCH_LOAD)
                job_load_unreachable(batch->items[i].job, message);
            else
                job_record_unreachable(batch->items[i].job, message);
        }
    } else if (status == STORE_ERR_QUERY) {
        w->metrics.db_batches_refused_total++;
        log_event(LOG_LEVEL_DEBUG, 0, 0, "db.batch",
                  "a %s batch of %zu jobs was refused (%s: %s); sending them one by one",
                  batch->kind == BATCH_LOAD ? "load" : "record", batch->n, sqlstate, message);
        batch_one_by_one(b, batch->kind, batch->items, batch->n);
    } else {
        w->metrics.db_batches_total[batch->kind]++;
        w->metrics.db_batch_jobs_total[batch->kind] += batch->n;
        batch_answered(batch, res);
    }
    free(batch);
    if (b->nwaiting[BATCH_LOAD] > 0 || b->nwaiting[BATCH_RECORD] > 0)
        batch_flush_arm(b);
}

/* Builds the array parameters of one batch statement; false when out of memory. */
static bool batch_params(const job_batch_t *batch, char **params, int nparams)
{
    sqlarray_t arrays[JOB_RECORD_PARAMS];
    for (int k = 0; k < nparams; k++)
        sqlarray_init(&arrays[k]);
    for (size_t i = 0; i < batch->n; i++) {
        const batch_outcome_t *o = &batch->items[i].outcome;
        sqlarray_int(&arrays[0], o->execution_id);
        if (batch->kind == BATCH_RECORD) {
            record_params_t p;
            record_params(o, &p);
            sqlarray_int(&arrays[1], o->attempt);
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

/* Sends one batch statement; false when it could not be queued. */
static bool batch_exec(batcher_t *b, job_batch_t *batch)
{
    worker_t *w = b->w;
    int nparams = batch->kind == BATCH_LOAD ? 1 : JOB_RECORD_PARAMS;
    char *params[JOB_RECORD_PARAMS] = {NULL};
    int rc = -1;
    if (batch_params(batch, params, nparams))
        rc = store_exec(w->store, batch->kind == BATCH_LOAD ? w->sql.load_many : w->sql.record_many,
                        nparams, (const char *const *)params, on_batch, batch);
    for (int k = 0; k < nparams; k++)
        free(params[k]);
    return rc >= 0;
}

/* Sends the jobs waiting for a statement of this kind as one batch. */
static void batch_send(batcher_t *b, batch_kind_t kind)
{
    size_t n = b->nwaiting[kind];
    if (n == 0)
        return;
    job_batch_t *batch = calloc(1, sizeof *batch + n * sizeof batch->items[0]);
    if (batch == NULL) {
        /* Sent from where they wait: the single statements only queue (a job whose
         * statement cannot be queued is handed back), nothing joins a batch meanwhile. */
        b->nwaiting[kind] = 0;
        batch_one_by_one(b, kind, b->waiting[kind], n);
        return;
    }
    batch->owner = b;
    batch->kind = kind;
    batch->n = n;
    memcpy(batch->items, b->waiting[kind], n * sizeof batch->items[0]);
    b->nwaiting[kind] = 0;
    if (!batch_exec(b, batch)) {
        batch_one_by_one(b, kind, batch->items, batch->n);
        free(batch);
        return;
    }
    batch->next = b->sent;
    if (b->sent != NULL)
        b->sent->prev = batch;
    b->sent = batch;
    b->nsent[kind]++;
}

static void batch_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    batcher_t *b = arg;
    b->flush_armed = false;
    for (int kind = BATCH_LOAD; kind <= BATCH_RECORD; kind++)
        if (b->nsent[kind] < batch_limit(b->w))
            batch_send(b, (batch_kind_t)kind);
}

static void batch_add(batcher_t *b, batch_kind_t kind, job_t *job, const batch_outcome_t *outcome)
{
    batch_item_t *item = &b->waiting[kind][b->nwaiting[kind]++];
    item->job = job;
    item->outcome = *outcome;
    if (b->nwaiting[kind] == b->max_jobs)
        batch_send(b, kind);
    else
        batch_flush_arm(b);
}

void batch_load(batcher_t *b, job_t *job, int64_t execution_id)
{
    batch_outcome_t key = {.execution_id = execution_id};
    batch_add(b, BATCH_LOAD, job, &key);
}

void batch_record(batcher_t *b, job_t *job, const batch_outcome_t *outcome)
{
    batch_add(b, BATCH_RECORD, job, outcome);
}
