/*
 * Redis Cluster helpers (src/lib/cluster.c): the hash slot of a key against the values
 * Redis 7's CLUSTER KEYSLOT gives (hash tags included), the owner of a slot in a CLUSTER
 * SLOTS answer (Redis 7's NULL endpoints, host names and metadata included), and the
 * reading of -MOVED / -ASK. cluster_test.sh checks the slot of the test's queue against a
 * real cluster too, cluster_redirect_test.sh the endpoints a real cluster answers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cluster.h"

static void test_crc16_is_xmodem(void **state)
{
    (void)state;
    assert_int_equal(cluster_crc16("123456789", 9), 0x31C3); /* the CRC16/XMODEM check value */
    assert_int_equal(cluster_crc16("", 0), 0);
}

static void test_keyslot_matches_cluster_keyslot(void **state)
{
    /* CLUSTER KEYSLOT of Redis 7.0 for each key */
    static const struct {
        const char *key;
        int slot;
    } cases[] = {
        {"123456789", 12739},
        {"foo", 12182},
        {"bar", 5061},
        {"hello", 866},
        {"somekey", 11058},
        {"retry_queue", 12849},
        {"{retry_queue}:workers", 12849},
        {"sentinel_failover", 2349},
        {"{user1000}.following", 3443},
        {"foo{}{bar}", 8363},      /* an empty tag: the whole key */
        {"foo{{bar}}zap", 4015},   /* the tag is "{bar" */
        {"foo{bar}{zap}", 5061},   /* the first tag only: "bar" */
        {"{}", 15257},
        {"a{b", 13340},            /* no closing brace: the whole key */
        {"\xc3\xa9", 10180},       /* bytes, not characters */
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int slot = cluster_keyslot(cases[i].key, strlen(cases[i].key));
        if (slot != cases[i].slot)
            fail_msg("slot of %s: %d, Redis says %d", cases[i].key, slot, cases[i].slot);
    }
}

/* A reply element built by hand (hiredis's own reader is not needed for this). */
static redisReply *node(int type)
{
    redisReply *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->type = type;
    return r;
}

