/*
 * Logging (see log.h): one line per event, logfmt or JSON, written with one fwrite so
 * lines never interleave. The logger's settings are process-wide and set once in main
 * before the loop starts: the one piece of static state in the worker, as in syslog.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "log.h"

static struct {
    log_level_t level;
    bool json;
    FILE *out;
    char worker[256];
} logger = {LOG_LEVEL_INFO, false, NULL, ""};

static const char *const names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *text)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(text, names[i]) == 0)
            return i;
    if (strcasecmp(text, "warning") == 0)
        return LOG_LEVEL_WARN;
    return -1;
}

const char *log_level_name(log_level_t level)
{
    return level >= LOG_LEVEL_DEBUG && level <= LOG_LEVEL_ERROR ? names[level] : "info";
}

void log_setup(log_level_t level, bool json, FILE *out)
{
    logger.level = level;
    logger.json = json;
    logger.out = out;
    if (out != NULL)
        setvbuf(out, NULL, _IOLBF, 0);
}

void log_set_worker(const char *worker_id)
{
    rq_copy(logger.worker, sizeof logger.worker, worker_id != NULL ? worker_id : "");
}

bool log_enabled(log_level_t level)
{
    return level >= logger.level;
}

/* A growing line buffer; text past the cap is cut (a log line is never worth more). */
typedef struct line {
    char buf[8192];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    if (n > sizeof l->buf - 2 - l->len)
        n = sizeof l->buf - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Escapes for a JSON string or a quoted logfmt value (the same rules serve both). */
static void put_escaped(line_t *l, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(l, esc, 2);
        } else if (c == '\n') {
            put(l, "\\n", 2);
        } else if (c == '\r') {
            put(l, "\\r", 2);
        } else if (c == '\t') {
            put(l, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(l, esc, 6);
        } else {
            put(l, s, 1);
        }
    }
}

static bool needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (; *s != '\0'; s++)
        if (*s == ' ' || *s == '=' || *s == '"' || *s == '\\' || iscntrl((unsigned char)*s))
            return true;
    return false;
}

static void field(line_t *l, const char *key, const char *value, bool first)
{
    if (logger.json) {
        puts_(l, first ? "{\"" : ",\"");
        puts_(l, key);
        puts_(l, "\":\"");
        put_escaped(l, value);
        puts_(l, "\"");
        return;
    }
    if (!first)
        puts_(l, " ");
    puts_(l, key);
    puts_(l, "=");
    if (needs_quotes(value)) {
        puts_(l, "\"");
        put_escaped(l, value);
        puts_(l, "\"");
    } else {
        puts_(l, value);
    }
}

static void number(line_t *l, const char *key, long long value)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", value);
    if (logger.json) {
        puts_(l, ",\"");
        puts_(l, key);
        puts_(l, "\":");
        puts_(l, text);
    } else {
        field(l, key, text, false);
    }
}

void log_event(log_level_t level, int64_t execution_id, int32_t attempt, const char *event,
               const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    FILE *out = logger.out != NULL ? logger.out : stderr;
    char ts[48], msg[4096];
    rq_format_rfc3339(rq_now_ms(), ts, sizeof ts);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    line_t l;
    l.len = 0;
    field(&l, "ts", ts, true);
    field(&l, "level", log_level_name(level), false);
    if (logger.worker[0] != '\0')
        field(&l, "worker", logger.worker, false);
    field(&l, "event", event, false);
    if (execution_id > 0)
        number(&l, "execution_id", (long long)execution_id);
    if (attempt > 0)
        number(&l, "attempt", attempt);
    field(&l, "msg", msg, false);
    if (logger.json)
        puts_(&l, "}");
    l.buf[l.len++] = '\n';
    fwrite(l.buf, 1, l.len, out);
}
