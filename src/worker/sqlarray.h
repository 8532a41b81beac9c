/*
 * PostgreSQL array literals built as text parameters ("{1,2,3}", {"a","b\"c",NULL}), so one
 * statement can carry many rows through unnest(). Elements are always quoted (an empty
 * string, the word NULL or a comma stay what they are); '"' and '\' are escaped. The
 * literal grows in one heap buffer; after an allocation failure every call is a no-op and
 * sqlarray_finish returns NULL.
 */
#ifndef RETRYQ_WORKER_SQLARRAY_H
#define RETRYQ_WORKER_SQLARRAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sqlarray {
    char *buf;
    size_t len, cap;
    size_t count; /* elements so far */
    bool oom;
} sqlarray_t;

/* Starts an empty literal ("{}" when nothing is added). */
void sqlarray_init(sqlarray_t *a);
/* Appends a text element; NULL appends SQL NULL. */
void sqlarray_text(sqlarray_t *a, const char *s);
/* Appends an integer element. */
void sqlarray_int(sqlarray_t *a, int64_t v);
/* Closes the literal and hands over the buffer (free() it), or NULL when out of memory
 * (the buffer is then already freed). */
char *sqlarray_finish(sqlarray_t *a);
/* Frees the buffer of a literal that will not be finished. */
void sqlarray_discard(sqlarray_t *a);

#endif
