/*
 * Flow control's rules that need no Redis: which flow key texts are accepted (MODEL/REGION
 * split at the last '/', bounded, UTF-8 without control characters, no wildcard), and how
 * the stored documents of a pause and of a breaker are read (fields, missing fields, text
 * cut at a UTF-8 boundary, time left on the given clock, unreadable text).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "internal.h"

static void assert_key(const char *key, int want, const char *says)
{
    retryq_error_t err = {0};
    int rc = retryq_flow_key_validate(key, &err);
    if (rc != want)
        fail_msg("flow key \"%s\": %d, want %d (%s)", key != NULL ? key : "(null)", rc, want, err.message);
    if (says != NULL && strstr(err.message, says) == NULL)
        fail_msg("flow key \"%s\": \"%s\" does not say \"%s\"", key != NULL ? key : "(null)", err.message, says);
}

static void test_flow_key_rules(void **state)
{
    char key[RETRYQ_MAX_FLOW_KEY + 2];
    (void)state;
    assert_key("llama3.2-1b/us-east", RETRYQ_OK, NULL);
    assert_key("meta-llama/Llama-3.1-8B/us-east", RETRYQ_OK, NULL); /* the region follows the last '/' */
    assert_key("m/r", RETRYQ_OK, NULL);
    assert_key("llama3.2:1b/\xe6\x9d\xb1\xe4\xba\xac 1", RETRYQ_OK, NULL);
    assert_key(NULL, RETRYQ_ERR_INVALID, "missing");
    assert_key("", RETRYQ_ERR_INVALID, "missing");
    assert_key("gpt-4", RETRYQ_ERR_INVALID, "flow key 'gpt-4': expected MODEL/REGION");
    assert_key("/us-east", RETRYQ_ERR_INVALID, "expected MODEL/REGION");
    assert_key("gpt-4/", RETRYQ_ERR_INVALID, "expected MODEL/REGION");
    assert_key("meta/llama/", RETRYQ_ERR_INVALID, "expected MODEL/REGION");
    assert_key("*/eu-west", RETRYQ_ERR_INVALID, "wildcard");
    assert_key("*/*", RETRYQ_ERR_INVALID, "wildcard");
    assert_key("a\tb/r", RETRYQ_ERR_INVALID, "control characters");
    assert_key("a/r\x7f", RETRYQ_ERR_INVALID, "control characters");
    assert_key("a/\xc3", RETRYQ_ERR_INVALID, "UTF-8");
    assert_key("a/\xed\xa0\x80", RETRYQ_ERR_INVALID, "UTF-8"); /* a surrogate */

    memset(key, 'm', sizeof key);
    key[1] = '/';
    key[RETRYQ_MAX_FLOW_KEY] = '\0';
    assert_key(key, RETRYQ_ERR_INVALID, "region after the last '/' is 253 bytes, at most 128");
    key[RETRYQ_MAX_FLOW_KEY - RETRYQ_MAX_REGION - 1] = '/';
    assert_key(key, RETRYQ_OK, NULL);
    key[RETRYQ_MAX_FLOW_KEY] = 'm';
    key[RETRYQ_MAX_FLOW_KEY + 1] = '\0';
    assert_key(key, RETRYQ_ERR_INVALID, "256 bytes, at most 255");
}

static void test_pause_document(void **state)
{
    static const char doc[] = "{\"cause\":\"retry_after\",\"reason\":\"429 from the router\","
                              "\"until_ms\":1700000060000,\"by\":\"h:1:w\"}";
    retryq_flow_pause_t p;
    (void)state;
    assert_true(rq_flow_parse_pause("m/r", doc, strlen(doc), 1700000000000, &p));
    assert_string_equal(p.key, "m/r");
    assert_string_equal(p.cause, "retry_after");
    assert_string_equal(p.reason, "429 from the router");
    assert_string_equal(p.by, "h:1:w");
    assert_int_equal(p.until_ms, 1700000060000);
    assert_int_equal(p.left_ms, 60000);
    /* Past its end (the key has not expired yet): nothing left, not negative. */
    assert_true(rq_flow_parse_pause("m/r", doc, strlen(doc), 1700000070000, &p));
    assert_int_equal(p.left_ms, 0);
    /* Fields missing or of another type are empty; an unknown end is "left -1". */
    assert_true(rq_flow_parse_pause("m/r", "{\"cause\":7,\"until_ms\":\"soon\"}", 29, 0, &p));
    assert_string_equal(p.cause, "");
    assert_string_equal(p.reason, "");
    assert_int_equal(p.until_ms, 0);
    assert_int_equal(p.left_ms, -1);
    /* Not a JSON object: false, and only the key. */
    assert_false(rq_flow_parse_pause("m/r", "[1,2]", 5, 0, &p));
    assert_false(rq_flow_parse_pause("m/r", "not json", 8, 0, &p));
    assert_string_equal(p.key, "m/r");
    assert_int_equal(p.left_ms, -1);
}

static void test_long_reason_is_cut_at_a_character(void **state)
{
    char doc[1024], reason[RETRYQ_MAX_FLOW_REASON + 8];
    retryq_flow_pause_t p;
    (void)state;
    /* 199 ASCII bytes then "é" (2 bytes): the cut at 200 bytes must not split it. */
    memset(reason, 'x', RETRYQ_MAX_FLOW_REASON - 1);
    memcpy(reason + RETRYQ_MAX_FLOW_REASON - 1, "\xc3\xa9yz", 5);
    snprintf(doc, sizeof doc, "{\"reason\":\"%s\",\"until_ms\":5}", reason);
    assert_true(rq_flow_parse_pause("m/r", doc, strlen(doc), 0, &p));
    assert_int_equal(strlen(p.reason), RETRYQ_MAX_FLOW_REASON - 1);
    assert_int_equal(p.left_ms, 5);
}

static void test_breaker_document(void **state)
{
    static const char doc[] =
        "{\"state\":\"half_open\",\"until_ms\":1700000005000,\"worker\":\"h:1:w\",\"failures\":12,\"calls\":20}";
    retryq_flow_breaker_t b;
    (void)state;
    assert_true(rq_flow_parse_breaker("m/r", doc, strlen(doc), 1700000000000, &b));
    assert_string_equal(b.key, "m/r");
    assert_string_equal(b.state, "half_open");
    assert_string_equal(b.worker, "h:1:w");
    assert_int_equal(b.until_ms, 1700000005000);
    assert_int_equal(b.left_ms, 5000);
    assert_int_equal(b.failures, 12);
    assert_int_equal(b.calls, 20);
    assert_true(rq_flow_parse_breaker("m/r", "{\"state\":\"closed\"}", 18, 1700000000000, &b));
    assert_int_equal(b.until_ms, 0);
    assert_int_equal(b.left_ms, 0);
    assert_int_equal(b.failures, -1);
    assert_int_equal(b.calls, -1);
    assert_false(rq_flow_parse_breaker("m/r", "{", 1, 0, &b));
    assert_string_equal(b.state, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flow_key_rules),
        cmocka_unit_test(test_pause_document),
        cmocka_unit_test(test_long_reason_is_cut_at_a_character),
        cmocka_unit_test(test_breaker_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
