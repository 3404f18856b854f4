/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests of util/userfaultfd.c against the running kernel.
 *
 * Cases run on a table of memory types, as the kernel's uffd selftests
 * do: private anonymous, memfd shared, THP and hugetlb 2 MiB.  A case
 * names the memory types it applies to and the features it needs; when
 * the kernel lacks one, the case skips and says which.  Every case
 * checks what the kernel did (page contents, event fields, return
 * codes), so it fails if the wrapper or the kernel feature breaks.
 */
#include "qemu/userfaultfd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>

#define KiB             (1024UL)
#define MiB             (1024UL * KiB)
#define HUGE_2M         (2 * MiB)
#define AREA_PAGES      4
#define HUGE_RESERVE    16              /* huge pages the hugetlb cases need */
#define EVENT_TIMEOUT_MS 5000

/* ---- Memory types ---------------------------------------------------------- */

typedef enum MemType {
    MEM_ANON,
    MEM_SHMEM,
    MEM_THP,
    MEM_HUGETLB,
    MEM__MAX,
} MemType;

#define M(t)        (1u << (t))
#define MEM_ALL     (M(MEM_ANON) | M(MEM_SHMEM) | M(MEM_THP) | M(MEM_HUGETLB))
#define MEM_PRIVATE (M(MEM_ANON) | M(MEM_THP))

static const char *const mem_names[MEM__MAX] = {
    [MEM_ANON] = "anon", [MEM_SHMEM] = "shmem",
    [MEM_THP] = "thp", [MEM_HUGETLB] = "hugetlb",
};

/* Why hugetlb cases cannot run, or NULL; set once by main(). */
typedef struct HugeReserve {
    long saved;             /* nr_hugepages before we raised it, or -1 */
    char *unavailable;
} HugeReserve;

static HugeReserve huge_reserve = { -1, NULL };

typedef struct MemArea {
    MemType type;
    size_t page;            /* granularity of faults and fills */
    size_t len;
    char *addr;             /* the mapping that is registered */
    char *alias;            /* a second mapping of the same file, or NULL */
    int memfd;
    void *map;              /* what to munmap (THP over-allocates to align) */
    size_t map_len;
} MemArea;

/* ---- Fixture ------------------------------------------------------------------ */

typedef struct Case Case;

typedef struct Fixture {
    const Case *c;
    MemArea mem;
    int uffd;
    uint64_t features;      /* what the kernel offers */
    uint64_t range_ioctls;  /* what UFFDIO_REGISTER allowed on mem */
    char *src;              /* an anonymous source page buffer */
} Fixture;

struct Case {
    const char *name;
    unsigned mems;          /* M(MemType) mask it applies to */
    uint64_t features;      /* features to enable besides the memory's own */
    uint64_t reg_mode;      /* 0: the case registers by itself */
    void (*run)(Fixture *f);
};

typedef struct Param {
    const Case *c;
    MemType type;
    char name[64];
} Param;

