/*
 * retryq-worker: reads the configuration, builds the worker and runs its loop.
 * Exit codes (sysexits.h, see worker.h and docs/operations.md): 0 stopped normally (also
 * after --help/--version), 78 configuration (a bad setting, a database the worker cannot
 * use, an unsafe Redis refused), 69 a resource unavailable at start (the HTTP address),
 * 70 internal failure.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "config.h"
#include "log.h"
#include "worker.h"

int main(int argc, char **argv)
{
    config_t cfg;
    char err[512] = "";
    /* Before config_load: it checks the router URL with libcurl's URL API. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "retryq-worker: libcurl failed to initialise\n");
        return WORKER_EXIT_SOFTWARE;
    }
    int rc = config_load(&cfg, argc, argv, stdout, stderr, err, sizeof err);
    if (rc == 1) {
        config_free(&cfg);
        curl_global_cleanup();
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "retryq-worker: %s\n", err);
        config_free(&cfg);
        curl_global_cleanup();
        return WORKER_EXIT_CONFIG;
    }
    log_setup((log_level_t)cfg.log_level, cfg.log_json, stderr);
    signal(SIGPIPE, SIG_IGN);
    worker_t w;
    rc = worker_init(&w, &cfg, err, sizeof err);
    if (rc != 0) {
        /* worker_init took ownership of cfg: worker_destroy frees it. */
        fprintf(stderr, "retryq-worker: %s\n", err);
        worker_destroy(&w);
        curl_global_cleanup();
        return rc;
    }
    rc = worker_run(&w);
    worker_destroy(&w);
    curl_global_cleanup();
    return rc;
}
