/*
 * router_classify: every row of DESIGN §5 that concerns a router answer, as a table of
 * (HTTP status, curl code, body) -> verdict, error code and fields; then the hostile
 * inputs: NUL (raw and escaped), invalid UTF-8, lone surrogates, deep nesting, huge
 * numbers, duplicate keys, empty and oversized bodies, long error texts. Every string
 * the classifier hands out must be valid UTF-8 without NUL (text_is_clean).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "classify.h"
#include "text.h"

#define FFFD "\xEF\xBF\xBD"
#define B(s) .body = (s), .body_len = sizeof(s) - 1
#define OK_JSON(resp) "{\"success\":true,\"response\":" resp "}"

typedef struct classify_case {
    const char *name;
    long status;
    int curl;
    const char *curl_error;
    bool too_large;
    bool timed_out;
    long retry_after_ms; /* 0 in the table means "absent" (-1) */
    const char *body;
    size_t body_len;

    router_verdict_t verdict;
    const char *error_code; /* NULL: must be NULL */
    const char *error;      /* NULL: must be NULL; else exact, or a prefix with error_prefix */
    bool error_prefix;
    const char *response;   /* NULL: must be NULL */
    const char *provider;
    const char *metadata;
    double inference_sec;
} classify_case_t;

static const classify_case_t CASES[] = {
    /* ---------------------------------------------------------------- success */
    {.name = "2xx success:true with every field", .status = 200,
     B("{\"success\":true,\"response\":\"Paris is the capital.\",\"provider_used\":\"modal-us\","
       "\"inference_time\":1.25,\"metadata\":{\"tokens\":12,\"model\":\"llama3.2-1b\"},\"error\":\"\"}"),
     .verdict = ROUTER_SUCCESS, .response = "Paris is the capital.", .provider = "modal-us",
     .metadata = "{\"tokens\":12,\"model\":\"llama3.2-1b\"}", .inference_sec = 1.25},
    {.name = "201 counts as 2xx", .status = 201, B(OK_JSON("\"yes\"")), .verdict = ROUTER_SUCCESS,
     .response = "yes"},
    {.name = "empty answer is still an answer", .status = 200, B(OK_JSON("\"\"")),
     .verdict = ROUTER_SUCCESS, .response = ""},
    {.name = "trailing whitespace is fine", .status = 200, B(OK_JSON("\"x\"") " \r\n\t"),
     .verdict = ROUTER_SUCCESS, .response = "x"},
    {.name = "metadata that is not an object is dropped", .status = 200,
     B("{\"success\":true,\"response\":\"x\",\"metadata\":[1,2],\"provider_used\":7}"),
     .verdict = ROUTER_SUCCESS, .response = "x"},
    {.name = "inference_time negative -> 0", .status = 200,
     B("{\"success\":true,\"response\":\"x\",\"inference_time\":-3}"), .verdict = ROUTER_SUCCESS,
     .response = "x"},
    {.name = "inference_time as a string -> 0", .status = 200,
     B("{\"success\":true,\"response\":\"x\",\"inference_time\":\"1.5\"}"), .verdict = ROUTER_SUCCESS,
     .response = "x"},
    {.name = "huge numbers: infinite time -> 0, metadata stays valid JSON", .status = 200,
     B("{\"success\":true,\"response\":\"x\",\"inference_time\":1e999,"
       "\"metadata\":{\"n\":1e999,\"m\":-1e999,\"i\":123456789012345678901234567890}}"),
     .verdict = ROUTER_SUCCESS, .response = "x",
     .metadata = "{\"n\":null,\"m\":null,\"i\":1.2345678901234568e+29}"},
    {.name = "duplicate keys: the last one wins", .status = 200,
     B("{\"success\":false,\"response\":\"first\",\"success\":true,\"response\":\"second\"}"),
     .verdict = ROUTER_SUCCESS, .response = "second"},
    {.name = "duplicate keys: a later success:false wins", .status = 200,
     B("{\"success\":true,\"response\":\"x\",\"success\":false,\"error\":\"no\"}"),
     .verdict = ROUTER_FAILED, .error_code = "router_error", .error = "no"},

    /* ---------------------------------------------------------------- NUL, UTF-8 */
    {.name = "escaped NUL is dropped, not a cut", .status = 200, B(OK_JSON("\"a\\u0000b\\u0000\"")),
     .verdict = ROUTER_SUCCESS, .response = "ab"},
    {.name = "escaped backslash before u0000 is text", .status = 200, B(OK_JSON("\"a\\\\u0000b\"")),
     .verdict = ROUTER_SUCCESS, .response = "a\\u0000b"},
    {.name = "escaped backslash then a real escaped NUL", .status = 200, B(OK_JSON("\"a\\\\\\u0000b\"")),
     .verdict = ROUTER_SUCCESS, .response = "a\\b"},
    {.name = "escaped quote right before an escaped NUL", .status = 200,
     B("{\"success\":true,\"response\":\"x\",\"u0000\":\"\\\"\\u0000\"}"), .verdict = ROUTER_SUCCESS,
     .response = "x"},
    {.name = "escaped NUL in provider and metadata", .status = 200,
     B("{\"success\":true,\"response\":\"x\",\"provider_used\":\"p\\u0000q\",\"metadata\":{\"k\":\"a\\u0000b\"}}"),
     .verdict = ROUTER_SUCCESS, .response = "x", .provider = "pq", .metadata = "{\"k\":\"ab\"}"},
    {.name = "raw NUL byte is not JSON", .status = 200, B("{\"success\":true,\"response\":\"a\0b\"}"),
     .verdict = ROUTER_FAILED, .error_code = "invalid_json", .error = "router returned invalid JSON: a NUL byte"},
    {.name = "invalid UTF-8 in response, provider and metadata", .status = 200,
     B("{\"success\":true,\"response\":\"ok\xFF\xFE\",\"provider_used\":\"\xC3\",\"metadata\":{\"k\":\"\xE2\x82\"}}"),
     .verdict = ROUTER_SUCCESS, .response = "ok" FFFD FFFD, .provider = FFFD, .metadata = "{\"k\":\"" FFFD "\"}"},
    {.name = "surrogate pair decodes", .status = 200, B(OK_JSON("\"\\ud83d\\ude00\"")),
     .verdict = ROUTER_SUCCESS, .response = "\xF0\x9F\x98\x80"},
    {.name = "lone high surrogate -> U+FFFD", .status = 200, B(OK_JSON("\"\\uD800x\"")),
     .verdict = ROUTER_SUCCESS, .response = FFFD "x"},
    {.name = "high surrogate then a non-surrogate escape", .status = 200, B(OK_JSON("\"\\ud800\\u0041\"")),
     .verdict = ROUTER_SUCCESS, .response = FFFD "A"},
    {.name = "lone low surrogate -> U+FFFD", .status = 200, B(OK_JSON("\"\\udc00\"")),
     .verdict = ROUTER_SUCCESS, .response = FFFD},
    {.name = "high surrogate at the end of the body", .status = 200, B("{\"success\":true,\"response\":\"\\ud800"),
     .verdict = ROUTER_FAILED, .error_code = "invalid_json", .error = "router returned invalid JSON"},

    /* ---------------------------------------------------------------- router-level failure */
    {.name = "success:false carries the router's error", .status = 200,
     B("{\"success\":false,\"error\":\"model overloaded\",\"provider_used\":\"golem\",\"inference_time\":0.5}"),
     .verdict = ROUTER_FAILED, .error_code = "router_error", .error = "model overloaded", .provider = "golem",
     .inference_sec = 0.5},
    {.name = "success:false without error", .status = 200, B("{\"success\":false}"),
     .verdict = ROUTER_FAILED, .error_code = "router_error",
     .error = "router returned success:false without an error"},
    {.name = "success:false with empty error", .status = 200, B("{\"success\":false,\"error\":\"\"}"),
     .verdict = ROUTER_FAILED, .error_code = "router_error",
     .error = "router returned success:false without an error"},
    {.name = "success:false with a non-string error", .status = 200, B("{\"success\":false,\"error\":{\"x\":1}}"),
     .verdict = ROUTER_FAILED, .error_code = "router_error",
     .error = "router returned success:false without an error"},
    {.name = "success:false error with invalid UTF-8 and escaped NUL", .status = 200,
     B("{\"success\":false,\"error\":\"bad\xFF\\u0000!\"}"), .verdict = ROUTER_FAILED,
     .error_code = "router_error", .error = "bad" FFFD "!"},

    /* ---------------------------------------------------------------- wrong shapes */
    {.name = "empty body", .status = 200, B(""), .verdict = ROUTER_FAILED, .error_code = "invalid_json",
     .error = "router returned an empty body (HTTP 200)"},
    {.name = "204 no content", .status = 204, B(""), .verdict = ROUTER_FAILED, .error_code = "invalid_json",
     .error = "router returned an empty body (HTTP 204)"},
    {.name = "whitespace only", .status = 200, B("  \n"), .verdict = ROUTER_FAILED,
     .error_code = "invalid_json", .error = "router returned invalid JSON"},
    {.name = "not JSON", .status = 200, B("<html>oops</html>"), .verdict = ROUTER_FAILED,
     .error_code = "invalid_json", .error = "router returned invalid JSON"},
    {.name = "truncated JSON", .status = 200, B("{\"success\":true,\"respo"), .verdict = ROUTER_FAILED,
     .error_code = "invalid_json", .error = "router returned invalid JSON"},
    {.name = "data after the JSON value", .status = 200, B(OK_JSON("\"x\"") "{}"), .verdict = ROUTER_FAILED,
     .error_code = "invalid_json", .error = "router returned invalid JSON: data after the value"},
    {.name = "JSON array", .status = 200, B("[{\"success\":true,\"response\":\"x\"}]"), .verdict = ROUTER_FAILED,
     .error_code = "invalid_response", .error = "router returned JSON that is not an object"},
    {.name = "JSON string", .status = 200, B("\"hello\""), .verdict = ROUTER_FAILED,
     .error_code = "invalid_response", .error = "router returned JSON that is not an object"},
    {.name = "JSON null", .status = 200, B("null"), .verdict = ROUTER_FAILED,
     .error_code = "invalid_response", .error = "router returned JSON that is not an object"},
    {.name = "success missing", .status = 200, B("{\"response\":\"x\"}"), .verdict = ROUTER_FAILED,
     .error_code = "invalid_response", .error = "router answer has no boolean \"success\" field"},
    {.name = "success as a string", .status = 200, B("{\"success\":\"true\",\"response\":\"x\"}"),
     .verdict = ROUTER_FAILED, .error_code = "invalid_response",
     .error = "router answer has no boolean \"success\" field"},
    {.name = "success as a number", .status = 200, B("{\"success\":1,\"response\":\"x\"}"),
     .verdict = ROUTER_FAILED, .error_code = "invalid_response",
     .error = "router answer has no boolean \"success\" field"},
    {.name = "success:true without response", .status = 200, B("{\"success\":true,\"provider_used\":\"p\"}"),
     .verdict = ROUTER_FAILED, .error_code = "invalid_response",
     .error = "router returned success:true without a response", .provider = "p"},
    {.name = "success:true with a numeric response", .status = 200, B(OK_JSON("42")),
     .verdict = ROUTER_FAILED, .error_code = "invalid_response",
     .error = "router returned a response that is not a string"},
    {.name = "success:true with a null response", .status = 200, B(OK_JSON("null")),
     .verdict = ROUTER_FAILED, .error_code = "invalid_response",
     .error = "router returned a response that is not a string"},
    {.name = "2xx over the size cap", .status = 200, .too_large = true, .curl = CURLE_WRITE_ERROR,
     .body = "{\"success\":true,\"response\":\"xxxx", .body_len = 32, .verdict = ROUTER_FAILED,
     .error_code = "too_large", .error = "response larger than 32 bytes"},

    /* ---------------------------------------------------------------- HTTP status */
    {.name = "404", .status = 404, B("Not Found\n"), .verdict = ROUTER_FAILED, .error_code = "http_4xx",
     .error = "HTTP 404: Not Found"},
    {.name = "400 with a JSON body", .status = 400, B("{\"error\":\"bad request\"}"),
     .verdict = ROUTER_FAILED, .error_code = "http_4xx", .error = "HTTP 400: {\"error\":\"bad request\"}"},
    {.name = "401 without a body", .status = 401, B(""), .verdict = ROUTER_FAILED,
     .error_code = "http_4xx", .error = "HTTP 401"},
    {.name = "422 even with a success body", .status = 422, B(OK_JSON("\"x\"")), .verdict = ROUTER_FAILED,
     .error_code = "http_4xx", .error = "HTTP 422: " OK_JSON("\"x\"")},
    {.name = "408 is transient", .status = 408, B("slow"), .verdict = ROUTER_TRANSIENT,
     .error_code = "request_timeout", .error = "HTTP 408: slow"},
    {.name = "429 is transient and keeps Retry-After", .status = 429, .retry_after_ms = 5000,
     B("rate limited"), .verdict = ROUTER_TRANSIENT, .error_code = "rate_limited",
     .error = "HTTP 429: rate limited"},
    {.name = "500", .status = 500, B("Internal Server Error"), .verdict = ROUTER_TRANSIENT,
     .error_code = "http_5xx", .error = "HTTP 500: Internal Server Error"},
    {.name = "502", .status = 502, B("  bad gateway  "), .verdict = ROUTER_TRANSIENT,
     .error_code = "http_5xx", .error = "HTTP 502: bad gateway"},
    {.name = "503 with Retry-After", .status = 503, .retry_after_ms = 120000, B("busy"),
     .verdict = ROUTER_TRANSIENT, .error_code = "http_5xx", .error = "HTTP 503: busy"},
    {.name = "504", .status = 504, B(""), .verdict = ROUTER_TRANSIENT, .error_code = "http_5xx",
     .error = "HTTP 504"},
    {.name = "503 body with NUL and invalid UTF-8", .status = 503, B("down\0 \xFF!"),
     .verdict = ROUTER_TRANSIENT, .error_code = "http_5xx", .error = "HTTP 503: down " FFFD "!"},
    {.name = "503 body over the cap is still a 503", .status = 503, .too_large = true,
     .curl = CURLE_WRITE_ERROR, B("<html>"), .verdict = ROUTER_TRANSIENT, .error_code = "http_5xx",
     .error = "HTTP 503: <html>"},
    {.name = "302 redirect is not followed", .status = 302, B("moved"), .verdict = ROUTER_FAILED,
     .error_code = "http_status", .error = "HTTP 302: moved"},
    {.name = "no status without a curl error", .status = 0, B(""), .verdict = ROUTER_FAILED,
     .error_code = "invalid_response", .error = "router answered without an HTTP status"},

    /* ---------------------------------------------------------------- curl */
    {.name = "connection refused", .curl = CURLE_COULDNT_CONNECT,
     .curl_error = "Failed to connect to 127.0.0.1 port 1: Connection refused", B(""),
     .verdict = ROUTER_TRANSIENT, .error_code = "network",
     .error = "router unreachable: Failed to connect to 127.0.0.1 port 1: Connection refused (curl 7)"},
    {.name = "DNS failure", .curl = CURLE_COULDNT_RESOLVE_HOST, B(""), .verdict = ROUTER_TRANSIENT,
     .error_code = "network", .error = "router unreachable: ", .error_prefix = true},
    {.name = "send error", .curl = CURLE_SEND_ERROR, B(""), .verdict = ROUTER_TRANSIENT,
     .error_code = "network", .error = "router unreachable: ", .error_prefix = true},
    {.name = "recv error after a 200 status", .status = 200, .curl = CURLE_RECV_ERROR, B("{\"succ"),
     .verdict = ROUTER_TRANSIENT, .error_code = "network", .error = "router unreachable: ", .error_prefix = true},
    {.name = "got nothing", .curl = CURLE_GOT_NOTHING, B(""), .verdict = ROUTER_TRANSIENT,
     .error_code = "network", .error = "router unreachable: Server returned nothing", .error_prefix = true},
    {.name = "connection cut mid-body", .status = 200, .curl = CURLE_PARTIAL_FILE, B("{"),
     .verdict = ROUTER_TRANSIENT, .error_code = "network", .error = "router unreachable: ", .error_prefix = true},
    {.name = "connect timeout is not the total timeout", .curl = CURLE_OPERATION_TIMEDOUT,
     .curl_error = "Connection timed out after 5001 milliseconds", B(""), .verdict = ROUTER_TRANSIENT,
     .error_code = "network",
     .error = "router unreachable: Connection timed out after 5001 milliseconds (curl 28)"},
    {.name = "total timeout", .curl = CURLE_OPERATION_TIMEDOUT, .timed_out = true,
     .curl_error = "Operation timed out after 60000 milliseconds with 0 bytes received", B(""),
     .verdict = ROUTER_TIMEOUT, .error_code = "timeout",
     .error = "router call timed out after 60.0 s: Operation timed out after 60000 milliseconds with 0 bytes received"},
    {.name = "total timeout after a 200 status", .status = 200, .curl = CURLE_OPERATION_TIMEDOUT,
     .timed_out = true, B("{\"success\":"), .verdict = ROUTER_TIMEOUT, .error_code = "timeout",
     .error = "router call timed out after 60.0 s: ", .error_prefix = true},
    {.name = "certificate problem is not transient", .curl = CURLE_PEER_FAILED_VERIFICATION, B(""),
     .verdict = ROUTER_FAILED, .error_code = "curl_error", .error = "router call failed: ", .error_prefix = true},
    {.name = "unsupported protocol", .curl = CURLE_UNSUPPORTED_PROTOCOL, .curl_error = "nope", B(""),
     .verdict = ROUTER_FAILED, .error_code = "curl_error", .error = "router call failed: nope (curl 1)"},
};

