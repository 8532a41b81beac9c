/*
 * The status page (see status_page.h). Built straight into the response evbuffer from the
 * worker's memory: no allocation, no Redis or PostgreSQL round trip. Every piece of text
 * that did not come from this file (worker id, error messages, reasons) goes through
 * status_page_escape.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "clock.h"
#include "http.h"
#include "internal.h"
#include "job.h"
#include "metrics.h"
#include "page_sets.h"
#include "status_page.h"
#include "worker.h"

#define SPARK_W 600
#define SPARK_H 60

void status_page_escape(struct evbuffer *out, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0, run = 0;
    while (i < len) {
        const char *entity = NULL;
        size_t n = rq_utf8_sequence(p + i, len - i, NULL);
        if (n == 1) {
            switch (p[i]) {
            case '&': entity = "&amp;"; break;
            case '<': entity = "&lt;"; break;
            case '>': entity = "&gt;"; break;
            case '"': entity = "&quot;"; break;
            case '\'': entity = "&#39;"; break;
            default:
                if ((p[i] < 0x20 && p[i] != '\t' && p[i] != '\n') || p[i] == 0x7f)
                    entity = "\xEF\xBF\xBD";
            }
        } else if (n == 0) {
            entity = "\xEF\xBF\xBD";
            n = 1;
        }
        if (entity == NULL) {
            i += n;
            continue;
        }
        evbuffer_add(out, text + run, i - run);
        evbuffer_add(out, entity, strlen(entity));
        i += n;
        run = i;
    }
    evbuffer_add(out, text + run, len - run);
}

static void esc(struct evbuffer *out, const char *text)
{
    status_page_escape(out, text, strlen(text));
}

/* "3d04h", "1h02m", "4m05s", "6.2s" */
static void duration(struct evbuffer *out, double sec)
{
    long s = (long)sec;
    if (sec < 60)
        evbuffer_add_printf(out, "%.1fs", sec);
    else if (s < 3600)
        evbuffer_add_printf(out, "%ldm%02lds", s / 60, s % 60);
    else if (s < 86400)
        evbuffer_add_printf(out, "%ldh%02ldm", s / 3600, s % 3600 / 60);
    else
        evbuffer_add_printf(out, "%ldd%02ldh", s / 86400, s % 86400 / 3600);
}

static void row(struct evbuffer *out, const char *label, const char *id, uint64_t value,
                const char *note)
{
    evbuffer_add_printf(out, "<tr><th>%s</th><td class=\"num\" id=\"%s\">%" PRIu64 "</td><td>%s</td></tr>\n",
                        label, id, value, note);
}

static const char STYLE[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}"
    "h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin:1.2em 0 .4em}"
    ".meta{color:#555;margin:.3em 0 1em}.ok{color:#176b2c;font-weight:600}"
    ".bad{color:#b3261e;font-weight:600}table{border-collapse:collapse;background:#fff}"
    "th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".grid{display:flex;flex-wrap:wrap;gap:2em}.err td{font-family:monospace;font-size:12px}"
    ".err td.msg{max-width:60em;word-break:break-word}svg{background:#fff;border:1px solid #ddd}"
    "footer{margin-top:2em;color:#777;font-size:12px}"
    "#paused{background:#fff3cd;border:2px solid #b8860b;border-radius:4px;padding:.6em 1em;"
    "margin:0 0 1em;font-size:1.1em}";

static void header(struct evbuffer *out, const worker_t *w)
{
    evbuffer_add_printf(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                             "<meta http-equiv=\"refresh\" content=\"5\">\n"
                             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                             "<title>retryq worker ");
    esc(out, w->id);
    evbuffer_add_printf(out, "</title>\n<style>%s</style>\n</head>\n<body>\n", STYLE);
    evbuffer_add_printf(out, "<h1>retryq worker <span id=\"worker-id\">");
    esc(out, w->id);
    evbuffer_add_printf(out, "</span></h1>\n<p class=\"meta\">version %s &middot; queue <code>",
                        RETRYQ_VERSION_STRING);
    esc(out, w->keys.pending);
    evbuffer_add_printf(out, "</code> &middot; up ");
    duration(out, (double)(clock_mono_ms() - w->started_ms) / 1000.0);
    char detail[300];
    const char *why = http_not_ready(w, detail, sizeof detail);
    if (why == NULL) {
        evbuffer_add_printf(out, " &middot; <span class=\"ok\" id=\"ready\">ready</span>");
    } else {
        evbuffer_add_printf(out, " &middot; <span class=\"bad\" id=\"ready\">not ready: ");
        esc(out, why);
        evbuffer_add_printf(out, "</span>");
        if (detail[0] != '\0') {
            evbuffer_add_printf(out, " (");
            esc(out, detail);
            evbuffer_add_printf(out, ")");
        }
    }
    evbuffer_add_printf(out, "</p>\n");
}

