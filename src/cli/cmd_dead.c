/*
 * `retryq dead list|show|requeue|purge`: the dead list {Q}:dead, where the worker puts
 * the jobs it cannot run. `dead` takes an action, each with its own options and
 * --help, from the table `actions` below; the work is libretryq's (src/lib/dead.c).
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define LIST_DEFAULT_LIMIT 20
#define REASON_WIDTH_MAX 60 /* longer reasons are cut in the table (not in --json) */
#define JSON_SAFE_INTEGER INT64_C(9007199254740991)

static const char usage[] =
    "Usage: retryq dead ACTION [OPTIONS]\n\n"
    "The dead list holds the jobs the worker could not run (invalid payload, unknown\n"
    "execution, region mismatch, too many deliveries, ...), newest first, each with the\n"
    "reason, the time and the worker. Index 0 is the newest entry.\n\n"
    "Actions:\n"
    "  list [--limit N] [--json]   show the entries\n"
    "  show INDEX                  print one entry as JSON\n"
    "  requeue INDEX | --all       move entries back to the head of the queue\n"
    "  purge --yes                 delete every entry\n\n"
    "Options:\n"
    "  -h, --help   show this help ('retryq dead ACTION --help' for an action)\n";

static const char list_usage[] =
    "Usage: retryq dead list [--limit N] [--json]\n\n"
    "Shows the newest entries of the dead list: index (0 = newest), when and why the job\n"
    "was dead-lettered, its execution and retry attempt (when the job can be read) and the\n"
    "worker. An entry that is not in the worker's format is shown as it is stored.\n\n"
    "Options:\n"
    "  --limit N    show at most N entries (default 20; 0 = all)\n"
    "  --json       print one JSON array: [{index, at, reason, worker, job, valid,\n"
    "               execution_id, retry_attempt, delivery, raw}]; fields that cannot be\n"
    "               read are null, raw is set only for an entry not in the worker's format\n"
    "  -h, --help   show this help\n";

static const char show_usage[] =
    "Usage: retryq dead show INDEX\n\n"
    "Prints the entry at INDEX (0 = newest) as indented JSON, or as stored when it is not\n"
    "JSON.\n\n"
    "Options:\n"
    "  -h, --help   show this help\n";

static const char requeue_usage[] =
    "Usage: retryq dead requeue INDEX\n"
    "       retryq dead requeue --all\n\n"
    "Moves the entry at INDEX (0 = newest), or every entry, back to the head of the queue:\n"
    "the job runs next. Its delivery count starts again from 0. An entry whose job is not\n"
    "valid is refused (exit 1) and stays; --all skips such entries and says how many.\n"
    "Each move is atomic: the entry leaves the dead list exactly when its job enters the\n"
    "queue. Indexes shift when the worker adds entries: check with 'retryq dead list'.\n\n"
    "Options:\n"
    "  --all        move every entry holding a valid job (the oldest is moved first, so\n"
    "               the most recently dead job runs first)\n"
    "  -h, --help   show this help\n";

static const char purge_usage[] =
    "Usage: retryq dead purge --yes\n\n"
    "Deletes the dead list and prints how many entries it held. Refused without --yes.\n\n"
    "Options:\n"
    "  --yes        really delete\n"
    "  -h, --help   show this help\n";

/* Parses an action's options (only -h/--help and the global ones, plus `extra`).
 * Returns CLI_CONTINUE with *flag set when the extra flag was given, or an exit code to
 * return at once (CLI_EXIT_OK after --help). */
static int parse_action(cli_t *cli, int argc, char **argv, const char *help, const char *extra,
                        bool *flag)
{
    const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {extra, no_argument, NULL, 'x'}, /* the end of the table when extra is NULL */
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(help, stdout);
            return CLI_EXIT_OK;
        }
        if (c != 'x')
            return CLI_EXIT_USAGE;
        *flag = true;
    }
    return CLI_CONTINUE;
}

