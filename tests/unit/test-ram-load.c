/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The destination's page placement (migration/ram-load.c): runs of
 * missing pages through userfaultfd, received ones in place, zero
 * pages skipped in precopy and placed in postcopy, discards, and pages
 * already present (EEXIST).  Skips, saying why, without userfaultfd.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migration/qemu-file.h"
#include "migration/ram-load.h"
#include "qemu/userfaultfd.h"

#define NPAGES  64

typedef struct Fixture {
    RAMBlock *rb;
    RAMLoader l;
    RAMLoadBuf b;
    PagePool pool;              /* the loader's ring, if it has one */
} Fixture;

static int setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    f->rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    ram_loader_init(&f->l, f->rb);
    ram_load_buf_init(&f->b, &f->l);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    ram_load_buf_cleanup(&f->b);
    ram_loader_cleanup(&f->l);
    ram_block_free(f->rb);
    g_free(f);
    return 0;
}

static void need_uffd(Fixture *f)
{
    if (!f->l.registered) {
        print_message("# SKIP: %s\n", f->l.why_no_uffd);
        skip();
    }
}

/* Pages [first, first + n) of data, each filled with its number + @tag. */
static bool load(Fixture *f, uint64_t first, uint32_t n, uint8_t tag)
{
    g_autofree uint8_t *data = g_malloc(n * TARGET_PAGE_SIZE);
    for (uint32_t i = 0; i < n; i++) {
        memset(data + i * TARGET_PAGE_SIZE, (uint8_t)(first + i + tag), TARGET_PAGE_SIZE);
    }
    QEMUFile *mf = qemu_file_new_mem(data, n * TARGET_PAGE_SIZE);
    g_autoptr(GError) err = NULL;
    bool ok = ram_load_pages(&f->l, &f->b, mf, first * TARGET_PAGE_SIZE, n, &err);
    assert_int_equal(qemu_file_close(mf), 0);
    return ok;
}

static void check(Fixture *f, uint64_t page, uint8_t want)
{
    assert_true(ram_load_received(&f->l, page));
    for (int i = 0; i < TARGET_PAGE_SIZE; i++) {
        assert_int_equal(f->rb->host[page * TARGET_PAGE_SIZE + i], want);
    }
}

static void test_runs(void **state)
{
    Fixture *f = *state;
    need_uffd(f);
    assert_true(load(f, 4, 8, 0));
    for (uint64_t p = 4; p < 12; p++) {
        check(f, p, (uint8_t)p);
    }
    assert_false(ram_load_received(&f->l, 3));
    assert_false(ram_load_received(&f->l, 12));
    /* A run half received, half not: both halves land. */
    assert_true(load(f, 8, 8, 100));
    for (uint64_t p = 8; p < 16; p++) {
        check(f, p, (uint8_t)(p + 100));
    }
    check(f, 7, 7);
}

static void test_zero(void **state)
{
    Fixture *f = *state;
    need_uffd(f);
    g_autoptr(GError) err = NULL;
    /* Precopy: a zero page never written stays missing (no touch). */
    assert_true(ram_load_zero(&f->l, &f->b, 0, 2, &err));
    assert_false(ram_load_received(&f->l, 0));
    /* A received page set to zero is cleared in place. */
    assert_true(load(f, 2, 1, 7));
    assert_true(ram_load_zero(&f->l, &f->b, 2 * TARGET_PAGE_SIZE, 1, &err));
    check(f, 2, 0);
    /* Postcopy: a vCPU may wait on it, so it is placed. */
    f->l.postcopy = true;
    assert_true(ram_load_zero(&f->l, &f->b, 5 * TARGET_PAGE_SIZE, 2, &err));
    check(f, 5, 0);
    check(f, 6, 0);
    /* Pages 0-1 were left as zero in precopy: the source counts them
     * sent, so they cannot come again without a discard first. */
    assert_false(ram_load_zero(&f->l, &f->b, 0, 2, &err));
    assert_non_null(strstr(err->message, "arrived again"));
    assert_int_equal(f->l.dup_pages, 2);
}

