/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Live migration, the destination: accepting the stream, the load thread,
 * and postcopy's hooks into it (the fault path itself is
 * postcopy-ram.c).  Thread rules are in include/migration/migration.h.
 */
#include "migration-int.h"
#include "migration/mapped-ram.h"
#include "migration/restore.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>

#include "crypto/tls.h"
#include "migration/channel.h"
#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/ram-load.h"
#include "migration/return-path.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/sockets.h"
#include "qemu/main-loop.h"

/* What the load thread starts with; it frees it. */
typedef struct LoadArgs {
    MigrationState *s;
    int fd;                     /* the stream's connection */
    /* Its channel header, read already by the main thread (0: none). */
    uint8_t head[STREAM_CHANNEL_HEADER_LEN];
    size_t head_len;
    /* Recovery: the paused stream this one resumes (closed once the
     * fault thread no longer writes on it), or NULL for a new migration. */
    bool resume;
    QEMUFile *old;
} LoadArgs;

/* ---- The destination ---------------------------------------------------------------- */

typedef struct LoadDone {
    MigrationState *s;
    bool ok;
    RunState source_state;
} LoadDone;

void migration_incoming_run_guest(Machine *m, RunState source_state)
{
    if (source_state == RUN_STATE_RUNNING && !m->opts->start_paused) {
        machine_set_state(m, RUN_STATE_RUNNING);
        machine_resume(m);
    } else {
        machine_set_state(m, RUN_STATE_PAUSED);
    }
}

/* Main thread: the stream is in; run the guest if the source was running,
 * then say completed. */
static void incoming_done(void *opaque)
{
    LoadDone *d = opaque;
    Machine *m = d->s->m;
    if (d->ok) {
        /* Received: this process may now migrate out, as in QEMU. */
        d->s->dst.incoming = false;
        d->s->dst.incoming_defer = false;
    } else {
        if (d->s->dst.exit_on_error) {
            fprintf(stderr, "ferry: load of migration failed: %s\n", d->s->error);
            machine_request_exit(m, 1, NULL, false);
        }
        return;
    }
    migration_incoming_run_guest(m, d->source_state);
    /* Completed once the run state is final, as in QEMU: libvirt reads
     * query-status on this event, to cont a paused guest. */
    migrate_set_state(d->s, MIGRATION_STATUS_ACTIVE, MIGRATION_STATUS_COMPLETED);
}

/* Main thread: a restore on demand is over (restore_run set failed, or
 * left postcopy-active for this to complete). */
static void restore_done(void *opaque)
{
    LoadDone *d = opaque;
    if (!d->ok) {
        incoming_done(d);       /* -incoming's exit-on-error */
        return;
    }
    d->s->dst.incoming = false;
    d->s->dst.incoming_defer = false;
    migrate_set_state(d->s, MIGRATION_STATUS_POSTCOPY_ACTIVE,
                      MIGRATION_STATUS_COMPLETED);
}

/* ---- Postcopy on the destination ---------------------------------------------- */

typedef struct LoadCtx {
    MigrationState *s;
    int fd;                     /* the stream's connection */
} LoadCtx;

/* Fault thread: why it stopped; the load thread then pauses. */
static void fault_error(void *opaque, const char *msg)
{
    migration_set_error(opaque, msg);
}

static bool pc_advise(void *opaque, uint64_t host_page_size, GError **errp)
{
    LoadCtx *c = opaque;
    MigrationState *s = c->s;
    if (!migrate_cap(s, "postcopy-ram")) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "the source wants postcopy, but the postcopy-ram "
                    "capability is off on the destination");
        return false;
    }
    if (!ram_loader_can_postcopy(s->dst.ram_loader, errp)) {
        return false;
    }
    if (host_page_size != s->m->ram->page_size) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy needs the same RAM page size on both sides: "
                    "%" G_GUINT64_FORMAT " KiB on the source, %" G_GUINT64_FORMAT
                    " KiB here", host_page_size >> 10, s->m->ram->page_size >> 10);
        return false;
    }
    if (!ram_load_discard_missing(s->dst.ram_loader, errp)) {
        return false;
    }
    if (!s->dst.pci) {
        /* Published whole: migration_incoming_stop() may look at it. */
        PostcopyIncoming *pci = g_new0(PostcopyIncoming, 1);
        postcopy_incoming_init(pci, s->m, s->dst.ram_loader);
        pci->on_error = fault_error;
        pci->on_error_opaque = s;
        __atomic_store_n(&s->dst.pci, pci, __ATOMIC_RELEASE);
    }
    uint64_t pool = migration_param_u64(s, "x-postcopy-page-pool");
    const char *why;
    if (pool && !ram_load_ring_start(s->dst.ram_loader, &s->dst.pci->ring,
                                     pool, &why, errp)) {
        return false;
    }
    if (pool && why) {
        fprintf(stderr, "ferry: x-postcopy-page-pool is not used: %s\n", why);
    }
    return true;
}

/*
 * The destination's preempt channel goes to the fault thread.  It may be
 * accepted (main thread) before or after the fault thread starts (load
 * thread, at LISTEN): each side publishes its half, then calls this; the
 * exchange makes exactly one of them hand it over.
 */
