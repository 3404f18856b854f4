/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source's RAM saver (migration/ram.c): which pages go as data and
 * which as a zero flag, for private anonymous RAM (where pagemap tells
 * never-touched pages without reading them) and shared RAM (where it
 * must not be trusted), checked against the memory itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/pagemap.h"
#include "system/ramblock.h"

#define NPAGES  64

/* What each page holds before it is sent. */
enum { UNTOUCHED, DATA, ZEROED, DISCARDED, READ_ONLY };

static const int layout[NPAGES] = {
    [0] = DATA, [1] = DATA, [2] = DATA, [3] = DATA,
    [4] = ZEROED, [5] = ZEROED, [6] = ZEROED, [7] = ZEROED,
    [16] = DATA, [17] = DISCARDED, [18] = DISCARDED, [19] = DISCARDED,
    [20] = READ_ONLY, [21] = READ_ONLY, [40] = DATA, [63] = DATA,
};

static void fill(RAMBlock *rb)
{
    volatile uint8_t sink = 0;
    for (int i = 0; i < NPAGES; i++) {
        uint8_t *p = rb->host + (size_t)i * TARGET_PAGE_SIZE;
        switch (layout[i]) {
        case DATA:
            memset(p, 0x40 + i, TARGET_PAGE_SIZE);
            p[TARGET_PAGE_SIZE - 1] = (uint8_t)i;
            break;
        case ZEROED:
            memset(p, 0, TARGET_PAGE_SIZE);
            break;
        case DISCARDED:
            memset(p, 0x77, TARGET_PAGE_SIZE);
            break;
        case READ_ONLY:
            sink += p[0];
            break;
        }
    }
    for (int i = 0; i < NPAGES; i++) {
        if (layout[i] == DISCARDED) {
            /* Private anonymous: the contents go, the page reads zero. */
            assert_int_equal(madvise(rb->host + (size_t)i * TARGET_PAGE_SIZE, TARGET_PAGE_SIZE,
                                     MADV_DONTNEED), 0);
        }
    }
    (void)sink;
}

/* Send the block, replay the records onto a copy, compare; count pages. */
static void send_and_check(RAMBlock *rb, int want_pagemap)
{
    MigrationStats stats = { 0 };
    int cancel = 0;
    RAMSaver r;
    QEMUFile *f = qemu_file_new_mem_writer();

    ram_saver_init(&r, rb, NULL, f, &stats, &cancel);
    if (want_pagemap && r.pagemap_fd < 0) {
        print_message("# SKIP: /proc/self/pagemap cannot be read here\n");
        ram_saver_cleanup(&r);
        g_bytes_unref(qemu_file_mem_finish(f));
        skip();
    }
    assert_int_equal(r.pagemap_fd >= 0, want_pagemap);
    ram_send_pages(&r, f, 0, NPAGES, false);
    g_autoptr(GBytes) out = qemu_file_mem_finish(f);
    if (want_pagemap) {
        /* Never-touched pages were not read: they still have no frame. */
        uint64_t pm[NPAGES];
        assert_int_equal(pagemap_read(r.pagemap_fd, rb->host, NPAGES, pm), 0);
        for (int i = 0; i < NPAGES; i++) {
            if (layout[i] == UNTOUCHED) {
                assert_true(pagemap_never_touched(pm[i]));
            }
        }
    }

    g_autofree uint8_t *copy = g_malloc(NPAGES * TARGET_PAGE_SIZE);
    memset(copy, 0xee, NPAGES * TARGET_PAGE_SIZE);  /* every page must be written */
    gsize len;
    const uint8_t *data = g_bytes_get_data(out, &len);
    QEMUFile *in = qemu_file_new_mem(data, len);
    uint64_t data_pages = 0, zero_pages = 0;
    while (data_pages + zero_pages < NPAGES) {
        uint8_t rec = qemu_get_byte(in);
        uint64_t off = qemu_get_u64(in);
        uint32_t n = qemu_get_u32(in);
        assert_int_equal(qemu_file_error(in), 0);
        assert_true(off % TARGET_PAGE_SIZE == 0 && off / TARGET_PAGE_SIZE + n <= NPAGES && n > 0);
        if (rec == REC_RAM_PAGES) {
            qemu_get_buffer(in, copy + off, (size_t)n * TARGET_PAGE_SIZE);
            data_pages += n;
        } else {
            assert_int_equal(rec, REC_RAM_ZERO);
            memset(copy + off, 0, (size_t)n * TARGET_PAGE_SIZE);
            zero_pages += n;
        }
    }
    assert_int_equal(qemu_file_error(in), 0);
    assert_int_equal(qemu_file_close(in), 0);

    assert_memory_equal(copy, rb->host, NPAGES * TARGET_PAGE_SIZE);
    uint64_t want_data = 0;
    for (int i = 0; i < NPAGES; i++) {
        /* MADV_DONTNEED unmaps a shared page but keeps its contents,
         * and pagemap then shows it as never touched: the trap. */
        want_data += layout[i] == DATA || (rb->shared && layout[i] == DISCARDED);
    }
    assert_int_equal(data_pages, want_data);
    assert_int_equal(stats.normal_pages, want_data);
    assert_int_equal(stats.zero_pages, NPAGES - want_data);
    ram_saver_cleanup(&r);
    assert_int_equal(r.pagemap_fd, -1);
}

