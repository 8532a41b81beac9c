/*
 * The retry sets the status page shows: the active ones (members still open) first, then
 * the newest, at most PAGE_SETS_SHOWN of the newest PAGE_SETS_SCANNED sets, with their
 * progress computed by migration 0013's retryq_set_progress — from the executions, as
 * `retryq sets` computes it. Read on a database connection of its own, only when the page
 * is asked for and the last read is older than PAGE_SETS_MAX_AGE_MS: a worker whose page
 * nobody looks at never opens the connection, and the page itself never waits for it (it shows
 * the last read and its age; the page refreshes itself every 5 s).
 */
#ifndef RETRYQ_WORKER_PAGE_SETS_H
#define RETRYQ_WORKER_PAGE_SETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "retryq/retryq.h"
#include "store.h"

#define PAGE_SETS_SHOWN 10
#define PAGE_SETS_SCANNED 50
#define PAGE_SETS_MAX_AGE_MS 4000

typedef struct page_set {
    int64_t id;
    char name[129];        /* "" when it has none; cut to fit */
    char created_by[129];
    char created_at[RETRYQ_MAX_TIMESTAMP + 1];
    retryq_set_progress_t progress;
} page_set_t;

typedef struct page_sets_view {
    bool known;            /* a read has answered */
    int64_t read_ms;       /* monotonic time of that answer */
    size_t n;
    page_set_t sets[PAGE_SETS_SHOWN];
    char error[256];       /* the last read's error ("" when it worked) */
} page_sets_view_t;

typedef struct page_sets page_sets_t;

/* A reader on a connection of its own (pool of one; opts as the worker's pool), opened at
 * the first page_sets_want. `conninfo` and what opts points to must outlive it. NULL with
 * err when out of memory. */
page_sets_t *page_sets_new(struct event_base *base, const char *conninfo,
                           const store_options_t *opts, char *err, size_t errcap);
void page_sets_free(page_sets_t *ps);
/* The page is being shown at `now_ms` (monotonic): read again when the last answer is
 * older than PAGE_SETS_MAX_AGE_MS and no read is out. */
void page_sets_want(page_sets_t *ps, int64_t now_ms);
const page_sets_view_t *page_sets_view(const page_sets_t *ps);

#endif
