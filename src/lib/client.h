/*
 * The synchronous client behind retryq_client_t: one hiredis connection and one libpq
 * connection, each opened on first use and re-opened after a failure. client.c owns
 * this struct; submit.c, migrate.c, stats.c, dead.c and flow.c use the accessors below.
 */
#ifndef RETRYQ_LIB_CLIENT_H
#define RETRYQ_LIB_CLIENT_H

#include <time.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "cluster.h"
#include "internal.h"

struct retryq_client {
    char *redis_url;
    char *database_url;        /* NULL when none was configured */
    retryq_redis_url_t redis;  /* parsed redis_url */
    retryq_keys_t keys;
    int connect_timeout_ms;
    int command_timeout_ms;
    redisContext *rc;          /* NULL until first use or after an error */
    /* redis+cluster://: the node a MOVED named (asked first), and every node the last
     * CLUSTER SLOTS answer listed (asked after the seeds) */
    cluster_node_t cluster_hint;
    cluster_node_t cluster_seen[16];
    int cluster_seen_count;
    PGconn *pg;                /* NULL until first use or after an error */
};

/* The live Redis connection (connect + AUTH + SELECT on first use). NULL with err
 * (RETRYQ_ERR_REDIS) when Redis is unavailable. */
redisContext *rq_client_redis(retryq_client_t *client, retryq_error_t *err);
/* Call after a command failed at the I/O level: drops the connection so the next use
 * reconnects. */
void rq_client_redis_reset(retryq_client_t *client);
/* Runs one command (hiredis format) on the live connection and checks the reply. Returns
 * the reply (free it with freeReplyObject) or NULL with err filled (RETRYQ_ERR_REDIS) when
 * Redis is unavailable, answers with an error, or answers with a type other than
 * `type` (a REDIS_REPLY_* value, or -1 for any). An I/O failure drops the connection.
 * On a Redis Cluster a -MOVED reconnects to the node named and sends the command again;
 * -ASK, -TRYAGAIN and -CLUSTERDOWN send it again after a short pause (none of them ran
 * the command), for up to the command timeout. */
redisReply *rq_client_command(retryq_client_t *client, int type, retryq_error_t *err,
                              const char *fmt, ...);
/* The same with the arguments given one by one (argvlen NULL: each is a C string), for
 * commands with a variable number of them (MGET, EVAL with many KEYS). */
redisReply *rq_client_command_argv(retryq_client_t *client, int type, retryq_error_t *err, int argc,
                                   const char **argv, const size_t *argvlen);
/* After an error reply on a Redis Cluster: true when the command did not run and should
 * be sent again (MOVED: to the node it names, on a new connection, at most a few times
 * per command; ASK, TRYAGAIN, CLUSTERDOWN: after a short pause, while less than the
 * command timeout has passed since `start`, CLOCK_MONOTONIC). False for any other reply
 * and on a non-cluster URL. */
bool rq_client_cluster_again(retryq_client_t *client, const redisReply *reply, int *redirects,
                             const struct timespec *start);
/* Redis's clock (TIME) in ms since the epoch. */
int rq_client_time_ms(retryq_client_t *client, int64_t *now_ms, retryq_error_t *err);

/* The live PostgreSQL connection (connect_timeout applied). NULL with err
 * (RETRYQ_ERR_DATABASE) when unavailable or when no database URL was configured. */
PGconn *rq_client_pg(retryq_client_t *client, retryq_error_t *err);
/* Drops a broken PostgreSQL connection (after PQstatus(pg) != CONNECTION_OK). */
void rq_client_pg_reset(retryq_client_t *client);

#endif
