/*
 * `retryq stats`: queue depths, the oldest pending job's age, every registered worker and
 * the stopped flow-control keys (cmd_flow.c), as a table or as one JSON object (--json).
 * Fetching (retryq_stats, cli_flow_read) and rendering are separate: `--watch` repeats
 * them every --interval seconds (cli_watch, watch.c) and adds how fast each depth changes.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define WATCH_DEFAULT_INTERVAL 2.0
#define DEPTHS 4 /* pending, processing, delayed, dead */

static const char usage[] =
    "Usage: retryq stats [--json]\n"
    "       retryq stats --watch [--interval SECONDS] [--count N] [--json]\n\n"
    "Shows the queue: pending jobs, jobs taken by workers and not yet acknowledged\n"
    "(processing), jobs waiting for a backoff (delayed), dead-lettered jobs, the age of\n"
    "the oldest pending job (unknown for jobs without enqueued_at, e.g. those the runner\n"
    "pushes itself), and each registered worker with the age of its last heartbeat and\n"
    "its jobs in flight, then the flow-control keys that are stopped: paused (with the\n"
    "cause, reason and time left) or with an open circuit breaker (see 'retryq flow').\n"
    "A paused queue ('retryq pause') shows who paused it, since when and why.\n"
    "Ages use Redis's clock.\n\n"
    "Options:\n"
    "  --json       print one JSON object: pending, processing, delayed, dead,\n"
    "               oldest_pending_age_seconds (null when unknown), workers\n"
    "               [{id, heartbeat_age_seconds, inflight}] and flow {paused: [{key,\n"
    "               cause, reason, by, until_ms, left_seconds}], breakers: [{key, state,\n"
    "               until_ms, left_seconds, worker, failures, calls}]} (open and\n"
    "               half-open breakers), pause (null when the queue runs, else {reason,\n"
    "               by, since, since_ms, paused_seconds})\n"
    "  --watch      refresh the view until Ctrl-C (exit 0), with how fast each depth\n"
    "               changes (jobs per second since the previous refresh); the screen is\n"
    "               cleared when the output is a terminal, else refreshes are separated\n"
    "               by a line of dashes. With --json: one object per line per refresh,\n"
    "               with \"at\" and \"rates\" (null on the first) added\n"
    "  --interval SECONDS   time between refreshes (--watch; default 2, 0.1..86400)\n"
    "  --count N    stop after N refreshes (--watch)\n"
    "  -h, --help   show this help\n";

/* What --watch needs between refreshes. */
typedef struct watch {
    double interval_s;
    int64_t count;          /* refreshes to show; 0: until a signal */
    bool json;
    bool tty;               /* stdout is a terminal: clear the screen */
    bool have_previous;     /* previous_* hold the last successful refresh */
    int64_t previous[DEPTHS];
    int64_t previous_ms;    /* monotonic time of that refresh */
} watch_t;

typedef struct stats_watch {
    cli_t *cli;
    watch_t *w;
} stats_watch_t;

static const char *const depth_names[DEPTHS] = {"pending", "processing", "delayed", "dead"};

static void depths_of(const retryq_stats_t *st, int64_t out[DEPTHS])
{
    out[0] = st->pending;
    out[1] = st->processing;
    out[2] = st->delayed;
    out[3] = st->dead;
}

/* The depths, then (when `rates` is not NULL) each one's change per second, NAN for
 * "not known yet". */
static void print_depths(const retryq_stats_t *st, const double *rates)
{
    int64_t depth[DEPTHS];
    char age[32];
    depths_of(st, depth);
    cli_format_age(st->oldest_pending_age_ms, age, sizeof age);
    if (rates != NULL)
        printf("%-13s%10s  %10s\n", "", "JOBS", "CHANGE/S");
    for (int i = 0; i < DEPTHS; i++) {
        if (rates == NULL)
            printf("%-13s%" PRId64 "\n", depth_names[i], depth[i]);
        else if (isnan(rates[i]))
            printf("%-13s%10" PRId64 "  %10s\n", depth_names[i], depth[i], "-");
        else
            printf("%-13s%10" PRId64 "  %+10.1f\n", depth_names[i], depth[i], rates[i]);
    }
    printf(rates == NULL ? "%-13s%s\n" : "%-13s%10s\n", "oldest", age);
}

