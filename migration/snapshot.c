/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Background snapshots; the design is in include/migration/snapshot.h. */
#include "migration/snapshot.h"

#include "migration/mapped-ram.h"
#include "migration/migration.h"
#include "migration-int.h"
#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/thread-prio.h"
#include "qemu/userfaultfd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define SCAN_RUN_BYTES  (1 << 20)   /* the scan claims and writes this much */
#define WP_EVENTS       16
#define ASIDE_MAX       (64 << 20)  /* bytes of copies waiting to be written */
#define DRAIN_RUN_BYTES (1 << 20)   /* consecutive copies written at once */
#define UNREGISTER_STEP (8 << 20)   /* RAM unregistered at once at the end */

/* A written host page's copy, taken by the fault thread while the page
 * was still protected (so the snapshot's page), written by the scan.
 * Page-aligned: direct-io writes it with O_DIRECT. */
typedef struct Aside {
    uint64_t hp;
    uint8_t *data;
} Aside;

static void aside_free(gpointer p)
{
    Aside *a = p;
    g_aligned_free(a->data);
    g_free(a);
}

typedef struct Snapshot {
    MigrationState *s;
    RAMBlock *rb;
    RAMSaver r;                 /* pages out, zero detection, statistics */
    QEMUFile *f;                /* the stream: in stream mode under lock */
    GMutex lock;                /* stream mode: one record at a time */
    bool mapped;                /* pages to their slots: no lock */
    int uffd;
    uint64_t nhp, hpages;       /* host pages, 4 KiB pages per host page */
    /* One bit per host page: claimed by the scan or the fault thread,
     * whichever set it; that thread saves it, then unprotects it. */
    unsigned long *claimed;
    uint64_t saved_hp;          /* atomic: host pages saved */
    /* The write-fault thread: started with a handshake, stopped with
     * quit and quit_fd, joined. */
    GThread *thread;
    int quit_fd;
    int quit;
    GMutex start_lock;
    GCond start_cond;
    bool started;
    QEMUFile *wp_err;           /* mapped mode: the fault thread's errors */
    int error;                  /* atomic: the fault thread's -errno */
    /* Copies of written pages (Aside), pushed by the fault thread and
     * written by the scan: a vCPU waits for a memcpy, not for the file,
     * whose writes the kernel holds back once much of the page cache is
     * dirty. */
    GQueue aside;               /* under aside_lock (a GMutex of ours:
                                 * GAsyncQueue's own lock is one that
                                 * ThreadSanitizer cannot see) */
    GMutex aside_lock;
    uint64_t aside_bytes;       /* atomic: bytes queued there */
    /* The scan's thread's: consecutive copies gathered for one write
     * (DRAIN_RUN_BYTES, page-aligned for direct-io); NULL with pages of
     * half that or more, which go one by one. */
    uint8_t *bounce;
} Snapshot;

/* ---- Support --------------------------------------------------------------------- */

static uint64_t wp_features(const RAMBlock *rb, uint64_t avail)
{
    uint64_t want = UFFD_FEATURE_PAGEFAULT_FLAG_WP;
    if (rb->fd >= 0 || rb->shared || rb->page_size > TARGET_PAGE_SIZE) {
        want |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
    }
    /* Holes protected too: no read fault on every page first. */
    return want | (avail & UFFD_FEATURE_WP_UNPOPULATED);
}

/* A userfaultfd with write-protect on @rb, registered; -errno, or -ENOTSUP
 * when this memory cannot be write-protected. */
static int wp_open(RAMBlock *rb, uint64_t *features)
{
    uint64_t avail = 0, ioctls = 0;
    int ret = uffd_query(&avail, &ioctls);
    if (ret < 0) {
        return ret;
    }
    if (!(avail & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        return -ENOSYS;
    }
    uint64_t want = wp_features(rb, avail);
    if ((want & avail) != want) {
        return -ENOTSUP;
    }
    int fd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return fd;
    }
    ret = uffd_api(fd, want, NULL, NULL);
    if (ret == 0) {
        ret = uffd_register(fd, rb->host, rb->size, UFFDIO_REGISTER_MODE_WP,
                            &ioctls);
        if (ret == -EINVAL) {
            ret = -ENOTSUP;
        } else if (ret == 0 && !(ioctls & UFFD_IOCTL_BIT(_UFFDIO_WRITEPROTECT))) {
            uffd_unregister(fd, rb->host, rb->size);
            ret = -ENOTSUP;
        }
    }
    if (ret < 0) {
        uffd_close(fd);
        return ret;
    }
    *features = want;
    return fd;
}

