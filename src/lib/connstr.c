/*
 * Connection strings (see connstr.h): Redis URLs read by retryq's own parser, PostgreSQL
 * conninfo read by libpq's, and the blunt rule for text that neither accepts. The router
 * URL is read by libcurl in src/worker/connstr_router.c.
 *
 * Redis URLs:
 *   redis://[[user]:password@]host[:port][/db]     host may be an IPv6 literal in []
 *   unix://[[user]:password@]/path/to/socket[?db=N]
 *   redis+sentinel://[[user]:password@]h1[:p1][,h2[:p2]...]/MASTER[/db]   (ports 26379)
 *   redis+cluster://[[user]:password@]h1[:p1][,h2[:p2]...]                (ports 6379, no db)
 * The authority ends at the first '/', '?' or '#', and user information at its last '@':
 * a password holding '/', '?', '#' or ':' must percent-encode them. User, password, host
 * (an IPv6 zone is written %25) and socket path are percent-decoded. rediss:// is refused:
 * hiredis 0.14 has no TLS.
 *
 * PostgreSQL: PQconninfoParse is the only reader. What it marks secret (dispchar "*":
 * password, sslpassword) is never written back; a string is rebuilt from its options in
 * libpq's own quoting (key=value) or percent-encoding (URI), so the rebuilt text parses to
 * the same options.
 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "connstr.h"
#include "internal.h"

/* ------------------------------------------------------------------ bounded output */

/* Appends to a caller's buffer, always NUL-terminated; what does not fit is cut. */
typedef struct out {
    char *buf;
    size_t cap, len;
} out_t;

static out_t out_start(char *buf, size_t cap)
{
    out_t o = {buf, cap, 0};
    if (cap > 0)
        buf[0] = '\0';
    return o;
}

static void put_n(out_t *o, const char *s, size_t n)
{
    if (o->cap == 0)
        return;
    size_t room = o->cap - 1 - o->len;
    size_t k = n < room ? n : room;
    memcpy(o->buf + o->len, s, k);
    o->len += k;
    o->buf[o->len] = '\0';
}

static void put(out_t *o, const char *s)
{
    put_n(o, s, strlen(s));
}

/* n bytes of s with every byte but the RFC 3986 unreserved ones and those in `keep` as
 * %XX. */
static void put_encoded_n(out_t *o, const char *s, size_t n, const char *keep)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const char *end = s + n; s < end; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || (c != 0 && strchr("-._~", c) != NULL) ||
            (c != 0 && keep != NULL && strchr(keep, c) != NULL)) {
            put_n(o, s, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            put_n(o, esc, 3);
        }
    }
}

static void put_encoded(out_t *o, const char *s, const char *keep)
{
    put_encoded_n(o, s, strlen(s), keep);
}

/* ------------------------------------------------------------------ any text */

bool connstr_redact_text(const char *text, char *buf, size_t cap)
{
    out_t o = out_start(buf, cap);
    if (text == NULL)
        return false;
    /* the user information's password: hide_from..hide_to */
    const char *scheme = strstr(text, "://");
    const char *at = scheme != NULL ? strrchr(scheme + 3, '@') : NULL;
    const char *colon = at != NULL ? memchr(scheme + 3, ':', (size_t)(at - (scheme + 3))) : NULL;
    const char *hide_from = colon != NULL ? colon + 1 : NULL, *hide_to = colon != NULL ? at : NULL;
    /* the first "password" outside it ("password" holds no ':' or '@', so an occurrence is
     * either inside that range or outside it) */
    const char *word = strcasestr(text, "password");
    if (word != NULL && hide_from != NULL && word >= hide_from && word < hide_to)
        word = strcasestr(hide_to, "password");
    const char *p = text;
    if (hide_from != NULL && (word == NULL || word > hide_to)) {
        put_n(&o, text, (size_t)(hide_from - text));
        put(&o, "***");
        p = hide_to;
    }
    if (word == NULL) {
        put(&o, p);
        return hide_from != NULL;
    }
    const char *tail = word + 8;
    tail += strspn(tail, " \t\n\r\f\v=");
    put_n(&o, p, (size_t)(tail - p));
    put(&o, "***");
    return true;
}

/* ------------------------------------------------------------------ Redis: parsing */