static void test_zero_left(void **state)
{
    Fixture *f = *state;
    need_uffd(f);
    g_autoptr(GError) err = NULL;
    /* Precopy leaves zero pages of fresh memory unmapped, and says so:
     * the source counts them sent, and every other page is in. */
    assert_true(ram_load_zero(&f->l, &f->b, 3 * TARGET_PAGE_SIZE, 2, &err));
    assert_true(ram_load_zero_left(&f->l, 3));
    assert_true(ram_load_zero_left(&f->l, 4));
    assert_false(ram_load_received(&f->l, 3));
    for (uint64_t p = 0; p < NPAGES; p++) {
        if (p != 3 && p != 4) {
            assert_true(load(f, p, 1, 1));
        }
    }
    assert_true(ram_load_all_received(&f->l));
    /* Dirtied again on the source: it comes again, and is missing now. */
    assert_true(ram_load_discard(&f->l, 4 * TARGET_PAGE_SIZE, 1, &err));
    assert_false(ram_load_zero_left(&f->l, 4));
    assert_false(ram_load_all_received(&f->l));
    /* A fault on page 3 in postcopy: the fault thread maps zeros. */
    assert_true(ram_load_fault_zero(&f->l, 3, &err));
    check(f, 3, 0);
    /* Placed meanwhile by another thread: nothing to do. */
    assert_true(ram_load_fault_zero(&f->l, 3, &err));
    assert_true(load(f, 4, 1, 9));
    assert_true(ram_load_all_received(&f->l));
}

/*
 * Postcopy places a page once and never overwrites a present one: the
 * guest runs here and may have written it.  A page that comes again is
 * refused, counted and left as the guest has it, whether the loader
 * knows it in (received) or finds it present (EEXIST: another thread
 * placed it and has not marked it yet).  In precopy the same pages are
 * overwritten, as a later pass must.
 */
static void test_twice(void **state)
{
    Fixture *f = *state;
    need_uffd(f);
    g_autoptr(GError) err = NULL;
    assert_true(load(f, 8, 2, 0));
    assert_true(load(f, 8, 2, 1));              /* precopy: a later pass */
    check(f, 8, 9);
    f->l.postcopy = true;
    f->rb->host[8 * TARGET_PAGE_SIZE] = 0x77;               /* the guest writes */
    assert_false(load(f, 8, 1, 2));
    assert_int_equal(f->rb->host[8 * TARGET_PAGE_SIZE], 0x77);
    assert_false(ram_load_zero(&f->l, &f->b, 9 * TARGET_PAGE_SIZE, 1, &err));
    check(f, 9, 10);
    g_clear_error(&err);
    /* Present, not marked received: placed meanwhile by another thread. */
    g_autofree uint8_t *other = g_malloc(TARGET_PAGE_SIZE);
    memset(other, 0x33, TARGET_PAGE_SIZE);
    assert_int_equal(uffd_copy(f->l.uffd, f->rb->host + 20 * TARGET_PAGE_SIZE, other, TARGET_PAGE_SIZE,
                               0), TARGET_PAGE_SIZE);
    f->rb->host[20 * TARGET_PAGE_SIZE] = 0x44;              /* the guest writes */
    assert_false(load(f, 20, 1, 5));
    assert_int_equal(f->rb->host[20 * TARGET_PAGE_SIZE], 0x44);
    assert_int_equal(f->rb->host[20 * TARGET_PAGE_SIZE + 1], 0x33);
    assert_false(ram_load_zero(&f->l, &f->b, 20 * TARGET_PAGE_SIZE, 1, &err));
    assert_int_equal(f->rb->host[20 * TARGET_PAGE_SIZE], 0x44);
    assert_int_equal(f->l.dup_pages, 4);
}

/* ram_load_decide walks the table of ram-load.h. */
static void test_decide(void **state)
{
    Fixture *f = *state;
    RAMLoader *l = &f->l;
    need_uffd(f);
    l->postcopy = true;
    assert_int_equal(ram_load_decide(l, true, false, false), RAM_PLACE_TWICE);
    assert_int_equal(ram_load_decide(l, true, true, true), RAM_PLACE_TWICE);
    assert_int_equal(ram_load_decide(l, false, false, true), RAM_PLACE_POOL);
    assert_int_equal(ram_load_decide(l, false, true, true), RAM_PLACE_POOL);
    assert_int_equal(ram_load_decide(l, false, false, false), RAM_PLACE_COPY);
    assert_int_equal(ram_load_decide(l, false, true, false), RAM_PLACE_ZEROPAGE);
    l->postcopy = false;
    assert_int_equal(ram_load_decide(l, true, false, false), RAM_PLACE_OVER);
    assert_int_equal(ram_load_decide(l, false, false, false), RAM_PLACE_COPY);
    assert_int_equal(ram_load_decide(l, false, true, false), RAM_PLACE_ZERO_LEFT);
    f->rb->zeroed = false;
    assert_int_equal(ram_load_decide(l, false, true, false), RAM_PLACE_ZEROPAGE);
    l->in_place = true;
    assert_int_equal(ram_load_decide(l, false, true, false), RAM_PLACE_IN_PLACE);
    l->in_place = false;
    l->registered = false;
    assert_int_equal(ram_load_decide(l, false, false, false), RAM_PLACE_IN_PLACE);
    l->registered = true;
    l->hpages = 512;
    assert_int_equal(ram_load_decide(l, false, true, false), RAM_PLACE_HUGE);
    l->hpages = 1;
}

