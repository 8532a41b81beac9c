/*
 * The worker's log lines: logfmt layout, quoting and escaping; JSON lines that parse,
 * with numbers as numbers and any message bytes kept or made valid UTF-8; level
 * filtering; the [RETRY] marker kept verbatim; RFC 3339 UTC timestamps with
 * milliseconds; long messages cut without breaking the line; line buffering (a line is
 * in the stream as soon as log_event returns).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "log.h"
#include "text.h"

typedef struct capture {
    FILE *f;
    char *buf;
    size_t len;
} capture_t;

static capture_t cap;

static void start(log_level_t level, bool json)
{
    cap.buf = NULL;
    cap.len = 0;
    cap.f = open_memstream(&cap.buf, &cap.len);
    assert_non_null(cap.f);
    log_setup(level, json, cap.f);
    log_set_worker("host:17:00c0ffee");
}

/* Everything logged since start(), NUL-terminated; stops the capture. */
static char *finish(void)
{
    log_setup(LOG_LEVEL_INFO, false, NULL);
    fclose(cap.f);
    return cap.buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

static void assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("\"%s\" does not match /%s/", text, pattern);
}

static void test_logfmt_layout(void **state)
{
    (void)state;
    start(LOG_LEVEL_DEBUG, false);
    log_event(LOG_LEVEL_INFO, 42, 1, "job.done", "[RETRY] completed in %d ms", 1234);
    char *out = finish();
    assert_int_equal(count_lines(out), 1);
    assert_matches(out, "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                        "level=info worker=host:17:00c0ffee event=job\\.done execution_id=42 "
                        "attempt=1 msg=\"\\[RETRY\\] completed in 1234 ms\"\n$");
    free(out);
}

static void test_logfmt_quoting_and_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *expect;
    } cases[] = {
        {"plain", " msg=plain\n"},
        {"two words", " msg=\"two words\"\n"},
        {"a=b", " msg=\"a=b\"\n"},
        {"say \"hi\"", " msg=\"say \\\"hi\\\"\"\n"},
        {"back\\slash", " msg=\"back\\\\slash\"\n"},
        {"line\nbreak", " msg=\"line\\nbreak\"\n"},
        {"tab\tcr\r", " msg=\"tab\\tcr\\r\"\n"},
        {"bell\a", " msg=\"bell\\u0007\"\n"},
        {"", " msg=\"\"\n"},
        {"caf\xc3\xa9", " msg=caf\xc3\xa9\n"},
        {"bad\xff", " msg=bad\xef\xbf\xbd\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        start(LOG_LEVEL_DEBUG, false);
        log_event(LOG_LEVEL_WARN, 0, 0, "t", "%s", cases[i].msg);
        char *out = finish();
        assert_int_equal(count_lines(out), 1);
        size_t n = strlen(cases[i].expect);
        if (strlen(out) < n || strcmp(out + strlen(out) - n, cases[i].expect) != 0)
            fail_msg("case %zu: \"%s\" does not end with \"%s\"", i, out, cases[i].expect);
        /* ids <= 0 are left out */
        assert_null(strstr(out, "execution_id="));
        assert_null(strstr(out, "attempt="));
        free(out);
    }
    /* no worker set: no worker field */
    start(LOG_LEVEL_DEBUG, false);
    log_set_worker(NULL);
    log_event(LOG_LEVEL_ERROR, 7, 0, "x", "m");
    char *out = finish();
    assert_matches(out, "Z level=error event=x execution_id=7 msg=m\n$");
    free(out);
}

static void test_json_lines_parse(void **state)
{
    (void)state;
    const char *tricky = "[RETRY] \"quoted\" back\\slash\nnew line\ttab \x01 caf\xc3\xa9 {json}";
    start(LOG_LEVEL_DEBUG, true);
    log_event(LOG_LEVEL_INFO, 9000000000LL, 3, "router.answer", "%s", tricky);
    log_event(LOG_LEVEL_ERROR, 0, 0, "bad.bytes", "raw \xff\xfe end");
    char *out = finish();
    assert_int_equal(count_lines(out), 2);
    assert_true(text_is_clean(out, strlen(out)));

    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    cJSON *a = cJSON_Parse(out);
    assert_non_null(a);
    assert_string_equal(cJSON_GetObjectItem(a, "level")->valuestring, "info");
    assert_string_equal(cJSON_GetObjectItem(a, "worker")->valuestring, "host:17:00c0ffee");
    assert_string_equal(cJSON_GetObjectItem(a, "event")->valuestring, "router.answer");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(a, "execution_id")));
    assert_true(cJSON_GetObjectItem(a, "execution_id")->valuedouble == 9000000000.0);
    assert_int_equal(cJSON_GetObjectItem(a, "attempt")->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(a, "msg")->valuestring, tricky);
    const char *ts = cJSON_GetObjectItem(a, "ts")->valuestring;
    assert_matches(ts, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$");
    int64_t when = rq_parse_rfc3339(ts), now = rq_now_ms();
    assert_true(when > now - 5000 && when <= now);
    cJSON_Delete(a);

    second[strcspn(second, "\n")] = '\0';
    cJSON *b = cJSON_Parse(second);
    assert_non_null(b);
    assert_string_equal(cJSON_GetObjectItem(b, "msg")->valuestring,
                        "raw \xef\xbf\xbd\xef\xbf\xbd end");
    assert_null(cJSON_GetObjectItem(b, "execution_id"));
    assert_null(cJSON_GetObjectItem(b, "attempt"));
    cJSON_Delete(b);
    free(out);
}

