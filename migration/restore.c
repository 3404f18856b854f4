/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Restore on demand; the design is in include/migration/restore.h. */
#include "migration/restore.h"

#include "migration/mapped-ram.h"
#include "migration/migration.h"
#include "migration-int.h"
#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/ram-load.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/thread-prio.h"
#include "qemu/userfaultfd.h"
#include "system/machine.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define FAULT_EVENTS    16

typedef struct Restore {
    MigrationState *s;
    RAMLoader *l;
    const MappedRam *mapped;
    uint64_t nhp, hpages;       /* host pages; 4 KiB pages in one */
    unsigned long *claimed;     /* one bit per host page, test-and-set */
    uint64_t hint;              /* atomic: the last fault's host page + 1 */
    GThread *thread;            /* "mig/restore/fault" */
    int quit_fd;
    int quit;
    GMutex start_lock;
    GCond start_cond;
    bool started;
    GMutex err_lock;
    char *error;                /* under err_lock: the first failure */
} Restore;

static void restore_fail(Restore *r, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void restore_fail(Restore *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_mutex_lock(&r->err_lock);
    if (!r->error) {
        r->error = msg;
        msg = NULL;
    }
    g_mutex_unlock(&r->err_lock);
    g_free(msg);
}

static bool failed(Restore *r)
{
    g_mutex_lock(&r->err_lock);
    bool f = r->error != NULL;
    g_mutex_unlock(&r->err_lock);
    return f;
}

/* Place host pages [hp, hp + n), claimed by the caller, from the file;
 * @b: the calling thread's buffer. */
static bool place_range(Restore *r, RAMLoadBuf *b, uint64_t hp, uint64_t n)
{
    g_autoptr(GError) err = NULL;
    /* A read error never places zeros: the guest would read them. */
    if (!stream_place_mapped(r->l, b, r->mapped, &r->s->stats, hp * r->hpages,
                             n * r->hpages, &err)) {
        restore_fail(r, "restore on demand: %s", err->message);
        return false;
    }
    return true;
}

/* ---- The fault thread ("mig/restore/fault") ----------------------------------------- */

static void on_fault(Restore *r, RAMLoadBuf *b, uint64_t addr)
{
    uint8_t *host = r->l->rb->host;
    if (addr < (uint64_t)host || addr >= (uint64_t)host + r->l->rb->size) {
        return;
    }
    uint64_t hp = (addr - (uint64_t)host) / r->l->rb->page_size;
    __atomic_store_n(&r->hint, hp + 1, __ATOMIC_RELAXED);
    /* Claimed by the load thread: its UFFDIO_COPY wakes the vCPU. */
    if (!test_and_set_bit_atomic(hp, r->claimed)) {
        place_range(r, b, hp, 1);
    }
}

static gpointer fault_thread(gpointer opaque)
{
    Restore *r = opaque;
    RAMLoadBuf b;
    ram_load_buf_init(&b, r->l);
    thread_set_fifo(FAULT_PATH_RT_PRIO);
    g_mutex_lock(&r->start_lock);
    r->started = true;
    g_cond_signal(&r->start_cond);
    g_mutex_unlock(&r->start_lock);

    UffdEvent ev[FAULT_EVENTS];
    /* Every range of RAM has its own userfaultfd (RAMLoader's shards);
     * the quit eventfd is last. */
    int nfd = r->l->nshards;
    struct pollfd pfd[RAM_MAX_SHARDS + 1];
    for (int i = 0; i < nfd; i++) {
        pfd[i] = (struct pollfd) { .fd = r->l->uffds[i], .events = POLLIN };
    }
    pfd[nfd] = (struct pollfd) { .fd = r->quit_fd, .events = POLLIN };
    while (!__atomic_load_n(&r->quit, __ATOMIC_ACQUIRE)) {
        bool any = false, failed = false;
        for (int s = 0; s < nfd && !failed; s++) {
            int n = uffd_read_events(r->l->uffds[s], ev, FAULT_EVENTS);
            if (n < 0 && n != -EAGAIN) {
                restore_fail(r, "restore on demand: reading faults: %s",
                             g_strerror(-n));
                failed = true;
                break;
            }
            for (int i = 0; i < n; i++) {
                if (ev[i].event == UFFD_EVENT_PAGEFAULT) {
                    on_fault(r, &b, ev[i].pagefault.address);
                }
            }
            any |= n > 0;
        }
        if (failed) {
            break;
        }
        if (any) {
            continue;
        }
        if (poll(pfd, nfd + 1, -1) < 0 && errno != EINTR) {
            restore_fail(r, "restore on demand: poll: %s", g_strerror(errno));
            break;
        }
    }
    ram_load_buf_cleanup(&b);
    return NULL;
}

/* ---- The load thread ---------------------------------------------------------------- */

typedef struct RunCall {
    Machine *m;
    RunState source_state;
} RunCall;

/* Main thread: the guest runs here if it ran there (as a precopy load). */
static void run_guest(void *opaque)
{
    RunCall *c = opaque;
    migration_incoming_run_guest(c->m, c->source_state);
}

/* Main thread: a page cannot be read: the guest stops (it would wait on
 * it for ever), and the failure says why. */
static void stop_guest(void *opaque)
{
    RunCall *c = opaque;
    if (c->m->state == RUN_STATE_RUNNING) {
        machine_pause(c->m);
    }
    machine_set_state(c->m, RUN_STATE_IO_ERROR);
}

#define RING_DEPTH  4

typedef struct RingRun {
    uint64_t first, n;          /* 4 KiB pages, all with data */
    uint8_t *data;
} RingRun;

static bool place_read(Restore *r, RAMLoadBuf *b, const RingRun *run, int ret)
{
    g_autoptr(GError) err = NULL;
    if (!stream_place_read(r->l, b, &r->s->stats, run->first, run->n,
                           run->data, ret, &err)) {
        restore_fail(r, "restore on demand: %s", err->message);
        return false;
    }
    return true;
}

/*
 * background_load through io_uring (x-io-uring, 4 KiB pages): claimed
 * runs' data read with up to RING_DEPTH reads in flight, each placed as
 * it comes; zero runs placed at once.
 */
static void background_load_ring(Restore *r, RAMLoadBuf *b, MappedRamRing *ring)
{
    uint64_t batch = b->size / TARGET_PAGE_SIZE;
    RingRun runs[RING_DEPTH];
    GQueue free_runs = G_QUEUE_INIT;
    for (int i = 0; i < RING_DEPTH; i++) {
        runs[i].data = g_malloc(b->size);
        g_queue_push_tail(&free_runs, &runs[i]);
    }
    uint64_t pos = 0, seen_hint = 0;
    bool ok = true;
    while (ok && !__atomic_load_n(&r->s->dst.stopping, __ATOMIC_SEQ_CST)) {
        if (mapped_ram_ring_full(ring)) {
            void *tag;
            int ret = mapped_ram_ring_wait(ring, &tag);
            ok = place_read(r, b, tag, ret);
            g_queue_push_tail(&free_runs, tag);
            continue;
        }
        uint64_t hint = __atomic_load_n(&r->hint, __ATOMIC_RELAXED);
        if (hint != seen_hint) {
            seen_hint = hint;
            pos = hint - 1;
        }
        uint64_t p = find_next_zero_bit(r->claimed, r->nhp, pos);
        if (p >= r->nhp) {
            p = find_next_zero_bit(r->claimed, r->nhp, 0);
            if (p >= r->nhp) {
                break;
            }
        }
        /* A run of pages alike (data or zero), claimed one by one. */
        bool data = mapped_ram_has_data(r->mapped, p);
        uint64_t n = 0;
        while (p + n < r->nhp && n < batch &&
               mapped_ram_has_data(r->mapped, p + n) == data &&
               !test_and_set_bit_atomic(p + n, r->claimed)) {
            n++;
        }
        pos = p + MAX(n, 1);
        if (!n) {
            continue;
        }
        if (!data) {
            g_autoptr(GError) err = NULL;
            if (!ram_load_zero(r->l, b, p * TARGET_PAGE_SIZE, n, &err)) {
                restore_fail(r, "restore on demand: %s", err->message);
                ok = false;
            }
            __atomic_fetch_add(&r->s->stats.zero_pages, n, __ATOMIC_RELAXED);
            continue;
        }
        RingRun *run = g_queue_pop_head(&free_runs);
        run->first = p;
        run->n = n;
        int ret = mapped_ram_ring_read(ring, p, n, run->data, run);
        if (ret < 0) {
            ok = place_read(r, b, run, ret);
            g_queue_push_tail(&free_runs, run);
        }
    }
    while (mapped_ram_ring_inflight(ring)) {
        void *tag;
        int ret = mapped_ram_ring_wait(ring, &tag);
        ok = ok && place_read(r, b, tag, ret);
    }
    g_queue_clear(&free_runs);
    for (int i = 0; i < RING_DEPTH; i++) {
        g_free(runs[i].data);
    }
}

/* Every host page, nearest after the last fault first, in runs of up to
 * a buffer's worth. */
static void background_load(Restore *r, RAMLoadBuf *b)
{
    uint64_t run = MAX(1, (b->size / TARGET_PAGE_SIZE) / r->hpages);
    uint64_t pos = 0, seen_hint = 0;
    for (;;) {
        if (failed(r) || __atomic_load_n(&r->s->dst.stopping, __ATOMIC_SEQ_CST)) {
            return;
        }
        uint64_t hint = __atomic_load_n(&r->hint, __ATOMIC_RELAXED);
        if (hint != seen_hint) {
            seen_hint = hint;
            pos = hint - 1;     /* the guest works there now */
        }
        uint64_t hp = find_next_zero_bit(r->claimed, r->nhp, pos);
        if (hp >= r->nhp) {
            hp = find_next_zero_bit(r->claimed, r->nhp, 0);
            if (hp >= r->nhp) {
                return;         /* every page is claimed, so placed */
            }
        }
        uint64_t n = 0;
        while (hp + n < r->nhp && n < run &&
               !test_and_set_bit_atomic(hp + n, r->claimed)) {
            n++;
        }
        if (n && !place_range(r, b, hp, n)) {
            return;
        }
        pos = hp + MAX(n, 1);
    }
}

bool restore_run(MigrationState *s, QEMUFile *f, MappedRam *mapped,
                 RunState source_state)
{
    RAMLoader *l = s->dst.ram_loader;
    Restore r = { .s = s, .l = l, .mapped = mapped, .quit_fd = -1 };
    RunCall run = { s->m, source_state };
    g_autoptr(GError) err = NULL;
    RAMLoadBuf b;
    bool ran = false;

    g_mutex_init(&r.start_lock);
    g_cond_init(&r.start_cond);
    g_mutex_init(&r.err_lock);
    r.hpages = l->hpages;
    r.nhp = l->npages / l->hpages;
    r.claimed = bitmap_new(r.nhp);
    ram_load_buf_init(&b, l);
    /* Every page missing (the -kernel image loaded here too), each
     * placed by whoever claims it, zero pages included. */
    if (!ram_loader_can_postcopy(l, &err) ||
        !ram_load_discard_missing(l, &err)) {
        restore_fail(&r, "restore on demand: %s", err->message);
        goto out;
    }
    l->postcopy = true;
    r.quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r.quit_fd < 0) {
        restore_fail(&r, "restore on demand: eventfd: %s", g_strerror(errno));
        goto out;
    }
    r.thread = g_thread_new("mig/restore/fault", fault_thread, &r);
    g_mutex_lock(&r.start_lock);
    while (!r.started) {
        g_cond_wait(&r.start_cond, &r.start_lock);
    }
    g_mutex_unlock(&r.start_lock);
    if (!migrate_set_state(s, MIGRATION_STATUS_ACTIVE,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        restore_fail(&r, "restore on demand: the migration ended");
        goto out;
    }
    migration_call_main(s, run_guest, &run);
    ran = true;
    MappedRamRing *ring = NULL;
    if (r.hpages == 1 && migration_param_bool(s, "x-io-uring")) {
        ring = mapped_ram_ring_new(mapped, RING_DEPTH, &err);
        if (!ring) {
            restore_fail(&r, "restore on demand: %s", err->message);
            goto out;
        }
        background_load_ring(&r, &b, ring);
        mapped_ram_ring_free(ring);
    } else {
        background_load(&r, &b);
    }

out:
    if (r.thread) {
        __atomic_store_n(&r.quit, 1, __ATOMIC_RELEASE);
        uint64_t one = 1;
        if (write(r.quit_fd, &one, sizeof(one)) < 0) {
            /* only at the counter's maximum */
        }
        g_thread_join(r.thread);
    }
    if (r.quit_fd >= 0) {
        close(r.quit_fd);
    }
    ram_load_buf_cleanup(&b);
    bool ok = !r.error && !__atomic_load_n(&s->dst.stopping, __ATOMIC_SEQ_CST);
    if (ok) {
        /* Every page is in: ordinary memory again. */
        ram_loader_cleanup(l);
        g_clear_pointer(&s->dst.ram_loader, g_free);
    } else if (ran) {
        migration_call_main(s, stop_guest, &run);
    }
    mapped_ram_cleanup(mapped);
    g_free(mapped);
    migration_close_stream(s, &s->dst.incoming_fd, f);
    __atomic_store_n(&s->end_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    if (!ok) {
        migration_set_error(s, r.error ? r.error
                                       : "restore on demand: the process ends");
        migrate_set_state_from(s, (const MigrationStatus[]) {
            MIGRATION_STATUS_ACTIVE, MIGRATION_STATUS_POSTCOPY_ACTIVE,
            MIGRATION_STATUS_CANCELLING, MIGRATION_STATUS__MAX },
            MIGRATION_STATUS_FAILED);
    }
    g_free(r.error);
    bitmap_free(r.claimed);
    g_mutex_clear(&r.err_lock);
    g_cond_clear(&r.start_cond);
    g_mutex_clear(&r.start_lock);
    return ok;
}
