/*
 * The Redis side of the worker (see queue.h for the contract).
 *
 * Two hiredis async connections share one shape (conn_t): connect, a setup pipeline
 * (AUTH, SELECT, CLIENT SETNAME, and INFO on the command connection), then READY. A
 * lost connection is re-opened after a backoff that doubles from 100 ms to 5 s with
 * full jitter. hiredis frees a context itself when it is lost and calls every pending
 * reply callback with a NULL reply: NULL always means "outcome unknown", never failure.
 *
 * The jobs a worker holds are in its taken hash {Q}:taken:<id> (field: the job's exact
 * text, value: its copies), so an ack costs the same with 64 or 10,000 in flight (an LREM
 * on a list of the jobs held walked the list: 226 us a call at 10,000). Its processing
 * list {Q}:processing:<id> is only where a blocking pop lands (BLMOVE moves into a list):
 * LUA_POP_CHECK moves the job from there into the hash before the worker sees it; the batch
 * pop moves straight into the hash. Whatever reads what a worker holds reads both, the
 * list first (a job only ever goes from the list to the hash).
 *
 * Operations (ack, dead, delay, requeue) live in a FIFO until Redis answers them; after
 * a reconnect the unanswered ones are sent again. Every operation is a Lua script that
 * only acts while the job is still in this worker's taken hash (take, below), so a
 * resend after a lost reply changes nothing. The watchdog (queue_watchdog, run by the
 * worker's periodic schedule) drops a connection whose reply is overdue (hiredis 0.14 has
 * no command timeout of its own).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "clock.h"
#include "cluster.h"
#include "connstr.h"
#include "internal.h"
#include "log.h"
#include "queue.h"
#include "sentinel.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* queue_promote_soon: a promotion armed this little after the one asked for serves it; the
 * next due job is chased when due within PROMOTE_SOON_WITHIN_MS, at most every
 * PROMOTE_SOON_MIN_MS. */
#define PROMOTE_SOON_SLACK_MS 50
#define PROMOTE_SOON_WITHIN_MS 1000
#define PROMOTE_SOON_MIN_MS 20

/* take(h, v): one copy of job v out of the taken hash h; 1 when it held one, else 0. */
#define LUA_TAKE \
    "local function take(h, v)\n" \
    "  local c = tonumber(redis.call('HGET', h, v))\n" \
    "  if not c then return 0 end\n" \
    "  if c > 1 then redis.call('HINCRBY', h, v, -1) else redis.call('HDEL', h, v) end\n" \
    "  return 1\n" \
    "end\n"

/* admit(src, hash, cancelled, n, out): up to n jobs from the right of list src into the
 * taken hash, each checked against the tombstones (a cancelled one is not admitted: its
 * tombstone is consumed); the admitted ones are appended to `out` when given, oldest first.
 * The reply: the identities of the cancelled ones. */
#define LUA_ADMIT \
    "local function admit(src, hash, cancelled, n, out)\n" \
    "  local check = redis.call('ZCARD', cancelled) > 0\n" \
    "  local gone = {}\n" \
    "  for i = 1, n do\n" \
    "    local v = redis.call('RPOP', src)\n" \
    "    if not v then break end\n" \
    "    local id = check and ident(v)\n" \
    "    if id and redis.call('ZSCORE', cancelled, id) then\n" \
    "      redis.call('ZREM', cancelled, id)\n" \
    "      gone[#gone + 1] = id\n" \
    "    else\n" \
    "      redis.call('HINCRBY', hash, v, 1)\n" \
    "      if out then out[#out + 1] = v end\n" \
    "    end\n" \
    "  end\n" \
    "  return gone\n" \
    "end\n"

/*
 * KEYS: queue, taken, cancelled, workers. ARGV: max jobs, own id. Moves up to ARGV[1]
 * jobs from the queue into the taken hash, oldest first. While {Q}:cancelled holds
 * tombstones (retryq_cancel), a job whose identity has one is not taken: its tombstone is
 * consumed and it is not handed out (it left the queue, so it never runs); its identities
 * come last in the reply, as one nested array. The worker is put in {Q}:workers when it
 * is not there yet (its first heartbeat travels on the other connection and may arrive
 * later), so a cancel that reads the workers sees every key a job can be in. ZCARD, not EXISTS: the least-privilege ACL of docs/security.md grants
 * no @keyspace command.
 */
static const char LUA_POP_BATCH[] = RQ_LUA_IDENTITY LUA_ADMIT
    "if not redis.call('ZSCORE', KEYS[4], ARGV[2]) then\n"
    "  local t = redis.call('TIME')\n"
    "  redis.call('ZADD', KEYS[4], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[2])\n"
    "end\n"
    "local out = {}\n"
    "local gone = admit(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), out)\n"
    "if #gone > 0 then out[#out + 1] = gone end\n"
    "return out\n";

/* KEYS: processing, taken, cancelled. ARGV: the job a blocking pop just moved. The
 * tombstone check of LUA_POP_BATCH for that one job, which leaves the processing list: the
 * job itself, now in the taken hash, when it may run; else {{identity}} (its tombstone is
 * consumed), as LUA_POP_BATCH nests them; {} when the list no longer holds it. The list
 * is short (a job stays there only until this check) and BLMOVE put the job at its head. */
static const char LUA_POP_CHECK[] = RQ_LUA_IDENTITY
    "if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return {} end\n"
    "local id = redis.call('ZCARD', KEYS[3]) > 0 and ident(ARGV[1])\n"
    "if id and redis.call('ZSCORE', KEYS[3], id) then\n"
    "  redis.call('ZREM', KEYS[3], id)\n"
    "  return {{id}}\n"
    "end\n"
    "redis.call('HINCRBY', KEYS[2], ARGV[1], 1)\n"
    "return ARGV[1]\n";

/* KEYS: processing, taken, cancelled. ARGV: at most. Up to ARGV[1] jobs left in the
 * processing list (a blocking pop whose LUA_POP_CHECK reply was lost with its connection,
 * or that was never sent) go into the taken hash with the check of the pops: a cancelled
 * one is dropped and its tombstone consumed. The reply: {{the cancelled identities}}. The
 * jobs are then handed out by the read of the hash that follows (the rescan, the
 * self-check). */
static const char LUA_SETTLE[] = RQ_LUA_IDENTITY LUA_ADMIT
    "return {admit(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), nil)}\n";

/* KEYS: cancelled. ARGV: retention ms. Tombstones older than the retention are dropped
 * (a cancelled job normally consumes its own at the pop; one whose job never came back,
 * e.g. lost in a failover, would otherwise stay forever). Redis's clock, as the cancel's. */
static const char LUA_TRIM_CANCELLED[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))\n";

/* KEYS: taken. ARGV: payload. The ack. */
static const char LUA_ACK[] = LUA_TAKE "return take(KEYS[1], ARGV[1])\n";

/* KEYS: taken, dead. ARGV: payload, dead entry, cap. */
static const char LUA_DEAD[] = LUA_TAKE "if take(KEYS[1], ARGV[1]) == 0 then return 0 end\n"
                                        "redis.call('LPUSH', KEYS[2], ARGV[2])\n"
                                        "redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)\n"
                                        "return 1\n";

/* KEYS: taken, delayed. ARGV: payload, next payload, delay ms. */
static const char LUA_DELAY[] = LUA_TAKE
    "if take(KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])\n"
    "return 1\n";

/* KEYS: taken, queue. ARGV: payload. RPUSH puts it where the next pop takes from. */
static const char LUA_REQUEUE[] = LUA_TAKE "if take(KEYS[1], ARGV[1]) == 0 then return 0 end\n"
                                           "redis.call('RPUSH', KEYS[2], ARGV[1])\n"
                                           "return 1\n";

/* KEYS: workers. ARGV: worker id. The heartbeat is Redis's own clock. */
static const char LUA_HEARTBEAT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "return now\n";

/* bump(v), the job text with its top-level "delivery" raised by one: RQ_LUA_BUMP
 * (src/lib/internal.h), a scanner of the outermost object shared with the cancel. */
#define LUA_BUMP RQ_LUA_BUMP

/* KEYS: workers. ARGV: lease ms, own id, at most. The workers silent for longer than the
 * lease (by Redis's clock), this one aside: lease recovery's first step, which names the
 * processing lists LUA_RECOVER is then given as KEYS. */
static const char LUA_EXPIRED[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local most = tonumber(ARGV[3])\n"
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, most + 1)\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  if id ~= ARGV[2] and #out < most then out[#out + 1] = id end\n"
    "end\n"
    "return out\n";

/*
 * The scripts that move a list of jobs move a bounded number a call, so that no call holds
 * Redis (and every other client: a script runs alone) for long however many jobs a worker
 * held; while a call moved that many, its caller sends the next one from the reply, at
 * once. Measured with a million jobs queued (INFO commandstats, 2 busy cores): LUA_LEAVE
 * and LUA_PROMOTE move a job for 2-5 us (100 a call: 0.2-0.5 ms; 1,000: 2-4 ms), so
 * MOVE_MAX; LUA_RECOVER and LUA_RECLAIM also raise its delivery count (bump), 6-15 us a
 * job (50 a call: 0.3-0.8 ms; 1,000: 10-20 ms), so MOVE_BUMP_MAX.
 */
#define MOVE_MAX 100
#define MOVE_MAX_ARG "100"
#define MOVE_BUMP_MAX 50
#define MOVE_BUMP_MAX_ARG "50"

/*
 * hand_back(list, hash, dest, most, change): up to `most` jobs of a worker's processing
 * list, then of its taken hash (each copy), go to the tail of `dest` (where the next pop
 * takes), changed by `change` when one is given; the reply: how many moved (at least
 * `most` when some may be left). The hash is read with HSCAN from its start every call: the
 * fields read are deleted, and a hash that shrinks is resized by Redis, so a call reads
 * about `most` entries. A hash has no order: the jobs of the hash come back in no
 * particular order.
 */
#define LUA_HAND_BACK \
    "local function hand_back(list, hash, dest, most, change)\n" \
    "  local n = 0\n" \
    "  while n < most do\n" \
    "    local v = redis.call('LPOP', list)\n" \
    "    if not v then break end\n" \
    "    redis.call('RPUSH', dest, change and change(v) or v)\n" \
    "    n = n + 1\n" \
    "  end\n" \
    "  local cursor = '0'\n" \
    "  while n < most do\n" \
    "    local page = redis.call('HSCAN', hash, cursor, 'COUNT', most - n)\n" \
    "    local kv = page[2]\n" \
    "    for i = 1, #kv, 2 do\n" \
    "      local v = change and change(kv[i]) or kv[i]\n" \
    "      for _ = 1, math.max(1, math.min(tonumber(kv[i + 1]) or 1, 1000)) do\n" \
    "        redis.call('RPUSH', dest, v)\n" \
    "        n = n + 1\n" \
    "      end\n" \
    "      redis.call('HDEL', hash, kv[i])\n" \
    "    end\n" \
    "    cursor = page[1]\n" \
    "    if cursor == '0' then break end\n" \
    "  end\n" \
    "  return n\n" \
    "end\n"

/*
 * KEYS: workers, queue, workerinfo, then the processing list and the taken hash of each
 * worker named in ARGV. ARGV: lease ms, max jobs per call, then the worker ids (ARGV[j + 2]
 * owns KEYS[2j + 2] and KEYS[2j + 3]). Each worker still silent for longer than the lease
 * (checked again: it may have come back since LUA_EXPIRED) loses its jobs: each goes back
 * to the head of the queue (so it runs next) with its delivery count raised by one — an
 * expired lease counts as a delivery, so a job that keeps killing workers ends up in the
 * dead list. At most ARGV[2] jobs per call (the reply: how many moved); a worker leaves
 * {Q}:workers (and {Q}:workerinfo) only with its list and hash empty, so the next call
 * (LUA_EXPIRED, then this) finds it again while jobs are left.
 */
