/*
 * The Redis side of the worker (see queue.h for the contract).
 *
 * Two hiredis async connections share one shape (conn_t): connect, a setup pipeline
 * (AUTH, SELECT, CLIENT SETNAME, and INFO on the command connection), then READY. A
 * lost connection is re-opened after a backoff that doubles from 100 ms to 5 s with
 * full jitter. hiredis frees a context itself when it is lost and calls every pending
 * reply callback with a NULL reply: NULL always means "outcome unknown", never failure.
 *
 * Operations (ack, dead, delay, requeue) live in a FIFO until Redis answers them; after
 * a reconnect the unanswered ones are sent again. Every operation is a Lua script (or
 * LREM) that only acts while the job is still in this worker's processing list, so a
 * resend after a lost reply changes nothing. A watchdog drops a connection whose reply
 * is overdue (hiredis 0.14 has no command timeout of its own).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "internal.h"
#include "log.h"
#include "queue.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define WATCHDOG_MS 500

/* Moves up to ARGV[1] jobs from the queue into the processing list, oldest first. */
static const char LUA_POP_BATCH[] =
    "local out = {}\n"
    "for i = 1, tonumber(ARGV[1]) do\n"
    "  local v = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])\n"
    "  if not v then break end\n"
    "  out[i] = v\n"
    "end\n"
    "return out\n";

/* KEYS: processing, dead. ARGV: payload, dead entry, cap. */
static const char LUA_DEAD[] =
    "if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end\n"
    "redis.call('LPUSH', KEYS[2], ARGV[2])\n"
    "redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)\n"
    "return 1\n";

/* KEYS: processing, delayed. ARGV: payload, next payload, delay ms. */
static const char LUA_DELAY[] =
    "if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])\n"
    "return 1\n";

/* KEYS: processing, queue. ARGV: payload. RPUSH puts it where the next pop takes from. */
static const char LUA_REQUEUE[] =
    "if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end\n"
    "redis.call('RPUSH', KEYS[2], ARGV[1])\n"
    "return 1\n";

/* KEYS: workers. ARGV: worker id. The heartbeat is Redis's own clock. */
static const char LUA_HEARTBEAT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "return now\n";

/*
 * KEYS: workers, queue. ARGV: lease ms, processing prefix, own id, max jobs per call.
 * Every worker silent for longer than the lease loses its list: each job goes back to
 * the head of the queue (so it runs next) with its delivery count raised by one — an
 * expired lease counts as a delivery, so a job that keeps killing workers ends up in
 * the dead list. Oldest jobs end nearest the head. At most ARGV[4] jobs per call.
 */
static const char LUA_RECOVER[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))\n"
    "local budget = tonumber(ARGV[4])\n"
    "local moved = 0\n"
    "for _, id in ipairs(dead) do\n"
    "  if id ~= ARGV[3] then\n"
    "    local list = ARGV[2] .. id\n"
    "    while budget > 0 do\n"
    "      local v = redis.call('LPOP', list)\n"
    "      if not v then break end\n"
    "      local n\n"
    "      v, n = string.gsub(v, '\"delivery\":%s*(%d+)', function(d)\n"
    "        return '\"delivery\":' .. (tonumber(d) + 1) end, 1)\n"
    "      if n == 0 and string.sub(v, -1) == '}' then\n"
    "        v = string.sub(v, 1, -2) .. ',\"delivery\":1}'\n"
    "      end\n"
    "      redis.call('RPUSH', KEYS[2], v)\n"
    "      moved = moved + 1\n"
    "      budget = budget - 1\n"
    "    end\n"
    "    if redis.call('LLEN', list) == 0 then redis.call('ZREM', KEYS[1], id) end\n"
    "  end\n"
    "end\n"
    "return moved\n";

/* KEYS: delayed, queue. Due jobs go to the tail of the queue (they waited their turn). */
static const char LUA_PROMOTE[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)\n"
    "for _, v in ipairs(due) do\n"
    "  redis.call('ZREM', KEYS[1], v)\n"
    "  redis.call('LPUSH', KEYS[2], v)\n"
    "end\n"
    "return #due\n";

