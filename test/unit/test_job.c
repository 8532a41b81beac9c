/*
 * The wire format (DESIGN §2): the runner's Go payload decodes unchanged, encode and
 * decode round-trip, and every payload the rules refuse is refused with a message that
 * names the field and the rule.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define GO_PAYLOAD "{\"execution_id\":123,\"region\":\"us-east\",\"question_index\":0,\"retry_attempt\":1}"

static const char *const base_fields[][2] = {
    {"execution_id", "123"},
    {"region", "\"us-east\""},
    {"question_index", "0"},
    {"retry_attempt", "1"},
};

/* The Go payload with one field's raw JSON value replaced, removed (value NULL) or, for a
 * field the Go payload lacks, added at the end. */
static void payload_with(char *buf, size_t cap, const char *field, const char *value)
{
    bool placed = false;
    size_t n = (size_t)snprintf(buf, cap, "{");
    for (size_t i = 0; i < 4; i++) {
        const char *v = base_fields[i][1];
        if (strcmp(base_fields[i][0], field) == 0) {
            v = value;
            placed = true;
        }
        if (v != NULL)
            n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\":%s", n > 1 ? "," : "", base_fields[i][0], v);
    }
    if (!placed)
        n += (size_t)snprintf(buf + n, cap - n, ",\"%s\":%s", field, value);
    snprintf(buf + n, cap - n, "}");
}

static int decode(const char *payload, int max_retries, retryq_job_t *job, retryq_error_t *err)
{
    return retryq_job_decode(payload, strlen(payload), max_retries, job, err);
}

static void assert_jobs_equal(const retryq_job_t *a, const retryq_job_t *b)
{
    assert_int_equal(a->execution_id, b->execution_id);
    assert_string_equal(a->region, b->region);
    assert_int_equal(a->question_index, b->question_index);
    assert_int_equal(a->retry_attempt, b->retry_attempt);
    assert_int_equal(a->delivery, b->delivery);
    assert_string_equal(a->enqueued_at, b->enqueued_at);
    assert_string_equal(a->id, b->id);
}

/* ------------------------------------------------------------ accepted payloads */

static void test_go_payload_decodes_unchanged(void **state)
{
    retryq_job_t job;
    retryq_error_t err = {0};
    (void)state;
    assert_int_equal(decode(GO_PAYLOAD, 0, &job, &err), RETRYQ_OK);
    assert_int_equal(job.execution_id, 123);
    assert_string_equal(job.region, "us-east");
    assert_int_equal(job.question_index, 0);
    assert_int_equal(job.retry_attempt, 1);
    assert_int_equal(job.delivery, 0);
    assert_string_equal(job.enqueued_at, "");
    assert_string_equal(job.id, "");
}

static void test_go_payload_encodes_to_the_same_bytes(void **state)
{
    retryq_job_t job;
    char buf[256];
    (void)state;
    assert_int_equal(decode(GO_PAYLOAD, 0, &job, NULL), RETRYQ_OK);
    assert_int_equal(retryq_job_encode(&job, buf, sizeof buf), (int)strlen(GO_PAYLOAD));
    assert_string_equal(buf, GO_PAYLOAD);
}

static void test_all_fields_whitespace_and_unknown_fields(void **state)
{
    const char *payload =
        " \n{ \"future\" : {\"a\":[1,{\"b\":\"}]\\\"\"}]},\"execution_id\" : 42 ,\"region\":\"eu-west\","
        "\"question_index\":7,\"retry_attempt\":3,\"delivery\":2,"
        "\"enqueued_at\":\"2026-11-29T10:00:00.250Z\",\"id\":\"42:3\",\"x\":null,\"y\":[true,-1.5e3]}\r\n";
    retryq_job_t job;
    (void)state;
    assert_int_equal(decode(payload, 3, &job, NULL), RETRYQ_OK);
    assert_int_equal(job.execution_id, 42);
    assert_string_equal(job.region, "eu-west");
    assert_int_equal(job.question_index, 7);
    assert_int_equal(job.retry_attempt, 3);
    assert_int_equal(job.delivery, 2);
    assert_string_equal(job.enqueued_at, "2026-11-29T10:00:00.250Z");
    assert_string_equal(job.id, "42:3");
}

