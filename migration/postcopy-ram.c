/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Postcopy on the destination; the contract is in include/migration/postcopy-ram.h. */
#include "migration/postcopy-ram.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gio/gio.h>

#include "migration/channel.h"
#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/thread-prio.h"
#include "qemu/userfaultfd.h"

#define FAULT_BATCH     64
/*
 * Before sleeping in poll(), look for a fault again for this long: waking
 * a sleeping thread costs 40-60 us here, much of what a demand fault may
 * take.  Only with CPUs to spare: on a 2-CPU host the spin took the CPU
 * that the threads serving the fault needed, and the mean fault latency
 * rose by a third (docs/postcopy.md).
 */
#define SPIN_NS         200000
#define SPIN_MIN_CPUS   4
/*
 * With postcopy-preempt the fault thread reads the preempt channel too,
 * and after a request it looks at it (and for faults) without sleeping
 * for up to this long, while a vCPU still waits.  The page comes back in
 * 50-100 us; a reader asleep costs the sender a wake-up in its write and
 * itself 15-25 us to run again (traced, 2 CPUs).  The latency guest,
 * 1 GiB, 2 interleaved runs each on 2 CPUs, against a separate reader
 * thread: median demand fault 108-115 -> 73-75 us, mean 125-128 -> 85-87
 * us; the push fell from 636 to 513-550 MiB/s, since the looking thread
 * takes CPU from it.  The look ends as soon as no vCPU waits, wherever
 * the page came from; the bound only matters when an answer is slow or
 * lost.  Not on one CPU, where the look would keep the source's thread
 * from answering.
 */
#define PREEMPT_SPIN_NS  150000

typedef struct FaultRec {
    int64_t t0;                         /* first fault on the page, ns */
    int64_t vcpu_t0[MAX_VCPUS];
    uint32_t vcpus;                     /* bit per vCPU waiting on it */
    bool other;                         /* a thread not a vCPU waits too */
    int64_t other_t0;
} FaultRec;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void postcopy_incoming_init(PostcopyIncoming *pc, Machine *m, RAMLoader *ram)
{
    memset(pc, 0, sizeof(*pc));
    pc->m = m;
    pc->ram = ram;
    pc->requested = bitmap_new(ram->npages);
    pc->wake_fd = pc->preempt_new = pc->preempt_fd = -1;
    pc->spin_ns = g_get_num_processors() >= SPIN_MIN_CPUS ? SPIN_NS : 0;
    pc->preempt_spin_ns = g_get_num_processors() >= 2 ? PREEMPT_SPIN_NS : 0;
    g_mutex_init(&pc->rp_lock);
    g_mutex_init(&pc->drain_lock);
    g_cond_init(&pc->drained);
    pc->nshards = MAX(ram->nshards, 1);
    for (int i = 0; i < pc->nshards; i++) {
        PostcopyShard *sh = &pc->shard[i];
        sh->pc = pc;
        sh->index = i;
        sh->wake_fd = -1;
        g_mutex_init(&sh->lock);
        sh->faults = g_hash_table_new_full(g_int64_hash, g_int64_equal,
                                           g_free, g_free);
    }
    ram->placed = postcopy_placed;
    ram->placed_opaque = pc;
}

int postcopy_fault_vcpu(Machine *m, uint32_t tid)
{
    for (int i = 0; i < m->ncpus; i++) {
        if ((uint32_t)__atomic_load_n(&m->vcpus[i].tid, __ATOMIC_ACQUIRE) == tid) {
            return i;
        }
    }
    return -1;
}

bool postcopy_rp_send(PostcopyIncoming *pc, const RPMessage *m)
{
    g_mutex_lock(&pc->rp_lock);
    QEMUFile *rp = pc->rp;
    if (rp) {
        rp_put(rp, m);
        qemu_fflush(rp);
    }
    g_mutex_unlock(&pc->rp_lock);
    return rp != NULL;
}

/*
 * A vCPU (or other thread) waits on @page: note when, for the statistics,
 * and mark it requested.  Under its shard's lock, with the page seen
 * missing under the same lock (handle_fault): see postcopy_placed.
 */
static void note_fault(PostcopyIncoming *pc, PostcopyShard *sh, uint64_t page,
                       uint32_t tid)
{
    int64_t now = now_ns();
    int v = postcopy_fault_vcpu(pc->m, tid);
    FaultRec *r = g_hash_table_lookup(sh->faults, &page);
    if (!r) {
        if (__atomic_fetch_add(&pc->waiting, 1, __ATOMIC_RELAXED) == 0) {
            /* A wait begins: the stall check counts from here. */
            __atomic_store_n(&pc->progress_ns, now, __ATOMIC_RELAXED);
        }
        r = g_new0(FaultRec, 1);
        r->t0 = now;
        g_hash_table_insert(sh->faults, g_memdup2(&page, sizeof(page)), r);
    }
    if (v < 0) {
        if (!r->other) {
            r->other = true;
            r->other_t0 = now;
            sh->other_faults++;
        }
        return;
    }
    if (!(r->vcpus & (1u << v))) {
        r->vcpus |= 1u << v;
        r->vcpu_t0[v] = now;
        sh->vcpu_faults[v]++;
        if (__atomic_add_fetch(&pc->blocked, 1, __ATOMIC_SEQ_CST) ==
            pc->m->ncpus) {
            __atomic_store_n(&pc->all_blocked_since, now, __ATOMIC_SEQ_CST);
        }
    }
}