static router_result_t make_result(long status, int curl, const char *body, size_t len)
{
    router_result_t r;

    memset(&r, 0, sizeof r);
    r.curl_code = curl;
    r.http_status = status;
    r.body = body;
    r.body_len = len;
    r.total_sec = 60.0;
    r.retry_after_ms = -1;
    r.error = "";
    return r;
}

static void assert_clean(const char *s)
{
    if (s != NULL)
        assert_true(text_is_clean(s, strlen(s)));
}

static void assert_optional_string(const char *what, const char *want, const char *got)
{
    if (want == NULL && got == NULL)
        return;
    if (want == NULL || got == NULL || strcmp(want, got) != 0) {
        print_error("%s: want %s%s%s, got %s%s%s\n", what, want ? "\"" : "", want ? want : "NULL",
                    want ? "\"" : "", got ? "\"" : "", got ? got : "NULL", got ? "\"" : "");
        fail();
    }
}

static void check_outcome_clean(const router_outcome_t *o)
{
    assert_clean(o->response);
    assert_clean(o->provider);
    assert_clean(o->metadata_json);
    assert_clean(o->error);
    if (o->error != NULL)
        assert_true(strlen(o->error) <= 2048);
    if (o->verdict != ROUTER_SUCCESS)
        assert_non_null(o->error_code);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const classify_case_t *c = &CASES[i];
        router_result_t r = make_result(c->status, c->curl, c->body, c->body_len);
        router_outcome_t o;
        /* like router.c: the body is NUL-terminated even when it holds NUL bytes */
        char *body = malloc(c->body_len + 1);

        assert_non_null(body);
        memcpy(body, c->body, c->body_len);
        body[c->body_len] = '\0';
        r.body = body;
        r.too_large = c->too_large;
        r.timed_out = c->timed_out;
        r.retry_after_ms = c->retry_after_ms != 0 ? c->retry_after_ms : -1;
        if (c->curl_error != NULL)
            r.error = c->curl_error;
        print_message("case: %s\n", c->name);
        router_classify(&r, &o);
        if (o.verdict != c->verdict) {
            print_error("%s: verdict %s, want %s (error %s)\n", c->name, router_verdict_name(o.verdict),
                        router_verdict_name(c->verdict), o.error ? o.error : "NULL");
            fail();
        }
        assert_int_equal(o.http_status, c->status);
        assert_int_equal(o.retry_after_ms, r.retry_after_ms);
        assert_optional_string("error_code", c->error_code, o.error_code);
        if (c->error_prefix) {
            assert_non_null(o.error);
            if (strncmp(o.error, c->error, strlen(c->error)) != 0) {
                print_error("%s: error \"%s\" does not start with \"%s\"\n", c->name, o.error, c->error);
                fail();
            }
        } else {
            assert_optional_string("error", c->error, o.error);
        }
        assert_optional_string("response", c->response, o.response);
        assert_optional_string("provider", c->provider, o.provider);
        assert_optional_string("metadata", c->metadata, o.metadata_json);
        assert_true(o.inference_sec == c->inference_sec);
        check_outcome_clean(&o);
        router_outcome_free(&o);
        free(body);
    }
}

