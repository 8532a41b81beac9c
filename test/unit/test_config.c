/*
 * The worker's configuration table: defaults, the environment, flags beating the
 * environment, one-line errors that name the setting as the user set it, password files
 * (kept apart from their URL's text, shown within it as *** when printed, a warning for
 * loose permissions), --help (every environment variable, no secret), --version,
 * duration/size/backoff parsing, and docs/configuration.md listing every setting. How
 * each connection string is parsed and redacted is test_connstr.c's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "internal.h"

extern char **environ;

/* the end of a flag list: a typed null pointer, as variadic functions need */
#define END ((const char *)NULL)
#define DB "postgresql://retryq@127.0.0.1:5432/retryq"
#define ROUTER "http://127.0.0.1:8000"

/* Every environment variable the table must hold. */
static const char *const all_env[] = {
    "RETRYQ_REDIS_URL",
    "RETRYQ_REDIS_PASSWORD_FILE",
    "RETRYQ_REDIS_SENTINEL_PASSWORD",
    "RETRYQ_REDIS_SENTINEL_PASSWORD_FILE",
    "RETRYQ_DATABASE_URL",
    "RETRYQ_DATABASE_PASSWORD_FILE",
    "RETRYQ_DB_POOL",
    "RETRYQ_DB_QUERY_TIMEOUT_MS",
    "RETRYQ_DB_LOCK_TIMEOUT_MS",
    "RETRYQ_DB_TCP_TIMEOUT_MS",
    "RETRYQ_HOSTS_FILE",
    "RETRYQ_ROUTER_URL",
    "RETRYQ_CONNECT_TIMEOUT_MS",
    "RETRYQ_QUEUE",
    "RETRYQ_WORKER_ID",
    "RETRYQ_CONCURRENCY",
    "RETRYQ_MAX_RETRIES",
    "RETRYQ_MAX_DELIVERIES",
    "RETRYQ_BACKOFF",
    "RETRYQ_DEAD_MAX",
    "RETRYQ_QUESTION_BANK",
    "RETRYQ_REQUEST_MODE",
    "RETRYQ_TIMEOUT_MS",
    "RETRYQ_MAX_RESPONSE_BYTES",
    "RETRYQ_HEARTBEAT_MS",
    "RETRYQ_LEASE_MS",
    "RETRYQ_ORPHAN_AGE_MS",
    "RETRYQ_ORPHAN_INTERVAL_MS",
    "RETRYQ_DRAIN_TIMEOUT_MS",
    "RETRYQ_REQUIRE_SAFE_REDIS",
    "RETRYQ_EXIT_WHEN_IDLE",
    "RETRYQ_HTTP_ADDR",
    "RETRYQ_LOG_LEVEL",
    "RETRYQ_LOG_FORMAT",
    "RETRYQ_FLOW",
    "RETRYQ_BREAKER",
    /* the advanced group */
    "RETRYQ_DB_WRITE_DEADLINE_MS",
    "RETRYQ_DB_BATCH_SIZE",
    "RETRYQ_DB_PIPELINE_DEPTH",
    "RETRYQ_REDIS_COMMAND_TIMEOUT_MS",
    "RETRYQ_SELF_CHECK_PAGE",
    "RETRYQ_STOP_FLUSH_MS",
    "RETRYQ_SWEEP_PAGE",
    "RETRYQ_SWEEP_MAX_ROWS",
};

typedef struct run {
    int rc;
    config_t cfg;
    char err[512];
    char *out;  /* what config_load wrote to `out` */
    char *warn; /* ... and to `warn` */
} run_t;

/* Removes every RETRYQ_* variable so the developer's shell cannot leak into a test. */
static void clear_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e != NULL; e++) {
            if (strncmp(*e, "RETRYQ_", 7) == 0) {
                size_t n = strcspn(*e, "=");
                if (n < sizeof name) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                    break;
                }
            }
        }
        if (name[0] == '\0')
            return;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    setenv("RETRYQ_DATABASE_URL", DB, 1);
    setenv("RETRYQ_ROUTER_URL", ROUTER, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* config_load with argv = {"retryq-worker", args..., NULL}; frees nothing. */
static run_t *load_v(const char *first, va_list ap)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "retryq-worker";
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
        assert_true(argc < 31);
        argv[argc++] = (char *)a;
    }
    argv[argc] = NULL;
    run_t *r = calloc(1, sizeof *r);
    assert_non_null(r);
    size_t out_len = 0, warn_len = 0;
    FILE *out = open_memstream(&r->out, &out_len);
    FILE *warn = open_memstream(&r->warn, &warn_len);
    assert_non_null(out);
    assert_non_null(warn);
    r->rc = config_load(&r->cfg, argc, argv, out, warn, r->err, sizeof r->err);
    fclose(out);
    fclose(warn);
    return r;
}

static run_t *load(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    run_t *r = load_v(first, ap);
    va_end(ap);
    return r;
}

static void run_free(run_t *r)
{
    config_free(&r->cfg);
    free(r->out);
    free(r->warn);
    free(r);
}

static run_t *load_ok(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    run_t *r = load_v(first, ap);
    va_end(ap);
    if (r->rc != 0)
        fail_msg("config_load returned %d: %s", r->rc, r->err);
    return r;
}

