/*
 * The connection-string module (src/lib/connstr.c, src/worker/connstr_router.c): text no
 * parser accepts is redacted bluntly; a Redis URL with its password from a file; libpq's
 * reading of a conninfo (checks, its parse error without the password, the keyword/value
 * arrays with a password given apart, the rebuilt redacted form); the router URL checked
 * and redacted by libcurl. (The public Redis parser itself is test_url.c's.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "connstr.h"
#include "connstr_router.h"

typedef struct redaction {
    const char *in, *out;
} redaction_t;

/* Each case through `redact`, then NULL (""), then a buffer of 12 bytes (cut). */
static void check_redactions(void (*redact)(const char *, char *, size_t),
                             const redaction_t *cases, size_t n, const char *cut_in,
                             const char *cut_out)
{
    char buf[256];
    for (size_t i = 0; i < n; i++) {
        redact(cases[i].in, buf, sizeof buf);
        if (strcmp(buf, cases[i].out) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].in, buf, cases[i].out);
    }
    redact(NULL, buf, sizeof buf);
    assert_string_equal(buf, "");
    redact(cut_in, buf, 12);
    assert_string_equal(buf, cut_out);
}

/* ------------------------------------------------------------------ any text */

static void test_text_no_parser_accepts_is_redacted_bluntly(void **state)
{
    static const redaction_t cases[] = {
        {"mysql://app:hunter2@db/app", "mysql://app:***@db/app"},
        {"redis://app@cache:0", "redis://app@cache:0"}, /* a user is no password */
        {"redis://u:p@ss/x@host", "redis://u:***@host"},  /* up to the last '@' */
        {"host=db password=hunter2 colour=blue", "host=db password=***"},
        {"host=db PASSWORD = 'x y' z", "host=db PASSWORD = ***"},
        {"x://u:pw@h/?sslpassword=k&a=b", "x://u:***@h/?sslpassword=***"},
        {"a://u:password@h/db", "a://u:***@h/db"}, /* inside the hidden part: nothing more */
        {"a password://u:pw@h", "a password***"},  /* before it: everything after */
        {"host=db", "host=db"},
        {"", ""},
    };
    char buf[128];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool hidden = connstr_redact_text(cases[i].in, buf, sizeof buf);
        assert_string_equal(buf, cases[i].out);
        assert_int_equal(hidden, strcmp(cases[i].in, cases[i].out) != 0);
    }
    assert_false(connstr_redact_text(NULL, buf, sizeof buf));
    assert_string_equal(buf, "");
    connstr_redact_text("redis://user:secret@host", buf, 12);
    assert_string_equal(buf, "redis://use");
    connstr_redact_text("host=db password=secret", buf, 12);
    assert_string_equal(buf, "host=db pas");
}

/* ------------------------------------------------------------------ Redis */

