/*
 * libFuzzer target: the connection-string module (src/lib/connstr.c and
 * src/worker/connstr_router.c) on any text, cut at the first NUL as a C string would be.
 * Every parser and every redactor sees every input.
 *
 * Invariants:
 *  - Redis: a parsed URL has NUL-terminated fields within their buffers, a port in
 *    1..65535 (every sentinel's too, and a master name with redis+sentinel://, no
 *    sentinel password read from the text) and a database >= 0 (also when the password comes from a file); a refusal
 *    has a one-line reason that never repeats the URL's password; a parsed URL formatted
 *    by connstr_redis_format parses back to the same fields, its password read as "***".
 *  - PostgreSQL: connstr_pg_check accepts exactly what PQconninfoParse accepts (in the
 *    postgresql:// or key=value form); a parse error is one line whose quoted parts are
 *    starred when the text may hold a password; connstr_pg_params hands over exactly the
 *    options libpq read; connstr_pg_redact of a string libpq reads parses back to the same
 *    options with every secret one (password, sslpassword) read as "***", and of one
 *    libpq refuses is connstr_redact_text's.
 *  - Router: connstr_router_redact of a URL libcurl reads with a password parses back (by
 *    libcurl) to the same parts with the password "***", is the URL itself when libcurl
 *    reads no password, and connstr_redact_text's when libcurl refuses it; a URL the check
 *    accepts is http(s) and read by libcurl.
 *  - Text no parser accepts: connstr_redact_text hides everything after the first
 *    "password" and the password of "scheme://user:password@" up to the last '@' (the
 *    raw, still encoded password: its text shows strictly fewer times than in the input;
 *    retryq_redis_url_redact keeps the same promise).
 *  - Every redacted form is NUL-terminated within its buffer, also a tight one.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "connstr.h"
#include "connstr_router.h"
#include "fuzz.h"
#include "retryq/retryq.h"

static size_t count(const char *hay, const char *needle)
{
    size_t c = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        c++;
    return c;
}

/*
 * The raw (still percent-encoded) password of the URL's user information, or NULL: what
 * follows the first ':' after the first "://" up to the last '@' of the URL. That is wider
 * than any parser's reading (a password with an unencoded '/', '?' or '#' is refused by
 * the Redis parser, taken as it is by libpq), so the text redactors must hide all of it.
 */
static char *raw_password(const char *url)
{
    const char *s = strstr(url, "://");
    if (s == NULL)
        return NULL;
    s += 3;
    const char *at = strrchr(s, '@');
    if (at == NULL)
        return NULL;
    const char *colon = memchr(s, ':', (size_t)(at - s));
    if (colon == NULL || colon + 1 == at)
        return NULL;
    return strndup(colon + 1, (size_t)(at - colon - 1));
}

static void check_fewer(const char *url, const char *buf, const char *secret)
{
    if (secret != NULL && strchr(secret, '*') == NULL)
        FUZZ_ASSERT(count(buf, secret) < count(url, secret));
}

static void check_parsed_redis(const retryq_redis_url_t *u)
{
    FUZZ_ASSERT(memchr(u->host, '\0', sizeof u->host) != NULL);
    FUZZ_ASSERT(memchr(u->path, '\0', sizeof u->path) != NULL);
    FUZZ_ASSERT(memchr(u->user, '\0', sizeof u->user) != NULL);
    FUZZ_ASSERT(memchr(u->password, '\0', sizeof u->password) != NULL);
    FUZZ_ASSERT(u->db >= 0);
    FUZZ_ASSERT(u->sentinel_password[0] == '\0'); /* never read from the URL text */
    FUZZ_ASSERT(memchr(u->master, '\0', sizeof u->master) != NULL);
    FUZZ_ASSERT(u->endpoint_count >= 0 && u->endpoint_count <= RETRYQ_REDIS_MAX_ENDPOINTS);
    FUZZ_ASSERT((u->is_sentinel || u->is_cluster) == (u->endpoint_count > 0));
    FUZZ_ASSERT(!(u->is_sentinel && u->is_cluster));
    FUZZ_ASSERT(!u->is_sentinel || (u->master[0] != '\0' && !u->is_unix));
    FUZZ_ASSERT(!u->is_cluster || (u->db == 0 && !u->is_unix && u->master[0] == '\0'));
    for (int i = 0; i < u->endpoint_count; i++) {
        FUZZ_ASSERT(memchr(u->endpoints[i].host, '\0', sizeof u->endpoints[i].host) != NULL);
        FUZZ_ASSERT(u->endpoints[i].host[0] != '\0');
        FUZZ_ASSERT(u->endpoints[i].port >= 1 && u->endpoints[i].port <= 65535);
    }
    if (u->is_unix)
        FUZZ_ASSERT(u->path[0] == '/');
    else
        FUZZ_ASSERT(u->port >= 1 && u->port <= 65535 && u->host[0] != '\0');
}

