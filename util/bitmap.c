/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Bitmaps of pages for migration; the contract is in the header.
 */
#include "qemu/bitmap.h"

#include <glib.h>

/* Mask of the bits of a word from bit (@start % BITS_PER_LONG) up. */
#define FIRST_WORD_MASK(start)  (~0UL << ((start) % BITS_PER_LONG))
/* Mask of the bits of the word holding bit @end - 1, up to and with it. */
#define LAST_WORD_MASK(end)     (~0UL >> (-(end) % BITS_PER_LONG))

unsigned long *bitmap_new(size_t nbits)
{
    return g_new0(unsigned long, BITS_TO_LONGS(nbits));
}

void bitmap_free(unsigned long *map)
{
    g_free(map);
}

/*
 * One search for both polarities, of @map or of @map & @and (NULL: @map
 * alone): @invert is 0 to find a set bit and ~0UL to find a clear one.
 */
static size_t find_next(const unsigned long *map, const unsigned long *and,
                        size_t size, size_t offset, unsigned long invert)
{
    if (offset >= size) {
        return size;
    }
    size_t idx = BIT_WORD(offset);
    size_t last = BIT_WORD(size - 1);
    unsigned long word;

    for (word = FIRST_WORD_MASK(offset); ; word = ~0UL) {
        unsigned long w = __atomic_load_n(&map[idx], __ATOMIC_RELAXED);
        if (and) {
            w &= __atomic_load_n(&and[idx], __ATOMIC_RELAXED);
        }
        word &= w ^ invert;
        if (word) {
            break;
        }
        if (++idx > last) {
            return size;
        }
    }
    size_t bit = idx * BITS_PER_LONG + __builtin_ctzl(word);
    return bit < size ? bit : size;
}

size_t find_next_bit(const unsigned long *map, size_t size, size_t offset)
{
    return find_next(map, NULL, size, offset, 0);
}

size_t find_next_zero_bit(const unsigned long *map, size_t size, size_t offset)
{
    return find_next(map, NULL, size, offset, ~0UL);
}

size_t find_next_and_bit(const unsigned long *a, const unsigned long *b,
                         size_t size, size_t offset)
{
    return find_next(a, b, size, offset, 0);
}

size_t find_next_zero_and_bit(const unsigned long *a, const unsigned long *b,
                              size_t size, size_t offset)
{
    return find_next(a, b, size, offset, ~0UL);
}

size_t bitmap_count_one_range(const unsigned long *map, size_t start,
                              size_t nr)
{
    if (nr == 0) {
        return 0;
    }
    size_t end = start + nr;
    size_t first = BIT_WORD(start), last = BIT_WORD(end - 1);
    size_t count = 0;

    for (size_t i = first; i <= last; i++) {
        unsigned long word = __atomic_load_n(&map[i], __ATOMIC_RELAXED);
        if (i == first) {
            word &= FIRST_WORD_MASK(start);
        }
        if (i == last) {
            word &= LAST_WORD_MASK(end);
        }
        count += __builtin_popcountl(word);
    }
    return count;
}

size_t bitmap_count_one(const unsigned long *map, size_t nbits)
{
    return bitmap_count_one_range(map, 0, nbits);
}

bool bitmap_empty(const unsigned long *map, size_t nbits)
{
    return find_first_bit(map, nbits) == nbits;
}

bool bitmap_full(const unsigned long *map, size_t nbits)
{
    return find_first_zero_bit(map, nbits) == nbits;
}

/*
 * Walk [@start, @start + @nr) a word at a time, handing @fn a pointer to
 * each word and the mask of its bits in range.  Returns the OR of what @fn
 * returns.
 */
typedef bool (*WordFn)(unsigned long *word, unsigned long mask);

static bool for_each_word(unsigned long *map, size_t start, size_t nr,
                          WordFn fn)
{
    if (nr == 0) {
        return false;
    }
    size_t end = start + nr;
    size_t first = BIT_WORD(start), last = BIT_WORD(end - 1);
    bool any = false;

    for (size_t i = first; i <= last; i++) {
        unsigned long mask = ~0UL;
        if (i == first) {
            mask &= FIRST_WORD_MASK(start);
        }
        if (i == last) {
            mask &= LAST_WORD_MASK(end);
        }
        any |= fn(&map[i], mask);
    }
    return any;
}

static bool word_set(unsigned long *word, unsigned long mask)
{
    *word |= mask;
    return false;
}

static bool word_clear(unsigned long *word, unsigned long mask)
{
    *word &= ~mask;
    return false;
}

static bool word_set_atomic(unsigned long *word, unsigned long mask)
{
    __atomic_fetch_or(word, mask, __ATOMIC_SEQ_CST);
    return false;
}

static bool word_test_and_clear_atomic(unsigned long *word, unsigned long mask)
{
    return __atomic_fetch_and(word, ~mask, __ATOMIC_SEQ_CST) & mask;
}

void bitmap_set(unsigned long *map, size_t start, size_t nr)
{
    for_each_word(map, start, nr, word_set);
}

void bitmap_clear(unsigned long *map, size_t start, size_t nr)
{
    for_each_word(map, start, nr, word_clear);
}

void bitmap_set_atomic(unsigned long *map, size_t start, size_t nr)
{
    for_each_word(map, start, nr, word_set_atomic);
}

bool bitmap_test_and_clear_atomic(unsigned long *map, size_t start, size_t nr)
{
    return for_each_word(map, start, nr, word_test_and_clear_atomic);
}
