/*
 * `retryq retry`: the runner's retry request done safely (retryq_submit) and a plain
 * account of what happened: queued, already completed, in flight, or committed in
 * PostgreSQL without reaching Redis. With --job or --since instead of --execution-id it
 * retries every execution a filter selects (retry_filter.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "Usage: retryq retry --execution-id N --region R --question-index N\n"
    "       retryq retry --job JOBSPEC_ID [--model M] [--region R] [--status LIST]\n"
    "                    [--error-code CODE] [--since DURATION|TIME] [--until DURATION|TIME]\n"
    "                    [--limit N] [--name TEXT] [--by WHO] [--dry-run] [--json]\n"
    "       retryq retry --since DURATION|TIME [the same filter options]\n\n"
    "Retries a failed execution the way the runner's API does: in one transaction it\n"
    "locks the execution (by id and region), checks that its status is failed, timeout\n"
    "or error and that retries are left, counts the retry and sets the status to\n"
    "'retrying'; after the commit it pushes the job. Needs --database-url.\n\n"
    "Prints one of:\n"
    "  queued: ...             and the job pushed (exit 0)\n"
    "  already completed: ...  and the stored output_data (exit 0)\n"
    "  in flight: ...          nothing queued (exit 5)\n"
    "  a warning that the retry is committed but not queued, and the job (exit 4);\n"
    "  the worker's orphan sweep will enqueue it\n\n"
    "Options:\n"
    "  --execution-id N     the execution's id (> 0)\n"
    "  --region R           its region, exactly as stored (e.g. us-east)\n"
    "  --question-index N   the question's index in the job spec (>= 0)\n"
    "  -h, --help           show this help\n\n"
    "By filter (--job or --since, or both): retries every execution selected, with the\n"
    "same rules, in transactions of 500 rows that skip rows another retry holds, and\n"
    "records them as one retry set (see 'retryq sets'). Each filter narrows the selection:\n"
    "  --job JOBSPEC_ID     the job spec's id (jobs.jobspec_id)\n"
    "  --model M            executions.model_id\n"
    "  --region R           executions.region, exactly as stored\n"
    "  --status LIST        of failed,timeout,error (default: all three)\n"
    "  --error-code CODE    the failure's code in output_data (ROUTER_TIMEOUT, ...)\n"
    "  --since D|T          failed at or after T, or D ago (90s, 15m, 2h, 1d, 1h30m);\n"
    "                       failed at = completed_at (else created_at)\n"
    "  --until D|T          failed before T, or before D ago\n"
    "  --limit N            retry at most N (the lowest execution ids first)\n"
    "  --name TEXT          the retry set's name\n"
    "  --by WHO             who asks (default: the OS user)\n"
    "  --dry-run            count and show a sample; nothing is changed, no set is made\n"
    "  --json               print the summary as one JSON object\n"
    "  --chunk N            rows per transaction (1..5000, default 500)\n"
    "Exit 0 when every selected execution was retried or skipped for a reason shown,\n"
    "4 when some were committed but not queued (Redis), 1 for an unknown job.\n";

static void encode_job(const retryq_job_t *job, char *buf, size_t cap)
{
    if (retryq_job_encode(job, buf, cap) < 0)
        snprintf(buf, cap, "(job %s)", job->id);
}

static int report(const cli_job_args_t *args, int code, const retryq_submit_result_t *r,
                  const retryq_error_t *err)
{
    char job[1024];
    if (code == RETRYQ_ERR_REDIS && r->status == RETRYQ_SUBMIT_COMMITTED_NOT_QUEUED) {
        encode_job(&r->job, job, sizeof job);
        cli_error("warning: execution %" PRId64 " (%s) is now 'retrying' (attempt %" PRId32 " of %" PRId32
                  ") but its job was not queued: %s; the worker's orphan sweep will re-enqueue it",
                  args->execution_id_value, args->region, r->attempt, r->max_retries, err->message);
        printf("%s\n", job);
        return CLI_EXIT_NOT_QUEUED;
    }
    if (code != RETRYQ_OK)
        return cli_fail(err);
    switch (r->status) {
    case RETRYQ_SUBMIT_QUEUED:
        encode_job(&r->job, job, sizeof job);
        printf("queued: execution %" PRId64 " (%s) attempt %" PRId32 " of %" PRId32
               " job_id=%s model_id=%s question_id=%s\n%s\n",
               args->execution_id_value, args->region, r->attempt, r->max_retries, r->job_id,
               r->model_id, r->has_question_id ? r->question_id : "null", job);
        return CLI_EXIT_OK;
    case RETRYQ_SUBMIT_ALREADY_COMPLETED:
        printf("already completed: execution %" PRId64 " (%s)\n%s\n", args->execution_id_value, args->region,
               r->output_data != NULL ? r->output_data : "null");
        return CLI_EXIT_OK;
    case RETRYQ_SUBMIT_IN_FLIGHT:
        printf("in flight: execution %" PRId64 " (%s) has status '%s'; nothing was queued\n",
               args->execution_id_value, args->region, r->execution_status);
        return CLI_EXIT_IN_FLIGHT;
    default:
        cli_error("unexpected submit result %d", (int)r->status);
        return CLI_EXIT_REFUSED;
    }
}

enum retry_option {
    OPT_JOB = 256, OPT_MODEL, OPT_STATUS, OPT_ERROR_CODE, OPT_SINCE, OPT_UNTIL, OPT_LIMIT, OPT_NAME,
    OPT_BY, OPT_DRY_RUN, OPT_JSON, OPT_CHUNK,
};

/* Stores a filter option's value; false when `code` is not one. */
static bool filter_option(cli_filter_args_t *f, int code, const char *value)
{
    const char **slot = NULL;
    switch (code) {
    case OPT_JOB: slot = &f->job; break;
    case OPT_MODEL: slot = &f->model; break;
    case OPT_STATUS: slot = &f->status; break;
    case OPT_ERROR_CODE: slot = &f->error_code; break;
    case OPT_SINCE: slot = &f->since; break;
    case OPT_UNTIL: slot = &f->until; break;
    case OPT_LIMIT: slot = &f->limit; break;
    case OPT_NAME: slot = &f->name; break;
    case OPT_BY: slot = &f->by; break;
    case OPT_CHUNK: slot = &f->chunk; break;
    case OPT_DRY_RUN: f->dry_run = true; return true;
    case OPT_JSON: f->json = true; return true;
    default: return false;
    }
    *slot = value;
    return true;
}

