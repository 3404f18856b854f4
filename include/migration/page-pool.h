/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The destination's pool of pages backed ahead of need
 * (x-postcopy-page-pool; docs/postcopy.md, "Pages backed ahead of need").
 *
 * On a host that hands free memory back, the first touch of memory not
 * used lately costs far more than a warm one, and with UFFDIO_COPY that
 * touch is on the fault path: the page a vCPU waits for is allocated
 * while it waits.  The pool is a ring of slots, each one 4 KiB page of a
 * private anonymous mapping (no transparent huge pages, so a page moves
 * alone).  A filler thread backs empty slots (MADV_POPULATE_WRITE);
 * placement takes a run of backed slots, copies the data into them and
 * moves them into guest RAM with UFFDIO_MOVE, which moves page-table
 * entries and allocates nothing; the slots are then empty, for the
 * filler to back again.  The pool never holds more than its size.
 *
 *   slots:  | R | R | R | E | E | B | R | R |    R backed (ready), E empty,
 *                 ^head (next taken)             B being backed
 *   taken in ring order from head, a run never wrapping; backed again in
 *   the order they were emptied, by the filler.
 *
 * Threads: the filler ("mig/dst/pool") is the pool's, started by
 * page_pool_init and joined by page_pool_cleanup (eventfd plus quit
 * flag).  page_pool_take and page_pool_done run in any placing thread
 * (the load thread, the fault thread), under @lock for the slots' states
 * only: the copy and the move are outside it.
 * Error contract: GError **errp last, bool.
 */
#ifndef MIGRATION_PAGE_POOL_H
#define MIGRATION_PAGE_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

typedef enum PageSlot {
    PAGE_SLOT_EMPTY,            /* no page: the filler backs it */
    PAGE_SLOT_BACKING,          /* the filler is backing it */
    PAGE_SLOT_READY,            /* backed, free to take */
    PAGE_SLOT_TAKEN,            /* a placing thread copies into it and moves it */
} PageSlot;

typedef struct PagePool {
    uint8_t *base;              /* nslots pages */
    uint64_t nslots;
    GMutex lock;
    uint8_t *state;             /* PageSlot per slot, under lock */
    uint64_t head;              /* under lock: the next slot to take */
    uint64_t fill;              /* filler only: the next slot it looks at */
    uint64_t empty;             /* under lock: slots EMPTY */
    uint64_t ready;             /* under lock: slots READY */
    GThread *thread;
    int wake_fd;                /* eventfd: slots were emptied, or quit */
    int quit;                   /* atomic */
    int idle;                   /* atomic: the filler sleeps in poll() */
    /* Statistics, atomic. */
    uint64_t placed;            /* pages placed from the pool */
    uint64_t missed;            /* pages a placement wanted and the pool
                                 * did not have ready (placed by COPY) */
    uint64_t backed;            /* pages the filler backed */
} PagePool;

/*
 * page_pool_init: a pool of @bytes (whole 4 KiB pages, at least one),
 * its filler started and backing every slot.  False with *errp where the
 * mapping cannot be made.
 */
bool page_pool_init(PagePool *p, uint64_t bytes, GError **errp);

/* page_pool_cleanup: stop and join the filler, unmap; the size and the
 * statistics stay.  Idempotent. */
void page_pool_cleanup(PagePool *p);

/*
 * page_pool_take: up to @n backed slots in a run from the ring's head
 * (fewer where the run would wrap, or the filler is behind): their
 * address, their count in *@got (> 0) and first slot in *@slot; NULL
 * when the head slot is not backed.  Unless @urgent (a page a vCPU
 * waits for), only while more than half the pool is backed: the push
 * must not leave the faults none.  The caller owns them until
 * page_pool_done.
 */
uint8_t *page_pool_take(PagePool *p, uint64_t n, bool urgent, uint64_t *slot,
                        uint64_t *got);

/*
 * page_pool_done: slots [@slot, @slot + @n) taken are used (moved away,
 * or given up): empty, for the filler.
 */
void page_pool_done(PagePool *p, uint64_t slot, uint64_t n);

#endif
