/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Postcopy on the source, from the switch to its end, through any number
 * of breaks (docs/postcopy.md, docs/postcopy-recovery.md): the switch,
 * the push, the pause, the resume handshake, and the QMP commands of
 * recovery on this side.  All in the migration thread but the QMP
 * handlers (main thread).  The contract is in migration-int.h.
 */
#include "migration-int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/channel.h"
#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/stream.h"
#include "migration/working-set.h"
#include "qemu/bitmap.h"
#include "qemu/thread-prio.h"

/* ---- Postcopy on the source ------------------------------------------------------ */

/*
 * Connect the preempt channel to where the main stream went.  Its fd is
 * published under the lock: migrate-pause shuts it down.
 */
static bool open_preempt(MigrationState *s, const char *uri, GError **errp)
{
    if (!migrate_cap(s, "postcopy-preempt")) {
        return true;
    }
    int fd = channel_connect(uri, errp);
    if (fd < 0) {
        return false;
    }
    if (!migration_tls_connect(s, fd, uri, "preempt channel", errp)) {
        close(fd);
        return false;
    }
    g_mutex_lock(&s->lock);
    s->src.preempt_fd = fd;
    g_mutex_unlock(&s->lock);
    return true;
}

/* The preempt channel's writer, once connected; its header goes first. */
static void start_preempt(MigrationState *s, RAMSaver *r)
{
    r->preempt = NULL;
    if (s->src.preempt_fd >= 0) {
        r->preempt = qemu_file_new(s->src.preempt_fd, true, false);
        stream_put_channel(r->preempt, STREAM_CHANNEL_PREEMPT, s->src.channel_id);
        qemu_fflush(r->preempt);
    }
}

static void close_preempt(MigrationState *s, RAMSaver *r)
{
    if (r->preempt) {
        qemu_file_close(r->preempt);
        r->preempt = NULL;
    }
    g_mutex_lock(&s->lock);
    int fd = s->src.preempt_fd;
    s->src.preempt_fd = -1;
    g_mutex_unlock(&s->lock);
    channel_close(fd);
}

/*
 * Postcopy's background push, against requested pages (the latency guest,
 * 1 GiB, switch at once, 3 runs each on 2 CPUs, the destination's
 * postcopy-latency): nice 10 for the threads that push
 * and place it took the mean demand fault with preempt from 0.5-0.9 ms
 * to 0.4-0.65 ms; bounding the backlog without preempt, from 5-9 ms to
 * 0.7-1.5 ms, with five times the requests served and the same total time.
 * Bounding it with preempt too (a fault on a page the push has claimed
 * waits for the main stream): mean fault 0.2-0.26 ms -> 0.11 ms, stall
 * p99 0.8-2.4 -> 0.4 ms, p999 10 -> 0.6-1.6 ms, twice the requests and
 * guest progress, for a slower push on 2 CPUs (0.9-1.2 -> 0.6-0.7 GB/s,
 * the guest runs more and takes the CPU).
 *
 * The nice only serves where the fault path's threads cannot run
 * SCHED_FIFO (FAULT_PATH_RT_PRIO; migration_push_nice()).  Where they can,
 * they preempt the push anyway, and nice 10 only gave the vCPU the
 * push's CPU: with the push at nice 0 instead (preempt, 7 interleaved
 * runs at 1 GiB, 3 at 4 GiB) the total time fell from 1.23 to 0.88 s
 * and 8.3 to 6.7 s, the guest's progress stayed (0.14 / 0.12 %) or rose
 * (0.39 / 0.48 %), since more of the pages it writes are in by then,
 * and the stall p99 went from 0.20 to 0.30 ms at 1 GiB (the same at
 * 4 GiB).
 */
#define PUSH_NICE       10
#define DISCARD_SETTLE  2048    /* pages: about 0.5 ms to drop there */
#define DISCARD_ROUNDS  5

/* Where the fault path runs SCHED_FIFO, nice 0 (see PUSH_NICE). */
int migration_push_nice(void)
{
    return thread_probe_fifo(FAULT_PATH_RT_PRIO) == 0 ? 0 : PUSH_NICE;
}