static const char LUA_RECOVER[] = LUA_BUMP LUA_HAND_BACK
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local budget = tonumber(ARGV[2])\n"
    "local moved = 0\n"
    "for j = 1, (#KEYS - 3) / 2 do\n"
    "  local id, list, hash = ARGV[j + 2], KEYS[2 * j + 2], KEYS[2 * j + 3]\n"
    "  local beat = redis.call('ZSCORE', KEYS[1], id)\n"
    "  if beat and tonumber(beat) <= now - tonumber(ARGV[1]) then\n"
    "    if budget > 0 then\n"
    "      local n = hand_back(list, hash, KEYS[2], budget, bump)\n"
    "      moved = moved + n\n"
    "      budget = budget - n\n"
    "    end\n"
    "    if redis.call('LLEN', list) + redis.call('HLEN', hash) == 0 then\n"
    "      redis.call('ZREM', KEYS[1], id)\n"
    "      redis.call('HDEL', KEYS[3], id)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return moved\n";

/*
 * KEYS: workers, queue, workerinfo, the worker's processing list, its taken hash. ARGV:
 * worker id, expected info ("" = any), max jobs per call. The jobs of one worker known to
 * be dead go back to the head of the queue, delivery counts raised (as lease recovery does),
 * without waiting for its lease: this worker's own list at start (a restart with a fixed
 * id), or a predecessor on this host whose process is gone. At most ARGV[3] jobs per call
 * (the reply: how many moved); a predecessor leaves {Q}:workers and {Q}:workerinfo with
 * its last job, so its info still matches for the calls before. The info check makes it
 * a no-op (-1) when the id was registered again meanwhile.
 */
static const char LUA_RECLAIM[] = LUA_BUMP LUA_HAND_BACK
    "if ARGV[2] ~= '' and redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return -1 end\n"
    "local moved = hand_back(KEYS[4], KEYS[5], KEYS[2], tonumber(ARGV[3]), bump)\n"
    "if ARGV[2] ~= '' and redis.call('LLEN', KEYS[4]) + redis.call('HLEN', KEYS[5]) == 0 then\n"
    "  redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "  redis.call('HDEL', KEYS[3], ARGV[1])\n"
    "end\n"
    "return moved\n";

/* KEYS: delayed, queue. ARGV: max jobs per call. Due jobs go to the tail of the queue
 * (they waited their turn), the earliest due first; the reply counts them. */
#define LUA_PROMOTE_MOVE                                                                    \
    "local t = redis.call('TIME')\n"                                                        \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"               \
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0,\n"           \
    "                       tonumber(ARGV[1]))\n"                                           \
    "for _, v in ipairs(due) do\n"                                                          \
    "  redis.call('ZREM', KEYS[1], v)\n"                                                    \
    "  redis.call('LPUSH', KEYS[2], v)\n"                                                   \
    "end\n"
static const char LUA_PROMOTE[] = LUA_PROMOTE_MOVE "return #due\n";

/* The same, then {moved, ms until the next delayed job is due (-1: none left)}. */
static const char LUA_PROMOTE_NEXT[] =
    LUA_PROMOTE_MOVE
    "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "return {#due, nxt[2] and math.max(0, tonumber(nxt[2]) - now) or -1}\n";

/* KEYS: processing, taken, queue, workers, workerinfo. ARGV: own id, max jobs per call. Up
 * to ARGV[2] jobs of the own list and hash go to the tail of the queue (taken next); with
 * both empty the worker leaves {Q}:workers and {Q}:workerinfo. The reply: the entries still
 * held (0: all handed back, the worker is gone). */
static const char LUA_LEAVE[] = LUA_HAND_BACK
    "hand_back(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[2]))\n"
    "local left = redis.call('LLEN', KEYS[1]) + redis.call('HLEN', KEYS[2])\n"
    "if left == 0 then\n"
    "  redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "  redis.call('HDEL', KEYS[5], ARGV[1])\n"
    "end\n"
    "return left\n";

/* KEYS: queue, delayed, workers, this worker's processing list and taken hash, then the
 * processing list and taken hash of every other worker named in ARGV. ARGV: suspect ms,
 * the number of workers when they were read, then the ids (ARGV[j + 2] owns KEYS[2j + 4]
 * and KEYS[2j + 5]). Counts every job, the ones this worker holds too: the caller holds
 * nothing then, so a job there is one its blocking pop has just moved whose reply has not
 * arrived (the count runs on the other connection), or one its self-check will adopt. Counts a silent worker (no heartbeat for
 * ARGV[1] ms) as work until lease recovery has removed it, so --exit-when-idle waits for
 * the recovery instead of leaving a dead worker behind. A worker set that changed since it
 * was read counts as work too (the next check reads it again). */
static const char LUA_COUNT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local n = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) +\n"
    "          redis.call('LLEN', KEYS[4]) + redis.call('HLEN', KEYS[5])\n"
    "if redis.call('ZCARD', KEYS[3]) ~= tonumber(ARGV[2]) then n = n + 1 end\n"
    "for j = 1, (#KEYS - 5) / 2 do\n"
    "  n = n + redis.call('LLEN', KEYS[2 * j + 4]) + redis.call('HLEN', KEYS[2 * j + 5])\n"
    "  local beat = redis.call('ZSCORE', KEYS[3], ARGV[j + 2])\n"
    "  if beat and now - tonumber(beat) > tonumber(ARGV[1]) then n = n + 1 end\n"
    "end\n"
    "return n\n";

/* KEYS: queue, delayed, dead, workers, then the processing list and taken hash of each
 * worker read before. ARGV: lease ms. The figures of /metrics in one call: depths, workers
 * (all / live by heartbeat), Redis's clock and the next job to be taken (for the age of the
 * oldest waiting job). */
static const char LUA_DEPTHS[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local processing = 0\n"
    "for i = 5, #KEYS, 2 do\n"
    "  processing = processing + redis.call('LLEN', KEYS[i]) + redis.call('HLEN', KEYS[i + 1])\n"
    "end\n"
    "local live = redis.call('ZCOUNT', KEYS[4], now - tonumber(ARGV[1]), '+inf')\n"
    "local oldest = redis.call('LINDEX', KEYS[1], -1) or ''\n"
    "return {redis.call('LLEN', KEYS[1]), processing, redis.call('ZCARD', KEYS[2]),\n"
    "        redis.call('LLEN', KEYS[3]), redis.call('ZCARD', KEYS[4]), live, now, oldest}\n";

/* Workers read (ZRANGE {Q}:workers) before a script that visits their lists, at most:
 * a script names every key it touches in KEYS, which Redis Cluster requires. */
#define WORKERS_READ_MAX 1000
/* Silent workers recovered per lease recovery call. */
#define RECOVER_IDS_MAX 100

typedef enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_SETUP, CONN_READY } conn_state_t;

typedef struct conn {
    queue_t *q;
    const char *name;
    redisAsyncContext *ac;
    conn_state_t state;
    struct event *timer;     /* reconnect delay, or connect deadline */
    backoff_t backoff;       /* of the reconnect delay */
    int outstanding;         /* commands sent and not answered */
    int64_t progress_ms;     /* monotonic time of the last send or reply */
    int64_t allowance_ms;    /* how long the oldest outstanding reply may take */
    bool setup_failed;
    bool awaiting_primary;   /* Sentinel: waits for the discovery to give an address */
} conn_t;

typedef struct op {
    struct op *prev, *next;
    bool sent;
    int argc;
    char **argv;
    size_t *argvlen;
    int payload_arg;         /* argv index of the job this op moves, or -1 */
    void (*done)(void *arg, bool empty);
    void *arg;
    /* instead of done, when set: the reply (NULL when Redis refused the op) */
    void (*replied)(queue_t *q, const redisReply *r);
} op_t;

struct queue {
    struct event_base *base;
    queue_config_t cfg;
    retryq_redis_url_t url;
    retryq_keys_t keys;
    char worker_id[256];
    char processing[RETRYQ_MAX_QUEUE_NAME + 300];
    char taken[RETRYQ_MAX_QUEUE_NAME + 300];
    queue_callbacks_t cb;
    conn_t pop;
    conn_t cmd;
    size_t room;
    bool popping;            /* a reply on the pop connection is awaited (pop or rescan) */
    bool pop_checking;       /* the reply awaited is LUA_POP_CHECK's, after a blocking pop */
    bool checking;           /* a self-check of the own list is out on the command conn */
    bool check_due;          /* a self-check waits for the pop in flight to answer */
    char check_cursor[24];   /* self-check: the HSCAN cursor of the taken hash ("0": start) */
    bool leaving;            /* queue_leave called: take nothing, send no heartbeat */
    bool leave_sent;         /* the LEAVE operation is queued */
    void (*leave_done)(void *arg, bool empty);
    void *leave_arg;
    long long pop_client_id; /* CLIENT ID of the pop connection (0 = unknown) */
    bool unblock_sent;       /* CLIENT UNBLOCK sent for the pop that is out */
    bool adopted;            /* the own list left by a predecessor has been handed back */
    long long adopt_moved;   /* jobs of the own list handed back so far (LUA_RECLAIM) */
    bool had_cmd_connection;
    bool host_checked;       /* the dead workers of this host were looked for (once) */
    int64_t recover_after_ms; /* monotonic: no lease recovery before (peers re-announce) */
    struct event *pop_retry; /* after a refused pop */
    backoff_t pop_backoff;
    struct event *promote_soon; /* one early promotion (queue_promote_soon) */
    int64_t promote_at_ms;   /* monotonic time it is armed for; 0 = not armed */
    bool promoting;          /* a periodic LUA_PROMOTE is out (a full one is followed at once) */
    int64_t pop_failing_ms;  /* monotonic time of the first refused pop in a row, 0 = none */
    char pop_error[200];
    char workerinfo[RETRYQ_MAX_QUEUE_NAME + 32];   /* {Q}:workerinfo */
    char info[200];          /* "<boot id> <pid namespace> <pid>" or "" (unknown) */
    bool batch_empty;        /* the last batch found nothing: block next */
    bool use_blmove;
    bool closing;
    bool had_pop_connection; /* a reconnect must look for jobs a lost reply left behind */
    int64_t pop_reply_ms;    /* monotonic: last pop reply or room opened (readiness); not
                                reset by a reconnect, so a pop that never answers across
                                reconnects still shows as a stall */
    op_t *ops_head, *ops_tail;
    size_t ops_count;
    size_t ops_unsent;       /* ops waiting to be sent (all of them after a disconnect) */
    uint64_t reconnects;
    uint64_t rng;
    char version[32];
    char unsafe[160];        /* why this Redis can lose jobs ("" when it cannot) */
    char last_error[256];
    /* Sentinel (redis+sentinel://): where the primary is, and how often it moved */
    sentinel_t *sentinel;
    bool primary_known;      /* q->url.host/port is the primary the sentinels named */
    char primary[300];       /* "host:port" of the last primary found, "" before the first */
    uint64_t failovers;
    int64_t discovery_failing_ms; /* monotonic time of the first failed discovery in a row */
    int slot;                /* Cluster: the hash slot of every key of the queue */
    int recover_lease_ms;    /* the lease of the recovery under way */
    bool recovering;         /* a lease recovery (LUA_EXPIRED, then LUA_RECOVER) is out */
    long long recover_moved; /* jobs its calls moved so far */
};

static void conn_connect(conn_t *c);
static void conn_schedule(conn_t *c);
static void ops_flush(queue_t *q);
static void maybe_pop(queue_t *q);
static void deliver(queue_t *q, const redisReply *r, bool rescan);
static void send_leave(queue_t *q);
static void after_pop_reply(queue_t *q);
static void start_self_check(queue_t *q);
static void on_recovery_start(queue_t *q);