typedef struct redis_parse {
    retryq_redis_url_t *out;
    unsigned flags;
    bool holds_password; /* the user information has a ':' */
    retryq_error_t *err;
} redis_parse_t;

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

/* "[user]:password@" at the start of start..end, if any (with the password elsewhere also
 * "user@"); *rest is set past the '@'. */
static int parse_userinfo(redis_parse_t *p, const char *start, const char *end, const char **rest)
{
    retryq_redis_url_t *out = p->out;
    const char *at = NULL;
    for (const char *c = start; c < end; c++)
        if (*c == '@')
            at = c;
    *rest = start;
    if (at == NULL)
        return RETRYQ_OK;
    *rest = at + 1;
    const char *colon = memchr(start, ':', (size_t)(at - start));
    p->holds_password = colon != NULL;
    if (colon == NULL && (p->flags & CONNSTR_REDIS_PASSWORD_ELSEWHERE) != 0)
        return percent_decode(start, at, out->user, sizeof out->user, "user", p->err);
    if (colon == NULL)
        return rq_error(p->err, RETRYQ_ERR_INVALID,
                        "redis URL: user information must be [user]:password@");
    int rc = percent_decode(start, colon, out->user, sizeof out->user, "user", p->err);
    if (rc == RETRYQ_OK)
        rc = percent_decode(colon + 1, at, out->password, sizeof out->password, "password", p->err);
    /* an empty password is refused, unless the URL is refused for holding one at all */
    if (rc == RETRYQ_OK && out->password[0] == '\0' &&
        (p->flags & CONNSTR_REDIS_PASSWORD_ELSEWHERE) == 0)
        rc = rq_error(p->err, RETRYQ_ERR_INVALID, "redis URL: the password is empty");
    return rc;
}

/* One endpoint, host[:port] or [v6][:port], in s..end (the port stays as it was when the
 * item has none). */
static int parse_host_port(const char *s, const char *end, char *host, size_t host_cap, int *port,
                           retryq_error_t *err)
{
    const char *name = s, *name_end, *port_text = NULL;
    if (s < end && *s == '[') {
        const char *close = memchr(s, ']', (size_t)(end - s));
        if (close == NULL || (close + 1 < end && close[1] != ':'))
            return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: bad IPv6 address (write [::1]:6379)");
        name = s + 1;
        name_end = close;
        port_text = close + 1 < end ? close + 2 : NULL;
    } else {
        const char *colon = memchr(s, ':', (size_t)(end - s));
        name_end = colon != NULL ? colon : end;
        port_text = colon != NULL ? colon + 1 : NULL;
    }
    if (name_end == name)
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: missing host");
    int rc = percent_decode(name, name_end, host, host_cap, "host", err);
    if (rc != RETRYQ_OK)
        return rc;
    if (port_text != NULL && !parse_number(port_text, end, 1, 65535, port))
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: port must be a number from 1 to 65535");
    return RETRYQ_OK;
}

static int parse_tcp(redis_parse_t *p, const char *s)
{
    retryq_redis_url_t *out = p->out;
    const char *end = s + strcspn(s, "/?#"), *host;
    int rc = parse_userinfo(p, s, end, &host);
    if (rc == RETRYQ_OK)
        rc = parse_host_port(host, end, out->host, sizeof out->host, &out->port, p->err);
    if (rc != RETRYQ_OK)
        return rc;
    if (*end == '/') {
        const char *db = end + 1, *db_end = db + strcspn(db, "?#");
        if (db != db_end && !parse_number(db, db_end, 0, INT_MAX, &out->db))
            return rq_error(p->err, RETRYQ_ERR_INVALID, "redis URL: the database must be a number (/0)");
        end = db_end;
    }
    if (*end != '\0')
        return rq_error(p->err, RETRYQ_ERR_INVALID,
                        "redis URL: unexpected '%c' part (redis:// takes the database as /N)", *end);
    return RETRYQ_OK;
}

/* A master name as Sentinel configurations write them: 1..127 bytes of letters, digits,
 * '-', '_' and '.' (no decoding, so it is shown back as it was given). */
static bool valid_master_name(const char *s, const char *end, size_t cap)
{
    if (s == end || (size_t)(end - s) >= cap)
        return false;
    for (; s < end; s++)
        if (!isalnum((unsigned char)*s) && strchr("-_.", *s) == NULL)
            return false;
    return true;
}