static void test_redis_password_from_a_file(void **state)
{
    retryq_redis_url_t u;
    retryq_error_t err = {0};
    (void)state;
    /* "user@" alone is complete when the password comes from elsewhere... */
    assert_int_equal(connstr_redis_parse("redis://app@cache:6380/2", CONNSTR_REDIS_PASSWORD_ELSEWHERE,
                                         &u, &err), RETRYQ_OK);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "");
    assert_int_equal(u.port, 6380);
    assert_int_equal(connstr_redis_set_password(&u, "s3cr@t/pw:x", &err), RETRYQ_OK);
    assert_string_equal(u.password, "s3cr@t/pw:x"); /* as it is: nothing decoded */
    const char *argv[3];
    assert_int_equal(connstr_redis_auth(&u, argv), 3);
    assert_string_equal(argv[0], "AUTH");
    assert_string_equal(argv[1], "app");
    assert_string_equal(argv[2], "s3cr@t/pw:x");
    char buf[256];
    connstr_redis_format(&u, buf, sizeof buf);
    assert_string_equal(buf, "redis://app:***@cache:6380/2");
    /* ...but not without it */
    assert_int_equal(connstr_redis_parse("redis://app@cache", 0, &u, &err), RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "[user]:password@"));
    /* a password of its own, even an empty one, once the rest is valid */
    assert_int_equal(connstr_redis_parse("redis://:old@cache", CONNSTR_REDIS_PASSWORD_ELSEWHERE, &u, &err),
                     CONNSTR_REDIS_HOLDS_PASSWORD);
    assert_int_equal(connstr_redis_parse("unix://u:@/run/r.sock", CONNSTR_REDIS_PASSWORD_ELSEWHERE, &u, &err),
                     CONNSTR_REDIS_HOLDS_PASSWORD);
    assert_int_equal(connstr_redis_parse("redis://:old@cache:0", CONNSTR_REDIS_PASSWORD_ELSEWHERE, &u, &err),
                     RETRYQ_ERR_INVALID);
    assert_non_null(strstr(err.message, "port must be"));
    /* one too long for the parsed form */
    char long_password[300];
    memset(long_password, 'x', sizeof long_password - 1);
    long_password[sizeof long_password - 1] = '\0';
    assert_int_equal(connstr_redis_parse("redis://cache", 0, &u, &err), RETRYQ_OK);
    assert_int_equal(connstr_redis_set_password(&u, long_password, &err), RETRYQ_ERR_INVALID);
    assert_string_equal(err.message, "redis URL: the password is longer than 255 bytes");
    assert_string_equal(u.password, "");
    assert_int_equal(connstr_redis_auth(&u, argv), 0);
}

static void test_redis_format_parses_back(void **state)
{
    static const redaction_t cases[] = {
        {"redis://cache", "redis://cache:6379"},
        {"redis://:pw@cache:6380/2", "redis://:***@cache:6380/2"},
        {"redis://us%3Aer:p%40w@[fe80::1%25eth0]:1/0", "redis://us%3Aer:***@[fe80::1%25eth0]:1"},
        {"unix://:pw@/run/re%20dis.sock?db=3", "unix://:***@/run/re%20dis.sock?db=3"},
        {"unix:///tmp/r.sock", "unix:///tmp/r.sock"},
    };
    char buf[256];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        retryq_redis_url_t u, again;
        assert_int_equal(retryq_redis_url_parse(cases[i].in, &u, NULL), RETRYQ_OK);
        connstr_redis_format(&u, buf, sizeof buf);
        assert_string_equal(buf, cases[i].out);
        assert_int_equal(retryq_redis_url_parse(buf, &again, NULL), RETRYQ_OK);
        assert_string_equal(again.host, u.host);
        assert_string_equal(again.user, u.user);
        assert_string_equal(again.path, u.path);
        assert_int_equal(again.db, u.db);
    }
}

