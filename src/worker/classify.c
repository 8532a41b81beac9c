/*
 * What a router answer means (DESIGN §5): router_classify turns one finished call
 * (router_result_t, filled by router.c) into a verdict plus the text the worker stores.
 *
 *   timed_out                                   -> TIMEOUT   "timeout"
 *   curl connection-level errors                -> TRANSIENT "network"
 *   other curl errors                           -> FAILED    "curl_error"
 *   HTTP 5xx / 429 / 408                        -> TRANSIENT "http_5xx" / "rate_limited" / "request_timeout"
 *   other 4xx, 1xx, 3xx                         -> FAILED    "http_4xx" / "http_status"
 *   2xx, body over the cap                      -> FAILED    "too_large"
 *   2xx, not JSON / nested deeper than 64       -> FAILED    "invalid_json"
 *   2xx, JSON of the wrong shape                -> FAILED    "invalid_response"
 *   2xx, success:false                          -> FAILED    "router_error"
 *   2xx, success:true and a string response     -> SUCCESS
 *
 * Each short code also maps to the runner's kind of failure (router_failure_t: its
 * ROUTER_* error code, stage and type), which the outcome documents use; metadata.receipt
 * is kept for receipt_data.
 *
 * Headers: Retry-After and the x-ratelimit-* budget headers are read here too
 * (router_parse_header, called by router.c for each header line), and a 429 or 503 that
 * carries them becomes a pause hint (router_pause_hint): the router's own words to stop
 * calling that model in that region for a while, which flow control (flow.c) turns into
 * a pause of the key for every worker.
 *
 * Every string handed out is valid UTF-8 without NUL (text.c), so it can go into text
 * and jsonb columns as is. cJSON keeps strings as C strings and would silently cut one
 * at an escaped NUL, so the body is first rewritten in a copy: \u0000 escapes are
 * dropped and lone UTF-16 surrogate escapes (which cJSON rejects, and jsonb too) become
 * \uFFFD. Duplicate keys: the last one wins, as in Go's encoding/json and jsonb.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <limits.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "classify.h"
#include "internal.h"
#include "text.h"

#define ERROR_MAX 2048     /* bytes of error text kept */
#define JSON_MAX_DEPTH 64  /* deeper nesting is refused before parsing */
#define PROVIDER_MAX 255   /* executions.provider_id is varchar(255) */

const char *router_verdict_name(router_verdict_t verdict)
{
    switch (verdict) {
    case ROUTER_SUCCESS: return "success";
    case ROUTER_FAILED: return "failed";
    case ROUTER_TIMEOUT: return "timeout";
    case ROUTER_TRANSIENT: return "transient";
    }
    return "unknown";
}

const char *router_failure_code(router_failure_t failure, long http_status, char *buf, size_t cap)
{
    switch (failure) {
    case ROUTER_FAILURE_NONE: return "";
    case ROUTER_FAILURE_HTTP:
        snprintf(buf, cap, "ROUTER_HTTP_%ld", http_status > 0 ? http_status : 500L);
        return buf;
    case ROUTER_FAILURE_TIMEOUT: return "ROUTER_TIMEOUT";
    case ROUTER_FAILURE_NETWORK: return "ROUTER_NETWORK";
    case ROUTER_FAILURE_JSON: return "ROUTER_JSON_ERROR";
    case ROUTER_FAILURE_ROUTER: return "ROUTER_ERROR";
    case ROUTER_FAILURE_UNKNOWN: break;
    }
    return "ROUTER_UNKNOWN_ERROR";
}

const char *router_failure_stage(router_failure_t failure)
{
    switch (failure) {
    case ROUTER_FAILURE_HTTP: return "router_http_request";
    case ROUTER_FAILURE_TIMEOUT: return "router_http_timeout";
    case ROUTER_FAILURE_NETWORK: return "router_network";
    case ROUTER_FAILURE_JSON: return "router_response_parse";
    case ROUTER_FAILURE_NONE:
    case ROUTER_FAILURE_ROUTER:
    case ROUTER_FAILURE_UNKNOWN: break;
    }
    return "router_inference";
}