/* h1[:p1][,h2[:p2]...] in item..end into the endpoint list (the first also in host/port);
 * `what` names an item in errors. */
static int parse_endpoints(redis_parse_t *p, const char *item, const char *end, int default_port,
                           const char *what)
{
    retryq_redis_url_t *out = p->out;
    for (;;) {
        const char *comma = memchr(item, ',', (size_t)(end - item));
        const char *item_end = comma != NULL ? comma : end;
        if (item == item_end)
            return rq_error(p->err, RETRYQ_ERR_INVALID,
                            "redis URL: empty %s address in the list (host1:port1,host2:port2)", what);
        if (out->endpoint_count == RETRYQ_REDIS_MAX_ENDPOINTS)
            return rq_error(p->err, RETRYQ_ERR_INVALID, "redis URL: more than %d %ss",
                            RETRYQ_REDIS_MAX_ENDPOINTS, what);
        retryq_redis_endpoint_t *e = &out->endpoints[out->endpoint_count];
        e->port = default_port;
        int rc = parse_host_port(item, item_end, e->host, sizeof e->host, &e->port, p->err);
        if (rc != RETRYQ_OK)
            return rc;
        out->endpoint_count++;
        if (comma == NULL)
            break;
        item = comma + 1;
    }
    rq_copy(out->host, sizeof out->host, out->endpoints[0].host);
    out->port = out->endpoints[0].port;
    return RETRYQ_OK;
}

/* redis+cluster://[userinfo@]h1[:p1][,h2[:p2]...]: seed nodes (ports 6379). A Cluster
 * has only database 0, so a /db part is refused rather than ignored. */
static int parse_cluster(redis_parse_t *p, const char *s)
{
    const char *end = s + strcspn(s, "/?#"), *item;
    int rc = parse_userinfo(p, s, end, &item);
    if (rc == RETRYQ_OK)
        rc = parse_endpoints(p, item, end, 6379, "cluster node");
    if (rc != RETRYQ_OK)
        return rc;
    if (*end == '/' && end[1] == '\0')
        end++;
    if (*end == '/')
        return rq_error(p->err, RETRYQ_ERR_INVALID,
                        "redis URL: redis+cluster:// takes no database (Redis Cluster has only "
                        "database 0): write redis+cluster://host1:port1,host2:port2");
    if (*end != '\0')
        return rq_error(p->err, RETRYQ_ERR_INVALID,
                        "redis URL: unexpected '%c' part (redis+cluster:// is a list of "
                        "host:port)", *end);
    return RETRYQ_OK;
}

/* redis+sentinel://[userinfo@]h1[:p1][,h2[:p2]...]/MASTER[/db]: the sentinels in
 * endpoints (the first also in host/port), the master name, the data nodes' database. */
static int parse_sentinel(redis_parse_t *p, const char *s)
{
    retryq_redis_url_t *out = p->out;
    const char *end = s + strcspn(s, "/?#"), *item;
    int rc = parse_userinfo(p, s, end, &item);
    if (rc == RETRYQ_OK)
        rc = parse_endpoints(p, item, end, 26379, "sentinel");
    if (rc != RETRYQ_OK)
        return rc;
    const char *name = end + (*end == '/'), *name_end = name + strcspn(name, "/?#");
    if (*end != '/' || !valid_master_name(name, name_end, sizeof out->master))
        return rq_error(p->err, RETRYQ_ERR_INVALID,
                        "redis URL: redis+sentinel:// needs the master name after the sentinels "
                        "(redis+sentinel://host:26379/mymaster; letters, digits, '-', '_', '.')");
    memcpy(out->master, name, (size_t)(name_end - name));
    out->master[name_end - name] = '\0';
    end = name_end;
    if (*end == '/') {
        const char *db = end + 1, *db_end = db + strcspn(db, "?#");
        if (db != db_end && !parse_number(db, db_end, 0, INT_MAX, &out->db))
            return rq_error(p->err, RETRYQ_ERR_INVALID,
                            "redis URL: the database must be a number (/mymaster/0)");
        end = db_end;
    }
    if (*end != '\0')
        return rq_error(p->err, RETRYQ_ERR_INVALID,
                        "redis URL: unexpected '%c' part (redis+sentinel:// ends with /MASTER[/db])",
                        *end);
    return RETRYQ_OK;
}

