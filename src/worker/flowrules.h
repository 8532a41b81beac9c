/*
 * The settings of flow control, read from text: the per-key limits of RETRYQ_FLOW and
 * the circuit breaker's thresholds of RETRYQ_BREAKER (docs/flow-control.md). Pure
 * functions over fixed-size structs: config.c calls them to validate a setting, flow.c
 * to build its tables, test/unit/test_flowrules.c checks the grammar.
 *
 *   RETRYQ_FLOW     KEY=LIMIT[,LIMIT...][;KEY=...]      "" = no limits (the default)
 *                   KEY    MODEL/REGION, split at the last '/'; either part may be '*'
 *                   LIMIT  concurrency:N | rate:R/s (also /m, /h; R may have decimals) |
 *                          burst:B (with rate only; default: R per second rounded up)
 *   RETRYQ_BREAKER  off | ITEM[,ITEM...]  with ITEM  ratio:F | min:N | window:DURATION |
 *                   backoff:DURATION..DURATION; items left out keep their defaults
 *                   (ratio:0.5,min:20,window:60s,backoff:5s..5m)
 *
 * The limits of a key come from one rule, the most specific that matches: MODEL/REGION,
 * then MODEL/star, then star/REGION, then star/star. Each key gets its own limits (a
 * rule with a star is a template, not a budget shared by the keys it matches).
 */
#ifndef RETRYQ_WORKER_FLOWRULES_H
#define RETRYQ_WORKER_FLOWRULES_H

#include <stdbool.h>
#include <stddef.h>

#define FLOW_RULES_MAX 64      /* rules in RETRYQ_FLOW */
#define FLOW_PART_MAX 128      /* bytes of the model or the region of a rule */
#define FLOW_CONCURRENCY_MAX 100000
#define FLOW_BURST_MAX 1000000

/* The limits of one key; 0 means "no such limit". */
typedef struct flow_limits {
    int concurrency;       /* router calls in flight at once, across all workers */
    double rate_per_sec;   /* router calls started per second, across all workers */
    int burst;             /* calls the rate's bucket holds (rate only) */
} flow_limits_t;

typedef struct flow_rule {
    char model[FLOW_PART_MAX + 1];  /* "*" = any */
    char region[FLOW_PART_MAX + 1]; /* "*" = any */
    flow_limits_t limits;
} flow_rule_t;

typedef struct flow_rules {
    flow_rule_t rule[FLOW_RULES_MAX];
    int count;
} flow_rules_t;

typedef struct breaker_config {
    bool enabled;
    double ratio;        /* open when failures / calls >= ratio ... */
    int min_calls;       /* ... over at least this many calls ... */
    int window_ms;       /* ... in the last window_ms */
    int backoff_min_ms;  /* the first open lasts this long, doubling on each reopen ... */
    int backoff_max_ms;  /* ... up to this */
} breaker_config_t;

/* Parses RETRYQ_FLOW (NULL or "" = no rules). 0, or -1 with one sentence in err (the
 * rule and what is wrong with it, without the setting's name). */
int flow_rules_parse(const char *text, flow_rules_t *rules, char *err, size_t errcap);
/* The limits of a key, from the most specific rule that matches; NULL when none does. */
const flow_limits_t *flow_rules_match(const flow_rules_t *rules, const char *model,
                                      const char *region);
/* The defaults (enabled, 0.5, 20, 60 s, 5 s .. 5 min). */
breaker_config_t breaker_config_default(void);
/* Parses RETRYQ_BREAKER (NULL or "" = the defaults). 0, or -1 with err as above. */
int breaker_config_parse(const char *text, breaker_config_t *cfg, char *err, size_t errcap);

#endif
