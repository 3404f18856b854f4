/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Log-linear histogram of non-negative integers (nanoseconds, bytes):
 * exact below 2 * HIST_SUB, then HIST_SUB buckets per power of two, so a
 * value read back lies in the same bucket as the one recorded and is at
 * most 1/HIST_SUB (6.25 %) above it.  The shape of HdrHistogram with 4
 * significant bits, in a fixed array: recording neither allocates nor
 * fails, in a few instructions, so it can sit on a fault's path.
 *
 * Not thread-safe: the caller serialises writers and readers.
 */
#ifndef QEMU_HISTOGRAM_H
#define QEMU_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS   4
#define HIST_SUB        (1u << HIST_SUB_BITS)
#define HIST_BUCKETS    ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct Histogram {
    uint64_t count;
    uint64_t n[HIST_BUCKETS];
} Histogram;

/* hist_index: the bucket that holds @v. */
unsigned hist_index(uint64_t v);

/* hist_upper: the largest value bucket @i holds. */
uint64_t hist_upper(unsigned i);

/* hist_add: record @v once. */
void hist_add(Histogram *h, uint64_t v);

/*
 * hist_count_upto: how many recorded values are at most @v; exact when
 * @v is a bucket's upper edge, as 2^k - 1 always is (2^k begins one).
 */
uint64_t hist_count_upto(const Histogram *h, uint64_t v);

/*
 * hist_percentile: the upper edge of the bucket that holds the value of
 * rank ceil(@q * count) (at least 1) among those recorded, @q in [0, 1]:
 * never below the true percentile, at most 6.25 % above it.  0 when
 * nothing was recorded.
 */
uint64_t hist_percentile(const Histogram *h, double q);

/* hist_merge: add every value counted in @src to @dst. */
void hist_merge(Histogram *dst, const Histogram *src);

#endif
