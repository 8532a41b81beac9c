/*
 * Connection strings: the one module that parses, validates and redacts them, shared by
 * libretryq (the client), the retryq CLI and the worker. Two files, one owner:
 *
 *   src/lib/connstr.c         Redis URLs (retryq's own parser) and PostgreSQL conninfo
 *                             (libpq's PQconninfoParse), plus the rule for text that no
 *                             parser accepts;
 *   src/worker/connstr_router.c  the router URL, read by libcurl's URL API. It lives in
 *                             the worker because only the worker talks to the router and
 *                             libretryq must not link libcurl.
 *
 * The rules every function here follows:
 *  - A secret is what the parser itself reads as one: the Redis URL's password, libpq's
 *    options marked secret (password, sslpassword), curl's URL password. Nothing else is
 *    guessed at.
 *  - A string is shown as given when its parser found no secret in it; otherwise it is
 *    rebuilt from what the parser read, with every secret shown as ***. Text that no
 *    parser accepts (quoted in refusals) goes through connstr_redact_text, which hides
 *    more than any parser could read as a password.
 *  - A password read from a file is never spliced into a string: Redis gets it in the
 *    parsed URL (hiredis sends AUTH after connecting), libpq as its own `password`
 *    keyword next to the other options (PQconnectStartParams keyword/value arrays).
 *  - Messages never repeat a secret: they name the rule broken, and libpq's own parser
 *    message is shown only with its quoted parts starred when the text may hold one.
 */
#ifndef RETRYQ_LIB_CONNSTR_H
#define RETRYQ_LIB_CONNSTR_H

#include <stdbool.h>
#include <stddef.h>

#include "retryq/retryq.h"

/* ------------------------------------------------------------------ any text */

/*
 * Copies text that no parser accepted into buf (always NUL-terminated, cut at cap) with
 * two things shown as ***: the password of a "scheme://user:password@" user information
 * (from the first ':' after the first "://" up to the last '@' of the whole text, so a
 * password holding an unencoded '/', '?', '#' or '@' is hidden too), and everything
 * after the first "password" (any case) and the blanks or '=' that follow it. Returns
 * true when anything was hidden.
 */
bool connstr_redact_text(const char *text, char *buf, size_t cap);

/* ------------------------------------------------------------------ Redis */

/*
 * The parsed form is retryq_redis_url_t (include/retryq/retryq.h): one host and port or
 * a socket path, user, password, database. The Sentinel form
 * (redis+sentinel://h1:p1,h2:p2/master[/db], sentinel ports 26379 by default) fills the
 * endpoint list and the master name, the first sentinel staying in host/port; the
 * userinfo and the database are the data nodes' (the primary found through the
 * sentinels). A Cluster form (redis+cluster://h1:p1,h2:p2) would fill the same list.
 * The sentinels' own password is never in the URL text: connstr_redis_set_sentinel_password
 * puts it into the parsed form (RETRYQ_REDIS_SENTINEL_PASSWORD or its _FILE variant).
 */

/* The URL may name a user without a password ("redis://app@cache"): the password comes
 * from a file. A URL that carries a password of its own (even an empty one after ':')
 * is then answered with CONNSTR_REDIS_HOLDS_PASSWORD once the rest of it is valid. */
#define CONNSTR_REDIS_PASSWORD_ELSEWHERE 1u
#define CONNSTR_REDIS_HOLDS_PASSWORD 1

/* retryq_redis_url_parse with flags: RETRYQ_OK, CONNSTR_REDIS_HOLDS_PASSWORD, or
 * RETRYQ_ERR_INVALID with err->message "redis URL: <rule>" (never the URL). */
int connstr_redis_parse(const char *url, unsigned flags, retryq_redis_url_t *out,
                        retryq_error_t *err) RETRYQ_MUST_CHECK;
/* Puts a password (read from a file, as it is: nothing is decoded) into a parsed URL;
 * RETRYQ_ERR_INVALID when it does not fit. */
