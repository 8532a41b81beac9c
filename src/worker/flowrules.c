/*
 * The grammar of RETRYQ_FLOW and RETRYQ_BREAKER (see flowrules.h). Every refusal is one
 * sentence that quotes the part that is wrong, so config.c can put the setting's name in
 * front of it.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "flowrules.h"

#define TOKEN_MAX 300          /* bytes of one rule or one item */
#define RATE_MAX_PER_SEC 1e6
#define BREAKER_MS_MAX (24 * 3600 * 1000)

/* Copies s[0..n) without the blanks around it; false when it does not fit. */
static bool trimmed(const char *s, size_t n, char *out, size_t cap)
{
    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n >= cap)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

/* A decimal number: digits, optionally '.' and digits; the whole text. */
static bool parse_number(const char *text, double *out)
{
    const char *p = text;
    size_t digits = strspn(p, "0123456789");
    p += digits;
    if (*p == '.') {
        size_t more = strspn(p + 1, "0123456789");
        if (more == 0)
            return false;
        digits += more;
        p += 1 + more;
    }
    if (digits == 0 || *p != '\0' || digits > 15)
        return false;
    *out = strtod(text, NULL);
    return true;
}

static bool parse_int(const char *text, long min, long max, int *out)
{
    double v;
    if (strchr(text, '.') != NULL || !parse_number(text, &v) || v < (double)min || v > (double)max)
        return false;
    *out = (int)v;
    return true;
}

/* An integer with a unit: ms (or none), s, m, h. */
static bool parse_ms(const char *text, int *out)
{
    static const struct {
        const char *unit;
        long scale;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    size_t digits = strspn(text, "0123456789");
    if (digits == 0 || digits > 9)
        return false;
    long v = strtol(text, NULL, 10);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(text + digits, units[i].unit) != 0)
            continue;
        if (v > BREAKER_MS_MAX / units[i].scale)
            return false;
        *out = (int)(v * units[i].scale);
        return true;
    }
    return false;
}

/* MODEL/REGION, split at the last '/': neither part empty, no blank or control
 * character, no ',', ';' or '='. */
static int parse_key(const char *text, flow_rule_t *rule, char *err, size_t errcap)
{
    const char *slash = strrchr(text, '/');
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            snprintf(err, errcap, "key \"%s\" has a blank or a control character", text);
            return -1;
        }
    }
    if (slash == NULL || slash == text || slash[1] == '\0') {
        snprintf(err, errcap, "key \"%s\" must be MODEL/REGION (either may be *)", text);
        return -1;
    }
    size_t model = (size_t)(slash - text), region = strlen(slash + 1);
    if (model > FLOW_PART_MAX || region > FLOW_PART_MAX) {
        snprintf(err, errcap, "key \"%.64s...\" has a part longer than %d bytes", text, FLOW_PART_MAX);
        return -1;
    }
    memcpy(rule->model, text, model);
    rule->model[model] = '\0';
    memcpy(rule->region, slash + 1, region + 1);
    return 0;
}