static void test_redis_sentinel_url_is_parsed(void **state)
{
    retryq_redis_url_t u, again;
    retryq_error_t err;
    char buf[512];
    (void)state;
    assert_int_equal(retryq_redis_url_parse("redis+sentinel://app:s%40cret@s1:5000,10.0.0.2,"
                                            "[::1]:5002/my-master.1/3", &u, &err), RETRYQ_OK);
    assert_true(u.is_sentinel);
    assert_false(u.is_unix);
    assert_int_equal(u.endpoint_count, 3);
    assert_string_equal(u.endpoints[0].host, "s1");
    assert_int_equal(u.endpoints[0].port, 5000);
    assert_string_equal(u.endpoints[1].host, "10.0.0.2");
    assert_int_equal(u.endpoints[1].port, 26379); /* the sentinel default */
    assert_string_equal(u.endpoints[2].host, "::1");
    assert_int_equal(u.endpoints[2].port, 5002);
    assert_string_equal(u.host, "s1"); /* the first sentinel until a primary is found */
    assert_int_equal(u.port, 5000);
    assert_string_equal(u.master, "my-master.1");
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "s@cret"); /* the data nodes' password */
    assert_int_equal(u.db, 3);
    assert_string_equal(u.sentinel_password, "");
    connstr_redis_format(&u, buf, sizeof buf);
    assert_string_equal(buf, "redis+sentinel://app:***@s1:5000,10.0.0.2:26379,[::1]:5002/my-master.1/3");
    assert_int_equal(connstr_redis_parse(buf, CONNSTR_REDIS_PASSWORD_ELSEWHERE, &again, &err),
                     CONNSTR_REDIS_HOLDS_PASSWORD);
    assert_int_equal(again.endpoint_count, 3);
    assert_string_equal(again.master, "my-master.1");
    retryq_redis_url_redact("redis+sentinel://app:s%40cret@s1:5000,s2/m", buf, sizeof buf);
    assert_string_equal(buf, "redis+sentinel://app:***@s1:5000,s2/m");

    /* the sentinels' password: from the environment or a file, never from the text */
    assert_int_equal(connstr_redis_set_sentinel_password(&u, "sentinel-pw", &err), RETRYQ_OK);
    const char *argv[2];
    assert_int_equal(connstr_redis_sentinel_auth(&u, argv), 2);
    assert_string_equal(argv[1], "sentinel-pw");
    connstr_redis_format(&u, buf, sizeof buf);
    assert_null(strstr(buf, "sentinel-pw"));
    assert_int_equal(retryq_redis_url_parse("redis://h", &u, &err), RETRYQ_OK);
    assert_int_equal(connstr_redis_set_sentinel_password(&u, "x", &err), RETRYQ_ERR_INVALID);
    assert_int_equal(connstr_redis_sentinel_auth(&u, argv), 0);

    /* a password from a file for the data nodes, as for redis:// */
    assert_int_equal(connstr_redis_parse("redis+sentinel://app@s1/m", CONNSTR_REDIS_PASSWORD_ELSEWHERE,
                                         &u, &err), RETRYQ_OK);
    assert_string_equal(u.user, "app");
}

static void test_redis_cluster_url_is_parsed(void **state)
{
    retryq_redis_url_t u;
    retryq_error_t err = {0};
    char buf[600];
    (void)state;
    assert_int_equal(retryq_redis_url_parse("redis+cluster://app:s%40cret@n1:7000,10.0.0.2,[::1]:7002",
                                            &u, &err), RETRYQ_OK);
    assert_true(u.is_cluster);
    assert_false(u.is_sentinel);
    assert_int_equal(u.endpoint_count, 3);
    assert_string_equal(u.endpoints[0].host, "n1");
    assert_int_equal(u.endpoints[0].port, 7000);
    assert_int_equal(u.endpoints[1].port, 6379); /* a data node's default */
    assert_string_equal(u.endpoints[2].host, "::1");
    assert_string_equal(u.host, "n1");
    assert_string_equal(u.password, "s@cret");
    assert_int_equal(u.db, 0);
    connstr_redis_format(&u, buf, sizeof buf);
    assert_string_equal(buf, "redis+cluster://app:***@n1:7000,10.0.0.2:6379,[::1]:7002");
    assert_int_equal(retryq_redis_url_parse("redis+cluster://n1/", &u, &err), RETRYQ_OK);
    static const struct {
        const char *url, *rule;
    } refused[] = {
        {"redis+cluster://n1:7000/0", "takes no database (Redis Cluster has only database 0)"},
        {"redis+cluster://n1:7000/3", "takes no database"},
        {"redis+cluster://n1,,n2", "empty cluster node address"},
        {"redis+cluster://", "empty cluster node address"},
        {"redis+cluster://n1:0", "port must be a number"},
        {"redis+cluster://a,b,c,d,e,f,g,h,i", "more than 8 cluster nodes"},
        {"redis+cluster://n1?x=1", "unexpected '?' part"},
        {"redis+cluster://u:@n1", "the password is empty"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        assert_int_equal(retryq_redis_url_parse(refused[i].url, &u, &err), RETRYQ_ERR_INVALID);
        if (strstr(err.message, refused[i].rule) == NULL)
            fail_msg("%s: \"%s\" does not say \"%s\"", refused[i].url, err.message, refused[i].rule);
    }
}

static void test_redis_sentinel_url_refusals_name_the_rule(void **state)
{
    static const struct {
        const char *url, *rule;
    } cases[] = {
        {"redis+sentinel://s1:26379", "needs the master name"},
        {"redis+sentinel://s1:26379/", "needs the master name"},
        {"redis+sentinel://s1/bad name", "needs the master name"},
        {"redis+sentinel://s1,,s2/m", "empty sentinel address"},
        {"redis+sentinel://s1,/m", "empty sentinel address"},
        {"redis+sentinel:///m", "empty sentinel address"},
        {"redis+sentinel://s1:0/m", "port must be a number"},
        {"redis+sentinel://s1:99999/m", "port must be a number"},
        {"redis+sentinel://a,b,c,d,e,f,g,h,i/m", "more than 8 sentinels"},
        {"redis+sentinel://s1/m/x", "the database must be a number"},
        {"redis+sentinel://s1/m?x=1", "unexpected '?' part"},
        {"redis+sentinel://u:@s1/m", "the password is empty"},
        {"redis+sentinel://u:pw!x@s1:bad/m", "port must be a number"},
        {"sentinel://s1/m", "must start with redis://, redis+sentinel://, redis+cluster:// or unix://"},
    };
    retryq_redis_url_t u;
    retryq_error_t err;
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(retryq_redis_url_parse(cases[i].url, &u, &err), RETRYQ_ERR_INVALID);
        if (strstr(err.message, cases[i].rule) == NULL)
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].url, err.message, cases[i].rule);
        assert_null(strstr(err.message, "pw!x"));
    }
}