/* A vCPU stops waiting at @now: the end of an all-blocked span, maybe. */
static void vcpu_unblocked(PostcopyIncoming *pc, int64_t now)
{
    if (__atomic_fetch_sub(&pc->blocked, 1, __ATOMIC_SEQ_CST) == pc->m->ncpus) {
        /* Another shard's fault may have read its clock after this one's:
         * a span is never negative. */
        int64_t d = now - __atomic_load_n(&pc->all_blocked_since,
                                          __ATOMIC_SEQ_CST);
        if (d > 0) {
            __atomic_fetch_add(&pc->blocktime_ns, d, __ATOMIC_RELAXED);
        }
    }
}

/*
 * The placing threads mark pages received (ram-load.c), then close
 * their fault records here, under the page's shard's lock.  handle_fault
 * looks at received and records a fault under that lock too, so whichever takes
 * it second sees the other's work: either the fault thread finds the
 * page in (and records nothing), or this finds the record (and closes
 * it).  Looking outside the lock, a placement in between the fault
 * thread's look and its record left the record for ever
 * (/migration/postcopy/fault-race).
 */
static void fault_fail(PostcopyIncoming *pc, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

/*
 * Close the records of pages [first, first + n), all in @sh.  In MINOR
 * mode a page waited on is mapped here first (the placement wrote only
 * the page cache): under the lock, so that the fault thread, which maps
 * a page it finds received, and this never both miss it.
 */
static bool placed_in_shard(PostcopyIncoming *pc, PostcopyShard *sh,
                            uint64_t first, uint64_t n)
{
    bool closed = false;
    g_mutex_lock(&sh->lock);
    /*
     * The clock is read under the lock, as note_fault reads it, so that
     * no record's t0 is later than now.  Read before the lock, a fault
     * thread that looked at received just before this placement and
     * took the time just after it made a negative latency (2^64 - x us
     * in the histogram, and query-migrate never answered).
     */
    int64_t now = now_ns();
    __atomic_store_n(&pc->progress_ns, now, __ATOMIC_RELAXED);
    for (uint64_t p = first; p < first + n; p++) {
        if (!test_bit(p, pc->requested)) {
            continue;
        }
        FaultRec *r = g_hash_table_lookup(sh->faults, &p);
        if (!r) {
            continue;
        }
        g_autoptr(GError) err = NULL;
        if (pc->ram->minor) {
            __atomic_fetch_add(&sh->continued, 1, __ATOMIC_RELAXED);
            if (!ram_load_continue(pc->ram, p, &err)) {
                fault_fail(pc, "postcopy: %s", err->message);
            }
        }
        int64_t lat = now - r->t0;
        sh->latency_sum_ns += lat;
        hist_add(&sh->latency_hist, lat / 1000);   /* >= 0: now read last */
        if (r->other) {
            sh->other_latency_ns += now - r->other_t0;
        }
        for (int v = 0; v < MAX_VCPUS; v++) {
            if (r->vcpus & (1u << v)) {
                sh->vcpu_blocktime_ns[v] += now - r->vcpu_t0[v];
                vcpu_unblocked(pc, now);
            }
        }
        g_hash_table_remove(sh->faults, &p);
        __atomic_fetch_sub(&pc->waiting, 1, __ATOMIC_RELAXED);
        closed = true;
    }
    g_mutex_unlock(&sh->lock);
    return closed;
}

void postcopy_placed(void *opaque, uint64_t first, uint64_t n)
{
    PostcopyIncoming *pc = opaque;
    const RAMLoader *l = pc->ram;
    bool closed = false;
    for (uint64_t p = first; p < first + n;) {
        int i = pc->nshards > 1 ? ram_loader_shard(l, p) : 0;
        uint64_t end = pc->nshards > 1
                       ? MIN(first + n, (uint64_t)(i + 1) * l->shard_pages)
                       : first + n;
        closed |= placed_in_shard(pc, &pc->shard[i], p, end - p);
        p = end;
    }
    if (closed && __atomic_load_n(&pc->draining, __ATOMIC_ACQUIRE)) {
        g_mutex_lock(&pc->drain_lock);
        g_cond_broadcast(&pc->drained);
        g_mutex_unlock(&pc->drain_lock);
    }
}

uint64_t postcopy_faults_waiting(PostcopyIncoming *pc)
{
    uint64_t n = 0;
    for (int i = 0; i < pc->nshards; i++) {
        g_mutex_lock(&pc->shard[i].lock);
        n += g_hash_table_size(pc->shard[i].faults);
        g_mutex_unlock(&pc->shard[i].lock);
    }
    return n;
}

/*
 * The fault thread cannot go on (a page it cannot place, a record of the
 * preempt channel it cannot load, userfaultfd failing): a vCPU would wait
 * for ever.  Say why (the first error is error-desc), shut both
 * connections down so that the load thread and the source read their
 * end and pause (postcopy_shutdown), and let postcopy_drain() stop
 * waiting on the preempt channel.  The thread then ends.
 */
static void preempt_end(PostcopyIncoming *pc);

static void fault_fail(PostcopyIncoming *pc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (__atomic_exchange_n(&pc->failed, 1, __ATOMIC_SEQ_CST)) {
        return;                 /* another fault thread said why first */
    }
    if (pc->on_error) {
        pc->on_error(pc->on_error_opaque, msg);
    }
    postcopy_shutdown(pc);
    preempt_end(pc);
}

/* One page fault: wake, skip or request.  False after fault_fail(). */
static bool handle_fault(PostcopyIncoming *pc, const UffdEvent *ev,
                         bool *sent)
{
    RAMLoader *l = pc->ram;
    uint64_t addr = ev->pagefault.address;
    uint64_t base = (uintptr_t)l->rb->host;
    if (addr < base || addr >= base + l->rb->size) {
        return true;
    }
    uint64_t page = (addr - base) / TARGET_PAGE_SIZE;
    page -= page % l->hpages;
    PostcopyShard *sh = &pc->shard[pc->nshards > 1 ? ram_loader_shard(l, page)
                                                   : 0];
    __atomic_fetch_add(&sh->faults_read, 1, __ATOMIC_RELAXED);
    /* The look at received and the record of the fault go under one
     * lock, the page's shard's (see postcopy_placed). */
    g_mutex_lock(&sh->lock);
    if (ram_load_received(l, page)) {
        g_mutex_unlock(&sh->lock);
        if (l->minor) {
            /* In the page cache, not mapped yet (the push wrote it
             * through the alias, or a placement mapped it just now). */
            g_autoptr(GError) err = NULL;
            __atomic_fetch_add(&sh->minor_faults, 1, __ATOMIC_RELAXED);
            if (!ram_load_continue(l, page, &err)) {
                fault_fail(pc, "postcopy fault thread: %s", err->message);
                return false;
            }
            return true;
        }
        /* Placed between the fault and now: the placement woke it, but
         * a wake is cheap and covers a fault that raced with it. */
        uffd_wake(ram_loader_uffd(l, page), l->rb->host + page * TARGET_PAGE_SIZE,
                  l->hpages * TARGET_PAGE_SIZE);
        return true;
    }
    if (ram_load_zero_left(l, page)) {
        g_mutex_unlock(&sh->lock);
        /* Sent as zero in precopy and left unmapped: the source will not
         * send it again, and it needs nothing from there. */
        g_autoptr(GError) err = NULL;
        __atomic_fetch_add(&pc->zero_faults, 1, __ATOMIC_RELAXED);
        if (!ram_load_fault_zero(l, page, &err)) {
            fault_fail(pc, "postcopy fault thread: %s", err->message);
            return false;
        }
        return true;
    }
    note_fault(pc, sh, page, ev->pagefault.tid);
    bool asked = test_and_set_bit_atomic(page, pc->requested);
    g_mutex_unlock(&sh->lock);
    if (asked) {
        __atomic_fetch_add(&pc->dup_faults, 1, __ATOMIC_RELAXED);
        return true;            /* asked for already */
    }
    RPMessage req = { .type = RP_REQ_PAGES, .off = page * TARGET_PAGE_SIZE,
                      .count = (uint32_t)l->hpages };
    g_mutex_lock(&pc->rp_lock);
    if (pc->rp) {
        rp_put(pc->rp, &req);     /* flushed once per batch of faults */
    }
    g_mutex_unlock(&pc->rp_lock);
    __atomic_fetch_add(&pc->requests, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&sh->requests, 1, __ATOMIC_RELAXED);
    *sent = true;
    return true;
}

/*
 * A batch of events: requests for the pages missing, flushed at once.
 * False after fault_fail().
 */
static bool handle_faults(PostcopyIncoming *pc, const UffdEvent *ev, int n,
                          bool *sent)
{
    *sent = false;
    for (int i = 0; i < n; i++) {
        if (ev[i].event == UFFD_EVENT_PAGEFAULT &&
            !handle_fault(pc, &ev[i], sent)) {
            return false;
        }
    }
    if (*sent) {
        g_mutex_lock(&pc->rp_lock);
        if (pc->rp) {
            qemu_fflush(pc->rp);
        }
        g_mutex_unlock(&pc->rp_lock);
    }
    return true;
}

/*
 * One record of the preempt channel, placed; false at its end (REC_EOF:
 * the source sent its last page; or the connection ended), or after
 * fault_fail() for a record that cannot be loaded.
 */
static bool preempt_record(PostcopyIncoming *pc, QEMUFile *f, RAMLoadBuf *buf)
{
    RAMBlock *rb = pc->ram->rb;
    uint8_t type = qemu_get_byte(f);
    if (qemu_file_error(f) || type == REC_EOF) {
        return false;
    }
    uint64_t off = qemu_get_u64(f);
    uint32_t count = qemu_get_u32(f);
    if (qemu_file_error(f)) {
        return false;
    }
    g_autoptr(GError) err = NULL;
    if ((type != REC_RAM_PAGES && type != REC_RAM_ZERO) ||
        !stream_run_fits(rb, off, count)) {
        fault_fail(pc, "postcopy preempt channel: bad record 0x%02x (%u pages "
                   "at 0x%" G_GINT64_MODIFIER "x)", type, count, off);
        return false;
    }
    bool ok = type == REC_RAM_PAGES
              ? ram_load_pages(pc->ram, buf, f, off, count, &err)
              : ram_load_zero(pc->ram, buf, off, count, &err);
    if (qemu_file_error(f)) {
        return false;           /* ended inside a record */
    }
    if (!ok) {
        fault_fail(pc, "postcopy preempt channel: %s", err->message);
    }
    return ok;
}

/*
 * Place every record the preempt channel holds now (its sender writes
 * whole records, so a record begun is read to its end).  False once the
 * channel has ended.
 */
static bool preempt_read(PostcopyIncoming *pc, QEMUFile *f, RAMLoadBuf *buf,
                         bool *busy)
{
    while (qemu_file_ready(f)) {
        if (!preempt_record(pc, f, buf)) {
            return false;
        }
        *busy = true;
    }
    return true;
}

/* The preempt channel ended: postcopy_drain() must not wait on it. */
static void preempt_end(PostcopyIncoming *pc)
{
    g_mutex_lock(&pc->drain_lock);
    __atomic_store_n(&pc->preempt_done, 1, __ATOMIC_RELEASE);
    g_cond_broadcast(&pc->drained);
    g_mutex_unlock(&pc->drain_lock);
}

/*
 * The fault thread's watch on the source (POSTCOPY_HEARTBEAT_MS): the
 * heartbeat when due, and the stall check, unless postcopy is paused
 * here (shut).  *@timeout_ms: how long poll() may sleep.  False after
 * fault_fail(): a vCPU has waited stall_ns with no page placed at all.
 */
static bool heartbeat(PostcopyIncoming *pc, int64_t now, int64_t *next,
                      int *timeout_ms)
{
    if (__atomic_load_n(&pc->shut, __ATOMIC_SEQ_CST)) {
        return true;
    }
    const int64_t every = POSTCOPY_HEARTBEAT_MS * 1000000LL;
    if (now >= *next) {
        postcopy_rp_send(pc, &(RPMessage) { .type = RP_PONG,
                                            .id = RP_HEARTBEAT_ID });
        *next = now + every;
    }
    int64_t wake = *next;
    int waiting = __atomic_load_n(&pc->waiting, __ATOMIC_RELAXED);
    if (pc->stall_ns && waiting > 0) {
        int64_t since = __atomic_load_n(&pc->progress_ns, __ATOMIC_RELAXED);
        if (now - since >= pc->stall_ns) {
            fault_fail(pc, "postcopy: no page came for %" G_GINT64_FORMAT
                       " ms while vCPUs waited on %d (x-postcopy-stall-timeout): "
                       "the source or the network stopped answering",
                       (now - since) / 1000000, waiting);
            return false;
        }
        wake = MIN(wake, since + pc->stall_ns);
    }
    *timeout_ms = (int)((wake - now + 999999) / 1000000);
    return true;
}

/*
 * The fault thread: faults to requests, requested pages to placements.  It
 * sleeps in poll() only when nothing is pending and no vCPU waits on a
 * page that the preempt channel will bring (PREEMPT_SPIN_NS).
 */
static gpointer fault_thread(gpointer opaque)
{
    PostcopyIncoming *pc = opaque;
    int uffd = pc->ram->uffd;
    UffdEvent ev[FAULT_BATCH];
    QEMUFile *preempt = NULL;
    RAMLoadBuf buf;
    ram_load_buf_init(&buf, pc->ram);
    buf.urgent = true;          /* the preempt channel: requested pages */
    /* A faulting vCPU waits on this thread, on a host whose CPUs the push
     * keeps busy: run at once when woken (it blocks between faults).
     * Without the privilege it stays a normal thread. */
    thread_set_fifo(FAULT_PATH_RT_PRIO);
    struct pollfd pfd[3] = {
        { .fd = uffd, .events = POLLIN },
        { .fd = pc->wake_fd, .events = POLLIN },
        { .fd = -1, .events = POLLIN },         /* the preempt channel */
    };
    int64_t idle_until = 0;     /* look again until then (pc->spin_ns) */
    int64_t preempt_until = 0;  /* a requested page may come until then */
    int64_t heartbeat_at = 0;   /* the next heartbeat */

    while (!__atomic_load_n(&pc->quit, __ATOMIC_ACQUIRE)) {
        if (!preempt &&
            __atomic_load_n(&pc->preempt_new, __ATOMIC_ACQUIRE) >= 0) {
            int fd = __atomic_exchange_n(&pc->preempt_new, -1, __ATOMIC_SEQ_CST);
            /* Closed by postcopy_stop_faults, after this thread is gone. */
            __atomic_store_n(&pc->preempt_fd, fd, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&pc->shut, __ATOMIC_SEQ_CST)) {
                /* postcopy_shutdown() may have looked between the two. */
                shutdown(fd, SHUT_RDWR);
            }
            preempt = qemu_file_new(fd, false, false);
            pfd[2].fd = fd;
        }
        bool busy = false, sent;
        int n = uffd_read_events(uffd, ev, FAULT_BATCH);
        if (n < 0 && n != -EAGAIN && n != -EINTR) {
            fault_fail(pc, "postcopy fault thread: reading userfaultfd: %s",
                       g_strerror(-n));
            break;
        }
        if (n > 0) {
            busy = true;
            if (!handle_faults(pc, ev, n, &sent)) {
                break;
            }
            if (sent && preempt) {
                preempt_until = now_ns() + pc->preempt_spin_ns;
            }
        }
        /* Another shard's thread asked for a page that comes here. */
        int64_t others = __atomic_load_n(&pc->preempt_until, __ATOMIC_RELAXED);
        if (others > preempt_until) {
            preempt_until = others;
        }
        if (preempt && pfd[2].fd >= 0 &&
            !preempt_read(pc, preempt, &buf, &busy)) {
            pfd[2].fd = -1;     /* ended: the load thread sees the stream's */
            preempt_end(pc);
            if (__atomic_load_n(&pc->failed, __ATOMIC_SEQ_CST)) {
                break;
            }
        }
        int64_t now = now_ns();
        int timeout_ms = -1;
        if (!heartbeat(pc, now, &heartbeat_at, &timeout_ms)) {
            break;
        }
        if (busy) {
            idle_until = now + pc->spin_ns;
            continue;
        }
        if (now < idle_until ||
            (now < preempt_until && pfd[2].fd >= 0 &&
             __atomic_load_n(&pc->waiting, __ATOMIC_RELAXED) > 0)) {
            continue;
        }
        if (poll(pfd, 3, timeout_ms) < 0 && errno != EINTR) {
            fault_fail(pc, "postcopy fault thread: poll: %s",
                       g_strerror(errno));
            break;
        }
        if (pfd[1].revents & POLLIN) {
            uint64_t v;
            if (read(pc->wake_fd, &v, sizeof(v)) < 0) {
                /* EAGAIN: another read took it; the flags are what count. */
            }
        }
    }
    if (preempt) {
        qemu_file_close(preempt);
    }
    ram_load_buf_cleanup(&buf);
    return NULL;
}

