/*
 * The worker's PostgreSQL pool: `pool_size` nonblocking libpq connections driven by the
 * worker's event_base, a FIFO of queries waiting for a free connection, and the statements
 * prepared on every connection. A connection goes DOWN -> CONNECTING (PQconnectPoll) ->
 * PREPARING (one PQsendPrepare per registered statement) -> IDLE <-> BUSY, and back to DOWN
 * (closed, reopened after a jittered backoff) when it breaks. Only IDLE and BUSY connections
 * count as "connected". A query waits in the FIFO until an idle connection takes it; once
 * sent, it is answered exactly once: its first result, a query error, or
 * STORE_ERR_CONNECTION when the connection broke under it. Queued queries never fail
 * because the database is down: they wait.
 *
 * Pipelining (libpq pipeline mode, PostgreSQL >= 14): a ready connection runs in pipeline
 * mode, each query followed by its own Sync, so every statement is still its own implicit
 * transaction and an error affects that statement only. Queries go to an idle connection
 * first; only when every connection of the pool is up and none is idle does the least
 * busy one take more, up to opts.pipeline_depth in flight; answers come back in order.
 * (A slow query delays the few pipelined behind it on its connection.) This removes the wait
 * for a round trip per query: at a backlog the server reads several queries per wake-up
 * (docs/performance.md has the figures).
 *
 * Callbacks run only from the loop (socket, timer or the "kick" event), never from
 * store_exec, and a connection is always put in a consistent state before a callback runs,
 * so a callback may queue more queries or even free the store; connection objects live as
 * long as the store, so none is freed under its own callback.
 *
 * Host names: libpq would resolve a host *name* with a blocking lookup inside
 * PQconnectStart, stalling the whole loop. With a resolver (store_options_t) a single host
 * name is looked up with evdns before every connect (state RESOLVING) and given to libpq
 * as hostaddr=, host= kept for TLS and .pgpass. A list of hosts ("h1,h2") is still left
 * to libpq. Deadlines: statement_timeout and lock_timeout are SET on each connection
 * before its statements are prepared; a connection with queries in flight that hears
 * nothing for the query timeout plus a grace is dropped (a silent host); TCP keepalives
 * and tcp_user_timeout are added unless the conninfo sets them.
 *
 * The conninfo is parsed once (connstr.h, libpq's own parser) and libpq gets keyword/value
 * arrays built from that reading, with expand_dbname 0: a password given apart (a password
 * file) is its own `password` keyword and the resolved address its `hostaddr`, nothing is
 * spliced into the text, and the text itself never reaches libpq again (so no libpq
 * message can quote it).
 */
#include "store.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "backoff.h"
#include "connstr.h"
#include "log.h"
#include "resolve.h"

#define STORE_POOL_MAX 64
#define STORE_PARAMS_MAX 65535
#define STORE_BACKOFF_FIRST_MS 100
#define STORE_BACKOFF_CAP_MS 10000
#define STORE_CONNECT_TIMEOUT_MS 10000 /* when the conninfo sets no connect_timeout */
#define STORE_ERROR_CAP 512
#define STORE_PIPELINE_DEPTH 8         /* default of opts.pipeline_depth */
#define STORE_EXTRA_KEYWORDS 8        /* fallback name, 5 keepalive keywords, hostaddr, NULL */
#define STORE_GRACE_MAX_MS 5000        /* client deadline = query timeout + this (or less) */

typedef struct request {
    struct request *next;
    store_done_fn done;
    void *arg;
    int statement;
    int nparams;
    const char *params[]; /* then the parameter texts, all in this one allocation */
} request_t;

typedef struct statement {
    char name[16]; /* "rq_<id>" */
    char *sql;
    int nparams;
    unsigned flags; /* STORE_* flags of store_register_flags */
} statement_t;

typedef enum conn_state {
    CONN_DOWN,       /* closed; the timer reopens it */
    CONN_RESOLVING,  /* evdns is looking up the host name; the timer is the deadline */
    CONN_CONNECTING, /* PQconnectPoll in progress; the timer is the connect deadline */
    CONN_PREPARING,  /* preparing statement `prepared`; the timer is still the deadline */
    CONN_IDLE,       /* ready, on the idle list */
    CONN_BUSY,       /* ready, running `req` (and, pipelined, the queries after it) */
} conn_state_t;

typedef struct conn {
    store_t *store;
    PGconn *pg;
    conn_state_t state;
    evutil_socket_t fd;     /* the socket the events below watch, -1 when none */
    struct event *io;       /* EV_READ|EV_PERSIST on fd (one-shot use while connecting) */
    struct event *out;      /* EV_WRITE on fd, added while libpq has unsent output */
    struct event *timer;    /* backoff (DOWN) or connect deadline (CONNECTING, PREPARING) */
    bool want_write;        /* `out` is pending */
    int prepared;           /* statements prepared on this connection */
    bool configured;        /* the session settings (deadlines) were sent and accepted */
    resolve_request_t *dns; /* the lookup of CONN_RESOLVING */
    backoff_t backoff;      /* of the reconnect delay; reset after a success */
    request_t *req;         /* the oldest query in flight (BUSY); the others follow on ->next */
    request_t *req_tail;    /* the newest query in flight */
    int inflight;           /* queries sent and not yet answered */
    bool pipeline;          /* in libpq pipeline mode: may take more than one query */
    PGresult *result;       /* its first result, kept until PQgetResult returns NULL */
    struct conn *idle_prev, *idle_next;
} conn_t;

