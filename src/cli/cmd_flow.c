/*
 * `retryq flow [list]|pause|resume`: flow control from the operator's side. `pause` and
 * `resume` act on one flow key (MODEL/REGION); `list` (also `flow` alone) shows one row
 * per key the workers know, merged from the three indexes libretryq pages through
 * (src/lib/flow.c): the pauses, the breakers the workers publish and the keys in use with
 * their permits. The rows are shared with `retryq stats`, which shows the paused keys and
 * the open breakers (cli_flow_print_section, cli_flow_section_json).
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define REASON_CELL_MAX 40 /* longer reasons are cut in tables (not in --json) */

static const char usage[] =
    "Usage: retryq flow [list] [--json]\n"
    "       retryq flow pause KEY [--for DURATION] [--reason TEXT]\n"
    "       retryq flow resume KEY\n\n"
    "Flow control stops the calls to one model in one region: a flow key, MODEL/REGION\n"
    "(e.g. llama3.2-1b/us-east; the region follows the last '/'). While a key is paused,\n"
    "every worker parks its jobs in the delayed set without using an attempt. Workers\n"
    "pause keys themselves (Retry-After and rate-limit answers, an open circuit breaker);\n"
    "an operator pauses and resumes them here. Times use Redis's clock.\n\n"
    "Actions:\n"
    "  list [--json]            show the paused keys, the breakers and the permits in\n"
    "                           use, one row per key (the default action)\n"
    "  pause KEY [--for DURATION] [--reason TEXT]\n"
    "                           pause a key for every worker\n"
    "  resume KEY               delete a key's pause, whatever its cause\n\n"
    "Options:\n"
    "  -h, --help   show this help ('retryq flow ACTION --help' for an action)\n";

static const char list_usage[] =
    "Usage: retryq flow list [--json]\n\n"
    "Shows every flow key the workers know, one row per key: its state (paused, open or\n"
    "half-open for a circuit breaker, else ok), the cause of its pause (retry_after,\n"
    "ratelimit, breaker, operator), the reason, the time left, and the concurrency\n"
    "permits in use. Read from Redis in pages (at most 1,000 entries per index and call).\n\n"
    "Options:\n"
    "  --json       print one JSON array: [{key, state, pause: {cause, reason, by,\n"
    "               until_ms, left_seconds} or null, breaker: {state, until_ms,\n"
    "               left_seconds, worker, failures, calls} or null, permits_in_use (null\n"
    "               when no worker has used the key)}]\n"
    "  -h, --help   show this help\n";

static const char pause_usage[] =
    "Usage: retryq flow pause KEY [--for DURATION] [--reason TEXT]\n\n"
    "Pauses KEY (MODEL/REGION) for every worker: its jobs wait in the delayed set, using\n"
    "no attempt, until the pause ends or 'retryq flow resume KEY'. A pause already in\n"
    "place that ends later (a Retry-After, an earlier pause) stays as it is: a pause never\n"
    "shortens another. To shorten one, resume the key and pause it again.\n\n"
    "Options:\n"
    "  --for DURATION  how long: 90s, 5m, 1h30m, 2d, 250ms (a bare number is seconds),\n"
    "                  at most 30d. Default: until resumed, which is the longest pause\n"
    "                  (30 days)\n"
    "  --reason TEXT   why, shown by 'retryq flow', 'retryq stats' and the worker's\n"
    "                  status page (at most 200 bytes)\n"
    "  -h, --help      show this help\n";

static const char resume_usage[] =
    "Usage: retryq flow resume KEY\n\n"
    "Deletes the pause of KEY (MODEL/REGION), whatever its cause (operator, Retry-After,\n"
    "rate limit, circuit breaker), so every worker calls the key again. A key that is not\n"
    "paused is left as it is, and the command says so (exit 0). A worker whose breaker\n"
    "paused the key keeps its own breaker state until its back-off ends.\n\n"
    "Options:\n"
    "  -h, --help   show this help\n";

/* ------------------------------------------------------------ reading the rows */