/*
 * The fault thread of a further range of guest RAM: its faults to
 * requests, nothing else (the first thread reads the preempt channel and
 * keeps the heartbeat and the stall watch for all).
 */
static gpointer shard_thread(gpointer opaque)
{
    PostcopyShard *sh = opaque;
    PostcopyIncoming *pc = sh->pc;
    int uffd = pc->ram->uffds[sh->index];
    UffdEvent ev[FAULT_BATCH];
    thread_set_fifo(FAULT_PATH_RT_PRIO);
    struct pollfd pfd[2] = {
        { .fd = uffd, .events = POLLIN },
        { .fd = sh->wake_fd, .events = POLLIN },
    };
    int64_t idle_until = 0;

    while (!__atomic_load_n(&pc->quit, __ATOMIC_ACQUIRE)) {
        bool sent;
        int n = uffd_read_events(uffd, ev, FAULT_BATCH);
        if (n < 0 && n != -EAGAIN && n != -EINTR) {
            fault_fail(pc, "postcopy fault thread %d: reading userfaultfd: %s",
                       sh->index, g_strerror(-n));
            break;
        }
        int64_t now = now_ns();
        if (n > 0) {
            if (!handle_faults(pc, ev, n, &sent)) {
                break;
            }
            if (sent && pc->preempt_expected) {
                __atomic_store_n(&pc->preempt_until,
                                 now_ns() + pc->preempt_spin_ns,
                                 __ATOMIC_RELAXED);
            }
            idle_until = now + pc->spin_ns;
            continue;
        }
        if (now < idle_until) {
            continue;
        }
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            fault_fail(pc, "postcopy fault thread %d: poll: %s", sh->index,
                       g_strerror(errno));
            break;
        }
        if (pfd[1].revents & POLLIN) {
            uint64_t v;
            if (read(sh->wake_fd, &v, sizeof(v)) < 0) {
                /* EAGAIN: nothing to take; the quit flag is what counts. */
            }
        }
    }
    return NULL;
}

