/*
 * The router client (see router.h): one libcurl multi handle per router_t, driven by the
 * worker's event_base the way curl's hiperfifo example shows.
 *
 *  - CURLMOPT_SOCKETFUNCTION keeps one persistent `struct event` per socket curl uses
 *    (created on first use, re-armed on change, freed on CURL_POLL_REMOVE), stored with
 *    curl_multi_assign so curl hands it back.
 *  - CURLMOPT_TIMERFUNCTION arms one evtimer (-1 deletes it, 0 means "as soon as the
 *    loop runs": curl_multi_socket_action is never called from inside that callback).
 *  - Socket and timer events call curl_multi_socket_action, then router_process drains
 *    curl_multi_info_read. Finished calls move to a `finished` list; after the drain
 *    their handles are removed from the multi handle (outside every curl callback) and
 *    only then do their `done` callbacks run, one by one. A callback may start calls,
 *    cancel other calls (even ones finished in the same batch) or free the router.
 *
 * Connections and the DNS cache belong to the multi handle, so keep-alive reuse works
 * across calls; finished easy handles are reset and kept on a small spare list to save
 * their set-up cost. The body cap is enforced in the write callback (chunked bodies
 * ignore CURLOPT_MAXFILESIZE): exactly max_body bytes are kept, then the transfer is
 * aborted and too_large set, so a too_large result always has body_len == max_body.
 *
 * curl_global_init is the caller's job: the worker calls it once in main before any
 * router_new (it is not thread-safe and must not run per router); tests call it too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "clock.h"
#include "connstr_router.h"
#include "classify.h"
#include "router.h"

#define DEFAULT_TIMEOUT_MS 60000L
#define DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define DEFAULT_MAX_BODY ((size_t)4 << 20)
#define MAX_IDLE_CONNECTIONS 256L     /* keep-alive connections kept between calls */
#define SPARE_EASY_MAX 64             /* finished easy handles kept for reuse */
#define BODY_INITIAL_CAP 4096

/* The paths the runner's Go client tries, in its order, when the previous one answers 404.
 * The router remembers the last path that answered anything else. */
static const char *const inference_paths[] = {"/inference", "/api/v1/inference", "/api/inference",
                                              "/v1/inference"};
#define PATH_COUNT ((int)(sizeof inference_paths / sizeof inference_paths[0]))

typedef enum call_state {
    CALL_ACTIVE,      /* in the multi handle, transfer running */
    CALL_FINISHED,    /* transfer over, waiting for its callback */
    CALL_DISPATCHING, /* its callback is running */
} call_state_t;

typedef struct call_list {
    router_call_t *head, *tail;
} call_list_t;

struct router_call {
    router_t *router;
    CURL *easy;
    bool in_multi;
    call_state_t state;
    router_call_t *prev, *next; /* in router->active or router->finished */
    struct curl_slist *headers;
    char *request; /* our copy of the request body (CURLOPT_POSTFIELDS points here) */
    char *body;    /* response body, NUL-terminated, at most max_body bytes */
    size_t body_len, body_cap;
    bool too_large;
    bool out_of_memory;
    long retry_after_ms;
    router_ratelimit_t ratelimit;
    CURLcode code;
    long http_status;
    int path_first, tries; /* index of the first path tried; paths tried after it */
    int64_t started_us, finished_us;
    router_done_fn done;
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
};

/* One socket curl asked us to watch. */
typedef struct router_socket {
    struct event *ev;
    struct router_socket *prev, *next;
} router_socket_t;

struct router {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    char *urls[PATH_COUNT]; /* base URL + each of inference_paths */
    int path;               /* the path that answered last (index into urls) */
    long timeout_ms, connect_timeout_ms;
    size_t max_body;
    call_list_t active, finished;
    size_t count; /* calls whose callback is still due */
    router_socket_t *sockets;
    CURL *spare[SPARE_EASY_MAX];
    size_t spare_count;
    int dispatching;     /* > 0 while done callbacks run */
    bool free_requested; /* router_free was called from a done callback */
};

static void router_destroy(router_t *router);

/* ------------------------------------------------------------------ lists */

static void list_append(call_list_t *list, router_call_t *call)
{
    call->prev = list->tail;
    call->next = NULL;
    if (list->tail != NULL)
        list->tail->next = call;
    else
        list->head = call;
    list->tail = call;
}

static void list_unlink(call_list_t *list, router_call_t *call)
{
    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        list->head = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    else
        list->tail = call->prev;
    call->prev = call->next = NULL;
}

