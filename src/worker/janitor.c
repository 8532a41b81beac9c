/*
 * The orphan sweep (see janitor.h):
 *
 *   lock {Q}:lock:sweep
 *     ─► candidates: pages of 500 rows by id (keyset: id > cursor), up to RETRYQ_SWEEP_MAX_ROWS
 *     ─► presence: which candidates have a job in Redis, read in bounded pages
 *     ─► the rows of the candidates found nowhere (twice: see below) read again
 *     ─► push a job for each one still open as it was read.
 *
 * Rows. The rows are read in id order from a cursor, so a backlog of old rows that all
 * have their job cannot hide an orphan behind them (the old "500 oldest" query read the
 * same rows every time). A sweep stops reading once it holds RETRYQ_SWEEP_MAX_ROWS rows
 * (5000 by default; whole pages of 500); the next sweep of this worker continues after
 * the last one, and starts again from the beginning once the end was reached. The retry
 * bound is each row's own max_retries (sanity ceiling 1000), not the worker's
 * RETRYQ_MAX_RETRIES.
 *
 * Presence. No Redis call reads more than RETRYQ_SWEEP_PAGE entries (1000 by default), so
 * the sweep cannot stall Redis on a long queue (the old script read the whole queue in one
 * call). A job pushed by the runner with a plain LPUSH carries nothing but its JSON, so
 * there is no index to ask: the sweep reads the entries page by page (plain LRANGE and
 * ZRANGEBYSCORE: no script) and strikes the candidates whose execution id it sees.
 * Because the pages are separate calls, a job can move between two reads; the order of
 * the reads is chosen so that the moves the worker makes are still seen:
 *   workers' jobs ─► delayed set ─► queue ─► workers' jobs again
 * where a worker's jobs are its processing list (LRANGE pages), then its taken hash (HSCAN
 * pages, which return every field present for the whole scan): a job only moves from the
 * list to the hash. A job popped while the queue is read is with a worker on the second
 * read; one promoted from the delayed set was seen there; one a worker handed back was
 * seen in the first read. The queue is read from the head (index 0, where producers
 * push) toward the tail, so a push only shifts entries already read and a pop only
 * shortens the part still to read; the delayed set is read by score (a cursor on score
 * and rank), so promotions of due jobs do not shift it. Only a job making two moves
 * during one pass (popped, failed and delayed within it) can be missed, so a candidate
 * missing after one pass is only a suspect: a second full pass must miss it too before
 * a job is pushed. A duplicate would still be harmless (the guard acks it as stale).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "internal.h"
#include "janitor.h"
#include "log.h"
#include "sqlarray.h"

#define SWEEP_BATCH 500      /* rows per query (also in the SQL) */
#define SWEEP_PASSES 2       /* a candidate must be missing in this many passes */

const char JANITOR_SQL_ORPHANS[] =
    "SELECT e.id, e.region, e.retry_count, COALESCE((SELECT t.i - 1 FROM jsonb_array_elements("
    "CASE WHEN jsonb_typeof(j.jobspec_data->'questions') = 'array' "
    "THEN j.jobspec_data->'questions' ELSE '[]'::jsonb END) WITH ORDINALITY AS t(q, i) "
    "WHERE t.q = to_jsonb(e.question_id) LIMIT 1), 0) "
    "FROM executions e LEFT JOIN jobs j ON j.id = e.job_id "
    "WHERE e.status = 'retrying' AND e.retry_count BETWEEN 1 AND LEAST(e.max_retries, 1000) "
    "AND (e.last_retry_at IS NULL OR e.last_retry_at < now() - $1::bigint * interval '1 millisecond') "
    "AND e.id > $2::bigint "
    "ORDER BY e.id LIMIT 500";

/* Which of the suspects ($1 ids, $2 their attempts) are still open as they were read: a row
 * the drain finished (or a cancel restored, or the runner retried again) while the passes
 * ran is not an orphan. */
const char JANITOR_SQL_STILL_OPEN[] =
    "SELECT e.id FROM unnest($1::bigint[], $2::integer[]) AS c(id, attempt) "
    "JOIN executions e ON e.id = c.id "
    "WHERE e.status = 'retrying' AND e.retry_count = c.attempt "
    "AND (e.last_retry_at IS NULL OR e.last_retry_at < now() - $3::bigint * interval '1 millisecond')";

/* Whitespace between tokens as the job decoder skips it: any byte up to 0x20. */
static bool json_space(char c)
{
    return (unsigned char)c <= 0x20;
}