/* While the queue is paused (retryq pause): a banner above everything else. */
static void pause_banner(struct evbuffer *out, const worker_t *w)
{
    if (!pause_is_paused(w))
        return;
    const retryq_pause_state_t *p = &w->pause.info;
    char since[40] = "unknown";
    if (p->since_ms > 0)
        rq_format_rfc3339(p->since_ms, since, sizeof since);
    evbuffer_add_printf(out, "<div id=\"paused\" role=\"status\"><strong>Queue paused</strong> by "
                             "<span id=\"paused-by\">");
    esc(out, p->by[0] != '\0' ? p->by : "unknown");
    evbuffer_add_printf(out, "</span> since <span id=\"paused-since\">%s</span>", since);
    if (p->age_ms >= 0) {
        evbuffer_add_printf(out, " (");
        duration(out, (double)(p->age_ms + clock_mono_ms() - w->pause.read_mono_ms) / 1000.0);
        evbuffer_add_printf(out, ")");
    }
    evbuffer_add_printf(out, ": <span id=\"paused-reason\">");
    esc(out, p->reason[0] != '\0' ? p->reason : "no reason given");
    evbuffer_add_printf(out, "</span>.<br>No job is taken and no router call starts; calls already made finish. "
                             "Jobs held by this worker: <span id=\"paused-held\">%zu</span>. "
                             "Resume with <code>retryq resume</code>.</div>\n",
                        job_held_count(w));
}

static void queue_table(struct evbuffer *out, const worker_t *w)
{
    const metrics_t *m = &w->metrics;
    evbuffer_add_printf(out, "<section>\n<h2>Queue</h2>\n");
    if (!m->depths_known) {
        evbuffer_add_printf(out, "<p id=\"q-unknown\">Not read from Redis yet.</p>\n</section>\n");
        return;
    }
    evbuffer_add_printf(out, "<table>\n");
    row(out, "pending", "q-pending", (uint64_t)m->pending, "waiting to be taken");
    row(out, "processing", "q-processing", (uint64_t)m->processing, "taken by a worker, not yet acknowledged");
    row(out, "delayed", "q-delayed", (uint64_t)m->delayed, "waiting out a backoff after a transient failure");
    row(out, "dead", "q-dead", (uint64_t)m->dead_depth,
        "could not be run: <code>retryq dead list</code>");
    evbuffer_add_printf(out, "<tr><th>oldest waiting</th><td class=\"num\" id=\"q-oldest\">%.1f</td>"
                             "<td>seconds%s</td></tr>\n",
                        m->oldest_age_sec,
                        m->pending == 0 || m->oldest_from_enqueued_at
                            ? ""
                            : " (since this worker first saw it: the job has no enqueued_at)");
    row(out, "live workers", "q-workers-live", (uint64_t)m->workers_live, "heartbeat within the lease");
    evbuffer_add_printf(out, "</table>\n<p class=\"meta\">read from Redis ");
    duration(out, (double)(clock_mono_ms() - m->depths_at_ms) / 1000.0);
    evbuffer_add_printf(out, " ago</p>\n</section>\n");
}

