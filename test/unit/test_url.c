/*
 * Redis URLs: the accepted forms (TCP, IPv6 literal, unix socket, user and password with
 * percent-escapes, database), the refused ones with messages that never show the
 * password, and redaction for logs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "internal.h"

static retryq_redis_url_t parse_ok(const char *url)
{
    retryq_redis_url_t u;
    retryq_error_t err = {0};
    if (retryq_redis_url_parse(url, &u, &err) != RETRYQ_OK)
        fail_msg("%s refused: %s", url, err.message);
    return u;
}

static void test_tcp_urls(void **state)
{
    (void)state;
    retryq_redis_url_t u = parse_ok("redis://127.0.0.1");
    assert_false(u.is_unix);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");

    u = parse_ok("redis://cache.internal:6380/2");
    assert_string_equal(u.host, "cache.internal");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);

    u = parse_ok("REDIS://Host/");
    assert_string_equal(u.host, "Host");
    assert_int_equal(u.db, 0);
}

static void test_ipv6_literals(void **state)
{
    (void)state;
    retryq_redis_url_t u = parse_ok("redis://[::1]:6390/1");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6390);
    assert_int_equal(u.db, 1);
    u = parse_ok("redis://:pw@[fe80::1%25eth0]");
    assert_string_equal(u.host, "fe80::1%eth0");
    assert_int_equal(u.port, 6379);
    assert_string_equal(u.password, "pw");
}

static void test_user_and_password(void **state)
{
    (void)state;
    retryq_redis_url_t u = parse_ok("redis://:secret@host");
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "secret");

    u = parse_ok("redis://worker:p%40ss%3Aw%2Fd%25@host:1/3");
    assert_string_equal(u.user, "worker");
    assert_string_equal(u.password, "p@ss:w/d%");
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 3);

    u = parse_ok("redis://:p@ss@host"); /* the last '@' ends the user information */
    assert_string_equal(u.password, "p@ss");
    assert_string_equal(u.host, "host");

    u = parse_ok("redis://us%65r:x@h");
    assert_string_equal(u.user, "user");
}

static void test_unix_urls(void **state)
{
    (void)state;
    retryq_redis_url_t u = parse_ok("unix:///run/redis/redis.sock");
    assert_true(u.is_unix);
    assert_string_equal(u.path, "/run/redis/redis.sock");
    assert_int_equal(u.db, 0);

    u = parse_ok("unix:///tmp/r.sock?db=4");
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.db, 4);

    u = parse_ok("unix://app:s%3Fcret@/tmp/r.sock?db=1");
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "s?cret");
    assert_string_equal(u.path, "/tmp/r.sock");
    assert_int_equal(u.db, 1);
}

typedef struct refusal {
    const char *url;
    const char *message; /* a part of the expected message */
} refusal_t;

static void test_refused_urls(void **state)
{
    char long_path[160];
    snprintf(long_path, sizeof long_path, "unix:///%0120d", 0);
    const refusal_t refusals[] = {
        {"rediss://:secret@host:6380", "hiredis 0.14 has no TLS"},
        {"rediss://host", "docs/operations.md"},
        {"http://host", "must start with redis://, redis+sentinel://, redis+cluster:// or unix://"},
        {"", "must start with redis://, redis+sentinel://, redis+cluster:// or unix://"},
        {"redis://", "missing host"},
        {"redis://:secret@:6379", "missing host"},
        {"redis://host:0", "port must be"},
        {"redis://host:65536", "port must be"},
        {"redis://host:", "port must be"},
        {"redis://host:63a9", "port must be"},
        {"redis://host/x", "database must be a number"},
        {"redis://host/-1", "database must be a number"},
        {"redis://host/1?timeout=3", "unexpected '?' part"},
        {"redis://host#frag", "unexpected '#' part"},
        {"redis://secret@host", "[user]:password@"},
        {"redis://user:@host", "password is empty"},
        {"redis://:secre%zz@host", "bad percent-escape in the password"},
        {"redis://:secret%0@host", "bad percent-escape in the password"},
        {"redis://:secret%00@host", "bad percent-escape in the password"},
        {"redis://[::1", "bad IPv6 address"},
        {"redis://[::1]6379", "bad IPv6 address"},
        {"redis://[]:1", "missing host"},
        {"unix://", "missing socket path"},
        {"unix://tmp/r.sock", "unix://[[user]:password@]/path/to/socket"},
        {"unix:///tmp/r.sock?db=x", "the only query of unix:// is ?db=N"},
        {"unix:///tmp/r.sock?timeout=1", "the only query of unix:// is ?db=N"},
        {long_path, "socket path is longer than 107 bytes"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        retryq_redis_url_t u;
        retryq_error_t err = {0};
        int rc = retryq_redis_url_parse(refusals[i].url, &u, &err);
        if (rc != RETRYQ_ERR_INVALID || strstr(err.message, refusals[i].message) == NULL ||
            strncmp(err.message, "redis URL: ", 11) != 0)
            fail_msg("%s: got %d \"%s\", want \"%s\"", refusals[i].url, rc, err.message, refusals[i].message);
        if (strstr(err.message, "secret") != NULL)
            fail_msg("%s: the message shows the password: %s", refusals[i].url, err.message);
    }
}

static void test_redaction(void **state)
{
    static const char *const cases[][2] = {
        {"redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"},
        {"redis://:secret@host", "redis://:***@host"},
        {"redis://:p@ss@host", "redis://:***@host"},
        {"redis://secret@host", "redis://***@host"},
        {"unix://:secret@/tmp/r.sock?db=1", "unix://:***@/tmp/r.sock?db=1"},
        {"redis://host:6379/0", "redis://host:6379/0"},
        {"unix:///tmp/r.sock", "unix:///tmp/r.sock"},
        {"redis://host/a@b", "redis://host/a@b"},
    };
    char buf[128];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        retryq_redis_url_redact(cases[i][0], buf, sizeof buf);
        assert_string_equal(buf, cases[i][1]);
    }
    retryq_redis_url_redact("redis://user:secret@host", buf, 12);
    assert_string_equal(buf, "redis://use");
    retryq_redis_url_redact(NULL, buf, sizeof buf);
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_urls),
        cmocka_unit_test(test_ipv6_literals),
        cmocka_unit_test(test_user_and_password),
        cmocka_unit_test(test_unix_urls),
        cmocka_unit_test(test_refused_urls),
        cmocka_unit_test(test_redaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