/* The number after `p` (": 123", ":\"123\""), or false. */
static bool id_after_key(const char *p, const char *end, int64_t *id)
{
    while (p < end && json_space(*p))
        p++;
    if (p == end || *p++ != ':')
        return false;
    while (p < end && json_space(*p))
        p++;
    if (p < end && *p == '"')
        p++;
    uint64_t n = 0; /* 19 digits fit */
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (++digits > 19)
            return false;
        n = n * 10 + (uint64_t)(*p++ - '0');
    }
    if (digits == 0 || n > (uint64_t)INT64_MAX)
        return false;
    *id = (int64_t)n;
    return true;
}

/*
 * The execution id of a job's text as the pages are read: the digits after the first
 * "execution_id" key that has them (whitespace around the colon, the number optionally
 * quoted, as the wire format allows), at most 19. Not a JSON parse: an entry that is not a
 * job gives no id or one no candidate has, and the worst a misread can do is keep a
 * candidate counted as present for one sweep. The pages are plain LRANGE and
 * ZRANGEBYSCORE reads and the ids are taken here: in a Lua script, turning 1,000 entries
 * into Lua strings alone costs about 1 ms of Redis's time a page, a plain LRANGE of them
 * 0.1–0.15 ms.
 */
bool janitor_entry_execution_id(const char *v, size_t len, int64_t *id)
{
    static const char key[] = "\"execution_id\"";
    const size_t klen = sizeof key - 1;
    const char *end = v + len;
    for (const char *p = v; (p = memchr(p, '"', (size_t)(end - p))) != NULL; p++) {
        if ((size_t)(end - p) < klen)
            return false;
        if (memcmp(p, key, klen) == 0 && id_after_key(p + klen, end, id))
            return true;
    }
    return false;
}

/* A row of the sweep: what its job needs, kept small (the job itself, with its fixed-size
 * fields, is built only for the few pushed): 5,000 candidates take about 0.3 MB. */
typedef struct candidate {
    int64_t id;
    int64_t question_index;
    int32_t attempt;
    int missing;  /* passes in which it was not seen */
    bool seen;    /* seen in the current pass */
    bool open;    /* still retrying at the same attempt after the passes (JANITOR_SQL_STILL_OPEN) */
    char *region; /* malloc'd */
} candidate_t;

typedef enum phase {
    PHASE_WORKERS,    /* reading {Q}:workers (before each processing-list read) */
    PHASE_PROCESSING, /* the workers' processing lists, one after the other, each... */
    PHASE_TAKEN,      /* ...followed by the taken hash of its worker */
    PHASE_DELAYED,
    PHASE_QUEUE,
    PHASE_DONE,
} phase_t;

typedef struct sweep {
    worker_t *w;
    candidate_t *items; /* sorted by id (the query's order) */
    size_t count, cap;
    int64_t cursor;     /* last id read */
    bool rows_ended;    /* the query returned fewer rows than a page */
    int pass;           /* 1..SWEEP_PASSES */
    int step;           /* 0: workers' jobs, 1: delayed, 2: queue, 3: workers' jobs again */
    phase_t phase;
    char **workers;
    size_t nworkers, worker;
    long long offset;   /* list index, or rank among entries of score `score` */
    char score[48];     /* delayed set: score cursor ("-inf" first); taken hash: HSCAN cursor */
    size_t unseen;      /* candidates not seen in this pass */
    size_t finished;    /* suspects whose row was no longer open after the passes */
    uint64_t pages;     /* Redis calls made */
} sweep_t;

static void scan_next(sweep_t *s);
static void query_rows(sweep_t *s);

static void free_workers(sweep_t *s)
{
    for (size_t i = 0; i < s->nworkers; i++)
        free(s->workers[i]);
    free(s->workers);
    s->workers = NULL;
    s->nworkers = s->worker = 0;
}

static void sweep_end(sweep_t *s)
{
    s->w->sweeping = false;
    s->w->sweep_state = NULL;
    free_workers(s);
    for (size_t k = 0; k < s->count; k++)
        free(s->items[k].region);
    free(s->items);
    free(s);
}