static void hand_over_preempt(MigrationState *s)
{
    if (!__atomic_load_n(&s->dst.preempt_ready, __ATOMIC_SEQ_CST)) {
        return;
    }
    int fd = __atomic_exchange_n(&s->dst.preempt_fd, -1, __ATOMIC_SEQ_CST);
    if (fd >= 0) {
        postcopy_attach_preempt(s->dst.pci, fd);
    }
}

/* The fault thread's stall watch takes x-postcopy-stall-timeout as it is
 * when it starts (LISTEN, or a resume). */
static void arm_stall_watch(MigrationState *s)
{
    s->dst.pci->stall_ns = migration_param_u64(s, "x-postcopy-stall-timeout") *
                           1000000;
}

static bool pc_listen(void *opaque, GError **errp)
{
    LoadCtx *c = opaque;
    MigrationState *s = c->s;
    if (!s->dst.pci) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "postcopy listen without advise");
        return false;
    }
    arm_stall_watch(s);
    if (!postcopy_listen(s->dst.pci, c->fd, migrate_cap(s, "postcopy-preempt"),
                         errp)) {
        return false;
    }
    __atomic_store_n(&s->dst.preempt_ready, 1, __ATOMIC_SEQ_CST);
    hand_over_preempt(s);
    /* As the source's push (postcopy_run): requests before the push. */
    if (migrate_cap(s, "postcopy-preempt")) {
        setpriority(PRIO_PROCESS, gettid(), migration_push_nice());
    }
    /*
     * What may queue here unread, ahead of a requested page, is bounded
     * only by the source's x-postcopy-push-window (it waits for our
     * answers to its marks), never by shrinking the buffer: the source
     * was let send into the window the big buffer advertised, and a
     * buffer shrunk under that makes the kernel prune the queue and drop
     * segments, one of which then waits TCP's 200 ms retransmission
     * timeout (a guest stalled that long).  TCP_WINDOW_CLAMP, tried
     * before, did not bound it: the kernel raises the clamp again as data
     * arrives, and the queue grew to the buffer (8 MiB).
     */
    migrate_set_state(s, MIGRATION_STATUS_ACTIVE, MIGRATION_STATUS_POSTCOPY_ACTIVE);
    return true;
}

typedef struct RunCall {
    MigrationState *s;
    GBytes *pkg;
    int fd;                     /* the stream's connection */
} RunCall;

/* Main thread: the outcome of RUN, for the load thread. */
static void run_done(MigrationState *s, int result)
{
    g_mutex_lock(&s->dst.run_lock);
    s->dst.run_result = result;
    g_cond_broadcast(&s->dst.run_cond);
    g_mutex_unlock(&s->dst.run_lock);
}

/* Load thread: wait for RUN's outcome; true if the guest runs here. */
static bool run_wait(MigrationState *s)
{
    g_mutex_lock(&s->dst.run_lock);
    while (!s->dst.run_result) {
        g_cond_wait(&s->dst.run_cond, &s->dst.run_lock);
    }
    int r = s->dst.run_result;
    g_mutex_unlock(&s->dst.run_lock);
    return r > 0;
}

/* Main thread: load the devices from the package and run the guest. */
static void postcopy_run_main(void *opaque)
{
    RunCall *rc = opaque;
    MigrationState *s = rc->s;
    Machine *m = s->m;
    gsize len;
    const void *data = g_bytes_get_data(rc->pkg, &len);
    QEMUFile *mf = qemu_file_new_mem(data, len);
    g_autoptr(GError) err = NULL;
    RunState src = RUN_STATE_RUNNING;
    bool ok = stream_load_devices(mf, m, &src, &err);
    int fd = rc->fd;
    qemu_file_close(mf);
    g_bytes_unref(rc->pkg);
    g_free(rc);
    if (!ok) {
        /*
         * The guest never ran here, and the source still has all of it:
         * the migration fails and the source runs it on.  The load thread
         * may be reading pages: its read ends, and it says so on the
         * return path (SHUT 1, in load_thread).
         */
        g_autofree char *msg = g_strdup_printf("postcopy: loading the device "
                                               "state: %s", err->message);
        migration_set_error(s, msg);
        run_done(s, -1);
        shutdown(fd, SHUT_RD);
        return;
    }
    migration_incoming_run_guest(m, src);
    run_done(s, 1);
    postcopy_rp_send(s->dst.pci, &(RPMessage) { .type = RP_RUNNING });
}

static bool pc_run(void *opaque, GBytes *package, GError **errp)
{
    LoadCtx *c = opaque;
    (void)errp;
    RunCall *rc = g_new0(RunCall, 1);
    rc->s = c->s;
    rc->pkg = g_bytes_ref(package);
    rc->fd = c->fd;
    main_loop_post(postcopy_run_main, rc);
    return true;
}

/*
 * Load thread: one return-path message on @fd while this thread is its
 * only writer (before LISTEN, or at the end of a precopy load); 0 or
 * -errno.
 */
static int rp_send_alone(int fd, const RPMessage *m)
{
    QEMUFile *rp = qemu_file_new(fd, true, false);
    rp_put(rp, m);
    return qemu_file_close(rp);
}

/*
 * Load thread: the source's PING; every record before it is loaded.
 * From LISTEN on the fault thread writes on the return path too, under
 * the postcopy lock.
 */