static void worker_table(struct evbuffer *out, const worker_t *w)
{
    const metrics_t *m = &w->metrics;
    evbuffer_add_printf(out, "<section>\n<h2>This worker</h2>\n<table>\n");
    char note[64];
    snprintf(note, sizeof note, "of %d at most", w->cfg.concurrency);
    row(out, "in flight", "w-inflight", (uint64_t)w->inflight, note);
    row(out, "router calls", "w-attempts", m->attempts_total, "retry_attempts_total");
    row(out, "succeeded", "w-success", m->success_total, "recorded as completed");
    row(out, "not successful", "w-failures", m->failure_total,
        "recorded as failed or timeout, by reason:");
    char id[48], label[64];
    for (size_t f = 0; f < METRICS_FAIL_COUNT; f++) {
        const char *name = metrics_failure_name((metrics_failure_t)f);
        snprintf(id, sizeof id, "fail-%s", name);
        snprintf(label, sizeof label, "&nbsp;&nbsp;%s", name);
        row(out, label, id, m->failures[f], "");
    }
    row(out, "stale", "w-stale", m->stale_total, "acknowledged without effect");
    row(out, "dead-lettered", "w-dead", m->dead_total, "sent to the dead list");
    row(out, "delayed", "w-delayed", m->delayed_total, "transient failures sent to the delayed set");
    evbuffer_add_printf(out, "</table>\n</section>\n");
}

/* The time left of a pause or breaker read `age_ms` ago; "unknown" when not known. */
static void time_left(struct evbuffer *out, int64_t left_ms, int64_t age_ms)
{
    if (left_ms < 0) {
        evbuffer_add_printf(out, "unknown");
        return;
    }
    int64_t left = left_ms - age_ms;
    duration(out, left > 0 ? (double)left / 1000.0 : 0.0);
}

static void flow_pauses(struct evbuffer *out, const http_flow_t *f, int64_t age_ms)
{
    evbuffer_add_printf(out, "<table id=\"flow-paused\">\n<tr><th>paused key</th><th>cause</th>"
                             "<th>reason</th><th>by</th><th>time left</th></tr>\n");
    for (size_t i = 0; i < f->pause_count; i++) {
        const retryq_flow_pause_t *p = &f->pauses[i];
        evbuffer_add_printf(out, "<tr class=\"flow-pause\"><td class=\"flow-key\"><code>");
        esc(out, p->key);
        evbuffer_add_printf(out, "</code></td><td class=\"flow-cause\">");
        esc(out, p->cause[0] != '\0' ? p->cause : "?");
        evbuffer_add_printf(out, "</td><td class=\"flow-reason\">");
        esc(out, p->reason[0] != '\0' ? p->reason : "-");
        evbuffer_add_printf(out, "</td><td class=\"flow-by\">");
        esc(out, p->by[0] != '\0' ? p->by : "?");
        evbuffer_add_printf(out, "</td><td class=\"num flow-left\">");
        time_left(out, p->left_ms, age_ms);
        evbuffer_add_printf(out, "</td></tr>\n");
    }
    evbuffer_add_printf(out, "</table>\n");
    if (f->paused_total > (int64_t)f->pause_count)
        evbuffer_add_printf(out, "<p class=\"meta\" id=\"flow-paused-more\">%" PRId64
                                 " more paused key(s): <code>retryq flow</code></p>\n",
                            f->paused_total - (int64_t)f->pause_count);
}

static void flow_breakers(struct evbuffer *out, const http_flow_t *f, int64_t age_ms)
{
    evbuffer_add_printf(out, "<table id=\"flow-breakers\">\n<tr><th>key</th><th>breaker</th>"
                             "<th>failed calls</th><th>worker</th><th>time left</th></tr>\n");
    for (size_t i = 0; i < f->breaker_count; i++) {
        const retryq_flow_breaker_t *b = &f->breakers[i];
        evbuffer_add_printf(out, "<tr class=\"flow-breaker\"><td class=\"flow-key\"><code>");
        esc(out, b->key);
        evbuffer_add_printf(out, "</code></td><td class=\"flow-state\">%s</td><td class=\"num\">",
                            strcmp(b->state, "open") == 0 ? "open" : "half-open");
        if (b->failures >= 0 && b->calls >= 0)
            evbuffer_add_printf(out, "%" PRId64 " of %" PRId64, b->failures, b->calls);
        else
            evbuffer_add_printf(out, "-");
        evbuffer_add_printf(out, "</td><td>");
        esc(out, b->worker[0] != '\0' ? b->worker : "?");
        evbuffer_add_printf(out, "</td><td class=\"num flow-left\">");
        time_left(out, b->until_ms > 0 ? b->left_ms : -1, age_ms);
        evbuffer_add_printf(out, "</td></tr>\n");
    }
    evbuffer_add_printf(out, "</table>\n");
    if (f->breakers_cut)
        evbuffer_add_printf(out, "<p class=\"meta\" id=\"flow-breakers-more\">More breakers than shown: "
                                 "<code>retryq flow</code></p>\n");
}

