/*
 * libretryq — the public API of retryq.
 *
 * retryq makes "retry this failed question" durable for the benchmark runner: a retry
 * is a small JSON job on a Redis list that retryq-worker pops reliably and re-runs
 * through the inference router. This header is everything a producer needs:
 *
 *   - the job type and its wire format (encode / decode / validate, DESIGN §2);
 *   - the Redis key names of a queue (§3);
 *   - parsing of redis:// and unix:// URLs;
 *   - a synchronous client that enqueues a job, performs the runner's whole retry
 *     request (`retryq_submit`), reads queue statistics, applies migrations, manages
 *     the dead list, pauses and resumes the whole queue (`retryq_pause`) and pauses,
 *     resumes and lists flow-control keys;
 *   - the retry by filter (`retryq_submit_filter`) and the retry sets it records
 *     (`retryq_sets_list`, `retryq_set_show`);
 *   - cancelling retries (`retryq_cancel`, `retryq_set_cancel`).
 *
 * Conventions: functions return RETRYQ_OK (0) or a negative retryq_code; when an
 * error struct is passed it receives a human sentence. Nothing here keeps global
 * state; a client is not thread-safe (use one per thread). Strings passed in are
 * copied; memory returned is freed by the matching *_free function.
 */
#ifndef RETRYQ_RETRYQ_H
#define RETRYQ_RETRYQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RETRYQ_VERSION_MAJOR 0
#define RETRYQ_VERSION_MINOR 1
#define RETRYQ_VERSION_PATCH 0
#define RETRYQ_VERSION_STRING "0.1.0"

#define RETRYQ_DEFAULT_QUEUE "retry_queue"
#define RETRYQ_DEFAULT_MAX_RETRIES 3
#define RETRYQ_MAX_PAYLOAD (64 * 1024) /* bytes of one job's JSON text */
#define RETRYQ_MAX_REGION 128          /* bytes of a region name */
#define RETRYQ_MAX_QUEUE_NAME 200      /* bytes of a queue name */
#define RETRYQ_MAX_JOB_ID 64           /* bytes of the optional "id" field */
#define RETRYQ_MAX_TIMESTAMP 40        /* bytes of the optional "enqueued_at" field */
#define RETRYQ_MAX_ATTEMPT 1000        /* hard bound on retry_attempt and delivery */

#if defined(__GNUC__)
#define RETRYQ_API __attribute__((visibility("default")))
#else
#define RETRYQ_API
#endif

#if defined(__GNUC__)
#define RETRYQ_MUST_CHECK __attribute__((warn_unused_result))
#else
#define RETRYQ_MUST_CHECK
#endif

/* Result codes. 0 is success; every failure is negative and has its own meaning. */
typedef enum retryq_code {
    RETRYQ_OK = 0,
    RETRYQ_ERR_INVALID = -1,          /* invalid input (payload, argument, URL) */
    RETRYQ_ERR_NOT_FOUND = -2,        /* no execution with that id and region */
    RETRYQ_ERR_NOT_RETRYABLE = -3,    /* the execution's status is not failed/timeout/error */
    RETRYQ_ERR_MAX_RETRIES = -4,      /* retry_count >= max_retries */
    RETRYQ_ERR_REDIS = -5,            /* Redis unreachable or refused the command */
    RETRYQ_ERR_DATABASE = -6,         /* PostgreSQL unreachable or refused the statement */
    RETRYQ_ERR_NOMEM = -7,            /* out of memory */
    RETRYQ_ERR_TOO_LARGE = -8,        /* payload over RETRYQ_MAX_PAYLOAD */
    RETRYQ_ERR_SCHEMA = -9,           /* schema not migrated (e.g. 'retrying' not allowed) */
} retryq_code;

/* A human sentence about the last failure; `code` repeats the return value. */
typedef struct retryq_error {
    int code;
    char message[512];
} retryq_error_t;

/* Static name of a code: "ok", "invalid", "not_found", ... */
RETRYQ_API const char *retryq_code_name(int code);
/* The library's version string (RETRYQ_VERSION_STRING of the built library). */
RETRYQ_API const char *retryq_version(void);

/* ---------------------------------------------------------------- the job (§2) */

/*
 * One retry job. Fixed size, owns no heap memory. The four required fields are
 * exactly what the runner's Go code pushes with a plain LPUSH once it adopts retryq (its
 * API starts an in-process goroutine today; src/go/retryq is the adoption path); the
 * rest are optional extensions.
 */
typedef struct retryq_job {
    int64_t execution_id;                      /* > 0 */
    char region[RETRYQ_MAX_REGION + 1];        /* 1..128 bytes, no control characters */
    int64_t question_index;                    /* >= 0 */
    int32_t retry_attempt;                     /* 1..max retries */
    int32_t delivery;                          /* deliveries so far; 0 when absent */
    char enqueued_at[RETRYQ_MAX_TIMESTAMP + 1]; /* RFC 3339 or "" when absent */
    char id[RETRYQ_MAX_JOB_ID + 1];            /* "<execution_id>:<retry_attempt>" or "" */
} retryq_job_t;

/*
 * Fills `job` with the required fields and sets `id` and `enqueued_at` (now, UTC).
 * Returns RETRYQ_ERR_INVALID (with a reason) when a field breaks the rules.
 */
RETRYQ_API int retryq_job_init(retryq_job_t *job, int64_t execution_id, const char *region,
                    int64_t question_index, int32_t retry_attempt,
                    retryq_error_t *err) RETRYQ_MUST_CHECK;

/*
 * Parses and validates one payload of `len` bytes (not necessarily NUL-terminated).
 * Accepts the runner's four-field form unchanged; `execution_id` may also be a
 * decimal string; unknown fields are ignored. `max_retries` bounds retry_attempt
 * (pass 0 for RETRYQ_DEFAULT_MAX_RETRIES). On rejection returns RETRYQ_ERR_INVALID
 * or RETRYQ_ERR_TOO_LARGE and puts the reason in err->message (e.g.
 * "execution_id: must be a positive integer").
 */
