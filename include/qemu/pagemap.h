/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * /proc/self/pagemap: which pages of a mapping the process has touched.
 * Policy-free; thin wrappers return -errno, as util/userfaultfd.c does.
 * See the kernel's Documentation/admin-guide/mm/pagemap.rst.
 */
#ifndef QEMU_PAGEMAP_H
#define QEMU_PAGEMAP_H

#include <stdint.h>

#define PM_PRESENT      (1ULL << 63)    /* mapped to a page frame */
#define PM_SWAP         (1ULL << 62)    /* swapped out */
#define PM_FILE         (1ULL << 61)    /* file page or shared anonymous */

/* pagemap_open: an fd on /proc/self/pagemap, or -errno. */
int pagemap_open(void);

/*
 * pagemap_read: the entries of the @n 4 KiB pages from @addr (page
 * aligned) into @out.  0, or -errno (-EIO for a short read).  Safe from
 * any thread: one pread.
 */
int pagemap_read(int fd, const void *addr, uint64_t n, uint64_t *out);

/*
 * pagemap_never_touched: the entry of a page of a private anonymous
 * mapping says it has no frame and no swap, so it reads as zero.
 * (Not true of shared or file memory, whose pages live in the file.)
 */
static inline int pagemap_never_touched(uint64_t entry)
{
    return !(entry & (PM_PRESENT | PM_SWAP));
}

#endif
