/*
 * The router URL, the worker's half of the connection-string module (src/lib/connstr.h
 * has the rules both halves follow): parsed, checked and redacted with libcurl's URL API
 * (curl_url, curl_url_set, curl_url_get), the same parser curl uses when it sends the
 * request. It lives here because only the worker talks to the router, and libretryq does
 * not link libcurl.
 */
#ifndef RETRYQ_WORKER_CONNSTR_ROUTER_H
#define RETRYQ_WORKER_CONNSTR_ROUTER_H

#include <stddef.h>

typedef enum connstr_router_problem {
    CONNSTR_ROUTER_OK = 0,
    CONNSTR_ROUTER_EMPTY,     /* NULL or "" */
    CONNSTR_ROUTER_SCHEME,    /* not http:// or https:// */
    CONNSTR_ROUTER_NO_HOST,   /* no host after "scheme://" (and the user information) */
    CONNSTR_ROUTER_SPACE,     /* a space or a control character */
    CONNSTR_ROUTER_MALFORMED, /* anything else libcurl refuses (a port out of range, ...) */
    CONNSTR_ROUTER_QUERY,     /* a query or fragment (CONNSTR_ROUTER_BASE only) */
} connstr_router_problem_t;

/* The URL is a base that paths are appended to: no query, no fragment. */
#define CONNSTR_ROUTER_BASE 1u

/* Checks url: http or https, a host, nothing libcurl refuses; problems are looked for in
 * the order of the enum. `why` gets the rule broken, for "<setting>: <rule> (got ...)"
 * ("must start with http:// or https://", ...; libcurl's reason, a fixed text that never
 * quotes the URL, follows in parentheses for MALFORMED), "" when there is no problem. */
connstr_router_problem_t connstr_router_check(const char *url, unsigned flags, char *why,
                                              size_t cap);
/* Writes url with its password shown as ***: as given when libcurl reads no password in
 * it, else libcurl's own rebuilding of it with the password replaced; text libcurl
 * refuses goes through connstr_redact_text. Always NUL-terminated, cut at cap. */
void connstr_router_redact(const char *url, char *buf, size_t cap);

#endif
