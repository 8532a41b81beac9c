/*
 * libFuzzer target: the worker's configuration (config_load over argv and the
 * environment). The input is a list of items separated by NUL bytes: an item that starts
 * with '$' sets an environment variable ("$CONCURRENCY=abc" sets RETRYQ_CONCURRENCY; the
 * RETRYQ_ prefix is always added, so nothing else in the process environment is
 * touched), any other item is one argv word. "@/" inside an item stands for a private
 * directory that holds password files: pw (0600), pw-open (0644, draws a warning),
 * pw-empty, pw-nul, pw-long, pw-crlf. Items naming /dev, /proc, /sys or /run are dropped
 * (a FIFO or a terminal would block the run).
 *
 * Every RETRYQ_ variable is unset before and after each run. Invariants: the result is
 * -1, 0 or 1; a refusal is one non-empty line; nothing written anywhere (the error,
 * --help, --print-config, warnings, config_print, the redacted URLs) ever contains a
 * password read from a file; an accepted configuration satisfies the documented ranges,
 * its URLs pass their parsers' checks and cfg->redis is what its Redis URL reads.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "connstr.h"
#include "connstr_router.h"
#include "fuzz.h"
#include "retryq/retryq.h"

#define MAX_ITEMS 64
#define SECRET "Zq8-file-secret-7Kd"
#define SECRET_OPEN "Wm3-open-secret-9Tx"

extern char **environ;

static char dir[256];

static void write_file(const char *name, const char *text, size_t len, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    FUZZ_ASSERT(f != NULL);
    FUZZ_ASSERT(fwrite(text, 1, len, f) == len);
    FUZZ_ASSERT(fclose(f) == 0);
    FUZZ_ASSERT(chmod(path, mode) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/retryq-fuzz-config.XXXXXX", tmp);
    FUZZ_ASSERT(mkdtemp(dir) != NULL);
    char longpw[2100];
    memset(longpw, 'x', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = '\n';
    write_file("pw", SECRET "\nsecond line\n", strlen(SECRET) + 13, 0600);
    write_file("pw-open", SECRET_OPEN "\n", strlen(SECRET_OPEN) + 1, 0644);
    write_file("pw-empty", "\n", 1, 0600);
    write_file("pw-nul", SECRET "\0x\n", strlen(SECRET) + 3, 0600);
    write_file("pw-long", longpw, sizeof longpw, 0600);
    write_file("pw-crlf", SECRET "\r\n", strlen(SECRET) + 2, 0600);
    return 0;
}

static void clear_env(void)
{
    char *names[256];
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL && n < 256; e++) {
        if (strncmp(*e, "RETRYQ_", 7) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        names[n] = strndup(*e, eq != NULL ? (size_t)(eq - *e) : strlen(*e));
        FUZZ_ASSERT(names[n] != NULL);
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
}

/* The item with "@/" replaced by the private directory; NULL when it is dropped. */
static char *expand(const char *item)
{
    if (strstr(item, "/dev") != NULL || strstr(item, "/proc") != NULL ||
        strstr(item, "/sys") != NULL || strstr(item, "/run") != NULL)
        return NULL;
    const char *at = strstr(item, "@/");
    if (at == NULL)
        return strdup(item);
    char *out = NULL;
    FUZZ_ASSERT(asprintf(&out, "%.*s%s/%s", (int)(at - item), item, dir, at + 2) >= 0);
    return out;
}

/* False when the input itself spells a secret (libFuzzer learns it from memmem). */
static bool secrets_checked;

static void check_no_secret(const char *text, size_t len)
{
    if (text == NULL || !secrets_checked)
        return;
    FUZZ_ASSERT(memmem(text, len, SECRET, strlen(SECRET)) == NULL);
    FUZZ_ASSERT(memmem(text, len, SECRET_OPEN, strlen(SECRET_OPEN)) == NULL);
}

