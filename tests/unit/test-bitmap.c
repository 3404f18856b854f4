/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests of util/bitmap.c: every function against a plain bool array
 * model, at sizes that straddle word boundaries, and the atomic
 * functions under concurrent use.
 */
#include "qemu/bitmap.h"

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>

static const size_t sizes[] = { 1, 63, 64, 65, 127, 128, 129, 1000, 4096 + 7 };

/* Compare @map with the model @ref over @n bits, through every query. */
static void check_against(const unsigned long *map, const bool *ref, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(test_bit(i, map), ref[i]);
        count += ref[i];
    }
    assert_int_equal(bitmap_count_one(map, n), count);
    assert_int_equal(bitmap_empty(map, n), count == 0);
    assert_int_equal(bitmap_full(map, n), count == n);

    for (size_t off = 0; off <= n; off += (off < 140 ? 1 : 37)) {
        size_t next = off, zero = off;
        while (next < n && !ref[next]) {
            next++;
        }
        while (zero < n && ref[zero]) {
            zero++;
        }
        assert_int_equal(find_next_bit(map, n, off), next);
        assert_int_equal(find_next_zero_bit(map, n, off), zero);
    }
    assert_int_equal(find_next_bit(map, n, n + 5), n);
}

static void test_single_bits(void **state)
{
    (void)state;
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        size_t n = sizes[s];
        unsigned long *map = bitmap_new(n);
        g_autofree bool *ref = g_new0(bool, n);
        GRand *rand = g_rand_new_with_seed(n);

        check_against(map, ref, n);
        for (size_t k = 0; k < 3 * n; k++) {
            size_t i = g_rand_int_range(rand, 0, n);
            switch (g_rand_int_range(rand, 0, 6)) {
            case 0: set_bit(i, map); ref[i] = true; break;
            case 1: clear_bit(i, map); ref[i] = false; break;
            case 2: set_bit_atomic(i, map); ref[i] = true; break;
            case 3: clear_bit_atomic(i, map); ref[i] = false; break;
            case 4:
                assert_int_equal(test_and_set_bit_atomic(i, map), ref[i]);
                ref[i] = true;
                break;
            case 5:
                assert_int_equal(test_and_clear_bit_atomic(i, map), ref[i]);
                ref[i] = false;
                break;
            }
        }
        check_against(map, ref, n);
        g_rand_free(rand);
        bitmap_free(map);
    }
}

static void test_ranges(void **state)
{
    (void)state;
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        size_t n = sizes[s];
        unsigned long *map = bitmap_new(n);
        g_autofree bool *ref = g_new0(bool, n);
        GRand *rand = g_rand_new_with_seed(1000 + n);

        for (int k = 0; k < 200; k++) {
            size_t start = g_rand_int_range(rand, 0, n);
            size_t nr = g_rand_int_range(rand, 0, n - start + 1);
            bool any = false;
            for (size_t i = start; i < start + nr; i++) {
                any |= ref[i];
            }
            assert_int_equal(bitmap_count_one_range(map, start, nr),
                             ({ size_t c = 0;
                                for (size_t i = start; i < start + nr; i++) {
                                    c += ref[i];
                                }
                                c; }));
            switch (k % 4) {
            case 0: bitmap_set(map, start, nr); break;
            case 1: bitmap_clear(map, start, nr); break;
            case 2: bitmap_set_atomic(map, start, nr); break;
            case 3:
                assert_int_equal(bitmap_test_and_clear_atomic(map, start, nr),
                                 any);
                break;
            }
            for (size_t i = start; i < start + nr; i++) {
                ref[i] = (k % 4 == 0 || k % 4 == 2);
            }
            check_against(map, ref, n);
        }
        g_rand_free(rand);
        bitmap_free(map);
    }
}