static void check_redis(const char *url, const char *secret)
{
    retryq_redis_url_t parsed, again;
    retryq_error_t err;
    memset(&err, 0x55, sizeof err);
    int rc = retryq_redis_url_parse(url, &parsed, &err);
    if (rc == RETRYQ_OK) {
        check_parsed_redis(&parsed);
        char shown[2048];
        connstr_redis_format(&parsed, shown, sizeof shown);
        FUZZ_ASSERT(connstr_redis_parse(shown, CONNSTR_REDIS_PASSWORD_ELSEWHERE, &again, &err) >= 0);
        FUZZ_ASSERT(again.is_unix == parsed.is_unix && again.port == parsed.port &&
                    again.db == parsed.db && strcmp(again.host, parsed.host) == 0 &&
                    strcmp(again.path, parsed.path) == 0 && strcmp(again.user, parsed.user) == 0);
        FUZZ_ASSERT(again.is_sentinel == parsed.is_sentinel &&
                    again.endpoint_count == parsed.endpoint_count &&
                    strcmp(again.master, parsed.master) == 0);
        for (int i = 0; i < parsed.endpoint_count; i++)
            FUZZ_ASSERT(strcmp(again.endpoints[i].host, parsed.endpoints[i].host) == 0 &&
                        again.endpoints[i].port == parsed.endpoints[i].port);
        FUZZ_ASSERT(strcmp(again.password, parsed.password[0] != '\0' ? "***" : "") == 0);
    } else {
        FUZZ_ASSERT(rc == RETRYQ_ERR_INVALID && err.code == rc);
        FUZZ_ASSERT(memchr(err.message, '\0', sizeof err.message) != NULL);
        FUZZ_ASSERT(err.message[0] != '\0' && strchr(err.message, '\n') == NULL);
        /* no fixed message holds a '!': a password with one (and more) must not show */
        if (secret != NULL && strlen(secret) >= 2 && strchr(secret, '!') != NULL)
            FUZZ_ASSERT(strstr(err.message, secret) == NULL);
    }
    rc = connstr_redis_parse(url, CONNSTR_REDIS_PASSWORD_ELSEWHERE, &parsed, &err);
    FUZZ_ASSERT(rc == RETRYQ_OK || rc == CONNSTR_REDIS_HOLDS_PASSWORD || rc == RETRYQ_ERR_INVALID);
    if (rc == RETRYQ_OK) {
        check_parsed_redis(&parsed);
        FUZZ_ASSERT(parsed.password[0] == '\0');
    }
}

static bool same(const char *a, const char *b)
{
    bool a_set = a != NULL && a[0] != '\0', b_set = b != NULL && b[0] != '\0';
    return a_set == b_set && (!a_set || strcmp(a, b) == 0);
}

/* Whether every character inside "..." of text is '*'. */
static bool quotes_starred(const char *text)
{
    bool inside = false;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '"')
            inside = !inside;
        else if (inside && *p != '*')
            return false;
    }
    return true;
}

static void check_pg_params(const connstr_pg_t *pg, const PQconninfoOption *opts)
{
    const char *keys[64], *values[64];
    size_t n = connstr_pg_params(pg, keys, values, 64), set = 0;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        set += o->val != NULL && o->val[0] != '\0';
    FUZZ_ASSERT(n == set && n <= 64);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(same(connstr_pg_value(pg, keys[i]), values[i]));
}

static void check_pg(const char *url, size_t size)
{
    char *pqerr = NULL, err[512];
    PQconninfoOption *opts = PQconninfoParse(url, &pqerr);
    PQfreemem(pqerr);
    const char *rule = connstr_pg_check(url);
    connstr_pg_t *pg = connstr_pg_parse(url, err, sizeof err);
    size_t cap = 4 * size + 256;
    char *buf = malloc(cap), *blunt = malloc(cap);
    FUZZ_ASSERT(buf != NULL && blunt != NULL);
    connstr_pg_redact(url, buf, cap);
    bool may_hold = connstr_redact_text(url, blunt, cap);
    if (opts == NULL) { /* libpq refuses it (or ran out of memory) */
        FUZZ_ASSERT(rule != NULL && pg == NULL && strcmp(buf, blunt) == 0);
        FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
        FUZZ_ASSERT(!may_hold || quotes_starred(err));
    } else {
        FUZZ_ASSERT(pg != NULL);
        bool form = strstr(url, "://") == NULL ? strchr(url, '=') != NULL
                                               : strncmp(url, "postgresql://", 13) == 0 ||
                                                     strncmp(url, "postgres://", 11) == 0;
        FUZZ_ASSERT((rule == NULL) == form);
        check_pg_params(pg, opts);
        char *again_err = NULL;
        PQconninfoOption *again = PQconninfoParse(buf, &again_err);
        if (again == NULL)
            fprintf(stderr, "rebuilt \"%s\" from \"%s\": %s\n", buf, url, again_err);
        FUZZ_ASSERT(again != NULL);
        for (size_t i = 0; opts[i].keyword != NULL; i++) {
            bool secret = opts[i].dispchar[0] == '*' && opts[i].val != NULL && opts[i].val[0] != '\0';
            if (!same(again[i].val, secret ? "***" : opts[i].val))
                fprintf(stderr, "%s: \"%s\" rebuilt as \"%s\"\n", opts[i].keyword,
                        opts[i].val ? opts[i].val : "", again[i].val ? again[i].val : "");
            FUZZ_ASSERT(same(again[i].val, secret ? "***" : opts[i].val));
        }
        PQconninfoFree(again);
        PQfreemem(again_err);
        PQconninfoFree(opts);
    }
    connstr_pg_free(pg);
    free(buf);
    free(blunt);
}