/* What one view shows: the queue's statistics and its flow-control keys. */
typedef struct snapshot {
    retryq_stats_t st;
    cli_flow_t flow;
} snapshot_t;

static int read_snapshot(cli_t *cli, snapshot_t *s, retryq_error_t *err)
{
    memset(s, 0, sizeof *s);
    int rc = retryq_stats(cli->client, &s->st, err);
    if (rc == RETRYQ_OK && (rc = cli_flow_read(cli, &s->flow, err)) != RETRYQ_OK)
        retryq_stats_free(&s->st);
    return rc;
}

static void snapshot_free(snapshot_t *s)
{
    retryq_stats_free(&s->st);
    cli_flow_free(&s->flow);
}

static void print_workers(const retryq_stats_t *st)
{
    char age[32];
    int width = 6;
    if (st->worker_count == 0) {
        printf("\nno workers registered\n");
        return;
    }
    for (size_t i = 0; i < st->worker_count; i++)
        if ((int)strlen(st->workers[i].id) > width)
            width = (int)strlen(st->workers[i].id);
    printf("\n%-*s  %13s  %9s\n", width, "WORKER", "HEARTBEAT AGE", "IN FLIGHT");
    for (size_t i = 0; i < st->worker_count; i++) {
        cli_format_age(st->workers[i].heartbeat_age_ms, age, sizeof age);
        printf("%-*s  %13s  %9" PRId64 "\n", width, st->workers[i].id, age, st->workers[i].inflight);
    }
}

/* "paused       yes, by WHO, since TIME (AGE): REASON", or "no". */
static void print_pause(const retryq_stats_t *st)
{
    char text[RETRYQ_MAX_PAUSE_REASON + RETRYQ_MAX_PAUSE_BY + 200];
    if (!st->pause.paused) {
        printf("%-13s%s\n", "paused", "no");
        return;
    }
    cli_pause_describe(&st->pause, text, sizeof text);
    printf("%-13syes, %s\n", "paused", text);
}

