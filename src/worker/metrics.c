/*
 * The worker's figures (see metrics.h) and the /metrics body in the Prometheus text
 * exposition format 0.0.4: every family has one HELP and one TYPE line, label values
 * are escaped (backslash, double quote, newline), counters end in _total, the histogram
 * has cumulative buckets ending in le="+Inf" plus _sum and _count. Writing goes straight
 * into the response evbuffer: no allocation of its own.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "clock.h"
#include "internal.h"
#include "job.h"
#include "metrics.h"
#include "text.h"
#include "worker.h"

static const double BUCKET_BOUNDS[METRICS_BUCKETS - 1] = {0.1, 0.25, 0.5, 1, 2.5, 5,
                                                          10,  20,   30,  45, 60};

static const char *const FAILURE_NAMES[METRICS_FAIL_COUNT] = {
    "failed", "timeout", "transient_exhausted", "bad_job", "poison"};

static const char *const DEAD_NAMES[METRICS_DEAD_COUNT] = {
    "invalid_payload", "region_mismatch", "not_found", "bad_spec",
    "invalid_question_index", "poison", "attempt_over_max_retries", "other"};

const char *metrics_failure_name(metrics_failure_t f)
{
    return f < METRICS_FAIL_COUNT ? FAILURE_NAMES[f] : "failed";
}

const char *metrics_dead_name(metrics_dead_t d)
{
    return d < METRICS_DEAD_COUNT ? DEAD_NAMES[d] : "other";
}

/* ------------------------------------------------------------------ recording */

void metrics_note_error(metrics_t *m, int64_t execution_id, int32_t attempt, const char *kind,
                        const char *text)
{
    metrics_error_t *e = &m->errors[m->errors_next];
    m->errors_next = (m->errors_next + 1) % METRICS_ERRORS;
    m->errors_total++;
    e->at_ms = rq_now_ms();
    e->execution_id = execution_id;
    e->attempt = attempt;
    rq_copy(e->kind, sizeof e->kind, kind != NULL ? kind : "error");
    text_copy(e->text, sizeof e->text, text != NULL ? text : "");
}

const metrics_error_t *metrics_recent_error(const metrics_t *m, unsigned i)
{
    if (i >= METRICS_ERRORS || (uint64_t)i >= m->errors_total)
        return NULL;
    unsigned idx = (m->errors_next + METRICS_ERRORS - 1 - i) % METRICS_ERRORS;
    return &m->errors[idx];
}

void metrics_router_request(metrics_t *m, const router_result_t *r)
{
    if (r->timed_out)
        m->router_timeout++;
    else if (r->http_status >= 100 && r->http_status < 600)
        m->router_http[r->http_status]++;
    else
        m->router_network++;
}

void metrics_outcome(metrics_t *m, int64_t execution_id, int32_t attempt, bool success,
                     metrics_failure_t failure, bool dead_follows, const char *error, double call_sec)
{
    if (call_sec >= 0) {
        size_t b = 0;
        while (b < METRICS_BUCKETS - 1 && call_sec > BUCKET_BOUNDS[b])
            b++;
        m->buckets[b]++;
        m->duration_count++;
        m->duration_sum += call_sec;
    }
    if (success) {
        m->success_total++;
        return;
    }
    if (failure >= METRICS_FAIL_COUNT)
        failure = METRICS_FAIL_FAILED;
    m->failures[failure]++;
    m->failure_total++;
    if (!dead_follows) /* else the dead-letter note that follows says it */
        metrics_note_error(m, execution_id, attempt, metrics_failure_name(failure),
                           error != NULL ? error : "");
}

void metrics_dead_letter(metrics_t *m, int64_t execution_id, int32_t attempt, metrics_dead_t why,
                         const char *reason)
{
    m->dead[why < METRICS_DEAD_COUNT ? why : METRICS_DEAD_OTHER]++;
    m->dead_total++;
    metrics_note_error(m, execution_id, attempt, "dead", reason);
}