/* ------------------------------------------------------------------ PostgreSQL */

static void test_pg_check_names_the_rule(void **state)
{
    static const struct {
        const char *text, *rule; /* NULL: accepted */
    } cases[] = {
        {"postgresql://app@db/runner", NULL},
        {"postgres://db", NULL},
        {"host=db dbname=runner", NULL},
        {"mysql://db/app", "must start with postgresql:// or postgres://"},
        {"localhost", "must be a postgresql:// URL or a key=value conninfo string"},
        {"postgresql://db/x?colour=blue", "not a valid PostgreSQL URL"},
        {"host='db", "not a valid PostgreSQL conninfo string"},
        {"host=db colour=blue", "not a valid PostgreSQL conninfo string"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *rule = connstr_pg_check(cases[i].text);
        if (cases[i].rule == NULL)
            assert_null(rule);
        else if (rule == NULL || strstr(rule, cases[i].rule) == NULL)
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].text, rule ? rule : "(accepted)",
                     cases[i].rule);
    }
}

static void test_pg_parse_error_hides_the_password(void **state)
{
    static const char *const bad[] = {
        "postgresql://u:sekrit@[::1/db",
        "postgresql://u:sek%zzrit@127.0.0.1/db",
        "host=127.0.0.1 password=sekrit bogus",
    };
    char err[256];
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(connstr_pg_parse(bad[i], err, sizeof err));
        assert_true(err[0] != '\0');
        assert_null(strchr(err, '\n'));
        assert_null(strstr(err, "sekrit"));
        assert_null(strstr(err, "zzrit"));
    }
    /* without a password the offending piece is quoted as libpq quotes it */
    assert_null(connstr_pg_parse("host=db colour=blue", err, sizeof err));
    assert_non_null(strstr(err, "\"colour\""));
}

