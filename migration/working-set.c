/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source's working set in postcopy: heat per host page from the
 * precopy passes, the push order at the switch, and fault walks.  The
 * contract and the thread rules are in include/migration/working-set.h.
 */
#include "migration/working-set.h"

#include <glib.h>

#include "qemu/bitmap.h"

/* Of the order, at most this share of the block's host pages: the bound
 * on what a wrong guess costs. */
#define WS_ORDER_SHARE  4

void working_set_init(WorkingSet *ws, uint64_t npages, uint64_t hp)
{
    *ws = (WorkingSet) { .npages = npages, .hp = hp };
    ws->heat = g_new0(uint8_t, npages / hp);
}

void working_set_cleanup(WorkingSet *ws)
{
    g_free(ws->heat);
    g_free(ws->order);
    ws->heat = NULL;
    ws->order = NULL;
    ws->norder = ws->pos = 0;
}

void working_set_record(WorkingSet *ws, const unsigned long *dirty)
{
    uint64_t nh = ws->npages / ws->hp;
    for (uint64_t h = 0; h < nh; h++) {
        ws->heat[h] >>= 1;
    }
    for (uint64_t p = find_first_bit(dirty, ws->npages); p < ws->npages;
         p = find_next_bit(dirty, ws->npages, (p / ws->hp + 1) * ws->hp)) {
        ws->heat[p / ws->hp] |= 0x80;
    }
    ws->passes++;
}

/* The rank of host page @h: passes rewritten, then how recent; 0: cold. */
static unsigned rank(const WorkingSet *ws, uint64_t h, unsigned need)
{
    unsigned heat = ws->heat[h];
    unsigned n = __builtin_popcount(heat);
    return n >= need ? n << 8 | heat : 0;
}

#define WS_RANKS        ((WS_PASSES + 1) << 8)

uint64_t working_set_build(WorkingSet *ws, const unsigned long *dirty)
{
    g_free(ws->order);
    ws->order = NULL;
    ws->norder = ws->pos = 0;
    ws->streak = 0;
    ws->near = ws->near_end = 0;
    if (!ws->passes) {
        return 0;
    }
    unsigned need = MIN(2, ws->passes);
    uint64_t hp = ws->hp, nh = ws->npages / hp;
    g_autofree uint64_t *next = g_new0(uint64_t, WS_RANKS);
    g_autofree uint64_t *end = g_new0(uint64_t, WS_RANKS);

    /* Counting sort, highest rank first, address order within a rank;
     * the lowest ranks that do not fit within the limit are left out. */
    for (uint64_t p = find_first_bit(dirty, ws->npages); p < ws->npages;
         p = find_next_bit(dirty, ws->npages, (p / hp + 1) * hp)) {
        next[rank(ws, p / hp, need)]++;
    }
    uint64_t limit = nh / WS_ORDER_SHARE, total = 0;
    for (unsigned k = WS_RANKS - 1; k > 0; k--) {
        uint64_t c = MIN(next[k], limit - total);
        next[k] = total;
        total += c;
        end[k] = total;
    }
    if (!total) {
        return 0;
    }
    ws->order = g_new(uint64_t, total);
    for (uint64_t p = find_first_bit(dirty, ws->npages); p < ws->npages;
         p = find_next_bit(dirty, ws->npages, (p / hp + 1) * hp)) {
        unsigned k = rank(ws, p / hp, need);
        if (k && next[k] < end[k]) {
            ws->order[next[k]++] = p - p % hp;
        }
    }
    ws->norder = total;
    return total;
}

void working_set_fault(WorkingSet *ws, uint64_t first, uint64_t n)
{
    uint64_t e = first + n;
    /* After the last request, within WS_WALK pages of it or of the end
     * of the neighbourhood pushed after it (the guest reads on past it). */
    if (ws->last_end && first >= ws->last_end &&
        first < MAX(ws->last_end, ws->near_end) + WS_WALK) {
        /* A walk forward: push what follows, more as the walk goes on. */
        ws->streak = MIN(ws->streak + 1, 16);
        uint64_t len = MIN((uint64_t)WS_NEAR_FIRST << (ws->streak - 1),
                           WS_NEAR_MAX);
        ws->near = e;
        ws->near_end = MIN(e + len, ws->npages);
    } else {
        ws->streak = 0;
        ws->near = ws->near_end = 0;
    }
    ws->last_end = e;
}

size_t working_set_next(WorkingSet *ws, const unsigned long *dirty,
                        WsRange *out, size_t max)
{
    uint64_t hp = ws->hp;
    while (ws->near < ws->near_end) {
        uint64_t first = ws->near - ws->near % hp;
        uint64_t n = MIN(MAX(WS_NEAR_FIRST, hp), ws->near_end - first);
        n = (n + hp - 1) / hp * hp;
        ws->near = first + n;
        uint64_t left = bitmap_count_one_range(dirty, first,
                                               MIN(n, ws->npages - first));
        if (left) {
            ws->near_pushed += left;
            out[0] = (WsRange) { first, n };
            return 1;
        }
    }
    size_t k = 0;
    while (k < max && ws->pos < ws->norder) {
        uint64_t p = ws->order[ws->pos++];
        if (test_bit(p, dirty)) {
            ws->hot_pushed += hp;
            out[k++] = (WsRange) { p, hp };
        }
    }
    return k;
}
