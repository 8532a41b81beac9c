/*
 * What the `retryq` command's files share: the run state, exit codes, option parsing
 * and error reporting (cli.c), and one entry point per subcommand (cmd_*.c). main.c
 * holds the table of subcommands; a new one is a row there plus a cmd_<name>.c.
 */
#ifndef RETRYQ_CLI_H
#define RETRYQ_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "retryq/retryq.h"

/* Exit codes (documented in `retryq --help` and docs/cli.md). */
enum cli_exit {
    CLI_EXIT_OK = 0,          /* done; also "already completed" */
    CLI_EXIT_REFUSED = 1,     /* not found, not retryable, max retries, invalid value, schema */
    CLI_EXIT_USAGE = 2,       /* bad command line */
    CLI_EXIT_UNAVAILABLE = 3, /* Redis or PostgreSQL unreachable or refusing */
    CLI_EXIT_NOT_QUEUED = 4,  /* retry committed in PostgreSQL but not pushed to Redis */
    CLI_EXIT_IN_FLIGHT = 5,   /* retry not queued: the execution is already running */
};

/* Returned by cli_next_option after it reported a bad option. */
#define CLI_OPTION_ERROR (-2)
/* Returned by a parsing step that found nothing to stop for. */
#define CLI_CONTINUE (-1)

typedef struct cli {
    retryq_options_t options; /* from the global flags; NULL fields fall back to env */
    retryq_client_t *client;  /* opened by cli_open on first use */
    const char *command;      /* the running subcommand, for messages */
    bool parsing;             /* cli_next_option has started on the current argv */
} cli_t;

/* The global options, accepted before and after the subcommand. Their codes are
 * handled inside cli_next_option. */
#define CLI_GLOBAL_OPTIONS                                                                      \
    {"redis-url", required_argument, NULL, 'R'}, {"database-url", required_argument, NULL, 'D'}, \
        {"queue", required_argument, NULL, 'Q'}

/* The job flags shared by enqueue and retry (strings as given; NULL when absent). */
typedef struct cli_job_args {
    const char *execution_id, *region, *question_index, *attempt;
    int64_t execution_id_value, question_index_value, attempt_value;
} cli_job_args_t;

#define CLI_JOB_OPTIONS                                                                         \
    {"execution-id", required_argument, NULL, 'e'}, {"region", required_argument, NULL, 'r'},  \
        {"question-index", required_argument, NULL, 'q'}

/* getopt_long over argv (argv[0] is the command name) with `options`; applies global
 * options itself. Returns the next option's code, -1 at the end, or CLI_OPTION_ERROR
 * after printing an unknown or incomplete option. Afterwards `optind` indexes the
 * first operand. Before a subcommand is chosen (cli->command NULL) parsing stops at the
 * first operand, the subcommand's name; -h is the only short option. */
int cli_next_option(cli_t *cli, int argc, char **argv, const struct option *options);

/* Opens the client (once). Returns 0, or an exit code after printing why. */
int cli_open(cli_t *cli);

/* Prints "retryq: <message>" for a library failure; returns the exit code for it. */
int cli_fail(const retryq_error_t *err);
/* Prints "retryq: <command>: <sentence> (see ...)" and returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_t *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "retryq: <sentence>" to stderr (one line). */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The exit code of a library result code. */
int cli_exit_code(int code);

/* The options of `retryq retry` by filter (strings as given; NULL when absent). `region`
 * is the job flag's, shared with the single form. */
typedef struct cli_filter_args {
    const char *job, *model, *region, *status, *error_code, *since, *until, *limit, *name, *by,
        *chunk;
    bool dry_run, json;
} cli_filter_args_t;

/* `retryq retry --job ... | --since ...` (retry_filter.c): checks the options, runs
 * retryq_submit_filter with a progress line, prints the summary. Returns an exit code. */
int cli_retry_filter(cli_t *cli, const cli_filter_args_t *args);

/* Parses a whole decimal integer in lo..hi for `--name`; prints a usage error if not. */
bool cli_parse_int(const cli_t *cli, const char *name, const char *text, int64_t lo, int64_t hi,
                   int64_t *out);
/* Stores a job flag's value; false when `code` is not a job flag ('e', 'r', 'q', 'a'). */
bool cli_job_option(cli_job_args_t *args, int code, const char *value);
/* Checks that the job flags are all given (--attempt only when `with_attempt`) and
 * converts the numbers. Returns CLI_CONTINUE or CLI_EXIT_USAGE after printing why. */
int cli_job_args_check(const cli_t *cli, cli_job_args_t *args, bool with_attempt);
/* Returns CLI_CONTINUE, or a usage error when operands are left after the options. */
int cli_no_operands(const cli_t *cli, int argc, char **argv);

