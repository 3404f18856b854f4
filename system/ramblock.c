/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Guest RAM blocks; the contract is in include/system/ramblock.h.
 */
#include "system/ramblock.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GiB (1ULL << 30)

RAMBlock *ram_block_new_anon(const char *name, uint64_t size, GError **errp)
{
    if (size == 0 || size % 4096) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "RAM size %" PRIu64 " is not a positive multiple of 4 KiB",
                    size);
        return NULL;
    }
    void *host = mmap(NULL, size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "cannot allocate %" PRIu64 " MiB of guest RAM: %s",
                    size >> 20, g_strerror(errno));
        return NULL;
    }
    RAMBlock *rb = g_new0(RAMBlock, 1);
    rb->name = g_strdup(name);
    rb->host = host;
    rb->size = size;
    rb->page_size = 4096;
    rb->fd = -1;
    return rb;
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