/* ------------------------------------------------------------------ sockets and timer */

static void socket_free(router_t *router, router_socket_t *sock)
{
    if (sock->prev != NULL)
        sock->prev->next = sock->next;
    else
        router->sockets = sock->next;
    if (sock->next != NULL)
        sock->next->prev = sock->prev;
    event_free(sock->ev);
    free(sock);
}

static void router_process(router_t *router);

static void on_socket_event(evutil_socket_t fd, short events, void *arg)
{
    router_t *router = arg;
    int action = 0, running = 0;

    if (events & EV_READ)
        action |= CURL_CSELECT_IN;
    if (events & EV_WRITE)
        action |= CURL_CSELECT_OUT;
    /* An error here (bad socket, out of memory) has no better answer than carrying on:
     * every transfer still ends through its own timeout and is reported as such. */
    (void)curl_multi_socket_action(router->multi, (curl_socket_t)fd, action, &running);
    router_process(router);
}

static void on_timer(evutil_socket_t fd, short events, void *arg)
{
    router_t *router = arg;
    int running = 0;

    (void)fd;
    (void)events;
    (void)curl_multi_socket_action(router->multi, CURL_SOCKET_TIMEOUT, 0, &running); /* as above */
    router_process(router);
}

/* CURLMOPT_SOCKETFUNCTION: curl says which socket to watch for what. */
static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    router_t *router = userp;
    router_socket_t *sock = socketp;
    short events = EV_PERSIST;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sock != NULL)
            socket_free(router, sock); /* curl forgets the assignment itself */
        return 0;
    }
    if (what & CURL_POLL_IN)
        events |= EV_READ;
    if (what & CURL_POLL_OUT)
        events |= EV_WRITE;
    if (sock == NULL) {
        sock = calloc(1, sizeof *sock);
        if (sock == NULL)
            return -1;
        sock->ev = event_new(router->base, (evutil_socket_t)fd, events, on_socket_event, router);
        if (sock->ev == NULL) {
            free(sock);
            return -1;
        }
        if (curl_multi_assign(router->multi, fd, sock) != CURLM_OK) {
            event_free(sock->ev);
            free(sock);
            return -1;
        }
        sock->next = router->sockets;
        if (router->sockets != NULL)
            router->sockets->prev = sock;
        router->sockets = sock;
    } else {
        if (event_del(sock->ev) != 0)
            return -1;
        if (event_assign(sock->ev, router->base, (evutil_socket_t)fd, events, on_socket_event, router) != 0)
            return -1;
    }
    if ((events & (EV_READ | EV_WRITE)) == 0)
        return 0; /* CURL_POLL_NONE: known, but nothing to wait for yet */
    return event_add(sock->ev, NULL) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: one timer; never drives curl from in here. */
static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    router_t *router = userp;
    struct timeval tv;

    (void)multi;
    if (timeout_ms < 0)
        return event_del(router->timer) == 0 ? 0 : -1;
    tv = clock_tv_ms(timeout_ms);
    return evtimer_add(router->timer, &tv) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ per-call callbacks */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    router_call_t *call = userp;
    size_t n = size * nmemb;
    size_t room = call->router->max_body - call->body_len;
    bool over = n > room;
    size_t take = over ? room : n;

    if (call->body_len + take + 1 > call->body_cap) {
        size_t cap = call->body_cap > 0 ? call->body_cap : BODY_INITIAL_CAP;
        char *grown;
        while (cap < call->body_len + take + 1)
            cap *= 2;
        if (cap > call->router->max_body + 1)
            cap = call->router->max_body + 1;
        grown = realloc(call->body, cap);
        if (grown == NULL) {
            call->out_of_memory = true;
            return 0;
        }
        call->body = grown;
        call->body_cap = cap;
    }
    memcpy(call->body + call->body_len, data, take);
    call->body_len += take;
    call->body[call->body_len] = '\0';
    if (over) {
        call->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *userp)
{
    router_call_t *call = userp;
    size_t n = size * nitems;

    router_parse_header(data, n, time(NULL), &call->retry_after_ms, &call->ratelimit);
    return n;
}

/* ------------------------------------------------------------------ calls */