static void set_error(queue_t *q, const char *what, const char *detail)
{
    snprintf(q->last_error, sizeof q->last_error, "%s: %s", what, detail ? detail : "unknown");
}

static void notify_state(queue_t *q)
{
    if (!q->closing && q->cb.state != NULL)
        q->cb.state(q->cb.arg);
}

/* True while an operation that moves this payload out of the own list waits for its
 * reply: the job has ended here even if a read of the list still shows it. Operations
 * are answered in order, so one sent after a read is still waiting when the read's
 * reply arrives. */
static bool op_pending_for(const queue_t *q, const char *payload, size_t len)
{
    for (const op_t *op = q->ops_head; op != NULL; op = op->next)
        if (op->payload_arg >= 0 && op->argvlen[op->payload_arg] == len &&
            memcmp(op->argv[op->payload_arg], payload, len) == 0)
            return true;
    return false;
}

/* -------------------------------------------------------------------- connections */

/* Called for every way a connection ends; hiredis owns (and frees) the context. */
static void conn_lost(conn_t *c)
{
    queue_t *q = c->q;
    bool was_ready = c->state == CONN_READY;
    c->ac = NULL;
    c->state = CONN_DOWN;
    c->outstanding = 0;
    if (q->closing)
        return;
    if (c == &q->pop) {
        q->popping = false;
        q->pop_checking = false;
        q->pop_failing_ms = 0; /* an outage now, not a refusal */
        if (q->leaving)
            send_leave(q); /* the pop's outcome is unknown: the LEAVE hands back whatever it moved */
    }
    if (was_ready)
        q->reconnects++;
    /* A lost connection may mean a failover: the next connect asks the sentinels again. */
    q->primary_known = false;
    conn_schedule(c);
    notify_state(q);
}

static void cluster_moved(queue_t *q, int slot, const char *host, int port);

static void conn_drop(conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    cluster_redirect_kind_t kind;
    int slot = 0, port = 0;
    char host[256];
    bool moved = c->q->url.is_cluster &&
                 cluster_redirect_parse(why, &kind, &slot, host, sizeof host, &port) &&
                 kind == CLUSTER_MOVED;
    if (moved && host[0] == '\0')
        rq_copy(host, sizeof host, c->q->url.host); /* the node that answered */
    log_warn("redis.drop", "dropping the %s connection: %s", c->name, why);
    set_error(c->q, c->name, why);
    /* The disconnect callback (or nothing, when still connecting) follows; either way
     * this conn forgets the context now. */
    c->ac = NULL;
    redisAsyncFree(ac);
    if (c->state != CONN_DOWN)
        conn_lost(c);
    if (moved)
        cluster_moved(c->q, slot, host, port);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    if (c == NULL)
        return;
    if (!c->q->closing && status != REDIS_OK) {
        set_error(c->q, c->name, ac->errstr);
        log_warn("redis.disconnected", "%s connection lost: %s", c->name, ac->errstr);
    }
    /* The context this conn holds, or the one conn_drop is freeing at this moment (a free
     * from outside hiredis's callbacks runs at once: the conn is not down yet). One that
     * conn_drop gave up from inside its own reply callback is freed by hiredis only after
     * that callback, when conn_drop has already called conn_lost: a second call would
     * forget where a MOVED just sent the connections (and step the backoff twice). */
    if (c->ac == ac || (c->ac == NULL && c->state != CONN_DOWN))
        conn_lost(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    if (c->state == CONN_DOWN)
        conn_connect(c);
    else if (c->state != CONN_READY)
        conn_drop(c, "connect timed out");
}

static void conn_schedule(conn_t *c)
{
    queue_t *q = c->q;
    struct timeval tv = clock_tv_ms(backoff_next(&c->backoff, &q->rng));
    if (evtimer_add(c->timer, &tv) < 0) /* then /readyz and the watchdog show the stall */
        log_error("redis.timer", "could not arm the %s connection's reconnect timer", c->name);
}

/* False when the command could not be queued (the connection is dropped then, and the
 * callback will never run for this command). */
static bool conn_send(conn_t *c, redisCallbackFn *fn, void *privdata, int argc,
                      const char **argv, const size_t *argvlen)
{
    if (redisAsyncCommandArgv(c->ac, fn, privdata, argc, argv, argvlen) != REDIS_OK) {
        conn_drop(c, "could not queue a command");
        return false;
    }
    if (c->outstanding++ == 0)
        c->progress_ms = clock_mono_ms();
    return true;
}

static void conn_replied(conn_t *c)
{
    if (c->outstanding > 0)
        c->outstanding--;
    c->progress_ms = clock_mono_ms();
}

static bool reply_is_error(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR;
}

/* Errors that mean "this server cannot take writes now": reconnect and try again. On a
 * Cluster, MOVED reconnects to the node it names (conn_drop), and ASK, TRYAGAIN and
 * CLUSTERDOWN (the queue's slot being migrated, the cluster failing over) reconnect to
 * the owner the nodes name after the backoff: a multi-key script cannot run on a slot
 * half migrated, so the queue waits out the migration. */
static bool reply_is_transient(const redisReply *r)
{
    static const char *const prefixes[] = {"READONLY", "LOADING", "MASTERDOWN", "BUSY",
                                           "TRYAGAIN", "CLUSTERDOWN", "UNBLOCKED", "NOAUTH",
                                           "MOVED ", "ASK "};
    if (!reply_is_error(r))
        return false;
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(r->str, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

static void parse_info(queue_t *q, const char *info)
{
    const char *v = strstr(info, "redis_version:");
    if (v != NULL) {
        int major = 0, minor = 0;
        sscanf(v + 14, "%31[0-9.]", q->version);
        sscanf(q->version, "%d.%d", &major, &minor);
        q->use_blmove = major > 6 || (major == 6 && minor >= 2);
    }
    q->unsafe[0] = '\0';
    const char *aof = strstr(info, "aof_enabled:");
    if (aof != NULL && aof[12] != '1') {
        snprintf(q->unsafe, sizeof q->unsafe, "Redis runs without AOF (appendonly no): a Redis "
                                              "crash can lose queued retries; set appendonly yes");
        log_warn("redis.unsafe", "%s", q->unsafe);
    }
    const char *policy = strstr(info, "maxmemory_policy:");
    if (policy != NULL && strncmp(policy + 17, "noeviction", 10) != 0) {
        snprintf(q->unsafe, sizeof q->unsafe, "Redis maxmemory-policy is not noeviction: evicted "
                                              "keys lose jobs; set maxmemory-policy noeviction");
        log_warn("redis.unsafe", "%s", q->unsafe);
    }
}

static void on_quiet_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* LUA_SETTLE's answer (the rescan's and the self-check's first call): the cancelled jobs it
 * dropped. The read of the hash that follows it decides what comes next. */
static void on_settle_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    const redisReply *r = reply;
    bool answered = r != NULL && c->ac == ac;
    on_quiet_reply(ac, reply, privdata); /* an error is logged, a transient one drops */
    if (answered && r->type == REDIS_REPLY_ARRAY && r->elements == 1)
        deliver(c->q, r->element[0], true);
}

/* Sends LUA_SETTLE then the read of the taken hash (`argv`) on connection `c`, one after the
 * other: the read sees what the settle moved. */
static bool send_settled_read(queue_t *q, conn_t *c, redisCallbackFn *fn, int argc, const char **argv)
{
    const char *settle[] = {"EVAL",   LUA_SETTLE,        "3",         q->processing,
                            q->taken, q->keys.cancelled, MOVE_MAX_ARG};
    return conn_send(c, on_settle_reply, c, 7, settle, NULL) && conn_send(c, fn, q, argc, argv, NULL);
}

static void on_rescan_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    redisReply *r = reply;
    if (r == NULL || q->pop.ac != ac)
        return;
    conn_replied(&q->pop);
    if (reply_is_transient(r)) { /* read again on the next connection */
        q->popping = false;
        conn_drop(&q->pop, r->str);
        return;
    }
    /* popping stays set while the jobs are handed out, so the room they free or take
     * cannot start a pop in the middle. */
    if (!q->leaving && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_STRING && !op_pending_for(q, e->str, e->len))
                deliver(q, e, true);
        }
    q->popping = false;
    after_pop_reply(q);
}

static void on_adopt_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* One call of the hand-back of the own list at start, on the pop connection (no pop is
 * sent before it is done). */
static void send_adopt(queue_t *q)
{
    const char *argv[] =
        {"EVAL",           LUA_RECLAIM,   "5",      q->keys.workers, q->keys.pending,
         q->workerinfo,    q->processing, q->taken, q->worker_id,    "",
         MOVE_BUMP_MAX_ARG};
    conn_send(&q->pop, on_adopt_reply, q, 11, argv, NULL);
}

/* The own list at start: what a predecessor with this id left goes back to the queue, a
 * call after the other while one moved MOVE_BUMP_MAX jobs. */
static void on_adopt_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    redisReply *r = reply;
    if (r == NULL || q->pop.ac != ac)
        return; /* tried again on the next connection: no pop was sent meanwhile */
    conn_replied(&q->pop);
    if (reply_is_transient(r)) { /* handed back on the next connection */
        q->popping = false;
        conn_drop(&q->pop, r->str);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= MOVE_BUMP_MAX) {
        q->adopt_moved += r->integer;
        send_adopt(q); /* more may be left: popping stays set */
        return;
    }
    q->adopted = true;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        q->adopt_moved += r->integer;
    if (reply_is_error(r))
        log_warn("redis.adopt", "could not hand back this worker's own list: %s (the self-check "
                                "takes those jobs)", r->str);
    else if (q->adopt_moved > 0)
        log_warn("redis.adopt", "a previous run with worker id %s left %lld job(s) in its list: "
                 "handed back to the head of the queue (delivery counted)", q->worker_id,
                 q->adopt_moved);
    q->popping = false;
    after_pop_reply(q);
}

static void on_client_id_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redisReply *r = reply;
    if (r == NULL || c->ac != ac)
        return;
    conn_replied(c);
    /* Redis before 5 has no CLIENT ID: a stop then waits for the blocking pop's timeout. */
    c->q->pop_client_id = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redisReply *r = reply;
    if (r == NULL || c->ac != ac)
        return;
    conn_replied(c);
    if (reply_is_error(r)) {
        c->setup_failed = true;
        set_error(c->q, c->name, r->str);
        log_error("redis.setup", "%s connection setup refused: %s", c->name, r->str);
    } else if (r->type == REDIS_REPLY_STRING && c == &c->q->cmd) {
        parse_info(c->q, r->str);
    }
}

/* ROLE in the setup of a Sentinel connection: the first element must be "master". */
static void on_role_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redisReply *r = reply;
    if (r == NULL || c->ac != ac)
        return;
    conn_replied(c);
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0)
        return;
    char why[400];
    snprintf(why, sizeof why, "%s is not a primary (ROLE %s): asking again who is",
             c->q->primary,
             r->type == REDIS_REPLY_ERROR ? r->str
             : r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                     r->element[0]->type == REDIS_REPLY_STRING
                 ? r->element[0]->str
                 : "?");
    c->setup_failed = true;
    set_error(c->q, c->name, why);
    log_warn(c->q->url.is_cluster ? "redis.cluster" : "redis.sentinel", "%s connection: %s",
             c->name, why);
}