/* "4.2s", "12m05s", "3h04m", "2d03h"; "unknown" for a negative age. */
void cli_format_age(int64_t ms, char *buf, size_t cap);
/* A wall-clock time (ms since the epoch) as RFC 3339 UTC with seconds; "unknown" if bad. */
void cli_format_utc(int64_t epoch_ms, char *buf, size_t cap);
/* Copies s for a table cell: control characters become '?', and a cut (at `max` bytes,
 * never inside a UTF-8 sequence) ends in "...". */
void cli_cell(const char *s, size_t max, char *buf, size_t cap);

struct cJSON;
/* Prints `root` as one line of compact JSON and frees it (also when !ok, a failed build).
 * Returns CLI_EXIT_OK, or CLI_EXIT_REFUSED after reporting that memory ran out. */
int cli_print_json(struct cJSON *root, bool ok);

/* ---- watch.c: the refreshing views (stats --watch, sets watch) */
#define CLI_WATCH_MIN_INTERVAL 0.1
#define CLI_WATCH_MAX_INTERVAL 86400.0

int64_t cli_monotonic_ms(void);
/* Wall-clock time, RFC 3339 UTC with seconds. */
void cli_format_now(char *buf, size_t cap);
/* Parses --interval: seconds from CLI_WATCH_MIN_INTERVAL to CLI_WATCH_MAX_INTERVAL. */
bool cli_parse_interval(const cli_t *cli, const char *text, double *out);
/* One refresh of a view (`shown` refreshes came before); sets *done to end the watch.
 * Returns an exit code. */
typedef int (*cli_refresh_fn)(void *privdata, int64_t shown, bool *done);
/* Refreshes every `interval_s` seconds until a refresh says done, `count` refreshes
 * (0: no bound), or SIGINT/SIGTERM (*stopped_by: the signal, else 0). Returns the last
 * refresh's exit code. */
int cli_watch(double interval_s, int64_t count, cli_refresh_fn refresh, void *privdata, int *stopped_by);

int cli_cmd_enqueue(cli_t *cli, int argc, char **argv);
int cli_cmd_retry(cli_t *cli, int argc, char **argv);
int cli_cmd_stats(cli_t *cli, int argc, char **argv);
int cli_cmd_migrate(cli_t *cli, int argc, char **argv);
int cli_cmd_dead(cli_t *cli, int argc, char **argv);
int cli_cmd_sets(cli_t *cli, int argc, char **argv);
int cli_cmd_flow(cli_t *cli, int argc, char **argv);
int cli_cmd_pause(cli_t *cli, int argc, char **argv);
int cli_cmd_resume(cli_t *cli, int argc, char **argv);

/* The queue's pause as `pause`, `resume` and `stats` show it (cmd_pause.c): "by WHO,
 * since TIME (AGE): REASON", and its JSON members (reason, by, since, since_ms,
 * paused_seconds) added to `o` (false when memory ran out). */
void cli_pause_describe(const retryq_pause_state_t *p, char *buf, size_t cap);
bool cli_pause_add_json(struct cJSON *o, const retryq_pause_state_t *p);
int cli_cmd_cancel(cli_t *cli, int argc, char **argv);
/* `retryq sets cancel ID` (cmd_cancel.c), with the client open. Returns an exit code. */
int cli_sets_cancel(cli_t *cli, int64_t set_id, bool json);

/* Flow control as `flow list` and `stats` show it (cmd_flow.c): one row per flow key,
 * merged from the pauses, the published breakers and the keys in use. */
typedef struct cli_flow_row {
    char key[RETRYQ_MAX_FLOW_KEY + 1];
    bool paused;
    retryq_flow_pause_t pause;
    bool has_breaker;
    retryq_flow_breaker_t breaker;
    bool in_use;               /* the key is in {Q}:flow:keys */
    retryq_flow_permits_t permits;
} cli_flow_row_t;

typedef struct cli_flow {
    cli_flow_row_t *rows;      /* sorted by key; malloc'd, freed by cli_flow_free */
    size_t count;
} cli_flow_t;

/* Reads every page of retryq_flow_list into rows. RETRYQ_OK or the library's code with err. */
int cli_flow_read(cli_t *cli, cli_flow_t *flow, retryq_error_t *err);
void cli_flow_free(cli_flow_t *flow);
/* The `stats` section: the paused keys and the open or half-open breakers. */
void cli_flow_print_section(const cli_flow_t *flow);
/* The same as the "flow" object of `stats --json` ({"paused":[...],"breakers":[...]}), or
 * NULL when memory ran out. */
struct cJSON *cli_flow_section_json(const cli_flow_t *flow);

#endif