static void start_fault_thread(PostcopyIncoming *pc)
{
    __atomic_store_n(&pc->progress_ns, now_ns(), __ATOMIC_RELAXED);
    __atomic_store_n(&pc->quit, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&pc->failed, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&pc->preempt_done, 0, __ATOMIC_RELEASE);
    pc->shard[0].thread = g_thread_new("mig/dst/fault", fault_thread, pc);
    for (int i = 1; i < pc->nshards; i++) {
        PostcopyShard *sh = &pc->shard[i];
        /* Its own: one eventfd read by several threads wakes only one. */
        sh->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (sh->wake_fd < 0) {
            fault_fail(pc, "postcopy fault thread %d: eventfd: %s", i,
                       g_strerror(errno));
            break;
        }
        g_autofree char *name = g_strdup_printf("mig/dst/fault%d", i);
        sh->thread = g_thread_new(name, shard_thread, sh);
    }
}

bool postcopy_listen(PostcopyIncoming *pc, int fd, bool preempt, GError **errp)
{
    pc->preempt_expected = preempt;
    pc->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (pc->wake_fd < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "eventfd: %s",
                    g_strerror(errno));
        return false;
    }
    g_mutex_lock(&pc->rp_lock);
    pc->rp = qemu_file_new(fd, true, false);
    g_mutex_unlock(&pc->rp_lock);
    pc->ram->postcopy = true;
    start_fault_thread(pc);
    return true;
}

