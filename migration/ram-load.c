/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Destination RAM placement; the contract is in include/migration/ram-load.h. */
#include "migration/ram-load.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

#include <gio/gio.h>

#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/userfaultfd.h"


uint64_t ram_shard_split(uint64_t npages, uint64_t hpages, int *n)
{
    uint64_t hosts = npages / hpages;
    if (*n < 1) {
        *n = 1;
    }
    if (hosts <= 1) {
        *n = 1;             /* less than a host page: one range, all of it */
        return MAX(npages, hpages);
    }
    if ((uint64_t)*n > hosts) {
        *n = (int)hosts;
    }
    uint64_t per = (hosts + *n - 1) / *n * hpages;
    /* Rounding up may leave the last ranges empty: 10 host pages in 4
     * ranges are 3 + 3 + 3 + 1, in 6 they are 2 x 5, never 2 x 5 + 0. */
    *n = (int)((npages + per - 1) / per);
    return per;
}

/* Range @i's pages: [first, first + *n). */
static uint64_t shard_range(const RAMLoader *l, int i, uint64_t *n)
{
    uint64_t first = (uint64_t)i * l->shard_pages;
    *n = MIN(l->shard_pages, l->npages - first);
    return first;
}

/* Open range @i's userfaultfd and register it; false with why_no_uffd. */
static bool shard_register(RAMLoader *l, int i)
{
    uint64_t mode = UFFDIO_REGISTER_MODE_MISSING |
                    (l->minor ? UFFDIO_REGISTER_MODE_MINOR : 0);
    RAMBlock *rb = l->rb;
    uint64_t n, first = shard_range(l, i, &n);
    uint8_t *start = rb->host + first * TARGET_PAGE_SIZE;
    int fd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        l->why_no_uffd = g_strdup_printf("userfaultfd is not available: %s",
                                         g_strerror(-fd));
        return false;
    }
    int ret = uffd_api(fd, l->features, NULL, NULL);
    if (ret < 0) {
        l->why_no_uffd = g_strdup_printf("UFFDIO_API: %s", g_strerror(-ret));
        uffd_close(fd);
        return false;
    }
    uint64_t ioctls = 0;
    ret = uffd_register(fd, start, n * TARGET_PAGE_SIZE, mode, &ioctls);
    if (ret < 0) {
        l->why_no_uffd = g_strdup_printf("this RAM backend cannot be registered "
                                         "with userfaultfd: %s", g_strerror(-ret));
        uffd_close(fd);
        return false;
    }
    uint64_t need = UFFD_IOCTL_BIT(_UFFDIO_COPY) | UFFD_IOCTL_BIT(_UFFDIO_WAKE) |
                    (l->minor ? UFFD_IOCTL_BIT(_UFFDIO_CONTINUE) : 0);
    if ((ioctls & need) != need) {
        l->why_no_uffd = g_strdup("userfaultfd cannot place pages in this RAM "
                                  "backend (no UFFDIO_COPY)");
        uffd_unregister(fd, start, n * TARGET_PAGE_SIZE);
        uffd_close(fd);
        return false;
    }
    l->uffds[i] = fd;
    return true;
}

/* Unregister and close ranges [0, @upto). */
static void shards_close(RAMLoader *l, int upto)
{
    for (int i = 0; i < upto; i++) {
        uint64_t n, first = shard_range(l, i, &n);
        if (l->registered) {
            uffd_unregister(l->uffds[i], l->rb->host + first * TARGET_PAGE_SIZE,
                            n * TARGET_PAGE_SIZE);
        }
        uffd_close(l->uffds[i]);
        l->uffds[i] = -1;
    }
    l->uffd = -1;
}

void ram_loader_init(RAMLoader *l, RAMBlock *rb)
{
    ram_loader_init_shards(l, rb, 1);
}

void ram_loader_init_shards(RAMLoader *l, RAMBlock *rb, int nshards)
{
    ram_loader_init_full(l, rb, nshards, false);
}

/*
 * MINOR mode's needs: a file to map twice, and the kernel's MINOR
 * feature for its kind of memory.  The features to ask for; false with
 * why_no_uffd.
 */