struct store {
    struct event_base *base;
    connstr_pg_t *conninfo; /* parsed; owns the strings `values` points to */
    int connect_timeout_ms;
    store_options_t opts;
    char *setup_sql;       /* SET statement_timeout / lock_timeout, or NULL */
    char keepalive_text[4][16];
    char *resolve_host;    /* the conninfo's host name, resolved before each connect; NULL
                              when it is an address, a socket path or several hosts */
    char hostaddr[64];     /* its address, given to libpq as hostaddr (host kept for TLS
                              and .pgpass) */
    const char **keywords; /* for PQconnectStartParams, NULL-terminated */
    const char **values;
    size_t nkeywords, keywords_cap;

    statement_t *stmts;
    int nstmts, stmts_cap;
    bool exec_started;

    conn_t *conns;
    int nconns;
    int nready;
    conn_t *idle; /* doubly linked list of IDLE connections */

    request_t *head, *tail; /* queries waiting for a connection */
    size_t nqueued, nrunning;

    struct event *kick; /* activated by store_exec so dispatch runs from the loop */
    uint64_t rng;
    int depth;  /* callbacks on the stack */
    bool freed; /* store_free ran inside a callback: free the rest when it returns */
    char last_error[STORE_ERROR_CAP];
    char logged_error[STORE_ERROR_CAP]; /* the last error logged; "" once a connection is ready */
    void (*state_fn)(void *arg);        /* store_connected() changed */
    void *state_arg;
};

static bool conn_fail(conn_t *c, const char *why, const char *sqlstate, store_status_t status);
static bool dispatch(store_t *s);
static void conn_event_cb(evutil_socket_t fd, short what, void *arg);

/* ------------------------------------------------------------------ helpers */

/* Copies `text` into dst as one line: newlines become spaces, trailing blanks go, the
 * password libpq was given becomes "***". */
static void clean_message(char *dst, size_t cap, const char *text, const char *password)
{
    size_t o = 0, plen = password != NULL ? strlen(password) : 0;
    const char *p = text != NULL ? text : "";
    while (*p != '\0' && o + 1 < cap) {
        if (plen > 0 && strncmp(p, password, plen) == 0) {
            for (const char *r = "***"; *r != '\0' && o + 1 < cap; r++)
                dst[o++] = *r;
            p += plen;
            continue;
        }
        dst[o++] = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
        p++;
    }
    while (o > 0 && dst[o - 1] == ' ')
        o--;
    if (cap > 0)
        dst[o] = '\0';
}

/* Records the error for /readyz and logs it at error level when it differs from the last
 * one logged: a pool that keeps failing the same way logs one line, not one per attempt. */
static void set_last_error(store_t *s, const char *why)
{
    clean_message(s->last_error, sizeof s->last_error, why,
                  connstr_pg_value(s->conninfo, "password"));
    if (s->last_error[0] == '\0')
        snprintf(s->last_error, sizeof s->last_error, "connection lost");
    if (strcmp(s->last_error, s->logged_error) != 0) {
        snprintf(s->logged_error, sizeof s->logged_error, "%s", s->last_error);
        log_error("db.error", "database: %s", s->last_error);
    }
}