void postcopy_recover_begin(PostcopyIncoming *pc, int fd)
{
    postcopy_stop_faults(pc);
    g_mutex_lock(&pc->rp_lock);
    if (pc->rp) {
        qemu_file_close(pc->rp);
    }
    pc->rp = qemu_file_new(fd, true, false);
    g_mutex_unlock(&pc->rp_lock);
    /* The new connections are not shut down; postcopy_shutdown() may
     * shut them down again from now on. */
    __atomic_store_n(&pc->shut, 0, __ATOMIC_SEQ_CST);
}

bool postcopy_recover_resume(PostcopyIncoming *pc)
{
    /* The acknowledgement before any request: the source rebuilt what
     * it sends from RECV_BITMAP before it sent RESUME, and a request
     * served before would be undone by it. */
    bool ok = postcopy_rp_send(pc, &(RPMessage) { .type = RP_RESUME_ACK });
    postcopy_ensure_faults(pc);
    /* Pages that vCPUs wait on were asked for on the broken connection,
     * or not at all (faults while paused): all of them again.  A fault
     * recorded after this snapshot asks on the new connection itself. */
    g_autoptr(GArray) all = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    for (int s = 0; s < pc->nshards; s++) {
        g_mutex_lock(&pc->shard[s].lock);
        GHashTableIter it;
        gpointer key;
        g_hash_table_iter_init(&it, pc->shard[s].faults);
        while (g_hash_table_iter_next(&it, &key, NULL)) {
            g_array_append_val(all, *(uint64_t *)key);
        }
        g_mutex_unlock(&pc->shard[s].lock);
    }
    guint n = all->len;
    const uint64_t *pages = (const uint64_t *)(void *)all->data;
    g_mutex_lock(&pc->rp_lock);
    for (guint i = 0; i < n && pc->rp; i++) {
        rp_put(pc->rp, &(RPMessage) { .type = RP_REQ_PAGES,
                                      .off = pages[i] * TARGET_PAGE_SIZE,
                                      .count = (uint32_t)pc->ram->hpages });
    }
    if (pc->rp) {
        qemu_fflush(pc->rp);
        ok = ok && !qemu_file_error(pc->rp);
    }
    g_mutex_unlock(&pc->rp_lock);
    __atomic_fetch_add(&pc->requests, n, __ATOMIC_RELAXED);
    return ok;
}