static int parse_unix(redis_parse_t *p, const char *s)
{
    retryq_redis_url_t *out = p->out;
    const char *slash = strchr(s, '/'), *rest;
    if (slash == NULL)
        return rq_error(p->err, RETRYQ_ERR_INVALID, "redis URL: missing socket path (unix:///path/to/socket)");
    if (slash > s && slash[-1] != '@')
        return rq_error(p->err, RETRYQ_ERR_INVALID,
                        "redis URL: a unix:// URL is unix://[[user]:password@]/path/to/socket");
    int rc = parse_userinfo(p, s, slash, &rest);
    const char *path_end = slash + strcspn(slash, "?");
    if (rc == RETRYQ_OK)
        rc = percent_decode(slash, path_end, out->path, sizeof out->path, "socket path", p->err);
    if (rc != RETRYQ_OK || *path_end == '\0')
        return rc;
    if (strncmp(path_end, "?db=", 4) != 0 ||
        !parse_number(path_end + 4, path_end + strlen(path_end), 0, INT_MAX, &out->db))
        return rq_error(p->err, RETRYQ_ERR_INVALID, "redis URL: the only query of unix:// is ?db=N");
    return RETRYQ_OK;
}

int connstr_redis_parse(const char *url, unsigned flags, retryq_redis_url_t *out,
                        retryq_error_t *err)
{
    if (url == NULL || out == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: missing");
    memset(out, 0, sizeof *out);
    redis_parse_t p = {.out = out, .flags = flags, .err = err};
    int rc;
    if (has_prefix(url, "rediss://"))
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "redis URL: rediss:// (TLS) is not supported because hiredis 0.14 has no "
                        "TLS; reach a TLS Redis through a local tunnel (see docs/operations.md)");
    if (has_prefix(url, "redis://")) {
        out->port = 6379;
        rc = parse_tcp(&p, url + strlen("redis://"));
    } else if (has_prefix(url, "redis+sentinel://")) {
        out->is_sentinel = true;
        rc = parse_sentinel(&p, url + strlen("redis+sentinel://"));
    } else if (has_prefix(url, "redis+cluster://")) {
        out->is_cluster = true;
        rc = parse_cluster(&p, url + strlen("redis+cluster://"));
    } else if (has_prefix(url, "unix://")) {
        out->is_unix = true;
        rc = parse_unix(&p, url + strlen("unix://"));
    } else {
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "redis URL: must start with redis://, redis+sentinel://, redis+cluster:// or unix://");
    }
    if (rc == RETRYQ_OK && p.holds_password && (flags & CONNSTR_REDIS_PASSWORD_ELSEWHERE) != 0)
        return CONNSTR_REDIS_HOLDS_PASSWORD;
    return rc;
}

int retryq_redis_url_parse(const char *url, retryq_redis_url_t *out, retryq_error_t *err)
{
    return connstr_redis_parse(url, 0, out, err);
}

int connstr_redis_set_password(retryq_redis_url_t *u, const char *password, retryq_error_t *err)
{
    if (!rq_copy(u->password, sizeof u->password, password)) {
        memset(u->password, 0, sizeof u->password);
        return rq_error(err, RETRYQ_ERR_INVALID, "redis URL: the password is longer than %zu bytes",
                        sizeof u->password - 1);
    }
    return RETRYQ_OK;
}

/* ------------------------------------------------------------------ Redis: showing, AUTH */

void connstr_redis_format(const retryq_redis_url_t *u, char *buf, size_t cap)
{
    out_t o = out_start(buf, cap);
    put(&o, u->is_sentinel  ? "redis+sentinel://"
            : u->is_cluster ? "redis+cluster://"
            : u->is_unix    ? "unix://"
                            : "redis://");
    if (u->user[0] != '\0' || u->password[0] != '\0') {
        put_encoded(&o, u->user, NULL);
        put(&o, u->password[0] != '\0' ? ":***@" : "@");
    }
    char number[16];
    if (u->is_sentinel || u->is_cluster) {
        for (int i = 0; i < u->endpoint_count; i++) {
            const retryq_redis_endpoint_t *e = &u->endpoints[i];
            bool v6 = strchr(e->host, ':') != NULL;
            put(&o, i > 0 ? "," : "");
            put(&o, v6 ? "[" : "");
            put_encoded(&o, e->host, v6 ? ":" : NULL);
            put(&o, v6 ? "]" : "");
            snprintf(number, sizeof number, ":%d", e->port);
            put(&o, number);
        }
        if (u->is_cluster)
            return;
        put(&o, "/");
        put(&o, u->master);
        snprintf(number, sizeof number, "/%d", u->db);
    } else if (u->is_unix) {
        put_encoded(&o, u->path, "/");
        snprintf(number, sizeof number, "?db=%d", u->db);
    } else {
        bool v6 = strchr(u->host, ':') != NULL;
        put(&o, v6 ? "[" : "");
        put_encoded(&o, u->host, v6 ? ":" : NULL);
        put(&o, v6 ? "]" : "");
        snprintf(number, sizeof number, ":%d", u->port);
        put(&o, number);
        snprintf(number, sizeof number, "/%d", u->db);
    }
    if (u->db != 0)
        put(&o, number);
}