static void skip_because(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static void skip_because(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    print_message("# SKIP: %s\n", why);
    skip();
}

/*
 * Test areas come from an address range of their own.  The runtime of
 * the sanitizers keeps pointers into memory of threads that have ended;
 * if the kernel reused such an address for an area that a case then
 * mremaps or unmaps, the runtime would fault on its stale pointer.
 */
static void *map_area(size_t len, int flags, int fd)
{
    static uintptr_t next = 0x200000000000;     /* single-threaded use */
    void *hint = (void *)next;

    next += (len + 4 * HUGE_2M) & ~(HUGE_2M - 1);
    return mmap(hint, len, PROT_READ | PROT_WRITE, flags, fd, 0);
}

static void mem_free(MemArea *m)
{
    if (m->alias) {
        munmap(m->alias, m->len);
    }
    if (m->map) {
        munmap(m->map, m->map_len);
    }
    if (m->memfd >= 0) {
        close(m->memfd);
    }
    memset(m, 0, sizeof(*m));
    m->memfd = -1;
}

static void mem_alloc(MemArea *m, MemType type)
{
    memset(m, 0, sizeof(*m));
    m->memfd = -1;
    m->type = type;
    m->page = type == MEM_HUGETLB ? HUGE_2M : 4 * KiB;

    switch (type) {
    case MEM_ANON:
        m->len = AREA_PAGES * m->page;
        m->map_len = m->len;
        m->map = map_area(m->len, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        assert_true(m->map != MAP_FAILED);
        m->addr = m->map;
        break;
    case MEM_THP: {
        /* Two huge-page-aligned huge pages, so that a whole PMD can move. */
        m->len = 2 * HUGE_2M;
        m->map_len = m->len + HUGE_2M;
        m->map = map_area(m->map_len, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        assert_true(m->map != MAP_FAILED);
        m->addr = (char *)(((uintptr_t)m->map + HUGE_2M - 1) & ~(HUGE_2M - 1));
        if (madvise(m->addr, m->len, MADV_HUGEPAGE) < 0) {
            skip_because("madvise(MADV_HUGEPAGE): %s", strerror(errno));
        }
        break;
    }
    case MEM_SHMEM:
    case MEM_HUGETLB:
        if (type == MEM_HUGETLB && huge_reserve.unavailable) {
            skip_because("%s", huge_reserve.unavailable);
        }
        m->len = AREA_PAGES * m->page;
        m->memfd = memfd_create(mem_names[type], MFD_CLOEXEC |
                                (type == MEM_HUGETLB ? MFD_HUGETLB : 0));
        if (m->memfd < 0) {
            skip_because("memfd_create(%s): %s", mem_names[type],
                         strerror(errno));
        }
        assert_int_equal(ftruncate(m->memfd, m->len), 0);
        m->map_len = m->len;
        m->map = map_area(m->len, MAP_SHARED, m->memfd);
        assert_true(m->map != MAP_FAILED);
        m->addr = m->map;
        m->alias = map_area(m->len, MAP_SHARED, m->memfd);
        assert_true(m->alias != MAP_FAILED);
        break;
    default:
        fail();
    }
}

/* The features a memory type needs for the modes a case registers. */
static uint64_t mem_features(MemType type, uint64_t mode)
{
    uint64_t f = 0;
    bool shared = type == MEM_SHMEM || type == MEM_HUGETLB;

    if (mode & UFFDIO_REGISTER_MODE_MISSING) {
        f |= type == MEM_SHMEM ? UFFD_FEATURE_MISSING_SHMEM :
             type == MEM_HUGETLB ? UFFD_FEATURE_MISSING_HUGETLBFS : 0;
    }
    if (mode & UFFDIO_REGISTER_MODE_WP) {
        f |= UFFD_FEATURE_PAGEFAULT_FLAG_WP;
        f |= shared ? UFFD_FEATURE_WP_HUGETLBFS_SHMEM : 0;
    }
    if (mode & UFFDIO_REGISTER_MODE_MINOR) {
        f |= type == MEM_HUGETLB ? UFFD_FEATURE_MINOR_HUGETLBFS :
             UFFD_FEATURE_MINOR_SHMEM;
    }
    return f;
}

/* Skip, naming them, if any of @want is missing from @have. */
static void require_features(uint64_t have, uint64_t want)
{
    uint64_t missing = want & ~have;
    if (!missing) {
        return;
    }
    GString *names = g_string_new(NULL);
    for (int i = 0; i < 64; i++) {
        uint64_t bit = (uint64_t)1 << i;
        if (missing & bit) {
            const char *n = uffd_feature_name(bit);
            g_string_append_printf(names, " UFFD_FEATURE_%s", n ? n : "?");
        }
    }
    g_autofree char *s = g_string_free(names, false);
    skip_because("kernel lacks%s", s);
}

/* Open a userfaultfd with the case's features; allocate and register. */
static void fixture_start(Fixture *f, const Param *p)
{
    const Case *c = p->c;
    uint64_t want = c->features | mem_features(p->type, c->reg_mode);

    f->c = c;
    mem_alloc(&f->mem, p->type);

    f->uffd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (f->uffd < 0) {
        skip_because("userfaultfd unavailable: %s", strerror(-f->uffd));
    }
    uint64_t have = 0;
    int ret = uffd_api(f->uffd, want, &have, NULL);
    f->features = have;
    require_features(have, want);
    assert_int_equal(ret, 0);

    f->src = mmap(NULL, f->mem.len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(f->src != MAP_FAILED);
    for (size_t i = 0; i < f->mem.len; i++) {
        f->src[i] = (char)(i * 7 + 3);
    }

    if (c->reg_mode) {
        ret = uffd_register(f->uffd, f->mem.addr, f->mem.len, c->reg_mode,
                            &f->range_ioctls);
        assert_int_equal(ret, 0);
    }
}

/* ---- Threads that touch memory ---------------------------------------------- */

typedef struct Toucher {
    pthread_t thread;
    volatile char *addr;
    bool write;
    char value;             /* the byte to write, or the byte read */
    pid_t tid;
    int started;            /* set before the access */
    int done;               /* set after it */
} Toucher;

static void *toucher_fn(void *opaque)
{
    Toucher *t = opaque;

    __atomic_store_n(&t->tid, gettid(), __ATOMIC_SEQ_CST);
    __atomic_store_n(&t->started, 1, __ATOMIC_SEQ_CST);
    if (t->write) {
        *t->addr = t->value;
    } else {
        t->value = *t->addr;
    }
    __atomic_store_n(&t->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void touch_start(Toucher *t, void *addr, bool write, char value)
{
    memset(t, 0, sizeof(*t));
    t->addr = addr;
    t->write = write;
    t->value = value;
    assert_int_equal(pthread_create(&t->thread, NULL, toucher_fn, t), 0);
}

static void touch_join(Toucher *t)
{
    assert_int_equal(pthread_join(t->thread, NULL), 0);
    assert_true(t->done);
}

static bool touch_done(Toucher *t)
{
    return __atomic_load_n(&t->done, __ATOMIC_SEQ_CST);
}

/* Wait for one event; fail after EVENT_TIMEOUT_MS. */
static void wait_event(int uffd, UffdEvent *ev)
{
    struct pollfd pfd = { .fd = uffd, .events = POLLIN };
    int n = poll(&pfd, 1, EVENT_TIMEOUT_MS);
    assert_int_equal(n, 1);
    assert_int_equal(uffd_read_events(uffd, ev, 1), 1);
}

static void expect_fault(Fixture *f, void *addr, uint64_t flags,
                         Toucher *t)
{
    UffdEvent ev;
    wait_event(f->uffd, &ev);
    assert_int_equal(ev.event, UFFD_EVENT_PAGEFAULT);
    assert_int_equal(ev.pagefault.address, (uintptr_t)addr);
    assert_int_equal(ev.pagefault.flags, flags);
    if ((f->features & UFFD_FEATURE_THREAD_ID) && t &&
        (f->c->features & UFFD_FEATURE_THREAD_ID)) {
        assert_int_equal(ev.pagefault.tid, t->tid);
    }
}

static char *page_at(Fixture *f, int n)
{
    return f->mem.addr + n * f->mem.page;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ---- Cases -------------------------------------------------------------------- */

/* A fault raised in one thread, resolved by UFFDIO_COPY from this one. */
static void case_copy(Fixture *f)
{
    size_t pg = f->mem.page;
    Toucher rd, wr;

    assert_true(f->range_ioctls & UFFD_IOCTL_BIT(_UFFDIO_COPY));

    touch_start(&rd, page_at(f, 1), false, 0);
    expect_fault(f, page_at(f, 1), 0, &rd);
    assert_false(touch_done(&rd));
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 1), f->src + pg, pg, 0), pg);
    touch_join(&rd);
    assert_int_equal(rd.value, f->src[pg]);
    assert_memory_equal(page_at(f, 1), f->src + pg, pg);

    touch_start(&wr, page_at(f, 2), true, 0x5a);
    expect_fault(f, page_at(f, 2), UFFD_PAGEFAULT_FLAG_WRITE, &wr);
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 2), f->src, pg, 0), pg);
    touch_join(&wr);
    assert_int_equal(page_at(f, 2)[0], 0x5a);
    assert_memory_equal(page_at(f, 2) + 1, f->src + 1, pg - 1);
}

static void case_zeropage(Fixture *f)
{
    size_t pg = f->mem.page;
    Toucher rd;

    if (f->mem.type == MEM_HUGETLB) {
        /* Documented: hugetlb has no zeropage; the kernel says so twice. */
        assert_false(f->range_ioctls & UFFD_IOCTL_BIT(_UFFDIO_ZEROPAGE));
        assert_int_equal(uffd_zeropage(f->uffd, page_at(f, 0), pg, 0), -EINVAL);
        return;
    }
    assert_true(f->range_ioctls & UFFD_IOCTL_BIT(_UFFDIO_ZEROPAGE));
    /* Make the zero page distinguishable from an untouched alias. */
    touch_start(&rd, page_at(f, 3), false, 0x11);
    expect_fault(f, page_at(f, 3), 0, &rd);
    assert_int_equal(uffd_zeropage(f->uffd, page_at(f, 3), pg, 0), pg);
    touch_join(&rd);
    assert_int_equal(rd.value, 0);
    for (size_t i = 0; i < pg; i++) {
        assert_int_equal(page_at(f, 3)[i], 0);
    }
    /* Several pages in one call. */
    assert_int_equal(uffd_zeropage(f->uffd, page_at(f, 0), 2 * pg, 0), 2 * pg);
    assert_int_equal(page_at(f, 1)[pg - 1], 0);
}

/* DONTWAKE leaves the faulting thread asleep until UFFDIO_WAKE. */
static void case_wake(Fixture *f)
{
    size_t pg = f->mem.page;
    Toucher rd;

    touch_start(&rd, page_at(f, 0), false, 0);
    expect_fault(f, page_at(f, 0), 0, &rd);
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 0), f->src, pg,
                               UFFDIO_COPY_MODE_DONTWAKE), pg);
    sleep_ms(50);
    assert_false(touch_done(&rd));
    assert_int_equal(uffd_wake(f->uffd, page_at(f, 0), pg), 0);
    touch_join(&rd);
    assert_int_equal(rd.value, f->src[0]);
}

