/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The migration stream's format; the contract is in include/migration/stream.h. */
#include "migration/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "migration/mapped-ram.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/ram-load.h"
#include "system/kvm-state.h"


static void put_name(QEMUFile *f, const char *name)
{
    size_t n = strlen(name);
    qemu_put_byte(f, n);
    qemu_put_buffer(f, name, n);
}

void stream_put_channel(QEMUFile *f, StreamChannelRole role, const uint8_t *id)
{
    qemu_put_u32(f, STREAM_MAGIC);
    qemu_put_u32(f, STREAM_VERSION);
    qemu_put_byte(f, role);
    qemu_put_buffer(f, id, STREAM_ID_LEN);
}

int stream_parse_channel(const uint8_t *buf, size_t len, StreamChannel *c,
                         GError **errp)
{
    uint32_t magic = GUINT32_TO_LE(STREAM_MAGIC), version;
    if (memcmp(buf, &magic, MIN(len, 4)) != 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "not a ferry migration channel");
        return -1;
    }
    if (len < 8) {
        return 0;
    }
    memcpy(&version, buf + 4, 4);
    version = GUINT32_FROM_LE(version);
    if (version != STREAM_VERSION) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "unsupported migration stream version %u (this ferry "
                    "reads %u)", version, STREAM_VERSION);
        return -1;
    }
    if (len < 9) {
        return 0;
    }
    if (buf[8] != STREAM_CHANNEL_MAIN && buf[8] != STREAM_CHANNEL_PREEMPT) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "unknown migration channel role %u", buf[8]);
        return -1;
    }
    if (len < STREAM_CHANNEL_HEADER_LEN) {
        return 0;
    }
    c->role = buf[8];
    memcpy(c->id, buf + 9, STREAM_ID_LEN);
    return 1;
}

void stream_put_header(QEMUFile *f, const RAMBlock *rb, const uint8_t *id)
{
    stream_put_channel(f, STREAM_CHANNEL_MAIN, id);
    qemu_put_byte(f, REC_RAM_BLOCK);
    put_name(f, rb->name);
    qemu_put_u64(f, rb->size);
    qemu_put_u64(f, rb->page_size);
}

void stream_put_recv_bitmap(QEMUFile *f, const RAMBlock *rb)
{
    qemu_put_byte(f, REC_RECV_BITMAP);
    put_name(f, rb->name);
}

static void put_device(QEMUFile *f, const char *name, const GByteArray *b)
{
    qemu_put_byte(f, REC_DEVICE);
    put_name(f, name);
    qemu_put_u32(f, b->len);
    qemu_put_buffer(f, b->data, b->len);
}

bool stream_put_devices(QEMUFile *f, Machine *m, RunState state, GError **errp)
{
    g_autoptr(GByteArray) b = g_byte_array_new();

    if (!kvm_vm_state_save(&m->kvm, b, errp)) {
        return false;
    }
    put_device(f, "vm", b);
    for (int i = 0; i < m->ncpus; i++) {
        g_byte_array_set_size(b, 0);
        if (!kvm_vcpu_state_save(&m->kvm, &m->vcpus[i].cpu, b, errp)) {
            return false;
        }
        g_autofree char *name = g_strdup_printf("cpu%d", i);
        put_device(f, name, b);
    }
    if (m->have_serial) {
        SerialState *s = &m->serial;
        uint8_t regs[7];
        g_mutex_lock(&s->lock);
        memcpy(regs, (uint8_t[]) { s->ier, s->fcr, s->lcr, s->mcr, s->scr,
                                   s->dll, s->dlm }, 7);
        g_mutex_unlock(&s->lock);
        g_byte_array_set_size(b, 0);
        g_byte_array_append(b, regs, 7);
        put_device(f, "serial", b);
    }
    uint32_t st = GUINT32_TO_LE(state);
    g_byte_array_set_size(b, 0);
    g_byte_array_append(b, (uint8_t *)&st, 4);
    put_device(f, "runstate", b);
    qemu_put_byte(f, REC_EOF);
    qemu_fflush(f);
    if (qemu_file_error(f)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "writing the device state: %s",
                    g_strerror(-qemu_file_error(f)));
        return false;
    }
    return true;
}

/* ---- Loading ---------------------------------------------------------------- */