/* Tells the owner that store_connected() changed; the callback must not free the store. */
static void state_changed(store_t *s)
{
    if (s->state_fn != NULL) {
        s->depth++;
        s->state_fn(s->state_arg);
        s->depth--;
    }
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Runs one query's callback; false when the callback freed the store (touch nothing). */
static bool deliver(store_t *s, request_t *req, store_status_t status, const PGresult *res,
                    const char *sqlstate, const char *message)
{
    s->depth++;
    req->done(req->arg, status, res, sqlstate != NULL ? sqlstate : "",
              message != NULL ? message : "");
    s->depth--;
    free(req);
    if (s->freed) {
        if (s->depth == 0)
            store_free(s);
        return false;
    }
    return true;
}

static void queue_push_back(store_t *s, request_t *r)
{
    r->next = NULL;
    if (s->tail != NULL)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->nqueued++;
}

static void queue_push_front(store_t *s, request_t *r)
{
    r->next = s->head;
    s->head = r;
    if (s->tail == NULL)
        s->tail = r;
    s->nqueued++;
}

static request_t *queue_pop(store_t *s)
{
    request_t *r = s->head;
    if (r != NULL) {
        s->head = r->next;
        if (s->head == NULL)
            s->tail = NULL;
        r->next = NULL;
        s->nqueued--;
    }
    return r;
}

static void idle_push(store_t *s, conn_t *c)
{
    c->state = CONN_IDLE;
    c->idle_prev = NULL;
    c->idle_next = s->idle;
    if (s->idle != NULL)
        s->idle->idle_prev = c;
    s->idle = c;
}

static void idle_remove(store_t *s, conn_t *c)
{
    if (c->idle_prev != NULL)
        c->idle_prev->idle_next = c->idle_next;
    else
        s->idle = c->idle_next;
    if (c->idle_next != NULL)
        c->idle_next->idle_prev = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
}

/* ------------------------------------------------------------------ connection life */

static void conn_drop_events(conn_t *c)
{
    if (c->io != NULL)
        event_free(c->io);
    if (c->out != NULL)
        event_free(c->out);
    c->io = c->out = NULL;
    c->fd = -1;
    c->want_write = false;
}

/* Closes the libpq connection and its socket events; the timer stays. */
static void conn_close(conn_t *c)
{
    if (c->dns != NULL)
        resolve_cancel(c->dns);
    c->dns = NULL;
    conn_drop_events(c);
    if (c->result != NULL)
        PQclear(c->result);
    c->result = NULL;
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
}

/* Points the socket events at PQsocket(), re-creating them when the socket changed. */
static bool conn_watch_socket(conn_t *c)
{
    evutil_socket_t fd = PQsocket(c->pg);
    if (fd == c->fd && c->io != NULL)
        return true;
    conn_drop_events(c);
    if (fd < 0)
        return false;
    c->io = event_new(c->store->base, fd, EV_READ | EV_PERSIST, conn_event_cb, c);
    c->out = event_new(c->store->base, fd, EV_WRITE, conn_event_cb, c);
    if (c->io == NULL || c->out == NULL) {
        conn_drop_events(c);
        return false;
    }
    c->fd = fd;
    return true;
}

static void conn_schedule_reconnect(conn_t *c)
{
    int64_t delay = backoff_next(&c->backoff, &c->store->rng);
    struct timeval tv = {.tv_sec = (time_t)(delay / 1000),
                         .tv_usec = (suseconds_t)(delay % 1000) * 1000};
    c->state = CONN_DOWN;
    /* Without its timer the connection stays down (the others of the pool still work). */
    if (evtimer_add(c->timer, &tv) != 0)
        log_error("db.timer", "could not arm a database reconnect timer: one pool connection "
                              "stays closed");
}

/* Takes a connection out of service: closes it, arms the reconnect, and answers the query
 * it was running with `status`. Queued queries are untouched. Returns false when that
 * callback freed the store. */
static bool conn_fail(conn_t *c, const char *why, const char *sqlstate, store_status_t status)
{
    store_t *s = c->store;
    set_last_error(s, why);
    if (c->state == CONN_IDLE)
        idle_remove(s, c);
    bool was_ready = c->state == CONN_IDLE || c->state == CONN_BUSY;
    if (was_ready)
        s->nready--;
    request_t *req = c->req;
    s->nrunning -= (size_t)c->inflight;
    c->req = c->req_tail = NULL;
    c->inflight = 0;
    c->pipeline = false;
    conn_close(c);
    (void)evtimer_del(c->timer);
    conn_schedule_reconnect(c);
    if (was_ready && s->nready == 0)
        state_changed(s);
    char message[STORE_ERROR_CAP];
    snprintf(message, sizeof message, "%s", s->last_error);
    /* The oldest query gets `status`; the ones pipelined behind it were cut off by the
     * broken connection (outcome unknown). */
    while (req != NULL) {
        request_t *next = req->next;
        req->next = NULL;
        if (!deliver(s, req, status, NULL, sqlstate, message)) {
            while (next != NULL) {
                req = next->next;
                free(next);
                next = req;
            }
            return false;
        }
        req = next;
        status = STORE_ERR_CONNECTION;
        sqlstate = "";
    }
    return true;
}

static bool conn_broken(conn_t *c, const char *why, const char *sqlstate)
{
    return conn_fail(c, why, sqlstate, STORE_ERR_CONNECTION);
}

/* The libpq error of a broken connection: the error result the server sent (e.g. 57P01
 * "terminating connection due to administrator command") when one arrived, else libpq's. */
static bool conn_lost(conn_t *c)
{
    const char *sqlstate = "", *why = PQerrorMessage(c->pg);
    if (c->result != NULL && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
        const char *st = PQresultErrorField(c->result, PG_DIAG_SQLSTATE);
        if (st != NULL)
            sqlstate = st;
        why = PQresultErrorMessage(c->result);
    }
    char copy[STORE_ERROR_CAP], state[8];
    snprintf(copy, sizeof copy, "%s", why);
    snprintf(state, sizeof state, "%s", sqlstate);
    return conn_broken(c, copy, state);
}

static void conn_open(conn_t *c);

/* Arms the connect deadline (resolving, connecting, preparing); false when it could not
 * be armed and the connection was taken down. */
static bool conn_arm_connect_deadline(conn_t *c)
{
    int ms = c->store->connect_timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    if (evtimer_add(c->timer, &tv) == 0)
        return true;
    (void)conn_broken(c, "could not arm the connect deadline", "");
    return false;
}

static void on_resolved(void *arg, const char *addr, const char *error)
{
    conn_t *c = arg;
    store_t *s = c->store;
    c->dns = NULL;
    if (addr == NULL) {
        char why[STORE_ERROR_CAP];
        snprintf(why, sizeof why, "could not resolve the database host %s: %s", s->resolve_host,
                 error);
        (void)conn_broken(c, why, "");
        return;
    }
    snprintf(s->hostaddr, sizeof s->hostaddr, "%s", addr);
    conn_open(c);
}

/* Resolves the host name first (evdns, on the loop) when there is one: libpq's own lookup
 * inside PQconnectStart would block the loop. */
static void conn_start(conn_t *c)
{
    store_t *s = c->store;
    if (s->resolve_host == NULL || s->opts.resolver == NULL) {
        conn_open(c);
        return;
    }
    c->state = CONN_RESOLVING;
    if (!conn_arm_connect_deadline(c))
        return;
    c->dns = resolve_start(s->opts.resolver, s->resolve_host, on_resolved, c);
    if (c->dns == NULL)
        (void)conn_broken(c, "out of memory resolving the database host", "");
}

static void conn_open(conn_t *c)
{
    store_t *s = c->store;
    c->prepared = 0;
    c->configured = false;
    c->pg = PQconnectStartParams(s->keywords, s->values, 0);
    if (c->pg == NULL) {
        set_last_error(s, "out of memory starting a database connection");
        conn_schedule_reconnect(c);
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        (void)conn_broken(c, PQerrorMessage(c->pg), "");
        return;
    }
    c->state = CONN_CONNECTING;
    /* Before the first PQconnectPoll, act as if it had returned PGRES_POLLING_WRITING. */
    if (!conn_watch_socket(c) || event_add(c->out, NULL) != 0) {
        (void)conn_broken(c, "could not watch the database socket", "");
        return;
    }
    (void)conn_arm_connect_deadline(c);
}

/* How long a connection may go without any answer while queries are in flight: the
 * server's own statement_timeout answers first; past this the host has gone silent (no
 * RST, no FIN), and the connection is dropped rather than cancelled (PQcancel blocks). */
static int client_deadline_ms(const store_t *s)
{
    int t = s->opts.query_timeout_ms;
    return t + (t < STORE_GRACE_MAX_MS ? t : STORE_GRACE_MAX_MS);
}

/* (Re)arms the client-side deadline of a busy connection. When the timer cannot be armed
 * the queries still run, only without that deadline (logged). */
static void conn_arm_deadline(conn_t *c)
{
    if (c->store->opts.query_timeout_ms <= 0)
        return;
    int ms = client_deadline_ms(c->store);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    if (evtimer_add(c->timer, &tv) != 0)
        log_error("db.timer", "could not arm a query deadline: a silent database host would "
                              "hold this connection's queries until TCP gives up");
}

/* Sends whatever libpq still buffers; waits for EV_WRITE while PQflush returns 1. */
static bool conn_flush(conn_t *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0)
        return conn_lost(c);
    if (rc > 0 && !c->want_write) {
        if (event_add(c->out, NULL) != 0)
            return conn_broken(c, "could not watch the database socket", "");
        c->want_write = true;
    } else if (rc == 0 && c->want_write) {
        (void)event_del(c->out);
        c->want_write = false;
    }
    return true;
}