const char *router_failure_type(router_failure_t failure)
{
    switch (failure) {
    case ROUTER_FAILURE_HTTP: return "http_error";
    case ROUTER_FAILURE_TIMEOUT: return "timeout";
    case ROUTER_FAILURE_NETWORK: return "network";
    case ROUTER_FAILURE_JSON: return "json_error";
    case ROUTER_FAILURE_ROUTER: return "router_error";
    case ROUTER_FAILURE_NONE:
    case ROUTER_FAILURE_UNKNOWN: break;
    }
    return "unknown";
}

/* The runner's kind of failure of one of our short codes. */
static router_failure_t failure_of_code(const char *code)
{
    static const struct {
        const char *code;
        router_failure_t failure;
    } table[] = {
        {"timeout", ROUTER_FAILURE_TIMEOUT},        {"network", ROUTER_FAILURE_NETWORK},
        {"http_5xx", ROUTER_FAILURE_HTTP},          {"rate_limited", ROUTER_FAILURE_HTTP},
        {"request_timeout", ROUTER_FAILURE_HTTP},   {"http_4xx", ROUTER_FAILURE_HTTP},
        {"http_status", ROUTER_FAILURE_HTTP},       {"too_large", ROUTER_FAILURE_JSON},
        {"invalid_json", ROUTER_FAILURE_JSON},      {"invalid_response", ROUTER_FAILURE_JSON},
        {"router_error", ROUTER_FAILURE_ROUTER},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(code, table[i].code) == 0)
            return table[i].failure;
    return ROUTER_FAILURE_UNKNOWN;
}

void router_outcome_free(router_outcome_t *out)
{
    if (out == NULL)
        return;
    free(out->response);
    free(out->provider);
    free(out->metadata_json);
    free(out->error);
    free(out->error_code);
    free(out->receipt_json);
    out->response = out->provider = out->metadata_json = out->error = out->error_code = NULL;
    out->receipt_json = NULL;
}

/* Classification state: the outcome plus a flag for allocation failures. */
typedef struct classifier {
    router_outcome_t *out;
    bool oom;
} classifier_t;

static char *keep(classifier_t *c, char *s)
{
    if (s == NULL)
        c->oom = true;
    return s;
}

/* Sets verdict, error code and the formatted, sanitised, cut error text. */
static void verdict(classifier_t *c, router_verdict_t v, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void verdict(classifier_t *c, router_verdict_t v, const char *code, const char *fmt, ...)
{
    va_list ap;
    char *text = NULL;
    int n;

    c->out->verdict = v;
    c->out->failure = failure_of_code(code);
    free(c->out->error_code);
    free(c->out->error);
    c->out->error_code = keep(c, strdup(code));
    c->out->error = NULL;
    va_start(ap, fmt);
    n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        c->oom = true;
        return;
    }
    c->out->error = keep(c, text_sanitize_max(text, (size_t)n, ERROR_MAX, NULL));
    free(text);
}

static bool curl_is_transient(int code)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT: /* without timed_out: the connect phase timed out */
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
#if LIBCURL_VERSION_NUM >= 0x074400
    case CURLE_HTTP3:
#endif
#if LIBCURL_VERSION_NUM >= 0x074500
    case CURLE_QUIC_CONNECT_ERROR:
#endif
    case CURLE_OUT_OF_MEMORY:       /* a local hiccup, not the job's fault */
    case CURLE_ABORTED_BY_CALLBACK: /* our socket callback failed (out of memory) */
        return true;
    default:
        return false;
    }
}

