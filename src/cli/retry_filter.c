/*
 * `retryq retry --job ... | --since ...`: the retry by filter (retryq_submit_filter).
 * Turns the options into a filter, shows a progress line while the chunks run (one line
 * rewritten in place on a terminal, plain lines into a pipe or file, all on stderr), and
 * prints the summary: plain text, or one JSON object with --json.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

#define CHUNK_MAX 5000

typedef struct progress_line {
    bool tty;     /* stderr is a terminal: rewrite one line */
    bool written; /* a line is on the terminal (end it before the summary) */
} progress_line_t;

static int64_t skipped_total(const retryq_bulk_result_t *r)
{
    int64_t n = 0;
    for (int i = 0; i < RETRYQ_SKIP_COUNT; i++)
        n += r->skipped[i];
    return n;
}

static void on_progress(const retryq_bulk_result_t *r, void *privdata)
{
    progress_line_t *p = privdata;
    fprintf(stderr, "%sretryq: %s chunk %" PRId64 ": selected %" PRId64 ", %s %" PRId64 ", queued %" PRId64
            ", skipped %" PRId64 "%s",
            p->tty ? "\r" : "", r->dry_run ? "dry run," : "retry by filter,", r->chunks, r->selected,
            r->dry_run ? "would retry" : "retried", r->retried, r->queued, skipped_total(r),
            p->tty ? "\033[K" : "\n");
    fflush(stderr);
    p->written = p->tty;
}

/* "failed,timeout" -> RETRYQ_STATUS_* bits; false after a usage error. */
static bool parse_statuses(const cli_t *cli, const char *text, unsigned *out)
{
    static const struct { const char *name; unsigned bit; } known[] = {
        {"failed", RETRYQ_STATUS_FAILED}, {"timeout", RETRYQ_STATUS_TIMEOUT}, {"error", RETRYQ_STATUS_ERROR}};
    char copy[128];
    *out = 0;
    if (strlen(text) >= sizeof copy) {
        cli_usage_error(cli, "--status: expected a list of failed, timeout, error");
        return false;
    }
    strcpy(copy, text);
    char *save = NULL;
    for (char *name = strtok_r(copy, ",", &save); name != NULL; name = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < sizeof known / sizeof *known && strcmp(name, known[i].name) != 0)
            i++;
        if (i == sizeof known / sizeof *known) {
            cli_usage_error(cli, "--status: '%s' is not retryable (use failed, timeout, error)", name);
            return false;
        }
        *out |= known[i].bit;
    }
    if (*out == 0)
        cli_usage_error(cli, "--status: expected a list of failed, timeout, error");
    return *out != 0;
}

static bool parse_time(const cli_t *cli, const char *flag, const char *text, int64_t now_ms, int64_t *out)
{
    retryq_error_t err = {0};
    if (text == NULL)
        return true;
    if (retryq_parse_time(text, now_ms, out, &err) == RETRYQ_OK)
        return true;
    cli_usage_error(cli, "%s: %s", flag, err.message);
    return false;
}

/* The filter and the options from the command line; CLI_CONTINUE or a usage error. */
static int build(const cli_t *cli, const cli_filter_args_t *a, retryq_filter_t *f, retryq_bulk_options_t *o)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, limit = 0, chunk = 0;
    *f = (retryq_filter_t){.job = a->job, .model = a->model, .region = a->region, .error_code = a->error_code};
    *o = (retryq_bulk_options_t){.set_name = a->name, .created_by = a->by, .dry_run = a->dry_run};
    if (a->job == NULL && a->since == NULL)
        return cli_usage_error(cli, "a retry by filter needs --job or --since (or both)");
    if ((a->status != NULL && !parse_statuses(cli, a->status, &f->statuses)) ||
        !parse_time(cli, "--since", a->since, now_ms, &f->since_ms) ||
        !parse_time(cli, "--until", a->until, now_ms, &f->until_ms) ||
        (a->limit != NULL && !cli_parse_int(cli, "--limit", a->limit, 1, INT64_MAX, &limit)) ||
        (a->chunk != NULL && !cli_parse_int(cli, "--chunk", a->chunk, 1, CHUNK_MAX, &chunk)))
        return CLI_EXIT_USAGE;
    o->limit = limit;
    o->chunk = (size_t)chunk;
    return CLI_CONTINUE;
}

/* ------------------------------------------------------------ the summary */

static void print_skipped(const retryq_bulk_result_t *r)
{
    const char *sep = ": ";
    printf("skipped %" PRId64, skipped_total(r));
    for (int i = 0; i < RETRYQ_SKIP_COUNT; i++)
        if (r->skipped[i] > 0) {
            printf("%s%s %" PRId64, sep, retryq_skip_reason_name(i), r->skipped[i]);
            sep = ", ";
        }
    putchar('\n');
}

static void print_sample(const retryq_bulk_result_t *r)
{
    if (r->sample_count == 0)
        return;
    printf("\n%-10s  %-14s  %-16s  %-8s  %-7s  %-18s  %-23s  %s\n", "EXECUTION", "REGION", "MODEL", "STATUS",
           "RETRIES", "ERROR CODE", "FAILED AT", "VERDICT");
    for (size_t i = 0; i < r->sample_count; i++) {
        const retryq_bulk_row_t *s = &r->sample[i];
        char retries[32];
        snprintf(retries, sizeof retries, "%" PRId32 "/%" PRId32, s->retry_count, s->max_retries);
        printf("%-10" PRId64 "  %-14s  %-16s  %-8s  %-7s  %-18s  %-23s  %s\n", s->execution_id, s->region,
               s->model_id, s->status, retries, s->error_code[0] != '\0' ? s->error_code : "-",
               s->failed_at, s->verdict);
    }
    if ((int64_t)r->sample_count < r->selected)
        printf("(the first %zu of %" PRId64 ")\n", r->sample_count, r->selected);
}