int connstr_redis_set_sentinel_password(retryq_redis_url_t *u, const char *password,
                                        retryq_error_t *err)
{
    if (!u->is_sentinel)
        return rq_error(err, RETRYQ_ERR_INVALID,
                        "a sentinel password needs a redis+sentinel:// URL");
    if (!rq_copy(u->sentinel_password, sizeof u->sentinel_password, password)) {
        memset(u->sentinel_password, 0, sizeof u->sentinel_password);
        return rq_error(err, RETRYQ_ERR_INVALID, "the sentinel password is longer than %zu bytes",
                        sizeof u->sentinel_password - 1);
    }
    return RETRYQ_OK;
}

int connstr_redis_sentinel_auth(const retryq_redis_url_t *u, const char *argv[2])
{
    if (u->sentinel_password[0] == '\0')
        return 0;
    argv[0] = "AUTH";
    argv[1] = u->sentinel_password;
    return 2;
}

void connstr_redis_address(const char *host, int port, char *buf, size_t cap)
{
    snprintf(buf, cap, strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d", host, port);
}

int connstr_redis_auth(const retryq_redis_url_t *u, const char *argv[3])
{
    if (u->password[0] == '\0')
        return 0;
    int n = 0;
    argv[n++] = "AUTH";
    if (u->user[0] != '\0')
        argv[n++] = u->user;
    argv[n++] = u->password;
    return n;
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

/* ------------------------------------------------------------------ PostgreSQL */

struct connstr_pg {
    PQconninfoOption *options; /* libpq's reading of text */
    char *text;                /* as given */
    size_t scheme_len;         /* "postgresql://" or "postgres://" when a URI, else 0 */
    char *password;            /* given apart (a password file), NULL when none */
};

/* libpq's own test (uri_prefix_length in fe-connect.c): case-sensitive. */
static size_t pg_uri_prefix(const char *text)
{
    if (strncmp(text, "postgresql://", 13) == 0)
        return 13;
    if (strncmp(text, "postgres://", 11) == 0)
        return 11;
    return 0;
}

const char *connstr_pg_check(const char *text)
{
    bool uri = strstr(text, "://") != NULL;
    if (uri && pg_uri_prefix(text) == 0)
        return "must start with postgresql:// or postgres://";
    if (!uri && strchr(text, '=') == NULL)
        return "must be a postgresql:// URL or a key=value conninfo string";
    char *pqerr = NULL;
    PQconninfoOption *options = PQconninfoParse(text, &pqerr);
    PQfreemem(pqerr);
    if (options == NULL)
        return uri ? "not a valid PostgreSQL URL"
                   : "not a valid PostgreSQL conninfo string (key=value pairs, quote values with "
                     "spaces in '')";
    PQconninfoFree(options);
    return NULL;
}

/* libpq's parser message as one line; its quoted pieces starred when text may hold a
 * password (libpq quotes the offending piece, which may be part of one). */
static void pg_parse_error(const char *text, const char *pqerr, char *err, size_t errcap)
{
    char probe[2];
    bool secret = connstr_redact_text(text, probe, sizeof probe);
    out_t o = out_start(err, errcap);
    bool quoted = false;
    for (const char *p = pqerr; *p != '\0'; p++) {
        char c = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
        if (*p == '"')
            quoted = !quoted;
        else if (quoted && secret)
            c = '*';
        put_n(&o, &c, 1);
    }
    while (o.len > 0 && err[o.len - 1] == ' ')
        err[--o.len] = '\0';
}

connstr_pg_t *connstr_pg_parse(const char *text, char *err, size_t errcap)
{
    connstr_pg_t *pg = calloc(1, sizeof *pg);
    char *pqerr = NULL;
    if (pg == NULL || (pg->text = strdup(text)) == NULL) {
        snprintf(err, errcap, "out of memory");
        connstr_pg_free(pg);
        return NULL;
    }
    pg->options = PQconninfoParse(text, &pqerr);
    if (pg->options == NULL) {
        pg_parse_error(text, pqerr != NULL ? pqerr : "out of memory", err, errcap);
        PQfreemem(pqerr);
        connstr_pg_free(pg);
        return NULL;
    }
    pg->scheme_len = pg_uri_prefix(text);
    return pg;
}

static void wipe_free(char *secret)
{
    if (secret != NULL)
        memset(secret, 0, strlen(secret));
    free(secret);
}

void connstr_pg_free(connstr_pg_t *pg)
{
    if (pg == NULL)
        return;
    if (pg->options != NULL)
        PQconninfoFree(pg->options);
    wipe_free(pg->password);
    free(pg->text);
    free(pg);
}

static bool is_set(const PQconninfoOption *o)
{
    return o->val != NULL && o->val[0] != '\0';
}

static bool is_secret(const PQconninfoOption *o)
{
    return o->dispchar != NULL && o->dispchar[0] == '*';
}

const char *connstr_pg_value(const connstr_pg_t *pg, const char *keyword)
{
    if (pg->password != NULL && strcmp(keyword, "password") == 0)
        return pg->password;
    for (const PQconninfoOption *o = pg->options; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return is_set(o) ? o->val : NULL;
    return NULL;
}

bool connstr_pg_has_password(const connstr_pg_t *pg)
{
    for (const PQconninfoOption *o = pg->options; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "password") == 0)
            return is_set(o);
    return false;
}

int connstr_pg_set_password(connstr_pg_t *pg, const char *password)
{
    char *copy = strdup(password);
    if (copy == NULL)
        return -1;
    wipe_free(pg->password);
    pg->password = copy;
    return 0;
}

size_t connstr_pg_params(const connstr_pg_t *pg, const char **keywords, const char **values,
                         size_t cap)
{
    size_t n = 0;
    for (const PQconninfoOption *o = pg->options; o->keyword != NULL; o++) {
        if (!is_set(o))
            continue;
        if (n < cap) {
            keywords[n] = o->keyword;
            values[n] = o->val;
        }
        n++;
    }
    if (pg->password != NULL) {
        if (n < cap) {
            keywords[n] = "password";
            values[n] = pg->password;
        }
        n++;
    }
    return n;
}

/* Shown first, in this order (where, which database, who); the rest follow in libpq's. */
static const char *const pg_leading[] = {"host", "hostaddr", "port", "dbname", "user", "password",
                                         NULL};

static const PQconninfoOption *pg_option(const connstr_pg_t *pg, const char *keyword)
{
    for (const PQconninfoOption *o = pg->options; o->keyword != NULL; o++)
        if (strcmp(o->keyword, keyword) == 0)
            return o;
    return NULL;
}

/* What to show for an option: NULL when unset, "***" for a secret. */
static const char *pg_shown(const connstr_pg_t *pg, const PQconninfoOption *o)
{
    if (o == NULL)
        return NULL;
    const char *v = connstr_pg_value(pg, o->keyword);
    return v != NULL && is_secret(o) ? "***" : v;
}

static bool pg_has_secret(const connstr_pg_t *pg)
{
    if (pg->password != NULL)
        return true;
    for (const PQconninfoOption *o = pg->options; o->keyword != NULL; o++)
        if (is_secret(o) && is_set(o))
            return true;
    return false;
}

static bool is_leading(const char *keyword)
{
    for (const char *const *k = pg_leading; *k != NULL; k++)
        if (strcmp(*k, keyword) == 0)
            return true;
    return false;
}

/* keyword=value as libpq reads it: quoted when the value holds a blank, ' or \, which
 * are then escaped with \ (conninfo_parse in fe-connect.c). */
static void put_pair(out_t *o, bool *first, const char *keyword, const char *value)
{
    if (value == NULL)
        return;
    put(o, *first ? "" : " ");
    *first = false;
    put(o, keyword);
    put(o, "=");
    if (strpbrk(value, " \t\n\r\f\v'\\") == NULL) {
        put(o, value);
        return;
    }
    put(o, "'");
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\'' || *p == '\\')
            put(o, "\\");
        put_n(o, p, 1);
    }
    put(o, "'");
}

