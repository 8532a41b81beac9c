/*
 * Redis Sentinel and Redis Cluster (see sentinel.h for the contract): discovery of the
 * primary over short-lived async connections, one sentinel (or cluster node) at a time,
 * and for Sentinel a +switch-master subscription on one long-lived connection. The two
 * discoveries differ only in the question (SENTINEL get-master-addr-by-name, or CLUSTER
 * SLOTS and the owner of the queue's slot) and in whom they ask (the sentinels, or the
 * seed nodes and then every node the last CLUSTER SLOTS answer listed).
 *
 * hiredis frees a context itself when its connect fails or it is lost, and calls the
 * pending callbacks with NULL; every callback here first checks that the context is still
 * the one this module holds (s->probe / s->sub), so a late callback of a context given
 * up is ignored. A context is given up with redisAsyncDisconnect from inside one of its
 * own callbacks (hiredis finishes it after the callback returns) and with redisAsyncFree
 * from a timer. The result of a discovery is handed over from a zero timer, so the
 * queue never runs from inside a hiredis callback of this module.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "cluster.h"
#include "connstr.h"
#include "internal.h"
#include "log.h"
#include "sentinel.h"

#define SUB_BACKOFF_MIN_MS 250
#define SUB_BACKOFF_MAX_MS 5000
#define SEEN_MAX 16 /* cluster nodes remembered from the last CLUSTER SLOTS answer */

struct sentinel {
    struct event_base *base;
    resolver_t *resolver;
    retryq_redis_url_t url;
    int timeout_ms;
    sentinel_callbacks_t cb;
    const char *what;             /* the log component: redis.sentinel or redis.cluster */
    int slot;                     /* Cluster: the queue's hash slot */
    cluster_node_t seen[SEEN_MAX]; /* Cluster: nodes listed by the last answer */
    int seen_count;
    char probe_addr[256];         /* the numeric address being asked */
    int preferred;                /* the sentinel that answered last: asked first */
    /* discovery */
    bool discovering;
    int tried;                    /* sentinels asked in this discovery */
    int index;                    /* the one being asked */
    redisAsyncContext *probe;
    resolve_request_t *probe_dns; /* a sentinel's name, or the primary's it gave */
    int answer_port;
    struct event *probe_deadline;
    struct event *found_ev;       /* hands the result over from the loop */
    char found_host[256];
    int found_port;
    char attempt_error[300];      /* why the last sentinel asked gave no answer */
    char last_error[400];         /* why the last discovery failed, "" after a success */
    /* subscription */
    redisAsyncContext *sub;
    resolve_request_t *sub_dns;
    int sub_index;
    bool subscribed;
    int sub_backoff_ms;
    struct event *sub_timer;      /* connect deadline while connecting, else the retry */
};

static void probe_next(sentinel_t *s);
static void sub_start(sentinel_t *s);

/* Whom a discovery asks: the sentinels, or the seeds then the cluster nodes seen. */
static int endpoint_count(const sentinel_t *s)
{
    return s->url.endpoint_count + s->seen_count;
}

static const retryq_redis_endpoint_t *endpoint(const sentinel_t *s, int i)
{
    i %= endpoint_count(s);
    return i < s->url.endpoint_count ? &s->url.endpoints[i] : &s->seen[i - s->url.endpoint_count];
}