static candidate_t *find(sweep_t *s, int64_t id)
{
    size_t lo = 0, hi = s->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->items[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->count && s->items[lo].id == id ? &s->items[lo] : NULL;
}

/* Strikes the candidate whose job this page entry is. */
static void strike(sweep_t *s, const redisReply *r)
{
    int64_t id;
    if (r->type != REDIS_REPLY_STRING || !janitor_entry_execution_id(r->str, r->len, &id))
        return;
    candidate_t *c = find(s, id);
    if (c != NULL && !c->seen) {
        c->seen = true;
        s->unseen--;
    }
}

/* ------------------------------------------------------------------ the end */

static void push_missing(sweep_t *s)
{
    worker_t *w = s->w;
    size_t pushed = 0;
    for (size_t k = 0; k < s->count && w->queue != NULL; k++) {
        candidate_t *c = &s->items[k];
        if (c->missing < SWEEP_PASSES || !c->open)
            continue;
        char payload[1024];
        retryq_job_t job;
        retryq_error_t err;
        if (retryq_job_init(&job, c->id, c->region, c->question_index, c->attempt, &err) != RETRYQ_OK ||
            retryq_job_encode(&job, payload, sizeof payload) < 0)
            continue;
        log_event(LOG_LEVEL_WARN, c->id, c->attempt, "sweep.orphan",
                  "[RETRY] execution retrying with no job anywhere: enqueued again");
        queue_push(w->queue, payload, strlen(payload));
        pushed++;
    }
    w->metrics.orphans_total += pushed;
    /* The next sweep continues after these rows, or starts over once the end was seen. */
    w->sweep_cursor = s->rows_ended ? 0 : s->cursor;
    log_event(s->count > 0 ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG, 0, 0, "sweep.done",
              "orphan sweep: %zu candidate(s), %zu re-enqueued, %zu finished meanwhile, %" PRIu64
              " Redis page(s)%s",
              s->count, pushed, s->finished, s->pages, s->rows_ended ? "" : "; continuing next time");
    sweep_end(s);
}

static void on_still_open(void *arg, store_status_t status, const PGresult *res,
                          const char *sqlstate, const char *message)
{
    sweep_t *s = arg;
    if (status != STORE_OK) {
        log_warn("sweep.query",
                 "orphan sweep: the suspects' rows could not be read again (%s): %s; "
                 "trying next time",
                 sqlstate, message);
        sweep_end(s);
        return;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        candidate_t *c = find(s, strtoll(PQgetvalue(res, r, 0), NULL, 10));
        if (c != NULL)
            c->open = true;
    }
    for (size_t k = 0; k < s->count; k++)
        s->finished += s->items[k].missing >= SWEEP_PASSES && !s->items[k].open;
    push_missing(s);
}

/*
 * The suspects' rows read again after the passes: the candidates were read before them,
 * and a row the drain finishes meanwhile has its job acked, so it is missing from Redis
 * too. Without this check a sweep that overlaps a fast drain (it reads a long queue while
 * the oldest rows, the candidates, are being finished) pushed a stale job for nearly each
 * of its candidates. A row finished after this read still gets one; the guard acks it.
 */
static void confirm_suspects(sweep_t *s)
{
    sqlarray_t id_list, attempt_list;
    sqlarray_init(&id_list);
    sqlarray_init(&attempt_list);
    for (size_t k = 0; k < s->count; k++) {
        const candidate_t *c = &s->items[k];
        if (c->missing < SWEEP_PASSES)
            continue;
        sqlarray_int(&id_list, c->id);
        sqlarray_int(&attempt_list, c->attempt);
    }
    if (id_list.count == 0) {
        sqlarray_discard(&id_list);
        sqlarray_discard(&attempt_list);
        push_missing(s);
        return;
    }
    char *ids = sqlarray_finish(&id_list), *attempts = sqlarray_finish(&attempt_list);
    if (ids == NULL || attempts == NULL) {
        free(ids);
        free(attempts);
        sweep_end(s);
        return;
    }
    char age[24];
    snprintf(age, sizeof age, "%d", s->w->cfg.orphan_age_ms);
    const char *params[] = {ids, attempts, age};
    int rc = store_exec(s->w->store, s->w->sql.still_open, 3, params, on_still_open, s);
    free(ids);
    free(attempts);
    if (rc < 0)
        sweep_end(s);
}

/* One pass over Redis has ended: count the candidates it did not see. */
static void pass_done(sweep_t *s)
{
    size_t suspects = 0;
    for (size_t k = 0; k < s->count; k++) {
        candidate_t *c = &s->items[k];
        if (!c->seen && c->missing == s->pass - 1)
            c->missing++;
        if (c->missing == s->pass)
            suspects++;
        c->seen = false;
    }
    if (suspects == 0 || s->pass == SWEEP_PASSES) {
        confirm_suspects(s);
        return;
    }
    s->pass++;
    s->step = 0;
    s->phase = PHASE_WORKERS;
    /* Only the suspects still need to be looked for. */
    s->unseen = 0;
    for (size_t k = 0; k < s->count; k++) {
        if (s->items[k].missing == s->pass - 1)
            s->unseen++;
        else
            s->items[k].seen = true;
    }
    scan_next(s);
}

/* ------------------------------------------------------------------ Redis pages */

static void next_step(sweep_t *s)
{
    static const phase_t order[] = {PHASE_WORKERS, PHASE_DELAYED, PHASE_QUEUE, PHASE_WORKERS};
    free_workers(s);
    s->offset = 0;
    s->step++;
    s->phase = s->step < 4 ? order[s->step] : PHASE_DONE;
    snprintf(s->score, sizeof s->score, "-inf");
}

static void on_list_page(void *arg, const redisReply *r)
{
    sweep_t *s = arg;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        log_warn("sweep.redis", "orphan sweep: Redis did not answer a page; trying next time");
        sweep_end(s);
        return;
    }
    for (size_t i = 0; i < r->elements; i++)
        strike(s, r->element[i]);
    s->offset += (long long)r->elements;
    if (r->elements < (size_t)s->w->cfg.sweep_page) {
        if (s->phase == PHASE_PROCESSING) {
            s->phase = PHASE_TAKEN;
            snprintf(s->score, sizeof s->score, "0");
        } else {
            next_step(s);
        }
    }
    scan_next(s);
}