void postcopy_ensure_faults(PostcopyIncoming *pc)
{
    if (!pc->shard[0].thread) {
        start_fault_thread(pc);
    }
}

static void wake(PostcopyIncoming *pc)
{
    uint64_t one = 1;
    if (write(pc->wake_fd, &one, sizeof(one)) < 0) {
        /* The counter cannot overflow here; the flags are what matter. */
    }
}

void postcopy_attach_preempt(PostcopyIncoming *pc, int fd)
{
    /* Published before pc->shut is read, as postcopy_shutdown() sets it
     * before it reads the fds (both SEQ_CST): one of the two shuts it. */
    int old = __atomic_exchange_n(&pc->preempt_new, fd, __ATOMIC_SEQ_CST);
    if (old >= 0) {
        close(old);             /* attached twice and never taken */
    }
    if (__atomic_load_n(&pc->shut, __ATOMIC_SEQ_CST)) {
        shutdown(fd, SHUT_RDWR);
    }
    wake(pc);
}

void postcopy_shutdown(PostcopyIncoming *pc)
{
    __atomic_store_n(&pc->shut, 1, __ATOMIC_SEQ_CST);
    g_mutex_lock(&pc->rp_lock);
    if (pc->rp) {
        shutdown(qemu_file_fd(pc->rp), SHUT_RDWR);
    }
    g_mutex_unlock(&pc->rp_lock);
    /* Either fd may be taken by the fault thread meanwhile; it stays
     * open until postcopy_stop_faults(), so a shutdown here cannot hit a
     * reused number. */
    int fds[2] = { __atomic_load_n(&pc->preempt_fd, __ATOMIC_SEQ_CST),
                   __atomic_load_n(&pc->preempt_new, __ATOMIC_SEQ_CST) };
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0) {
            shutdown(fds[i], SHUT_RDWR);
        }
    }
}