static void conn_ready(conn_t *c)
{
    store_t *s = c->store;
    (void)evtimer_del(c->timer);
    backoff_reset(&c->backoff);
    /* Without pipeline mode the connection still works, one query at a time. */
    if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF)
        (void)PQenterPipelineMode(c->pg);
    c->pipeline = PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF;
    s->nready++;
    idle_push(s, c);
    if (s->logged_error[0] != '\0') {
        log_info("db.ready", "database connection ready again (last error: %s)", s->logged_error);
        s->logged_error[0] = '\0';
    }
    if (s->nready == 1)
        state_changed(s);
    (void)dispatch(s);
}

/* Prepares the next registered statement, or declares the connection ready. */
static bool conn_prepare_next(conn_t *c)
{
    store_t *s = c->store;
    if (!c->configured && s->setup_sql != NULL) {
        /* The session's deadlines first (a SET, not startup "options", which poolers
         * such as PgBouncer refuse). */
        c->state = CONN_PREPARING;
        if (!PQsendQuery(c->pg, s->setup_sql))
            return conn_lost(c);
        return conn_flush(c);
    }
    c->configured = true;
    if (c->prepared >= s->nstmts) {
        conn_ready(c);
        return true;
    }
    c->state = CONN_PREPARING;
    const statement_t *st = &s->stmts[c->prepared];
    if (!PQsendPrepare(c->pg, st->name, st->sql, st->nparams, NULL))
        return conn_lost(c);
    return conn_flush(c);
}

