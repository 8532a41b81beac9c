/*
 * The worker's settings (see config.h). One table drives everything: defaults, the
 * environment, the getopt_long options, validation, --help and the redacted dump. A
 * value is parsed by its type's parser whether it came from the default, the
 * environment or a flag, so a default can never be something a user could not type.
 * Each setting belongs to a group, its heading in --help; the "advanced" group holds the
 * tunables that rarely need changing (batch sizes, page sizes, internal deadlines) and
 * comes last, under a note that says so.
 *
 * Precedence: a flag beats its environment variable, which beats the default. argv is
 * read first (so --help works whatever the environment holds, and an environment value
 * that a flag overrides is never even parsed), then each setting is applied once from
 * its winning source. Every error is one line that starts with the name the user set
 * (the flag or the environment variable) and states the rule.
 *
 * Connection strings are parsed, checked and redacted by their own module (connstr.h,
 * connstr_router.h): the Redis URL is parsed once, into cfg->redis; the database and
 * router URLs are checked by libpq's and libcurl's parsers. They are redacted whenever
 * they are printed, also inside error messages; --help shows defaults only, never the
 * environment's values. A password file's first line is never put into its URL's text:
 * it goes into cfg->redis, or is kept in cfg->database_password for libpq's own password
 * keyword; a file readable by group or others draws a warning.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "config.h"
#include "connstr.h"
#include "connstr_router.h"
#include "flowrules.h"
#include "internal.h"
#include "log.h"

#define SECRET_MAX 1024             /* bytes of a password read from a file */
#define WORKER_ID_MAX 200           /* bytes: the id is part of a Redis key and of every log line */
#define BACKOFF_ITEM_MAX 86400000LL /* one day */

typedef enum setting_type {
    T_STRING,       /* free text (checked further by check()) */
    T_REDIS_URL,    /* connection strings that may hold a password: text, checked by */
    T_DATABASE_URL, /*   their own parser (connstr), redacted when shown */
    T_ROUTER_URL,
    T_INT,         /* integer in min..max */
    T_MS,          /* duration in ms, min..max; "500", "500ms", "5s", "2m", "1h" */
    T_BYTES,       /* size in bytes, min..max; "4194304", "512KiB", "4MiB" */
    T_DURATIONS,   /* 1..CONFIG_MAX_BACKOFF durations separated by commas */
    T_BOOL,        /* true/false, yes/no, on/off, 1/0 */
    T_ENUM,        /* one of `choices` (case-insensitive) */
    T_SECRET_FILE, /* path of a file whose first line is a password; no config_t field */
    T_SECRET,      /* a password given as text: never shown (*** when set) */
} setting_type_t;

typedef enum group {
    G_CONNECT,
    G_JOBS,
    G_ROUTER,
    G_TIMING,
    G_OPS,
    G_FLOW,
    G_ADVANCED, /* tunables that rarely need changing: shown last, under their own note */
    G_COUNT,
} group_t;

static const char *const group_titles[G_COUNT] = {
    "Connections",
    "Queue and jobs",
    "Router requests",
    "Leases, recovery and shutdown",
    "Health endpoint and logging",
    "Flow control per model and region (docs/flow-control.md)",
    "Advanced",
};

/* One line under a group's title in --help, or NULL. */
static const char *const group_notes[G_COUNT] = {
    [G_ADVANCED] = "These rarely need changing: the defaults suit almost every deployment.",
};

typedef struct setting setting_t;

struct setting {
    const char *name; /* config_t field it fills */
    const char *flag; /* long option, without the leading -- */
    const char *env;  /* environment variable */
    setting_type_t type;
    const char *def;                     /* default as the user would type it; NULL = unset */
    long long min, max;                  /* T_INT, T_MS, T_BYTES */
    size_t offset;                       /* into config_t; unused for T_ENUM and T_SECRET_FILE */
    const char *const *choices;          /* T_ENUM, NULL-terminated */
    void (*set_choice)(config_t *, int); /* T_ENUM: stores the index of the choice */
    int (*get_choice)(const config_t *); /* T_ENUM: index of the current choice */
    const char *metavar;                 /* value placeholder in --help */
    group_t group;
    const char *help;
};