/* EEXIST when the page is there, and a partial copy's byte count. */
static void case_eexist(Fixture *f)
{
    size_t pg = f->mem.page;

    assert_int_equal(uffd_copy(f->uffd, page_at(f, 1), f->src, pg, 0), pg);
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 1), f->src, pg, 0), -EEXIST);
    if (f->range_ioctls & UFFD_IOCTL_BIT(_UFFDIO_ZEROPAGE)) {
        assert_int_equal(uffd_zeropage(f->uffd, page_at(f, 1), pg, 0), -EEXIST);
    }
    /* Pages 0..2 with page 1 present: page 0 is copied, then it stops. */
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 0), f->src, 3 * pg, 0), pg);
    assert_memory_equal(page_at(f, 0), f->src, pg);
    assert_memory_equal(page_at(f, 1), f->src, pg);     /* untouched */
    /* The rest goes in after the page that exists. */
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 2), f->src + 2 * pg,
                               2 * pg, 0), 2 * pg);
    assert_memory_equal(page_at(f, 2), f->src + 2 * pg, 2 * pg);
}

/* Write-protect faults carry the WP flag and end when protection is cleared. */
static void case_wp(Fixture *f)
{
    size_t pg = f->mem.page;
    Toucher wr;

    assert_true(f->range_ioctls & UFFD_IOCTL_BIT(_UFFDIO_WRITEPROTECT));
    /* Page 0 placed protected; page 1 placed, then protected. */
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 0), f->src, pg,
                               UFFDIO_COPY_MODE_WP), pg);
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 1), f->src + pg, pg, 0), pg);
    assert_int_equal(uffd_writeprotect(f->uffd, page_at(f, 1), pg,
                                       UFFDIO_WRITEPROTECT_MODE_WP), 0);

    for (int n = 0; n < 2; n++) {
        char *p = page_at(f, n);
        assert_int_equal(p[5], f->src[n * pg + 5]);     /* reads still work */
        touch_start(&wr, p, true, 0x77);
        expect_fault(f, p, UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP,
                     &wr);
        sleep_ms(20);
        assert_false(touch_done(&wr));
        assert_int_equal(p[0], f->src[n * pg]);         /* not written yet */
        assert_int_equal(uffd_writeprotect(f->uffd, p, pg, 0), 0);
        touch_join(&wr);
        assert_int_equal(p[0], 0x77);
    }
    /* Unprotected now: this write must not fault. */
    page_at(f, 1)[1] = 0x78;
    assert_int_equal(page_at(f, 1)[1], 0x78);
}