static bool minor_setup(RAMLoader *l, uint64_t avail, uint64_t *features)
{
    RAMBlock *rb = l->rb;
    uint64_t want = rb->page_size > TARGET_PAGE_SIZE ? UFFD_FEATURE_MINOR_HUGETLBFS
                                                     : UFFD_FEATURE_MINOR_SHMEM;
    if (rb->fd < 0 || !rb->shared) {
        l->why_no_uffd = g_strdup("MINOR faults need guest RAM shared with a "
                                  "file (memory-backend-memfd, or "
                                  "memory-backend-file with share=on)");
        return false;
    }
    if (!(avail & want)) {
        l->why_no_uffd = g_strdup_printf("this kernel has no userfaultfd %s",
                                         uffd_feature_name(want));
        return false;
    }
    void *alias = mmap(NULL, rb->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                       rb->fd, 0);
    if (alias == MAP_FAILED) {
        l->why_no_uffd = g_strdup_printf("mapping guest RAM a second time for "
                                         "MINOR faults: %s", g_strerror(errno));
        return false;
    }
    l->alias = alias;
    l->claimed = bitmap_new(l->npages);
    *features |= want;
    return true;
}

void ram_loader_init_full(RAMLoader *l, RAMBlock *rb, int nshards, bool minor)
{
    memset(l, 0, sizeof(*l));
    l->rb = rb;
    l->npages = rb->size / TARGET_PAGE_SIZE;
    l->hpages = rb->page_size / TARGET_PAGE_SIZE;
    l->received = bitmap_new(l->npages);
    l->zero_left = bitmap_new(l->npages);
    l->in_place = rb->prealloc;
    g_mutex_init(&l->pool_lock);
    l->nshards = MIN(MAX(nshards, 1), RAM_MAX_SHARDS);
    l->shard_pages = ram_shard_split(l->npages, l->hpages, &l->nshards);
    for (int i = 0; i < RAM_MAX_SHARDS; i++) {
        l->uffds[i] = -1;
    }
    l->uffd = -1;
    /* THREAD_ID: which vCPU waits, for postcopy-vcpu-blocktime.
     * MOVE: placing preallocated pages from the pool. */
    uint64_t avail = 0;
    uffd_query(&avail, NULL);
    l->features = avail & (UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MOVE);
    l->minor = minor;
    if (minor && !minor_setup(l, avail, &l->features)) {
        return;
    }
    for (int i = 0; i < l->nshards; i++) {
        if (!shard_register(l, i)) {
            shards_close(l, i);
            l->registered = false;
            return;
        }
        l->registered = true;   /* a later failure unregisters [0, i] */
    }
    l->uffd = l->uffds[0];
}

bool ram_load_ring_start(RAMLoader *l, PagePool *pool, uint64_t bytes,
                         const char **why, GError **errp)
{
    RAMBlock *rb = l->rb;
    *why = NULL;
    if (rb->fd >= 0 || rb->shared) {
        *why = "guest RAM is shared memory (UFFDIO_MOVE moves private pages)";
    } else if (l->hpages != 1) {
        *why = "guest RAM has huge pages";
    } else if (l->pool) {
        *why = "preallocated RAM has its own pool";
    } else if (!(l->features & UFFD_FEATURE_MOVE)) {
        *why = "this kernel has no UFFDIO_MOVE";
    } else if (!l->registered) {
        *why = "guest RAM is not registered with userfaultfd";
    }
    if (*why || l->ring) {
        return true;
    }
    if (!page_pool_init(pool, bytes, errp)) {
        return false;
    }
    l->ring = pool;
    return true;
}

void ram_loader_unregister(RAMLoader *l)
{
    if (l->ring) {
        page_pool_cleanup(l->ring);
        l->ring = NULL;
    }
    if (l->registered) {
        for (int i = 0; i < l->nshards; i++) {
            uint64_t n, first = shard_range(l, i, &n);
            uffd_unregister(l->uffds[i], l->rb->host + first * TARGET_PAGE_SIZE,
                            n * TARGET_PAGE_SIZE);
        }
        l->registered = false;
    }
    if (l->pool) {
        /* Pool pages never claimed (pages placed otherwise) are freed;
         * the mapping stays until cleanup for a thread still reading. */
        madvise(l->pool, l->rb->size, MADV_DONTNEED);
    }
}