/* Range functions must not touch bits outside the range. */
static void test_range_edges(void **state)
{
    (void)state;
    unsigned long *map = bitmap_new(256);

    bitmap_set(map, 60, 10);
    assert_int_equal(bitmap_count_one(map, 256), 10);
    assert_false(test_bit(59, map));
    assert_true(test_bit(60, map));
    assert_true(test_bit(69, map));
    assert_false(test_bit(70, map));
    assert_int_equal(find_first_bit(map, 256), 60);
    assert_int_equal(find_next_zero_bit(map, 256, 60), 70);

    bitmap_set(map, 0, 256);
    assert_true(bitmap_full(map, 256));
    bitmap_clear(map, 64, 64);
    assert_int_equal(bitmap_count_one(map, 256), 192);
    assert_int_equal(find_first_zero_bit(map, 256), 64);
    assert_int_equal(find_next_bit(map, 256, 64), 128);
    assert_false(bitmap_test_and_clear_atomic(map, 64, 64));
    assert_true(bitmap_test_and_clear_atomic(map, 127, 2));
    assert_false(test_bit(128, map));
    assert_true(test_bit(129, map));

    /* Zero-length ranges are no-ops. */
    bitmap_set(map, 70, 0);
    assert_false(bitmap_test_and_clear_atomic(map, 0, 0));
    assert_int_equal(bitmap_count_one_range(map, 0, 0), 0);

    /* Bits beyond the size are ignored by the size-taking queries. */
    unsigned long *small = bitmap_new(10);
    small[0] = ~0UL;
    assert_true(bitmap_full(small, 10));
    assert_int_equal(bitmap_count_one(small, 10), 10);
    assert_int_equal(find_next_zero_bit(small, 10, 0), 10);
    bitmap_free(small);
    bitmap_free(map);
}

/* Threads racing on test_and_set: each bit is won by exactly one. */
typedef struct Racer {
    unsigned long *map;
    size_t nbits;
    size_t won;
} Racer;

static void *racer_fn(void *opaque)
{
    Racer *r = opaque;
    for (size_t i = 0; i < r->nbits; i++) {
        if (!test_and_set_bit_atomic(i, r->map)) {
            r->won++;
        }
    }
    return NULL;
}

static void test_atomic_race(void **state)
{
    (void)state;
    enum { THREADS = 4, NBITS = 1 << 18 };
    unsigned long *map = bitmap_new(NBITS);
    pthread_t t[THREADS];
    Racer r[THREADS];
    size_t total = 0;

    for (int i = 0; i < THREADS; i++) {
        r[i] = (Racer) { map, NBITS, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, racer_fn, &r[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += r[i].won;
    }
    assert_int_equal(total, NBITS);
    assert_true(bitmap_full(map, NBITS));
    bitmap_free(map);
}

/* find_next_and_bit and find_next_zero_and_bit against the model, on
 * random pairs of maps of every size, from every offset. */
static void test_and(void **state)
{
    (void)state;
    GRand *rnd = g_rand_new_with_seed(7);
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        size_t n = sizes[s];
        for (int density = 10; density <= 90; density += 40) {
            unsigned long *a = bitmap_new(n), *b = bitmap_new(n);
            g_autofree bool *both = g_new0(bool, n);
            for (size_t i = 0; i < n; i++) {
                bool x = g_rand_int_range(rnd, 0, 100) < density;
                bool y = g_rand_int_range(rnd, 0, 100) < density;
                if (x) {
                    set_bit(i, a);
                }
                if (y) {
                    set_bit(i, b);
                }
                both[i] = x && y;
            }
            for (size_t off = 0; off <= n; off++) {
                size_t next = off, zero = off;
                while (next < n && !both[next]) {
                    next++;
                }
                while (zero < n && both[zero]) {
                    zero++;
                }
                assert_int_equal(find_next_and_bit(a, b, n, off), next);
                assert_int_equal(find_next_zero_and_bit(a, b, n, off), zero);
            }
            assert_int_equal(find_next_and_bit(a, b, n, n + 5), n);
            bitmap_free(a);
            bitmap_free(b);
        }
    }
    g_rand_free(rnd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/util/bitmap/single-bits", test_single_bits, NULL, NULL, NULL },
        { "/util/bitmap/ranges", test_ranges, NULL, NULL, NULL },
        { "/util/bitmap/range-edges", test_range_edges, NULL, NULL, NULL },
        { "/util/bitmap/atomic-race", test_atomic_race, NULL, NULL, NULL },
        { "/util/bitmap/and", test_and, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("bitmap", tests, NULL, NULL);
}