static void test_discard(void **state)
{
    Fixture *f = *state;
    need_uffd(f);
    g_autoptr(GError) err = NULL;
    assert_true(load(f, 20, 4, 1));
    assert_true(ram_load_discard(&f->l, 21 * TARGET_PAGE_SIZE, 2, &err));
    assert_false(ram_load_received(&f->l, 21));
    assert_false(ram_load_received(&f->l, 22));
    check(f, 20, 21);
    check(f, 23, 24);
    /* Missing again: the next copy goes through userfaultfd. */
    assert_true(load(f, 21, 2, 50));
    check(f, 21, 71);
    check(f, 22, 72);
    assert_false(ram_load_all_received(&f->l));
}

static void test_present(void **state)
{
    /* Preallocated RAM: every page present, UFFDIO_COPY says EEXIST. */
    Fixture *f = g_new0(Fixture, 1);
    f->rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    memset(f->rb->host, 0xee, NPAGES * TARGET_PAGE_SIZE);
    f->rb->zeroed = false;
    ram_loader_init(&f->l, f->rb);
    ram_load_buf_init(&f->b, &f->l);
    *state = f;
    need_uffd(f);
    assert_true(load(f, 0, NPAGES, 3));
    for (uint64_t p = 0; p < NPAGES; p++) {
        check(f, p, (uint8_t)(p + 3));
    }
    assert_true(ram_load_all_received(&f->l));
}

/* Resident in this process (mincore): not a page a fault would ask for. */
static bool resident(Fixture *f, uint64_t page)
{
    unsigned char v = 0;
    assert_int_equal(mincore(f->rb->host + page * TARGET_PAGE_SIZE, TARGET_PAGE_SIZE, &v), 0);
    return v & 1;
}

static void test_discard_missing(void **state)
{
    /*
     * This process wrote pages 0-7 before the migration (as the loader
     * writes the kernel image); postcopy then needs them missing, or the
     * guest would read stale data instead of faulting.  Received pages stay.
     */
    Fixture *f = g_new0(Fixture, 1);
    f->rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    memset(f->rb->host, 0xee, 8 * TARGET_PAGE_SIZE);
    f->rb->zeroed = false;
    ram_loader_init(&f->l, f->rb);
    ram_load_buf_init(&f->b, &f->l);
    *state = f;
    need_uffd(f);
    assert_true(load(f, 2, 3, 7));
    assert_true(load(f, 40, 1, 7));
    g_autoptr(GError) err = NULL;
    assert_true(ram_load_discard_missing(&f->l, &err));
    for (uint64_t p = 0; p < 8; p++) {
        assert_int_equal(resident(f, p), p >= 2 && p < 5);
    }
    assert_true(resident(f, 40));
    check(f, 2, 9);
    check(f, 4, 11);
    check(f, 40, 47);
    /* A dropped page is placed through userfaultfd again. */
    assert_true(load(f, 0, 2, 1));
    check(f, 0, 1);
    check(f, 1, 2);
}

static bool pool_resident(Fixture *f, uint64_t page)
{
    unsigned char v = 0;
    assert_int_equal(mincore(f->l.pool + page * TARGET_PAGE_SIZE, TARGET_PAGE_SIZE, &v), 0);
    return v & 1;
}

static void test_pool(void **state)
{
    /*
     * Preallocated RAM under postcopy: the pages not received move aside
     * into the pool at advise instead of being freed, and arriving pages
     * are read into their pool page and moved into place.
     */
    Fixture *f = g_new0(Fixture, 1);
    MemBackendOptions o = { .type = MEM_BACKEND_RAM, .id = (char *)"m",
                            .size = NPAGES * TARGET_PAGE_SIZE, .prealloc = true };
    f->rb = ram_block_new("pc.ram", &o, NULL);
    memset(f->rb->host, 0xee, 8 * TARGET_PAGE_SIZE);    /* the loader's kernel image */
    f->rb->zeroed = false;
    ram_loader_init(&f->l, f->rb);
    ram_load_buf_init(&f->b, &f->l);
    *state = f;
    need_uffd(f);
    if (!(f->l.features & UFFD_FEATURE_MOVE)) {
        print_message("# SKIP: the kernel has no UFFDIO_MOVE\n");
        skip();
    }
    assert_true(load(f, 2, 3, 7));          /* precopy, before advise */
    g_autoptr(GError) err = NULL;
    assert_true(ram_load_discard_missing(&f->l, &err));
    assert_non_null(f->l.pool);
    for (uint64_t p = 0; p < NPAGES; p++) {
        bool in = p >= 2 && p < 5;
        assert_int_equal(resident(f, p), in);
        assert_int_equal(pool_resident(f, p), !in);
    }
    check(f, 2, 9);
    check(f, 4, 11);
    /* A run arrives: its pool pages move into place, data intact. */
    assert_true(load(f, 10, 8, 1));
    for (uint64_t p = 10; p < 18; p++) {
        check(f, p, (uint8_t)(p + 1));
        assert_false(pool_resident(f, p));
    }
    /* A run partly received: the missing part comes from the pool too. */
    assert_true(load(f, 16, 4, 2));
    for (uint64_t p = 16; p < 20; p++) {
        check(f, p, (uint8_t)(p + 2));
    }
    assert_false(pool_resident(f, 19));
    /* A zero page over the loader's data: placed, and zero. */
    f->l.postcopy = true;
    assert_true(ram_load_zero(&f->l, &f->b, 6 * TARGET_PAGE_SIZE, 1, &err));
    check(f, 6, 0);
    assert_false(pool_resident(f, 6));
    /* Dropped again after it came: no pool page left, so UFFDIO_COPY. */
    assert_true(ram_load_discard(&f->l, 12 * TARGET_PAGE_SIZE, 1, &err));
    assert_false(resident(f, 12));
    assert_true(load(f, 12, 1, 5));
    check(f, 12, 17);
    assert_false(pool_resident(f, 12));
    /* Postcopy done: pool pages never used are freed. */
    assert_true(pool_resident(f, 40));
    ram_loader_unregister(&f->l);
    assert_false(pool_resident(f, 40));
}

