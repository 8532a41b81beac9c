/*
 * `retryq cancel --execution-id N --region R` and `retryq sets cancel ID`: thin over
 * retryq_cancel and retryq_set_cancel. A retry no worker has taken never runs and its
 * execution is put back as it was before the retry; one a worker holds finishes
 * normally ("running"); one no longer open is "already finished". The summary gives the
 * three counts and the execution ids of each.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

static const char usage[] =
    "Usage: retryq cancel --execution-id N --region R [--json]\n"
    "       retryq sets cancel ID [--json]\n\n"
    "Cancels an open retry: its job is stopped in Redis before any worker takes it, and the\n"
    "execution goes back to what it was before the retry (status, retry_count - 1,\n"
    "last_retry_at), with a 'cancelled' history entry: the attempt that did not run does\n"
    "not count against max_retries. A job a worker has already taken finishes normally\n"
    "(running). 'sets cancel' does this for every open member of a retry set.\n\n"
    "Options:\n"
    "  -e, --execution-id N  the execution (with --region, as stored, e.g. us-east)\n"
    "  -r, --region R\n"
    "  --json                one JSON object\n"
    "  -h, --help            show this help\n\n"
    "Exit codes: 0 cancelled ('sets cancel': the set was gone through, whatever the\n"
    "counts), 1 not found, or (cancel) nothing open to cancel, 3 Redis or PostgreSQL\n"
    "unavailable, 5 (cancel) a worker holds the job: it finishes normally.\n";

static const char *const OUTCOME_NAMES[] = {"cancelled", "running", "finished"};

static cJSON *result_json(const retryq_cancel_result_t *r, int64_t set_id)
{
    cJSON *root = cJSON_CreateObject(), *ids = NULL, *items = NULL, *lists[3] = {NULL, NULL, NULL};
    bool ok = root != NULL &&
              (set_id <= 0 || cJSON_AddNumberToObject(root, "set_id", (double)set_id)) &&
              cJSON_AddNumberToObject(root, "cancelled", (double)r->cancelled) &&
              cJSON_AddNumberToObject(root, "running", (double)r->running) &&
              cJSON_AddNumberToObject(root, "finished", (double)r->finished) &&
              (ids = cJSON_AddObjectToObject(root, "ids")) != NULL &&
              (items = cJSON_AddArrayToObject(root, "items")) != NULL;
    for (int k = 0; ok && k < 3; k++)
        ok = (lists[k] = cJSON_AddArrayToObject(ids, OUTCOME_NAMES[k])) != NULL;
    for (size_t i = 0; ok && i < r->count; i++) {
        const retryq_cancel_item_t *it = &r->items[i];
        cJSON *o = cJSON_CreateObject();
        ok = o != NULL && cJSON_AddItemToArray(items, o) &&
             cJSON_AddNumberToObject(o, "execution_id", (double)it->execution_id) &&
             cJSON_AddStringToObject(o, "region", it->region) &&
             cJSON_AddNumberToObject(o, "attempt", it->attempt) &&
             cJSON_AddStringToObject(o, "outcome", OUTCOME_NAMES[it->outcome]) &&
             cJSON_AddStringToObject(o, "status", it->status) &&
             cJSON_AddItemToArray(lists[it->outcome], cJSON_CreateNumber((double)it->execution_id));
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static void print_ids(const retryq_cancel_result_t *r, retryq_cancel_outcome_t outcome, const char *label)
{
    bool any = false;
    for (size_t i = 0; i < r->count; i++) {
        if (r->items[i].outcome != outcome)
            continue;
        printf("%s%" PRId64, any ? " " : label, r->items[i].execution_id);
        any = true;
    }
    if (any)
        putchar('\n');
}

static int print_result(const retryq_cancel_result_t *r, int64_t set_id, bool json)
{
    if (json) {
        cJSON *root = result_json(r, set_id);
        return cli_print_json(root, root != NULL);
    }
    if (set_id > 0)
        printf("[RETRY] retry set %" PRId64 ": ", set_id);
    else
        printf("[RETRY] execution %" PRId64 " (%s) attempt %" PRId32 ": ", r->items[0].execution_id,
               r->items[0].region, r->items[0].attempt);
    printf("%" PRId64 " cancelled (restored, will not run), %" PRId64
           " running (finish normally), %" PRId64 " already finished\n",
           r->cancelled, r->running, r->finished);
    print_ids(r, RETRYQ_CANCEL_CANCELLED, "cancelled: ");
    print_ids(r, RETRYQ_CANCEL_RUNNING, "running: ");
    print_ids(r, RETRYQ_CANCEL_FINISHED, "finished: ");
    if (set_id <= 0 && r->count == 1 && r->items[0].outcome != RETRYQ_CANCEL_RUNNING)
        printf("status: %s\n", r->items[0].status);
    return CLI_EXIT_OK;
}

int cli_sets_cancel(cli_t *cli, int64_t set_id, bool json)
{
    retryq_cancel_result_t r;
    retryq_error_t err = {0};
    int code = retryq_set_cancel(cli->client, set_id, &r, &err);
    int rc = CLI_EXIT_OK;
    if (code == RETRYQ_OK || r.count > 0)
        rc = print_result(&r, set_id, json); /* a stop half-way still says what was done */
    if (code != RETRYQ_OK)
        rc = cli_fail(&err);
    retryq_cancel_result_free(&r);
    return rc;
}

int cli_cmd_cancel(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"execution-id", required_argument, NULL, 'e'},
        {"region", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    const char *id_text = NULL, *region = NULL;
    bool json = false;
    int64_t id = 0;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return CLI_EXIT_OK;
        case 'e': id_text = optarg; break;
        case 'r': region = optarg; break;
        case 'j': json = true; break;
        default: return CLI_EXIT_USAGE;
        }
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    if (id_text == NULL || region == NULL)
        return cli_usage_error(cli, "--execution-id and --region are required");
    if (!cli_parse_int(cli, "--execution-id", id_text, 1, INT64_MAX, &id))
        return CLI_EXIT_USAGE;
    if (region[0] == '\0' || strlen(region) > RETRYQ_MAX_REGION)
        return cli_usage_error(cli, "--region must be 1..%d bytes", RETRYQ_MAX_REGION);
    rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    retryq_cancel_result_t r;
    retryq_error_t err = {0};
    if (retryq_cancel(cli->client, id, region, &r, &err) != RETRYQ_OK) {
        rc = cli_fail(&err);
        retryq_cancel_result_free(&r);
        return rc;
    }
    rc = print_result(&r, 0, json);
    if (rc == CLI_EXIT_OK && r.running > 0)
        rc = CLI_EXIT_IN_FLIGHT;
    else if (rc == CLI_EXIT_OK && r.finished > 0) {
        if (!json)
            cli_error("execution %" PRId64 " has no open retry to cancel (status '%s')", id,
                      r.items[0].status);
        rc = CLI_EXIT_REFUSED;
    }
    retryq_cancel_result_free(&r);
    return rc;
}