static void conn_connect_step(conn_t *c)
{
    /* The socket may be closed and replaced inside PQconnectPoll: stop watching it first. */
    (void)event_del(c->io);
    (void)event_del(c->out);
    c->want_write = false;
    PostgresPollingStatusType poll = PQconnectPoll(c->pg);
    if (poll == PGRES_POLLING_FAILED) {
        (void)conn_broken(c, PQerrorMessage(c->pg), "");
        return;
    }
    if (!conn_watch_socket(c)) {
        (void)conn_broken(c, "could not watch the database socket", "");
        return;
    }
    if (poll == PGRES_POLLING_OK) {
        if (PQsetnonblocking(c->pg, 1) != 0) {
            (void)conn_lost(c);
            return;
        }
        PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
        if (event_add(c->io, NULL) != 0) {
            (void)conn_broken(c, "could not watch the database socket", "");
            return;
        }
        (void)conn_prepare_next(c);
        return;
    }
    struct event *ev = poll == PGRES_POLLING_READING ? c->io : c->out;
    if (event_add(ev, NULL) != 0)
        (void)conn_broken(c, "could not watch the database socket", "");
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    (void)fd;
    (void)what;
    if (c->state == CONN_DOWN)
        conn_start(c);
    else if (c->state == CONN_RESOLVING)
        (void)conn_broken(c, "timed out resolving the database host", "");
    else if (c->state == CONN_CONNECTING || c->state == CONN_PREPARING)
        (void)conn_broken(c, "timed out connecting to the database", "");
    else if (c->state == CONN_BUSY) {
        char why[160];
        snprintf(why, sizeof why, "no answer from the database for %d ms (host gone silent?): "
                                  "connection dropped", client_deadline_ms(c->store));
        (void)conn_broken(c, why, "");
    }
}

/* All results of the current command are in (PQgetResult returned NULL). Returns true
 * when the connection and the store are still there for more results (pipelining). */
static bool conn_command_done(conn_t *c)
{
    store_t *s = c->store;
    PGresult *res = c->result;
    c->result = NULL;
    ExecStatusType rs = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    bool ok = rs == PGRES_TUPLES_OK || rs == PGRES_COMMAND_OK;
    const char *sqlstate = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (sqlstate == NULL)
        sqlstate = "";
    if (!ok && (store_sqlstate_is_connection(sqlstate) || PQstatus(c->pg) == CONNECTION_BAD)) {
        c->result = res; /* conn_lost takes the server's text from it */
        (void)conn_lost(c);
        return false;
    }

    if (c->state == CONN_PREPARING) {
        if (!ok) {
            char why[STORE_ERROR_CAP];
            if (!c->configured)
                snprintf(why, sizeof why, "setting the session deadlines failed: %s",
                         res != NULL ? PQresultErrorMessage(res) : "no result");
            else
                snprintf(why, sizeof why, "preparing statement %s failed: %s",
                         s->stmts[c->prepared].name,
                         res != NULL ? PQresultErrorMessage(res) : "no result");
            PQclear(res);
            (void)conn_broken(c, why, "");
            return false;
        }
        PQclear(res);
        if (c->configured)
            c->prepared++;
        else
            c->configured = true;
        (void)conn_prepare_next(c);
        return false;
    }

    /* BUSY: the connection is free again (or has room) before the callback runs, and
     * takes the next queued query first so the server works while the callback does. */
    request_t *req = c->req;
    c->req = req->next;
    if (c->req == NULL)
        c->req_tail = NULL;
    req->next = NULL;
    c->inflight--;
    s->nrunning--;
    if (c->inflight == 0) {
        (void)evtimer_del(c->timer);
        idle_push(s, c);
    } else {
        conn_arm_deadline(c);
    }
    if (!dispatch(s)) {
        free(req);
        PQclear(res);
        return false;
    }
    bool alive;
    if (ok) {
        alive = deliver(s, req, STORE_OK, res, "", "");
    } else {
        const char *message = NULL;
        if (res != NULL)
            message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        if (message == NULL)
            message = res != NULL ? PQresultErrorMessage(res) : "the server returned no result";
        /* A statement stopped by its deadline changed nothing; for statements that may be
         * sent again it is an outage of that row, not a refusal (store.h). */
        bool deadline = strcmp(sqlstate, "57014") == 0 || strcmp(sqlstate, "55P03") == 0;
        alive = deliver(s, req,
                        deadline && (s->stmts[req->statement].flags & STORE_DEADLINE_IS_TRANSIENT)
                            ? STORE_ERR_CONNECTION
                            : STORE_ERR_QUERY,
                        NULL, sqlstate, message);
    }
    PQclear(res);
    return alive && c->pg != NULL && c->req != NULL;
}

static void conn_read(conn_t *c)
{
    if (!PQconsumeInput(c->pg)) {
        (void)conn_lost(c);
        return;
    }
    if (c->state == CONN_IDLE) {
        /* Nothing is expected: notices, parameter changes, or the server going away. */
        if (PQstatus(c->pg) == CONNECTION_BAD)
            (void)conn_lost(c);
        return;
    }
    if (c->want_write && !conn_flush(c))
        return;
    if (c->pg == NULL) /* conn_flush found it broken */
        return;
    int nulls = 0;
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            /* Pipelined, a NULL ends one query's results; one that follows no result (none
             * should, but twice in a row means libpq has nothing more) is skipped. */
            if (c->pipeline && c->state == CONN_BUSY && c->result == NULL) {
                if (c->req == NULL || ++nulls > 1)
                    return;
                continue;
            }
            if (!conn_command_done(c) || !c->pipeline)
                return;
            nulls = 0;
            continue;
        }
        nulls = 0;
        ExecStatusType rs = PQresultStatus(res);
        if (rs == PGRES_PIPELINE_SYNC) {
            PQclear(res); /* the end of one query's implicit transaction */
            continue;
        }
        if (rs == PGRES_COPY_IN || rs == PGRES_COPY_OUT || rs == PGRES_COPY_BOTH) {
            /* PQgetResult would return COPY results forever: the store does not do COPY. */
            PQclear(res);
            (void)conn_fail(c, "COPY statements are not supported by the store", "0A000",
                            STORE_ERR_QUERY);
            return;
        }
        if (c->result == NULL)
            c->result = res;
        else
            PQclear(res);
    }
    if (PQstatus(c->pg) == CONNECTION_BAD)
        (void)conn_lost(c);
}