void ram_loader_cleanup(RAMLoader *l)
{
    ram_loader_unregister(l);
    for (int i = 0; i < l->nshards; i++) {
        if (l->uffds[i] >= 0) {
            uffd_close(l->uffds[i]);
        }
    }
    if (l->pool) {
        munmap(l->pool, l->rb->size);
    }
    bitmap_free(l->pooled);
    if (l->alias) {
        munmap(l->alias, l->rb->size);
    }
    bitmap_free(l->claimed);
    g_mutex_clear(&l->pool_lock);
    bitmap_free(l->received);
    bitmap_free(l->zero_left);
    g_free(l->why_no_uffd);
    memset(l, 0, sizeof(*l));
    l->uffd = -1;
    for (int i = 0; i < RAM_MAX_SHARDS; i++) {
        l->uffds[i] = -1;
    }
}

bool ram_loader_can_postcopy(RAMLoader *l, GError **errp)
{
    if (l->hpages > STREAM_MAX_RUN) {
        /* A page request, and the record answering it, is at most
         * STREAM_MAX_RUN 4 KiB pages: such a page could never come. */
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "Postcopy is not supported with %" G_GUINT64_FORMAT
                    " GiB huge pages (RAM block '%s'); use 2 MiB pages",
                    l->rb->page_size >> 30, l->rb->name);
        return false;
    }
    if (l->rb->fd >= 0 && !l->rb->shared && !l->rb->fd_owned) {
        /* Its pages could only be made missing by punching holes in a
         * file the user gave, which a private mapping promises to leave
         * as it is (drop_pages). */
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "Postcopy is not supported: RAM block '%s' maps its file "
                    "privately (share=off), and making its pages missing "
                    "would punch holes in that file; use share=on or a "
                    "mem-path directory", l->rb->name);
        return false;
    }
    if (!l->registered) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "Postcopy is not supported: %s",
                    l->why_no_uffd ? l->why_no_uffd : "RAM is not registered");
        return false;
    }
    return true;
}

void ram_load_buf_init(RAMLoadBuf *b, const RAMLoader *l)
{
    b->size = (size_t)STREAM_MAX_RUN * TARGET_PAGE_SIZE;
    b->data = g_malloc(b->size);
    b->huge = l->hpages > 1 ? g_malloc(l->hpages * TARGET_PAGE_SIZE) : NULL;
    b->huge_first = UINT64_MAX;
    b->huge_have = 0;
    b->urgent = false;
}

void ram_load_buf_cleanup(RAMLoadBuf *b)
{
    g_free(b->data);
    g_free(b->huge);
    memset(b, 0, sizeof(*b));
}

static void mark_received(RAMLoader *l, uint64_t first, uint64_t n)
{
    bitmap_set_atomic(l->received, first, n);
    if (l->placed) {
        l->placed(l->placed_opaque, first, n);
    }
}

static bool place_fail(GError **errp, const char *what, uint64_t off, int err)
{
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                "placing guest page at 0x%" G_GINT64_MODIFIER "x: %s: %s",
                off, what, g_strerror(-err));
    return false;
}

/* A page came that was in place already: postcopy's protocol error. */
static bool arrived_twice(RAMLoader *l, uint64_t first, uint64_t n,
                          GError **errp)
{
    __atomic_fetch_add(&l->dup_pages, n, __ATOMIC_RELAXED);
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "postcopy: guest page at 0x%" G_GINT64_MODIFIER "x arrived "
                "again after it was placed (%" G_GINT64_MODIFIER "u pages); it "
                "is left as the guest has it", first * TARGET_PAGE_SIZE, n);
    return false;
}

typedef enum FillOp { FILL_COPY, FILL_ZEROPAGE, FILL_MOVE } FillOp;

/*
 * fill_uffd: resolve missing pages [first, first + n) with one userfaultfd
 * operation: COPY from @src, ZEROPAGE (@src NULL), or MOVE of the pool
 * pages at @src.  The rest is retried where the kernel stopped part way
 * or the address space was changing (EAGAIN).  A pool page the kernel
 * will not move (EBUSY: shared, e.g. after fork) is copied instead, and
 * such pool pages are freed after.
 *
 * A page found present (EEXIST) was not received, so it holds what the
 * memory held before the stream:
 * - precopy: it is overwritten with the data (or cleared): the guest has
 *   not run here, and the page may hold a kept file's old contents;
 * - postcopy: it is never overwritten, since the guest may have written
 *   it.  Every page not received was made missing at advise, so another
 *   thread placed it: it arrived twice, a protocol error.  Its waiters
 *   are woken, it is counted (dup_pages) and the placement fails.
 */
