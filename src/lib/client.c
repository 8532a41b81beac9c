/*
 * The synchronous client (struct retryq_client, client.h): settings from options or the
 * environment, one hiredis connection and one libpq connection, each opened on first use
 * and dropped after an I/O failure so the next call reconnects. Also the producer side of
 * the queue: enqueue and enqueue_raw (LPUSH; the worker takes from the right).
 *
 * Every Redis reply goes through checked_reply(), the one place where NULL replies
 * (I/O errors), error replies and unexpected reply types become a retryq_error_t.
 *
 * redis+sentinel://: the first use asks the sentinels in turn (each bounded by the
 * connect and command timeouts) for the primary, connects there and checks ROLE; a lost
 * connection or a READONLY reply drops it, so the next call asks again. The sentinels'
 * password comes from RETRYQ_REDIS_SENTINEL_PASSWORD or the first line of the file named
 * by RETRYQ_REDIS_SENTINEL_PASSWORD_FILE.
 *
 * redis+cluster://: the first use asks the node a MOVED named last, then the seeds, then
 * the nodes the last CLUSTER SLOTS answer listed, for the primary serving the queue's slot
 * (cluster.h), and connects there. A -MOVED reply re-connects to the node it names and
 * sends the command again; -ASK, -TRYAGAIN and -CLUSTERDOWN (the slot is being migrated,
 * the cluster fails over) send it again after a short pause.
 */
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "client.h"
#include "connstr.h"

#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379"
#define DEFAULT_TIMEOUT_MS 5000
#define ENCODED_JOB_MAX 1024 /* the longest valid job encodes to about 600 bytes */
#define CLUSTER_REDIRECTS_MAX 5 /* MOVED followed at once for one command; then with pauses */
#define CLUSTER_PAUSE_MS 50     /* between two tries after ASK, TRYAGAIN, CLUSTERDOWN */

/* ------------------------------------------------------------ settings */

/* The option when given, else the environment variable when set, else the fallback. */
static const char *setting(const char *given, const char *env, const char *fallback)
{
    const char *v = given != NULL && given[0] != '\0' ? given : getenv(env);
    return v != NULL && v[0] != '\0' ? v : fallback;
}

static int timeout_setting(int given, const char *name, int *out, retryq_error_t *err)
{
    if (given < 0)
        return rq_error(err, RETRYQ_ERR_INVALID, "%s: must be >= 0 milliseconds (0: %d)", name,
                        DEFAULT_TIMEOUT_MS);
    *out = given == 0 ? DEFAULT_TIMEOUT_MS : given;
    return RETRYQ_OK;
}

static int copy_setting(char **dst, const char *src, retryq_error_t *err)
{
    if (src == NULL)
        return RETRYQ_OK;
    *dst = strdup(src);
    return *dst != NULL ? RETRYQ_OK : rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
}

/* The sentinels' password from the environment, for a redis+sentinel:// URL. */
static int sentinel_password_setting(retryq_redis_url_t *u, retryq_error_t *err)
{
    const char *text = getenv("RETRYQ_REDIS_SENTINEL_PASSWORD");
    const char *path = getenv("RETRYQ_REDIS_SENTINEL_PASSWORD_FILE");
    text = text != NULL && text[0] != '\0' ? text : NULL;
    path = path != NULL && path[0] != '\0' ? path : NULL;
    if (text == NULL && path == NULL)
        return RETRYQ_OK;
    if (!u->is_sentinel)
        return RETRYQ_OK; /* shared environments: only a Sentinel URL uses it */
    if (text != NULL && path != NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "RETRYQ_REDIS_SENTINEL_PASSWORD and "
                        "RETRYQ_REDIS_SENTINEL_PASSWORD_FILE are both set; set one");
    if (text != NULL)
        return connstr_redis_set_sentinel_password(u, text, err);
    char line[1026];
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "RETRYQ_REDIS_SENTINEL_PASSWORD_FILE: cannot "
                        "read \"%s\"", path);
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[got ? strcspn(line, "\r\n") : 0] = '\0';
    int rc = line[0] == '\0'
                 ? rq_error(err, RETRYQ_ERR_INVALID, "RETRYQ_REDIS_SENTINEL_PASSWORD_FILE: the "
                            "first line of \"%s\" is empty", path)
                 : connstr_redis_set_sentinel_password(u, line, err);
    memset(line, 0, sizeof line);
    return rc;
}

