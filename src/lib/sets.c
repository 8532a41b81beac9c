/*
 * Retry sets (retryq_sets_list, retryq_set_show): what a retry by filter submitted and
 * where it stands. Nothing here is stored as progress: every figure is computed from the
 * members' executions through migration 0013's and 0014's functions (retryq_set_progress,
 * retryq_set_slices, retryq_member_state), so it is right after any restart and
 * whoever wrote the outcome. A show reads its parts in one READ ONLY snapshot, so they
 * add up.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statement.h"

#define DEFAULT_LIST 50
#define DEFAULT_OPEN 50
/* A set's own columns and the span its rate of outcomes is counted over (ms). */
#define SET_COLUMNS "s.id, s.name, s.filter::text, s.created_by, " RQ_SET_UTC_TEXT("s.created_at") \
                    ", " RQ_SET_RATE_WINDOW_MS
#define SET_COUNT 6

/* The newest sets, with their progress (one pass over each set's members). */
static const char SQL_SETS[] =
    "SELECT " SET_COLUMNS ", " RQ_SET_PROGRESS_COLUMNS " "
    "FROM retryq_sets s LEFT JOIN LATERAL retryq_set_progress(ARRAY[s.id]) p ON true "
    "ORDER BY s.id DESC LIMIT $1::bigint";

/* One set alone: show sums its progress from the slices. */
static const char SQL_SET[] = "SELECT " SET_COLUMNS " FROM retryq_sets s WHERE s.id = $1::bigint";

static const char SQL_SLICES[] =
    "SELECT coalesce(p.model_id, ''), p.region, " RQ_SET_PROGRESS_COLUMNS " "
    "FROM retryq_set_slices(ARRAY[$1::bigint]) p ORDER BY 1, 2";

/* The finished members in one pass: a row per error code of the failed ones, and one
 * for the completed ones with their token usage. */
static const char SQL_OUTCOMES[] =
    "SELECT s.state, CASE WHEN s.state = 'failed' THEN coalesce(retryq_error_code(e.output_data), '') END, "
    "count(*), coalesce(sum(t.tokens_in), 0)::bigint, coalesce(sum(t.tokens_out), 0)::bigint, "
    "count(*) FILTER (WHERE t.tokens_in IS NOT NULL OR t.tokens_out IS NOT NULL) "
    "FROM retryq_set_members m JOIN executions e ON e.id = m.execution_id "
    "CROSS JOIN LATERAL (SELECT retryq_member_state(e.status, e.retry_count, m.attempt, m.cancelled_at) AS state) s "
    "CROSS JOIN LATERAL (SELECT round(retryq_output_tokens(e.output_data, 'in')) AS tokens_in, "
    "round(retryq_output_tokens(e.output_data, 'out')) AS tokens_out) t "
    "WHERE m.set_id = $1::bigint AND s.state IN ('failed', 'completed') "
    "GROUP BY 1, 2 ORDER BY 3 DESC, 2";

static const char SQL_OPEN[] =
    "SELECT m.execution_id, m.region, coalesce(e.model_id, ''), m.attempt, "
    "coalesce(" RQ_SET_UTC_TEXT("e.last_retry_at") ", '') "
    "FROM retryq_set_members m JOIN executions e ON e.id = m.execution_id "
    "WHERE m.set_id = $1::bigint AND retryq_member_state(e.status, e.retry_count, m.attempt, m.cancelled_at) = 'open' "
    "ORDER BY m.execution_id LIMIT $2::bigint";

static char *dup_value(const PGresult *res, int row, int col, bool *ok)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    char *s = strdup(PQgetvalue(res, row, col));
    if (s == NULL)
        *ok = false;
    return s;
}

static void set_clear(retryq_set_t *s)
{
    free(s->name);
    free(s->filter);
    free(s->created_by);
    memset(s, 0, sizeof *s);
}

/* The sets SQL_SETS (the newest `limit`, with progress) or SQL_SET (set `id` alone,
 * progress zero) returns; *window_ms receives the last one's rate span. */