/* The single INDEX operand; CLI_CONTINUE or a usage error. */
static int index_operand(const cli_t *cli, int argc, char **argv, int64_t *index)
{
    if (optind >= argc)
        return cli_usage_error(cli, "missing INDEX");
    if (optind + 1 < argc)
        return cli_usage_error(cli, "unexpected argument '%s'", argv[optind + 1]);
    return cli_parse_int(cli, "INDEX", argv[optind], 0, INT64_MAX, index) ? CLI_CONTINUE : CLI_EXIT_USAGE;
}

/* ------------------------------------------------------------ list */

/* What the table and --json say about one entry's job. */
typedef struct entry_view {
    bool valid;
    retryq_job_t job;
} entry_view_t;

static void view_of(const retryq_dead_entry_t *e, entry_view_t *v)
{
    memset(v, 0, sizeof *v);
    v->valid = e->job != NULL &&
               retryq_job_decode(e->job, strlen(e->job), RETRYQ_MAX_ATTEMPT, &v->job, NULL) == RETRYQ_OK;
}

typedef struct row {
    char index[24], at[48], reason[REASON_WIDTH_MAX + 1], execution[48], worker[256];
} row_t;

static void row_of(int64_t index, const retryq_dead_entry_t *e, row_t *r)
{
    entry_view_t v;
    view_of(e, &v);
    snprintf(r->index, sizeof r->index, "%" PRId64, index);
    cli_cell(e->at != NULL ? e->at : "-", sizeof r->at - 1, r->at, sizeof r->at);
    if (e->job == NULL) {
        char text[REASON_WIDTH_MAX * 2];
        snprintf(text, sizeof text, "(not a dead-list entry) %s", e->raw);
        cli_cell(text, REASON_WIDTH_MAX, r->reason, sizeof r->reason);
    } else {
        cli_cell(e->reason != NULL ? e->reason : "-", REASON_WIDTH_MAX, r->reason, sizeof r->reason);
    }
    if (v.valid)
        snprintf(r->execution, sizeof r->execution, "%" PRId64 "/%" PRId32, v.job.execution_id,
                 v.job.retry_attempt);
    else
        snprintf(r->execution, sizeof r->execution, "-");
    cli_cell(e->worker != NULL ? e->worker : "-", sizeof r->worker - 1, r->worker, sizeof r->worker);
}

static int width(int current, const char *s)
{
    int n = (int)strlen(s);
    return n > current ? n : current;
}

static int print_table(const retryq_dead_entry_t *entries, size_t n, bool more)
{
    int w[4] = {5, 2, 6, 17}; /* INDEX, AT, REASON, EXECUTION/ATTEMPT */
    row_t *rows = n > 0 ? calloc(n, sizeof *rows) : NULL;
    if (n > 0 && rows == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_REFUSED;
    }
    for (size_t i = 0; i < n; i++) {
        row_of((int64_t)i, &entries[i], &rows[i]);
        w[0] = width(w[0], rows[i].index);
        w[1] = width(w[1], rows[i].at);
        w[2] = width(w[2], rows[i].reason);
        w[3] = width(w[3], rows[i].execution);
    }
    if (n == 0)
        printf("the dead list is empty\n");
    else
        printf("%*s  %-*s  %-*s  %-*s  %s\n", w[0], "INDEX", w[1], "AT", w[2], "REASON", w[3],
               "EXECUTION/ATTEMPT", "WORKER");
    for (size_t i = 0; i < n; i++)
        printf("%*s  %-*s  %-*s  %-*s  %s\n", w[0], rows[i].index, w[1], rows[i].at, w[2], rows[i].reason,
               w[3], rows[i].execution, rows[i].worker);
    if (more)
        printf("(more entries follow: use --limit N, or --limit 0 for all)\n");
    free(rows);
    return CLI_EXIT_OK;
}

static bool add_string_or_null(cJSON *o, const char *name, const char *value)
{
    return value != NULL ? cJSON_AddStringToObject(o, name, value) != NULL
                         : cJSON_AddNullToObject(o, name) != NULL;
}

