/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Bitmaps of pages for migration: dirty, received, requested.
 *
 * A bitmap is an array of unsigned long, bit n in word n / BITS_PER_LONG.
 * Functions that take a size look only at bits below it, whatever the
 * unused bits of the last word hold.
 *
 * Concurrency: the *_atomic functions may race with each other and with
 * test_bit() on the same words (e.g. the fault thread testing the
 * received bitmap while the loader thread sets it).  The plain
 * functions are for bitmaps owned by one thread, or under a lock.
 * Atomic set/clear are sequentially consistent, so a thread that sees a
 * bit set also sees the writes made before it was set (e.g. the page
 * contents before "received").
 *
 * No function here fails; sizes and indexes are in bits.
 */
#ifndef QEMU_BITMAP_H
#define QEMU_BITMAP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#define BITS_PER_LONG           (sizeof(unsigned long) * CHAR_BIT)
#define BIT_WORD(nr)            ((nr) / BITS_PER_LONG)
#define BIT_MASK(nr)            (1UL << ((nr) % BITS_PER_LONG))
#define BITS_TO_LONGS(nr)       (((nr) + BITS_PER_LONG - 1) / BITS_PER_LONG)

/* bitmap_new: a zeroed bitmap of @nbits (g_new0); free with bitmap_free. */
unsigned long *bitmap_new(size_t nbits);
void bitmap_free(unsigned long *map);

/* ---- Single bits --------------------------------------------------------- */

static inline bool test_bit(size_t nr, const unsigned long *map)
{
    return __atomic_load_n(&map[BIT_WORD(nr)], __ATOMIC_RELAXED) & BIT_MASK(nr);
}

static inline void set_bit(size_t nr, unsigned long *map)
{
    map[BIT_WORD(nr)] |= BIT_MASK(nr);
}

static inline void clear_bit(size_t nr, unsigned long *map)
{
    map[BIT_WORD(nr)] &= ~BIT_MASK(nr);
}

static inline void set_bit_atomic(size_t nr, unsigned long *map)
{
    __atomic_fetch_or(&map[BIT_WORD(nr)], BIT_MASK(nr), __ATOMIC_SEQ_CST);
}

static inline void clear_bit_atomic(size_t nr, unsigned long *map)
{
    __atomic_fetch_and(&map[BIT_WORD(nr)], ~BIT_MASK(nr), __ATOMIC_SEQ_CST);
}

/* test_and_set_bit_atomic: set bit @nr; true if it was already set. */
static inline bool test_and_set_bit_atomic(size_t nr, unsigned long *map)
{
    return __atomic_fetch_or(&map[BIT_WORD(nr)], BIT_MASK(nr),
                             __ATOMIC_SEQ_CST) & BIT_MASK(nr);
}

/* test_and_clear_bit_atomic: clear bit @nr; true if it was set. */
static inline bool test_and_clear_bit_atomic(size_t nr, unsigned long *map)
{
    return __atomic_fetch_and(&map[BIT_WORD(nr)], ~BIT_MASK(nr),
                              __ATOMIC_SEQ_CST) & BIT_MASK(nr);
}

/* ---- Searching ------------------------------------------------------------ */

/*
 * find_next_bit: the index of the first set bit at or after @offset,
 * or @size if there is none (also when @offset >= @size).
 */
size_t find_next_bit(const unsigned long *map, size_t size, size_t offset);

/* find_next_zero_bit: as find_next_bit for a clear bit. */
size_t find_next_zero_bit(const unsigned long *map, size_t size,
                          size_t offset);

/* find_next_and_bit: as find_next_bit, for a bit set in both @a and @b. */
size_t find_next_and_bit(const unsigned long *a, const unsigned long *b,
                         size_t size, size_t offset);

/* find_next_zero_and_bit: as find_next_bit, for a bit not set in both. */
size_t find_next_zero_and_bit(const unsigned long *a, const unsigned long *b,
                              size_t size, size_t offset);

static inline size_t find_first_bit(const unsigned long *map, size_t size)
{
    return find_next_bit(map, size, 0);
}

static inline size_t find_first_zero_bit(const unsigned long *map,
                                         size_t size)
{
    return find_next_zero_bit(map, size, 0);
}

/* ---- Counting and whole-map tests ------------------------------------------ */

/* bitmap_count_one: number of set bits in [0, @nbits). */
size_t bitmap_count_one(const unsigned long *map, size_t nbits);

/* bitmap_count_one_range: number of set bits in [@start, @start + @nr). */
size_t bitmap_count_one_range(const unsigned long *map, size_t start,
                              size_t nr);

bool bitmap_empty(const unsigned long *map, size_t nbits);
bool bitmap_full(const unsigned long *map, size_t nbits);

/* ---- Ranges ---------------------------------------------------------------- */

/* bitmap_set / bitmap_clear: bits [@start, @start + @nr), not atomic. */
void bitmap_set(unsigned long *map, size_t start, size_t nr);
void bitmap_clear(unsigned long *map, size_t start, size_t nr);

/* bitmap_set_atomic: set bits [@start, @start + @nr), word by word atomically. */
void bitmap_set_atomic(unsigned long *map, size_t start, size_t nr);

/*
 * bitmap_test_and_clear_atomic: clear bits [@start, @start + @nr)
 * atomically word by word; true if any of them was set.
 */
bool bitmap_test_and_clear_atomic(unsigned long *map, size_t start,
                                  size_t nr);

#endif /* QEMU_BITMAP_H */
