/*
 * The Redis side of the worker, on the worker's event_base through hiredis' async API
 * and its libevent adapter. Two connections: one only for taking jobs (a batch move by
 * Lua, then a blocking BLMOVE/BRPOPLPUSH when the queue is empty), one for everything
 * else. Both reconnect on their own with exponential backoff and full jitter.
 *
 * Writes that change a job's place (ack, dead-letter, delay, requeue) are "operations":
 * queued in memory, sent in order, and sent again after a reconnect until Redis answers,
 * so an ack that could not be sent during an outage is sent when Redis returns. Each
 * operation's Lua script is conditional on the job still being in this worker's
 * processing list, which makes a resend after a lost reply harmless.
 *
 * With a redis+sentinel:// URL the connections go to the primary the sentinels name
 * (sentinel.h), checked with ROLE; any loss, READONLY reply or +switch-master event
 * makes the next connect ask them again.
 */
#ifndef RETRYQ_WORKER_QUEUE_H
#define RETRYQ_WORKER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "retryq/retryq.h"

struct event_base;
struct resolver;

typedef struct queue queue_t;

typedef struct queue_callbacks {
    /* A job was taken into the processing list. The payload is only valid during the call.
     * `rescan` marks jobs found in this worker's own list after the pop connection was
     * lost: the worker ignores those it already holds. */
    void (*job)(void *arg, const char *payload, size_t len, bool rescan);
    /* A job taken by a pop was cancelled (retryq_cancel left a tombstone for it): it left
     * the processing list again and is not handed out. `id` is "<execution_id>:<attempt>",
     * valid during the call. May be NULL. */
    void (*cancelled)(void *arg, const char *id, size_t len);
    /* The pop found the queue empty (after its blocking wait). */
    void (*idle)(void *arg);
    /* Connection state changed (for readiness, logs and resuming work). */
    void (*state)(void *arg);
    void *arg;
} queue_callbacks_t;

typedef struct queue_config {
    const retryq_redis_url_t *url;
    const retryq_keys_t *keys;
    const char *worker_id;
    int connect_timeout_ms;   /* connect + AUTH/SELECT, default 5000 */
    int command_timeout_ms;   /* a reply overdue by this much drops the connection */
    int block_ms;             /* how long one blocking pop waits, e.g. 1000 */
    int batch;                /* jobs moved per Lua batch pop, e.g. 64 */
    int dead_max;             /* cap of the dead list */
    int heartbeat_ms;         /* lease recovery waits this (+ the reconnect backoff cap)
                                 after each (re)connect, so live peers re-announce first */
    int self_check_page;      /* entries of the own list one self-check reads, e.g. 100 */
    struct resolver *resolver; /* redis+sentinel://: names of sentinels and primaries (may be NULL) */
} queue_config_t;

queue_t *queue_new(struct event_base *base, const queue_config_t *cfg,
                   const queue_callbacks_t *cb, char *err, size_t errcap);
/* Drops both connections and every unsent operation; no callback runs. */
void queue_free(queue_t *q);

/* Tells the queue how many more jobs the worker can take now (0 stops taking). */
void queue_set_room(queue_t *q, size_t room);
/* Makes a pop that is out answer at once (CLIENT UNBLOCK from the command connection),
 * so it brings no job the worker could not start (the store went down); once per pop. */
void queue_cancel_pop(queue_t *q);

/* Removes one job from this worker's processing list (LREM). */
void queue_ack(queue_t *q, const char *payload, size_t len);
/* Moves a job from the processing list to the dead list with a reason (capped list). */
void queue_dead(queue_t *q, const char *payload, size_t len, const char *reason);
/* Moves a job from the processing list to the delayed set, replaced by `next_payload`
 * (its delivery count bumped), due at `due_ms` (Redis clock, ms since the epoch). */
void queue_delay(queue_t *q, const char *payload, size_t len, const char *next_payload,
                 int64_t delay_ms);
/* Moves a job from the processing list back to the head of the queue (it runs next). */
void queue_requeue(queue_t *q, const char *payload, size_t len);

/* Periodic maintenance, each one Lua call on Redis's clock: refresh this worker's
 * heartbeat; move every worker's list whose heartbeat is older than lease_ms back to
 * the queue; promote due delayed jobs. */
void queue_heartbeat(queue_t *q);
void queue_recover(queue_t *q, int lease_ms);
void queue_promote(queue_t *q);
/* Drops the tombstones of {Q}:cancelled older than retention_ms (Redis clock). */
void queue_trim_cancelled(queue_t *q, int64_t retention_ms);
/* One more promotion, delay_ms from now, for a job parked for less than the schedule's
 * tick (flow control's short waits); one timer, the earliest request wins. */
void queue_promote_soon(queue_t *q, int64_t delay_ms);
/* Compares one page of this worker's processing list with the jobs in flight (the job
 * callback with rescan = true, at most the room there is) so that a job left there by a
 * dropped write is taken again; call it periodically (each heartbeat). */
void queue_self_check(queue_t *q);
/* Drops a connection whose oldest reply is overdue by more than command_timeout_ms (a hung
 * or partitioned server: hiredis 0.14 has no command timeout; a blocking pop gets its block
 * time on top), and PINGs a connection idle for QUEUE_PING_IDLE_MS so that a silent one is
 * found too; the worker's periodic schedule runs it every QUEUE_WATCHDOG_MS, from start to
 * teardown. */
#define QUEUE_WATCHDOG_MS 500
/* A ready connection idle this long is sent a PING by the watchdog (then held to the
 * command timeout like any reply). */