/* The paused keys and the open breakers, as the last flow read from Redis saw them. */
static void flow_section(struct evbuffer *out, const worker_t *w)
{
    const http_flow_t *f = http_flow(w);
    evbuffer_add_printf(out, "<section id=\"flow\">\n<h2>Flow control</h2>\n");
    if (f == NULL || !f->known) {
        evbuffer_add_printf(out, "<p id=\"flow-unknown\">Not read from Redis yet.</p>\n</section>\n");
        return;
    }
    int64_t age_ms = clock_mono_ms() - f->read_ms;
    if (f->pause_count == 0 && f->paused_total == 0 && f->breaker_count == 0)
        evbuffer_add_printf(out, "<p id=\"flow-none\">No key paused, no circuit breaker open.</p>\n");
    if (f->pause_count > 0 || f->paused_total > 0)
        flow_pauses(out, f, age_ms);
    if (f->breaker_count > 0)
        flow_breakers(out, f, age_ms);
    evbuffer_add_printf(out, "<p class=\"meta\">Jobs of a paused key wait in the delayed set without using "
                             "an attempt. Pause or resume a key (MODEL/REGION) with <code>retryq flow pause"
                             "</code> and <code>retryq flow resume</code>. Read from Redis ");
    duration(out, (double)age_ms / 1000.0);
    evbuffer_add_printf(out, " ago.</p>\n</section>\n");
}

/* One set's row: id, name, progress bar and percent, outcome counts, ETA. */
static void set_row(struct evbuffer *out, const page_set_t *s)
{
    const retryq_set_progress_t *p = &s->progress;
    evbuffer_add_printf(out, "<tr class=\"set\" id=\"set-%" PRId64 "\"><td class=\"num set-id\">%" PRId64
                             "</td><td class=\"set-name\">", s->id, s->id);
    esc(out, s->name);
    evbuffer_add_printf(out, "</td><td class=\"set-created\">");
    esc(out, s->created_at);
    evbuffer_add_printf(out, " by ");
    esc(out, s->created_by);
    evbuffer_add_printf(out, "</td><td><progress class=\"set-bar\" max=\"100\" value=\"%.1f\"></progress> "
                             "<span class=\"num set-percent\">%.1f</span>%%</td>"
                             "<td class=\"num set-total\">%" PRId64 "</td><td class=\"num set-open\">%" PRId64
                             "</td><td class=\"num set-completed\">%" PRId64 "</td><td class=\"num set-failed\">%" PRId64
                             "</td><td class=\"num set-cancelled\">%" PRId64 "</td><td class=\"num set-superseded\">%" PRId64
                             "</td><td class=\"set-eta\">",
                        p->percent, p->percent, p->total, p->open, p->completed, p->failed, p->cancelled,
                        p->superseded);
    if (p->eta_ms == 0)
        evbuffer_add_printf(out, "done");
    else if (p->eta_ms < 0)
        evbuffer_add_printf(out, "unknown (no outcome in the last minute)");
    else
        duration(out, (double)p->eta_ms / 1000.0);
    evbuffer_add_printf(out, "</td></tr>\n");
}

