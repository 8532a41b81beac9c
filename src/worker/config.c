/*
 * The worker's settings (see config.h). One table drives everything: defaults, the
 * environment, getopt_long flags, validation, --help and the redacted dump. A value is
 * parsed by its type's parser whether it came from the default, the environment or a
 * flag, so a default can never be something a user could not type.
 */
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
#include "internal.h"
#include "log.h"

typedef enum setting_type {
    T_STRING,  /* free text */
    T_URL,     /* text that may hold a password: redacted when printed */
    T_INT,     /* integer in min..max */
    T_MS,      /* duration in ms; "500ms", "5s", "2m" accepted */
    T_BYTES,   /* "4MiB", "512KiB", "4194304" */
    T_BACKOFF, /* list of durations */
    T_BOOL,
    T_LEVEL,   /* log level */
    T_FORMAT,  /* logfmt | json */
    T_MODE,    /* runner | seed */
    T_FILE,    /* a password file: read after parsing */
} setting_type_t;

typedef struct setting {
    const char *flag; /* without the leading -- */
    const char *env;
    setting_type_t type;
    const char *def;  /* default as text; NULL = unset */
    long long min, max;
    size_t offset;    /* into config_t; SIZE_MAX for password files */
    const char *help;
} setting_t;

#define OFF(field) offsetof(config_t, field)
#define NO_FIELD SIZE_MAX