static bool load_pong(void *opaque, uint32_t id, GError **errp)
{
    LoadCtx *c = opaque;
    RPMessage m = { .type = RP_PONG, .id = id };
    if (c->s->dst.pci && postcopy_rp_send(c->s->dst.pci, &m)) {
        return true;
    }
    int ret = rp_send_alone(c->fd, &m);
    if (ret < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "return path: answering PING %u: %s", id, g_strerror(-ret));
        return false;
    }
    return true;
}

/* Recovery: RECV_BITMAP, answered with the pages in place here. */
static bool pc_recv_bitmap(void *opaque, GError **errp)
{
    LoadCtx *c = opaque;
    MigrationState *s = c->s;
    RAMLoader *l = s->dst.ram_loader;
    RPMessage m = { .type = RP_RECV_BITMAP, .npages = l->npages,
                    .bitmap = ram_load_in_place_bitmap(l) };
    g_strlcpy(m.text, l->rb->name, sizeof(m.text));
    bool ok = postcopy_rp_send(s->dst.pci, &m);
    bitmap_free(m.bitmap);
    if (!ok) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy recovery: no return path for RECV_BITMAP");
    }
    return ok;
}

/*
 * How long RESUME_ACK waits for the monitors to read this side's events:
 * a reading client takes them in microseconds to a few milliseconds on
 * a busy host; one that does not read delays each resume by this much.
 */
#define RESUME_EVENTS_READ_MS   250

/* Recovery: POSTCOPY_RESUME; postcopy-active again (QEMU's order). */
static bool pc_resume(void *opaque, GError **errp)
{
    LoadCtx *c = opaque;
    MigrationState *s = c->s;
    if (!migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_RECOVER,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy recovery: paused again during the handshake");
        return false;
    }
    arm_stall_watch(s);
    /* postcopy-recover and postcopy-active are read by the monitors
     * before RESUME_ACK lets the source say so: libvirt then asks this
     * side to finish the resume, and fails it if the last event it has
     * handled here is still postcopy-paused (migration_events_read). */
    migration_events_read(s, RESUME_EVENTS_READ_MS);
    if (!postcopy_recover_resume(s->dst.pci)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy recovery: the return path broke at RESUME_ACK");
        return false;
    }
    return true;
}

static const StreamPostcopyOps postcopy_ops = {
    .advise = pc_advise,
    .listen = pc_listen,
    .run = pc_run,
    .recv_bitmap = pc_recv_bitmap,
    .resume = pc_resume,
};

/* Main thread: the postcopy migration is in; RAM is ordinary memory. */
static void postcopy_incoming_done(void *opaque)
{
    MigrationState *s = opaque;
    s->dst.incoming = false;
    s->dst.incoming_defer = false;
}

/*
 * Load thread: postcopy cannot go on here (the stream broke, or held
 * something this side could not load, or the preempt channel ended with
 * pages due).  Pause, as QEMU's postcopy_pause_incoming(): keep RAM
 * registered (a vCPU touching a missing page waits instead of reading
 * zeros) and every fd open, since the fault thread's return path still
 * refers to the stream's, but shut the connections down.  A source
 * whose connection is still up then reads their end and pauses too,
 * rather than pushing into a stream no one reads.
 */
static void postcopy_pause_incoming(MigrationState *s, QEMUFile *f,
                                    const GError *err)
{
    migration_set_error(s, err->message);
    postcopy_shutdown(s->dst.pci);
    /* Broken during a recovery's handshake, the fault thread is stopped:
     * it runs again for the faults (recorded, asked for at the resume). */
    postcopy_ensure_faults(s->dst.pci);
    s->dst.paused_stream = f;   /* the fault thread's return path's fd */
    migrate_set_state_from(s, (const MigrationStatus[]) {
        MIGRATION_STATUS_POSTCOPY_ACTIVE, MIGRATION_STATUS_POSTCOPY_RECOVER,
        MIGRATION_STATUS__MAX }, MIGRATION_STATUS_POSTCOPY_PAUSED);
}

/*
 * Load thread: postcopy ran here (the guest runs with what it has) and
 * the stream ended, @ok or not: complete once every page is in, or
 * pause.  Never exit or free: the guest's memory is half here.
 */
#define POSTCOPY_DONE_WAIT_MS   2000

static void postcopy_load_end(MigrationState *s, QEMUFile *f, bool ok,
                              GError **errp)
{
    if (!ok) {
        postcopy_pause_incoming(s, f, *errp);
        return;
    }
    if (!postcopy_drain(s->dst.pci, errp)) {
        /*
         * Pages the source counts sent are not here (lost on the way,
         * or never sent): vCPUs touching them would wait for ever, or
         * read zeros once RAM is unregistered.  Pause, keeping RAM
         * registered, as for a broken connection.
         */
        postcopy_pause_incoming(s, f, *errp);
        return;
    }
    postcopy_stop_faults(s->dst.pci);
    /*
     * Every page is in, so every fault's record was closed.  One left
     * is a broken invariant: said loudly (the tests run ferry with
     * G_DEBUG=fatal-criticals, so there it aborts), but the guest,
     * every page in, is not killed for it.
     */
    uint64_t left = postcopy_faults_waiting(s->dst.pci);
    if (left) {
        g_critical("postcopy: %" G_GUINT64_FORMAT " fault records left "
                   "with every page in", left);
    }
    s->dst.pci->ram = NULL;
    ram_loader_cleanup(s->dst.ram_loader);
    g_clear_pointer(&s->dst.ram_loader, g_free);
    postcopy_rp_send(s->dst.pci, &(RPMessage) { .type = RP_SHUT, .status = 0 });
    /*
     * Completed here only once the source is (it closes the connection
     * after): libvirt 9.0 finishes this side's job on its completed, then
     * confirms on the source, where a query-migrate still saying
     * postcopy-active loses the job's downtime (/libvirt/migrate failed
     * so on a loaded host).  The guest runs here already, so the wait
     * costs it nothing; bounded, for a source that hangs.
     */
    struct pollfd closed = { .fd = qemu_file_fd(f), .events = POLLIN };
    while (poll(&closed, 1, POSTCOPY_DONE_WAIT_MS) < 0 && errno == EINTR) {
    }
    migration_close_stream(s, &s->dst.incoming_fd, f);
    __atomic_store_n(&s->end_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_ACTIVE,
                      MIGRATION_STATUS_COMPLETED);
    migration_call_main(s, postcopy_incoming_done, s);
}

