/*
 * Text utilities (see text.h): strict UTF-8 validation, sanitising for PostgreSQL
 * (drop NUL, replace invalid sequences by U+FFFD) and cutting at a UTF-8 boundary.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

static const char REPLACEMENT[3] = {'\xEF', '\xBF', '\xBD'}; /* U+FFFD */

/*
 * Looks at the sequence starting at s[i] (s[i] >= 0x80). Returns its length when it is
 * a complete valid sequence; otherwise returns 0 and sets *bad to the length of the
 * maximal subpart to replace by one U+FFFD (at least 1).
 */
static size_t utf8_sequence(const unsigned char *s, size_t len, size_t i, size_t *bad)
{
    unsigned char lead = s[i];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    if (lead >= 0xC2 && lead <= 0xDF) {
        need = 1;
    } else if (lead == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if (lead == 0xED) {
        need = 2;
        hi = 0x9F; /* excludes the surrogates */
    } else if (lead >= 0xE1 && lead <= 0xEF) {
        need = 2;
    } else if (lead == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (lead >= 0xF1 && lead <= 0xF3) {
        need = 3;
    } else if (lead == 0xF4) {
        need = 3;
        hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        *bad = 1; /* continuation byte, C0, C1 or F5..FF */
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        unsigned char c;
        if (i + k >= len) {
            *bad = k; /* truncated at the end: the valid prefix counts as one */
            return 0;
        }
        c = s[i + k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) {
            *bad = k;
            return 0;
        }
    }
    return need + 1;
}

bool text_is_clean(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n, bad;
        if (u[i] == 0)
            return false;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        n = utf8_sequence(u, len, i, &bad);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
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
        n = utf8_sequence(u, len, i, &bad);
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
