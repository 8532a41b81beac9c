/*
 * The status page's retry sets (see page_sets.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "clock.h"
#include "page_sets.h"

#define STR_(x) #x
#define STR(x) STR_(x)

static const char SQL_PAGE_SETS[] =
    "WITH recent AS (SELECT id FROM retryq_sets ORDER BY id DESC LIMIT " STR(PAGE_SETS_SCANNED) "), "
    "p AS (SELECT * FROM retryq_set_progress(ARRAY(SELECT id FROM recent))) "
    "SELECT s.id, coalesce(s.name, ''), s.created_by, " RQ_SET_UTC_TEXT("s.created_at") ", "
    RQ_SET_RATE_WINDOW_MS ", " RQ_SET_PROGRESS_COLUMNS " "
    "FROM retryq_sets s JOIN recent r ON r.id = s.id LEFT JOIN p ON p.set_id = s.id "
    "ORDER BY coalesce(p.open, 0) > 0 DESC, s.id DESC LIMIT " STR(PAGE_SETS_SHOWN);

struct page_sets {
    struct event_base *base;
    const char *conninfo;   /* the worker's configuration's, which outlives this */
    store_options_t opts;
    store_t *db;            /* opened at the first view of the page */
    int stmt;
    bool asking;
    page_sets_view_t view;
};

page_sets_t *page_sets_new(struct event_base *base, const char *conninfo,
                           const store_options_t *opts, char *err, size_t errcap)
{
    page_sets_t *ps = calloc(1, sizeof *ps);
    if (ps == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    ps->base = base;
    ps->conninfo = conninfo;
    ps->opts = *opts;
    return ps;
}

/* The connection, at the first view: a worker whose page nobody looks at holds none. */
static bool open_db(page_sets_t *ps)
{
    char err[256];
    if (ps->db != NULL)
        return true;
    ps->db = store_new_opts(ps->base, ps->conninfo, 1, &ps->opts, err, sizeof err);
    if (ps->db != NULL && (ps->stmt = store_register(ps->db, SQL_PAGE_SETS, 0)) < 0) {
        snprintf(err, sizeof err, "could not register the retry sets statement");
        store_free(ps->db);
        ps->db = NULL;
    }
    if (ps->db == NULL) {
        ps->view.known = true;
        ps->view.read_ms = clock_mono_ms();
        snprintf(ps->view.error, sizeof ps->view.error, "%s", err);
    }
    return ps->db != NULL;
}

void page_sets_free(page_sets_t *ps)
{
    if (ps == NULL)
        return;
    if (ps->db != NULL)
        store_free(ps->db);
    free(ps);
}

static void on_sets(void *arg, store_status_t status, const PGresult *res, const char *sqlstate,
                    const char *message)
{
    page_sets_t *ps = arg;
    page_sets_view_t *v = &ps->view;
    ps->asking = false;
    v->known = true;
    v->read_ms = clock_mono_ms();
    if (status != STORE_OK) {
        snprintf(v->error, sizeof v->error, "%s%s%s", message, sqlstate[0] != '\0' ? " " : "",
                 sqlstate);
        return;
    }
    v->error[0] = '\0';
    int rows = PQntuples(res);
    v->n = 0;
    for (int i = 0; i < rows && v->n < PAGE_SETS_SHOWN; i++) {
        page_set_t *s = &v->sets[v->n++];
        memset(s, 0, sizeof *s);
        s->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        rq_copy_utf8(s->name, sizeof s->name, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        rq_copy_utf8(s->created_by, sizeof s->created_by, PQgetvalue(res, i, 2),
                     (size_t)PQgetlength(res, i, 2));
        rq_copy(s->created_at, sizeof s->created_at, PQgetvalue(res, i, 3));
        double window_ms = strtod(PQgetvalue(res, i, 4), NULL);
        rq_set_progress_add(res, i, 5, &s->progress);
        rq_set_progress_finish(&s->progress, window_ms);
    }
}

void page_sets_want(page_sets_t *ps, int64_t now_ms)
{
    if (ps == NULL || ps->asking || (ps->view.known && now_ms - ps->view.read_ms < PAGE_SETS_MAX_AGE_MS))
        return;
    if (!open_db(ps))
        return;
    ps->asking = true;
    if (store_exec(ps->db, ps->stmt, 0, NULL, on_sets, ps) < 0)
        ps->asking = false;
}

const page_sets_view_t *page_sets_view(const page_sets_t *ps)
{
    return ps != NULL ? &ps->view : NULL;
}
