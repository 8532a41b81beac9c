/*
 * Logging (see log.h): one line per event, logfmt or JSON. A line is built whole in a
 * buffer and written with one fwrite to a line-buffered stream, so lines never
 * interleave. The logger's settings are process-wide and set once in main before the
 * loop starts: the one piece of static state in the worker, as with syslog.
 *
 * logfmt: keys are bare; a value is quoted when it is empty or holds a space, '=', '"',
 * '\' or a control character, and inside quotes '"', '\' and control characters are
 * escaped (\" \\ \n \r \t \u00XX). JSON: one object per line, strings escaped the same
 * way, execution_id and attempt as numbers. Either way the line is valid UTF-8: bytes
 * that are not (a router answer quoted in a message, say) become U+FFFD.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "log.h"
#include "text.h"

#define LOG_MSG_MAX 4096   /* bytes of one formatted message */
#define LOG_LINE_MAX 32768 /* room for every field escaped at worst (6 bytes per byte) */
#define LOG_LINE_RESERVE 8 /* kept free for the closing quote, "}" and "\n" */

static struct {
    log_level_t level;
    bool json;
    FILE *out;
    char worker[256];
} logger = {LOG_LEVEL_INFO, false, NULL, ""};

static const char *const names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *text)
{
    if (text == NULL)
        return -1;
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
    /* Call before anything is written to `out` (C11 7.21.5.6). */
    if (out != NULL)
        setvbuf(out, NULL, _IOLBF, 0);
}

void log_set_worker(const char *worker_id)
{
    text_copy(logger.worker, sizeof logger.worker, worker_id != NULL ? worker_id : "");
}

bool log_enabled(log_level_t level)
{
    return level >= logger.level;
}

typedef struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool cut; /* a value did not fit */
} line_t;

/* Appends n bytes when they fit whole below the reserve; false (nothing written) if not. */
static bool put(line_t *l, const char *s, size_t n)
{
    if (l->len + n > sizeof l->buf - LOG_LINE_RESERVE) {
        l->cut = true;
        return false;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

/* Length of the UTF-8 sequence led by c (s is valid UTF-8 here). */
static size_t sequence_length(unsigned char c)
{
    return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
}

/* Escapes valid UTF-8 for a JSON string or a quoted logfmt value (the same rules serve
 * both); stops at a whole character when the line is full. */
static void put_escaped(line_t *l, const char *s)
{
    while (*s != '\0') {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        size_t n = sequence_length(c);
        bool ok;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            ok = put(l, esc, 2);
        } else if (c == '\n') {
            ok = put(l, "\\n", 2);
        } else if (c == '\r') {
            ok = put(l, "\\r", 2);
        } else if (c == '\t') {
            ok = put(l, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            ok = put(l, esc, 6);
        } else {
            ok = put(l, s, n);
        }
        if (!ok)
            return;
        s += n;
    }
}

static bool needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == ' ' || c == '=' || c == '"' || c == '\\' || c < 0x20 || c == 0x7f)
            return true;
    }
    return false;
}

/* One key/value pair; value may be any bytes (made valid UTF-8 first). The opening
 * (separator, key, quote) goes in whole or not at all; once a value was cut, later
 * fields are dropped, so the line stays well-formed. */
static void field(line_t *l, const char *key, const char *value, bool first)
{
    if (l->cut)
        return;
    char *clean = NULL;
    if (!text_is_clean(value, strlen(value))) {
        clean = text_sanitize(value, strlen(value), NULL);
        value = clean != NULL ? clean : "(unprintable)";
    }
    bool quoted = logger.json || needs_quotes(value);
    char open[128];
    snprintf(open, sizeof open, "%s%s%s%s",
             logger.json ? (first ? "{\"" : ",\"") : (first ? "" : " "), key,
             logger.json ? "\":" : "=", quoted ? "\"" : "");
    if (put(l, open, strlen(open))) {
        put_escaped(l, value);
        if (quoted)
            l->buf[l->len++] = '"'; /* inside the reserve: the string is always closed */
    }
    free(clean);
}

static void number(line_t *l, const char *key, long long value)
{
    if (!logger.json) {
        char text[24];
        snprintf(text, sizeof text, "%lld", value);
        field(l, key, text, false);
        return;
    }
    if (l->cut)
        return;
    char pair[96];
    snprintf(pair, sizeof pair, ",\"%s\":%lld", key, value);
    put(l, pair, strlen(pair));
}

/* One line: the fixed fields, then `pairs` (key, value, ..., NULL), then msg. */
static void log_line(log_level_t level, int64_t execution_id, int32_t attempt, const char *event,
                     const char *const *pairs, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

static void log_line(log_level_t level, int64_t execution_id, int32_t attempt, const char *event,
                     const char *const *pairs, const char *fmt, va_list ap)
{
    FILE *out = logger.out != NULL ? logger.out : stderr;
    char ts[48], msg[LOG_MSG_MAX];
    rq_format_rfc3339(rq_now_ms(), ts, sizeof ts);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0) {
        rq_copy(msg, sizeof msg, "(message could not be formatted)");
    } else if ((size_t)n >= sizeof msg) {
        /* cut at a character boundary and say so */
        size_t len = text_truncate(msg, sizeof msg - 4);
        memcpy(msg + len, "...", 4);
    }

    line_t l;
    l.len = 0;
    l.cut = false;
    field(&l, "ts", ts, true);
    field(&l, "level", log_level_name(level), false);
    if (logger.worker[0] != '\0')
        field(&l, "worker", logger.worker, false);
    field(&l, "event", event != NULL ? event : "", false);
    if (execution_id > 0)
        number(&l, "execution_id", (long long)execution_id);
    if (attempt > 0)
        number(&l, "attempt", attempt);
    for (size_t i = 0; pairs != NULL && pairs[i] != NULL && pairs[i + 1] != NULL; i += 2)
        field(&l, pairs[i], pairs[i + 1], false);
    field(&l, "msg", msg, false);
    if (logger.json)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    fwrite(l.buf, 1, l.len, out);
}

void log_event(log_level_t level, int64_t execution_id, int32_t attempt, const char *event,
               const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, execution_id, attempt, event, NULL, fmt, ap);
    va_end(ap);
}

void log_fields(log_level_t level, int64_t execution_id, int32_t attempt, const char *event,
                const char *const *pairs, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, execution_id, attempt, event, pairs, fmt, ap);
    va_end(ap);
}