/* The last setup reply: the connection is usable unless a step was refused. */
static void on_setup_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    queue_t *q = c->q;
    if (reply == NULL || c->ac != ac)
        return;
    conn_replied(c);
    if (c->setup_failed) {
        conn_drop(c, q->last_error);
        return;
    }
    c->state = CONN_READY;
    backoff_reset(&c->backoff);
    evtimer_del(c->timer);
    log_info("redis.ready", "%s connection ready (Redis %s)", c->name,
             q->version[0] ? q->version : "?");
    if (c == &q->cmd) {
        ops_flush(q);
        if (q->cmd.state == CONN_READY)
            on_recovery_start(q);
    } else if (!q->leaving) {
        q->batch_empty = false;
        if (!q->adopted) {
            /* First connection: a previous run with this worker id (a fixed
             * RETRYQ_WORKER_ID under systemd) may have died with jobs in this very list,
             * which lease recovery skips (it is our own id). Hand them back before the
             * first pop, counting the delivery as lease recovery does. */
            q->popping = true;
            q->unblock_sent = false;
            send_adopt(q);
        } else if (q->had_pop_connection) {
            /* A pop answer lost with the old connection may have moved jobs into this
             * worker's list or hash; lease recovery would find them only after this
             * worker dies, so read them and let the worker adopt what it does not hold. */
            const char *argv[] = {"HKEYS", q->taken};
            q->popping = true;
            q->unblock_sent = false;
            send_settled_read(q, c, on_rescan_reply, 2, argv);
        }
        q->had_pop_connection = true;
    }
    notify_state(q);
    maybe_pop(q);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    queue_t *q = c->q;
    if (status != REDIS_OK) {
        set_error(q, c->name, ac->errstr);
        log_warn("redis.connect", "%s connection failed: %s", c->name, ac->errstr);
        if (c->ac == ac)
            conn_lost(c);
        return;
    }
    c->state = CONN_SETUP;
    c->setup_failed = false;
    const char *auth[3];
    int nauth = connstr_redis_auth(&q->url, auth);
    if (nauth > 0)
        conn_send(c, on_setup_reply, c, nauth, auth, NULL);
    if (c->ac == NULL)
        return;
    if (q->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", q->url.db);
        const char *argv[] = {"SELECT", db};
        conn_send(c, on_setup_reply, c, 2, argv, NULL);
    }
    if (q->sentinel != NULL) {
        /* The address a sentinel gave may be stale (a demoted primary): only a primary
         * takes the worker's writes. */
        const char *role[] = {"ROLE"};
        conn_send(c, on_role_reply, c, 1, role, NULL);
        if (c->ac == NULL)
            return;
    }
    char name[64];
    snprintf(name, sizeof name, "retryq-worker-%s", c->name);
    const char *setname[] = {"CLIENT", "SETNAME", name};
    conn_send(c, on_setup_reply, c, 3, setname, NULL);
    if (c == &q->cmd) {
        const char *info[] = {"INFO"};
        conn_send(c, on_setup_reply, c, 1, info, NULL);
    } else {
        const char *id[] = {"CLIENT", "ID"};
        conn_send(c, on_client_id_reply, c, 2, id, NULL);
    }
    if (c->ac == NULL)
        return;
    const char *ping[] = {"PING"};
    conn_send(c, on_setup_done, c, 1, ping, NULL);
}

static void conn_connect(conn_t *c)
{
    queue_t *q = c->q;
    if (q->sentinel != NULL && !q->primary_known) {
        c->awaiting_primary = true; /* on_primary_found connects it */
        sentinel_discover(q->sentinel);
        return;
    }
    redisAsyncContext *ac = q->url.is_unix ? redisAsyncConnectUnix(q->url.path)
                                           : redisAsyncConnect(q->url.host, q->url.port);
    if (ac == NULL) {
        set_error(q, c->name, "out of memory");
        conn_schedule(c);
        return;
    }
    if (ac->err) {
        set_error(q, c->name, ac->errstr);
        redisAsyncFree(ac);
        conn_schedule(c);
        return;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, q->base) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, on_disconnect) != REDIS_OK) {
        set_error(q, c->name, "could not attach to the event loop");
        redisAsyncFree(ac);
        conn_schedule(c);
        return;
    }
    c->ac = ac;
    c->state = CONN_CONNECTING;
    c->outstanding = 0;
    c->allowance_ms = q->cfg.command_timeout_ms;
    struct timeval tv = clock_tv_ms(q->cfg.connect_timeout_ms);
    if (evtimer_add(c->timer, &tv) < 0)
        log_error("redis.timer", "could not arm the %s connection's connect deadline", c->name);
}

/* -------------------------------------------------------------------- Sentinel */

/*
 * redis+sentinel://: a connection that has no primary address waits (awaiting_primary)
 * for a discovery (sentinel.c); any loss of a connection forgets the address, so the
 * next connect asks again (a dead primary, a READONLY reply, a failed ROLE check all end
 * there). When the answer names another server than before, that is a failover
 * followed: counted, logged (redis.failover), and a connection still on the old server is
 * dropped and opened again on the new one; the operations wait and are replayed there
 * as after any reconnect.
 */
static void on_primary_found(void *arg, const char *host, int port, const char *error)
{
    queue_t *q = arg;
    conn_t *conns[] = {&q->pop, &q->cmd};
    if (q->closing)
        return;
    if (host == NULL) {
        if (q->discovery_failing_ms == 0)
            q->discovery_failing_ms = clock_mono_ms();
        set_error(q, q->url.is_cluster ? "cluster" : "sentinel", error);
        log_warn(q->url.is_cluster ? "redis.cluster" : "redis.sentinel", "%s", error);
        for (size_t i = 0; i < 2; i++)
            if (conns[i]->awaiting_primary) {
                conns[i]->awaiting_primary = false;
                conn_schedule(conns[i]); /* with backoff: the next connect asks again */
            }
        notify_state(q);
        return;
    }
    char addr[300];
    connstr_redis_address(host, port, addr, sizeof addr);
    q->discovery_failing_ms = 0;
    bool moved = q->primary[0] != '\0' && strcmp(q->primary, addr) != 0;
    if (moved && q->url.is_cluster) {
        q->failovers++;
        log_warn("redis.failover", "the primary of the queue's slot %d moved: %s -> %s", q->slot,
                 q->primary, addr);
    } else if (moved) {
        q->failovers++;
        log_warn("redis.failover", "the primary of master %s moved: %s -> %s", q->url.master,
                 q->primary, addr);
    } else if (q->primary[0] == '\0' && q->url.is_cluster) {
        log_info("redis.cluster", "the primary of the queue's slot %d is %s", q->slot, addr);
    } else if (q->primary[0] == '\0') {
        log_info("redis.sentinel", "the primary of master %s is %s", q->url.master, addr);
    }
    rq_copy(q->primary, sizeof q->primary, addr);
    rq_copy(q->url.host, sizeof q->url.host, host);
    q->url.port = port;
    for (size_t i = 0; moved && i < 2; i++)
        if (conns[i]->ac != NULL) {
            conn_drop(conns[i], "the primary moved");
            conns[i]->awaiting_primary = true;
        }
    q->primary_known = true;
    for (size_t i = 0; i < 2; i++)
        if (conns[i]->awaiting_primary && conns[i]->ac == NULL) {
            conns[i]->awaiting_primary = false;
            evtimer_del(conns[i]->timer);
            conn_connect(conns[i]);
        }
}

/*
 * redis+cluster://: -MOVED names the node that now serves the queue's slot (a reshard, or
 * a replica promoted by a failover). Both connections go there, with the operations
 * waiting and replayed as after a Sentinel failover; counted and logged the same way.
 */
static void cluster_moved(queue_t *q, int slot, const char *host, int port)
{
    char addr[300];
    connstr_redis_address(host, port, addr, sizeof addr);
    if (q->closing)
        return;
    /* A host name is resolved by the discovery, without blocking the loop; it counts and
     * logs the move when the address it finds is not q->primary (which holds addresses:
     * counting here too would count one move twice). */
    bool named = resolve_is_name(host);
    if (!named && strcmp(q->primary, addr) != 0) {
        q->failovers++;
        log_warn("redis.failover", "the queue's slot %d moved (MOVED): %s -> %s", slot,
                 q->primary[0] != '\0' ? q->primary : "?", addr);
        rq_copy(q->primary, sizeof q->primary, addr);
    }
    conn_t *conns[] = {&q->pop, &q->cmd};
    for (size_t i = 0; i < 2; i++)
        if (conns[i]->ac != NULL)
            conn_drop(conns[i], "the queue's slot moved to another node");
    if (named)
        return;
    rq_copy(q->url.host, sizeof q->url.host, host);
    q->url.port = port;
    q->primary_known = true; /* after the drops, which forget it */
}

/* +switch-master, or a new subscription: ask again; nothing changes if it did not move. */
static void on_primary_changed(void *arg)
{
    queue_t *q = arg;
    if (!q->closing)
        sentinel_discover(q->sentinel);
}

static void on_ping_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    if (reply != NULL && c->ac == ac)
        conn_replied(c);
}

/*
 * Drops a connection whose oldest reply is overdue: a hung or partitioned server (a
 * blocking pop is allowed its block time plus the command timeout). A ready connection
 * with nothing outstanding for QUEUE_PING_IDLE_MS gets a PING, so a server or path gone
 * silent while the worker had nothing to ask (no room, no acks) is found the same way
 * instead of stalling unseen until TCP gives up.
 */
void queue_watchdog(queue_t *q, int64_t now_ms)
{
    conn_t *conns[] = {&q->pop, &q->cmd};
    for (size_t i = 0; i < 2; i++) {
        conn_t *c = conns[i];
        if (c->ac != NULL && c->state != CONN_CONNECTING && c->outstanding > 0 &&
            now_ms - c->progress_ms > c->allowance_ms) {
            char why[96];
            snprintf(why, sizeof why, "reply overdue (%lld ms without an answer)",
                     (long long)(now_ms - c->progress_ms));
            conn_drop(c, why);
        } else if (c->state == CONN_READY && c->outstanding == 0 &&
                   now_ms - c->progress_ms >= QUEUE_PING_IDLE_MS) {
            const char *ping[] = {"PING"};
            c->allowance_ms = q->cfg.command_timeout_ms;
            conn_send(c, on_ping_reply, c, 1, ping, NULL);
        }
    }
}

/* -------------------------------------------------------------------- taking jobs */

static void deliver(queue_t *q, const redisReply *r, bool rescan)
{
    if (r->type == REDIS_REPLY_STRING) {
        q->cb.job(q->cb.arg, r->str, r->len, rescan);
    } else if (r->type == REDIS_REPLY_ARRAY && q->cb.cancelled != NULL) {
        /* The identities of cancelled jobs the pop dropped (LUA_POP_BATCH, LUA_POP_CHECK). */
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                q->cb.cancelled(q->cb.arg, r->element[i]->str, r->element[i]->len);
    }
}

/* A refused pop that is not about the connection (OOM, WRONGTYPE, a script error...):
 * the pop is tried again after a backoff, and the worker reports that it takes nothing
 * (queue_pop_failing_ms) until a pop is accepted. */
static void pop_refused(queue_t *q, const char *error)
{
    int64_t now = clock_mono_ms();
    if (q->pop_failing_ms == 0) {
        q->pop_failing_ms = now;
        backoff_reset(&q->pop_backoff);
    }
    rq_copy(q->pop_error, sizeof q->pop_error, error);
    int64_t delay = backoff_next(&q->pop_backoff, &q->rng);
    if (delay < BACKOFF_MIN_MS / 2)
        delay = BACKOFF_MIN_MS / 2;
    struct timeval tv = clock_tv_ms(delay);
    if (evtimer_add(q->pop_retry, &tv) < 0)
        log_error("redis.pop", "could not arm the pop retry timer");
    notify_state(q);
}

static void pop_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    maybe_pop(arg);
}

