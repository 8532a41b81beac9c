/*
 * `retryq enqueue`: pushes one job (LPUSH) and prints the payload pushed. With --raw the
 * text is pushed exactly as given, to see what the worker does with a bad payload.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "Usage: retryq enqueue --execution-id N --region R --question-index N --attempt N\n"
    "       retryq enqueue --raw JSON\n\n"
    "Pushes one job onto the queue and prints the payload pushed. The job gets an id\n"
    "(<execution-id>:<attempt>) and an enqueued_at time. Nothing is changed in\n"
    "PostgreSQL: to retry an execution as the runner does, use 'retryq retry'.\n\n"
    "Options:\n"
    "  --execution-id N     the execution's id (> 0)\n"
    "  --region R           its region, exactly as stored (e.g. us-east)\n"
    "  --question-index N   the question's index in the job spec (>= 0)\n"
    "  --attempt N          the retry attempt (1..1000; the worker refuses an attempt\n"
    "                       above its max retries)\n"
    "  --raw JSON           push this text unchanged and unchecked instead (a warning\n"
    "                       says when it is not a valid job)\n"
    "  -h, --help           show this help\n";

static int push_raw(cli_t *cli, const char *raw)
{
    retryq_job_t job;
    retryq_error_t err = {0};
    if (retryq_job_decode(raw, strlen(raw), RETRYQ_MAX_ATTEMPT, &job, &err) != RETRYQ_OK)
        cli_error("warning: not a valid job (%s); the worker will dead-letter it", err.message);
    int rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (retryq_enqueue_raw(cli->client, raw, strlen(raw), &err) != RETRYQ_OK)
        return cli_fail(&err);
    printf("%s\n", raw);
    return CLI_EXIT_OK;
}

static int push_job(cli_t *cli, const cli_job_args_t *args)
{
    retryq_job_t job;
    retryq_error_t err = {0};
    char payload[1024];
    if (retryq_job_init(&job, args->execution_id_value, args->region, args->question_index_value,
                        (int32_t)args->attempt_value, &err) != RETRYQ_OK)
        return cli_fail(&err);
    int rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (retryq_enqueue(cli->client, &job, &err) != RETRYQ_OK)
        return cli_fail(&err);
    if (retryq_job_encode(&job, payload, sizeof payload) < 0)
        snprintf(payload, sizeof payload, "(job %s)", job.id);
    printf("%s\n", payload);
    return CLI_EXIT_OK;
}

int cli_cmd_enqueue(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        CLI_JOB_OPTIONS,
        {"attempt", required_argument, NULL, 'a'},
        {"raw", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_job_args_t args = {0};
    const char *raw = NULL;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c == 'j')
            raw = optarg;
        else if (!cli_job_option(&args, c, optarg))
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    if (raw != NULL && (args.execution_id || args.region || args.question_index || args.attempt))
        return cli_usage_error(cli, "--raw cannot be combined with the job options");
    if (raw != NULL)
        return push_raw(cli, raw);
    rc = cli_job_args_check(cli, &args, true);
    return rc != CLI_CONTINUE ? rc : push_job(cli, &args);
}