static void call_free(router_call_t *call)
{
    router_t *router = call->router;

    if (call->easy != NULL) {
        if (call->in_multi)
            curl_multi_remove_handle(router->multi, call->easy);
        if (router->spare_count < SPARE_EASY_MAX) {
            curl_easy_reset(call->easy);
            router->spare[router->spare_count++] = call->easy;
        } else {
            curl_easy_cleanup(call->easy);
        }
    }
    curl_slist_free_all(call->headers);
    free(call->request);
    free(call->body);
    free(call);
}

static bool add_header(router_call_t *call, const char *line)
{
    struct curl_slist *list = curl_slist_append(call->headers, line);

    if (list == NULL)
        return false;
    call->headers = list;
    return true;
}

/* Sets every option of one call; false when curl refused one. */
static bool call_setup(router_t *router, router_call_t *call, size_t len)
{
    CURL *e = call->easy;
    bool ok = true;

#define SET(opt, value) ok = ok && curl_easy_setopt(e, opt, value) == CURLE_OK
    SET(CURLOPT_URL, router->urls[(call->path_first + call->tries) % PATH_COUNT]);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    SET(CURLOPT_POSTFIELDS, call->request);
    SET(CURLOPT_HTTPHEADER, call->headers);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, router->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, router->connect_timeout_ms);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    /* curl (7.88) looks for a reusable connection by walking every connection it holds,
     * in use or not: with thousands of calls in flight that walk, once per call, is
     * quadratic (docs/performance.md has the figures). Past as many calls as the idle
     * cache keeps, a call opens its own connection and closes it afterwards, so no walk
     * happens; below that, keep-alive reuse works as before. */
    bool crowded = router->count >= (size_t)MAX_IDLE_CONNECTIONS;
    SET(CURLOPT_FRESH_CONNECT, crowded ? 1L : 0L);
    SET(CURLOPT_FORBID_REUSE, crowded ? 1L : 0L);
    /* TCP keep-alive probes matter for connections kept idle between calls; a connection
     * used once and closed is covered by the call's own timeout, and skipping them saves
     * three setsockopt calls per call. */
    SET(CURLOPT_TCP_KEEPALIVE, crowded ? 0L : 1L);
    /* curl's receive buffer (16 KiB by default) is held by every call in flight: at 10,000
     * calls that alone is 160 MB. A router answer is read 1 KiB at a time instead (the
     * smallest curl allows); the body cap is unaffected. */
    SET(CURLOPT_BUFFERSIZE, 1024L);
    SET(CURLOPT_USERAGENT, "retryq/" RETRYQ_VERSION);
    SET(CURLOPT_ERRORBUFFER, call->errbuf);
    SET(CURLOPT_PRIVATE, (void *)call);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)call);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)call);
#undef SET
    return ok;
}

router_call_t *router_call(router_t *router, const char *body, size_t len, int64_t execution_id,
                           int32_t attempt, router_done_fn done, void *arg)
{
    router_call_t *call;
    char line[64];

    if (router == NULL || done == NULL || (body == NULL && len > 0) || router->free_requested)
        return NULL;
    call = calloc(1, sizeof *call);
    if (call == NULL)
        return NULL;
    call->router = router;
    call->state = CALL_ACTIVE;
    call->done = done;
    call->arg = arg;
    call->retry_after_ms = -1;
    call->path_first = router->path;
    call->request = malloc(len + 1);
    if (call->request == NULL)
        goto fail;
    if (len > 0)
        memcpy(call->request, body, len);
    call->request[len] = '\0';

    if (!add_header(call, "Content-Type: application/json") || !add_header(call, "Accept: application/json")
        || !add_header(call, "Expect:"))
        goto fail;
    snprintf(line, sizeof line, "X-Retryq-Execution: %lld", (long long)execution_id);
    if (!add_header(call, line))
        goto fail;
    snprintf(line, sizeof line, "X-Retryq-Attempt: %ld", (long)attempt);
    if (!add_header(call, line))
        goto fail;

    if (router->spare_count > 0)
        call->easy = router->spare[--router->spare_count];
    else
        call->easy = curl_easy_init();
    if (call->easy == NULL || !call_setup(router, call, len))
        goto fail;
    call->started_us = clock_mono_us();
    if (curl_multi_add_handle(router->multi, call->easy) != CURLM_OK)
        goto fail;
    call->in_multi = true;
    list_append(&router->active, call);
    router->count++;
    return call;
fail:
    call_free(call);
    return NULL;
}