static void test_prealloc_precopy(void **state)
{
    /*
     * Preallocated RAM in precopy: every page is mapped, so records go
     * straight into guest RAM, with no userfaultfd call (a failing
     * UFFDIO_COPY per page before).
     */
    Fixture *f = g_new0(Fixture, 1);
    MemBackendOptions o = { .type = MEM_BACKEND_RAM, .id = (char *)"m",
                            .size = NPAGES * TARGET_PAGE_SIZE, .prealloc = true };
    f->rb = ram_block_new("pc.ram", &o, NULL);
    ram_loader_init(&f->l, f->rb);
    ram_load_buf_init(&f->b, &f->l);
    *state = f;
    need_uffd(f);
    assert_true(f->l.in_place);
    int uffd = f->l.uffd;
    f->l.uffd = -1;                 /* any userfaultfd call would fail */
    assert_true(load(f, 2, 3, 7));
    g_autoptr(GError) err = NULL;
    assert_true(ram_load_zero(&f->l, &f->b, 5 * TARGET_PAGE_SIZE, 2, &err));
    f->l.uffd = uffd;
    check(f, 2, 9);
    check(f, 4, 11);
    check(f, 5, 0);
    check(f, 6, 0);
    assert_false(ram_load_received(&f->l, 7));
    /* A discard makes pages missing: placing goes through uffd again. */
    assert_true(ram_load_discard(&f->l, 3 * TARGET_PAGE_SIZE, 1, &err));
    assert_false(f->l.in_place);
    assert_false(resident(f, 3));
    assert_true(load(f, 3, 1, 1));
    check(f, 3, 4);
}

static void test_kept_file(void **state)
{
    /*
     * memory-backend-file on an existing file keeps its contents, so a
     * page not received does not read as zero: a zero record must clear
     * it, in precopy as in postcopy (it was skipped, leaving old data).
     */
    g_autofree char *path = g_strdup("/dev/shm/ferry-test-ram-XXXXXX");
    int fd = g_mkstemp(path);
    assert_true(fd >= 0);
    g_autofree uint8_t *old = g_malloc(NPAGES * TARGET_PAGE_SIZE);
    memset(old, 0xee, NPAGES * TARGET_PAGE_SIZE);
    assert_int_equal(write(fd, old, NPAGES * TARGET_PAGE_SIZE), NPAGES * TARGET_PAGE_SIZE);
    close(fd);
    Fixture *f = g_new0(Fixture, 1);
    MemBackendOptions o = { .type = MEM_BACKEND_FILE, .id = (char *)"m",
                            .size = NPAGES * TARGET_PAGE_SIZE, .share = true,
                            .mem_path = path };
    f->rb = ram_block_new("pc.ram", &o, NULL);
    unlink(path);
    assert_non_null(f->rb);
    assert_false(f->rb->zeroed);
    ram_loader_init(&f->l, f->rb);
    ram_load_buf_init(&f->b, &f->l);
    *state = f;
    g_autoptr(GError) err = NULL;
    assert_true(ram_load_zero(&f->l, &f->b, 3 * TARGET_PAGE_SIZE, 2, &err));
    assert_true(load(f, 5, 1, 0));
    check(f, 3, 0);
    check(f, 4, 0);
    check(f, 5, 5);
    ram_loader_unregister(&f->l);
    assert_int_equal(f->rb->host[6 * TARGET_PAGE_SIZE], 0xee);     /* never sent */
}

