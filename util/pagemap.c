/* SPDX-License-Identifier: GPL-2.0-or-later */
/* /proc/self/pagemap; the contract is in include/qemu/pagemap.h. */
#include "qemu/pagemap.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int pagemap_open(void)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int pagemap_read(int fd, const void *addr, uint64_t n, uint64_t *out)
{
    off_t off = (off_t)((uintptr_t)addr / 4096) * sizeof(uint64_t);
    size_t len = n * sizeof(uint64_t);
    ssize_t got = pread(fd, out, len, off);
    if (got < 0) {
        return -errno;
    }
    return (size_t)got == len ? 0 : -EIO;
}