/* {"success":true,"response":"x","metadata":{"a":[[...]]}} with `arrays` brackets:
 * nesting depth = 2 + arrays. */
static char *nested_body(int arrays)
{
    size_t cap = (size_t)arrays * 2 + 128;
    char *s = malloc(cap);
    size_t n;

    assert_non_null(s);
    n = (size_t)snprintf(s, cap, "{\"success\":true,\"response\":\"x\",\"metadata\":{\"a\":");
    for (int i = 0; i < arrays; i++)
        s[n++] = '[';
    for (int i = 0; i < arrays; i++)
        s[n++] = ']';
    memcpy(s + n, "}}", 3);
    return s;
}

static void classify_200(const char *body, size_t len, router_outcome_t *o)
{
    router_result_t r = make_result(200, 0, body, len);

    router_classify(&r, o);
    check_outcome_clean(o);
}

static void test_nesting_limit(void **state)
{
    router_outcome_t o;
    char *body;

    (void)state;
    body = nested_body(62); /* depth 64: accepted */
    classify_200(body, strlen(body), &o);
    assert_int_equal(o.verdict, ROUTER_SUCCESS);
    assert_non_null(o.metadata_json);
    assert_int_equal(strlen(o.metadata_json), 62 * 2 + 6);
    router_outcome_free(&o);
    free(body);

    body = nested_body(63); /* depth 65: refused before parsing */
    classify_200(body, strlen(body), &o);
    assert_int_equal(o.verdict, ROUTER_FAILED);
    assert_string_equal(o.error_code, "invalid_json");
    assert_string_equal(o.error, "router returned invalid JSON: nesting deeper than 64 levels");
    router_outcome_free(&o);
    free(body);

    body = nested_body(1000000); /* would exhaust the stack of a naive recursive parser */
    classify_200(body, strlen(body), &o);
    assert_int_equal(o.verdict, ROUTER_FAILED);
    assert_string_equal(o.error_code, "invalid_json");
    router_outcome_free(&o);
    free(body);
}