static bool fill_uffd(RAMLoader *l, FillOp op, uint64_t first, uint64_t n,
                      const uint8_t *src, GError **errp)
{
    static const char *const names[] = { "UFFDIO_COPY", "UFFDIO_ZEROPAGE",
                                         "UFFDIO_MOVE" };
    uint8_t *dst = l->rb->host + first * TARGET_PAGE_SIZE;
    uint64_t len = n * TARGET_PAGE_SIZE, done = 0;
    uint64_t unit = l->hpages * TARGET_PAGE_SIZE;     /* what EEXIST names */
    bool leftover = false;

    while (done < len) {
        /* Through the fd of the range holding this page, up to its end:
         * only that fd's waiters are woken. */
        uint64_t page = first + done / TARGET_PAGE_SIZE;
        int shard = ram_loader_shard(l, page);
        int fd = l->uffds[shard];
        uint64_t step = MIN(len - done,
                            ((uint64_t)(shard + 1) * l->shard_pages - page) *
                            TARGET_PAGE_SIZE);
        ssize_t r;
        if (op == FILL_COPY) {
            r = uffd_copy(fd, dst + done, src + done, step, 0);
        } else if (op == FILL_ZEROPAGE) {
            r = uffd_zeropage(fd, dst + done, step, 0);
        } else {
            r = uffd_move(fd, dst + done, (uint8_t *)src + done, step, 0);
            if (r == -EBUSY) {
                r = uffd_copy(fd, dst + done, src + done, unit, 0);
                leftover = true;
            }
        }
        if (r > 0) {
            done += r;
            continue;
        }
        if (r == -EAGAIN) {
            continue;
        }
        if (r != -EEXIST) {
            return place_fail(errp, names[op],
                              first * TARGET_PAGE_SIZE + done, r);
        }
        if (l->postcopy) {
            uffd_wake(fd, dst + done, unit);
            return arrived_twice(l, first + done / TARGET_PAGE_SIZE,
                                 l->hpages, errp);
        }
        if (src) {
            memcpy(dst + done, src + done, unit);
        } else {
            memset(dst + done, 0, unit);
        }
        leftover |= op == FILL_MOVE;
        done += unit;
    }
    if (leftover) {
        madvise((uint8_t *)src, len, MADV_DONTNEED);
    }
    return true;
}

/*
 * MINOR mode in postcopy: claim host pages [first, first + n), then write
 * them into the page cache through the alias (zeros where @src is NULL).
 * Guest RAM is left unmapped there: ram_load_continue maps a page once
 * it is received and touched.  A page claimed already came twice.
 */
static bool alias_fill(RAMLoader *l, uint64_t first, uint64_t n,
                       const uint8_t *src, GError **errp)
{
    for (uint64_t p = first; p < first + n; p += l->hpages) {
        if (test_and_set_bit_atomic(p, l->claimed)) {
            /* Those claimed here go back: after a recovery they come
             * again, and must be taken then. */
            for (uint64_t q = first; q < p; q += l->hpages) {
                clear_bit_atomic(q, l->claimed);
            }
            return arrived_twice(l, p, l->hpages, errp);
        }
    }
    uint8_t *dst = l->alias + first * TARGET_PAGE_SIZE;
    if (src) {
        memcpy(dst, src, n * TARGET_PAGE_SIZE);
    } else {
        memset(dst, 0, n * TARGET_PAGE_SIZE);
    }
    return true;
}

bool ram_load_continue(RAMLoader *l, uint64_t page, GError **errp)
{
    page -= page % l->hpages;
    uint8_t *dst = l->rb->host + page * TARGET_PAGE_SIZE;
    uint64_t len = l->hpages * TARGET_PAGE_SIZE;
    int fd = ram_loader_uffd(l, page);
    for (;;) {
        ssize_t r = uffd_continue(fd, dst, len, 0);
        if (r == (ssize_t)len) {
            return true;
        }
        if (r == -EEXIST) {
            /* Mapped already (a fault raced with another CONTINUE). */
            uffd_wake(fd, dst, len);
            return true;
        }
        if (r != -EAGAIN) {
            return place_fail(errp, "UFFDIO_CONTINUE", page * TARGET_PAGE_SIZE,
                              r < 0 ? (int)r : -EIO);
        }
    }
}

/*
 * Postcopy with the ring: data pages [first, first + n) copied into
 * pool pages backed ahead of need and moved into place; what the ring
 * has not ready is copied as before (UFFDIO_COPY), and counted missed.
 */
