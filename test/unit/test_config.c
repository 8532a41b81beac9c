/*
 * The worker's settings table: defaults, environment, flags, validation messages,
 * password files and redaction, --help.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static const char *const vars[] = {
    "RETRYQ_REDIS_URL", "RETRYQ_DATABASE_URL", "RETRYQ_ROUTER_URL", "RETRYQ_QUEUE",
    "RETRYQ_CONCURRENCY", "RETRYQ_TIMEOUT_MS", "RETRYQ_BACKOFF", "RETRYQ_REDIS_PASSWORD_FILE",
    "RETRYQ_DATABASE_PASSWORD_FILE", "RETRYQ_LEASE_MS", "RETRYQ_HEARTBEAT_MS",
    "RETRYQ_MAX_RESPONSE_BYTES", "RETRYQ_LOG_FORMAT", "RETRYQ_EXIT_WHEN_IDLE"};

static int reset_env(void **state)
{
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    setenv("RETRYQ_DATABASE_URL", "postgresql://retryq@127.0.0.1:5432/retryq", 1);
    setenv("RETRYQ_ROUTER_URL", "http://127.0.0.1:8080", 1);
    return 0;
}

/* Loads with the given flags; output and warnings go to memory buffers. */
static int load(config_t *cfg, char *err, char **out_text, char **warn_text, int argc, ...)
{
    char *argv[32] = {"retryq-worker"};
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i + 1] = va_arg(ap, char *);
    va_end(ap);
    size_t out_len = 0, warn_len = 0;
    char *o = NULL, *w = NULL;
    FILE *out = open_memstream(&o, &out_len);
    FILE *warn = open_memstream(&w, &warn_len);
    int rc = config_load(cfg, argc + 1, argv, out, warn, err, 512);
    fclose(out);
    fclose(warn);
    if (out_text != NULL)
        *out_text = o;
    else
        free(o);
    if (warn_text != NULL)
        *warn_text = w;
    else
        free(w);
    return rc;
}

static void defaults(void **state)
{
    config_t cfg;
    char err[512];
    assert_int_equal(load(&cfg, err, NULL, NULL, 0), 0);
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(cfg.queue, "retry_queue");
    assert_int_equal(cfg.concurrency, 64);
    assert_int_equal(cfg.timeout_ms, 60000);
    assert_int_equal(cfg.max_response_bytes, 4 * 1024 * 1024);
    assert_int_equal(cfg.drain_timeout_ms, 65000);
    assert_int_equal(cfg.heartbeat_ms, 5000);
    assert_int_equal(cfg.lease_ms, 30000);
    assert_int_equal(cfg.backoff_count, 3);
    assert_int_equal(cfg.backoff_ms[0], 5000);
    assert_int_equal(cfg.backoff_ms[1], 30000);
    assert_int_equal(cfg.backoff_ms[2], 120000);
    assert_string_equal(cfg.http_addr, "127.0.0.1:9464");
    assert_int_equal(cfg.request_mode, REQUEST_MODE_RUNNER);
    assert_false(cfg.exit_when_idle);
    config_free(&cfg);
}

static void flags_beat_environment(void **state)
{
    config_t cfg;
    char err[512];
    setenv("RETRYQ_CONCURRENCY", "10", 1);
    setenv("RETRYQ_QUEUE", "from_env", 1);
    setenv("RETRYQ_EXIT_WHEN_IDLE", "yes", 1);
    assert_int_equal(load(&cfg, err, NULL, NULL, 3, "--concurrency=20", "--backoff", "250ms,1s,2m"), 0);
    assert_int_equal(cfg.concurrency, 20);
    assert_string_equal(cfg.queue, "from_env");
    assert_true(cfg.exit_when_idle);
    assert_int_equal(cfg.backoff_count, 3);
    assert_int_equal(cfg.backoff_ms[0], 250);
    assert_int_equal(cfg.backoff_ms[1], 1000);
    assert_int_equal(cfg.backoff_ms[2], 120000);
    config_free(&cfg);
}