static void print_text(const retryq_bulk_result_t *r)
{
    if (r->dry_run) {
        printf("dry run: %" PRId64 " execution(s) selected, %" PRId64 " would be retried; nothing was changed\n",
               r->selected, r->retried);
        print_skipped(r);
        print_sample(r);
        return;
    }
    if (r->set_id != 0)
        printf("retry set %" PRId64 ": ", r->set_id);
    printf("retried %" PRId64 " of %" PRId64 " selected execution(s), %" PRId64 " queued", r->retried, r->selected,
           r->queued);
    if (r->not_queued > 0)
        printf(", %" PRId64 " committed but not queued", r->not_queued);
    putchar('\n');
    print_skipped(r);
    if (r->set_id != 0)
        printf("progress: retryq sets show %" PRId64 "\n", r->set_id);
}

static bool add_text_or_null(cJSON *o, const char *key, const char *value)
{
    return value[0] != '\0' ? cJSON_AddStringToObject(o, key, value) != NULL
                            : cJSON_AddNullToObject(o, key) != NULL;
}

static cJSON *sample_json(const retryq_bulk_row_t *s)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL && cJSON_AddNumberToObject(o, "execution_id", (double)s->execution_id) &&
              cJSON_AddStringToObject(o, "region", s->region) && cJSON_AddStringToObject(o, "model_id", s->model_id) &&
              cJSON_AddStringToObject(o, "status", s->status) &&
              cJSON_AddNumberToObject(o, "retry_count", s->retry_count) &&
              cJSON_AddNumberToObject(o, "max_retries", s->max_retries) &&
              add_text_or_null(o, "error_code", s->error_code) && add_text_or_null(o, "question_id", s->question_id) &&
              (s->question_index >= 0 ? cJSON_AddNumberToObject(o, "question_index", (double)s->question_index) != NULL
                                      : cJSON_AddNullToObject(o, "question_index") != NULL) &&
              add_text_or_null(o, "failed_at", s->failed_at) && cJSON_AddStringToObject(o, "verdict", s->verdict) &&
              (s->attempt > 0 ? cJSON_AddNumberToObject(o, "attempt", s->attempt) != NULL
                              : cJSON_AddNullToObject(o, "attempt") != NULL);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int print_json(const retryq_bulk_result_t *r, const retryq_error_t *err)
{
    cJSON *root = cJSON_CreateObject(), *skipped = NULL, *sample = NULL;
    bool ok = root != NULL && cJSON_AddBoolToObject(root, "dry_run", r->dry_run) &&
              (r->set_id != 0 ? cJSON_AddNumberToObject(root, "set_id", (double)r->set_id) != NULL
                              : cJSON_AddNullToObject(root, "set_id") != NULL) &&
              cJSON_AddNumberToObject(root, "selected", (double)r->selected) &&
              cJSON_AddNumberToObject(root, "retried", (double)r->retried) &&
              cJSON_AddNumberToObject(root, "queued", (double)r->queued) &&
              cJSON_AddNumberToObject(root, "not_queued", (double)r->not_queued) &&
              (skipped = cJSON_AddObjectToObject(root, "skipped")) != NULL &&
              cJSON_AddNumberToObject(root, "chunks", (double)r->chunks) &&
              (sample = cJSON_AddArrayToObject(root, "sample")) != NULL;
    for (int i = 0; ok && i < RETRYQ_SKIP_COUNT; i++)
        ok = cJSON_AddNumberToObject(skipped, retryq_skip_reason_name(i), (double)r->skipped[i]) != NULL;
    for (size_t i = 0; ok && i < r->sample_count; i++) {
        cJSON *row = sample_json(&r->sample[i]);
        ok = row != NULL && cJSON_AddItemToArray(sample, row);
    }
    if (ok && err != NULL)
        ok = cJSON_AddStringToObject(root, "error", err->message) != NULL;
    return cli_print_json(root, ok);
}

int cli_retry_filter(cli_t *cli, const cli_filter_args_t *args)
{
    retryq_filter_t filter;
    retryq_bulk_options_t opts;
    retryq_bulk_result_t result;
    retryq_error_t err = {0};
    progress_line_t line = {.tty = isatty(STDERR_FILENO) == 1};
    int rc = build(cli, args, &filter, &opts);
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK && rc != CLI_CONTINUE)
        return rc;
    opts.progress = on_progress;
    opts.progress_data = &line;
    int code = retryq_submit_filter(cli->client, &filter, &opts, &result, &err);
    if (line.written)
        fputc('\n', stderr);
    if (code != RETRYQ_OK)
        cli_fail(&err);
    if (args->json)
        rc = print_json(&result, code != RETRYQ_OK ? &err : NULL);
    else if (code == RETRYQ_OK || result.chunks > 1 || result.retried > 0)
        print_text(&result);
    bool not_queued = code == RETRYQ_ERR_REDIS && result.not_queued > 0;
    retryq_bulk_result_free(&result);
    if (not_queued)
        return CLI_EXIT_NOT_QUEUED;
    return code != RETRYQ_OK ? cli_exit_code(code) : rc;
}
