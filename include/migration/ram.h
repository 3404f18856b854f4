/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source's RAM saver (migration/ram.c): sends dirty pages, zero
 * pages as a flag only, runs of contiguous pages in one record, within
 * max-bandwidth.
 *
 * Threads: everything here runs in the migration thread, which owns
 * the dirty bitmap; other threads only read the statistics.
 */
#ifndef MIGRATION_RAM_H
#define MIGRATION_RAM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "system/kvm.h"
#include "system/ramblock.h"

typedef struct QEMUFile QEMUFile;
typedef struct MigrationStats MigrationStats;
typedef struct MappedRam MappedRam;
typedef struct WorkingSet WorkingSet;

/* Pages per chunk of KVM's dirty log cleared at once (64 MiB). */
#define RAM_CLEAR_CHUNK_PAGES   16384

typedef struct RAMSaver {
    RAMBlock *rb;
    KVMState *kvm;
    unsigned long *dirty;       /* one bit per 4 KiB page of the block */
    /*
     * One bit per chunk whose pages KVM still logs as dirty since the
     * last sync (manual protection): cleared in KVM before the first
     * page of the chunk is read for sending.
     */
    unsigned long *clear_pending;
    uint64_t npages;
    QEMUFile *f;
    MigrationStats *stats;
    /* bytes/s, 0: unlimited (atomic: migrate-set-parameters changes it
     * while a pass or the push runs, as in QEMU); NULL: no limit. */
    const uint64_t *max_bandwidth;
    int64_t window_start_us;    /* rate limiting: 100 ms windows */
    uint64_t window_bytes;
    int *cancel;
    /* Set (atomic) to end a precopy pass early, at a host page's end:
     * postcopy starts. */
    int *stop_pass;
    /* x-postcopy-auto: the pass also ends at this g_get_monotonic_time()
     * (0: never), at a host page's end, and says so in deadline_hit. */
    int64_t deadline_us;
    bool deadline_hit;
    unsigned long *sent;        /* pages sent at least once */
    uint64_t hpages;            /* 4 KiB pages per host page */
    /* /proc/self/pagemap for private anonymous RAM, else -1 (any thread). */
    int pagemap_fd;
    /* mapped-ram: pages go to their slots in this file, not as records
     * on the stream (NULL: records). */
    MappedRam *mapped;

    /*
     * Postcopy.  From the switchover the dirty bitmap is shared with
     * the return-path thread, which may serve requests itself on the
     * preempt channel: whoever clears a page's bit (atomically) sends
     * it, so no page is sent twice.
     */
    GMutex req_lock;
    GCond req_cond;          /* a request queued, or time to give up */
    GQueue requests;              /* under req_lock: PageRequest */
    uint64_t last;              /* migration thread: scan position */
    /* Atomic: with preempt, the end of the last request the return-path
     * thread served, plus one (0: none since): the push goes on from
     * there, as from a request it served itself. */
    uint64_t seek;
    int64_t push_next_us;       /* migration thread: next push run allowed */
    /* postcopy-preempt's channel, or NULL: written by the return-path
     * thread (requests) and, once, by the migration thread (its end),
     * under preempt_lock. */
    QEMUFile *preempt;
    GMutex preempt_lock;
    /* Atomic: the return path ended (the destination paused, failed or
     * went away); set by its thread before ram_postcopy_wake().  The
     * push stops at once, even when it has nothing to write (-n). */
    int rp_ended;
    /* x-postcopy-working-set: the pages' heat from the passes and the
     * push order (migration thread; include/migration/working-set.h),
     * or NULL.  ram_saver_cleanup frees it. */
    WorkingSet *ws;
    /* The push's window (ram_postcopy_send; 0: none), set before it
     * starts; the stream position of its last mark (migration thread);
     * the id of the last mark the destination answered (written by the
     * return-path thread under req_lock, read by the migration thread
     * under it or atomically). */
    uint64_t push_window;
    uint64_t mark_pos;
    uint32_t acked_id;
} RAMSaver;

/* ram_saver_init: every page dirty, for the first pass. */
void ram_saver_init(RAMSaver *r, RAMBlock *rb, KVMState *kvm, QEMUFile *f,
                    MigrationStats *stats, int *cancel);
void ram_saver_cleanup(RAMSaver *r);

/* ram_save_pass: send every dirty page once; false on error or cancel. */
bool ram_save_pass(RAMSaver *r);

/* ram_sync_dirty: add the pages KVM logged since the last sync. */
bool ram_sync_dirty(RAMSaver *r, GError **errp);

/* ram_rate_limit: the bytes/s limit in force now (0: none); any thread. */
uint64_t ram_rate_limit(const RAMSaver *r);

/*
 * ram_push_pace: the postcopy push sent @bytes at @now_us (its next run
 * was allowed from @next_us): when the next may go, for @limit bytes/s.
 * Pure; the migration thread's push (ram_postcopy_send) paces by it.
 */
int64_t ram_push_pace(int64_t now_us, int64_t next_us, uint64_t bytes,
                      uint64_t limit);

/* ram_rate_wait: @bytes more were sent: sleep as max_bandwidth says
 * (what ram_send_pages does with @limit).  The thread that owns the
 * window (one only). */
void ram_rate_wait(RAMSaver *r, uint64_t bytes);

