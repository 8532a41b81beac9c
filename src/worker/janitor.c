/*
 * The orphan sweep (see janitor.h):
 *   lock {Q}:lock:sweep ─► query candidates ─► ask Redis which have no job ─► push jobs.
 * The re-created job's question_index is the position of the row's question_id in the
 * job spec's "questions" (0 when the row has no question_id: the worker then resolves by
 * index, which is the best that can be done for such old rows).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "janitor.h"
#include "log.h"

#define SWEEP_BATCH 500

const char JANITOR_SQL_ORPHANS[] =
    "SELECT e.id, e.region, e.retry_count, COALESCE((SELECT t.i - 1 FROM jsonb_array_elements("
    "CASE WHEN jsonb_typeof(j.jobspec_data->'questions') = 'array' "
    "THEN j.jobspec_data->'questions' ELSE '[]'::jsonb END) WITH ORDINALITY AS t(q, i) "
    "WHERE t.q = to_jsonb(e.question_id) LIMIT 1), 0) "
    "FROM executions e LEFT JOIN jobs j ON j.id = e.job_id "
    "WHERE e.status = 'retrying' AND e.retry_count BETWEEN 1 AND $2 "
    "AND (e.last_retry_at IS NULL OR e.last_retry_at < now() - $1::bigint * interval '1 millisecond') "
    "ORDER BY e.last_retry_at NULLS FIRST LIMIT 500";

typedef struct candidate {
    char id[24];
    retryq_job_t job;
} candidate_t;

typedef struct sweep {
    worker_t *w;
    candidate_t *items;
    size_t count;
} sweep_t;

static void sweep_end(sweep_t *s)
{
    s->w->sweeping = false;
    s->w->sweep_state = NULL;
    free(s->items);
    free(s);
}

static void on_missing(void *arg, char **missing, size_t n)
{
    sweep_t *s = arg;
    worker_t *w = s->w;
    size_t pushed = 0;
    for (size_t i = 0; i < n && w->queue != NULL; i++) {
        for (size_t k = 0; k < s->count; k++) {
            if (strcmp(s->items[k].id, missing[i]) != 0)
                continue;
            char payload[1024];
            if (retryq_job_encode(&s->items[k].job, payload, sizeof payload) < 0)
                break;
            log_event(LOG_LEVEL_WARN, s->items[k].job.execution_id, s->items[k].job.retry_attempt,
                      "sweep.orphan", "[RETRY] execution retrying with no job anywhere: enqueued again");
            queue_push(w->queue, payload, strlen(payload));
            pushed++;
            break;
        }
    }
    w->count.orphans += pushed;
    if (pushed > 0 || s->count > 0)
        log_info("sweep.done", "orphan sweep: %zu candidate(s), %zu re-enqueued", s->count, pushed);
    sweep_end(s);
}

static void on_candidates(void *arg, store_status_t status, const PGresult *res,
                          const char *sqlstate, const char *message)
{
    sweep_t *s = arg;
    worker_t *w = s->w;
    if (status != STORE_OK) {
        log_warn("sweep.query", "orphan sweep query failed (%s): %s", sqlstate, message);
        sweep_end(s);
        return;
    }
    int rows = PQntuples(res);
    if (rows == 0) {
        sweep_end(s);
        return;
    }
    s->items = calloc((size_t)rows, sizeof *s->items);
    const char **ids = calloc((size_t)rows, sizeof *ids);
    if (s->items == NULL || ids == NULL) {
        free(ids);
        sweep_end(s);
        return;
    }
    for (int r = 0; r < rows; r++) {
        candidate_t *c = &s->items[s->count];
        retryq_error_t err;
        int64_t id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        if (retryq_job_init(&c->job, id, PQgetvalue(res, r, 1),
                            strtoll(PQgetvalue(res, r, 3), NULL, 10),
                            (int32_t)strtol(PQgetvalue(res, r, 2), NULL, 10), &err) != RETRYQ_OK) {
            log_warn("sweep.skip", "execution %" PRId64 " cannot be re-enqueued: %s", id, err.message);
            continue;
        }
        snprintf(c->id, sizeof c->id, "%" PRId64, id);
        ids[s->count++] = c->id;
    }
    queue_missing(w->queue, ids, s->count, on_missing, s);
    free(ids);
}

static void on_lock(void *arg, bool got)
{
    worker_t *w = arg;
    if (!got || w->store == NULL) {
        w->sweeping = false;
        return;
    }
    sweep_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        w->sweeping = false;
        return;
    }
    s->w = w;
    w->sweep_state = s;
    char age[24], max[16];
    snprintf(age, sizeof age, "%d", w->cfg.orphan_age_ms);
    snprintf(max, sizeof max, "%d", w->cfg.max_retries);
    const char *params[] = {age, max};
    if (store_exec(w->store, w->sql.orphans, 2, params, on_candidates, s) < 0)
        sweep_end(s);
}

void janitor_sweep(worker_t *w)
{
    if (w->sweeping || w->state != WORKER_RUNNING || !queue_ready(w->queue) ||
        !store_connected(w->store))
        return;
    w->sweeping = true;
    /* The lock outlives the sweep a little, so one sweep per interval across all workers. */
    queue_try_lock(w->queue, "sweep", w->cfg.orphan_interval_ms - 100 > 1000
                                          ? w->cfg.orphan_interval_ms - 100 : 1000,
                   on_lock, w);
}

void janitor_free(worker_t *w)
{
    if (w->sweep_state != NULL)
        sweep_end(w->sweep_state);
}
