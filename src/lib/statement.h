/*
 * Statements on the client's PostgreSQL connection for submit.c, filter.c and sets.c:
 * a transaction bounded by a statement timeout, parameterised statements, and the one
 * place where a failed statement becomes a retryq code and a sentence (by SQLSTATE).
 * One rq_statement_t lives for one library call; rq_statement_end closes what it opened.
 */
#ifndef RETRYQ_LIB_STATEMENT_H
#define RETRYQ_LIB_STATEMENT_H

#include "client.h"

typedef struct rq_statement {
    retryq_client_t *client;
    PGconn *pg;
    retryq_error_t *err;
    const char *subject;  /* what messages are about: "[RETRY] execution 7", "retry set 3" */
    int timeout_ms;       /* the statement timeout (begin), named when a statement hits it */
    bool in_transaction;
    bool broken;          /* the connection failed: drop it at the end */
} rq_statement_t;

/* Takes the client's connection (opening it if needed). RETRYQ_ERR_DATABASE when none. */
int rq_statement_open(rq_statement_t *st, retryq_client_t *client, const char *subject,
                      retryq_error_t *err);

/* BEGIN and SET LOCAL statement_timeout; with read_only, a READ ONLY transaction on one
 * snapshot (REPEATABLE READ), so its statements agree with each other. A connection that went
 * stale since the last call (server restart) is replaced once: nothing has happened
 * yet, so that is safe. */
int rq_statement_begin(rq_statement_t *st, int timeout_ms, bool read_only);

/* Runs one statement; `out` (optional) receives the result when it succeeded (PQclear
 * it). On failure err says what happened during `what`. */
int rq_statement_exec(rq_statement_t *st, const char *sql, int nparams, const char *const *params,
                      const char *what, PGresult **out);

/* COMMIT; `what` names the step in the message when it fails. */
int rq_statement_commit(rq_statement_t *st, const char *what);
/* ROLLBACK when a transaction is open (its result does not matter: a failure drops it). */
void rq_statement_rollback(rq_statement_t *st);

/* Rolls back what is still open and drops a broken connection. */
void rq_statement_end(rq_statement_t *st);

/* A whole decimal field of a result row (0 when NULL). */
int64_t rq_statement_int(const PGresult *res, int row, int col);

#endif