static void test_brackets_inside_strings_do_not_nest(void **state)
{
    char body[400];
    char brackets[201];
    router_outcome_t o;

    (void)state;
    memset(brackets, '[', 200);
    brackets[200] = '\0';
    snprintf(body, sizeof body, "{\"success\":true,\"response\":\"%s\"}", brackets);
    classify_200(body, strlen(body), &o);
    assert_int_equal(o.verdict, ROUTER_SUCCESS);
    assert_string_equal(o.response, brackets);
    router_outcome_free(&o);
}

static void test_error_text_cut_at_utf8_boundary(void **state)
{
    size_t count = 3000, n = 0;
    char *body = malloc(8192); /* room for both bodies below */
    router_result_t r;
    router_outcome_t o;

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < count; i++) {
        body[n++] = '\xC3'; /* é */
        body[n++] = '\xA9';
    }
    body[n] = '\0';
    r = make_result(503, 0, body, n);
    router_classify(&r, &o);
    assert_int_equal(o.verdict, ROUTER_TRANSIENT);
    check_outcome_clean(&o);
    assert_true(strncmp(o.error, "HTTP 503: \xC3\xA9", 12) == 0);
    assert_true(strlen(o.error) >= 2046);
    router_outcome_free(&o);

    /* a router error message of 5000 bytes of € */
    n = (size_t)sprintf(body, "{\"success\":false,\"error\":\"");
    for (size_t i = 0; i < 2000; i++) {
        memcpy(body + n, "\xE2\x82\xAC", 3);
        n += 3;
    }
    memcpy(body + n, "\"}", 3);
    n += 2;
    classify_200(body, n, &o);
    assert_int_equal(o.verdict, ROUTER_FAILED);
    assert_string_equal(o.error_code, "router_error");
    assert_int_equal(strlen(o.error), 2046); /* 682 whole euro signs */
    router_outcome_free(&o);
    free(body);
}