/* Fail with the stream's error when it has one, else with @fmt. */
static bool load_fail(QEMUFile *f, GError **errp, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static bool load_fail(QEMUFile *f, GError **errp, const char *fmt, ...)
{
    if (qemu_file_error(f)) {
        int e = -qemu_file_error(f);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "the migration stream ended early: %s",
                    e == EIO ? "connection closed" : g_strerror(e));
        return false;
    }
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s", msg);
    return false;
}

static bool get_name(QEMUFile *f, char *name, size_t cap)
{
    uint8_t n = qemu_get_byte(f);
    if (n >= cap) {
        return false;
    }
    qemu_get_buffer(f, name, n);
    name[n] = '\0';
    return !qemu_file_error(f);
}

/* Pages [off, off + count * 4 KiB) must lie inside the block. */
static bool check_range(QEMUFile *f, const RAMBlock *rb, uint64_t off,
                        uint32_t count, GError **errp)
{
    if (!stream_run_fits(rb, off, count)) {
        return load_fail(f, errp, "RAM record at offset 0x%" PRIx64 " with %u "
                         "pages lies outside block '%s' (size 0x%" PRIx64 ")",
                         off, count, rb->name, rb->size);
    }
    return true;
}

static bool load_device(Machine *m, const char *name, const uint8_t *data,
                        uint32_t len, RunState *state, GError **errp)
{
    if (!strcmp(name, "vm")) {
        return kvm_vm_state_load(&m->kvm, data, len, errp);
    }
    if (!strcmp(name, "runstate")) {
        uint32_t v;
        if (len != 4 || (memcpy(&v, data, 4), GUINT32_FROM_LE(v) >= RUN_STATE__MAX)) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "device 'runstate': bad value");
            return false;
        }
        *state = GUINT32_FROM_LE(v);
        return true;
    }
    if (!strcmp(name, "serial")) {
        if (len != 7) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "device 'serial': %u bytes, expected 7", len);
            return false;
        }
        if (m->have_serial) {
            SerialState *s = &m->serial;
            g_mutex_lock(&s->lock);
            s->ier = data[0], s->fcr = data[1], s->lcr = data[2];
            s->mcr = data[3], s->scr = data[4], s->dll = data[5], s->dlm = data[6];
            g_mutex_unlock(&s->lock);
        }
        return true;
    }
    int cpu;
    if (sscanf(name, "cpu%d", &cpu) == 1 && cpu >= 0 && cpu < m->ncpus) {
        g_autofree char *canon = g_strdup_printf("cpu%d", cpu);
        if (!strcmp(canon, name)) {
            return kvm_vcpu_state_load(&m->kvm, &m->vcpus[cpu].cpu, data, len,
                                       errp);
        }
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "unknown device section '%s' (this machine has %d vCPUs)", name,
                m->ncpus);
    return false;
}

/* A device record's body (after its type byte); @have_* note what came. */
static bool load_device_record(QEMUFile *f, Machine *m, RunState *state,
                               bool *have_vm, bool *have_cpu, GError **errp)
{
    char name[65];
    if (!get_name(f, name, sizeof(name))) {
        return load_fail(f, errp, "device section name too long");
    }
    uint32_t len = qemu_get_u32(f);
    if (len > STREAM_MAX_DEVICE) {
        return load_fail(f, errp, "device '%s': state of %u bytes is "
                         "larger than %u", name, len, STREAM_MAX_DEVICE);
    }
    g_autofree uint8_t *data = g_malloc(len ? len : 1);
    qemu_get_buffer(f, data, len);
    if (qemu_file_error(f)) {
        return load_fail(f, errp, "read error");
    }
    g_autoptr(GError) err = NULL;
    if (!load_device(m, name, data, len, state, &err)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "loading device '%s': %s", name, err->message);
        return false;
    }
    int cpu;
    if (!strcmp(name, "vm")) {
        *have_vm = true;
    } else if (sscanf(name, "cpu%d", &cpu) == 1) {
        have_cpu[cpu] = true;
    }
    return true;
}

static bool devices_complete(QEMUFile *f, Machine *m, bool have_vm,
                             const bool *have_cpu, GError **errp)
{
    if (!have_vm) {
        return load_fail(f, errp, "the stream ended without the VM's "
                         "device state");
    }
    for (int i = 0; i < m->ncpus; i++) {
        if (!have_cpu[i]) {
            return load_fail(f, errp, "the stream has no state for vCPU "
                             "%d (give both sides the same -smp)", i);
        }
    }
    return true;
}