/*
 * A discard makes a page missing on every backend, prealloc=on too: the
 * mapping holds no page there, nor the file behind it (mincore looks in
 * the page cache of a file mapping).  A private memfd or file kept its
 * page cache page before, and a vCPU read it, zeros or the file's old
 * data, without a fault.  Each row: type, share, mem-path directory.
 */
static void test_discard_backends(void **state)
{
    static const struct {
        MemBackendType type;
        bool share;
        const char *dir;
    } rows[] = {
        { MEM_BACKEND_RAM, false, NULL },
        { MEM_BACKEND_RAM, true, NULL },
        { MEM_BACKEND_MEMFD, true, NULL },
        { MEM_BACKEND_MEMFD, false, NULL },
        { MEM_BACKEND_FILE, true, "/dev/shm" },
        { MEM_BACKEND_FILE, false, "/dev/shm" },
    };
    (void)state;
    for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
        MemBackendOptions o = { .type = rows[i].type, .id = (char *)"m",
                                .size = NPAGES * TARGET_PAGE_SIZE, .share = rows[i].share,
                                .prealloc = true, .mem_path = (char *)rows[i].dir };
        g_autoptr(GError) err = NULL;
        Fixture f = { .rb = ram_block_new("pc.ram", &o, &err) };
        assert_non_null(f.rb);
        ram_loader_init(&f.l, f.rb);
        memset(f.rb->host + 5 * TARGET_PAGE_SIZE, 0xee, 2 * TARGET_PAGE_SIZE);
        assert_true(resident(&f, 5));
        assert_true(ram_load_discard(&f.l, 5 * TARGET_PAGE_SIZE, 2, &err));
        assert_false(resident(&f, 5));
        assert_false(resident(&f, 6));
        assert_true(resident(&f, 4));
        /* Only a named file the user gave is refused (its own test). */
        assert_true(ram_loader_can_postcopy(&f.l, NULL) || !f.l.registered);
        ram_loader_cleanup(&f.l);
        ram_block_free(f.rb);
    }
}

/*
 * A named file mapped privately: its pages could only be made missing by
 * punching holes in the user's file, so postcopy is refused, saying so.
 */
static void test_private_file_refused(void **state)
{
    (void)state;
    g_autofree char *path = g_strdup("/dev/shm/ferry-test-ram-XXXXXX");
    int fd = g_mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    MemBackendOptions o = { .type = MEM_BACKEND_FILE, .id = (char *)"m",
                            .size = NPAGES * TARGET_PAGE_SIZE, .mem_path = path };
    RAMBlock *rb = ram_block_new("pc.ram", &o, NULL);
    unlink(path);
    assert_non_null(rb);
    RAMLoader l;
    ram_loader_init(&l, rb);
    g_autoptr(GError) err = NULL;
    assert_false(ram_loader_can_postcopy(&l, &err));
    assert_non_null(strstr(err->message, "maps its file privately"));
    ram_loader_cleanup(&l);
    ram_block_free(rb);
}

/*
 * A block of 1 GiB pages cannot be served in postcopy (a request, as a
 * record, carries at most STREAM_MAX_RUN pages): refused at advise,
 * saying so, instead of every request being refused by the run cap.
 */
static void test_huge_1g_refused(void **state)
{
    (void)state;
    RAMBlock *rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    rb->page_size = 1ULL << 30;     /* as a 1 GiB hugetlb block says */
    RAMLoader l;
    ram_loader_init(&l, rb);
    g_autoptr(GError) err = NULL;
    assert_false(ram_loader_can_postcopy(&l, &err));
    assert_non_null(strstr(err->message, "1 GiB huge pages"));
    ram_loader_cleanup(&l);
    rb->page_size = TARGET_PAGE_SIZE;
    ram_block_free(rb);
}

static void test_no_pool(void **state)
{
    /* Without prealloc there is nothing to keep: no pool. */
    Fixture *f = *state;
    need_uffd(f);
    g_autoptr(GError) err = NULL;
    assert_true(ram_load_discard_missing(&f->l, &err));
    assert_null(f->l.pool);
    assert_true(load(f, 0, 4, 0));
    check(f, 3, 3);
}

static void placed_count(void *opaque, uint64_t first, uint64_t n)
{
    (void)first;
    *(uint64_t *)opaque += n;
}

static void test_hook(void **state)
{
    Fixture *f = *state;
    need_uffd(f);
    uint64_t n = 0;
    f->l.placed = placed_count;
    f->l.placed_opaque = &n;
    assert_true(load(f, 30, 5, 0));
    assert_int_equal(n, 5);
}

