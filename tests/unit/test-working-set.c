/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * x-postcopy-working-set's push order (migration/working-set.c): heat
 * from the passes, the ranking at the switch and its bound, walks of
 * faults and the neighbourhood they claim, and pages sent meanwhile.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>

#include "migration/working-set.h"
#include "qemu/bitmap.h"

#define NPAGES  4096

/* A pass in which the guest wrote @pages (-1 ends the list). */
static void pass(WorkingSet *ws, const int64_t *pages)
{
    unsigned long *d = bitmap_new(NPAGES);
    for (; *pages >= 0; pages++) {
        set_bit(*pages, d);
    }
    working_set_record(ws, d);
    bitmap_free(d);
}

/* Every range @ws hands out now, flattened to its first pages. */
static GArray *drain(WorkingSet *ws, const unsigned long *dirty)
{
    GArray *a = g_array_new(false, false, sizeof(uint64_t));
    WsRange rg[8];
    size_t k;
    while ((k = working_set_next(ws, dirty, rg, G_N_ELEMENTS(rg)))) {
        for (size_t i = 0; i < k; i++) {
            g_array_append_val(a, rg[i].first);
        }
    }
    return a;
}

#define AT(a, i) g_array_index(a, uint64_t, i)

/* Rewritten in more passes ranks first; then the latest; a page written
 * in one pass of several is cold; a page not to send is not named. */
static void test_ranking(void **state)
{
    (void)state;
    WorkingSet ws;
    working_set_init(&ws, NPAGES, 1);
    pass(&ws, (int64_t[]) { 10, 20, 30, 40, -1 });
    pass(&ws, (int64_t[]) { 10, 20, 30, 50, -1 });
    pass(&ws, (int64_t[]) { 20, 30, 40, 60, -1 });
    /* 20, 30: 3 passes; 40: 2 (the first and the last); 10: 2 (the
     * first two); 50, 60: one each, cold.  30 is sent already. */
    unsigned long *dirty = bitmap_new(NPAGES);
    for (int p = 0; p < 100; p++) {
        set_bit(p, dirty);
    }
    clear_bit(30, dirty);
    assert_int_equal(working_set_build(&ws, dirty), 3);
    g_autoptr(GArray) got = drain(&ws, dirty);
    assert_int_equal(got->len, 3);
    assert_int_equal(AT(got, 0), 20);
    assert_int_equal(AT(got, 1), 40);       /* the more recent of the 2s */
    assert_int_equal(AT(got, 2), 10);
    bitmap_free(dirty);
    working_set_cleanup(&ws);
}

/* A page claimed (sent) after the switch is skipped; after one pass,
 * every page written in it counts. */
static void test_one_pass_and_claimed(void **state)
{
    (void)state;
    WorkingSet ws;
    working_set_init(&ws, NPAGES, 1);
    assert_int_equal(working_set_build(&ws, (unsigned long[NPAGES / 64]) {}), 0);
    pass(&ws, (int64_t[]) { 7, 8, 900, -1 });
    unsigned long *dirty = bitmap_new(NPAGES);
    bitmap_set(dirty, 0, NPAGES);
    assert_int_equal(working_set_build(&ws, dirty), 3);
    clear_bit(8, dirty);                    /* a request took it */
    g_autoptr(GArray) got = drain(&ws, dirty);
    assert_int_equal(got->len, 2);
    assert_int_equal(AT(got, 0), 7);
    assert_int_equal(AT(got, 1), 900);
    assert_int_equal(ws.hot_pushed, 2);
    bitmap_free(dirty);
    working_set_cleanup(&ws);
}

/* At most a quarter of the block is ranked, however hot: the highest
 * ranks are the ones kept. */