static int read_sets(rq_statement_t *st, int64_t id, size_t limit, retryq_set_t **out, size_t *n,
                     double *window_ms)
{
    char arg[24];
    const char *const params[] = {arg};
    PGresult *res = NULL;
    if (id != 0)
        snprintf(arg, sizeof arg, "%" PRId64, id);
    else
        snprintf(arg, sizeof arg, "%zu", limit);
    *out = NULL;
    *n = 0;
    int rc = rq_statement_exec(st, id != 0 ? SQL_SET : SQL_SETS, 1, params, "reading the retry sets", &res);
    if (rc != RETRYQ_OK)
        return rc;
    int rows = PQntuples(res);
    retryq_set_t *sets = rows > 0 ? calloc((size_t)rows, sizeof *sets) : NULL;
    bool ok = rows == 0 || sets != NULL;
    for (int i = 0; ok && i < rows; i++) {
        retryq_set_t *s = &sets[i];
        s->id = rq_statement_int(res, i, 0);
        s->name = dup_value(res, i, 1, &ok);
        s->filter = dup_value(res, i, 2, &ok);
        s->created_by = dup_value(res, i, 3, &ok);
        rq_copy(s->created_at, sizeof s->created_at, PQgetvalue(res, i, 4));
        *window_ms = strtod(PQgetvalue(res, i, 5), NULL);
        if (PQnfields(res) > SET_COUNT)
            rq_set_progress_add(res, i, SET_COUNT, &s->progress);
        rq_set_progress_finish(&s->progress, *window_ms);
        *n = (size_t)i + 1;
    }
    PQclear(res);
    *out = sets;
    return ok ? RETRYQ_OK : rq_error(st->err, RETRYQ_ERR_NOMEM, "out of memory");
}

int retryq_sets_list(retryq_client_t *client, size_t limit, retryq_set_t **sets, size_t *n,
                     retryq_error_t *err)
{
    rq_statement_t st;
    if (client == NULL || sets == NULL || n == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "sets: missing client or result");
    *sets = NULL;
    *n = 0;
    double window_ms = 0;
    int rc = rq_statement_open(&st, client, "retry sets", err);
    if (rc == RETRYQ_OK)
        rc = read_sets(&st, 0, limit != 0 ? limit : DEFAULT_LIST, sets, n, &window_ms);
    rq_statement_end(&st);
    return rc;
}

void retryq_sets_free(retryq_set_t *sets, size_t n)
{
    for (size_t i = 0; sets != NULL && i < n; i++)
        set_clear(&sets[i]);
    free(sets);
}

/* ------------------------------------------------------------ one set in detail */

/* Runs one of the detail statements on set `id` (and `limit` as $2 when not NULL). */
static int detail_query(rq_statement_t *st, const char *sql, int64_t id, const char *limit,
                        const char *what, PGresult **res)
{
    char id_text[24];
    const char *const params[] = {id_text, limit};
    snprintf(id_text, sizeof id_text, "%" PRId64, id);
    return rq_statement_exec(st, sql, limit != NULL ? 2 : 1, params, what, res);
}

/* Fills item `i` of the detail from row `i`; false when memory ran out. */
typedef bool (*row_reader_fn)(retryq_set_detail_t *d, const PGresult *res, int i);

/* Runs a detail statement and reads each row into a new array of `size`-byte items
 * (*items, *count: freed by retryq_set_detail_free, also when this fails half-way). */
static int read_rows(rq_statement_t *st, retryq_set_detail_t *d, const char *sql, const char *limit,
                     const char *what, void **items, size_t size, size_t *count, row_reader_fn read_row)
{
    PGresult *res = NULL;
    int rc = detail_query(st, sql, d->set.id, limit, what, &res);
    if (rc != RETRYQ_OK)
        return rc;
    int rows = PQntuples(res);
    *items = rows > 0 ? calloc((size_t)rows, size) : NULL;
    bool ok = rows == 0 || *items != NULL;
    for (int i = 0; ok && i < rows; i++) {
        *count = (size_t)i + 1;
        ok = read_row(d, res, i);
    }
    PQclear(res);
    return ok ? RETRYQ_OK : rq_error(st->err, RETRYQ_ERR_NOMEM, "out of memory");
}

static bool slice_row(retryq_set_detail_t *d, const PGresult *res, int i)
{
    bool ok = true;
    d->slices[i].model_id = dup_value(res, i, 0, &ok);
    d->slices[i].region = dup_value(res, i, 1, &ok);
    rq_set_progress_add(res, i, 2, &d->slices[i].progress);
    rq_set_progress_add(res, i, 2, &d->set.progress); /* the set's progress: the sum of its slices */
    return ok;
}

static bool open_row(retryq_set_detail_t *d, const PGresult *res, int i)
{
    retryq_set_open_member_t *m = &d->open[i];
    m->execution_id = rq_statement_int(res, i, 0);
    rq_copy(m->region, sizeof m->region, PQgetvalue(res, i, 1));
    rq_copy(m->model_id, sizeof m->model_id, PQgetvalue(res, i, 2));
    m->attempt = (int32_t)rq_statement_int(res, i, 3);
    rq_copy(m->last_retry_at, sizeof m->last_retry_at, PQgetvalue(res, i, 4));
    return true;
}