/* Minor faults on pages in the page cache, resolved with CONTINUE. */
static void case_minor(Fixture *f)
{
    size_t pg = f->mem.page;
    Toucher rd;

    assert_true(f->range_ioctls & UFFD_IOCTL_BIT(_UFFDIO_CONTINUE));
    /* The page cache gets its contents through the other mapping. */
    memcpy(f->mem.alias + pg, f->src, pg);

    touch_start(&rd, page_at(f, 1), false, 0);
    expect_fault(f, page_at(f, 1), UFFD_PAGEFAULT_FLAG_MINOR, &rd);
    assert_int_equal(uffd_continue(f->uffd, page_at(f, 1), pg, 0), pg);
    touch_join(&rd);
    assert_int_equal(rd.value, f->src[0]);
    assert_memory_equal(page_at(f, 1), f->src, pg);
    /* Mapped already: EEXIST; not in the page cache: EFAULT. */
    assert_int_equal(uffd_continue(f->uffd, page_at(f, 1), pg, 0), -EEXIST);
    assert_int_equal(uffd_continue(f->uffd, page_at(f, 3), pg, 0), -EFAULT);
}

/* MOVE places a source page without copying and leaves the source empty. */
static void case_move(Fixture *f)
{
    /* On THP, move a whole huge page: the PMD moves in one step. */
    size_t len = f->mem.type == MEM_THP ? HUGE_2M : f->mem.page;
    MemArea src;
    Toucher rd;

    mem_alloc(&src, f->mem.type);
    memcpy(src.addr, f->src, len);

    touch_start(&rd, page_at(f, 0), false, 0);
    expect_fault(f, page_at(f, 0), 0, &rd);
    assert_int_equal(uffd_move(f->uffd, page_at(f, 0), src.addr, len, 0), len);
    touch_join(&rd);
    assert_int_equal(rd.value, f->src[0]);
    assert_memory_equal(page_at(f, 0), f->src, len);
    /* The source is unmapped: reading it now gives a fresh zero page. */
    assert_int_equal(src.addr[0], 0);
    assert_int_equal(src.addr[len - 1], 0);

    /* Destination present: EEXIST.  A hole in the source: ENOENT, unless
     * holes are allowed, which counts them as moved. */
    memcpy(src.addr + len, f->src, f->mem.page);
    assert_int_equal(uffd_move(f->uffd, page_at(f, 0), src.addr + len,
                               f->mem.page, 0), -EEXIST);
    char *dst2 = f->mem.addr + len;
    char *hole = mmap(NULL, f->mem.page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);  /* never touched */
    assert_true(hole != MAP_FAILED);
    assert_int_equal(uffd_move(f->uffd, dst2, hole, f->mem.page, 0), -ENOENT);
    assert_int_equal(uffd_move(f->uffd, dst2, hole, f->mem.page,
                               UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES), f->mem.page);
    munmap(hole, f->mem.page);
    mem_free(&src);
}

/* Only the signal handler and case_poison, on one thread, use these. */
static sigjmp_buf poison_jmp;
static void *volatile poison_addr;

static void poison_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    poison_addr = si->si_addr;
    siglongjmp(poison_jmp, 1);
}

/* POISON makes an access raise SIGBUS instead of faulting to us. */
static void case_poison(Fixture *f)
{
    size_t pg = f->mem.page;
    struct sigaction sa = { .sa_sigaction = poison_handler,
                            .sa_flags = SA_SIGINFO }, old;
    volatile char *p = page_at(f, 2);
    volatile int got_sigbus = 0;

    assert_int_equal(uffd_poison(f->uffd, page_at(f, 2), pg, 0), pg);
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 1), f->src, pg, 0), pg);
    assert_int_equal(uffd_poison(f->uffd, page_at(f, 1), pg, 0), -EEXIST);

    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGBUS, &sa, &old), 0);
    if (sigsetjmp(poison_jmp, 1) == 0) {
        (void)*p;
    } else {
        got_sigbus = 1;
    }
    sigaction(SIGBUS, &old, NULL);
    assert_true(got_sigbus);
    assert_ptr_equal(poison_addr, p);
    /* Nothing reached the userfaultfd. */
    UffdEvent ev;
    assert_int_equal(uffd_read_events(f->uffd, &ev, 1), 0);
}

/* Unregistering wakes pending faults, which then fault as usual. */
static void case_unregister_pending(Fixture *f)
{
    Toucher rd;

    touch_start(&rd, page_at(f, 2), false, 0x42);
    expect_fault(f, page_at(f, 2), 0, &rd);
    sleep_ms(20);
    assert_false(touch_done(&rd));
    assert_int_equal(uffd_unregister(f->uffd, f->mem.addr, f->mem.len), 0);
    touch_join(&rd);
    assert_int_equal(rd.value, 0);
    /* No longer registered: filling it is refused. */
    assert_int_equal(uffd_copy(f->uffd, page_at(f, 0), f->src, f->mem.page, 0),
                     -ENOENT);
}