/* concurrency:N, rate:R/s|/m|/h or burst:B into limits. */
static int parse_limit(const char *item, const char *key, flow_limits_t *limits, char *err,
                       size_t errcap)
{
    const char *colon = strchr(item, ':');
    const char *value = colon != NULL ? colon + 1 : "";
    size_t name = colon != NULL ? (size_t)(colon - item) : strlen(item);
    if (name == 11 && strncmp(item, "concurrency", 11) == 0) {
        if (limits->concurrency == 0 && parse_int(value, 1, FLOW_CONCURRENCY_MAX, &limits->concurrency))
            return 0;
        snprintf(err, errcap, "%s: \"%s\": concurrency must be given once, an integer 1..%d", key,
                 item, FLOW_CONCURRENCY_MAX);
        return -1;
    }
    if (name == 5 && strncmp(item, "burst", 5) == 0) {
        if (limits->burst == 0 && parse_int(value, 1, FLOW_BURST_MAX, &limits->burst))
            return 0;
        snprintf(err, errcap, "%s: \"%s\": burst must be given once, an integer 1..%d", key, item,
                 FLOW_BURST_MAX);
        return -1;
    }
    if (name == 4 && strncmp(item, "rate", 4) == 0) {
        char number[32];
        const char *per = strchr(value, '/');
        double v, scale = 0;
        if (per != NULL && (size_t)(per - value) < sizeof number) {
            memcpy(number, value, (size_t)(per - value));
            number[per - value] = '\0';
            scale = strcmp(per, "/s") == 0 ? 1 : strcmp(per, "/m") == 0 ? 60 : strcmp(per, "/h") == 0 ? 3600 : 0;
        }
        if (limits->rate_per_sec == 0 && scale > 0 && parse_number(number, &v) && v > 0 &&
            v / scale <= RATE_MAX_PER_SEC && v / scale >= 1.0 / 86400) {
            limits->rate_per_sec = v / scale;
            return 0;
        }
        snprintf(err, errcap, "%s: \"%s\": rate must be given once, as R/s, R/m or R/h (R > 0, "
                 "from one a day to 10^6 a second)", key, item);
        return -1;
    }
    snprintf(err, errcap, "%s: unknown limit \"%s\" (concurrency:N, rate:R/s, burst:B)", key, item);
    return -1;
}