/*
 * Wait, with the guest still running, until the destination has loaded
 * everything sent so far: PING @id on the stream, RP_PONG @id back (the
 * return-path thread sees it).  Without it the RAM queued in the two
 * sockets' buffers (channel_tune asks for 4 MiB each) is placed on the
 * destination, into memory its host may not have touched lately (0.4
 * GB/s), after the stop and before the switch is read: inside the
 * downtime.  Migration thread.
 */
static bool drain_destination(MigrationState *s, QEMUFile *f, uint32_t id,
                              GError **errp)
{
    qemu_put_byte(f, REC_PING);
    qemu_put_u32(f, id);
    qemu_fflush(f);
    if (qemu_file_error(f)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "sending to the destination: %s",
                    g_strerror(-qemu_file_error(f)));
        return false;
    }
    return source_rp_wait_pong(s, id, errp);
}

/* The switch (migration-int.h). */
bool postcopy_switch(MigrationState *s, RAMSaver *r, QEMUFile *f,
                     StopCall *stop, bool *stopped, const char *uri,
                     GError **errp)
{
    Machine *m = s->m;

    /*
     * While the guest still runs here, the destination drops the pages
     * dirtied since they were sent and loads what is on its way, in
     * rounds until a round names at most DISCARD_SETTLE pages: the
     * downtime then holds only what the guest dirties in the last one.
     * (`make demo`: the verify guest rewrites its 1 GiB in 83 ms; the
     * destination drops about 4,600 pages a millisecond and took 51 ms
     * of the 53 ms downtime to drop the 778 MiB the first pass had sent;
     * with one round before the stop, about 4 of 5-8 ms went to the
     * 14-18,000 pages dirtied during that round.)
     */
    for (uint32_t round = 1;; round++) {
        if (!ram_sync_dirty(r, errp)) {
            return false;
        }
        uint64_t named = ram_postcopy_discard(r);
        if (!drain_destination(s, f, round, errp)) {
            return false;
        }
        if (named <= DISCARD_SETTLE || round == DISCARD_ROUNDS) {
            break;
        }
    }
    __atomic_store_n(&s->src.stop_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    migration_call_main(s, migration_stop_vm, stop);
    *stopped = true;
    if (!migration_pause_before_switchover(s, MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        return false;
    }
    if (!ram_sync_dirty(r, errp) || !open_preempt(s, uri, errp)) {
        return false;
    }
    migration_set_rate(s, "max-postcopy-bandwidth");
    ram_postcopy_discard(r);
    __atomic_store_n(&s->stats.remaining_pages, ram_dirty_count(r),
                     __ATOMIC_RELAXED);
    if (r->ws) {
        /* Every page still to send is dirty now, and only those. */
        __atomic_store_n(&s->stats.ws_ranked,
                         working_set_build(r->ws, r->dirty) * r->hpages,
                         __ATOMIC_RELAXED);
    }
    qemu_put_byte(f, REC_POSTCOPY_LISTEN);
    QEMUFile *pkg = qemu_file_new_mem_writer();
    if (!stream_put_devices(pkg, m, stop->before, errp)) {
        g_bytes_unref(qemu_file_mem_finish(pkg));
        return false;
    }
    g_autoptr(GBytes) b = qemu_file_mem_finish(pkg);
    /* Requests may come as soon as the destination runs the guest: the
     * return-path thread takes them from before RUN is sent (before, one
     * that came first was refused, and its vCPU waited for the push). */
    __atomic_store_n(&s->stats.postcopy_start_bytes,
                     __atomic_load_n(&s->stats.transferred, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&s->stats.postcopy_started, 1, __ATOMIC_RELEASE);
    start_preempt(s, r);
    source_rp_attach_saver(s, r);
    qemu_put_byte(f, REC_POSTCOPY_RUN);
    qemu_put_u32(f, g_bytes_get_size(b));
    qemu_put_buffer(f, g_bytes_get_data(b, NULL), g_bytes_get_size(b));
    qemu_fflush(f);
    __atomic_fetch_add(&s->stats.transferred, 1 + 4 + g_bytes_get_size(b),
                       __ATOMIC_RELAXED);
    return true;
}

/*
 * Postcopy's push on the stream @f (from the switch, or from a resume):
 * requests first, then every page still dirty; then wait for the
 * destination's SHUT.  Returns completed, postcopy-paused (the connection
 * broke or was paused: nothing is freed, the VM stays here stopped), or
 * failed (the destination failed before its guest ran: ours runs on).
 */
static MigrationStatus postcopy_push(MigrationState *s, RAMSaver *r, QEMUFile *f,
                                     GError **errp)
{
    /*
     * The push must not keep a requested page waiting.  With preempt the
     * page takes its own connection, served by the return-path thread,
     * which runs SCHED_FIFO where allowed and else gets a CPU at once
     * because the push runs at a lower priority (migration_push_nice).
     * A page the push has already claimed comes on the main stream,
     * behind what the push has written: keep at most
     * PUSH_BACKLOG of it unsent, with or without preempt, and with
     * x-postcopy-push-window at most that much of it ahead of what the
     * destination has loaded.
     */
    int nice_was = getpriority(PRIO_PROCESS, gettid());
    if (s->src.preempt_fd >= 0) {
        setpriority(PRIO_PROCESS, gettid(), migration_push_nice());
    }
    int lowat = PUSH_BACKLOG;
    setsockopt(qemu_file_fd(f), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat,
               sizeof(lowat));         /* not TCP: nothing to bound */
    /* Under PUSH_MARK_MIN, the answer to the mark where the push stands
     * (rounded down to 4 KiB) might not open the window: the push would
     * wait for ever. */
    uint64_t window = migration_param_u64(s, "x-postcopy-push-window");
    r->push_window = window ? MAX(window, (uint64_t)PUSH_MARK_MIN) : 0;
    bool sent = ram_postcopy_send(r, !s->src.postcopy_no_push);
    setpriority(PRIO_PROCESS, gettid(), nice_was);
    if (sent) {
        ram_postcopy_end_preempt(r);
        qemu_put_byte(f, REC_EOF);
        qemu_fflush(f);
    }
    /* Then wait for the destination to have every page and say so
     * (SHUT).  The connection stays up until this side is completed
     * (migration_source_cleanup closes it): the destination waits for
     * that close before it says completed itself (postcopy_load_end). */
    if (!sent) {
        /* Broken or paused: the return-path thread must end too. */
        shutdown(qemu_file_fd(f), SHUT_RDWR);
    }
    int shut = source_rp_join(s);
    close_preempt(s, r);
    if (sent && shut == 0) {
        return MIGRATION_STATUS_COMPLETED;
    }
    if (shut > 0 && !__atomic_load_n(&s->src.rp_running, __ATOMIC_SEQ_CST)) {
        /* Its guest never ran (a destination fails only then, and pauses
         * after): ours has every page, and runs on (fail: restart_vm). */
        source_rp_error(s, errp);
        return MIGRATION_STATUS_FAILED;
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                "postcopy: the connection to the destination broke (%s); "
                "both sides keep their memory until it is recovered",
                qemu_file_error(f) ? g_strerror(-qemu_file_error(f))
                                   : "return path closed");
    /* The guest stays stopped here in finish-migrate, as in QEMU, with
     * all its memory: cont is refused while it may run there. */
    return MIGRATION_STATUS_POSTCOPY_PAUSED;
}

/* ---- Postcopy recovery on the source ------------------------------------------ */

/*
 * Paused: wait for migrate resume=true: its fd (fd:), or -1 in *@fd to
 * connect to *@uri here, outside the main thread (QMP stays responsive
 * while a peer that does not answer is tried).  False when the process
 * ends.
 */
static bool wait_resume(MigrationState *s, char **uri, int *fd)
{
    g_mutex_lock(&s->src.continue_lock);
    while (!s->src.resume_posted && !migration_cancelled(s)) {
        g_cond_wait(&s->src.continue_cond, &s->src.continue_lock);
    }
    bool posted = s->src.resume_posted && !migration_cancelled(s);
    if (posted) {
        s->src.resume_posted = false;
        *fd = s->src.resume_fd;
        s->src.resume_fd = -1;
        g_free(*uri);
        *uri = g_steal_pointer(&s->src.resume_uri);
    }
    g_mutex_unlock(&s->src.continue_lock);
    return posted;
}

/*
 * The resume handshake on the new stream @f (QEMU's): the channel header
 * naming this migration, RECV_BITMAP; the destination answers with the
 * pages it has, and every other page is to send again (what was in
 * flight at the break included); the preempt channel again; then
 * POSTCOPY_RESUME, and RESUME_ACK moves back to postcopy-active (in the
 * return-path thread).  The destination asks again for the pages its
 * vCPUs wait on.  False, saying why, if it breaks meanwhile.
 */
static bool postcopy_resume(MigrationState *s, RAMSaver *r, QEMUFile *f,
                            const char *uri, GError **errp)
{
    RAMBlock *rb = s->m->ram;
    if (!migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP,
                           MIGRATION_STATUS_POSTCOPY_RECOVER)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy recovery: paused again before it began");
        return false;
    }
    stream_put_header(f, rb, s->src.channel_id);
    stream_put_recv_bitmap(f, rb);
    qemu_fflush(f);
    source_rp_start(s, qemu_file_fd(f), true);
    unsigned long *in_place = NULL;
    if (!qemu_file_error(f)) {
        in_place = source_rp_wait_bitmap(s, errp);
        if (!in_place) {
            return false;
        }
    }
    if (qemu_file_error(f)) {
        bitmap_free(in_place);
        g_clear_error(errp);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy recovery: sending to the destination: %s",
                    g_strerror(-qemu_file_error(f)));
        return false;
    }
    ram_postcopy_rebuild(r, in_place);
    bitmap_free(in_place);
    /* Set meanwhile, as libvirt does before a resume. */
    migration_set_rate(s, "max-postcopy-bandwidth");
    if (!open_preempt(s, uri, errp)) {
        return false;
    }
    start_preempt(s, r);
    /* The destination asks again right after RESUME_ACK. */
    source_rp_attach_saver(s, r);
    qemu_put_byte(f, REC_POSTCOPY_RESUME);
    qemu_fflush(f);
    return source_rp_wait_resumed(s, errp);
}

/* The push, and a pause and a resume at each break (migration-int.h). */
MigrationStatus postcopy_run(MigrationState *s, RAMSaver *r, QEMUFile **fp,
                             char **uri, GError **errp)
{
    for (;;) {
        MigrationStatus end = postcopy_push(s, r, *fp, errp);
        if (end != MIGRATION_STATUS_POSTCOPY_PAUSED) {
            return end;
        }
        for (;;) {
            /* The guest stays stopped here in finish-migrate, as in
             * QEMU, with all its memory: cont is refused while it may
             * run there (or does). */
            migration_set_error(s, (*errp)->message);
            g_clear_error(errp);
            if (*fp) {
                migration_close_stream(s, &s->src.stream_fd, *fp);
                *fp = r->f = NULL;
            }
            migrate_set_state_from(s, (const MigrationStatus[]) {
                MIGRATION_STATUS_POSTCOPY_ACTIVE,
                MIGRATION_STATUS_POSTCOPY_RECOVER,
                MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP, MIGRATION_STATUS__MAX },
                MIGRATION_STATUS_POSTCOPY_PAUSED);
            int fd;
            if (!wait_resume(s, uri, &fd)) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                            "postcopy: the process ends with the migration "
                            "paused");
                return MIGRATION_STATUS_POSTCOPY_PAUSED;
            }
            if (fd < 0 && (fd = channel_connect(*uri, errp)) < 0) {
                continue;       /* postcopy-paused again, saying why */
            }
            g_mutex_lock(&s->lock);
            s->src.stream_fd = fd;          /* migrate-pause shuts it down */
            g_mutex_unlock(&s->lock);
            if (!migration_tls_connect(s, fd, *uri, NULL, errp)) {
                g_mutex_lock(&s->lock);
                s->src.stream_fd = -1;
                g_mutex_unlock(&s->lock);
                close(fd);
                continue;
            }
            *fp = r->f = qemu_file_new(fd, true, true);
            if (postcopy_resume(s, r, *fp, *uri, errp)) {
                break;
            }
            shutdown(fd, SHUT_RDWR);
            source_rp_join(s);
            close_preempt(s, r);
        }
    }
}