/* KEYS: processing, queue, workers. ARGV: own id. */
static const char LUA_LEAVE[] =
    "local n = 0\n"
    "while true do\n"
    "  local v = redis.call('LPOP', KEYS[1])\n"
    "  if not v then break end\n"
    "  redis.call('RPUSH', KEYS[2], v)\n"
    "  n = n + 1\n"
    "end\n"
    "redis.call('ZREM', KEYS[3], ARGV[1])\n"
    "return n\n";

/* KEYS: queue, delayed, workers. ARGV: processing prefix, then candidate execution ids.
 * Returns the candidates found in no list. */
static const char LUA_MISSING[] =
    "local want = {}\n"
    "for i = 2, #ARGV do want[ARGV[i]] = true end\n"
    "local function scan(items)\n"
    "  for _, v in ipairs(items) do\n"
    "    local id = string.match(v, '\"execution_id\"%s*:%s*\"?(%d+)')\n"
    "    if id then want[id] = nil end\n"
    "  end\n"
    "end\n"
    "scan(redis.call('LRANGE', KEYS[1], 0, -1))\n"
    "scan(redis.call('ZRANGE', KEYS[2], 0, -1))\n"
    "for _, w in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do\n"
    "  scan(redis.call('LRANGE', ARGV[1] .. w, 0, -1))\n"
    "end\n"
    "local out = {}\n"
    "for i = 2, #ARGV do if want[ARGV[i]] then out[#out + 1] = ARGV[i] end end\n"
    "return out\n";

/* KEYS: queue, delayed, workers. ARGV: processing prefix, own id, suspect ms. Counts every
 * job not held by this worker, including other workers' lists, and counts a silent worker
 * (no heartbeat for ARGV[3] ms) as work until lease recovery has removed it, so
 * --exit-when-idle waits for the recovery instead of leaving a dead worker behind. */
static const char LUA_COUNT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local n = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])\n"
    "local ws = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')\n"
    "for i = 1, #ws, 2 do\n"
    "  if ws[i] ~= ARGV[2] then\n"
    "    n = n + redis.call('LLEN', ARGV[1] .. ws[i])\n"
    "    if now - tonumber(ws[i + 1]) > tonumber(ARGV[3]) then n = n + 1 end\n"
    "  end\n"
    "end\n"
    "return n\n";

/* KEYS: queue, delayed, dead, workers. ARGV: processing prefix, lease ms. The figures of
 * /metrics in one call: depths, workers (all / live by heartbeat), Redis's clock and the
 * next job to be taken (for the age of the oldest waiting job). */
static const char LUA_DEPTHS[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local processing = 0\n"
    "local workers = redis.call('ZRANGE', KEYS[4], 0, -1)\n"
    "for _, w in ipairs(workers) do\n"
    "  processing = processing + redis.call('LLEN', ARGV[1] .. w)\n"
    "end\n"
    "local live = redis.call('ZCOUNT', KEYS[4], now - tonumber(ARGV[2]), '+inf')\n"
    "local oldest = redis.call('LINDEX', KEYS[1], -1) or ''\n"
    "return {redis.call('LLEN', KEYS[1]), processing, redis.call('ZCARD', KEYS[2]),\n"
    "        redis.call('LLEN', KEYS[3]), #workers, live, now, oldest}\n";

typedef enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_SETUP, CONN_READY } conn_state_t;

typedef struct conn {
    queue_t *q;
    const char *name;
    redisAsyncContext *ac;
    conn_state_t state;
    struct event *timer;     /* reconnect delay, or connect deadline */
    int backoff_ms;
    int outstanding;         /* commands sent and not answered */
    int64_t progress_ms;     /* monotonic time of the last send or reply */
    int64_t allowance_ms;    /* how long the oldest outstanding reply may take */
    bool setup_failed;
} conn_t;

typedef struct op {
    struct op *prev, *next;
    bool sent;
    int argc;
    char **argv;
    size_t *argvlen;
    void (*done)(void *arg, bool empty);
    void *arg;
} op_t;

