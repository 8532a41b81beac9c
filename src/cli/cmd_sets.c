/*
 * `retryq sets`: the retry sets that `retryq retry --job/--since` made, and where each
 * stands (retryq_sets_list, retryq_set_show). `sets` lists them with their progress,
 * `sets show ID` breaks one down (failures by error code, members by model and region,
 * token usage, the executions still open), `sets watch ID` refreshes that view until the
 * set is done (exit 0) or Ctrl-C (exit 130; SIGTERM 143). Every figure comes from the
 * executions themselves, so it is right after any restart.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

#define WATCH_DEFAULT_INTERVAL 2.0
#define WATCH_OPEN_ROWS 10
#define NAME_WIDTH_MAX 24

static const char usage[] =
    "Usage: retryq sets [--limit N] [--json]\n"
    "       retryq sets show ID [--open N] [--json]\n"
    "       retryq sets watch ID [--interval SECONDS] [--json]\n"
    "       retryq sets cancel ID [--json]\n\n"
    "A retry set is what one 'retryq retry --job/--since' retried: its filter, who ran it\n"
    "and when, and its members (execution, attempt). Progress comes from the executions:\n"
    "open (still retrying at that attempt), completed, failed (failed, timeout or error),\n"
    "superseded (retried again since), cancelled. ETA: the open members at the last\n"
    "minute's rate of outcomes.\n\n"
    "  sets                 the newest sets (--limit N, default 50), newest first\n"
    "  sets show ID         one set: failures by error code, members by model and region,\n"
    "                       token usage of the completed outputs, the open executions\n"
    "                       (--open N of them, default 50)\n"
    "  sets watch ID        the show view every --interval seconds (default 2) until the set\n"
    "                       is done (exit 0) or Ctrl-C (exit 130)\n"
    "  sets cancel ID       cancel the open members: jobs no worker has taken never run and\n"
    "                       their executions go back to their status before the retry\n"
    "                       (the attempt does not count); taken ones finish normally\n\n"
    "Options:\n"
    "  --json               one JSON object (watch: one line per refresh)\n"
    "  -h, --help           show this help\n";

/* ------------------------------------------------------------ rendering */

static void format_eta(const retryq_set_progress_t *p, char *buf, size_t cap)
{
    if (p->eta_ms == 0)
        snprintf(buf, cap, "done");
    else if (p->eta_ms < 0)
        snprintf(buf, cap, "-");
    else
        cli_format_age(p->eta_ms, buf, cap);
}

static bool add_counts(cJSON *o, const retryq_set_progress_t *p)
{
    return cJSON_AddNumberToObject(o, "total", (double)p->total) && cJSON_AddNumberToObject(o, "open", (double)p->open) &&
           cJSON_AddNumberToObject(o, "completed", (double)p->completed) &&
           cJSON_AddNumberToObject(o, "failed", (double)p->failed) &&
           cJSON_AddNumberToObject(o, "superseded", (double)p->superseded) &&
           cJSON_AddNumberToObject(o, "cancelled", (double)p->cancelled) &&
           cJSON_AddNumberToObject(o, "other", (double)p->other);
}

/* {total, open, ..., percent, eta_seconds (null when unknown), finished_last_minute} */
static cJSON *progress_json(const retryq_set_progress_t *p)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL && add_counts(o, p) && cJSON_AddNumberToObject(o, "percent", p->percent) &&
              (p->eta_ms >= 0 ? cJSON_AddNumberToObject(o, "eta_seconds", (double)p->eta_ms / 1000.0) != NULL
                              : cJSON_AddNullToObject(o, "eta_seconds") != NULL) &&
              cJSON_AddNumberToObject(o, "finished_last_minute", (double)p->finished_last_minute);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The set's own fields, and its progress. */
static cJSON *set_json(const retryq_set_t *s)
{
    cJSON *o = cJSON_CreateObject(), *progress = progress_json(&s->progress);
    cJSON *filter = s->filter != NULL ? cJSON_Parse(s->filter) : NULL;
    bool ok = o != NULL && progress != NULL && cJSON_AddNumberToObject(o, "id", (double)s->id) &&
              (s->name != NULL ? cJSON_AddStringToObject(o, "name", s->name) != NULL
                               : cJSON_AddNullToObject(o, "name") != NULL) &&
              cJSON_AddItemToObject(o, "filter", filter != NULL ? filter : cJSON_CreateNull()) &&
              cJSON_AddStringToObject(o, "created_by", s->created_by != NULL ? s->created_by : "") &&
              cJSON_AddStringToObject(o, "created_at", s->created_at) &&
              cJSON_AddItemToObject(o, "progress", progress);
    if (!ok) {
        cJSON_Delete(o);
        cJSON_Delete(progress);
        return NULL;
    }
    return o;
}