/* Ranges of RAM for the fault threads: whole host pages, none empty. */
static void test_shard_split(void **state)
{
    (void)state;
    static const struct {
        uint64_t npages, hpages;
        int n, want_n;
        uint64_t want_per;
    } t[] = {
        { 100, 1, 4, 4, 25 },
        { 10, 1, 4, 4, 3 },         /* 3 + 3 + 3 + 1 */
        { 10, 1, 6, 5, 2 },         /* 2 x 5: never an empty sixth */
        { 8, 1, 0, 1, 8 },          /* 0 asks for one */
        { 8, 1, 16, 8, 1 },         /* no more ranges than pages */
        { 2048, 512, 3, 2, 1024 },  /* 4 huge pages: 2 + 2 */
        { 1024, 512, 4, 2, 512 },
        { 1, 512, 4, 1, 512 },      /* less than a huge page */
    };
    for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
        int n = t[i].n;
        uint64_t per = ram_shard_split(t[i].npages, t[i].hpages, &n);
        if (n != t[i].want_n || per != t[i].want_per) {
            print_message("# %" PRIu64 " pages of %" PRIu64 " in %d: %d x %"
                          PRIu64 "\n", t[i].npages, t[i].hpages, t[i].n, n, per);
        }
        assert_int_equal(n, t[i].want_n);
        assert_int_equal(per, t[i].want_per);
        assert_int_equal(per % t[i].hpages, 0);
        assert_true((uint64_t)(n - 1) * per < t[i].npages);
        assert_true((uint64_t)n * per >= t[i].npages);
    }
}

typedef struct Waiter {
    volatile uint8_t *addr;
    uint8_t seen;
    int done;
} Waiter;

static gpointer wait_page(gpointer opaque)
{
    Waiter *w = opaque;
    w->seen = *w->addr;
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/*
 * Each range of RAM has its own userfaultfd, and a page is placed
 * through its range's: the kernel wakes only the waiters of the fd that
 * resolves a fault, so a placement through another's left the vCPU
 * asleep on a page that was in.  A thread waits on a page of each range
 * (none reads the fds: only placement can wake it), and a run across a
 * range's end is placed whole.
 */
static void test_shards(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    *state = f;
    f->rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    ram_loader_init_shards(&f->l, f->rb, 4);
    ram_load_buf_init(&f->b, &f->l);
    need_uffd(f);
    assert_int_equal(f->l.nshards, 4);
    assert_int_equal(f->l.shard_pages, NPAGES / 4);
    assert_int_equal(f->l.uffd, f->l.uffds[0]);
    for (int i = 0; i < 4; i++) {
        assert_true(f->l.uffds[i] >= 0);
        for (int j = 0; j < i; j++) {
            assert_true(f->l.uffds[i] != f->l.uffds[j]);
        }
    }
    assert_int_equal(ram_loader_shard(&f->l, 0), 0);
    assert_int_equal(ram_loader_shard(&f->l, NPAGES / 4 - 1), 0);
    assert_int_equal(ram_loader_shard(&f->l, NPAGES / 4), 1);
    assert_int_equal(ram_loader_shard(&f->l, NPAGES - 1), 3);
    assert_int_equal(ram_loader_uffd(&f->l, NPAGES / 2), f->l.uffds[2]);

    Waiter w[4];
    GThread *th[4];
    for (int i = 0; i < 4; i++) {
        uint64_t page = i * (NPAGES / 4) + 3;
        w[i] = (Waiter) { f->rb->host + page * TARGET_PAGE_SIZE, 0, 0 };
        th[i] = g_thread_new("waiter", wait_page, &w[i]);
    }
    g_usleep(20000);            /* each is asleep on its fault */
    for (int i = 0; i < 4; i++) {
        assert_false(__atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE));
        assert_true(load(f, i * (NPAGES / 4) + 3, 1, 0));
    }
    for (int i = 0; i < 4; i++) {
        int64_t until = g_get_monotonic_time() + 5 * G_TIME_SPAN_SECOND;
        while (!__atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE) &&
               g_get_monotonic_time() < until) {
            g_usleep(1000);
        }
        if (!__atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE)) {
            print_message("# the waiter in range %d was never woken\n", i);
        }
        assert_true(__atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE));
        g_thread_join(th[i]);
        assert_int_equal(w[i].seen, (uint8_t)(i * (NPAGES / 4) + 3));
    }
    /* A run across the end of range 1 into range 2. */
    assert_true(load(f, NPAGES / 2 - 2, 4, 9));
    for (uint64_t p = NPAGES / 2 - 2; p < NPAGES / 2 + 2; p++) {
        check(f, p, (uint8_t)(p + 9));
    }
}

static void wait_done(Waiter *w)
{
    int64_t until = g_get_monotonic_time() + 5 * G_TIME_SPAN_SECOND;
    while (!__atomic_load_n(&w->done, __ATOMIC_ACQUIRE) &&
           g_get_monotonic_time() < until) {
        g_usleep(1000);
    }
    assert_true(__atomic_load_n(&w->done, __ATOMIC_ACQUIRE));
}

