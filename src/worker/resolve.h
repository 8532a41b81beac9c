/*
 * Host names resolved on the worker's event_base with libevent's evdns, so that no
 * connect (hiredis 0.14 and libpq both call the blocking getaddrinfo() themselves) ever
 * waits for DNS on the loop: callers resolve first and connect to the numeric address.
 * /etc/resolv.conf and /etc/hosts are read once at creation (DNS_OPTIONS_ALL); an extra
 * hosts file (RETRYQ_HOSTS_FILE) may be loaded over them.
 */
#ifndef RETRYQ_WORKER_RESOLVE_H
#define RETRYQ_WORKER_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;

typedef struct resolver resolver_t;
typedef struct resolve_request resolve_request_t;

/* addr: the first address found, numeric ("10.0.0.5", "::1"), or NULL with `error` set.
 * Both are valid only during the call. */
typedef void (*resolve_done_fn)(void *arg, const char *addr, const char *error);

/* hosts_file: NULL or a hosts(5) file read after /etc/hosts. NULL on failure (err set). */
resolver_t *resolver_new(struct event_base *base, const char *hosts_file, char *err,
                         size_t errcap);
/* Pending requests are cancelled: their callbacks do not run. */
void resolver_free(resolver_t *r);

/* True when host needs resolving: not empty, not a numeric IPv4/IPv6 address, not a
 * Unix-socket path (starting with '/' or '@'). */
bool resolve_is_name(const char *host);

/* Starts a lookup (TCP addresses, IPv4 or IPv6). `done` runs exactly once from the loop,
 * never from inside resolve_start, unless the request is cancelled first. NULL when out of
 * memory (done never runs). */
resolve_request_t *resolve_start(resolver_t *r, const char *host, resolve_done_fn done,
                                 void *arg);
/* Cancels a request whose callback has not run yet; `done` will not run. */
void resolve_cancel(resolve_request_t *req);

#endif