static const setting_t settings[] = {
    {"redis-url", "RETRYQ_REDIS_URL", T_URL, "redis://127.0.0.1:6379", 0, 0, OFF(redis_url),
     "Redis: redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N]"},
    {"redis-password-file", "RETRYQ_REDIS_PASSWORD_FILE", T_FILE, NULL, 0, 0, NO_FIELD,
     "file whose first line is the Redis password"},
    {"database-url", "RETRYQ_DATABASE_URL", T_URL, NULL, 0, 0, OFF(database_url),
     "PostgreSQL: postgresql://user[:password]@host[:port]/db or a key=value conninfo (required)"},
    {"database-password-file", "RETRYQ_DATABASE_PASSWORD_FILE", T_FILE, NULL, 0, 0, NO_FIELD,
     "file whose first line is the PostgreSQL password"},
    {"router-url", "RETRYQ_ROUTER_URL", T_URL, NULL, 0, 0, OFF(router_url),
     "inference router base URL, http(s)://host[:port][/base] (required)"},
    {"queue", "RETRYQ_QUEUE", T_STRING, RETRYQ_DEFAULT_QUEUE, 0, 0, OFF(queue), "queue name"},
    {"worker-id", "RETRYQ_WORKER_ID", T_STRING, NULL, 0, 0, OFF(worker_id),
     "worker id (default <hostname>:<pid>:<random>; must be unique per process)"},
    {"concurrency", "RETRYQ_CONCURRENCY", T_INT, "64", 1, 100000, OFF(concurrency),
     "jobs in flight at once"},
    {"timeout-ms", "RETRYQ_TIMEOUT_MS", T_MS, "60000", 100, 3600000, OFF(timeout_ms),
     "router call total timeout"},
    {"connect-timeout-ms", "RETRYQ_CONNECT_TIMEOUT_MS", T_MS, "5000", 50, 600000,
     OFF(connect_timeout_ms), "connect timeout (router, Redis)"},
    {"max-response-bytes", "RETRYQ_MAX_RESPONSE_BYTES", T_BYTES, "4MiB", 1024, 1073741824LL,
     OFF(max_response_bytes), "largest router answer accepted"},
    {"max-retries", "RETRYQ_MAX_RETRIES", T_INT, "3", 1, RETRYQ_MAX_ATTEMPT, OFF(max_retries),
     "highest retry_attempt accepted"},
    {"db-pool", "RETRYQ_DB_POOL", T_INT, "4", 1, 64, OFF(db_pool_size),
     "PostgreSQL connections"},
    {"http-addr", "RETRYQ_HTTP_ADDR", T_STRING, "127.0.0.1:9464", 0, 0, OFF(http_addr),
     "address of /healthz /readyz /metrics (\"off\" disables)"},
    {"question-bank", "RETRYQ_QUESTION_BANK", T_STRING, NULL, 0, 0, OFF(question_bank),
     "JSON file of question id -> text (default: the runner's built-in ids)"},
    {"request-mode", "RETRYQ_REQUEST_MODE", T_MODE, "runner", 0, 0, OFF(request_mode),
     "runner (regional wrapper, t=0.1, 500 tokens) or seed (bare prompt, t=0.7, 2000 tokens)"},
    {"drain-timeout-ms", "RETRYQ_DRAIN_TIMEOUT_MS", T_MS, "65000", 1, 3600000,
     OFF(drain_timeout_ms), "how long a stop waits for jobs in flight"},
    {"heartbeat-ms", "RETRYQ_HEARTBEAT_MS", T_MS, "5000", 50, 600000, OFF(heartbeat_ms),
     "heartbeat interval"},
    {"lease-ms", "RETRYQ_LEASE_MS", T_MS, "30000", 200, 3600000, OFF(lease_ms),
     "silence after which a worker's jobs are recovered (> 2 x heartbeat)"},
    {"backoff", "RETRYQ_BACKOFF", T_BACKOFF, "5s,30s,2m", 0, 0, OFF(backoff_ms),
     "delays before the retries of a transient router failure"},
    {"max-deliveries", "RETRYQ_MAX_DELIVERIES", T_INT, "5", 1, RETRYQ_MAX_ATTEMPT,
     OFF(max_deliveries), "deliveries after which a job is poison (dead list)"},
    {"orphan-age-ms", "RETRYQ_ORPHAN_AGE_MS", T_MS, "300000", 100, 86400000LL * 30,
     OFF(orphan_age_ms), "age of a 'retrying' row with no job before it is enqueued again"},
    {"orphan-interval-ms", "RETRYQ_ORPHAN_INTERVAL_MS", T_MS, "60000", 100, 86400000,
     OFF(orphan_interval_ms), "how often the orphan sweep runs"},
    {"dead-max", "RETRYQ_DEAD_MAX", T_INT, "10000", 1, 100000000, OFF(dead_max),
     "entries kept in the dead list"},
    {"require-safe-redis", "RETRYQ_REQUIRE_SAFE_REDIS", T_BOOL, "false", 0, 0,
     OFF(require_safe_redis), "refuse to run on Redis without AOF or with eviction"},
    {"exit-when-idle", "RETRYQ_EXIT_WHEN_IDLE", T_BOOL, "false", 0, 0, OFF(exit_when_idle),
     "exit once the queue and the jobs in flight are empty"},
    {"log-level", "RETRYQ_LOG_LEVEL", T_LEVEL, "info", 0, 0, OFF(log_level),
     "debug, info, warn or error"},
    {"log-format", "RETRYQ_LOG_FORMAT", T_FORMAT, "logfmt", 0, 0, OFF(log_json), "logfmt or json"},
};

#define N_SETTINGS (sizeof settings / sizeof settings[0])

/* ---------------------------------------------------------------- value parsers */

static bool parse_ll(const char *text, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return false;
    *out = v;
    return true;
}

/* "250", "250ms", "5s", "2m", "1h" -> ms */
static bool parse_ms(const char *text, long long *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || v < 0)
        return false;
    double scale = 1;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        scale = 1;
    else if (strcmp(end, "s") == 0)
        scale = 1000;
    else if (strcmp(end, "m") == 0)
        scale = 60000;
    else if (strcmp(end, "h") == 0)
        scale = 3600000;
    else
        return false;
    double ms = v * scale;
    if (ms > (double)LLONG_MAX / 2)
        return false;
    *out = (long long)ms;
    return true;
}