bool stream_load_devices(QEMUFile *f, Machine *m, RunState *source_state,
                         GError **errp)
{
    bool have_vm = false, have_cpu[MAX_VCPUS] = { false };
    *source_state = RUN_STATE_RUNNING;
    for (;;) {
        uint8_t type = qemu_get_byte(f);
        if (qemu_file_error(f)) {
            return load_fail(f, errp, "read error");
        }
        if (type == REC_EOF) {
            return devices_complete(f, m, have_vm, have_cpu, errp);
        }
        if (type != REC_DEVICE) {
            return load_fail(f, errp, "record type 0x%02x in the postcopy "
                             "device package", type);
        }
        if (!load_device_record(f, m, source_state, &have_vm, have_cpu, errp)) {
            return false;
        }
    }
}

/*
 * The state a postcopy command moves to, or -1 if it cannot come now:
 * ADVISE first, DISCARDs after it, LISTEN after those, RUN after LISTEN.
 */
static int postcopy_next(StreamPostcopyState st, uint8_t type)
{
    switch (type) {
    case REC_POSTCOPY_ADVISE:
        return st == STREAM_POSTCOPY_NONE ? STREAM_POSTCOPY_ADVISE : -1;
    case REC_POSTCOPY_DISCARD:
        return st == STREAM_POSTCOPY_ADVISE || st == STREAM_POSTCOPY_DISCARD
               ? STREAM_POSTCOPY_DISCARD : -1;
    case REC_POSTCOPY_LISTEN:
        return st == STREAM_POSTCOPY_ADVISE || st == STREAM_POSTCOPY_DISCARD
               ? STREAM_POSTCOPY_LISTENING : -1;
    case REC_POSTCOPY_RUN:
        return st == STREAM_POSTCOPY_LISTENING ? STREAM_POSTCOPY_RUNNING : -1;
    case REC_RECV_BITMAP:
        return st == STREAM_POSTCOPY_RECOVER ? STREAM_POSTCOPY_RECOVER : -1;
    case REC_POSTCOPY_RESUME:
        return st == STREAM_POSTCOPY_RECOVER ? STREAM_POSTCOPY_RUNNING : -1;
    }
    return -1;
}

static bool postcopy_record(QEMUFile *f, StreamLoad *l, uint8_t type,
                            GError **errp)
{
    static const char *const names[] = { "ADVISE", "DISCARD", "LISTEN", "RUN",
                                         "RECV_BITMAP", "RESUME" };
    static const char *const states[] = { "none", "advise", "discard",
                                          "listening", "running", "recover" };
    RAMBlock *rb = l->m->ram;
    if (!l->postcopy) {
        return load_fail(f, errp, "postcopy record 0x%02x, but postcopy-ram "
                         "is not enabled on the destination", type);
    }
    int next = postcopy_next(l->postcopy_state, type);
    if (next < 0) {
        return load_fail(f, errp, "postcopy %s (record 0x%02x) out of order, "
                         "in postcopy state %s", names[type - REC_POSTCOPY_ADVISE],
                         type, states[l->postcopy_state]);
    }
    l->postcopy_state = next;
    switch (type) {
    case REC_POSTCOPY_ADVISE: {
        uint64_t hps = qemu_get_u64(f);
        if (qemu_file_error(f)) {
            return load_fail(f, errp, "read error");
        }
        return l->postcopy->advise(l->opaque, hps, errp);
    }
    case REC_POSTCOPY_DISCARD: {
        uint64_t off = qemu_get_u64(f), count = qemu_get_u64(f);
        if (qemu_file_error(f)) {
            return load_fail(f, errp, "read error");
        }
        if (off % TARGET_PAGE_SIZE || count == 0 || off > rb->size ||
            count > (rb->size - off) / TARGET_PAGE_SIZE) {
            return load_fail(f, errp, "discard at 0x%" PRIx64 " of %" PRIu64
                             " pages lies outside block '%s'", off, count,
                             rb->name);
        }
        return ram_load_discard(l->ram, off, count, errp);
    }
    case REC_POSTCOPY_LISTEN:
        return l->postcopy->listen(l->opaque, errp);
    case REC_POSTCOPY_RUN: {
        uint32_t len = qemu_get_u32(f);
        if (len > STREAM_MAX_PACKAGE) {
            return load_fail(f, errp, "postcopy package of %u bytes is larger "
                             "than %u", len, STREAM_MAX_PACKAGE);
        }
        g_autofree uint8_t *data = g_malloc(len ? len : 1);
        qemu_get_buffer(f, data, len);
        if (qemu_file_error(f)) {
            return load_fail(f, errp, "read error");
        }
        g_autoptr(GBytes) pkg = g_bytes_new_take(g_steal_pointer(&data), len);
        if (!l->postcopy->run(l->opaque, pkg, errp)) {
            return false;
        }
        l->postcopy_running = true;
        return true;
    }
    case REC_RECV_BITMAP: {
        char name[65];
        if (!get_name(f, name, sizeof(name))) {
            return load_fail(f, errp, "read error");
        }
        if (strcmp(name, rb->name) != 0) {
            return load_fail(f, errp, "RECV_BITMAP for RAM block '%s', which "
                             "this machine does not have", name);
        }
        return l->postcopy->recv_bitmap(l->opaque, errp);
    }
    case REC_POSTCOPY_RESUME:
        return l->postcopy->resume(l->opaque, errp);
    }
    return false;
}