static void check_accepted(const config_t *cfg)
{
    retryq_redis_url_t url;
    retryq_error_t err;
    retryq_keys_t keys;
    char why[256];
    /* the text parses (with a password file, "user@" alone is complete); cfg->redis is it */
    FUZZ_ASSERT(cfg->redis_url != NULL &&
                connstr_redis_parse(cfg->redis_url, CONNSTR_REDIS_PASSWORD_ELSEWHERE, &url, &err) >= 0);
    FUZZ_ASSERT(url.is_unix == cfg->redis.is_unix && url.port == cfg->redis.port &&
                url.db == cfg->redis.db && strcmp(url.host, cfg->redis.host) == 0 &&
                strcmp(url.path, cfg->redis.path) == 0 && strcmp(url.user, cfg->redis.user) == 0);
    FUZZ_ASSERT(cfg->database_url != NULL && connstr_pg_check(cfg->database_url) == NULL);
    FUZZ_ASSERT(cfg->router_url != NULL &&
                connstr_router_check(cfg->router_url, 0, why, sizeof why) == CONNSTR_ROUTER_OK);
    FUZZ_ASSERT(strncasecmp(cfg->router_url, "http://", 7) == 0 ||
                strncasecmp(cfg->router_url, "https://", 8) == 0);
    FUZZ_ASSERT(cfg->queue != NULL && retryq_keys_init(&keys, cfg->queue, &err) == RETRYQ_OK);
    FUZZ_ASSERT(cfg->concurrency >= 1 && cfg->concurrency <= 100000);
    FUZZ_ASSERT(cfg->timeout_ms >= 100 && cfg->timeout_ms <= 3600000);
    FUZZ_ASSERT(cfg->max_response_bytes >= 1024 && cfg->max_response_bytes <= 1073741824LL);
    FUZZ_ASSERT(cfg->max_retries >= 1 && cfg->max_retries <= RETRYQ_MAX_ATTEMPT);
    FUZZ_ASSERT(cfg->db_pool_size >= 1 && cfg->db_pool_size <= 64);
    FUZZ_ASSERT(cfg->backoff_count >= 1 && cfg->backoff_count <= CONFIG_MAX_BACKOFF);
    for (int i = 0; i < cfg->backoff_count; i++)
        FUZZ_ASSERT(cfg->backoff_ms[i] >= 1);
    FUZZ_ASSERT((long long)cfg->lease_ms > 2LL * cfg->heartbeat_ms);
    FUZZ_ASSERT(cfg->log_level >= 0 && cfg->log_level <= 3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *argv[MAX_ITEMS + 2];
    char *env_names[MAX_ITEMS];
    int argc = 0, envc = 0;
    char *copy = malloc(size + 1);
    FUZZ_ASSERT(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';

    secrets_checked = memmem(data, size, SECRET, strlen(SECRET)) == NULL &&
                      memmem(data, size, SECRET_OPEN, strlen(SECRET_OPEN)) == NULL;
    clear_env();
    argv[argc++] = strdup("retryq-worker");
    for (size_t off = 0; off < size && argc <= MAX_ITEMS && envc < MAX_ITEMS;) {
        const char *item = copy + off;
        size_t n = strlen(item);
        off += n + 1;
        char *word = expand(item);
        if (word == NULL)
            continue;
        if (word[0] == '$') {
            char *eq = strchr(word + 1, '=');
            char *name = NULL;
            if (eq != NULL && eq > word + 1 &&
                asprintf(&name, "RETRYQ_%.*s", (int)(eq - word - 1), word + 1) >= 0) {
                if (setenv(name, eq + 1, 1) == 0)
                    env_names[envc++] = name;
                else
                    free(name);
            }
            free(word);
            continue;
        }
        argv[argc++] = word;
    }
    argv[argc] = NULL;

    char *out_text = NULL, *warn_text = NULL, *print_text = NULL;
    size_t out_len = 0, warn_len = 0, print_len = 0;
    FILE *out = open_memstream(&out_text, &out_len);
    FILE *warn = open_memstream(&warn_text, &warn_len);
    FUZZ_ASSERT(out != NULL && warn != NULL);
    config_t cfg;
    char err[512];
    memset(err, 0x55, sizeof err);
    int rc = config_load(&cfg, argc, argv, out, warn, err, sizeof err);
    FUZZ_ASSERT(rc == -1 || rc == 0 || rc == 1);
    if (rc == -1) {
        FUZZ_ASSERT(memchr(err, '\0', sizeof err) != NULL);
        FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
        check_no_secret(err, strlen(err));
    }
    if (rc == 0) {
        check_accepted(&cfg);
        FILE *p = open_memstream(&print_text, &print_len);
        FUZZ_ASSERT(p != NULL);
        config_print(&cfg, p);
        FUZZ_ASSERT(fclose(p) == 0);
        check_no_secret(print_text, print_len);
        char redacted[1024];
        connstr_redis_format(&cfg.redis, redacted, sizeof redacted);
        check_no_secret(redacted, strlen(redacted));
        retryq_redis_url_redact(cfg.redis_url, redacted, sizeof redacted);
        check_no_secret(redacted, strlen(redacted));
        connstr_pg_redact(cfg.database_url, redacted, sizeof redacted);
        check_no_secret(redacted, strlen(redacted));
        connstr_router_redact(cfg.router_url, redacted, sizeof redacted);
        check_no_secret(redacted, strlen(redacted));
        config_free(&cfg);
    }
    FUZZ_ASSERT(fclose(out) == 0 && fclose(warn) == 0);
    check_no_secret(out_text, out_len);
    check_no_secret(warn_text, warn_len);
    free(out_text);
    free(warn_text);
    free(print_text);

    for (int i = 0; i < envc; i++) {
        unsetenv(env_names[i]);
        free(env_names[i]);
    }
    clear_env();
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(copy);
    return 0;
}