static void conn_event_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_t *c = arg;
    (void)fd;
    switch (c->state) {
    case CONN_CONNECTING:
        conn_connect_step(c);
        return;
    case CONN_PREPARING:
    case CONN_BUSY:
        if (what & EV_WRITE) {
            c->want_write = false;
            if (!conn_flush(c) || c->pg == NULL)
                return;
        }
        if (what & EV_READ)
            conn_read(c);
        return;
    case CONN_IDLE:
        if (what & EV_READ)
            conn_read(c);
        return;
    case CONN_DOWN:
    case CONN_RESOLVING:
        return;
    }
}

/* ------------------------------------------------------------------ queries */

/* Sends one query on an idle connection. When nothing could be sent the query goes back to
 * the head of the queue (it never reached the server) and the connection is reopened. */
static bool conn_send(conn_t *c, request_t *req)
{
    store_t *s = c->store;
    const statement_t *st = &s->stmts[req->statement];
    c->state = CONN_BUSY;
    if (!PQsendQueryPrepared(c->pg, st->name, req->nparams, req->params, NULL, NULL, 0)) {
        queue_push_front(s, req);
        return conn_lost(c);
    }
    req->next = NULL;
    if (c->req_tail != NULL)
        c->req_tail->next = req;
    else
        c->req = req;
    c->req_tail = req;
    c->inflight++;
    s->nrunning++;
    if (c->inflight == 1)
        conn_arm_deadline(c);
    if (c->pipeline && !PQpipelineSync(c->pg))
        return conn_lost(c);
    return conn_flush(c);
}

/* The pipelined connection with the fewest queries in flight that can take one more;
 * none while a connection of the pool is still (re)connecting, so that queries spread
 * over every backend rather than pile up behind the first one ready. */
static conn_t *least_busy(store_t *s)
{
    conn_t *best = NULL;
    if (s->nready < s->nconns)
        return NULL;
    for (int i = 0; i < s->nconns; i++) {
        conn_t *c = &s->conns[i];
        if (c->state == CONN_BUSY && c->pipeline && c->inflight < s->opts.pipeline_depth &&
            (best == NULL || c->inflight < best->inflight))
            best = c;
    }
    return best;
}

/* Gives queued queries to idle connections; false when a callback freed the store. */
static bool dispatch(store_t *s)
{
    while (s->head != NULL) {
        conn_t *c = s->idle;
        if (c != NULL)
            idle_remove(s, c);
        else if ((c = least_busy(s)) == NULL)
            break;
        if (!conn_send(c, queue_pop(s)))
            return false;
    }
    return true;
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)dispatch(arg);
}

int store_exec(store_t *store, int statement, int nparams, const char *const *params,
               store_done_fn done, void *arg)
{
    if (store == NULL || done == NULL || statement < 0 || statement >= store->nstmts ||
        nparams != store->stmts[statement].nparams || (nparams > 0 && params == NULL))
        return -1;
    size_t size = sizeof(request_t) + (size_t)nparams * sizeof(char *);
    for (int i = 0; i < nparams; i++)
        if (params[i] != NULL)
            size += strlen(params[i]) + 1;
    request_t *req = malloc(size);
    if (req == NULL)
        return -1;
    req->done = done;
    req->arg = arg;
    req->statement = statement;
    req->nparams = nparams;
    char *text = (char *)&req->params[nparams];
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL) {
            req->params[i] = NULL;
            continue;
        }
        size_t len = strlen(params[i]) + 1;
        memcpy(text, params[i], len);
        req->params[i] = text;
        text += len;
    }
    store->exec_started = true;
    queue_push_back(store, req);
    if (store->nready > 0)
        event_active(store->kick, EV_TIMEOUT, 0);
    return 0;
}

/* ------------------------------------------------------------------ setup and teardown */

/* Adds keyword=value after the conninfo's options unless the conninfo set it. */
static void add_keyword(store_t *s, const char *key, const char *value)
{
    if (connstr_pg_value(s->conninfo, key) == NULL && s->nkeywords + 1 < s->keywords_cap) {
        s->keywords[s->nkeywords] = key;
        s->values[s->nkeywords] = value;
        s->nkeywords++;
    }
}

/* TCP keepalives and tcp_user_timeout from opts.tcp_timeout_ms, unless the conninfo sets
 * them: a peer that vanished is noticed within about tcp_timeout (unacknowledged data:
 * tcp_user_timeout; an idle link that stops answering probes: keepalives). */
