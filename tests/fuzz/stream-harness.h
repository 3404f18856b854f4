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

/*
 * Postcopy's hooks, as a destination's but with no fault thread: ADVISE
 * and LISTEN are counted, LISTEN turns the loader to postcopy placement,
 * RUN loads the package's device records (when @load_package) so that
 * its parser is fuzzed too.
 */
typedef struct HarnessPostcopy {
    RAMLoader *ram;
    Machine *m;
    bool load_package;
    /* Load as a resumed stream of the migration @resume_id names. */
    bool resume;
    uint8_t resume_id[STREAM_ID_LEN];
    int advise, listen, run, recv_bitmap, resumed;
} HarnessPostcopy;

static inline bool harness_advise(void *opaque, uint64_t hps, GError **errp)
{
    HarnessPostcopy *h = opaque;
    (void)hps;
    h->advise++;
    return ram_load_discard_missing(h->ram, errp);
}

static inline bool harness_listen(void *opaque, GError **errp)
{
    HarnessPostcopy *h = opaque;
    (void)errp;
    h->listen++;
    h->ram->postcopy = true;
    return true;
}

static inline bool harness_run(void *opaque, GBytes *pkg, GError **errp)
{
    HarnessPostcopy *h = opaque;
    h->run++;
    if (!h->load_package) {
        return true;
    }
    gsize len;
    const void *d = g_bytes_get_data(pkg, &len);
    QEMUFile *mf = qemu_file_new_mem(d, len);
    RunState st;
    bool ok = stream_load_devices(mf, h->m, &st, errp);
    qemu_file_close(mf);
    return ok;
}

static inline bool harness_recv_bitmap(void *opaque, GError **errp)
{
    HarnessPostcopy *h = opaque;
    (void)errp;
    h->recv_bitmap++;
    return true;
}

static inline bool harness_resume(void *opaque, GError **errp)
{
    HarnessPostcopy *h = opaque;
    (void)errp;
    h->resumed++;
    h->ram->postcopy = true;
    return true;
}

static const StreamPostcopyOps harness_postcopy_ops = {
    .advise = harness_advise,
    .listen = harness_listen,
    .run = harness_run,
    .recv_bitmap = harness_recv_bitmap,
    .resume = harness_resume,
};

/*
 * Load @data into @m with @h's postcopy hooks (NULL: none, postcopy
 * records are refused); true if the loader accepted it whole.
 */
static inline bool harness_load_into(Machine *m, const uint8_t *data,
                                     size_t len, HarnessPostcopy *h,
                                     char **error)
{
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
    ram_loader_init(&ram, m->ram);
    if (h) {
        h->ram = &ram;
        h->m = m;
    }
    StreamLoad l = { .m = m, .stats = &stats, .ram = &ram,
                     .postcopy = h ? &harness_postcopy_ops : NULL,
                     .pong = harness_pong, .opaque = h,
                     .resume = h && h->resume };
    if (l.resume) {
        memcpy(l.resume_id, h->resume_id, STREAM_ID_LEN);
    }
    GError *err = NULL;
    bool ok = stream_load(f, &l, &err);
    ram_loader_cleanup(&ram);
    /* Pages never placed read as zero again only after unregistering;
     * drop what this input placed so that the next starts afresh. */
    madvise(m->ram->host, m->ram->size, MADV_DONTNEED);
    qemu_file_close(f);
    if (error) {
        *error = err ? g_strdup(err->message) : NULL;
    }
    g_clear_error(&err);
    return ok;
}

/* The harness machine: one per process, cheap and reused. */
static inline Machine *harness_machine(void)
{
    static Machine m;
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
    return &m;
}

/*
 * Load @data as a destination with postcopy-ram on would; true if the
 * loader accepted it whole.  Never crashes.
 */
static inline bool harness_load(const uint8_t *data, size_t len,
                                char **error)
{
    HarnessPostcopy h = { .load_package = true };
    return harness_load_into(harness_machine(), data, len, &h, error);
}

#endif
