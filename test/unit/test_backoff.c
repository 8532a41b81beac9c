/*
 * The jittered doubling backoff and its random generator (src/worker/backoff.h): the
 * bounds double from the minimum to the cap and start over after a reset, every delay is
 * drawn from [0, bound], and the generator never sticks at one value.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "backoff.h"

static void grow_starts_at_min_doubles_and_stops_at_max(void **state)
{
    (void)state;
    assert_int_equal(backoff_grow(0, 100, 5000), 100);
    assert_int_equal(backoff_grow(-1, 100, 5000), 100);
    assert_int_equal(backoff_grow(100, 100, 5000), 200);
    assert_int_equal(backoff_grow(2500, 100, 5000), 5000);
    assert_int_equal(backoff_grow(3200, 100, 5000), 5000); /* 6400 would pass the cap */
    assert_int_equal(backoff_grow(5000, 100, 5000), 5000);
    assert_int_equal(backoff_grow(2500, 100, 5001), 5000); /* an odd cap */
    assert_int_equal(backoff_grow(2501, 100, 5001), 5001);
}

static void bounds_double_to_the_cap_and_reset(void **state)
{
    static const int expected[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
    uint64_t rng = 42;
    backoff_t b;
    (void)state;
    backoff_init(&b, 100, 5000);
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        int64_t delay = backoff_next(&b, &rng);
        assert_int_equal(b.bound_ms, expected[i]);
        assert_true(delay >= 0 && delay <= expected[i]);
    }
    backoff_reset(&b);
    assert_true(backoff_next(&b, &rng) <= 100);
    assert_int_equal(b.bound_ms, 100);
}

static void delays_are_spread_over_the_whole_range(void **state)
{
    uint64_t rng = 1;
    backoff_t b;
    int64_t low = INT64_MAX, high = -1;
    (void)state;
    backoff_init(&b, 1000, 1000);
    for (int i = 0; i < 2000; i++) {
        int64_t delay = backoff_next(&b, &rng);
        assert_true(delay >= 0 && delay <= 1000);
        if (delay < low)
            low = delay;
        if (delay > high)
            high = delay;
    }
    assert_true(low < 50);
    assert_true(high > 950);
}

static void generator_is_seeded_and_never_sticks(void **state)
{
    uint64_t rng = 0, previous;
    (void)state;
    backoff_seed(&rng);
    assert_true(rng != 0);
    previous = backoff_random(&rng);
    for (int i = 0; i < 1000; i++) {
        uint64_t next = backoff_random(&rng);
        assert_true(rng != 0);
        assert_true(next != previous);
        previous = next;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grow_starts_at_min_doubles_and_stops_at_max),
        cmocka_unit_test(bounds_double_to_the_cap_and_reset),
        cmocka_unit_test(delays_are_spread_over_the_whole_range),
        cmocka_unit_test(generator_is_seeded_and_never_sticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