static void bad_values_name_the_setting(void **state)
{
    const struct {
        const char *env, *value, *expect;
    } cases[] = {
        {"RETRYQ_CONCURRENCY", "abc", "RETRYQ_CONCURRENCY: must be an integer between 1 and 100000 (got \"abc\")"},
        {"RETRYQ_CONCURRENCY", "0", "RETRYQ_CONCURRENCY: must be an integer"},
        {"RETRYQ_TIMEOUT_MS", "5 parsecs", "RETRYQ_TIMEOUT_MS: must be a duration"},
        {"RETRYQ_BACKOFF", "5s,,30s", "RETRYQ_BACKOFF: must be 1 to 16 durations"},
        {"RETRYQ_MAX_RESPONSE_BYTES", "4 MiB", "RETRYQ_MAX_RESPONSE_BYTES: must be a size"},
        {"RETRYQ_REDIS_URL", "http://x", "RETRYQ_REDIS_URL:"},
        {"RETRYQ_ROUTER_URL", "ftp://x", "RETRYQ_ROUTER_URL: must start with http:// or https://"},
        {"RETRYQ_QUEUE", "a b", "RETRYQ_QUEUE:"},
        {"RETRYQ_LOG_FORMAT", "xml", "RETRYQ_LOG_FORMAT: must be logfmt or json (got \"xml\")"},
        {"RETRYQ_LEASE_MS", "9000", "RETRYQ_LEASE_MS: must be more than twice RETRYQ_HEARTBEAT_MS"},
        {"RETRYQ_DATABASE_URL", "", "RETRYQ_DATABASE_URL: required"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config_t cfg;
        char err[512] = "";
        reset_env(state);
        setenv(cases[i].env, cases[i].value, 1);
        assert_int_equal(load(&cfg, err, NULL, NULL, 0), -1);
        if (strncmp(err, cases[i].expect, strlen(cases[i].expect)) != 0)
            fail_msg("%s=%s gave \"%s\"", cases[i].env, cases[i].value, err);
        assert_null(strchr(err, '\n'));
        config_free(&cfg);
    }
    config_t cfg;
    char err[512];
    reset_env(state);
    assert_int_equal(load(&cfg, err, NULL, NULL, 1, "--concurrency=-5"), -1);
    assert_non_null(strstr(err, "--concurrency: must be an integer"));
    config_free(&cfg);
    assert_int_equal(load(&cfg, err, NULL, NULL, 1, "--no-such-flag"), -1);
    assert_non_null(strstr(err, "unknown option"));
    config_free(&cfg);
}

static char *secret_file(const char *text, mode_t mode)
{
    char *path = strdup("/tmp/retryq-secret-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    chmod(path, mode);
    return path;
}

static void password_files_are_inserted_and_redacted(void **state)
{
    char *redis_pw = secret_file("s3cr3t/pw\n", 0600);
    char *db_pw = secret_file("db'pass\n", 0644);
    setenv("RETRYQ_REDIS_URL", "redis://worker@127.0.0.1:6380/2", 1);
    setenv("RETRYQ_REDIS_PASSWORD_FILE", redis_pw, 1);
    setenv("RETRYQ_DATABASE_URL", "host=127.0.0.1 user=retryq dbname=retryq", 1);
    setenv("RETRYQ_DATABASE_PASSWORD_FILE", db_pw, 1);
    config_t cfg;
    char err[512];
    char *out = NULL, *warn = NULL;
    assert_int_equal(load(&cfg, err, &out, &warn, 1, "--print-config"), 1);
    assert_string_equal(cfg.redis_url, "redis://worker:s3cr3t%2Fpw@127.0.0.1:6380/2");
    assert_string_equal(cfg.database_url,
                        "host=127.0.0.1 user=retryq dbname=retryq password='db\\'pass'");
    assert_null(strstr(out, "s3cr3t"));
    assert_null(strstr(out, "db\\'pass"));
    assert_non_null(strstr(out, "RETRYQ_REDIS_URL=redis://worker:***@127.0.0.1:6380/2"));
    assert_non_null(strstr(out, "password=***"));
    /* The database secret file is world-readable: warned, the 0600 one is not. */
    assert_non_null(strstr(warn, db_pw));
    assert_null(strstr(warn, redis_pw));
    free(out);
    free(warn);
    config_free(&cfg);
    unlink(redis_pw);
    unlink(db_pw);
    free(redis_pw);
    free(db_pw);
}

static void redact_forms(void **state)
{
    char buf[256];
    config_redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require", buf, sizeof buf);
    assert_string_equal(buf, "postgresql://u:***@h:5432/db?sslmode=require");
    config_redact_url("redis://:pw@h:6379", buf, sizeof buf);
    assert_string_equal(buf, "redis://:***@h:6379");
    config_redact_url("redis://h:6379", buf, sizeof buf);
    assert_string_equal(buf, "redis://h:6379");
    config_redact_url("host=h password = 'a b\\'c' user=u", buf, sizeof buf);
    assert_string_equal(buf, "host=h password=*** user=u");
}

static void help_lists_every_variable_and_no_secret(void **state)
{
    setenv("RETRYQ_REDIS_URL", "redis://:topsecret@127.0.0.1:6379", 1);
    config_t cfg;
    char err[512];
    char *out = NULL;
    assert_int_equal(load(&cfg, err, &out, NULL, 1, "--help"), 1);
    const char *expect[] = {"RETRYQ_REDIS_URL", "RETRYQ_DATABASE_URL", "RETRYQ_ROUTER_URL",
                            "RETRYQ_QUEUE", "RETRYQ_CONCURRENCY", "RETRYQ_TIMEOUT_MS",
                            "RETRYQ_HTTP_ADDR", "RETRYQ_LOG_LEVEL", "RETRYQ_REDIS_PASSWORD_FILE",
                            "RETRYQ_DRAIN_TIMEOUT_MS", "RETRYQ_BACKOFF", "RETRYQ_MAX_DELIVERIES"};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        assert_non_null(strstr(out, expect[i]));
    assert_null(strstr(out, "topsecret"));
    free(out);
    config_free(&cfg);
    assert_int_equal(load(&cfg, err, &out, NULL, 1, "--version"), 1);
    assert_non_null(strstr(out, "retryq-worker "));
    free(out);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults, reset_env),
        cmocka_unit_test_setup(flags_beat_environment, reset_env),
        cmocka_unit_test_setup(bad_values_name_the_setting, reset_env),
        cmocka_unit_test_setup(password_files_are_inserted_and_redacted, reset_env),
        cmocka_unit_test_setup(redact_forms, reset_env),
        cmocka_unit_test_setup(help_lists_every_variable_and_no_secret, reset_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