static bool any_filter_option(const cli_filter_args_t *f)
{
    return f->job != NULL || f->model != NULL || f->status != NULL || f->error_code != NULL ||
           f->since != NULL || f->until != NULL || f->limit != NULL || f->name != NULL || f->by != NULL ||
           f->chunk != NULL || f->dry_run || f->json;
}

int cli_cmd_retry(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        CLI_JOB_OPTIONS,
        {"job", required_argument, NULL, OPT_JOB},
        {"model", required_argument, NULL, OPT_MODEL},
        {"status", required_argument, NULL, OPT_STATUS},
        {"error-code", required_argument, NULL, OPT_ERROR_CODE},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"name", required_argument, NULL, OPT_NAME},
        {"by", required_argument, NULL, OPT_BY},
        {"chunk", required_argument, NULL, OPT_CHUNK},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_job_args_t args = {0};
    cli_filter_args_t filter = {0};
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (!cli_job_option(&args, c, optarg) && !filter_option(&filter, c, optarg))
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE && any_filter_option(&filter)) {
        if (args.execution_id != NULL || args.question_index != NULL)
            return cli_usage_error(cli, "--execution-id and --question-index retry one execution; "
                                        "--job, --since and the other filters retry many: use one form");
        filter.region = args.region;
        return cli_retry_filter(cli, &filter);
    }
    if (rc == CLI_CONTINUE)
        rc = cli_job_args_check(cli, &args, false);
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK && rc != CLI_CONTINUE)
        return rc;
    retryq_submit_result_t result;
    retryq_error_t err = {0};
    memset(&result, 0, sizeof result);
    int code = retryq_submit(cli->client, args.execution_id_value, args.region,
                             args.question_index_value, &result, &err);
    rc = report(&args, code, &result, &err);
    retryq_submit_result_free(&result);
    return rc;
}
