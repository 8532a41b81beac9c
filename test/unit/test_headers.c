/*
 * The router's answer headers that flow control acts on (classify.c): Retry-After as
 * seconds or an HTTP date, x-ratelimit-reset-* as Go durations, bare seconds or a Unix
 * time, x-ratelimit-remaining-* counts, header lines of any case, and which answers
 * become a pause hint (a 429 or 503 with Retry-After, or with an exhausted budget and its
 * reset) and which do not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "classify.h"
#include "router.h"

#define NOW ((time_t)1750000000) /* 2025-06-15T15:06:40Z */

static long retry_after(const char *v)
{
    return router_parse_retry_after(v, strlen(v), NOW);
}

static long reset(const char *v)
{
    return router_parse_reset(v, strlen(v), NOW);
}

static void test_retry_after(void **state)
{
    (void)state;
    assert_int_equal(retry_after("20"), 20000);
    assert_int_equal(retry_after(" 0 \r\n"), 0);
    assert_int_equal(retry_after("120"), 120000);
    assert_int_equal(retry_after("99999999999999"), ROUTER_HINT_MAX_MS); /* a day at most */
    /* NOW + 90 s and a date in the past */
    assert_int_equal(retry_after("Sun, 15 Jun 2025 15:08:10 GMT"), 90000);
    assert_int_equal(retry_after("Sun, 15 Jun 2025 15:00:00 GMT"), 0);
    assert_int_equal(retry_after(""), -1);
    assert_int_equal(retry_after("   "), -1);
    assert_int_equal(retry_after("soon-ish, maybe"), -1);
    assert_int_equal(retry_after("-5"), -1);
    assert_int_equal(retry_after("1.5"), -1); /* delta-seconds are whole */
}

static void test_reset_durations(void **state)
{
    (void)state;
    assert_int_equal(reset("20s"), 20000);
    assert_int_equal(reset("1m30s"), 90000);
    assert_int_equal(reset("250ms"), 250);
    assert_int_equal(reset("6m0s"), 360000);
    assert_int_equal(reset("0.5s"), 500);
    assert_int_equal(reset("1h2m3s"), 3723000);
    assert_int_equal(reset("1.5m"), 90000);
    assert_int_equal(reset("100us"), 1); /* rounded up to a whole ms */
    assert_int_equal(reset("1\xc2\xb5s"), 1);
    assert_int_equal(reset("17ms"), 17);
    assert_int_equal(reset(" 2s "), 2000);
    assert_int_equal(reset("20"), 20000);              /* bare seconds */
    assert_int_equal(reset("0.25"), 250);
    assert_int_equal(reset("1750000030"), 30000);      /* a Unix time, 30 s from now */
    assert_int_equal(reset("1749999000"), 0);          /* ... in the past */
    assert_int_equal(reset("48h"), ROUTER_HINT_MAX_MS);
    assert_int_equal(reset("0s"), 0);
    assert_int_equal(reset(""), -1);
    assert_int_equal(reset("s"), -1);
    assert_int_equal(reset("20x"), -1);
    assert_int_equal(reset("1m 30s"), -1);
    assert_int_equal(reset("-1s"), -1);
    assert_int_equal(reset("."), -1);
}

static void test_counts(void **state)
{
    (void)state;
    assert_int_equal(router_parse_count("0", 1), 0);
    assert_int_equal(router_parse_count(" 59\r\n", 5), 59);
    assert_int_equal(router_parse_count("", 0), -1);
    assert_int_equal(router_parse_count("-1", 2), -1);
    assert_int_equal(router_parse_count("5k", 2), -1);
}

static void header(const char *line, long *ra, router_ratelimit_t *rl)
{
    router_parse_header(line, strlen(line), NOW, ra, rl);
}

