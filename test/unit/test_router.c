/*
 * router.c against a real HTTP server: an evhttp server on 127.0.0.1 (port 0) runs in
 * the same event_base as the router, so every test is one event loop driven until a
 * condition holds or a deadline timer fails the test (no sleeps). The server's path
 * prefix picks its behaviour: /ok answers, /echo returns the request body, /hang never
 * answers, /big sends a chunked body larger than the cap, /retry-seconds and
 * /retry-date answer 503/429 with Retry-After, /redirect answers 302.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "classify.h"
#include "router.h"

#define DEADLINE_MS 15000

/* ------------------------------------------------------------------ the server */

typedef struct seen_request {
    char path[128];
    char execution[32];
    char attempt[32];
    char content_type[64];
    char accept[64];
    bool has_expect;
    bool is_post;
    size_t body_len;
    unsigned char *body;
    unsigned short peer_port;
} seen_request_t;

typedef struct fixture {
    struct event_base *base;
    struct evhttp *http;
    int port;
    router_t *router;
    int requests;
    int hanging;
    seen_request_t last;
    unsigned short ports[4];
} fixture_t;

static void copy_header(struct evkeyvalq *headers, const char *name, char *dst, size_t cap)
{
    const char *v = evhttp_find_header(headers, name);

    snprintf(dst, cap, "%s", v != NULL ? v : "");
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();

    assert_non_null(buf);
    assert_int_equal(evbuffer_add(buf, body, len), 0);
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    fixture_t *fx = arg;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    const char *uri = evhttp_request_get_uri(req);
    seen_request_t *s = &fx->last;
    char *peer = NULL;
    ev_uint16_t peer_port = 0;

    free(s->body);
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", uri);
    copy_header(in, "X-Retryq-Execution", s->execution, sizeof s->execution);
    copy_header(in, "X-Retryq-Attempt", s->attempt, sizeof s->attempt);
    copy_header(in, "Content-Type", s->content_type, sizeof s->content_type);
    copy_header(in, "Accept", s->accept, sizeof s->accept);
    s->has_expect = evhttp_find_header(in, "Expect") != NULL;
    s->is_post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
    s->body_len = evbuffer_get_length(body);
    s->body = malloc(s->body_len + 1);
    assert_non_null(s->body);
    assert_int_equal(evbuffer_copyout(body, s->body, s->body_len), (ev_ssize_t)s->body_len);
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &peer_port);
    s->peer_port = peer_port;
    if (fx->requests < 4)
        fx->ports[fx->requests] = peer_port;
    fx->requests++;

    evhttp_add_header(out, "Content-Type", "application/json");
    if (strncmp(uri, "/ok/", 4) == 0) {
        static const char ok[] = "{\"success\":true,\"response\":\"hello\",\"provider_used\":\"mock\"}";
        reply(req, 200, "OK", ok, sizeof ok - 1);
    } else if (strncmp(uri, "/echo/", 6) == 0) {
        reply(req, 200, "OK", (const char *)s->body, s->body_len);
    } else if (strncmp(uri, "/hang/", 6) == 0) {
        fx->hanging++; /* never answered; evhttp_free releases it */
    } else if (strncmp(uri, "/big/", 5) == 0) {
        struct evbuffer *buf = evbuffer_new();
        char chunk[16384];
        assert_non_null(buf);
        memset(chunk, 'x', sizeof chunk);
        evhttp_send_reply_start(req, 200, "OK");
        for (int i = 0; i < 4; i++) {
            assert_int_equal(evbuffer_add(buf, chunk, sizeof chunk), 0);
            evhttp_send_reply_chunk(req, buf);
        }
        evhttp_send_reply_end(req);
        evbuffer_free(buf);
    } else if (strncmp(uri, "/retry-seconds/", 15) == 0) {
        evhttp_add_header(out, "Retry-After", "120");
        reply(req, 503, "Service Unavailable", "busy", 4);
    } else if (strncmp(uri, "/retry-date/", 12) == 0) {
        char date[64];
        time_t when = time(NULL) + 3600;
        struct tm tm;
        gmtime_r(&when, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        evhttp_add_header(out, "Retry-After", date);
        reply(req, 429, "Too Many Requests", "slow down", 9);
    } else if (strncmp(uri, "/redirect/", 10) == 0) {
        evhttp_add_header(out, "Location", "/ok/inference");
        reply(req, 302, "Found", "moved", 5);
    } else {
        reply(req, 404, "Not Found", "no", 2);
    }
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    struct evhttp_bound_socket *bound;
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;

    assert_non_null(fx);
    fx->base = event_base_new();
    assert_non_null(fx->base);
    fx->http = evhttp_new(fx->base);
    assert_non_null(fx->http);
    evhttp_set_allowed_methods(fx->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    evhttp_set_gencb(fx->http, on_request, fx);
    /* Our own listening socket: evhttp_bind_socket's backlog (128) drops the SYNs of a
     * burst of 500 connections, whose retransmission (1 s, then 3 s) can outlast the 2 s
     * connect timeout on a loaded machine. */
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    evutil_socket_t fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(evutil_make_listen_socket_reuseable(fd), 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&any, sizeof any), 0);
    assert_int_equal(listen(fd, 4096), 0);
    assert_int_equal(evutil_make_socket_nonblocking(fd), 0);
    bound = evhttp_accept_socket_with_handle(fx->http, fd);
    assert_non_null(bound);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&addr, &len), 0);
    fx->port = ntohs(addr.sin_port);
    assert_true(fx->port > 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;

    router_free(fx->router);
    evhttp_free(fx->http);
    event_base_free(fx->base);
    free(fx->last.body);
    free(fx);
    return 0;
}

