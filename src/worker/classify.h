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

#endif