static void test_bound(void **state)
{
    (void)state;
    WorkingSet ws;
    working_set_init(&ws, NPAGES, 1);
    unsigned long *all = bitmap_new(NPAGES);
    bitmap_set(all, 0, NPAGES);
    working_set_record(&ws, all);
    working_set_record(&ws, all);
    pass(&ws, (int64_t[]) { 4000, -1 });    /* 3 passes: the hottest */
    assert_int_equal(working_set_build(&ws, all), NPAGES / 4);
    g_autoptr(GArray) got = drain(&ws, all);
    assert_int_equal(got->len, NPAGES / 4);
    assert_int_equal(AT(got, 0), 4000);
    assert_int_equal(AT(got, 1), 0);        /* then address order */
    bitmap_free(all);
    working_set_cleanup(&ws);
}

/* Host pages: heat and order by whole host pages (first 4 KiB page). */
static void test_host_pages(void **state)
{
    (void)state;
    WorkingSet ws;
    working_set_init(&ws, NPAGES, 512);
    pass(&ws, (int64_t[]) { 513, 1030, -1 });
    pass(&ws, (int64_t[]) { 1023, -1 });
    unsigned long *dirty = bitmap_new(NPAGES);
    bitmap_set(dirty, 0, NPAGES);
    assert_int_equal(working_set_build(&ws, dirty), 1);
    WsRange rg[4];
    assert_int_equal(working_set_next(&ws, dirty, rg, 4), 1);
    assert_int_equal(rg[0].first, 512);
    assert_int_equal(rg[0].n, 512);
    bitmap_free(dirty);
    working_set_cleanup(&ws);
}

/* Random faults claim no neighbourhood; a walk forward does, growing
 * with it, and the order comes after it. */
static void test_walk(void **state)
{
    (void)state;
    WorkingSet ws;
    working_set_init(&ws, NPAGES, 1);
    pass(&ws, (int64_t[]) { 3000, -1 });
    unsigned long *dirty = bitmap_new(NPAGES);
    bitmap_set(dirty, 0, NPAGES);
    assert_int_equal(working_set_build(&ws, dirty), 1);

    working_set_fault(&ws, 100, 1);
    working_set_fault(&ws, 2000, 1);        /* far: no walk */
    working_set_fault(&ws, 40, 1);          /* backwards: no walk */
    assert_int_equal(ws.streak, 0);

    working_set_fault(&ws, 41, 1);          /* right after: a walk */
    assert_int_equal(ws.streak, 1);
    WsRange rg[4];
    assert_int_equal(working_set_next(&ws, dirty, rg, 4), 1);
    assert_int_equal(rg[0].first, 42);
    assert_int_equal(rg[0].n, WS_NEAR_FIRST);
    /* The walk goes on just past what was pushed: twice as much. */
    working_set_fault(&ws, 42 + WS_NEAR_FIRST + 3, 1);
    assert_int_equal(ws.streak, 2);
    uint64_t near = 0;
    while (working_set_next(&ws, dirty, rg, 4) == 1 && rg[0].first != 3000) {
        assert_int_equal(rg[0].first, 42 + WS_NEAR_FIRST + 4 + near);
        near += rg[0].n;
    }
    assert_int_equal(near, 2 * WS_NEAR_FIRST);
    assert_int_equal(rg[0].first, 3000);    /* then the order */
    assert_int_equal(ws.near_pushed, 3 * WS_NEAR_FIRST);
    /* Pages of the neighbourhood sent already are not counted again. */
    bitmap_clear(dirty, 3420, NPAGES - 3420);
    working_set_fault(&ws, 3400, 1);        /* far from the walk: a new one */
    assert_int_equal(ws.streak, 0);
    working_set_fault(&ws, 3401, 1);
    uint64_t before = ws.near_pushed;
    while (working_set_next(&ws, dirty, rg, 4)) {
    }
    assert_int_equal(ws.near_pushed - before, 3420 - 3402);
    bitmap_free(dirty);
    working_set_cleanup(&ws);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranking),
        cmocka_unit_test(test_one_pass_and_claimed),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_host_pages),
        cmocka_unit_test(test_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
