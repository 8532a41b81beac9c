/*
 * Statements on the client's PostgreSQL connection (statement.h): the transaction, the
 * statement timeout, and the classification of every failed statement of submit, retry
 * by filter and the retry sets, by SQLSTATE first:
 *
 *   class 08 or a dead connection  RETRYQ_ERR_DATABASE, the connection is dropped
 *   23514 (check violation)        RETRYQ_ERR_SCHEMA: 'retrying' refused, not migrated
 *   42P01, 42703, 42883            RETRYQ_ERR_SCHEMA: a table, column or function missing
 *   57014 (statement timeout)      RETRYQ_ERR_DATABASE, naming the timeout
 *   class 22 (data exception)      RETRYQ_ERR_INVALID: a value the statement refused
 *   P0002 (no data found)          RETRYQ_ERR_NOT_FOUND: what the function looked for
 *   anything else                  RETRYQ_ERR_DATABASE with the SQLSTATE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "statement.h"

static const char SQL_TIMEOUT[] = "SELECT set_config('statement_timeout', $1, true)";

int rq_statement_open(rq_statement_t *st, retryq_client_t *client, const char *subject,
                      retryq_error_t *err)
{
    memset(st, 0, sizeof *st);
    st->client = client;
    st->subject = subject;
    st->err = err;
    st->timeout_ms = client->command_timeout_ms;
    st->pg = rq_client_pg(client, err);
    return st->pg != NULL ? RETRYQ_OK : RETRYQ_ERR_DATABASE;
}

/* One line from a failed statement: the server's primary message, or libpq's. */
static void error_text(const rq_statement_t *st, const PGresult *res, char *buf, size_t cap)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    snprintf(buf, cap, "%s", primary != NULL ? primary : PQerrorMessage(st->pg));
    for (char *p = buf; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' '; n--)
        buf[n - 1] = '\0';
}

static bool state_is(const char *state, const char *want)
{
    return state != NULL && strcmp(state, want) == 0;
}

/* Classifies a failed statement (see the top), fills err, frees res. */
static int sql_error(rq_statement_t *st, PGresult *res, const char *what)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *s = st->subject;
    char text[300];
    int code;
    error_text(st, res, text, sizeof text);
    if (PQstatus(st->pg) != CONNECTION_OK || (state != NULL && strncmp(state, "08", 2) == 0)) {
        st->broken = true;
        code = rq_error(st->err, RETRYQ_ERR_DATABASE, "%s: PostgreSQL connection lost during %s: %s", s,
                        what, text);
    } else if (state_is(state, "23514")) {
        code = rq_error(st->err, RETRYQ_ERR_SCHEMA,
                        "%s: the database refuses status 'retrying' (%s): the schema is not migrated; "
                        "run `retryq migrate`",
                        s, text);
    } else if (state_is(state, "42883") || ((state_is(state, "42P01") || state_is(state, "42703")) &&
                                           strstr(text, "retryq") != NULL)) {
        code = rq_error(st->err, RETRYQ_ERR_SCHEMA,
                        "%s: %s: retryq's tables and functions are missing or out of date; run "
                        "`retryq migrate`",
                        s, text);
    } else if (state_is(state, "42P01") || state_is(state, "42703")) {
        code = rq_error(st->err, RETRYQ_ERR_SCHEMA,
                        "%s: %s: the runner's schema lacks retry tracking (its migration 0010); migrate "
                        "the runner, then run `retryq migrate`",
                        s, text);
    } else if (state_is(state, "57014")) {
        code = rq_error(st->err, RETRYQ_ERR_DATABASE,
                        "%s: %s timed out after %d ms (is the row locked by a long transaction?)", s, what,
                        st->timeout_ms);
    } else if (state != NULL && strncmp(state, "22", 2) == 0) {
        code = rq_error(st->err, RETRYQ_ERR_INVALID, "%s: %s", s, text);
    } else if (state_is(state, "P0002")) {
        code = rq_error(st->err, RETRYQ_ERR_NOT_FOUND, "%s: %s", s, text);
    } else {
        code = rq_error(st->err, RETRYQ_ERR_DATABASE, "%s: %s failed: %s%s%s", s, what, text,
                        state != NULL ? " SQLSTATE " : "", state != NULL ? state : "");
    }
    PQclear(res);
    return code;
}

int rq_statement_exec(rq_statement_t *st, const char *sql, int nparams, const char *const *params,
                      const char *what, PGresult **out)
{
    PGresult *res = PQexecParams(st->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(res);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
        return sql_error(st, res, what);
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return RETRYQ_OK;
}

int rq_statement_begin(rq_statement_t *st, int timeout_ms, bool read_only)
{
    const char *begin = read_only ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN";
    char timeout[24];
    const char *const params[] = {timeout};
    st->timeout_ms = timeout_ms;
    snprintf(timeout, sizeof timeout, "%d", timeout_ms);
    int rc = rq_statement_exec(st, begin, 0, NULL, "BEGIN", NULL);
    if (rc != RETRYQ_OK && st->broken) {
        rq_client_pg_reset(st->client);
        st->broken = false;
        st->pg = rq_client_pg(st->client, st->err);
        if (st->pg == NULL)
            return RETRYQ_ERR_DATABASE;
        rc = rq_statement_exec(st, begin, 0, NULL, "BEGIN", NULL);
    }
    if (rc != RETRYQ_OK)
        return rc;
    st->in_transaction = true;
    return rq_statement_exec(st, SQL_TIMEOUT, 1, params, "setting the statement timeout", NULL);
}

int rq_statement_commit(rq_statement_t *st, const char *what)
{
    int rc = rq_statement_exec(st, "COMMIT", 0, NULL, what, NULL);
    st->in_transaction = false;
    return rc;
}

void rq_statement_rollback(rq_statement_t *st)
{
    if (st->in_transaction && !st->broken)
        PQclear(PQexec(st->pg, "ROLLBACK"));
    st->in_transaction = false;
}

void rq_statement_end(rq_statement_t *st)
{
    if (st->client == NULL)
        return;
    rq_statement_rollback(st);
    if (st->broken)
        rq_client_pg_reset(st->client);
    st->broken = false;
}

int64_t rq_statement_int(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}
