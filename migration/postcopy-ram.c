/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Postcopy on the destination; the contract is in include/migration/postcopy-ram.h. */
#include "migration/postcopy-ram.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <gio/gio.h>

#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/thread-prio.h"
#include "qemu/userfaultfd.h"

#define PAGE            4096
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

typedef struct FaultRec {
    int64_t t0;                         /* first fault on the page, ns */
    int64_t vcpu_t0[MAX_VCPUS];
    uint32_t vcpus;                     /* bit per vCPU waiting on it */
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
    pc->quit_fd = -1;
    pc->spin_ns = g_get_num_processors() >= SPIN_MIN_CPUS ? SPIN_NS : 0;
    g_mutex_init(&pc->rp_lock);
    g_mutex_init(&pc->stats_lock);
    pc->faults = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
                                       g_free);
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

void postcopy_rp_send(PostcopyIncoming *pc, const RPMessage *m)
{
    g_mutex_lock(&pc->rp_lock);
    if (pc->rp) {
        rp_put(pc->rp, m);
        qemu_fflush(pc->rp);
    }
    g_mutex_unlock(&pc->rp_lock);
}

/* A vCPU (or other thread) waits on @page: note when, for the statistics. */
static void note_fault(PostcopyIncoming *pc, uint64_t page, uint32_t tid)
{
    int64_t now = now_ns();
    int v = postcopy_fault_vcpu(pc->m, tid);
    g_mutex_lock(&pc->stats_lock);
    FaultRec *r = g_hash_table_lookup(pc->faults, &page);
    if (!r) {
        r = g_new0(FaultRec, 1);
        r->t0 = now;
        g_hash_table_insert(pc->faults, g_memdup2(&page, sizeof(page)), r);
    }
    if (v >= 0 && !(r->vcpus & (1u << v))) {
        r->vcpus |= 1u << v;
        r->vcpu_t0[v] = now;
        pc->vcpu_faults[v]++;
        if (++pc->blocked == pc->m->ncpus) {
            pc->all_blocked_since = now;
        }
    }
    g_mutex_unlock(&pc->stats_lock);
}

void postcopy_placed(void *opaque, uint64_t first, uint64_t n)
{
    PostcopyIncoming *pc = opaque;
    int64_t now = 0;
    for (uint64_t p = first; p < first + n; p++) {
        if (!test_bit(p, pc->requested)) {
            continue;
        }
        if (!now) {
            now = now_ns();
            g_mutex_lock(&pc->stats_lock);
        }
        FaultRec *r = g_hash_table_lookup(pc->faults, &p);
        if (!r) {
            continue;
        }
        int64_t lat = now - r->t0;
        pc->latency_count++;
        pc->latency_sum_ns += lat;
        int b = 0;
        for (int64_t us = lat / 1000; us > 1 && b < POSTCOPY_DIST_BUCKETS - 1;
             us >>= 1) {
            b++;
        }
        pc->dist[b]++;
        if (r->vcpus && pc->blocked == pc->m->ncpus) {
            pc->blocktime_ns += now - pc->all_blocked_since;
        }
        for (int v = 0; v < MAX_VCPUS; v++) {
            if (r->vcpus & (1u << v)) {
                pc->vcpu_blocktime_ns[v] += now - r->vcpu_t0[v];
                pc->blocked--;
            }
        }
        g_hash_table_remove(pc->faults, &p);
    }
    if (now) {
        g_mutex_unlock(&pc->stats_lock);
    }
}

/* One page fault: wake, skip or request. */
static bool handle_fault(PostcopyIncoming *pc, const UffdEvent *ev)
{
    RAMLoader *l = pc->ram;
    uint64_t addr = ev->pagefault.address;
    uint64_t base = (uintptr_t)l->rb->host;
    if (addr < base || addr >= base + l->rb->size) {
        return false;
    }
    uint64_t page = (addr - base) / PAGE;
    page -= page % l->hpages;
    if (ram_load_received(l, page)) {
        /* Placed between the fault and now: the placement woke it, but
         * a wake is cheap and covers a fault that raced with it. */
        uffd_wake(l->uffd, l->rb->host + page * PAGE, l->hpages * PAGE);
        return false;
    }
    note_fault(pc, page, ev->pagefault.tid);
    if (test_and_set_bit_atomic(page, pc->requested)) {
        __atomic_fetch_add(&pc->dup_faults, 1, __ATOMIC_RELAXED);
        return false;           /* asked for already */
    }
    RPMessage req = { .type = RP_REQ_PAGES, .off = page * PAGE,
                      .count = (uint32_t)l->hpages };
    g_mutex_lock(&pc->rp_lock);
    if (pc->rp) {
        rp_put(pc->rp, &req);     /* flushed once per batch of faults */
    }
    g_mutex_unlock(&pc->rp_lock);
    __atomic_fetch_add(&pc->requests, 1, __ATOMIC_RELAXED);
    return true;
}

