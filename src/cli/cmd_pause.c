/*
 * `retryq pause [--reason TEXT] [--by WHO]` and `retryq resume`: the whole queue, for
 * every worker (libretryq's retryq_pause and retryq_resume, src/lib/pause.c). The text of
 * a pause is shared with `retryq stats` (cli_pause_describe, cli_pause_json).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char pause_usage[] =
    "Usage: retryq pause [--reason TEXT] [--by WHO] [--json]\n\n"
    "Pauses the queue for every worker: within a second no worker starts a router call or\n"
    "takes a job from the queue, and a worker started meanwhile takes nothing. Calls already\n"
    "made finish and their outcomes are recorded; jobs a worker holds wait in its processing\n"
    "list. Delayed jobs are still promoted to the queue, heartbeats, lease recovery and the\n"
    "orphan sweep go on. The pause lasts until 'retryq resume'. Pausing a paused queue\n"
    "keeps the pause in place as it is (exit 0).\n\n"
    "Options:\n"
    "  --reason TEXT  why, shown by 'retryq stats', the workers' logs, status page and\n"
    "                 /readyz (at most 200 bytes)\n"
    "  --by WHO       who pauses (default: USER@HOST of this process)\n"
    "  --json         print one JSON object: {queue, paused, applied, reason, by, since,\n"
    "                 since_ms, paused_seconds}\n"
    "  -h, --help     show this help\n";

static const char resume_usage[] =
    "Usage: retryq resume [--json]\n\n"
    "Ends the queue's pause: the workers take jobs and start router calls again within a\n"
    "second, the jobs they held first. A queue that is not paused is left as it is (exit 0).\n\n"
    "Options:\n"
    "  --json       print one JSON object: {queue, was_paused, paused: false, and the pause\n"
    "               that ended: reason, by, since, since_ms, paused_seconds}\n"
    "  -h, --help   show this help\n";

void cli_pause_describe(const retryq_pause_state_t *p, char *buf, size_t cap)
{
    char since[40] = "unknown", age[32] = "unknown";
    if (p->since_ms > 0)
        cli_format_utc(p->since_ms, since, sizeof since);
    if (p->age_ms >= 0)
        cli_format_age(p->age_ms, age, sizeof age);
    snprintf(buf, cap, "by %s, since %s (%s)%s%s", p->by[0] != '\0' ? p->by : "unknown", since, age,
             p->reason[0] != '\0' ? ": " : "", p->reason);
}

bool cli_pause_add_json(cJSON *o, const retryq_pause_state_t *p)
{
    char since[40];
    cli_format_utc(p->since_ms, since, sizeof since);
    return cJSON_AddStringToObject(o, "reason", p->reason) != NULL &&
           cJSON_AddStringToObject(o, "by", p->by) != NULL &&
           (p->since_ms > 0 ? cJSON_AddStringToObject(o, "since", since) : cJSON_AddNullToObject(o, "since")) != NULL &&
           cJSON_AddNumberToObject(o, "since_ms", (double)p->since_ms) != NULL &&
           (p->age_ms >= 0 ? cJSON_AddNumberToObject(o, "paused_seconds", (double)p->age_ms / 1000.0)
                           : cJSON_AddNullToObject(o, "paused_seconds")) != NULL;
}

/* --json for both commands: {queue, <flag>: value, paused, the pause's fields}. */
static int print_json(cli_t *cli, const char *flag, bool value, bool paused, const retryq_pause_state_t *p)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL &&
              cJSON_AddStringToObject(o, "queue", retryq_client_keys(cli->client)->pending) != NULL &&
              cJSON_AddBoolToObject(o, "paused", paused) != NULL && cJSON_AddBoolToObject(o, flag, value) != NULL &&
              cli_pause_add_json(o, p);
    return cli_print_json(o, ok);
}

/* The options of both commands; CLI_CONTINUE, or an exit code (help, usage). */
static int parse(cli_t *cli, int argc, char **argv, const char *usage, bool with_reason, const char **reason,
                 const char **by, bool *json)
{
    static const struct option pause_options[] = {
        {"reason", required_argument, NULL, 'r'},
        {"by", required_argument, NULL, 'b'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    static const struct option resume_options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = cli_next_option(cli, argc, argv, with_reason ? pause_options : resume_options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c == 'r')
            *reason = optarg;
        else if (c == 'b')
            *by = optarg;
        else if (c == 'j')
            *json = true;
        else
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    return rc == CLI_EXIT_OK ? CLI_CONTINUE : rc;
}

int cli_cmd_pause(cli_t *cli, int argc, char **argv)
{
    const char *reason = "", *by = NULL;
    bool json = false, applied = false;
    int rc = parse(cli, argc, argv, pause_usage, true, &reason, &by, &json);
    if (rc != CLI_CONTINUE)
        return rc;
    retryq_pause_state_t p;
    retryq_error_t err = {0};
    char text[RETRYQ_MAX_PAUSE_REASON + RETRYQ_MAX_PAUSE_BY + 200];
    if (retryq_pause(cli->client, reason, by, &applied, &p, &err) != RETRYQ_OK)
        return cli_fail(&err);
    if (json)
        return print_json(cli, "applied", applied, true, &p);
    cli_pause_describe(&p, text, sizeof text);
    const char *queue = retryq_client_keys(cli->client)->pending;
    if (applied)
        printf("paused queue %s %s\n", queue, text);
    else
        printf("queue %s stays paused: it was paused already %s\n", queue, text);
    return CLI_EXIT_OK;
}

int cli_cmd_resume(cli_t *cli, int argc, char **argv)
{
    const char *reason = NULL, *by = NULL;
    bool json = false, was_paused = false;
    int rc = parse(cli, argc, argv, resume_usage, false, &reason, &by, &json);
    if (rc != CLI_CONTINUE)
        return rc;
    retryq_pause_state_t p;
    retryq_error_t err = {0};
    char text[RETRYQ_MAX_PAUSE_REASON + RETRYQ_MAX_PAUSE_BY + 200];
    if (retryq_resume(cli->client, &was_paused, &p, &err) != RETRYQ_OK)
        return cli_fail(&err);
    if (json)
        return print_json(cli, "was_paused", was_paused, false, &p);
    const char *queue = retryq_client_keys(cli->client)->pending;
    if (!was_paused) {
        printf("queue %s was not paused: nothing to resume\n", queue);
        return CLI_EXIT_OK;
    }
    cli_pause_describe(&p, text, sizeof text);
    printf("resumed queue %s (paused %s)\n", queue, text);
    return CLI_EXIT_OK;
}
