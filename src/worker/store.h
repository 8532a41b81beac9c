/*
 * The PostgreSQL side of the worker: a small pool of nonblocking libpq connections driven
 * by the worker's event_base (PQconnectStart/PQconnectPoll, PQsendQueryPrepared, PQflush,
 * PQconsumeInput/PQisBusy/PQgetResult on socket events). Statements are registered once
 * and prepared on every new connection. Queries wait in a FIFO while no connection is free
 * or while the database is down; broken connections are re-opened with exponential
 * backoff and jitter. Nothing here blocks the loop.
 */
#ifndef RETRYQ_WORKER_STORE_H
#define RETRYQ_WORKER_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

struct event_base;

typedef struct store store_t;

typedef enum store_status {
    STORE_OK = 0,           /* res holds the result (PGRES_TUPLES_OK or PGRES_COMMAND_OK) */
    STORE_ERR_CONNECTION,   /* the connection broke while the query was sent or running, or
                               it was dropped by the client-side deadline (for a write the
                               outcome is unknown), or a STORE_DEADLINE_IS_TRANSIENT
                               statement hit its deadline: the caller waits and retries */
    STORE_ERR_QUERY,        /* the server refused the statement; sqlstate and message set */
} store_status_t;

/* `res` is owned by the store and valid only during the callback (NULL unless STORE_OK).
 * `sqlstate` is "" when unknown, `message` never NULL. */
typedef void (*store_done_fn)(void *arg, store_status_t status, const PGresult *res,
                              const char *sqlstate, const char *message);

/* Deadlines (0 = none). */
typedef struct store_options {
    int query_timeout_ms; /* statement_timeout of every connection; also the client-side
                             deadline: a connection with queries in flight and no answer for
                             this + min(this, 5 s) is dropped (a host gone silent) */
    int lock_timeout_ms;  /* lock_timeout: a statement waiting this long for a row lock fails
                             (55P03), so one locked row cannot hold a pipelined connection */
    int tcp_timeout_ms;   /* keepalives (idle t/3, interval t/9, 3 probes) and
                             tcp_user_timeout = t, unless the conninfo sets them itself */
    int pipeline_depth;   /* queries in flight on one pipelined connection; 0: 8 */
    struct resolver *resolver; /* resolves a host name on the loop before each connect
                                  (hostaddr= then, host= kept); NULL: libpq looks it up,
                                  blocking. Must outlive the store. */
    const char *password;  /* given apart from the conninfo (a password file): libpq's own
                              password keyword, over any in the conninfo; NULL: none.
                              Copied by store_new_opts. */
} store_options_t;

/* conninfo: a libpq connection string or URI (parsed by libpq's PQconninfoParse; the
 * error never quotes a password). pool_size: 1..64. Connections are opened at
 * once (asynchronously); failures are retried with backoff forever. opts may be NULL. */
store_t *store_new_opts(struct event_base *base, const char *conninfo, int pool_size,
                        const store_options_t *opts, char *err, size_t errcap);
/* store_new_opts without deadlines. */
store_t *store_new(struct event_base *base, const char *conninfo, int pool_size, char *err,
                   size_t errcap);
/* Closes connections; callbacks of queued or running queries are NOT called. */
void store_free(store_t *store);

/* Registers a statement to prepare on every connection; only before the first query. Returns
 * a statement id >= 0, or -1. */
int store_register(store_t *store, const char *sql, int nparams);
/* STORE_DEADLINE_IS_TRANSIENT: when the statement is stopped by a deadline (57014
 * statement_timeout, 55P03 lock_timeout) it changed nothing; answer STORE_ERR_CONNECTION
 * (sqlstate still set) so the caller waits and sends it again, as after a lost connection.
 * For single-row statements; a batch should see STORE_ERR_QUERY and split itself. */
#define STORE_DEADLINE_IS_TRANSIENT 1u
int store_register_flags(store_t *store, const char *sql, int nparams, unsigned flags);

/* Queues one execution of a registered statement. Parameters are text (NULL = SQL NULL) and
 * are copied. Returns 0, or -1 when out of memory. The callback runs exactly once, from the
 * loop (never from inside store_exec), unless the store is freed first. */
int store_exec(store_t *store, int statement, int nparams, const char *const *params,
               store_done_fn done, void *arg);

bool store_connected(const store_t *store);  /* at least one connection ready */
/* `fn` runs (from the loop) whenever store_connected() changes; it must not free the store.
 * Errors are logged by the store itself (event db.error, at error level, once per change
 * of the text; db.ready when a connection is ready again). */
void store_set_state_callback(store_t *store, void (*fn)(void *arg), void *arg);
size_t store_pending(const store_t *store);  /* queued + running queries */
/* A short description of the last connection error ("" when none), for /readyz and logs. */
const char *store_last_error(const store_t *store);

/* True when the SQLSTATE means "the connection or server is gone" (class 08, 57P01..57P03). */
bool store_sqlstate_is_connection(const char *sqlstate);
/* True for serialization failure / deadlock (40001, 40P01): retry the statement. */
bool store_sqlstate_is_retryable(const char *sqlstate);

#endif
