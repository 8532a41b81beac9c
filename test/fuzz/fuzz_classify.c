/*
 * libFuzzer target: what a router answer means (router_classify, DESIGN §5). The first
 * bytes choose the HTTP status and the transfer flags (curl error, body over the cap,
 * timeout, Retry-After); the rest is the body, exactly as router.c hands it over
 * (NUL-terminated, possibly holding NUL bytes inside body_len).
 *
 * Beyond "no crash, no leak", every outcome must be storable: each string is valid
 * UTF-8 without NUL (PostgreSQL text and jsonb refuse anything else), the error text is
 * at most 2 KiB, provider_used at most 255 bytes (varchar(255)), the metadata is JSON
 * again, a receipt is JSON again, a success has a response and no failure kind (a
 * failure has one), and the verdict follows the HTTP status class.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "classify.h"
#include "fuzz.h"
#include "text.h"

static void check_text(const char *s, size_t max)
{
    if (s == NULL)
        return;
    size_t n = strlen(s);
    FUZZ_ASSERT(n <= max);
    FUZZ_ASSERT(text_is_clean(s, n));
}

/* Statuses worth covering often, then any value 0..999. */
static long pick_status(uint8_t a, uint8_t b)
{
    static const long common[] = {200, 201, 204, 299, 100, 101, 301, 302, 307, 308, 400,
                                  404, 408, 413, 429, 499, 500, 502, 503, 599, 0, 600};
    unsigned v = (unsigned)a << 8 | b;
    if (a < 0x80)
        return common[v % (sizeof common / sizeof common[0])];
    return (long)(v % 1000);
}

static int pick_curl_code(uint8_t c)
{
    static const int codes[] = {CURLE_COULDNT_CONNECT, CURLE_RECV_ERROR, CURLE_GOT_NOTHING,
                                CURLE_WRITE_ERROR, CURLE_TOO_MANY_REDIRECTS, CURLE_UNSUPPORTED_PROTOCOL,
                                CURLE_OPERATION_TIMEDOUT, CURLE_PARTIAL_FILE, CURLE_SSL_CONNECT_ERROR,
                                CURLE_OUT_OF_MEMORY, 9999};
    if ((c & 0x07) != 0)
        return CURLE_OK;
    return codes[(c >> 3) % (sizeof codes / sizeof codes[0])];
}

static void check_outcome(const router_result_t *r, const router_outcome_t *o)
{
    FUZZ_ASSERT(o->verdict == ROUTER_SUCCESS || o->verdict == ROUTER_FAILED ||
                o->verdict == ROUTER_TIMEOUT || o->verdict == ROUTER_TRANSIENT);
    FUZZ_ASSERT(o->http_status == r->http_status);
    FUZZ_ASSERT(o->retry_after_ms == r->retry_after_ms);
    check_text(o->response, SIZE_MAX);
    check_text(o->provider, 255);
    check_text(o->error, 2048);
    check_text(o->error_code, 64);
    check_text(o->metadata_json, SIZE_MAX);
    FUZZ_ASSERT(o->inference_sec >= 0);
    if (o->metadata_json != NULL) {
        cJSON *meta = cJSON_Parse(o->metadata_json);
        FUZZ_ASSERT(cJSON_IsObject(meta));
        cJSON_Delete(meta);
    }
    /* the receipt goes into receipt_data (jsonb): clean JSON text, only beside metadata */
    check_text(o->receipt_json, SIZE_MAX);
    if (o->receipt_json != NULL) {
        FUZZ_ASSERT(o->metadata_json != NULL);
        cJSON *receipt = cJSON_Parse(o->receipt_json);
        FUZZ_ASSERT(receipt != NULL && !cJSON_IsNull(receipt));
        cJSON_Delete(receipt);
    }
    /* the runner's vocabulary: a success has no failure kind, a failure has one */
    FUZZ_ASSERT((o->verdict == ROUTER_SUCCESS) == (o->failure == ROUTER_FAILURE_NONE));
    if (o->verdict == ROUTER_SUCCESS) {
        FUZZ_ASSERT(o->response != NULL);
        FUZZ_ASSERT(r->http_status >= 200 && r->http_status <= 299);
        FUZZ_ASSERT(!r->timed_out && !r->too_large && r->curl_code == CURLE_OK);
    } else {
        /* every non-success carries a code and a sentence for the history entry */
        FUZZ_ASSERT(o->error_code != NULL && o->error != NULL && o->error[0] != '\0');
    }
    if (r->timed_out)
        FUZZ_ASSERT(o->verdict == ROUTER_TIMEOUT);
    if (r->too_large && !r->timed_out)
        FUZZ_ASSERT(o->verdict == ROUTER_FAILED || o->verdict == ROUTER_TRANSIENT);
    if (!r->timed_out && r->curl_code == CURLE_OK && !r->too_large) {
        long s = r->http_status;
        if ((s >= 500 && s <= 599) || s == 429 || s == 408)
            FUZZ_ASSERT(o->verdict == ROUTER_TRANSIENT);
        else if (s < 200 || s > 299)
            FUZZ_ASSERT(o->verdict == ROUTER_FAILED);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    router_result_t r;
    memset(&r, 0, sizeof r);
    r.http_status = pick_status(data[0], data[1]);
    r.curl_code = pick_curl_code(data[2]);
    r.too_large = (data[3] & 0x07) == 0x07;
    r.timed_out = (data[3] & 0x38) == 0x38;
    r.retry_after_ms = (data[3] & 0x40) ? (long)data[2] * 1000 : -1;
    r.total_sec = 1.5;
    r.error = (data[3] & 0x80) ? "fuzz: curl said something \xff" : "";
    size_t len = size - 4;
    char *body = malloc(len + 1);
    FUZZ_ASSERT(body != NULL);
    memcpy(body, data + 4, len);
    body[len] = '\0';
    r.body = body;
    r.body_len = len;

    router_outcome_t out;
    router_classify(&r, &out);
    check_outcome(&r, &out);
    router_outcome_free(&out);
    FUZZ_ASSERT(out.response == NULL && out.error == NULL && out.metadata_json == NULL);
    free(body);
    return 0;
}
