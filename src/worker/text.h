/*
 * Small text utilities shared by the worker's modules: making arbitrary bytes safe for
 * PostgreSQL text and jsonb (valid UTF-8, no NUL) and cutting strings to a byte budget
 * without splitting a UTF-8 sequence. Everything here is pure (no I/O, no state).
 *
 * "Valid UTF-8" is the strict form PostgreSQL accepts: no overlong forms, no UTF-16
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
 */
#ifndef RETRYQ_WORKER_TEXT_H
#define RETRYQ_WORKER_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is valid UTF-8 and holds no NUL byte. */
bool text_is_clean(const char *s, size_t len);

/*
 * Returns a malloc'd, NUL-terminated copy of s[0..len) that is valid UTF-8 without NUL
 * bytes: NUL bytes are dropped and every invalid sequence (as the Unicode "maximal
 * subpart" rule delimits it) becomes U+FFFD. s may be NULL when len is 0. When out_len
 * is not NULL it receives the length of the copy. NULL only when out of memory.
 */
char *text_sanitize(const char *s, size_t len, size_t *out_len);

/* Like text_sanitize, then cut to at most max bytes at a UTF-8 boundary. */
char *text_sanitize_max(const char *s, size_t len, size_t max, size_t *out_len);

/*
 * Length of the longest prefix of s[0..len) that is at most max bytes and does not end
 * inside a multi-byte UTF-8 sequence (for valid UTF-8 input; on invalid input it never
 * backs off more than 3 bytes).
 */
size_t text_utf8_prefix(const char *s, size_t len, size_t max);

/* Cuts the NUL-terminated string s in place to at most max bytes at a UTF-8 boundary;
 * returns the new length. */
size_t text_truncate(char *s, size_t max);

/*
 * Copies the NUL-terminated src into dst of capacity cap (> 0), cut at a UTF-8
 * boundary and always NUL-terminated. Returns false when src had to be cut.
 */
bool text_copy(char *dst, size_t cap, const char *src);

#endif