/*
 * x-postcopy-fault-threads as the stream comes: ranges of RAM, each with
 * its own userfaultfd and fault thread.  0: one per vCPU, at most one
 * per host CPU (a fault thread per CPU that can run it).
 */
static int fault_threads(MigrationState *s)
{
    int n = (int)migration_param_u64(s, "x-postcopy-fault-threads");
    if (n == 0) {
        n = MIN(s->m->ncpus, (int)g_get_num_processors());
    }
    return n;
}

static void load_thread_body(LoadArgs *a);

static gpointer load_thread(gpointer opaque)
{
    LoadArgs *a = opaque;
    MigrationState *s = a->s;
    load_thread_body(a);
    migration_thread_done(s);
    return NULL;
}

/* Start the load thread on @a's connection (main thread). */
static void load_thread_start(LoadArgs *a)
{
    MigrationState *s = a->s;
    g_mutex_lock(&s->lock);
    s->dst.incoming_fd = a->fd;
    g_mutex_unlock(&s->lock);
    __atomic_fetch_add(&s->threads_live, 1, __ATOMIC_SEQ_CST);
    s->dst.load_thread = g_thread_new("mig/dst/load", load_thread, a);
}

/*
 * Load thread of a resumed stream (migrate-recover): the fault thread
 * stops and takes the new return path, the paused stream is closed, and
 * the stream is loaded as after RUN: RECV_BITMAP, POSTCOPY_RESUME, then
 * pages (stream_load with resume).  It ends as postcopy does: completed,
 * or paused again.
 */
static void recover_thread_body(LoadArgs *a)
{
    MigrationState *s = a->s;
    QEMUFile *f = qemu_file_new_prefixed(a->fd, a->head, a->head_len);
    g_autoptr(GError) err = NULL;
    LoadCtx ctx = { s, a->fd };
    postcopy_recover_begin(s->dst.pci, a->fd);
    if (a->old) {
        qemu_file_close(a->old);
    }
    g_free(a);
    StreamLoad l = { .m = s->m, .stats = &s->stats, .ram = s->dst.ram_loader,
                     .postcopy = &postcopy_ops, .pong = load_pong,
                     .opaque = &ctx, .resume = true };
    memcpy(l.resume_id, s->dst.channel_id, STREAM_ID_LEN);
    bool ok = stream_load(f, &l, &err);
    if (!ok && l.postcopy_state == STREAM_POSTCOPY_RECOVER && err) {
        g_prefix_error(&err, "postcopy recovery: ");
    }
    postcopy_load_end(s, f, ok, &err);
}

