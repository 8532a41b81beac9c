/*
 * The inference router client: POST {base}/inference through one libcurl multi handle
 * driven by the worker's event_base (socket and timer callbacks, as curl's hiperfifo
 * example shows). Keep-alive connections are reused across calls. No redirects, HTTP(S)
 * only, a total timeout, a connect timeout and a response size cap enforced in the
 * write callback. Completion callbacks run from the event loop, never from inside a
 * curl callback.
 */
#ifndef RETRYQ_WORKER_ROUTER_H
#define RETRYQ_WORKER_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct event_base;

typedef struct router router_t;
typedef struct router_call router_call_t;

typedef struct router_config {
    const char *base_url;      /* e.g. http://127.0.0.1:8080 ; "/inference" is appended */
    long timeout_ms;           /* total, default 60000 */
    long connect_timeout_ms;   /* default 5000 */
    size_t max_body;           /* response cap in bytes, default 4 MiB */
} router_config_t;

/* The x-ratelimit-* headers of an answer (OpenAI's and Groq's names); zeroed = none seen. */
#define ROUTER_RL_RESET_REQUESTS 1u     /* x-ratelimit-reset-requests */
#define ROUTER_RL_RESET_TOKENS 2u       /* x-ratelimit-reset-tokens */
#define ROUTER_RL_REMAINING_REQUESTS 4u /* x-ratelimit-remaining-requests */
#define ROUTER_RL_REMAINING_TOKENS 8u   /* x-ratelimit-remaining-tokens */
typedef struct router_ratelimit {
    unsigned have;                 /* which of the fields below an answer carried (bits above) */
    long reset_requests_ms;        /* time until the request budget is refilled */
    long reset_tokens_ms;          /* time until the token budget is refilled */
    long remaining_requests;       /* requests left in the budget */
    long remaining_tokens;         /* tokens left in the budget */
} router_ratelimit_t;

/* What came back from one call; valid only during the callback. */
typedef struct router_result {
    int curl_code;            /* CURLE_OK (0) or the curl error */
    long http_status;         /* 0 when no response */
    const char *body;         /* NUL-terminated response body (possibly empty, never NULL) */
    size_t body_len;
    bool too_large;           /* body exceeded max_body: transfer aborted */
    bool timed_out;           /* total timeout hit (CURLE_OPERATION_TIMEDOUT) */
    double total_sec;         /* wall time of the call */
    long retry_after_ms;      /* from a Retry-After header (seconds or HTTP date); -1 when absent */
    router_ratelimit_t ratelimit; /* x-ratelimit-* headers */
    const char *error;        /* curl's error text or "" */
    const char *path;         /* the router path of the last try ("/inference", ...) */
} router_result_t;

typedef void (*router_done_fn)(void *arg, const router_result_t *result);

router_t *router_new(struct event_base *base, const router_config_t *cfg, char *err, size_t errcap);
/* Cancels every call in progress (their callbacks are not called) and frees everything. */
void router_free(router_t *router);

/*
 * Starts one call on the router path that answered last (first "/inference"); a 404 makes
 * the call try the runner client's other paths (/api/v1/inference, /api/inference,
 * /v1/inference) in turn, and the first that answers anything else is remembered.
 * The body is copied. Headers: Content-Type: application/json,
 * X-Retryq-Execution: <execution_id>, X-Retryq-Attempt: <attempt>. `done` is called
 * exactly once unless the call is cancelled first. Returns NULL when the call could
 * not even be started (out of memory, curl refused the handle).
 */
router_call_t *router_call(router_t *router, const char *body, size_t len, int64_t execution_id,
                           int32_t attempt, router_done_fn done, void *arg);
/* Stops a call; its callback will not run. Not allowed from inside its own callback. */
void router_cancel(router_call_t *call);
size_t router_active(const router_t *router);

#endif