static void on_pop_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    redisReply *r = reply;
    if (r == NULL || q->pop.ac != ac)
        return; /* the connection went away; a moved job is found again after reconnect */
    conn_replied(&q->pop);
    q->pop_reply_ms = clock_mono_ms();
    q->pop.allowance_ms = q->cfg.command_timeout_ms;
    bool was_check = q->pop_checking;
    q->pop_checking = false;
    if (!was_check && !q->leaving && r->type == REDIS_REPLY_STRING) {
        /* A blocking pop moved one job: the tombstone check (LUA_POP_CHECK) decides before
         * the worker sees it; its reply comes back here. */
        const char *argv[] = {"EVAL",   LUA_POP_CHECK,     "3",   q->processing,
                              q->taken, q->keys.cancelled, r->str};
        size_t lens[] = {4,
                         sizeof LUA_POP_CHECK - 1,
                         1,
                         strlen(q->processing),
                         strlen(q->taken),
                         strlen(q->keys.cancelled),
                         r->len};
        q->pop_checking = true;
        if (conn_send(&q->pop, on_pop_reply, q, 7, argv, lens))
            return;
        q->pop_checking = false;
        q->popping = false; /* not sent: the job stays in the list for the self-check */
        return;
    }
    if (reply_is_error(r)) {
        q->popping = false;
        set_error(q, "pop", r->str);
        log_warn("redis.pop", "pop refused: %s", r->str);
        if (reply_is_transient(r)) {
            conn_drop(&q->pop, r->str);
            return;
        }
        if (q->leaving)
            send_leave(q);
        else
            pop_refused(q, r->str);
        return;
    }
    if (q->pop_failing_ms != 0) {
        log_info("redis.pop", "pops accepted again after %.1f s",
                 (double)(clock_mono_ms() - q->pop_failing_ms) / 1000.0);
        q->pop_failing_ms = 0;
        q->pop_error[0] = '\0';
        notify_state(q);
    }
    if (q->leaving) {
        /* Whatever this pop moved stays in the list: the LEAVE hands it back. */
        q->popping = false;
        send_leave(q);
        return;
    }
    /* popping stays set until every job of the reply is handed out: each one changes the
     * room, and a pop started from inside that loop would ask for room the rest of this
     * reply is about to fill (in flight could reach twice the concurrency). */
    if (r->type == REDIS_REPLY_ARRAY) {
        q->batch_empty = r->elements == 0;
        for (size_t i = 0; i < r->elements; i++)
            deliver(q, r->element[i], false);
    } else if (r->type == REDIS_REPLY_STRING) {
        q->batch_empty = false;
        deliver(q, r, false);
    } else {
        q->batch_empty = true;
        if (q->cb.idle != NULL)
            q->cb.idle(q->cb.arg);
    }
    q->popping = false;
    after_pop_reply(q);
}

/* After any reply on the pop connection: leave, run a self-check that waited, or pop. */
static void after_pop_reply(queue_t *q)
{
    if (q->leaving)
        send_leave(q);
    else if (q->check_due)
        start_self_check(q);
    else
        maybe_pop(q);
}

static void maybe_pop(queue_t *q)
{
    if (q->closing || q->popping || q->checking || q->leaving || q->room == 0 ||
        q->pop.state != CONN_READY || evtimer_pending(q->pop_retry, NULL))
        return;
    if (q->check_due) {
        start_self_check(q);
        return;
    }
    q->popping = true;
    q->unblock_sent = false;
    if (!q->batch_empty) {
        char n[24];
        size_t batch = q->room < (size_t)q->cfg.batch ? q->room : (size_t)q->cfg.batch;
        snprintf(n, sizeof n, "%zu", batch);
        const char *argv[] = {"EVAL",
                              LUA_POP_BATCH,
                              "4",
                              q->keys.pending,
                              q->taken,
                              q->keys.cancelled,
                              q->keys.workers,
                              n,
                              q->worker_id};
        conn_send(&q->pop, on_pop_reply, q, 9, argv, NULL);
        return;
    }
    char secs[32];
    snprintf(secs, sizeof secs, "%d.%03d", q->cfg.block_ms / 1000, q->cfg.block_ms % 1000);
    q->pop.allowance_ms = q->cfg.block_ms + q->cfg.command_timeout_ms;
    if (q->use_blmove) {
        const char *argv[] = {"BLMOVE", q->keys.pending, q->processing, "RIGHT", "LEFT", secs};
        conn_send(&q->pop, on_pop_reply, q, 6, argv, NULL);
    } else {
        const char *argv[] = {"BRPOPLPUSH", q->keys.pending, q->processing, secs};
        conn_send(&q->pop, on_pop_reply, q, 4, argv, NULL);
    }
}

void queue_set_room(queue_t *q, size_t room)
{
    if (q->room == 0 && room > 0)
        q->pop_reply_ms = clock_mono_ms();
    q->room = room;
    maybe_pop(q);
}

/* ----------------------------------------------------------------- self-check */

/*
 * A job can sit in this worker's hash without being in flight: a write that Redis
 * refused (not transiently) or that could not be queued for lack of memory, a payload
 * the worker could not take in, a job left in the processing list by a pop check that
 * could not be sent. Lease recovery never touches a live worker's jobs, so every heartbeat
 * one page of the hash (HSCAN, its cursor kept from one heartbeat to the next; a round
 * starts with LUA_SETTLE, which moves what the processing list holds into the hash) is
 * compared with the jobs in flight, and what is not held is taken again.
 *
 * The read goes on the command connection, after every operation already sent (so an
 * ack sent before it has acted), and no pop is out meanwhile (so no job can be in the
 * hash before the pop's reply has handed it out). A job that ended after the read was
 * sent still has its operation waiting for a reply: op_pending_for skips it.
 */
static void on_check_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    redisReply *r = reply;
    q->checking = false;
    if (r == NULL || q->cmd.ac != ac)
        return;
    conn_replied(&q->cmd);
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_ARRAY) {
        const redisReply *kv = r->element[1];
        rq_copy(q->check_cursor, sizeof q->check_cursor,
                r->element[0]->len < sizeof q->check_cursor ? r->element[0]->str : "0");
        size_t taken = 0;
        q->checking = true; /* no pop from inside the loop (see on_pop_reply) */
        for (size_t i = 0; i + 1 < kv->elements && q->room > 0 && !q->leaving; i += 2) {
            const redisReply *e = kv->element[i];
            if (e->type != REDIS_REPLY_STRING || op_pending_for(q, e->str, e->len))
                continue;
            size_t before = q->room;
            deliver(q, e, true);
            if (q->room < before)
                taken++;
        }
        q->checking = false;
        if (taken > 0)
            log_warn("redis.self_check",
                     "%zu job(s) this worker holds in Redis were not in "
                     "flight: taken again",
                     taken);
    } else if (reply_is_error(r)) {
        log_warn("redis.self_check", "reading the own taken hash failed: %s", r->str);
        if (reply_is_transient(r)) {
            conn_drop(&q->cmd, r->str);
            return;
        }
    }
    maybe_pop(q);
}

static void start_self_check(queue_t *q)
{
    q->check_due = false;
    if (q->closing || q->leaving || q->checking || q->room == 0 || q->cmd.state != CONN_READY) {
        maybe_pop(q);
        return;
    }
    char count[24];
    snprintf(count, sizeof count, "%d", q->cfg.self_check_page);
    const char *argv[] = {"HSCAN", q->taken, q->check_cursor, "COUNT", count};
    q->checking = true;
    bool sent = strcmp(q->check_cursor, "0") == 0
                    ? send_settled_read(q, &q->cmd, on_check_reply, 5, argv)
                    : conn_send(&q->cmd, on_check_reply, q, 5, argv, NULL);
    if (!sent) {
        q->checking = false;
        maybe_pop(q);
    }
}

void queue_self_check(queue_t *q)
{
    if (q->closing || q->leaving || q->checking || q->room == 0 || !queue_ready(q))
        return;
    if (q->popping) {
        q->check_due = true; /* after the pop's reply */
        return;
    }
    start_self_check(q);
}

/* -------------------------------------------------------------------- operations */

static void op_free(op_t *op)
{
    for (int i = 0; i < op->argc; i++)
        free(op->argv[i]);
    free(op->argv);
    free(op->argvlen);
    free(op);
}

static void op_unlink(queue_t *q, op_t *op)
{
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        q->ops_head = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    else
        q->ops_tail = op->prev;
    q->ops_count--;
    if (!op->sent)
        q->ops_unsent--;
}

static void op_unsent(queue_t *q, op_t *op)
{
    if (op->sent) {
        op->sent = false;
        q->ops_unsent++;
    }
}

static void on_op_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void op_send(queue_t *q, op_t *op)
{
    op->sent = true;
    q->ops_unsent--;
    if (!conn_send(&q->cmd, on_op_reply, op, op->argc, (const char **)op->argv, op->argvlen))
        op_unsent(q, op); /* no reply will come: send it again after the reconnect */
}

static void on_op_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    op_t *op = privdata;
    redisReply *r = reply;
    queue_t *owner = ((conn_t *)ac->data)->q;
    if (r == NULL) {
        op_unsent(owner, op); /* outcome unknown: sent again after the reconnect */
        return;
    }
    conn_replied(&owner->cmd);
    if (reply_is_transient(r)) {
        op_unsent(owner, op);
        conn_drop(&owner->cmd, r->str);
        return;
    }
    if (reply_is_error(r)) {
        set_error(owner, "operation", r->str);
        log_error("redis.op", "Redis refused %s: %s", op->argv[0], r->str);
    }
    op_unlink(owner, op);
    if (op->replied != NULL)
        op->replied(owner, reply_is_error(r) ? NULL : r);
    else if (op->done != NULL)
        op->done(op->arg, !reply_is_error(r) && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
    op_free(op);
}

/* Sends every op not sent yet, oldest first (after a reconnect: all of them). */
static void ops_flush(queue_t *q)
{
    for (op_t *op = q->ops_head; op != NULL && q->ops_unsent > 0 && q->cmd.state == CONN_READY;
         op = op->next) {
        if (!op->sent)
            op_send(q, op);
    }
}

/* Queues one command; the arguments are copied (lengths given, so binary-safe). The op
 * (NULL when out of memory); it is answered at the earliest from the event loop. */
static op_t *op_push(queue_t *q, int argc, const char *const *argv, const size_t *argvlen,
                     int payload_arg, void (*done)(void *, bool), void *arg)
{
    op_t *op = calloc(1, sizeof *op);
    if (op == NULL)
        goto nomem;
    op->argv = calloc((size_t)argc, sizeof *op->argv);
    op->argvlen = calloc((size_t)argc, sizeof *op->argvlen);
    if (op->argv == NULL || op->argvlen == NULL)
        goto nomem;
    op->argc = argc;
    for (int i = 0; i < argc; i++) {
        size_t n = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        op->argv[i] = malloc(n + 1);
        if (op->argv[i] == NULL)
            goto nomem;
        memcpy(op->argv[i], argv[i], n);
        op->argv[i][n] = '\0';
        op->argvlen[i] = n;
    }
    op->payload_arg = payload_arg;
    op->done = done;
    op->arg = arg;
    op->prev = q->ops_tail;
    if (q->ops_tail != NULL)
        q->ops_tail->next = op;
    else
        q->ops_head = op;
    q->ops_tail = op;
    q->ops_count++;
    q->ops_unsent++;
    /* The common case sends just this op: walking thousands of ops already sent for each
     * new one would make acks quadratic in the jobs in flight. */
    if (q->ops_unsent == 1 && q->cmd.state == CONN_READY)
        op_send(q, op);
    else
        ops_flush(q);
    return op;
nomem:
    /* The job stays in the processing list: lease recovery or a restart finds it. */
    log_error("redis.op", "out of memory queueing %s", argv[0]);
    if (op != NULL) {
        op->argc = argc;
        for (int i = 0; op->argv != NULL && i < argc; i++)
            free(op->argv[i]);
        free(op->argv);
        free(op->argvlen);
        free(op);
    }
    return NULL;
}

