/*
 * Small helpers used across libretryq (and by the worker, which links its objects):
 * error sentences, bounded copies, time, the raw-text JSON nesting check and strict
 * UTF-8.
 */
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int rq_error(retryq_error_t *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

bool rq_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (cap == 0)
        return false;
    if (n >= cap) {
        memcpy(dst, src, cap - 1);
        dst[cap - 1] = '\0';
        return false;
    }
    memcpy(dst, src, n + 1);
    return true;
}

void rq_copy_utf8(char *dst, size_t cap, const char *src, size_t len)
{
    if (cap == 0)
        return;
    size_t n = len < cap ? len : cap - 1;
    /* A cut must not leave the start of a sequence without its continuation bytes. */
    if (n < len)
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void rq_who(const char *given, char *buf, size_t cap)
{
    struct passwd pw, *found = NULL;
    char scratch[1024];
    const char *user = getenv("USER");
    if (given != NULL && given[0] != '\0')
        user = given;
    else if (getpwuid_r(geteuid(), &pw, scratch, sizeof scratch, &found) == 0 && found != NULL)
        user = found->pw_name;
    rq_copy(buf, cap, user != NULL && user[0] != '\0' ? user : "unknown");
}

int rq_check_text(const char *what, const char *text, size_t max, retryq_error_t *err)
{
    size_t n = strlen(text);
    if (n > max)
        return rq_error(err, RETRYQ_ERR_INVALID, "%s: %zu bytes, at most %zu", what, n, max);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            return rq_error(err, RETRYQ_ERR_INVALID, "%s: must not contain control characters", what);
    }
    if (!rq_utf8_valid(text, n))
        return rq_error(err, RETRYQ_ERR_INVALID, "%s: must be valid UTF-8", what);
    return RETRYQ_OK;
}

int64_t rq_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rq_format_rfc3339(int64_t epoch_ms, char *buf, size_t cap)
{
    time_t secs = (time_t)(epoch_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(epoch_ms % 1000));
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int64_t rq_parse_rfc3339(const char *s)
{
    int year, mon, day, hour, min, sec, ms = 0;
    if (strlen(s) < 20 || !digits(s, 4, &year) || s[4] != '-' || !digits(s + 5, 2, &mon) ||
        s[7] != '-' || !digits(s + 8, 2, &day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &hour) || s[13] != ':' || !digits(s + 14, 2, &min) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
        return -1;
    const char *p = s + 19;
    if (*p == '.') {
        int scale = 100;
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9') {
            ms += (*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om))
            return -1;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    int64_t secs = (int64_t)timegm(&tm) - (int64_t)offset_min * 60;
    return secs * 1000 + ms;
}

size_t rq_json_too_deep(const char *text, size_t len, int limit)
{
    long long depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > limit)
                return i;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return len;
}

size_t rq_utf8_sequence(const unsigned char *s, size_t len, size_t *bad)
{
    unsigned char lead = s[0];
    size_t need, subpart = 1;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF) {
        need = 1;
    } else if (lead == 0xE0) {
        need = 2;
        lo = 0xA0; /* excludes the overlong forms */
    } else if (lead == 0xED) {
        need = 2;
        hi = 0x9F; /* excludes the surrogates */
    } else if (lead >= 0xE1 && lead <= 0xEF) {
        need = 2;
    } else if (lead == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (lead >= 0xF1 && lead <= 0xF3) {
        need = 3;
    } else if (lead == 0xF4) {
        need = 3;
        hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        goto invalid; /* continuation byte, C0, C1 or F5..FF */
    }
    for (size_t k = 1; k <= need; k++) {
        /* cut at the end, or a wrong byte: the valid prefix so far counts as one */
        if (k >= len || (k == 1 ? (s[k] < lo || s[k] > hi) : (s[k] < 0x80 || s[k] > 0xBF))) {
            subpart = k;
            goto invalid;
        }
    }
    return need + 1;
invalid:
    if (bad != NULL)
        *bad = subpart;
    return 0;
}

bool rq_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = rq_utf8_sequence(u + i, len - i, NULL);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* "1h30m" -> milliseconds; -1 when it is not a sequence of <digits><s|m|h|d|w>. */
static int64_t parse_duration(const char *s)
{
    int64_t total = 0;
    if (*s == '\0')
        return -1;
    while (*s != '\0') {
        int64_t n = 0;
        const char *digits_start = s;
        while (*s >= '0' && *s <= '9' && n < INT64_MAX / 1000000000)
            n = n * 10 + (*s++ - '0');
        if (s == digits_start)
            return -1;
        int64_t unit;
        switch (*s++) {
        case 's': unit = 1000; break;
        case 'm': unit = 60 * 1000; break;
        case 'h': unit = 3600 * 1000; break;
        case 'd': unit = 86400 * 1000; break;
        case 'w': unit = 7 * 86400 * 1000; break;
        default: return -1;
        }
        if (n > (INT64_MAX / 4 - total) / unit)
            return -1;
        total += n * unit;
    }
    return total;
}

int retryq_parse_time(const char *text, int64_t now_ms, int64_t *epoch_ms, retryq_error_t *err)
{
    int64_t ms = text != NULL ? rq_parse_rfc3339(text) : -1;
    if (ms < 0 && text != NULL) {
        int64_t ago = parse_duration(text);
        ms = ago >= 0 && ago <= now_ms ? now_ms - ago : -1;
    }
    if (ms < 0)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "'%s' is neither an RFC 3339 time (2026-11-29T08:00:00Z) nor a duration "
                        "(90s, 15m, 2h, 1d, 1w, 1h30m)",
                        text != NULL ? text : "(null)");
    *epoch_ms = ms;
    return RETRYQ_OK;
}

const char *retryq_code_name(int code)
{
    switch (code) {
    case RETRYQ_OK: return "ok";
    case RETRYQ_ERR_INVALID: return "invalid";
    case RETRYQ_ERR_NOT_FOUND: return "not_found";
    case RETRYQ_ERR_NOT_RETRYABLE: return "not_retryable";
    case RETRYQ_ERR_MAX_RETRIES: return "max_retries";
    case RETRYQ_ERR_REDIS: return "redis_unavailable";
    case RETRYQ_ERR_DATABASE: return "database_unavailable";
    case RETRYQ_ERR_NOMEM: return "out_of_memory";
    case RETRYQ_ERR_TOO_LARGE: return "too_large";
    case RETRYQ_ERR_SCHEMA: return "schema_not_migrated";
    default: return "unknown";
    }
}

const char *retryq_version(void)
{
    return RETRYQ_VERSION_STRING;
}
