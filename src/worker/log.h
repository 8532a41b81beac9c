/*
 * Logging for the worker: one line per event, logfmt by default or JSON by option,
 * always with time, level, worker id and (when known) execution id and attempt.
 * Messages about a retry keep the runner's "[RETRY]" marker so existing searches match.
 */
#ifndef RETRYQ_WORKER_LOG_H
#define RETRYQ_WORKER_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR } log_level_t;

/* Parses "debug|info|warn|error" (case-insensitive); -1 when unknown. */
int log_level_parse(const char *text);
const char *log_level_name(log_level_t level);

/* Process-wide logger settings (set once in main before the loop runs). */
void log_setup(log_level_t level, bool json, FILE *out);
void log_set_worker(const char *worker_id);
bool log_enabled(log_level_t level);

/*
 * Writes one line:
 *   ts=2026-11-29T00:00:00.000Z level=info worker=h:1:ab event=job.done execution_id=42 attempt=1 msg="[RETRY] ..."
 * `event` is a short dotted token; execution_id <= 0 and attempt <= 0 are omitted;
 * msg is printf-formatted and quoted/escaped as needed (logfmt) or as a JSON string.
 */
void log_event(log_level_t level, int64_t execution_id, int32_t attempt, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The same with more fields before msg: `pairs` is key, value, key, value, ..., NULL (keys
 * are bare words; values any text), e.g. {"key", "llama3.2-1b/eu-west", "cause",
 * "retry_after", NULL}. */
void log_fields(log_level_t level, int64_t execution_id, int32_t attempt, const char *event,
                const char *const *pairs, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#define log_debug(ev, ...) \
    do { if (log_enabled(LOG_LEVEL_DEBUG)) log_event(LOG_LEVEL_DEBUG, 0, 0, ev, __VA_ARGS__); } while (0)
#define log_info(ev, ...) log_event(LOG_LEVEL_INFO, 0, 0, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(LOG_LEVEL_WARN, 0, 0, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_LEVEL_ERROR, 0, 0, ev, __VA_ARGS__)

#endif