static void add_keepalives(store_t *s)
{
    int t = s->opts.tcp_timeout_ms;
    if (t <= 0)
        return;
    int idle = t / 3000 > 0 ? t / 3000 : 1;
    int interval = t / 9000 > 0 ? t / 9000 : 1;
    snprintf(s->keepalive_text[0], sizeof s->keepalive_text[0], "%d", idle);
    snprintf(s->keepalive_text[1], sizeof s->keepalive_text[1], "%d", interval);
    snprintf(s->keepalive_text[2], sizeof s->keepalive_text[2], "%d", 3);
    snprintf(s->keepalive_text[3], sizeof s->keepalive_text[3], "%d", t);
    add_keyword(s, "keepalives", "1");
    add_keyword(s, "keepalives_idle", s->keepalive_text[0]);
    add_keyword(s, "keepalives_interval", s->keepalive_text[1]);
    add_keyword(s, "keepalives_count", s->keepalive_text[2]);
    add_keyword(s, "tcp_user_timeout", s->keepalive_text[3]);
}

/* The keyword/value arrays of every connect: the fallback application name first (so the
 * conninfo's own wins), the conninfo's options and its password given apart, keepalives,
 * and hostaddr when the host name is resolved here. -1 when out of memory. */
static int build_keywords(store_t *s)
{
    size_t n = connstr_pg_params(s->conninfo, NULL, NULL, 0);
    s->keywords_cap = n + STORE_EXTRA_KEYWORDS;
    s->keywords = calloc(s->keywords_cap, sizeof *s->keywords);
    s->values = calloc(s->keywords_cap, sizeof *s->values);
    if (s->keywords == NULL || s->values == NULL)
        return -1;
    s->keywords[0] = "fallback_application_name";
    s->values[0] = "retryq-worker";
    s->nkeywords = 1 + connstr_pg_params(s->conninfo, s->keywords + 1, s->values + 1, n);
    add_keepalives(s);
    /* One host name and no hostaddr: resolve it ourselves. (Several hosts, "h1,h2", are
     * left to libpq, which would look them up blocking; see docs/operations.md.) */
    const char *host = connstr_pg_value(s->conninfo, "host");
    if (host != NULL && connstr_pg_value(s->conninfo, "hostaddr") == NULL &&
        strchr(host, ',') == NULL && resolve_is_name(host) && s->opts.resolver != NULL) {
        if ((s->resolve_host = strdup(host)) == NULL)
            return -1;
        add_keyword(s, "hostaddr", s->hostaddr);
    }
    s->keywords[s->nkeywords] = NULL;
    s->values[s->nkeywords] = NULL;
    return 0;
}

/* The conninfo's connect_timeout (seconds, as libpq reads it: at least 2), or the default. */
static int connect_timeout_of(const connstr_pg_t *conninfo)
{
    const char *text = connstr_pg_value(conninfo, "connect_timeout");
    long t = text != NULL ? strtol(text, NULL, 10) : 0;
    if (t <= 0)
        return STORE_CONNECT_TIMEOUT_MS;
    return (int)(t < 2 ? 2000 : (t > 3600 ? 3600000 : t * 1000));
}

/* SET statement_timeout / lock_timeout, run first on every connection; 0 or -1 (OOM). */
static int build_setup_sql(store_t *s)
{
    if (s->opts.query_timeout_ms <= 0 && s->opts.lock_timeout_ms <= 0)
        return 0;
    char sql[128];
    snprintf(sql, sizeof sql, "SET statement_timeout = %d; SET lock_timeout = %d",
             s->opts.query_timeout_ms > 0 ? s->opts.query_timeout_ms : 0,
             s->opts.lock_timeout_ms > 0 ? s->opts.lock_timeout_ms : 0);
    s->setup_sql = strdup(sql);
    return s->setup_sql != NULL ? 0 : -1;
}

/* The kick event and pool_size closed connections with their timers; -1 when out of memory. */
static int build_pool(store_t *s, int pool_size)
{
    s->kick = event_new(s->base, -1, 0, kick_cb, s);
    s->conns = calloc((size_t)pool_size, sizeof *s->conns);
    if (s->kick == NULL || s->conns == NULL)
        return -1;
    s->nconns = pool_size;
    for (int i = 0; i < pool_size; i++) {
        conn_t *c = &s->conns[i];
        c->store = s;
        c->fd = -1;
        c->state = CONN_DOWN;
        backoff_init(&c->backoff, STORE_BACKOFF_FIRST_MS, STORE_BACKOFF_CAP_MS);
        c->timer = evtimer_new(s->base, conn_timer_cb, c);
        if (c->timer == NULL)
            return -1;
    }
    return 0;
}

store_t *store_new(struct event_base *base, const char *conninfo, int pool_size, char *err,
                   size_t errcap)
{
    return store_new_opts(base, conninfo, pool_size, NULL, err, errcap);
}