/* Loads, expects a failure whose message is one line that starts with "<who>: " and
 * contains `rule`. */
static void expect_error(const char *who, const char *rule, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    run_t *r = load_v(first, ap);
    va_end(ap);
    if (r->rc != -1)
        fail_msg("expected an error naming %s, got rc=%d", who, r->rc);
    size_t n = strlen(who);
    if (strncmp(r->err, who, n) != 0 || strncmp(r->err + n, ": ", 2) != 0)
        fail_msg("error does not start with \"%s: \": %s", who, r->err);
    if (strstr(r->err, rule) == NULL)
        fail_msg("error lacks \"%s\": %s", rule, r->err);
    if (strchr(r->err, '\n') != NULL)
        fail_msg("error is more than one line: %s", r->err);
    run_free(r);
}

static char *write_secret(const char *content, mode_t mode)
{
    char *path = strdup("/tmp/retryq-test-secret-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

/* What config_print writes (free it). */
static char *print_config(const config_t *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print(cfg, f);
    fclose(f);
    return text;
}

static void remove_secret(char *path)
{
    unlink(path);
    free(path);
}

/* ------------------------------------------------------------------ tests */

static void test_defaults(void **state)
{
    (void)state;
    run_t *r = load_ok(END);
    const config_t *c = &r->cfg;
    assert_string_equal(c->redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(c->database_url, DB);
    assert_string_equal(c->router_url, ROUTER);
    assert_string_equal(c->queue, "retry_queue");
    assert_null(c->worker_id);
    assert_int_equal(c->concurrency, 64);
    assert_int_equal(c->timeout_ms, 60000);
    assert_int_equal(c->connect_timeout_ms, 5000);
    assert_int_equal(c->max_response_bytes, 4 * 1024 * 1024);
    assert_int_equal(c->max_retries, 3);
    assert_int_equal(c->db_pool_size, 4);
    assert_string_equal(c->http_addr, "127.0.0.1:9464");
    assert_null(c->question_bank);
    assert_int_equal(c->request_mode, REQUEST_MODE_RUNNER);
    assert_int_equal(c->drain_timeout_ms, 65000);
    assert_int_equal(c->heartbeat_ms, 5000);
    assert_int_equal(c->lease_ms, 30000);
    assert_int_equal(c->backoff_count, 3);
    assert_int_equal(c->backoff_ms[0], 5000);
    assert_int_equal(c->backoff_ms[1], 30000);
    assert_int_equal(c->backoff_ms[2], 120000);
    assert_int_equal(c->max_deliveries, 5);
    assert_int_equal(c->orphan_age_ms, 300000);
    assert_int_equal(c->orphan_interval_ms, 60000);
    assert_int_equal(c->dead_max, 10000);
    assert_false(c->require_safe_redis);
    assert_false(c->exit_when_idle);
    assert_int_equal(c->log_level, 1); /* LOG_LEVEL_INFO */
    assert_false(c->log_json);
    assert_string_equal(r->out, "");
    assert_string_equal(r->warn, "");
    run_free(r);
}

static void test_environment(void **state)
{
    (void)state;
    setenv("RETRYQ_REDIS_URL", "unix:///run/redis.sock?db=2", 1);
    setenv("RETRYQ_QUEUE", "q1", 1);
    setenv("RETRYQ_WORKER_ID", "host-a:1", 1);
    setenv("RETRYQ_CONCURRENCY", "7", 1);
    setenv("RETRYQ_TIMEOUT_MS", "2m", 1);
    setenv("RETRYQ_MAX_RESPONSE_BYTES", "512KiB", 1);
    setenv("RETRYQ_REQUEST_MODE", "seed", 1);
    setenv("RETRYQ_LOG_LEVEL", "DEBUG", 1);
    setenv("RETRYQ_LOG_FORMAT", "json", 1);
    setenv("RETRYQ_EXIT_WHEN_IDLE", "yes", 1);
    setenv("RETRYQ_REQUIRE_SAFE_REDIS", "1", 1);
    setenv("RETRYQ_HTTP_ADDR", "off", 1);
    setenv("RETRYQ_QUESTION_BANK", "/etc/retryq/questions.json", 1);
    setenv("RETRYQ_HEARTBEAT_MS", "1s", 1);
    setenv("RETRYQ_LEASE_MS", "2001", 1);
    run_t *r = load_ok(END);
    const config_t *c = &r->cfg;
    assert_string_equal(c->redis_url, "unix:///run/redis.sock?db=2");
    assert_string_equal(c->queue, "q1");
    assert_string_equal(c->worker_id, "host-a:1");
    assert_int_equal(c->concurrency, 7);
    assert_int_equal(c->timeout_ms, 120000);
    assert_int_equal(c->max_response_bytes, 512 * 1024);
    assert_int_equal(c->request_mode, REQUEST_MODE_SEED);
    assert_int_equal(c->log_level, 0);
    assert_true(c->log_json);
    assert_true(c->exit_when_idle);
    assert_true(c->require_safe_redis);
    assert_string_equal(c->http_addr, "off");
    assert_string_equal(c->question_bank, "/etc/retryq/questions.json");
    assert_int_equal(c->heartbeat_ms, 1000);
    assert_int_equal(c->lease_ms, 2001);
    run_free(r);
}

static void test_flag_beats_environment(void **state)
{
    (void)state;
    setenv("RETRYQ_CONCURRENCY", "10", 1);
    setenv("RETRYQ_QUEUE", "from_env", 1);
    setenv("RETRYQ_LOG_FORMAT", "json", 1);
    run_t *r = load_ok("--concurrency=20", "--queue", "from_flag", "--log-format", "logfmt",
                       "--exit-when-idle", END);
    assert_int_equal(r->cfg.concurrency, 20);
    assert_string_equal(r->cfg.queue, "from_flag");
    assert_false(r->cfg.log_json);
    assert_true(r->cfg.exit_when_idle);
    run_free(r);

    /* the last of repeated flags wins; --bool=false works */
    r = load_ok("--concurrency", "3", "--concurrency", "4", "--exit-when-idle=false", END);
    assert_int_equal(r->cfg.concurrency, 4);
    assert_false(r->cfg.exit_when_idle);
    run_free(r);

    /* an environment value a flag overrides is never parsed, so it cannot fail */
    setenv("RETRYQ_CONCURRENCY", "abc", 1);
    r = load_ok("--concurrency", "5", END);
    assert_int_equal(r->cfg.concurrency, 5);
    run_free(r);

    /* flags alone are enough for the required settings */
    unsetenv("RETRYQ_DATABASE_URL");
    unsetenv("RETRYQ_ROUTER_URL");
    unsetenv("RETRYQ_CONCURRENCY");
    r = load_ok("--database-url", "host=db dbname=app", "--router-url",
                "https://router.example/api", END);
    assert_string_equal(r->cfg.database_url, "host=db dbname=app");
    assert_string_equal(r->cfg.router_url, "https://router.example/api");
    run_free(r);
}

static void test_bad_environment_values(void **state)
{
    (void)state;
    static const struct {
        const char *env, *value, *rule;
    } cases[] = {
        {"RETRYQ_CONCURRENCY", "0", "must be an integer between 1 and 100000 (got \"0\")"},
        {"RETRYQ_CONCURRENCY", " 5", "must be an integer between 1 and 100000"},
        {"RETRYQ_CONCURRENCY", "100001", "must be an integer between 1 and 100000"},
        {"RETRYQ_DB_POOL", "65", "must be an integer between 1 and 64 (got \"65\")"},
        {"RETRYQ_TIMEOUT_MS", "5x", "must be a duration between 100 and 3600000 ms"},
        {"RETRYQ_TIMEOUT_MS", "1.5s", "must be a duration"},
        {"RETRYQ_TIMEOUT_MS", "nan", "must be a duration"},
        {"RETRYQ_DRAIN_TIMEOUT_MS", "0", "must be a duration between 1 and"},
        {"RETRYQ_MAX_RESPONSE_BYTES", "4XB", "must be a size between 1024 and"},
        {"RETRYQ_MAX_RESPONSE_BYTES", "-1", "must be a size"},
        {"RETRYQ_MAX_RESPONSE_BYTES", "2GiB", "must be a size"},
        {"RETRYQ_BACKOFF", "", "must be 1 to 16 durations"},
        {"RETRYQ_BACKOFF", "5s,,2m", "must be 1 to 16 durations"},
        {"RETRYQ_BACKOFF", "5s,", "(got \"5s,\")"},
        {"RETRYQ_BACKOFF", "0", "must be 1 to 16 durations"},
        {"RETRYQ_BACKOFF", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
         "must be 1 to 16 durations"},
        {"RETRYQ_EXIT_WHEN_IDLE", "maybe", "must be true or false (got \"maybe\")"},
        {"RETRYQ_LOG_LEVEL", "verbose", "must be debug, info, warn or error (got \"verbose\")"},
        {"RETRYQ_LOG_FORMAT", "xml", "must be logfmt or json (got \"xml\")"},
        {"RETRYQ_REQUEST_MODE", "fast", "must be runner or seed (got \"fast\")"},
        {"RETRYQ_FLOW", "llama=concurrency:2", "key \"llama\" must be MODEL/REGION"},
        {"RETRYQ_FLOW", "*/eu-west=concurrency:0", "concurrency must be given once"},
        {"RETRYQ_FLOW", "*/*=rate:5", "rate must be given once, as R/s"},
        {"RETRYQ_FLOW", "*/*=burst:5", "burst needs a rate"},
        {"RETRYQ_FLOW", "*/*=speed:5", "unknown limit \"speed:5\""},
        {"RETRYQ_BREAKER", "ratio:2", "ratio must be a fraction"},
        {"RETRYQ_BREAKER", "backoff:5m..5s", "backoff must be MIN..MAX"},
        {"RETRYQ_REDIS_URL", "http://cache:6379", "must start with redis://, redis+sentinel://, redis+cluster:// or unix://"},
        {"RETRYQ_REDIS_URL", "redis://cache:99999", "port must be a number from 1 to 65535"},
        {"RETRYQ_DATABASE_URL", "", "required: set RETRYQ_DATABASE_URL or --database-url"},
        {"RETRYQ_DATABASE_URL", "mysql://db/app", "must start with postgresql:// or postgres://"},
        {"RETRYQ_DATABASE_URL", "localhost", "must be a postgresql:// URL or a key=value conninfo"},
        {"RETRYQ_DATABASE_URL", "host='db", "not a valid PostgreSQL conninfo"},
        {"RETRYQ_DATABASE_URL", "host=db colour=blue", "not a valid PostgreSQL conninfo"},
        {"RETRYQ_ROUTER_URL", "", "required: set RETRYQ_ROUTER_URL or --router-url"},
        {"RETRYQ_ROUTER_URL", "ftp://router", "must start with http:// or https://"},
        {"RETRYQ_ROUTER_URL", "http:///inference", "missing host"},
        {"RETRYQ_ROUTER_URL", "http://router /x", "must not contain spaces"},
        {"RETRYQ_QUEUE", "bad{queue}", "printable ASCII without spaces or braces"},
        {"RETRYQ_QUEUE", "", "must be 1..200 bytes"},
        {"RETRYQ_WORKER_ID", "a b", "printable ASCII characters without spaces"},
        {"RETRYQ_HTTP_ADDR", "9464", "must be host:port"},
        {"RETRYQ_HTTP_ADDR", "127.0.0.1:70000", "must be host:port"},
        {"RETRYQ_LEASE_MS", "10000",
         "must be more than twice RETRYQ_HEARTBEAT_MS (2 x 5000 ms = 10000 ms) (got \"10000\")"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setup(NULL);
        setenv(cases[i].env, cases[i].value, 1);
        expect_error(cases[i].env, cases[i].rule, END);
    }
    /* the example of the header, word for word */
    setup(NULL);
    setenv("RETRYQ_CONCURRENCY", "abc", 1);
    run_t *r = load(END);
    assert_int_equal(r->rc, -1);
    assert_string_equal(
        r->err, "RETRYQ_CONCURRENCY: must be an integer between 1 and 100000 (got \"abc\")");
    run_free(r);
}

static void test_bad_flags_are_named_as_flags(void **state)
{
    (void)state;
    expect_error("--concurrency", "must be an integer between 1 and 100000 (got \"x\")",
                 "--concurrency", "x", END);
    expect_error("--backoff", "e.g. 5s,30s,2m", "--backoff=5s;30s", END);
    /* cross-checks name each side as it was set */
    expect_error("--lease-ms", "must be more than twice RETRYQ_HEARTBEAT_MS", "--lease-ms", "9s",
                 END);
    setenv("RETRYQ_LEASE_MS", "3000", 1);
    expect_error("RETRYQ_LEASE_MS",
                 "must be more than twice --heartbeat-ms (2 x 2000 ms = 4000 ms)",
                 "--heartbeat-ms=2s", END);
    unsetenv("RETRYQ_DATABASE_URL");
    expect_error("RETRYQ_DATABASE_URL", "required", END);
    expect_error("--database-url", "required", "--database-url=", END);
    expect_error("--nope", "unknown option", "--nope", END);
    expect_error("--concurrency", "needs a value", "--concurrency", END);
    expect_error("-x", "unknown option", "-x", END);
    expect_error("--help=3", "takes no value", "--help=3", END);

    run_t *r = load("--database-url", DB, "stray", END);
    assert_int_equal(r->rc, -1);
    assert_string_equal(r->err,
                        "unexpected argument \"stray\" (options are --name value; see --help)");
    run_free(r);
}

static void test_errors_never_show_passwords(void **state)
{
    (void)state;
    setenv("RETRYQ_DATABASE_URL", "mysql://app:hunter2@db/app", 1);
    run_t *r = load(END);
    assert_int_equal(r->rc, -1);
    assert_null(strstr(r->err, "hunter2"));
    assert_non_null(strstr(r->err, "mysql://app:***@db/app"));
    run_free(r);

    setenv("RETRYQ_DATABASE_URL", "host=db password=hunter2 colour=blue", 1);
    r = load(END);
    assert_int_equal(r->rc, -1);
    assert_null(strstr(r->err, "hunter2"));
    run_free(r);

    setup(NULL);
    setenv("RETRYQ_REDIS_URL", "redis://:hunter2@cache:0", 1);
    r = load(END);
    assert_int_equal(r->rc, -1);
    assert_non_null(strstr(r->err, "RETRYQ_REDIS_URL: "));
    assert_null(strstr(r->err, "hunter2"));
    run_free(r);
}

static void test_durations_sizes_and_backoff(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int count;
        int ms[4];
    } lists[] = {
        {"5s,30s,2m", 3, {5000, 30000, 120000}},
        {"5000,30000", 2, {5000, 30000}},
        {" 250ms , 1h ", 2, {250, 3600000}},
        {"1", 1, {1}},
        {"2M,3S", 2, {120000, 3000}},
    };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        setup(NULL);
        setenv("RETRYQ_BACKOFF", lists[i].text, 1);
        run_t *r = load_ok(END);
        assert_int_equal(r->cfg.backoff_count, lists[i].count);
        for (int k = 0; k < lists[i].count; k++)
            assert_int_equal(r->cfg.backoff_ms[k], lists[i].ms[k]);
        run_free(r);
    }
    run_t *r = load_ok("--backoff", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", END);
    assert_int_equal(r->cfg.backoff_count, CONFIG_MAX_BACKOFF);
    assert_int_equal(r->cfg.backoff_ms[15], 16);
    run_free(r);

    static const struct {
        const char *text;
        long long bytes;
    } sizes[] = {
        {"4194304", 4194304}, {"4MiB", 4194304},    {"512KiB", 524288}, {"512k", 524288},
        {"1MB", 1000000},     {"1GiB", 1073741824}, {"2048b", 2048},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        r = load_ok("--max-response-bytes", sizes[i].text, END);
        assert_int_equal(r->cfg.max_response_bytes, sizes[i].bytes);
        run_free(r);
    }
    r = load_ok("--timeout-ms", "90s", "--connect-timeout-ms", "250ms", "--orphan-age-ms", "1h",
                "--drain-timeout-ms", "70000", END);
    assert_int_equal(r->cfg.timeout_ms, 90000);
    assert_int_equal(r->cfg.connect_timeout_ms, 250);
    assert_int_equal(r->cfg.orphan_age_ms, 3600000);
    assert_int_equal(r->cfg.drain_timeout_ms, 70000);
    run_free(r);
}

static void test_redis_sentinel_password(void **state)
{
    (void)state;
    setenv("RETRYQ_REDIS_URL", "redis+sentinel://app:datapw@s1:26379,s2:26380/main/1", 1);
    setenv("RETRYQ_REDIS_SENTINEL_PASSWORD", "sentinel-secret", 1);
    run_t *r = load_ok(END);
    assert_true(r->cfg.redis.is_sentinel);
    assert_string_equal(r->cfg.redis.sentinel_password, "sentinel-secret");
    assert_string_equal(r->cfg.redis.password, "datapw");
    assert_string_equal(r->cfg.redis.master, "main");
    char *printed = print_config(&r->cfg);
    assert_null(strstr(printed, "sentinel-secret"));
    assert_null(strstr(printed, "datapw"));
    assert_non_null(strstr(printed, "RETRYQ_REDIS_SENTINEL_PASSWORD=***\n"));
    assert_non_null(strstr(printed, "RETRYQ_REDIS_URL=redis+sentinel://app:***@s1:26379,s2:26380/main/1\n"));
    free(printed);
    run_free(r);

    char *path = write_secret("from-a-file\n", 0600);
    setenv("RETRYQ_REDIS_SENTINEL_PASSWORD_FILE", path, 1);
    expect_error("RETRYQ_REDIS_SENTINEL_PASSWORD_FILE", "give it in one place only", END);
    unsetenv("RETRYQ_REDIS_SENTINEL_PASSWORD");
    r = load_ok(END);
    assert_string_equal(r->cfg.redis.sentinel_password, "from-a-file");
    run_free(r);
    setenv("RETRYQ_REDIS_URL", "redis://cache", 1);
    expect_error("RETRYQ_REDIS_SENTINEL_PASSWORD_FILE", "only a redis+sentinel://", END);
    unsetenv("RETRYQ_REDIS_SENTINEL_PASSWORD_FILE");
    remove_secret(path);
    expect_error("--redis-sentinel-password", "only a redis+sentinel://",
                 "--redis-sentinel-password", "x", END);
}

static void test_redis_password_file(void **state)
{
    (void)state;
    char *path = write_secret("s3cr@t/pw:x\nsecond line\n", 0600);
    setenv("RETRYQ_REDIS_URL", "redis://cache.internal:6380/2", 1);
    setenv("RETRYQ_REDIS_PASSWORD_FILE", path, 1);
    run_t *r = load("--print-config", END);
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->out, "RETRYQ_REDIS_URL=redis://:***@cache.internal:6380/2\n"));
    assert_null(strstr(r->out, "s3cr"));
    run_free(r);
    r = load_ok(END);
    /* the password goes into the parsed URL, never into its text */
    assert_string_equal(r->cfg.redis_url, "redis://cache.internal:6380/2");
    const retryq_redis_url_t *u = &r->cfg.redis;
    assert_string_equal(u->password, "s3cr@t/pw:x");
    assert_string_equal(u->user, "");
    assert_string_equal(u->host, "cache.internal");
    assert_int_equal(u->port, 6380);
    assert_int_equal(u->db, 2);
    assert_string_equal(r->warn, ""); /* mode 0600: no warning */

    char *printed = print_config(&r->cfg);
    assert_non_null(strstr(printed, "RETRYQ_REDIS_URL=redis://:***@cache.internal:6380/2\n"));
    assert_null(strstr(printed, "s3cr"));
    assert_non_null(strstr(printed, "RETRYQ_CONCURRENCY=64\n"));
    assert_non_null(strstr(printed, "RETRYQ_BACKOFF=5000,30000,120000\n"));
    assert_non_null(strstr(printed, "RETRYQ_LOG_LEVEL=info\n"));
    free(printed);
    run_free(r);

    /* a user in the URL is kept (the URL alone would be incomplete); CRLF is stripped */
    remove_secret(path);
    path = write_secret("pw\r\n", 0600);
    setenv("RETRYQ_REDIS_PASSWORD_FILE", path, 1);
    setenv("RETRYQ_REDIS_URL", "redis://app@cache", 1);
    r = load_ok(END);
    assert_string_equal(r->cfg.redis_url, "redis://app@cache");
    assert_string_equal(r->cfg.redis.user, "app");
    assert_string_equal(r->cfg.redis.password, "pw");
    run_free(r);
    /* the URL's own mistakes are still named after the URL */
    setenv("RETRYQ_REDIS_URL", "redis://app@cache:0", 1);
    expect_error("RETRYQ_REDIS_URL",
                 "port must be a number from 1 to 65535 (got \"redis://app@cache:0\")", END);
    setenv("RETRYQ_REDIS_URL", "redis://:old@cache", 1);
    expect_error("RETRYQ_REDIS_PASSWORD_FILE", "RETRYQ_REDIS_URL already holds a password", END);
    /* without a file, user@ alone is the library's error */
    unsetenv("RETRYQ_REDIS_PASSWORD_FILE");
    setenv("RETRYQ_REDIS_URL", "redis://app@cache", 1);
    expect_error("RETRYQ_REDIS_URL", "user information must be [user]:password@", END);
    setenv("RETRYQ_REDIS_PASSWORD_FILE", path, 1);
    setenv("RETRYQ_REDIS_URL", "unix:///run/redis.sock", 1);
    r = load_ok(END);
    assert_true(r->cfg.redis.is_unix);
    assert_string_equal(r->cfg.redis.path, "/run/redis.sock");
    assert_string_equal(r->cfg.redis.password, "pw");
    run_free(r);
    remove_secret(path);
}

static void test_database_password_file(void **state)
{
    (void)state;
    char *path = write_secret("it's \\ secret\n", 0600);

    /* URI: the password is kept apart (libpq's own password keyword), the text as given */
    setenv("RETRYQ_DATABASE_URL", "postgresql://app@db:5432/runner?sslmode=disable", 1);
    run_t *r = load_ok("--database-password-file", path, END);
    assert_string_equal(r->cfg.database_url, "postgresql://app@db:5432/runner?sslmode=disable");
    assert_string_equal(r->cfg.database_password, "it's \\ secret");
    char *printed = print_config(&r->cfg);
    assert_non_null(
        strstr(printed, "RETRYQ_DATABASE_URL=postgresql://app:***@db:5432/runner?sslmode=disable\n"));
    assert_null(strstr(printed, "secret"));
    free(printed);
    run_free(r);

    /* conninfo: the same, whatever quotes and backslashes the password holds */
    setenv("RETRYQ_DATABASE_URL", "host=db dbname=runner", 1);
    setenv("RETRYQ_DATABASE_PASSWORD_FILE", path, 1);
    r = load_ok(END);
    assert_string_equal(r->cfg.database_url, "host=db dbname=runner");
    assert_string_equal(r->cfg.database_password, "it's \\ secret");
    printed = print_config(&r->cfg);
    assert_non_null(strstr(printed, "RETRYQ_DATABASE_URL=host=db dbname=runner password=***\n"));
    assert_null(strstr(printed, "secret"));
    free(printed);
    run_free(r);

    /* a password in two places is refused rather than guessed */
    setenv("RETRYQ_DATABASE_URL", "postgresql://app:old@db/runner", 1);
    expect_error("RETRYQ_DATABASE_PASSWORD_FILE", "RETRYQ_DATABASE_URL already holds a password",
                 END);
    setenv("RETRYQ_DATABASE_URL", "host=db password=old", 1);
    expect_error("RETRYQ_DATABASE_PASSWORD_FILE", "already holds a password", END);
    remove_secret(path);

    /* missing and empty files */
    setenv("RETRYQ_DATABASE_URL", DB, 1);
    setenv("RETRYQ_DATABASE_PASSWORD_FILE", "/nonexistent/retryq/pw", 1);
    expect_error("RETRYQ_DATABASE_PASSWORD_FILE", "cannot read \"/nonexistent/retryq/pw\"", END);
    path = write_secret("\nsecond\n", 0600);
    expect_error("--database-password-file", "is empty", "--database-password-file", path, END);
    remove_secret(path);
}

static void test_readable_password_file_warns(void **state)
{
    (void)state;
    char *path = write_secret("pw\n", 0644);
    setenv("RETRYQ_REDIS_PASSWORD_FILE", path, 1);
    run_t *r = load_ok(END);
    assert_non_null(strstr(r->warn, "warning: RETRYQ_REDIS_PASSWORD_FILE:"));
    assert_non_null(strstr(r->warn, path));
    assert_non_null(strstr(r->warn, "readable by group or others"));
    assert_null(strstr(r->warn, "pw\n"));
    assert_string_equal(r->cfg.redis.password, "pw");
    run_free(r);
    remove_secret(path);
}

static void test_help_and_version(void **state)
{
    (void)state;
    char *path = write_secret("file-secret\n", 0600);
    setenv("RETRYQ_DATABASE_URL", "postgresql://app:env-secret@db/runner", 1);
    setenv("RETRYQ_REDIS_PASSWORD_FILE", path, 1);
    setenv("RETRYQ_CONCURRENCY", "not a number", 1); /* --help works whatever the env holds */
    run_t *r = load("--help", END);
    assert_int_equal(r->rc, 1);
    for (size_t i = 0; i < sizeof all_env / sizeof all_env[0]; i++)
        if (strstr(r->out, all_env[i]) == NULL)
            fail_msg("--help does not mention %s", all_env[i]);
    assert_null(strstr(r->out, "env-secret"));
    assert_null(strstr(r->out, "file-secret"));
    assert_non_null(strstr(r->out, "--concurrency N"));
    assert_non_null(strstr(r->out, "default 64"));
    assert_non_null(strstr(r->out, "Connections:\n"));
    run_free(r);

    r = load("-h", END);
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->out, "Usage: retryq-worker"));
    run_free(r);

    r = load("--version", END);
    assert_int_equal(r->rc, 1);
    assert_string_equal(r->out, "retryq-worker " RETRYQ_VERSION_STRING "\n");
    run_free(r);
    remove_secret(path);
}