static void print_table(const snapshot_t *s, const double *rates)
{
    print_depths(&s->st, rates);
    print_pause(&s->st);
    print_workers(&s->st);
    cli_flow_print_section(&s->flow);
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

static cJSON *stats_json(const snapshot_t *s)
{
    const retryq_stats_t *st = &s->st;
    cJSON *root = cJSON_CreateObject(), *workers = NULL, *flow = NULL;
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
    ok = ok && (flow = cli_flow_section_json(&s->flow)) != NULL && cJSON_AddItemToObject(root, "flow", flow);
    if (ok && !st->pause.paused) {
        ok = cJSON_AddNullToObject(root, "pause") != NULL;
    } else if (ok) {
        cJSON *pause = cJSON_AddObjectToObject(root, "pause");
        ok = pause != NULL && cli_pause_add_json(pause, &st->pause);
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static int print_json(const snapshot_t *s)
{
    cJSON *root = stats_json(s);
    return cli_print_json(root, root != NULL);
}

static int show_stats(cli_t *cli, bool json)
{
    snapshot_t s;
    retryq_error_t err = {0};
    if (read_snapshot(cli, &s, &err) != RETRYQ_OK)
        return cli_fail(&err);
    int rc = CLI_EXIT_OK;
    if (json)
        rc = print_json(&s);
    else
        print_table(&s, NULL);
    snapshot_free(&s);
    return rc;
}

/* ------------------------------------------------------------ --watch */

/* Each depth's change per second since the previous refresh (NAN before there is one),
 * and remembers this refresh for the next. */
static void watch_rates(watch_t *w, const retryq_stats_t *st, int64_t now_ms, double rates[DEPTHS])
{
    int64_t depth[DEPTHS];
    depths_of(st, depth);
    for (int i = 0; i < DEPTHS; i++) {
        if (w->have_previous && now_ms > w->previous_ms)
            rates[i] = (double)(depth[i] - w->previous[i]) * 1000.0 / (double)(now_ms - w->previous_ms);
        else
            rates[i] = w->have_previous ? 0.0 : NAN;
        w->previous[i] = depth[i];
    }
    w->previous_ms = now_ms;
    w->have_previous = true;
}

static int watch_print_json(const snapshot_t *s, const char *at, const double rates[DEPTHS])
{
    cJSON *root = stats_json(s), *r = NULL;
    bool ok = root != NULL && cJSON_AddStringToObject(root, "at", at) != NULL;
    if (ok && isnan(rates[0]))
        ok = cJSON_AddNullToObject(root, "rates") != NULL;
    else if (ok)
        ok = (r = cJSON_AddObjectToObject(root, "rates")) != NULL;
    for (int i = 0; ok && r != NULL && i < DEPTHS; i++)
        ok = cJSON_AddNumberToObject(r, depth_names[i], rates[i]) != NULL;
    return cli_print_json(root, ok);
}

/* One refresh of the view. A failure after the first refresh is shown (and reported
 * on stderr) but does not stop the watch: the client reconnects on the next refresh. */
static int watch_refresh(cli_t *cli, watch_t *w, int64_t shown)
{
    snapshot_t s;
    retryq_error_t err = {0};
    double rates[DEPTHS];
    char at[40];
    int rc = read_snapshot(cli, &s, &err);
    if (rc != RETRYQ_OK && shown == 0)
        return cli_fail(&err); /* never reached Redis: nothing to watch */
    cli_format_now(at, sizeof at);
    if (w->tty && !w->json)
        fputs("\033[H\033[2J", stdout); /* cursor home, clear the screen */
    else if (!w->json && shown > 0)
        fputs("\n--------------------------------------------------------------------------------\n", stdout);
    if (!w->json)
        printf("queue %s  every %gs  %s  (Ctrl-C to stop)\n\n", retryq_client_keys(cli->client)->pending,
               w->interval_s, at);
    if (rc != RETRYQ_OK) {
        if (w->json) {
            cJSON *o = cJSON_CreateObject();
            char *text = NULL;
            if (o != NULL && cJSON_AddStringToObject(o, "at", at) != NULL &&
                cJSON_AddStringToObject(o, "error", err.message) != NULL)
                text = cJSON_PrintUnformatted(o);
            if (text != NULL)
                printf("%s\n", text);
            cJSON_free(text);
            cJSON_Delete(o);
        } else {
            printf("unavailable: %s\n(retrying every %gs)\n", err.message, w->interval_s);
        }
        return cli_fail(&err);
    }
    watch_rates(w, &s.st, cli_monotonic_ms(), rates);
    if (w->json)
        rc = watch_print_json(&s, at, rates);
    else
        print_table(&s, rates);
    snapshot_free(&s);
    return rc;
}

/* One refresh for cli_watch; a watch that never reached Redis ends at once. */
static int watch_step(void *privdata, int64_t shown, bool *done)
{
    stats_watch_t *sw = privdata;
    int rc = watch_refresh(sw->cli, sw->w, shown);
    *done = shown == 0 && rc != CLI_EXIT_OK; /* never reached Redis: nothing to watch */
    return rc;
}

static int watch_stats(cli_t *cli, watch_t *w)
{
    stats_watch_t sw = {cli, w};
    int stopped_by = 0;
    w->tty = isatty(STDOUT_FILENO) == 1;
    int rc = cli_watch(w->interval_s, w->count, watch_step, &sw, &stopped_by);
    return stopped_by != 0 ? CLI_EXIT_OK : rc;
}

int cli_cmd_stats(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    watch_t w = {.interval_s = WATCH_DEFAULT_INTERVAL};
    const char *interval_text = NULL, *count_text = NULL;
    bool watch = false;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c == 'j')
            w.json = true;
        else if (c == 'w')
            watch = true;
        else if (c == 'i')
            interval_text = optarg;
        else if (c == 'c')
            count_text = optarg;
        else
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE && !watch && (interval_text != NULL || count_text != NULL))
        rc = cli_usage_error(cli, "--interval and --count need --watch");
    if (rc == CLI_CONTINUE && interval_text != NULL && !cli_parse_interval(cli, interval_text, &w.interval_s))
        rc = CLI_EXIT_USAGE;
    if (rc == CLI_CONTINUE && count_text != NULL &&
        !cli_parse_int(cli, "--count", count_text, 1, INT64_MAX, &w.count))
        rc = CLI_EXIT_USAGE;
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    return watch ? watch_stats(cli, &w) : show_stats(cli, w.json);
}