/* A context set up the same way for both uses; NULL with why filled. */
static redisAsyncContext *open_context(sentinel_t *s, const char *addr, int port,
                                       redisConnectCallback *on_connect,
                                       redisDisconnectCallback *on_disconnect, char *why,
                                       size_t cap)
{
    redisAsyncContext *ac = redisAsyncConnect(addr, port);
    if (ac == NULL) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    if (ac->err) {
        snprintf(why, cap, "%s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    if (redisLibeventAttach(ac, s->base) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, on_disconnect) != REDIS_OK) {
        snprintf(why, cap, "could not attach to the event loop");
        redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

/* ------------------------------------------------------------------ discovery */

static void found_cb(evutil_socket_t fd, short what, void *arg)
{
    sentinel_t *s = arg;
    (void)fd;
    (void)what;
    if (s->found_host[0] != '\0')
        s->cb.found(s->cb.arg, s->found_host, s->found_port, NULL);
    else
        s->cb.found(s->cb.arg, NULL, 0, s->last_error);
}

static void finish(sentinel_t *s, const char *host, int port)
{
    s->discovering = false;
    evtimer_del(s->probe_deadline);
    if (host != NULL) {
        s->preferred = s->index % endpoint_count(s);
        rq_copy(s->found_host, sizeof s->found_host, host);
        s->found_port = port;
        s->last_error[0] = '\0';
    } else {
        s->found_host[0] = '\0';
        if (s->url.is_cluster)
            snprintf(s->last_error, sizeof s->last_error,
                     "no cluster node of %d named the primary of slot %d (last: %s)",
                     endpoint_count(s), s->slot, s->attempt_error);
        else
            snprintf(s->last_error, sizeof s->last_error,
                     "no sentinel of %d gave the primary of master %s (last: %s)",
                     s->url.endpoint_count, s->url.master, s->attempt_error);
    }
    struct timeval now = {0, 0};
    if (evtimer_add(s->found_ev, &now) < 0)
        log_error("redis.sentinel", "could not arm the discovery timer");
}

/* Gives the probe's connection and lookup up; from inside one of the context's own
 * callbacks hiredis must finish it (disconnect), elsewhere it is freed now. */
static void probe_close(sentinel_t *s, bool in_callback)
{
    if (s->probe_dns != NULL) {
        resolve_cancel(s->probe_dns);
        s->probe_dns = NULL;
    }
    redisAsyncContext *ac = s->probe;
    s->probe = NULL;
    if (ac == NULL)
        return;
    if (in_callback)
        redisAsyncDisconnect(ac);
    else
        redisAsyncFree(ac);
}

static void probe_failed(sentinel_t *s, bool in_callback, const char *why)
{
    const retryq_redis_endpoint_t *e = endpoint(s, s->index);
    char where[300];
    connstr_redis_address(e->host, e->port, where, sizeof where);
    snprintf(s->attempt_error, sizeof s->attempt_error, "%s %s: %s",
             s->url.is_cluster ? "node" : "sentinel", where, why);
    log_debug(s->what, "%s", s->attempt_error);
    probe_close(s, in_callback);
    evtimer_del(s->probe_deadline);
    probe_next(s);
}

static void on_answer_resolved(void *arg, const char *addr, const char *error)
{
    sentinel_t *s = arg;
    s->probe_dns = NULL;
    if (addr == NULL) {
        char why[300];
        snprintf(why, sizeof why, "the primary's name does not resolve: %s", error);
        probe_failed(s, false, why);
        return;
    }
    finish(s, addr, s->answer_port);
}

/* The address an answer named (a primary, or the owner of the slot): a name is resolved
 * on the loop first (a Cluster announcing host names, a sentinel its primary's). */
static void answer(sentinel_t *s, const char *host, int port)
{
    if (s->resolver != NULL && resolve_is_name(host)) {
        s->answer_port = port;
        s->probe_dns = resolve_start(s->resolver, host, on_answer_resolved, s);
        if (s->probe_dns == NULL)
            probe_failed(s, false, "out of memory");
        return;
    }
    finish(s, host, port);
}

static void on_probe_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    sentinel_t *s = privdata;
    redisReply *r = reply;
    if (r == NULL || s->probe != ac || r->type != REDIS_REPLY_ERROR)
        return;
    char why[300];
    snprintf(why, sizeof why, "AUTH refused: %s", r->str);
    probe_failed(s, true, why);
}

static void on_probe_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    sentinel_t *s = privdata;
    redisReply *r = reply;
    if (r == NULL || s->probe != ac)
        return; /* the loss is reported by the disconnect callback */
    char why[300];
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof why, "%s", r->str);
        probe_failed(s, true, why);
        return;
    }
    char host[256];
    if (s->url.is_cluster) {
        int owner_port = 0;
        cluster_node_t seen[SEEN_MAX];
        int seen_count = 0;
        if (!cluster_slot_owner(r, s->slot, s->probe_addr, host, sizeof host, &owner_port, seen,
                                SEEN_MAX, &seen_count)) {
            snprintf(why, sizeof why, "CLUSTER SLOTS names no primary for slot %d", s->slot);
            probe_failed(s, true, why);
            return;
        }
        /* asked next time after the seeds; the index of the one that answered may shift */
        memcpy(s->seen, seen, sizeof seen);
        s->seen_count = seen_count;
        probe_close(s, true);
        answer(s, host, owner_port);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(why, sizeof why, "does not know master %s", s->url.master);
        probe_failed(s, true, why);
        return;
    }
    char *end;
    long port = strtol(r->element[1]->str, &end, 10);
    if (!rq_copy(host, sizeof host, r->element[0]->str) || host[0] == '\0' || *end != '\0' ||
        port < 1 || port > 65535) {
        probe_failed(s, true, "answered an address that is not host and port");
        return;
    }
    probe_close(s, true);
    answer(s, host, (int)port);
}