static int compare_rows(const void *a, const void *b)
{
    return strcmp(((const cli_flow_row_t *)a)->key, ((const cli_flow_row_t *)b)->key);
}

/* A new row for `key` at the end of flow->rows; NULL when memory ran out. */
static cli_flow_row_t *append_row(cli_flow_t *flow, size_t *cap, const char *key)
{
    if (flow->count == *cap) {
        size_t n = *cap != 0 ? *cap * 2 : 64;
        cli_flow_row_t *rows = realloc(flow->rows, n * sizeof *rows);
        if (rows == NULL)
            return NULL;
        flow->rows = rows;
        *cap = n;
    }
    cli_flow_row_t *row = &flow->rows[flow->count++];
    memset(row, 0, sizeof *row);
    snprintf(row->key, sizeof row->key, "%s", key);
    return row;
}

static int append_page(cli_flow_t *flow, size_t *cap, const retryq_flow_list_t *page)
{
    cli_flow_row_t *row;
    for (size_t i = 0; i < page->pause_count; i++) {
        if ((row = append_row(flow, cap, page->pauses[i].key)) == NULL)
            return RETRYQ_ERR_NOMEM;
        row->paused = true;
        row->pause = page->pauses[i];
    }
    for (size_t i = 0; i < page->breaker_count; i++) {
        if ((row = append_row(flow, cap, page->breakers[i].key)) == NULL)
            return RETRYQ_ERR_NOMEM;
        row->has_breaker = true;
        row->breaker = page->breakers[i];
    }
    for (size_t i = 0; i < page->key_count; i++) {
        if ((row = append_row(flow, cap, page->keys[i].key)) == NULL)
            return RETRYQ_ERR_NOMEM;
        row->in_use = true;
        row->permits = page->keys[i];
    }
    return RETRYQ_OK;
}

/* Sorts the rows and folds those of one key into one (an index may also name a key
 * twice across pages, as SCAN may). */
static void merge_rows(cli_flow_t *flow)
{
    size_t kept = 0;
    if (flow->count == 0)
        return;
    qsort(flow->rows, flow->count, sizeof *flow->rows, compare_rows);
    for (size_t i = 1; i < flow->count; i++) {
        cli_flow_row_t *into = &flow->rows[kept], *from = &flow->rows[i];
        if (strcmp(into->key, from->key) != 0) {
            flow->rows[++kept] = *from;
            continue;
        }
        if (from->paused) {
            into->paused = true;
            into->pause = from->pause;
        }
        if (from->has_breaker) {
            into->has_breaker = true;
            into->breaker = from->breaker;
        }
        if (from->in_use) {
            into->in_use = true;
            into->permits = from->permits;
        }
    }
    flow->count = kept + 1;
}

int cli_flow_read(cli_t *cli, cli_flow_t *flow, retryq_error_t *err)
{
    char cursor[RETRYQ_MAX_FLOW_CURSOR] = "0";
    size_t cap = 0;
    memset(flow, 0, sizeof *flow);
    do {
        retryq_flow_list_t page;
        int rc = retryq_flow_list(cli->client, cursor, 0, &page, err);
        if (rc == RETRYQ_OK && append_page(flow, &cap, &page) != RETRYQ_OK) {
            snprintf(err->message, sizeof err->message, "out of memory");
            rc = err->code = RETRYQ_ERR_NOMEM;
        }
        snprintf(cursor, sizeof cursor, "%s", page.next);
        retryq_flow_list_free(&page);
        if (rc != RETRYQ_OK) {
            cli_flow_free(flow);
            return rc;
        }
    } while (strcmp(cursor, "0") != 0);
    merge_rows(flow);
    return RETRYQ_OK;
}

void cli_flow_free(cli_flow_t *flow)
{
    free(flow->rows);
    memset(flow, 0, sizeof *flow);
}

/* ------------------------------------------------------------ rendering */

static bool breaker_is(const cli_flow_row_t *row, const char *state)
{
    return row->has_breaker && strcmp(row->breaker.state, state) == 0;
}