/* Several pending faults come back from one read. */
static void case_batch(Fixture *f)
{
    enum { N = AREA_PAGES };
    Toucher t[N];
    UffdEvent ev[16];

    assert_int_equal(uffd_read_events(f->uffd, ev, 16), 0);   /* none yet */
    for (int i = 0; i < N; i++) {
        touch_start(&t[i], page_at(f, i), false, 0);
    }
    for (int i = 0; i < N; i++) {
        while (!__atomic_load_n(&t[i].started, __ATOMIC_SEQ_CST)) {
            sleep_ms(1);
        }
    }
    /* Started threads reach their fault well within this. */
    sleep_ms(200);
    assert_int_equal(uffd_read_events(f->uffd, ev, 1), 1);
    assert_int_equal(uffd_read_events(f->uffd, ev + 1, 16), N - 1);
    unsigned long seen = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(ev[i].event, UFFD_EVENT_PAGEFAULT);
        size_t n = (ev[i].pagefault.address - (uintptr_t)f->mem.addr) /
                   f->mem.page;
        assert_true(n < N);
        seen |= 1UL << n;
    }
    assert_int_equal(seen, (1UL << N) - 1);
    assert_int_equal(uffd_copy(f->uffd, f->mem.addr, f->src, f->mem.len, 0),
                     f->mem.len);
    for (int i = 0; i < N; i++) {
        touch_join(&t[i]);
        assert_int_equal(t[i].value, f->src[i * f->mem.page]);
    }
}

/* Error cases, each with the documented return. */
static void case_errors(Fixture *f)
{
    size_t pg = f->mem.page;
    char *a = f->mem.addr;
    uint64_t missing = UFFDIO_REGISTER_MODE_MISSING;

    /* Unaligned range. */
    assert_int_equal(uffd_register(f->uffd, a + 4096 / 2, pg, missing, NULL),
                     -EINVAL);
    if (pg > 4096) {
        assert_int_equal(uffd_register(f->uffd, a + 4096, pg, missing, NULL),
                         -EINVAL);
    }
    /* Unsupported mode: none, an unknown bit, MINOR on private memory. */
    assert_int_equal(uffd_register(f->uffd, a, f->mem.len, 0, NULL), -EINVAL);
    assert_int_equal(uffd_register(f->uffd, a, f->mem.len, 1 << 6, NULL),
                     -EINVAL);
    if (M(f->mem.type) & MEM_PRIVATE) {
        assert_int_equal(uffd_register(f->uffd, a, f->mem.len,
                                       UFFDIO_REGISTER_MODE_MINOR, NULL),
                         -EINVAL);
    }
    /* Not registered. */
    assert_int_equal(uffd_copy(f->uffd, a, f->src, pg, 0), -ENOENT);
    assert_int_equal(uffd_register(f->uffd, a, f->mem.len, missing, NULL), 0);
    /* Registering again: the same fd may, another one may not. */
    assert_int_equal(uffd_register(f->uffd, a, f->mem.len, missing, NULL), 0);
    int other = uffd_open(O_CLOEXEC | O_NONBLOCK);
    assert_true(other >= 0);
    assert_int_equal(uffd_api(other, 0, NULL, NULL), 0);
    assert_int_equal(uffd_register(other, a, f->mem.len, missing, NULL), -EBUSY);
    assert_int_equal(uffd_close(other), 0);
    /* Unaligned fill, a fill past the mapping. */
    assert_int_equal(uffd_copy(f->uffd, a + 1, f->src, pg, 0), -EINVAL);
    assert_int_equal(uffd_copy(f->uffd, a, f->src, pg / 2, 0), -EINVAL);
    assert_int_equal(uffd_copy(f->uffd, a + f->mem.len, f->src, pg, 0), -ENOENT);
    /* Unmapped range. */
    assert_int_equal(uffd_unregister(f->uffd, a, f->mem.len), 0);
    assert_int_equal(uffd_register(f->uffd, NULL, pg, missing, NULL), -EINVAL);
    /* A closed fd. */
    assert_int_equal(uffd_wake(-1, a, pg), -EBADF);
}

/* Non-cooperative events: remove, unmap, remap and fork. */
typedef struct Trigger {
    pthread_t thread;
    int what;
    void *addr, *to;
    size_t len;
    int ret;
} Trigger;

enum { TRIG_REMOVE, TRIG_UNMAP, TRIG_REMAP, TRIG_FORK };

static void *trigger_fn(void *opaque)
{
    Trigger *t = opaque;

    switch (t->what) {
    case TRIG_REMOVE:
        t->ret = madvise(t->addr, t->len, MADV_DONTNEED);
        break;
    case TRIG_UNMAP:
        t->ret = munmap(t->addr, t->len);
        break;
    case TRIG_REMAP:
        t->ret = mremap(t->addr, t->len, t->len, MREMAP_MAYMOVE | MREMAP_FIXED,
                        t->to) == t->to ? 0 : -1;
        break;
    case TRIG_FORK: {
        /*
         * The raw syscall: the child only exits, so it needs none of the
         * atfork work of libc or of the sanitizers' fork interceptors
         * (which take allocator locks that other threads may hold).
         */
        pid_t pid = syscall(SYS_fork);
        if (pid == 0) {
            syscall(SYS_exit_group, 0);
        }
        int status;
        t->ret = pid < 0 ? -1 : waitpid(pid, &status, 0) == pid &&
                                WIFEXITED(status) ? 0 : -1;
        break;
    }
    }
    return NULL;
}

/*
 * Run one operation in a thread and read the @nev events it raises: a
 * non-cooperative operation sleeps until each of its events is read.
 */
static void trigger(Fixture *f, int what, void *addr, void *to, size_t len,
                    UffdEvent *ev, int nev)
{
    Trigger t = { .what = what, .addr = addr, .to = to, .len = len };
    assert_int_equal(pthread_create(&t.thread, NULL, trigger_fn, &t), 0);
    for (int i = 0; i < nev; i++) {
        wait_event(f->uffd, &ev[i]);
    }
    assert_int_equal(pthread_join(t.thread, NULL), 0);
    assert_int_equal(t.ret, 0);
}