static bool parse_bytes(const char *text, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || v < 0)
        return false;
    long long scale;
    if (*end == '\0' || strcasecmp(end, "b") == 0)
        scale = 1;
    else if (strcasecmp(end, "KiB") == 0 || strcasecmp(end, "K") == 0 || strcasecmp(end, "KB") == 0)
        scale = 1024;
    else if (strcasecmp(end, "MiB") == 0 || strcasecmp(end, "M") == 0 || strcasecmp(end, "MB") == 0)
        scale = 1024 * 1024;
    else if (strcasecmp(end, "GiB") == 0 || strcasecmp(end, "G") == 0 || strcasecmp(end, "GB") == 0)
        scale = 1024LL * 1024 * 1024;
    else
        return false;
    if (v > LLONG_MAX / scale)
        return false;
    *out = v * scale;
    return true;
}

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

/* Applies one textual value; on failure writes "<who>: <rule> (got "<text>")". */
static int apply(config_t *cfg, const setting_t *s, const char *who, const char *text, char *err,
                 size_t errcap)
{
    char *base = (char *)cfg;
    long long v = 0;
    switch (s->type) {
    case T_STRING:
    case T_URL: {
        char **slot = (char **)(base + s->offset);
        char *copy = strdup(text);
        if (copy == NULL) {
            snprintf(err, errcap, "out of memory");
            return -1;
        }
        free(*slot);
        *slot = copy;
        return 0;
    }
    case T_INT:
        if (!parse_ll(text, &v) || v < s->min || v > s->max) {
            snprintf(err, errcap, "%s: must be an integer between %lld and %lld (got \"%s\")", who,
                     s->min, s->max, text);
            return -1;
        }
        *(int *)(base + s->offset) = (int)v;
        return 0;
    case T_MS:
        if (!parse_ms(text, &v) || v < s->min || v > s->max) {
            snprintf(err, errcap,
                     "%s: must be a duration between %lld and %lld ms, e.g. 500ms, 5s, 2m (got \"%s\")",
                     who, s->min, s->max, text);
            return -1;
        }
        *(int *)(base + s->offset) = (int)v;
        return 0;
    case T_BYTES:
        if (!parse_bytes(text, &v) || v < s->min || v > s->max) {
            snprintf(err, errcap,
                     "%s: must be a size between %lld and %lld bytes, e.g. 4MiB (got \"%s\")", who,
                     s->min, s->max, text);
            return -1;
        }
        *(int64_t *)(base + s->offset) = v;
        return 0;
    case T_BACKOFF: {
        int count = 0;
        const char *p = text;
        while (*p != '\0') {
            char item[32];
            size_t n = strcspn(p, ",");
            if (n == 0 || n >= sizeof item || count == CONFIG_MAX_BACKOFF) {
                count = -1;
                break;
            }
            memcpy(item, p, n);
            item[n] = '\0';
            if (!parse_ms(item, &v) || v < 1 || v > 86400000) {
                count = -1;
                break;
            }
            cfg->backoff_ms[count++] = (int)v;
            p += n;
            if (*p == ',')
                p++;
        }
        if (count <= 0) {
            snprintf(err, errcap,
                     "%s: must be 1 to %d durations separated by commas, e.g. 5s,30s,2m (got \"%s\")",
                     who, CONFIG_MAX_BACKOFF, text);
            return -1;
        }
        cfg->backoff_count = count;
        return 0;
    }
    case T_BOOL:
        if (!parse_bool(text, (bool *)(base + s->offset))) {
            snprintf(err, errcap, "%s: must be true or false (got \"%s\")", who, text);
            return -1;
        }
        return 0;
    case T_LEVEL: {
        int level = log_level_parse(text);
        if (level < 0) {
            snprintf(err, errcap, "%s: must be debug, info, warn or error (got \"%s\")", who, text);
            return -1;
        }
        cfg->log_level = level;
        return 0;
    }
    case T_FORMAT:
        if (strcmp(text, "logfmt") != 0 && strcmp(text, "json") != 0) {
            snprintf(err, errcap, "%s: must be logfmt or json (got \"%s\")", who, text);
            return -1;
        }
        cfg->log_json = strcmp(text, "json") == 0;
        return 0;
    case T_MODE:
        if (strcmp(text, "runner") != 0 && strcmp(text, "seed") != 0) {
            snprintf(err, errcap, "%s: must be runner or seed (got \"%s\")", who, text);
            return -1;
        }
        cfg->request_mode = strcmp(text, "seed") == 0 ? REQUEST_MODE_SEED : REQUEST_MODE_RUNNER;
        return 0;
    case T_FILE:
        return 0;
    }
    return 0;
}

