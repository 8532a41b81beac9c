/*
 * The worker's configuration: one table of settings (name, flag, environment variable,
 * type, default, validator, help). The same table parses argv and the environment
 * (flags win), prints --help, validates, and prints the effective values with secrets
 * redacted. A bad value stops start-up with one line naming the setting.
 */
#ifndef RETRYQ_WORKER_CONFIG_H
#define RETRYQ_WORKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "retryq/retryq.h"

#define CONFIG_MAX_BACKOFF 16

typedef enum request_mode {
    REQUEST_MODE_RUNNER = 0, /* the runner's normal request: regional system wrapper, t=0.1, 500 tokens */
    REQUEST_MODE_SEED,       /* the seed plan's bare prompt, t=0.7, 2000 tokens */
} request_mode_t;

typedef struct config {
    char *redis_url;           /* --redis-url RETRYQ_REDIS_URL, default redis://127.0.0.1:6379 */
    retryq_redis_url_t redis;  /*   redis_url parsed, with the password of --redis-password-file
                                    and the sentinels' password (redis+sentinel://) */
    char *redis_sentinel_password; /* --redis-sentinel-password RETRYQ_REDIS_SENTINEL_PASSWORD: wiped
                                      once copied into redis.sentinel_password */
    char *database_url;        /* --database-url RETRYQ_DATABASE_URL, required */
    char *database_password;   /*   --database-password-file's password (libpq's password keyword), NULL when none */
    char *router_url;          /* --router-url RETRYQ_ROUTER_URL, required, http(s)://host[:port][/base] */
    char *queue;               /* --queue RETRYQ_QUEUE, default retry_queue */
    char *worker_id;           /* --worker-id RETRYQ_WORKER_ID, default: <hostname>:<pid>:<random> built by the worker */
    int concurrency;           /* --concurrency RETRYQ_CONCURRENCY, 1..100000, default 64 */
    int timeout_ms;            /* --timeout-ms RETRYQ_TIMEOUT_MS, router total timeout, default 60000 */
    int connect_timeout_ms;    /* --connect-timeout-ms RETRYQ_CONNECT_TIMEOUT_MS, default 5000 */
    int64_t max_response_bytes;/* --max-response-bytes RETRYQ_MAX_RESPONSE_BYTES, default 4 MiB */
    int max_retries;           /* --max-retries RETRYQ_MAX_RETRIES: ignored, the row's max_retries decides */
    int db_pool_size;          /* --db-pool RETRYQ_DB_POOL, 1..64, default 4 */
    char *hosts_file;          /* --hosts-file RETRYQ_HOSTS_FILE, extra hosts file for evdns, default none */
    int db_query_timeout_ms;   /* --db-query-timeout-ms RETRYQ_DB_QUERY_TIMEOUT_MS, default 30 s, 0 = none */
    int db_lock_timeout_ms;    /* --db-lock-timeout-ms RETRYQ_DB_LOCK_TIMEOUT_MS, default 5 s, 0 = none */
    int db_tcp_timeout_ms;     /* --db-tcp-timeout-ms RETRYQ_DB_TCP_TIMEOUT_MS, default 30 s, 0 = libpq's */
    char *http_addr;           /* --http-addr RETRYQ_HTTP_ADDR, default 127.0.0.1:9464, "" or "off" disables */
    char *question_bank;       /* --question-bank RETRYQ_QUESTION_BANK, path or NULL for the built-in bank */
    request_mode_t request_mode; /* --request-mode RETRYQ_REQUEST_MODE runner|seed, default runner */
    int drain_timeout_ms;      /* --drain-timeout-ms RETRYQ_DRAIN_TIMEOUT_MS, default 65000 */
    int heartbeat_ms;          /* --heartbeat-ms RETRYQ_HEARTBEAT_MS, default 5000 */
    int lease_ms;              /* --lease-ms RETRYQ_LEASE_MS, default 30000, must be > 2 * heartbeat */
    int backoff_ms[CONFIG_MAX_BACKOFF]; /* --backoff RETRYQ_BACKOFF "5s,30s,2m" (ms/s/m suffixes), default 5000,30000,120000 */
    int backoff_count;         /*   number of entries in backoff_ms (1..16) */
    int max_deliveries;        /* --max-deliveries RETRYQ_MAX_DELIVERIES, poison bound, default 5 */
    int orphan_age_ms;         /* --orphan-age-ms RETRYQ_ORPHAN_AGE_MS, default 300000 */
    int orphan_interval_ms;    /* --orphan-interval-ms RETRYQ_ORPHAN_INTERVAL_MS, default 60000 */
    int dead_max;              /* --dead-max RETRYQ_DEAD_MAX, cap of the dead list, default 10000 */
    bool require_safe_redis;   /* --require-safe-redis RETRYQ_REQUIRE_SAFE_REDIS: refuse to start without AOF/noeviction */
    bool exit_when_idle;       /* --exit-when-idle RETRYQ_EXIT_WHEN_IDLE */
    int log_level;             /* --log-level RETRYQ_LOG_LEVEL debug|info|warn|error, default info (a log_level_t) */
    bool log_json;             /* --log-format RETRYQ_LOG_FORMAT logfmt|json, default logfmt */

    /* Advanced: tunables that rarely need changing (--help lists them last). */
    int db_write_deadline_ms;  /* --db-write-deadline-ms RETRYQ_DB_WRITE_DEADLINE_MS, 1 s..24 h,
                                  default 5 min: an outcome not recorded by then is handed
                                  back to the queue (policy.h) */
    int db_batch_size;         /* --db-batch-size RETRYQ_DB_BATCH_SIZE, 1..1000, default 64 */
    int db_pipeline_depth;     /* --db-pipeline-depth RETRYQ_DB_PIPELINE_DEPTH, 1..100,
                                  default 8 (store.h) */
    int redis_command_timeout_ms; /* --redis-command-timeout-ms RETRYQ_REDIS_COMMAND_TIMEOUT_MS,
                                  500 ms..10 min, default 5 s: the reply watchdog's limit */
    int self_check_page;       /* --self-check-page RETRYQ_SELF_CHECK_PAGE, 10..100000,
                                  default 100 (queue.h) */
    int stop_flush_ms;         /* --stop-flush-ms RETRYQ_STOP_FLUSH_MS, 100 ms..10 min,
                                  default 5 s: the wait for the hand-back at a stop */
    int sweep_page;            /* --sweep-page RETRYQ_SWEEP_PAGE, 10..100000, default 1000 */
    int sweep_max_rows;        /* --sweep-max-rows RETRYQ_SWEEP_MAX_ROWS, 500..100000,
                                  default 5000 */

    char *flow;                /* --flow RETRYQ_FLOW, per-key limits (flowrules.h), default none */
    char *breaker;             /* --breaker RETRYQ_BREAKER, breaker thresholds or "off" (flowrules.h) */
} config_t;

/*
 * Fills cfg from defaults, then the environment, then argv (getopt_long).
 * Returns 0 when the worker should run, 1 when --help or --version was printed to `out`
 * (exit 0), -1 on a bad setting with one line in err, e.g.
 * "RETRYQ_CONCURRENCY: must be an integer between 1 and 100000 (got \"abc\")".
 * Secrets: RETRYQ_REDIS_PASSWORD_FILE / RETRYQ_DATABASE_PASSWORD_FILE /
 * RETRYQ_REDIS_SENTINEL_PASSWORD_FILE (and the
 * --redis-password-file / --database-password-file flags) name files whose first line
 * is the password of the corresponding URL: it goes into cfg->redis, or into
 * cfg->database_password, never into the URL's text; a warning is written to `out`'s
 * stderr counterpart (the `warn` stream) when such a file is readable by group or others.
 * config_free wipes both passwords.
 */
int config_load(config_t *cfg, int argc, char **argv, FILE *out, FILE *warn, char *err, size_t errcap);
void config_free(config_t *cfg);
/* Prints "name=value" lines of the effective settings, passwords replaced by ***. */
void config_print(const config_t *cfg, FILE *out);

#endif