bool postcopy_drain(PostcopyIncoming *pc, GError **errp)
{
    bool ok = true;
    g_mutex_lock(&pc->drain_lock);
    __atomic_store_n(&pc->draining, 1, __ATOMIC_SEQ_CST);
    /* Without preempt every page came on the main stream, now ended.
     * With it, the source ends the preempt channel after its last page
     * (ram_postcopy_end_preempt): a page missing then never comes. */
    while (!ram_load_all_received(pc->ram)) {
        if (!pc->preempt_expected ||
            __atomic_load_n(&pc->preempt_done, __ATOMIC_ACQUIRE)) {
            ok = ram_load_all_received(pc->ram);
            break;
        }
        /* Woken by a requested page placed or the channel's end; the
         * bound only covers a wake-up missed by a page placed before
         * draining was set. */
        g_cond_wait_until(&pc->drained, &pc->drain_lock,
                          g_get_monotonic_time() + 10 * G_TIME_SPAN_MILLISECOND);
    }
    __atomic_store_n(&pc->draining, 0, __ATOMIC_SEQ_CST);
    g_mutex_unlock(&pc->drain_lock);
    if (!ok) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "postcopy: the migration ended with %" G_GUINT64_FORMAT
                    " guest pages missing, which the source counts sent",
                    ram_load_count_missing(pc->ram));
    }
    return ok;
}

void postcopy_stop_faults(PostcopyIncoming *pc)
{
    __atomic_store_n(&pc->quit, 1, __ATOMIC_RELEASE);
    for (int i = 1; i < pc->nshards; i++) {
        PostcopyShard *sh = &pc->shard[i];
        if (sh->thread) {
            uint64_t one = 1;
            if (write(sh->wake_fd, &one, sizeof(one)) < 0) {
                /* It cannot overflow; the quit flag is what matters. */
            }
            g_thread_join(sh->thread);
            sh->thread = NULL;
        }
        if (sh->wake_fd >= 0) {
            close(sh->wake_fd);
            sh->wake_fd = -1;
        }
    }
    if (pc->shard[0].thread) {
        int fd = __atomic_load_n(&pc->preempt_fd, __ATOMIC_ACQUIRE);
        if (fd >= 0) {
            /* A read blocked inside a record returns (the fd stays open
             * until the thread is gone). */
            shutdown(fd, SHUT_RD);
        }
        wake(pc);
        g_thread_join(pc->shard[0].thread);
        pc->shard[0].thread = NULL;
    }
    int fds[2] = { __atomic_exchange_n(&pc->preempt_fd, -1, __ATOMIC_ACQ_REL),
                   __atomic_exchange_n(&pc->preempt_new, -1, __ATOMIC_ACQ_REL) };
    for (int i = 0; i < 2; i++) {
        channel_close(fds[i]);
    }
}

void postcopy_incoming_cleanup(PostcopyIncoming *pc)
{
    postcopy_stop_faults(pc);
    if (pc->ram && pc->ram->ring == &pc->ring) {
        pc->ram->ring = NULL;
    }
    page_pool_cleanup(&pc->ring);
    if (pc->wake_fd >= 0) {
        close(pc->wake_fd);
    }
    if (pc->rp) {
        qemu_file_close(pc->rp);
    }
    if (pc->ram) {
        pc->ram->placed = NULL;
    }
    bitmap_free(pc->requested);
    for (int i = 0; i < pc->nshards; i++) {
        g_hash_table_destroy(pc->shard[i].faults);
        g_mutex_clear(&pc->shard[i].lock);
    }
    g_mutex_clear(&pc->rp_lock);
    g_mutex_clear(&pc->drain_lock);
    g_cond_clear(&pc->drained);
    memset(pc, 0, sizeof(*pc));
    pc->wake_fd = pc->preempt_new = pc->preempt_fd = -1;
}

/* Every shard's statistics, summed; each shard's under its lock. */
typedef struct FaultTotals {
    Histogram hist;
    int64_t latency_sum_ns;
    int64_t vcpu_blocktime_ns[MAX_VCPUS];
    uint64_t vcpu_faults[MAX_VCPUS];
    uint64_t other_faults;
    int64_t other_latency_ns;
} FaultTotals;

