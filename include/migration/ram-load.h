/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The destination's RAM placement (migration/ram-load.c).
 *
 * Guest RAM is registered with userfaultfd (MISSING) from the start of
 * an incoming migration whenever the kernel and the backend allow it.
 * A page arriving for the first time is then placed with UFFDIO_COPY,
 * which maps a new page holding the data: the kernel does not zero it
 * first, which on first touch costs more than the copy itself.  A page
 * that arrives again (a later precopy pass) is copied over in place.
 * In postcopy the same registration makes a vCPU touching a missing
 * page fault to the fault thread (migration/postcopy-ram.c), and a zero
 * page has to be placed too (UFFDIO_ZEROPAGE) since a vCPU may wait on
 * it.  Backends with huge pages are placed a whole huge page at a time.
 *
 * Preallocated RAM (prealloc=on, private anonymous) is not thrown away
 * when postcopy needs its pages missing: the pages not yet received are
 * moved aside into a pool at the same offsets (mremap MREMAP_DONTUNMAP,
 * which leaves the registered range empty), and a page arriving later
 * is read into its pool page and moved into place with UFFDIO_MOVE.
 * Placement then allocates nothing: on a host where first touching
 * memory is slow, a 4 GiB push went from 309 to 1442 MiB/s
 * (docs/benchmarks.md).
 *
 * Threads: the placing functions run in the threads that read streams
 * (the main stream's load thread; the fault thread, which reads the
 * preempt channel and places zero pages left, below), each with its own
 * bounce buffer; the received bitmap is updated with
 * atomic operations after a page is placed, and read by any thread.
 * Error contract: GError **errp last, bool.
 */
#ifndef MIGRATION_RAM_LOAD_H
#define MIGRATION_RAM_LOAD_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migration/page-pool.h"
#include "qemu/bitmap.h"
#include "system/ramblock.h"

typedef struct QEMUFile QEMUFile;

/*
 * Sharded fault handling (docs/postcopy.md, "Many vCPUs"): guest RAM in
 * up to RAM_MAX_SHARDS contiguous ranges of shard_pages pages (whole
 * host pages), each registered with its own userfaultfd, so that each
 * range is its own VMA with its own fault queue, read by its own fault
 * thread.  A page is placed and woken through its range's fd (the kernel
 * wakes only the waiters of the fd that resolves a fault).
 */
#define RAM_MAX_SHARDS 16