/* "paused", "open", "half-open" (JSON: "half_open") or "ok". */
static const char *row_state(const cli_flow_row_t *row, bool json)
{
    if (row->paused)
        return "paused";
    if (breaker_is(row, "open"))
        return "open";
    if (breaker_is(row, "half_open"))
        return json ? "half_open" : "half-open";
    return "ok";
}

/* Shown by `stats`: paused, or a breaker that is not closed. */
static bool row_stopped(const cli_flow_row_t *row)
{
    return row->paused || breaker_is(row, "open") || breaker_is(row, "half_open");
}

typedef struct flow_cells {
    char cause[40], reason[REASON_CELL_MAX + 1], left[32], permits[24];
} flow_cells_t;

static void cells_of(const cli_flow_row_t *row, flow_cells_t *c)
{
    char text[RETRYQ_MAX_FLOW_REASON + 600];
    snprintf(c->cause, sizeof c->cause, "-");
    snprintf(c->left, sizeof c->left, "-");
    if (row->paused) {
        if (row->pause.cause[0] != '\0')
            cli_cell(row->pause.cause, sizeof c->cause - 1, c->cause, sizeof c->cause);
        if (row->pause.left_ms >= 0)
            cli_format_age(row->pause.left_ms, c->left, sizeof c->left);
        snprintf(text, sizeof text, "%s", row->pause.reason[0] != '\0' ? row->pause.reason : "-");
    } else if (row->has_breaker && row->breaker.state[0] == '\0') {
        snprintf(text, sizeof text, "(breaker entry not readable)");
    } else if (row->has_breaker && !breaker_is(row, "closed")) {
        if (row->breaker.left_ms > 0)
            cli_format_age(row->breaker.left_ms, c->left, sizeof c->left);
        if (row->breaker.failures >= 0 && row->breaker.calls >= 0)
            snprintf(text, sizeof text, "%" PRId64 " of %" PRId64 " calls failed (worker %s)",
                     row->breaker.failures, row->breaker.calls,
                     row->breaker.worker[0] != '\0' ? row->breaker.worker : "?");
        else
            snprintf(text, sizeof text, "breaker of worker %s",
                     row->breaker.worker[0] != '\0' ? row->breaker.worker : "?");
    } else {
        snprintf(text, sizeof text, "-");
    }
    cli_cell(text, REASON_CELL_MAX, c->reason, sizeof c->reason);
    if (row->in_use)
        snprintf(c->permits, sizeof c->permits, "%" PRId64, row->permits.in_use);
    else
        snprintf(c->permits, sizeof c->permits, "-");
}

static int key_width(const cli_flow_t *flow, bool stopped_only, int least)
{
    int w = least;
    for (size_t i = 0; i < flow->count; i++)
        if ((!stopped_only || row_stopped(&flow->rows[i])) && (int)strlen(flow->rows[i].key) > w)
            w = (int)strlen(flow->rows[i].key);
    return w;
}

static void print_table(const cli_flow_t *flow)
{
    if (flow->count == 0) {
        printf("no flow keys: nothing paused, no breaker published, no key used yet\n");
        return;
    }
    flow_cells_t *cells = calloc(flow->count, sizeof *cells);
    if (cells == NULL) {
        cli_error("out of memory");
        return;
    }
    int w = key_width(flow, false, 3), wc = 5, wr = 6;
    for (size_t i = 0; i < flow->count; i++) {
        cells_of(&flow->rows[i], &cells[i]);
        wc = (int)strlen(cells[i].cause) > wc ? (int)strlen(cells[i].cause) : wc;
        wr = (int)strlen(cells[i].reason) > wr ? (int)strlen(cells[i].reason) : wr;
    }
    printf("%-*s  %-9s  %-*s  %-*s  %8s  %7s\n", w, "KEY", "STATE", wc, "CAUSE", wr, "REASON", "LEFT",
           "PERMITS");
    for (size_t i = 0; i < flow->count; i++)
        printf("%-*s  %-9s  %-*s  %-*s  %8s  %7s\n", w, flow->rows[i].key, row_state(&flow->rows[i], false), wc,
               cells[i].cause, wr, cells[i].reason, cells[i].left, cells[i].permits);
    free(cells);
}