static void sets_section(struct evbuffer *out, const worker_t *w)
{
    evbuffer_add_printf(out, "<section id=\"sets\">\n<h2>Retry sets</h2>\n");
    const page_sets_view_t *v = page_sets_view(w->page_sets);
    if (v == NULL) {
        evbuffer_add_printf(out, "<p id=\"sets-unavailable\">%s</p>\n</section>\n",
                            w->schema_ok ? "This database has no retry sets yet: run <code>retryq migrate</code>."
                                         : "The database schema has not been checked yet.");
        return;
    }
    if (!v->known) {
        evbuffer_add_printf(out, "<p id=\"sets-unknown\">Reading from PostgreSQL&hellip;</p>\n</section>\n");
        return;
    }
    if (v->error[0] != '\0') {
        evbuffer_add_printf(out, "<p class=\"bad\" id=\"sets-error\">Could not read the retry sets: ");
        esc(out, v->error);
        evbuffer_add_printf(out, "</p>\n");
    } else if (v->n == 0) {
        evbuffer_add_printf(out, "<p id=\"sets-none\">No retry sets yet: <code>retryq retry --job JOB</code> "
                                 "retries what failed in one command and makes one.</p>\n");
    } else {
        evbuffer_add_printf(out, "<table id=\"sets-table\">\n<tr><th>set</th><th>name</th><th>created</th>"
                                 "<th>progress</th><th>members</th><th>open</th><th>completed</th>"
                                 "<th>failed</th><th>cancelled</th><th>superseded</th><th>ETA</th></tr>\n");
        for (size_t i = 0; i < v->n; i++)
            set_row(out, &v->sets[i]);
        evbuffer_add_printf(out, "</table>\n");
    }
    evbuffer_add_printf(out, "<p class=\"meta\">Active sets first, then the newest (of the last %d). Counted "
                             "from the executions; details: <code>retryq sets show ID</code>. Read from "
                             "PostgreSQL ", PAGE_SETS_SCANNED);
    duration(out, (double)(clock_mono_ms() - v->read_ms) / 1000.0);
    evbuffer_add_printf(out, " ago.</p>\n</section>\n");
}

static uint32_t slot_total(const metrics_t *m, unsigned age)
{
    unsigned idx = (m->slot + METRICS_SLOTS - age) % METRICS_SLOTS;
    return m->slot_success[idx] + m->slot_failure[idx];
}

static void throughput(struct evbuffer *out, const worker_t *w)
{
    const metrics_t *m = &w->metrics;
    uint64_t s1, f1, s5, f5;
    metrics_rates(m, 60000 / METRICS_SLOT_MS, &s1, &f1);
    metrics_rates(m, METRICS_SLOTS, &s5, &f5);
    evbuffer_add_printf(out, "<section>\n<h2>Throughput</h2>\n<table>\n"
                             "<tr><th></th><th>last minute</th><th>last 5 minutes</th></tr>\n");
    evbuffer_add_printf(out, "<tr><th>succeeded</th><td class=\"num\" id=\"r-success-1m\">%" PRIu64
                             "</td><td class=\"num\" id=\"r-success-5m\">%" PRIu64 "</td></tr>\n",
                        s1, s5);
    evbuffer_add_printf(out, "<tr><th>not successful</th><td class=\"num\" id=\"r-failure-1m\">%" PRIu64
                             "</td><td class=\"num\" id=\"r-failure-5m\">%" PRIu64 "</td></tr>\n",
                        f1, f5);
    evbuffer_add_printf(out, "<tr><th>failure ratio</th><td class=\"num\">");
    if (s1 + f1 > 0)
        evbuffer_add_printf(out, "%.1f%%", 100.0 * (double)f1 / (double)(s1 + f1));
    else
        evbuffer_add_printf(out, "-");
    evbuffer_add_printf(out, "</td><td class=\"num\">");
    if (s5 + f5 > 0)
        evbuffer_add_printf(out, "%.1f%%", 100.0 * (double)f5 / (double)(s5 + f5));
    else
        evbuffer_add_printf(out, "-");
    evbuffer_add_printf(out, "</td></tr>\n</table>\n");

    unsigned n = m->slots_used;
    uint32_t max = 0;
    for (unsigned age = 0; age < n; age++)
        if (slot_total(m, age) > max)
            max = slot_total(m, age);
    evbuffer_add_printf(out, "<p>Outcomes recorded per %d s over the last %u minutes, now at the "
                             "right edge (peak <span id=\"spark-max\">%u</span>):</p>\n",
                        METRICS_SLOT_MS / 1000, METRICS_SLOTS * METRICS_SLOT_MS / 60000, max);
    evbuffer_add_printf(out, "<svg id=\"sparkline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                             "height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">"
                             "<title>outcomes per %d s</title>",
                        SPARK_W, SPARK_H, SPARK_W, SPARK_H, METRICS_SLOT_MS / 1000);
    evbuffer_add_printf(out, "<line x1=\"0\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>",
                        SPARK_H - 2, SPARK_W, SPARK_H - 2);
    if (n >= 2) {
        /* Oldest slot on the left, newest on the right edge; the area below is shaded. */
        double step = (double)SPARK_W / (METRICS_SLOTS - 1);
        double scale = max > 0 ? (double)(SPARK_H - 4) / max : 0;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0)
                evbuffer_add_printf(out, "<polygon fill=\"#1a73e8\" fill-opacity=\"0.15\" points=\"%.1f,%d ",
                                    (double)(METRICS_SLOTS - n) * step, SPARK_H - 2);
            else
                evbuffer_add_printf(out, "<polyline fill=\"none\" stroke=\"#1a73e8\" stroke-width=\"2\" points=\"");
            for (unsigned i = 0; i < n; i++) {
                unsigned age = n - 1 - i;
                double x = (double)(METRICS_SLOTS - 1 - age) * step;
                double y = SPARK_H - 2 - slot_total(m, age) * scale;
                evbuffer_add_printf(out, "%s%.1f,%.1f", i ? " " : "", x, y);
            }
            if (pass == 0)
                evbuffer_add_printf(out, " %d,%d\"/>", SPARK_W, SPARK_H - 2);
            else
                evbuffer_add_printf(out, "\"/>");
        }
    } else {
        evbuffer_add_printf(out, "<text x=\"8\" y=\"35\" fill=\"#777\">collecting&#8230;</text>");
    }
    evbuffer_add_printf(out, "</svg>\n</section>\n");
}