/* The failures by error code and the completed members' token usage (SQL_OUTCOMES). */
static int read_outcomes(rq_statement_t *st, retryq_set_detail_t *d)
{
    PGresult *res = NULL;
    int rc = detail_query(st, SQL_OUTCOMES, d->set.id, NULL, "counting the outcomes", &res);
    if (rc != RETRYQ_OK)
        return rc;
    int rows = PQntuples(res);
    d->codes = rows > 0 ? calloc((size_t)rows, sizeof *d->codes) : NULL;
    bool ok = rows == 0 || d->codes != NULL;
    for (int i = 0; ok && i < rows; i++) {
        if (strcmp(PQgetvalue(res, i, 0), "completed") == 0) {
            d->tokens_in = rq_statement_int(res, i, 3);
            d->tokens_out = rq_statement_int(res, i, 4);
            d->with_usage = rq_statement_int(res, i, 5);
            continue;
        }
        retryq_set_code_count_t *c = &d->codes[d->code_count++];
        c->error_code = dup_value(res, i, 1, &ok);
        c->failed = rq_statement_int(res, i, 2);
    }
    PQclear(res);
    return ok ? RETRYQ_OK : rq_error(st->err, RETRYQ_ERR_NOMEM, "out of memory");
}

int retryq_set_show(retryq_client_t *client, int64_t id, size_t open_limit,
                    retryq_set_detail_t *detail, retryq_error_t *err)
{
    rq_statement_t st;
    retryq_set_t *found = NULL;
    size_t n = 0;
    double window_ms = 0;
    char subject[40], limit[24];
    if (detail == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "sets: missing result");
    memset(detail, 0, sizeof *detail);
    if (client == NULL || id <= 0)
        return rq_error(err, RETRYQ_ERR_INVALID, "sets: a client and a set id > 0 are needed");
    snprintf(subject, sizeof subject, "retry set %" PRId64, id);
    int rc = rq_statement_open(&st, client, subject, err);
    if (rc == RETRYQ_OK)
        rc = rq_statement_begin(&st, client->command_timeout_ms, true);
    if (rc == RETRYQ_OK)
        rc = read_sets(&st, id, 1, &found, &n, &window_ms);
    if (rc == RETRYQ_OK && n == 0)
        rc = rq_error(err, RETRYQ_ERR_NOT_FOUND, "no retry set %" PRId64 " (see `retryq sets`)", id);
    if (rc == RETRYQ_OK) {
        detail->set = found[0];
        memset(&found[0], 0, sizeof found[0]); /* moved */
        rc = read_rows(&st, detail, SQL_SLICES, NULL, "counting the members by model and region",
                       (void **)&detail->slices, sizeof *detail->slices, &detail->slice_count, slice_row);
    }
    if (rc == RETRYQ_OK) {
        rq_set_progress_finish(&detail->set.progress, window_ms);
        rc = read_outcomes(&st, detail);
    }
    snprintf(limit, sizeof limit, "%zu", open_limit != 0 ? open_limit : DEFAULT_OPEN);
    if (rc == RETRYQ_OK)
        rc = read_rows(&st, detail, SQL_OPEN, limit, "listing the open members", (void **)&detail->open,
                       sizeof *detail->open, &detail->open_count, open_row);
    rq_statement_end(&st); /* read only: the rollback ends it */
    retryq_sets_free(found, n);
    return rc;
}

void retryq_set_detail_free(retryq_set_detail_t *d)
{
    if (d == NULL)
        return;
    set_clear(&d->set);
    for (size_t i = 0; i < d->code_count; i++)
        free(d->codes[i].error_code);
    free(d->codes);
    for (size_t i = 0; i < d->slice_count; i++) {
        free(d->slices[i].model_id);
        free(d->slices[i].region);
    }
    free(d->slices);
    free(d->open);
    memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------ shared with the worker */

void rq_set_progress_finish(retryq_set_progress_t *p, double window_ms)
{
    p->percent = p->total > 0 ? (double)(p->total - p->open) * 100.0 / (double)p->total : 100.0;
    if (p->open == 0)
        p->eta_ms = 0;
    else if (p->finished_last_minute == 0 || window_ms <= 0)
        p->eta_ms = -1;
    else
        p->eta_ms = (int64_t)((double)p->open * window_ms / (double)p->finished_last_minute + 0.5);
}

void rq_set_progress_add(const PGresult *res, int row, int col, retryq_set_progress_t *p)
{
    int64_t *counts[RQ_SET_PROGRESS_COUNT] = {&p->total, &p->open, &p->completed, &p->failed,
                                              &p->superseded, &p->cancelled, &p->other,
                                              &p->finished_last_minute};
    for (int i = 0; i < RQ_SET_PROGRESS_COUNT; i++)
        *counts[i] += rq_statement_int(res, row, col + i);
}