/* ------------------------------------------------------------------ helpers */

static router_t *start_router(fixture_t *fx, const char *path, long timeout_ms, size_t max_body)
{
    char url[256], err[256] = "";
    router_config_t cfg = {.base_url = url, .timeout_ms = timeout_ms, .connect_timeout_ms = 2000,
                           .max_body = max_body};

    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fx->port, path);
    fx->router = router_new(fx->base, &cfg, err, sizeof err);
    if (fx->router == NULL)
        print_error("router_new: %s\n", err);
    assert_non_null(fx->router);
    return fx->router;
}

/* What one callback saw (copied: the result is only valid during the callback). */
typedef struct got {
    int calls;
    int curl_code;
    long http_status;
    char *body;
    size_t body_len;
    bool too_large;
    bool timed_out;
    double total_sec;
    long retry_after_ms;
    char error[CURL_ERROR_SIZE + 64];
    router_outcome_t outcome;
} got_t;

static void on_done(void *arg, const router_result_t *r)
{
    got_t *g = arg;

    g->calls++;
    g->curl_code = r->curl_code;
    g->http_status = r->http_status;
    assert_non_null(r->body);
    assert_int_equal(r->body[r->body_len], '\0');
    free(g->body);
    g->body = malloc(r->body_len + 1);
    assert_non_null(g->body);
    memcpy(g->body, r->body, r->body_len + 1);
    g->body_len = r->body_len;
    g->too_large = r->too_large;
    g->timed_out = r->timed_out;
    g->total_sec = r->total_sec;
    g->retry_after_ms = r->retry_after_ms;
    assert_non_null(r->error);
    snprintf(g->error, sizeof g->error, "%s", r->error);
    router_outcome_free(&g->outcome);
    router_classify(r, &g->outcome);
}

static void got_free(got_t *g)
{
    free(g->body);
    router_outcome_free(&g->outcome);
}

static void on_deadline(evutil_socket_t fd, short events, void *arg)
{
    (void)fd;
    (void)events;
    *(bool *)arg = true;
}

typedef bool (*condition_fn)(void *arg);

/* Runs the loop until cond(arg) holds; false when the deadline passed first. */
static bool run_until(fixture_t *fx, condition_fn cond, void *arg, int deadline_ms)
{
    bool expired = false;
    struct event *timer = evtimer_new(fx->base, on_deadline, &expired);
    struct timeval tv = {deadline_ms / 1000, (deadline_ms % 1000) * 1000};

    assert_non_null(timer);
    assert_int_equal(evtimer_add(timer, &tv), 0);
    while (!cond(arg) && !expired)
        assert_true(event_base_loop(fx->base, EVLOOP_ONCE) >= 0);
    event_free(timer);
    return cond(arg);
}

/* Lets the loop run for ms, whatever happens (to show that something does NOT happen). */
static bool never(void *arg)
{
    (void)arg;
    return false;
}

static void run_for(fixture_t *fx, int ms)
{
    assert_false(run_until(fx, never, NULL, ms));
}

static bool called(void *arg)
{
    return ((got_t *)arg)->calls > 0;
}

