/*
 * text.c: strict UTF-8 validation, sanitising for PostgreSQL (NUL dropped, invalid
 * sequences replaced by U+FFFD per maximal subpart) and cutting at UTF-8 boundaries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "text.h"

#define FFFD "\xEF\xBF\xBD"
#define LIT(s) s, sizeof(s) - 1

static void test_is_clean_accepts_valid_utf8(void **state)
{
    (void)state;
    assert_true(text_is_clean(LIT("")));
    assert_true(text_is_clean(LIT("plain ascii\t\n")));
    assert_true(text_is_clean(LIT("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80")));   /* é € 😀 */
    assert_true(text_is_clean(LIT("\xEF\xBF\xBF")));                                /* U+FFFF */
    assert_true(text_is_clean(LIT("\xF4\x8F\xBF\xBF")));                            /* U+10FFFF */
    assert_true(text_is_clean(LIT("\xED\x9F\xBF")));                                /* U+D7FF */
    assert_true(text_is_clean(LIT("\xEE\x80\x80")));                                /* U+E000 */
}

static void test_is_clean_rejects_nul_and_invalid(void **state)
{
    (void)state;
    assert_false(text_is_clean(LIT("a\0b")));
    assert_false(text_is_clean(LIT("\xC0\x80")));         /* overlong NUL */
    assert_false(text_is_clean(LIT("\xC1\xBF")));         /* overlong */
    assert_false(text_is_clean(LIT("\xE0\x80\x80")));     /* overlong 3-byte */
    assert_false(text_is_clean(LIT("\xF0\x80\x80\x80"))); /* overlong 4-byte */
    assert_false(text_is_clean(LIT("\xED\xA0\x80")));     /* surrogate U+D800 */
    assert_false(text_is_clean(LIT("\xED\xBF\xBF")));     /* surrogate U+DFFF */
    assert_false(text_is_clean(LIT("\xF4\x90\x80\x80"))); /* above U+10FFFF */
    assert_false(text_is_clean(LIT("\xF5\x80\x80\x80")));
    assert_false(text_is_clean(LIT("\xFF")));
    assert_false(text_is_clean(LIT("\x80")));             /* lone continuation */
    assert_false(text_is_clean(LIT("\xE2\x82")));         /* truncated at the end */
    assert_false(text_is_clean(LIT("\xE2\x82x")));        /* truncated in the middle */
}

static void expect_sanitized(const char *in, size_t len, const char *want, size_t want_len)
{
    size_t n = 12345;
    char *out = text_sanitize(in, len, &n);

    assert_non_null(out);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
    assert_int_equal(out[n], '\0');
    assert_true(text_is_clean(out, n));
    free(out);
}

static void test_sanitize(void **state)
{
    (void)state;
    expect_sanitized(LIT("hello"), LIT("hello"));
    expect_sanitized(LIT("a\0b\0"), LIT("ab"));
    expect_sanitized(LIT("\xFF"), LIT(FFFD));
    expect_sanitized(LIT("caf\xC3\xA9"), LIT("caf\xC3\xA9"));
    /* maximal subparts: a truncated sequence is one replacement ... */
    expect_sanitized(LIT("a\xE2\x82"), LIT("a" FFFD));
    expect_sanitized(LIT("\xE2\x82" "A"), LIT(FFFD "A"));
    expect_sanitized(LIT("\xF0\x9F\x98" "!"), LIT(FFFD "!"));
    /* ... while bytes that can never start or continue one are replaced one by one */
    expect_sanitized(LIT("\xF0\x80\x80\x80"), LIT(FFFD FFFD FFFD FFFD));
    expect_sanitized(LIT("\xED\xA0\x80"), LIT(FFFD FFFD FFFD));
    expect_sanitized(LIT("\xC0\xAF"), LIT(FFFD FFFD));
    expect_sanitized(LIT("\xF4\x90\x80\x80"), LIT(FFFD FFFD FFFD FFFD));
    expect_sanitized(LIT("x\x80\x80y"), LIT("x" FFFD FFFD "y"));
    expect_sanitized(LIT("\xC3\0\xA9"), LIT(FFFD FFFD)); /* a NUL inside a sequence breaks it */
    expect_sanitized(NULL, 0, LIT(""));
}

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random bytes (biased towards UTF-8 lead/continuation bytes) always come out clean,
 * and sanitising clean text changes nothing. */
