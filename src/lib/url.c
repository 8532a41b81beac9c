/*
 * Redis URLs: parsing of redis:// and unix:// into retryq_redis_url_t, and redaction of
 * the password for logs. Messages never repeat the URL, so a password cannot leak
 * through an error.
 *
 *   redis://[[user]:password@]host[:port][/db]     host may be an IPv6 literal in []
 *   unix://[[user]:password@]/path/to/socket[?db=N]
 *
 * The authority ends at the first '/', '?' or '#', and user information at its last
 * '@': a password holding '/', '?', '#' or ':' must percent-encode them. User, password,
 * host (an IPv6 zone is written %25) and socket path are percent-decoded. rediss:// is
 * refused: hiredis 0.14 has no TLS.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

static bool has_prefix(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s..end (percent-escapes) into dst; `what` names the part in messages. */
static int percent_decode(const char *s, const char *end, char *dst, size_t cap, const char *what,
                          retryq_error_t *err)
{
    size_t n = 0;
    while (s < end) {
        int c = (unsigned char)*s++;
        if (c == '%') {
            int hi = end - s >= 2 ? hex_value(s[0]) : -1, lo = end - s >= 2 ? hex_value(s[1]) : -1;
            if (hi < 0 || lo < 0 || (hi | lo) == 0)
                return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: bad percent-escape in the %s", what);
            c = hi * 16 + lo;
            s += 2;
        }
        if (n + 1 >= cap)
            return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: the %s is longer than %zu bytes",
                            what, cap - 1);
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    return RETRYQ_OK;
}

/* Decimal digits s..end within lo..hi. */
static bool parse_number(const char *s, const char *end, long lo, long hi, int *out)
{
    long v = 0;
    if (s == end)
        return false;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9' || v > hi)
            return false;
        v = v * 10 + (*s - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

/* "[user]:password@" at the start of start..end, if any; *rest is set past the '@'. */
static int parse_userinfo(const char *start, const char *end, retryq_redis_url_t *out,
                          const char **rest, retryq_error_t *err)
{
    const char *at = NULL;
    for (const char *p = start; p < end; p++)
        if (*p == '@')
            at = p;
    *rest = start;
    if (at == NULL)
        return RETRYQ_OK;
    *rest = at + 1;
    const char *colon = memchr(start, ':', (size_t)(at - start));
    if (colon == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "redis URL: user information must be [user]:password@");
    int rc = percent_decode(start, colon, out->user, sizeof out->user, "user", err);
    if (rc == RETRYQ_OK)
        rc = percent_decode(colon + 1, at, out->password, sizeof out->password, "password", err);
    if (rc == RETRYQ_OK && out->password[0] == '\0')
        rc = rq_error(err, RETRYQ_ERR_INVALID, "redis URL: the password is empty");
    return rc;
}

/* host[:port] or [v6][:port] in s..end. */
static int parse_host_port(const char *s, const char *end, retryq_redis_url_t *out,
                           retryq_error_t *err)
{
    const char *host = s, *host_end, *port = NULL;
    if (s < end && *s == '[') {
        const char *close = memchr(s, ']', (size_t)(end - s));
        if (close == NULL || (close + 1 < end && close[1] != ':'))
            return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: bad IPv6 address (write [::1]:6379)");
        host = s + 1;
        host_end = close;
        port = close + 1 < end ? close + 2 : NULL;
    } else {
        const char *colon = memchr(s, ':', (size_t)(end - s));
        host_end = colon != NULL ? colon : end;
        port = colon != NULL ? colon + 1 : NULL;
    }
    if (host_end == host)
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: missing host");
    int rc = percent_decode(host, host_end, out->host, sizeof out->host, "host", err);
    if (rc != RETRYQ_OK)
        return rc;
    if (port != NULL && !parse_number(port, end, 1, 65535, &out->port))
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: port must be a number from 1 to 65535");
    return RETRYQ_OK;
}

static int parse_tcp(const char *s, retryq_redis_url_t *out, retryq_error_t *err)
{
    const char *end = s + strcspn(s, "/?#"), *host;
    int rc = parse_userinfo(s, end, out, &host, err);
    if (rc == RETRYQ_OK)
        rc = parse_host_port(host, end, out, err);
    if (rc != RETRYQ_OK)
        return rc;
    if (*end == '/') {
        const char *db = end + 1, *db_end = db + strcspn(db, "?#");
        if (db != db_end && !parse_number(db, db_end, 0, INT_MAX, &out->db))
            return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: the database must be a number (/0)");
        end = db_end;
    }
    if (*end != '\0')
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "redis URL: unexpected '%c' part (redis:// takes the database as /N)", *end);
    return RETRYQ_OK;
}

static int parse_unix(const char *s, retryq_redis_url_t *out, retryq_error_t *err)
{
    const char *slash = strchr(s, '/'), *rest;
    if (slash == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: missing socket path (unix:///path/to/socket)");
    if (slash > s && slash[-1] != '@')
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "redis URL: a unix:// URL is unix://[[user]:password@]/path/to/socket");
    int rc = parse_userinfo(s, slash, out, &rest, err);
    const char *path_end = slash + strcspn(slash, "?");
    if (rc == RETRYQ_OK)
        rc = percent_decode(slash, path_end, out->path, sizeof out->path, "socket path", err);
    if (rc != RETRYQ_OK || *path_end == '\0')
        return rc;
    if (strncmp(path_end, "?db=", 4) != 0 ||
        !parse_number(path_end + 4, path_end + strlen(path_end), 0, INT_MAX, &out->db))
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: the only query of unix:// is ?db=N");
    return RETRYQ_OK;
}

int retryq_redis_url_parse(const char *url, retryq_redis_url_t *out, retryq_error_t *err)
{
    if (url == NULL || out == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: missing");
    memset(out, 0, sizeof *out);
    if (has_prefix(url, "rediss://"))
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "redis URL: rediss:// (TLS) is not supported because hiredis 0.14 has no "
                        "TLS; reach a TLS Redis through a local tunnel (see docs/operations.md)");
    if (has_prefix(url, "redis://")) {
        out->port = 6379;
        return parse_tcp(url + strlen("redis://"), out, err);
    }
    if (has_prefix(url, "unix://")) {
        out->is_unix = true;
        return parse_unix(url + strlen("unix://"), out, err);
    }
    return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: must start with redis:// or unix://");
}

void retryq_redis_url_redact(const char *url, char *buf, size_t cap)
{
    if (buf == NULL || cap == 0)
        return;
    if (url == NULL) {
        buf[0] = '\0';
        return;
    }
    const char *scheme = strstr(url, "://");
    const char *authority = scheme != NULL ? scheme + 3 : url;
    const char *end = authority + strcspn(authority, "/?#"), *at = NULL;
    for (const char *p = authority; p < end; p++)
        if (*p == '@')
            at = p;
    /* A password with an unencoded '/', '?' or '#' ends the authority early (the URL is
     * then refused, and the refusal may be logged): when a ':' precedes the last '@' of
     * the whole URL, everything up to that '@' is hidden. */
    const char *last = strrchr(authority, '@');
    if (last != NULL && last >= end && memchr(authority, ':', (size_t)(last - authority)) != NULL)
        at = last;
    if (at == NULL) {
        rq_copy(buf, cap, url);
        return;
    }
    /* Keep the user, hide the password; hide the whole user part when it has no ':'. */
    const char *colon = memchr(authority, ':', (size_t)(at - authority));
    const char *keep_end = colon != NULL ? colon + 1 : authority;
    snprintf(buf, cap, "%.*s***%s", (int)(keep_end - url), url, at);
}
