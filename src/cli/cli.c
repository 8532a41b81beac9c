/*
 * Helpers every subcommand of `retryq` uses: option parsing (getopt_long with the
 * global options accepted anywhere), the job flags shared by enqueue and retry, opening
 * the client, turning failures into one stderr line and an exit code, and the text of
 * table cells (ages, cut strings).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("retryq: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage_error(const cli_t *cli, const char *fmt, ...)
{
    char sentence[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sentence, sizeof sentence, fmt, ap);
    va_end(ap);
    if (cli->command != NULL)
        cli_error("%s: %s (see 'retryq %s --help')", cli->command, sentence, cli->command);
    else
        cli_error("%s (see 'retryq --help')", sentence);
    return CLI_EXIT_USAGE;
}

int cli_exit_code(int code)
{
    switch (code) {
    case RETRYQ_OK:
        return CLI_EXIT_OK;
    case RETRYQ_ERR_REDIS:
    case RETRYQ_ERR_DATABASE:
        return CLI_EXIT_UNAVAILABLE;
    default:
        return CLI_EXIT_REFUSED;
    }
}

int cli_fail(const retryq_error_t *err)
{
    cli_error("%s", err->message[0] != '\0' ? err->message : retryq_code_name(err->code));
    return cli_exit_code(err->code);
}

/* getopt said '?': an unknown option, or a value given to a flag that takes none. */
static void report_bad_option(const cli_t *cli, const char *arg)
{
    const char *equals = strchr(arg, '=');
    if (strncmp(arg, "--", 2) != 0)
        cli_usage_error(cli, "unknown option '-%c'", optopt);
    else if (optopt != 0 && equals != NULL)
        cli_usage_error(cli, "option '%.*s' takes no value", (int)(equals - arg), arg);
    else
        cli_usage_error(cli, "unknown option '%s'", arg);
}

int cli_next_option(cli_t *cli, int argc, char **argv, const struct option *options)
{
    if (!cli->parsing) {
        optind = 0; /* GNU getopt: start over on a new argv */
        opterr = 0;
        cli->parsing = true;
    }
    for (;;) {
        int c = getopt_long(argc, argv, cli->command == NULL ? "+:h" : ":h", options, NULL);
        switch (c) {
        case 'R':
            cli->options.redis_url = optarg;
            break;
        case 'D':
            cli->options.database_url = optarg;
            break;
        case 'Q':
            cli->options.queue = optarg;
            break;
        case '?':
            report_bad_option(cli, argv[optind - 1]);
            return CLI_OPTION_ERROR;
        case ':':
            cli_usage_error(cli, "option '%s' needs a value", argv[optind - 1]);
            return CLI_OPTION_ERROR;
        case -1:
            cli->parsing = false;
            return -1;
        default:
            return c;
        }
    }
}

int cli_no_operands(const cli_t *cli, int argc, char **argv)
{
    if (optind < argc)
        return cli_usage_error(cli, "unexpected argument '%s'", argv[optind]);
    return CLI_CONTINUE;
}

int cli_open(cli_t *cli)
{
    retryq_error_t err = {0};
    if (cli->client != NULL)
        return CLI_EXIT_OK;
    cli->client = retryq_client_new(&cli->options, &err);
    return cli->client != NULL ? CLI_EXIT_OK : cli_fail(&err);
}

bool cli_parse_int(const cli_t *cli, const char *name, const char *text, int64_t lo, int64_t hi,
                   int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
        cli_usage_error(cli, "%s: expected an integer from %" PRId64 " to %" PRId64 ", got '%s'", name,
                        lo, hi, text);
        return false;
    }
    *out = v;
    return true;
}

bool cli_job_option(cli_job_args_t *args, int code, const char *value)
{
    switch (code) {
    case 'e':
        args->execution_id = value;
        return true;
    case 'r':
        args->region = value;
        return true;
    case 'q':
        args->question_index = value;
        return true;
    case 'a':
        args->attempt = value;
        return true;
    default:
        return false;
    }
}

int cli_job_args_check(const cli_t *cli, cli_job_args_t *args, bool with_attempt)
{
    if (args->execution_id == NULL)
        return cli_usage_error(cli, "missing --execution-id");
    if (args->region == NULL)
        return cli_usage_error(cli, "missing --region");
    if (args->question_index == NULL)
        return cli_usage_error(cli, "missing --question-index");
    if (with_attempt && args->attempt == NULL)
        return cli_usage_error(cli, "missing --attempt");
    if (!cli_parse_int(cli, "--execution-id", args->execution_id, 1, INT64_MAX, &args->execution_id_value) ||
        !cli_parse_int(cli, "--question-index", args->question_index, 0, INT32_MAX,
                       &args->question_index_value) ||
        (with_attempt &&
         !cli_parse_int(cli, "--attempt", args->attempt, 1, RETRYQ_MAX_ATTEMPT, &args->attempt_value)))
        return CLI_EXIT_USAGE;
    return CLI_CONTINUE;
}

int cli_print_json(struct cJSON *root, bool ok)
{
    char *text = ok && root != NULL ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (text == NULL) {
        cli_error("out of memory");
        return CLI_EXIT_REFUSED;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return CLI_EXIT_OK;
}

void cli_format_age(int64_t ms, char *buf, size_t cap)
{
    if (ms < 0)
        snprintf(buf, cap, "unknown");
    else if (ms < 60000)
        snprintf(buf, cap, "%.1fs", (double)ms / 1000.0);
    else if (ms < 3600000)
        snprintf(buf, cap, "%" PRId64 "m%02" PRId64 "s", ms / 60000, ms / 1000 % 60);
    else if (ms < 86400000)
        snprintf(buf, cap, "%" PRId64 "h%02" PRId64 "m", ms / 3600000, ms / 60000 % 60);
    else
        snprintf(buf, cap, "%" PRId64 "d%02" PRId64 "h", ms / 86400000, ms / 3600000 % 24);
}

void cli_cell(const char *s, size_t max, char *buf, size_t cap)
{
    size_t n = 0, len = strlen(s);
    bool cut = len > max;
    size_t keep = cut ? max - 3 : len;
    while (cut && keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
        keep--;
    for (size_t i = 0; i < keep && n + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (cut && n + 4 <= cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
}

void cli_format_utc(int64_t epoch_ms, char *buf, size_t cap)
{
    struct tm tm;
    time_t secs = (time_t)(epoch_ms / 1000);
    if (gmtime_r(&secs, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "unknown");
}