typedef struct counter_goal {
    const int *value;
    int goal;
} counter_goal_t;

static bool reached(void *arg)
{
    const counter_goal_t *c = arg;

    return *c->value >= c->goal;
}

static bool router_idle(void *arg)
{
    return router_active(arg) == 0;
}

/* A port nothing listens on: bound, then closed. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int port;

    assert_true(fd >= 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

static const char REQUEST[] = "{\"model\":\"llama3.2-1b\",\"prompt\":\"Who are you?\"}";

/* ------------------------------------------------------------------ tests */

static void test_success_call_sends_headers_and_body(void **state)
{
    fixture_t *fx = *state;
    got_t g = {0};
    router_call_t *call;

    start_router(fx, "/ok/", 5000, 1 << 20); /* trailing slash is stripped */
    call = router_call(fx->router, REQUEST, sizeof REQUEST - 1, 42, 3, on_done, &g);
    assert_non_null(call);
    assert_int_equal(router_active(fx->router), 1);
    assert_true(run_until(fx, called, &g, DEADLINE_MS));

    assert_int_equal(g.calls, 1);
    assert_int_equal(g.curl_code, CURLE_OK);
    assert_int_equal(g.http_status, 200);
    assert_string_equal(g.body, "{\"success\":true,\"response\":\"hello\",\"provider_used\":\"mock\"}");
    assert_false(g.too_large);
    assert_false(g.timed_out);
    assert_int_equal(g.retry_after_ms, -1);
    assert_string_equal(g.error, "");
    assert_true(g.total_sec > 0 && g.total_sec < 10);
    assert_int_equal(g.outcome.verdict, ROUTER_SUCCESS);
    assert_string_equal(g.outcome.response, "hello");
    assert_string_equal(g.outcome.provider, "mock");
    assert_int_equal(router_active(fx->router), 0);

    assert_int_equal(fx->requests, 1);
    assert_string_equal(fx->last.path, "/ok/inference");
    assert_true(fx->last.is_post);
    assert_string_equal(fx->last.execution, "42");
    assert_string_equal(fx->last.attempt, "3");
    assert_string_equal(fx->last.content_type, "application/json");
    assert_string_equal(fx->last.accept, "application/json");
    assert_false(fx->last.has_expect);
    assert_int_equal(fx->last.body_len, sizeof REQUEST - 1);
    assert_memory_equal(fx->last.body, REQUEST, sizeof REQUEST - 1);
    got_free(&g);
}

static void test_large_request_body_without_expect(void **state)
{
    fixture_t *fx = *state;
    size_t size = 2 << 20; /* curl would send "Expect: 100-continue" for this */
    char *body = malloc(size);
    got_t g = {0};

    assert_non_null(body);
    for (size_t i = 0; i < size; i++)
        body[i] = (char)('a' + i % 26);
    start_router(fx, "/echo", 10000, 4 << 20);
    assert_non_null(router_call(fx->router, body, size, 9007199254740993LL, 1, on_done, &g));
    memset(body, 0, size); /* the router has its own copy */
    assert_true(run_until(fx, called, &g, DEADLINE_MS));
    assert_int_equal(g.http_status, 200);
    assert_int_equal(g.body_len, size);
    assert_false(fx->last.has_expect);
    assert_string_equal(fx->last.execution, "9007199254740993");
    assert_string_equal(fx->last.attempt, "1");
    assert_int_equal(fx->last.body_len, size);
    for (size_t i = 0; i < size; i++)
        if (g.body[i] != (char)('a' + i % 26))
            fail_msg("echoed body differs at byte %zu", i);
    free(body);
    got_free(&g);
}

static void test_server_that_never_answers_times_out(void **state)
{
    fixture_t *fx = *state;
    got_t g = {0};

    start_router(fx, "/hang", 300, 1 << 20);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &g));
    assert_true(run_until(fx, called, &g, DEADLINE_MS));
    assert_int_equal(fx->hanging, 1);
    assert_int_equal(g.calls, 1);
    assert_true(g.timed_out);
    assert_int_equal(g.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_int_equal(g.http_status, 0);
    assert_true(g.total_sec >= 0.3 && g.total_sec < 5);
    assert_int_equal(g.outcome.verdict, ROUTER_TIMEOUT);
    assert_string_equal(g.outcome.error_code, "timeout");
    got_free(&g);
}

