/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The pool of pages backed ahead of need (migration/page-pool.c): the
 * filler backs every slot, runs are taken in ring order from the head
 * and never wrap, the push leaves half for requested pages, an empty
 * head is a miss, and slots given back are backed again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>
#include <sys/mman.h>

#include "migration/page-pool.h"

#define SLOTS 8

static bool resident(PagePool *p, uint64_t slot)
{
    unsigned char v = 0;
    assert_int_equal(mincore(p->base + slot * 4096, 4096, &v), 0);
    return v & 1;
}

/* Wait (at most 5 s) until the filler has backed @n pages in all. */
static void wait_backed(PagePool *p, uint64_t n)
{
    int64_t until = g_get_monotonic_time() + 5 * G_TIME_SPAN_SECOND;
    while (__atomic_load_n(&p->backed, __ATOMIC_RELAXED) < n &&
           g_get_monotonic_time() < until) {
        g_usleep(1000);
    }
    assert_int_equal(__atomic_load_n(&p->backed, __ATOMIC_RELAXED), n);
}

static void test_ring(void **state)
{
    (void)state;
    PagePool p;
    g_autoptr(GError) err = NULL;
    assert_true(page_pool_init(&p, SLOTS * 4096, &err));
    assert_int_equal(p.nslots, SLOTS);
    wait_backed(&p, SLOTS);
    for (uint64_t s = 0; s < SLOTS; s++) {
        assert_true(resident(&p, s));
    }
    uint64_t slot, got;
    /* Not urgent (the push): only while more than half is backed. */
    uint8_t *a = page_pool_take(&p, 6, false, &slot, &got);
    assert_ptr_equal(a, p.base);
    assert_int_equal(slot, 0);
    assert_int_equal(got, SLOTS / 2);
    assert_null(page_pool_take(&p, 1, false, &slot, &got));
    assert_int_equal(p.missed, 1);
    /* Urgent (a requested page) takes the rest; a run ends at the
     * ring's end. */
    uint8_t *b = page_pool_take(&p, 6, true, &slot, &got);
    assert_ptr_equal(b, p.base + 4 * 4096);
    assert_int_equal(got, SLOTS / 2);
    /* The head is back at slot 0, taken: a miss, counted. */
    assert_null(page_pool_take(&p, 2, true, &slot, &got));
    assert_int_equal(p.missed, 3);
    /* Moved away (as UFFDIO_MOVE leaves them), given back, backed again. */
    madvise(a, 4 * 4096, MADV_DONTNEED);
    assert_false(resident(&p, 0));
    page_pool_done(&p, 0, 4);
    wait_backed(&p, SLOTS + 4);
    assert_true(resident(&p, 0));
    /* A run stops at a slot still taken (4). */
    a = page_pool_take(&p, 8, true, &slot, &got);
    assert_ptr_equal(a, p.base);
    assert_int_equal(got, 4);
    page_pool_done(&p, 0, 4);
    page_pool_done(&p, 4, 4);
    wait_backed(&p, 2 * SLOTS + 4);
    page_pool_cleanup(&p);
    assert_null(p.base);
    /* The size and the counts stay for query-migrate. */
    assert_int_equal(p.nslots, SLOTS);
    assert_int_equal(p.backed, 2 * SLOTS + 4);
    page_pool_cleanup(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/migration/page-pool/ring", test_ring, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("page-pool", tests, NULL, NULL);
}