struct queue {
    struct event_base *base;
    queue_config_t cfg;
    retryq_redis_url_t url;
    retryq_keys_t keys;
    char worker_id[256];
    char processing[RETRYQ_MAX_QUEUE_NAME + 300];
    queue_callbacks_t cb;
    conn_t pop;
    conn_t cmd;
    struct event *watchdog;
    size_t room;
    bool popping;
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
};

static void conn_connect(conn_t *c);
static void conn_schedule(conn_t *c);
static void ops_flush(queue_t *q);
static void maybe_pop(queue_t *q);
static void deliver(queue_t *q, const redisReply *r, bool rescan);

static uint64_t rng_next(queue_t *q)
{
    q->rng ^= q->rng << 13;
    q->rng ^= q->rng >> 7;
    q->rng ^= q->rng << 17;
    return q->rng;
}

static void set_error(queue_t *q, const char *what, const char *detail)
{
    snprintf(q->last_error, sizeof q->last_error, "%s: %s", what, detail ? detail : "unknown");
}

static void notify_state(queue_t *q)
{
    if (!q->closing && q->cb.state != NULL)
        q->cb.state(q->cb.arg);
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
    if (c == &q->pop)
        q->popping = false;
    if (was_ready)
        q->reconnects++;
    conn_schedule(c);
    notify_state(q);
}