static void test_body_over_cap_is_too_large(void **state)
{
    fixture_t *fx = *state;
    got_t g = {0};

    start_router(fx, "/big", 5000, 1024);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &g));
    assert_true(run_until(fx, called, &g, DEADLINE_MS));
    assert_true(g.too_large);
    assert_int_equal(g.curl_code, CURLE_WRITE_ERROR);
    assert_int_equal(g.http_status, 200);
    assert_int_equal(g.body_len, 1024);
    assert_false(g.timed_out);
    assert_int_equal(g.outcome.verdict, ROUTER_FAILED);
    assert_string_equal(g.outcome.error_code, "too_large");
    assert_string_equal(g.outcome.error, "response larger than 1024 bytes");
    got_free(&g);
}

static void test_connection_refused_is_a_curl_error(void **state)
{
    fixture_t *fx = *state;
    char url[64], err[256];
    router_config_t cfg = {.base_url = url, .timeout_ms = 5000, .connect_timeout_ms = 2000};
    got_t g = {0};

    snprintf(url, sizeof url, "http://127.0.0.1:%d", closed_port());
    fx->router = router_new(fx->base, &cfg, err, sizeof err);
    assert_non_null(fx->router);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &g));
    assert_true(run_until(fx, called, &g, DEADLINE_MS));
    assert_int_equal(g.curl_code, CURLE_COULDNT_CONNECT);
    assert_int_equal(g.http_status, 0);
    assert_false(g.timed_out);
    assert_int_equal(g.body_len, 0);
    assert_string_equal(g.body, "");
    assert_true(strlen(g.error) > 0);
    assert_int_equal(g.outcome.verdict, ROUTER_TRANSIENT);
    assert_string_equal(g.outcome.error_code, "network");
    got_free(&g);
}

static void test_retry_after_seconds(void **state)
{
    fixture_t *fx = *state;
    got_t g = {0};

    start_router(fx, "/retry-seconds", 5000, 1 << 20);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &g));
    assert_true(run_until(fx, called, &g, DEADLINE_MS));
    assert_int_equal(g.http_status, 503);
    assert_int_equal(g.curl_code, CURLE_OK);
    assert_int_equal(g.retry_after_ms, 120000);
    assert_string_equal(g.body, "busy");
    assert_int_equal(g.outcome.verdict, ROUTER_TRANSIENT);
    assert_int_equal(g.outcome.retry_after_ms, 120000);
    assert_string_equal(g.outcome.error, "HTTP 503: busy");
    got_free(&g);
}

static void test_retry_after_http_date(void **state)
{
    fixture_t *fx = *state;
    got_t g = {0};

    start_router(fx, "/retry-date", 5000, 1 << 20);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &g));
    assert_true(run_until(fx, called, &g, DEADLINE_MS));
    assert_int_equal(g.http_status, 429);
    assert_in_range(g.retry_after_ms, 3590000, 3601000);
    assert_int_equal(g.outcome.verdict, ROUTER_TRANSIENT);
    assert_string_equal(g.outcome.error_code, "rate_limited");
    got_free(&g);
}

static void test_redirect_is_not_followed(void **state)
{
    fixture_t *fx = *state;
    got_t g = {0};

    start_router(fx, "/redirect", 5000, 1 << 20);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &g));
    assert_true(run_until(fx, called, &g, DEADLINE_MS));
    assert_int_equal(g.http_status, 302);
    assert_int_equal(fx->requests, 1);
    assert_int_equal(g.outcome.verdict, ROUTER_FAILED);
    got_free(&g);
}

static void test_sequential_calls_reuse_the_connection(void **state)
{
    fixture_t *fx = *state;
    got_t a = {0}, b = {0};

    start_router(fx, "/ok", 5000, 1 << 20);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &a));
    assert_true(run_until(fx, called, &a, DEADLINE_MS));
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 2, 1, on_done, &b));
    assert_true(run_until(fx, called, &b, DEADLINE_MS));
    assert_int_equal(fx->requests, 2);
    assert_int_equal(a.http_status, 200);
    assert_int_equal(b.http_status, 200);
    assert_int_equal(fx->ports[0], fx->ports[1]); /* same client socket: keep-alive */
    got_free(&a);
    got_free(&b);
}

#define MANY 500

typedef struct many {
    int done;
    int calls[MANY];
    long status[MANY];
} many_t;

