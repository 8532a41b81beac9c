/*
 * The orphan sweep's reading of a queued job's execution id (janitor_entry_execution_id):
 * the worker's own payloads, the runner's four-field JSON with any spacing and key order,
 * a quoted id, the largest id, and entries that give no id (not a job, the key without a
 * number, 20 digits, a truncated text) — the same answers the sweep's former Lua pattern
 * gave, so a candidate is struck exactly when its job is there.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "janitor.h"

static int64_t id_of(const char *text)
{
    int64_t id = -1;
    return janitor_entry_execution_id(text, strlen(text), &id) ? id : -1;
}

static void test_reads_the_id_of_jobs(void **state)
{
    (void)state;
    assert_int_equal(id_of("{\"execution_id\":98770,\"region\":\"eu-west\",\"question_index\":1,"
                           "\"retry_attempt\":1,\"delivery\":0,\"enqueued_at\":\"2026-12-03T15:20:00Z\","
                           "\"id\":\"98770:1\"}"),
                     98770);
    assert_int_equal(id_of("{\"region\": \"us-east\", \"retry_attempt\": 2, \"execution_id\" : \t\r\n 42, "
                           "\"question_index\": 0}"),
                     42);
    assert_int_equal(id_of("{\"execution_id\":\"7\",\"region\":\"r\",\"question_index\":0,\"retry_attempt\":1}"),
                     7);
    assert_int_equal(id_of("{\"execution_id\":9223372036854775807}"), INT64_MAX);
    assert_int_equal(id_of("{\"execution_id\":0012}"), 12);
    /* Whitespace as the job decoder skips it: any byte up to 0x20. */
    assert_int_equal(id_of("{\"execution_id\"\v:\f\x01 31,\"region\":\"r\"}"), 31);
}

static void test_a_key_without_a_number_is_passed_over(void **state)
{
    (void)state;
    /* The key's name as a value first, then the real key: the real one counts. */
    assert_int_equal(id_of("{\"note\":\"execution_id\",\"execution_id\":5}"), 5);
    assert_int_equal(id_of("{\"x\":\"\\\"execution_id\\\"\",\"execution_id\": 6}"), 6);
}

static void test_entries_without_an_id(void **state)
{
    (void)state;
    assert_int_equal(id_of("not a job 1"), -1);
    assert_int_equal(id_of(""), -1);
    assert_int_equal(id_of("{\"execution_id\":}"), -1);
    assert_int_equal(id_of("{\"execution_id\":\"\"}"), -1);
    assert_int_equal(id_of("{\"execution_id\":-3}"), -1);
    assert_int_equal(id_of("{\"execution_id\" 3}"), -1);
    assert_int_equal(id_of("{\"execution_id\":12345678901234567890}"), -1);
    assert_int_equal(id_of("{\"execution_id\":9999999999999999999}"), -1); /* above INT64_MAX */
    assert_int_equal(id_of("{\"execution_i"), -1);
    assert_int_equal(id_of("{\"execution_id\""), -1);
    /* The length is honoured: the digits past it are not read. */
    const char *text = "{\"execution_id\":123456}";
    int64_t id = 0;
    assert_true(janitor_entry_execution_id(text, strlen(text) - 4, &id));
    assert_int_equal(id, 123);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_the_id_of_jobs),
        cmocka_unit_test(test_a_key_without_a_number_is_passed_over),
        cmocka_unit_test(test_entries_without_an_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
