/*
 * sqlarray.c: PostgreSQL array literals for unnest() parameters — quoting, escaping,
 * NULL, integers and the empty array. (test/integration/test_sqlarray_pg.c sends the same
 * literals through PostgreSQL and reads them back.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sqlarray.h"

static void test_empty(void **state)
{
    (void)state;
    sqlarray_t a;
    sqlarray_init(&a);
    char *s = sqlarray_finish(&a);
    assert_non_null(s);
    assert_string_equal(s, "{}");
    free(s);
}

static void test_integers(void **state)
{
    (void)state;
    sqlarray_t a;
    sqlarray_init(&a);
    sqlarray_int(&a, 1);
    sqlarray_int(&a, -42);
    sqlarray_int(&a, INT64_MAX);
    sqlarray_int(&a, INT64_MIN);
    char *s = sqlarray_finish(&a);
    assert_string_equal(s, "{1,-42,9223372036854775807,-9223372036854775808}");
    free(s);
}

static void test_texts_are_quoted_and_escaped(void **state)
{
    (void)state;
    sqlarray_t a;
    sqlarray_init(&a);
    sqlarray_text(&a, "plain");
    sqlarray_text(&a, "");
    sqlarray_text(&a, NULL);
    sqlarray_text(&a, "NULL");
    sqlarray_text(&a, "a,b}{c");
    sqlarray_text(&a, "say \"hi\"");
    sqlarray_text(&a, "back\\slash");
    sqlarray_text(&a, " spaced \n");
    char *s = sqlarray_finish(&a);
    assert_string_equal(s, "{\"plain\",\"\",NULL,\"NULL\",\"a,b}{c\",\"say \\\"hi\\\"\","
                           "\"back\\\\slash\",\" spaced \n\"}");
    free(s);
}

static void test_grows_past_the_first_buffer(void **state)
{
    (void)state;
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = i % 10 == 0 ? '"' : 'x';
    big[n] = '\0';
    sqlarray_t a;
    sqlarray_init(&a);
    for (int i = 0; i < 3; i++)
        sqlarray_text(&a, big);
    char *s = sqlarray_finish(&a);
    assert_non_null(s);
    /* braces + 3 x (quotes + text + one backslash per '"') + 2 commas */
    assert_int_equal(strlen(s), 2 + 3 * (2 + n + n / 10) + 2);
    assert_memory_equal(s, "{\"\\\"xxxxxxxxx\\\"", 15);
    free(s);
    free(big);
}

static void test_discard(void **state)
{
    (void)state;
    sqlarray_t a;
    sqlarray_init(&a);
    sqlarray_text(&a, "never sent");
    sqlarray_discard(&a); /* ASan/valgrind: nothing leaks */
    assert_null(a.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_texts_are_quoted_and_escaped),
        cmocka_unit_test(test_grows_past_the_first_buffer),
        cmocka_unit_test(test_discard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