static void test_pg_params_carry_the_password_as_its_own_keyword(void **state)
{
    char err[256];
    const char *keys[8], *values[8];
    (void)state;
    connstr_pg_t *pg = connstr_pg_parse("postgresql://app@db:5433/runner?sslmode=disable", err,
                                        sizeof err);
    assert_non_null(pg);
    assert_false(connstr_pg_has_password(pg));
    assert_string_equal(connstr_pg_value(pg, "host"), "db");
    assert_null(connstr_pg_value(pg, "hostaddr"));
    assert_null(connstr_pg_value(pg, "password"));
    assert_int_equal(connstr_pg_set_password(pg, "it's \\ secret"), 0);
    assert_string_equal(connstr_pg_value(pg, "password"), "it's \\ secret");
    assert_false(connstr_pg_has_password(pg)); /* the text still holds none */
    size_t n = connstr_pg_params(pg, keys, values, 8);
    assert_int_equal(n, 6);
    assert_int_equal(connstr_pg_params(pg, NULL, NULL, 0), 6);
    static const char *const want[][2] = {{"user", "app"},   {"dbname", "runner"},
                                          {"host", "db"},    {"port", "5433"},
                                          {"sslmode", "disable"}, {"password", "it's \\ secret"}};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(keys[i], want[i][0]);
        assert_string_equal(values[i], want[i][1]);
    }
    char buf[256];
    connstr_pg_format(pg, buf, sizeof buf);
    assert_string_equal(buf, "postgresql://app:***@db:5433/runner?sslmode=disable");
    connstr_pg_free(pg);

    pg = connstr_pg_parse("host=db dbname=runner", err, sizeof err);
    assert_non_null(pg);
    assert_int_equal(connstr_pg_set_password(pg, "pw"), 0);
    connstr_pg_format(pg, buf, sizeof buf);
    assert_string_equal(buf, "host=db dbname=runner password=***");
    connstr_pg_free(pg);
    connstr_pg_free(NULL);
}

static void test_pg_redaction_rebuilds_from_libpq_reading(void **state)
{
    static const redaction_t cases[] = {
        /* nothing secret: shown as given */
        {"postgres://app@db/runner", "postgres://app@db/runner"},
        {"host=db dbname=password", "host=db dbname=password"},
        {"host=db application_name='password=x'", "host=db application_name='password=x'"},
        {"host=db", "host=db"},
        /* a URI stays a URI */
        {"postgresql://app:p%40ss@db:5432/runner?sslmode=require",
         "postgresql://app:***@db:5432/runner?sslmode=require"},
        {"postgresql://db/runner?user=app&password=pw&sslmode=disable",
         "postgresql://app:***@db/runner?sslmode=disable"},
        {"postgresql://a:b@db/runner?password=pw", "postgresql://a:***@db/runner"},
        /* libpq takes '#' and '?' in the user information's password as they are */
        {"postgresql://u:pw#x?y@127.0.0.1:1/db?sslmode=disable",
         "postgresql://u:***@127.0.0.1:1/db?sslmode=disable"},
        {"postgresql://:pw@h1:1,h2/d%20b", "postgresql://:***@h1:1,h2/d%20b"},
        {"postgresql://:pw@[::1]:5/x?sslpassword=k", "postgresql://:***@[::1]:5/x?sslpassword=***"},
        /* key=value pairs: where, which database, who first, in libpq's quoting */
        {"host=db password=secret user=app", "host=db user=app password=***"},
        {"password = 'a b\\' c' host=db", "host=db password=***"},
        {"host=db\tpassword=x", "host=db password=***"},
        {"host= password=' password='!'", "host='password=\\'' password=***"},
        {"host='h'password=x", "host=h password=***"},
        {"host=db password=a\\ b user=app", "host=db user=app password=***"},
        {"sslpassword=k host='a b'", "host='a b' sslpassword=***"},
        /* libpq refuses: the blunt rule */
        {"mysql://app:hunter2@db/app", "mysql://app:***@db/app"},
        {"host=db password=hunter2 colour=blue", "host=db password=***"},
    };
    (void)state;
    check_redactions(connstr_pg_redact, cases, sizeof cases / sizeof cases[0],
                     "host=db password=secret", "host=db pas");
}

/* ------------------------------------------------------------------ the router URL */

