/*
 * The worker's HTTP endpoint (see http.h) on the worker's own event_base (evhttp).
 * Requests are answered from the worker's memory: nothing here waits for Redis or
 * PostgreSQL, so a scrape is never slower than building the text. The queue figures and
 * the flow-control state come from http_refresh, which the worker's periodic schedule
 * runs every HTTP_REFRESH_MS: it asks Redis every METRICS_SLOT_MS — every second until
 * the first answer — on the command connection, never with two questions of a kind out.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "http.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"
#include "page_sets.h"
#include "status_page.h"

#define HTTP_TIMEOUT_SEC 5
#define HTTP_MAX_HEADERS 8192
#define HTTP_MAX_BODY 1024

struct http_server {
    struct evhttp *http;
    int64_t last_roll_ms;    /* monotonic time the last throughput slot closed */
    bool flow_asking;        /* a flow read is out (its first or its second step) */
    http_flow_t flow;        /* the last complete flow read, shown by the status page */
    http_flow_t reading;     /* the one being read */
};

/*
 * KEYS: {Q}:flow:paused, {Q}:flow:breakers. ARGV: pauses to list, HSCAN COUNT. Returns
 * {Redis's time in ms, live pauses, the soonest-ending live members, the HSCAN cursor,
 * [field, value, ...] of one HSCAN step}. The pause documents are read afterwards with
 * one MGET: their key names come from the index, and a script must name its keys in KEYS.
 */
static const char LUA_FLOW_INDEX[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local live = '(' .. now\n"
    "local paused = redis.call('ZRANGEBYSCORE', KEYS[1], live, '+inf', 'LIMIT', 0, tonumber(ARGV[1]))\n"
    "local scan = redis.call('HSCAN', KEYS[2], '0', 'COUNT', tonumber(ARGV[2]))\n"
    "return {now, redis.call('ZCOUNT', KEYS[1], live, '+inf'), paused, scan[1], scan[2]}\n";
#define FLOW_HSCAN_COUNT "1000"

/* ------------------------------------------------------------------ readiness */

const char *http_not_ready(const worker_t *w, char *detail, size_t cap)
{
    detail[0] = '\0';
    if (w->state != WORKER_DRAINING && w->state != WORKER_STOPPING && w->queue != NULL &&
        !queue_ready(w->queue) && queue_discovery_failing_ms(w->queue) > 0) {
        snprintf(detail, cap, "%s (for %.1f s)", queue_last_error(w->queue),
                 (double)queue_discovery_failing_ms(w->queue) / 1000.0);
        return w->redis_url.is_cluster ? "redis unavailable: no cluster node names the queue's primary"
                                       : "redis unavailable: no sentinel names a primary";
    }
    if (w->state == WORKER_STARTING) {
        snprintf(detail, cap, "%s", queue_last_error(w->queue));
        return "starting";
    }
    if (w->state != WORKER_RUNNING)
        return "draining";
    if (!queue_ready(w->queue)) {
        snprintf(detail, cap, "%s", queue_last_error(w->queue));
        return "redis unavailable";
    }
    if (queue_pop_failing_ms(w->queue) > 0) {
        snprintf(detail, cap, "%s (for %.1f s; retried with backoff)", queue_pop_error(w->queue),
                 (double)queue_pop_failing_ms(w->queue) / 1000.0);
        return "Redis refuses the pop: taking no jobs";
    }
    if (!store_connected(w->store)) {
        snprintf(detail, cap, "%s", store_last_error(w->store));
        return "database unavailable";
    }
    if (!w->pause.known && w->pause.failed_in_row > 0) {
        snprintf(detail, cap, "%s could not be read %" PRIu64 " time(s) in a row", w->keys.paused,
                 w->pause.failed_in_row);
        return "the queue's pause cannot be read: taking no jobs";
    }
    int64_t stalled = queue_pop_stalled_ms(w->queue);
    if (stalled > HTTP_POP_STALL_MS) {
        snprintf(detail, cap, "no reply to a pop for %.1f s while the worker has room",
                 (double)stalled / 1000.0);
        return "no progress on the Redis pop connection";
    }
    return NULL;
}

/* ------------------------------------------------------------------ flow control */

/* The flow key in a reply element, or NULL for one no worker could have written. */
static const char *page_flow_member(const redisReply *m)
{
    if (m->type != REDIS_REPLY_STRING || m->len == 0 || m->len > RETRYQ_MAX_FLOW_KEY ||
        memchr(m->str, '\0', m->len) != NULL)
        return NULL;
    return m->str;
}

static void page_flow_done(struct http_server *s)
{
    s->reading.known = true;
    s->reading.read_ms = clock_mono_ms();
    s->flow = s->reading;
    s->flow_asking = false;
}

/* Step 2: the documents of the pauses listed, in order (nil: ended meanwhile). */
static void on_flow_pauses(void *arg, const redisReply *r)
{
    worker_t *w = arg;
    struct http_server *s = w->http;
    if (s == NULL)
        return; /* the endpoint is gone (teardown) */
    http_flow_t *f = &s->reading;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != f->pause_count) {
        s->flow_asking = false;
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *doc = r->element[i];
        if (doc->type != REDIS_REPLY_STRING)
            continue;
        char key[RETRYQ_MAX_FLOW_KEY + 1];
        snprintf(key, sizeof key, "%s", f->pauses[i].key); /* pauses[kept] may be this entry */
        rq_flow_parse_pause(key, doc->str, doc->len, f->redis_ms, &f->pauses[kept++]);
    }
    f->pause_count = kept;
    page_flow_done(s);
}