static void test_print_config(void **state)
{
    (void)state;
    setenv("RETRYQ_ROUTER_URL", "https://user:tok@router.example/base", 1);
    run_t *r = load("--print-config", "--concurrency", "9", END);
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->out, "RETRYQ_CONCURRENCY=9\n"));
    assert_non_null(strstr(r->out, "RETRYQ_ROUTER_URL=https://user:***@router.example/base\n"));
    assert_non_null(strstr(r->out, "RETRYQ_MAX_RESPONSE_BYTES=4194304\n"));
    assert_non_null(strstr(r->out, "RETRYQ_REQUEST_MODE=runner\n"));
    assert_null(strstr(r->out, "tok@"));
    /* config_load freed what it built: cfg is empty and config_free is still safe */
    assert_null(r->cfg.router_url);
    run_free(r);
}

/* ------------------------------------------------------------------ the advanced group */

/* The advanced settings: flag, environment variable, default as --print-config shows it,
 * the range's ends as typed and their values, and the rule of a value outside it. */
static const struct advanced {
    const char *flag, *env;
    int def;
    const char *min, *max;
    int min_value, max_value;
    const char *below, *above, *rule;
} advanced[] = {
    {"--db-write-deadline-ms", "RETRYQ_DB_WRITE_DEADLINE_MS", 300000, "1s", "24h", 1000, 86400000,
     "999", "86400001", "must be a duration between 1000 and 86400000 ms"},
    {"--db-batch-size", "RETRYQ_DB_BATCH_SIZE", 64, "1", "1000", 1, 1000, "0", "1001",
     "must be an integer between 1 and 1000"},
    {"--db-pipeline-depth", "RETRYQ_DB_PIPELINE_DEPTH", 8, "1", "100", 1, 100, "0", "101",
     "must be an integer between 1 and 100"},
    {"--redis-command-timeout-ms", "RETRYQ_REDIS_COMMAND_TIMEOUT_MS", 5000, "500ms", "10m", 500,
     600000, "499", "600001", "must be a duration between 500 and 600000 ms"},
    {"--self-check-page", "RETRYQ_SELF_CHECK_PAGE", 100, "10", "100000", 10, 100000, "9",
     "100001", "must be an integer between 10 and 100000"},
    {"--stop-flush-ms", "RETRYQ_STOP_FLUSH_MS", 5000, "100ms", "10m", 100, 600000, "99",
     "600001", "must be a duration between 100 and 600000 ms"},
    {"--sweep-page", "RETRYQ_SWEEP_PAGE", 1000, "10", "100000", 10, 100000, "9", "100001",
     "must be an integer between 10 and 100000"},
    {"--sweep-max-rows", "RETRYQ_SWEEP_MAX_ROWS", 5000, "500", "100000", 500, 100000, "499",
     "100001", "must be an integer between 500 and 100000"},
};
#define N_ADVANCED (sizeof advanced / sizeof advanced[0])