store_t *store_new_opts(struct event_base *base, const char *conninfo, int pool_size,
                        const store_options_t *opts, char *err, size_t errcap)
{
    store_t *s = NULL;
    connstr_pg_t *parsed = NULL;
    char why[STORE_ERROR_CAP];
    if (base == NULL || conninfo == NULL) {
        snprintf(err, errcap, "no event loop or no database connection string");
        return NULL;
    }
    if (pool_size < 1 || pool_size > STORE_POOL_MAX) {
        snprintf(err, errcap, "database pool size must be 1..%d, not %d", STORE_POOL_MAX,
                 pool_size);
        return NULL;
    }
    parsed = connstr_pg_parse(conninfo, why, sizeof why);
    if (parsed == NULL) {
        snprintf(err, errcap, "invalid database connection string: %s", why);
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        connstr_pg_free(parsed);
        goto oom;
    }
    s->conninfo = parsed;
    s->base = base;
    if (opts != NULL)
        s->opts = *opts;
    s->opts.password = NULL; /* copied into the conninfo, not kept */
    if (s->opts.pipeline_depth <= 0)
        s->opts.pipeline_depth = STORE_PIPELINE_DEPTH;
    if (opts != NULL && opts->password != NULL && connstr_pg_set_password(parsed, opts->password) != 0)
        goto oom;
    s->connect_timeout_ms = connect_timeout_of(parsed);
    if (build_keywords(s) < 0 || build_setup_sql(s) < 0)
        goto oom;
    backoff_seed(&s->rng);
    if (build_pool(s, pool_size) < 0)
        goto oom;
    for (int i = 0; i < pool_size; i++)
        conn_start(&s->conns[i]);
    return s;

oom:
    snprintf(err, errcap, "out of memory creating the database pool");
    store_free(s);
    return NULL;
}

int store_register(store_t *store, const char *sql, int nparams)
{
    return store_register_flags(store, sql, nparams, 0);
}

int store_register_flags(store_t *store, const char *sql, int nparams, unsigned flags)
{
    if (store == NULL || sql == NULL || nparams < 0 || nparams > STORE_PARAMS_MAX ||
        store->exec_started)
        return -1;
    if (store->nstmts == store->stmts_cap) {
        int cap = store->stmts_cap == 0 ? 8 : store->stmts_cap * 2;
        statement_t *grown = realloc(store->stmts, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        store->stmts = grown;
        store->stmts_cap = cap;
    }
    statement_t *st = &store->stmts[store->nstmts];
    st->sql = strdup(sql);
    if (st->sql == NULL)
        return -1;
    st->nparams = nparams;
    st->flags = flags;
    snprintf(st->name, sizeof st->name, "rq_%d", store->nstmts);
    int id = store->nstmts++;
    /* Connections already ready (the loop ran before registration) prepare it now; no
     * query has been queued yet, so every ready connection is idle. */
    while (store->idle != NULL) {
        conn_t *c = store->idle;
        idle_remove(store, c);
        store->nready--;
        /* Statements are prepared outside pipeline mode; conn_ready enters it again.
         * Nothing has run on the connection, so leaving cannot fail for pending results. */
        if (c->pipeline && PQexitPipelineMode(c->pg) != 1) {
            (void)conn_broken(c, "could not leave pipeline mode to prepare a statement", "");
            continue;
        }
        c->pipeline = false;
        if (!conn_arm_connect_deadline(c))
            continue;
        (void)conn_prepare_next(c); /* no query on it: no callback can run */
    }
    return id;
}

void store_free(store_t *store)
{
    if (store == NULL)
        return;
    if (!store->freed) {
        for (int i = 0; store->conns != NULL && i < store->nconns; i++) {
            conn_t *c = &store->conns[i];
            conn_close(c);
            if (c->timer != NULL)
                event_free(c->timer);
            c->timer = NULL;
            while (c->req != NULL) {
                request_t *next = c->req->next;
                free(c->req);
                c->req = next;
            }
            c->req_tail = NULL;
            c->inflight = 0;
        }
        request_t *r;
        while ((r = queue_pop(store)) != NULL)
            free(r);
        if (store->kick != NULL)
            event_free(store->kick);
        store->kick = NULL;
        store->idle = NULL;
        store->nready = 0;
        store->nrunning = 0;
        store->freed = true;
    }
    /* Inside a callback: deliver() finishes the job once the callback has returned. */
    if (store->depth > 0)
        return;
    for (int i = 0; i < store->nstmts; i++)
        free(store->stmts[i].sql);
    free(store->stmts);
    free(store->conns);
    free(store->setup_sql);
    free(store->resolve_host);
    free(store->keywords);
    free(store->values);
    connstr_pg_free(store->conninfo);
    free(store);
}

/* ------------------------------------------------------------------ state */

void store_set_state_callback(store_t *store, void (*fn)(void *arg), void *arg)
{
    store->state_fn = fn;
    store->state_arg = arg;
}

bool store_connected(const store_t *store)
{
    return store != NULL && store->nready > 0;
}

size_t store_pending(const store_t *store)
{
    return store != NULL ? store->nqueued + store->nrunning : 0;
}

const char *store_last_error(const store_t *store)
{
    return store != NULL ? store->last_error : "";
}

bool store_sqlstate_is_connection(const char *sqlstate)
{
    if (sqlstate == NULL)
        return false;
    return strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P01") == 0 ||
           strcmp(sqlstate, "57P02") == 0 || strcmp(sqlstate, "57P03") == 0;
}

bool store_sqlstate_is_retryable(const char *sqlstate)
{
    return sqlstate != NULL && (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}