static char *curl_part(CURLU *h, CURLUPart part)
{
    char *v = NULL;
    return curl_url_get(h, part, &v, 0) == CURLUE_OK ? v : NULL;
}

static void check_router(const char *url, size_t size)
{
    size_t cap = 4 * size + 256;
    char *buf = malloc(cap), *blunt = malloc(cap), why[256];
    FUZZ_ASSERT(buf != NULL && blunt != NULL);
    connstr_router_redact(url, buf, cap);
    connstr_redact_text(url, blunt, cap);
    CURLU *h = curl_url(), *again = curl_url();
    FUZZ_ASSERT(h != NULL && again != NULL);
    bool parsed = curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK;
    char *password = parsed ? curl_part(h, CURLUPART_PASSWORD) : NULL;
    if (!parsed) {
        FUZZ_ASSERT(strcmp(buf, blunt) == 0);
    } else if (password == NULL) {
        FUZZ_ASSERT(strcmp(buf, url) == 0);
    } else {
        FUZZ_ASSERT(curl_url_set(again, CURLUPART_URL, buf, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK);
        static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_USER, CURLUPART_HOST,
                                          CURLUPART_PORT, CURLUPART_PATH, CURLUPART_QUERY,
                                          CURLUPART_FRAGMENT};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            /* curl writes no empty "?" or "#": an empty part reads as none */
            char *a = curl_part(h, parts[i]), *b = curl_part(again, parts[i]);
            FUZZ_ASSERT(same(a, b));
            curl_free(a);
            curl_free(b);
        }
        char *masked = curl_part(again, CURLUPART_PASSWORD);
        FUZZ_ASSERT(masked != NULL && strcmp(masked, "***") == 0);
        curl_free(masked);
    }
    connstr_router_problem_t problem = connstr_router_check(url, CONNSTR_ROUTER_BASE, why, sizeof why);
    FUZZ_ASSERT((problem == CONNSTR_ROUTER_OK) == (why[0] == '\0') && strchr(why, '\n') == NULL);
    if (problem == CONNSTR_ROUTER_OK)
        FUZZ_ASSERT(parsed && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0));
    curl_free(password);
    curl_url_cleanup(h);
    curl_url_cleanup(again);
    free(buf);
    free(blunt);
}

static size_t count_ci(const char *hay, const char *needle)
{
    size_t c = 0;
    for (const char *p = hay; (p = strcasestr(p, needle)) != NULL; p++)
        c++;
    return c;
}

/* Everything after a "password" (and its blanks or '=') is "***"; the raw password of the
 * user information shows fewer times. */
static void check_blunt(const char *url, const char *secret)
{
    char buf[4096];
    bool hidden = connstr_redact_text(url, buf, sizeof buf);
    check_fewer(url, buf, secret);
    if (strlen(url) >= sizeof buf / 2)
        return;
    FUZZ_ASSERT(count_ci(buf, "password") <= 1);
    const char *shown = strcasestr(buf, "password");
    if (shown != NULL) {
        shown += 8;
        shown += strspn(shown, " \t\n\r\f\v=");
        FUZZ_ASSERT(strcmp(shown, "***") == 0);
    }
    if (strstr(url, "://") == NULL)
        FUZZ_ASSERT((shown != NULL) == (strcasestr(url, "password") != NULL));
    FUZZ_ASSERT(hidden || strcmp(buf, url) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = strndup((const char *)data, size);
    FUZZ_ASSERT(url != NULL);
    char *secret = raw_password(url);
    check_redis(url, secret);
    check_pg(url, strlen(url));
    check_router(url, strlen(url));
    check_blunt(url, secret);

    /* the text redactors in a roomy buffer and in tight ones; the parser-based ones are
     * cut versions of what the checks above saw whole */
    static const size_t caps[] = {1, 2, 8, 64, 4096};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        char *buf = malloc(caps[i]);
        FUZZ_ASSERT(buf != NULL);
        retryq_redis_url_redact(url, buf, caps[i]);
        FUZZ_ASSERT(memchr(buf, '\0', caps[i]) != NULL);
        check_fewer(url, buf, secret);
        connstr_redact_text(url, buf, caps[i]);
        FUZZ_ASSERT(memchr(buf, '\0', caps[i]) != NULL);
        check_fewer(url, buf, secret);
        connstr_pg_redact(url, buf, caps[i]);
        FUZZ_ASSERT(memchr(buf, '\0', caps[i]) != NULL);
        connstr_router_redact(url, buf, caps[i]);
        FUZZ_ASSERT(memchr(buf, '\0', caps[i]) != NULL);
        free(buf);
    }
    free(secret);
    free(url);
    return 0;
}
