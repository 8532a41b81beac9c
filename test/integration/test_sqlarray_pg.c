/*
 * sqlarray.c against a real PostgreSQL: literals built from awkward texts (quotes,
 * backslashes, commas, braces, the word NULL, empty strings, newlines, multi-byte UTF-8,
 * JSON) go through unnest($1::text[]) and come back byte for byte, in order, with SQL NULL
 * where NULL was added; integer arrays round-trip through bigint[].
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlarray.h"
#include "testutil.h"

static const char *const TEXTS[] = {
    "plain",
    "",
    NULL,
    "NULL",
    "null",
    "a,b",
    "{braces}",
    "}{",
    "\"",
    "say \"hi\"",
    "\\",
    "back\\slash\\\\n",
    "line\nbreak\ttab",
    "  leading and trailing  ",
    "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
    "{\"response\":\"a \\\"quoted\\\" answer\\n\",\"metadata\":{\"k\":[1,2]}}",
    "'; DROP TABLE executions; --",
};
#define NTEXTS (sizeof TEXTS / sizeof TEXTS[0])

static void test_texts_round_trip(void **state)
{
    (void)state;
    PGconn *pg = tu_pg_connect(tu_database_url());
    sqlarray_t a;
    sqlarray_init(&a);
    for (size_t i = 0; i < NTEXTS; i++)
        sqlarray_text(&a, TEXTS[i]);
    char *lit = sqlarray_finish(&a);
    assert_non_null(lit);
    PGresult *res = tu_exec(pg, "SELECT v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n",
                            1, lit);
    assert_int_equal(PQntuples(res), (int)NTEXTS);
    for (size_t i = 0; i < NTEXTS; i++) {
        if (TEXTS[i] == NULL) {
            assert_true(PQgetisnull(res, (int)i, 0));
        } else {
            assert_false(PQgetisnull(res, (int)i, 0));
            assert_string_equal(PQgetvalue(res, (int)i, 0), TEXTS[i]);
        }
    }
    PQclear(res);
    free(lit);
    PQfinish(pg);
}

static void test_integers_round_trip(void **state)
{
    (void)state;
    PGconn *pg = tu_pg_connect(tu_database_url());
    const int64_t values[] = {0, 1, -1, 2147483648LL, INT64_MAX, INT64_MIN};
    sqlarray_t a;
    sqlarray_init(&a);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        sqlarray_int(&a, values[i]);
    char *lit = sqlarray_finish(&a);
    PGresult *res =
        tu_exec(pg, "SELECT v FROM unnest($1::bigint[]) WITH ORDINALITY AS t(v, n) ORDER BY n", 1, lit);
    assert_int_equal(PQntuples(res), 6);
    for (int i = 0; i < 6; i++) {
        char want[24];
        snprintf(want, sizeof want, "%" PRId64, values[i]);
        assert_string_equal(PQgetvalue(res, i, 0), want);
    }
    PQclear(res);
    free(lit);
    PQfinish(pg);
}

static void test_parallel_arrays_line_up(void **state)
{
    /* What the batched record does: several arrays unnest()ed side by side stay aligned. */
    (void)state;
    PGconn *pg = tu_pg_connect(tu_database_url());
    sqlarray_t ids, texts;
    sqlarray_init(&ids);
    sqlarray_init(&texts);
    for (size_t i = 0; i < NTEXTS; i++) {
        sqlarray_int(&ids, (int64_t)i * 10);
        sqlarray_text(&texts, TEXTS[i]);
    }
    char *l1 = sqlarray_finish(&ids), *l2 = sqlarray_finish(&texts);
    PGresult *res = tu_exec(pg,
                            "SELECT count(*) FROM unnest($1::bigint[], $2::text[]) AS v(id, t) "
                            "WHERE t IS NOT DISTINCT FROM ($3::text[])[id / 10 + 1]",
                            3, l1, l2, l2);
    assert_string_equal(PQgetvalue(res, 0, 0), "17");
    assert_int_equal(NTEXTS, 17);
    PQclear(res);
    free(l1);
    free(l2);
    PQfinish(pg);
}

int main(void)
{
    if (!tu_have_services())
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_texts_round_trip),
        cmocka_unit_test(test_integers_round_trip),
        cmocka_unit_test(test_parallel_arrays_line_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