static void print_list(const retryq_set_t *sets, size_t n)
{
    int width = 4;
    bool other = false;
    if (n == 0) {
        printf("no retry sets (retryq retry --job ... makes one)\n");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int len = sets[i].name != NULL ? (int)strlen(sets[i].name) : 1;
        width = len > width ? (len < NAME_WIDTH_MAX ? len : NAME_WIDTH_MAX) : width;
        other = other || sets[i].progress.other > 0;
    }
    printf("%6s  %-*s  %-24s  %-12s  %7s  %7s  %9s  %7s  %10s  %9s  %s%6s  %s\n", "ID", width, "NAME", "CREATED", "BY",
           "TOTAL", "OPEN", "COMPLETED", "FAILED", "SUPERSEDED", "CANCELLED", other ? "  OTHER" : "", "DONE", "ETA");
    for (size_t i = 0; i < n; i++) {
        const retryq_set_t *s = &sets[i];
        const retryq_set_progress_t *p = &s->progress;
        char eta[32], extra[32] = "";
        format_eta(p, eta, sizeof eta);
        if (other)
            snprintf(extra, sizeof extra, "  %5" PRId64, p->other);
        printf("%6" PRId64 "  %-*.*s  %-24s  %-12.12s  %7" PRId64 "  %7" PRId64 "  %9" PRId64 "  %7" PRId64 "  %10" PRId64
               "  %9" PRId64 "  %s%5.1f%%  %s\n",
               s->id, width, width, s->name != NULL ? s->name : "-", s->created_at,
               s->created_by != NULL ? s->created_by : "", p->total, p->open, p->completed, p->failed, p->superseded,
               p->cancelled, extra, p->percent, eta);
    }
}

static void print_counts_header(void)
{
    printf("%7s  %7s  %9s  %7s  %10s  %9s  %7s\n", "TOTAL", "OPEN", "COMPLETED", "FAILED", "SUPERSEDED", "CANCELLED",
           "OTHER");
}

static void print_counts(const retryq_set_progress_t *p)
{
    printf("%7" PRId64 "  %7" PRId64 "  %9" PRId64 "  %7" PRId64 "  %10" PRId64 "  %9" PRId64 "  %7" PRId64 "\n", p->total,
           p->open, p->completed, p->failed, p->superseded, p->cancelled, p->other);
}

static void print_detail(const retryq_set_detail_t *d)
{
    const retryq_set_t *s = &d->set;
    const retryq_set_progress_t *p = &s->progress;
    char eta[32];
    format_eta(p, eta, sizeof eta);
    printf("retry set %" PRId64 "%s%s\ncreated   %s by %s\nfilter    %s\n\n", s->id, s->name != NULL ? "  " : "",
           s->name != NULL ? s->name : "", s->created_at, s->created_by != NULL ? s->created_by : "",
           s->filter != NULL ? s->filter : "");
    print_counts_header();
    print_counts(p);
    printf("%.1f%% done, ETA %s (%" PRId64 " outcome(s) in the last minute)\n", p->percent, eta,
           p->finished_last_minute);
    if (d->with_usage > 0)
        printf("tokens: in %" PRId64 ", out %" PRId64 " (%" PRId64 " completed output(s) with usage)\n", d->tokens_in,
               d->tokens_out, d->with_usage);
    if (d->code_count > 0) {
        printf("\n%-32s  %7s\n", "FAILURES BY ERROR CODE", "FAILED");
        for (size_t i = 0; i < d->code_count; i++)
            printf("%-32s  %7" PRId64 "\n", d->codes[i].error_code[0] != '\0' ? d->codes[i].error_code : "(none)",
                   d->codes[i].failed);
    }
    if (d->slice_count > 0) {
        printf("\n%-20s  %-14s  ", "MODEL", "REGION");
        print_counts_header();
        for (size_t i = 0; i < d->slice_count; i++) {
            printf("%-20s  %-14s  ", d->slices[i].model_id, d->slices[i].region);
            print_counts(&d->slices[i].progress);
        }
    }
    if (d->open_count > 0) {
        printf("\nOPEN (%s%zu of %" PRId64 ")\n%-10s  %-14s  %-20s  %7s  %s\n",
               (int64_t)d->open_count < p->open ? "the first " : "", d->open_count, p->open, "EXECUTION", "REGION",
               "MODEL", "ATTEMPT", "RETRYING SINCE");
        for (size_t i = 0; i < d->open_count; i++)
            printf("%-10" PRId64 "  %-14s  %-20s  %7" PRId32 "  %s\n", d->open[i].execution_id, d->open[i].region,
                   d->open[i].model_id, d->open[i].attempt,
                   d->open[i].last_retry_at[0] != '\0' ? d->open[i].last_retry_at : "-");
    }
}

