/*
 * libretryq's shared helpers (src/lib/internal.h) that the wire format and the worker
 * both use: the raw-text JSON nesting check and strict UTF-8.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "internal.h"

#define LIT(s) s, sizeof(s) - 1

static void too_deep_names_the_bracket_past_the_limit(void **state)
{
    (void)state;
    assert_int_equal(rq_json_too_deep(LIT("{\"a\":[[1]]}"), 3), 11); /* 3 levels: fits */
    assert_int_equal(rq_json_too_deep(LIT("{\"a\":[[1]]}"), 2), 6);  /* the second '[' */
    assert_int_equal(rq_json_too_deep(LIT("[][][]"), 1), 6);         /* siblings, not depth */
    assert_int_equal(rq_json_too_deep(LIT(""), 0), 0);
    assert_int_equal(rq_json_too_deep(LIT("[[[["), 3), 3); /* need not be valid */
}

static void too_deep_skips_strings_and_escapes(void **state)
{
    (void)state;
    assert_int_equal(rq_json_too_deep(LIT("[\"[[[{{{\"]"), 1), 10);
    assert_int_equal(rq_json_too_deep(LIT("[\"\\\"[[\"]"), 1), 8); /* \" stays in the string */
    assert_int_equal(rq_json_too_deep(LIT("[\"\\\\\"[]"), 1), 5);  /* \\ ends before the quote */
    /* a closing bracket with no opening one counts one level less */
    assert_int_equal(rq_json_too_deep(LIT("][["), 1), 3);
}

static void utf8_sequence_lengths_and_maximal_subparts(void **state)
{
    size_t bad = 0;
    (void)state;
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"A", 1, &bad), 1);
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"", 1, &bad), 1); /* NUL */
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"\xE2\x82\xAC", 3, &bad), 3);
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"\xF0\x9F\x98\x80", 4, &bad), 4);
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"\x80", 1, &bad), 0);
    assert_int_equal(bad, 1);
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"\xE2\x82\x41", 3, &bad), 0);
    assert_int_equal(bad, 2);
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"\xF0\x9F\x98", 3, &bad), 0);
    assert_int_equal(bad, 3); /* cut at the end */
    assert_int_equal(rq_utf8_sequence((const unsigned char *)"\xED\xA0\x80", 3, NULL), 0);
}

static void utf8_valid_is_strict(void **state)
{
    (void)state;
    assert_true(rq_utf8_valid(LIT("")));
    assert_true(rq_utf8_valid(LIT("caf\xC3\xA9 \xF4\x8F\xBF\xBF")));
    assert_true(rq_utf8_valid(LIT("a\0b")));              /* NUL is the caller's question */
    assert_false(rq_utf8_valid(LIT("\xC0\x80")));         /* overlong */
    assert_false(rq_utf8_valid(LIT("\xE0\x9F\xBF")));     /* overlong 3-byte */
    assert_false(rq_utf8_valid(LIT("\xED\xBF\xBF")));     /* surrogate */
    assert_false(rq_utf8_valid(LIT("\xF4\x90\x80\x80"))); /* above U+10FFFF */
    assert_false(rq_utf8_valid(LIT("ok\xC3")));           /* cut at the end */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(too_deep_names_the_bracket_past_the_limit),
        cmocka_unit_test(too_deep_skips_strings_and_escapes),
        cmocka_unit_test(utf8_sequence_lengths_and_maximal_subparts),
        cmocka_unit_test(utf8_valid_is_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