void router_cancel(router_call_t *call)
{
    router_t *router;

    if (call == NULL)
        return;
    router = call->router;
    switch (call->state) {
    case CALL_DISPATCHING:
        return; /* inside its own callback: freed when that returns */
    case CALL_ACTIVE:
        list_unlink(&router->active, call);
        break;
    case CALL_FINISHED:
        list_unlink(&router->finished, call);
        break;
    }
    router->count--;
    call_free(call); /* removes the handle from the multi handle when still there */
}

size_t router_active(const router_t *router)
{
    return router != NULL ? router->count : 0;
}

/* Runs one finished call's callback and frees the call. */
static void dispatch(router_t *router, router_call_t *call)
{
    router_result_t result;
    int64_t elapsed_us = call->finished_us - call->started_us;

    memset(&result, 0, sizeof result);
    result.curl_code = (int)(call->out_of_memory ? CURLE_OUT_OF_MEMORY : call->code);
    result.http_status = call->http_status;
    result.body = call->body != NULL ? call->body : "";
    result.body_len = call->body_len;
    result.too_large = call->too_large;
    /* Only the total timeout counts as a timeout: curl reports a connect timeout with the
     * same code, but that is an unreachable router (transient), told apart by time. */
    result.timed_out = call->code == CURLE_OPERATION_TIMEDOUT && elapsed_us >= (int64_t)router->timeout_ms * 1000;
    result.total_sec = (double)elapsed_us / 1e6;
    result.retry_after_ms = call->retry_after_ms;
    result.ratelimit = call->ratelimit;
    result.path = inference_paths[(call->path_first + call->tries) % PATH_COUNT];
    if (call->errbuf[0] != '\0')
        result.error = call->errbuf;
    else if (result.curl_code != CURLE_OK)
        result.error = curl_easy_strerror((CURLcode)result.curl_code);
    else
        result.error = "";

    call->state = CALL_DISPATCHING;
    router->count--;
    call->done(call->arg, &result);
    call_free(call);
}

/* A 404 from one router path: the same call again on the next path the runner's client
 * tries (outside every curl callback). When curl refuses, the 404 stands. */
static void try_next_path(router_t *router, router_call_t *call)
{
    call->tries++;
    call->body_len = 0;
    if (call->body != NULL)
        call->body[0] = '\0';
    call->too_large = false;
    call->retry_after_ms = -1;
    memset(&call->ratelimit, 0, sizeof call->ratelimit);
    call->errbuf[0] = '\0';
    call->http_status = 0;
    if (curl_easy_setopt(call->easy, CURLOPT_URL,
                         router->urls[(call->path_first + call->tries) % PATH_COUNT]) != CURLE_OK ||
        curl_multi_add_handle(router->multi, call->easy) != CURLM_OK) {
        call->tries--;
        call->http_status = 404;
        return;
    }
    call->in_multi = true;
    list_unlink(&router->finished, call);
    list_append(&router->active, call);
    call->state = CALL_ACTIVE;
}

/* Collects finished transfers, takes them out of the multi handle, runs callbacks. */
static void router_process(router_t *router)
{
    CURLMsg *msg;
    int left = 0;

    while ((msg = curl_multi_info_read(router->multi, &left)) != NULL) {
        char *priv = NULL;
        router_call_t *call;
        if (msg->msg != CURLMSG_DONE)
            continue;
        if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv) != CURLE_OK || priv == NULL)
            continue;
        call = (router_call_t *)(void *)priv;
        if (call->state != CALL_ACTIVE)
            continue;
        call->code = msg->data.result;
        call->finished_us = clock_mono_us();
        list_unlink(&router->active, call);
        list_append(&router->finished, call);
        call->state = CALL_FINISHED;
    }
    for (router_call_t *call = router->finished.head, *next; call != NULL; call = next) {
        next = call->next;
        if (!call->in_multi)
            continue;
        if (curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &call->http_status) != CURLE_OK)
            call->http_status = 0;
        curl_multi_remove_handle(router->multi, call->easy);
        call->in_multi = false;
        if (call->code == CURLE_OK && call->http_status == 404 && call->tries + 1 < PATH_COUNT)
            try_next_path(router, call);
        else if (call->code == CURLE_OK && call->http_status > 0 && call->http_status != 404)
            router->path = (call->path_first + call->tries) % PATH_COUNT;
    }
    router->dispatching++;
    while (router->finished.head != NULL && !router->free_requested) {
        router_call_t *call = router->finished.head;
        list_unlink(&router->finished, call);
        dispatch(router, call);
    }
    router->dispatching--;
    if (router->dispatching == 0 && router->free_requested)
        router_destroy(router);
}