static void test_execution_id_string_form_is_exact(void **state)
{
    char buf[256];
    retryq_job_t job;
    (void)state;
    payload_with(buf, sizeof buf, "execution_id", "\"9223372036854775807\"");
    assert_int_equal(decode(buf, 0, &job, NULL), RETRYQ_OK);
    assert_true(job.execution_id == INT64_MAX);
    payload_with(buf, sizeof buf, "execution_id", "\"9007199254740993\"");
    assert_int_equal(decode(buf, 0, &job, NULL), RETRYQ_OK);
    assert_true(job.execution_id == INT64_C(9007199254740993));
    payload_with(buf, sizeof buf, "execution_id", "9007199254740991");
    assert_int_equal(decode(buf, 0, &job, NULL), RETRYQ_OK);
    assert_true(job.execution_id == INT64_C(9007199254740991));
}

/* An empty enqueued_at or id means the same as an absent one, as in the struct. */
static void test_empty_optional_strings_mean_absent(void **state)
{
    retryq_job_t job;
    (void)state;
    assert_int_equal(decode("{\"execution_id\":1,\"region\":\"r\",\"question_index\":0,\"retry_attempt\":1,"
                            "\"enqueued_at\":\"\",\"id\":\"\"}", 0, &job, NULL),
                     RETRYQ_OK);
    assert_string_equal(job.enqueued_at, "");
    assert_string_equal(job.id, "");
}

static void test_payload_need_not_be_nul_terminated(void **state)
{
    size_t len = strlen(GO_PAYLOAD);
    char *buf = malloc(len);
    retryq_job_t job;
    (void)state;
    assert_non_null(buf);
    memcpy(buf, GO_PAYLOAD, len);
    assert_int_equal(retryq_job_decode(buf, len, 0, &job, NULL), RETRYQ_OK);
    assert_int_equal(job.execution_id, 123);
    free(buf);
}