/* A page of a worker's taken hash: [cursor, [job, copies, ...]]. */
static void on_hash_page(void *arg, const redisReply *r)
{
    sweep_t *s = arg;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof s->score ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        log_warn("sweep.redis", "orphan sweep: Redis did not answer a page; trying next time");
        sweep_end(s);
        return;
    }
    const redisReply *kv = r->element[1];
    for (size_t i = 0; i < kv->elements; i += 2)
        strike(s, kv->element[i]);
    snprintf(s->score, sizeof s->score, "%s", r->element[0]->str);
    if (strcmp(s->score, "0") == 0) {
        s->offset = 0;
        if (++s->worker < s->nworkers)
            s->phase = PHASE_PROCESSING;
        else
            next_step(s);
    }
    scan_next(s);
}

static void on_zset_page(void *arg, const redisReply *r)
{
    sweep_t *s = arg;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
        log_warn("sweep.redis", "orphan sweep: Redis did not answer a page; trying next time");
        sweep_end(s);
        return;
    }
    size_t n = r->elements / 2;
    for (size_t i = 0; i < n; i++)
        strike(s, r->element[2 * i]);
    if (n < (size_t)s->w->cfg.sweep_page) {
        next_step(s);
    } else {
        /* Next page: from the last score, skipping the entries of that score already read. */
        const redisReply *last = r->element[r->elements - 1];
        size_t same = 0;
        for (size_t i = n; i > 0; i--) {
            const redisReply *sc = r->element[2 * i - 1];
            if (sc->len != last->len || memcmp(sc->str, last->str, last->len) != 0)
                break;
            same++;
        }
        if (last->len < sizeof s->score && strcmp(s->score, last->str) == 0) {
            s->offset += (long long)same;
        } else {
            snprintf(s->score, sizeof s->score, "%.*s", (int)last->len, last->str);
            s->offset = (long long)same;
        }
    }
    scan_next(s);
}

static void on_workers(void *arg, const redisReply *r)
{
    sweep_t *s = arg;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        log_warn("sweep.redis", "orphan sweep: Redis did not list the workers; trying next time");
        sweep_end(s);
        return;
    }
    free_workers(s);
    s->workers = calloc(r->elements + 1, sizeof *s->workers);
    if (s->workers == NULL) {
        sweep_end(s);
        return;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            (s->workers[s->nworkers] = strdup(r->element[i]->str)) != NULL)
            s->nworkers++;
    s->phase = PHASE_PROCESSING;
    if (s->nworkers == 0)
        next_step(s);
    scan_next(s);
}