/* Everything before the PING is in RAM: say so on the return path. */
static bool load_ping(QEMUFile *f, StreamLoad *l, GError **errp)
{
    uint32_t id = qemu_get_u32(f);
    if (qemu_file_error(f)) {
        return load_fail(f, errp, "read error");
    }
    if (!l->return_path || !l->pong) {
        return load_fail(f, errp, "PING %u in the migration stream, but there "
                         "is no return path to answer on", id);
    }
    return l->pong(l->opaque, id, errp);
}

static bool read_error(GError **errp, uint64_t first, int ret)
{
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                "mapped-ram: reading pages at 0x%" PRIx64 ": %s",
                first * TARGET_PAGE_SIZE, ret == -EIO
                ? "the file ends before them" : g_strerror(-ret));
    return false;
}

bool stream_place_read(RAMLoader *l, RAMLoadBuf *b, MigrationStats *stats,
                       uint64_t first, uint64_t n, const uint8_t *data,
                       int ret, GError **errp)
{
    if (ret < 0) {
        return read_error(errp, first, ret);
    }
    if (!ram_load_buffer(l, b, first * TARGET_PAGE_SIZE, n, data, errp)) {
        return false;
    }
    __atomic_fetch_add(&stats->normal_pages, n, __ATOMIC_RELAXED);
    __atomic_fetch_add(&stats->transferred, n * TARGET_PAGE_SIZE,
                       __ATOMIC_RELAXED);
    return true;
}

bool stream_place_mapped(RAMLoader *l, RAMLoadBuf *b, const MappedRam *m,
                         MigrationStats *stats, uint64_t first, uint64_t n,
                         GError **errp)
{
    uint64_t end = first + n, max = MIN(STREAM_MAX_RUN, b->size / TARGET_PAGE_SIZE);
    for (uint64_t p = first; p < end;) {
        bool data;
        uint64_t k = mapped_ram_run(m, p, end, max, &data);
        if (data) {
            int ret = mapped_ram_read_pages(m, p, k, b->data);
            if (!stream_place_read(l, b, stats, p, k, b->data, ret, errp)) {
                return false;
            }
        } else {
            if (!ram_load_zero(l, b, p * TARGET_PAGE_SIZE, k, errp)) {
                return false;
            }
            __atomic_fetch_add(&stats->zero_pages, k, __ATOMIC_RELAXED);
        }
        p += k;
    }
    return true;
}

#define RING_DEPTH  4

typedef struct RingRun {
    uint64_t first, n;
    uint8_t *data;
} RingRun;

/* The eager load through io_uring (x-io-uring, 4 KiB pages): up to
 * RING_DEPTH runs read ahead while the last one read is placed. */