bool snapshot_supported(RAMBlock *rb, GError **errp)
{
    uint64_t features;
    int fd = wp_open(rb, &features);
    if (fd >= 0) {
        uffd_unregister(fd, rb->host, rb->size);
        uffd_close(fd);
        return true;
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                fd == -ENOTSUP ? "Background-snapshot is not compatible with "
                                 "guest memory configuration"
                               : "Background-snapshot is not supported by "
                                 "host kernel");
    return false;
}

/* ---- Saving a host page range ------------------------------------------------------ */

/*
 * Save host pages [hp, hp + n), claimed by the caller, then unprotect
 * them (which wakes a vCPU waiting to write one).  @f: where errors go.
 */
static bool save_and_release(Snapshot *sn, QEMUFile *f, uint64_t hp, uint64_t n,
                             uint64_t *bytes)
{
    uint64_t first = hp * sn->hpages, len = n * sn->hpages;
    if (!sn->mapped) {
        g_mutex_lock(&sn->lock);
    }
    uint64_t sent = ram_send_pages(&sn->r, f, first, len, false);
    bool ok = !qemu_file_error(f);
    if (!sn->mapped) {
        g_mutex_unlock(&sn->lock);
    }
    if (bytes) {
        *bytes = sent;
    }
    /* Released even after a write error: the guest must not wait. */
    int ret = uffd_writeprotect(sn->uffd, sn->rb->host + first * TARGET_PAGE_SIZE,
                                len * TARGET_PAGE_SIZE, 0);
    if (ret < 0) {
        __atomic_store_n(&sn->error, ret, __ATOMIC_SEQ_CST);
        ok = false;
    }
    uint64_t done = __atomic_add_fetch(&sn->saved_hp, n, __ATOMIC_RELAXED);
    __atomic_store_n(&sn->s->stats.remaining_pages,
                     (sn->nhp - done) * sn->hpages, __ATOMIC_RELAXED);
    return ok;
}

/* The stream's error; in stream mode the fault thread may write the
 * stream too, under the lock. */
static int stream_error(Snapshot *sn)
{
    if (sn->mapped) {
        return qemu_file_error(sn->f);
    }
    g_mutex_lock(&sn->lock);
    int e = qemu_file_error(sn->f);
    g_mutex_unlock(&sn->lock);
    return e;
}

/* Write host pages [@hp, @hp + @n) from their copies at @data (the
 * scan's thread). */
static bool write_copies(Snapshot *sn, uint64_t hp, uint64_t n,
                         const uint8_t *data)
{
    if (!sn->mapped) {
        g_mutex_lock(&sn->lock);
    }
    ram_send_copy(&sn->r, sn->f, hp * sn->hpages, n * sn->hpages, data);
    bool ok = !qemu_file_error(sn->f);
    if (!sn->mapped) {
        g_mutex_unlock(&sn->lock);
    }
    uint64_t done = __atomic_add_fetch(&sn->saved_hp, n, __ATOMIC_RELAXED);
    __atomic_store_n(&sn->s->stats.remaining_pages,
                     (sn->nhp - done) * sn->hpages, __ATOMIC_RELAXED);
    return ok;
}

static Aside *aside_pop(Snapshot *sn, GQueue *q)
{
    Aside *a = g_queue_pop_head(q);
    if (a) {
        __atomic_sub_fetch(&sn->aside_bytes, sn->rb->page_size,
                           __ATOMIC_RELAXED);
    }
    return a;
}

