/*
 * `retryq stats`: queue depths, the oldest pending job's age and every registered
 * worker, as a table or as one JSON object (--json). Fetching (retryq_stats) and
 * rendering are separate so that a later `--watch SECONDS` only has to repeat
 * show_stats() on a timer.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "Usage: retryq stats [--json]\n\n"
    "Shows the queue: pending jobs, jobs taken by workers and not yet acknowledged\n"
    "(processing), jobs waiting for a backoff (delayed), dead-lettered jobs, the age of\n"
    "the oldest pending job (unknown for jobs without enqueued_at, e.g. those the runner\n"
    "pushes itself), and each registered worker with the age of its last heartbeat and\n"
    "its jobs in flight. Ages use Redis's clock.\n\n"
    "Options:\n"
    "  --json       print one JSON object: pending, processing, delayed, dead,\n"
    "               oldest_pending_age_seconds (null when unknown) and workers\n"
    "               [{id, heartbeat_age_seconds, inflight}]\n"
    "  -h, --help   show this help\n";

/* "4.2s", "12m05s", "3h04m"; "unknown" for a negative age. */
static void format_age(int64_t ms, char *buf, size_t cap)
{
    if (ms < 0)
        snprintf(buf, cap, "unknown");
    else if (ms < 60000)
        snprintf(buf, cap, "%.1fs", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(buf, cap, "%" PRId64 "m%02" PRId64 "s", ms / 60000, ms / 1000 % 60);
    else
        snprintf(buf, cap, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, ms / 60000 % 60);
}

static void print_table(const retryq_stats_t *st)
{
    char age[32];
    int width = 6;
    format_age(st->oldest_pending_age_ms, age, sizeof age);
    printf("pending      %" PRId64 "\nprocessing   %" PRId64 "\ndelayed      %" PRId64
           "\ndead         %" PRId64 "\noldest       %s\n",
           st->pending, st->processing, st->delayed, st->dead, age);
    if (st->worker_count == 0) {
        printf("\nno workers registered\n");
        return;
    }
    for (size_t i = 0; i < st->worker_count; i++)
        if ((int)strlen(st->workers[i].id) > width)
            width = (int)strlen(st->workers[i].id);
    printf("\n%-*s  %13s  %9s\n", width, "WORKER", "HEARTBEAT AGE", "IN FLIGHT");
    for (size_t i = 0; i < st->worker_count; i++) {
        format_age(st->workers[i].heartbeat_age_ms, age, sizeof age);
        printf("%-*s  %13s  %9" PRId64 "\n", width, st->workers[i].id, age, st->workers[i].inflight);
    }
}

static cJSON *worker_json(const retryq_worker_info_t *w)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || !cJSON_AddStringToObject(o, "id", w->id) ||
        !cJSON_AddNumberToObject(o, "heartbeat_age_seconds", (double)w->heartbeat_age_ms / 1000.0) ||
        !cJSON_AddNumberToObject(o, "inflight", (double)w->inflight)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *stats_json(const retryq_stats_t *st)
{
    cJSON *root = cJSON_CreateObject(), *workers = NULL;
    double oldest = (double)st->oldest_pending_age_ms / 1000.0;
    bool ok = root != NULL && cJSON_AddNumberToObject(root, "pending", (double)st->pending) &&
              cJSON_AddNumberToObject(root, "processing", (double)st->processing) &&
              cJSON_AddNumberToObject(root, "delayed", (double)st->delayed) &&
              cJSON_AddNumberToObject(root, "dead", (double)st->dead) &&
              (st->oldest_pending_age_ms < 0 ? cJSON_AddNullToObject(root, "oldest_pending_age_seconds")
                                             : cJSON_AddNumberToObject(root, "oldest_pending_age_seconds", oldest)) &&
              (workers = cJSON_AddArrayToObject(root, "workers")) != NULL;
    for (size_t i = 0; ok && i < st->worker_count; i++) {
        cJSON *w = worker_json(&st->workers[i]);
        ok = w != NULL && cJSON_AddItemToArray(workers, w);
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static int print_json(const retryq_stats_t *st)
{
    cJSON *root = stats_json(st);
    char *text = root != NULL ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (text == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_REFUSED;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return CLI_EXIT_OK;
}

static int show_stats(cli_t *cli, bool json)
{
    retryq_stats_t st;
    retryq_error_t err = {0};
    if (retryq_stats(cli->client, &st, &err) != RETRYQ_OK)
        return cli_fail(&err);
    int rc = CLI_EXIT_OK;
    if (json)
        rc = print_json(&st);
    else
        print_table(&st);
    retryq_stats_free(&st);
    return rc;
}

int cli_cmd_stats(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c != 'j')
            return CLI_EXIT_USAGE;
        json = true;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    return rc != CLI_EXIT_OK ? rc : show_stats(cli, json);
}