/* ---- QMP ----------------------------------------------------------------------------- */

bool migration_postcopy_uri_ok(MigrationState *s, const char *uri, GError **errp)
{
    if (migrate_cap(s, "postcopy-preempt") && !g_str_has_prefix(uri, "tcp:") &&
        !g_str_has_prefix(uri, "unix:")) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy preempt needs a tcp: or unix: URI to open its "
                    "second channel");
        return false;
    }
    if (migrate_cap(s, "postcopy-ram") &&
        (g_str_has_prefix(uri, "file:") || g_str_has_prefix(uri, "exec:"))) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy is not supported with %.5s migration", uri);
        return false;
    }
    return true;
}

/*
 * migrate resume=true: a new connection for the paused postcopy, handed
 * to its migration thread (postcopy_run).  postcopy-paused, then
 * postcopy-recover-setup while connecting; a connection that cannot be
 * made goes back to postcopy-paused, with its event, as QEMU.
 */
JsonNode *migration_resume(MigrationState *s, const char *uri, GError **errp)
{
    if (s->dst.incoming || s->quitting ||
        migration_status(s) != MIGRATION_STATUS_POSTCOPY_PAUSED) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Cannot resume if there is no paused migration");
        return NULL;
    }
    if (!migration_postcopy_uri_ok(s, uri, errp)) {
        return NULL;
    }
    if (!migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_PAUSED,
                           MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Cannot resume if there is no paused migration");
        return NULL;
    }
    /* fd: is taken here; tcp: and unix: are connected by the migration
     * thread, which says how that went with the state, as QEMU's
     * asynchronous connect does. */
    int fd = -1;
    if (g_str_has_prefix(uri, "fd:")) {
        fd = qmp_take_fd(s->qmp, uri + 3, errp);
        if (fd < 0) {
            migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP,
                              MIGRATION_STATUS_POSTCOPY_PAUSED);
            return NULL;
        }
        channel_tune(fd);
        channel_keepalive_default(fd);
    }
    g_mutex_lock(&s->lock);
    g_clear_pointer(&s->error, g_free);     /* the pause's: a new one counts */
    g_mutex_unlock(&s->lock);
    g_mutex_lock(&s->src.continue_lock);
    s->src.resume_posted = true;
    s->src.resume_fd = fd;
    g_free(s->src.resume_uri);
    s->src.resume_uri = g_strdup(uri);
    g_cond_broadcast(&s->src.continue_cond);
    g_mutex_unlock(&s->src.continue_lock);
    return qmp_return_empty();
}