static bool ring_fill(RAMLoader *l, uint64_t first, uint64_t n,
                      const uint8_t *src, bool urgent, GError **errp)
{
    uint64_t done = 0;
    while (done < n) {
        uint64_t slot, got;
        uint8_t *pp = page_pool_take(l->ring, n - done, urgent, &slot, &got);
        if (!pp) {
            break;
        }
        memcpy(pp, src + done * TARGET_PAGE_SIZE, got * TARGET_PAGE_SIZE);
        bool ok = fill_uffd(l, FILL_MOVE, first + done, got, pp, errp);
        page_pool_done(l->ring, slot, got);
        if (!ok) {
            return false;
        }
        __atomic_fetch_add(&l->ring->placed, got, __ATOMIC_RELAXED);
        done += got;
    }
    return done == n ||
           fill_uffd(l, FILL_COPY, first + done, n - done,
                     src + done * TARGET_PAGE_SIZE, errp);
}

/* fill_uffd, or in MINOR mode's postcopy the alias (not for MOVE). */
static bool fill(RAMLoader *l, FillOp op, uint64_t first, uint64_t n,
                 const uint8_t *src, GError **errp)
{
    if (l->minor && l->postcopy && op != FILL_MOVE) {
        return alias_fill(l, first, n, src, errp);
    }
    return fill_uffd(l, op, first, n, src, errp);
}

/* Set a received page to @src's content, or to zero when @src is NULL. */
static void overwrite(RAMLoader *l, uint64_t page, const uint8_t *src)
{
    uint64_t *p = (uint64_t *)(l->rb->host + page * TARGET_PAGE_SIZE);
    if (src) {
        memcpy(p, src, TARGET_PAGE_SIZE);
        return;
    }
    for (int w = 0; w < TARGET_PAGE_SIZE / 8; w++) {
        if (p[w]) {
            memset(p, 0, TARGET_PAGE_SIZE);
            return;
        }
    }
}

/*
 * pool_take: claim pool pages [first, first + n), all of them or none.
 * The caller then owns them: it fills them and moves them into place.
 */
static bool pool_take(RAMLoader *l, uint64_t first, uint64_t n)
{
    if (!l->pool) {
        return false;
    }
    g_mutex_lock(&l->pool_lock);
    bool all = bitmap_count_one_range(l->pooled, first, n) == n;
    if (all) {
        bitmap_clear(l->pooled, first, n);
    }
    g_mutex_unlock(&l->pool_lock);
    return all;
}

/* Move claimed pool pages [first, first + n), filled, into place. */
static bool pool_place(RAMLoader *l, uint64_t first, uint64_t n,
                       GError **errp)
{
    return fill(l, FILL_MOVE, first, n, l->pool + first * TARGET_PAGE_SIZE,
                errp);
}

/*
 * Move RAM's pages aside into the pool (see the header): one mremap of
 * the whole block, then the pages already received go back.  *made is
 * false, with nothing changed, where no pool can be made.
 */
