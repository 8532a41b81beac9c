/*
 * Text utilities (see text.h): strict UTF-8 validation, sanitising for PostgreSQL
 * (drop NUL, replace invalid sequences by U+FFFD) and cutting at a UTF-8 boundary. What
 * counts as one valid or invalid sequence is libretryq's rq_utf8_sequence (util.c),
 * shared with the wire format's checks.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "text.h"

static const char REPLACEMENT[3] = {'\xEF', '\xBF', '\xBD'}; /* U+FFFD */

bool text_is_clean(const char *s, size_t len)
{
    return memchr(s, '\0', len) == NULL && rq_utf8_valid(s, len);
}

char *text_sanitize(const char *s, size_t len, size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    char *out;

    /* Each invalid byte grows to at most 3 bytes. */
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    out = malloc(len * 3 + 1);
    if (out == NULL)
        return NULL;
    while (i < len) {
        size_t n, bad = 0;
        if (u[i] == 0) {
            i++;
            continue;
        }
        if (u[i] < 0x80) {
            out[o++] = (char)u[i++];
            continue;
        }
        n = rq_utf8_sequence(u + i, len - i, &bad);
        if (n > 0) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, REPLACEMENT, sizeof REPLACEMENT);
            o += sizeof REPLACEMENT;
            i += bad;
        }
    }
    out[o] = '\0';
    if (out_len != NULL)
        *out_len = o;
    return out;
}

char *text_sanitize_max(const char *s, size_t len, size_t max, size_t *out_len)
{
    size_t n = 0;
    char *out = text_sanitize(s, len, &n);

    if (out == NULL)
        return NULL;
    n = text_utf8_prefix(out, n, max);
    out[n] = '\0';
    if (out_len != NULL)
        *out_len = n;
    return out;
}

size_t text_utf8_prefix(const char *s, size_t len, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = max;

    if (len <= max)
        return len;
    /* u[n] is the first byte left out: back off while it continues a sequence. */
    for (int back = 0; back < 3 && n > 0 && (u[n] & 0xC0) == 0x80; back++)
        n--;
    if ((u[n] & 0xC0) == 0x80)
        return max; /* not UTF-8 anyway: a plain byte cut */
    return n;
}

size_t text_truncate(char *s, size_t max)
{
    size_t n = text_utf8_prefix(s, strlen(s), max);

    s[n] = '\0';
    return n;
}

bool text_copy(char *dst, size_t cap, const char *src)
{
    size_t len = strlen(src);
    size_t n = text_utf8_prefix(src, len, cap - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
    return n == len;
}
