/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Log-linear histogram; contract in include/qemu/histogram.h. */
#include "qemu/histogram.h"

/*
 * Values below 2 * HIST_SUB have a bucket each.  Above, a value whose
 * top bit is bit msb keeps HIST_SUB_BITS bits below it: shift = msb -
 * HIST_SUB_BITS, v >> shift in [HIST_SUB, 2 * HIST_SUB), and the bucket
 * is (shift + 1) * HIST_SUB + (v >> shift) - HIST_SUB, which continues
 * the exact range without a gap (v = 32 -> 32).
 */
unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB) {
        return v;
    }
    unsigned shift = 63 - __builtin_clzll(v) - HIST_SUB_BITS;
    return (shift + 1) * HIST_SUB + (unsigned)(v >> shift) - HIST_SUB;
}

uint64_t hist_upper(unsigned i)
{
    if (i < 2 * HIST_SUB) {
        return i;
    }
    unsigned shift = i / HIST_SUB - 1;
    uint64_t lower = (uint64_t)(HIST_SUB + i % HIST_SUB) << shift;
    return lower + ((1ull << shift) - 1);
}

void hist_add(Histogram *h, uint64_t v)
{
    h->n[hist_index(v)]++;
    h->count++;
}

uint64_t hist_count_upto(const Histogram *h, uint64_t v)
{
    uint64_t n = 0;
    for (unsigned i = 0; i <= hist_index(v); i++) {
        n += h->n[i];
    }
    return n;
}

uint64_t hist_percentile(const Histogram *h, double q)
{
    if (!h->count) {
        return 0;
    }
    double x = q * (double)h->count;
    uint64_t rank = (uint64_t)x;
    if ((double)rank < x) {
        rank++;                     /* ceil without libm */
    }
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->count) {
        rank = h->count;
    }
    uint64_t acc = 0;
    unsigned i = 0;
    for (; i < HIST_BUCKETS - 1; i++) {
        acc += h->n[i];
        if (acc >= rank) {
            break;
        }
    }
    return hist_upper(i);
}

void hist_merge(Histogram *dst, const Histogram *src)
{
    dst->count += src->count;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        dst->n[i] += src->n[i];
    }
}