/* An integer as a JSON number, or as a decimal string above 2^53-1 (the wire's rule). */
static bool add_integer(cJSON *o, const char *name, bool known, int64_t value)
{
    char text[24];
    if (!known)
        return cJSON_AddNullToObject(o, name) != NULL;
    if (value <= JSON_SAFE_INTEGER)
        return cJSON_AddNumberToObject(o, name, (double)value) != NULL;
    snprintf(text, sizeof text, "%" PRId64, value);
    return cJSON_AddStringToObject(o, name, text) != NULL;
}

static cJSON *entry_json(int64_t index, const retryq_dead_entry_t *e)
{
    entry_view_t v;
    cJSON *o = cJSON_CreateObject();
    view_of(e, &v);
    if (o == NULL || !add_integer(o, "index", true, index) || !add_string_or_null(o, "at", e->at) ||
        !add_string_or_null(o, "reason", e->reason) || !add_string_or_null(o, "worker", e->worker) ||
        !add_string_or_null(o, "job", e->job) || cJSON_AddBoolToObject(o, "valid", v.valid) == NULL ||
        !add_integer(o, "execution_id", v.valid, v.job.execution_id) ||
        !add_integer(o, "retry_attempt", v.valid, v.job.retry_attempt) ||
        !add_integer(o, "delivery", v.valid, v.job.delivery) ||
        !add_string_or_null(o, "raw", e->job == NULL ? e->raw : NULL)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int print_json(const retryq_dead_entry_t *entries, size_t n)
{
    cJSON *root = cJSON_CreateArray();
    bool ok = root != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        cJSON *o = entry_json((int64_t)i, &entries[i]);
        ok = o != NULL && cJSON_AddItemToArray(root, o);
    }
    return cli_print_json(root, ok);
}

static int dead_list(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"limit", required_argument, NULL, 'l'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    const char *limit_text = NULL;
    int64_t limit = LIST_DEFAULT_LIMIT;
    bool json = false;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(list_usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c == 'l')
            limit_text = optarg;
        else if (c == 'j')
            json = true;
        else
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE && limit_text != NULL &&
        !cli_parse_int(cli, "--limit", limit_text, 0, INT64_MAX - 1, &limit))
        rc = CLI_EXIT_USAGE;
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    retryq_dead_entry_t *entries = NULL;
    size_t n = 0;
    retryq_error_t err = {0};
    /* One entry more than shown tells whether more follow. */
    if (retryq_dead_list(cli->client, 0, limit == 0 ? -1 : limit + 1, &entries, &n, &err) != RETRYQ_OK)
        return cli_fail(&err);
    bool more = limit != 0 && n > (size_t)limit;
    size_t shown = more ? (size_t)limit : n;
    rc = json ? print_json(entries, shown) : print_table(entries, shown, more);
    retryq_dead_entries_free(entries, n);
    return rc;
}

/* ------------------------------------------------------------ show */

/* Prints cJSON_Print's output with two-space indents and "key": value. cJSON escapes
 * every tab inside a string, so each raw tab is layout. */
static void print_indented(const char *text)
{
    for (const char *p = text; *p != '\0'; p++) {
        if (*p != '\t')
            putchar(*p);
        else
            fputs(p > text && p[-1] == ':' ? " " : "  ", stdout);
    }
    putchar('\n');
}