static void pg_format_pairs(const connstr_pg_t *pg, out_t *o)
{
    bool first = true;
    for (const char *const *k = pg_leading; *k != NULL; k++)
        put_pair(o, &first, *k, pg_shown(pg, pg_option(pg, *k)));
    for (const PQconninfoOption *opt = pg->options; opt->keyword != NULL; opt++)
        if (!is_leading(opt->keyword))
            put_pair(o, &first, opt->keyword, pg_shown(pg, opt));
}

static size_t list_length(const char *list)
{
    size_t n = 1;
    for (; *list != '\0'; list++)
        n += *list == ',';
    return n;
}

/* host and port fit the authority ("h1:p1,h2:p2") when neither is a list or both are lists
 * of the same length; otherwise they go into the query, where any value fits. */
static bool pg_authority_fits(const char *host, const char *port)
{
    if ((host == NULL || strchr(host, ',') == NULL) && (port == NULL || strchr(port, ',') == NULL))
        return true;
    return host != NULL && port != NULL && list_length(host) == list_length(port);
}

/* host[:port],... with each host percent-encoded (in [] when it holds a ':'). */
static void pg_put_authority(out_t *o, const char *host, const char *port)
{
    const char *h = host != NULL ? host : "", *p = port != NULL ? port : "";
    for (;;) {
        size_t hn = strcspn(h, ","), pn = strcspn(p, ",");
        bool v6 = memchr(h, ':', hn) != NULL;
        put(o, v6 ? "[" : "");
        put_encoded_n(o, h, hn, v6 ? ":" : NULL);
        put(o, v6 ? "]" : "");
        if (pn > 0) {
            put(o, ":");
            put_encoded_n(o, p, pn, NULL);
        }
        if (h[hn] == '\0')
            return;
        put(o, ",");
        h += hn + 1;
        p += p[pn] == ',' ? pn + 1 : pn;
    }
}

