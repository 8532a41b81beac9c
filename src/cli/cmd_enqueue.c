/*
 * `retryq enqueue`: pushes one job (LPUSH) and prints the payload pushed. With --raw the
 * text is pushed exactly as given, to see what the worker does with a bad payload. With
 * --from it reads one job a line and pushes them in bulk (retryq_enqueue_many), a chunk
 * of FROM_CHUNK lines at a time, so memory stays flat however long the file is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

#define FROM_CHUNK 10000       /* lines decoded before one retryq_enqueue_many */
#define FROM_REPORTED_MAX 100  /* invalid lines reported one by one; the rest are counted */

static const char usage[] =
    "Usage: retryq enqueue --execution-id N --region R --question-index N --attempt N\n"
    "       retryq enqueue --raw JSON\n"
    "       retryq enqueue --from FILE|- [--json]\n\n"
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
    "  --from FILE|-        push every job of FILE (- for standard input): one JSON job\n"
    "                       a line, as the runner pushes it; blank lines and lines\n"
    "                       starting with # are skipped; a job without id/enqueued_at\n"
    "                       gets them. Invalid lines are reported (line number and\n"
    "                       reason) and not pushed; the others are pushed in bulk, in\n"
    "                       order. Exit 0 when every job was queued, 1 when some line\n"
    "                       was invalid, 3 when Redis failed.\n"
    "  --json               with --from: print the summary as one JSON object\n"
    "                       {\"read\",\"queued\",\"invalid\",\"failed\"}\n"
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

typedef struct from_state {
    retryq_job_t *jobs;
    size_t *lines;          /* the line number of each job of the chunk */
    size_t n;
    size_t read, queued, invalid, failed;
    int first_failure;      /* the first Redis failure's code (RETRYQ_OK while none) */
    size_t first_line;      /* ... its line */
    char first_reason[512];
} from_state_t;

/* One line of the file: a job when it decodes, with id and enqueued_at filled in when
 * absent; else reported and counted as invalid. Blank and # lines are skipped. */
static void from_line(from_state_t *st, char *line, size_t len, size_t number)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    size_t skip = strspn(line, " \t");
    if (line[skip] == '\0' || line[skip] == '#')
        return;
    st->read++;
    retryq_job_t *job = &st->jobs[st->n];
    retryq_job_t fresh;
    retryq_error_t err = {0};
    if (retryq_job_decode(line, len, RETRYQ_MAX_ATTEMPT, job, &err) != RETRYQ_OK ||
        retryq_job_init(&fresh, job->execution_id, job->region, job->question_index,
                        job->retry_attempt, &err) != RETRYQ_OK) {
        if (st->invalid++ < FROM_REPORTED_MAX)
            cli_error("line %zu: %s", number, err.message);
        return;
    }
    if (job->id[0] == '\0')
        memcpy(job->id, fresh.id, sizeof job->id);
    if (job->enqueued_at[0] == '\0')
        memcpy(job->enqueued_at, fresh.enqueued_at, sizeof job->enqueued_at);
    st->lines[st->n++] = number;
}

/* Pushes the chunk's jobs; reports those Redis did not take. */
static void from_flush(cli_t *cli, from_state_t *st, int *codes)
{
    size_t queued = 0;
    retryq_error_t err = {0};
    if (st->n == 0)
        return;
    if (retryq_enqueue_many(cli->client, st->jobs, st->n, codes, &queued, &err) != RETRYQ_OK) {
        for (size_t i = 0; i < st->n; i++) {
            if (codes[i] == RETRYQ_OK)
                continue;
            if (st->failed++ == 0) {
                st->first_failure = codes[i];
                st->first_line = st->lines[i];
                /* the library's sentence after "...; the first (job K): " */
                const char *why = strstr(err.message, "): ");
                snprintf(st->first_reason, sizeof st->first_reason, "%s",
                         why != NULL ? why + 3 : err.message);
            }
        }
    }
    st->queued += queued;
    st->n = 0;
}