static void on_probe_connect(const redisAsyncContext *ac, int status)
{
    sentinel_t *s = ac->data;
    if (status == REDIS_OK || s == NULL || s->probe != ac)
        return;
    s->probe = NULL; /* hiredis frees it */
    probe_failed(s, false, ac->errstr);
}

static void on_probe_disconnect(const redisAsyncContext *ac, int status)
{
    sentinel_t *s = ac->data;
    (void)status;
    if (s == NULL || s->probe != ac)
        return;
    s->probe = NULL;
    probe_failed(s, false, ac->errstr[0] != '\0' ? ac->errstr : "connection lost");
}

static void probe_connect(sentinel_t *s, const char *addr)
{
    const retryq_redis_endpoint_t *e = endpoint(s, s->index);
    char why[256];
    redisAsyncContext *ac = open_context(s, addr, e->port, on_probe_connect, on_probe_disconnect,
                                         why, sizeof why);
    if (ac == NULL) {
        probe_failed(s, false, why);
        return;
    }
    s->probe = ac;
    rq_copy(s->probe_addr, sizeof s->probe_addr, addr);
    /* a cluster node takes the data nodes' AUTH, a sentinel its own */
    const char *auth[3];
    int nauth = s->url.is_cluster ? connstr_redis_auth(&s->url, auth)
                                  : connstr_redis_sentinel_auth(&s->url, auth);
    const char *ask[] = {"SENTINEL", "get-master-addr-by-name", s->url.master};
    const char *slots[] = {"CLUSTER", "SLOTS"};
    if ((nauth > 0 && redisAsyncCommandArgv(ac, on_probe_auth, s, nauth, auth, NULL) != REDIS_OK) ||
        (s->url.is_cluster ? redisAsyncCommandArgv(ac, on_probe_reply, s, 2, slots, NULL)
                           : redisAsyncCommandArgv(ac, on_probe_reply, s, 3, ask, NULL)) != REDIS_OK)
        probe_failed(s, false, "could not queue the question");
}

static void on_probe_resolved(void *arg, const char *addr, const char *error)
{
    sentinel_t *s = arg;
    s->probe_dns = NULL;
    if (addr == NULL) {
        char why[300];
        snprintf(why, sizeof why, "does not resolve: %s", error);
        probe_failed(s, false, why);
        return;
    }
    probe_connect(s, addr);
}

static void probe_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    sentinel_t *s = arg;
    char why[64];
    (void)fd;
    (void)what;
    snprintf(why, sizeof why, "no answer within %d ms", s->timeout_ms);
    probe_failed(s, false, why);
}

static void probe_next(sentinel_t *s)
{
    if (s->tried >= endpoint_count(s)) {
        finish(s, NULL, 0);
        return;
    }
    s->index = (s->preferred + s->tried) % endpoint_count(s);
    s->tried++;
    struct timeval tv = clock_tv_ms(s->timeout_ms);
    if (evtimer_add(s->probe_deadline, &tv) < 0)
        log_error(s->what, "could not arm the discovery deadline");
    const retryq_redis_endpoint_t *e = endpoint(s, s->index);
    if (s->resolver != NULL && resolve_is_name(e->host)) {
        s->probe_dns = resolve_start(s->resolver, e->host, on_probe_resolved, s);
        if (s->probe_dns == NULL)
            probe_failed(s, false, "out of memory");
        return;
    }
    probe_connect(s, e->host);
}