/* ram_page_is_zero: whether the 4 KiB page at @p is all zero. */
bool ram_page_is_zero(const uint8_t *p);

/* ram_dirty_count: pages still dirty. */
uint64_t ram_dirty_count(const RAMSaver *r);

/*
 * ram_send_pages: send pages [first, first + n) on @f as they are now
 * (zero runs as flags), or with mapped-ram into their slots (zero runs
 * as clear bits), and account for them; returns the bytes written.
 * With @limit (precopy passes) the calling thread sleeps to stay within
 * max_bandwidth.  Any thread that cleared the pages' dirty bits.
 */
uint64_t ram_send_pages(RAMSaver *r, QEMUFile *f, uint64_t first, uint64_t n,
                        bool limit);

/* ram_send_copy: as ram_send_pages, from a copy of the pages at @data
 * (taken when they were as they must be saved), without a rate limit. */
uint64_t ram_send_copy(RAMSaver *r, QEMUFile *f, uint64_t first, uint64_t n,
                       const uint8_t *data);

/* ---- Postcopy on the source (migration/ram-postcopy.c) ----------------- */

/*
 * ram_postcopy_discard: after a sync, widen dirty pages to whole host
 * pages, then tell the destination to drop each page sent before and
 * dirtied since (REC_POSTCOPY_DISCARD runs), and count those unsent.
 * Called again after a later sync it names only pages sent and dirtied
 * since; nothing may be sent in between.  Returns the 4 KiB pages
 * named.  Migration thread, before the return-path thread starts.
 */
uint64_t ram_postcopy_discard(RAMSaver *r);

/*
 * ram_postcopy_request: the destination wants pages [first, first + n)
 * now (return-path thread).  With a preempt channel the pages still
 * dirty are sent on it at once from the calling thread; without, the
 * request is queued for the migration thread, which serves it before
 * its next background run.  False when the preempt channel failed.
 */
bool ram_postcopy_request(RAMSaver *r, uint64_t first, uint64_t n);

/*
 * ram_postcopy_end_preempt: every page is sent: end the preempt channel
 * with REC_EOF after whatever request is on it, so that the destination
 * knows nothing more comes there (a page it still lacks then will never
 * come: an error, not a wait).  Migration thread, after
 * ram_postcopy_send() returned true; nothing is written there after.
 */
void ram_postcopy_end_preempt(RAMSaver *r);

/*
 * ram_postcopy_send: the migration thread's postcopy loop: queued
 * requests first, then (when @background) the next dirty pages after
 * the last request, whole host pages at a time, until every page is
 * sent.  max_bandwidth limits the background pages only.  False on a
 * stream error, cancel, or the end of the return path (rp_ended).
 */
bool ram_postcopy_send(RAMSaver *r, bool background);

/*
 * The push's window on the main stream (x-postcopy-push-window, bytes,
 * default 1 MiB; 0: none, as QEMU).  The destination loads what it
 * receives more slowly than the source sends, and TCP lets the queue
 * grow to the socket's buffer (8 MiB unread, with 4 MiB asked).
 * TCP_WINDOW_CLAMP did not bound it: Linux 6.18 raises the clamp again
 * as data arrives.  A requested page the push has claimed already, and
 * without preempt every requested page, waits behind that queue.
 *
 * With a window the push marks its stream with REC_PING every quarter
 * of it, and sends background pages only while at most the window is
 * written past the last mark the destination answered (RP_PONG).
 * Before it waits it marks where it stands, so that an answer always
 * opens the window again; a window under PUSH_MARK_MIN counts as that
 * much, since the answered position is rounded down to 4 KiB.  A mark's
 * id carries its stream position in 4 KiB units (30 bits, with the top
 * bit set: drain rounds use small ids, the heartbeat 0xffffffff).
 */
#define PUSH_MARK_MIN       (64 << 10)
#define PUSH_MARK_ID(pos)   (0x80000000u | (uint32_t)(((pos) >> 12) & 0x3fffffff))
#define PUSH_MARK_IS(id)    (((id) & 0xc0000000u) == 0x80000000u)

/*
 * ram_push_marked_at: the stream position of the mark @id answered when
 * the stream has reached @pos: the latest multiple of 4 KiB at or before
 * @pos whose units match @id's 30 bits (the mark's own position rounded
 * down, so the window errs small).  Pure.
 */
uint64_t ram_push_marked_at(uint64_t pos, uint32_t id);

/* ram_postcopy_acked: the destination loaded the push's mark @id
 * (PUSH_MARK_IS); the push may go on.  Return-path thread. */
void ram_postcopy_acked(RAMSaver *r, uint32_t id);

/* ram_postcopy_wake: make a waiting ram_postcopy_send() look again. */
void ram_postcopy_wake(RAMSaver *r);

/*
 * ram_postcopy_rebuild: postcopy recovery.  @in_place is the
 * destination's RECV_BITMAP: every page not in it is dirty again (sent
 * before the break or not, it may have been lost on the way), every page
 * in it is clean, whole host pages at a time; queued requests are
 * dropped (the destination asks again).  The source's guest is stopped,
 * so this is all that is left to send.  Migration thread, with no
 * return-path thread attached (nothing else claims pages); returns the
 * pages to send.
 */
uint64_t ram_postcopy_rebuild(RAMSaver *r, const unsigned long *in_place);

#endif
