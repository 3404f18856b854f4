/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Guest RAM as migration sees it: named blocks of host memory, each
 * mapped at one or more guest-physical ranges.
 *
 * Ownership: the machine creates the blocks before any vCPU runs and
 * frees them after every vCPU has stopped; in between, the host
 * address, size and page size never change, so any thread may read
 * them without a lock.  Error contract: functions that can fail take
 * GError **errp last and return bool (or NULL).
 */
#ifndef SYSTEM_RAMBLOCK_H
#define SYSTEM_RAMBLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#define RAM_MAX_MAPPINGS 2

/*
 * The page the migration stream, the dirty bitmaps and the placement
 * count in (QEMU's TARGET_PAGE_SIZE): x86's 4 KiB.  A RAMBlock's own
 * page_size (a host page: 4 KiB, or a huge page) is a multiple of it.
 */
#define TARGET_PAGE_SIZE 4096

/* One guest-physical range of a block: [gpa, gpa + size) = host + offset. */
typedef struct RamMapping {
    uint64_t gpa;
    uint64_t offset;            /* into the block */
    uint64_t size;
} RamMapping;

typedef struct RAMBlock {
    char *name;                 /* "pc.ram", as QEMU names it */
    uint8_t *host;              /* host address of offset 0 */
    uint64_t size;              /* bytes, a multiple of page_size */
    uint64_t page_size;         /* 4 KiB, or the huge page size */
    int fd;                     /* backing file, or -1 for anonymous */
    bool shared;                /* MAP_SHARED: pages live in a file or shmem */
    /* The backing file is ferry's alone (a memfd, or a file made in a
     * mem-path directory and unlinked at once): punching holes in it
     * touches nothing of anyone else's. */
    bool fd_owned;
    bool prealloc;              /* every page was allocated up front */
    /*
     * Every page reads as zero: nothing has written the block since it
     * was allocated.  Not so for an existing file with contents
     * (memory-backend-file keeps them, as QEMU's), nor once the machine
     * has loaded a kernel into it.  The destination's zero-page
     * decisions rest on it (ram-load.c): it skips a zero page only where
     * the memory reads zero already.  Written in the main thread before
     * any other thread runs.
     */
    bool zeroed;
    RamMapping map[RAM_MAX_MAPPINGS];
    int nmap;
} RAMBlock;

typedef enum MemBackendType {
    MEM_BACKEND_RAM,            /* memory-backend-ram */
    MEM_BACKEND_MEMFD,          /* memory-backend-memfd */
    MEM_BACKEND_FILE,           /* memory-backend-file */
} MemBackendType;

typedef enum MemPolicy {
    MEM_POLICY_DEFAULT,
    MEM_POLICY_PREFERRED,
    MEM_POLICY_BIND,
    MEM_POLICY_INTERLEAVE,
} MemPolicy;

/* -object memory-backend-*,id=...: QEMU's properties. */
typedef struct MemBackendOptions {
    MemBackendType type;
    char *id;
    uint64_t size;
    bool share;                 /* default: on for memfd, off otherwise */
    bool prealloc;
    bool noreserve;             /* reserve=off: map without reserving swap
                                 * (QEMU's property; default: reserved) */
    bool hugetlb;               /* memfd */
    uint64_t hugetlbsize;       /* memfd, 0: the default huge page size */
    char *mem_path;             /* file: a file, or a directory for a new one */
    char *host_nodes;           /* "0", "0-1", "0,2" */
    MemPolicy policy;
} MemBackendOptions;

void mem_backend_options_free(MemBackendOptions *o);

/*
 * ram_block_new: a block from a backend: allocated, NUMA policy applied
 * before any page is touched, then preallocated if asked.  Private
 * memory is reserved against the host's commit limit, as QEMU's (pages
 * still come on first write): RAM the host can never give fails here,
 * "cannot set up guest memory", rather than filling the host later;
 * reserve=off maps it MAP_NORESERVE.  The mapping is MADV_DONTFORK: a
 * child (exec: forks) gets none of it.
 */
RAMBlock *ram_block_new(const char *name, const MemBackendOptions *o,
                        GError **errp);

/* ram_block_new_anon: private anonymous memory (the default backend). */
RAMBlock *ram_block_new_anon(const char *name, uint64_t size, GError **errp);

/* ram_block_free: unmap and free; NULL is allowed. */
void ram_block_free(RAMBlock *rb);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(RAMBlock, ram_block_free)

/*
 * pc_ram_layout: QEMU's x86 split of @size bytes of RAM: below 4 GiB
 * up to 3 GiB (all of it when @size is under 3.5 GiB), the rest from
 * 4 GiB up.  Fills rb->map.
 */
void pc_ram_layout(RAMBlock *rb);

/*
 * ram_block_gpa_to_host: the host address of guest-physical @gpa, or
 * NULL when it is not RAM or [gpa, gpa + len) crosses a mapping's end.
 */
void *ram_block_gpa_to_host(const RAMBlock *rb, uint64_t gpa, uint64_t len);

#endif