static cJSON *detail_json(const retryq_set_detail_t *d)
{
    cJSON *root = set_json(&d->set), *codes = NULL, *slices = NULL, *tokens = NULL, *open = NULL;
    bool ok = root != NULL && (codes = cJSON_AddArrayToObject(root, "failures_by_error_code")) != NULL &&
              (slices = cJSON_AddArrayToObject(root, "by_model_region")) != NULL &&
              (tokens = cJSON_AddObjectToObject(root, "tokens")) != NULL &&
              cJSON_AddNumberToObject(tokens, "in", (double)d->tokens_in) &&
              cJSON_AddNumberToObject(tokens, "out", (double)d->tokens_out) &&
              cJSON_AddNumberToObject(tokens, "outputs_with_usage", (double)d->with_usage) &&
              (open = cJSON_AddArrayToObject(root, "open")) != NULL;
    for (size_t i = 0; ok && i < d->code_count; i++) {
        cJSON *o = cJSON_CreateObject();
        ok = o != NULL && cJSON_AddItemToArray(codes, o) &&
             cJSON_AddStringToObject(o, "error_code", d->codes[i].error_code) &&
             cJSON_AddNumberToObject(o, "failed", (double)d->codes[i].failed);
    }
    for (size_t i = 0; ok && i < d->slice_count; i++) {
        cJSON *o = cJSON_CreateObject();
        ok = o != NULL && cJSON_AddItemToArray(slices, o) &&
             cJSON_AddStringToObject(o, "model_id", d->slices[i].model_id) &&
             cJSON_AddStringToObject(o, "region", d->slices[i].region) && add_counts(o, &d->slices[i].progress);
    }
    for (size_t i = 0; ok && i < d->open_count; i++) {
        cJSON *o = cJSON_CreateObject();
        ok = o != NULL && cJSON_AddItemToArray(open, o) &&
             cJSON_AddNumberToObject(o, "execution_id", (double)d->open[i].execution_id) &&
             cJSON_AddStringToObject(o, "region", d->open[i].region) &&
             cJSON_AddStringToObject(o, "model_id", d->open[i].model_id) &&
             cJSON_AddNumberToObject(o, "attempt", d->open[i].attempt) &&
             (d->open[i].last_retry_at[0] != '\0'
                  ? cJSON_AddStringToObject(o, "last_retry_at", d->open[i].last_retry_at) != NULL
                  : cJSON_AddNullToObject(o, "last_retry_at") != NULL);
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ------------------------------------------------------------ the actions */

static int list_sets(cli_t *cli, int64_t limit, bool json)
{
    retryq_set_t *sets = NULL;
    size_t n = 0;
    retryq_error_t err = {0};
    if (retryq_sets_list(cli->client, (size_t)limit, &sets, &n, &err) != RETRYQ_OK)
        return cli_fail(&err);
    int rc = CLI_EXIT_OK;
    if (json) {
        cJSON *root = cJSON_CreateArray();
        bool ok = root != NULL;
        for (size_t i = 0; ok && i < n; i++) {
            cJSON *s = set_json(&sets[i]);
            ok = s != NULL && cJSON_AddItemToArray(root, s);
        }
        rc = cli_print_json(root, ok);
    } else {
        print_list(sets, n);
    }
    retryq_sets_free(sets, n);
    return rc;
}

static int show_set(cli_t *cli, int64_t id, int64_t open, bool json)
{
    retryq_set_detail_t d;
    retryq_error_t err = {0};
    int rc = retryq_set_show(cli->client, id, (size_t)open, &d, &err) == RETRYQ_OK ? CLI_EXIT_OK : cli_fail(&err);
    if (rc == CLI_EXIT_OK && json) {
        cJSON *root = detail_json(&d);
        rc = cli_print_json(root, root != NULL);
    } else if (rc == CLI_EXIT_OK) {
        print_detail(&d);
    }
    retryq_set_detail_free(&d);
    return rc;
}

typedef struct set_watch {
    cli_t *cli;
    int64_t id;
    double interval_s;
    bool json, tty;
} set_watch_t;

/* One refresh of `sets watch`; done when no member is open. A failure after the first
 * refresh is shown and the watch goes on (the client reconnects next time). */
static int watch_step(void *privdata, int64_t shown, bool *done)
{
    set_watch_t *w = privdata;
    retryq_set_detail_t d;
    retryq_error_t err = {0};
    char at[40];
    int code = retryq_set_show(w->cli->client, w->id, WATCH_OPEN_ROWS, &d, &err);
    int rc = code == RETRYQ_OK ? CLI_EXIT_OK : cli_fail(&err);
    *done = code == RETRYQ_OK ? d.set.progress.open == 0 : shown == 0 || code == RETRYQ_ERR_NOT_FOUND;
    cli_format_now(at, sizeof at);
    if (w->json) {
        cJSON *root = code == RETRYQ_OK ? set_json(&d.set) : cJSON_CreateObject();
        bool ok = root != NULL && cJSON_AddStringToObject(root, "at", at) != NULL &&
                  (code == RETRYQ_OK || cJSON_AddStringToObject(root, "error", err.message) != NULL);
        int printed = cli_print_json(root, ok);
        rc = rc != CLI_EXIT_OK ? rc : printed;
    } else if (code == RETRYQ_OK || shown > 0) {
        if (w->tty)
            fputs("\033[H\033[2J", stdout); /* cursor home, clear the screen */
        else if (shown > 0)
            fputs("\n--------------------------------------------------------------------------------\n", stdout);
        printf("every %gs  %s  (Ctrl-C to stop)\n\n", w->interval_s, at);
        if (code == RETRYQ_OK)
            print_detail(&d);
        else
            printf("unavailable: %s\n(retrying every %gs)\n", err.message, w->interval_s);
    }
    retryq_set_detail_free(&d);
    return rc;
}

static int watch_set(cli_t *cli, int64_t id, double interval_s, bool json)
{
    set_watch_t w = {cli, id, interval_s, json, isatty(STDOUT_FILENO) == 1};
    int stopped_by = 0;
    int rc = cli_watch(interval_s, 0, watch_step, &w, &stopped_by);
    return stopped_by != 0 ? 128 + stopped_by : rc;
}

/* ------------------------------------------------------------ the command line */

int cli_cmd_sets(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"limit", required_argument, NULL, 'l'},
        {"open", required_argument, NULL, 'o'},
        {"interval", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    const char *limit_text = NULL, *open_text = NULL, *interval_text = NULL;
    int64_t limit = 0, open = 0, id = 0;
    double interval_s = WATCH_DEFAULT_INTERVAL;
    bool json = false;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        case 'j': json = true; break;
        case 'l': limit_text = optarg; break;
        case 'o': open_text = optarg; break;
        case 'i': interval_text = optarg; break;
        default: return CLI_EXIT_USAGE;
        }
    }
    const char *action = optind < argc ? argv[optind] : "list";
    bool show = strcmp(action, "show") == 0, watch = strcmp(action, "watch") == 0;
    bool cancel = strcmp(action, "cancel") == 0, one = show || watch || cancel;
    if (!one && (optind < argc && strcmp(action, "list") != 0))
        return cli_usage_error(cli, "unknown action '%s' (list, show ID, watch ID or cancel ID)",
                               action);
    if (one && optind + 1 >= argc)
        return cli_usage_error(cli, "%s needs a set ID", action);
    if (one && !cli_parse_int(cli, "ID", argv[optind + 1], 1, INT64_MAX, &id))
        return CLI_EXIT_USAGE;
    int first_extra = optind + (one ? 2 : (optind < argc ? 1 : 0));
    if (first_extra < argc)
        return cli_usage_error(cli, "unexpected argument '%s'", argv[first_extra]);
    if (limit_text != NULL && one)
        return cli_usage_error(cli, "--limit is for the list of sets");
    if (open_text != NULL && !show)
        return cli_usage_error(cli, "--open is for 'sets show'");
    if (interval_text != NULL && !watch)
        return cli_usage_error(cli, "--interval is for 'sets watch'");
    if ((limit_text != NULL && !cli_parse_int(cli, "--limit", limit_text, 1, 100000, &limit)) ||
        (open_text != NULL && !cli_parse_int(cli, "--open", open_text, 1, 100000, &open)) ||
        (interval_text != NULL && !cli_parse_interval(cli, interval_text, &interval_s)))
        return CLI_EXIT_USAGE;
    int rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (show)
        return show_set(cli, id, open, json);
    if (cancel)
        return cli_sets_cancel(cli, id, json);
    if (watch)
        return watch_set(cli, id, interval_s, json);
    return list_sets(cli, limit, json);
}