void sentinel_discover(sentinel_t *s)
{
    if (s->discovering)
        return;
    s->discovering = true;
    s->tried = 0;
    s->attempt_error[0] = '\0';
    evtimer_del(s->found_ev);
    probe_next(s);
}

/* ------------------------------------------------------------------ subscription */

static void sub_schedule(sentinel_t *s)
{
    s->subscribed = false;
    s->sub_index = (s->sub_index + 1) % s->url.endpoint_count;
    struct timeval tv = clock_tv_ms(s->sub_backoff_ms);
    s->sub_backoff_ms = s->sub_backoff_ms * 2 > SUB_BACKOFF_MAX_MS ? SUB_BACKOFF_MAX_MS
                                                                   : s->sub_backoff_ms * 2;
    if (evtimer_add(s->sub_timer, &tv) < 0)
        log_error("redis.sentinel", "could not arm the subscription timer");
}

/* Drops the subscription from outside hiredis (a zero timer when inside a callback). */
static void sub_drop_soon(sentinel_t *s)
{
    s->subscribed = false;
    struct timeval now = {0, 0};
    if (evtimer_add(s->sub_timer, &now) < 0)
        log_error("redis.sentinel", "could not arm the subscription timer");
}

static void on_sub_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    sentinel_t *s = privdata;
    redisReply *r = reply;
    if (r == NULL || s->sub != ac)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        log_warn("redis.sentinel", "the sentinel refused SUBSCRIBE +switch-master: %s", r->str);
        sub_drop_soon(s);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcasecmp(kind, "subscribe") == 0) {
        evtimer_del(s->sub_timer);
        s->subscribed = true;
        s->sub_backoff_ms = SUB_BACKOFF_MIN_MS;
        const retryq_redis_endpoint_t *e = endpoint(s, s->sub_index);
        log_info("redis.sentinel", "watching +switch-master on sentinel %s:%d", e->host, e->port);
        s->cb.changed(s->cb.arg); /* an event may have passed while nobody listened */
        return;
    }
    if (strcasecmp(kind, "message") != 0 || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    /* "<master name> <old ip> <old port> <new ip> <new port>" */
    const char *text = r->element[2]->str;
    size_t n = strcspn(text, " ");
    if (n != strlen(s->url.master) || strncmp(text, s->url.master, n) != 0)
        return;
    log_info("redis.sentinel", "+switch-master %s", text);
    s->cb.changed(s->cb.arg);
}

static void on_sub_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    sentinel_t *s = privdata;
    redisReply *r = reply;
    if (r != NULL && s->sub == ac && r->type == REDIS_REPLY_ERROR)
        log_warn("redis.sentinel", "the sentinel refused AUTH: %s", r->str);
}

static void on_sub_connect(const redisAsyncContext *ac, int status)
{
    sentinel_t *s = ac->data;
    if (status == REDIS_OK || s == NULL || s->sub != ac)
        return;
    log_debug("redis.sentinel", "subscription connect failed: %s", ac->errstr);
    s->sub = NULL;
    sub_schedule(s);
}

static void on_sub_disconnect(const redisAsyncContext *ac, int status)
{
    sentinel_t *s = ac->data;
    (void)status;
    if (s == NULL || s->sub != ac)
        return;
    log_info("redis.sentinel", "lost the +switch-master subscription: %s",
             ac->errstr[0] != '\0' ? ac->errstr : "connection closed");
    s->sub = NULL;
    sub_schedule(s);
}

static void sub_connect(sentinel_t *s, const char *addr)
{
    const retryq_redis_endpoint_t *e = endpoint(s, s->sub_index);
    char why[256];
    redisAsyncContext *ac = open_context(s, addr, e->port, on_sub_connect, on_sub_disconnect, why,
                                         sizeof why);
    if (ac == NULL) {
        log_warn("redis.sentinel", "cannot open the subscription: %s", why);
        sub_schedule(s);
        return;
    }
    s->sub = ac;
    (void)redisEnableKeepAlive(&ac->c); /* a silent sentinel host is noticed by TCP */
    const char *auth[2];
    int nauth = connstr_redis_sentinel_auth(&s->url, auth);
    const char *subscribe[] = {"SUBSCRIBE", "+switch-master"};
    if ((nauth > 0 && redisAsyncCommandArgv(ac, on_sub_auth, s, nauth, auth, NULL) != REDIS_OK) ||
        redisAsyncCommandArgv(ac, on_sub_message, s, 2, subscribe, NULL) != REDIS_OK) {
        sub_drop_soon(s);
        return;
    }
    struct timeval tv = clock_tv_ms(s->timeout_ms); /* not subscribed by then: next one */
    if (evtimer_add(s->sub_timer, &tv) < 0)
        log_error("redis.sentinel", "could not arm the subscription deadline");
}