/* One KEY=LIMIT[,LIMIT...] rule. */
static int parse_rule(const char *text, flow_rules_t *rules, char *err, size_t errcap)
{
    const char *eq = strchr(text, '=');
    char key[TOKEN_MAX];
    if (eq == NULL || !trimmed(text, (size_t)(eq - text), key, sizeof key)) {
        snprintf(err, errcap, "rule \"%.80s\" must be KEY=LIMIT[,LIMIT...]", text);
        return -1;
    }
    if (rules->count == FLOW_RULES_MAX) {
        snprintf(err, errcap, "more than %d rules", FLOW_RULES_MAX);
        return -1;
    }
    flow_rule_t *rule = &rules->rule[rules->count];
    memset(rule, 0, sizeof *rule);
    if (parse_key(key, rule, err, errcap) < 0)
        return -1;
    for (int i = 0; i < rules->count; i++) {
        if (strcmp(rules->rule[i].model, rule->model) == 0 && strcmp(rules->rule[i].region, rule->region) == 0) {
            snprintf(err, errcap, "key \"%s\" is given twice", key);
            return -1;
        }
    }
    for (const char *p = eq + 1;;) {
        size_t n = strcspn(p, ",");
        char item[TOKEN_MAX];
        if (!trimmed(p, n, item, sizeof item) || item[0] == '\0') {
            snprintf(err, errcap, "%s: an empty or overlong limit (concurrency:N, rate:R/s, burst:B)", key);
            return -1;
        }
        if (parse_limit(item, key, &rule->limits, err, errcap) < 0)
            return -1;
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    if (rule->limits.burst > 0 && rule->limits.rate_per_sec == 0) {
        snprintf(err, errcap, "%s: burst needs a rate", key);
        return -1;
    }
    if (rule->limits.rate_per_sec > 0 && rule->limits.burst == 0) {
        double b = ceil(rule->limits.rate_per_sec);
        rule->limits.burst = b < 1 ? 1 : b > FLOW_BURST_MAX ? FLOW_BURST_MAX : (int)b;
    }
    rules->count++;
    return 0;
}

int flow_rules_parse(const char *text, flow_rules_t *rules, char *err, size_t errcap)
{
    rules->count = 0;
    if (text == NULL)
        return 0;
    for (const char *p = text;;) {
        size_t n = strcspn(p, ";");
        char rule[TOKEN_MAX * 4];
        if (!trimmed(p, n, rule, sizeof rule)) {
            snprintf(err, errcap, "rule \"%.80s...\" is too long", p);
            return -1;
        }
        /* empty rules (a trailing ';', or nothing at all) are allowed */
        if (rule[0] != '\0' && parse_rule(rule, rules, err, errcap) < 0)
            return -1;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

static bool part_matches(const char *pattern, const char *value)
{
    return strcmp(pattern, "*") == 0 || strcmp(pattern, value) == 0;
}

const flow_limits_t *flow_rules_match(const flow_rules_t *rules, const char *model,
                                      const char *region)
{
    const flow_rule_t *best = NULL;
    int best_rank = -1;
    for (int i = 0; rules != NULL && i < rules->count; i++) {
        const flow_rule_t *r = &rules->rule[i];
        if (!part_matches(r->model, model) || !part_matches(r->region, region))
            continue;
        /* MODEL/REGION 3, MODEL/any 2, any/REGION 1, any/any 0 */
        int rank = (strcmp(r->model, "*") != 0) * 2 + (strcmp(r->region, "*") != 0);
        if (rank > best_rank) {
            best = r;
            best_rank = rank;
        }
    }
    return best != NULL ? &best->limits : NULL;
}

breaker_config_t breaker_config_default(void)
{
    breaker_config_t c = {.enabled = true,
                          .ratio = 0.5,
                          .min_calls = 20,
                          .window_ms = 60000,
                          .backoff_min_ms = 5000,
                          .backoff_max_ms = 300000};
    return c;
}

static int parse_breaker_item(const char *item, breaker_config_t *c, char *err, size_t errcap)
{
    const char *colon = strchr(item, ':');
    const char *value = colon != NULL ? colon + 1 : "";
    size_t name = colon != NULL ? (size_t)(colon - item) : strlen(item);
    double ratio;
    if (name == 5 && strncmp(item, "ratio", 5) == 0) {
        if (parse_number(value, &ratio) && ratio > 0 && ratio <= 1) {
            c->ratio = ratio;
            return 0;
        }
        snprintf(err, errcap, "\"%s\": ratio must be a fraction above 0, at most 1 (e.g. 0.5)", item);
        return -1;
    }
    if (name == 3 && strncmp(item, "min", 3) == 0) {
        if (parse_int(value, 1, 1000000, &c->min_calls))
            return 0;
        snprintf(err, errcap, "\"%s\": min must be an integer 1..1000000 (calls)", item);
        return -1;
    }
    if (name == 6 && strncmp(item, "window", 6) == 0) {
        if (parse_ms(value, &c->window_ms) && c->window_ms >= 1000 && c->window_ms <= 3600000)
            return 0;
        snprintf(err, errcap, "\"%s\": window must be a duration of 1s to 1h (e.g. 60s)", item);
        return -1;
    }
    if (name == 7 && strncmp(item, "backoff", 7) == 0) {
        const char *dots = strstr(value, "..");
        char first[32];
        size_t n = dots != NULL ? (size_t)(dots - value) : 0;
        if (dots != NULL && n < sizeof first) {
            memcpy(first, value, n);
            first[n] = '\0';
            if (parse_ms(first, &c->backoff_min_ms) && parse_ms(dots + 2, &c->backoff_max_ms) &&
                c->backoff_min_ms >= 100 && c->backoff_min_ms <= c->backoff_max_ms)
                return 0;
        }
        snprintf(err, errcap, "\"%s\": backoff must be MIN..MAX, durations of 100ms to 24h with MIN <= "
                 "MAX (e.g. 5s..5m)", item);
        return -1;
    }
    snprintf(err, errcap, "unknown item \"%s\" (off, or ratio:F,min:N,window:DURATION,"
             "backoff:MIN..MAX)", item);
    return -1;
}

int breaker_config_parse(const char *text, breaker_config_t *cfg, char *err, size_t errcap)
{
    *cfg = breaker_config_default();
    char item[TOKEN_MAX];
    if (text == NULL)
        return 0;
    bool fits = trimmed(text, strlen(text), item, sizeof item);
    if (fits && item[0] == '\0')
        return 0;
    if (fits && strcasecmp(item, "off") == 0) {
        cfg->enabled = false;
        return 0;
    }
    for (const char *p = text;;) {
        size_t n = strcspn(p, ",");
        if (!trimmed(p, n, item, sizeof item) || item[0] == '\0') {
            snprintf(err, errcap, "an empty or overlong item (off, or ratio:F,min:N,window:DURATION,"
                     "backoff:MIN..MAX)");
            return -1;
        }
        if (parse_breaker_item(item, cfg, err, errcap) < 0)
            return -1;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}