/* pagemap_read and pagemap_never_touched against known pages. */
static void test_pagemap(void **state)
{
    (void)state;
    int fd = pagemap_open();
    if (fd < 0) {
        print_message("# SKIP: /proc/self/pagemap: %s\n", strerror(-fd));
        skip();
    }
    g_autoptr(RAMBlock) rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    fill(rb);
    uint64_t pm[NPAGES];
    assert_int_equal(pagemap_read(fd, rb->host, NPAGES, pm), 0);
    for (int i = 0; i < NPAGES; i++) {
        bool untouched = layout[i] == UNTOUCHED || layout[i] == DISCARDED;
        assert_int_equal(pagemap_never_touched(pm[i]), untouched);
    }
    close(fd);
    assert_int_equal(pagemap_read(-1, rb->host, 1, pm), -EBADF);
}

static void test_zero_detect_private(void **state)
{
    (void)state;
    g_autoptr(RAMBlock) rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    fill(rb);
    send_and_check(rb, 1);
}

/* Shared memory keeps pages in the file: every page is looked at. */
static void test_zero_detect_shared(void **state)
{
    (void)state;
    MemBackendOptions o = { .type = MEM_BACKEND_MEMFD, .id = (char *)"mem",
                            .size = NPAGES * TARGET_PAGE_SIZE,
                            .share = true };
    g_autoptr(GError) err = NULL;
    g_autoptr(RAMBlock) rb = ram_block_new("pc.ram", &o, &err);
    if (!rb) {
        fail_msg("%s", err->message);
    }
    fill(rb);
    send_and_check(rb, 0);
}

/*
 * ram_postcopy_discard against its definition: with whole host pages
 * sent, it names exactly the host pages both dirty and sent, as maximal
 * ascending runs.  Random bitmaps, 4 KiB and 16 KiB host pages.
 */
