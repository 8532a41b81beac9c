/*
 * The grammar of RETRYQ_FLOW and RETRYQ_BREAKER (flowrules.c): every limit, wildcards
 * and which rule wins for a key, a model id holding '/', the default burst, and one
 * sentence for each kind of mistake.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "flowrules.h"

static flow_rules_t rules;

static void test_empty_means_no_limits(void **state)
{
    (void)state;
    char err[400];
    assert_int_equal(flow_rules_parse(NULL, &rules, err, sizeof err), 0);
    assert_int_equal(rules.count, 0);
    assert_int_equal(flow_rules_parse("", &rules, err, sizeof err), 0);
    assert_int_equal(flow_rules_parse(" ; ;", &rules, err, sizeof err), 0);
    assert_int_equal(rules.count, 0);
    assert_null(flow_rules_match(&rules, "llama3.2-1b", "eu-west"));
}

static void test_limits_and_matching(void **state)
{
    (void)state;
    char err[400] = "";
    const char *text = " llama3.2-1b/eu-west = concurrency:2 ; */eu-west=rate:10/s,burst:3;"
                       "llama3.2-1b/*=rate:30/m;*/*=concurrency:100,rate:0.25/s;"
                       "org/model:7b/asia-pacific=concurrency:1,rate:2/h";
    assert_int_equal(flow_rules_parse(text, &rules, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_int_equal(rules.count, 5);
    const flow_limits_t *l = flow_rules_match(&rules, "llama3.2-1b", "eu-west");
    assert_non_null(l); /* the exact key wins over every wildcard */
    assert_int_equal(l->concurrency, 2);
    assert_true(l->rate_per_sec == 0);
    l = flow_rules_match(&rules, "mistral-7b", "eu-west");
    assert_int_equal(l->concurrency, 0); /* the rule of any model in eu-west */
    assert_true(l->rate_per_sec == 10);
    assert_int_equal(l->burst, 3);
    l = flow_rules_match(&rules, "llama3.2-1b", "us-east");
    assert_true(fabs(l->rate_per_sec - 0.5) < 1e-9); /* MODEL/any beats any/REGION and any/any */
    assert_int_equal(l->concurrency, 0);
    assert_int_equal(l->burst, 1);                    /* default: the rate per second, rounded up */
    l = flow_rules_match(&rules, "qwen", "us-east");
    assert_int_equal(l->concurrency, 100);
    assert_true(fabs(l->rate_per_sec - 0.25) < 1e-9);
    assert_int_equal(l->burst, 1);
    l = flow_rules_match(&rules, "org/model:7b", "asia-pacific"); /* split at the last '/' */
    assert_int_equal(l->concurrency, 1);
    assert_true(fabs(l->rate_per_sec - 2.0 / 3600) < 1e-12);
    assert_string_equal(rules.rule[4].model, "org/model:7b");
    assert_string_equal(rules.rule[4].region, "asia-pacific");
}

static void test_wildcard_ranks(void **state)
{
    (void)state;
    char err[400];
    /* MODEL/any is more specific than any/REGION, whatever the order of the rules */
    assert_int_equal(flow_rules_parse("*/eu-west=concurrency:1;m/*=concurrency:2", &rules, err, sizeof err), 0);
    assert_int_equal(flow_rules_match(&rules, "m", "eu-west")->concurrency, 2);
    assert_int_equal(flow_rules_match(&rules, "x", "eu-west")->concurrency, 1);
    assert_null(flow_rules_match(&rules, "x", "us-east"));
    assert_int_equal(flow_rules_parse("rate:5/s", &rules, err, sizeof err), -1); /* no KEY= */
}

static void expect_refused(const char *text, const char *why)
{
    char err[400] = "";
    if (flow_rules_parse(text, &rules, err, sizeof err) != -1)
        fail_msg("accepted \"%s\"", text);
    if (strstr(err, why) == NULL)
        fail_msg("\"%s\": got \"%s\", want \"%s\"", text, err, why);
}

static void test_mistakes(void **state)
{
    (void)state;
    expect_refused("llama=concurrency:1", "must be MODEL/REGION");
    expect_refused("/eu-west=concurrency:1", "must be MODEL/REGION");
    expect_refused("m/=concurrency:1", "must be MODEL/REGION");
    expect_refused("m x/eu=concurrency:1", "blank or a control character");
    expect_refused("m/eu=", "an empty or overlong limit");
    expect_refused("m/eu=concurrency:1,", "an empty or overlong limit");
    expect_refused("m/eu=concurrency:0", "concurrency must be given once, an integer 1..100000");
    expect_refused("m/eu=concurrency:1.5", "concurrency must be given once");
    expect_refused("m/eu=concurrency:1,concurrency:2", "concurrency must be given once");
    expect_refused("m/eu=rate:5", "rate must be given once, as R/s");
    expect_refused("m/eu=rate:0/s", "rate must be given once");
    expect_refused("m/eu=rate:5/d", "rate must be given once");
    expect_refused("m/eu=rate:1e3/s", "rate must be given once");
    expect_refused("m/eu=burst:3", "burst needs a rate");
    expect_refused("m/eu=rate:1/s,burst:0", "burst must be given once");
    expect_refused("m/eu=speed:1", "unknown limit \"speed:1\"");
    expect_refused("m/eu=concurrency:1;m/eu=rate:1/s", "is given twice");
    expect_refused("m/eu concurrency:1", "must be KEY=LIMIT");
    char many[64 * 24 + 64] = "";
    for (int i = 0; i <= FLOW_RULES_MAX; i++) {
        char rule[32];
        snprintf(rule, sizeof rule, "m%d/eu=concurrency:1;", i);
        strcat(many, rule);
    }
    expect_refused(many, "more than 64 rules");
}

static void test_breaker_settings(void **state)
{
    (void)state;
    char err[400] = "";
    breaker_config_t c;
    assert_int_equal(breaker_config_parse(NULL, &c, err, sizeof err), 0);
    assert_true(c.enabled);
    assert_true(c.ratio == 0.5);
    assert_int_equal(c.min_calls, 20);
    assert_int_equal(c.window_ms, 60000);
    assert_int_equal(c.backoff_min_ms, 5000);
    assert_int_equal(c.backoff_max_ms, 300000);
    assert_int_equal(breaker_config_parse(" OFF ", &c, err, sizeof err), 0);
    assert_false(c.enabled);
    assert_int_equal(breaker_config_parse("min:5, backoff:2s..8s", &c, err, sizeof err), 0);
    assert_true(c.enabled);
    assert_int_equal(c.min_calls, 5);
    assert_int_equal(c.backoff_min_ms, 2000);
    assert_int_equal(c.backoff_max_ms, 8000);
    assert_int_equal(c.window_ms, 60000); /* left out: the default */
    assert_int_equal(breaker_config_parse("ratio:1,window:10s,backoff:500ms..1h", &c, err, sizeof err), 0);
    assert_true(c.ratio == 1);
    assert_int_equal(c.window_ms, 10000);
    assert_int_equal(c.backoff_max_ms, 3600000);
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"ratio:0", "ratio must be a fraction"},     {"ratio:1.5", "ratio must be a fraction"},
        {"min:0", "min must be an integer"},         {"window:500ms", "window must be a duration"},
        {"window:2h", "window must be a duration"},  {"backoff:5s", "backoff must be MIN..MAX"},
        {"backoff:5m..5s", "backoff must be MIN..MAX"}, {"backoff:50ms..1s", "backoff must be MIN..MAX"},
        {"ratio:0.5,", "an empty or overlong item"}, {"speed:1", "unknown item \"speed:1\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(breaker_config_parse(bad[i].text, &c, err, sizeof err), -1);
        if (strstr(err, bad[i].why) == NULL)
            fail_msg("\"%s\": got \"%s\"", bad[i].text, err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_means_no_limits),
        cmocka_unit_test(test_limits_and_matching),
        cmocka_unit_test(test_wildcard_ranks),
        cmocka_unit_test(test_mistakes),
        cmocka_unit_test(test_breaker_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