retryq_client_t *retryq_client_new(const retryq_options_t *opts, retryq_error_t *err)
{
    static const retryq_options_t none = {0};
    const retryq_options_t *o = opts != NULL ? opts : &none;
    retryq_client_t *client = calloc(1, sizeof *client);
    if (client == NULL) {
        rq_error(err, RETRYQ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    const char *redis_url = setting(o->redis_url, "RETRYQ_REDIS_URL", DEFAULT_REDIS_URL);
    int rc = timeout_setting(o->connect_timeout_ms, "connect timeout", &client->connect_timeout_ms, err);
    if (rc == RETRYQ_OK)
        rc = timeout_setting(o->command_timeout_ms, "command timeout", &client->command_timeout_ms, err);
    if (rc == RETRYQ_OK)
        rc = retryq_redis_url_parse(redis_url, &client->redis, err);
    if (rc == RETRYQ_OK)
        rc = sentinel_password_setting(&client->redis, err);
    if (rc == RETRYQ_OK)
        rc = retryq_keys_init(&client->keys, setting(o->queue, "RETRYQ_QUEUE", RETRYQ_DEFAULT_QUEUE), err);
    if (rc == RETRYQ_OK)
        rc = copy_setting(&client->redis_url, redis_url, err);
    if (rc == RETRYQ_OK)
        rc = copy_setting(&client->database_url, setting(o->database_url, "RETRYQ_DATABASE_URL", NULL), err);
    if (rc != RETRYQ_OK) {
        retryq_client_free(client);
        return NULL;
    }
    return client;
}

void retryq_client_free(retryq_client_t *client)
{
    if (client == NULL)
        return;
    rq_client_redis_reset(client);
    rq_client_pg_reset(client);
    free(client->redis_url);
    free(client->database_url);
    free(client);
}

const retryq_keys_t *retryq_client_keys(const retryq_client_t *client)
{
    return client != NULL ? &client->keys : NULL;
}

/* ------------------------------------------------------------ Redis */

static struct timeval timeval_of_ms(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* The one reply check. `command` is the command text; its first word names it. */
static redisReply *checked_reply(const redisContext *rc, redisReply *reply, int type,
                                 const char *command, retryq_error_t *err)
{
    int name_len = (int)strcspn(command, " ");
    if (reply == NULL) {
        rq_error(err, RETRYQ_ERR_REDIS, "Redis %.*s failed: %s", name_len, command,
                 rc->errstr[0] != '\0' ? rc->errstr : "connection lost");
        return NULL;
    }
    if (reply->type == REDIS_REPLY_ERROR)
        rq_error(err, RETRYQ_ERR_REDIS, "Redis %.*s failed: %s", name_len, command, reply->str);
    else if (type >= 0 && reply->type != type)
        rq_error(err, RETRYQ_ERR_REDIS, "Redis %.*s: unexpected reply (type %d)", name_len, command,
                 reply->type);
    else
        return reply;
    freeReplyObject(reply);
    return NULL;
}

static int handshake_command(redisContext *rc, const char *command, redisReply *reply,
                             retryq_error_t *err)
{
    reply = checked_reply(rc, reply, REDIS_REPLY_STATUS, command, err);
    if (reply == NULL)
        return RETRYQ_ERR_REDIS;
    freeReplyObject(reply);
    return RETRYQ_OK;
}

/* AUTH [user] password and SELECT db, as the URL asks. */
static int redis_handshake(const retryq_redis_url_t *u, redisContext *rc, retryq_error_t *err)
{
    int rc_code = RETRYQ_OK;
    const char *auth[3];
    int nauth = connstr_redis_auth(u, auth);
    if (nauth > 0)
        rc_code = handshake_command(rc, "AUTH", redisCommandArgv(rc, nauth, auth, NULL), err);
    if (rc_code == RETRYQ_OK && u->db != 0)
        rc_code = handshake_command(rc, "SELECT", redisCommand(rc, "SELECT %d", u->db), err);
    return rc_code;
}

/* A TCP connection with both timeouts set; NULL with why filled. */
static redisContext *tcp_connect(const retryq_client_t *client, const char *host, int port,
                                 char *why, size_t cap)
{
    redisContext *rc = redisConnectWithTimeout(host, port, timeval_of_ms(client->connect_timeout_ms));
    if (rc == NULL) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    if (rc->err == 0 && redisSetTimeout(rc, timeval_of_ms(client->command_timeout_ms)) == REDIS_OK)
        return rc;
    snprintf(why, cap, "%s", rc->errstr);
    redisFree(rc);
    return NULL;
}

/* Asks one sentinel for the primary's address; false with why filled. */
static bool ask_sentinel(const retryq_client_t *client, const retryq_redis_endpoint_t *e,
                         char *host, size_t host_cap, int *port, char *why, size_t cap)
{
    const retryq_redis_url_t *u = &client->redis;
    redisContext *rc = tcp_connect(client, e->host, e->port, why, cap);
    if (rc == NULL)
        return false;
    bool ok = false;
    const char *auth[2];
    int nauth = connstr_redis_sentinel_auth(u, auth);
    redisReply *r = nauth > 0 ? redisCommandArgv(rc, nauth, auth, NULL) : NULL;
    if (nauth > 0 && (r == NULL || r->type == REDIS_REPLY_ERROR)) {
        snprintf(why, cap, "AUTH: %s", r != NULL ? r->str : rc->errstr);
        goto done;
    }
    freeReplyObject(r);
    const char *ask[] = {"SENTINEL", "get-master-addr-by-name", u->master};
    r = redisCommandArgv(rc, 3, ask, NULL);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(why, cap, "%s", r != NULL ? r->str : rc->errstr);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING ||
               !rq_copy(host, host_cap, r->element[0]->str) ||
               (*port = atoi(r->element[1]->str)) < 1 || *port > 65535) {
        snprintf(why, cap, "does not know master %s", u->master);
    } else {
        ok = true;
    }
done:
    if (r != NULL)
        freeReplyObject(r);
    redisFree(rc);
    return ok;
}

/* ROLE's first element is "master"; false with why filled. */
static bool is_primary(redisContext *rc, char *why, size_t cap)
{
    redisReply *r = redisCommand(rc, "ROLE");
    bool ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
              r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
    if (!ok)
        snprintf(why, cap, "not a primary (ROLE %s)",
                 r == NULL ? rc->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str
                 : r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                         r->element[0]->type == REDIS_REPLY_STRING
                     ? r->element[0]->str
                     : "?");
    if (r != NULL)
        freeReplyObject(r);
    return ok;
}

/* The sentinels in turn until one names a primary that says it is one. */
static redisContext *sentinel_connect(const retryq_client_t *client, retryq_error_t *err)
{
    const retryq_redis_url_t *u = &client->redis;
    char why[300] = "", where[300] = "";
    for (int i = 0; i < u->endpoint_count; i++) {
        char host[256], step[256] = "";
        int port = 0;
        connstr_redis_address(u->endpoints[i].host, u->endpoints[i].port, where, sizeof where);
        if (!ask_sentinel(client, &u->endpoints[i], host, sizeof host, &port, step, sizeof step)) {
            snprintf(why, sizeof why, "sentinel %s: %s", where, step);
            continue;
        }
        connstr_redis_address(host, port, where, sizeof where);
        redisContext *rc = tcp_connect(client, host, port, step, sizeof step);
        if (rc != NULL && redis_handshake(u, rc, err) != RETRYQ_OK) {
            redisFree(rc); /* AUTH or SELECT refused by the primary: err says why */
            return NULL;
        }
        if (rc != NULL && is_primary(rc, step, sizeof step)) /* after AUTH: ROLE needs it */
            return rc;
        snprintf(why, sizeof why, "primary %s named by a sentinel: %s", where, step);
        if (rc != NULL)
            redisFree(rc);
    }
    rq_error(err, RETRYQ_ERR_REDIS, "cannot find the Redis primary of master %s through %d "
             "sentinel(s): %s", u->master, u->endpoint_count, why);
    return NULL;
}

/* Asks one node for CLUSTER SLOTS and picks the primary of the queue's slot; false with
 * why filled. */
static bool ask_cluster_node(retryq_client_t *client, const char *node_host, int node_port,
                             char *host, size_t host_cap, int *port, char *why, size_t cap)
{
    retryq_error_t step = {0};
    redisContext *rc = tcp_connect(client, node_host, node_port, why, cap);
    if (rc == NULL)
        return false;
    bool ok = false;
    if (redis_handshake(&client->redis, rc, &step) != RETRYQ_OK) {
        snprintf(why, cap, "%s", step.message);
        goto done;
    }
    redisReply *r = redisCommand(rc, "CLUSTER SLOTS");
    int slot = cluster_keyslot(client->keys.pending, strlen(client->keys.pending));
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        snprintf(why, cap, "CLUSTER SLOTS: %s", r != NULL ? r->str : rc->errstr);
    else if (!(ok = cluster_slot_owner(r, slot, node_host, host, host_cap, port, client->cluster_seen,
                                       (int)(sizeof client->cluster_seen / sizeof client->cluster_seen[0]),
                                       &client->cluster_seen_count)))
        snprintf(why, cap, "no node serves slot %d of queue %s", slot, client->keys.pending);
    if (r != NULL)
        freeReplyObject(r);
done:
    redisFree(rc);
    return ok;
}

/* The node a MOVED named, the seeds, then the nodes seen last, until one names the owner
 * of the queue's slot; then the connection to that owner. */
static redisContext *cluster_connect(retryq_client_t *client, retryq_error_t *err)
{
    const retryq_redis_url_t *u = &client->redis;
    char why[400] = "", where[300];
    cluster_node_t ask[1 + RETRYQ_REDIS_MAX_ENDPOINTS + 16];
    int n = 0;
    if (client->cluster_hint.port != 0)
        ask[n++] = client->cluster_hint;
    for (int i = 0; i < u->endpoint_count; i++) {
        rq_copy(ask[n].host, sizeof ask[n].host, u->endpoints[i].host);
        ask[n++].port = u->endpoints[i].port;
    }
    for (int i = 0; i < client->cluster_seen_count; i++)
        ask[n++] = client->cluster_seen[i];
    for (int i = 0; i < n; i++) {
        char host[256], step[300] = "";
        int port = 0;
        connstr_redis_address(ask[i].host, ask[i].port, where, sizeof where);
        if (!ask_cluster_node(client, ask[i].host, ask[i].port, host, sizeof host, &port, step,
                              sizeof step)) {
            snprintf(why, sizeof why, "node %s: %s", where, step);
            continue;
        }
        connstr_redis_address(host, port, where, sizeof where);
        redisContext *rc = tcp_connect(client, host, port, step, sizeof step);
        if (rc != NULL && redis_handshake(u, rc, err) != RETRYQ_OK) {
            redisFree(rc);
            return NULL;
        }
        if (rc != NULL)
            return rc;
        snprintf(why, sizeof why, "primary %s of the queue's slot: %s", where, step);
    }
    rq_error(err, RETRYQ_ERR_REDIS, "cannot find the Redis Cluster node serving queue %s through "
             "%d node(s): %s", client->keys.pending, n, why);
    return NULL;
}

static redisContext *redis_connect(retryq_client_t *client, retryq_error_t *err)
{
    const retryq_redis_url_t *u = &client->redis;
    if (u->is_sentinel)
        return sentinel_connect(client, err);
    if (u->is_cluster)
        return cluster_connect(client, err);
    struct timeval connect_tv = timeval_of_ms(client->connect_timeout_ms);
    redisContext *rc = u->is_unix ? redisConnectUnixWithTimeout(u->path, connect_tv)
                                  : redisConnectWithTimeout(u->host, u->port, connect_tv);
    char where[400];
    if (u->is_unix)
        snprintf(where, sizeof where, "%s", u->path);
    else
        connstr_redis_address(u->host, u->port, where, sizeof where);
    if (rc == NULL) {
        rq_error(err, RETRYQ_ERR_REDIS, "cannot connect to Redis at %s: out of memory", where);
        return NULL;
    }
    if (rc->err != 0)
        rq_error(err, RETRYQ_ERR_REDIS, "cannot connect to Redis at %s: %s", where, rc->errstr);
    else if (redisSetTimeout(rc, timeval_of_ms(client->command_timeout_ms)) != REDIS_OK)
        rq_error(err, RETRYQ_ERR_REDIS, "cannot set the Redis command timeout: %s", rc->errstr);
    else if (redis_handshake(u, rc, err) == RETRYQ_OK)
        return rc;
    redisFree(rc);
    return NULL;
}

redisContext *rq_client_redis(retryq_client_t *client, retryq_error_t *err)
{
    if (client->rc == NULL)
        client->rc = redis_connect(client, err);
    return client->rc;
}

void rq_client_redis_reset(retryq_client_t *client)
{
    if (client->rc != NULL)
        redisFree(client->rc);
    client->rc = NULL;
}

/* Waits CLUSTER_PAUSE_MS when that still fits in the command timeout counted from
 * `start`; false (no wait) when it does not. */
static bool cluster_pause(const retryq_client_t *client, const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t spent = (int64_t)(now.tv_sec - start->tv_sec) * 1000 +
                    (now.tv_nsec - start->tv_nsec) / 1000000;
    if (spent + CLUSTER_PAUSE_MS > client->command_timeout_ms)
        return false;
    struct timespec pause = {0, CLUSTER_PAUSE_MS * 1000000L};
    nanosleep(&pause, NULL);
    return true;
}

bool rq_client_cluster_again(retryq_client_t *client, const redisReply *reply, int *redirects,
                             const struct timespec *start)
{
    if (!client->redis.is_cluster || reply == NULL || reply->type != REDIS_REPLY_ERROR)
        return false;
    cluster_redirect_kind_t kind;
    int slot, port;
    char host[256];
    if (cluster_redirect_parse(reply->str, &kind, &slot, host, sizeof host, &port) &&
        kind == CLUSTER_MOVED) {
        /* Past the first few, the nodes disagree for a moment (a reshard tells the
         * primaries one after the other, so they can send a client back and forth):
         * each further redirection waits a pause, within the command timeout. */
        if (++*redirects > CLUSTER_REDIRECTS_MAX && !cluster_pause(client, start))
            return false;
        if (host[0] == '\0' && client->rc != NULL && client->rc->tcp.host != NULL)
            rq_copy(host, sizeof host, client->rc->tcp.host);
        rq_copy(client->cluster_hint.host, sizeof client->cluster_hint.host, host);
        client->cluster_hint.port = port;
        rq_client_redis_reset(client);
        return true;
    }
    if (!cluster_retry_later(reply->str) || !cluster_pause(client, start))
        return false;
    if (strncmp(reply->str, "CLUSTERDOWN", 11) == 0)
        rq_client_redis_reset(client); /* the slot may have another owner once it is up */
    return true;
}

/* Sends one formatted command and checks its reply, following a Cluster's redirections
 * (the command text is kept, so it can be sent again). `name` is the command text or its
 * first word, for messages. */
static redisReply *formatted_command(retryq_client_t *client, int type, retryq_error_t *err,
                                     const char *name, const char *cmd, size_t len)
{
    int redirects = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        redisContext *rc = rq_client_redis(client, err);
        if (rc == NULL)
            return NULL;
        redisReply *reply = NULL;
        if (redisAppendFormattedCommand(rc, cmd, len) != REDIS_OK ||
            redisGetReply(rc, (void **)&reply) != REDIS_OK)
            reply = NULL;
        if (rq_client_cluster_again(client, reply, &redirects, &start)) {
            freeReplyObject(reply);
            continue;
        }
        /* READONLY: a demoted primary (a failover); the next call finds the new one. */
        bool readonly = reply != NULL && reply->type == REDIS_REPLY_ERROR &&
                        strncasecmp(reply->str, "READONLY", 8) == 0;
        redisReply *checked = checked_reply(rc, reply, type, name, err);
        if (reply == NULL || readonly)
            rq_client_redis_reset(client);
        return checked;
    }
}

redisReply *rq_client_command(retryq_client_t *client, int type, retryq_error_t *err,
                              const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) {
        rq_error(err, RETRYQ_ERR_NOMEM, "out of memory formatting a Redis command");
        return NULL;
    }
    redisReply *reply = formatted_command(client, type, err, fmt, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return reply;
}

redisReply *rq_client_command_argv(retryq_client_t *client, int type, retryq_error_t *err, int argc,
                                   const char **argv, const size_t *argvlen)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        rq_error(err, RETRYQ_ERR_NOMEM, "out of memory formatting a Redis command");
        return NULL;
    }
    redisReply *reply = formatted_command(client, type, err, argv[0], cmd, (size_t)len);
    redisFreeCommand(cmd);
    return reply;
}