static void check_discard(uint64_t hp, unsigned seed, int dirty_pct,
                          int sent_pct)
{
    enum { N = 4096 + 64 * 3 };         /* not a whole number of words */
    g_autoptr(RAMBlock) rb = ram_block_new_anon("pc.ram", N * TARGET_PAGE_SIZE, NULL);
    MigrationStats stats = { 0 };
    int cancel = 0;
    RAMSaver r;
    QEMUFile *f = qemu_file_new_mem_writer();
    ram_saver_init(&r, rb, NULL, f, &stats, &cancel);
    r.hpages = hp;
    bitmap_clear(r.dirty, 0, N);
    GRand *rnd = g_rand_new_with_seed(seed);
    bool want[N] = { false }, host_dirty[N] = { false };
    for (uint64_t p = 0; p < N; p += hp) {
        bool sent = g_rand_int_range(rnd, 0, 100) < sent_pct;
        bool dirty = false;
        for (uint64_t k = p; k < p + hp; k++) {
            if (sent) {
                set_bit(k, r.sent);
            }
            if (g_rand_int_range(rnd, 0, 100) < dirty_pct) {
                set_bit(k, r.dirty);
                dirty = true;
            }
        }
        for (uint64_t k = p; k < p + hp; k++) {
            want[k] = sent && dirty;
            host_dirty[k] = dirty;
        }
    }
    g_rand_free(rnd);
    uint64_t named = ram_postcopy_discard(&r), wanted = 0;
    for (uint64_t p = 0; p < N; p++) {
        wanted += want[p];
    }
    assert_int_equal(named, wanted);
    g_autoptr(GBytes) out = qemu_file_mem_finish(f);

    gsize len;
    const uint8_t *data = g_bytes_get_data(out, &len);
    QEMUFile *in = qemu_file_new_mem(data, len);
    bool got[N] = { false };
    uint64_t last_end = 0;
    bool any = false;
    assert_int_equal(len % 17, 0);      /* byte, offset, count */
    for (gsize rec = 0; rec < len / 17; rec++) {
        assert_int_equal(qemu_get_byte(in), REC_POSTCOPY_DISCARD);
        uint64_t off = qemu_get_u64(in), n = qemu_get_u64(in);
        assert_int_equal(qemu_file_error(in), 0);
        uint64_t first = off / TARGET_PAGE_SIZE;
        assert_true(off % (hp * TARGET_PAGE_SIZE) == 0 && n > 0 && n % hp == 0);
        assert_true(first + n <= N);
        /* Ascending and maximal: never touching the run before. */
        assert_true(!any || first > last_end);
        for (uint64_t k = first; k < first + n; k++) {
            got[k] = true;
        }
        last_end = first + n;
        any = true;
    }
    assert_int_equal(qemu_file_close(in), 0);
    assert_memory_equal(got, want, sizeof(want));
    /* The dirty bitmap now covers whole host pages; what was dropped
     * there counts as unsent. */
    for (uint64_t p = 0; p < N; p++) {
        assert_int_equal(test_bit(p, r.dirty), host_dirty[p]);
        if (want[p]) {
            assert_false(test_bit(p, r.sent));
        }
    }
    /* Dirtied again after the first discard (the guest ran on): the
     * second names the sent pages dirtied since, once, and no other. */
    QEMUFile *f2 = qemu_file_new_mem_writer();
    r.f = f2;
    uint64_t again = N;
    for (uint64_t p = 0; p < N; p += hp) {
        if (test_bit(p, r.sent) && !test_bit(p, r.dirty)) {
            again = p;
            break;
        }
    }
    uint64_t dropped = N;             /* dropped at the first discard */
    for (uint64_t p = 0; p < N && dropped == N; p += hp) {
        dropped = want[p] ? p : N;
    }
    if (dropped < N) {
        set_bit(dropped, r.dirty);
    }
    if (again < N) {
        set_bit(again, r.dirty);
    }
    assert_int_equal(ram_postcopy_discard(&r), again < N ? hp : 0);
    g_autoptr(GBytes) out2 = qemu_file_mem_finish(f2);
    const uint8_t *d2 = g_bytes_get_data(out2, &len);
    if (again == N) {
        assert_int_equal(len, 0);
    } else {
        assert_int_equal(len, 17);
        in = qemu_file_new_mem(d2, len);
        assert_int_equal(qemu_get_byte(in), REC_POSTCOPY_DISCARD);
        assert_int_equal(qemu_get_u64(in), again * TARGET_PAGE_SIZE);
        assert_int_equal(qemu_get_u64(in), hp);
        assert_int_equal(qemu_file_close(in), 0);
    }
    ram_saver_cleanup(&r);
}

typedef struct PassThread {
    RAMSaver *r;
    bool ok;
} PassThread;

static gpointer run_pass(gpointer opaque)
{
    PassThread *t = opaque;
    t->ok = ram_save_pass(t->r);
    qemu_fflush(t->r->f);
    shutdown(qemu_file_fd(t->r->f), SHUT_WR);   /* the reader sees the end */
    return NULL;
}

/*
 * A pass told to stop (migrate-start-postcopy) while it writes the first
 * half of a 2 MiB host page (records carry 1 MiB) finishes that host
 * page: the destination places a missing huge page only whole.  The
 * pass blocks on a socket that this test reads only after the flag is
 * set, so the flag is seen inside the first host page.
 */