static void load_thread_body(LoadArgs *a)
{
    if (a->resume) {
        recover_thread_body(a);
        return;
    }
    MigrationState *s = a->s;
    QEMUFile *f = qemu_file_new_prefixed(a->fd, a->head, a->head_len);
    g_autoptr(GError) err = NULL;
    LoadDone done = { s, false, RUN_STATE_RUNNING };
    LoadCtx ctx = { s, a->fd };
    g_free(a);

    RAMLoader *rl = g_new0(RAMLoader, 1);
    ram_loader_init_full(rl, s->m->ram, fault_threads(s),
                         migration_param_bool(s, "x-postcopy-minor-faults"));
    __atomic_store_n(&s->dst.ram_loader, rl, __ATOMIC_RELEASE);
    StreamLoad l = { .m = s->m, .stats = &s->stats, .ram = s->dst.ram_loader,
                     .postcopy = &postcopy_ops, .pong = load_pong,
                     .opaque = &ctx, .mapped_ram = migrate_cap(s, "mapped-ram") };
    l.mapped_lazy = l.mapped_ram && migrate_cap(s, "postcopy-ram");
    l.mapped_uring = migration_param_bool(s, "x-io-uring");
    migrate_set_state(s, MIGRATION_STATUS_SETUP, MIGRATION_STATUS_ACTIVE);
    done.ok = stream_load(f, &l, &err);
    if (done.ok && l.mapped && l.mapped_lazy) {
        /* Restore on demand: the guest runs before its pages are read. */
        done.ok = restore_run(s, f, l.mapped, l.source_state);
        migration_call_main(s, restore_done, &done);
        return;
    }
    if (l.mapped) {
        mapped_ram_cleanup(l.mapped);
        g_clear_pointer(&l.mapped, g_free);
    }
    done.source_state = l.source_state;
    __atomic_store_n(&s->stats.transferred, qemu_file_transferred(f),
                     __ATOMIC_RELAXED);

    if (l.postcopy_running && !run_wait(s)) {
        /* The devices failed: the guest never ran here (postcopy_run_main). */
        l.postcopy_running = false;
        done.ok = false;
        if (!err) {
            g_set_error(&err, G_IO_ERROR, G_IO_ERROR_FAILED,
                        "postcopy: the device state did not load");
        }
    }
    if (l.postcopy_running) {
        postcopy_load_end(s, f, done.ok, &err);
        return;
    }

    /* SHUT says how it went; a failure is preceded by why (RP_REASON):
     * the first error, which is error-desc here too. */
    RPMessage why = { .type = RP_REASON };
    RPMessage shut = { .type = RP_SHUT, .status = done.ok ? 0 : 1 };
    if (!done.ok) {
        migration_set_error(s, err->message);
        g_mutex_lock(&s->lock);
        g_strlcpy(why.text, s->error, sizeof(why.text));
        g_mutex_unlock(&s->lock);
    }
    bool rp_taken = false;      /* the fault thread's return path */
    if (s->dst.pci) {
        /* Postcopy was advised but the guest never ran here (a precopy
         * that converged, or a failure before or at RUN): stop the fault
         * thread if LISTEN started it, and drop postcopy's pointer to the
         * loader freed below (postcopy_incoming_cleanup() writes through
         * it). */
        postcopy_stop_faults(s->dst.pci);
        s->dst.pci->ram = NULL;
        rp_taken = (done.ok || postcopy_rp_send(s->dst.pci, &why)) &&
                   postcopy_rp_send(s->dst.pci, &shut);
    }
    /* Ordinary memory again before any vCPU runs. */
    ram_loader_cleanup(s->dst.ram_loader);
    g_clear_pointer(&s->dst.ram_loader, g_free);
    int pfd = __atomic_exchange_n(&s->dst.preempt_fd, -1, __ATOMIC_SEQ_CST);
    channel_close(pfd);         /* a preempt channel, and no postcopy */
    if (l.return_path && !rp_taken) {
        if (!done.ok) {
            rp_send_alone(qemu_file_fd(f), &why);
        }
        rp_send_alone(qemu_file_fd(f), &shut);
    }
    migration_close_stream(s, &s->dst.incoming_fd, f);
    __atomic_store_n(&s->end_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    if (!done.ok) {
        /* In precopy, or in postcopy before the guest ran here (the
         * error is set above, for RP_REASON). */
        migrate_set_state_from(s, (const MigrationStatus[]) {
            MIGRATION_STATUS_ACTIVE, MIGRATION_STATUS_POSTCOPY_ACTIVE,
            MIGRATION_STATUS__MAX }, MIGRATION_STATUS_FAILED);
    }
    migration_call_main(s, incoming_done, &done);   /* completed, if ok */
    return;
}

/*
 * Each connection to the incoming port is given its role only once its
 * channel header has come (stream_parse_channel): the first main channel
 * starts the load; a preempt channel of the same migration (the id the
 * main channel brought) goes to the fault thread.  Anything else (a port
 * scanner, a second source, a channel of another migration, one that
 * says nothing for PENDING_TIMEOUT_S) is refused with a message, and the
 * migration goes on.  Before, any second connection became the preempt
 * channel.  Main thread.
 */
#define PENDING_MAX         16
#define PENDING_TIMEOUT_S   10

typedef struct PendingChannel {
    MigrationState *s;
    int fd;
    guint watch, timer;
    TlsSession *tls;            /* with tls-creds: handshake first */
    bool tls_done;
    bool sole;                  /* an fd: channel: no other will come */
    uint8_t head[STREAM_CHANNEL_HEADER_LEN];
    size_t have;
} PendingChannel;

static void pending_drop(PendingChannel *p, const char *why)
{
    MigrationState *s = p->s;
    s->dst.pending = g_list_remove(s->dst.pending, p);
    if (p->watch) {
        g_source_remove(p->watch);
    }
    if (p->timer) {
        g_source_remove(p->timer);
    }
    if (why) {
        fprintf(stderr, "ferry: migration: refused a connection to the "
                "incoming port: %s\n", why);
        channel_close(p->fd);
    }
    if (why && s->dst.recovering && !s->dst.pending) {
        /* The connection that made this side postcopy-recover was not
         * the paused migration's: paused again, saying why (the listener
         * stays for its source, unless this was the only one). */
        migration_set_error(s, why);
        migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_RECOVER,
                          MIGRATION_STATUS_POSTCOPY_PAUSED);
    }
    if (why && p->sole) {
        /* Nothing else can come: say so, and leave a state to act on
         * (failed, or a recovery that migrate-recover can try again). */
        migration_set_error(s, why);
        if (s->dst.recovering) {
            s->dst.recovering = false;
        } else {
            migrate_set_state(s, MIGRATION_STATUS_SETUP, MIGRATION_STATUS_FAILED);
        }
    }
    tls_session_unref(p->tls);  /* attached: the socket's now */
    g_free(p);
}

