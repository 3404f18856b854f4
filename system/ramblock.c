/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Guest RAM blocks and their backends; the contract is in
 * include/system/ramblock.h.
 */
#include "system/ramblock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <numa.h>
#include <numaif.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/memfd.h>

#define GiB (1ULL << 30)
#define HUGETLBFS_MAGIC 0x958458f6

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/*
 * libnuma reports problems by printing, through hooks numa(3) lets an
 * application replace.  ferry reports through GError only.
 */
void numa_warn(int num, char *fmt, ...)
{
    (void)num;
    (void)fmt;
}

void numa_error(char *where)
{
    (void)where;
}

void mem_backend_options_free(MemBackendOptions *o)
{
    if (o) {
        g_free(o->id);
        g_free(o->mem_path);
        g_free(o->host_nodes);
        g_free(o);
    }
}

static bool fail_errno(GError **errp, int err, const char *fmt, const char *arg)
{
    g_autofree char *what = g_strdup_printf(fmt, arg);
    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(err), "%s: %s",
                what, g_strerror(err));
    return false;
}

/*
 * Open the backing file for memory-backend-file; its page size in @page;
 * *@kept is true when an existing file with contents is used as it is.
 */
static int open_mem_path(const MemBackendOptions *o, uint64_t *page,
                         bool *kept, bool *owned, GError **errp)
{
    struct stat st;
    int fd;

    if (stat(o->mem_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        /* A directory: a new file in it, gone once mapped (as QEMU). */
        g_autofree char *tmpl = g_build_filename(o->mem_path,
                                                 "ferry_backend.XXXXXX", NULL);
        fd = g_mkstemp_full(tmpl, O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
            unlink(tmpl);
            *owned = true;
        }
    } else {
        fd = open(o->mem_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        *kept = fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0;
    }
    if (fd < 0) {
        fail_errno(errp, errno, "can't open backing store %s for guest RAM",
                   o->mem_path);
        return -1;
    }
    struct statfs fs;
    *page = TARGET_PAGE_SIZE;
    if (fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC) {
        *page = fs.f_bsize;
    }
    return fd;
}

static int open_memfd(const MemBackendOptions *o, uint64_t *page, GError **errp)
{
    unsigned flags = MFD_CLOEXEC;
    *page = TARGET_PAGE_SIZE;
    if (o->hugetlb) {
        uint64_t hp = o->hugetlbsize ? o->hugetlbsize : 2 * 1024 * 1024;
        if (hp & (hp - 1)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "hugetlbsize %" PRIu64 " is not a power of two", hp);
            return -1;
        }
        flags |= MFD_HUGETLB | (__builtin_ctzll(hp) << MFD_HUGE_SHIFT);
        *page = hp;
    }
    int fd = memfd_create(o->id, flags);
    if (fd < 0) {
        fail_errno(errp, errno, "memfd_create for %s", o->id);
    }
    return fd;
}

static bool apply_policy(const MemBackendOptions *o, void *host, uint64_t size,
                         GError **errp)
{
    if (!o->host_nodes && o->policy == MEM_POLICY_DEFAULT) {
        return true;
    }
    if (numa_available() < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "host-nodes/policy given but this host has no NUMA support");
        return false;
    }
    struct bitmask *nodes = o->host_nodes ? numa_parse_nodestring(o->host_nodes)
                                          : NULL;
    if (o->host_nodes && !nodes) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "host-nodes '%s' names no online node of this host",
                    o->host_nodes);
        return false;
    }
    static const int modes[] = {
        [MEM_POLICY_DEFAULT] = MPOL_DEFAULT, [MEM_POLICY_PREFERRED] = MPOL_PREFERRED,
        [MEM_POLICY_BIND] = MPOL_BIND, [MEM_POLICY_INTERLEAVE] = MPOL_INTERLEAVE,
    };
    int mode = modes[o->policy];
    if (mode != MPOL_DEFAULT && !nodes) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "policy needs host-nodes");
        return false;
    }
    long ret = mbind(host, size, mode, nodes && mode != MPOL_DEFAULT ? nodes->maskp : NULL,
                     nodes && mode != MPOL_DEFAULT ? nodes->size + 1 : 0, 0);
    int err = errno;
    if (nodes) {
        numa_bitmask_free(nodes);
    }
    if (ret < 0) {
        return fail_errno(errp, err, "cannot bind memory to host NUMA nodes%s", "");
    }
    return true;
}