static int evaluated;

static const char *side_effect(void)
{
    evaluated++;
    return "x";
}

static void test_level_filtering(void **state)
{
    (void)state;
    start(LOG_LEVEL_WARN, false);
    assert_false(log_enabled(LOG_LEVEL_DEBUG));
    assert_false(log_enabled(LOG_LEVEL_INFO));
    assert_true(log_enabled(LOG_LEVEL_WARN));
    assert_true(log_enabled(LOG_LEVEL_ERROR));
    evaluated = 0;
    log_debug("d", "%s", side_effect()); /* the macro skips even the arguments */
    log_info("i", "info line");
    log_warn("w", "warn line");
    log_error("e", "error line");
    char *out = finish();
    assert_int_equal(evaluated, 0);
    assert_int_equal(count_lines(out), 2);
    assert_null(strstr(out, "info line"));
    assert_non_null(strstr(out, "level=warn worker=host:17:00c0ffee event=w msg=\"warn line\""));
    assert_non_null(strstr(out, "level=error"));
    free(out);

    start(LOG_LEVEL_DEBUG, false);
    log_debug("d", "%s", side_effect());
    out = finish();
    assert_int_equal(evaluated, 1);
    assert_non_null(strstr(out, "level=debug"));
    free(out);
}

static void test_level_names(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("debug"), LOG_LEVEL_DEBUG);
    assert_int_equal(log_level_parse("INFO"), LOG_LEVEL_INFO);
    assert_int_equal(log_level_parse("Warn"), LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("warning"), LOG_LEVEL_WARN);
    assert_int_equal(log_level_parse("error"), LOG_LEVEL_ERROR);
    assert_int_equal(log_level_parse("verbose"), -1);
    assert_int_equal(log_level_parse(""), -1);
    assert_int_equal(log_level_parse(NULL), -1);
    assert_string_equal(log_level_name(LOG_LEVEL_DEBUG), "debug");
    assert_string_equal(log_level_name(LOG_LEVEL_ERROR), "error");
}

static void test_long_messages_keep_the_line_whole(void **state)
{
    (void)state;
    size_t n = 20000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = i % 3 == 0 ? '"' : (char)"\xc3\xa9"[i % 3 - 1]; /* quotes and 'é' */
    big[n] = '\0';
    for (int json = 0; json <= 1; json++) {
        start(LOG_LEVEL_DEBUG, json != 0);
        log_event(LOG_LEVEL_INFO, 1, 1, "big", "%s", big);
        char *out = finish();
        assert_int_equal(count_lines(out), 1);
        assert_true(strlen(out) < 32768);
        assert_true(text_is_clean(out, strlen(out))); /* never cut inside a character */
        if (json) {
            cJSON *o = cJSON_Parse(out);
            assert_non_null(o);
            const char *msg = cJSON_GetObjectItem(o, "msg")->valuestring;
            assert_true(strlen(msg) < 4096);
            assert_int_equal(strncmp(msg, big, 100), 0);
            assert_string_equal(msg + strlen(msg) - 3, "...");
            cJSON_Delete(o);
        } else {
            assert_string_equal(out + strlen(out) - 5, "...\"\n");
        }
        free(out);
    }
    free(big);
}

static void test_lines_are_flushed_at_once(void **state)
{
    (void)state;
    /* a real file: line buffering shows as write(2) calls, readable through the fd */
    FILE *f = tmpfile();
    assert_non_null(f);
    log_setup(LOG_LEVEL_DEBUG, false, f);
    log_set_worker("w");
    log_info("first", "one");
    char buf[512];
    ssize_t n = pread(fileno(f), buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_int_equal(buf[n - 1], '\n');
    assert_non_null(strstr(buf, "worker=w event=first msg=one\n"));
    log_info("second", "two");
    n = pread(fileno(f), buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_int_equal(count_lines(buf), 2);
    log_setup(LOG_LEVEL_INFO, false, NULL);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logfmt_layout),
        cmocka_unit_test(test_logfmt_quoting_and_escaping),
        cmocka_unit_test(test_json_lines_parse),
        cmocka_unit_test(test_level_filtering),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_long_messages_keep_the_line_whole),
        cmocka_unit_test(test_lines_are_flushed_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