/*
 * MINOR mode on a memfd, in two ranges.  In postcopy a page is written
 * into the page cache through the alias and not mapped: a thread waiting
 * on it sleeps on (no fd is read, and nothing woke it) until
 * ram_load_continue maps it; a second CONTINUE is only a wake (EEXIST).
 * A page that comes again is refused and left as the guest has it; a
 * run meeting a page claimed by another thread gives back its claims.  A
 * page written and then
 * touched is a MINOR fault, mapped the same way.  Anonymous RAM is
 * refused, saying why.
 */
static void test_minor(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    *state = f;
    g_autoptr(GError) err = NULL;
    MemBackendOptions o = { .type = MEM_BACKEND_MEMFD, .id = (char *)"m",
                            .size = NPAGES * TARGET_PAGE_SIZE, .share = true };
    f->rb = ram_block_new("pc.ram", &o, &err);
    assert_non_null(f->rb);
    ram_loader_init_full(&f->l, f->rb, 2, true);
    ram_load_buf_init(&f->b, &f->l);
    need_uffd(f);
    assert_true(f->l.minor);
    assert_non_null(f->l.alias);
    assert_int_equal(f->l.nshards, 2);
    /* Precopy maps what it places, as in COPY mode. */
    assert_true(load(f, 1, 1, 0));
    check(f, 1, 1);
    assert_true(ram_load_discard_missing(&f->l, &err));
    f->l.postcopy = true;

    uint64_t page = NPAGES / 2 + 8;             /* in the second range */
    uint8_t *host = f->rb->host + page * TARGET_PAGE_SIZE;
    Waiter w = { host, 0, 0 };
    GThread *th = g_thread_new("waiter", wait_page, &w);
    g_usleep(20000);
    assert_false(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE));
    assert_true(load(f, page, 1, 7));
    assert_true(ram_load_received(&f->l, page));
    assert_int_equal(f->l.alias[page * TARGET_PAGE_SIZE], (uint8_t)(page + 7));
    g_usleep(20000);
    assert_false(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE));
    assert_true(ram_load_continue(&f->l, page, &err));
    wait_done(&w);
    g_thread_join(th);
    assert_int_equal(w.seen, (uint8_t)(page + 7));
    assert_true(ram_load_continue(&f->l, page, &err));      /* EEXIST */

    host[0] = 0x55;                             /* the guest writes it */
    assert_false(load(f, page, 1, 9));
    assert_int_equal(f->l.dup_pages, 1);
    assert_int_equal(host[0], 0x55);
    assert_int_equal(host[1], (uint8_t)(page + 7));

    /* A run meeting a page another thread has claimed (its write under
     * way) is refused, and gives back what it claimed: those pages come
     * again after a recovery and must be taken then. */
    set_bit_atomic(31, f->l.claimed);
    assert_false(load(f, 30, 2, 3));
    clear_bit_atomic(31, f->l.claimed);
    assert_true(load(f, 30, 1, 3));
    assert_int_equal(f->l.alias[30 * TARGET_PAGE_SIZE], (uint8_t)33);

    /* Written first, then touched: a MINOR fault until CONTINUE. */
    assert_true(ram_load_zero(&f->l, &f->b, 20 * TARGET_PAGE_SIZE, 1, &err));
    assert_true(ram_load_received(&f->l, 20));
    w = (Waiter) { f->rb->host + 20 * TARGET_PAGE_SIZE + 9, 0xff, 0 };
    th = g_thread_new("waiter", wait_page, &w);
    g_usleep(20000);
    assert_false(__atomic_load_n(&w.done, __ATOMIC_ACQUIRE));
    assert_true(ram_load_continue(&f->l, 20, &err));
    wait_done(&w);
    g_thread_join(th);
    assert_int_equal(w.seen, 0);

    RAMBlock *anon = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    RAMLoader l;
    ram_loader_init_full(&l, anon, 1, true);
    assert_false(l.registered);
    assert_non_null(strstr(l.why_no_uffd, "MINOR faults need guest RAM shared"));
    assert_false(ram_loader_can_postcopy(&l, NULL));
    ram_loader_cleanup(&l);
    ram_block_free(anon);
}

/*
 * x-postcopy-page-pool: in postcopy a data page is copied into a page of
 * the pool, backed ahead of need, and moved into place (UFFDIO_MOVE): a
 * thread waiting on it is woken and reads it, the pool page is gone to
 * guest RAM and backed again, a zero page is not taken from the pool,
 * and a run of the push takes only while half the pool is backed, the
 * rest by UFFDIO_COPY.  Shared memory is not used for it, saying why.
 */