void metrics_roll(metrics_t *m)
{
    m->slot = (m->slot + 1) % METRICS_SLOTS;
    m->slot_success[m->slot] = (uint32_t)(m->success_total - m->rolled_success);
    m->slot_failure[m->slot] = (uint32_t)(m->failure_total - m->rolled_failure);
    m->rolled_success = m->success_total;
    m->rolled_failure = m->failure_total;
    if (m->slots_used < METRICS_SLOTS)
        m->slots_used++;
}

void metrics_rates(const metrics_t *m, unsigned slots, uint64_t *success, uint64_t *failure)
{
    uint64_t s = 0, f = 0;
    if (slots > m->slots_used)
        slots = m->slots_used;
    for (unsigned i = 0; i < slots; i++) {
        unsigned idx = (m->slot + METRICS_SLOTS - i) % METRICS_SLOTS;
        s += m->slot_success[idx];
        f += m->slot_failure[idx];
    }
    *success = s;
    *failure = f;
}

/* FNV-1a: enough to tell whether the job at the head of the queue is still the same. */
static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The age of the next job: from its enqueued_at on Redis's clock when it has one (jobs
 * from libretryq); the runner's four-field jobs carry none, so their age counts from
 * when this worker first saw them at the head (a lower bound). */
static void set_oldest(metrics_t *m, const queue_depths_t *d, int64_t now_mono_ms)
{
    if (d->oldest == NULL) {
        m->oldest_age_sec = 0;
        m->oldest_hash = 0;
        m->oldest_from_enqueued_at = false;
        return;
    }
    uint64_t h = hash_bytes(d->oldest, d->oldest_len);
    if (h != m->oldest_hash || m->oldest_first_seen_ms == 0) {
        m->oldest_hash = h;
        m->oldest_first_seen_ms = now_mono_ms;
    }
    retryq_job_t job;
    retryq_error_t err;
    int64_t at = -1;
    if (retryq_job_decode(d->oldest, d->oldest_len, RETRYQ_MAX_ATTEMPT, &job, &err) == RETRYQ_OK &&
        job.enqueued_at[0] != '\0')
        at = rq_parse_rfc3339(job.enqueued_at);
    m->oldest_from_enqueued_at = at >= 0;
    int64_t age_ms = at >= 0 ? d->now_ms - at : now_mono_ms - m->oldest_first_seen_ms;
    m->oldest_age_sec = age_ms > 0 ? (double)age_ms / 1000.0 : 0;
}

void metrics_set_depths(metrics_t *m, const queue_depths_t *d, int64_t now_mono_ms)
{
    m->depths_known = true;
    m->depths_at_ms = now_mono_ms;
    m->pending = d->pending;
    m->processing = d->processing;
    m->delayed = d->delayed;
    m->dead_depth = d->dead;
    m->workers = d->workers;
    m->workers_live = d->workers_live;
    set_oldest(m, d, now_mono_ms);
}

/* ------------------------------------------------------------------ exposition */

void metrics_write_label_value(struct evbuffer *out, const char *value)
{
    const char *run = value;
    for (const char *p = value; *p != '\0'; p++) {
        const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
        if (esc == NULL)
            continue;
        evbuffer_add(out, run, (size_t)(p - run));
        evbuffer_add(out, esc, 2);
        run = p + 1;
    }
    evbuffer_add(out, run, strlen(run));
}

void metrics_write_number(struct evbuffer *out, double value)
{
    if (isnan(value))
        evbuffer_add_printf(out, "NaN");
    else if (isinf(value))
        evbuffer_add_printf(out, value > 0 ? "+Inf" : "-Inf");
    else if (value == floor(value) && fabs(value) < 1e15)
        evbuffer_add_printf(out, "%.0f", value);
    else {
        /* The shortest of %.15g / %.17g that reads back as the same double. */
        char buf[32];
        snprintf(buf, sizeof buf, "%.15g", value);
        if (strtod(buf, NULL) != value)
            snprintf(buf, sizeof buf, "%.17g", value);
        evbuffer_add(out, buf, strlen(buf));
    }
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct evbuffer *out, const char *name, double value)
{
    evbuffer_add_printf(out, "%s ", name);
    metrics_write_number(out, value);
    evbuffer_add(out, "\n", 1);
}