RETRYQ_API int retryq_job_decode(const char *payload, size_t len, int max_retries,
                      retryq_job_t *job, retryq_error_t *err) RETRYQ_MUST_CHECK;

/* Checks the rules of §2 on a filled struct (decode calls it). */
RETRYQ_API int retryq_job_validate(const retryq_job_t *job, int max_retries,
                        retryq_error_t *err) RETRYQ_MUST_CHECK;

/*
 * Writes the job as compact JSON into buf (NUL-terminated). Returns the length
 * written (without the NUL) or a negative code when buf is too small or the job is
 * invalid. Optional fields are written only when set (delivery only when > 0).
 */
RETRYQ_API int retryq_job_encode(const retryq_job_t *job, char *buf, size_t cap) RETRYQ_MUST_CHECK;

/* ----------------------------------------------------------------- keys (§3) */

/* The Redis keys of one queue. The braces make a cluster hash tag. */
typedef struct retryq_keys {
    char pending[RETRYQ_MAX_QUEUE_NAME + 1];         /* Q */
    char processing_prefix[RETRYQ_MAX_QUEUE_NAME + 32]; /* {Q}:processing: */
    char workers[RETRYQ_MAX_QUEUE_NAME + 32];        /* {Q}:workers */
    char delayed[RETRYQ_MAX_QUEUE_NAME + 32];        /* {Q}:delayed */
    char dead[RETRYQ_MAX_QUEUE_NAME + 32];           /* {Q}:dead */
    char flow_paused[RETRYQ_MAX_QUEUE_NAME + 32];    /* {Q}:flow:paused (ZSET, index of pauses) */
    char flow_breakers[RETRYQ_MAX_QUEUE_NAME + 32];  /* {Q}:flow:breakers (HASH) */
    char flow_keys[RETRYQ_MAX_QUEUE_NAME + 32];      /* {Q}:flow:keys (ZSET, keys in use) */
    char paused[RETRYQ_MAX_QUEUE_NAME + 32];         /* {Q}:paused (HASH, the queue's pause) */
    char cancelled[RETRYQ_MAX_QUEUE_NAME + 32];      /* {Q}:cancelled (ZSET, tombstones
                                                        "<execution_id>:<attempt>" -> ms) */
} retryq_keys_t;

/* Queue names are 1..200 bytes of printable ASCII without braces or spaces. */
RETRYQ_API int retryq_keys_init(retryq_keys_t *keys, const char *queue, retryq_error_t *err) RETRYQ_MUST_CHECK;
/* Writes "{Q}:processing:<worker_id>" into buf; returns length or negative. The list a
 * blocking pop moves a job into, until the worker's check moves it into the worker's
 * taken hash. */
RETRYQ_API int retryq_keys_processing(const retryq_keys_t *keys, const char *worker_id, char *buf,
                           size_t cap) RETRYQ_MUST_CHECK;
/* Writes "{Q}:taken:<worker_id>" into buf; returns length or negative. The hash of the jobs
 * a worker holds: field = the job's exact text, value = how many copies of it. */
RETRYQ_API int retryq_keys_taken(const retryq_keys_t *keys, const char *worker_id, char *buf,
                                 size_t cap) RETRYQ_MUST_CHECK;

/* The per-key Redis keys of flow control: {Q}:flow:pause:<key>, {Q}:flow:permits:<key>
 * and {Q}:flow:bucket:<key> (<key> is a flow key, MODEL/REGION; see below). */
typedef enum retryq_flow_kind {
    RETRYQ_FLOW_PAUSE = 0,
    RETRYQ_FLOW_PERMITS,
    RETRYQ_FLOW_BUCKET,
} retryq_flow_kind_t;
/* Writes the name of that key into buf; returns its length, RETRYQ_ERR_INVALID for a
 * missing argument or RETRYQ_ERR_TOO_LARGE when buf is too small. The flow key is not
 * validated here (retryq_flow_key_validate does that). */
RETRYQ_API int retryq_keys_flow(const retryq_keys_t *keys, retryq_flow_kind_t kind,
                                const char *flow_key, char *buf, size_t cap) RETRYQ_MUST_CHECK;

/* ---------------------------------------------------------------- Redis URLs */

/*
 * redis://[[user]:password@]host[:port][/db]  (host may be [v6]; port default 6379)
 * unix://[[user]:password@]/path/to/socket[?db=N]
 * redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/MASTER_NAME[/db]
 *   (sentinel ports default to 26379; user and password are the data nodes' own, the
 *   sentinels' password comes from RETRYQ_REDIS_SENTINEL_PASSWORD[_FILE])
 * redis+cluster://[[user]:password@]host1[:port1][,host2[:port2]...]
 *   (seed nodes of a Redis Cluster, ports default to 6379; no database: Cluster has only 0)
 * Percent-escapes in user and password are decoded.
 */
#define RETRYQ_REDIS_MAX_ENDPOINTS 8
typedef struct retryq_redis_endpoint {
    char host[256];
    int port;
} retryq_redis_endpoint_t;

typedef struct retryq_redis_url {
    bool is_unix;
    char host[256];     /* redis+sentinel://: the first sentinel until a primary is found */
    int port;
    char path[108];
    char user[128];     /* "" when absent: AUTH <password> */
    char password[256]; /* "" when absent: no AUTH */
    int db;             /* 0 when absent */
    /* redis+sentinel:// (and the endpoint list of redis+cluster://) */
    bool is_sentinel;
    char master[128];                 /* the master name the sentinels monitor */
    int endpoint_count;               /* sentinels or seed nodes listed, 0 for the others */
    retryq_redis_endpoint_t endpoints[RETRYQ_REDIS_MAX_ENDPOINTS];
    char sentinel_password[256];      /* never part of the URL text; "" = no AUTH */
    bool is_cluster;                  /* redis+cluster://: endpoints are the seed nodes */
} retryq_redis_url_t;

