/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source's working set in postcopy (x-postcopy-working-set;
 * docs/postcopy.md, "The working set first").
 *
 * QEMU's push, once the guest runs on the destination, goes in address
 * order and only seeks to the page a vCPU faulted on.  The source knows
 * more: which pages the guest wrote in each precopy pass.  A page
 * rewritten pass after pass is one the guest will likely write again;
 * pushing those first leaves fewer pages for the guest to fault on.
 *
 *   precopy pass k ends, sync:  heat[h] = heat[h] >> 1 | (dirty ? 0x80 : 0)
 *   switch:   order = dirty host pages rewritten in >= 2 of the last 8
 *             passes (in the only one, after one), by passes rewritten,
 *             then by how recent, then address; at most a quarter of RAM
 *   push:     requests  >  a run the faults walk into  >  order  >  the
 *             rest in address order from the last request (QEMU's)
 *
 * Invariants: the order only ranks pages; whoever claims a page's dirty
 * bit sends it (ram-postcopy.c), so a page named here and sent already
 * is skipped, and a wrong guess costs only the push time of at most a
 * quarter of RAM ahead of the rest, never a page sent twice or missed.
 * A fault neighbourhood is pushed only when consecutive requests walk
 * forward through memory (streak >= 1), and grows with the streak up to
 * WS_NEAR_MAX pages: random faults claim no push time.
 *
 * Threads: the migration thread only (it records at each pass's sync,
 * builds at the switch, and runs the push).  No error paths: memory
 * comes from g_new, which aborts.
 */
#ifndef MIGRATION_WORKING_SET_H
#define MIGRATION_WORKING_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Passes a page's heat remembers (bits of a byte). */
#define WS_PASSES       8
/* A fault neighbourhood: the first run after a streak's fault, in 4 KiB
 * pages, doubled with each further fault of the streak up to the most. */
#define WS_NEAR_FIRST   32
#define WS_NEAR_MAX     2048
/* Requests at most this far (4 KiB pages) after the last one's end are a
 * walk forward: the guest reads through memory. */
#define WS_WALK         256

typedef struct WsRange {
    uint64_t first, n;          /* 4 KiB pages */
} WsRange;

typedef struct WorkingSet {
    uint64_t npages;            /* 4 KiB pages of the block */
    uint64_t hp;                /* 4 KiB pages per host page */
    uint8_t *heat;              /* per host page: bit 7 the last pass */
    unsigned passes;            /* passes recorded */
    uint64_t *order;            /* first 4 KiB page of each host page */
    uint64_t norder, pos;       /* built at the switch; pushed up to pos */
    /* Fault locality: the end of the last request, its streak of walks
     * forward, and the neighbourhood still to push [near, near_end). */
    uint64_t last_end;
    unsigned streak;
    uint64_t near, near_end;
    /* 4 KiB pages handed to the push (ram-postcopy.c publishes them in
     * MigrationStats for query-migrate). */
    uint64_t hot_pushed, near_pushed;
} WorkingSet;

/* working_set_init: no pass recorded yet; working_set_cleanup frees. */
void working_set_init(WorkingSet *ws, uint64_t npages, uint64_t hp);
void working_set_cleanup(WorkingSet *ws);

/* working_set_record: a precopy pass ended and @dirty (npages bits) holds
 * just the pages written since each was sent in it (the sync after the
 * pass). */
void working_set_record(WorkingSet *ws, const unsigned long *dirty);

/* working_set_build: at the switch, @dirty holds every page still to
 * send: rank the hot ones among them (above).  Returns how many host
 * pages the order holds. */
uint64_t working_set_build(WorkingSet *ws, const unsigned long *dirty);

/* working_set_fault: a request for [first, first + n) was served. */
void working_set_fault(WorkingSet *ws, uint64_t first, uint64_t n);

/*
 * working_set_next: where the push goes next: up to @max ranges of
 * pages still @dirty, from the neighbourhood a fault streak asked for or
 * else from the order; the caller claims and sends them (a page claimed
 * in between is skipped).  Returns the ranges written; 0 once both are
 * spent: the push goes on in address order.
 */
size_t working_set_next(WorkingSet *ws, const unsigned long *dirty,
                        WsRange *out, size_t max);

#endif