typedef struct RAMLoader {
    RAMBlock *rb;
    uint64_t npages;            /* 4 KiB pages */
    uint64_t hpages;            /* 4 KiB pages per host page: 1, or 512 */
    int uffd;                   /* -1: no userfaultfd, plain copies; with
                                 * shards, the first range's (uffds[0]) */
    int nshards;                /* ranges, each with its own fd: >= 1 */
    uint64_t shard_pages;       /* 4 KiB pages per range (the last may
                                 * be shorter) */
    int uffds[RAM_MAX_SHARDS];  /* range i's fd; uffds[0] == uffd */
    bool registered;            /* guest RAM is registered with uffd */
    /* Set once postcopy runs: zero pages must be placed, not skipped. */
    bool postcopy;
    unsigned long *received;    /* one bit per 4 KiB page, atomic */
    /*
     * Pages that came as zero pages in precopy and were left unmapped,
     * since fresh memory reads as zero: in place as far as the source
     * knows, so it will not send them again.  In postcopy a vCPU that
     * touches one faults, and the fault thread maps a zero page there
     * (ram_load_fault_zero).  Set by the load thread, cleared by a
     * discard; atomic.
     */
    unsigned long *zero_left;
    /*
     * Every page is mapped (preallocated RAM, nothing discarded yet and
     * no pool made): precopy writes straight into guest RAM, as if all
     * pages had been received.  Load thread only; cleared for good by a
     * discard or the pool, before any other thread places pages.
     */
    bool in_place;
    uint64_t features;          /* UFFD_FEATURE_* enabled on uffd */
    char *why_no_uffd;          /* when uffd is -1 or unregistered: why */
    void (*placed)(void *opaque, uint64_t first, uint64_t n);
    void *placed_opaque;
    /*
     * The pool of preallocated pages (NULL: none), made at postcopy
     * advise by the load thread before any other thread places pages:
     * pool + off holds the page for guest offset off while its bit in
     * @pooled is set.  A placing thread claims bits under @pool_lock and
     * then owns those pool pages; the pool is unmapped in cleanup only,
     * after every placing thread has stopped.
     */
    uint8_t *pool;
    unsigned long *pooled;
    GMutex pool_lock;
    uint64_t dup_pages;         /* atomic: pages that came again in postcopy */
    /*
     * MINOR mode (ram_loader_init_full @minor; docs/postcopy.md, "MINOR
     * faults"): shared memory with a file (memfd, tmpfs, hugetlbfs),
     * registered MISSING | MINOR.  In postcopy a page is written into the
     * page cache through @alias, a second mapping of the file that no
     * userfaultfd watches, with no ioctl; guest RAM maps it with
     * UFFDIO_CONTINUE (ram_load_continue) only once it is received and a
     * thread touches it.  @claimed: host pages (first bit) a placing
     * thread has taken in postcopy, set atomically before the write, so
     * that no page is written twice (the guest may have written it: the
     * kernel's EEXIST guards COPY, nothing guards a memcpy).
     */
    bool minor;
    uint8_t *alias;
    unsigned long *claimed;
    /*
     * Pages backed ahead of need (ram_load_ring_start; NULL: none; the
     * caller's, which keeps its statistics): in postcopy a data page is
     * copied into a pool page and moved into place, so no placement
     * waits for the host to back memory.  Started by the load thread at
     * advise, before other threads place pages; stopped (and NULL again)
     * at ram_loader_unregister.
     */
    PagePool *ring;
} RAMLoader;

/*
 * How a run of pages arriving is placed: ram_load_decide() from whether
 * the pages are in already, whether they are zero pages, and whether
 * their pool pages are there.  Invariants: in postcopy a page is placed
 * once, and a present page is never overwritten (the guest may have
 * written it); a page is left to read as zero only where the memory
 * reads zero already (RAMBlock.zeroed).  docs/postcopy.md has the table;
 * /migration/ram-load/decide walks it.
 *
 *   in   postcopy  registered, in place  huge  pool  zero  zeroed -> case
 *   yes  yes       -                     -     -     -     -         TWICE
 *   yes  no        -                     -     -     -     -         OVER
 *   no   -         not registered or in place                        IN_PLACE
 *   no   -         registered, missing   yes   -     -     -         HUGE
 *   no   -         registered, missing   no    yes   -     -         POOL
 *   no   -         registered, missing   no    no    no    -         COPY
 *   no   yes       registered, missing   no    no    yes   -         ZEROPAGE
 *   no   no        registered, missing   no    no    yes   no        ZEROPAGE
 *   no   no        registered, missing   no    no    yes   yes       ZERO_LEFT
 */
typedef enum RAMPlace {
    RAM_PLACE_TWICE,        /* postcopy: it came again; a protocol error,
                             * the page is left as it is */
    RAM_PLACE_OVER,         /* precopy, a later pass: copied (cleared) over */
    RAM_PLACE_IN_PLACE,     /* every page mapped (preallocated, nothing
                             * dropped yet) or RAM not registered: written
                             * in place; a zero page only where the block
                             * may not read zero */
    RAM_PLACE_HUGE,         /* gathered into the huge page, placed whole */
    RAM_PLACE_POOL,         /* read into its pool page, moved into place */
    RAM_PLACE_COPY,         /* UFFDIO_COPY */
    RAM_PLACE_ZEROPAGE,     /* UFFDIO_ZEROPAGE: a vCPU may wait on it, or
                             * the memory may not read zero */
    RAM_PLACE_ZERO_LEFT,    /* precopy, fresh memory: left unmapped, noted
                             * in zero_left */
} RAMPlace;

