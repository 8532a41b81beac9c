/*
 * What a router answer means (DESIGN §5): router_classify turns one finished call
 * (router_result_t, router.h) into a verdict, the runner's kind of failure and the texts
 * the worker stores (classify.c). Pure: no I/O, no state.
 */
#ifndef RETRYQ_WORKER_CLASSIFY_H
#define RETRYQ_WORKER_CLASSIFY_H

#include "router.h"

typedef enum router_verdict {
    ROUTER_SUCCESS = 0,  /* HTTP 2xx and success:true with a string response */
    ROUTER_FAILED,       /* success:false, HTTP 4xx other than 408/429, invalid / oversized / non-object JSON */
    ROUTER_TIMEOUT,      /* total timeout hit */
    ROUTER_TRANSIENT,    /* connection errors, HTTP 5xx, 429, 408: back off and retry later */
} router_verdict_t;

/* What kind of failure, in the runner's words (its HybridExecutor's failure documents):
 * each kind has the runner's error code, stage and type (router_failure_code/stage/type). */
typedef enum router_failure {
    ROUTER_FAILURE_NONE = 0, /* success */
    ROUTER_FAILURE_HTTP,     /* non-2xx: ROUTER_HTTP_<status>, router_http_request, http_error */
    ROUTER_FAILURE_TIMEOUT,  /* ROUTER_TIMEOUT, router_http_timeout, timeout */
    ROUTER_FAILURE_NETWORK,  /* ROUTER_NETWORK, router_network, network */
    ROUTER_FAILURE_JSON,     /* an answer that cannot be read: ROUTER_JSON_ERROR, router_response_parse, json_error */
    ROUTER_FAILURE_ROUTER,   /* success:false: ROUTER_ERROR, router_inference, router_error */
    ROUTER_FAILURE_UNKNOWN,  /* anything else: ROUTER_UNKNOWN_ERROR, router_inference, unknown */
} router_failure_t;

/* The parsed meaning of one router_result (DESIGN §5). All strings malloc'd, owned here. */
typedef struct router_outcome {
    router_verdict_t verdict;
    long http_status;
    char *response;          /* success: the answer text */
    char *provider;          /* provider_used, or NULL */
    double inference_sec;    /* from the router, or 0 */
    char *metadata_json;     /* the metadata object re-serialised, or NULL */
    char *error;             /* failure text (<= 2 KiB; for non-2xx: "HTTP 503: <first 2 KiB of body>") */
    char *error_code;        /* short code: "router_error", "http_4xx", "invalid_json", "too_large", "timeout", "network", "http_5xx", "rate_limited", ... */
    router_failure_t failure; /* the runner's kind of failure (NONE on success) */
    char *receipt_json;      /* metadata.receipt as JSON (an object, or JSON text in a string), or NULL */
    long retry_after_ms;     /* copied from the result, -1 when absent */
    /* The router's own words to stop calling this model in this region for a while (a 429
     * or 503 with Retry-After, or with an exhausted x-ratelimit budget and its reset):
     * how long, and why ("retry_after" or "ratelimit"); -1 and NULL when none. */
    long pause_ms;
    const char *pause_cause; /* static text */
} router_outcome_t;

/* Classifies a finished call. Never fails; unknown shapes become ROUTER_FAILED. Text
 * with an escaped NUL (\u0000) or invalid UTF-8 is sanitised (NUL dropped, bad bytes
 * replaced by U+FFFD) so it can be stored in jsonb. */
void router_classify(const router_result_t *result, router_outcome_t *out);
void router_outcome_free(router_outcome_t *out);
const char *router_verdict_name(router_verdict_t verdict); /* "success","failed","timeout","transient" */
/* The runner's error code of a failure ("ROUTER_HTTP_503", "ROUTER_TIMEOUT", ...) into buf. */
const char *router_failure_code(router_failure_t failure, long http_status, char *buf, size_t cap);
const char *router_failure_stage(router_failure_t failure); /* "router_http_request", ... */
const char *router_failure_type(router_failure_t failure);  /* "http_error", "timeout", ... */

/* ------------------------------------------------------------------ answer headers */

#define ROUTER_HINT_MAX_MS (24L * 3600L * 1000L) /* longer hints are clamped to a day */
/* Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP date, compared with `now`
 * (a date in the past is 0). Blanks around the value are ignored. -1 when unreadable. */
long router_parse_retry_after(const char *value, size_t len, time_t now);
/* An x-ratelimit-reset-* value: a Go-style duration ("20s", "1m30s", "250ms", "6m0s",
 * "0.5s", "1h2m", "100us"), or a bare number of seconds ("20", "1.5"; one of 10^9 or more
 * is a Unix time, compared with `now`). -1 when unreadable. */
long router_parse_reset(const char *value, size_t len, time_t now);
/* An x-ratelimit-remaining-* value: a count >= 0, or -1 when unreadable. */
long router_parse_count(const char *value, size_t len);
/* Reads one header line ("Name: value\r\n") into *retry_after_ms / *ratelimit when it is
 * one of those headers. */
void router_parse_header(const char *line, size_t len, time_t now, long *retry_after_ms,
                         router_ratelimit_t *ratelimit);
/* The pause an answer asks for (see router_outcome_t.pause_ms): its cause, or NULL. */
const char *router_pause_hint(const router_result_t *result, long *pause_ms);


#endif
