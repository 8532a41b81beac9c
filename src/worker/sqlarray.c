/*
 * Array literals for unnest() parameters (sqlarray.h). The output follows PostgreSQL's
 * array input syntax: '{' elements separated by ',' '}', each text element in double
 * quotes with '"' and '\' preceded by a backslash, SQL NULL as the bare word NULL.
 */
#include "sqlarray.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(sqlarray_t *a, size_t more)
{
    if (a->oom)
        return false;
    if (a->len + more + 2 <= a->cap) /* room for the closing brace and the NUL */
        return true;
    size_t cap = a->cap != 0 ? a->cap : 256;
    while (cap < a->len + more + 2) {
        if (cap > SIZE_MAX / 2) {
            sqlarray_discard(a);
            a->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(a->buf, cap);
    if (p == NULL) {
        sqlarray_discard(a);
        a->oom = true;
        return false;
    }
    a->buf = p;
    a->cap = cap;
    return true;
}

void sqlarray_init(sqlarray_t *a)
{
    memset(a, 0, sizeof *a);
    if (reserve(a, 1))
        a->buf[a->len++] = '{';
}

static void separator(sqlarray_t *a)
{
    if (a->count++ > 0)
        a->buf[a->len++] = ',';
}

void sqlarray_text(sqlarray_t *a, const char *s)
{
    if (s == NULL) {
        if (reserve(a, 5)) {
            separator(a);
            memcpy(a->buf + a->len, "NULL", 4);
            a->len += 4;
        }
        return;
    }
    size_t n = strlen(s), escapes = 0;
    for (size_t i = 0; i < n; i++)
        escapes += s[i] == '"' || s[i] == '\\';
    if (n > SIZE_MAX / 2 || !reserve(a, n + escapes + 3))
        return;
    separator(a);
    char *o = a->buf + a->len;
    *o++ = '"';
    if (escapes == 0) {
        memcpy(o, s, n);
        o += n;
    } else {
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '"' || s[i] == '\\')
                *o++ = '\\';
            *o++ = s[i];
        }
    }
    *o++ = '"';
    a->len = (size_t)(o - a->buf);
}

void sqlarray_int(sqlarray_t *a, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRId64, v);
    if (n <= 0 || !reserve(a, (size_t)n + 1))
        return;
    separator(a);
    memcpy(a->buf + a->len, num, (size_t)n);
    a->len += (size_t)n;
}

char *sqlarray_finish(sqlarray_t *a)
{
    if (a->oom || a->buf == NULL)
        return NULL;
    a->buf[a->len++] = '}';
    a->buf[a->len] = '\0';
    char *out = a->buf;
    memset(a, 0, sizeof *a);
    return out;
}

void sqlarray_discard(sqlarray_t *a)
{
    free(a->buf);
    a->buf = NULL;
    a->len = a->cap = 0;
}
