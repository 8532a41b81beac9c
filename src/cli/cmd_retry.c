/*
 * `retryq retry`: the runner's retry request done safely (retryq_submit) and a plain
 * account of what happened: queued, already completed, in flight, or committed in
 * PostgreSQL without reaching Redis.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "Usage: retryq retry --execution-id N --region R --question-index N\n\n"
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
    "  -h, --help           show this help\n";

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

int cli_cmd_retry(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        CLI_JOB_OPTIONS,
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_job_args_t args = {0};
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (!cli_job_option(&args, c, optarg))
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
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
