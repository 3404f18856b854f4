/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Postcopy on the destination (migration/postcopy-ram.c): the fault
 * thread, page requests on the return path, and the blocktime and
 * latency statistics.
 *
 * Threads:
 * - fault thread ("mig/dst/fault"): polls the (first) userfaultfd, a wake
 *   eventfd and, with postcopy-preempt, the preempt channel.  It reads
 *   faults in batches and sends a request for each page neither received
 *   nor requested yet; it reads the preempt channel's records (requested
 *   pages only) and places them.  While a vCPU waits on a page that will
 *   come on the preempt channel it does not sleep (PREEMPT_SPIN_NS): the
 *   page is placed the moment it arrives, without a thread to wake.  It
 *   owns the preempt channel's QEMUFile and the requested bitmap's set
 *   operations.
 * - with x-postcopy-fault-threads N > 1, N - 1 more ("mig/dst/fault/I"),
 *   one per further range of guest RAM (RAMLoader's shards): each polls
 *   its range's userfaultfd and its own eventfd and sends requests; the
 *   first thread alone reads the preempt channel and keeps the
 *   heartbeat and the stall watch.
 * - load thread: places the main stream's pages and calls
 *   postcopy_drain() at its end.
 * - Both call postcopy_placed() through the RAM loader's hook.
 * - any thread: postcopy_rp_send() (under rp_lock),
 *   postcopy_attach_preempt().
 * Fault records and statistics are under their shard's lock.
 */
#ifndef MIGRATION_POSTCOPY_RAM_H
#define MIGRATION_POSTCOPY_RAM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "migration/ram-load.h"
#include "qemu/histogram.h"
#include "migration/return-path.h"
#include "system/machine.h"

/*
 * The threads on a demand fault's path (the destination's fault thread,
 * the source's return-path thread) run SCHED_FIFO at
 * this priority where allowed: they block between short bursts, and on
 * a host whose CPUs the push keeps busy a woken normal thread can wait
 * milliseconds for one.  The latency guest, 1 GiB, preempt, 3 runs each
 * on 2 CPUs: stall p99 1.2-2.4 ms against 4.8 ms as normal threads.
 */
#define FAULT_PATH_RT_PRIO  1

/*
 * Noticing a silent peer in postcopy (docs/postcopy.md), beyond TCP's
 * keep-alive (which a path that still acknowledges but no longer
 * delivers, or a peer that stopped working, does not trip): the
 * destination's fault thread sends a heartbeat, RP_PONG with
 * RP_HEARTBEAT_ID, every POSTCOPY_HEARTBEAT_MS from LISTEN on; a source
 * that has seen one pauses when nothing comes for its
 * x-postcopy-stall-timeout.  The destination pauses when no page has
 * been placed for its x-postcopy-stall-timeout while a vCPU waits.  A
 * source that predates the heartbeat takes it as a PONG nobody waits
 * for; a destination that predates it sends none, and the source never
 * arms its check: no negotiation is needed either way.
 */
#define POSTCOPY_HEARTBEAT_MS       250
#define RP_HEARTBEAT_ID             0xffffffffu

typedef struct QEMUFile QEMUFile;


/*
 * One range of guest RAM with its own userfaultfd (RAMLoader's shards)
 * and its own fault thread: the faults waiting in it and their
 * statistics, under its own lock, so that fault threads share no lock
 * but the return path's, held for one write.  A page's shard is
 * ram_loader_shard(); placement closes a fault's record under the lock
 * of the page's shard.
 */
typedef struct PostcopyIncoming PostcopyIncoming;

typedef struct PostcopyShard {
    PostcopyIncoming *pc;
    int index;
    GThread *thread;            /* shard 0's is the main fault thread */
    int wake_fd;                /* eventfd: stop (shard 0: pc->wake_fd) */
    GMutex lock;
    GHashTable *faults;         /* page -> FaultRec, pages being waited for */
    int64_t latency_sum_ns;     /* under lock, as the rest */
    Histogram latency_hist;     /* us, from a fault read to its page placed:
                                 * QEMU's postcopy-latency-dist (power-of-two
                                 * buckets, too coarse to tell 70 from 120
                                 * us) is summed from it, and ferry's
                                 * x-postcopy-latency-percentiles read */
    int64_t vcpu_blocktime_ns[MAX_VCPUS];
    uint64_t vcpu_faults[MAX_VCPUS];
    uint64_t other_faults;      /* from threads that are not vCPUs */
    int64_t other_latency_ns;
    uint64_t requests;          /* atomic: requests sent from this shard */
    uint64_t faults_read;       /* atomic: page faults read from its fd */
    uint64_t minor_faults;      /* atomic: MINOR mode: faults on pages in,
                                 * mapped by the fault thread (CONTINUE) */
    uint64_t continued;         /* atomic: MINOR mode: pages waited on that
                                 * were mapped as they came (CONTINUE) */
} PostcopyShard;

struct PostcopyIncoming {
    Machine *m;
    RAMLoader *ram;
    /* x-postcopy-page-pool's pages (ram->ring while it runs; its size
     * and counts stay for query-migrate after; nslots 0: none). */
    PagePool ring;
    unsigned long *requested;   /* one bit per 4 KiB page, atomic */

    GMutex rp_lock;
    QEMUFile *rp;               /* under rp_lock; NULL: no return path yet */

    int nshards;                /* ram->nshards: one fault thread each */
    PostcopyShard shard[RAM_MAX_SHARDS];
    int wake_fd;                /* eventfd: stop, or take the preempt channel */
    int64_t spin_ns;            /* fault threads: busy look before poll() */
    int64_t preempt_spin_ns;     /* and after a request, with preempt */
    int64_t preempt_until;      /* atomic: a requested page may come on
                                 * the preempt channel until then (ns) */
    int quit;                   /* atomic */
    bool preempt_expected;       /* postcopy-preempt: a channel will come */
    int preempt_new;             /* atomic: a channel handed over, or -1 */
    int preempt_fd;              /* atomic: the channel the fault thread
                                 * reads (closed at stop), or -1 */
    int preempt_done;            /* atomic: it ended (EOF or error) */
    int shut;                   /* atomic: postcopy_shutdown() was called */
    int failed;                 /* atomic: a fault thread could not go on */
    /*
     * Called by the first fault thread that cannot go on, once, with why;
     * it then shuts the connections down (postcopy_shutdown) and ends, so
     * that the load thread and the source pause.  Set before
     * postcopy_listen.
     */
    void (*on_error)(void *opaque, const char *msg);
    void *on_error_opaque;
    int64_t stall_ns;           /* set before listen: the stall timeout
                                 * (x-postcopy-stall-timeout), 0 off */
    int64_t progress_ns;        /* atomic: a page placed, or the first of
                                 * the waits now (note_fault) */
    uint64_t requests;          /* atomic: requests sent */
    uint64_t dup_faults;        /* atomic: faults on pages asked for already */
    uint64_t zero_faults;       /* atomic: faults on zero pages left */
    int waiting;                /* atomic: pages being waited for, in all
                                 * shards */

    /* Every vCPU waiting at once, over all shards: atomic. */
    int blocked;                /* vCPUs waiting on a page now */
    int64_t all_blocked_since;  /* ns, when every vCPU started waiting */
    int64_t blocktime_ns;       /* time every vCPU waited at once */

    GMutex drain_lock;
    int draining;               /* atomic: postcopy_drain() waits on drained */
    GCond drained;              /* a requested page placed, or the preempt
                                 * channel ended (under drain_lock) */
};

/*
 * postcopy_incoming_init: ready for faults on @ram's userfaultfd, which
 * must be registered (ram_loader_can_postcopy()).
 */
void postcopy_incoming_init(PostcopyIncoming *pc, Machine *m, RAMLoader *ram);

/*
 * postcopy_listen: requests go out on @fd (the stream's connection,
 * written in the other direction); start the fault thread.  @preempt:
 * requested pages will come on a second channel (postcopy-preempt),
 * handed over with postcopy_attach_preempt().
 */
bool postcopy_listen(PostcopyIncoming *pc, int fd, bool preempt, GError **errp);

/*
 * postcopy_attach_preempt: the fault thread reads requested pages from
 * @fd from now on and closes it when it stops.  Any thread, once, after
 * postcopy_listen().
 */
void postcopy_attach_preempt(PostcopyIncoming *pc, int fd);

/*
 * postcopy_drain: the main stream has ended; wait until every page is
 * in, since requested pages may still be on their way on the preempt
 * channel.  False, with how many, when pages are missing that can no
 * longer come: the main stream ended without them and, with preempt,
 * the preempt channel too.  Load thread.
 */
bool postcopy_drain(PostcopyIncoming *pc, GError **errp);

/* postcopy_rp_send: send a return-path message now (flushed); false,
 * sending nothing, before postcopy_listen(). */
bool postcopy_rp_send(PostcopyIncoming *pc, const RPMessage *m);

/*
 * postcopy_shutdown: the load failed or a channel broke, and postcopy
 * pauses here.  Shut down both connections (shutdown(2), not close: the
 * fault thread and the stream still hold their fds) so that the source
 * reads the end of its return path and pauses too, instead of pushing
 * into a stream nobody reads while its vCPUs' requests go unanswered.
 * A preempt channel attached later is shut down as it comes.  Nothing
 * is freed: RAM stays registered, and a vCPU touching a missing page
 * waits.  Load thread.
 */
void postcopy_shutdown(PostcopyIncoming *pc);

/* postcopy_stop_faults: stop and join the fault thread; close the preempt
 * channel. */
void postcopy_stop_faults(PostcopyIncoming *pc);

/*
 * Recovery (docs/postcopy.md), in the load thread of the resumed stream:
 * - postcopy_recover_begin: stop the fault thread, so that nothing of
 *   the broken connections places a page any more (RECV_BITMAP must say
 *   what is in place and stay true), and make @fd the return path (the
 *   old one is closed; the caller closes its fd after).
 * - postcopy_recover_resume: at POSTCOPY_RESUME, send RESUME_ACK, start
 *   the fault thread again (it takes the new preempt channel when it
 *   comes), and ask again for every page a vCPU waits on.  False if the
 *   return path failed meanwhile (the stream's own error follows).
 * - postcopy_ensure_faults: a fault thread runs (after a break during the
 *   handshake: zero pages left are still served, faults still recorded).
 */
void postcopy_recover_begin(PostcopyIncoming *pc, int fd);
bool postcopy_recover_resume(PostcopyIncoming *pc);
void postcopy_ensure_faults(PostcopyIncoming *pc);

void postcopy_incoming_cleanup(PostcopyIncoming *pc);

/* postcopy_placed: the RAM loader's hook (pages placed). */
void postcopy_placed(void *opaque, uint64_t first, uint64_t n);

/*
 * postcopy_faults_waiting: fault records not closed by a placement.
 * Once every page is in, none may be left (the fault/placement race).
 */
uint64_t postcopy_faults_waiting(PostcopyIncoming *pc);

/* postcopy_stats: add the statistics members to a query-migrate reply. */
void postcopy_stats(PostcopyIncoming *pc, JsonObject *reply);

/* postcopy_fault_vcpu: the vCPU whose thread is @tid, or -1. */
int postcopy_fault_vcpu(Machine *m, uint32_t tid);

#endif