static const char *curl_text(const router_result_t *r)
{
    if (r->error != NULL && r->error[0] != '\0')
        return r->error;
    return curl_easy_strerror((CURLcode)r->curl_code);
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Non-2xx: "HTTP <code>: <first 2 KiB of the body, sanitised and trimmed>". */
static void classify_http_error(classifier_t *c, const router_result_t *r)
{
    long status = r->http_status;
    size_t len = r->body_len, n = 0;
    const char *body = r->body != NULL ? r->body : "";
    char *text;
    router_verdict_t v = ROUTER_FAILED;
    const char *code = "http_status";

    if (status >= 500 && status <= 599) {
        v = ROUTER_TRANSIENT;
        code = "http_5xx";
    } else if (status == 429) {
        v = ROUTER_TRANSIENT;
        code = "rate_limited";
    } else if (status == 408) {
        v = ROUTER_TRANSIENT;
        code = "request_timeout";
    } else if (status >= 400 && status <= 499) {
        code = "http_4xx";
    }
    while (len > 0 && is_space(body[0])) {
        body++;
        len--;
    }
    len = text_utf8_prefix(body, len, ERROR_MAX);
    text = keep(c, text_sanitize(body, len, &n));
    if (text == NULL)
        return;
    while (n > 0 && is_space(text[n - 1]))
        text[--n] = '\0';
    if (n == 0)
        verdict(c, v, code, "HTTP %ld", status);
    else
        verdict(c, v, code, "HTTP %ld: %s", status, text);
    free(text);
}

static bool is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* Value of the 4 hex digits at s (all checked by the caller with is_hex). */
static unsigned hex4(const char *s)
{
    unsigned v = 0;

    for (int i = 0; i < 4; i++) {
        char ch = s[i];
        unsigned d = (ch >= '0' && ch <= '9') ? (unsigned)(ch - '0')
                   : (ch >= 'a' && ch <= 'f') ? (unsigned)(ch - 'a' + 10)
                                              : (unsigned)(ch - 'A' + 10);
        v = v * 16 + d;
    }
    return v;
}

/* Index of a "\uXXXX" escape's value at s[i] (s[i] == '\\'), or -1 when it is not one. */
static long unicode_escape(const char *s, size_t len, size_t i)
{
    if (i + 6 > len || s[i + 1] != 'u')
        return -1;
    for (size_t k = 2; k < 6; k++)
        if (!is_hex(s[i + k]))
            return -1;
    return (long)hex4(s + i + 2);
}

/*
 * Copies the body for cJSON: refuses raw NUL bytes (never valid JSON) and nesting
 * deeper than JSON_MAX_DEPTH (rq_json_too_deep); inside strings drops \u0000 escapes
 * and replaces lone surrogate escapes by \uFFFD. Only real escapes are touched: the
 * scan knows whether it is inside a string and skips every escape pair, so "\\u0000"
 * (an escaped backslash, then the text u0000) stays as it is. Returns 0, -1 with *why
 * set, or -2 (memory).
 */
static int json_prepare(const char *body, size_t len, char **out, size_t *out_len, const char **why)
{
    char *copy = malloc(len + 1);
    size_t r = 0, w = 0, deep = rq_json_too_deep(body, len, JSON_MAX_DEPTH);
    bool in_string = false;

    if (copy == NULL)
        return -2;
    while (r < len) {
        char ch = body[r];
        if (ch == '\0' || r == deep) { /* body[deep] opens the level too many */
            *why = ch == '\0' ? "a NUL byte" : "nesting deeper than 64 levels";
            goto refuse;
        }
        if (!in_string) {
            if (ch == '"')
                in_string = true;
            copy[w++] = body[r++];
            continue;
        }
        if (ch == '"') {
            in_string = false;
            copy[w++] = body[r++];
            continue;
        }
        if (ch != '\\' || r + 1 >= len) {
            copy[w++] = body[r++];
            continue;
        }
        long cp = unicode_escape(body, len, r);
        if (cp == 0) {
            r += 6; /* drop the NUL */
        } else if (cp >= 0xD800 && cp <= 0xDBFF) {
            long low = (r + 6 < len && body[r + 6] == '\\') ? unicode_escape(body, len, r + 6) : -1;
            if (low >= 0xDC00 && low <= 0xDFFF) {
                memcpy(copy + w, body + r, 12);
                w += 12;
                r += 12;
            } else {
                memcpy(copy + w, "\\uFFFD", 6);
                w += 6;
                r += 6;
            }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            memcpy(copy + w, "\\uFFFD", 6);
            w += 6;
            r += 6;
        } else {
            /* any other escape pair, copied whole so its second char is not re-read */
            copy[w++] = body[r++];
            copy[w++] = body[r++];
        }
    }
    copy[w] = '\0';
    *out = copy;
    *out_len = w;
    return 0;
refuse:
    free(copy);
    return -1;
}

/* The last member named key (duplicate keys: last wins), or NULL. */
static const cJSON *member(const cJSON *object, const char *key)
{
    const cJSON *found = NULL;

    for (const cJSON *item = object->child; item != NULL; item = item->next)
        if (item->string != NULL && strcmp(item->string, key) == 0)
            found = item;
    return found;
}

static char *clean_string(classifier_t *c, const char *s, size_t max)
{
    return keep(c, text_sanitize_max(s, strlen(s), max, NULL));
}

/*
 * metadata.receipt as the runner stores it in receipt_data: an object (or any JSON value
 * but null) as it is; a string is the receipt's JSON text (the runner writes its bytes
 * into the jsonb column), and a string that is not JSON is kept as a JSON string rather
 * than refused. A receipt that amounts to null (null, "null", a number no double holds)
 * is none.
 */
static void take_receipt(classifier_t *c, const cJSON *receipt)
{
    cJSON *parsed = NULL;
    char *printed = NULL;

    if (receipt == NULL || cJSON_IsNull(receipt))
        return;
    if (cJSON_IsString(receipt)) {
        const char *text = receipt->valuestring;
        size_t len = strlen(text);
        char *copy = NULL;
        size_t copy_len = 0;
        const char *why = NULL;
        int rc = json_prepare(text, len, &copy, &copy_len, &why);
        if (rc == -2) {
            c->oom = true;
            return;
        }
        if (rc == 0) {
            const char *end = NULL;
            parsed = cJSON_ParseWithLengthOpts(copy, copy_len, &end, 0);
            while (parsed != NULL && end < copy + copy_len && is_space(*end))
                end++;
            if (parsed != NULL && end != copy + copy_len) {
                cJSON_Delete(parsed);
                parsed = NULL;
            }
            free(copy);
        }
    }
    if (parsed != NULL && cJSON_IsNull(parsed)) {
        cJSON_Delete(parsed); /* the text "null": no receipt, as for a JSON null */
        return;
    }
    printed = keep(c, cJSON_PrintUnformatted(parsed != NULL ? parsed : receipt));
    cJSON_Delete(parsed);
    if (printed != NULL && strcmp(printed, "null") == 0) {
        cJSON_free(printed); /* a number beyond a double (1e999) prints as null: none */
        return;
    }
    if (printed != NULL) {
        c->out->receipt_json = clean_string(c, printed, SIZE_MAX);
        cJSON_free(printed);
    }
}

/* The fields that are kept whatever success says: provider, timing, metadata. */
static void take_common(classifier_t *c, const cJSON *root)
{
    const cJSON *provider = member(root, "provider_used");
    const cJSON *seconds = member(root, "inference_time");
    const cJSON *metadata = member(root, "metadata");

    if (cJSON_IsString(provider))
        c->out->provider = clean_string(c, provider->valuestring, PROVIDER_MAX);
    if (cJSON_IsNumber(seconds) && isfinite(seconds->valuedouble) && seconds->valuedouble >= 0)
        c->out->inference_sec = seconds->valuedouble;
    if (cJSON_IsObject(metadata)) {
        /* cJSON prints non-finite numbers as null and escapes control characters;
         * bytes of invalid UTF-8 inside strings pass through and are replaced here. */
        char *printed = keep(c, cJSON_PrintUnformatted(metadata));
        if (printed != NULL) {
            c->out->metadata_json = clean_string(c, printed, SIZE_MAX);
            cJSON_free(printed);
        }
        take_receipt(c, member(metadata, "receipt"));
    }
}

static void classify_body(classifier_t *c, const router_result_t *r)
{
    const char *body = r->body != NULL ? r->body : "";
    const char *why = NULL, *end = NULL;
    char *copy = NULL;
    size_t copy_len = 0;
    cJSON *root = NULL;
    const cJSON *success, *field;
    int rc;

    if (r->too_large) {
        /* router.c keeps exactly max_body bytes before it aborts, so body_len is the cap */
        verdict(c, ROUTER_FAILED, "too_large", "response larger than %zu bytes", r->body_len);
        return;
    }
    if (r->body_len == 0) {
        verdict(c, ROUTER_FAILED, "invalid_json", "router returned an empty body (HTTP %ld)",
                r->http_status);
        return;
    }
    rc = json_prepare(body, r->body_len, &copy, &copy_len, &why);
    if (rc == -2) {
        c->oom = true;
        return;
    }
    if (rc < 0) {
        verdict(c, ROUTER_FAILED, "invalid_json", "router returned invalid JSON: %s", why);
        return;
    }
    root = cJSON_ParseWithLengthOpts(copy, copy_len, &end, 0);
    if (root == NULL) {
        verdict(c, ROUTER_FAILED, "invalid_json", "router returned invalid JSON");
        goto cleanup;
    }
    while (end < copy + copy_len && is_space(*end))
        end++;
    if (end != copy + copy_len) {
        verdict(c, ROUTER_FAILED, "invalid_json", "router returned invalid JSON: data after the value");
        goto cleanup;
    }
    if (!cJSON_IsObject(root)) {
        verdict(c, ROUTER_FAILED, "invalid_response", "router returned JSON that is not an object");
        goto cleanup;
    }
    take_common(c, root);
    success = member(root, "success");
    if (!cJSON_IsBool(success)) {
        verdict(c, ROUTER_FAILED, "invalid_response",
                "router answer has no boolean \"success\" field");
        goto cleanup;
    }
    if (cJSON_IsFalse(success)) {
        field = member(root, "error");
        char *text = NULL;
        if (cJSON_IsString(field))
            text = clean_string(c, field->valuestring, ERROR_MAX);
        if (text != NULL && text[0] != '\0')
            verdict(c, ROUTER_FAILED, "router_error", "%s", text);
        else
            verdict(c, ROUTER_FAILED, "router_error",
                    "router returned success:false without an error");
        free(text);
        goto cleanup;
    }
    field = member(root, "response");
    if (field == NULL) {
        verdict(c, ROUTER_FAILED, "invalid_response", "router returned success:true without a response");
    } else if (!cJSON_IsString(field)) {
        verdict(c, ROUTER_FAILED, "invalid_response", "router returned a response that is not a string");
    } else {
        c->out->verdict = ROUTER_SUCCESS;
        c->out->failure = ROUTER_FAILURE_NONE;
        c->out->response = clean_string(c, field->valuestring, SIZE_MAX);
    }
cleanup:
    cJSON_Delete(root);
    free(copy);
}

/* ------------------------------------------------------------------ headers */

/* The value without the blanks around it, NUL-terminated in text; false when empty or
 * longer than cap - 1. */
static bool header_value(const char *value, size_t len, char *text, size_t cap)
{
    size_t start = 0, end = len;
    while (start < end && strchr(" \t", value[start]) != NULL)
        start++;
    while (end > start && strchr(" \t\r\n", value[end - 1]) != NULL)
        end--;
    if (end == start || end - start >= cap)
        return false;
    memcpy(text, value + start, end - start);
    text[end - start] = '\0';
    return true;
}

static long clamp_hint(double ms)
{
    if (!(ms > 0))
        return 0;
    if (ms >= (double)ROUTER_HINT_MAX_MS)
        return ROUTER_HINT_MAX_MS;
    return (long)ceil(ms);
}

/* A time in seconds since the epoch, as a delay from now. */
static long until_time(double when, time_t now)
{
    return clamp_hint((when - (double)now) * 1000.0);
}

long router_parse_retry_after(const char *value, size_t len, time_t now)
{
    char text[128];
    if (!header_value(value, len, text, sizeof text))
        return -1;
    size_t n = strlen(text);
    if (strspn(text, "0123456789") == n) {
        double seconds = 0;
        for (const char *p = text; *p != '\0' && seconds < 1e12; p++)
            seconds = seconds * 10 + (*p - '0');
        return clamp_hint(seconds * 1000.0);
    }
    time_t when = curl_getdate(text, NULL);
    if (when == (time_t)-1)
        return -1;
    return until_time((double)when, now);
}

/* Digits, optionally a '.' and more digits; false when there is no digit. */
static bool read_decimal(const char **pp, double *out)
{
    const char *p = *pp;
    double v = 0, scale = 1;
    bool digits = false;
    for (; isdigit((unsigned char)*p); p++) {
        if (v < 1e15)
            v = v * 10 + (*p - '0');
        digits = true;
    }
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++) {
            scale /= 10;
            v += (*p - '0') * scale;
            digits = true;
        }
    *pp = p;
    *out = v;
    return digits;
}