static void page_flow_breakers(http_flow_t *f, const redisReply *cursor, const redisReply *pairs, int64_t now_ms)
{
    f->breakers_cut = cursor->type != REDIS_REPLY_STRING || strcmp(cursor->str, "0") != 0;
    for (size_t i = 0; i + 1 < pairs->elements; i += 2) {
        const char *key = page_flow_member(pairs->element[i]);
        const redisReply *value = pairs->element[i + 1];
        retryq_flow_breaker_t b;
        if (key == NULL || value->type != REDIS_REPLY_STRING ||
            !rq_flow_parse_breaker(key, value->str, value->len, now_ms, &b) ||
            (strcmp(b.state, "open") != 0 && strcmp(b.state, "half_open") != 0))
            continue;
        if (f->breaker_count == HTTP_FLOW_SHOWN) {
            f->breakers_cut = true;
            break;
        }
        f->breakers[f->breaker_count++] = b;
    }
}

/* Step 1: the index and the breakers; then asks for the pauses' documents. */
static void on_flow_index(void *arg, const redisReply *r)
{
    worker_t *w = arg;
    struct http_server *s = w->http;
    if (s == NULL)
        return;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 5 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_ARRAY || r->element[4]->type != REDIS_REPLY_ARRAY) {
        s->flow_asking = false;
        return;
    }
    http_flow_t *f = &s->reading;
    memset(f, 0, sizeof *f);
    f->redis_ms = r->element[0]->integer;
    f->paused_total = r->element[1]->integer;
    page_flow_breakers(f, r->element[3], r->element[4], f->redis_ms);
    const char *argv[1 + HTTP_FLOW_SHOWN];
    char names[HTTP_FLOW_SHOWN][RETRYQ_MAX_QUEUE_NAME + RETRYQ_MAX_FLOW_KEY + 32];
    argv[0] = "MGET";
    for (size_t i = 0; i < r->element[2]->elements && f->pause_count < HTTP_FLOW_SHOWN; i++) {
        const char *key = page_flow_member(r->element[2]->element[i]);
        if (key == NULL ||
            retryq_keys_flow(&w->keys, RETRYQ_FLOW_PAUSE, key, names[f->pause_count], sizeof names[0]) < 0)
            continue;
        /* Until the documents come, an entry holds only its key. */
        snprintf(f->pauses[f->pause_count].key, sizeof f->pauses[0].key, "%s", key);
        argv[1 + f->pause_count] = names[f->pause_count];
        f->pause_count++;
    }
    if (f->pause_count == 0)
        page_flow_done(s);
    else
        queue_command(w->queue, (int)(1 + f->pause_count), argv, on_flow_pauses, w);
}

static void page_flow_ask(worker_t *w)
{
    char shown[16];
    snprintf(shown, sizeof shown, "%d", HTTP_FLOW_SHOWN);
    const char *argv[] = {"EVAL", LUA_FLOW_INDEX, "2", w->keys.flow_paused, w->keys.flow_breakers,
                          shown, FLOW_HSCAN_COUNT};
    w->http->flow_asking = true; /* cleared when the read ends, which may be at once */
    queue_command(w->queue, 7, argv, on_flow_index, w);
}

const http_flow_t *http_flow(const worker_t *w)
{
    return w->http != NULL ? &w->http->flow : NULL;
}

/* ------------------------------------------------------------------ queue figures */

static void on_depths(void *arg, const queue_depths_t *d)
{
    worker_t *w = arg;
    w->metrics.depths_asking = false;
    if (d != NULL)
        metrics_set_depths(&w->metrics, d, clock_mono_ms());
}

void http_refresh(worker_t *w, int64_t now_ms)
{
    struct http_server *s = w->http;
    if (s == NULL)
        return;
    bool slot_done = now_ms - s->last_roll_ms >= METRICS_SLOT_MS;
    if (slot_done) {
        s->last_roll_ms = now_ms;
        metrics_roll(&w->metrics);
    }
    if ((slot_done || !w->metrics.depths_known) && !w->metrics.depths_asking &&
        queue_ready(w->queue)) {
        w->metrics.depths_asking = true; /* cleared by on_depths, which may run at once */
        queue_depths(w->queue, w->cfg.lease_ms, on_depths, w);
    }
    if ((slot_done || !s->flow.known) && !s->flow_asking && queue_ready(w->queue))
        page_flow_ask(w);
}