void queue_ack(queue_t *q, const char *payload, size_t len)
{
    const char *argv[] = {"EVAL", LUA_ACK, "1", q->taken, payload};
    size_t lens[] = {4, sizeof LUA_ACK - 1, 1, strlen(q->taken), len};
    op_push(q, 5, argv, lens, 4, NULL, NULL);
}

void queue_dead(queue_t *q, const char *payload, size_t len, const char *reason)
{
    char at[48], cap[24];
    rq_format_rfc3339(rq_now_ms(), at, sizeof at);
    snprintf(cap, sizeof cap, "%d", q->cfg.dead_max);
    cJSON *entry = cJSON_CreateObject();
    char *text = NULL;
    /* A payload over the limit is never a valid job: keep only its first bytes (and its
     * size), so a hostile giant, which cJSON may escape to six times its size, costs
     * neither this process nor the dead list more than a bounded amount. */
    size_t keep = len > RETRYQ_MAX_PAYLOAD ? RETRYQ_MAX_PAYLOAD : len;
    char *job = malloc(keep + 1);
    if (entry == NULL || job == NULL)
        goto cleanup;
    memcpy(job, payload, keep);
    job[keep] = '\0';
    /* cJSON strings stop at a NUL: a payload with NUL bytes keeps what precedes it. */
    if (cJSON_AddStringToObject(entry, "job", job) == NULL ||
        (keep < len && cJSON_AddNumberToObject(entry, "job_bytes", (double)len) == NULL) ||
        cJSON_AddStringToObject(entry, "reason", reason) == NULL ||
        cJSON_AddStringToObject(entry, "at", at) == NULL ||
        cJSON_AddStringToObject(entry, "worker", q->worker_id) == NULL)
        goto cleanup;
    text = cJSON_PrintUnformatted(entry);
    if (text == NULL)
        goto cleanup;
    const char *argv[] = {"EVAL", LUA_DEAD, "2", q->taken, q->keys.dead, payload, text, cap};
    size_t lens[] = {4,   sizeof LUA_DEAD - 1, 1,          strlen(q->taken), strlen(q->keys.dead),
                     len, strlen(text),        strlen(cap)};
    op_push(q, 8, argv, lens, 5, NULL, NULL);
cleanup:
    if (text == NULL)
        log_error("redis.dead", "out of memory building a dead-letter entry");
    cJSON_Delete(entry);
    free(job);
    free(text);
}

void queue_delay(queue_t *q, const char *payload, size_t len, const char *next_payload,
                 int64_t delay_ms)
{
    char delay[24];
    snprintf(delay, sizeof delay, "%lld", (long long)delay_ms);
    const char *argv[] = {"EVAL",          LUA_DELAY, "2",          q->taken,
                          q->keys.delayed, payload,   next_payload, delay};
    size_t lens[] = {4,
                     sizeof LUA_DELAY - 1,
                     1,
                     strlen(q->taken),
                     strlen(q->keys.delayed),
                     len,
                     strlen(next_payload),
                     strlen(delay)};
    op_push(q, 8, argv, lens, 5, NULL, NULL);
}

void queue_requeue(queue_t *q, const char *payload, size_t len)
{
    const char *argv[] = {"EVAL", LUA_REQUEUE, "2", q->taken, q->keys.pending, payload};
    size_t lens[] = {4, sizeof LUA_REQUEUE - 1, 1, strlen(q->taken), strlen(q->keys.pending), len};
    op_push(q, 6, argv, lens, 5, NULL, NULL);
}

/* -------------------------------------------------------------------- maintenance */

/*
 * A script that visits other workers' jobs names their keys in KEYS (a Redis Cluster
 * routes a script by its KEYS, and moves keys during a migration by them): the workers are
 * read first (ZRANGE {Q}:workers, or LUA_EXPIRED) and the script is built from that reply.
 * keyed_eval: EVAL script N <fixed keys> <a processing list and a taken hash per id>
 * <fixed args> <the ids>, the id `skip` left out; the strings are owned by the struct.
 */
typedef struct keyed_eval {
    int argc;
    const char **argv;
    char *names;
    char count[16];
} keyed_eval_t;

static void keyed_eval_free(keyed_eval_t *e)
{
    free(e->argv);
    free(e->names);
}

/* The ids of `ids` that get a processing list (strings, not `skip`, not too long). */
static bool keyed_eval_takes(const queue_t *q, const redisReply *id, const char *skip)
{
    char name[sizeof q->processing];
    return id->type == REDIS_REPLY_STRING && (skip == NULL || strcmp(id->str, skip) != 0) &&
           retryq_keys_processing(&q->keys, id->str, name, sizeof name) >= 0;
}

static bool keyed_eval_build(queue_t *q, keyed_eval_t *e, const char *script, int nkeys,
                             const char *const *keys, int nargs, const char *const *args,
                             const redisReply *ids, const char *skip)
{
    size_t n = 0, cap = sizeof q->processing;
    memset(e, 0, sizeof *e);
    e->argv = malloc((3 + (size_t)nkeys + (size_t)nargs + 3 * ids->elements) * sizeof *e->argv);
    e->names = malloc((ids->elements > 0 ? ids->elements : 1) * 2 * cap);
    if (e->argv == NULL || e->names == NULL) {
        keyed_eval_free(e);
        return false;
    }
    for (size_t i = 0; i < ids->elements; i++)
        if (keyed_eval_takes(q, ids->element[i], skip) &&
            retryq_keys_processing(&q->keys, ids->element[i]->str, e->names + 2 * n * cap, cap) >= 0 &&
            retryq_keys_taken(&q->keys, ids->element[i]->str, e->names + (2 * n + 1) * cap, cap) >= 0)
            n++;
    snprintf(e->count, sizeof e->count, "%zu", (size_t)nkeys + 2 * n);
    e->argv[e->argc++] = "EVAL";
    e->argv[e->argc++] = script;
    e->argv[e->argc++] = e->count;
    for (int i = 0; i < nkeys; i++)
        e->argv[e->argc++] = keys[i];
    for (size_t i = 0; i < 2 * n; i++)
        e->argv[e->argc++] = e->names + i * cap;
    for (int i = 0; i < nargs; i++)
        e->argv[e->argc++] = args[i];
    for (size_t i = 0; i < ids->elements; i++)
        if (keyed_eval_takes(q, ids->element[i], skip))
            e->argv[e->argc++] = ids->element[i]->str;
    return true;
}

/* Periodic calls are not operations: if one is lost, the next period repeats it. */
static void on_periodic_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    const char *what = privdata;
    if (r == NULL)
        return;
    queue_t *q = ((conn_t *)ac->data)->q;
    conn_replied(&q->cmd);
    if (reply_is_error(r)) {
        log_warn("redis.periodic", "%s failed: %s", what, r->str);
        if (reply_is_transient(r))
            conn_drop(&q->cmd, r->str);
    }
}

static void periodic(queue_t *q, const char *what, int argc, const char **argv)
{
    if (q->cmd.state == CONN_READY)
        conn_send(&q->cmd, on_periodic_reply, (void *)what, argc, argv, NULL);
}

/* A one-off question with a reply for the caller (periodic: not resent when lost). A
 * question with a `what` says so in a warning when Redis refuses it. */
typedef struct ask {
    void (*fn)(void *arg, const redisReply *reply);
    void *arg;
    const char *what;
} ask_t;

static void on_ask_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    ask_t *ask = privdata;
    conn_t *c = ac->data;
    redisReply *r = reply;
    if (r != NULL && c != NULL) {
        conn_replied(c);
        if (reply_is_error(r) && ask->what != NULL)
            log_warn("redis.script", "Redis refused %s: %s", ask->what, r->str);
        if (reply_is_transient(r))
            conn_drop(c, r->str);
    }
    /* Called even while closing (with NULL) so the asker can free its state. */
    ask->fn(ask->arg, r != NULL && !reply_is_error(r) ? r : NULL);
    free(ask);
}

static void ask_what(queue_t *q, const char *what, int argc, const char **argv,
                     void (*fn)(void *arg, const redisReply *reply), void *arg)
{
    ask_t *a = malloc(sizeof *a);
    if (a == NULL || q->cmd.state != CONN_READY) {
        free(a);
        fn(arg, NULL);
        return;
    }
    *a = (ask_t){.fn = fn, .arg = arg, .what = what};
    if (!conn_send(&q->cmd, on_ask_reply, a, argc, argv, NULL)) {
        free(a);
        fn(arg, NULL);
    }
}

static void ask(queue_t *q, int argc, const char **argv,
                void (*fn)(void *arg, const redisReply *reply), void *arg)
{
    ask_what(q, NULL, argc, argv, fn, arg);
}

typedef struct lock_ask {
    void (*done)(void *arg, bool got);
    void *arg;
} lock_ask_t;

static void on_lock_reply(void *arg, const redisReply *r)
{
    lock_ask_t *l = arg;
    l->done(l->arg, r != NULL && r->type == REDIS_REPLY_STATUS);
    free(l);
}

void queue_try_lock(queue_t *q, const char *name, int ttl_ms,
                    void (*done)(void *arg, bool got), void *arg)
{
    char key[RETRYQ_MAX_QUEUE_NAME + 64], ttl[24];
    lock_ask_t *l = malloc(sizeof *l);
    if (l == NULL) {
        done(arg, false);
        return;
    }
    l->done = done;
    l->arg = arg;
    snprintf(key, sizeof key, "{%s}:lock:%s", q->keys.pending, name);
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    const char *argv[] = {"SET", key, q->worker_id, "NX", "PX", ttl};
    ask(q, 6, argv, on_lock_reply, l);
}

void queue_command(queue_t *q, int argc, const char **argv,
                   void (*done)(void *arg, const redisReply *reply), void *arg)
{
    ask(q, argc, argv, done, arg);
}

void queue_script(queue_t *q, const char *script, int nkeys, const char *const *keys, int nargs,
                  const char *const *args, void (*done)(void *arg, const redisReply *reply),
                  void *arg)
{
    int argc = 3 + nkeys + nargs;
    const char **argv = malloc((size_t)argc * sizeof *argv);
    char count[16];
    if (argv == NULL) {
        done(arg, NULL);
        return;
    }
    snprintf(count, sizeof count, "%d", nkeys);
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = count;
    for (int i = 0; i < nkeys; i++)
        argv[3 + i] = keys[i];
    for (int i = 0; i < nargs; i++)
        argv[3 + nkeys + i] = args[i];
    ask_what(q, "a flow-control script", argc, argv, done, arg);
    free(argv);
}

void queue_command_op(queue_t *q, int argc, const char *const *argv)
{
    op_push(q, argc, argv, NULL, -1, NULL, NULL);
}

typedef struct depths_ask {
    queue_t *q;
    char lease[24];
    void (*done)(void *arg, const queue_depths_t *d);
    void *arg;
} depths_ask_t;

static void on_depths_reply(void *arg, const redisReply *r)
{
    depths_ask_t *a = arg;
    queue_depths_t d = {0};
    bool ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 8;
    for (size_t i = 0; ok && i < 7; i++)
        ok = r->element[i]->type == REDIS_REPLY_INTEGER;
    ok = ok && r->element[7]->type == REDIS_REPLY_STRING;
    if (ok) {
        int64_t *fields[] = {&d.pending, &d.processing, &d.delayed, &d.dead,
                             &d.workers, &d.workers_live, &d.now_ms};
        for (size_t i = 0; i < 7; i++)
            *fields[i] = (int64_t)r->element[i]->integer;
        if (r->element[7]->len > 0) {
            d.oldest = r->element[7]->str;
            d.oldest_len = r->element[7]->len;
        }
    }
    a->done(a->arg, ok ? &d : NULL);
    free(a);
}

