/*
 * libFuzzer target: Redis URLs (retryq_redis_url_parse and retryq_redis_url_redact) and
 * the worker's own redaction of any URL it prints (config_redact_url). The input is the
 * URL text (cut at the first NUL, as a C string would be).
 *
 * Invariants: a parsed URL has NUL-terminated fields within their buffers, a port in
 * 1..65535 and a database >= 0; a refusal has a one-line reason that never repeats the
 * URL's password; the redacted forms are NUL-terminated, never longer than the buffer,
 * and hold the password's text strictly fewer times than the URL does (the one in the
 * user information is gone: nothing else is claimed, since the same text may
 * legitimately be in the host or the path too). The same holds for the password libpq
 * itself reads from a postgresql:// URL or a key=value string.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "config.h"
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
 * follows the first ':' after "://" up to the last '@' of the URL. That is wider than
 * any parser's reading (a password with an unencoded '/', '?' or '#' is refused by the
 * Redis parser, taken as it is by libpq), so redaction must hide all of it.
 */
static char *raw_password(const char *url, bool scheme_first)
{
    const char *s = strstr(url, "://");
    if (scheme_first) { /* config.c reads only "scheme://" at the start as a URI */
        size_t n = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
        s = n > 0 && isalpha((unsigned char)url[0]) && strncmp(url + n, "://", 3) == 0 ? url + n : NULL;
    }
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

static void check_redacted(const char *url, const char *buf, size_t cap, const char *secret)
{
    FUZZ_ASSERT(memchr(buf, '\0', cap) != NULL);
    if (secret != NULL && strchr(secret, '*') == NULL)
        FUZZ_ASSERT(count(buf, secret) < count(url, secret));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = strndup((const char *)data, size);
    FUZZ_ASSERT(url != NULL);
    char *secret = raw_password(url, false);
    char *uri_secret = raw_password(url, true);

    retryq_redis_url_t parsed;
    retryq_error_t err;
    memset(&err, 0x55, sizeof err);
    int rc = retryq_redis_url_parse(url, &parsed, &err);
    if (rc == RETRYQ_OK) {
        FUZZ_ASSERT(memchr(parsed.host, '\0', sizeof parsed.host) != NULL);
        FUZZ_ASSERT(memchr(parsed.path, '\0', sizeof parsed.path) != NULL);
        FUZZ_ASSERT(memchr(parsed.user, '\0', sizeof parsed.user) != NULL);
        FUZZ_ASSERT(memchr(parsed.password, '\0', sizeof parsed.password) != NULL);
        FUZZ_ASSERT(parsed.db >= 0);
        if (parsed.is_unix)
            FUZZ_ASSERT(parsed.path[0] == '/');
        else
            FUZZ_ASSERT(parsed.port >= 1 && parsed.port <= 65535 && parsed.host[0] != '\0');
    } else {
        FUZZ_ASSERT(rc == RETRYQ_ERR_INVALID && err.code == rc);
        FUZZ_ASSERT(memchr(err.message, '\0', sizeof err.message) != NULL);
        FUZZ_ASSERT(err.message[0] != '\0' && strchr(err.message, '\n') == NULL);
        /* no fixed message holds a '!': a password with one (and more) must not show */
        if (secret != NULL && strlen(secret) >= 2 && strchr(secret, '!') != NULL)
            FUZZ_ASSERT(strstr(err.message, secret) == NULL);
    }

    /* both redactions, in a roomy buffer and in tight ones */
    static const size_t caps[] = {1, 2, 8, 64, 4096};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        char *buf = malloc(caps[i]);
        FUZZ_ASSERT(buf != NULL);
        retryq_redis_url_redact(url, buf, caps[i]);
        check_redacted(url, buf, caps[i], secret);
        config_redact_url(url, buf, caps[i]);
        check_redacted(url, buf, caps[i], uri_secret);
        free(buf);
    }
    /* what libpq would send as the password must not survive the worker's redaction */
    if (strncmp(url, "postgres", 8) == 0 || strchr(url, '=') != NULL) {
        char *pqerr = NULL;
        PQconninfoOption *opts = PQconninfoParse(url, &pqerr);
        for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
            if (strcmp(o->keyword, "password") != 0 || o->val == NULL || o->val[0] == '\0' ||
                strchr(o->val, '*') != NULL || strstr(url, o->val) == NULL ||
                strstr("password=***", o->val) != NULL) /* the replacement spells it */
                continue;
            char buf[4096];
            config_redact_url(url, buf, sizeof buf);
            if (count(buf, o->val) >= count(url, o->val))
                fprintf(stderr, "libpq password \"%s\" survives in \"%s\"\n", o->val, buf);
            FUZZ_ASSERT(count(buf, o->val) < count(url, o->val));
        }
        PQconninfoFree(opts);
        PQfreemem(pqerr);
    }
    free(secret);
    free(uri_secret);
    free(url);
    return 0;
}