static void sample1(struct evbuffer *out, const char *name, const char *label, const char *value,
                    double v)
{
    evbuffer_add_printf(out, "%s{%s=\"", name, label);
    metrics_write_label_value(out, value);
    evbuffer_add(out, "\"} ", 3);
    metrics_write_number(out, v);
    evbuffer_add(out, "\n", 1);
}

static void counter(struct evbuffer *out, const char *name, const char *help, uint64_t value)
{
    family(out, name, "counter", help);
    sample(out, name, (double)value);
}

static void gauge(struct evbuffer *out, const char *name, const char *help, double value)
{
    family(out, name, "gauge", help);
    sample(out, name, value);
}

static void write_histogram(struct evbuffer *out, const metrics_t *m)
{
    const char *name = "retry_duration_seconds";
    family(out, name, "histogram",
           "Router call duration of each recorded outcome that made a router call.");
    uint64_t cumulative = 0;
    for (size_t b = 0; b < METRICS_BUCKETS; b++) {
        cumulative += m->buckets[b];
        evbuffer_add_printf(out, "%s_bucket{le=\"", name);
        metrics_write_number(out, b < METRICS_BUCKETS - 1 ? BUCKET_BOUNDS[b] : INFINITY);
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)cumulative);
    }
    evbuffer_add_printf(out, "%s_sum ", name);
    metrics_write_number(out, m->duration_sum);
    evbuffer_add_printf(out, "\n%s_count %llu\n", name, (unsigned long long)m->duration_count);
}

static void write_router(struct evbuffer *out, const metrics_t *m)
{
    family(out, "retry_router_requests_total", "counter",
           "Router calls finished, by HTTP status, or \"timeout\" / \"network\" without an answer.");
    char code[8];
    for (int s = 100; s < 600; s++) {
        if (m->router_http[s] == 0)
            continue;
        snprintf(code, sizeof code, "%d", s);
        sample1(out, "retry_router_requests_total", "code", code, (double)m->router_http[s]);
    }
    sample1(out, "retry_router_requests_total", "code", "timeout", (double)m->router_timeout);
    sample1(out, "retry_router_requests_total", "code", "network", (double)m->router_network);
}

/* A queue-level sample: {queue="Q"} plus an optional state label. Every worker of a
 * queue reports the same figures; dashboards aggregate with max by (queue, state). */
static void queue_sample(struct evbuffer *out, const worker_t *w, const char *name,
                         const char *state, double v)
{
    evbuffer_add_printf(out, "%s{queue=\"", name);
    metrics_write_label_value(out, w->keys.pending);
    if (state != NULL)
        evbuffer_add_printf(out, "\",state=\"%s", state);
    evbuffer_add(out, "\"} ", 3);
    metrics_write_number(out, v);
    evbuffer_add(out, "\n", 1);
}

static void write_queue(struct evbuffer *out, const worker_t *w)
{
    const metrics_t *m = &w->metrics;
    bool known = m->depths_known;
    family(out, "retry_queue_depth", "gauge",
           "Jobs in the queue's Redis keys by state (read every 5 s; see retry_queue_stats_age_seconds).");
    if (known) {
        queue_sample(out, w, "retry_queue_depth", "pending", (double)m->pending);
        queue_sample(out, w, "retry_queue_depth", "processing", (double)m->processing);
        queue_sample(out, w, "retry_queue_depth", "delayed", (double)m->delayed);
        queue_sample(out, w, "retry_queue_depth", "dead", (double)m->dead_depth);
    }
    family(out, "retry_queue_oldest_age_seconds", "gauge",
           "Age of the next job to be taken (0 when the queue is empty).");
    if (known)
        queue_sample(out, w, "retry_queue_oldest_age_seconds", NULL, m->oldest_age_sec);
    family(out, "retry_queue_workers", "gauge",
           "Workers registered in the queue's worker set, and those whose heartbeat is within the lease.");
    if (known) {
        queue_sample(out, w, "retry_queue_workers", "registered", (double)m->workers);
        queue_sample(out, w, "retry_queue_workers", "live", (double)m->workers_live);
    }
    family(out, "retry_queue_paused", "gauge",
           "1 while the queue is paused (retryq pause): no job taken, no router call started.");
    if (w->pause.known)
        queue_sample(out, w, "retry_queue_paused", NULL, pause_is_paused(w) ? 1 : 0);
    family(out, "retry_queue_stats_age_seconds", "gauge",
           "Seconds since the queue figures were last read from Redis.");
    if (known)
        queue_sample(out, w, "retry_queue_stats_age_seconds", NULL,
                     (double)(clock_mono_ms() - m->depths_at_ms) / 1000.0);
}