static void on_depths_workers(void *arg, const redisReply *r)
{
    depths_ask_t *a = arg;
    queue_t *q = a->q;
    keyed_eval_t e;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || q->closing ||
        !keyed_eval_build(q, &e, LUA_DEPTHS, 4,
                          (const char *const[]){q->keys.pending, q->keys.delayed, q->keys.dead,
                                                q->keys.workers},
                          1, (const char *const[]){a->lease}, r, NULL)) {
        on_depths_reply(a, NULL);
        return;
    }
    ask(q, e.argc, e.argv, on_depths_reply, a);
    keyed_eval_free(&e);
}

void queue_depths(queue_t *q, int lease_ms, void (*done)(void *arg, const queue_depths_t *d),
                  void *arg)
{
    depths_ask_t *a = malloc(sizeof *a);
    if (a == NULL) {
        done(arg, NULL);
        return;
    }
    a->q = q;
    a->done = done;
    a->arg = arg;
    snprintf(a->lease, sizeof a->lease, "%d", lease_ms);
    char most[16];
    snprintf(most, sizeof most, "%d", WORKERS_READ_MAX - 1);
    const char *argv[] = {"ZRANGE", q->keys.workers, "0", most};
    ask(q, 4, argv, on_depths_workers, a);
}

int64_t queue_pop_failing_ms(const queue_t *q)
{
    if (q->pop_failing_ms == 0)
        return 0;
    int64_t d = clock_mono_ms() - q->pop_failing_ms;
    return d > 0 ? d : 1;
}

const char *queue_pop_error(const queue_t *q)
{
    return q->pop_error;
}

int64_t queue_pop_stalled_ms(const queue_t *q)
{
    if (q->room == 0)
        return 0;
    int64_t d = clock_mono_ms() - q->pop_reply_ms;
    return d > 0 ? d : 0;
}

void queue_push(queue_t *q, const char *payload, size_t len)
{
    const char *argv[] = {"LPUSH", q->keys.pending, payload};
    size_t lens[] = {5, strlen(q->keys.pending), len};
    op_push(q, 3, argv, lens, -1, NULL, NULL);
}

void queue_heartbeat(queue_t *q)
{
    /* Once the worker has left {Q}:workers, a late heartbeat would put it back. */
    if (q->leaving)
        return;
    const char *argv[] = {"EVAL", LUA_HEARTBEAT, "1", q->keys.workers, q->worker_id};
    periodic(q, "heartbeat", 5, argv);
}

/* The answer to one call of a script that moves a bounded number of jobs (an integer: how
 * many it moved) on the command connection: that number, or -1 when there is none (the
 * reply was lost, or Redis refused the call: logged as `what` failing). */
static long long moved_reply(queue_t *q, redisAsyncContext *ac, const redisReply *r,
                             const char *what)
{
    if (r == NULL || q->cmd.ac != ac)
        return -1;
    conn_replied(&q->cmd);
    if (reply_is_error(r)) {
        log_warn("redis.periodic", "%s failed: %s", what, r->str);
        if (reply_is_transient(r))
            conn_drop(&q->cmd, r->str);
        return -1;
    }
    return r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? r->integer : 0;
}

/* The end of a lease recovery: what its calls moved, in one line. */
static void recover_done(queue_t *q)
{
    q->recovering = false;
    if (q->recover_moved > 0)
        log_info("recovery", "moved %lld job(s) back to the queue", q->recover_moved);
    q->recover_moved = 0;
}

/* LUA_RECOVER's answer: a full call (MOVE_BUMP_MAX jobs moved) is followed at once by the
 * next one, from LUA_EXPIRED again (so each call sees the heartbeats of that moment). */
static void on_recover_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    long long moved = moved_reply(q, ac, reply, "recovery");
    if (moved > 0)
        q->recover_moved += moved;
    if (moved >= MOVE_BUMP_MAX && !q->closing && !q->leaving) {
        q->recovering = false;
        queue_recover(q, q->recover_lease_ms);
        return;
    }
    recover_done(q); /* when lost or refused, the next heartbeat period recovers the rest */
}

static void on_expired_reply(void *arg, const redisReply *r)
{
    queue_t *q = arg;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0 || q->closing || q->leaving) {
        recover_done(q);
        return;
    }
    const char *keys[] = {q->keys.workers, q->keys.pending, q->workerinfo};
    char lease[24];
    snprintf(lease, sizeof lease, "%d", q->recover_lease_ms);
    const char *args[] = {lease, MOVE_BUMP_MAX_ARG};
    keyed_eval_t e;
    if (!keyed_eval_build(q, &e, LUA_RECOVER, 3, keys, 2, args, r, q->worker_id)) {
        log_error("redis.recovery", "out of memory building the lease recovery");
        recover_done(q);
        return;
    }
    if (q->cmd.state != CONN_READY ||
        !conn_send(&q->cmd, on_recover_reply, q, e.argc, e.argv, NULL))
        recover_done(q);
    keyed_eval_free(&e);
}

void queue_recover(queue_t *q, int lease_ms)
{
    if (q->recovering)
        return; /* the one under way goes on by itself while it finds jobs */
    if (q->leaving || clock_mono_ms() < q->recover_after_ms)
        return; /* peers are still re-announcing themselves after a (re)connect */
    q->recovering = true;
    q->recover_lease_ms = lease_ms;
    char lease[24], most[16];
    snprintf(lease, sizeof lease, "%d", lease_ms);
    snprintf(most, sizeof most, "%d", RECOVER_IDS_MAX);
    const char *argv[] = {"EVAL", LUA_EXPIRED, "1", q->keys.workers, lease, q->worker_id, most};
    ask(q, 7, argv, on_expired_reply, q);
}

static void on_quiet_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    conn_t *c = privdata;
    redisReply *r = reply;
    if (r == NULL || c->ac != ac)
        return;
    conn_replied(c);
    if (reply_is_error(r))
        log_warn("redis.command", "%s refused: %s", c->name, r->str);
    if (reply_is_transient(r))
        conn_drop(c, r->str);
}

/* Whether the worker registered with `info` (see queue_new) ran on this host, in this
 * pid namespace, and its process is gone: no such pid, or the pid is this very process
 * (a restart that got the same pid). A pid running as anything else counts as alive. */
static bool predecessor_gone(const queue_t *q, const char *info)
{
    const char *own_pid = strrchr(q->info, ' ');
    const char *its_pid = strrchr(info, ' ');
    if (own_pid == NULL || its_pid == NULL || own_pid - q->info != its_pid - info ||
        memcmp(q->info, info, (size_t)(own_pid - q->info)) != 0)
        return false;
    char *end;
    errno = 0;
    long pid = strtol(its_pid + 1, &end, 10);
    if (errno != 0 || *end != '\0' || pid <= 0 || (long)(pid_t)pid != pid)
        return false;
    if ((pid_t)pid == getpid())
        return true;
    return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* The reclaim of one dead predecessor's list (LUA_RECLAIM), a call after the other. */
typedef struct reclaim {
    queue_t *q;
    char list[sizeof ((queue_t *)NULL)->processing];
    char taken[sizeof((queue_t *)NULL)->taken];
    char id[256];
    char info[200];
    long long moved;
} reclaim_t;

static void on_reclaim_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void send_reclaim(reclaim_t *rc)
{
    queue_t *q = rc->q;
    const char *argv[] = {"EVAL",          LUA_RECLAIM,      "5",
                          q->keys.workers, q->keys.pending,  q->workerinfo,
                          rc->list,        rc->taken,        rc->id,
                          rc->info,        MOVE_BUMP_MAX_ARG};
    if (q->cmd.state != CONN_READY || !conn_send(&q->cmd, on_reclaim_reply, rc, 11, argv, NULL))
        free(rc); /* lease recovery takes what is left */
}

static void on_reclaim_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    reclaim_t *rc = privdata;
    queue_t *q = rc->q;
    long long moved = moved_reply(q, ac, reply, "reclaim");
    if (moved > 0)
        rc->moved += moved;
    if (moved >= MOVE_BUMP_MAX && !q->closing) {
        send_reclaim(rc); /* more may be left */
        return;
    }
    /* when lost or refused, lease recovery takes what is left */
    if (rc->moved > 0)
        log_info("reclaim", "moved %lld job(s) back to the queue from a dead worker of this host "
                 "(without waiting for its lease)", rc->moved);
    free(rc);
}

static void on_workerinfo_reply(void *arg, const redisReply *r)
{
    queue_t *q = arg;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || q->closing)
        return;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *id = r->element[i], *info = r->element[i + 1];
        if (id->type != REDIS_REPLY_STRING || info->type != REDIS_REPLY_STRING ||
            strcmp(id->str, q->worker_id) == 0 || !predecessor_gone(q, info->str))
            continue;
        reclaim_t *rc = calloc(1, sizeof *rc);
        if (rc == NULL || strlen(id->str) >= sizeof rc->id || strlen(info->str) >= sizeof rc->info ||
            retryq_keys_processing(&q->keys, id->str, rc->list, sizeof rc->list) < 0 ||
            retryq_keys_taken(&q->keys, id->str, rc->taken, sizeof rc->taken) < 0) {
            free(rc); /* lease recovery takes its list */
            continue;
        }
        rc->q = q;
        memcpy(rc->id, id->str, strlen(id->str) + 1);
        memcpy(rc->info, info->str, strlen(info->str) + 1);
        log_info("redis.reclaim", "worker %s ran on this host (%s) and its process is gone: "
                 "recovering its list now instead of after its lease", id->str, info->str);
        send_reclaim(rc);
    }
}

/* The command connection is (again) ready: heartbeat first, so that peers recovering
 * leases see this worker alive; hold back this worker's own lease recovery until its
 * peers have had the time to reconnect and do the same (their reconnect backoff is at
 * most BACKOFF_MAX_MS, plus a heartbeat); register where this worker runs; and, once,
 * recover the lists of dead workers of this host at once. */
static void on_recovery_start(queue_t *q)
{
    if (q->leaving)
        return;
    q->recover_after_ms = clock_mono_ms() + q->cfg.heartbeat_ms + BACKOFF_MAX_MS;
    if (q->had_cmd_connection)
        queue_heartbeat(q); /* the first one comes from the worker once it runs */
    if (q->info[0] != '\0' && q->cmd.state == CONN_READY) {
        const char *argv[] = {"HSET", q->workerinfo, q->worker_id, q->info};
        if (conn_send(&q->cmd, on_quiet_reply, &q->cmd, 4, argv, NULL) && !q->host_checked) {
            const char *all[] = {"HGETALL", q->workerinfo};
            q->host_checked = true;
            ask(q, 2, all, on_workerinfo_reply, q);
        }
    }
    q->had_cmd_connection = true;
}

void queue_trim_cancelled(queue_t *q, int64_t retention_ms)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%lld", (long long)retention_ms);
    const char *argv[] = {"EVAL", LUA_TRIM_CANCELLED, "1", q->keys.cancelled, ms};
    periodic(q, "trim_cancelled", 5, argv);
}

/* The periodic promotion's answer: a full call (MOVE_MAX jobs moved) is followed at once by
 * the next one, so many jobs due at the same moment do not wait a tick per MOVE_MAX. */
static void on_promote_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    q->promoting = false;
    if (moved_reply(q, ac, reply, "delayed.promote") >= MOVE_MAX && !q->closing)
        queue_promote(q); /* when lost or refused, the next tick promotes */
}

void queue_promote(queue_t *q)
{
    if (q->promoting || q->cmd.state != CONN_READY)
        return; /* one out goes on by itself while it finds due jobs */
    const char *argv[] = {"EVAL", LUA_PROMOTE, "2", q->keys.delayed, q->keys.pending,
                          MOVE_MAX_ARG};
    q->promoting = conn_send(&q->cmd, on_promote_reply, q, 6, argv, NULL);
}

static void send_promote_next(queue_t *q);