/*
 * ram_load_decide: the case for pages not in (@in false) or in (received;
 * in postcopy also zero pages left), zero pages or not, with their pool
 * pages claimable (@pool).
 */
RAMPlace ram_load_decide(const RAMLoader *l, bool in, bool zero, bool pool);

/* A placer's scratch space: one per thread that reads a stream. */
typedef struct RAMLoadBuf {
    uint8_t *data;              /* STREAM_MAX_RUN pages, or one huge page */
    size_t size;
    /* A huge page being assembled from 4 KiB records (postcopy). */
    uint64_t huge_first;        /* its first 4 KiB page, or UINT64_MAX */
    uint64_t huge_have;         /* 4 KiB pages of it received */
    uint8_t *huge;
    /* Its thread places requested pages (the preempt channel's): they
     * may take the page pool's last pages (RAMLoader.ring). */
    bool urgent;
} RAMLoadBuf;

/*
 * ram_loader_init: a loader for @rb.  Opens and registers a userfaultfd
 * when the kernel offers one; without it precopy still works (plain
 * copies) and ram_loader_can_postcopy() says why postcopy cannot.
 */
void ram_loader_init(RAMLoader *l, RAMBlock *rb);

/*
 * ram_loader_init_shards: the same with RAM in @nshards ranges, each
 * with its own userfaultfd (1 to RAM_MAX_SHARDS; fewer where RAM has
 * fewer host pages).  If a range cannot be registered, none is, and
 * why_no_uffd says why.
 */
void ram_loader_init_shards(RAMLoader *l, RAMBlock *rb, int nshards);

/*
 * ram_loader_init_full: the same, with @minor: MINOR mode (above).  It
 * needs RAM shared with a file and the kernel's MINOR_SHMEM or
 * MINOR_HUGETLBFS; without them RAM is left unregistered, and
 * why_no_uffd says why (postcopy is then refused, saying so).
 */
void ram_loader_init_full(RAMLoader *l, RAMBlock *rb, int nshards, bool minor);
void ram_loader_cleanup(RAMLoader *l);

/*
 * ram_shard_split: the pages per range when @npages pages in host pages
 * of @hpages are split into @n ranges: whole host pages, the last range
 * taking what is left (it may be shorter, never empty).  *@n is lowered
 * where there are fewer host pages than ranges, or where the rounding
 * up leaves the last ranges nothing.
 */
uint64_t ram_shard_split(uint64_t npages, uint64_t hpages, int *n);

/* ram_loader_shard: the range holding 4 KiB page @page. */
static inline int ram_loader_shard(const RAMLoader *l, uint64_t page)
{
    return (int)(page / l->shard_pages);
}

/* ram_loader_uffd: the userfaultfd registered over page @page. */
static inline int ram_loader_uffd(const RAMLoader *l, uint64_t page)
{
    return l->uffds[ram_loader_shard(l, page)];
}

/* ram_loader_can_postcopy: whether postcopy can run here; if not, why. */
bool ram_loader_can_postcopy(RAMLoader *l, GError **errp);

/*
 * ram_loader_unregister: RAM becomes ordinary memory again (THP, KSM,
 * swap work as usual); pages never received read as zero.  Threads
 * still waiting on a fault retry it as an ordinary fault.
 */
void ram_loader_unregister(RAMLoader *l);

/*
 * ram_load_ring_start: x-postcopy-page-pool, @pool made of @bytes of
 * pages backed ahead of need (migration/page-pool.h) and used, for
 * private anonymous RAM of 4 KiB pages with UFFDIO_MOVE and without the
 * preallocated pool.  Elsewhere nothing is made and *@why (static) says
 * why; true.  False with *errp if the pool cannot be made.  Load thread,
 * at advise.
 */
bool ram_load_ring_start(RAMLoader *l, PagePool *pool, uint64_t bytes,
                         const char **why, GError **errp);