static gpointer fault_thread(gpointer opaque)
{
    PostcopyIncoming *pc = opaque;
    int uffd = pc->ram->uffd;
    UffdEvent ev[FAULT_BATCH];
    /* A faulting vCPU waits on this thread, on a host whose CPUs the push
     * keeps busy: run at once when woken (it blocks between faults).
     * Without the privilege it stays a normal thread. */
    thread_set_fifo(URGENT_RT_PRIO);
    struct pollfd pfd[2] = {
        { .fd = uffd, .events = POLLIN },
        { .fd = pc->quit_fd, .events = POLLIN },
    };

    while (!__atomic_load_n(&pc->quit, __ATOMIC_ACQUIRE)) {
        int n = uffd_read_events(uffd, ev, FAULT_BATCH);
        if (n == 0) {
            /* Nothing pending: look again for a while, then sleep. */
            int64_t until = now_ns() + pc->spin_ns;
            while (n == 0 && now_ns() < until &&
                   !__atomic_load_n(&pc->quit, __ATOMIC_ACQUIRE)) {
                n = uffd_read_events(uffd, ev, FAULT_BATCH);
            }
            if (n == 0) {
                if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
                    g_warning("postcopy fault thread: poll: %s",
                              g_strerror(errno));
                    break;
                }
                continue;
            }
        }
        if (n < 0) {
            if (n == -EAGAIN || n == -EINTR) {
                continue;
            }
            g_warning("postcopy fault thread: reading userfaultfd: %s",
                      g_strerror(-n));
            break;
        }
        bool sent = false;
        for (int i = 0; i < n; i++) {
            if (ev[i].event == UFFD_EVENT_PAGEFAULT) {
                sent |= handle_fault(pc, &ev[i]);
            }
        }
        if (sent) {
            g_mutex_lock(&pc->rp_lock);
            if (pc->rp) {
                qemu_fflush(pc->rp);
            }
            g_mutex_unlock(&pc->rp_lock);
        }
    }
    return NULL;
}

bool postcopy_listen(PostcopyIncoming *pc, int fd, GError **errp)
{
    pc->quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (pc->quit_fd < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "eventfd: %s",
                    g_strerror(errno));
        return false;
    }
    g_mutex_lock(&pc->rp_lock);
    pc->rp = qemu_file_new(fd, true, false);
    g_mutex_unlock(&pc->rp_lock);
    pc->ram->postcopy = true;
    pc->fault_thread = g_thread_new("mig/dst/fault", fault_thread, pc);
    return true;
}

void postcopy_stop_faults(PostcopyIncoming *pc)
{
    if (!pc->fault_thread) {
        return;
    }
    __atomic_store_n(&pc->quit, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(pc->quit_fd, &one, sizeof(one)) < 0) {
        /* The counter cannot overflow here; the flag is what matters. */
    }
    g_thread_join(pc->fault_thread);
    pc->fault_thread = NULL;
}

void postcopy_incoming_cleanup(PostcopyIncoming *pc)
{
    postcopy_stop_faults(pc);
    if (pc->quit_fd >= 0) {
        close(pc->quit_fd);
    }
    if (pc->rp) {
        qemu_file_close(pc->rp);
    }
    if (pc->ram) {
        pc->ram->placed = NULL;
    }
    bitmap_free(pc->requested);
    g_hash_table_destroy(pc->faults);
    g_mutex_clear(&pc->rp_lock);
    g_mutex_clear(&pc->stats_lock);
    memset(pc, 0, sizeof(*pc));
    pc->quit_fd = -1;
}

void postcopy_stats(PostcopyIncoming *pc, JsonObject *r)
{
    int n = pc->m->ncpus;
    JsonArray *vb = json_array_new(), *vl = json_array_new(),
              *dist = json_array_new();
    g_mutex_lock(&pc->stats_lock);
    json_object_set_int_member(r, "postcopy-blocktime", pc->blocktime_ns / 1000000);
    for (int v = 0; v < n; v++) {
        json_array_add_int_element(vb, pc->vcpu_blocktime_ns[v] / 1000000);
        json_array_add_int_element(vl, pc->vcpu_faults[v] ?
                                   pc->vcpu_blocktime_ns[v] / (int64_t)pc->vcpu_faults[v]
                                   : 0);
    }
    json_object_set_array_member(r, "postcopy-vcpu-blocktime", vb);
    json_object_set_int_member(r, "postcopy-latency", pc->latency_count ?
                               pc->latency_sum_ns / (int64_t)pc->latency_count : 0);
    json_object_set_array_member(r, "postcopy-vcpu-latency", vl);
    int last = 0;
    for (int b = 0; b < POSTCOPY_DIST_BUCKETS; b++) {
        if (pc->dist[b]) {
            last = b;
        }
    }
    for (int b = 0; b <= last; b++) {
        json_array_add_int_element(dist, pc->dist[b]);
    }
    json_object_set_array_member(r, "postcopy-latency-dist", dist);
    g_mutex_unlock(&pc->stats_lock);
}
