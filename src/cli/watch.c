/*
 * What the refreshing views of `retryq` share (`stats --watch`, `sets watch`): the loop
 * that refreshes every interval until the view is done or SIGINT/SIGTERM arrives, and
 * the clock and interval helpers of the loop (ages and UTC times are formatted in cli.c). The loop waits for the signals
 * with sigtimedwait (they are blocked meanwhile), so stopping needs no handler and no
 * global flag, and a signal that comes during a refresh is taken at the next wait.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int64_t cli_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_format_now(char *buf, size_t cap)
{
    cli_format_utc((int64_t)time(NULL) * 1000, buf, cap);
}

bool cli_parse_interval(const cli_t *cli, const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < CLI_WATCH_MIN_INTERVAL ||
        v > CLI_WATCH_MAX_INTERVAL) {
        cli_usage_error(cli, "--interval: expected seconds from %g to %g, got '%s'", CLI_WATCH_MIN_INTERVAL,
                        CLI_WATCH_MAX_INTERVAL, text);
        return false;
    }
    *out = v;
    return true;
}

/* Waits until `deadline_ms` (monotonic); the signal that arrived, or 0. A deadline
 * already past still takes a pending signal, so a refresh slower than the interval
 * cannot make the watch deaf to Ctrl-C. */
static int wait_for_signal(const sigset_t *signals, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - cli_monotonic_ms();
        if (left < 0)
            left = 0;
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
        int sig = sigtimedwait(signals, NULL, &ts);
        if (sig > 0)
            return sig;
        if (errno != EINTR)
            return 0; /* EAGAIN: the deadline */
    }
}

int cli_watch(double interval_s, int64_t count, cli_refresh_fn refresh, void *privdata, int *stopped_by)
{
    sigset_t signals, saved;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    *stopped_by = 0;
    if (sigprocmask(SIG_BLOCK, &signals, &saved) != 0) {
        cli_error("cannot block SIGINT: %s", strerror(errno));
        return CLI_EXIT_REFUSED;
    }
    int rc = CLI_EXIT_OK;
    for (int64_t shown = 0; count == 0 || shown < count; shown++) {
        int64_t started_ms = cli_monotonic_ms();
        bool done = false;
        rc = refresh(privdata, shown, &done);
        if (fflush(stdout) != 0 || ferror(stdout))
            break; /* main reports the write error */
        if (done || (count != 0 && shown + 1 >= count))
            break;
        *stopped_by = wait_for_signal(&signals, started_ms + (int64_t)(interval_s * 1000.0));
        if (*stopped_by != 0)
            break;
    }
    sigprocmask(SIG_SETMASK, &saved, NULL);
    return rc;
}