static void conn_drop(conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    log_warn("redis.drop", "dropping the %s connection: %s", c->name, why);
    set_error(c->q, c->name, why);
    /* The disconnect callback (or nothing, when still connecting) follows; either way
     * this conn forgets the context now. */
    c->ac = NULL;
    redisAsyncFree(ac);
    if (c->state != CONN_DOWN)
        conn_lost(c);
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
    if (c->ac == ac || c->ac == NULL)
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
    int64_t delay = (int64_t)(rng_next(q) % (uint64_t)(c->backoff_ms + 1));
    struct timeval tv = clock_tv_ms(delay);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    evtimer_add(c->timer, &tv);
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

/* Errors that mean "this server cannot take writes now": reconnect and try again. */
static bool reply_is_transient(const redisReply *r)
{
    static const char *const prefixes[] = {"READONLY", "LOADING", "MASTERDOWN", "BUSY",
                                           "TRYAGAIN", "CLUSTERDOWN", "UNBLOCKED", "NOAUTH"};
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

static void on_rescan_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    queue_t *q = privdata;
    redisReply *r = reply;
    if (r == NULL || q->pop.ac != ac)
        return;
    conn_replied(&q->pop);
    q->popping = false;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = r->elements; i > 0; i--) /* oldest first */
            deliver(q, r->element[i - 1], true);
    maybe_pop(q);
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
    c->backoff_ms = BACKOFF_MIN_MS;
    evtimer_del(c->timer);
    log_info("redis.ready", "%s connection ready (Redis %s)", c->name,
             q->version[0] ? q->version : "?");
    if (c == &q->cmd) {
        ops_flush(q);
    } else {
        q->batch_empty = false;
        if (q->had_pop_connection) {
            /* A pop answer lost with the old connection may have moved jobs into this
             * worker's list; lease recovery would find them only after this worker
             * dies, so read the list and let the worker adopt what it does not hold. */
            const char *argv[] = {"LRANGE", q->processing, "0", "-1"};
            q->popping = true;
            conn_send(c, on_rescan_reply, q, 4, argv, NULL);
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
    if (q->url.password[0] != '\0') {
        if (q->url.user[0] != '\0') {
            const char *argv[] = {"AUTH", q->url.user, q->url.password};
            conn_send(c, on_setup_reply, c, 3, argv, NULL);
        } else {
            const char *argv[] = {"AUTH", q->url.password};
            conn_send(c, on_setup_reply, c, 2, argv, NULL);
        }
    }
    if (c->ac == NULL)
        return;
    if (q->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", q->url.db);
        const char *argv[] = {"SELECT", db};
        conn_send(c, on_setup_reply, c, 2, argv, NULL);
    }
    char name[64];
    snprintf(name, sizeof name, "retryq-worker-%s", c->name);
    const char *setname[] = {"CLIENT", "SETNAME", name};
    conn_send(c, on_setup_reply, c, 3, setname, NULL);
    if (c == &q->cmd) {
        const char *info[] = {"INFO"};
        conn_send(c, on_setup_reply, c, 1, info, NULL);
    }
    const char *ping[] = {"PING"};
    conn_send(c, on_setup_done, c, 1, ping, NULL);
}

static void conn_connect(conn_t *c)
{
    queue_t *q = c->q;
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
    evtimer_add(c->timer, &tv);
}

/* Drops a connection whose oldest reply is overdue: a hung or partitioned server. */
static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    queue_t *q = arg;
    int64_t now = clock_mono_ms();
    conn_t *conns[] = {&q->pop, &q->cmd};
    for (size_t i = 0; i < 2; i++) {
        conn_t *c = conns[i];
        if (c->ac != NULL && c->state != CONN_CONNECTING && c->outstanding > 0 &&
            now - c->progress_ms > c->allowance_ms)
            conn_drop(c, "reply overdue");
    }
}

/* -------------------------------------------------------------------- taking jobs */

static void deliver(queue_t *q, const redisReply *r, bool rescan)
{
    if (r->type == REDIS_REPLY_STRING)
        q->cb.job(q->cb.arg, r->str, r->len, rescan);
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
    q->popping = false;
    if (reply_is_error(r)) {
        set_error(q, "pop", r->str);
        log_warn("redis.pop", "pop refused: %s", r->str);
        if (reply_is_transient(r))
            conn_drop(&q->pop, r->str);
        return;
    }
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
    maybe_pop(q);
}

static void maybe_pop(queue_t *q)
{
    if (q->closing || q->popping || q->room == 0 || q->pop.state != CONN_READY)
        return;
    q->popping = true;
    if (!q->batch_empty) {
        char n[24];
        size_t batch = q->room < (size_t)q->cfg.batch ? q->room : (size_t)q->cfg.batch;
        snprintf(n, sizeof n, "%zu", batch);
        const char *argv[] = {"EVAL", LUA_POP_BATCH, "2", q->keys.pending, q->processing, n};
        conn_send(&q->pop, on_pop_reply, q, 6, argv, NULL);
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
    if (op->done != NULL)
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

/* Queues one command; the arguments are copied (lengths given, so binary-safe). */
static void op_push(queue_t *q, int argc, const char *const *argv, const size_t *argvlen,
                    void (*done)(void *, bool), void *arg)
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
    return;
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
}

void queue_ack(queue_t *q, const char *payload, size_t len)
{
    const char *argv[] = {"LREM", q->processing, "-1", payload};
    size_t lens[] = {4, strlen(q->processing), 2, len};
    op_push(q, 4, argv, lens, NULL, NULL);
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
    const char *argv[] = {"EVAL", LUA_DEAD, "2", q->processing, q->keys.dead, payload, text, cap};
    size_t lens[] = {4, sizeof LUA_DEAD - 1, 1, strlen(q->processing), strlen(q->keys.dead),
                     len, strlen(text), strlen(cap)};
    op_push(q, 8, argv, lens, NULL, NULL);
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
    const char *argv[] = {"EVAL", LUA_DELAY, "2", q->processing, q->keys.delayed, payload,
                          next_payload, delay};
    size_t lens[] = {4, sizeof LUA_DELAY - 1, 1, strlen(q->processing), strlen(q->keys.delayed),
                     len, strlen(next_payload), strlen(delay)};
    op_push(q, 8, argv, lens, NULL, NULL);
}

void queue_requeue(queue_t *q, const char *payload, size_t len)
{
    const char *argv[] = {"EVAL", LUA_REQUEUE, "2", q->processing, q->keys.pending, payload};
    size_t lens[] = {4, sizeof LUA_REQUEUE - 1, 1, strlen(q->processing),
                     strlen(q->keys.pending), len};
    op_push(q, 6, argv, lens, NULL, NULL);
}

/* -------------------------------------------------------------------- maintenance */

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
    } else if (r->type == REDIS_REPLY_INTEGER && r->integer > 0 && strcmp(what, "heartbeat") != 0) {
        log_info(what, "moved %lld job(s) back to the queue", (long long)r->integer);
    }
}

