/*
 * Helpers shared by libretryq's own files; not part of the public API (the symbols
 * are hidden in the shared library, visible in the static one for tests and the
 * worker).
 */
#ifndef RETRYQ_LIB_INTERNAL_H
#define RETRYQ_LIB_INTERNAL_H

#include <stdarg.h>

#include "retryq/retryq.h"

/* Fills err (when not NULL) with code and a formatted sentence; returns code. */
int rq_error(retryq_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies src into dst of capacity cap, always NUL-terminating; false when cut. */
bool rq_copy(char *dst, size_t cap, const char *src);

/* Strict UTF-8 (shortest form, no surrogates, at most U+10FFFF) over n bytes. */
bool rq_utf8_valid(const char *text, size_t n);
/* Copies len bytes of src (no NUL needed) into dst of capacity cap, NUL-terminated; a
 * longer text is cut before the UTF-8 sequence that would not fit whole. */
void rq_copy_utf8(char *dst, size_t cap, const char *src, size_t len);

/* Milliseconds since the epoch (wall clock) and an RFC 3339 UTC timestamp of it. */
int64_t rq_now_ms(void);
void rq_format_rfc3339(int64_t epoch_ms, char *buf, size_t cap);
/* Parses RFC 3339 ("2026-11-29T00:00:00Z", fractions and offsets allowed); -1 when bad. */
int64_t rq_parse_rfc3339(const char *text);

/* Flow control documents (flow.c), also read by the worker's status page. Each fills
 * `out` from the stored JSON text (`doc`, `len` bytes) of flow key `key` as seen at Redis
 * time `now_ms`, and returns false when the text is not a JSON object (out then holds the
 * key and empty fields: until_ms 0, left_ms -1 for a pause; failures and calls -1). */
bool rq_flow_parse_pause(const char *key, const char *doc, size_t len, int64_t now_ms,
                         retryq_flow_pause_t *out);
bool rq_flow_parse_breaker(const char *key, const char *doc, size_t len, int64_t now_ms,
                           retryq_flow_breaker_t *out);

#endif
