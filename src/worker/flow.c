/*
 * Flow control (see flow.h and docs/flow-control.md). One table of the keys this worker
 * knows (a hash of MODEL/REGION), each with what the worker knows of it: a pause and its
 * end on the monotonic clock, the breaker, the permits held, the due times of the jobs it
 * parked, and counters. Redis holds what the workers share, under the queue's hash tag:
 *
 *   {Q}:flow:pause:<key>    STRING  JSON {cause, reason, until_ms, by}, PX = time left
 *   {Q}:flow:paused         ZSET    key -> until_ms (the index of the pauses)
 *   {Q}:flow:permits:<key>  ZSET    "<worker id>:<seq>" -> lease expiry (Redis TIME)
 *   {Q}:flow:bucket:<key>   HASH    tokens, ts_ms
 *   {Q}:flow:breakers       HASH    key -> JSON {state, until_ms, worker, failures, calls}
 *   {Q}:flow:keys           ZSET    key -> last time a worker used it
 *
 * Every script names all its keys in KEYS (Redis Cluster). What happens when a reply is
 * lost, script by script:
 *   acquire  the permit may have been granted: a ZREM of it is queued as an operation
 *            (replayed until answered; ZREM of a member that is not there changes nothing);
 *            a token the bucket gave is lost, which only slows the key down;
 *   release  an operation (replayed): ZREM twice is ZREM once;
 *   renew    periodic: the next heartbeat renews; a permit not renewed for a lease ends;
 *   pause    not replayed: this worker's own pause holds anyway and another worker that
 *            calls the key meets the same answer from the router and pauses it itself;
 *   breaker, refresh   periodic or for show: the next one repeats.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>

#include "clock.h"
#include "flow.h"
#include "internal.h"
#include "log.h"

#define FLOW_BUCKETS 512        /* hash chains of the key table */
#define FLOW_KEYS_MAX 4096      /* keys tracked at most; idle ones are forgotten first */
#define FLOW_NOTE_KEYS 200      /* keys noted in {Q}:flow:keys per refresh */
#define FLOW_PAUSED_READ 1000   /* paused keys read per refresh */
#define FLOW_FETCH_MAX 100      /* pause documents fetched per refresh */
#define FLOW_RENEW_BATCH 500    /* permits renewed per script */
#define FLOW_WAITING_MAX 100000 /* due times of parked jobs kept per key */
#define FLOW_KEYS_KEEP_MS (7LL * 24 * 3600 * 1000) /* {Q}:flow:keys forgets keys unused this long */
#define FLOW_RESUME_SLACK_MS 1500 /* a pause this close to its end is not taken for a resume */
#define REDIS_KEY_MAX (RETRYQ_MAX_QUEUE_NAME + FLOW_KEY_MAX + 32)

/* KEYS: pause, permits, bucket, keys index. ARGV: key, member, concurrency (0: none),
 * lease ms, rate per second (0: none), burst. Returns {status, ms, pause document, now}:
 * 0 granted (a permit and/or a token taken), 1 no permit free, 2 no token (ms: until the
 * next), 3 paused (ms: time left, the document). Nothing is taken unless all is granted. */
static const char LUA_ACQUIRE[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[4], now, ARGV[1])\n"
    "local doc = redis.call('GET', KEYS[1])\n"
    "if doc then return {3, redis.call('PTTL', KEYS[1]), doc, now} end\n"
    "local limit = tonumber(ARGV[3])\n"
    "local lease = tonumber(ARGV[4])\n"
    "if limit > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "  if redis.call('ZCARD', KEYS[2]) >= limit then return {1, 0, '', now} end\n"
    "end\n"
    "local rate = tonumber(ARGV[5])\n"
    "if rate > 0 then\n"
    "  local burst = tonumber(ARGV[6])\n"
    "  local b = redis.call('HMGET', KEYS[3], 'tokens', 'ts_ms')\n"
    "  local tokens = tonumber(b[1]) or burst\n"
    "  local ts = tonumber(b[2]) or now\n"
    "  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end\n"
    "  local ttl = math.ceil(burst * 1000 / rate) + 1000\n"
    "  if tokens < 1 then\n"
    "    redis.call('HSET', KEYS[3], 'tokens', tostring(tokens), 'ts_ms', now)\n"
    "    redis.call('PEXPIRE', KEYS[3], ttl)\n"
    "    return {2, math.ceil((1 - tokens) * 1000 / rate), '', now}\n"
    "  end\n"
    "  redis.call('HSET', KEYS[3], 'tokens', tostring(tokens - 1), 'ts_ms', now)\n"
    "  redis.call('PEXPIRE', KEYS[3], ttl)\n"
    "end\n"
    "if limit > 0 then\n"
    "  redis.call('ZADD', KEYS[2], now + lease, ARGV[2])\n"
    "  redis.call('PEXPIRE', KEYS[2], lease * 2)\n"
    "end\n"
    "return {0, 0, '', now}\n";