static void test_provider_fits_varchar_255(void **state)
{
    char body[1024];
    char provider[601];
    router_outcome_t o;

    (void)state;
    for (size_t i = 0; i < 300; i++)
        memcpy(provider + i * 2, "\xC3\xBC", 2); /* ü */
    provider[600] = '\0';
    snprintf(body, sizeof body, "{\"success\":true,\"response\":\"x\",\"provider_used\":\"%s\"}", provider);
    classify_200(body, strlen(body), &o);
    assert_int_equal(o.verdict, ROUTER_SUCCESS);
    assert_int_equal(strlen(o.provider), 254);
    router_outcome_free(&o);
}

static void test_large_response_kept_whole(void **state)
{
    size_t size = 1 << 20;
    char *body = malloc(size + 64);
    size_t n;
    router_outcome_t o;

    (void)state;
    assert_non_null(body);
    n = (size_t)sprintf(body, "{\"success\":true,\"response\":\"");
    memset(body + n, 'z', size);
    n += size;
    memcpy(body + n, "\"}", 3);
    n += 2;
    classify_200(body, n, &o);
    assert_int_equal(o.verdict, ROUTER_SUCCESS);
    assert_int_equal(strlen(o.response), size);
    router_outcome_free(&o);
    free(body);
}

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random token soup never crashes the classifier and never yields unclean text. */
static void test_random_bodies(void **state)
{
    static const char *const tokens[] = {
        "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\udc00", "\\\\", "u0000",
        "\"success\"", "\"response\"", "\"error\"", "\"metadata\"", "\"provider_used\"",
        "\"inference_time\"", "true", "false", "null", "1e999", "-0", "12", "\xFF", "\xC3",
        "\xE2\x82\xAC", " ", "\n", "\0", "\"x\""};
    uint64_t seed = 0xD1B54A32D192ED03ULL;
    char body[512];

    (void)state;
    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        int count = (int)(next_random(&seed) % 40);
        router_outcome_t o;
        if (round % 2 == 0)
            n = (size_t)sprintf(body, "{\"success\":%s,", next_random(&seed) % 2 ? "true" : "false");
        for (int i = 0; i < count; i++) {
            const char *t = tokens[next_random(&seed) % (sizeof tokens / sizeof tokens[0])];
            size_t len = t[0] == '\0' ? 1 : strlen(t);
            memcpy(body + n, t, len);
            n += len;
        }
        body[n] = '\0';
        classify_200(body, n, &o);
        assert_true(o.verdict == ROUTER_SUCCESS || o.verdict == ROUTER_FAILED);
        router_outcome_free(&o);
    }
}