/* ---------------------------------------------------------------- passwords */

static void percent_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *in != '\0' && o + 4 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

static int read_secret(const char *who, const char *path, FILE *warn, char *secret, size_t cap,
                       char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errcap, "%s: cannot read %s: %s", who, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0 && warn != NULL)
        fprintf(warn, "retryq-worker: warning: %s: %s is readable by group or others (chmod 600)\n",
                who, path);
    if (fgets(secret, (int)cap, f) == NULL)
        secret[0] = '\0';
    fclose(f);
    secret[strcspn(secret, "\r\n")] = '\0';
    if (secret[0] == '\0') {
        snprintf(err, errcap, "%s: %s is empty", who, path);
        return -1;
    }
    return 0;
}

/* Puts `password` into a URI's userinfo (scheme://[user[:pw]]@host...). */
static char *uri_with_password(const char *url, const char *password)
{
    const char *start = strstr(url, "://");
    if (start == NULL)
        return NULL;
    start += 3;
    size_t hostpart = strcspn(start, "/?");
    const char *at = memchr(start, '@', hostpart);
    char enc[1024];
    percent_encode(password, enc, sizeof enc);
    size_t userlen = 0;
    if (at != NULL) {
        const char *colon = memchr(start, ':', (size_t)(at - start));
        userlen = (size_t)((colon != NULL ? colon : at) - start);
    }
    const char *rest = at != NULL ? at + 1 : start;
    size_t need = strlen(url) + strlen(enc) + 8;
    char *out = malloc(need);
    if (out == NULL)
        return NULL;
    snprintf(out, need, "%.*s%.*s:%s@%s", (int)(start - url), url, (int)userlen, start, enc, rest);
    return out;
}

/* Appends password='...' to a key=value conninfo (libpq: the last value wins). */
static char *conninfo_with_password(const char *conninfo, const char *password)
{
    size_t need = strlen(conninfo) + 2 * strlen(password) + 16;
    char *out = malloc(need);
    if (out == NULL)
        return NULL;
    size_t o = (size_t)snprintf(out, need, "%s password='", conninfo);
    for (const char *p = password; *p != '\0'; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    out[o++] = '\'';
    out[o] = '\0';
    return out;
}

static int insert_password(char **url, const char *who, const char *path, FILE *warn, char *err,
                           size_t errcap)
{
    char secret[512];
    if (*url == NULL) {
        snprintf(err, errcap, "%s: given without the URL it belongs to", who);
        return -1;
    }
    if (read_secret(who, path, warn, secret, sizeof secret, err, errcap) < 0)
        return -1;
    char *next = strstr(*url, "://") != NULL ? uri_with_password(*url, secret)
                                             : conninfo_with_password(*url, secret);
    memset(secret, 0, sizeof secret);
    if (next == NULL) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    free(*url);
    *url = next;
    return 0;
}

/* ---------------------------------------------------------------- loading */

static void print_help(FILE *out)
{
    fprintf(out, "Usage: retryq-worker [OPTIONS]\n\n"
                 "Takes retry jobs from Redis, re-runs the inference through the router and records\n"
                 "the outcome in PostgreSQL. Every option can also be set by its environment\n"
                 "variable; a flag wins over the environment.\n\nOptions:\n");
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_t *s = &settings[i];
        bool takes_value = s->type != T_BOOL;
        fprintf(out, "  --%s%s\n      %s\n      env %s", s->flag, takes_value ? "=VALUE" : "",
                s->help, s->env);
        if (s->def != NULL)
            fprintf(out, ", default %s", s->def);
        fprintf(out, "\n");
    }
    fprintf(out, "  --print-config\n      print the effective settings (secrets redacted) and exit\n"
                 "  -h, --help\n  --version\n\n"
                 "Exit codes: 0 stopped normally, 1 runtime failure, 2 bad configuration.\n");
}