/*
 * migrate-pause: break postcopy's connections on purpose, as a network
 * failure would (QEMU's); both sides go to postcopy-paused and keep
 * everything.  Either side, in postcopy-active or postcopy-recover.
 */
#define PAUSE_WAIT_MS   1000

JsonNode *qmp_migrate_pause(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    (void)args;
    MigrationStatus st = migration_status(s);
    if (st != MIGRATION_STATUS_POSTCOPY_ACTIVE &&
        st != MIGRATION_STATUS_POSTCOPY_RECOVER) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "migrate-pause is currently only supported during "
                    "postcopy-active or postcopy-recover state");
        return NULL;
    }
    if (s->dst.incoming) {
        migration_incoming_pause(s);
    } else {
        migration_set_error(s, "postcopy: paused by migrate-pause");
        g_mutex_lock(&s->lock);
        if (s->src.stream_fd >= 0) {
            shutdown(s->src.stream_fd, SHUT_RDWR);
        }
        if (s->src.preempt_fd >= 0) {
            shutdown(s->src.preempt_fd, SHUT_RDWR);
        }
        g_mutex_unlock(&s->lock);
    }
    /*
     * Answer once this side is postcopy-paused (QEMU answers at once):
     * a client acts on the reply.  libvirt 9.0's --postcopy-resume right
     * after a domjobabort --postcopy refuses ("QEMU reports migration is
     * still running") a source not yet paused.  Bounded: the thread that
     * pauses may wait on this one first (migration_call_main).
     */
    migration_wait_leave(s, (const MigrationStatus[]) {
        MIGRATION_STATUS_POSTCOPY_ACTIVE, MIGRATION_STATUS_POSTCOPY_RECOVER,
        MIGRATION_STATUS__MAX }, PAUSE_WAIT_MS);
    return qmp_return_empty();
}