/* ------------------------------------------------------------------ life cycle */

/* A base URL libcurl accepts: http:// or https://, a host, no spaces or control
 * characters, no query or fragment (connstr_router.c). Never the URL itself in a message:
 * it may carry a password. */
static bool url_ok(const char *url, char *err, size_t errcap)
{
    char why[256];
    if (connstr_router_check(url, CONNSTR_ROUTER_BASE, why, sizeof why) == CONNSTR_ROUTER_OK)
        return true;
    snprintf(err, errcap, "router URL: %s", why);
    return false;
}

router_t *router_new(struct event_base *base, const router_config_t *cfg, char *err, size_t errcap)
{
    router_t *router = NULL;
    size_t len;
    char scratch[1];
    bool ok = true;

    if (err == NULL || errcap == 0) {
        err = scratch;
        errcap = sizeof scratch;
    }
    if (base == NULL || cfg == NULL) {
        snprintf(err, errcap, "router_new: no event base or configuration");
        return NULL;
    }
    if (!url_ok(cfg->base_url, err, errcap))
        return NULL;
    router = calloc(1, sizeof *router);
    if (router == NULL)
        goto oom;
    router->base = base;
    router->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    router->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    router->max_body = cfg->max_body > 0 ? cfg->max_body : DEFAULT_MAX_BODY;

    len = strlen(cfg->base_url);
    while (len > 0 && cfg->base_url[len - 1] == '/')
        len--;
    for (int i = 0; i < PATH_COUNT; i++) {
        size_t plen = strlen(inference_paths[i]);
        router->urls[i] = malloc(len + plen + 1);
        if (router->urls[i] == NULL)
            goto oom;
        memcpy(router->urls[i], cfg->base_url, len);
        memcpy(router->urls[i] + len, inference_paths[i], plen + 1);
    }

    router->timer = evtimer_new(base, on_timer, router);
    router->multi = curl_multi_init();
    if (router->timer == NULL || router->multi == NULL)
        goto oom;
    ok = curl_multi_setopt(router->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb) == CURLM_OK
      && curl_multi_setopt(router->multi, CURLMOPT_SOCKETDATA, (void *)router) == CURLM_OK
      && curl_multi_setopt(router->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb) == CURLM_OK
      && curl_multi_setopt(router->multi, CURLMOPT_TIMERDATA, (void *)router) == CURLM_OK
      /* No eviction limit: when the cache holds more than the limit, curl 7.88 walks
       * every connection it holds (in use or not) each time a call ends, a measurable
       * share of the worker's CPU with thousands of calls in flight (docs/performance.md
       * has the figure). Keep-alive connections stay at most MAX_IDLE_CONNECTIONS
       * anyway: only calls started below that many in flight may keep theirs (see
       * router_call), and each of those reuses an idle one before opening another. */
      && curl_multi_setopt(router->multi, CURLMOPT_MAXCONNECTS, 1L << 20) == CURLM_OK
      && curl_multi_setopt(router->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L) == CURLM_OK
      && curl_multi_setopt(router->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L) == CURLM_OK;
    if (!ok) {
        snprintf(err, errcap, "router: libcurl refused a multi handle option");
        goto fail;
    }
    return router;
oom:
    snprintf(err, errcap, "router: out of memory");
fail:
    if (router != NULL)
        router_destroy(router);
    return NULL;
}

static void router_destroy(router_t *router)
{
    while (router->active.head != NULL) {
        router_call_t *call = router->active.head;
        list_unlink(&router->active, call);
        call_free(call);
    }
    while (router->finished.head != NULL) {
        router_call_t *call = router->finished.head;
        list_unlink(&router->finished, call);
        call_free(call);
    }
    router->count = 0;
    if (router->multi != NULL)
        curl_multi_cleanup(router->multi); /* closes cached connections (may call curl_socket_cb) */
    while (router->sockets != NULL)
        socket_free(router, router->sockets);
    while (router->spare_count > 0)
        curl_easy_cleanup(router->spare[--router->spare_count]);
    if (router->timer != NULL)
        event_free(router->timer);
    for (int i = 0; i < PATH_COUNT; i++)
        free(router->urls[i]);
    free(router);
}

void router_free(router_t *router)
{
    if (router == NULL)
        return;
    if (router->dispatching > 0) {
        /* Called from a done callback: router_process finishes the job when it returns. */
        router->free_requested = true;
        return;
    }
    router_destroy(router);
}
