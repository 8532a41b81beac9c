/*
 * The queue's pause as this worker knows it (see pause.h). One read at a time, on the
 * queue's command connection: the script libretryq's retryq_pause_get runs (Redis's TIME
 * and HMGET of {Q}:paused, within the worker's least-privilege ACL). A read that gets no answer (Redis lost, the queue freed)
 * changes nothing: the worker keeps the last state it knew, so a pause stays a pause
 * through an outage, and a worker that never read the key takes nothing.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "internal.h"
#include "log.h"
#include "pause.h"
#include "worker.h"

static void log_change(const worker_t *w)
{
    const retryq_pause_state_t *p = &w->pause.info;
    char since[40] = "";
    if (p->since_ms > 0)
        rq_format_rfc3339(p->since_ms, since, sizeof since);
    const char *pairs[] = {"reason", p->reason, "by", p->by, "since", since, NULL};
    if (p->paused)
        log_fields(LOG_LEVEL_INFO, 0, 0, "queue.paused", pairs,
                   "[RETRY] queue paused by %s: taking no jobs and starting no router calls "
                   "(%zu job(s) in flight finish or wait)",
                   p->by[0] != '\0' ? p->by : "unknown", w->inflight);
    else
        log_fields(LOG_LEVEL_INFO, 0, 0, "queue.resumed", NULL, "[RETRY] queue resumed: taking jobs again");
}

static void on_read(void *arg, const redisReply *r)
{
    worker_t *w = arg;
    retryq_pause_state_t info;
    w->pause.asking = false;
    if (w->state == WORKER_STOPPED)
        return; /* teardown: the queue is being freed */
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        !rq_pause_parse(r->element[1], r->element[0]->integer, &info)) {
        /* Lost with the connection: quiet, the reconnect reads again. Refused on a live
         * connection (an ACL without EVAL, say): say so, every 10 s or so. */
        if (w->pause.failed_in_row++ % 40 == 0 && w->queue != NULL && queue_ready(w->queue))
            log_warn("queue.pause", "could not read the queue's pause %s from Redis (%s)%s", w->keys.paused,
                     r == NULL ? "refused or no answer" : "unexpected reply",
                     w->pause.known ? ": keeping the last state" : ": taking no jobs until it is read");
        return;
    }
    w->pause.failed_in_row = 0;
    bool first = !w->pause.known, was = w->pause.info.paused;
    retryq_pause_state_t before = w->pause.info;
    w->pause.known = true;
    w->pause.info = info;
    w->pause.read_mono_ms = clock_mono_ms();
    /* A new pause (resumed and paused again between two reads) counts as a change too. */
    bool changed = first || was != info.paused || (info.paused && before.since_ms != info.since_ms);
    if (!changed)
        return;
    if (info.paused || !first)
        log_change(w);
    worker_pause_changed(w);
}

void pause_refresh(worker_t *w)
{
    if (w->pause.asking || w->queue == NULL || !queue_ready(w->queue))
        return;
    const char *argv[] = {"EVAL", rq_pause_lua_read, "1", w->keys.paused, "0"};
    w->pause.asking = true; /* cleared by on_read, which may run at once */
    queue_command(w->queue, 5, argv, on_read, w);
}

bool pause_holds(const worker_t *w)
{
    return !w->pause.known || w->pause.info.paused;
}

bool pause_is_paused(const worker_t *w)
{
    return w->pause.known && w->pause.info.paused;
}

void pause_describe(const worker_t *w, char *buf, size_t cap)
{
    const retryq_pause_state_t *p = &w->pause.info;
    char since[40] = "unknown";
    buf[0] = '\0';
    if (!pause_is_paused(w))
        return;
    if (p->since_ms > 0)
        rq_format_rfc3339(p->since_ms, since, sizeof since);
    snprintf(buf, cap, "by %s, since %s%s%s", p->by[0] != '\0' ? p->by : "unknown", since,
             p->reason[0] != '\0' ? ": " : "", p->reason);
}