/* KEYS: the permits ZSET of each permit. ARGV: lease ms, then the member of each. */
static const char LUA_RENEW[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local lease = tonumber(ARGV[1])\n"
    "for i = 1, #KEYS do\n"
    "  redis.call('ZADD', KEYS[i], 'XX', now + lease, ARGV[i + 1])\n"
    "  redis.call('PEXPIRE', KEYS[i], lease * 2)\n"
    "end\n"
    "return #KEYS\n";

/* KEYS: pause, paused index. ARGV: key, cause, reason, ms, by. A longer pause already
 * there is kept. Returns {1 set | 0 kept, ms left, the document}. */
static const char LUA_PAUSE[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ms = tonumber(ARGV[4])\n"
    "local old = redis.call('GET', KEYS[1])\n"
    "if old then\n"
    "  local ok, o = pcall(cjson.decode, old)\n"
    "  if ok and type(o) == 'table' and tonumber(o.until_ms) and tonumber(o.until_ms) >= now + ms then\n"
    "    return {0, tonumber(o.until_ms) - now, old}\n"
    "  end\n"
    "end\n"
    "local doc = cjson.encode({cause = ARGV[2], reason = ARGV[3], until_ms = now + ms, by = ARGV[5]})\n"
    "redis.call('SET', KEYS[1], doc, 'PX', ms)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "redis.call('ZADD', KEYS[2], now + ms, ARGV[1])\n"
    "return {1, ms, doc}\n";

/* KEYS: breakers. ARGV: key, state, ms until the probe, worker, failures, calls. */
static const char LUA_BREAKER[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({state = ARGV[2], until_ms = now + "
    "tonumber(ARGV[3]), worker = ARGV[4], failures = tonumber(ARGV[5]), calls = tonumber(ARGV[6])}))\n"
    "return 1\n";

/* KEYS: paused index, keys index. ARGV: keep ms, paused read at most, then keys used.
 * Returns {now, {key, until_ms, ...}} of the pauses not over. */
static const char LUA_REFRESH[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "if #ARGV > 2 then\n"
    "  for i = 3, #ARGV do redis.call('ZADD', KEYS[2], now, ARGV[i]) end\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]))\n"
    "end\n"
    "return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, "
    "tonumber(ARGV[2]))}\n";

typedef struct flow_key flow_key_t;

struct flow_key {
    flow_key_t *chain;         /* hash chain */
    flow_key_t *prev, *next;   /* every key, oldest first */
    uint64_t hash;
    char text[FLOW_KEY_MAX + 1];
    flow_limits_t limits;      /* from RETRYQ_FLOW; all 0: none */
    bool limited;
    int refs;                  /* passes and Redis replies that point here */
    int64_t paused_until;      /* monotonic ms; 0 = not paused */
    flow_cause_t cause;
    bool pause_in_redis;       /* the pause is in {Q}:flow:paused: a resume there ends it here */
    bool seen;                 /* in the last refresh's list of pauses */
    bool used;                 /* asked for since the last refresh (noted in {Q}:flow:keys) */
    breaker_t breaker;
    int permits;               /* concurrency permits this worker holds */
    int64_t *due;              /* due times (monotonic) of the jobs this worker parked */
    size_t due_count, due_cap;
    uint64_t pauses[FLOW_CAUSES];
};

struct flow_pass {
    flow_t *f;
    flow_key_t *key;           /* NULL: the key is not tracked (too long, table full) */
    uint64_t permit;           /* the sequence number of the permit held; 0: none */
    bool probe;                /* this call is the breaker's probe */
    struct flow_req *req;      /* the acquire that is out, or NULL */
    flow_answer_fn fn;
    void *arg;
    flow_pass_t *prev, *next;  /* in f->held while a permit is held */
};

/* One acquire out on Redis. */
typedef struct flow_req {
    flow_t *f;
    flow_pass_t *pass;         /* NULL once the pass was handed back */
    flow_key_t *key;           /* referenced */
    uint64_t permit;           /* the permit asked for; 0: none */
    bool in_call;              /* queue_script has not returned yet */
    bool answered;             /* ... and the answer came already (not sent) */
    flow_answer_t answer;
} flow_req_t;

/* A reply about one key (a pause published). */
typedef struct key_reply {
    flow_t *f;
    flow_key_t *key;
} key_reply_t;

/* The pause documents asked for after a refresh (for their cause: the index says until when). */
typedef struct fetch_reply {
    flow_t *f;
    size_t count;
    char keys[FLOW_FETCH_MAX][FLOW_KEY_MAX + 1];
    int64_t until[FLOW_FETCH_MAX]; /* monotonic, from the index's score */
} fetch_reply_t;

struct flow {
    flow_rules_t rules;
    breaker_config_t breaker;
    queue_t *queue;            /* NULL once closed */
    bool closed;
    char queue_name[RETRYQ_MAX_QUEUE_NAME + 1];
    char worker_id[256];
    int lease_ms;
    flow_key_t *table[FLOW_BUCKETS];
    flow_key_t *first, *last;
    size_t nkeys;
    flow_pass_t *held;         /* passes holding a permit */
    uint64_t seq;              /* the last permit's sequence number */
    bool refreshing;           /* a refresh read is out */
};

static const char *const cause_names[FLOW_CAUSES] = {"retry_after", "ratelimit", "breaker",
                                                     "operator"};

const char *flow_cause_name(flow_cause_t cause)
{
    return cause < FLOW_CAUSES ? cause_names[cause] : "operator";
}

static flow_cause_t cause_of(const char *name)
{
    for (int i = 0; name != NULL && i < FLOW_CAUSES; i++)
        if (strcmp(name, cause_names[i]) == 0)
            return (flow_cause_t)i;
    return FLOW_CAUSE_OPERATOR;
}

static void ignore_reply(void *arg, const redisReply *reply)
{
    (void)arg;
    (void)reply;
}

/* "{Q}:flow:<kind>:<key>", or "{Q}:flow:<kind>" without a key. */
static void redis_key(const flow_t *f, const char *kind, const flow_key_t *k, char *buf, size_t cap)
{
    if (k != NULL)
        snprintf(buf, cap, "{%s}:flow:%s:%s", f->queue_name, kind, k->text);
    else
        snprintf(buf, cap, "{%s}:flow:%s", f->queue_name, kind);
}

static void member_of(const flow_t *f, uint64_t permit, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%" PRIu64, f->worker_id, permit);
}

/* ------------------------------------------------------------------ the key table */

static uint64_t hash_text(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static bool key_idle(const flow_key_t *k)
{
    return k->refs == 0 && k->paused_until == 0 && k->permits == 0 && k->due_count == 0 &&
           breaker_idle(&k->breaker);
}

static void key_unlink(flow_t *f, flow_key_t *k)
{
    flow_key_t **slot = &f->table[k->hash % FLOW_BUCKETS];
    while (*slot != k)
        slot = &(*slot)->chain;
    *slot = k->chain;
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        f->first = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    else
        f->last = k->prev;
    f->nkeys--;
    free(k->due);
    free(k);
}

/* Forgets the oldest key with nothing going on; false when every key is busy. */
static bool evict_one(flow_t *f)
{
    for (flow_key_t *k = f->first; k != NULL; k = k->next) {
        if (key_idle(k)) {
            key_unlink(f, k);
            return true;
        }
    }
    return false;
}

/* The key "MODEL/REGION" (split at the last '/'), made when `create` and missing; NULL
 * when it is not there or cannot be tracked. */
static flow_key_t *key_find(flow_t *f, const char *text, bool create)
{
    size_t len = strlen(text);
    if (len == 0 || len > FLOW_KEY_MAX)
        return NULL;
    uint64_t h = hash_text(text);
    for (flow_key_t *k = f->table[h % FLOW_BUCKETS]; k != NULL; k = k->chain)
        if (k->hash == h && strcmp(k->text, text) == 0)
            return k;
    if (!create || (f->nkeys >= FLOW_KEYS_MAX && !evict_one(f)))
        return NULL;
    flow_key_t *k = calloc(1, sizeof *k);
    if (k == NULL)
        return NULL;
    memcpy(k->text, text, len + 1);
    k->hash = h;
    char *slash = strrchr(k->text, '/');
    if (slash != NULL) {
        *slash = '\0';
        const flow_limits_t *limits = flow_rules_match(&f->rules, k->text, slash + 1);
        *slash = '/';
        if (limits != NULL)
            k->limits = *limits;
    }
    k->limited = k->limits.concurrency > 0 || k->limits.rate_per_sec > 0;
    k->chain = f->table[h % FLOW_BUCKETS];
    f->table[h % FLOW_BUCKETS] = k;
    k->prev = f->last;
    if (f->last != NULL)
        f->last->next = k;
    else
        f->first = k;
    f->last = k;
    f->nkeys++;
    return k;
}

/* ------------------------------------------------------------------ pauses */

static void log_key(log_level_t level, const char *event, const flow_key_t *k, const char *k1,
                    const char *v1, const char *k2, const char *v2, const char *k3, const char *v3,
                    const char *msg)
{
    const char *pairs[] = {"key", k->text, k1, v1, k2, v2, k3, v3, NULL};
    /* the list stops at the first missing key */
    log_fields(level, 0, 0, event, pairs, "%s", msg);
}

static void seconds_text(int64_t ms, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.1f", (double)ms / 1000.0);
}

/* The key's pause, known to this worker, ends now. */
static void end_pause(flow_t *f, flow_key_t *k, const char *how)
{
    (void)f;
    char msg[200];
    snprintf(msg, sizeof msg, "calls to %s go again (%s pause %s)", k->text,
             flow_cause_name(k->cause), how);
    k->paused_until = 0;
    k->pause_in_redis = false;
    log_key(LOG_LEVEL_INFO, "flow.resumed", k, "cause", flow_cause_name(k->cause), "how", how, NULL,
            NULL, msg);
}

/* Starts or lengthens the pause this worker knows of; logs flow.paused when it begins. */
static void pause_local(flow_key_t *k, flow_cause_t cause, int64_t until, bool in_redis,
                        const char *by, int64_t now)
{
    bool was = k->paused_until > now;
    if (was && until <= k->paused_until) {
        if (in_redis)
            k->pause_in_redis = true;
        return;
    }
    k->paused_until = until;
    k->pause_in_redis = in_redis;
    if (was && cause == k->cause)
        return;
    k->cause = cause;
    k->pauses[cause]++;
    char seconds[32], msg[300];
    seconds_text(until - now, seconds, sizeof seconds);
    snprintf(msg, sizeof msg, "no calls to %s for %s s (%s)", k->text, seconds, flow_cause_name(cause));
    log_key(LOG_LEVEL_WARN, "flow.paused", k, "cause", flow_cause_name(cause), "seconds", seconds,
            "by", by != NULL ? by : "", msg);
}

static void on_published(void *arg, const redisReply *r)
{
    key_reply_t *kr = arg;
    flow_t *f = kr->f;
    flow_key_t *k = kr->key;
    k->refs--;
    free(kr);
    if (f->closed || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[1]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    cJSON *doc = cJSON_Parse(r->element[2]->str);
    const cJSON *cause = cJSON_GetObjectItemCaseSensitive(doc, "cause");
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(doc, "by");
    int64_t now = clock_mono_ms();
    pause_local(k, cause_of(cJSON_IsString(cause) ? cause->valuestring : NULL),
                now + (int64_t)r->element[1]->integer, true,
                cJSON_IsString(by) ? by->valuestring : NULL, now);
    cJSON_Delete(doc);
}

/* Pauses the key for `ms` here at once and for every worker through Redis. */
static void pause_key(flow_t *f, flow_key_t *k, flow_cause_t cause, int64_t ms, const char *reason)
{
    int64_t now = clock_mono_ms();
    bool longer = now + ms > k->paused_until;
    pause_local(k, cause, now + ms, false, f->worker_id, now);
    if (!longer || f->queue == NULL)
        return;
    key_reply_t *kr = malloc(sizeof *kr);
    if (kr == NULL)
        return; /* this worker's pause holds; the others meet the router's answer themselves */
    kr->f = f;
    kr->key = k;
    k->refs++;
    char pause[REDIS_KEY_MAX], paused[REDIS_KEY_MAX], msbuf[24];
    redis_key(f, "pause", k, pause, sizeof pause);
    redis_key(f, "paused", NULL, paused, sizeof paused);
    snprintf(msbuf, sizeof msbuf, "%" PRId64, ms);
    const char *keys[] = {pause, paused};
    const char *args[] = {k->text, flow_cause_name(cause), reason, msbuf, f->worker_id};
    queue_script(f->queue, LUA_PAUSE, 2, keys, 5, args, on_published, kr);
}

/* Tells the other workers (and `retryq stats`) what this worker's breaker does. */
static void publish_breaker(flow_t *f, const flow_key_t *k, int64_t now)
{
    if (f->queue == NULL)
        return;
    char breakers[REDIS_KEY_MAX], ms[24], failures[16], calls[16];
    redis_key(f, "breakers", NULL, breakers, sizeof breakers);
    const breaker_t *b = &k->breaker;
    snprintf(ms, sizeof ms, "%" PRId64, b->state == BREAKER_OPEN && b->until_ms > now ? b->until_ms - now : 0);
    snprintf(failures, sizeof failures, "%u", b->opened_failures);
    snprintf(calls, sizeof calls, "%u", b->opened_calls);
    const char *keys[] = {breakers};
    const char *args[] = {k->text, breaker_state_name(b->state), ms, f->worker_id, failures, calls};
    queue_script(f->queue, LUA_BREAKER, 1, keys, 6, args, ignore_reply, NULL);
}

/* ------------------------------------------------------------------ permits */

static void held_unlink(flow_t *f, flow_pass_t *p)
{
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        f->held = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* ZREM of one permit, sent until Redis answers. */
static void release_member(flow_t *f, const flow_key_t *k, uint64_t permit)
{
    if (f->queue == NULL)
        return; /* closing: the lease ends it */
    char permits[REDIS_KEY_MAX], member[300];
    redis_key(f, "permits", k, permits, sizeof permits);
    member_of(f, permit, member, sizeof member);
    const char *argv[] = {"ZREM", permits, member};
    queue_command_op(f->queue, 3, argv);
}

static void release_permit(flow_t *f, flow_pass_t *p)
{
    if (p->permit == 0)
        return;
    held_unlink(f, p);
    p->key->permits--;
    release_member(f, p->key, p->permit);
    p->permit = 0;
}

static void req_done(flow_req_t *r, const flow_answer_t *a)
{
    flow_t *f = r->f;
    flow_pass_t *p = r->pass;
    r->key->refs--;
    if (p != NULL)
        p->req = NULL;
    if (r->in_call) {
        r->answered = true; /* flow_ask returns the answer itself */
        r->answer = *a;
        return;
    }
    free(r);
    if (p != NULL && !f->closed)
        p->fn(p->arg, a);
}

static void on_acquire(void *arg, const redisReply *r)
{
    flow_req_t *req = arg;
    flow_t *f = req->f;
    flow_key_t *k = req->key;
    flow_pass_t *p = req->pass;
    flow_answer_t a = {.wait = RETRY_FLOW_UNKNOWN, .wait_ms = 0};
    bool sent = !req->in_call;
        if (f->closed) {
        req_done(req, &a);
        return;
    }
    bool ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 4;
    for (size_t i = 0; ok && i < 4; i++)
        ok = r->element[i]->type == (i == 2 ? REDIS_REPLY_STRING : REDIS_REPLY_INTEGER);
    if (!ok) {
        /* Sent but unanswered: the permit may be held in Redis. */
        if (r == NULL && sent && req->permit != 0)
            release_member(f, k, req->permit);
    } else {
        long long status = r->element[0]->integer, ms = r->element[1]->integer;
        int64_t now = clock_mono_ms();
        if (status == 0) {
            a.wait = RETRY_FLOW_GO;
            if (req->permit != 0 && p == NULL) {
                release_member(f, k, req->permit); /* the job ended meanwhile */
            } else if (req->permit != 0) {
                p->permit = req->permit;
                p->next = f->held;
                if (f->held != NULL)
                    f->held->prev = p;
                f->held = p;
                k->permits++;
            }
        } else if (status == 1) {
            a.wait = RETRY_FLOW_CONCURRENCY;
        } else if (status == 2) {
            a.wait = RETRY_FLOW_RATE;
            a.wait_ms = ms;
        } else {
            cJSON *doc = cJSON_Parse(r->element[2]->str);
            const cJSON *cause = cJSON_GetObjectItemCaseSensitive(doc, "cause");
            const cJSON *by = cJSON_GetObjectItemCaseSensitive(doc, "by");
            int64_t left = ms > 0 ? ms : FLOW_PAUSE_MIN_MS; /* -1: no expiry (an operator's SET) */
            pause_local(k, cause_of(cJSON_IsString(cause) ? cause->valuestring : NULL), now + left,
                        true, cJSON_IsString(by) ? by->valuestring : NULL, now);
            cJSON_Delete(doc);
            a.wait = RETRY_FLOW_PAUSE;
            a.wait_ms = left;
        }
    }
    if (p != NULL && a.wait != RETRY_FLOW_GO && p->probe) {
        breaker_probe_dropped(&k->breaker);
        p->probe = false;
    }
    req_done(req, &a);
}

/* Asks Redis for a permit and/or a token of the key. */
static int acquire(flow_t *f, flow_pass_t *p, flow_answer_t *answer)
{
    flow_key_t *k = p->key;
    flow_req_t *r = calloc(1, sizeof *r);
    if (r == NULL || f->queue == NULL) {
        free(r);
        answer->wait = RETRY_FLOW_UNKNOWN;
        if (p->probe) {
            breaker_probe_dropped(&k->breaker);
            p->probe = false;
        }
        return 1;
    }
    r->f = f;
    r->pass = p;
    r->key = k;
    k->refs++;
    r->permit = k->limits.concurrency > 0 ? ++f->seq : 0;
    p->req = r;
    char pause[REDIS_KEY_MAX], permits[REDIS_KEY_MAX], bucket[REDIS_KEY_MAX], index[REDIS_KEY_MAX];
    char member[300], limit[16], lease[16], rate[40], burst[16];
    redis_key(f, "pause", k, pause, sizeof pause);
    redis_key(f, "permits", k, permits, sizeof permits);
    redis_key(f, "bucket", k, bucket, sizeof bucket);
    redis_key(f, "keys", NULL, index, sizeof index);
    member_of(f, r->permit, member, sizeof member);
    snprintf(limit, sizeof limit, "%d", k->limits.concurrency);
    snprintf(lease, sizeof lease, "%d", f->lease_ms);
    snprintf(rate, sizeof rate, "%.9g", k->limits.rate_per_sec);
    snprintf(burst, sizeof burst, "%d", k->limits.burst);
    const char *keys[] = {pause, permits, bucket, index};
    const char *args[] = {k->text, member, limit, lease, rate, burst};
    r->in_call = true;
    queue_script(f->queue, LUA_ACQUIRE, 4, keys, 6, args, on_acquire, r);
    r->in_call = false;
    if (r->answered) {
        *answer = r->answer;
        free(r);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ a job's questions */

int flow_ask(flow_t *f, const char *model, const char *region, flow_answer_fn fn, void *arg,
             flow_pass_t **pass, flow_answer_t *answer)
{
    flow_pass_t *p = calloc(1, sizeof *p);
    *pass = p;
    if (p == NULL)
        return -1;
    p->f = f;
    p->fn = fn;
    p->arg = arg;
    answer->wait = RETRY_FLOW_GO;
    answer->wait_ms = 0;
    char text[FLOW_KEY_MAX + 2];
    int n = snprintf(text, sizeof text, "%s/%s", model != NULL ? model : "", region != NULL ? region : "");
    flow_key_t *k = !f->closed && n > 0 && n <= FLOW_KEY_MAX ? key_find(f, text, true) : NULL;
    if (k == NULL)
        return 1;
    p->key = k;
    k->refs++;
    k->used = true;
    int64_t now = clock_mono_ms();
    if (k->paused_until != 0 && now >= k->paused_until)
        end_pause(f, k, "over");
    if (k->paused_until != 0) {
        answer->wait = k->cause == FLOW_CAUSE_BREAKER && k->breaker.state != BREAKER_CLOSED
                           ? RETRY_FLOW_BREAKER
                           : RETRY_FLOW_PAUSE;
        answer->wait_ms = k->paused_until - now;
        return 1;
    }
    int64_t wait = 0;
    switch (breaker_gate(&k->breaker, &f->breaker, now, &wait)) {
    case BREAKER_PASS:
        break;
    case BREAKER_PROBE:
        p->probe = true;
        log_key(LOG_LEVEL_INFO, "flow.breaker.probe", k, NULL, NULL, NULL, NULL, NULL, NULL,
                "one probe call goes to see whether the provider is back");
        publish_breaker(f, k, now);
        break;
    case BREAKER_HOLD_OPEN:
        answer->wait = RETRY_FLOW_BREAKER;
        answer->wait_ms = wait;
        return 1;
    case BREAKER_HOLD_PROBE:
        answer->wait = RETRY_FLOW_PROBE;
        return 1;
    }
    if (!k->limited)
        return 1;
    return acquire(f, p, answer);
}

/* What a router answer tells the breaker. */
static breaker_result_t breaker_result(const router_outcome_t *o)
{
    if (o->verdict == ROUTER_TIMEOUT)
        return BREAKER_FAILURE;
    if (o->verdict != ROUTER_TRANSIENT)
        return BREAKER_SUCCESS;
    if (o->failure == ROUTER_FAILURE_NETWORK || o->http_status >= 500 || o->http_status == 408)
        return BREAKER_FAILURE;
    return BREAKER_IGNORE; /* 429, or this process out of memory */
}

flow_answer_t flow_done(flow_t *f, flow_pass_t *p, const router_outcome_t *out)
{
    flow_answer_t a = {.wait = RETRY_FLOW_GO, .wait_ms = 0};
    flow_key_t *k = p->key;
    release_permit(f, p);
    if (k == NULL || f->closed)
        return a;
    int64_t now = clock_mono_ms();
    bool probe = p->probe;
    p->probe = false;
    breaker_t *b = &k->breaker;
    switch (breaker_record(b, &f->breaker, now, probe, breaker_result(out))) {
    case BREAKER_OPENED:
    case BREAKER_REOPENED: {
        char reason[160], backoff[32], failures[16], calls[16];
        snprintf(failures, sizeof failures, "%u", b->opened_failures);
        snprintf(calls, sizeof calls, "%u", b->opened_calls);
        seconds_text(b->backoff_ms, backoff, sizeof backoff);
        if (probe)
            snprintf(reason, sizeof reason, "the probe call failed: %s", out->error_code ? out->error_code : "");
        else
            snprintf(reason, sizeof reason, "%u of %u calls failed", b->opened_failures, b->opened_calls);
        log_key(LOG_LEVEL_WARN, "flow.breaker.open", k, "failures", failures, "calls", calls,
                "backoff_seconds", backoff, reason);
        pause_key(f, k, FLOW_CAUSE_BREAKER, b->backoff_ms, reason);
        publish_breaker(f, k, now);
        break;
    }
    case BREAKER_CLOSED_NOW:
        log_key(LOG_LEVEL_INFO, "flow.breaker.closed", k, NULL, NULL, NULL, NULL, NULL, NULL,
                "the probe call succeeded: calls go again");
        publish_breaker(f, k, now);
        break;
    case BREAKER_SAME:
        break;
    }
    if (out->pause_cause != NULL && out->pause_ms >= 0) {
        flow_cause_t cause = strcmp(out->pause_cause, "ratelimit") == 0 ? FLOW_CAUSE_RATELIMIT
                                                                         : FLOW_CAUSE_RETRY_AFTER;
        int64_t ms = out->pause_ms < FLOW_PAUSE_MIN_MS ? FLOW_PAUSE_MIN_MS : out->pause_ms;
        char reason[64];
        snprintf(reason, sizeof reason, "HTTP %ld from the router", out->http_status);
        pause_key(f, k, cause, ms, reason);
        a.wait = RETRY_FLOW_PAUSE;
        a.wait_ms = k->paused_until > now ? k->paused_until - now : ms;
    }
    return a;
}

/* Keeps the due time of a job parked for the key (retry_flow_waiting). */
static void note_due(flow_key_t *k, int64_t due)
{
    if (k->due_count == k->due_cap) {
        if (k->due_cap >= FLOW_WAITING_MAX)
            return;
        size_t cap = k->due_cap > 0 ? k->due_cap * 2 : 16;
        int64_t *grown = realloc(k->due, cap * sizeof *grown);
        if (grown == NULL)
            return;
        k->due = grown;
        k->due_cap = cap;
    }
    k->due[k->due_count++] = due;
}

void flow_end(flow_t *f, flow_pass_t *p, int64_t parked_ms)
{
    if (p == NULL)
        return;
    if (p->req != NULL) {
        p->req->pass = NULL; /* its reply is dropped (and a permit it grants released) */
        p->req = NULL;
    }
    release_permit(f, p);
    flow_key_t *k = p->key;
    if (k != NULL) {
        if (p->probe)
            breaker_probe_dropped(&k->breaker);
        if (parked_ms >= 0)
            note_due(k, clock_mono_ms() + parked_ms);
        k->refs--;
    }
    free(p);
}

const char *flow_pass_key(const flow_pass_t *p)
{
    return p != NULL && p->key != NULL ? p->key->text : "";
}

/* ------------------------------------------------------------------ periodic */

void flow_heartbeat(flow_t *f)
{
    if (f->queue == NULL || f->held == NULL)
        return;
    size_t cap = FLOW_RENEW_BATCH;
    char (*names)[REDIS_KEY_MAX] = malloc(cap * sizeof *names);
    char (*members)[300] = malloc(cap * sizeof *members);
    const char **keys = malloc(cap * sizeof *keys);
    const char **args = malloc((cap + 1) * sizeof *args);
    char lease[16];
    snprintf(lease, sizeof lease, "%d", f->lease_ms);
    if (names != NULL && members != NULL && keys != NULL && args != NULL) {
        flow_pass_t *p = f->held;
        while (p != NULL) {
            size_t n = 0;
            args[0] = lease;
            for (; p != NULL && n < cap; p = p->next, n++) {
                redis_key(f, "permits", p->key, names[n], sizeof names[n]);
                member_of(f, p->permit, members[n], sizeof members[n]);
                keys[n] = names[n];
                args[n + 1] = members[n];
            }
            queue_script(f->queue, LUA_RENEW, (int)n, keys, (int)n + 1, args, ignore_reply, NULL);
        }
    } else {
        log_warn("flow.renew", "out of memory renewing the permits' leases");
    }
    free(names);
    free(members);
    free(keys);
    free(args);
}

static void on_fetched(void *arg, const redisReply *r)
{
    fetch_reply_t *fr = arg;
    flow_t *f = fr->f;
    if (!f->closed && r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == fr->count) {
        int64_t now = clock_mono_ms();
        for (size_t i = 0; i < fr->count; i++) {
            flow_key_t *k = key_find(f, fr->keys[i], true);
            if (k == NULL || r->element[i]->type != REDIS_REPLY_STRING || fr->until[i] <= now)
                continue; /* over or resumed meanwhile */
            cJSON *doc = cJSON_Parse(r->element[i]->str);
            const cJSON *cause = cJSON_GetObjectItemCaseSensitive(doc, "cause");
            const cJSON *by = cJSON_GetObjectItemCaseSensitive(doc, "by");
            pause_local(k, cause_of(cJSON_IsString(cause) ? cause->valuestring : NULL), fr->until[i],
                        true, cJSON_IsString(by) ? by->valuestring : NULL, now);
            cJSON_Delete(doc);
        }
    }
    free(fr);
}

/* The pauses of every worker and operator, as read by the refresh. */
static void on_refreshed(void *arg, const redisReply *r)
{
    flow_t *f = arg;
    f->refreshing = false;
    if (f->closed || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    int64_t redis_now = (int64_t)r->element[0]->integer, now = clock_mono_ms();
    const redisReply *list = r->element[1];
    fetch_reply_t *fr = calloc(1, sizeof *fr);
    for (flow_key_t *k = f->first; k != NULL; k = k->next)
        k->seen = false;
    for (size_t i = 0; i + 1 < list->elements; i += 2) {
        const redisReply *name = list->element[i], *score = list->element[i + 1];
        if (name->type != REDIS_REPLY_STRING || score->type != REDIS_REPLY_STRING)
            continue;
        flow_key_t *k = key_find(f, name->str, true);
        if (k == NULL)
            continue;
        k->seen = true;
        int64_t until = now + ((int64_t)strtoll(score->str, NULL, 10) - redis_now);
        if (k->paused_until > now && k->paused_until + 100 >= until) {
            k->pause_in_redis = true;
            continue;
        }
        if (fr != NULL && fr->count < FLOW_FETCH_MAX) {
            fr->until[fr->count] = until;
            rq_copy(fr->keys[fr->count++], sizeof fr->keys[0], k->text);
        }
    }
    /* A pause this worker saw in Redis that is gone from it before its end: resumed. */
    if (list->elements / 2 < FLOW_PAUSED_READ)
        for (flow_key_t *k = f->first; k != NULL; k = k->next)
            if (k->pause_in_redis && !k->seen && k->paused_until > now + FLOW_RESUME_SLACK_MS)
                end_pause(f, k, "ended in Redis (an operator's resume)");
    if (fr == NULL || fr->count == 0 || f->queue == NULL) {
        free(fr);
        return;
    }
    fr->f = f;
    const char **argv = malloc((fr->count + 1) * sizeof *argv);
    char (*names)[REDIS_KEY_MAX] = malloc(fr->count * sizeof *names);
    if (argv == NULL || names == NULL) {
        free(argv);
        free(names);
        free(fr);
        return;
    }
    argv[0] = "MGET";
    for (size_t i = 0; i < fr->count; i++) {
        snprintf(names[i], sizeof names[i], "{%s}:flow:pause:%s", f->queue_name, fr->keys[i]);
        argv[i + 1] = names[i];
    }
    queue_command(f->queue, (int)fr->count + 1, argv, on_fetched, fr);
    free(argv);
    free(names);
}

void flow_refresh(flow_t *f, int64_t now_ms)
{
    for (flow_key_t *k = f->first; k != NULL; k = k->next) {
        if (k->paused_until != 0 && now_ms >= k->paused_until)
            end_pause(f, k, "over");
        size_t kept = 0;
        for (size_t i = 0; i < k->due_count; i++)
            if (k->due[i] > now_ms)
                k->due[kept++] = k->due[i];
        k->due_count = kept;
    }
    if (f->queue == NULL || f->refreshing)
        return;
    const char *args[2 + FLOW_NOTE_KEYS];
    char keep[24], read[16];
    snprintf(keep, sizeof keep, "%lld", (long long)FLOW_KEYS_KEEP_MS);
    snprintf(read, sizeof read, "%d", FLOW_PAUSED_READ);
    args[0] = keep;
    args[1] = read;
    int n = 2;
    for (flow_key_t *k = f->first; k != NULL && n < 2 + FLOW_NOTE_KEYS; k = k->next) {
        if (k->used) {
            k->used = false;
            args[n++] = k->text;
        }
    }
    char paused[REDIS_KEY_MAX], index[REDIS_KEY_MAX];
    redis_key(f, "paused", NULL, paused, sizeof paused);
    redis_key(f, "keys", NULL, index, sizeof index);
    const char *keys[] = {paused, index};
    f->refreshing = true;
    queue_script(f->queue, LUA_REFRESH, 2, keys, n, args, on_refreshed, f);
}

/* ------------------------------------------------------------------ figures */

static size_t waiting_of(const flow_key_t *k, int64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < k->due_count; i++)
        n += k->due[i] > now;
    return n;
}

static bool key_shows(const flow_key_t *k)
{
    if (k->limited || k->paused_until != 0 || k->permits > 0 || k->due_count > 0 ||
        k->breaker.state != BREAKER_CLOSED)
        return true;
    for (int c = 0; c < FLOW_CAUSES; c++)
        if (k->pauses[c] > 0)
            return true;
    return false;
}

size_t flow_each_key(flow_t *f, size_t max, void (*fn)(void *arg, const flow_figures_t *k), void *arg)
{
    int64_t now = clock_mono_ms();
    size_t done = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (const flow_key_t *k = f->first; k != NULL && done < max; k = k->next) {
            if (key_shows(k) != (pass == 0))
                continue;
            flow_figures_t fig = {.key = k->text,
                                  .paused = k->paused_until > now,
                                  .waiting = waiting_of(k, now),
                                  .permits = k->permits,
                                  .breaker = k->breaker.state};
            memcpy(fig.pauses, k->pauses, sizeof fig.pauses);
            fn(arg, &fig);
            done++;
        }
    }
    return f->nkeys;
}

/* ------------------------------------------------------------------ life cycle */

flow_t *flow_new(const flow_config_t *cfg, char *err, size_t errcap)
{
    flow_t *f = calloc(1, sizeof *f);
    if (f == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    if (cfg->rules != NULL)
        f->rules = *cfg->rules;
    f->breaker = cfg->breaker != NULL ? *cfg->breaker : breaker_config_default();
    f->queue = cfg->queue;
    rq_copy(f->queue_name, sizeof f->queue_name, cfg->keys->pending);
    rq_copy(f->worker_id, sizeof f->worker_id, cfg->worker_id);
    f->lease_ms = cfg->lease_ms;
    return f;
}

void flow_close(flow_t *f)
{
    if (f == NULL)
        return;
    f->closed = true;
    f->queue = NULL;
}

void flow_free(flow_t *f)
{
    if (f == NULL)
        return;
    while (f->first != NULL) {
        flow_key_t *k = f->first;
        key_unlink(f, k);
    }
    free(f);
}
