/*
 * `retryq migrate`: applies retryq's embedded migrations (retryq_migrate) up to the
 * latest or a target version, or shows the recorded version (--status).
 */
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"

static const char usage[] =
    "Usage: retryq migrate [--target N]\n"
    "       retryq migrate --status\n\n"
    "Applies retryq's own migrations to the database (--database-url), each in its own\n"
    "transaction, recorded in retryq_schema_migrations. Running it twice is safe.\n\n"
    "Options:\n"
    "  --target N   migrate up or down to version N (default: the latest)\n"
    "  --status     print the recorded version and whether it is dirty; change nothing\n"
    "  -h, --help   show this help\n";

static int print_version(cli_t *cli, const char *prefix)
{
    int64_t version = 0;
    bool dirty = false;
    retryq_error_t err = {0};
    if (retryq_migrate_version(cli->client, &version, &dirty, &err) != RETRYQ_OK)
        return cli_fail(&err);
    printf("%sversion %" PRId64 "%s\n", prefix, version,
           dirty ? " (dirty: a migration failed half-way; fix the schema, then run again)" : "");
    return CLI_EXIT_OK;
}

static int run_migrations(cli_t *cli, int64_t target)
{
    int applied = 0;
    char prefix[64];
    retryq_error_t err = {0};
    if (retryq_migrate(cli->client, target, &applied, &err) != RETRYQ_OK)
        return cli_fail(&err);
    snprintf(prefix, sizeof prefix, "applied %d migration%s; now at ", applied, applied == 1 ? "" : "s");
    return print_version(cli, prefix);
}

int cli_cmd_migrate(cli_t *cli, int argc, char **argv)
{
    static const struct option options[] = {
        {"target", required_argument, NULL, 't'},
        {"status", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    const char *target_text = NULL;
    bool status = false;
    int64_t target = -1;
    int c;
    while ((c = cli_next_option(cli, argc, argv, options)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_EXIT_OK;
        }
        if (c == 't')
            target_text = optarg;
        else if (c == 's')
            status = true;
        else
            return CLI_EXIT_USAGE;
    }
    int rc = cli_no_operands(cli, argc, argv);
    if (rc == CLI_CONTINUE && status && target_text != NULL)
        rc = cli_usage_error(cli, "--status cannot be combined with --target");
    if (rc == CLI_CONTINUE && target_text != NULL &&
        !cli_parse_int(cli, "--target", target_text, 0, INT64_MAX, &target))
        rc = CLI_EXIT_USAGE;
    if (rc == CLI_CONTINUE)
        rc = cli_open(cli);
    if (rc != CLI_EXIT_OK)
        return rc;
    return status ? print_version(cli, "") : run_migrations(cli, target);
}