/* The soon promotion's answer: moved jobs, and when the next delayed job is due. A full
 * call is followed at once by the next one; otherwise another one is armed when the next
 * job is due within a tick, so short parks come back on time. */
static void on_promote_soon_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    redisReply *r = reply;
    if (r == NULL || q->cmd.ac != ac)
        return;
    conn_replied(&q->cmd);
    if (reply_is_error(r)) {
        log_warn("redis.periodic", "delayed.promote failed: %s", r->str);
        if (reply_is_transient(r))
            conn_drop(&q->cmd, r->str);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || q->closing)
        return;
    if (r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= MOVE_MAX)
        send_promote_next(q);
    else if (r->element[1]->type == REDIS_REPLY_INTEGER && r->element[1]->integer >= 0 &&
             r->element[1]->integer < PROMOTE_SOON_WITHIN_MS)
        queue_promote_soon(q, r->element[1]->integer < PROMOTE_SOON_MIN_MS ? PROMOTE_SOON_MIN_MS
                                                                           : r->element[1]->integer);
}

static void send_promote_next(queue_t *q)
{
    if (q->cmd.state != CONN_READY)
        return; /* the schedule's tick promotes once Redis is back */
    const char *argv[] = {"EVAL", LUA_PROMOTE_NEXT, "2", q->keys.delayed, q->keys.pending,
                          MOVE_MAX_ARG};
    conn_send(&q->cmd, on_promote_soon_reply, q, 6, argv, NULL);
}

static void promote_soon_cb(evutil_socket_t fd, short what, void *arg)
{
    queue_t *q = arg;
    q->promote_at_ms = 0;
    send_promote_next(q);
}

void queue_promote_soon(queue_t *q, int64_t delay_ms)
{
    int64_t now = clock_mono_ms(), at = now + (delay_ms > 0 ? delay_ms : 0);
    /* one armed at most PROMOTE_SOON_SLACK_MS later (or earlier: its answer re-arms) serves */
    if (q->closing || (q->promote_at_ms != 0 && q->promote_at_ms <= at + PROMOTE_SOON_SLACK_MS))
        return;
    struct timeval tv = clock_tv_ms(at - now);
    if (evtimer_add(q->promote_soon, &tv) == 0)
        q->promote_at_ms = at;
}

/*
 * A blocking pop that is still out when the worker leaves could move a job pushed after
 * the LEAVE into a list nobody watches any more. So the LEAVE waits for the pop's reply
 * (hurried by CLIENT UNBLOCK from the command connection, which makes the pop answer
 * nil at once); a job that pop brings is not started and the LEAVE hands it back.
 */
void queue_leave(queue_t *q, void (*done)(void *arg, bool empty), void *arg)
{
    q->leaving = true;
    q->check_due = false;
    q->leave_done = done;
    q->leave_arg = arg;
    evtimer_del(q->pop_retry);
    if (q->popping && q->pop.state == CONN_READY) {
        q->unblock_sent = false; /* whatever was sent before, hurry this pop too */
        queue_cancel_pop(q);
        return; /* the pop's reply (or the loss of its connection) sends the LEAVE */
    }
    send_leave(q);
}

void queue_cancel_pop(queue_t *q)
{
    if (!q->popping || q->unblock_sent || q->pop.state != CONN_READY || q->pop_client_id <= 0 ||
        q->cmd.state != CONN_READY)
        return;
    char id[24];
    snprintf(id, sizeof id, "%lld", q->pop_client_id);
    const char *argv[] = {"CLIENT", "UNBLOCK", id};
    conn_send(&q->cmd, on_quiet_reply, &q->cmd, 3, argv, NULL);
    q->unblock_sent = true;
}

static void push_leave(queue_t *q);

/* A LEAVE call's answer: the jobs still in the list. The next call goes at once while
 * some are; `done` runs once, when none are (the worker has left) or Redis refused. */
static void on_leave_reply(queue_t *q, const redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        push_leave(q);
        return;
    }
    if (q->leave_done != NULL)
        q->leave_done(q->leave_arg, r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
}

/* One call of the hand-back, as an operation: resent after a reconnect like the others
 * (a repeat moves the next jobs, or none). */
static void push_leave(queue_t *q)
{
    const char *argv[] = {"EVAL",          LUA_LEAVE,     "5",
                          q->processing,   q->taken,      q->keys.pending,
                          q->keys.workers, q->workerinfo, q->worker_id,
                          MOVE_MAX_ARG};
    op_t *op = op_push(q, 10, argv, NULL, -1, NULL, NULL);
    if (op != NULL)
        op->replied = on_leave_reply;
}

static void send_leave(queue_t *q)
{
    if (!q->leaving || q->leave_sent)
        return;
    q->leave_sent = true;
    push_leave(q);
}

typedef struct count_ask {
    queue_t *q;
    char suspect[24];
    void (*done)(void *arg, bool empty);
    void *arg;
} count_ask_t;

static void on_count_workers(void *arg, const redisReply *r)
{
    count_ask_t *a = arg;
    queue_t *q = a->q;
    keyed_eval_t e;
    char total[24];
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || q->closing) {
        a->done(a->arg, false); /* not known to be empty: asked again on the next idle pop */
        free(a);
        return;
    }
    snprintf(total, sizeof total, "%zu", r->elements);
    const char *keys[] = {q->keys.pending, q->keys.delayed, q->keys.workers, q->processing, q->taken};
    const char *args[] = {a->suspect, total};
    if (keyed_eval_build(q, &e, LUA_COUNT, 5, keys, 2, args, r, q->worker_id)) {
        op_push(q, e.argc, e.argv, NULL, -1, a->done, a->arg);
        keyed_eval_free(&e);
    } else {
        a->done(a->arg, false);
    }
    free(a);
}

void queue_check_empty(queue_t *q, int suspect_ms, void (*done)(void *arg, bool empty), void *arg)
{
    count_ask_t *a = malloc(sizeof *a);
    if (a == NULL) {
        done(arg, false);
        return;
    }
    a->q = q;
    snprintf(a->suspect, sizeof a->suspect, "%d", suspect_ms);
    a->done = done;
    a->arg = arg;
    char most[16];
    snprintf(most, sizeof most, "%d", WORKERS_READ_MAX - 1);
    const char *argv[] = {"ZRANGE", q->keys.workers, "0", most};
    ask(q, 4, argv, on_count_workers, a);
}

/* -------------------------------------------------------------------- lifecycle */

/* Where this process runs, recorded in {Q}:workerinfo so that a worker started later on
 * the same host can prove this one dead: the kernel's boot id, the pid namespace and the
 * pid. Left empty (no fast recovery, leases only) when /proc does not tell. */
static void read_host_info(queue_t *q)
{
    char boot[64] = "", ns[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f != NULL) {
        if (fgets(boot, sizeof boot, f) == NULL)
            boot[0] = '\0';
        fclose(f);
    }
    boot[strcspn(boot, " \r\n")] = '\0';
    ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    ns[n > 0 ? n : 0] = '\0';
    q->info[0] = '\0';
    if (boot[0] != '\0' && ns[0] != '\0' && strchr(ns, ' ') == NULL)
        snprintf(q->info, sizeof q->info, "%s %s %ld", boot, ns, (long)getpid());
}

static void conn_init(queue_t *q, conn_t *c, const char *name)
{
    c->q = q;
    c->name = name;
    c->state = CONN_DOWN;
    backoff_init(&c->backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    c->timer = evtimer_new(q->base, conn_timer_cb, c);
}

queue_t *queue_new(struct event_base *base, const queue_config_t *cfg,
                   const queue_callbacks_t *cb, char *err, size_t errcap)
{
    queue_t *q = calloc(1, sizeof *q);
    if (q == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    q->base = base;
    q->cfg = *cfg;
    q->url = *cfg->url;
    q->keys = *cfg->keys;
    q->cb = *cb;
    q->batch_empty = false;
    q->use_blmove = true;
    q->check_cursor[0] = '0';
    q->pop_reply_ms = clock_mono_ms();
    rq_copy(q->worker_id, sizeof q->worker_id, cfg->worker_id);
    if (retryq_keys_processing(&q->keys, q->worker_id, q->processing, sizeof q->processing) < 0 ||
        retryq_keys_taken(&q->keys, q->worker_id, q->taken, sizeof q->taken) < 0) {
        snprintf(err, errcap, "worker id too long for a processing key");
        free(q);
        return NULL;
    }
    backoff_seed(&q->rng);
    backoff_init(&q->pop_backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    snprintf(q->workerinfo, sizeof q->workerinfo, "{%s}:workerinfo", q->keys.pending);
    read_host_info(q);
    conn_init(q, &q->pop, "pop");
    conn_init(q, &q->cmd, "command");
    q->pop_retry = evtimer_new(base, pop_retry_cb, q);
    q->promote_soon = evtimer_new(base, promote_soon_cb, q);
    if (q->pop.timer == NULL || q->cmd.timer == NULL || q->pop_retry == NULL ||
        q->promote_soon == NULL) {
        snprintf(err, errcap, "out of memory");
        queue_free(q);
        return NULL;
    }
    if (q->url.is_sentinel || q->url.is_cluster) {
        /* one sentinel's (node's) connect and answer: short, so that a dead one costs little */
        int timeout = cfg->connect_timeout_ms < 2000 ? cfg->connect_timeout_ms : 2000;
        sentinel_callbacks_t scb = {.found = on_primary_found, .changed = on_primary_changed,
                                    .arg = q};
        q->slot = cluster_keyslot(q->keys.pending, strlen(q->keys.pending));
        q->sentinel = sentinel_new(base, cfg->resolver, &q->url, q->slot, timeout, &scb, err,
                                   errcap);
        if (q->sentinel == NULL) {
            queue_free(q);
            return NULL;
        }
    }
    conn_connect(&q->cmd);
    conn_connect(&q->pop);
    return q;
}

void queue_free(queue_t *q)
{
    if (q == NULL)
        return;
    q->closing = true;
    sentinel_free(q->sentinel);
    q->sentinel = NULL;
    conn_t *conns[] = {&q->pop, &q->cmd};
    for (size_t i = 0; i < 2; i++) {
        conn_t *c = conns[i];
        if (c->ac != NULL) {
            redisAsyncContext *ac = c->ac;
            c->ac = NULL;
            redisAsyncFree(ac);
        }
        if (c->timer != NULL)
            event_free(c->timer);
    }
    if (q->pop_retry != NULL)
        event_free(q->pop_retry);
    if (q->promote_soon != NULL)
        event_free(q->promote_soon);
    while (q->ops_head != NULL) {
        op_t *op = q->ops_head;
        op_unlink(q, op);
        op_free(op);
    }
    free(q);
}

void queue_set_host(queue_t *q, const char *addr)
{
    if (!q->url.is_unix && q->sentinel == NULL)
        rq_copy(q->url.host, sizeof q->url.host, addr);
}

bool queue_ready(const queue_t *q)
{
    return q->pop.state == CONN_READY && q->cmd.state == CONN_READY;
}

size_t queue_unsent(const queue_t *q)
{
    return q->ops_count;
}

const char *queue_last_error(const queue_t *q)
{
    return q->last_error;
}

const char *queue_unsafe(const queue_t *q)
{
    return q->unsafe;
}

const char *queue_server_version(const queue_t *q)
{
    return q->version;
}

uint64_t queue_reconnects(const queue_t *q)
{
    return q->reconnects;
}

uint64_t queue_failovers(const queue_t *q)
{
    return q->failovers;
}

int64_t queue_discovery_failing_ms(const queue_t *q)
{
    if (q->sentinel == NULL || q->discovery_failing_ms == 0)
        return 0;
    int64_t d = clock_mono_ms() - q->discovery_failing_ms;
    return d > 0 ? d : 1;
}

const char *queue_primary(const queue_t *q)
{
    return q->sentinel != NULL ? q->primary : "";
}