/* The field of config_t that advanced[i] fills. */
static int advanced_value(const config_t *c, size_t i)
{
    const int values[] = {c->db_write_deadline_ms,     c->db_batch_size, c->db_pipeline_depth,
                          c->redis_command_timeout_ms, c->self_check_page, c->stop_flush_ms,
                          c->sweep_page,               c->sweep_max_rows};
    assert_int_equal(sizeof values / sizeof values[0], N_ADVANCED);
    return values[i];
}

static void test_advanced_defaults(void **state)
{
    (void)state;
    run_t *r = load_ok(END);
    for (size_t i = 0; i < N_ADVANCED; i++)
        if (advanced_value(&r->cfg, i) != advanced[i].def)
            fail_msg("%s: default %d, expected %d", advanced[i].env, advanced_value(&r->cfg, i),
                     advanced[i].def);
    /* --print-config shows each, in milliseconds for the durations */
    char *printed = print_config(&r->cfg);
    for (size_t i = 0; i < N_ADVANCED; i++) {
        char line[96];
        snprintf(line, sizeof line, "%s=%d\n", advanced[i].env, advanced[i].def);
        if (strstr(printed, line) == NULL)
            fail_msg("--print-config lacks %s", line);
    }
    free(printed);
    run_free(r);
}

static void test_advanced_ranges(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ADVANCED; i++) {
        const struct advanced *a = &advanced[i];
        /* both ends are accepted, from the flag and from the environment */
        run_t *r = load_ok(a->flag, a->min, END);
        assert_int_equal(advanced_value(&r->cfg, i), a->min_value);
        run_free(r);
        setup(NULL);
        setenv(a->env, a->max, 1);
        r = load_ok(END);
        assert_int_equal(advanced_value(&r->cfg, i), a->max_value);
        run_free(r);
        /* one past either end is refused with the rule, named as it was set */
        setup(NULL);
        setenv(a->env, a->below, 1);
        expect_error(a->env, a->rule, END);
        expect_error(a->flag, a->rule, a->flag, a->above, END);
        expect_error(a->flag, "(got \"abc\")", a->flag, "abc", END);
        setup(NULL);
    }
    /* the durations take units; a flag beats the environment as everywhere */
    setenv("RETRYQ_DB_WRITE_DEADLINE_MS", "2s", 1);
    run_t *r = load_ok("--stop-flush-ms", "1s", "--redis-command-timeout-ms=750", END);
    assert_int_equal(r->cfg.db_write_deadline_ms, 2000);
    assert_int_equal(r->cfg.stop_flush_ms, 1000);
    assert_int_equal(r->cfg.redis_command_timeout_ms, 750);
    run_free(r);
    r = load_ok("--db-write-deadline-ms", "90s", END);
    assert_int_equal(r->cfg.db_write_deadline_ms, 90000);
    run_free(r);
}