static void fault_totals(PostcopyIncoming *pc, FaultTotals *t, JsonArray *shards)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < pc->nshards; i++) {
        PostcopyShard *sh = &pc->shard[i];
        g_mutex_lock(&sh->lock);
        hist_merge(&t->hist, &sh->latency_hist);
        t->latency_sum_ns += sh->latency_sum_ns;
        for (int v = 0; v < MAX_VCPUS; v++) {
            t->vcpu_blocktime_ns[v] += sh->vcpu_blocktime_ns[v];
            t->vcpu_faults[v] += sh->vcpu_faults[v];
        }
        t->other_faults += sh->other_faults;
        t->other_latency_ns += sh->other_latency_ns;
        uint64_t served = sh->latency_hist.count;
        int64_t mean = served ? sh->latency_sum_ns / (int64_t)served : 0;
        uint64_t p99 = served ? (hist_percentile(&sh->latency_hist, 0.99) + 1) *
                                1000 - 1 : 0;
        g_mutex_unlock(&sh->lock);
        JsonObject *o = json_object_new();
        json_object_set_int_member(o, "faults",
                                   __atomic_load_n(&sh->faults_read, __ATOMIC_RELAXED));
        json_object_set_int_member(o, "requests",
                                   __atomic_load_n(&sh->requests, __ATOMIC_RELAXED));
        json_object_set_int_member(o, "served", served);
        json_object_set_int_member(o, "minor",
                                   __atomic_load_n(&sh->minor_faults, __ATOMIC_RELAXED));
        json_object_set_int_member(o, "continued",
                                   __atomic_load_n(&sh->continued, __ATOMIC_RELAXED));
        json_object_set_int_member(o, "latency", mean);
        json_object_set_int_member(o, "p99", p99);
        json_array_add_object_element(shards, o);
    }
}

#define POSTCOPY_LATENCY_BUCKETS 24

void postcopy_stats(PostcopyIncoming *pc, JsonObject *r)
{
    int n = pc->m->ncpus;
    JsonArray *vb = json_array_new(), *vl = json_array_new(),
              *dist = json_array_new(), *shards = json_array_new();
    g_autofree FaultTotals *t = g_new(FaultTotals, 1);
    fault_totals(pc, t, shards);
    json_object_set_int_member(r, "postcopy-blocktime",
                               __atomic_load_n(&pc->blocktime_ns,
                                               __ATOMIC_RELAXED) / 1000000);
    for (int v = 0; v < n; v++) {
        json_array_add_int_element(vb, t->vcpu_blocktime_ns[v] / 1000000);
        json_array_add_int_element(vl, t->vcpu_faults[v] ?
                                   t->vcpu_blocktime_ns[v] / (int64_t)t->vcpu_faults[v]
                                   : 0);
    }
    json_object_set_array_member(r, "postcopy-vcpu-blocktime", vb);
    const Histogram *h = &t->hist;
    json_object_set_int_member(r, "postcopy-latency", h->count ?
                               t->latency_sum_ns / (int64_t)h->count : 0);
    json_object_set_array_member(r, "postcopy-vcpu-latency", vl);
    /* QEMU 10.1's: the faults of threads that are not vCPUs (KVM's
     * accesses from the main thread, device emulation). */
    json_object_set_int_member(r, "postcopy-non-vcpu-latency", t->other_faults ?
                               t->other_latency_ns / (int64_t)t->other_faults
                               : 0);
    /* ferry's: one entry per fault thread (x-postcopy-fault-threads). */
    json_object_set_array_member(r, "x-postcopy-fault-shards", shards);
    if (pc->ring.nslots) {
        /* ferry's: x-postcopy-page-pool, in 4 KiB pages. */
        JsonObject *o = json_object_new();
        json_object_set_int_member(o, "size", pc->ring.nslots);
        json_object_set_int_member(o, "placed",
                                   __atomic_load_n(&pc->ring.placed, __ATOMIC_RELAXED));
        json_object_set_int_member(o, "missed",
                                   __atomic_load_n(&pc->ring.missed, __ATOMIC_RELAXED));
        json_object_set_int_member(o, "backed",
                                   __atomic_load_n(&pc->ring.backed, __ATOMIC_RELAXED));
        json_object_set_object_member(r, "x-postcopy-page-pool", o);
    }
    /* QEMU 10.1's 24 buckets, [0, 2), [2, 4), [4, 8) ... us, the last
     * one from 2^23 us (8.4 s) on: bucket k - 1 ends at 2^k - 1 us, a
     * bucket edge of h. */
    uint64_t below = 0;
    for (unsigned k = 1; k <= POSTCOPY_LATENCY_BUCKETS; k++) {
        uint64_t upto = k == POSTCOPY_LATENCY_BUCKETS
                        ? h->count : hist_count_upto(h, (1ull << k) - 1);
        json_array_add_int_element(dist, upto - below);
        below = upto;
    }
    json_object_set_array_member(r, "postcopy-latency-dist", dist);
    /* ferry's own, in ns: the top of the microsecond bucket holding each,
     * at most 1 us or 6.25 % above it (qemu/histogram.h) */
    static const struct { const char *name; double q; } pcts[] = {
        { "p50", 0.5 }, { "p90", 0.9 }, { "p99", 0.99 }, { "p999", 0.999 },
    };
    JsonObject *p = json_object_new();
    for (size_t i = 0; i < G_N_ELEMENTS(pcts); i++) {
        json_object_set_int_member(p, pcts[i].name, h->count ?
                                   (hist_percentile(h, pcts[i].q) + 1) * 1000 - 1
                                   : 0);
    }
    json_object_set_object_member(r, "x-postcopy-latency-percentiles", p);
}