static void test_router_check(void **state)
{
    static const struct {
        const char *url;
        connstr_router_problem_t problem;
        const char *rule;
    } cases[] = {
        {"http://127.0.0.1:8000", CONNSTR_ROUTER_OK, ""},
        {"HTTPS://router.example:8443/base/", CONNSTR_ROUTER_OK, ""},
        {"http://:pw@127.0.0.1:1234", CONNSTR_ROUTER_OK, ""}, /* an empty user */
        {"", CONNSTR_ROUTER_EMPTY, "is empty"},
        {"ftp://router", CONNSTR_ROUTER_SCHEME, "must start with http:// or https://"},
        {"127.0.0.1:8080", CONNSTR_ROUTER_SCHEME, "must start with http:// or https://"},
        {"http:/router", CONNSTR_ROUTER_SCHEME, "must start with http:// or https://"},
        {"http://", CONNSTR_ROUTER_NO_HOST, "missing host"},
        {"http:///inference", CONNSTR_ROUTER_NO_HOST, "missing host"}, /* curl reads a host */
        {"https://:80", CONNSTR_ROUTER_NO_HOST, "missing host"},
        {"http://u:p@/x", CONNSTR_ROUTER_NO_HOST, "missing host"},
        {"http://router /x", CONNSTR_ROUTER_SPACE, "must not contain spaces"},
        {"http://a\tb", CONNSTR_ROUTER_SPACE, "must not contain spaces"},
        {"http://router:99999", CONNSTR_ROUTER_MALFORMED, "is not a URL libcurl accepts (Port"},
        {"http://host/x?y=1", CONNSTR_ROUTER_QUERY, "must not have a query or fragment"},
        {"http://host#", CONNSTR_ROUTER_QUERY, "must not have a query or fragment"},
    };
    char why[256];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        connstr_router_problem_t p =
            connstr_router_check(cases[i].url, CONNSTR_ROUTER_BASE, why, sizeof why);
        if (p != cases[i].problem || strncmp(why, cases[i].rule, strlen(cases[i].rule)) != 0 ||
            (cases[i].rule[0] == '\0' && why[0] != '\0'))
            fail_msg("%s: got %d \"%s\", want %d \"%s\"", cases[i].url, p, why,
                     cases[i].problem, cases[i].rule);
    }
    /* a query is fine where nothing is appended */
    assert_int_equal(connstr_router_check("http://host/x?y=1", 0, why, sizeof why), CONNSTR_ROUTER_OK);
    assert_int_equal(connstr_router_check(NULL, 0, why, sizeof why), CONNSTR_ROUTER_EMPTY);
}

static void test_router_redaction(void **state)
{
    static const redaction_t cases[] = {
        {"https://user:tok@router.example/base", "https://user:***@router.example/base"},
        {"https://tok:en@router/api", "https://tok:***@router/api"},
        {"http://:pw@127.0.0.1:1234", "http://:***@127.0.0.1:1234/"},
        {"http://127.0.0.1:8000", "http://127.0.0.1:8000"}, /* no password: as given */
        {"http://token@router", "http://token@router"},
        {"ftp://u:pw@127.0.0.1/", "ftp://u:***@127.0.0.1/"}, /* quoted in a refusal */
        {"http://u:p@ss@h/", "http://u:***@h/"},             /* curl refuses: blunt */
    };
    (void)state;
    check_redactions(connstr_router_redact, cases, sizeof cases / sizeof cases[0],
                     "https://user:tok@router.example/base", "https://use");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_no_parser_accepts_is_redacted_bluntly),
        cmocka_unit_test(test_redis_password_from_a_file),
        cmocka_unit_test(test_redis_format_parses_back),
        cmocka_unit_test(test_redis_sentinel_url_is_parsed),
        cmocka_unit_test(test_redis_sentinel_url_refusals_name_the_rule),
        cmocka_unit_test(test_redis_cluster_url_is_parsed),
        cmocka_unit_test(test_pg_check_names_the_rule),
        cmocka_unit_test(test_pg_parse_error_hides_the_password),
        cmocka_unit_test(test_pg_params_carry_the_password_as_its_own_keyword),
        cmocka_unit_test(test_pg_redaction_rebuilds_from_libpq_reading),
        cmocka_unit_test(test_router_check),
        cmocka_unit_test(test_router_redaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