/*
 * The scan's thread: write every copy queued now; false on an error.
 * Copies of consecutive host pages (a guest writing its way through
 * memory faults in address order) go out as one write through
 * sn->bounce: with direct-io each write waits for the disk, and one
 * write a page kept the snapshot far below the disk's speed
 * (docs/benchmarks.md, "Background snapshots and restore").
 */
static bool drain_aside(Snapshot *sn)
{
    GQueue q;
    g_mutex_lock(&sn->aside_lock);
    q = sn->aside;
    g_queue_init(&sn->aside);
    g_mutex_unlock(&sn->aside_lock);

    size_t len = sn->rb->page_size;
    uint64_t max = sn->bounce ? DRAIN_RUN_BYTES / len : 1;
    bool ok = true;
    Aside *a;
    while ((a = aside_pop(sn, &q))) {
        /* A lone copy goes from its own buffer; a run through bounce. */
        uint64_t n = 1;
        const Aside *next;
        while (n < max && (next = g_queue_peek_head(&q)) &&
               next->hp == a->hp + n) {
            if (n == 1) {
                memcpy(sn->bounce, a->data, len);
            }
            Aside *b = aside_pop(sn, &q);
            memcpy(sn->bounce + n++ * len, b->data, len);
            aside_free(b);
        }
        ok = ok && write_copies(sn, a->hp, n, n == 1 ? a->data : sn->bounce);
        aside_free(a);
    }
    return ok;
}

/* ---- The write-fault thread ("mig/snap/wp") ----------------------------------------- */

static void wp_fault(Snapshot *sn, uint64_t addr)
{
    uint8_t *host = sn->rb->host;
    if (addr < (uint64_t)host || addr >= (uint64_t)host + sn->rb->size) {
        return;
    }
    uint64_t hp = (addr - (uint64_t)host) / sn->rb->page_size;
    /* Claimed by the scan: it unprotects once the page is written. */
    if (test_and_set_bit_atomic(hp, sn->claimed)) {
        return;
    }
    size_t len = sn->rb->page_size;
    uint8_t *at = host + hp * len;
    if (__atomic_add_fetch(&sn->aside_bytes, len, __ATOMIC_RELAXED) <= ASIDE_MAX) {
        Aside *a = g_new(Aside, 1);
        a->hp = hp;
        a->data = g_aligned_alloc(1, len, TARGET_PAGE_SIZE);
        memcpy(a->data, at, len);
        int ret = uffd_writeprotect(sn->uffd, at, len, 0);
        if (ret < 0) {
            __atomic_store_n(&sn->error, ret, __ATOMIC_SEQ_CST);
        }
        g_mutex_lock(&sn->aside_lock);
        g_queue_push_tail(&sn->aside, a);
        g_mutex_unlock(&sn->aside_lock);
        return;
    }
    /* Too many copies waiting: write this page from here. */
    __atomic_sub_fetch(&sn->aside_bytes, len, __ATOMIC_RELAXED);
    QEMUFile *f = sn->mapped ? sn->wp_err : sn->f;
    if (!save_and_release(sn, f, hp, 1, NULL) && sn->mapped &&
        qemu_file_error(f)) {
        /* In stream mode the error stays on the stream (stream_error). */
        __atomic_store_n(&sn->error, qemu_file_error(f), __ATOMIC_SEQ_CST);
    }
}

static gpointer wp_thread(gpointer opaque)
{
    Snapshot *sn = opaque;
    /* A vCPU waits on each fault: run as soon as one comes. */
    thread_set_fifo(FAULT_PATH_RT_PRIO);
    g_mutex_lock(&sn->start_lock);
    sn->started = true;
    g_cond_signal(&sn->start_cond);
    g_mutex_unlock(&sn->start_lock);

    UffdEvent ev[WP_EVENTS];
    struct pollfd pfd[2] = { { .fd = sn->uffd, .events = POLLIN },
                             { .fd = sn->quit_fd, .events = POLLIN } };
    while (!__atomic_load_n(&sn->quit, __ATOMIC_ACQUIRE)) {
        int n = uffd_read_events(sn->uffd, ev, WP_EVENTS);
        if (n < 0 && n != -EAGAIN) {
            __atomic_store_n(&sn->error, n, __ATOMIC_SEQ_CST);
            break;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].event == UFFD_EVENT_PAGEFAULT &&
                (ev[i].pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
                wp_fault(sn, ev[i].pagefault.address);
            }
        }
        if (n > 0) {
            continue;
        }
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            __atomic_store_n(&sn->error, -errno, __ATOMIC_SEQ_CST);
            break;
        }
    }
    return NULL;
}