static void test_stop_pass(void **state)
{
    (void)state;
    enum { HP = 512, N = 4 * HP };
    g_autoptr(RAMBlock) rb = ram_block_new_anon("pc.ram", N * TARGET_PAGE_SIZE, NULL);
    memset(rb->host, 0x5a, (size_t)N * TARGET_PAGE_SIZE);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    MigrationStats stats = { 0 };
    int cancel = 0, stop = 0;
    RAMSaver r;
    QEMUFile *f = qemu_file_new(sv[0], true, true);
    ram_saver_init(&r, rb, NULL, f, &stats, &cancel);
    r.hpages = HP;
    r.stop_pass = &stop;
    bitmap_clear(r.clear_pending, 0, 1);    /* no KVM log to clear here */
    PassThread t = { &r, false };
    GThread *th = g_thread_new("pass", run_pass, &t);
    struct pollfd pfd = { .fd = sv[1], .events = POLLIN };
    assert_int_equal(poll(&pfd, 1, 10000), 1);      /* the first run began */
    __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
    uint64_t pages = 0;
    QEMUFile *in = qemu_file_new(sv[1], false, false);
    g_autofree uint8_t *buf = g_malloc(1024 * TARGET_PAGE_SIZE);
    while (pages < HP) {
        uint8_t type = qemu_get_byte(in);
        assert_int_equal(qemu_file_error(in), 0);
        assert_int_equal(type, REC_RAM_PAGES);
        assert_int_equal(qemu_get_u64(in), pages * TARGET_PAGE_SIZE);
        uint32_t n = qemu_get_u32(in);
        assert_true(n > 0 && n <= 1024);
        qemu_get_buffer(in, buf, (size_t)n * TARGET_PAGE_SIZE);
        pages += n;
    }
    g_thread_join(th);
    assert_true(t.ok);
    /* Whole host pages, and the pass ended at the first host page's end. */
    assert_int_equal(pages, HP);
    assert_int_equal(ram_dirty_count(&r), N - HP);
    qemu_file_close(in);
    close(sv[1]);
    ram_saver_cleanup(&r);
    qemu_file_close(f);
}

/*
 * The push's pacing keeps max-postcopy-bandwidth over time when the
 * thread wakes late: simulated, 128 KiB runs at 200 MiB/s, each sleep
 * overrunning by 1 ms (a niced thread on busy CPUs), each send taking
 * 50 us.  Over one second the push must send its limit's worth, within
 * 5 %, and never more than that plus one catch-up burst.
 */
static void test_push_pace(void **state)
{
    (void)state;
    const uint64_t limit = 200ull << 20, run = 128 << 10;
    int64_t now = 0, next = 0;
    uint64_t sent = 0;
    while (now < G_USEC_PER_SEC) {
        if (now < next) {
            now = next + 1000;
            continue;
        }
        next = ram_push_pace(now, next, run, limit);
        sent += run;
        now += 50;
    }
    assert_true(sent >= limit * 95 / 100);
    assert_true(sent <= limit + limit / 10);
}

/*
 * The push's window: a mark's id carries its position in 4 KiB units,
 * 30 bits of them; the position is found again from the stream's end,
 * across the wrap every 4 TiB, rounded down to 4 KiB.
 */
static void test_push_marked_at(void **state)
{
    (void)state;
    static const uint64_t marks[] = { 0, 4095, 4096, 5 << 20, (1ull << 42) - 1,
                                      1ull << 42, (1ull << 42) + 12345,
                                      (7ull << 42) + (3 << 20) + 17 };
    for (unsigned i = 0; i < G_N_ELEMENTS(marks); i++) {
        uint64_t m = marks[i];
        uint32_t id = PUSH_MARK_ID(m);
        assert_true(PUSH_MARK_IS(id));
        assert_int_not_equal(id, 0xffffffffu);      /* the heartbeat's */
        static const uint64_t ahead[] = { 0, 1, PUSH_MARK_MIN, 1 << 20,
                                          (1 << 20) + (256 << 10), 1ull << 40 };
        for (unsigned j = 0; j < G_N_ELEMENTS(ahead); j++) {
            assert_int_equal(ram_push_marked_at(m + ahead[j], id), m & ~4095ull);
        }
    }
    /* Drain rounds' ids and the heartbeat are no marks. */
    assert_false(PUSH_MARK_IS(1));
    assert_false(PUSH_MARK_IS(5));
    assert_false(PUSH_MARK_IS(0xffffffffu));
}