static int check(config_t *cfg, char *err, size_t errcap)
{
    retryq_error_t rerr;
    retryq_redis_url_t url;
    retryq_keys_t keys;
    if (retryq_redis_url_parse(cfg->redis_url, &url, &rerr) != RETRYQ_OK) {
        snprintf(err, errcap, "RETRYQ_REDIS_URL: %s", rerr.message);
        return -1;
    }
    if (cfg->database_url == NULL || cfg->database_url[0] == '\0') {
        snprintf(err, errcap, "RETRYQ_DATABASE_URL: required (--database-url)");
        return -1;
    }
    if (cfg->router_url == NULL || cfg->router_url[0] == '\0') {
        snprintf(err, errcap, "RETRYQ_ROUTER_URL: required (--router-url)");
        return -1;
    }
    if (strncmp(cfg->router_url, "http://", 7) != 0 && strncmp(cfg->router_url, "https://", 8) != 0) {
        snprintf(err, errcap, "RETRYQ_ROUTER_URL: must start with http:// or https://");
        return -1;
    }
    if (retryq_keys_init(&keys, cfg->queue, &rerr) != RETRYQ_OK) {
        snprintf(err, errcap, "RETRYQ_QUEUE: %s", rerr.message);
        return -1;
    }
    if (cfg->lease_ms <= 2 * cfg->heartbeat_ms) {
        snprintf(err, errcap, "RETRYQ_LEASE_MS: must be more than twice RETRYQ_HEARTBEAT_MS (%d ms)",
                 cfg->heartbeat_ms);
        return -1;
    }
    return 0;
}

int config_load(config_t *cfg, int argc, char **argv, FILE *out, FILE *warn, char *err,
                size_t errcap)
{
    memset(cfg, 0, sizeof *cfg);
    const char *files[N_SETTINGS] = {0};
    const char *file_who[N_SETTINGS] = {0};

    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].def != NULL &&
            apply(cfg, &settings[i], settings[i].env, settings[i].def, err, errcap) < 0)
            return -1;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = getenv(settings[i].env);
        if (v == NULL)
            continue;
        if (settings[i].type == T_FILE) {
            files[i] = v;
            file_who[i] = settings[i].env;
        } else if (apply(cfg, &settings[i], settings[i].env, v, err, errcap) < 0) {
            return -1;
        }
    }

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
    bool print_config = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        if (c == 'h') {
            print_help(out);
            return 1;
        }
        if (c == 'V') {
            fprintf(out, "retryq-worker %s\n", RETRYQ_VERSION_STRING);
            return 1;
        }
        if (c == 'P') {
            print_config = true;
            continue;
        }
        if (c == '?' || c == ':') {
            snprintf(err, errcap, "%s: %s (see --help)", argv[optind - 1],
                     c == ':' ? "needs a value" : "unknown option");
            return -1;
        }
        const setting_t *s = &settings[c - 1000];
        char who[64];
        snprintf(who, sizeof who, "--%s", s->flag);
        if (s->type == T_FILE) {
            size_t i = (size_t)(s - settings);
            files[i] = optarg;
            file_who[i] = s->flag;
            continue;
        }
        if (apply(cfg, s, who, s->type == T_BOOL && optarg == NULL ? "true" : optarg, err,
                  errcap) < 0)
            return -1;
    }
    if (optind < argc) {
        snprintf(err, errcap, "unexpected argument \"%s\" (see --help)", argv[optind]);
        return -1;
    }
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (files[i] == NULL)
            continue;
        char **url = strstr(settings[i].flag, "redis") != NULL ? &cfg->redis_url : &cfg->database_url;
        if (insert_password(url, file_who[i], files[i], warn, err, errcap) < 0)
            return -1;
    }
    if (check(cfg, err, errcap) < 0)
        return -1;
    if (print_config) {
        config_print(cfg, out);
        return 1;
    }
    return 0;
}