void ram_load_buf_init(RAMLoadBuf *b, const RAMLoader *l);
void ram_load_buf_cleanup(RAMLoadBuf *b);

/*
 * ram_load_pages: read @count pages for block offset @off from @f and
 * place them.  The range was checked by the caller.
 */
bool ram_load_pages(RAMLoader *l, RAMLoadBuf *b, QEMUFile *f, uint64_t off,
                    uint32_t count, GError **errp);

/* ram_load_buffer: as ram_load_pages, the pages' data at @data (a
 * mapped-ram file's slots, read by the caller). */
bool ram_load_buffer(RAMLoader *l, RAMLoadBuf *b, uint64_t off, uint32_t count,
                     const uint8_t *data, GError **errp);

/* ram_load_zero: pages [off, off + count * 4 KiB) are zero. */
bool ram_load_zero(RAMLoader *l, RAMLoadBuf *b, uint64_t off, uint32_t count,
                   GError **errp);

/*
 * ram_load_discard: the source says these pages, sent before, were
 * written again: drop them, so that they are missing until sent anew.
 */
bool ram_load_discard(RAMLoader *l, uint64_t off, uint64_t count,
                      GError **errp);

/*
 * ram_load_discard_missing: unmap every page not received yet.  Guest RAM
 * here may hold what this process wrote before the migration began (the
 * kernel and boot information it loaded); postcopy needs such pages
 * missing, or the guest would read them instead of faulting (QEMU
 * discards all RAM at postcopy advise for the same reason).  Preallocated
 * private RAM keeps its pages in the pool instead, where the kernel
 * allows it (UFFD_FEATURE_MOVE, one mapping); otherwise they are freed.
 * Load thread, before the other channels place pages.
 */
bool ram_load_discard_missing(RAMLoader *l, GError **errp);

/* ram_load_received: whether 4 KiB page @page is in place. */
static inline bool ram_load_received(const RAMLoader *l, uint64_t page)
{
    return (__atomic_load_n(&l->received[page / (8 * sizeof(long))],
                            __ATOMIC_ACQUIRE) >> (page % (8 * sizeof(long)))) & 1;
}

/*
 * ram_load_fault_zero: a fault on @page, which is in @zero_left: map a
 * zero page there (it wakes the thread that faulted).  Fault thread.
 */
bool ram_load_fault_zero(RAMLoader *l, uint64_t page, GError **errp);

/*
 * ram_load_continue: MINOR mode: map received host page @page into guest
 * RAM (UFFDIO_CONTINUE through its range's fd), waking the threads
 * waiting on it; one mapped already is only woken.  A page not received
 * must never be mapped so: the caller checks.  Any placing or fault
 * thread.
 */
bool ram_load_continue(RAMLoader *l, uint64_t page, GError **errp);

/* ram_load_zero_left: whether 4 KiB page @page is in @zero_left (set
 * before postcopy starts, so no ordering is needed). */
static inline bool ram_load_zero_left(const RAMLoader *l, uint64_t page)
{
    return test_bit(page, l->zero_left);
}

/* ram_load_all_received: every page is in place or a zero page left. */
bool ram_load_all_received(const RAMLoader *l);

/* ram_load_count_missing: the 4 KiB pages neither in place nor zero left. */
uint64_t ram_load_count_missing(const RAMLoader *l);

/*
 * ram_load_in_place_bitmap: postcopy recovery's RECV_BITMAP, a new
 * bitmap (bitmap_free) of the pages the source need not send again:
 * received, or zero pages left.  A huge page gathered in part is not in
 * it (its pages are marked received only when it is placed whole), so
 * it comes again whole.  No thread may place pages meanwhile.
 */
unsigned long *ram_load_in_place_bitmap(const RAMLoader *l);

/*
 * RAMLoader.placed, when set (postcopy statistics), is called by the
 * placing thread after pages [first, first + n) were placed.
 */

#endif
