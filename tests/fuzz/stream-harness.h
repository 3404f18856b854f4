/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Feed arbitrary bytes to the migration stream loader, as a destination
 * would receive them: a machine with 16 MiB of RAM and 2 vCPUs but no
 * KVM (device sections then fail cleanly at their first ioctl).  Shared
 * by the cmocka test (run under ASan and UBSan by make check) and the
 * libFuzzer target.
 */
#ifndef TESTS_FUZZ_STREAM_HARNESS_H
#define TESTS_FUZZ_STREAM_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/ram-load.h"
#include "migration/stream.h"

#define HARNESS_RAM (16ULL << 20)

/* PING: the harness has no peer; the answer goes nowhere. */
static inline bool harness_pong(void *opaque, uint32_t id, GError **errp)
{
    (void)opaque, (void)id, (void)errp;
    return true;
}

/* Load @data; true if the loader accepted it whole.  Never crashes. */
static inline bool harness_load(const uint8_t *data, size_t len,
                                char **error)
{
    static Machine m;           /* one per process: cheap and reused */
    static bool ready;
    if (!ready) {
        memset(&m, 0, sizeof(m));
        m.ram = ram_block_new_anon("pc.ram", HARNESS_RAM, NULL);
        pc_ram_layout(m.ram);
        m.kvm.fd = m.kvm.vm_fd = -1;
        m.ncpus = 2;
        m.vcpus[0].cpu.fd = m.vcpus[1].cpu.fd = -1;
        ready = true;
    }
    int fd = memfd_create("stream", MFD_CLOEXEC);
    if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len)) {
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    lseek(fd, 0, SEEK_SET);
    QEMUFile *f = qemu_file_new(fd, false, true);
    MigrationStats stats = { 0 };
    RAMLoader ram;
    ram_loader_init(&ram, m.ram);
    StreamLoad l = { .m = &m, .stats = &stats, .ram = &ram,
                     .pong = harness_pong };
    GError *err = NULL;
    bool ok = stream_load(f, &l, &err);
    ram_loader_cleanup(&ram);
    /* Pages never placed read as zero again only after unregistering;
     * drop what this input placed so that the next starts afresh. */
    madvise(m.ram->host, m.ram->size, MADV_DONTNEED);
    qemu_file_close(f);
    if (error) {
        *error = err ? g_strdup(err->message) : NULL;
    }
    g_clear_error(&err);
    return ok;
}

#endif