static void periodic(queue_t *q, const char *what, int argc, const char **argv)
{
    if (q->cmd.state == CONN_READY)
        conn_send(&q->cmd, on_periodic_reply, (void *)what, argc, argv, NULL);
}

/* A one-off question with a reply for the caller (periodic: not resent when lost). */
typedef struct ask {
    void (*fn)(void *arg, const redisReply *reply);
    void *arg;
} ask_t;

static void on_ask_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    ask_t *ask = privdata;
    conn_t *c = ac->data;
    redisReply *r = reply;
    if (r != NULL && c != NULL) {
        conn_replied(c);
        if (reply_is_transient(r))
            conn_drop(c, r->str);
    }
    /* Called even while closing (with NULL) so the asker can free its state. */
    ask->fn(ask->arg, r != NULL && !reply_is_error(r) ? r : NULL);
    free(ask);
}

static void ask(queue_t *q, int argc, const char **argv, const size_t *argvlen,
                void (*fn)(void *arg, const redisReply *reply), void *arg)
{
    ask_t *a = malloc(sizeof *a);
    if (a == NULL || q->cmd.state != CONN_READY) {
        free(a);
        fn(arg, NULL);
        return;
    }
    a->fn = fn;
    a->arg = arg;
    if (redisAsyncCommandArgv(q->cmd.ac, on_ask_reply, a, argc, argv, argvlen) != REDIS_OK) {
        free(a);
        fn(arg, NULL);
        conn_drop(&q->cmd, "could not queue a command");
        return;
    }
    if (q->cmd.outstanding++ == 0)
        q->cmd.progress_ms = clock_mono_ms();
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
    ask(q, 6, argv, NULL, on_lock_reply, l);
}

typedef struct missing_ask {
    void (*done)(void *arg, char **missing, size_t n);
    void *arg;
} missing_ask_t;

static void on_missing_reply(void *arg, const redisReply *r)
{
    missing_ask_t *m = arg;
    char **ids = NULL;
    size_t n = 0;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        (ids = calloc(r->elements, sizeof *ids)) != NULL) {
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING &&
                (ids[n] = strdup(r->element[i]->str)) != NULL)
                n++;
    }
    m->done(m->arg, ids, n);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    free(m);
}

void queue_missing(queue_t *q, const char *const *ids, size_t n,
                   void (*done)(void *arg, char **missing, size_t n), void *arg)
{
    const char **argv = calloc(n + 7, sizeof *argv);
    missing_ask_t *m = malloc(sizeof *m);
    if (argv == NULL || m == NULL) {
        free(argv);
        free(m);
        done(arg, NULL, 0);
        return;
    }
    m->done = done;
    m->arg = arg;
    argv[0] = "EVAL";
    argv[1] = LUA_MISSING;
    argv[2] = "3";
    argv[3] = q->keys.pending;
    argv[4] = q->keys.delayed;
    argv[5] = q->keys.workers;
    argv[6] = q->keys.processing_prefix;
    for (size_t i = 0; i < n; i++)
        argv[7 + i] = ids[i];
    ask(q, (int)(n + 7), argv, NULL, on_missing_reply, m);
    free(argv);
}

void queue_command(queue_t *q, int argc, const char **argv,
                   void (*done)(void *arg, const redisReply *reply), void *arg)
{
    ask(q, argc, argv, NULL, done, arg);
}