static void pg_format_uri(const connstr_pg_t *pg, out_t *o)
{
    const char *user = pg_shown(pg, pg_option(pg, "user"));
    const char *password = pg_shown(pg, pg_option(pg, "password"));
    const char *host = pg_shown(pg, pg_option(pg, "host"));
    const char *port = pg_shown(pg, pg_option(pg, "port"));
    const char *dbname = pg_shown(pg, pg_option(pg, "dbname"));
    bool authority = pg_authority_fits(host, port);
    put_n(o, pg->text, pg->scheme_len);
    if (user != NULL || password != NULL) {
        put_encoded(o, user != NULL ? user : "", NULL);
        put(o, password != NULL ? ":***@" : "@");
    }
    if (authority)
        pg_put_authority(o, host, port);
    put(o, "/");
    put_encoded(o, dbname != NULL ? dbname : "", NULL);
    const char *sep = "?";
    for (const PQconninfoOption *opt = pg->options; opt->keyword != NULL; opt++) {
        const char *k = opt->keyword, *v = pg_shown(pg, opt);
        if (v == NULL || strcmp(k, "user") == 0 || strcmp(k, "password") == 0 ||
            strcmp(k, "dbname") == 0 || (authority && (strcmp(k, "host") == 0 || strcmp(k, "port") == 0)))
            continue;
        put(o, sep);
        sep = "&";
        put_encoded(o, k, NULL);
        put(o, "=");
        put_encoded(o, v, is_secret(opt) ? "*" : NULL);
    }
}

void connstr_pg_format(const connstr_pg_t *pg, char *buf, size_t cap)
{
    out_t o = out_start(buf, cap);
    if (!pg_has_secret(pg))
        put(&o, pg->text);
    else if (pg->scheme_len > 0)
        pg_format_uri(pg, &o);
    else
        pg_format_pairs(pg, &o);
}

void connstr_pg_redact(const char *text, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    char err[8];
    connstr_pg_t *pg = text != NULL ? connstr_pg_parse(text, err, sizeof err) : NULL;
    if (pg == NULL) {
        connstr_redact_text(text, buf, cap);
        return;
    }
    connstr_pg_format(pg, buf, cap);
    connstr_pg_free(pg);
}