long router_parse_reset(const char *value, size_t len, time_t now)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {/* longest first where one is the start of another */
                 {"ms", 1},        {"us", 1e-3}, {"\xc2\xb5s", 1e-3}, {"ns", 1e-6},
                 {"h", 3600000.0}, {"m", 60000}, {"s", 1000}};
    char text[64];
    if (!header_value(value, len, text, sizeof text))
        return -1;
    const char *p = text;
    double total = 0, v = 0;
    if (!read_decimal(&p, &v))
        return -1;
    if (*p == '\0') /* a bare number: seconds, or a Unix time */
        return v >= 1e9 ? until_time(v, now) : clamp_hint(v * 1000.0);
    for (p = text; *p != '\0';) {
        if (!read_decimal(&p, &v))
            return -1;
        size_t u = 0;
        while (u < sizeof units / sizeof units[0] &&
               strncmp(p, units[u].unit, strlen(units[u].unit)) != 0)
            u++;
        if (u == sizeof units / sizeof units[0])
            return -1;
        p += strlen(units[u].unit);
        total += v * units[u].ms;
    }
    return clamp_hint(total);
}

long router_parse_count(const char *value, size_t len)
{
    char text[32];
    if (!header_value(value, len, text, sizeof text) || strspn(text, "0123456789") != strlen(text))
        return -1;
    long v = 0;
    for (const char *p = text; *p != '\0'; p++) {
        if (v > (LONG_MAX - 9) / 10)
            return LONG_MAX;
        v = v * 10 + (*p - '0');
    }
    return v;
}