static redisReply *text(const char *s)
{
    redisReply *r = node(REDIS_REPLY_STRING);
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *integer(long long v)
{
    redisReply *r = node(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *array(size_t n, ...)
{
    redisReply *r = node(REDIS_REPLY_ARRAY);
    va_list ap;
    r->elements = n;
    r->element = calloc(n, sizeof *r->element);
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static void test_slot_owner_is_the_first_node_of_its_range(void **state)
{
    (void)state;
    /* three ranges; the second has a replica, the third a node that does not know its host */
    redisReply *r = array(
        3,
        array(4, integer(0), integer(5460), array(3, text("10.0.0.1"), integer(7000), text("a")),
              array(3, text("10.0.0.4"), integer(7003), text("d"))),
        array(4, integer(5461), integer(10922), array(3, text("10.0.0.2"), integer(7001), text("b")),
              array(3, text("10.0.0.5"), integer(7004), text("e"))),
        array(3, integer(10923), integer(16383), array(3, text(""), integer(7002), text("c"))));
    char host[256];
    int port = 0, count = 0;
    cluster_node_t seen[8];
    assert_true(cluster_slot_owner(r, 5461, "10.0.0.9", host, sizeof host, &port, seen, 8, &count));
    assert_string_equal(host, "10.0.0.2");
    assert_int_equal(port, 7001);
    assert_int_equal(count, 5); /* every node, replicas too */
    assert_true(cluster_slot_owner(r, 12849, "10.0.0.9", host, sizeof host, &port, NULL, 0, NULL));
    assert_string_equal(host, "10.0.0.9"); /* the node asked */
    assert_int_equal(port, 7002);
    assert_true(cluster_slot_owner(r, 0, "10.0.0.9", host, sizeof host, &port, seen, 8, &count));
    assert_int_equal(count, 5); /* no repeats */
    assert_false(cluster_slot_owner(r, 16384, "x", host, sizeof host, &port, NULL, 0, NULL));
    freeReplyObject(r);
    redisReply *empty = array(0);
    assert_false(cluster_slot_owner(empty, 1, "x", host, sizeof host, &port, NULL, 0, NULL));
    freeReplyObject(empty);
}

static void test_slot_owner_reads_redis_7_endpoints(void **state)
{
    (void)state;
    /* Redis 7: a NULL endpoint (cluster-preferred-endpoint-type unknown-endpoint: the node
     * asked, at the port given), "?" (a node without a host name under the hostname type),
     * a host name, and the metadata map after the node id */
    redisReply *r = array(2,
                          array(4, integer(0), integer(8191),
                                array(4, node(REDIS_REPLY_NIL), integer(7000), text("a"), array(0)),
                                array(4, node(REDIS_REPLY_NIL), integer(7003), text("d"), array(0))),
                          array(4, integer(8192), integer(16383),
                                array(4, text("node-b.example"), integer(7001), text("b"),
                                      array(2, text("ip"), text("10.0.0.2"))),
                                array(3, text("?"), integer(7004), text("e"))));
    char host[256];
    int port = 0, count = 0;
    cluster_node_t seen[8];
    assert_true(cluster_slot_owner(r, 100, "10.0.0.9", host, sizeof host, &port, seen, 8, &count));
    assert_string_equal(host, "10.0.0.9");
    assert_int_equal(port, 7000);
    assert_int_equal(count, 4); /* the replica with a NULL endpoint too */
    assert_string_equal(seen[1].host, "10.0.0.9");
    assert_int_equal(seen[1].port, 7003);
    assert_true(cluster_slot_owner(r, 12849, "10.0.0.9", host, sizeof host, &port, NULL, 0, NULL));
    assert_string_equal(host, "node-b.example");
    assert_int_equal(port, 7001);
    freeReplyObject(r);
}

static void test_redirects_are_read(void **state)
{
    (void)state;
    cluster_redirect_kind_t kind;
    int slot = 0, port = 0;
    char host[256];
    assert_true(cluster_redirect_parse("MOVED 12849 127.0.0.1:7002", &kind, &slot, host, sizeof host, &port));
    assert_int_equal(kind, CLUSTER_MOVED);
    assert_int_equal(slot, 12849);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 7002);
    assert_true(cluster_redirect_parse("ASK 1 [::1]:7003", &kind, &slot, host, sizeof host, &port));
    assert_int_equal(kind, CLUSTER_ASK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7003);
    assert_true(cluster_redirect_parse("MOVED 5 :7004", &kind, &slot, host, sizeof host, &port));
    assert_string_equal(host, ""); /* the node that answered */
    assert_false(cluster_redirect_parse("MOVED 16384 h:1", &kind, &slot, host, sizeof host, &port));
    assert_false(cluster_redirect_parse("MOVED x h:1", &kind, &slot, host, sizeof host, &port));
    assert_false(cluster_redirect_parse("MOVED 1 h", &kind, &slot, host, sizeof host, &port));
    assert_false(cluster_redirect_parse("MOVED 1 h:0", &kind, &slot, host, sizeof host, &port));
    assert_false(cluster_redirect_parse("READONLY You can't write", &kind, &slot, host, sizeof host, &port));
    assert_true(cluster_retry_later("TRYAGAIN Multiple keys request during rehashing of slot"));
    assert_true(cluster_retry_later("CLUSTERDOWN The cluster is down"));
    assert_true(cluster_retry_later("ASK 1 h:1"));
    assert_false(cluster_retry_later("MOVED 1 h:1"));
    assert_false(cluster_retry_later("ERR unknown command"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_is_xmodem),
        cmocka_unit_test(test_keyslot_matches_cluster_keyslot),
        cmocka_unit_test(test_slot_owner_is_the_first_node_of_its_range),
        cmocka_unit_test(test_slot_owner_reads_redis_7_endpoints),
        cmocka_unit_test(test_redirects_are_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