static void close_listener(MigrationState *s)
{
    if (s->dst.listen_src) {
        g_source_remove(s->dst.listen_src);
        s->dst.listen_src = 0;
    }
    if (s->dst.listen_fd >= 0) {
        close(s->dst.listen_fd);
        s->dst.listen_fd = -1;
    }
    /* socket-address stays for query-migrate, as QEMU's (libvirt reads
     * it in postcopy-paused). */
}

/* A new listener's address for query-migrate. */
static void set_socket_address(MigrationState *s, JsonArray *addr)
{
    if (s->dst.socket_address) {
        json_array_unref(s->dst.socket_address);
    }
    s->dst.socket_address = addr;
}

static void recover_start(MigrationState *s, LoadArgs *a);

/* The load thread's arguments for the main channel @p (then dropped). */
static LoadArgs *main_channel_args(PendingChannel *p)
{
    LoadArgs *a = g_new0(LoadArgs, 1);
    a->s = p->s;
    a->fd = p->fd;
    memcpy(a->head, p->head, sizeof(a->head));
    a->head_len = sizeof(a->head);
    pending_drop(p, NULL);
    return a;
}

/* A whole, valid header: give the connection its role, or refuse it. */
static void pending_identified(PendingChannel *p, const StreamChannel *c)
{
    MigrationState *s = p->s;
    int fd = p->fd;
    if (c->role == STREAM_CHANNEL_MAIN && s->dst.recovering) {
        if (memcmp(c->id, s->dst.channel_id, STREAM_ID_LEN) != 0) {
            pending_drop(p, "the main channel of another migration (the "
                         "paused one waits for its own source)");
            return;
        }
        recover_start(s, main_channel_args(p));
        if (!migrate_cap(s, "postcopy-preempt")) {
            close_listener(s);
        }
        return;
    }
    if (c->role == STREAM_CHANNEL_MAIN) {
        if (s->dst.have_main) {
            pending_drop(p, "a second main channel (a migration is "
                         "already coming in)");
            return;
        }
        s->dst.have_main = true;
        memcpy(s->dst.channel_id, c->id, STREAM_ID_LEN);
        load_thread_start(main_channel_args(p));
        /* One migration per listening socket, as QEMU; with preempt the
         * source connects again at the switch. */
        if (!migrate_cap(s, "postcopy-preempt")) {
            close_listener(s);
        }
        return;
    }
    if (!s->dst.have_main || memcmp(c->id, s->dst.channel_id, STREAM_ID_LEN) != 0) {
        pending_drop(p, "a preempt channel of another migration");
        return;
    }
    PostcopyIncoming *pci = __atomic_load_n(&s->dst.pci, __ATOMIC_ACQUIRE);
    if (!migrate_cap(s, "postcopy-preempt") ||
        __atomic_load_n(&s->dst.preempt_fd, __ATOMIC_SEQ_CST) >= 0 ||
        (pci && __atomic_load_n(&pci->preempt_fd, __ATOMIC_SEQ_CST) >= 0)) {
        pending_drop(p, "a preempt channel not expected");
        return;
    }
    pending_drop(p, NULL);
    __atomic_store_n(&s->dst.preempt_fd, fd, __ATOMIC_SEQ_CST);
    hand_over_preempt(s);
    close_listener(s);
}

static gboolean pending_readable(gint fd, GIOCondition cond, gpointer opaque);

/* Watch @p's socket for @cond, in place of the watch there is. */
static void pending_watch(PendingChannel *p, GIOCondition cond)
{
    if (p->watch) {
        g_source_remove(p->watch);
    }
    p->watch = g_unix_fd_add(p->fd, cond, pending_readable, p);
}

/*
 * With TLS: one step of the server's handshake.  1: done (the session
 * now the socket's); 0: it goes on, watched for what it waits on; -1:
 * it failed, @p dropped.
 */
static int pending_handshake(PendingChannel *p, GIOCondition cond)
{
    g_autoptr(GError) err = NULL;
    short events = 0;
    int r = tls_session_handshake_step(p->tls, &events, &err);
    if (r < 0) {
        pending_drop(p, err->message);
        return -1;
    }
    GIOCondition want = r > 0 || (events & POLLIN) ? G_IO_IN : G_IO_OUT;
    if (!(cond & want)) {
        pending_watch(p, want);
    }
    if (r > 0) {
        p->tls_done = true;
        tls_session_attach(p->tls);
    }
    return r;
}

/* What came after the handshake: bytes, 0 at the end, -1 with errno. */
static ssize_t pending_recv(PendingChannel *p)
{
    void *at = p->head + p->have;
    size_t len = sizeof(p->head) - p->have;
    if (!p->tls) {
        return recv(p->fd, at, len, MSG_DONTWAIT);
    }
    ssize_t n = tls_session_read(p->tls, at, len, true);
    errno = n < 0 ? (int)-n : 0;
    return n < 0 ? -1 : n;
}

