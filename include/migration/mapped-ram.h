/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mapped-ram (QEMU 9.0's capability of that name, for file:): every
 * 4 KiB page of the RAM block has a fixed slot in the file, and a bitmap
 * says which slots hold data.  A page saved again is written over its
 * slot, so a precopy save holds each page once and the file has a bound
 * size; a reader can read any page on its own (restore on demand,
 * migration/restore.c).  The layout is in docs/migration-stream.md:
 *
 *   header, RAM_BLOCK, MAPPED_RAM (u64 bitmap, u64 pages, u64 end)
 *   [bitmap]   one bit per page, u64 little-endian words; 0: a zero page
 *   [pages]    page n at pages + n * 4 KiB; zero pages stay holes
 *   [end]      DEVICE records, EOF: the rest of the stream
 *
 * The offsets count from the stream's first byte (file:PATH,offset=N
 * puts it at N).  Invariant: a page reads zero after a load only if its
 * bit is clear, and its bit is clear only if it was zero when saved.
 *
 * Threads: page writes and reads (pwrite, pread) from any thread, the
 * writer's bitmap with atomic operations; the record and the bitmap's
 * own I/O from the thread that owns the stream.
 * Error contract: the page I/O returns 0 or -errno; what reaches a user
 * takes GError **errp last and returns bool.
 */
#ifndef MIGRATION_MAPPED_RAM_H
#define MIGRATION_MAPPED_RAM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "qemu/bitmap.h"

typedef struct QEMUFile QEMUFile;

#define MAPPED_RAM_PAGES_ALIGN  (1 << 20)   /* as QEMU's */
#define MAPPED_RAM_RECORD_LEN   25          /* type and three u64 */

typedef struct MappedRam {
    int fd;                     /* the file (the stream's fd) */
    int fd_pages;               /* page I/O: fd, or O_DIRECT (direct-io) */
    int64_t base;               /* the stream's first byte in the file */
    uint64_t npages;            /* 4 KiB pages of the block */
    uint64_t bitmap_off, pages_off, end_off;    /* from base */
    unsigned long *present;     /* one bit per page: its slot has data */
} MappedRam;

/*
 * mapped_ram_layout: the offsets for @npages pages when the MAPPED_RAM
 * record starts at stream offset @rec: bitmap 4 KiB aligned after the
 * record, pages MAPPED_RAM_PAGES_ALIGN aligned after the bitmap.
 */
void mapped_ram_layout(MappedRam *m, uint64_t rec, uint64_t npages);

/*
 * mapped_ram_check: whether offsets read from a file fit that layout for
 * @npages pages and a record at @rec (any alignment at least as strict,
 * any gap); says what is wrong.
 */
bool mapped_ram_check(const MappedRam *m, uint64_t rec, uint64_t npages,
                      GError **errp);

/*
 * mapped_ram_writer_start: on the writer @f, right after the RAM block,
 * write the MAPPED_RAM record for @npages pages and flush.  @direct opens
 * the file a second time with O_DIRECT for the pages (direct-io).
 */
bool mapped_ram_writer_start(MappedRam *m, QEMUFile *f, uint64_t npages,
                             bool direct, GError **errp);

/*
 * mapped_ram_write_pages: pages [first, first + n) from @data into their
 * slots, and their bits set; mapped_ram_mark_zero: their bits cleared
 * (a page saved again as zero).  Any thread, pages disjoint.
 */
int mapped_ram_write_pages(MappedRam *m, uint64_t first, uint64_t n,
                           const void *data);
void mapped_ram_mark_zero(MappedRam *m, uint64_t first, uint64_t n);

/*
 * mapped_ram_writer_finish: every page is saved: write the bitmap, and
 * move @f to the end of the pages, where the device records go.
 */
bool mapped_ram_writer_finish(MappedRam *m, QEMUFile *f, GError **errp);

/*
 * mapped_ram_reader_open: the reader @f has just taken the MAPPED_RAM
 * record's type byte: read the record, check it and the file's size
 * against @npages pages (a file shorter than its header says is refused
 * here, before any page is placed), read the bitmap, and move @f to the
 * device records.
 */
bool mapped_ram_reader_open(MappedRam *m, QEMUFile *f, uint64_t npages,
                            GError **errp);

/* mapped_ram_read_pages: the slots of pages [first, first + n) into
 * @buf; -EIO for a file that ends before them.  Any thread. */
int mapped_ram_read_pages(const MappedRam *m, uint64_t first, uint64_t n,
                          void *buf);

/* mapped_ram_has_data: whether page @page's slot holds data. */
static inline bool mapped_ram_has_data(const MappedRam *m, uint64_t page)
{
    return test_bit(page, m->present);
}

/*
 * mapped_ram_run: how many pages from @p (before @end, at most @max) are
 * alike: all with data or all zero; *@data says which.  At least 1.
 */
static inline uint64_t mapped_ram_run(const MappedRam *m, uint64_t p,
                                      uint64_t end, uint64_t max, bool *data)
{
    *data = mapped_ram_has_data(m, p);
    uint64_t n = 1;
    while (p + n < end && n < max && mapped_ram_has_data(m, p + n) == *data) {
        n++;
    }
    return n;
}

void mapped_ram_cleanup(MappedRam *m);

/*
 * An io_uring over a mapped-ram file's slots (x-io-uring): reads or
 * writes of runs of pages, up to @depth in flight, each with the
 * caller's @tag, completed in any order.  One thread uses a ring.
 * A write's pages get their bits once it completes.  A short transfer is
 * finished with plain pread/pwrite; a read past the file's end is -EIO.
 */
typedef struct MappedRamRing MappedRamRing;

/* mapped_ram_ring_new: NULL, saying why, if io_uring is not there. */
MappedRamRing *mapped_ram_ring_new(MappedRam *m, unsigned depth, GError **errp);
void mapped_ram_ring_free(MappedRamRing *r);
/* mapped_ram_ring_full: @depth transfers in flight: wait for one first. */
bool mapped_ram_ring_full(const MappedRamRing *r);
unsigned mapped_ram_ring_inflight(const MappedRamRing *r);
int mapped_ram_ring_read(MappedRamRing *r, uint64_t first, uint64_t n,
                         void *buf, void *tag);
int mapped_ram_ring_write(MappedRamRing *r, uint64_t first, uint64_t n,
                          const void *buf, void *tag);
/* mapped_ram_ring_wait: one transfer's end: its tag in *@tag; 0 or
 * -errno (of that transfer; -EAGAIN: none in flight). */
int mapped_ram_ring_wait(MappedRamRing *r, void **tag);

#endif