typedef struct depths_ask {
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

void queue_depths(queue_t *q, int lease_ms, void (*done)(void *arg, const queue_depths_t *d),
                  void *arg)
{
    depths_ask_t *a = malloc(sizeof *a);
    if (a == NULL) {
        done(arg, NULL);
        return;
    }
    a->done = done;
    a->arg = arg;
    char lease[24];
    snprintf(lease, sizeof lease, "%d", lease_ms);
    const char *argv[] = {"EVAL", LUA_DEPTHS, "4", q->keys.pending, q->keys.delayed, q->keys.dead,
                          q->keys.workers, q->keys.processing_prefix, lease};
    ask(q, 9, argv, NULL, on_depths_reply, a);
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
    op_push(q, 3, argv, lens, NULL, NULL);
}

void queue_heartbeat(queue_t *q)
{
    const char *argv[] = {"EVAL", LUA_HEARTBEAT, "1", q->keys.workers, q->worker_id};
    periodic(q, "heartbeat", 5, argv);
}

void queue_recover(queue_t *q, int lease_ms)
{
    char lease[24];
    snprintf(lease, sizeof lease, "%d", lease_ms);
    const char *argv[] = {"EVAL", LUA_RECOVER, "2", q->keys.workers, q->keys.pending,
                          lease, q->keys.processing_prefix, q->worker_id, "10000"};
    periodic(q, "recovery", 9, argv);
}

void queue_promote(queue_t *q)
{
    const char *argv[] = {"EVAL", LUA_PROMOTE, "2", q->keys.delayed, q->keys.pending};
    periodic(q, "delayed.promote", 5, argv);
}

void queue_leave(queue_t *q, void (*done)(void *arg, bool empty), void *arg)
{
    const char *argv[] = {"EVAL", LUA_LEAVE, "3", q->processing, q->keys.pending,
                          q->keys.workers, q->worker_id};
    op_push(q, 7, argv, NULL, done, arg);
}

void queue_check_empty(queue_t *q, int suspect_ms, void (*done)(void *arg, bool empty), void *arg)
{
    char suspect[24];
    snprintf(suspect, sizeof suspect, "%d", suspect_ms);
    const char *argv[] = {"EVAL", LUA_COUNT, "3", q->keys.pending, q->keys.delayed,
                          q->keys.workers, q->keys.processing_prefix, q->worker_id, suspect};
    op_push(q, 9, argv, NULL, done, arg);
}

/* -------------------------------------------------------------------- lifecycle */

static void conn_init(queue_t *q, conn_t *c, const char *name)
{
    c->q = q;
    c->name = name;
    c->state = CONN_DOWN;
    c->backoff_ms = BACKOFF_MIN_MS;
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
    q->pop_reply_ms = clock_mono_ms();
    rq_copy(q->worker_id, sizeof q->worker_id, cfg->worker_id);
    if (retryq_keys_processing(&q->keys, q->worker_id, q->processing, sizeof q->processing) < 0) {
        snprintf(err, errcap, "worker id too long for a processing key");
        free(q);
        return NULL;
    }
    if (getrandom(&q->rng, sizeof q->rng, 0) != sizeof q->rng || q->rng == 0)
        q->rng = (uint64_t)clock_mono_us() | 1;
    conn_init(q, &q->pop, "pop");
    conn_init(q, &q->cmd, "command");
    q->watchdog = event_new(base, -1, EV_PERSIST, watchdog_cb, q);
    if (q->pop.timer == NULL || q->cmd.timer == NULL || q->watchdog == NULL) {
        snprintf(err, errcap, "out of memory");
        queue_free(q);
        return NULL;
    }
    struct timeval tv = clock_tv_ms(WATCHDOG_MS);
    evtimer_add(q->watchdog, &tv);
    conn_connect(&q->cmd);
    conn_connect(&q->pop);
    return q;
}

void queue_free(queue_t *q)
{
    if (q == NULL)
        return;
    q->closing = true;
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
    if (q->watchdog != NULL)
        event_free(q->watchdog);
    while (q->ops_head != NULL) {
        op_t *op = q->ops_head;
        op_unlink(q, op);
        op_free(op);
    }
    free(q);
}

void queue_set_host(queue_t *q, const char *addr)
{
    if (!q->url.is_unix)
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