/* ------------------------------------------------------------------ flow control */

typedef enum flow_family {
    FLOW_PAUSED,
    FLOW_WAITING,
    FLOW_PERMITS,
    FLOW_BREAKER,
    FLOW_PAUSES,
    FLOW_FAMILIES
} flow_family_t;

static const struct {
    const char *name, *type, *help;
} flow_families[FLOW_FAMILIES] = {
    {"retry_flow_paused", "gauge", "1 while this worker knows the key (MODEL/REGION) to be paused."},
    {"retry_flow_waiting", "gauge",
     "Jobs of the key this worker parked in the delayed set whose due time has not come."},
    {"retry_flow_permits_in_use", "gauge", "Concurrency permits of the key this worker holds."},
    {"retry_flow_breaker_state", "gauge",
     "This worker's circuit breaker of the key: 0 closed, 1 open, 2 half-open."},
    {"retry_flow_pauses_total", "counter",
     "Pauses of the key this worker began or learned of, by cause."},
};

typedef struct flow_writer {
    struct evbuffer *out;
    flow_family_t family;
} flow_writer_t;

static void flow_sample(void *arg, const flow_figures_t *k)
{
    flow_writer_t *fw = arg;
    const char *name = flow_families[fw->family].name;
    double v = 0;
    switch (fw->family) {
    case FLOW_PAUSED: v = k->paused ? 1 : 0; break;
    case FLOW_WAITING: v = (double)k->waiting; break;
    case FLOW_PERMITS: v = (double)k->permits; break;
    case FLOW_BREAKER: v = (double)k->breaker; break;
    case FLOW_PAUSES:
        for (int c = 0; c < FLOW_CAUSES; c++) {
            evbuffer_add_printf(fw->out, "%s{key=\"", name);
            metrics_write_label_value(fw->out, k->key);
            evbuffer_add_printf(fw->out, "\",cause=\"%s\"} %llu\n", flow_cause_name((flow_cause_t)c),
                                (unsigned long long)k->pauses[c]);
        }
        return;
    case FLOW_FAMILIES: return;
    }
    sample1(fw->out, name, "key", k->key, v);
}

/* The per-key families, for at most FLOW_METRICS_KEYS keys (those with something to
 * show first), so a stream of odd model ids cannot grow /metrics without bound. */
static void write_flow(struct evbuffer *out, const worker_t *w)
{
    flow_writer_t fw = {.out = out};
    size_t tracked = 0;
    for (int f = 0; f < FLOW_FAMILIES; f++) {
        fw.family = (flow_family_t)f;
        family(out, flow_families[f].name, flow_families[f].type, flow_families[f].help);
        if (w->flow != NULL)
            tracked = flow_each_key(w->flow, FLOW_METRICS_KEYS, flow_sample, &fw);
    }
    gauge(out, "retry_flow_keys", "Flow keys this worker tracks (at most 200 are exported per family).",
          (double)tracked);
    counter(out, "retry_flow_parked_total",
            "Jobs parked by flow control (delayed set, delivery count kept, no attempt used).",
            w->metrics.parked_total);
}