static void test_help_lists_the_advanced_group_last(void **state)
{
    (void)state;
    run_t *r = load("--help", END);
    assert_int_equal(r->rc, 1);
    const char *heading = strstr(r->out, "\nAdvanced:\n");
    const char *other = strstr(r->out, "\nOther:\n");
    assert_non_null(heading);
    assert_non_null(other);
    /* after every other group, with its one-line note right under the heading */
    static const char *const groups[] = {"Connections:", "Queue and jobs:", "Router requests:",
                                         "Leases, recovery and shutdown:",
                                         "Health endpoint and logging:"};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        const char *g = strstr(r->out, groups[i]);
        assert_non_null(g);
        assert_true(g < heading);
    }
    const char *note = heading + strlen("\nAdvanced:\n");
    assert_true(strncmp(note, "  These rarely need changing", 28) == 0);
    assert_ptr_equal(strchr(note, '\n') + 1, strstr(note, "  --")); /* one line */
    /* each advanced setting is listed there, with its environment variable and default,
     * and nowhere else */
    for (size_t i = 0; i < N_ADVANCED; i++) {
        char usage[64], env[64];
        snprintf(usage, sizeof usage, "\n  %s ", advanced[i].flag);
        snprintf(env, sizeof env, "[env %s; default ", advanced[i].env);
        const char *at = strstr(r->out, usage);
        if (at == NULL || at < heading || at > other)
            fail_msg("--help does not list %s under Advanced", advanced[i].flag);
        if (strstr(at + 1, usage) != NULL)
            fail_msg("--help lists %s twice", advanced[i].flag);
        const char *e = strstr(at, env);
        assert_non_null(e);
        assert_true(e < other);
    }
    run_free(r);
}

