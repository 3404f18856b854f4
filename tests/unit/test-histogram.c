/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests of util/histogram.c: the bucket of every value is contiguous and
 * within 1/16 of it, and percentiles read back against a sorted array.
 */
#include "qemu/histogram.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>

/* Below 32 every value has its own bucket. */
static void test_exact(void **state G_GNUC_UNUSED)
{
    for (uint64_t v = 0; v < 2 * HIST_SUB; v++) {
        assert_int_equal(hist_index(v), v);
        assert_int_equal(hist_upper(v), v);
    }
}

/*
 * Buckets tile the integers: bucket i ends where bucket i + 1 begins,
 * up to the last one, which ends at UINT64_MAX; each value's bucket
 * holds it and ends at most v / 16 above it.
 */
static void test_buckets(void **state G_GNUC_UNUSED)
{
    for (unsigned i = 0; i + 1 < HIST_BUCKETS; i++) {
        uint64_t up = hist_upper(i);
        assert_int_equal(hist_index(up), i);
        assert_int_equal(hist_index(up + 1), i + 1);
    }
    assert_int_equal(hist_index(UINT64_MAX), HIST_BUCKETS - 1);
    assert_true(hist_upper(HIST_BUCKETS - 1) == UINT64_MAX);

    GRand *rnd = g_rand_new_with_seed(5);
    for (int k = 0; k < 100000; k++) {
        int bits = g_rand_int_range(rnd, 1, 65);
        uint64_t v = ((uint64_t)g_rand_int(rnd) << 32 | g_rand_int(rnd)) >>
                     (64 - bits);
        uint64_t up = hist_upper(hist_index(v));
        assert_true(up >= v);
        assert_true(up - v <= v / HIST_SUB);
    }
    g_rand_free(rnd);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentiles against the exact ones of the same sample. */
static void test_percentile(void **state G_GNUC_UNUSED)
{
    Histogram *h = g_new0(Histogram, 1);
    assert_int_equal(hist_percentile(h, 0.5), 0);

    hist_add(h, 73000);
    assert_int_equal(hist_percentile(h, 0), hist_upper(hist_index(73000)));
    assert_int_equal(hist_percentile(h, 1), hist_upper(hist_index(73000)));

    /* A latency-like sample: most near 70 us, a tail to tens of ms. */
    enum { N = 20001 };
    g_autofree uint64_t *v = g_new(uint64_t, N);
    GRand *rnd = g_rand_new_with_seed(7);
    memset(h, 0, sizeof(*h));
    for (int i = 0; i < N; i++) {
        v[i] = g_rand_int_range(rnd, 0, 100) < 95 ?
               (uint64_t)g_rand_int_range(rnd, 40000, 110000) :
               (uint64_t)g_rand_int_range(rnd, 110000, 40000000);
        hist_add(h, v[i]);
    }
    g_rand_free(rnd);
    assert_int_equal(h->count, N);
    qsort(v, N, sizeof(v[0]), cmp_u64);
    const double qs[] = { 0, 0.5, 0.9, 0.99, 0.999, 1 };
    for (size_t k = 0; k < G_N_ELEMENTS(qs); k++) {
        size_t rank = (size_t)(qs[k] * N);
        rank += (double)rank < qs[k] * N;
        uint64_t exact = v[(rank ? rank : 1) - 1];
        uint64_t got = hist_percentile(h, qs[k]);
        assert_true(got >= exact);
        assert_true(got - exact <= exact / HIST_SUB);
    }
    /* Counts up to 2^k - 1 (QEMU's power-of-two buckets) are exact. */
    for (int k = 1; k < 40; k++) {
        uint64_t edge = (1ull << k) - 1, n = 0;
        while (n < N && v[n] <= edge) {
            n++;
        }
        assert_int_equal(hist_count_upto(h, edge), n);
    }
    g_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/util/histogram/exact", test_exact, NULL, NULL, NULL },
        { "/util/histogram/buckets", test_buckets, NULL, NULL, NULL },
        { "/util/histogram/percentile", test_percentile, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("histogram", tests, NULL, NULL);
}