void metrics_write(const worker_t *w, struct evbuffer *out)
{
    const metrics_t *m = &w->metrics;

    counter(out, "retry_attempts_total", "Router calls started for retries.", m->attempts_total);
    counter(out, "retry_success_total", "Retries recorded as completed.", m->success_total);
    family(out, "retry_failure_total", "counter", "Retries recorded as not successful, by reason.");
    for (size_t f = 0; f < METRICS_FAIL_COUNT; f++)
        sample1(out, "retry_failure_total", "reason", FAILURE_NAMES[f], (double)m->failures[f]);
    write_histogram(out, m);
    write_queue(out, w);
    gauge(out, "retry_inflight", "Jobs in flight in this worker.", (double)w->inflight);
    gauge(out, "retry_inflight_max", "Most jobs in flight at once since start (at most the "
          "concurrency).", (double)w->inflight_max);
    gauge(out, "retry_concurrency_limit", "Most jobs this worker runs at once.",
          (double)w->cfg.concurrency);
    write_router(out, m);
    counter(out, "retry_stale_total",
            "Jobs acknowledged without effect (superseded, already recorded or duplicate).",
            m->stale_total);
    counter(out, "retry_jobs_cancelled_total",
            "Cancelled jobs dropped when taken from the queue (retryq cancel), not run.",
            m->cancelled_total);
    family(out, "retry_dead_letter_total", "counter", "Jobs moved to the dead list, by reason class.");
    for (size_t d = 0; d < METRICS_DEAD_COUNT; d++)
        sample1(out, "retry_dead_letter_total", "reason", DEAD_NAMES[d], (double)m->dead[d]);
    counter(out, "retry_delayed_total", "Transient failures sent to the delayed set.",
            m->delayed_total);
    counter(out, "retry_taken_total", "Jobs taken from the queue.", m->taken_total);
    counter(out, "retry_requeued_total", "Jobs handed back to the queue unfinished.",
            m->requeued_total);
    write_flow(out, w);
    counter(out, "retry_store_retries_total", "Database steps retried after an outage.",
            m->store_retries_total);
    counter(out, "retry_orphans_requeued_total",
            "Executions found retrying with no job anywhere and enqueued again.", m->orphans_total);
    family(out, "retry_db_batches_total", "counter",
           "Batched load and record statements answered (jobs sent again one by one after a refusal are not counted).");
    sample1(out, "retry_db_batches_total", "statement", "load", (double)m->db_batches_total[0]);
    sample1(out, "retry_db_batches_total", "statement", "record", (double)m->db_batches_total[1]);
    family(out, "retry_db_batch_jobs_total", "counter",
           "Jobs carried by those statements (divide by retry_db_batches_total for the batch size).");
    sample1(out, "retry_db_batch_jobs_total", "statement", "load", (double)m->db_batch_jobs_total[0]);
    sample1(out, "retry_db_batch_jobs_total", "statement", "record", (double)m->db_batch_jobs_total[1]);
    counter(out, "retry_db_batches_refused_total",
            "Batches the database refused as a whole; their jobs were sent again one by one.",
            m->db_batches_refused_total);
    counter(out, "retry_redis_reconnects_total", "Redis connections re-opened.",
            queue_reconnects(w->queue));
    counter(out, "retry_redis_failovers_total",
            "Redis primary changes followed (Sentinel: the sentinels named another server; "
            "Cluster: a MOVED or the nodes named another owner of the queue's slot).",
            queue_failovers(w->queue));
    gauge(out, "retry_redis_unsent_operations", "Redis writes (acks, moves) not yet confirmed.",
          (double)queue_unsent(w->queue));
    gauge(out, "retry_redis_up", "1 when both Redis connections are ready.",
          queue_ready(w->queue) ? 1 : 0);
    gauge(out, "retry_database_up", "1 when a PostgreSQL connection is ready.",
          store_connected(w->store) ? 1 : 0);
    gauge(out, "retry_worker_running", "1 while the worker takes jobs (0 starting or draining).",
          w->state == WORKER_RUNNING ? 1 : 0);
    gauge(out, "retry_jobs_held", "Jobs this worker holds in its processing list while the queue is paused.",
          (double)job_held_count(w));
    family(out, "retry_worker_info", "gauge", "Build and identity of this worker (always 1).");
    evbuffer_add_printf(out, "retry_worker_info{version=\"");
    metrics_write_label_value(out, RETRYQ_VERSION_STRING);
    evbuffer_add_printf(out, "\",worker=\"");
    metrics_write_label_value(out, w->id);
    evbuffer_add_printf(out, "\",queue=\"");
    metrics_write_label_value(out, w->keys.pending);
    evbuffer_add_printf(out, "\"} 1\n");
    gauge(out, "process_start_time_seconds", "Start time of the process since the epoch in seconds.",
          (double)m->start_wall_ms / 1000.0);
}