static int dead_show(cli_t *cli, int argc, char **argv)
{
    bool unused = false;
    int64_t index = 0;
    int rc = parse_action(cli, argc, argv, show_usage, NULL, &unused);
    if (rc != CLI_CONTINUE)
        return rc;
    rc = index_operand(cli, argc, argv, &index);
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    retryq_dead_entry_t *entries = NULL;
    size_t n = 0;
    retryq_error_t err = {0};
    if (retryq_dead_list(cli->client, index, 1, &entries, &n, &err) != RETRYQ_OK)
        return cli_fail(&err);
    if (n == 0) {
        cli_error("the dead list has no entry %" PRId64, index);
        return CLI_EXIT_REFUSED;
    }
    cJSON *parsed = cJSON_Parse(entries[0].raw);
    char *pretty = parsed != NULL ? cJSON_Print(parsed) : NULL;
    if (pretty != NULL)
        print_indented(pretty);
    else
        printf("%s\n", entries[0].raw);
    cJSON_free(pretty);
    cJSON_Delete(parsed);
    retryq_dead_entries_free(entries, n);
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------ requeue */

static int dead_requeue(cli_t *cli, int argc, char **argv)
{
    bool all = false;
    int64_t index = -1, moved = 0, skipped = 0;
    int rc = parse_action(cli, argc, argv, requeue_usage, "all", &all);
    if (rc != CLI_CONTINUE)
        return rc;
    if (all)
        rc = optind < argc ? cli_usage_error(cli, "give INDEX or --all, not both") : CLI_CONTINUE;
    else
        rc = optind < argc ? index_operand(cli, argc, argv, &index)
                           : cli_usage_error(cli, "missing INDEX (or --all)");
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    retryq_error_t err = {0};
    const char *queue = retryq_client_keys(cli->client)->pending;
    if (retryq_dead_requeue(cli->client, index, &moved, &skipped, &err) != RETRYQ_OK) {
        if (moved > 0)
            printf("requeued %" PRId64 " entr%s to the head of %s before the failure\n", moved,
                   moved == 1 ? "y" : "ies", queue);
        return cli_fail(&err);
    }
    if (!all) {
        printf("requeued entry %" PRId64 " to the head of %s\n", index, queue);
        return CLI_EXIT_OK;
    }
    printf("requeued %" PRId64 " entr%s to the head of %s\n", moved, moved == 1 ? "y" : "ies", queue);
    if (skipped > 0)
        cli_error("skipped %" PRId64 " entr%s that hold%s no valid job; they stay in the dead list "
                  "(see 'retryq dead list')",
                  skipped, skipped == 1 ? "y" : "ies", skipped == 1 ? "s" : "");
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------ purge */

static int dead_purge(cli_t *cli, int argc, char **argv)
{
    bool yes = false;
    int64_t removed = 0;
    int rc = parse_action(cli, argc, argv, purge_usage, "yes", &yes);
    if (rc != CLI_CONTINUE)
        return rc;
    rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE && !yes)
        rc = cli_usage_error(cli, "refusing to delete the dead list without --yes");
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    retryq_error_t err = {0};
    if (retryq_dead_purge(cli->client, &removed, &err) != RETRYQ_OK)
        return cli_fail(&err);
    printf("purged %" PRId64 " entr%s from %s\n", removed, removed == 1 ? "y" : "ies",
           retryq_client_keys(cli->client)->dead);
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------ dispatch */

typedef struct dead_action {
    const char *name;
    const char *command; /* cli->command while it runs, for messages */
    int (*run)(cli_t *cli, int argc, char **argv);
} dead_action_t;

static const dead_action_t actions[] = {
    {"list", "dead list", dead_list},
    {"show", "dead show", dead_show},
    {"requeue", "dead requeue", dead_requeue},
    {"purge", "dead purge", dead_purge},
};

int cli_cmd_dead(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    /* Without a command, cli_next_option stops at the first operand: the action. */
    const char *command = cli->command;
    cli->command = NULL;
    int c = cli_next_option(cli, argc, argv, options);
    cli->command = command;
    if (c == 'h') {
        fputs(usage, stdout);
        return CLI_EXIT_OK;
    }
    if (c != -1)
        return CLI_EXIT_USAGE;
    if (optind >= argc)
        return cli_usage_error(cli, "missing action: list, show, requeue or purge");
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        if (strcmp(actions[i].name, argv[optind]) == 0) {
            cli->command = actions[i].command;
            return actions[i].run(cli, argc - optind, argv + optind);
        }
    }
    return cli_usage_error(cli, "unknown action '%s' (list, show, requeue or purge)", argv[optind]);
}