static bool load_mapped_ring(StreamLoad *l, RAMLoadBuf *buf, GError **errp)
{
    MappedRam *m = l->mapped;
    MappedRamRing *ring = mapped_ram_ring_new(m, RING_DEPTH, errp);
    if (!ring) {
        return false;
    }
    uint64_t batch = MIN(STREAM_MAX_RUN, buf->size / TARGET_PAGE_SIZE);
    RingRun runs[RING_DEPTH];
    GQueue free_runs = G_QUEUE_INIT;
    for (int i = 0; i < RING_DEPTH; i++) {
        runs[i].data = g_malloc(batch * TARGET_PAGE_SIZE);
        g_queue_push_tail(&free_runs, &runs[i]);
    }
    bool ok = true;
    for (uint64_t p = 0; ok && p < m->npages;) {
        bool data;
        uint64_t n = mapped_ram_run(m, p, m->npages, batch, &data);
        if (!data) {
            ok = ram_load_zero(l->ram, buf, p * TARGET_PAGE_SIZE, n, errp);
            __atomic_fetch_add(&l->stats->zero_pages, n, __ATOMIC_RELAXED);
            p += n;
            continue;
        }
        if (mapped_ram_ring_full(ring)) {
            void *tag;
            int ret = mapped_ram_ring_wait(ring, &tag);
            RingRun *r = tag;
            ok = stream_place_read(l->ram, buf, l->stats, r->first, r->n,
                                   r->data, ret, errp);
            g_queue_push_tail(&free_runs, r);
            continue;
        }
        RingRun *r = g_queue_pop_head(&free_runs);
        r->first = p;
        r->n = n;
        int ret = mapped_ram_ring_read(ring, p, n, r->data, r);
        if (ret < 0) {
            ok = read_error(errp, p, ret);
            g_queue_push_tail(&free_runs, r);
            break;
        }
        p += n;
    }
    while (mapped_ram_ring_inflight(ring)) {
        void *tag;
        int ret = mapped_ram_ring_wait(ring, &tag);
        RingRun *r = tag;
        ok = ok && stream_place_read(l->ram, buf, l->stats, r->first, r->n,
                                     r->data, ret, errp);
    }
    mapped_ram_ring_free(ring);
    g_queue_clear(&free_runs);
    for (int i = 0; i < RING_DEPTH; i++) {
        g_free(runs[i].data);
    }
    return ok;
}

/*
 * A MAPPED_RAM record (its type read): take the file's layout, and
 * unless restore is on demand place every page now, in batches of runs
 * with data (read from their slots) and runs of zero pages.
 */
static bool load_mapped_ram(QEMUFile *f, StreamLoad *l, RAMLoadBuf *buf,
                            bool pages_seen, GError **errp)
{
    RAMBlock *rb = l->m->ram;
    if (!l->mapped_ram) {
        return load_fail(f, errp, "the migration file was saved with "
                         "mapped-ram: set the mapped-ram capability before "
                         "migrate-incoming");
    }
    if (l->mapped || pages_seen) {
        return load_fail(f, errp, "MAPPED_RAM (record 0x08) after RAM in "
                         "the migration stream");
    }
    uint64_t npages = rb->size / TARGET_PAGE_SIZE;
    l->mapped = g_new0(MappedRam, 1);
    if (!mapped_ram_reader_open(l->mapped, f, npages, errp)) {
        return false;
    }
    if (l->mapped_lazy) {
        return true;
    }
    if (l->mapped_uring && l->ram->hpages == 1) {
        return load_mapped_ring(l, buf, errp);
    }
    return stream_place_mapped(l->ram, buf, l->mapped, l->stats, 0, npages,
                               errp);
}