/* Each kind of failure carries the runner's error code, stage and type. */
static void test_runner_vocabulary(void **state)
{
    static const struct {
        const char *name;
        long status;
        int curl;
        bool timed_out;
        const char *body;
        const char *code, *stage, *type;
    } cases[] = {
        {"HTTP 503", 503, 0, false, "busy", "ROUTER_HTTP_503", "router_http_request", "http_error"},
        {"HTTP 404", 404, 0, false, "", "ROUTER_HTTP_404", "router_http_request", "http_error"},
        {"HTTP 429", 429, 0, false, "", "ROUTER_HTTP_429", "router_http_request", "http_error"},
        {"timeout", 0, CURLE_OPERATION_TIMEDOUT, true, "", "ROUTER_TIMEOUT", "router_http_timeout", "timeout"},
        {"refused", 0, CURLE_COULDNT_CONNECT, false, "", "ROUTER_NETWORK", "router_network", "network"},
        {"garbage", 200, 0, false, "{\"success\": tru", "ROUTER_JSON_ERROR", "router_response_parse",
         "json_error"},
        {"not an object", 200, 0, false, "[1]", "ROUTER_JSON_ERROR", "router_response_parse", "json_error"},
        {"success:false", 200, 0, false, "{\"success\":false,\"error\":\"no\"}", "ROUTER_ERROR",
         "router_inference", "router_error"},
        {"other curl error", 0, CURLE_UNSUPPORTED_PROTOCOL, false, "", "ROUTER_UNKNOWN_ERROR",
         "router_inference", "unknown"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        router_result_t r = make_result(cases[i].status, cases[i].curl, cases[i].body, strlen(cases[i].body));
        router_outcome_t o;
        char buf[32];
        r.timed_out = cases[i].timed_out;
        print_message("case: %s\n", cases[i].name);
        router_classify(&r, &o);
        assert_string_equal(router_failure_code(o.failure, o.http_status, buf, sizeof buf), cases[i].code);
        assert_string_equal(router_failure_stage(o.failure), cases[i].stage);
        assert_string_equal(router_failure_type(o.failure), cases[i].type);
        router_outcome_free(&o);
    }
    router_outcome_t ok;
    classify_200(OK_JSON("\"x\""), strlen(OK_JSON("\"x\"")), &ok);
    assert_int_equal(ok.failure, ROUTER_FAILURE_NONE);
    router_outcome_free(&ok);
}

/* metadata.receipt becomes receipt_data as the runner stores it. */
static void test_receipt(void **state)
{
    static const struct {
        const char *receipt; /* the JSON value of metadata.receipt, NULL: absent */
        const char *want;    /* receipt_json, NULL: none */
    } cases[] = {
        {"{\"sig\":\"abc\",\"n\":1}", "{\"sig\":\"abc\",\"n\":1}"},
        {"\"{\\\"sig\\\": \\\"abc\\\"}\"", "{\"sig\":\"abc\"}"}, /* JSON text in a string */
        {"\"not json\"", "\"not json\""},                        /* kept as a JSON string */
        {"\"{\\\"a\\\":1} trailing\"", "\"{\\\"a\\\":1} trailing\""},
        {"[1,2]", "[1,2]"},
        {"null", NULL},
        {"\"null\"", NULL},
        /* a number beyond a double is printed as null: no receipt, as for null itself
         * (found by fuzz_classify); inside a container it stays a null member */
        {"1e999", NULL},
        {"\"-1e400\"", NULL},
        {"[1e999]", "[null]"},
        {NULL, NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256];
        if (cases[i].receipt != NULL)
            snprintf(body, sizeof body, "{\"success\":true,\"response\":\"x\",\"metadata\":{\"receipt\":%s}}",
                     cases[i].receipt);
        else
            snprintf(body, sizeof body, "{\"success\":true,\"response\":\"x\",\"metadata\":{}}");
        router_outcome_t o;
        classify_200(body, strlen(body), &o);
        print_message("receipt: %s\n", cases[i].receipt ? cases[i].receipt : "(absent)");
        assert_int_equal(o.verdict, ROUTER_SUCCESS);
        assert_optional_string("receipt", cases[i].want, o.receipt_json);
        router_outcome_free(&o);
    }
}

static void test_names_and_free(void **state)
{
    router_outcome_t o;

    (void)state;
    assert_string_equal(router_verdict_name(ROUTER_SUCCESS), "success");
    assert_string_equal(router_verdict_name(ROUTER_FAILED), "failed");
    assert_string_equal(router_verdict_name(ROUTER_TIMEOUT), "timeout");
    assert_string_equal(router_verdict_name(ROUTER_TRANSIENT), "transient");
    memset(&o, 0, sizeof o);
    router_outcome_free(&o);
    router_outcome_free(NULL);
    classify_200(OK_JSON("\"x\""), strlen(OK_JSON("\"x\"")), &o);
    router_outcome_free(&o);
    assert_null(o.response);
    router_outcome_free(&o); /* twice is harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_brackets_inside_strings_do_not_nest),
        cmocka_unit_test(test_error_text_cut_at_utf8_boundary),
        cmocka_unit_test(test_provider_fits_varchar_255),
        cmocka_unit_test(test_large_response_kept_whole),
        cmocka_unit_test(test_random_bodies),
        cmocka_unit_test(test_runner_vocabulary),
        cmocka_unit_test(test_receipt),
        cmocka_unit_test(test_names_and_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
