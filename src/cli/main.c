/*
 * `retryq`, the command-line tool of libretryq: global options, the table of
 * subcommands, --help and --version. Each subcommand lives in its own cmd_<name>.c;
 * adding one (e.g. `dead list|show|requeue|purge`) is one row in `commands` below.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(cli_t *cli, int argc, char **argv);
} cli_command_t;

static const cli_command_t commands[] = {
    {"enqueue", "push one job onto the queue", cli_cmd_enqueue},
    {"retry", "retry a failed execution as the runner's API does, or all a filter selects", cli_cmd_retry},
    {"stats", "show queue depths, the oldest job's age and the workers", cli_cmd_stats},
    {"migrate", "apply retryq's database migrations or show the schema version", cli_cmd_migrate},
    {"dead", "list, show, requeue or purge the dead-lettered jobs", cli_cmd_dead},
    {"sets", "list the retry sets of 'retry --job/--since', show, watch or cancel one", cli_cmd_sets},
    {"cancel", "cancel an execution's open retry (its job never runs, the row is restored)",
     cli_cmd_cancel},
    {"flow", "pause, resume or list flow-control keys (MODEL/REGION)", cli_cmd_flow},
    {"pause", "pause the queue: every worker stops taking jobs and starting router calls", cli_cmd_pause},
    {"resume", "resume a paused queue", cli_cmd_resume},
};

static void print_help(void)
{
    printf("Usage: retryq [OPTIONS] COMMAND [COMMAND OPTIONS]\n\n"
           "Durable retries for the benchmark runner: push jobs, submit retries, watch the queue.\n\n"
           "Commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        printf("  %-10s %s\n", commands[i].name, commands[i].summary);
    printf("\nOptions (also accepted after the command):\n"
           "  --redis-url URL      Redis (redis://[[user]:password@]host[:port][/db],\n"
           "                       unix://[[user]:password@]/path[?db=N],\n"
           "                       redis+sentinel://[[user]:password@]h1:p1[,h2:p2]/MASTER[/db] or\n"
           "                       redis+cluster://[[user]:password@]h1:p1[,h2:p2] (no db);\n"
           "                       sentinel password: env RETRYQ_REDIS_SENTINEL_PASSWORD[_FILE]);\n"
           "                       env RETRYQ_REDIS_URL, default redis://127.0.0.1:6379\n"
           "  --database-url URL   PostgreSQL conninfo or URI; env RETRYQ_DATABASE_URL\n"
           "  --queue NAME         queue name; env RETRYQ_QUEUE, default retry_queue\n"
           "  -h, --help           show this help\n"
           "  --version            show the version\n\n"
           "Run 'retryq COMMAND --help' for the options of a command.\n\n"
           "Exit codes:\n"
           "  0  done (retry: queued, or the execution had already completed)\n"
           "  1  refused: not found, not retryable, max retries reached, invalid value,\n"
           "     schema not migrated, nothing open to cancel\n"
           "  2  usage error: unknown option, missing or malformed value\n"
           "  3  Redis or PostgreSQL unavailable\n"
           "  4  retry committed in PostgreSQL but not queued in Redis (the worker's\n"
           "     orphan sweep re-enqueues it)\n"
           "  5  retry not queued: the execution is in flight (cancel: a worker holds\n"
           "     the job, it finishes normally)\n"
           "  130 'sets watch' stopped by Ctrl-C before the set was done (143: SIGTERM)\n");
}

static const cli_command_t *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Global options before the command. Returns CLI_CONTINUE or an exit code. */
static int parse_global(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    int c = cli_next_option(cli, argc, argv, options);
    if (c == 'h')
        print_help();
    else if (c == 'V')
        printf("retryq %s\n", retryq_version());
    else if (c == -1)
        return optind < argc ? CLI_CONTINUE : cli_usage_error(cli, "missing command");
    return c == 'h' || c == 'V' ? CLI_EXIT_OK : CLI_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    cli_t cli = {0};
    signal(SIGPIPE, SIG_IGN); /* a closed Redis socket must be an error, not a kill */
    int rc = parse_global(&cli, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    const cli_command_t *command = find_command(argv[optind]);
    if (command == NULL)
        return cli_usage_error(&cli, "unknown command '%s'", argv[optind]);
    cli.command = command->name;
    rc = command->run(&cli, argc - optind, argv + optind);
    retryq_client_free(cli.client);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("cannot write to standard output");
        rc = rc != CLI_EXIT_OK ? rc : CLI_EXIT_REFUSED;
    }
    return rc;
}
