/*
 * The synchronous client (struct retryq_client, client.h): settings from options or the
 * environment, one hiredis connection and one libpq connection, each opened on first use
 * and dropped after an I/O failure so the next call reconnects. Also the producer side of
 * the queue: enqueue and enqueue_raw (LPUSH; the worker takes from the right).
 *
 * Every Redis reply goes through checked_reply(), the one place where NULL replies
 * (I/O errors), error replies and unexpected reply types become a retryq_error_t.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "client.h"

#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379"
#define DEFAULT_TIMEOUT_MS 5000
#define ENCODED_JOB_MAX 1024 /* the longest valid job encodes to about 600 bytes */

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
    if (u->password[0] != '\0' && u->user[0] != '\0')
        rc_code = handshake_command(rc, "AUTH", redisCommand(rc, "AUTH %s %s", u->user, u->password), err);
    else if (u->password[0] != '\0')
        rc_code = handshake_command(rc, "AUTH", redisCommand(rc, "AUTH %s", u->password), err);
    if (rc_code == RETRYQ_OK && u->db != 0)
        rc_code = handshake_command(rc, "SELECT", redisCommand(rc, "SELECT %d", u->db), err);
    return rc_code;
}

static redisContext *redis_connect(const retryq_client_t *client, retryq_error_t *err)
{
    const retryq_redis_url_t *u = &client->redis;
    struct timeval connect_tv = timeval_of_ms(client->connect_timeout_ms);
    redisContext *rc = u->is_unix ? redisConnectUnixWithTimeout(u->path, connect_tv)
                                  : redisConnectWithTimeout(u->host, u->port, connect_tv);
    char where[400];
    if (u->is_unix)
        snprintf(where, sizeof where, "%s", u->path);
    else
        snprintf(where, sizeof where, strchr(u->host, ':') ? "[%s]:%d" : "%s:%d", u->host, u->port);
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

redisReply *rq_client_command(retryq_client_t *client, int type, retryq_error_t *err,
                              const char *fmt, ...)
{
    redisContext *rc = rq_client_redis(client, err);
    if (rc == NULL)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = redisvCommand(rc, fmt, ap);
    va_end(ap);
    redisReply *checked = checked_reply(rc, reply, type, fmt, err);
    if (reply == NULL)
        rq_client_redis_reset(client);
    return checked;
}

redisReply *rq_client_command_argv(retryq_client_t *client, int type, retryq_error_t *err, int argc,
                                   const char **argv, const size_t *argvlen)
{
    redisContext *rc = rq_client_redis(client, err);
    if (rc == NULL)
        return NULL;
    redisReply *reply = redisCommandArgv(rc, argc, argv, argvlen);
    redisReply *checked = checked_reply(rc, reply, type, argv[0], err);
    if (reply == NULL)
        rq_client_redis_reset(client);
    return checked;
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
    /* The URL comes last so that its own connect_timeout, if any, wins. */
    char timeout[16];
    int ms = client->connect_timeout_ms;
    snprintf(timeout, sizeof timeout, "%d", ms / 1000 + (ms % 1000 != 0));
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const values[] = {timeout, "retryq", client->database_url, NULL};
    PGconn *pg = PQconnectdbParams(keys, values, 1);
    if (pg == NULL) {
        rq_error(err, RETRYQ_ERR_DATABASE, "cannot connect to PostgreSQL: out of memory");
        return NULL;
    }
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
