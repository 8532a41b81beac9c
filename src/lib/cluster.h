/*
 * Redis Cluster, the parts both clients need (libretryq's synchronous one in client.c and
 * the worker's in src/worker/sentinel.c and queue.c): the hash slot of a key, the owner
 * of a slot in a CLUSTER SLOTS answer, and the target of a -MOVED / -ASK redirection.
 * Pure functions over text and hiredis replies: no I/O.
 *
 * All keys of one queue share the slot of its name (the pending list is the name itself,
 * every other key carries it as the hash tag {Q}), so a queue lives on one primary.
 */
#ifndef RETRYQ_LIB_CLUSTER_H
#define RETRYQ_LIB_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "retryq/retryq.h"

#define CLUSTER_SLOTS 16384

/* CRC16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses it. */
uint16_t cluster_crc16(const char *buf, size_t len);
/* The slot of a key: of the text between the first '{' and the next '}' when that is not
 * empty, else of the whole key (Redis's keyHashSlot). */
int cluster_keyslot(const char *key, size_t len);

/* The primary serving `slot` in a CLUSTER SLOTS reply: its host and port. A node listed
 * with an empty host (it does not know its own address), "?" or NULL (Redis 7's
 * unknown-endpoint) is `asked`, the address the question went to. Every node of the
 * reply (primaries and replicas) is added to seen[] (at most seen_cap, without repeats,
 * *seen_count updated) so a later discovery can ask them too. False when the reply has no range holding the slot. */
typedef retryq_redis_endpoint_t cluster_node_t;
bool cluster_slot_owner(const redisReply *r, int slot, const char *asked, char *host,
                        size_t host_cap, int *port, cluster_node_t *seen, int seen_cap,
                        int *seen_count);

/* A redirection error: "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (the
 * host may be empty: the node that answered). False for any other text. */
typedef enum cluster_redirect_kind { CLUSTER_MOVED, CLUSTER_ASK } cluster_redirect_kind_t;
bool cluster_redirect_parse(const char *error, cluster_redirect_kind_t *kind, int *slot,
                            char *host, size_t host_cap, int *port);
/* Errors after which the same command can be sent again a little later, to the same node:
 * ASK, TRYAGAIN and CLUSTERDOWN (a slot being migrated or the cluster failing over; a
 * multi-key script cannot run until the migration is over). */
bool cluster_retry_later(const char *error);

#endif