/* The repository root, from RETRYQ_SOURCE_DIR or this file's path (…/test/unit/x.c). */
static void source_path(const char *rel, char *buf, size_t cap)
{
    const char *root = getenv("RETRYQ_SOURCE_DIR");
    if (root != NULL && root[0] != '\0') {
        snprintf(buf, cap, "%s/%s", root, rel);
        return;
    }
    char here[4096];
    rq_copy(here, sizeof here, __FILE__);
    snprintf(buf, cap, "%s/%s", dirname(dirname(dirname(here))), rel);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_docs_list_every_setting(void **state)
{
    (void)state;
    char path[4200];
    source_path("docs/configuration.md", path, sizeof path);
    char *doc = slurp(path);
    run_t *r = load("--help", END);
    /* every "[env NAME" of --help, and every flag, appears in the document's table */
    int seen = 0;
    for (const char *p = r->out; (p = strstr(p, "[env ")) != NULL; p += 5) {
        char name[64], row[80];
        size_t n = strcspn(p + 5, ";]");
        assert_true(n < sizeof name);
        memcpy(name, p + 5, n);
        name[n] = '\0';
        snprintf(row, sizeof row, "`%s`", name);
        if (strstr(doc, row) == NULL)
            fail_msg("docs/configuration.md does not list %s", name);
        seen++;
    }
    assert_int_equal(seen, (int)(sizeof all_env / sizeof all_env[0]));
    assert_non_null(strstr(doc, "\n### Advanced\n")); /* the group has its own table */
    for (const char *p = r->out; (p = strstr(p, "\n  --")) != NULL; p += 3) {
        char flag[64], row[80];
        size_t n = strcspn(p + 3, " [\n");
        assert_true(n < sizeof flag);
        memcpy(flag, p + 3, n);
        flag[n] = '\0';
        snprintf(row, sizeof row, "`%s", flag);
        if (strstr(doc, row) == NULL)
            fail_msg("docs/configuration.md does not list %s", flag);
    }
    run_free(r);
    free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flag_beats_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_environment_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_flags_are_named_as_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_never_show_passwords, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durations_sizes_and_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_sentinel_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_password_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_password_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readable_password_file_warns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_and_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_print_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_docs_list_every_setting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_advanced_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_advanced_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_lists_the_advanced_group_last, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