int connstr_redis_set_password(retryq_redis_url_t *u, const char *password,
                               retryq_error_t *err) RETRYQ_MUST_CHECK;
/* Writes the parsed URL, password shown as ***, in a form that parses back to the same
 * fields: redis://[[user]:***@]host:port[/db], unix://[[user]:***@]/path[?db=N] or
 * redis+sentinel://[[user]:***@]h1:p1,.../master[/db] (the sentinel password is never
 * shown: it is not part of the URL). */
void connstr_redis_format(const retryq_redis_url_t *u, char *buf, size_t cap);
/* Puts the sentinels' password into a parsed redis+sentinel:// URL; RETRYQ_ERR_INVALID
 * when it does not fit, or when the URL is not a Sentinel one. */
int connstr_redis_set_sentinel_password(retryq_redis_url_t *u, const char *password,
                                        retryq_error_t *err) RETRYQ_MUST_CHECK;
/* The AUTH command for a sentinel: {"AUTH", password}; 0 when no sentinel password. */
int connstr_redis_sentinel_auth(const retryq_redis_url_t *u, const char *argv[2]);
/* "host:port" (IPv6 in []) for messages and logs. */
void connstr_redis_address(const char *host, int port, char *buf, size_t cap);
/* The AUTH command the URL asks for, as hiredis arguments: {"AUTH", [user,] password}.
 * Returns the argument count, 0 when the URL has no password (no AUTH). */
int connstr_redis_auth(const retryq_redis_url_t *u, const char *argv[3]);

/* ------------------------------------------------------------------ PostgreSQL */

/* A conninfo string (postgresql:// or postgres:// URI, or key=value pairs) as libpq's
 * PQconninfoParse read it, and a password given apart from it. */
typedef struct connstr_pg connstr_pg_t;

/* NULL when text is a connection string libpq accepts; else the rule it breaks ("must
 * start with postgresql:// or postgres://", ...), for "<setting>: <rule> (got ...)". */
const char *connstr_pg_check(const char *text);
/* Parses text (no connection is made, no default is filled in). NULL on failure with err
 * holding libpq's reason, one line, with its quoted parts starred when the text may hold
 * a password (or "out of memory"). Free with connstr_pg_free. */
connstr_pg_t *connstr_pg_parse(const char *text, char *err, size_t errcap);
/* Wipes the password given apart and frees. NULL is fine. */
void connstr_pg_free(connstr_pg_t *pg);

/* The value libpq read for keyword (the password given apart wins for "password"), NULL
 * when unset or empty. The string belongs to pg. */
const char *connstr_pg_value(const connstr_pg_t *pg, const char *keyword);
/* True when the text itself sets a password (libpq's reading: a URI's user information or
 * ?password=, or a password= pair). */
bool connstr_pg_has_password(const connstr_pg_t *pg);
/* Gives libpq this password as its `password` keyword, over any in the text; 0, or -1
 * when out of memory. The copy is wiped by connstr_pg_free. */
int connstr_pg_set_password(connstr_pg_t *pg, const char *password) RETRYQ_MUST_CHECK;
/*
 * The options as keyword/value pairs for PQconnectStartParams / PQconnectdbParams with
 * expand_dbname 0 (the text itself is never given to libpq): every option the text set,
 * then the password given apart. Fills at most cap pairs and returns how many there are
 * (so a call with cap 0 counts them); the arrays are not NULL-terminated. The strings
 * belong to pg.
 */
size_t connstr_pg_params(const connstr_pg_t *pg, const char **keywords, const char **values,
                         size_t cap);
/* Writes the string with every secret shown as ***: as given when libpq read none and no
 * password was given apart, else rebuilt from libpq's reading (a URI as a URI, key=value
 * pairs as pairs: host, hostaddr, port, dbname, user, password first) so that it parses
 * back to the same options. */
void connstr_pg_format(const connstr_pg_t *pg, char *buf, size_t cap);
/* connstr_pg_format of any text: connstr_redact_text when libpq refuses it. */
void connstr_pg_redact(const char *text, char *buf, size_t cap);

#endif