static void test_postcopy_discard(void **state)
{
    (void)state;
    static const int mix[][2] = { { 50, 50 }, { 100, 100 }, { 100, 0 },
                                  { 5, 95 }, { 95, 5 }, { 0, 100 } };
    for (unsigned i = 0; i < G_N_ELEMENTS(mix); i++) {
        for (unsigned seed = 1; seed <= 3; seed++) {
            check_discard(1, seed, mix[i][0], mix[i][1]);
            check_discard(4, seed, mix[i][0], mix[i][1]);
        }
    }
}

/*
 * Recovery: the destination's RECV_BITMAP makes every page it lacks
 * dirty and every page it has clean, whatever the saver thought (a page
 * sent before the break may have been lost on the way), whole host pages
 * at a time; queued requests go (they are asked again).
 */
static void check_rebuild(uint64_t hp, unsigned seed)
{
    enum { N = 4096 + 64 * 3 + 40 };    /* not a whole number of words */
    g_autoptr(RAMBlock) rb = ram_block_new_anon("pc.ram", N * TARGET_PAGE_SIZE, NULL);
    MigrationStats stats = { 0 };
    int cancel = 0;
    RAMSaver r;
    QEMUFile *f = qemu_file_new_mem_writer();
    ram_saver_init(&r, rb, NULL, f, &stats, &cancel);
    r.hpages = hp;
    g_autofree unsigned long *in = bitmap_new(N);
    GRand *rnd = g_rand_new_with_seed(seed);
    for (uint64_t p = 0; p < N; p++) {
        if (g_rand_boolean(rnd)) {
            set_bit(p, r.dirty);            /* noise: must not matter */
        } else {
            clear_bit(p, r.dirty);
        }
    }
    /* Whole host pages in, or not; one host page half in (a huge page
     * the break cut: it is not placed, so only some of its bits could
     * be set if the destination were wrong). */
    for (uint64_t p = 0; p < N; p += hp) {
        if (g_rand_int_range(rnd, 0, 100) < 70) {
            bitmap_set(in, p, MIN(hp, N - p));
        }
    }
    if (hp > 1) {
        bitmap_clear(in, 8 * hp, hp);
        bitmap_set(in, 8 * hp, hp / 2);
    }
    ram_postcopy_request(&r, 3, 1);
    r.rp_ended = 1;
    uint64_t left = ram_postcopy_rebuild(&r, in);
    uint64_t want_left = 0;
    for (uint64_t p = 0; p < N; p += hp) {
        bool whole = true;
        for (uint64_t k = p; k < MIN(p + hp, N); k++) {
            whole &= test_bit(k, in);
        }
        for (uint64_t k = p; k < MIN(p + hp, N); k++) {
            assert_int_equal(test_bit(k, r.dirty), !whole);
            want_left += !whole;
        }
    }
    assert_int_equal(left, want_left);
    assert_int_equal(stats.remaining_pages, want_left);
    assert_true(g_queue_is_empty(&r.requests));
    assert_int_equal(r.rp_ended, 0);
    g_rand_free(rnd);
    ram_saver_cleanup(&r);
    g_bytes_unref(qemu_file_mem_finish(f));
}

static void test_postcopy_rebuild(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 3; seed++) {
        check_rebuild(1, seed);
        check_rebuild(4, seed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/util/pagemap/entries", test_pagemap, NULL, NULL, NULL },
        { "/migration/ram/zero-detect/private", test_zero_detect_private,
          NULL, NULL, NULL },
        { "/migration/ram/zero-detect/shared", test_zero_detect_shared,
          NULL, NULL, NULL },
        { "/migration/ram/stop-pass", test_stop_pass, NULL, NULL, NULL },
        { "/migration/ram/push-pace", test_push_pace, NULL, NULL, NULL },
        { "/migration/ram/push-marked-at", test_push_marked_at, NULL, NULL, NULL },
        { "/migration/ram/postcopy-discard", test_postcopy_discard,
          NULL, NULL, NULL },
        { "/migration/ram/postcopy-rebuild", test_postcopy_rebuild,
          NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("ram", tests, NULL, NULL);
}