static bool prealloc(void *host, uint64_t size, uint64_t page, GError **errp)
{
    if (madvise(host, size, MADV_POPULATE_WRITE) == 0) {
        return true;
    }
    if (errno != EINVAL) {
        return fail_errno(errp, errno, "preallocating guest RAM%s", "");
    }
    /* Kernels before 5.14: touch every page; a write keeps shared data. */
    for (uint64_t off = 0; off < size; off += page) {
        volatile uint8_t *p = (uint8_t *)host + off;
        *p = *p;
    }
    return true;
}

RAMBlock *ram_block_new(const char *name, const MemBackendOptions *o,
                        GError **errp)
{
    uint64_t page = TARGET_PAGE_SIZE;
    int fd = -1, flags;
    bool share = o->share, kept = false, owned = false;

    switch (o->type) {
    case MEM_BACKEND_MEMFD:
        fd = open_memfd(o, &page, errp);
        if (fd < 0) {
            return NULL;
        }
        owned = true;
        break;
    case MEM_BACKEND_FILE:
        fd = open_mem_path(o, &page, &kept, &owned, errp);
        if (fd < 0) {
            return NULL;
        }
        break;
    default:
        break;
    }
    if (o->size == 0 || o->size % page) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "RAM size %" PRIu64 " is not a positive multiple of the "
                    "page size %" PRIu64, o->size, page);
        goto fail;
    }
    if (fd >= 0 && ftruncate(fd, o->size) < 0) {
        fail_errno(errp, errno, "cannot size the backing store of %s", o->id);
        goto fail;
    }
    flags = (share ? MAP_SHARED : MAP_PRIVATE) |
            (fd < 0 ? MAP_ANONYMOUS : 0) | (o->noreserve ? MAP_NORESERVE : 0);
    void *host = mmap(NULL, o->size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (host == MAP_FAILED) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot set up guest memory '%s': %s", name,
                    g_strerror(errno));
        goto fail;
    }
    /* Not for a child: the exec: transport forks (QEMU_MADV_DONTFORK). */
    madvise(host, o->size, MADV_DONTFORK);
    RAMBlock *rb = g_new0(RAMBlock, 1);
    rb->name = g_strdup(name);
    rb->host = host;
    rb->size = o->size;
    rb->page_size = page;
    rb->fd = fd;
    rb->shared = share;
    rb->fd_owned = owned;
    rb->prealloc = o->prealloc;
    rb->zeroed = !kept;
    if (fd < 0 && !share && !o->prealloc) {
        /*
         * Transparent huge pages, as QEMU asks for guest RAM: the guest's
         * first touch costs one fault per 2 MiB, and on this kind of host
         * (a VM handing free memory back) it also left the destination's
         * 4 KiB placements of a 4 GiB postcopy 25 % faster.  Not for
         * preallocated RAM: postcopy moves those pages one by one
         * (ram-load.c's pool), and a huge folio would be split at each.
         * Advice only: without THP nothing changes.
         */
        madvise(host, o->size, MADV_HUGEPAGE);
    }
    if (!apply_policy(o, host, o->size, errp) ||
        (o->prealloc && !prealloc(host, o->size, page, errp))) {
        ram_block_free(rb);
        return NULL;
    }
    return rb;

fail:
    if (fd >= 0) {
        close(fd);
    }
    return NULL;
}

RAMBlock *ram_block_new_anon(const char *name, uint64_t size, GError **errp)
{
    MemBackendOptions o = { .type = MEM_BACKEND_RAM, .id = (char *)name,
                            .size = size };
    return ram_block_new(name, &o, errp);
}

void ram_block_free(RAMBlock *rb)
{
    if (!rb) {
        return;
    }
    munmap(rb->host, rb->size);
    if (rb->fd >= 0) {
        close(rb->fd);
    }
    g_free(rb->name);
    g_free(rb);
}

void pc_ram_layout(RAMBlock *rb)
{
    uint64_t below = rb->size >= 3 * GiB + GiB / 2 ? 3 * GiB : rb->size;

    rb->nmap = 0;
    rb->map[rb->nmap++] = (RamMapping) { 0, 0, below };
    if (rb->size > below) {
        rb->map[rb->nmap++] = (RamMapping) { 4 * GiB, below, rb->size - below };
    }
}

void *ram_block_gpa_to_host(const RAMBlock *rb, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < rb->nmap; i++) {
        const RamMapping *m = &rb->map[i];
        if (gpa >= m->gpa && gpa - m->gpa <= m->size &&
            len <= m->size - (gpa - m->gpa)) {
            return rb->host + m->offset + (gpa - m->gpa);
        }
    }
    return NULL;
}