static void case_events(Fixture *f)
{
    size_t pg = f->mem.page;
    char *a = f->mem.addr;
    UffdEvent ev[2];

    assert_int_equal(uffd_copy(f->uffd, a, f->src, f->mem.len, 0), f->mem.len);

    trigger(f, TRIG_REMOVE, a + pg, NULL, pg, ev, 1);
    assert_int_equal(ev[0].event, UFFD_EVENT_REMOVE);
    assert_int_equal(ev[0].range.start, (uintptr_t)(a + pg));
    assert_int_equal(ev[0].range.end, (uintptr_t)(a + 2 * pg));

    /*
     * Move the last page onto a reserved spot.  mremap reports the move,
     * then the unmapping of the old range, and waits for both.
     */
    char *to = map_area(pg, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    assert_true(to != MAP_FAILED);
    trigger(f, TRIG_REMAP, a + 3 * pg, to, pg, ev, 2);
    assert_int_equal(ev[0].event, UFFD_EVENT_REMAP);
    assert_int_equal(ev[0].remap.from, (uintptr_t)(a + 3 * pg));
    assert_int_equal(ev[0].remap.to, (uintptr_t)to);
    assert_int_equal(ev[0].remap.len, pg);
    assert_int_equal(ev[1].event, UFFD_EVENT_UNMAP);
    assert_int_equal(ev[1].range.start, (uintptr_t)(a + 3 * pg));
    assert_int_equal(ev[1].range.end, (uintptr_t)(a + 4 * pg));
    assert_memory_equal(to, f->src + 3 * pg, pg);
    /* The moved page is still registered: unmapping it is reported too. */
    trigger(f, TRIG_UNMAP, to, NULL, pg, ev, 1);
    assert_int_equal(ev[0].event, UFFD_EVENT_UNMAP);
    assert_int_equal(ev[0].range.start, (uintptr_t)to);

    trigger(f, TRIG_FORK, NULL, NULL, 0, ev, 1);
    assert_int_equal(ev[0].event, UFFD_EVENT_FORK);
    assert_true(ev[0].fork.ufd >= 0);
    assert_int_equal(uffd_close(ev[0].fork.ufd), 0);

    trigger(f, TRIG_UNMAP, a + 2 * pg, NULL, pg, ev, 1);
    assert_int_equal(ev[0].event, UFFD_EVENT_UNMAP);
    assert_int_equal(ev[0].range.start, (uintptr_t)(a + 2 * pg));
    assert_int_equal(ev[0].range.end, (uintptr_t)(a + 3 * pg));
}

/*
 * CONTINUE while the address space is changing: a MADV_DONTNEED waits
 * until its REMOVE event is read, and until then every resolving ioctl
 * answers EAGAIN (the caller retries, as ram-load.c's fill does).  Once
 * the event is read and the madvise is done, the same CONTINUE maps the
 * page-cache page.
 */
static void case_minor_eagain(Fixture *f)
{
    size_t pg = f->mem.page;
    memcpy(f->mem.alias + pg, f->src, pg);
    Trigger t = { .what = TRIG_REMOVE, .addr = page_at(f, 3), .len = pg };
    assert_int_equal(pthread_create(&t.thread, NULL, trigger_fn, &t), 0);
    struct pollfd pfd = { .fd = f->uffd, .events = POLLIN };
    assert_int_equal(poll(&pfd, 1, 5000), 1);     /* the event is queued */
    assert_int_equal(uffd_continue(f->uffd, page_at(f, 1), pg, 0), -EAGAIN);
    UffdEvent ev;
    wait_event(f->uffd, &ev);
    assert_int_equal(ev.event, UFFD_EVENT_REMOVE);
    assert_int_equal(pthread_join(t.thread, NULL), 0);
    assert_int_equal(t.ret, 0);
    assert_int_equal(uffd_continue(f->uffd, page_at(f, 1), pg, 0), pg);
    assert_memory_equal(page_at(f, 1), f->src, pg);
}

/*
 * A hole write-protected (the background snapshot's use): with
 * UFFD_FEATURE_WP_UNPOPULATED on anonymous memory, and always on shmem
 * and hugetlb (pte markers), a write into a page never touched faults
 * with the WP flag instead of filling it; cleared, the write lands on a
 * page that reads zero elsewhere.
 */
static void case_wp_hole(Fixture *f)
{
    size_t pg = f->mem.page;
    Toucher wr;
    char *p = page_at(f, 3);

    assert_int_equal(uffd_writeprotect(f->uffd, p, pg,
                                       UFFDIO_WRITEPROTECT_MODE_WP), 0);
    touch_start(&wr, p, true, 0x5a);
    expect_fault(f, p, UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP, &wr);
    sleep_ms(20);
    assert_false(touch_done(&wr));
    assert_int_equal(uffd_writeprotect(f->uffd, p, pg, 0), 0);
    touch_join(&wr);
    assert_int_equal(p[0], 0x5a);
    assert_int_equal(p[1], 0);
}

#define MISSING     UFFDIO_REGISTER_MODE_MISSING

static const Case cases[] = {
    { "copy", MEM_ALL, UFFD_FEATURE_THREAD_ID, MISSING, case_copy },
    { "zeropage", MEM_ALL, 0, MISSING, case_zeropage },
    { "wake", MEM_ALL, 0, MISSING, case_wake },
    { "eexist", MEM_ALL, 0, MISSING, case_eexist },
    { "wp", MEM_ALL, 0, MISSING | UFFDIO_REGISTER_MODE_WP, case_wp },
    { "wp-hole", M(MEM_ANON), UFFD_FEATURE_WP_UNPOPULATED,
      UFFDIO_REGISTER_MODE_WP, case_wp_hole },
    { "wp-hole-shared", M(MEM_SHMEM) | M(MEM_HUGETLB), 0,
      UFFDIO_REGISTER_MODE_WP, case_wp_hole },
    { "minor", M(MEM_SHMEM) | M(MEM_HUGETLB), 0, UFFDIO_REGISTER_MODE_MINOR,
      case_minor },
    { "minor-eagain", M(MEM_SHMEM), UFFD_FEATURE_EVENT_REMOVE,
      UFFDIO_REGISTER_MODE_MINOR, case_minor_eagain },
    { "move", MEM_PRIVATE, UFFD_FEATURE_MOVE, MISSING, case_move },
    { "poison", MEM_ALL, UFFD_FEATURE_POISON, MISSING, case_poison },
    { "unregister-pending", MEM_ALL, 0, MISSING, case_unregister_pending },
    { "batch", MEM_ALL, 0, MISSING, case_batch },
    { "errors", MEM_ALL, 0, 0, case_errors },
    { "events", M(MEM_ANON) | M(MEM_SHMEM),
      UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |
      UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_FORK, MISSING, case_events },
};

/*
 * cmocka passes the test and its fixtures one state pointer.  Setup
 * replaces the Param with a Fixture that points back at it.
 */
typedef struct TableState {
    const Param *p;
    Fixture f;
} TableState;

static int table_setup(void **state)
{
    TableState *s = g_new0(TableState, 1);
    s->p = *state;
    s->f.uffd = -1;
    s->f.mem.memfd = -1;
    *state = s;
    return 0;
}

static int table_teardown(void **state)
{
    TableState *s = *state;
    Fixture *f = &s->f;

    /*
     * Close the userfaultfd first: with EVENT_UNMAP on, munmap of a
     * registered range would wait for a reader that is not there.
     */
    if (f->uffd >= 0) {
        close(f->uffd);
    }
    if (f->src) {
        munmap(f->src, f->mem.len);
    }
    mem_free(&f->mem);
    g_free(s);
    return 0;
}

static void table_run(void **state)
{
    TableState *s = *state;
    fixture_start(&s->f, s->p);
    s->p->c->run(&s->f);
}

/* ---- Tests outside the table ----------------------------------------------------- */

static void test_open(void **state)
{
    (void)state;
    int fd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        skip_because("no userfaultfd: %s", strerror(-fd));
    }
    assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
    assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    assert_int_equal(uffd_close(fd), 0);
    assert_int_equal(uffd_close(fd), -EBADF);
}