void cli_flow_print_section(const cli_flow_t *flow)
{
    size_t stopped = 0;
    for (size_t i = 0; i < flow->count; i++)
        stopped += row_stopped(&flow->rows[i]);
    if (stopped == 0) {
        printf("\nflow: no key paused, no breaker open\n");
        return;
    }
    int w = key_width(flow, true, 8);
    printf("\n%-*s  %-9s  %-11s  %8s  %s\n", w, "FLOW KEY", "STATE", "CAUSE", "LEFT", "REASON");
    for (size_t i = 0; i < flow->count; i++) {
        if (!row_stopped(&flow->rows[i]))
            continue;
        flow_cells_t c = {0};
        cells_of(&flow->rows[i], &c);
        printf("%-*s  %-9s  %-11s  %8s  %s\n", w, flow->rows[i].key, row_state(&flow->rows[i], false), c.cause,
               c.left, c.reason);
    }
}

static bool add_seconds(cJSON *o, const char *name, int64_t ms)
{
    return ms < 0 ? cJSON_AddNullToObject(o, name) != NULL
                  : cJSON_AddNumberToObject(o, name, (double)ms / 1000.0) != NULL;
}

static bool add_count(cJSON *o, const char *name, int64_t n)
{
    return n < 0 ? cJSON_AddNullToObject(o, name) != NULL : cJSON_AddNumberToObject(o, name, (double)n) != NULL;
}

/* {cause, reason, by, until_ms, left_seconds}, with "key" first when `with_key`. */
static cJSON *pause_json(const retryq_flow_pause_t *p, bool with_key)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL && (!with_key || cJSON_AddStringToObject(o, "key", p->key) != NULL) &&
              cJSON_AddStringToObject(o, "cause", p->cause) != NULL &&
              cJSON_AddStringToObject(o, "reason", p->reason) != NULL &&
              cJSON_AddStringToObject(o, "by", p->by) != NULL &&
              cJSON_AddNumberToObject(o, "until_ms", (double)p->until_ms) != NULL &&
              add_seconds(o, "left_seconds", p->left_ms);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* {state, until_ms, left_seconds, worker, failures, calls}, with "key" first when `with_key`. */
static cJSON *breaker_json(const retryq_flow_breaker_t *b, bool with_key)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL && (!with_key || cJSON_AddStringToObject(o, "key", b->key) != NULL) &&
              cJSON_AddStringToObject(o, "state", b->state) != NULL &&
              cJSON_AddNumberToObject(o, "until_ms", (double)b->until_ms) != NULL &&
              add_seconds(o, "left_seconds", b->left_ms) &&
              cJSON_AddStringToObject(o, "worker", b->worker) != NULL && add_count(o, "failures", b->failures) &&
              add_count(o, "calls", b->calls);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Adds `item` (NULL: JSON null) to `o`; false when memory ran out. */
static bool add_or_null(cJSON *o, const char *name, bool present, cJSON *item)
{
    if (!present)
        return cJSON_AddNullToObject(o, name) != NULL;
    return item != NULL && cJSON_AddItemToObject(o, name, item);
}

static cJSON *row_json(const cli_flow_row_t *row)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL && cJSON_AddStringToObject(o, "key", row->key) != NULL &&
              cJSON_AddStringToObject(o, "state", row_state(row, true)) != NULL &&
              add_or_null(o, "pause", row->paused, row->paused ? pause_json(&row->pause, false) : NULL) &&
              add_or_null(o, "breaker", row->has_breaker,
                          row->has_breaker ? breaker_json(&row->breaker, false) : NULL) &&
              add_count(o, "permits_in_use", row->in_use ? row->permits.in_use : -1);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int print_json(const cli_flow_t *flow)
{
    cJSON *root = cJSON_CreateArray();
    bool ok = root != NULL;
    for (size_t i = 0; ok && i < flow->count; i++) {
        cJSON *o = row_json(&flow->rows[i]);
        ok = o != NULL && cJSON_AddItemToArray(root, o);
    }
    return cli_print_json(root, ok);
}