void config_free(config_t *cfg)
{
    char *base = (char *)cfg;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (settings[i].type != T_STRING && settings[i].type != T_URL)
            continue;
        char **slot = (char **)(base + settings[i].offset);
        free(*slot);
        *slot = NULL;
    }
}

void config_redact_url(const char *url, char *buf, size_t cap)
{
    if (url == NULL) {
        rq_copy(buf, cap, "");
        return;
    }
    const char *start = strstr(url, "://");
    if (start != NULL) {
        start += 3;
        size_t hostpart = strcspn(start, "/?");
        const char *at = memchr(start, '@', hostpart);
        const char *colon = at != NULL ? memchr(start, ':', (size_t)(at - start)) : NULL;
        if (colon != NULL) {
            snprintf(buf, cap, "%.*s:***%s", (int)(colon - url), url, at);
            return;
        }
        rq_copy(buf, cap, url);
        return;
    }
    /* key=value conninfo: blank out every password value */
    size_t o = 0;
    const char *p = url;
    while (*p != '\0' && o + 1 < cap) {
        if (strncmp(p, "password", 8) == 0 && (p == url || p[-1] == ' ')) {
            const char *q = p + 8;
            while (*q == ' ')
                q++;
            if (*q == '=') {
                q++;
                while (*q == ' ')
                    q++;
                o += (size_t)snprintf(buf + o, cap - o, "password=***");
                if (*q == '\'') {
                    for (q++; *q != '\0' && *q != '\''; q++)
                        if (*q == '\\' && q[1] != '\0')
                            q++;
                    if (*q == '\'')
                        q++;
                } else {
                    while (*q != '\0' && *q != ' ')
                        q++;
                }
                p = q;
                if (o >= cap)
                    o = cap - 1;
                continue;
            }
        }
        buf[o++] = *p++;
    }
    buf[o] = '\0';
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
        case T_URL:
            config_redact_url(*(char *const *)(base + s->offset), text, sizeof text);
            break;
        case T_INT:
        case T_MS:
            snprintf(text, sizeof text, "%d", *(const int *)(base + s->offset));
            break;
        case T_BYTES:
            snprintf(text, sizeof text, "%lld", (long long)*(const int64_t *)(base + s->offset));
            break;
        case T_BACKOFF: {
            size_t o = 0;
            text[0] = '\0';
            for (int k = 0; k < cfg->backoff_count && o < sizeof text; k++)
                o += (size_t)snprintf(text + o, sizeof text - o, "%s%dms", k ? "," : "",
                                      cfg->backoff_ms[k]);
            break;
        }
        case T_BOOL:
            rq_copy(text, sizeof text, *(const bool *)(base + s->offset) ? "true" : "false");
            break;
        case T_LEVEL:
            rq_copy(text, sizeof text, log_level_name((log_level_t)cfg->log_level));
            break;
        case T_FORMAT:
            rq_copy(text, sizeof text, cfg->log_json ? "json" : "logfmt");
            break;
        case T_MODE:
            rq_copy(text, sizeof text, cfg->request_mode == REQUEST_MODE_SEED ? "seed" : "runner");
            break;
        case T_FILE:
            continue;
        }
        fprintf(out, "%s=%s\n", s->env, text);
    }
}