static void test_sanitize_random_bytes(void **state)
{
    static const unsigned char alphabet[] = {0x00, 'a', 0x7F, 0x80, 0xBF, 0xC2, 0xC3, 0xDF, 0xE0,
                                             0xE2, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0xA0, 0x9F, 0x90};
    uint64_t seed = 0x9E3779B97F4A7C15ULL;
    unsigned char buf[64];

    (void)state;
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(next_random(&seed) % sizeof buf);
        size_t n = 0, n2 = 0;
        char *once, *twice;
        for (size_t i = 0; i < len; i++)
            buf[i] = alphabet[next_random(&seed) % sizeof alphabet];
        once = text_sanitize((const char *)buf, len, &n);
        assert_non_null(once);
        assert_true(text_is_clean(once, n));
        assert_true(n <= len * 3);
        twice = text_sanitize(once, n, &n2);
        assert_non_null(twice);
        assert_int_equal(n, n2);
        assert_memory_equal(once, twice, n);
        if (text_is_clean((const char *)buf, len)) {
            assert_int_equal(n, len);
            assert_memory_equal(once, buf, len);
        }
        free(once);
        free(twice);
    }
}

static void test_utf8_prefix(void **state)
{
    const char *s = "a\xC3\xA9" "b";             /* a é b */
    const char *euro = "\xE2\x82\xAC";           /* € */
    const char *emoji = "x\xF0\x9F\x98\x80";     /* x 😀 */

    (void)state;
    assert_int_equal(text_utf8_prefix(s, 4, 10), 4);
    assert_int_equal(text_utf8_prefix(s, 4, 4), 4);
    assert_int_equal(text_utf8_prefix(s, 4, 3), 3);
    assert_int_equal(text_utf8_prefix(s, 4, 2), 1);
    assert_int_equal(text_utf8_prefix(s, 4, 1), 1);
    assert_int_equal(text_utf8_prefix(s, 4, 0), 0);
    assert_int_equal(text_utf8_prefix(euro, 3, 2), 0);
    assert_int_equal(text_utf8_prefix(euro, 3, 1), 0);
    assert_int_equal(text_utf8_prefix(emoji, 5, 4), 1);
    assert_int_equal(text_utf8_prefix(emoji, 5, 2), 1);
    /* not UTF-8 at all: a plain byte cut, never more than 3 bytes of back-off */
    assert_int_equal(text_utf8_prefix("\x80\x80\x80\x80\x80\x80", 6, 5), 5);
}

static void test_truncate_and_copy(void **state)
{
    char s[] = "ab\xE2\x82\xAC" "cd";  /* ab€cd */
    char dst[8];

    (void)state;
    assert_int_equal(text_truncate(s, 4), 2);
    assert_string_equal(s, "ab");

    assert_false(text_copy(dst, 4, "a\xC3\xA9xyz"));
    assert_string_equal(dst, "a\xC3\xA9");
    assert_false(text_copy(dst, 3, "a\xC3\xA9xyz"));
    assert_string_equal(dst, "a");
    assert_false(text_copy(dst, 1, "abc"));
    assert_string_equal(dst, "");
    assert_true(text_copy(dst, sizeof dst, "1234567"));
    assert_string_equal(dst, "1234567");
    assert_false(text_copy(dst, sizeof dst, "12345678"));
    assert_string_equal(dst, "1234567");
}

static void test_sanitize_max(void **state)
{
    size_t n = 0;
    char *out;

    (void)state;
    out = text_sanitize_max(LIT("\xFF\xFF"), 5, &n); /* two replacements = 6 bytes */
    assert_non_null(out);
    assert_int_equal(n, 3);
    assert_string_equal(out, FFFD);
    free(out);
    out = text_sanitize_max(LIT("ok\0!"), 100, &n);
    assert_non_null(out);
    assert_int_equal(n, 3);
    assert_string_equal(out, "ok!");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_is_clean_accepts_valid_utf8),
        cmocka_unit_test(test_is_clean_rejects_nul_and_invalid),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_sanitize_random_bytes),
        cmocka_unit_test(test_utf8_prefix),
        cmocka_unit_test(test_truncate_and_copy),
        cmocka_unit_test(test_sanitize_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