cJSON *cli_flow_section_json(const cli_flow_t *flow)
{
    cJSON *root = cJSON_CreateObject(), *paused = NULL, *breakers = NULL;
    bool ok = root != NULL && (paused = cJSON_AddArrayToObject(root, "paused")) != NULL &&
              (breakers = cJSON_AddArrayToObject(root, "breakers")) != NULL;
    for (size_t i = 0; ok && i < flow->count; i++) {
        const cli_flow_row_t *row = &flow->rows[i];
        cJSON *item;
        if (row->paused)
            ok = (item = pause_json(&row->pause, true)) != NULL && cJSON_AddItemToArray(paused, item);
        if (ok && (breaker_is(row, "open") || breaker_is(row, "half_open")))
            ok = (item = breaker_json(&row->breaker, true)) != NULL && cJSON_AddItemToArray(breakers, item);
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ------------------------------------------------------------ list */

static int flow_list(cli_t *cli, int argc, char **argv, bool json)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(list_usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c != 'j')
            return CLI_EXIT_USAGE;
        json = true;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    cli_flow_t flow;
    retryq_error_t err = {0};
    if (cli_flow_read(cli, &flow, &err) != RETRYQ_OK)
        return cli_fail(&err);
    if (json) {
        rc = print_json(&flow);
    } else {
        print_table(&flow);
        rc = CLI_EXIT_OK;
    }
    cli_flow_free(&flow);
    return rc;
}

/* ------------------------------------------------------------ pause, resume */

/*
 * --for: one or more <integer><unit> (ms, s, m, h, d), e.g. "1h30m", or a bare integer
 * of seconds; 1 ms to 30 days.
 */
static bool parse_duration(const cli_t *cli, const char *text, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    int64_t total = 0;
    const char *p = text;
    bool ok = *p != '\0';
    while (ok && *p != '\0') {
        int64_t n = 0;
        const char *digits = p;
        while (*p >= '0' && *p <= '9' && n <= RETRYQ_FLOW_PAUSE_MAX_MS)
            n = n * 10 + (*p++ - '0');
        size_t unit_len = strspn(p, "abcdefghijklmnopqrstuvwxyz");
        int64_t scale = unit_len == 0 && *p == '\0' && digits == text ? 1000 : 0;
        for (size_t i = 0; scale == 0 && i < sizeof units / sizeof units[0]; i++)
            if (unit_len == strlen(units[i].unit) && strncmp(p, units[i].unit, unit_len) == 0)
                scale = units[i].ms;
        ok = p > digits && scale != 0 && n <= RETRYQ_FLOW_PAUSE_MAX_MS / scale;
        if (ok)
            total += n * scale;
        ok = ok && total <= RETRYQ_FLOW_PAUSE_MAX_MS;
        p += unit_len;
    }
    if (!ok || total < 1) {
        cli_usage_error(cli, "--for: expected a duration from 1ms to 30d such as 90s, 5m, 1h30m or 2d, got '%s'",
                        text);
        return false;
    }
    *out = total;
    return true;
}

/* The single KEY operand, checked; CLI_CONTINUE, a usage error (missing, extra) or
 * CLI_EXIT_REFUSED for a key that is not valid. */
static int key_operand(const cli_t *cli, int argc, char **argv, const char **key)
{
    retryq_error_t err = {0};
    if (optind >= argc)
        return cli_usage_error(cli, "missing KEY (MODEL/REGION, e.g. llama3.2-1b/us-east)");
    if (optind + 1 < argc)
        return cli_usage_error(cli, "unexpected argument '%s'", argv[optind + 1]);
    *key = argv[optind];
    if (retryq_flow_key_validate(*key, &err) != RETRYQ_OK)
        return cli_fail(&err);
    return CLI_CONTINUE;
}

/* "cause operator, by operator, 4m10s left, until 2026-11-29T01:00:00Z: reason" */
static void describe_pause(const retryq_flow_pause_t *p, char *buf, size_t cap)
{
    char left[32] = "unknown", until[40] = "unknown";
    if (p->left_ms >= 0)
        cli_format_age(p->left_ms, left, sizeof left);
    if (p->until_ms > 0)
        cli_format_utc(p->until_ms, until, sizeof until);
    snprintf(buf, cap, "cause %s, by %s, %s left, until %s%s%s", p->cause[0] != '\0' ? p->cause : "unknown",
             p->by[0] != '\0' ? p->by : "unknown", left, until, p->reason[0] != '\0' ? ": " : "", p->reason);
}

static int flow_pause(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"for", required_argument, NULL, 'f'},
        {"reason", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    const char *for_text = NULL, *reason = "", *key = NULL;
    int64_t duration_ms = 0;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(pause_usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c == 'f')
            for_text = optarg;
        else if (c == 'r')
            reason = optarg;
        else
            return CLI_EXIT_USAGE;
    }
    int rc = key_operand(cli, argc, argv, &key);
    if (rc == CLI_CONTINUE && for_text != NULL && !parse_duration(cli, for_text, &duration_ms))
        rc = CLI_EXIT_USAGE;
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    retryq_flow_pause_t in_place;
    retryq_error_t err = {0};
    bool applied = false;
    char text[RETRYQ_MAX_FLOW_REASON + 700];
    if (retryq_flow_pause(cli->client, key, duration_ms, reason, &applied, &in_place, &err) != RETRYQ_OK)
        return cli_fail(&err);
    describe_pause(&in_place, text, sizeof text);
    if (applied)
        printf("paused %s%s: %s\n", key, duration_ms == 0 ? " until resumed (at most 30 days)" : "", text);
    else
        printf("%s stays paused: a pause that ends later is in place (%s)\n", key, text);
    return CLI_EXIT_OK;
}