static bool pool_create(RAMLoader *l, bool *made, GError **errp)
{
    RAMBlock *rb = l->rb;
    *made = false;
    if (l->pool || !rb->prealloc || rb->shared || rb->fd >= 0 ||
        l->hpages != 1 || !(l->features & UFFD_FEATURE_MOVE)) {
        return true;
    }
    /* The hint is passed: the kernel reads a fifth argument for
     * DONTUNMAP, and an unaligned leftover would fail with EINVAL. */
    void *p = mremap(rb->host, rb->size, rb->size,
                     MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
    if (p == MAP_FAILED) {
        return true;        /* e.g. RAM spans several mappings */
    }
    *made = true;
    l->in_place = false;
    l->pool = p;
    l->pooled = bitmap_new(l->npages);
    bitmap_set(l->pooled, 0, l->npages);
    for (uint64_t first = find_first_bit(l->received, l->npages);
         first < l->npages;) {
        uint64_t end = find_next_zero_bit(l->received, l->npages, first);
        bitmap_clear(l->pooled, first, end - first);
        if (!pool_place(l, first, end - first, errp)) {
            return false;
        }
        first = end < l->npages ? find_next_bit(l->received, l->npages, end)
                                : end;
    }
    return true;
}

/*
 * Huge pages: 4 KiB records are gathered into the bounce huge page and
 * placed with one UFFDIO_COPY once all of it has come.  The source
 * sends the sub-pages of a missing huge page together and in order
 * (the first pass sends every page, and a pass cut short for postcopy
 * ends at a host page's end; postcopy sends whole host pages).
 */
static bool huge_add(RAMLoader *l, RAMLoadBuf *b, uint64_t page,
                     const uint8_t *src, GError **errp)
{
    uint64_t first = page - page % l->hpages;
    if (b->huge_first != first) {
        if (b->huge_first != UINT64_MAX) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "huge page at 0x%" G_GINT64_MODIFIER "x arrived "
                        "incomplete (%" G_GINT64_MODIFIER "u of %"
                        G_GINT64_MODIFIER "u pages)",
                        b->huge_first * TARGET_PAGE_SIZE, b->huge_have,
                        l->hpages);
            return false;
        }
        b->huge_first = first;
        b->huge_have = 0;
    }
    if (page - first != b->huge_have) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "huge page at 0x%" G_GINT64_MODIFIER "x: page 0x%"
                    G_GINT64_MODIFIER "x out of order",
                    first * TARGET_PAGE_SIZE, page * TARGET_PAGE_SIZE);
        return false;
    }
    uint8_t *slot = b->huge + (page - first) * TARGET_PAGE_SIZE;
    if (src) {
        memcpy(slot, src, TARGET_PAGE_SIZE);
    } else {
        memset(slot, 0, TARGET_PAGE_SIZE);
    }
    if (++b->huge_have < l->hpages) {
        return true;
    }
    b->huge_first = UINT64_MAX;
    if (!fill(l, FILL_COPY, first, l->hpages, b->huge, errp)) {
        return false;
    }
    mark_received(l, first, l->hpages);
    return true;
}

RAMPlace ram_load_decide(const RAMLoader *l, bool in, bool zero, bool pool)
{
    if (in) {
        return l->postcopy ? RAM_PLACE_TWICE : RAM_PLACE_OVER;
    }
    if (!l->registered || l->in_place) {
        return RAM_PLACE_IN_PLACE;
    }
    if (l->hpages > 1) {
        return RAM_PLACE_HUGE;
    }
    if (pool) {
        return RAM_PLACE_POOL;
    }
    if (!zero) {
        return RAM_PLACE_COPY;
    }
    return l->postcopy || !l->rb->zeroed ? RAM_PLACE_ZEROPAGE
                                         : RAM_PLACE_ZERO_LEFT;
}

/*
 * Whether page @page is in, for the placement decision: received, or in
 * postcopy also a zero page left unmapped in precopy (the source counts
 * it sent and sends it again only after a discard, which clears the bit).
 */
static bool page_in(const RAMLoader *l, uint64_t page)
{
    return ram_load_received(l, page) ||
           (l->postcopy && ram_load_zero_left(l, page));
}

/*
 * Place pages [first, first + n) from @src (NULL: zero pages): each run
 * of pages in or not in as ram_load_decide() says (the table is in the
 * header and docs/postcopy.md).
 */