static void test_open_syscall(void **state)
{
    (void)state;
    int fd = uffd_open_syscall(O_CLOEXEC);
    if (fd < 0) {
        skip_because("userfaultfd(2) refused: %s", strerror(-fd));
    }
    assert_int_equal(uffd_api(fd, 0, NULL, NULL), 0);
    assert_int_equal(uffd_close(fd), 0);
    /* Flags the syscall does not know. */
    assert_int_equal(uffd_open_syscall(1 << 30), -EINVAL);
}

static void test_open_dev(void **state)
{
    (void)state;
    int fd = uffd_open_dev(O_CLOEXEC);
    if (fd == -ENOENT || fd == -EACCES || fd == -EPERM) {
        skip_because("/dev/userfaultfd: %s", strerror(-fd));
    }
    assert_true(fd >= 0);
    assert_int_equal(uffd_api(fd, 0, NULL, NULL), 0);
    assert_int_equal(uffd_close(fd), 0);
}

static void test_api(void **state)
{
    (void)state;
    uint64_t features = 0, ioctls = 0;
    int ret = uffd_query(&features, &ioctls);
    if (ret < 0) {
        skip_because("no userfaultfd: %s", strerror(-ret));
    }
    uint64_t fd_ioctls = UFFD_IOCTL_BIT(_UFFDIO_API) |
                         UFFD_IOCTL_BIT(_UFFDIO_REGISTER) |
                         UFFD_IOCTL_BIT(_UFFDIO_UNREGISTER);
    assert_int_equal(ioctls & fd_ioctls, fd_ioctls);

    int fd = uffd_open(O_CLOEXEC);
    assert_true(fd >= 0);
    /* A feature nobody has: refused. */
    assert_int_equal(uffd_api(fd, (uint64_t)1 << 63, NULL, NULL), -EINVAL);
    uffd_close(fd);

    fd = uffd_open(O_CLOEXEC);
    assert_true(fd >= 0);
    uint64_t want = features & UFFD_FEATURE_THREAD_ID;
    assert_int_equal(uffd_api(fd, want, NULL, NULL), 0);
    /* Only once per fd. */
    assert_int_equal(uffd_api(fd, want, NULL, NULL), -EINVAL);
    uffd_close(fd);
}

static void test_feature_names(void **state)
{
    (void)state;
    assert_string_equal(uffd_feature_name(UFFD_FEATURE_MOVE), "MOVE");
    assert_string_equal(uffd_feature_name(UFFD_FEATURE_THREAD_ID), "THREAD_ID");
    assert_null(uffd_feature_name((uint64_t)1 << 62));
    assert_null(uffd_feature_name(0));
}