static bool wp_thread_start(Snapshot *sn, GError **errp)
{
    sn->quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sn->quit_fd < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "eventfd: %s",
                    g_strerror(errno));
        return false;
    }
    sn->thread = g_thread_new("mig/snap/wp", wp_thread, sn);
    g_mutex_lock(&sn->start_lock);
    while (!sn->started) {
        g_cond_wait(&sn->start_cond, &sn->start_lock);
    }
    g_mutex_unlock(&sn->start_lock);
    return true;
}

static void wp_thread_stop(Snapshot *sn)
{
    if (!sn->thread) {
        return;
    }
    __atomic_store_n(&sn->quit, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(sn->quit_fd, &one, sizeof(one)) < 0) {
        /* An eventfd write fails only at its maximum count. */
    }
    g_thread_join(sn->thread);
    sn->thread = NULL;
}

/* ---- The snapshot ("bg_snapshot") ---------------------------------------------------- */

/* The scan: every host page not claimed yet, in address order, a run at
 * a time; false on error or cancel. */
static bool scan(Snapshot *sn)
{
    MigrationState *s = sn->s;
    uint64_t max_run = MAX(1, SCAN_RUN_BYTES / sn->rb->page_size);
    for (uint64_t hp = find_next_zero_bit(sn->claimed, sn->nhp, 0);
         hp < sn->nhp;
         hp = find_next_zero_bit(sn->claimed, sn->nhp, hp)) {
        if (migration_cancelled(s) || stream_error(sn) ||
            __atomic_load_n(&sn->error, __ATOMIC_SEQ_CST)) {
            return false;
        }
        if (!drain_aside(sn)) {
            return false;
        }
        uint64_t n = 0;
        while (hp + n < sn->nhp && n < max_run &&
               !test_and_set_bit_atomic(hp + n, sn->claimed)) {
            n++;
        }
        if (n == 0) {
            hp++;               /* the fault thread took it just now */
            continue;
        }
        uint64_t bytes;
        bool ok = save_and_release(sn, sn->f, hp, n, &bytes);
        ram_rate_wait(&sn->r, bytes);
        if (!ok) {
            return false;
        }
        hp += n;
    }
    return !__atomic_load_n(&sn->error, __ATOMIC_SEQ_CST);
}

#define RING_DEPTH  8

/* A run the ring scan claimed: unprotected once its writes are done. */
typedef struct ScanRun {
    uint64_t hp, n;
    unsigned pending;           /* its writes in flight */
} ScanRun;

static void ring_run_done(Snapshot *sn, ScanRun *run)
{
    uint64_t len = run->n * sn->rb->page_size;
    int ret = uffd_writeprotect(sn->uffd, sn->rb->host + run->hp * sn->rb->page_size,
                                len, 0);
    if (ret < 0) {
        __atomic_store_n(&sn->error, ret, __ATOMIC_SEQ_CST);
    }
    uint64_t done = __atomic_add_fetch(&sn->saved_hp, run->n, __ATOMIC_RELAXED);
    __atomic_store_n(&sn->s->stats.remaining_pages,
                     (sn->nhp - done) * sn->hpages, __ATOMIC_RELAXED);
    g_free(run);
}

/* Wait for one write; its run is done with its last. */
static bool ring_reap(Snapshot *sn, MappedRamRing *ring)
{
    void *tag;
    int ret = mapped_ram_ring_wait(ring, &tag);
    if (ret == -EAGAIN) {
        return true;
    }
    ScanRun *run = tag;
    if (ret < 0) {
        qemu_file_set_error(sn->f, ret);
    }
    if (--run->pending == 0) {
        ring_run_done(sn, run);     /* released even after an error */
    }
    return ret == 0;
}