typedef struct many_slot {
    many_t *many;
    int index;
} many_slot_t;

static void on_many(void *arg, const router_result_t *r)
{
    many_slot_t *slot = arg;

    slot->many->calls[slot->index]++;
    slot->many->status[slot->index] = r->http_status;
    slot->many->done++;
}

static void test_many_concurrent_calls_complete_once(void **state)
{
    fixture_t *fx = *state;
    many_t *many = calloc(1, sizeof *many);
    many_slot_t *slots = calloc(MANY, sizeof *slots);
    counter_goal_t goal;

    assert_non_null(many);
    assert_non_null(slots);
    start_router(fx, "/ok", 20000, 1 << 20);
    for (int i = 0; i < MANY; i++) {
        slots[i].many = many;
        slots[i].index = i;
        assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, i + 1, 1, on_many, &slots[i]));
    }
    assert_int_equal(router_active(fx->router), MANY);
    goal.value = &many->done;
    goal.goal = MANY;
    assert_true(run_until(fx, reached, &goal, 60000));
    run_for(fx, 50); /* nothing more may arrive */
    assert_int_equal(many->done, MANY);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(many->calls[i], 1);
        assert_int_equal(many->status[i], 200);
    }
    assert_int_equal(fx->requests, MANY);
    assert_int_equal(router_active(fx->router), 0);
    free(slots);
    free(many);
}

static void test_cancelled_call_never_calls_back(void **state)
{
    fixture_t *fx = *state;
    got_t before_start = {0}, at_server = {0}, other = {0}, last = {0};
    router_call_t *call;
    counter_goal_t goal = {.value = &fx->hanging, .goal = 1};

    start_router(fx, "/hang", 300, 1 << 20);
    /* cancelled before the loop ever ran */
    call = router_call(fx->router, REQUEST, sizeof REQUEST - 1, 1, 1, on_done, &before_start);
    assert_non_null(call);
    router_cancel(call);
    assert_int_equal(router_active(fx->router), 0);
    /* cancelled once the server holds the request */
    call = router_call(fx->router, REQUEST, sizeof REQUEST - 1, 2, 1, on_done, &at_server);
    assert_non_null(call);
    assert_true(run_until(fx, reached, &goal, DEADLINE_MS));
    router_cancel(call);
    assert_int_equal(router_active(fx->router), 0);
    /* a later call still works and times out on its own; then the loop keeps running */
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 3, 1, on_done, &other));
    assert_true(run_until(fx, called, &other, DEADLINE_MS));
    assert_true(other.timed_out);
    run_for(fx, 400);
    assert_int_equal(before_start.calls, 0);
    assert_int_equal(at_server.calls, 0);
    assert_int_equal(other.calls, 1);
    router_cancel(NULL);

    /* the router stays usable after cancels: a fresh router on /ok */
    router_free(fx->router);
    start_router(fx, "/ok", 5000, 1 << 20);
    assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, 4, 1, on_done, &last));
    assert_true(run_until(fx, called, &last, DEADLINE_MS));
    assert_int_equal(last.http_status, 200);
    got_free(&other);
    got_free(&last);
}

/* Two calls that cancel each other from their callbacks: exactly one callback runs,
 * whether the other call is still in flight or already finished in the same batch. */
typedef struct pair {
    router_call_t *calls[2];
    int ran[2];
} pair_t;

typedef struct pair_slot {
    pair_t *pair;
    int index;
} pair_slot_t;

static void on_pair(void *arg, const router_result_t *r)
{
    pair_slot_t *slot = arg;
    pair_t *p = slot->pair;
    int other = 1 - slot->index;

    (void)r;
    p->ran[slot->index]++;
    router_cancel(p->calls[slot->index]); /* own call: ignored, must be harmless */
    if (p->ran[other] == 0)
        router_cancel(p->calls[other]);
}

static void test_callback_may_cancel_another_call(void **state)
{
    fixture_t *fx = *state;
    enum { PAIRS = 20 };
    pair_t pairs[PAIRS];
    pair_slot_t slots[PAIRS][2];

    memset(pairs, 0, sizeof pairs);
    start_router(fx, "/hang", 200, 1 << 20);
    for (int i = 0; i < PAIRS; i++) {
        for (int k = 0; k < 2; k++) {
            slots[i][k].pair = &pairs[i];
            slots[i][k].index = k;
            pairs[i].calls[k] = router_call(fx->router, REQUEST, sizeof REQUEST - 1, i + 1, k + 1, on_pair,
                                            &slots[i][k]);
            assert_non_null(pairs[i].calls[k]);
        }
    }
    assert_true(run_until(fx, router_idle, fx->router, DEADLINE_MS));
    run_for(fx, 300);
    for (int i = 0; i < PAIRS; i++)
        assert_int_equal(pairs[i].ran[0] + pairs[i].ran[1], 1);
}