void router_parse_header(const char *line, size_t len, time_t now, long *retry_after_ms,
                         router_ratelimit_t *rl)
{
    static const struct {
        const char *name;
        unsigned bit;
    } budget[] = {
        {"x-ratelimit-reset-requests", ROUTER_RL_RESET_REQUESTS},
        {"x-ratelimit-reset-tokens", ROUTER_RL_RESET_TOKENS},
        {"x-ratelimit-remaining-requests", ROUTER_RL_REMAINING_REQUESTS},
        {"x-ratelimit-remaining-tokens", ROUTER_RL_REMAINING_TOKENS},
    };
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return;
    size_t name_len = (size_t)(colon - line);
    const char *value = colon + 1;
    size_t value_len = len - name_len - 1;
    if (name_len == 11 && strncasecmp(line, "retry-after", 11) == 0) {
        long ms = router_parse_retry_after(value, value_len, now);
        if (ms >= 0)
            *retry_after_ms = ms;
        return;
    }
    for (size_t i = 0; i < sizeof budget / sizeof budget[0]; i++) {
        if (name_len != strlen(budget[i].name) || strncasecmp(line, budget[i].name, name_len) != 0)
            continue;
        bool reset = budget[i].bit & (ROUTER_RL_RESET_REQUESTS | ROUTER_RL_RESET_TOKENS);
        long v = reset ? router_parse_reset(value, value_len, now) : router_parse_count(value, value_len);
        if (v < 0)
            return;
        long *slot = budget[i].bit == ROUTER_RL_RESET_REQUESTS       ? &rl->reset_requests_ms
                     : budget[i].bit == ROUTER_RL_RESET_TOKENS       ? &rl->reset_tokens_ms
                     : budget[i].bit == ROUTER_RL_REMAINING_REQUESTS ? &rl->remaining_requests
                                                                     : &rl->remaining_tokens;
        *slot = v;
        rl->have |= budget[i].bit;
        return;
    }
}