/*
 * The scan through io_uring (mapped-ram, x-io-uring, 4 KiB pages): a
 * claimed run's data pages are written straight from guest memory, up to
 * RING_DEPTH writes in flight; the run is unprotected when its last
 * write is done (until then the pages in memory are the snapshot's).
 */
static bool scan_ring(Snapshot *sn, MappedRamRing *ring)
{
    MigrationState *s = sn->s;
    MigrationStats *st = &s->stats;
    uint64_t max_run = SCAN_RUN_BYTES / TARGET_PAGE_SIZE;
    bool ok = true;
    for (uint64_t hp = find_next_zero_bit(sn->claimed, sn->nhp, 0);
         ok && hp < sn->nhp;
         hp = find_next_zero_bit(sn->claimed, sn->nhp, hp)) {
        if (migration_cancelled(s) || stream_error(sn) ||
            __atomic_load_n(&sn->error, __ATOMIC_SEQ_CST) || !drain_aside(sn)) {
            ok = false;
            break;
        }
        uint64_t n = 0;
        while (hp + n < sn->nhp && n < max_run &&
               !test_and_set_bit_atomic(hp + n, sn->claimed)) {
            n++;
        }
        if (n == 0) {
            hp++;
            continue;
        }
        ScanRun *run = g_new0(ScanRun, 1);
        run->hp = hp;
        run->n = n;
        run->pending = 1;           /* this loop's own, dropped below */
        uint64_t bytes = 0;
        for (uint64_t i = 0; i < n;) {
            const uint8_t *p = sn->rb->host + (hp + i) * TARGET_PAGE_SIZE;
            bool zero = ram_page_is_zero(p);
            uint64_t j = i + 1;
            while (j < n && ram_page_is_zero(sn->rb->host + (hp + j) *
                                             TARGET_PAGE_SIZE) == zero) {
                j++;
            }
            if (zero) {
                mapped_ram_mark_zero(sn->r.mapped, hp + i, j - i);
                __atomic_fetch_add(&st->zero_pages, j - i, __ATOMIC_RELAXED);
            } else {
                while (ok && mapped_ram_ring_full(ring)) {
                    ok = ring_reap(sn, ring);
                }
                int ret = ok ? mapped_ram_ring_write(ring, hp + i, j - i, p, run)
                             : -EIO;
                if (ret < 0) {
                    qemu_file_set_error(sn->f, ret);
                    ok = false;
                    break;
                }
                run->pending++;
                bytes += (j - i) * TARGET_PAGE_SIZE;
                __atomic_fetch_add(&st->normal_pages, j - i, __ATOMIC_RELAXED);
            }
            i = j;
        }
        __atomic_fetch_add(&st->transferred, bytes, __ATOMIC_RELAXED);
        if (--run->pending == 0) {
            ring_run_done(sn, run);
        }
        ram_rate_wait(&sn->r, bytes);
        hp += n;
    }
    while (mapped_ram_ring_inflight(ring)) {
        ok = ring_reap(sn, ring) && ok;
    }
    return ok && !__atomic_load_n(&sn->error, __ATOMIC_SEQ_CST);
}

static void snapshot_fail(MigrationState *s, GError *err, int error,
                          const char *uri)
{
    if (migration_cancelled(s)) {
        migrate_set_state(s, MIGRATION_STATUS_CANCELLING,
                          MIGRATION_STATUS_CANCELLED);
        return;
    }
    g_autofree char *msg = NULL;
    if (err) {
        msg = g_strdup(err->message);
    } else {
        g_autofree char *what = g_str_has_prefix(uri, "file:")
            ? g_strdup_printf("file '%.*s'", (int)strcspn(uri + 5, ","), uri + 5)
            : g_strdup("the command");
        msg = g_strdup_printf("Unable to write to %s: %s", what,
                              g_strerror(error ? -error : EIO));
    }
    migration_set_error(s, msg);
    migrate_set_state_from(s, (const MigrationStatus[]) {
        MIGRATION_STATUS_SETUP, MIGRATION_STATUS_ACTIVE,
        MIGRATION_STATUS__MAX }, MIGRATION_STATUS_FAILED);
}