bool stream_load(QEMUFile *f, StreamLoad *l, GError **errp)
{
    Machine *m = l->m;
    RAMBlock *rb = m->ram;
    char name[65];
    RAMLoadBuf buf;

    uint8_t head[STREAM_CHANNEL_HEADER_LEN];
    g_autoptr(GError) herr = NULL;
    /* Magic and version first: an old stream says which version it is. */
    qemu_get_buffer(f, head, 8);
    if (!qemu_file_error(f) && stream_parse_channel(head, 8, NULL, &herr) == 0) {
        qemu_get_buffer(f, head + 8, sizeof(head) - 8);
    }
    if (herr || (!qemu_file_error(f) &&
                 stream_parse_channel(head, sizeof(head), &l->channel,
                                      &herr) < 0)) {
        return load_fail(f, errp, "%s", herr->message);
    }
    if (qemu_file_error(f)) {
        return load_fail(f, errp, "read error");
    }
    if (l->channel.role != STREAM_CHANNEL_MAIN) {
        return load_fail(f, errp, "the migration stream opens as a preempt "
                         "channel, not the main one");
    }
    if (l->resume && memcmp(l->channel.id, l->resume_id, STREAM_ID_LEN) != 0) {
        return load_fail(f, errp, "the connection is the stream of another "
                         "migration, not the paused one");
    }
    if (qemu_get_byte(f) != REC_RAM_BLOCK || !get_name(f, name, sizeof(name))) {
        return load_fail(f, errp, "the stream does not start with a RAM block");
    }
    uint64_t size = qemu_get_u64(f), page_size = qemu_get_u64(f);
    if (strcmp(name, rb->name) != 0 || size != rb->size) {
        return load_fail(f, errp, "RAM block '%s' of %" PRIu64 " MiB does not "
                         "match this machine's '%s' of %" PRIu64 " MiB (give "
                         "both sides the same -m)", name, size >> 20, rb->name,
                         rb->size >> 20);
    }
    (void)page_size;    /* The source's backend may differ from ours. */

    bool have_vm = false, have_cpu[MAX_VCPUS] = { false };
    bool ok = false;
    l->source_state = RUN_STATE_RUNNING;
    /* A resumed stream goes on from RUN, its return path open. */
    l->return_path = l->resume;
    l->postcopy_running = l->resume;
    l->postcopy_state = l->resume ? STREAM_POSTCOPY_RECOVER : STREAM_POSTCOPY_NONE;
    ram_load_buf_init(&buf, l->ram);
    bool pages_seen = false;
    for (;;) {
        uint8_t type = qemu_get_byte(f);
        if (qemu_file_error(f)) {
            load_fail(f, errp, "read error");
            break;
        }
        if (type == REC_RAM_PAGES || type == REC_RAM_ZERO) {
            uint64_t off = qemu_get_u64(f);
            uint32_t count = qemu_get_u32(f);
            if (!check_range(f, rb, off, count, errp)) {
                break;
            }
            if (l->mapped) {
                load_fail(f, errp, "RAM records in a mapped-ram migration "
                          "file");
                break;
            }
            pages_seen = true;
            if (l->postcopy_state == STREAM_POSTCOPY_RECOVER) {
                load_fail(f, errp, "RAM before POSTCOPY_RESUME on a resumed "
                          "stream");
                break;
            }
            if (type == REC_RAM_PAGES) {
                if (!ram_load_pages(l->ram, &buf, f, off, count, errp)) {
                    break;
                }
                __atomic_fetch_add(&l->stats->normal_pages, count,
                                   __ATOMIC_RELAXED);
            } else {
                if (!ram_load_zero(l->ram, &buf, off, count, errp)) {
                    break;
                }
                __atomic_fetch_add(&l->stats->zero_pages, count,
                                   __ATOMIC_RELAXED);
            }
            __atomic_store_n(&l->stats->transferred, qemu_file_transferred(f),
                             __ATOMIC_RELAXED);
            continue;
        }
        if (type == REC_OPEN_RETURN_PATH) {
            l->return_path = true;
            continue;
        }
        if (type == REC_MAPPED_RAM) {
            if (!load_mapped_ram(f, l, &buf, pages_seen, errp)) {
                break;
            }
            continue;
        }
        if (type == REC_PING) {
            if (!load_ping(f, l, errp)) {
                break;
            }
            continue;
        }
        if (type == REC_PASS_END) {
            qemu_get_u32(f);
            __atomic_fetch_add(&l->stats->dirty_sync_count, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (type >= REC_POSTCOPY_ADVISE && type <= REC_POSTCOPY_RESUME) {
            if (!postcopy_record(f, l, type, errp)) {
                break;
            }
            continue;
        }
        if (type == REC_DEVICE && !l->postcopy_running) {
            if (!load_device_record(f, m, &l->source_state, &have_vm, have_cpu,
                                    errp)) {
                break;
            }
            continue;
        }
        if (type == REC_EOF && l->postcopy_state == STREAM_POSTCOPY_RECOVER) {
            /* Not a whole stream: the destination would stay in
             * postcopy-recover, its fault thread stopped. */
            load_fail(f, errp, "the resumed stream ended before "
                      "POSTCOPY_RESUME");
            break;
        }
        if (type == REC_EOF) {
            /* In postcopy the devices came in the package. */
            ok = l->postcopy_running ||
                 devices_complete(f, m, have_vm, have_cpu, errp);
            break;
        }
        load_fail(f, errp, "unknown record type 0x%02x in the migration "
                  "stream", type);
        break;
    }
    ram_load_buf_cleanup(&buf);
    return ok;
}