/* Sends the next Redis read of the pass, or ends the pass. */
static void scan_next(sweep_t *s)
{
    worker_t *w = s->w;
    if (s->unseen == 0 || s->phase == PHASE_DONE) {
        pass_done(s);
        return;
    }
    if (w->queue == NULL || w->state != WORKER_RUNNING) {
        sweep_end(s);
        return;
    }
    s->pages++;
    char a[48], b[48];
    switch (s->phase) {
    case PHASE_WORKERS: {
        const char *argv[] = {"ZRANGE", w->keys.workers, "0", "-1"};
        queue_command(w->queue, 4, argv, on_workers, s);
        return;
    }
    case PHASE_PROCESSING:
    case PHASE_QUEUE: {
        char key[RETRYQ_MAX_QUEUE_NAME + 600];
        if (s->phase == PHASE_PROCESSING)
            snprintf(key, sizeof key, "%s%s", w->keys.processing_prefix, s->workers[s->worker]);
        else
            snprintf(key, sizeof key, "%s", w->keys.pending);
        snprintf(a, sizeof a, "%lld", s->offset);
        snprintf(b, sizeof b, "%lld", s->offset + w->cfg.sweep_page - 1);
        const char *argv[] = {"LRANGE", key, a, b};
        queue_command(w->queue, 4, argv, on_list_page, s);
        return;
    }
    case PHASE_TAKEN: {
        char key[RETRYQ_MAX_QUEUE_NAME + 600];
        if (retryq_keys_taken(&w->keys, s->workers[s->worker], key, sizeof key) < 0) {
            sweep_end(s);
            return;
        }
        snprintf(b, sizeof b, "%d", w->cfg.sweep_page);
        const char *argv[] = {"HSCAN", key, s->score, "COUNT", b};
        queue_command(w->queue, 5, argv, on_hash_page, s);
        return;
    }
    case PHASE_DELAYED: {
        snprintf(a, sizeof a, "%lld", s->offset);
        snprintf(b, sizeof b, "%d", w->cfg.sweep_page);
        const char *argv[] = {"ZRANGEBYSCORE", w->keys.delayed, s->score, "+inf",
                              "WITHSCORES",    "LIMIT",         a,        b};
        queue_command(w->queue, 8, argv, on_zset_page, s);
        return;
    }
    case PHASE_DONE:
        break;
    }
}

static void scan_start(sweep_t *s)
{
    if (s->count == 0) {
        push_missing(s);
        return;
    }
    s->pass = 1;
    s->step = 0;
    s->phase = PHASE_WORKERS;
    s->unseen = s->count;
    snprintf(s->score, sizeof s->score, "-inf");
    scan_next(s);
}

/* ------------------------------------------------------------------ rows */

static void on_candidates(void *arg, store_status_t status, const PGresult *res,
                          const char *sqlstate, const char *message)
{
    sweep_t *s = arg;
    if (status != STORE_OK) {
        log_warn("sweep.query", "orphan sweep query failed (%s): %s", sqlstate, message);
        sweep_end(s);
        return;
    }
    int rows = PQntuples(res);
    if (s->count + (size_t)rows > s->cap) {
        size_t cap = s->count + (size_t)rows;
        candidate_t *grown = realloc(s->items, cap * sizeof *grown);
        if (grown == NULL) {
            sweep_end(s);
            return;
        }
        s->items = grown;
        s->cap = cap;
    }
    for (int r = 0; r < rows; r++) {
        candidate_t *c = &s->items[s->count];
        retryq_job_t job;
        retryq_error_t err;
        int64_t id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        s->cursor = id;
        if (retryq_job_init(&job, id, PQgetvalue(res, r, 1), strtoll(PQgetvalue(res, r, 3), NULL, 10),
                            (int32_t)strtol(PQgetvalue(res, r, 2), NULL, 10), &err) != RETRYQ_OK) {
            log_warn("sweep.skip", "execution %" PRId64 " cannot be re-enqueued: %s", id, err.message);
            continue;
        }
        *c = (candidate_t){.id = id,
                           .question_index = job.question_index,
                           .attempt = job.retry_attempt,
                           .region = strdup(job.region)};
        if (c->region == NULL) {
            sweep_end(s);
            return;
        }
        s->count++;
    }
    s->rows_ended = rows < SWEEP_BATCH;
    if (!s->rows_ended && s->count < (size_t)s->w->cfg.sweep_max_rows)
        query_rows(s);
    else
        scan_start(s);
}

static void query_rows(sweep_t *s)
{
    worker_t *w = s->w;
    char age[24], cursor[24];
    snprintf(age, sizeof age, "%d", w->cfg.orphan_age_ms);
    snprintf(cursor, sizeof cursor, "%" PRId64, s->cursor);
    const char *params[] = {age, cursor};
    if (store_exec(w->store, w->sql.orphans, 2, params, on_candidates, s) < 0)
        sweep_end(s);
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
    s->cursor = w->sweep_cursor;
    w->sweep_state = s;
    query_rows(s);
}

void janitor_sweep(worker_t *w)
{
    /* Every worker trims the cancel tombstones (one cheap ZREMRANGEBYSCORE; no lock). */
    if (queue_ready(w->queue))
        queue_trim_cancelled(w->queue, JANITOR_TOMBSTONE_RETENTION_MS);
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