static int flow_resume(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    const char *key = NULL;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(resume_usage, stdout);
            return CLI_EXIT_OK;
        }
        return CLI_EXIT_USAGE;
    }
    int rc = key_operand(cli, argc, argv, &key);
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    retryq_flow_pause_t deleted;
    retryq_error_t err = {0};
    bool was_paused = false;
    char text[RETRYQ_MAX_FLOW_REASON + 700];
    if (retryq_flow_resume(cli->client, key, &was_paused, &deleted, &err) != RETRYQ_OK)
        return cli_fail(&err);
    if (!was_paused) {
        printf("%s was not paused: nothing to resume\n", key);
        return CLI_EXIT_OK;
    }
    describe_pause(&deleted, text, sizeof text);
    printf("resumed %s (its pause had %s)\n", key, text);
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------ dispatch */

int cli_cmd_flow(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    /* Without a command, cli_next_option stops at the first operand: the action. */
    const char *command = cli->command;
    bool json = false;
    int c;
    cli->command = NULL;
    while ((c = cli_next_option(cli, argc, argv, options)) == 'j')
        json = true;
    cli->command = command;
    if (c == 'h') {
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }
    if (c != -1)
        return CLI_EXIT_USAGE;
    const char *action = optind < argc ? argv[optind] : "list";
    int first = optind < argc ? optind : argc - 1; /* the action's argv[0] */
    if (strcmp(action, "list") == 0) {
        cli->command = "flow list";
        return flow_list(cli, argc - first, argv + first, json);
    }
    if (json)
        return cli_usage_error(cli, "--json goes with list only");
    if (strcmp(action, "pause") == 0) {
        cli->command = "flow pause";
        return flow_pause(cli, argc - first, argv + first);
    }
    if (strcmp(action, "resume") == 0) {
        cli->command = "flow resume";
        return flow_resume(cli, argc - first, argv + first);
    }
    return cli_usage_error(cli, "unknown action '%s' (list, pause or resume)", action);
}