static void test_max_retries_bounds_the_attempt(void **state)
{
    char buf[256];
    retryq_job_t job;
    retryq_error_t err = {0};
    (void)state;
    payload_with(buf, sizeof buf, "retry_attempt", "5");
    assert_int_equal(decode(buf, 5, &job, NULL), RETRYQ_OK);
    assert_int_equal(decode(buf, 4, &job, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, "retry_attempt: must be an integer from 1 to 4 (max retries)");
    assert_int_equal(decode(buf, 0, &job, &err), RETRYQ_ERR_INVALID); /* 0: the default 3 */
    assert_non_null(strstr(err.message, "from 1 to 3"));
}

static void test_size_limit_is_64_kib(void **state)
{
    char *buf = malloc(RETRYQ_MAX_PAYLOAD + 2);
    retryq_job_t job;
    retryq_error_t err = {0};
    const char *head = "{\"pad\":\"";
    const char *tail = "\",\"execution_id\":1,\"region\":\"r\",\"question_index\":0,\"retry_attempt\":1}";
    (void)state;
    assert_non_null(buf);
    size_t fill = RETRYQ_MAX_PAYLOAD - strlen(head) - strlen(tail);
    snprintf(buf, RETRYQ_MAX_PAYLOAD + 2, "%s%*s%s", head, (int)fill, "", tail);
    assert_int_equal(strlen(buf), RETRYQ_MAX_PAYLOAD);
    assert_int_equal(decode(buf, 0, &job, &err), RETRYQ_OK);
    snprintf(buf, RETRYQ_MAX_PAYLOAD + 2, "%s%*s%s", head, (int)fill + 1, "", tail);
    assert_int_equal(decode(buf, 0, &job, &err), RETRYQ_ERR_TOO_LARGE);
    assert_int_equal(err.code, RETRYQ_ERR_TOO_LARGE);
    assert_non_null(strstr(err.message, "65537 bytes"));
    free(buf);
}

/* {"n":[[...]]} with `depth` levels of nesting in all (the object counts as one). */
static char *nested(int depth)
{
    char *buf = malloc((size_t)depth * 2 + 128);
    size_t n = (size_t)sprintf(buf, "{\"execution_id\":1,\"region\":\"r\",\"question_index\":0,\"retry_attempt\":1,\"n\":");
    for (int i = 1; i < depth; i++)
        buf[n++] = '[';
    for (int i = 1; i < depth; i++)
        buf[n++] = ']';
    if (depth == 1)
        buf[n++] = '0';
    buf[n++] = '}';
    buf[n] = '\0';
    return buf;
}

static void test_nesting_limit_is_16(void **state)
{
    retryq_job_t job;
    retryq_error_t err = {0};
    (void)state;
    char *ok = nested(16), *deep = nested(17), *deeper = nested(5000);
    assert_int_equal(decode(ok, 0, &job, &err), RETRYQ_OK);
    assert_int_equal(decode(deep, 0, &job, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, "payload: nested deeper than 16 levels");
    err.message[0] = '\0';
    assert_int_equal(decode(deeper, 0, &job, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, "payload: nested deeper than 16 levels");
    free(ok);
    free(deep);
    free(deeper);
}

/* ------------------------------------------------------------ refused payloads */

typedef struct refusal {
    const char *field; /* field to change, or NULL: `value` is the whole payload */
    const char *value; /* raw JSON value; NULL removes the field */
    const char *message;
} refusal_t;

#define EXEC_RULE "execution_id: must be a positive integer that fits int64"
#define REGION_RULE "region: must be a string of 1..128 bytes"
#define QI_RULE "question_index: must be an integer >= 0 and <= 2147483647"
#define ATTEMPT_RULE "retry_attempt: must be an integer from 1 to 3 (max retries)"
#define DELIVERY_RULE "delivery: must be an integer from 0 to 1000"
#define AT_RULE "enqueued_at: must be an RFC 3339 timestamp of at most 40 bytes"
#define ID_RULE "id: must be a string of at most 64 printable ASCII characters"
#define REGION_129 "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""
#define ID_65 "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""

static const refusal_t refusals[] = {
    {NULL, "", "payload: not valid JSON"},
    {NULL, "not json", "payload: not valid JSON"},
    {NULL, "{\"execution_id\":1,", "payload: not valid JSON"},
    {NULL, "[1,2]", "payload: must be a JSON object"},
    {NULL, "\"text\"", "payload: must be a JSON object"},
    {NULL, "123", "payload: must be a JSON object"},
    {NULL, GO_PAYLOAD " x", "payload: unexpected text after the JSON value"},
    {NULL, GO_PAYLOAD GO_PAYLOAD, "payload: unexpected text after the JSON value"},
    {NULL, "{\"execution_id\":1,\"execution_id\":2,\"region\":\"r\",\"question_index\":0,\"retry_attempt\":1}",
     "execution_id: appears more than once"},
    /* execution_id */
    {"execution_id", NULL, "execution_id: is required"},
    {"execution_id", "true", EXEC_RULE},
    {"execution_id", "null", EXEC_RULE},
    {"execution_id", "1.5", EXEC_RULE},
    {"execution_id", "1.0", EXEC_RULE},
    {"execution_id", "1e3", EXEC_RULE},
    {"execution_id", "0", EXEC_RULE},
    {"execution_id", "-7", EXEC_RULE},
    {"execution_id", "{}", EXEC_RULE},
    {"execution_id", "[1]", EXEC_RULE},
    {"execution_id", "\"abc\"", EXEC_RULE},
    {"execution_id", "\"\"", EXEC_RULE},
    {"execution_id", "\"0\"", EXEC_RULE},
    {"execution_id", "\"-5\"", EXEC_RULE},
    {"execution_id", "\" 12\"", EXEC_RULE},
    {"execution_id", "\"12\\u00003\"", EXEC_RULE},
    {"execution_id", "\"9223372036854775808\"", EXEC_RULE},
    {"execution_id", "99999999999999999999", EXEC_RULE},
    {"execution_id", "9007199254740993", "execution_id: numbers above 2^53-1 must be sent as a decimal string"},
    /* region */
    {"region", NULL, "region: is required"},
    {"region", "5", REGION_RULE},
    {"region", "null", REGION_RULE},
    {"region", "true", REGION_RULE},
    {"region", "[\"us\"]", REGION_RULE},
    {"region", "\"\"", REGION_RULE},
    {"region", REGION_129, REGION_RULE},
    {"region", "\"us\\neast\"", "region: must not contain control characters"},
    {"region", "\"us\\u0001\"", "region: must not contain control characters"},
    {"region", "\"us\x7f\"", "region: must not contain control characters"},
    {"region", "\"us\\u0000east\"", "region: must not contain NUL (\\u0000)"},
    {"region", "\"us\xff\"", "region: must be valid UTF-8"},
    {"region", "\"\xc0\xaf\"", "region: must be valid UTF-8"},
    {"region", "\"\xed\xa0\x80\"", "region: must be valid UTF-8"},
    {"region", "\"\xe6\x9d\"", "region: must be valid UTF-8"},
    /* question_index */
    {"question_index", NULL, "question_index: is required"},
    {"question_index", "-1", QI_RULE},
    {"question_index", "\"0\"", QI_RULE},
    {"question_index", "0.5", QI_RULE},
    {"question_index", "null", QI_RULE},
    {"question_index", "false", QI_RULE},
    {"question_index", "2147483648", QI_RULE},
    /* retry_attempt */
    {"retry_attempt", NULL, "retry_attempt: is required"},
    {"retry_attempt", "0", ATTEMPT_RULE},
    {"retry_attempt", "4", ATTEMPT_RULE},
    {"retry_attempt", "-1", ATTEMPT_RULE},
    {"retry_attempt", "\"1\"", ATTEMPT_RULE},
    {"retry_attempt", "true", ATTEMPT_RULE},
    {"retry_attempt", "null", ATTEMPT_RULE},
    {"retry_attempt", "1.0", ATTEMPT_RULE},
    /* optional fields */
    {"delivery", "-1", DELIVERY_RULE},
    {"delivery", "1001", DELIVERY_RULE},
    {"delivery", "\"1\"", DELIVERY_RULE},
    {"delivery", "true", DELIVERY_RULE},
    {"enqueued_at", "5", AT_RULE},
    {"enqueued_at", "\"yesterday\"", AT_RULE},
    {"enqueued_at", "\"2026-11-29T10:00:00.000000000000000000000Z\"", AT_RULE},
    {"id", "5", ID_RULE},
    {"id", ID_65, ID_RULE},
    {"id", "\"a\\u0001b\"", ID_RULE},
    {"id", "\"caf\\u00e9\"", ID_RULE},
};

static void test_refused_payloads_name_field_and_rule(void **state)
{
    char buf[1024];
    (void)state;
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        const refusal_t *r = &refusals[i];
        retryq_job_t job;
        retryq_error_t err = {0};
        if (r->field == NULL)
            snprintf(buf, sizeof buf, "%s", r->value);
        else
            payload_with(buf, sizeof buf, r->field, r->value);
        int rc = decode(buf, 0, &job, &err);
        if (rc != RETRYQ_ERR_INVALID || err.code != RETRYQ_ERR_INVALID ||
            strcmp(err.message, r->message) != 0)
            fail_msg("case %zu: %s\n  got %d \"%s\"\n  want \"%s\"", i, buf, rc, err.message, r->message);
    }
}

/* ------------------------------------------------------------ init, validate, encode */

static void test_init_sets_id_and_enqueued_at(void **state)
{
    retryq_job_t job;
    retryq_error_t err = {0};
    (void)state;
    int64_t before = rq_now_ms();
    assert_int_equal(retryq_job_init(&job, 123, "us-east", 4, 2, &err), RETRYQ_OK);
    assert_string_equal(job.id, "123:2");
    int64_t at = rq_parse_rfc3339(job.enqueued_at);
    assert_true(at >= before - 1000 && at <= rq_now_ms() + 1000);
    assert_int_equal(retryq_job_init(&job, 123, "", 4, 2, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, REGION_RULE);
    assert_int_equal(retryq_job_init(&job, 123, NULL, 4, 2, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_job_init(&job, 0, "us", 4, 2, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, EXEC_RULE);
    assert_int_equal(retryq_job_init(&job, 1, "us", 4, 0, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "retry_attempt:"));
}

static void test_round_trip_is_exact(void **state)
{
    retryq_job_t job, back;
    char buf[1024];
    (void)state;
    assert_int_equal(retryq_job_init(&job, INT64_MAX, "東京 \"quoted\" back\\slash", INT32_MAX, 1000, NULL),
                     RETRYQ_OK);
    job.delivery = 7;
    int n = retryq_job_encode(&job, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    assert_non_null(strstr(buf, "\"execution_id\":\"9223372036854775807\""));
    assert_int_equal(retryq_job_decode(buf, (size_t)n, 1000, &back, NULL), RETRYQ_OK);
    assert_jobs_equal(&job, &back);
}

static void test_encode_writes_fields_in_order(void **state)
{
    retryq_job_t job;
    char buf[512];
    (void)state;
    assert_int_equal(decode("{\"id\":\"5:2\",\"delivery\":3,\"enqueued_at\":\"2026-01-02T03:04:05Z\","
                            "\"retry_attempt\":2,\"question_index\":9,\"region\":\"EU\",\"execution_id\":5}",
                            3, &job, NULL),
                     RETRYQ_OK);
    assert_true(retryq_job_encode(&job, buf, sizeof buf) > 0);
    assert_string_equal(buf, "{\"execution_id\":5,\"region\":\"EU\",\"question_index\":9,\"retry_attempt\":2,"
                             "\"delivery\":3,\"enqueued_at\":\"2026-01-02T03:04:05Z\",\"id\":\"5:2\"}");
}

static void test_encode_refuses_a_small_buffer(void **state)
{
    retryq_job_t job;
    char buf[256];
    size_t len = strlen(GO_PAYLOAD);
    (void)state;
    assert_int_equal(decode(GO_PAYLOAD, 0, &job, NULL), RETRYQ_OK);
    for (size_t cap = 0; cap <= len; cap++) {
        memset(buf, 'Z', sizeof buf);
        assert_int_equal(retryq_job_encode(&job, buf, cap), RETRYQ_ERR_TOO_LARGE);
        assert_int_equal(buf[cap], 'Z'); /* nothing written past cap */
    }
    assert_int_equal(retryq_job_encode(&job, buf, len + 1), (int)len);
}

static void test_validate_and_encode_refuse_bad_structs(void **state)
{
    retryq_job_t job;
    retryq_error_t err = {0};
    char buf[512];
    (void)state;
    assert_int_equal(decode(GO_PAYLOAD, 0, &job, NULL), RETRYQ_OK);
    assert_int_equal(retryq_job_validate(&job, 0, &err), RETRYQ_OK);
    job.retry_attempt = 4;
    assert_int_equal(retryq_job_validate(&job, 0, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_job_validate(&job, 4, &err), RETRYQ_OK);
    memset(job.region, 'a', sizeof job.region); /* no NUL inside the buffer */
    assert_int_equal(retryq_job_validate(&job, 4, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, REGION_RULE);
    assert_int_equal(retryq_job_encode(&job, buf, sizeof buf), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_job_validate(NULL, 0, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_job_encode(NULL, buf, sizeof buf), RETRYQ_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_go_payload_decodes_unchanged),
        cmocka_unit_test(test_go_payload_encodes_to_the_same_bytes),
        cmocka_unit_test(test_all_fields_whitespace_and_unknown_fields),
        cmocka_unit_test(test_execution_id_string_form_is_exact),
        cmocka_unit_test(test_empty_optional_strings_mean_absent),
        cmocka_unit_test(test_payload_need_not_be_nul_terminated),
        cmocka_unit_test(test_max_retries_bounds_the_attempt),
        cmocka_unit_test(test_size_limit_is_64_kib),
        cmocka_unit_test(test_nesting_limit_is_16),
        cmocka_unit_test(test_refused_payloads_name_field_and_rule),
        cmocka_unit_test(test_init_sets_id_and_enqueued_at),
        cmocka_unit_test(test_round_trip_is_exact),
        cmocka_unit_test(test_encode_writes_fields_in_order),
        cmocka_unit_test(test_encode_refuses_a_small_buffer),
        cmocka_unit_test(test_validate_and_encode_refuse_bad_structs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
