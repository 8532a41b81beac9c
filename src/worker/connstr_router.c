/*
 * The router URL read by libcurl's URL API (see connstr_router.h). Parsed with
 * CURLU_NON_SUPPORT_SCHEME, so that a URL of another scheme (a mistake quoted in a
 * refusal) is still read, and redacted, by the same parser.
 *
 * Two things libcurl accepts are refused here: a URL not starting with http:// or
 * https:// (curl also takes "http:/host"), and "http:///host", where curl skips the third
 * slash and reads "host" as the host. A base URL must not have a query or fragment: the
 * worker appends "/inference" to its text, so even the empty "?" or "#" (which curl
 * drops) would swallow the path.
 */
#include "connstr_router.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "connstr.h"
#include "internal.h"

#define PARSE_FLAGS CURLU_NON_SUPPORT_SCHEME

/* "http://" or "https://" (any case): its length, else 0. */
static size_t http_prefix(const char *url)
{
    if (strncasecmp(url, "http://", 7) == 0)
        return 7;
    if (strncasecmp(url, "https://", 8) == 0)
        return 8;
    return 0;
}

static bool has_space_or_control(const char *url)
{
    for (const unsigned char *p = (const unsigned char *)url; *p != '\0'; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return true;
    return false;
}

static connstr_router_problem_t problem_of(const char *url, unsigned flags, const char **detail)
{
    if (url == NULL || url[0] == '\0')
        return CONNSTR_ROUTER_EMPTY;
    size_t prefix = http_prefix(url);
    if (prefix == 0)
        return CONNSTR_ROUTER_SCHEME;
    CURLU *h = curl_url();
    if (h == NULL) {
        *detail = curl_url_strerror(CURLUE_OUT_OF_MEMORY);
        return CONNSTR_ROUTER_MALFORMED;
    }
    CURLUcode rc = curl_url_set(h, CURLUPART_URL, url, PARSE_FLAGS);
    curl_url_cleanup(h);
    if (rc == CURLUE_NO_HOST || url[prefix] == '/')
        return CONNSTR_ROUTER_NO_HOST;
    if (has_space_or_control(url))
        return CONNSTR_ROUTER_SPACE;
    if (rc != CURLUE_OK) {
        *detail = curl_url_strerror(rc);
        return CONNSTR_ROUTER_MALFORMED;
    }
    if ((flags & CONNSTR_ROUTER_BASE) != 0 && strpbrk(url, "?#") != NULL)
        return CONNSTR_ROUTER_QUERY;
    return CONNSTR_ROUTER_OK;
}

connstr_router_problem_t connstr_router_check(const char *url, unsigned flags, char *why,
                                              size_t cap)
{
    static const char *const rules[] = {
        [CONNSTR_ROUTER_OK] = "",
        [CONNSTR_ROUTER_EMPTY] = "is empty",
        [CONNSTR_ROUTER_SCHEME] = "must start with http:// or https://",
        [CONNSTR_ROUTER_NO_HOST] = "missing host, expected http(s)://host[:port][/base]",
        [CONNSTR_ROUTER_SPACE] = "must not contain spaces or control characters",
        [CONNSTR_ROUTER_MALFORMED] = "is not a URL libcurl accepts",
        [CONNSTR_ROUTER_QUERY] = "must not have a query or fragment (\"/inference\" is appended)",
    };
    const char *detail = "";
    connstr_router_problem_t problem = problem_of(url, flags, &detail);
    if (detail[0] != '\0')
        snprintf(why, cap, "%s (%s)", rules[problem], detail);
    else
        snprintf(why, cap, "%s", rules[problem]);
    return problem;
}

void connstr_router_redact(const char *url, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    CURLU *h = url != NULL ? curl_url() : NULL;
    char *password = NULL, *rebuilt = NULL;
    if (h == NULL || curl_url_set(h, CURLUPART_URL, url, PARSE_FLAGS) != CURLUE_OK) {
        connstr_redact_text(url, buf, cap);
    } else if (curl_url_get(h, CURLUPART_PASSWORD, &password, 0) != CURLUE_OK) {
        rq_copy(buf, cap, url); /* libcurl reads no password in it */
    } else if (curl_url_set(h, CURLUPART_PASSWORD, "***", 0) != CURLUE_OK ||
               curl_url_get(h, CURLUPART_URL, &rebuilt, 0) != CURLUE_OK) {
        connstr_redact_text(url, buf, cap);
    } else {
        rq_copy(buf, cap, rebuilt);
    }
    if (password != NULL) {
        memset(password, 0, strlen(password));
        curl_free(password);
    }
    curl_free(rebuilt);
    curl_url_cleanup(h);
}