/* An exhausted budget (remaining 0) with its reset: the time to wait, else -1. */
static long budget_wait(const router_ratelimit_t *rl, unsigned remaining_bit, long remaining,
                        unsigned reset_bit, long reset_ms)
{
    return (rl->have & remaining_bit) && remaining == 0 && (rl->have & reset_bit) ? reset_ms : -1;
}

const char *router_pause_hint(const router_result_t *r, long *pause_ms)
{
    const router_ratelimit_t *rl = &r->ratelimit;
    const char *cause = NULL;
    long pause = -1;
    *pause_ms = -1;
    if ((r->http_status != 429 && r->http_status != 503) || r->curl_code != CURLE_OK || r->timed_out)
        return NULL;
    if (r->retry_after_ms >= 0) {
        pause = r->retry_after_ms;
        cause = "retry_after";
    }
    long waits[] = {budget_wait(rl, ROUTER_RL_REMAINING_REQUESTS, rl->remaining_requests,
                                ROUTER_RL_RESET_REQUESTS, rl->reset_requests_ms),
                    budget_wait(rl, ROUTER_RL_REMAINING_TOKENS, rl->remaining_tokens,
                                ROUTER_RL_RESET_TOKENS, rl->reset_tokens_ms)};
    for (size_t i = 0; i < 2; i++) {
        if (waits[i] < 0)
            continue;
        if (waits[i] > pause)
            pause = waits[i];
        if (cause == NULL)
            cause = "ratelimit";
    }
    *pause_ms = pause;
    return cause;
}