static void errors(struct evbuffer *out, const worker_t *w)
{
    const metrics_t *m = &w->metrics;
    evbuffer_add_printf(out, "<section>\n<h2>Last errors</h2>\n");
    if (metrics_recent_error(m, 0) == NULL) {
        evbuffer_add_printf(out, "<p id=\"errors-none\">None since the worker started.</p>\n</section>\n");
        return;
    }
    evbuffer_add_printf(out, "<table id=\"errors\">\n<tr><th>time (UTC)</th><th>kind</th>"
                             "<th>execution</th><th>attempt</th><th>message</th></tr>\n");
    for (unsigned i = 0; i < METRICS_ERRORS; i++) {
        const metrics_error_t *e = metrics_recent_error(m, i);
        if (e == NULL)
            break;
        char at[48];
        rq_format_rfc3339(e->at_ms, at, sizeof at);
        evbuffer_add_printf(out, "<tr class=\"err\"><td>%s</td><td>", at);
        esc(out, e->kind);
        if (e->execution_id > 0)
            evbuffer_add_printf(out, "</td><td class=\"num\">%" PRId64 "</td><td class=\"num\">%d</td>",
                                e->execution_id, (int)e->attempt);
        else
            evbuffer_add_printf(out, "</td><td>-</td><td>-</td>");
        evbuffer_add_printf(out, "<td class=\"msg\">");
        esc(out, e->text);
        evbuffer_add_printf(out, "</td></tr>\n");
    }
    evbuffer_add_printf(out, "</table>\n<p class=\"meta\">%" PRIu64 " error(s) since start</p>\n</section>\n",
                        m->errors_total);
}

void status_page_write(const worker_t *w, struct evbuffer *out)
{
    header(out, w);
    pause_banner(out, w);
    evbuffer_add_printf(out, "<div class=\"grid\">\n");
    queue_table(out, w);
    worker_table(out, w);
    evbuffer_add_printf(out, "</div>\n");
    flow_section(out, w);
    sets_section(out, w);
    throughput(out, w);
    errors(out, w);
    evbuffer_add_printf(out, "<footer>Refreshes every 5 s. Machine-readable: <a href=\"/metrics\">/metrics</a>, "
                             "<a href=\"/readyz\">/readyz</a>, <a href=\"/healthz\">/healthz</a>.</footer>\n"
                             "</body>\n</html>\n");
}