/* ------------------------------------------------------------------ handlers */

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* Same headers, no body. */
        char len[24];
        snprintf(len, sizeof len, "%zu", evbuffer_get_length(body));
        evhttp_add_header(h, "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    evhttp_send_reply(req, code, reason, body);
}

#define TEXT_PLAIN "text/plain; charset=utf-8"

static void on_healthz(struct evhttp_request *req, worker_t *w, struct evbuffer *out)
{
    evbuffer_add_printf(out, "ok\n");
    reply(req, 200, "OK", TEXT_PLAIN, out);
}

static void on_readyz(struct evhttp_request *req, worker_t *w, struct evbuffer *out)
{
    char detail[300];
    const char *why = http_not_ready(w, detail, sizeof detail);
    if (why == NULL) {
        /* Paused is not unready: the worker is healthy and does what it was told. */
        char pause[RETRYQ_MAX_PAUSE_REASON + RETRYQ_MAX_PAUSE_BY + 100];
        pause_describe(w, pause, sizeof pause);
        evbuffer_add_printf(out, "ready\n");
        if (pause[0] != '\0')
            evbuffer_add_printf(out, "queue paused %s\n", pause);
        reply(req, 200, "OK", TEXT_PLAIN, out);
        return;
    }
    evbuffer_add_printf(out, "not ready: %s\n", why);
    if (detail[0] != '\0')
        evbuffer_add_printf(out, "%s\n", detail);
    reply(req, 503, "Service Unavailable", TEXT_PLAIN, out);
}

static void on_metrics(struct evhttp_request *req, worker_t *w, struct evbuffer *out)
{
    metrics_write(w, out);
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", out);
}

static void on_status(struct evhttp_request *req, worker_t *w, struct evbuffer *out)
{
    page_sets_want(w->page_sets, clock_mono_ms()); /* for the next view: this one shows the last read */
    status_page_write(w, out);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                      "default-src 'none'; style-src 'unsafe-inline'");
    reply(req, 200, "OK", "text/html; charset=utf-8", out);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    worker_t *w = arg;
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evbuffer_add_printf(out, "method not allowed\n");
        reply(req, 405, "Method Not Allowed", TEXT_PLAIN, out);
    } else if (path == NULL) {
        evbuffer_add_printf(out, "bad request\n");
        reply(req, 400, "Bad Request", TEXT_PLAIN, out);
    } else if (strcmp(path, "/") == 0 || strcmp(path, "/status") == 0) {
        on_status(req, w, out);
    } else if (strcmp(path, "/healthz") == 0) {
        on_healthz(req, w, out);
    } else if (strcmp(path, "/readyz") == 0) {
        on_readyz(req, w, out);
    } else if (strcmp(path, "/metrics") == 0) {
        on_metrics(req, w, out);
    } else {
        evbuffer_add_printf(out, "not found: try /, /metrics, /healthz or /readyz\n");
        reply(req, 404, "Not Found", TEXT_PLAIN, out);
    }
    evbuffer_free(out);
}

/* ------------------------------------------------------------------ lifecycle */

/* Splits "host:port" / "[v6]:port" (config.c has validated it). */
static int split_addr(const char *addr, char *host, size_t cap, unsigned short *port)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= cap)
        return -1;
    const char *h = addr;
    size_t n = (size_t)(colon - addr);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
        return -1;
    *port = (unsigned short)p;
    return 0;
}

int http_start(worker_t *w, char *err, size_t errcap)
{
    w->metrics.start_wall_ms = rq_now_ms() - (clock_mono_ms() - w->started_ms);
    const char *addr = w->cfg.http_addr;
    if (addr == NULL || addr[0] == '\0' || strcmp(addr, "off") == 0)
        return 0;
    char host[256];
    unsigned short port = 0;
    if (split_addr(addr, host, sizeof host, &port) < 0) {
        snprintf(err, errcap, "RETRYQ_HTTP_ADDR: expected host:port (got \"%s\")", addr);
        return -1;
    }
    struct http_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    w->http = s;
    s->http = evhttp_new(w->base);
    if (s->http == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    /* Every method reaches on_request, which answers 405 to all but GET and HEAD
     * (evhttp itself would answer 501 to a method it was not told about). */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_headers_size(s->http, HTTP_MAX_HEADERS);
    evhttp_set_max_body_size(s->http, HTTP_MAX_BODY);
    evhttp_set_timeout(s->http, HTTP_TIMEOUT_SEC);
    evhttp_set_gencb(s->http, on_request, w);
    if (evhttp_bind_socket(s->http, host, port) != 0) {
        snprintf(err, errcap, "RETRYQ_HTTP_ADDR: cannot listen on %s", addr);
        return -1;
    }
    s->last_roll_ms = clock_mono_ms();
    log_info("http.listen", "serving / /metrics /healthz /readyz on %s", addr);
    return 0;
}

void http_stop(worker_t *w)
{
    struct http_server *s = w->http;
    if (s == NULL)
        return;
    if (s->http != NULL)
        evhttp_free(s->http);
    free(s);
    w->http = NULL;
}