static void test_header_lines(void **state)
{
    (void)state;
    long ra = -1;
    router_ratelimit_t rl;
    memset(&rl, 0, sizeof rl);
    header("HTTP/1.1 429 Too Many Requests\r\n", &ra, &rl);
    header("Content-Type: text/plain\r\n", &ra, &rl);
    header("x-ratelimit-limit-requests: 60\r\n", &ra, &rl);
    assert_int_equal(ra, -1);
    assert_int_equal(rl.have, 0);
    header("RETRY-AFTER: 7\r\n", &ra, &rl);
    assert_int_equal(ra, 7000);
    header("Retry-After: junk\r\n", &ra, &rl); /* an unreadable value changes nothing */
    assert_int_equal(ra, 7000);
    header("X-RateLimit-Remaining-Requests: 0\r\n", &ra, &rl);
    header("x-ratelimit-reset-requests: 1m30s\r\n", &ra, &rl);
    header("x-ratelimit-remaining-tokens: 120\r\n", &ra, &rl);
    header("x-ratelimit-reset-tokens: 6m0s\r\n", &ra, &rl);
    header("x-ratelimit-reset-tokens-extra: 1s\r\n", &ra, &rl); /* not the same name */
    assert_int_equal(rl.have, ROUTER_RL_RESET_REQUESTS | ROUTER_RL_RESET_TOKENS |
                                  ROUTER_RL_REMAINING_REQUESTS | ROUTER_RL_REMAINING_TOKENS);
    assert_int_equal(rl.remaining_requests, 0);
    assert_int_equal(rl.reset_requests_ms, 90000);
    assert_int_equal(rl.remaining_tokens, 120);
    assert_int_equal(rl.reset_tokens_ms, 360000);
    header("x-ratelimit-reset-requests\r\n", &ra, &rl); /* no colon */
    assert_int_equal(rl.reset_requests_ms, 90000);
}

static router_result_t answer(long status, long retry_after_ms)
{
    router_result_t r;
    memset(&r, 0, sizeof r);
    r.http_status = status;
    r.retry_after_ms = retry_after_ms;
    r.body = "busy";
    r.body_len = 4;
    r.error = "";
    r.path = "/inference";
    return r;
}

static void test_pause_hints(void **state)
{
    (void)state;
    long ms = 0;
    router_result_t r = answer(429, 20000);
    assert_string_equal(router_pause_hint(&r, &ms), "retry_after");
    assert_int_equal(ms, 20000);
    r = answer(503, 1000);
    assert_string_equal(router_pause_hint(&r, &ms), "retry_after");
    assert_int_equal(ms, 1000);
    r = answer(429, 0); /* "Retry-After: 0" is still the router's word (flow.c makes it 1 s) */
    assert_string_equal(router_pause_hint(&r, &ms), "retry_after");
    assert_int_equal(ms, 0);
    /* not a pause: other statuses, no hint, a budget not exhausted, a reset without a count */
    long statuses[] = {500, 502, 408, 200, 400};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        r = answer(statuses[i], 20000);
        assert_null(router_pause_hint(&r, &ms));
        assert_int_equal(ms, -1);
    }
    r = answer(429, -1);
    assert_null(router_pause_hint(&r, &ms));
    r.ratelimit.have = ROUTER_RL_REMAINING_REQUESTS | ROUTER_RL_RESET_REQUESTS;
    r.ratelimit.remaining_requests = 3;
    r.ratelimit.reset_requests_ms = 5000;
    assert_null(router_pause_hint(&r, &ms));
    r.ratelimit.have = ROUTER_RL_RESET_REQUESTS;
    assert_null(router_pause_hint(&r, &ms));
    /* an exhausted budget with its reset: cause ratelimit, the longer of the two budgets */
    r.ratelimit.have = ROUTER_RL_REMAINING_REQUESTS | ROUTER_RL_RESET_REQUESTS |
                       ROUTER_RL_REMAINING_TOKENS | ROUTER_RL_RESET_TOKENS;
    r.ratelimit.remaining_requests = 0;
    r.ratelimit.remaining_tokens = 0;
    r.ratelimit.reset_tokens_ms = 9000;
    assert_string_equal(router_pause_hint(&r, &ms), "ratelimit");
    assert_int_equal(ms, 9000);
    /* with Retry-After too: the cause is Retry-After, the pause the longest of all */
    r.retry_after_ms = 2000;
    assert_string_equal(router_pause_hint(&r, &ms), "retry_after");
    assert_int_equal(ms, 9000);
    /* a transfer that failed is no answer */
    r.curl_code = CURLE_RECV_ERROR;
    assert_null(router_pause_hint(&r, &ms));
}

static void test_classify_carries_the_hint(void **state)
{
    (void)state;
    router_result_t r = answer(429, 20000);
    router_outcome_t o;
    router_classify(&r, &o);
    assert_int_equal(o.verdict, ROUTER_TRANSIENT);
    assert_string_equal(o.pause_cause, "retry_after");
    assert_int_equal(o.pause_ms, 20000);
    router_outcome_free(&o);
    r = answer(500, 20000);
    router_classify(&r, &o);
    assert_null(o.pause_cause);
    assert_int_equal(o.pause_ms, -1);
    assert_int_equal(o.retry_after_ms, 20000); /* still the floor of the backoff */
    router_outcome_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_reset_durations),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_header_lines),
        cmocka_unit_test(test_pause_hints),
        cmocka_unit_test(test_classify_carries_the_hint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