static void test_decode(void **state)
{
    (void)state;
    struct uffd_msg msg;
    UffdEvent ev;

    memset(&msg, 0, sizeof(msg));
    msg.event = UFFD_EVENT_PAGEFAULT;
    msg.arg.pagefault.address = 0x7f0000123000;
    msg.arg.pagefault.flags = UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP;
    msg.arg.pagefault.feat.ptid = 4321;
    uffd_decode(&msg, &ev);
    assert_int_equal(ev.event, UFFD_EVENT_PAGEFAULT);
    assert_int_equal(ev.pagefault.address, 0x7f0000123000);
    assert_int_equal(ev.pagefault.flags,
                     UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
    assert_int_equal(ev.pagefault.tid, 4321);

    memset(&msg, 0, sizeof(msg));
    msg.event = UFFD_EVENT_FORK;
    msg.arg.fork.ufd = 17;
    uffd_decode(&msg, &ev);
    assert_int_equal(ev.fork.ufd, 17);

    memset(&msg, 0, sizeof(msg));
    msg.event = UFFD_EVENT_REMAP;
    msg.arg.remap.from = 0x1000;
    msg.arg.remap.to = 0x9000;
    msg.arg.remap.len = 0x2000;
    uffd_decode(&msg, &ev);
    assert_int_equal(ev.remap.from, 0x1000);
    assert_int_equal(ev.remap.to, 0x9000);
    assert_int_equal(ev.remap.len, 0x2000);

    for (int e = UFFD_EVENT_REMOVE; e <= UFFD_EVENT_UNMAP; e++) {
        memset(&msg, 0, sizeof(msg));
        msg.event = e;
        msg.arg.remove.start = 0x4000;
        msg.arg.remove.end = 0x6000;
        uffd_decode(&msg, &ev);
        assert_int_equal(ev.event, e);
        assert_int_equal(ev.range.start, 0x4000);
        assert_int_equal(ev.range.end, 0x6000);
    }

    memset(&msg, 0xff, sizeof(msg));
    msg.event = 0x7e;
    uffd_decode(&msg, &ev);
    assert_int_equal(ev.event, 0x7e);
    assert_int_equal(ev.pagefault.address, 0);

    assert_int_equal(uffd_read_events(-1, &ev, 1), -EBADF);
    assert_int_equal(uffd_read_events(0, &ev, 0), -EINVAL);
}

/* ---- Huge page reservation ------------------------------------------------------- */

static long read_long(const char *path)
{
    g_autofree char *s = NULL;
    if (!g_file_get_contents(path, &s, NULL, NULL)) {
        return -1;
    }
    return strtol(s, NULL, 10);
}

/* A sysfs file takes a plain write, not glib's write-and-rename. */
static bool write_long(const char *path, long v)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        return false;
    }
    bool ok = fprintf(f, "%ld", v) > 0;
    return fclose(f) == 0 && ok;
}

#define HP_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB/"

/* Make sure HUGE_RESERVE 2 MiB pages are free, raising the pool if we may. */
static void huge_reserve_init(HugeReserve *r)
{
    long free_pages = read_long(HP_DIR "free_hugepages");
    long total = read_long(HP_DIR "nr_hugepages");

    if (free_pages < 0 || total < 0) {
        r->unavailable = g_strdup("no 2 MiB hugetlb pool (" HP_DIR ")");
        return;
    }
    if (free_pages >= HUGE_RESERVE) {
        return;
    }
    if (write_long(HP_DIR "nr_hugepages", total + HUGE_RESERVE - free_pages)) {
        r->saved = total;
    }
    free_pages = read_long(HP_DIR "free_hugepages");
    if (free_pages < HUGE_RESERVE) {
        r->unavailable = g_strdup_printf(
            "%ld free 2 MiB huge pages, %d needed (raise "
            "/proc/sys/vm/nr_hugepages as root)", free_pages, HUGE_RESERVE);
    }
}

static void huge_reserve_cleanup(HugeReserve *r)
{
    if (r->saved >= 0) {
        write_long(HP_DIR "nr_hugepages", r->saved);
    }
    g_free(r->unavailable);
}

int main(int argc, char **argv)
{
    static const struct CMUnitTest plain[] = {
        { "/util/userfaultfd/open", test_open, NULL, NULL, NULL },
        { "/util/userfaultfd/open/syscall", test_open_syscall, NULL, NULL, NULL },
        { "/util/userfaultfd/open/dev", test_open_dev, NULL, NULL, NULL },
        { "/util/userfaultfd/api", test_api, NULL, NULL, NULL },
        { "/util/userfaultfd/feature-names", test_feature_names, NULL, NULL,
          NULL },
        { "/util/userfaultfd/decode", test_decode, NULL, NULL, NULL },
    };
    const size_t nplain = G_N_ELEMENTS(plain);
    const size_t ncases = G_N_ELEMENTS(cases);
    g_autofree Param *params = g_new0(Param, ncases * MEM__MAX);
    g_autofree struct CMUnitTest *tests = g_new0(struct CMUnitTest,
                                                 nplain + ncases * MEM__MAX);
    size_t n = 0;

    for (size_t i = 0; i < nplain; i++) {
        tests[n++] = plain[i];
    }
    for (size_t c = 0; c < ncases; c++) {
        for (int t = 0; t < MEM__MAX; t++) {
            if (!(cases[c].mems & M(t))) {
                continue;
            }
            Param *p = &params[c * MEM__MAX + t];
            p->c = &cases[c];
            p->type = t;
            snprintf(p->name, sizeof(p->name), "/util/userfaultfd/%s/%s",
                     cases[c].name, mem_names[t]);
            tests[n++] = (struct CMUnitTest) {
                .name = p->name, .test_func = table_run,
                .setup_func = table_setup, .teardown_func = table_teardown,
                .initial_state = p,
            };
        }
    }

    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);    /* a glob of test names */
    }
    huge_reserve_init(&huge_reserve);
    int failed = _cmocka_run_group_tests("userfaultfd", tests, n, NULL, NULL);
    huge_reserve_cleanup(&huge_reserve);
    return failed ? 1 : 0;
}