static const char *const level_choices[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_choices[] = {"logfmt", "json", NULL};
static const char *const mode_choices[] = {"runner", "seed", NULL};

static void set_level(config_t *cfg, int i)
{
    cfg->log_level = i;
}
static int get_level(const config_t *cfg)
{
    return cfg->log_level;
}
static void set_format(config_t *cfg, int i)
{
    cfg->log_json = i == 1;
}
static int get_format(const config_t *cfg)
{
    return cfg->log_json ? 1 : 0;
}
static void set_mode(config_t *cfg, int i)
{
    cfg->request_mode = i == 1 ? REQUEST_MODE_SEED : REQUEST_MODE_RUNNER;
}
static int get_mode(const config_t *cfg)
{
    return cfg->request_mode == REQUEST_MODE_SEED ? 1 : 0;
}

#define OFF(field) offsetof(config_t, field)
#define NUM(type, def, min, max, field) type, def, min, max, OFF(field), NULL, NULL, NULL
#define TEXT(type, def, field) type, def, 0, 0, OFF(field), NULL, NULL, NULL
#define CHOICE(def, list, set, get) T_ENUM, def, 0, 0, 0, list, set, get
#define FILE_SETTING T_SECRET_FILE, NULL, 0, 0, 0, NULL, NULL, NULL

static const setting_t settings[] = {
    {"redis_url", "redis-url", "RETRYQ_REDIS_URL",
     TEXT(T_REDIS_URL, "redis://127.0.0.1:6379", redis_url), "URL", G_CONNECT,
      "Redis: redis://[[user]:password@]host[:port][/db], unix://[[user]:password@]/path[?db=N], "
     "redis+sentinel://[[user]:password@]host1:port1[,host2:port2...]/MASTER_NAME[/db] or "
     "redis+cluster://[[user]:password@]host1:port1[,host2:port2...] (seed nodes, no db)"},
    {"redis_password_file", "redis-password-file", "RETRYQ_REDIS_PASSWORD_FILE", FILE_SETTING,
     "PATH", G_CONNECT, "file whose first line is the Redis password (put into the Redis URL)"},
    {"redis_sentinel_password", "redis-sentinel-password", "RETRYQ_REDIS_SENTINEL_PASSWORD",
     TEXT(T_SECRET, NULL, redis_sentinel_password), "PASSWORD", G_CONNECT,
     "password of the sentinels (redis+sentinel:// only; the data nodes' stays in the URL)"},
    {"redis_sentinel_password_file", "redis-sentinel-password-file",
     "RETRYQ_REDIS_SENTINEL_PASSWORD_FILE", FILE_SETTING, "PATH", G_CONNECT,
     "file whose first line is the sentinels' password"},
    {"database_url", "database-url", "RETRYQ_DATABASE_URL", TEXT(T_DATABASE_URL, NULL, database_url),
     "URL", G_CONNECT,
     "PostgreSQL, required: postgresql://user[:password]@host[:port]/db or a key=value conninfo"},
    {"database_password_file", "database-password-file", "RETRYQ_DATABASE_PASSWORD_FILE",
     FILE_SETTING, "PATH", G_CONNECT,
     "file whose first line is the PostgreSQL password (put into the database URL)"},
    {"db_pool_size", "db-pool", "RETRYQ_DB_POOL", NUM(T_INT, "4", 1, 64, db_pool_size), "N",
     G_CONNECT, "PostgreSQL connections"},
    {"db_query_timeout_ms", "db-query-timeout-ms", "RETRYQ_DB_QUERY_TIMEOUT_MS",
     NUM(T_MS, "30s", 0, 3600000, db_query_timeout_ms), "DURATION", G_CONNECT,
     "PostgreSQL statement_timeout; a connection silent for this plus up to 5 s more is "
     "dropped (0: none)"},
    {"db_lock_timeout_ms", "db-lock-timeout-ms", "RETRYQ_DB_LOCK_TIMEOUT_MS",
     NUM(T_MS, "5s", 0, 3600000, db_lock_timeout_ms), "DURATION", G_CONNECT,
     "PostgreSQL lock_timeout: a write waiting this long for a locked row is retried later, "
     "so it does not hold up other jobs (0: none)"},
    {"db_tcp_timeout_ms", "db-tcp-timeout-ms", "RETRYQ_DB_TCP_TIMEOUT_MS",
     NUM(T_MS, "30s", 0, 3600000, db_tcp_timeout_ms), "DURATION", G_CONNECT,
     "TCP keepalives and tcp_user_timeout of the PostgreSQL connections: a vanished host is "
     "noticed within about this (0: libpq defaults; keywords in the URL win)"},
    {"router_url", "router-url", "RETRYQ_ROUTER_URL", TEXT(T_ROUTER_URL, NULL, router_url), "URL",
     G_CONNECT, "inference router base URL, required: http(s)://host[:port][/base]"},
    {"connect_timeout_ms", "connect-timeout-ms", "RETRYQ_CONNECT_TIMEOUT_MS",
     NUM(T_MS, "5000", 50, 600000, connect_timeout_ms), "DURATION", G_CONNECT,
     "connect timeout (router, Redis)"},
    {"hosts_file", "hosts-file", "RETRYQ_HOSTS_FILE", TEXT(T_STRING, NULL, hosts_file), "PATH",
     G_CONNECT,
     "extra hosts(5) file for the worker's own resolver, read after /etc/hosts (host names "
     "are resolved on the event loop, never by a blocking lookup)"},
    {"require_safe_redis", "require-safe-redis", "RETRYQ_REQUIRE_SAFE_REDIS",
     TEXT(T_BOOL, "false", require_safe_redis), "BOOL", G_CONNECT,
     "refuse to run on Redis without AOF or with an evicting maxmemory-policy"},

    {"queue", "queue", "RETRYQ_QUEUE", TEXT(T_STRING, RETRYQ_DEFAULT_QUEUE, queue), "NAME", G_JOBS,
     "queue name (the Redis list producers LPUSH to)"},
    {"worker_id", "worker-id", "RETRYQ_WORKER_ID", TEXT(T_STRING, NULL, worker_id), "ID", G_JOBS,
     "worker id, unique per process (default <hostname>:<pid>:<random>)"},
    {"concurrency", "concurrency", "RETRYQ_CONCURRENCY", NUM(T_INT, "64", 1, 100000, concurrency),
     "N", G_JOBS, "jobs in flight at once"},
    {"max_retries", "max-retries", "RETRYQ_MAX_RETRIES",
     NUM(T_INT, "3", 1, RETRYQ_MAX_ATTEMPT, max_retries), "N", G_JOBS,
     "ignored (kept so old settings still start): each execution's own max_retries column "
     "decides, as in the runner's API"},
    {"max_deliveries", "max-deliveries", "RETRYQ_MAX_DELIVERIES",
     NUM(T_INT, "5", 1, RETRYQ_MAX_ATTEMPT, max_deliveries), "N", G_JOBS,
     "deliveries after which a job is poison (dead list)"},
    {"backoff_ms", "backoff", "RETRYQ_BACKOFF", TEXT(T_DURATIONS, "5s,30s,2m", backoff_ms), "LIST",
     G_JOBS, "delays before the retries of a transient router failure (ms unless s, m or h)"},
    {"dead_max", "dead-max", "RETRYQ_DEAD_MAX", NUM(T_INT, "10000", 1, 100000000, dead_max), "N",
     G_JOBS, "entries kept in the dead list"},
    {"question_bank", "question-bank", "RETRYQ_QUESTION_BANK", TEXT(T_STRING, NULL, question_bank),
     "PATH", G_JOBS, "JSON file of question id -> text, merged over the runner's built-in ids"},

    {"request_mode", "request-mode", "RETRYQ_REQUEST_MODE",
     CHOICE("runner", mode_choices, set_mode, get_mode), "runner|seed", G_ROUTER,
     "runner: the runner's regional wrapper, t=0.1, 500 tokens; seed: bare prompt, t=0.7, 2000 "
     "tokens"},
    {"timeout_ms", "timeout-ms", "RETRYQ_TIMEOUT_MS", NUM(T_MS, "60000", 100, 3600000, timeout_ms),
     "DURATION", G_ROUTER, "router call total timeout"},
    {"max_response_bytes", "max-response-bytes", "RETRYQ_MAX_RESPONSE_BYTES",
     NUM(T_BYTES, "4MiB", 1024, 1073741824LL, max_response_bytes), "SIZE", G_ROUTER,
     "largest router answer accepted"},

    {"heartbeat_ms", "heartbeat-ms", "RETRYQ_HEARTBEAT_MS",
     NUM(T_MS, "5000", 50, 600000, heartbeat_ms), "DURATION", G_TIMING, "heartbeat interval"},
    {"lease_ms", "lease-ms", "RETRYQ_LEASE_MS", NUM(T_MS, "30000", 200, 3600000, lease_ms),
     "DURATION", G_TIMING,
     "silence after which a worker's jobs are recovered (more than 2 x heartbeat)"},
    {"orphan_age_ms", "orphan-age-ms", "RETRYQ_ORPHAN_AGE_MS",
     NUM(T_MS, "300000", 100, 7 * 86400000LL, orphan_age_ms), "DURATION", G_TIMING,
     "age of a 'retrying' row with no job before it is enqueued again"},
    {"orphan_interval_ms", "orphan-interval-ms", "RETRYQ_ORPHAN_INTERVAL_MS",
     NUM(T_MS, "60000", 100, 86400000, orphan_interval_ms), "DURATION", G_TIMING,
     "how often the orphan sweep runs"},
    {"drain_timeout_ms", "drain-timeout-ms", "RETRYQ_DRAIN_TIMEOUT_MS",
     NUM(T_MS, "65000", 1, 3600000, drain_timeout_ms), "DURATION", G_TIMING,
     "how long a stop waits for jobs in flight"},
    {"exit_when_idle", "exit-when-idle", "RETRYQ_EXIT_WHEN_IDLE",
     TEXT(T_BOOL, "false", exit_when_idle), "BOOL", G_TIMING,
     "exit once the queue and the jobs in flight are empty"},

    {"http_addr", "http-addr", "RETRYQ_HTTP_ADDR", TEXT(T_STRING, "127.0.0.1:9464", http_addr),
     "HOST:PORT", G_OPS, "address of /healthz, /readyz and /metrics (\"off\" or empty disables)"},
    {"log_level", "log-level", "RETRYQ_LOG_LEVEL",
     CHOICE("info", level_choices, set_level, get_level), "debug|info|warn|error", G_OPS,
     "lowest level logged"},
    {"log_format", "log-format", "RETRYQ_LOG_FORMAT",
     CHOICE("logfmt", format_choices, set_format, get_format), "logfmt|json", G_OPS,
     "log line format"},

    {"db_write_deadline_ms", "db-write-deadline-ms", "RETRYQ_DB_WRITE_DEADLINE_MS",
     NUM(T_MS, "5m", 1000, 86400000, db_write_deadline_ms), "DURATION", G_ADVANCED,
     "how long a router answer is kept while PostgreSQL cannot record it; then the job is "
     "handed back to the queue as it is (and the router is called again)"},
    {"db_batch_size", "db-batch-size", "RETRYQ_DB_BATCH_SIZE",
     NUM(T_INT, "64", 1, 1000, db_batch_size), "N", G_ADVANCED,
     "most jobs in one batched load or outcome statement"},
    {"db_pipeline_depth", "db-pipeline-depth", "RETRYQ_DB_PIPELINE_DEPTH",
     NUM(T_INT, "8", 1, 100, db_pipeline_depth), "N", G_ADVANCED,
     "statements in flight on one PostgreSQL connection (pipeline mode, PostgreSQL 14 or "
     "later) once every connection of the pool is busy"},
    {"redis_command_timeout_ms", "redis-command-timeout-ms", "RETRYQ_REDIS_COMMAND_TIMEOUT_MS",
     NUM(T_MS, "5s", 500, 600000, redis_command_timeout_ms), "DURATION", G_ADVANCED,
     "a Redis connection whose oldest reply is overdue by this much is dropped and reconnected "
     "(checked every 500 ms; a blocking pop has its own wait on top)"},
    {"self_check_page", "self-check-page", "RETRYQ_SELF_CHECK_PAGE",
     NUM(T_INT, "100", 10, 100000, self_check_page), "N", G_ADVANCED,
     "entries of the worker's own processing list compared with its jobs in flight at each "
     "heartbeat (a job left there by a lost write is taken again)"},
    {"stop_flush_ms", "stop-flush-ms", "RETRYQ_STOP_FLUSH_MS",
     NUM(T_MS, "5s", 100, 600000, stop_flush_ms), "DURATION", G_ADVANCED,
     "at a stop, after the drain: how long to wait for Redis to confirm the hand-back of the "
     "processing list; then the worker exits and lease recovery finds what is left"},
    {"sweep_page", "sweep-page", "RETRYQ_SWEEP_PAGE", NUM(T_INT, "1000", 10, 100000, sweep_page),
     "N", G_ADVANCED,
     "entries the orphan sweep reads from Redis in one call (so one call cannot hold Redis "
     "long)"},
    {"sweep_max_rows", "sweep-max-rows", "RETRYQ_SWEEP_MAX_ROWS",
     NUM(T_INT, "5000", 500, 100000, sweep_max_rows), "N", G_ADVANCED,
     "candidate rows one orphan sweep reads (in queries of 500, so rounded up to a multiple "
     "of 500); the next sweep continues after them"},
    {"flow", "flow", "RETRYQ_FLOW", TEXT(T_STRING, NULL, flow), "RULES", G_FLOW,
     "limits per MODEL/REGION key, shared by every worker: KEY=LIMIT[,LIMIT...][;KEY=...] with "
     "concurrency:N, rate:R/s (or /m, /h), burst:B; KEY parts may be * (e.g. "
     "\"*/eu-west=concurrency:8;llama3.2-1b/*=rate:5/s,burst:10\"; empty: no limits)"},
    {"breaker", "breaker", "RETRYQ_BREAKER",
     TEXT(T_STRING, "ratio:0.5,min:20,window:60s,backoff:5s..5m", breaker), "SETTINGS", G_FLOW,
     "circuit breaker per key: open (pause the key) when at least ratio of at least min calls in "
     "the window failed transiently, for a back-off doubling from MIN to MAX; \"off\" disables"},
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

/* Where the value of each setting came from, to name it as the user set it. */
typedef enum source { SRC_DEFAULT = 0, SRC_ENV, SRC_FLAG } source_t;

typedef struct load_state {
    const char *value[N_SETTINGS]; /* winning text per setting (flag, env or default) */
    source_t source[N_SETTINGS];
    char who[N_SETTINGS][48]; /* "--concurrency" or "RETRYQ_CONCURRENCY" */
} load_state_t;

static const setting_t *find_setting(const char *name, size_t *index)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (strcmp(settings[i].name, name) == 0) {
            if (index != NULL)
                *index = i;
            return &settings[i];
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- value parsers */

/* Optional '-' then decimal digits only: no spaces, no '+', no hex. */
static bool parse_ll(const char *text, long long *out)
{
    const char *p = text;
    if (*p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* Digits then an optional unit; the unit is matched case-insensitively against the
 * table. Integers only: "1.5s" is refused rather than rounded. */
typedef struct unit {
    const char *suffix;
    long long scale;
} unit_t;

static bool parse_scaled(const char *text, const unit_t *units, long long *out)
{
    const char *p = text;
    long long v = 0;
    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++) {
        if (v > (LLONG_MAX - 9) / 10)
            return false;
        v = v * 10 + (*p - '0');
    }
    for (const unit_t *u = units; u->suffix != NULL; u++) {
        if (strcasecmp(p, u->suffix) == 0) {
            if (v > LLONG_MAX / u->scale)
                return false;
            *out = v * u->scale;
            return true;
        }
    }
    return false;
}

static const unit_t duration_units[] = {
    {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {NULL, 0},
};

/* Binary suffixes (K, KiB, M, MiB, G, GiB) are powers of 1024; KB, MB, GB are the SI
 * powers of 1000. */
static const unit_t byte_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1024},
    {"kib", 1024},
    {"kb", 1000},
    {"m", 1024 * 1024},
    {"mib", 1024 * 1024},
    {"mb", 1000 * 1000},
    {"g", 1024LL * 1024 * 1024},
    {"gib", 1024LL * 1024 * 1024},
    {"gb", 1000LL * 1000 * 1000},
    {NULL, 0},
};

static bool parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* "5s,30s,2m" or "5000, 30000": spaces around items are ignored. */
static int parse_durations(const char *text, int *values, int cap)
{
    int count = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        char item[32];
        long long v;
        if (n == 0 || n >= sizeof item || count == cap)
            return -1;
        memcpy(item, p, n);
        item[n] = '\0';
        if (!parse_scaled(item, duration_units, &v) || v < 1 || v > BACKOFF_ITEM_MAX)
            return -1;
        values[count++] = (int)v;
        p += strcspn(p, ",");
        if (*p == '\0')
            return count;
        p++;
    }
}

/* ---------------------------------------------------------------- connection strings */

static bool is_text(setting_type_t type)
{
    return type == T_STRING || type == T_REDIS_URL || type == T_DATABASE_URL ||
           type == T_ROUTER_URL || type == T_SECRET;
}

/* "<who>: <rule> (got "<text>")" with the text redacted by `redact`. */
static int refuse_url(const char *who, const char *rule, const char *text,
                      void (*redact)(const char *, char *, size_t), char *err, size_t errcap)
{
    char shown[512];
    redact(text, shown, sizeof shown);
    snprintf(err, errcap, "%s: %s (got \"%s\")", who, rule, shown);
    return -1;
}

static void redact_text(const char *text, char *buf, size_t cap)
{
    (void)connstr_redact_text(text, buf, cap);
}

/* The library's Redis messages never repeat the URL; their "redis URL: " lead goes. */
static const char *redis_rule(const retryq_error_t *rerr)
{
    const char *why = rerr->message;
    return strncmp(why, "redis URL: ", 11) == 0 ? why + 11 : why;
}

static int check_database_url(const char *url, const char *who, char *err, size_t errcap)
{
    const char *rule = connstr_pg_check(url);
    return rule == NULL ? 0 : refuse_url(who, rule, url, connstr_pg_redact, err, errcap);
}

static int check_router_url(const char *url, const char *who, char *err, size_t errcap)
{
    char rule[256];
    if (connstr_router_check(url, 0, rule, sizeof rule) == CONNSTR_ROUTER_OK)
        return 0;
    return refuse_url(who, rule, url, connstr_router_redact, err, errcap);
}

/* "off", "" or host:port / [v6]:port with port 0..65535. */
static int check_http_addr(const char *addr, const char *who, char *err, size_t errcap)
{
    if (addr[0] == '\0' || strcasecmp(addr, "off") == 0)
        return 0;
    const char *colon = strrchr(addr, ':');
    long long port = -1;
    bool ok = colon != NULL && colon != addr && colon - addr < 256 && parse_ll(colon + 1, &port) &&
              colon[1] != '-' && port <= 65535;
    if (ok && addr[0] == '[')
        ok = colon[-1] == ']' && colon - addr > 2;
    if (!ok) {
        snprintf(err, errcap,
                 "%s: must be host:port (port 0..65535), [v6]:port or \"off\" (got \"%s\")", who,
                 addr);
        return -1;
    }
    return 0;
}

static int check_worker_id(const char *id, const char *who, char *err, size_t errcap)
{
    if (id == NULL || id[0] == '\0')
        return 0; /* the worker builds one */
    size_t n = strlen(id);
    bool ok = n <= WORKER_ID_MAX;
    for (const char *p = id; ok && *p != '\0'; p++)
        ok = (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f;
    if (!ok) {
        snprintf(err, errcap,
                 "%s: must be 1 to %d printable ASCII characters without spaces (got \"%.*s\")",
                 who, WORKER_ID_MAX, 64, id);
        return -1;
    }
    return 0;
}

/* RETRYQ_FLOW and RETRYQ_BREAKER, through the parsers flow control uses (flowrules.h). */
static int check_flow(const config_t *cfg, const load_state_t *st, char *err, size_t errcap)
{
    size_t i = 0;
    char why[400];
    flow_rules_t *rules = malloc(sizeof *rules);
    breaker_config_t breaker;
    if (rules == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    int rc = flow_rules_parse(cfg->flow, rules, why, sizeof why);
    free(rules);
    find_setting("flow", &i);
    if (rc == 0) {
        rc = breaker_config_parse(cfg->breaker, &breaker, why, sizeof why);
        find_setting("breaker", &i);
    }
    if (rc < 0)
        snprintf(err, errcap, "%s: %s", st->who[i], why);
    return rc;
}

/* ---------------------------------------------------------------- applying a value */

static int apply_text(config_t *cfg, const setting_t *s, const char *who, const char *text,
                      char *err, size_t errcap)
{
    char **slot = (char **)((char *)cfg + s->offset);
    char *copy = strdup(text);
    if (copy == NULL) {
        snprintf(err, errcap, "%s: out of memory", who);
        return -1;
    }
    free(*slot);
    *slot = copy;
    return 0;
}

/* T_INT, T_MS and T_BYTES: a number in s->min..s->max, in the type's own syntax. */
static int apply_number(config_t *cfg, const setting_t *s, const char *who, const char *text,
                        char *err, size_t errcap)
{
    static const struct {
        const char *noun, *after; /* "must be <noun> between <min> and <max><after>" */
    } rules[] = {
        [T_INT] = {"an integer", ""},
        [T_MS] = {"a duration", " ms, e.g. 500, 500ms, 5s, 2m"},
        [T_BYTES] = {"a size", " bytes, e.g. 4194304, 512KiB, 4MiB"},
    };
    long long v = 0;
    bool ok = s->type == T_INT  ? parse_ll(text, &v)
              : s->type == T_MS ? parse_scaled(text, duration_units, &v)
                                : parse_scaled(text, byte_units, &v);
    if (!ok || v < s->min || v > s->max) {
        snprintf(err, errcap, "%s: must be %s between %lld and %lld%s (got \"%s\")", who,
                 rules[s->type].noun, s->min, s->max, rules[s->type].after, text);
        return -1;
    }
    char *slot = (char *)cfg + s->offset;
    if (s->type == T_BYTES)
        *(int64_t *)slot = v;
    else
        *(int *)slot = (int)v;
    return 0;
}

static int apply_durations(config_t *cfg, const char *who, const char *text, char *err,
                           size_t errcap)
{
    int values[CONFIG_MAX_BACKOFF];
    int count = parse_durations(text, values, CONFIG_MAX_BACKOFF);
    if (count <= 0) {
        snprintf(err, errcap,
                 "%s: must be 1 to %d durations of 1 ms to 24 h separated by commas, e.g. "
                 "5s,30s,2m or 5000,30000 (got \"%s\")",
                 who, CONFIG_MAX_BACKOFF, text);
        return -1;
    }
    memcpy(cfg->backoff_ms, values, sizeof values[0] * (size_t)count);
    cfg->backoff_count = count;
    return 0;
}

static int apply_choice(config_t *cfg, const setting_t *s, const char *who, const char *text,
                        char *err, size_t errcap)
{
    for (int i = 0; s->choices[i] != NULL; i++) {
        if (strcasecmp(text, s->choices[i]) == 0) {
            s->set_choice(cfg, i);
            return 0;
        }
    }
    char list[128] = "";
    for (int i = 0; s->choices[i] != NULL; i++) {
        size_t o = strlen(list);
        snprintf(list + o, sizeof list - o, "%s%s",
                 i == 0              ? ""
                 : s->choices[i + 1] ? ", "
                                     : " or ",
                 s->choices[i]);
    }
    snprintf(err, errcap, "%s: must be %s (got \"%s\")", who, list, text);
    return -1;
}

/* Parses `text` for setting s into cfg; on failure writes "<who>: <rule> (got "<text>")". */
static int apply(config_t *cfg, const setting_t *s, const char *who, const char *text, char *err,
                 size_t errcap)
{
    switch (s->type) {
    case T_STRING:
    case T_REDIS_URL:
    case T_DATABASE_URL:
    case T_ROUTER_URL:
    case T_SECRET:
        return apply_text(cfg, s, who, text, err, errcap);
    case T_INT:
    case T_MS:
    case T_BYTES:
        return apply_number(cfg, s, who, text, err, errcap);
    case T_DURATIONS:
        return apply_durations(cfg, who, text, err, errcap);
    case T_BOOL: {
        bool b;
        if (!parse_bool(text, &b)) {
            snprintf(err, errcap, "%s: must be true or false (got \"%s\")", who, text);
            return -1;
        }
        *(bool *)((char *)cfg + s->offset) = b;
        return 0;
    }
    case T_ENUM:
        return apply_choice(cfg, s, who, text, err, errcap);
    case T_SECRET_FILE:
        return 0; /* read once the URL it belongs to is known (load_redis, load_database_password) */
    }
    return 0;
}

/* ---------------------------------------------------------------- passwords */

/* Reads the first line of path into secret (trailing "\n" or "\r\n" removed). */
static int read_secret(const char *who, const char *path, FILE *warn, char *secret, size_t cap,
                       char *err, size_t errcap)
{
    int rc = -1;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errcap, "%s: cannot read \"%s\": %s", who, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        snprintf(err, errcap, "%s: cannot stat \"%s\": %s", who, path, strerror(errno));
        goto cleanup;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, errcap, "%s: \"%s\" is a directory", who, path);
        goto cleanup;
    }
    if ((st.st_mode & (S_IRGRP | S_IROTH)) != 0 && warn != NULL)
        fprintf(warn,
                "retryq-worker: warning: %s: \"%s\" is readable by group or others "
                "(mode %03o); chmod 600 it\n",
                who, path, (unsigned)(st.st_mode & 0777));
    size_t n = 0;
    int c;
    while ((c = fgetc(f)) != EOF && c != '\n') {
        if (c == '\0') {
            snprintf(err, errcap, "%s: \"%s\" holds a NUL byte", who, path);
            goto cleanup;
        }
        if (n + 1 >= cap) {
            snprintf(err, errcap, "%s: the first line of \"%s\" is longer than %zu bytes", who,
                     path, cap - 1);
            goto cleanup;
        }
        secret[n++] = (char)c;
    }
    if (ferror(f)) {
        snprintf(err, errcap, "%s: cannot read \"%s\"", who, path);
        goto cleanup;
    }
    if (n > 0 && secret[n - 1] == '\r')
        n--;
    secret[n] = '\0';
    if (n == 0) {
        snprintf(err, errcap, "%s: the first line of \"%s\" is empty", who, path);
        goto cleanup;
    }
    rc = 0;
cleanup:
    fclose(f);
    return rc;
}

static void wipe_secret(char *secret)
{
    if (secret != NULL)
        memset(secret, 0, SECRET_MAX + 1);
    free(secret);
}

/* The password file of setting `fi` for the URL of setting `ui`: refused when the URL
 * holds a password of its own, else its first line in a new buffer of SECRET_MAX + 1
 * bytes (free it with wipe_secret). NULL with err filled. */
static char *take_password_file(const load_state_t *st, size_t fi, size_t ui, bool url_has_one,
                                FILE *warn, char *err, size_t errcap)
{
    if (url_has_one) {
        snprintf(err, errcap, "%s: %s already holds a password; give it in one place only",
                 st->who[fi], st->who[ui]);
        return NULL;
    }
    char *secret = malloc(SECRET_MAX + 1);
    if (secret == NULL) {
        snprintf(err, errcap, "%s: out of memory", st->who[fi]);
        return NULL;
    }
    if (read_secret(st->who[fi], st->value[fi], warn, secret, SECRET_MAX + 1, err, errcap) == 0)
        return secret;
    wipe_secret(secret);
    return NULL;
}

/* The sentinels' password, as text or from a file (not both), into cfg->redis once the URL
 * is parsed: only a redis+sentinel:// URL takes one. The text copy is wiped. */
static int load_sentinel_password(config_t *cfg, const load_state_t *st, FILE *warn, char *err,
                                  size_t errcap)
{
    size_t ti = 0, fi = 0, ui = 0;
    find_setting("redis_sentinel_password", &ti);
    find_setting("redis_sentinel_password_file", &fi);
    find_setting("redis_url", &ui);
    char *text = cfg->redis_sentinel_password, *secret = NULL;
    if (text == NULL && st->value[fi] == NULL)
        return 0;
    size_t who = text != NULL ? ti : fi;
    int rc = -1;
    retryq_error_t rerr;
    if (!cfg->redis.is_sentinel) {
        snprintf(err, errcap, "%s: only a redis+sentinel:// %s takes a sentinel password",
                 st->who[who], st->who[ui]);
    } else if (text != NULL && st->value[fi] != NULL) {
        snprintf(err, errcap, "%s: %s gives the sentinel password too; give it in one place only",
                 st->who[fi], st->who[ti]);
    } else if (text != NULL || (secret = take_password_file(st, fi, ui, false, warn, err,
                                                            errcap)) != NULL) {
        rc = connstr_redis_set_sentinel_password(&cfg->redis, text != NULL ? text : secret, &rerr);
        if (rc != RETRYQ_OK)
            snprintf(err, errcap, "%s: %s", st->who[who], rerr.message);
    }
    wipe_secret(secret);
    if (text != NULL)
        memset(text, 0, strlen(text));
    return rc == RETRYQ_OK ? 0 : -1;
}

/*
 * Parses the Redis URL once, into cfg->redis, with the password file's password when one
 * is given ("redis://user@host" is then complete). The URL's own mistakes are named after
 * the URL (also when a file is given), a password in two places or one too long after the
 * file.
 */
static int load_redis(config_t *cfg, const load_state_t *st, FILE *warn, char *err, size_t errcap)
{
    size_t ui = 0, fi = 0;
    find_setting("redis_url", &ui);
    find_setting("redis_password_file", &fi);
    bool file = st->value[fi] != NULL;
    retryq_error_t rerr;
    int rc = connstr_redis_parse(cfg->redis_url, file ? CONNSTR_REDIS_PASSWORD_ELSEWHERE : 0,
                                 &cfg->redis, &rerr);
    if (rc < 0)
        return refuse_url(st->who[ui], redis_rule(&rerr), cfg->redis_url, redact_text, err, errcap);
    if (load_sentinel_password(cfg, st, warn, err, errcap) < 0)
        return -1;
    if (!file)
        return 0;
    char *secret = take_password_file(st, fi, ui, rc == CONNSTR_REDIS_HOLDS_PASSWORD, warn, err,
                                      errcap);
    if (secret == NULL)
        return -1;
    rc = connstr_redis_set_password(&cfg->redis, secret, &rerr);
    wipe_secret(secret);
    if (rc == RETRYQ_OK)
        return 0;
    char shown[512];
    retryq_redis_url_t with_password = cfg->redis; /* shown as the URL with a password */
    rq_copy(with_password.password, sizeof with_password.password, "x");
    connstr_redis_format(&with_password, shown, sizeof shown);
    snprintf(err, errcap, "%s: %s (got \"%s\")", st->who[fi], redis_rule(&rerr), shown);
    return -1;
}

/* Reads the database password file, if any, into cfg->database_password (libpq gets it as
 * its own password keyword; the URL's text stays as given). The URL must not hold a
 * password of its own; whether it is valid is checked after (check()), named after it. */
static int load_database_password(config_t *cfg, const load_state_t *st, FILE *warn, char *err,
                                  size_t errcap)
{
    size_t ui = 0, fi = 0;
    find_setting("database_url", &ui);
    find_setting("database_password_file", &fi);
    const char *url = cfg->database_url;
    if (st->value[fi] == NULL)
        return 0;
    if (url == NULL || url[0] == '\0') {
        snprintf(err, errcap, "%s: given without %s, the URL it belongs to", st->who[fi],
                 st->who[ui]);
        return -1;
    }
    char why[8];
    connstr_pg_t *pg = connstr_pg_parse(url, why, sizeof why);
    /* libpq's reading; for a string it refuses, anything that may be a password */
    bool holds = pg != NULL ? connstr_pg_has_password(pg) : connstr_redact_text(url, why, sizeof why);
    connstr_pg_free(pg);
    char *secret = take_password_file(st, fi, ui, holds, warn, err, errcap);
    if (secret == NULL)
        return -1;
    cfg->database_password = strdup(secret);
    wipe_secret(secret);
    if (cfg->database_password == NULL) {
        snprintf(err, errcap, "%s: out of memory", st->who[fi]);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- --help */

static void print_help(FILE *out)
{
    fprintf(out,
            "Usage: retryq-worker [OPTIONS]\n\n"
            "Takes retry jobs from Redis, re-runs the inference through the router and records\n"
            "the outcome in PostgreSQL. Every option has an environment variable; a flag wins\n"
            "over the environment, the environment over the default. Durations are in ms unless\n"
            "suffixed s, m or h (\"500ms\", \"5s\", \"2m\"); sizes take K/KiB, M/MiB, G/GiB.\n");
    for (int g = 0; g < G_COUNT; g++) {
        fprintf(out, "\n%s:\n", group_titles[g]);
        if (group_notes[g] != NULL)
            fprintf(out, "  %s\n", group_notes[g]);
        for (size_t i = 0; i < N_SETTINGS; i++) {
            const setting_t *s = &settings[i];
            if ((int)s->group != g)
                continue;
            if (s->type == T_BOOL)
                fprintf(out, "  --%s[=%s]\n", s->flag, s->metavar);
            else
                fprintf(out, "  --%s %s\n", s->flag, s->metavar);
            fprintf(out, "        %s\n        [env %s", s->help, s->env);
            if (s->def != NULL)
                fprintf(out, "; default %s", s->def);
            fprintf(out, "]\n");
        }
    }
    fprintf(out, "\nOther:\n"
                 "  --print-config\n"
                 "        print the effective settings (passwords shown as ***) and exit\n"
                 "  -h, --help\n"
                 "        print this help and exit\n"
                 "  --version\n"
                 "        print the version and exit\n\n"
                 "Exit codes: 0 stopped normally; 78 configuration (a bad setting, a database the\n"
                 "worker cannot use, an unsafe Redis refused); 69 a resource unavailable at start\n"
                 "(the HTTP address); 70 internal failure.\n");
}

/* ---------------------------------------------------------------- loading */

/* A setting that must be given: -1 with "<who>: required: set <ENV> or --<flag>". */
static int required(const char *value, const load_state_t *st, size_t i, char *err, size_t errcap)
{
    if (value != NULL && value[0] != '\0')
        return 0;
    snprintf(err, errcap, "%s: required: set %s or --%s", st->who[i], settings[i].env, settings[i].flag);
    return -1;
}

/* Checks that involve more than one value, or a value's meaning beyond its syntax (the
 * Redis URL was parsed by load_redis already). */
static int check(const config_t *cfg, const load_state_t *st, char *err, size_t errcap)
{
    size_t i = 0, j = 0;
    retryq_error_t rerr;
    retryq_keys_t keys;

    find_setting("database_url", &i);
    if (required(cfg->database_url, st, i, err, errcap) < 0 ||
        check_database_url(cfg->database_url, st->who[i], err, errcap) < 0)
        return -1;
    find_setting("router_url", &i);
    if (required(cfg->router_url, st, i, err, errcap) < 0 ||
        check_router_url(cfg->router_url, st->who[i], err, errcap) < 0)
        return -1;
    find_setting("queue", &i);
    if (retryq_keys_init(&keys, cfg->queue, &rerr) != RETRYQ_OK) {
        const char *why = rerr.message;
        if (strncmp(why, "queue name: ", 12) == 0)
            why += 12;
        snprintf(err, errcap, "%s: %s (got \"%.*s\")", st->who[i], why, 64, cfg->queue);
        return -1;
    }
    find_setting("worker_id", &i);
    if (check_worker_id(cfg->worker_id, st->who[i], err, errcap) < 0)
        return -1;
    find_setting("http_addr", &i);
    if (check_http_addr(cfg->http_addr, st->who[i], err, errcap) < 0)
        return -1;
    if (check_flow(cfg, st, err, errcap) < 0)
        return -1;
    find_setting("lease_ms", &i);
    find_setting("heartbeat_ms", &j);
    if ((long long)cfg->lease_ms <= 2LL * cfg->heartbeat_ms) {
        snprintf(err, errcap, "%s: must be more than twice %s (2 x %d ms = %lld ms) (got \"%s\")",
                 st->who[i], st->who[j], cfg->heartbeat_ms, 2LL * cfg->heartbeat_ms, st->value[i]);
        return -1;
    }
    return 0;
}

/* Reads argv: flag values into st (the last occurrence wins). 1 = --help/--version done. */
static int read_flags(load_state_t *st, int argc, char **argv, bool *print_config, FILE *out,
                      char *err, size_t errcap)
{
    struct option options[N_SETTINGS + 4];
    for (size_t i = 0; i < N_SETTINGS; i++) {
        options[i].name = settings[i].flag;
        options[i].has_arg = settings[i].type == T_BOOL ? optional_argument : required_argument;
        options[i].flag = NULL;
        options[i].val = 1000 + (int)i;
    }
    options[N_SETTINGS] = (struct option){"help", no_argument, NULL, 'h'};
    options[N_SETTINGS + 1] = (struct option){"version", no_argument, NULL, 'V'};
    options[N_SETTINGS + 2] = (struct option){"print-config", no_argument, NULL, 'P'};
    options[N_SETTINGS + 3] = (struct option){NULL, 0, NULL, 0};

    /* glibc re-initialises completely (permutation state too) only for optind = 0; the
     * tests call config_load many times in one process. */
#ifdef __GLIBC__
    optind = 0;
#else
    optind = 1;
#endif
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (c) {
        case 'h':
            print_help(out);
            return 1;
        case 'V':
            fprintf(out, "retryq-worker %s\n", RETRYQ_VERSION_STRING);
            return 1;
        case 'P':
            *print_config = true;
            continue;
        case ':':
        case '?': {
            /* glibc leaves optopt 0 for an unknown long option and sets it to the
             * option's value for a known one given a value it does not take */
            const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
            bool is_long = strncmp(arg, "--", 2) == 0;
            const char *why = c == ':'                                     ? "needs a value"
                              : is_long && optopt != 0 && strchr(arg, '=') ? "takes no value"
                                                                           : "unknown option";
            if (!is_long && optopt > 0 && optopt < 128)
                snprintf(err, errcap, "-%c: %s (see --help)", optopt, why);
            else
                snprintf(err, errcap, "%s: %s (see --help)", arg, why);
            return -1;
        }
        default: {
            size_t i = (size_t)(c - 1000);
            st->value[i] = settings[i].type == T_BOOL && optarg == NULL ? "true" : optarg;
            st->source[i] = SRC_FLAG;
            break;
        }
        }
    }
    if (optind < argc) {
        snprintf(err, errcap, "unexpected argument \"%s\" (options are --name value; see --help)",
                 argv[optind]);
        return -1;
    }
    return 0;
}

static int load(config_t *cfg, load_state_t *st, int argc, char **argv, FILE *out, FILE *warn,
                char *err, size_t errcap)
{
    bool print_config = false;
    int rc = read_flags(st, argc, argv, &print_config, out, err, errcap);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (st->source[i] == SRC_FLAG) {
            snprintf(st->who[i], sizeof st->who[i], "--%s", settings[i].flag);
            continue;
        }
        rq_copy(st->who[i], sizeof st->who[i], settings[i].env);
        const char *env = getenv(settings[i].env);
        if (env != NULL) {
            st->value[i] = env;
            st->source[i] = SRC_ENV;
        } else {
            st->value[i] = settings[i].def;
        }
    }
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (st->value[i] != NULL &&
            apply(cfg, &settings[i], st->who[i], st->value[i], err, errcap) < 0)
            return -1;

    if (load_redis(cfg, st, warn, err, errcap) < 0 ||
        load_database_password(cfg, st, warn, err, errcap) < 0)
        return -1;
    if (check(cfg, st, err, errcap) < 0)
        return -1;
    if (print_config) {
        config_print(cfg, out);
        return 1;
    }
    return 0;
}

int config_load(config_t *cfg, int argc, char **argv, FILE *out, FILE *warn, char *err,
                size_t errcap)
{
    memset(cfg, 0, sizeof *cfg);
    if (errcap > 0)
        err[0] = '\0';
    load_state_t *st = calloc(1, sizeof *st);
    if (st == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    int rc = load(cfg, st, argc, argv, out, warn, err, errcap);
    free(st);
    /* Messages quote values as given: keep them one line whatever the values hold. */
    for (size_t i = 0; rc < 0 && i < errcap && err[i] != '\0'; i++)
        if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
            err[i] = '?';
    if (rc != 0)
        config_free(cfg); /* nothing half-built survives; config_free stays safe to call */
    return rc;
}

void config_free(config_t *cfg)
{
    char *base = (char *)cfg;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (!is_text(settings[i].type))
            continue;
        char **slot = (char **)(base + settings[i].offset);
        free(*slot);
        *slot = NULL;
    }
    memset(&cfg->redis, 0, sizeof cfg->redis);
    if (cfg->database_password != NULL)
        memset(cfg->database_password, 0, strlen(cfg->database_password));
    free(cfg->database_password);
    cfg->database_password = NULL;
}

/* A connection string as --print-config shows it: redacted, with the password from its
 * file counted in (shown as *** like one in the URL). */
static void show_url(const config_t *cfg, const setting_t *s, char *text, size_t cap)
{
    const char *url = *(char *const *)((const char *)cfg + s->offset);
    connstr_pg_t *pg = NULL;
    char why[8];
    if (url == NULL) {
        rq_copy(text, cap, "");
    } else if (s->type == T_REDIS_URL) {
        if (cfg->redis.password[0] != '\0')
            connstr_redis_format(&cfg->redis, text, cap);
        else
            retryq_redis_url_redact(url, text, cap);
    } else if (s->type == T_ROUTER_URL) {
        connstr_router_redact(url, text, cap);
    } else if ((pg = connstr_pg_parse(url, why, sizeof why)) == NULL ||
               (cfg->database_password != NULL &&
                connstr_pg_set_password(pg, cfg->database_password) != 0)) {
        connstr_pg_redact(url, text, cap);
    } else {
        connstr_pg_format(pg, text, cap);
    }
    connstr_pg_free(pg);
}

void config_print(const config_t *cfg, FILE *out)
{
    const char *base = (const char *)cfg;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_t *s = &settings[i];
        char text[1024];
        switch (s->type) {
        case T_STRING: {
            const char *v = *(char *const *)(base + s->offset);
            rq_copy(text, sizeof text, v != NULL ? v : "");
            break;
        }
        case T_REDIS_URL:
        case T_DATABASE_URL:
        case T_ROUTER_URL:
            show_url(cfg, s, text, sizeof text);
            break;
        case T_INT:
        case T_MS:
            snprintf(text, sizeof text, "%d", *(const int *)(base + s->offset));
            break;
        case T_BYTES:
            snprintf(text, sizeof text, "%lld", (long long)*(const int64_t *)(base + s->offset));
            break;
        case T_DURATIONS: {
            size_t o = 0;
            text[0] = '\0';
            for (int k = 0; k < cfg->backoff_count && o < sizeof text; k++) {
                int n =
                    snprintf(text + o, sizeof text - o, "%s%d", k ? "," : "", cfg->backoff_ms[k]);
                if (n < 0)
                    break;
                o += (size_t)n;
            }
            break;
        }
        case T_BOOL:
            rq_copy(text, sizeof text, *(const bool *)(base + s->offset) ? "true" : "false");
            break;
        case T_ENUM: {
            int k = s->get_choice(cfg), n = 0;
            while (s->choices[n] != NULL)
                n++;
            rq_copy(text, sizeof text, k >= 0 && k < n ? s->choices[k] : "?");
            break;
        }
        case T_SECRET_FILE:
            continue; /* shown within its URL, as *** */
        case T_SECRET:
            rq_copy(text, sizeof text, *(char *const *)(base + s->offset) != NULL ? "***" : "");
            break;
        }
        fprintf(out, "%s=%s\n", s->env, text);
    }
}