int rq_client_time_ms(retryq_client_t *client, int64_t *now_ms, retryq_error_t *err)
{
    redisReply *r = rq_client_command(client, REDIS_REPLY_ARRAY, err, "TIME");
    if (r == NULL)
        return RETRYQ_ERR_REDIS;
    int rc = RETRYQ_OK;
    if (r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING)
        rc = rq_error(err, RETRYQ_ERR_REDIS, "Redis TIME: unexpected reply");
    else
        *now_ms = strtoll(r->element[0]->str, NULL, 10) * 1000 +
                  strtoll(r->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(r);
    return rc;
}

/* ------------------------------------------------------------ PostgreSQL */

/* libpq messages span lines ("...\n\tIs the server running...\n"): make them one line. */
static void flatten_message(retryq_error_t *err)
{
    if (err == NULL)
        return;
    for (char *p = err->message; *p != '\0'; p++)
        if (*p == '\n' || *p == '\t' || *p == '\r')
            *p = ' ';
    size_t n = strlen(err->message);
    while (n > 0 && err->message[n - 1] == ' ')
        err->message[--n] = '\0';
}

/* PQconnectdbParams with connect_timeout and the fallback name first, then the options
 * the URL sets (connstr.h: libpq's own reading of it), so the URL's own connect_timeout
 * wins. NULL with err filled. */
static PGconn *pg_connect(const retryq_client_t *client, const connstr_pg_t *conninfo,
                          retryq_error_t *err)
{
    size_t n = connstr_pg_params(conninfo, NULL, NULL, 0);
    const char **keys = calloc(n + 3, sizeof *keys), **values = calloc(n + 3, sizeof *values);
    PGconn *pg = NULL;
    if (keys != NULL && values != NULL) {
        char timeout[16];
        int ms = client->connect_timeout_ms;
        snprintf(timeout, sizeof timeout, "%d", ms / 1000 + (ms % 1000 != 0));
        keys[0] = "connect_timeout";
        values[0] = timeout;
        keys[1] = "fallback_application_name";
        values[1] = "retryq";
        (void)connstr_pg_params(conninfo, keys + 2, values + 2, n);
        pg = PQconnectdbParams(keys, values, 0);
    }
    free(keys);
    free(values);
    if (pg == NULL)
        rq_error(err, RETRYQ_ERR_DATABASE, "cannot connect to PostgreSQL: out of memory");
    return pg;
}

PGconn *rq_client_pg(retryq_client_t *client, retryq_error_t *err)
{
    if (client->pg != NULL && PQstatus(client->pg) == CONNECTION_OK)
        return client->pg;
    rq_client_pg_reset(client);
    if (client->database_url == NULL) {
        rq_error(err, RETRYQ_ERR_DATABASE,
                 "no database configured: pass --database-url or set RETRYQ_DATABASE_URL");
        return NULL;
    }
    char why[400];
    connstr_pg_t *conninfo = connstr_pg_parse(client->database_url, why, sizeof why);
    if (conninfo == NULL) {
        rq_error(err, RETRYQ_ERR_DATABASE, "cannot connect to PostgreSQL: %s", why);
        return NULL;
    }
    PGconn *pg = pg_connect(client, conninfo, err);
    connstr_pg_free(conninfo);
    if (pg == NULL)
        return NULL;
    if (PQstatus(pg) != CONNECTION_OK) {
        rq_error(err, RETRYQ_ERR_DATABASE, "cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
        flatten_message(err);
        PQfinish(pg);
        return NULL;
    }
    client->pg = pg;
    return pg;
}

void rq_client_pg_reset(retryq_client_t *client)
{
    if (client->pg != NULL)
        PQfinish(client->pg);
    client->pg = NULL;
}

/* ------------------------------------------------------------ enqueue */

int retryq_enqueue(retryq_client_t *client, const retryq_job_t *job, retryq_error_t *err)
{
    char buf[ENCODED_JOB_MAX];
    int rc = retryq_job_validate(job, RETRYQ_MAX_ATTEMPT, err);
    if (rc != RETRYQ_OK)
        return rc;
    int n = retryq_job_encode(job, buf, sizeof buf);
    if (n < 0)
        return rq_error(err, n, "job: cannot be encoded (%s)", retryq_code_name(n));
    return retryq_enqueue_raw(client, buf, (size_t)n, err);
}

int retryq_enqueue_raw(retryq_client_t *client, const char *payload, size_t len, retryq_error_t *err)
{
    if (client == NULL || payload == NULL)
        return rq_error(err, RETRYQ_ERR_INVALID, "enqueue: missing client or payload");
    redisReply *reply = rq_client_command(client, REDIS_REPLY_INTEGER, err, "LPUSH %s %b",
                                          client->keys.pending, payload, len);
    if (reply == NULL)
        return RETRYQ_ERR_REDIS;
    freeReplyObject(reply);
    return RETRYQ_OK;
}
