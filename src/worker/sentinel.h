/*
 * Redis Sentinel on the worker's event_base: which server is the primary of a master
 * name, and when that changes. Owned by the queue (queue.c) when the Redis URL is
 * redis+sentinel://; nothing here blocks the loop.
 *
 *  - Discovery: the sentinels are asked in turn (the one that answered last first), each
 *    over a short-lived hiredis async connection bounded by a deadline: AUTH when a
 *    sentinel password is set, then SENTINEL get-master-addr-by-name NAME. The first
 *    address given is the answer (the queue then checks it with ROLE). Host names, of a
 *    sentinel or of the primary it names, are resolved with evdns first (resolve.h).
 *  - Events: one long-lived connection to one sentinel with SUBSCRIBE +switch-master;
 *    an event for this master name, or a (re)subscription after the subscription was
 *    lost (an event may have been missed), calls `changed`. The subscription moves to the
 *    next sentinel when its connection is lost.
 *
 * Redis Cluster (redis+cluster://) uses the same discovery with another question: the
 * seed nodes, then every node the last answer listed, are asked in turn (with the data
 * nodes' AUTH) for CLUSTER SLOTS, and the answer is the primary serving the queue's hash
 * slot. There is no subscription: a Cluster's changes reach the queue as -MOVED replies
 * and lost connections.
 */
#ifndef RETRYQ_WORKER_SENTINEL_H
#define RETRYQ_WORKER_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>

#include "resolve.h"
#include "retryq/retryq.h"

struct event_base;

typedef struct sentinel sentinel_t;

typedef struct sentinel_callbacks {
    /* A discovery ended: the primary's numeric address and port, or host NULL and the
     * reason (every sentinel tried). Runs from the loop, never inside sentinel_discover. */
    void (*found)(void *arg, const char *host, int port, const char *error);
    /* A sentinel announced a new primary for the master name, or the subscription was
     * re-established (events may have been missed): the caller should discover again. */
    void (*changed)(void *arg);
    void *arg;
} sentinel_callbacks_t;

/* url: a parsed redis+sentinel:// or redis+cluster:// URL (copied); cluster_slot: the
 * queue's hash slot (Cluster only). timeout_ms bounds one sentinel's connect and answer. resolver may be NULL (then names are given to hiredis as they are). NULL on
 * failure with err filled. The subscription starts at once. */
sentinel_t *sentinel_new(struct event_base *base, resolver_t *resolver,
                         const retryq_redis_url_t *url, int cluster_slot, int timeout_ms,
                         const sentinel_callbacks_t *cb, char *err, size_t errcap);
/* Closes every connection; no callback runs afterwards. NULL is fine. */
void sentinel_free(sentinel_t *s);

/* Starts a discovery unless one is running (then its answer serves both). */
void sentinel_discover(sentinel_t *s);
bool sentinel_discovering(const sentinel_t *s);
/* The reason the last discovery failed, "" after one succeeded. */
const char *sentinel_last_error(const sentinel_t *s);
/* True while the +switch-master subscription is established. */
bool sentinel_subscribed(const sentinel_t *s);

#endif