RETRYQ_API int retryq_redis_url_parse(const char *url, retryq_redis_url_t *out,
                           retryq_error_t *err) RETRYQ_MUST_CHECK;
/* Writes the URL with the password replaced by "***" (for logs). */
RETRYQ_API void retryq_redis_url_redact(const char *url, char *buf, size_t cap);

/* -------------------------------------------------------------- the client */

typedef struct retryq_options {
    const char *redis_url;     /* NULL: $RETRYQ_REDIS_URL or redis://127.0.0.1:6379 */
    const char *database_url;  /* NULL: $RETRYQ_DATABASE_URL (libpq conninfo or URI) */
    const char *queue;         /* NULL: $RETRYQ_QUEUE or "retry_queue" */
    int connect_timeout_ms;    /* 0: 5000 */
    int command_timeout_ms;    /* 0: 5000 */
} retryq_options_t;

/* Opaque: one Redis connection and one PostgreSQL connection, opened when first needed. */
typedef struct retryq_client retryq_client_t;

/* Returns NULL with err filled when the options are invalid (nothing is connected yet). */
RETRYQ_API retryq_client_t *retryq_client_new(const retryq_options_t *opts, retryq_error_t *err);
RETRYQ_API void retryq_client_free(retryq_client_t *client);
RETRYQ_API const retryq_keys_t *retryq_client_keys(const retryq_client_t *client);

/* LPUSH the encoded job onto the queue. RETRYQ_ERR_REDIS when Redis is unavailable. */
RETRYQ_API int retryq_enqueue(retryq_client_t *client, const retryq_job_t *job,
                   retryq_error_t *err) RETRYQ_MUST_CHECK;
/* LPUSH a raw payload as given (for tools and tests; it is not validated). */
RETRYQ_API int retryq_enqueue_raw(retryq_client_t *client, const char *payload, size_t len,
                       retryq_error_t *err) RETRYQ_MUST_CHECK;

/*
 * Pushes `n` jobs with few round trips: valid jobs go 1,000 to one LPUSH, several LPUSHes
 * pipelined; the jobs keep their order (the first given is taken first). `codes`
 * (optional, n entries) receives each job's result: RETRYQ_OK when queued, its validation
 * code when invalid (it is not sent), RETRYQ_ERR_REDIS when its batch was refused or the
 * connection broke (with replies outstanding such a job may have been queued all the
 * same; pushing it again is harmless: the worker records an attempt once). `queued`
 * (optional) receives how many were queued. Returns RETRYQ_OK when all were queued, else
 * the first failure's code, with err saying how many failed and why the first did.
 */
RETRYQ_API int retryq_enqueue_many(retryq_client_t *client, const retryq_job_t *jobs, size_t n,
                                   int *codes, size_t *queued, retryq_error_t *err) RETRYQ_MUST_CHECK;

/* What a submit did. */
typedef enum retryq_submit_status {
    RETRYQ_SUBMIT_QUEUED = 0,            /* committed and pushed */
    RETRYQ_SUBMIT_COMMITTED_NOT_QUEUED,  /* committed, LPUSH failed: the orphan sweep re-enqueues */
    RETRYQ_SUBMIT_ALREADY_COMPLETED,     /* status completed: output holds the stored result */
    RETRYQ_SUBMIT_IN_FLIGHT,             /* running/processing/retrying/queued/created */
} retryq_submit_status_t;

typedef struct retryq_submit_result {
    retryq_submit_status_t status;
    int32_t attempt;        /* the retry_attempt of the new job (QUEUED / NOT_QUEUED) */
    int32_t retry_count;    /* after the change */
    int32_t max_retries;
    char execution_status[51]; /* status found (refusals) or 'retrying' */
    char *output_data;      /* ALREADY_COMPLETED: the stored output_data JSON (malloc'd) */
    retryq_job_t job;       /* the job that was (or should have been) pushed */
    /* What the runner's 200 response carries, from the row (whenever it was found): */
    char job_id[256];       /* the job spec's id (jobs.jobspec_id), "" when the row has no job */
    char model_id[51];      /* executions.model_id */
    char question_id[256];  /* executions.question_id ("" when NULL: see has_question_id) */
    bool has_question_id;
} retryq_submit_result_t;

/*
 * The runner's retry request, done safely: in one transaction lock the execution by
 * id AND region; completed -> ALREADY_COMPLETED with the stored output; in flight ->
 * IN_FLIGHT; only failed/timeout/error are retryable (else RETRYQ_ERR_NOT_RETRYABLE);
 * retry_count < max_retries (else RETRYQ_ERR_MAX_RETRIES); then retry_count + 1,
 * last_retry_at = now(), status 'retrying', one {attempt,timestamp,status:"retrying"}
 * entry appended to retry_history (with previous_status, previous_last_retry_at and
 * original_error_filled: what retryq_cancel restores), original_error = COALESCE(original_error,
 * output_data->>'error') (the runner's failure text, before a retry replaces it);
 * commit; then LPUSH.
 *
 * When the commit succeeded but the LPUSH failed, the function returns RETRYQ_ERR_REDIS
 * and result->status is RETRYQ_SUBMIT_COMMITTED_NOT_QUEUED: the execution is already
 * 'retrying', so calling submit again is refused as in flight. The worker's orphan
 * sweep re-enqueues such executions; the caller may also push result->job itself.
 * Free the result with retryq_submit_result_free.
 */