void snapshot_run(MigrationState *s, QEMUFile *f, const char *uri)
{
    Machine *m = s->m;
    Snapshot sn = { .s = s, .rb = m->ram, .f = f, .uffd = -1, .quit_fd = -1 };
    MappedRam mapped = { .fd = -1, .fd_pages = -1 };
    StopCall stop = { s, RUN_STATE_RUNNING, RUN_STATE_PAUSED };
    bool stopped = false, resumed = false;
    g_autoptr(GError) err = NULL;
    GBytes *devices = NULL;
    int error = 0;

    g_mutex_init(&sn.lock);
    g_mutex_init(&sn.start_lock);
    g_cond_init(&sn.start_cond);
    sn.hpages = sn.rb->page_size / TARGET_PAGE_SIZE;
    sn.nhp = sn.rb->size / sn.rb->page_size;
    sn.claimed = bitmap_new(sn.nhp);
    g_queue_init(&sn.aside);
    g_mutex_init(&sn.aside_lock);
    if (2 * sn.rb->page_size <= DRAIN_RUN_BYTES) {
        sn.bounce = g_aligned_alloc(1, DRAIN_RUN_BYTES, TARGET_PAGE_SIZE);
    }
    ram_saver_init(&sn.r, sn.rb, &m->kvm, f, &s->stats, &s->src.cancel);
    sn.r.max_bandwidth = &s->src.rate_limit;
    migration_set_rate(s, "max-bandwidth");
    stream_put_header(f, sn.rb, s->src.channel_id);
    if (migrate_cap(s, "mapped-ram")) {
        if (!mapped_ram_writer_start(&mapped, f, sn.r.npages,
                                     migration_param_bool(s, "direct-io"), &err)) {
            goto out;
        }
        sn.r.mapped = &mapped;
        sn.mapped = true;
        sn.wp_err = qemu_file_new_mem_writer();
    }
    qemu_fflush(f);
    __atomic_store_n(&s->setup_ms, migration_now_ms() - s->start_ms,
                     __ATOMIC_SEQ_CST);
    /* As QEMU: the first dirty sync announces pass 1, then active. */
    JsonObject *d = json_object_new();
    json_object_set_int_member(d, "pass", 1);
    migration_emit(s, "MIGRATION_PASS", d);
    __atomic_store_n(&s->stats.dirty_sync_count, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->stats.remaining_pages, sn.r.npages, __ATOMIC_RELAXED);
    migrate_set_state(s, MIGRATION_STATUS_SETUP, MIGRATION_STATUS_ACTIVE);

    /* Stopped: the device state, and every page protected, at one moment. */
    int64_t stop_at = migration_now_ms();
    migration_call_main(s, migration_stop_vm, &stop);
    stopped = true;
    QEMUFile *dev = qemu_file_new_mem_writer();
    bool dev_ok = stream_put_devices(dev, m, stop.before, &err);
    devices = qemu_file_mem_finish(dev);
    if (!dev_ok) {
        goto out;
    }
    uint64_t features;
    sn.uffd = wp_open(sn.rb, &features);
    if (sn.uffd < 0) {
        g_set_error(&err, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "background snapshot: write-protecting guest RAM: %s",
                    g_strerror(-sn.uffd));
        goto out;
    }
    if (!(features & UFFD_FEATURE_WP_UNPOPULATED) && sn.rb->fd < 0 &&
        !sn.rb->shared) {
        /* Without WP_UNPOPULATED a hole is not protected: map the zero
         * page everywhere first, as QEMU does (a read, not a write). */
        for (uint64_t off = 0; off < sn.rb->size; off += TARGET_PAGE_SIZE) {
            (void)*(volatile uint8_t *)(sn.rb->host + off);
        }
    }
    int ret = uffd_writeprotect(sn.uffd, sn.rb->host, sn.rb->size,
                                UFFDIO_WRITEPROTECT_MODE_WP);
    if (ret < 0) {
        g_set_error(&err, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "background snapshot: UFFDIO_WRITEPROTECT: %s",
                    g_strerror(-ret));
        goto out;
    }
    if (!wp_thread_start(&sn, &err)) {
        goto out;
    }
    migration_call_main(s, migration_restart_vm, &stop);
    resumed = true;
    __atomic_store_n(&s->downtime_ms, migration_now_ms() - stop_at,
                     __ATOMIC_SEQ_CST);

    if (sn.mapped && sn.hpages == 1 && migration_param_bool(s, "x-io-uring")) {
        MappedRamRing *ring = mapped_ram_ring_new(&mapped, RING_DEPTH, &err);
        bool ok = ring && scan_ring(&sn, ring);
        mapped_ram_ring_free(ring);
        if (!ok) {
            goto out;
        }
    } else if (!scan(&sn)) {
        goto out;
    }
    wp_thread_stop(&sn);
    if (!drain_aside(&sn)) {    /* the copies of the last faults */
        goto out;
    }
    if (sn.mapped && !mapped_ram_writer_finish(&mapped, f, &err)) {
        goto out;
    }
    qemu_put_buffer(f, g_bytes_get_data(devices, NULL), g_bytes_get_size(devices));
    qemu_fflush(f);
    __atomic_fetch_add(&s->stats.transferred, g_bytes_get_size(devices),
                       __ATOMIC_RELAXED);
    if (qemu_file_error(f)) {
        goto out;
    }

out:
    wp_thread_stop(&sn);
    error = __atomic_load_n(&sn.error, __ATOMIC_SEQ_CST);
    if (!error) {
        error = qemu_file_error(f);
    }
    if (sn.uffd >= 0) {
        /*
         * Closing the userfaultfd leaves the PTEs' protection bits: clear
         * every one, on every way out, before the guest may run without
         * a reader of its faults (after a whole scan none is left).  In
         * steps: each is a walk of the page tables that stalls a vCPU
         * touching that range, for as long as the walk takes.
         */
        bool all_saved = __atomic_load_n(&sn.saved_hp, __ATOMIC_SEQ_CST) == sn.nhp;
        for (uint64_t off = 0; off < sn.rb->size; off += UNREGISTER_STEP) {
            uint64_t len = MIN(UNREGISTER_STEP, sn.rb->size - off);
            if (!all_saved) {
                uffd_writeprotect(sn.uffd, sn.rb->host + off, len, 0);
            }
            uffd_unregister(sn.uffd, sn.rb->host + off, len);
        }
        uffd_close(sn.uffd);
    }
    if (stopped && !resumed) {
        migration_call_main(s, migration_restart_vm, &stop);
    }
    if (sn.quit_fd >= 0) {
        close(sn.quit_fd);
    }
    bool ok = !err && !error && !migration_cancelled(s);
    migration_close_stream(s, &s->src.stream_fd, f);
    __atomic_store_n(&s->end_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    if (ok) {
        __atomic_store_n(&s->stats.remaining_pages, 0, __ATOMIC_RELAXED);
        migrate_set_state(s, MIGRATION_STATUS_ACTIVE, MIGRATION_STATUS_COMPLETED);
    } else {
        snapshot_fail(s, err, error, uri);
    }
    if (sn.wp_err) {
        qemu_file_close(sn.wp_err);
    }
    g_clear_pointer(&devices, g_bytes_unref);
    mapped_ram_cleanup(&mapped);
    ram_saver_cleanup(&sn.r);
    bitmap_free(sn.claimed);
    g_queue_clear_full(&sn.aside, aside_free);     /* copies a failure left */
    g_aligned_free(sn.bounce);
    g_mutex_clear(&sn.aside_lock);
    g_cond_clear(&sn.start_cond);
    g_mutex_clear(&sn.start_lock);
    g_mutex_clear(&sn.lock);
}