static void test_free_with_calls_in_flight(void **state)
{
    fixture_t *fx = *state;
    got_t g[20];
    counter_goal_t goal = {.value = &fx->hanging, .goal = 20};

    memset(g, 0, sizeof g);
    start_router(fx, "/hang", 5000, 1 << 20);
    for (int i = 0; i < 20; i++)
        assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, i + 1, 1, on_done, &g[i]));
    assert_true(run_until(fx, reached, &goal, DEADLINE_MS));
    router_free(fx->router);
    fx->router = NULL;

    /* and a router freed before its calls even connected */
    start_router(fx, "/ok", 5000, 1 << 20);
    for (int i = 0; i < 5; i++)
        assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, i + 1, 1, on_done, &g[i]));
    router_free(fx->router);
    fx->router = NULL;

    run_for(fx, 100);
    for (int i = 0; i < 20; i++)
        assert_int_equal(g[i].calls, 0);
}

typedef struct freeing {
    fixture_t *fx;
    int calls;
} freeing_t;

static void on_done_free_router(void *arg, const router_result_t *r)
{
    freeing_t *f = arg;

    (void)r;
    f->calls++;
    router_free(f->fx->router);
    f->fx->router = NULL;
}

static void test_callback_may_free_the_router(void **state)
{
    fixture_t *fx = *state;
    freeing_t f = {.fx = fx};
    counter_goal_t goal = {.value = &f.calls, .goal = 1};

    /* Six calls that time out together (usually in one batch): the first callback frees
     * the router, and no other callback may run, finished or not. */
    start_router(fx, "/hang", 200, 1 << 20);
    for (int i = 0; i < 6; i++)
        assert_non_null(router_call(fx->router, REQUEST, sizeof REQUEST - 1, i + 1, 1, on_done_free_router, &f));
    assert_true(run_until(fx, reached, &goal, DEADLINE_MS));
    assert_null(fx->router);
    run_for(fx, 400);
    assert_int_equal(f.calls, 1);
}

static void test_router_new_validates_the_url(void **state)
{
    fixture_t *fx = *state;
    static const char *const bad[] = {"", "ftp://example.com", "127.0.0.1:8080", "file:///etc/passwd",
                                      "http://", "http:///inference", "https://:80", "http://a b",
                                      "http://host/x?y=1", "gopher://x"};
    char err[256];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        router_config_t cfg = {.base_url = bad[i]};
        err[0] = '\0';
        assert_null(router_new(fx->base, &cfg, err, sizeof err));
        assert_true(strlen(err) > 0);
    }
    {
        router_config_t cfg = {.base_url = NULL};
        assert_null(router_new(fx->base, &cfg, err, sizeof err));
        assert_null(router_new(fx->base, NULL, err, sizeof err));
        assert_null(router_new(NULL, &cfg, NULL, 0));
    }
    {
        router_config_t cfg = {.base_url = "HTTPS://router.example:8443/base/"};
        router_t *r = router_new(fx->base, &cfg, err, sizeof err);
        assert_non_null(r);
        assert_int_equal(router_active(r), 0);
        assert_null(router_call(r, NULL, 5, 1, 1, on_done, NULL)); /* NULL body with a length */
        assert_null(router_call(r, "{}", 2, 1, 1, NULL, NULL));    /* no callback */
        router_free(r);
    }
    router_free(NULL);
    assert_int_equal(router_active(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_success_call_sends_headers_and_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_request_body_without_expect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_that_never_answers_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_cap_is_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused_is_a_curl_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_http_date, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redirect_is_not_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequential_calls_reuse_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent_calls_complete_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_call_never_calls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_may_cancel_another_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_calls_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_may_free_the_router, setup, teardown),
        cmocka_unit_test_setup_teardown(test_router_new_validates_the_url, setup, teardown),
    };
    int failed;

    signal(SIGPIPE, SIG_IGN); /* the server writes to sockets curl has closed */
    event_enable_debug_mode();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