static bool place(RAMLoader *l, RAMLoadBuf *b, uint64_t first, uint64_t n,
                  const uint8_t *src, GError **errp)
{
    for (uint64_t i = 0; i < n;) {
        uint64_t page = first + i;
        bool in = page_in(l, page);
        uint64_t j = i + 1;
        while (j < n && page_in(l, first + j) == in) {
            j++;
        }
        uint64_t k = j - i;
        const uint8_t *s = src ? src + i * TARGET_PAGE_SIZE : NULL;
        RAMPlace how = ram_load_decide(l, in, !s, l->pool != NULL);
        if (how == RAM_PLACE_POOL && !pool_take(l, page, k)) {
            how = ram_load_decide(l, in, !s, false);    /* dropped since */
        }
        bool ok = true;
        switch (how) {
        case RAM_PLACE_TWICE:
            return arrived_twice(l, page, k, errp);
        case RAM_PLACE_OVER:
        case RAM_PLACE_IN_PLACE:
            /* A zero page not received where the block reads zero is
             * already what it should be. */
            if (s || in || !l->rb->zeroed) {
                for (uint64_t p = 0; p < k; p++) {
                    overwrite(l, page + p, s ? s + p * TARGET_PAGE_SIZE : NULL);
                }
            }
            if (!in) {
                mark_received(l, page, k);
            }
            break;
        case RAM_PLACE_HUGE:
            for (uint64_t p = 0; p < k && ok; p++) {
                ok = huge_add(l, b, page + p,
                              s ? s + p * TARGET_PAGE_SIZE : NULL, errp);
            }
            break;
        case RAM_PLACE_POOL: {
            /* Zero pages too, so that preallocated RAM stays allocated. */
            uint8_t *pp = l->pool + page * TARGET_PAGE_SIZE;
            if (s) {
                memcpy(pp, s, k * TARGET_PAGE_SIZE);
            } else {
                memset(pp, 0, k * TARGET_PAGE_SIZE);
            }
            ok = pool_place(l, page, k, errp);
            break;
        }
        case RAM_PLACE_COPY:
            /* Through the ring in postcopy, a requested page first: the
             * preempt channel's, or a record of one page, which is what
             * a request brings on the main stream.  Zero pages stay
             * UFFDIO_ZEROPAGE: backing them would grow this side to all
             * of RAM for pages the guest may never write. */
            ok = l->ring && l->postcopy
                 ? ring_fill(l, page, k, s, b->urgent || n == 1, errp)
                 : fill(l, FILL_COPY, page, k, s, errp);
            break;
        case RAM_PLACE_ZEROPAGE:
            ok = fill(l, FILL_ZEROPAGE, page, k, NULL, errp);
            break;
        case RAM_PLACE_ZERO_LEFT:
            bitmap_set_atomic(l->zero_left, page, k);
            break;
        }
        if (!ok) {
            return false;
        }
        if (how == RAM_PLACE_POOL || how == RAM_PLACE_COPY ||
            how == RAM_PLACE_ZEROPAGE) {
            mark_received(l, page, k);
        }
        i = j;
    }
    return true;
}

static bool all_received(const RAMLoader *l, uint64_t first, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        if (!ram_load_received(l, first + i)) {
            return false;
        }
    }
    return true;
}

bool ram_load_pages(RAMLoader *l, RAMLoadBuf *b, QEMUFile *f, uint64_t off,
                    uint32_t count, GError **errp)
{
    uint64_t first = off / TARGET_PAGE_SIZE;
    size_t len = (size_t)count * TARGET_PAGE_SIZE;
    if (!l->postcopy && (l->in_place || all_received(l, first, count))) {
        /* Precopy, every page mapped: straight into guest RAM. */
        qemu_get_buffer(f, l->rb->host + off, len);
        if (l->in_place && !qemu_file_error(f)) {
            mark_received(l, first, count);
        }
        return true;
    }
    if (pool_take(l, first, count)) {
        /* Every page missing, with its pool page: read straight into the
         * pool.  On a stream error the claimed pages stay missing. */
        qemu_get_buffer(f, l->pool + off, len);
        if (qemu_file_error(f)) {
            return true;
        }
        if (!pool_place(l, first, count, errp)) {
            return false;
        }
        mark_received(l, first, count);
        return true;
    }
    g_assert(len <= b->size);
    qemu_get_buffer(f, b->data, len);
    if (qemu_file_error(f)) {
        return true;            /* the caller reports the stream's error */
    }
    return place(l, b, first, count, b->data, errp);
}

bool ram_load_buffer(RAMLoader *l, RAMLoadBuf *b, uint64_t off, uint32_t count,
                     const uint8_t *data, GError **errp)
{
    return place(l, b, off / TARGET_PAGE_SIZE, count, data, errp);
}

bool ram_load_zero(RAMLoader *l, RAMLoadBuf *b, uint64_t off, uint32_t count,
                   GError **errp)
{
    return place(l, b, off / TARGET_PAGE_SIZE, count, NULL, errp);
}

/*
 * Unmap pages [first, first + count): missing again, so that a fault on
 * them waits for the page instead of reading what was there.  As QEMU's
 * ram_block_discard_range, for each backend:
 * - a file or memfd (shared or private): punch the hole in the file.
 *   A private mapping reads the file's page again, without a fault,
 *   once its own copy is dropped, so the file's page must go too (the
 *   block is then ferry's own file: ram_loader_can_postcopy());
 * - private memory: MADV_DONTNEED drops this process's copy (for a
 *   private file mapping, the copies written since the mapping);
 * - shared anonymous memory (shmem without a file of ours): MADV_REMOVE.
 * A shared file mapping needs no madvise: the punch unmaps the page.
 */