static int from_summary(const from_state_t *st, const char *path, bool json)
{
    if (st->invalid > FROM_REPORTED_MAX)
        cli_error("... and %zu more invalid line(s)", st->invalid - FROM_REPORTED_MAX);
    if (st->failed > 0)
        cli_error("%zu job(s) not queued, the first on line %zu: %s", st->failed, st->first_line,
                  st->first_reason);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        bool ok = o != NULL && cJSON_AddNumberToObject(o, "read", (double)st->read) &&
                  cJSON_AddNumberToObject(o, "queued", (double)st->queued) &&
                  cJSON_AddNumberToObject(o, "invalid", (double)st->invalid) &&
                  cJSON_AddNumberToObject(o, "failed", (double)st->failed);
        int rc = cli_print_json(o, ok);
        if (rc != CLI_EXIT_OK)
            return rc;
    } else {
        printf("queued %zu of %zu job(s) from %s", st->queued, st->read, path);
        if (st->invalid > 0)
            printf(", %zu invalid line(s)", st->invalid);
        if (st->failed > 0)
            printf(", %zu not queued", st->failed);
        printf("\n");
    }
    if (st->failed > 0)
        return cli_exit_code(st->first_failure);
    return st->invalid > 0 ? CLI_EXIT_REFUSED : CLI_EXIT_OK;
}

static int push_from(cli_t *cli, const char *path, bool json)
{
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (in == NULL) {
        cli_error("cannot open %s: %s", path, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    from_state_t st = {.jobs = malloc(FROM_CHUNK * sizeof *st.jobs),
                       .lines = malloc(FROM_CHUNK * sizeof *st.lines)};
    int *codes = malloc(FROM_CHUNK * sizeof *codes);
    char *line = NULL;
    size_t cap = 0, number = 0;
    ssize_t len;
    int rc = st.jobs != NULL && st.lines != NULL && codes != NULL ? cli_open(cli) : CLI_EXIT_REFUSED;
    if (st.jobs == NULL || st.lines == NULL || codes == NULL)
        cli_error("out of memory");
    while (rc == CLI_EXIT_OK && (len = getline(&line, &cap, in)) >= 0) {
        from_line(&st, line, (size_t)len, ++number);
        if (st.n == FROM_CHUNK)
            from_flush(cli, &st, codes);
    }
    if (rc == CLI_EXIT_OK && ferror(in)) {
        cli_error("cannot read %s: %s", path, strerror(errno));
        rc = CLI_EXIT_USAGE;
    }
    if (rc == CLI_EXIT_OK) {
        from_flush(cli, &st, codes);
        rc = from_summary(&st, path, json);
    }
    free(line);
    free(codes);
    free(st.jobs);
    free(st.lines);
    if (in != stdin)
        fclose(in);
    return rc;
}

int cli_cmd_enqueue(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        CLI_JOB_OPTIONS,
        {"attempt", required_argument, NULL, 'a'},
        {"raw", required_argument, NULL, 'j'},
        {"from", required_argument, NULL, 'f'},
        {"json", no_argument, NULL, 'J'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    cli_job_args_t args = {0};
    const char *raw = NULL, *from = NULL;
    bool json = false;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c == 'j')
            raw = optarg;
        else if (c == 'f')
            from = optarg;
        else if (c == 'J')
            json = true;
        else if (!cli_job_option(&args, c, optarg))
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    if (raw != NULL && (args.execution_id || args.region || args.question_index || args.attempt))
        return cli_usage_error(cli, "--raw cannot be combined with the job options");
    bool job_flags = args.execution_id || args.region || args.question_index || args.attempt;
    if (from != NULL && (raw != NULL || job_flags))
        return cli_usage_error(cli, "--from cannot be combined with --raw or the job options");
    if (json && from == NULL)
        return cli_usage_error(cli, "--json goes with --from");
    if (from != NULL)
        return push_from(cli, from, json);
    if (raw != NULL)
        return push_raw(cli, raw);
    rc = cli_job_args_check(cli, &args, true);
    return rc != CLI_CONTINUE ? rc : push_job(cli, &args);
}
