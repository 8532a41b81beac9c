/*
 * Key naming (DESIGN §3): the keys of a queue, the queue-name rules, the processing
 * list of one worker and the per-key keys of flow control.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "internal.h"

static void test_keys_of_the_default_queue(void **state)
{
    retryq_keys_t keys;
    (void)state;
    assert_int_equal(retryq_keys_init(&keys, RETRYQ_DEFAULT_QUEUE, NULL), RETRYQ_OK);
    assert_string_equal(keys.pending, "retry_queue");
    assert_string_equal(keys.processing_prefix, "{retry_queue}:processing:");
    assert_string_equal(keys.workers, "{retry_queue}:workers");
    assert_string_equal(keys.delayed, "{retry_queue}:delayed");
    assert_string_equal(keys.dead, "{retry_queue}:dead");
    assert_string_equal(keys.flow_paused, "{retry_queue}:flow:paused");
    assert_string_equal(keys.flow_breakers, "{retry_queue}:flow:breakers");
    assert_string_equal(keys.flow_keys, "{retry_queue}:flow:keys");
    assert_string_equal(keys.cancelled, "{retry_queue}:cancelled");
}

static void test_queue_name_rules(void **state)
{
    static const char *const refused[] = {"", "has space", "a{b", "a}b", "tab\there", "caf\xc3\xa9", "del\x7f"};
    char longest[RETRYQ_MAX_QUEUE_NAME + 2];
    retryq_keys_t keys;
    retryq_error_t err = {0};
    (void)state;
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        err.message[0] = '\0';
        if (retryq_keys_init(&keys, refused[i], &err) != RETRYQ_ERR_INVALID)
            fail_msg("queue name \"%s\" was accepted", refused[i]);
        assert_true(strncmp(err.message, "queue name: ", 12) == 0);
    }
    assert_int_equal(retryq_keys_init(&keys, NULL, &err), RETRYQ_ERR_INVALID);
    memset(longest, 'q', sizeof longest);
    longest[RETRYQ_MAX_QUEUE_NAME] = '\0';
    assert_int_equal(retryq_keys_init(&keys, longest, &err), RETRYQ_OK);
    assert_string_equal(keys.pending, longest);
    assert_int_equal(strlen(keys.dead), RETRYQ_MAX_QUEUE_NAME + strlen("{}:dead"));
    longest[RETRYQ_MAX_QUEUE_NAME] = 'q';
    longest[RETRYQ_MAX_QUEUE_NAME + 1] = '\0';
    assert_int_equal(retryq_keys_init(&keys, longest, &err), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_keys_init(&keys, "jobs:retry*[1]", &err), RETRYQ_OK);
    assert_string_equal(keys.workers, "{jobs:retry*[1]}:workers");
}

static void test_processing_key_of_a_worker(void **state)
{
    retryq_keys_t keys;
    char buf[64];
    const char *want = "{q}:processing:host:42:abcd";
    (void)state;
    assert_int_equal(retryq_keys_init(&keys, "q", NULL), RETRYQ_OK);
    assert_int_equal(retryq_keys_processing(&keys, "host:42:abcd", buf, sizeof buf), (int)strlen(want));
    assert_string_equal(buf, want);
    assert_int_equal(retryq_keys_processing(&keys, "host:42:abcd", buf, strlen(want) + 1), (int)strlen(want));
    assert_int_equal(retryq_keys_processing(&keys, "host:42:abcd", buf, strlen(want)), RETRYQ_ERR_TOO_LARGE);
    assert_int_equal(retryq_keys_processing(&keys, "", buf, sizeof buf), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_keys_processing(&keys, NULL, buf, sizeof buf), RETRYQ_ERR_INVALID);
}

static void test_taken_key_of_a_worker(void **state)
{
    retryq_keys_t keys;
    char buf[64];
    const char *want = "{q}:taken:host:42:abcd";
    (void)state;
    assert_int_equal(retryq_keys_init(&keys, "q", NULL), RETRYQ_OK);
    assert_int_equal(retryq_keys_taken(&keys, "host:42:abcd", buf, sizeof buf), (int)strlen(want));
    assert_string_equal(buf, want);
    assert_int_equal(retryq_keys_taken(&keys, "host:42:abcd", buf, strlen(want)), RETRYQ_ERR_TOO_LARGE);
    assert_int_equal(retryq_keys_taken(&keys, "", buf, sizeof buf), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_keys_taken(NULL, "w", buf, sizeof buf), RETRYQ_ERR_INVALID);
}

static void test_flow_keys_of_a_flow_key(void **state)
{
    retryq_keys_t keys;
    char buf[64];
    const char *want = "{q}:flow:permits:meta/llama-3/eu-west";
    (void)state;
    assert_int_equal(retryq_keys_init(&keys, "q", NULL), RETRYQ_OK);
    assert_int_equal(retryq_keys_flow(&keys, RETRYQ_FLOW_PAUSE, "m/r", buf, sizeof buf), 18);
    assert_string_equal(buf, "{q}:flow:pause:m/r");
    assert_int_equal(retryq_keys_flow(&keys, RETRYQ_FLOW_BUCKET, "m/r", buf, sizeof buf), 19);
    assert_string_equal(buf, "{q}:flow:bucket:m/r");
    assert_int_equal(retryq_keys_flow(&keys, RETRYQ_FLOW_PERMITS, "meta/llama-3/eu-west", buf, sizeof buf),
                     (int)strlen(want));
    assert_string_equal(buf, want);
    assert_int_equal(retryq_keys_flow(&keys, RETRYQ_FLOW_PERMITS, "meta/llama-3/eu-west", buf, strlen(want)),
                     RETRYQ_ERR_TOO_LARGE);
    assert_int_equal(retryq_keys_flow(&keys, (retryq_flow_kind_t)7, "m/r", buf, sizeof buf), RETRYQ_ERR_INVALID);
    assert_int_equal(retryq_keys_flow(&keys, RETRYQ_FLOW_PAUSE, NULL, buf, sizeof buf), RETRYQ_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_of_the_default_queue),
        cmocka_unit_test(test_queue_name_rules),
        cmocka_unit_test(test_processing_key_of_a_worker),
        cmocka_unit_test(test_taken_key_of_a_worker),
        cmocka_unit_test(test_flow_keys_of_a_flow_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