static void test_ring(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    *state = f;
    g_autoptr(GError) err = NULL;
    f->rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    ram_loader_init(&f->l, f->rb);
    ram_load_buf_init(&f->b, &f->l);
    need_uffd(f);
    if (!(f->l.features & UFFD_FEATURE_MOVE)) {
        print_message("# SKIP: this kernel has no UFFDIO_MOVE\n");
        skip();
    }
    PagePool *pool = &f->pool;
    const char *why;
    assert_true(ram_load_ring_start(&f->l, pool, 4 * TARGET_PAGE_SIZE, &why, &err));
    assert_null(why);
    assert_ptr_equal(f->l.ring, pool);
    int64_t until = g_get_monotonic_time() + 5 * G_TIME_SPAN_SECOND;
    while (__atomic_load_n(&pool->backed, __ATOMIC_RELAXED) < 4 &&
           g_get_monotonic_time() < until) {
        g_usleep(1000);
    }
    assert_true(ram_load_discard_missing(&f->l, &err));
    f->l.postcopy = true;

    Waiter w = { f->rb->host + 9 * TARGET_PAGE_SIZE, 0, 0 };
    GThread *th = g_thread_new("waiter", wait_page, &w);
    g_usleep(20000);
    assert_true(load(f, 9, 1, 5));
    wait_done(&w);
    g_thread_join(th);
    assert_int_equal(w.seen, 14);
    assert_int_equal(pool->placed, 1);
    check(f, 9, 14);

    assert_true(ram_load_zero(&f->l, &f->b, 12 * TARGET_PAGE_SIZE, 1, &err));
    assert_int_equal(pool->placed, 1);
    /* Six pages, not a requested one: moved while more than half the
     * pool is backed (one at least: three of four were), the rest
     * copied; each page counted once, placed or missed. */
    assert_true(load(f, 20, 6, 1));
    for (uint64_t p = 20; p < 26; p++) {
        check(f, p, (uint8_t)(p + 1));
    }
    assert_true(pool->placed >= 2);
    assert_int_equal(pool->placed + pool->missed, 7);
    uint64_t placed = pool->placed;
    ram_loader_unregister(&f->l);
    assert_null(f->l.ring);
    assert_null(pool->base);
    assert_int_equal(pool->placed, placed);

    MemBackendOptions o = { .type = MEM_BACKEND_MEMFD, .id = (char *)"m",
                            .size = NPAGES * TARGET_PAGE_SIZE, .share = true };
    RAMBlock *shared = ram_block_new("pc.ram", &o, &err);
    RAMLoader l;
    ram_loader_init(&l, shared);
    PagePool none = { 0 };
    assert_true(ram_load_ring_start(&l, &none, 1 << 20, &why, &err));
    assert_non_null(strstr(why, "shared memory"));
    assert_null(l.ring);
    ram_loader_cleanup(&l);
    ram_block_free(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/migration/ram-load/runs", test_runs, setup, teardown, NULL },
        { "/migration/ram-load/zero", test_zero, setup, teardown, NULL },
        { "/migration/ram-load/zero-left", test_zero_left, setup, teardown, NULL },
        { "/migration/ram-load/discard", test_discard, setup, teardown, NULL },
        { "/migration/ram-load/twice", test_twice, setup, teardown, NULL },
        { "/migration/ram-load/decide", test_decide, setup, teardown, NULL },
        { "/migration/ram-load/present", test_present, NULL, teardown, NULL },
        { "/migration/ram-load/discard-missing", test_discard_missing, NULL,
          teardown, NULL },
        { "/migration/ram-load/placed-hook", test_hook, setup, teardown, NULL },
        { "/migration/ram-load/pool", test_pool, NULL, teardown, NULL },
        { "/migration/ram-load/no-pool", test_no_pool, setup, teardown, NULL },
        { "/migration/ram-load/prealloc-precopy", test_prealloc_precopy, NULL,
          teardown, NULL },
        { "/migration/ram-load/kept-file", test_kept_file, NULL, teardown, NULL },
        { "/migration/ram-load/discard-backends", test_discard_backends, NULL,
          NULL, NULL },
        { "/migration/ram-load/private-file-refused", test_private_file_refused,
          NULL, NULL, NULL },
        { "/migration/ram-load/huge-1g-refused", test_huge_1g_refused, NULL, NULL,
          NULL },
        { "/migration/ram-load/shard-split", test_shard_split, NULL, NULL, NULL },
        { "/migration/ram-load/shards", test_shards, NULL, teardown, NULL },
        { "/migration/ram-load/minor/memfd", test_minor, NULL, teardown, NULL },
        { "/migration/ram-load/page-pool", test_ring, NULL, teardown, NULL },
    };
    return cmocka_run_group_tests_name("ram-load", tests, NULL, NULL);
}