/* ------------------------------------------------------------------ the verdict */

void router_classify(const router_result_t *r, router_outcome_t *out)
{
    classifier_t c = {.out = out, .oom = false};

    memset(out, 0, sizeof *out);
    out->verdict = ROUTER_FAILED;
    out->failure = ROUTER_FAILURE_UNKNOWN;
    out->http_status = r->http_status;
    out->retry_after_ms = r->retry_after_ms;
    out->pause_ms = -1;

    if (r->timed_out) {
        verdict(&c, ROUTER_TIMEOUT, "timeout", "router call timed out after %.1f s: %s",
                r->total_sec, curl_text(r));
    } else if (r->curl_code != CURLE_OK && !r->too_large) {
        if (curl_is_transient(r->curl_code))
            verdict(&c, ROUTER_TRANSIENT, "network", "router unreachable: %s (curl %d)",
                    curl_text(r), r->curl_code);
        else
            verdict(&c, ROUTER_FAILED, "curl_error", "router call failed: %s (curl %d)",
                    curl_text(r), r->curl_code);
    } else if (r->http_status >= 200 && r->http_status <= 299) {
        classify_body(&c, r);
    } else if (r->http_status == 0) {
        verdict(&c, ROUTER_FAILED, "invalid_response", "router answered without an HTTP status");
    } else {
        classify_http_error(&c, r);
    }

    if (c.oom) {
        /* Out of memory is this process's problem, not the job's: try again later. */
        router_outcome_free(out);
        out->verdict = ROUTER_TRANSIENT;
        out->failure = ROUTER_FAILURE_UNKNOWN;
        out->inference_sec = 0;
    }
    if (out->verdict == ROUTER_TRANSIENT)
        out->pause_cause = router_pause_hint(r, &out->pause_ms);
}