static gboolean pending_readable(gint fd, GIOCondition cond, gpointer opaque)
{
    PendingChannel *p = opaque;
    (void)fd;
    /* Every way out below that ends the watch has removed it already
     * (pending_drop, pending_watch), so G_SOURCE_CONTINUE is safe. */
    if (p->tls && !p->tls_done && pending_handshake(p, cond) <= 0) {
        return G_SOURCE_CONTINUE;
    }
    const char *why = NULL;
    g_autoptr(GError) err = NULL;
    StreamChannel c;
    for (;;) {
        ssize_t n = pending_recv(p);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return G_SOURCE_CONTINUE;
        }
        if (n <= 0) {
            why = n == 0 ? "it closed before its channel header"
                         : p->tls ? "a TLS error before its channel header"
                                  : g_strerror(errno);
            break;
        }
        /* Refused as soon as what came cannot be a header (an HTTP probe). */
        p->have += n;
        int got = stream_parse_channel(p->head, p->have, &c, &err);
        if (got < 0 && !p->tls && p->head[0] == 0x16 && p->have >= 2 &&
            p->head[1] == 0x03) {
            why = "a TLS handshake came: the source has tls-creds set, and "
                  "this destination has none";
            break;
        }
        if (got < 0) {
            why = err->message;
            break;
        }
        if (got > 0) {
            break;
        }
        if (!p->tls) {
            return G_SOURCE_CONTINUE;
        }
        /* Over TLS the rest may be decrypted already: read on. */
    }
    if (why) {
        pending_drop(p, why);
    } else {
        pending_identified(p, &c);
    }
    return G_SOURCE_CONTINUE;       /* removed by pending_drop */
}

static gboolean pending_timeout(gpointer opaque)
{
    PendingChannel *p = opaque;
    p->timer = 0;
    pending_drop(p, "no channel header within " G_STRINGIFY(PENDING_TIMEOUT_S)
                 " s");
    return G_SOURCE_REMOVE;
}

/*
 * A connection to sort by its channel header (after a TLS handshake);
 * @sole: fd:'s, the only one that will come.
 */
static void pending_add(MigrationState *s, int c, bool sole)
{
    g_autoptr(GError) err = NULL;
    if (s->dst.recovering) {
        /*
         * A connection after migrate-recover: postcopy-recover now, as
         * QEMU 7.2 on accept, before its TLS handshake and channel
         * header.  libvirt's --postcopy-resume connects before it sends
         * the source's migrate resume, returns from that at once, and
         * finishes on this side, failing the job if the last event here
         * is still postcopy-paused: waiting for the header (which the
         * source writes only after its migrate) lost that race.
         */
        if (migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_PAUSED,
                              MIGRATION_STATUS_POSTCOPY_RECOVER)) {
            g_mutex_lock(&s->lock);
            g_clear_pointer(&s->error, g_free);  /* the pause's: a new one counts */
            g_mutex_unlock(&s->lock);
        }
    }
    PendingChannel *p = g_new0(PendingChannel, 1);
    p->s = s;
    p->fd = c;
    p->sole = sole;
    p->tls = migration_tls_accept(s, c, &err);
    if (err) {
        pending_drop(p, err->message);
        return;
    }
    s->dst.pending = g_list_prepend(s->dst.pending, p);
    p->watch = g_unix_fd_add(c, G_IO_IN, pending_readable, p);
    p->timer = g_timeout_add_seconds(PENDING_TIMEOUT_S, pending_timeout, p);
}

static gboolean incoming_accept(gint fd, GIOCondition cond, gpointer opaque)
{
    MigrationState *s = opaque;
    (void)cond;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
        return accept_backoff(errno, fd, &s->dst.listen_src, incoming_accept, s)
               ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
    }
    if (g_list_length(s->dst.pending) >= PENDING_MAX) {
        fprintf(stderr, "ferry: migration: refused a connection to the "
                "incoming port: %d others wait for their channel header\n",
                PENDING_MAX);
        close(c);
        return G_SOURCE_CONTINUE;
    }
    channel_tune(c);
    pending_add(s, c, false);
    return G_SOURCE_CONTINUE;
}

/* Load from an fd already connected to the source (fd: URIs). */
static void incoming_from_fd(MigrationState *s, int fd)
{
    s->start_ms = migration_now_ms();
    migrate_set_state(s, MIGRATION_STATUS_NONE, MIGRATION_STATUS_SETUP);
    if (migration_tls_enabled(s)) {
        /* A socket: its handshake and header in the main loop, as an
         * accepted connection's. */
        pending_add(s, fd, true);
        return;
    }
    LoadArgs *a = g_new0(LoadArgs, 1);
    a->s = s;
    a->fd = fd;
    load_thread_start(a);
}

bool migration_incoming_start(MigrationState *s, const char *uri, GError **errp)
{
    JsonArray *addr;
    if (!s->m->ram) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The 'none' machine has no guest to migrate into");
        return false;
    }
    if (!migration_tls_uri_ok(s, uri, errp)) {
        return false;
    }
    if (g_str_has_prefix(uri, "fd:")) {
        /* A number names an inherited fd (the command line); else getfd's. */
        const char *name = uri + 3;
        char *end;
        long n = strtol(name, &end, 10);
        int fd = *name && !*end ? (int)n : qmp_take_fd(s->qmp, name, errp);
        if (fd < 0 || (*name && !*end && fcntl(fd, F_GETFD) < 0)) {
            if (fd >= 0) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                            "fd %ld is not open", n);
            }
            return false;
        }
        channel_tune(fd);
        channel_keepalive_default(fd);
        incoming_from_fd(s, fd);
        return true;
    }
    if (g_str_has_prefix(uri, "file:") || g_str_has_prefix(uri, "exec:")) {
        int fd = uri[0] == 'f' ? channel_open_file(uri, false, errp)
                               : channel_exec(uri, false, errp);
        if (fd < 0) {
            return false;
        }
        channel_tune(fd);
        incoming_from_fd(s, fd);
        return true;
    }
    int fd = channel_listen(uri, &addr, errp);
    if (fd < 0) {
        return false;
    }
    s->dst.listen_fd = fd;
    set_socket_address(s, addr);
    s->start_ms = migration_now_ms();
    migrate_set_state(s, MIGRATION_STATUS_NONE, MIGRATION_STATUS_SETUP);
    s->dst.listen_src = g_unix_fd_add(fd, G_IO_IN, incoming_accept, s);
    return true;
}


