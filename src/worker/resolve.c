/*
 * evdns lookups for the connections (see resolve.h). A request is one small struct; evdns
 * may answer inside evdns_getaddrinfo() (a numeric host, a hosts-file entry, an
 * immediate error), so such answers are kept and delivered from a zero-delay event, and
 * every answer reaches the caller from the loop. A cancelled request stays allocated until
 * evdns has called back with EVUTIL_EAI_CANCEL (or until its deferred event is dropped).
 */
#include "resolve.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#define RESOLVE_ADDR_CAP 64
#define RESOLVE_ERROR_CAP 160

struct resolver {
    struct event_base *base;
    struct evdns_base *dns;
};

struct resolve_request {
    resolver_t *r;
    resolve_done_fn done;
    void *arg;
    struct evdns_getaddrinfo_request *pending; /* evdns still owes a callback */
    struct event *later;                        /* delivers an answer evdns gave at once */
    bool starting;                              /* inside evdns_getaddrinfo() */
    bool answered;
    bool cancelled;
    char addr[RESOLVE_ADDR_CAP];
    char error[RESOLVE_ERROR_CAP];
};

resolver_t *resolver_new(struct event_base *base, const char *hosts_file, char *err,
                         size_t errcap)
{
    resolver_t *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errcap, "out of memory creating the resolver");
        return NULL;
    }
    r->base = base;
    /* Reads resolv.conf and /etc/hosts now; the loop is not kept alive by idle DNS. */
    r->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                      EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (r->dns == NULL) {
        snprintf(err, errcap, "could not set up the DNS resolver (/etc/resolv.conf)");
        free(r);
        return NULL;
    }
    if (hosts_file != NULL && hosts_file[0] != '\0' &&
        evdns_base_load_hosts(r->dns, hosts_file) != 0) {
        snprintf(err, errcap, "RETRYQ_HOSTS_FILE: cannot read %s", hosts_file);
        resolver_free(r);
        return NULL;
    }
    return r;
}

void resolver_free(resolver_t *r)
{
    if (r == NULL)
        return;
    /* fail_requests = 1: every pending lookup calls back now (cancelled or failed), which
     * frees its request (callers have cancelled theirs before). */
    evdns_base_free(r->dns, 1);
    free(r);
}

bool resolve_is_name(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (host == NULL || host[0] == '\0' || host[0] == '/' || host[0] == '@')
        return false;
    return inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1;
}

static void request_free(resolve_request_t *req)
{
    if (req->later != NULL)
        event_free(req->later);
    free(req);
}

static void deliver(resolve_request_t *req)
{
    resolve_done_fn done = req->done;
    void *arg = req->arg;
    char addr[RESOLVE_ADDR_CAP], error[RESOLVE_ERROR_CAP];
    memcpy(addr, req->addr, sizeof addr);
    memcpy(error, req->error, sizeof error);
    bool cancelled = req->cancelled;
    request_free(req);
    if (!cancelled)
        done(arg, addr[0] != '\0' ? addr : NULL, error);
}

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    deliver(arg);
}

static void on_answer(int result, struct evutil_addrinfo *res, void *arg)
{
    resolve_request_t *req = arg;
    req->pending = NULL;
    req->answered = true;
    /* An IPv4 address first when there is one: "localhost" is both 127.0.0.1 and ::1, and
     * servers are often bound to the IPv4 loopback only (libpq, given the name, would try
     * both; given one address it tries that one). */
    const struct evutil_addrinfo *pick = res;
    for (const struct evutil_addrinfo *a = res; a != NULL; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    if (result == 0 && pick != NULL) {
        const struct evutil_addrinfo *res_ = pick;
        const void *src = res_->ai_family == AF_INET6
                              ? (const void *)&((struct sockaddr_in6 *)res_->ai_addr)->sin6_addr
                              : (const void *)&((struct sockaddr_in *)res_->ai_addr)->sin_addr;
        if (evutil_inet_ntop(res_->ai_family, src, req->addr, sizeof req->addr) == NULL)
            snprintf(req->error, sizeof req->error, "could not print the address");
    } else {
        snprintf(req->error, sizeof req->error, "%s",
                 result == 0 ? "no address" : evutil_gai_strerror(result));
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (req->starting)
        return; /* resolve_start schedules the delivery */
    deliver(req);
}

resolve_request_t *resolve_start(resolver_t *r, const char *host, resolve_done_fn done,
                                 void *arg)
{
    resolve_request_t *req = calloc(1, sizeof *req);
    if (req == NULL)
        return NULL;
    req->r = r;
    req->done = done;
    req->arg = arg;
    req->later = event_new(r->base, -1, 0, later_cb, req);
    if (req->later == NULL) {
        free(req);
        return NULL;
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    req->starting = true;
    req->pending = evdns_getaddrinfo(r->dns, host, NULL, &hints, on_answer, req);
    req->starting = false;
    if (req->answered) {
        struct timeval now = {0, 0};
        if (event_add(req->later, &now) != 0) {
            request_free(req);
            return NULL;
        }
    }
    return req;
}

void resolve_cancel(resolve_request_t *req)
{
    if (req == NULL)
        return;
    req->cancelled = true;
    if (req->pending != NULL) {
        /* evdns calls on_answer with EVUTIL_EAI_CANCEL, which frees the request. */
        evdns_getaddrinfo_cancel(req->pending);
        return;
    }
    request_free(req); /* the answer was waiting in `later`: drop it */
}