#define QUEUE_PING_IDLE_MS 2000
void queue_watchdog(queue_t *q, int64_t now_ms);
/* At a graceful exit: move what is left in this worker's list to the head of the queue
 * and leave {Q}:workers (and {Q}:workerinfo). Waits for a blocking pop still out (made to
 * answer at once with CLIENT UNBLOCK), so that no job lands in the list after the worker
 * has left; takes nothing and sends no heartbeat afterwards. The list goes back in calls
 * of a bounded number of jobs, one after the other; `done` runs once, after the last
 * (empty: true, the worker has left) or when Redis refused one (false). */
void queue_leave(queue_t *q, void (*done)(void *arg, bool empty), void *arg);
/* Asks whether no work is left anywhere but in this worker: queue, delayed set, other
 * workers' lists, and no other worker silent for longer than suspect_ms (a dead one not yet
 * recovered). `done` gets the answer. */
void queue_check_empty(queue_t *q, int suspect_ms, void (*done)(void *arg, bool empty), void *arg);

/* ---- for the orphan sweep (janitor.c) ---- */
/* SET key NX PX ttl: `done` learns whether this worker holds the named lock
 * ("{Q}:lock:<name>"). Not called when the connection is lost or the queue freed. */
void queue_try_lock(queue_t *q, const char *name, int ttl_ms,
                    void (*done)(void *arg, bool got), void *arg);
/* LPUSH one job as an operation (kept and resent until Redis answers). */
void queue_push(queue_t *q, const char *payload, size_t len);
/* Sends one command on the command connection (not resent when lost): `done` gets the
 * reply, or NULL when the command could not be sent or answered, was refused, or the
 * queue is being freed. May call `done` before returning. (The sweep's paged scripts.) */
struct redisReply;
void queue_command(queue_t *q, int argc, const char **argv,
                   void (*done)(void *arg, const struct redisReply *reply), void *arg);

/* ---- for flow control (flow.c) ---- */
/* Runs one Lua script with EVAL on the command connection: `keys` are all the keys it
 * touches (KEYS, so Redis Cluster can route it), `args` its ARGV. `done` gets the reply,
 * or NULL when the script could not be sent or answered, was refused (logged), or the
 * queue is being freed. Not sent again when the connection is lost: the caller must be
 * able to live with a lost reply. May call `done` before returning. */
void queue_script(queue_t *q, const char *script, int nkeys, const char *const *keys, int nargs,
                  const char *const *args, void (*done)(void *arg, const struct redisReply *reply),
                  void *arg);
/* One command as an operation: sent in order with the acks and sent again after a
 * reconnect until Redis answers, for commands whose second run changes nothing more than
 * the first (ZREM of a permit, say); no reply for the caller. */
void queue_command_op(queue_t *q, int argc, const char *const *argv);

/* ---- for /metrics and the status page ---- */
typedef struct queue_depths {
    int64_t pending;          /* LLEN Q */
    int64_t processing;       /* jobs in the lists of the workers in {Q}:workers */
    int64_t delayed;          /* ZCARD {Q}:delayed */
    int64_t dead;             /* LLEN {Q}:dead */
    int64_t workers;          /* ZCARD {Q}:workers */
    int64_t workers_live;     /* of those, heartbeat within lease_ms */
    int64_t now_ms;           /* Redis's clock (TIME), ms since the epoch */
    const char *oldest;       /* the next job to be taken (valid during the callback), or NULL */
    size_t oldest_len;
} queue_depths_t;
/* One Lua call on the command connection; `done` gets NULL when the question could not
 * be asked or answered (also while the queue is being freed). */
void queue_depths(queue_t *q, int lease_ms, void (*done)(void *arg, const queue_depths_t *d),
                  void *arg);
/* How long the worker has had room for jobs without a reply on the pop connection (ms);
 * 0 while it wants nothing. A live pop connection answers at least every block_ms; a
 * reconnect does not reset this (only a pop reply does), so pops that hang across
 * reconnects (e.g. writes paused on the server) still show. */
int64_t queue_pop_stalled_ms(const queue_t *q);

/* How long pops have been refused in a row by a live connection (OOM, WRONGTYPE...; ms,
 * 0 when the last pop was accepted); they are retried with backoff meanwhile. */
int64_t queue_pop_failing_ms(const queue_t *q);
const char *queue_pop_error(const queue_t *q);   /* the last refusal */

/* The address the next (re)connects use instead of the URL's host (the worker resolves
 * the name with evdns: hiredis would look it up blocking). Ignored for unix:// URLs and
 * for redis+sentinel:// (the sentinels name the primary). */
void queue_set_host(queue_t *q, const char *addr);

bool queue_ready(const queue_t *q);           /* both connections up */
size_t queue_unsent(const queue_t *q);        /* operations not yet answered */
const char *queue_last_error(const queue_t *q);
const char *queue_server_version(const queue_t *q);
/* Why the Redis server can lose jobs (no AOF, eviction allowed), or "" (from INFO at connect). */
const char *queue_unsafe(const queue_t *q);
uint64_t queue_reconnects(const queue_t *q);
/* redis+sentinel://: primary changes followed (retry_redis_failovers_total); how long
 * discoveries have failed in a row (ms, 0 when the last one found a primary or without
 * Sentinel); the primary's "host:port" ("" before the first or without Sentinel). */
uint64_t queue_failovers(const queue_t *q);
int64_t queue_discovery_failing_ms(const queue_t *q);
const char *queue_primary(const queue_t *q);

#endif
