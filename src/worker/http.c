/*
 * The worker's HTTP endpoint: /healthz, /readyz and /metrics on the worker's own
 * event_base (evhttp). GET only, small request limits, loopback by default.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "clock.h"
#include "http.h"
#include "log.h"

struct http_server {
    struct evhttp *http;
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
}

static void on_healthz(struct evhttp_request *req, worker_t *w, struct evbuffer *out)
{
    evbuffer_add_printf(out, "ok\n");
    reply(req, 200, "OK", "text/plain; charset=utf-8", out);
}

static void on_readyz(struct evhttp_request *req, worker_t *w, struct evbuffer *out)
{
    const char *why = NULL;
    if (w->state != WORKER_RUNNING)
        why = w->state == WORKER_STARTING ? "starting" : "draining";
    else if (!queue_ready(w->queue))
        why = "redis unavailable";
    else if (!store_connected(w->store))
        why = "database unavailable";
    if (why == NULL) {
        evbuffer_add_printf(out, "ready\n");
        reply(req, 200, "OK", "text/plain; charset=utf-8", out);
        return;
    }
    evbuffer_add_printf(out, "not ready: %s\n", why);
    if (strcmp(why, "redis unavailable") == 0 && queue_last_error(w->queue)[0])
        evbuffer_add_printf(out, "%s\n", queue_last_error(w->queue));
    if (strcmp(why, "database unavailable") == 0 && store_last_error(w->store)[0])
        evbuffer_add_printf(out, "%s\n", store_last_error(w->store));
    reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8", out);
}

static void counter(struct evbuffer *out, const char *name, const char *help, uint64_t value)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                        (unsigned long long)value);
}

static void gauge(struct evbuffer *out, const char *name, const char *help, double value)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name,
                        value);
}

static void on_metrics(struct evhttp_request *req, worker_t *w, struct evbuffer *out)
{
    const worker_counters_t *c = &w->count;
    counter(out, "retry_attempts_total", "Router calls started for retries.", c->attempts);
    counter(out, "retry_success_total", "Retries recorded as completed.", c->succeeded);
    evbuffer_add_printf(out, "# HELP retry_failure_total Retries recorded as failed or timed out.\n"
                             "# TYPE retry_failure_total counter\n"
                             "retry_failure_total{reason=\"failed\"} %llu\n"
                             "retry_failure_total{reason=\"timeout\"} %llu\n",
                        (unsigned long long)c->failed, (unsigned long long)c->timeouts);
    counter(out, "retry_stale_total", "Jobs acknowledged without effect (superseded or duplicate).",
            c->stale);
    counter(out, "retry_dead_letter_total", "Jobs moved to the dead list.", c->dead);
    counter(out, "retry_delayed_total", "Transient failures sent to the delayed set.", c->delayed);
    counter(out, "retry_taken_total", "Jobs taken from the queue.", c->taken);
    counter(out, "retry_redis_reconnects_total", "Redis connections re-opened.",
            queue_reconnects(w->queue));
    gauge(out, "retry_inflight", "Jobs in flight in this worker.", (double)w->inflight);
    gauge(out, "retry_redis_up", "1 when both Redis connections are ready.",
          queue_ready(w->queue) ? 1 : 0);
    gauge(out, "retry_database_up", "1 when a PostgreSQL connection is ready.",
          store_connected(w->store) ? 1 : 0);
    evbuffer_add_printf(out, "# HELP retry_worker_info Build and identity of this worker.\n"
                             "# TYPE retry_worker_info gauge\n"
                             "retry_worker_info{version=\"%s\",worker=\"%s\"} 1\n",
                        RETRYQ_VERSION_STRING, w->id);
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", out);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    worker_t *w = arg;
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evbuffer_add_printf(out, "method not allowed\n");
        reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", out);
    } else if (strcmp(uri, "/healthz") == 0) {
        on_healthz(req, w, out);
    } else if (strcmp(uri, "/readyz") == 0) {
        on_readyz(req, w, out);
    } else if (strcmp(uri, "/metrics") == 0) {
        on_metrics(req, w, out);
    } else {
        evbuffer_add_printf(out, "not found\n");
        reply(req, 404, "Not Found", "text/plain; charset=utf-8", out);
    }
    evbuffer_free(out);
}

int http_start(worker_t *w, char *err, size_t errcap)
{
    const char *addr = w->cfg.http_addr;
    if (addr == NULL || addr[0] == '\0' || strcmp(addr, "off") == 0)
        return 0;
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, errcap, "RETRYQ_HTTP_ADDR: expected host:port (got \"%s\")", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    long port = strtol(colon + 1, NULL, 10);
    struct http_server *s = calloc(1, sizeof *s);
    if (s == NULL || (s->http = evhttp_new(w->base)) == NULL) {
        free(s);
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    w->http = s;
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_max_headers_size(s->http, 8192);
    evhttp_set_max_body_size(s->http, 1024);
    evhttp_set_timeout(s->http, 10);
    evhttp_set_gencb(s->http, on_request, w);
    if (evhttp_bind_socket(s->http, host, (ev_uint16_t)port) != 0) {
        snprintf(err, errcap, "RETRYQ_HTTP_ADDR: cannot listen on %s", addr);
        return -1;
    }
    log_info("http.listen", "serving /healthz /readyz /metrics on %s", addr);
    return 0;
}

void http_stop(worker_t *w)
{
    if (w->http == NULL)
        return;
    if (w->http->http != NULL)
        evhttp_free(w->http->http);
    free(w->http);
    w->http = NULL;
}
