/*
 * retryq-worker: reads the configuration, builds the worker and runs its loop.
 * Exit codes: 0 stopped normally (also after --help/--version), 1 runtime failure,
 * 2 bad configuration.
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
    int rc = config_load(&cfg, argc, argv, stdout, stderr, err, sizeof err);
    if (rc == 1) {
        config_free(&cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "retryq-worker: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    log_setup((log_level_t)cfg.log_level, cfg.log_json, stderr);
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "retryq-worker: libcurl failed to initialise\n");
        config_free(&cfg);
        return 1;
    }
    worker_t w;
    if (worker_init(&w, &cfg, err, sizeof err) < 0) {
        /* worker_init took ownership of cfg: worker_destroy frees it. */
        fprintf(stderr, "retryq-worker: %s\n", err);
        worker_destroy(&w);
        curl_global_cleanup();
        return 2;
    }
    rc = worker_run(&w);
    worker_destroy(&w);
    curl_global_cleanup();
    return rc;
}