/* ---- Postcopy recovery on the destination -------------------------------------- */

/*
 * The resumed stream's connection came: postcopy-recover, and its load
 * thread.  The paused load thread has ended (it returns once paused) and
 * is joined in migrate-recover, so its paused stream is this thread's to
 * hand on.  Main thread.
 */
static void recover_start(MigrationState *s, LoadArgs *a)
{
    s->dst.recovering = false;
    s->dst.have_main = true;
    a->resume = true;
    a->old = g_steal_pointer(&s->dst.paused_stream);
    migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_PAUSED,
                      MIGRATION_STATUS_POSTCOPY_RECOVER);
    load_thread_start(a);
}

JsonNode *qmp_migrate_recover(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    const char *uri = json_object_get_string_member(args, "uri");
    if (!s->dst.incoming || !s->dst.pci ||
        migration_status(s) != MIGRATION_STATUS_POSTCOPY_PAUSED) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Migrate recover can only be run when postcopy is paused.");
        return NULL;
    }
    if (s->dst.recovering) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Migrate recovery is triggered already");
        return NULL;
    }
    if (!migration_postcopy_uri_ok(s, uri, errp)) {
        return NULL;
    }
    if (s->dst.load_thread) {
        g_thread_join(s->dst.load_thread);      /* it ended at the pause */
        s->dst.load_thread = NULL;
    }
    if (g_str_has_prefix(uri, "fd:")) {
        int fd = qmp_take_fd(s->qmp, uri + 3, errp);
        if (fd < 0) {
            return NULL;
        }
        channel_tune(fd);
        channel_keepalive_default(fd);
        if (migration_tls_enabled(s)) {
            s->dst.recovering = true;
            pending_add(s, fd, true);
            return qmp_return_empty();
        }
        LoadArgs *a = g_new0(LoadArgs, 1);
        a->s = s;
        a->fd = fd;
        recover_start(s, a);
        return qmp_return_empty();
    }
    close_listener(s);          /* a preempt channel's, left open */
    JsonArray *addr;
    int fd = channel_listen(uri, &addr, errp);
    if (fd < 0) {
        return NULL;
    }
    s->dst.listen_fd = fd;
    set_socket_address(s, addr);
    s->dst.recovering = true;
    s->dst.listen_src = g_unix_fd_add(fd, G_IO_IN, incoming_accept, s);
    return qmp_return_empty();
}

void migration_incoming_pause(MigrationState *s)
{
    migration_set_error(s, "postcopy: paused by migrate-pause");
    if (s->dst.recovering) {
        /* postcopy-recover on connections not yet sorted (pending_add):
         * no load thread to stop.  They go, and so does the listener: a
         * migrate-recover starts the recovery again. */
        close_listener(s);
        while (s->dst.pending) {
            pending_drop(s->dst.pending->data, "paused by migrate-pause");
        }
        s->dst.recovering = false;
        return;
    }
    __atomic_store_n(&s->dst.stopping, 1, __ATOMIC_SEQ_CST);
    migration_shutdown_stream(s, &s->dst.incoming_fd);
    PostcopyIncoming *pci = __atomic_load_n(&s->dst.pci, __ATOMIC_ACQUIRE);
    if (pci) {
        postcopy_shutdown(pci);
    }
}

void migration_incoming_stop(MigrationState *s)
{
    while (s->dst.pending) {
        PendingChannel *p = s->dst.pending->data;
        int fd = p->fd;
        pending_drop(p, NULL);
        channel_close(fd);
    }
    __atomic_store_n(&s->dst.stopping, 1, __ATOMIC_SEQ_CST);
    migration_shutdown_stream(s, &s->dst.incoming_fd);
    PostcopyIncoming *pci = __atomic_load_n(&s->dst.pci, __ATOMIC_ACQUIRE);
    if (pci) {
        postcopy_shutdown(pci);
    }
}

void migration_incoming_cleanup(MigrationState *s)
{
    close_listener(s);
    set_socket_address(s, NULL);
    if (s->dst.load_thread) {
        g_thread_join(s->dst.load_thread);
        s->dst.load_thread = NULL;
    }
    if (s->dst.pci) {
        postcopy_incoming_cleanup(s->dst.pci);      /* joins the fault thread */
        g_clear_pointer(&s->dst.pci, g_free);
    }
    if (s->dst.paused_stream) {
        migration_close_stream(s, &s->dst.incoming_fd, s->dst.paused_stream);
        s->dst.paused_stream = NULL;
    }
    if (s->dst.ram_loader) {
        ram_loader_cleanup(s->dst.ram_loader);      /* kept while paused */
        g_clear_pointer(&s->dst.ram_loader, g_free);
    }
    channel_close(__atomic_exchange_n(&s->dst.preempt_fd, -1, __ATOMIC_SEQ_CST));
}