static void on_sub_resolved(void *arg, const char *addr, const char *error)
{
    sentinel_t *s = arg;
    s->sub_dns = NULL;
    if (addr == NULL) {
        log_warn("redis.sentinel", "sentinel %s does not resolve: %s",
                 endpoint(s, s->sub_index)->host, error);
        sub_schedule(s);
        return;
    }
    sub_connect(s, addr);
}

static void sub_start(sentinel_t *s)
{
    const retryq_redis_endpoint_t *e = endpoint(s, s->sub_index);
    if (s->resolver != NULL && resolve_is_name(e->host)) {
        s->sub_dns = resolve_start(s->resolver, e->host, on_sub_resolved, s);
        if (s->sub_dns == NULL)
            sub_schedule(s);
        return;
    }
    sub_connect(s, e->host);
}

/* Retry after a loss, or the deadline of a subscription that did not come up. */
static void sub_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    sentinel_t *s = arg;
    (void)fd;
    (void)what;
    if (s->sub != NULL) {
        if (s->subscribed)
            return;
        redisAsyncContext *ac = s->sub;
        s->sub = NULL;
        redisAsyncFree(ac);
        sub_schedule(s);
        return;
    }
    if (s->sub_dns == NULL)
        sub_start(s);
}

/* ------------------------------------------------------------------ lifecycle */

sentinel_t *sentinel_new(struct event_base *base, resolver_t *resolver,
                         const retryq_redis_url_t *url, int cluster_slot, int timeout_ms,
                         const sentinel_callbacks_t *cb, char *err, size_t errcap)
{
    if ((!url->is_sentinel && !url->is_cluster) || url->endpoint_count < 1) {
        snprintf(err, errcap, "not a redis+sentinel:// or redis+cluster:// URL");
        return NULL;
    }
    sentinel_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    s->base = base;
    s->resolver = resolver;
    s->url = *url;
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    s->cb = *cb;
    s->what = url->is_cluster ? "redis.cluster" : "redis.sentinel";
    s->slot = cluster_slot;
    s->sub_backoff_ms = SUB_BACKOFF_MIN_MS;
    s->probe_deadline = evtimer_new(base, probe_deadline_cb, s);
    s->found_ev = evtimer_new(base, found_cb, s);
    s->sub_timer = evtimer_new(base, sub_timer_cb, s);
    if (s->probe_deadline == NULL || s->found_ev == NULL || s->sub_timer == NULL) {
        snprintf(err, errcap, "out of memory");
        sentinel_free(s);
        return NULL;
    }
    if (!url->is_cluster) /* a Cluster's changes show as MOVED replies and lost connections */
        sub_start(s);
    return s;
}

void sentinel_free(sentinel_t *s)
{
    if (s == NULL)
        return;
    probe_close(s, false);
    if (s->sub_dns != NULL)
        resolve_cancel(s->sub_dns);
    redisAsyncContext *sub = s->sub;
    s->sub = NULL;
    if (sub != NULL)
        redisAsyncFree(sub);
    struct event *events[] = {s->probe_deadline, s->found_ev, s->sub_timer};
    for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
        if (events[i] != NULL)
            event_free(events[i]);
    memset(s->url.sentinel_password, 0, sizeof s->url.sentinel_password);
    memset(s->url.password, 0, sizeof s->url.password);
    free(s);
}

bool sentinel_discovering(const sentinel_t *s)
{
    return s->discovering;
}

const char *sentinel_last_error(const sentinel_t *s)
{
    return s->last_error;
}

bool sentinel_subscribed(const sentinel_t *s)
{
    return s->subscribed;
}
