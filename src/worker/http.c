/*
 * The worker's HTTP endpoint (see http.h) on the worker's own event_base (evhttp).
 * Requests are answered from the worker's memory: nothing here waits for Redis or
 * PostgreSQL, so a scrape is never slower than building the text. The queue figures come
 * from http_refresh, which the worker's periodic schedule runs every HTTP_REFRESH_MS: it
 * asks Redis (one Lua call) every METRICS_SLOT_MS — every second until the first answer —
 * and never has two questions out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "http.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"
#include "status_page.h"

#define HTTP_TIMEOUT_SEC 5
#define HTTP_MAX_HEADERS 8192
#define HTTP_MAX_BODY 1024

struct http_server {
    struct evhttp *http;
    int64_t last_roll_ms;    /* monotonic time the last throughput slot closed */
};

/* ------------------------------------------------------------------ readiness */

const char *http_not_ready(const worker_t *w, char *detail, size_t cap)
{
    detail[0] = '\0';
    if (w->state != WORKER_DRAINING && w->state != WORKER_STOPPING && w->queue != NULL &&
        !queue_ready(w->queue) && queue_discovery_failing_ms(w->queue) > 0) {
        snprintf(detail, cap, "%s (for %.1f s)", queue_last_error(w->queue),
                 (double)queue_discovery_failing_ms(w->queue) / 1000.0);
        return "redis unavailable: no sentinel names a primary";
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
    int64_t stalled = queue_pop_stalled_ms(w->queue);
    if (stalled > HTTP_POP_STALL_MS) {
        snprintf(detail, cap, "no reply to a pop for %.1f s while the worker has room",
                 (double)stalled / 1000.0);
        return "no progress on the Redis pop connection";
    }
    return NULL;
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
        evbuffer_add_printf(out, "ready\n");
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