RETRYQ_API int retryq_submit(retryq_client_t *client, int64_t execution_id, const char *region,
                  int64_t question_index, retryq_submit_result_t *result,
                  retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_submit_result_free(retryq_submit_result_t *result);

/* ----------------------------------------------------- retry by filter (bulk) */

/* Statuses a retry by filter selects (retryq_filter_t.statuses); 0 means all three. */
#define RETRYQ_STATUS_FAILED 0x1u
#define RETRYQ_STATUS_TIMEOUT 0x2u
#define RETRYQ_STATUS_ERROR 0x4u
#define RETRYQ_BULK_CHUNK 500 /* rows per transaction of retryq_submit_filter (the default) */

/*
 * Which executions a retry by filter selects. Every field set narrows the selection; job
 * or since_ms is required. Strings compare exactly with the stored value (a region is
 * stored as the runner wrote it: 'us-east', or 'US' on old rows).
 */
typedef struct retryq_filter {
    const char *job;        /* jobs.jobspec_id; NULL: any job */
    const char *model;      /* executions.model_id; NULL: any */
    const char *region;     /* executions.region; NULL: any */
    unsigned statuses;      /* RETRYQ_STATUS_* bits; 0: failed, timeout and error */
    const char *error_code; /* output_data's failure.code, else its error_code (ROUTER_TIMEOUT,
                               ROUTER_HTTP_503, bad_job_spec, ...); NULL: any */
    int64_t since_ms;       /* failed at or after this time (ms since the epoch); 0: no bound */
    int64_t until_ms;       /* failed before this time; 0: no bound */
} retryq_filter_t;
/* "Failed at" is coalesce(completed_at, created_at): the runner writes each execution
 * with completed_at when it ends, and the worker sets completed_at with every outcome. */

/* Why a selected execution was not retried (retryq_bulk_result_t.skipped). */
typedef enum retryq_skip_reason {
    RETRYQ_SKIP_MAX_RETRIES = 0, /* "at_max_retries": retry_count >= its max_retries */
    RETRYQ_SKIP_IN_FLIGHT,       /* "in_flight": retrying or running by the time it was locked */
    RETRYQ_SKIP_LOCKED,          /* "locked": another transaction (a concurrent single retry)
                                    held the row; that one decides, it is never doubled */
    RETRYQ_SKIP_NOT_RETRYABLE,   /* "not_retryable": no longer failed/timeout/error */
    RETRYQ_SKIP_NO_QUESTION,     /* "no_question_id": an old batch row, whose question index
                                    only the caller knows: use retryq_submit */
    RETRYQ_SKIP_COUNT
} retryq_skip_reason_t;

/* Static name of a skip reason ("at_max_retries", ...), "unknown" when out of range. */
RETRYQ_API const char *retryq_skip_reason_name(int reason);

/* One selected execution, as found, and what became of it. */
typedef struct retryq_bulk_row {
    int64_t execution_id;
    char region[RETRYQ_MAX_REGION + 1];
    char model_id[51];
    char status[51];           /* before the retry */
    int32_t retry_count;       /* before the retry */
    int32_t max_retries;
    char error_code[128];      /* "" when the output has none */
    char question_id[256];     /* "" when NULL */
    int64_t question_index;    /* the job's; -1 when unknown (no question_id) */
    char failed_at[RETRYQ_MAX_TIMESTAMP + 1]; /* coalesce(completed_at, created_at), as stored */
    char verdict[24];          /* "retry" (retried, or would be in a dry run) or a skip reason */
    int32_t attempt;           /* the new attempt when retried, else 0 */
} retryq_bulk_row_t;

/* What a retry by filter did (so far, in the progress callback). */
typedef struct retryq_bulk_result {
    bool dry_run;
    int64_t set_id;            /* the retry set created; 0 when none (dry run, nothing retried) */
    int64_t selected;          /* executions that matched the filter (up to the limit) */
    int64_t retried;           /* committed as 'retrying' (a dry run: would be) */
    int64_t queued;            /* of those, pushed to Redis */
    int64_t not_queued;        /* committed but not pushed: COMMITTED_NOT_QUEUED, the worker's
                                  orphan sweep enqueues them */
    int64_t skipped[RETRYQ_SKIP_COUNT];
    int64_t chunks;            /* transactions run */
    retryq_bulk_row_t *sample; /* the first `sample` selected rows (malloc'd) */
    size_t sample_count;
} retryq_bulk_result_t;

typedef void (*retryq_bulk_progress_fn)(const retryq_bulk_result_t *so_far, void *privdata);

typedef struct retryq_bulk_options {
    int64_t limit;              /* retry at most this many (the first by execution id); 0: all */
    const char *set_name;       /* the set's name; NULL: none */
    const char *created_by;     /* who asked; NULL: the OS user */
    bool dry_run;               /* count and sample only: nothing is locked, changed or pushed */
    size_t sample;              /* rows kept in result->sample; 0: 20 */
    size_t chunk;               /* rows per transaction, 1..5000; 0: RETRYQ_BULK_CHUNK */
    retryq_bulk_progress_fn progress; /* optional: called after each chunk */
    void *progress_data;
} retryq_bulk_options_t;

/*
 * Retries every execution that `filter` selects, with the rules of retryq_submit (status
 * failed, timeout or error; retry_count below the row's own max_retries; not in flight)
 * and its very UPDATE (both are SQL functions of retryq's migration 0013, which the Go
 * package runs too). Works in execution id order, in transactions of `chunk` rows: each
 * selects, locks the rows no one else holds (FOR UPDATE SKIP LOCKED, so it never waits
 * for a concurrent single retry and never doubles one: that one keeps its row, counted
 * "locked"; a single retry of a row in the chunk waits for the chunk's commit),
 * judges them as they are now, marks the retryable ones 'retrying', records them in one
 * retry set (created with the first retry: retryq_sets), commits, and then pushes that
 * chunk's jobs with retryq_enqueue_many. The question_index of a job is the position of
 * the row's question_id in its job spec's questions.
 *
 * Returns RETRYQ_OK when every selected row was retried and queued or skipped (see
 * result->skipped). When Redis refused a chunk's push it stops there and returns
 * RETRYQ_ERR_REDIS: those rows are committed (result->not_queued, like submit's
 * COMMITTED_NOT_QUEUED) and the worker's orphan sweep enqueues them; run the same filter
 * again later for the rest. RETRYQ_ERR_INVALID for a bad filter (neither job nor since,
 * a bad status, a bad option), RETRYQ_ERR_NOT_FOUND for an unknown job,
 * RETRYQ_ERR_SCHEMA when migration 0013 is missing, RETRYQ_ERR_DATABASE when
 * PostgreSQL fails (chunks committed before stay committed and are in result). Free the
 * result with retryq_bulk_result_free, whatever the return value.
 */
RETRYQ_API int retryq_submit_filter(retryq_client_t *client, const retryq_filter_t *filter,
                                    const retryq_bulk_options_t *opts, retryq_bulk_result_t *result,
                                    retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_bulk_result_free(retryq_bulk_result_t *result);

/*
 * A point in time as `retryq retry --since/--until` take it: an RFC 3339 time
 * ("2026-11-29T08:00:00Z"; fractions and offsets allowed) or a duration before `now_ms`
 * ("90s", "15m", "2h", "1d", "1w", or several: "1h30m"). Writes milliseconds since the
 * epoch; RETRYQ_ERR_INVALID (with why) when the text is neither.
 */
RETRYQ_API int retryq_parse_time(const char *text, int64_t now_ms, int64_t *epoch_ms,
                                 retryq_error_t *err) RETRYQ_MUST_CHECK;

/* ---------------------------------------------------------------- retry sets */

/*
 * Where the members of a set stand, computed from their executions (PostgreSQL is the
 * truth): a member is (execution, attempt). open: still 'retrying' at that attempt;
 * completed / failed (failed, timeout, error) at that attempt; superseded: a later retry
 * took over (retry_count > attempt); cancelled; other: the row is gone or holds a state
 * no retry leads to.
 */
typedef struct retryq_set_progress {
    int64_t total, open, completed, failed, superseded, cancelled, other;
    int64_t finished_last_minute; /* outcomes written in the last minute (completed_at) */
    double percent;               /* members no longer open, in % of total (100 when empty) */
    int64_t eta_ms;               /* open / the last minute's rate; 0 when done, -1 unknown */
} retryq_set_progress_t;

/* One retry set. Strings are malloc'd (freed by retryq_sets_free / retryq_set_detail_free). */
typedef struct retryq_set {
    int64_t id;
    char *name;                   /* NULL when it has none */
    char *filter;                 /* the filter as JSON text */
    char *created_by;
    char created_at[RETRYQ_MAX_TIMESTAMP + 1]; /* RFC 3339, UTC */
    retryq_set_progress_t progress;
} retryq_set_t;

/* The newest `limit` sets (0: 50), newest first, with their progress. */
RETRYQ_API int retryq_sets_list(retryq_client_t *client, size_t limit, retryq_set_t **sets,
                                size_t *n, retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_sets_free(retryq_set_t *sets, size_t n);

/* Failed members of a set by the error code of their outcome ("" when it has none). */
typedef struct retryq_set_code_count {
    char *error_code;
    int64_t failed;
} retryq_set_code_count_t;

/* The members of one model in one region. */
typedef struct retryq_set_slice {
    char *model_id;
    char *region;
    retryq_set_progress_t progress; /* counts only (no percent or ETA of its own) */
} retryq_set_slice_t;

/* A member still open. */
typedef struct retryq_set_open_member {
    int64_t execution_id;
    char region[RETRYQ_MAX_REGION + 1];
    char model_id[51];
    int32_t attempt;
    char last_retry_at[RETRYQ_MAX_TIMESTAMP + 1]; /* RFC 3339, UTC; "" when NULL */
} retryq_set_open_member_t;

typedef struct retryq_set_detail {
    retryq_set_t set;
    retryq_set_code_count_t *codes;  /* most frequent first */
    size_t code_count;
    retryq_set_slice_t *slices;      /* by model, then region */
    size_t slice_count;
    int64_t tokens_in, tokens_out;   /* summed over completed members whose output has usage */
    int64_t with_usage;              /* how many of them have it */
    retryq_set_open_member_t *open;  /* the first `open_limit` open members, by execution id */
    size_t open_count;
} retryq_set_detail_t;

/* One set in detail; RETRYQ_ERR_NOT_FOUND when there is no set `id`. `open_limit` 0
 * means 50. Free with retryq_set_detail_free (also after a failure). */
RETRYQ_API int retryq_set_show(retryq_client_t *client, int64_t id, size_t open_limit,
                               retryq_set_detail_t *detail, retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_set_detail_free(retryq_set_detail_t *detail);

/* ------------------------------------------------------- pause the queue */

/*
 * Pausing the queue stops every worker from taking jobs and from starting router calls:
 * within a second of retryq_pause returning no worker starts a call, a worker started
 * while the queue is paused takes nothing, and the jobs a worker already holds wait in
 * its processing list. Calls already made finish and record their outcomes. Delayed jobs
 * keep being promoted, heartbeats, lease recovery and the orphan sweep keep running.
 *
 * The pause is the hash {Q}:paused: reason, by, since_ms (Redis's clock, TIME in the
 * script). It has no expiry: only retryq_resume ends it.
 */
#define RETRYQ_MAX_PAUSE_REASON 200 /* bytes of a pause's reason */
#define RETRYQ_MAX_PAUSE_BY 255     /* bytes of who paused */

/* Fixed size, owns no heap memory. Text longer than a field is cut (never inside a UTF-8
 * sequence); a field missing from the hash is "" (since_ms 0, age_ms -1). */
typedef struct retryq_pause_state {
    bool paused;
    char reason[RETRYQ_MAX_PAUSE_REASON + 1];
    char by[RETRYQ_MAX_PAUSE_BY + 1];         /* "user@host" unless the caller named someone */
    int64_t since_ms;                         /* Redis clock, ms since the epoch */
    int64_t age_ms;                           /* Redis's time when read minus since_ms, >= 0 */
} retryq_pause_state_t;

/*
 * Pauses the queue for every worker. `reason` (NULL or "": none) and `by` (NULL or "":
 * the OS user and this host's name, "user@host") are at most RETRYQ_MAX_PAUSE_REASON and
 * RETRYQ_MAX_PAUSE_BY bytes of UTF-8 without control characters. One script: when the
 * queue is already paused that pause stays as it is (its reason, by and since) and
 * `*applied` is false. `applied` and `in_place` (the pause in force after the call) are
 * optional. RETRYQ_ERR_INVALID for a bad reason or by; RETRYQ_ERR_REDIS when Redis fails.
 */
RETRYQ_API int retryq_pause(retryq_client_t *client, const char *reason, const char *by, bool *applied,
                            retryq_pause_state_t *in_place, retryq_error_t *err) RETRYQ_MUST_CHECK;

/* Ends the pause (one script: read and DEL). A queue that is not paused is not an error:
 * `*was_paused` is false. `deleted` receives the pause that ended. Both are optional. */
RETRYQ_API int retryq_resume(retryq_client_t *client, bool *was_paused, retryq_pause_state_t *deleted,
                             retryq_error_t *err) RETRYQ_MUST_CHECK;

/* Reads the pause: out->paused is false (and the rest empty) when the queue runs. */
RETRYQ_API int retryq_pause_get(retryq_client_t *client, retryq_pause_state_t *out,
                                retryq_error_t *err) RETRYQ_MUST_CHECK;
/* ------------------------------------------------------------------ cancel */

/* What a cancel did with one retry (execution, attempt). */
typedef enum retryq_cancel_outcome {
    RETRYQ_CANCEL_CANCELLED = 0, /* its job will never run; the row is as before the retry */
    RETRYQ_CANCEL_RUNNING,       /* a worker holds the job: it finishes normally */
    RETRYQ_CANCEL_FINISHED,      /* not open: the row holds an outcome, a later retry or
                                    an earlier cancel (nothing was done) */
} retryq_cancel_outcome_t;

typedef struct retryq_cancel_item {
    int64_t execution_id;
    char region[RETRYQ_MAX_REGION + 1];
    int32_t attempt; /* the retry's attempt (retry_count while it was open) */
    retryq_cancel_outcome_t outcome;
    char status[51]; /* CANCELLED: the status restored; otherwise as found */
} retryq_cancel_item_t;

typedef struct retryq_cancel_result {
    int64_t cancelled, running, finished; /* items by outcome */
    retryq_cancel_item_t *items;          /* malloc'd, `count` entries */
    size_t count;
} retryq_cancel_result_t;

/*
 * Cancels the open retry of one execution (by id AND region, as submit). A job no worker
 * has taken never runs: Redis records a tombstone "<execution_id>:<attempt>" in
 * {Q}:cancelled that the worker's pop respects, atomically with looking for the job in
 * every worker's processing list (found there: RUNNING, it finishes normally). Then the
 * row is put back as it was before the retry (retryq_cancel_restore, migration 0014):
 * status, retry_count = attempt - 1 (the unrun attempt does not count against
 * max_retries), last_retry_at, original_error, output_data untouched, and one
 * {"attempt":N,"status":"cancelled","timestamp":...} entry appended to retry_history.
 * A row that is not 'retrying' is FINISHED (RETRYQ_OK, nothing changes).
 * RETRYQ_ERR_NOT_FOUND when no such execution; RETRYQ_ERR_REDIS / RETRYQ_ERR_DATABASE when a
 * step fails (a failed restore takes its tombstones back: the retry goes on). Free the
 * result with retryq_cancel_result_free (also after a failure).
 */
RETRYQ_API int retryq_cancel(retryq_client_t *client, int64_t execution_id, const char *region,
                             retryq_cancel_result_t *result, retryq_error_t *err) RETRYQ_MUST_CHECK;

/*
 * The same for every member of retry set `id`, in chunks of 200 members (one Redis script
 * and one transaction each). Members not open are FINISHED. RETRYQ_ERR_NOT_FOUND when there
 * is no set `id`. On a failure in a later chunk the result holds what the chunks before
 * did (they stay cancelled) and the code says why it stopped.
 */
RETRYQ_API int retryq_set_cancel(retryq_client_t *client, int64_t id, retryq_cancel_result_t *result,
                                 retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_cancel_result_free(retryq_cancel_result_t *result);

/* One live or dead worker from {Q}:workers. */
typedef struct retryq_worker_info {
    char id[256];
    int64_t heartbeat_age_ms; /* by Redis's clock */
    int64_t inflight;         /* jobs it holds: its processing list and taken hash */
} retryq_worker_info_t;

typedef struct retryq_stats {
    int64_t pending;                  /* LLEN Q */
    int64_t processing;               /* held: {Q}:processing:* + {Q}:taken:* */
    int64_t delayed;                  /* ZCARD {Q}:delayed */
    int64_t dead;                     /* LLEN {Q}:dead */
    int64_t oldest_pending_age_ms;    /* from the oldest job's enqueued_at; -1 unknown */
    size_t worker_count;
    retryq_worker_info_t *workers;    /* malloc'd array, worker_count entries */
    retryq_pause_state_t pause;       /* the queue's pause; pause.paused false when it runs */
} retryq_stats_t;

RETRYQ_API int retryq_stats(retryq_client_t *client, retryq_stats_t *out, retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_stats_free(retryq_stats_t *stats);

/*
 * Applies retryq's own migrations (embedded in the library) in order, each in its own
 * transaction, and records them in retryq_schema_migrations (golang-migrate's format:
 * version bigint primary key, dirty boolean). `target` < 0 means the latest; a target
 * below the current version runs the down migrations. `applied` (optional) receives
 * the number of steps run. Safe to run twice.
 */
RETRYQ_API int retryq_migrate(retryq_client_t *client, int64_t target, int *applied,
                   retryq_error_t *err) RETRYQ_MUST_CHECK;
/* The current recorded version (0 when none) and whether it is dirty. */
RETRYQ_API int retryq_migrate_version(retryq_client_t *client, int64_t *version, bool *dirty,
                           retryq_error_t *err) RETRYQ_MUST_CHECK;

/* ----------------------------------------------------------- the dead list */

/*
 * One entry of the dead list {Q}:dead, as the worker writes it:
 * {"job":"<original payload text>","reason":"...","at":"RFC 3339","worker":"<id>"}.
 * "job" keeps the payload only up to its first NUL byte. A payload larger than 64 KiB
 * (RETRYQ_MAX_PAYLOAD; never a valid job) is stored cut: "job" holds only its first
 * RETRYQ_MAX_PAYLOAD bytes (a byte count, so the cut may split a UTF-8 sequence), and
 * right after it the entry has "job_bytes": the payload's full size in bytes, as a JSON
 * number; smaller payloads have no "job_bytes". No field below holds job_bytes (read it
 * from `raw`). `raw` is always the stored text. When that text is not a JSON object with
 * a string "job", every other field is NULL; otherwise `job` is set and `reason`, `at`
 * and `worker` are each NULL when missing or not a string. All strings are malloc'd and
 * freed by retryq_dead_entries_free.
 */
typedef struct retryq_dead_entry {
    char *job;
    char *reason;
    char *at;
    char *worker;
    char *raw;
} retryq_dead_entry_t;

/*
 * Reads `count` entries of the dead list from index `start` (LRANGE; index 0 is the
 * newest entry); `count` < 0 reads to the end. `*entries` receives a malloc'd array of
 * `*n` entries (NULL when *n is 0), freed with retryq_dead_entries_free.
 */
RETRYQ_API int retryq_dead_list(retryq_client_t *client, int64_t start, int64_t count,
                     retryq_dead_entry_t **entries, size_t *n, retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_dead_entries_free(retryq_dead_entry_t *entries, size_t n);

/*
 * Moves dead entries back to the head of the queue (RPUSH: the next job taken). The job
 * is decoded and re-encoded with its delivery count reset to 0, so a job that was
 * dead-lettered after too many deliveries gets a fresh set; fields retryq does not know
 * are dropped. Each move is one Lua script that removes the exact stored text (LREM), so
 * an entry pushed meanwhile can never be moved in its place.
 *
 * `index` >= 0 moves the entry at that index (0 = newest, as retryq_dead_list counts
 * when the call starts): RETRYQ_ERR_NOT_FOUND when there is none or it left the list
 * meanwhile; RETRYQ_ERR_INVALID ("entry N holds an invalid job: <reason>") when its job
 * is not a valid job, which stays in the dead list. `index` == -1 moves every entry
 * holding a valid job, oldest first (so the most recently dead job ends nearest the
 * head) and leaves the others, counted in `*skipped`; entries that arrive while it runs
 * are left for the next call. `moved` and `skipped` are optional.
 */
RETRYQ_API int retryq_dead_requeue(retryq_client_t *client, int64_t index, int64_t *moved,
                        int64_t *skipped, retryq_error_t *err) RETRYQ_MUST_CHECK;

/* Deletes the dead list (atomically: LLEN + DEL in one script); `removed` (optional)
 * receives the number of entries it held. */
RETRYQ_API int retryq_dead_purge(retryq_client_t *client, int64_t *removed,
                      retryq_error_t *err) RETRYQ_MUST_CHECK;

/* ---------------------------------------------------------- flow control */

/*
 * Flow control (issue 14) stops the calls to one flow key, "MODEL/REGION": the model id of
 * an execution and the region the worker sends as region_preference. A model id may hold
 * '/', a region never does: a key text splits at its last '/'. While a key is paused, the
 * workers park its jobs in the delayed set without using an attempt. The workers pause a
 * key themselves (Retry-After, rate-limit headers, an open circuit breaker); an operator
 * pauses and resumes one with the functions below (`retryq flow pause|resume`).
 *
 * The pause of a key is {Q}:flow:pause:<key>, a JSON document {"cause", "reason",
 * "until_ms", "by"} with an expiry at until_ms, indexed in the sorted set {Q}:flow:paused
 * (score until_ms). Times are Redis's clock (TIME, in the scripts), never this host's.
 * A pause never shortens a pause that ends later; only a resume deletes one.
 */
#define RETRYQ_MAX_FLOW_KEY 255     /* bytes of a flow key, MODEL/REGION */
#define RETRYQ_MAX_FLOW_REASON 200  /* bytes of a pause's reason */
#define RETRYQ_MAX_FLOW_CURSOR 72   /* bytes of a retryq_flow_list cursor, NUL included */
#define RETRYQ_FLOW_PAGE_MAX 1000   /* entries read from each index by one retryq_flow_list */
/* The longest pause, 30 days; it is also what "until resumed" (duration 0) means. */
#define RETRYQ_FLOW_PAUSE_MAX_MS (INT64_C(30) * 24 * 3600 * 1000)

/*
 * Checks a flow key: 3..RETRYQ_MAX_FLOW_KEY bytes of valid UTF-8 without control
 * characters, a '/' with a model before the last one and a region (1..RETRYQ_MAX_REGION
 * bytes) after it, and no '*' (wildcards belong in the worker's configuration, a pause
 * names one key). RETRYQ_ERR_INVALID with the reason, e.g. "flow key 'gpt-4': expected
 * MODEL/REGION (e.g. llama3.2-1b/us-east)".
 */
RETRYQ_API int retryq_flow_key_validate(const char *key, retryq_error_t *err) RETRYQ_MUST_CHECK;

/* A pause as stored in {Q}:flow:pause:<key>. Fixed size, owns no heap memory. Text longer
 * than a field is cut (never inside a UTF-8 sequence); a field missing from the document
 * is "" (until_ms 0 and left_ms -1 when until_ms is missing or unreadable). */
typedef struct retryq_flow_pause {
    char key[RETRYQ_MAX_FLOW_KEY + 1];
    char cause[32];                          /* "retry_after", "ratelimit", "breaker", "operator" */
    char reason[RETRYQ_MAX_FLOW_REASON + 1];
    char by[256];                            /* a worker id, or "operator" */
    int64_t until_ms;                        /* Redis clock, ms since the epoch */
    int64_t left_ms;                         /* until_ms minus Redis's time when read, >= 0 */
} retryq_flow_pause_t;

/*
 * Pauses `key` for every worker for `duration_ms` (1..RETRYQ_FLOW_PAUSE_MAX_MS; 0 = until
 * resumed, which is the longest pause) with cause "operator", by "operator" and `reason`
 * (NULL or "": none; at most RETRYQ_MAX_FLOW_REASON bytes of UTF-8 without control
 * characters). One Lua script computes until_ms from Redis's TIME and compares it with the
 * pause in place: when that one ends at the same time or later it stays as it is and
 * `*applied` is false; otherwise the new pause replaces it. `applied` and `in_place` (the
 * pause in force after the call, the new one or the one kept) are optional.
 * RETRYQ_ERR_INVALID for a bad key, duration or reason; RETRYQ_ERR_REDIS when Redis fails.
 */
RETRYQ_API int retryq_flow_pause(retryq_client_t *client, const char *key, int64_t duration_ms,
                                 const char *reason, bool *applied, retryq_flow_pause_t *in_place,
                                 retryq_error_t *err) RETRYQ_MUST_CHECK;

/*
 * Deletes the pause of `key`, whatever its cause, and its member of {Q}:flow:paused (one
 * script). A key that is not paused is not an error: `*was_paused` is false. `deleted`
 * receives the pause that was deleted (when there was one). Both are optional. Deleting a
 * breaker's pause lets the other workers call the key at once; the worker whose breaker
 * opened keeps its own state until its probe call.
 */
RETRYQ_API int retryq_flow_resume(retryq_client_t *client, const char *key, bool *was_paused,
                                  retryq_flow_pause_t *deleted, retryq_error_t *err) RETRYQ_MUST_CHECK;

/* A circuit breaker's state, as a worker published it in {Q}:flow:breakers. */
typedef struct retryq_flow_breaker {
    char key[RETRYQ_MAX_FLOW_KEY + 1];
    char state[16];       /* "open", "half_open", "closed"; "" when unreadable */
    int64_t until_ms;     /* end of the open state (Redis clock); 0 when absent */
    int64_t left_ms;      /* until_ms minus Redis's time when read; 0 when past or absent */
    char worker[256];     /* the worker that published it */
    int64_t failures;     /* transient failures in its window; -1 when absent */
    int64_t calls;        /* calls in its window; -1 when absent */
} retryq_flow_breaker_t;

/* A key the workers used ({Q}:flow:keys) and its concurrency permits in use. */
typedef struct retryq_flow_permits {
    char key[RETRYQ_MAX_FLOW_KEY + 1];
    int64_t in_use;       /* members of {Q}:flow:permits:<key> whose lease has not expired */
    int64_t last_used_ms; /* when a worker last used the key (Redis clock) */
} retryq_flow_permits_t;

/* One page of retryq_flow_list. The arrays are malloc'd (NULL when empty) and freed by
 * retryq_flow_list_free. */
typedef struct retryq_flow_list {
    int64_t now_ms;                   /* Redis's clock when the page was read */
    retryq_flow_pause_t *pauses;      /* paused keys (a live pause key exists) */
    size_t pause_count;
    retryq_flow_breaker_t *breakers;  /* every published breaker, closed ones too */
    size_t breaker_count;
    retryq_flow_permits_t *keys;      /* keys in use, with their permits */
    size_t key_count;
    char next[RETRYQ_MAX_FLOW_CURSOR]; /* the cursor of the next page; "0" after the last */
} retryq_flow_list_t;

/*
 * Reads one page of the flow-control state: from each of the three indexes ({Q}:flow:paused,
 * {Q}:flow:breakers, {Q}:flow:keys) one ZSCAN/HSCAN step with COUNT `limit` (0 or more
 * than RETRYQ_FLOW_PAGE_MAX: RETRYQ_FLOW_PAGE_MAX), then one MGET of those pauses and one
 * script counting those keys' live permits. Nothing else is read: no KEYS, no SCAN of the
 * keyspace. Redis returns about `limit` entries per index (a small index whole). Start
 * with `cursor` NULL or "0" and call again with out->next until it is "0". As with SCAN, a
 * key that stays for the whole iteration is returned at least once (possibly twice: merge
 * by key); one that comes or goes meanwhile may or may not be. Pause members whose time
 * is past, or whose pause key is gone, are left out. RETRYQ_ERR_INVALID for a malformed
 * cursor. Free the page with retryq_flow_list_free (also after a failure: it is then empty).
 */
RETRYQ_API int retryq_flow_list(retryq_client_t *client, const char *cursor, size_t limit,
                                retryq_flow_list_t *out, retryq_error_t *err) RETRYQ_MUST_CHECK;
RETRYQ_API void retryq_flow_list_free(retryq_flow_list_t *list);

#ifdef __cplusplus
}
#endif
#endif