static bool drop_pages(RAMLoader *l, uint64_t first, uint64_t count,
                       GError **errp)
{
    RAMBlock *rb = l->rb;
    uint64_t off = first * TARGET_PAGE_SIZE, len = count * TARGET_PAGE_SIZE;
    const char *what = NULL;
    l->in_place = false;        /* these pages are missing from now */
    if (rb->fd >= 0 &&
        fallocate(rb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                  len) < 0) {
        what = "punching a hole in the backing file";
    } else if (!rb->shared && madvise(rb->host + off, len, MADV_DONTNEED) < 0) {
        what = "MADV_DONTNEED";
    } else if (rb->shared && rb->fd < 0 &&
               madvise(rb->host + off, len, MADV_REMOVE) < 0) {
        what = "MADV_REMOVE";
    }
    if (what) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "discarding guest pages at 0x%" G_GINT64_MODIFIER "x: %s: "
                    "%s", off, what, g_strerror(errno));
        return false;
    }
    return true;
}

bool ram_load_discard(RAMLoader *l, uint64_t off, uint64_t count,
                      GError **errp)
{
    uint64_t first = off / TARGET_PAGE_SIZE, hp = l->hpages;
    if (first % hp || count % hp) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "discard of 0x%" G_GINT64_MODIFIER "x+%" G_GINT64_MODIFIER
                    "u pages is not aligned to the %" G_GINT64_MODIFIER
                    "u KiB host page", off, count, hp * 4);
        return false;
    }
    /* Clear first: a fault from now on must ask for the page again. */
    bitmap_test_and_clear_atomic(l->received, first, count);
    bitmap_test_and_clear_atomic(l->zero_left, first, count);
    if (l->claimed) {
        bitmap_test_and_clear_atomic(l->claimed, first, count);
    }
    return drop_pages(l, first, count, errp);
}

bool ram_load_discard_missing(RAMLoader *l, GError **errp)
{
    bool pooled;
    if (!pool_create(l, &pooled, errp)) {
        return false;
    }
    if (pooled) {
        return true;
    }
    for (uint64_t first = find_next_zero_bit(l->received, l->npages, 0);
         first < l->npages;) {
        uint64_t end = find_next_bit(l->received, l->npages, first);
        if (!drop_pages(l, first, end - first, errp)) {
            return false;
        }
        first = end < l->npages ? find_next_zero_bit(l->received, l->npages, end)
                                : end;
    }
    return true;
}

bool ram_load_fault_zero(RAMLoader *l, uint64_t page, GError **errp)
{
    /* No other thread places a zero page left (the source counts it sent,
     * and a copy that came anyway is refused): a page present here is
     * one placed twice, as fill() says. */
    if (!fill(l, FILL_ZEROPAGE, page, 1, NULL, errp)) {
        return false;
    }
    mark_received(l, page, 1);
    /* MINOR mode wrote it through the alias: map it for the thread that
     * faulted (no fault record was made for it). */
    return !(l->minor && l->postcopy) || ram_load_continue(l, page, errp);
}

bool ram_load_all_received(const RAMLoader *l)
{
    /* Each run of pages not received must be zero pages left. */
    for (uint64_t p = find_first_zero_bit(l->received, l->npages);
         p < l->npages;) {
        uint64_t end = find_next_bit(l->received, l->npages, p);
        if (find_next_zero_bit(l->zero_left, end, p) < end) {
            return false;
        }
        p = end < l->npages ? find_next_zero_bit(l->received, l->npages, end)
                            : end;
    }
    return true;
}

uint64_t ram_load_count_missing(const RAMLoader *l)
{
    uint64_t n = 0;
    for (uint64_t p = find_first_zero_bit(l->received, l->npages);
         p < l->npages; p = find_next_zero_bit(l->received, l->npages, p + 1)) {
        n += !ram_load_zero_left(l, p);
    }
    return n;
}

unsigned long *ram_load_in_place_bitmap(const RAMLoader *l)
{
    unsigned long *map = bitmap_new(l->npages);
    size_t words = (l->npages + 8 * sizeof(long) - 1) / (8 * sizeof(long));
    for (size_t w = 0; w < words; w++) {
        map[w] = __atomic_load_n(&l->received[w], __ATOMIC_ACQUIRE) |
                 l->zero_left[w];
    }
    return map;
}
